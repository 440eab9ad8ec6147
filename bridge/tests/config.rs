//! Configuration: defaults, a TOML file and flag overrides (the environment layer has its own
//! file, `config_env.rs`), the production profile's refusals, value checks, and a database
//! password that never shows in `Debug` or errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bridge::clock::ManualClock;
use bridge::config::{Config, ConfigError, IdentityConfig, Overrides, Profile, Redacted};
use bridge::state::AppState;
use support::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("tether-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::load(file, overrides)
}

fn oidc() -> IdentityConfig {
    IdentityConfig::Oidc {
        issuer: "https://idp.example".into(),
        audience: "tether".into(),
        jwks_file: Some("/etc/tether/jwks.json".into()),
        jwks_url: None,
        danger_accept_http_jwks_url: false,
        algorithms: vec!["ES256".into()],
        leeway_secs: 30,
    }
}

#[test]
fn defaults_are_the_documented_development_setup() {
    let c = Config::default();
    assert_eq!(c.profile, Profile::Development);
    assert_eq!(c.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(c.identity, IdentityConfig::Dev);
    assert!(c.graphql.introspection && c.graphql.graphiql);
    assert_eq!(c.database_url(), "sqlite://./tether.db?mode=rwc");
    assert_eq!(
        c.signing_key_file(),
        Path::new("./tether-signing-keys.json")
    );
    assert_eq!(c.limits.deliveries_per_device_per_minute, 5);
    assert_eq!(c.limits.pairing_code_ttl_secs, 600);
    assert_eq!(c.limits.pairing_lockout_after, 5);
    assert_eq!(c.limits.pairing_lockout_secs, 900);
    assert_eq!(c.limits.device_inactivity_days, 30);
    c.validate().unwrap();
}

#[test]
fn a_toml_file_overrides_defaults_and_flags_override_the_file() {
    let dir = TempDir::new();
    let path = dir.file(
        "bridge.toml",
        r#"
listen = "127.0.0.1:7000"
public_url = "https://bridge.example"
envelope_audience = "file-audience"
database_max_connections = 3

[limits]
deliveries_per_device_per_minute = 7
pairing_code_ttl_secs = 300

[graphql]
max_depth = 12
"#,
    );
    let c = load(Some(&path), &Overrides::default()).unwrap();
    assert_eq!(c.listen, "127.0.0.1:7000".parse::<SocketAddr>().unwrap());
    assert_eq!(c.public_url, "https://bridge.example");
    assert_eq!(c.envelope_audience, "file-audience");
    assert_eq!(c.database_max_connections, 3);
    assert_eq!(c.limits.deliveries_per_device_per_minute, 7);
    assert_eq!(c.limits.pairing_code_ttl_secs, 300);
    assert_eq!(c.graphql.max_depth, 12);
    // What the file does not name keeps its default, also inside a table it names.
    assert_eq!(c.limits.deliveries_per_account_per_minute, 20);
    assert_eq!(c.graphql.max_aliases, 15);
    assert_eq!(c.profile, Profile::Development);

    let overrides = Overrides {
        listen: Some("127.0.0.1:9100".parse().unwrap()),
        database_url: Some(Redacted("sqlite:///var/lib/tether/t.db?mode=rwc".into())),
        data_dir: Some("/var/lib/tether".into()),
        profile: Some(Profile::Development),
    };
    let c = load(Some(&path), &overrides).unwrap();
    assert_eq!(c.listen, "127.0.0.1:9100".parse::<SocketAddr>().unwrap());
    assert_eq!(c.database_url(), "sqlite:///var/lib/tether/t.db?mode=rwc");
    assert_eq!(c.data_dir, Path::new("/var/lib/tether"));
    assert_eq!(
        c.signing_key_file(),
        Path::new("/var/lib/tether/tether-signing-keys.json")
    );
    // Flags left unset do not erase the file's values.
    assert_eq!(c.public_url, "https://bridge.example");
    assert_eq!(c.limits.deliveries_per_device_per_minute, 7);
}

#[test]
fn an_oidc_identity_from_the_file() {
    let dir = TempDir::new();
    let path = dir.file(
        "bridge.toml",
        r#"
[identity]
provider = "oidc"
issuer = "https://idp.example"
audience = "tether"
jwks_file = "/etc/tether/jwks.json"
"#,
    );
    let c = load(Some(&path), &Overrides::default()).unwrap();
    match c.identity {
        IdentityConfig::Oidc {
            issuer,
            audience,
            jwks_file,
            jwks_url,
            algorithms,
            leeway_secs,
            ..
        } => {
            assert_eq!(issuer, "https://idp.example");
            assert_eq!(audience, "tether");
            assert_eq!(
                jwks_file.as_deref(),
                Some(Path::new("/etc/tether/jwks.json"))
            );
            assert_eq!(jwks_url, None);
            assert_eq!(algorithms, ["ES256", "EdDSA", "RS256"]);
            assert_eq!(leeway_secs, 30);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_files_and_values_are_refused_with_a_reason() {
    let dir = TempDir::new();
    let missing = dir.0.join("nope.toml");
    let err = load(Some(&missing), &Overrides::default()).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("nope.toml"), "{err}");

    for (text, names) in [
        ("listen = ", "listen"),
        ("[graphql]\nmax_depth = \"deep\"", "max_depth"),
        ("profile = \"staging\"", "staging"),
        ("listen = \"not an address\"", "listen"),
        (
            "[limits]\ndeliveries_per_device_per_minute = -1",
            "deliveries_per_device_per_minute",
        ),
        ("[identity]\nprovider = \"ldap\"", "ldap"),
    ] {
        let path = dir.file("bad.toml", text);
        let err = load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{text}: {err:?}");
        assert!(
            text == "listen = " || err.to_string().contains(names),
            "{text}: the error should name {names}: {err}"
        );
    }

    // Every limit that must be positive says which one it is.
    type Set = fn(&mut Config);
    let zeroes: [(&str, Set); 15] = [
        ("limits.deliveries_per_device_per_minute", |c| {
            c.limits.deliveries_per_device_per_minute = 0
        }),
        ("limits.deliveries_per_account_per_minute", |c| {
            c.limits.deliveries_per_account_per_minute = 0
        }),
        ("limits.fido_url_max_age_secs", |c| {
            c.limits.fido_url_max_age_secs = 0
        }),
        ("limits.pairing_starts_per_address_per_minute", |c| {
            c.limits.pairing_starts_per_address_per_minute = 0
        }),
        ("limits.pairing_code_ttl_secs", |c| {
            c.limits.pairing_code_ttl_secs = -5
        }),
        ("limits.pairing_lockout_after", |c| {
            c.limits.pairing_lockout_after = 0
        }),
        ("limits.pairing_failures_per_account_per_hour", |c| {
            c.limits.pairing_failures_per_account_per_hour = 0
        }),
        ("limits.device_inactivity_days", |c| {
            c.limits.device_inactivity_days = 0
        }),
        ("limits.pairing_lockout_secs", |c| {
            c.limits.pairing_lockout_secs = 0
        }),
        ("limits.companions_per_account", |c| {
            c.limits.companions_per_account = 0
        }),
        ("limits.devices_per_account", |c| {
            c.limits.devices_per_account = 0
        }),
        ("graphql.max_depth", |c| c.graphql.max_depth = 0),
        ("graphql.max_complexity", |c| c.graphql.max_complexity = 0),
        ("graphql.max_body_bytes", |c| c.graphql.max_body_bytes = 0),
        ("database_max_connections", |c| {
            c.database_max_connections = 0
        }),
    ];
    for (name, set) in zeroes {
        let mut c = Config::default();
        set(&mut c);
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ConfigError::Invalid(_)), "{name}: {err:?}");
        assert!(err.to_string().contains(name), "{name}: {err}");
    }
}

#[test]
fn the_pairing_lockout_cannot_be_configured_away() {
    for secs in [0, -900] {
        let mut c = Config::default();
        c.limits.pairing_lockout_secs = secs;
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string().contains("limits.pairing_lockout_secs"),
            "{err}"
        );
    }
}

