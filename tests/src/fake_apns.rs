//! A fake Apple Push Notification service (HTTP/2 provider API, token authentication).
//!
//! See the crate documentation for the checks, in order. Requests that pass every check consume
//! the next scripted [`ApnsReply`] for their device token, or are answered `200` when the script is
//! empty.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ParsedPublicKey};
use base64::Engine as _;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::watch;

use crate::FakeError;
use crate::server::{
    Body, BodyError, ConnHandle, FakeClock, Handler, Jws, Protocols, Server, json, read_body,
};
use crate::tls::{ALPN_H2, LOCAL_NAMES, TestCa};

/// Largest payload APNs accepts for an alert notification, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// How old a provider token may be before APNs answers `ExpiredProviderToken`.
pub const PROVIDER_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

const DEVICE_PATH: &str = "/3/device/";

/// The public half of an APNs token-signing key (the `.p8` key), used to verify provider JWTs.
#[derive(Clone)]
pub struct ApnsVerifyingKey {
    key: ParsedPublicKey,
}

impl fmt::Debug for ApnsVerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsVerifyingKey").finish_non_exhaustive()
    }
}

impl ApnsVerifyingKey {
    /// Parses a P-256 key from PEM: either the `.p8` file itself (`PRIVATE KEY`, PKCS#8; only its
    /// public half is kept) or a `PUBLIC KEY` (SubjectPublicKeyInfo).
    ///
    /// # Errors
    /// [`FakeError::InvalidKey`] if the PEM is neither, or the key is not on P-256.
    pub fn from_pem(pem: &str) -> Result<Self, FakeError> {
        if pem.contains("-----BEGIN PRIVATE KEY-----") {
            let pair = rcgen::KeyPair::from_pem(pem)
                .map_err(|_| FakeError::InvalidKey("not a PKCS#8 private key"))?;
            if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
                return Err(FakeError::InvalidKey("not a P-256 key"));
            }
            return Self::from_public_key_bytes(pair.public_key_raw());
        }
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|line| *line != "-----BEGIN PUBLIC KEY-----")
            .skip(1)
            .take_while(|line| *line != "-----END PUBLIC KEY-----")
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| FakeError::InvalidKey("PEM body is not base64"))?;
        Self::from_public_key_bytes(&der)
    }

    /// Takes a P-256 public key as a SEC1 point (65 bytes, `04 || x || y`) or a DER
    /// SubjectPublicKeyInfo.
    ///
    /// # Errors
    /// [`FakeError::InvalidKey`] if the bytes are not a valid P-256 public key.
    pub fn from_public_key_bytes(bytes: &[u8]) -> Result<Self, FakeError> {
        ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, bytes)
            .map(|key| Self { key })
            .map_err(|_| FakeError::InvalidKey("not a P-256 public key"))
    }
}

/// Generates a fresh APNs token-signing key: the `.p8` file content (PKCS#8 PEM, as Apple issues
/// it) and the matching verifying key for [`FakeApnsConfig`].
///
/// # Errors
/// [`FakeError::Certificate`] if key generation fails.
pub fn generate_provider_key() -> Result<(String, ApnsVerifyingKey), FakeError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let verifying_key = ApnsVerifyingKey::from_public_key_bytes(pair.public_key_raw())?;
    Ok((pair.serialize_pem(), verifying_key))
}

/// What the fake APNs accepts.
#[derive(Debug, Clone)]
pub struct FakeApnsConfig {
    /// The Apple team id the provider JWT's `iss` must carry.
    pub team_id: String,
    /// The key id the provider JWT header's `kid` must carry.
    pub key_id: String,
    /// The public half of the `.p8` key the JWTs are signed with.
    pub verifying_key: ApnsVerifyingKey,
    /// The `apns-topic` values (bundle ids) the team may push to.
    pub topics: Vec<String>,
}

