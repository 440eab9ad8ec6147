//! Deliveries over HTTP and WebSocket, on every database: request, claim (the URL exactly once),
//! deny, complete, expiry at exactly 300 s, the sweeper erasing URLs, `NO_ACTIVE_COMPANION`,
//! idempotency, FIDO URL validation (including every invalid URL of the hybrid vectors),
//! oversized input, rate limits and status subscriptions for device and companion.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use hybrid::url::RequestType;
use serde_json::{Value, json};
use support::*;

/// Five minutes.
const LIFETIME_MS: i64 = 300_000;

struct World {
    bridge: TestBridge,
    device: TestDevice,
    companion: String,
    alice: String,
}

async fn world(db: Db) -> World {
    let bridge = TestBridge::start(db).await;
    let companion = register_companion(&bridge, "alice", "alice-push").await;
    let (device, _) = pair(&bridge, "alice").await;
    let alice = bridge.companion_token("alice");
    World {
        bridge,
        device,
        companion,
        alice,
    }
}

impl World {
    async fn request(&self, input: Value) -> Value {
        self.bridge
            .gql(
                Some(&self.device.token(&self.bridge)),
                REQUEST_SIGN_IN,
                input,
            )
            .await
    }

    async fn register(&self, input: Value) -> Value {
        self.bridge
            .gql(
                Some(&self.device.token(&self.bridge)),
                REQUEST_REGISTRATION,
                input,
            )
            .await
    }

    async fn sign_in(&self, key: &str) -> String {
        let resp = self.request(sign_in_input(&self.bridge, key)).await;
        id_of(data(&resp, "requestSignIn"))
    }

    async fn delivery(&self, id: &str) -> Value {
        let resp = self
            .bridge
            .gql(Some(&self.alice), DELIVERY, json!({"id": id}))
            .await;
        data(&resp, "delivery").clone()
    }

    async fn claim(&self, id: &str) -> Value {
        self.bridge
            .gql(Some(&self.alice), CLAIM, json!({"id": id}))
            .await
    }

    async fn complete(&self, id: &str, outcome: &str) -> Value {
        self.bridge
            .gql(
                Some(&self.device.token(&self.bridge)),
                COMPLETE,
                json!({"id": id, "o": outcome}),
            )
            .await
    }

    async fn pending_ids(&self) -> Vec<String> {
        let resp = self.bridge.gql(Some(&self.alice), PENDING, json!({})).await;
        data(&resp, "pendingDeliveries")
            .as_array()
            .unwrap()
            .iter()
            .map(id_of)
            .collect()
    }
}

fn input(url: &str, rp: &str, key: &str) -> Value {
    json!({"i": {"fidoUrl": url, "rpId": rp, "idempotencyKey": key}})
}

