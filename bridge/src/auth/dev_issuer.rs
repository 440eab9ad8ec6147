//! The built-in development identity provider.
//!
//! For a zero-configuration local run the bridge acts as its own identity provider: it holds an
//! ES256 key (a PKCS#8 PEM file, created 0600 on first start), publishes the public half as a
//! JWKS, and a CLI command mints companion access tokens with it (`dev-token --account alice`).
//! Those tokens are ordinary JWTs — `iss` = [`DEV_ISSUER`], `sub`, `aud`, `iat`, `nbf`, `exp`,
//! `jti` — verified by the same [`CompanionVerifier`] as a real provider's, so the development
//! path exercises the production checks. A `production` profile must refuse to run with it.
//!
//! The key id is the RFC 7638 thumbprint of the public key, so it is stable across restarts.

use std::fmt;
use std::io;
use std::path::Path;

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use p256::ecdsa::SigningKey;
use p256::elliptic_curve::Generate as _;
use p256::{PublicKey, SecretKey};
use serde::Serialize;

use super::AuthError;
use super::companion::{CompanionAuthConfig, CompanionVerifier, MAX_SUBJECT_LEN};
use super::jwk::{p256_jwk, p256_thumbprint};
use super::{jws, keyfile};

/// The `iss` of development tokens.
pub const DEV_ISSUER: &str = "tether-dev";
/// Longest lifetime of a development token (30 days).
pub const MAX_DEV_TOKEN_TTL_SECS: u64 = 30 * 24 * 60 * 60;

/// The development identity provider's signing key.
pub struct DevIssuer {
    key: jws::Es256Signer,
    public: PublicKey,
    kid: String,
}

impl fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIssuer")
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .finish()
    }
}

#[derive(Serialize)]
struct DevClaims<'a> {
    iss: &'static str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
}

impl DevIssuer {
    fn from_secret(secret: &SecretKey) -> Self {
        let public = secret.public_key();
        let kid = p256_thumbprint(&public);
        Self {
            key: jws::Es256Signer::new(&SigningKey::from(secret)),
            public,
            kid,
        }
    }

    /// Loads the key from `path` (PKCS#8 PEM), or creates a new key there (mode 0600) if the file
    /// does not exist. The parent directory must exist.
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        match keyfile::read_limited(path, true) {
            Ok(bytes) => return Self::parse(path, &bytes),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(AuthError::KeyFile(format!("{}: {err}", path.display()))),
        }
        let secret = SecretKey::try_generate()
            .map_err(|_| AuthError::Internal("operating system randomness unavailable"))?;
        let pem = keyfile::secret_key_to_pem(&secret)
            .ok_or(AuthError::Internal("PKCS#8 encoding failed"))?;
        match keyfile::create_new(path, pem.as_bytes()) {
            Ok(()) => {
                let issuer = Self::from_secret(&secret);
                tracing::info!(path = %path.display(), kid = %issuer.kid, "created dev issuer key");
                Ok(issuer)
            }
            // Another process created it first: use theirs.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                let bytes = keyfile::read_limited(path, true)
                    .map_err(|err| AuthError::KeyFile(format!("{}: {err}", path.display())))?;
                Self::parse(path, &bytes)
            }
            Err(err) => Err(AuthError::KeyFile(format!("{}: {err}", path.display()))),
        }
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, AuthError> {
        let secret = std::str::from_utf8(bytes)
            .ok()
            .and_then(keyfile::secret_key_from_pem)
            .ok_or_else(|| {
                AuthError::KeyFile(format!(
                    "{}: not a PKCS#8 PEM P-256 private key",
                    path.display()
                ))
            })?;
        Ok(Self::from_secret(&secret))
    }

    /// A fresh in-memory issuer (tests). Panics only if the operating system has no randomness.
    pub fn generate() -> Self {
        Self::from_secret(&SecretKey::generate())
    }

    /// Mints an access token for `subject` (the account name) and `audience`, valid from
    /// `now_unix` for `ttl_secs` (1 s to [`MAX_DEV_TOKEN_TTL_SECS`]).
    pub fn mint(
        &self,
        subject: &str,
        audience: &str,
        now_unix: i64,
        ttl_secs: u64,
    ) -> Result<String, AuthError> {
        if subject.is_empty() || subject.len() > MAX_SUBJECT_LEN {
            return Err(AuthError::InvalidClaim("sub"));
        }
        if audience.is_empty() {
            return Err(AuthError::InvalidClaim("aud"));
        }
        if ttl_secs == 0 {
            return Err(AuthError::InvalidClaim("exp"));
        }
        if ttl_secs > MAX_DEV_TOKEN_TTL_SECS {
            return Err(AuthError::LifetimeTooLong);
        }
        let ttl = i64::try_from(ttl_secs).map_err(|_| AuthError::LifetimeTooLong)?;
        let claims = DevClaims {
            iss: DEV_ISSUER,
            sub: subject,
            aud: audience,
            iat: now_unix,
            nbf: now_unix,
            exp: now_unix.saturating_add(ttl),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        Ok(jws::sign_es256(&self.kid, &claims, &self.key)?)
    }

    /// The public key as a one-key JWKS (`kid`, `alg` ES256, `use` sig).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![p256_jwk(&self.public, &self.kid)],
        }
    }

    /// The key id in minted tokens' headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The configuration that accepts this issuer's tokens for `audience` (ES256 only).
    pub fn companion_config(audience: &str) -> CompanionAuthConfig {
        CompanionAuthConfig {
            algorithms: vec![Algorithm::ES256],
            ..CompanionAuthConfig::new(DEV_ISSUER, audience)
        }
    }

    /// A verifier that accepts this issuer's tokens for `audience`.
    pub fn verifier(&self, audience: &str) -> Result<CompanionVerifier, AuthError> {
        CompanionVerifier::new(Self::companion_config(audience), self.jwks())
    }
}
