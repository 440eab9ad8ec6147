//! A fake Firebase Cloud Messaging HTTP v1 API with its own OAuth2 token endpoint.
//!
//! See the crate documentation for the checks. A message that passes every check consumes the next
//! scripted [`FcmReply`] for its registration token, or is answered `200` when the script is empty.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::FakeError;
use crate::server::{
    Body, BodyError, ConnHandle, FakeClock, Handler, Jws, Protocols, Server, random_bytes,
    read_body,
};
use crate::tls::{ALPN_H2_HTTP1, LOCAL_NAMES, TestCa};

/// Largest message JSON the fake accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The OAuth2 scope a token request must include.
pub const MESSAGING_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The JWT-bearer grant type of RFC 7523.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Lifetime of the access tokens the fake issues (as Google's `expires_in`).
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

const MAX_REQUEST_BYTES: usize = 64 * 1024;
const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";

/// What the fake FCM serves.
#[derive(Debug, Clone)]
pub struct FakeFcmConfig {
    /// The Firebase project id (in the send path and the key file).
    pub project_id: String,
}

/// A scripted answer to one accepted message for a registration token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FcmReply {
    /// `200 {"name": "projects/{id}/messages/…"}`.
    Ok,
    /// `404 NOT_FOUND`, FCM error `UNREGISTERED`.
    Unregistered,
    /// `400 INVALID_ARGUMENT` with a field violation on `message.token`.
    InvalidToken,
    /// `403 PERMISSION_DENIED`, FCM error `SENDER_ID_MISMATCH`.
    SenderIdMismatch,
    /// `429 RESOURCE_EXHAUSTED`, FCM error `QUOTA_EXCEEDED`, `retry-after` (seconds) when set.
    QuotaExceeded {
        /// Seconds for the `retry-after` header.
        retry_after: Option<u64>,
    },
    /// `500 INTERNAL`, FCM error `INTERNAL`.
    Internal,
    /// `503 UNAVAILABLE`, FCM error `UNAVAILABLE`, `retry-after` (seconds) when set.
    Unavailable {
        /// Seconds for the `retry-after` header.
        retry_after: Option<u64>,
    },
    /// Waits this long, then answers `200`.
    Delay(Duration),
    /// Closes the TCP connection without answering.
    DropConnection,
}

/// A `messages:send` request that passed every check.
#[derive(Debug, Clone)]
pub struct FcmMessage {
    /// The `message` object as sent.
    pub message: Value,
    /// The request's `validate_only` flag.
    pub validate_only: bool,
    /// `HTTP/2.0` or `HTTP/1.1`.
    pub http_version: String,
    /// When it arrived, by the fake's clock.
    pub received_at: SystemTime,
    /// The connection it arrived on (1 = the first connection accepted).
    pub connection: u64,
}

impl FcmMessage {
    /// The registration token the message targets, if it targets one.
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        self.message.get("token").and_then(Value::as_str)
    }
}

/// One `messages:send` answer (or dropped connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmAnswer {
    /// The registration token, when the message was parsed far enough to have one.
    pub token: Option<String>,
    /// HTTP status; `None` when the connection was dropped instead.
    pub status: Option<u16>,
    /// The `FcmError` `errorCode` when the answer carried one, else the Google status
    /// (`UNAUTHENTICATED`, `PERMISSION_DENIED`…); `None` on success.
    pub error_code: Option<String>,
    /// The connection it went out on.
    pub connection: u64,
}

/// One call to the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcmTokenRequest {
    /// Whether an access token was issued.
    pub granted: bool,
    /// The OAuth error code (`invalid_grant`…) when refused.
    pub error: Option<String>,
    /// When it arrived, by the fake's clock.
    pub received_at: SystemTime,
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<FcmReply>>,
    received: Vec<FcmMessage>,
    answers: Vec<FcmAnswer>,
    token_requests: Vec<FcmTokenRequest>,
    access_tokens: HashMap<String, SystemTime>,
}

struct Inner {
    project_id: String,
    client_email: String,
    private_key_id: String,
    token_uri: String,
    public_key: ParsedPublicKey,
    clock: FakeClock,
    state: Mutex<State>,
    answered: watch::Sender<usize>,
}

