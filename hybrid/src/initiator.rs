//! The client's session (Chromium: *initiator* or *desktop*): from adverts to one CTAP reply.
//!
//! ```text
//!  Discovery ──advert for us──► Connect ──tunnel open──► Handshake ──post-handshake──► Request
//!     │ handle_advert             │ handle_tunnel_        │ msg 2, then first             │ reply
//!     │ (others ignored)          │ connected: msg 1 out  │ encrypted message             ▼
//!     └─────────────── any failure or deadline ─────────────────────────────────────► Done
//! ```
//!
//! The session is given the QR identity key and QR secret that went into the `FIDO:/` URL, and
//! the one CTAP command to send. It trial-decrypts adverts, reports where the tunnel is
//! ([`Event::AdvertMatched`]), sends Noise message 1 once the driver says the tunnel is open,
//! completes the handshake, decrypts the post-handshake message (detecting the phone's nonce
//! layout and framing revision), sends the command, returns the reply
//! ([`Event::ResponseReceived`]) and queues shutdown. Linking data the phone sends is verified
//! and reported, never trusted unverified. Deadlines come from [`InitiatorTimeouts`]; the driver
//! calls [`Initiator::handle_timeout`] at [`Initiator::poll_timeout`].

use std::collections::VecDeque;

use p256::SecretKey;
use p256::elliptic_curve::Generate;
use rand_core::CryptoRng;

use crate::advert::{self, AdvertPlaintext};
use crate::crypter::Crypter;
use crate::ctap::get_info::GetInfoResponse;
use crate::ctap::{CtapRequest, CtapResponse};
use crate::derive::{self, EidKey};
use crate::domain::DomainId;
use crate::frame::{self, Frame, LinkingError, LinkingInfo, PostHandshake, Revision};
use crate::noise::HandshakeInitiator;
use crate::secret::{QrSecret, Secret};
use crate::session::{InitiatorTimeouts, MAX_MESSAGE_LEN, SessionError, Stage};
use crate::time::Time;
use crate::tunnel::{RoutingId, TunnelId};

/// Something the driver should know or act on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// An advert for this session was found: connect to the tunnel it names.
    AdvertMatched {
        /// The relay's routing id.
        routing_id: RoutingId,
        /// The tunnel id (derived from the QR secret).
        tunnel_id: TunnelId,
        /// The tunnel server's domain id.
        domain_id: DomainId,
        /// The tunnel server's host name, if the id names one.
        domain: Option<String>,
    },
    /// The handshake completed and the phone's capabilities are known.
    TunnelReady {
        /// The phone's getInfo response (answer getInfo locally from it).
        get_info: GetInfoResponse,
        /// The phone's framing revision.
        revision: Revision,
    },
    /// The phone sent linking data: verified (`Ok`) or refused (`Err`, not to be stored).
    LinkingReceived(Result<Box<LinkingInfo>, LinkingError>),
    /// The reply to the CTAP command. Shutdown is queued after it.
    ResponseReceived(CtapResponse),
}

enum State {
    Discovery,
    Connect {
        psk: Secret<32>,
    },
    Handshake {
        handshake: HandshakeInitiator,
    },
    PostHandshake {
        crypter: Crypter,
        handshake_hash: [u8; 32],
    },
    Request {
        crypter: Crypter,
        handshake_hash: [u8; 32],
        revision: Revision,
    },
    Done,
}

