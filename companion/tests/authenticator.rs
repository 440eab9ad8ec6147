#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The simulated phone's software authenticator, driven through the in-memory hybrid pair so
//! every request and reply crosses the real Noise, crypter and framing code.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use companion::authenticator::{
    AuthenticatorError, SoftAuthenticator, SoftAuthenticatorConfig, UserPolicy,
};
use companion::store::{CorruptReason, PasskeyStore, STORE_FILE, StoreError};
use hybrid::authenticator::CtapHandler;
use hybrid::cbor::{self, Strictness, Value};
use hybrid::ctap::{
    CtapRequest, CtapResponse, CtapStatus, GetAssertionRequest, GetInfoResponse,
    MakeCredentialRequest, PublicKeyCredentialDescriptor, PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
use hybrid::initiator;
use hybrid::test_util::Pair;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

const RP: &str = "example.com";
const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;

/// Lends the authenticator to a [`Pair`] for one session.
struct Lent<'a>(&'a mut SoftAuthenticator);

impl CtapHandler for Lent<'_> {
    fn get_info(&self) -> GetInfoResponse {
        self.0.get_info()
    }

    fn handle(&mut self, request: CtapRequest) -> CtapResponse {
        self.0.handle(request)
    }
}

struct Exchange {
    response: CtapResponse,
    get_info: GetInfoResponse,
}

/// One hybrid session: the client sends `request`, the phone answers with `authenticator`.
fn exchange(authenticator: &mut SoftAuthenticator, request: CtapRequest) -> Exchange {
    let mut pair = Pair::new(7, &request, Lent(authenticator), false);
    let outcome = pair.drive();
    assert_eq!(outcome.phone, Ok(()), "phone session failed");
    let get_info = outcome
        .client_events
        .into_iter()
        .find_map(|e| match e {
            initiator::Event::TunnelReady { get_info, .. } => Some(get_info),
            _ => None,
        })
        .expect("no TunnelReady event");
    let response = outcome.client.expect("client session failed");
    if response.status.is_ok() {
        // Every reply must be CTAP2 canonical CBOR, nested maps included.
        cbor::decode(&response.body, Strictness::Canonical).expect("reply is not canonical CBOR");
    }
    Exchange { response, get_info }
}

fn authenticator(dir: &std::path::Path, config: SoftAuthenticatorConfig) -> SoftAuthenticator {
    SoftAuthenticator::open(dir, config).unwrap()
}

fn user(id: u8, name: &str) -> PublicKeyCredentialUserEntity {
    PublicKeyCredentialUserEntity {
        id: vec![id; 16],
        name: Some(name.to_owned()),
        display_name: Some(format!("{name} (display)")),
    }
}

fn make_credential(user: PublicKeyCredentialUserEntity) -> MakeCredentialRequest {
    let mut request = MakeCredentialRequest::new(
        [0x11; 32],
        PublicKeyCredentialRpEntity {
            id: RP.to_owned(),
            name: Some("Example".to_owned()),
        },
        user,
        // The relying party prefers Ed25519; the phone must still pick ES256.
        vec![
            PublicKeyCredentialParameters { alg: -8 },
            PublicKeyCredentialParameters::ES256,
        ],
    );
    request.options.rk = Some(true);
    request.options.uv = Some(true);
    request
}

fn get_assertion(rp: &str, client_data_hash: [u8; 32]) -> GetAssertionRequest {
    let mut request = GetAssertionRequest::new(rp, client_data_hash);
    request.options.uv = Some(true);
    request
}

/// The parts of authenticator data the tests check.
#[derive(Debug)]
struct AuthData {
    rp_id_hash: [u8; 32],
    flags: u8,
    counter: u32,
    attested: Option<(Vec<u8>, VerifyingKey)>,
}

