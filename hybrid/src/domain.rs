//! Tunnel server domains from the 16-bit id in the advert (CTAP 2.2 §11.5.1.3; Chromium
//! `DecodeDomain`).
//!
//! Ids below 256 are *assigned*: 0 is Google's tunnel service, 1 Apple's, 2–255 unknown. Ids 256
//! and above are *hashed*: the host name is derived from SHA-256 of a fixed string and the id, so
//! that anyone can run a relay under the name an id decodes to.

use core::fmt;

use sha2::{Digest, Sha256};

/// Host names of the assigned ids, by id.
pub const ASSIGNED_DOMAINS: [&str; 2] = ["cable.ua5v.com", "cable.auth.com"];

/// Number of assigned domains a client knows; sent as key 2 of the `FIDO:/` URL.
pub const KNOWN_ASSIGNED_DOMAINS: u64 = ASSIGNED_DOMAINS.len() as u64;

const HASH_PREFIX: &[u8] = b"caBLEv2 tunnel server domain";
const TLDS: [&str; 4] = [".com", ".org", ".net", ".info"];
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A tunnel server domain id as carried in the advert (little-endian on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u16);

impl DomainId {
    /// Google's tunnel service.
    pub const GOOGLE: DomainId = DomainId(0);
    /// Apple's tunnel service.
    pub const APPLE: DomainId = DomainId(1);

    /// Whether the id names a domain: assigned ids 0 and 1, or any hashed id (≥ 256).
    pub const fn is_known(self) -> bool {
        (self.0 as usize) < ASSIGNED_DOMAINS.len() || self.0 >= 256
    }

    /// The host name this id stands for, or `None` for the unassigned ids 2–255.
    pub fn domain(self) -> Option<String> {
        if let Some(assigned) = ASSIGNED_DOMAINS.get(self.0 as usize) {
            return Some((*assigned).to_owned());
        }
        if self.0 < 256 {
            return None;
        }
        let mut hasher = Sha256::new();
        hasher.update(HASH_PREFIX);
        hasher.update(self.0.to_le_bytes());
        hasher.update([0u8]);
        let digest = hasher.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let mut v = u64::from_le_bytes(first);
        let tld = TLDS[(v & 3) as usize];
        v >>= 2;
        let mut name = String::from("cable.");
        while v != 0 {
            name.push(char::from(BASE32[(v & 31) as usize]));
            v >>= 5;
        }
        name.push_str(tld);
        Some(name)
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_and_hashed() {
        assert_eq!(DomainId(0).domain().as_deref(), Some("cable.ua5v.com"));
        assert_eq!(DomainId(1).domain().as_deref(), Some("cable.auth.com"));
        assert_eq!(DomainId(2).domain(), None);
        assert_eq!(DomainId(255).domain(), None);
        assert_eq!(
            DomainId(256).domain().as_deref(),
            Some("cable.qz2ekwmnd332c.info")
        );
        assert!(DomainId(256).is_known() && !DomainId(255).is_known());
    }
}
