//! Hard edges of the HTTP and WebSocket endpoints, on every database: malformed bodies, wrong
//! types, depth, complexity and alias limits, the body limit, stable error codes without
//! internal detail (also for a real internal failure), introspection and GraphiQL per
//! configuration, and the health, readiness and JWKS endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::*;

/// A JSON error body: the HTTP status must match and the body must carry a stable code.
fn json_error(status: u16, body: &str, want_status: u16, want_code: &str) -> Value {
    assert_eq!(status, want_status, "{body}");
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    expect_error(&v, want_code);
    v
}

#[tokio::test]
async fn malformed_bodies_are_invalid_input() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let audit = count_rows(&bridge, "audit_log").await;
        let bodies: Vec<Vec<u8>> = vec![
            b"{not json".to_vec(),
            b"".to_vec(),
            b"{\"query\": ".to_vec(),
            b"{\"query\": 5}".to_vec(),
            b"\"just a string\"".to_vec(),
            vec![0xff, 0xfe, 0x00, 0x7b],
        ];
        for body in bodies {
            let (status, text) = bridge.post_raw(None, body.clone()).await;
            assert_eq!(
                status,
                400,
                "{db:?} {:?}: {text}",
                String::from_utf8_lossy(&body)
            );
            json_error(status, &text, 400, "INVALID_INPUT");
        }
        // A JSON request without a query is a GraphQL error with a code.
        let (status, text) = bridge.post_raw(None, b"{\"variables\": {}}".to_vec()).await;
        assert!([200, 400].contains(&status), "{text}");
        expect_error(&serde_json::from_str(&text).unwrap(), "INVALID_INPUT");
        // Syntax errors and unknown fields come back as GraphQL errors with a code.
        for query in [
            "{ account { id ",
            "{ accountt { id } }",
            "mutation { nope }",
            "subscription { deliveryStatus }",
            "query { account { id } } query { account { id } }",
        ] {
            let resp = bridge
                .gql(Some(&bridge.companion_token("alice")), query, json!({}))
                .await;
            expect_error(&resp, "INVALID_INPUT");
        }
        assert_eq!(count_rows(&bridge, "audit_log").await, audit, "{db:?}");
        assert_eq!(count_rows(&bridge, "accounts").await, 0, "{db:?}");
    }
}

#[tokio::test]
async fn wrong_variable_types_are_invalid_input() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        let cases = [
            (AUDIT, json!({"n": "ten", "a": null})),
            (AUDIT, json!({"n": 1.5, "a": null})),
            (AUDIT, json!({"n": 99_999_999_999_i64, "a": null})),
            (AUDIT, json!({"n": null, "a": null})),
            (AUDIT, json!({"a": null})),
            (AUDIT, json!({"n": 10, "a": 7})),
            (DEVICE, json!({"id": {"nested": true}})),
            (DEVICE, json!({"id": [1, 2]})),
            (DENY, json!({"id": unknown_id("dlv"), "r": "MAYBE"})),
            (DENY, json!({"id": unknown_id("dlv"), "r": 1})),
            (REGISTER_COMPANION, json!({"i": "not an object"})),
            (
                REGISTER_COMPANION,
                json!({"i": {"platform": "APNS", "pushToken": "t", "appId": "a", "displayName": "d", "extra": 1}}),
            ),
        ];
        for (query, vars) in cases {
            let resp = bridge.gql(Some(&alice), query, vars.clone()).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "INVALID_INPUT",
                "{db:?} {vars}: {resp}"
            );
            expect_error(&resp, "INVALID_INPUT");
        }
        let resp = bridge
            .gql(
                Some(&alice),
                "{ auditLog(first: \"x\") { nextCursor } }",
                json!({}),
            )
            .await;
        expect_error(&resp, "INVALID_INPUT");
        assert_eq!(count_rows(&bridge, "companions").await, 0);
    }
}

