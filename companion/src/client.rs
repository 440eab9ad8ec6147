//! [`CompanionClient`]: the companion app's side of the bridge's GraphQL API.
//!
//! Every call is authenticated with an access token from the operator's identity provider,
//! obtained through a [`TokenProvider`] for each request, so an app can refresh tokens
//! whenever it needs to. When the bridge answers `UNAUTHENTICATED`, the client tells the provider
//! ([`TokenProvider::token_rejected`]) and tries once more with the token it then hands out.
//!
//! Errors from the bridge keep its stable code ([`ErrorCode`], from `extensions.code`): a second
//! claim is [`ErrorCode::AlreadyUsed`], a claim after the deadline [`ErrorCode::Expired`],
//! another account's delivery [`ErrorCode::NotFound`].
//!
//! # Transport
//!
//! * `https://` with the platform's trust store, plus an optional extra CA
//!   ([`BridgeConfig::extra_ca_pem`]) for private deployments; plaintext `http://` only to a
//!   loopback address (`127.0.0.0/8`, `::1`, `localhost`) or with
//!   [`BridgeConfig::danger_allow_plaintext_http`].
//! * Redirects are not followed (the bearer token goes only to the configured bridge); every
//!   request has a time limit ([`BridgeConfig::request_timeout`]); response bodies are bounded.
//! * Subscriptions ([`CompanionClient::watch_delivery`]) use `graphql-transport-ws` over a
//!   WebSocket opened with the same HTTP client settings (an HTTP/1.1 upgrade), so TLS and the
//!   extra CA are the same as for queries.
//!
//! # Secrets
//!
//! The `FIDO:/` URL from [`CompanionClient::claim`] is a [`ClaimedUrl`]: zeroized on drop,
//! `[redacted]` in `Debug`, never logged. Access tokens are [`AccessToken`]s with the same
//! properties. The client logs no request or response bodies.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use zeroize::Zeroizing;

use crate::envelope::{
    self, Clock, DEFAULT_AUDIENCE, DEFAULT_LEEWAY_SECS, EnvelopeError, Expectations,
    PushPayloadError, RequestKind, SystemClock, VerifiedEnvelope,
};
use crate::jwks::{JwksCache, JwksPolicy};

/// Path of the GraphQL endpoint below the bridge URL.
pub const GRAPHQL_PATH: &str = "graphql";
/// Path of the envelope key set below the bridge URL.
pub const JWKS_PATH: &str = ".well-known/jwks.json";
/// Largest GraphQL response body read.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The WebSocket subprotocol of subscriptions.
pub const SUBSCRIPTION_PROTOCOL: &str = "graphql-transport-ws";

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Where the bridge is and what its envelopes must say.
#[derive(Clone)]
#[non_exhaustive]
pub struct BridgeConfig {
    /// The bridge's base URL, e.g. `https://bridge.example.com` (GraphQL at `/graphql`, keys at
    /// `/.well-known/jwks.json`).
    pub url: String,
    /// The envelope issuer: the bridge's configured `public_url`. Default: [`Self::url`]
    /// without a trailing `/`.
    pub issuer: Option<String>,
    /// The envelope audience (the bridge's `envelope_audience`). Default `tether-companion`.
    pub envelope_audience: String,
    /// Extra CA certificates (PEM) trusted besides the platform's, for private deployments.
    /// (On Android the platform verifier cannot add roots, so building the client fails there
    /// with this set: install the CA in the device's trust store instead.)
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Allows plaintext `http://` to hosts other than loopback. Never in production: tokens and
    /// FIDO URLs would cross the network readable.
    pub danger_allow_plaintext_http: bool,
    /// Time limit of one request (and of opening a subscription). Default 15 s.
    pub request_timeout: Duration,
    /// Time limit of connecting. Default 10 s.
    pub connect_timeout: Duration,
    /// Clock difference tolerated when checking envelope times, seconds. Default 30.
    pub envelope_leeway_secs: i64,
    /// When the bridge's key set is fetched again.
    pub jwks: JwksPolicy,
}

impl BridgeConfig {
    /// Defaults for the bridge at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            issuer: None,
            envelope_audience: DEFAULT_AUDIENCE.to_owned(),
            extra_ca_pem: None,
            danger_allow_plaintext_http: false,
            request_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            envelope_leeway_secs: DEFAULT_LEEWAY_SECS,
            jwks: JwksPolicy::default(),
        }
    }

    /// The issuer envelopes must carry.
    pub fn effective_issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| self.url.trim_end_matches('/').to_owned())
    }
}

impl fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("url", &self.url)
            .field("issuer", &self.issuer)
            .field("envelope_audience", &self.envelope_audience)
            .field(
                "extra_ca_pem",
                &self
                    .extra_ca_pem
                    .as_ref()
                    .map(|p| format!("{} bytes", p.len())),
            )
            .field(
                "danger_allow_plaintext_http",
                &self.danger_allow_plaintext_http,
            )
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("envelope_leeway_secs", &self.envelope_leeway_secs)
            .field("jwks", &self.jwks)
            .finish()
    }
}

