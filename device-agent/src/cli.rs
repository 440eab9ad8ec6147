//! The `device-agent` command line.
//!
//! ```text
//! device-agent pair     --bridge URL [--name N] [--model M]          [common flags]
//! device-agent sign-in  --options FILE --origin URL [--bridge URL]   [common flags]
//! device-agent register --options FILE --origin URL [--bridge URL]   [common flags]
//! device-agent inspect  url|advert|domain …
//!
//! common flags: --state DIR  --json  --audience URL  --relay DOMAIN=URL (repeatable)
//!               --danger-allow-plaintext-relay  --ca FILE  --rssi-floor DBM
//!               --ble btleplug|sim:DIR  --discovery-timeout SECS
//! ```
//!
//! Output: progress for a person on stderr (a spinner with the time left when stderr is a
//! terminal, and lines such as "phone found nearby", "tunnel open", "passkey used"); with
//! `--json`, one JSON object per line on stderr instead (`{"event":"requested",…}`). Only the
//! result goes to stdout: the response JSON for `sign-in` and `register`, the device id (or
//! `{"deviceId":…}` with `--json`) for `pair`. A failure ends with exactly one line
//! `error: <reason>` on stderr (with `--json` preceded by an `{"event":"error",…}` line) and the
//! exit status below.
//!
//! | exit | meaning |
//! |-----:|---------|
//! | 0 | success |
//! | 1 | `inspect`: invalid input; otherwise the output could not be written |
//! | 2 | usage or configuration error (bad flags, bridge URL, CA file, relay mapping) |
//! | 3 | invalid WebAuthn options, origin or options file |
//! | 4 | not paired (run `device-agent pair`) |
//! | 5 | denied on the phone |
//! | 6 | expired (not approved in time, or the pairing code expired) |
//! | 7 | no companion app can receive the request |
//! | 8 | phone not found nearby |
//! | 9 | tunnel failed |
//! | 10 | authenticator error (the CTAP status is in the message) |
//! | 11 | bridge unreachable |
//! | 12 | bridge refused the request |
//! | 13 | device state (identity file) unusable |
//! | 14 | Bluetooth unavailable |
//! | 15 | the phone's answer is invalid (protocol error) |
//! | 130 | interrupted (Ctrl-C); the request is cancelled at the bridge |

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::json;
use tether_ble::{AdvertSource, ScanConfig};

use crate::bridge_client::{BridgeConfig, Clock, DeliveryStatus, SystemClock};
use crate::device_key::DeviceIdentity;
use crate::flow::{self, AgentConfig, AgentError, Progress};
use crate::inspect::{self, InspectError};
use crate::tunnel::TunnelConfig;
use crate::webauthn::MAX_OPTIONS_LEN;

/// Exit status after Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit status when the result could not be written.
pub const EXIT_OUTPUT: u8 = 1;
/// How long the bridge may take to acknowledge a cancellation after Ctrl-C.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(3);

const EXIT_CODES: &str = "\
Exit status: 0 success, 1 inspect: invalid input, 2 usage or configuration error, \
3 invalid options, 4 not paired, 5 denied on the phone, 6 expired, 7 no companion app, \
8 phone not found nearby, 9 tunnel failed, 10 authenticator error, 11 bridge unreachable, \
12 bridge refused, 13 device state unusable, 14 Bluetooth unavailable, 15 invalid answer from \
the phone, 130 interrupted.";

/// Tether device agent: passkey sign-in for devices without a screen.
#[derive(Debug, Parser)]
#[command(name = "device-agent", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode hybrid-transport data exactly as the agent does (interop debugging).
    #[command(subcommand)]
    Inspect(Inspect),
    /// Pair this device with a bridge: prints a code to confirm in the companion app.
    Pair(PairArgs),
    /// Sign in with the passkey on your phone; prints AuthenticationResponseJSON.
    SignIn(CeremonyArgs),
    /// Register a passkey on your phone; prints RegistrationResponseJSON.
    Register(CeremonyArgs),
}

/// `pair` arguments.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// The bridge's base URL, e.g. <https://bridge.example.com>.
    #[arg(long, value_name = "URL")]
    pub bridge: String,
    /// The device's name as the companion app shows it (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The device's model as the companion app shows it.
    #[arg(long, value_name = "MODEL", default_value = "Tether device agent")]
    pub model: String,
    /// Flags shared by all commands.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `sign-in` and `register` arguments.
