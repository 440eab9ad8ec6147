//! The hybrid session driver: one loop that moves bytes between the BLE radio, the tunnel, the
//! timer and the sans-I/O [`Initiator`].
//!
//! ```text
//!   AdvertSource ──adverts──►┐
//!   TunnelConn   ──messages─►├─► Initiator::handle_* ──► poll_event ──► connect / progress / result
//!   timer        ──deadline─►┘                          poll_transmit ──► TunnelConn::send
//! ```
//!
//! [`run`] owns no protocol logic. Each turn it drains the session's events (an advert matched:
//! open the tunnel at the domain it names; handshake done; reply received), sends what the
//! session queued, and then waits in one `tokio::select!` for whichever comes first: an advert
//! (only while scanning), a tunnel message (once connected), the session's own timer or the
//! caller's overall deadline. Time is tokio's monotonic clock, given to the session as
//! milliseconds since `epoch`.
//!
//! Adverts of other sessions are normal (every phone nearby advertises) and are ignored; the
//! session trial-decrypts them. Every failure ends in one [`SessionFailure`], classified by what
//! the user should be told: phone not found, Bluetooth unavailable, tunnel failed, an error
//! status from the authenticator, or a protocol violation.

use std::time::Duration;

use hybrid::Time;
use hybrid::crypter::CrypterError;
use hybrid::ctap::get_info::GetInfoResponse;
use hybrid::ctap::{CtapResponse, CtapStatus};
use hybrid::domain::DomainId;
use hybrid::frame::LinkingInfo;
use hybrid::initiator::{Event, Initiator};
use hybrid::noise::NoiseError;
use hybrid::session::{SessionError, Stage};
use tether_ble::{AdvertSource, BleError};
use thiserror::Error;
use tokio::time::Instant;

use crate::tunnel::{self, HeaderMap, TunnelConfig, TunnelConn, TunnelError};

/// How long closing the tunnel after the reply may take before it is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the session has reached, for a person watching (`device-agent` prints these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// Listening for the phone's advert.
    Scanning,
    /// The phone's advert for this session was received.
    PhoneFound {
        /// Its signal strength in dBm, if the radio reported one.
        rssi: Option<i16>,
    },
    /// The tunnel to the relay is open.
    TunnelOpen,
    /// The encrypted channel with the phone is established.
    HandshakeDone,
    /// The phone answered the request successfully.
    ResponseReceived,
}

/// A successful session.
#[derive(Debug)]
#[non_exhaustive]
pub struct SessionOutcome {
    /// The authenticator's reply (status `CTAP2_OK`).
    pub response: CtapResponse,
    /// The phone's getInfo, from the post-handshake message.
    pub get_info: Option<GetInfoResponse>,
    /// Linking data the phone sent and that verified against this handshake (never set from
    /// data that did not verify).
    pub linking: Option<Box<LinkingInfo>>,
    /// Signal strength of the phone's advert, if known.
    pub rssi: Option<i16>,
}

