//! The simulated phone's hybrid role over real I/O: tunnel at a relay, advert on a BLE medium,
//! Noise responder, one CTAP command answered by the [`SoftAuthenticator`].
//!
//! ```text
//!  FIDO:/ URL ─► tunnel id ─► relay /cable/new/<tunnel id> ─► X-caBLE-Routing-ID
//!                                                                  │
//!        advert (20 bytes, routing id + domain id) ◄───────────────┘
//!        on the medium until the client's Noise message 1 arrives
//!                                                                  │
//!  msg 2, post-handshake (getInfo), update (linking) ─► one CTAP command ─► reply ─► close
//! ```
//!
//! [`SimulatedPhone::answer`] drives [`hybrid::authenticator::Authenticator`] (the sans-I/O
//! state machine) with one loop: it drains the session's events (advertise, stop advertising,
//! command handled) and transmits, then waits in one `tokio::select!` for a tunnel message, the
//! session's own deadline or the scripted user's delay. Time is tokio's monotonic clock, given to
//! the session as milliseconds since the start of [`SimulatedPhone::answer`], so tests may pause
//! it. The WebSocket client is the device agent's ([`device_agent::tunnel`]); the phone never
//! sends the connection-signal header, so the relay sends it nothing extra.
//!
//! # Policies
//!
//! [`PhonePolicy`] scripts the person holding the phone once the request is on screen:
//! approve (with or without user verification), deny (the command is answered
//! `CTAP2_ERR_OPERATION_DENIED`, 0x27), ignore (no tunnel, no advert: the client never finds the
//! phone), or time out (the phone holds the command for a while, as if nobody touched it, then
//! answers `CTAP2_ERR_USER_ACTION_TIMEOUT`, 0x2F). The first three are what a companion app's
//! user can do; the fourth exercises a client's patience.
//!
//! # Blocking work
//!
//! Answering the command signs with the passkey and writes the passkey store (a small file,
//! flushed to disk). Every tunnel message after the handshake is therefore handed to the
//! session on tokio's blocking pool (`spawn_blocking`), never on an async worker. See
//! [`crate::authenticator`] for how the synchronous handler runs the asynchronous
//! `passkey-authenticator` without an executor.
//!
//! # Advertising
//!
//! [`Advertiser`] is the seam to the radio. [`tether_ble::sim::SimMedium`] implements it; a
//! BlueZ `LEAdvertisingManager1` advertiser can implement it later without touching this loop.
//! The advert is ciphertext and may be shown ([`PhoneEvent::Advertising`]); the tunnel URL
//! carries the tunnel id and is kept out of logs and errors.

use core::convert::Infallible;
use core::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use device_agent::tunnel::{self, HeaderMap, TunnelConfig, TunnelConn, TunnelError};
use hybrid::Time;
use hybrid::authenticator::{Authenticator, CtapHandler, Event, LinkingOffer};
use hybrid::ctap::{CtapCommand, CtapRequest, CtapResponse, CtapStatus, GetInfoResponse};
use hybrid::domain::DomainId;
use hybrid::session::{AuthenticatorTimeouts, SessionError};
use hybrid::tunnel::{RoutingId, TunnelPath};
use hybrid::url::FidoUrl;
use rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest, Sha256};
use tether_ble::sim::SimMedium;
use tether_ble::{Advert, BleError, ServiceUuid};
use thiserror::Error;
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::authenticator::{SoftAuthenticator, UserPolicy};

/// How long closing the tunnel after the session may take before it is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the simulated person does with the request on the phone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhonePolicy {
    /// Approve; with `user_verification` the screen lock is used and the UV flag set.
    Approve {
        /// Verify the user (UV flag; getInfo offers `uv`).
        user_verification: bool,
    },
    /// Refuse: the command is answered `CTAP2_ERR_OPERATION_DENIED` (0x27).
    Deny,
    /// Do nothing: no tunnel is opened and nothing is advertised.
    Ignore,
    /// Nobody answers the prompt: the command is held for `after`, then answered
    /// `CTAP2_ERR_USER_ACTION_TIMEOUT` (0x2F), unless the client gives up first.
    Timeout {
        /// How long the prompt stays unanswered.
        after: Duration,
    },
}