/// An introspection query of the given depth (`__schema` is level 1).
fn deep_query(depth: usize) -> String {
    assert!(depth >= 5);
    let mut inner = String::from("name");
    for _ in 0..depth - 5 {
        inner = format!("ofType {{ {inner} }}");
    }
    format!("{{ __schema {{ types {{ fields {{ type {{ {inner} }} }} }} }} }}")
}

#[tokio::test]
async fn depth_complexity_and_alias_limits() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        let limits = bridge.state.config.graphql.clone();
        assert_eq!(
            (limits.max_depth, limits.max_complexity, limits.max_aliases),
            (10, 250, 15),
            "the documented defaults"
        );

        // Depth: 10 levels pass, 11 do not.
        let resp = bridge.gql(None, &deep_query(10), json!({})).await;
        assert!(resp["errors"].is_null(), "{db:?} {resp}");
        let resp = bridge.gql(None, &deep_query(11), json!({})).await;
        expect_error(&resp, "INVALID_INPUT");

        // Complexity: 250 fields pass, 251 do not.
        let q = |n: usize| format!("{{ account {{ {} }} }}", "id ".repeat(n - 1));
        let resp = bridge.gql(Some(&alice), &q(250), json!({})).await;
        assert!(resp["errors"].is_null(), "{resp}");
        let resp = bridge.gql(Some(&alice), &q(251), json!({})).await;
        expect_error(&resp, "INVALID_INPUT");

        // Aliases: 15 pass, 16 do not (also when hidden in nested selections or fragments).
        let aliases = |n: usize| {
            (0..n)
                .map(|i| format!("a{i}: account {{ id }}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let resp = bridge
            .gql(Some(&alice), &format!("{{ {} }}", aliases(15)), json!({}))
            .await;
        assert!(resp["errors"].is_null(), "{resp}");
        assert_eq!(resp["data"]["a14"]["id"], resp["data"]["a0"]["id"]);
        let resp = bridge
            .gql(Some(&alice), &format!("{{ {} }}", aliases(16)), json!({}))
            .await;
        expect_error(&resp, "INVALID_INPUT");
        let nested = format!(
            "{{ account {{ {} }} }}",
            (0..16)
                .map(|i| format!("i{i}: id"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let resp = bridge.gql(Some(&alice), &nested, json!({})).await;
        expect_error(&resp, "INVALID_INPUT");
        let fragment = format!("query {{ ...F }} fragment F on Query {{ {} }}", aliases(16));
        let resp = bridge.gql(Some(&alice), &fragment, json!({})).await;
        expect_error(&resp, "INVALID_INPUT");
        // Sixteen guesses at a pairing code in one request are refused before any is tried.
        let guesses = (0..16)
            .map(|i| format!("g{i}: confirmPairing(code: \"{:08}\") {{ id }}", i))
            .collect::<Vec<_>>()
            .join(" ");
        let resp = bridge
            .gql(
                Some(&alice),
                &format!("mutation {{ {guesses} }}"),
                json!({}),
            )
            .await;
        expect_error(&resp, "INVALID_INPUT");
        let log = audit_entries(&bridge, "alice").await;
        assert!(entries_with(&log, "pairing.failure").is_empty(), "{log:?}");
    }
}

#[tokio::test]
async fn the_depth_limit_is_configurable() {
    for db in databases() {
        let bridge = TestBridge::start_with(db, |c| c.graphql.max_depth = 2).await;
        let alice = bridge.companion_token("alice");
        let resp = bridge
            .gql(Some(&alice), "{ auditLog { nextCursor } }", json!({}))
            .await;
        assert!(resp["errors"].is_null(), "{db:?} {resp}");
        let resp = bridge
            .gql(Some(&alice), "{ auditLog { entries { id } } }", json!({}))
            .await;
        expect_error(&resp, "INVALID_INPUT");
    }
}

#[tokio::test]
async fn the_alias_limit_holds_over_websocket_too() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        let query = format!(
            "query {{ {} }}",
            (0..16)
                .map(|i| format!("a{i}: account {{ id }}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut sub = bridge.subscribe(Some(&alice), &query, json!({})).await;
        let first = sub.next().await;
        assert_eq!(
            first["errors"][0]["extensions"]["code"], "INVALID_INPUT",
            "{db:?} {first}"
        );
        expect_error(&first, "INVALID_INPUT");
    }
}

#[tokio::test]
async fn websocket_errors_carry_a_stable_code() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        for (query, vars) in [
            ("subscription { nope }", json!({})),
            ("subscription { deliveryStatus(id: 5 { id } }", json!({})),
            (
                "subscription($id: ID!) { deliveryStatus(id: $id) { id } }",
                json!({"id": {"x": 1}}),
            ),
        ] {
            let mut sub = bridge.subscribe(Some(&alice), query, vars).await;
            let first = sub.next().await;
            assert!(first["errors"].is_array(), "{first}");
            assert_clean_errors(&first);
            expect_error(&first, "INVALID_INPUT");
        }
        // Deep queries are refused over the socket as well (this part already holds).
        let mut sub = bridge
            .subscribe(Some(&alice), &deep_query(11), json!({}))
            .await;
        let first = sub.next().await;
        assert!(first["errors"].is_array(), "{db:?} {first}");
    }
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused_with_413() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        assert_eq!(bridge.state.config.graphql.max_body_bytes, 64 * 1024);
        let padding = " ".repeat(64 * 1024);
        let body = format!("{{\"query\": \"{{ __typename {padding} }}\"}}");
        let (status, _) = bridge.post_raw(None, body.into_bytes()).await;
        assert_eq!(status, 413, "{db:?}");
        // Without a length up front (chunked), the body is cut off at the limit.
        let chunk = vec![b' '; 16 * 1024];
        let mut req = format!(
            "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            bridge.addr
        )
        .into_bytes();
        req.extend_from_slice(b"5\r\n{\"q\":\r\n");
        for _ in 0..5 {
            req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            req.extend_from_slice(&chunk);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        let (status, body) = bridge.raw_http(&req).await;
        json_error(status, &body, 413, "INVALID_INPUT");
        // Just under the limit is served.
        let pad = " ".repeat(60 * 1024);
        let body = format!("{{\"query\": \"{{ __typename {pad} }}\"}}");
        let (status, text) = bridge.post_raw(None, body.into_bytes()).await;
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("\"__typename\":\"Query\""), "{text}");
    }
}

#[tokio::test]
async fn websocket_messages_over_the_body_limit_are_refused() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        let mut sub = bridge.subscribe(Some(&alice), ACCOUNT, json!({})).await;
        let first = sub.next().await;
        data(&first, "account");
        assert_eq!(sub.next().await["type"], "complete");
        // A second operation on the same connection, with a query over 64 KiB.
        let big = format!("{{ account {{ id }} {} }}", " ".repeat(70 * 1024));
        sub.start("2", &big, json!({})).await;
        // Refused: either an error for the operation or the connection closes; never data.
        match sub.try_next_message().await {
            None => {}
            Some(msg) => {
                assert_eq!(msg["id"], "2", "{msg}");
                assert!(msg["payload"]["data"].is_null(), "{db:?}: executed: {msg}");
                expect_error(&msg["payload"], "INVALID_INPUT");
            }
        }
    }
}