/// The client's hybrid session. See the [module docs](self).
pub struct Initiator {
    identity: SecretKey,
    qr_secret: QrSecret,
    eid_key: EidKey,
    tunnel_id: TunnelId,
    ephemeral: Option<SecretKey>,
    request: Vec<u8>,
    timeouts: InitiatorTimeouts,
    state: State,
    deadline: Option<Time>,
    stage: Stage,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    error: Option<SessionError>,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Initiator")
            .field("tunnel_id", &self.tunnel_id)
            .field("stage", &self.stage)
            .field("deadline", &self.deadline)
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// A session for the URL made from `identity` and `qr_secret`, sending `request`. The
    /// ephemeral Noise key is drawn from `rng` now; `now` starts the discovery deadline.
    pub fn new(
        identity: SecretKey,
        qr_secret: QrSecret,
        request: &CtapRequest,
        timeouts: InitiatorTimeouts,
        now: Time,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Self {
        Self {
            eid_key: derive::eid_key(&qr_secret),
            tunnel_id: derive::tunnel_id(&qr_secret),
            identity,
            qr_secret,
            ephemeral: Some(SecretKey::generate_from_rng(rng)),
            request: request.encode(),
            deadline: Some(now.saturating_add(timeouts.discovery)),
            timeouts,
            state: State::Discovery,
            stage: Stage::Discovery,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            error: None,
        }
    }

    /// The tunnel id of this session.
    pub fn tunnel_id(&self) -> TunnelId {
        self.tunnel_id
    }

    /// Offers an advert's service data. Returns `true` if it belongs to this session (then
    /// [`Event::AdvertMatched`] follows); other adverts, and any advert after the first match,
    /// are ignored.
    pub fn handle_advert(&mut self, now: Time, service_data: &[u8]) -> bool {
        if !matches!(self.state, State::Discovery) || self.check_deadline(now).is_err() {
            return false;
        }
        let Ok((plaintext, block)) = advert::decrypt_qr(&self.eid_key, service_data) else {
            return false;
        };
        let AdvertPlaintext {
            routing_id,
            domain_id,
            ..
        } = plaintext;
        self.state = State::Connect {
            psk: derive::psk(self.qr_secret.expose(), &block),
        };
        self.enter(Stage::Connect, now, self.timeouts.connect);
        self.events.push_back(Event::AdvertMatched {
            routing_id,
            tunnel_id: self.tunnel_id,
            domain_id,
            domain: domain_id.domain(),
        });
        true
    }

    /// The driver opened the tunnel: Noise message 1 is queued for sending.
    pub fn handle_tunnel_connected(&mut self, now: Time) -> Result<(), SessionError> {
        self.live(now)?;
        let State::Connect { psk } = &self.state else {
            return self.fail(SessionError::InvalidState("handle_tunnel_connected"));
        };
        let Some(ephemeral) = self.ephemeral.take() else {
            return self.fail(SessionError::InvalidState("handle_tunnel_connected"));
        };
        let (handshake, msg1) = HandshakeInitiator::new_qr(psk, &self.identity, ephemeral);
        self.transmits.push_back(msg1.to_vec());
        self.state = State::Handshake { handshake };
        self.enter(Stage::Handshake, now, self.timeouts.handshake);
        Ok(())
    }

    /// A binary message arrived from the tunnel.
    pub fn handle_tunnel_message(&mut self, now: Time, message: &[u8]) -> Result<(), SessionError> {
        self.live(now)?;
        if message.len() > MAX_MESSAGE_LEN {
            return self.fail(SessionError::MessageTooLarge(message.len()));
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Handshake { handshake } => {
                let output = match handshake.finish(message) {
                    Ok(output) => output,
                    Err(e) => return self.fail(SessionError::Handshake(e)),
                };
                self.state = State::PostHandshake {
                    crypter: Crypter::new_detecting(output.send_key, output.recv_key),
                    handshake_hash: output.handshake_hash,
                };
                Ok(())
            }
            State::PostHandshake {
                mut crypter,
                handshake_hash,
            } => {
                let plaintext = match crypter.decrypt(message) {
                    Ok(p) => p,
                    Err(e) => return self.fail(SessionError::Decrypt(e)),
                };
                let (post, revision) = match PostHandshake::decode(&plaintext) {
                    Ok(decoded) => decoded,
                    Err(e) => return self.fail(SessionError::Frame(e)),
                };
                let get_info = match post.get_info.as_deref().map(GetInfoResponse::from_cbor) {
                    Some(Ok(info)) if post.supports_ctap() => info,
                    Some(Err(e)) => return self.fail(SessionError::Ctap(e)),
                    _ => return self.fail(SessionError::CtapUnsupported),
                };
                if let Some(linking) = &post.linking {
                    self.report_linking(linking, &handshake_hash);
                }
                self.events
                    .push_back(Event::TunnelReady { get_info, revision });
                let request = match revision {
                    Revision::One => Frame::Ctap(self.request.clone()).encode(),
                    Revision::Zero => self.request.clone(),
                };
                match crypter.encrypt(&request) {
                    Ok(ciphertext) => self.transmits.push_back(ciphertext),
                    Err(e) => return self.fail(SessionError::Decrypt(e)),
                }
                self.state = State::Request {
                    crypter,
                    handshake_hash,
                    revision,
                };
                self.enter(Stage::Request, now, self.timeouts.response);
                Ok(())
            }
            State::Request {
                mut crypter,
                handshake_hash,
                revision,
            } => {
                let plaintext = match crypter.decrypt(message) {
                    Ok(p) => p,
                    Err(e) => return self.fail(SessionError::Decrypt(e)),
                };
                let reply = match revision {
                    Revision::Zero => plaintext,
                    Revision::One => match Frame::decode(&plaintext) {
                        Ok(Frame::Ctap(reply)) => reply,
                        Ok(Frame::Update(update)) => {
                            match frame::decode_update(&update) {
                                Ok(Some(linking)) => self.report_linking(&linking, &handshake_hash),
                                Ok(None) => {}
                                Err(e) => return self.fail(SessionError::Frame(e)),
                            }
                            self.state = State::Request {
                                crypter,
                                handshake_hash,
                                revision,
                            };
                            return Ok(());
                        }
                        Ok(Frame::Shutdown) => {
                            return self.fail(SessionError::Unexpected("shutdown from the phone"));
                        }
                        Ok(Frame::Json(_)) => {
                            return self.fail(SessionError::Unexpected("JSON message"));
                        }
                        Err(e) => return self.fail(SessionError::Frame(e)),
                    },
                };
                let response = match CtapResponse::decode(&reply) {
                    Ok(r) => r,
                    Err(e) => return self.fail(SessionError::Ctap(e)),
                };
                if revision == Revision::One {
                    match crypter.encrypt(&Frame::Shutdown.encode()) {
                        Ok(ciphertext) => self.transmits.push_back(ciphertext),
                        Err(e) => return self.fail(SessionError::Decrypt(e)),
                    }
                }
                self.events.push_back(Event::ResponseReceived(response));
                self.deadline = None;
                Ok(())
            }
            // After the reply, messages (late updates) are dropped until the close.
            State::Done => Ok(()),
            State::Discovery | State::Connect { .. } => self.fail(SessionError::Unexpected(
                "message before the handshake started",
            )),
        }
    }

    /// The tunnel closed. An error unless the reply already arrived.
    pub fn handle_tunnel_closed(&mut self, now: Time) -> Result<(), SessionError> {
        self.live(now)?;
        if self.is_finished() {
            return Ok(());
        }
        self.fail(SessionError::TunnelClosed(self.stage))
    }

    /// Checks the deadline; call at [`Initiator::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Time) -> Result<(), SessionError> {
        self.live(now)
    }