impl PhonePolicy {
    /// Approve with user verification: what a phone normally does.
    pub const APPROVE: Self = Self::Approve {
        user_verification: true,
    };
}

impl Default for PhonePolicy {
    fn default() -> Self {
        Self::APPROVE
    }
}

/// One [`SimulatedPhone::answer`] call's settings.
pub struct AnswerOptions {
    /// The relay's base URL (`wss://relay.example` or, when the tunnel config allows,
    /// `ws://127.0.0.1:8080`); the phone opens `<relay>/cable/new/<tunnel id>`.
    pub relay: String,
    /// The domain id to advertise: the id under which clients reach this relay (a hashed id
    /// ≥ 256 whose host name the client maps to the relay, or 0/1 when mapped that way).
    pub domain_id: DomainId,
    /// The scripted user.
    pub policy: PhonePolicy,
    /// The service UUID to advertise under.
    pub service: ServiceUuid,
    /// The signal strength the simulated medium reports to scanners, in dBm.
    pub rssi: Option<i16>,
    /// The session's deadlines.
    pub timeouts: AuthenticatorTimeouts,
    /// How long registering the tunnel at the relay may take.
    pub register_timeout: Duration,
    /// Linking data to offer the client in an update after the handshake.
    pub linking: Option<LinkingOffer>,
}

impl AnswerOptions {
    /// Options for `relay` and `domain_id`: approve with user verification, advertise under
    /// `0xFFF9` at -50 dBm, default deadlines, 10 s to register, no linking data.
    pub fn new(relay: impl Into<String>, domain_id: DomainId) -> Self {
        Self {
            relay: relay.into(),
            domain_id,
            policy: PhonePolicy::APPROVE,
            service: ServiceUuid::Fido,
            rssi: Some(-50),
            timeouts: AuthenticatorTimeouts::default(),
            register_timeout: Duration::from_secs(10),
            linking: None,
        }
    }
}

impl fmt::Debug for AnswerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerOptions")
            .field("relay", &self.relay)
            .field("domain_id", &self.domain_id)
            .field("policy", &self.policy)
            .field("service", &self.service)
            .field("rssi", &self.rssi)
            .field("linking", &self.linking.is_some())
            .finish_non_exhaustive()
    }
}

/// What the phone has reached, for a person or harness watching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhoneEvent {
    /// The relay registered the tunnel and assigned `routing_id`.
    TunnelRegistered {
        /// The routing id.
        routing_id: RoutingId,
    },
    /// The advert is on the medium (20 bytes of ciphertext; safe to print).
    Advertising {
        /// The service data.
        advert: [u8; hybrid::advert::ADVERT_LEN],
    },
    /// The client completed the handshake; advertising stopped.
    HandshakeComplete,
    /// The command was answered.
    RequestHandled {
        /// The command.
        command: CtapCommand,
        /// The status answered.
        status: CtapStatus,
    },
}

/// How an [`SimulatedPhone::answer`] call ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PhoneOutcome {
    /// The client's command was answered, successfully or with an error status (0x27 when
    /// denied, 0x2F when timed out, 0x2E when no passkey matched, …).
    Answered {
        /// The command.
        command: CtapCommand,
        /// The status answered.
        status: CtapStatus,
    },
    /// [`PhonePolicy::Ignore`]: nothing was done.
    Ignored,
}

