//! The hybrid tunnel relay the bridge can host (CTAP 2.2 §11.5 tunnel service; see
//! `docs/relay.md` and `hybrid-protocol.md` §6).
//!
//! * The phone opens `GET /cable/new/<tunnel id>` (WebSocket, subprotocol `fido.cable`). The
//!   relay takes the tunnel id, assigns a 3-byte routing id unique among live tunnels and
//!   returns it as upper-case hex in `X-caBLE-Routing-ID` on the 101 response.
//! * The client joins with `GET /cable/connect/<routing id>/<tunnel id>`.
//! * From then on binary messages are relayed unchanged in both directions; the relay never
//!   parses, decrypts or logs them. Text messages close the tunnel (1008). When one side closes,
//!   the other is closed (1000).
//! * Connection signal: a side that sends `X-caBLE-Signal-Connection` on its upgrade gets the
//!   header echoed on its 101 and, once both sides are present, one binary message `00` before
//!   any message from its peer. A side that does not send the header gets nothing extra.
//!
//! Every limit is a [`RelayConfig`] field with a safe default; refusals are plain-text HTTP
//! answers naming the limit ([`Refusal`]), and limits hit on an open tunnel are WebSocket
//! close codes (1001 time limits, 1008 message count or text, 1009 message size).
//!
//! Slow readers: backpressure, not buffering. Each direction holds at most one message; a
//! receiver that does not read stops the relay from reading its peer, so TCP flow control
//! pushes back on the sender while the other direction and every other tunnel carry on. A
//! stalled tunnel relays nothing and the idle timeout closes it. The `tunnel` module has the details.
//!
//! Memory: per tunnel, one task, two connections that hold no buffer between messages (the
//! `ws` module frames each message in one allocation of its own size, freed once written on),
//! and a few words in the table; expiry is a periodic sweep, not per-tunnel timers.
//!
//! Routing ids come from the operating system's random source; nothing depends on their
//! values, so tests need not inject them.
//!
//! Not hosted: `/cable/contact/<contact id>` (state-assisted transactions need a push channel to
//! the phone that this relay does not have); it answers 410 Gone, so clients forget the link.

mod config;
mod registry;
mod tunnel;
mod ws;

use std::net::{IpAddr, SocketAddr};

use axum::Router;
use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hybrid::tunnel::{
    ROUTING_ID_HEADER, SIGNAL_CONNECTION_HEADER, SUBPROTOCOL, TunnelPath, TunnelPathError,
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

pub use config::{MAX_FRAME_BYTES_CEILING, RelayConfig};
pub use registry::{Relay, TunnelCounts};

use crate::state::AppState;

/// Gauge: tunnels joined by a client.
pub const TUNNELS_OPEN: &str = "tether_relay_tunnels_open";
/// Gauge: tunnels waiting for a client.
pub const TUNNELS_PENDING: &str = "tether_relay_tunnels_pending";
/// Counter, label `reason` ([`Refusal::reason`]): upgrade requests refused.
pub const TUNNELS_REFUSED_TOTAL: &str = "tether_relay_tunnels_refused_total";
/// Counter, label `reason`: tunnels ended, by why.
pub const TUNNELS_CLOSED_TOTAL: &str = "tether_relay_tunnels_closed_total";
/// Counter: binary messages relayed (both directions).
pub const FRAMES_TOTAL: &str = "tether_relay_frames_total";

/// Why the relay refused a request; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// `relay.enabled = false` (404).
    #[error("the tunnel relay is disabled on this bridge (relay.enabled = false)")]
    Disabled,
    /// Not one of the relay's paths (404).
    #[error(
        "not a relay path: use /cable/new/<tunnel id> or /cable/connect/<routing id>/<tunnel id>"
    )]
    UnknownPath,
    /// An id in the path is malformed (400).
    #[error("bad relay path: {0}")]
    BadPath(TunnelPathError),
    /// `/cable/contact/…`: this relay knows no linked phones (410).
    #[error("unknown contact id: this relay keeps no linked phones")]
    UnknownContact,
    /// Not a WebSocket upgrade (426).
    #[error("this endpoint only accepts WebSocket upgrades (subprotocol fido.cable)")]
    NotWebSocket,
    /// The upgrade does not offer `fido.cable` (400).
    #[error("the WebSocket subprotocol fido.cable is required")]
    MissingSubprotocol,
    /// Too many `/cable/new` from this address (429).
    #[error(
        "too many new tunnels from this address (relay.new_tunnels_per_address_per_minute = {per_minute}); retry in {retry_after_secs} s"
    )]
    RateLimited {
        /// The configured limit.
        per_minute: u32,
        /// Seconds until one more is allowed.
        retry_after_secs: u64,
    },
    /// `relay.max_tunnels` reached (503).
    #[error("the relay is at capacity (relay.max_tunnels = {max})")]
    AtCapacity {
        /// The configured limit.
        max: usize,
    },
    /// The tunnel id is pending, open, or was used recently (409).
    #[error("this tunnel id is already taken; a tunnel id cannot be used twice")]
    TunnelIdTaken,
    /// No pending tunnel has this tunnel id and routing id (404).
    #[error("no pending tunnel with this routing id and tunnel id")]
    UnknownTunnel,
    /// The tunnel was already joined or has closed (410).
    #[error("this tunnel was already joined or has closed")]
    Gone,
    /// The relay could not serve the request (500).
    #[error("internal error")]
    Internal,
}

