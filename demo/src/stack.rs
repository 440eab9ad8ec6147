//! Everything in one process: the bridge (with its relay), the simulated BLE medium, the
//! simulated phone and the device agent's configuration.
//!
//! ```text
//!   Stack::start(state dir)
//!     ├─ bridge on 127.0.0.1 (SQLite, signing keys, development issuer in <dir>/bridge;
//!     │  development push sink; relay at /cable/…)
//!     ├─ SimMedium::in_process()
//!     ├─ PhoneService for the account (passkeys in <dir>/phone), advertising on the medium,
//!     │  registering tunnels at the bridge's relay under domain id DEMO_DOMAIN
//!     └─ AgentConfig (device key in <dir>/device) whose tunnel map sends DEMO_DOMAIN's host
//!        name to the same relay
//! ```
//!
//! [`Stack::register`] and [`Stack::sign_in`] pair the device first if it is not paired yet
//! (the phone confirms the code the agent reports), then run `device_agent::flow`.
//!
//! The bridge listens on a loopback port. Its `public_url` (the audience of device and
//! companion tokens and the issuer of envelopes) is `http://127.0.0.1:<port>`, and the agent
//! remembers the bridge it paired with, so the port is kept in `<dir>/bridge/port` and reused by
//! later runs; when it is taken the next run pairs the device again with the new address.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bridge::clock::{SharedClock, SystemClock};
use bridge::config::{Config, Limits};
use bridge::state::AppState;
use device_agent::bridge_client::BridgeConfig as AgentBridgeConfig;
use device_agent::flow::{self, AgentConfig, AgentError, Progress};
use device_agent::tunnel::TunnelConfig;
use hybrid::domain::DomainId;
use tether_ble::sim::SimMedium;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::identity::{BridgeClock, DevTokens, IdentityError};
use crate::phone_service::{PhoneConfig, PhoneService, ServiceError};

/// The tunnel domain id the demo's phone advertises (a hashed id: its host name is mapped to
/// the in-process relay).
pub const DEMO_DOMAIN: DomainId = DomainId(256);
/// The account the demo signs in to.
pub const DEMO_ACCOUNT: &str = "demo";
/// The device's name and model when it pairs.
pub const DEVICE_NAME: &str = "Demo headset";
/// The device's model.
pub const DEVICE_MODEL: &str = "Simulated headset";

/// Why the demo could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The state directory could not be used.
    #[error("state directory {path}: {error}")]
    State {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The bridge did not start.
    #[error("bridge: {0}")]
    Bridge(String),
    /// The simulated phone did not start.
    #[error("simulated phone: {0}")]
    Phone(#[from] ServiceError),
    /// The development identity issuer could not be used.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The simulated medium could not be used.
    #[error("simulated BLE: {0}")]
    Ble(#[from] tether_ble::BleError),
    /// The phone could not confirm the pairing code.
    #[error("the phone could not confirm the pairing code: {0}")]
    Pairing(String),
    /// The device agent failed; its exit code is [`AgentError::exit_code`].
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// How the stack is set up.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StackConfig {
    /// Where everything is kept (database, keys, device identity, passkeys).
    pub state_dir: PathBuf,
    /// The account the phone signs in to.
    pub account: String,
    /// The bridge's limits (the benchmark raises the per-device request rate).
    pub limits: Limits,
    /// The relay's limit of new tunnels per address per minute (everything here is one
    /// address).
    pub relay_new_tunnels_per_minute: u32,
}

impl StackConfig {
    /// Defaults: account [`DEMO_ACCOUNT`], the bridge's default limits.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            account: DEMO_ACCOUNT.to_owned(),
            limits: Limits::default(),
            relay_new_tunnels_per_minute: bridge::relay::RelayConfig::default()
                .new_tunnels_per_address_per_minute,
        }
    }
}

