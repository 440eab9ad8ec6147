//! The agent's end-to-end flows: pair the device, sign the user in, register a passkey. These
//! are what `device-agent` runs and what XR and hub apps embed.
//!
//! ```text
//!  pair:     identity file ─► startPairing ─► Progress::Pairing{code} ─► (user types the code
//!            in the companion app) ─► pairing confirmed ─► identity file gets device id + bridge
//!
//!  sign_in / register:
//!    options JSON + origin ─► ceremony (clientDataJSON, CTAP request)
//!    fresh identity key + QR secret ─► FIDO:/ URL ─► requestSignIn / requestRegistration
//!        ├─ watch_delivery:  SENT, CLAIMED … DENIED / EXPIRED / FAILED end the flow at once
//!        └─ session::run:    scan for the phone's advert ─► tunnel ─► Noise ─► one CTAP command
//!    reply ─► AuthenticationResponseJSON / RegistrationResponseJSON ─► completeDelivery(SUCCESS)
//! ```
//!
//! The request and the session run concurrently: the phone only advertises after its user
//! approved, so the agent scans from the moment the request is stored and stops as soon as
//! either side ends. The session's deadline is the delivery's own lifetime as the bridge states
//! it (`expiresAt − createdAt`, counted from when the answer arrived, so a skewed device clock
//! does not shorten it). A session that fails is reported to the bridge (`PHONE_NOT_FOUND`,
//! `TUNNEL_FAILED`, `AUTHENTICATOR_ERROR`, `CANCELLED`) on a best-effort basis.
//!
//! Every failure is one [`AgentError`] with a distinct [`AgentError::exit_code`]. Secrets (the
//! session's identity key, QR secret and FIDO URL, device tokens) never reach progress reports,
//! errors or logs.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use hybrid::ctap::{CtapRequest, CtapResponse};
use hybrid::initiator::Initiator;
use hybrid::session::InitiatorTimeouts;
use hybrid::url::{FidoUrl, RequestType};
use hybrid::{QrSecret, Time};
use p256::SecretKey;
use p256::elliptic_curve::Generate as _;
use rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest as _, Sha256};
use tether_ble::{AdvertSource, ScanConfig};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::bridge_client::{
    BridgeClient, BridgeConfig, BridgeError, Clock, Delivery, DeliveryInput, DeliveryOutcome,
    DeliveryStatus, ErrorCode, PairingStatus, SystemClock,
};
use crate::device_key::{DeviceIdentity, PairedBridge};
use crate::session::{self, SessionFailure};
use crate::tunnel::TunnelConfig;
use crate::webauthn::{
    CreationOptions, Origin, RegistrationCeremony, RequestOptions, SignInCeremony,
};

/// How long reporting a session's end to the bridge may take before it is given up.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(5);
/// The failure reason of a delivery no companion could receive.
const NO_ACTIVE_COMPANION: &str = "NO_ACTIVE_COMPANION";
/// The longest delivery lifetime believed from a bridge (its own is five minutes).
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Everything the flows need to know.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The bridge. For [`sign_in`] and [`register`] its URL must be the one the device was
    /// paired with; an unset [`BridgeConfig::audience`] is taken from the identity file.
    pub bridge: BridgeConfig,
    /// Where the device identity file lives (`device.json`, mode 0600).
    pub state_dir: PathBuf,
    /// Where tunnel domains are reached.
    pub tunnel: TunnelConfig,
    /// The scan filter, for callers that build their advert source from this config (the
    /// CLI does). The flows themselves use the source they are given.
    pub scan: ScanConfig,
    /// How long to look for the phone after the request was stored; `None`: until the
    /// delivery expires. The phone only advertises after its user approved, so a short value
    /// also bounds the time the user has to approve.
    pub discovery_timeout: Option<Duration>,
    /// The time in device tokens and in the `FIDO:/` URL's timestamp (tests put the agent on
    /// the bridge's manual clock). Default: the system clock.
    pub clock: Arc<dyn Clock>,
}