/// Why the phone could not answer.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// The domain id is one of the unassigned ids 2–255; no client could follow the advert.
    #[error("domain id {0} is unassigned (use 0, 1 or a hashed id from 256)")]
    UnknownDomain(DomainId),
    /// The relay refused or could not be reached when registering the tunnel.
    #[error("cannot register the tunnel at the relay: {0}")]
    Register(#[source] TunnelError),
    /// The relay did not answer in time when registering the tunnel.
    #[error("the relay did not register the tunnel within {0:?}")]
    RegisterTimeout(Duration),
    /// The relay's answer carried no valid routing id.
    #[error("the relay sent no valid routing id")]
    NoRoutingId,
    /// The advert could not be put on the medium.
    #[error("cannot advertise: {0}")]
    Advertise(#[source] BleError),
    /// The tunnel broke (transport error, text or oversized message, error close).
    #[error("the tunnel broke: {0}")]
    Tunnel(#[source] TunnelError),
    /// The hybrid session failed (timeout, tunnel closed early, handshake or decryption
    /// failure, protocol violation).
    #[error("hybrid session failed: {0}")]
    Session(#[source] SessionError),
    /// The client ended the session without sending a command.
    #[error("the client ended the session without a command")]
    NoCommand,
    /// The operating system gave no randomness.
    #[error("the operating system's random source failed")]
    Randomness,
    /// A worker task of the phone failed (a bug).
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Keeps an advert on the air until dropped.
pub struct AdvertGuard {
    _stop: Box<dyn Send>,
}

impl AdvertGuard {
    /// A guard that drops `stop` (which ends the broadcast) when it is dropped.
    pub fn new(stop: impl Send + 'static) -> Self {
        Self {
            _stop: Box::new(stop),
        }
    }
}

impl fmt::Debug for AdvertGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdvertGuard").finish_non_exhaustive()
    }
}

/// Something that broadcasts a phone's advert: the simulated medium, or a real radio.
pub trait Advertiser: Send + Sync {
    /// Starts broadcasting `advert`; it stays on the air until the guard is dropped.
    ///
    /// # Errors
    ///
    /// The medium's error when it cannot advertise.
    fn advertise(&self, advert: Advert) -> Result<AdvertGuard, BleError>;
}

impl Advertiser for SimMedium {
    fn advertise(&self, advert: Advert) -> Result<AdvertGuard, BleError> {
        SimMedium::advertise(self, advert).map(AdvertGuard::new)
    }
}

/// The simulated phone: a software authenticator, a BLE medium and a way to reach relays.
///
/// Clones share the authenticator (and so its passkeys); concurrent [`SimulatedPhone::answer`]
/// calls are allowed and their commands are answered one at a time.
#[derive(Clone)]
pub struct SimulatedPhone {
    authenticator: Arc<Mutex<SoftAuthenticator>>,
    advertiser: Arc<dyn Advertiser>,
    tunnel: TunnelConfig,
}

impl fmt::Debug for SimulatedPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedPhone")
            .field("authenticator", &*self.authenticator())
            .field("tunnel", &self.tunnel)
            .finish_non_exhaustive()
    }
}

impl SimulatedPhone {
    /// A phone answering with `authenticator`, advertising on `advertiser` and opening tunnels
    /// as `tunnel` allows (`danger_allow_plaintext` for `ws://` relays, `extra_ca_pem` for a
    /// private CA).
    pub fn new(
        authenticator: SoftAuthenticator,
        advertiser: Arc<dyn Advertiser>,
        tunnel: TunnelConfig,
    ) -> Self {
        Self {
            authenticator: Arc::new(Mutex::new(authenticator)),
            advertiser,
            tunnel,
        }
    }

    /// The authenticator (to read its passkeys). Do not hold the guard across an `.await`.
    pub fn authenticator(&self) -> MutexGuard<'_, SoftAuthenticator> {
        self.authenticator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the client that made `url`: registers the tunnel, advertises, runs the Noise
    /// responder and answers one CTAP command as `options.policy` says. `progress` is called as
    /// the phone advances.
    ///
    /// Returns once the command is answered and the client has closed the tunnel (or the
    /// session's shutdown deadline passed).
    ///
    /// # Errors
    ///
    /// A [`PhoneError`] saying which step failed.
    pub async fn answer(
        &self,
        url: &FidoUrl,
        options: AnswerOptions,
        progress: &mut (dyn FnMut(PhoneEvent) + Send),
    ) -> Result<PhoneOutcome, PhoneError> {
        if options.policy == PhonePolicy::Ignore {
            tracing::debug!("policy ignore: not answering");
            return Ok(PhoneOutcome::Ignored);
        }
        if !options.domain_id.is_known() {
            return Err(PhoneError::UnknownDomain(options.domain_id));
        }
        let epoch = Instant::now();
        let mut handler = SessionHandler {
            shared: Arc::clone(&self.authenticator),
            policy: options.policy,
            info: GetInfoResponse::default(),
        };
        // Computed now, so that the handshake never waits for another session's command.
        handler.info = handler.compute_info();
        let mut rng = SessionRng::from_os().ok_or(PhoneError::Randomness)?;
        let session = Authenticator::new(
            url.clone(),
            handler,
            options.linking,
            options.timeouts,
            &mut rng,
        );

        // Register the tunnel.
        let new_url = format!(
            "{}{}",
            options.relay.trim_end_matches('/'),
            TunnelPath::New(session.tunnel_id())
        );
        let conn = tokio::time::timeout(
            options.register_timeout,
            tunnel::connect(&self.tunnel, &new_url, HeaderMap::new()),
        )
        .await
        .map_err(|_| PhoneError::RegisterTimeout(options.register_timeout))?
        .map_err(PhoneError::Register)?;
        let routing_id = conn.routing_id().map_err(|_| PhoneError::NoRoutingId)?;
        tracing::debug!(%routing_id, "tunnel registered");
        progress(PhoneEvent::TunnelRegistered { routing_id });

        let mut driver = Driver {
            session: Arc::new(Mutex::new(session)),
            conn,
            epoch,
            advertiser: Arc::clone(&self.advertiser),
            service: options.service,
            rssi: options.rssi,
            hold: match options.policy {
                PhonePolicy::Timeout { after } => Some(after),
                _ => None,
            },
            advertising: None,
            handshake_done: false,
            answered: None,
        };
        let result = driver.run(routing_id, options.domain_id, progress).await;
        drop(driver.advertising.take());
        let _ = tokio::time::timeout(CLOSE_GRACE, driver.conn.close()).await;
        result
    }
}

