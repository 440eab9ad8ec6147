//! `ctap_request`: `CtapRequest::decode` is total. An accepted request keeps its command byte,
//! and its canonical encoding decodes again to a request that is a fixed point of
//! encode → decode (the first re-encoding may only sort maps kept as raw CBOR, like extensions).
#![no_main]

use arbitrary::Arbitrary;
use hybrid::ctap::{CtapCommand, CtapRequest};
use hybrid_fuzz::{Edit, FuzzValue, edited, pick, sample_requests};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    /// A command byte and a CBOR value built by the fuzzer.
    Structured(u8, FuzzValue),
    /// A valid request with a few bytes changed.
    Edited {
        sample: u8,
        edits: Vec<Edit>,
    },
}

fuzz_target!(|input: Input| {
    let data = match input {
        Input::Raw(bytes) => bytes,
        Input::Structured(command, value) => [vec![command], value.encode()].concat(),
        Input::Edited { sample, edits } => edited(pick(&sample_requests(), sample), &edits),
    };
    let Ok(request) = CtapRequest::decode(&data) else {
        return;
    };
    assert_eq!(request.command(), CtapCommand::from(data[0]));
    let encoded = request.encode();
    let again = CtapRequest::decode(&encoded).expect("our encoding decodes");
    assert_eq!(again.encode(), encoded);
    assert_eq!(CtapRequest::decode(&again.encode()).as_ref(), Ok(&again));
});