/// A running fake FCM server (send API and token endpoint) on `127.0.0.1`; stops when dropped.
pub struct FakeFcm {
    inner: Arc<Inner>,
    server: Server,
    ca_pem: String,
    service_account_json: String,
}

impl fmt::Debug for FakeFcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeFcm")
            .field("base_url", &self.base_url())
            .field("project_id", &self.inner.project_id)
            .finish_non_exhaustive()
    }
}

impl FakeFcm {
    /// Starts the fake on `127.0.0.1:0` with a fresh test CA and a fresh RSA-2048
    /// service-account key. Needs a tokio runtime.
    ///
    /// # Errors
    /// [`FakeError`] if the listener, key, certificate or TLS configuration cannot be made.
    pub async fn start(config: FakeFcmConfig) -> Result<Self, FakeError> {
        let ca = TestCa::new()?;
        let tls = ca.server_config(LOCAL_NAMES, ALPN_H2_HTTP1)?;
        let listener = Server::bind().await?;
        let port = listener.local_addr()?.port();
        let token_uri = format!("https://localhost:{port}/token");

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let public_key = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_raw())
            .map_err(|_| FakeError::InvalidKey("generated RSA key rejected"))?;
        let private_key_id = hex::encode(random_bytes(20));
        let client_id: String = random_bytes(21)
            .iter()
            .enumerate()
            .map(|(i, b)| char::from(if i == 0 { b'1' + b % 9 } else { b'0' + b % 10 }))
            .collect();
        let project_id = config.project_id;
        let client_email = format!("firebase-adminsdk-fbsvc@{project_id}.iam.gserviceaccount.com");
        let service_account_json = serde_json::to_string_pretty(&json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": private_key_id,
            "private_key": key.serialize_pem(),
            "client_email": client_email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                client_email.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com",
        }))
        .map_err(|_| FakeError::InvalidKey("cannot encode the key file"))?;

        let inner = Arc::new(Inner {
            project_id,
            client_email,
            private_key_id,
            token_uri,
            public_key,
            clock: FakeClock::default(),
            state: Mutex::new(State::default()),
            answered: watch::Sender::new(0),
        });
        let server = Server::start(listener, tls, Protocols::H2AndHttp1, Arc::clone(&inner))?;
        Ok(Self {
            inner,
            server,
            ca_pem: ca.ca_pem(),
            service_account_json,
        })
    }

    /// `https://localhost:PORT` (no trailing slash): the base of
    /// `/v1/projects/{project_id}/messages:send`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("https://localhost:{}", self.server.port())
    }

    /// `https://localhost:PORT/token`, the key file's `token_uri`.
    #[must_use]
    pub fn token_uri(&self) -> String {
        self.inner.token_uri.clone()
    }

    /// The PEM certificate of the CA that issued the fake's certificate.
    #[must_use]
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The service-account key file, as Google issues it (`type`, `project_id`,
    /// `private_key_id`, `private_key` as PKCS#8 PEM, `client_email`, `client_id`, `auth_uri`,
    /// `token_uri` = this fake, `auth_provider_x509_cert_url`, `client_x509_cert_url`,
    /// `universe_domain`). It contains the private key: keep it out of logs.
    #[must_use]
    pub fn service_account_json(&self) -> String {
        self.service_account_json.clone()
    }

    /// Appends replies to the script of a registration token.
    pub fn script(&self, token: &str, replies: impl IntoIterator<Item = FcmReply>) {
        self.inner
            .state()
            .scripts
            .entry(token.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Every `messages:send` request that passed the checks, in arrival order.
    #[must_use]
    pub fn received(&self) -> Vec<FcmMessage> {
        self.inner.state().received.clone()
    }

    /// Every `messages:send` answer, in order (including rejections and dropped connections).
    #[must_use]
    pub fn answers(&self) -> Vec<FcmAnswer> {
        self.inner.state().answers.clone()
    }

    /// Waits until at least `count` `messages:send` answers were given, then returns them all.
    /// Wrap it in `tokio::time::timeout`.
    pub async fn wait_for_answers(&self, count: usize) -> Vec<FcmAnswer> {
        let mut answered = self.inner.answered.subscribe();
        let _ = answered.wait_for(|n| *n >= count).await;
        self.answers()
    }

    /// Every call to the token endpoint, in order.
    #[must_use]
    pub fn token_requests(&self) -> Vec<FcmTokenRequest> {
        self.inner.state().token_requests.clone()
    }

    /// TCP connections accepted so far (token endpoint and send API share the server).
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }

    /// Moves the fake's clock forward (assertion `iat`/`exp` and access-token expiry are judged
    /// by it).
    pub fn advance_clock(&self, by: Duration) {
        self.inner.clock.advance(by);
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

/// A field that failed proto-JSON parsing or FCM validation.
struct Violation {
    field: String,
    description: String,
}

impl Violation {
    fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record_answer(&self, answer: FcmAnswer) {
        let count = {
            let mut state = self.state();
            state.answers.push(answer);
            state.answers.len()
        };
        self.answered.send_replace(count);
    }

    // ---- token endpoint ----

    async fn token_endpoint(&self, req: Request<Incoming>) -> Response<Body> {
        let result = self.grant(req).await;
        let received_at = self.clock.now();
        let (granted, error) = match &result {
            Ok(_) => (true, None),
            Err((code, _)) => (false, Some((*code).to_owned())),
        };
        self.state().token_requests.push(FcmTokenRequest {
            granted,
            error,
            received_at,
        });
        match result {
            Ok(access_token) => crate::server::json(
                StatusCode::OK,
                &json!({
                    "access_token": access_token,
                    "expires_in": ACCESS_TOKEN_LIFETIME.as_secs(),
                    "token_type": "Bearer",
                }),
            ),
            Err((error, description)) => crate::server::json(
                StatusCode::BAD_REQUEST,
                &json!({ "error": error, "error_description": description }),
            ),
        }
    }

    /// Checks a token request; returns the new access token or `(error, error_description)`.
    async fn grant(&self, req: Request<Incoming>) -> Result<String, (&'static str, String)> {
        let form_type = req
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form_type {
            return Err(("invalid_request", "Bad Request".to_owned()));
        }
        let body = read_body(req.into_body(), MAX_REQUEST_BYTES)
            .await
            .map_err(|_| ("invalid_request", "Bad Request".to_owned()))?;
        let mut grant_type = None;
        let mut assertion = None;
        for (name, value) in form_urlencoded::parse(&body) {
            match name.as_ref() {
                "grant_type" => grant_type = Some(value.into_owned()),
                "assertion" => assertion = Some(value.into_owned()),
                _ => {}
            }
        }
        let grant_type = grant_type.unwrap_or_default();
        if grant_type != JWT_BEARER_GRANT {
            return Err((
                "unsupported_grant_type",
                format!("Invalid grant_type: {grant_type}"),
            ));
        }
        let assertion = assertion.ok_or((
            "invalid_request",
            "Missing required parameter: assertion".to_owned(),
        ))?;

        let bad_signature = || ("invalid_grant", "Invalid JWT Signature.".to_owned());
        let jws = Jws::parse(&assertion).ok_or_else(bad_signature)?;
        if jws.header_str("alg") != Some("RS256")
            || jws
                .header
                .get("kid")
                .is_some_and(|kid| kid.as_str() != Some(self.private_key_id.as_str()))
        {
            return Err(bad_signature());
        }
        self.public_key
            .verify_sig(jws.signing_input.as_bytes(), &jws.signature)
            .map_err(|_| bad_signature())?;
        if jws.claim_str("iss") != Some(self.client_email.as_str()) {
            return Err((
                "invalid_grant",
                "Invalid grant: account not found".to_owned(),
            ));
        }
        if jws.claim_str("aud") != Some(self.token_uri.as_str()) {
            return Err((
                "invalid_grant",
                format!(
                    "Invalid JWT: Failed audience check. The right audience is {}",
                    self.token_uri
                ),
            ));
        }
        let now = self.clock.unix_secs();
        let short_lived = match (jws.claim_i64("iat"), jws.claim_i64("exp")) {
            (Some(iat), Some(exp)) => exp > now && exp - iat <= 3600 && iat <= now + 300,
            _ => false,
        };
        if !short_lived {
            return Err((
                "invalid_grant",
                "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
                 timeframe. Check your iat and exp values in the JWT claim."
                    .to_owned(),
            ));
        }
        let has_scope = jws
            .claim_str("scope")
            .is_some_and(|scope| scope.split(' ').any(|s| s == MESSAGING_SCOPE));
        if !has_scope {
            return Err((
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.".to_owned(),
            ));
        }

        let access_token = format!("ya29.{}", URL_SAFE_NO_PAD.encode(random_bytes(96)));
        let expires_at = self.clock.now() + ACCESS_TOKEN_LIFETIME;
        self.state()
            .access_tokens
            .insert(access_token.clone(), expires_at);
        Ok(access_token)
    }

    // ---- messages:send ----

    async fn send(&self, req: Request<Incoming>, conn: &ConnHandle) -> Response<Body> {
        let http_version = format!("{:?}", req.version());
        let checked = self.check_send(req).await;
        let (message, validate_only) = match checked {
            Ok(accepted) => accepted,
            Err((response, token, code)) => {
                self.record_answer(FcmAnswer {
                    token,
                    status: Some(response.status().as_u16()),
                    error_code: Some(code),
                    connection: conn.id(),
                });
                return response;
            }
        };
        let token = message
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let reply = {
            let mut state = self.state();
            state.received.push(FcmMessage {
                message,
                validate_only,
                http_version,
                received_at: self.clock.now(),
                connection: conn.id(),
            });
            token
                .as_ref()
                .and_then(|t| state.scripts.get_mut(t))
                .and_then(VecDeque::pop_front)
                .unwrap_or(FcmReply::Ok)
        };
        let (response, code) = match reply {
            FcmReply::Ok => (self.success(validate_only), None),
            FcmReply::Delay(delay) => {
                tokio::time::sleep(delay).await;
                (self.success(validate_only), None)
            }
            FcmReply::DropConnection => {
                self.record_answer(FcmAnswer {
                    token,
                    status: None,
                    error_code: None,
                    connection: conn.id(),
                });
                return conn.drop_connection().await;
            }
            FcmReply::Unregistered => fcm_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Requested entity was not found.",
                "UNREGISTERED",
            ),
            FcmReply::InvalidToken => invalid_argument(&Violation::new(
                "message.token",
                "The registration token is not a valid FCM registration token",
            )),
            FcmReply::SenderIdMismatch => fcm_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "SenderId mismatch",
                "SENDER_ID_MISMATCH",
            ),
            FcmReply::QuotaExceeded { retry_after } => with_retry_after(
                fcm_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for sending messages.",
                    "QUOTA_EXCEEDED",
                ),
                retry_after,
            ),
            FcmReply::Internal => fcm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "Internal error encountered.",
                "INTERNAL",
            ),
            FcmReply::Unavailable { retry_after } => with_retry_after(
                fcm_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UNAVAILABLE",
                    "The service is currently unavailable.",
                    "UNAVAILABLE",
                ),
                retry_after,
            ),
        };
        self.record_answer(FcmAnswer {
            token,
            status: Some(response.status().as_u16()),
            error_code: code,
            connection: conn.id(),
        });
        response
    }

    fn success(&self, validate_only: bool) -> Response<Body> {
        let id = if validate_only {
            "fake_message_id".to_owned()
        } else {
            let micros = self
                .clock
                .now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            format!("0:{micros}%{}", hex::encode(random_bytes(8)))
        };
        crate::server::json(
            StatusCode::OK,
            &json!({ "name": format!("projects/{}/messages/{id}", self.project_id) }),
        )
    }

    /// Checks auth, project and body; on failure returns the answer, the token if known and the
    /// recorded error code.
    async fn check_send(
        &self,
        req: Request<Incoming>,
    ) -> Result<(Value, bool), (Response<Body>, Option<String>, String)> {
        let fail = |(response, code): (Response<Body>, Option<&str>)| {
            let code = code.unwrap_or_default().to_owned();
            (response, None, code)
        };
        if req.method() != Method::POST {
            return Err(fail((
                google_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "METHOD_NOT_ALLOWED",
                    "Method not allowed.",
                    Vec::new(),
                ),
                Some("METHOD_NOT_ALLOWED"),
            )));
        }
        if !self.bearer_valid(req.headers().get(hyper::header::AUTHORIZATION)) {
            let mut response = google_error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                 login cookie or other valid authentication credential.",
                Vec::new(),
            );
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
                ),
            );
            return Err(fail((response, Some("UNAUTHENTICATED"))));
        }
        let project = req
            .uri()
            .path()
            .strip_prefix("/v1/projects/")
            .and_then(|rest| rest.strip_suffix("/messages:send"))
            .unwrap_or_default();
        if project != self.project_id {
            return Err(fail((
                google_error(
                    StatusCode::FORBIDDEN,
                    "PERMISSION_DENIED",
                    &format!(
                        "Permission 'cloudmessaging.messages.create' denied on resource \
                         '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may \
                         not exist)."
                    ),
                    Vec::new(),
                ),
                Some("PERMISSION_DENIED"),
            )));
        }
        let invalid = |violation: Violation, token: Option<String>| {
            let (response, code) = invalid_argument(&violation);
            (response, token, code.unwrap_or_default())
        };
        let body = match read_body(req.into_body(), MAX_REQUEST_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge | BodyError::Broken) => {
                return Err(invalid(
                    Violation::new("message", "Request payload size exceeds the limit."),
                    None,
                ));
            }
        };
        let request: Value = serde_json::from_slice(&body).map_err(|error| {
            invalid(
                Violation::new("", format!("Invalid JSON payload received. {error}")),
                None,
            )
        })?;
        let request = as_object(&request, "").map_err(|v| invalid(v, None))?;
        let mut message = None;
        let mut validate_only = false;
        for (name, value) in request {
            match canonical(name, &["message", "validate_only"]) {
                Some("message") => message = Some(value),
                Some(_) => {
                    validate_only = value.as_bool().ok_or_else(|| {
                        invalid(
                            Violation::new(
                                "validate_only",
                                format!("Invalid value at 'validate_only' (TYPE_BOOL), {value}"),
                            ),
                            None,
                        )
                    })?;
                }
                None => return Err(invalid(unknown_name(name, ""), None)),
            }
        }
        let message = message.filter(|m| !m.is_null()).ok_or_else(|| {
            invalid(
                Violation::new("message", "Request contains an invalid argument."),
                None,
            )
        })?;
        let token = message
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_owned);
        validate_message(message).map_err(|v| invalid(v, token.clone()))?;
        if message.to_string().len() > MAX_MESSAGE_BYTES {
            return Err(invalid(
                Violation::new(
                    "message",
                    format!("Message is too big (limit {MAX_MESSAGE_BYTES} bytes)."),
                ),
                token,
            ));
        }
        Ok((message.clone(), validate_only))
    }

    fn bearer_valid(&self, value: Option<&HeaderValue>) -> bool {
        let Some(value) = value.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((scheme, token)) = value.split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        let now = self.clock.now();
        self.state()
            .access_tokens
            .get(token.trim())
            .is_some_and(|expires_at| now < *expires_at)
    }
}