/// A scripted answer to one accepted request for a device token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApnsReply {
    /// `200` with an empty body.
    Ok,
    /// `status` with `{"reason": reason}` (plus `timestamp` in milliseconds when `status` is 410),
    /// e.g. `410 Unregistered`, `400 BadDeviceToken`, `400 DeviceTokenNotForTopic`,
    /// `403 InvalidProviderToken`, `500 InternalServerError`, `503 ServiceUnavailable`.
    Status {
        /// HTTP status code.
        status: u16,
        /// Apple's `reason` string.
        reason: &'static str,
    },
    /// `429 {"reason":"TooManyRequests"}`, with a `retry-after` header (seconds) when set.
    TooManyRequests {
        /// Seconds for the `retry-after` header.
        retry_after: Option<u64>,
    },
    /// Waits this long, then answers `200`.
    Delay(Duration),
    /// Closes the TCP connection without answering (TLS close_notify is not sent either). Every
    /// other request in flight on the same HTTP/2 connection fails too.
    DropConnection,
    /// Starts a graceful shutdown of the connection (HTTP/2 GOAWAY, sent no later than the answer)
    /// and answers this request `503 {"reason":"Shutdown"}`; the connection closes once the
    /// streams in flight are done, so the next request needs a new connection.
    GoAway,
}

/// A request that passed every check.
#[derive(Clone)]
pub struct ApnsRequest {
    /// The device token from the path, as sent.
    pub device_token: String,
    /// Request headers, lower-case names (values that are not UTF-8 are converted lossily).
    pub headers: BTreeMap<String, String>,
    /// The payload.
    pub payload: serde_json::Value,
    /// When it arrived, by the fake's clock.
    pub received_at: SystemTime,
    /// The connection it arrived on (1 = the first connection accepted).
    pub connection: u64,
}

impl ApnsRequest {
    /// A header's value.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

impl fmt::Debug for ApnsRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: BTreeMap<&str, &str> = self
            .headers
            .iter()
            .map(|(name, value)| {
                let shown = if name == "authorization" {
                    "[redacted]"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("ApnsRequest")
            .field("device_token", &self.device_token)
            .field("headers", &headers)
            .field("payload", &self.payload)
            .field("received_at", &self.received_at)
            .field("connection", &self.connection)
            .finish()
    }
}

/// One answer the fake gave (or, for a dropped connection, did not give).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApnsAnswer {
    /// The device token from the path (empty if the path had none).
    pub device_token: String,
    /// HTTP status; `None` when the connection was dropped instead.
    pub status: Option<u16>,
    /// The `reason` in the body, if any.
    pub reason: Option<String>,
    /// The `apns-id` header sent back.
    pub apns_id: String,
    /// The connection it went out on.
    pub connection: u64,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<ApnsReply>>,
    received: Vec<ApnsRequest>,
    answers: Vec<ApnsAnswer>,
    answer_count: usize,
    /// Every provider JWT presented, with its `iat` when it verified (so each distinct token's
    /// signature is checked once; its age is checked on every request).
    provider_tokens: HashMap<String, Option<i64>>,
    /// Whether requests and answers are kept (counts always are).
    keep_records: bool,
}

struct Inner {
    config: FakeApnsConfig,
    clock: FakeClock,
    state: Mutex<State>,
    answered: watch::Sender<usize>,
}

/// A running fake APNs server on `127.0.0.1`; stops when dropped.
pub struct FakeApns {
    inner: Arc<Inner>,
    server: Server,
    ca_pem: String,
}

impl fmt::Debug for FakeApns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeApns")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl FakeApns {
    /// Starts the fake on `127.0.0.1:0` with a fresh test CA. Needs a tokio runtime.
    ///
    /// # Errors
    /// [`FakeError`] if the listener, certificate or TLS configuration cannot be made.
    pub async fn start(config: FakeApnsConfig) -> Result<Self, FakeError> {
        let ca = TestCa::new()?;
        let tls = ca.server_config(LOCAL_NAMES, ALPN_H2)?;
        let inner = Arc::new(Inner {
            config,
            clock: FakeClock::default(),
            state: Mutex::new(State {
                keep_records: true,
                ..State::default()
            }),
            answered: watch::Sender::new(0),
        });
        let listener = Server::bind().await?;
        let server = Server::start(listener, tls, Protocols::H2, Arc::clone(&inner))?;
        Ok(Self {
            inner,
            server,
            ca_pem: ca.ca_pem(),
        })
    }

