//! Test support for Tether's end-to-end tests: wire-faithful fake push providers and a test CA.
//!
//! The bridge's real push senders are tested against these fakes over real TLS on loopback; no
//! mock of our own traits stands in for the wire. Each fake listens on `127.0.0.1:0`, presents a
//! certificate from its own [`TestCa`] for `localhost` and `127.0.0.1`, and gives
//! its `base_url()` (`https://localhost:PORT`) and `ca_pem()` for the client to trust. Fakes stop
//! when dropped (their tasks are aborted) or on `shutdown()`.
//!
//! # [`FakeApns`]: Apple Push Notification service, token authentication
//! HTTP/2 only (ALPN `h2`). `POST /3/device/{token}`; checks, in this order, answering Apple's status
//! codes and `{"reason": ...}` bodies, with an `apns-id` header on every answer:
//! 1. method `POST` (405 `MethodNotAllowed`), path `/3/device/...` (404 `BadPath`);
//! 2. no repeated `apns-*` or `authorization` header (400 `DuplicateHeaders`);
//! 3. `authorization: bearer <JWT>`: missing → 403 `MissingProviderToken`; not a compact JWS, `alg`
//!    not `ES256`, `kid` not the configured key id, bad signature (P-256, verified with aws-lc-rs,
//!    independently of the JWT library the sender uses), `iss` not the team id or no integer `iat`
//!    → 403 `InvalidProviderToken`; `iat` more than one hour old → 403 `ExpiredProviderToken`;
//! 4. `apns-topic`: missing → 400 `MissingTopic`; not configured → 400 `TopicDisallowed`;
//! 5. device token: empty → 400 `MissingDeviceToken`; not 64–200 hex digits → 400 `BadDeviceToken`;
//! 6. `apns-push-type` must be `alert` (400 `InvalidPushType`); `apns-priority` absent or `10`,
//!    `5`, `1` (400 `BadPriority`); `apns-expiration` absent or an unsigned integer (400
//!    `BadExpirationDate`); `apns-collapse-id` at most 64 bytes (400 `BadCollapseId`); `apns-id`
//!    absent or a canonical UUID (400 `BadMessageId`), echoed back (a fresh one otherwise);
//! 7. payload: more than 4096 bytes → 413 `PayloadTooLarge`; empty, not JSON, not an object or
//!    without an `aps` object → 400 `PayloadEmpty` (Apple documents no reason for malformed JSON;
//!    this is the closest real one).
//!
//! # [`FakeFcm`]: Firebase Cloud Messaging HTTP v1 and Google's OAuth2 token endpoint
//! HTTP/2 and HTTP/1.1. Generates an RSA service-account key and serves its key file
//! (`service_account_json()`, `token_uri` pointing at the fake).
//! - `POST /token`, form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`:
//!   RS256 signature against the key (aws-lc-rs), `kid` (when present) = `private_key_id`, `iss` =
//!   `client_email`, `aud` = `token_uri`, `scope` includes `firebase.messaging`, `exp` in the future,
//!   `iat` at most five minutes ahead and `exp - iat <= 3600`. Answers `{"access_token":"ya29.…","expires_in":3599,"token_type":
//!   "Bearer"}` or Google's OAuth error (`400 {"error":"invalid_grant","error_description":…}`,
//!   `unsupported_grant_type`, `invalid_request`, `invalid_scope`).
//! - `POST /v1/projects/{project_id}/messages:send`: bearer must be an unexpired token this fake
//!   issued (401 `UNAUTHENTICATED`), project must match (403 `PERMISSION_DENIED`); body
//!   `{"message": {...}, "validate_only"?}` parsed like Google's proto JSON (unknown fields rejected;
//!   snake_case and camelCase names both accepted): exactly one of `token`/`topic`/`condition`,
//!   `data` values strings, `notification` fields strings, `android.ttl` a duration string
//!   (`"123s"`, `"1.5s"`), `android.priority` `high`/`normal` (or `HIGH`/`NORMAL`),
//!   `android.collapse_key` a string, `apns.headers` a map of strings, `apns.payload` an object;
//!   message JSON at most 4096 bytes. Invalid → 400 `INVALID_ARGUMENT` with `BadRequest`
//!   field violations and an `FcmError`. Success: `{"name":"projects/{id}/messages/…"}`.
//!
//! # Scripting and records
//! Both fakes take a per-token queue of scripted replies ([`ApnsReply`],
//! [`FcmReply`]), consumed one per request that passed every check, then answer
//! 200. Replies include provider errors (with `Retry-After` where the provider sends it), a delay, a
//! dropped connection and (APNs) an HTTP/2 GOAWAY. Both record the requests that passed the checks,
//! every answer, connections accepted and credentials seen, and can be awaited
//! (`wait_for_answers`) instead of slept on. For long load runs `FakeApns::keep_records(false)`
//! stops keeping records (counts go on), and each distinct provider JWT's signature is verified
//! once (its age on every request). `advance_clock` moves a fake's notion of time forward
//! so token expiry can be tested without waiting.
//!
//! # Choices
//! hyper 1 + hyper-util serve the connections (a handler can drop its connection or start a
//! graceful shutdown, which is how scripted drops and GOAWAYs work); tokio-rustls with the aws-lc-rs
//! provider terminates TLS; rcgen makes the CA, the server certificates and the RSA service-account
//! key (aws-lc-rs generated RSA-2048 in about 0.1 s in a debug build here, so no key is committed);
//! JWS signatures are checked with aws-lc-rs directly so a mistake shared with the sender's JWT
//! library cannot hide.

