//! Crash safety: a real bridge process killed with SIGKILL between accepting sign-in requests
//! and recording their pushes as sent loses nothing. After a restart every push goes out (with
//! the same collapse id if it is sent twice) and every delivery reaches `SENT`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bridge::auth::device::mint_device_token;
use serde_json::{Value, json};
use support::{
    CONFIRM_PAIRING, PUBLIC_URL, REQUEST_SIGN_IN, START_PAIRING, TestDevice, fido_url_at,
};
use tether_tests::fake_apns::{ApnsReply, FakeApns, FakeApnsConfig, generate_provider_key};

const TOPIC: &str = "com.example.tether";

struct Process {
    child: Child,
}

impl Process {
    fn start(config: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_bridge"))
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child }
    }

    fn kill(&mut self) {
        // SIGKILL: no shutdown hook, no flush.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    async fn wait_healthy(&self) {
        for _ in 0..300 {
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("bridge did not become ready");
    }
}

fn device_token(device: &TestDevice, kid: &str) -> String {
    let jti = uuid::Uuid::new_v4().simple().to_string();
    mint_device_token(&device.key, kid, PUBLIC_URL, now_secs(), 120, &jti).unwrap()
}

fn dev_token(config: &Path, account: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_bridge"))
        .arg("--config")
        .arg(config)
        .args(["dev-token", "--account", account])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn statuses(client: &Client, device: &TestDevice, ids: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let resp = client
            .gql(
                Some(&device_token(device, device.id.as_deref().unwrap())),
                "query($id: ID!) { delivery(id: $id) { status } }",
                json!({"id": id}),
            )
            .await;
        out.push(
            resp["data"]["delivery"]["status"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
        );
    }
    out
}

#[tokio::test]
async fn sigkill_between_accept_and_sent_loses_nothing() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("tether-crash-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (p8, verifying_key) = generate_provider_key().unwrap();
    let apns = FakeApns::start(FakeApnsConfig {
        team_id: "TEAM123456".into(),
        key_id: "KEY1234567".into(),
        verifying_key,
        topics: vec![TOPIC.into()],
    })
    .await
    .unwrap();
    std::fs::write(dir.join("apns.p8"), p8).unwrap();
    std::fs::write(dir.join("ca.pem"), apns.ca_pem()).unwrap();
    let port = free_port();
    let config = dir.join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
public_url = "{PUBLIC_URL}"
data_dir = "{dir}"

[push]
sink = "providers"

[push.apns]
endpoint = "{endpoint}"
team_id = "TEAM123456"
key_id = "KEY1234567"
key_file = "{dir}/apns.p8"
ca_file = "{dir}/ca.pem"

[push.worker]
lease_secs = 2
"#,
            dir = dir.display(),
            endpoint = apns.base_url(),
        ),
    )
    .unwrap();
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };

    let mut bridge = Process::start(&config);
    client.wait_healthy().await;
    let companion = dev_token(&config, "alice");
    let token = "ab".repeat(32);
    let resp = client
        .gql(
            Some(&companion),
            "mutation($i: RegisterCompanionInput!) { registerCompanion(input: $i) { id } }",
            json!({"i": {"platform": "APNS", "pushToken": token, "appId": TOPIC, "displayName": "Alice's iPhone"}}),
        )
        .await;
    assert!(resp["errors"].is_null(), "{resp}");
    let mut device = TestDevice::new();
    let resp = client
        .gql(None, START_PAIRING, json!({"i": {"publicKey": device.public_key_b64(), "proof": device_token(&device, "pairing"), "name": "Living room", "model": "Quest 3"}}))
        .await;
    let code = resp["data"]["startPairing"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    device.id = Some(
        resp["data"]["startPairing"]["deviceId"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let resp = client
        .gql(
            Some(&companion),
            CONFIRM_PAIRING,
            json!({"c": code, "n": null}),
        )
        .await;
    assert_eq!(resp["data"]["confirmPairing"]["status"], "ACTIVE", "{resp}");

    let mut ids = Vec::new();
    let request = async |client: &Client, key: String| -> String {
        let resp = client
            .gql(
                Some(&device_token(&device, device.id.as_deref().unwrap())),
                REQUEST_SIGN_IN,
                json!({"i": {"fidoUrl": fido_url_at(now_secs(), hybrid::url::RequestType::GetAssertion), "rpId": "example.com", "idempotencyKey": key}}),
            )
            .await;
        resp["data"]["requestSignIn"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{resp}"))
            .to_owned()
    };

    // Kill point 1: pushes in flight. The fake holds every answer for ten seconds.
    apns.script(
        &token,
        std::iter::repeat_n(ApnsReply::Delay(Duration::from_secs(10)), 4),
    );
    for i in 0..4 {
        ids.push(request(&client, format!("inflight-{i}")).await);
    }
    for _ in 0..200 {
        if apns.received().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(apns.received().len(), 4, "pushes should be in flight");
    bridge.kill();

    // Kill point 2: requests accepted, killed at once (before, during or after the push).
    let mut bridge = Process::start(&config);
    client.wait_healthy().await;
    for i in 0..4 {
        ids.push(request(&client, format!("accepted-{i}")).await);
    }
    bridge.kill();

    // Restart: every delivery is sent, none lost.
    let _bridge = Process::start(&config);
    client.wait_healthy().await;
    let mut last = Vec::new();
    for _ in 0..400 {
        last = statuses(&client, &device, &ids).await;
        if last.iter().all(|s| s == "SENT") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.iter().all(|s| s == "SENT"), "{last:?}");
    // Every delivery reached the phone at least once; any repeat carries the same collapse id.
    let received = apns.received();
    for id in &ids {
        let copies: Vec<_> = received
            .iter()
            .filter(|r| r.payload["delivery_id"] == id.as_str())
            .collect();
        assert!(!copies.is_empty(), "{id} never pushed");
        assert!(
            copies
                .iter()
                .all(|r| r.header("apns-collapse-id") == Some(id.as_str()))
        );
    }
    // The in-flight ones were sent again after the lease lapsed: exactly twice.
    for id in &ids[..4] {
        let n = received
            .iter()
            .filter(|r| r.payload["delivery_id"] == id.as_str())
            .count();
        assert_eq!(n, 2, "{id}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
