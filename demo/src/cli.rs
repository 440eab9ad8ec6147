//! The `tether-demo` command line (guide: `docs/demo.md`).
//!
//! * `register|sign-in --options FILE --origin URL --state DIR`: the one-process demo. Only the
//!   response JSON goes to stdout; progress (the agent's and the phone's) goes to stderr.
//! * `options register|sign-in --rp-id ID`: sample options JSON on stdout.
//! * `phone --bridge URL --account NAME --state DIR --ble sim:DIR`: the simulated phone alone,
//!   for the three-program walkthrough (bridge, phone, `device-agent`).
//! * `bench --count N`: sequential sign-ins, latency and agent CPU figures.
//!
//! Exit status: 0 on success; a device-agent failure exits with the agent's own code
//! (`device_agent::flow::AgentError::exit_code`: 5 denied, 6 expired, 8 phone not found, …);
//! 1 when the demo itself cannot run (state directory, bridge start-up); 2 for usage errors.

// stdout and stderr are this command's interface.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bridge::clock::{Clock as _, SharedClock, SystemClock};
use clap::{Parser, Subcommand};
use device_agent::flow::Progress;
use device_agent::tunnel::TunnelConfig;
use hybrid::domain::DomainId;
use tether_ble::sim::SimMedium;
use tokio::sync::broadcast;

use crate::identity::{BridgeClock, DevTokens};
use crate::phone_service::{PhoneConfig, PhoneService, Policy, ServiceEvent};
use crate::stack::{DEMO_DOMAIN, DemoError, Stack, StackConfig};
use crate::{bench, options};

/// Exit status when the demo itself cannot run.
const EXIT_SETUP: u8 = 1;

/// Tether in one process: a screenless device signs in with a passkey on a simulated phone.
#[derive(Debug, Parser)]
#[command(name = "tether-demo", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register a passkey on the simulated phone (pairs the device on first use).
    Register(CeremonyArgs),
    /// Sign in with the simulated phone's passkey (pairs the device on first use).
    SignIn(CeremonyArgs),
    /// Print sample WebAuthn options JSON.
    #[command(subcommand)]
    Options(OptionsCommand),
    /// Run the simulated phone alone (three-program walkthrough).
    Phone(PhoneArgs),
    /// Run sequential simulated sign-ins and print latency and CPU figures.
    Bench(BenchArgs),
}

/// `register` and `sign-in` arguments.
#[derive(Debug, clap::Args)]
pub struct CeremonyArgs {
    /// WebAuthn options JSON file (`PublicKeyCredentialCreationOptionsJSON` /
    /// `PublicKeyCredentialRequestOptionsJSON`); `-` reads stdin.
    #[arg(long, value_name = "FILE")]
    pub options: PathBuf,
    /// The web origin the user signs in to, e.g. https://example.com.
    #[arg(long, value_name = "URL")]
    pub origin: String,
    /// Directory for all state (bridge database and keys, device key, the phone's passkeys).
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
}

/// `options` subcommands.
#[derive(Debug, Subcommand)]
pub enum OptionsCommand {
    /// `PublicKeyCredentialCreationOptionsJSON` for a new passkey.
    Register {
        /// The relying party id.
        #[arg(long, value_name = "ID")]
        rp_id: String,
        /// The account name.
        #[arg(long, default_value = "alice")]
        user: String,
    },
    /// `PublicKeyCredentialRequestOptionsJSON` for a usernameless sign-in.
    SignIn {
        /// The relying party id.
        #[arg(long, value_name = "ID")]
        rp_id: String,
    },
}

/// `phone` arguments.
#[derive(Debug, clap::Args)]
pub struct PhoneArgs {
    /// The bridge's base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
    pub bridge: String,
    /// The account the phone is signed in to.
    #[arg(long)]
    pub account: String,
    /// Directory for the phone's passkeys and push token.
    #[arg(long, value_name = "DIR")]
    pub state: PathBuf,
    /// The simulated BLE medium shared with the device agent: `sim:DIR`.
    #[arg(long, value_name = "sim:DIR")]
    pub ble: String,
    /// The bridge's data directory, where its development issuer key is (`--data-dir` of
    /// the bridge; its default is the directory it was started in).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub bridge_data_dir: PathBuf,
    /// The bridge's `public_url` (token audience, envelope issuer); default: `--bridge`.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// The relay where tunnels are registered; default: the bridge's own (`ws://` for an
    /// `http://` bridge).
    #[arg(long, value_name = "URL")]
    pub relay: Option<String>,
    /// The tunnel domain id to advertise (the device agent maps its host name to the relay).
    #[arg(long, default_value_t = DEMO_DOMAIN.0)]
    pub domain_id: u16,
    /// What the simulated user does: approve, deny, wrong-number, ignore, unanswered.
    #[arg(long, default_value = "approve", value_parser = parse_policy)]
    pub policy: Policy,
    /// Poll pending deliveries instead of following the push subscription.
    #[arg(long)]
    pub no_pushes: bool,
    /// Signal strength of the phone's adverts, dBm.
    #[arg(long, default_value_t = -50, allow_negative_numbers = true)]
    pub rssi: i16,
}

