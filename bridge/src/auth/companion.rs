//! Access tokens of companion apps, issued by the operator's identity provider.
//!
//! [`CompanionVerifier::verify`] accepts a token only when all of these hold, in this order:
//!
//! 1. It is a compact JWS no longer than [`MAX_TOKEN_LEN`] with a well-formed header (see the
//!    strict parser's rules: no duplicate members, no `crit`).
//! 2. Its `alg` is one of [`SUPPORTED_ALGORITHMS`] (ES256, EdDSA, RS256) — `none`, HMAC and
//!    everything else are rejected before any key is looked at, which is what stops the
//!    "HMAC keyed with the public key" confusion — and it is in the configured allow-list.
//! 3. The key: with a `kid`, the JWK with that `kid` whose algorithm equals `alg`; without one,
//!    the only key in the set usable for `alg` (several → [`AuthError::MissingKeyId`]). A JWK's
//!    algorithm is its `alg` member, or when absent the one algorithm we support for its type
//!    (EC P-256 → ES256, OKP Ed25519 → EdDSA, RSA → RS256). Keys marked `use: enc`, keys whose
//!    `key_ops` exclude `verify`, HMAC (`oct`) keys, RSA keys under 2048 bits and malformed keys
//!    are never used.
//! 4. The signature verifies.
//! 5. `iss` equals the configured issuer; `aud` (string or array) contains the audience; `exp`
//!    is present and `now < exp + leeway`; `nbf` and `iat`, when present, are not later than
//!    `now + leeway`; `sub` is a non-empty string of at most [`MAX_SUBJECT_LEN`] bytes.
//!
//! `typ` is not checked (providers send `JWT`, `at+jwt` or nothing); issuer, audience and keys
//! are what bind a token to this bridge. Claims other than the registered ones are ignored.
//!
//! Time is the `now_unix` argument, never the system clock. The key set can be swapped at run
//! time ([`CompanionVerifier::replace_jwks`], [`CompanionVerifier::refresh`]); verifications in
//! flight keep the set they started with.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::AuthError;
use super::jwk::{JwksFetcher, load_jwks_file, p256_from_coordinates, usable_for_signatures};
use super::jws::{self, B64URL, RegisteredClaims};

/// The algorithms a companion token may use; an allow-list may only narrow this.
pub const SUPPORTED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256];
/// Default clock-skew leeway for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Largest leeway a configuration may set.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Longest `sub` accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 255;
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_LEN: usize = 256;
/// Largest RSA modulus accepted, in bytes (4096 bits, the verifier's own limit).
const MAX_RSA_MODULUS_LEN: usize = 512;

/// What the bridge expects of companion access tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompanionAuthConfig {
    /// Expected `iss`, exactly.
    pub issuer: String,
    /// A value `aud` must contain.
    pub audience: String,
    /// Allowed `alg` values; a non-empty subset of [`SUPPORTED_ALGORITHMS`].
    pub algorithms: Vec<Algorithm>,
    /// Clock-skew leeway in seconds for `exp`, `nbf`, `iat` (default 30, at most 300).
    pub leeway_secs: u64,
}

impl CompanionAuthConfig {
    /// A configuration allowing all supported algorithms with the default leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            algorithms: SUPPORTED_ALGORITHMS.to_vec(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    fn validate(&self) -> Result<(), AuthError> {
        if self.issuer.is_empty() {
            return Err(AuthError::Config("companion token issuer is empty".into()));
        }
        if self.audience.is_empty() {
            return Err(AuthError::Config(
                "companion token audience is empty".into(),
            ));
        }
        if self.algorithms.is_empty() {
            return Err(AuthError::Config(
                "companion token algorithm allow-list is empty".into(),
            ));
        }
        if let Some(bad) = self
            .algorithms
            .iter()
            .find(|a| !SUPPORTED_ALGORITHMS.contains(a))
        {
            return Err(AuthError::Config(format!(
                "companion token algorithm {bad:?} is not supported (allowed: ES256, EdDSA, RS256)"
            )));
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            return Err(AuthError::Config(format!(
                "companion token leeway {} s exceeds the maximum of {MAX_LEEWAY_SECS} s",
                self.leeway_secs
            )));
        }
        Ok(())
    }
}