#[derive(Debug, Args)]
pub struct CeremonyArgs {
    /// A file with PublicKeyCredentialRequestOptionsJSON (sign-in) or
    /// PublicKeyCredentialCreationOptionsJSON (register), as the relying party sent it.
    #[arg(long, value_name = "FILE")]
    pub options: PathBuf,
    /// The web origin the user signs in to, e.g. <https://example.com>.
    #[arg(long, value_name = "URL")]
    pub origin: String,
    /// The bridge's base URL (default: the one the device was paired with).
    #[arg(long, value_name = "URL")]
    pub bridge: Option<String>,
    /// Flags shared by all commands.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags shared by `pair`, `sign-in` and `register`.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The agent's state directory (device key and pairing) [default: $XDG_STATE_HOME/tether
    /// or ~/.local/state/tether].
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// Progress as JSON lines on stderr (the result on stdout is JSON anyway).
    #[arg(long)]
    pub json: bool,
    /// The bridge's public URL (the device tokens' audience) when it differs from the URL the
    /// agent connects to, e.g. behind a proxy. `pair` stores it.
    #[arg(long, value_name = "URL")]
    pub audience: Option<String>,
    /// Reach tunnel domain DOMAIN at base URL URL (wss://…, or ws://… with
    /// --danger-allow-plaintext-relay). Repeatable.
    #[arg(long = "relay", value_name = "DOMAIN=URL", value_parser = parse_relay)]
    pub relay: Vec<(String, String)>,
    /// Allow plaintext ws:// relay URLs (local tests and demos only).
    #[arg(long)]
    pub danger_allow_plaintext_relay: bool,
    /// Extra trusted CA certificates (PEM) for the bridge and the relay.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Ignore phones heard weaker than this, in dBm (default -90).
    #[arg(long, value_name = "DBM", allow_negative_numbers = true)]
    pub rssi_floor: Option<i16>,
    /// Where adverts come from: the host's Bluetooth (btleplug) or a simulated medium shared
    /// through a directory (sim:DIR).
    #[arg(long, value_name = "btleplug|sim:DIR", default_value = "btleplug", value_parser = parse_ble)]
    pub ble: BleChoice,
    /// Stop looking for the phone this many seconds after the request (default: when the
    /// request expires).
    #[arg(long, value_name = "SECS")]
    pub discovery_timeout: Option<u64>,
}

/// Where adverts come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BleChoice {
    /// The host's Bluetooth adapter.
    Btleplug,
    /// The simulated medium in this directory.
    Sim(PathBuf),
}

fn parse_ble(text: &str) -> Result<BleChoice, String> {
    match text {
        "btleplug" => Ok(BleChoice::Btleplug),
        _ => match text.strip_prefix("sim:") {
            Some(dir) if !dir.is_empty() => Ok(BleChoice::Sim(PathBuf::from(dir))),
            _ => Err("expected `btleplug` or `sim:DIR`".into()),
        },
    }
}

fn parse_relay(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((domain, url)) if !domain.is_empty() && !url.is_empty() => {
            Ok((domain.to_ascii_lowercase(), url.to_owned()))
        }
        _ => Err("expected DOMAIN=URL, e.g. cable.example.com=wss://relay.example.com".into()),
    }
}

