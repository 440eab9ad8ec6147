//! `authenticator_session`: a phone session fed any sequence of routing ids, tunnel messages,
//! timeouts and closes, at any times, never panics. Unauthenticated bytes never complete the
//! handshake or reach the handler; the handler sees at most one command, and only one the client
//! sealed. Everything the phone transmits is, in order, Noise message 2 and ciphertexts under the
//! session keys of a valid post-handshake message, then valid frames (never shutdown); linking
//! data it sends verifies. A failed session stays failed, with no deadline.
//!
//! The harness can also play an honest client (Noise message 1 for the phone's advert, the
//! genuine command, sealed plaintexts of the fuzzer's choice), so every state is reached.
#![no_main]

use arbitrary::Arbitrary;
use hybrid::advert;
use hybrid::authenticator::{Authenticator, Event, LinkingOffer};
use hybrid::crypter::Crypter;
use hybrid::ctap::{CtapRequest, CtapResponse, GetInfoResponse};
use hybrid::domain::DomainId;
use hybrid::frame::{self, Frame, LinkingInfo, PostHandshake, Revision};
use hybrid::noise::HandshakeInitiator;
use hybrid::session::{AuthenticatorTimeouts, SessionError};
use hybrid::test_util::{ScriptedHandler, SeededRng};
use hybrid::tunnel::RoutingId;
use hybrid::url::{FidoUrl, RequestType};
use hybrid::{QrSecret, Secret, Time, derive};
use hybrid_fuzz::{QR_SECRET, key, reply, request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Action {
    RoutingId {
        routing_id: [u8; 3],
        domain_id: u16,
    },
    /// Bytes from the tunnel that no client sealed.
    Message(Vec<u8>),
    /// The honest client reads the phone's advert and sends Noise message 1.
    Handshake,
    /// The honest client seals its command.
    Request,
    /// The honest client seals these bytes.
    Sealed(Vec<u8>),
    /// Milliseconds pass (nothing else takes time).
    Wait(u32),
    Timeout,
    TunnelClosed,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Whether the phone offers linking data.
    linking: bool,
    actions: Vec<Action>,
}

/// The honest client's view of the session.
#[derive(Default)]
struct Client {
    advert: Option<[u8; advert::ADVERT_LEN]>,
    /// Between sending message 1 and reading message 2.
    handshake: Option<HandshakeInitiator>,
    crypter: Option<Crypter>,
    handshake_hash: [u8; 32],
    /// Phone messages decrypted so far.
    received: usize,
    sealed: Vec<Vec<u8>>,
}

impl Client {
    fn seal(&mut self, plaintext: Vec<u8>) -> Option<Vec<u8>> {
        let ciphertext = self.crypter.as_mut()?.encrypt(&plaintext).ok()?;
        self.sealed.push(plaintext);
        Some(ciphertext)
    }

    /// Checks one message from the phone.
    fn receive(&mut self, message: &[u8], linking: bool) {
        if let Some(handshake) = self.handshake.take() {
            let keys = handshake.finish(message).expect("message 2 is genuine");
            self.crypter = Some(Crypter::new_detecting(keys.send_key, keys.recv_key));
            self.handshake_hash = keys.handshake_hash;
            return;
        }
        let Some(crypter) = self.crypter.as_mut() else {
            panic!("phone sent {message:02x?} before the handshake");
        };
        let plaintext = crypter.decrypt(message).expect("phone seals with its keys");
        self.received += 1;
        if self.received == 1 {
            let (post, revision) = PostHandshake::decode(&plaintext).expect("post-handshake");
            assert_eq!(revision, Revision::One);
            let info = GetInfoResponse::from_cbor(&post.get_info.expect("getInfo"));
            assert_eq!(info, Ok(GetInfoResponse::hybrid_phone()));
            return;
        }
        match Frame::decode(&plaintext).expect("phone frames are valid") {
            Frame::Ctap(response) => {
                CtapResponse::decode(&response).expect("a status byte");
            }
            Frame::Update(update) => {
                if let Some(value) = frame::decode_update(&update).expect("update map") {
                    assert!(linking, "linking data nobody offered");
                    let info = LinkingInfo::from_value(&value).expect("linking data decodes");
                    info.verify(&key(1), &self.handshake_hash)
                        .expect("linking data verifies");
                }
            }
            other => panic!("phone sent {other:?}"),
        }
    }
}

fuzz_target!(|input: Input| {
    let identity = key(1);
    let eid_key = derive::eid_key(&QrSecret::new(QR_SECRET));
    let url = FidoUrl::new(
        identity.public_key(),
        QrSecret::new(QR_SECRET),
        RequestType::GetAssertion,
        1_767_225_600,
        true,
    );
    let offer = input.linking.then(|| LinkingOffer {
        contact_id: b"contact".to_vec(),
        link_id: [8; 8],
        link_secret: Secret::new([9; 32]),
        identity: key(5),
        name: "Fuzz phone".to_owned(),
    });
    let mut phone = Authenticator::new(
        url,
        ScriptedHandler::new(reply()),
        offer,
        AuthenticatorTimeouts::default(),
        &mut SeededRng::new(3),
    );
    let mut client = Client::default();
    let mut routing = None;
    let mut now = Time::ZERO;

    for action in input.actions {
        let failed_before = phone.error().cloned();
        let result = match action {
            Action::RoutingId {
                routing_id,
                domain_id,
            } => {
                routing = Some((RoutingId::new(routing_id), DomainId(domain_id)));
                phone.handle_routing_id(now, RoutingId::new(routing_id), DomainId(domain_id))
            }
            Action::Message(bytes) => phone.handle_tunnel_message(now, &bytes),
            Action::Handshake => match client.advert {
                Some(advert) if client.handshake.is_none() && client.crypter.is_none() => {
                    let block = advert::decrypt(&eid_key, &advert).expect("genuine advert");
                    let psk = derive::psk(&QR_SECRET, &block);
                    let (handshake, message_1) =
                        HandshakeInitiator::new_qr(&psk, &identity, key(2));
                    client.handshake = Some(handshake);
                    phone.handle_tunnel_message(now, &message_1)
                }
                _ => Ok(()),
            },
            Action::Request => match client.seal(Frame::Ctap(request().encode()).encode()) {
                Some(ciphertext) => phone.handle_tunnel_message(now, &ciphertext),
                None => Ok(()),
            },
            Action::Sealed(plaintext) => match client.seal(plaintext) {
                Some(ciphertext) => phone.handle_tunnel_message(now, &ciphertext),
                None => Ok(()),
            },
            Action::Wait(ms) => {
                now = Time::from_millis(now.as_millis().saturating_add(ms.into()));
                Ok(())
            }
            Action::Timeout => phone.handle_timeout(now),
            Action::TunnelClosed => phone.handle_tunnel_closed(now),
        };

        if let Some(error) = failed_before {
            assert_eq!(
                phone.error(),
                Some(&error),
                "a failed session changed its error"
            );
            assert!(matches!(result, Ok(()) | Err(SessionError::Closed)));
        }
        if result.is_err() || phone.error().is_some() {
            assert!(phone.error().is_some() && !phone.is_finished());
            assert_eq!(phone.poll_timeout(), None);
        }
        while let Some(message) = phone.poll_transmit() {
            client.receive(&message, input.linking);
        }
        while let Some(event) = phone.poll_event() {
            match event {
                Event::AdvertReady(bytes) => {
                    let block = advert::decrypt(&eid_key, &bytes).expect("advert authenticates");
                    let (routing_id, domain_id) = routing.expect("advert after a routing id");
                    assert_eq!(&block[11..14], routing_id.as_bytes());
                    assert_eq!(block[14..], domain_id.0.to_le_bytes());
                    client.advert = Some(bytes);
                }
                Event::HandshakeComplete => assert!(client.crypter.is_some()),
                Event::RequestHandled { .. } => assert!(!client.sealed.is_empty()),
                Event::Finished => assert!(client.crypter.is_some()),
                _ => {}
            }
        }
        let seen = &phone.handler().seen;
        assert!(seen.len() <= 1, "the handler saw {} commands", seen.len());
        for command in seen {
            let sealed_it = client.sealed.iter().any(|p| {
                p.strip_prefix(&[1])
                    .is_some_and(|r| CtapRequest::decode(r).as_ref() == Ok(command))
            });
            assert!(
                sealed_it,
                "handler saw {command:?}, which the client never sealed"
            );
        }
    }
});