    /// `https://localhost:PORT` (no trailing slash).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.server.port())
    }

    /// The PEM certificate of the CA that issued the fake's certificate.
    #[must_use]
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Appends replies to the script of `device_token` (matched case-insensitively).
    pub fn script(&self, device_token: &str, replies: impl IntoIterator<Item = ApnsReply>) {
        self.inner
            .state()
            .scripts
            .entry(device_token.to_ascii_lowercase())
            .or_default()
            .extend(replies);
    }

    /// Every request that passed the checks, in arrival order.
    #[must_use]
    pub fn received(&self) -> Vec<ApnsRequest> {
        self.inner.state().received.clone()
    }

    /// Every answer, in order (including rejections and dropped connections).
    #[must_use]
    pub fn answers(&self) -> Vec<ApnsAnswer> {
        self.inner.state().answers.clone()
    }

    /// How many answers were given (including dropped connections), records kept or not.
    #[must_use]
    pub fn answer_count(&self) -> usize {
        self.inner.state().answer_count
    }

    /// Keeps (`true`, the default) or stops keeping the records behind [`received`](Self::received)
    /// and [`answers`](Self::answers), for long load runs; counts are always kept.
    pub fn keep_records(&self, keep: bool) {
        self.inner.state().keep_records = keep;
    }

    /// Waits until at least `count` answers were given, then returns the recorded answers. Wrap
    /// it in `tokio::time::timeout`.
    pub async fn wait_for_answers(&self, count: usize) -> Vec<ApnsAnswer> {
        let mut answered = self.inner.answered.subscribe();
        let _ = answered.wait_for(|n| *n >= count).await;
        self.answers()
    }

    /// How many distinct provider JWTs were presented (valid or not).
    #[must_use]
    pub fn provider_tokens_seen(&self) -> usize {
        self.inner.state().provider_tokens.len()
    }

    /// TCP connections accepted so far.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }

    /// Moves the fake's clock forward (provider-token age is judged by it).
    pub fn advance_clock(&self, by: Duration) {
        self.inner.clock.advance(by);
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

/// A failed check: status and Apple's reason.
struct Rejection(StatusCode, &'static str);

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record_answer(&self, answer: ApnsAnswer) {
        let count = {
            let mut state = self.state();
            if state.keep_records {
                state.answers.push(answer);
            }
            state.answer_count += 1;
            state.answer_count
        };
        self.answered.send_replace(count);
    }

    /// Runs every check; on success returns the recorded request.
    async fn check(
        &self,
        req: Request<Incoming>,
        conn: &ConnHandle,
        device_token: &str,
    ) -> Result<ApnsRequest, Rejection> {
        if !req.uri().path().starts_with(DEVICE_PATH) {
            return Err(Rejection(StatusCode::NOT_FOUND, "BadPath"));
        }
        if req.method() != Method::POST {
            return Err(Rejection(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
            ));
        }
        let headers = req.headers();
        let duplicated = headers.keys().any(|name| {
            (name.as_str().starts_with("apns-") || name == hyper::header::AUTHORIZATION)
                && headers.get_all(name).iter().count() > 1
        });
        if duplicated {
            return Err(Rejection(StatusCode::BAD_REQUEST, "DuplicateHeaders"));
        }
        self.check_provider_token(headers.get(hyper::header::AUTHORIZATION))?;
        let topic = header_str(headers, "apns-topic")
            .ok_or(Rejection(StatusCode::BAD_REQUEST, "MissingTopic"))?;
        if !self.config.topics.iter().any(|t| t == topic) {
            return Err(Rejection(StatusCode::BAD_REQUEST, "TopicDisallowed"));
        }
        if device_token.is_empty() {
            return Err(Rejection(StatusCode::BAD_REQUEST, "MissingDeviceToken"));
        }
        if !(64..=200).contains(&device_token.len())
            || !device_token.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Rejection(StatusCode::BAD_REQUEST, "BadDeviceToken"));
        }
        if header_str(headers, "apns-push-type") != Some("alert") {
            return Err(Rejection(StatusCode::BAD_REQUEST, "InvalidPushType"));
        }
        if let Some(priority) = headers.get("apns-priority")
            && !matches!(priority.as_bytes(), b"10" | b"5" | b"1")
        {
            return Err(Rejection(StatusCode::BAD_REQUEST, "BadPriority"));
        }
        if let Some(expiration) = headers.get("apns-expiration")
            && !is_unsigned_integer(expiration.as_bytes())
        {
            return Err(Rejection(StatusCode::BAD_REQUEST, "BadExpirationDate"));
        }
        if headers
            .get("apns-collapse-id")
            .is_some_and(|id| id.len() > 64)
        {
            return Err(Rejection(StatusCode::BAD_REQUEST, "BadCollapseId"));
        }
        if headers
            .get("apns-id")
            .is_some_and(|id| !is_canonical_uuid(id.as_bytes()))
        {
            return Err(Rejection(StatusCode::BAD_REQUEST, "BadMessageId"));
        }

        let recorded_headers = header_map(headers);
        let body = match read_body(req.into_body(), MAX_PAYLOAD_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Err(Rejection(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"));
            }
            Err(BodyError::Broken) => {
                return Err(Rejection(StatusCode::BAD_REQUEST, "PayloadEmpty"));
            }
        };
        let payload: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| Rejection(StatusCode::BAD_REQUEST, "PayloadEmpty"))?;
        if !payload.get("aps").is_some_and(serde_json::Value::is_object) {
            return Err(Rejection(StatusCode::BAD_REQUEST, "PayloadEmpty"));
        }
        Ok(ApnsRequest {
            device_token: device_token.to_owned(),
            headers: recorded_headers,
            payload,
            received_at: self.clock.now(),
            connection: conn.id(),
        })
    }

    fn check_provider_token(&self, value: Option<&HeaderValue>) -> Result<(), Rejection> {
        let missing = Rejection(StatusCode::FORBIDDEN, "MissingProviderToken");
        let invalid = || Rejection(StatusCode::FORBIDDEN, "InvalidProviderToken");
        let value = value.ok_or(missing)?.to_str().map_err(|_| invalid())?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(invalid());
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(Rejection(StatusCode::FORBIDDEN, "MissingProviderToken"));
        }
        let known = self.state().provider_tokens.get(token).copied();
        let iat = match known {
            Some(iat) => iat,
            None => {
                let iat = self.verify_provider_token(token);
                self.state().provider_tokens.insert(token.to_owned(), iat);
                iat
            }
        }
        .ok_or_else(invalid)?;
        let lifetime = i64::try_from(PROVIDER_TOKEN_LIFETIME.as_secs()).unwrap_or(i64::MAX);
        if self.clock.unix_secs().saturating_sub(iat) > lifetime {
            return Err(Rejection(StatusCode::FORBIDDEN, "ExpiredProviderToken"));
        }
        Ok(())
    }

    /// Verifies a provider JWT's header, signature and `iss`; returns its `iat`.
    fn verify_provider_token(&self, token: &str) -> Option<i64> {
        let jws = Jws::parse(token)?;
        if jws.header_str("alg") != Some("ES256")
            || jws.header_str("kid") != Some(self.config.key_id.as_str())
        {
            return None;
        }
        self.config
            .verifying_key
            .key
            .verify_sig(jws.signing_input.as_bytes(), &jws.signature)
            .ok()?;
        if jws.claim_str("iss") != Some(self.config.team_id.as_str()) {
            return None;
        }
        jws.claim_i64("iat")
    }

    fn answer(
        &self,
        status: StatusCode,
        reason: Option<&str>,
        apns_id: &str,
        device_token: &str,
        conn: &ConnHandle,
    ) -> Response<Body> {
        self.record_answer(ApnsAnswer {
            device_token: device_token.to_owned(),
            status: Some(status.as_u16()),
            reason: reason.map(str::to_owned),
            apns_id: apns_id.to_owned(),
            connection: conn.id(),
        });
        let mut response = match reason {
            None => crate::server::plain(status),
            Some(reason) => {
                let mut body = serde_json::json!({ "reason": reason });
                if status == StatusCode::GONE {
                    let millis = self
                        .clock
                        .now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    body["timestamp"] = millis.into();
                }
                json(status, &body)
            }
        };
        if let Ok(value) = HeaderValue::from_str(apns_id) {
            response.headers_mut().insert("apns-id", value);
        }
        response
    }
}

