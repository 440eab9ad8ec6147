//! Apple Push Notification service: the HTTP/2 provider API with token-based authentication.
//!
//! * One `reqwest` client per sender, HTTP/2 only: every push to an endpoint shares one pooled,
//!   multiplexed connection (kept alive with HTTP/2 pings).
//! * The provider token is an ES256 JWT (`kid` = key id, `iss` = team id, `iat`) signed with the
//!   `.p8` key. It is cached and replaced after `token_refresh_secs` (40 minutes by default:
//!   Apple refuses tokens older than an hour and throttles refreshes more often than every 20
//!   minutes), or at once when Apple answers `ExpiredProviderToken`.
//! * Headers: `apns-topic` (the install's bundle id), `apns-push-type: alert`,
//!   `apns-priority: 10`, `apns-expiration` = the delivery's deadline (epoch seconds, so Apple
//!   never delivers it late), `apns-collapse-id` = the delivery id (a repeated push replaces
//!   the first on the phone), and a fresh `apns-id`.
//!
//! Answers map to outcomes: 200 → delivered; 410 `Unregistered`, 400 `BadDeviceToken` or
//! `DeviceTokenNotForTopic` → token dead; 429 and 5xx → retry (honouring `Retry-After`);
//! 403 `ExpiredProviderToken` → new token, retry; anything else → permanent, with Apple's reason.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{Provider, PushError, PushMessage, PushOutcome, PushSender, payload};
use crate::config::ApnsConfig;

/// Apple's production endpoint.
pub const PRODUCTION: &str = "https://api.push.apple.com";
/// Apple's sandbox endpoint (development builds of the app).
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";

/// Sends through APNs.
pub struct ApnsSender {
    client: reqwest::Client,
    endpoint: String,
    team_id: String,
    key_id: String,
    key: EncodingKey,
    refresh_ms: i64,
    token: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    jwt: String,
    issued_ms: i64,
}

impl std::fmt::Debug for ApnsSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsSender")
            .field("endpoint", &self.endpoint)
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ProviderClaims<'a> {
    iss: &'a str,
    iat: i64,
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: Option<String>,
}

impl ApnsSender {
    /// A sender from configuration (reads the key and CA files).
    pub fn from_config(config: &ApnsConfig, timeout: Duration) -> Result<Self, PushError> {
        let pem = super::read_file("push.apns.key_file", &config.key_file)?;
        let client = super::http_client(
            "push.apns.ca_file",
            config.ca_file.as_deref(),
            true,
            timeout,
        )?;
        Self::new(
            client,
            &config.endpoint,
            &config.team_id,
            &config.key_id,
            &pem,
            config.token_refresh_secs,
        )
    }

    /// A sender with an existing client. `p8_pem` is the PKCS#8 PEM of the P-256 key.
    pub fn new(
        client: reqwest::Client,
        endpoint: &str,
        team_id: &str,
        key_id: &str,
        p8_pem: &[u8],
        token_refresh_secs: u64,
    ) -> Result<Self, PushError> {
        let key = EncodingKey::from_ec_pem(p8_pem).map_err(|_| {
            PushError::Config("push.apns.key_file is not a PKCS#8 P-256 key (.p8)".into())
        })?;
        if team_id.is_empty() || key_id.is_empty() {
            return Err(PushError::Config(
                "push.apns.team_id and push.apns.key_id must be set".into(),
            ));
        }
        if !(60..=3300).contains(&token_refresh_secs) {
            return Err(PushError::Config(
                "push.apns.token_refresh_secs must be between 60 and 3300 (Apple refuses tokens older than an hour)".into(),
            ));
        }
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        if !endpoint.starts_with("https://") {
            return Err(PushError::Config("push.apns.endpoint must be https".into()));
        }
        Ok(Self {
            client,
            endpoint,
            team_id: team_id.to_owned(),
            key_id: key_id.to_owned(),
            key,
            refresh_ms: i64::try_from(token_refresh_secs).unwrap_or(2400) * 1000,
            token: Mutex::new(None),
        })
    }

