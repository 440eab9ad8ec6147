//! Test support (feature `test-util`): a seeded RNG and [`Pair`], which runs a client and a phone
//! in memory on a virtual clock and can damage messages in flight.
//!
//! Nothing here is for production: [`SeededRng`] is deterministic by design.

use std::collections::VecDeque;
use std::convert::Infallible;

use p256::SecretKey;
use p256::elliptic_curve::Generate;
use rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest, Sha256};

use crate::authenticator::{self, Authenticator, CtapHandler, LinkingOffer};
use crate::ctap::get_info::GetInfoResponse;
use crate::ctap::{CtapRequest, CtapResponse};
use crate::domain::DomainId;
use crate::initiator::{self, Initiator};
use crate::session::{AuthenticatorTimeouts, InitiatorTimeouts, SessionError};
use crate::tunnel::RoutingId;
use crate::url::{FidoUrl, RequestType};
use crate::{QrSecret, Time};

/// A deterministic RNG (SHA-256 in counter mode over a seed). Tests only.
#[derive(Debug, Clone)]
pub struct SeededRng {
    seed: [u8; 32],
    counter: u64,
    buffer: [u8; 32],
    used: usize,
}

impl SeededRng {
    /// An RNG whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&seed.to_le_bytes());
        Self {
            seed: s,
            counter: 0,
            buffer: [0; 32],
            used: 32,
        }
    }
}

impl TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            if self.used == 32 {
                let mut h = Sha256::new();
                h.update(self.seed);
                h.update(self.counter.to_le_bytes());
                self.buffer = h.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.buffer[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

impl TryCryptoRng for SeededRng {}

/// A phone-side handler that answers every command with a fixed response and records requests.
#[derive(Debug, Clone)]
pub struct ScriptedHandler {
    /// What getInfo returns.
    pub info: GetInfoResponse,
    /// What the command returns.
    pub reply: CtapResponse,
    /// Requests seen, in order.
    pub seen: Vec<CtapRequest>,
}

impl ScriptedHandler {
    /// A handler that returns `reply` and a phone's getInfo.
    pub fn new(reply: CtapResponse) -> Self {
        Self {
            info: GetInfoResponse::hybrid_phone(),
            reply,
            seen: Vec::new(),
        }
    }
}

impl CtapHandler for ScriptedHandler {
    fn get_info(&self) -> GetInfoResponse {
        self.info.clone()
    }

    fn handle(&mut self, request: CtapRequest) -> CtapResponse {
        self.seen.push(request);
        self.reply.clone()
    }
}

/// Which way a tunnel message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client → phone.
    ToPhone,
    /// Phone → client.
    ToClient,
}

/// Damage done to the `index`-th message (from 0) travelling in `direction`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Flip one bit (`byte` is taken modulo the length).
    Flip {
        /// Which way.
        direction: Direction,
        /// Which message.
        index: usize,
        /// Which byte.
        byte: usize,
        /// Which bit (0–7).
        bit: u8,
    },
    /// Cut the message to `len` bytes.
    Truncate {
        /// Which way.
        direction: Direction,
        /// Which message.
        index: usize,
        /// New length.
        len: usize,
    },
    /// Deliver the message twice (replay).
    Duplicate {
        /// Which way.
        direction: Direction,
        /// Which message.
        index: usize,
    },
    /// Hold the message back and deliver it after the next one (reorder).
    Delay {
        /// Which way.
        direction: Direction,
        /// Which message.
        index: usize,
    },
    /// Never deliver the message.
    Drop {
        /// Which way.
        direction: Direction,
        /// Which message.
        index: usize,
    },
    /// Deliver these bytes after the message.
    InjectAfter {
        /// Which way.
        direction: Direction,
        /// Which message.
        index: usize,
        /// The injected message.
        bytes: Vec<u8>,
    },
}

impl Tamper {
    fn applies(&self, dir: Direction, i: usize) -> bool {
        let (d, n) = match self {
            Self::Flip {
                direction, index, ..
            }
            | Self::Truncate {
                direction, index, ..
            }
            | Self::Duplicate { direction, index }
            | Self::Delay { direction, index }
            | Self::Drop { direction, index }
            | Self::InjectAfter {
                direction, index, ..
            } => (*direction, *index),
        };
        d == dir && n == i
    }
}

/// What a [`Pair`] run ended with.
#[derive(Debug)]
pub struct Outcome {
    /// The client's result: the reply, or why it failed.
    pub client: Result<CtapResponse, SessionError>,
    /// The phone's result.
    pub phone: Result<(), SessionError>,
    /// Every client event, in order.
    pub client_events: Vec<initiator::Event>,
    /// Every phone event, in order.
    pub phone_events: Vec<authenticator::Event>,
    /// Virtual time at the end.
    pub now: Time,
}

