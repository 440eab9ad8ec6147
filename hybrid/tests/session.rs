//! Both roles in memory on a virtual clock ([`hybrid::test_util::Pair`]): a full exchange, then
//! every kind of damage in flight, each of which must end in a typed error — never a panic and
//! never a success.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hybrid::authenticator::{self, Authenticator};
use hybrid::crypter::CrypterError;
use hybrid::ctap::get_assertion::{GetAssertionRequest, GetAssertionResponse};
use hybrid::ctap::{CtapCommand, CtapRequest, CtapResponse, CtapStatus};
use hybrid::domain::DomainId;
use hybrid::frame::Revision;
use hybrid::initiator::{Event, Initiator};
use hybrid::noise::NoiseError;
use hybrid::session::{Fault, InitiatorTimeouts, MAX_MESSAGE_LEN, SessionError, Stage};
use hybrid::test_util::{Direction, Outcome, Pair, ScriptedHandler, SeededRng, Tamper};
use hybrid::tunnel::RoutingId;
use hybrid::{QrSecret, Time};
use p256::SecretKey;
use p256::elliptic_curve::Generate;

fn request() -> CtapRequest {
    CtapRequest::GetAssertion(GetAssertionRequest::new("example.com", [0x11; 32]))
}

fn reply() -> CtapResponse {
    CtapResponse::ok(
        GetAssertionResponse {
            credential: None,
            auth_data: vec![0xaa; 37],
            signature: vec![0x30, 0x44, 1, 2, 3],
            user: None,
            number_of_credentials: None,
            user_selected: None,
            large_blob_key: None,
        }
        .to_cbor(),
    )
}

fn pair(linking: bool) -> Pair<ScriptedHandler> {
    Pair::new(7, &request(), ScriptedHandler::new(reply()), linking)
}

fn run_with(tampers: Vec<Tamper>) -> Outcome {
    let mut p = pair(false);
    p.tampers = tampers;
    p.drive()
}

