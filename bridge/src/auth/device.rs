//! Device tokens: short-lived JWTs signed with the device's P-256 key.
//!
//! A device (hub, headset) creates a long-lived P-256 key pair once; the bridge stores only the
//! public key, bound to the device id at pairing. Every call then carries a fresh token.
//!
//! # Wire format (the device agent implements the same)
//!
//! A compact JWS (RFC 7515), ES256 (RFC 7518 §3.4: the signature is the 64-byte `r || s`, not
//! DER), base64url without padding:
//!
//! ```text
//! header  {"alg":"ES256","typ":"JWT","kid":"<device id>"}
//! claims  {"iss":"<device id>","aud":"<bridge audience>","iat":<now>,"exp":<now + lifetime>,
//!          "jti":"<random>"}
//! ```
//!
//! - `kid` and `iss` are both the device id: 1–64 characters of `[A-Za-z0-9_-]`.
//! - `aud` is the bridge's configured audience (a string; an array containing it is accepted).
//! - `iat` and `exp` are integer Unix seconds; `0 < exp - iat <=`
//!   [`MAX_DEVICE_TOKEN_LIFETIME_SECS`] (300 s). The bridge rejects a token whose `iat` is more
//!   than [`DEVICE_TOKEN_LEEWAY_SECS`] (30 s) in its future, or when `now >= exp + 30 s`. An
//!   `nbf`, if present, is honoured with the same leeway.
//! - `jti` is 16–64 characters of `[A-Za-z0-9_-]`, fresh and random for each token (e.g. 16
//!   random bytes in base64url). The bridge refuses a `jti` it has seen: the caller records it
//!   in the database and must keep it at least until `exp + 30 s`.
//! - `typ`, if present, must be `JWT`. Other claims are ignored; `crit` headers are refused.
//! - Send it as `Authorization: Bearer <token>`; at most [`MAX_DEVICE_TOKEN_LEN`] bytes.
//!
//! **Pairing.** Before pairing the device has no id. `startPairing` carries the device's public
//! key as an argument together with the same kind of token, with `kid` = `iss` =
//! [`PAIRING_KID`] (`"pairing"`), signed by that key; the bridge verifies it against the key in
//! the arguments, which proves the caller holds the private key it is registering.
//!
//! Verification reads no clock: the time is the `now_unix` argument.

use std::fmt;

use base64::Engine as _;
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::{PublicKey, SecretKey};
use serde::Serialize;

use super::AuthError;
use super::jwk::{p256_thumbprint, p256_uncompressed};
use super::jws::{self, B64URL, RegisteredClaims, is_token_safe_id};

/// Longest allowed `exp - iat`.
pub const MAX_DEVICE_TOKEN_LIFETIME_SECS: i64 = 300;
/// Clock-skew leeway for `iat`, `nbf` and `exp`.
pub const DEVICE_TOKEN_LEEWAY_SECS: i64 = 30;
/// `kid` and `iss` of the token sent with `startPairing`.
pub const PAIRING_KID: &str = "pairing";
/// Longest device token accepted, in bytes.
pub const MAX_DEVICE_TOKEN_LEN: usize = 2048;
/// Longest `kid` (device id).
pub const MAX_KID_LEN: usize = 64;
/// Shortest `jti`.
pub const MIN_JTI_LEN: usize = 16;
/// Longest `jti`.
pub const MAX_JTI_LEN: usize = 64;

/// A device's P-256 public key; valid by construction (a point on the curve, not the identity).
#[derive(Clone, PartialEq, Eq)]
pub struct DevicePublicKey(PublicKey);

impl fmt::Debug for DevicePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DevicePublicKey")
            .field(&self.thumbprint())
            .finish()
    }
}