#[tokio::test]
async fn request_claim_complete_hands_out_the_url_once() {
    for db in databases() {
        let w = world(db).await;
        let url = fido_url(&w.bridge, RequestType::GetAssertion);
        let resp = w
            .request(json!({"i": {
                "fidoUrl": url,
                "rpId": "example.com",
                "idempotencyKey": "k1",
                "context": {"origin": "https://example.com", "userName": "alice@example.com"}
            }}))
            .await;
        let d = data(&resp, "requestSignIn").clone();
        let id = id_of(&d);
        assert!(id.starts_with("dlv_"));
        assert_eq!(d["kind"], "SIGN_IN");
        assert!(
            ["QUEUED", "SENT"].contains(&d["status"].as_str().unwrap()),
            "{d}"
        );
        assert_eq!(d["deviceId"], w.device.id.as_deref().unwrap());
        let code = d["numberCode"].as_str().unwrap();
        assert!(code.len() == 2 && code.bytes().all(|b| b.is_ascii_digit()));
        // Nothing the device or the push sees carries the URL.
        assert!(!resp.to_string().contains(&url));
        assert_eq!(w.pending_ids().await, vec![id.clone()], "{db:?}");
        let shown = w.delivery(&id).await;
        assert_eq!(shown["origin"], "https://example.com");
        assert_eq!(shown["userName"], "alice@example.com");
        assert_eq!(shown["deviceName"], "Living room");

        let claim = w
            .bridge
            .gql(
                Some(&w.alice),
                CLAIM_AS,
                json!({"id": id, "c": w.companion}),
            )
            .await;
        let claimed = data(&claim, "claimDelivery");
        assert_eq!(claimed["fidoUrl"], url.as_str(), "{db:?}");
        assert_eq!(claimed["delivery"]["status"], "CLAIMED");
        // Once: a second claim, with or without an install id, gets nothing.
        expect_error(&w.claim(&id).await, "ALREADY_USED");
        let again = w
            .bridge
            .gql(
                Some(&w.alice),
                CLAIM_AS,
                json!({"id": id, "c": w.companion}),
            )
            .await;
        expect_error(&again, "ALREADY_USED");
        assert_eq!(stored_fido_url(&w.bridge, &id).await, None, "{db:?}");
        assert!(w.pending_ids().await.is_empty());

        let done = w.complete(&id, "SUCCESS").await;
        assert_eq!(data(&done, "completeDelivery")["status"], "COMPLETED");
        expect_error(&w.claim(&id).await, "ALREADY_USED");
        expect_error(&w.complete(&id, "SUCCESS").await, "ALREADY_USED");
        let d = w.delivery(&id).await;
        assert_eq!(d["status"], "COMPLETED");
        assert_eq!(d["reason"], Value::Null);

        let log = audit_entries(&w.bridge, "alice").await;
        let claims = entries_with(&log, "delivery.claim");
        assert_eq!(
            claims.iter().filter(|e| e["outcome"] == "success").count(),
            1,
            "{log:?}"
        );
        assert!(claims.iter().any(|e| e["outcome"] == "failure"));
        assert!(
            claims
                .iter()
                .any(|e| e["actor"] == format!("companion:{}", w.companion).as_str())
        );
        assert_eq!(entries_with(&log, "delivery.create").len(), 1);
        assert_eq!(entries_with(&log, "delivery.complete").len(), 1);
        // The URL is never written to the audit log either.
        assert!(!serde_json::to_string(&log).unwrap().contains(&url));
    }
}

#[tokio::test]
async fn registration_requests_work_the_same_way() {
    for db in databases() {
        let w = world(db).await;
        let url = fido_url(&w.bridge, RequestType::MakeCredential);
        let resp = w.register(input(&url, "example.com", "r1")).await;
        let d = data(&resp, "requestRegistration");
        assert_eq!(d["kind"], "REGISTRATION", "{db:?}");
        let claim = w.claim(&id_of(d)).await;
        assert_eq!(data(&claim, "claimDelivery")["fidoUrl"], url.as_str());
    }
}

#[tokio::test]
async fn denials() {
    for db in databases() {
        let w = world(db).await;
        let declined = w.sign_in("d1").await;
        let not_me = w.sign_in("d2").await;
        let claimed = w.sign_in("d3").await;

        // Deny's reason defaults to DECLINED.
        let resp = w
            .bridge
            .gql(
                Some(&w.alice),
                "mutation($id: ID!) { denyDelivery(id: $id) { id status reason } }",
                json!({"id": declined}),
            )
            .await;
        let d = data(&resp, "denyDelivery");
        assert_eq!(d["status"], "DENIED", "{db:?}");
        assert_eq!(d["reason"], "DECLINED");

        let resp = w
            .bridge
            .gql(Some(&w.alice), DENY, json!({"id": not_me, "r": "NOT_ME"}))
            .await;
        let d = data(&resp, "denyDelivery");
        assert_eq!(d["status"], "DENIED");
        assert_eq!(d["reason"], "NOT_ME");

        // A claimed delivery can still be declined (the user changed their mind).
        data(&w.claim(&claimed).await, "claimDelivery");
        let resp = w
            .bridge
            .gql(
                Some(&w.alice),
                DENY,
                json!({"id": claimed, "r": "DECLINED"}),
            )
            .await;
        assert_eq!(data(&resp, "denyDelivery")["status"], "DENIED");

        for id in [&declined, &not_me, &claimed] {
            expect_error(&w.claim(id).await, "ALREADY_USED");
            let resp = w
                .bridge
                .gql(Some(&w.alice), DENY, json!({"id": id, "r": "DECLINED"}))
                .await;
            expect_error(&resp, "ALREADY_USED");
            expect_error(&w.complete(id, "SUCCESS").await, "ALREADY_USED");
            assert_eq!(stored_fido_url(&w.bridge, id).await, None, "{db:?}");
        }

        let log = audit_entries(&w.bridge, "alice").await;
        let flagged = entries_with(&log, "delivery.deny.not_me");
        assert_eq!(flagged.len(), 1, "{log:?}");
        assert_eq!(flagged[0]["outcome"], "flagged");
        let detail = flagged[0]["detail"].as_str().unwrap();
        assert!(detail.contains(&not_me), "{detail}");
        assert!(detail.contains(w.device.id.as_deref().unwrap()), "{detail}");
        let plain = entries_with(&log, "delivery.deny");
        assert_eq!(plain.len(), 2, "{log:?}");
        assert!(plain.iter().all(|e| e["outcome"] == "success"));
    }
}

