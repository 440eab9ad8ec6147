//! `crypter`: `unpad` is total, returns the prefix its count byte names, and inverts `pad`
//! (whose output is the next multiple of 32 above the input). With fixed keys, arbitrary bytes
//! never decrypt. An honest stream of messages in either nonce construction decrypts in order at
//! a client that detects the construction, which then answers in it; any damaged, truncated,
//! replaced or replayed ciphertext is refused without consuming the counter, so the genuine
//! message still decrypts after it.
#![no_main]

use arbitrary::Arbitrary;
use hybrid::Secret;
use hybrid::crypter::{self, Construction, Crypter, CrypterError, PADDING_GRANULE};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Damage {
    Flip {
        byte: u16,
        bit: u8,
    },
    Truncate {
        len: u16,
    },
    Replace(Vec<u8>),
    /// The previous genuine ciphertext again.
    Replay,
}

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<u8>,
    old_construction: bool,
    /// Messages from the phone, each possibly preceded by a damaged copy.
    messages: Vec<(Vec<u8>, Option<Damage>)>,
}

fn damaged(genuine: &[u8], previous: Option<&Vec<u8>>, damage: Damage) -> Option<Vec<u8>> {
    let mut bytes = genuine.to_vec();
    let len = bytes.len();
    match damage {
        Damage::Flip { byte, bit } => bytes[usize::from(byte) % len] ^= 1 << (bit % 8),
        Damage::Truncate { len: cut } => bytes.truncate(usize::from(cut) % len),
        Damage::Replace(other) => bytes = other,
        Damage::Replay => bytes = previous?.clone(),
    }
    (bytes != genuine).then_some(bytes)
}

fuzz_target!(|input: Input| {
    let padded = crypter::pad(&input.raw);
    assert_eq!(
        padded.len(),
        (input.raw.len() / PADDING_GRANULE + 1) * PADDING_GRANULE
    );
    assert_eq!(crypter::unpad(&padded), Ok(&input.raw[..]));
    if let Ok(message) = crypter::unpad(&input.raw) {
        let count = usize::from(input.raw[input.raw.len() - 1]);
        assert_eq!(message, &input.raw[..input.raw.len() - 1 - count]);
    }

    let (k1, k2) = (Secret::new([1; 32]), Secret::new([2; 32]));
    let mut stranger = Crypter::new_detecting(k1.clone(), k2.clone());
    assert_eq!(stranger.decrypt(&input.raw), Err(CrypterError::Decrypt));

    let construction = if input.old_construction {
        Construction::Old
    } else {
        Construction::New
    };
    let mut phone = Crypter::new(k2.clone(), k1.clone(), construction);
    let mut client = Crypter::new_detecting(k1, k2);
    let mut previous = None;
    for (message, damage) in input.messages {
        let genuine = phone
            .encrypt(&message)
            .expect("counter is far from exhausted");
        if let Some(bad) = damage.and_then(|d| damaged(&genuine, previous.as_ref(), d)) {
            assert!(client.decrypt(&bad).is_err(), "damaged ciphertext accepted");
        }
        assert_eq!(client.decrypt(&genuine), Ok(message.clone()));
        assert_eq!(client.construction(), Some(construction));
        let answer = client
            .encrypt(&message)
            .expect("counter is far from exhausted");
        assert_eq!(phone.decrypt(&answer), Ok(message));
        previous = Some(genuine);
    }
});
