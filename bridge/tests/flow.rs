//! The whole bridge flow over HTTP and WebSocket, on SQLite and PostgreSQL: pairing, a sign-in
//! request, envelope verification against the JWKS, claim, completion, and the device watching
//! each status by subscription.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bridge::signing::verify_envelope;
use serde_json::json;
use support::*;

#[tokio::test]
async fn sign_in_flow_on_every_database() {
    for db in databases() {
        sign_in_flow(db).await;
    }
}

async fn sign_in_flow(db: Db) {
    let bridge = TestBridge::start(db).await;
    let companion_id = register_companion(&bridge, "alice", "apns-token-1").await;
    let device = paired_device(&bridge, "alice").await;
    let alice = bridge.companion_token("alice");

    // The device requests a sign-in.
    let resp = bridge
        .gql(
            Some(&device.token(&bridge)),
            REQUEST_SIGN_IN,
            sign_in_input(&bridge, "k1"),
        )
        .await;
    let d = data(&resp, "requestSignIn").clone();
    let id = d["id"].as_str().unwrap().to_owned();
    assert_eq!(d["kind"], "SIGN_IN", "{db:?}");
    assert_eq!(d["deviceName"], "Living room");
    assert_eq!(d["deviceModel"], "Quest 3");
    assert_eq!(d["numberCode"].as_str().unwrap().len(), 2);

    // It watches the status.
    let mut sub = bridge
        .subscribe(
            Some(&device.token(&bridge)),
            "subscription($id: ID!) { deliveryStatus(id: $id) { status reason } }",
            json!({"id": id}),
        )
        .await;
    let mut seen = vec![];
    let first = sub.next().await;
    seen.push(
        first["data"]["deliveryStatus"]["status"]
            .as_str()
            .unwrap()
            .to_owned(),
    );

    // The companion finds it (pull fallback) and verifies the envelope against the JWKS.
    let pending = bridge
        .gql(
            Some(&alice),
            "{ pendingDeliveries { id envelope numberCode rpId } }",
            json!({}),
        )
        .await;
    let list = data(&pending, "pendingDeliveries")
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 1, "{pending}");
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(bridge.url("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = verify_envelope(
        list[0]["envelope"].as_str().unwrap(),
        &jwks,
        PUBLIC_URL,
        "tether-companion",
        bridge.now_secs(),
        0,
    )
    .unwrap();
    assert_eq!(claims.delivery_id, id);
    assert_eq!(claims.device_name, "Living room");
    assert_eq!(claims.rp_id, "example.com");
    assert_eq!(claims.request_type, "ga");
    assert_eq!(claims.number_code, list[0]["numberCode"].as_str().unwrap());
    assert_eq!(claims.exp - claims.iat, 300);
    assert!(!list[0]["envelope"].as_str().unwrap().contains("FIDO"));

    // Claim once.
    let claim = bridge.gql(Some(&alice), "mutation($id: ID!, $c: ID) { claimDelivery(id: $id, companionId: $c) { fidoUrl delivery { status } } }", json!({"id": id, "c": companion_id})).await;
    let url = data(&claim, "claimDelivery")["fidoUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.starts_with("FIDO:/"));
    hybrid::url::FidoUrl::parse(&url).unwrap();
    let again = bridge.gql(Some(&alice), CLAIM, json!({"id": id})).await;
    assert_eq!(error_code(&again), "ALREADY_USED", "{again}");

    // The device completes.
    let done = bridge
        .gql(
            Some(&device.token(&bridge)),
            COMPLETE,
            json!({"id": id, "o": "SUCCESS"}),
        )
        .await;
    assert_eq!(data(&done, "completeDelivery")["status"], "COMPLETED");

    while seen.last().map(String::as_str) != Some("COMPLETED") {
        let next = sub.next().await;
        let status = next["data"]["deliveryStatus"]["status"]
            .as_str()
            .unwrap_or_else(|| panic!("{next}"))
            .to_owned();
        seen.push(status);
    }
    // Statuses only move forward; SENT may be skipped if the claim beat the push sink.
    let order = ["QUEUED", "SENT", "CLAIMED", "COMPLETED"];
    let ranks: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen.contains(&"CLAIMED".to_owned()), "{seen:?}");
    assert_eq!(sub.next().await["type"], "complete");

    // The audit log tells the story.
    let log = bridge
        .gql(
            Some(&alice),
            "{ auditLog(first: 50) { entries { event outcome } } }",
            json!({}),
        )
        .await;
    let events: Vec<String> = data(&log, "auditLog")["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    for want in [
        "companion.register",
        "pairing.confirm",
        "delivery.create",
        "delivery.claim",
        "delivery.complete",
    ] {
        assert!(
            events.iter().any(|e| e == want),
            "{want} missing from {events:?}"
        );
    }
}