    /// The provider token for `now_ms`, signing a new one when the cached one is due.
    fn provider_token(&self, now_ms: i64) -> Result<String, PushOutcome> {
        let mut cached = self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(t) = cached.as_ref()
            && now_ms - t.issued_ms < self.refresh_ms
            && now_ms >= t.issued_ms
        {
            return Ok(t.jwt.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        header.typ = None;
        let claims = ProviderClaims {
            iss: &self.team_id,
            iat: now_ms.div_euclid(1000),
        };
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key).map_err(|_| {
            PushOutcome::Permanent {
                reason: "provider token could not be signed".into(),
            }
        })?;
        *cached = Some(CachedToken {
            jwt: jwt.clone(),
            issued_ms: now_ms,
        });
        Ok(jwt)
    }

    fn forget_token(&self) {
        *self
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// APNs device tokens are hex strings (64 characters today; Apple says to expect longer).
fn valid_token(token: &str) -> bool {
    (64..=200).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit())
}

#[async_trait]
impl PushSender for ApnsSender {
    fn provider(&self) -> Provider {
        Provider::Apns
    }

    async fn send(&self, m: &PushMessage, now_ms: i64) -> PushOutcome {
        if !valid_token(&m.push_token) {
            // Never put an arbitrary string into the request path.
            return PushOutcome::TokenDead {
                reason: "BadDeviceToken".into(),
            };
        }
        let jwt = match self.provider_token(now_ms) {
            Ok(jwt) => jwt,
            Err(outcome) => return outcome,
        };
        let body = payload::apns_body(m);
        let Ok(body) = serde_json::to_vec(&body) else {
            return PushOutcome::Permanent {
                reason: "payload could not be encoded".into(),
            };
        };
        if body.len() > payload::MAX_PAYLOAD_BYTES {
            return PushOutcome::Permanent {
                reason: "PayloadTooLarge".into(),
            };
        }
        let response = self
            .client
            .post(format!("{}/3/device/{}", self.endpoint, m.push_token))
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", &m.app_id)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header(
                "apns-expiration",
                m.deadline_ms.div_euclid(1000).to_string(),
            )
            .header("apns-collapse-id", &m.delivery_id)
            .header("apns-id", uuid::Uuid::new_v4().to_string())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return super::transport_outcome(&e),
        };
        let status = response.status().as_u16();
        let retry_after_ms = super::retry_after_ms(response.headers());
        let apns_id = response
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == 200 {
            return PushOutcome::Delivered {
                provider_id: apns_id,
            };
        }
        let reason = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .and_then(|b| b.reason),
            Err(_) => None,
        }
        .unwrap_or_else(|| format!("HTTP {status}"));
        classify(status, reason, retry_after_ms, || self.forget_token())
    }
}

fn classify(
    status: u16,
    reason: String,
    retry_after_ms: Option<i64>,
    forget_token: impl FnOnce(),
) -> PushOutcome {
    match (status, reason.as_str()) {
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => {
            PushOutcome::TokenDead { reason }
        }
        (403, "ExpiredProviderToken") => {
            forget_token();
            PushOutcome::Retry {
                reason,
                retry_after_ms: None,
            }
        }
        (429, _) | (500..=599, _) => PushOutcome::Retry {
            reason,
            retry_after_ms,
        },
        _ => PushOutcome::Permanent { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        let c = |s, r: &str| classify(s, r.to_owned(), Some(2000), || {});
        assert_eq!(c(410, "Unregistered").label(), "token_dead");
        assert_eq!(c(400, "BadDeviceToken").label(), "token_dead");
        assert_eq!(c(400, "DeviceTokenNotForTopic").label(), "token_dead");
        assert_eq!(c(400, "BadCollapseId").label(), "permanent");
        assert_eq!(c(403, "InvalidProviderToken").label(), "permanent");
        assert_eq!(
            c(429, "TooManyRequests"),
            PushOutcome::Retry {
                reason: "TooManyRequests".into(),
                retry_after_ms: Some(2000)
            }
        );
        assert_eq!(c(500, "InternalServerError").label(), "retry");
        assert_eq!(c(503, "ServiceUnavailable").label(), "retry");
        let mut forgot = false;
        assert_eq!(
            classify(403, "ExpiredProviderToken".into(), None, || forgot = true).label(),
            "retry"
        );
        assert!(forgot);
    }

    #[test]
    fn tokens_must_be_hex() {
        assert!(valid_token(&"ab".repeat(32)));
        assert!(!valid_token(&"ab".repeat(31)));
        assert!(!valid_token(&format!("{}/../x", "a".repeat(64))));
    }
}
