//! Post-handshake encryption (CTAP 2.2 §11.5.3; Chromium `cablev2::Crypter`).
//!
//! This is not Noise transport mode. Each direction has its own AES-256-GCM key from the
//! handshake split and its own message counter starting at zero; every encrypted message uses
//! one counter value. Before encryption a message is padded with zeros and a final byte giving
//! their count, to the next multiple of 32 above its length.
//!
//! Two nonce layouts exist. The current one ("new", the spec's) is 8 zero bytes followed by the
//! counter as a big-endian `u32`, without associated data. Earlier Chromium releases ("old") put
//! the counter little-endian in the first 4 bytes and authenticate the single byte `02`. The
//! client tries the new layout on the first message it receives and falls back to the old one;
//! whichever works is then used in both directions. Phones we build always use the new layout.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use thiserror::Error;
use zeroize::Zeroize;

use crate::secret::Secret;

/// Padding granularity.
pub const PADDING_GRANULE: usize = 32;
/// Largest counter value before the session must end (Chromium's limit).
pub const MAX_COUNTER: u32 = (1 << 24) - 1;
/// Length of the GCM tag appended to every ciphertext.
pub const TAG_LEN: usize = 16;

/// Which nonce layout a session uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Construction {
    /// `00 × 8 ‖ counter (u32 big-endian)`, no associated data (the spec's layout).
    New,
    /// `counter (u32 little-endian) ‖ 00 × 8`, associated data `02` (earlier Chromium).
    Old,
}

impl Construction {
    /// The 12-byte nonce for a counter value.
    pub fn nonce(self, counter: u32) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        match self {
            Self::New => nonce[8..].copy_from_slice(&counter.to_be_bytes()),
            Self::Old => nonce[..4].copy_from_slice(&counter.to_le_bytes()),
        }
        nonce
    }

    /// The associated data.
    pub fn aad(self) -> &'static [u8] {
        match self {
            Self::New => &[],
            Self::Old => &[2],
        }
    }
}

/// Why an encrypted message could not be produced or opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CrypterError {
    /// Authentication failed: wrong key, wrong counter (replayed, reordered or dropped message)
    /// or modified bytes.
    #[error("message failed authentication")]
    Decrypt,
    /// The decrypted message's padding is invalid.
    #[error("message padding is invalid")]
    Padding,
    /// The message counter is exhausted.
    #[error("message counter exhausted")]
    CounterExhausted,
    /// The message is too large to encrypt.
    #[error("message too large to encrypt")]
    TooLarge,
}

/// Pads a message: zeros, then one byte counting them, to the smallest multiple of 32 above the
/// message's length (1 to 32 bytes are added).
pub fn pad(message: &[u8]) -> Vec<u8> {
    let padded_len = (message.len() / PADDING_GRANULE + 1) * PADDING_GRANULE;
    let zeros = padded_len - message.len() - 1;
    let mut out = Vec::with_capacity(padded_len);
    out.extend_from_slice(message);
    out.resize(padded_len - 1, 0);
    // `zeros` is at most 31.
    out.push(zeros as u8);
    out
}

/// Removes padding: drops the last byte and as many bytes before it as it says. Accepts any
/// total length (peers that pad differently still work) and does not check that the padding
/// bytes are zero (as Chromium).
pub fn unpad(padded: &[u8]) -> Result<&[u8], CrypterError> {
    let (&count, rest) = padded.split_last().ok_or(CrypterError::Padding)?;
    let keep = rest
        .len()
        .checked_sub(usize::from(count))
        .ok_or(CrypterError::Padding)?;
    Ok(&rest[..keep])
}

/// Encrypts an already padded message with `key` at `counter`.
pub fn seal(
    key: &Secret<32>,
    construction: Construction,
    counter: u32,
    padded: &[u8],
) -> Result<Vec<u8>, CrypterError> {
    let cipher = Aes256Gcm::new(key.expose().into());
    let nonce = construction.nonce(counter);
    cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: padded,
                aad: construction.aad(),
            },
        )
        .map_err(|_| CrypterError::TooLarge)
}

