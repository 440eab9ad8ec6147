//! Device lifecycle over HTTP and WebSocket, on every database: list and rename, revoke (the
//! next call fails), inactivity expiry, device token replay and expiry; envelope signing-key
//! rotation as companions see it through the JWKS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bridge::auth::device::mint_device_token;
use serde_json::{Value, json};
use support::*;

const DAY_MS: i64 = 86_400_000;

/// A device call: `NOT_FOUND` when the device is let in, `UNAUTHENTICATED` when not.
async fn ping(bridge: &TestBridge, token: &str) -> Value {
    bridge
        .gql(Some(token), DEVICE_PING, json!({"id": unknown_id("dlv")}))
        .await
}

async fn device_of(bridge: &TestBridge, account: &str, id: &str) -> Value {
    let resp = bridge
        .gql(
            Some(&bridge.companion_token(account)),
            DEVICE,
            json!({"id": id}),
        )
        .await;
    data(&resp, "device").clone()
}

#[tokio::test]
async fn list_and_rename() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "alice-push").await;
        let alice = bridge.companion_token("alice");
        let (first, _) = pair(&bridge, "alice").await;
        bridge.clock.advance_ms(1_000);
        let (second, _) = pair(&bridge, "alice").await;
        let first_id = first.id.clone().unwrap();

        let resp = bridge.gql(Some(&alice), DEVICES, json!({})).await;
        let list = data(&resp, "devices").as_array().unwrap().clone();
        let ids: Vec<String> = list.iter().map(id_of).collect();
        assert_eq!(
            ids,
            vec![second.id.clone().unwrap(), first_id.clone()],
            "{db:?}: newest first"
        );
        assert_eq!(list[1]["createdAt"], bridge::id::rfc3339(T0_MS));
        assert_eq!(list[1]["status"], "ACTIVE");
        assert_eq!(list[1]["model"], "Quest 3");

        let resp = bridge
            .gql(
                Some(&alice),
                RENAME,
                json!({"id": first_id, "n": "  Kitchen hub "}),
            )
            .await;
        assert_eq!(data(&resp, "renameDevice")["name"], "Kitchen hub");
        assert_eq!(
            device_of(&bridge, "alice", &first_id).await["name"],
            "Kitchen hub"
        );
        // New requests carry the new name.
        let d = request_sign_in(&bridge, &first, "k").await;
        assert_eq!(d["deviceName"], "Kitchen hub");

        let long = "n".repeat(65);
        for bad in ["", "   ", long.as_str(), "tab\there", "nul\u{0}"] {
            let resp = bridge
                .gql(Some(&alice), RENAME, json!({"id": first_id, "n": bad}))
                .await;
            expect_error(&resp, "INVALID_INPUT");
        }
        // 64 characters (not bytes) are allowed.
        let resp = bridge
            .gql(
                Some(&alice),
                RENAME,
                json!({"id": first_id, "n": "é".repeat(64)}),
            )
            .await;
        assert_eq!(data(&resp, "renameDevice")["name"], "é".repeat(64));
        let resp = bridge
            .gql(
                Some(&alice),
                RENAME,
                json!({"id": unknown_id("dev"), "n": "x"}),
            )
            .await;
        expect_error(&resp, "NOT_FOUND");
        let resp = bridge
            .gql(Some(&alice), DEVICE, json!({"id": unknown_id("dev")}))
            .await;
        expect_error(&resp, "NOT_FOUND");
    }
}