#[tokio::test]
async fn a_delivery_expires_exactly_300_seconds_after_creation() {
    for db in databases() {
        let w = world(db).await;
        // Create off a whole second to see millisecond precision.
        w.bridge.clock.advance_ms(12_345);
        let created_ms = T0_MS + 12_345;
        let ids = [
            w.sign_in("e1").await,
            w.sign_in("e2").await,
            w.sign_in("e3").await,
        ];
        let d = w.delivery(&ids[0]).await;
        assert_eq!(d["createdAt"], bridge::id::rfc3339(created_ms), "{db:?}");
        assert_eq!(
            d["expiresAt"],
            bridge::id::rfc3339(created_ms + LIFETIME_MS)
        );
        let mut sub = w
            .bridge
            .subscribe(
                Some(&w.device.token(&w.bridge)),
                DELIVERY_STATUS,
                json!({"id": ids[2]}),
            )
            .await;
        sub.next().await;

        // One millisecond before: still claimable.
        w.bridge.clock.advance_ms(LIFETIME_MS - 1);
        let claim = w.claim(&ids[0]).await;
        assert_eq!(
            data(&claim, "claimDelivery")["delivery"]["status"],
            "CLAIMED"
        );
        // The claim changes status, never the deadline.
        let d = w.delivery(&ids[0]).await;
        assert_eq!(
            d["expiresAt"],
            bridge::id::rfc3339(created_ms + LIFETIME_MS)
        );

        // At 300 s: expired, even before the sweeper ran.
        w.bridge.clock.advance_ms(1);
        expect_error(&w.claim(&ids[1]).await, "EXPIRED");
        let resp = w
            .bridge
            .gql(Some(&w.alice), DENY, json!({"id": ids[1], "r": "DECLINED"}))
            .await;
        expect_error(&resp, "EXPIRED");
        expect_error(&w.complete(&ids[0], "SUCCESS").await, "EXPIRED");
        assert!(w.pending_ids().await.is_empty(), "{db:?}");

        w.bridge.sweep_now().await;
        for id in &ids {
            let d = w.delivery(id).await;
            assert_eq!(d["status"], "EXPIRED", "{db:?} {id}");
            assert_eq!(
                d["expiresAt"],
                bridge::id::rfc3339(created_ms + LIFETIME_MS)
            );
            assert_eq!(stored_fido_url(&w.bridge, id).await, None, "{db:?}");
            // No way to get the URL any more.
            expect_error(&w.claim(id).await, "EXPIRED");
            let as_install = w
                .bridge
                .gql(
                    Some(&w.alice),
                    CLAIM_AS,
                    json!({"id": id, "c": w.companion}),
                )
                .await;
            expect_error(&as_install, "EXPIRED");
        }
        // The device watching the third sees it expire, then the stream ends.
        let mut last = sub.next().await;
        while last["data"]["deliveryStatus"]["status"] != "EXPIRED" {
            assert!(last["data"]["deliveryStatus"].is_object(), "{last}");
            last = sub.next().await;
        }
        assert_eq!(last["data"]["deliveryStatus"]["reason"], "EXPIRED");
        assert_eq!(sub.next().await["type"], "complete");

        // Each expiry is audited exactly once, even with the background sweeper running too.
        let log = audit_entries(&w.bridge, "alice").await;
        let expired = entries_with(&log, "delivery.expire");
        assert_eq!(expired.len(), ids.len(), "{db:?}: {log:?}");
        for id in &ids {
            assert!(
                expired
                    .iter()
                    .any(|e| e["detail"].as_str().unwrap().contains(id.as_str())),
                "{id} not audited: {log:?}"
            );
        }
        assert!(
            expired
                .iter()
                .all(|e| e["outcome"] == "expired" && e["actor"] == "system")
        );
    }
}