impl Handler for Inner {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: ConnHandle) -> Response<Body> {
        let device_token = req
            .uri()
            .path()
            .strip_prefix(DEVICE_PATH)
            .unwrap_or_default()
            .to_owned();
        let apns_id = header_str(req.headers(), "apns-id")
            .filter(|id| is_canonical_uuid(id.as_bytes()))
            .map_or_else(
                || uuid::Uuid::new_v4().hyphenated().to_string(),
                str::to_owned,
            );

        let request = match self.check(req, &conn, &device_token).await {
            Ok(request) => request,
            Err(Rejection(status, reason)) => {
                return self.answer(status, Some(reason), &apns_id, &device_token, &conn);
            }
        };
        let reply = {
            let mut state = self.state();
            if state.keep_records {
                state.received.push(request);
            }
            state
                .scripts
                .get_mut(&device_token.to_ascii_lowercase())
                .and_then(VecDeque::pop_front)
                .unwrap_or(ApnsReply::Ok)
        };
        match reply {
            ApnsReply::Ok => self.answer(StatusCode::OK, None, &apns_id, &device_token, &conn),
            ApnsReply::Status { status, reason } => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                self.answer(status, Some(reason), &apns_id, &device_token, &conn)
            }
            ApnsReply::TooManyRequests { retry_after } => {
                let mut response = self.answer(
                    StatusCode::TOO_MANY_REQUESTS,
                    Some("TooManyRequests"),
                    &apns_id,
                    &device_token,
                    &conn,
                );
                if let Some(seconds) = retry_after {
                    response
                        .headers_mut()
                        .insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
                }
                response
            }
            ApnsReply::Delay(delay) => {
                tokio::time::sleep(delay).await;
                self.answer(StatusCode::OK, None, &apns_id, &device_token, &conn)
            }
            ApnsReply::DropConnection => {
                self.record_answer(ApnsAnswer {
                    device_token,
                    status: None,
                    reason: None,
                    apns_id,
                    connection: conn.id(),
                });
                conn.drop_connection().await
            }
            ApnsReply::GoAway => {
                conn.go_away().await;
                self.answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("Shutdown"),
                    &apns_id,
                    &device_token,
                    &conn,
                )
            }
        }
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map = BTreeMap::<String, String>::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_owned())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    map
}

fn is_unsigned_integer(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 20 && value.iter().all(u8::is_ascii_digit)
}

/// `8-4-4-4-12` hexadecimal digits, as Apple requires for `apns-id`.
fn is_canonical_uuid(value: &[u8]) -> bool {
    value.len() == 36
        && value.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}
