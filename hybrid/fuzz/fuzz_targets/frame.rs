//! `frame`: every decoder of tunnel plaintexts is total. A decoded frame re-encodes to its input
//! (shutdown drops its payload). A decoded post-handshake message re-encodes as revision 1 CBOR
//! that decodes again, to an encoding fixed point. Revision 0 padding is accepted only on
//! 256-byte multiples, and a padded map is always found. Linking data that decodes survives
//! to_value → from_value and the padded update encoding, which fills the update frame.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use hybrid::Secret;
use hybrid::cbor::{self, Strictness, Value};
use hybrid::frame::{self, Frame, LinkingInfo, PostHandshake, Revision, UPDATE_PADDED_LEN};
use hybrid::noise::uncompressed;
use hybrid_fuzz::{Edit, FuzzValue, edited, key, pick, sample_get_info};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(Vec<u8>),
    /// A CBOR value built by the fuzzer.
    Structured(FuzzValue),
    /// A CBOR value with revision 0 padding: `extra` more granules of zeros, 8- or 16-bit count.
    PaddedV0 {
        value: FuzzValue,
        wide_count: bool,
        extra: u8,
    },
    /// A valid plaintext with a few bytes changed.
    Edited {
        sample: u8,
        edits: Vec<Edit>,
    },
}

/// Valid plaintexts: a post-handshake message (revisions 1 and 0), linking data and an update
/// carrying it, a CTAP frame. Made once: signing takes a Diffie-Hellman.
static SAMPLES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let post = PostHandshake::for_ctap(&sample_get_info()).encode();
    let linking = LinkingInfo::sign(
        b"contact".to_vec(),
        [8; 8],
        Secret::new([9; 32]),
        &key(4),
        "Phone".to_owned(),
        &key(1).public_key(),
        &[5; 32],
    );
    vec![
        pad_v0(&post, true, 0),
        cbor::encode(&linking.to_value()),
        Frame::Update(frame::encode_update(Some(&linking))).encode(),
        post,
        Frame::Ctap(hybrid_fuzz::reply().encode()).encode(),
    ]
});

/// The uncompressed point of phone identity key 4.
static IDENTITY_POINT: LazyLock<Vec<u8>> =
    LazyLock::new(|| uncompressed(&key(4).public_key()).to_vec());

fn check_frame(data: &[u8]) {
    let Ok(decoded) = Frame::decode(data) else {
        return;
    };
    let encoded = decoded.encode();
    if decoded == Frame::Shutdown {
        assert_eq!(encoded, [0]);
    } else {
        assert_eq!(encoded, data);
    }
    assert_eq!(Frame::decode(&encoded), Ok(decoded));
}

fn check_post_handshake(data: &[u8]) {
    let Ok((message, _)) = PostHandshake::decode(data) else {
        return;
    };
    let encoded = message.encode();
    let (again, revision) = PostHandshake::decode(&encoded).expect("our encoding decodes");
    assert_eq!(revision, Revision::One);
    assert_eq!(again.encode(), encoded);
    assert_eq!(again.supports_ctap(), message.supports_ctap());
}

fn check_padded_v0(data: &[u8]) {
    if frame::decode_padded_map_v0(data).is_ok() {
        assert!(!data.is_empty() && data.len().is_multiple_of(256));
    }
}

/// Revision 0 padding of `map`, as old phones write it. A zero count too large for its width is
/// left out, which makes a malformed input.
fn pad_v0(map: &[u8], wide_count: bool, extra: u8) -> Vec<u8> {
    let (granule, count_len) = if wide_count { (512, 2) } else { (256, 1) };
    let unpadded = map.len() + count_len;
    let zeros = unpadded.next_multiple_of(granule) - unpadded + usize::from(extra) * granule;
    let mut out = map.to_vec();
    out.resize(map.len() + zeros, 0);
    if wide_count {
        let Ok(count) = u16::try_from(zeros) else {
            return out;
        };
        out.extend_from_slice(&count.to_le_bytes());
    } else {
        let Ok(count) = u8::try_from(zeros) else {
            return out;
        };
        out.push(count);
    }
    out
}

fn check_linking(value: &Value) {
    let _ = LinkingInfo::from_value(value);
    // Random bytes are never a P-256 point: put a real one under key 4 so the checks after it
    // are reached too.
    let mut value = value.clone();
    if let Value::Map(entries) = &mut value {
        let point = Value::Bytes(IDENTITY_POINT.clone());
        match entries.iter_mut().find(|(k, _)| cbor::uint(k) == Some(4)) {
            Some((_, v)) => *v = point,
            None => entries.push((cbor::int(4), point)),
        }
    }
    let Ok(linking) = LinkingInfo::from_value(&value) else {
        return;
    };
    assert_eq!(
        LinkingInfo::from_value(&linking.to_value()),
        Ok(linking.clone())
    );
    let update = frame::encode_update(Some(&linking));
    assert_eq!(frame::decode_update(&update), Ok(Some(linking.to_value())));
    let unpadded = cbor::encode(&Value::Map(vec![(cbor::int(1), linking.to_value())]));
    if unpadded.len() + 4 < UPDATE_PADDED_LEN {
        // Type byte and payload fill the target, or one byte less where a head size forbids it.
        assert!((UPDATE_PADDED_LEN - 1..=UPDATE_PADDED_LEN).contains(&(update.len() + 1)));
    }
}

fn check_all(data: &[u8]) {
    check_frame(data);
    check_post_handshake(data);
    check_padded_v0(data);
    let _ = frame::decode_update(data);
    if let Ok(value) = cbor::decode(data, Strictness::Lenient) {
        check_linking(&value);
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(bytes) => check_all(&bytes),
        Input::Structured(value) => check_all(&value.encode()),
        Input::PaddedV0 {
            value,
            wide_count,
            extra,
        } => {
            let map = value.encode();
            let padded = pad_v0(&map, wide_count, extra);
            if matches!(value.to_value(), Value::Map(_))
                && cbor::decode(&map, Strictness::Lenient).is_ok()
                && padded.len().is_multiple_of(256)
            {
                assert!(
                    frame::decode_padded_map_v0(&padded).is_ok(),
                    "padded map not found"
                );
            }
            check_all(&padded);
        }
        Input::Edited { sample, edits } => {
            let bytes = edited(pick(&SAMPLES, sample), &edits);
            check_all(&bytes);
            // Updates arrive framed; look inside too.
            if let Some(payload) = bytes.strip_prefix(&[2]) {
                check_all(payload);
            }
        }
    }
});
