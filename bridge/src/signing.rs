//! The bridge's envelope signing keys, their JWKS and rotation.
//!
//! Each delivery's push carries a compact *envelope*: a JWS (ES256, header
//! `{"alg":"ES256","typ":"JWT","kid":..}`) over [`EnvelopeClaims`]. It carries no FIDO URL and
//! no secret. The companion app verifies it against the bridge's `/.well-known/jwks.json`
//! ([`KeySet::jwks`]) with [`verify_envelope`] before showing anything.
//!
//! # Keys and rotation
//!
//! A [`KeySet`] holds one *active* key, which signs, and the *retired* keys it replaced, which
//! never sign but stay in the JWKS until every envelope they signed has expired:
//! [`KeySet::rotate`] retires the active key at `now` and creates a new one;
//! [`KeySet::prune`] drops a retired key once `retired_at + envelope lifetime + 60 s` is past.
//! Key ids are RFC 7638 thumbprints.
//!
//! # Key file
//!
//! The set persists as one JSON file, written atomically (temporary file, then rename) with mode
//! 0600:
//!
//! ```json
//! {"version":1,"keys":[
//!   {"kid":"...","created_at":1700000000,"retired_at":1700086400,"private_key":"-----BEGIN PRIVATE KEY-----\n..."},
//!   {"kid":"...","created_at":1700086400,"retired_at":null,"private_key":"-----BEGIN PRIVATE KEY-----\n..."}]}
//! ```
//!
//! Keys are listed oldest first; exactly the last one is active (`retired_at` null). Private keys
//! are PKCS#8 PEM. They never appear in `Debug` output, logs, errors or the JWKS.
//!
//! Time is always an argument; the only I/O is the key file and key generation (OS randomness).

use std::fmt;
use std::io;
use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use p256::ecdsa::{SigningKey, VerifyingKey};
use p256::elliptic_curve::Generate as _;
use p256::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize as _, Zeroizing};

use crate::auth::jwk::{p256_from_jwk, p256_jwk, p256_thumbprint};
use crate::auth::jws::{self, JwsError, is_token_safe_id};
use crate::auth::keyfile;

/// Extra time a retired key stays published beyond the envelope lifetime, for clock skew.
pub const ROTATION_SKEW_SECS: i64 = 60;
/// Longest envelope [`verify_envelope`] accepts, in bytes.
pub const MAX_ENVELOPE_LEN: usize = 8 * 1024;
/// `request_type` of a sign-in (WebAuthn get assertion).
pub const REQUEST_TYPE_GET_ASSERTION: &str = "ga";
/// `request_type` of a registration (WebAuthn make credential).
pub const REQUEST_TYPE_MAKE_CREDENTIAL: &str = "mc";

const KEY_FILE_VERSION: u32 = 1;
const MAX_KID_LEN: usize = 64;

/// The signed content of a delivery envelope. JSON member names are exactly the field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeClaims {
    /// The bridge's issuer name.
    pub iss: String,
    /// The companion app audience.
    pub aud: String,
    /// The account id.
    pub sub: String,
    /// The delivery this envelope announces.
    pub delivery_id: String,
    /// The requesting device.
    pub device_id: String,
    /// The device's display name.
    pub device_name: String,
    /// The device's model.
    pub device_model: String,
    /// The relying party id of the request.
    pub rp_id: String,
    /// `"ga"` (sign-in) or `"mc"` (registration).
    pub request_type: String,
    /// The short number the user matches against the device.
    pub number_code: String,
    /// The origin the device says the user signs in to (display only), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The account name the relying party suggested (display only), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expiry (the delivery's deadline), Unix seconds.
    pub exp: i64,
}

