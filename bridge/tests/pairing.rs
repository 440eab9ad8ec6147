//! Pairing over HTTP and WebSocket, on every database: polling and subscription, code expiry,
//! single use, typing leniency, wrong codes and the lockout, proof-of-possession problems,
//! already-paired keys and the per-address rate limit of `startPairing`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bridge::auth::device::mint_device_token;
use serde_json::json;
use support::*;

/// Ten minutes, the default code lifetime.
const CODE_TTL_MS: i64 = 600_000;
/// Fifteen minutes, the default lockout.
const LOCKOUT_MS: i64 = 900_000;

/// A code that is well formed but (almost certainly) not the pending one.
fn wrong_code(right: &str) -> String {
    let n: u32 = right.parse().unwrap();
    format!("{:08}", (n + 1) % 100_000_000)
}

async fn poll(bridge: &TestBridge, device: &TestDevice, pairing_id: &str) -> serde_json::Value {
    let resp = bridge
        .gql(
            Some(&device.token(bridge)),
            PAIRING,
            json!({"id": pairing_id}),
        )
        .await;
    data(&resp, "pairing").clone()
}

#[tokio::test]
async fn pairing_by_polling() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let mut device = TestDevice::new();
        let started = start_pairing(&bridge, &mut device).await;
        assert!(started.pairing_id.starts_with("par_"));
        assert!(started.device_id.starts_with("dev_"));
        assert_eq!(started.code.len(), 8);
        assert!(started.code.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(started.expires_at, bridge::id::rfc3339(T0_MS + CODE_TTL_MS));

        // The pending device polls with tokens signed by its key, `kid` = its new id.
        let p = poll(&bridge, &device, &started.pairing_id).await;
        assert_eq!(p["status"], "PENDING", "{db:?}");
        assert_eq!(p["deviceId"], started.device_id.as_str());
        assert_eq!(p["expiresAt"], started.expires_at.as_str());
        // Not paired yet: it cannot ask for sign-ins.
        let resp = bridge
            .gql(
                Some(&device.token(&bridge)),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "early"),
            )
            .await;
        expect_error(&resp, "UNAUTHENTICATED");

        bridge.clock.advance_ms(30_000);
        let alice = bridge.companion_token("alice");
        let resp = bridge
            .gql(
                Some(&alice),
                CONFIRM_PAIRING,
                json!({"c": started.code, "n": "  Den  "}),
            )
            .await;
        let d = data(&resp, "confirmPairing");
        assert_eq!(d["id"], started.device_id.as_str());
        assert_eq!(d["name"], "Den", "the name is trimmed");
        assert_eq!(d["model"], "Quest 3");
        assert_eq!(d["status"], "ACTIVE");

        let p = poll(&bridge, &device, &started.pairing_id).await;
        assert_eq!(p["status"], "CONFIRMED");
        let resp = bridge.gql(Some(&alice), DEVICES, json!({})).await;
        let list = data(&resp, "devices").as_array().unwrap().clone();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["name"], "Den");

        let log = audit_entries(&bridge, "alice").await;
        let confirmed = entries_with(&log, "pairing.confirm");
        assert_eq!(confirmed.len(), 1, "{log:?}");
        assert_eq!(confirmed[0]["outcome"], "success");
        assert!(
            confirmed[0]["detail"]
                .as_str()
                .unwrap()
                .contains(&started.device_id)
        );
    }
}

#[tokio::test]
async fn pairing_by_subscription() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let mut device = TestDevice::new();
        let started = start_pairing(&bridge, &mut device).await;
        let mut sub = bridge
            .subscribe(
                Some(&device.token(&bridge)),
                PAIRING_STATUS,
                json!({"id": started.pairing_id}),
            )
            .await;
        let first = sub.next().await;
        assert_eq!(
            first["data"]["pairingStatus"]["status"], "PENDING",
            "{first}"
        );
        assert_eq!(
            first["data"]["pairingStatus"]["deviceId"],
            started.device_id.as_str()
        );

        let resp = confirm_code(&bridge, "alice", &started.code).await;
        data(&resp, "confirmPairing");
        let next = sub.next().await;
        assert_eq!(
            next["data"]["pairingStatus"]["status"], "CONFIRMED",
            "{db:?}: {next}"
        );
        assert_eq!(sub.next().await["type"], "complete");
    }
}