/// `bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Sign-ins to measure.
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Sign-ins run first and not measured.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// State directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
}

fn parse_policy(text: &str) -> Result<Policy, String> {
    Policy::parse(text)
        .ok_or_else(|| "expected approve, deny, wrong-number, ignore or unanswered".to_owned())
}

/// Runs a parsed command on a new runtime; returns the exit status.
pub fn main(cli: Cli) -> u8 {
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_SETUP;
        }
    };
    runtime.block_on(run(cli))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs a parsed command; returns the exit status.
pub async fn run(cli: Cli) -> u8 {
    match cli.command {
        Command::Register(args) => ceremony(args, true).await,
        Command::SignIn(args) => ceremony(args, false).await,
        Command::Options(command) => {
            let made = match command {
                OptionsCommand::Register { rp_id, user } => options::registration(&rp_id, &user),
                OptionsCommand::SignIn { rp_id } => options::sign_in(&rp_id),
            };
            match made {
                Ok(value) => print_json(&value),
                Err(e) => fail(EXIT_SETUP, &e),
            }
        }
        Command::Phone(args) => phone(args).await,
        Command::Bench(args) => bench_command(args).await,
    }
}

fn fail(code: u8, error: &dyn std::fmt::Display) -> u8 {
    eprintln!("error: {}", error.to_string().replace('\n', " "));
    code
}

fn print_json(value: &serde_json::Value) -> u8 {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{value}").and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => fail(EXIT_SETUP, &e),
    }
}

fn read_options(path: &Path) -> std::io::Result<String> {
    if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
}

/// One line of progress for a person.
pub fn describe(progress: &Progress) -> String {
    match progress {
        Progress::Pairing { code, .. } => {
            format!("pairing: code {code}; the phone confirms it")
        }
        Progress::Paired { device_id } => format!("paired (device {device_id})"),
        Progress::Requested {
            number_code,
            expires_at_unix,
            ..
        } => {
            let left = expires_at_unix - SystemClock.now_secs();
            format!(
                "request sent to the phone; number {number_code}; {}:{:02} left to approve",
                left.max(0) / 60,
                left.max(0) % 60
            )
        }
        Progress::Status(status) => format!("delivery {status:?}"),
        Progress::Scanning => "scanning for the phone".to_owned(),
        Progress::PhoneFound { rssi: Some(rssi) } => format!("phone found nearby ({rssi} dBm)"),
        Progress::PhoneFound { rssi: None } => "phone found nearby".to_owned(),
        Progress::TunnelOpen => "tunnel open".to_owned(),
        Progress::HandshakeDone => "encrypted channel established".to_owned(),
        Progress::PasskeyUsed => "passkey used".to_owned(),
    }
}

/// Prints the phone's events on stderr until the channel closes; returns the ids of the
/// deliveries the phone is done with, as it finishes them.
fn print_phone_events(
    mut events: broadcast::Receiver<ServiceEvent>,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (done_tx, done) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ServiceEvent::Received { .. }) => {}
                Ok(event) => {
                    eprintln!("  phone: {event}");
                    if event.is_final()
                        && let Some(id) = event.delivery_id()
                    {
                        let _ = done_tx.send(id.to_owned());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    done
}

async fn ceremony(args: CeremonyArgs, register: bool) -> u8 {
    let options = match read_options(&args.options) {
        Ok(text) => text,
        Err(e) => {
            return fail(
                EXIT_SETUP,
                &format!("cannot read {}: {e}", args.options.display()),
            );
        }
    };
    let stack = match Stack::start(StackConfig::new(&args.state)).await {
        Ok(stack) => stack,
        Err(e) => return fail(EXIT_SETUP, &e),
    };
    eprintln!(
        "bridge at {} (state in {})",
        stack.bridge_url,
        args.state.display()
    );
    let mut phone_done = print_phone_events(stack.phone.events());
    let mut delivery = None;
    let mut progress = |p: Progress| {
        if let Progress::Requested { delivery_id, .. } = &p {
            delivery = Some(delivery_id.clone());
        }
        eprintln!("device: {}", describe(&p));
    };
    let result = if register {
        stack.register(&options, &args.origin, &mut progress).await
    } else {
        stack.sign_in(&options, &args.origin, &mut progress).await
    };
    // Let the phone's last line about this request reach stderr before the process ends (it
    // may still be closing the tunnel); a phone that never got the request says nothing.
    if let Some(id) = delivery {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(done) = phone_done.recv().await {
                if done == id {
                    return;
                }
            }
        })
        .await;
    }
    stack.shutdown().await;
    match result {
        Ok(json) => print_json(&json),
        Err(DemoError::Agent(e)) => fail(e.exit_code(), &e),
        Err(e) => fail(EXIT_SETUP, &e),
    }
}