/// Why signing, verifying or loading keys failed. Messages never contain key material or
/// envelope contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// Not a well-formed compact JWS, bad JSON or missing envelope members.
    #[error("envelope is malformed")]
    Malformed,
    /// `alg` is not ES256.
    #[error("envelope algorithm is not ES256")]
    UnsupportedAlgorithm,
    /// The header has no `kid`.
    #[error("envelope has no key id")]
    MissingKeyId,
    /// No usable ES256 key in the JWKS has the envelope's `kid`.
    #[error("envelope names an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("envelope signature is invalid")]
    BadSignature,
    /// `exp` is past, beyond the leeway.
    #[error("envelope has expired")]
    Expired,
    /// `iat` is in the future, beyond the leeway.
    #[error("envelope is not yet valid")]
    NotYetValid,
    /// `iss` is not the expected bridge.
    #[error("envelope issuer is not the expected issuer")]
    WrongIssuer,
    /// `aud` is not the expected audience.
    #[error("envelope audience is not the expected audience")]
    WrongAudience,
    /// A claim has an unacceptable value (`request_type`, or `exp` not after `iat`).
    #[error("envelope claim `{0}` is invalid")]
    InvalidClaim(&'static str),
    /// The key file could not be read, parsed or written (the message names the path).
    #[error("signing key file error: {0}")]
    KeyFile(String),
    /// A local failure (serialization, signing, randomness).
    #[error("internal signing error: {0}")]
    Internal(&'static str),
}

impl SigningError {
    /// A stable snake_case reason for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::MissingKeyId => "missing_kid",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::InvalidClaim(_) => "invalid_claim",
            Self::KeyFile(_) => "key_file",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<JwsError> for SigningError {
    fn from(err: JwsError) -> Self {
        match err {
            JwsError::Malformed => Self::Malformed,
            JwsError::BadSignature => Self::BadSignature,
            JwsError::Internal(what) => Self::Internal(what),
        }
    }
}

/// One signing key with its lifecycle.
struct KeyEntry {
    kid: String,
    created_at: i64,
    retired_at: Option<i64>,
    secret: SecretKey,
    signing: jws::Es256Signer,
    public: PublicKey,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

impl KeyEntry {
    fn new(secret: SecretKey, kid: String, created_at: i64, retired_at: Option<i64>) -> Self {
        let public = secret.public_key();
        let signing = jws::Es256Signer::new(&SigningKey::from(&secret));
        Self {
            kid,
            created_at,
            retired_at,
            secret,
            signing,
            public,
        }
    }

    fn generate(now: i64) -> Self {
        let secret = SecretKey::generate();
        let kid = p256_thumbprint(&secret.public_key());
        Self::new(secret, kid, now, None)
    }
}

/// The envelope signing keys: one active key plus retired keys still published.
#[derive(Debug)]
pub struct KeySet {
    /// Retired keys, oldest first.
    retired: Vec<KeyEntry>,
    active: KeyEntry,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    keys: Vec<KeyFileEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileEntry {
    kid: String,
    created_at: i64,
    retired_at: Option<i64>,
    private_key: String,
}

impl Drop for KeyFileEntry {
    fn drop(&mut self) {
        self.private_key.zeroize();
    }
}

impl KeySet {
    /// Loads the set from `path`, or creates it there (0600) with one fresh key if the file does
    /// not exist. The parent directory must exist.
    pub fn load_or_create(path: &Path, now_unix: i64) -> Result<Self, SigningError> {
        match keyfile::read_limited(path, true) {
            Ok(bytes) => return Self::parse(path, &bytes),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(file_error(path, &err)),
        }
        let set = Self::try_generate(now_unix)?;
        let bytes = set.to_file_bytes()?;
        match keyfile::create_new(path, &bytes) {
            Ok(()) => {
                tracing::info!(path = %path.display(), kid = %set.active.kid, "created envelope signing key");
                Ok(set)
            }
            // Another instance created it first: use theirs.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let bytes = keyfile::read_limited(path, true).map_err(|e| file_error(path, &e))?;
                Self::parse(path, &bytes)
            }
            Err(err) => Err(file_error(path, &err)),
        }
    }

    /// A set with one fresh key, in memory. Panics only if the OS has no randomness.
    pub fn generate(now_unix: i64) -> Self {
        Self {
            retired: Vec::new(),
            active: KeyEntry::generate(now_unix),
        }
    }

    fn try_generate(now: i64) -> Result<Self, SigningError> {
        let secret = SecretKey::try_generate()
            .map_err(|_| SigningError::Internal("operating system randomness unavailable"))?;
        let kid = p256_thumbprint(&secret.public_key());
        Ok(Self {
            retired: Vec::new(),
            active: KeyEntry::new(secret, kid, now, None),
        })
    }

    /// Makes a new key active; the previous active key is retired at `now_unix`. Call
    /// [`Self::save`] afterwards to persist it. Panics only if the OS has no randomness.
    pub fn rotate(&mut self, now_unix: i64) {
        let mut previous = std::mem::replace(&mut self.active, KeyEntry::generate(now_unix));
        previous.retired_at = Some(now_unix);
        tracing::info!(retired = %previous.kid, active = %self.active.kid, "rotated envelope signing key");
        self.retired.push(previous);
    }

    /// Drops retired keys whose envelopes have all expired: `retired_at + envelope_lifetime_secs
    /// + 60 < now_unix`. Returns how many were dropped. The active key is never dropped.
    pub fn prune(&mut self, now_unix: i64, envelope_lifetime_secs: i64) -> usize {
        let before = self.retired.len();
        let keep_for = envelope_lifetime_secs
            .max(0)
            .saturating_add(ROTATION_SKEW_SECS);
        self.retired.retain(|key| {
            let retired_at = key.retired_at.unwrap_or(i64::MAX);
            retired_at.saturating_add(keep_for) >= now_unix
        });
        before - self.retired.len()
    }

    /// Writes the set to `path` atomically (temporary file + rename), mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), SigningError> {
        let bytes = self.to_file_bytes()?;
        keyfile::replace(path, &bytes).map_err(|err| file_error(path, &err))
    }

    /// The `kid` of the key that signs.
    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    /// Key ids, active first, then retired keys newest first (the JWKS order).
    pub fn kids(&self) -> Vec<&str> {
        self.keys_newest_first().map(|k| k.kid.as_str()).collect()
    }

    fn keys_newest_first(&self) -> impl Iterator<Item = &KeyEntry> {
        std::iter::once(&self.active).chain(self.retired.iter().rev())
    }

    /// Signs `claims` with the active key: header `alg` ES256, `typ` JWT, `kid` = active kid.
    /// `request_type` must be `"ga"` or `"mc"` and `exp` must be after `iat`.
    pub fn sign(&self, claims: &EnvelopeClaims) -> Result<String, SigningError> {
        check_request_type(&claims.request_type)?;
        if claims.exp <= claims.iat {
            return Err(SigningError::InvalidClaim("exp"));
        }
        Ok(jws::sign_es256(
            &self.active.kid,
            claims,
            &self.active.signing,
        )?)
    }

    /// The public keys of the active and the not yet pruned retired keys (`kid`, `alg` ES256,
    /// `use` sig, `kty` EC, `crv` P-256, `x`, `y`) — never private parts.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self
                .keys_newest_first()
                .map(|k| p256_jwk(&k.public, &k.kid))
                .collect(),
        }
    }

    fn to_file_bytes(&self) -> Result<Zeroizing<Vec<u8>>, SigningError> {
        let mut keys = Vec::with_capacity(self.retired.len() + 1);
        for key in self.retired.iter().chain(std::iter::once(&self.active)) {
            let pem = keyfile::secret_key_to_pem(&key.secret)
                .ok_or(SigningError::Internal("PKCS#8 encoding failed"))?;
            keys.push(KeyFileEntry {
                kid: key.kid.clone(),
                created_at: key.created_at,
                retired_at: key.retired_at,
                private_key: String::clone(&pem),
            });
        }
        let file = KeyFile {
            version: KEY_FILE_VERSION,
            keys,
        };
        serde_json::to_vec_pretty(&file)
            .map(Zeroizing::new)
            .map_err(|_| SigningError::Internal("key file serialization failed"))
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, SigningError> {
        let invalid = |why: &str| SigningError::KeyFile(format!("{}: {why}", path.display()));
        let file: KeyFile = serde_json::from_slice(bytes).map_err(|_| {
            invalid("not a signing key file (expected {\"version\":1,\"keys\":[...]})")
        })?;
        if file.version != KEY_FILE_VERSION {
            return Err(invalid("unsupported key file version"));
        }
        let count = file.keys.len();
        let mut retired = Vec::with_capacity(count.saturating_sub(1));
        let mut active = None;
        for (index, entry) in file.keys.iter().enumerate() {
            if !is_token_safe_id(&entry.kid, 1, MAX_KID_LEN) {
                return Err(invalid(
                    "a key id is empty, too long or has characters outside [A-Za-z0-9_-]",
                ));
            }
            let duplicate = retired.iter().any(|k: &KeyEntry| k.kid == entry.kid);
            if duplicate {
                return Err(invalid("duplicate key id"));
            }
            let secret = keyfile::secret_key_from_pem(&entry.private_key)
                .ok_or_else(|| invalid("a private key is not PKCS#8 PEM P-256"))?;
            let is_last = index + 1 == count;
            match (entry.retired_at, is_last) {
                (None, true) => {
                    let kid = entry.kid.clone();
                    active = Some(KeyEntry::new(secret, kid, entry.created_at, None));
                }
                (Some(at), false) => {
                    let kid = entry.kid.clone();
                    retired.push(KeyEntry::new(secret, kid, entry.created_at, Some(at)));
                }
                (None, false) => return Err(invalid("only the last key may be active")),
                (Some(_), true) => return Err(invalid("the last key must be active")),
            }
        }
        let active = active.ok_or_else(|| invalid("no keys"))?;
        if retired.iter().any(|k| k.kid == active.kid) {
            return Err(invalid("duplicate key id"));
        }
        Ok(Self { retired, active })
    }
}

fn file_error(path: &Path, err: &io::Error) -> SigningError {
    SigningError::KeyFile(format!("{}: {err}", path.display()))
}

fn check_request_type(request_type: &str) -> Result<(), SigningError> {
    match request_type {
        REQUEST_TYPE_GET_ASSERTION | REQUEST_TYPE_MAKE_CREDENTIAL => Ok(()),
        _ => Err(SigningError::InvalidClaim("request_type")),
    }
}

/// Verifies an envelope against the bridge's JWKS at `now_unix` (the companion side).
///
/// Requires `alg` ES256 and a `kid` naming a P-256 key of `jwks` usable for ES256; then the
/// signature, `iss` == `issuer`, `aud` == `audience`, `now < exp + leeway`,
/// `iat <= now + leeway`, and a known `request_type`. A negative leeway counts as zero.
pub fn verify_envelope(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    audience: &str,
    now_unix: i64,
    leeway_secs: i64,
) -> Result<EnvelopeClaims, SigningError> {
    let parts = jws::parse(token, MAX_ENVELOPE_LEN)?;
    if parts.header.alg != "ES256" {
        return Err(SigningError::UnsupportedAlgorithm);
    }
    let kid = parts
        .header
        .kid
        .as_deref()
        .ok_or(SigningError::MissingKeyId)?;
    let public = jwks
        .keys
        .iter()
        .filter(|jwk| jwk.common.key_id.as_deref() == Some(kid))
        .find_map(p256_from_jwk)
        .ok_or(SigningError::UnknownKey)?;
    parts.verify_es256(&VerifyingKey::from(&public))?;

    let claims: EnvelopeClaims = jws::from_json_object(&parts.payload()?)?;
    if claims.iss != issuer {
        return Err(SigningError::WrongIssuer);
    }
    if claims.aud != audience {
        return Err(SigningError::WrongAudience);
    }
    let leeway = leeway_secs.max(0);
    if now_unix >= claims.exp.saturating_add(leeway) {
        return Err(SigningError::Expired);
    }
    if claims.iat > now_unix.saturating_add(leeway) {
        return Err(SigningError::NotYetValid);
    }
    check_request_type(&claims.request_type)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_private_keys() {
        let set = KeySet::generate(0);
        let text = format!("{set:?}");
        assert!(text.contains("[redacted]"));
        assert!(text.contains(set.active_kid()));
        let pem = keyfile::secret_key_to_pem(&set.active.secret).unwrap();
        let body: String = pem.lines().nth(1).unwrap().to_owned();
        assert!(!text.contains(&body));
    }

    #[test]
    fn file_structure_is_validated() {
        let path = Path::new("keys.json");
        let mut set = KeySet::generate(0);
        set.rotate(10);
        let bytes = set.to_file_bytes().unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let good = KeySet::parse(path, &bytes).unwrap();
        assert_eq!(good.kids(), set.kids());

        // Make the first (retired) key active too.
        value["keys"][0]["retired_at"] = serde_json::Value::Null;
        let err = KeySet::parse(path, &serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert_eq!(err.code(), "key_file");
        assert!(!err.to_string().contains("PRIVATE"));

        let mut dup: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let first_kid = dup["keys"][0]["kid"].clone();
        dup["keys"][1]["kid"] = first_kid;
        assert!(KeySet::parse(path, &serde_json::to_vec(&dup).unwrap()).is_err());

        assert!(KeySet::parse(path, br#"{"version":1,"keys":[]}"#).is_err());
        assert!(KeySet::parse(path, br#"{"version":2,"keys":[]}"#).is_err());
        assert!(KeySet::parse(path, b"garbage").is_err());
    }
}