/// The URLs and HTTP clients of one bridge.
#[derive(Clone)]
struct Endpoint {
    graphql: reqwest::Url,
    jwks: reqwest::Url,
    http: reqwest::Client,
    /// HTTP/1.1 only, no total timeout: for WebSocket upgrades.
    upgrade: reqwest::Client,
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let lower = host.to_ascii_lowercase();
    lower == "localhost" || lower.ends_with(".localhost")
}

impl Endpoint {
    fn new(config: &BridgeConfig) -> Result<Self, ClientError> {
        let mut base: reqwest::Url = config
            .url
            .parse()
            .map_err(|_| ClientError::Config("bridge url is not a URL".into()))?;
        match base.scheme() {
            "https" => {}
            "http" if config.danger_allow_plaintext_http || is_loopback_host(&base) => {}
            "http" => return Err(ClientError::PlaintextHttp),
            _ => return Err(ClientError::Config("bridge url must be https".into())),
        }
        if base.host_str().is_none() {
            return Err(ClientError::Config("bridge url has no host".into()));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(ClientError::Config(
                "bridge url must not carry credentials".into(),
            ));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(ClientError::Config(
                "bridge url must not have a query or fragment".into(),
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let join = |path: &str| {
            base.join(path)
                .map_err(|_| ClientError::Config(format!("cannot build the {path} URL")))
        };
        let graphql = join(GRAPHQL_PATH)?;
        let jwks = join(JWKS_PATH)?;

        let certs = match &config.extra_ca_pem {
            Some(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|_| ClientError::Config("extra_ca_pem is not PEM".into()))?;
                if certs.is_empty() {
                    return Err(ClientError::Config(
                        "extra_ca_pem holds no certificate".into(),
                    ));
                }
                certs
            }
            None => Vec::new(),
        };
        let builder = |certs: Vec<reqwest::Certificate>| {
            let mut b = reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("tether-companion/", env!("CARGO_PKG_VERSION")));
            if !certs.is_empty() {
                b = b.tls_certs_merge(certs);
            }
            b
        };
        let http = builder(certs.clone())
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        let upgrade = builder(certs)
            .http1_only()
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            graphql,
            jwks,
            http,
            upgrade,
        })
    }
}

/// A short description of a transport failure (with its causes; never a body or a header).
pub(crate) fn describe_reqwest_error(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Access tokens
// ---------------------------------------------------------------------------------------------

/// An access token from the operator's identity provider. Zeroized on drop; `[redacted]` in
/// `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Zeroizing<String>);

impl AccessToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }

    /// The token text. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

/// The token provider could not supply a token (e.g. the user signed out).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access token unavailable: {0}")]
pub struct TokenError(pub String);

impl TokenError {
    /// An error with a reason (which must not contain a token).
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// What [`TokenProvider::access_token`] returns.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, TokenError>> + Send + 'a>>;

/// Supplies access tokens, refreshing them as the app's identity library does.
///
/// Any `Fn() -> impl Future<Output = Result<AccessToken, TokenError>>` closure is a provider:
///
/// ```
/// # use companion::{AccessToken, TokenError};
/// let provider = || async { Ok::<_, TokenError>(AccessToken::new("eyJ...")) };
/// # fn check(_: impl companion::TokenProvider) {}
/// # check(provider);
/// ```
pub trait TokenProvider: Send + Sync {
    /// A currently valid access token (called before every request).
    fn access_token(&self) -> TokenFuture<'_>;