#[tokio::test]
async fn the_envelope_lives_exactly_as_long_as_the_delivery() {
    for db in databases() {
        let w = world(db).await;
        let resp = w.request(sign_in_input(&w.bridge, "env")).await;
        let d = data(&resp, "requestSignIn");
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&w.bridge.get("/.well-known/jwks.json").await.1).unwrap();
        let claims = bridge::signing::verify_envelope(
            d["envelope"].as_str().unwrap(),
            &jwks,
            PUBLIC_URL,
            "tether-companion",
            w.bridge.now_secs(),
            0,
        )
        .unwrap();
        assert_eq!(claims.iat * 1000, T0_MS, "{db:?}");
        assert_eq!(claims.exp * 1000, T0_MS + LIFETIME_MS);
        assert_eq!(d["expiresAt"], bridge::id::rfc3339(claims.exp * 1000));
    }
}

#[tokio::test]
async fn no_active_companion_fails_at_once_and_stores_nothing() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let (device, _) = pair(&bridge, "carol").await;
        let resp = bridge
            .gql(
                Some(&device.token(&bridge)),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "k"),
            )
            .await;
        expect_error(&resp, "NO_ACTIVE_COMPANION");
        let carol = bridge.companion_token("carol");
        let resp = bridge.gql(Some(&carol), PENDING, json!({})).await;
        assert!(
            data(&resp, "pendingDeliveries")
                .as_array()
                .unwrap()
                .is_empty(),
            "{db:?}"
        );
        assert_eq!(count_rows(&bridge, "deliveries").await, 0);
        assert_eq!(count_rows(&bridge, "outbox").await, 0);
        let log = audit_entries(&bridge, "carol").await;
        let created = entries_with(&log, "delivery.create");
        assert_eq!(created.len(), 1, "{log:?}");
        assert_eq!(created[0]["outcome"], "failure");
        assert_eq!(created[0]["detail"], "NO_ACTIVE_COMPANION");

        // With an install the same key then works (the failure did not take it).
        register_companion(&bridge, "carol", "carol-push").await;
        let resp = bridge
            .gql(
                Some(&device.token(&bridge)),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "k"),
            )
            .await;
        data(&resp, "requestSignIn");
    }
}