/// `inspect` subcommands.
#[derive(Debug, Subcommand)]
pub enum Inspect {
    /// Decode a FIDO:/ URL (what a QR code or a Tether push carries).
    Url {
        /// The URL, starting with FIDO:/ (any case).
        url: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Trial-decrypt a phone's BLE advert (service data under 0xFFF9 or 0xFDE2).
    Advert {
        /// The session's QR secret, 32 hex digits.
        #[arg(long = "qr-secret", value_name = "HEX")]
        qr_secret: String,
        /// The advert's service data, hex (20 bytes; longer adverts use the first 20).
        advert: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Name the tunnel server of a 16-bit domain id.
    Domain {
        /// The id, 0 to 65535.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command, writing results to `out` and progress and the one-line error to
/// `err`, without a spinner. See [`run_with`].
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    run_with(cli, out, err, false)
}

/// Runs a parsed command. `terminal`: `err` is an interactive terminal, so a spinner may be
/// drawn on the process's stderr (pass `false` unless `err` is that stderr).
pub fn run_with(cli: Cli, out: &mut dyn Write, err: &mut dyn Write, terminal: bool) -> ExitCode {
    match cli.command {
        Command::Inspect(command) => run_inspect(command, out, err),
        Command::Pair(args) => {
            let json = args.common.json;
            let mut ui = Ui::new(err, json, terminal);
            let result = pair(args, &mut ui);
            finish(result, out, &mut ui, |id| {
                if json {
                    json!({ "deviceId": id }).to_string()
                } else {
                    id
                }
            })
        }
        Command::SignIn(args) => {
            let mut ui = Ui::new(err, args.common.json, terminal);
            let result = ceremony(Kind::SignIn, args, &mut ui);
            finish(result, out, &mut ui, |v| v.to_string())
        }
        Command::Register(args) => {
            let mut ui = Ui::new(err, args.common.json, terminal);
            let result = ceremony(Kind::Registration, args, &mut ui);
            finish(result, out, &mut ui, |v| v.to_string())
        }
    }
}

fn run_inspect(command: Inspect, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let result = match command {
        Inspect::Url { url, json } => inspect::url(&url).map(|r| render(&r, json, r.to_text())),
        Inspect::Advert {
            qr_secret,
            advert,
            json,
        } => inspect::advert(&qr_secret, &advert).map(|r| render(&r, json, r.to_text())),
        Inspect::Domain { id, json } => inspect::domain(&id).map(|r| render(&r, json, r.to_text())),
    };
    match result {
        Ok(text) => match out.write_all(text.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
        Err(e) => {
            let _ = writeln!(err, "error: {}", one_line_inspect(&e));
            ExitCode::FAILURE
        }
    }
}

fn render<T: Serialize>(report: &T, json: bool, text: String) -> String {
    if json {
        // Serializing these plain structs cannot fail.
        let mut s = serde_json::to_string_pretty(report).unwrap_or_default();
        s.push('\n');
        s
    } else {
        text
    }
}

fn one_line_inspect(e: &InspectError) -> String {
    one_line(&e.to_string())
}

/// `text` on one line: control characters (newlines included) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Why a command failed.
#[derive(Debug)]
enum Failure {
    /// The flow failed.
    Agent(AgentError),
    /// The user pressed Ctrl-C.
    Interrupted,
}

impl From<AgentError> for Failure {
    fn from(e: AgentError) -> Self {
        Self::Agent(e)
    }
}

/// Prints the result or the error and gives the exit status.
fn finish<T>(
    result: Result<T, Failure>,
    out: &mut dyn Write,
    ui: &mut Ui<'_>,
    text: impl FnOnce(T) -> String,
) -> ExitCode {
    ui.clear();
    match result {
        Ok(value) => {
            let mut line = text(value);
            line.push('\n');
            match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    ui.error_line(&format!("cannot write the result: {e}"));
                    ExitCode::from(EXIT_OUTPUT)
                }
            }
        }
        Err(Failure::Agent(error)) => {
            ui.json_line(&json!({
                "event": "error",
                "error": error.kind(),
                "exitCode": error.exit_code(),
                "message": one_line(&error.to_string()),
            }));
            ui.error_line(&error.to_string());
            ExitCode::from(error.exit_code())
        }
        Err(Failure::Interrupted) => {
            ui.json_line(&json!({
                "event": "error",
                "error": "interrupted",
                "exitCode": EXIT_INTERRUPTED,
                "message": "interrupted",
            }));
            ui.error_line("interrupted");
            ExitCode::from(EXIT_INTERRUPTED)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    SignIn,
    Registration,
}

fn runtime() -> Result<tokio::runtime::Runtime, AgentError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AgentError::State(format!("cannot start the async runtime: {e}")))
}

fn pair(args: PairArgs, ui: &mut Ui<'_>) -> Result<String, Failure> {
    let config = agent_config(&args.bridge, None, &args.common)?;
    let name = args.name.unwrap_or_else(default_name);
    let rt = runtime()?;
    ui.clock = config.clock.clone();
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut report = move |p: Progress| {
            let _ = tx.send(p);
        };
        let flow = flow::pair(&config, &name, &args.model, &mut report);
        follow(flow, &mut rx, ui, None).await
    })
}