#[test]
fn production_refuses_the_development_pieces_and_names_them() {
    let production = Config {
        profile: Profile::Production,
        ..Config::default()
    };
    let err = production.validate().unwrap_err();
    assert!(
        matches!(err, ConfigError::RefusedInProduction(_)),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("production"), "{text}");
    assert!(text.contains("identity issuer"), "{text}");

    let with_oidc = Config {
        identity: oidc(),
        ..production.clone()
    };
    let text = with_oidc.validate().unwrap_err().to_string();
    assert!(text.contains("push sink"), "{text}");

    // Through every layer that can select the profile.
    let dir = TempDir::new();
    let path = dir.file("prod.toml", "profile = \"production\"\n");
    let text = load(Some(&path), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(text.contains("identity issuer"), "{text}");
    let flags = Overrides {
        profile: Some(Profile::Production),
        ..Overrides::default()
    };
    let text = load(None, &flags).unwrap_err().to_string();
    assert!(text.contains("identity issuer"), "{text}");
    // And the bridge refuses to start with it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(AppState::build(
            Config {
                data_dir: dir.0.clone(),
                ..production
            },
            Arc::new(ManualClock::new(T0_MS)),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("identity issuer"), "{err}");
}

#[test]
fn production_names_every_development_piece_it_refuses() {
    let everything_dev = Config {
        profile: Profile::Production,
        ..Config::default()
    };
    let text = everything_dev.validate().unwrap_err().to_string();
    for piece in ["identity issuer", "push sink", "introspection", "GraphiQL"] {
        assert!(text.contains(piece), "{piece} not named: {text}");
    }
    // Each piece turned off drops out of the message; the others stay.
    type Fix = fn(&mut Config);
    let fixes: [(&str, Fix); 3] = [
        ("identity issuer", |c| c.identity = oidc()),
        ("introspection", |c| c.graphql.introspection = false),
        ("GraphiQL", |c| c.graphql.graphiql = false),
    ];
    for (piece, fix) in fixes {
        let mut c = everything_dev.clone();
        fix(&mut c);
        let text = c.validate().unwrap_err().to_string();
        assert!(!text.contains(piece), "{piece} still named: {text}");
        assert!(text.contains("push sink"), "{text}");
    }
    // With only the push sink left (it has no production implementation yet) that is all
    // it names.
    let mut c = everything_dev;
    c.identity = oidc();
    c.graphql.introspection = false;
    c.graphql.graphiql = false;
    let text = c.validate().unwrap_err().to_string();
    for piece in ["identity issuer", "introspection", "GraphiQL"] {
        assert!(!text.contains(piece), "{text}");
    }
    assert!(text.contains("push sink"), "{text}");
}

