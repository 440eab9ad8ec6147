//! Account isolation and caller kinds, over HTTP and WebSocket, on every database.
//!
//! * The walk: every query, mutation and subscription of the schema (read from
//!   `bridge::graphql::sdl()`) is called with a second account's credentials against the first
//!   account's objects. Each must answer `NOT_FOUND` (never `FORBIDDEN`, never data), and the
//!   first account's view is unchanged afterwards. An operation without a case fails the walk.
//! * Caller kinds: device tokens on companion operations and companion tokens on device
//!   operations are `FORBIDDEN`; missing and garbage tokens are `UNAUTHENTICATED`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::*;

/// `Query.x`, `Mutation.y`, `Subscription.z` for every root field of the served schema.
fn schema_operations() -> BTreeSet<String> {
    let sdl = bridge::graphql::sdl();
    let mut ops = BTreeSet::new();
    for root in ["Query", "Mutation", "Subscription"] {
        let header = format!("type {root} {{");
        let mut lines = sdl.lines().skip_while(|l| l.trim() != header).skip(1);
        let mut in_doc = false;
        for line in lines.by_ref() {
            let t = line.trim();
            if t == "}" && !in_doc {
                break;
            }
            if let Some(rest) = t.strip_prefix("\"\"\"") {
                // A one-line description opens and closes on the same line.
                if !(rest.len() >= 3 && rest.ends_with("\"\"\"")) {
                    in_doc = !in_doc;
                }
                continue;
            }
            if in_doc || t.is_empty() {
                continue;
            }
            let name: String = t
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(!name.is_empty(), "cannot read a field from {t:?}");
            ops.insert(format!("{root}.{name}"));
        }
    }
    assert!(
        ops.len() >= 20,
        "the SDL parser found too few operations: {ops:?}"
    );
    ops
}

/// Records which operations the walk exercised.
struct Walk {
    expected: BTreeSet<String>,
    covered: BTreeSet<String>,
}

impl Walk {
    fn new() -> Self {
        Self {
            expected: schema_operations(),
            covered: BTreeSet::new(),
        }
    }

    fn case(&mut self, op: &str) {
        assert!(
            self.expected.contains(op),
            "the walk has a case for {op}, which the schema does not have"
        );
        self.covered.insert(op.to_owned());
    }

    fn finish(&self) {
        let missing: Vec<&String> = self.expected.difference(&self.covered).collect();
        assert!(
            missing.is_empty(),
            "operations without an isolation case (add one to the walk): {missing:?}"
        );
    }
}

#[test]
fn the_sdl_parser_finds_every_root_field() {
    let ops = schema_operations();
    for op in [
        "Query.account",
        "Query.auditLog",
        "Mutation.registerCompanion",
        "Mutation.completeDelivery",
        "Subscription.deliveryStatus",
        "Subscription.pairingStatus",
    ] {
        assert!(ops.contains(op), "{op} missing from {ops:?}");
    }
    assert!(!ops.iter().any(|o| o.contains("__")), "{ops:?}");
}

/// What the first account (alice) sees: re-read after the walk, it must be identical.
async fn alice_view(
    bridge: &TestBridge,
    a: &AliceObjects,
    device: &TestDevice,
    pending: &TestDevice,
) -> Value {
    let alice = bridge.companion_token("alice");
    let mut view = serde_json::Map::new();
    for (name, query, vars) in [
        ("account", ACCOUNT, json!({})),
        ("companions", COMPANIONS, json!({})),
        ("devices", DEVICES, json!({})),
        ("device", DEVICE, json!({"id": a.device})),
        ("pending", PENDING, json!({})),
        ("delivery1", DELIVERY, json!({"id": a.sign_in})),
        ("delivery2", DELIVERY, json!({"id": a.registration})),
        ("audit", AUDIT, json!({"n": 100, "a": null})),
    ] {
        let resp = bridge.gql(Some(&alice), query, vars).await;
        assert!(resp["errors"].is_null(), "{name}: {resp}");
        view.insert(name.to_owned(), resp["data"].clone());
    }
    let resp = bridge
        .gql(
            Some(&device.token(bridge)),
            PAIRING,
            json!({"id": a.pairing}),
        )
        .await;
    view.insert("pairing".into(), data(&resp, "pairing").clone());
    let resp = bridge
        .gql(
            Some(&pending.token(bridge)),
            PAIRING,
            json!({"id": a.pending_pairing}),
        )
        .await;
    view.insert("pending_pairing".into(), data(&resp, "pairing").clone());
    Value::Object(view)
}

