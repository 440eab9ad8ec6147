//! Push delivery through the real APNs and FCM senders to wire-faithful fake providers on
//! loopback (HTTP/2 over TLS with a test CA): every scripted provider answer maps to its one
//! action on the outbox row, the install and the delivery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bridge::config::{ApnsConfig, FcmConfig, PushConfig, PushSink, PushWorkerConfig};
use bridge::store::outbox;
use serde_json::{Value, json};
use support::*;
use tether_tests::fake_apns::{ApnsReply, FakeApns, FakeApnsConfig, generate_provider_key};
use tether_tests::fake_fcm::{FakeFcm, FakeFcmConfig, FcmReply};

const TEAM: &str = "TEAM123456";
const KEY_ID: &str = "KEY9876543";
const TOPIC: &str = "com.example.tether";
const PROJECT: &str = "tether-test";

struct World {
    bridge: TestBridge,
    apns: FakeApns,
    fcm: FakeFcm,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn real_now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn world(db: Db) -> World {
    world_with(db, |_| {}).await
}

async fn world_with(db: Db, tweak: impl FnOnce(&mut bridge::config::Config)) -> World {
    let (p8, verifying_key) = generate_provider_key().unwrap();
    let apns = FakeApns::start(FakeApnsConfig {
        team_id: TEAM.into(),
        key_id: KEY_ID.into(),
        verifying_key,
        topics: vec![TOPIC.into()],
    })
    .await
    .unwrap();
    let fcm = FakeFcm::start(FakeFcmConfig {
        project_id: PROJECT.into(),
    })
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("tether-push-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let worker = PushWorkerConfig::default();
    let push = PushConfig {
        sink: PushSink::Providers,
        apns: Some(ApnsConfig {
            endpoint: apns.base_url(),
            team_id: TEAM.into(),
            key_id: KEY_ID.into(),
            key_file: write("apns.p8", &p8),
            ca_file: Some(write("apns-ca.pem", &apns.ca_pem())),
            token_refresh_secs: 2400,
        }),
        fcm: Some(FcmConfig {
            endpoint: fcm.base_url(),
            service_account_file: write("fcm.json", &fcm.service_account_json()),
            ca_file: Some(write("fcm-ca.pem", &fcm.ca_pem())),
        }),
        worker,
    };
    let bridge = TestBridge::start_with(db, |c| {
        c.push = push;
        tweak(c);
    })
    .await;
    // The fakes judge token ages by the real clock.
    bridge.clock.set_ms(real_now_ms());
    World {
        bridge,
        apns,
        fcm,
        _dir: TempDir(dir),
    }
}

fn apns_token(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

fn fcm_token(n: u8) -> String {
    format!("fcm-token-{n}:APA91b{}", "x".repeat(140))
}

async fn register(bridge: &TestBridge, account: &str, platform: &str, token: &str) -> String {
    let resp = bridge
        .gql(
            Some(&bridge.companion_token(account)),
            "mutation($i: RegisterCompanionInput!) { registerCompanion(input: $i) { id } }",
            json!({"i": {"platform": platform, "pushToken": token, "appId": TOPIC, "displayName": "Alice's phone"}}),
        )
        .await;
    data(&resp, "registerCompanion")["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn delivery_row(bridge: &TestBridge, id: &str) -> (String, Option<String>) {
    let row = sqlx::query("SELECT status, reason FROM deliveries WHERE id = $1")
        .bind(id)
        .fetch_one(bridge.state.store.pool())
        .await
        .unwrap();
    (
        sqlx::Row::try_get(&row, 0).unwrap(),
        sqlx::Row::try_get(&row, 1).unwrap(),
    )
}

/// Waits (real time, up to 10 s) until the delivery has `status`.
async fn wait_status(bridge: &TestBridge, id: &str, status: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (now, reason) = delivery_row(bridge, id).await;
        if now == status {
            return reason;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery {id} is {now} ({reason:?}), expected {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn rows(bridge: &TestBridge, id: &str) -> Vec<(String, String, i64, Option<String>)> {
    let mut conn = bridge.state.store.pool().acquire().await.unwrap();
    outbox::for_delivery(&mut conn, id).await.unwrap()
}

/// Waits until every outbox row of the delivery has left `PENDING` with no lease, or until
/// a row is pending for a later attempt (`next_attempt_at` in the future).
async fn wait_row(
    bridge: &TestBridge,
    id: &str,
    check: impl Fn(&[(String, String, i64, Option<String>)]) -> bool,
) -> Vec<(String, String, i64, Option<String>)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = rows(bridge, id).await;
        if check(&r) {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "outbox rows: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn companion_active(bridge: &TestBridge, companion: &str) -> bool {
    let row = sqlx::query("SELECT active FROM companions WHERE id = $1")
        .bind(companion)
        .fetch_one(bridge.state.store.pool())
        .await
        .unwrap();
    sqlx::Row::try_get::<i64, _>(&row, 0).unwrap() != 0
}

async fn sign_in(bridge: &TestBridge, device: &TestDevice, key: &str) -> (String, Value) {
    let input = sign_in_input(bridge, key);
    let resp = bridge
        .gql(Some(&device.token(bridge)), REQUEST_SIGN_IN, input.clone())
        .await;
    let d = data(&resp, "requestSignIn").clone();
    (id_of(&d), input)
}

#[tokio::test]
async fn apns_delivers_with_every_header_and_a_safe_payload() {
    for db in databases() {
        let w = world(db).await;
        let token = apns_token(1);
        register(&w.bridge, "alice", "APNS", &token).await;
        let (device, _) = pair(&w.bridge, "alice").await;
        let (id, input) = sign_in(&w.bridge, &device, "k1").await;
        wait_status(&w.bridge, &id, "SENT").await;
        let received = w.apns.received();
        assert_eq!(received.len(), 1, "{received:?}");
        let r = &received[0];
        assert_eq!(r.device_token, token);
        assert_eq!(r.header("apns-topic"), Some(TOPIC));
        assert_eq!(r.header("apns-push-type"), Some("alert"));
        assert_eq!(r.header("apns-priority"), Some("10"));
        assert_eq!(r.header("apns-collapse-id"), Some(id.as_str()));
        let row = sqlx::query("SELECT expires_at, envelope FROM deliveries WHERE id = $1")
            .bind(&id)
            .fetch_one(w.bridge.state.store.pool())
            .await
            .unwrap();
        let expires_at: i64 = sqlx::Row::try_get(&row, 0).unwrap();
        let envelope: String = sqlx::Row::try_get(&row, 1).unwrap();
        assert_eq!(
            r.header("apns-expiration"),
            Some((expires_at / 1000).to_string().as_str())
        );
        assert_eq!(r.payload["envelope"], envelope.as_str());
        assert_eq!(
            r.payload["aps"]["alert"]["body"],
            "Sign in to example.com on Quest 3 'Living room'?"
        );
        let text = r.payload.to_string();
        assert!(text.len() <= 4096);
        let url = input["i"]["fidoUrl"].as_str().unwrap();
        assert!(!text.contains(url));
        assert!(!text.contains(url.trim_start_matches("FIDO:/")));
        let r = rows(&w.bridge, &id).await;
        assert_eq!(r[0].1, "SENT");
        assert_eq!(r[0].2, 1);
    }
}

#[tokio::test]
async fn apns_dead_tokens_deactivate_the_install_and_fail_the_delivery() {
    for db in databases() {
        let w = world(db).await;
        for (n, reply) in [
            (
                10,
                ApnsReply::Status {
                    status: 410,
                    reason: "Unregistered",
                },
            ),
            (
                11,
                ApnsReply::Status {
                    status: 400,
                    reason: "BadDeviceToken",
                },
            ),
            (
                12,
                ApnsReply::Status {
                    status: 400,
                    reason: "DeviceTokenNotForTopic",
                },
            ),
        ] {
            let account = format!("dead-{n}");
            let token = apns_token(n);
            w.apns.script(&token, [reply]);
            let companion = register(&w.bridge, &account, "APNS", &token).await;
            let (device, _) = pair(&w.bridge, &account).await;
            let (id, _) = sign_in(&w.bridge, &device, "k").await;
            let reason = wait_status(&w.bridge, &id, "FAILED").await;
            assert_eq!(reason.as_deref(), Some("NO_ACTIVE_COMPANION"));
            assert!(!companion_active(&w.bridge, &companion).await);
            let entries = audit_entries(&w.bridge, &account).await;
            let deactivations = entries_with(&entries, "companion.deactivate");
            assert_eq!(deactivations.len(), 1, "{entries:?}");
            assert!(
                !deactivations[0].to_string().contains(&token),
                "the audit log must not hold the whole token"
            );
            // The next request finds no active companion at once.
            let resp = w
                .bridge
                .gql(
                    Some(&device.token(&w.bridge)),
                    REQUEST_SIGN_IN,
                    sign_in_input(&w.bridge, "k2"),
                )
                .await;
            expect_error(&resp, "NO_ACTIVE_COMPANION");
        }
    }
}

#[tokio::test]
async fn one_dead_install_does_not_fail_a_delivery_another_received() {
    let w = world(Db::Sqlite).await;
    let dead = apns_token(20);
    w.apns.script(
        &dead,
        [ApnsReply::Status {
            status: 410,
            reason: "Unregistered",
        }],
    );
    let dead_id = register(&w.bridge, "bob", "APNS", &dead).await;
    let live_id = register(&w.bridge, "bob", "FCM", &fcm_token(1)).await;
    let (device, _) = pair(&w.bridge, "bob").await;
    let (id, _) = sign_in(&w.bridge, &device, "k").await;
    wait_row(&w.bridge, &id, |r| r.iter().all(|x| x.1 != "PENDING")).await;
    assert_eq!(delivery_row(&w.bridge, &id).await.0, "SENT");
    assert!(!companion_active(&w.bridge, &dead_id).await);
    assert!(companion_active(&w.bridge, &live_id).await);
}

#[tokio::test]
async fn retryable_answers_back_off_and_then_deliver() {
    for db in databases() {
        let w = world(db).await;
        let cases: Vec<(u8, ApnsReply)> = vec![
            (
                30,
                ApnsReply::TooManyRequests {
                    retry_after: Some(7),
                },
            ),
            (
                31,
                ApnsReply::Status {
                    status: 500,
                    reason: "InternalServerError",
                },
            ),
            (
                32,
                ApnsReply::Status {
                    status: 503,
                    reason: "ServiceUnavailable",
                },
            ),
            (33, ApnsReply::DropConnection),
            (34, ApnsReply::GoAway),
        ];
        for (n, reply) in cases {
            let account = format!("retry-{n}");
            let token = apns_token(n);
            w.apns.script(&token, [reply.clone()]);
            register(&w.bridge, &account, "APNS", &token).await;
            let (device, _) = pair(&w.bridge, &account).await;
            let before = w.bridge.state.now_ms();
            let (id, _) = sign_in(&w.bridge, &device, "k").await;
            let r = wait_row(&w.bridge, &id, |r| r[0].2 == 1 && r[0].3.is_some()).await;
            assert_eq!(r[0].1, "PENDING", "{reply:?}: {r:?}");
            assert_eq!(delivery_row(&w.bridge, &id).await.0, "QUEUED");
            let next: i64 = sqlx::Row::try_get(
                &sqlx::query("SELECT next_attempt_at FROM outbox WHERE delivery_id = $1")
                    .bind(&id)
                    .fetch_one(w.bridge.state.store.pool())
                    .await
                    .unwrap(),
                0,
            )
            .unwrap();
            if let ApnsReply::TooManyRequests { .. } = reply {
                assert!(
                    next >= before + 7_000,
                    "Retry-After honoured: {next} vs {before}"
                );
            } else {
                assert!(
                    next >= before + 500 && next <= before + 2_000,
                    "{reply:?}: {}",
                    next - before
                );
            }
            // Nothing goes out before the retry is due.
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(delivery_row(&w.bridge, &id).await.0, "QUEUED");
            w.bridge.clock.set_ms(next);
            wait_status(&w.bridge, &id, "SENT").await;
            let r = rows(&w.bridge, &id).await;
            assert_eq!((r[0].1.as_str(), r[0].2), ("SENT", 2), "{reply:?}");
            let delivered: Vec<_> = w
                .apns
                .received()
                .into_iter()
                .filter(|x| x.device_token == token)
                .collect();
            // A dropped connection may have lost the request before it was recorded; every
            // push that did arrive carries the same collapse id.
            assert!(!delivered.is_empty());
            assert!(
                delivered
                    .iter()
                    .all(|x| x.header("apns-collapse-id") == Some(id.as_str()))
            );
        }
    }
}

#[tokio::test]
async fn retries_never_go_past_the_deadline() {
    let w = world(Db::Sqlite).await;
    let token = apns_token(40);
    w.apns.script(
        &token,
        [ApnsReply::TooManyRequests {
            retry_after: Some(400),
        }],
    );
    register(&w.bridge, "carol", "APNS", &token).await;
    let (device, _) = pair(&w.bridge, "carol").await;
    let (id, _) = sign_in(&w.bridge, &device, "k").await;
    let reason = wait_status(&w.bridge, &id, "FAILED").await;
    assert_eq!(reason.as_deref(), Some("PUSH_FAILED"));
    let r = rows(&w.bridge, &id).await;
    assert_eq!(r[0].1, "FAILED");
    assert!(r[0].3.as_deref().unwrap().contains("deadline"), "{r:?}");
}

#[tokio::test]
async fn permanent_errors_fail_with_the_reason() {
    let w = world(Db::Sqlite).await;
    let token = apns_token(41);
    w.apns.script(
        &token,
        [ApnsReply::Status {
            status: 403,
            reason: "InvalidProviderToken",
        }],
    );
    let companion = register(&w.bridge, "dave", "APNS", &token).await;
    let (device, _) = pair(&w.bridge, "dave").await;
    let (id, _) = sign_in(&w.bridge, &device, "k").await;
    let reason = wait_status(&w.bridge, &id, "FAILED").await;
    assert_eq!(reason.as_deref(), Some("PUSH_FAILED"));
    let r = rows(&w.bridge, &id).await;
    assert_eq!(r[0].3.as_deref(), Some("InvalidProviderToken"));
    // A configuration problem is not the install's fault.
    assert!(companion_active(&w.bridge, &companion).await);
    let entries = audit_entries(&w.bridge, "dave").await;
    assert_eq!(entries_with(&entries, "delivery.fail").len(), 1);
}

#[tokio::test]
async fn provider_token_is_cached_and_refreshed_inside_the_hour_on_one_connection() {
    let w = world(Db::Sqlite).await;
    let token = apns_token(50);
    register(&w.bridge, "erin", "APNS", &token).await;
    let (device, _) = pair(&w.bridge, "erin").await;
    for i in 0..5 {
        let (id, _) = sign_in(&w.bridge, &device, &format!("k{i}")).await;
        wait_status(&w.bridge, &id, "SENT").await;
    }
    assert_eq!(w.apns.provider_tokens_seen(), 1);
    assert_eq!(w.apns.connections(), 1, "one pooled HTTP/2 connection");
    // 41 minutes later (both clocks): a new token, still well inside Apple's hour.
    w.bridge.clock.advance_ms(41 * 60 * 1000);
    w.apns.advance_clock(Duration::from_secs(41 * 60));
    let (id, _) = sign_in(&w.bridge, &device, "k-late").await;
    wait_status(&w.bridge, &id, "SENT").await;
    assert_eq!(w.apns.provider_tokens_seen(), 2);
}

#[tokio::test]
async fn fcm_delivers_with_ttl_priority_collapse_key_and_apns_block() {
    for db in databases() {
        let w = world(db).await;
        let token = fcm_token(2);
        register(&w.bridge, "frank", "FCM", &token).await;
        let (device, _) = pair(&w.bridge, "frank").await;
        let (id, input) = sign_in(&w.bridge, &device, "k").await;
        wait_status(&w.bridge, &id, "SENT").await;
        let received = w.fcm.received();
        assert_eq!(received.len(), 1);
        let m = &received[0].message;
        assert_eq!(m["token"], token.as_str());
        assert_eq!(m["android"]["priority"], "high");
        assert_eq!(m["android"]["collapse_key"], id.as_str());
        let ttl = m["android"]["ttl"].as_str().unwrap();
        let secs: i64 = ttl.trim_end_matches('s').parse().unwrap();
        assert!((295..=300).contains(&secs), "{ttl}");
        assert_eq!(m["apns"]["headers"]["apns-collapse-id"], id.as_str());
        assert_eq!(m["apns"]["headers"]["apns-push-type"], "alert");
        assert!(m["data"]["envelope"].as_str().unwrap().split('.').count() == 3);
        let text = m.to_string();
        assert!(text.len() <= 4096);
        assert!(!text.contains(input["i"]["fidoUrl"].as_str().unwrap()));
        // A second push reuses the access token.
        let (id2, _) = sign_in(&w.bridge, &device, "k2").await;
        wait_status(&w.bridge, &id2, "SENT").await;
        assert_eq!(w.fcm.token_requests().len(), 1);
    }
}

#[tokio::test]
async fn fcm_answers_map_to_their_actions() {
    let w = world(Db::Sqlite).await;
    // Dead tokens.
    for (n, reply) in [(60, FcmReply::Unregistered), (61, FcmReply::InvalidToken)] {
        let account = format!("fcm-dead-{n}");
        let token = fcm_token(n);
        w.fcm.script(&token, [reply]);
        let companion = register(&w.bridge, &account, "FCM", &token).await;
        let (device, _) = pair(&w.bridge, &account).await;
        let (id, _) = sign_in(&w.bridge, &device, "k").await;
        let reason = wait_status(&w.bridge, &id, "FAILED").await;
        assert_eq!(reason.as_deref(), Some("NO_ACTIVE_COMPANION"));
        assert!(!companion_active(&w.bridge, &companion).await);
    }
    // Permanent.
    let token = fcm_token(62);
    w.fcm.script(&token, [FcmReply::SenderIdMismatch]);
    let companion = register(&w.bridge, "fcm-perm", "FCM", &token).await;
    let (device, _) = pair(&w.bridge, "fcm-perm").await;
    let (id, _) = sign_in(&w.bridge, &device, "k").await;
    assert_eq!(
        wait_status(&w.bridge, &id, "FAILED").await.as_deref(),
        Some("PUSH_FAILED")
    );
    assert!(companion_active(&w.bridge, &companion).await);
    // Retryable, then delivered.
    for (n, reply, min_delay) in [
        (
            63,
            FcmReply::QuotaExceeded {
                retry_after: Some(9),
            },
            9_000,
        ),
        (64, FcmReply::Internal, 500),
        (65, FcmReply::Unavailable { retry_after: None }, 500),
        (66, FcmReply::DropConnection, 500),
    ] {
        let account = format!("fcm-retry-{n}");
        let token = fcm_token(n);
        w.fcm.script(&token, [reply.clone()]);
        register(&w.bridge, &account, "FCM", &token).await;
        let (device, _) = pair(&w.bridge, &account).await;
        let before = w.bridge.state.now_ms();
        let (id, _) = sign_in(&w.bridge, &device, "k").await;
        wait_row(&w.bridge, &id, |r| r[0].2 == 1 && r[0].3.is_some()).await;
        let next: i64 = sqlx::Row::try_get(
            &sqlx::query("SELECT next_attempt_at FROM outbox WHERE delivery_id = $1")
                .bind(&id)
                .fetch_one(w.bridge.state.store.pool())
                .await
                .unwrap(),
            0,
        )
        .unwrap();
        assert!(next >= before + min_delay, "{reply:?}");
        w.bridge.clock.set_ms(next);
        wait_status(&w.bridge, &id, "SENT").await;
    }
}

#[tokio::test]
async fn payloads_stay_under_4096_bytes_at_the_longest_names() {
    let w = world(Db::Sqlite).await;
    register(&w.bridge, "gina", "APNS", &apns_token(70)).await;
    register(&w.bridge, "gina", "FCM", &fcm_token(70)).await;
    let (device, _) = pair(&w.bridge, "gina").await;
    // Longest device name the API accepts.
    let name = "N".repeat(64);
    let resp = w
        .bridge
        .gql(
            Some(&w.bridge.companion_token("gina")),
            "mutation($id: ID!, $n: String!) { renameDevice(id: $id, name: $n) { id } }",
            json!({"id": device.id.clone().unwrap(), "n": name}),
        )
        .await;
    assert_clean_errors(&resp);
    let mut input = sign_in_input(&w.bridge, "long");
    input["i"]["rpId"] = json!(format!(
        "{}.{}.{}.example",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63)
    ));
    input["i"]["context"]["userName"] = json!("u".repeat(256));
    input["i"]["context"]["origin"] = json!(format!("https://{}", "o".repeat(504)));
    let resp = w
        .bridge
        .gql(Some(&device.token(&w.bridge)), REQUEST_SIGN_IN, input)
        .await;
    let id = id_of(data(&resp, "requestSignIn"));
    wait_row(&w.bridge, &id, |r| r.iter().all(|x| x.1 == "SENT")).await;
    let apns = w.apns.received();
    let fcm = w.fcm.received();
    assert_eq!((apns.len(), fcm.len()), (1, 1));
    assert!(apns[0].payload.to_string().len() <= 4096);
    assert!(
        serde_json::to_vec(&json!({"message": fcm[0].message}))
            .unwrap()
            .len()
            <= 4096
    );
}

#[tokio::test]
async fn metrics_count_pushes_by_provider_and_outcome() {
    let w = world(Db::Sqlite).await;
    let token = apns_token(80);
    w.apns.script(
        &token,
        [ApnsReply::Status {
            status: 503,
            reason: "ServiceUnavailable",
        }],
    );
    register(&w.bridge, "hank", "APNS", &token).await;
    let (device, _) = pair(&w.bridge, "hank").await;
    let (id, _) = sign_in(&w.bridge, &device, "k").await;
    let r = wait_row(&w.bridge, &id, |r| r[0].3.is_some()).await;
    let _ = r;
    let (status, body) = w.bridge.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.lines().any(|l| l.starts_with("tether_push_total{")
            && l.contains("provider=\"apns\"")
            && l.contains("outcome=\"retry\"")),
        "{body}"
    );
    assert!(body.contains("tether_push_send_seconds_bucket"), "{body}");
    assert!(body.contains("tether_push_retries_total"), "{body}");
}

#[tokio::test]
async fn two_instances_on_one_database_never_send_a_row_twice() {
    for db in databases() {
        let w = world_with(db, |c| {
            c.limits.deliveries_per_device_per_minute = 1000;
            c.limits.deliveries_per_account_per_minute = 1000;
            // Small batches so both workers keep claiming while rows arrive.
            c.push.worker.batch = 4;
        })
        .await;
        let peer = w.bridge.peer(|_| {}).await;
        let token = apns_token(90);
        register(&w.bridge, "ivy", "APNS", &token).await;
        let (device, _) = pair(&w.bridge, "ivy").await;
        let mut ids = Vec::new();
        for i in 0..60 {
            let instance = if i % 2 == 0 { &w.bridge } else { &peer };
            let resp = instance
                .gql(
                    Some(&device.token(instance)),
                    REQUEST_SIGN_IN,
                    sign_in_input(instance, &format!("k{i}")),
                )
                .await;
            ids.push(id_of(data(&resp, "requestSignIn")));
        }
        for id in &ids {
            wait_status(&w.bridge, id, "SENT").await;
        }
        let received = w.apns.received();
        assert_eq!(
            received.len(),
            ids.len(),
            "one push per delivery, no duplicates"
        );
        for id in &ids {
            let n = received
                .iter()
                .filter(|r| r.payload["delivery_id"] == id.as_str())
                .count();
            assert_eq!(n, 1, "{id}");
        }
        // Both instances did part of the work.
        let workers: std::collections::BTreeSet<String> =
            sqlx::query("SELECT leased_by FROM outbox WHERE status = 'SENT'")
                .fetch_all(w.bridge.state.store.pool())
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    let lease: String = sqlx::Row::try_get(r, 0).unwrap();
                    lease.split(':').next().unwrap().to_owned()
                })
                .collect();
        assert_eq!(workers.len(), 2, "{workers:?}");
    }
}

#[tokio::test]
async fn dev_sink_hands_deliveries_to_a_subscribed_companion() {
    let bridge = TestBridge::start(Db::Sqlite).await;
    register_companion(&bridge, "judy", &apns_token(91)).await;
    let (device, _) = pair(&bridge, "judy").await;
    let mut sub = bridge
        .subscribe(
            Some(&bridge.companion_token("judy")),
            "subscription { incomingDeliveries { id status rpId envelope } }",
            json!({}),
        )
        .await;
    let first = request_sign_in(&bridge, &device, "k1").await;
    let got = sub.next().await;
    assert_eq!(
        got["data"]["incomingDeliveries"]["id"], first["id"],
        "{got}"
    );
    let second = request_sign_in(&bridge, &device, "k2").await;
    let got = sub.next().await;
    assert_eq!(
        got["data"]["incomingDeliveries"]["id"], second["id"],
        "{got}"
    );
    // Another account's companion sees neither.
    let mut other = bridge
        .subscribe(
            Some(&bridge.companion_token("mallory")),
            "subscription { incomingDeliveries { id } }",
            json!({}),
        )
        .await;
    let nothing = tokio::time::timeout(Duration::from_millis(1500), other.next()).await;
    assert!(nothing.is_err(), "{nothing:?}");
}
