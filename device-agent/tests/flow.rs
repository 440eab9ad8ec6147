#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The agent's flows end to end against a real bridge on 127.0.0.1 (GraphQL, subscriptions and
//! the `/cable/…` relay), with the companion played by plain GraphQL calls under development
//! tokens and the phone by `hybrid`'s authenticator with a scripted CTAP reply, advertising on
//! the in-process simulated BLE medium.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use device_agent::bridge_client::{BridgeConfig, DeliveryStatus};
use device_agent::device_key::{DeviceIdentity, PairedBridge};
use device_agent::flow::{self, AgentConfig, AgentError, Progress};
use device_agent::tunnel::{self, HeaderMap, TunnelConfig};
use hybrid::Time;
use hybrid::authenticator::{self, Authenticator};
use hybrid::cbor::{self, Value as Cbor};
use hybrid::ctap::{
    CtapRequest, CtapResponse, CtapStatus, GetAssertionResponse, MakeCredentialResponse,
    PublicKeyCredentialDescriptor,
};
use hybrid::domain::DomainId;
use hybrid::session::AuthenticatorTimeouts;
use hybrid::test_util::{ScriptedHandler, SeededRng};
use hybrid::url::FidoUrl;
use p256::SecretKey;
use p256::elliptic_curve::Generate as _;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tether_ble::sim::SimMedium;
use tether_ble::{Advert, ScanConfig, ServiceUuid};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::Instant;

const ACCOUNT: &str = "alice";
const ORIGIN: &str = "https://example.com";
const RP_ID: &str = "example.com";
/// Bytes 0..32, base64url.
const CHALLENGE: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
const CREDENTIAL_ID: [u8; 16] = [7; 16];
/// The relay's domain in the phone's advert: the first hashed domain id.
const DOMAIN_ID: DomainId = DomainId(256);
const PHONE_RSSI: i16 = -52;
/// No test may take longer than this.
const TEST_LIMIT: Duration = Duration::from_secs(30);

const CONFIRM_PAIRING: &str =
    "mutation($c: String!) { confirmPairing(code: $c) { id name model status } }";
const REGISTER_COMPANION: &str =
    "mutation($i: RegisterCompanionInput!) { registerCompanion(input: $i) { id } }";
const CLAIM: &str =
    "mutation($id: ID!) { claimDelivery(id: $id) { fidoUrl delivery { id status } } }";
const DENY: &str =
    "mutation($id: ID!, $r: DenyReason!) { denyDelivery(id: $id, reason: $r) { id status } }";
const DELIVERY: &str =
    "query($id: ID!) { delivery(id: $id) { id kind status reason rpId origin userName } }";
const DEVICES: &str = "{ devices { id name model status } }";

/// A bridge (and its relay) on 127.0.0.1:0 whose public URL is its real address.
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

    /// The agent's configuration: this bridge, its relay for the phone's domain, fast polls.
    fn config(&self, state_dir: &Path) -> AgentConfig {
        let mut bridge = BridgeConfig::new(self.url());
        bridge.poll_interval = Duration::from_millis(100);
        let mut config = AgentConfig::new(bridge, state_dir);
        config.tunnel = self.tunnel_config();
        config
    }

    fn tunnel_config(&self) -> TunnelConfig {
        let mut tunnel = TunnelConfig {
            danger_allow_plaintext: true,
            ..TunnelConfig::default()
        };
        tunnel
            .domains
            .insert(DOMAIN_ID.domain().unwrap(), format!("ws://{}", self.addr));
        tunnel
    }

    fn companion_token(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        self.state
            .dev_issuer
            .as_ref()
            .unwrap()
            .mint(ACCOUNT, &self.url(), i64::try_from(now).unwrap(), 3600)
            .unwrap()
    }

    /// A GraphQL call as the account's companion; the `data.<field>` of the answer.
    async fn companion(&self, query: &str, variables: Value, field: &str) -> Value {
        let resp: Value = self
            .http
            .post(format!("{}/graphql", self.url()))
            .bearer_auth(self.companion_token())
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
            REGISTER_COMPANION,
            json!({"i": {"platform": "APNS", "pushToken": "token-1", "appId": "com.example.tether", "displayName": "Alice's phone"}}),
            "registerCompanion",
        )
        .await;
    }

    async fn claim(&self, delivery_id: &str) -> String {
        let claimed = self
            .companion(CLAIM, json!({"id": delivery_id}), "claimDelivery")
            .await;
        assert_eq!(claimed["delivery"]["status"], "CLAIMED");
        claimed["fidoUrl"].as_str().unwrap().to_owned()
    }

    async fn delivery(&self, delivery_id: &str) -> Value {
        self.companion(DELIVERY, json!({"id": delivery_id}), "delivery")
            .await
    }
}

