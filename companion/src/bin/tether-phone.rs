//! `tether-phone`: the simulated phone as a program that answers any FIDO hybrid client
//! (CTAP 2.2 "caBLE v2": a browser, a headset, a hub, a desktop) through a tunnel relay.
//!
//! ```text
//! tether-phone answer --url <FIDO_URL> --relay <BASE_URL> --domain-id <N> --state <DIR>
//!     [--ca <PEM>] [--policy approve|deny|timeout] [--no-user-verification]
//!     [--sim-ble <DIR>] [--ble] [--danger-allow-plaintext] …
//! ```
//!
//! It parses the client's `FIDO:/` URL (the content of the QR code the client shows), opens
//! `<BASE_URL>/cable/new/<tunnel id>` at the relay, builds the 20-byte advert for domain id N
//! with the routing id the relay assigned, publishes it, runs the Noise responder, sends getInfo
//! and an update with linking data, answers one CTAP command with the software authenticator
//! (passkeys kept in `--state`, so a registration made by one run signs in on the next), and
//! exits. It is [`companion::phone::SimulatedPhone`] with a command line; see `docs/test-your-client.md`.
//!
//! # Output
//!
//! * stdout: exactly one line, `ADVERT <40 lower-case hex digits>`, printed (and flushed) as soon
//!   as the advert is on the medium, so that a harness can carry it to another BLE stack. The
//!   advert is ciphertext: printing it reveals nothing.
//! * stderr: progress lines starting `tether-phone:`, and on failure one last line starting
//!   `error:` with the reason. The `FIDO:/` URL and the tunnel id derived from it are secrets
//!   and are never printed.
//!
//! # The advert
//!
//! Always on the simulated BLE medium: in this process by default (nobody else hears it: use the
//! `ADVERT` line), or with `--sim-ble <DIR>` on the cross-process medium in that directory, where
//! Tether's device agent (or any program speaking its datagram format, see [`tether_ble::sim`])
//! scans. `--ble` (a real advert through BlueZ's `LEAdvertisingManager1`) is not in this build:
//! it fails with exit status 1.
//!
//! # Exit status
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | the client's command was answered with `CTAP2_OK` |
//! | 1 | local failure: the state directory, the CA file, the BLE medium, `--ble` |
//! | 2 | usage: bad or missing arguments (also a `ws://` relay that is not loopback without `--danger-allow-plaintext`, an unassigned domain id) |
//! | 3 | the `FIDO:/` URL does not parse |
//! | 4 | the relay refused the tunnel or could not be reached |
//! | 5 | no client connected in time (`--connect-timeout`, or the relay gave up waiting) |
//! | 6 | the hybrid session failed after a client connected (handshake, decryption, protocol, tunnel lost, no command) |
//! | 7 | declined: the command was answered `CTAP2_ERR_OPERATION_DENIED` (`--policy deny`) or `CTAP2_ERR_USER_ACTION_TIMEOUT` (`--policy timeout`) |
//! | 8 | the command was answered with another error status (e.g. `CTAP2_ERR_NO_CREDENTIALS`) |
//!
//! # Linking data
//!
//! Unless `--no-linking` is given or the URL says the client cannot store it (key 4 false), the
//! update after the handshake carries linking data signed with the phone's long-term identity
//! key. The identity key, link id, link secret and contact id are created on first use and kept
//! in `<state>/tether-phone-link.json` (mode 0600), so that every run is the same phone. Tether's
//! relay keeps no linked phones (`/cable/contact/…` answers 410), so a client that later tries a
//! state-assisted sign-in with this link is told to forget it.

use std::io::{BufRead as _, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use companion::authenticator::{SoftAuthenticator, SoftAuthenticatorConfig};
use companion::phone::{
    Advertiser, AnswerOptions, PhoneError, PhoneEvent, PhoneOutcome, PhonePolicy, SimulatedPhone,
};
use device_agent::tunnel::{TunnelConfig, TunnelError};
use hybrid::Secret;
use hybrid::authenticator::LinkingOffer;
use hybrid::ctap::{CtapCommand, CtapStatus};
use hybrid::domain::DomainId;
use hybrid::session::{AuthenticatorTimeouts, SessionError, Stage};
use hybrid::url::FidoUrl;
use p256::SecretKey;
use serde::{Deserialize, Serialize};
use tether_ble::ServiceUuid;
use tether_ble::sim::SimMedium;
use zeroize::Zeroizing;

/// Answers FIDO hybrid (caBLE v2) clients as a phone would, with a software authenticator.
#[derive(Debug, Parser)]
#[command(name = "tether-phone", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer the client that shows this FIDO:/ URL: one tunnel, one CTAP command.
    Answer(AnswerArgs),
}

