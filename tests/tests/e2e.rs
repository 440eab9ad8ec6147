#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]
//! End to end through real sockets: a bridge on 127.0.0.1 with its relay, the simulated phone
//! service, the in-process BLE medium and the device agent's flows (`tether_tests::world`).
//!
//! The happy path pairs, registers and signs in, and an independent relying-party library
//! (`webauthn_rp`, which nobody here wrote) verifies both responses, with user verification and
//! a growing — or, without a counter, zero — signature count. Every failure path asserts the
//! agent's error (variant, one-line message, exit code) and the bridge's final word on the
//! delivery (status and reason), read back through the companion API.

use std::time::Duration;

use companion::{DeliveryStatus, EnvelopeError, ErrorCode};
use device_agent::flow::{AgentError, Progress};
use serde_json::Value;
use tether_ble::{Advert, ServiceUuid};
use tether_demo::phone_service::{Policy, ServiceEvent, Source};
use tether_tests::world::{
    self, ACCOUNT, Db, Fault, RP_ID, RefusingRelay, RelayProxy, World, WorldConfig, wait_for_phone,
};
use webauthn_rp::bin::{Decode as _, Encode as _};
use webauthn_rp::request::auth::AuthenticationVerificationOptions;
use webauthn_rp::request::register::{
    PublicKeyCredentialUserEntity as RpUser, RegistrationVerificationOptions, UserHandle64,
};
use webauthn_rp::request::{AsciiDomain, RpId};
use webauthn_rp::response::register::{CompressedPubKey, DynamicState, StaticState};
use webauthn_rp::{
    AuthenticatedCredential, DiscoverableAuthentication64, DiscoverableCredentialRequestOptions,
    PublicKeyCredentialCreationOptions, Registration,
};

// ---------------------------------------------------------------------------------------------
// The relying party (webauthn_rp)
// ---------------------------------------------------------------------------------------------

fn rp_id() -> RpId {
    RpId::Domain(AsciiDomain::try_from(RP_ID.to_owned()).unwrap())
}

/// What the relying party stores after a registration.
struct Stored {
    user: UserHandle64,
    static_state: Vec<u8>,
    dynamic_state: DynamicState,
}

/// Registers through the world and verifies with webauthn_rp.
async fn register(world: &World) -> (Stored, Value) {
    let rp_id = rp_id();
    let user_handle = UserHandle64::new();
    let user = RpUser {
        name: "alice".try_into().unwrap(),
        id: &user_handle,
        display_name: Some("Alice".try_into().unwrap()),
    };
    let (server, client) = PublicKeyCredentialCreationOptions::passkey(&rp_id, user, Vec::new())
        .start_ceremony()
        .unwrap();
    let options = serde_json::to_string(&client).unwrap();
    let finished = world.register(&options).await.unwrap();
    let json = finished.response().unwrap().clone();
    let registration: Registration = serde_json::from_value(json.clone()).unwrap();
    let registered = server
        .verify(
            &rp_id,
            &registration,
            &RegistrationVerificationOptions::<&str, &str>::default(),
        )
        .unwrap();
    assert!(
        registered.dynamic_state().user_verified,
        "UV on registration"
    );
    let (_, _, user, static_state, dynamic_state, _) = registered.into_parts();
    let status = world.delivery(finished.delivery().unwrap()).await.unwrap();
    assert_eq!(status.status, DeliveryStatus::Completed);
    (
        Stored {
            user,
            static_state: static_state.encode().unwrap(),
            dynamic_state,
        },
        json,
    )
}

/// Fresh usernameless sign-in options from webauthn_rp, runs the sign-in, verifies it and
/// updates the stored state. Returns the verified sign count and the response.
async fn sign_in(world: &World, stored: &mut Stored) -> (u32, Value, Vec<Progress>) {
    let rp_id = rp_id();
    let (server, client) = DiscoverableCredentialRequestOptions::passkey(&rp_id)
        .start_ceremony()
        .unwrap();
    let options = serde_json::to_string(&client).unwrap();
    let finished = world.sign_in(&options).await.unwrap();
    let json = finished.response().unwrap().clone();
    let authentication: DiscoverableAuthentication64 =
        serde_json::from_value(json.clone()).unwrap();
    assert_eq!(authentication.response().user_handle(), &stored.user);
    let static_state =
        StaticState::<CompressedPubKey<[u8; 32], [u8; 32], [u8; 48], Vec<u8>>>::decode(
            stored.static_state.as_slice(),
        )
        .unwrap();
    let mut credential = AuthenticatedCredential::new(
        authentication.raw_id(),
        &stored.user,
        static_state,
        stored.dynamic_state,
    )
    .unwrap();
    server
        .verify(
            &rp_id,
            &authentication,
            &mut credential,
            &AuthenticationVerificationOptions::<&str, &str>::default(),
        )
        .unwrap();
    stored.dynamic_state = credential.dynamic_state();
    let status = world.delivery(finished.delivery().unwrap()).await.unwrap();
    assert_eq!(status.status, DeliveryStatus::Completed);
    (stored.dynamic_state.sign_count, json, finished.progress)
}

