//! Delivery envelopes: what a push carries, and the checks a phone runs before it shows anything.
//!
//! When a device asks for a sign-in or a registration, the bridge signs a compact *envelope* and
//! pushes it to the account's phones (APNs/FCM), and also returns it in `Delivery.envelope` for
//! the pull fallback. It carries no secret — the `FIDO:/` URL comes only from `claimDelivery` —
//! but it is what the user is asked to approve, so nothing of it is shown before it verified.
//!
//! # Format
//!
//! A compact JWS (RFC 7515): `BASE64URL(header) . BASE64URL(claims) . BASE64URL(signature)`,
//! base64url without padding, at most [`MAX_ENVELOPE_LEN`] bytes.
//!
//! * Header: `{"alg":"ES256","typ":"JWT","kid":"<key id>"}`. `alg` must be exactly `ES256`
//!   (never `none`, never an HMAC: the algorithm is fixed here, not chosen by the token); `typ`,
//!   when present, must be `JWT`; `crit` is refused.
//! * Signature: ECDSA P-256 with SHA-256 over the first two parts, as the 64-byte `r || s`
//!   (RFC 7518 §3.4), checked with the bridge key named by `kid` from the bridge's
//!   `/.well-known/jwks.json` ([`crate::jwks`]).
//! * Claims (JSON member names as written): `iss` (the bridge's public URL), `aud` (the companion
//!   audience, `tether-companion` by default), `sub` (the account id), `delivery_id`, `device_id`,
//!   `device_name`, `device_model`, `rp_id`, `request_type` (`"ga"` sign-in, `"mc"`
//!   registration), `number_code` (the digits both screens show), `iat`, `exp` (Unix seconds;
//!   `exp` is the delivery's deadline, 300 s after it was created), and optionally `origin` and
//!   `user_name`.
//!
//! # Checks, in order
//!
//! [`ParsedEnvelope::parse`] (no key needed): length, three canonical base64url parts, a JSON
//! object header without duplicate members, `alg`, `typ`, `kid`. Then the caller looks the `kid`
//! up ([`crate::jwks::JwksCache::key`], or [`verify_with`] which does both) and
//! [`ParsedEnvelope::verify`]: signature; then, only on the verified payload, `iss`, `aud`,
//! expiry (`now < exp + leeway`), `iat` (not after `now + leeway`, before `exp`, and `exp - iat`
//! at most [`MAX_LIFETIME_SECS`]), the account (`sub` is the signed-in account), and the shape of
//! every displayed value (no control or bidirectional-override characters, a domain-shaped
//! `rp_id`, a digit-only `number_code`). Each check has its own [`EnvelopeError`] variant.
//!
//! This module does no I/O and never reads the clock: `now` is an argument. [`Clock`] is the
//! seam the client uses to supply it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::jwks::{JwksCache, JwksError};

/// Longest envelope accepted, in bytes (the bridge's own limit).
pub const MAX_ENVELOPE_LEN: usize = 8 * 1024;
/// Clock difference tolerated between the bridge and the phone, in seconds.
pub const DEFAULT_LEEWAY_SECS: i64 = 30;
/// Longest `exp - iat` accepted. The bridge issues 300-second envelopes; anything much longer
/// did not come from a correctly working bridge.
pub const MAX_LIFETIME_SECS: i64 = 900;
/// The envelope audience a bridge uses unless its operator changed `envelope_audience`.
pub const DEFAULT_AUDIENCE: &str = "tether-companion";
/// Longest push payload [`envelope_from_push`] reads (APNs and FCM allow 4 KiB).
pub const MAX_PUSH_PAYLOAD_LEN: usize = 64 * 1024;

const MAX_ID_LEN: usize = 128;
const MAX_LABEL_LEN: usize = 256;
const MAX_ORIGIN_LEN: usize = 512;
const MAX_NUMBER_CODE_LEN: usize = 8;

