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

use hybrid::tunnel::TunnelId;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};

use super::registry::{CloseReason, Control, Relay, Reservation};
use super::ws::{Incoming, OutFrame, ReadError, Reader, Writer};
use super::{FRAMES_TOTAL, TUNNELS_CLOSED_TOTAL};

/// An upgraded connection.
pub(crate) type Io = TokioIo<Upgraded>;
type SideReader = Reader<ReadHalf<Io>>;
type SideWriter = Writer<WriteHalf<Io>>;

/// WebSocket close codes (RFC 6455 §7.4.1).
mod code {
    pub(super) const NORMAL: u16 = 1000;
    pub(super) const AWAY: u16 = 1001;
    pub(super) const PROTOCOL: u16 = 1002;
    pub(super) const POLICY: u16 = 1008;
    pub(super) const SIZE: u16 = 1009;
    pub(super) const ERROR: u16 = 1011;
}

/// The client's side of a tunnel, handed from its `/cable/connect` upgrade to the tunnel task.
pub(crate) struct Joiner {
    /// The client's connection.
    pub(crate) io: Io,
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
    /// That side sent a close frame (with this code).
    Closed(Side, Option<u16>),
    /// That side disconnected without one.
    Lost(Side),
    /// That side sent a text message.
    Text(Side),
    /// That side sent a message above `max_frame_bytes`.
    TooBig(Side),
    /// That side broke the WebSocket framing rules.
    Protocol(Side),
    /// `max_frames_per_tunnel` reached.
    FrameLimit,
    /// The relay ended it.
    Cancelled(CloseReason),
    /// The client's upgrade failed after it had joined.
    JoinFailed,
}

/// How one side is closed.
enum Farewell {
    /// Send our close frame; `wait` for the peer's answer if its reader is still usable.
    Close { frame: OutFrame, wait: bool },
    /// Answer the peer's close frame.
    Answer(OutFrame),
    /// The peer is gone.
    Nothing,
}

impl End {
    fn from_read(e: ReadError, side: Side) -> Self {
        match e {
            ReadError::Lost => Self::Lost(side),
            ReadError::TooBig => Self::TooBig(side),
            ReadError::Protocol(_) => Self::Protocol(side),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Closed(..) => "peer_closed",
            Self::Lost(_) => "peer_lost",
            Self::Text(_) => "text_message",
            Self::TooBig(_) => "message_too_big",
            Self::Protocol(_) => "protocol_error",
            Self::FrameLimit => "message_limit",
            Self::Cancelled(CloseReason::PendingExpired) => "pending_expired",
            Self::Cancelled(CloseReason::LifetimeReached) => "lifetime",
            Self::Cancelled(CloseReason::Idle) => "idle",
            Self::Cancelled(CloseReason::ShuttingDown) => "shutdown",
            Self::JoinFailed => "join_failed",
        }
    }