impl AgentConfig {
    /// A configuration with the defaults: plain `wss://` tunnel domains, the default RSSI
    /// floor, discovery until the delivery expires, the system clock.
    pub fn new(bridge: BridgeConfig, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            bridge,
            state_dir: state_dir.into(),
            tunnel: TunnelConfig::default(),
            scan: ScanConfig::default(),
            discovery_timeout: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// What a flow has reached, in order, for a person or a program following it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Pairing started: show `code`; the user types it into the companion app.
    Pairing {
        /// The pairing code.
        code: String,
        /// When the code stops working (RFC 3339, the bridge's clock).
        expires_at: String,
    },
    /// A companion confirmed the code (or the device was already paired with this bridge).
    Paired {
        /// The device's id at the bridge.
        device_id: String,
    },
    /// The bridge stored the request and pushes it to the account's phones.
    Requested {
        /// The delivery.
        delivery_id: String,
        /// The two-digit number the phone shows too.
        number_code: String,
        /// When the request expires (Unix seconds, the bridge's clock).
        expires_at_unix: i64,
    },
    /// The delivery's status changed (`SENT`, `CLAIMED`, …).
    Status(DeliveryStatus),
    /// Listening for the phone's advert.
    Scanning,
    /// The phone's advert for this session arrived.
    PhoneFound {
        /// Its signal strength in dBm, if known.
        rssi: Option<i16>,
    },
    /// The tunnel to the relay is open.
    TunnelOpen,
    /// The encrypted channel with the phone is established.
    HandshakeDone,
    /// The phone answered with the passkey's signature (or new credential) and the response
    /// JSON is built.
    PasskeyUsed,
}

/// Why a flow failed. Each kind has its own [`AgentError::exit_code`]; the `Display` text is
/// one line meant for the user.
///
/// | exit | variant |
/// |-----:|---------|
/// | 2 | [`Config`](AgentError::Config) (also the CLI's usage errors) |
/// | 3 | [`InvalidOptions`](AgentError::InvalidOptions) |
/// | 4 | [`NotPaired`](AgentError::NotPaired) |
/// | 5 | [`Denied`](AgentError::Denied) |
/// | 6 | [`Expired`](AgentError::Expired) |
/// | 7 | [`NoCompanion`](AgentError::NoCompanion) |
/// | 8 | [`PhoneNotFound`](AgentError::PhoneNotFound) |
/// | 9 | [`TunnelFailed`](AgentError::TunnelFailed) |
/// | 10 | [`Authenticator`](AgentError::Authenticator) |
/// | 11 | [`BridgeUnreachable`](AgentError::BridgeUnreachable) |
/// | 12 | [`Bridge`](AgentError::Bridge) |
/// | 13 | [`State`](AgentError::State) |
/// | 14 | [`Ble`](AgentError::Ble) |
/// | 15 | [`Protocol`](AgentError::Protocol) |
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The device has no pairing with this bridge.
    #[error(
        "this device is not paired with the bridge: run `device-agent pair --bridge URL` first"
    )]
    NotPaired,
    /// The WebAuthn options or the origin cannot be used.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The user declined on the phone.
    #[error("denied on the phone ({reason})")]
    Denied {
        /// The bridge's reason (`DECLINED`, `NOT_ME`).
        reason: String,
    },
    /// The request (or the pairing code) expired before it was approved.
    #[error("expired: not approved on the phone in time")]
    Expired,
    /// The account has no companion app that can receive the request.
    #[error("no companion app can receive the request: sign in to the Tether app on your phone")]
    NoCompanion,
    /// The phone's advert never arrived (not nearby, below the RSSI floor, or never approved
    /// within the discovery timeout).
    #[error("phone not found nearby")]
    PhoneNotFound,
    /// The tunnel through the relay could not be opened or broke.
    #[error("tunnel failed: {0}")]
    TunnelFailed(String),
    /// The phone's authenticator answered with an error status.
    #[error("authenticator error {name} (0x{status:02x})")]
    Authenticator {
        /// The CTAP status byte.
        status: u8,
        /// Its CTAP name, e.g. `CTAP2_ERR_OPERATION_DENIED`.
        name: String,
    },
    /// The bridge could not be reached.
    #[error("bridge unreachable: {0}")]
    BridgeUnreachable(String),
    /// The bridge refused or failed the request.
    #[error("bridge refused the request ({code}): {message}")]
    Bridge {
        /// The bridge's stable code (`UNAUTHENTICATED`, `RATE_LIMITED`, …), or the failure
        /// reason of a `FAILED` delivery.
        code: String,
        /// What it said.
        message: String,
    },
    /// The identity file cannot be read or written.
    #[error("device state: {0}")]
    State(String),
    /// Bluetooth cannot be used.
    #[error("{0}")]
    Ble(String),
    /// The phone broke the protocol or answered something that does not fit the request.
    #[error("the phone's answer is invalid: {0}")]
    Protocol(String),
    /// The configuration is unusable (bridge URL, CA file, relay mapping).
    #[error("configuration: {0}")]
    Config(String),
}

