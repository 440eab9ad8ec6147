//! One tunnel's life, in the task of the phone's socket: wait for the client, relay binary
//! messages both ways, close both sides.
//!
//! Both directions run in this one task, each reading one socket and writing the other. A
//! direction holds at most one message: while the receiving side does not read, its write
//! does not complete and the direction stops reading from the sender, so TCP flow control
//! pushes back on the sender (backpressure). The other direction is unaffected. A stalled
//! tunnel relays nothing, so the idle timeout ends it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hybrid::tunnel::TunnelId;
use tokio_tungstenite::tungstenite;

use super::registry::{CloseReason, Control, Relay, Reservation};
use super::{FRAMES_TOTAL, TUNNELS_CLOSED_TOTAL};

/// The client's side of a tunnel, handed from its `/cable/connect` upgrade to the tunnel task.
pub(crate) struct Joiner {
    /// The client's socket.
    pub(crate) socket: WebSocket,
    /// Whether the client asked for the connection signal.
    pub(crate) signal: bool,
}

impl fmt::Debug for Joiner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Joiner")
            .field("signal", &self.signal)
            .finish_non_exhaustive()
    }
}

type Tx = SplitSink<WebSocket, Message>;
type Rx = SplitStream<WebSocket>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Phone,
    Client,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::Phone => Self::Client,
            Self::Client => Self::Phone,
        }
    }
}

/// Why a tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// That side sent a close frame.
    Closed(Side),
    /// That side disconnected or failed without one.
    Lost(Side),
    /// That side sent a text message.
    Text(Side),
    /// That side sent a message above `max_frame_bytes`.
    TooBig(Side),
    /// `max_frames_per_tunnel` reached.
    FrameLimit,
    /// The relay ended it.
    Cancelled(CloseReason),
    /// The client's upgrade failed after it had joined.
    JoinFailed,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            Self::Closed(_) => "peer_closed",
            Self::Lost(_) => "peer_lost",
            Self::Text(_) => "text_message",
            Self::TooBig(_) => "message_too_big",
            Self::FrameLimit => "message_limit",
            Self::Cancelled(CloseReason::PendingExpired) => "pending_expired",
            Self::Cancelled(CloseReason::LifetimeReached) => "lifetime",
            Self::Cancelled(CloseReason::Idle) => "idle",
            Self::Cancelled(CloseReason::ShuttingDown) => "shutdown",
            Self::JoinFailed => "join_failed",
        }
    }

    /// The close frames for (phone, client); `None` answers a side's own close (or skips a
    /// side that is gone).
    fn close_frames(self, relay: &Relay) -> (Option<CloseFrame>, Option<CloseFrame>) {
        let c = relay.config();
        let both = |code, reason: String| {
            let f = close(code, reason);
            (Some(f.clone()), Some(f))
        };
        match self {
            Self::Closed(side) | Self::Lost(side) => {
                let peer = Some(close(close_code::NORMAL, "peer closed the tunnel".into()));
                match side {
                    Side::Phone => (None, peer),
                    Side::Client => (peer, None),
                }
            }
            Self::Text(_) => both(close_code::POLICY, "text messages are not relayed".into()),
            Self::TooBig(_) => both(
                close_code::SIZE,
                format!(
                    "message larger than relay.max_frame_bytes ({})",
                    c.max_frame_bytes
                ),
            ),
            Self::FrameLimit => both(
                close_code::POLICY,
                format!(
                    "relay.max_frames_per_tunnel ({}) reached",
                    c.max_frames_per_tunnel
                ),
            ),
            Self::Cancelled(reason) => {
                let text = match reason {
                    CloseReason::PendingExpired => format!(
                        "no client joined within relay.pending_lifetime_secs ({} s)",
                        c.pending_lifetime_secs
                    ),
                    CloseReason::LifetimeReached => format!(
                        "relay.tunnel_lifetime_secs ({} s) reached",
                        c.tunnel_lifetime_secs
                    ),
                    CloseReason::Idle => format!(
                        "idle for relay.idle_timeout_secs ({} s)",
                        c.idle_timeout_secs
                    ),
                    CloseReason::ShuttingDown => "relay shutting down".into(),
                };
                both(close_code::AWAY, text)
            }
            Self::JoinFailed => (
                Some(close(close_code::ERROR, "client connection failed".into())),
                None,
            ),
        }
    }
}

fn close(code: u16, reason: String) -> CloseFrame {
    CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }
}

/// Removes the tunnel from the table when the task ends, however it ends.
struct Release {
    relay: Relay,
    tunnel_id: TunnelId,
    control: Arc<Control>,
    done: bool,
}

