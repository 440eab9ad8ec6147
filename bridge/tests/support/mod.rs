//! Test support: a real bridge on 127.0.0.1:0 with a manual clock, on SQLite or PostgreSQL, and
//! small HTTP and WebSocket GraphQL clients.
//!
//! PostgreSQL runs when `TETHER_TEST_DATABASE_URL` is set (CI always sets it); under `CI=true`
//! a missing URL is an error, never a silent skip. Each PostgreSQL test gets its own schema.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bridge::auth::device::mint_device_token;
use bridge::clock::{Clock, ManualClock};
use bridge::config::Config;
use bridge::state::AppState;
use bridge::store::Store;
use futures_util::{SinkExt, StreamExt};
use p256::SecretKey;
use p256::elliptic_curve::Generate;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Start time of every test clock: 2026-11-22T00:00:00Z.
pub const T0_MS: i64 = 1_795_305_600_000;
/// The audience of device and development tokens in tests.
pub const PUBLIC_URL: &str = "http://bridge.test";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The databases every store test must run on.
pub fn databases() -> Vec<Db> {
    match std::env::var("TETHER_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => vec![Db::Sqlite, Db::Postgres],
        _ => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must set TETHER_TEST_DATABASE_URL: PostgreSQL tests are never skipped there"
            );
            eprintln!("note: TETHER_TEST_DATABASE_URL unset, PostgreSQL tests skipped locally");
            vec![Db::Sqlite]
        }
    }
}

/// A running bridge.
pub struct TestBridge {
    pub state: AppState,
    pub clock: ManualClock,
    pub addr: SocketAddr,
    pub db: Db,
    dir: PathBuf,
    /// PostgreSQL schema (`None` on SQLite).
    schema: Option<String>,
    /// Whether dropping this bridge removes `dir` (peers share their first bridge's).
    owns_dir: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: reqwest::Client,
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl TestBridge {
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, |_| {}).await
    }

    pub async fn start_with(db: Db, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tether-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = Config {
            data_dir: dir.clone(),
            public_url: PUBLIC_URL.into(),
            ..Config::default()
        };
        tweak(&mut config);
        let schema = (db == Db::Postgres).then(|| format!("t_{}", uuid::Uuid::new_v4().simple()));
        Self::launch(db, config, dir, schema, true, ManualClock::new(T0_MS)).await
    }

    /// A second bridge instance on the same database, data directory (keys) and clock, with
    /// its own workers: what an operator runs behind a load balancer.
    pub async fn peer(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.state.config.clone();
        tweak(&mut config);
        Self::launch(
            self.db,
            config,
            self.dir.clone(),
            self.schema.clone(),
            false,
            self.clock.clone(),
        )
        .await
    }

    async fn launch(
        db: Db,
        config: Config,
        dir: PathBuf,
        schema: Option<String>,
        owns_dir: bool,
        clock: ManualClock,
    ) -> Self {
        let store = match db {
            Db::Sqlite => Store::connect(&config.database_url(), 4).await.unwrap(),
            Db::Postgres => {
                let url = std::env::var("TETHER_TEST_DATABASE_URL").unwrap();
                Store::connect_with_schema(&url, 4, schema.as_deref())
                    .await
                    .unwrap()
            }
        };
        let state = AppState::with_store(config, store, Arc::new(clock.clone()))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = state.clone();
        tokio::spawn(async move {
            bridge::serve(listener, serving, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            state,
            clock,
            addr,
            db,
            dir,
            schema,
            owns_dir,
            stop: Some(stop),
            http: reqwest::Client::new(),
        }
    }

    pub fn now_secs(&self) -> i64 {
        self.clock.now_secs()
    }

    /// A companion access token for `account` from the development issuer.
    pub fn companion_token(&self, account: &str) -> String {
        self.state
            .dev_issuer
            .as_ref()
            .unwrap()
            .mint(account, PUBLIC_URL, self.now_secs(), 3600)
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a GraphQL request; returns the JSON response.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        resp.json().await.unwrap()
    }

    /// Runs the expiry sweeper once.
    pub async fn sweep(&self) {
        bridge::worker::sweep(&self.state).await.unwrap();
    }

    /// Opens a `graphql-transport-ws` subscription.
    pub async fn subscribe(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Subscription {
        let mut request = format!("ws://{}/graphql", self.addr)
            .into_client_request()
            .unwrap();
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let init = match token {
            Some(t) => {
                json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {t}")}})
            }
            None => json!({"type": "connection_init", "payload": {}}),
        };
        ws.send(Message::text(init.to_string())).await.unwrap();
        loop {
            let msg = next_json(&mut ws).await.expect("connection_ack");
            if msg["type"] == "connection_ack" {
                break;
            }
        }
        let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}});
        ws.send(Message::text(sub.to_string())).await.unwrap();
        Subscription { ws }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .ok()??
            .ok()?;
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).ok(),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// An open subscription.
pub struct Subscription {
    ws: Ws,
}