/// Why an envelope was refused. Messages never contain envelope contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Longer than [`MAX_ENVELOPE_LEN`].
    #[error("envelope is longer than {MAX_ENVELOPE_LEN} bytes")]
    TooLong,
    /// Not a compact JWS: wrong number of parts, bad base64url, a header or payload that is not
    /// a JSON object with the required members, or a `crit` header.
    #[error("envelope is malformed")]
    Malformed,
    /// `alg` is not exactly `ES256`.
    #[error("envelope algorithm is not ES256")]
    UnsupportedAlgorithm,
    /// `typ` is present and not `JWT`.
    #[error("envelope type is not JWT")]
    WrongType,
    /// The header has no usable `kid`.
    #[error("envelope has no key id")]
    MissingKeyId,
    /// The bridge's key set has no ES256 P-256 key with this `kid` (after one refetch).
    #[error("envelope names a key the bridge does not publish")]
    UnknownKey,
    /// The bridge's key set could not be obtained.
    #[error("bridge key set unavailable: {0}")]
    KeySet(JwksError),
    /// The signature does not verify with the named key.
    #[error("envelope signature is invalid")]
    BadSignature,
    /// `iss` is not the configured bridge.
    #[error("envelope issuer is not the configured bridge")]
    WrongIssuer,
    /// `aud` is not the configured envelope audience.
    #[error("envelope audience is not the configured audience")]
    WrongAudience,
    /// `exp` is past (beyond the leeway).
    #[error("envelope has expired")]
    Expired,
    /// `iat` is in the future (beyond the leeway).
    #[error("envelope is not yet valid")]
    NotYetValid,
    /// `exp` is not after `iat`, or the lifetime exceeds [`MAX_LIFETIME_SECS`].
    #[error("envelope lifetime is invalid")]
    InvalidLifetime,
    /// `sub` is not the signed-in account.
    #[error("envelope is for another account")]
    WrongAccount,
    /// A claim has an unusable value (named).
    #[error("envelope claim `{0}` is invalid")]
    InvalidClaim(&'static str),
}

impl EnvelopeError {
    /// A stable snake_case reason for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong => "too_long",
            Self::Malformed => "malformed",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::WrongType => "wrong_type",
            Self::MissingKeyId => "missing_kid",
            Self::UnknownKey => "unknown_key",
            Self::KeySet(_) => "key_set_unavailable",
            Self::BadSignature => "bad_signature",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::InvalidLifetime => "invalid_lifetime",
            Self::WrongAccount => "wrong_account",
            Self::InvalidClaim(_) => "invalid_claim",
        }
    }
}

/// Sign-in or registration: what the device asks the phone to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Sign in with an existing passkey (WebAuthn get assertion, `"ga"`).
    SignIn,
    /// Create a passkey (WebAuthn make credential, `"mc"`).
    Registration,
}

impl RequestKind {
    /// The envelope's `request_type` (and the `FIDO:/` URL's hint): `"ga"` or `"mc"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SignIn => "ga",
            Self::Registration => "mc",
        }
    }

    /// Reads `"ga"` or `"mc"`; anything else is `None`.
    pub fn from_request_type(value: &str) -> Option<Self> {
        match value {
            "ga" => Some(Self::SignIn),
            "mc" => Some(Self::Registration),
            _ => None,
        }
    }

    /// The same request type as the hybrid core names it.
    pub const fn to_hybrid(self) -> hybrid::url::RequestType {
        match self {
            Self::SignIn => hybrid::url::RequestType::GetAssertion,
            Self::Registration => hybrid::url::RequestType::MakeCredential,
        }
    }

    /// The kind of a hybrid request type.
    pub const fn from_hybrid(request_type: hybrid::url::RequestType) -> Self {
        match request_type {
            hybrid::url::RequestType::GetAssertion => Self::SignIn,
            hybrid::url::RequestType::MakeCredential => Self::Registration,
        }
    }
}

/// What a verified envelope must match.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Expectations {
    /// The bridge's public URL, exactly as the bridge is configured (`public_url`).
    pub issuer: String,
    /// The envelope audience (the bridge's `envelope_audience`).
    pub audience: String,
    /// The signed-in account's id (`Query.account.id`).
    pub account_id: String,
    /// Clock difference tolerated, seconds; negative counts as zero.
    pub leeway_secs: i64,
}

