//! `tunnel_path`: `TunnelPath::parse` is total; an accepted path prints as a path that parses to
//! the same value, and the printed form differs from the input at most in the case of hex ids
//! (contact ids are base64url, which has one spelling).
#![no_main]

use hybrid::tunnel::TunnelPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = TunnelPath::parse(text) else {
        return;
    };
    let printed = path.to_string();
    assert_eq!(TunnelPath::parse(&printed).as_ref(), Ok(&path));
    match path {
        TunnelPath::Contact(_) => assert_eq!(printed, text),
        TunnelPath::New(_) | TunnelPath::Connect(..) => {
            assert!(printed.eq_ignore_ascii_case(text));
        }
    }
});
