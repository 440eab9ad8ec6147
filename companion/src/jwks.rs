//! The bridge's envelope keys: fetched from `/.well-known/jwks.json` and cached.
//!
//! The bridge signs envelopes with one active P-256 key and keeps the keys it retired published
//! until every envelope they signed has expired. [`JwksCache`] keeps the last key set it fetched
//! and fetches again when
//!
//! * the set is older than its *max age* — the smaller of [`JwksPolicy::max_age`] and the
//!   response's `Cache-Control: max-age` (the bridge sends 300 s) — so a key the bridge stopped
//!   publishing stops being trusted; or
//! * an envelope names a `kid` the set does not have (the bridge rotated its key),
//!
//! but never more often than once per [`JwksPolicy::min_refetch_interval`]: a stream of
//! envelopes with made-up key ids costs at most one request per interval. Concurrent lookups wait
//! for one fetch instead of starting their own. A key set older than its max age is not used, even
//! when a refetch fails.
//!
//! Only keys usable for ES256 are kept: `kty` `EC`, `crv` `P-256`, `alg` `ES256`, a `kid`, `use`
//! absent or `sig`, `key_ops` absent or containing `verify`, and a valid curve point. Other keys
//! are skipped; two usable keys with the same `kid` make the whole document invalid.
//!
//! I/O: one HTTP GET per fetch through the client's `reqwest` client (TLS, extra CA and the
//! plaintext rule are the client's, see [`crate::client::BridgeConfig`]); time comes from the
//! injected [`Clock`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::VerifyingKey;
use serde::Deserialize;

use crate::envelope::Clock;

/// When the key set is fetched again.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JwksPolicy {
    /// Longest a fetched key set is used (a shorter `Cache-Control: max-age` wins). Default one
    /// hour.
    pub max_age: Duration,
    /// Least time between two fetches, however many unknown key ids arrive. Default 10 s.
    pub min_refetch_interval: Duration,
    /// Largest key set document accepted. Default 64 KiB.
    pub max_bytes: usize,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(3600),
            min_refetch_interval: Duration::from_secs(10),
            max_bytes: 64 * 1024,
        }
    }
}

/// Why no key could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The key set (as fresh as the policy allows) has no usable key with this `kid`.
    #[error("the bridge publishes no ES256 key with this key id")]
    UnknownKey,
    /// The request failed (network, TLS, timeout) or the bridge answered with an error status.
    #[error("fetching the bridge key set failed: {0}")]
    Fetch(String),
    /// The response is not a JWK set we can use.
    #[error("the bridge key set is invalid: {0}")]
    Invalid(&'static str),
    /// The key set is older than its max age, and the last fetch failed less than the minimum
    /// refetch interval ago.
    #[error("no fresh bridge key set: the last fetch failed recently")]
    Unavailable,
}

#[derive(Default)]
struct State {
    keys: Vec<(String, VerifyingKey)>,
    /// When the current keys stop being trusted (Unix ms); `None` before the first fetch.
    fresh_until_ms: Option<i64>,
    /// Last fetch attempt (Unix ms), successful or not.
    last_attempt_ms: Option<i64>,
}

/// The bridge's envelope keys, fetched on demand and cached. Share one per bridge.
pub struct JwksCache {
    url: reqwest::Url,
    http: reqwest::Client,
    policy: JwksPolicy,
    clock: Arc<dyn Clock>,
    state: tokio::sync::Mutex<State>,
    fetches: AtomicU64,
}