#[test]
fn full_sign_in_exchange() {
    let mut p = pair(true);
    let out = p.drive();
    let response = out.client.expect("client gets the reply");
    assert_eq!(response, reply());
    assert_eq!(
        response.get_assertion().unwrap().signature,
        vec![0x30, 0x44, 1, 2, 3]
    );
    out.phone.expect("phone finishes after shutdown");
    assert_eq!(p.phone.handler().seen, vec![request()]);

    let kinds: Vec<&str> = out
        .client_events
        .iter()
        .map(|e| match e {
            Event::AdvertMatched { .. } => "advert",
            Event::TunnelReady { .. } => "ready",
            Event::LinkingReceived(Ok(_)) => "linked",
            Event::LinkingReceived(Err(_)) => "bad link",
            Event::ResponseReceived(_) => "response",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["advert", "ready", "linked", "response"]);
    match &out.client_events[0] {
        Event::AdvertMatched {
            routing_id,
            domain_id,
            domain,
            tunnel_id,
        } => {
            assert_eq!(*routing_id, RoutingId::new([1, 2, 3]));
            assert_eq!(*domain_id, DomainId(256));
            assert_eq!(domain.as_deref(), Some("cable.qz2ekwmnd332c.info"));
            assert_eq!(*tunnel_id, p.url.tunnel_id());
        }
        other => panic!("unexpected {other:?}"),
    }
    match &out.client_events[1] {
        Event::TunnelReady { get_info, revision } => {
            assert_eq!(*revision, Revision::One);
            assert!(get_info.versions.iter().any(|v| v == "FIDO_2_1"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(out.phone_events.iter().any(|e| matches!(
        e,
        authenticator::Event::RequestHandled {
            command: CtapCommand::GetAssertion,
            status: CtapStatus::Ok
        }
    )));
    assert!(p.client.is_finished() && p.phone.is_finished());
}

#[test]
fn authenticator_refusal_is_a_status_not_a_session_error() {
    let mut p = Pair::new(
        3,
        &request(),
        ScriptedHandler::new(CtapResponse::error(CtapStatus::OperationDenied)),
        false,
    );
    let out = p.drive();
    let response = out.client.expect("tunnel works");
    assert_eq!(response.status, CtapStatus::OperationDenied);
    assert!(response.get_assertion().is_err());
    out.phone.expect("phone finished");
}

/// A client session whose phone speaks the current protocol, for damage tests: message 0 to
/// the client is Noise message 2, 1 the post-handshake message, 2 the update, 3 the reply.
/// Message 0 to the phone is Noise message 1, 1 the request, 2 shutdown.
#[test]
fn flipped_bits_anywhere_fail_typed() {
    for (direction, index) in [
        (Direction::ToPhone, 0),
        (Direction::ToClient, 0),
        (Direction::ToClient, 1),
        (Direction::ToClient, 2),
        (Direction::ToClient, 3),
        (Direction::ToPhone, 1),
    ] {
        for byte in [0usize, 40, 64, 70, 80, 1000] {
            let out = run_with(vec![Tamper::Flip {
                direction,
                index,
                byte,
                bit: 3,
            }]);
            assert!(
                out.client.is_err() || out.phone.is_err(),
                "{direction:?}[{index}] byte {byte}: both succeeded"
            );
            assert!(
                out.client.is_err(),
                "{direction:?}[{index}] byte {byte}: client must not succeed: {:?}",
                out.client
            );
        }
    }
}

#[test]
fn flipped_handshake_message_is_a_handshake_error() {
    let out = run_with(vec![Tamper::Flip {
        direction: Direction::ToClient,
        index: 0,
        byte: 70,
        bit: 0,
    }]);
    assert_eq!(
        out.client.unwrap_err(),
        SessionError::Handshake(NoiseError::Decrypt)
    );
    let out = run_with(vec![Tamper::Flip {
        direction: Direction::ToPhone,
        index: 0,
        byte: 70,
        bit: 0,
    }]);
    assert_eq!(
        out.phone.unwrap_err(),
        SessionError::Handshake(NoiseError::Decrypt)
    );
    // Then the client sees the tunnel close during the handshake.
    assert_eq!(
        out.client.unwrap_err(),
        SessionError::TunnelClosed(Stage::Handshake)
    );
}

#[test]
fn flipped_point_is_an_invalid_point() {
    let out = run_with(vec![Tamper::Flip {
        direction: Direction::ToClient,
        index: 0,
        byte: 0,
        bit: 1,
    }]);
    assert_eq!(
        out.client.unwrap_err(),
        SessionError::Handshake(NoiseError::InvalidPoint)
    );
}

#[test]
fn truncation_fails_typed() {
    let out = run_with(vec![Tamper::Truncate {
        direction: Direction::ToClient,
        index: 0,
        len: 80,
    }]);
    assert_eq!(
        out.client.unwrap_err(),
        SessionError::Handshake(NoiseError::Length(80))
    );
    let out = run_with(vec![Tamper::Truncate {
        direction: Direction::ToPhone,
        index: 0,
        len: 0,
    }]);
    assert_eq!(
        out.phone.unwrap_err(),
        SessionError::Handshake(NoiseError::Length(0))
    );
    for index in 1..=3 {
        let out = run_with(vec![Tamper::Truncate {
            direction: Direction::ToClient,
            index,
            len: 20,
        }]);
        assert_eq!(
            out.client.unwrap_err(),
            SessionError::Decrypt(CrypterError::Decrypt),
            "index {index}"
        );
    }
    let out = run_with(vec![Tamper::Truncate {
        direction: Direction::ToPhone,
        index: 1,
        len: 47,
    }]);
    assert_eq!(
        out.phone.unwrap_err(),
        SessionError::Decrypt(CrypterError::Decrypt)
    );
    assert!(out.client.is_err());
}

#[test]
fn replay_fails_typed() {
    // The phone's post-handshake message delivered twice: the second fails the counter.
    let out = run_with(vec![Tamper::Duplicate {
        direction: Direction::ToClient,
        index: 1,
    }]);
    assert_eq!(
        out.client.unwrap_err(),
        SessionError::Decrypt(CrypterError::Decrypt)
    );
    // The client's request replayed to the phone.
    let out = run_with(vec![Tamper::Duplicate {
        direction: Direction::ToPhone,
        index: 1,
    }]);
    assert_eq!(
        out.phone.unwrap_err(),
        SessionError::Decrypt(CrypterError::Decrypt)
    );
    // Noise message 1 replayed after the handshake.
    let out = run_with(vec![Tamper::Duplicate {
        direction: Direction::ToPhone,
        index: 0,
    }]);
    assert_eq!(
        out.phone.unwrap_err(),
        SessionError::Decrypt(CrypterError::Decrypt)
    );
    assert!(out.client.is_err());
}

#[test]
fn reordering_fails_typed() {
    // Update overtakes the post-handshake message.
    let out = run_with(vec![Tamper::Delay {
        direction: Direction::ToClient,
        index: 1,
    }]);
    assert_eq!(
        out.client.unwrap_err(),
        SessionError::Decrypt(CrypterError::Decrypt)
    );
    // Post-handshake overtakes Noise message 2.
    let out = run_with(vec![Tamper::Delay {
        direction: Direction::ToClient,
        index: 0,
    }]);
    assert!(matches!(
        out.client.unwrap_err(),
        SessionError::Handshake(_)
    ));
}

#[test]
fn dropped_messages_end_in_timeouts_or_closure() {
    // The reply is lost: the phone, having answered, closes after its shutdown wait; the client
    // learns the tunnel closed while it waited.
    let out = run_with(vec![Tamper::Drop {
        direction: Direction::ToClient,
        index: 3,
    }]);
    assert_eq!(
        out.client.as_ref().unwrap_err(),
        &SessionError::TunnelClosed(Stage::Request)
    );
    assert_eq!(out.client.unwrap_err().fault(), Fault::Transport);
    // The request is lost: the phone gives up waiting for it.
    let out = run_with(vec![Tamper::Drop {
        direction: Direction::ToPhone,
        index: 1,
    }]);
    assert_eq!(
        out.phone.as_ref().unwrap_err(),
        &SessionError::Timeout(Stage::Request)
    );
    assert_eq!(
        out.client.unwrap_err(),
        SessionError::TunnelClosed(Stage::Request)
    );
    let out = run_with(vec![Tamper::Drop {
        direction: Direction::ToPhone,
        index: 0,
    }]);
    assert_eq!(
        out.client.unwrap_err(),
        SessionError::Timeout(Stage::Handshake)
    );
    assert_eq!(
        out.phone.unwrap_err(),
        SessionError::TunnelClosed(Stage::Connect)
    );
}

#[test]
fn wrong_psk_fails_the_handshake() {
    // The phone answers a URL with another QR secret: the client never matches its advert.
    // So instead give the client an advert made with the right key but a different plaintext
    // than the phone used: its PSK differs and the phone must refuse message 1.
    let mut rng = SeededRng::new(11);
    let identity = SecretKey::generate_from_rng(&mut rng);
    let secret = QrSecret::new([4; 16]);
    let mut client = Initiator::new(
        identity.clone(),
        secret.clone(),
        &request(),
        InitiatorTimeouts::default(),
        Time::ZERO,
        &mut rng,
    );
    let url = hybrid::url::FidoUrl::new(
        identity.public_key(),
        secret.clone(),
        hybrid::url::RequestType::GetAssertion,
        0,
        true,
    );
    let mut phone = Authenticator::new(
        url,
        ScriptedHandler::new(reply()),
        None,
        Default::default(),
        &mut rng,
    );
    let now = Time::from_millis(1);
    phone
        .handle_routing_id(now, RoutingId::new([9, 9, 9]), DomainId(0))
        .unwrap();
    let Some(authenticator::Event::AdvertReady(_real)) = phone.poll_event() else {
        panic!("no advert")
    };
    let forged = hybrid::advert::AdvertPlaintext {
        nonce: [1; 10],
        routing_id: RoutingId::new([9, 9, 9]),
        domain_id: DomainId(0),
    };
    let advert = hybrid::advert::encrypt(&hybrid::derive::eid_key(&secret), &forged.to_bytes());
    assert!(client.handle_advert(now, &advert));
    client.handle_tunnel_connected(now).unwrap();
    let msg1 = client.poll_transmit().unwrap();
    assert_eq!(
        phone.handle_tunnel_message(now, &msg1),
        Err(SessionError::Handshake(NoiseError::Decrypt))
    );
    assert_eq!(
        phone.handle_tunnel_message(now, &msg1),
        Err(SessionError::Closed)
    );
    assert!(phone.poll_transmit().is_none());
}

#[test]
fn second_ctap_command_is_refused() {
    // Our client cannot send two commands, so play the client by hand with the same primitives.
    let mut rng = SeededRng::new(5);
    let identity = SecretKey::generate_from_rng(&mut rng);
    let secret = QrSecret::new([6; 16]);
    let url = hybrid::url::FidoUrl::new(
        identity.public_key(),
        secret.clone(),
        hybrid::url::RequestType::GetAssertion,
        0,
        true,
    );
    let mut phone = Authenticator::new(
        url,
        ScriptedHandler::new(reply()),
        None,
        Default::default(),
        &mut rng,
    );
    let now = Time::from_millis(1);
    phone
        .handle_routing_id(now, RoutingId::new([1, 1, 1]), DomainId(1))
        .unwrap();
    let Some(authenticator::Event::AdvertReady(advert)) = phone.poll_event() else {
        panic!()
    };
    let block = hybrid::advert::decrypt(&hybrid::derive::eid_key(&secret), &advert).unwrap();
    let psk = hybrid::derive::psk(secret.expose(), &block);
    let (hs, msg1) = hybrid::noise::HandshakeInitiator::new_qr(
        &psk,
        &identity,
        SecretKey::generate_from_rng(&mut rng),
    );
    phone.handle_tunnel_message(now, &msg1).unwrap();
    let msg2 = phone.poll_transmit().unwrap();
    let keys = hs.finish(&msg2).unwrap();
    let mut crypter = hybrid::crypter::Crypter::new(
        keys.send_key,
        keys.recv_key,
        hybrid::crypter::Construction::New,
    );
    for _ in 0..2 {
        crypter.decrypt(&phone.poll_transmit().unwrap()).unwrap();
    }
    let frame = hybrid::frame::Frame::Ctap(request().encode()).encode();
    phone
        .handle_tunnel_message(now, &crypter.encrypt(&frame).unwrap())
        .unwrap();
    crypter.decrypt(&phone.poll_transmit().unwrap()).unwrap();
    assert_eq!(
        phone.handle_tunnel_message(now, &crypter.encrypt(&frame).unwrap()),
        Err(SessionError::SecondCommand)
    );
    assert_eq!(
        phone.handler().seen.len(),
        1,
        "the second command never reaches the authenticator"
    );
    assert!(phone.poll_transmit().is_none(), "nothing is answered");
}

#[test]
fn second_reply_after_finish_is_not_a_second_success() {
    // An injected extra message after the reply is dropped by the finished client (it already
    // sent shutdown); the client reported exactly one response.
    let out = run_with(vec![Tamper::InjectAfter {
        direction: Direction::ToClient,
        index: 3,
        bytes: vec![1; 64],
    }]);
    let responses = out
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::ResponseReceived(_)))
        .count();
    assert_eq!(responses, 1);
}

#[test]
fn oversized_frames_are_refused() {
    let big = vec![0u8; MAX_MESSAGE_LEN + 1];
    let out = run_with(vec![Tamper::InjectAfter {
        direction: Direction::ToClient,
        index: 1,
        bytes: big.clone(),
    }]);
    assert_eq!(
        out.client.unwrap_err(),
        SessionError::MessageTooLarge(MAX_MESSAGE_LEN + 1)
    );
    let out = run_with(vec![Tamper::InjectAfter {
        direction: Direction::ToPhone,
        index: 0,
        bytes: big,
    }]);
    assert_eq!(
        out.phone.unwrap_err(),
        SessionError::MessageTooLarge(MAX_MESSAGE_LEN + 1)
    );
}

#[test]
fn injected_garbage_fails_typed() {
    for (direction, index) in [
        (Direction::ToClient, 0),
        (Direction::ToClient, 1),
        (Direction::ToPhone, 0),
        (Direction::ToPhone, 1),
    ] {
        for bytes in [vec![], vec![0], vec![0xff; 81], vec![4; 200]] {
            let out = run_with(vec![Tamper::InjectAfter {
                direction,
                index,
                bytes: bytes.clone(),
            }]);
            // The side that receives the garbage fails; a reply already sent stays valid.
            let receiver_failed = match direction {
                Direction::ToClient => out.client.is_err(),
                Direction::ToPhone => out.phone.is_err(),
            };
            assert!(
                receiver_failed,
                "{direction:?}[{index}] {} bytes accepted",
                bytes.len()
            );
        }
    }
}

#[test]
fn phone_that_never_answers_times_out_in_discovery() {
    let mut rng = SeededRng::new(1);
    let identity = SecretKey::generate_from_rng(&mut rng);
    let mut client = Initiator::new(
        identity,
        QrSecret::new([1; 16]),
        &request(),
        InitiatorTimeouts::default(),
        Time::ZERO,
        &mut rng,
    );
    let deadline = client.poll_timeout().unwrap();
    assert_eq!(deadline, Time::from_millis(300_000));
    assert!(client.handle_timeout(Time::from_millis(299_999)).is_ok());
    assert_eq!(
        client.handle_timeout(deadline),
        Err(SessionError::Timeout(Stage::Discovery))
    );
    assert!(!client.handle_advert(deadline, &[0; 20]));
    assert_eq!(
        client.handle_tunnel_connected(deadline),
        Err(SessionError::Closed)
    );
}

#[test]
fn calls_out_of_order_are_caller_errors() {
    let mut rng = SeededRng::new(2);
    let identity = SecretKey::generate_from_rng(&mut rng);
    let mut client = Initiator::new(
        identity,
        QrSecret::new([1; 16]),
        &request(),
        InitiatorTimeouts::default(),
        Time::ZERO,
        &mut rng,
    );
    let err = client.handle_tunnel_connected(Time::ZERO).unwrap_err();
    assert_eq!(err, SessionError::InvalidState("handle_tunnel_connected"));
    assert_eq!(err.fault(), Fault::Caller);
}

#[test]
fn phone_refuses_to_advertise_an_unassigned_domain() {
    let mut rng = SeededRng::new(9);
    let identity = SecretKey::generate_from_rng(&mut rng);
    let url = hybrid::url::FidoUrl::new(
        identity.public_key(),
        QrSecret::new([2; 16]),
        hybrid::url::RequestType::GetAssertion,
        0,
        true,
    );
    let mut phone = Authenticator::new(
        url,
        ScriptedHandler::new(reply()),
        None,
        Default::default(),
        &mut rng,
    );
    let err = phone
        .handle_routing_id(Time::ZERO, RoutingId::new([1, 2, 3]), DomainId(7))
        .unwrap_err();
    assert_eq!(err.fault(), Fault::Caller);
    assert!(
        phone.poll_event().is_none(),
        "no advert for a domain no client can reach"
    );
    // Like every failure, it ends the session.
    assert_eq!(
        phone.handle_routing_id(Time::ZERO, RoutingId::new([1, 2, 3]), DomainId(1)),
        Err(SessionError::Closed)
    );
}