fn parse_auth_data(bytes: &[u8]) -> AuthData {
    assert!(bytes.len() >= 37, "authData too short");
    let rp_id_hash: [u8; 32] = bytes[..32].try_into().unwrap();
    let flags = bytes[32];
    let counter = u32::from_be_bytes(bytes[33..37].try_into().unwrap());
    let attested = (flags & FLAG_AT != 0).then(|| {
        let rest = &bytes[37..];
        assert_eq!(&rest[..16], &[0u8; 16], "AAGUID must be zero");
        let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
        let credential_id = rest[18..18 + len].to_vec();
        let key_bytes = &rest[18 + len..];
        // The COSE key must be canonical too (Chromium parses it strictly).
        let key = cbor::decode(key_bytes, Strictness::Canonical).expect("COSE key not canonical");
        let Value::Map(map) = key else {
            panic!("COSE key is not a map")
        };
        let int = |k: i64| {
            map.iter()
                .find(|(key, _)| key == &Value::Integer(k.into()))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("COSE key lacks {k}"))
        };
        assert_eq!(int(1), Value::Integer(2.into()), "kty EC2");
        assert_eq!(int(3), Value::Integer((-7).into()), "alg ES256");
        assert_eq!(int(-1), Value::Integer(1.into()), "crv P-256");
        assert_eq!(map.len(), 5, "only kty, alg, crv, x, y");
        let (Value::Bytes(x), Value::Bytes(y)) = (int(-2), int(-3)) else {
            panic!("x and y must be byte strings")
        };
        let mut sec1 = vec![4u8];
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        (credential_id, VerifyingKey::from_sec1_bytes(&sec1).unwrap())
    });
    AuthData {
        rp_id_hash,
        flags,
        counter,
        attested,
    }
}

fn rp_hash(rp: &str) -> [u8; 32] {
    Sha256::digest(rp.as_bytes()).into()
}

/// Registers `user` and returns the credential id and public key.
fn register(
    authenticator: &mut SoftAuthenticator,
    user: PublicKeyCredentialUserEntity,
) -> (Vec<u8>, VerifyingKey, AuthData) {
    let exchange = exchange(authenticator, make_credential(user).into());
    assert_eq!(exchange.response.status, CtapStatus::Ok);
    let response = exchange.response.make_credential().unwrap();
    assert_eq!(response.fmt, "none");
    assert_eq!(response.att_stmt, Value::Map(vec![]));
    let mut auth_data = parse_auth_data(&response.auth_data);
    let (id, key) = auth_data
        .attested
        .take()
        .expect("no attested credential data");
    (id, key, auth_data)
}

/// Signs in and checks the signature with `key`; returns the response's credential id, user
/// entity and authenticator data.
fn sign_in(
    authenticator: &mut SoftAuthenticator,
    request: GetAssertionRequest,
    key: &VerifyingKey,
) -> (Vec<u8>, PublicKeyCredentialUserEntity, AuthData) {
    let client_data_hash = request.client_data_hash;
    let exchange = exchange(authenticator, request.into());
    assert_eq!(exchange.response.status, CtapStatus::Ok);
    let response = exchange.response.get_assertion().unwrap();
    let mut signed = response.auth_data.clone();
    signed.extend_from_slice(&client_data_hash);
    let signature = Signature::from_der(&response.signature).expect("signature is not DER");
    key.verify(&signed, &signature)
        .expect("assertion signature does not verify");
    // The same signature over another client data hash must not verify.
    let mut other = response.auth_data.clone();
    other.extend_from_slice(&[0xee; 32]);
    assert!(key.verify(&other, &signature).is_err());
    (
        response.credential.expect("no credential").id,
        response.user.expect("no user"),
        parse_auth_data(&response.auth_data),
    )
}

#[test]
fn register_then_sign_in_usernameless_and_with_an_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut phone = authenticator(dir.path(), SoftAuthenticatorConfig::default());
    let (credential_id, key, reg) = register(&mut phone, user(1, "alice"));
    assert_eq!(reg.rp_id_hash, rp_hash(RP));
    assert_eq!(reg.flags & (FLAG_UP | FLAG_UV), FLAG_UP | FLAG_UV);
    assert_eq!(reg.counter, 0);
    assert_eq!(credential_id.len(), 16);
    drop(phone);

    // A later run, with the store reopened from disk.
    let mut phone = authenticator(dir.path(), SoftAuthenticatorConfig::default());
    let stored = phone.store().list();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].credential_id, credential_id);
    assert_eq!(stored[0].rp_id, RP);
    assert_eq!(stored[0].user_handle.as_deref(), Some(&[1u8; 16][..]));
    assert_eq!(stored[0].user_name.as_deref(), Some("alice"));
    assert_eq!(
        stored[0].user_display_name.as_deref(),
        Some("alice (display)")
    );
    assert_eq!(stored[0].counter, Some(0));

    // Usernameless: no allow list.
    let (id, user_entity, auth) = sign_in(&mut phone, get_assertion(RP, [0x22; 32]), &key);
    assert_eq!(id, credential_id);
    assert_eq!(user_entity.id, vec![1u8; 16]);
    assert_eq!(user_entity.name.as_deref(), Some("alice"));
    assert_eq!(user_entity.display_name.as_deref(), Some("alice (display)"));
    assert_eq!(auth.rp_id_hash, rp_hash(RP));
    assert_eq!(
        auth.flags & (FLAG_UP | FLAG_UV | FLAG_AT),
        FLAG_UP | FLAG_UV
    );
    assert_eq!(auth.counter, 1);

    // With an allow list naming the credential (and an unknown one first).
    let mut request = get_assertion(RP, [0x33; 32]);
    request.allow_list = vec![
        PublicKeyCredentialDescriptor::new(vec![0xab; 16]),
        PublicKeyCredentialDescriptor::new(credential_id.clone()),
    ];
    let (id, _, auth) = sign_in(&mut phone, request, &key);
    assert_eq!(id, credential_id);
    assert_eq!(auth.counter, 2);
    drop(phone);

    let reopened = PasskeyStore::open(dir.path()).unwrap();
    assert_eq!(reopened.list()[0].counter, Some(2));
}