#[derive(Debug, Args)]
struct AnswerArgs {
    /// The client's FIDO:/ URL (the QR code's content); `-` reads it from standard input.
    #[arg(
        long,
        value_name = "FIDO_URL",
        env = "TETHER_PHONE_URL",
        hide_env_values = true
    )]
    url: String,
    /// The relay's base URL, e.g. ws://127.0.0.1:8080 (the bridge's relay) or
    /// wss://relay.example.com; the tunnel is opened at <BASE_URL>/cable/new/<tunnel id>.
    #[arg(long, value_name = "BASE_URL")]
    relay: String,
    /// The tunnel domain id to advertise: the id under which the client reaches this relay
    /// (0 Google, 1 Apple, or a hashed id 256–65535 whose host name the client maps to it).
    #[arg(long = "domain-id", value_name = "N")]
    domain_id: u16,
    /// Directory of the phone's passkeys and linking identity (created if missing).
    #[arg(long, value_name = "DIR")]
    state: PathBuf,
    /// Extra trusted CA certificate(s) for a wss:// relay, PEM file.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// What the person holding the phone does with the request.
    #[arg(long, value_enum, default_value_t = Policy::Approve)]
    policy: Policy,
    /// Approve without user verification: getInfo does not offer uv and the UV flag is clear.
    #[arg(long)]
    no_user_verification: bool,
    /// With --policy timeout: how long the prompt stays unanswered before the phone answers
    /// CTAP2_ERR_USER_ACTION_TIMEOUT (e.g. 500ms, 10s, 1m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    prompt_timeout: Duration,
    /// How long to advertise and wait for the client to connect (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// The 16-bit service UUID to advertise under.
    #[arg(long, value_enum, default_value_t = Service::Fff9)]
    service: Service,
    /// Send no linking data (the update after the handshake is sent anyway, padded).
    #[arg(long)]
    no_linking: bool,
    /// The phone's name in the linking data.
    #[arg(long, value_name = "NAME", default_value = "Tether phone")]
    name: String,
    /// Advertise on the cross-process simulated BLE medium in DIR (where a device agent run
    /// with the same directory scans) instead of one inside this process.
    #[arg(long, value_name = "DIR", conflicts_with = "ble")]
    sim_ble: Option<PathBuf>,
    /// Advertise on the host's Bluetooth adapter through BlueZ (not supported in this build).
    #[arg(long)]
    ble: bool,
    /// Allow a ws:// relay that is not on a loopback address. The relay and anyone on the path
    /// then see which tunnel ids are in use (message contents stay encrypted).
    #[arg(long)]
    danger_allow_plaintext: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Policy {
    /// Approve (with user verification unless --no-user-verification).
    Approve,
    /// Refuse: CTAP2_ERR_OPERATION_DENIED (0x27).
    Deny,
    /// Nobody answers: CTAP2_ERR_USER_ACTION_TIMEOUT (0x2F) after --prompt-timeout.
    Timeout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Service {
    /// 0xFFF9, the FIDO Alliance's UUID (current phones).
    Fff9,
    /// 0xFDE2, Google's UUID (older Android phones).
    Fde2,
}

/// The exit statuses (see the crate docs' table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Local = 1,
    Usage = 2,
    BadUrl = 3,
    Relay = 4,
    NoClient = 5,
    Session = 6,
    Declined = 7,
    ErrorStatus = 8,
}

/// Why the run failed: the exit status and the one-line reason.
#[derive(Debug)]
struct Failure {
    exit: Exit,
    message: String,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let Cli {
        command: Command::Answer(args),
    } = Cli::parse();
    match answer(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            let line = failure.message.replace(['\n', '\r'], " ");
            let _ = writeln!(std::io::stderr().lock(), "error: {line}");
            ExitCode::from(failure.exit as u8)
        }
    }
}

/// Notes progress on stderr.
fn note(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "tether-phone: {message}");
}