impl Subscription {
    /// The next `next` payload's data, or the error/complete message as it came.
    pub async fn next(&mut self) -> Value {
        loop {
            let msg = next_json(&mut self.ws).await.expect("subscription message");
            match msg["type"].as_str() {
                Some("next") => return msg["payload"].clone(),
                Some("error") | Some("complete") => return msg,
                _ => {}
            }
        }
    }
}

/// A device: its key and the tokens it signs.
pub struct TestDevice {
    pub key: SecretKey,
    pub id: Option<String>,
}

impl TestDevice {
    pub fn new() -> Self {
        Self {
            key: SecretKey::generate(),
            id: None,
        }
    }

    pub fn public_key_b64(&self) -> String {
        bridge::auth::device::DevicePublicKey::from_sec1(
            p256::elliptic_curve::sec1::ToSec1Point::to_sec1_point(&self.key.public_key(), false)
                .as_bytes(),
        )
        .unwrap()
        .to_base64url()
    }

    /// A fresh token (new `jti`) for `kid` at the bridge's current time.
    pub fn token_for(&self, bridge: &TestBridge, kid: &str) -> String {
        let jti = uuid::Uuid::new_v4().simple().to_string();
        mint_device_token(&self.key, kid, PUBLIC_URL, bridge.now_secs(), 120, &jti).unwrap()
    }

    pub fn token(&self, bridge: &TestBridge) -> String {
        self.token_for(bridge, self.id.as_deref().expect("device paired"))
    }
}

/// Unwraps `data.<field>` or panics with the errors.
pub fn data<'a>(resp: &'a Value, field: &str) -> &'a Value {
    let v = &resp["data"][field];
    assert!(!v.is_null(), "no data.{field}: {resp}");
    v
}

/// The first error's code.
pub fn error_code(resp: &Value) -> String {
    resp["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {resp}"))
        .to_owned()
}

pub const START_PAIRING: &str = "mutation($i: StartPairingInput!) { startPairing(input: $i) { pairingId deviceId code expiresAt } }";
pub const CONFIRM_PAIRING: &str = "mutation($c: String!, $n: String) { confirmPairing(code: $c, name: $n) { id name model status } }";
pub const REGISTER_COMPANION: &str = "mutation($i: RegisterCompanionInput!) { registerCompanion(input: $i) { id platform appId displayName active } }";
pub const REQUEST_SIGN_IN: &str = "mutation($i: DeliveryInput!) { requestSignIn(input: $i) { id kind status reason rpId numberCode deviceId deviceName deviceModel envelope expiresAt createdAt } }";
pub const REQUEST_REGISTRATION: &str =
    "mutation($i: DeliveryInput!) { requestRegistration(input: $i) { id kind status } }";
pub const CLAIM: &str =
    "mutation($id: ID!) { claimDelivery(id: $id) { fidoUrl delivery { id status } } }";
pub const DENY: &str = "mutation($id: ID!, $r: DenyReason!) { denyDelivery(id: $id, reason: $r) { id status reason } }";
pub const COMPLETE: &str = "mutation($id: ID!, $o: DeliveryOutcome!) { completeDelivery(id: $id, outcome: $o) { id status reason } }";

/// Pairs a new device to `account` (with a companion registered) and returns it.
pub async fn paired_device(bridge: &TestBridge, account: &str) -> TestDevice {
    let mut device = TestDevice::new();
    let proof = device.token_for(bridge, "pairing");
    let resp = bridge
        .gql(None, START_PAIRING, json!({"i": {"publicKey": device.public_key_b64(), "proof": proof, "name": "Living room", "model": "Quest 3"}}))
        .await;
    let started = data(&resp, "startPairing");
    let code = started["code"].as_str().unwrap().to_owned();
    device.id = Some(started["deviceId"].as_str().unwrap().to_owned());
    let companion = bridge.companion_token(account);
    let resp = bridge
        .gql(
            Some(&companion),
            CONFIRM_PAIRING,
            json!({"c": code, "n": null}),
        )
        .await;
    assert_eq!(data(&resp, "confirmPairing")["status"], "ACTIVE", "{resp}");
    device
}