#[test]
fn no_credentials_for_another_relying_party_or_an_unknown_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut phone = authenticator(dir.path(), SoftAuthenticatorConfig::default());
    register(&mut phone, user(1, "alice"));

    let other = exchange(&mut phone, get_assertion("other.example", [1; 32]).into());
    assert_eq!(other.response.status, CtapStatus::NoCredentials);
    assert_eq!(other.response.encode(), vec![0x2e]);

    let mut unknown = get_assertion(RP, [1; 32]);
    unknown.allow_list = vec![PublicKeyCredentialDescriptor::new(vec![0xcd; 16])];
    let unknown = exchange(&mut phone, unknown.into());
    assert_eq!(unknown.response.status, CtapStatus::NoCredentials);

    // An empty store answers a usernameless request the same way.
    let empty = tempfile::tempdir().unwrap();
    let mut fresh = authenticator(empty.path(), SoftAuthenticatorConfig::default());
    let none = exchange(&mut fresh, get_assertion(RP, [1; 32]).into());
    assert_eq!(none.response.status, CtapStatus::NoCredentials);
}

#[test]
fn zero_counter_mode_always_signs_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = SoftAuthenticatorConfig {
        signature_counter: false,
        ..SoftAuthenticatorConfig::default()
    };
    let mut phone = authenticator(dir.path(), config);
    let (credential_id, key, reg) = register(&mut phone, user(2, "bob"));
    assert_eq!(reg.counter, 0);
    for hash in [[0x44; 32], [0x55; 32]] {
        let (id, _, auth) = sign_in(&mut phone, get_assertion(RP, hash), &key);
        assert_eq!(id, credential_id);
        assert_eq!(auth.counter, 0);
        assert_eq!(auth.flags & FLAG_UV, FLAG_UV);
    }
    assert_eq!(phone.store().list()[0].counter, None);
}

#[test]
fn deny_answers_operation_denied_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let deny = SoftAuthenticatorConfig {
        policy: UserPolicy::DENY,
        ..SoftAuthenticatorConfig::default()
    };
    let mut phone = authenticator(dir.path(), deny);
    let denied = exchange(&mut phone, make_credential(user(1, "alice")).into());
    assert_eq!(denied.response.status, CtapStatus::OperationDenied);
    assert_eq!(denied.response.encode(), vec![0x27]);
    assert!(phone.store().is_empty());
    assert!(!dir.path().join(STORE_FILE).exists());

    phone.set_policy(UserPolicy::APPROVE);
    register(&mut phone, user(1, "alice"));
    phone.set_policy(UserPolicy::DENY);
    let denied = exchange(&mut phone, get_assertion(RP, [9; 32]).into());
    assert_eq!(denied.response.status, CtapStatus::OperationDenied);
    assert_eq!(phone.store().list()[0].counter, Some(0));
}

#[test]
fn get_info_looks_like_a_hybrid_phone() {
    let dir = tempfile::tempdir().unwrap();
    let mut phone = authenticator(dir.path(), SoftAuthenticatorConfig::default());
    let info = exchange(&mut phone, make_credential(user(1, "alice")).into()).get_info;
    assert_eq!(info.versions, vec!["FIDO_2_0", "FIDO_2_1"]);
    assert!(info.transports.iter().any(|t| t == "hybrid"));
    assert!(info.transports.iter().any(|t| t == "internal"));
    assert_eq!(info.options.get("rk"), Some(&true));
    assert_eq!(info.options.get("uv"), Some(&true));
    assert!(!info.options.contains_key("clientPin"));
    assert!(!info.options.contains_key("pinUvAuthToken"));
    assert!(info.pin_uv_auth_protocols.is_empty());
    assert!(info.extensions.is_empty());
    assert_eq!(info.algorithms, vec![PublicKeyCredentialParameters::ES256]);
    assert_eq!(info.aaguid, [0; 16]);
    // getInfo itself is canonical CBOR.
    cbor::decode(&info.to_cbor(), Strictness::Canonical).unwrap();
}

