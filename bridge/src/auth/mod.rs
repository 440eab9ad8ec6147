//! Who is calling: companion apps and devices.
//!
//! Two kinds of callers reach the bridge, and each proves who it is with a JWT (a compact JWS,
//! RFC 7515/7519):
//!
//! - **Companion apps** present access tokens from the operator's identity provider.
//!   [`companion::CompanionVerifier`] checks them against the provider's JWKS with an algorithm
//!   allow-list (ES256, EdDSA, RS256), the configured issuer and audience and a small leeway; the
//!   token's subject is what the bridge maps to an account. For local use the bridge carries its
//!   own provider, [`dev_issuer::DevIssuer`], whose tokens go through the very same verifier.
//! - **Devices** (hubs, headsets) sign short-lived tokens with their P-256 device key;
//!   [`device::verify_device_token`] checks them against the public key the bridge stored at
//!   pairing. The wire format is documented in [`device`].
//!
//! # Where I/O and time live
//!
//! Verification is pure: every check takes the current time as a `now_unix` argument (the
//! bridge's injectable clock), never the system clock. The only I/O here is reading and writing
//! key files ([`dev_issuer::DevIssuer::load_or_create`],
//! [`companion::CompanionVerifier::from_jwks_file`], [`jwk::FileJwks`]) and key generation, which
//! asks the operating system for randomness. Fetching a JWKS over HTTPS sits behind the
//! [`jwk::JwksFetcher`] trait so that this module needs no HTTP client.
//!
//! # Errors
//!
//! Every failed check has its own [`AuthError`] variant with a stable [`AuthError::code`] for
//! logs and the audit log. Error messages never contain token contents or key material; map them
//! to the client-facing `UNAUTHENTICATED` code at the service's error boundary.

pub mod companion;
pub mod dev_issuer;
pub mod device;
pub mod http_jwks;
pub mod jwk;
pub(crate) mod jws;
pub(crate) mod keyfile;

/// Why a token, key or key file was rejected.
///
/// Messages name the failed check (and for claims the claim's name) but never contain token
/// contents or key material, so they are safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a compact JWS, bad base64url, bad JSON, duplicate members, a `crit` header, or too long.
    #[error("token is malformed")]
    Malformed,
    /// The header's `alg` is one we never accept (`none`, HMAC, PS*, ES384, unknown names).
    #[error("token algorithm is not supported")]
    UnsupportedAlgorithm,
    /// The header's `alg` is supported but not in the configured allow-list.
    #[error("token algorithm is not in the configured allow-list")]
    AlgorithmNotAllowed,
    /// The key named by `kid` is for a different algorithm than the header's `alg`.
    #[error("token algorithm does not match the algorithm of its key")]
    AlgorithmMismatch,
    /// The token has no usable `kid` (and for companion tokens the key set holds several keys
    /// for its algorithm, so the key cannot be chosen without it).
    #[error("token has no usable key id")]
    MissingKeyId,
    /// No key with the token's `kid` (or, without `kid`, no key for its algorithm).
    #[error("token names an unknown key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is in the past, beyond the leeway.
    #[error("token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future, beyond the leeway.
    #[error("token is not yet valid")]
    NotYetValid,
    /// `iss` is not the expected issuer.
    #[error("token issuer is not the expected issuer")]
    WrongIssuer,
    /// `aud` does not contain the expected audience.
    #[error("token audience does not include this service")]
    WrongAudience,
    /// A required claim is absent.
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(&'static str),
    /// A claim has the wrong type or an unacceptable value.
    #[error("token claim `{0}` is invalid")]
    InvalidClaim(&'static str),
    /// `exp - iat` is longer than allowed.
    #[error("token lifetime exceeds the maximum")]
    LifetimeTooLong,
    /// A device public key is not an uncompressed SEC1 P-256 point.
    #[error("public key is not a valid uncompressed P-256 point")]
    InvalidKey,
    /// The verifier's configuration is unusable (the message says why).
    #[error("identity configuration is invalid: {0}")]
    Config(String),
    /// A key file could not be read, parsed or written (the message names the path).
    #[error("key file error: {0}")]
    KeyFile(String),
    /// A JWKS could not be loaded or holds no usable key.
    #[error("key set unavailable: {0}")]
    Jwks(String),
    /// A local failure that is not the caller's fault (serialization, signing, randomness).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl AuthError {
    /// A stable snake_case reason for logs, metrics and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::AlgorithmMismatch => "algorithm_mismatch",
            Self::MissingKeyId => "missing_kid",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim(_) => "invalid_claim",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::InvalidKey => "invalid_key",
            Self::Config(_) => "invalid_config",
            Self::KeyFile(_) => "key_file",
            Self::Jwks(_) => "jwks_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// True when the failure is on the bridge's side (configuration, key files, key set,
    /// internal errors) rather than a bad credential presented by the caller. Server faults
    /// should be logged as errors and answered as `INTERNAL`; the rest are `UNAUTHENTICATED`.
    pub fn is_server_fault(&self) -> bool {
        matches!(
            self,
            Self::Config(_) | Self::KeyFile(_) | Self::Jwks(_) | Self::Internal(_)
        )
    }
}

impl From<jws::JwsError> for AuthError {
    fn from(err: jws::JwsError) -> Self {
        match err {
            jws::JwsError::Malformed => Self::Malformed,
            jws::JwsError::BadSignature => Self::BadSignature,
            jws::JwsError::Internal(what) => Self::Internal(what),
        }
    }
}

impl From<jws::ClaimError> for AuthError {
    fn from(err: jws::ClaimError) -> Self {
        Self::InvalidClaim(err.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case() {
        let all = [
            AuthError::Malformed,
            AuthError::UnsupportedAlgorithm,
            AuthError::AlgorithmNotAllowed,
            AuthError::AlgorithmMismatch,
            AuthError::MissingKeyId,
            AuthError::UnknownKey,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::MissingClaim("sub"),
            AuthError::InvalidClaim("sub"),
            AuthError::LifetimeTooLong,
            AuthError::InvalidKey,
            AuthError::Config(String::new()),
            AuthError::KeyFile(String::new()),
            AuthError::Jwks(String::new()),
            AuthError::Internal(""),
        ];
        let mut codes: Vec<_> = all.iter().map(AuthError::code).collect();
        for code in &codes {
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }
}
