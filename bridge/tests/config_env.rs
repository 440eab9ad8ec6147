//! The environment layer of `Config::load`: defaults < TOML file < `TETHER_*` (nested keys
//! joined with `__`) < flags.
//!
//! Environment variables are process-global and setting them is `unsafe` in edition 2024 (which
//! the workspace forbids), so this file has a single test that runs each case in a child
//! process — this same test binary — with exactly the variables the case needs and no other
//! `TETHER_*` variable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bridge::config::{Config, ConfigError, IdentityConfig, Overrides, Profile};

/// Set in a child: the case to run.
const CASE: &str = "BRIDGE_TEST_CONFIG_ENV_CASE";
/// Set in a child: the TOML file.
const FILE: &str = "BRIDGE_TEST_CONFIG_ENV_FILE";
/// Set in a child: where to write "ok" when the case passed.
const DONE: &str = "BRIDGE_TEST_CONFIG_ENV_DONE";

const TOML: &str = r#"
public_url = "https://file.example"
envelope_audience = "file-audience"
listen = "127.0.0.1:7000"

[limits]
deliveries_per_device_per_minute = 7
pairing_code_ttl_secs = 300

[graphql]
max_depth = 12
"#;

const ENV_PASSWORD: &str = "env-s3cret";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The cases: name, variables.
fn cases() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![
        ("file_only", vec![]),
        (
            "env_over_file",
            vec![
                ("TETHER_PUBLIC_URL", "https://env.example".into()),
                (
                    "TETHER_LIMITS__DELIVERIES_PER_DEVICE_PER_MINUTE",
                    "9".into(),
                ),
                ("TETHER_GRAPHQL__INTROSPECTION", "false".into()),
                ("TETHER_LISTEN", "127.0.0.1:9000".into()),
                (
                    "TETHER_DATABASE_URL",
                    format!("postgres://tether:{ENV_PASSWORD}@db.internal/tether"),
                ),
            ],
        ),
        (
            "flags_over_env",
            vec![
                ("TETHER_LISTEN", "127.0.0.1:9000".into()),
                ("TETHER_DATA_DIR", "/from/env".into()),
                ("TETHER_DATABASE_URL", "sqlite:///from/env.db".into()),
                ("TETHER_PUBLIC_URL", "https://env.example".into()),
            ],
        ),
        (
            "env_without_file",
            vec![
                ("TETHER_GRAPHQL__MAX_ALIASES", "3".into()),
                ("TETHER_LIMITS__DEVICE_INACTIVITY_DAYS", "7".into()),
            ],
        ),
        (
            "env_wrong_type",
            vec![(
                "TETHER_LIMITS__DELIVERIES_PER_DEVICE_PER_MINUTE",
                "lots".into(),
            )],
        ),
        (
            "env_zero_limit",
            vec![("TETHER_LIMITS__PAIRING_LOCKOUT_AFTER", "0".into())],
        ),
        (
            "env_production",
            vec![("TETHER_PROFILE", "production".into())],
        ),
        (
            "env_oidc_identity",
            vec![
                ("TETHER_IDENTITY__PROVIDER", "oidc".into()),
                ("TETHER_IDENTITY__ISSUER", "https://idp.example".into()),
                ("TETHER_IDENTITY__AUDIENCE", "tether".into()),
                ("TETHER_IDENTITY__JWKS_FILE", "/etc/tether/jwks.json".into()),
            ],
        ),
        (
            "config_variable_is_not_a_key",
            vec![("TETHER_CONFIG", "/does/not/exist.toml".into())],
        ),
    ]
}

