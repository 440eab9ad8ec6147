//! Runs every entry of `testdata/hybrid.json` (the published and computed hybrid vectors) and
//! reports each mismatch with the expected and actual hex.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use hybrid::Secret;
use hybrid::advert::{self, AdvertPlaintext, AdvertReject};
use hybrid::crypter::{self, Construction};
use hybrid::derive;
use hybrid::digits;
use hybrid::domain::DomainId;
use hybrid::frame::{self, Frame, LinkingInfo};
use hybrid::noise::{self, HandshakeInitiator};
use hybrid::tunnel::{self, ContactId, RoutingId, TunnelId};
use hybrid::url::FidoUrl;
use p256::SecretKey;
use serde_json::Value as Json;

fn vectors() -> Json {
    let text = include_str!("../testdata/hybrid.json");
    serde_json::from_str(text).expect("vector file parses")
}

fn group<'a>(v: &'a Json, name: &str) -> &'a [Json] {
    v[name]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("group {name} missing"))
}

fn hx(entry: &Json, field: &str) -> Vec<u8> {
    let s = entry[field]
        .as_str()
        .unwrap_or_else(|| panic!("field {field} missing in {entry}"));
    hex::decode(s).unwrap_or_else(|e| panic!("field {field} is not hex: {e}"))
}

fn arr<const N: usize>(entry: &Json, field: &str) -> [u8; N] {
    hx(entry, field)
        .try_into()
        .unwrap_or_else(|v: Vec<u8>| panic!("{field}: {} bytes, want {N}", v.len()))
}

fn secret_key(entry: &Json, field: &str) -> SecretKey {
    SecretKey::from_slice(&hx(entry, field)).expect("valid test private key")
}

/// Collects mismatches so one run reports all of them.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn bytes(&mut self, what: String, expected: &[u8], actual: &[u8]) {
        if expected != actual {
            self.0.push(format!(
                "{what}\n  expected {}\n  actual   {}",
                hex::encode(expected),
                hex::encode(actual)
            ));
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: String, expected: T, actual: T) {
        if expected != actual {
            self.0.push(format!(
                "{what}\n  expected {expected:?}\n  actual   {actual:?}"
            ));
        }
    }

    fn finish(self, group: &str, count: usize) {
        assert!(count > 0, "group {group} has no vectors");
        assert!(
            self.0.is_empty(),
            "{group}: {} of {count} failed:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

#[test]
fn digits() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "digits");
    for (i, e) in entries.iter().enumerate() {
        let bytes = hx(e, "bytes_hex");
        let expected = e["digits"].as_str().expect("digits");
        r.eq(
            format!("digits[{i}] encode"),
            expected.to_owned(),
            digits::encode(&bytes),
        );
        match digits::decode(expected) {
            Ok(decoded) => r.bytes(format!("digits[{i}] decode"), &bytes, &decoded),
            Err(err) => r.0.push(format!("digits[{i}] decode failed: {err}")),
        }
    }
    r.finish("digits", entries.len());
}

#[test]
fn digits_invalid() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "digits_invalid");
    for (i, e) in entries.iter().enumerate() {
        let input = e["digits"].as_str().expect("digits");
        let want = e["error"].as_str().expect("error");
        let got = digits::decode(input).map_err(|err| err.code());
        r.eq(
            format!("digits_invalid[{i}] {input:?}"),
            Err(want),
            got.map(|_| ()),
        );
    }
    r.finish("digits_invalid", entries.len());
}

#[test]
fn hkdf() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "hkdf");
    for (i, e) in entries.iter().enumerate() {
        let secret = hx(e, "secret_hex");
        let salt = hx(e, "salt_hex");
        let purpose = u32::try_from(e["purpose"].as_u64().expect("purpose")).expect("u32");
        let len = usize::try_from(e["out_len"].as_u64().expect("out_len")).expect("usize");
        // Shorter outputs are prefixes of longer ones: derive the longest and cut.
        let out: [u8; 64] = derive::derive_raw(&secret, &salt, purpose);
        r.bytes(
            format!("hkdf[{i}] purpose {purpose}"),
            &hx(e, "out_hex"),
            &out[..len],
        );
    }
    r.finish("hkdf", entries.len());
}

