//! Push delivery to companion installs: the [`PushSender`] seam and its implementations.
//!
//! * [`apns::ApnsSender`] speaks Apple's HTTP/2 provider API with token authentication.
//! * [`fcm::FcmSender`] speaks Firebase Cloud Messaging HTTP v1 with service-account OAuth 2.
//! * [`DevSink`] delivers nothing over the network: it reports every push delivered, and the
//!   simulated or real companion reads the delivery through the bridge's own API
//!   (`incomingDeliveries` subscription, `pendingDeliveries` query).
//!
//! Both provider senders are small clients on `reqwest` (HTTP/2, rustls) rather than the `a2`
//! or `fcm` crates: `a2` cannot be pointed at a test server (its endpoint is a closed enum, its
//! roots are built in and its connector is private), so its code path could not be tested
//! against a wire-faithful fake; the `fcm` crate speaks only the retired legacy API. Ours take a
//! base URL and an extra trusted CA, so the test suite drives exactly the code that runs in
//! production against fake APNs and FCM servers on loopback.
//!
//! A sender never returns an error: every provider answer and every transport failure maps to
//! one [`PushOutcome`], and the outbox worker ([`crate::outbox`]) maps each outcome to one action.

pub mod apns;
pub mod fcm;
pub mod payload;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

/// A push provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Apple Push Notification service.
    Apns,
    /// Firebase Cloud Messaging.
    Fcm,
    /// The development sink.
    Dev,
}

impl Provider {
    /// Label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apns => "apns",
            Self::Fcm => "fcm",
            Self::Dev => "dev",
        }
    }
}

/// What the phone shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Title line.
    pub title: String,
    /// Body, e.g. `Sign in to example.com on Quest 3 'Living room'?`.
    pub body: String,
}

/// One push to one companion install.
#[derive(Clone, PartialEq, Eq)]
pub struct PushMessage {
    /// The delivery (also the collapse id).
    pub delivery_id: String,
    /// The provider's device token.
    pub push_token: String,
    /// APNs topic (bundle id) or FCM app id.
    pub app_id: String,
    /// The signed envelope (compact JWS). Public by design, but not logged.
    pub envelope: String,
    /// The visible alert.
    pub alert: Alert,
    /// The delivery's absolute deadline, Unix milliseconds.
    pub deadline_ms: i64,
}

impl fmt::Debug for PushMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushMessage")
            .field("delivery_id", &self.delivery_id)
            .field("push_token", &token_hint(&self.push_token))
            .field("app_id", &self.app_id)
            .field("deadline_ms", &self.deadline_ms)
            .finish_non_exhaustive()
    }
}

/// What became of one push. Every provider answer maps to exactly one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The provider accepted it.
    Delivered {
        /// The provider's id for the message (`apns-id`, FCM message name).
        provider_id: Option<String>,
    },
    /// The token will never work again: deactivate the install.
    TokenDead {
        /// The provider's reason (`Unregistered`, `BadDeviceToken`, `UNREGISTERED`, ...).
        reason: String,
    },
    /// Try again later.
    Retry {
        /// Why (`TooManyRequests`, `UNAVAILABLE`, `connection reset`, ...).
        reason: String,
        /// The provider's `Retry-After`, milliseconds.
        retry_after_ms: Option<i64>,
    },
    /// The request itself is wrong (configuration, payload): do not retry.
    Permanent {
        /// The provider's reason.
        reason: String,
    },
}

impl PushOutcome {
    /// Label used in metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered { .. } => "delivered",
            Self::TokenDead { .. } => "token_dead",
            Self::Retry { .. } => "retry",
            Self::Permanent { .. } => "permanent",
        }
    }
}

/// Sends pushes for one provider.
#[async_trait]
pub trait PushSender: Send + Sync + fmt::Debug {
    /// Which provider this is.
    fn provider(&self) -> Provider;

    /// Sends one push. `now_ms` is the current time (Unix milliseconds), used for TTLs and the
    /// provider's auth tokens.
    async fn send(&self, message: &PushMessage, now_ms: i64) -> PushOutcome;
}

/// The development sink: every push is "delivered" at once; companions read deliveries through
/// the bridge's API.
#[derive(Debug, Default, Clone, Copy)]
pub struct DevSink;

#[async_trait]
impl PushSender for DevSink {
    fn provider(&self) -> Provider {
        Provider::Dev
    }