async fn phone(args: PhoneArgs) -> u8 {
    let Some(dir) = args.ble.strip_prefix("sim:") else {
        return fail(
            2,
            &"--ble must be sim:DIR (the directory the device agent scans)",
        );
    };
    let medium = match SimMedium::at_dir(Path::new(dir)) {
        Ok(medium) => medium,
        Err(e) => return fail(EXIT_SETUP, &e),
    };
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| args.bridge.trim_end_matches('/').to_owned());
    let relay = args.relay.clone().unwrap_or_else(|| {
        let base = args.bridge.trim_end_matches('/');
        match base.strip_prefix("http://") {
            Some(rest) => format!("ws://{rest}"),
            None => base.replacen("https://", "wss://", 1),
        }
    });
    let clock: SharedClock = Arc::new(SystemClock);
    let key_file = bridge::config::Config {
        data_dir: args.bridge_data_dir.clone(),
        ..bridge::config::Config::default()
    }
    .dev_issuer_key_file();
    let tokens = match DevTokens::from_key_file(
        &key_file,
        args.account.clone(),
        public_url.clone(),
        Arc::clone(&clock),
    ) {
        Ok(tokens) => tokens,
        Err(e) => return fail(EXIT_SETUP, &e),
    };
    let mut config = PhoneConfig::new(
        &args.bridge,
        &args.state,
        relay.clone(),
        DomainId(args.domain_id),
    );
    config.bridge.issuer = Some(public_url);
    config.policy = args.policy;
    config.pushes = !args.no_pushes;
    config.rssi = Some(args.rssi);
    // Plaintext ws:// only when the relay is given as such (a loopback bridge without TLS).
    config.tunnel = TunnelConfig {
        danger_allow_plaintext: relay.starts_with("ws://"),
        ..TunnelConfig::default()
    };
    let service = match PhoneService::start(
        config,
        Arc::new(tokens),
        Arc::new(BridgeClock(clock)),
        Arc::new(medium),
    )
    .await
    {
        Ok(service) => service,
        Err(e) => return fail(EXIT_SETUP, &e),
    };
    let domain = DomainId(args.domain_id)
        .domain()
        .unwrap_or_else(|| "(unassigned id)".to_owned());
    eprintln!(
        "phone of account {} ready (companion {}); tunnels at {relay}, advertised as domain {} ({domain}); policy {:?}. Ctrl-C stops.",
        args.account,
        service.companion_id(),
        args.domain_id,
        args.policy,
    );
    eprintln!("type the pairing code a device shows and press Enter to confirm it");
    // The phone runs until Ctrl-C; nobody waits for individual requests.
    drop(print_phone_events(service.events()));
    let mut lines = stdin_lines();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            line = lines.recv() => match line {
                Some(line) => {
                    let code = line.trim();
                    if code.is_empty() {
                        continue;
                    }
                    match service.client().confirm_pairing(code, None).await {
                        Ok(device) => eprintln!(
                            "  phone: paired {} '{}' ({})",
                            device.model, device.name, device.id
                        ),
                        Err(e) => eprintln!("  phone: pairing code refused: {e}"),
                    }
                }
                // stdin closed (e.g. run in the background): keep serving until Ctrl-C.
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                    break;
                }
            },
        }
    }
    service.stop().await;
    0
}

/// Lines typed on stdin, read on a plain thread (the read blocks; the process ends with
/// Ctrl-C either way).
fn stdin_lines() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let _ = std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || {
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    rx
}

async fn bench_command(args: BenchArgs) -> u8 {
    let (dir, _temp) = match args.state {
        Some(dir) => (dir, None),
        None => match tempfile::tempdir() {
            Ok(temp) => (temp.path().to_path_buf(), Some(temp)),
            Err(e) => return fail(EXIT_SETUP, &e),
        },
    };
    eprintln!(
        "running {} warm-up and {} measured sign-ins (state in {})",
        args.warmup,
        args.count,
        dir.display()
    );
    match bench::run(dir, args.count, args.warmup).await {
        Ok(report) => {
            print!("{}", report.to_text());
            0
        }
        Err(bench::BenchError::Run {
            error: DemoError::Agent(e),
            index,
        }) => fail(e.exit_code(), &format!("sign-in {index}: {e}")),
        Err(e) => fail(EXIT_SETUP, &e),
    }
}