/// Why a session failed, classified for the user.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SessionFailure {
    /// No advert for this session arrived before the deadline (the phone is not nearby, is too
    /// far away for the RSSI floor, or the user did not approve).
    #[error("phone not found nearby")]
    PhoneNotFound,
    /// Bluetooth cannot be used.
    #[error("{0}")]
    BleUnavailable(#[source] BleError),
    /// The tunnel through the relay could not be opened or broke.
    #[error("tunnel failed: {0}")]
    TunnelFailed(#[source] TunnelFailure),
    /// The authenticator answered with an error status (for example the user refused).
    #[error("authenticator error {} (0x{:02x})", .0.name(), u8::from(*.0))]
    Authenticator(CtapStatus),
    /// The phone broke the protocol (malformed or unexpected messages).
    #[error("protocol error: {0}")]
    Protocol(#[source] SessionError),
}

/// How the tunnel failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TunnelFailure {
    /// The relay refused to join the tunnel (for example 404: no such tunnel).
    #[error("the relay refused the tunnel: HTTP {status}{}", if message.is_empty() { String::new() } else { format!(" ({message})") })]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The relay's explanation, if any.
        message: String,
    },
    /// The relay could not be reached or the WebSocket could not be opened.
    #[error("{0}")]
    Connect(#[source] TunnelError),
    /// The advert names a tunnel domain id that maps to no host.
    #[error("the phone named an unknown tunnel server (domain id {0})")]
    UnknownDomain(DomainId),
    /// The tunnel closed before the reply arrived.
    #[error("the tunnel closed during {0:?}")]
    Dropped(Stage),
    /// The tunnel broke (a transport error, a text or oversized message, an error close).
    #[error("the tunnel broke during {stage:?}: {error}")]
    Transport {
        /// Where the session was.
        stage: Stage,
        /// What happened.
        #[source]
        error: TunnelError,
    },
    /// The Noise handshake failed: the phone does not hold this session's secrets, or the
    /// handshake message was modified in transit.
    #[error("handshake failed (message modified or wrong phone): {0}")]
    Handshake(#[source] NoiseError),
    /// An encrypted message failed authentication: modified, replayed, reordered or dropped
    /// in transit.
    #[error("tunnel message rejected as tampered: {0}")]
    Tampered(#[source] CrypterError),
    /// A deadline passed after the phone was found.
    #[error("timed out during {0:?}")]
    Timeout(Stage),
}

impl SessionFailure {
    /// The failure for a session error reported by the hybrid state machine.
    pub fn from_session_error(error: SessionError) -> Self {
        match error {
            SessionError::Timeout(Stage::Discovery) => Self::PhoneNotFound,
            SessionError::Timeout(stage) => Self::TunnelFailed(TunnelFailure::Timeout(stage)),
            SessionError::TunnelClosed(stage) => Self::TunnelFailed(TunnelFailure::Dropped(stage)),
            SessionError::Handshake(e) => Self::TunnelFailed(TunnelFailure::Handshake(e)),
            SessionError::Decrypt(e) => Self::TunnelFailed(TunnelFailure::Tampered(e)),
            other => Self::Protocol(other),
        }
    }
}

/// The session's time: milliseconds since `epoch`.
fn time_since(epoch: Instant) -> Time {
    Time::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// Runs one hybrid session to its end.
///
/// * `initiator`: the session, built by the caller with the identity key and QR secret of the
///   `FIDO:/` URL that was delivered and the one CTAP request; its `now` at creation must be
///   [`Time::ZERO`] at `epoch` (its discovery timeout counts from there).
/// * `deadline`: the overall end (for example the delivery's expiry). Reached while scanning it
///   gives [`SessionFailure::PhoneNotFound`]; later, [`TunnelFailure::Timeout`].
/// * `ble`: where adverts come from; `tunnel`: how tunnel domains are reached.
/// * `progress` is called as the session advances.
pub async fn run(
    mut initiator: Initiator,
    epoch: Instant,
    deadline: Instant,
    ble: &mut dyn AdvertSource,
    tunnel: &TunnelConfig,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<SessionOutcome, SessionFailure> {
    let fail = SessionFailure::from_session_error;
    let mut conn: Option<TunnelConn> = None;
    // Where the session is, for failures the state machine does not report itself.
    let mut stage = Stage::Discovery;
    let mut rssi = None;
    let mut get_info = None;
    let mut linking = None;
    let mut response = None;
    progress(Progress::Scanning);

    loop {
        while let Some(event) = initiator.poll_event() {
            match event {
                Event::AdvertMatched {
                    routing_id,
                    tunnel_id,
                    domain_id,
                    domain,
                } => {
                    stage = Stage::Connect;
                    progress(Progress::PhoneFound { rssi });
                    let domain = domain.ok_or(SessionFailure::TunnelFailed(
                        TunnelFailure::UnknownDomain(domain_id),
                    ))?;
                    tracing::debug!(%domain, "phone found; opening the tunnel");
                    let url = tunnel
                        .connect_url(&domain, &routing_id, &tunnel_id)
                        .map_err(|e| SessionFailure::TunnelFailed(TunnelFailure::Connect(e)))?;
                    let limit = wake_at(&initiator, epoch, deadline);
                    let opened = tokio::time::timeout_at(
                        limit,
                        tunnel::connect(tunnel, &url, HeaderMap::new()),
                    )
                    .await;
                    let opened = match opened {
                        Ok(Ok(opened)) => opened,
                        Ok(Err(TunnelError::Refused { status, message })) => {
                            return Err(SessionFailure::TunnelFailed(TunnelFailure::Refused {
                                status,
                                message,
                            }));
                        }
                        Ok(Err(e)) => {
                            return Err(SessionFailure::TunnelFailed(TunnelFailure::Connect(e)));
                        }
                        Err(_) => return Err(timed_out(&mut initiator, epoch, stage)),
                    };
                    initiator
                        .handle_tunnel_connected(time_since(epoch))
                        .map_err(fail)?;
                    conn = Some(opened);
                    stage = Stage::Handshake;
                    progress(Progress::TunnelOpen);
                }
                Event::TunnelReady { get_info: info, .. } => {
                    get_info = Some(info);
                    stage = Stage::Request;
                    progress(Progress::HandshakeDone);
                }
                Event::LinkingReceived(Ok(info)) => linking = Some(info),
                Event::LinkingReceived(Err(e)) => {
                    tracing::warn!(error = %e, "the phone's linking data does not verify; ignored");
                }
                Event::ResponseReceived(reply) => response = Some(reply),
                _ => {}
            }
        }

        if let Some(c) = conn.as_mut() {
            while let Some(message) = initiator.poll_transmit() {
                if let Err(error) = c.send(message).await {
                    return Err(SessionFailure::TunnelFailed(TunnelFailure::Transport {
                        stage,
                        error,
                    }));
                }
            }
        }

        if let Some(reply) = response.take() {
            // Shutdown went out above; end the tunnel politely but without waiting long.
            if let Some(mut c) = conn.take() {
                let _ = tokio::time::timeout(CLOSE_GRACE, c.close()).await;
            }
            if !reply.status.is_ok() {
                return Err(SessionFailure::Authenticator(reply.status));
            }
            progress(Progress::ResponseReceived);
            return Ok(SessionOutcome {
                response: reply,
                get_info,
                linking,
                rssi,
            });
        }

        let scanning = stage == Stage::Discovery;
        let wake = wake_at(&initiator, epoch, deadline);
        tokio::select! {
            advert = ble.next_advert(), if scanning => match advert {
                Ok(advert) => {
                    if initiator.handle_advert(time_since(epoch), &advert.data) {
                        rssi = advert.rssi;
                    }
                }
                Err(e) => return Err(SessionFailure::BleUnavailable(e)),
            },
            message = recv(conn.as_mut()), if conn.is_some() => match message {
                Ok(Some(message)) => initiator
                    .handle_tunnel_message(time_since(epoch), &message)
                    .map_err(fail)?,
                Ok(None) => {
                    initiator.handle_tunnel_closed(time_since(epoch)).map_err(fail)?;
                    // Only an error can follow a close before the reply.
                    return Err(SessionFailure::TunnelFailed(TunnelFailure::Dropped(stage)));
                }
                Err(error) => {
                    return Err(SessionFailure::TunnelFailed(TunnelFailure::Transport {
                        stage,
                        error,
                    }));
                }
            },
            () = tokio::time::sleep_until(wake) => {
                if Instant::now() >= deadline {
                    return Err(timed_out(&mut initiator, epoch, stage));
                }
                initiator.handle_timeout(time_since(epoch)).map_err(fail)?;
            }
        }
    }
}

/// The earlier of the session's own timer and the overall deadline.
fn wake_at(initiator: &Initiator, epoch: Instant, deadline: Instant) -> Instant {
    initiator
        .poll_timeout()
        .map(|t| epoch + Duration::from_millis(t.as_millis()))
        .map_or(deadline, |timer| timer.min(deadline))
}

/// The failure when a wait ran out: the session's own timeout if it has one, else the overall
/// deadline at this stage.
fn timed_out(initiator: &mut Initiator, epoch: Instant, stage: Stage) -> SessionFailure {
    match initiator.handle_timeout(time_since(epoch)) {
        Err(e) => SessionFailure::from_session_error(e),
        Ok(()) if stage == Stage::Discovery => SessionFailure::PhoneNotFound,
        Ok(()) => SessionFailure::TunnelFailed(TunnelFailure::Timeout(stage)),
    }
}

async fn recv(conn: Option<&mut TunnelConn>) -> Result<Option<Vec<u8>>, TunnelError> {
    match conn {
        Some(conn) => conn.recv().await,
        None => std::future::pending().await,
    }
}
