//! Integration and property tests for `hybrid::cbor` and `hybrid::ctap`.
//!
//! Hex vectors are inline with a note on where each comes from. Property tests use a fixed seed
//! and no failure persistence, so every run checks the same cases.

// Helpers outside `#[test]` functions panic on purpose too; clippy's test exemption does not
// reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Ordering;

use ciborium::value::Integer;
use hybrid::cbor::{self, CborError, MAX_DEPTH, MAX_SIZE, Strictness, Value};
use hybrid::ctap::{
    CtapCommand, CtapError, CtapRequest, CtapResponse, CtapStatus, GetAssertionOptions,
    GetAssertionRequest, GetAssertionResponse, GetInfoResponse, LargeBlobKey,
    MakeCredentialOptions, MakeCredentialRequest, MakeCredentialResponse,
    PublicKeyCredentialDescriptor, PublicKeyCredentialParameters, PublicKeyCredentialRpEntity,
    PublicKeyCredentialUserEntity,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use Strictness::{Canonical, Lenient};

/// Hex with optional whitespace to bytes.
fn h(s: &str) -> Vec<u8> {
    let compact: String = s.split_whitespace().collect();
    hex::decode(compact).unwrap()
}

fn neg(n: u64) -> Value {
    Value::Integer(Integer::try_from(-1 - i128::from(n)).unwrap())
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x7e7_4e5),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// CBOR vectors

/// A `FIDO:/` URL map as Chromium encodes it (the URL CBOR vector of the brief; hybrid-protocol
/// §2.1): {0: pubkey33, 1: secret16, 2: 2, 3: time, 4: true, 5: "ga"}.
const URL_MAP: &str = "a600582102cc1b3edbf8bbfc17638d4baa94ad0f27e3f972b83f5e2ed793c6a328cae23f4801503e03f6c5f824f55c3827155a8ed4fa240202031a654b7b9904f505626761";
/// {1: secret, 0: pubkey}: keys out of order.
const UNSORTED_URL_MAP: &str = "a201507768bdb1e9cb710ad287dc7a448455ba00582102a2a94fa311b2c5400f616c363c88eabb2878c880c76c12dee2c8a05a550eb31f";
/// {0: pubkey, 1: secret} with key 1 written as `18 01`.
const NON_MINIMAL_URL_MAP: &str = "a200582102a2a94fa311b2c5400f616c363c88eabb2878c880c76c12dee2c8a05a550eb31f1801507768bdb1e9cb710ad287dc7a448455ba";

#[test]
fn url_map_decodes_canonically_and_re_encodes_byte_identical() {
    let bytes = h(URL_MAP);
    let value = cbor::decode(&bytes, Canonical).unwrap();
    let Value::Map(entries) = &value else {
        panic!("not a map: {value:?}");
    };
    assert_eq!(entries.len(), 6);
    assert!(matches!(cbor::map_get(entries, 0), Some(Value::Bytes(b)) if b.len() == 33));
    assert!(matches!(cbor::map_get(entries, 1), Some(Value::Bytes(b)) if b.len() == 16));
    assert_eq!(cbor::map_get(entries, 2).and_then(cbor::uint), Some(2));
    assert_eq!(
        cbor::map_get(entries, 3).and_then(cbor::uint),
        Some(0x654b_7b99)
    );
    assert_eq!(cbor::map_get(entries, 4), Some(&Value::Bool(true)));
    assert_eq!(cbor::map_get(entries, 5), Some(&text("ga")));
    assert_eq!(hex::encode(cbor::encode(&value)), URL_MAP);
}

#[test]
fn unsorted_url_map_fails_canonical_but_passes_lenient() {
    let bytes = h(UNSORTED_URL_MAP);
    assert_eq!(
        cbor::decode(&bytes, Canonical),
        Err(CborError::UnsortedKeys)
    );
    let value = cbor::decode(&bytes, Lenient).unwrap();
    // Re-encoding sorts: the same two entries with key 0 first.
    let sorted = "a200582102a2a94fa311b2c5400f616c363c88eabb2878c880c76c12dee2c8a05a550eb31f01507768bdb1e9cb710ad287dc7a448455ba";
    assert_eq!(hex::encode(cbor::encode(&value)), sorted);
}

#[test]
fn non_minimal_key_fails_canonical_but_passes_lenient() {
    let bytes = h(NON_MINIMAL_URL_MAP);
    assert_eq!(
        cbor::decode(&bytes, Canonical),
        Err(CborError::NonMinimalHead)
    );
    let Value::Map(entries) = cbor::decode(&bytes, Lenient).unwrap() else {
        panic!("not a map");
    };
    assert_eq!(entries[1].0, cbor::int(1));
}

#[test]
fn trailing_byte_fails_decode_but_not_decode_prefix() {
    let mut bytes = h(URL_MAP);
    bytes.push(0x00);
    assert_eq!(
        cbor::decode(&bytes, Canonical),
        Err(CborError::TrailingBytes)
    );
    assert_eq!(cbor::decode(&bytes, Lenient), Err(CborError::TrailingBytes));
    let (value, consumed) = cbor::decode_prefix(&bytes, Canonical).unwrap();
    assert_eq!(consumed, bytes.len() - 1);
    assert_eq!(value, cbor::decode(&h(URL_MAP), Canonical).unwrap());
}

#[test]
fn mixed_key_types_sort_by_major_type_then_length() {
    // {0: 0, 1000: 0, -1: 0, -1000: 0, "a": 0, "bb": 0} in Chromium's order.
    let bytes = h("a6 00 00 1903e8 00 20 00 3903e7 00 6161 00 626262 00");
    let value = cbor::decode(&bytes, Canonical).unwrap();
    assert_eq!(cbor::encode(&value), bytes);
    // RFC 7049 length-first order would put "a" (2 bytes) before 1000 (3 bytes); we must not.
    let length_first = h("a2 6161 00 1903e8 00");
    assert_eq!(
        cbor::decode(&length_first, Canonical),
        Err(CborError::UnsortedKeys)
    );
}

#[test]
fn encode_sorts_nested_maps() {
    let value = Value::Array(vec![Value::Map(vec![
        (text("uv"), Value::Bool(true)),
        (text("rk"), Value::Bool(false)),
        (neg(0), Value::Null),
        (
            cbor::int(2),
            Value::Map(vec![
                (cbor::int(1), Value::Null),
                (cbor::int(0), Value::Null),
            ]),
        ),
    ])]);
    assert_eq!(
        hex::encode(cbor::encode(&value)),
        "81a4 02a2 00f6 01f6 20f6 62726b f4 627576 f5".replace(' ', "")
    );
}

// ---------------------------------------------------------------------------------------------
// CBOR errors: every variant from a hand-made input

fn assert_both(hex: &str, expected: CborError) {
    for strictness in [Canonical, Lenient] {
        assert_eq!(
            cbor::decode(&h(hex), strictness),
            Err(expected.clone()),
            "{hex} ({strictness:?})"
        );
    }
}

#[test]
fn truncated_inputs() {
    for input in [
        "",
        "18",
        "19 01",
        "1b 00000000",
        "42 00",
        "62 61",
        "82 00",
        "a1 01",
        "a1",
    ] {
        assert_both(input, CborError::Truncated);
    }
}

#[test]
fn trailing_bytes() {
    assert_both("00 00", CborError::TrailingBytes);
    assert_both("a0 ff", CborError::TrailingBytes);
}

#[test]
fn size_limit_is_inclusive() {
    // A byte string whose encoding is exactly MAX_SIZE bytes: 0x5a, 4-byte length, content.
    let content = MAX_SIZE - 5;
    let mut bytes = vec![0x5a];
    bytes.extend_from_slice(&u32::try_from(content).unwrap().to_be_bytes());
    bytes.resize(MAX_SIZE, 0);
    assert!(matches!(cbor::decode(&bytes, Canonical), Ok(Value::Bytes(b)) if b.len() == content));
    bytes.push(0);
    assert_eq!(cbor::decode(&bytes, Canonical), Err(CborError::TooLarge));
    assert_eq!(
        cbor::decode_prefix(&bytes, Lenient),
        Err(CborError::TooLarge)
    );
}

#[test]
fn nesting_limit_matches_chromium() {
    let nested = |arrays: usize, innermost: &str| {
        let mut bytes = vec![0x81; arrays];
        bytes.extend(h(innermost));
        bytes
    };
    // MAX_DEPTH arrays around an integer: the integer is at depth MAX_DEPTH.
    assert!(cbor::decode(&nested(MAX_DEPTH, "00"), Canonical).is_ok());
    assert_eq!(
        cbor::decode(&nested(MAX_DEPTH + 1, "00"), Lenient),
        Err(CborError::TooDeep)
    );
    // An empty array at depth MAX_DEPTH has no children, so it is still accepted (17 arrays
    // in all, as in Chromium); one level deeper is not.
    assert!(cbor::decode(&nested(MAX_DEPTH, "80"), Canonical).is_ok());
    assert_eq!(
        cbor::decode(&nested(MAX_DEPTH + 1, "80"), Canonical),
        Err(CborError::TooDeep)
    );
    // Map keys and values count as one level deeper too.
    let mut maps = [0xa1, 0x00].repeat(MAX_DEPTH);
    maps.push(0x00);
    assert!(cbor::decode(&maps, Canonical).is_ok());
    let mut deeper = [0xa1, 0x00].repeat(MAX_DEPTH + 1);
    deeper.push(0x00);
    assert_eq!(cbor::decode(&deeper, Canonical), Err(CborError::TooDeep));
}

#[test]
fn indefinite_lengths() {
    for input in ["5f 41 00 ff", "7f ff", "9f ff", "bf ff", "ff", "81 ff"] {
        assert_both(input, CborError::IndefiniteLength);
    }
}

#[test]
fn reserved_additional_information() {
    for input in [
        "1c", "1d", "1e", "3c", "5d", "7e", "9c", "bd", "dc", "fc", "fe", "1f", "3f", "df",
    ] {
        assert_both(input, CborError::ReservedInfo);
    }
}

#[test]
fn tags() {
    // Tag 0 (date string), tag 24 (embedded CBOR), tag 2 (bignum).
    for input in ["c0 60", "d8 18 41 00", "c2 41 01"] {
        assert_both(input, CborError::Tag);
    }
}

#[test]
fn floats() {
    for input in ["f9 0000", "fa 00000000", "fb 0000000000000000", "f9 7e00"] {
        assert_both(input, CborError::Float);
    }
}

#[test]
fn simple_values_other_than_false_true_null() {
    // 0..19, undefined (23), and the two-byte form.
    for input in ["e0", "f3", "f7", "f8 20", "f8 ff"] {
        assert_both(input, CborError::UnsupportedSimple);
    }
    assert_eq!(cbor::decode(&h("f4"), Canonical), Ok(Value::Bool(false)));
    assert_eq!(cbor::decode(&h("f5"), Canonical), Ok(Value::Bool(true)));
    assert_eq!(cbor::decode(&h("f6"), Canonical), Ok(Value::Null));
}

#[test]
fn invalid_utf8() {
    // A lone continuation byte, a truncated sequence, an overlong '/' and a surrogate.
    for input in ["61 80", "62 c3 28", "62 c0 af", "63 ed a0 80"] {
        assert_both(input, CborError::InvalidUtf8);
    }
    // As a map key too.
    assert_both("a1 61 ff 00", CborError::InvalidUtf8);
}

#[test]
fn non_minimal_heads_fail_canonical_only() {
    for (input, expected) in [
        ("18 17", cbor::int(23)),
        ("19 00ff", cbor::int(255)),
        ("1a 0000ffff", cbor::int(0xffff)),
        ("1b 00000000ffffffff", cbor::int(0xffff_ffff)),
        ("38 00", neg(0)),
        ("58 01 aa", Value::Bytes(vec![0xaa])),
        ("79 0001 61", text("a")),
        ("98 00", Value::Array(vec![])),
        ("ba 00000000", Value::Map(vec![])),
    ] {
        assert_eq!(
            cbor::decode(&h(input), Canonical),
            Err(CborError::NonMinimalHead),
            "{input}"
        );
        assert_eq!(cbor::decode(&h(input), Lenient), Ok(expected), "{input}");
    }
}

#[test]
fn unsorted_keys_fail_canonical_only() {
    for input in [
        "a2 02 00 01 00",         // 2 before 1
        "a2 20 00 01 00",         // negative before unsigned
        "a2 21 00 20 00",         // -2 before -1
        "a2 62 6161 00 61 62 00", // "aa" before "b" (longer first)
        "a2 61 62 00 61 61 00",   // "b" before "a"
        "a2 61 61 00 00 00",      // text before unsigned
    ] {
        assert_eq!(
            cbor::decode(&h(input), Canonical),
            Err(CborError::UnsortedKeys),
            "{input}"
        );
        assert!(cbor::decode(&h(input), Lenient).is_ok(), "{input}");
    }
}

#[test]
fn duplicate_keys_fail_in_both_modes() {
    assert_both("a2 01 00 01 00", CborError::DuplicateKey);
    assert_both("a2 61 61 00 61 61 01", CborError::DuplicateKey);
    // Lenient: not adjacent, and the same key written two ways.
    assert_eq!(
        cbor::decode(&h("a3 01 00 02 00 01 00"), Lenient),
        Err(CborError::DuplicateKey)
    );
    assert_eq!(
        cbor::decode(&h("a2 01 00 18 01 00"), Lenient),
        Err(CborError::DuplicateKey)
    );
    // Nested maps are checked too.
    assert_both("81 a2 20 00 20 00", CborError::DuplicateKey);
}

#[test]
fn map_keys_must_be_integers_or_text() {
    for input in ["a1 40 00", "a1 80 00", "a1 a0 00", "a1 f5 00", "a1 f6 00"] {
        assert_both(input, CborError::UnsupportedKeyType);
    }
}

#[test]
fn huge_lengths_fail_fast_as_truncated() {
    // A 5-byte head claiming a 2^32-1 byte string, and a 9-byte head claiming 2^60 bytes.
    assert_both("5a ffffffff", CborError::Truncated);
    assert_both("5b 1000000000000000", CborError::Truncated);
    assert_both("7b ffffffffffffffff", CborError::Truncated);
    // 2^60 array items or map entries, with one item present.
    assert_both("9b 1000000000000000 00", CborError::Truncated);
    assert_both("bb 1000000000000000 00 00", CborError::Truncated);
}

#[test]
fn full_integer_range() {
    assert_eq!(
        cbor::decode(&h("1b ffffffffffffffff"), Canonical),
        Ok(cbor::int(u64::MAX))
    );
    assert_eq!(
        cbor::decode(&h("3b ffffffffffffffff"), Canonical),
        Ok(neg(u64::MAX))
    );
    assert_eq!(cbor::decode(&h("20"), Canonical), Ok(neg(0)));
}

#[test]
fn error_messages_name_the_check() {
    assert_eq!(
        CborError::UnsortedKeys.to_string(),
        "CBOR map keys are not in canonical order"
    );
    assert_eq!(
        CborError::TooDeep.to_string(),
        "CBOR nesting is deeper than 16"
    );
}

// ---------------------------------------------------------------------------------------------
// CBOR properties

fn arb_int() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..30).prop_map(cbor::int),
        any::<u64>().prop_map(cbor::int),
        (0u64..30).prop_map(neg),
        any::<u64>().prop_map(neg),
        prop::sample::select(vec![23u64, 24, 255, 256, 65535, 65536, 1 << 32]).prop_flat_map(
            |n| prop_oneof![Just(cbor::int(n)), Just(cbor::int(n - 1)), Just(neg(n))]
        ),
    ]
}