/// Who a verified companion token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CompanionIdentity {
    /// The token's `iss` (the configured issuer).
    pub issuer: String,
    /// The token's `sub`: the identity provider's stable user id, mapped to an account.
    pub subject: String,
}

/// Verifies companion access tokens against the identity provider's current key set.
pub struct CompanionVerifier {
    config: CompanionAuthConfig,
    leeway: i64,
    keys: RwLock<Arc<KeyRing>>,
}

impl fmt::Debug for CompanionVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.ring();
        let kids: Vec<_> = ring
            .keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.alg))
            .collect();
        f.debug_struct("CompanionVerifier")
            .field("config", &self.config)
            .field("keys", &kids)
            .finish()
    }
}

impl CompanionVerifier {
    /// A verifier for `config` using `jwks`. Fails only on an invalid configuration; an empty or
    /// unusable key set is accepted (every token then fails with [`AuthError::UnknownKey`]
    /// until [`Self::replace_jwks`] or [`Self::refresh`] supplies keys).
    pub fn new(config: CompanionAuthConfig, jwks: JwkSet) -> Result<Self, AuthError> {
        config.validate()?;
        let leeway = i64::try_from(config.leeway_secs).unwrap_or(i64::MAX);
        let ring = KeyRing::from_jwks(&jwks);
        Ok(Self {
            config,
            leeway,
            keys: RwLock::new(Arc::new(ring)),
        })
    }

    /// A verifier whose key set is read from a JWKS JSON file. Unlike [`Self::new`], a file
    /// without any usable key is an error: it is almost certainly a misconfiguration.
    pub fn from_jwks_file(config: CompanionAuthConfig, path: &Path) -> Result<Self, AuthError> {
        let jwks = load_jwks_file(path)?;
        let verifier = Self::new(config, jwks)?;
        if verifier.key_count() == 0 {
            return Err(AuthError::KeyFile(format!(
                "{}: no usable signing key (ES256 P-256, EdDSA Ed25519 or RS256 >= 2048 bits)",
                path.display()
            )));
        }
        Ok(verifier)
    }

    /// The configuration this verifier checks against.
    pub fn config(&self) -> &CompanionAuthConfig {
        &self.config
    }

    /// How many keys of the current set are usable.
    pub fn key_count(&self) -> usize {
        self.ring().keys.len()
    }

    /// Swaps in a new key set (for refresh). Unusable keys in it are skipped with a warning.
    pub fn replace_jwks(&self, jwks: JwkSet) {
        let ring = Arc::new(KeyRing::from_jwks(&jwks));
        if ring.keys.is_empty() {
            tracing::warn!("companion JWKS replaced by a set with no usable key");
        }
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = ring;
    }

    /// Fetches the key set from `fetcher` and swaps it in, returning the number of usable keys.
    /// On failure, or when the fetched set has no usable key, the current set stays in place.
    pub async fn refresh(&self, fetcher: &dyn JwksFetcher) -> Result<usize, AuthError> {
        let jwks = fetcher.fetch().await?;
        let ring = KeyRing::from_jwks(&jwks);
        let count = ring.keys.len();
        if count == 0 {
            return Err(AuthError::Jwks("fetched key set has no usable key".into()));
        }
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(ring);
        Ok(count)
    }

