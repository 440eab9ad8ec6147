#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The WebAuthn JSON layer: options parsing, `clientDataJSON`, the CTAP mapping, and responses
//! that an independent relying-party library (`webauthn_rp`) accepts.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use device_agent::webauthn::{
    AttestationConveyance, CeremonyType, CreationOptions, Origin, RegistrationCeremony,
    RequestOptions, ResidentKey, SignInCeremony, UserVerification, WebAuthnError, client_data_json,
};
use hybrid::cbor::{self, Value};
use hybrid::ctap::{
    GetAssertionResponse, MakeCredentialResponse, PublicKeyCredentialDescriptor,
    PublicKeyCredentialUserEntity,
};
use p256::SecretKey;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::elliptic_curve::Generate as _;
use p256::elliptic_curve::sec1::ToSec1Point as _;
use sha2::{Digest as _, Sha256};
use webauthn_rp::bin::{Decode as _, Encode as _};
use webauthn_rp::request::auth::AuthenticationVerificationOptions;
use webauthn_rp::request::register::{
    PublicKeyCredentialUserEntity as RpUser, RegistrationVerificationOptions, UserHandle64,
};
use webauthn_rp::request::{AsciiDomain, RpId};
use webauthn_rp::response::auth::error::AuthCeremonyErr;
use webauthn_rp::response::register::{CompressedPubKey, StaticState};
use webauthn_rp::{
    AuthenticatedCredential, DiscoverableAuthentication64, DiscoverableCredentialRequestOptions,
    PublicKeyCredentialCreationOptions, Registration,
};

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn origin() -> Origin {
    Origin::parse("https://example.com").unwrap()
}

// ------------------------------------------------------------------------------------------
// Parsing.

/// Creation options as SimpleWebAuthn's `generateRegistrationOptions` writes them.
const CREATION_JSON: &str = r#"{
  "challenge": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
  "rp": {"name": "Example Corp", "id": "example.com"},
  "user": {"id": "dXNlci0xMjM0", "name": "alice@example.com", "displayName": "Alice"},
  "pubKeyCredParams": [
    {"alg": -8, "type": "public-key"},
    {"alg": -7, "type": "public-key"},
    {"alg": -3, "type": "password"},
    {"alg": -257, "type": "public-key"}
  ],
  "timeout": 60000,
  "attestation": "none",
  "excludeCredentials": [
    {"id": "AQIDBA", "type": "public-key", "transports": ["hybrid", "internal"]},
    {"id": "BQYHCA", "type": "future-type"}
  ],
  "authenticatorSelection": {"residentKey": "preferred", "userVerification": "preferred", "requireResidentKey": false},
  "extensions": {"credProps": true, "largeBlob": {"support": "preferred"}},
  "hints": ["hybrid"],
  "attestationFormats": []
}"#;

/// Request options as a site with a known account sends them (padding left on an id).
const REQUEST_JSON: &str = r#"{
  "publicKey": {
    "challenge": "qNqrdXUrk5S7dCM1MAYH3qSVDXznb-6prQoGqiACR10",
    "timeout": 300000,
    "rpId": "example.com",
    "allowCredentials": [
      {"type": "public-key", "id": "AQIDBA==", "transports": ["internal", "hybrid"]},
      {"type": "public-key", "id": "CQoLDA"}
    ],
    "userVerification": "required",
    "extensions": {"appid": "https://example.com/appid.json"}
  },
  "mediation": "optional"
}"#;

