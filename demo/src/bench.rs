//! `tether-demo bench`: sequential simulated sign-ins, end-to-end latency and the agent's CPU
//! time per sign-in.
//!
//! One [`Stack`] (bridge with SQLite and the relay, simulated phone that approves at once,
//! in-process medium) serves the whole run; the device is paired and a passkey registered
//! first. Then `count` sign-ins run one after another, each a complete
//! `device_agent::flow::sign_in`: fresh options, `requestSignIn`, the development push sink's
//! hand-over to the phone, envelope check, claim, tunnel registration, advert, scan, tunnel
//! join, Noise handshake, getAssertion, `completeDelivery`. Latency is the wall time of that
//! call. The first `warmup` sign-ins (connection set-up, caches) are run but not counted.
//!
//! # How the agent's CPU time is measured
//!
//! The bridge and the phone run on this process's multi-threaded runtime; the agent runs on
//! its own OS thread with a current-thread tokio runtime, so every task it spawns (HTTP
//! connections, the subscription socket, the tunnel) runs on that one thread too. The thread's
//! CPU time is read before and after each sign-in from `/proc/thread-self/schedstat` (first
//! field: nanoseconds on a CPU, kernel and user, as the scheduler accounts them); without it,
//! `/proc/thread-self/stat` (`utime + stime`, clock ticks of 10 ms, so only the total over the
//! run is meaningful). Work the agent hands to tokio's blocking pool, if any, is not counted.
//! The whole process's CPU time per sign-in (bridge + phone + agent, from `/proc/self/stat`) is
//! reported beside it for context. No `getrusage`, no `unsafe`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use device_agent::flow::{self, Progress};
use thiserror::Error;

use crate::options;
use crate::stack::{DemoError, Stack, StackConfig};

/// The origin the benchmark's relying party runs at.
const RP_ID: &str = "bench.example";

/// Why the benchmark stopped.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Setting up or a sign-in failed.
    #[error("sign-in {index}: {error}")]
    Run {
        /// Which sign-in (0 for the set-up).
        index: usize,
        /// What failed.
        #[source]
        error: DemoError,
    },
    /// Sample options could not be made.
    #[error(transparent)]
    Options(#[from] options::OptionsError),
    /// The agent's thread or runtime could not be started.
    #[error("agent thread: {0}")]
    Thread(String),
}

/// The figures of one run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BenchReport {
    /// Sign-ins measured.
    pub count: usize,
    /// Warm-up sign-ins run first and not measured.
    pub warmup: usize,
    /// Median end-to-end latency.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Slowest.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
    /// Agent thread CPU time per sign-in (mean), if the platform reports thread CPU time.
    pub agent_cpu_mean: Option<Duration>,
    /// Agent thread CPU time per sign-in, 99th percentile (only with nanosecond accounting).
    pub agent_cpu_p99: Option<Duration>,
    /// Where the agent's CPU time came from.
    pub cpu_source: &'static str,
    /// Whole-process CPU time per measured sign-in (bridge, phone and agent).
    pub process_cpu_mean: Option<Duration>,
    /// Wall time of the measured sign-ins.
    pub elapsed: Duration,
}

impl BenchReport {
    /// The figures as text, one per line.
    pub fn to_text(&self) -> String {
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        let opt = |d: Option<Duration>| d.map_or_else(|| "unavailable".to_owned(), ms);
        format!(
            "sign-ins: {} sequential (after {} warm-up), {:.1} s, {:.0}/s\n\
             end-to-end latency: p50 {}  p90 {}  p99 {}  max {}  mean {}\n\
             agent CPU per sign-in: mean {}  p99 {}  ({})\n\
             whole process CPU per sign-in (bridge + phone + agent): {}\n",
            self.count,
            self.warmup,
            self.elapsed.as_secs_f64(),
            self.count as f64 / self.elapsed.as_secs_f64().max(1e-9),
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            ms(self.mean),
            opt(self.agent_cpu_mean),
            opt(self.agent_cpu_p99),
            self.cpu_source,
            opt(self.process_cpu_mean),
        )
    }
}

/// One measured sign-in.
struct Sample {
    latency: Duration,
    cpu: Option<Duration>,
    source: &'static str,
}

/// The calling thread's CPU time and how it was read.
fn thread_cpu() -> Option<(Duration, &'static str)> {
    if let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat")
        && let Some(ns) = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
    {
        return Some((Duration::from_nanos(ns), "/proc/thread-self/schedstat, ns"));
    }
    stat_ticks("/proc/thread-self/stat").map(|d| (d, "/proc/thread-self/stat, 10 ms ticks"))
}