#[test]
fn advert() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "advert");
    for (i, e) in entries.iter().enumerate() {
        let key = Secret::new(arr::<64>(e, "eid_key_hex"));
        let plaintext = arr::<16>(e, "plaintext_hex");
        let advert_bytes = hx(e, "advert_hex");
        if e["encrypt"].as_bool() != Some(false) && advert_bytes.len() == advert::ADVERT_LEN {
            r.bytes(
                format!("advert[{i}] encrypt"),
                &advert_bytes,
                &advert::encrypt(&key, &plaintext),
            );
        }
        match e["reject"].as_str() {
            Some(reason) => {
                let got = advert::decrypt_qr(&key, &advert_bytes)
                    .map(|_| ())
                    .map_err(|e| e.code());
                r.eq(format!("advert[{i}] reject"), Err(reason), got);
            }
            // State-assisted adverts carry random plaintexts: only the raw block is checked.
            None if e.get("nonce_hex").is_none() => match advert::decrypt(&key, &advert_bytes) {
                Ok(block) => r.bytes(
                    format!("advert[{i}] state-assisted plaintext"),
                    &plaintext,
                    &block,
                ),
                Err(err) => r.0.push(format!("advert[{i}] decrypt failed: {err}")),
            },
            None => match advert::decrypt_qr(&key, &advert_bytes) {
                Ok((parsed, block)) => {
                    r.bytes(format!("advert[{i}] plaintext"), &plaintext, &block);
                    r.bytes(
                        format!("advert[{i}] nonce"),
                        &hx(e, "nonce_hex"),
                        &parsed.nonce,
                    );
                    if e.get("routing_id_hex").is_some() {
                        r.bytes(
                            format!("advert[{i}] routing id"),
                            &hx(e, "routing_id_hex"),
                            parsed.routing_id.as_bytes(),
                        );
                        let want = u16::try_from(e["domain_id"].as_u64().expect("domain_id"))
                            .expect("u16");
                        r.eq(
                            format!("advert[{i}] domain id"),
                            DomainId(want),
                            parsed.domain_id,
                        );
                        r.bytes(
                            format!("advert[{i}] re-encode"),
                            &plaintext,
                            &parsed.to_bytes(),
                        );
                    }
                }
                Err(err) => r.0.push(format!("advert[{i}] decrypt failed: {err}")),
            },
        }
    }
    r.finish("advert", entries.len());
}

#[test]
fn advert_reject_is_silent_and_ordered() {
    // A short advert is rejected before any crypto; a flipped tag before the reserved check.
    let key = Secret::new([7u8; 64]);
    assert_eq!(
        advert::decrypt_qr(&key, &[0u8; 19]).map(|_| ()),
        Err(AdvertReject::Short)
    );
    let good = AdvertPlaintext {
        nonce: [1; 10],
        routing_id: RoutingId::new([1, 2, 3]),
        domain_id: DomainId(0),
    };
    let mut bytes = advert::encrypt(&key, &good.to_bytes());
    bytes[19] ^= 1;
    assert_eq!(
        advert::decrypt_qr(&key, &bytes).map(|_| ()),
        Err(AdvertReject::Tag)
    );
}

#[test]
fn domains() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "domains");
    for (i, e) in entries.iter().enumerate() {
        let id = u16::try_from(e["id"].as_u64().expect("id")).expect("u16");
        let want = e["domain"].as_str().map(str::to_owned);
        r.eq(format!("domains[{i}] id {id}"), want, DomainId(id).domain());
    }
    r.finish("domains", entries.len());
}