/// The hybrid session's handler for one [`SimulatedPhone::answer`] call: the shared
/// authenticator under this call's policy.
struct SessionHandler {
    shared: Arc<Mutex<SoftAuthenticator>>,
    policy: PhonePolicy,
    info: GetInfoResponse,
}

impl SessionHandler {
    fn lock(&self) -> MutexGuard<'_, SoftAuthenticator> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn user_policy(&self) -> UserPolicy {
        match self.policy {
            PhonePolicy::Approve { user_verification } => UserPolicy {
                approve: true,
                user_verification,
            },
            _ => UserPolicy::DENY,
        }
    }

    fn compute_info(&self) -> GetInfoResponse {
        let mut info = self.lock().get_info();
        // getInfo follows this call's policy, not whatever the shared authenticator last had.
        if self.user_policy().user_verification {
            info.options.insert("uv".to_owned(), true);
        } else {
            info.options.remove("uv");
        }
        info
    }
}

impl CtapHandler for SessionHandler {
    fn get_info(&self) -> GetInfoResponse {
        self.info.clone()
    }

    fn handle(&mut self, request: CtapRequest) -> CtapResponse {
        if matches!(self.policy, PhonePolicy::Timeout { .. }) {
            return CtapResponse::error(CtapStatus::UserActionTimeout);
        }
        let policy = self.user_policy();
        let mut authenticator = self.lock();
        authenticator.set_policy(policy);
        authenticator.handle(request)
    }
}

struct Driver {
    /// Shared with the blocking-pool task that feeds it messages after the handshake; locked
    /// only briefly and never across an `.await`.
    session: Arc<Mutex<Authenticator<SessionHandler>>>,
    conn: TunnelConn,
    epoch: Instant,
    advertiser: Arc<dyn Advertiser>,
    service: ServiceUuid,
    rssi: Option<i16>,
    /// [`PhonePolicy::Timeout`]: how long to hold the command.
    hold: Option<Duration>,
    advertising: Option<AdvertGuard>,
    handshake_done: bool,
    answered: Option<(CtapCommand, CtapStatus)>,
}