#[tokio::test]
async fn a_413_with_a_length_carries_a_stable_code() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let body = format!("{{\"query\": \"{{ __typename {} }}\"}}", " ".repeat(70_000));
        let (status, text) = bridge.post_raw(None, body.into_bytes()).await;
        json_error(status, &text, 413, "INVALID_INPUT");
    }
}

#[tokio::test]
async fn internal_failures_show_no_detail() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        data(
            &bridge.gql(Some(&alice), ACCOUNT, json!({})).await,
            "account",
        );
        let (status, _) = bridge.get("/readyz").await;
        assert_eq!(status, 200);

        // The database goes away.
        bridge.state.store.pool().close().await;
        let resp = bridge.gql(Some(&alice), COMPANIONS, json!({})).await;
        let e = expect_error(&resp, "INTERNAL");
        assert_eq!(e["message"], "internal error", "{db:?} {resp}");
        let resp = bridge
            .gql(Some(&alice), REGISTER_COMPANION, json!({"i": {"platform": "APNS", "pushToken": "t", "appId": "a", "displayName": "d"}}))
            .await;
        expect_error(&resp, "INTERNAL");
        let (status, body) = bridge.get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        // Readiness may say the database is down (operators need that), but not how.
        for word in INTERNAL_DETAIL
            .iter()
            .filter(|w| !w.eq_ignore_ascii_case("database"))
        {
            assert!(!body.contains(word), "{body}");
        }
        assert!(!body.contains("pool"), "{body}");
        let (status, _) = bridge.get("/healthz").await;
        assert_eq!(status, 200, "the process is still up");
    }
}