impl Expectations {
    /// Expectations with the default leeway ([`DEFAULT_LEEWAY_SECS`]).
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        account_id: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            account_id: account_id.into(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
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

#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    aud: String,
    sub: String,
    delivery_id: String,
    device_id: String,
    device_name: String,
    device_model: String,
    rp_id: String,
    request_type: String,
    number_code: String,
    iat: i64,
    exp: i64,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
}

/// An envelope whose header was read and checked, before its signature is. Borrowed from the
/// token.
#[derive(Debug, Clone)]
pub struct ParsedEnvelope<'a> {
    kid: String,
    signing_input: &'a str,
    payload_b64: &'a str,
    signature: Signature,
}

fn b64(part: &str) -> Result<Vec<u8>, EnvelopeError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| EnvelopeError::Malformed)
}

/// Deserializes a JSON object (not an array: serde's derive would accept one) from bytes.
/// Duplicate members are errors (serde's derive refuses them for named fields).
fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, EnvelopeError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(EnvelopeError::Malformed);
    }
    serde_json::from_slice(bytes).map_err(|_| EnvelopeError::Malformed)
}

fn is_safe_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl<'a> ParsedEnvelope<'a> {
    /// Splits `token` and checks its header: length, structure, `alg` ES256, `typ`, `kid`.
    /// Nothing is trusted yet.
    pub fn parse(token: &'a str) -> Result<Self, EnvelopeError> {
        if token.len() > MAX_ENVELOPE_LEN {
            return Err(EnvelopeError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(EnvelopeError::Malformed);
        };
        if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
            return Err(EnvelopeError::Malformed);
        }
        let header: RawHeader = json_object(&b64(header_b64)?)?;
        if header.crit.is_some() {
            return Err(EnvelopeError::Malformed);
        }
        if header.alg != "ES256" {
            return Err(EnvelopeError::UnsupportedAlgorithm);
        }
        if header.typ.as_deref().is_some_and(|t| t != "JWT") {
            return Err(EnvelopeError::WrongType);
        }
        let kid = header
            .kid
            .filter(|k| is_safe_id(k))
            .ok_or(EnvelopeError::MissingKeyId)?;
        let signature_bytes = b64(signature_b64)?;
        let signature =
            Signature::from_slice(&signature_bytes).map_err(|_| EnvelopeError::BadSignature)?;
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Self {
            kid,
            signing_input,
            payload_b64,
            signature,
        })
    }

    /// The key id to look up in the bridge's key set.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Checks the signature with `key` (the bridge key named by [`Self::kid`]), then every
    /// claim against `expect` at `now_unix` (seconds).
    pub fn verify(
        &self,
        key: &VerifyingKey,
        expect: &Expectations,
        now_unix: i64,
    ) -> Result<VerifiedEnvelope, EnvelopeError> {
        key.verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| EnvelopeError::BadSignature)?;
        let claims: RawClaims = json_object(&b64(self.payload_b64)?)?;
        if claims.iss != expect.issuer {
            return Err(EnvelopeError::WrongIssuer);
        }
        if claims.aud != expect.audience {
            return Err(EnvelopeError::WrongAudience);
        }
        let leeway = expect.leeway_secs.max(0);
        if now_unix >= claims.exp.saturating_add(leeway) {
            return Err(EnvelopeError::Expired);
        }
        if claims.iat > now_unix.saturating_add(leeway) {
            return Err(EnvelopeError::NotYetValid);
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if lifetime <= 0 || lifetime > MAX_LIFETIME_SECS {
            return Err(EnvelopeError::InvalidLifetime);
        }
        if claims.sub != expect.account_id {
            return Err(EnvelopeError::WrongAccount);
        }
        let kind = RequestKind::from_request_type(&claims.request_type)
            .ok_or(EnvelopeError::InvalidClaim("request_type"))?;
        check(is_safe_id(&claims.delivery_id), "delivery_id")?;
        check(is_safe_id(&claims.device_id), "device_id")?;
        check(is_label(&claims.device_name, MAX_LABEL_LEN), "device_name")?;
        check(
            is_label(&claims.device_model, MAX_LABEL_LEN),
            "device_model",
        )?;
        check(is_rp_id(&claims.rp_id), "rp_id")?;
        check(is_number_code(&claims.number_code), "number_code")?;
        if let Some(origin) = &claims.origin {
            check(is_label(origin, MAX_ORIGIN_LEN), "origin")?;
        }
        if let Some(user) = &claims.user_name {
            check(is_label(user, MAX_LABEL_LEN), "user_name")?;
        }
        Ok(VerifiedEnvelope {
            kid: self.kid.clone(),
            account_id: claims.sub,
            delivery_id: claims.delivery_id,
            device_id: claims.device_id,
            device_name: claims.device_name,
            device_model: claims.device_model,
            rp_id: claims.rp_id,
            kind,
            number_code: claims.number_code,
            origin: claims.origin,
            user_name: claims.user_name,
            issued_at: claims.iat,
            expires_at: claims.exp,
        })
    }
}

