//! The end-to-end world: a real bridge on `127.0.0.1:0` (its relay included), the simulated
//! phone service, an in-process simulated BLE medium and a device agent configuration, with a
//! knob for every failure the end-to-end tests provoke.
//!
//! ```text
//!  World::start(WorldConfig)
//!   ├─ bridge: ManualClock (starts at the real time), SQLite in a temporary directory or a
//!   │          fresh PostgreSQL schema; development issuer and push sink; relay
//!   ├─ SimMedium::in_process()
//!   ├─ PhoneService (account `alice`): policy, pushes on/off, RSSI, UV, signature counter
//!   └─ AgentConfig: on the bridge's clock; the phone's tunnel domain mapped to the relay, or
//!                   to a RelayProxy (drops, bit flips) or a RefusingRelay (HTTP 404/409)
//! ```
//!
//! Everything travels through real sockets: GraphQL over HTTP and WebSocket, tunnels over
//! WebSocket, adverts over the medium. Tests await events (agent [`Progress`], phone
//! [`ServiceEvent`]s) rather than sleeping, and read the bridge's final word with
//! [`World::delivery`].
//!
//! The agent, the phone and the development issuer all use the bridge's [`ManualClock`], so
//! [`World::expire_deliveries`] (advance past the five minutes, run the sweeper) expires a
//! delivery without waiting.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bridge::clock::{Clock as _, ManualClock, SharedClock, SystemClock};
use bridge::config::Config;
use bridge::state::AppState;
use bridge::store::Store;
use companion::{BridgeConfig as CompanionBridgeConfig, CompanionClient, Delivery, Platform};
use device_agent::bridge_client::BridgeConfig as AgentBridgeConfig;
use device_agent::flow::{self, AgentConfig, AgentError, Progress};
use device_agent::tunnel::TunnelConfig;
use futures_util::{SinkExt as _, StreamExt as _};
use hybrid::domain::DomainId;
use serde_json::{Value, json};
use tether_ble::ScanConfig;
use tether_ble::sim::SimMedium;
use tether_demo::identity::{BridgeClock, DevTokens};
use tether_demo::phone_service::{PhoneConfig, PhoneService, Policy, ServiceEvent};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The tunnel domain id the world's phone advertises.
pub const DOMAIN: DomainId = DomainId(256);
/// The account the world's phone is signed in to.
pub const ACCOUNT: &str = "alice";
/// The relying party of the world's ceremonies.
pub const RP_ID: &str = "example.com";
/// The device's name when it pairs.
pub const DEVICE_NAME: &str = "Living room";
/// The device's model when it pairs.
pub const DEVICE_MODEL: &str = "Quest 3";
/// How long waiting for an awaited event may take before a test fails.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// Why the world could not do something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorldError {
    /// Setting up a socket, directory or database failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The phone service failed to start.
    #[error("phone: {0}")]
    Phone(#[from] tether_demo::phone_service::ServiceError),
    /// A companion client call failed.
    #[error("companion: {0}")]
    Companion(#[from] companion::ClientError),
    /// The agent failed where the test expected success.
    #[error("agent: {0}")]
    Agent(#[from] AgentError),
    /// An awaited event did not come in time, or its source ended.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A GraphQL call did not give the expected shape.
    #[error("unexpected GraphQL answer: {0}")]
    Graphql(String),
}

/// Which database the world's bridge uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Db {
    /// SQLite in the world's temporary directory.
    Sqlite,
    /// PostgreSQL at this URL, in a fresh schema.
    Postgres(String),
}

/// The world's knobs. [`WorldConfig::default`] is the happy path. (Not `non_exhaustive`, so
/// tests can write `WorldConfig { policy: Policy::Deny, ..WorldConfig::default() }`.)
#[derive(Clone, Debug)]
pub struct WorldConfig {
    /// The database.
    pub db: Db,
    /// The phone's scripted user.
    pub policy: Policy,
    /// The phone follows the push subscription (true) or polls pending deliveries (false).
    pub pushes: bool,
    /// The phone's advert strength, dBm.
    pub phone_rssi: Option<i16>,
    /// The agent's proximity floor, dBm.
    pub rssi_floor: Option<i16>,
    /// How long the agent looks for the phone (`None`: until the delivery expires).
    pub discovery_timeout: Option<Duration>,
    /// The phone verifies the user (UV flag).
    pub user_verification: bool,
    /// The phone keeps signature counters (false: always 0).
    pub signature_counter: bool,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            db: Db::Sqlite,
            policy: Policy::Approve,
            pushes: true,
            phone_rssi: Some(-50),
            rssi_floor: Some(tether_ble::DEFAULT_RSSI_FLOOR),
            discovery_timeout: Some(Duration::from_secs(20)),
            user_verification: true,
            signature_counter: true,
        }
    }
}

