#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests for every encode/decode pair of the protocol core except CBOR and CTAP (those
//! are in `cbor_ctap.rs`): digits, the `FIDO:/` URL, the advert, padding and the crypter, frames,
//! the post-handshake message, linking data, tunnel paths and ids, and `Time`.
//!
//! Each property runs with a fixed seed and no failure persistence, so every run checks the same
//! cases; sizes are bounded so the whole file takes a few seconds. Cases that do elliptic-curve
//! work run fewer times.

use core::time::Duration;

use hybrid::advert::{self, ADVERT_LEN, AdvertPlaintext, AdvertReject};
use hybrid::cbor::{self, Value};
use hybrid::crypter::{self, Construction, Crypter, CrypterError, PADDING_GRANULE};
use hybrid::ctap::GetInfoResponse;
use hybrid::derive::EidKey;
use hybrid::digits::{self, DigitsError};
use hybrid::domain::DomainId;
use hybrid::frame::{
    self, Frame, LinkingError, LinkingInfo, PostHandshake, Revision, UPDATE_PADDED_LEN,
};
use hybrid::tunnel::{ContactId, RoutingId, TunnelId, TunnelPath, TunnelPathError};
use hybrid::url::{FidoUrl, PREFIX, RequestType, UrlError};
use hybrid::{QrSecret, Secret, Time};
use p256::SecretKey;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x7e7_4e6),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// For properties that do elliptic-curve arithmetic in every case.
fn ec_config() -> ProptestConfig {
    ProptestConfig {
        cases: 32,
        ..config()
    }
}

/// A P-256 private key from 32 arbitrary bytes (those that are a valid scalar).
fn secret_key() -> impl Strategy<Value = SecretKey> {
    any::<[u8; 32]>().prop_filter_map("not a P-256 scalar", |b| SecretKey::from_slice(&b).ok())
}

fn request_type() -> impl Strategy<Value = RequestType> {
    prop_oneof![
        Just(RequestType::GetAssertion),
        Just(RequestType::MakeCredential)
    ]
}

fn eid_key() -> impl Strategy<Value = EidKey> {
    vec(any::<u8>(), 64).prop_map(|b| Secret::from_slice(&b).unwrap())
}

/// A domain id that names a domain: Google, Apple or a hashed id.
fn known_domain() -> impl Strategy<Value = DomainId> {
    prop_oneof![
        Just(DomainId(0)),
        Just(DomainId(1)),
        (256u16..).prop_map(DomainId)
    ]
}

fn advert_plaintext() -> impl Strategy<Value = AdvertPlaintext> {
    (any::<[u8; 10]>(), any::<[u8; 3]>(), known_domain()).prop_map(
        |(nonce, routing_id, domain_id)| AdvertPlaintext {
            nonce,
            routing_id: RoutingId::new(routing_id),
            domain_id,
        },
    )
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..200)
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        Just(Frame::Shutdown),
        payload().prop_map(Frame::Ctap),
        payload().prop_map(Frame::Update),
        payload().prop_map(Frame::Json),
    ]
}

fn tunnel_path() -> impl Strategy<Value = TunnelPath> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|t| TunnelPath::New(TunnelId::new(t))),
        (any::<[u8; 3]>(), any::<[u8; 16]>())
            .prop_map(|(r, t)| TunnelPath::Connect(RoutingId::new(r), TunnelId::new(t))),
        vec(any::<u8>(), 1..300).prop_map(|c| TunnelPath::Contact(ContactId::new(c).unwrap())),
    ]
}

fn linking_info() -> impl Strategy<Value = LinkingInfo> {
    (
        vec(any::<u8>(), 1..64),
        any::<[u8; 8]>(),
        any::<[u8; 32]>(),
        secret_key(),
        ".{0,20}",
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(contact_id, link_id, link_secret, identity, name, signature)| LinkingInfo {
                contact_id,
                link_id,
                link_secret: Secret::new(link_secret),
                identity_public_key: identity.public_key(),
                name,
                signature,
            },
        )
}

/// Feature names other than "ctap".
fn other_features() -> impl Strategy<Value = Vec<String>> {
    vec("[a-z]{1,8}".prop_filter("not ctap", |s| s != "ctap"), 0..3)
}

