//! The BLE advert (CTAP 2.2 §11.5.1.2; Chromium `eid::Encrypt`, `eid::Decrypt`).
//!
//! The phone advertises 20 bytes of service data under UUID `0xFFF9` (or Google's older
//! `0xFDE2`): one AES-256 block and a 4-byte truncated HMAC-SHA256 tag, both keyed from the
//! session's advert key ([`crate::derive::eid_key`]). The plaintext block is
//! `00 ‖ nonce(10) ‖ routing id(3) ‖ domain id(2, little-endian)`.
//!
//! Receivers check, in this order: length, tag (constant time), reserved byte, domain id. Most
//! adverts a client sees belong to other sessions, so failures are normal and must be ignored
//! silently; [`AdvertReject`] says which check failed for diagnostics.

use aes::Aes256;
use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

use crate::derive::EidKey;
use crate::domain::DomainId;
use crate::tunnel::RoutingId;

/// Length of the advert payload a phone sends.
pub const ADVERT_LEN: usize = 20;
/// 16-bit service UUID registered to the FIDO Alliance, used by current phones.
pub const SERVICE_UUID_FIDO: u16 = 0xFFF9;
/// Google's 16-bit service UUID, used by older Android phones; clients read both.
pub const SERVICE_UUID_GOOGLE: u16 = 0xFDE2;

const TAG_LEN: usize = 4;

/// Why an advert is not for this session (or not valid at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AdvertReject {
    /// Fewer than 20 bytes.
    #[error("advert shorter than 20 bytes")]
    Short,
    /// The tag does not match: another session's advert, or corrupted.
    #[error("advert tag does not match this session")]
    Tag,
    /// The reserved first plaintext byte is not zero.
    #[error("advert reserved byte is not zero")]
    Reserved,
    /// The domain id is one of the unassigned ids 2–255.
    #[error("advert names an unknown tunnel domain id")]
    Domain,
}

impl AdvertReject {
    /// A stable identifier for the failed check.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Short => "short",
            Self::Tag => "tag",
            Self::Reserved => "reserved",
            Self::Domain => "domain",
        }
    }
}

/// The decrypted contents of a QR-initiated session's advert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertPlaintext {
    /// Random bytes chosen by the phone.
    pub nonce: [u8; 10],
    /// The relay's routing id for the phone's tunnel.
    pub routing_id: RoutingId,
    /// Which tunnel server the phone is connected to.
    pub domain_id: DomainId,
}

impl AdvertPlaintext {
    /// The 16-byte plaintext block; also the salt of the Noise PSK.
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[1..11].copy_from_slice(&self.nonce);
        block[11..14].copy_from_slice(self.routing_id.as_bytes());
        block[14..16].copy_from_slice(&self.domain_id.0.to_le_bytes());
        block
    }

    /// Parses a decrypted block, checking the reserved byte and the domain id.
    pub fn from_bytes(block: &[u8; 16]) -> Result<Self, AdvertReject> {
        if block[0] != 0 {
            return Err(AdvertReject::Reserved);
        }
        let domain_id = DomainId(u16::from_le_bytes([block[14], block[15]]));
        if !domain_id.is_known() {
            return Err(AdvertReject::Domain);
        }
        let mut nonce = [0u8; 10];
        nonce.copy_from_slice(&block[1..11]);
        Ok(Self {
            nonce,
            routing_id: RoutingId::new([block[11], block[12], block[13]]),
            domain_id,
        })
    }
}

/// Encrypts a plaintext block into the 20-byte advert.
pub fn encrypt(key: &EidKey, plaintext: &[u8; 16]) -> [u8; ADVERT_LEN] {
    let (aes_key, mac_key) = key.expose().split_at(32);
    let cipher = Aes256::new(&Array::from(
        <[u8; 32]>::try_from(aes_key).unwrap_or_default(),
    ));
    let mut block = Array::from(*plaintext);
    cipher.encrypt_block(&mut block);
    let mut out = [0u8; ADVERT_LEN];
    out[..16].copy_from_slice(&block);
    let tag = hmac(mac_key, &out[..16]);
    out[16..].copy_from_slice(&tag[..TAG_LEN]);
    out
}

/// Authenticates and decrypts an advert, returning the raw plaintext block. Bytes beyond the
/// first 20 (a CTAP 2.3 suffix) are ignored. Does not look inside the block: state-assisted
/// sessions use random plaintexts. QR sessions use [`decrypt_qr`].
pub fn decrypt(key: &EidKey, advert: &[u8]) -> Result<[u8; 16], AdvertReject> {
    let advert = advert.get(..ADVERT_LEN).ok_or(AdvertReject::Short)?;
    let (aes_key, mac_key) = key.expose().split_at(32);
    let (ciphertext, tag) = advert.split_at(16);
    let mut mac =
        <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(mac_key).map_err(|_| AdvertReject::Tag)?;
    mac.update(ciphertext);
    mac.verify_truncated_left(tag)
        .map_err(|_| AdvertReject::Tag)?;
    let cipher = Aes256::new(&Array::from(
        <[u8; 32]>::try_from(aes_key).unwrap_or_default(),
    ));
    let mut block = Array::from(<[u8; 16]>::try_from(ciphertext).unwrap_or_default());
    cipher.decrypt_block(&mut block);
    Ok(block.into())
}

/// Trial-decrypts an advert of a QR-initiated session and parses it. Returns the plaintext block
/// too: it salts the Noise PSK.
pub fn decrypt_qr(
    key: &EidKey,
    advert: &[u8],
) -> Result<(AdvertPlaintext, [u8; 16]), AdvertReject> {
    let block = decrypt(key, advert)?;
    Ok((AdvertPlaintext::from_bytes(&block)?, block))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    match <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        // HMAC accepts keys of any length.
        Err(_) => [0u8; 32],
    }
}