fn ceremony(kind: Kind, args: CeremonyArgs, ui: &mut Ui<'_>) -> Result<serde_json::Value, Failure> {
    let state_dir = state_dir(&args.common)?;
    // The bridge: as given, or the one the device is paired with.
    let (bridge_url, audience) = match args.bridge.clone() {
        Some(url) => (url, None),
        None => {
            let identity = DeviceIdentity::load(&state_dir)
                .map_err(|e| AgentError::State(e.to_string()))?
                .ok_or(AgentError::NotPaired)?;
            let paired = identity.paired.ok_or(AgentError::NotPaired)?;
            (paired.bridge_url, paired.audience)
        }
    };
    let options = read_options(&args.options)?;
    // Check the options before touching the radio or the network.
    match kind {
        Kind::SignIn => flow::check_sign_in(&options, &args.origin)?,
        Kind::Registration => flow::check_registration(&options, &args.origin)?,
    }
    let mut config = agent_config(&bridge_url, Some(state_dir), &args.common)?;
    if config.bridge.audience.is_none() {
        config.bridge.audience = audience;
    }
    ui.clock = config.clock.clone();
    let rt = runtime()?;
    rt.block_on(async {
        let mut ble = open_ble(&args.common.ble, config.scan).await?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut report = move |p: Progress| {
            let _ = tx.send(p);
        };
        let origin = args.origin.as_str();
        match kind {
            Kind::SignIn => {
                let flow = flow::sign_in(&config, &options, origin, ble.as_mut(), &mut report);
                follow(flow, &mut rx, ui, Some(&config)).await
            }
            Kind::Registration => {
                let flow = flow::register(&config, &options, origin, ble.as_mut(), &mut report);
                follow(flow, &mut rx, ui, Some(&config)).await
            }
        }
    })
}

/// Runs `flow` while rendering its progress, a once-a-second spinner update and Ctrl-C (which
/// cancels the delivery at the bridge when `cancel_with` is given and one was requested).
async fn follow<T>(
    flow: impl Future<Output = Result<T, AgentError>>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Progress>,
    ui: &mut Ui<'_>,
    cancel_with: Option<&AgentConfig>,
) -> Result<T, Failure> {
    tokio::pin!(flow);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut interrupt_armed = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut delivery = None;
    loop {
        tokio::select! {
            biased;
            Some(event) = rx.recv() => {
                if let Progress::Requested { delivery_id, .. } = &event {
                    delivery = Some(delivery_id.clone());
                }
                ui.progress(&event);
            }
            result = &mut flow => {
                while let Ok(event) = rx.try_recv() {
                    ui.progress(&event);
                }
                return result.map_err(Failure::Agent);
            }
            signal = &mut interrupted, if interrupt_armed => {
                interrupt_armed = false;
                if signal.is_err() {
                    // No signal handling here: run without it.
                    continue;
                }
                if let (Some(config), Some(id)) = (cancel_with, delivery.as_deref()) {
                    let _ = tokio::time::timeout(CANCEL_TIMEOUT, flow::cancel(config, id)).await;
                }
                return Err(Failure::Interrupted);
            }
            _ = tick.tick() => ui.tick(),
        }
    }
}

async fn open_ble(
    choice: &BleChoice,
    scan: ScanConfig,
) -> Result<Box<dyn AdvertSource>, AgentError> {
    let ble = |e: tether_ble::BleError| AgentError::Ble(e.to_string());
    match choice {
        BleChoice::Btleplug => Ok(Box::new(
            tether_ble::btle::BtleScanner::new(scan)
                .await
                .map_err(ble)?,
        )),
        BleChoice::Sim(dir) => {
            let medium = tether_ble::sim::SimMedium::at_dir(dir).map_err(ble)?;
            Ok(Box::new(medium.scanner(scan).map_err(ble)?))
        }
    }
}