    fn ring(&self) -> Arc<KeyRing> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Verifies `token` at time `now_unix` and returns who it speaks for.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<CompanionIdentity, AuthError> {
        let parts = jws::parse(token, MAX_TOKEN_LEN)?;
        let alg = supported_algorithm(&parts.header.alg)?;
        if !self.config.algorithms.contains(&alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }

        let ring = self.ring();
        let key = ring.select(parts.header.kid.as_deref(), alg)?;
        // Decode once ourselves so bad base64 is `Malformed`, not a signature failure.
        parts.signature()?;
        match jsonwebtoken::crypto::verify(
            parts.signature_b64(),
            parts.signing_input().as_bytes(),
            &key.key,
            alg,
        ) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(AuthError::BadSignature),
        }

        let claims = RegisteredClaims::from_payload(&parts.payload()?)?;
        self.check_claims(&claims, now_unix)
    }

    fn check_claims(
        &self,
        claims: &RegisteredClaims,
        now: i64,
    ) -> Result<CompanionIdentity, AuthError> {
        let iss = claims.iss()?.ok_or(AuthError::MissingClaim("iss"))?;
        if iss != self.config.issuer {
            return Err(AuthError::WrongIssuer);
        }
        match claims.aud_contains(&self.config.audience)? {
            None => return Err(AuthError::MissingClaim("aud")),
            Some(false) => return Err(AuthError::WrongAudience),
            Some(true) => {}
        }
        let exp = claims.exp()?.ok_or(AuthError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(self.leeway) {
            return Err(AuthError::Expired);
        }
        let latest_start = now.saturating_add(self.leeway);
        if claims.nbf()?.is_some_and(|nbf| nbf > latest_start) {
            return Err(AuthError::NotYetValid);
        }
        if claims.iat()?.is_some_and(|iat| iat > latest_start) {
            return Err(AuthError::NotYetValid);
        }
        let sub = claims.sub()?.ok_or(AuthError::MissingClaim("sub"))?;
        if sub.is_empty() || sub.len() > MAX_SUBJECT_LEN {
            return Err(AuthError::InvalidClaim("sub"));
        }
        Ok(CompanionIdentity {
            issuer: iss.to_owned(),
            subject: sub.to_owned(),
        })
    }
}

/// Maps a header `alg` to one we support. Exact, case-sensitive names (RFC 7518 §3.1).
fn supported_algorithm(alg: &str) -> Result<Algorithm, AuthError> {
    match alg {
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        "RS256" => Ok(Algorithm::RS256),
        // `none`, HS256/384/512, PS*, ES384 and anything unknown.
        _ => Err(AuthError::UnsupportedAlgorithm),
    }
}

/// A key usable for exactly one algorithm.
struct VerificationKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The usable keys of one JWKS, checked once when the set is installed.
#[derive(Default)]
struct KeyRing {
    keys: Vec<VerificationKey>,
}

impl KeyRing {
    fn from_jwks(jwks: &JwkSet) -> Self {
        let mut keys: Vec<VerificationKey> = Vec::with_capacity(jwks.keys.len());
        for jwk in &jwks.keys {
            let kid = jwk.common.key_id.clone();
            match usable_key(jwk) {
                Ok((alg, key)) => {
                    if keys.iter().any(|k| k.kid == kid && k.alg == alg) {
                        tracing::warn!(kid = kid.as_deref(), "duplicate JWK ignored");
                        continue;
                    }
                    keys.push(VerificationKey { kid, alg, key });
                }
                Err(reason) => {
                    tracing::warn!(kid = kid.as_deref(), reason, "JWK not usable, ignored");
                }
            }
        }
        Self { keys }
    }

    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerificationKey, AuthError> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
                let first = named.next().ok_or(AuthError::UnknownKey)?;
                if first.alg == alg {
                    return Ok(first);
                }
                named
                    .find(|k| k.alg == alg)
                    .ok_or(AuthError::AlgorithmMismatch)
            }
            None => {
                let mut usable = self.keys.iter().filter(|k| k.alg == alg);
                match (usable.next(), usable.next()) {
                    (Some(only), None) => Ok(only),
                    (None, _) => Err(AuthError::UnknownKey),
                    (Some(_), Some(_)) => Err(AuthError::MissingKeyId),
                }
            }
        }
    }
}