#[tokio::test]
async fn one_outbox_row_per_active_install() {
    for db in databases() {
        let w = world(db).await;
        register_companion(&w.bridge, "alice", "second-phone").await;
        register_companion(&w.bridge, "bob", "bobs-phone").await;
        w.sign_in("fanout").await;
        assert_eq!(count_rows(&w.bridge, "outbox").await, 2, "{db:?}");
    }
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_delivery() {
    for db in databases() {
        let w = world(db).await;
        let first = w.sign_in("retry-key").await;
        let deliveries = count_rows(&w.bridge, "deliveries").await;
        let outbox = count_rows(&w.bridge, "outbox").await;
        let audit = count_rows(&w.bridge, "audit_log").await;

        // A retry (with a fresh URL, as a device would make after a timeout) is the same
        // delivery.
        let again = w.sign_in("retry-key").await;
        assert_eq!(again, first, "{db:?}");
        assert_eq!(count_rows(&w.bridge, "deliveries").await, deliveries);
        assert_eq!(count_rows(&w.bridge, "outbox").await, outbox);
        assert_eq!(count_rows(&w.bridge, "audit_log").await, audit);

        // The same key for a different request is refused.
        let other_rp = w
            .request(input(
                &fido_url(&w.bridge, RequestType::GetAssertion),
                "other.example",
                "retry-key",
            ))
            .await;
        expect_error(&other_rp, "INVALID_INPUT");
        let other_kind = w
            .register(input(
                &fido_url(&w.bridge, RequestType::MakeCredential),
                "example.com",
                "retry-key",
            ))
            .await;
        expect_error(&other_kind, "INVALID_INPUT");
        assert_eq!(count_rows(&w.bridge, "deliveries").await, deliveries);
        // Retries do not count against the rate limit: four more new requests fit.
        for n in 0..4 {
            w.sign_in(&format!("n{n}")).await;
        }
    }
}

#[tokio::test]
async fn request_type_and_timestamp_must_fit() {
    for db in databases() {
        let w = world(db).await;
        let now = w.bridge.now_secs();
        let cases = [
            (
                "an mc URL to requestSignIn",
                true,
                fido_url(&w.bridge, RequestType::MakeCredential),
            ),
            (
                "a ga URL to requestRegistration",
                false,
                fido_url(&w.bridge, RequestType::GetAssertion),
            ),
            (
                "made ten minutes ago",
                true,
                fido_url_at(now - 600, RequestType::GetAssertion),
            ),
            (
                "made 121 s ago",
                true,
                fido_url_at(now - 121, RequestType::GetAssertion),
            ),
            (
                "made ten minutes in the future",
                true,
                fido_url_at(now + 600, RequestType::GetAssertion),
            ),
            (
                "made in 1970",
                true,
                fido_url_at(1, RequestType::GetAssertion),
            ),
        ];
        for (what, sign_in, url) in cases {
            let resp = if sign_in {
                w.request(input(&url, "example.com", what)).await
            } else {
                w.register(input(&url, "example.com", what)).await
            };
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "INVALID_INPUT",
                "{db:?} {what}: {resp}"
            );
            expect_error(&resp, "INVALID_INPUT");
        }
        // A URL made before the clock moved ten minutes on is stale too.
        let url = fido_url(&w.bridge, RequestType::GetAssertion);
        w.bridge.clock.advance_ms(600_000);
        let resp = w.request(input(&url, "example.com", "stale")).await;
        expect_error(&resp, "INVALID_INPUT");
        // Within the allowed age it is fine.
        let resp = w
            .request(input(
                &fido_url_at(w.bridge.now_secs() - 119, RequestType::GetAssertion),
                "example.com",
                "fresh",
            ))
            .await;
        data(&resp, "requestSignIn");
        assert_eq!(count_rows(&w.bridge, "deliveries").await, 1, "{db:?}");
    }
}

#[tokio::test]
async fn every_invalid_fido_url_of_the_vectors_is_refused() {
    let vectors: Value =
        serde_json::from_str(include_str!("../../hybrid/testdata/hybrid.json")).unwrap();
    let invalid: Vec<(String, String)> = vectors["fido_urls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            v["error"]
                .as_str()
                .map(|e| (v["url"].as_str().unwrap().to_owned(), e.to_owned()))
        })
        .collect();
    assert!(invalid.len() >= 10, "{invalid:?}");
    for db in databases() {
        let w = world(db).await;
        for (url, error) in &invalid {
            for sign_in in [true, false] {
                let resp = if sign_in {
                    w.request(input(url, "example.com", "vector")).await
                } else {
                    w.register(input(url, "example.com", "vector")).await
                };
                let e = expect_error(&resp, "INVALID_INPUT");
                assert!(
                    e["message"].as_str().unwrap().contains(error.as_str()),
                    "{db:?}: message should name {error}: {resp}"
                );
            }
        }
        // Not a FIDO URL at all, and one far too long.
        let long = format!("FIDO:/{}", "1".repeat(20_000));
        for url in ["", "https://example.com", "FIDO:/abc", long.as_str()] {
            let resp = w.request(input(url, "example.com", "junk")).await;
            expect_error(&resp, "INVALID_INPUT");
        }
        assert_eq!(count_rows(&w.bridge, "deliveries").await, 0, "{db:?}");
    }
}

