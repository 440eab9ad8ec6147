#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The simulated phone against the device agent's session driver, through the bridge's relay on
//! 127.0.0.1 and the in-process simulated BLE medium: real WebSockets, real adverts.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::clock::{SharedClock, SystemClock};
use bridge::config::Config;
use companion::authenticator::{SoftAuthenticator, SoftAuthenticatorConfig};
use companion::phone::{
    AnswerOptions, PhoneError, PhoneEvent, PhoneOutcome, PhonePolicy, SimulatedPhone,
};
use device_agent::session::{self, SessionFailure, SessionOutcome};
use device_agent::tunnel::{TunnelConfig, TunnelError};
use hybrid::authenticator::LinkingOffer;
use hybrid::ctap::{
    CtapCommand, CtapRequest, CtapStatus, GetAssertionRequest, MakeCredentialRequest,
    PublicKeyCredentialParameters, PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
use hybrid::domain::DomainId;
use hybrid::initiator::Initiator;
use hybrid::session::InitiatorTimeouts;
use hybrid::test_util::SeededRng;
use hybrid::url::{FidoUrl, RequestType};
use hybrid::{QrSecret, Secret, Time};
use p256::SecretKey;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::Generate;
use tether_ble::ScanConfig;
use tether_ble::sim::SimMedium;
use tokio::time::Instant;

const RP: &str = "example.com";
/// A hashed domain id: its host name is mapped to the test relay on the agent's side.
const DOMAIN: DomainId = DomainId(256);

/// A bridge (with its relay) on 127.0.0.1:0 for one test.
struct Relay {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start_relay() -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let clock: SharedClock = Arc::new(SystemClock);
    tokio::spawn(async move {
        bridge::run(listener, config, clock, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Relay {
        addr,
        _dir: dir,
        stop: Some(stop),
    }
}

/// Everything one test needs: the relay, the medium and the phone.
struct World {
    relay: Relay,
    medium: SimMedium,
    phone: SimulatedPhone,
    _state: tempfile::TempDir,
}

impl World {
    async fn new(config: SoftAuthenticatorConfig) -> Self {
        let state = tempfile::tempdir().unwrap();
        Self::with_state(config, state).await
    }

    async fn with_state(config: SoftAuthenticatorConfig, state: tempfile::TempDir) -> Self {
        let relay = start_relay().await;
        let medium = SimMedium::in_process().with_interval(Duration::from_millis(20));
        let authenticator = SoftAuthenticator::open(state.path(), config).unwrap();
        let phone = SimulatedPhone::new(
            authenticator,
            Arc::new(medium.clone()),
            TunnelConfig {
                danger_allow_plaintext: true,
                ..TunnelConfig::default()
            },
        );
        Self {
            relay,
            medium,
            phone,
            _state: state,
        }
    }

    fn relay_url(&self) -> String {
        format!("ws://{}", self.relay.addr)
    }

    /// The agent's view: the advertised domain's host name is this relay.
    fn agent_tunnels(&self) -> TunnelConfig {
        let mut config = TunnelConfig {
            danger_allow_plaintext: true,
            ..TunnelConfig::default()
        };
        config
            .domains
            .insert(DOMAIN.domain().unwrap(), self.relay_url());
        config
    }

    fn options(&self, policy: PhonePolicy) -> AnswerOptions {
        let mut options = AnswerOptions::new(self.relay_url(), DOMAIN);
        options.policy = policy;
        options
    }

    /// Runs the phone (answering as `options` say) and the device agent (sending `request`)
    /// until both end; the agent gives up after `agent_deadline`.
    async fn sign_in(
        &self,
        seed: u64,
        request: CtapRequest,
        options: AnswerOptions,
        agent_deadline: Duration,
    ) -> Run {
        let mut rng = SeededRng::new(seed);
        let identity = SecretKey::generate_from_rng(&mut rng);
        let mut secret = [0u8; 16];
        rand_fill(&mut rng, &mut secret);
        let request_type = match request {
            CtapRequest::MakeCredential(_) => RequestType::MakeCredential,
            _ => RequestType::GetAssertion,
        };
        let url = FidoUrl::new(
            identity.public_key(),
            QrSecret::new(secret),
            request_type,
            1_767_225_600,
            true,
        );
        // The phone parses the URL it was given, as a companion app would after claiming it.
        let url = FidoUrl::parse(&url.encode()).unwrap();
        let epoch = Instant::now();
        let initiator = Initiator::new(
            identity,
            QrSecret::new(secret),
            &request,
            InitiatorTimeouts::default(),
            Time::ZERO,
            &mut rng,
        );
        let mut scanner = self.medium.scanner(ScanConfig::default()).unwrap();
        let tunnels = self.agent_tunnels();
        let events = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&events);
        let mut record = move |e: PhoneEvent| recorded.lock().unwrap().push(e);
        let mut ignore_progress = |_: session::Progress| {};
        let (phone, agent) = tokio::join!(
            self.phone.answer(&url, options, &mut record),
            session::run(
                initiator,
                epoch,
                epoch + agent_deadline,
                &mut scanner,
                &tunnels,
                &mut ignore_progress,
            ),
        );
        let events = events.lock().unwrap().clone();
        Run {
            phone,
            agent,
            events,
        }
    }
}

struct Run {
    phone: Result<PhoneOutcome, PhoneError>,
    agent: Result<SessionOutcome, SessionFailure>,
    events: Vec<PhoneEvent>,
}

fn rand_fill(rng: &mut SeededRng, out: &mut [u8]) {
    use rand_core::TryRng;
    rng.try_fill_bytes(out).unwrap();
}

fn registration() -> CtapRequest {
    let mut request = MakeCredentialRequest::new(
        [0x11; 32],
        PublicKeyCredentialRpEntity {
            id: RP.to_owned(),
            name: Some("Example".to_owned()),
        },
        PublicKeyCredentialUserEntity {
            id: vec![7; 16],
            name: Some("alice".to_owned()),
            display_name: Some("Alice".to_owned()),
        },
        vec![PublicKeyCredentialParameters::ES256],
    );
    request.options.rk = Some(true);
    request.options.uv = Some(true);
    request.into()
}

fn assertion(client_data_hash: [u8; 32]) -> CtapRequest {
    let mut request = GetAssertionRequest::new(RP, client_data_hash);
    request.options.uv = Some(true);
    request.into()
}

/// The credential public key from makeCredential's authData.
fn credential_key(auth_data: &[u8]) -> (Vec<u8>, VerifyingKey) {
    assert_eq!(auth_data[32] & 0x45, 0x45, "UP, UV and AT must be set");
    let rest = &auth_data[37..];
    let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
    let id = rest[18..18 + len].to_vec();
    let key = hybrid::cbor::decode(&rest[18 + len..], hybrid::cbor::Strictness::Canonical).unwrap();
    let hybrid::cbor::Value::Map(map) = key else {
        panic!("COSE key is not a map")
    };
    let coordinate = |label: i64| {
        map.iter()
            .find_map(|(k, v)| match (k, v) {
                (hybrid::cbor::Value::Integer(i), hybrid::cbor::Value::Bytes(b))
                    if i128::from(*i) == i128::from(label) =>
                {
                    Some(b.clone())
                }
                _ => None,
            })
            .unwrap()
    };
    let mut sec1 = vec![4u8];
    sec1.extend(coordinate(-2));
    sec1.extend(coordinate(-3));
    (id, VerifyingKey::from_sec1_bytes(&sec1).unwrap())
}

fn answered(command: CtapCommand, status: CtapStatus) -> PhoneOutcome {
    PhoneOutcome::Answered { command, status }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_then_sign_in_through_the_relay() {
    let world = World::new(SoftAuthenticatorConfig::default()).await;
    let run = world
        .sign_in(
            1,
            registration(),
            world.options(PhonePolicy::APPROVE),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        run.phone.unwrap(),
        answered(CtapCommand::MakeCredential, CtapStatus::Ok)
    );
    let outcome = run.agent.unwrap();
    let info = outcome.get_info.unwrap();
    assert!(info.transports.iter().any(|t| t == "hybrid"));
    assert_eq!(outcome.rssi, Some(-50));
    assert!(outcome.linking.is_none());
    let made = outcome.response.make_credential().unwrap();
    let (credential_id, key) = credential_key(&made.auth_data);
    assert_eq!(world.phone.authenticator().store().len(), 1);

    // The phone's progress, in order.
    assert!(matches!(
        run.events.as_slice(),
        [
            PhoneEvent::TunnelRegistered { .. },
            PhoneEvent::Advertising { .. },
            PhoneEvent::HandshakeComplete,
            PhoneEvent::RequestHandled {
                command: CtapCommand::MakeCredential,
                status: CtapStatus::Ok
            },
        ]
    ));

    // A later sign-in, usernameless.
    let client_data_hash = [0x22; 32];
    let run = world
        .sign_in(
            2,
            assertion(client_data_hash),
            world.options(PhonePolicy::APPROVE),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        run.phone.unwrap(),
        answered(CtapCommand::GetAssertion, CtapStatus::Ok)
    );
    let asserted = run.agent.unwrap().response.get_assertion().unwrap();
    assert_eq!(asserted.credential.unwrap().id, credential_id);
    assert_eq!(asserted.user.unwrap().id, vec![7; 16]);
    assert_eq!(asserted.auth_data[32] & 0x05, 0x05, "UP and UV");
    assert_eq!(&asserted.auth_data[33..37], &1u32.to_be_bytes());
    let mut signed = asserted.auth_data.clone();
    signed.extend_from_slice(&client_data_hash);
    key.verify(&signed, &Signature::from_der(&asserted.signature).unwrap())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_reaches_the_agent_as_operation_denied() {
    let world = World::new(SoftAuthenticatorConfig::default()).await;
    let run = world
        .sign_in(
            3,
            registration(),
            world.options(PhonePolicy::Deny),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        run.phone.unwrap(),
        answered(CtapCommand::MakeCredential, CtapStatus::OperationDenied)
    );
    assert!(matches!(
        run.agent,
        Err(SessionFailure::Authenticator(CtapStatus::OperationDenied))
    ));
    assert!(world.phone.authenticator().store().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_never_advertises() {
    let world = World::new(SoftAuthenticatorConfig::default()).await;
    let run = world
        .sign_in(
            4,
            assertion([1; 32]),
            world.options(PhonePolicy::Ignore),
            Duration::from_millis(500),
        )
        .await;
    assert_eq!(run.phone.unwrap(), PhoneOutcome::Ignored);
    assert!(run.events.is_empty());
    assert!(matches!(run.agent, Err(SessionFailure::PhoneNotFound)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_holds_the_command_then_answers_user_action_timeout() {
    let world = World::new(SoftAuthenticatorConfig::default()).await;
    let started = Instant::now();
    let run = world
        .sign_in(
            5,
            registration(),
            world.options(PhonePolicy::Timeout {
                after: Duration::from_millis(300),
            }),
            Duration::from_secs(20),
        )
        .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        run.phone.unwrap(),
        answered(CtapCommand::MakeCredential, CtapStatus::UserActionTimeout)
    );
    assert!(matches!(
        run.agent,
        Err(SessionFailure::Authenticator(CtapStatus::UserActionTimeout))
    ));
    assert!(world.phone.authenticator().store().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_user_verification_the_flag_is_clear() {
    let world = World::new(SoftAuthenticatorConfig::default()).await;
    let mut request = MakeCredentialRequest::new(
        [0x11; 32],
        PublicKeyCredentialRpEntity {
            id: RP.to_owned(),
            name: None,
        },
        PublicKeyCredentialUserEntity {
            id: vec![8; 16],
            name: Some("bob".to_owned()),
            display_name: None,
        },
        vec![PublicKeyCredentialParameters::ES256],
    );
    request.options.rk = Some(true);
    let run = world
        .sign_in(
            6,
            request.into(),
            world.options(PhonePolicy::Approve {
                user_verification: false,
            }),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        run.phone.unwrap(),
        answered(CtapCommand::MakeCredential, CtapStatus::Ok)
    );
    let outcome = run.agent.unwrap();
    assert!(!outcome.get_info.unwrap().options.contains_key("uv"));
    let auth_data = outcome.response.make_credential().unwrap().auth_data;
    assert_eq!(auth_data[32] & 0x05, 0x01, "UP without UV");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_data_reaches_the_agent_verified() {
    let world = World::new(SoftAuthenticatorConfig::default()).await;
    let mut rng = SeededRng::new(99);
    let mut options = world.options(PhonePolicy::APPROVE);
    options.linking = Some(LinkingOffer {
        contact_id: b"contact".to_vec(),
        link_id: [8; 8],
        link_secret: Secret::new([9; 32]),
        identity: SecretKey::generate_from_rng(&mut rng),
        name: "Simulated phone".to_owned(),
    });
    let run = world
        .sign_in(7, registration(), options, Duration::from_secs(20))
        .await;
    assert!(run.phone.is_ok());
    let linking = run
        .agent
        .unwrap()
        .linking
        .expect("no verified linking data");
    assert_eq!(linking.name, "Simulated phone");
    assert_eq!(linking.link_id, [8; 8]);
    assert_eq!(linking.contact_id, b"contact".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_failures_are_typed() {
    let world = World::new(SoftAuthenticatorConfig::default()).await;
    let url = {
        let mut rng = SeededRng::new(11);
        let identity = SecretKey::generate_from_rng(&mut rng);
        FidoUrl::new(
            identity.public_key(),
            QrSecret::new([5; 16]),
            RequestType::GetAssertion,
            1_767_225_600,
            true,
        )
    };
    let mut quiet = |_: PhoneEvent| {};

    // An unassigned domain id is refused before anything is opened.
    let got = world
        .phone
        .answer(
            &url,
            AnswerOptions::new(world.relay_url(), DomainId(7)),
            &mut quiet,
        )
        .await;
    assert!(matches!(got, Err(PhoneError::UnknownDomain(DomainId(7)))));

    // Nothing listens: the relay is unreachable.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nowhere = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let got = world
        .phone
        .answer(&url, AnswerOptions::new(nowhere, DOMAIN), &mut quiet)
        .await;
    assert!(
        matches!(got, Err(PhoneError::Register(TunnelError::Unreachable(_)))),
        "{got:?}"
    );

    // The same tunnel id cannot be registered twice: the second phone is refused (409)
    // while the first waits for its client.
    let mut first_options = world.options(PhonePolicy::APPROVE);
    first_options.timeouts.connect = Duration::from_millis(800);
    let second_phone = world.phone.clone();
    let (registered_tx, registered_rx) = tokio::sync::oneshot::channel();
    let mut registered_tx = Some(registered_tx);
    let mut on_first = move |e: PhoneEvent| {
        if matches!(e, PhoneEvent::Advertising { .. })
            && let Some(tx) = registered_tx.take()
        {
            let _ = tx.send(());
        }
    };
    let first = world.phone.answer(&url, first_options, &mut on_first);
    let second = async {
        registered_rx.await.unwrap();
        second_phone
            .answer(&url, world.options(PhonePolicy::APPROVE), &mut |_| {})
            .await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(
        matches!(
            second,
            Err(PhoneError::Register(TunnelError::Refused {
                status: 409,
                ..
            }))
        ),
        "{second:?}"
    );
    // Nobody came for the first: its connect deadline ends it.
    assert!(
        matches!(
            first,
            Err(PhoneError::Session(hybrid::session::SessionError::Timeout(
                hybrid::session::Stage::Connect
            )))
        ),
        "{first:?}"
    );

    // Plaintext relays need the danger option.
    let strict = SimulatedPhone::new(
        SoftAuthenticator::open(
            tempfile::tempdir().unwrap().path(),
            SoftAuthenticatorConfig::default(),
        )
        .unwrap(),
        Arc::new(world.medium.clone()),
        TunnelConfig::default(),
    );
    let got = strict
        .answer(&url, world.options(PhonePolicy::APPROVE), &mut quiet)
        .await;
    assert!(
        matches!(
            got,
            Err(PhoneError::Register(TunnelError::PlaintextRefused))
        ),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passkeys_survive_a_new_phone_on_the_same_state() {
    let state = tempfile::tempdir().unwrap();
    let state_path = state.path().to_path_buf();
    let world = World::with_state(SoftAuthenticatorConfig::default(), state).await;
    let run = world
        .sign_in(
            8,
            registration(),
            world.options(PhonePolicy::APPROVE),
            Duration::from_secs(20),
        )
        .await;
    let (credential_id, key) = credential_key(
        &run.agent
            .unwrap()
            .response
            .make_credential()
            .unwrap()
            .auth_data,
    );
    drop(world.phone);
    let phone = fresh_phone(&state_path, &world.medium);
    let world = World { phone, ..world };
    let hash = [0x77; 32];
    let run = world
        .sign_in(
            9,
            assertion(hash),
            world.options(PhonePolicy::APPROVE),
            Duration::from_secs(20),
        )
        .await;
    let asserted = run.agent.unwrap().response.get_assertion().unwrap();
    assert_eq!(asserted.credential.unwrap().id, credential_id);
    let mut signed = asserted.auth_data.clone();
    signed.extend_from_slice(&hash);
    key.verify(&signed, &Signature::from_der(&asserted.signature).unwrap())
        .unwrap();
}

fn fresh_phone(state: &Path, medium: &SimMedium) -> SimulatedPhone {
    SimulatedPhone::new(
        SoftAuthenticator::open(state, SoftAuthenticatorConfig::default()).unwrap(),
        Arc::new(medium.clone()),
        TunnelConfig {
            danger_allow_plaintext: true,
            ..TunnelConfig::default()
        },
    )
}
