//! Companion installs over HTTP, on every database: register, list, update the push token,
//! remove; a token registered from another account moves (audited on both sides); invalid input
//! stores nothing; the per-account install limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::*;

fn register_input(platform: &str, token: &str, app: &str, name: &str) -> Value {
    json!({"i": {"platform": platform, "pushToken": token, "appId": app, "displayName": name}})
}

async fn companions_of(bridge: &TestBridge, account: &str) -> Vec<Value> {
    let resp = bridge
        .gql(
            Some(&bridge.companion_token(account)),
            COMPANIONS,
            json!({}),
        )
        .await;
    data(&resp, "companions").as_array().unwrap().clone()
}

#[tokio::test]
async fn register_list_update_remove() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");

        let resp = bridge
            .gql(
                Some(&alice),
                REGISTER_COMPANION,
                register_input("FCM", "fcm-token-1", "com.example.app", "Alice's Pixel"),
            )
            .await;
        let c = data(&resp, "registerCompanion").clone();
        let id = id_of(&c);
        assert!(id.starts_with("cmp_"), "{c}");
        bridge.clock.advance_ms(1_000);
        assert_eq!(c["platform"], "FCM");
        assert_eq!(c["appId"], "com.example.app");
        assert_eq!(c["displayName"], "Alice's Pixel");
        assert_eq!(c["active"], true);

        let resp = bridge
            .gql(
                Some(&alice),
                REGISTER_COMPANION,
                register_input("APNS", "apns-token-2", "com.example.ios", "Alice's iPhone"),
            )
            .await;
        let second = id_of(data(&resp, "registerCompanion"));

        let list = companions_of(&bridge, "alice").await;
        let ids: Vec<String> = list.iter().map(id_of).collect();
        assert_eq!(
            ids,
            vec![id.clone(), second.clone()],
            "{db:?}: oldest first"
        );
        assert_eq!(list[0]["createdAt"], bridge::id::rfc3339(T0_MS));

        // Registering the same token again updates that install; no second one appears.
        let resp = bridge
            .gql(
                Some(&alice),
                REGISTER_COMPANION,
                register_input("FCM", "fcm-token-1", "com.example.app", "Pixel 9"),
            )
            .await;
        assert_eq!(id_of(data(&resp, "registerCompanion")), id);
        let list = companions_of(&bridge, "alice").await;
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["displayName"], "Pixel 9");

        // A rotated token.
        bridge.clock.advance_ms(4_000);
        let resp = bridge
            .gql(
                Some(&alice),
                UPDATE_TOKEN,
                json!({"id": id, "t": "fcm-token-1b"}),
            )
            .await;
        let updated = data(&resp, "updatePushToken");
        assert_eq!(id_of(updated), id);
        assert_eq!(updated["updatedAt"], bridge::id::rfc3339(T0_MS + 5_000));
        // The old token is free again: registering it makes a new install.
        let resp = bridge
            .gql(
                Some(&alice),
                REGISTER_COMPANION,
                register_input("FCM", "fcm-token-1", "com.example.app", "Tablet"),
            )
            .await;
        let third = id_of(data(&resp, "registerCompanion"));
        assert_ne!(third, id);
        assert_eq!(companions_of(&bridge, "alice").await.len(), 3);

        // Remove.
        let resp = bridge
            .gql(Some(&alice), REMOVE_COMPANION, json!({"id": third}))
            .await;
        assert_eq!(data(&resp, "removeCompanion"), &json!(true));
        let ids: Vec<String> = companions_of(&bridge, "alice")
            .await
            .iter()
            .map(id_of)
            .collect();
        assert_eq!(ids, vec![id.clone(), second.clone()]);
        // Removed is gone for good.
        let resp = bridge
            .gql(Some(&alice), REMOVE_COMPANION, json!({"id": third}))
            .await;
        expect_error(&resp, "NOT_FOUND");
        let resp = bridge
            .gql(
                Some(&alice),
                UPDATE_TOKEN,
                json!({"id": third, "t": "again"}),
            )
            .await;
        expect_error(&resp, "NOT_FOUND");
        let resp = bridge
            .gql(
                Some(&alice),
                UPDATE_TOKEN,
                json!({"id": unknown_id("cmp"), "t": "again"}),
            )
            .await;
        expect_error(&resp, "NOT_FOUND");

        let log = audit_entries(&bridge, "alice").await;
        assert_eq!(entries_with(&log, "companion.register").len(), 4, "{log:?}");
        assert_eq!(entries_with(&log, "companion.token_update").len(), 1);
        let removed = entries_with(&log, "companion.remove");
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0]["detail"], third.as_str());
        assert_eq!(removed[0]["outcome"], "success");
        assert_eq!(removed[0]["clientAddress"], "127.0.0.1");
    }
}

