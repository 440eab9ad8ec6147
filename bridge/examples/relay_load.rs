//! Load generator for the tunnel relay: starts the real `bridge` binary, opens N joined tunnels
//! from several worker processes (each tunnel is two WebSockets, so the 20,000 file-descriptor
//! limit per process is split across workers), reports the relay's resident memory before and
//! after, then sends binary messages at a fixed total rate through the tunnels (alternating
//! phone → client and client → phone) and reports one-way forwarding latency and the relay's
//! CPU use.
//!
//! ```text
//! cargo build --release --workspace --bins --examples
//! target/release/examples/relay_load --bridge target/release/bridge \
//!     [--tunnels 5000] [--procs 2] [--rate 2000] [--seconds 10] [--frame-bytes 256] [--burst 1]
//!     [--port 18090]
//! ```
//! `--burst N` sends messages in runs of N back to back on one tunnel and direction (a phone
//! sends its handshake answer, post-handshake message and update that way), which is where
//! Nagle's algorithm and delayed acknowledgements could add latency.
//! Latency is measured inside each worker (sender and receiver share a clock): the time from
//! handing a message to the sending socket until the other end of the same tunnel has read it,
//! so it includes two loopback hops and the relay. Results: `docs/benchmarks.md`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hybrid::tunnel::{RoutingId, TunnelId};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

struct Args {
    bridge: PathBuf,
    tunnels: usize,
    procs: usize,
    rate: f64,
    seconds: u64,
    frame_bytes: usize,
    burst: u64,
    port: u16,
    worker: bool,
    addr: String,
}

fn args() -> Args {
    let mut a = Args {
        bridge: PathBuf::from("target/release/bridge"),
        tunnels: 5_000,
        procs: 2,
        rate: 2_000.0,
        seconds: 10,
        frame_bytes: 256,
        burst: 1,
        port: 18_090,
        worker: false,
        addr: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--worker" {
            a.worker = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bridge" => a.bridge = value.into(),
            "--tunnels" => a.tunnels = value.parse().unwrap(),
            "--procs" => a.procs = value.parse().unwrap(),
            "--rate" => a.rate = value.parse().unwrap(),
            "--seconds" => a.seconds = value.parse().unwrap(),
            "--frame-bytes" => a.frame_bytes = value.parse().unwrap(),
            "--burst" => a.burst = value.parse::<u64>().unwrap().max(1),
            "--port" => a.port = value.parse().unwrap(),
            "--addr" => a.addr = value,
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.frame_bytes >= 8, "--frame-bytes must be at least 8");
    a
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let f = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    f(11) + f(12)
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let a = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if a.worker {
        runtime.block_on(worker(a));
    } else {
        coordinator(&runtime, a);
    }
}