#[tokio::test]
async fn codes_expire_after_ten_minutes() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        // One second before the end the code still works.
        let mut early = TestDevice::new();
        let started = start_pairing(&bridge, &mut early).await;
        bridge.clock.advance_ms(CODE_TTL_MS - 1_000);
        let resp = confirm_code(&bridge, "alice", &started.code).await;
        assert_eq!(data(&resp, "confirmPairing")["status"], "ACTIVE", "{db:?}");

        // At ten minutes it is gone.
        let mut late = TestDevice::new();
        let started = start_pairing(&bridge, &mut late).await;
        let mut sub = bridge
            .subscribe(
                Some(&late.token(&bridge)),
                PAIRING_STATUS,
                json!({"id": started.pairing_id}),
            )
            .await;
        assert_eq!(
            sub.next().await["data"]["pairingStatus"]["status"],
            "PENDING"
        );
        bridge.clock.advance_ms(CODE_TTL_MS);
        let resp = confirm_code(&bridge, "alice", &started.code).await;
        expect_error(&resp, "NOT_FOUND");

        bridge.sweep_now().await;
        let p = poll(&bridge, &late, &started.pairing_id).await;
        assert_eq!(p["status"], "EXPIRED", "{db:?}");
        let next = sub.next().await;
        assert_eq!(next["data"]["pairingStatus"]["status"], "EXPIRED", "{next}");
        assert_eq!(sub.next().await["type"], "complete");
        // The device stays unpaired.
        let alice = bridge.companion_token("alice");
        let resp = bridge
            .gql(Some(&alice), DEVICE, json!({"id": started.device_id}))
            .await;
        expect_error(&resp, "NOT_FOUND");

        // It can start over with the same key and pair.
        let again = start_pairing(&bridge, &mut late).await;
        assert_eq!(again.device_id, started.device_id);
        assert_ne!(again.pairing_id, started.pairing_id);
        let resp = confirm_code(&bridge, "alice", &again.code).await;
        assert_eq!(data(&resp, "confirmPairing")["status"], "ACTIVE");
    }
}

#[tokio::test]
async fn codes_are_single_use_and_a_restart_replaces_the_code() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let mut device = TestDevice::new();
        let started = start_pairing(&bridge, &mut device).await;
        data(
            &confirm_code(&bridge, "alice", &started.code).await,
            "confirmPairing",
        );
        for account in ["alice", "bob"] {
            let resp = confirm_code(&bridge, account, &started.code).await;
            expect_error(&resp, "NOT_FOUND");
        }
        let resp = bridge
            .gql(Some(&bridge.companion_token("bob")), DEVICES, json!({}))
            .await;
        assert!(data(&resp, "devices").as_array().unwrap().is_empty());

        // Starting again before confirming ends the first code.
        let mut other = TestDevice::new();
        let first = start_pairing(&bridge, &mut other).await;
        let second = start_pairing(&bridge, &mut other).await;
        assert_eq!(first.device_id, second.device_id);
        let resp = confirm_code(&bridge, "alice", &first.code).await;
        if first.code != second.code {
            expect_error(&resp, "NOT_FOUND");
        }
        let p = poll(&bridge, &other, &first.pairing_id).await;
        assert_eq!(p["status"], "EXPIRED", "{db:?}");
        let resp = confirm_code(&bridge, "alice", &second.code).await;
        assert_eq!(data(&resp, "confirmPairing")["status"], "ACTIVE");
    }
}

#[tokio::test]
async fn codes_may_be_typed_with_spaces_and_dashes() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        for style in [" ", "-", " - "] {
            let mut device = TestDevice::new();
            let started = start_pairing(&bridge, &mut device).await;
            let typed = format!(" {}{style}{} ", &started.code[..4], &started.code[4..]);
            let resp = confirm_code(&bridge, "alice", &typed).await;
            assert_eq!(
                data(&resp, "confirmPairing")["status"],
                "ACTIVE",
                "{db:?} {typed:?}"
            );
        }
        // Malformed codes are invalid input (and no failure is counted for them).
        for bad in ["", "1234567", "123456789", "1234567a", "１２３４５６７８"] {
            let resp = confirm_code(&bridge, "alice", bad).await;
            expect_error(&resp, "INVALID_INPUT");
        }
        let log = audit_entries(&bridge, "alice").await;
        assert!(entries_with(&log, "pairing.failure").is_empty(), "{log:?}");
    }
}