fn read_options(path: &Path) -> Result<String, AgentError> {
    let invalid = |e: std::io::Error| {
        AgentError::InvalidOptions(format!("cannot read {}: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(invalid)?;
    let mut text = String::new();
    let limit = u64::try_from(MAX_OPTIONS_LEN).unwrap_or(u64::MAX);
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(invalid)?;
    if text.len() > MAX_OPTIONS_LEN {
        return Err(AgentError::InvalidOptions(format!(
            "{} is larger than {MAX_OPTIONS_LEN} bytes",
            path.display()
        )));
    }
    Ok(text)
}

/// The flows' configuration from the flags.
fn agent_config(
    bridge_url: &str,
    state_dir: Option<PathBuf>,
    common: &CommonArgs,
) -> Result<AgentConfig, AgentError> {
    let state_dir = match state_dir {
        Some(dir) => dir,
        None => self::state_dir(common)?,
    };
    let ca = match &common.ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            AgentError::Config(format!("cannot read the CA file {}: {e}", path.display()))
        })?),
        None => None,
    };
    let mut bridge = BridgeConfig::new(bridge_url);
    bridge.extra_ca_pem.clone_from(&ca);
    bridge.audience.clone_from(&common.audience);
    // Fail on a bad URL now rather than after the first request.
    let probe =
        crate::device_key::DeviceKey::generate().map_err(|e| AgentError::State(e.to_string()))?;
    crate::bridge_client::BridgeClient::new(bridge.clone(), &probe)?;

    let mut tunnel = TunnelConfig {
        danger_allow_plaintext: common.danger_allow_plaintext_relay,
        extra_ca_pem: match ca {
            Some(pem) => Some(
                String::from_utf8(pem)
                    .map_err(|_| AgentError::Config("the CA file is not PEM text".into()))?,
            ),
            None => None,
        },
        ..TunnelConfig::default()
    };
    for (domain, url) in &common.relay {
        tunnel.domains.insert(domain.clone(), url.clone());
    }
    for domain in tunnel.domains.keys() {
        tunnel
            .base_url(domain)
            .map_err(|e| AgentError::Config(format!("--relay {domain}: {e}")))?;
    }
    let mut scan = ScanConfig::default();
    if let Some(floor) = common.rssi_floor {
        scan.rssi_floor = Some(floor);
    }
    let mut config = AgentConfig::new(bridge, state_dir);
    config.tunnel = tunnel;
    config.scan = scan;
    config.discovery_timeout = common.discovery_timeout.map(Duration::from_secs);
    Ok(config)
}

/// `--state`, or `$XDG_STATE_HOME/tether`, or `~/.local/state/tether`.
fn state_dir(common: &CommonArgs) -> Result<PathBuf, AgentError> {
    if let Some(dir) = &common.state {
        return Ok(dir.clone());
    }
    default_state_dir().ok_or_else(|| {
        AgentError::Config("no --state given and neither XDG_STATE_HOME nor HOME is set".into())
    })
}

/// The default state directory: `$XDG_STATE_HOME/tether` (when set to an absolute path), else
/// `$HOME/.local/state/tether`.
pub fn default_state_dir() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("XDG_STATE_HOME")
        .map(|dir| dir.join("tether"))
        .or_else(|| absolute("HOME").map(|home| home.join(".local/state/tether")))
}

/// The host name, or a generic device name.
fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "Tether device".to_owned())
}

fn status_name(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Queued => "QUEUED",
        DeliveryStatus::Sent => "SENT",
        DeliveryStatus::Claimed => "CLAIMED",
        DeliveryStatus::Completed => "COMPLETED",
        DeliveryStatus::Denied => "DENIED",
        DeliveryStatus::Expired => "EXPIRED",
        DeliveryStatus::Failed => "FAILED",
        DeliveryStatus::Unknown => "UNKNOWN",
    }
}

/// A progress event as a `--json` line.
fn progress_json(event: &Progress) -> serde_json::Value {
    match event {
        Progress::Pairing { code, expires_at } => {
            json!({"event": "pairing", "code": code, "expiresAt": expires_at})
        }
        Progress::Paired { device_id } => json!({"event": "paired", "deviceId": device_id}),
        Progress::Requested {
            delivery_id,
            number_code,
            expires_at_unix,
        } => json!({
            "event": "requested",
            "deliveryId": delivery_id,
            "numberCode": number_code,
            "expiresAt": expires_at_unix,
        }),
        Progress::Status(status) => json!({"event": "status", "status": status_name(*status)}),
        Progress::Scanning => json!({"event": "scanning"}),
        Progress::PhoneFound { rssi } => json!({"event": "phoneFound", "rssi": rssi}),
        Progress::TunnelOpen => json!({"event": "tunnelOpen"}),
        Progress::HandshakeDone => json!({"event": "handshakeDone"}),
        Progress::PasskeyUsed => json!({"event": "passkeyUsed"}),
    }
}

