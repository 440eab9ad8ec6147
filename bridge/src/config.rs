//! Typed, layered configuration: built-in defaults, then a TOML file, then `TETHER_*`
//! environment variables (nested keys joined with `__`, e.g. `TETHER_LIMITS__PER_DEVICE_PER_MINUTE`),
//! then command-line flags.
//!
//! The defaults are a development setup that needs nothing else: listen on 127.0.0.1:8080, a
//! SQLite file `./tether.db`, the built-in development identity issuer, the development push
//! sink, a generated envelope signing key persisted beside the database, GraphiQL and
//! introspection on. The `production` profile refuses to start with any of the development
//! pieces and says which.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A string that never prints: database URLs may carry passwords.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"[redacted]\"")
    }
}

/// Deployment profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Local development: development issuer, push sink and tools allowed.
    #[default]
    Development,
    /// Production: development pieces refused.
    Production,
}

/// Where companion access tokens come from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum IdentityConfig {
    /// The built-in development issuer (`bridge dev-token`).
    Dev,
    /// The operator's OpenID Connect / OAuth 2 provider.
    Oidc {
        /// Expected `iss`.
        issuer: String,
        /// Expected `aud`.
        audience: String,
        /// A file holding the provider's JWKS (re-read every refresh, so replacing the file
        /// rotates keys). Exactly one of `jwks_file` and `jwks_url`.
        #[serde(default)]
        jwks_file: Option<PathBuf>,
        /// The provider's `jwks_uri` (HTTPS), fetched at startup and refreshed periodically and
        /// when a token names an unknown key.
        #[serde(default)]
        jwks_url: Option<String>,
        /// Accept a plain `http://` `jwks_url` (tests and private networks only).
        #[serde(default)]
        danger_accept_http_jwks_url: bool,
        /// Accepted algorithms (ES256, EdDSA, RS256).
        #[serde(default = "default_algorithms")]
        algorithms: Vec<String>,
        /// Clock leeway for `exp`/`nbf`, seconds.
        #[serde(default = "default_leeway")]
        leeway_secs: u64,
    },
}

fn default_algorithms() -> Vec<String> {
    vec!["ES256".into(), "EdDSA".into(), "RS256".into()]
}

fn default_leeway() -> u64 {
    30
}

/// Where outbox rows go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushSink {
    /// Development sink: records pushes as sent and hands deliveries to companions through
    /// the bridge's own API (`incomingDeliveries`, `pendingDeliveries`).
    #[default]
    Dev,
    /// Apple Push Notification service and Firebase Cloud Messaging (HTTP v1).
    Providers,
}

/// Push delivery: the sink, the providers and the outbox workers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// `dev` or `providers`.
    pub sink: PushSink,
    /// APNs (token authentication); required for APNs installs when `sink = "providers"`.
    pub apns: Option<ApnsConfig>,
    /// FCM HTTP v1; required for FCM installs when `sink = "providers"`.
    pub fcm: Option<FcmConfig>,
    /// Outbox workers.
    pub worker: PushWorkerConfig,
}

/// Apple Push Notification service, token-based provider authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// Base URL: `https://api.push.apple.com` (production, the default),
    /// `https://api.sandbox.push.apple.com` (development builds), or a test server.
    #[serde(default = "default_apns_endpoint")]
    pub endpoint: String,
    /// Apple developer team id (the provider token's `iss`).
    pub team_id: String,
    /// Key id of the `.p8` signing key (the provider token's `kid`).
    pub key_id: String,
    /// The `.p8` key file (PKCS#8 PEM, P-256).
    pub key_file: PathBuf,
    /// Extra CA certificate (PEM) to trust for the endpoint, besides the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long a provider token is reused before a new one is signed, seconds. Apple rejects
    /// tokens older than one hour and refreshes more often than every 20 minutes.
    #[serde(default = "default_apns_token_refresh")]
    pub token_refresh_secs: u64,
}

fn default_apns_endpoint() -> String {
    "https://api.push.apple.com".into()
}

fn default_apns_token_refresh() -> u64 {
    40 * 60
}

/// Firebase Cloud Messaging HTTP v1 with a service account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// Base URL of the FCM API (default `https://fcm.googleapis.com`).
    #[serde(default = "default_fcm_endpoint")]
    pub endpoint: String,
    /// The service account key file as Google issues it (JSON). Its `project_id` names the
    /// project and its `token_uri` is where access tokens come from.
    pub service_account_file: PathBuf,
    /// Extra CA certificate (PEM) to trust for the API and the token endpoint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_fcm_endpoint() -> String {
    "https://fcm.googleapis.com".into()
}