impl Handler for Inner {
    async fn handle(self: Arc<Self>, req: Request<Incoming>, conn: ConnHandle) -> Response<Body> {
        let path = req.uri().path();
        if path == "/token" {
            if req.method() != Method::POST {
                return crate::server::plain(StatusCode::METHOD_NOT_ALLOWED);
            }
            return self.token_endpoint(req).await;
        }
        if path.starts_with("/v1/projects/") && path.ends_with("/messages:send") {
            return self.send(req, &conn).await;
        }
        let response = google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Requested entity was not found.",
            Vec::new(),
        );
        self.record_answer(FcmAnswer {
            token: None,
            status: Some(404),
            error_code: Some("NOT_FOUND".to_owned()),
            connection: conn.id(),
        });
        response
    }
}

// ---- Google's error format ----

/// `{"error": {"code", "message", "status", "details"}}`.
fn google_error(
    status: StatusCode,
    google_status: &str,
    message: &str,
    details: Vec<Value>,
) -> Response<Body> {
    let mut error = json!({
        "code": status.as_u16(),
        "message": message,
        "status": google_status,
    });
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    crate::server::json(status, &json!({ "error": error }))
}

/// A Google error whose details carry an `FcmError`; returns the code for the record.
fn fcm_error(
    status: StatusCode,
    google_status: &str,
    message: &str,
    error_code: &str,
) -> (Response<Body>, Option<String>) {
    let details = vec![json!({ "@type": FCM_ERROR, "errorCode": error_code })];
    (
        google_error(status, google_status, message, details),
        Some(error_code.to_owned()),
    )
}

