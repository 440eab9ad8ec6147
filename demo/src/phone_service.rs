//! The simulated phone as a running companion app: it receives deliveries, verifies them, asks
//! its scripted user, claims the `FIDO:/` URL and answers as the hybrid authenticator.
//!
//! ```text
//!  bridge ──incomingDeliveries (dev push sink)──► PhoneService ──verify envelope (JWKS)
//!         ◄──pendingDeliveries every poll_interval─┘ (pushes off)        │
//!                                                                      policy
//!        ┌───────────────┬──────────────┬─────────────────┬──────────────┴──────┐
//!     Approve          Ignore          Deny          WrongNumber            Unanswered
//!   claim, answer    claim, stay    denyDelivery     denyDelivery           nothing
//!   (tunnel, advert,  out of range   (DECLINED)       (NOT_ME)        (the delivery expires)
//!    one CTAP command)
//! ```
//!
//! [`PhoneService::start`] registers the install for the account (platform, a dummy push token
//! kept in the state directory, app id, name), then follows the account's deliveries: through the
//! `incomingDeliveries` subscription, which is how the bridge's development push sink hands
//! deliveries over, or — with [`PhoneConfig::pushes`] off, as for a user who turned notifications
//! off — by polling `pendingDeliveries` (the companion library's pull fallback). A broken
//! subscription is polled over and reopened with backoff.
//!
//! Each new open delivery is handled in its own task, in the order a companion app must follow
//! (see the `companion` crate docs): verify the envelope before anything else (an envelope that
//! does not verify is dropped and reported as [`ServiceEvent::Rejected`]), apply the [`Policy`],
//! and only on approval claim the URL and hand it to [`SimulatedPhone::answer`]. The passkeys
//! live in [`PhoneConfig::state_dir`], so a registration is there for later sign-ins, with user
//! verification on by default.
//!
//! Everything the service does is published as [`ServiceEvent`]s ([`PhoneService::events`]):
//! the demo prints them, tests await them instead of sleeping. Events carry delivery ids and
//! public context, never the `FIDO:/` URL or a token.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use companion::authenticator::{SoftAuthenticator, SoftAuthenticatorConfig, UserPolicy};
use companion::phone::{Advertiser, AnswerOptions, PhoneOutcome, PhonePolicy, SimulatedPhone};
use companion::{
    BridgeConfig, ClientError, CompanionClient, Delivery, DenyReason, Platform, RequestKind,
    TokenProvider,
};
use device_agent::tunnel::TunnelConfig;
use hybrid::domain::DomainId;
use thiserror::Error;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// File in the state directory holding this install's (dummy) push token.
const PUSH_TOKEN_FILE: &str = "push-token";
/// Subdirectory of the state directory holding the passkeys.
const PASSKEY_DIR: &str = "passkeys";
/// Delivery ids remembered to avoid handling one twice (subscription replay, polling).
const SEEN_CAPACITY: usize = 4096;
/// Longest wait before reopening a broken subscription.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Capacity of the event channel (slow listeners lose the oldest events, never block the phone).
const EVENT_CAPACITY: usize = 1024;

/// What the simulated person does with a request that reaches the phone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Compare the number, approve, and let the phone answer (user verification as configured).
    #[default]
    Approve,
    /// Tap "no": `denyDelivery` with reason `DECLINED`.
    Deny,
    /// The number on the phone does not match the device's, so this was not the user's request:
    /// `denyDelivery` with reason `NOT_ME` (the bridge flags the device in the audit log).
    WrongNumber,
    /// Approve on the app, but the phone is not near the device: the URL is claimed, and no
    /// tunnel is opened and nothing advertised, so the device never finds the phone.
    Ignore,
    /// Never react: nothing is claimed or denied, so the delivery expires.
    Unanswered,
}

impl Policy {
    /// Parses `approve`, `deny`, `wrong-number`, `ignore` or `unanswered`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approve" => Some(Self::Approve),
            "deny" => Some(Self::Deny),
            "wrong-number" => Some(Self::WrongNumber),
            "ignore" => Some(Self::Ignore),
            "unanswered" => Some(Self::Unanswered),
            _ => None,
        }
    }
}