/// `utime + stime` of a `/proc/.../stat` file, assuming the usual 100 ticks per second.
fn stat_ticks(path: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; fields after its closing ')' are fixed.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs the benchmark with its state in `state_dir` (a fresh directory is best).
///
/// # Errors
///
/// [`BenchError`] if set-up or any sign-in fails (the run stops at the first failure).
pub async fn run(
    state_dir: PathBuf,
    count: usize,
    warmup: usize,
) -> Result<BenchReport, BenchError> {
    let setup = |error| BenchError::Run { index: 0, error };
    let mut config = StackConfig::new(state_dir);
    // One device makes every request: lift the per-device and per-account request rates, and
    // the relay's per-address tunnel rate (everything comes from 127.0.0.1).
    let total = u32::try_from(count + warmup + 10).unwrap_or(u32::MAX);
    config.limits.deliveries_per_device_per_minute = total;
    config.limits.deliveries_per_account_per_minute = total;
    config.relay_new_tunnels_per_minute = total;
    let stack = Stack::start(config).await.map_err(setup)?;
    let origin = format!("https://{RP_ID}");
    let creation = options::registration(RP_ID, "bench")?.to_string();
    stack
        .register(&creation, &origin, &mut |_| {})
        .await
        .map_err(setup)?;

    let mut requests = Vec::with_capacity(count + warmup);
    for _ in 0..count + warmup {
        requests.push(options::sign_in(RP_ID)?.to_string());
    }
    let agent = stack.agent.clone();
    let medium = stack.medium.clone();
    let process_before = stat_ticks("/proc/self/stat");
    let worker = std::thread::Builder::new()
        .name("agent".to_owned())
        .spawn(move || -> Result<Vec<Sample>, BenchError> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| BenchError::Thread(e.to_string()))?;
            let mut samples = Vec::with_capacity(requests.len());
            for (index, request) in requests.iter().enumerate() {
                let run = |error| BenchError::Run {
                    index: index + 1,
                    error,
                };
                let mut scanner = medium
                    .scanner(agent.scan)
                    .map_err(|e| run(DemoError::Ble(e)))?;
                let cpu_before = thread_cpu();
                let started = Instant::now();
                runtime
                    .block_on(flow::sign_in(
                        &agent,
                        request,
                        &origin,
                        &mut scanner,
                        &mut |_: Progress| {},
                    ))
                    .map_err(|e| run(DemoError::Agent(e)))?;
                let latency = started.elapsed();
                let cpu = match (cpu_before, thread_cpu()) {
                    (Some((a, source)), Some((b, _))) => (Some(b.saturating_sub(a)), source),
                    _ => (None, "unavailable"),
                };
                samples.push(Sample {
                    latency,
                    cpu: cpu.0,
                    source: cpu.1,
                });
            }
            Ok(samples)
        })
        .map_err(|e| BenchError::Thread(e.to_string()))?;
    let samples = tokio::task::spawn_blocking(move || worker.join())
        .await
        .map_err(|e| BenchError::Thread(e.to_string()))?
        .map_err(|_| BenchError::Thread("the agent thread panicked".to_owned()))??;
    let process_after = stat_ticks("/proc/self/stat");
    stack.shutdown().await;

    let measured = &samples[warmup.min(samples.len())..];
    let mut latencies: Vec<Duration> = measured.iter().map(|s| s.latency).collect();
    latencies.sort();
    let total_latency: Duration = latencies.iter().sum();
    let n = u32::try_from(latencies.len().max(1)).unwrap_or(u32::MAX);
    let cpu_source = measured.first().map_or("unavailable", |s| s.source);
    let mut cpus: Vec<Duration> = measured.iter().filter_map(|s| s.cpu).collect();
    cpus.sort();
    let agent_cpu_mean = (cpus.len() == measured.len() && !cpus.is_empty())
        .then(|| cpus.iter().sum::<Duration>() / n);
    let agent_cpu_p99 =
        (agent_cpu_mean.is_some() && cpu_source.ends_with("ns")).then(|| percentile(&cpus, 99.0));
    // Process CPU covers warm-up too; spread over every sign-in run on the agent thread.
    let all = u32::try_from(samples.len().max(1)).unwrap_or(u32::MAX);
    let process_cpu_mean = match (process_before, process_after) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) / all),
        _ => None,
    };
    Ok(BenchReport {
        count: latencies.len(),
        warmup: samples.len() - latencies.len(),
        p50: percentile(&latencies, 50.0),
        p90: percentile(&latencies, 90.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
        mean: total_latency / n,
        agent_cpu_mean,
        agent_cpu_p99,
        cpu_source,
        process_cpu_mean,
        elapsed: total_latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&d, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&d, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn thread_cpu_moves_forward() {
        let Some((before, _)) = thread_cpu() else {
            return; // not Linux
        };
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let (after, _) = thread_cpu().unwrap_or((before, ""));
        assert!(after > before);
    }
}