#[tokio::test]
async fn oversized_and_malformed_fields_are_invalid_input() {
    for db in databases() {
        let w = world(db).await;
        let url = || fido_url(&w.bridge, RequestType::GetAssertion);
        let long_rp = format!("{}.com", "a".repeat(296));
        let long_label = format!("{}.example.com", "a".repeat(64));
        let cases = [
            ("rpId of 300 characters", input(&url(), &long_rp, "k1")),
            ("label over 63", input(&url(), &long_label, "k1")),
            ("empty rpId", input(&url(), "", "k1")),
            (
                "rpId with a scheme",
                input(&url(), "https://example.com", "k1"),
            ),
            ("rpId with a space", input(&url(), "exa mple.com", "k1")),
            ("rpId with a path", input(&url(), "example.com/x", "k1")),
            (
                "idempotencyKey of 1000",
                input(&url(), "example.com", &"k".repeat(1000)),
            ),
            ("empty idempotencyKey", input(&url(), "example.com", "")),
            (
                "control character in the key",
                input(&url(), "example.com", "k\u{1}"),
            ),
            (
                "origin of 10000",
                json!({"i": {"fidoUrl": url(), "rpId": "example.com", "idempotencyKey": "k2", "context": {"origin": "o".repeat(10_000)}}}),
            ),
            (
                "userName of 10000",
                json!({"i": {"fidoUrl": url(), "rpId": "example.com", "idempotencyKey": "k3", "context": {"userName": "u".repeat(10_000)}}}),
            ),
            (
                "empty origin",
                json!({"i": {"fidoUrl": url(), "rpId": "example.com", "idempotencyKey": "k4", "context": {"origin": ""}}}),
            ),
            (
                "rpId of the wrong type",
                json!({"i": {"fidoUrl": url(), "rpId": 42, "idempotencyKey": "k5"}}),
            ),
            (
                "missing fidoUrl",
                json!({"i": {"rpId": "example.com", "idempotencyKey": "k6"}}),
            ),
        ];
        for (what, input) in cases {
            let resp = w.request(input).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "INVALID_INPUT",
                "{db:?} {what}: {resp}"
            );
            expect_error(&resp, "INVALID_INPUT");
        }
        assert_eq!(count_rows(&w.bridge, "deliveries").await, 0, "{db:?}");
        assert_eq!(count_rows(&w.bridge, "outbox").await, 0, "{db:?}");
        // None of these counted against the rate limit.
        for n in 0..5 {
            w.sign_in(&format!("ok{n}")).await;
        }
    }
}

#[tokio::test]
async fn requests_are_rate_limited_per_device() {
    for db in databases() {
        let w = world(db).await;
        assert_eq!(
            w.bridge
                .state
                .config
                .limits
                .deliveries_per_device_per_minute,
            5,
            "the documented default"
        );
        for n in 0..5 {
            w.sign_in(&format!("r{n}")).await;
        }
        let resp = w.request(sign_in_input(&w.bridge, "r5")).await;
        let wait = retry_after(&resp);
        assert!((1..=60).contains(&wait), "{resp}");
        assert_eq!(count_rows(&w.bridge, "deliveries").await, 5, "{db:?}");
        let log = audit_entries(&w.bridge, "alice").await;
        let hits = entries_with(&log, "ratelimit.delivery");
        assert_eq!(hits.len(), 1, "{log:?}");
        assert_eq!(hits[0]["outcome"], "denied");

        // Another device of the account is not limited by this one.
        let (other, _) = pair(&w.bridge, "alice").await;
        let resp = w
            .bridge
            .gql(
                Some(&other.token(&w.bridge)),
                REQUEST_SIGN_IN,
                sign_in_input(&w.bridge, "o1"),
            )
            .await;
        data(&resp, "requestSignIn");

        // A minute later the device may ask again.
        w.bridge.clock.advance_ms(60_000);
        w.sign_in("r6").await;
    }
}