/// The running stack. Dropping it stops the bridge.
pub struct Stack {
    /// The bridge's base URL (`http://127.0.0.1:PORT`).
    pub bridge_url: String,
    /// The bridge's state (database, clock, issuer).
    pub state: AppState,
    /// The simulated phone.
    pub phone: PhoneService,
    /// The simulated BLE medium shared by the phone and the agent.
    pub medium: SimMedium,
    /// The device agent's configuration.
    pub agent: AgentConfig,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("bridge_url", &self.bridge_url)
            .field("phone", &self.phone)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn state_error(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |error| DemoError::State {
        path: path.to_path_buf(),
        error,
    }
}

/// Binds the port an earlier run used, if it is free, else any free loopback port.
async fn bind_loopback(port_file: &Path) -> Result<TcpListener, DemoError> {
    if let Some(port) = std::fs::read_to_string(port_file)
        .ok()
        .and_then(|text| text.trim().parse::<u16>().ok())
        && let Ok(listener) = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await
    {
        return Ok(listener);
    }
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| DemoError::Bridge(format!("cannot listen on 127.0.0.1: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| DemoError::Bridge(e.to_string()))?
        .port();
    std::fs::write(port_file, port.to_string()).map_err(state_error(port_file))?;
    Ok(listener)
}

impl Stack {
    /// Starts the bridge, the medium and the phone.
    ///
    /// # Errors
    ///
    /// A [`DemoError`] naming the part that did not start.
    pub async fn start(config: StackConfig) -> Result<Self, DemoError> {
        let dir = &config.state_dir;
        let bridge_dir = dir.join("bridge");
        std::fs::create_dir_all(&bridge_dir).map_err(state_error(&bridge_dir))?;
        let listener = bind_loopback(&bridge_dir.join("port")).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| DemoError::Bridge(e.to_string()))?;
        let bridge_url = format!("http://{addr}");
        let mut bridge_config = Config {
            data_dir: bridge_dir,
            public_url: bridge_url.clone(),
            listen: addr,
            limits: config.limits.clone(),
            ..Config::default()
        };
        bridge_config.relay.new_tunnels_per_address_per_minute =
            config.relay_new_tunnels_per_minute;
        let clock: SharedClock = Arc::new(SystemClock);
        let dev_issuer_key = bridge_config.dev_issuer_key_file();
        let state = AppState::build(bridge_config, Arc::clone(&clock))
            .await
            .map_err(|e| DemoError::Bridge(e.to_string()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = state.clone();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = bridge::serve(listener, serving, shutdown).await {
                tracing::error!(error = %e, "the bridge stopped");
            }
        });

        let medium = SimMedium::in_process();
        let relay = format!("ws://{addr}");
        // The relay is on loopback without TLS: plaintext tunnels are allowed for this one
        // local address only (`danger_allow_plaintext`), on both the phone's and the agent's
        // side. Tunnel contents are end-to-end encrypted (Noise) either way.
        let plaintext_loopback = TunnelConfig {
            danger_allow_plaintext: true,
            ..TunnelConfig::default()
        };
        let mut phone_config =
            PhoneConfig::new(&bridge_url, dir.join("phone"), relay.clone(), DEMO_DOMAIN);
        phone_config.tunnel = plaintext_loopback.clone();
        let tokens = DevTokens::from_key_file(
            &dev_issuer_key,
            config.account.clone(),
            bridge_url.clone(),
            Arc::clone(&clock),
        )?;
        let phone = PhoneService::start(
            phone_config,
            Arc::new(tokens),
            Arc::new(BridgeClock(clock)),
            Arc::new(medium.clone()),
        )
        .await?;

        let mut tunnel = plaintext_loopback;
        if let Some(domain) = DEMO_DOMAIN.domain() {
            tunnel.domains.insert(domain, relay);
        }
        let mut agent = AgentConfig::new(AgentBridgeConfig::new(&bridge_url), dir.join("device"));
        agent.tunnel = tunnel;
        Ok(Self {
            bridge_url,
            state,
            phone,
            medium,
            agent,
            stop: Some(stop),
            server: Some(server),
        })
    }

    /// Pairs the device with the phone's account: the agent starts pairing and the phone
    /// confirms the code it reports.
    ///
    /// # Errors
    ///
    /// [`DemoError::Agent`] or [`DemoError::Pairing`].
    pub async fn pair(
        &self,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<String, DemoError> {
        let (codes, mut code_rx) = mpsc::unbounded_channel::<String>();
        let client = self.phone.client();
        let mut forward = |p: Progress| {
            if let Progress::Pairing { code, .. } = &p {
                let _ = codes.send(code.clone());
            }
            progress(p);
        };
        let pairing = flow::pair(&self.agent, DEVICE_NAME, DEVICE_MODEL, &mut forward);
        let confirming = async {
            match code_rx.recv().await {
                Some(code) => client
                    .confirm_pairing(&code, None)
                    .await
                    .map(|_| ())
                    .map_err(|e| DemoError::Pairing(e.to_string())),
                // The agent ended before showing a code; its own error says why.
                None => Ok(()),
            }
        };
        tokio::pin!(pairing);
        tokio::pin!(confirming);
        let mut confirmed = false;
        loop {
            tokio::select! {
                result = &mut pairing => return Ok(result?),
                result = &mut confirming, if !confirmed => {
                    result?;
                    confirmed = true;
                }
            }
        }
    }

    /// Registers a passkey: pairs first if needed, then `device_agent::flow::register`.
    /// Returns the `RegistrationResponseJSON`.
    ///
    /// # Errors
    ///
    /// A [`DemoError`]; agent failures as [`DemoError::Agent`].
    pub async fn register(
        &self,
        options_json: &str,
        origin: &str,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<serde_json::Value, DemoError> {
        self.run(Ceremony::Register, options_json, origin, progress)
            .await
    }

    /// Signs in: pairs first if needed, then `device_agent::flow::sign_in`. Returns the
    /// `AuthenticationResponseJSON`.
    ///
    /// # Errors
    ///
    /// A [`DemoError`]; agent failures as [`DemoError::Agent`].
    pub async fn sign_in(
        &self,
        options_json: &str,
        origin: &str,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<serde_json::Value, DemoError> {
        self.run(Ceremony::SignIn, options_json, origin, progress)
            .await
    }

    async fn run(
        &self,
        ceremony: Ceremony,
        options_json: &str,
        origin: &str,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<serde_json::Value, DemoError> {
        let mut paired_now = false;
        loop {
            // The scanner listens before the request exists, so the phone's first advert is
            // heard the moment it is sent.
            let mut scanner = self.medium.scanner(self.agent.scan)?;
            let result = match ceremony {
                Ceremony::Register => {
                    flow::register(&self.agent, options_json, origin, &mut scanner, progress).await
                }
                Ceremony::SignIn => {
                    flow::sign_in(&self.agent, options_json, origin, &mut scanner, progress).await
                }
            };
            match result {
                Err(AgentError::NotPaired) if !paired_now => {
                    self.pair(progress).await?;
                    paired_now = true;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Stops the phone and the bridge and waits for the bridge to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

#[derive(Clone, Copy)]
enum Ceremony {
    Register,
    SignIn,
}
