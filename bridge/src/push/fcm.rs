//! Firebase Cloud Messaging HTTP v1 (`POST {endpoint}/v1/projects/{project}/messages:send`).
//!
//! Authentication is OAuth 2 with the project's service account: the bridge signs an RS256
//! assertion (`iss` = the account's `client_email`, `aud` = the key file's `token_uri`, scope
//! `firebase.messaging`) and exchanges it at `token_uri` for an access token, cached until five
//! minutes before it expires. The key file's `token_uri` is honoured, so tests point it at a
//! local token endpoint.
//!
//! Answers map to outcomes: 200 → delivered; 404 `UNREGISTERED`, or 400 `INVALID_ARGUMENT`
//! naming `message.token` → token dead; 429 `QUOTA_EXCEEDED`, 500 `INTERNAL`, 503 `UNAVAILABLE`
//! → retry (honouring `Retry-After`); 401 → new access token, retry; anything else
//! (`SENDER_ID_MISMATCH`, `THIRD_PARTY_AUTH_ERROR`, other invalid arguments) → permanent.
//! `SENDER_ID_MISMATCH` is deliberately not "token dead": a misconfigured project would
//! otherwise deactivate every install.

use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use super::{Provider, PushError, PushMessage, PushOutcome, PushSender, payload};
use crate::config::FcmConfig;

/// OAuth 2 scope for sending.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Renew an access token this long before it expires.
const RENEW_BEFORE_MS: i64 = 5 * 60 * 1000;

/// The parts of a service account key file the sender uses.
#[derive(Deserialize)]
struct ServiceAccount {
    project_id: String,
    private_key: String,
    private_key_id: Option<String>,
    client_email: String,
    token_uri: String,
}

/// Sends through FCM HTTP v1.
pub struct FcmSender {
    client: reqwest::Client,
    send_url: String,
    project_id: String,
    client_email: String,
    key_id: Option<String>,
    token_uri: String,
    key: EncodingKey,
    token: Mutex<Option<AccessToken>>,
}

struct AccessToken {
    token: String,
    expires_ms: i64,
}

impl std::fmt::Debug for FcmSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmSender")
            .field("send_url", &self.send_url)
            .field("client_email", &self.client_email)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: i64,
}

impl FcmSender {
    /// A sender from configuration (reads the service account and CA files).
    pub fn from_config(config: &FcmConfig, timeout: Duration) -> Result<Self, PushError> {
        let key_file = super::read_file(
            "push.fcm.service_account_file",
            &config.service_account_file,
        )?;
        let client = super::http_client(
            "push.fcm.ca_file",
            config.ca_file.as_deref(),
            false,
            timeout,
        )?;
        Self::new(client, &config.endpoint, &key_file)
    }

    /// A sender with an existing client and the service account key file's content.
    pub fn new(
        client: reqwest::Client,
        endpoint: &str,
        service_account_json: &[u8],
    ) -> Result<Self, PushError> {
        let account: ServiceAccount = serde_json::from_slice(service_account_json).map_err(|_| {
            PushError::Config(
                "push.fcm.service_account_file is not a service account key file (needs project_id, private_key, client_email, token_uri)".into(),
            )
        })?;
        let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes()).map_err(|_| {
            PushError::Config("push.fcm.service_account_file: private_key is not an RSA key".into())
        })?;
        let endpoint = endpoint.trim_end_matches('/');
        if !endpoint.starts_with("https://") || !account.token_uri.starts_with("https://") {
            return Err(PushError::Config(
                "push.fcm.endpoint and the key file's token_uri must be https".into(),
            ));
        }
        let project_ok = !account.project_id.is_empty()
            && account
                .project_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !project_ok {
            return Err(PushError::Config(
                "push.fcm.service_account_file: project_id is not a project id".into(),
            ));
        }
        Ok(Self {
            client,
            send_url: format!(
                "{endpoint}/v1/projects/{}/messages:send",
                account.project_id
            ),
            project_id: account.project_id,
            client_email: account.client_email,
            key_id: account.private_key_id,
            token_uri: account.token_uri,
            key,
            token: Mutex::new(None),
        })
    }

    /// The project messages go to.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// A valid access token, fetching a new one when the cached one is near expiry. One fetch
    /// at a time: concurrent sends wait for it.
    async fn access_token(&self, now_ms: i64) -> Result<String, PushOutcome> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref()
            && now_ms + RENEW_BEFORE_MS < t.expires_ms
        {
            return Ok(t.token.clone());
        }
        let iat = now_ms.div_euclid(1000);
        let mut header = Header::new(Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        let assertion = jsonwebtoken::encode(
            &header,
            &Assertion {
                iss: &self.client_email,
                scope: SCOPE,
                aud: &self.token_uri,
                iat,
                exp: iat + 3600,
            },
            &self.key,
        )
        .map_err(|_| PushOutcome::Permanent {
            reason: "OAuth assertion could not be signed".into(),
        })?;
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let response = self
            .client
            .post(&self.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| super::transport_outcome(&e))?;
        let status = response.status().as_u16();
        let retry_after_ms = super::retry_after_ms(response.headers());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| super::transport_outcome(&e))?;
        if status != 200 {
            let error = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}"));
            let reason = format!("OAuth token endpoint: {error}");
            return Err(if status == 429 || status >= 500 {
                PushOutcome::Retry {
                    reason,
                    retry_after_ms,
                }
            } else {
                PushOutcome::Permanent { reason }
            });
        }
        let token: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|_| PushOutcome::Retry {
                reason: "OAuth token endpoint: malformed answer".into(),
                retry_after_ms: None,
            })?;
        *cached = Some(AccessToken {
            token: token.access_token.clone(),
            expires_ms: now_ms + token.expires_in.clamp(0, 86_400) * 1000,
        });
        Ok(token.access_token)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }
}

