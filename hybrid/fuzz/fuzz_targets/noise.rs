//! `noise`: with fixed keys, both responders and `HandshakeInitiator::finish` are total and
//! refuse every message the honest peer did not send: arbitrary bytes, and an honest message
//! with one bit flipped. The honest exchange agrees on keys and handshake hash.
#![no_main]

use arbitrary::Arbitrary;
use hybrid::Secret;
use hybrid::noise::{self, HandshakeInitiator, HandshakeOutput, MESSAGE_LEN, NoiseError};
use hybrid_fuzz::key;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// State-assisted (`NKpsk0`) instead of QR-initiated (`KNpsk0`).
    state_assisted: bool,
    raw: Vec<u8>,
    /// A bit to flip in message 1: (byte, bit).
    flip_first: Option<(u8, u8)>,
    /// A bit to flip in message 2.
    flip_second: Option<(u8, u8)>,
}

const PSK: Secret<32> = Secret::new([3; 32]);

/// Client identity 1, client ephemeral 2, phone identity 3, phone ephemeral 4.
fn start(state_assisted: bool) -> (HandshakeInitiator, [u8; MESSAGE_LEN]) {
    if state_assisted {
        HandshakeInitiator::new_state_assisted(&PSK, &key(3).public_key(), key(2))
    } else {
        HandshakeInitiator::new_qr(&PSK, &key(1), key(2))
    }
}

fn respond(
    state_assisted: bool,
    message: &[u8],
) -> Result<([u8; MESSAGE_LEN], HandshakeOutput), NoiseError> {
    if state_assisted {
        noise::respond_state_assisted(&PSK, &key(3), &key(4), message)
    } else {
        noise::respond_qr(&PSK, &key(1).public_key(), &key(4), message)
    }
}

fn flipped(message: &[u8], (byte, bit): (u8, u8)) -> Vec<u8> {
    let mut bytes = message.to_vec();
    bytes[usize::from(byte) % MESSAGE_LEN] ^= 1 << (bit % 8);
    bytes
}

fuzz_target!(|input: Input| {
    let sa = input.state_assisted;
    let (_, first) = start(sa);
    if input.raw != first {
        assert!(
            respond(sa, &input.raw).is_err(),
            "responder accepted forged message 1"
        );
    }
    if let Some(flip) = input.flip_first {
        assert!(respond(sa, &flipped(&first, flip)).is_err());
    }

    let (second, phone) = respond(sa, &first).expect("honest message 1");
    if input.raw != second {
        let (initiator, _) = start(sa);
        assert!(
            initiator.finish(&input.raw).is_err(),
            "initiator accepted forged message 2"
        );
    }
    if let Some(flip) = input.flip_second {
        let (initiator, _) = start(sa);
        assert!(initiator.finish(&flipped(&second, flip)).is_err());
    }

    let (initiator, _) = start(sa);
    let client = initiator.finish(&second).expect("honest message 2");
    assert_eq!(client.send_key, phone.recv_key);
    assert_eq!(client.recv_key, phone.send_key);
    assert_eq!(client.handshake_hash, phone.handshake_hash);
});