#[test]
fn parses_creation_options() {
    let options = CreationOptions::from_json(CREATION_JSON).unwrap();
    assert_eq!(options.challenge, (0u8..32).collect::<Vec<_>>());
    assert_eq!(options.rp_id.as_deref(), Some("example.com"));
    assert_eq!(options.rp_name.as_deref(), Some("Example Corp"));
    assert_eq!(options.user_id, b"user-1234");
    assert_eq!(options.user_name, "alice@example.com");
    assert_eq!(options.user_display_name.as_deref(), Some("Alice"));
    assert_eq!(options.algorithms, vec![-8, -7, -257]);
    assert_eq!(options.timeout_ms, Some(60_000));
    assert_eq!(options.exclude_credentials.len(), 1);
    assert_eq!(options.exclude_credentials[0].id, vec![1, 2, 3, 4]);
    assert_eq!(options.resident_key, ResidentKey::Preferred);
    assert_eq!(options.user_verification, UserVerification::Preferred);
    assert_eq!(options.attestation, AttestationConveyance::None);

    let ceremony = RegistrationCeremony::new(&options, &origin()).unwrap();
    assert_eq!(ceremony.rp_id(), "example.com");
    assert_eq!(ceremony.user_name(), "alice@example.com");
    let request = ceremony.ctap_request();
    assert_eq!(
        request.client_data_hash,
        <[u8; 32]>::from(Sha256::digest(ceremony.client_data_json()))
    );
    assert_eq!(request.rp.id, "example.com");
    assert_eq!(request.rp.name.as_deref(), Some("Example Corp"));
    assert_eq!(request.user.id, b"user-1234");
    assert_eq!(request.user.name.as_deref(), Some("alice@example.com"));
    assert_eq!(request.user.display_name.as_deref(), Some("Alice"));
    let algs: Vec<i64> = request.pub_key_cred_params.iter().map(|p| p.alg).collect();
    assert_eq!(algs, vec![-8, -7, -257]);
    assert_eq!(request.exclude_list.len(), 1);
    assert_eq!(request.options.rk, Some(true));
    assert_eq!(request.options.uv, Some(true));
    assert_eq!(request.options.up, None);
    assert_eq!(request.extensions, None, "extensions are not forwarded");
}

#[test]
fn parses_request_options() {
    let options = RequestOptions::from_json(REQUEST_JSON).unwrap();
    assert_eq!(options.challenge.len(), 32);
    assert_eq!(options.rp_id.as_deref(), Some("example.com"));
    assert_eq!(options.timeout_ms, Some(300_000));
    assert_eq!(options.user_verification, UserVerification::Required);
    let ids: Vec<&[u8]> = options
        .allow_credentials
        .iter()
        .map(|c| c.id.as_slice())
        .collect();
    assert_eq!(ids, vec![&[1u8, 2, 3, 4][..], &[9, 10, 11, 12][..]]);

    let login = Origin::parse("https://login.example.com").unwrap();
    let ceremony = SignInCeremony::new(&options, &login).unwrap();
    let request = ceremony.ctap_request();
    assert_eq!(request.rp_id, "example.com");
    assert_eq!(request.allow_list.len(), 2);
    assert_eq!(
        request.allow_list[0].transports.as_deref(),
        Some(&["internal".to_owned(), "hybrid".to_owned()][..])
    );
    assert_eq!(request.options.uv, Some(true));
    assert_eq!(request.extensions, None);

    // Discouraged UV: no uv option; no rpId: the origin's host.
    let minimal = RequestOptions::from_json(
        r#"{"challenge":"AAAAAAAAAAAAAAAAAAAAAA","userVerification":"discouraged"}"#,
    )
    .unwrap();
    let ceremony = SignInCeremony::new(&minimal, &login).unwrap();
    assert_eq!(ceremony.rp_id(), "login.example.com");
    let request = ceremony.ctap_request();
    assert_eq!(request.options.uv, None);
    assert!(request.allow_list.is_empty());
}