struct AliceObjects {
    account: String,
    companion: String,
    device: String,
    pairing: String,
    code: String,
    pending_device: String,
    pending_pairing: String,
    sign_in: String,
    registration: String,
    audit_ids: BTreeSet<String>,
}

/// Subscribes and returns the first message's payload (an error payload for refused ones).
const INCOMING: &str = "subscription { incomingDeliveries { id status } }";

async fn subscribe_first(bridge: &TestBridge, token: Option<&str>, query: &str, id: &str) -> Value {
    let mut sub = bridge.subscribe(token, query, json!({"id": id})).await;
    let first = sub.next().await;
    if first["errors"].is_array() {
        // A refused subscription ends right after its error.
        assert_eq!(sub.next().await["type"], "complete", "{first}");
    }
    first
}

#[tokio::test]
async fn second_account_sees_nothing_of_the_first_on_every_database() {
    for db in databases() {
        second_account_sees_nothing_of_the_first(db).await;
    }
}

#[allow(clippy::too_many_lines)]
async fn second_account_sees_nothing_of_the_first(db: Db) {
    let bridge = TestBridge::start(db).await;
    let alice = bridge.companion_token("alice");
    let bob = bridge.companion_token("bob");

    // Alice: a companion, a paired device with two deliveries, a device still pairing.
    let alice_companion = register_companion(&bridge, "alice", "alice-push-1").await;
    let (alice_device, alice_pairing) = pair(&bridge, "alice").await;
    let mut alice_pending = TestDevice::new();
    let pending_pairing = start_pairing(&bridge, &mut alice_pending).await;
    let sign_in = request_sign_in(&bridge, &alice_device, "shared-key").await;
    let resp = bridge
        .gql(
            Some(&alice_device.token(&bridge)),
            REQUEST_REGISTRATION,
            json!({"i": {
                "fidoUrl": fido_url(&bridge, hybrid::url::RequestType::MakeCredential),
                "rpId": "example.com",
                "idempotencyKey": "shared-reg-key",
            }}),
        )
        .await;
    let registration = data(&resp, "requestRegistration").clone();
    let alice_account = data(
        &bridge.gql(Some(&alice), ACCOUNT, json!({})).await,
        "account",
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Bob: a companion, a paired device and one delivery of his own.
    let bob_companion = register_companion(&bridge, "bob", "bob-push-1").await;
    let (bob_device, bob_pairing) = pair(&bridge, "bob").await;
    let bob_delivery = id_of(&request_sign_in(&bridge, &bob_device, "bob-key").await);

    // Let the push sink settle every delivery (QUEUED -> SENT) so the views are stable.
    for id in [id_of(&sign_in), id_of(&registration), bob_delivery.clone()] {
        wait_until(
            &bridge,
            || bridge.companion_token(if id == bob_delivery { "bob" } else { "alice" }),
            DELIVERY,
            json!({"id": id}),
            |r| r["data"]["delivery"]["status"] == "SENT",
        )
        .await;
    }

    let audit_ids: BTreeSet<String> = audit_entries(&bridge, "alice")
        .await
        .iter()
        .map(id_of)
        .collect();
    let a = AliceObjects {
        account: alice_account,
        companion: alice_companion,
        device: alice_device.id.clone().unwrap(),
        pairing: alice_pairing.pairing_id.clone(),
        code: alice_pairing.code.clone(),
        pending_device: pending_pairing.device_id.clone(),
        pending_pairing: pending_pairing.pairing_id.clone(),
        sign_in: id_of(&sign_in),
        registration: id_of(&registration),
        audit_ids,
    };
    let before = alice_view(&bridge, &a, &alice_device, &alice_pending).await;
    let alice_ids = [
        &a.account,
        &a.companion,
        &a.device,
        &a.pairing,
        &a.pending_device,
        &a.pending_pairing,
        &a.sign_in,
        &a.registration,
    ];
    let bob_dev = || bob_device.token(&bridge);
    let mut walk = Walk::new();

    // ---- Queries ----
    walk.case("Query.account");
    let resp = bridge.gql(Some(&bob), ACCOUNT, json!({})).await;
    assert_ne!(data(&resp, "account")["id"], a.account.as_str(), "{db:?}");

    walk.case("Query.companions");
    let resp = bridge.gql(Some(&bob), COMPANIONS, json!({})).await;
    let list = data(&resp, "companions").to_string();
    assert!(list.contains(&bob_companion), "{resp}");
    assert!(!list.contains(&a.companion), "{resp}");

    walk.case("Query.devices");
    let resp = bridge.gql(Some(&bob), DEVICES, json!({})).await;
    let list = data(&resp, "devices").to_string();
    assert!(list.contains(bob_device.id.as_deref().unwrap()), "{resp}");
    for id in [&a.device, &a.pending_device] {
        assert!(!list.contains(id.as_str()), "{resp}");
    }

    walk.case("Query.device");
    for id in [&a.device, &a.pending_device] {
        let resp = bridge.gql(Some(&bob), DEVICE, json!({"id": id})).await;
        expect_error(&resp, "NOT_FOUND");
    }
    let own = bridge
        .gql(Some(&bob), DEVICE, json!({"id": bob_device.id}))
        .await;
    data(&own, "device");

    walk.case("Query.pendingDeliveries");
    let resp = bridge.gql(Some(&bob), PENDING, json!({})).await;
    let list = data(&resp, "pendingDeliveries").to_string();
    assert!(list.contains(&bob_delivery), "{resp}");
    assert!(!list.contains(&a.sign_in) && !list.contains(&a.registration));

    walk.case("Query.delivery");
    for id in [&a.sign_in, &a.registration] {
        expect_error(
            &bridge.gql(Some(&bob), DELIVERY, json!({"id": id})).await,
            "NOT_FOUND",
        );
        expect_error(
            &bridge
                .gql(Some(&bob_dev()), DELIVERY, json!({"id": id}))
                .await,
            "NOT_FOUND",
        );
    }
    data(
        &bridge
            .gql(Some(&bob_dev()), DELIVERY, json!({"id": bob_delivery}))
            .await,
        "delivery",
    );

    walk.case("Query.pairing");
    for id in [&a.pairing, &a.pending_pairing] {
        expect_error(
            &bridge
                .gql(Some(&bob_dev()), PAIRING, json!({"id": id}))
                .await,
            "NOT_FOUND",
        );
    }
    data(
        &bridge
            .gql(
                Some(&bob_dev()),
                PAIRING,
                json!({"id": bob_pairing.pairing_id}),
            )
            .await,
        "pairing",
    );

    walk.case("Query.auditLog");
    let resp = bridge
        .gql(Some(&bob), AUDIT, json!({"n": 100, "a": null}))
        .await;
    let bob_log = data(&resp, "auditLog");
    assert!(!bob_log["entries"].as_array().unwrap().is_empty(), "{resp}");
    for e in bob_log["entries"].as_array().unwrap() {
        assert!(!a.audit_ids.contains(&id_of(e)), "alice's entry {e}");
        let text = e.to_string();
        for id in alice_ids {
            assert!(
                !text.contains(id.as_str()),
                "alice's {id} in bob's log: {e}"
            );
        }
    }
    // A cursor past alice's newest entry still yields only bob's.
    let past = a
        .audit_ids
        .iter()
        .map(|i| i.parse::<i64>().unwrap())
        .max()
        .unwrap()
        + 1;
    let resp = bridge
        .gql(Some(&bob), AUDIT, json!({"n": 100, "a": past.to_string()}))
        .await;
    for e in data(&resp, "auditLog")["entries"].as_array().unwrap() {
        assert!(!a.audit_ids.contains(&id_of(e)), "alice's entry {e}");
    }

    // ---- Mutations ----
    walk.case("Mutation.registerCompanion");
    // Bob registering his own new token touches none of alice's installs (a token alice holds
    // moves by design; see the companion tests).
    register_companion(&bridge, "bob", "bob-push-2").await;

    walk.case("Mutation.updatePushToken");
    let resp = bridge
        .gql(
            Some(&bob),
            UPDATE_TOKEN,
            json!({"id": a.companion, "t": "bob-takes-over"}),
        )
        .await;
    expect_error(&resp, "NOT_FOUND");

    walk.case("Mutation.removeCompanion");
    let resp = bridge
        .gql(Some(&bob), REMOVE_COMPANION, json!({"id": a.companion}))
        .await;
    expect_error(&resp, "NOT_FOUND");

    walk.case("Mutation.startPairing");
    // Alice's device key with a proof bob signed: refused, alice's device untouched.
    let forged = bob_device.token_for(&bridge, "pairing");
    let resp = start_pairing_raw(&bridge, &alice_device, &forged).await;
    expect_error(&resp, "UNAUTHENTICATED");

    walk.case("Mutation.confirmPairing");
    // Alice's (used) code gets bob nothing.
    let resp = confirm_code(&bridge, "bob", &a.code).await;
    expect_error(&resp, "NOT_FOUND");

    walk.case("Mutation.renameDevice");
    for id in [&a.device, &a.pending_device] {
        let resp = bridge
            .gql(Some(&bob), RENAME, json!({"id": id, "n": "Bob's now"}))
            .await;
        expect_error(&resp, "NOT_FOUND");
    }

    walk.case("Mutation.revokeDevice");
    for id in [&a.device, &a.pending_device] {
        let resp = bridge.gql(Some(&bob), REVOKE, json!({"id": id})).await;
        expect_error(&resp, "NOT_FOUND");
    }

    walk.case("Mutation.requestSignIn");
    // Bob's device reusing alice's idempotency key gets its own delivery, not alice's.
    let resp = bridge
        .gql(
            Some(&bob_dev()),
            REQUEST_SIGN_IN,
            sign_in_input(&bridge, "shared-key"),
        )
        .await;
    let mine = data(&resp, "requestSignIn");
    assert_ne!(mine["id"], a.sign_in.as_str(), "{resp}");
    assert_eq!(mine["deviceId"], bob_device.id.as_deref().unwrap());

    walk.case("Mutation.requestRegistration");
    let resp = bridge
        .gql(
            Some(&bob_dev()),
            REQUEST_REGISTRATION,
            json!({"i": {
                "fidoUrl": fido_url(&bridge, hybrid::url::RequestType::MakeCredential),
                "rpId": "example.com",
                "idempotencyKey": "shared-reg-key",
            }}),
        )
        .await;
    assert_ne!(
        data(&resp, "requestRegistration")["id"],
        a.registration.as_str(),
        "{resp}"
    );

    walk.case("Mutation.claimDelivery");
    for id in [&a.sign_in, &a.registration] {
        let resp = bridge.gql(Some(&bob), CLAIM, json!({"id": id})).await;
        expect_error(&resp, "NOT_FOUND");
    }
    // Bob's own delivery claimed "as" alice's install: the install is not found.
    let resp = bridge
        .gql(
            Some(&bob),
            CLAIM_AS,
            json!({"id": bob_delivery, "c": a.companion}),
        )
        .await;
    expect_error(&resp, "NOT_FOUND");
    assert!(
        stored_fido_url(&bridge, &bob_delivery).await.is_some(),
        "a refused claim must not consume the URL"
    );

    walk.case("Mutation.denyDelivery");
    for reason in ["DECLINED", "NOT_ME"] {
        let resp = bridge
            .gql(Some(&bob), DENY, json!({"id": a.sign_in, "r": reason}))
            .await;
        expect_error(&resp, "NOT_FOUND");
    }

    walk.case("Mutation.completeDelivery");
    for outcome in ["CANCELLED", "SUCCESS"] {
        let resp = bridge
            .gql(
                Some(&bob_dev()),
                COMPLETE,
                json!({"id": a.sign_in, "o": outcome}),
            )
            .await;
        expect_error(&resp, "NOT_FOUND");
    }

    // ---- Subscriptions ----
    walk.case("Subscription.deliveryStatus");
    for token in [bob.clone(), bob_dev()] {
        let first = subscribe_first(&bridge, Some(&token), DELIVERY_STATUS, &a.sign_in).await;
        expect_error(&first, "NOT_FOUND");
    }
    let own = subscribe_first(&bridge, Some(&bob), DELIVERY_STATUS, &bob_delivery).await;
    assert_eq!(own["data"]["deliveryStatus"]["id"], bob_delivery.as_str());

    walk.case("Subscription.incomingDeliveries");
    {
        // Bob's stream carries his own pending deliveries and never Alice's.
        let mut sub = bridge.subscribe(Some(&bob), INCOMING, json!({})).await;
        let mut seen = Vec::new();
        while let Ok(item) =
            tokio::time::timeout(std::time::Duration::from_millis(1500), sub.next()).await
        {
            let id = item["data"]["incomingDeliveries"]["id"].clone();
            assert!(id.is_string(), "{item}");
            seen.push(id);
        }
        assert!(seen.contains(&json!(bob_delivery)), "{seen:?}");
        for alice in [&a.sign_in, &a.registration] {
            assert!(!seen.contains(&json!(alice)), "{seen:?}");
        }
    }

    walk.case("Subscription.pairingStatus");
    for id in [&a.pairing, &a.pending_pairing] {
        let first = subscribe_first(&bridge, Some(&bob_dev()), PAIRING_STATUS, id).await;
        expect_error(&first, "NOT_FOUND");
    }

    walk.finish();

    // Nothing of alice's changed.
    let after = alice_view(&bridge, &a, &alice_device, &alice_pending).await;
    assert_eq!(before, after, "{db:?}: alice's view changed");
    // And alice can still use everything bob could not touch.
    let claim = bridge
        .gql(Some(&alice), CLAIM, json!({"id": a.sign_in}))
        .await;
    assert!(
        data(&claim, "claimDelivery")["fidoUrl"]
            .as_str()
            .unwrap()
            .starts_with("FIDO:/")
    );
    let resp = confirm_code(&bridge, "alice", &pending_pairing.code).await;
    assert_eq!(data(&resp, "confirmPairing")["status"], "ACTIVE");
}

/// One operation with the ids it needs.
struct Op {
    name: &'static str,
    query: &'static str,
    variables: Value,
    subscription: bool,
}

fn op(name: &'static str, query: &'static str, variables: Value) -> Op {
    Op {
        name,
        query,
        variables,
        subscription: false,
    }
}

fn sub(name: &'static str, query: &'static str, variables: Value) -> Op {
    Op {
        name,
        query,
        variables,
        subscription: true,
    }
}

/// Operations only a companion may call.
fn companion_operations(ids: &Ids) -> Vec<Op> {
    vec![
        op("Query.account", ACCOUNT, json!({})),
        op("Query.companions", COMPANIONS, json!({})),
        op("Query.devices", DEVICES, json!({})),
        op("Query.device", DEVICE, json!({"id": ids.device})),
        op("Query.pendingDeliveries", PENDING, json!({})),
        sub("Subscription.incomingDeliveries", INCOMING, json!({})),
        op("Query.auditLog", AUDIT, json!({"n": 10, "a": null})),
        op(
            "Mutation.registerCompanion",
            REGISTER_COMPANION,
            json!({"i": {"platform": "FCM", "pushToken": "kind-test-token", "appId": "app", "displayName": "Phone"}}),
        ),
        op(
            "Mutation.updatePushToken",
            UPDATE_TOKEN,
            json!({"id": ids.companion, "t": "kind-test-token-2"}),
        ),
        op(
            "Mutation.removeCompanion",
            REMOVE_COMPANION,
            json!({"id": ids.companion}),
        ),
        op(
            "Mutation.confirmPairing",
            CONFIRM_PAIRING,
            json!({"c": ids.code, "n": null}),
        ),
        op(
            "Mutation.renameDevice",
            RENAME,
            json!({"id": ids.device, "n": "x"}),
        ),
        op("Mutation.revokeDevice", REVOKE, json!({"id": ids.device})),
        op("Mutation.claimDelivery", CLAIM, json!({"id": ids.delivery})),
        op(
            "Mutation.denyDelivery",
            DENY,
            json!({"id": ids.delivery, "r": "DECLINED"}),
        ),
    ]
}

/// Operations only a device may call.
fn device_operations(ids: &Ids, bridge: &TestBridge) -> Vec<Op> {
    vec![
        op(
            "Mutation.requestSignIn",
            REQUEST_SIGN_IN,
            sign_in_input(bridge, "kind-test"),
        ),
        op(
            "Mutation.requestRegistration",
            REQUEST_REGISTRATION,
            json!({"i": {"fidoUrl": fido_url(bridge, hybrid::url::RequestType::MakeCredential), "rpId": "example.com", "idempotencyKey": "kind-test-reg"}}),
        ),
        op(
            "Mutation.completeDelivery",
            COMPLETE,
            json!({"id": ids.delivery, "o": "CANCELLED"}),
        ),
        op("Query.pairing", PAIRING, json!({"id": ids.pairing})),
        sub(
            "Subscription.pairingStatus",
            PAIRING_STATUS,
            json!({"id": ids.pairing}),
        ),
    ]
}

/// Operations either kind may call.
fn shared_operations(ids: &Ids) -> Vec<Op> {
    vec![
        op("Query.delivery", DELIVERY, json!({"id": ids.delivery})),
        sub(
            "Subscription.deliveryStatus",
            DELIVERY_STATUS,
            json!({"id": ids.delivery}),
        ),
    ]
}

struct Ids {
    companion: String,
    device: String,
    pairing: String,
    code: String,
    delivery: String,
}

struct Setup {
    bridge: TestBridge,
    device: TestDevice,
    ids: Ids,
}

async fn setup(db: Db) -> Setup {
    let bridge = TestBridge::start(db).await;
    let companion = register_companion(&bridge, "alice", "alice-push-1").await;
    let (device, pairing) = pair(&bridge, "alice").await;
    let mut pending = TestDevice::new();
    let waiting = start_pairing(&bridge, &mut pending).await;
    let delivery = id_of(&request_sign_in(&bridge, &device, "k1").await);
    let ids = Ids {
        companion,
        device: device.id.clone().unwrap(),
        pairing: pairing.pairing_id,
        code: waiting.code,
        delivery,
    };
    Setup {
        bridge,
        device,
        ids,
    }
}

/// Runs `op` with `token` and returns the (first) response.
async fn call(bridge: &TestBridge, token: Option<&str>, op: &Op) -> Value {
    if op.subscription {
        let mut s = bridge
            .subscribe(token, op.query, op.variables.clone())
            .await;
        s.next().await
    } else {
        bridge.gql(token, op.query, op.variables.clone()).await
    }
}

/// The set of operations the kind tables cover must be the whole schema minus `startPairing`
/// (which needs no credentials: its proof is the credential).
fn check_kind_tables_cover_the_schema(ids: &Ids, bridge: &TestBridge) {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for o in companion_operations(ids)
        .iter()
        .chain(device_operations(ids, bridge).iter())
        .chain(shared_operations(ids).iter())
    {
        assert!(names.insert(o.name.to_owned()), "{} twice", o.name);
    }
    names.insert("Mutation.startPairing".into());
    assert_eq!(
        names,
        schema_operations(),
        "the caller-kind tables must list every operation"
    );
}

#[tokio::test]
async fn device_token_on_companion_operations_is_forbidden() {
    for db in databases() {
        let s = setup(db).await;
        check_kind_tables_cover_the_schema(&s.ids, &s.bridge);
        for o in companion_operations(&s.ids) {
            let resp = call(&s.bridge, Some(&s.device.token(&s.bridge)), &o).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "FORBIDDEN",
                "{db:?} {}: {resp}",
                o.name
            );
            expect_error(&resp, "FORBIDDEN");
        }
        // Nothing happened: the install, the device and the delivery are as they were.
        let alice = s.bridge.companion_token("alice");
        let resp = s.bridge.gql(Some(&alice), COMPANIONS, json!({})).await;
        assert_eq!(data(&resp, "companions").as_array().unwrap().len(), 1);
        let resp = s
            .bridge
            .gql(Some(&alice), DEVICE, json!({"id": s.ids.device}))
            .await;
        assert_eq!(data(&resp, "device")["status"], "ACTIVE");
        assert_eq!(data(&resp, "device")["name"], "Living room");
        assert!(stored_fido_url(&s.bridge, &s.ids.delivery).await.is_some());
    }
}