/// Registers a companion install for `account`.
pub async fn register_companion(bridge: &TestBridge, account: &str, token: &str) -> String {
    let companion = bridge.companion_token(account);
    let resp = bridge
        .gql(Some(&companion), REGISTER_COMPANION, json!({"i": {"platform": "APNS", "pushToken": token, "appId": "com.example.tether", "displayName": "Alice's iPhone"}}))
        .await;
    data(&resp, "registerCompanion")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A fresh client FIDO URL for a request type at the bridge's time.
pub fn fido_url(bridge: &TestBridge, request_type: hybrid::url::RequestType) -> String {
    let key = SecretKey::generate();
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).unwrap();
    hybrid::url::FidoUrl::new(
        key.public_key(),
        hybrid::QrSecret::new(secret),
        request_type,
        u64::try_from(bridge.now_secs()).unwrap(),
        true,
    )
    .encode()
}

pub fn sign_in_input(bridge: &TestBridge, key: &str) -> Value {
    json!({"i": {
        "fidoUrl": fido_url(bridge, hybrid::url::RequestType::GetAssertion),
        "rpId": "example.com",
        "idempotencyKey": key,
        "context": {"origin": "https://example.com", "userName": "alice"}
    }})
}

// ---------------------------------------------------------------------------------------------
// Helpers for the HTTP/WebSocket suites (isolation, companions, pairing, deliveries, lifecycle,
// limits, audit). Added below the original harness; nothing above changed.
// ---------------------------------------------------------------------------------------------

/// Every stable error code the API may return.
pub const ERROR_CODES: &[&str] = &[
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "EXPIRED",
    "ALREADY_USED",
    "RATE_LIMITED",
    "INVALID_INPUT",
    "NO_ACTIVE_COMPANION",
    "INTERNAL",
];

/// Text that would reveal internals (database, queries, code locations) in a client-visible
/// error message.
pub const INTERNAL_DETAIL: &[&str] = &[
    "sqlx",
    "SELECT ",
    "INSERT ",
    "UPDATE ",
    "DELETE ",
    "database",
    "Database",
    "postgres",
    "sqlite",
    "SQLite",
    "panicked",
    "backtrace",
    "src/",
    ".rs:",
    "RowNotFound",
    "PoolTimedOut",
];

/// Asserts that every error in a GraphQL response (HTTP body or WebSocket payload) has a stable
/// code and a message without internal detail.
pub fn assert_clean_errors(resp: &Value) {
    let Some(errors) = resp["errors"].as_array() else {
        return;
    };
    for e in errors {
        let code = e["extensions"]["code"].as_str().unwrap_or("");
        assert!(
            ERROR_CODES.contains(&code),
            "error without a stable code: {e}\nin {resp}"
        );
        let message = e["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "error without a message: {e}");
        let text = e.to_string();
        for word in INTERNAL_DETAIL {
            assert!(
                !text.contains(word),
                "error shows internal detail {word:?}: {e}"
            );
        }
    }
}

/// Asserts that `resp` failed with `code` (its first error), returned no data and has only
/// clean errors; returns the first error.
pub fn expect_error<'a>(resp: &'a Value, code: &str) -> &'a Value {
    let errors = resp["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("expected {code}, got no errors: {resp}"));
    assert!(!errors.is_empty(), "expected {code}: {resp}");
    let got = resp["errors"][0]["extensions"]["code"].as_str();
    assert_eq!(got, Some(code), "expected {code}: {resp}");
    let data = &resp["data"];
    let empty = data.is_null()
        || data
            .as_object()
            .is_some_and(|fields| fields.values().all(Value::is_null));
    assert!(empty, "an error response carried data: {resp}");
    assert_clean_errors(resp);
    &resp["errors"][0]
}