/// What the person (or program) watching sees on stderr.
struct Ui<'a> {
    err: &'a mut dyn Write,
    json: bool,
    spinner: Option<ProgressBar>,
    terminal: bool,
    /// What the spinner says, before the time left.
    waiting: String,
    /// When the request expires (Unix seconds, bridge time).
    expires_at_unix: Option<i64>,
    clock: Arc<dyn Clock>,
}

impl<'a> Ui<'a> {
    fn new(err: &'a mut dyn Write, json: bool, terminal: bool) -> Self {
        Self {
            err,
            json,
            spinner: None,
            terminal: terminal && !json,
            waiting: String::new(),
            expires_at_unix: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// A line for a person (not in `--json` mode).
    fn line(&mut self, text: &str) {
        if self.json {
            return;
        }
        let err = &mut *self.err;
        match &self.spinner {
            Some(spinner) => spinner.suspend(|| {
                let _ = writeln!(err, "{text}");
            }),
            None => {
                let _ = writeln!(err, "{text}");
            }
        }
    }

    fn json_line(&mut self, value: &serde_json::Value) {
        if self.json {
            let _ = writeln!(self.err, "{value}");
        }
    }

    fn error_line(&mut self, text: &str) {
        let _ = writeln!(self.err, "error: {}", one_line(text));
        let _ = self.err.flush();
    }

    /// Sets what the spinner says (only on a terminal).
    fn wait(&mut self, text: &str) {
        self.waiting = text.to_owned();
        if !self.terminal {
            return;
        }
        if self.spinner.is_none() {
            let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                spinner.set_style(style);
            }
            spinner.enable_steady_tick(Duration::from_millis(100));
            self.spinner = Some(spinner);
        }
        self.tick();
    }

    /// Refreshes the time left.
    fn tick(&mut self) {
        let Some(spinner) = &self.spinner else {
            return;
        };
        let message = match self.expires_at_unix {
            Some(expires) => {
                let left = (expires - self.clock.now_unix_secs()).max(0);
                format!("{} ({}:{:02} left)", self.waiting, left / 60, left % 60)
            }
            None => self.waiting.clone(),
        };
        spinner.set_message(message);
    }

    fn clear(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }

    fn progress(&mut self, event: &Progress) {
        if self.json {
            let line = progress_json(event);
            let _ = writeln!(self.err, "{line}");
            let _ = self.err.flush();
            return;
        }
        match event {
            Progress::Pairing { code, expires_at } => {
                self.line(&format!("pairing code: {code}"));
                self.line(&format!(
                    "enter it in the Tether app on your phone (valid until {expires_at})"
                ));
                self.wait("waiting for the code to be confirmed");
            }
            Progress::Paired { device_id } => {
                self.line(&format!("paired as device {device_id}"));
            }
            Progress::Requested {
                number_code,
                expires_at_unix,
                ..
            } => {
                self.expires_at_unix = Some(*expires_at_unix);
                self.line(&format!(
                    "request sent to your phone: check that it shows the number {number_code}"
                ));
                self.wait("waiting for approval on your phone");
            }
            Progress::Status(DeliveryStatus::Claimed) => {
                self.line("approved on the phone");
                self.wait("looking for your phone nearby");
            }
            Progress::Status(_) | Progress::Scanning => {}
            Progress::PhoneFound { .. } => {
                self.line("phone found nearby");
                self.wait("connecting to your phone");
            }
            Progress::TunnelOpen => {
                self.line("tunnel open");
                self.wait("waiting for the passkey on your phone");
            }
            Progress::HandshakeDone => {}
            Progress::PasskeyUsed => {
                self.clear();
                self.line("passkey used");
            }
        }
        let _ = self.err.flush();
    }
}