/// The algorithm and verification key of a JWK, or why it cannot be used.
fn usable_key(jwk: &Jwk) -> Result<(Algorithm, DecodingKey), &'static str> {
    if !usable_for_signatures(&jwk.common) {
        return Err("not a signature key (use/key_ops)");
    }
    let (alg, key) = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(p) => {
            if p.curve != EllipticCurve::P256 {
                return Err("unsupported EC curve");
            }
            if p256_from_coordinates(&p.x, &p.y).is_none() {
                return Err("invalid P-256 point");
            }
            let key = DecodingKey::from_ec_components(&p.x, &p.y).map_err(|_| "bad EC key")?;
            (Algorithm::ES256, key)
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err("unsupported OKP curve");
            }
            // Exactly 32 bytes: the EdDSA verifier would otherwise slice out of bounds.
            if B64URL.decode(&p.x).map(|x| x.len()) != Ok(32) {
                return Err("invalid Ed25519 key");
            }
            let key = DecodingKey::from_ed_components(&p.x).map_err(|_| "bad Ed25519 key")?;
            (Algorithm::EdDSA, key)
        }
        AlgorithmParameters::RSA(p) => {
            let n = B64URL.decode(&p.n).map_err(|_| "bad RSA modulus")?;
            let e = B64URL.decode(&p.e).map_err(|_| "bad RSA exponent")?;
            let n_len = n.iter().skip_while(|b| **b == 0).count();
            if n_len < MIN_RSA_MODULUS_LEN {
                return Err("RSA modulus shorter than 2048 bits");
            }
            if n_len > MAX_RSA_MODULUS_LEN {
                return Err("RSA modulus longer than 4096 bits");
            }
            let e_digits: Vec<u8> = e.iter().copied().skip_while(|b| *b == 0).collect();
            if e_digits.is_empty()
                || e_digits.len() > 8
                || e_digits.last().is_some_and(|b| b % 2 == 0)
            {
                return Err("bad RSA exponent");
            }
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are never accepted"),
        _ => return Err("unsupported key type"),
    };
    match jwk.common.key_algorithm {
        None => Ok((alg, key)),
        Some(declared) if key_algorithm_matches(declared, alg) => Ok((alg, key)),
        Some(_) => Err("declared alg does not fit the key or is not supported"),
    }
}

fn key_algorithm_matches(declared: KeyAlgorithm, alg: Algorithm) -> bool {
    matches!(
        (declared, alg),
        (KeyAlgorithm::ES256, Algorithm::ES256)
            | (KeyAlgorithm::EdDSA, Algorithm::EdDSA)
            | (KeyAlgorithm::RS256, Algorithm::RS256)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        let ok = CompanionAuthConfig::new("https://idp", "tether");
        assert!(ok.validate().is_ok());
        let mut hs = ok.clone();
        hs.algorithms = vec![Algorithm::ES256, Algorithm::HS256];
        assert_eq!(
            CompanionVerifier::new(hs, JwkSet::default())
                .unwrap_err()
                .code(),
            "invalid_config"
        );
        let mut empty = ok.clone();
        empty.algorithms.clear();
        assert!(empty.validate().is_err());
        let mut leeway = ok.clone();
        leeway.leeway_secs = MAX_LEEWAY_SECS + 1;
        assert!(leeway.validate().is_err());
        let mut iss = ok;
        iss.issuer.clear();
        assert!(iss.validate().is_err());
    }

    #[test]
    fn algorithm_names_are_exact() {
        for bad in [
            "none", "None", "NONE", "HS256", "HS384", "HS512", "PS256", "ES384", "es256", "",
        ] {
            assert_eq!(
                supported_algorithm(bad),
                Err(AuthError::UnsupportedAlgorithm),
                "{bad}"
            );
        }
        assert_eq!(supported_algorithm("EdDSA"), Ok(Algorithm::EdDSA));
    }
}