/// Outbox workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushWorkerConfig {
    /// Most outbox rows one worker leases at a time.
    pub batch: u32,
    /// Most pushes in flight per worker.
    pub concurrency: u32,
    /// How long a leased row is reserved for its worker, seconds. A worker that dies holding a
    /// lease delays that push by at most this long; a duplicate after a crash can only happen
    /// inside this window, and carries the same collapse id.
    pub lease_secs: u32,
    /// First retry delay, milliseconds (doubles per attempt, with jitter).
    pub retry_base_ms: u32,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u32,
    /// Timeout of one provider request, milliseconds.
    pub request_timeout_ms: u32,
}

impl Default for PushWorkerConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            concurrency: 256,
            lease_secs: 30,
            retry_base_ms: 1_000,
            retry_max_ms: 60_000,
            request_timeout_ms: 10_000,
        }
    }
}

/// GraphQL endpoint limits and tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GraphqlConfig {
    /// Serve GraphiQL at `/graphql` for browsers.
    pub graphiql: bool,
    /// Answer introspection queries.
    pub introspection: bool,
    /// Deepest query accepted.
    pub max_depth: usize,
    /// Highest query complexity accepted.
    pub max_complexity: usize,
    /// Most aliases accepted in one query.
    pub max_aliases: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            graphiql: true,
            introspection: true,
            max_depth: 10,
            max_complexity: 250,
            max_aliases: 15,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Limits with their documented defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Sign-in and registration requests per device per minute.
    pub deliveries_per_device_per_minute: u32,
    /// Sign-in and registration requests per account per minute.
    pub deliveries_per_account_per_minute: u32,
    /// How old a FIDO URL's timestamp may be, seconds (and how far in the future).
    pub fido_url_max_age_secs: i64,
    /// `startPairing` calls per client address per minute.
    pub pairing_starts_per_address_per_minute: u32,
    /// Lifetime of a pairing code, seconds.
    pub pairing_code_ttl_secs: i64,
    /// Wrong pairing codes in a row before the account is locked out.
    pub pairing_lockout_after: u32,
    /// How long a pairing lockout lasts, seconds.
    pub pairing_lockout_secs: i64,
    /// Failed pairing confirmations per account per hour.
    pub pairing_failures_per_account_per_hour: u32,
    /// Days without a call after which a device expires.
    pub device_inactivity_days: i64,
    /// Most companion installs per account.
    pub companions_per_account: u32,
    /// Most devices per account.
    pub devices_per_account: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            deliveries_per_device_per_minute: 5,
            deliveries_per_account_per_minute: 20,
            fido_url_max_age_secs: 120,
            pairing_starts_per_address_per_minute: 10,
            pairing_code_ttl_secs: 600,
            pairing_lockout_after: 5,
            pairing_lockout_secs: 900,
            pairing_failures_per_account_per_hour: 10,
            device_inactivity_days: 30,
            companions_per_account: 20,
            devices_per_account: 50,
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Development or production.
    pub profile: Profile,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The bridge's public base URL: the issuer of envelopes and the audience of device tokens.
    pub public_url: String,
    /// Directory for the SQLite file, the signing keys and the development issuer key.
    pub data_dir: PathBuf,
    /// Database URL (`sqlite://…` or `postgres://…`); default: `tether.db` in `data_dir`.
    pub database_url: Option<Redacted>,
    /// Most pooled database connections.
    pub database_max_connections: u32,
    /// Envelope signing key file; default: `tether-signing-keys.json` in `data_dir`.
    pub signing_key_file: Option<PathBuf>,
    /// Audience of envelopes (what companion apps expect).
    pub envelope_audience: String,
    /// Companion identity provider.
    pub identity: IdentityConfig,
    /// Push delivery.
    pub push: PushConfig,
    /// GraphQL limits and tools.
    pub graphql: GraphqlConfig,
    /// Rate limits, lifetimes and lockouts.
    pub limits: Limits,
    /// The hosted hybrid tunnel relay and its limits (`docs/relay.md`).
    pub relay: crate::relay::RelayConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            profile: Profile::Development,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            data_dir: PathBuf::from("."),
            database_url: None,
            database_max_connections: 8,
            signing_key_file: None,
            envelope_audience: "tether-companion".into(),
            identity: IdentityConfig::Dev,
            push: PushConfig::default(),
            graphql: GraphqlConfig::default(),
            limits: Limits::default(),
            relay: crate::relay::RelayConfig::default(),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type.
    #[error("configuration invalid: {0}")]
    Invalid(String),
    /// The production profile found development-only settings (all of them are listed).
    #[error("the production profile refuses {}", .0.join("; "))]
    RefusedInProduction(Vec<&'static str>),
}

