//! Fixtures shared by the fuzz targets in `fuzz_targets/`: fixed keys and secrets, and the one
//! request and reply the session targets exchange.
//!
//! Everything is deterministic (keys come from [`SeededRng`]), so a crash input reproduces
//! exactly.

use arbitrary::Arbitrary;
use hybrid::cbor::{self, Value};
use hybrid::ctap::{
    CtapRequest, CtapResponse, GetAssertionOptions, GetAssertionRequest, GetAssertionResponse,
    GetInfoResponse, LargeBlobKey, MakeCredentialOptions, MakeCredentialRequest,
    MakeCredentialResponse, PublicKeyCredentialDescriptor, PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
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

/// One change to a byte string.
#[derive(Arbitrary, Debug)]
pub enum Edit {
    Set(u16, u8),
    Insert(u16, u8),
    Remove(u16),
}

/// `bytes` with `edits` applied in order (positions wrap around the current length).
///
/// Targets use it on valid sample messages: libFuzzer starts from an empty corpus, and inputs a
/// few edits away from a valid message reach the checks behind the first few far sooner.
pub fn edited(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        match *edit {
            Edit::Set(at, byte) if !bytes.is_empty() => {
                let at = usize::from(at) % bytes.len();
                bytes[at] = byte;
            }
            Edit::Insert(at, byte) => bytes.insert(usize::from(at) % (bytes.len() + 1), byte),
            Edit::Remove(at) if !bytes.is_empty() => {
                bytes.remove(usize::from(at) % bytes.len());
            }
            Edit::Set(..) | Edit::Remove(_) => {}
        }
    }
    bytes
}

/// Element `index` (wrapping) of a non-empty list of samples.
pub fn pick<T: Clone>(samples: &[T], index: u8) -> T {
    samples[usize::from(index) % samples.len()].clone()
}

fn descriptor(id: u8) -> PublicKeyCredentialDescriptor {
    PublicKeyCredentialDescriptor {
        id: vec![id; 16],
        transports: Some(vec!["hybrid".to_owned(), "internal".to_owned()]),
    }
}

fn extensions() -> Value {
    Value::Map(vec![(Value::Text("credProtect".to_owned()), cbor::int(2))])
}

/// Encoded CTAP requests with every field used.
pub fn sample_requests() -> Vec<Vec<u8>> {
    let get_assertion = GetAssertionRequest {
        allow_list: vec![
            descriptor(1),
            PublicKeyCredentialDescriptor::new(vec![2; 32]),
        ],
        extensions: Some(extensions()),
        options: GetAssertionOptions {
            up: Some(true),
            uv: Some(false),
        },
        pin_uv_auth_param: Some(vec![3; 16]),
        pin_uv_auth_protocol: Some(2),
        ..GetAssertionRequest::new("example.com", [4; 32])
    };
    let make_credential = MakeCredentialRequest {
        exclude_list: vec![descriptor(5)],
        extensions: Some(extensions()),
        options: MakeCredentialOptions {
            rk: Some(true),
            up: None,
            uv: Some(true),
        },
        pin_uv_auth_param: Some(vec![6; 32]),
        pin_uv_auth_protocol: Some(1),
        enterprise_attestation: Some(1),
        ..MakeCredentialRequest::new(
            [7; 32],
            PublicKeyCredentialRpEntity {
                id: "example.com".to_owned(),
                name: Some("Example".to_owned()),
            },
            PublicKeyCredentialUserEntity {
                id: vec![8; 8],
                name: Some("ada".to_owned()),
                display_name: Some("Ada".to_owned()),
            },
            vec![
                PublicKeyCredentialParameters::ES256,
                PublicKeyCredentialParameters { alg: -257 },
            ],
        )
    };
    vec![
        request().encode(),
        CtapRequest::GetAssertion(get_assertion).encode(),
        CtapRequest::MakeCredential(make_credential).encode(),
    ]
}

/// A getInfo response with every field used.
pub fn sample_get_info() -> GetInfoResponse {
    GetInfoResponse {
        max_msg_size: Some(1200),
        pin_uv_auth_protocols: vec![2, 1],
        algorithms: vec![PublicKeyCredentialParameters::ES256],
        ..GetInfoResponse::hybrid_phone()
    }
}

/// Encoded CTAP responses (status byte and body) with every field used.
pub fn sample_responses() -> Vec<Vec<u8>> {
    let get_assertion = GetAssertionResponse {
        credential: Some(descriptor(9)),
        auth_data: vec![0xaa; 37],
        signature: vec![0x30, 0x44, 1, 2, 3],
        user: Some(PublicKeyCredentialUserEntity {
            id: vec![8; 8],
            name: Some("ada".to_owned()),
            display_name: None,
        }),
        number_of_credentials: Some(2),
        user_selected: Some(true),
        large_blob_key: Some(LargeBlobKey::new(vec![10; 32])),
    };
    let make_credential = MakeCredentialResponse {
        fmt: "packed".to_owned(),
        auth_data: vec![0xbb; 164],
        att_stmt: Value::Map(vec![
            (
                Value::Text("alg".to_owned()),
                Value::Integer((-7i64).into()),
            ),
            (Value::Text("sig".to_owned()), Value::Bytes(vec![0x30; 70])),
        ]),
        ep_att: Some(false),
        large_blob_key: None,
    };
    vec![
        reply().encode(),
        CtapResponse::ok(get_assertion.to_cbor()).encode(),
        CtapResponse::ok(make_credential.to_cbor()).encode(),
        CtapResponse::ok(sample_get_info().to_cbor()).encode(),
    ]
}