/// Decrypts a message with `key` at `counter`, returning the padded plaintext.
pub fn open(
    key: &Secret<32>,
    construction: Construction,
    counter: u32,
    ciphertext: &[u8],
) -> Result<Vec<u8>, CrypterError> {
    let cipher = Aes256Gcm::new(key.expose().into());
    let nonce = construction.nonce(counter);
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: construction.aad(),
            },
        )
        .map_err(|_| CrypterError::Decrypt)
}

/// One side's post-handshake crypter: a send key and counter, a receive key and counter.
#[derive(Debug)]
pub struct Crypter {
    send_key: Secret<32>,
    recv_key: Secret<32>,
    send_counter: u32,
    recv_counter: u32,
    construction: Option<Construction>,
}

impl Crypter {
    /// A crypter with a fixed construction (phones use [`Construction::New`]).
    pub fn new(send_key: Secret<32>, recv_key: Secret<32>, construction: Construction) -> Self {
        Self {
            send_key,
            recv_key,
            send_counter: 0,
            recv_counter: 0,
            construction: Some(construction),
        }
    }

    /// A client's crypter: the construction is chosen by the first message it decrypts. The
    /// phone always speaks first after the handshake, so the client never encrypts before the
    /// layout is known (if it did, the new layout would be used).
    pub fn new_detecting(send_key: Secret<32>, recv_key: Secret<32>) -> Self {
        Self {
            construction: None,
            ..Self::new(send_key, recv_key, Construction::New)
        }
    }

    /// The construction in use, once known.
    pub fn construction(&self) -> Option<Construction> {
        self.construction
    }

    /// Pads and encrypts a message, consuming one send counter value.
    pub fn encrypt(&mut self, message: &[u8]) -> Result<Vec<u8>, CrypterError> {
        if self.send_counter > MAX_COUNTER {
            return Err(CrypterError::CounterExhausted);
        }
        let construction = self.construction.unwrap_or(Construction::New);
        let mut padded = pad(message);
        let sealed = seal(&self.send_key, construction, self.send_counter, &padded);
        padded.zeroize();
        let sealed = sealed?;
        self.send_counter += 1;
        Ok(sealed)
    }

    /// Decrypts and unpads a message, consuming one receive counter value. A failed message
    /// consumes nothing; the session should end.
    pub fn decrypt(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, CrypterError> {
        if self.recv_counter > MAX_COUNTER {
            return Err(CrypterError::CounterExhausted);
        }
        let mut padded = match self.construction {
            Some(c) => open(&self.recv_key, c, self.recv_counter, ciphertext)?,
            None => {
                let (c, padded) = [Construction::New, Construction::Old]
                    .into_iter()
                    .find_map(|c| {
                        open(&self.recv_key, c, self.recv_counter, ciphertext)
                            .ok()
                            .map(|p| (c, p))
                    })
                    .ok_or(CrypterError::Decrypt)?;
                self.construction = Some(c);
                padded
            }
        };
        let message = unpad(&padded).map(<[u8]>::to_vec);
        padded.zeroize();
        let message = message?;
        self.recv_counter += 1;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detecting_crypter_adopts_old_construction() {
        let k1 = Secret::new([1; 32]);
        let k2 = Secret::new([2; 32]);
        let mut phone = Crypter::new(k2.clone(), k1.clone(), Construction::Old);
        let mut client = Crypter::new_detecting(k1, k2);
        let msg = phone.encrypt(b"hello").unwrap();
        assert_eq!(client.decrypt(&msg).unwrap(), b"hello");
        assert_eq!(client.construction(), Some(Construction::Old));
        let reply = client.encrypt(b"world").unwrap();
        assert_eq!(phone.decrypt(&reply).unwrap(), b"world");
    }

    #[test]
    fn replay_fails() {
        let k1 = Secret::new([1; 32]);
        let k2 = Secret::new([2; 32]);
        let mut a = Crypter::new(k1.clone(), k2.clone(), Construction::New);
        let mut b = Crypter::new(k2, k1, Construction::New);
        let m = a.encrypt(b"x").unwrap();
        assert_eq!(b.decrypt(&m).unwrap(), b"x");
        assert_eq!(b.decrypt(&m), Err(CrypterError::Decrypt));
    }
}
