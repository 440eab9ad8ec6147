//! `initiator_session`: a client session fed any sequence of adverts, tunnel events, messages
//! and timeouts, at any times, never panics and reports at most one response, and only one the
//! phone's session keys sealed: unauthenticated bytes never produce `ResponseReceived`. Before
//! the handshake it sends only Noise message 1; after it, only ciphertexts of its command and
//! of shutdown. A failed session stays failed, with no deadline.
//!
//! The harness can also play an honest phone (the genuine advert, the Noise reply, a genuine
//! post-handshake message, replies and other plaintexts of the fuzzer's choice), so every state
//! is reached.
#![no_main]

use arbitrary::Arbitrary;
use hybrid::advert::{self, AdvertPlaintext};
use hybrid::crypter::{Construction, Crypter};
use hybrid::ctap::GetInfoResponse;
use hybrid::domain::DomainId;
use hybrid::frame::{Frame, PostHandshake};
use hybrid::initiator::{Event, Initiator};
use hybrid::noise::{self, MESSAGE_LEN};
use hybrid::session::{InitiatorTimeouts, SessionError};
use hybrid::test_util::SeededRng;
use hybrid::tunnel::RoutingId;
use hybrid::{QrSecret, Secret, Time, derive};
use hybrid_fuzz::{QR_SECRET, key, request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Action {
    /// Service data of some advert: never this session's without its key.
    Advert(Vec<u8>),
    /// This session's advert, encrypted with the QR secret's key.
    GenuineAdvert {
        nonce: [u8; 10],
        routing_id: [u8; 3],
        domain_id: u16,
    },
    TunnelConnected,
    /// Bytes from the tunnel that no phone sealed.
    Message(Vec<u8>),
    /// The honest phone answers message 1, in either nonce construction from then on.
    Handshake {
        old_construction: bool,
    },
    /// The honest phone seals a genuine post-handshake message.
    PostHandshake,
    /// The honest phone seals a CTAP reply frame.
    Reply {
        status: u8,
        body: Vec<u8>,
    },
    /// The honest phone seals these bytes.
    Sealed(Vec<u8>),
    /// Milliseconds pass (nothing else takes time).
    Wait(u32),
    Timeout,
    TunnelClosed,
}

/// The honest phone's view of the session.
#[derive(Default)]
struct Phone {
    psk: Option<Secret<32>>,
    message_1: Option<Vec<u8>>,
    crypter: Option<Crypter>,
    sealed: Vec<Vec<u8>>,
}

impl Phone {
    fn seal(&mut self, plaintext: Vec<u8>) -> Option<Vec<u8>> {
        let ciphertext = self.crypter.as_mut()?.encrypt(&plaintext).ok()?;
        self.sealed.push(plaintext);
        Some(ciphertext)
    }

    /// Whether `reply` is the CTAP payload of something the phone sealed (framed or not).
    fn sealed_reply(&self, reply: &[u8]) -> bool {
        self.sealed
            .iter()
            .any(|p| p == reply || p.strip_prefix(&[1]) == Some(reply))
    }
}

fn check_transmits(client: &mut Initiator, phone: &mut Phone) {
    let command = request().encode();
    while let Some(message) = client.poll_transmit() {
        match (&phone.message_1, &mut phone.crypter) {
            (None, _) => {
                assert_eq!(
                    message.len(),
                    MESSAGE_LEN,
                    "first transmit is Noise message 1"
                );
                phone.message_1 = Some(message);
            }
            (Some(_), None) => panic!("client sent {message:02x?} before the handshake ended"),
            (Some(_), Some(crypter)) => {
                let plaintext = crypter
                    .decrypt(&message)
                    .expect("client seals with its keys");
                let framed = Frame::Ctap(command.clone()).encode();
                let shutdown = Frame::Shutdown.encode();
                assert!(
                    [&command, &framed, &shutdown].contains(&&plaintext),
                    "client sent {plaintext:02x?}"
                );
            }
        }
    }
}

fuzz_target!(|actions: Vec<Action>| {
    let identity = key(1);
    let eid_key = derive::eid_key(&QrSecret::new(QR_SECRET));
    let mut client = Initiator::new(
        identity.clone(),
        QrSecret::new(QR_SECRET),
        &request(),
        InitiatorTimeouts::default(),
        Time::ZERO,
        &mut SeededRng::new(2),
    );
    let mut phone = Phone::default();
    let mut now = Time::ZERO;
    let mut responses = 0;

    for action in actions {
        let failed_before = client.error().cloned();
        let result = match action {
            Action::Advert(bytes) => {
                assert!(!client.handle_advert(now, &bytes), "foreign advert matched");
                Ok(())
            }
            Action::GenuineAdvert {
                nonce,
                routing_id,
                domain_id,
            } => {
                let plaintext = AdvertPlaintext {
                    nonce,
                    routing_id: RoutingId::new(routing_id),
                    domain_id: DomainId(domain_id),
                };
                let block = plaintext.to_bytes();
                let matched = client.handle_advert(now, &advert::encrypt(&eid_key, &block));
                if matched {
                    assert!(phone.psk.is_none(), "a second advert matched");
                    assert!(DomainId(domain_id).is_known());
                    phone.psk = Some(derive::psk(&QR_SECRET, &block));
                }
                Ok(())
            }
            Action::TunnelConnected => client.handle_tunnel_connected(now),
            Action::Message(bytes) => client.handle_tunnel_message(now, &bytes),
            Action::Handshake { old_construction } => match (&phone.psk, &phone.message_1) {
                (Some(psk), Some(message_1)) if phone.crypter.is_none() => {
                    let (message_2, keys) =
                        noise::respond_qr(psk, &identity.public_key(), &key(3), message_1)
                            .expect("the client's message 1 is genuine");
                    let construction = if old_construction {
                        Construction::Old
                    } else {
                        Construction::New
                    };
                    phone.crypter = Some(Crypter::new(keys.send_key, keys.recv_key, construction));
                    client.handle_tunnel_message(now, &message_2)
                }
                _ => Ok(()),
            },
            Action::PostHandshake => {
                let post = PostHandshake::for_ctap(&GetInfoResponse::hybrid_phone()).encode();
                match phone.seal(post) {
                    Some(ciphertext) => client.handle_tunnel_message(now, &ciphertext),
                    None => Ok(()),
                }
            }
            Action::Reply { status, body } => {
                let reply = [&[status][..], &body].concat();
                match phone.seal(Frame::Ctap(reply).encode()) {
                    Some(ciphertext) => client.handle_tunnel_message(now, &ciphertext),
                    None => Ok(()),
                }
            }
            Action::Sealed(plaintext) => match phone.seal(plaintext) {
                Some(ciphertext) => client.handle_tunnel_message(now, &ciphertext),
                None => Ok(()),
            },
            Action::Wait(ms) => {
                now = Time::from_millis(now.as_millis().saturating_add(ms.into()));
                Ok(())
            }
            Action::Timeout => {
                let result = client.handle_timeout(now);
                if result.is_ok() {
                    assert!(client.poll_timeout().is_none_or(|deadline| deadline > now));
                }
                result
            }
            Action::TunnelClosed => client.handle_tunnel_closed(now),
        };

        if let Some(error) = failed_before {
            assert_eq!(
                client.error(),
                Some(&error),
                "a failed session changed its error"
            );
            assert!(matches!(result, Ok(()) | Err(SessionError::Closed)));
        }
        if result.is_err() || client.error().is_some() {
            assert!(client.error().is_some() && !client.is_finished());
            assert_eq!(client.poll_timeout(), None);
        }
        check_transmits(&mut client, &mut phone);
        while let Some(event) = client.poll_event() {
            if let Event::ResponseReceived(response) = event {
                responses += 1;
                assert_eq!(responses, 1, "a second response");
                assert!(
                    phone.sealed_reply(&response.encode()),
                    "response {response:?} was never sealed by the phone"
                );
            }
        }
    }
});