#[tokio::test]
async fn a_revoked_device_fails_its_very_next_call() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "alice-push").await;
        let alice = bridge.companion_token("alice");
        let (device, _) = pair(&bridge, "alice").await;
        let id = device.id.clone().unwrap();
        // Minted before the revocation, used after it.
        let token = device.token(&bridge);
        expect_error(&ping(&bridge, &device.token(&bridge)).await, "NOT_FOUND");

        let resp = bridge.gql(Some(&alice), REVOKE, json!({"id": id})).await;
        assert_eq!(data(&resp, "revokeDevice")["status"], "REVOKED", "{db:?}");

        let e = expect_error(&ping(&bridge, &token).await, "UNAUTHENTICATED").clone();
        assert!(
            e["message"].as_str().unwrap().contains("device_not_active"),
            "{e}"
        );
        let resp = bridge
            .gql(
                Some(&device.token(&bridge)),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "after"),
            )
            .await;
        expect_error(&resp, "UNAUTHENTICATED");
        let resp = bridge
            .subscribe(
                Some(&device.token(&bridge)),
                DELIVERY_STATUS,
                json!({"id": unknown_id("dlv")}),
            )
            .await
            .next()
            .await;
        expect_error(&resp, "UNAUTHENTICATED");
        assert_eq!(device_of(&bridge, "alice", &id).await["status"], "REVOKED");

        // Revoking again changes nothing; the key cannot pair again.
        let resp = bridge.gql(Some(&alice), REVOKE, json!({"id": id})).await;
        assert!(resp["errors"].is_array(), "{resp}");
        assert_clean_errors(&resp);
        let resp = start_pairing_raw(&bridge, &device, &device.token_for(&bridge, "pairing")).await;
        expect_error(&resp, "INVALID_INPUT");

        let log = audit_entries(&bridge, "alice").await;
        let revoked = entries_with(&log, "device.revoke");
        assert_eq!(revoked.len(), 1, "{log:?}");
        assert_eq!(revoked[0]["detail"], id.as_str());
        assert_eq!(revoked[0]["outcome"], "success");
        assert_eq!(revoked[0]["clientAddress"], "127.0.0.1");
    }
}

#[tokio::test]
async fn a_revoked_device_cannot_start_operations_on_an_open_socket() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "alice-push").await;
        let alice = bridge.companion_token("alice");
        let (device, _) = pair(&bridge, "alice").await;
        let id = id_of(&request_sign_in(&bridge, &device, "k").await);
        let mut sub = bridge
            .subscribe(
                Some(&device.token(&bridge)),
                DELIVERY_STATUS,
                json!({"id": id}),
            )
            .await;
        sub.next().await;
        let resp = bridge
            .gql(Some(&alice), REVOKE, json!({"id": device.id}))
            .await;
        data(&resp, "revokeDevice");
        // The same connection asks for something new: the revoked device must be refused.
        sub.start("2", DELIVERY, json!({"id": id})).await;
        let msg = loop {
            let msg = sub.next_message().await;
            if msg["id"] == "2" {
                break msg;
            }
        };
        assert_eq!(msg["type"], "next", "{msg}");
        expect_error(&msg["payload"], "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn inactive_devices_expire_after_thirty_days() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "alice-push").await;
        let alice = bridge.companion_token("alice");
        let (idle, _) = pair(&bridge, "alice").await;
        let (busy, _) = pair(&bridge, "alice").await;
        let idle_id = idle.id.clone().unwrap();
        let busy_id = busy.id.clone().unwrap();

        bridge.clock.advance_ms(29 * DAY_MS);
        expect_error(&ping(&bridge, &busy.token(&bridge)).await, "NOT_FOUND");
        assert_eq!(
            device_of(&bridge, "alice", &busy_id).await["lastSeenAt"],
            bridge::id::rfc3339(T0_MS + 29 * DAY_MS)
        );
        bridge.sweep_now().await;
        assert_eq!(
            device_of(&bridge, "alice", &idle_id).await["status"],
            "ACTIVE"
        );

        bridge.clock.advance_ms(2 * DAY_MS);
        bridge.sweep_now().await;
        assert_eq!(
            device_of(&bridge, "alice", &idle_id).await["status"],
            "EXPIRED",
            "{db:?}"
        );
        assert_eq!(
            device_of(&bridge, "alice", &busy_id).await["status"],
            "ACTIVE"
        );

        let e = expect_error(
            &ping(&bridge, &idle.token(&bridge)).await,
            "UNAUTHENTICATED",
        )
        .clone();
        assert!(
            e["message"].as_str().unwrap().contains("device_not_active"),
            "{e}"
        );
        let resp = bridge
            .gql(
                Some(&idle.token(&bridge)),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "late"),
            )
            .await;
        expect_error(&resp, "UNAUTHENTICATED");
        request_sign_in(&bridge, &busy, "still-here").await;

        let log = audit_entries(&bridge, "alice").await;
        // Exactly once, even with the background sweeper running too.
        let expired = entries_with(&log, "device.expire");
        assert_eq!(expired.len(), 1, "{db:?}: {log:?}");
        for e in &expired {
            assert!(e["detail"].as_str().unwrap().contains(&idle_id), "{e}");
            assert_eq!(e["outcome"], "expired");
            assert_eq!(e["actor"], "system");
        }
        // Revoking an expired device is not possible; it stays expired.
        let resp = bridge
            .gql(Some(&alice), REVOKE, json!({"id": idle_id}))
            .await;
        assert!(resp["errors"].is_array(), "{resp}");
        assert_eq!(
            device_of(&bridge, "alice", &idle_id).await["status"],
            "EXPIRED"
        );
    }
}