#[test]
fn without_user_verification_the_uv_flag_is_clear_and_uv_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = SoftAuthenticatorConfig {
        policy: UserPolicy {
            approve: true,
            user_verification: false,
        },
        ..SoftAuthenticatorConfig::default()
    };
    let mut phone = authenticator(dir.path(), config);

    let demands_uv = exchange(&mut phone, make_credential(user(1, "alice")).into());
    assert!(!demands_uv.get_info.options.contains_key("uv"));
    assert_eq!(demands_uv.response.status, CtapStatus::UnsupportedOption);

    let mut request = make_credential(user(1, "alice"));
    request.options.uv = None;
    let reply = exchange(&mut phone, request.into()).response;
    assert_eq!(reply.status, CtapStatus::Ok);
    let auth = parse_auth_data(&reply.make_credential().unwrap().auth_data);
    assert_eq!(auth.flags & (FLAG_UP | FLAG_UV), FLAG_UP);
    let key = auth.attested.unwrap().1;

    let mut request = GetAssertionRequest::new(RP, [3; 32]);
    request.options.uv = None;
    let (_, user_entity, auth) = sign_in(&mut phone, request, &key);
    assert_eq!(auth.flags & (FLAG_UP | FLAG_UV), FLAG_UP);
    // No names without user verification.
    assert_eq!(user_entity.name, None);
    assert_eq!(user_entity.display_name, None);
}

#[test]
fn excluded_credential_is_refused_and_same_account_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let mut phone = authenticator(dir.path(), SoftAuthenticatorConfig::default());
    let (first, _, _) = register(&mut phone, user(1, "alice"));

    let mut again = make_credential(user(1, "alice"));
    again.exclude_list = vec![PublicKeyCredentialDescriptor::new(first.clone())];
    let refused = exchange(&mut phone, again.into());
    assert_eq!(refused.response.status, CtapStatus::CredentialExcluded);
    assert_eq!(phone.store().len(), 1);

    // Without the exclude list, a new passkey for the same account replaces the old one.
    let (second, key, _) = register(&mut phone, user(1, "alice"));
    assert_ne!(second, first);
    let stored = phone.store().list();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].credential_id, second);
    let (id, _, _) = sign_in(&mut phone, get_assertion(RP, [4; 32]), &key);
    assert_eq!(id, second);
}

#[test]
fn usernameless_sign_in_uses_the_newest_passkey_of_the_relying_party() {
    let dir = tempfile::tempdir().unwrap();
    let clock_base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clock_ticks = Arc::clone(&ticks);
    let clock: companion::store::Clock = Arc::new(move || {
        let n = clock_ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        clock_base + Duration::from_secs(n)
    });
    let store = PasskeyStore::open_with_clock(dir.path(), clock).unwrap();
    let mut phone = SoftAuthenticator::new(store, SoftAuthenticatorConfig::default()).unwrap();
    let (_, _, _) = register(&mut phone, user(1, "alice"));
    let (bob, bob_key, _) = register(&mut phone, user(2, "bob"));
    let stored = phone.store().list();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].created_at_ms, 1_767_225_600_000);
    assert_eq!(stored[1].created_at_ms, 1_767_225_601_000);
    assert_eq!(phone.store().list_for(RP)[0].credential_id, bob);

    let (id, user_entity, _) = sign_in(&mut phone, get_assertion(RP, [5; 32]), &bob_key);
    assert_eq!(id, bob);
    assert_eq!(user_entity.id, vec![2u8; 16]);
}