impl fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksCache")
            .field("url", &self.url.as_str())
            .field("policy", &self.policy)
            .field("fetches", &self.fetch_count())
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache of the key set at `url`, fetched with `http` (whose TLS settings apply).
    /// Nothing is fetched until a key is needed.
    pub fn new(
        url: reqwest::Url,
        http: reqwest::Client,
        policy: JwksPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            url,
            http,
            policy,
            clock,
            state: tokio::sync::Mutex::new(State::default()),
            fetches: AtomicU64::new(0),
        }
    }

    /// The key set's URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// How many fetches were attempted so far (for metrics and tests).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The key with `kid`: from the cache while it is fresh, otherwise after a fetch the policy
    /// allows (see the module docs).
    pub async fn key(&self, kid: &str) -> Result<VerifyingKey, JwksError> {
        let mut state = self.state.lock().await;
        let now = self.clock.now_ms();
        let fresh = state.fresh_until_ms.is_some_and(|until| now < until);
        if fresh && let Some(key) = find(&state.keys, kid) {
            return Ok(key);
        }
        let interval = duration_ms(self.policy.min_refetch_interval);
        let may_fetch = state
            .last_attempt_ms
            .is_none_or(|last| now.saturating_sub(last) >= interval);
        if !may_fetch {
            return Err(if fresh {
                JwksError::UnknownKey
            } else {
                JwksError::Unavailable
            });
        }
        self.fetch_into(&mut state, now).await?;
        find(&state.keys, kid).ok_or(JwksError::UnknownKey)
    }

    /// Fetches the key set now, whatever the policy says (e.g. when the app starts). Returns how
    /// many usable keys it has.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let mut state = self.state.lock().await;
        let now = self.clock.now_ms();
        self.fetch_into(&mut state, now).await?;
        Ok(state.keys.len())
    }

    /// The key ids cached now (fresh or not).
    pub async fn cached_kids(&self) -> Vec<String> {
        let state = self.state.lock().await;
        state.keys.iter().map(|(kid, _)| kid.clone()).collect()
    }

    async fn fetch_into(&self, state: &mut State, now: i64) -> Result<(), JwksError> {
        state.last_attempt_ms = Some(now);
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let (keys, header_max_age) = match self.fetch().await {
            Ok(fetched) => fetched,
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "bridge key set fetch failed");
                return Err(e);
            }
        };
        let mut max_age = duration_ms(self.policy.max_age);
        if let Some(secs) = header_max_age {
            max_age = max_age.min(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX));
        }
        tracing::debug!(url = %self.url, keys = keys.len(), max_age_ms = max_age, "fetched bridge key set");
        state.keys = keys;
        state.fresh_until_ms = Some(now.saturating_add(max_age));
        Ok(())
    }

    async fn fetch(&self) -> Result<(Vec<(String, VerifyingKey)>, Option<u64>), JwksError> {
        let mut response = self
            .http
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| JwksError::Fetch(crate::client::describe_reqwest_error(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(JwksError::Fetch(format!("HTTP {}", status.as_u16())));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(cache_control_max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| JwksError::Fetch(crate::client::describe_reqwest_error(&e)))?
        {
            if body.len().saturating_add(chunk.len()) > self.policy.max_bytes {
                return Err(JwksError::Invalid("document too large"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((parse_jwks(&body)?, max_age))
    }
}

fn find(keys: &[(String, VerifyingKey)], kid: &str) -> Option<VerifyingKey> {
    keys.iter().find(|(k, _)| k == kid).map(|(_, key)| *key)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `max-age` of a `Cache-Control` value; `no-store` / `no-cache` count as zero.
fn cache_control_max_age(value: &str) -> Option<u64> {
    let mut max_age = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            max_age = secs.trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct EcJwk {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

const MAX_KEYS: usize = 100;
const MAX_KID_LEN: usize = 128;

/// Parses a JWK set, keeping the keys usable for ES256 (see the module docs).
pub fn parse_jwks(bytes: &[u8]) -> Result<Vec<(String, VerifyingKey)>, JwksError> {
    let doc: Document =
        serde_json::from_slice(bytes).map_err(|_| JwksError::Invalid("not a JWK set"))?;
    if doc.keys.len() > MAX_KEYS {
        return Err(JwksError::Invalid("too many keys"));
    }
    let mut out: Vec<(String, VerifyingKey)> = Vec::new();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<EcJwk>(value) else {
            continue;
        };
        let Some((kid, key)) = usable(&jwk) else {
            continue;
        };
        if out.iter().any(|(k, _)| *k == kid) {
            return Err(JwksError::Invalid("two keys share a key id"));
        }
        out.push((kid, key));
    }
    Ok(out)
}

fn usable(jwk: &EcJwk) -> Option<(String, VerifyingKey)> {
    let shape_ok = jwk.kty == "EC"
        && jwk.crv.as_deref() == Some("P-256")
        && jwk.alg.as_deref() == Some("ES256")
        && jwk.use_.as_deref().is_none_or(|u| u == "sig")
        && jwk
            .key_ops
            .as_ref()
            .is_none_or(|ops| ops.iter().any(|op| op == "verify"));
    if !shape_ok {
        return None;
    }
    let kid = jwk
        .kid
        .as_ref()
        .filter(|k| !k.is_empty() && k.len() <= MAX_KID_LEN)?;
    let x = URL_SAFE_NO_PAD.decode(jwk.x.as_deref()?).ok()?;
    let y = URL_SAFE_NO_PAD.decode(jwk.y.as_deref()?).ok()?;
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let mut sec1 = [0u8; 65];
    sec1[0] = 0x04;
    sec1[1..33].copy_from_slice(&x);
    sec1[33..].copy_from_slice(&y);
    let key = VerifyingKey::from_sec1_bytes(&sec1).ok()?;
    Some((kid.clone(), key))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use p256::ecdsa::SigningKey;
    use serde_json::{Value, json};

    use super::*;

    fn jwk(kid: &str, seed: u8) -> Value {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        let point = key.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&bytes[1..33]), "y": URL_SAFE_NO_PAD.encode(&bytes[33..]),
        })
    }

    fn parse(v: &Value) -> Result<Vec<String>, JwksError> {
        parse_jwks(&serde_json::to_vec(v).unwrap())
            .map(|keys| keys.into_iter().map(|(k, _)| k).collect())
    }

    #[test]
    fn keeps_only_es256_p256_keys() {
        let mut no_alg = jwk("no-alg", 3);
        no_alg.as_object_mut().unwrap().remove("alg");
        let mut p384 = jwk("p384", 4);
        p384["crv"] = json!("P-384");
        let mut enc = jwk("enc", 5);
        enc["use"] = json!("enc");
        let mut ops = jwk("sign-only", 6);
        ops["key_ops"] = json!(["sign"]);
        let mut bad_point = jwk("bad-point", 7);
        bad_point["y"] = bad_point["x"].clone();
        let mut short = jwk("short", 8);
        short["x"] = json!("AAAA");
        let mut no_kid = jwk("x", 9);
        no_kid.as_object_mut().unwrap().remove("kid");
        let rsa = json!({"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": "AQAB", "e": "AQAB"});
        let mut with_ops = jwk("verify-ops", 10);
        with_ops["key_ops"] = json!(["verify"]);
        let doc = json!({"keys": [
            jwk("good", 2), no_alg, p384, enc, ops, bad_point, short, no_kid, rsa, with_ops, 17
        ]});
        assert_eq!(parse(&doc).unwrap(), vec!["good", "verify-ops"]);
    }

    #[test]
    fn rejects_bad_documents() {
        assert_eq!(
            parse(&json!({"keys": [jwk("a", 2), jwk("a", 3)]})).unwrap_err(),
            JwksError::Invalid("two keys share a key id")
        );
        assert!(parse(&json!({"nokeys": []})).is_err());
        assert!(parse(&json!([1])).is_err());
        let many: Vec<Value> = (0..=MAX_KEYS).map(|_| json!({"kty": "oct"})).collect();
        assert_eq!(
            parse(&json!({ "keys": many })).unwrap_err(),
            JwksError::Invalid("too many keys")
        );
        assert_eq!(parse(&json!({"keys": []})).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn reads_cache_control() {
        assert_eq!(cache_control_max_age("public, max-age=300"), Some(300));
        assert_eq!(cache_control_max_age("Max-Age=\"60\""), Some(60));
        assert_eq!(cache_control_max_age("no-store"), Some(0));
        assert_eq!(cache_control_max_age("public"), None);
        assert_eq!(cache_control_max_age("max-age=soon"), None);
    }
}