/// How a [`PhoneService`] is set up.
#[derive(Clone)]
#[non_exhaustive]
pub struct PhoneConfig {
    /// The bridge, as the companion library reaches it.
    pub bridge: BridgeConfig,
    /// Where the passkeys and the push token are kept (created if missing).
    pub state_dir: PathBuf,
    /// Push platform registered for the install. Default FCM.
    pub platform: Platform,
    /// APNs topic or FCM app id registered for the install.
    pub app_id: String,
    /// Name of the install shown to the user.
    pub display_name: String,
    /// The scripted user (changeable later with [`PhoneService::set_policy`]).
    pub policy: Policy,
    /// Follow `incomingDeliveries` (true, default) or poll `pendingDeliveries` (false: the user
    /// turned notifications off).
    pub pushes: bool,
    /// How often to poll when pushes are off or the subscription is broken. Default 200 ms.
    pub poll_interval: Duration,
    /// The relay's base URL, where the phone registers tunnels (`ws://127.0.0.1:PORT` locally).
    pub relay: String,
    /// The tunnel domain id the phone advertises: the name under which devices reach
    /// [`Self::relay`] (devices map its host name to the relay).
    pub domain_id: DomainId,
    /// How the phone opens tunnels (`danger_allow_plaintext` for a loopback `ws://` relay).
    pub tunnel: TunnelConfig,
    /// Signal strength the simulated medium reports for the phone's adverts, dBm.
    pub rssi: Option<i16>,
    /// Verify the user (screen lock) and set the UV flag. Default on.
    pub user_verification: bool,
    /// Keep signature counters on new passkeys (on, default) or always sign 0, as synced
    /// passkeys do.
    pub signature_counter: bool,
}

impl fmt::Debug for PhoneConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneConfig")
            .field("bridge", &self.bridge)
            .field("state_dir", &self.state_dir)
            .field("platform", &self.platform)
            .field("policy", &self.policy)
            .field("pushes", &self.pushes)
            .field("relay", &self.relay)
            .field("domain_id", &self.domain_id)
            .field("rssi", &self.rssi)
            .field("user_verification", &self.user_verification)
            .field("signature_counter", &self.signature_counter)
            .finish_non_exhaustive()
    }
}

impl PhoneConfig {
    /// Defaults for a phone of the bridge at `bridge_url` keeping its state in `state_dir`,
    /// registering tunnels at `relay` and advertising `domain_id`: FCM with a dummy token,
    /// approve with user verification, pushes on, -50 dBm, signature counters on.
    pub fn new(
        bridge_url: impl Into<String>,
        state_dir: impl Into<PathBuf>,
        relay: impl Into<String>,
        domain_id: DomainId,
    ) -> Self {
        Self {
            bridge: BridgeConfig::new(bridge_url),
            state_dir: state_dir.into(),
            platform: Platform::Fcm,
            app_id: "dev.tether.simulated-phone".to_owned(),
            display_name: "Simulated phone".to_owned(),
            policy: Policy::Approve,
            pushes: true,
            poll_interval: Duration::from_millis(200),
            relay: relay.into(),
            domain_id,
            tunnel: TunnelConfig::default(),
            rssi: Some(-50),
            user_verification: true,
            signature_counter: true,
        }
    }
}

/// How a delivery reached the phone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The `incomingDeliveries` subscription (the development push sink).
    Push,
    /// Polling `pendingDeliveries` (pushes off).
    Pull,
}

/// What the phone service did; see [`PhoneService::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServiceEvent {
    /// A new open delivery arrived.
    Received {
        /// The delivery.
        delivery_id: String,
        /// How it arrived.
        source: Source,
    },
    /// Its envelope verified; this is what the phone shows its user.
    Verified {
        /// The delivery.
        delivery_id: String,
        /// Sign-in or registration.
        kind: RequestKind,
        /// The prompt, e.g. `Sign in to example.com on Quest 3 'Living room'?`.
        prompt: String,
        /// The number to compare with the device's.
        number_code: String,
    },
    /// The envelope did not verify (or the delivery could not be checked): nothing shown,
    /// nothing done.
    Rejected {
        /// The delivery.
        delivery_id: String,
        /// Why (no secrets).
        reason: String,
    },
    /// [`Policy::Unanswered`]: the prompt was left alone.
    Unanswered {
        /// The delivery.
        delivery_id: String,
    },
    /// The user declined.
    Denied {
        /// The delivery.
        delivery_id: String,
        /// `DECLINED` or `NOT_ME`.
        reason: DenyReason,
    },
    /// The URL was claimed (the phone now answers, or with [`Policy::Ignore`] stays away).
    Claimed {
        /// The delivery.
        delivery_id: String,
    },
    /// The phone's hybrid role ended.
    Answered {
        /// The delivery.
        delivery_id: String,
        /// What the phone answered (or that it ignored the request).
        outcome: PhoneOutcome,
    },
    /// A step failed (claim refused, tunnel, session...).
    Failed {
        /// The delivery.
        delivery_id: String,
        /// What failed (no secrets).
        error: String,
    },
    /// The subscription broke; the service polls and reopens it.
    SubscriptionLost {
        /// Why.
        error: String,
    },
}

