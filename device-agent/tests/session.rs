//! The session driver end to end through a real relay (the bridge's `/cable/…` routes on
//! 127.0.0.1) and the simulated BLE medium. The phone is `hybrid`'s authenticator with a
//! scripted CTAP handler, driven by a small loop here that can also misbehave: drop the tunnel,
//! damage a message, or advertise a tunnel that does not exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use device_agent::session::{self, Progress, SessionFailure, SessionOutcome, TunnelFailure};
use device_agent::tunnel::{self, HeaderMap, TunnelConfig};
use hybrid::authenticator::{self, Authenticator, LinkingOffer};
use hybrid::ctap::get_assertion::{GetAssertionRequest, GetAssertionResponse};
use hybrid::ctap::get_info::GetInfoResponse;
use hybrid::ctap::{CtapRequest, CtapResponse, CtapStatus};
use hybrid::domain::DomainId;
use hybrid::initiator::Initiator;
use hybrid::session::{AuthenticatorTimeouts, InitiatorTimeouts, Stage};
use hybrid::test_util::{ScriptedHandler, SeededRng};
use hybrid::tunnel::RoutingId;
use hybrid::url::{FidoUrl, RequestType};
use hybrid::{QrSecret, Secret, Time};
use p256::SecretKey;
use p256::elliptic_curve::Generate;
use tether_ble::sim::SimMedium;
use tether_ble::{Advert, ScanConfig, ServiceUuid};
use tokio::time::Instant;

/// The relay's domain in adverts: the first hashed domain id.
const DOMAIN_ID: DomainId = DomainId(256);
const PHONE_RSSI: i16 = -52;
const DEADLINE: Duration = Duration::from_secs(20);

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
        // Ready when it answers HTTP (the listener accepts before the state is built).
        let relay = Self {
            addr,
            stop: Some(stop),
            _dir: dir,
        };
        relay.wait_ready().await;
        relay
    }

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
struct Parties {
    initiator: Initiator,
    phone: Authenticator<ScriptedHandler>,
}

fn parties(seed: u64, reply: CtapResponse, linking: bool) -> Parties {
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
    let offer = linking.then(|| LinkingOffer {
        contact_id: b"contact".to_vec(),
        link_id: [8; 8],
        link_secret: Secret::new([9; 32]),
        identity: SecretKey::generate_from_rng(&mut rng),
        name: "Test phone".to_owned(),
    });
    let phone = Authenticator::new(
        url,
        ScriptedHandler::new(reply),
        offer,
        AuthenticatorTimeouts::default(),
        &mut rng,
    );
    Parties { initiator, phone }
}

/// How the simulated phone behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Script {
    /// Follows the protocol.
    Honest,
    /// Closes its tunnel as soon as the client's first message arrives.
    DropAfterFirstMessage,
    /// Flips a bit in its `n`-th outgoing message (0: Noise message 2, 1: post-handshake).
    Flip(usize),
    /// Advertises routing id 000000 without opening a tunnel.
    NoTunnel,
}

/// What the phone ended with: the requests its handler saw, or why it stopped.
type PhoneResult = Result<Vec<CtapRequest>, String>;

