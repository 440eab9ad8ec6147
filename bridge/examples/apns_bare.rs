//! The wire limit of the push benchmark: the fake APNs driven by a bare HTTP/2 client (one
//! pooled connection, one provider token, no database), so `loadgen --push apns` can be read
//! against it.
//!
//! ```text
//! cargo build --release -p bridge --example apns_bare
//! target/release/examples/apns_bare [--count 30000] [--concurrency 256]
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tether_tests::fake_apns::{FakeApns, FakeApnsConfig, generate_provider_key};

#[tokio::main]
async fn main() {
    let mut count = 30_000usize;
    let mut concurrency = 256usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().expect("flag value");
        match flag.as_str() {
            "--count" => count = value.parse().unwrap(),
            "--concurrency" => concurrency = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    let (p8, verifying_key) = generate_provider_key().unwrap();
    let fake = FakeApns::start(FakeApnsConfig {
        team_id: "TEAM123456".into(),
        key_id: "KEY1234567".into(),
        verifying_key,
        topics: vec!["com.example.load".into()],
    })
    .await
    .unwrap();
    fake.keep_records(false);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(fake.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("KEY1234567".into());
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": "TEAM123456", "iat": iat}),
        &EncodingKey::from_ec_pem(p8.as_bytes()).unwrap(),
    )
    .unwrap();
    let url = Arc::new(format!("{}/3/device/{}", fake.base_url(), "ab".repeat(32)));
    let body = serde_json::json!({"aps": {"alert": {"title": "Passkey request", "body": "Sign in to example.com on Quest 3 'Living room'?"}}, "envelope": "x".repeat(900)}).to_string();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures_util::stream::iter(0..count)
        .map(|i| {
            let (client, url, body, jwt) = (client.clone(), url.clone(), body.clone(), jwt.clone());
            async move {
                let t = Instant::now();
                let r = client
                    .post(url.as_str())
                    .header("authorization", format!("bearer {jwt}"))
                    .header("apns-topic", "com.example.load")
                    .header("apns-push-type", "alert")
                    .header("apns-priority", "10")
                    .header("apns-expiration", (iat + 300).to_string())
                    .header("apns-collapse-id", format!("dlv_{i}"))
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                t.elapsed()
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let wall = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
    };
    println!(
        "bare HTTP/2 client → fake APNs: {count} pushes in {:.2} s = {:.0}/s (concurrency {concurrency}, {} connection)",
        wall.as_secs_f64(),
        count as f64 / wall.as_secs_f64(),
        fake.connections()
    );
    println!(
        "latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
}
