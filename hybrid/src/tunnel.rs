//! Tunnel identifiers, URLs and relay paths (CTAP 2.2 §11.5.1.3; Chromium `GetNewTunnelURL`,
//! `GetConnectURL`, `GetContactURL`).
//!
//! The phone opens `/cable/new/<tunnel id>` and is given a routing id; the client joins with
//! `/cable/connect/<routing id>/<tunnel id>`; a linked client reaches a phone through
//! `/cable/contact/<contact id>`. Ids are written in upper-case hex (as Chromium does); parsing
//! accepts either case (libwebauthn writes lower case).

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use thiserror::Error;

/// WebSocket subprotocol both sides must negotiate.
pub const SUBPROTOCOL: &str = "fido.cable";
/// Response header carrying the routing id of a new tunnel (6 hex digits).
pub const ROUTING_ID_HEADER: &str = "X-caBLE-Routing-ID";
/// Request header a state-assisted client sends with its payload (hex of a CBOR map).
pub const CLIENT_PAYLOAD_HEADER: &str = "X-caBLE-Client-Payload";
/// Request header asking the relay for the one-byte connection signal.
pub const SIGNAL_CONNECTION_HEADER: &str = "X-caBLE-Signal-Connection";
/// Largest contact id accepted in a `/cable/contact/` path (our limit; FCM tokens fit).
pub const MAX_CONTACT_ID_LEN: usize = 4096;

/// The 16-byte id under which the phone registers a tunnel.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TunnelId([u8; 16]);

/// The 3-byte id the relay assigns to a new tunnel; the phone advertises it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoutingId([u8; 3]);

/// A linked phone's contact id (opaque to the client).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ContactId(Vec<u8>);

/// Why an id or a relay path does not parse.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TunnelPathError {
    /// The path is none of the three tunnel paths.
    #[error("not a tunnel path")]
    UnknownPath,
    /// An id is not hex of the right length.
    #[error("{what} must be {len} bytes of hex")]
    BadId {
        /// Which id.
        what: &'static str,
        /// Its required length in bytes.
        len: usize,
    },
    /// A contact id is not unpadded base64url or is empty or too long.
    #[error("contact id must be 1 to {MAX_CONTACT_ID_LEN} bytes of unpadded base64url")]
    BadContactId,
}

macro_rules! hex_id {
    ($ty:ident, $len:expr, $what:expr) => {
        impl $ty {
            /// Wraps raw bytes.
            pub const fn new(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Parses hex of either case.
            pub fn from_hex(s: &str) -> Result<Self, TunnelPathError> {
                parse_hex::<$len>(s)
                    .map(Self)
                    .ok_or(TunnelPathError::BadId {
                        what: $what,
                        len: $len,
                    })
            }

            /// Upper-case hex, as sent on the wire.
            pub fn to_hex(&self) -> String {
                upper_hex(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.to_hex())
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

hex_id!(TunnelId, 16, "tunnel id");
hex_id!(RoutingId, 3, "routing id");

impl ContactId {
    /// Wraps a contact id; `None` if it is empty or longer than [`MAX_CONTACT_ID_LEN`].
    pub fn new(bytes: Vec<u8>) -> Option<Self> {
        (!bytes.is_empty() && bytes.len() <= MAX_CONTACT_ID_LEN).then_some(Self(bytes))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Unpadded base64url, as it appears in the path.
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.0)
    }
}

impl fmt::Debug for ContactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContactId({} bytes)", self.0.len())
    }
}

/// `wss://<domain>/cable/new/<TUNNEL ID>`: where the phone registers the tunnel.
pub fn new_tunnel_url(domain: &str, tunnel_id: &TunnelId) -> String {
    format!("wss://{domain}{}", TunnelPath::New(*tunnel_id))
}

/// `wss://<domain>/cable/connect/<ROUTING ID>/<TUNNEL ID>`: where the client joins it.
pub fn connect_url(domain: &str, routing_id: &RoutingId, tunnel_id: &TunnelId) -> String {
    format!(
        "wss://{domain}{}",
        TunnelPath::Connect(*routing_id, *tunnel_id)
    )
}

/// `wss://<domain>/cable/contact/<base64url(contact id)>`: where a linked client reaches a phone.
pub fn contact_url(domain: &str, contact_id: &ContactId) -> String {
    format!("wss://{domain}{}", TunnelPath::Contact(contact_id.clone()))
}

/// A parsed relay request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TunnelPath {
    /// `/cable/new/<tunnel id>`.
    New(TunnelId),
    /// `/cable/connect/<routing id>/<tunnel id>`.
    Connect(RoutingId, TunnelId),
    /// `/cable/contact/<contact id>`.
    Contact(ContactId),
}

impl TunnelPath {
    /// Parses a request path (without query); hex ids in either case.
    pub fn parse(path: &str) -> Result<Self, TunnelPathError> {
        let rest = path
            .strip_prefix("/cable/")
            .ok_or(TunnelPathError::UnknownPath)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["new", tid] => Ok(Self::New(TunnelId::from_hex(tid)?)),
            ["connect", rid, tid] => Ok(Self::Connect(
                RoutingId::from_hex(rid)?,
                TunnelId::from_hex(tid)?,
            )),
            ["contact", cid] => {
                if cid.len() > MAX_CONTACT_ID_LEN * 4 / 3 + 4 {
                    return Err(TunnelPathError::BadContactId);
                }
                URL_SAFE_NO_PAD
                    .decode(cid)
                    .ok()
                    .and_then(ContactId::new)
                    .map(Self::Contact)
                    .ok_or(TunnelPathError::BadContactId)
            }
            _ => Err(TunnelPathError::UnknownPath),
        }
    }
}

impl fmt::Display for TunnelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::New(tid) => write!(f, "/cable/new/{tid}"),
            Self::Connect(rid, tid) => write!(f, "/cable/connect/{rid}/{tid}"),
            Self::Contact(cid) => write!(f, "/cable/contact/{}", cid.to_base64url()),
        }
    }
}

fn upper_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let raw = s.as_bytes();
    if raw.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        out[i] = u8::try_from(hi << 4 | lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_and_accept_lower_case() {
        let tid = TunnelId::new([0xab; 16]);
        let rid = RoutingId::new([1, 2, 0xfe]);
        let p = TunnelPath::Connect(rid, tid);
        assert_eq!(TunnelPath::parse(&p.to_string()).unwrap(), p);
        assert_eq!(TunnelPath::parse(&p.to_string().to_lowercase()).unwrap(), p);
        assert_eq!(
            TunnelPath::parse("/cable/new/abc"),
            Err(TunnelPathError::BadId {
                what: "tunnel id",
                len: 16
            })
        );
        assert_eq!(
            TunnelPath::parse("/cable/other/00"),
            Err(TunnelPathError::UnknownPath)
        );
        assert_eq!(
            TunnelPath::parse("/cable/contact/"),
            Err(TunnelPathError::BadContactId)
        );
        assert_eq!(
            TunnelPath::parse("/cable/new/+1"),
            Err(TunnelPathError::BadId {
                what: "tunnel id",
                len: 16
            })
        );
    }
}