fn check(ok: bool, claim: &'static str) -> Result<(), EnvelopeError> {
    if ok {
        Ok(())
    } else {
        Err(EnvelopeError::InvalidClaim(claim))
    }
}

/// Characters that would let a displayed value rearrange or hide the prompt around it.
fn is_display_hazard(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

fn is_label(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.len() <= max && !s.chars().any(is_display_hazard)
}

fn is_rp_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_number_code(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NUMBER_CODE_LEN && s.bytes().all(|b| b.is_ascii_digit())
}

/// Verifies `token` with the key its `kid` names in `keys` (fetching or refetching the key set
/// as [`JwksCache::key`] allows) at `now_unix`.
pub async fn verify_with(
    keys: &JwksCache,
    token: &str,
    expect: &Expectations,
    now_unix: i64,
) -> Result<VerifiedEnvelope, EnvelopeError> {
    let parsed = ParsedEnvelope::parse(token)?;
    let key = keys.key(parsed.kid()).await.map_err(|e| match e {
        JwksError::UnknownKey => EnvelopeError::UnknownKey,
        other => EnvelopeError::KeySet(other),
    })?;
    parsed.verify(&key, expect, now_unix)
}

/// A verified envelope: the context of one delivery, safe to show to the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedEnvelope {
    kid: String,
    account_id: String,
    delivery_id: String,
    device_id: String,
    device_name: String,
    device_model: String,
    rp_id: String,
    kind: RequestKind,
    number_code: String,
    origin: Option<String>,
    user_name: Option<String>,
    issued_at: i64,
    expires_at: i64,
}

impl VerifiedEnvelope {
    /// The delivery to claim or deny.
    pub fn delivery_id(&self) -> &str {
        &self.delivery_id
    }

    /// The account it is for (the signed-in account).
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The requesting device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The requesting device's name, e.g. `Living room`.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// The requesting device's model, e.g. `Quest 3`.
    pub fn device_model(&self) -> &str {
        &self.device_model
    }

    /// The relying party id, e.g. `example.com`.
    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// Sign-in or registration.
    pub fn kind(&self) -> RequestKind {
        self.kind
    }

    /// The number the device shows; the user checks that both screens agree.
    pub fn number_code(&self) -> &str {
        &self.number_code
    }

    /// The origin the device said the user signs in to, when the envelope carries it.
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The relying party's account name hint, when the envelope carries it.
    pub fn user_name(&self) -> Option<&str> {
        self.user_name.as_deref()
    }

    /// Issued at, Unix seconds.
    pub fn issued_at(&self) -> i64 {
        self.issued_at
    }

    /// The delivery's deadline, Unix seconds: the phone must not act after it.
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    /// Whole seconds left before [`Self::expires_at`] at `now_unix` (zero once past).
    pub fn seconds_left(&self, now_unix: i64) -> u64 {
        u64::try_from(self.expires_at.saturating_sub(now_unix)).unwrap_or(0)
    }

    /// The key that signed it.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The question to ask the user, e.g. `Sign in to example.com on Quest 3 'Living room'?`
    /// or `Create a passkey for example.com on Quest 3 'Living room'?`. Show
    /// [`Self::number_code`] next to it.
    pub fn prompt(&self) -> String {
        let on = format!("{} '{}'", self.device_model, self.device_name);
        match self.kind {
            RequestKind::SignIn => format!("Sign in to {} on {on}?", self.rp_id),
            RequestKind::Registration => format!("Create a passkey for {} on {on}?", self.rp_id),
        }
    }
}