/// Overrides from command-line flags (highest precedence).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `--database-url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<Redacted>,
    /// `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `--profile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
}

impl Config {
    /// Loads defaults, then `file` (if any), then the environment, then `overrides`, and checks
    /// the result.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment
            .merge(Env::prefixed("TETHER_").split("__").ignore(&["config"]))
            .merge(Serialized::defaults(overrides));
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the profile's rules and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.profile == Profile::Production {
            let mut refused = Vec::new();
            if self.identity == IdentityConfig::Dev {
                refused.push(
                    "the development identity issuer (configure identity.provider = \"oidc\")",
                );
            }
            if self.push.sink == PushSink::Dev {
                refused.push(
                    "the development push sink (set push.sink = \"providers\" and configure push.apns / push.fcm)",
                );
            }
            if self.graphql.introspection {
                refused.push("GraphQL introspection (set graphql.introspection = false)");
            }
            if self.graphql.graphiql {
                refused.push("GraphiQL (set graphql.graphiql = false)");
            }
            if !refused.is_empty() {
                return Err(ConfigError::RefusedInProduction(refused));
            }
        }
        if let IdentityConfig::Oidc {
            jwks_file,
            jwks_url,
            ..
        } = &self.identity
            && jwks_file.is_some() == jwks_url.is_some()
        {
            return Err(ConfigError::Invalid(
                "identity: set exactly one of jwks_file and jwks_url".into(),
            ));
        }
        self.relay.validate()?;
        let l = &self.limits;
        let positive = [
            (
                "limits.deliveries_per_device_per_minute",
                i64::from(l.deliveries_per_device_per_minute),
            ),
            (
                "limits.deliveries_per_account_per_minute",
                i64::from(l.deliveries_per_account_per_minute),
            ),
            ("limits.fido_url_max_age_secs", l.fido_url_max_age_secs),
            (
                "limits.pairing_starts_per_address_per_minute",
                i64::from(l.pairing_starts_per_address_per_minute),
            ),
            ("limits.pairing_code_ttl_secs", l.pairing_code_ttl_secs),
            (
                "limits.pairing_lockout_after",
                i64::from(l.pairing_lockout_after),
            ),
            (
                "limits.pairing_failures_per_account_per_hour",
                i64::from(l.pairing_failures_per_account_per_hour),
            ),
            ("limits.device_inactivity_days", l.device_inactivity_days),
            ("limits.pairing_lockout_secs", l.pairing_lockout_secs),
            (
                "limits.companions_per_account",
                i64::from(l.companions_per_account),
            ),
            (
                "limits.devices_per_account",
                i64::from(l.devices_per_account),
            ),
            (
                "graphql.max_depth",
                i64::try_from(self.graphql.max_depth).unwrap_or(i64::MAX),
            ),
            (
                "graphql.max_complexity",
                i64::try_from(self.graphql.max_complexity).unwrap_or(i64::MAX),
            ),
            (
                "graphql.max_body_bytes",
                i64::try_from(self.graphql.max_body_bytes).unwrap_or(i64::MAX),
            ),
            (
                "database_max_connections",
                i64::from(self.database_max_connections),
            ),
            ("push.worker.batch", i64::from(self.push.worker.batch)),
            (
                "push.worker.concurrency",
                i64::from(self.push.worker.concurrency),
            ),
            (
                "push.worker.lease_secs",
                i64::from(self.push.worker.lease_secs),
            ),
            (
                "push.worker.retry_base_ms",
                i64::from(self.push.worker.retry_base_ms),
            ),
            (
                "push.worker.request_timeout_ms",
                i64::from(self.push.worker.request_timeout_ms),
            ),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(ConfigError::Invalid(format!("{name} must be positive")));
        }
        if self.push.worker.retry_max_ms < self.push.worker.retry_base_ms {
            return Err(ConfigError::Invalid(
                "push.worker.retry_max_ms must be at least push.worker.retry_base_ms".into(),
            ));
        }
        if self.push.sink == PushSink::Providers
            && self.push.apns.is_none()
            && self.push.fcm.is_none()
        {
            return Err(ConfigError::Invalid(
                "push.sink = \"providers\" needs push.apns, push.fcm or both".into(),
            ));
        }
        Ok(())
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.0.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("tether.db").display()
            ),
        }
    }

    /// The envelope signing key file in effect.
    pub fn signing_key_file(&self) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tether-signing-keys.json"))
    }

    /// The development issuer's key file.
    pub fn dev_issuer_key_file(&self) -> PathBuf {
        self.data_dir.join("tether-dev-issuer.pem")
    }
}
