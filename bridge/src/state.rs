//! Everything a request handler needs, built once at startup and shared.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::auth::companion::{CompanionAuthConfig, CompanionVerifier};
use crate::auth::dev_issuer::{DEV_ISSUER, DevIssuer};
use crate::auth::http_jwks::HttpJwks;
use crate::auth::jwk::{FileJwks, JwksFetcher};
use crate::clock::SharedClock;
use crate::config::{Config, IdentityConfig};
use crate::events::EventBus;
use crate::ratelimit::RateLimits;
use crate::signing::KeySet;
use crate::store::Store;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Database problem.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Identity setup problem.
    #[error("identity provider setup failed: {0}")]
    Identity(String),
    /// Signing key problem.
    #[error("signing keys: {0}")]
    Signing(String),
    /// Push provider setup problem.
    #[error("push providers: {0}")]
    Push(String),
    /// Socket problem.
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Shared state (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// The shared parts.
#[derive(Debug)]
pub struct Inner {
    /// Configuration in effect.
    pub config: Config,
    /// Database.
    pub store: Store,
    /// Time.
    pub clock: SharedClock,
    /// Verifies companion access tokens.
    pub companions: CompanionVerifier,
    /// The development issuer, when configured.
    pub dev_issuer: Option<DevIssuer>,
    /// Envelope signing keys.
    pub keys: RwLock<KeySet>,
    /// Where the identity provider's keys come from (`None` for the development issuer).
    pub jwks_source: Option<Arc<dyn JwksFetcher>>,
    /// When the provider's keys were last fetched (ms).
    pub last_jwks_refresh: AtomicI64,
    /// Rate limits.
    pub limits: RateLimits,
    /// Status changes for subscriptions.
    pub events: EventBus,
    /// Wakes the push worker when outbox rows are written.
    pub outbox_wakeup: Notify,
    /// Push senders by platform.
    pub senders: crate::push::Senders,
    /// The hosted hybrid tunnel relay.
    pub relay: crate::relay::Relay,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// Connects to the database, applies migrations and loads keys.
    pub async fn build(config: Config, clock: SharedClock) -> Result<Self, StartError> {
        config.validate()?;
        if config.profile == crate::config::Profile::Development {
            // The zero-configuration run creates what it needs, the database's folder included.
            std::fs::create_dir_all(&config.data_dir)?;
        }
        let store = Store::connect(&config.database_url(), config.database_max_connections).await?;
        Self::with_store(config, store, clock).await
    }

    /// Like [`AppState::build`] with an existing store (tests use per-test schemas).
    pub async fn with_store(
        config: Config,
        store: Store,
        clock: SharedClock,
    ) -> Result<Self, StartError> {
        store.migrate().await?;
        let now_secs = clock.now_secs();
        if config.profile == crate::config::Profile::Development {
            std::fs::create_dir_all(&config.data_dir)?;
        }
        let mut jwks_source = None;
        let (companions, dev_issuer) = match &config.identity {
            IdentityConfig::Dev => {
                let issuer = DevIssuer::load_or_create(&config.dev_issuer_key_file())
                    .map_err(|e| StartError::Identity(e.to_string()))?;
                let verifier = CompanionVerifier::new(
                    CompanionAuthConfig {
                        issuer: DEV_ISSUER.to_owned(),
                        audience: config.public_url.clone(),
                        algorithms: vec![jsonwebtoken::Algorithm::ES256],
                        leeway_secs: 30,
                    },
                    issuer.jwks(),
                )
                .map_err(|e| StartError::Identity(e.to_string()))?;
                (verifier, Some(issuer))
            }
            IdentityConfig::Oidc {
                issuer,
                audience,
                jwks_file,
                jwks_url,
                danger_accept_http_jwks_url,
                algorithms,
                leeway_secs,
            } => {
                let algorithms = algorithms
                    .iter()
                    .map(|a| a.parse::<jsonwebtoken::Algorithm>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| StartError::Identity(format!("identity.algorithms: {e}")))?;
                let source: Arc<dyn JwksFetcher> = match (jwks_file, jwks_url) {
                    (Some(path), None) => Arc::new(FileJwks::new(path.clone())),
                    (None, Some(url)) => Arc::new(
                        HttpJwks::new(url, *danger_accept_http_jwks_url)
                            .map_err(|e| StartError::Identity(e.to_string()))?,
                    ),
                    _ => {
                        return Err(StartError::Identity(
                            "set exactly one of identity.jwks_file and identity.jwks_url".into(),
                        ));
                    }
                };
                let jwks = source
                    .fetch()
                    .await
                    .map_err(|e| StartError::Identity(format!("identity provider keys: {e}")))?;
                let verifier = CompanionVerifier::new(
                    CompanionAuthConfig {
                        issuer: issuer.clone(),
                        audience: audience.clone(),
                        algorithms,
                        leeway_secs: *leeway_secs,
                    },
                    jwks,
                )
                .map_err(|e| StartError::Identity(e.to_string()))?;
                jwks_source = Some(source);
                (verifier, None)
            }
        };
        let keys = KeySet::load_or_create(&config.signing_key_file(), now_secs)
            .map_err(|e| StartError::Signing(e.to_string()))?;
        let senders = crate::push::Senders::from_config(&config.push)
            .map_err(|e| StartError::Push(e.to_string()))?;
        let limits = RateLimits::new(&config.limits, clock.clone());
        let relay = crate::relay::Relay::new(&config.relay, clock.clone());
        let started_ms = clock.now_ms();
        Ok(Self(Arc::new(Inner {
            config,
            store,
            clock,
            companions,
            dev_issuer,
            keys: RwLock::new(keys),
            jwks_source,
            last_jwks_refresh: AtomicI64::new(started_ms),
            limits,
            events: EventBus::default(),
            outbox_wakeup: Notify::new(),
            senders,
            relay,
        })))
    }

    /// Current time, Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Re-fetches the identity provider's keys, at most once per `min_interval_ms`. Returns
    /// whether a fetch happened and succeeded; a failed fetch keeps the previous keys.
    pub async fn refresh_jwks(&self, min_interval_ms: i64) -> bool {
        let Some(source) = &self.jwks_source else {
            return false;
        };
        let now = self.now_ms();
        let last = self.last_jwks_refresh.load(Ordering::SeqCst);
        if now - last < min_interval_ms
            || self
                .last_jwks_refresh
                .compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return false;
        }
        match self.companions.refresh(source.as_ref()).await {
            Ok(keys) => {
                tracing::info!(keys, "identity provider keys refreshed");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "identity provider keys not refreshed; keeping the previous set");
                false
            }
        }
    }
}