#[tokio::test]
async fn introspection_and_graphiql_follow_the_configuration() {
    for db in databases() {
        let dev = TestBridge::start(db).await;
        let resp = dev
            .gql(None, "{ __schema { queryType { name } } }", json!({}))
            .await;
        assert_eq!(
            resp["data"]["__schema"]["queryType"]["name"], "Query",
            "{db:?}"
        );
        let resp = dev
            .gql(
                None,
                "{ __type(name: \"Delivery\") { fields { name } } }",
                json!({}),
            )
            .await;
        assert!(resp.to_string().contains("numberCode"), "{resp}");
        let (status, page) = dev.get("/graphql").await;
        assert_eq!(status, 200);
        assert!(page.to_lowercase().contains("graphiql"), "{page}");

        let locked = TestBridge::start_with(db, |c| {
            c.graphql.introspection = false;
            c.graphql.graphiql = false;
        })
        .await;
        for query in [
            "{ __schema { queryType { name } types { name } } }",
            "{ __type(name: \"Delivery\") { fields { name } } }",
        ] {
            let resp = locked.gql(None, query, json!({})).await;
            assert_clean_errors(&resp);
            let text = resp.to_string();
            assert!(
                !text.contains("Query\"") && !text.contains("numberCode"),
                "{db:?}: introspection answered: {resp}"
            );
            assert!(
                resp["data"].is_null()
                    || resp["data"]
                        .as_object()
                        .unwrap()
                        .values()
                        .all(Value::is_null),
                "{resp}"
            );
        }
        // Ordinary queries still work.
        let resp = locked
            .gql(Some(&locked.companion_token("alice")), ACCOUNT, json!({}))
            .await;
        data(&resp, "account");
        let (status, body) = locked.get("/graphql").await;
        assert_eq!(status, 405, "{body}");
        json_error(status, &body, 405, "INVALID_INPUT");
    }
}

#[tokio::test]
async fn health_readiness_and_jwks() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let (status, _) = bridge.get("/healthz").await;
        assert_eq!(status, 200, "{db:?}");
        let (status, _) = bridge.get("/readyz").await;
        assert_eq!(status, 200, "{db:?}");

        let (status, body) = bridge.get("/.well-known/jwks.json").await;
        assert_eq!(status, 200);
        let jwks: Value = serde_json::from_str(&body).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert!(!keys.is_empty(), "{jwks}");
        for key in keys {
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(key.get(private).is_none(), "private part {private}: {key}");
            }
            assert_eq!(key["kty"], "EC", "{key}");
            assert_eq!(key["crv"], "P-256", "{key}");
            assert_eq!(key["alg"], "ES256", "{key}");
            assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()), "{key}");
            assert!(key["x"].is_string() && key["y"].is_string(), "{key}");
        }
        let (status, _) = bridge.get("/nope").await;
        assert_eq!(status, 404);
    }
}