impl Driver {
    fn session(&self) -> MutexGuard<'_, Authenticator<SessionHandler>> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn instant(&self, time: Time) -> Instant {
        self.epoch + Duration::from_millis(time.as_millis())
    }

    async fn run(
        &mut self,
        routing_id: RoutingId,
        domain_id: DomainId,
        progress: &mut (dyn FnMut(PhoneEvent) + Send),
    ) -> Result<PhoneOutcome, PhoneError> {
        let now = self.now();
        self.session()
            .handle_routing_id(now, routing_id, domain_id)
            .map_err(PhoneError::Session)?;
        // Messages held back by the timeout policy, with their arrival times.
        let mut held: Vec<(Time, Vec<u8>)> = Vec::new();
        let mut release_at: Option<Instant> = None;

        loop {
            loop {
                let event = self.session().poll_event();
                let Some(event) = event else { break };
                self.on_event(event, progress)?;
            }
            loop {
                let message = self.session().poll_transmit();
                let Some(message) = message else { break };
                self.conn.send(message).await.map_err(PhoneError::Tunnel)?;
            }
            let (finished, error, timeout) = {
                let session = self.session();
                (
                    session.is_finished(),
                    session.error().cloned(),
                    session.poll_timeout(),
                )
            };
            if finished {
                return match self.answered {
                    Some((command, status)) => Ok(PhoneOutcome::Answered { command, status }),
                    None => Err(PhoneError::NoCommand),
                };
            }
            if let Some(error) = error {
                return Err(PhoneError::Session(error));
            }

            let wake = timeout.map(|t| self.instant(t));
            tokio::select! {
                received = self.conn.recv() => match received {
                    Ok(Some(message)) => {
                        let now = self.now();
                        match self.hold {
                            Some(after) if self.handshake_done => {
                                release_at.get_or_insert_with(|| Instant::now() + after);
                                held.push((now, message));
                            }
                            _ => self.feed(now, message).await?,
                        }
                    }
                    Ok(None) => {
                        let now = self.now();
                        self.session()
                            .handle_tunnel_closed(now)
                            .map_err(PhoneError::Session)?;
                    }
                    // After the reply, a broken tunnel is the same as a closed one.
                    Err(_) if self.answered.is_some() => {
                        let now = self.now();
                        self.session()
                            .handle_tunnel_closed(now)
                            .map_err(PhoneError::Session)?;
                    }
                    Err(e) => return Err(PhoneError::Tunnel(e)),
                },
                // While the scripted user sits on a command, the release timer decides.
                () = sleep_until(wake), if wake.is_some() && held.is_empty() => {
                    let now = self.now();
                    self.session().handle_timeout(now).map_err(PhoneError::Session)?;
                }
                () = sleep_until(release_at), if release_at.is_some() => {
                    release_at = None;
                    self.hold = None;
                    for (arrived, message) in std::mem::take(&mut held) {
                        self.feed(arrived, message).await?;
                    }
                }
            }
        }
    }

    fn on_event(
        &mut self,
        event: Event,
        progress: &mut (dyn FnMut(PhoneEvent) + Send),
    ) -> Result<(), PhoneError> {
        match event {
            Event::AdvertReady(data) => {
                let advert = Advert {
                    service: self.service,
                    data,
                    rssi: self.rssi,
                };
                let guard = self
                    .advertiser
                    .advertise(advert)
                    .map_err(PhoneError::Advertise)?;
                self.advertising = Some(guard);
                tracing::debug!("advertising");
                progress(PhoneEvent::Advertising { advert: data });
            }
            Event::HandshakeComplete => {
                self.advertising = None;
                self.handshake_done = true;
                tracing::debug!("handshake complete; advertising stopped");
                progress(PhoneEvent::HandshakeComplete);
            }
            Event::RequestHandled { command, status } => {
                tracing::debug!(%command, %status, "request handled");
                if command != CtapCommand::GetInfo {
                    self.answered = Some((command, status));
                }
                progress(PhoneEvent::RequestHandled { command, status });
            }
            _ => {}
        }
        Ok(())
    }

    /// Hands one tunnel message to the session: before the handshake inline (no handler call
    /// can happen), afterwards on the blocking pool (the handler signs and writes the store).
    async fn feed(&mut self, now: Time, message: Vec<u8>) -> Result<(), PhoneError> {
        if !self.handshake_done {
            return self
                .session()
                .handle_tunnel_message(now, &message)
                .map_err(PhoneError::Session);
        }
        let session = Arc::clone(&self.session);
        tokio::task::spawn_blocking(move || {
            session
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .handle_tunnel_message(now, &message)
        })
        .await
        .map_err(|_| PhoneError::Internal("the session worker panicked"))?
        .map_err(PhoneError::Session)
    }
}

/// The session's randomness (ephemeral key, advert nonce): 32 bytes from the operating system,
/// expanded with SHA-256 in counter mode. Cannot fail once seeded, as the sans-I/O core wants.
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
                hash.update(self.seed.as_slice());
                hash.update(self.counter.to_le_bytes());
                self.block.copy_from_slice(&hash.finalize());
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

impl TryCryptoRng for SessionRng {}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
