//! The hybrid Noise handshakes (CTAP 2.2 §11.5.3; Chromium `cablev2::HandshakeInitiator`,
//! `RespondToHandshake`).
//!
//! Two patterns over P-256, AES-256-GCM and SHA-256:
//!
//! | flow | pattern | prologue | pre-message |
//! |---|---|---|---|
//! | QR-initiated | `Noise_KNpsk0_P256_AESGCM_SHA256` | `01` | client's QR identity key |
//! | state-assisted | `Noise_NKpsk0_P256_AESGCM_SHA256` | `00` | phone's identity key |
//!
//! Both messages are 81 bytes: an uncompressed ephemeral point (65) and the tag of an empty
//! payload (16). P-256 Diffie-Hellman output is the 32-byte x-coordinate. After the handshake
//! the chaining key splits into the client→phone and phone→client keys used by
//! [`crate::crypter`]; the final handshake hash binds linking signatures.
//!
//! We implement the two patterns here rather than through a general Noise library: they are
//! short and fixed, and this keeps the whole crate on one generation of the RustCrypto crates.
//! The vectors in `testdata/hybrid.json` were cross-checked with an independent Noise
//! implementation.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToSec1Point;
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroize;

use crate::secret::Secret;

/// Length of each handshake message.
pub const MESSAGE_LEN: usize = 65 + 16;

const KN_PSK0: &[u8] = b"Noise_KNpsk0_P256_AESGCM_SHA256";
const NK_PSK0: &[u8] = b"Noise_NKpsk0_P256_AESGCM_SHA256";

/// Which of the two hybrid handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// QR-initiated: `KNpsk0`, prologue `01`.
    KnPsk0,
    /// State-assisted (linked phone): `NKpsk0`, prologue `00`.
    NkPsk0,
}

impl Pattern {
    fn name(self) -> &'static [u8] {
        match self {
            Self::KnPsk0 => KN_PSK0,
            Self::NkPsk0 => NK_PSK0,
        }
    }

    fn prologue(self) -> u8 {
        match self {
            Self::KnPsk0 => 1,
            Self::NkPsk0 => 0,
        }
    }
}

/// Why a handshake message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// The message is not exactly 81 bytes.
    #[error("handshake message must be 81 bytes, got {0}")]
    Length(usize),
    /// The ephemeral key is not an uncompressed point on P-256.
    #[error("handshake message carries an invalid P-256 point")]
    InvalidPoint,
    /// The tag does not verify: wrong PSK, wrong keys or modified bytes.
    #[error("handshake message failed authentication")]
    Decrypt,
}

/// The keys a completed handshake yields.
#[derive(Debug)]
pub struct HandshakeOutput {
    /// Key for messages this side sends.
    pub send_key: Secret<32>,
    /// Key for messages this side receives.
    pub recv_key: Secret<32>,
    /// The final handshake hash.
    pub handshake_hash: [u8; 32],
}

/// Noise symmetric state: chaining key, hash, and the current cipher key.
struct SymmetricState {
    ck: [u8; 32],
    h: [u8; 32],
    k: Option<[u8; 32]>,
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.ck.zeroize();
        if let Some(k) = self.k.as_mut() {
            k.zeroize();
        }
    }
}