#[tokio::test]
async fn a_replayed_device_token_is_refused() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "alice-push").await;
        let (device, _) = pair(&bridge, "alice").await;
        let token = device.token(&bridge);
        expect_error(&ping(&bridge, &token).await, "NOT_FOUND");
        let resp = ping(&bridge, &token).await;
        let e = expect_error(&resp, "UNAUTHENTICATED");
        assert!(
            e["message"].as_str().unwrap().contains("replayed_token"),
            "{db:?} {e}"
        );
        // Also when the replay is a mutation, or over a WebSocket.
        let token = device.token(&bridge);
        request_sign_in_with(&bridge, &token, "first").await;
        let resp = bridge
            .gql(
                Some(&token),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "second"),
            )
            .await;
        expect_error(&resp, "UNAUTHENTICATED");
        assert_eq!(count_rows(&bridge, "deliveries").await, 1);
        let resp = bridge
            .subscribe(
                Some(&token),
                DELIVERY_STATUS,
                json!({"id": unknown_id("dlv")}),
            )
            .await
            .next()
            .await;
        expect_error(&resp, "UNAUTHENTICATED");
        // The device itself is fine: a fresh token works.
        expect_error(&ping(&bridge, &device.token(&bridge)).await, "NOT_FOUND");
    }
}

async fn request_sign_in_with(bridge: &TestBridge, token: &str, key: &str) {
    let resp = bridge
        .gql(Some(token), REQUEST_SIGN_IN, sign_in_input(bridge, key))
        .await;
    data(&resp, "requestSignIn");
}

#[tokio::test]
async fn expired_future_and_forged_device_tokens_are_refused() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "alice-push").await;
        let (device, _) = pair(&bridge, "alice").await;
        let id = device.id.clone().unwrap();
        let jti = || uuid::Uuid::new_v4().simple().to_string();
        let now = bridge.now_secs();

        // Lifetime 120 s plus 30 s leeway.
        let used_in_time = device.token(&bridge);
        let used_late = device.token(&bridge);
        bridge.clock.advance_ms(149_000);
        expect_error(&ping(&bridge, &used_in_time).await, "NOT_FOUND");
        bridge.clock.advance_ms(1_000);
        let e = expect_error(&ping(&bridge, &used_late).await, "UNAUTHENTICATED").clone();
        assert!(
            e["message"].as_str().unwrap().contains("expired"),
            "{db:?} {e}"
        );

        let now2 = bridge.now_secs();
        let other = TestDevice::new();
        let cases = [
            (
                "from the future",
                mint_device_token(&device.key, &id, PUBLIC_URL, now2 + 120, 120, &jti()).unwrap(),
            ),
            (
                "signed by another key",
                mint_device_token(&other.key, &id, PUBLIC_URL, now2, 120, &jti()).unwrap(),
            ),
            (
                "for another audience",
                mint_device_token(&device.key, &id, "http://elsewhere", now2, 120, &jti()).unwrap(),
            ),
            (
                "of an unknown device",
                mint_device_token(
                    &device.key,
                    &unknown_id("dev"),
                    PUBLIC_URL,
                    now2,
                    120,
                    &jti(),
                )
                .unwrap(),
            ),
            (
                "long expired",
                mint_device_token(&device.key, &id, PUBLIC_URL, now - 3600, 120, &jti()).unwrap(),
            ),
        ];
        for (what, token) in cases {
            let resp = ping(&bridge, &token).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
                "{db:?} {what}: {resp}"
            );
            expect_error(&resp, "UNAUTHENTICATED");
        }
    }
}

