//! `advert`: with a fixed key, `decrypt_qr` is total and accepts only adverts that are exactly
//! the encryption of the block it returns (which is the plaintext's `to_bytes`); short input is
//! `Short`. `AdvertPlaintext::from_bytes` accepts only blocks `to_bytes` reproduces. A genuine
//! advert decrypts with any suffix after its 20 bytes, and with one bit flipped in those 20 bytes
//! it is refused.
#![no_main]

use arbitrary::Arbitrary;
use hybrid::QrSecret;
use hybrid::advert::{self, ADVERT_LEN, AdvertPlaintext, AdvertReject};
use hybrid::derive;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// Service data from the air.
    raw: Vec<u8>,
    /// A plaintext block for a genuine advert.
    block: [u8; 16],
    /// Bytes after the genuine advert (CTAP 2.3 appends some).
    suffix: Vec<u8>,
    /// A bit to flip in the genuine advert: (byte, bit).
    flip: Option<(u8, u8)>,
}

fuzz_target!(|input: Input| {
    let key = derive::eid_key(&QrSecret::new(hybrid_fuzz::QR_SECRET));

    match advert::decrypt_qr(&key, &input.raw) {
        Ok((plaintext, block)) => {
            assert_eq!(plaintext.to_bytes(), block);
            assert_eq!(advert::encrypt(&key, &block), input.raw[..ADVERT_LEN]);
        }
        Err(reject) => assert_eq!(reject == AdvertReject::Short, input.raw.len() < ADVERT_LEN),
    }

    let parsed = AdvertPlaintext::from_bytes(&input.block);
    if let Ok(plaintext) = &parsed {
        assert_eq!(plaintext.to_bytes(), input.block);
    }

    let mut genuine = advert::encrypt(&key, &input.block).to_vec();
    genuine.extend_from_slice(&input.suffix);
    match input.flip {
        None => {
            assert_eq!(advert::decrypt(&key, &genuine), Ok(input.block));
            let qr = advert::decrypt_qr(&key, &genuine);
            assert_eq!(qr.map(|(plaintext, _)| plaintext), parsed);
        }
        Some((byte, bit)) => {
            genuine[usize::from(byte) % ADVERT_LEN] ^= 1 << (bit % 8);
            assert_eq!(advert::decrypt(&key, &genuine), Err(AdvertReject::Tag));
        }
    }
});