/// A client and a phone joined in memory: the advert goes straight from phone to client, the
/// tunnel is two queues, the clock is virtual (each delivered message takes `step` ms).
#[derive(Debug)]
pub struct Pair<H: CtapHandler> {
    /// The client session.
    pub client: Initiator,
    /// The phone session.
    pub phone: Authenticator<H>,
    /// The client's QR identity key.
    pub identity: SecretKey,
    /// The URL the phone answers.
    pub url: FidoUrl,
    /// Damage to apply in flight.
    pub tampers: Vec<Tamper>,
    /// Virtual milliseconds per delivered message.
    pub step: u64,
    /// Milliseconds the phone waits before it advertises (the user approving the push).
    pub approval_delay: u64,
    now: Time,
}

impl<H: CtapHandler> Pair<H> {
    /// A pair for `request`, with keys and secrets from `seed`.
    pub fn new(seed: u64, request: &CtapRequest, handler: H, linking: bool) -> Self {
        let mut rng = SeededRng::new(seed);
        let identity = SecretKey::generate_from_rng(&mut rng);
        let mut secret = [0u8; 16];
        rng.try_fill_bytes(&mut secret).unwrap_or(());
        let request_type = match request {
            CtapRequest::MakeCredential(_) => RequestType::MakeCredential,
            _ => RequestType::GetAssertion,
        };
        let url = FidoUrl::new(
            identity.public_key(),
            QrSecret::new(secret),
            request_type,
            1_767_225_600,
            true,
        );
        let client = Initiator::new(
            identity.clone(),
            QrSecret::new(secret),
            request,
            InitiatorTimeouts::default(),
            Time::ZERO,
            &mut rng,
        );
        let offer = linking.then(|| LinkingOffer {
            contact_id: b"contact".to_vec(),
            link_id: [8; 8],
            link_secret: crate::Secret::new([9; 32]),
            identity: SecretKey::generate_from_rng(&mut rng),
            name: "Test phone".to_owned(),
        });
        let phone = Authenticator::new(
            url.clone(),
            handler,
            offer,
            AuthenticatorTimeouts::default(),
            &mut rng,
        );
        Self {
            client,
            phone,
            identity,
            url,
            tampers: Vec::new(),
            step: 5,
            approval_delay: 2_000,
            now: Time::ZERO,
        }
    }