impl AgentError {
    /// The process exit status for this error (see the table on [`AgentError`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::InvalidOptions(_) => 3,
            Self::NotPaired => 4,
            Self::Denied { .. } => 5,
            Self::Expired => 6,
            Self::NoCompanion => 7,
            Self::PhoneNotFound => 8,
            Self::TunnelFailed(_) => 9,
            Self::Authenticator { .. } => 10,
            Self::BridgeUnreachable(_) => 11,
            Self::Bridge { .. } => 12,
            Self::State(_) => 13,
            Self::Ble(_) => 14,
            Self::Protocol(_) => 15,
        }
    }

    /// A stable machine name for the kind (`denied`, `phone_not_found`, …), as `--json`
    /// prints it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::InvalidOptions(_) => "invalid_options",
            Self::NotPaired => "not_paired",
            Self::Denied { .. } => "denied",
            Self::Expired => "expired",
            Self::NoCompanion => "no_companion",
            Self::PhoneNotFound => "phone_not_found",
            Self::TunnelFailed(_) => "tunnel_failed",
            Self::Authenticator { .. } => "authenticator",
            Self::BridgeUnreachable(_) => "bridge_unreachable",
            Self::Bridge { .. } => "bridge",
            Self::State(_) => "state",
            Self::Ble(_) => "ble",
            Self::Protocol(_) => "protocol",
        }
    }
}

impl From<BridgeError> for AgentError {
    fn from(error: BridgeError) -> Self {
        match error {
            BridgeError::Unreachable(reason) => Self::BridgeUnreachable(reason),
            BridgeError::Rejected {
                code: ErrorCode::NoActiveCompanion,
                ..
            } => Self::NoCompanion,
            BridgeError::Rejected { code, message, .. } => Self::Bridge {
                code: code.as_str().to_owned(),
                message,
            },
            BridgeError::Protocol(message) => Self::Bridge {
                code: "UNEXPECTED_ANSWER".into(),
                message,
            },
            BridgeError::Config(reason) => Self::Config(reason),
            BridgeError::NotPaired => Self::NotPaired,
            BridgeError::Token(reason) => {
                Self::State(format!("could not sign a device token: {reason}"))
            }
        }
    }
}

fn state_error(error: impl std::fmt::Display) -> AgentError {
    AgentError::State(error.to_string())
}