impl DevicePublicKey {
    /// Parses a 65-byte uncompressed SEC1 point (`04 || x || y`).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, AuthError> {
        if bytes.len() != 65 || bytes[0] != 0x04 {
            return Err(AuthError::InvalidKey);
        }
        PublicKey::from_sec1_bytes(bytes)
            .map(Self)
            .map_err(|_| AuthError::InvalidKey)
    }

    /// The 65-byte uncompressed SEC1 encoding.
    pub fn to_sec1(&self) -> [u8; 65] {
        p256_uncompressed(&self.0)
    }

    /// Parses the base64url (no padding) of the uncompressed SEC1 encoding.
    pub fn from_base64url(text: &str) -> Result<Self, AuthError> {
        if text.len() > 128 {
            return Err(AuthError::InvalidKey);
        }
        let bytes = B64URL.decode(text).map_err(|_| AuthError::InvalidKey)?;
        Self::from_sec1(&bytes)
    }

    /// base64url (no padding) of the uncompressed SEC1 encoding (87 characters).
    pub fn to_base64url(&self) -> String {
        B64URL.encode(self.to_sec1())
    }

    /// The RFC 7638 JWK thumbprint: a short stable fingerprint for logs and display.
    pub fn thumbprint(&self) -> String {
        p256_thumbprint(&self.0)
    }

    /// The underlying key.
    pub fn as_public_key(&self) -> &PublicKey {
        &self.0
    }
}

impl From<PublicKey> for DevicePublicKey {
    fn from(key: PublicKey) -> Self {
        Self(key)
    }
}

/// The claims of a verified device token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceClaims {
    /// `iss` (= `kid`): the device id, or [`PAIRING_KID`].
    pub device_id: String,
    /// `jti`: the caller must reject one it has seen before.
    pub jti: String,
    /// `iat`, Unix seconds.
    pub issued_at: i64,
    /// `exp`, Unix seconds.
    pub expires_at: i64,
}

/// Reads the `kid` from the header without verifying anything, so the caller can look up the
/// device's key. Rejects a missing `kid` and one that is not 1–64 characters of `[A-Za-z0-9_-]`.
pub fn unverified_kid(token: &str) -> Result<String, AuthError> {
    let parts = jws::parse(token, MAX_DEVICE_TOKEN_LEN)?;
    let kid = parts.header.kid.ok_or(AuthError::MissingKeyId)?;
    if !is_token_safe_id(&kid, 1, MAX_KID_LEN) {
        return Err(AuthError::Malformed);
    }
    Ok(kid)
}

/// Verifies a device token signed by `key`, whose header `kid` and `iss` must be `expected_kid`
/// and whose `aud` must contain `audience`, at time `now_unix`. Returns the claims; replay of
/// the `jti` is for the caller to check.
pub fn verify_device_token(
    token: &str,
    key: &DevicePublicKey,
    expected_kid: &str,
    audience: &str,
    now_unix: i64,
) -> Result<DeviceClaims, AuthError> {
    let parts = jws::parse(token, MAX_DEVICE_TOKEN_LEN)?;
    if parts.header.alg != "ES256" {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    if parts
        .header
        .typ
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
    {
        return Err(AuthError::Malformed);
    }
    match parts.header.kid.as_deref() {
        None => return Err(AuthError::MissingKeyId),
        Some(kid) if kid != expected_kid => return Err(AuthError::UnknownKey),
        Some(_) => {}
    }
    parts.verify_es256(&VerifyingKey::from(&key.0))?;

    let claims = RegisteredClaims::from_payload(&parts.payload()?)?;
    let iss = claims.iss()?.ok_or(AuthError::MissingClaim("iss"))?;
    if iss != expected_kid {
        return Err(AuthError::WrongIssuer);
    }
    match claims.aud_contains(audience)? {
        None => return Err(AuthError::MissingClaim("aud")),
        Some(false) => return Err(AuthError::WrongAudience),
        Some(true) => {}
    }
    let iat = claims.iat()?.ok_or(AuthError::MissingClaim("iat"))?;
    let exp = claims.exp()?.ok_or(AuthError::MissingClaim("exp"))?;
    if exp <= iat {
        return Err(AuthError::InvalidClaim("exp"));
    }
    if exp - iat > MAX_DEVICE_TOKEN_LIFETIME_SECS {
        return Err(AuthError::LifetimeTooLong);
    }
    let latest_start = now_unix.saturating_add(DEVICE_TOKEN_LEEWAY_SECS);
    if iat > latest_start || claims.nbf()?.is_some_and(|nbf| nbf > latest_start) {
        return Err(AuthError::NotYetValid);
    }
    if now_unix >= exp.saturating_add(DEVICE_TOKEN_LEEWAY_SECS) {
        return Err(AuthError::Expired);
    }
    let jti = claims.jti()?.ok_or(AuthError::MissingClaim("jti"))?;
    if !is_token_safe_id(jti, MIN_JTI_LEN, MAX_JTI_LEN) {
        return Err(AuthError::InvalidClaim("jti"));
    }
    Ok(DeviceClaims {
        device_id: iss.to_owned(),
        jti: jti.to_owned(),
        issued_at: iat,
        expires_at: exp,
    })
}

#[derive(Serialize)]
struct MintClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: &'a str,
}