/// The bridge's manual clock as the device agent's clock.
#[derive(Clone, Debug)]
struct AgentClock(ManualClock);

impl device_agent::bridge_client::Clock for AgentClock {
    fn now_unix_secs(&self) -> i64 {
        self.0.now_secs()
    }
}

/// The running world. Dropping it stops the bridge and the phone.
pub struct World {
    /// The bridge's base URL (`http://127.0.0.1:PORT`).
    pub bridge_url: String,
    /// The bridge's state (store, issuer, clock).
    pub state: AppState,
    /// The bridge's clock (the agent's and the phone's too).
    pub clock: ManualClock,
    /// The simulated BLE medium.
    pub medium: SimMedium,
    /// The simulated phone of [`ACCOUNT`].
    pub phone: PhoneService,
    /// The device agent's configuration.
    pub agent: AgentConfig,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    dir: tempfile::TempDir,
}

impl fmt::Debug for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World")
            .field("bridge_url", &self.bridge_url)
            .field("phone", &self.phone)
            .finish_non_exhaustive()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn setup(what: &str) -> impl FnOnce(&dyn fmt::Display) -> WorldError + '_ {
    move |e| WorldError::Setup(format!("{what}: {e}"))
}

impl World {
    /// Starts the bridge, the medium and the phone, and prepares the agent's configuration
    /// (not yet paired: see [`World::pair`]).
    ///
    /// # Errors
    ///
    /// [`WorldError::Setup`] or [`WorldError::Phone`].
    pub async fn start(config: WorldConfig) -> Result<Self, WorldError> {
        let dir = tempfile::tempdir().map_err(|e| setup("temporary directory")(&e))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| setup("listen")(&e))?;
        let addr = listener.local_addr().map_err(|e| setup("listen")(&e))?;
        let bridge_url = format!("http://{addr}");
        let mut bridge_config = Config {
            data_dir: dir.path().join("bridge"),
            public_url: bridge_url.clone(),
            listen: addr,
            ..Config::default()
        };
        // Tests make several requests a minute from one device and one address.
        bridge_config.limits.deliveries_per_device_per_minute = 1_000;
        bridge_config.limits.deliveries_per_account_per_minute = 1_000;
        bridge_config.relay.new_tunnels_per_address_per_minute = 1_000;
        std::fs::create_dir_all(&bridge_config.data_dir)
            .map_err(|e| setup("bridge directory")(&e))?;
        let store = match &config.db {
            Db::Sqlite => Store::connect(&bridge_config.database_url(), 4).await,
            Db::Postgres(url) => {
                let schema = format!("e2e_{}", uuid::Uuid::new_v4().simple());
                Store::connect_with_schema(url, 4, Some(&schema)).await
            }
        }
        .map_err(|e| setup("database")(&e))?;
        // The real time, frozen: tokens, envelopes and FIDO URLs all agree, and only
        // `expire_deliveries` moves it.
        let clock = ManualClock::new(SystemClock.now_ms());
        let shared: SharedClock = Arc::new(clock.clone());
        let state = AppState::with_store(bridge_config.clone(), store, Arc::clone(&shared))
            .await
            .map_err(|e| setup("bridge state")(&e))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = state.clone();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = bridge::serve(listener, serving, shutdown).await {
                tracing::error!(error = %e, "bridge stopped");
            }
        });

        let medium = SimMedium::in_process();
        let relay = format!("ws://{addr}");
        // Loopback relay without TLS: plaintext tunnels are allowed for the tests only.
        let plaintext = TunnelConfig {
            danger_allow_plaintext: true,
            ..TunnelConfig::default()
        };
        let mut phone_config =
            PhoneConfig::new(&bridge_url, dir.path().join("phone"), relay.clone(), DOMAIN);
        phone_config.tunnel = plaintext.clone();
        phone_config.policy = config.policy;
        phone_config.pushes = config.pushes;
        phone_config.poll_interval = Duration::from_millis(100);
        phone_config.rssi = config.phone_rssi;
        phone_config.user_verification = config.user_verification;
        phone_config.signature_counter = config.signature_counter;
        phone_config.display_name = "Alice's phone".to_owned();
        let tokens = DevTokens::from_key_file(
            &bridge_config.dev_issuer_key_file(),
            ACCOUNT,
            bridge_url.clone(),
            Arc::clone(&shared),
        )
        .map_err(|e| setup("development issuer")(&e))?;
        let phone = PhoneService::start(
            phone_config,
            Arc::new(tokens),
            Arc::new(BridgeClock(Arc::clone(&shared))),
            Arc::new(medium.clone()),
        )
        .await?;

        let mut agent = AgentConfig::new(
            AgentBridgeConfig::new(&bridge_url),
            dir.path().join("device"),
        );
        agent.tunnel = plaintext;
        agent.tunnel.domains.insert(Self::domain(), relay);
        agent.scan = ScanConfig {
            rssi_floor: config.rssi_floor,
        };
        agent.discovery_timeout = config.discovery_timeout;
        agent.clock = Arc::new(AgentClock(clock.clone()));
        Ok(Self {
            bridge_url,
            state,
            clock,
            medium,
            phone,
            agent,
            addr,
            stop: Some(stop),
            dir,
        })
    }

    /// The host name of [`DOMAIN`], which the agent maps to a relay.
    pub fn domain() -> String {
        DOMAIN.domain().unwrap_or_default()
    }

    /// The bridge's relay (`ws://127.0.0.1:PORT`).
    pub fn relay_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Where the world keeps its files (bridge, phone, device).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bridge's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes the agent reach the phone's tunnel domain at `url` instead of the relay.
    pub fn map_relay(&mut self, url: impl Into<String>) {
        self.agent.tunnel.domains.insert(Self::domain(), url.into());
    }

    /// Pairs the device with [`ACCOUNT`]: the agent starts, the phone confirms the code.
    /// Returns the device id.
    ///
    /// # Errors
    ///
    /// [`WorldError::Agent`] or [`WorldError::Companion`].
    pub async fn pair(&self) -> Result<String, WorldError> {
        let (codes, mut code_rx) = mpsc::unbounded_channel::<String>();
        let mut report = |p: Progress| {
            if let Progress::Pairing { code, .. } = p {
                let _ = codes.send(code);
            }
        };
        let pairing = flow::pair(&self.agent, DEVICE_NAME, DEVICE_MODEL, &mut report);
        let confirm = async {
            let code = code_rx
                .recv()
                .await
                .ok_or(WorldError::Timeout("pairing code"))?;
            self.phone.client().confirm_pairing(&code, None).await?;
            Ok::<_, WorldError>(())
        };
        let (paired, confirmed) =
            tokio::time::timeout(EVENT_TIMEOUT, async { tokio::join!(pairing, confirm) })
                .await
                .map_err(|_| WorldError::Timeout("pairing"))?;
        confirmed?;
        Ok(paired?)
    }

    /// Starts a registration with `options_json` at `https://example.com` (the agent runs in
    /// its own task).
    ///
    /// # Errors
    ///
    /// [`WorldError::Setup`] if the medium refuses a scanner.
    pub fn start_register(&self, options_json: &str) -> Result<AgentRun, WorldError> {
        self.start_ceremony(true, options_json)
    }

    /// Starts a sign-in with `options_json` at `https://example.com`.
    ///
    /// # Errors
    ///
    /// [`WorldError::Setup`] if the medium refuses a scanner.
    pub fn start_sign_in(&self, options_json: &str) -> Result<AgentRun, WorldError> {
        self.start_ceremony(false, options_json)
    }

    fn start_ceremony(&self, register: bool, options_json: &str) -> Result<AgentRun, WorldError> {
        // The scanner exists before the request, so the phone's first advert is heard.
        let mut scanner = self
            .medium
            .scanner(self.agent.scan)
            .map_err(|e| setup("scanner")(&e))?;
        let agent = self.agent.clone();
        let options = options_json.to_owned();
        let (progress_tx, progress) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let origin = format!("https://{RP_ID}");
            let mut report = |p: Progress| {
                let _ = progress_tx.send(p);
            };
            if register {
                flow::register(&agent, &options, &origin, &mut scanner, &mut report).await
            } else {
                flow::sign_in(&agent, &options, &origin, &mut scanner, &mut report).await
            }
        });
        Ok(AgentRun {
            progress,
            seen: Vec::new(),
            task,
        })
    }

    /// Runs a registration to its end.
    ///
    /// # Errors
    ///
    /// [`WorldError::Setup`] or [`WorldError::Timeout`]; the agent's own failure is in
    /// [`Finished::result`].
    pub async fn register(&self, options_json: &str) -> Result<Finished, WorldError> {
        self.start_register(options_json)?.finish().await
    }

    /// Runs a sign-in to its end.
    ///
    /// # Errors
    ///
    /// As [`World::register`].
    pub async fn sign_in(&self, options_json: &str) -> Result<Finished, WorldError> {
        self.start_sign_in(options_json)?.finish().await
    }

    /// A development-issuer access token for `account`.
    ///
    /// # Errors
    ///
    /// [`WorldError::Setup`] if the issuer refuses.
    pub fn companion_token(&self, account: &str) -> Result<String, WorldError> {
        let issuer = self
            .state
            .dev_issuer
            .as_ref()
            .ok_or_else(|| WorldError::Setup("no development issuer".into()))?;
        issuer
            .mint(account, &self.bridge_url, self.clock.now_secs(), 3600)
            .map_err(|e| setup("token")(&e))
    }

    /// Another companion client, for `account` (a second install of Alice, or another
    /// account), on the bridge's clock. Not registered; call
    /// [`CompanionClient::register`] if it needs an install.
    ///
    /// # Errors
    ///
    /// [`WorldError::Setup`] or [`WorldError::Companion`].
    pub fn companion(&self, account: &str) -> Result<CompanionClient, WorldError> {
        let shared: SharedClock = Arc::new(self.clock.clone());
        // A second handle on the issuer key the bridge trusts.
        let key_file = self.state.config.dev_issuer_key_file();
        let tokens = DevTokens::from_key_file(
            &key_file,
            account,
            self.bridge_url.clone(),
            Arc::clone(&shared),
        )
        .map_err(|e| setup("development issuer")(&e))?;
        Ok(CompanionClient::with_clock(
            CompanionBridgeConfig::new(&self.bridge_url),
            Arc::new(tokens),
            Arc::new(BridgeClock(shared)),
        )?)
    }

    /// A second registered install (`"{name}"`, FCM) of `account`.
    ///
    /// # Errors
    ///
    /// As [`World::companion`], and registration failures.
    pub async fn registered_companion(
        &self,
        account: &str,
        name: &str,
    ) -> Result<CompanionClient, WorldError> {
        let client = self.companion(account)?;
        let token = format!("{account}-{}", uuid::Uuid::new_v4().simple());
        client
            .register(Platform::Fcm, &token, "dev.tether.test", name)
            .await?;
        Ok(client)
    }

    /// The delivery as the bridge reports it to [`ACCOUNT`]'s companion.
    ///
    /// # Errors
    ///
    /// [`WorldError::Companion`].
    pub async fn delivery(&self, id: &str) -> Result<Delivery, WorldError> {
        Ok(self.phone.client().delivery(id).await?)
    }

    /// Moves the bridge's clock past the five-minute lifetime and runs the expiry sweeper.
    /// Returns how many deliveries expired.
    ///
    /// # Errors
    ///
    /// [`WorldError::Setup`] if the sweep fails.
    pub async fn expire_deliveries(&self) -> Result<usize, WorldError> {
        self.clock
            .advance_ms(bridge::delivery::DELIVERY_LIFETIME_MS + 1_000);
        bridge::worker::sweep(&self.state)
            .await
            .map_err(|e| setup("sweep")(&e))
    }

    /// A GraphQL request with a bearer token; the whole JSON answer.
    ///
    /// # Errors
    ///
    /// [`WorldError::Graphql`] if the bridge does not answer JSON.
    pub async fn gql(
        &self,
        token: &str,
        query: &str,
        variables: Value,
    ) -> Result<Value, WorldError> {
        let graphql = |e: &dyn fmt::Display| WorldError::Graphql(e.to_string());
        reqwest::Client::new()
            .post(format!("{}/graphql", self.bridge_url))
            .bearer_auth(token)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .map_err(|e| graphql(&e))?
            .json()
            .await
            .map_err(|e| graphql(&e))
    }

    /// Revokes `device_id` through the GraphQL API as [`ACCOUNT`]; returns the device's new
    /// status.
    ///
    /// # Errors
    ///
    /// [`WorldError::Graphql`] if the bridge refused.
    pub async fn revoke_device(&self, device_id: &str) -> Result<String, WorldError> {
        let token = self.companion_token(ACCOUNT)?;
        let answer = self
            .gql(
                &token,
                "mutation($id: ID!) { revokeDevice(id: $id) { id status } }",
                json!({"id": device_id}),
            )
            .await?;
        answer["data"]["revokeDevice"]["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| WorldError::Graphql(answer.to_string()))
    }
}