fn coordinator(runtime: &tokio::runtime::Runtime, a: Args) {
    let per_proc = a.tunnels.div_ceil(a.procs);
    assert!(
        per_proc * 2 + 64 < 20_000,
        "{per_proc} tunnels per worker need {} sockets: use more --procs",
        per_proc * 2
    );
    let dir = std::env::temp_dir().join(format!("tether-relay-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let addr = format!("127.0.0.1:{}", a.port);
    let bridge = Kill(
        Command::new(&a.bridge)
            .arg("--data-dir")
            .arg(&dir)
            .arg("--listen")
            .arg(&addr)
            .env("TETHER_RELAY__MAX_TUNNELS", (a.tunnels + 100).to_string())
            .env(
                "TETHER_RELAY__NEW_TUNNELS_PER_ADDRESS_PER_MINUTE",
                "100000000",
            )
            .env("TETHER_RELAY__MAX_FRAMES_PER_TUNNEL", "100000000")
            .env("TETHER_RELAY__TUNNEL_LIFETIME_SECS", "3600")
            .env("TETHER_RELAY__IDLE_TIMEOUT_SECS", "3600")
            .env("TETHER_RELAY__PENDING_LIFETIME_SECS", "3600")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bridge binary runs (build it with --release first)"),
    );
    let pid = bridge.0.id();
    runtime.block_on(async {
        let started = Instant::now();
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "bridge did not start"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let rss_before = rss_kib(pid);
    println!("relay idle RSS: {:.1} MiB", rss_before as f64 / 1024.0);

    let exe = std::env::current_exe().unwrap();
    let mut workers: Vec<(Kill, ChildStdin, BufReader<ChildStdout>)> = Vec::new();
    let mut remaining = a.tunnels;
    let opening = Instant::now();
    for i in 0..a.procs {
        let n = remaining.min(per_proc);
        remaining -= n;
        let rate = a.rate / a.procs as f64;
        let mut child = Command::new(&exe)
            .arg("--worker")
            .args(["--addr", &addr])
            .args(["--tunnels", &n.to_string()])
            .args(["--rate", &rate.to_string()])
            .args(["--seconds", &a.seconds.to_string()])
            .args(["--frame-bytes", &a.frame_bytes.to_string()])
            .args(["--burst", &a.burst.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("worker {i}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        workers.push((Kill(child), stdin, stdout));
    }
    let mut open = 0usize;
    for (_, _, out) in &mut workers {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        open += line
            .strip_prefix("OPEN ")
            .unwrap_or_else(|| panic!("worker said {line:?}"))
            .trim()
            .parse::<usize>()
            .unwrap();
    }
    let open_secs = opening.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let rss_open = rss_kib(pid);
    let per_tunnel = (rss_open.saturating_sub(rss_before)) as f64 * 1024.0 / open as f64;
    println!(
        "opened {open} tunnels ({} WebSockets) in {open_secs:.1} s",
        open * 2
    );
    println!(
        "relay RSS with {open} tunnels open: {:.1} MiB (+{:.1} MiB, {:.1} KiB per tunnel)",
        rss_open as f64 / 1024.0,
        (rss_open - rss_before.min(rss_open)) as f64 / 1024.0,
        per_tunnel / 1024.0
    );

    let cpu_start = cpu_ticks(pid);
    let traffic = Instant::now();
    for (_, stdin, _) in &mut workers {
        stdin.write_all(b"GO\n").unwrap();
        stdin.flush().unwrap();
    }
    let mut latencies: Vec<u64> = Vec::new();
    let mut sent = 0u64;
    for (_, _, out) in &mut workers {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        sent += line
            .strip_prefix("SENT ")
            .unwrap_or_else(|| panic!("worker said {line:?}"))
            .trim()
            .parse::<u64>()
            .unwrap();
        line.clear();
        out.read_line(&mut line).unwrap();
        let samples = line
            .strip_prefix("LAT")
            .unwrap_or_else(|| panic!("worker said {line:?}"));
        latencies.extend(
            samples
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap()),
        );
    }
    let traffic_secs = traffic.elapsed().as_secs_f64();
    let cpu = cpu_ticks(pid) - cpu_start;
    let rss_traffic = rss_kib(pid);
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i] as f64 / 1000.0
    };
    println!(
        "traffic: {sent} messages of {} bytes (bursts of {}) sent at {:.0}/s target for {} s; {} received",
        a.frame_bytes,
        a.burst,
        a.rate,
        a.seconds,
        latencies.len()
    );
    println!(
        "forwarding latency (send → peer read, µs): p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!(
        "relay CPU during traffic: {:.1}% of one core ({cpu} ticks over {traffic_secs:.1} s); RSS {:.1} MiB",
        cpu as f64 / traffic_secs,
        rss_traffic as f64 / 1024.0
    );
    drop(workers);
    drop(bridge);
    let _ = std::fs::remove_dir_all(&dir);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn request(addr: &str, path: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut r = format!("ws://{addr}{path}").into_client_request().unwrap();
    r.headers_mut()
        .insert("Sec-WebSocket-Protocol", "fido.cable".parse().unwrap());
    r
}

async fn open_tunnel(addr: String) -> (Ws, Ws) {
    let tid = TunnelId::new(*uuid::Uuid::new_v4().as_bytes());
    // TCP_NODELAY on the load generator's sockets, as browsers set it.
    let (phone, response) = tokio_tungstenite::connect_async_with_config(
        request(&addr, &format!("/cable/new/{tid}")),
        None,
        true,
    )
    .await
    .expect("/cable/new");
    let rid =
        RoutingId::from_hex(response.headers()["x-cable-routing-id"].to_str().unwrap()).unwrap();
    let (client, _) = tokio_tungstenite::connect_async_with_config(
        request(&addr, &format!("/cable/connect/{rid}/{tid}")),
        None,
        true,
    )
    .await
    .expect("/cable/connect");
    (phone, client)
}

async fn worker(a: Args) {
    let base = Instant::now();
    let opened: Vec<(Ws, Ws)> = futures_util::stream::iter(0..a.tunnels)
        .map(|_| open_tunnel(a.addr.clone()))
        .buffer_unordered(32)
        .collect()
        .await;
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut sinks = Vec::with_capacity(opened.len());
    for (phone, client) in opened {
        let (phone_tx, phone_rx) = phone.split();
        let (client_tx, client_rx) = client.split();
        for mut rx in [phone_rx, client_rx] {
            let latencies = latencies.clone();
            tokio::spawn(async move {
                while let Some(Ok(msg)) = rx.next().await {
                    if let Message::Binary(b) = msg
                        && b.len() >= 8
                    {
                        let sent = u64::from_be_bytes(b[..8].try_into().unwrap());
                        let now = base.elapsed().as_nanos() as u64;
                        latencies.lock().unwrap().push(now.saturating_sub(sent));
                    }
                }
            });
        }
        sinks.push((phone_tx, client_tx));
    }
    println!("OPEN {}", sinks.len());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    tokio::task::spawn_blocking(move || {
        std::io::stdin().read_line(&mut line).unwrap();
    })
    .await
    .unwrap();

    let start = Instant::now();
    let run_for = Duration::from_secs(a.seconds);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    let mut padding = vec![0u8; a.frame_bytes];
    while start.elapsed() < run_for {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * a.rate) as u64;
        while sent < due && !sinks.is_empty() {
            let group = sent / a.burst;
            let i = (group as usize / 2) % sinks.len();
            let (phone_tx, client_tx) = &mut sinks[i];
            let stamp = base.elapsed().as_nanos() as u64;
            padding[..8].copy_from_slice(&stamp.to_be_bytes());
            let msg = Message::binary(padding.clone());
            if group.is_multiple_of(2) {
                phone_tx.send(msg).await.unwrap();
            } else {
                client_tx.send(msg).await.unwrap();
            }
            sent += 1;
        }
    }
    // Let the last messages arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let samples = std::mem::take(&mut *latencies.lock().unwrap());
    let mut out = String::with_capacity(samples.len() * 8);
    for s in samples {
        out.push(' ');
        out.push_str(&s.to_string());
    }
    println!("SENT {sent}");
    println!("LAT{out}");
    std::io::stdout().flush().unwrap();
}
