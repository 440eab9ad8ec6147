//! Tether bridge: the service an operator runs.
//!
//! It authenticates devices (short-lived JWTs signed by their device keys) and companion apps
//! (access tokens from the operator's identity provider), pairs screenless devices to accounts,
//! and turns a device's sign-in or registration request into a signed, single-use delivery
//! that expires five minutes after it is created and is pushed to the account's companion apps.
//!
//! * [`app`] builds the router from a state (tests drive it without a socket);
//!   [`run`] serves it on a listener until a shutdown future completes.
//! * I/O seams are injected through [`state::AppState`]: the clock ([`clock`]), the database
//!   ([`store`], SQLite or PostgreSQL), the identity provider ([`auth`]) and the signing keys
//!   ([`signing`]).
//! * [`graphql`] is the API; `schema.graphql` at the repository root is generated from it.
//!
//! Push delivery to APNs and FCM and the tunnel relay build on this crate.

pub mod auth;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod error;
pub mod events;
pub mod graphql;
pub mod http;
pub mod id;
pub mod metrics;
pub mod outbox;
pub mod pairing;
pub mod principal;
pub mod push;
pub mod ratelimit;
pub mod relay;
pub mod signing;
pub mod state;
pub mod store;
pub mod worker;

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::http::Http;
use crate::state::{AppState, StartError};

/// The router for a state.
pub fn app(state: AppState) -> Router {
    metrics::install();
    let schema = graphql::schema(Some(state.clone()), &state.config.graphql);
    Router::new()
        .route("/graphql", get(http::graphql_get).post(http::graphql_post))
        .route("/.well-known/jwks.json", get(http::jwks))
        .route("/healthz", get(http::healthz))
        .route("/metrics", get(http::metrics))
        .route("/readyz", get(http::readyz))
        .merge(relay::router(state.clone()))
        .with_state(Http { state, schema })
}

/// Serves the bridge on `listener` until `shutdown` completes, then drains connections and
/// stops the background workers.
pub async fn run(
    listener: TcpListener,
    config: Config,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let state = AppState::build(config, clock).await?;
    serve(listener, state, shutdown).await
}

/// [`run`] with a prepared state.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = worker::spawn(state.clone(), stop_rx);
    let relay = state.relay.clone();
    let addr = listener.local_addr()?;
    tracing::info!(%addr, profile = ?state.config.profile, "bridge ready");
    // TCP_NODELAY: responses and relayed messages are written whole; with Nagle's algorithm a
    // second small message written back to back would wait for a delayed ACK (measured: up to
    // 40 ms through the relay).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    relay.close_all();
    let _ = stop_tx.send(true);
    let _ = workers.await;
    tracing::info!("bridge stopped");
    Ok(())
}
