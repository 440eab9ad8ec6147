//! `cbor`: both strictnesses are total. Canonical input that decodes re-encodes byte for byte
//! and is accepted leniently as the same value; anything accepted leniently re-encodes to
//! canonical CBOR whose encoding is a fixed point; `decode_prefix` agrees with `decode` on the
//! prefix it reports.
#![no_main]

use hybrid::cbor::{self, Strictness};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let canonical = cbor::decode(data, Strictness::Canonical);
    let lenient = cbor::decode(data, Strictness::Lenient);

    if let Ok(value) = &canonical {
        assert_eq!(
            cbor::encode(value),
            data,
            "canonical input re-encodes exactly"
        );
        assert_eq!(lenient.as_ref(), Ok(value), "canonical implies lenient");
    }
    if let Ok(value) = &lenient {
        let encoded = cbor::encode(value);
        let again = cbor::decode(&encoded, Strictness::Canonical)
            .expect("the encoder writes canonical CBOR");
        assert_eq!(cbor::encode(&again), encoded);
    }
    if let Ok((value, used)) = cbor::decode_prefix(data, Strictness::Lenient) {
        assert!(used <= data.len());
        assert_eq!(cbor::decode(&data[..used], Strictness::Lenient), Ok(value));
    }
});