#[tokio::test]
async fn five_wrong_codes_lock_pairing_for_fifteen_minutes() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let mut device = TestDevice::new();
        let started = start_pairing(&bridge, &mut device).await;
        let wrong = wrong_code(&started.code);

        for n in 1..=4 {
            let resp = confirm_code(&bridge, "alice", &wrong).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "NOT_FOUND",
                "{db:?} try {n}: {resp}"
            );
        }
        let resp = confirm_code(&bridge, "alice", &wrong).await;
        let wait = retry_after(&resp);
        assert!((1..=900).contains(&wait), "{resp}");
        assert!(wait >= 890, "the lockout lasts 15 minutes: {resp}");

        // Even the right code is refused now.
        let resp = confirm_code(&bridge, "alice", &started.code).await;
        retry_after(&resp);
        // Another account is not locked.
        let mut other = TestDevice::new();
        let other_start = start_pairing(&bridge, &mut other).await;
        let resp = confirm_code(&bridge, "bob", &other_start.code).await;
        assert_eq!(data(&resp, "confirmPairing")["status"], "ACTIVE");

        // One second before the end: still locked (the old code has expired meanwhile; a new
        // pairing of the same device gives a new one).
        bridge.clock.advance_ms(LOCKOUT_MS - 1_000);
        let fresh = start_pairing(&bridge, &mut device).await;
        let resp = confirm_code(&bridge, "alice", &fresh.code).await;
        assert_eq!(retry_after(&resp), 1, "{db:?}");
        bridge.clock.advance_ms(1_000);
        let resp = confirm_code(&bridge, "alice", &fresh.code).await;
        assert_eq!(data(&resp, "confirmPairing")["status"], "ACTIVE", "{db:?}");

        let log = audit_entries(&bridge, "alice").await;
        let failures = entries_with(&log, "pairing.failure");
        let lockouts = entries_with(&log, "pairing.lockout");
        assert_eq!(failures.len(), 4, "{log:?}");
        assert_eq!(lockouts.len(), 1, "{log:?}");
        for e in failures.iter().chain(lockouts.iter()) {
            assert_eq!(e["outcome"], "failure");
            assert_eq!(e["clientAddress"], "127.0.0.1");
            assert!(e["actor"].as_str().unwrap().starts_with("account:"));
            // The wrong code itself is not recorded.
            assert!(!e.to_string().contains(&wrong), "{e}");
        }
    }
}

#[tokio::test]
async fn a_right_code_resets_the_count_of_wrong_ones() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let mut a = TestDevice::new();
        let first = start_pairing(&bridge, &mut a).await;
        let wrong = wrong_code(&first.code);
        for _ in 0..4 {
            expect_error(&confirm_code(&bridge, "alice", &wrong).await, "NOT_FOUND");
        }
        data(
            &confirm_code(&bridge, "alice", &first.code).await,
            "confirmPairing",
        );
        let mut b = TestDevice::new();
        let second = start_pairing(&bridge, &mut b).await;
        let wrong = wrong_code(&second.code);
        for _ in 0..4 {
            let resp = confirm_code(&bridge, "alice", &wrong).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "NOT_FOUND",
                "{db:?}: the count restarted after the right code: {resp}"
            );
        }
        retry_after(&confirm_code(&bridge, "alice", &wrong).await);
    }
}

#[tokio::test]
async fn attempts_during_the_lockout_are_audited() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let mut device = TestDevice::new();
        let started = start_pairing(&bridge, &mut device).await;
        let wrong = wrong_code(&started.code);
        for _ in 0..5 {
            confirm_code(&bridge, "alice", &wrong).await;
        }
        let before = audit_entries(&bridge, "alice").await.len();
        retry_after(&confirm_code(&bridge, "alice", &wrong).await);
        let after = audit_entries(&bridge, "alice").await;
        assert_eq!(after.len(), before + 1, "{db:?}: {after:?}");
        assert_ne!(after[0]["outcome"], "success");
    }
}