    /// How to close (phone, client).
    fn farewells(self, relay: &Relay) -> (Farewell, Farewell) {
        let c = relay.config();
        // A violation closes both sides with its code; the offender's reader is unusable.
        let both = |offender: Option<Side>, code: u16, reason: &str| {
            let f = |side: Side| Farewell::Close {
                frame: OutFrame::close(Some(code), reason),
                wait: offender != Some(side),
            };
            (f(Side::Phone), f(Side::Client))
        };
        let peer_gone = |side: Side, own: Farewell| {
            let other = Farewell::Close {
                frame: OutFrame::close(Some(code::NORMAL), "peer closed the tunnel"),
                wait: true,
            };
            match side {
                Side::Phone => (own, other),
                Side::Client => (other, own),
            }
        };
        match self {
            // Echo the status code, as RFC 6455 §5.5.1 suggests; a code that may not be sent
            // (RFC 6455 §7.4) is answered with 1002.
            Self::Closed(side, status) => {
                let status = status.map(|c| if sendable(c) { c } else { code::PROTOCOL });
                peer_gone(side, Farewell::Answer(OutFrame::close(status, "")))
            }
            Self::Lost(side) => peer_gone(side, Farewell::Nothing),
            Self::Text(side) => both(Some(side), code::POLICY, "text messages are not relayed"),
            Self::TooBig(side) => both(
                Some(side),
                code::SIZE,
                &format!(
                    "message larger than relay.max_frame_bytes ({})",
                    c.max_frame_bytes
                ),
            ),
            Self::Protocol(side) => both(Some(side), code::PROTOCOL, "WebSocket protocol error"),
            Self::FrameLimit => both(
                None,
                code::POLICY,
                &format!(
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
                both(None, code::AWAY, &text)
            }
            Self::JoinFailed => (
                Farewell::Close {
                    frame: OutFrame::close(Some(code::ERROR), "client connection failed"),
                    wait: true,
                },
                Farewell::Nothing,
            ),
        }
    }
}

/// Whether a close code may appear in a close frame (RFC 6455 §7.4.1 and the IANA registry).
fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
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

/// One side's socket.
struct Conn {
    rx: SideReader,
    tx: SideWriter,
}

impl Conn {
    fn new(io: Io) -> Self {
        let (r, w) = tokio::io::split(io);
        Self {
            rx: Reader::new(r),
            tx: Writer::new(w),
        }
    }
}

/// What a read means for the tunnel, after answering pings.
enum Step {
    Data(OutFrame),
    Nothing,
    End(End),
}

async fn step(read: Result<Incoming, ReadError>, own_tx: &SideWriter, side: Side) -> Step {
    match read {
        Ok(Incoming::Binary(frame)) => Step::Data(frame),
        Ok(Incoming::Ping(payload)) => match own_tx.send(&OutFrame::pong(&payload)).await {
            Ok(()) => Step::Nothing,
            Err(_) => Step::End(End::Lost(side)),
        },
        // Pongs are not activity.
        Ok(Incoming::Pong) => Step::Nothing,
        Ok(Incoming::Text) => Step::End(End::Text(side)),
        Ok(Incoming::Close(status)) => Step::End(End::Closed(side, status)),
        Err(e) => Step::End(End::from_read(e, side)),
    }
}

/// Relays one message that arrived from `from`.
async fn forward(
    relay: &Relay,
    control: &Control,
    to: &SideWriter,
    frame: OutFrame,
    from: Side,
) -> Result<(), End> {
    if control.count_frame() > relay.config().max_frames_per_tunnel {
        return Err(End::FrameLimit);
    }
    control.touch(relay.now_ms());
    to.send(&frame).await.map_err(|_| End::Lost(from.other()))?;
    ::metrics::counter!(FRAMES_TOTAL).increment(1);
    Ok(())
}

/// Relays every message from one side to the other until something ends the tunnel.
async fn pump(
    relay: &Relay,
    control: &Control,
    from_rx: &mut SideReader,
    from_tx: &SideWriter,
    to: &SideWriter,
    side: Side,
) -> End {
    let max = relay.config().max_frame_bytes;
    loop {
        let read = from_rx.next(max).await;
        match step(read, from_tx, side).await {
            Step::Data(frame) => {
                if let Err(end) = forward(relay, control, to, frame, side).await {
                    return end;
                }
            }
            Step::Nothing => {}
            Step::End(end) => return end,
        }
    }
}

async fn relay_frames(
    relay: &Relay,
    control: &Control,
    phone: &mut Conn,
    client: &mut Conn,
    signals: (bool, bool),
    held: Option<OutFrame>,
) -> End {
    // The connection signal: one binary message holding the byte 00.
    let signal = OutFrame::binary(&[0]);
    if signals.0 && phone.tx.send(&signal).await.is_err() {
        return End::Lost(Side::Phone);
    }
    if signals.1 && client.tx.send(&signal).await.is_err() {
        return End::Lost(Side::Client);
    }
    if let Some(frame) = held
        && let Err(end) = forward(relay, control, &client.tx, frame, Side::Phone).await
    {
        return end;
    }
    tokio::select! {
        end = pump(relay, control, &mut phone.rx, &phone.tx, &client.tx, Side::Phone) => end,
        end = pump(relay, control, &mut client.rx, &client.tx, &phone.tx, Side::Client) => end,
    }
}

/// Closes one side, all within the grace period: sends our close frame (or answers the
/// peer's), waits for the peer's answer when its reader is still usable, then sends FIN.
async fn close_side(conn: &mut Conn, farewell: Farewell, max: usize, grace: Duration) {
    let _ = tokio::time::timeout(grace, async {
        match farewell {
            Farewell::Close { frame, wait } => {
                if conn.tx.send(&frame).await.is_ok() && wait {
                    loop {
                        match conn.rx.next(max).await {
                            Ok(Incoming::Close(_) | Incoming::Text) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
            }
            Farewell::Answer(frame) => {
                let _ = conn.tx.send(&frame).await;
            }
            Farewell::Nothing => {}
        }
        conn.tx.shutdown().await;
    })
    .await;
}

/// Closes a client whose tunnel ended before its connection arrived.
pub(crate) async fn refuse_late_client(relay: &Relay, io: Io) {
    let mut conn = Conn::new(io);
    let c = relay.config();
    let farewell = Farewell::Close {
        frame: OutFrame::close(Some(code::NORMAL), "tunnel closed"),
        wait: true,
    };
    close_side(
        &mut conn,
        farewell,
        c.max_frame_bytes,
        Duration::from_millis(c.close_grace_ms),
    )
    .await;
}

/// Runs a tunnel from the phone's upgraded connection to the end.
pub(crate) async fn run(relay: Relay, reservation: Reservation, phone: Io, phone_signal: bool) {
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
    let c = relay.config();
    let (max, grace) = (c.max_frame_bytes, Duration::from_millis(c.close_grace_ms));
    let mut phone = Conn::new(phone);

    // Pending: wait for the client. A message the phone sends meanwhile is held (one at most;
    // then the phone is not read until the client arrives). Reading is cancel-safe, so a
    // message half read when the client arrives is finished later.
    let mut held: Option<OutFrame> = None;
    let joined = loop {
        tokio::select! {
            biased;
            reason = control.cancelled() => break Err(End::Cancelled(reason)),
            joined = &mut join => {
                break joined.map_err(|_| control.reason().map_or(End::JoinFailed, End::Cancelled));
            }
            read = phone.rx.next(max), if held.is_none() => {
                match step(read, &phone.tx, Side::Phone).await {
                    Step::Data(frame) => held = Some(frame),
                    Step::Nothing => {}
                    Step::End(end) => break Err(end),
                }
            }
        }
    };
    let joiner = match joined {
        Ok(joiner) => joiner,
        Err(end) => {
            release.now();
            finished(end);
            let (farewell, _) = end.farewells(&relay);
            close_side(&mut phone, farewell, max, grace).await;
            return;
        }
    };

    let mut client = Conn::new(joiner.io);
    let end = tokio::select! {
        biased;
        reason = control.cancelled() => End::Cancelled(reason),
        end = relay_frames(
            &relay,
            &control,
            &mut phone,
            &mut client,
            (phone_signal, joiner.signal),
            held,
        ) => end,
    };
    release.now();
    finished(end);
    let (phone_farewell, client_farewell) = end.farewells(&relay);
    tokio::join!(
        close_side(&mut phone, phone_farewell, max, grace),
        close_side(&mut client, client_farewell, max, grace),
    );
}

fn finished(end: End) {
    tracing::debug!(reason = end.label(), "relay tunnel closed");
    ::metrics::counter!(TUNNELS_CLOSED_TOTAL, "reason" => end.label()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_close_codes_are_not_echoed() {
        for ok in [1000, 1001, 1003, 1008, 1011, 3000, 4999] {
            assert!(sendable(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert!(!sendable(bad), "{bad}");
        }
    }
}
