//! The device's side of the bridge API (`schema.graphql`): pairing, sign-in and registration
//! requests, delivery status, and the session's outcome.
//!
//! # Authentication
//!
//! Every call carries a fresh device token (the bridge refuses a token id it has seen), minted
//! here in the wire format of `bridge/src/auth/device.rs`: a compact JWS, ES256 (the signature is
//! the 64-byte `r || s`), base64url without padding,
//!
//! ```text
//! header  {"alg":"ES256","typ":"JWT","kid":"<device id>"}
//! claims  {"iss":"<device id>","aud":"<bridge public_url>","iat":<now>,"exp":<now + 60>,
//!          "jti":"<16 random bytes, base64url>"}
//! ```
//!
//! sent as `Authorization: Bearer …` over HTTP, or as the `authorization` member of the
//! `connection_init` payload on the subscription socket. Before pairing the device has no id:
//! `startPairing` carries a token with `kid` = `iss` = `"pairing"` as its proof of possession.
//! The audience is the bridge's `public_url`; by default the URL the client was given, without a
//! trailing slash ([`BridgeConfig::audience`] overrides it). Time comes from an injected
//! [`Clock`], so tests can run the agent on the bridge's manual clock.
//!
//! # Transport
//!
//! Queries and mutations are `POST /graphql` over `reqwest` (rustls, the platform's roots plus an
//! optional extra CA; no redirects). Subscriptions use `graphql-transport-ws` on
//! `GET /graphql`, over `tokio-tungstenite` on a socket this module connects itself (TLS through
//! `tokio-rustls` with the same roots). A plaintext `http://` bridge is accepted only on a
//! loopback address or `localhost`, or with [`BridgeConfig::danger_allow_http`].
//!
//! # Following a status
//!
//! [`BridgeClient::watch_delivery`] and [`BridgeClient::wait_for_pairing`] subscribe first. If
//! the socket cannot be opened or drops, they fall back to polling every
//! [`BridgeConfig::poll_interval`] and try the socket again with exponential backoff; the stream
//! yields each status change once (by status and `updatedAt`) and ends after a final status.
//! A rejection (`Rejected`) ends it at once; the bridge being unreachable for
//! [`BridgeConfig::max_failed_polls`] polls in a row ends it with `Unreachable`.
//!
//! # Errors
//!
//! [`BridgeError::Unreachable`] (connect failures, timeouts, 502/503/504 from a proxy),
//! [`BridgeError::Rejected`] with the bridge's stable `extensions.code`, and
//! [`BridgeError::Protocol`] for anything the bridge should never send.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use url::{Host, Url};

use crate::device_key::DeviceKey;

/// Lifetime of each device token, seconds (the bridge accepts at most 300).
pub const DEVICE_TOKEN_LIFETIME_SECS: i64 = 60;
/// `kid` and `iss` of the token sent with `startPairing`.
pub const PAIRING_KID: &str = "pairing";
/// Largest GraphQL response or subscription message accepted, bytes.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The subscription's operation id (one operation per socket).
const OPERATION_ID: &str = "1";

const START_PAIRING: &str = "mutation($i: StartPairingInput!) { startPairing(input: $i) { pairingId deviceId code expiresAt } }";
const PAIRING_FIELDS: &str = "id status deviceId expiresAt";
const DELIVERY_FIELDS: &str = "id kind status reason rpId numberCode deviceId deviceName deviceModel origin userName createdAt expiresAt updatedAt";

/// Where the agent gets the time for its tokens.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now_unix_secs(&self) -> i64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_secs(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// How to reach a bridge.
#[derive(Clone)]
pub struct BridgeConfig {
    /// The bridge's base URL, e.g. `https://bridge.example.com` (GraphQL lives at `/graphql`
    /// under it).
    pub url: String,
    /// The device tokens' audience: the bridge's configured `public_url`. `None` means [`url`]
    /// without a trailing slash.
    ///
    /// [`url`]: BridgeConfig::url
    pub audience: Option<String>,
    /// Extra trusted CA certificates (PEM), added to the platform's roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Accept a plaintext `http://` URL that is not a loopback address. Tokens and FIDO URLs
    /// then cross the network unencrypted: test networks only.
    pub danger_allow_http: bool,
    /// Limit for opening a connection (TCP, TLS and WebSocket handshakes).
    pub connect_timeout: Duration,
    /// Limit for one query or mutation, and for the subscription's acknowledgement.
    pub request_timeout: Duration,
    /// How often to poll when no subscription socket is open.
    pub poll_interval: Duration,
    /// After this many failed polls in a row, a watch ends with `Unreachable`.
    pub max_failed_polls: u32,
    /// Silence on the subscription socket after which the client pings, and after a further
    /// such period without an answer gives the socket up.
    pub keepalive: Duration,
}

impl fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("url", &self.url)
            .field("audience", &self.audience)
            .field(
                "extra_ca_pem",
                &self
                    .extra_ca_pem
                    .as_ref()
                    .map(|p| format!("{} bytes", p.len())),
            )
            .field("danger_allow_http", &self.danger_allow_http)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("poll_interval", &self.poll_interval)
            .field("max_failed_polls", &self.max_failed_polls)
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

impl BridgeConfig {
    /// A configuration for `url` with the defaults: connect timeout 10 s, request timeout
    /// 30 s, poll every 2 s, give up after 5 failed polls in a row, keepalive 20 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            audience: None,
            extra_ca_pem: None,
            danger_allow_http: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
            max_failed_polls: 5,
            keepalive: Duration::from_secs(20),
        }
    }
}

