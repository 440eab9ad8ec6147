//! Load generator for `requestSignIn`: starts the real `bridge` binary, measures its startup
//! time and idle memory, pairs devices, then drives sign-in requests over loopback and reports
//! throughput and latency.
//!
//! ```text
//! cargo build --release -p bridge --bin bridge --example loadgen
//! target/release/examples/loadgen --bridge target/release/bridge [--database-url postgres://…]
//!     [--rate 1000] [--seconds 20] [--concurrency 64] [--devices 200]
//! ```
//! `--rate 0` runs closed-loop (as fast as `--concurrency` clients go); a positive rate is
//! open-loop (requests start on schedule whatever the latency). `--push apns` starts the fake
//! APNs (HTTP/2, TLS, provider-token checks) in this process, points the bridge's real APNs
//! sender at it, and also reports accept-to-sent latency: from the bridge's answer to
//! `requestSignIn` until the push arrives at the fake. Results: `docs/benchmarks.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bridge::auth::dev_issuer::DevIssuer;
use bridge::auth::device::{DevicePublicKey, mint_device_token};
use p256::SecretKey;
use p256::elliptic_curve::Generate;
use serde_json::{Value, json};
use tether_tests::fake_apns::{FakeApns, FakeApnsConfig, generate_provider_key};
use tokio::sync::Mutex;

const TOPIC: &str = "com.example.load";

struct Args {
    bridge: PathBuf,
    database_url: Option<String>,
    rate: u64,
    seconds: u64,
    concurrency: usize,
    devices: usize,
    port: u16,
    push_apns: bool,
}

