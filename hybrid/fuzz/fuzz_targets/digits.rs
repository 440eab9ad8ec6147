//! `digits`: any bytes survive encode → decode, and any digit string that decodes re-encodes to
//! exactly itself (the encoding is a bijection onto the strings `decode` accepts).
#![no_main]

use hybrid::digits;
use libfuzzer_sys::fuzz_target;

fn check_digits(text: &str) {
    if let Ok(bytes) = digits::decode(text) {
        assert_eq!(digits::encode(&bytes), text);
    }
}

fuzz_target!(|data: &[u8]| {
    let encoded = digits::encode(data);
    assert_eq!(digits::decode(&encoded).as_deref(), Ok(data));

    if let Ok(text) = core::str::from_utf8(data) {
        check_digits(text);
    }
    // The same bytes as a digit string, so lengths and group values are explored directly.
    let as_digits: String = data.iter().map(|b| char::from(b'0' + b % 10)).collect();
    check_digits(&as_digits);
});