/// Pairs the device with `config.bridge` under `name` and `model` and returns its device id.
///
/// Creates the device key on first use (identity file mode 0600), starts pairing, reports the
/// code as [`Progress::Pairing`], waits until a companion confirms it, and stores the device id
/// and bridge URL in the identity file. A device already paired with this bridge is not paired
/// again: its stored id is returned (with [`Progress::Paired`]). Pairing with another bridge
/// replaces the stored pairing once the new one is confirmed.
///
/// # Errors
///
/// [`AgentError::Expired`] when the code expired unconfirmed; [`AgentError::BridgeUnreachable`],
/// [`AgentError::Bridge`], [`AgentError::Config`], [`AgentError::State`].
pub async fn pair(
    config: &AgentConfig,
    name: &str,
    model: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<String, AgentError> {
    let mut identity = DeviceIdentity::load_or_create(&config.state_dir).map_err(state_error)?;
    if let Some(paired) = &identity.paired
        && same_bridge(&paired.bridge_url, &config.bridge.url)
    {
        progress(Progress::Paired {
            device_id: paired.device_id.clone(),
        });
        return Ok(paired.device_id.clone());
    }
    let mut client =
        BridgeClient::with_clock(config.bridge.clone(), &identity.key, config.clock.clone())?;
    let started = client.start_pairing(name, model).await?;
    progress(Progress::Pairing {
        code: started.code.clone(),
        expires_at: started.expires_at.clone(),
    });
    let pairing = client.wait_for_pairing(&started.pairing_id).await?;
    match pairing.status {
        PairingStatus::Confirmed => {}
        PairingStatus::Expired => return Err(AgentError::Expired),
        other => {
            return Err(AgentError::Bridge {
                code: "UNEXPECTED_ANSWER".into(),
                message: format!("the pairing ended with status {other:?}"),
            });
        }
    }
    identity.set_paired(PairedBridge {
        bridge_url: config.bridge.url.clone(),
        device_id: started.device_id.clone(),
        audience: config.bridge.audience.clone(),
    });
    identity.save(&config.state_dir).map_err(state_error)?;
    progress(Progress::Paired {
        device_id: started.device_id.clone(),
    });
    Ok(started.device_id)
}

/// Signs the user in: `options_json` is a WebAuthn Level 3
/// `PublicKeyCredentialRequestOptionsJSON` (or `{"publicKey": …}`), `origin` the web origin
/// the user signs in to. Returns the `AuthenticationResponseJSON` to hand to the relying party.
///
/// `ble` is where the phone's advert is heard (a [`tether_ble::btle::BtleScanner`] or a
/// simulated medium's scanner); `progress` is called as the flow advances.
///
/// # Errors
///
/// [`AgentError::NotPaired`], [`AgentError::InvalidOptions`], [`AgentError::NoCompanion`],
/// [`AgentError::Denied`], [`AgentError::Expired`], [`AgentError::PhoneNotFound`],
/// [`AgentError::TunnelFailed`], [`AgentError::Authenticator`], [`AgentError::Ble`],
/// [`AgentError::BridgeUnreachable`], [`AgentError::Bridge`] and the others of
/// [`AgentError`].
pub async fn sign_in(
    config: &AgentConfig,
    options_json: &str,
    origin: &str,
    ble: &mut dyn AdvertSource,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<serde_json::Value, AgentError> {
    let identity = load_paired(config)?;
    let ceremony = Ceremony::sign_in(options_json, origin)?;
    run_ceremony(config, identity, ceremony, ble, progress).await
}

/// Registers a passkey on the phone: `options_json` is a WebAuthn Level 3
/// `PublicKeyCredentialCreationOptionsJSON` (or `{"publicKey": …}`). Returns the
/// `RegistrationResponseJSON`. Otherwise as [`sign_in`].
///
/// # Errors
///
/// As [`sign_in`].
pub async fn register(
    config: &AgentConfig,
    options_json: &str,
    origin: &str,
    ble: &mut dyn AdvertSource,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<serde_json::Value, AgentError> {
    let identity = load_paired(config)?;
    let ceremony = Ceremony::registration(options_json, origin)?;
    run_ceremony(config, identity, ceremony, ble, progress).await
}

/// Tells the bridge that the device gave up on `delivery_id` (`completeDelivery(CANCELLED)`),
/// for example when its user interrupted the agent after [`Progress::Requested`].
///
/// # Errors
///
/// [`AgentError::NotPaired`], [`AgentError::State`] or the bridge's errors (a delivery that
/// already ended gives [`AgentError::Bridge`]).
pub async fn cancel(config: &AgentConfig, delivery_id: &str) -> Result<(), AgentError> {
    let (identity, bridge) = load_paired(config)?;
    let client = BridgeClient::with_clock(bridge, &identity.key, config.clock.clone())?
        .with_device_id(device_id(&identity));
    client
        .complete_delivery(delivery_id, DeliveryOutcome::Cancelled)
        .await?;
    Ok(())
}

/// Checks sign-in options and origin without any I/O (what [`sign_in`] checks first).
pub(crate) fn check_sign_in(options_json: &str, origin: &str) -> Result<(), AgentError> {
    Ceremony::sign_in(options_json, origin).map(drop)
}

/// Checks creation options and origin without any I/O (what [`register`] checks first).
pub(crate) fn check_registration(options_json: &str, origin: &str) -> Result<(), AgentError> {
    Ceremony::registration(options_json, origin).map(drop)
}

/// Whether two bridge URLs name the same bridge (ignoring a trailing slash and case in scheme
/// and host).
fn same_bridge(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.trim_end_matches('/') == b.trim_end_matches('/'),
    }
}

fn device_id(identity: &DeviceIdentity) -> String {
    identity
        .paired
        .as_ref()
        .map(|p| p.device_id.clone())
        .unwrap_or_default()
}

/// The identity, if it is paired with `config.bridge`, and the bridge configuration to use
/// (the stored audience filled in).
fn load_paired(config: &AgentConfig) -> Result<(DeviceIdentity, BridgeConfig), AgentError> {
    let identity = DeviceIdentity::load(&config.state_dir)
        .map_err(state_error)?
        .ok_or(AgentError::NotPaired)?;
    let paired = identity.paired.as_ref().ok_or(AgentError::NotPaired)?;
    if !same_bridge(&paired.bridge_url, &config.bridge.url) {
        return Err(AgentError::NotPaired);
    }
    let mut bridge = config.bridge.clone();
    if bridge.audience.is_none() {
        bridge.audience.clone_from(&paired.audience);
    }
    Ok((identity, bridge))
}

/// A sign-in or a registration, from parsed options.
enum Ceremony {
    SignIn(SignInCeremony),
    Registration(RegistrationCeremony),
}

impl Ceremony {
    fn sign_in(options_json: &str, origin: &str) -> Result<Self, AgentError> {
        let invalid = |e: crate::webauthn::WebAuthnError| AgentError::InvalidOptions(e.to_string());
        let options = RequestOptions::from_json(options_json).map_err(invalid)?;
        let origin = Origin::parse(origin).map_err(invalid)?;
        SignInCeremony::new(&options, &origin)
            .map(Self::SignIn)
            .map_err(invalid)
    }

    fn registration(options_json: &str, origin: &str) -> Result<Self, AgentError> {
        let invalid = |e: crate::webauthn::WebAuthnError| AgentError::InvalidOptions(e.to_string());
        let options = CreationOptions::from_json(options_json).map_err(invalid)?;
        let origin = Origin::parse(origin).map_err(invalid)?;
        RegistrationCeremony::new(&options, &origin)
            .map(Self::Registration)
            .map_err(invalid)
    }

    fn request_type(&self) -> RequestType {
        match self {
            Self::SignIn(_) => RequestType::GetAssertion,
            Self::Registration(_) => RequestType::MakeCredential,
        }
    }

    fn input(&self, fido_url: String, idempotency_key: String) -> DeliveryInput {
        let (rp_id, origin, user_name) = match self {
            Self::SignIn(c) => (c.rp_id(), c.origin(), None),
            Self::Registration(c) => (c.rp_id(), c.origin(), Some(c.user_name().to_owned())),
        };
        DeliveryInput {
            fido_url,
            rp_id: rp_id.to_owned(),
            idempotency_key,
            origin: Some(origin.as_str().to_owned()),
            user_name: user_name.filter(|n| !n.is_empty()),
        }
    }

    fn ctap_request(&self) -> CtapRequest {
        match self {
            Self::SignIn(c) => CtapRequest::GetAssertion(c.ctap_request()),
            Self::Registration(c) => CtapRequest::MakeCredential(c.ctap_request()),
        }
    }

    async fn request(
        &self,
        client: &BridgeClient,
        input: &DeliveryInput,
    ) -> Result<Delivery, BridgeError> {
        match self {
            Self::SignIn(_) => client.request_sign_in(input).await,
            Self::Registration(_) => client.request_registration(input).await,
        }
    }

    /// The response JSON for the authenticator's successful reply.
    fn response(&self, reply: &CtapResponse) -> Result<serde_json::Value, AgentError> {
        let protocol = |e: &dyn std::fmt::Display| AgentError::Protocol(e.to_string());
        let value = match self {
            Self::SignIn(c) => {
                let assertion = reply.get_assertion().map_err(|e| protocol(&e))?;
                let response = c.response(&assertion).map_err(|e| protocol(&e))?;
                serde_json::to_value(&response)
            }
            Self::Registration(c) => {
                let credential = reply.make_credential().map_err(|e| protocol(&e))?;
                let response = c.response(&credential).map_err(|e| protocol(&e))?;
                serde_json::to_value(&response)
            }
        };
        value.map_err(|e| protocol(&e))
    }
}

/// Calls the caller's progress function from the flow and from the session at once.
struct Reporter<'a> {
    progress: Mutex<&'a mut (dyn FnMut(Progress) + Send)>,
}

impl Reporter<'_> {
    fn report(&self, event: Progress) {
        let mut guard = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let progress: &mut (dyn FnMut(Progress) + Send) = &mut **guard;
        progress(event);
    }
}