fn answer(args: AnswerArgs) -> Result<(), Failure> {
    // Usage first, then what this build can do, then the URL, then local state.
    let domain_id = DomainId(args.domain_id);
    if !domain_id.is_known() {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "--domain-id {domain_id} is unassigned: use 0 (Google), 1 (Apple) or a hashed id \
                 from 256 to 65535"
            ),
        ));
    }
    let (relay, mut tunnel) = relay_config(&args.relay, args.danger_allow_plaintext)?;
    if args.ble {
        return Err(Failure::new(
            Exit::Local,
            "--ble (advertising through BlueZ's LEAdvertisingManager1) is not supported in this \
             build; use the ADVERT line or --sim-ble",
        ));
    }
    let url = read_url(&args.url)?;
    if let Some(path) = &args.ca {
        let pem = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                Exit::Local,
                format!("cannot read the CA file {}: {e}", path.display()),
            )
        })?;
        tunnel.extra_ca_pem = Some(pem);
    }
    let known = url.tunnel_server_domains.unwrap_or(0);
    if domain_id.0 < 256 && u64::from(domain_id.0) >= known {
        note(&format!(
            "warning: the client's URL says it knows {known} assigned tunnel domain(s); it may \
             not understand domain id {domain_id}"
        ));
    }

    let authenticator = SoftAuthenticator::open(&args.state, SoftAuthenticatorConfig::default())
        .map_err(|e| {
            Failure::new(
                Exit::Local,
                format!(
                    "cannot open the passkey store in {}: {e}",
                    args.state.display()
                ),
            )
        })?;
    let client_takes_links = url.state_assisted != Some(false);
    let linking = if args.no_linking || !client_takes_links {
        None
    } else {
        Some(load_or_create_link(&args.state, &args.name)?)
    };
    let (advertiser, medium): (Arc<dyn Advertiser>, String) = match &args.sim_ble {
        Some(dir) => (
            Arc::new(SimMedium::at_dir(dir).map_err(|e| {
                Failure::new(
                    Exit::Local,
                    format!(
                        "cannot use the simulated BLE medium in {}: {e}",
                        dir.display()
                    ),
                )
            })?),
            format!("the simulated BLE medium in {}", dir.display()),
        ),
        None => (
            Arc::new(SimMedium::in_process()),
            "the in-process simulated BLE medium".to_owned(),
        ),
    };

    let policy = match args.policy {
        Policy::Approve => PhonePolicy::Approve {
            user_verification: !args.no_user_verification,
        },
        Policy::Deny => PhonePolicy::Deny,
        Policy::Timeout => PhonePolicy::Timeout {
            after: args.prompt_timeout,
        },
    };
    let service = match args.service {
        Service::Fff9 => ServiceUuid::Fido,
        Service::Fde2 => ServiceUuid::Google,
    };
    let mut options = AnswerOptions::new(relay.clone(), domain_id);
    options.policy = policy;
    options.service = service;
    options.linking = linking;
    options.timeouts = AuthenticatorTimeouts {
        connect: args.connect_timeout,
        ..AuthenticatorTimeouts::default()
    };
    let phone = SimulatedPhone::new(authenticator, advertiser, tunnel);

    note(&format!(
        "answering a {} request: opening a tunnel at {relay}",
        url.request_type
    ));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Exit::Local, format!("cannot start the runtime: {e}")))?;
    let mut reporter = Reporter {
        medium,
        service,
        handshake_done: false,
    };
    let result = runtime.block_on(phone.answer(&url, options, &mut |e| reporter.on_event(e)));
    let handshake_done = reporter.handshake_done;
    let store_error = phone.authenticator().store_mut().take_last_error();
    match result {
        Ok(PhoneOutcome::Answered { command, status }) => {
            outcome(command, status, args.policy, store_error)
        }
        Ok(_) => Err(Failure::new(
            Exit::Local,
            "internal error: nothing was answered",
        )),
        Err(e) => Err(classify(e, handshake_done, args.connect_timeout)),
    }
}

/// Prints the phone's progress: the `ADVERT` line on stdout, the rest on stderr.
struct Reporter {
    medium: String,
    service: ServiceUuid,
    handshake_done: bool,
}

impl Reporter {
    fn on_event(&mut self, event: PhoneEvent) {
        match event {
            PhoneEvent::TunnelRegistered { routing_id } => {
                note(&format!("tunnel registered (routing id {routing_id})"));
            }
            PhoneEvent::Advertising { advert } => {
                let mut out = std::io::stdout().lock();
                // A closed stdout only loses the copy: the advert is on the medium.
                let _ = writeln!(out, "ADVERT {}", hex::encode(advert));
                let _ = out.flush();
                note(&format!(
                    "advertising under 0x{:04X} on {}; waiting for the client",
                    self.service.uuid16(),
                    self.medium
                ));
            }
            PhoneEvent::HandshakeComplete => {
                self.handshake_done = true;
                note("client connected: handshake complete, getInfo and update sent");
            }
            PhoneEvent::RequestHandled { command, status } => {
                note(&format!("{command} answered {status}"));
            }
            _ => {}
        }
    }
}