impl Refusal {
    /// The HTTP status answered.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Disabled | Self::UnknownPath | Self::UnknownTunnel => StatusCode::NOT_FOUND,
            Self::BadPath(_) | Self::MissingSubprotocol => StatusCode::BAD_REQUEST,
            Self::UnknownContact | Self::Gone => StatusCode::GONE,
            Self::NotWebSocket => StatusCode::UPGRADE_REQUIRED,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::AtCapacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::TunnelIdTaken => StatusCode::CONFLICT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable snake_case label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::UnknownPath => "unknown_path",
            Self::BadPath(_) => "bad_path",
            Self::UnknownContact => "unknown_contact",
            Self::NotWebSocket => "not_websocket",
            Self::MissingSubprotocol => "missing_subprotocol",
            Self::RateLimited { .. } => "rate_limited",
            Self::AtCapacity { .. } => "at_capacity",
            Self::TunnelIdTaken => "tunnel_id_taken",
            Self::UnknownTunnel => "unknown_tunnel",
            Self::Gone => "gone",
            Self::Internal => "internal",
        }
    }
}

impl From<TunnelPathError> for Refusal {
    fn from(e: TunnelPathError) -> Self {
        match e {
            TunnelPathError::UnknownPath => Self::UnknownPath,
            other => Self::BadPath(other),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (
            self.status(),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            Self::RateLimited {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Self::NotWebSocket => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            _ => {}
        }
        response
    }
}

/// The relay's routes (`/cable/…`), for merging into the bridge's router.
pub fn router<S>(state: AppState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/cable/{*path}", get(handle))
        .with_state(state)
}

async fn handle(State(state): State<AppState>, request: Request) -> Response {
    match accept(&state.relay, request).await {
        Ok(response) => response,
        Err(refusal) => {
            ::metrics::counter!(TUNNELS_REFUSED_TOTAL, "reason" => refusal.reason()).increment(1);
            tracing::debug!(reason = refusal.reason(), "relay request refused");
            refusal.into_response()
        }
    }
}

/// Whether the request offers the `fido.cable` subprotocol.
fn offers_subprotocol(headers: &HeaderMap) -> bool {
    has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL, false)
}

/// Whether a comma-separated header lists `token`.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str, ignore_case: bool) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| {
            if ignore_case {
                t.eq_ignore_ascii_case(token)
            } else {
                t == token
            }
        })
}

/// The `Sec-WebSocket-Key` of an HTTP/1.1 WebSocket upgrade request (RFC 6455 §4.2.1).
fn websocket_key(parts: &Parts) -> Option<HeaderValue> {
    let h = &parts.headers;
    let upgrade = parts.version == Version::HTTP_11
        && has_token(h, header::CONNECTION, "upgrade", true)
        && has_token(h, header::UPGRADE, "websocket", true)
        && h.get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
    if upgrade {
        h.get(header::SEC_WEBSOCKET_KEY).cloned()
    } else {
        None
    }
}

fn header_name(name: &str) -> Result<HeaderName, Refusal> {
    HeaderName::try_from(name).map_err(|_| Refusal::Internal)
}

/// The 101 answer to an accepted upgrade.
fn switching_protocols(key: &HeaderValue) -> Result<Response, Refusal> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL)
        .body(Body::empty())
        .map_err(|_| Refusal::Internal)
}

async fn accept(relay: &Relay, request: Request) -> Result<Response, Refusal> {
    if !relay.config().enabled {
        return Err(Refusal::Disabled);
    }
    let (mut parts, _body) = request.into_parts();
    let path = TunnelPath::parse(parts.uri.path())?;
    let addr: Option<IpAddr> = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let key = websocket_key(&parts).ok_or(Refusal::NotWebSocket)?;
    if !offers_subprotocol(&parts.headers) {
        return Err(Refusal::MissingSubprotocol);
    }
    let signal_header = header_name(SIGNAL_CONNECTION_HEADER)?;
    let signal = parts.headers.contains_key(&signal_header);
    let mut response = match path {
        TunnelPath::New(tunnel_id) => {
            let routing_header = header_name(ROUTING_ID_HEADER)?;
            let mut response = switching_protocols(&key)?;
            // Taken last: nothing below can fail, so a refusal never holds a tunnel id.
            let on_upgrade = parts
                .extensions
                .remove::<OnUpgrade>()
                .ok_or(Refusal::NotWebSocket)?;
            let reservation = relay.reserve(tunnel_id, addr)?;
            if let Ok(routing_id) = HeaderValue::try_from(reservation.routing_id.to_hex()) {
                response.headers_mut().insert(routing_header, routing_id);
            }
            let relay = relay.clone();
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => {
                        tunnel::run(relay, reservation, TokioIo::new(upgraded), signal).await;
                    }
                    Err(_) => relay.release(&tunnel_id, &reservation.control),
                }
            });
            response
        }
        TunnelPath::Connect(routing_id, tunnel_id) => {
            let response = switching_protocols(&key)?;
            let on_upgrade = parts
                .extensions
                .remove::<OnUpgrade>()
                .ok_or(Refusal::NotWebSocket)?;
            let join = relay.join(routing_id, tunnel_id)?;
            let relay = relay.clone();
            tokio::spawn(async move {
                // A failed upgrade drops `join`, which ends the tunnel (1011 to the phone).
                if let Ok(upgraded) = on_upgrade.await {
                    let joiner = tunnel::Joiner {
                        io: TokioIo::new(upgraded),
                        signal,
                    };
                    if let Err(late) = join.send(joiner) {
                        tunnel::refuse_late_client(&relay, late.io).await;
                    }
                }
            });
            response
        }
        TunnelPath::Contact(_) => return Err(Refusal::UnknownContact),
    };
    if signal {
        response
            .headers_mut()
            .insert(signal_header, HeaderValue::from_static("true"));
    }
    Ok(response)
}
