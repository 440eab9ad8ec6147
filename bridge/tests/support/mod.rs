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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    http: reqwest::Client,
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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
        let store = match db {
            Db::Sqlite => Store::connect(&config.database_url(), 4).await.unwrap(),
            Db::Postgres => {
                let url = std::env::var("TETHER_TEST_DATABASE_URL").unwrap();
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                Store::connect_with_schema(&url, 4, Some(&schema))
                    .await
                    .unwrap()
            }
        };
        let clock = ManualClock::new(T0_MS);
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
