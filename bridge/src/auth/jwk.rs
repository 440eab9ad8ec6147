//! JSON Web Keys: where key sets come from, and P-256 keys as JWKs.
//!
//! A [`JwkSet`] reaches a [`CompanionVerifier`](super::companion::CompanionVerifier) from a
//! [`JwksFetcher`]. Two sources are implemented here: [`StaticJwks`] (a set held in memory, e.g.
//! the dev issuer's) and [`FileJwks`] (a JSON file the operator maintains). Fetching the identity
//! provider's `jwks_uri` over HTTPS needs an HTTP client, which this crate does not depend on
//! yet; that implementation of [`JwksFetcher`] is wired by the service (it should bound the
//! response size, use TLS, honour a timeout and keep the previous set when a fetch fails —
//! [`CompanionVerifier::refresh`](super::companion::CompanionVerifier::refresh) already does the
//! last part).
//!
//! The P-256 helpers build the public JWKs the bridge publishes (dev issuer, envelope signing
//! keys) with an RFC 7638 thumbprint as key id, and read them back.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use base64::Engine as _;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use p256::PublicKey;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use sha2::{Digest as _, Sha256};

use super::AuthError;
use super::jws::B64URL;
use super::keyfile;

/// The future a [`JwksFetcher`] returns.
pub type JwksFuture<'a> = Pin<Box<dyn Future<Output = Result<JwkSet, AuthError>> + Send + 'a>>;

/// A source of the identity provider's current key set.
///
/// Implementations return [`AuthError::Jwks`] (or [`AuthError::KeyFile`]) when the set cannot be
/// obtained; callers keep using the previous set in that case.
pub trait JwksFetcher: Send + Sync + fmt::Debug {
    /// Obtains the current key set.
    fn fetch(&self) -> JwksFuture<'_>;
}

/// A fixed key set held in memory (tests, the dev issuer, or a set pinned in configuration).
#[derive(Debug, Clone, Default)]
pub struct StaticJwks(pub JwkSet);

impl JwksFetcher for StaticJwks {
    fn fetch(&self) -> JwksFuture<'_> {
        let set = self.0.clone();
        Box::pin(async move { Ok(set) })
    }
}

/// A key set read from a JSON file (`{"keys":[...]}`) on every fetch, so that an operator can
/// rotate the provider's keys by replacing the file.
#[derive(Debug, Clone)]
pub struct FileJwks {
    path: PathBuf,
}

impl FileJwks {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl JwksFetcher for FileJwks {
    fn fetch(&self) -> JwksFuture<'_> {
        let path = self.path.clone();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || load_jwks_file(&path)).await {
                Ok(result) => result,
                Err(_) => Err(AuthError::Internal("JWKS file reader task failed")),
            }
        })
    }
}

/// Reads and parses a JWKS JSON file (at most 1 MiB).
pub fn load_jwks_file(path: &Path) -> Result<JwkSet, AuthError> {
    let bytes = keyfile::read_limited(path, false)
        .map_err(|err| AuthError::KeyFile(format!("{}: {err}", path.display())))?;
    parse_jwks(&bytes).map_err(|_| {
        AuthError::KeyFile(format!(
            "{}: not a JWK set (expected {{\"keys\": [...]}})",
            path.display()
        ))
    })
}

/// Parses a JWKS document (`{"keys":[...]}`). Keys of unknown types are kept as such and later
/// ignored by the verifier; only a document that is not a key set at all is an error.
pub fn parse_jwks(bytes: &[u8]) -> Result<JwkSet, AuthError> {
    serde_json::from_slice(bytes).map_err(|_| AuthError::Jwks("not a JWK set".into()))
}

/// Uncompressed SEC1 encoding (`04 || x || y`) of a P-256 public key.
pub(crate) fn p256_uncompressed(key: &PublicKey) -> [u8; 65] {
    let point = key.to_sec1_point(false);
    let mut out = [0u8; 65];
    let bytes = point.as_bytes();
    if bytes.len() == out.len() {
        out.copy_from_slice(bytes);
    }
    out
}

fn p256_coordinates(key: &PublicKey) -> (String, String) {
    let sec1 = p256_uncompressed(key);
    (B64URL.encode(&sec1[1..33]), B64URL.encode(&sec1[33..65]))
}

