//! What the two session state machines share: errors classified by fault, and limits.

use core::time::Duration;

use thiserror::Error;

use crate::crypter::CrypterError;
use crate::ctap::CtapError;
use crate::frame::FrameError;
use crate::noise::NoiseError;

/// Largest tunnel message either side accepts (both Chromium and libwebauthn accept 1 MiB).
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// The phase a session was in when something went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Client: looking for the phone's advert. Phone: waiting for the routing id.
    Discovery,
    /// Client: advert found, tunnel not yet open. Phone: advertising, waiting for message 1.
    Connect,
    /// The Noise handshake and the post-handshake message.
    Handshake,
    /// Client: request sent, waiting for the reply. Phone: waiting for the request.
    Request,
    /// Phone: reply sent, waiting for shutdown.
    Shutdown,
}

/// Who is at fault for a [`SessionError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The peer sent something invalid or broke the protocol (or an attacker changed bytes).
    Peer,
    /// The network: the tunnel closed.
    Transport,
    /// A deadline passed.
    Timeout,
    /// The caller used the session wrongly.
    Caller,
}

/// Why a session ended without success. Every failure ends the session; later calls return
/// [`SessionError::Closed`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// A deadline passed.
    #[error("timed out during {0:?}")]
    Timeout(Stage),
    /// The tunnel closed before the session finished.
    #[error("tunnel closed during {0:?}")]
    TunnelClosed(Stage),
    /// A handshake message was refused (wrong PSK, modified or truncated).
    #[error("handshake failed: {0}")]
    Handshake(NoiseError),
    /// An encrypted message failed authentication (modified, replayed, reordered or dropped).
    #[error("tunnel message rejected: {0}")]
    Decrypt(CrypterError),
    /// A decrypted message is malformed.
    #[error("tunnel message malformed: {0}")]
    Frame(FrameError),
    /// A CTAP message is malformed.
    #[error("CTAP message malformed: {0}")]
    Ctap(CtapError),
    /// A message arrived that the protocol does not allow here.
    #[error("unexpected {0}")]
    Unexpected(&'static str),
    /// The client sent a second CTAP command; a tunnel carries one.
    #[error("a second CTAP command in one tunnel")]
    SecondCommand,
    /// A tunnel message exceeds [`MAX_MESSAGE_LEN`].
    #[error("tunnel message of {0} bytes exceeds the limit")]
    MessageTooLarge(usize),
    /// The phone does not offer CTAP in this tunnel.
    #[error("phone does not support CTAP over this tunnel")]
    CtapUnsupported,
    /// A method was called in a state where it makes no sense.
    #[error("{0} called in the wrong state")]
    InvalidState(&'static str),
    /// The session already ended.
    #[error("session already ended")]
    Closed,
}

impl SessionError {
    /// Who is at fault.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Timeout(_) => Fault::Timeout,
            Self::TunnelClosed(_) => Fault::Transport,
            Self::InvalidState(_) | Self::Closed => Fault::Caller,
            _ => Fault::Peer,
        }
    }
}

/// Deadlines of the client's session. Defaults suit a person approving on a phone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitiatorTimeouts {
    /// From the start until the phone's advert is seen. The phone advertises only after the
    /// user approves, so this is long; drivers usually cap it at the delivery's expiry.
    pub discovery: Duration,
    /// From the advert until the tunnel is open.
    pub connect: Duration,
    /// From message 1 until the post-handshake message.
    pub handshake: Duration,
    /// From the request until the reply (user verification happens on the phone meanwhile).
    pub response: Duration,
}

impl Default for InitiatorTimeouts {
    fn default() -> Self {
        Self {
            discovery: Duration::from_secs(300),
            connect: Duration::from_secs(30),
            handshake: Duration::from_secs(30),
            response: Duration::from_secs(180),
        }
    }
}

/// Deadlines of the phone's session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatorTimeouts {
    /// From the advert until message 1 arrives.
    pub connect: Duration,
    /// From the handshake until the request arrives.
    pub request: Duration,
    /// From the reply until shutdown (the session then ends anyway, successfully).
    pub shutdown: Duration,
}

impl Default for AuthenticatorTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(60),
            request: Duration::from_secs(60),
            shutdown: Duration::from_secs(10),
        }
    }
}