impl SymmetricState {
    fn new(pattern: Pattern) -> Self {
        let mut h = [0u8; 32];
        let name = pattern.name();
        // Both names are 31 bytes: shorter than the hash, so they are zero-padded to form `h`.
        h[..name.len()].copy_from_slice(name);
        let mut state = Self { ck: h, h, k: None };
        state.mix_hash(&[pattern.prologue()]);
        state
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.h);
        hasher.update(data);
        self.h = hasher.finalize().into();
    }

    fn hkdf<const L: usize>(&self, ikm: &[u8]) -> [u8; L] {
        let mut out = [0u8; L];
        // L ≤ 96: within HKDF's limit, so this cannot fail.
        let _ = Hkdf::<Sha256>::new(Some(&self.ck), ikm).expand(&[], &mut out);
        out
    }

    fn mix_key(&mut self, ikm: &[u8]) {
        let mut out: [u8; 64] = self.hkdf(ikm);
        self.ck.copy_from_slice(&out[..32]);
        self.k = Some(out[32..].try_into().unwrap_or_default());
        out.zeroize();
    }

    fn mix_key_and_hash(&mut self, ikm: &[u8]) {
        let mut out: [u8; 96] = self.hkdf(ikm);
        self.ck.copy_from_slice(&out[..32]);
        let temp_h: [u8; 32] = out[32..64].try_into().unwrap_or_default();
        self.mix_hash(&temp_h);
        self.k = Some(out[64..].try_into().unwrap_or_default());
        out.zeroize();
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.k.unwrap_or_default().into())
    }

    /// Encrypts an empty payload. Each key is used for exactly one message, so the nonce is 0.
    fn encrypt_and_hash_empty(&mut self) -> [u8; 16] {
        let tag = self
            .cipher()
            .encrypt(
                &Nonce::from([0u8; 12]),
                Payload {
                    msg: &[],
                    aad: &self.h,
                },
            )
            .unwrap_or_default();
        let mut out = [0u8; 16];
        out.copy_from_slice(tag.get(..16).unwrap_or(&[0u8; 16]));
        self.mix_hash(&out);
        out
    }

    fn decrypt_and_hash_empty(&mut self, tag: &[u8]) -> Result<(), NoiseError> {
        let plain = self
            .cipher()
            .decrypt(
                &Nonce::from([0u8; 12]),
                Payload {
                    msg: tag,
                    aad: &self.h,
                },
            )
            .map_err(|_| NoiseError::Decrypt)?;
        if !plain.is_empty() {
            return Err(NoiseError::Decrypt);
        }
        self.mix_hash(tag);
        Ok(())
    }

    fn split(&self) -> (Secret<32>, Secret<32>) {
        let mut out: [u8; 64] = self.hkdf(&[]);
        let k1 = Secret::from_slice(&out[..32]).unwrap_or(Secret::new([0; 32]));
        let k2 = Secret::from_slice(&out[32..]).unwrap_or(Secret::new([0; 32]));
        out.zeroize();
        (k1, k2)
    }
}

/// Uncompressed SEC1 encoding (65 bytes) of a public key.
pub fn uncompressed(key: &PublicKey) -> [u8; 65] {
    let point = key.to_sec1_point(false);
    let mut out = [0u8; 65];
    out.copy_from_slice(point.as_bytes());
    out
}

fn dh(secret: &SecretKey, public: &PublicKey) -> [u8; 32] {
    let shared = secret.diffie_hellman(public);
    let mut out = [0u8; 32];
    out.copy_from_slice(shared.raw_secret_bytes());
    out
}

fn split_message(message: &[u8]) -> Result<(PublicKey, &[u8]), NoiseError> {
    if message.len() != MESSAGE_LEN {
        return Err(NoiseError::Length(message.len()));
    }
    let (point, tag) = message.split_at(65);
    if point[0] != 4 {
        return Err(NoiseError::InvalidPoint);
    }
    let key = PublicKey::from_sec1_bytes(point).map_err(|_| NoiseError::InvalidPoint)?;
    Ok((key, tag))
}

/// The client's side of a handshake, between sending message 1 and receiving message 2.
pub struct HandshakeInitiator {
    state: SymmetricState,
    ephemeral: SecretKey,
    /// KNpsk0: the client's static (QR identity) key, for the `se` token.
    local_static: Option<SecretKey>,
}

impl core::fmt::Debug for HandshakeInitiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HandshakeInitiator { .. }")
    }
}

impl HandshakeInitiator {
    /// Starts a QR-initiated (`KNpsk0`) handshake; returns the state and message 1.
    pub fn new_qr(
        psk: &Secret<32>,
        identity: &SecretKey,
        ephemeral: SecretKey,
    ) -> (Self, [u8; MESSAGE_LEN]) {
        let mut state = SymmetricState::new(Pattern::KnPsk0);
        state.mix_hash(&uncompressed(&identity.public_key()));
        Self::write_first(state, psk, ephemeral, None, Some(identity.clone()))
    }

    /// Starts a state-assisted (`NKpsk0`) handshake with a linked phone's identity key.
    pub fn new_state_assisted(
        psk: &Secret<32>,
        peer_identity: &PublicKey,
        ephemeral: SecretKey,
    ) -> (Self, [u8; MESSAGE_LEN]) {
        let mut state = SymmetricState::new(Pattern::NkPsk0);
        state.mix_hash(&uncompressed(peer_identity));
        Self::write_first(state, psk, ephemeral, Some(peer_identity), None)
    }

