#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `device-agent pair | sign-in | register` as a user runs them: the real binary against a real
//! bridge (with its relay) in this process, a companion played by GraphQL calls under
//! development tokens, and a phone on the simulated BLE medium shared through a directory
//! (the three-program walkthrough). Exit codes and the one-line errors are asserted exactly.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use device_agent::device_key::{DeviceIdentity, PairedBridge};
use device_agent::tunnel::{self, HeaderMap, TunnelConfig};
use hybrid::Time;
use hybrid::authenticator::{self, Authenticator};
use hybrid::ctap::{CtapResponse, GetAssertionResponse, PublicKeyCredentialDescriptor};
use hybrid::domain::DomainId;
use hybrid::session::AuthenticatorTimeouts;
use hybrid::test_util::{ScriptedHandler, SeededRng};
use hybrid::url::FidoUrl;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tether_ble::sim::SimMedium;
use tether_ble::{Advert, ServiceUuid};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::Instant;

const ACCOUNT: &str = "alice";
const ORIGIN: &str = "https://example.com";
const RP_ID: &str = "example.com";
const CREDENTIAL_ID: [u8; 16] = [7; 16];
const DOMAIN_ID: DomainId = DomainId(256);
/// No wait in these tests may take longer than this.
const LIMIT: Duration = Duration::from_secs(30);
const NOT_PAIRED: &str =
    "error: this device is not paired with the bridge: run `device-agent pair --bridge URL` first";

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_device-agent"))
        .args(args)
        .env_remove("XDG_STATE_HOME")
        .output()
        .expect("device-agent runs")
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8(out.stderr.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A failure: `code`, nothing on stdout, exactly one line on stderr, starting with `prefix`.
fn assert_failure(out: &Output, code: i32, prefix: &str) -> String {
    let lines = stderr_lines(out);
    assert_eq!(out.status.code(), Some(code), "stderr: {lines:?}");
    assert!(out.stdout.is_empty(), "stdout: {:?}", out.stdout);
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].starts_with(prefix),
        "{:?} should start {prefix:?}",
        lines[0]
    );
    lines[0].clone()
}

fn sign_in_options() -> String {
    json!({
        "challenge": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "rpId": RP_ID,
        "allowCredentials": [{"type": "public-key", "id": URL_SAFE_NO_PAD.encode(CREDENTIAL_ID)}],
        "userVerification": "required",
    })
    .to_string()
}

/// A closed loopback port.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// Writes an identity paired with `bridge_url` into `state`.
fn paired_state(state: &Path, bridge_url: &str) {
    let mut identity = DeviceIdentity::create(state).unwrap();
    identity.set_paired(PairedBridge {
        bridge_url: bridge_url.to_owned(),
        device_id: "dev_0123456789abcdef0123456789abcdef".into(),
        audience: None,
    });
    identity.save(state).unwrap();
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    for args in [
        vec!["sign-in", "--origin", ORIGIN, "--state", state],
        vec!["register", "--options", "o.json", "--state", state],
        vec!["pair", "--state", state],
        vec![
            "sign-in",
            "--options",
            "o.json",
            "--origin",
            ORIGIN,
            "--ble",
            "radio",
        ],
        vec![
            "sign-in",
            "--options",
            "o.json",
            "--origin",
            ORIGIN,
            "--relay",
            "no-equals",
        ],
        vec![
            "sign-in",
            "--options",
            "o.json",
            "--origin",
            ORIGIN,
            "--rssi-floor",
            "loud",
        ],
        vec!["fly"],
    ] {
        let out = agent(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: "),
            "{args:?}"
        );
    }
    // A configuration the parser cannot judge: still exit 2, and one line.
    let out = agent(&[
        "pair",
        "--bridge",
        "ftp://bridge.example.com",
        "--state",
        state,
    ]);
    assert_failure(&out, 2, "error: configuration: bridge URL");
    let out = agent(&[
        "pair",
        "--bridge",
        "https://bridge.example.com",
        "--state",
        state,
        "--relay",
        "cable.example.com=ws://127.0.0.1:1",
    ]);
    assert_failure(&out, 2, "error: configuration: --relay cable.example.com");
    assert!(!dir.path().join("state").exists(), "nothing was created");
}