impl ServiceEvent {
    /// The delivery the event is about, if any.
    pub fn delivery_id(&self) -> Option<&str> {
        match self {
            Self::Received { delivery_id, .. }
            | Self::Verified { delivery_id, .. }
            | Self::Rejected { delivery_id, .. }
            | Self::Unanswered { delivery_id }
            | Self::Denied { delivery_id, .. }
            | Self::Claimed { delivery_id }
            | Self::Answered { delivery_id, .. }
            | Self::Failed { delivery_id, .. } => Some(delivery_id),
            Self::SubscriptionLost { .. } => None,
        }
    }

    /// Whether the service is done with the delivery (nothing more will be published for it).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Rejected { .. }
                | Self::Unanswered { .. }
                | Self::Denied { .. }
                | Self::Answered { .. }
                | Self::Failed { .. }
        )
    }
}

impl fmt::Display for ServiceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Received { source, .. } => write!(
                f,
                "request received ({})",
                match source {
                    Source::Push => "push",
                    Source::Pull => "pull",
                }
            ),
            Self::Verified {
                prompt,
                number_code,
                ..
            } => write!(f, "{prompt} (number {number_code})"),
            Self::Rejected { reason, .. } => write!(f, "request dropped: {reason}"),
            Self::Unanswered { .. } => f.write_str("nobody answers the prompt"),
            Self::Denied { reason, .. } => write!(
                f,
                "declined ({})",
                match reason {
                    DenyReason::Declined => "DECLINED",
                    DenyReason::NotMe => "NOT_ME",
                }
            ),
            Self::Claimed { .. } => f.write_str("approved; link claimed"),
            Self::Answered { outcome, .. } => match outcome {
                PhoneOutcome::Answered { command, status } => {
                    write!(f, "answered {command} with {status}")
                }
                PhoneOutcome::Ignored => f.write_str("stayed out of range"),
                _ => write!(f, "{outcome:?}"),
            },
            Self::Failed { error, .. } => write!(f, "failed: {error}"),
            Self::SubscriptionLost { error } => write!(f, "subscription lost: {error}"),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The state directory or the push token file could not be used.
    #[error("phone state in {path}: {error}")]
    State {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The software authenticator (its passkey store) could not be opened.
    #[error("phone authenticator: {0}")]
    Authenticator(#[from] companion::authenticator::AuthenticatorError),
    /// The companion client failed (configuration, registration, subscription).
    #[error("companion: {0}")]
    Client(#[from] ClientError),
    /// The operating system gave no randomness for the push token.
    #[error("the operating system's random source failed")]
    Randomness,
}

/// Delivery ids already handled, oldest forgotten first.
#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// Records `id`; false if it was already there.
    fn insert(&mut self, id: &str) -> bool {
        if self.set.contains(id) {
            return false;
        }
        if self.order.len() == SEEN_CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

struct Shared {
    client: Arc<CompanionClient>,
    phone: SimulatedPhone,
    policy: Mutex<Policy>,
    relay: String,
    domain_id: DomainId,
    rssi: Option<i16>,
    user_verification: bool,
    events: broadcast::Sender<ServiceEvent>,
    seen: Mutex<Seen>,
}

impl Shared {
    fn emit(&self, event: ServiceEvent) {
        tracing::debug!(delivery = ?event.delivery_id(), %event, "phone");
        // No listener is fine.
        let _ = self.events.send(event);
    }

    fn policy(&self) -> Policy {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a delivery from the subscription or the pending list: new open ones get a task.
    fn dispatch(self: &Arc<Self>, delivery: Delivery, source: Source) {
        if !delivery.status.is_open() {
            return;
        }
        let fresh = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(&delivery.id);
        if !fresh {
            return;
        }
        let shared = Arc::clone(self);
        tokio::spawn(async move { shared.handle(delivery, source).await });
    }

    async fn handle(&self, delivery: Delivery, source: Source) {
        let id = delivery.id.clone();
        self.emit(ServiceEvent::Received {
            delivery_id: id.clone(),
            source,
        });
        // Verify before showing or doing anything; the delivery's own fields are unsigned.
        let envelope = match self.client.verify_envelope(&delivery.envelope).await {
            Ok(envelope) if envelope.delivery_id() == id => envelope,
            Ok(_) => {
                return self.emit(ServiceEvent::Rejected {
                    delivery_id: id,
                    reason: "the envelope names another delivery".to_owned(),
                });
            }
            Err(e) => {
                return self.emit(ServiceEvent::Rejected {
                    delivery_id: id,
                    reason: e.to_string(),
                });
            }
        };
        self.emit(ServiceEvent::Verified {
            delivery_id: id.clone(),
            kind: envelope.kind(),
            prompt: envelope.prompt(),
            number_code: envelope.number_code().to_owned(),
        });
        let policy = self.policy();
        let deny = match policy {
            Policy::Unanswered => {
                return self.emit(ServiceEvent::Unanswered { delivery_id: id });
            }
            Policy::Deny => Some(DenyReason::Declined),
            Policy::WrongNumber => Some(DenyReason::NotMe),
            Policy::Approve | Policy::Ignore => None,
        };
        if let Some(reason) = deny {
            return match self.client.deny(&id, reason).await {
                Ok(_) => self.emit(ServiceEvent::Denied {
                    delivery_id: id,
                    reason,
                }),
                Err(e) => self.emit(ServiceEvent::Failed {
                    delivery_id: id,
                    error: format!("deny: {e}"),
                }),
            };
        }
        let claimed = match self.client.claim(&id).await {
            Ok(claimed) => claimed,
            Err(e) => {
                return self.emit(ServiceEvent::Failed {
                    delivery_id: id,
                    error: format!("claim: {e}"),
                });
            }
        };
        self.emit(ServiceEvent::Claimed {
            delivery_id: id.clone(),
        });
        let url = match claimed.parse() {
            Ok(url) => url,
            Err(e) => {
                return self.emit(ServiceEvent::Failed {
                    delivery_id: id,
                    error: format!("the claimed link is invalid ({})", e.code()),
                });
            }
        };
        drop(claimed);
        let mut options = AnswerOptions::new(self.relay.clone(), self.domain_id);
        options.rssi = self.rssi;
        options.policy = if policy == Policy::Ignore {
            PhonePolicy::Ignore
        } else {
            PhonePolicy::Approve {
                user_verification: self.user_verification,
            }
        };
        match self.phone.answer(&url, options, &mut |_| {}).await {
            Ok(outcome) => self.emit(ServiceEvent::Answered {
                delivery_id: id,
                outcome,
            }),
            Err(e) => self.emit(ServiceEvent::Failed {
                delivery_id: id,
                error: e.to_string(),
            }),
        }
    }

    /// Follows the account's deliveries until `stop` turns true, starting with the already
    /// open subscription `first` when pushes are on.
    async fn follow(
        self: Arc<Self>,
        mut first: Option<companion::DeliveryWatch>,
        pushes: bool,
        poll: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = poll;
        loop {
            if *stop.borrow() {
                return;
            }
            if !pushes {
                self.poll_once().await;
                tokio::select! {
                    _ = stop.changed() => return,
                    () = tokio::time::sleep(poll) => {}
                }
                continue;
            }
            let opened = match first.take() {
                Some(watch) => Ok(watch),
                None => self.client.incoming_deliveries().await,
            };
            let error = match opened {
                Ok(mut watch) => {
                    backoff = poll;
                    loop {
                        tokio::select! {
                            _ = stop.changed() => {
                                watch.close().await;
                                return;
                            }
                            next = watch.next() => match next {
                                Some(Ok(delivery)) => self.dispatch(delivery, Source::Push),
                                Some(Err(e)) => break e.to_string(),
                                None => break "the bridge closed the subscription".to_owned(),
                            },
                        }
                    }
                }
                Err(e) => e.to_string(),
            };
            self.emit(ServiceEvent::SubscriptionLost { error });
            // Catch up by polling once, then reopen after a growing pause.
            self.poll_once().await;
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn poll_once(self: &Arc<Self>) {
        match self.client.pending_deliveries().await {
            Ok(pending) => {
                for delivery in pending {
                    self.dispatch(delivery, Source::Pull);
                }
            }
            Err(e) => tracing::debug!(error = %e, "polling pending deliveries failed"),
        }
    }
}

/// A running simulated phone. Stops when [`PhoneService::stop`] is called or it is dropped.
pub struct PhoneService {
    shared: Arc<Shared>,
    companion_id: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for PhoneService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneService")
            .field("companion_id", &self.companion_id)
            .field("policy", &self.shared.policy())
            .finish_non_exhaustive()
    }
}

impl Drop for PhoneService {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl PhoneService {
    /// Opens the phone's state, registers the install with the bridge (authenticated by
    /// `tokens`) and starts following deliveries; the phone advertises on `advertiser`.
    /// `clock` is the companion's clock for envelope checks.
    ///
    /// When this returns, the install is registered and (with pushes on) the subscription is
    /// open, so a delivery requested afterwards reaches the phone.
    ///
    /// # Errors
    ///
    /// A [`ServiceError`] naming what could not be set up.
    pub async fn start(
        config: PhoneConfig,
        tokens: Arc<dyn TokenProvider>,
        clock: Arc<dyn companion::Clock>,
        advertiser: Arc<dyn Advertiser>,
    ) -> Result<Self, ServiceError> {
        let push_token = load_or_create_push_token(&config.state_dir)?;
        let authenticator = SoftAuthenticator::open(
            config.state_dir.join(PASSKEY_DIR),
            SoftAuthenticatorConfig {
                signature_counter: config.signature_counter,
                policy: UserPolicy {
                    approve: true,
                    user_verification: config.user_verification,
                },
                ..SoftAuthenticatorConfig::default()
            },
        )?;
        let phone = SimulatedPhone::new(authenticator, advertiser, config.tunnel.clone());
        let client = Arc::new(CompanionClient::with_clock(
            config.bridge.clone(),
            tokens,
            clock,
        )?);
        let registered = client
            .register(
                config.platform,
                &push_token,
                &config.app_id,
                &config.display_name,
            )
            .await?;
        // Learn the account now, so the first envelope check needs one request less.
        client.account_id().await?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            client,
            phone,
            policy: Mutex::new(config.policy),
            relay: config.relay.clone(),
            domain_id: config.domain_id,
            rssi: config.rssi,
            user_verification: config.user_verification,
            events,
            seen: Mutex::new(Seen::default()),
        });
        let (stop, stopped) = watch::channel(false);
        // With pushes on, open the subscription before returning, so nothing requested from
        // now on can slip past (the subscription also replays what is already pending).
        let first = if config.pushes {
            Some(shared.client.incoming_deliveries().await?)
        } else {
            None
        };
        let task = tokio::spawn(Arc::clone(&shared).follow(
            first,
            config.pushes,
            config.poll_interval,
            stopped,
        ));
        Ok(Self {
            shared,
            companion_id: registered.id,
            stop,
            task: Some(task),
        })
    }

    /// The install's companion id at the bridge.
    pub fn companion_id(&self) -> &str {
        &self.companion_id
    }

    /// The phone's companion client (e.g. to confirm a pairing code the device shows).
    pub fn client(&self) -> &CompanionClient {
        &self.shared.client
    }

    /// The simulated phone (e.g. to read its passkeys).
    pub fn phone(&self) -> &SimulatedPhone {
        &self.shared.phone
    }

    /// The scripted user's current policy.
    pub fn policy(&self) -> Policy {
        self.shared.policy()
    }

    /// Changes the scripted user for deliveries verified from now on.
    pub fn set_policy(&self, policy: Policy) {
        *self
            .shared
            .policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// Everything the service does from now on.
    pub fn events(&self) -> broadcast::Receiver<ServiceEvent> {
        self.shared.events.subscribe()
    }

    /// Stops following deliveries (requests being answered are left to finish) and waits for
    /// the follower to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// This install's push token: random once, then kept in the state directory (so the demo's
/// later runs are the same install).
fn load_or_create_push_token(dir: &Path) -> Result<String, ServiceError> {
    let state = |path: &Path, error| ServiceError::State {
        path: path.to_path_buf(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(|e| state(dir, e))?;
    let path = dir.join(PUSH_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(state(&path, e)),
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| ServiceError::Randomness)?;
    // A dummy FCM registration token: the development sink never sends it anywhere.
    let token = format!("simulated-{}", hex::encode(bytes));
    std::fs::write(&path, &token).map_err(|e| state(&path, e))?;
    Ok(token)
}