/// A ceremony in progress: its progress reports as they come, and its result.
#[derive(Debug)]
pub struct AgentRun {
    progress: mpsc::UnboundedReceiver<Progress>,
    seen: Vec<Progress>,
    task: JoinHandle<Result<Value, AgentError>>,
}

impl AgentRun {
    /// Waits for the first progress report `pick` accepts (reports are kept for
    /// [`Finished::progress`]).
    ///
    /// # Errors
    ///
    /// [`WorldError::Timeout`] if the agent ends or [`EVENT_TIMEOUT`] passes first.
    pub async fn wait_for<T>(
        &mut self,
        what: &'static str,
        mut pick: impl FnMut(&Progress) -> Option<T>,
    ) -> Result<T, WorldError> {
        if let Some(found) = self.seen.iter().find_map(&mut pick) {
            return Ok(found);
        }
        tokio::time::timeout(EVENT_TIMEOUT, async {
            while let Some(progress) = self.progress.recv().await {
                let found = pick(&progress);
                self.seen.push(progress);
                if let Some(found) = found {
                    return Ok(found);
                }
            }
            Err(WorldError::Timeout(what))
        })
        .await
        .map_err(|_| WorldError::Timeout(what))?
    }

    /// Waits until the bridge stored the request; returns its delivery id.
    ///
    /// # Errors
    ///
    /// As [`AgentRun::wait_for`].
    pub async fn requested(&mut self) -> Result<String, WorldError> {
        self.wait_for("the request", |p| match p {
            Progress::Requested { delivery_id, .. } => Some(delivery_id.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the agent to end.
    ///
    /// # Errors
    ///
    /// [`WorldError::Timeout`] if it takes longer than [`EVENT_TIMEOUT`] (the task is
    /// aborted) or the task panicked.
    pub async fn finish(mut self) -> Result<Finished, WorldError> {
        let result = match tokio::time::timeout(EVENT_TIMEOUT, &mut self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => return Err(WorldError::Timeout("the agent (it panicked)")),
            Err(_) => {
                self.task.abort();
                return Err(WorldError::Timeout("the agent to finish"));
            }
        };
        while let Ok(progress) = self.progress.try_recv() {
            self.seen.push(progress);
        }
        let delivery_id = self.seen.iter().find_map(|p| match p {
            Progress::Requested { delivery_id, .. } => Some(delivery_id.clone()),
            _ => None,
        });
        Ok(Finished {
            result,
            progress: self.seen,
            delivery_id,
        })
    }
}

/// A finished ceremony.
#[derive(Debug)]
pub struct Finished {
    /// The response JSON, or the agent's error.
    pub result: Result<Value, AgentError>,
    /// Every progress report, in order.
    pub progress: Vec<Progress>,
    /// The delivery the agent requested, if it got that far.
    pub delivery_id: Option<String>,
}

impl Finished {
    /// The response, or the agent's error as a [`WorldError`].
    ///
    /// # Errors
    ///
    /// [`WorldError::Agent`].
    pub fn response(&self) -> Result<&Value, WorldError> {
        self.result
            .as_ref()
            .map_err(|e| WorldError::Agent(e.clone()))
    }

    /// The delivery id, or a [`WorldError::Timeout`] if the agent never got one.
    ///
    /// # Errors
    ///
    /// [`WorldError::Timeout`].
    pub fn delivery(&self) -> Result<&str, WorldError> {
        self.delivery_id
            .as_deref()
            .ok_or(WorldError::Timeout("a delivery id"))
    }
}

/// Waits for the first phone event `pick` accepts.
///
/// # Errors
///
/// [`WorldError::Timeout`] after [`EVENT_TIMEOUT`] or when the phone stopped.
pub async fn wait_for_phone<T>(
    events: &mut broadcast::Receiver<ServiceEvent>,
    what: &'static str,
    mut pick: impl FnMut(&ServiceEvent) -> Option<T>,
) -> Result<T, WorldError> {
    tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return Ok(found);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Err(WorldError::Timeout(what)),
            }
        }
    })
    .await
    .map_err(|_| WorldError::Timeout(what))?
}