/// The flow's progress as it happens, and everything seen so far.
struct Events {
    rx: UnboundedReceiver<Progress>,
    seen: Vec<Progress>,
}

impl Events {
    /// A progress function feeding a new `Events`.
    fn new() -> (impl FnMut(Progress) + Send, Self) {
        let (tx, rx) = unbounded_channel();
        (
            move |p| {
                let _ = tx.send(p);
            },
            Self {
                rx,
                seen: Vec::new(),
            },
        )
    }

    /// Waits for the first event that `pick` maps to a value; `None` if the flow ended first.
    async fn until<T>(&mut self, mut pick: impl FnMut(&Progress) -> Option<T>) -> Option<T> {
        loop {
            let event = self.rx.recv().await?;
            let picked = pick(&event);
            self.seen.push(event);
            if picked.is_some() {
                return picked;
            }
        }
    }

    async fn requested(&mut self) -> Option<String> {
        self.until(|p| match p {
            Progress::Requested { delivery_id, .. } => Some(delivery_id.clone()),
            _ => None,
        })
        .await
    }

    /// Everything, once the flow has ended.
    fn all(mut self) -> Vec<Progress> {
        while let Ok(event) = self.rx.try_recv() {
            self.seen.push(event);
        }
        self.seen
    }
}

/// Pairs a device in `state_dir` with the bridge, the companion typing the code it shows.
async fn pair(bridge: &TestBridge, state_dir: &Path) -> (String, Vec<Progress>) {
    let config = bridge.config(state_dir);
    let (mut report, mut events) = Events::new();
    let companion = async {
        let code = events
            .until(|p| match p {
                Progress::Pairing { code, .. } => Some(code.clone()),
                _ => None,
            })
            .await
            .expect("a pairing code");
        let device = bridge
            .companion(CONFIRM_PAIRING, json!({"c": code}), "confirmPairing")
            .await;
        assert_eq!(device["status"], "ACTIVE");
        events
    };
    let (result, events) = tokio::time::timeout(TEST_LIMIT, async {
        tokio::join!(
            flow::pair(&config, "Living room", "Quest 3", &mut report),
            companion
        )
    })
    .await
    .expect("pairing ends");
    drop(report);
    (result.expect("pairing succeeds"), events.all())
}

/// A paired device with a companion registered, ready to sign in.
async fn ready(bridge: &TestBridge) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    pair(bridge, dir.path()).await;
    bridge.register_companion().await;
    dir
}

fn sign_in_options() -> String {
    json!({
        "challenge": CHALLENGE,
        "rpId": RP_ID,
        "allowCredentials": [{"type": "public-key", "id": URL_SAFE_NO_PAD.encode(CREDENTIAL_ID)}],
        "userVerification": "required",
        "timeout": 300_000,
    })
    .to_string()
}

fn creation_options() -> String {
    json!({
        "rp": {"id": RP_ID, "name": "Example"},
        "user": {"id": URL_SAFE_NO_PAD.encode(b"user-1"), "name": "alice@example.com", "displayName": "Alice"},
        "challenge": CHALLENGE,
        "pubKeyCredParams": [{"type": "public-key", "alg": -7}],
        "authenticatorSelection": {"residentKey": "required", "userVerification": "required"},
        "attestation": "none",
    })
    .to_string()
}