/// Linking data of a legacy post-handshake message (key 2), kept as received: here a map with
/// integer keys in ascending order, so it decodes to an equal value.
fn legacy_linking() -> impl Strategy<Value = Value> {
    btree_map(0u8..10, vec(any::<u8>(), 0..40), 0..4).prop_map(|map| {
        Value::Map(
            map.into_iter()
                .map(|(k, v)| (cbor::int(k.into()), Value::Bytes(v)))
                .collect(),
        )
    })
}

/// A post-handshake message: offering CTAP (with a getInfo, features listed or implied) or not
/// (no getInfo, features without "ctap").
fn post_handshake() -> impl Strategy<Value = PostHandshake> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<[u8; 16]>(),
        other_features(),
        option::of(legacy_linking()),
    )
        .prop_map(|(ctap, list_features, aaguid, others, linking)| {
            let info = GetInfoResponse {
                aaguid,
                ..GetInfoResponse::hybrid_phone()
            };
            if ctap {
                let features = list_features.then(|| [vec!["ctap".to_owned()], others].concat());
                PostHandshake {
                    get_info: Some(info.to_cbor()),
                    features,
                    linking,
                }
            } else {
                PostHandshake {
                    get_info: None,
                    features: Some(others),
                    linking,
                }
            }
        })
}

/// Revision 0 padding of a CBOR map: zeros and a 16-bit little-endian zero count, to a multiple
/// of 512 bytes.
fn pad_v0(map: &[u8]) -> Vec<u8> {
    let zeros = (map.len() + 2).next_multiple_of(512) - map.len() - 2;
    let mut out = map.to_vec();
    out.resize(map.len() + zeros, 0);
    out.extend_from_slice(&u16::try_from(zeros).unwrap().to_le_bytes());
    out
}

fn crypter_pair(construction: Construction) -> (Crypter, Crypter) {
    let (to_phone, to_client) = (Secret::new([1; 32]), Secret::new([2; 32]));
    let phone = Crypter::new(to_client.clone(), to_phone.clone(), construction);
    let client = Crypter::new_detecting(to_phone, to_client);
    (phone, client)
}

fn construction() -> impl Strategy<Value = Construction> {
    prop_oneof![Just(Construction::New), Just(Construction::Old)]
}

// ---------------------------------------------------------------------------------------------
// Digits

