//! An operator's identity provider publishing its keys at a URL: the bridge fetches them at
//! startup, and re-fetches when a token names a key it has not seen (the provider rotated).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::routing::get;
use bridge::auth::dev_issuer::{DEV_ISSUER, DevIssuer};
use bridge::config::IdentityConfig;
use serde_json::json;
use support::*;

#[tokio::test]
async fn provider_keys_come_from_the_url_and_follow_rotation() {
    let first = DevIssuer::generate();
    let served = Arc::new(Mutex::new(first.jwks()));
    let app = {
        let served = served.clone();
        axum::Router::new().route(
            "/jwks",
            get(move || {
                let set = served.lock().unwrap().clone();
                async move { Json(set) }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    for db in databases() {
        *served.lock().unwrap() = first.jwks();
        let url = url.clone();
        let bridge = TestBridge::start_with(db, move |c| {
            c.identity = IdentityConfig::Oidc {
                issuer: DEV_ISSUER.into(),
                audience: "tether-api".into(),
                jwks_file: None,
                jwks_url: Some(url),
                danger_accept_http_jwks_url: true,
                algorithms: vec!["ES256".into()],
                leeway_secs: 30,
            };
        })
        .await;
        let query = "{ account { id } }";
        let token = first
            .mint("alice", "tether-api", bridge.now_secs(), 600)
            .unwrap();
        let resp = bridge.gql(Some(&token), query, json!({})).await;
        data(&resp, "account");

        // The provider rotates to a new key.
        let second = DevIssuer::generate();
        *served.lock().unwrap() = second.jwks();
        let rotated = second
            .mint("alice", "tether-api", bridge.now_secs(), 600)
            .unwrap();
        // Within 30 s of the last fetch the bridge does not hammer the provider.
        bridge.clock.advance_ms(31_000);
        let resp = bridge.gql(Some(&rotated), query, json!({})).await;
        data(&resp, "account");
        // The old key is gone from the provider's set, so its tokens no longer verify.
        bridge.clock.advance_ms(31_000);
        let old = first
            .mint("alice", "tether-api", bridge.now_secs(), 600)
            .unwrap();
        let resp = bridge.gql(Some(&old), query, json!({})).await;
        assert_eq!(error_code(&resp), "UNAUTHENTICATED", "{db:?}: {resp}");
    }
}

#[tokio::test]
async fn an_http_jwks_url_needs_the_danger_option() {
    let mut config = bridge::config::Config {
        identity: IdentityConfig::Oidc {
            issuer: "https://idp.example".into(),
            audience: "tether-api".into(),
            jwks_file: None,
            jwks_url: Some("http://127.0.0.1:9/jwks".into()),
            danger_accept_http_jwks_url: false,
            algorithms: vec!["ES256".into()],
            leeway_secs: 30,
        },
        ..Default::default()
    };
    let dir = std::env::temp_dir().join(format!("tether-jwks-{}", uuid::Uuid::new_v4().simple()));
    config.data_dir = dir.clone();
    config.database_url = Some(bridge::config::Redacted(format!(
        "sqlite://{}?mode=rwc",
        dir.join("t.db").display()
    )));
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(bridge::clock::ManualClock::new(T0_MS));
    let err = bridge::state::AppState::build(config, clock)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be https"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exactly_one_key_source_is_configured() {
    for (file, url) in [
        (None, None),
        (Some("/k.json".into()), Some("https://idp/jwks".to_owned())),
    ] {
        let config = bridge::config::Config {
            identity: IdentityConfig::Oidc {
                issuer: "https://idp.example".into(),
                audience: "tether-api".into(),
                jwks_file: file,
                jwks_url: url,
                danger_accept_http_jwks_url: false,
                algorithms: vec!["ES256".into()],
                leeway_secs: 30,
            },
            ..Default::default()
        };
        let err = config.validate().unwrap_err();
        assert!(
            err.to_string()
                .contains("exactly one of jwks_file and jwks_url"),
            "{err}"
        );
    }
}