/// `400 INVALID_ARGUMENT` with a `BadRequest` field violation and an `FcmError`.
fn invalid_argument(violation: &Violation) -> (Response<Body>, Option<String>) {
    let details = vec![
        json!({
            "@type": BAD_REQUEST,
            "fieldViolations": [{ "field": violation.field, "description": violation.description }],
        }),
        json!({ "@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT" }),
    ];
    (
        google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            &violation.description,
            details,
        ),
        Some("INVALID_ARGUMENT".to_owned()),
    )
}

fn with_retry_after(
    (mut response, code): (Response<Body>, Option<String>),
    retry_after: Option<u64>,
) -> (Response<Body>, Option<String>) {
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    (response, code)
}

// ---- message validation (proto-JSON rules of google.firebase.fcm.v1.Message) ----

fn validate_message(message: &Value) -> Result<(), Violation> {
    const FIELDS: &[&str] = &[
        "name",
        "data",
        "notification",
        "android",
        "webpush",
        "apns",
        "fcm_options",
        "token",
        "topic",
        "condition",
    ];
    let message = as_object(message, "message")?;
    let mut target: Option<&str> = None;
    for (name, value) in present(message) {
        let Some(field) = canonical(name, FIELDS) else {
            return Err(unknown_name(name, "message"));
        };
        let path = format!("message.{field}");
        match field {
            "data" => check_string_map(value, &path)?,
            "notification" => check_string_fields(value, &path, &["title", "body", "image"])?,
            "android" => validate_android(value)?,
            "webpush" => {
                as_object(value, &path)?;
            }
            "apns" => validate_apns(value)?,
            "fcm_options" => check_string_fields(value, &path, &["analytics_label"])?,
            "token" | "topic" | "condition" => {
                let text = check_string(value, &path)?;
                if let Some(first) = target {
                    return Err(Violation::new(
                        "message",
                        format!(
                            "Invalid value at 'message' (oneof), oneof field 'target' is already \
                             set. Cannot set '{field}' (already set: '{first}')"
                        ),
                    ));
                }
                target = Some(field);
                if field == "token" && text.is_empty() {
                    return Err(Violation::new(
                        "message.token",
                        "The registration token is not a valid FCM registration token",
                    ));
                }
            }
            _ => {
                check_string(value, &path)?;
            }
        }
    }
    if target.is_none() {
        return Err(Violation::new(
            "message",
            "Recipient of the message is not set.",
        ));
    }
    Ok(())
}

