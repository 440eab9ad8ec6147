//! The phone's session (Chromium: *authenticator*): advert, Noise responder, one CTAP command.
//!
//! ```text
//!  Discovery ──routing id──► Connect ──msg 1──► Request ──CTAP command──► Shutdown ──► Done
//!   (driver opens             (advert out)       (msg 2, post-handshake,   (reply out)
//!    /cable/new)                                   update out)
//! ```
//!
//! The driver opens `/cable/new/<tunnel id>` ([`Authenticator::tunnel_id`]) at a relay, passes
//! the routing id it is given to [`Authenticator::handle_routing_id`] and broadcasts the advert
//! from [`Event::AdvertReady`]. When the client's message 1 arrives the session answers with
//! message 2, the post-handshake message (the handler's getInfo) and an update (linking data
//! when configured, padded either way as Chrome for Android does). A getInfo request is answered
//! from the handler without counting; the one real command goes to the [`CtapHandler`]; a second
//! command ends the session with [`SessionError::SecondCommand`]. The session never sends
//! shutdown or empty frames (some clients reject both).

use std::collections::VecDeque;

use p256::SecretKey;
use p256::elliptic_curve::Generate;
use rand_core::CryptoRng;

use crate::advert::{self, AdvertPlaintext};
use crate::crypter::{Construction, Crypter};
use crate::ctap::get_info::GetInfoResponse;
use crate::ctap::{CtapCommand, CtapError, CtapRequest, CtapResponse, CtapStatus};
use crate::derive;
use crate::domain::DomainId;
use crate::frame::{self, Frame, LinkingInfo, PostHandshake};
use crate::noise;
use crate::secret::Secret;
use crate::session::{AuthenticatorTimeouts, MAX_MESSAGE_LEN, SessionError, Stage};
use crate::time::Time;
use crate::tunnel::{RoutingId, TunnelId};
use crate::url::FidoUrl;

/// The authenticator behind the tunnel: answers getInfo and one CTAP command.
///
/// Calls are synchronous: the handler does its user check (presence, verification) before it
/// returns. A refusal is a CTAP status such as `CTAP2_ERR_OPERATION_DENIED`.
pub trait CtapHandler {
    /// The authenticator's getInfo response.
    fn get_info(&self) -> GetInfoResponse;

    /// Handles the one command of the session.
    fn handle(&mut self, request: CtapRequest) -> CtapResponse;
}

/// Linking data the phone offers the client (sent in an update after the handshake).
#[derive(Debug)]
pub struct LinkingOffer {
    /// How the tunnel service reaches this phone.
    pub contact_id: Vec<u8>,
    /// The link's id.
    pub link_id: [u8; 8],
    /// The link's secret.
    pub link_secret: Secret<32>,
    /// The phone's long-term identity key.
    pub identity: SecretKey,
    /// The phone's name for the client's user interface.
    pub name: String,
}

/// Something the driver should know or act on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Broadcast these 20 bytes as service data until the client connects.
    AdvertReady([u8; advert::ADVERT_LEN]),
    /// The handshake with the client completed: stop advertising.
    HandshakeComplete,
    /// The command was answered.
    RequestHandled {
        /// The command the client sent.
        command: CtapCommand,
        /// The status returned.
        status: CtapStatus,
    },
    /// The client sent shutdown, or the tunnel closed after the reply: success.
    Finished,
}

enum State {
    Discovery,
    Connect,
    Request { crypter: Crypter },
    Shutdown { crypter: Crypter },
    Done,
}

/// The phone's hybrid session. See the [module docs](self).
pub struct Authenticator<H> {
    handler: H,
    url: FidoUrl,
    tunnel_id: TunnelId,
    ephemeral: SecretKey,
    advert_nonce: [u8; 10],
    advert_block: Option<[u8; 16]>,
    linking: Option<LinkingOffer>,
    timeouts: AuthenticatorTimeouts,
    state: State,
    stage: Stage,
    deadline: Option<Time>,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    error: Option<SessionError>,
}