#[tokio::test]
async fn companion_token_on_device_operations_is_forbidden() {
    for db in databases() {
        let s = setup(db).await;
        let alice = s.bridge.companion_token("alice");
        let deliveries = count_rows(&s.bridge, "deliveries").await;
        for o in device_operations(&s.ids, &s.bridge) {
            let resp = call(&s.bridge, Some(&alice), &o).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "FORBIDDEN",
                "{db:?} {}: {resp}",
                o.name
            );
            expect_error(&resp, "FORBIDDEN");
        }
        assert_eq!(count_rows(&s.bridge, "deliveries").await, deliveries);
        let resp = s
            .bridge
            .gql(Some(&alice), DELIVERY, json!({"id": s.ids.delivery}))
            .await;
        assert_ne!(data(&resp, "delivery")["status"], "FAILED");
    }
}

#[tokio::test]
async fn missing_token_is_unauthenticated() {
    for db in databases() {
        let s = setup(db).await;
        let all: Vec<Op> = companion_operations(&s.ids)
            .into_iter()
            .chain(device_operations(&s.ids, &s.bridge))
            .chain(shared_operations(&s.ids))
            .collect();
        for o in &all {
            let resp = call(&s.bridge, None, o).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
                "{db:?} {}: {resp}",
                o.name
            );
            expect_error(&resp, "UNAUTHENTICATED");
        }
    }
}