/// The exit for an answered command.
fn outcome(
    command: CtapCommand,
    status: CtapStatus,
    policy: Policy,
    store_error: Option<companion::store::StoreError>,
) -> Result<(), Failure> {
    if status.is_ok() {
        note("done");
        return Ok(());
    }
    if let Some(e) = store_error {
        return Err(Failure::new(
            Exit::Local,
            format!("{command} answered {status}: the passkey store failed: {e}"),
        ));
    }
    match (policy, status) {
        (Policy::Deny, CtapStatus::OperationDenied) => Err(Failure::new(
            Exit::Declined,
            format!("declined: {command} answered {status} (--policy deny)"),
        )),
        (Policy::Timeout, CtapStatus::UserActionTimeout) => Err(Failure::new(
            Exit::Declined,
            format!(
                "declined: nobody answered the prompt; {command} answered {status} (--policy timeout)"
            ),
        )),
        _ => Err(Failure::new(
            Exit::ErrorStatus,
            format!("{command} answered with an error status: {status}"),
        )),
    }
}

/// The exit for a phone error.
fn classify(error: PhoneError, handshake_done: bool, connect_timeout: Duration) -> Failure {
    let message = error.to_string();
    let exit = match &error {
        PhoneError::UnknownDomain(_)
        | PhoneError::Register(TunnelError::BadUrl(_) | TunnelError::PlaintextRefused) => {
            Exit::Usage
        }
        PhoneError::Register(TunnelError::TlsConfig(_)) | PhoneError::Advertise(_) => Exit::Local,
        PhoneError::Register(_) | PhoneError::RegisterTimeout(_) | PhoneError::NoRoutingId => {
            Exit::Relay
        }
        PhoneError::Session(SessionError::Timeout(Stage::Connect)) => {
            return Failure::new(
                Exit::NoClient,
                format!(
                    "no client connected within {} (--connect-timeout)",
                    humanize(connect_timeout)
                ),
            );
        }
        // The relay's pending-tunnel lifetime (or the bridge stopping) ended the wait.
        PhoneError::Tunnel(TunnelError::ClosedByRelay { code: 1001, .. }) if !handshake_done => {
            return Failure::new(Exit::NoClient, format!("no client connected: {message}"));
        }
        PhoneError::Tunnel(_) | PhoneError::Session(_) | PhoneError::NoCommand => Exit::Session,
        _ => Exit::Local,
    };
    Failure::new(exit, message)
}

/// Checks the relay's base URL: `wss://`, or `ws://` on a loopback address (or anywhere with
/// `--danger-allow-plaintext`); no query, fragment or credentials.
fn relay_config(relay: &str, allow_plaintext: bool) -> Result<(String, TunnelConfig), Failure> {
    let usage = |why: &str| Failure::new(Exit::Usage, format!("--relay {relay}: {why}"));
    let url = url::Url::parse(relay).map_err(|e| usage(&e.to_string()))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => return Err(usage("the URL has no host")),
    };
    match url.scheme() {
        "wss" => {}
        "ws" if loopback || allow_plaintext => {}
        "ws" => {
            return Err(usage(
                "plaintext ws:// is only allowed for a loopback address (127.0.0.1, ::1, \
                 localhost) or with --danger-allow-plaintext",
            ));
        }
        other => {
            return Err(usage(&format!(
                "scheme {other:?}: a relay is reached with wss:// (or ws://)"
            )));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage("a base URL has no query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(usage("a base URL carries no credentials"));
    }
    let tunnel = TunnelConfig {
        danger_allow_plaintext: url.scheme() == "ws",
        ..TunnelConfig::default()
    };
    Ok((url.as_str().trim_end_matches('/').to_owned(), tunnel))
}

/// Reads the `FIDO:/` URL from the argument, or from standard input for `-`.
fn read_url(arg: &str) -> Result<FidoUrl, Failure> {
    let text = if arg == "-" {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).map_err(|e| {
            Failure::new(Exit::Local, format!("cannot read the URL from stdin: {e}"))
        })?;
        line
    } else {
        Zeroizing::new(arg.to_owned())
    };
    // The URL is a secret: the error names the failed check, never the text.
    FidoUrl::parse(text.trim())
        .map_err(|e| Failure::new(Exit::BadUrl, format!("the FIDO URL is invalid: {e}")))
}