    /// The bridge refused `token` (`UNAUTHENTICATED`): drop it from any cache. The client then
    /// asks for a token once more and repeats the request.
    fn token_rejected(&self, _token: &AccessToken) {}
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<AccessToken, TokenError>> + Send + 'static,
{
    fn access_token(&self) -> TokenFuture<'_> {
        Box::pin(self())
    }
}

/// A fixed token (tests, command-line tools).
#[derive(Debug, Clone)]
pub struct StaticToken(pub AccessToken);

impl TokenProvider for StaticToken {
    fn access_token(&self) -> TokenFuture<'_> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// The bridge's stable error codes (`extensions.code`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No or invalid access token.
    Unauthenticated,
    /// This kind of caller may not do this.
    Forbidden,
    /// No such object for this account (also: another account's delivery).
    NotFound,
    /// The delivery's (or code's) time is up.
    Expired,
    /// Single-use object already used: the delivery was already claimed, denied or completed.
    AlreadyUsed,
    /// Too many requests; see [`ApiError::retry_after_secs`].
    RateLimited,
    /// The input is invalid; nothing changed.
    InvalidInput,
    /// The account has no companion install that can receive requests.
    NoActiveCompanion,
    /// The bridge failed.
    Internal,
    /// A code this version does not know.
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

/// An error the bridge returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// The bridge's message (safe to show).
    pub message: String,
    /// For [`ErrorCode::RateLimited`]: seconds until a retry can succeed.
    pub retry_after_secs: Option<u64>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration cannot be used.
    #[error("invalid companion configuration: {0}")]
    Config(String),
    /// A plaintext `http://` bridge URL that is not loopback, without
    /// [`BridgeConfig::danger_allow_plaintext_http`].
    #[error("plaintext http is allowed only to loopback addresses")]
    PlaintextHttp,
    /// No access token.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The bridge could not be reached (network, TLS, timeout).
    #[error("bridge unreachable: {0}")]
    Transport(String),
    /// The bridge answered with an HTTP error and no GraphQL error.
    #[error("bridge answered HTTP {status}")]
    Http {
        /// The status code.
        status: u16,
    },
    /// The bridge refused the operation.
    #[error("bridge refused: {0}")]
    Api(ApiError),
    /// The bridge's answer did not have the expected shape.
    #[error("unexpected bridge response: {0}")]
    Protocol(String),
    /// The envelope did not verify.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The push payload carried no envelope.
    #[error(transparent)]
    Push(#[from] PushPayloadError),
    /// The claimed URL is not a valid `FIDO:/` URL (the reason code; never the URL).
    #[error("the bridge returned an invalid FIDO URL ({0})")]
    InvalidFidoUrl(&'static str),
    /// The subscription could not be opened or broke.
    #[error("subscription failed: {0}")]
    Subscription(String),
}

impl ClientError {
    /// The bridge's stable code, when the bridge refused the operation.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Api(e) => Some(&e.code),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// API types
// ---------------------------------------------------------------------------------------------

/// Push platform of a companion install.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Platform {
    /// Apple Push Notification service.
    #[serde(rename = "APNS")]
    Apns,
    /// Firebase Cloud Messaging.
    #[serde(rename = "FCM")]
    Fcm,
}

/// Why the user declined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum DenyReason {
    /// The user said no.
    #[serde(rename = "DECLINED")]
    Declined,
    /// "This wasn't me": the bridge flags the device in the audit log.
    #[serde(rename = "NOT_ME")]
    NotMe,
}

/// A companion install of the account.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Companion {
    /// Id (pass it to [`CompanionClient::update_push_token`] and [`CompanionClient::remove`]).
    pub id: String,
    /// Push platform.
    pub platform: Platform,
    /// APNs topic (bundle id) or FCM app id.
    pub app_id: String,
    /// Name shown to the user.
    pub display_name: String,
    /// Whether pushes reach it.
    pub active: bool,
    /// Registered at (RFC 3339).
    pub created_at: String,
    /// Last changed at (RFC 3339).
    pub updated_at: String,
}

/// Lifecycle of a paired device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum DeviceStatus {
    /// Pairing not yet confirmed.
    Pending,
    /// Paired.
    Active,
    /// Revoked.
    Revoked,
    /// Expired after inactivity.
    Expired,
    /// A status this version does not know.
    #[serde(other)]
    Unknown,
}

/// A screenless device of the account.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Device {
    /// Id.
    pub id: String,
    /// Name, e.g. `Living room`.
    pub name: String,
    /// Model, e.g. `Quest 3`.
    pub model: String,
    /// Lifecycle state.
    pub status: DeviceStatus,
    /// Created at (RFC 3339).
    pub created_at: String,
    /// Last authenticated call (RFC 3339).
    pub last_seen_at: String,
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
    /// Declined on a phone.
    Denied,
    /// Five minutes passed.
    Expired,
    /// Failed; see [`Delivery::reason`].
    Failed,
    /// A status this version does not know.
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

    /// Whether a companion can still claim or deny it.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Queued | Self::Sent)
    }
}

fn de_kind<'de, D: Deserializer<'de>>(d: D) -> Result<RequestKind, D::Error> {
    match String::deserialize(d)?.as_str() {
        "SIGN_IN" => Ok(RequestKind::SignIn),
        "REGISTRATION" => Ok(RequestKind::Registration),
        other => Err(serde::de::Error::custom(format!(
            "unknown delivery kind {other:?}"
        ))),
    }
}

/// A delivery as the bridge reports it. Its display fields are not signed: show the verified
/// envelope ([`CompanionClient::verify_envelope`] of [`Delivery::envelope`]) instead.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Delivery {
    /// Id.
    pub id: String,
    /// Sign-in or registration.
    #[serde(deserialize_with = "de_kind")]
    pub kind: RequestKind,
    /// Status.
    pub status: DeliveryStatus,
    /// Why it failed or was denied (`NO_ACTIVE_COMPANION`, `DECLINED`, `NOT_ME`, ...).
    pub reason: Option<String>,
    /// Relying party id.
    pub rp_id: String,
    /// The number both screens show.
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
    /// The signed envelope (the same the push carries).
    pub envelope: String,
    /// Created at (RFC 3339).
    pub created_at: String,
    /// Expires at (RFC 3339).
    pub expires_at: String,
    /// Last status change (RFC 3339).
    pub updated_at: String,
}

/// The `FIDO:/` URL of a claimed delivery: hand it to the platform authenticator and drop it.
/// Zeroized on drop; `[redacted]` in `Debug`; not `Clone`.
pub struct ClaimedUrl {
    delivery_id: String,
    kind: RequestKind,
    url: Zeroizing<String>,
}

impl ClaimedUrl {
    /// The delivery it belongs to.
    pub fn delivery_id(&self) -> &str {
        &self.delivery_id
    }

