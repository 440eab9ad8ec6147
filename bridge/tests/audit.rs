//! The audit log over HTTP, on every database: pages newest first with no duplicates and no
//! gaps, bounds on `first`, cursors, and what an entry records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::*;

async fn page(bridge: &TestBridge, account: &str, first: i64, after: Option<&str>) -> Value {
    bridge
        .gql(
            Some(&bridge.companion_token(account)),
            AUDIT,
            json!({"n": first, "a": after}),
        )
        .await
}

#[tokio::test]
async fn pages_cover_the_log_newest_first_without_duplicates_or_gaps() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        let alice = bridge.companion_token("alice");
        // 1 registration + 45 token updates = 46 entries for alice; bob's interleave.
        let id = register_companion(&bridge, "alice", "t-0").await;
        register_companion(&bridge, "bob", "b-0").await;
        for n in 1..=45 {
            bridge.clock.advance_ms(1_000);
            let resp = bridge
                .gql(
                    Some(&alice),
                    UPDATE_TOKEN,
                    json!({"id": id, "t": format!("t-{n}")}),
                )
                .await;
            data(&resp, "updatePushToken");
            if n % 10 == 0 {
                register_companion(&bridge, "bob", &format!("b-{n}")).await;
            }
        }
        let all = data(&page(&bridge, "alice", 100, None).await, "auditLog").clone();
        let all_entries = all["entries"].as_array().unwrap().clone();
        assert_eq!(all_entries.len(), 46, "{db:?}");
        assert_eq!(all["nextCursor"], Value::Null);
        // Newest first.
        assert_eq!(all_entries[0]["detail"], id.as_str());
        assert_eq!(all_entries[0]["at"], bridge::id::rfc3339(T0_MS + 45_000));
        assert_eq!(all_entries[45]["event"], "companion.register");

        for size in [1, 7, 20, 45, 46, 100] {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            let mut pages = 0;
            loop {
                let resp = page(&bridge, "alice", size, cursor.as_deref()).await;
                let p = data(&resp, "auditLog");
                let entries = p["entries"].as_array().unwrap();
                assert!(entries.len() <= usize::try_from(size).unwrap());
                seen.extend(entries.iter().cloned());
                pages += 1;
                match p["nextCursor"].as_str() {
                    Some(next) => {
                        assert_eq!(
                            entries.len(),
                            usize::try_from(size).unwrap(),
                            "only the last page is short"
                        );
                        cursor = Some(next.to_owned());
                    }
                    None => break,
                }
                assert!(pages <= 50, "pagination does not end");
            }
            assert_eq!(seen, all_entries, "{db:?} page size {size}");
            assert_eq!(
                pages,
                46_usize.div_ceil(usize::try_from(size).unwrap()),
                "{size}"
            );
        }

        // Ids strictly decrease; times never increase.
        let ids: Vec<i64> = all_entries
            .iter()
            .map(|e| e["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
        let unique: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len());
        let times: Vec<&str> = all_entries
            .iter()
            .map(|e| e["at"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

        // New entries after the first page do not shift the later pages.
        let first = data(&page(&bridge, "alice", 10, None).await, "auditLog").clone();
        let cursor = first["nextCursor"].as_str().unwrap().to_owned();
        bridge
            .gql(Some(&alice), UPDATE_TOKEN, json!({"id": id, "t": "late"}))
            .await;
        let second = data(&page(&bridge, "alice", 10, Some(&cursor)).await, "auditLog").clone();
        assert_eq!(
            second["entries"].as_array().unwrap().as_slice(),
            &all_entries[10..20],
            "{db:?}"
        );
    }
}

#[tokio::test]
async fn first_must_be_between_1_and_100_and_cursors_must_be_cursors() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        register_companion(&bridge, "alice", "t").await;
        for first in [0, -1, 101, 1000, i64::from(i32::MIN)] {
            let resp = page(&bridge, "alice", first, None).await;
            assert_eq!(
                resp["errors"][0]["extensions"]["code"], "INVALID_INPUT",
                "{db:?} first={first}: {resp}"
            );
            expect_error(&resp, "INVALID_INPUT");
        }
        for first in [1, 100] {
            let resp = page(&bridge, "alice", first, None).await;
            assert_eq!(
                data(&resp, "auditLog")["entries"].as_array().unwrap().len(),
                1
            );
        }
        for cursor in ["x", "", "1.5", "9999999999999999999999", "-"] {
            let resp = page(&bridge, "alice", 10, Some(cursor)).await;
            expect_error(&resp, "INVALID_INPUT");
        }
        // The default page size is 20.
        let resp = bridge
            .gql(
                Some(&bridge.companion_token("alice")),
                "{ auditLog { entries { id } nextCursor } }",
                json!({}),
            )
            .await;
        assert_eq!(
            data(&resp, "auditLog")["entries"].as_array().unwrap().len(),
            1
        );
        // A cursor before everything gives an empty last page.
        let resp = page(&bridge, "alice", 10, Some("0")).await;
        let p = data(&resp, "auditLog");
        assert!(p["entries"].as_array().unwrap().is_empty(), "{resp}");
        assert_eq!(p["nextCursor"], Value::Null);
    }
}

#[tokio::test]
async fn an_entry_records_time_actor_address_and_outcome() {
    for db in databases() {
        let bridge = TestBridge::start(db).await;
        bridge.clock.advance_ms(4_321);
        let id = register_companion(&bridge, "alice", "t").await;
        let account = data(
            &bridge
                .gql(Some(&bridge.companion_token("alice")), ACCOUNT, json!({}))
                .await,
            "account",
        )["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let entries = audit_entries(&bridge, "alice").await;
        assert_eq!(entries.len(), 1, "{db:?}");
        let e = &entries[0];
        assert_eq!(e["event"], "companion.register");
        assert_eq!(e["at"], bridge::id::rfc3339(T0_MS + 4_321));
        assert_eq!(e["actor"], format!("account:{account}").as_str());
        assert_eq!(e["clientAddress"], "127.0.0.1");
        assert_eq!(e["outcome"], "success");
        assert_eq!(e["detail"], id.as_str());
        // Another account's log is empty.
        assert!(audit_entries(&bridge, "bob").await.is_empty());
    }
}