#[test]
fn corrupt_store_files_are_typed_errors() {
    type Check = Box<dyn Fn(&CorruptReason) -> bool>;
    let cases: Vec<(&str, Check)> = vec![
        (
            "not json at all",
            Box::new(|r| matches!(r, CorruptReason::Json { line: 1, .. })),
        ),
        (
            r#"{"version": 1}"#,
            Box::new(|r| matches!(r, CorruptReason::Json { .. })),
        ),
        (
            r#"{"version": 2, "passkeys": []}"#,
            Box::new(|r| *r == CorruptReason::Version(2)),
        ),
        (
            r#"{"version": 1, "passkeys": [{"credential_id": "AAAA", "rp_id": "a", "private_key": "!!", "created_at_ms": 0}]}"#,
            Box::new(|r| {
                *r == CorruptReason::Base64 {
                    index: 0,
                    field: "private_key",
                }
            }),
        ),
        (
            r#"{"version": 1, "passkeys": [{"credential_id": "AAAA", "rp_id": "a", "private_key": "AAAA", "created_at_ms": 0}]}"#,
            Box::new(|r| *r == CorruptReason::CoseKey { index: 0 }),
        ),
        (
            r#"{"version": 1, "passkeys": [{"credential_id": "", "rp_id": "a", "private_key": "AAAA", "created_at_ms": 0}]}"#,
            Box::new(|r| *r == CorruptReason::CredentialId { index: 0 }),
        ),
    ];
    for (contents, check) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STORE_FILE), contents).unwrap();
        match PasskeyStore::open(dir.path()) {
            Err(StoreError::Corrupt { reason, path }) => {
                assert!(check(&reason), "{contents}: unexpected reason {reason:?}");
                assert_eq!(path, dir.path().join(STORE_FILE));
            }
            other => panic!("{contents}: expected Corrupt, got {other:?}"),
        }
        let err = SoftAuthenticator::open(dir.path(), SoftAuthenticatorConfig::default())
            .expect_err("authenticator opened a corrupt store");
        assert!(matches!(
            err,
            AuthenticatorError::Store(StoreError::Corrupt { .. })
        ));
    }

    // A duplicated record is corrupt too: take a valid store and repeat its passkey.
    let dir = tempfile::tempdir().unwrap();
    let mut phone = authenticator(dir.path(), SoftAuthenticatorConfig::default());
    register(&mut phone, user(1, "alice"));
    let path = dir.path().join(STORE_FILE);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let record = doc["passkeys"][0].clone();
    doc["passkeys"].as_array_mut().unwrap().push(record);
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    assert!(matches!(
        PasskeyStore::open(dir.path()),
        Err(StoreError::Corrupt {
            reason: CorruptReason::CredentialId { index: 1 },
            ..
        })
    ));
}

#[cfg(unix)]
#[test]
fn store_file_is_private_and_written_atomically() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("phone");
    let mut phone = authenticator(&dir, SoftAuthenticatorConfig::default());
    register(&mut phone, user(1, "alice"));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join(STORE_FILE)), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![STORE_FILE.to_owned()],
        "a temporary file was left"
    );
    // Debug output never shows key material.
    let debug = format!("{phone:?} {:?}", phone.store().list());
    let file = std::fs::read_to_string(dir.join(STORE_FILE)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&file).unwrap();
    let private_key = doc["passkeys"][0]["private_key"].as_str().unwrap();
    assert!(!debug.contains(private_key));
}

#[test]
fn malformed_requests_get_ctap_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut phone = authenticator(dir.path(), SoftAuthenticatorConfig::default());
    // Only algorithms the phone does not offer.
    let mut request = make_credential(user(1, "alice"));
    request.pub_key_cred_params = vec![PublicKeyCredentialParameters { alg: -8 }];
    let reply = exchange(&mut phone, request.into()).response;
    assert_eq!(reply.status, CtapStatus::UnsupportedAlgorithm);
    // An unregistered COSE algorithm number is ignored, not an error by itself.
    let mut request = make_credential(user(1, "alice"));
    request.pub_key_cred_params = vec![
        PublicKeyCredentialParameters { alg: -123_456 },
        PublicKeyCredentialParameters::ES256,
    ];
    assert_eq!(
        exchange(&mut phone, request.into()).response.status,
        CtapStatus::Ok
    );
    // up = false is not allowed for makeCredential.
    let mut request = make_credential(user(1, "alice"));
    request.options.up = Some(false);
    assert_eq!(
        exchange(&mut phone, request.into()).response.status,
        CtapStatus::InvalidOption
    );
    // A PIN/UV auth parameter: this phone has no PIN.
    let mut request = get_assertion(RP, [1; 32]);
    request.pin_uv_auth_param = Some(vec![0; 16]);
    request.pin_uv_auth_protocol = Some(2);
    assert_eq!(
        exchange(&mut phone, request.into()).response.status,
        CtapStatus::PinAuthInvalid
    );
}