    /// Sign-in or registration (the URL's request type, checked against the delivery's kind).
    pub fn kind(&self) -> RequestKind {
        self.kind
    }

    /// The URL text, for the authenticator. Do not log or store it.
    pub fn expose(&self) -> &str {
        &self.url
    }

    /// The decoded URL (for an in-process authenticator such as the simulated phone).
    pub fn parse(&self) -> Result<hybrid::url::FidoUrl, hybrid::url::UrlError> {
        hybrid::url::FidoUrl::parse(&self.url)
    }
}

impl fmt::Debug for ClaimedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedUrl")
            .field("delivery_id", &self.delivery_id)
            .field("kind", &self.kind)
            .field("url", &"[redacted]")
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// GraphQL documents
// ---------------------------------------------------------------------------------------------

const DELIVERY_FIELDS: &str = "id kind status reason rpId numberCode deviceId deviceName \
     deviceModel origin userName envelope createdAt expiresAt updatedAt";
const COMPANION_FIELDS: &str = "id platform appId displayName active createdAt updatedAt";
const DEVICE_FIELDS: &str = "id name model status createdAt lastSeenAt";

fn doc(template: &str, fields: &str) -> String {
    template.replace("{FIELDS}", fields)
}

#[derive(Deserialize)]
struct GqlError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    extensions: Option<GqlExtensions>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GqlExtensions {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    retry_after_seconds: Option<u64>,
}

impl From<GqlError> for ApiError {
    fn from(e: GqlError) -> Self {
        let (code, retry_after_secs) = match e.extensions {
            Some(ext) => (ext.code, ext.retry_after_seconds),
            None => (None, None),
        };
        Self {
            code: ErrorCode::parse(code.as_deref().unwrap_or("INTERNAL")),
            message: e.message,
            retry_after_secs,
        }
    }
}

/// Only the errors of a response (the data is skipped without being copied).
#[derive(Deserialize)]
struct ErrorsOnly {
    #[serde(default)]
    errors: Option<Vec<GqlError>>,
}

/// Only the data of a response: `{"data": {"<field>": T}}`.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct DataOnly<T> {
    data: Option<std::collections::HashMap<String, Option<T>>>,
}

#[derive(Deserialize)]
struct AccountData {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimData {
    #[serde(deserialize_with = "de_secret")]
    fido_url: Zeroizing<String>,
    delivery: ClaimDelivery,
}

#[derive(Deserialize)]
struct ClaimDelivery {
    id: String,
    #[serde(deserialize_with = "de_kind")]
    kind: RequestKind,
}

fn de_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    String::deserialize(d).map(Zeroizing::new)
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// The companion app's connection to one bridge, signed in to one account. Cheap to share
/// behind an `Arc`; all methods take `&self`.
///
/// The account id is asked once and remembered (envelopes are checked against it): when a
/// different user signs in, build a new client.
pub struct CompanionClient {
    endpoint: Endpoint,
    issuer: String,
    audience: String,
    leeway_secs: i64,
    request_timeout: Duration,
    tokens: Arc<dyn TokenProvider>,
    jwks: Arc<JwksCache>,
    clock: Arc<dyn Clock>,
    account_id: tokio::sync::OnceCell<String>,
    companion_id: Mutex<Option<String>>,
}

impl fmt::Debug for CompanionClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompanionClient")
            .field("graphql", &self.endpoint.graphql.as_str())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("account_id", &self.account_id.get())
            .field("companion_id", &self.companion_id())
            .finish_non_exhaustive()
    }
}

impl CompanionClient {
    /// A client for `config`'s bridge, authenticated by `tokens`, on the system clock.
    pub fn new(
        config: BridgeConfig,
        tokens: impl TokenProvider + 'static,
    ) -> Result<Self, ClientError> {
        Self::with_clock(config, Arc::new(tokens), Arc::new(SystemClock))
    }