#[async_trait]
impl PushSender for FcmSender {
    fn provider(&self) -> Provider {
        Provider::Fcm
    }

    async fn send(&self, m: &PushMessage, now_ms: i64) -> PushOutcome {
        let body = payload::fcm_body(m, now_ms);
        let Ok(body) = serde_json::to_vec(&body) else {
            return PushOutcome::Permanent {
                reason: "payload could not be encoded".into(),
            };
        };
        if body.len() > payload::MAX_PAYLOAD_BYTES {
            return PushOutcome::Permanent {
                reason: "payload too large".into(),
            };
        }
        let token = match self.access_token(now_ms).await {
            Ok(t) => t,
            Err(outcome) => return outcome,
        };
        let response = self
            .client
            .post(&self.send_url)
            .bearer_auth(token)
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
        let value = match response.bytes().await {
            Ok(b) => serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
            Err(e) => return super::transport_outcome(&e),
        };
        if status == 200 {
            return PushOutcome::Delivered {
                provider_id: value.get("name").and_then(Value::as_str).map(str::to_owned),
            };
        }
        let outcome = classify(status, &value, retry_after_ms);
        if status == 401 {
            self.forget_token().await;
        }
        outcome
    }
}

/// FCM's error code: `details[].errorCode` of the `FcmError` detail, else `error.status`.
fn error_code(value: &Value) -> String {
    let error = value.get("error");
    let details = error
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array);
    let fcm_code = details.and_then(|d| {
        d.iter()
            .filter(|x| {
                x.get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError"))
            })
            .find_map(|x| x.get("errorCode").and_then(Value::as_str))
    });
    fcm_code
        .or_else(|| error.and_then(|e| e.get("status")).and_then(Value::as_str))
        .unwrap_or("UNKNOWN")
        .to_owned()
}

/// Whether an `INVALID_ARGUMENT` answer names the registration token.
fn names_token(value: &Value) -> bool {
    let Some(details) = value
        .get("error")
        .and_then(|e| e.get("details"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    details
        .iter()
        .filter_map(|d| d.get("fieldViolations").and_then(Value::as_array))
        .flatten()
        .any(|v| v.get("field").and_then(Value::as_str) == Some("message.token"))
}

fn classify(status: u16, value: &Value, retry_after_ms: Option<i64>) -> PushOutcome {
    let code = error_code(value);
    match (status, code.as_str()) {
        (_, "UNREGISTERED") => PushOutcome::TokenDead { reason: code },
        (400, "INVALID_ARGUMENT") if names_token(value) => PushOutcome::TokenDead {
            reason: "INVALID_ARGUMENT (message.token)".into(),
        },
        (401, _) => PushOutcome::Retry {
            reason: code,
            retry_after_ms: None,
        },
        (429 | 500..=599, _) | (_, "UNAVAILABLE" | "INTERNAL" | "QUOTA_EXCEEDED") => {
            PushOutcome::Retry {
                reason: code,
                retry_after_ms,
            }
        }
        _ => PushOutcome::Permanent { reason: code },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn error(code: u16, status: &str, fcm: Option<&str>) -> Value {
        let mut details = vec![];
        if let Some(f) = fcm {
            details.push(json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": f}));
        }
        json!({"error": {"code": code, "message": "m", "status": status, "details": details}})
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            classify(404, &error(404, "NOT_FOUND", Some("UNREGISTERED")), None).label(),
            "token_dead"
        );
        let token_field = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "details": [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "message.token", "description": "bad"}]},
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT"}]}});
        assert_eq!(classify(400, &token_field, None).label(), "token_dead");
        assert_eq!(
            classify(
                400,
                &error(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT")),
                None
            ),
            PushOutcome::Permanent {
                reason: "INVALID_ARGUMENT".into()
            }
        );
        assert_eq!(
            classify(
                429,
                &error(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")),
                Some(7000)
            ),
            PushOutcome::Retry {
                reason: "QUOTA_EXCEEDED".into(),
                retry_after_ms: Some(7000)
            }
        );
        assert_eq!(
            classify(500, &error(500, "INTERNAL", Some("INTERNAL")), None).label(),
            "retry"
        );
        assert_eq!(
            classify(503, &error(503, "UNAVAILABLE", Some("UNAVAILABLE")), None).label(),
            "retry"
        );
        assert_eq!(
            classify(
                403,
                &error(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH")),
                None
            ),
            PushOutcome::Permanent {
                reason: "SENDER_ID_MISMATCH".into()
            }
        );
        assert_eq!(
            classify(401, &error(401, "UNAUTHENTICATED", None), None).label(),
            "retry"
        );
        assert_eq!(classify(502, &Value::Null, None).label(), "retry");
    }
}
