//! The session driver's discovery phase on the simulated BLE medium, without a relay: what it
//! does with other sessions' adverts, weak adverts, no adverts, a broken radio, and a phone
//! whose tunnel cannot be reached.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use device_agent::session::{self, Progress, SessionFailure, SessionOutcome, TunnelFailure};
use device_agent::tunnel::{TunnelConfig, TunnelError};
use hybrid::authenticator::{self, Authenticator};
use hybrid::ctap::get_assertion::GetAssertionRequest;
use hybrid::ctap::{CtapRequest, CtapResponse};
use hybrid::domain::DomainId;
use hybrid::initiator::Initiator;
use hybrid::session::{AuthenticatorTimeouts, InitiatorTimeouts};
use hybrid::test_util::{ScriptedHandler, SeededRng};
use hybrid::tunnel::RoutingId;
use hybrid::url::{FidoUrl, RequestType};
use hybrid::{QrSecret, Time};
use p256::SecretKey;
use p256::elliptic_curve::Generate;
use tether_ble::sim::{Advertisement, SimMedium};
use tether_ble::{Advert, AdvertSource, BleError, SERVICE_DATA_LEN, ScanConfig, ServiceUuid};
use tokio::time::Instant;

/// A client session and the advert its phone would send.
struct Session {
    initiator: Initiator,
    advert: [u8; SERVICE_DATA_LEN],
}

fn request() -> CtapRequest {
    CtapRequest::GetAssertion(GetAssertionRequest::new("example.com", [0x11; 32]))
}

/// A session from `seed` whose phone advertises routing id 010203 at `domain`.
fn session(seed: u64, timeouts: InitiatorTimeouts, domain: DomainId) -> Session {
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
        timeouts,
        Time::ZERO,
        &mut rng,
    );
    let mut phone = Authenticator::new(
        url,
        ScriptedHandler::new(CtapResponse::ok(vec![0xa0])),
        None,
        AuthenticatorTimeouts::default(),
        &mut rng,
    );
    phone
        .handle_routing_id(Time::ZERO, RoutingId::new([1, 2, 3]), domain)
        .unwrap();
    let Some(authenticator::Event::AdvertReady(advert)) = phone.poll_event() else {
        panic!("no advert");
    };
    Session { initiator, advert }
}

fn advertise(medium: &SimMedium, data: [u8; SERVICE_DATA_LEN], rssi: Option<i16>) -> Advertisement {
    medium
        .advertise(Advert {
            service: ServiceUuid::Fido,
            data,
            rssi,
        })
        .unwrap()
}

/// Runs the driver with `deadline` from now; returns the result, the progress seen and the
/// time it took.
async fn drive(
    initiator: Initiator,
    ble: &mut dyn AdvertSource,
    tunnel: &TunnelConfig,
    deadline: Duration,
) -> (
    Result<SessionOutcome, SessionFailure>,
    Vec<Progress>,
    Duration,
) {
    let epoch = Instant::now();
    let mut seen = Vec::new();
    let mut record = |p| seen.push(p);
    let result = session::run(initiator, epoch, epoch + deadline, ble, tunnel, &mut record).await;
    (result, seen, epoch.elapsed())
}

const DEADLINE: Duration = Duration::from_millis(300);

#[tokio::test]
async fn no_advert_is_phone_not_found_at_the_deadline() {
    let medium = SimMedium::in_process();
    let mut scanner = medium.scanner(ScanConfig::default()).unwrap();
    let s = session(1, InitiatorTimeouts::default(), DomainId(256));
    let (result, progress, took) = drive(
        s.initiator,
        &mut scanner,
        &TunnelConfig::default(),
        DEADLINE,
    )
    .await;
    assert!(
        matches!(result, Err(SessionFailure::PhoneNotFound)),
        "{result:?}"
    );
    assert_eq!(result.unwrap_err().to_string(), "phone not found nearby");
    assert_eq!(progress, vec![Progress::Scanning]);
    assert!(took >= DEADLINE && took < DEADLINE * 10, "took {took:?}");
}