#[test]
fn bad_options_name_the_field() {
    let cases: &[(&str, WebAuthnError)] = &[
        (r#"{}"#, WebAuthnError::InvalidOptions("challenge")),
        (
            r#"{"challenge":"not base64!"}"#,
            WebAuthnError::InvalidOptions("challenge"),
        ),
        (
            r#"{"challenge":""}"#,
            WebAuthnError::InvalidOptions("challenge"),
        ),
        (
            r#"{"challenge":"AAAA","allowCredentials":[{"type":"public-key","id":"%%"}]}"#,
            WebAuthnError::InvalidOptions("allowCredentials[].id"),
        ),
    ];
    for (json, expected) in cases {
        assert_eq!(
            &RequestOptions::from_json(json).unwrap_err(),
            expected,
            "{json}"
        );
    }
    assert!(matches!(
        RequestOptions::from_json("[1,2]"),
        Err(WebAuthnError::Json(_))
    ));
    assert!(matches!(
        RequestOptions::from_json(r#"{"challenge": 5}"#),
        Err(WebAuthnError::Json(_))
    ));
    let creation: &[(&str, WebAuthnError)] = &[
        (
            r#"{"challenge":"AAAA","user":{"id":"AA","name":"a"}}"#,
            WebAuthnError::InvalidOptions("rp"),
        ),
        (
            r#"{"challenge":"AAAA","rp":{"name":"x"},"user":{"name":"a"}}"#,
            WebAuthnError::InvalidOptions("user.id"),
        ),
        (
            r#"{"challenge":"AAAA","rp":{"name":"x"},"user":{"id":"","name":"a"}}"#,
            WebAuthnError::InvalidOptions("user.id"),
        ),
        (
            r#"{"rp":{"name":"x"},"user":{"id":"AA","name":"a"}}"#,
            WebAuthnError::InvalidOptions("challenge"),
        ),
        (
            r#"{"challenge":"AAAA","rp":{"name":"x"},"user":{"id":"AA","name":"a"},"pubKeyCredParams":[{"type":"x","alg":-7}]}"#,
            WebAuthnError::Unsupported("pubKeyCredParams has no public-key algorithm"),
        ),
    ];
    for (json, expected) in creation {
        assert_eq!(
            &CreationOptions::from_json(json).unwrap_err(),
            expected,
            "{json}"
        );
    }
    let platform = r#"{"challenge":"AAAA","rp":{"name":"x"},"user":{"id":"AA","name":"a"},"authenticatorSelection":{"authenticatorAttachment":"platform"}}"#;
    assert!(matches!(
        CreationOptions::from_json(platform),
        Err(WebAuthnError::Unsupported(_))
    ));
    // Defaults: no pubKeyCredParams means ES256 and RS256; legacy requireResidentKey.
    let legacy = CreationOptions::from_json(
        r#"{"challenge":"AAAA","rp":{"name":"x"},"user":{"id":"AA","name":"a"},"authenticatorSelection":{"requireResidentKey":true}}"#,
    )
    .unwrap();
    assert_eq!(legacy.algorithms, vec![-7, -257]);
    assert_eq!(legacy.resident_key, ResidentKey::Required);
    assert_eq!(legacy.user_verification, UserVerification::Preferred);
}

#[test]
fn origin_and_rp_id_must_match() {
    let options = RequestOptions::from_json(REQUEST_JSON).unwrap();
    for bad in ["https://example.org", "https://notexample.com"] {
        let err = SignInCeremony::new(&options, &Origin::parse(bad).unwrap()).unwrap_err();
        assert_eq!(
            err,
            WebAuthnError::OriginMismatch {
                origin: bad.to_owned(),
                rp_id: "example.com".to_owned()
            }
        );
    }
    let creation = CreationOptions::from_json(CREATION_JSON).unwrap();
    assert!(matches!(
        RegistrationCeremony::new(&creation, &Origin::parse("https://evil.test").unwrap()),
        Err(WebAuthnError::OriginMismatch { .. })
    ));
    assert!(matches!(
        Origin::parse("http://example.com"),
        Err(WebAuthnError::InvalidOrigin { .. })
    ));
}

#[test]
fn client_data_json_is_byte_exact() {
    let challenge: Vec<u8> = (0u8..32).collect();
    let json = client_data_json(CeremonyType::Get, &challenge, &origin());
    assert_eq!(
        String::from_utf8(json).unwrap(),
        r#"{"type":"webauthn.get","challenge":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","origin":"https://example.com","crossOrigin":false}"#
    );
    let local = Origin::parse("http://localhost:8080").unwrap();
    let json = client_data_json(CeremonyType::Create, &[0xff; 16], &local);
    assert_eq!(
        String::from_utf8(json).unwrap(),
        r#"{"type":"webauthn.create","challenge":"_____________________w","origin":"http://localhost:8080","crossOrigin":false}"#
    );
    // The ceremony hashes exactly these bytes.
    let options = CreationOptions::from_json(CREATION_JSON).unwrap();
    let ceremony = RegistrationCeremony::new(&options, &origin()).unwrap();
    assert_eq!(
        ceremony.client_data_json(),
        br#"{"type":"webauthn.create","challenge":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","origin":"https://example.com","crossOrigin":false}"#
    );
    assert_eq!(
        ceremony.client_data_hash(),
        <[u8; 32]>::from(Sha256::digest(ceremony.client_data_json()))
    );
}

// ------------------------------------------------------------------------------------------
// A software authenticator made of a P-256 key and hand-assembled authenticator data.

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_BE: u8 = 0x08;
const FLAG_BS: u8 = 0x10;
const FLAG_AT: u8 = 0x40;

struct TestAuthenticator {
    key: SecretKey,
    credential_id: Vec<u8>,
    user_id: Vec<u8>,
}

impl TestAuthenticator {
    fn cose_key(&self) -> Vec<u8> {
        let point = self.key.public_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        cbor::encode(&Value::Map(vec![
            (Value::from(1), Value::from(2)),
            (Value::from(3), Value::from(-7)),
            (Value::from(-1), Value::from(1)),
            (Value::from(-2), Value::Bytes(bytes[1..33].to_vec())),
            (Value::from(-3), Value::Bytes(bytes[33..65].to_vec())),
        ]))
    }

    fn make_credential(
        &mut self,
        rp_id: &str,
        user_id: &[u8],
        fmt: &str,
    ) -> MakeCredentialResponse {
        self.user_id = user_id.to_vec();
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(FLAG_UP | FLAG_UV | FLAG_BE | FLAG_BS | FLAG_AT);
        auth_data.extend_from_slice(&0u32.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]);
        auth_data.extend_from_slice(
            &u16::try_from(self.credential_id.len())
                .unwrap()
                .to_be_bytes(),
        );
        auth_data.extend_from_slice(&self.credential_id);
        auth_data.extend_from_slice(&self.cose_key());
        let att_stmt = if fmt == "none" {
            Value::Map(vec![])
        } else {
            // A self-attestation shape; the agent must drop it when the RP asked for "none".
            Value::Map(vec![
                (Value::Text("alg".into()), Value::from(-7)),
                (Value::Text("sig".into()), Value::Bytes(vec![0x30, 0x00])),
            ])
        };
        MakeCredentialResponse {
            fmt: fmt.to_owned(),
            auth_data,
            att_stmt,
            ep_att: None,
            large_blob_key: None,
        }
    }

    fn get_assertion(
        &self,
        rp_id: &str,
        client_data_hash: [u8; 32],
        flags: u8,
        counter: u32,
    ) -> GetAssertionResponse {
        let mut auth_data = Sha256::digest(rp_id.as_bytes()).to_vec();
        auth_data.push(flags);
        auth_data.extend_from_slice(&counter.to_be_bytes());
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&client_data_hash);
        let signature: Signature = SigningKey::from(&self.key).sign(&signed);
        GetAssertionResponse {
            credential: Some(PublicKeyCredentialDescriptor::new(
                self.credential_id.clone(),
            )),
            auth_data,
            signature: signature.to_der().as_bytes().to_vec(),
            user: Some(PublicKeyCredentialUserEntity {
                id: self.user_id.clone(),
                name: None,
                display_name: None,
            }),
            number_of_credentials: None,
            user_selected: None,
            large_blob_key: None,
        }
    }
}