/// The common body of [`sign_in`] and [`register`].
async fn run_ceremony(
    config: &AgentConfig,
    (identity, bridge): (DeviceIdentity, BridgeConfig),
    ceremony: Ceremony,
    ble: &mut dyn AdvertSource,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<serde_json::Value, AgentError> {
    let client = BridgeClient::with_clock(bridge, &identity.key, config.clock.clone())?
        .with_device_id(device_id(&identity));

    // This session's secrets: they reach the phone only inside the FIDO URL.
    let session_key = SecretKey::try_generate()
        .map_err(|_| AgentError::State("the system random number generator failed".into()))?;
    let mut qr_secret = Zeroizing::new([0u8; 16]);
    getrandom::fill(qr_secret.as_mut_slice())
        .map_err(|_| AgentError::State("the system random number generator failed".into()))?;
    let mut rng = SessionRng::from_os()
        .ok_or_else(|| AgentError::State("the system random number generator failed".into()))?;
    let now_unix = u64::try_from(config.clock.now_unix_secs()).unwrap_or(0);
    let fido_url = FidoUrl::new(
        session_key.public_key(),
        QrSecret::new(*qr_secret),
        ceremony.request_type(),
        now_unix,
        true,
    );
    let mut key = [0u8; 16];
    getrandom::fill(&mut key)
        .map_err(|_| AgentError::State("the system random number generator failed".into()))?;
    let input = ceremony.input(fido_url.encode(), hex::encode(key));
    drop(fido_url);

    let delivery = ceremony.request(&client, &input).await?;
    let received = Instant::now();
    drop(input);

    let reporter = Reporter {
        progress: Mutex::new(progress),
    };
    let times = match DeliveryTimes::of(&delivery) {
        Ok(times) => times,
        Err(e) => {
            complete(&client, &delivery.id, DeliveryOutcome::Cancelled).await;
            return Err(e);
        }
    };
    reporter.report(Progress::Requested {
        delivery_id: delivery.id.clone(),
        number_code: delivery.number_code.clone(),
        expires_at_unix: times.expires_at_unix,
    });
    let deadline = received + times.lifetime;

    let epoch = Instant::now();
    let timeouts = InitiatorTimeouts {
        discovery: config.discovery_timeout.unwrap_or(times.lifetime),
        ..InitiatorTimeouts::default()
    };
    let initiator = Initiator::new(
        session_key,
        QrSecret::new(*qr_secret),
        &ceremony.ctap_request(),
        timeouts,
        Time::ZERO,
        &mut rng,
    );
    drop(qr_secret);

    let mut on_session = |event: session::Progress| {
        let mapped = match event {
            session::Progress::Scanning => Progress::Scanning,
            session::Progress::PhoneFound { rssi } => Progress::PhoneFound { rssi },
            session::Progress::TunnelOpen => Progress::TunnelOpen,
            session::Progress::HandshakeDone => Progress::HandshakeDone,
            // Reported once the response is built.
            session::Progress::ResponseReceived => return,
        };
        reporter.report(mapped);
    };
    let mut watch = client.watch_delivery(&delivery.id);
    let mut watching = true;
    let mut last_status = delivery.status;
    let mut claimed = delivery.status == DeliveryStatus::Claimed;
    let ended_as = {
        let session = session::run(
            initiator,
            epoch,
            deadline,
            ble,
            &config.tunnel,
            &mut on_session,
        );
        tokio::pin!(session);
        loop {
            tokio::select! {
                result = &mut session => break Ended::Session(result),
                item = watch.next(), if watching => match item {
                    None => watching = false,
                    Some(Ok(update)) => {
                        if update.status != last_status {
                            last_status = update.status;
                            reporter.report(Progress::Status(update.status));
                        }
                        claimed |= update.status == DeliveryStatus::Claimed;
                        if let Some(error) = ended(&update) {
                            // The delivery is final at the bridge: nothing to report.
                            break Ended::Delivery(error);
                        }
                    }
                    Some(Err(BridgeError::Unreachable(reason))) => {
                        // The session may still succeed through the relay; carry on without
                        // status updates.
                        tracing::warn!(%reason, "lost the delivery's status; continuing the session");
                        watching = false;
                    }
                    Some(Err(error)) => break Ended::Watch(error.into()),
                },
            }
        }
    };
    drop(watch);
    let result = match ended_as {
        Ended::Session(result) => result,
        Ended::Delivery(error) => return Err(error),
        Ended::Watch(error) => {
            complete(&client, &delivery.id, DeliveryOutcome::Cancelled).await;
            return Err(error);
        }
    };

    match result {
        Ok(outcome) => match ceremony.response(&outcome.response) {
            Ok(json) => {
                reporter.report(Progress::PasskeyUsed);
                complete(&client, &delivery.id, DeliveryOutcome::Success).await;
                Ok(json)
            }
            Err(error) => {
                complete(&client, &delivery.id, DeliveryOutcome::AuthenticatorError).await;
                Err(error)
            }
        },
        Err(failure) => {
            let timed_out = Instant::now() >= deadline;
            let (outcome, error) = classify(failure, timed_out && !claimed);
            complete(&client, &delivery.id, outcome).await;
            Err(error)
        }
    }
}

/// How the concurrent part of a ceremony ended.
enum Ended {
    /// The session finished first.
    Session(Result<session::SessionOutcome, SessionFailure>),
    /// The delivery reached a final status (denied, expired, failed).
    Delivery(AgentError),
    /// Following the delivery failed for a reason other than reachability.
    Watch(AgentError),
}

/// The error for a delivery status that ends the flow, if it is one.
fn ended(delivery: &Delivery) -> Option<AgentError> {
    match delivery.status {
        DeliveryStatus::Denied => Some(AgentError::Denied {
            reason: delivery.reason.clone().unwrap_or_else(|| "DECLINED".into()),
        }),
        DeliveryStatus::Expired => Some(AgentError::Expired),
        DeliveryStatus::Failed => match delivery.reason.as_deref() {
            Some(NO_ACTIVE_COMPANION) => Some(AgentError::NoCompanion),
            reason => Some(AgentError::Bridge {
                code: reason.unwrap_or("FAILED").to_owned(),
                message: "the bridge could not deliver the request".into(),
            }),
        },
        _ => None,
    }
}

/// What to tell the bridge and the caller about a failed session. `unapproved_at_expiry`: the
/// deadline (the delivery's expiry) passed and no companion had claimed the request.
fn classify(failure: SessionFailure, unapproved_at_expiry: bool) -> (DeliveryOutcome, AgentError) {
    match failure {
        SessionFailure::PhoneNotFound if unapproved_at_expiry => {
            (DeliveryOutcome::PhoneNotFound, AgentError::Expired)
        }
        SessionFailure::PhoneNotFound => {
            (DeliveryOutcome::PhoneNotFound, AgentError::PhoneNotFound)
        }
        SessionFailure::BleUnavailable(e) => {
            (DeliveryOutcome::Cancelled, AgentError::Ble(e.to_string()))
        }
        SessionFailure::TunnelFailed(e) => (
            DeliveryOutcome::TunnelFailed,
            AgentError::TunnelFailed(e.to_string()),
        ),
        SessionFailure::Authenticator(status) => (
            DeliveryOutcome::AuthenticatorError,
            AgentError::Authenticator {
                status: u8::from(status),
                name: status.name().to_owned(),
            },
        ),
        SessionFailure::Protocol(e) => (
            DeliveryOutcome::TunnelFailed,
            AgentError::Protocol(e.to_string()),
        ),
    }
}

/// Reports the session's end; failures are logged, never returned (the flow's result stands).
async fn complete(client: &BridgeClient, delivery_id: &str, outcome: DeliveryOutcome) {
    match tokio::time::timeout(
        COMPLETE_TIMEOUT,
        client.complete_delivery(delivery_id, outcome),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, ?outcome, "could not report the session's end to the bridge");
        }
        Err(_) => tracing::warn!(
            ?outcome,
            "reporting the session's end to the bridge timed out"
        ),
    }
}