#[test]
fn fido_urls() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "fido_urls");
    for (i, e) in entries.iter().enumerate() {
        let url = e["url"].as_str().expect("url");
        if let Some(want) = e["error"].as_str() {
            let got = FidoUrl::parse(url).map(|_| ()).map_err(|err| err.code());
            r.eq(format!("fido_urls[{i}] error"), Err(want), got);
            continue;
        }
        let parsed = match FidoUrl::parse(url) {
            Ok(p) => p,
            Err(err) => {
                r.0.push(format!("fido_urls[{i}] parse failed: {err}"));
                continue;
            }
        };
        r.bytes(
            format!("fido_urls[{i}] public key"),
            &hx(e, "public_key_hex"),
            &parsed.compressed_public_key(),
        );
        r.bytes(
            format!("fido_urls[{i}] secret"),
            &hx(e, "qr_secret_hex"),
            parsed.qr_secret.expose(),
        );
        r.eq(
            format!("fido_urls[{i}] domains"),
            e["tunnel_server_domains"].as_u64(),
            Some(parsed.tunnel_server_domains.unwrap_or(0)),
        );
        r.eq(
            format!("fido_urls[{i}] timestamp"),
            e["timestamp"].as_u64(),
            parsed.timestamp,
        );
        r.eq(
            format!("fido_urls[{i}] state assisted"),
            e["state_assisted"].as_bool(),
            parsed.state_assisted,
        );
        r.eq(
            format!("fido_urls[{i}] request type"),
            e["request_type"].as_str(),
            Some(parsed.request_type.as_str()),
        );
        // Entries with a private key are complete client URLs: our encoder must reproduce them.
        if let Some(private) = e["private_key_hex"].as_str() {
            let key = SecretKey::from_slice(&hex::decode(private).expect("hex")).expect("key");
            let rebuilt = FidoUrl::new(
                key.public_key(),
                parsed.qr_secret.clone(),
                parsed.request_type,
                parsed.timestamp.expect("timestamp"),
                parsed.state_assisted.expect("key 4"),
            );
            r.bytes(
                format!("fido_urls[{i}] cbor"),
                &hx(e, "cbor_hex"),
                &rebuilt.to_cbor(),
            );
            r.eq(
                format!("fido_urls[{i}] encode"),
                url.to_owned(),
                rebuilt.encode(),
            );
        }
    }
    r.finish("fido_urls", entries.len());
}

#[test]
fn tunnel_urls() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "tunnel_urls");
    for (i, e) in entries.iter().enumerate() {
        let domain = e["domain"].as_str().expect("domain");
        let want = e["url"].as_str().expect("url").to_owned();
        let got = match e["kind"].as_str().expect("kind") {
            "new" => tunnel::new_tunnel_url(domain, &TunnelId::new(arr(e, "tunnel_id_hex"))),
            "connect" => tunnel::connect_url(
                domain,
                &RoutingId::new(arr(e, "routing_id_hex")),
                &TunnelId::new(arr(e, "tunnel_id_hex")),
            ),
            "contact" => tunnel::contact_url(
                domain,
                &ContactId::new(hx(e, "contact_id_hex")).expect("contact id"),
            ),
            other => panic!("unknown kind {other}"),
        };
        r.eq(format!("tunnel_urls[{i}]"), want, got);
    }
    r.finish("tunnel_urls", entries.len());
}

#[test]
fn padding() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "padding");
    for (i, e) in entries.iter().enumerate() {
        let message = hx(e, "message_hex");
        let padded = crypter::pad(&message);
        r.eq(
            format!("padding[{i}] length"),
            e["padded_len"].as_u64(),
            Some(padded.len() as u64),
        );
        r.eq(
            format!("padding[{i}] last byte"),
            e["last_byte"].as_u64(),
            padded.last().map(|&b| u64::from(b)),
        );
        if e.get("padded_hex").is_some() {
            r.bytes(format!("padding[{i}] bytes"), &hx(e, "padded_hex"), &padded);
        }
        r.bytes(
            format!("padding[{i}] unpad"),
            &message,
            crypter::unpad(&padded).unwrap_or(&[0xde, 0xad]),
        );
    }
    r.finish("padding", entries.len());
}

#[test]
fn unpad_invalid() {
    let v = vectors();
    let entries = group(&v, "unpad_invalid");
    for (i, e) in entries.iter().enumerate() {
        let padded = hx(e, "padded_hex");
        assert!(
            crypter::unpad(&padded).is_err(),
            "unpad_invalid[{i}] {} was accepted",
            hex::encode(&padded)
        );
    }
    assert!(!entries.is_empty());
}