#[tokio::test]
async fn removed_installs_receive_no_deliveries() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        let id = register_companion(&bridge, "alice", "only-token").await;
        let (device, _) = pair(&bridge, "alice").await;
        let resp = bridge
            .gql(Some(&alice), REMOVE_COMPANION, json!({"id": id}))
            .await;
        data(&resp, "removeCompanion");
        let resp = bridge
            .gql(
                Some(&device.token(&bridge)),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "k"),
            )
            .await;
        expect_error(&resp, "NO_ACTIVE_COMPANION");
        assert_eq!(count_rows(&bridge, "deliveries").await, 0);
    }
}

#[tokio::test]
async fn a_token_registered_from_another_account_moves() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice_install = register_companion(&bridge, "alice", "shared-phone-token").await;
        let (alice_device, _) = pair(&bridge, "alice").await;

        // The phone signs in to bob's account and registers the same push token.
        let bob_install = register_companion(&bridge, "bob", "shared-phone-token").await;
        assert_ne!(bob_install, alice_install);

        assert!(companions_of(&bridge, "alice").await.is_empty(), "{db:?}");
        let bob = companions_of(&bridge, "bob").await;
        assert_eq!(bob.iter().map(id_of).collect::<Vec<_>>(), vec![bob_install]);

        for account in ["alice", "bob"] {
            let log = audit_entries(&bridge, account).await;
            let moved = entries_with(&log, "companion.token_moved");
            assert_eq!(moved.len(), 1, "{account}: {log:?}");
            assert_eq!(moved[0]["outcome"], "success");
        }
        // Alice's install is gone: her device's requests reach nobody.
        let resp = bridge
            .gql(
                Some(&alice_device.token(&bridge)),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "k"),
            )
            .await;
        expect_error(&resp, "NO_ACTIVE_COMPANION");
        // Alice can no longer touch the install that held it.
        let alice = bridge.companion_token("alice");
        let resp = bridge
            .gql(Some(&alice), REMOVE_COMPANION, json!({"id": alice_install}))
            .await;
        expect_error(&resp, "NOT_FOUND");
    }
}

#[tokio::test]
async fn a_token_taken_over_by_update_is_audited_on_both_sides() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "shared-phone-token").await;
        let bob_install = register_companion(&bridge, "bob", "bob-token").await;
        let bob = bridge.companion_token("bob");
        let resp = bridge
            .gql(
                Some(&bob),
                UPDATE_TOKEN,
                json!({"id": bob_install, "t": "shared-phone-token"}),
            )
            .await;
        data(&resp, "updatePushToken");
        // The token moved: alice no longer has the install.
        assert!(companions_of(&bridge, "alice").await.is_empty(), "{db:?}");
        for account in ["alice", "bob"] {
            let log = audit_entries(&bridge, account).await;
            assert_eq!(
                entries_with(&log, "companion.token_moved").len(),
                1,
                "{db:?} {account}: {log:?}"
            );
        }
    }
}