// ---------------------------------------------------------------------------------------------
// Relay faults
// ---------------------------------------------------------------------------------------------

/// What a [`RelayProxy`] does to the tunnels it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Relay everything unchanged.
    None,
    /// Forward the client's first message (Noise handshake message 1), then close both sides
    /// instead of forwarding the phone's answer: the tunnel drops mid-handshake.
    DropMidHandshake,
    /// Flip one bit in the `n`-th message from the phone to the client (1-based): `2` is the
    /// first message after the handshake.
    FlipBitInPhoneMessage(usize),
}

/// A relay-in-the-middle for the client's side of tunnels: accepts
/// `/cable/connect/<routing id>/<tunnel id>` with `fido.cable`, joins the same path at the
/// upstream relay and moves binary messages between them, applying a [`Fault`].
#[derive(Debug)]
pub struct RelayProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for RelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RelayProxy {
    /// Listens on `127.0.0.1:0`, forwarding to `upstream` (`ws://HOST:PORT`).
    ///
    /// # Errors
    ///
    /// [`WorldError::Setup`] if it cannot listen.
    pub async fn start(upstream: String, fault: Fault) -> Result<Self, WorldError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| setup("proxy listen")(&e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| setup("proxy listen")(&e))?;
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(proxy_one(stream, upstream.clone(), fault));
            }
        });
        Ok(Self { addr, task })
    }

    /// The proxy's base URL (`ws://127.0.0.1:PORT`), to map the tunnel domain to.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