/// A delivery's lifetime as the bridge states it.
struct DeliveryTimes {
    lifetime: Duration,
    expires_at_unix: i64,
}

impl DeliveryTimes {
    fn of(delivery: &Delivery) -> Result<Self, AgentError> {
        let created = parse_time(&delivery.created_at)?;
        let expires = parse_time(&delivery.expires_at)?;
        let lifetime = Duration::try_from(expires - created).map_err(|_| AgentError::Bridge {
            code: "UNEXPECTED_ANSWER".into(),
            message: "the request expires before it was created".into(),
        })?;
        Ok(Self {
            lifetime: lifetime.min(MAX_LIFETIME),
            expires_at_unix: expires.unix_timestamp(),
        })
    }
}

fn parse_time(text: &str) -> Result<time::OffsetDateTime, AgentError> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(
        |_| AgentError::Bridge {
            code: "UNEXPECTED_ANSWER".into(),
            message: format!("the bridge sent an invalid time {text:?}"),
        },
    )
}

/// The session's randomness (ephemeral key, nonces): 32 bytes from the operating system,
/// expanded with SHA-256 in counter mode, so that it cannot fail once seeded, as the sans-I/O
/// core wants.
struct SessionRng {
    seed: Zeroizing<[u8; 32]>,
    counter: u64,
    block: Zeroizing<[u8; 32]>,
    used: usize,
}

impl SessionRng {
    fn from_os() -> Option<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).ok()?;
        Some(Self {
            seed,
            counter: 0,
            block: Zeroizing::new([0; 32]),
            used: 32,
        })
    }
}

impl TryRng for SessionRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            if self.used == self.block.len() {
                let mut hash = Sha256::new();
                hash.update(b"tether device-agent session rng");
                hash.update(self.seed.as_slice());
                hash.update(self.counter.to_le_bytes());
                self.block.copy_from_slice(&hash.finalize());
                self.counter = self.counter.wrapping_add(1);
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

impl TryCryptoRng for SessionRng {}
