//! A whole sign-in with the phone's advert travelling through D-Bus and the production scanner
//! (`BtleScanner`: btleplug → bluez-async → libdbus) instead of the simulated medium.
//!
//! The phone is `hybrid`'s authenticator with a scripted CTAP handler; it opens its tunnel on a
//! real relay (the bridge on 127.0.0.1), and its 20-byte advert is handed to a fake BlueZ
//! (`ble/tests/fake_bluez/fake_bluez.py`, on a private `dbus-daemon`) that announces it to the
//! scanner as a device's `ServiceData`. The device agent's [`session::run`] does the rest.
//!
//! Each test re-runs this binary for one case (test `child`) with `DBUS_SYSTEM_BUS_ADDRESS`
//! set for that child only; see `ble/tests/fake_bluez/harness.rs` and `docs/ble-testing.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../ble/tests/fake_bluez/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use device_agent::session::{self, Progress, SessionFailure, SessionOutcome};
use device_agent::tunnel::{self, HeaderMap, TunnelConfig};
use harness::{Adapter, FakeBluez, SOON};
use hybrid::authenticator::{self, Authenticator, LinkingOffer};
use hybrid::ctap::get_assertion::{GetAssertionRequest, GetAssertionResponse};
use hybrid::ctap::get_info::GetInfoResponse;
use hybrid::ctap::{CtapRequest, CtapResponse};
use hybrid::domain::DomainId;
use hybrid::initiator::Initiator;
use hybrid::session::{AuthenticatorTimeouts, InitiatorTimeouts};
use hybrid::test_util::{ScriptedHandler, SeededRng};
use hybrid::url::{FidoUrl, RequestType};
use hybrid::{QrSecret, Secret, Time};
use p256::SecretKey;
use p256::elliptic_curve::Generate;
use tether_ble::btle::BtleScanner;
use tether_ble::{BleError, ScanConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The relay's domain in adverts: the first hashed domain id.
const DOMAIN_ID: DomainId = DomainId(256);
const PHONE_MAC: &str = "6E:01:02:03:04:05";
const OTHER_PHONE_MAC: &str = "4F:0A:0B:0C:0D:0E";
const CHILD: &str = "child";

#[test]
fn sign_in_with_the_advert_through_bluez() {
    harness::run_child(CHILD, "sign_in_fido");
}

#[test]
fn sign_in_with_an_advert_under_the_google_uuid() {
    harness::run_child(CHILD, "sign_in_google");
}

#[test]
fn a_phone_below_the_rssi_floor_is_not_found() {
    harness::run_child(CHILD, "below_floor");
}

#[test]
fn an_adapter_reporting_nothing_means_phone_not_found() {
    harness::run_child(CHILD, "nothing");
}

#[test]
fn an_adapter_switched_off_during_the_session_is_bluetooth_unavailable() {
    harness::run_child(CHILD, "switched_off");
}

#[test]
fn a_powered_off_adapter_is_bluetooth_unavailable() {
    harness::run_child(CHILD, "powered_off");
}

/// Runs only as a child of the tests above (the case is in its environment).
#[test]
fn child() {
    let Some(name) = harness::child_case() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        match name.as_str() {
            "sign_in_fido" => sign_in_ok("fff9", -52).await,
            "sign_in_google" => sign_in_ok("fde2", -71).await,
            "below_floor" => below_floor().await,
            "nothing" => nothing().await,
            "switched_off" => switched_off().await,
            "powered_off" => powered_off().await,
            other => panic!("unknown case {other}"),
        }
    });
    harness::passed(&name);
}

/// A bridge (with its relay) on 127.0.0.1:0; stopped on drop.
struct Relay {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = bridge::config::Config {
            data_dir: dir.path().to_path_buf(),
            public_url: "http://bridge.test".into(),
            ..bridge::config::Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            bridge::run(
                listener,
                config,
                Arc::new(bridge::clock::SystemClock),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        let relay = Self {
            addr,
            stop: Some(stop),
            _dir: dir,
        };
        relay.wait_ready().await;
        relay
    }

    /// Ready when it answers HTTP (the listener accepts before the state is built).
    async fn wait_ready(&self) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for _ in 0..500 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(self.addr).await {
                let _ = s
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await;
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf).await;
                if buf.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("bridge did not start");
    }