#[tokio::test]
async fn requests_are_rate_limited_per_account() {
    for db in databases() {
        let bridge = TestBridge::start_with(db, |c| {
            c.limits.deliveries_per_account_per_minute = 3;
        })
        .await;
        register_companion(&bridge, "alice", "alice-push").await;
        let (a, _) = pair(&bridge, "alice").await;
        let (b, _) = pair(&bridge, "alice").await;
        request_sign_in(&bridge, &a, "a1").await;
        request_sign_in(&bridge, &a, "a2").await;
        request_sign_in(&bridge, &b, "b1").await;
        let resp = bridge
            .gql(
                Some(&b.token(&bridge)),
                REQUEST_SIGN_IN,
                sign_in_input(&bridge, "b2"),
            )
            .await;
        let wait = retry_after(&resp);
        assert!((1..=60).contains(&wait), "{db:?} {resp}");
        // Other accounts are not affected.
        register_companion(&bridge, "bob", "bob-push").await;
        let (c, _) = pair(&bridge, "bob").await;
        request_sign_in(&bridge, &c, "c1").await;
    }
}

#[tokio::test]
async fn success_needs_a_claim_and_failures_carry_their_reason() {
    for db in databases() {
        let w = world(db).await;
        let early = w.sign_in("early").await;
        let resp = w.complete(&early, "SUCCESS").await;
        expect_error(&resp, "INVALID_INPUT");
        let d = w.delivery(&early).await;
        assert!(
            ["QUEUED", "SENT"].contains(&d["status"].as_str().unwrap()),
            "{d}"
        );
        assert!(stored_fido_url(&w.bridge, &early).await.is_some());

        for outcome in [
            "CANCELLED",
            "PHONE_NOT_FOUND",
            "TUNNEL_FAILED",
            "AUTHENTICATOR_ERROR",
        ] {
            let id = w.sign_in(outcome).await;
            if outcome == "TUNNEL_FAILED" {
                // After a claim, too.
                data(&w.claim(&id).await, "claimDelivery");
            }
            let resp = w.complete(&id, outcome).await;
            let d = data(&resp, "completeDelivery");
            assert_eq!(d["status"], "FAILED", "{db:?} {outcome}");
            assert_eq!(d["reason"], outcome);
            expect_error(&w.claim(&id).await, "ALREADY_USED");
            assert_eq!(stored_fido_url(&w.bridge, &id).await, None);
            let resp = w.complete(&id, "SUCCESS").await;
            expect_error(&resp, "ALREADY_USED");
        }
        let resp = w.complete(&early, "BOGUS").await;
        expect_error(&resp, "INVALID_INPUT");
        let log = audit_entries(&w.bridge, "alice").await;
        let completions = entries_with(&log, "delivery.complete");
        assert_eq!(completions.len(), 4, "{log:?}");
        assert!(completions.iter().all(|e| e["outcome"] == "failure"));
    }
}

/// Reads statuses from a subscription until `last` (inclusive), then expects the end.
async fn statuses_until(sub: &mut Subscription, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let msg = sub.next().await;
        let status = msg["data"]["deliveryStatus"]["status"]
            .as_str()
            .unwrap_or_else(|| panic!("{msg}"))
            .to_owned();
        seen.push(status.clone());
        if status == last {
            break;
        }
    }
    assert_eq!(sub.next().await["type"], "complete", "{seen:?}");
    seen
}

fn in_order(seen: &[String], order: &[&str]) -> bool {
    let ranks: Vec<Option<usize>> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s))
        .collect();
    ranks.iter().all(Option::is_some) && ranks.windows(2).all(|w| w[0] < w[1])
}