    /// A client with an injected clock (tests, the simulated phone).
    pub fn with_clock(
        config: BridgeConfig,
        tokens: Arc<dyn TokenProvider>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ClientError> {
        let endpoint = Endpoint::new(&config)?;
        let jwks = Arc::new(JwksCache::new(
            endpoint.jwks.clone(),
            endpoint.http.clone(),
            config.jwks.clone(),
            clock.clone(),
        ));
        Ok(Self {
            issuer: config.effective_issuer(),
            audience: config.envelope_audience.clone(),
            leeway_secs: config.envelope_leeway_secs,
            request_timeout: config.request_timeout,
            endpoint,
            tokens,
            jwks,
            clock,
            account_id: tokio::sync::OnceCell::new(),
            companion_id: Mutex::new(None),
        })
    }

    /// The bridge's key set cache.
    pub fn jwks(&self) -> &JwksCache {
        &self.jwks
    }

    /// The issuer envelopes must carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signed-in account's id (asked once, then remembered).
    pub async fn account_id(&self) -> Result<String, ClientError> {
        self.account_id
            .get_or_try_init(|| async {
                let account: AccountData = self
                    .execute("{ account { id } }", json!({}), "account")
                    .await?;
                Ok::<_, ClientError>(account.id)
            })
            .await
            .cloned()
    }

    /// This install's companion id, once [`Self::register`] ran (or the app set it).
    pub fn companion_id(&self) -> Option<String> {
        self.companion_id.lock().ok().and_then(|id| id.clone())
    }

    /// Sets this install's companion id (an app that stored it from an earlier run). Claims
    /// then name it, so the audit log shows which install took the URL.
    pub fn set_companion_id(&self, id: Option<String>) {
        if let Ok(mut slot) = self.companion_id.lock() {
            *slot = id;
        }
    }

    /// Registers this install's push token (call at first launch and whenever the app starts:
    /// registering the same token again is harmless). Remembers the companion id.
    pub async fn register(
        &self,
        platform: Platform,
        push_token: &str,
        app_id: &str,
        display_name: &str,
    ) -> Result<Companion, ClientError> {
        let query = doc(
            "mutation($i: RegisterCompanionInput!) { registerCompanion(input: $i) { {FIELDS} } }",
            COMPANION_FIELDS,
        );
        let input = json!({"i": {
            "platform": platform, "pushToken": push_token, "appId": app_id,
            "displayName": display_name,
        }});
        let companion: Companion = self.execute(&query, input, "registerCompanion").await?;
        self.set_companion_id(Some(companion.id.clone()));
        Ok(companion)
    }

    /// Replaces an install's push token (APNs and FCM rotate them).
    pub async fn update_push_token(
        &self,
        companion_id: &str,
        push_token: &str,
    ) -> Result<Companion, ClientError> {
        let query = doc(
            "mutation($id: ID!, $t: String!) { updatePushToken(id: $id, pushToken: $t) { {FIELDS} } }",
            COMPANION_FIELDS,
        );
        self.execute(
            &query,
            json!({"id": companion_id, "t": push_token}),
            "updatePushToken",
        )
        .await
    }

    /// Removes an install (e.g. at sign-out); it receives no more pushes.
    pub async fn remove(&self, companion_id: &str) -> Result<bool, ClientError> {
        let removed: bool = self
            .execute(
                "mutation($id: ID!) { removeCompanion(id: $id) }",
                json!({"id": companion_id}),
                "removeCompanion",
            )
            .await?;
        if self.companion_id().as_deref() == Some(companion_id) {
            self.set_companion_id(None);
        }
        Ok(removed)
    }

    /// The account's companion installs.
    pub async fn companions(&self) -> Result<Vec<Companion>, ClientError> {
        let query = doc("{ companions { {FIELDS} } }", COMPANION_FIELDS);
        self.execute(&query, json!({}), "companions").await
    }

    /// Confirms the pairing code a new device shows (the user types it in), binding the device
    /// to this account; `name` optionally renames it. Wrong codes count towards the account's
    /// lockout (`RATE_LIMITED`).
    pub async fn confirm_pairing(
        &self,
        code: &str,
        name: Option<&str>,
    ) -> Result<Device, ClientError> {
        let query = doc(
            "mutation($c: String!, $n: String) { confirmPairing(code: $c, name: $n) { {FIELDS} } }",
            DEVICE_FIELDS,
        );
        self.execute(&query, json!({"c": code, "n": name}), "confirmPairing")
            .await
    }

    /// Deliveries waiting for the account's phones: the pull fallback when pushes are off.
    /// Verify each [`Delivery::envelope`] before showing it.
    pub async fn pending_deliveries(&self) -> Result<Vec<Delivery>, ClientError> {
        let query = doc("{ pendingDeliveries { {FIELDS} } }", DELIVERY_FIELDS);
        self.execute(&query, json!({}), "pendingDeliveries").await
    }

    /// One delivery of the account.
    pub async fn delivery(&self, id: &str) -> Result<Delivery, ClientError> {
        let query = doc(
            "query($id: ID!) { delivery(id: $id) { {FIELDS} } }",
            DELIVERY_FIELDS,
        );
        self.execute(&query, json!({"id": id}), "delivery").await
    }

    /// Verifies an envelope: signature with the bridge's key named by its `kid` (fetching the
    /// key set when needed), issuer, audience, times and the signed-in account.
    pub async fn verify_envelope(&self, envelope: &str) -> Result<VerifiedEnvelope, ClientError> {
        let account_id = self.account_id().await?;
        let mut expect = Expectations::new(self.issuer.clone(), self.audience.clone(), account_id);
        expect.leeway_secs = self.leeway_secs;
        Ok(envelope::verify_with(&self.jwks, envelope, &expect, self.clock.now_secs()).await?)
    }

    /// Reads the envelope from a push payload (the APNs notification JSON, or the FCM message or
    /// data map as JSON; see [`envelope::envelope_from_push`]) and verifies it.
    pub async fn handle_push(&self, payload: &str) -> Result<VerifiedEnvelope, ClientError> {
        let token = envelope::envelope_from_push(payload)?;
        self.verify_envelope(&token).await
    }

    /// Claims a delivery: the bridge returns its `FIDO:/` URL once, to this account only, before
    /// the deadline. Call it only after the user approved a verified envelope. Fails with
    /// [`ErrorCode::AlreadyUsed`] when it was claimed (or denied) before, [`ErrorCode::Expired`]
    /// after the deadline and [`ErrorCode::NotFound`] for another account's delivery.
    pub async fn claim(&self, delivery_id: &str) -> Result<ClaimedUrl, ClientError> {
        let query = "mutation($id: ID!, $c: ID) { claimDelivery(id: $id, companionId: $c) \
                     { fidoUrl delivery { id kind } } }";
        let claimed: ClaimData = self
            .execute(
                query,
                json!({"id": delivery_id, "c": self.companion_id()}),
                "claimDelivery",
            )
            .await?;
        if claimed.delivery.id != delivery_id {
            return Err(ClientError::Protocol(
                "claimDelivery returned another delivery".into(),
            ));
        }
        let parsed = hybrid::url::FidoUrl::parse(&claimed.fido_url)
            .map_err(|e| ClientError::InvalidFidoUrl(e.code()))?;
        if RequestKind::from_hybrid(parsed.request_type) != claimed.delivery.kind {
            return Err(ClientError::InvalidFidoUrl("request_type_mismatch"));
        }
        drop(parsed);
        Ok(ClaimedUrl {
            delivery_id: claimed.delivery.id,
            kind: claimed.delivery.kind,
            url: claimed.fido_url,
        })
    }

    /// Declines a delivery; the device learns it at once.
    pub async fn deny(
        &self,
        delivery_id: &str,
        reason: DenyReason,
    ) -> Result<Delivery, ClientError> {
        let query = doc(
            "mutation($id: ID!, $r: DenyReason!) { denyDelivery(id: $id, reason: $r) { {FIELDS} } }",
            DELIVERY_FIELDS,
        );
        self.execute(
            &query,
            json!({"id": delivery_id, "r": reason}),
            "denyDelivery",
        )
        .await
    }

    /// Follows a delivery's status (`deliveryStatus` subscription): the current state first,
    /// then each change; the stream ends after a final state.
    pub async fn watch_delivery(&self, delivery_id: &str) -> Result<DeliveryWatch, ClientError> {
        let query = doc(
            "subscription($id: ID!) { deliveryStatus(id: $id) { {FIELDS} } }",
            DELIVERY_FIELDS,
        );
        self.subscribe(&query, json!({"id": delivery_id}), "deliveryStatus")
            .await
    }

    /// Deliveries for the account as they arrive (`incomingDeliveries` subscription): first those
    /// already pending, then each new one once. For an app in the foreground, and for a bridge
    /// with the development push sink, which hands deliveries over this way instead of pushing.
    /// Verify each [`Delivery::envelope`] before showing it. The stream does not end by itself.
    pub async fn incoming_deliveries(&self) -> Result<DeliveryWatch, ClientError> {
        let query = doc(
            "subscription { incomingDeliveries { {FIELDS} } }",
            DELIVERY_FIELDS,
        );
        self.subscribe(&query, json!({}), "incomingDeliveries")
            .await
    }

    async fn subscribe(
        &self,
        query: &str,
        variables: Value,
        field: &'static str,
    ) -> Result<DeliveryWatch, ClientError> {
        let token = self.tokens.access_token().await?;
        let opening = self.open_subscription(&token, query, variables, field);
        tokio::time::timeout(self.request_timeout, opening)
            .await
            .map_err(|_| ClientError::Subscription("timed out opening the subscription".into()))?
    }

    async fn open_subscription(
        &self,
        token: &AccessToken,
        query: &str,
        variables: Value,
        field: &'static str,
    ) -> Result<DeliveryWatch, ClientError> {
        use reqwest::header;
        use tokio_tungstenite::tungstenite::handshake::client::generate_key;
        use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

        let key = generate_key();
        let response = self
            .endpoint
            .upgrade
            .get(self.endpoint.graphql.clone())
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, &key)
            .header(header::SEC_WEBSOCKET_PROTOCOL, SUBSCRIPTION_PROTOCOL)
            .send()
            .await
            .map_err(|e| ClientError::Transport(describe_reqwest_error(&e)))?;
        if response.status() != reqwest::StatusCode::SWITCHING_PROTOCOLS {
            return Err(ClientError::Http {
                status: response.status().as_u16(),
            });
        }
        let headers = response.headers();
        let accept_ok = headers
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|v| v.as_bytes() == derive_accept_key(key.as_bytes()).as_bytes());
        let protocol_ok = headers
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .is_some_and(|v| v.as_bytes() == SUBSCRIPTION_PROTOCOL.as_bytes());
        if !accept_ok || !protocol_ok {
            return Err(ClientError::Subscription(
                "the bridge did not accept a graphql-transport-ws WebSocket".into(),
            ));
        }
        let upgraded = response
            .upgrade()
            .await
            .map_err(|e| ClientError::Transport(describe_reqwest_error(&e)))?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_RESPONSE_BYTES))
            .max_frame_size(Some(MAX_RESPONSE_BYTES));
        let ws = WebSocketStream::from_raw_socket(upgraded, Role::Client, Some(config)).await;
        let mut watch = DeliveryWatch {
            ws,
            field,
            done: false,
        };
        let authorization = Zeroizing::new(format!("Bearer {}", token.expose()));
        let init = Zeroizing::new(
            json!({"type": "connection_init", "payload": {"authorization": authorization.as_str()}})
                .to_string(),
        );
        watch.send_text(init.as_str()).await?;
        loop {
            match watch.next_protocol_message().await? {
                Some(msg) if msg["type"] == "connection_ack" => break,
                Some(_) => {}
                None => {
                    return Err(ClientError::Subscription(
                        "closed before connection_ack".into(),
                    ));
                }
            }
        }
        let subscribe = json!({"id": "1", "type": "subscribe",
            "payload": {"query": query, "variables": variables}});
        watch.send_text(&subscribe.to_string()).await?;
        Ok(watch)
    }

    /// Runs one GraphQL operation and returns `data.<field>`, retrying once with a new token
    /// after `UNAUTHENTICATED`.
    async fn execute<T: DeserializeOwned>(
        &self,
        query: &str,
        variables: Value,
        field: &str,
    ) -> Result<T, ClientError> {
        let body = json!({"query": query, "variables": variables});
        let mut retried = false;
        loop {
            let token = self.tokens.access_token().await?;
            match self.post(&token, &body, field).await {
                Err(ClientError::Api(e)) if e.code == ErrorCode::Unauthenticated && !retried => {
                    tracing::debug!("bridge refused the access token; asking for a new one");
                    self.tokens.token_rejected(&token);
                    retried = true;
                }
                other => return other,
            }
        }
    }

    async fn post<T: DeserializeOwned>(
        &self,
        token: &AccessToken,
        body: &Value,
        field: &str,
    ) -> Result<T, ClientError> {
        let mut response = self
            .endpoint
            .http
            .post(self.endpoint.graphql.clone())
            .bearer_auth(token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| ClientError::Transport(describe_reqwest_error(&e)))?;
        let status = response.status();
        let capacity = response
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
            .min(MAX_RESPONSE_BYTES);
        // The body may hold a FIDO URL: keep it in one zeroized buffer.
        let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ClientError::Transport(describe_reqwest_error(&e)))?
        {
            if bytes.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
                return Err(ClientError::Protocol(format!(
                    "response larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let Ok(errors) = serde_json::from_slice::<ErrorsOnly>(&bytes) else {
            return Err(if status.is_success() {
                ClientError::Protocol("response is not GraphQL JSON".into())
            } else {
                ClientError::Http {
                    status: status.as_u16(),
                }
            });
        };
        if let Some(first) = errors.errors.and_then(|e| e.into_iter().next()) {
            return Err(ClientError::Api(first.into()));
        }
        if !status.is_success() {
            return Err(ClientError::Http {
                status: status.as_u16(),
            });
        }
        let data: DataOnly<T> = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("data.{field}: {e}")))?;
        data.data
            .and_then(|mut fields| fields.remove(field))
            .flatten()
            .ok_or_else(|| ClientError::Protocol(format!("no data.{field}")))
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------------

/// A subscription yielding deliveries: [`CompanionClient::watch_delivery`] (one delivery's
/// states) or [`CompanionClient::incoming_deliveries`] (new deliveries of the account).
pub struct DeliveryWatch {
    ws: WebSocketStream<reqwest::Upgraded>,
    /// The subscription field (`deliveryStatus` or `incomingDeliveries`).
    field: &'static str,
    done: bool,
}

impl fmt::Debug for DeliveryWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryWatch")
            .field("field", &self.field)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct NextPayload {
    #[serde(default)]
    data: Option<std::collections::HashMap<String, Delivery>>,
    #[serde(default)]
    errors: Option<Vec<GqlError>>,
}

impl DeliveryWatch {
    async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::Subscription(e.to_string()))
    }

    /// The next protocol message as JSON (answers `ping`); `None` once the socket closed.
    async fn next_protocol_message(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            let Some(frame) = self.ws.next().await else {
                return Ok(None);
            };
            let text = match frame.map_err(|e| ClientError::Subscription(e.to_string()))? {
                Message::Text(text) => text,
                Message::Close(_) => return Ok(None),
                Message::Binary(_) => {
                    return Err(ClientError::Subscription("unexpected binary frame".into()));
                }
                _ => continue,
            };
            let msg: Value = serde_json::from_str(text.as_str())
                .map_err(|_| ClientError::Subscription("message is not JSON".into()))?;
            if msg["type"] == "ping" {
                self.send_text(r#"{"type":"pong"}"#).await?;
                continue;
            }
            return Ok(Some(msg));
        }
    }

    /// The next delivery (state); `None` after a delivery's final state (or when the bridge
    /// closed the subscription). A refused subscription (e.g. `NOT_FOUND`) is a
    /// [`ClientError::Api`], after which the watch ends.
    pub async fn next(&mut self) -> Option<Result<Delivery, ClientError>> {
        if self.done {
            return None;
        }
        let result = self.next_inner().await;
        if !matches!(result, Some(Ok(_))) {
            self.done = true;
        }
        result
    }

    async fn next_inner(&mut self) -> Option<Result<Delivery, ClientError>> {
        loop {
            let msg = match self.next_protocol_message().await {
                Ok(Some(msg)) => msg,
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            if msg["id"] != "1" {
                continue;
            }
            match msg["type"].as_str() {
                Some("next") => {
                    let payload: NextPayload = match serde_json::from_value(msg["payload"].clone())
                    {
                        Ok(p) => p,
                        Err(e) => return Some(Err(ClientError::Protocol(e.to_string()))),
                    };
                    if let Some(first) = payload.errors.and_then(|e| e.into_iter().next()) {
                        return Some(Err(ClientError::Api(first.into())));
                    }
                    let field = self.field;
                    return Some(
                        payload
                            .data
                            .and_then(|mut d| d.remove(field))
                            .ok_or_else(|| ClientError::Protocol(format!("no data.{field}"))),
                    );
                }
                Some("error") => {
                    let errors: Vec<GqlError> =
                        serde_json::from_value(msg["payload"].clone()).unwrap_or_default();
                    let error = errors.into_iter().next().map_or_else(
                        || ClientError::Subscription("subscription refused".into()),
                        |e| ClientError::Api(e.into()),
                    );
                    return Some(Err(error));
                }
                Some("complete") => return None,
                _ => {}
            }
        }
    }

    /// Ends the subscription and closes the socket.
    pub async fn close(mut self) {
        if !self.done {
            let _ = self.send_text(r#"{"id":"1","type":"complete"}"#).await;
        }
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn endpoint(url: &str, danger: bool) -> Result<Endpoint, ClientError> {
        let mut config = BridgeConfig::new(url);
        config.danger_allow_plaintext_http = danger;
        Endpoint::new(&config)
    }

    #[test]
    fn plaintext_only_to_loopback_or_with_danger() {
        for ok in [
            "https://bridge.example.com",
            "http://127.0.0.1:8080",
            "http://127.8.9.1",
            "http://[::1]:9000/",
            "http://localhost:1234",
            "http://bridge.localhost",
        ] {
            endpoint(ok, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for refused in [
            "http://bridge.example.com",
            "http://10.0.0.1",
            "http://[::2]",
        ] {
            assert!(
                matches!(endpoint(refused, false), Err(ClientError::PlaintextHttp)),
                "{refused}"
            );
        }
        endpoint("http://bridge.example.com", true).unwrap();
        for bad in [
            "ftp://bridge.example.com",
            "bridge.example.com",
            "https://user:pw@bridge.example.com",
            "https://bridge.example.com/?x=1",
        ] {
            assert!(
                matches!(endpoint(bad, true), Err(ClientError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn urls_below_a_base_path() {
        let e = endpoint("https://example.com/tether", false).unwrap();
        assert_eq!(e.graphql.as_str(), "https://example.com/tether/graphql");
        assert_eq!(
            e.jwks.as_str(),
            "https://example.com/tether/.well-known/jwks.json"
        );
        let e = endpoint("https://example.com/", false).unwrap();
        assert_eq!(e.graphql.as_str(), "https://example.com/graphql");
        let mut config = BridgeConfig::new("https://example.com/");
        assert_eq!(config.effective_issuer(), "https://example.com");
        config.issuer = Some("https://public.example".into());
        assert_eq!(config.effective_issuer(), "https://public.example");
    }

    #[test]
    fn extra_ca_must_be_pem() {
        let mut config = BridgeConfig::new("https://example.com");
        config.extra_ca_pem = Some(b"not a certificate".to_vec());
        assert!(matches!(
            Endpoint::new(&config),
            Err(ClientError::Config(_))
        ));
    }

    #[test]
    fn secrets_are_redacted() {
        let url = ClaimedUrl {
            delivery_id: "dlv_1".into(),
            kind: RequestKind::SignIn,
            url: Zeroizing::new("FIDO:/123456".into()),
        };
        let text = format!("{url:?}");
        assert!(
            text.contains("[redacted]") && text.contains("dlv_1"),
            "{text}"
        );
        assert!(!text.contains("123456"));
        let token = AccessToken::new("secret-token");
        assert!(!format!("{token:?}").contains("secret"));
        let mut config = BridgeConfig::new("https://example.com");
        config.extra_ca_pem = Some(b"-----BEGIN CERTIFICATE-----".to_vec());
        assert!(!format!("{config:?}").contains("BEGIN"));
    }

    #[test]
    fn error_codes_round_trip() {
        for code in [
            "UNAUTHENTICATED",
            "FORBIDDEN",
            "NOT_FOUND",
            "EXPIRED",
            "ALREADY_USED",
            "RATE_LIMITED",
            "INVALID_INPUT",
            "NO_ACTIVE_COMPANION",
            "INTERNAL",
            "SOMETHING_NEW",
        ] {
            assert_eq!(ErrorCode::parse(code).as_str(), code);
        }
        assert_eq!(ErrorCode::parse("ALREADY_USED"), ErrorCode::AlreadyUsed);
        assert_eq!(
            ErrorCode::parse("SOMETHING_NEW"),
            ErrorCode::Other("SOMETHING_NEW".into())
        );
    }
}