/// Why a push payload carried no envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushPayloadError {
    /// Larger than [`MAX_PUSH_PAYLOAD_LEN`].
    #[error("push payload is larger than {MAX_PUSH_PAYLOAD_LEN} bytes")]
    TooLarge,
    /// Not a JSON object.
    #[error("push payload is not a JSON object")]
    NotJson,
    /// No string `envelope` at the top level, under `data`, or under `message.data`.
    #[error("push payload has no envelope")]
    NoEnvelope,
}

/// The envelope a push carries. Accepted shapes (the bridge's APNs and FCM senders put the
/// compact envelope in a string member `envelope`):
///
/// * APNs: `{"aps": {...}, "envelope": "..."}` (the notification's `userInfo`), and the FCM
///   data map as Android hands it to the app (`{"envelope": "..."}`);
/// * FCM message JSON: `{"data": {"envelope": "..."}, ...}`;
/// * FCM HTTP v1 request body: `{"message": {"data": {"envelope": "..."}, ...}}`.
pub fn envelope_from_push(payload: &str) -> Result<String, PushPayloadError> {
    if payload.len() > MAX_PUSH_PAYLOAD_LEN {
        return Err(PushPayloadError::TooLarge);
    }
    let value: serde_json::Value =
        serde_json::from_str(payload).map_err(|_| PushPayloadError::NotJson)?;
    if !value.is_object() {
        return Err(PushPayloadError::NotJson);
    }
    [
        &value["envelope"],
        &value["data"]["envelope"],
        &value["message"]["data"]["envelope"],
    ]
    .into_iter()
    .find_map(|v| v.as_str())
    .map(str::to_owned)
    .ok_or(PushPayloadError::NoEnvelope)
}

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