async fn run_phone(
    relay: SocketAddr,
    medium: SimMedium,
    mut phone: Authenticator<ScriptedHandler>,
    script: Script,
) -> PhoneResult {
    let epoch = Instant::now();
    let now = || Time::from_millis(epoch.elapsed().as_millis() as u64);
    let config = TunnelConfig {
        danger_allow_plaintext: true,
        ..TunnelConfig::default()
    };
    if script == Script::NoTunnel {
        phone
            .handle_routing_id(now(), RoutingId::new([0, 0, 0]), DOMAIN_ID)
            .map_err(|e| e.to_string())?;
        let Some(authenticator::Event::AdvertReady(data)) = phone.poll_event() else {
            return Err("no advert".into());
        };
        let _ad = advertise(&medium, data);
        // Advertise until the test ends (the task is aborted).
        std::future::pending::<()>().await;
    }
    let url = format!("ws://{relay}/cable/new/{}", phone.tunnel_id());
    let mut conn = tunnel::connect(&config, &url, HeaderMap::new())
        .await
        .map_err(|e| format!("phone tunnel: {e}"))?;
    let routing_id = conn.routing_id().map_err(|e| e.to_string())?;
    phone
        .handle_routing_id(now(), routing_id, DOMAIN_ID)
        .map_err(|e| e.to_string())?;
    let mut advertisement = None;
    let mut sent = 0;
    loop {
        while let Some(event) = phone.poll_event() {
            match event {
                authenticator::Event::AdvertReady(data) => {
                    advertisement = Some(advertise(&medium, data));
                }
                authenticator::Event::HandshakeComplete => advertisement = None,
                authenticator::Event::Finished => return Ok(phone.handler().seen.clone()),
                _ => {}
            }
        }
        while let Some(mut message) = phone.poll_transmit() {
            if script == Script::Flip(sent) {
                let last = message.len() - 1;
                message[last] ^= 0x01;
            }
            sent += 1;
            conn.send(message).await.map_err(|e| e.to_string())?;
        }
        match conn.recv().await {
            Ok(Some(message)) => {
                if script == Script::DropAfterFirstMessage {
                    conn.close().await;
                    drop(advertisement);
                    return Err("phone dropped the tunnel".into());
                }
                phone
                    .handle_tunnel_message(now(), &message)
                    .map_err(|e| e.to_string())?;
            }
            Ok(None) => phone
                .handle_tunnel_closed(now())
                .map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn advertise(medium: &SimMedium, data: [u8; 20]) -> tether_ble::sim::Advertisement {
    medium
        .advertise(Advert {
            service: ServiceUuid::Fido,
            data,
            rssi: Some(PHONE_RSSI),
        })
        .unwrap()
}

struct Run {
    result: Result<SessionOutcome, SessionFailure>,
    progress: Vec<Progress>,
    phone: Option<PhoneResult>,
}

/// One session: the phone (following `script`) and the agent (scanning with `scan`), with
/// `foreign` other sessions' phones advertising nearby too.
async fn sign_in(reply: CtapResponse, script: Script, scan: ScanConfig, foreign: bool) -> Run {
    let relay = Relay::start().await;
    let medium = SimMedium::in_process().with_interval(Duration::from_millis(10));
    let mut scanner = medium.scanner(scan).unwrap();
    let Parties { initiator, phone } = parties(21, reply, true);
    // Another client's phone nearby, with a real tunnel on the same relay.
    let other = foreign.then(|| {
        let Parties { phone, .. } = parties(22, assertion(), false);
        tokio::spawn(run_phone(relay.addr, medium.clone(), phone, Script::Honest))
    });
    let phone = tokio::spawn(run_phone(relay.addr, medium.clone(), phone, script));
    let epoch = Instant::now();
    let mut progress = Vec::new();
    let mut record = |p| progress.push(p);
    let result = session::run(
        initiator,
        epoch,
        epoch + DEADLINE,
        &mut scanner,
        &relay.tunnel_config(),
        &mut record,
    )
    .await;
    let phone = if script == Script::NoTunnel {
        phone.abort();
        None
    } else {
        Some(
            tokio::time::timeout(Duration::from_secs(10), phone)
                .await
                .expect("the phone ends")
                .unwrap(),
        )
    };
    if let Some(other) = other {
        other.abort();
    }
    Run {
        result,
        progress,
        phone,
    }
}

fn honest(reply: CtapResponse) -> impl std::future::Future<Output = Run> {
    sign_in(reply, Script::Honest, ScanConfig::default(), false)
}

#[tokio::test]
async fn sign_in_through_the_relay() {
    let run = honest(assertion()).await;
    let outcome = run.result.expect("the session succeeds");
    assert_eq!(outcome.response, assertion());
    assert_eq!(
        outcome.response.get_assertion().unwrap().signature,
        vec![0x30, 0x44, 1, 2, 3]
    );
    assert_eq!(outcome.get_info, Some(GetInfoResponse::hybrid_phone()));
    assert_eq!(outcome.rssi, Some(PHONE_RSSI));
    let linking = outcome.linking.expect("verified linking data");
    assert_eq!(linking.name, "Test phone");
    assert_eq!(linking.contact_id, b"contact");
    assert_eq!(
        run.progress,
        vec![
            Progress::Scanning,
            Progress::PhoneFound {
                rssi: Some(PHONE_RSSI)
            },
            Progress::TunnelOpen,
            Progress::HandshakeDone,
            Progress::ResponseReceived,
        ]
    );
    // The phone got exactly the request, then shutdown.
    assert_eq!(run.phone.unwrap().unwrap(), vec![request()]);
}

#[tokio::test]
async fn another_sessions_phone_nearby_is_ignored() {
    let run = sign_in(assertion(), Script::Honest, ScanConfig::default(), true).await;
    let outcome = run.result.expect("the session succeeds");
    assert_eq!(outcome.response, assertion());
    assert_eq!(run.phone.unwrap().unwrap(), vec![request()]);
}

#[tokio::test]
async fn a_phone_below_the_rssi_floor_is_not_found() {
    let relay = Relay::start().await;
    let medium = SimMedium::in_process().with_interval(Duration::from_millis(10));
    let mut scanner = medium
        .scanner(ScanConfig {
            rssi_floor: Some(-40),
        })
        .unwrap();
    let Parties { initiator, phone } = parties(23, assertion(), false);
    let phone = tokio::spawn(run_phone(relay.addr, medium.clone(), phone, Script::Honest));
    let epoch = Instant::now();
    let mut progress = Vec::new();
    let mut record = |p| progress.push(p);
    let result = session::run(
        initiator,
        epoch,
        epoch + Duration::from_millis(500),
        &mut scanner,
        &relay.tunnel_config(),
        &mut record,
    )
    .await;
    phone.abort();
    assert!(
        matches!(result, Err(SessionFailure::PhoneNotFound)),
        "{result:?}"
    );
    assert_eq!(progress, vec![Progress::Scanning]);
}

#[tokio::test]
async fn no_phone_is_not_found_at_the_deadline() {
    let relay = Relay::start().await;
    let medium = SimMedium::in_process();
    let mut scanner = medium.scanner(ScanConfig::default()).unwrap();
    let Parties { initiator, .. } = parties(24, assertion(), false);
    let epoch = Instant::now();
    let deadline = Duration::from_millis(300);
    let result = session::run(
        initiator,
        epoch,
        epoch + deadline,
        &mut scanner,
        &relay.tunnel_config(),
        &mut |_| {},
    )
    .await;
    assert!(
        matches!(result, Err(SessionFailure::PhoneNotFound)),
        "{result:?}"
    );
    assert!(epoch.elapsed() >= deadline);
}

#[tokio::test]
async fn a_relay_refusal_is_a_tunnel_failure() {
    let run = sign_in(assertion(), Script::NoTunnel, ScanConfig::default(), false).await;
    let err = run.result.unwrap_err();
    match &err {
        SessionFailure::TunnelFailed(TunnelFailure::Refused { status, .. }) => {
            assert_eq!(*status, 404);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("tunnel failed: the relay refused the tunnel: HTTP 404"),
        "{err}"
    );
    assert_eq!(
        run.progress,
        vec![
            Progress::Scanning,
            Progress::PhoneFound {
                rssi: Some(PHONE_RSSI)
            }
        ]
    );
}

#[tokio::test]
async fn a_tunnel_dropped_mid_handshake_is_a_tunnel_failure() {
    let run = sign_in(
        assertion(),
        Script::DropAfterFirstMessage,
        ScanConfig::default(),
        false,
    )
    .await;
    let err = run.result.unwrap_err();
    assert!(
        matches!(
            err,
            SessionFailure::TunnelFailed(TunnelFailure::Dropped(Stage::Handshake))
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "tunnel failed: the tunnel closed during Handshake"
    );
    assert_eq!(run.phone.unwrap().unwrap_err(), "phone dropped the tunnel");
    assert_eq!(run.progress.last(), Some(&Progress::TunnelOpen));
}

#[tokio::test]
async fn a_tampered_post_handshake_message_is_rejected() {
    let run = sign_in(assertion(), Script::Flip(1), ScanConfig::default(), false).await;
    let err = run.result.unwrap_err();
    assert!(
        matches!(
            err,
            SessionFailure::TunnelFailed(TunnelFailure::Tampered(_))
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("tunnel failed: tunnel message rejected as tampered: "),
        "{err}"
    );
    // The agent never answered: the phone saw no request.
    assert!(run.phone.unwrap().is_err());
}

#[tokio::test]
async fn a_tampered_handshake_message_is_rejected() {
    let run = sign_in(assertion(), Script::Flip(0), ScanConfig::default(), false).await;
    let err = run.result.unwrap_err();
    assert!(
        matches!(
            err,
            SessionFailure::TunnelFailed(TunnelFailure::Handshake(_))
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("tunnel failed: handshake failed (message modified or wrong phone): "),
        "{err}"
    );
    assert_eq!(run.progress.last(), Some(&Progress::TunnelOpen));
}

#[tokio::test]
async fn an_authenticator_error_status_is_surfaced() {
    let run = honest(CtapResponse::error(CtapStatus::OperationDenied)).await;
    let err = run.result.unwrap_err();
    assert!(
        matches!(
            err,
            SessionFailure::Authenticator(CtapStatus::OperationDenied)
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "authenticator error CTAP2_ERR_OPERATION_DENIED (0x27)"
    );
    assert_eq!(run.progress.last(), Some(&Progress::HandshakeDone));
    // The phone handled the request and the exchange ended cleanly.
    assert_eq!(run.phone.unwrap().unwrap(), vec![request()]);
}
