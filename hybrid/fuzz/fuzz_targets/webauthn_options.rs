//! `webauthn_options`: the device agent's WebAuthn option and origin parsers are total — any
//! input is options or a typed error, never a panic.
#![no_main]

use device_agent::webauthn::{CreationOptions, Origin, RequestOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let _ = RequestOptions::from_json(text);
    let _ = CreationOptions::from_json(text);
    if let Ok(origin) = Origin::parse(text) {
        let _ = origin.check_rp_id(text);
        let _ = origin.check_rp_id("example.com");
    }
});