/// The authenticator data's flags byte of a response.
fn flags(response: &Value) -> u8 {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(response["response"]["authenticatorData"].as_str().unwrap())
        .unwrap();
    data[32]
}

/// Sample sign-in options (for failure paths, which never reach a relying party).
fn sign_in_options() -> String {
    tether_demo::options::sign_in(RP_ID).unwrap().to_string()
}

async fn paired(config: WorldConfig) -> World {
    let world = World::start(config).await.unwrap();
    world.pair().await.unwrap();
    world
}

/// The session's own progress, in order (status reports interleave nondeterministically).
fn session_progress(progress: &[Progress]) -> Vec<Progress> {
    progress
        .iter()
        .filter(|p| {
            matches!(
                p,
                Progress::Scanning
                    | Progress::PhoneFound { .. }
                    | Progress::TunnelOpen
                    | Progress::HandshakeDone
                    | Progress::PasskeyUsed
            )
        })
        .cloned()
        .collect()
}

fn databases() -> Vec<Db> {
    let mut dbs = vec![Db::Sqlite];
    match world::postgres_url() {
        Some(url) => dbs.push(Db::Postgres(url)),
        None => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must set TETHER_TEST_DATABASE_URL"
            );
            eprintln!("note: TETHER_TEST_DATABASE_URL unset, PostgreSQL run skipped locally");
        }
    }
    dbs
}