#[test]
fn crypter() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "crypter");
    for (i, e) in entries.iter().enumerate() {
        let key = Secret::new(arr::<32>(e, "key_hex"));
        let construction = match e["construction"].as_str().expect("construction") {
            "new" => Construction::New,
            "old" => Construction::Old,
            other => panic!("unknown construction {other}"),
        };
        let seq = u32::try_from(e["seq"].as_u64().expect("seq")).expect("u32");
        r.bytes(
            format!("crypter[{i}] nonce"),
            &hx(e, "nonce_hex"),
            &construction.nonce(seq),
        );
        r.bytes(
            format!("crypter[{i}] aad"),
            &hx(e, "aad_hex"),
            construction.aad(),
        );
        let plaintext = hx(e, "plaintext_hex");
        let padded = crypter::pad(&plaintext);
        r.bytes(
            format!("crypter[{i}] padded"),
            &hx(e, "padded_hex"),
            &padded,
        );
        let sealed = crypter::seal(&key, construction, seq, &padded).expect("seal");
        r.bytes(
            format!("crypter[{i}] ciphertext"),
            &hx(e, "ciphertext_hex"),
            &sealed,
        );
        let opened =
            crypter::open(&key, construction, seq, &hx(e, "ciphertext_hex")).expect("open");
        r.bytes(format!("crypter[{i}] open"), &padded, &opened);
    }
    r.finish("crypter", entries.len());
}

#[test]
fn padded_cbor_v0() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "padded_cbor_v0");
    for (i, e) in entries.iter().enumerate() {
        let padded = hx(e, "padded_hex");
        match frame::decode_padded_map_v0(&padded) {
            Ok(map) => {
                let encoded = hybrid::cbor::encode(&hybrid::cbor::Value::Map(map));
                r.bytes(
                    format!("padded_cbor_v0[{i}] ({})", e["form"]),
                    &hx(e, "cbor_hex"),
                    &encoded,
                );
            }
            Err(err) => r.0.push(format!("padded_cbor_v0[{i}] failed: {err}")),
        }
    }
    r.finish("padded_cbor_v0", entries.len());
}

#[test]
fn frames() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "frames");
    for (i, e) in entries.iter().enumerate() {
        let bytes = hx(e, "frame_hex");
        if e["valid"].as_bool() == Some(false) {
            r.eq(
                format!("frames[{i}] rejected"),
                true,
                Frame::decode(&bytes).is_err(),
            );
            continue;
        }
        match Frame::decode(&bytes) {
            Ok(frame) => {
                r.eq(
                    format!("frames[{i}] type"),
                    e["type"].as_u64(),
                    Some(frame.message_type() as u64),
                );
                let payload = match &frame {
                    Frame::Shutdown => Vec::new(),
                    Frame::Ctap(p) | Frame::Update(p) | Frame::Json(p) => p.clone(),
                };
                r.bytes(
                    format!("frames[{i}] payload"),
                    &hx(e, "payload_hex"),
                    &payload,
                );
                r.bytes(format!("frames[{i}] re-encode"), &bytes, &frame.encode());
            }
            Err(err) => r.0.push(format!("frames[{i}] failed: {err}")),
        }
    }
    r.finish("frames", entries.len());
}