    /// The agent's view: the advert's domain leads to this relay, over plaintext.
    fn tunnel_config(&self) -> TunnelConfig {
        let mut config = TunnelConfig {
            danger_allow_plaintext: true,
            ..TunnelConfig::default()
        };
        config
            .domains
            .insert(DOMAIN_ID.domain().unwrap(), format!("ws://{}", self.addr));
        config
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn request() -> CtapRequest {
    CtapRequest::GetAssertion(GetAssertionRequest::new("example.com", [0x11; 32]))
}

fn assertion() -> CtapResponse {
    CtapResponse::ok(
        GetAssertionResponse {
            credential: None,
            auth_data: vec![0xaa; 37],
            signature: vec![0x30, 0x44, 1, 2, 3],
            user: None,
            number_of_credentials: None,
            user_selected: None,
            large_blob_key: None,
        }
        .to_cbor(),
    )
}

/// Both ends of one session.
fn parties(seed: u64) -> (Initiator, Authenticator<ScriptedHandler>) {
    let mut rng = SeededRng::new(seed);
    let identity = SecretKey::generate_from_rng(&mut rng);
    let secret = [seed as u8; 16];
    let url = FidoUrl::new(
        identity.public_key(),
        QrSecret::new(secret),
        RequestType::GetAssertion,
        1_795_305_600,
        true,
    );
    let initiator = Initiator::new(
        identity,
        QrSecret::new(secret),
        &request(),
        InitiatorTimeouts::default(),
        Time::ZERO,
        &mut rng,
    );
    let offer = LinkingOffer {
        contact_id: b"contact".to_vec(),
        link_id: [8; 8],
        link_secret: Secret::new([9; 32]),
        identity: SecretKey::generate_from_rng(&mut rng),
        name: "Test phone".to_owned(),
    };
    let phone = Authenticator::new(
        url,
        ScriptedHandler::new(assertion()),
        Some(offer),
        AuthenticatorTimeouts::default(),
        &mut rng,
    );
    (initiator, phone)
}

/// The phone: opens its tunnel on the relay, hands each advert it makes to `adverts` (the test
/// passes them on to the fake BlueZ), and answers the agent. Ends with the requests it saw.
async fn run_phone(
    relay: SocketAddr,
    mut phone: Authenticator<ScriptedHandler>,
    adverts: mpsc::UnboundedSender<[u8; 20]>,
) -> Result<Vec<CtapRequest>, String> {
    let epoch = Instant::now();
    let now = || Time::from_millis(epoch.elapsed().as_millis() as u64);
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
    loop {
        while let Some(event) = phone.poll_event() {
            match event {
                authenticator::Event::AdvertReady(data) => {
                    adverts.send(data).map_err(|e| e.to_string())?;
                }
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

struct Run {
    result: Result<SessionOutcome, SessionFailure>,
    progress: Vec<Progress>,
    /// How many adverts the phone made (each went to the fake BlueZ).
    adverts: usize,
    phone: tokio::task::JoinHandle<Result<Vec<CtapRequest>, String>>,
}

/// One session with the phone advertising under `uuid` at `rssi`, another session's phone
/// advertising nearby first, and the agent scanning with the default floor until `deadline`.
async fn sign_in(uuid: &str, rssi: i16, deadline: Duration) -> Run {
    let relay = Relay::start().await;
    let mut fake = FakeBluez::start(Adapter::PoweredOn).await;
    let mut scanner = BtleScanner::new(ScanConfig::default()).await.unwrap();
    fake.wait_call("StartDiscovery").await;
    // Some other client's session: a hybrid advert this agent cannot decrypt.
    fake.advert(OTHER_PHONE_MAC, "fff9", &[0x5c; 20], Some(-40))
        .await;
    let (initiator, phone) = parties(31);
    let (tx, mut adverts) = mpsc::unbounded_channel();
    let phone = tokio::spawn(run_phone(relay.addr, phone, tx));
    let epoch = Instant::now();
    let mut progress = Vec::new();
    let mut record = |p| progress.push(p);
    let tunnel = relay.tunnel_config();
    let mut count = 0;
    let result = {
        let session = session::run(
            initiator,
            epoch,
            epoch + deadline,
            &mut scanner,
            &tunnel,
            &mut record,
        );
        tokio::pin!(session);
        loop {
            tokio::select! {
                result = &mut session => break result,
                Some(data) = adverts.recv() => {
                    count += 1;
                    fake.advert(PHONE_MAC, uuid, &data, Some(rssi)).await;
                }
            }
        }
    };
    Run {
        result,
        progress,
        adverts: count,
        phone,
    }
}

async fn sign_in_ok(uuid: &str, rssi: i16) {
    let run = sign_in(uuid, rssi, Duration::from_secs(20)).await;
    let outcome = run.result.expect("the session succeeds");
    assert_eq!(outcome.response, assertion());
    assert_eq!(
        outcome.response.get_assertion().unwrap().signature,
        vec![0x30, 0x44, 1, 2, 3]
    );
    assert_eq!(outcome.get_info, Some(GetInfoResponse::hybrid_phone()));
    assert_eq!(outcome.rssi, Some(rssi));
    assert_eq!(
        outcome.linking.expect("verified linking data").name,
        "Test phone"
    );
    assert_eq!(
        run.progress,
        vec![
            Progress::Scanning,
            Progress::PhoneFound { rssi: Some(rssi) },
            Progress::TunnelOpen,
            Progress::HandshakeDone,
            Progress::ResponseReceived,
        ]
    );
    assert_eq!(run.adverts, 1);
    let seen = tokio::time::timeout(SOON, run.phone)
        .await
        .expect("the phone ends")
        .unwrap()
        .unwrap();
    assert_eq!(seen, vec![request()]);
}

/// The phone's advert reaches BlueZ at -95 dBm, under the default floor (-90): the agent never
/// sees it, and gives up at its deadline.
async fn below_floor() {
    let deadline = Duration::from_millis(1500);
    let run = sign_in("fff9", -95, deadline).await;
    assert!(
        matches!(run.result, Err(SessionFailure::PhoneNotFound)),
        "{:?}",
        run.result
    );
    assert_eq!(
        run.result.unwrap_err().to_string(),
        "phone not found nearby"
    );
    assert_eq!(run.progress, vec![Progress::Scanning]);
    assert_eq!(run.adverts, 1, "the phone advertised");
    run.phone.abort();
}

/// Only devices without service data are around.
async fn nothing() {
    let relay = Relay::start().await;
    let mut fake = FakeBluez::start(Adapter::PoweredOn).await;
    let mut scanner = BtleScanner::new(ScanConfig::default()).await.unwrap();
    fake.wait_call("StartDiscovery").await;
    fake.command("device 7A:00:00:00:00:01 -40").await;
    let (initiator, _phone) = parties(32);
    let epoch = Instant::now();
    let deadline = Duration::from_millis(800);
    let mut progress = Vec::new();
    let result = session::run(
        initiator,
        epoch,
        epoch + deadline,
        &mut scanner,
        &relay.tunnel_config(),
        &mut |p| progress.push(p),
    )
    .await;
    assert!(
        matches!(result, Err(SessionFailure::PhoneNotFound)),
        "{result:?}"
    );
    assert!(epoch.elapsed() >= deadline);
    assert_eq!(progress, vec![Progress::Scanning]);
}

/// The user switches Bluetooth off while the agent waits for the phone: the session ends at once
/// (long before its deadline) with the scanner's reason.
async fn switched_off() {
    let relay = Relay::start().await;
    let mut fake = FakeBluez::start(Adapter::PoweredOn).await;
    let mut scanner = BtleScanner::new(ScanConfig::default()).await.unwrap();
    fake.wait_call("StartDiscovery").await;
    let (initiator, _phone) = parties(33);
    let epoch = Instant::now();
    let tunnel = relay.tunnel_config();
    let mut ignore = |_| {};
    let session = session::run(
        initiator,
        epoch,
        epoch + Duration::from_secs(60),
        &mut scanner,
        &tunnel,
        &mut ignore,
    );
    let (result, ()) = tokio::time::timeout(SOON, async {
        tokio::join!(session, fake.command("power off"))
    })
    .await
    .expect("the session ends soon after");
    match result {
        Err(SessionFailure::BleUnavailable(e @ BleError::Unavailable(_))) => {
            assert_eq!(
                e.to_string(),
                "Bluetooth unavailable: the Bluetooth adapter is off"
            );
        }
        other => panic!("expected BleUnavailable, got {other:?}"),
    }
}

/// The agent cannot even start scanning: the scanner says why.
async fn powered_off() {
    let _fake = FakeBluez::start(Adapter::PoweredOff).await;
    match BtleScanner::new(ScanConfig::default()).await {
        Err(e @ BleError::Unavailable(_)) => {
            assert_eq!(
                e.to_string(),
                "Bluetooth unavailable: the Bluetooth adapter is off"
            );
            // What the agent reports when it has the scanner's error.
            assert_eq!(
                SessionFailure::BleUnavailable(e).to_string(),
                "Bluetooth unavailable: the Bluetooth adapter is off"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}