impl Release {
    fn now(&mut self) {
        if !self.done {
            self.done = true;
            self.relay.release(&self.tunnel_id, &self.control);
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.now();
    }
}

/// What one read produced.
enum Incoming {
    Data(Bytes),
    Other,
    End(End),
}

fn incoming(msg: Option<Result<Message, axum::Error>>, side: Side) -> Incoming {
    match msg {
        None => Incoming::End(End::Lost(side)),
        Some(Err(e)) => {
            let too_big = e
                .into_inner()
                .downcast_ref::<tungstenite::Error>()
                .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
            Incoming::End(if too_big {
                End::TooBig(side)
            } else {
                End::Lost(side)
            })
        }
        Some(Ok(Message::Binary(bytes))) => Incoming::Data(bytes),
        Some(Ok(Message::Text(_))) => Incoming::End(End::Text(side)),
        Some(Ok(Message::Close(_))) => Incoming::End(End::Closed(side)),
        // Pings are answered by the WebSocket layer; neither counts as activity.
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Other,
    }
}

/// Relays one message that arrived from `from`.
async fn forward(
    relay: &Relay,
    control: &Control,
    to: &mut Tx,
    bytes: Bytes,
    from: Side,
) -> Result<(), End> {
    if control.count_frame() > relay.config().max_frames_per_tunnel {
        return Err(End::FrameLimit);
    }
    control.touch(relay.now_ms());
    to.send(Message::Binary(bytes))
        .await
        .map_err(|_| End::Lost(from.other()))?;
    ::metrics::counter!(FRAMES_TOTAL).increment(1);
    Ok(())
}

/// Relays every message from `from` to `to` until something ends the tunnel.
async fn pump(relay: &Relay, control: &Control, from: &mut Rx, to: &mut Tx, side: Side) -> End {
    loop {
        match incoming(from.next().await, side) {
            Incoming::Data(bytes) => {
                if let Err(end) = forward(relay, control, to, bytes, side).await {
                    return end;
                }
            }
            Incoming::Other => {}
            Incoming::End(end) => return end,
        }
    }
}

/// The connection signal: one binary message holding the byte `00`.
fn signal() -> Message {
    Message::Binary(Bytes::from_static(&[0]))
}

struct Sockets<'a> {
    phone_tx: &'a mut Tx,
    phone_rx: &'a mut Rx,
    client_tx: &'a mut Tx,
    client_rx: &'a mut Rx,
}

async fn relay_frames(
    relay: &Relay,
    control: &Control,
    s: Sockets<'_>,
    signals: (bool, bool),
    held: Option<Bytes>,
) -> End {
    let (phone_signal, client_signal) = signals;
    if phone_signal && s.phone_tx.send(signal()).await.is_err() {
        return End::Lost(Side::Phone);
    }
    if client_signal && s.client_tx.send(signal()).await.is_err() {
        return End::Lost(Side::Client);
    }
    if let Some(bytes) = held
        && let Err(end) = forward(relay, control, s.client_tx, bytes, Side::Phone).await
    {
        return end;
    }
    tokio::select! {
        end = pump(relay, control, s.phone_rx, s.client_tx, Side::Phone) => end,
        end = pump(relay, control, s.client_rx, s.phone_tx, Side::Client) => end,
    }
}

/// Sends `frame` (or answers the peer's close), then waits for the peer's close or
/// disconnect, all within the grace period.
pub(crate) async fn close_side(
    tx: &mut Tx,
    rx: &mut Rx,
    frame: Option<CloseFrame>,
    grace: Duration,
) {
    let _ = tokio::time::timeout(grace, async {
        let sent = match frame {
            Some(f) => tx.send(Message::Close(Some(f))).await,
            None => tx.close().await,
        };
        if sent.is_err() {
            return;
        }
        while let Some(Ok(msg)) = rx.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Closes a client whose tunnel ended before its socket arrived.
pub(crate) async fn refuse_late_client(relay: &Relay, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let grace = Duration::from_millis(relay.config().close_grace_ms);
    let frame = close(close_code::NORMAL, "tunnel closed".into());
    close_side(&mut tx, &mut rx, Some(frame), grace).await;
}

/// Runs a tunnel from the phone's upgraded socket to the end.
pub(crate) async fn run(
    relay: Relay,
    reservation: Reservation,
    phone: WebSocket,
    phone_signal: bool,
) {
    let Reservation {
        tunnel_id,
        control,
        mut join,
        ..
    } = reservation;
    let mut release = Release {
        relay: relay.clone(),
        tunnel_id,
        control: control.clone(),
        done: false,
    };
    let grace = Duration::from_millis(relay.config().close_grace_ms);
    let (mut phone_tx, mut phone_rx) = phone.split();

    // Pending: wait for the client. A message the phone sends meanwhile is held (one at most;
    // then the phone is not read until the client arrives).
    let mut held: Option<Bytes> = None;
    let joined = loop {
        tokio::select! {
            biased;
            reason = control.cancelled() => break Err(End::Cancelled(reason)),
            joined = &mut join => {
                break joined.map_err(|_| control.reason().map_or(End::JoinFailed, End::Cancelled));
            }
            msg = phone_rx.next(), if held.is_none() => match incoming(msg, Side::Phone) {
                Incoming::Data(bytes) => held = Some(bytes),
                Incoming::Other => {}
                Incoming::End(end) => break Err(end),
            },
        }
    };
    let Joiner {
        socket: client,
        signal: client_signal,
    } = match joined {
        Ok(joiner) => joiner,
        Err(end) => {
            release.now();
            finished(end);
            let (phone_close, _) = end.close_frames(&relay);
            close_side(&mut phone_tx, &mut phone_rx, phone_close, grace).await;
            return;
        }
    };

    let (mut client_tx, mut client_rx) = client.split();
    let end = tokio::select! {
        biased;
        reason = control.cancelled() => End::Cancelled(reason),
        end = relay_frames(
            &relay,
            &control,
            Sockets {
                phone_tx: &mut phone_tx,
                phone_rx: &mut phone_rx,
                client_tx: &mut client_tx,
                client_rx: &mut client_rx,
            },
            (phone_signal, client_signal),
            held,
        ) => end,
    };
    release.now();
    finished(end);
    let (phone_close, client_close) = end.close_frames(&relay);
    tokio::join!(
        close_side(&mut phone_tx, &mut phone_rx, phone_close, grace),
        close_side(&mut client_tx, &mut client_rx, client_close, grace),
    );
}

fn finished(end: End) {
    tracing::debug!(reason = end.label(), "relay tunnel closed");
    ::metrics::counter!(TUNNELS_CLOSED_TOTAL, "reason" => end.label()).increment(1);
}