proptest! {
    #![proptest_config(config())]

    #[test]
    fn digits_encode_then_decode_is_identity(bytes in vec(any::<u8>(), 0..100)) {
        let encoded = digits::encode(&bytes);
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_digit()));
        prop_assert_eq!(digits::decode(&encoded), Ok(bytes));
    }

    #[test]
    fn digits_decode_of_digit_strings_is_exact_or_a_typed_error(text in "[0-9]{0,60}") {
        match digits::decode(&text) {
            Ok(bytes) => prop_assert_eq!(digits::encode(&bytes), text),
            Err(DigitsError::Length { digits }) => prop_assert_eq!(digits, text.len() % 17),
            Err(DigitsError::Range { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    #[test]
    fn digits_decode_of_any_string_does_not_panic(text in ".{0,60}") {
        if let Ok(bytes) = digits::decode(&text) {
            prop_assert_eq!(digits::encode(&bytes), text);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// FIDO:/ URL

proptest! {
    #![proptest_config(ec_config())]

    #[test]
    fn url_parse_of_encode_is_identity(
        key in secret_key(),
        secret in any::<[u8; 16]>(),
        request_type in request_type(),
        unix_time in any::<u64>(),
        state_assisted in any::<bool>(),
    ) {
        let url = FidoUrl::new(
            key.public_key(),
            QrSecret::new(secret),
            request_type,
            unix_time,
            state_assisted,
        );
        let encoded = url.encode();
        prop_assert!(encoded.starts_with(PREFIX));
        prop_assert_eq!(FidoUrl::parse(&encoded), Ok(url.clone()));
        let digits = &encoded[PREFIX.len()..];
        for prefix in ["fido:/", "Fido:/", "fIdO:/"] {
            prop_assert_eq!(FidoUrl::parse(&format!("{prefix}{digits}")), Ok(url.clone()));
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn url_parse_of_any_string_does_not_panic(text in ".{0,80}") {
        let _ = FidoUrl::parse(&text);
    }

    #[test]
    fn url_parse_of_any_digits_does_not_panic(text in "(?i:fido):/[0-9]{0,300}") {
        prop_assert_ne!(FidoUrl::parse(&text).err(), Some(UrlError::Prefix));
    }

    #[test]
    fn url_without_the_prefix_is_refused(text in "[0-9]{0,80}") {
        prop_assert_eq!(FidoUrl::parse(&text), Err(UrlError::Prefix));
    }
}

// ---------------------------------------------------------------------------------------------
// Advert

proptest! {
    #![proptest_config(config())]

    #[test]
    fn advert_decrypt_of_encrypt_is_identity(key in eid_key(), plaintext in advert_plaintext()) {
        let block = plaintext.to_bytes();
        let sealed = advert::encrypt(&key, &block);
        prop_assert_eq!(advert::decrypt_qr(&key, &sealed), Ok((plaintext, block)));
    }

    #[test]
    fn advert_with_any_bit_flipped_is_refused(
        key in eid_key(),
        plaintext in advert_plaintext(),
        bit in 0..ADVERT_LEN * 8,
    ) {
        let mut sealed = advert::encrypt(&key, &plaintext.to_bytes());
        sealed[bit / 8] ^= 1 << (bit % 8);
        prop_assert_eq!(advert::decrypt_qr(&key, &sealed), Err(AdvertReject::Tag));
    }

    #[test]
    fn advert_with_trailing_bytes_still_decodes(
        key in eid_key(),
        plaintext in advert_plaintext(),
        suffix in vec(any::<u8>(), 1..40),
    ) {
        let block = plaintext.to_bytes();
        let mut sealed = advert::encrypt(&key, &block).to_vec();
        sealed.extend_from_slice(&suffix);
        prop_assert_eq!(advert::decrypt_qr(&key, &sealed), Ok((plaintext, block)));
    }

    #[test]
    fn advert_shorter_than_twenty_bytes_is_refused(
        key in eid_key(),
        plaintext in advert_plaintext(),
        len in 0..ADVERT_LEN,
    ) {
        let sealed = advert::encrypt(&key, &plaintext.to_bytes());
        prop_assert_eq!(advert::decrypt_qr(&key, &sealed[..len]), Err(AdvertReject::Short));
    }

    #[test]
    fn advert_under_another_key_is_refused(
        key in eid_key(),
        other in eid_key(),
        plaintext in advert_plaintext(),
    ) {
        prop_assume!(key != other);
        let sealed = advert::encrypt(&key, &plaintext.to_bytes());
        prop_assert_eq!(advert::decrypt_qr(&other, &sealed), Err(AdvertReject::Tag));
    }

    #[test]
    fn advert_plaintext_from_bytes_of_to_bytes_is_identity(plaintext in advert_plaintext()) {
        prop_assert_eq!(AdvertPlaintext::from_bytes(&plaintext.to_bytes()), Ok(plaintext));
    }

    #[test]
    fn advert_plaintext_from_bytes_accepts_exactly_what_to_bytes_writes(
        block in any::<[u8; 16]>(),
    ) {
        let domain = DomainId(u16::from_le_bytes([block[14], block[15]]));
        match AdvertPlaintext::from_bytes(&block) {
            Ok(plaintext) => prop_assert_eq!(plaintext.to_bytes(), block),
            Err(AdvertReject::Reserved) => prop_assert_ne!(block[0], 0),
            Err(AdvertReject::Domain) => {
                prop_assert_eq!(block[0], 0);
                prop_assert!(!domain.is_known());
            }
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Padding and the crypter

proptest! {
    #![proptest_config(config())]

    #[test]
    fn unpad_of_pad_is_identity(message in vec(any::<u8>(), 0..200)) {
        let padded = crypter::pad(&message);
        prop_assert_eq!(crypter::unpad(&padded), Ok(&message[..]));
    }

    #[test]
    fn pad_reaches_the_smallest_multiple_of_32_above_the_length(
        message in vec(any::<u8>(), 0..200),
    ) {
        let len = crypter::pad(&message).len();
        prop_assert_eq!(len % PADDING_GRANULE, 0);
        prop_assert!(len > message.len());
        prop_assert!(len - message.len() <= PADDING_GRANULE);
    }

    #[test]
    fn unpad_of_any_bytes_keeps_the_prefix_the_count_names(bytes in vec(any::<u8>(), 0..80)) {
        match crypter::unpad(&bytes) {
            Ok(message) => {
                let count = usize::from(*bytes.last().unwrap());
                prop_assert_eq!(message, &bytes[..bytes.len() - 1 - count]);
            }
            Err(e) => {
                prop_assert_eq!(e, CrypterError::Padding);
                prop_assert!(bytes.last().is_none_or(|&c| usize::from(c) >= bytes.len()));
            }
        }
    }

    #[test]
    fn crypters_carry_a_conversation_in_either_construction(
        construction in construction(),
        first in payload(),
        rest in vec((payload(), any::<bool>()), 0..8),
    ) {
        let (mut phone, mut client) = crypter_pair(construction);
        // The phone speaks first (the post-handshake message); the client learns the layout.
        let sealed = phone.encrypt(&first).unwrap();
        prop_assert_eq!(client.decrypt(&sealed), Ok(first));
        prop_assert_eq!(client.construction(), Some(construction));
        for (message, to_phone) in rest {
            let (from, to) = if to_phone {
                (&mut client, &mut phone)
            } else {
                (&mut phone, &mut client)
            };
            let sealed = from.encrypt(&message).unwrap();
            prop_assert_eq!(to.decrypt(&sealed), Ok(message));
        }
    }

    #[test]
    fn crypter_refuses_messages_out_of_order(
        construction in construction(),
        messages in vec(payload(), 2..6),
        swap in any::<prop::sample::Index>(),
    ) {
        let (mut phone, mut client) = crypter_pair(construction);
        let sealed: Vec<Vec<u8>> = messages.iter().map(|m| phone.encrypt(m).unwrap()).collect();
        // Any message but the next one fails, and the failure consumes nothing.
        let later = 1 + swap.index(sealed.len() - 1);
        prop_assert_eq!(client.decrypt(&sealed[later]), Err(CrypterError::Decrypt));
        for (ciphertext, message) in sealed.iter().zip(&messages) {
            prop_assert_eq!(client.decrypt(ciphertext), Ok(message.clone()));
        }
        // And none can be replayed.
        prop_assert_eq!(client.decrypt(&sealed[0]), Err(CrypterError::Decrypt));
    }
}

// ---------------------------------------------------------------------------------------------
// Frames, the post-handshake message and linking data

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_decode_of_encode_is_identity(frame in frame()) {
        let encoded = frame.encode();
        prop_assert_eq!(encoded[0], frame.message_type() as u8);
        prop_assert_eq!(Frame::decode(&encoded), Ok(frame));
    }

    #[test]
    fn frame_decode_re_encodes_its_input(kind in 1u8..=3, payload in payload()) {
        let bytes = [vec![kind], payload].concat();
        prop_assert_eq!(Frame::decode(&bytes).unwrap().encode(), bytes);
    }

    #[test]
    fn post_handshake_decode_of_encode_is_identity(message in post_handshake()) {
        let encoded = message.encode();
        prop_assert_eq!(PostHandshake::decode(&encoded), Ok((message, Revision::One)));
    }

    #[test]
    fn padded_revision_0_post_handshake_decodes(message in post_handshake()) {
        let padded = pad_v0(&message.encode());
        prop_assert_eq!(PostHandshake::decode(&padded), Ok((message, Revision::Zero)));
    }
}

proptest! {
    #![proptest_config(ec_config())]

    #[test]
    fn linking_from_value_of_to_value_is_identity(linking in linking_info()) {
        prop_assert_eq!(LinkingInfo::from_value(&linking.to_value()), Ok(linking));
    }

    #[test]
    fn update_carries_linking_data_and_fills_the_frame(linking in linking_info()) {
        let update = frame::encode_update(Some(&linking));
        prop_assert_eq!(frame::decode_update(&update), Ok(Some(linking.to_value())));
        // Type byte and payload fill the target, or one byte less where a CBOR head size
        // forbids it.
        let framed = 1 + update.len();
        prop_assert!(framed == UPDATE_PADDED_LEN || framed == UPDATE_PADDED_LEN - 1);
    }

    #[test]
    fn linking_signature_verifies_only_for_its_handshake(
        phone in secret_key(),
        client in secret_key(),
        hash in any::<[u8; 32]>(),
        other_hash in any::<[u8; 32]>(),
    ) {
        let linking = LinkingInfo::sign(
            b"contact".to_vec(),
            [1; 8],
            Secret::new([2; 32]),
            &phone,
            "phone".to_owned(),
            &client.public_key(),
            &hash,
        );
        prop_assert_eq!(linking.verify(&client, &hash), Ok(()));
        prop_assume!(hash != other_hash);
        prop_assert_eq!(linking.verify(&client, &other_hash), Err(LinkingError::Signature));
    }
}

#[test]
fn update_without_linking_is_empty_and_fills_the_frame() {
    let update = frame::encode_update(None);
    assert_eq!(frame::decode_update(&update), Ok(None));
    assert_eq!(1 + update.len(), UPDATE_PADDED_LEN);
}

// ---------------------------------------------------------------------------------------------
// Tunnel paths and ids

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tunnel_path_parse_of_display_is_identity(path in tunnel_path()) {
        prop_assert_eq!(TunnelPath::parse(&path.to_string()), Ok(path));
    }

    #[test]
    fn tunnel_path_accepts_lower_case_hex(tid in any::<[u8; 16]>(), rid in any::<[u8; 3]>()) {
        for path in [
            TunnelPath::New(TunnelId::new(tid)),
            TunnelPath::Connect(RoutingId::new(rid), TunnelId::new(tid)),
        ] {
            prop_assert_eq!(TunnelPath::parse(&path.to_string().to_lowercase()), Ok(path));
        }
    }

    #[test]
    fn tunnel_path_parse_of_any_string_does_not_panic(
        text in "(/cable/(new|connect|contact)/)?.{0,60}",
    ) {
        if let Ok(path) = TunnelPath::parse(&text) {
            prop_assert!(path.to_string().eq_ignore_ascii_case(&text));
        }
    }

    #[test]
    fn tunnel_id_hex_round_trips(bytes in any::<[u8; 16]>()) {
        let id = TunnelId::new(bytes);
        let hex = id.to_hex();
        prop_assert_eq!(hex.len(), 32);
        prop_assert!(hex.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        prop_assert_eq!(TunnelId::from_hex(&hex), Ok(id));
        prop_assert_eq!(TunnelId::from_hex(&hex.to_lowercase()), Ok(id));
        let short = TunnelId::from_hex(&hex[1..]);
        let refused = matches!(short, Err(TunnelPathError::BadId { len: 16, .. }));
        prop_assert!(refused, "{:?}", short);
    }

    #[test]
    fn routing_id_hex_round_trips(bytes in any::<[u8; 3]>()) {
        let id = RoutingId::new(bytes);
        let hex = id.to_hex();
        prop_assert_eq!(hex.len(), 6);
        prop_assert!(hex.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        prop_assert_eq!(RoutingId::from_hex(&hex), Ok(id));
        prop_assert_eq!(RoutingId::from_hex(&hex.to_lowercase()), Ok(id));
        let long = format!("{hex}0");
        prop_assert!(RoutingId::from_hex(&long).is_err());
    }

    #[test]
    fn hex_ids_refuse_non_hex(text in "[0-9a-fA-F]{5}[g-zG-Z+ -]") {
        prop_assert!(RoutingId::from_hex(&text).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Time

proptest! {
    #![proptest_config(config())]

    #[test]
    fn time_saturating_add_saturates(
        ms in any::<u64>(),
        secs in any::<u64>(),
        nanos in 0u32..1_000_000_000,
    ) {
        let d = Duration::new(secs, nanos);
        let expected = u64::try_from(u128::from(ms) + d.as_millis()).unwrap_or(u64::MAX);
        prop_assert_eq!(Time::from_millis(ms).saturating_add(d).as_millis(), expected);
    }

    #[test]
    fn time_saturating_since_saturates(a in any::<u64>(), b in any::<u64>()) {
        let since = Time::from_millis(a).saturating_since(Time::from_millis(b));
        prop_assert_eq!(since, Duration::from_millis(a.saturating_sub(b)));
    }

    #[test]
    fn time_add_then_since_gives_the_milliseconds_back(start in any::<u64>(), ms in any::<u64>()) {
        let t = Time::from_millis(start);
        let later = t.saturating_add(Duration::from_millis(ms));
        prop_assert!(later >= t);
        let back = later.saturating_since(t);
        prop_assert_eq!(back, Duration::from_millis(ms.min(u64::MAX - start)));
    }
}