    async fn send(&self, _message: &PushMessage, _now_ms: i64) -> PushOutcome {
        PushOutcome::Delivered { provider_id: None }
    }
}

/// The senders in use, by companion platform.
#[derive(Debug, Clone)]
pub struct Senders {
    /// For `APNS` installs.
    pub apns: Option<Arc<dyn PushSender>>,
    /// For `FCM` installs.
    pub fcm: Option<Arc<dyn PushSender>>,
}

impl Senders {
    /// The development sink for both platforms.
    pub fn dev() -> Self {
        Self {
            apns: Some(Arc::new(DevSink)),
            fcm: Some(Arc::new(DevSink)),
        }
    }

    /// Builds the senders a configuration asks for.
    pub fn from_config(config: &crate::config::PushConfig) -> Result<Self, PushError> {
        use crate::config::PushSink;
        match config.sink {
            PushSink::Dev => Ok(Self::dev()),
            PushSink::Providers => {
                let timeout = Duration::from_millis(u64::from(config.worker.request_timeout_ms));
                let apns =
                    match &config.apns {
                        Some(c) => Some(Arc::new(apns::ApnsSender::from_config(c, timeout)?)
                            as Arc<dyn PushSender>),
                        None => None,
                    };
                let fcm =
                    match &config.fcm {
                        Some(c) => Some(Arc::new(fcm::FcmSender::from_config(c, timeout)?)
                            as Arc<dyn PushSender>),
                        None => None,
                    };
                Ok(Self { apns, fcm })
            }
        }
    }

    /// The sender for a companion platform (`APNS` or `FCM`).
    pub fn for_platform(&self, platform: &str) -> Option<&Arc<dyn PushSender>> {
        match platform {
            "APNS" => self.apns.as_ref(),
            "FCM" => self.fcm.as_ref(),
            _ => None,
        }
    }
}

/// Why a sender could not be built. Never contains key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A file could not be read.
    #[error("{what} {path}: {source}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
}

/// The last characters of a push token, for logs: enough to tell installs apart, too little to
/// use.
pub fn token_hint(token: &str) -> String {
    let tail: String = token
        .chars()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

pub(crate) fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, PushError> {
    std::fs::read(path).map_err(|source| PushError::File {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// An HTTP client for a provider: rustls with the system roots plus `ca_file`, HTTP/2 only
/// when `h2_only` (APNs), per-request `timeout`.
pub(crate) fn http_client(
    what: &'static str,
    ca_file: Option<&Path>,
    h2_only: bool,
    timeout: Duration,
) -> Result<reqwest::Client, PushError> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_while_idle(true)
        .pool_idle_timeout(Duration::from_secs(600));
    if h2_only {
        builder = builder.http2_prior_knowledge();
    }
    if let Some(path) = ca_file {
        let pem = read_file(what, path)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| PushError::Config(format!("{what} {}: {e}", path.display())))?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| PushError::Config(format!("{what}: HTTP client: {e}")))
}

/// Parses `Retry-After` (delay seconds; an HTTP date is treated as absent).
pub(crate) fn retry_after_ms(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .map(|s| i64::from(s) * 1000)
}

/// Classifies a transport failure: everything that never reached an answer is retryable
/// (connection refused or reset, TLS failure mid-stream, GOAWAY, timeout).
pub(crate) fn transport_outcome(error: &reqwest::Error) -> PushOutcome {
    let reason = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect failed"
    } else {
        "connection lost"
    };
    PushOutcome::Retry {
        reason: reason.to_owned(),
        retry_after_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hint_shows_only_the_tail() {
        assert_eq!(token_hint("0123456789abcdef"), "…abcdef");
        assert_eq!(token_hint("abc"), "…abc");
    }

    #[test]
    fn debug_hides_token_and_envelope() {
        let m = PushMessage {
            delivery_id: "dlv_1".into(),
            push_token: "secret-token-123456".into(),
            app_id: "com.example".into(),
            envelope: "eyJhbGciOiJFUzI1NiJ9.e30.sig".into(),
            alert: Alert {
                title: "t".into(),
                body: "b".into(),
            },
            deadline_ms: 1,
        };
        let text = format!("{m:?}");
        assert!(!text.contains("secret-token"), "{text}");
        assert!(!text.contains("eyJ"), "{text}");
        assert!(text.contains("…123456"), "{text}");
    }
}
