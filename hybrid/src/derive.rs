//! Key derivation (CTAP 2.2 §11.5.1.2; Chromium `cablev2::Derive`).
//!
//! `Derive(secret, salt, purpose, L)` is HKDF-SHA256 with the secret as input key material, the
//! salt (none and empty are the same) and `info` = the purpose as a 4-byte little-endian integer.
//! Shorter outputs are prefixes of longer ones.

use hkdf::Hkdf;
use sha2::Sha256;

use crate::secret::{QrSecret, Secret};
use crate::tunnel::TunnelId;

/// What a derived value is for; the number is the HKDF `info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// Key that encrypts and authenticates the BLE advert (64 bytes).
    EidKey = 1,
    /// The tunnel id the phone registers at the relay (16 bytes).
    TunnelId = 2,
    /// The Noise pre-shared key (32 bytes).
    Psk = 3,
    /// A phone's link secret for one linked client (32 bytes, phone-internal).
    PairedSecret = 4,
    /// Seed of a phone's identity key (32 bytes, phone-internal).
    IdentityKeySeed = 5,
    /// A phone's per-contact secret (32 bytes, phone-internal).
    PerContactIdSecret = 6,
}

/// Derives `L` bytes. `L` is at most 8160 (HKDF-SHA256's limit), checked at compile time.
pub fn derive<const L: usize>(secret: &[u8], salt: &[u8], purpose: Purpose) -> [u8; L] {
    derive_raw(secret, salt, purpose as u32)
}

/// [`derive`] with a numeric purpose, for test vectors and future purposes.
pub fn derive_raw<const L: usize>(secret: &[u8], salt: &[u8], purpose: u32) -> [u8; L] {
    const { assert!(L <= 255 * 32, "HKDF-SHA256 output is at most 8160 bytes") };
    let salt = (!salt.is_empty()).then_some(salt);
    let mut out = [0u8; L];
    // Cannot fail: the length is within HKDF's limit (asserted above).
    let _ = Hkdf::<Sha256>::new(salt, secret).expand(&purpose.to_le_bytes(), &mut out);
    out
}

/// The 64-byte advert key: the first half encrypts, the second authenticates.
pub type EidKey = Secret<64>;

/// The advert key of a QR-initiated session.
pub fn eid_key(qr_secret: &QrSecret) -> EidKey {
    Secret::new(derive(qr_secret.expose(), &[], Purpose::EidKey))
}

/// The advert key of a state-assisted session: the link secret salted with the client nonce.
pub fn linked_eid_key(link_secret: &Secret<32>, client_nonce: &[u8; 16]) -> EidKey {
    Secret::new(derive(link_secret.expose(), client_nonce, Purpose::EidKey))
}

/// The tunnel id of a QR-initiated session.
pub fn tunnel_id(qr_secret: &QrSecret) -> TunnelId {
    TunnelId::new(derive(qr_secret.expose(), &[], Purpose::TunnelId))
}

/// The Noise PSK: the session secret (QR or link secret) salted with the whole 16-byte decrypted
/// advert, reserved byte included.
pub fn psk(secret: &[u8], advert_plaintext: &[u8; 16]) -> Secret<32> {
    Secret::new(derive(secret, advert_plaintext, Purpose::Psk))
}
