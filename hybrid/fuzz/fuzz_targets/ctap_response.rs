//! `ctap_response`: `CtapResponse::decode` is lossless (it re-encodes to its input); the typed
//! accessors refuse error statuses and are total otherwise; every typed response they (and
//! `GetInfoResponse::from_cbor`) accept survives to_cbor → from_cbor.
#![no_main]

use arbitrary::Arbitrary;
use hybrid::ctap::{
    CtapError, CtapResponse, GetAssertionResponse, GetInfoResponse, MakeCredentialResponse,
};
use hybrid_fuzz::{Edit, FuzzValue, edited, pick, sample_responses};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    /// A status byte and a CBOR value built by the fuzzer.
    Structured(u8, FuzzValue),
    /// A valid response with a few bytes changed.
    Edited {
        sample: u8,
        edits: Vec<Edit>,
    },
}

fn check_get_info(info: GetInfoResponse) {
    assert_eq!(GetInfoResponse::from_cbor(&info.to_cbor()), Ok(info));
}

fuzz_target!(|input: Input| {
    let data = match input {
        Input::Raw(bytes) => bytes,
        Input::Structured(status, value) => [vec![status], value.encode()].concat(),
        Input::Edited { sample, edits } => edited(pick(&sample_responses(), sample), &edits),
    };
    if let Ok(info) = GetInfoResponse::from_cbor(&data) {
        check_get_info(info);
    }
    let Ok(response) = CtapResponse::decode(&data) else {
        assert!(data.is_empty());
        return;
    };
    assert_eq!(response.encode(), data);

    if !response.status.is_ok() {
        let refused = Some(CtapError::Status(response.status));
        assert_eq!(response.get_assertion().err(), refused);
        assert_eq!(response.get_info().err(), refused);
        assert_eq!(response.make_credential().err(), refused);
        return;
    }
    if let Ok(assertion) = response.get_assertion() {
        assert_eq!(
            GetAssertionResponse::from_cbor(&assertion.to_cbor()),
            Ok(assertion)
        );
    }
    if let Ok(info) = response.get_info() {
        check_get_info(info);
    }
    if let Ok(credential) = response.make_credential() {
        // `attStmt` is kept as raw CBOR, so compare encodings rather than values.
        let encoded = credential.to_cbor();
        let again = MakeCredentialResponse::from_cbor(&encoded).expect("our encoding decodes");
        assert_eq!(again.to_cbor(), encoded);
    }
});