#[tokio::test]
async fn the_sessions_own_discovery_timeout_is_phone_not_found_too() {
    let medium = SimMedium::in_process();
    let mut scanner = medium.scanner(ScanConfig::default()).unwrap();
    let timeouts = InitiatorTimeouts {
        discovery: Duration::from_millis(100),
        ..InitiatorTimeouts::default()
    };
    let s = session(2, timeouts, DomainId(256));
    let (result, _, took) = drive(
        s.initiator,
        &mut scanner,
        &TunnelConfig::default(),
        Duration::from_secs(30),
    )
    .await;
    assert!(
        matches!(result, Err(SessionFailure::PhoneNotFound)),
        "{result:?}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn adverts_of_other_sessions_are_ignored() {
    let medium = SimMedium::in_process().with_interval(Duration::from_millis(5));
    let mut scanner = medium.scanner(ScanConfig::default()).unwrap();
    let ours = session(3, InitiatorTimeouts::default(), DomainId(256));
    let other = session(4, InitiatorTimeouts::default(), DomainId(256));
    let _other = advertise(&medium, other.advert, Some(-40));
    let _noise = advertise(&medium, [0x5a; SERVICE_DATA_LEN], Some(-40));
    let _google = medium
        .advertise(Advert {
            service: ServiceUuid::Google,
            data: [0; SERVICE_DATA_LEN],
            rssi: None,
        })
        .unwrap();
    let (result, progress, _) = drive(
        ours.initiator,
        &mut scanner,
        &TunnelConfig::default(),
        DEADLINE,
    )
    .await;
    assert!(
        matches!(result, Err(SessionFailure::PhoneNotFound)),
        "{result:?}"
    );
    assert_eq!(progress, vec![Progress::Scanning]);
}

#[tokio::test]
async fn an_advert_below_the_rssi_floor_is_phone_not_found() {
    let medium = SimMedium::in_process().with_interval(Duration::from_millis(5));
    let mut scanner = medium
        .scanner(ScanConfig {
            rssi_floor: Some(-70),
        })
        .unwrap();
    let s = session(5, InitiatorTimeouts::default(), DomainId(256));
    let _far = advertise(&medium, s.advert, Some(-85));
    let (result, progress, _) = drive(
        s.initiator,
        &mut scanner,
        &TunnelConfig::default(),
        DEADLINE,
    )
    .await;
    assert!(
        matches!(result, Err(SessionFailure::PhoneNotFound)),
        "{result:?}"
    );
    assert_eq!(progress, vec![Progress::Scanning]);
}

/// The phone is found (across the directory medium), but its tunnel server cannot be reached.
#[tokio::test]
async fn a_found_phone_with_an_unreachable_relay_is_a_tunnel_failure() {
    let dir = tempfile::tempdir().unwrap();
    let medium = SimMedium::at_dir(dir.path()).unwrap();
    let mut scanner = medium.scanner(ScanConfig::default()).unwrap();
    let s = session(6, InitiatorTimeouts::default(), DomainId(256));
    let _near = advertise(&medium, s.advert, Some(-48));
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let domain = DomainId(256).domain().unwrap();
    let mut tunnel = TunnelConfig {
        danger_allow_plaintext: true,
        ..TunnelConfig::default()
    };
    tunnel.domains.insert(domain, format!("ws://{addr}"));
    let (result, progress, _) =
        drive(s.initiator, &mut scanner, &tunnel, Duration::from_secs(10)).await;
    assert!(
        matches!(
            result,
            Err(SessionFailure::TunnelFailed(TunnelFailure::Connect(
                TunnelError::Unreachable(_)
            )))
        ),
        "{result:?}"
    );
    assert_eq!(
        progress,
        vec![Progress::Scanning, Progress::PhoneFound { rssi: Some(-48) }]
    );
}

#[tokio::test]
async fn a_plaintext_mapping_needs_the_danger_option() {
    let medium = SimMedium::in_process();
    let mut scanner = medium.scanner(ScanConfig::default()).unwrap();
    let s = session(7, InitiatorTimeouts::default(), DomainId::GOOGLE);
    let _near = advertise(&medium, s.advert, None);
    let mut tunnel = TunnelConfig::default();
    tunnel
        .domains
        .insert("cable.ua5v.com".into(), "ws://127.0.0.1:9".into());
    let (result, _, _) = drive(s.initiator, &mut scanner, &tunnel, Duration::from_secs(10)).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            SessionFailure::TunnelFailed(TunnelFailure::Connect(TunnelError::PlaintextRefused))
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "tunnel failed: plaintext ws:// tunnel refused (only allowed with danger_allow_plaintext)"
    );
}

/// A radio that fails.
struct Broken(Option<BleError>);

#[async_trait::async_trait]
impl AdvertSource for Broken {
    async fn next_advert(&mut self) -> Result<Advert, BleError> {
        Err(self.0.take().unwrap_or(BleError::Closed))
    }
}

#[tokio::test]
async fn a_broken_radio_is_ble_unavailable() {
    let s = session(8, InitiatorTimeouts::default(), DomainId(256));
    let mut radio = Broken(Some(BleError::Unavailable(
        "the Bluetooth adapter is off".into(),
    )));
    let (result, _, _) = drive(
        s.initiator,
        &mut radio,
        &TunnelConfig::default(),
        Duration::from_secs(10),
    )
    .await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            SessionFailure::BleUnavailable(BleError::Unavailable(_))
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "Bluetooth unavailable: the Bluetooth adapter is off"
    );
}