/// The RFC 7638 JWK thumbprint (SHA-256, base64url) of a P-256 public key. The bridge uses it
/// as the `kid` of keys it generates, so a key always has the same id.
pub fn p256_thumbprint(key: &PublicKey) -> String {
    let (x, y) = p256_coordinates(key);
    // Required members in lexicographic order, no whitespace (RFC 7638 §3.2).
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    B64URL.encode(Sha256::digest(canonical.as_bytes()))
}

/// The public JWK of a P-256 key: `kty` EC, `crv` P-256, `alg` ES256, `use` sig, `kid`.
pub fn p256_jwk(key: &PublicKey, kid: &str) -> Jwk {
    let (x, y) = p256_coordinates(key);
    Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::ES256),
            key_id: Some(kid.to_owned()),
            ..CommonParameters::default()
        },
        algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x,
            y,
        }),
    }
}

/// The P-256 public key of a JWK usable for ES256 signatures: `kty` EC, `crv` P-256, `alg`
/// absent or ES256, `use` absent or sig, `key_ops` absent or containing `verify`, and `x`/`y`
/// 32 bytes each forming a valid curve point. `None` for anything else.
pub fn p256_from_jwk(jwk: &Jwk) -> Option<PublicKey> {
    if !usable_for_signatures(&jwk.common) {
        return None;
    }
    if !matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::ES256)) {
        return None;
    }
    let AlgorithmParameters::EllipticCurve(params) = &jwk.algorithm else {
        return None;
    };
    if params.curve != EllipticCurve::P256 {
        return None;
    }
    p256_from_coordinates(&params.x, &params.y)
}

pub(crate) fn p256_from_coordinates(x: &str, y: &str) -> Option<PublicKey> {
    let x = B64URL.decode(x).ok()?;
    let y = B64URL.decode(y).ok()?;
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let mut sec1 = [0u8; 65];
    sec1[0] = 0x04;
    sec1[1..33].copy_from_slice(&x);
    sec1[33..].copy_from_slice(&y);
    PublicKey::from_sec1_bytes(&sec1).ok()
}

/// `use` absent or `sig`, and `key_ops` absent or containing `verify` (RFC 7517 §4.2, §4.3).
pub(crate) fn usable_for_signatures(common: &CommonParameters) -> bool {
    use jsonwebtoken::jwk::KeyOperations;
    let use_ok = matches!(common.public_key_use, None | Some(PublicKeyUse::Signature));
    let ops_ok = common
        .key_operations
        .as_ref()
        .is_none_or(|ops| ops.iter().any(|op| matches!(op, KeyOperations::Verify)));
    use_ok && ops_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::SecretKey;
    use p256::elliptic_curve::Generate as _;

    #[test]
    fn p256_jwk_round_trip_and_thumbprint_is_stable() {
        let public = SecretKey::generate().public_key();
        let kid = p256_thumbprint(&public);
        assert_eq!(kid.len(), 43);
        assert_eq!(kid, p256_thumbprint(&public));
        let jwk = p256_jwk(&public, &kid);
        assert_eq!(p256_from_jwk(&jwk), Some(public));
        let json = serde_json::to_value(&jwk).unwrap();
        assert_eq!(json["kty"], "EC");
        assert_eq!(json["crv"], "P-256");
        assert_eq!(json["alg"], "ES256");
        assert_eq!(json["use"], "sig");
        assert!(json.get("d").is_none());

        let mut enc = jwk.clone();
        enc.common.public_key_use = Some(PublicKeyUse::Encryption);
        assert_eq!(p256_from_jwk(&enc), None);
        let mut es384 = jwk;
        es384.common.key_algorithm = Some(KeyAlgorithm::ES384);
        assert_eq!(p256_from_jwk(&es384), None);
    }

    #[test]
    fn thumbprint_matches_jsonwebtoken() {
        // An independent RFC 7638 implementation.
        let public = SecretKey::from_slice(&[7u8; 32]).unwrap().public_key();
        let theirs = p256_jwk(&public, "x")
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap();
        assert_eq!(p256_thumbprint(&public), theirs);
    }

    #[test]
    fn bad_coordinates_are_rejected() {
        assert!(p256_from_coordinates("AA", "AA").is_none());
        let zero = B64URL.encode([0u8; 32]);
        assert!(p256_from_coordinates(&zero, &zero).is_none());
        assert!(p256_from_coordinates("!!", &zero).is_none());
    }
}