// ---------------------------------------------------------------------------------------------
// Success
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_register_and_sign_in_verify_with_an_independent_relying_party() {
    for db in databases() {
        let world = World::start(WorldConfig {
            db: db.clone(),
            ..WorldConfig::default()
        })
        .await
        .unwrap();
        let device_id = world.pair().await.unwrap();
        assert!(device_id.starts_with("dev_"), "{device_id}");

        let (mut stored, registration) = register(&world).await;
        assert_eq!(registration["authenticatorAttachment"], "cross-platform");
        assert_eq!(flags(&registration) & 0x45, 0x45, "UP, UV, AT ({db:?})");
        assert_eq!(stored.dynamic_state.sign_count, 0);

        // Two sign-ins: the counter grows, UV is set every time.
        let (count, response, progress) = sign_in(&world, &mut stored).await;
        assert_eq!(count, 1);
        assert_eq!(flags(&response) & 0x05, 0x05, "UP and UV");
        assert_eq!(response["authenticatorAttachment"], "cross-platform");
        assert_eq!(
            session_progress(&progress),
            vec![
                Progress::Scanning,
                Progress::PhoneFound { rssi: Some(-50) },
                Progress::TunnelOpen,
                Progress::HandshakeDone,
                Progress::PasskeyUsed,
            ]
        );
        assert!(
            matches!(progress[0], Progress::Requested { .. }),
            "{progress:?}"
        );
        let (count, _, _) = sign_in(&world, &mut stored).await;
        assert_eq!(count, 2);
        assert!(stored.dynamic_state.user_verified);
        assert_eq!(world.phone.phone().authenticator().store().len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_signature_counter_zero_counts_are_accepted() {
    let world = paired(WorldConfig {
        signature_counter: false,
        ..WorldConfig::default()
    })
    .await;
    let (mut stored, _) = register(&world).await;
    for _ in 0..2 {
        let (count, response, _) = sign_in(&world, &mut stored).await;
        assert_eq!(count, 0);
        assert_eq!(flags(&response) & 0x05, 0x05);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_off_the_pull_fallback_signs_in() {
    let world = paired(WorldConfig {
        pushes: false,
        ..WorldConfig::default()
    })
    .await;
    let mut events = world.phone.events();
    let (mut stored, _) = register(&world).await;
    let source = wait_for_phone(&mut events, "the registration", |e| match e {
        ServiceEvent::Received { source, .. } => Some(*source),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(source, Source::Pull);
    let (count, _, _) = sign_in(&world, &mut stored).await;
    assert_eq!(count, 1);
    let source = wait_for_phone(&mut events, "the sign-in", |e| match e {
        ServiceEvent::Received { source, .. } => Some(*source),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(source, Source::Pull);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adverts_of_other_sessions_are_ignored() {
    let world = paired(WorldConfig::default()).await;
    let (mut stored, _) = register(&world).await;
    // Another session's phone advertises nearby, louder than ours, the whole time.
    let _stray = world
        .medium
        .advertise(Advert {
            service: ServiceUuid::Fido,
            data: [0x5a; 20],
            rssi: Some(-30),
        })
        .unwrap();
    let _stray_google = world
        .medium
        .advertise(Advert {
            service: ServiceUuid::Google,
            data: [0xa5; 20],
            rssi: Some(-20),
        })
        .unwrap();
    let (count, _, progress) = sign_in(&world, &mut stored).await;
    assert_eq!(count, 1);
    // The phone found is ours (-50 dBm), not the louder strangers.
    assert!(
        progress.contains(&Progress::PhoneFound { rssi: Some(-50) }),
        "{progress:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

/// Asserts the bridge's final status and reason of `id`.
async fn assert_final(world: &World, id: &str, status: DeliveryStatus, reason: Option<&str>) {
    let delivery = world.delivery(id).await.unwrap();
    assert_eq!(
        (delivery.status, delivery.reason.as_deref()),
        (status, reason),
        "delivery {id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_on_the_phone() {
    let world = paired(WorldConfig {
        policy: Policy::Deny,
        ..WorldConfig::default()
    })
    .await;
    let finished = world.sign_in(&sign_in_options()).await.unwrap();
    let error = finished.result.as_ref().unwrap_err();
    assert_eq!(
        error,
        &AgentError::Denied {
            reason: "DECLINED".into()
        }
    );
    assert_eq!(error.to_string(), "denied on the phone (DECLINED)");
    assert_eq!(error.exit_code(), 5);
    assert_final(
        &world,
        finished.delivery().unwrap(),
        DeliveryStatus::Denied,
        Some("DECLINED"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_number_is_denied_as_not_me() {
    let world = paired(WorldConfig {
        policy: Policy::WrongNumber,
        ..WorldConfig::default()
    })
    .await;
    let finished = world.sign_in(&sign_in_options()).await.unwrap();
    let error = finished.result.as_ref().unwrap_err();
    assert_eq!(
        error,
        &AgentError::Denied {
            reason: "NOT_ME".into()
        }
    );
    assert_eq!(error.exit_code(), 5);
    assert_final(
        &world,
        finished.delivery().unwrap(),
        DeliveryStatus::Denied,
        Some("NOT_ME"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_request_expires_on_the_virtual_clock() {
    let world = paired(WorldConfig {
        policy: Policy::Unanswered,
        // Only the delivery's own expiry ends the wait.
        discovery_timeout: None,
        ..WorldConfig::default()
    })
    .await;
    let mut events = world.phone.events();
    let mut run = world.start_sign_in(&sign_in_options()).unwrap();
    let id = run.requested().await.unwrap();
    wait_for_phone(&mut events, "the phone to leave it", |e| match e {
        ServiceEvent::Unanswered { delivery_id } if *delivery_id == id => Some(()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(world.expire_deliveries().await.unwrap(), 1);
    let finished = run.finish().await.unwrap();
    let error = finished.result.as_ref().unwrap_err();
    assert_eq!(error, &AgentError::Expired);
    assert_eq!(
        error.to_string(),
        "expired: not approved on the phone in time"
    );
    assert_eq!(error.exit_code(), 6);
    assert_final(&world, &id, DeliveryStatus::Expired, Some("EXPIRED")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_not_nearby_is_not_found() {
    let world = paired(WorldConfig {
        policy: Policy::Ignore,
        discovery_timeout: Some(Duration::from_millis(1500)),
        ..WorldConfig::default()
    })
    .await;
    let mut events = world.phone.events();
    let finished = world.sign_in(&sign_in_options()).await.unwrap();
    let error = finished.result.as_ref().unwrap_err();
    assert_eq!(error, &AgentError::PhoneNotFound);
    assert_eq!(error.to_string(), "phone not found nearby");
    assert_eq!(error.exit_code(), 8);
    // The phone claimed (the user approved) but stayed away.
    let id = finished.delivery().unwrap().to_owned();
    wait_for_phone(&mut events, "the phone to stay away", |e| match e {
        ServiceEvent::Answered {
            delivery_id,
            outcome,
        } if *delivery_id == id && *outcome == companion::phone::PhoneOutcome::Ignored => Some(()),
        _ => None,
    })
    .await
    .unwrap();
    assert_final(&world, &id, DeliveryStatus::Failed, Some("PHONE_NOT_FOUND")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_below_the_rssi_floor_is_not_found() {
    let world = paired(WorldConfig {
        phone_rssi: Some(-80),
        rssi_floor: Some(-70),
        discovery_timeout: Some(Duration::from_millis(1500)),
        ..WorldConfig::default()
    })
    .await;
    let finished = world.sign_in(&sign_in_options()).await.unwrap();
    let error = finished.result.as_ref().unwrap_err();
    assert_eq!(error, &AgentError::PhoneNotFound);
    assert_eq!(error.exit_code(), 8);
    assert!(
        !finished
            .progress
            .iter()
            .any(|p| matches!(p, Progress::PhoneFound { .. })),
        "{:?}",
        finished.progress
    );
    // The phone did claim and advertise: only proximity failed.
    assert_final(
        &world,
        finished.delivery().unwrap(),
        DeliveryStatus::Failed,
        Some("PHONE_NOT_FOUND"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_refusal_fails_the_tunnel() {
    for status in [404u16, 409] {
        let mut world = paired(WorldConfig::default()).await;
        let refusing = RefusingRelay::start(status).await.unwrap();
        world.map_relay(refusing.url());
        let finished = world.sign_in(&sign_in_options()).await.unwrap();
        let error = finished.result.as_ref().unwrap_err();
        assert!(matches!(error, AgentError::TunnelFailed(_)), "{error:?}");
        assert!(
            error.to_string().starts_with(&format!(
                "tunnel failed: the relay refused the tunnel: HTTP {status}"
            )),
            "{error}"
        );
        assert_eq!(error.exit_code(), 9);
        assert_eq!(refusing.requests(), 1);
        assert_final(
            &world,
            finished.delivery().unwrap(),
            DeliveryStatus::Failed,
            Some("TUNNEL_FAILED"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_dropped_mid_handshake() {
    let mut world = paired(WorldConfig::default()).await;
    let proxy = RelayProxy::start(world.relay_url(), Fault::DropMidHandshake)
        .await
        .unwrap();
    world.map_relay(proxy.url());
    let finished = world.sign_in(&sign_in_options()).await.unwrap();
    let error = finished.result.as_ref().unwrap_err();
    assert!(matches!(error, AgentError::TunnelFailed(_)), "{error:?}");
    assert!(error.to_string().contains("Handshake"), "{error}");
    assert_eq!(error.exit_code(), 9);
    let progress = session_progress(&finished.progress);
    assert!(progress.contains(&Progress::TunnelOpen), "{progress:?}");
    assert!(!progress.contains(&Progress::HandshakeDone), "{progress:?}");
    assert_final(
        &world,
        finished.delivery().unwrap(),
        DeliveryStatus::Failed,
        Some("TUNNEL_FAILED"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_frame_is_rejected() {
    let mut world = paired(WorldConfig::default()).await;
    // Message 1 from the phone is its Noise handshake answer; message 2 the first encrypted
    // one.
    let proxy = RelayProxy::start(world.relay_url(), Fault::FlipBitInPhoneMessage(2))
        .await
        .unwrap();
    world.map_relay(proxy.url());
    let finished = world.sign_in(&sign_in_options()).await.unwrap();
    let error = finished.result.as_ref().unwrap_err();
    assert!(matches!(error, AgentError::TunnelFailed(_)), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("tunnel failed: tunnel message rejected as tampered"),
        "{error}"
    );
    assert_eq!(error.exit_code(), 9);
    assert_final(
        &world,
        finished.delivery().unwrap(),
        DeliveryStatus::Failed,
        Some("TUNNEL_FAILED"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_claim_is_refused_while_the_first_completes() {
    let world = paired(WorldConfig::default()).await;
    let (mut stored, _) = register(&world).await;
    let tablet = world
        .registered_companion(ACCOUNT, "Alice's tablet")
        .await
        .unwrap();
    let mut events = world.phone.events();
    let rp_id = rp_id();
    let (server, client) = DiscoverableCredentialRequestOptions::passkey(&rp_id)
        .start_ceremony()
        .unwrap();
    let mut run = world
        .start_sign_in(&serde_json::to_string(&client).unwrap())
        .unwrap();
    let id = run.requested().await.unwrap();
    wait_for_phone(&mut events, "the phone's claim", |e| match e {
        ServiceEvent::Claimed { delivery_id } if *delivery_id == id => Some(()),
        _ => None,
    })
    .await
    .unwrap();
    let refused = tablet.claim(&id).await.unwrap_err();
    assert_eq!(refused.code(), Some(&ErrorCode::AlreadyUsed), "{refused:?}");
    let finished = run.finish().await.unwrap();
    let json = finished.response().unwrap().clone();
    let authentication: DiscoverableAuthentication64 = serde_json::from_value(json).unwrap();
    let static_state =
        StaticState::<CompressedPubKey<[u8; 32], [u8; 32], [u8; 48], Vec<u8>>>::decode(
            stored.static_state.as_slice(),
        )
        .unwrap();
    let mut credential = AuthenticatedCredential::new(
        authentication.raw_id(),
        &stored.user,
        static_state,
        stored.dynamic_state,
    )
    .unwrap();
    server
        .verify(
            &rp_id,
            &authentication,
            &mut credential,
            &AuthenticationVerificationOptions::<&str, &str>::default(),
        )
        .unwrap();
    stored.dynamic_state = credential.dynamic_state();
    assert_eq!(stored.dynamic_state.sign_count, 1);
    assert_final(&world, &id, DeliveryStatus::Completed, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_device_is_refused() {
    let world = World::start(WorldConfig::default()).await.unwrap();
    let device_id = world.pair().await.unwrap();
    assert_eq!(world.revoke_device(&device_id).await.unwrap(), "REVOKED");
    let finished = world.sign_in(&sign_in_options()).await.unwrap();
    let error = finished.result.as_ref().unwrap_err();
    assert!(
        matches!(error, AgentError::Bridge { code, .. } if code == "UNAUTHENTICATED"),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), 12);
    assert!(
        error
            .to_string()
            .starts_with("bridge refused the request (UNAUTHENTICATED)")
    );
    // No delivery was made: nothing waits for the phone, and the agent never got an id.
    assert_eq!(finished.delivery_id, None);
    assert!(
        world
            .phone
            .client()
            .pending_deliveries()
            .await
            .unwrap()
            .is_empty()
    );
    let token = world.companion_token(ACCOUNT).unwrap();
    let devices = world
        .gql(&token, "{ devices { id status } }", serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(
        devices["data"]["devices"],
        serde_json::json!([{"id": device_id, "status": "REVOKED"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_companion_cannot_claim() {
    let world = paired(WorldConfig::default()).await;
    let (mut stored, _) = register(&world).await;
    let mallory = world
        .registered_companion("mallory", "Mallory's phone")
        .await
        .unwrap();
    // Alice's phone waits until Mallory has tried.
    world.phone.set_policy(Policy::Unanswered);
    let mut events = world.phone.events();
    let mut run = world.start_sign_in(&sign_in_options()).unwrap();
    let id = run.requested().await.unwrap();
    wait_for_phone(&mut events, "alice's phone", |e| match e {
        ServiceEvent::Unanswered { delivery_id } if *delivery_id == id => Some(()),
        _ => None,
    })
    .await
    .unwrap();
    let refused = mallory.claim(&id).await.unwrap_err();
    assert_eq!(refused.code(), Some(&ErrorCode::NotFound), "{refused:?}");
    assert_eq!(
        mallory.delivery(&id).await.unwrap_err().code(),
        Some(&ErrorCode::NotFound)
    );
    assert!(mallory.pending_deliveries().await.unwrap().is_empty());
    // Even holding Alice's envelope, Mallory's app refuses it.
    let envelope = world.delivery(&id).await.unwrap().envelope;
    match mallory.verify_envelope(&envelope).await {
        Err(companion::ClientError::Envelope(EnvelopeError::WrongAccount)) => {}
        other => panic!("expected WrongAccount, got {other:?}"),
    }
    // Nothing changed for Alice: the delivery is still open.
    let open = world.delivery(&id).await.unwrap();
    assert!(open.status.is_open(), "{:?}", open.status);
    // The agent gives up (a person would approve on Alice's phone; here the run is cancelled
    // by expiry) — then Alice signs in normally.
    world.expire_deliveries().await.unwrap();
    assert_eq!(run.finish().await.unwrap().result, Err(AgentError::Expired));
    world.phone.set_policy(Policy::Approve);
    let (count, _, _) = sign_in(&world, &mut stored).await;
    assert_eq!(count, 1);
}