/// Parses `500ms`, `10s`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit_ms) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000)
    } else {
        (text, 1_000)
    };
    let n: u64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 10s, 2m)"))?;
    n.checked_mul(unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Name of the linking identity file inside the state directory.
const LINK_FILE: &str = "tether-phone-link.json";

/// The phone's long-term linking identity, as stored (hex fields).
#[derive(Serialize, Deserialize)]
struct LinkFile {
    version: u32,
    identity_key: String,
    link_id: String,
    link_secret: String,
    contact_id: String,
}

/// The linking data this phone offers, from `<state>/tether-phone-link.json`; created with
/// fresh random values on first use.
fn load_or_create_link(state: &Path, name: &str) -> Result<LinkingOffer, Failure> {
    let path = state.join(LINK_FILE);
    let local = |what: String| Failure::new(Exit::Local, what);
    let stored = match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let file: LinkFile = serde_json::from_slice(&bytes).map_err(|_| {
                local(format!(
                    "{} is not a linking identity file (delete it to start a new one)",
                    path.display()
                ))
            })?;
            file
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = new_link_file()
                .ok_or_else(|| local("the operating system's random source failed".to_owned()))?;
            write_private(&path, &file)
                .map_err(|e| local(format!("cannot write {}: {e}", path.display())))?;
            file
        }
        Err(e) => return Err(local(format!("cannot read {}: {e}", path.display()))),
    };
    let corrupt = || {
        local(format!(
            "{} holds a malformed field (delete it to start a new one)",
            path.display()
        ))
    };
    let identity_bytes = Zeroizing::new(hex::decode(&stored.identity_key).map_err(|_| corrupt())?);
    let identity = SecretKey::from_slice(&identity_bytes).map_err(|_| corrupt())?;
    let link_id: [u8; 8] = hex::decode(&stored.link_id)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(corrupt)?;
    let secret_bytes = Zeroizing::new(hex::decode(&stored.link_secret).map_err(|_| corrupt())?);
    let link_secret: [u8; 32] = secret_bytes.as_slice().try_into().map_err(|_| corrupt())?;
    let contact_id = hex::decode(&stored.contact_id)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(corrupt)?;
    drop(Zeroizing::new(stored.identity_key));
    drop(Zeroizing::new(stored.link_secret));
    Ok(LinkingOffer {
        contact_id,
        link_id,
        link_secret: Secret::new(link_secret),
        identity,
        name: name.to_owned(),
    })
}

fn new_link_file() -> Option<LinkFile> {
    let mut identity = Zeroizing::new([0u8; 32]);
    // A random 32-byte string is a valid P-256 scalar with overwhelming probability; retry
    // the rare zero or out-of-range value.
    let identity = loop {
        getrandom::fill(identity.as_mut_slice()).ok()?;
        if SecretKey::from_slice(identity.as_slice()).is_ok() {
            break identity;
        }
    };
    let mut link_id = [0u8; 8];
    let mut link_secret = Zeroizing::new([0u8; 32]);
    let mut contact_id = [0u8; 16];
    getrandom::fill(&mut link_id).ok()?;
    getrandom::fill(link_secret.as_mut_slice()).ok()?;
    getrandom::fill(&mut contact_id).ok()?;
    Some(LinkFile {
        version: 1,
        identity_key: hex::encode(identity.as_slice()),
        link_id: hex::encode(link_id),
        link_secret: hex::encode(link_secret.as_slice()),
        contact_id: hex::encode(contact_id),
    })
}

/// Writes `file` as JSON readable by the owner only: a temporary file in the same directory,
/// flushed, then renamed into place.
fn write_private(path: &Path, file: &LinkFile) -> std::io::Result<()> {
    let json = Zeroizing::new(serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?);
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut out = options.open(&tmp)?;
    out.write_all(&json)?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(humanize(Duration::from_secs(3)), "3 s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1500 ms");
    }

    #[test]
    fn relay_urls() {
        let ok = |u: &str| relay_config(u, false).map(|(base, t)| (base, t.danger_allow_plaintext));
        assert_eq!(
            ok("ws://127.0.0.1:8080/").unwrap(),
            ("ws://127.0.0.1:8080".to_owned(), true)
        );
        assert_eq!(
            ok("ws://[::1]:8080/tether").unwrap(),
            ("ws://[::1]:8080/tether".to_owned(), true)
        );
        assert!(ok("ws://LOCALHOST:1").is_ok());
        assert_eq!(
            ok("wss://relay.example").unwrap(),
            ("wss://relay.example".to_owned(), false)
        );
        for bad in [
            "ws://relay.example",
            "ws://10.0.0.1:8080",
            "https://relay.example",
            "wss://relay.example/?x=1",
            "wss://user:pw@relay.example",
            "not a url",
        ] {
            assert_eq!(
                relay_config(bad, false).map(|_| ()).unwrap_err().exit,
                Exit::Usage,
                "{bad}"
            );
        }
        assert!(relay_config("ws://relay.example", true).is_ok());
    }
}