#[tokio::test]
async fn a_rotated_signing_key_stays_in_the_jwks_for_its_envelopes() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "alice-push").await;
        let (device, _) = pair(&bridge, "alice").await;
        let old = request_sign_in(&bridge, &device, "before").await;
        let old_kid = bridge.state.keys.read().unwrap().active_kid().to_owned();
        bridge.state.keys.write().unwrap().rotate(bridge.now_secs());
        let new = request_sign_in(&bridge, &device, "after").await;

        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&bridge.get("/.well-known/jwks.json").await.1).unwrap();
        let kids: Vec<String> = jwks
            .keys
            .iter()
            .map(|k| k.common.key_id.clone().unwrap())
            .collect();
        assert_eq!(kids.len(), 2, "{db:?} {kids:?}");
        assert!(kids.contains(&old_kid));
        for d in [&old, &new] {
            bridge::signing::verify_envelope(
                d["envelope"].as_str().unwrap(),
                &jwks,
                PUBLIC_URL,
                "tether-companion",
                bridge.now_secs(),
                0,
            )
            .unwrap();
        }
        let header = |d: &Value| -> Value {
            use base64::Engine as _;
            let h = d["envelope"].as_str().unwrap().split('.').next().unwrap();
            serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h)
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(header(&old)["kid"], old_kid.as_str());
        assert_ne!(header(&new)["kid"], old_kid.as_str());
    }
}

#[tokio::test]
async fn a_device_token_is_spent_even_when_its_request_fails() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "alice-push").await;
        let (device, _) = pair(&bridge, "alice").await;
        // First use: a request the bridge refuses (bad URL) — nothing stored, token spent.
        let token = device.token(&bridge);
        let mut bad = sign_in_input(&bridge, "bad");
        bad["i"]["fidoUrl"] = json!("FIDO:/123");
        expect_error(
            &bridge.gql(Some(&token), REQUEST_SIGN_IN, bad).await,
            "INVALID_INPUT",
        );
        let resp = bridge
            .gql(
                Some(&token),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "good"),
            )
            .await;
        let e = expect_error(&resp, "UNAUTHENTICATED");
        assert!(
            e["message"].as_str().unwrap().contains("replayed_token"),
            "{db:?} {e}"
        );
        assert_eq!(count_rows(&bridge, "deliveries").await, 0);
        // An idempotent retry answered from the stored delivery also spends its token.
        let token = device.token(&bridge);
        let first = bridge
            .gql(Some(&token), REQUEST_SIGN_IN, sign_in_input(&bridge, "k"))
            .await;
        assert_clean_errors(&first);
        let retry_token = device.token(&bridge);
        let again = bridge
            .gql(
                Some(&retry_token),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "k"),
            )
            .await;
        assert_eq!(
            again["data"]["requestSignIn"]["id"],
            first["data"]["requestSignIn"]["id"]
        );
        let replay = bridge
            .gql(
                Some(&retry_token),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "k2"),
            )
            .await;
        expect_error(&replay, "UNAUTHENTICATED");
    }
}