fn run_case(case: &str, file: &Path) {
    let none = Overrides::default();
    match case {
        "file_only" => {
            let c = Config::load(Some(file), &none).unwrap();
            assert_eq!(c.public_url, "https://file.example");
            assert_eq!(c.limits.deliveries_per_device_per_minute, 7);
            assert_eq!(c.listen, addr("127.0.0.1:7000"));
            assert!(c.graphql.introspection);
        }
        "env_over_file" => {
            let c = Config::load(Some(file), &none).unwrap();
            // The environment wins where it speaks...
            assert_eq!(c.public_url, "https://env.example");
            assert_eq!(c.limits.deliveries_per_device_per_minute, 9);
            assert!(!c.graphql.introspection);
            assert_eq!(c.listen, addr("127.0.0.1:9000"));
            assert_eq!(
                c.database_url(),
                format!("postgres://tether:{ENV_PASSWORD}@db.internal/tether")
            );
            // ...the file elsewhere, also next to an overridden key in the same table...
            assert_eq!(c.envelope_audience, "file-audience");
            assert_eq!(c.limits.pairing_code_ttl_secs, 300);
            assert_eq!(c.graphql.max_depth, 12);
            // ...and the defaults below both.
            assert_eq!(c.limits.deliveries_per_account_per_minute, 20);
            assert!(c.graphql.graphiql);
            // A password from the environment is hidden too.
            assert!(!format!("{c:?}").contains(ENV_PASSWORD));
        }
        "flags_over_env" => {
            let flags = Overrides {
                listen: Some(addr("127.0.0.1:9100")),
                database_url: Some(bridge::config::Redacted("sqlite:///from/flags.db".into())),
                data_dir: Some("/from/flags".into()),
                profile: None,
            };
            let c = Config::load(Some(file), &flags).unwrap();
            assert_eq!(c.listen, addr("127.0.0.1:9100"));
            assert_eq!(c.database_url(), "sqlite:///from/flags.db");
            assert_eq!(c.data_dir, PathBuf::from("/from/flags"));
            // Unset flags leave the environment's values alone.
            assert_eq!(c.public_url, "https://env.example");
            // Without flags the environment beats the file.
            let c = Config::load(Some(file), &none).unwrap();
            assert_eq!(c.listen, addr("127.0.0.1:9000"));
            assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        }
        "env_without_file" => {
            let c = Config::load(None, &none).unwrap();
            assert_eq!(c.graphql.max_aliases, 3);
            assert_eq!(c.limits.device_inactivity_days, 7);
            assert_eq!(c.graphql.max_depth, 10);
            assert_eq!(c.public_url, Config::default().public_url);
        }
        "env_wrong_type" => {
            let err = Config::load(Some(file), &none).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
            assert!(
                err.to_string()
                    .to_lowercase()
                    .contains("deliveries_per_device_per_minute"),
                "{err}"
            );
        }
        "env_zero_limit" => {
            let err = Config::load(None, &none).unwrap_err();
            assert!(
                err.to_string().contains("limits.pairing_lockout_after"),
                "{err}"
            );
        }
        "env_production" => {
            let err = Config::load(None, &none).unwrap_err();
            assert!(
                matches!(err, ConfigError::RefusedInProduction(_)),
                "{err:?}"
            );
            assert!(err.to_string().contains("identity issuer"), "{err}");
            // A flag can bring it back to development.
            let dev = Overrides {
                profile: Some(Profile::Development),
                ..Overrides::default()
            };
            assert_eq!(
                Config::load(None, &dev).unwrap().profile,
                Profile::Development
            );
        }
        "env_oidc_identity" => {
            let c = Config::load(None, &none).unwrap();
            match c.identity {
                IdentityConfig::Oidc {
                    issuer,
                    audience,
                    jwks_file,
                    algorithms,
                    ..
                } => {
                    assert_eq!(issuer, "https://idp.example");
                    assert_eq!(audience, "tether");
                    assert_eq!(jwks_file, Some(PathBuf::from("/etc/tether/jwks.json")));
                    assert_eq!(algorithms, ["ES256", "EdDSA", "RS256"]);
                }
                other => panic!("{other:?}"),
            }
        }
        "config_variable_is_not_a_key" => {
            let c = Config::load(None, &none).unwrap();
            assert_eq!(c, Config::default());
        }
        other => panic!("unknown case {other}"),
    }
}

#[test]
fn environment_layering() {
    if let Ok(case) = std::env::var(CASE) {
        let file = PathBuf::from(std::env::var(FILE).unwrap());
        run_case(&case, &file);
        std::fs::write(std::env::var(DONE).unwrap(), "ok").unwrap();
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "tether-config-env-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bridge.toml");
    std::fs::write(&file, TOML).unwrap();
    let mut failures = Vec::new();
    for (case, vars) in cases() {
        let done = dir.join(format!("{case}.done"));
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["environment_layering", "--exact", "--test-threads=1"]);
        for (key, _) in std::env::vars() {
            if key.starts_with("TETHER_") {
                cmd.env_remove(key);
            }
        }
        cmd.env(CASE, case).env(FILE, &file).env(DONE, &done);
        for (key, value) in vars {
            cmd.env(key, value);
        }
        let out = cmd.output().unwrap();
        let ran = std::fs::read_to_string(&done).is_ok_and(|s| s == "ok");
        if !out.status.success() || !ran {
            failures.push(format!(
                "case {case}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