fn validate_android(value: &Value) -> Result<(), Violation> {
    const FIELDS: &[&str] = &[
        "collapse_key",
        "priority",
        "ttl",
        "restricted_package_name",
        "data",
        "notification",
        "fcm_options",
        "direct_boot_ok",
        "bandwidth_constrained_ok",
        "restricted_satellite_ok",
    ];
    for (name, value) in present(as_object(value, "message.android")?) {
        let Some(field) = canonical(name, FIELDS) else {
            return Err(unknown_name(name, "message.android"));
        };
        let path = format!("message.android.{field}");
        match field {
            "priority" => {
                if !matches!(value.as_str(), Some("high" | "normal" | "HIGH" | "NORMAL")) {
                    return Err(Violation::new(
                        &path,
                        format!(
                            "Invalid value at '{path}' \
                             (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority), \
                             {value}"
                        ),
                    ));
                }
            }
            "ttl" => {
                if !value.as_str().is_some_and(is_duration) {
                    return Err(Violation::new(
                        &path,
                        format!(
                            "Invalid value at '{path}' (type.googleapis.com/google.protobuf.Duration), \
                             {value}"
                        ),
                    ));
                }
            }
            "data" => check_string_map(value, &path)?,
            "notification" => {
                as_object(value, &path)?;
            }
            "fcm_options" => check_string_fields(value, &path, &["analytics_label"])?,
            "direct_boot_ok" | "bandwidth_constrained_ok" | "restricted_satellite_ok" => {
                if !value.is_boolean() {
                    return Err(Violation::new(
                        &path,
                        format!("Invalid value at '{path}' (TYPE_BOOL), {value}"),
                    ));
                }
            }
            _ => {
                check_string(value, &path)?;
            }
        }
    }
    Ok(())
}

