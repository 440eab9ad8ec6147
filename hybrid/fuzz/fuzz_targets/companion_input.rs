//! `companion_input`: what a companion app parses from the network never panics — a push
//! payload (APNs or FCM shape) and the envelope inside it.
#![no_main]

use companion::envelope::{ParsedEnvelope, envelope_from_push};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let _ = ParsedEnvelope::parse(text);
    if let Ok(envelope) = envelope_from_push(text) {
        let _ = ParsedEnvelope::parse(&envelope);
    }
});