fn arb_key() -> impl Strategy<Value = Value> {
    prop_oneof![arb_int(), ".{0,6}".prop_map(Value::Text)]
}

/// Entries sorted in canonical key order with repeated keys dropped.
fn canonical_entries(mut entries: Vec<(Value, Value)>) -> Vec<(Value, Value)> {
    entries.sort_by(|a, b| cbor::canonical_cmp(&a.0, &b.0));
    entries.dedup_by(|a, b| cbor::canonical_cmp(&a.0, &b.0) == Ordering::Equal);
    entries
}

/// Values in the CTAP2 subset, maps already in canonical order.
fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        arb_int(),
        vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        ".{0,24}".prop_map(Value::Text),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((arb_key(), inner), 0..6).prop_map(|e| Value::Map(canonical_entries(e))),
        ]
    })
}

/// A text-keyed map value, as extensions and attStmt are.
fn arb_text_map() -> impl Strategy<Value = Value> {
    vec(("[a-zA-Z]{1,10}", arb_value()), 0..4).prop_map(|entries| {
        Value::Map(canonical_entries(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Text(k), v))
                .collect(),
        ))
    })
}

/// An independent writer that puts every argument in an 8-byte head (non-minimal unless the
/// argument needs 8 bytes) and keeps map entries in their given order.
fn write_wide(value: &Value, out: &mut Vec<u8>) {
    fn head(out: &mut Vec<u8>, major: u8, argument: u64) {
        out.push((major << 5) | 27);
        out.extend_from_slice(&argument.to_be_bytes());
    }
    match value {
        Value::Integer(i) => {
            let n = i128::from(*i);
            if n >= 0 {
                head(out, 0, u64::try_from(n).unwrap());
            } else {
                head(out, 1, u64::try_from(-1 - n).unwrap());
            }
        }
        Value::Bytes(b) => {
            head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Text(t) => {
            head(out, 3, t.len() as u64);
            out.extend_from_slice(t.as_bytes());
        }
        Value::Array(items) => {
            head(out, 4, items.len() as u64);
            items.iter().for_each(|i| write_wide(i, out));
        }
        Value::Map(entries) => {
            head(out, 5, entries.len() as u64);
            for (k, v) in entries {
                write_wide(k, out);
                write_wide(v, out);
            }
        }
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Null => out.push(0xf6),
        other => panic!("not generated: {other:?}"),
    }
}

/// The canonical order computed from encodings, independently of `canonical_cmp`'s fast paths.
fn cmp_by_encoding(a: &Value, b: &Value) -> Ordering {
    let (ea, eb) = (cbor::encode(a), cbor::encode(b));
    (ea[0] >> 5, ea.len(), ea).cmp(&(eb[0] >> 5, eb.len(), eb))
}

/// What must hold for anything `decode` accepts.
fn check_accepted(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(value) = cbor::decode(bytes, Lenient) {
        // Canonical re-encoding is accepted canonically and means the same.
        let canonical = cbor::encode(&value);
        let reread = cbor::decode(&canonical, Canonical).unwrap();
        prop_assert_eq!(cbor::encode(&reread), canonical);
        // ciborium, an independent decoder, reads the same value.
        let theirs: Value = ciborium::from_reader(bytes).unwrap();
        prop_assert_eq!(theirs, value);
    }
    if let Ok(value) = cbor::decode(bytes, Canonical) {
        // The canonical form is unique: what Canonical accepts is exactly what encode writes.
        prop_assert_eq!(cbor::encode(&value), bytes);
        prop_assert_eq!(cbor::decode(bytes, Lenient).ok(), Some(value));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decode_inverts_encode(value in arb_value()) {
        let bytes = cbor::encode(&value);
        prop_assert_eq!(cbor::decode(&bytes, Canonical), Ok(value.clone()));
        prop_assert_eq!(cbor::decode(&bytes, Lenient), Ok(value));
    }

    #[test]
    fn encode_matches_ciborium_for_sorted_values(value in arb_value()) {
        // ciborium writes minimal heads and keeps map order; our maps are already sorted.
        let mut theirs = Vec::new();
        ciborium::into_writer(&value, &mut theirs).unwrap();
        prop_assert_eq!(hex::encode(cbor::encode(&value)), hex::encode(theirs));
    }

    #[test]
    fn decode_prefix_reports_the_item_length(
        value in arb_value(),
        suffix in vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = cbor::encode(&value);
        let len = bytes.len();
        bytes.extend_from_slice(&suffix);
        prop_assert_eq!(cbor::decode_prefix(&bytes, Canonical), Ok((value, len)));
    }

    #[test]
    fn encode_of_any_key_order_is_canonical(entries in vec((arb_key(), arb_value()), 0..8)) {
        // Unsorted input (duplicates removed), sorted output.
        let mut unique: Vec<(Value, Value)> = Vec::new();
        for (k, v) in entries {
            if !unique.iter().any(|(u, _)| cbor::canonical_cmp(u, &k) == Ordering::Equal) {
                unique.push((k, v));
            }
        }
        let bytes = cbor::encode(&Value::Map(unique.clone()));
        prop_assert_eq!(
            cbor::decode(&bytes, Canonical),
            Ok(Value::Map(canonical_entries(unique)))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64)) {
        check_accepted(&bytes)?;
    }

    #[test]
    fn mutated_encodings_never_panic(
        value in arb_value(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = cbor::encode(&value);
        let at = position.index(bytes.len());
        bytes[at] = byte;
        check_accepted(&bytes)?;
        bytes.truncate(cut.index(bytes.len()));
        check_accepted(&bytes)?;
    }

    #[test]
    fn wide_heads_fail_canonical_but_pass_lenient(value in arb_value()) {
        // A top-level bool/null has no head to widen, and an integer of 2^32 or more is
        // already minimal in 8 bytes.
        let widenable = match &value {
            Value::Bool(_) | Value::Null => false,
            Value::Integer(i) => {
                let n = i128::from(*i);
                (-(1 << 32)..(1 << 32)).contains(&n)
            }
            _ => true,
        };
        prop_assume!(widenable);
        let mut bytes = Vec::new();
        write_wide(&value, &mut bytes);
        prop_assert_eq!(cbor::decode(&bytes, Canonical), Err(CborError::NonMinimalHead));
        prop_assert_eq!(cbor::decode(&bytes, Lenient), Ok(value));
    }

    #[test]
    fn reversed_maps_fail_canonical_but_pass_lenient(
        entries in vec((arb_key(), arb_value()), 2..8)
    ) {
        let sorted = canonical_entries(entries);
        prop_assume!(sorted.len() >= 2);
        let reversed: Vec<(Value, Value)> = sorted.iter().rev().cloned().collect();
        let mut bytes = vec![0xa0 | u8::try_from(reversed.len()).unwrap()];
        for (k, v) in &reversed {
            bytes.extend(cbor::encode(k));
            bytes.extend(cbor::encode(v));
        }
        prop_assert_eq!(cbor::decode(&bytes, Canonical), Err(CborError::UnsortedKeys));
        let lenient = cbor::decode(&bytes, Lenient).unwrap();
        prop_assert_eq!(&lenient, &Value::Map(reversed));
        prop_assert_eq!(cbor::encode(&lenient), cbor::encode(&Value::Map(sorted)));
    }

    #[test]
    fn canonical_cmp_is_the_encoding_order(a in arb_value(), b in arb_value()) {
        prop_assert_eq!(cbor::canonical_cmp(&a, &b), cmp_by_encoding(&a, &b));
        prop_assert_eq!(cbor::canonical_cmp(&b, &a), cmp_by_encoding(&a, &b).reverse());
    }

    #[test]
    fn canonical_cmp_on_keys_is_the_encoding_order(a in arb_key(), b in arb_key()) {
        prop_assert_eq!(cbor::canonical_cmp(&a, &b), cmp_by_encoding(&a, &b));
    }
}

// ---------------------------------------------------------------------------------------------
// CTAP: pinned encodings

fn client_data_hash() -> [u8; 32] {
    core::array::from_fn(|i| u8::try_from(i).unwrap())
}

/// getAssertion for "example.com" with clientDataHash 00..1f, one allowed credential
/// h'01020304' with transports ["hybrid", "internal"], and options {"up": true, "uv": true}.
///
/// Derived by hand from CTAP 2.2 §6.2 (parameter keys) and RFC 8949 heads, keys in CTAP2
/// canonical order (integer keys ascending; text keys by length, then bytewise):
/// ```text
/// 02                                  authenticatorGetAssertion
/// a4                                  map(4): keys 1, 2, 3, 5
///   01 6b 6578616d706c652e636f6d      1: "example.com"
///   02 5820 000102…1f                 2: bstr(32)
///   03 81 a3                          3: [ map(3)
///        62 6964   44 01020304          "id": h'01020304'
///        64 74797065 6a 7075626c69632d6b6579   "type": "public-key"
///        6a 7472616e73706f727473 82   "transports": [
///           66 687962726964 68 696e7465726e616c   "hybrid", "internal" ] ]
///   05 a2 62 7570 f5 62 7576 f5       5: {"up": true, "uv": true}
/// ```
const PINNED_GET_ASSERTION: &str = "02 a4
    01 6b 6578616d706c652e636f6d
    02 5820 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
    03 81 a3 62 6964 44 01020304
             64 74797065 6a 7075626c69632d6b6579
             6a 7472616e73706f727473 82 66 687962726964 68 696e7465726e616c
    05 a2 62 7570 f5 62 7576 f5";

fn pinned_get_assertion_request() -> GetAssertionRequest {
    GetAssertionRequest {
        allow_list: vec![PublicKeyCredentialDescriptor {
            id: vec![1, 2, 3, 4],
            transports: Some(vec!["hybrid".into(), "internal".into()]),
        }],
        options: GetAssertionOptions {
            up: Some(true),
            uv: Some(true),
        },
        ..GetAssertionRequest::new("example.com", client_data_hash())
    }
}

/// makeCredential for rp {"id": "example.com", "name": "Example"}, user {"id": h'01020304',
/// "name": "alice", "displayName": "Alice"}, algorithms ES256 (-7) and RS256 (-257), options
/// {"rk": true, "uv": true}.
///
/// Derived by hand from CTAP 2.2 §6.1 and RFC 8949 (-7 is major 1 argument 6 = `26`; -257 is
/// major 1 argument 256 = `39 0100`); entity keys by length: "id" < "alg" < "name" < "type" <
/// "displayName":
/// ```text
/// 01 a5                               authenticatorMakeCredential, map(5): keys 1, 2, 3, 4, 7
///   01 5820 000102…1f
///   02 a2 62 6964 6b "example.com" 64 6e616d65 67 "Example"
///   03 a3 62 6964 44 01020304 64 6e616d65 65 "alice" 6b "displayName" 65 "Alice"
///   04 82 a2 63 616c67 26 64 74797065 6a "public-key"
///         a2 63 616c67 39 0100 64 74797065 6a "public-key"
///   07 a2 62 726b f5 62 7576 f5
/// ```
const PINNED_MAKE_CREDENTIAL: &str = "01 a5
    01 5820 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
    02 a2 62 6964 6b 6578616d706c652e636f6d 64 6e616d65 67 4578616d706c65
    03 a3 62 6964 44 01020304 64 6e616d65 65 616c696365
          6b 646973706c61794e616d65 65 416c696365
    04 82 a2 63 616c67 26 64 74797065 6a 7075626c69632d6b6579
          a2 63 616c67 39 0100 64 74797065 6a 7075626c69632d6b6579
    07 a2 62 726b f5 62 7576 f5";

fn pinned_make_credential_request() -> MakeCredentialRequest {
    MakeCredentialRequest {
        options: MakeCredentialOptions {
            rk: Some(true),
            up: None,
            uv: Some(true),
        },
        ..MakeCredentialRequest::new(
            client_data_hash(),
            PublicKeyCredentialRpEntity {
                id: "example.com".into(),
                name: Some("Example".into()),
            },
            PublicKeyCredentialUserEntity {
                id: vec![1, 2, 3, 4],
                name: Some("alice".into()),
                display_name: Some("Alice".into()),
            },
            vec![
                PublicKeyCredentialParameters::ES256,
                PublicKeyCredentialParameters { alg: -257 },
            ],
        )
    }
}

/// Chrome for Android's getInfo (hybrid-protocol §9):
/// {1: ["FIDO_2_0", "FIDO_2_1"], 2: ["prf"], 3: h'00'*16, 4: {"rk": true, "uv": true},
///  9: ["cable", "hybrid", "internal"]}.
const PINNED_HYBRID_PHONE_GET_INFO: &str = "a5
    01 82 68 4649444f5f325f30 68 4649444f5f325f31
    02 81 63 707266
    03 50 00000000000000000000000000000000
    04 a2 62 726b f5 62 7576 f5
    09 83 65 6361626c65 66 687962726964 68 696e7465726e616c";

#[test]
fn get_assertion_request_has_its_pinned_encoding() {
    let request = CtapRequest::GetAssertion(pinned_get_assertion_request());
    assert_eq!(request.command(), CtapCommand::GetAssertion);
    assert_eq!(
        hex::encode(request.encode()),
        hex::encode(h(PINNED_GET_ASSERTION))
    );
    assert_eq!(CtapRequest::decode(&h(PINNED_GET_ASSERTION)), Ok(request));
}

#[test]
fn make_credential_request_has_its_pinned_encoding() {
    let request = CtapRequest::from(pinned_make_credential_request());
    assert_eq!(request.command(), CtapCommand::MakeCredential);
    assert_eq!(
        hex::encode(request.encode()),
        hex::encode(h(PINNED_MAKE_CREDENTIAL))
    );
    assert_eq!(CtapRequest::decode(&h(PINNED_MAKE_CREDENTIAL)), Ok(request));
}

#[test]
fn hybrid_phone_get_info_has_its_pinned_encoding() {
    let info = GetInfoResponse::hybrid_phone();
    assert_eq!(
        hex::encode(info.to_cbor()),
        hex::encode(h(PINNED_HYBRID_PHONE_GET_INFO))
    );
    assert_eq!(
        GetInfoResponse::from_cbor(&h(PINNED_HYBRID_PHONE_GET_INFO)),
        Ok(info.clone())
    );
    assert!(!info.options.contains_key("clientPin"));
    assert!(!info.options.contains_key("pinUvAuthToken"));
}

#[test]
fn requests_decode_leniently_and_ignore_unknown_keys() {
    // The pinned getAssertion with key 2 before key 1, key 1 in a non-minimal head, and an
    // unknown key 0x10 holding a float-free nested value.
    let bytes = h("02 a5
        02 5820 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
        18 01 6b 6578616d706c652e636f6d
        10 82 f6 a0
        05 a2 62 7576 f5 62 7570 f5
        03 81 a4 64 74797065 6a 7075626c69632d6b6579 62 6964 44 01020304
                 64 69636f6e 60
                 6a 7472616e73706f727473 82 66 687962726964 68 696e7465726e616c");
    assert_eq!(
        CtapRequest::decode(&bytes),
        Ok(CtapRequest::GetAssertion(pinned_get_assertion_request()))
    );
}

#[test]
fn credential_lists_skip_other_types() {
    // allowList [{"type": "future-key", "id": 1}, {"id": h'01', "type": "public-key"}].
    let bytes = h(
        "a3 01 61 61 02 5820 0000000000000000000000000000000000000000000000000000000000000000
        03 82 a2 64 74797065 6a 6675747572652d6b6579 62 6964 01
              a2 62 6964 41 01 64 74797065 6a 7075626c69632d6b6579",
    );
    let request = GetAssertionRequest::from_cbor(&bytes).unwrap();
    assert_eq!(
        request.allow_list,
        vec![PublicKeyCredentialDescriptor::new(vec![1])]
    );
}

#[test]
fn unsupported_and_empty_requests() {
    assert_eq!(CtapRequest::decode(&[]), Err(CtapError::Empty));
    assert_eq!(
        CtapRequest::decode(&[0x04]),
        Err(CtapError::UnsupportedCommand(CtapCommand::GetInfo))
    );
    assert_eq!(
        CtapRequest::decode(&[0x42, 0xa0]),
        Err(CtapError::UnsupportedCommand(CtapCommand::Other(0x42)))
    );
    assert_eq!(
        CtapRequest::decode(&[0x02]),
        Err(CtapError::Cbor(CborError::Truncated))
    );
    assert_eq!(
        CtapRequest::decode(&[0x02, 0x80]),
        Err(CtapError::NotAMap {
            message: "getAssertion request"
        })
    );
}

// ---------------------------------------------------------------------------------------------
// CTAP: responses

/// A getAssertion response: status 00, then {1: {"id": h'0102', "type": "public-key"},
/// 2: authData (37 bytes: rpIdHash 00*32, flags 05 (UP, UV), signCount 00000001),
/// 3: h'3044', 4: {"id": h'75'}, 5: 1}.
const GET_ASSERTION_RESPONSE: &str = "00 a5
    01 a2 62 6964 42 0102 64 74797065 6a 7075626c69632d6b6579
    02 5825 0000000000000000000000000000000000000000000000000000000000000000 05 00000001
    03 42 3044
    04 a1 62 6964 41 75
    05 01";

#[test]
fn get_assertion_response_decodes_through_ctap_response() {
    let response = CtapResponse::decode(&h(GET_ASSERTION_RESPONSE)).unwrap();
    assert!(response.status.is_ok());
    let assertion = response.get_assertion().unwrap();
    let mut auth_data = vec![0; 32];
    auth_data.extend([0x05, 0, 0, 0, 1]);
    assert_eq!(
        assertion,
        GetAssertionResponse {
            credential: Some(PublicKeyCredentialDescriptor::new(vec![1, 2])),
            auth_data,
            signature: vec![0x30, 0x44],
            user: Some(PublicKeyCredentialUserEntity {
                id: vec![0x75],
                name: None,
                display_name: None,
            }),
            number_of_credentials: Some(1),
            user_selected: None,
            large_blob_key: None,
        }
    );
    assert_eq!(response.encode(), h(GET_ASSERTION_RESPONSE));
    assert_eq!(
        CtapResponse::ok(assertion.to_cbor()).encode(),
        h(GET_ASSERTION_RESPONSE)
    );
}

#[test]
fn error_status_is_reported_and_body_kept() {
    let response = CtapResponse::decode(&[0x27]).unwrap();
    assert_eq!(response, CtapResponse::error(CtapStatus::OperationDenied));
    assert_eq!(
        response.get_assertion(),
        Err(CtapError::Status(CtapStatus::OperationDenied))
    );
    assert_eq!(
        response.make_credential().unwrap_err().to_string(),
        "authenticator returned CTAP2_ERR_OPERATION_DENIED (0x27)"
    );
    let with_body = CtapResponse::decode(&h("2e a0")).unwrap();
    assert_eq!(with_body.status, CtapStatus::NoCredentials);
    assert_eq!(with_body.body, vec![0xa0]);
    assert_eq!(with_body.encode(), h("2e a0"));
    assert_eq!(CtapResponse::decode(&[]), Err(CtapError::Empty));
    // OK with an empty body is a CBOR error when a map is expected.
    assert_eq!(
        CtapResponse::ok(Vec::new()).get_info(),
        Err(CtapError::Cbor(CborError::Truncated))
    );
}

#[test]
fn make_credential_response_with_none_attestation() {
    // {1: "none", 2: h'00', 3: {}}
    let bytes = h("a3 01 64 6e6f6e65 02 41 00 03 a0");
    let response = MakeCredentialResponse::from_cbor(&bytes).unwrap();
    assert_eq!(response.fmt, "none");
    assert_eq!(response.att_stmt, Value::Map(vec![]));
    assert_eq!(response.to_cbor(), bytes);
}

#[test]
fn large_blob_key_is_redacted_in_debug_output() {
    let response = MakeCredentialResponse {
        fmt: "none".into(),
        auth_data: vec![],
        att_stmt: Value::Map(vec![]),
        ep_att: None,
        large_blob_key: Some(LargeBlobKey::new(vec![0xab; 32])),
    };
    let debug = format!("{response:?}");
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(!debug.contains("171, 171"), "{debug}");
    assert_ne!(
        LargeBlobKey::new(vec![1; 32]),
        LargeBlobKey::new(vec![2; 32])
    );
}

// ---------------------------------------------------------------------------------------------
// CTAP: decoding errors name the failed check

fn map_bytes(entries: Vec<(Value, Value)>) -> Vec<u8> {
    cbor::encode(&Value::Map(entries))
}

fn ga_entries() -> Vec<(Value, Value)> {
    vec![
        (cbor::int(1), text("example.com")),
        (cbor::int(2), Value::Bytes(vec![0; 32])),
    ]
}

fn with(mut entries: Vec<(Value, Value)>, key: u64, value: Value) -> Vec<(Value, Value)> {
    entries.retain(|(k, _)| cbor::uint(k) != Some(key));
    entries.push((cbor::int(key), value));
    entries
}

fn without(mut entries: Vec<(Value, Value)>, key: u64) -> Vec<(Value, Value)> {
    entries.retain(|(k, _)| cbor::uint(k) != Some(key));
    entries
}

const GA: &str = "getAssertion request";
const MC: &str = "makeCredential request";

#[test]
fn get_assertion_request_errors() {
    let decode = |entries| GetAssertionRequest::from_cbor(&map_bytes(entries));
    assert!(decode(ga_entries()).is_ok());
    let missing = decode(without(ga_entries(), 1)).unwrap_err();
    assert_eq!(
        missing,
        CtapError::MissingField {
            message: GA,
            key: 1,
            name: "rpId"
        }
    );
    assert_eq!(
        missing.to_string(),
        "getAssertion request: field 0x01 (rpId) missing"
    );
    assert_eq!(
        decode(with(ga_entries(), 1, Value::Bytes(b"example.com".to_vec()))),
        Err(CtapError::WrongType {
            message: GA,
            key: 1,
            name: "rpId"
        })
    );
    assert_eq!(
        decode(without(ga_entries(), 2)),
        Err(CtapError::MissingField {
            message: GA,
            key: 2,
            name: "clientDataHash"
        })
    );
    let short = decode(with(ga_entries(), 2, Value::Bytes(vec![0; 31]))).unwrap_err();
    assert_eq!(
        short,
        CtapError::WrongLength {
            message: GA,
            key: 2,
            name: "clientDataHash",
            expected: 32,
            actual: 31
        }
    );
    assert_eq!(
        short.to_string(),
        "getAssertion request: field 0x02 (clientDataHash) is 31 bytes, expected 32"
    );
    assert_eq!(
        decode(with(ga_entries(), 3, Value::Map(vec![]))),
        Err(CtapError::WrongType {
            message: GA,
            key: 3,
            name: "allowList"
        })
    );
    assert_eq!(
        decode(with(ga_entries(), 3, Value::Array(vec![cbor::int(1)]))),
        Err(CtapError::NotAMap {
            message: "credential descriptor"
        })
    );
    let no_id = Value::Map(vec![(text("type"), text("public-key"))]);
    let err = decode(with(ga_entries(), 3, Value::Array(vec![no_id]))).unwrap_err();
    assert_eq!(
        err,
        CtapError::MissingMember {
            message: "credential descriptor",
            member: "id"
        }
    );
    assert_eq!(
        err.to_string(),
        "credential descriptor: member \"id\" missing"
    );
    let bad_transports = Value::Map(vec![
        (text("id"), Value::Bytes(vec![1])),
        (text("type"), text("public-key")),
        (text("transports"), Value::Array(vec![cbor::int(1)])),
    ]);
    assert_eq!(
        decode(with(ga_entries(), 3, Value::Array(vec![bad_transports]))),
        Err(CtapError::WrongMemberType {
            message: "credential descriptor",
            member: "transports"
        })
    );
    assert_eq!(
        decode(with(ga_entries(), 4, Value::Array(vec![]))),
        Err(CtapError::WrongType {
            message: GA,
            key: 4,
            name: "extensions"
        })
    );
    assert_eq!(
        decode(with(
            ga_entries(),
            5,
            Value::Map(vec![(text("up"), cbor::int(1))])
        )),
        Err(CtapError::WrongMemberType {
            message: "getAssertion options",
            member: "up"
        })
    );
    assert_eq!(
        decode(with(ga_entries(), 6, text("mac"))),
        Err(CtapError::WrongType {
            message: GA,
            key: 6,
            name: "pinUvAuthParam"
        })
    );
    assert_eq!(
        decode(with(ga_entries(), 7, neg(0))),
        Err(CtapError::WrongType {
            message: GA,
            key: 7,
            name: "pinUvAuthProtocol"
        })
    );
    // Unknown options are ignored whatever their type.
    let options = Value::Map(vec![
        (text("future"), cbor::int(1)),
        (text("uv"), Value::Bool(true)),
    ]);
    assert_eq!(
        decode(with(ga_entries(), 5, options)).unwrap().options,
        GetAssertionOptions {
            up: None,
            uv: Some(true)
        }
    );
}

fn mc_entries() -> Vec<(Value, Value)> {
    let Value::Map(entries) = cbor::decode(&h(PINNED_MAKE_CREDENTIAL)[1..], Canonical).unwrap()
    else {
        panic!("not a map");
    };
    entries
}

#[test]
fn make_credential_request_errors() {
    let decode = |entries| MakeCredentialRequest::from_cbor(&map_bytes(entries));
    assert_eq!(decode(mc_entries()), Ok(pinned_make_credential_request()));
    for (key, name) in [
        (1, "clientDataHash"),
        (2, "rp"),
        (3, "user"),
        (4, "pubKeyCredParams"),
    ] {
        assert_eq!(
            decode(without(mc_entries(), key)),
            Err(CtapError::MissingField {
                message: MC,
                key,
                name
            })
        );
    }
    assert_eq!(
        decode(with(mc_entries(), 2, text("example.com"))),
        Err(CtapError::NotAMap {
            message: "rp entity"
        })
    );
    assert_eq!(
        decode(with(
            mc_entries(),
            2,
            Value::Map(vec![(text("name"), text("x"))])
        )),
        Err(CtapError::MissingMember {
            message: "rp entity",
            member: "id"
        })
    );
    assert_eq!(
        decode(with(
            mc_entries(),
            3,
            Value::Map(vec![(text("id"), text("alice"))])
        )),
        Err(CtapError::WrongMemberType {
            message: "user entity",
            member: "id"
        })
    );
    let huge_alg = Value::Map(vec![
        (text("alg"), neg(u64::MAX)),
        (text("type"), text("public-key")),
    ]);
    assert_eq!(
        decode(with(mc_entries(), 4, Value::Array(vec![huge_alg]))),
        Err(CtapError::WrongMemberType {
            message: "credential parameters",
            member: "alg"
        })
    );
    let no_type = Value::Map(vec![(text("alg"), neg(6))]);
    assert_eq!(
        decode(with(mc_entries(), 4, Value::Array(vec![no_type]))),
        Err(CtapError::MissingMember {
            message: "credential parameters",
            member: "type"
        })
    );
    // Parameters of another type are dropped; an empty list is still present.
    let other = Value::Map(vec![(text("alg"), neg(6)), (text("type"), text("x"))]);
    assert_eq!(
        decode(with(mc_entries(), 4, Value::Array(vec![other])))
            .unwrap()
            .pub_key_cred_params,
        vec![]
    );
    assert_eq!(
        decode(with(
            mc_entries(),
            7,
            Value::Map(vec![(text("rk"), Value::Null)])
        )),
        Err(CtapError::WrongMemberType {
            message: "makeCredential options",
            member: "rk"
        })
    );
    assert_eq!(
        decode(with(mc_entries(), 10, Value::Bool(true))),
        Err(CtapError::WrongType {
            message: MC,
            key: 10,
            name: "enterpriseAttestation"
        })
    );
}

#[test]
fn response_errors() {
    // getAssertion response: required authData and signature, single descriptor must be
    // "public-key".
    let ga = Value::Map(vec![
        (cbor::int(2), Value::Bytes(vec![0; 37])),
        (cbor::int(3), Value::Bytes(vec![1])),
    ]);
    assert!(GetAssertionResponse::from_value(&ga).is_ok());
    let Value::Map(entries) = ga else {
        unreachable!()
    };
    assert_eq!(
        GetAssertionResponse::from_cbor(&map_bytes(without(entries.clone(), 3))),
        Err(CtapError::MissingField {
            message: "getAssertion response",
            key: 3,
            name: "signature"
        })
    );
    let other_type = Value::Map(vec![
        (text("id"), Value::Bytes(vec![1])),
        (text("type"), text("future-key")),
    ]);
    let err = GetAssertionResponse::from_cbor(&map_bytes(with(entries.clone(), 1, other_type)))
        .unwrap_err();
    assert_eq!(
        err,
        CtapError::UnknownCredentialType {
            message: "credential descriptor",
            found: "future-key".into()
        }
    );
    assert_eq!(
        GetAssertionResponse::from_cbor(&map_bytes(with(entries.clone(), 6, cbor::int(1)))),
        Err(CtapError::WrongType {
            message: "getAssertion response",
            key: 6,
            name: "userSelected"
        })
    );
    assert_eq!(
        PublicKeyCredentialParameters::from_value(&Value::Map(vec![
            (text("alg"), neg(6)),
            (text("type"), text("future-key")),
        ])),
        Err(CtapError::UnknownCredentialType {
            message: "credential parameters",
            found: "future-key".into()
        })
    );

    // makeCredential response: attStmt must be a map.
    let mc = vec![
        (cbor::int(1), text("packed")),
        (cbor::int(2), Value::Bytes(vec![0; 37])),
        (cbor::int(3), Value::Array(vec![])),
    ];
    assert_eq!(
        MakeCredentialResponse::from_cbor(&map_bytes(mc.clone())),
        Err(CtapError::WrongType {
            message: "makeCredential response",
            key: 3,
            name: "attStmt"
        })
    );
    assert_eq!(
        MakeCredentialResponse::from_cbor(&map_bytes(without(mc, 1))),
        Err(CtapError::MissingField {
            message: "makeCredential response",
            key: 1,
            name: "fmt"
        })
    );

    // getInfo: versions and aaguid required; typed lists.
    let Value::Map(info) = GetInfoResponse::hybrid_phone().to_value() else {
        unreachable!()
    };
    let decode = |entries| GetInfoResponse::from_cbor(&map_bytes(entries));
    assert_eq!(
        decode(without(info.clone(), 1)),
        Err(CtapError::MissingField {
            message: "getInfo response",
            key: 1,
            name: "versions"
        })
    );
    assert_eq!(
        decode(with(info.clone(), 1, Value::Array(vec![cbor::int(2)]))),
        Err(CtapError::WrongType {
            message: "getInfo response",
            key: 1,
            name: "versions"
        })
    );
    assert_eq!(
        decode(with(info.clone(), 3, Value::Bytes(vec![0; 15]))),
        Err(CtapError::WrongLength {
            message: "getInfo response",
            key: 3,
            name: "aaguid",
            expected: 16,
            actual: 15
        })
    );
    assert_eq!(
        decode(with(info.clone(), 6, Value::Array(vec![text("2")]))),
        Err(CtapError::WrongType {
            message: "getInfo response",
            key: 6,
            name: "pinUvAuthProtocols"
        })
    );
    assert_eq!(
        decode(with(info.clone(), 4, Value::Array(vec![]))),
        Err(CtapError::NotAMap {
            message: "getInfo options"
        })
    );
    // Non-boolean options and unknown keys are ignored.
    let options = Value::Map(vec![
        (text("rk"), Value::Bool(true)),
        (text("uv"), Value::Bool(true)),
        (text("future"), cbor::int(3)),
        (cbor::int(1), Value::Bool(true)),
    ]);
    let mut extra = with(info, 4, options);
    extra.push((cbor::int(0x0e), cbor::int(7)));
    assert_eq!(decode(extra), Ok(GetInfoResponse::hybrid_phone()));
    assert_eq!(
        GetInfoResponse::from_cbor(&h("80")),
        Err(CtapError::NotAMap {
            message: "getInfo response"
        })
    );
    assert_eq!(
        GetInfoResponse::from_cbor(&h("a1 01 80 00")),
        Err(CtapError::Cbor(CborError::TrailingBytes))
    );
}

// ---------------------------------------------------------------------------------------------
// CTAP: status and command bytes

#[test]
fn ctap_status_round_trips_all_256_bytes() {
    let mut names = std::collections::BTreeSet::new();
    for byte in 0..=u8::MAX {
        let status = CtapStatus::from(byte);
        assert_eq!(u8::from(status), byte);
        assert_eq!(CtapStatus::from(u8::from(status)), status);
        assert_eq!(status.is_ok(), byte == 0);
        assert!(status.to_string().ends_with(&format!("(0x{byte:02X})")));
        let named = !matches!(
            status,
            CtapStatus::Unknown(_) | CtapStatus::Extension(_) | CtapStatus::Vendor(_)
        );
        if named {
            // Named codes have distinct names.
            assert!(names.insert(status.name()), "{status}");
        }
        match byte {
            0xe0..=0xef => assert!(matches!(status, CtapStatus::Extension(b) if b == byte)),
            0xf0..=0xff => assert!(matches!(status, CtapStatus::Vendor(b) if b == byte)),
            _ => {}
        }
    }
    // CTAP 2.1/2.2 names 45 codes below 0x80, plus CTAP2_ERR_SPEC_LAST.
    assert_eq!(names.len(), 47);
    assert_eq!(CtapStatus::from(0x36).name(), "CTAP2_ERR_PUAT_REQUIRED");
    assert_eq!(
        CtapStatus::from(0x40).name(),
        "CTAP2_ERR_UNAUTHORIZED_PERMISSION"
    );
    assert_eq!(CtapStatus::from(0x7f).name(), "CTAP1_ERR_OTHER");
    assert_eq!(CtapStatus::from(0xdf).name(), "CTAP2_ERR_SPEC_LAST");
    assert!(matches!(CtapStatus::from(0x16), CtapStatus::Unknown(0x16)));
}

#[test]
fn ctap_command_round_trips_all_256_bytes() {
    for byte in 0..=u8::MAX {
        let command = CtapCommand::from(byte);
        assert_eq!(u8::from(command), byte);
        assert_eq!(
            matches!(command, CtapCommand::Other(_)),
            !matches!(byte, 0x01 | 0x02 | 0x04 | 0x06..=0x0d)
        );
    }
    assert_eq!(
        CtapCommand::GetAssertion.to_string(),
        "authenticatorGetAssertion (0x02)"
    );
    assert_eq!(CtapCommand::Other(0x02), CtapCommand::GetAssertion);
}

// ---------------------------------------------------------------------------------------------
// CTAP round-trip properties

fn arb_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .-]{0,16}"
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn arb_descriptor() -> impl Strategy<Value = PublicKeyCredentialDescriptor> {
    (arb_bytes(64), option::of(vec(arb_text(), 0..4)))
        .prop_map(|(id, transports)| PublicKeyCredentialDescriptor { id, transports })
}

fn arb_user() -> impl Strategy<Value = PublicKeyCredentialUserEntity> {
    (
        arb_bytes(64),
        option::of(arb_text()),
        option::of(arb_text()),
    )
        .prop_map(|(id, name, display_name)| PublicKeyCredentialUserEntity {
            id,
            name,
            display_name,
        })
}

fn arb_rp() -> impl Strategy<Value = PublicKeyCredentialRpEntity> {
    (arb_text(), option::of(arb_text()))
        .prop_map(|(id, name)| PublicKeyCredentialRpEntity { id, name })
}

fn arb_params() -> impl Strategy<Value = Vec<PublicKeyCredentialParameters>> {
    vec(
        any::<i64>().prop_map(|alg| PublicKeyCredentialParameters { alg }),
        0..4,
    )
}

fn arb_large_blob_key() -> impl Strategy<Value = Option<LargeBlobKey>> {
    option::of(arb_bytes(40).prop_map(LargeBlobKey::new))
}

fn arb_hash() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn arb_get_assertion_request() -> impl Strategy<Value = GetAssertionRequest> {
    (
        arb_text(),
        arb_hash(),
        vec(arb_descriptor(), 0..3),
        option::of(arb_text_map()),
        (option::of(any::<bool>()), option::of(any::<bool>())),
        option::of(arb_bytes(32)),
        option::of(any::<u64>()),
    )
        .prop_map(
            |(rp_id, client_data_hash, allow_list, extensions, (up, uv), param, protocol)| {
                GetAssertionRequest {
                    rp_id,
                    client_data_hash,
                    allow_list,
                    extensions,
                    options: GetAssertionOptions { up, uv },
                    pin_uv_auth_param: param,
                    pin_uv_auth_protocol: protocol,
                }
            },
        )
}

fn arb_make_credential_request() -> impl Strategy<Value = MakeCredentialRequest> {
    (
        arb_hash(),
        arb_rp(),
        arb_user(),
        arb_params(),
        vec(arb_descriptor(), 0..3),
        option::of(arb_text_map()),
        (
            option::of(any::<bool>()),
            option::of(any::<bool>()),
            option::of(any::<bool>()),
        ),
        option::of(arb_bytes(32)),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
    )
        .prop_map(
            |(hash, rp, user, params, exclude, extensions, (rk, up, uv), param, protocol, ep)| {
                MakeCredentialRequest {
                    client_data_hash: hash,
                    rp,
                    user,
                    pub_key_cred_params: params,
                    exclude_list: exclude,
                    extensions,
                    options: MakeCredentialOptions { rk, up, uv },
                    pin_uv_auth_param: param,
                    pin_uv_auth_protocol: protocol,
                    enterprise_attestation: ep,
                }
            },
        )
}

fn arb_get_assertion_response() -> impl Strategy<Value = GetAssertionResponse> {
    (
        option::of(arb_descriptor()),
        arb_bytes(100),
        arb_bytes(80),
        option::of(arb_user()),
        option::of(any::<u64>()),
        option::of(any::<bool>()),
        arb_large_blob_key(),
    )
        .prop_map(
            |(credential, auth_data, signature, user, count, selected, key)| GetAssertionResponse {
                credential,
                auth_data,
                signature,
                user,
                number_of_credentials: count,
                user_selected: selected,
                large_blob_key: key,
            },
        )
}

fn arb_make_credential_response() -> impl Strategy<Value = MakeCredentialResponse> {
    (
        arb_text(),
        arb_bytes(100),
        arb_text_map(),
        option::of(any::<bool>()),
        arb_large_blob_key(),
    )
        .prop_map(|(fmt, auth_data, att_stmt, ep_att, large_blob_key)| {
            MakeCredentialResponse {
                fmt,
                auth_data,
                att_stmt,
                ep_att,
                large_blob_key,
            }
        })
}

fn arb_get_info() -> impl Strategy<Value = GetInfoResponse> {
    (
        vec(arb_text(), 0..3),
        vec(arb_text(), 0..3),
        any::<[u8; 16]>(),
        btree_map(arb_text(), any::<bool>(), 0..4),
        option::of(any::<u64>()),
        vec(any::<u64>(), 0..3),
        vec(arb_text(), 0..3),
        arb_params(),
    )
        .prop_map(
            |(versions, extensions, aaguid, options, max, protocols, transports, algorithms)| {
                GetInfoResponse {
                    versions,
                    extensions,
                    aaguid,
                    options,
                    max_msg_size: max,
                    pin_uv_auth_protocols: protocols,
                    transports,
                    algorithms,
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn get_assertion_request_round_trips(request in arb_get_assertion_request()) {
        let bytes = request.to_cbor();
        prop_assert!(cbor::decode(&bytes, Canonical).is_ok());
        prop_assert_eq!(GetAssertionRequest::from_cbor(&bytes), Ok(request.clone()));
        let framed = CtapRequest::GetAssertion(request);
        prop_assert_eq!(framed.encode()[0], 0x02);
        prop_assert_eq!(CtapRequest::decode(&framed.encode()), Ok(framed));
    }

    #[test]
    fn make_credential_request_round_trips(request in arb_make_credential_request()) {
        let bytes = request.to_cbor();
        prop_assert!(cbor::decode(&bytes, Canonical).is_ok());
        prop_assert_eq!(MakeCredentialRequest::from_cbor(&bytes), Ok(request.clone()));
        let framed = CtapRequest::MakeCredential(request);
        prop_assert_eq!(framed.encode()[0], 0x01);
        prop_assert_eq!(CtapRequest::decode(&framed.encode()), Ok(framed));
    }

    #[test]
    fn get_assertion_response_round_trips(response in arb_get_assertion_response()) {
        let bytes = response.to_cbor();
        prop_assert!(cbor::decode(&bytes, Canonical).is_ok());
        let framed = CtapResponse::decode(&CtapResponse::ok(bytes).encode()).unwrap();
        prop_assert_eq!(framed.get_assertion(), Ok(response));
    }

    #[test]
    fn make_credential_response_round_trips(response in arb_make_credential_response()) {
        let bytes = response.to_cbor();
        prop_assert!(cbor::decode(&bytes, Canonical).is_ok());
        let framed = CtapResponse::decode(&CtapResponse::ok(bytes).encode()).unwrap();
        prop_assert_eq!(framed.make_credential(), Ok(response));
    }

    #[test]
    fn get_info_round_trips(info in arb_get_info()) {
        let bytes = info.to_cbor();
        prop_assert!(cbor::decode(&bytes, Canonical).is_ok());
        prop_assert_eq!(GetInfoResponse::from_cbor(&bytes), Ok(info));
    }

    #[test]
    fn error_responses_round_trip(status in any::<u8>(), body in arb_bytes(8)) {
        let bytes: Vec<u8> = std::iter::once(status).chain(body.iter().copied()).collect();
        let response = CtapResponse::decode(&bytes).unwrap();
        prop_assert_eq!(u8::from(response.status), status);
        prop_assert_eq!(&response.body, &body);
        prop_assert_eq!(response.encode(), bytes);
        if status != 0 {
            prop_assert_eq!(
                response.get_assertion(),
                Err(CtapError::Status(CtapStatus::from(status)))
            );
        }
    }

    #[test]
    fn ctap_decoders_never_panic(bytes in vec(any::<u8>(), 0..96)) {
        let _ = CtapRequest::decode(&bytes);
        let _ = GetAssertionResponse::from_cbor(&bytes);
        let _ = MakeCredentialResponse::from_cbor(&bytes);
        let _ = GetInfoResponse::from_cbor(&bytes);
    }

    #[test]
    fn ctap_decoders_survive_mutated_messages(
        request in arb_make_credential_request(),
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        // Mutations of valid messages reach deep into the field checks; any outcome but a
        // panic is fine, and a success must re-encode to a fixed point (a mutated extensions
        // map may be unsorted, so compare encodings rather than values).
        let mut bytes = CtapRequest::MakeCredential(request).encode();
        let at = position.index(bytes.len());
        bytes[at] = byte;
        if let Ok(decoded) = CtapRequest::decode(&bytes) {
            let encoded = decoded.encode();
            prop_assert_eq!(CtapRequest::decode(&encoded).map(|d| d.encode()), Ok(encoded));
        }
    }
}