const PASSWORD: &str = "s3cret-Pa55word";

#[test]
fn the_database_password_never_shows_in_debug() {
    let url = format!("postgres://tether:{PASSWORD}@db.internal:5432/tether");
    let c = Config {
        database_url: Some(Redacted(url.clone())),
        ..Config::default()
    };
    for text in [
        format!("{c:?}"),
        format!("{c:#?}"),
        format!("{:?}", c.database_url),
    ] {
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains("db.internal"), "{text}");
    }
    // Loaded from a flag, it is still usable but still hidden.
    let flags = Overrides {
        database_url: Some(Redacted(url.clone())),
        ..Overrides::default()
    };
    let c = load(None, &flags).unwrap();
    assert_eq!(c.database_url(), url);
    assert!(!format!("{c:?}").contains(PASSWORD));
    // Loaded from a file as well.
    let dir = TempDir::new();
    let path = dir.file("db.toml", &format!("database_url = \"{url}\"\n"));
    let c = load(Some(&path), &Overrides::default()).unwrap();
    assert!(!format!("{c:?}").contains(PASSWORD));
}

#[test]
fn the_flag_layer_never_shows_the_password_either() {
    let flags = Overrides {
        database_url: Some(Redacted(format!(
            "postgres://tether:{PASSWORD}@db.internal/tether"
        ))),
        ..Overrides::default()
    };
    let text = format!("{flags:?}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn a_failed_connection_does_not_reveal_the_password() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new();
    // URLs that fail at once (a refused connection would only fail after the pool's
    // 10-second acquire timeout).
    for url in [
        format!("postgres://tether:{PASSWORD}@127.0.0.1:99999/tether"),
        format!("postgres://tether:{PASSWORD}@[::1/tether"),
        format!("mysql://tether:{PASSWORD}@127.0.0.1/tether"),
        format!("postgres://tether:{PASSWORD}@127.0.0.1/tether?sslmode=bogus"),
    ] {
        let config = Config {
            data_dir: dir.0.clone(),
            database_url: Some(Redacted(url.clone())),
            ..Config::default()
        };
        let err = rt
            .block_on(AppState::build(config, Arc::new(ManualClock::new(T0_MS))))
            .unwrap_err();
        assert!(!err.to_string().contains(PASSWORD), "{url}: {err}");
        assert!(!format!("{err:?}").contains(PASSWORD), "{url}: {err:?}");
    }
}

/// `postgres://user@host/db` with `password` put into the user info.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (userinfo.split(':').next().unwrap().to_owned(), host),
        None => ("postgres".to_owned(), authority),
    };
    format!("{scheme}://{user}:{password}@{host}/{path}")
}

#[tokio::test]
async fn a_running_state_never_shows_the_password() {
    let Ok(base) = std::env::var("TETHER_TEST_DATABASE_URL") else {
        // PostgreSQL only (a SQLite URL has no password); `databases()` enforces it under CI.
        assert_eq!(databases(), vec![Db::Sqlite]);
        return;
    };
    // The test server trusts local connections, so any password gets in.
    let url = with_password(&base, PASSWORD);
    let dir = TempDir::new();
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let store = bridge::store::Store::connect_with_schema(&url, 1, Some(&schema))
        .await
        .unwrap();
    let config = Config {
        data_dir: dir.0.clone(),
        database_url: Some(Redacted(url.clone())),
        ..Config::default()
    };
    let state = AppState::with_store(config, store, Arc::new(ManualClock::new(T0_MS)))
        .await
        .unwrap();
    let text = format!("{state:?}");
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!format!("{state:#?}").contains(PASSWORD));
}