fn args() -> Args {
    let mut a = Args {
        bridge: PathBuf::from("target/release/bridge"),
        database_url: None,
        rate: 0,
        seconds: 20,
        concurrency: 64,
        devices: 200,
        port: 18_080,
        push_apns: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bridge" => a.bridge = value.into(),
            "--database-url" => a.database_url = Some(value),
            "--rate" => a.rate = value.parse().unwrap(),
            "--seconds" => a.seconds = value.parse().unwrap(),
            "--concurrency" => a.concurrency = value.parse().unwrap(),
            "--devices" => a.devices = value.parse().unwrap(),
            "--port" => a.port = value.parse().unwrap(),
            "--push" => {
                assert_eq!(value, "apns", "--push takes apns");
                a.push_apns = true;
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Bridge {
    child: Child,
    audience: String,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn gql(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut req = client
        .post(format!("{base}/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().json().await.unwrap()
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("tether-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let base = format!("http://127.0.0.1:{}", a.port);
    let mut cmd = Command::new(&a.bridge);
    cmd.arg("--data-dir")
        .arg(&dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", a.port))
        .env("TETHER_PUBLIC_URL", &base)
        .env("TETHER_LIMITS__DELIVERIES_PER_DEVICE_PER_MINUTE", "1000000")
        .env(
            "TETHER_LIMITS__DELIVERIES_PER_ACCOUNT_PER_MINUTE",
            "1000000",
        )
        .env(
            "TETHER_LIMITS__PAIRING_STARTS_PER_ADDRESS_PER_MINUTE",
            "1000000",
        )
        .env("TETHER_LIMITS__DEVICES_PER_ACCOUNT", "1000000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(url) = &a.database_url {
        cmd.arg("--database-url").arg(url);
    }
    let apns = if a.push_apns {
        let (p8, verifying_key) = generate_provider_key().unwrap();
        let fake = FakeApns::start(FakeApnsConfig {
            team_id: "TEAM123456".into(),
            key_id: "KEY1234567".into(),
            verifying_key,
            topics: vec![TOPIC.into()],
        })
        .await
        .unwrap();
        std::fs::write(dir.join("apns.p8"), p8).unwrap();
        std::fs::write(dir.join("apns-ca.pem"), fake.ca_pem()).unwrap();
        cmd.env("TETHER_PUSH__SINK", "providers")
            .env("TETHER_PUSH__APNS__ENDPOINT", fake.base_url())
            .env("TETHER_PUSH__APNS__TEAM_ID", "TEAM123456")
            .env("TETHER_PUSH__APNS__KEY_ID", "KEY1234567")
            .env("TETHER_PUSH__APNS__KEY_FILE", dir.join("apns.p8"))
            .env("TETHER_PUSH__APNS__CA_FILE", dir.join("apns-ca.pem"));
        Some(fake)
    } else {
        None
    };
    let started = Instant::now();
    let child = cmd
        .spawn()
        .expect("bridge binary runs (build it with --release first)");
    let bridge = Bridge {
        child,
        audience: base.clone(),
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.concurrency)
        .build()
        .unwrap();
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bridge did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let startup = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(bridge.child.id());
    println!("startup to ready: {:.1} ms", startup.as_secs_f64() * 1000.0);
    println!("idle RSS: {:.1} MiB", idle_rss as f64 / 1024.0);

    // Setup: one companion per account, 10 devices per account.
    let issuer = DevIssuer::load_or_create(&dir.join("tether-dev-issuer.pem")).unwrap();
    let accounts = a.devices.div_ceil(10);
    for i in 0..accounts {
        let t = issuer
            .mint(&format!("load-{i}"), &bridge.audience, now_secs(), 3600)
            .unwrap();
        let (platform, token) = if a.push_apns {
            ("APNS", format!("{:064x}", i + 1))
        } else {
            ("FCM", format!("load-token-{i}"))
        };
        let r = gql(&client, &base, Some(&t), "mutation($i: RegisterCompanionInput!) { registerCompanion(input: $i) { id } }",
            json!({"i": {"platform": platform, "pushToken": token, "appId": TOPIC, "displayName": "load"}})).await;
        assert!(r["errors"].is_null(), "{r}");
    }
    let mut devices = Vec::new();
    for d in 0..a.devices {
        let key = SecretKey::generate();
        let pk = DevicePublicKey::from(key.public_key()).to_base64url();
        let jti = uuid::Uuid::new_v4().simple().to_string();
        let proof =
            mint_device_token(&key, "pairing", &bridge.audience, now_secs(), 120, &jti).unwrap();
        let r = gql(&client, &base, None, "mutation($i: StartPairingInput!) { startPairing(input: $i) { deviceId code } }",
            json!({"i": {"publicKey": pk, "proof": proof, "name": format!("dev {d}"), "model": "load"}})).await;
        let id = r["data"]["startPairing"]["deviceId"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"))
            .to_owned();
        let code = r["data"]["startPairing"]["code"]
            .as_str()
            .unwrap()
            .to_owned();
        let t = issuer
            .mint(
                &format!("load-{}", d / 10),
                &bridge.audience,
                now_secs(),
                3600,
            )
            .unwrap();
        let r = gql(
            &client,
            &base,
            Some(&t),
            "mutation($c: String!) { confirmPairing(code: $c) { id } }",
            json!({"c": code}),
        )
        .await;
        assert!(r["errors"].is_null(), "{r}");
        devices.push((key, id));
    }
    // Pre-mint what the timed phase sends: device tokens (one per request) and fresh URLs.
    let total = if a.rate > 0 {
        a.rate * a.seconds
    } else {
        4000 * a.seconds
    } as usize;
    eprintln!("minting {total} device tokens…");
    let mut requests = Vec::with_capacity(total);
    let urls: Vec<String> = (0..64)
        .map(|_| {
            let k = SecretKey::generate();
            let mut s = [0u8; 16];
            getrandom::fill(&mut s).unwrap();
            hybrid::url::FidoUrl::new(
                k.public_key(),
                hybrid::QrSecret::new(s),
                hybrid::url::RequestType::GetAssertion,
                u64::try_from(now_secs()).unwrap(),
                true,
            )
            .encode()
        })
        .collect();
    for n in 0..total {
        let (key, id) = &devices[n % devices.len()];
        let jti = uuid::Uuid::new_v4().simple().to_string();
        let token = mint_device_token(key, id, &bridge.audience, now_secs(), 300, &jti).unwrap();
        let body = json!({
            "query": "mutation($i: DeliveryInput!) { requestSignIn(input: $i) { id } }",
            "variables": {"i": {"fidoUrl": urls[n % urls.len()], "rpId": "example.com", "idempotencyKey": format!("k{n}")}}
        })
        .to_string();
        requests.push((token, body));
    }
    let requests = Arc::new(requests);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::with_capacity(total)));
    let accepted = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        SystemTime,
    >::with_capacity(total)));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let send = {
        let client = client.clone();
        let base = base.clone();
        move |i: usize,
              requests: Arc<Vec<(String, String)>>,
              latencies: Arc<Mutex<Vec<Duration>>>,
              errors: Arc<Mutex<BTreeMap<String, usize>>>,
              accepted: Arc<std::sync::Mutex<std::collections::HashMap<String, SystemTime>>>| {
            let client = client.clone();
            let url = format!("{base}/graphql");
            async move {
                let (token, body) = &requests[i];
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let outcome = match resp {
                    Ok(r) => match r.json::<Value>().await {
                        Ok(v) if v["errors"].is_null() => {
                            if let Some(id) = v["data"]["requestSignIn"]["id"].as_str() {
                                accepted.lock().unwrap().insert(id.to_owned(), SystemTime::now());
                            }
                            None
                        }
                        Ok(v) => Some(
                            v["errors"][0]["extensions"]["code"]
                                .as_str()
                                .unwrap_or("?")
                                .to_owned(),
                        ),
                        Err(e) => Some(format!("body: {e}")),
                    },
                    Err(e) => Some(format!("http: {e}")),
                };
                let elapsed = t.elapsed();
                match outcome {
                    None => latencies.lock().await.push(elapsed),
                    Some(code) => *errors.lock().await.entry(code).or_default() += 1,
                }
            }
        }
    };
    eprintln!("running for {} s…", a.seconds);
    let run_start = Instant::now();
    let deadline = run_start + Duration::from_secs(a.seconds);
    if a.rate > 0 {
        let interval = Duration::from_secs_f64(1.0 / a.rate as f64);
        let mut handles = Vec::new();
        for i in 0..total {
            let at = run_start + interval * u32::try_from(i).unwrap();
            tokio::time::sleep_until(at.into()).await;
            handles.push(tokio::spawn(send(
                i,
                requests.clone(),
                latencies.clone(),
                errors.clone(),
                accepted.clone(),
            )));
        }
        for h in handles {
            let _ = h.await;
        }
    } else {
        let mut handles = Vec::new();
        for _ in 0..a.concurrency {
            let (next, requests, latencies, errors, send, accepted) = (
                next.clone(),
                requests.clone(),
                latencies.clone(),
                errors.clone(),
                send.clone(),
                accepted.clone(),
            );
            handles.push(tokio::spawn(async move {
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests.len() {
                        break;
                    }
                    send(
                        i,
                        requests.clone(),
                        latencies.clone(),
                        errors.clone(),
                        accepted.clone(),
                    )
                    .await;
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
    }
    let wall = run_start.elapsed();
    let loaded_rss = rss_kib(bridge.child.id());
    let mut lat = latencies.lock().await.clone();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "database: {}",
        a.database_url
            .as_deref()
            .map_or("sqlite (file)", |u| if u.starts_with("postgres") {
                "postgresql"
            } else {
                "sqlite"
            })
    );
    println!(
        "mode: {}",
        if a.rate > 0 {
            format!("open loop at {} req/s", a.rate)
        } else {
            format!("closed loop, {} clients", a.concurrency)
        }
    );
    println!(
        "accepted: {} in {:.2} s = {:.0} req/s",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!("errors: {:?}", errors.lock().await);
    if let Some(fake) = &apns {
        let accepted = accepted.lock().unwrap().clone();
        let wait_start = Instant::now();
        while fake.received().len() < accepted.len()
            && wait_start.elapsed() < Duration::from_secs(60)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let received = fake.received();
        let first = received.iter().map(|r| r.received_at).min();
        let last = received.iter().map(|r| r.received_at).max();
        let mut sent: Vec<f64> = received
            .iter()
            .filter_map(|r| {
                let id = r.payload["delivery_id"].as_str()?;
                let at = accepted.get(id)?;
                Some(
                    r.received_at
                        .duration_since(*at)
                        .map_or(0.0, |d| d.as_secs_f64() * 1000.0),
                )
            })
            .collect();
        sent.sort_by(f64::total_cmp);
        let spct = |p: f64| {
            sent.get(((sent.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let span = match (first, last) {
            (Some(f), Some(l)) => l.duration_since(f).unwrap_or_default().as_secs_f64(),
            _ => 0.0,
        };
        println!(
            "pushes at the fake APNs: {} of {} accepted ({:.0}/s over {:.2} s)",
            received.len(),
            accepted.len(),
            received.len() as f64 / span.max(1e-9),
            span
        );
        println!(
            "accept-to-sent ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            spct(0.5),
            spct(0.9),
            spct(0.99),
            spct(1.0)
        );
    }
    println!("RSS after load: {:.1} MiB", loaded_rss as f64 / 1024.0);
    drop(bridge);
    let _ = std::fs::remove_dir_all(&dir);
}