fn new_authenticator() -> TestAuthenticator {
    let mut credential_id = vec![0u8; 16];
    getrandom::fill(&mut credential_id).unwrap();
    TestAuthenticator {
        key: SecretKey::generate(),
        credential_id,
        user_id: Vec::new(),
    }
}

#[test]
fn registration_response_shape() {
    let mut authenticator = new_authenticator();
    let options = CreationOptions::from_json(CREATION_JSON).unwrap();
    let ceremony = RegistrationCeremony::new(&options, &origin()).unwrap();
    let response = ceremony
        .response(&authenticator.make_credential("example.com", b"user-1234", "packed"))
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&response.to_json()).unwrap();
    let id = b64(&authenticator.credential_id);
    assert_eq!(json["id"], id.as_str());
    assert_eq!(json["rawId"], id.as_str());
    assert_eq!(json["type"], "public-key");
    assert_eq!(json["authenticatorAttachment"], "cross-platform");
    assert_eq!(json["clientExtensionResults"], serde_json::json!({}));
    let r = &json["response"];
    assert_eq!(r["transports"], serde_json::json!(["hybrid", "internal"]));
    assert_eq!(r["publicKeyAlgorithm"], -7);
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(r["clientDataJSON"].as_str().unwrap())
            .unwrap(),
        ceremony.client_data_json()
    );
    // publicKey is the SPKI DER of the credential key.
    let spki = URL_SAFE_NO_PAD
        .decode(r["publicKey"].as_str().unwrap())
        .unwrap();
    let point = authenticator.key.public_key().to_sec1_point(false);
    assert_eq!(spki.len(), 91);
    assert_eq!(&spki[26..], point.as_bytes());
    // The attestation object: canonical {fmt, attStmt, authData}, attestation dropped to none.
    let att = URL_SAFE_NO_PAD
        .decode(r["attestationObject"].as_str().unwrap())
        .unwrap();
    let decoded = cbor::decode(&att, cbor::Strictness::Canonical).unwrap();
    let Value::Map(entries) = decoded else {
        panic!("not a map")
    };
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_text().unwrap()).collect();
    assert_eq!(keys, vec!["fmt", "attStmt", "authData"]);
    assert_eq!(entries[0].1, Value::Text("none".into()));
    assert_eq!(entries[1].1, Value::Map(vec![]));
    assert_eq!(
        entries[2].1,
        Value::Bytes(
            URL_SAFE_NO_PAD
                .decode(r["authenticatorData"].as_str().unwrap())
                .unwrap()
        )
    );

    // An authenticator answering for another RP, or with an algorithm not offered, is refused.
    let err = ceremony
        .response(&authenticator.make_credential("evil.test", b"user-1234", "none"))
        .unwrap_err();
    assert_eq!(
        err,
        WebAuthnError::InvalidResponse("authenticator data is for another RP id")
    );
    let rsa_only = CreationOptions::from_json(&CREATION_JSON.replace(
        r#"{"alg": -8, "type": "public-key"},
    {"alg": -7, "type": "public-key"},"#,
        "",
    ))
    .unwrap();
    assert_eq!(rsa_only.algorithms, vec![-257]);
    let err = RegistrationCeremony::new(&rsa_only, &origin())
        .unwrap()
        .response(&authenticator.make_credential("example.com", b"user-1234", "none"))
        .unwrap_err();
    assert_eq!(
        err,
        WebAuthnError::InvalidResponse("credential algorithm not in pubKeyCredParams")
    );
    let mut truncated = authenticator.make_credential("example.com", b"user-1234", "none");
    truncated.auth_data.truncate(60);
    assert!(matches!(
        ceremony.response(&truncated),
        Err(WebAuthnError::InvalidResponse(_))
    ));
}