/// Authenticator data for the RP with flags UP|UV (and AT plus `attested` when given).
fn auth_data(attested: Option<&[u8]>) -> Vec<u8> {
    let mut data = Sha256::digest(RP_ID.as_bytes()).to_vec();
    data.push(if attested.is_some() { 0x45 } else { 0x05 });
    data.extend_from_slice(&1u32.to_be_bytes());
    if let Some(attested) = attested {
        data.extend_from_slice(attested);
    }
    data
}

fn assertion_reply() -> CtapResponse {
    CtapResponse::ok(
        GetAssertionResponse {
            credential: Some(PublicKeyCredentialDescriptor::new(CREDENTIAL_ID.to_vec())),
            auth_data: auth_data(None),
            signature: vec![0x30, 0x44, 1, 2, 3],
            user: None,
            number_of_credentials: None,
            user_selected: None,
            large_blob_key: None,
        }
        .to_cbor(),
    )
}

fn registration_reply() -> CtapResponse {
    let key = SecretKey::generate();
    let point = key.public_key().to_sec1_point(false);
    let xy = point.as_bytes();
    let cose = cbor::encode(&Cbor::Map(vec![
        (Cbor::from(1), Cbor::from(2)),
        (Cbor::from(3), Cbor::from(-7)),
        (Cbor::from(-1), Cbor::from(1)),
        (Cbor::from(-2), Cbor::Bytes(xy[1..33].to_vec())),
        (Cbor::from(-3), Cbor::Bytes(xy[33..65].to_vec())),
    ]));
    let mut attested = vec![0u8; 16];
    attested.extend_from_slice(&16u16.to_be_bytes());
    attested.extend_from_slice(&CREDENTIAL_ID);
    attested.extend_from_slice(&cose);
    CtapResponse::ok(
        MakeCredentialResponse {
            fmt: "none".into(),
            auth_data: auth_data(Some(&attested)),
            att_stmt: Cbor::Map(vec![]),
            ep_att: None,
            large_blob_key: None,
        }
        .to_cbor(),
    )
}

/// The phone: takes the claimed URL, opens its tunnel at the relay, advertises on `medium`,
/// answers the one request with `reply`. Returns the requests it saw.
async fn run_phone(
    relay: SocketAddr,
    medium: SimMedium,
    fido_url: &str,
    reply: CtapResponse,
) -> Result<Vec<CtapRequest>, String> {
    let url = FidoUrl::parse(fido_url).map_err(|e| e.to_string())?;
    let mut phone = Authenticator::new(
        url,
        ScriptedHandler::new(reply),
        None,
        AuthenticatorTimeouts::default(),
        &mut SeededRng::new(5),
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
        .map_err(|e| format!("phone tunnel: {e}"))?;
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
                                rssi: Some(PHONE_RSSI),
                            })
                            .map_err(|e| e.to_string())?,
                    );
                }
                authenticator::Event::HandshakeComplete => _advertisement = None,
                authenticator::Event::Finished => return Ok(phone.handler().seen.clone()),
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    SignIn,
    Register,
}

/// What one ceremony ended with.
struct Run {
    result: Result<Value, AgentError>,
    progress: Vec<Progress>,
    delivery_id: Option<String>,
    phone: Option<Result<Vec<CtapRequest>, String>>,
}