// The upgrade callback's error type is tungstenite's `ErrorResponse` (an HTTP response).
#[allow(clippy::result_large_err)]
async fn proxy_one(stream: TcpStream, upstream: String, fault: Fault) {
    let mut path = String::new();
    let capture = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        path = request.uri().path().to_owned();
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(hybrid::tunnel::SUBPROTOCOL),
        );
        Ok(response)
    };
    let Ok(mut client) = tokio_tungstenite::accept_hdr_async(stream, capture).await else {
        return;
    };
    let Ok(mut request) = format!("{upstream}{path}").into_client_request() else {
        return;
    };
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(hybrid::tunnel::SUBPROTOCOL),
    );
    let Ok((mut relay, _)) = tokio_tungstenite::connect_async(request).await else {
        let _ = client.close(None).await;
        return;
    };
    let mut from_phone = 0usize;
    let mut from_client = 0usize;
    loop {
        tokio::select! {
            message = client.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    from_client += 1;
                    if relay.send(Message::Binary(data)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            message = relay.next() => match message {
                Some(Ok(Message::Binary(data))) => {
                    from_phone += 1;
                    let data = match fault {
                        Fault::DropMidHandshake if from_client >= 1 => {
                            // Gone without a closing handshake, as when a network drops.
                            return;
                        }
                        Fault::FlipBitInPhoneMessage(n) if n == from_phone => {
                            let mut bytes = data.to_vec();
                            if let Some(last) = bytes.last_mut() {
                                *last ^= 0x01;
                            }
                            bytes.into()
                        }
                        _ => data,
                    };
                    if client.send(Message::Binary(data)).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let normal = || {
        Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })
    };
    let _ = client.close(normal()).await;
    let _ = relay.close(normal()).await;
}

/// A "relay" that refuses every request with one HTTP status (and a short text).
#[derive(Debug)]
pub struct RefusingRelay {
    addr: SocketAddr,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for RefusingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RefusingRelay {
    /// Listens on `127.0.0.1:0` and answers every request `status` (e.g. 404, 409).
    ///
    /// # Errors
    ///
    /// [`WorldError::Setup`] if it cannot listen.
    pub async fn start(status: u16) -> Result<Self, WorldError> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| setup("refusing relay listen")(&e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| setup("refusing relay listen")(&e))?;
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        let reasons: BTreeMap<u16, &str> = [
            (404, "Not Found"),
            (409, "Conflict"),
            (410, "Gone"),
            (429, "Too Many Requests"),
        ]
        .into_iter()
        .collect();
        let reason = reasons.get(&status).copied().unwrap_or("Refused");
        let body = format!("tunnel refused ({status})");
        let answer = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    // Read the request head, then answer.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Ok(Self {
            addr,
            requests,
            task,
        })
    }

    /// Its base URL (`ws://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The PostgreSQL URL for tests, if `TETHER_TEST_DATABASE_URL` is set.
pub fn postgres_url() -> Option<String> {
    std::env::var("TETHER_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
}