/// Mints a device token in the wire format above (tests, and the device agent).
/// `lifetime_secs` must be 1..=300; `kid` and `jti` must have the documented shapes.
pub fn mint_device_token(
    key: &SecretKey,
    kid: &str,
    audience: &str,
    now_unix: i64,
    lifetime_secs: i64,
    jti: &str,
) -> Result<String, AuthError> {
    if !is_token_safe_id(kid, 1, MAX_KID_LEN) {
        return Err(AuthError::InvalidClaim("kid"));
    }
    if audience.is_empty() {
        return Err(AuthError::InvalidClaim("aud"));
    }
    if lifetime_secs <= 0 {
        return Err(AuthError::InvalidClaim("exp"));
    }
    if lifetime_secs > MAX_DEVICE_TOKEN_LIFETIME_SECS {
        return Err(AuthError::LifetimeTooLong);
    }
    if !is_token_safe_id(jti, MIN_JTI_LEN, MAX_JTI_LEN) {
        return Err(AuthError::InvalidClaim("jti"));
    }
    let claims = MintClaims {
        iss: kid,
        aud: audience,
        iat: now_unix,
        exp: now_unix.saturating_add(lifetime_secs),
        jti,
    };
    Ok(jws::sign_es256(
        kid,
        &claims,
        &jws::Es256Signer::new(&SigningKey::from(key)),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::elliptic_curve::Generate as _;

    #[test]
    fn public_key_encodings() {
        let public = SecretKey::generate().public_key();
        let key = DevicePublicKey::from(public);
        let sec1 = key.to_sec1();
        assert_eq!(sec1[0], 4);
        assert_eq!(DevicePublicKey::from_sec1(&sec1).unwrap(), key);
        let text = key.to_base64url();
        assert_eq!(text.len(), 87);
        assert_eq!(DevicePublicKey::from_base64url(&text).unwrap(), key);
        // Compressed form, wrong lengths, the identity and off-curve points are refused.
        let compressed = {
            let mut c = [0u8; 33];
            c[0] = 2 + (sec1[64] & 1);
            c[1..].copy_from_slice(&sec1[1..33]);
            c
        };
        assert_eq!(
            DevicePublicKey::from_sec1(&compressed),
            Err(AuthError::InvalidKey)
        );
        assert_eq!(
            DevicePublicKey::from_sec1(&sec1[..64]),
            Err(AuthError::InvalidKey)
        );
        assert_eq!(
            DevicePublicKey::from_sec1(&[0u8; 65]),
            Err(AuthError::InvalidKey)
        );
        let mut off = sec1;
        off[64] ^= 1;
        assert_eq!(DevicePublicKey::from_sec1(&off), Err(AuthError::InvalidKey));
        assert_eq!(
            DevicePublicKey::from_base64url("***"),
            Err(AuthError::InvalidKey)
        );
        assert!(format!("{key:?}").starts_with("DevicePublicKey(\""));
    }

    #[test]
    fn mint_rejects_bad_inputs() {
        let key = SecretKey::generate();
        let jti = "0123456789abcdef";
        assert_eq!(
            mint_device_token(&key, "dev", "aud", 0, 301, jti),
            Err(AuthError::LifetimeTooLong)
        );
        assert_eq!(
            mint_device_token(&key, "dev", "aud", 0, 0, jti),
            Err(AuthError::InvalidClaim("exp"))
        );
        assert_eq!(
            mint_device_token(&key, "dev/1", "aud", 0, 60, jti),
            Err(AuthError::InvalidClaim("kid"))
        );
        assert_eq!(
            mint_device_token(&key, "dev", "aud", 0, 60, "short"),
            Err(AuthError::InvalidClaim("jti"))
        );
    }
}