#[test]
fn assertion_response_shape() {
    let authenticator = new_authenticator();
    let options = RequestOptions::from_json(&format!(
        r#"{{"challenge":"AAAAAAAAAAAAAAAAAAAAAA","rpId":"example.com","allowCredentials":[{{"type":"public-key","id":"{}"}}]}}"#,
        b64(&authenticator.credential_id)
    ))
    .unwrap();
    let ceremony = SignInCeremony::new(&options, &origin()).unwrap();
    let mut answer = authenticator.get_assertion(
        "example.com",
        ceremony.client_data_hash(),
        FLAG_UP | FLAG_UV,
        7,
    );
    // One allowed credential: the authenticator may leave the id out.
    answer.credential = None;
    answer.user = None;
    let response = ceremony.response(&answer).unwrap();
    let json: serde_json::Value = serde_json::from_str(&response.to_json()).unwrap();
    assert_eq!(json["id"], b64(&authenticator.credential_id).as_str());
    assert_eq!(
        json["response"]["signature"],
        b64(&answer.signature).as_str()
    );
    assert!(
        json["response"].get("userHandle").is_none(),
        "no user handle: the member is left out"
    );
    // A credential the RP did not allow is refused.
    answer.credential = Some(PublicKeyCredentialDescriptor::new(vec![1, 2, 3]));
    assert_eq!(
        ceremony.response(&answer).unwrap_err(),
        WebAuthnError::InvalidResponse("credential not in allowCredentials")
    );
}

// ------------------------------------------------------------------------------------------
// An independent relying party verifies what we produce.

fn rp_id() -> RpId {
    RpId::Domain(AsciiDomain::try_from("example.com".to_owned()).unwrap())
}