/// Tokens that are no credential at all.
const GARBAGE: &[&str] = &[
    "garbage",
    "eyJhbGciOiJub25lIn0.e30.",
    "a.b.c",
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImRldl8wMCJ9.eyJpc3MiOiJ4In0.AAAA",
];

#[tokio::test]
async fn garbage_token_is_unauthenticated_on_companion_operations() {
    for db in databases() {
        let s = setup(db).await;
        let ops: Vec<Op> = companion_operations(&s.ids)
            .into_iter()
            .chain(shared_operations(&s.ids))
            .collect();
        for token in GARBAGE {
            for o in &ops {
                let resp = call(&s.bridge, Some(token), o).await;
                assert_eq!(
                    resp["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
                    "{db:?} {} with {token:?}: {resp}",
                    o.name
                );
                expect_error(&resp, "UNAUTHENTICATED");
            }
        }
    }
}

#[tokio::test]
async fn garbage_token_is_unauthenticated_on_device_operations() {
    for db in databases() {
        let s = setup(db).await;
        for token in GARBAGE {
            for o in device_operations(&s.ids, &s.bridge) {
                let resp = call(&s.bridge, Some(token), &o).await;
                assert_eq!(
                    resp["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
                    "{db:?} {} with {token:?}: {resp}",
                    o.name
                );
                expect_error(&resp, "UNAUTHENTICATED");
            }
        }
    }
}

#[tokio::test]
async fn a_device_sees_and_completes_only_its_own_deliveries() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "alice-push").await;
        register_companion(&bridge, "bob", "bob-push").await;
        let (alice_device, _) = pair(&bridge, "alice").await;
        let (alice_other, _) = pair(&bridge, "alice").await;
        let (bob_device, _) = pair(&bridge, "bob").await;
        let id = id_of(&request_sign_in(&bridge, &alice_device, "k").await);

        // Bob's device and alice's other device: not found, by query, mutation and
        // subscription.
        for stranger in [&bob_device, &alice_other] {
            let resp = bridge
                .gql(Some(&stranger.token(&bridge)), DELIVERY, json!({"id": id}))
                .await;
            expect_error(&resp, "NOT_FOUND");
            for outcome in ["SUCCESS", "CANCELLED", "TUNNEL_FAILED"] {
                let resp = bridge
                    .gql(
                        Some(&stranger.token(&bridge)),
                        COMPLETE,
                        json!({"id": id, "o": outcome}),
                    )
                    .await;
                expect_error(&resp, "NOT_FOUND");
            }
            let first = subscribe_first(
                &bridge,
                Some(&stranger.token(&bridge)),
                DELIVERY_STATUS,
                &id,
            )
            .await;
            expect_error(&first, "NOT_FOUND");
        }

        // The delivery is untouched: alice claims it and her device completes it.
        let alice = bridge.companion_token("alice");
        let claim = bridge.gql(Some(&alice), CLAIM, json!({"id": id})).await;
        data(&claim, "claimDelivery");
        let done = bridge
            .gql(
                Some(&alice_device.token(&bridge)),
                COMPLETE,
                json!({"id": id, "o": "SUCCESS"}),
            )
            .await;
        assert_eq!(data(&done, "completeDelivery")["status"], "COMPLETED");
    }
}

#[tokio::test]
async fn ids_of_the_wrong_shape_are_not_found() {
    for db in databases() {
        let s = setup(db).await;
        let alice = s.bridge.companion_token("alice");
        for bad in ["", "x", "dlv_", "dev_zz", "' OR 1=1 --", &s.ids.device] {
            // A device id where a delivery id belongs is just not found.
            let resp = s
                .bridge
                .gql(Some(&alice), DELIVERY, json!({"id": bad}))
                .await;
            expect_error(&resp, "NOT_FOUND");
            let resp = s.bridge.gql(Some(&alice), CLAIM, json!({"id": bad})).await;
            expect_error(&resp, "NOT_FOUND");
        }
        let resp = s
            .bridge
            .gql(Some(&alice), DEVICE, json!({"id": s.ids.delivery}))
            .await;
        expect_error(&resp, "NOT_FOUND");
    }
}