    fn write_first(
        mut state: SymmetricState,
        psk: &Secret<32>,
        ephemeral: SecretKey,
        peer_static: Option<&PublicKey>,
        local_static: Option<SecretKey>,
    ) -> (Self, [u8; MESSAGE_LEN]) {
        state.mix_key_and_hash(psk.expose());
        let e_pub = uncompressed(&ephemeral.public_key());
        state.mix_hash(&e_pub);
        state.mix_key(&e_pub);
        if let Some(rs) = peer_static {
            state.mix_key(&dh(&ephemeral, rs));
        }
        let tag = state.encrypt_and_hash_empty();
        let mut msg = [0u8; MESSAGE_LEN];
        msg[..65].copy_from_slice(&e_pub);
        msg[65..].copy_from_slice(&tag);
        (
            Self {
                state,
                ephemeral,
                local_static,
            },
            msg,
        )
    }

    /// Reads message 2 and completes the handshake.
    pub fn finish(mut self, message: &[u8]) -> Result<HandshakeOutput, NoiseError> {
        let (peer_ephemeral, tag) = split_message(message)?;
        let re = &message[..65];
        self.state.mix_hash(re);
        self.state.mix_key(re);
        self.state.mix_key(&dh(&self.ephemeral, &peer_ephemeral));
        if let Some(s) = &self.local_static {
            self.state.mix_key(&dh(s, &peer_ephemeral));
        }
        self.state.decrypt_and_hash_empty(tag)?;
        let (k1, k2) = self.state.split();
        Ok(HandshakeOutput {
            send_key: k1,
            recv_key: k2,
            handshake_hash: self.state.h,
        })
    }
}

/// The phone's side of a QR-initiated (`KNpsk0`) handshake: reads message 1 and returns message 2
/// with the session keys.
pub fn respond_qr(
    psk: &Secret<32>,
    peer_identity: &PublicKey,
    ephemeral: &SecretKey,
    message: &[u8],
) -> Result<([u8; MESSAGE_LEN], HandshakeOutput), NoiseError> {
    let mut state = SymmetricState::new(Pattern::KnPsk0);
    state.mix_hash(&uncompressed(peer_identity));
    respond(state, psk, ephemeral, Some(peer_identity), None, message)
}

/// The phone's side of a state-assisted (`NKpsk0`) handshake, with its identity key.
pub fn respond_state_assisted(
    psk: &Secret<32>,
    identity: &SecretKey,
    ephemeral: &SecretKey,
    message: &[u8],
) -> Result<([u8; MESSAGE_LEN], HandshakeOutput), NoiseError> {
    let mut state = SymmetricState::new(Pattern::NkPsk0);
    state.mix_hash(&uncompressed(&identity.public_key()));
    respond(state, psk, ephemeral, None, Some(identity), message)
}

fn respond(
    mut state: SymmetricState,
    psk: &Secret<32>,
    ephemeral: &SecretKey,
    peer_static: Option<&PublicKey>,
    local_static: Option<&SecretKey>,
    message: &[u8],
) -> Result<([u8; MESSAGE_LEN], HandshakeOutput), NoiseError> {
    let (peer_ephemeral, tag) = split_message(message)?;
    let re = &message[..65];
    state.mix_key_and_hash(psk.expose());
    state.mix_hash(re);
    state.mix_key(re);
    if let Some(s) = local_static {
        state.mix_key(&dh(s, &peer_ephemeral));
    }
    state.decrypt_and_hash_empty(tag)?;

    let e_pub = uncompressed(&ephemeral.public_key());
    state.mix_hash(&e_pub);
    state.mix_key(&e_pub);
    state.mix_key(&dh(ephemeral, &peer_ephemeral));
    if let Some(rs) = peer_static {
        state.mix_key(&dh(ephemeral, rs));
    }
    let reply_tag = state.encrypt_and_hash_empty();
    let mut reply = [0u8; MESSAGE_LEN];
    reply[..65].copy_from_slice(&e_pub);
    reply[65..].copy_from_slice(&reply_tag);
    let (k1, k2) = state.split();
    Ok((
        reply,
        HandshakeOutput {
            send_key: k2,
            recv_key: k1,
            handshake_hash: state.h,
        },
    ))
}
