//! `fido_url`: `FidoUrl::parse` is total; whatever it accepts re-encodes to a URL (with either
//! case of prefix) that parses back to the same value. A full client URL comes back exactly; one
//! without key 4 comes back with `state_assisted: Some(false)`, since our encoder always writes
//! that key. Parsing `FIDO:/` + digits agrees with `FidoUrl::from_cbor` on the bytes.
#![no_main]

use arbitrary::Arbitrary;
use hybrid::QrSecret;
use hybrid::digits;
use hybrid::url::{FidoUrl, MAX_URL_LEN, PREFIX, RequestType};
use libfuzzer_sys::fuzz_target;
use p256::SecretKey;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any text.
    Text(String),
    /// `FIDO:/` and the digits of these bytes, so the CBOR layer is reached directly.
    Payload {
        lower_case_prefix: bool,
        cbor: Vec<u8>,
    },
    /// A client URL we encode, with one character replaced, so that inputs near valid URLs are
    /// explored too. Without an edit it must parse back exactly.
    Edited {
        key: [u8; 32],
        secret: [u8; 16],
        make_credential: bool,
        unix_time: u64,
        state_assisted: bool,
        edit: Option<(u16, char)>,
    },
}

fn check_round_trip(url: &FidoUrl) {
    let encoded = url.encode();
    let expected = FidoUrl {
        state_assisted: Some(url.state_assisted.unwrap_or(false)),
        ..url.clone()
    };
    assert_eq!(FidoUrl::parse(&encoded).as_ref(), Ok(&expected));
    let lower = encoded.replacen(PREFIX, &PREFIX.to_lowercase(), 1);
    assert_eq!(FidoUrl::parse(&lower).as_ref(), Ok(&expected));
    if url.state_assisted.is_some() {
        assert_eq!(&expected, url);
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Text(text) => {
            if let Ok(url) = FidoUrl::parse(&text) {
                check_round_trip(&url);
            }
        }
        Input::Payload {
            lower_case_prefix,
            cbor,
        } => {
            let prefix = if lower_case_prefix {
                PREFIX.to_lowercase()
            } else {
                PREFIX.to_owned()
            };
            let text = prefix + &digits::encode(&cbor);
            let parsed = FidoUrl::parse(&text);
            if text.len() <= MAX_URL_LEN {
                assert_eq!(parsed, FidoUrl::from_cbor(&cbor));
            }
            if let Ok(url) = parsed {
                check_round_trip(&url);
            }
        }
        Input::Edited {
            key,
            secret,
            make_credential,
            unix_time,
            state_assisted,
            edit,
        } => {
            let key = SecretKey::from_slice(&key).unwrap_or_else(|_| hybrid_fuzz::key(1));
            let request_type = if make_credential {
                RequestType::MakeCredential
            } else {
                RequestType::GetAssertion
            };
            let url = FidoUrl::new(
                key.public_key(),
                QrSecret::new(secret),
                request_type,
                unix_time,
                state_assisted,
            );
            let mut text: Vec<char> = url.encode().chars().collect();
            let Some((position, replacement)) = edit else {
                assert_eq!(FidoUrl::parse(&url.encode()), Ok(url));
                return;
            };
            let len = text.len();
            text[usize::from(position) % len] = replacement;
            let edited: String = text.into_iter().collect();
            if let Ok(parsed) = FidoUrl::parse(&edited) {
                check_round_trip(&parsed);
            }
        }
    }
});