#[test]
fn not_paired_exits_4_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let options = dir.path().join("options.json");
    std::fs::write(&options, sign_in_options()).unwrap();
    let state = dir.path().join("state");
    let ble = format!("sim:{}", dir.path().join("ble").display());
    let args = [
        "sign-in",
        "--options",
        options.to_str().unwrap(),
        "--origin",
        ORIGIN,
        "--state",
        state.to_str().unwrap(),
        "--ble",
        &ble,
    ];
    let line = assert_failure(&agent(&args), 4, NOT_PAIRED);
    assert_eq!(line, NOT_PAIRED);

    // --json: an error event, then the same line.
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = agent(&json_args);
    assert_eq!(out.status.code(), Some(4));
    assert!(out.stdout.is_empty());
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let event: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(event["event"], "error");
    assert_eq!(event["error"], "not_paired");
    assert_eq!(event["exitCode"], 4);
    assert_eq!(lines[1], NOT_PAIRED);
}

#[test]
fn an_unreachable_bridge_exits_11() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = agent(&[
        "pair",
        "--bridge",
        &dead_url(),
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_failure(&out, 11, "error: bridge unreachable: ");

    // Signing in with a device paired to it (after the options were found valid).
    let options = dir.path().join("options.json");
    std::fs::write(&options, sign_in_options()).unwrap();
    let state = dir.path().join("paired");
    paired_state(&state, &dead_url());
    let ble = format!("sim:{}", dir.path().join("ble").display());
    let out = agent(&[
        "sign-in",
        "--options",
        options.to_str().unwrap(),
        "--origin",
        ORIGIN,
        "--state",
        state.to_str().unwrap(),
        "--ble",
        &ble,
    ]);
    assert_failure(&out, 11, "error: bridge unreachable: ");
}

#[test]
fn invalid_options_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    paired_state(&state, &dead_url());
    let ble = format!("sim:{}", dir.path().join("ble").display());
    let run = |options: &Path, origin: &str, command: &str| {
        agent(&[
            command,
            "--options",
            options.to_str().unwrap(),
            "--origin",
            origin,
            "--state",
            state.to_str().unwrap(),
            "--ble",
            &ble,
        ])
    };
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "this is not JSON").unwrap();
    assert_failure(
        &run(&garbage, ORIGIN, "sign-in"),
        3,
        "error: invalid options: WebAuthn options are not valid JSON",
    );
    let missing = dir.path().join("missing.json");
    let line = assert_failure(
        &run(&missing, ORIGIN, "sign-in"),
        3,
        "error: invalid options: ",
    );
    assert!(line.contains("cannot read"), "{line}");
    // Request options are not creation options.
    let options = dir.path().join("options.json");
    std::fs::write(&options, sign_in_options()).unwrap();
    assert_failure(
        &run(&options, ORIGIN, "register"),
        3,
        "error: invalid options: ",
    );
    // The RP id does not belong to the origin.
    assert_failure(
        &run(&options, "https://evil.example.net", "sign-in"),
        3,
        "error: invalid options: ",
    );
}

// ------------------------------------------------------------------------------------------
// Against a bridge.

