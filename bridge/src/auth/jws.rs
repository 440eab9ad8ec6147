//! Compact JWS (RFC 7515) parsing, ES256 signing and registered-claim extraction.
//!
//! Shared by the companion and device verifiers and by the envelope signer. The parser is total:
//! any input yields a header or a typed error. It is deliberately strict:
//!
//! - exactly three base64url parts (no padding, canonical trailing bits), bounded total length;
//! - the header is a JSON object with a string `alg`; duplicate members are rejected;
//! - a `crit` header is rejected, because we implement no JWS extensions (RFC 7515 §4.1.11);
//! - `jku`, `jwk`, `x5u`, `x5c` are ignored: keys only ever come from our own key sets.
//!
//! The payload is decoded only after the caller has checked the signature.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// base64url without padding, as JOSE uses it.
pub(crate) const B64URL: base64::engine::GeneralPurpose = URL_SAFE_NO_PAD;

/// Failures of the JWS layer, mapped into `AuthError` / `SigningError` by the callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwsError {
    Malformed,
    BadSignature,
    Internal(&'static str),
}

/// A registered claim is present but has the wrong type or an unusable value. (Absence is an
/// `Ok(None)`, decided by the caller.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimError(pub(crate) &'static str);

/// The JOSE header members we read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    pub(crate) typ: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// A compact JWS split into its parts; borrowed from the token.
#[derive(Debug)]
pub(crate) struct Compact<'a> {
    pub(crate) header: Header,
    signing_input: &'a str,
    payload_b64: &'a str,
    signature_b64: &'a str,
}

/// Splits `token` and parses its header. Nothing is verified yet.
pub(crate) fn parse(token: &str, max_len: usize) -> Result<Compact<'_>, JwsError> {
    if token.is_empty() || token.len() > max_len {
        return Err(JwsError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::Malformed);
    };
    if header_b64.is_empty() || payload_b64.is_empty() {
        return Err(JwsError::Malformed);
    }
    let header_json = B64URL.decode(header_b64).map_err(|_| JwsError::Malformed)?;
    let raw: RawHeader = from_json_object(&header_json)?;
    if raw.crit.is_some() {
        return Err(JwsError::Malformed);
    }
    let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
    Ok(Compact {
        header: Header {
            alg: raw.alg,
            kid: raw.kid,
            typ: raw.typ,
        },
        signing_input,
        payload_b64,
        signature_b64,
    })
}

impl<'a> Compact<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`, the bytes the signature covers.
    pub(crate) fn signing_input(&self) -> &'a str {
        self.signing_input
    }

    /// The signature part, still base64url-encoded.
    pub(crate) fn signature_b64(&self) -> &'a str {
        self.signature_b64
    }

    /// The decoded signature bytes.
    pub(crate) fn signature(&self) -> Result<Vec<u8>, JwsError> {
        if self.signature_b64.is_empty() {
            return Err(JwsError::Malformed);
        }
        B64URL
            .decode(self.signature_b64)
            .map_err(|_| JwsError::Malformed)
    }

    /// The decoded payload bytes. Call only after the signature has been verified.
    pub(crate) fn payload(&self) -> Result<Vec<u8>, JwsError> {
        B64URL
            .decode(self.payload_b64)
            .map_err(|_| JwsError::Malformed)
    }

    /// Checks an ES256 signature (64-byte `r || s`, RFC 7518 §3.4) with a P-256 key.
    ///
    /// Verification runs on aws-lc-rs (already linked for TLS): every device request carries
    /// a fresh token, and its assembly P-256 is several times faster than the portable code.
    pub(crate) fn verify_es256(&self, key: &VerifyingKey) -> Result<(), JwsError> {
        let bytes = self.signature()?;
        if bytes.len() != 64 {
            return Err(JwsError::BadSignature);
        }
        let point = key.to_sec1_point(false);
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            point.as_bytes(),
        )
        .verify(self.signing_input.as_bytes(), &bytes)
        .map_err(|_| JwsError::BadSignature)
    }
}

#[derive(Serialize)]
struct OutHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// An ES256 signing key. Signs with aws-lc-rs when it accepts the key (it always should), and
/// with the portable implementation otherwise; both produce `r || s`.
pub(crate) struct Es256Signer {
    fast: Option<aws_lc_rs::signature::EcdsaKeyPair>,
    portable: SigningKey,
}

impl std::fmt::Debug for Es256Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Es256Signer([redacted])")
    }
}

