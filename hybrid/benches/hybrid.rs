//! CPU cost of the client's hot paths, next to the primitives they are made of.
//!
//! Run with `cargo bench -p hybrid --bench hybrid`; figures are in `docs/benchmarks.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use hybrid::advert::{self, AdvertPlaintext};
use hybrid::authenticator::{self, Authenticator};
use hybrid::ctap::get_assertion::{GetAssertionRequest, GetAssertionResponse};
use hybrid::ctap::{CtapRequest, CtapResponse};
use hybrid::derive;
use hybrid::domain::DomainId;
use hybrid::initiator::Initiator;
use hybrid::session::InitiatorTimeouts;
use hybrid::test_util::{ScriptedHandler, SeededRng};
use hybrid::tunnel::RoutingId;
use hybrid::url::{FidoUrl, RequestType};
use hybrid::{QrSecret, Time};
use p256::SecretKey;
use p256::elliptic_curve::Generate;
use rand_core::Rng;

fn primitives(c: &mut Criterion) {
    let mut rng = SeededRng::new(1);
    let a = SecretKey::generate_from_rng(&mut rng);
    let b = SecretKey::generate_from_rng(&mut rng).public_key();
    c.bench_function("primitive/p256_base_mult (keygen)", |bench| {
        bench.iter(|| black_box(SecretKey::generate_from_rng(&mut rng).public_key()))
    });
    c.bench_function("primitive/p256_ecdh (variable-base mult)", |bench| {
        bench.iter(|| black_box(a.diffie_hellman(black_box(&b))))
    });
    let key = derive::eid_key(&QrSecret::new([3; 16]));
    let block = [0u8; 16];
    c.bench_function("primitive/aes_block+hmac (advert encrypt)", |bench| {
        bench.iter(|| black_box(advert::encrypt(&key, black_box(&block))))
    });
}

fn advert_trial_decryption(c: &mut Criterion) {
    let secret = QrSecret::new([7; 16]);
    let key = derive::eid_key(&secret);
    let ours = advert::encrypt(
        &key,
        &AdvertPlaintext {
            nonce: [1; 10],
            routing_id: RoutingId::new([1, 2, 3]),
            domain_id: DomainId(0),
        }
        .to_bytes(),
    );
    let foreign = [0x42u8; 20];
    c.bench_function("advert/trial_decrypt_match", |bench| {
        bench.iter(|| black_box(advert::decrypt_qr(&key, black_box(&ours))))
    });
    c.bench_function("advert/trial_decrypt_foreign", |bench| {
        bench.iter(|| black_box(advert::decrypt_qr(&key, black_box(&foreign))))
    });
}

fn url_build_and_encode(c: &mut Criterion) {
    let mut rng = SeededRng::new(2);
    c.bench_function("url/build_and_encode (incl. keygen)", |bench| {
        bench.iter(|| {
            let identity = SecretKey::generate_from_rng(&mut rng);
            let mut secret = [0u8; 16];
            rng.fill_bytes(&mut secret);
            let url = FidoUrl::new(
                identity.public_key(),
                QrSecret::new(secret),
                RequestType::GetAssertion,
                1_767_225_600,
                true,
            );
            black_box(url.encode())
        })
    });
    let url = FidoUrl::new(
        SecretKey::generate_from_rng(&mut rng).public_key(),
        QrSecret::new([5; 16]),
        RequestType::MakeCredential,
        1_767_225_600,
        true,
    );
    let encoded = url.encode();
    c.bench_function("url/parse", |bench| {
        bench.iter(|| black_box(FidoUrl::parse(black_box(&encoded))))
    });
}

/// The phone's messages for a client built from `seed`: everything is deterministic, so the
/// same seed gives the same client keys and the replies stay valid in every iteration.
struct Script {
    identity: SecretKey,
    secret: QrSecret,
    advert: [u8; 20],
    replies: Vec<Vec<u8>>,
}

fn client(script: &Script, request: &CtapRequest, seed: u64) -> Initiator {
    Initiator::new(
        script.identity.clone(),
        script.secret.clone(),
        request,
        InitiatorTimeouts::default(),
        Time::ZERO,
        &mut SeededRng::new(seed),
    )
}

fn script(request: &CtapRequest, seed: u64) -> Script {
    let mut rng = SeededRng::new(99);
    let identity = SecretKey::generate_from_rng(&mut rng);
    let secret = QrSecret::new([9; 16]);
    let url = FidoUrl::new(
        identity.public_key(),
        secret.clone(),
        RequestType::GetAssertion,
        0,
        true,
    );
    let reply = CtapResponse::ok(
        GetAssertionResponse {
            credential: None,
            auth_data: vec![0; 37],
            signature: vec![0; 70],
            user: None,
            number_of_credentials: None,
            user_selected: None,
            large_blob_key: None,
        }
        .to_cbor(),
    );
    let mut phone = Authenticator::new(
        url,
        ScriptedHandler::new(reply),
        None,
        Default::default(),
        &mut rng,
    );
    phone
        .handle_routing_id(Time::ZERO, RoutingId::new([1, 2, 3]), DomainId(0))
        .unwrap();
    let Some(authenticator::Event::AdvertReady(advert)) = phone.poll_event() else {
        panic!("no advert")
    };
    let script = Script {
        identity,
        secret,
        advert,
        replies: Vec::new(),
    };
    let mut c = client(&script, request, seed);
    assert!(c.handle_advert(Time::ZERO, &advert));
    c.handle_tunnel_connected(Time::ZERO).unwrap();
    phone
        .handle_tunnel_message(Time::ZERO, &c.poll_transmit().unwrap())
        .unwrap();
    let replies: Vec<Vec<u8>> = std::iter::from_fn(|| phone.poll_transmit()).collect();
    Script { replies, ..script }
}

fn initiator_handshake(c: &mut Criterion) {
    let request = CtapRequest::GetAssertion(GetAssertionRequest::new("example.com", [1; 32]));
    let seed = 5;
    let script = script(&request, seed);
    // Key generation, advert, message 1, message 2 (two ECDH), first decrypt, request encrypt.
    c.bench_function("initiator/handshake_cpu", |bench| {
        bench.iter_batched(
            || (),
            |()| {
                let mut c = client(&script, &request, seed);
                assert!(c.handle_advert(Time::ZERO, &script.advert));
                c.handle_tunnel_connected(Time::ZERO).unwrap();
                black_box(c.poll_transmit());
                c.handle_tunnel_message(Time::ZERO, &script.replies[0])
                    .unwrap();
                c.handle_tunnel_message(Time::ZERO, &script.replies[1])
                    .unwrap();
                black_box(c.poll_transmit().unwrap())
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    primitives,
    advert_trial_decryption,
    url_build_and_encode,
    initiator_handshake
);
criterion_main!(benches);