fn validate_apns(value: &Value) -> Result<(), Violation> {
    const FIELDS: &[&str] = &["headers", "payload", "fcm_options", "live_activity_token"];
    for (name, value) in present(as_object(value, "message.apns")?) {
        let Some(field) = canonical(name, FIELDS) else {
            return Err(unknown_name(name, "message.apns"));
        };
        let path = format!("message.apns.{field}");
        match field {
            "headers" => check_string_map(value, &path)?,
            "payload" => {
                as_object(value, &path)?;
            }
            "fcm_options" => check_string_fields(value, &path, &["analytics_label", "image"])?,
            _ => {
                check_string(value, &path)?;
            }
        }
    }
    Ok(())
}

/// The fields of an object whose value is not `null` (proto JSON treats `null` as absent).
fn present(object: &Map<String, Value>) -> impl Iterator<Item = (&String, &Value)> {
    object.iter().filter(|(_, value)| !value.is_null())
}

/// Maps a JSON name to its snake_case proto field name (proto JSON accepts both the field name
/// and its lowerCamelCase JSON name).
fn canonical(name: &str, fields: &[&'static str]) -> Option<&'static str> {
    fields
        .iter()
        .copied()
        .find(|field| *field == name || lower_camel(field) == name)
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn unknown_name(name: &str, at: &str) -> Violation {
    let field = if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    };
    let location = if at.is_empty() {
        String::new()
    } else {
        format!(" at '{at}'")
    };
    Violation::new(
        field,
        format!(
            "Invalid JSON payload received. Unknown name \"{name}\"{location}: Cannot find field."
        ),
    )
}

fn as_object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Violation> {
    value.as_object().ok_or_else(|| {
        Violation::new(
            path,
            format!("Invalid value at '{path}' (TYPE_MESSAGE), {value}"),
        )
    })
}

fn check_string<'a>(value: &'a Value, path: &str) -> Result<&'a str, Violation> {
    value.as_str().ok_or_else(|| {
        Violation::new(
            path,
            format!("Invalid value at '{path}' (TYPE_STRING), {value}"),
        )
    })
}