#[tokio::test]
async fn failed_confirmations_are_rate_limited_per_account() {
    for db in databases() {
        // No lockout in reach: only the hourly failure limit (10) applies.
        let bridge = TestBridge::start_with(db, |c| c.limits.pairing_lockout_after = 1_000).await;
        let mut device = TestDevice::new();
        let started = start_pairing(&bridge, &mut device).await;
        let wrong = wrong_code(&started.code);
        for n in 1..=10 {
            let resp = confirm_code(&bridge, "alice", &wrong).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "NOT_FOUND",
                "{db:?} try {n}: {resp}"
            );
        }
        let wait = retry_after(&confirm_code(&bridge, "alice", &wrong).await);
        assert!(wait <= 3600, "{wait}");
        // Per account: bob may still try.
        let resp = confirm_code(&bridge, "bob", &wrong).await;
        expect_error(&resp, "NOT_FOUND");
    }
}

#[tokio::test]
async fn an_account_over_the_failure_limit_cannot_keep_guessing() {
    for db in databases() {
        let bridge = TestBridge::start_with(db, |c| c.limits.pairing_lockout_after = 1_000).await;
        let mut device = TestDevice::new();
        let started = start_pairing(&bridge, &mut device).await;
        let wrong = wrong_code(&started.code);
        for _ in 0..10 {
            confirm_code(&bridge, "alice", &wrong).await;
        }
        retry_after(&confirm_code(&bridge, "alice", &wrong).await);
        // Over the limit, a guess must not be evaluated, even a right one.
        let resp = confirm_code(&bridge, "alice", &started.code).await;
        retry_after(&resp);
        let p = poll(&bridge, &device, &started.pairing_id).await;
        assert_eq!(p["status"], "PENDING", "{db:?}");
    }
}

#[tokio::test]
async fn proof_problems_are_unauthenticated() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let device = TestDevice::new();
        let other = TestDevice::new();
        let now = bridge.now_secs();
        let jti = || uuid::Uuid::new_v4().simple().to_string();

        let cases = [
            ("signed by another key", other.token_for(&bridge, "pairing")),
            (
                "wrong kid",
                mint_device_token(&device.key, "not-pairing", PUBLIC_URL, now, 120, &jti())
                    .unwrap(),
            ),
            (
                "a device id as kid",
                mint_device_token(
                    &device.key,
                    &unknown_id("dev"),
                    PUBLIC_URL,
                    now,
                    120,
                    &jti(),
                )
                .unwrap(),
            ),
            (
                "wrong audience",
                mint_device_token(&device.key, "pairing", "http://elsewhere", now, 120, &jti())
                    .unwrap(),
            ),
            (
                "expired",
                mint_device_token(&device.key, "pairing", PUBLIC_URL, now - 400, 120, &jti())
                    .unwrap(),
            ),
            (
                "from the future",
                mint_device_token(&device.key, "pairing", PUBLIC_URL, now + 600, 120, &jti())
                    .unwrap(),
            ),
            ("not a token", "garbage".to_owned()),
        ];
        for (what, proof) in cases {
            let resp = start_pairing_raw(&bridge, &device, &proof).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
                "{db:?} {what}: {resp}"
            );
            expect_error(&resp, "UNAUTHENTICATED");
        }
        assert_eq!(count_rows(&bridge, "devices").await, 0, "{db:?}");
        assert_eq!(count_rows(&bridge, "pairings").await, 0, "{db:?}");

        // A replayed proof: the same token twice, and a new token reusing the jti.
        let proof = device.token_for(&bridge, "pairing");
        data(
            &start_pairing_raw(&bridge, &device, &proof).await,
            "startPairing",
        );
        let resp = start_pairing_raw(&bridge, &device, &proof).await;
        let e = expect_error(&resp, "UNAUTHENTICATED");
        assert!(
            e["message"].as_str().unwrap().contains("replayed_token"),
            "{e}"
        );
        let claims: serde_json::Value = {
            use base64::Engine as _;
            let payload = proof.split('.').nth(1).unwrap();
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap()
        };
        bridge.clock.advance_ms(2_000);
        let same_jti = mint_device_token(
            &device.key,
            "pairing",
            PUBLIC_URL,
            bridge.now_secs(),
            120,
            claims["jti"].as_str().unwrap(),
        )
        .unwrap();
        assert_ne!(same_jti, proof);
        let resp = start_pairing_raw(&bridge, &device, &same_jti).await;
        expect_error(&resp, "UNAUTHENTICATED");
        assert_eq!(count_rows(&bridge, "pairings").await, 1, "{db:?}");
    }
}