impl<H> core::fmt::Debug for Authenticator<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tunnel_id", &self.tunnel_id)
            .field("stage", &self.stage)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<H: CtapHandler> Authenticator<H> {
    /// A session answering `url`. The ephemeral key and the advert nonce are drawn from `rng`.
    pub fn new(
        url: FidoUrl,
        handler: H,
        linking: Option<LinkingOffer>,
        timeouts: AuthenticatorTimeouts,
        rng: &mut (impl CryptoRng + ?Sized),
    ) -> Self {
        let mut advert_nonce = [0u8; 10];
        rng.fill_bytes(&mut advert_nonce);
        Self {
            tunnel_id: url.tunnel_id(),
            url,
            handler,
            ephemeral: SecretKey::generate_from_rng(rng),
            advert_nonce,
            advert_block: None,
            linking,
            timeouts,
            state: State::Discovery,
            stage: Stage::Discovery,
            deadline: None,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            error: None,
        }
    }

    /// The tunnel id to register at the relay (`/cable/new/<tunnel id>`).
    pub fn tunnel_id(&self) -> TunnelId {
        self.tunnel_id
    }

    /// The handler (for example to read what it stored).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The relay assigned `routing_id`; `domain_id` names the relay in the advert. Queues
    /// [`Event::AdvertReady`].
    pub fn handle_routing_id(
        &mut self,
        now: Time,
        routing_id: RoutingId,
        domain_id: DomainId,
    ) -> Result<(), SessionError> {
        self.live(now)?;
        if !matches!(self.state, State::Discovery) {
            return self.fail(SessionError::InvalidState("handle_routing_id"));
        }
        if !domain_id.is_known() {
            // No client could follow an advert naming an unassigned domain.
            return self.fail(SessionError::InvalidState(
                "handle_routing_id: domain ids 2 to 255 are unassigned",
            ));
        }
        let block = AdvertPlaintext {
            nonce: self.advert_nonce,
            routing_id,
            domain_id,
        }
        .to_bytes();
        let eid_key = derive::eid_key(&self.url.qr_secret);
        self.events
            .push_back(Event::AdvertReady(advert::encrypt(&eid_key, &block)));
        self.advert_block = Some(block);
        self.state = State::Connect;
        self.enter(Stage::Connect, now, self.timeouts.connect);
        Ok(())
    }

    /// A binary message arrived from the tunnel.
    pub fn handle_tunnel_message(&mut self, now: Time, message: &[u8]) -> Result<(), SessionError> {
        self.live(now)?;
        if message.len() > MAX_MESSAGE_LEN {
            return self.fail(SessionError::MessageTooLarge(message.len()));
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Connect => self.respond_to_handshake(now, message),
            State::Request { mut crypter } => {
                let frame = match decrypt_frame(&mut crypter, message) {
                    Ok(frame) => frame,
                    Err(e) => return self.fail(e),
                };
                match frame {
                    Frame::Ctap(request) => self.answer(now, crypter, &request),
                    Frame::Update(update) => {
                        // Client updates are ignored but must be valid CBOR.
                        if let Err(e) = frame::decode_update(&update) {
                            return self.fail(SessionError::Frame(e));
                        }
                        self.state = State::Request { crypter };
                        Ok(())
                    }
                    Frame::Shutdown => {
                        self.events.push_back(Event::Finished);
                        self.deadline = None;
                        Ok(())
                    }
                    Frame::Json(_) => self.fail(SessionError::Unexpected("JSON message")),
                }
            }
            State::Shutdown { mut crypter } => match decrypt_frame(&mut crypter, message) {
                Ok(Frame::Shutdown) => {
                    self.events.push_back(Event::Finished);
                    self.deadline = None;
                    Ok(())
                }
                Ok(Frame::Update(_)) => {
                    self.state = State::Shutdown { crypter };
                    Ok(())
                }
                Ok(Frame::Ctap(_)) => self.fail(SessionError::SecondCommand),
                Ok(Frame::Json(_)) => self.fail(SessionError::Unexpected("JSON message")),
                Err(e) => self.fail(e),
            },
            State::Done => self.fail(SessionError::Unexpected("message after shutdown")),
            State::Discovery => self.fail(SessionError::Unexpected("message before the advert")),
        }
    }

    /// The tunnel closed: success once the reply was sent, an error before.
    pub fn handle_tunnel_closed(&mut self, now: Time) -> Result<(), SessionError> {
        self.live(now)?;
        match self.state {
            State::Shutdown { .. } => {
                self.state = State::Done;
                self.deadline = None;
                self.events.push_back(Event::Finished);
                Ok(())
            }
            State::Done => Ok(()),
            _ => self.fail(SessionError::TunnelClosed(self.stage)),
        }
    }

    /// Checks the deadline; call at [`Authenticator::poll_timeout`]. Waiting for shutdown after
    /// the reply ends in success, not an error.
    pub fn handle_timeout(&mut self, now: Time) -> Result<(), SessionError> {
        if matches!(self.state, State::Shutdown { .. }) && self.deadline.is_some_and(|d| now >= d) {
            self.state = State::Done;
            self.deadline = None;
            self.events.push_back(Event::Finished);
            return Ok(());
        }
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

    /// When [`Authenticator::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        if self.error.is_some() {
            return None;
        }
        self.deadline
    }

    /// Whether the session ended successfully.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done) && self.error.is_none()
    }

    /// The error that ended the session, if one did.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    fn respond_to_handshake(&mut self, now: Time, message: &[u8]) -> Result<(), SessionError> {
        let Some(block) = self.advert_block else {
            return self.fail(SessionError::InvalidState("handle_tunnel_message"));
        };
        let psk = derive::psk(self.url.qr_secret.expose(), &block);
        let (msg2, output) =
            match noise::respond_qr(&psk, &self.url.public_key, &self.ephemeral, message) {
                Ok(done) => done,
                Err(e) => return self.fail(SessionError::Handshake(e)),
            };
        let mut crypter = Crypter::new(output.send_key, output.recv_key, Construction::New);
        let post = PostHandshake::for_ctap(&self.handler.get_info()).encode();
        let linking = self.linking.as_ref().map(|offer| {
            LinkingInfo::sign(
                offer.contact_id.clone(),
                offer.link_id,
                offer.link_secret.clone(),
                &offer.identity,
                offer.name.clone(),
                &self.url.public_key,
                &output.handshake_hash,
            )
        });
        let update = Frame::Update(frame::encode_update(linking.as_ref())).encode();
        let sealed = crypter
            .encrypt(&post)
            .and_then(|p| Ok((p, crypter.encrypt(&update)?)));
        let (post, update) = match sealed {
            Ok(both) => both,
            Err(e) => return self.fail(SessionError::Decrypt(e)),
        };
        self.transmits.extend([msg2.to_vec(), post, update]);
        self.events.push_back(Event::HandshakeComplete);
        self.state = State::Request { crypter };
        self.enter(Stage::Request, now, self.timeouts.request);
        Ok(())
    }

    fn answer(
        &mut self,
        now: Time,
        mut crypter: Crypter,
        request: &[u8],
    ) -> Result<(), SessionError> {
        let command = request
            .first()
            .map_or(CtapCommand::Other(0), |&b| CtapCommand::from(b));
        let (response, counts) = if command == CtapCommand::GetInfo {
            (CtapResponse::ok(self.handler.get_info().to_cbor()), false)
        } else {
            match CtapRequest::decode(request) {
                Ok(parsed) => (self.handler.handle(parsed), true),
                Err(e) => (CtapResponse::error(status_for(&e)), true),
            }
        };
        let status = response.status;
        let sealed = match crypter.encrypt(&Frame::Ctap(response.encode()).encode()) {
            Ok(sealed) => sealed,
            Err(e) => return self.fail(SessionError::Decrypt(e)),
        };
        self.transmits.push_back(sealed);
        self.events
            .push_back(Event::RequestHandled { command, status });
        if counts {
            self.state = State::Shutdown { crypter };
            self.enter(Stage::Shutdown, now, self.timeouts.shutdown);
        } else {
            self.state = State::Request { crypter };
        }
        Ok(())
    }

    fn enter(&mut self, stage: Stage, now: Time, limit: core::time::Duration) {
        self.stage = stage;
        self.deadline = Some(now.saturating_add(limit));
    }

    fn live(&mut self, now: Time) -> Result<(), SessionError> {
        if self.error.is_some() {
            return Err(SessionError::Closed);
        }
        match self.deadline {
            Some(deadline) if now >= deadline => self.fail(SessionError::Timeout(self.stage)),
            _ => Ok(()),
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

fn decrypt_frame(crypter: &mut Crypter, message: &[u8]) -> Result<Frame, SessionError> {
    let plaintext = crypter.decrypt(message).map_err(SessionError::Decrypt)?;
    Frame::decode(&plaintext).map_err(SessionError::Frame)
}

/// The status an authenticator returns for a request it cannot parse.
fn status_for(error: &CtapError) -> CtapStatus {
    match error {
        CtapError::UnsupportedCommand(_) | CtapError::Empty => CtapStatus::InvalidCommand,
        CtapError::Cbor(_) => CtapStatus::InvalidCbor,
        CtapError::MissingField { .. } => CtapStatus::MissingParameter,
        _ => CtapStatus::CborUnexpectedType,
    }
}
