//! Fixtures shared by the fuzz targets in `fuzz_targets/`: fixed keys and secrets, and the one
//! request and reply the session targets exchange.
//!
//! Everything is deterministic (keys come from [`SeededRng`]), so a crash input reproduces
//! exactly.

use arbitrary::Arbitrary;
use hybrid::cbor::{self, Value};
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

/// A CBOR value the fuzzer builds directly, so that decoders of CBOR structures (CTAP messages,
/// post-handshake messages, linking data) see well-formed maps with the right keys and types
/// far sooner than they would from raw bytes. Integer keys are small so that they hit field
/// numbers.
#[derive(Arbitrary, Debug)]
pub enum FuzzValue {
    Uint(u64),
    Negative(u64),
    Bytes(Vec<u8>),
    /// `len` copies of `byte`: fixed-size fields (hashes, ids, secrets) are found much sooner
    /// this way than as a `Vec` built element by element.
    Filled {
        len: u8,
        byte: u8,
    },
    Text(String),
    Bool(bool),
    Null,
    Array(Vec<FuzzValue>),
    Map(Vec<(FuzzKey, FuzzValue)>),
}

/// A map key: a small integer or text.
#[derive(Arbitrary, Debug)]
pub enum FuzzKey {
    Int(u8),
    Text(String),
}

impl FuzzValue {
    /// The value as a CBOR value.
    pub fn to_value(&self) -> Value {
        match self {
            Self::Uint(n) => cbor::int(*n),
            // -1 - n for n in 0..=u64::MAX is inside CBOR's (and `Integer`'s) range.
            Self::Negative(n) => {
                Value::Integer((-1 - i128::from(*n)).try_into().unwrap_or(0u8.into()))
            }
            Self::Bytes(b) => Value::Bytes(b.clone()),
            Self::Filled { len, byte } => Value::Bytes(vec![*byte; usize::from(*len)]),
            Self::Text(t) => Value::Text(t.clone()),
            Self::Bool(b) => Value::Bool(*b),
            Self::Null => Value::Null,
            Self::Array(items) => Value::Array(items.iter().map(Self::to_value).collect()),
            Self::Map(entries) => {
                // Repeated keys are left out (after the first): decoders reject them outright,
                // which would hide everything behind that check.
                let mut map: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let key = match k {
                        FuzzKey::Int(n) => cbor::int((*n).into()),
                        FuzzKey::Text(t) => Value::Text(t.clone()),
                    };
                    if map.iter().all(|(seen, _)| *seen != key) {
                        map.push((key, v.to_value()));
                    }
                }
                Value::Map(map)
            }
        }
    }

    /// The value encoded as canonical CBOR.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&self.to_value())
    }
}