#[test]
fn noise() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "noise");
    for (i, e) in entries.iter().enumerate() {
        let psk = Secret::new(arr::<32>(e, "psk_hex"));
        let e_init = secret_key(e, "initiator_ephemeral_private_hex");
        let e_resp = secret_key(e, "responder_ephemeral_private_hex");
        r.bytes(
            format!("noise[{i}] initiator ephemeral"),
            &hx(e, "initiator_ephemeral_public_hex"),
            &noise::uncompressed(&e_init.public_key()),
        );
        let (initiator, msg1, responded) = match e["pattern"].as_str().expect("pattern") {
            "KNpsk0" => {
                let s = secret_key(e, "initiator_static_private_hex");
                r.bytes(
                    format!("noise[{i}] initiator static"),
                    &hx(e, "initiator_static_public_hex"),
                    &noise::uncompressed(&s.public_key()),
                );
                let (initiator, msg1) = HandshakeInitiator::new_qr(&psk, &s, e_init);
                let responded = noise::respond_qr(&psk, &s.public_key(), &e_resp, &msg1);
                (initiator, msg1, responded)
            }
            "NKpsk0" => {
                let s = secret_key(e, "responder_static_private_hex");
                r.bytes(
                    format!("noise[{i}] responder static"),
                    &hx(e, "responder_static_public_hex"),
                    &noise::uncompressed(&s.public_key()),
                );
                let (initiator, msg1) =
                    HandshakeInitiator::new_state_assisted(&psk, &s.public_key(), e_init);
                let responded = noise::respond_state_assisted(&psk, &s, &e_resp, &msg1);
                (initiator, msg1, responded)
            }
            other => panic!("unknown pattern {other}"),
        };
        r.bytes(format!("noise[{i}] msg1"), &hx(e, "msg1_hex"), &msg1);
        let (msg2, responder) = responded.expect("responder accepts msg1");
        r.bytes(format!("noise[{i}] msg2"), &hx(e, "msg2_hex"), &msg2);
        let client = initiator.finish(&msg2).expect("initiator accepts msg2");
        for (side, out, send, recv) in [
            (
                "initiator",
                &client,
                "initiator_to_responder_key_hex",
                "responder_to_initiator_key_hex",
            ),
            (
                "responder",
                &responder,
                "responder_to_initiator_key_hex",
                "initiator_to_responder_key_hex",
            ),
        ] {
            r.bytes(
                format!("noise[{i}] {side} hash"),
                &hx(e, "handshake_hash_hex"),
                &out.handshake_hash,
            );
            r.bytes(
                format!("noise[{i}] {side} send key"),
                &hx(e, send),
                out.send_key.expose(),
            );
            r.bytes(
                format!("noise[{i}] {side} recv key"),
                &hx(e, recv),
                out.recv_key.expose(),
            );
        }
    }
    r.finish("noise", entries.len());
}

#[test]
fn linking_signature() {
    let v = vectors();
    let mut r = Report::default();
    let entries = group(&v, "linking_signature");
    for (i, e) in entries.iter().enumerate() {
        let phone = secret_key(e, "authenticator_identity_private_hex");
        let client = secret_key(e, "client_qr_private_hex");
        r.bytes(
            format!("linking[{i}] identity"),
            &hx(e, "authenticator_identity_public_hex"),
            &noise::uncompressed(&phone.public_key()),
        );
        let hash = arr::<32>(e, "handshake_hash_hex");
        let signature = frame::linking_signature(&phone, &client.public_key(), &hash);
        r.bytes(
            format!("linking[{i}] signature"),
            &hx(e, "signature_hex"),
            &signature,
        );
        let info = LinkingInfo::sign(
            vec![1],
            [2; 8],
            Secret::new([3; 32]),
            &phone,
            "Pixel".into(),
            &client.public_key(),
            &hash,
        );
        let parsed = LinkingInfo::from_value(&info.to_value()).expect("linking round-trips");
        r.eq(
            format!("linking[{i}] verifies"),
            Ok(()),
            parsed.verify(&client, &hash),
        );
        let mut other = hash;
        other[0] ^= 1;
        r.eq(
            format!("linking[{i}] other hash refused"),
            true,
            parsed.verify(&client, &other).is_err(),
        );
    }
    r.finish("linking_signature", entries.len());
}

#[test]
fn every_group_is_run() {
    // A new group in the vector file must get a runner here.
    let v = vectors();
    let known = [
        "source_notes",
        "digits",
        "digits_invalid",
        "hkdf",
        "advert",
        "domains",
        "fido_urls",
        "tunnel_urls",
        "padding",
        "unpad_invalid",
        "crypter",
        "padded_cbor_v0",
        "frames",
        "noise",
        "linking_signature",
    ];
    for key in v.as_object().expect("object").keys() {
        assert!(
            known.contains(&key.as_str()),
            "vector group {key} has no runner"
        );
    }
}