#[tokio::test]
async fn invalid_registrations_store_nothing() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        // Creates the account row so the count below only measures installs.
        data(
            &bridge.gql(Some(&alice), ACCOUNT, json!({})).await,
            "account",
        );
        let long_token = "a".repeat(4097);
        let long_app = "b".repeat(256);
        let long_name = "c".repeat(65);
        let cases: Vec<(&str, Value)> = vec![
            ("empty token", register_input("APNS", "", "app", "Phone")),
            (
                "oversized token",
                register_input("APNS", &long_token, "app", "Phone"),
            ),
            (
                "non-ASCII token",
                register_input("APNS", "tökén-ünïcode", "app", "Phone"),
            ),
            (
                "token with a space",
                register_input("APNS", "abc def", "app", "Phone"),
            ),
            (
                "token with a newline",
                register_input("APNS", "abc\ndef", "app", "Phone"),
            ),
            (
                "bad platform",
                register_input("WINDOWS", "tok-1", "app", "Phone"),
            ),
            (
                "lower-case platform",
                register_input("apns", "tok-1", "app", "Phone"),
            ),
            ("empty app id", register_input("APNS", "tok-1", "", "Phone")),
            (
                "oversized app id",
                register_input("APNS", "tok-1", &long_app, "Phone"),
            ),
            ("empty name", register_input("APNS", "tok-1", "app", "   ")),
            (
                "oversized name",
                register_input("APNS", "tok-1", "app", &long_name),
            ),
            (
                "control character in name",
                register_input("APNS", "tok-1", "app", "Pho\u{7}ne"),
            ),
            (
                "missing field",
                json!({"i": {"platform": "APNS", "pushToken": "tok-1", "appId": "app"}}),
            ),
            (
                "token of the wrong type",
                json!({"i": {"platform": "APNS", "pushToken": 12345, "appId": "app", "displayName": "Phone"}}),
            ),
        ];
        let rows = count_rows(&bridge, "companions").await;
        let audit = count_rows(&bridge, "audit_log").await;
        for (what, input) in cases {
            let resp = bridge.gql(Some(&alice), REGISTER_COMPANION, input).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "INVALID_INPUT",
                "{db:?} {what}: {resp}"
            );
            expect_error(&resp, "INVALID_INPUT");
        }
        assert_eq!(count_rows(&bridge, "companions").await, rows, "{db:?}");
        assert_eq!(count_rows(&bridge, "audit_log").await, audit, "{db:?}");
        assert!(companions_of(&bridge, "alice").await.is_empty());

        // Invalid replacement tokens change nothing either.
        let id = register_companion(&bridge, "alice", "good-token").await;
        let before = companions_of(&bridge, "alice").await;
        for bad in ["", "white space", "ümlaut", long_token.as_str()] {
            let resp = bridge
                .gql(Some(&alice), UPDATE_TOKEN, json!({"id": id, "t": bad}))
                .await;
            expect_error(&resp, "INVALID_INPUT");
        }
        assert_eq!(companions_of(&bridge, "alice").await, before);
        // The longest allowed token works.
        let resp = bridge
            .gql(
                Some(&alice),
                UPDATE_TOKEN,
                json!({"id": id, "t": "z".repeat(4096)}),
            )
            .await;
        data(&resp, "updatePushToken");
    }
}

#[tokio::test]
async fn installs_per_account_are_limited() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        let limit = bridge.state.config.limits.companions_per_account;
        assert_eq!(limit, 20, "the documented default");
        let mut ids = Vec::new();
        for n in 0..limit {
            ids.push(register_companion(&bridge, "alice", &format!("token-{n}")).await);
        }
        let resp = bridge
            .gql(
                Some(&alice),
                REGISTER_COMPANION,
                register_input("APNS", "one-too-many", "app", "Phone"),
            )
            .await;
        expect_error(&resp, "INVALID_INPUT");
        assert_eq!(companions_of(&bridge, "alice").await.len(), 20, "{db:?}");
        // Re-registering a token the account holds is not a new install.
        let resp = bridge
            .gql(
                Some(&alice),
                REGISTER_COMPANION,
                register_input("APNS", "token-3", "app", "Renamed"),
            )
            .await;
        assert_eq!(id_of(data(&resp, "registerCompanion")), ids[3]);
        // Another account is not affected.
        register_companion(&bridge, "bob", "bobs-token").await;
        // Removing one makes room.
        let resp = bridge
            .gql(Some(&alice), REMOVE_COMPANION, json!({"id": ids[0]}))
            .await;
        data(&resp, "removeCompanion");
        register_companion(&bridge, "alice", "one-too-many").await;
        assert_eq!(companions_of(&bridge, "alice").await.len(), 20);
    }
}
