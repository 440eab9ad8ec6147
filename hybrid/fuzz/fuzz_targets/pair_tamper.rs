//! `pair_tamper`: a client and a phone in memory (`test_util::Pair`) with any damage in flight —
//! flips, cuts, replays, reorders, drops, injections — and any approval delay and message
//! latency, never panic or livelock. Damage can never forge success: whenever the client
//! reports a reply it is exactly the phone's scripted reply, and the phone's handler sees at most
//! one command, the client's.
#![no_main]

use arbitrary::Arbitrary;
use hybrid::test_util::{Direction, Pair, ScriptedHandler, Tamper};
use hybrid_fuzz::{reply, request};
use libfuzzer_sys::fuzz_target;

/// How many messages a tamper may target in each direction (a session has at most four).
const MESSAGES: u8 = 6;
/// Most tampers per run.
const MAX_TAMPERS: usize = 8;

#[derive(Arbitrary, Debug)]
enum Damage {
    Flip { byte: u16, bit: u8 },
    Truncate { len: u16 },
    Duplicate,
    Delay,
    Drop,
    InjectAfter(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct FuzzTamper {
    to_phone: bool,
    index: u8,
    damage: Damage,
}

impl FuzzTamper {
    fn into_tamper(self) -> Tamper {
        let direction = if self.to_phone {
            Direction::ToPhone
        } else {
            Direction::ToClient
        };
        let index = usize::from(self.index % MESSAGES);
        match self.damage {
            Damage::Flip { byte, bit } => Tamper::Flip {
                direction,
                index,
                byte: byte.into(),
                bit,
            },
            Damage::Truncate { len } => Tamper::Truncate {
                direction,
                index,
                len: len.into(),
            },
            Damage::Duplicate => Tamper::Duplicate { direction, index },
            Damage::Delay => Tamper::Delay { direction, index },
            Damage::Drop => Tamper::Drop { direction, index },
            Damage::InjectAfter(bytes) => Tamper::InjectAfter {
                direction,
                index,
                bytes,
            },
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u8,
    linking: bool,
    step_ms: u16,
    approval_delay_ms: u32,
    tampers: Vec<FuzzTamper>,
}

fuzz_target!(|input: Input| {
    let mut pair = Pair::new(
        input.seed.into(),
        &request(),
        ScriptedHandler::new(reply()),
        input.linking,
    );
    pair.step = input.step_ms.into();
    pair.approval_delay = input.approval_delay_ms.into();
    pair.tampers = input
        .tampers
        .into_iter()
        .take(MAX_TAMPERS)
        .map(FuzzTamper::into_tamper)
        .collect();

    let outcome = pair.drive();
    if let Ok(response) = &outcome.client {
        assert_eq!(response, &reply(), "damage forged a different reply");
    }
    let seen = &pair.phone.handler().seen;
    assert!(seen.len() <= 1, "the handler saw {} commands", seen.len());
    assert!(
        seen.iter().all(|r| *r == request()),
        "the handler saw {seen:?}"
    );
});