/// A stable error code of the bridge (GraphQL `extensions.code`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No or invalid credentials (also: the device was revoked).
    Unauthenticated,
    /// This kind of caller may not do this.
    Forbidden,
    /// No such object for this caller.
    NotFound,
    /// The object's time is up.
    Expired,
    /// A single-use object was already used.
    AlreadyUsed,
    /// Too many requests.
    RateLimited,
    /// The input is invalid.
    InvalidInput,
    /// The account has no companion that can receive the request.
    NoActiveCompanion,
    /// The bridge failed.
    Internal,
    /// A code this agent does not know.
    Other(String),
}

impl ErrorCode {
    /// Reads a code.
    pub fn parse(code: &str) -> Self {
        match code {
            "UNAUTHENTICATED" => Self::Unauthenticated,
            "FORBIDDEN" => Self::Forbidden,
            "NOT_FOUND" => Self::NotFound,
            "EXPIRED" => Self::Expired,
            "ALREADY_USED" => Self::AlreadyUsed,
            "RATE_LIMITED" => Self::RateLimited,
            "INVALID_INPUT" => Self::InvalidInput,
            "NO_ACTIVE_COMPANION" => Self::NoActiveCompanion,
            "INTERNAL" => Self::Internal,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The code as the bridge writes it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::Expired => "EXPIRED",
            Self::AlreadyUsed => "ALREADY_USED",
            Self::RateLimited => "RATE_LIMITED",
            Self::InvalidInput => "INVALID_INPUT",
            Self::NoActiveCompanion => "NO_ACTIVE_COMPANION",
            Self::Internal => "INTERNAL",
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a bridge call failed, by fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The bridge could not be reached: connection refused or reset, DNS, TLS, a timeout, or a
    /// proxy answering 502/503/504.
    #[error("bridge unreachable: {0}")]
    Unreachable(String),
    /// The bridge refused the request.
    #[error("bridge refused the request ({code}): {message}")]
    Rejected {
        /// The stable code.
        code: ErrorCode,
        /// The bridge's message (safe to show).
        message: String,
        /// For `RATE_LIMITED`: seconds until a retry can succeed.
        retry_after_secs: Option<u64>,
    },
    /// The bridge answered something this client does not understand.
    #[error("unexpected answer from the bridge: {0}")]
    Protocol(String),
    /// The client's configuration is unusable.
    #[error("bridge client configuration: {0}")]
    Config(String),
    /// A device call before the device has an id (pair it first).
    #[error("this device is not paired with the bridge yet")]
    NotPaired,
    /// The token could not be made (system randomness or signing failed).
    #[error("could not sign a device token: {0}")]
    Token(&'static str),
}

impl BridgeError {
    /// The bridge's code, for [`BridgeError::Rejected`].
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Rejected { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A device token. Prints as `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceToken(String);

impl DeviceToken {
    /// The compact JWS.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for DeviceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceToken([redacted])")
    }
}

/// What `startPairing` returned.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingStart {
    /// The pairing (poll or subscribe with it).
    pub pairing_id: String,
    /// The device's id: the `kid` of its tokens from now on.
    pub device_id: String,
    /// The code the user types into the companion app.
    pub code: String,
    /// When the code stops working (RFC 3339).
    pub expires_at: String,
}

/// Pairing state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum PairingStatus {
    /// Waiting for the code.
    Pending,
    /// Confirmed: the device is paired.
    Confirmed,
    /// The code expired.
    Expired,
    /// A status this agent does not know (treated as not final).
    #[serde(other)]
    Unknown,
}

/// A pairing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pairing {
    /// Id.
    pub id: String,
    /// State.
    pub status: PairingStatus,
    /// The device.
    pub device_id: String,
    /// Expiry of the code (RFC 3339).
    pub expires_at: String,
}

/// Sign-in or registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum DeliveryKind {
    /// getAssertion.
    SignIn,
    /// makeCredential.
    Registration,
    /// A kind this agent does not know.
    #[serde(other)]
    Unknown,
}

/// Delivery status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum DeliveryStatus {
    /// Stored, push pending.
    Queued,
    /// Pushed.
    Sent,
    /// A companion took the URL.
    Claimed,
    /// The device finished successfully.
    Completed,
    /// Declined on the phone.
    Denied,
    /// Five minutes passed.
    Expired,
    /// Failed; see the reason.
    Failed,
    /// A status this agent does not know (treated as not final).
    #[serde(other)]
    Unknown,
}

impl DeliveryStatus {
    /// Whether the delivery can no longer change.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Denied | Self::Expired | Self::Failed
        )
    }
}

/// A sign-in or registration request, as the requesting device sees it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Id.
    pub id: String,
    /// Sign-in or registration.
    pub kind: DeliveryKind,
    /// Status.
    pub status: DeliveryStatus,
    /// Why it failed or was denied (`NO_ACTIVE_COMPANION`, `DECLINED`, `NOT_ME`, ...).
    pub reason: Option<String>,
    /// Relying party id.
    pub rp_id: String,
    /// The two-digit number both screens show.
    pub number_code: String,
    /// Requesting device.
    pub device_id: String,
    /// Its name when the request was made.
    pub device_name: String,
    /// Its model.
    pub device_model: String,
    /// Origin the device said the user signs in to.
    pub origin: Option<String>,
    /// Account name hint.
    pub user_name: Option<String>,
    /// Created at (RFC 3339).
    pub created_at: String,
    /// Expires at (RFC 3339).
    pub expires_at: String,
    /// Last status change (RFC 3339).
    pub updated_at: String,
}

/// How the device's session ended (`completeDelivery`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryOutcome {
    /// Success.
    Success,
    /// Gave up.
    Cancelled,
    /// Phone not found nearby.
    PhoneNotFound,
    /// Tunnel or handshake failed.
    TunnelFailed,
    /// The authenticator returned an error.
    AuthenticatorError,
}

/// `requestSignIn` / `requestRegistration` input.
#[derive(Clone, PartialEq, Eq)]
pub struct DeliveryInput {
    /// The `FIDO:/` URL (its request type must match the call). A secret: never printed.
    pub fido_url: String,
    /// Relying party id.
    pub rp_id: String,
    /// Retry key: the same key returns the same delivery.
    pub idempotency_key: String,
    /// Origin the user signs in to, shown on the phone.
    pub origin: Option<String>,
    /// Account name hint, shown on the phone.
    pub user_name: Option<String>,
}

impl fmt::Debug for DeliveryInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryInput")
            .field("fido_url", &"[redacted]")
            .field("rp_id", &self.rp_id)
            .field("idempotency_key", &self.idempotency_key)
            .field("origin", &self.origin)
            .field("user_name", &self.user_name)
            .finish()
    }
}

impl DeliveryInput {
    fn to_variables(&self) -> Value {
        json!({"i": {
            "fidoUrl": self.fido_url,
            "rpId": self.rp_id,
            "idempotencyKey": self.idempotency_key,
            "context": {"origin": self.origin, "userName": self.user_name},
        }})
    }
}

/// An async client for the device side of the bridge API. Cheap to clone.
#[derive(Clone)]
pub struct BridgeClient {
    inner: Arc<Inner>,
    device_id: Option<String>,
}

struct Inner {
    http: reqwest::Client,
    graphql_url: Url,
    ws_url: Url,
    ws_tls: Option<Arc<rustls::ClientConfig>>,
    audience: String,
    key: SigningKey,
    public_key_b64: String,
    clock: Arc<dyn Clock>,
    config: BridgeConfig,
}

impl fmt::Debug for BridgeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeClient")
            .field("graphql_url", &self.inner.graphql_url.as_str())
            .field("audience", &self.inner.audience)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

impl BridgeClient {
    /// A client for the bridge in `config`, signing with `key`, on the system clock.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Config`] for an unusable URL (not http(s), credentials, query or
    /// fragment in it, plaintext to a non-loopback host without `danger_allow_http`) or CA
    /// file.
    pub fn new(config: BridgeConfig, key: &DeviceKey) -> Result<Self, BridgeError> {
        Self::with_clock(config, key, Arc::new(SystemClock))
    }

    /// [`BridgeClient::new`] with the clock the tokens' `iat` and `exp` come from.
    ///
    /// # Errors
    ///
    /// As [`BridgeClient::new`].
    pub fn with_clock(
        config: BridgeConfig,
        key: &DeviceKey,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, BridgeError> {
        let base = parse_base_url(&config.url, config.danger_allow_http)?;
        let graphql_url = base
            .join("graphql")
            .map_err(|e| BridgeError::Config(format!("bridge URL: {e}")))?;
        let mut ws_url = graphql_url.clone();
        let ws_scheme = if base.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        ws_url
            .set_scheme(ws_scheme)
            .map_err(|()| BridgeError::Config("bridge URL: cannot derive ws URL".into()))?;
        let extra_roots = match &config.extra_ca_pem {
            Some(pem) => parse_ca_pem(pem)?,
            None => Vec::new(),
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tether-device-agent/", env!("CARGO_PKG_VERSION")));
        if !extra_roots.is_empty() {
            let certs = extra_roots
                .iter()
                .map(|der| reqwest::Certificate::from_der(der.as_ref()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| BridgeError::Config(format!("extra CA certificate: {e}")))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| BridgeError::Config(format!("HTTP client: {e}")))?;
        let ws_tls = if base.scheme() == "https" {
            Some(ws_tls_config(extra_roots)?)
        } else {
            None
        };
        let audience = config
            .audience
            .clone()
            .unwrap_or_else(|| config.url.trim_end_matches('/').to_owned());
        if audience.is_empty() {
            return Err(BridgeError::Config("the token audience is empty".into()));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                graphql_url,
                ws_url,
                ws_tls,
                audience,
                key: key.signing_key(),
                public_key_b64: key.public_key_base64url(),
                clock,
                config,
            }),
            device_id: None,
        })
    }

    /// This client, calling as device `device_id` (from [`PairingStart::device_id`] or the
    /// identity file).
    #[must_use]
    pub fn with_device_id(mut self, device_id: impl Into<String>) -> Self {
        self.device_id = Some(device_id.into());
        self
    }

    /// The device id the client calls as, once known.
    pub fn device_id(&self) -> Option<&str> {
        self.device_id.as_deref()
    }

    /// The tokens' audience.
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// Mints a fresh token for `kid` (the device id, or [`PAIRING_KID`]): `iat` now, lifetime
    /// [`DEVICE_TOKEN_LIFETIME_SECS`], 16 random bytes of `jti`.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Token`] if randomness or signing fails.
    pub fn mint_token(&self, kid: &str) -> Result<DeviceToken, BridgeError> {
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).map_err(|_| BridgeError::Token("system randomness failed"))?;
        let now = self.inner.clock.now_unix_secs();
        mint(
            &self.inner.key,
            kid,
            &self.inner.audience,
            now,
            DEVICE_TOKEN_LIFETIME_SECS,
            &URL_SAFE_NO_PAD.encode(jti),
        )
    }

    fn device_token(&self) -> Result<DeviceToken, BridgeError> {
        let id = self.device_id.as_deref().ok_or(BridgeError::NotPaired)?;
        self.mint_token(id)
    }

    /// Starts pairing: registers the device key with `name` and `model` and returns the code to
    /// show the user. The client calls as the new device id from then on.
    ///
    /// # Errors
    ///
    /// [`BridgeError`]; `Rejected` with `INVALID_INPUT` or `RATE_LIMITED` among others.
    pub async fn start_pairing(
        &mut self,
        name: &str,
        model: &str,
    ) -> Result<PairingStart, BridgeError> {
        let proof = self.mint_token(PAIRING_KID)?;
        let variables = json!({"i": {
            "publicKey": self.inner.public_key_b64,
            "proof": proof.as_str(),
            "name": name,
            "model": model,
        }});
        let started: PairingStart = self
            .execute(None, START_PAIRING, variables, "startPairing")
            .await?;
        self.device_id = Some(started.device_id.clone());
        Ok(started)
    }

    /// The pairing's current state.
    ///
    /// # Errors
    ///
    /// [`BridgeError`]; [`BridgeError::NotPaired`] before [`BridgeClient::start_pairing`].
    pub async fn pairing_status(&self, pairing_id: &str) -> Result<Pairing, BridgeError> {
        let token = self.device_token()?;
        let query = format!("query($id: ID!) {{ pairing(id: $id) {{ {PAIRING_FIELDS} }} }}");
        self.execute(Some(&token), &query, json!({"id": pairing_id}), "pairing")
            .await
    }

    /// Waits until the pairing is confirmed or its code expires (subscription, falling back to
    /// polling) and returns its final state: check [`Pairing::status`].
    ///
    /// # Errors
    ///
    /// [`BridgeError`]: a rejection, or the bridge unreachable for too long.
    pub async fn wait_for_pairing(&self, pairing_id: &str) -> Result<Pairing, BridgeError> {
        let mut watch = Box::pin(self.watch::<Pairing>(pairing_id));
        while let Some(item) = watch.next().await {
            let pairing = item?;
            if pairing.is_final() {
                return Ok(pairing);
            }
        }
        Err(BridgeError::Protocol(
            "the pairing status stream ended before a final status".into(),
        ))
    }

    /// Asks the account's phones to sign the user in (`requestSignIn`).
    ///
    /// # Errors
    ///
    /// [`BridgeError`]; e.g. `Rejected` with `UNAUTHENTICATED` for a revoked device,
    /// `INVALID_INPUT`, `RATE_LIMITED`.
    pub async fn request_sign_in(&self, input: &DeliveryInput) -> Result<Delivery, BridgeError> {
        self.request("requestSignIn", input).await
    }

    /// Asks the account's phones to register a passkey (`requestRegistration`).
    ///
    /// # Errors
    ///
    /// As [`BridgeClient::request_sign_in`].
    pub async fn request_registration(
        &self,
        input: &DeliveryInput,
    ) -> Result<Delivery, BridgeError> {
        self.request("requestRegistration", input).await
    }

    async fn request(&self, field: &str, input: &DeliveryInput) -> Result<Delivery, BridgeError> {
        let token = self.device_token()?;
        let query = format!(
            "mutation($i: DeliveryInput!) {{ {field}(input: $i) {{ {DELIVERY_FIELDS} }} }}"
        );
        self.execute(Some(&token), &query, input.to_variables(), field)
            .await
    }

    /// The delivery's current state.
    ///
    /// # Errors
    ///
    /// [`BridgeError`]; `Rejected` with `NOT_FOUND` for another device's delivery.
    pub async fn delivery(&self, delivery_id: &str) -> Result<Delivery, BridgeError> {
        let token = self.device_token()?;
        let query = format!("query($id: ID!) {{ delivery(id: $id) {{ {DELIVERY_FIELDS} }} }}");
        self.execute(Some(&token), &query, json!({"id": delivery_id}), "delivery")
            .await
    }

    /// Follows the delivery: yields its current state, then each status change, and ends after
    /// a final status (or an error). See the module docs for the fallbacks.
    pub fn watch_delivery(&self, delivery_id: &str) -> DeliveryWatch {
        DeliveryWatch {
            inner: Box::pin(self.watch::<Delivery>(delivery_id)),
        }
    }

    /// Reports how the device's session ended (`completeDelivery`).
    ///
    /// # Errors
    ///
    /// [`BridgeError`]; `Rejected` with e.g. `EXPIRED` or `ALREADY_USED` when the delivery
    /// already ended.
    pub async fn complete_delivery(
        &self,
        delivery_id: &str,
        outcome: DeliveryOutcome,
    ) -> Result<Delivery, BridgeError> {
        let token = self.device_token()?;
        let query = format!(
            "mutation($id: ID!, $o: DeliveryOutcome!) {{ completeDelivery(id: $id, outcome: $o) {{ {DELIVERY_FIELDS} }} }}"
        );
        self.execute(
            Some(&token),
            &query,
            json!({"id": delivery_id, "o": outcome}),
            "completeDelivery",
        )
        .await
    }

    /// POSTs one GraphQL operation and returns `data.<field>`.
    async fn execute<T: DeserializeOwned>(
        &self,
        token: Option<&DeviceToken>,
        query: &str,
        variables: Value,
        field: &str,
    ) -> Result<T, BridgeError> {
        let mut request = self
            .inner
            .http
            .post(self.inner.graphql_url.clone())
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token.as_str());
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        if matches!(status.as_u16(), 502..=504) {
            return Err(BridgeError::Unreachable(format!(
                "HTTP {status} from the bridge"
            )));
        }
        let body = read_limited(response).await?;
        let parsed: Value = serde_json::from_slice(&body).map_err(|_| {
            BridgeError::Protocol(format!("HTTP {status} with a body that is not JSON"))
        })?;
        graphql_data(&parsed, field).map_err(|e| match e {
            BridgeError::Protocol(m) if !status.is_success() => {
                BridgeError::Protocol(format!("HTTP {status}: {m}"))
            }
            e => e,
        })
    }

    /// Opens a `graphql-transport-ws` socket and starts `query`.
    async fn subscribe(
        &self,
        token: &DeviceToken,
        query: &str,
        variables: Value,
    ) -> Result<Subscription, BridgeError> {
        let config = &self.inner.config;
        let ws = tokio::time::timeout(config.connect_timeout, self.open_socket())
            .await
            .map_err(|_| BridgeError::Unreachable("timed out opening the subscription".into()))??;
        let mut sub = Subscription {
            ws,
            keepalive: config.keepalive,
            max_wait: config.request_timeout,
        };
        let init = json!({"type": "connection_init",
            "payload": {"authorization": format!("Bearer {}", token.as_str())}});
        sub.send(&init).await?;
        let acked = tokio::time::timeout(config.request_timeout, async {
            loop {
                let msg = sub.read().await?;
                match msg.get("type").and_then(Value::as_str) {
                    Some("connection_ack") => return Ok(()),
                    Some("ping") => sub.send(&json!({"type": "pong"})).await?,
                    Some("pong") => {}
                    _ => {
                        return Err(BridgeError::Protocol(
                            "expected connection_ack on the subscription socket".into(),
                        ));
                    }
                }
            }
        })
        .await;
        match acked {
            Ok(result) => result?,
            Err(_) => {
                return Err(BridgeError::Unreachable(
                    "the bridge did not acknowledge the subscription".into(),
                ));
            }
        }
        sub.send(&json!({"id": OPERATION_ID, "type": "subscribe",
            "payload": {"query": query, "variables": variables}}))
            .await?;
        Ok(sub)
    }

    async fn open_socket(&self) -> Result<WebSocketStream<Box<dyn Io>>, BridgeError> {
        let url = &self.inner.ws_url;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| BridgeError::Config("bridge URL has no port".into()))?;
        let (tcp, server_name) = match url.host() {
            Some(Host::Domain(domain)) => (
                tokio::net::TcpStream::connect((domain, port)).await,
                domain.to_owned(),
            ),
            Some(Host::Ipv4(ip)) => (
                tokio::net::TcpStream::connect(SocketAddr::new(IpAddr::V4(ip), port)).await,
                ip.to_string(),
            ),
            Some(Host::Ipv6(ip)) => (
                tokio::net::TcpStream::connect(SocketAddr::new(IpAddr::V6(ip), port)).await,
                ip.to_string(),
            ),
            None => return Err(BridgeError::Config("bridge URL has no host".into())),
        };
        let tcp =
            tcp.map_err(|e| BridgeError::Unreachable(format!("{}: {e}", self.host_port())))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match &self.inner.ws_tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(server_name)
                    .map_err(|e| BridgeError::Config(format!("bridge host name: {e}")))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        BridgeError::Unreachable(format!("{}: TLS: {e}", self.host_port()))
                    })?;
                Box::new(stream)
            }
            None => Box::new(tcp),
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| BridgeError::Config(format!("subscription URL: {e}")))?;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            tungstenite::http::HeaderValue::from_static("graphql-transport-ws"),
        );
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => BridgeError::Protocol(format!(
                        "subscription upgrade refused: HTTP {}",
                        response.status()
                    )),
                    tungstenite::Error::Io(e) => {
                        BridgeError::Unreachable(format!("{}: {e}", self.host_port()))
                    }
                    other => BridgeError::Protocol(format!("subscription handshake: {other}")),
                })?;
        Ok(ws)
    }

    fn host_port(&self) -> String {
        let url = &self.inner.graphql_url;
        match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => url.as_str().to_owned(),
        }
    }

    fn watch<T: Watched>(&self, id: &str) -> impl Stream<Item = Result<T, BridgeError>> + use<T> {
        let state = WatchState::<T> {
            client: self.clone(),
            id: id.to_owned(),
            sub: None,
            next_socket_at: Instant::now(),
            socket_backoff: INITIAL_SOCKET_BACKOFF,
            next_poll_at: None,
            failed_polls: 0,
            last: None,
            done: false,
            _marker: std::marker::PhantomData,
        };
        futures_util::stream::unfold(state, |mut state| async move {
            let item = state.next_item().await?;
            Some((item, state))
        })
    }
}