    /// The next message to send on the tunnel.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Initiator::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.error.is_some() {
            return None;
        }
        self.deadline
    }

    /// Whether the reply arrived (success) — queued transmits (shutdown) may remain.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done) && self.error.is_none()
    }

    /// The error that ended the session, if one did.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    fn report_linking(&mut self, linking: &crate::cbor::Value, handshake_hash: &[u8; 32]) {
        let verified = LinkingInfo::from_value(linking).and_then(|info| {
            info.verify(&self.identity, handshake_hash)?;
            Ok(Box::new(info))
        });
        self.events.push_back(Event::LinkingReceived(verified));
    }

    fn enter(&mut self, stage: Stage, now: Time, limit: core::time::Duration) {
        self.stage = stage;
        self.deadline = Some(now.saturating_add(limit));
    }

    fn check_deadline(&self, now: Time) -> Result<(), SessionError> {
        match self.deadline {
            Some(deadline) if now >= deadline => Err(SessionError::Timeout(self.stage)),
            _ => Ok(()),
        }
    }

    /// Fails if the session already ended in error or its deadline passed.
    fn live(&mut self, now: Time) -> Result<(), SessionError> {
        if self.error.is_some() {
            return Err(SessionError::Closed);
        }
        match self.check_deadline(now) {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, error: SessionError) -> Result<(), SessionError> {
        self.state = State::Done;
        self.transmits.clear();
        self.deadline = None;
        self.error = Some(error.clone());
        Err(error)
    }
}