#[test]
fn webauthn_rp_accepts_our_registration_and_sign_ins() {
    let rp_id = rp_id();
    let user_handle = UserHandle64::new();

    // Registration: the RP's options JSON goes through our parser and ceremony.
    let user = RpUser {
        name: "alice".try_into().unwrap(),
        id: &user_handle,
        display_name: Some("Alice".try_into().unwrap()),
    };
    let (reg_server, reg_client) =
        PublicKeyCredentialCreationOptions::passkey(&rp_id, user, Vec::new())
            .start_ceremony()
            .unwrap();
    let options_json = serde_json::to_string(&reg_client).unwrap();
    let options = CreationOptions::from_json(&options_json).unwrap();
    assert_eq!(options.resident_key, ResidentKey::Required);
    assert_eq!(options.user_verification, UserVerification::Required);
    let ceremony = RegistrationCeremony::new(&options, &origin()).unwrap();
    let request = ceremony.ctap_request();
    assert_eq!(request.options.rk, Some(true));
    assert_eq!(request.options.uv, Some(true));
    assert_eq!(request.user.id, user_handle.as_ref());

    let mut authenticator = new_authenticator();
    let answer = authenticator.make_credential(&request.rp.id, &request.user.id, "packed");
    let registration_json = ceremony.response(&answer).unwrap().to_json();
    let registration: Registration = serde_json::from_str(&registration_json).unwrap();
    let registered = reg_server
        .verify(
            &rp_id,
            &registration,
            &RegistrationVerificationOptions::<&str, &str>::default(),
        )
        .unwrap();
    assert_eq!(
        registered.id().as_ref(),
        authenticator.credential_id.as_slice()
    );
    assert!(registered.dynamic_state().user_verified);

    // What an RP stores: the credential id, the user handle, the static and dynamic state.
    let (_, _, stored_user, static_state, mut dynamic_state, _) = registered.into_parts();
    let stored_static = static_state.encode().unwrap();

    // Sign-ins with a growing counter, then one with a flipped signature bit, then one without
    // the UV flag.
    #[derive(Clone, Copy, PartialEq)]
    enum Case {
        Good,
        FlippedSignatureBit,
        NoUserVerification,
    }
    for (counter, case) in [
        (1u32, Case::Good),
        (2, Case::Good),
        (3, Case::FlippedSignatureBit),
        (3, Case::NoUserVerification),
    ] {
        let (auth_server, auth_client) = DiscoverableCredentialRequestOptions::passkey(&rp_id)
            .start_ceremony()
            .unwrap();
        let options =
            RequestOptions::from_json(&serde_json::to_string(&auth_client).unwrap()).unwrap();
        assert!(options.allow_credentials.is_empty(), "usernameless sign-in");
        let ceremony = SignInCeremony::new(&options, &origin()).unwrap();
        let request = ceremony.ctap_request();
        assert_eq!(request.options.uv, Some(true));
        let uv = if case == Case::NoUserVerification {
            0
        } else {
            FLAG_UV
        };
        let mut answer = authenticator.get_assertion(
            &request.rp_id,
            request.client_data_hash,
            FLAG_UP | uv | FLAG_BE | FLAG_BS,
            counter,
        );
        if case == Case::FlippedSignatureBit {
            let last = answer.signature.len() - 1;
            answer.signature[last] ^= 0x01;
        }
        let json = ceremony.response(&answer).unwrap().to_json();
        let authentication: DiscoverableAuthentication64 = serde_json::from_str(&json).unwrap();
        assert_eq!(authentication.response().user_handle(), &stored_user);
        let static_state =
            StaticState::<CompressedPubKey<[u8; 32], [u8; 32], [u8; 48], Vec<u8>>>::decode(
                stored_static.as_slice(),
            )
            .unwrap();
        let mut credential = AuthenticatedCredential::new(
            authentication.raw_id(),
            &stored_user,
            static_state,
            dynamic_state,
        )
        .unwrap();
        let result = auth_server.verify(
            &rp_id,
            &authentication,
            &mut credential,
            &AuthenticationVerificationOptions::<&str, &str>::default(),
        );
        match case {
            Case::Good => {
                result.unwrap();
                assert_eq!(credential.dynamic_state().sign_count, counter);
                dynamic_state = credential.dynamic_state();
            }
            Case::FlippedSignatureBit => assert!(
                matches!(result, Err(AuthCeremonyErr::AssertionSignature)),
                "{result:?}"
            ),
            Case::NoUserVerification => assert!(
                matches!(result, Err(AuthCeremonyErr::UserNotVerified)),
                "{result:?}"
            ),
        }
    }
}