pub mod fake_apns;
pub mod fake_fcm;
pub mod tls;
pub mod world;

pub use fake_apns::{
    ApnsAnswer, ApnsReply, ApnsRequest, ApnsVerifyingKey, FakeApns, FakeApnsConfig,
    generate_provider_key,
};
pub use fake_fcm::{FakeFcm, FakeFcmConfig, FcmAnswer, FcmMessage, FcmReply, FcmTokenRequest};
pub use tls::TestCa;

/// Why a fake could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeError {
    /// Binding or inspecting the loopback listener failed.
    #[error("cannot listen on loopback: {0}")]
    Listen(#[from] std::io::Error),
    /// Generating a key or certificate failed.
    #[error("cannot make a test certificate or key: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls rejected the server configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A key given to a fake could not be parsed.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
}

/// Connection plumbing, JWS parsing and the clock shared by both fakes.
pub(crate) mod server {
    use std::convert::Infallible;
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, SystemTime};

    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use http_body_util::{BodyExt as _, Full, Limited};
    use hyper::body::{Bytes, Incoming};
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use rustls::ServerConfig;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{mpsc, oneshot};
    use tokio::task::{JoinHandle, JoinSet};
    use tokio_rustls::TlsAcceptor;

    use crate::FakeError;

    /// A response body.
    pub(crate) type Body = Full<Bytes>;

    /// What the fake answers a request with.
    pub(crate) trait Handler: Send + Sync + 'static {
        /// Answers one request that arrived on `conn`.
        fn handle(
            self: Arc<Self>,
            req: Request<Incoming>,
            conn: ConnHandle,
        ) -> impl Future<Output = Response<Body>> + Send;
    }

    /// Which HTTP versions a server speaks.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Protocols {
        /// HTTP/2 only.
        H2,
        /// HTTP/2 and HTTP/1.1.
        H2AndHttp1,
    }

    enum ConnCommand {
        Drop,
        GoAway(oneshot::Sender<()>),
    }

    /// A handler's grip on the connection its request arrived on.
    #[derive(Clone)]
    pub(crate) struct ConnHandle {
        id: u64,
        control: mpsc::Sender<ConnCommand>,
    }

    impl ConnHandle {
        /// The connection's number, from 1 in accept order.
        pub(crate) fn id(&self) -> u64 {
            self.id
        }

        /// Closes the connection (TCP close, no TLS close_notify, no HTTP answer) and waits until it
        /// is gone. The returned response is never sent.
        pub(crate) async fn drop_connection(&self) -> Response<Body> {
            if self.control.send(ConnCommand::Drop).await.is_ok() {
                self.control.closed().await;
            }
            plain(StatusCode::INTERNAL_SERVER_ERROR)
        }

        /// Starts a graceful shutdown of the connection (HTTP/2: GOAWAY) and waits until it is
        /// queued, so the GOAWAY goes out no later than the caller's answer.
        pub(crate) async fn go_away(&self) {
            let (ack, done) = oneshot::channel();
            if self.control.send(ConnCommand::GoAway(ack)).await.is_ok() {
                let _ = done.await;
            }
        }
    }

    /// A running accept loop; aborted on drop.
    pub(crate) struct Server {
        addr: SocketAddr,
        connections: Arc<AtomicU64>,
        task: JoinHandle<()>,
    }

    impl Server {
        /// Binds `127.0.0.1:0`; the port is known before the handler is built.
        pub(crate) async fn bind() -> Result<TcpListener, FakeError> {
            Ok(TcpListener::bind(("127.0.0.1", 0)).await?)
        }

        /// Serves every connection `listener` accepts with `handler`.
        pub(crate) fn start<H: Handler>(
            listener: TcpListener,
            tls: Arc<ServerConfig>,
            protocols: Protocols,
            handler: Arc<H>,
        ) -> Result<Self, FakeError> {
            let addr = listener.local_addr()?;
            let connections = Arc::new(AtomicU64::new(0));
            let acceptor = TlsAcceptor::from(tls);
            let task = tokio::spawn(accept_loop(
                listener,
                acceptor,
                protocols,
                handler,
                Arc::clone(&connections),
            ));
            Ok(Self {
                addr,
                connections,
                task,
            })
        }

        /// The port the server listens on.
        pub(crate) fn port(&self) -> u16 {
            self.addr.port()
        }

        /// TCP connections accepted so far.
        pub(crate) fn connections(&self) -> u64 {
            self.connections.load(Ordering::SeqCst)
        }

        /// Stops accepting and closes every connection; waits for the accept task to end.
        pub(crate) async fn shutdown(&mut self) {
            self.task.abort();
            let _ = (&mut self.task).await;
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn accept_loop<H: Handler>(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        protocols: Protocols,
        handler: Arc<H>,
        connections: Arc<AtomicU64>,
    ) {
        // Owning the connection tasks here means aborting this task closes every connection.
        let mut conns = JoinSet::new();
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "fake provider: accept failed");
                    // Back off briefly so a persistent error (EMFILE) does not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            while conns.try_join_next().is_some() {}
            let id = connections.fetch_add(1, Ordering::SeqCst) + 1;
            conns.spawn(serve_connection(
                stream,
                acceptor.clone(),
                protocols,
                Arc::clone(&handler),
                id,
            ));
        }
    }

    async fn serve_connection<H: Handler>(
        stream: TcpStream,
        acceptor: TlsAcceptor,
        protocols: Protocols,
        handler: Arc<H>,
        id: u64,
    ) {
        let _ = stream.set_nodelay(true);
        let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%error, "fake provider: TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let (control, mut commands) = mpsc::channel(8);
        let conn_handle = ConnHandle { id, control };
        let service = service_fn(move |req| {
            let handler = Arc::clone(&handler);
            let conn_handle = conn_handle.clone();
            async move { Ok::<_, Infallible>(handler.handle(req, conn_handle).await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().max_concurrent_streams(1000);
        if matches!(protocols, Protocols::H2) {
            builder = builder.http2_only();
        }
        let conn = builder.serve_connection(TokioIo::new(tls), service);
        tokio::pin!(conn);
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "fake provider: connection ended with an error");
                    }
                    break;
                }
                command = commands.recv() => match command {
                    // Dropping `conn` drops the socket: the peer sees the connection close.
                    Some(ConnCommand::Drop) => break,
                    Some(ConnCommand::GoAway(ack)) => {
                        conn.as_mut().graceful_shutdown();
                        let _ = ack.send(());
                    }
                    None => {
                        let _ = conn.as_mut().await;
                        break;
                    }
                },
            }
        }
    }

    /// Why a request body could not be read.
    pub(crate) enum BodyError {
        /// Longer than the limit.
        TooLarge,
        /// The peer reset the stream or the connection.
        Broken,
    }

    /// Reads a request body of at most `limit` bytes.
    pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(BodyError::TooLarge)
            }
            Err(_) => Err(BodyError::Broken),
        }
    }

    /// An empty response with `status`.
    pub(crate) fn plain(status: StatusCode) -> Response<Body> {
        let mut response = Response::new(Body::default());
        *response.status_mut() = status;
        response
    }

    /// A JSON response.
    pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
        let mut response = Response::new(Body::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        response
    }

    /// A decoded compact JWS (header and claims JSON objects, signature unverified).
    pub(crate) struct Jws {
        pub(crate) header: serde_json::Map<String, serde_json::Value>,
        pub(crate) claims: serde_json::Map<String, serde_json::Value>,
        /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes the signature covers.
        pub(crate) signing_input: String,
        pub(crate) signature: Vec<u8>,
    }

    impl Jws {
        /// Splits and decodes a compact JWS; `None` if it is not three unpadded base64url parts
        /// with JSON object header and payload.
        pub(crate) fn parse(token: &str) -> Option<Self> {
            let mut parts = token.split('.');
            let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() {
                return None;
            }
            let header = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
            let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
            Some(Self {
                header,
                claims,
                signing_input: token[..token.len() - signature.len() - 1].to_owned(),
                signature: URL_SAFE_NO_PAD.decode(signature).ok()?,
            })
        }

        /// A string header parameter.
        pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
            self.header.get(name).and_then(serde_json::Value::as_str)
        }

        /// A string claim.
        pub(crate) fn claim_str(&self, name: &str) -> Option<&str> {
            self.claims.get(name).and_then(serde_json::Value::as_str)
        }

        /// An integer (NumericDate) claim.
        pub(crate) fn claim_i64(&self, name: &str) -> Option<i64> {
            self.claims.get(name).and_then(serde_json::Value::as_i64)
        }
    }

    /// A wall clock that tests can move forward.
    #[derive(Debug, Default)]
    pub(crate) struct FakeClock {
        offset_millis: AtomicU64,
    }

    impl FakeClock {
        /// Real time plus every advance so far.
        pub(crate) fn now(&self) -> SystemTime {
            SystemTime::now() + Duration::from_millis(self.offset_millis.load(Ordering::SeqCst))
        }

        /// Seconds since the Unix epoch.
        pub(crate) fn unix_secs(&self) -> i64 {
            self.now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        }

        /// Moves the clock forward.
        pub(crate) fn advance(&self, by: Duration) {
            let millis = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
            self.offset_millis.fetch_add(millis, Ordering::SeqCst);
        }
    }

    /// `len` random bytes.
    pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
        let mut bytes = vec![0; len];
        // aws-lc's DRBG does not fail once initialised; zeros would still be a usable test value.
        let _ = aws_lc_rs::rand::fill(&mut bytes);
        bytes
    }
}