/// How the companion (and the phone behind it) answers.
#[derive(Clone, Debug)]
enum Companion {
    /// Claims and runs the phone with this reply.
    Approve(CtapResponse),
    /// Claims, but the phone never advertises.
    ClaimOnly,
    /// Denies with this reason.
    Deny(&'static str),
}

async fn ceremony(
    bridge: &TestBridge,
    config: &AgentConfig,
    kind: Kind,
    options: &str,
    companion: Companion,
) -> Run {
    let medium = SimMedium::in_process().with_interval(Duration::from_millis(10));
    let mut scanner = medium.scanner(ScanConfig::default()).unwrap();
    let (mut report, mut events) = Events::new();
    let other_side = async {
        let delivery_id = events.requested().await?;
        let phone = match companion {
            Companion::Approve(reply) => {
                let url = bridge.claim(&delivery_id).await;
                Some(run_phone(bridge.addr, medium.clone(), &url, reply).await)
            }
            Companion::ClaimOnly => {
                bridge.claim(&delivery_id).await;
                None
            }
            Companion::Deny(reason) => {
                let denied = bridge
                    .companion(
                        DENY,
                        json!({"id": delivery_id, "r": reason}),
                        "denyDelivery",
                    )
                    .await;
                assert_eq!(denied["status"], "DENIED");
                None
            }
        };
        Some((delivery_id, phone))
    };
    // The flow owns the progress function: the other side sees the channel close with it.
    let flow = async move {
        match kind {
            Kind::SignIn => flow::sign_in(config, options, ORIGIN, &mut scanner, &mut report).await,
            Kind::Register => {
                flow::register(config, options, ORIGIN, &mut scanner, &mut report).await
            }
        }
    };
    let (result, other) =
        tokio::time::timeout(TEST_LIMIT, async { tokio::join!(flow, other_side) })
            .await
            .expect("the ceremony ends");
    let (delivery_id, phone) = match other {
        Some((id, phone)) => (Some(id), phone),
        None => (None, None),
    };
    Run {
        result,
        progress: events.all(),
        delivery_id,
        phone,
    }
}

/// The session's part of the progress, in order.
fn session_events(progress: &[Progress]) -> Vec<Progress> {
    progress
        .iter()
        .filter(|p| !matches!(p, Progress::Requested { .. } | Progress::Status(_)))
        .cloned()
        .collect()
}

fn client_data(response: &Value) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(response["response"]["clientDataJSON"].as_str().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_stores_the_device_id_and_is_not_repeated() {
    let bridge = TestBridge::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (device_id, progress) = pair(&bridge, dir.path()).await;
    assert!(device_id.starts_with("dev_"), "{device_id}");
    assert_eq!(progress.len(), 2, "{progress:?}");
    match &progress[0] {
        Progress::Pairing { code, expires_at } => {
            assert!(!code.is_empty());
            assert!(expires_at.ends_with('Z'), "{expires_at}");
        }
        other => panic!("expected the code first, got {other:?}"),
    }
    assert_eq!(
        progress[1],
        Progress::Paired {
            device_id: device_id.clone()
        }
    );

    // The identity file: private, and it names the bridge and the device.
    let identity = DeviceIdentity::load(dir.path()).unwrap().unwrap();
    let paired = identity.paired.unwrap();
    assert_eq!(paired.device_id, device_id);
    assert_eq!(paired.bridge_url, bridge.url());
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(DeviceIdentity::path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let devices = bridge.companion(DEVICES, json!({}), "devices").await;
    assert_eq!(
        devices,
        json!([{"id": device_id, "name": "Living room", "model": "Quest 3", "status": "ACTIVE"}])
    );

    // Pairing again with the same bridge: the stored id, no new code, no new device.
    let mut seen = Vec::new();
    let mut record = |p| seen.push(p);
    let again = flow::pair(&bridge.config(dir.path()), "Other", "Other", &mut record)
        .await
        .unwrap();
    assert_eq!(again, device_id);
    assert_eq!(seen, vec![Progress::Paired { device_id }]);
    let devices = bridge.companion(DEVICES, json!({}), "devices").await;
    assert_eq!(devices.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_bridge_relay_and_simulated_ble() {
    let bridge = TestBridge::start().await;
    let dir = ready(&bridge).await;
    let config = bridge.config(dir.path());
    let run = ceremony(
        &bridge,
        &config,
        Kind::SignIn,
        &sign_in_options(),
        Companion::Approve(assertion_reply()),
    )
    .await;
    let response = run.result.expect("the sign-in succeeds");

    let id = URL_SAFE_NO_PAD.encode(CREDENTIAL_ID);
    assert_eq!(response["id"], id);
    assert_eq!(response["rawId"], id);
    assert_eq!(response["type"], "public-key");
    assert_eq!(response["authenticatorAttachment"], "cross-platform");
    assert_eq!(response["clientExtensionResults"], json!({}));
    let client_data_json = client_data(&response);
    assert_eq!(
        String::from_utf8(client_data_json.clone()).unwrap(),
        format!(
            r#"{{"type":"webauthn.get","challenge":"{CHALLENGE}","origin":"{ORIGIN}","crossOrigin":false}}"#
        )
    );
    assert_eq!(
        response["response"]["authenticatorData"],
        URL_SAFE_NO_PAD.encode(auth_data(None))
    );
    assert_eq!(
        response["response"]["signature"],
        URL_SAFE_NO_PAD.encode([0x30, 0x44, 1, 2, 3])
    );

    // The phone got exactly the getAssertion for this RP and this clientDataJSON.
    let seen = run.phone.unwrap().expect("the phone finishes");
    assert_eq!(seen.len(), 1);
    let CtapRequest::GetAssertion(request) = &seen[0] else {
        panic!("expected getAssertion, got {:?}", seen[0]);
    };
    assert_eq!(request.rp_id, RP_ID);
    assert_eq!(
        request.client_data_hash,
        <[u8; 32]>::from(Sha256::digest(&client_data_json))
    );
    assert_eq!(request.allow_list[0].id, CREDENTIAL_ID);

    // Progress: the request first, then the session in order, "passkey used" last.
    assert!(matches!(
        &run.progress[0],
        Progress::Requested { number_code, expires_at_unix, .. }
            if number_code.len() == 2 && *expires_at_unix > 0
    ));
    assert_eq!(
        session_events(&run.progress),
        vec![
            Progress::Scanning,
            Progress::PhoneFound {
                rssi: Some(PHONE_RSSI)
            },
            Progress::TunnelOpen,
            Progress::HandshakeDone,
            Progress::PasskeyUsed,
        ]
    );

    // The bridge knows it ended well.
    let delivery = bridge.delivery(run.delivery_id.as_deref().unwrap()).await;
    assert_eq!(delivery["status"], "COMPLETED");
    assert_eq!(delivery["kind"], "SIGN_IN");
    assert_eq!(delivery["rpId"], RP_ID);
    assert_eq!(delivery["origin"], ORIGIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_returns_the_new_credential() {
    let bridge = TestBridge::start().await;
    let dir = ready(&bridge).await;
    let config = bridge.config(dir.path());
    let run = ceremony(
        &bridge,
        &config,
        Kind::Register,
        &creation_options(),
        Companion::Approve(registration_reply()),
    )
    .await;
    let response = run.result.expect("the registration succeeds");
    assert_eq!(response["id"], URL_SAFE_NO_PAD.encode(CREDENTIAL_ID));
    assert_eq!(response["type"], "public-key");
    assert_eq!(response["authenticatorAttachment"], "cross-platform");
    assert_eq!(response["response"]["publicKeyAlgorithm"], -7);
    assert_eq!(
        response["response"]["transports"],
        json!(["hybrid", "internal"])
    );
    assert!(
        String::from_utf8(client_data(&response))
            .unwrap()
            .starts_with(r#"{"type":"webauthn.create","#)
    );
    let seen = run.phone.unwrap().expect("the phone finishes");
    assert!(matches!(&seen[..], [CtapRequest::MakeCredential(r)] if r.rp.id == RP_ID));
    let delivery = bridge.delivery(run.delivery_id.as_deref().unwrap()).await;
    assert_eq!(delivery["status"], "COMPLETED");
    assert_eq!(delivery["kind"], "REGISTRATION");
    assert_eq!(delivery["userName"], "alice@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_on_the_phone_ends_the_flow() {
    let bridge = TestBridge::start().await;
    let dir = ready(&bridge).await;
    let config = bridge.config(dir.path());
    let started = Instant::now();
    let run = ceremony(
        &bridge,
        &config,
        Kind::SignIn,
        &sign_in_options(),
        Companion::Deny("NOT_ME"),
    )
    .await;
    let error = run.result.unwrap_err();
    assert_eq!(
        error,
        AgentError::Denied {
            reason: "NOT_ME".into()
        }
    );
    assert_eq!(error.to_string(), "denied on the phone (NOT_ME)");
    assert_eq!(error.exit_code(), 5);
    // Ended by the status, not by a timeout.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        run.progress
            .contains(&Progress::Status(DeliveryStatus::Denied))
    );
    assert!(!run.progress.contains(&Progress::PasskeyUsed));
    let delivery = bridge.delivery(run.delivery_id.as_deref().unwrap()).await;
    assert_eq!(delivery["status"], "DENIED");
    assert_eq!(delivery["reason"], "NOT_ME");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_without_a_companion_is_told_so() {
    let bridge = TestBridge::start().await;
    let dir = tempfile::tempdir().unwrap();
    pair(&bridge, dir.path()).await;
    let config = bridge.config(dir.path());
    let run = ceremony(
        &bridge,
        &config,
        Kind::SignIn,
        &sign_in_options(),
        Companion::ClaimOnly,
    )
    .await;
    let error = run.result.unwrap_err();
    assert_eq!(error, AgentError::NoCompanion);
    assert_eq!(error.exit_code(), 7);
    assert!(run.progress.is_empty(), "{:?}", run.progress);
    assert_eq!(run.delivery_id, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_never_advertises_is_not_found() {
    let bridge = TestBridge::start().await;
    let dir = ready(&bridge).await;
    let mut config = bridge.config(dir.path());
    config.discovery_timeout = Some(Duration::from_secs(2));
    let started = Instant::now();
    let run = ceremony(
        &bridge,
        &config,
        Kind::SignIn,
        &sign_in_options(),
        Companion::ClaimOnly,
    )
    .await;
    let error = run.result.unwrap_err();
    assert_eq!(error, AgentError::PhoneNotFound);
    assert_eq!(error.to_string(), "phone not found nearby");
    assert_eq!(error.exit_code(), 8);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert_eq!(session_events(&run.progress), vec![Progress::Scanning]);
    let delivery = bridge.delivery(run.delivery_id.as_deref().unwrap()).await;
    assert_eq!(delivery["status"], "FAILED");
    assert_eq!(delivery["reason"], "PHONE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticator_error_carries_the_ctap_status() {
    let bridge = TestBridge::start().await;
    let dir = ready(&bridge).await;
    let config = bridge.config(dir.path());
    let run = ceremony(
        &bridge,
        &config,
        Kind::SignIn,
        &sign_in_options(),
        Companion::Approve(CtapResponse::error(CtapStatus::OperationDenied)),
    )
    .await;
    let error = run.result.unwrap_err();
    assert_eq!(
        error,
        AgentError::Authenticator {
            status: 0x27,
            name: "CTAP2_ERR_OPERATION_DENIED".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "authenticator error CTAP2_ERR_OPERATION_DENIED (0x27)"
    );
    assert_eq!(error.exit_code(), 10);
    let delivery = bridge.delivery(run.delivery_id.as_deref().unwrap()).await;
    assert_eq!(delivery["status"], "FAILED");
    assert_eq!(delivery["reason"], "AUTHENTICATOR_ERROR");
}

/// A loopback URL where nothing listens.
async fn dead_bridge_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn an_unreachable_bridge_is_reported_as_such() {
    let url = dead_bridge_url().await;

    // Pairing.
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig::new(BridgeConfig::new(url.clone()), dir.path());
    let error = flow::pair(&config, "Living room", "Quest 3", &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(error, AgentError::BridgeUnreachable(_)),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), 11);
    assert!(
        error.to_string().starts_with("bridge unreachable: "),
        "{error}"
    );

    // Signing in with a device paired to it.
    let mut identity = DeviceIdentity::create(dir.path())
        .unwrap_or_else(|_| DeviceIdentity::load(dir.path()).unwrap().unwrap());
    identity.set_paired(PairedBridge {
        bridge_url: url.clone(),
        device_id: "dev_0123456789abcdef0123456789abcdef".into(),
        audience: None,
    });
    identity.save(dir.path()).unwrap();
    let mut scanner = SimMedium::in_process()
        .scanner(ScanConfig::default())
        .unwrap();
    let error = flow::sign_in(
        &config,
        &sign_in_options(),
        ORIGIN,
        &mut scanner,
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, AgentError::BridgeUnreachable(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn signing_in_needs_a_pairing_with_this_bridge() {
    let url = dead_bridge_url().await;
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig::new(BridgeConfig::new(url.clone()), dir.path().join("state"));
    let mut scanner = SimMedium::in_process()
        .scanner(ScanConfig::default())
        .unwrap();

    // No identity at all: nothing is created.
    let error = flow::sign_in(
        &config,
        &sign_in_options(),
        ORIGIN,
        &mut scanner,
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(error, AgentError::NotPaired);
    assert_eq!(error.exit_code(), 4);
    assert!(!config.state_dir.exists());

    // A key, but no pairing.
    let mut identity = DeviceIdentity::create(&config.state_dir).unwrap();
    let error = flow::register(
        &config,
        &creation_options(),
        ORIGIN,
        &mut scanner,
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(error, AgentError::NotPaired);

    // Paired with another bridge.
    identity.set_paired(PairedBridge {
        bridge_url: "https://other.example.com".into(),
        device_id: "dev_0123456789abcdef0123456789abcdef".into(),
        audience: None,
    });
    identity.save(&config.state_dir).unwrap();
    let error = flow::sign_in(
        &config,
        &sign_in_options(),
        ORIGIN,
        &mut scanner,
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert_eq!(error, AgentError::NotPaired);

    // Paired here: now the options are looked at.
    identity.set_paired(PairedBridge {
        bridge_url: format!("{url}/"),
        device_id: "dev_0123456789abcdef0123456789abcdef".into(),
        audience: None,
    });
    identity.save(&config.state_dir).unwrap();
    let error = flow::sign_in(
        &config,
        "{\"challenge\": 5}",
        ORIGIN,
        &mut scanner,
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(error, AgentError::InvalidOptions(_)), "{error:?}");
    assert_eq!(error.exit_code(), 3);
    let error = flow::sign_in(
        &config,
        &sign_in_options(),
        "https://evil.example.net",
        &mut scanner,
        &mut |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(error, AgentError::InvalidOptions(_)), "{error:?}");
}

#[test]
fn every_error_kind_has_its_own_exit_code_and_one_line() {
    let all = [
        AgentError::NotPaired,
        AgentError::InvalidOptions("x".into()),
        AgentError::Denied {
            reason: "DECLINED".into(),
        },
        AgentError::Expired,
        AgentError::NoCompanion,
        AgentError::PhoneNotFound,
        AgentError::TunnelFailed("x".into()),
        AgentError::Authenticator {
            status: 0x27,
            name: "CTAP2_ERR_OPERATION_DENIED".into(),
        },
        AgentError::BridgeUnreachable("x".into()),
        AgentError::Bridge {
            code: "RATE_LIMITED".into(),
            message: "x".into(),
        },
        AgentError::State("x".into()),
        AgentError::Ble("x".into()),
        AgentError::Protocol("x".into()),
        AgentError::Config("x".into()),
    ];
    let mut codes: Vec<u8> = all.iter().map(AgentError::exit_code).collect();
    assert_eq!(codes, vec![4, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 2]);
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), all.len());
    let mut kinds: Vec<&str> = all.iter().map(AgentError::kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), all.len());
    for error in &all {
        let text = error.to_string();
        assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
    }
}

#[test]
fn the_flows_can_run_on_any_runtime_thread() {
    fn assert_send<T: Send>(_: &T) {}
    let config = AgentConfig::new(
        BridgeConfig::new("https://bridge.example.com"),
        "/nonexistent",
    );
    let mut scanner = SimMedium::in_process()
        .scanner(ScanConfig::default())
        .unwrap();
    let mut progress = |_| {};
    assert_send(&flow::sign_in(
        &config,
        "",
        ORIGIN,
        &mut scanner,
        &mut progress,
    ));
    let mut progress = |_| {};
    assert_send(&flow::register(
        &config,
        "",
        ORIGIN,
        &mut scanner,
        &mut progress,
    ));
    let mut progress = |_| {};
    assert_send(&flow::pair(&config, "n", "m", &mut progress));
}