/// A source of wall-clock time. The client reads "now" only through this, so tests and the
/// simulated phone can run on a clock they move themselves.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Seconds since the Unix epoch.
    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `ms` (Unix milliseconds).
    pub fn new(ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock (Unix milliseconds).
    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use serde_json::{Value, json};

    use super::*;

    const NOW: i64 = 1_795_305_600;

    fn key() -> SigningKey {
        // A fixed scalar: tests need no randomness.
        SigningKey::from_slice(&[7u8; 32]).unwrap()
    }

    fn claims() -> Value {
        json!({
            "iss": "https://bridge.example.com", "aud": "tether-companion", "sub": "acc_1",
            "delivery_id": "dlv_1", "device_id": "dev_1", "device_name": "Living room",
            "device_model": "Quest 3", "rp_id": "example.com", "request_type": "ga",
            "number_code": "42", "iat": NOW, "exp": NOW + 300
        })
    }

    fn expect() -> Expectations {
        Expectations::new("https://bridge.example.com", "tether-companion", "acc_1")
    }

    fn sign_raw(header: &[u8], payload: &[u8]) -> String {
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let sig: Signature = key().sign(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        token
    }

    fn sign(header: &Value, claims: &Value) -> String {
        sign_raw(
            &serde_json::to_vec(header).unwrap(),
            &serde_json::to_vec(claims).unwrap(),
        )
    }

    fn header() -> Value {
        json!({"alg": "ES256", "typ": "JWT", "kid": "k1"})
    }

    fn run(token: &str) -> Result<VerifiedEnvelope, EnvelopeError> {
        run_at(token, NOW)
    }

    fn run_at(token: &str, now: i64) -> Result<VerifiedEnvelope, EnvelopeError> {
        let parsed = ParsedEnvelope::parse(token)?;
        assert_eq!(parsed.kid(), "k1");
        parsed.verify(key().verifying_key(), &expect(), now)
    }

    fn with(claim: &str, value: Value) -> String {
        let mut c = claims();
        c[claim] = value;
        sign(&header(), &c)
    }

    #[test]
    fn good_envelope_exposes_context_and_prompt() {
        let v = run(&sign(&header(), &claims())).unwrap();
        assert_eq!(v.delivery_id(), "dlv_1");
        assert_eq!(v.account_id(), "acc_1");
        assert_eq!(v.device_id(), "dev_1");
        assert_eq!(v.kind(), RequestKind::SignIn);
        assert_eq!(v.number_code(), "42");
        assert_eq!(v.origin(), None);
        assert_eq!(v.expires_at(), NOW + 300);
        assert_eq!(v.seconds_left(NOW + 100), 200);
        assert_eq!(v.seconds_left(NOW + 400), 0);
        assert_eq!(
            v.prompt(),
            "Sign in to example.com on Quest 3 'Living room'?"
        );

        let mut c = claims();
        c["request_type"] = json!("mc");
        c["origin"] = json!("https://example.com");
        c["user_name"] = json!("alice");
        let v = run(&sign(&header(), &c)).unwrap();
        assert_eq!(v.kind(), RequestKind::Registration);
        assert_eq!(v.origin(), Some("https://example.com"));
        assert_eq!(v.user_name(), Some("alice"));
        assert_eq!(
            v.prompt(),
            "Create a passkey for example.com on Quest 3 'Living room'?"
        );
        // No typ is fine.
        run(&sign(&json!({"alg": "ES256", "kid": "k1"}), &claims())).unwrap();
    }

    #[test]
    fn header_checks() {
        let c = claims();
        let cases = [
            (
                json!({"alg": "none", "kid": "k1"}),
                EnvelopeError::UnsupportedAlgorithm,
            ),
            (
                json!({"alg": "HS256", "kid": "k1"}),
                EnvelopeError::UnsupportedAlgorithm,
            ),
            (
                json!({"alg": "es256", "kid": "k1"}),
                EnvelopeError::UnsupportedAlgorithm,
            ),
            (
                json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}),
                EnvelopeError::WrongType,
            ),
            (json!({"alg": "ES256"}), EnvelopeError::MissingKeyId),
            (
                json!({"alg": "ES256", "kid": ""}),
                EnvelopeError::MissingKeyId,
            ),
            (
                json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}),
                EnvelopeError::Malformed,
            ),
            (json!({"alg": 1, "kid": "k1"}), EnvelopeError::Malformed),
            (json!(["ES256"]), EnvelopeError::Malformed),
        ];
        for (h, want) in cases {
            assert_eq!(
                ParsedEnvelope::parse(&sign(&h, &c)).unwrap_err(),
                want,
                "{h}"
            );
        }
        // Duplicate header member.
        let dup = sign_raw(
            br#"{"alg":"ES256","kid":"k1","alg":"ES256"}"#,
            &serde_json::to_vec(&c).unwrap(),
        );
        assert_eq!(
            ParsedEnvelope::parse(&dup).unwrap_err(),
            EnvelopeError::Malformed
        );
    }

    #[test]
    fn structure_checks() {
        let good = sign(&header(), &claims());
        let parts: Vec<&str> = good.split('.').collect();
        for bad in [
            String::new(),
            "a.b".to_owned(),
            format!("{good}.x"),
            format!("{}..{}", parts[0], parts[2]),
            format!("{}.{}.", parts[0], parts[1]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], parts[1], "AAAA"),
        ] {
            let err = ParsedEnvelope::parse(&bad).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::Malformed | EnvelopeError::BadSignature),
                "{bad}: {err:?}"
            );
        }
        let long = "a".repeat(MAX_ENVELOPE_LEN + 1);
        assert_eq!(
            ParsedEnvelope::parse(&long).unwrap_err(),
            EnvelopeError::TooLong
        );
        // Payload that is an array, after a good signature.
        let arr = sign_raw(&serde_json::to_vec(&header()).unwrap(), b"[1,2]");
        assert_eq!(run(&arr).unwrap_err(), EnvelopeError::Malformed);
        // A missing claim.
        let mut c = claims();
        c.as_object_mut().unwrap().remove("number_code");
        assert_eq!(
            run(&sign(&header(), &c)).unwrap_err(),
            EnvelopeError::Malformed
        );
    }

    #[test]
    fn signature_checks() {
        let good = sign(&header(), &claims());
        // Flip one payload character (still valid base64url).
        let (head, rest) = good.split_once('.').unwrap();
        let (payload, sig) = rest.split_once('.').unwrap();
        let mut p: Vec<u8> = payload.bytes().collect();
        p[5] = if p[5] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{head}.{}.{sig}", String::from_utf8(p).unwrap());
        assert_eq!(run(&tampered).unwrap_err(), EnvelopeError::BadSignature);
        // Another key.
        let other = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let parsed = ParsedEnvelope::parse(&good).unwrap();
        assert_eq!(
            parsed
                .verify(other.verifying_key(), &expect(), NOW)
                .unwrap_err(),
            EnvelopeError::BadSignature
        );
    }

    #[test]
    fn claim_checks() {
        assert_eq!(
            run(&with("iss", json!("https://evil.example"))).unwrap_err(),
            EnvelopeError::WrongIssuer
        );
        assert_eq!(
            run(&with("aud", json!("someone-else"))).unwrap_err(),
            EnvelopeError::WrongAudience
        );
        assert_eq!(
            run(&with("aud", json!(["tether-companion"]))).unwrap_err(),
            EnvelopeError::Malformed
        );
        assert_eq!(
            run(&with("sub", json!("acc_2"))).unwrap_err(),
            EnvelopeError::WrongAccount
        );
        let good = sign(&header(), &claims());
        // Expiry with a 30 s leeway.
        run_at(&good, NOW + 300 + 29).unwrap();
        assert_eq!(
            run_at(&good, NOW + 300 + 30).unwrap_err(),
            EnvelopeError::Expired
        );
        // Issued in the future.
        run_at(&good, NOW - 30).unwrap();
        assert_eq!(
            run_at(&good, NOW - 31).unwrap_err(),
            EnvelopeError::NotYetValid
        );
        // exp not after iat.
        assert_eq!(
            run(&with("exp", json!(NOW))).unwrap_err(),
            EnvelopeError::InvalidLifetime
        );
        let mut c = claims();
        c["iat"] = json!(NOW - 1000);
        c["exp"] = json!(NOW + 100);
        assert_eq!(
            run(&sign(&header(), &c)).unwrap_err(),
            EnvelopeError::InvalidLifetime
        );
        for (claim, value, name) in [
            ("request_type", json!("xx"), "request_type"),
            ("number_code", json!("4a"), "number_code"),
            ("number_code", json!(""), "number_code"),
            ("rp_id", json!("example.com/evil"), "rp_id"),
            ("device_name", json!("Living\u{202E}room"), "device_name"),
            ("device_model", json!("Quest\n3"), "device_model"),
            ("delivery_id", json!("dlv 1"), "delivery_id"),
            ("origin", json!("https://a\u{0007}"), "origin"),
        ] {
            assert_eq!(
                run(&with(claim, value)).unwrap_err(),
                EnvelopeError::InvalidClaim(name),
                "{claim}"
            );
        }
    }

    #[test]
    fn push_payload_shapes() {
        let apns = r#"{"aps":{"alert":{"title":"Sign in?"}},"envelope":"a.b.c"}"#;
        assert_eq!(envelope_from_push(apns).unwrap(), "a.b.c");
        let fcm = r#"{"data":{"envelope":"a.b.c","delivery_id":"dlv_1"}}"#;
        assert_eq!(envelope_from_push(fcm).unwrap(), "a.b.c");
        let v1 = r#"{"message":{"token":"t","data":{"envelope":"a.b.c"}}}"#;
        assert_eq!(envelope_from_push(v1).unwrap(), "a.b.c");
        assert_eq!(
            envelope_from_push(r#"{"envelope":1}"#).unwrap_err(),
            PushPayloadError::NoEnvelope
        );
        assert_eq!(
            envelope_from_push(r#"{"aps":{}}"#).unwrap_err(),
            PushPayloadError::NoEnvelope
        );
        assert_eq!(
            envelope_from_push("[1]").unwrap_err(),
            PushPayloadError::NotJson
        );
        assert_eq!(
            envelope_from_push("not json").unwrap_err(),
            PushPayloadError::NotJson
        );
        let huge = format!(r#"{{"envelope":"{}"}}"#, "a".repeat(MAX_PUSH_PAYLOAD_LEN));
        assert_eq!(
            envelope_from_push(&huge).unwrap_err(),
            PushPayloadError::TooLarge
        );
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        let shared = clock.clone();
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(shared.now_ms(), 2_500);
        assert_eq!(shared.now_secs(), 2);
        clock.set_ms(-1);
        assert_eq!(shared.now_secs(), -1);
    }
}