/// A bridge (and relay) on 127.0.0.1:0 whose public URL is its real address.
struct TestBridge {
    addr: SocketAddr,
    state: bridge::state::AppState,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestBridge {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = bridge::config::Config {
            data_dir: dir.path().to_path_buf(),
            public_url: format!("http://{addr}"),
            ..bridge::config::Config::default()
        };
        let state = bridge::state::AppState::build(config, Arc::new(bridge::clock::SystemClock))
            .await
            .unwrap();
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
            addr,
            state,
            http: reqwest::Client::new(),
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A GraphQL call as the account's companion; `data.<field>` of the answer.
    async fn companion(&self, query: &str, variables: Value, field: &str) -> Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = self
            .state
            .dev_issuer
            .as_ref()
            .unwrap()
            .mint(ACCOUNT, &self.url(), i64::try_from(now).unwrap(), 3600)
            .unwrap();
        let resp: Value = self
            .http
            .post(format!("{}/graphql", self.url()))
            .bearer_auth(token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = &resp["data"][field];
        assert!(!data.is_null(), "no data.{field}: {resp}");
        data.clone()
    }

    async fn register_companion(&self) {
        self.companion(
            "mutation($i: RegisterCompanionInput!) { registerCompanion(input: $i) { id } }",
            json!({"i": {"platform": "APNS", "pushToken": "token-1", "appId": "com.example.tether", "displayName": "Alice's phone"}}),
            "registerCompanion",
        )
        .await;
    }

    async fn delivery(&self, id: &str) -> Value {
        self.companion(
            "query($id: ID!) { delivery(id: $id) { id status reason } }",
            json!({"id": id}),
            "delivery",
        )
        .await
    }
}

/// The agent binary running in the background, its stderr read line by line.
struct Running {
    child: tokio::process::Child,
    lines: UnboundedReceiver<String>,
    stderr: Vec<String>,
}

impl Running {
    fn spawn(args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_device-agent"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("device-agent starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// Waits for the first stderr line that `pick` maps to a value.
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + LIMIT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .expect("the line comes in time")
                .unwrap_or_else(|| panic!("the agent ended first; stderr: {:?}", self.stderr));
            let picked = pick(&line);
            self.stderr.push(line);
            if let Some(value) = picked {
                return value;
            }
        }
    }

    /// Waits for a `--json` event named `event`.
    async fn event(&mut self, event: &str) -> Value {
        self.wait_for(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(|v| v["event"] == event)
        })
        .await
    }

    /// Waits for the exit: status, stdout and all of stderr.
    async fn finish(mut self) -> (Option<i32>, String, Vec<String>) {
        let output = tokio::time::timeout(LIMIT, self.child.wait_with_output())
            .await
            .expect("the agent exits in time")
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.stderr.push(line);
        }
        (
            output.status.code(),
            String::from_utf8(output.stdout).unwrap(),
            self.stderr,
        )
    }
}