impl Es256Signer {
    /// A signer for `key`.
    pub(crate) fn new(key: &SigningKey) -> Self {
        let private = zeroize::Zeroizing::new(key.to_bytes());
        let public = key.verifying_key().to_sec1_point(false);
        let fast = aws_lc_rs::signature::EcdsaKeyPair::from_private_key_and_public_key(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            private.as_slice(),
            public.as_bytes(),
        )
        .ok();
        Self {
            fast,
            portable: key.clone(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwsError> {
        if let Some(fast) = &self.fast {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let signature = fast
                .sign(&rng, message)
                .map_err(|_| JwsError::Internal("ECDSA signing failed"))?;
            return Ok(signature.as_ref().to_vec());
        }
        let signature: Signature = self
            .portable
            .try_sign(message)
            .map_err(|_| JwsError::Internal("ECDSA signing failed"))?;
        Ok(signature.to_bytes().to_vec())
    }
}

/// Serializes `claims` and signs them with ES256; header `{"alg":"ES256","typ":"JWT","kid":..}`.
pub(crate) fn sign_es256<C: Serialize>(
    kid: &str,
    claims: &C,
    key: &Es256Signer,
) -> Result<String, JwsError> {
    let header = serde_json::to_vec(&OutHeader {
        alg: "ES256",
        typ: "JWT",
        kid,
    })
    .map_err(|_| JwsError::Internal("header serialization failed"))?;
    let payload = serde_json::to_vec(claims)
        .map_err(|_| JwsError::Internal("claims serialization failed"))?;
    let mut token = String::with_capacity((header.len() + payload.len() + 64) * 4 / 3 + 4);
    B64URL.encode_string(&header, &mut token);
    token.push('.');
    B64URL.encode_string(&payload, &mut token);
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    B64URL.encode_string(signature, &mut token);
    Ok(token)
}

/// Deserializes a JSON *object* straight from bytes. Going through `serde_json::Value` first
/// would silently keep the last of duplicate members, and serde's derive would also accept a JSON
/// array in place of a struct; both are rejected here.
pub(crate) fn from_json_object<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, JwsError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(JwsError::Malformed);
    }
    serde_json::from_slice(bytes).map_err(|_| JwsError::Malformed)
}

/// The registered claims (RFC 7519 §4.1) we read, still as JSON values.
///
/// Deserializing into a struct (rather than a map) makes a duplicate registered claim an error
/// instead of "last one wins"; other members are ignored. A `null` claim counts as absent.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RegisteredClaims {
    #[serde(default)]
    iss: Option<Value>,
    #[serde(default)]
    sub: Option<Value>,
    #[serde(default)]
    aud: Option<Value>,
    #[serde(default)]
    exp: Option<Value>,
    #[serde(default)]
    nbf: Option<Value>,
    #[serde(default)]
    iat: Option<Value>,
    #[serde(default)]
    jti: Option<Value>,
}

/// Which way to round a fractional NumericDate: always towards the stricter outcome.
#[derive(Debug, Clone, Copy)]
enum Round {
    /// For `exp`: an earlier expiry.
    Down,
    /// For `nbf` / `iat`: a later start.
    Up,
}

impl RegisteredClaims {
    /// Parses a verified payload.
    pub(crate) fn from_payload(payload: &[u8]) -> Result<Self, JwsError> {
        from_json_object(payload)
    }

    pub(crate) fn iss(&self) -> Result<Option<&str>, ClaimError> {
        string(self.iss.as_ref(), "iss")
    }

    pub(crate) fn sub(&self) -> Result<Option<&str>, ClaimError> {
        string(self.sub.as_ref(), "sub")
    }

    pub(crate) fn jti(&self) -> Result<Option<&str>, ClaimError> {
        string(self.jti.as_ref(), "jti")
    }

    pub(crate) fn exp(&self) -> Result<Option<i64>, ClaimError> {
        numeric_date(self.exp.as_ref(), "exp", Round::Down)
    }

    pub(crate) fn nbf(&self) -> Result<Option<i64>, ClaimError> {
        numeric_date(self.nbf.as_ref(), "nbf", Round::Up)
    }

    pub(crate) fn iat(&self) -> Result<Option<i64>, ClaimError> {
        numeric_date(self.iat.as_ref(), "iat", Round::Up)
    }

    /// Whether `aud` (a string or an array of strings, RFC 7519 §4.1.3) contains `audience`.
    /// `Ok(None)` when the claim is absent.
    pub(crate) fn aud_contains(&self, audience: &str) -> Result<Option<bool>, ClaimError> {
        match &self.aud {
            None => Ok(None),
            Some(Value::String(one)) => Ok(Some(one == audience)),
            Some(Value::Array(many)) => {
                let mut found = false;
                for item in many {
                    match item {
                        Value::String(s) => found |= s == audience,
                        _ => return Err(ClaimError("aud")),
                    }
                }
                Ok(Some(found))
            }
            Some(_) => Err(ClaimError("aud")),
        }
    }
}

fn string<'v>(value: Option<&'v Value>, name: &'static str) -> Result<Option<&'v str>, ClaimError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ClaimError(name)),
    }
}

/// Largest magnitude accepted for a NumericDate (about year 33658); keeps arithmetic far from
/// overflow and rejects nonsense.
const MAX_NUMERIC_DATE: i64 = 1 << 40;

fn numeric_date(
    value: Option<&Value>,
    name: &'static str,
    round: Round,
) -> Result<Option<i64>, ClaimError> {
    let Some(value) = value else { return Ok(None) };
    let Value::Number(n) = value else {
        return Err(ClaimError(name));
    };
    let seconds = if let Some(i) = n.as_i64() {
        i
    } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && f.abs() < 1e13) {
        match round {
            Round::Down => f.floor() as i64,
            Round::Up => f.ceil() as i64,
        }
    } else {
        return Err(ClaimError(name));
    };
    if !(-MAX_NUMERIC_DATE..=MAX_NUMERIC_DATE).contains(&seconds) {
        return Err(ClaimError(name));
    }
    Ok(Some(seconds))
}