/// A stream of a delivery's status changes; see [`BridgeClient::watch_delivery`].
pub struct DeliveryWatch {
    inner: Pin<Box<dyn Stream<Item = Result<Delivery, BridgeError>> + Send>>,
}

impl fmt::Debug for DeliveryWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryWatch").finish_non_exhaustive()
    }
}

impl Stream for DeliveryWatch {
    type Item = Result<Delivery, BridgeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Mints a device token in the bridge's wire format.
fn mint(
    key: &SigningKey,
    kid: &str,
    audience: &str,
    now: i64,
    lifetime: i64,
    jti: &str,
) -> Result<DeviceToken, BridgeError> {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'static str,
        typ: &'static str,
        kid: &'a str,
    }
    #[derive(Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        aud: &'a str,
        iat: i64,
        exp: i64,
        jti: &'a str,
    }
    let header = serde_json::to_vec(&Header {
        alg: "ES256",
        typ: "JWT",
        kid,
    })
    .map_err(|_| BridgeError::Token("header serialization failed"))?;
    let claims = serde_json::to_vec(&Claims {
        iss: kid,
        aud: audience,
        iat: now,
        exp: now.saturating_add(lifetime),
        jti,
    })
    .map_err(|_| BridgeError::Token("claims serialization failed"))?;
    let mut token = String::with_capacity(512);
    URL_SAFE_NO_PAD.encode_string(&header, &mut token);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
    let signature: Signature = key
        .try_sign(token.as_bytes())
        .map_err(|_| BridgeError::Token("ECDSA signing failed"))?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
    Ok(DeviceToken(token))
}