/// Pairs through the CLI (`--json`), the companion confirming the code; the device id.
async fn pair(bridge: &TestBridge, state: &Path) -> String {
    let url = bridge.url();
    let mut running = Running::spawn(&[
        "pair",
        "--bridge",
        &url,
        "--name",
        "Living room",
        "--model",
        "Quest 3",
        "--state",
        state.to_str().unwrap(),
        "--json",
    ]);
    let pairing = running.event("pairing").await;
    let code = pairing["code"].as_str().unwrap();
    let device = bridge
        .companion(
            "mutation($c: String!) { confirmPairing(code: $c) { id name model status } }",
            json!({"c": code}),
            "confirmPairing",
        )
        .await;
    assert_eq!(device["status"], "ACTIVE");
    assert_eq!(device["name"], "Living room");
    let (code, stdout, stderr) = running.finish().await;
    assert_eq!(code, Some(0), "{stderr:?}");
    let result: Value = serde_json::from_str(stdout.trim_end()).unwrap();
    let device_id = result["deviceId"].as_str().unwrap().to_owned();
    assert_eq!(device["id"], device_id);
    // Every stderr line is a JSON event; the last says paired.
    let events: Vec<Value> = stderr
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.last().unwrap(),
        &json!({"event": "paired", "deviceId": device_id})
    );
    device_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_shows_the_code_and_stores_the_device() {
    let bridge = TestBridge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let device_id = pair(&bridge, &state).await;
    let identity = DeviceIdentity::load(&state).unwrap().unwrap();
    let paired = identity.paired.unwrap();
    assert_eq!(paired.device_id, device_id);
    assert_eq!(paired.bridge_url, bridge.url());

    // Again, in human mode: already paired, so no code; the id on stdout.
    let url = bridge.url();
    let (code, stdout, stderr) =
        Running::spawn(&["pair", "--bridge", &url, "--state", state.to_str().unwrap()])
            .finish()
            .await;
    assert_eq!(code, Some(0), "{stderr:?}");
    assert_eq!(stdout, format!("{device_id}\n"));
    assert_eq!(stderr, vec![format!("paired as device {device_id}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_denied_on_the_phone_exits_5() {
    let bridge = TestBridge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    pair(&bridge, &state).await;
    bridge.register_companion().await;
    let options = dir.path().join("options.json");
    std::fs::write(&options, sign_in_options()).unwrap();
    let ble = format!("sim:{}", dir.path().join("ble").display());
    let mut running = Running::spawn(&[
        "sign-in",
        "--options",
        options.to_str().unwrap(),
        "--origin",
        ORIGIN,
        "--state",
        state.to_str().unwrap(),
        "--ble",
        &ble,
        "--json",
    ]);
    let requested = running.event("requested").await;
    let delivery_id = requested["deliveryId"].as_str().unwrap().to_owned();
    assert_eq!(requested["numberCode"].as_str().unwrap().len(), 2);
    let denied = bridge
        .companion(
            "mutation($id: ID!) { denyDelivery(id: $id) { id status } }",
            json!({"id": delivery_id}),
            "denyDelivery",
        )
        .await;
    assert_eq!(denied["status"], "DENIED");
    let (code, stdout, stderr) = running.finish().await;
    assert_eq!(code, Some(5), "{stderr:?}");
    assert!(stdout.is_empty(), "{stdout:?}");
    let (last, events) = stderr.split_last().unwrap();
    assert_eq!(last, "error: denied on the phone (DECLINED)");
    let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(
        error,
        json!({"event": "error", "error": "denied", "exitCode": 5, "message": "denied on the phone (DECLINED)"})
    );
    assert_eq!(bridge.delivery(&delivery_id).await["status"], "DENIED");
}

/// The phone: claims nothing itself (the test claimed), tunnels to the relay, advertises on
/// the directory medium, answers the request.
async fn run_phone(relay: SocketAddr, medium: SimMedium, fido_url: &str) -> Result<(), String> {
    let url = FidoUrl::parse(fido_url).map_err(|e| e.to_string())?;
    let mut auth_data = Sha256::digest(RP_ID.as_bytes()).to_vec();
    auth_data.extend_from_slice(&[0x05, 0, 0, 0, 1]);
    let reply = CtapResponse::ok(
        GetAssertionResponse {
            credential: Some(PublicKeyCredentialDescriptor::new(CREDENTIAL_ID.to_vec())),
            auth_data,
            signature: vec![0x30, 0x44, 1, 2, 3],
            user: None,
            number_of_credentials: None,
            user_selected: None,
            large_blob_key: None,
        }
        .to_cbor(),
    );
    let mut phone = Authenticator::new(
        url,
        ScriptedHandler::new(reply),
        None,
        AuthenticatorTimeouts::default(),
        &mut SeededRng::new(9),
    );
    let epoch = Instant::now();
    let now = || Time::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap());
    let config = TunnelConfig {
        danger_allow_plaintext: true,
        ..TunnelConfig::default()
    };
    let url = format!("ws://{relay}/cable/new/{}", phone.tunnel_id());
    let mut conn = tunnel::connect(&config, &url, HeaderMap::new())
        .await
        .map_err(|e| e.to_string())?;
    let routing_id = conn.routing_id().map_err(|e| e.to_string())?;
    phone
        .handle_routing_id(now(), routing_id, DOMAIN_ID)
        .map_err(|e| e.to_string())?;
    let mut _advertisement = None;
    loop {
        while let Some(event) = phone.poll_event() {
            match event {
                authenticator::Event::AdvertReady(data) => {
                    _advertisement = Some(
                        medium
                            .advertise(Advert {
                                service: ServiceUuid::Fido,
                                data,
                                rssi: Some(-50),
                            })
                            .map_err(|e| e.to_string())?,
                    );
                }
                authenticator::Event::HandshakeComplete => _advertisement = None,
                authenticator::Event::Finished => return Ok(()),
                _ => {}
            }
        }
        while let Some(message) = phone.poll_transmit() {
            conn.send(message).await.map_err(|e| e.to_string())?;
        }
        match conn.recv().await {
            Ok(Some(message)) => phone
                .handle_tunnel_message(now(), &message)
                .map_err(|e| e.to_string())?,
            Ok(None) => phone
                .handle_tunnel_closed(now())
                .map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_through_the_shared_simulated_medium_prints_only_the_response() {
    let bridge = TestBridge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    pair(&bridge, &state).await;
    bridge.register_companion().await;
    let options = dir.path().join("options.json");
    std::fs::write(&options, sign_in_options()).unwrap();
    let ble_dir = dir.path().join("ble");
    let ble = format!("sim:{}", ble_dir.display());
    let relay = format!("{}=ws://{}", DOMAIN_ID.domain().unwrap(), bridge.addr);
    let mut running = Running::spawn(&[
        "sign-in",
        "--options",
        options.to_str().unwrap(),
        "--origin",
        ORIGIN,
        "--state",
        state.to_str().unwrap(),
        "--ble",
        &ble,
        "--relay",
        &relay,
        "--danger-allow-plaintext-relay",
        "--rssi-floor",
        "-70",
    ]);
    // Human mode: the request line names the number; the companion then finds the delivery.
    let number = running
        .wait_for(|line| {
            line.strip_prefix("request sent to your phone: check that it shows the number ")
                .map(str::to_owned)
        })
        .await;
    let pending = bridge
        .companion(
            "{ pendingDeliveries { id numberCode } }",
            json!({}),
            "pendingDeliveries",
        )
        .await;
    assert_eq!(pending[0]["numberCode"], number);
    let delivery_id = pending[0]["id"].as_str().unwrap().to_owned();
    let claimed = bridge
        .companion(
            "mutation($id: ID!) { claimDelivery(id: $id) { fidoUrl } }",
            json!({"id": delivery_id}),
            "claimDelivery",
        )
        .await;
    let medium = SimMedium::at_dir(&ble_dir).unwrap();
    tokio::time::timeout(
        LIMIT,
        run_phone(bridge.addr, medium, claimed["fidoUrl"].as_str().unwrap()),
    )
    .await
    .expect("the phone finishes in time")
    .expect("the phone succeeds");

    let (code, stdout, stderr) = running.finish().await;
    assert_eq!(code, Some(0), "{stderr:?}");
    // stdout: exactly one line, the AuthenticationResponseJSON.
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    let response: Value = serde_json::from_str(stdout.trim_end()).unwrap();
    assert_eq!(response["id"], URL_SAFE_NO_PAD.encode(CREDENTIAL_ID));
    assert_eq!(response["type"], "public-key");
    assert_eq!(response["authenticatorAttachment"], "cross-platform");
    // stderr: the milestones in order, no error.
    let milestones: Vec<&str> = stderr
        .iter()
        .map(String::as_str)
        .filter(|l| ["phone found nearby", "tunnel open", "passkey used"].contains(l))
        .collect();
    assert_eq!(
        milestones,
        vec!["phone found nearby", "tunnel open", "passkey used"]
    );
    assert!(!stderr.iter().any(|l| l.starts_with("error")), "{stderr:?}");
    assert_eq!(bridge.delivery(&delivery_id).await["status"], "COMPLETED");
}
