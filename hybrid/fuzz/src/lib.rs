//! Fixtures shared by the fuzz targets in `fuzz_targets/`: fixed keys and secrets, and the one
//! request and reply the session targets exchange.
//!
//! Everything is deterministic (keys come from [`SeededRng`]), so a crash input reproduces
//! exactly.

use hybrid::ctap::get_assertion::{GetAssertionRequest, GetAssertionResponse};
use hybrid::ctap::{CtapRequest, CtapResponse};
use hybrid::test_util::SeededRng;
use p256::SecretKey;
use p256::elliptic_curve::Generate;

/// The QR secret of every session the targets build.
pub const QR_SECRET: [u8; 16] = [0x42; 16];

/// A P-256 key that depends only on `seed`.
pub fn key(seed: u64) -> SecretKey {
    SecretKey::generate_from_rng(&mut SeededRng::new(seed))
}

/// The client's command in the session targets.
pub fn request() -> CtapRequest {
    CtapRequest::GetAssertion(GetAssertionRequest::new("example.com", [0x11; 32]))
}

/// The phone's scripted reply in the session targets.
pub fn reply() -> CtapResponse {
    CtapResponse::ok(
        GetAssertionResponse {
            credential: None,
            auth_data: vec![0xaa; 37],
            signature: vec![0x30, 0x44, 1, 2, 3],
            user: None,
            number_of_credentials: None,
            user_selected: None,
            large_blob_key: None,
        }
        .to_cbor(),
    )
}