fn parse_base_url(text: &str, danger_allow_http: bool) -> Result<Url, BridgeError> {
    let mut url =
        Url::parse(text).map_err(|e| BridgeError::Config(format!("bridge URL {text:?}: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(Host::Ipv4(ip)) => ip.is_loopback(),
                Some(Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback && !danger_allow_http {
                return Err(BridgeError::Config(format!(
                    "bridge URL {text:?} is plaintext http:// to a host that is not loopback; \
                     use https:// (or danger_allow_http on a test network)"
                )));
            }
        }
        other => {
            return Err(BridgeError::Config(format!(
                "bridge URL {text:?}: scheme {other:?} is not http or https"
            )));
        }
    }
    if url.host().is_none() {
        return Err(BridgeError::Config(format!(
            "bridge URL {text:?} has no host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BridgeError::Config(format!(
            "bridge URL {text:?} must not carry credentials"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BridgeError::Config(format!(
            "bridge URL {text:?} must not have a query or fragment"
        )));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn parse_ca_pem(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, BridgeError> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BridgeError::Config(format!("extra CA PEM: {e}")))?;
    if certs.is_empty() {
        return Err(BridgeError::Config(
            "extra CA PEM holds no CERTIFICATE block".into(),
        ));
    }
    Ok(certs)
}

fn ws_tls_config(
    extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, BridgeError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
        extra_roots,
        Arc::clone(&provider),
    )
    .map_err(|e| BridgeError::Config(format!("TLS roots: {e}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BridgeError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn transport_error(e: reqwest::Error) -> BridgeError {
    if e.is_builder() || e.is_redirect() || e.is_decode() {
        BridgeError::Protocol(e.to_string())
    } else {
        // Connect failures, timeouts, resets mid-request: the bridge is not there.
        BridgeError::Unreachable(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, BridgeError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_MESSAGE_BYTES {
            return Err(BridgeError::Protocol(format!(
                "response larger than {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The first GraphQL error of a response as `Rejected`, if there is one.
fn graphql_error(errors: &Value) -> Option<BridgeError> {
    let first = errors.as_array()?.first()?;
    let message = first
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .to_owned();
    let extensions = first.get("extensions");
    match extensions
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
    {
        Some(code) => Some(BridgeError::Rejected {
            code: ErrorCode::parse(code),
            message,
            retry_after_secs: extensions
                .and_then(|e| e.get("retryAfterSeconds"))
                .and_then(Value::as_u64),
        }),
        // An error without a code is a query the schema refused: our bug or a version skew.
        None => Some(BridgeError::Protocol(format!("GraphQL error: {message}"))),
    }
}

/// `data.<field>` of a GraphQL response, or its first error.
fn graphql_data<T: DeserializeOwned>(response: &Value, field: &str) -> Result<T, BridgeError> {
    if let Some(errors) = response.get("errors")
        && let Some(error) = graphql_error(errors)
    {
        return Err(error);
    }
    let data = response
        .get("data")
        .and_then(|d| d.get(field))
        .filter(|v| !v.is_null())
        .ok_or_else(|| BridgeError::Protocol(format!("response without data.{field}")))?;
    T::deserialize(data).map_err(|e| BridgeError::Protocol(format!("data.{field}: {e}")))
}

/// A socket stream: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// One `graphql-transport-ws` socket running one operation.
struct Subscription {
    ws: WebSocketStream<Box<dyn Io>>,
    keepalive: Duration,
    max_wait: Duration,
}

/// What the operation produced.
enum SubEvent {
    /// A `next` payload (a GraphQL response).
    Next(Value),
    /// The server completed the operation or closed the socket.
    Ended,
}

impl Subscription {
    async fn send(&mut self, message: &Value) -> Result<(), BridgeError> {
        tokio::time::timeout(
            self.max_wait,
            self.ws.send(Message::text(message.to_string())),
        )
        .await
        .map_err(|_| BridgeError::Unreachable("subscription socket stalled".into()))?
        .map_err(ws_error)
    }

    /// The next JSON message; `{"type":"closed"}` when the socket closes.
    async fn read(&mut self) -> Result<Value, BridgeError> {
        loop {
            let Some(message) = self.ws.next().await else {
                return Ok(json!({"type": "closed"}));
            };
            match message.map_err(ws_error)? {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).map_err(|_| {
                        BridgeError::Protocol("subscription message is not JSON".into())
                    });
                }
                Message::Close(_) => return Ok(json!({"type": "closed"})),
                Message::Binary(_) => {
                    return Err(BridgeError::Protocol(
                        "binary message on the subscription socket".into(),
                    ));
                }
                // Protocol-level pings are answered by tungstenite.
                _ => {}
            }
        }
    }

    /// The next event of the operation, answering pings and pinging when the socket is quiet.
    async fn next_event(&mut self) -> Result<SubEvent, BridgeError> {
        let mut pinged = false;
        loop {
            let message = match tokio::time::timeout(self.keepalive, self.read()).await {
                Ok(message) => message?,
                Err(_) if pinged => {
                    return Err(BridgeError::Unreachable(
                        "the subscription socket went silent".into(),
                    ));
                }
                Err(_) => {
                    self.send(&json!({"type": "ping"})).await?;
                    pinged = true;
                    continue;
                }
            };
            pinged = false;
            match message.get("type").and_then(Value::as_str) {
                Some("next") if message.get("id").and_then(Value::as_str) == Some(OPERATION_ID) => {
                    return Ok(SubEvent::Next(
                        message.get("payload").cloned().unwrap_or(Value::Null),
                    ));
                }
                Some("error") => {
                    let payload = message.get("payload").cloned().unwrap_or(Value::Null);
                    return Err(graphql_error(&payload).unwrap_or_else(|| {
                        BridgeError::Protocol("subscription error without detail".into())
                    }));
                }
                Some("complete" | "closed") => return Ok(SubEvent::Ended),
                Some("ping") => self.send(&json!({"type": "pong"})).await?,
                _ => {}
            }
        }
    }
}

fn ws_error(e: tungstenite::Error) -> BridgeError {
    match e {
        tungstenite::Error::Io(e) => BridgeError::Unreachable(format!("subscription socket: {e}")),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            BridgeError::Unreachable("subscription socket closed".into())
        }
        other => BridgeError::Protocol(format!("subscription socket: {other}")),
    }
}

const INITIAL_SOCKET_BACKOFF: Duration = Duration::from_secs(1);
const MAX_SOCKET_BACKOFF: Duration = Duration::from_secs(30);

/// An object whose status can be followed.
trait Watched: DeserializeOwned + Send + Sync + 'static {
    /// The subscription field.
    const SUBSCRIPTION_FIELD: &'static str;
    /// The query field (for polling).
    const QUERY_FIELD: &'static str;
    /// The GraphQL fields to select.
    const FIELDS: &'static str;
    /// What changes when the status changes.
    fn change_key(&self) -> (String, String);
    /// Whether no further change can come.
    fn is_final(&self) -> bool;
}

impl Watched for Delivery {
    const SUBSCRIPTION_FIELD: &'static str = "deliveryStatus";
    const FIELDS: &'static str = DELIVERY_FIELDS;
    const QUERY_FIELD: &'static str = "delivery";

    fn change_key(&self) -> (String, String) {
        (format!("{:?}", self.status), self.updated_at.clone())
    }

    fn is_final(&self) -> bool {
        self.status.is_final()
    }
}

impl Watched for Pairing {
    const SUBSCRIPTION_FIELD: &'static str = "pairingStatus";
    const FIELDS: &'static str = PAIRING_FIELDS;
    const QUERY_FIELD: &'static str = "pairing";

    fn change_key(&self) -> (String, String) {
        (format!("{:?}", self.status), String::new())
    }

    fn is_final(&self) -> bool {
        matches!(
            self.status,
            PairingStatus::Confirmed | PairingStatus::Expired
        )
    }
}

struct WatchState<T> {
    client: BridgeClient,
    id: String,
    sub: Option<Subscription>,
    next_socket_at: Instant,
    socket_backoff: Duration,
    next_poll_at: Option<Instant>,
    failed_polls: u32,
    last: Option<(String, String)>,
    done: bool,
    _marker: std::marker::PhantomData<fn() -> T>,
}

impl<T: Watched> WatchState<T> {
    /// `Some(item)` to yield, or `None` when the stream is over.
    async fn next_item(&mut self) -> Option<Result<T, BridgeError>> {
        loop {
            if self.done {
                return None;
            }
            if self.sub.is_none() && Instant::now() >= self.next_socket_at {
                match self.open().await {
                    Ok(sub) => {
                        self.sub = Some(sub);
                        self.socket_backoff = INITIAL_SOCKET_BACKOFF;
                    }
                    Err(e @ BridgeError::Rejected { .. }) => return Some(self.fail(e)),
                    Err(e @ (BridgeError::NotPaired | BridgeError::Token(_))) => {
                        return Some(self.fail(e));
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "subscription unavailable, polling");
                        self.socket_failed();
                    }
                }
            }
            if let Some(sub) = self.sub.as_mut() {
                match sub.next_event().await {
                    Ok(SubEvent::Next(payload)) => {
                        match graphql_data::<T>(&payload, T::SUBSCRIPTION_FIELD) {
                            Ok(item) => {
                                if let Some(item) = self.changed(item) {
                                    return Some(Ok(item));
                                }
                            }
                            Err(e @ BridgeError::Rejected { .. }) => return Some(self.fail(e)),
                            Err(e) => {
                                tracing::debug!(error = %e, "bad subscription payload, polling");
                                self.sub = None;
                                self.socket_failed();
                            }
                        }
                    }
                    Ok(SubEvent::Ended) => {
                        // Completed without a final state (e.g. the bridge shut down): poll
                        // now and reconnect after the backoff.
                        self.sub = None;
                        self.socket_failed();
                    }
                    Err(e @ BridgeError::Rejected { .. }) => return Some(self.fail(e)),
                    Err(e) => {
                        tracing::debug!(error = %e, "subscription lost, polling");
                        self.sub = None;
                        self.socket_failed();
                    }
                }
                continue;
            }
            // Polling.
            if let Some(at) = self.next_poll_at {
                tokio::time::sleep_until(at).await;
            }
            self.next_poll_at = Some(Instant::now() + self.client.inner.config.poll_interval);
            match self.poll().await {
                Ok(item) => {
                    self.failed_polls = 0;
                    if let Some(item) = self.changed(item) {
                        return Some(Ok(item));
                    }
                }
                Err(e @ BridgeError::Unreachable(_)) => {
                    self.failed_polls += 1;
                    if self.failed_polls >= self.client.inner.config.max_failed_polls.max(1) {
                        return Some(self.fail(e));
                    }
                }
                Err(e) => return Some(self.fail(e)),
            }
        }
    }

    fn fail(&mut self, e: BridgeError) -> Result<T, BridgeError> {
        self.done = true;
        self.sub = None;
        Err(e)
    }

    fn socket_failed(&mut self) {
        self.next_socket_at = Instant::now() + self.socket_backoff;
        self.socket_backoff = (self.socket_backoff * 2).min(MAX_SOCKET_BACKOFF);
        // Poll at once, so a change made while the socket was down is not missed.
        self.next_poll_at = None;
    }

    fn changed(&mut self, item: T) -> Option<T> {
        let key = item.change_key();
        if self.last.as_ref() == Some(&key) {
            return None;
        }
        self.last = Some(key);
        if item.is_final() {
            self.done = true;
        }
        Some(item)
    }

    async fn open(&self) -> Result<Subscription, BridgeError> {
        let token = self.client.device_token()?;
        let query = format!(
            "subscription($id: ID!) {{ {}(id: $id) {{ {} }} }}",
            T::SUBSCRIPTION_FIELD,
            T::FIELDS
        );
        self.client
            .subscribe(&token, &query, json!({"id": self.id}))
            .await
    }

    async fn poll(&self) -> Result<T, BridgeError> {
        let token = self.client.device_token()?;
        let query = format!(
            "query($id: ID!) {{ {}(id: $id) {{ {} }} }}",
            T::QUERY_FIELD,
            T::FIELDS
        );
        self.client
            .execute(Some(&token), &query, json!({"id": self.id}), T::QUERY_FIELD)
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn token_has_the_wire_format() {
        let key = DeviceKey::from_bytes(&[9u8; 32]).unwrap();
        let token = mint(
            &key.signing_key(),
            "dev_abc",
            "https://bridge.example.com",
            1_000,
            60,
            "AAAAAAAAAAAAAAAAAAAAAA",
        )
        .unwrap();
        let parts: Vec<&str> = token.as_str().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        assert_eq!(header, br#"{"alg":"ES256","typ":"JWT","kid":"dev_abc"}"#);
        let claims = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        assert_eq!(
            claims,
            br#"{"iss":"dev_abc","aud":"https://bridge.example.com","iat":1000,"exp":1060,"jti":"AAAAAAAAAAAAAAAAAAAAAA"}"#
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
        assert_eq!(format!("{token:?}"), "DeviceToken([redacted])");
    }

    #[test]
    fn base_urls() {
        for ok in [
            "https://bridge.example.com",
            "https://bridge.example.com/",
            "https://bridge.example.com/tether",
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:8080",
        ] {
            let url = parse_base_url(ok, false).unwrap();
            assert!(url.path().ends_with('/'), "{ok}");
        }
        assert_eq!(
            parse_base_url("https://b.example/tether", false)
                .unwrap()
                .join("graphql")
                .unwrap()
                .as_str(),
            "https://b.example/tether/graphql"
        );
        for bad in [
            "http://bridge.example.com",
            "http://10.0.0.1",
            "ftp://bridge.example.com",
            "https://user:pw@bridge.example.com",
            "https://bridge.example.com/?x=1",
            "https://bridge.example.com/#f",
            "not a url",
        ] {
            assert!(
                matches!(parse_base_url(bad, false), Err(BridgeError::Config(_))),
                "{bad}"
            );
        }
        assert!(parse_base_url("http://bridge.example.com", true).is_ok());
    }

    #[test]
    fn graphql_errors_carry_the_code() {
        let resp = json!({"data": null, "errors": [{"message": "slow down",
            "extensions": {"code": "RATE_LIMITED", "retryAfterSeconds": 7}}]});
        assert_eq!(
            graphql_data::<Value>(&resp, "x").unwrap_err(),
            BridgeError::Rejected {
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after_secs: Some(7)
            }
        );
        let resp = json!({"errors": [{"message": "Unknown field"}]});
        assert!(matches!(
            graphql_data::<Value>(&resp, "x"),
            Err(BridgeError::Protocol(_))
        ));
        let resp = json!({"data": {"x": null}});
        assert!(matches!(
            graphql_data::<Value>(&resp, "x"),
            Err(BridgeError::Protocol(_))
        ));
        assert_eq!(ErrorCode::parse("NEW_CODE").as_str(), "NEW_CODE");
    }

    #[test]
    fn delivery_input_debug_hides_the_fido_url() {
        let input = DeliveryInput {
            fido_url: "FIDO:/1234567890".into(),
            rp_id: "example.com".into(),
            idempotency_key: "k".into(),
            origin: None,
            user_name: None,
        };
        let text = format!("{input:?}");
        assert!(!text.contains("FIDO:/"), "{text}");
        assert!(text.contains("example.com"));
    }
}