#[tokio::test]
async fn invalid_public_keys_and_labels_are_invalid_input() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let device = TestDevice::new();
        let proof = || device.token_for(&bridge, "pairing");
        let good = device.public_key_b64();
        // Off the curve: the right length and prefix, but y is wrong.
        let off_curve = {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut bytes = b64.decode(&good).unwrap();
            bytes[64] ^= 1;
            b64.encode(bytes)
        };
        let compressed = {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let bytes = b64.decode(&good).unwrap();
            let mut c = vec![0x02 | (bytes[64] & 1)];
            c.extend_from_slice(&bytes[1..33]);
            b64.encode(c)
        };
        for (what, key) in [
            ("empty", String::new()),
            ("not base64", "!!!!".to_owned()),
            ("too short", good[..40].to_owned()),
            ("off the curve", off_curve),
            ("compressed point", compressed),
            ("padded", format!("{good}=")),
            ("huge", "A".repeat(5000)),
        ] {
            let resp = bridge
                .gql(
                    None,
                    START_PAIRING,
                    json!({"i": {"publicKey": key, "proof": proof(), "name": "Hub", "model": "Hub 1"}}),
                )
                .await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "INVALID_INPUT",
                "{db:?} {what}: {resp}"
            );
            expect_error(&resp, "INVALID_INPUT");
        }
        let long = "n".repeat(65);
        for (name, model) in [
            ("", "Hub 1"),
            ("Hub", " "),
            (long.as_str(), "Hub 1"),
            ("Hub\u{0}", "Hub 1"),
        ] {
            let resp = bridge
                .gql(
                    None,
                    START_PAIRING,
                    json!({"i": {"publicKey": good, "proof": proof(), "name": name, "model": model}}),
                )
                .await;
            expect_error(&resp, "INVALID_INPUT");
        }
        assert_eq!(count_rows(&bridge, "devices").await, 0, "{db:?}");
    }
}

#[tokio::test]
async fn an_already_paired_key_is_already_used() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let (device, _) = pair(&bridge, "alice").await;
        let resp = start_pairing_raw(&bridge, &device, &device.token_for(&bridge, "pairing")).await;
        expect_error(&resp, "ALREADY_USED");
        // The device is still alice's and still works.
        let resp = bridge
            .gql(
                Some(&bridge.companion_token("alice")),
                DEVICE,
                json!({"id": device.id}),
            )
            .await;
        assert_eq!(data(&resp, "device")["status"], "ACTIVE", "{db:?}");
        let resp = bridge
            .gql(
                Some(&device.token(&bridge)),
                DEVICE_PING,
                json!({"id": unknown_id("dlv")}),
            )
            .await;
        expect_error(&resp, "NOT_FOUND");
    }
}

#[tokio::test]
async fn start_pairing_is_rate_limited_per_address() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let limit = bridge
            .state
            .config
            .limits
            .pairing_starts_per_address_per_minute;
        assert_eq!(limit, 10, "the documented default");
        for _ in 0..limit {
            let mut d = TestDevice::new();
            start_pairing(&bridge, &mut d).await;
        }
        let d = TestDevice::new();
        let resp = start_pairing_raw(&bridge, &d, &d.token_for(&bridge, "pairing")).await;
        let wait = retry_after(&resp);
        assert!((1..=60).contains(&wait), "{resp}");
        assert_eq!(count_rows(&bridge, "devices").await, 10, "{db:?}");

        bridge.clock.advance_ms(60_000);
        let mut d = TestDevice::new();
        start_pairing(&bridge, &mut d).await;
    }
}

#[tokio::test]
async fn devices_per_account_are_limited() {
    for db in databases() {
        let bridge = TestBridge::start_with(db, |c| c.limits.devices_per_account = 2).await;
        pair(&bridge, "alice").await;
        pair(&bridge, "alice").await;
        let mut third = TestDevice::new();
        let started = start_pairing(&bridge, &mut third).await;
        let resp = confirm_code(&bridge, "alice", &started.code).await;
        expect_error(&resp, "INVALID_INPUT");
        let p = poll(&bridge, &third, &started.pairing_id).await;
        assert_eq!(p["status"], "PENDING", "{db:?}");
        // Another account may take it.
        let resp = confirm_code(&bridge, "bob", &started.code).await;
        assert_eq!(data(&resp, "confirmPairing")["status"], "ACTIVE");
    }
}