/// `retryAfterSeconds` of a `RATE_LIMITED` response.
pub fn retry_after(resp: &Value) -> u64 {
    expect_error(resp, "RATE_LIMITED");
    resp["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .unwrap_or_else(|| panic!("RATE_LIMITED without retryAfterSeconds: {resp}"))
}

/// A well-formed id with `prefix` that names nothing.
pub fn unknown_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub const ACCOUNT: &str = "{ account { id } }";
pub const COMPANIONS: &str =
    "{ companions { id platform appId displayName active createdAt updatedAt } }";
pub const DEVICES: &str = "{ devices { id name model status createdAt lastSeenAt } }";
pub const DEVICE: &str =
    "query($id: ID!) { device(id: $id) { id name model status createdAt lastSeenAt } }";
pub const PENDING: &str =
    "{ pendingDeliveries { id kind status rpId numberCode deviceId createdAt expiresAt } }";
pub const DELIVERY: &str = "query($id: ID!) { delivery(id: $id) { id kind status reason rpId numberCode deviceId deviceName deviceModel origin userName createdAt expiresAt updatedAt } }";
pub const PAIRING: &str = "query($id: ID!) { pairing(id: $id) { id status deviceId expiresAt } }";
pub const AUDIT: &str = "query($n: Int!, $a: String) { auditLog(first: $n, after: $a) { entries { id at actor event clientAddress outcome detail } nextCursor } }";
pub const UPDATE_TOKEN: &str = "mutation($id: ID!, $t: String!) { updatePushToken(id: $id, pushToken: $t) { id platform appId displayName active updatedAt } }";
pub const REMOVE_COMPANION: &str = "mutation($id: ID!) { removeCompanion(id: $id) }";
pub const RENAME: &str =
    "mutation($id: ID!, $n: String!) { renameDevice(id: $id, name: $n) { id name status } }";
pub const REVOKE: &str = "mutation($id: ID!) { revokeDevice(id: $id) { id status } }";
pub const CLAIM_AS: &str = "mutation($id: ID!, $c: ID) { claimDelivery(id: $id, companionId: $c) { fidoUrl delivery { id status } } }";
pub const DELIVERY_STATUS: &str =
    "subscription($id: ID!) { deliveryStatus(id: $id) { id status reason } }";
pub const PAIRING_STATUS: &str =
    "subscription($id: ID!) { pairingStatus(id: $id) { id status deviceId } }";
/// A device call that changes nothing: `NOT_FOUND` when the token is accepted.
pub const DEVICE_PING: &str = "query($id: ID!) { delivery(id: $id) { id } }";

/// What `startPairing` returned.
#[derive(Clone, Debug)]
pub struct PairingStarted {
    pub pairing_id: String,
    pub device_id: String,
    pub code: String,
    pub expires_at: String,
}

/// Starts pairing `device` (sets its id); panics unless it succeeds.
pub async fn start_pairing(bridge: &TestBridge, device: &mut TestDevice) -> PairingStarted {
    let resp = start_pairing_raw(bridge, device, &device.token_for(bridge, "pairing")).await;
    let s = data(&resp, "startPairing");
    let started = PairingStarted {
        pairing_id: s["pairingId"].as_str().unwrap().to_owned(),
        device_id: s["deviceId"].as_str().unwrap().to_owned(),
        code: s["code"].as_str().unwrap().to_owned(),
        expires_at: s["expiresAt"].as_str().unwrap().to_owned(),
    };
    device.id = Some(started.device_id.clone());
    started
}

/// `startPairing` with `device`'s public key and the given proof; the raw response.
pub async fn start_pairing_raw(bridge: &TestBridge, device: &TestDevice, proof: &str) -> Value {
    bridge
        .gql(
            None,
            START_PAIRING,
            json!({"i": {"publicKey": device.public_key_b64(), "proof": proof, "name": "Living room", "model": "Quest 3"}}),
        )
        .await
}

/// `confirmPairing` as `account`; the raw response.
pub async fn confirm_code(bridge: &TestBridge, account: &str, code: &str) -> Value {
    bridge
        .gql(
            Some(&bridge.companion_token(account)),
            CONFIRM_PAIRING,
            json!({"c": code, "n": null}),
        )
        .await
}

/// Pairs a new device to `account`; returns it with its (confirmed) pairing.
pub async fn pair(bridge: &TestBridge, account: &str) -> (TestDevice, PairingStarted) {
    let mut device = TestDevice::new();
    let started = start_pairing(bridge, &mut device).await;
    let resp = confirm_code(bridge, account, &started.code).await;
    assert_eq!(data(&resp, "confirmPairing")["status"], "ACTIVE", "{resp}");
    (device, started)
}

/// Requests a sign-in from `device` with a fresh URL; returns the delivery.
pub async fn request_sign_in(bridge: &TestBridge, device: &TestDevice, key: &str) -> Value {
    let resp = bridge
        .gql(
            Some(&device.token(bridge)),
            REQUEST_SIGN_IN,
            sign_in_input(bridge, key),
        )
        .await;
    data(&resp, "requestSignIn").clone()
}

/// The id string of a JSON object.
pub fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_owned()
}

/// The newest (up to 100) audit entries of `account`.
pub async fn audit_entries(bridge: &TestBridge, account: &str) -> Vec<Value> {
    let resp = bridge
        .gql(
            Some(&bridge.companion_token(account)),
            AUDIT,
            json!({"n": 100, "a": null}),
        )
        .await;
    data(&resp, "auditLog")["entries"]
        .as_array()
        .unwrap()
        .clone()
}