/// A `map<string, string>`: every value must be a string.
fn check_string_map(value: &Value, path: &str) -> Result<(), Violation> {
    for (index, (_, entry)) in as_object(value, path)?.iter().enumerate() {
        if !entry.is_string() {
            let field = format!("{path}[{index}].value");
            return Err(Violation::new(
                &field,
                format!("Invalid value at '{field}' (TYPE_STRING), {entry}"),
            ));
        }
    }
    Ok(())
}

/// An object whose known fields are all strings.
fn check_string_fields(
    value: &Value,
    path: &str,
    fields: &[&'static str],
) -> Result<(), Violation> {
    for (name, entry) in present(as_object(value, path)?) {
        let Some(field) = canonical(name, fields) else {
            return Err(unknown_name(name, path));
        };
        check_string(entry, &format!("{path}.{field}"))?;
    }
    Ok(())
}

/// A `google.protobuf.Duration` in JSON: whole seconds with up to nine fractional digits and an
/// `s` suffix (`"123s"`, `"1.5s"`); negative durations are refused (FCM has no use for them).
fn is_duration(text: &str) -> bool {
    let Some(number) = text.strip_suffix('s') else {
        return false;
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty()
        && whole.len() <= 12
        && digits(whole)
        && fraction.len() <= 9
        && digits(fraction)
        && !(number.contains('.') && fraction.is_empty())
}