#[tokio::test]
async fn device_and_companion_see_each_status_by_subscription() {
    for db in databases() {
        let w = world(db).await;

        // Approved: both sides watch.
        let id = w.sign_in("s1").await;
        let mut device_sub = w
            .bridge
            .subscribe(
                Some(&w.device.token(&w.bridge)),
                DELIVERY_STATUS,
                json!({"id": id}),
            )
            .await;
        let mut phone_sub = w
            .bridge
            .subscribe(Some(&w.alice), DELIVERY_STATUS, json!({"id": id}))
            .await;
        for sub in [&mut device_sub, &mut phone_sub] {
            let first = sub.next().await;
            assert!(
                ["QUEUED", "SENT"]
                    .contains(&first["data"]["deliveryStatus"]["status"].as_str().unwrap()),
                "{first}"
            );
        }
        data(&w.claim(&id).await, "claimDelivery");
        data(&w.complete(&id, "SUCCESS").await, "completeDelivery");
        for sub in [&mut device_sub, &mut phone_sub] {
            let seen = statuses_until(sub, "COMPLETED").await;
            assert!(
                in_order(&seen, &["SENT", "CLAIMED", "COMPLETED"]),
                "{db:?} {seen:?}"
            );
            assert!(seen.contains(&"CLAIMED".to_owned()), "{seen:?}");
        }

        // Denied.
        let id = w.sign_in("s2").await;
        let mut sub = w
            .bridge
            .subscribe(
                Some(&w.device.token(&w.bridge)),
                DELIVERY_STATUS,
                json!({"id": id}),
            )
            .await;
        sub.next().await;
        let resp = w
            .bridge
            .gql(Some(&w.alice), DENY, json!({"id": id, "r": "NOT_ME"}))
            .await;
        data(&resp, "denyDelivery");
        let seen = statuses_until(&mut sub, "DENIED").await;
        assert!(in_order(&seen, &["SENT", "DENIED"]), "{seen:?}");

        // Failed.
        let id = w.sign_in("s3").await;
        let mut sub = w
            .bridge
            .subscribe(Some(&w.alice), DELIVERY_STATUS, json!({"id": id}))
            .await;
        sub.next().await;
        data(
            &w.complete(&id, "PHONE_NOT_FOUND").await,
            "completeDelivery",
        );
        let seen = statuses_until(&mut sub, "FAILED").await;
        assert!(in_order(&seen, &["SENT", "FAILED"]), "{seen:?}");

        // A finished delivery: one final state, then the end.
        let mut sub = w
            .bridge
            .subscribe(Some(&w.alice), DELIVERY_STATUS, json!({"id": id}))
            .await;
        let only = sub.next().await;
        assert_eq!(only["data"]["deliveryStatus"]["status"], "FAILED");
        assert_eq!(only["data"]["deliveryStatus"]["reason"], "PHONE_NOT_FOUND");
        assert_eq!(sub.next().await["type"], "complete");
    }
}

#[tokio::test]
async fn the_push_sink_moves_deliveries_to_sent() {
    for db in databases() {
        let w = world(db).await;
        let id = w.sign_in("p1").await;
        let alice = w.alice.clone();
        wait_until(
            &w.bridge,
            || alice.clone(),
            DELIVERY,
            json!({"id": id}),
            |r| r["data"]["delivery"]["status"] == "SENT",
        )
        .await;
        assert_eq!(w.pending_ids().await, vec![id.clone()], "{db:?}");
        data(&w.claim(&id).await, "claimDelivery");
    }
}

#[tokio::test]
async fn concurrent_sweeps_expire_each_delivery_once() {
    for db in databases() {
        let w = world(db).await;
        let mut created = 0;
        let mut failures = Vec::new();
        // A few rounds make the race all but certain to show where it exists.
        for round in 0..5 {
            w.sign_in(&format!("c{round}a")).await;
            w.sign_in(&format!("c{round}b")).await;
            created += 2;
            w.bridge.clock.advance_ms(LIFETIME_MS);
            // Two bridge instances sweeping the same database at the same moment.
            let state = &w.bridge.state;
            let (a, b) = tokio::join!(bridge::worker::sweep(state), bridge::worker::sweep(state));
            for r in [a, b] {
                if let Err(e) = r {
                    failures.push(e.to_string());
                }
            }
        }
        // Whatever failed above, a final sweep finishes the job.
        w.bridge.sweep_now().await;
        assert!(
            failures.is_empty(),
            "{db:?}: concurrent sweeps failed: {failures:?}"
        );
        let log = audit_entries(&w.bridge, "alice").await;
        let expired = entries_with(&log, "delivery.expire");
        assert_eq!(
            expired.len(),
            created,
            "{db:?}: each expiry audited once: {expired:?}"
        );
    }
}