    /// Runs both sides until neither can make progress. Panics on livelock (more than 10 000
    /// steps), which is a bug in a session.
    pub fn drive(&mut self) -> Outcome {
        let mut client_events = Vec::new();
        let mut phone_events = Vec::new();
        let mut client_result: Option<Result<CtapResponse, SessionError>> = None;
        let mut phone_result: Option<Result<(), SessionError>> = None;
        let mut to_phone: VecDeque<Vec<u8>> = VecDeque::new();
        let mut to_client: VecDeque<Vec<u8>> = VecDeque::new();
        let mut held: [Option<Vec<u8>>; 2] = [None, None];
        let mut sent = [0usize; 2];
        let mut tunnel_open = false;
        let mut tunnel_closed = false;

        // The user approves after a while; the phone registers its tunnel and advertises.
        self.now = Time::from_millis(self.approval_delay);
        if let Err(e) =
            self.phone
                .handle_routing_id(self.now, RoutingId::new([1, 2, 3]), DomainId(256))
        {
            phone_result = Some(Err(e));
        }

        for _ in 0..10_000 {
            let mut progressed = false;
            // Drain events.
            while let Some(ev) = self.phone.poll_event() {
                progressed = true;
                match &ev {
                    authenticator::Event::AdvertReady(advert) => {
                        // Some unrelated adverts first: they must be ignored.
                        let noise = [0x5au8; 20];
                        let _ = self.client.handle_advert(self.now, &noise);
                        let _ = self.client.handle_advert(self.now, advert);
                    }
                    authenticator::Event::Finished => {
                        phone_result.get_or_insert(Ok(()));
                    }
                    _ => {}
                }
                phone_events.push(ev);
            }
            while let Some(ev) = self.client.poll_event() {
                progressed = true;
                match &ev {
                    initiator::Event::AdvertMatched { .. } if !tunnel_open => {
                        tunnel_open = true;
                        if let Err(e) = self.client.handle_tunnel_connected(self.now) {
                            client_result = Some(Err(e));
                        }
                    }
                    initiator::Event::ResponseReceived(r) => {
                        client_result.get_or_insert(Ok(r.clone()));
                    }
                    _ => {}
                }
                client_events.push(ev);
            }
            // Move transmits into the wire, applying damage.
            while let Some(m) = self.client.poll_transmit() {
                progressed = true;
                self.put(Direction::ToPhone, m, &mut sent, &mut held, &mut to_phone);
            }
            while let Some(m) = self.phone.poll_transmit() {
                progressed = true;
                self.put(Direction::ToClient, m, &mut sent, &mut held, &mut to_client);
            }
            // Deliver one message each way.
            if let Some(m) = to_phone.pop_front() {
                progressed = true;
                self.now = self
                    .now
                    .saturating_add(core::time::Duration::from_millis(self.step));
                if let Err(e) = self.phone.handle_tunnel_message(self.now, &m) {
                    phone_result.get_or_insert(Err(e));
                }
            }
            if let Some(m) = to_client.pop_front() {
                progressed = true;
                self.now = self
                    .now
                    .saturating_add(core::time::Duration::from_millis(self.step));
                if let Err(e) = self.client.handle_tunnel_message(self.now, &m) {
                    client_result.get_or_insert(Err(e));
                }
            }
            if progressed {
                continue;
            }
            // Quiet. Held messages are released (their successor never came).
            let mut released = false;
            for (slot, queue) in [(0, &mut to_phone), (1, &mut to_client)] {
                if let Some(m) = held[slot].take() {
                    queue.push_back(m);
                    released = true;
                }
            }
            if released {
                continue;
            }
            // Quiet: a side that has finished or failed closes the tunnel.
            let someone_done = client_result.is_some() || phone_result.is_some();
            if tunnel_open && !tunnel_closed && someone_done {
                tunnel_closed = true;
                if let Err(e) = self.phone.handle_tunnel_closed(self.now) {
                    phone_result.get_or_insert(Err(e));
                }
                if let Err(e) = self.client.handle_tunnel_closed(self.now) {
                    client_result.get_or_insert(Err(e));
                }
                continue;
            }
            // Nothing in flight: jump to the earliest deadline.
            let next = [self.client.poll_timeout(), self.phone.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(deadline) = next else {
                break;
            };
            self.now = self.now.max(deadline);
            if let Err(e) = self.client.handle_timeout(self.now) {
                client_result.get_or_insert(Err(e));
            }
            if let Err(e) = self.phone.handle_timeout(self.now) {
                phone_result.get_or_insert(Err(e));
            }
            while let Some(ev) = self.phone.poll_event() {
                if matches!(ev, authenticator::Event::Finished) {
                    phone_result.get_or_insert(Ok(()));
                }
                phone_events.push(ev);
            }
            if client_result.is_some() && phone_result.is_some() {
                break;
            }
        }
        assert!(
            client_result.is_some() || phone_result.is_some(),
            "livelock: no side finished"
        );
        Outcome {
            client: client_result.unwrap_or(Err(SessionError::Closed)),
            phone: phone_result.unwrap_or(Err(SessionError::Closed)),
            client_events,
            phone_events,
            now: self.now,
        }
    }

    fn put(
        &mut self,
        dir: Direction,
        mut m: Vec<u8>,
        sent: &mut [usize; 2],
        held: &mut [Option<Vec<u8>>; 2],
        queue: &mut VecDeque<Vec<u8>>,
    ) {
        let slot = match dir {
            Direction::ToPhone => 0,
            Direction::ToClient => 1,
        };
        let i = sent[slot];
        sent[slot] += 1;
        // A message held back earlier goes out right after this one.
        let released = held[slot].take();
        let mut keep = true;
        let mut extra = Vec::new();
        for t in self.tampers.iter().filter(|t| t.applies(dir, i)) {
            match t {
                Tamper::Flip { byte, bit, .. } if !m.is_empty() => {
                    let at = byte % m.len();
                    m[at] ^= 1 << (bit % 8);
                }
                Tamper::Flip { .. } => {}
                Tamper::Truncate { len, .. } => m.truncate(*len),
                Tamper::Duplicate { .. } => extra.push(m.clone()),
                Tamper::Delay { .. } => {
                    held[slot] = Some(m.clone());
                    keep = false;
                }
                Tamper::Drop { .. } => keep = false,
                Tamper::InjectAfter { bytes, .. } => extra.push(bytes.clone()),
            }
        }
        if keep {
            queue.push_back(m);
        }
        queue.extend(extra);
        queue.extend(released);
    }
}
