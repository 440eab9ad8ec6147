//! `bridge`: run the Tether bridge, or one of its operator commands.

// Printing is this binary's interface (tokens, schema, errors); libraries log instead.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use bridge::clock::{Clock, SystemClock};
use bridge::config::{Config, Overrides, Profile};
use clap::{Parser, Subcommand};

/// Tether bridge: pairs screenless devices to accounts and delivers their passkey sign-in
/// requests to the account's phones.
#[derive(Debug, Parser)]
#[command(name = "bridge", version, about)]
struct Cli {
    /// TOML configuration file (also `TETHER_CONFIG`).
    #[arg(long, env = "TETHER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long, global = true)]
    listen: Option<std::net::SocketAddr>,
    /// Database URL: sqlite://PATH?mode=rwc or postgres://… (default: tether.db in the data dir).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Directory for the SQLite file and key files (default: current directory).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// `development` or `production`.
    #[arg(long, global = true, value_parser = parse_profile)]
    profile: Option<Profile>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Mint a companion access token from the development issuer.
    DevToken {
        /// Account (subject) to sign in as.
        #[arg(long)]
        account: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Print the GraphQL schema (SDL); `schema.graphql` is this output.
    PrintSchema,
    /// Start a new envelope signing key; the old one stays in the JWKS until its envelopes
    /// have expired.
    RotateSigningKey,
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    match s {
        "development" => Ok(Profile::Development),
        "production" => Ok(Profile::Production),
        _ => Err("expected development or production".into()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Some(Command::PrintSchema)) {
        print!("{}", bridge::graphql::sdl());
        return Ok(());
    }
    init_logging(cli.log_json);
    let overrides = Overrides {
        listen: cli.listen,
        database_url: cli.database_url.clone().map(bridge::config::Redacted),
        data_dir: cli.data_dir.clone(),
        profile: cli.profile,
    };
    let config = Config::load(cli.config.as_deref(), &overrides)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve(config)),
        Command::DevToken { account, ttl } => {
            if config.profile == Profile::Production {
                anyhow::bail!(
                    "dev-token is a development tool; the production profile has no development issuer"
                );
            }
            std::fs::create_dir_all(&config.data_dir)?;
            let issuer =
                bridge::auth::dev_issuer::DevIssuer::load_or_create(&config.dev_issuer_key_file())?;
            let token = issuer.mint(&account, &config.public_url, SystemClock.now_secs(), ttl)?;
            println!("{token}");
            Ok(())
        }
        Command::RotateSigningKey => {
            let path = config.signing_key_file();
            let now = SystemClock.now_secs();
            let mut keys = bridge::signing::KeySet::load_or_create(&path, now)?;
            keys.rotate(now);
            keys.prune(now, bridge::delivery::DELIVERY_LIFETIME_MS / 1000);
            keys.save(&path)?;
            println!(
                "new signing key {}; restart the bridge (or every instance) to use it",
                keys.active_kid()
            );
            Ok(())
        }
        Command::PrintSchema => Ok(()),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    bridge::run(listener, config, Arc::new(SystemClock), shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