/// The audit entries with `event`.
pub fn entries_with<'a>(entries: &'a [Value], event: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["event"] == event).collect()
}

/// Rows in one of the bridge's tables (read directly: "nothing was stored" checks).
pub async fn count_rows(bridge: &TestBridge, table: &str) -> i64 {
    assert!(
        [
            "accounts",
            "companions",
            "devices",
            "pairings",
            "deliveries",
            "outbox",
            "audit_log"
        ]
        .contains(&table),
        "unknown table {table}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(bridge.state.store.pool())
        .await
        .unwrap();
    sqlx::Row::try_get::<i64, _>(&row, 0).unwrap()
}

/// The FIDO URL the database still holds for a delivery.
pub async fn stored_fido_url(bridge: &TestBridge, delivery_id: &str) -> Option<String> {
    let row = sqlx::query("SELECT fido_url FROM deliveries WHERE id = $1")
        .bind(delivery_id)
        .fetch_one(bridge.state.store.pool())
        .await
        .unwrap();
    sqlx::Row::try_get::<Option<String>, _>(&row, 0).unwrap()
}

/// A client FIDO URL with a chosen timestamp.
pub fn fido_url_at(unix_secs: i64, request_type: hybrid::url::RequestType) -> String {
    let key = SecretKey::generate();
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).unwrap();
    hybrid::url::FidoUrl::new(
        key.public_key(),
        hybrid::QrSecret::new(secret),
        request_type,
        u64::try_from(unix_secs).unwrap(),
        true,
    )
    .encode()
}

/// Polls `query` (as `token_fn()`) until `check` holds, for up to five seconds.
pub async fn wait_until(
    bridge: &TestBridge,
    token_fn: impl Fn() -> String,
    query: &str,
    variables: Value,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = bridge
            .gql(Some(&token_fn()), query, variables.clone())
            .await;
        if check(&resp) {
            return resp;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached: {resp}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestBridge {
    /// POSTs raw bytes to `/graphql` (JSON content type); returns the status and the body.
    pub async fn post_raw(&self, token: Option<&str>, body: Vec<u8>) -> (u16, String) {
        let mut req = self
            .http
            .post(self.url("/graphql"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// GETs a path; returns the status and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    /// Sends a raw HTTP/1.1 request (which must ask for `Connection: close`) over a fresh socket;
    /// returns the status and the (de-chunked) body.
    pub async fn raw_http(&self, request: &[u8]) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        // The server may answer (and close) before reading everything; ignore write errors.
        let _ = socket.write_all(request).await;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            let mut out = String::new();
            let mut rest = body;
            while let Some((size, after)) = rest.split_once("\r\n") {
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                if n == 0 || after.len() < n {
                    break;
                }
                out.push_str(&after[..n]);
                rest = after[n..].trim_start_matches("\r\n");
            }
            out
        } else {
            body.to_owned()
        };
        (status, body)
    }
}

impl Subscription {
    /// Starts another operation on the same connection.
    pub async fn start(&mut self, id: &str, query: &str, variables: Value) {
        let sub = json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}});
        self.ws.send(Message::text(sub.to_string())).await.unwrap();
    }

    /// The next `next`, `error` or `complete` message, or `None` once the server closed the
    /// connection (or nothing came within ten seconds).
    pub async fn try_next_message(&mut self) -> Option<Value> {
        loop {
            let msg = next_json(&mut self.ws).await?;
            if matches!(msg["type"].as_str(), Some("next" | "error" | "complete")) {
                return Some(msg);
            }
        }
    }

    /// The next `next`, `error` or `complete` message, whole (with its `id`).
    pub async fn next_message(&mut self) -> Value {
        loop {
            let msg = next_json(&mut self.ws).await.expect("subscription message");
            if matches!(msg["type"].as_str(), Some("next" | "error" | "complete")) {
                return msg;
            }
        }
    }
}

impl TestBridge {
    /// Runs the expiry sweeper at the bridge clock's current time, also when the background
    /// sweeper happens to be running: `worker::sweep` skips (returning `Ok(0)`) while another
    /// sweep holds the cluster-wide sweep lock, and that other sweep may have read the clock
    /// before the test advanced it. So: sweep, let any concurrent sweep finish, sweep again
    /// (sweeping is idempotent).
    pub async fn sweep_now(&self) {
        bridge::worker::sweep(&self.state).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        bridge::worker::sweep(&self.state).await.unwrap();
    }
}