/// True for 1..=`max` characters of `[A-Za-z0-9_-]` (used for key ids and `jti`).
pub(crate) fn is_token_safe_id(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::SecretKey;
    use p256::elliptic_curve::Generate as _;

    fn b64(s: &str) -> String {
        B64URL.encode(s)
    }

    #[test]
    fn parse_is_total_on_odd_inputs() {
        let cases = [
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            "a.b".into(),
            "a.b.c.d".into(),
            format!("{}..sig", b64(r#"{"alg":"ES256"}"#)),
            format!("{}.{}.sig", b64("[]"), b64("{}")),
            format!("{}.{}.sig", b64(r#"{"alg":1}"#), b64("{}")),
            format!(
                "{}.{}.sig",
                b64(r#"{"alg":"ES256","alg":"ES256"}"#),
                b64("{}")
            ),
            format!(
                "{}.{}.sig",
                b64(r#"{"alg":"ES256","crit":["b64"]}"#),
                b64("{}")
            ),
            format!("{}=.{}.sig", b64(r#"{"alg":"ES256"}"#), b64("{}")),
            "\u{0}.\u{0}.\u{0}".into(),
        ];
        for case in cases {
            assert_eq!(
                parse(&case, 4096).err(),
                Some(JwsError::Malformed),
                "{case:?}"
            );
        }
        let long = format!("{}.{}.sig", b64(r#"{"alg":"ES256"}"#), "A".repeat(5000));
        assert_eq!(parse(&long, 4096).err(), Some(JwsError::Malformed));
    }

    #[test]
    fn sign_then_verify_and_tamper() {
        let secret = SecretKey::generate();
        let key = SigningKey::from(&secret);
        let token =
            sign_es256("k1", &serde_json::json!({"a": 1}), &Es256Signer::new(&key)).unwrap();
        let parts = parse(&token, 4096).unwrap();
        assert_eq!(parts.header.alg, "ES256");
        assert_eq!(parts.header.kid.as_deref(), Some("k1"));
        assert_eq!(parts.header.typ.as_deref(), Some("JWT"));
        parts.verify_es256(key.verifying_key()).unwrap();

        let other = SigningKey::from(&SecretKey::generate());
        assert_eq!(
            parts.verify_es256(other.verifying_key()),
            Err(JwsError::BadSignature)
        );

        let (input, sig) = token.rsplit_once('.').unwrap();
        let forged = format!("{input}x.{sig}");
        let forged_parts = parse(&forged, 4096);
        // Either the payload no longer decodes or the signature fails: never accepted.
        if let Ok(p) = forged_parts {
            assert!(p.verify_es256(key.verifying_key()).is_err());
        }
    }

    #[test]
    fn duplicate_registered_claims_are_rejected() {
        let dup = br#"{"sub":"alice","sub":"mallory"}"#;
        assert!(RegisteredClaims::from_payload(dup).is_err());
        assert!(RegisteredClaims::from_payload(b"[1]").is_err());
        let ok = RegisteredClaims::from_payload(br#"{"sub":"a","x":1,"x":2}"#).unwrap();
        assert_eq!(ok.sub().unwrap(), Some("a"));
    }

    #[test]
    fn numeric_dates_round_strictly_and_reject_nonsense() {
        let c = RegisteredClaims::from_payload(br#"{"exp":10.7,"nbf":10.2,"iat":"1"}"#).unwrap();
        assert_eq!(c.exp().unwrap(), Some(10));
        assert_eq!(c.nbf().unwrap(), Some(11));
        assert_eq!(c.iat(), Err(ClaimError("iat")));
        let big = RegisteredClaims::from_payload(br#"{"exp":1e300}"#).unwrap();
        assert_eq!(big.exp(), Err(ClaimError("exp")));
        let huge = RegisteredClaims::from_payload(br#"{"exp":18446744073709551615}"#).unwrap();
        assert_eq!(huge.exp(), Err(ClaimError("exp")));
    }

    #[test]
    fn audience_forms() {
        let one = RegisteredClaims::from_payload(br#"{"aud":"x"}"#).unwrap();
        assert_eq!(one.aud_contains("x"), Ok(Some(true)));
        let many = RegisteredClaims::from_payload(br#"{"aud":["y","x"]}"#).unwrap();
        assert_eq!(many.aud_contains("x"), Ok(Some(true)));
        assert_eq!(many.aud_contains("z"), Ok(Some(false)));
        let bad = RegisteredClaims::from_payload(br#"{"aud":["x",1]}"#).unwrap();
        assert_eq!(bad.aud_contains("x"), Err(ClaimError("aud")));
        let none = RegisteredClaims::from_payload(b"{}").unwrap();
        assert_eq!(none.aud_contains("x"), Ok(None));
    }
}
