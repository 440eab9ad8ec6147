#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Identity and envelope signing through their public API: companion access tokens (ES256,
//! EdDSA, RS256, and every way they must fail), the dev issuer, device tokens, and the envelope
//! key set with rotation. Tokens under test are signed by `jsonwebtoken` (an independent JWS
//! implementation) or built by hand, so the verifiers are not only checked against themselves.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bridge::auth::AuthError;
use bridge::auth::companion::{CompanionAuthConfig, CompanionIdentity, CompanionVerifier};
use bridge::auth::dev_issuer::{DEV_ISSUER, DevIssuer};
use bridge::auth::device::{
    DevicePublicKey, MAX_DEVICE_TOKEN_LIFETIME_SECS, PAIRING_KID, mint_device_token,
    unverified_kid, verify_device_token,
};
use bridge::auth::jwk::{FileJwks, StaticJwks};
use bridge::signing::{EnvelopeClaims, KeySet, SigningError, verify_envelope};
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::SecretKey;
use p256::elliptic_curve::Generate as _;
use p256::pkcs8::EncodePrivateKey as _;
use serde_json::{Value, json};

const NOW: i64 = 1_700_000_000;
const ISSUER: &str = "https://idp.example.com/";
const AUDIENCE: &str = "tether-bridge";

// Fixed test keys, generated with `openssl genpkey -algorithm ed25519` and
// `openssl genrsa -traditional 2048`. Test material only.
const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEID+aSSclOUVliLBfFHZgVt285XMb0VA2pik54mDsKKSY
-----END PRIVATE KEY-----
";

const RSA_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEogIBAAKCAQEAjpJtaZXHFeGWdos5209KaSOHBpOoZViEsseO58QnTelI3zbz
xoN+POAWYHZ1/zC2SmNgzgudtiWTyfP7D5YgHhP2XgL9x0Mj5DAZNre+5M7z2Zt9
WofZeVrdbrfK7WmzoQOwzkV7LzQglqhbbrSDLsE14gjERINGZ9fi/3uNjurD6EF7
gMm9h9Of25YGy7/fkEHfAKDy5u7pyr0EbQyrMOwx+xAH2+lKjpitWTel0TqCiMp8
pZIt9ScITzotWG/r/3xCfaErbzoEmlSNTispWnRliSH3zQEYugF6G1gFKKWS8sZA
iwvatQgMgY5fE3R3GqY4fu7Y4WV36NofD0eKEwIDAQABAoIBAAnI/v1qLDnSO9Nz
BsuIi6DfsVrAM6SRCLqEe8hobBIq2reHO//58mYXMzH3r22OWFSOsYwyu+ZOefA4
cJjHQvkNgbE+H1DXyNTWgESDI/TsR0w+IcJe5IwxslTxBFp7ELsSV8Ywep3ow/vT
HkNg3EgPNrWGyIGzSNfDt261eie+1umBdp/JdBJ15vP8xIE62CwkFDCGdc++2M6C
p0yYNHjCVTdos+0W1dehz2oh0ovitFn8qDwyx3ehaiSw03wavKX7nR+5/cQwO1yq
tiuF7Gn6dihc9lJUA4qfFrtbosXrmA+sj0NmXl7Szbr6FiihT5Bdb+6wsS/kLpns
f78PL3ECgYEAxgsCaPU9dOmneULMPgQpoX+SKncMo/P47Tk5B77EX0eeB7dVFf7b
UEaX8+UL3+9FfSbkWWx07ZEipAJ6M1t4Ker4CHRqbV8Fh9JCubOCJYg2fB0jA07d
H3pWOWmC7IgawiXxFtweYCtVd53D01+fOfjrUOqLMujCNK8RFMO7TNUCgYEAuEuj
djAGixk47tPEaAaSLbtM/0nMaBfq6e/o9rDQmiufGTR7WkGFjuodPFwVMkOM9+lM
HXulaMbFHbhgWcdXjwtID/UAs+wfHQAuziCEXaMuT0BV/qnyAqkJxF5gEru58Q4i
g0S/KeEqLwaiEm85grMILVlj/y3yAPi6CJzhz0cCgYBKmCj/Oag9Wijvnr5peY3o
u7Fld1P2iVWwnMYjabJzpPkcNOzCjS00TnK7tgFEBs7otfZ6zEQ6m1kt55T5tTFM
sKleHeNccNcXcpYZdkjGNEk5dIwUmebmDWFe3KQozZcum7X0g1KZrJjTpkP1YOYL
ovuXjdCCi3Ni/rHzXUo2RQKBgBHo/+S/fBNOizLij6bQZKpfFneE04GWOXUspIY8
3rjs3lRTvl0iGvmtlNPF2yV8XRnGqWgAGS4aixN9VJfFAKRdI06xr7TMkKV/3Aya
KmLzNc/r36+VEnjhtppH1axcZBCiIAaDytQmFrRlP6DtADjMb1IA6u/kpi0j/uhR
XryHAoGADQTmVqy8u7s851yAtjaFdll7zsiUW+BoEhSb3Qd/XDW3Bxdo9FDB6JT+
IDTJD/JUiA70K8XUe6SUXtv7DSeImE0BOhvJVY9WzfqCMViPnNTU/giW8zGJKSG3
A5Q6MCGbauRDzDDJ8QndZCiQPFL0FuYcgVM/BVDIvNjTIANs2lo=
-----END RSA PRIVATE KEY-----
";

// ---------------------------------------------------------------- helpers

/// A signing key of a simulated identity provider, with its public JWK.
struct IdpKey {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl IdpKey {
    fn new(alg: Algorithm, kid: &str, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        Self {
            alg,
            kid: kid.to_owned(),
            encoding,
            jwk,
        }
    }

    fn es256(kid: &str) -> Self {
        Self::new(
            Algorithm::ES256,
            kid,
            ec_encoding_key(&SecretKey::generate()),
        )
    }

    fn eddsa(kid: &str) -> Self {
        Self::new(
            Algorithm::EdDSA,
            kid,
            EncodingKey::from_ed_pem(ED25519_PEM.as_bytes()).unwrap(),
        )
    }

    fn rs256(kid: &str) -> Self {
        Self::new(
            Algorithm::RS256,
            kid,
            EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).unwrap(),
        )
    }

    /// Signs `claims` with this key; header `alg` and `kid` as given.
    fn sign_with_header(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(Some(&self.kid), claims)
    }
}

fn ec_encoding_key(secret: &SecretKey) -> EncodingKey {
    EncodingKey::from_ec_der(secret.to_pkcs8_der().unwrap().as_bytes())
}

fn jwks(keys: &[&IdpKey]) -> JwkSet {
    JwkSet {
        keys: keys.iter().map(|k| k.jwk.clone()).collect(),
    }
}

fn config(algorithms: &[Algorithm]) -> CompanionAuthConfig {
    CompanionAuthConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        algorithms: algorithms.to_vec(),
        leeway_secs: 30,
    }
}

fn verifier(keys: &[&IdpKey]) -> CompanionVerifier {
    CompanionVerifier::new(CompanionAuthConfig::new(ISSUER, AUDIENCE), jwks(keys)).unwrap()
}

fn good_claims() -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1234",
        "iat": NOW - 5,
        "nbf": NOW - 5,
        "exp": NOW + 600,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn b64_json(value: &Value) -> String {
    B64.encode(serde_json::to_vec(value).unwrap())
}

fn code(result: Result<CompanionIdentity, AuthError>) -> &'static str {
    result.unwrap_err().code()
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&B64.decode(header).unwrap()).unwrap()
}

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("tether-auth-{}", uuid::Uuid::new_v4()));
        fs::create_dir(&path).unwrap();
        Self(path)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn shared_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + std::fmt::Debug>() {}
    assert_send_sync::<CompanionVerifier>();
    assert_send_sync::<DevIssuer>();
    assert_send_sync::<KeySet>();
    assert_send_sync::<DevicePublicKey>();
    assert_send_sync::<AuthError>();
    assert_send_sync::<SigningError>();
    assert_send_sync::<StaticJwks>();
    assert_send_sync::<FileJwks>();
}

// ---------------------------------------------------------------- companion: accepted

#[test]
fn companion_es256_token_is_accepted() {
    let key = IdpKey::es256("es-1");
    let identity = verifier(&[&key])
        .verify(&key.sign(&good_claims()), NOW)
        .unwrap();
    assert_eq!(
        identity,
        CompanionIdentity {
            issuer: ISSUER.into(),
            subject: "user-1234".into()
        }
    );
}

#[test]
fn companion_eddsa_token_is_accepted_when_allowed_and_refused_otherwise() {
    let key = IdpKey::eddsa("ed-1");
    let token = key.sign(&good_claims());
    assert_eq!(
        verifier(&[&key]).verify(&token, NOW).unwrap().subject,
        "user-1234"
    );

    let es_only = CompanionVerifier::new(config(&[Algorithm::ES256]), jwks(&[&key])).unwrap();
    assert_eq!(code(es_only.verify(&token, NOW)), "algorithm_not_allowed");
}

#[test]
fn companion_rs256_token_is_accepted_when_allowed_and_refused_otherwise() {
    let key = IdpKey::rs256("rsa-1");
    let token = key.sign(&good_claims());
    let rs_only = CompanionVerifier::new(config(&[Algorithm::RS256]), jwks(&[&key])).unwrap();
    assert_eq!(rs_only.verify(&token, NOW).unwrap().subject, "user-1234");

    let no_rsa =
        CompanionVerifier::new(config(&[Algorithm::ES256, Algorithm::EdDSA]), jwks(&[&key]))
            .unwrap();
    assert_eq!(code(no_rsa.verify(&token, NOW)), "algorithm_not_allowed");
}

#[test]
fn companion_keys_are_chosen_by_kid_among_several() {
    let es = IdpKey::es256("es-1");
    let es2 = IdpKey::es256("es-2");
    let ed = IdpKey::eddsa("ed-1");
    let rs = IdpKey::rs256("rsa-1");
    let v = verifier(&[&es, &es2, &ed, &rs]);
    for key in [&es, &es2, &ed, &rs] {
        assert_eq!(
            v.verify(&key.sign(&good_claims()), NOW).unwrap().subject,
            "user-1234"
        );
    }
    assert_eq!(v.key_count(), 4);
}

#[test]
fn companion_audience_may_be_an_array() {
    let key = IdpKey::es256("es-1");
    let v = verifier(&[&key]);
    let claims = with(good_claims(), "aud", json!(["other", AUDIENCE]));
    assert!(v.verify(&key.sign(&claims), NOW).is_ok());
    let claims = with(good_claims(), "aud", json!(["other", "another"]));
    assert_eq!(code(v.verify(&key.sign(&claims), NOW)), "wrong_audience");
}

#[test]
fn companion_leeway_works_both_ways() {
    let key = IdpKey::es256("es-1");
    let v = verifier(&[&key]);
    let accept = |claims: Value| v.verify(&key.sign(&claims), NOW);

    // Expired 29 s ago: inside the 30 s leeway. 30 s ago: outside.
    assert!(accept(with(good_claims(), "exp", json!(NOW - 29))).is_ok());
    assert_eq!(
        code(accept(with(good_claims(), "exp", json!(NOW - 30)))),
        "expired"
    );
    // Not valid before 30 s from now: inside. 31 s: outside.
    assert!(accept(with(good_claims(), "nbf", json!(NOW + 30))).is_ok());
    assert_eq!(
        code(accept(with(good_claims(), "nbf", json!(NOW + 31)))),
        "not_yet_valid"
    );
    // Issued 30 s in the future: inside. 31 s: outside.
    assert!(accept(with(good_claims(), "iat", json!(NOW + 30))).is_ok());
    assert_eq!(
        code(accept(with(good_claims(), "iat", json!(NOW + 31)))),
        "not_yet_valid"
    );

    // A zero leeway is strict.
    let strict = CompanionVerifier::new(
        CompanionAuthConfig {
            leeway_secs: 0,
            ..config(&[Algorithm::ES256])
        },
        jwks(&[&key]),
    )
    .unwrap();
    let token = key.sign(&with(good_claims(), "exp", json!(NOW)));
    assert_eq!(code(strict.verify(&token, NOW)), "expired");
    assert!(strict.verify(&token, NOW - 1).is_ok());
}

// ---------------------------------------------------------------- companion: rejected

#[test]
fn companion_expired_token_is_rejected() {
    let key = IdpKey::es256("es-1");
    let claims = with(good_claims(), "exp", json!(NOW - 3600));
    let claims = with(
        with(claims, "iat", json!(NOW - 7200)),
        "nbf",
        json!(NOW - 7200),
    );
    let token = key.sign(&claims);
    assert_eq!(code(verifier(&[&key]).verify(&token, NOW)), "expired");
    // The same token was fine while it lived: time comes from the argument.
    assert!(verifier(&[&key]).verify(&token, NOW - 3601).is_ok());
}

#[test]
fn companion_token_not_yet_valid_is_rejected() {
    let key = IdpKey::es256("es-1");
    let token = key.sign(&with(good_claims(), "nbf", json!(NOW + 3600)));
    assert_eq!(code(verifier(&[&key]).verify(&token, NOW)), "not_yet_valid");
}

#[test]
fn companion_wrong_or_missing_issuer_is_rejected() {
    let key = IdpKey::es256("es-1");
    let v = verifier(&[&key]);
    let wrong = key.sign(&with(
        good_claims(),
        "iss",
        json!("https://evil.example.com/"),
    ));
    assert_eq!(code(v.verify(&wrong, NOW)), "wrong_issuer");
    let trailing = key.sign(&with(
        good_claims(),
        "iss",
        json!("https://idp.example.com"),
    ));
    assert_eq!(code(v.verify(&trailing, NOW)), "wrong_issuer");
    let missing = key.sign(&without(good_claims(), "iss"));
    assert_eq!(v.verify(&missing, NOW), Err(AuthError::MissingClaim("iss")));
}

#[test]
fn companion_wrong_or_missing_audience_is_rejected() {
    let key = IdpKey::es256("es-1");
    let v = verifier(&[&key]);
    let wrong = key.sign(&with(good_claims(), "aud", json!("some-other-api")));
    assert_eq!(code(v.verify(&wrong, NOW)), "wrong_audience");
    let missing = key.sign(&without(good_claims(), "aud"));
    assert_eq!(v.verify(&missing, NOW), Err(AuthError::MissingClaim("aud")));
    let numeric = key.sign(&with(good_claims(), "aud", json!(42)));
    assert_eq!(v.verify(&numeric, NOW), Err(AuthError::InvalidClaim("aud")));
}

#[test]
fn companion_missing_exp_is_rejected() {
    let key = IdpKey::es256("es-1");
    let token = key.sign(&without(good_claims(), "exp"));
    assert_eq!(
        verifier(&[&key]).verify(&token, NOW),
        Err(AuthError::MissingClaim("exp"))
    );
    let text = key.sign(&with(good_claims(), "exp", json!("tomorrow")));
    assert_eq!(
        verifier(&[&key]).verify(&text, NOW),
        Err(AuthError::InvalidClaim("exp"))
    );
}

#[test]
fn companion_missing_empty_or_long_subject_is_rejected() {
    let key = IdpKey::es256("es-1");
    let v = verifier(&[&key]);
    let missing = key.sign(&without(good_claims(), "sub"));
    assert_eq!(v.verify(&missing, NOW), Err(AuthError::MissingClaim("sub")));
    assert_eq!(code(v.verify(&missing, NOW)), "missing_claim");
    let empty = key.sign(&with(good_claims(), "sub", json!("")));
    assert_eq!(v.verify(&empty, NOW), Err(AuthError::InvalidClaim("sub")));
    let long = key.sign(&with(good_claims(), "sub", json!("a".repeat(256))));
    assert_eq!(v.verify(&long, NOW), Err(AuthError::InvalidClaim("sub")));
    let longest = key.sign(&with(good_claims(), "sub", json!("a".repeat(255))));
    assert!(v.verify(&longest, NOW).is_ok());
    let number = key.sign(&with(good_claims(), "sub", json!(7)));
    assert_eq!(v.verify(&number, NOW), Err(AuthError::InvalidClaim("sub")));
}

#[test]
fn companion_unknown_kid_is_rejected() {
    let known = IdpKey::es256("es-1");
    let stranger = IdpKey::es256("es-404");
    assert_eq!(
        code(verifier(&[&known]).verify(&stranger.sign(&good_claims()), NOW)),
        "unknown_key"
    );
}

#[test]
fn companion_token_without_kid_needs_a_single_candidate_key() {
    let one = IdpKey::es256("es-1");
    let two = IdpKey::es256("es-2");
    let ed = IdpKey::eddsa("ed-1");
    let token = one.sign_with_header(None, &good_claims());
    // One ES256 key (the EdDSA key does not count): accepted.
    assert!(verifier(&[&one, &ed]).verify(&token, NOW).is_ok());
    // Two ES256 keys: ambiguous.
    assert_eq!(
        code(verifier(&[&one, &two]).verify(&token, NOW)),
        "missing_kid"
    );
    // No key for the algorithm at all.
    assert_eq!(code(verifier(&[&ed]).verify(&token, NOW)), "unknown_key");
}

#[test]
fn companion_signature_by_another_key_under_a_known_kid_is_rejected() {
    let real = IdpKey::es256("es-1");
    let forger = IdpKey::es256("es-1");
    assert_eq!(
        code(verifier(&[&real]).verify(&forger.sign(&good_claims()), NOW)),
        "bad_signature"
    );
}

#[test]
fn companion_alg_none_is_rejected() {
    let key = IdpKey::es256("es-1");
    let v = verifier(&[&key]);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64_json(&json!({"alg": alg, "typ": "JWT", "kid": "es-1"}));
        let payload = b64_json(&good_claims());
        for signature in ["", "AAAA"] {
            let token = format!("{header}.{payload}.{signature}");
            assert_eq!(
                code(v.verify(&token, NOW)),
                "unsupported_algorithm",
                "{alg} {signature:?}"
            );
        }
    }
}

#[test]
fn companion_hmac_keyed_with_the_public_key_is_rejected() {
    // The classic confusion attack: sign HS256 with the server's *public* key material as the
    // HMAC secret and hope the verifier feeds that key into HMAC.
    let key = IdpKey::es256("es-1");
    let rsa = IdpKey::rs256("rsa-1");
    let v = verifier(&[&key, &rsa]);
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for target in [&key, &rsa] {
        secrets.push(serde_json::to_vec(&target.jwk).unwrap());
    }
    if let jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(p) = &key.jwk.algorithm {
        let mut sec1 = vec![4u8];
        sec1.extend(B64.decode(&p.x).unwrap());
        sec1.extend(B64.decode(&p.y).unwrap());
        secrets.push(sec1);
        secrets.push(p.x.clone().into_bytes());
    }
    for (alg, kid) in [
        (Algorithm::HS256, "es-1"),
        (Algorithm::HS384, "rsa-1"),
        (Algorithm::HS512, "es-1"),
    ] {
        for secret in &secrets {
            let mut header = Header::new(alg);
            header.kid = Some(kid.into());
            let token =
                jsonwebtoken::encode(&header, &good_claims(), &EncodingKey::from_secret(secret))
                    .unwrap();
            assert_eq!(code(v.verify(&token, NOW)), "unsupported_algorithm");
        }
    }
    // And HMAC cannot even be configured.
    let mut hs = config(&[Algorithm::ES256]);
    hs.algorithms.push(Algorithm::HS256);
    assert_eq!(
        CompanionVerifier::new(hs, jwks(&[&key]))
            .unwrap_err()
            .code(),
        "invalid_config"
    );
}

#[test]
fn companion_symmetric_jwk_in_the_set_is_never_used() {
    let key = IdpKey::es256("es-1");
    let mut set = jwks(&[&key]);
    let oct: Jwk =
        serde_json::from_value(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})).unwrap();
    set.keys.push(oct);
    let v = CompanionVerifier::new(CompanionAuthConfig::new(ISSUER, AUDIENCE), set).unwrap();
    assert_eq!(v.key_count(), 1);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("hmac".into());
    let token = jsonwebtoken::encode(
        &header,
        &good_claims(),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    assert_eq!(code(v.verify(&token, NOW)), "unsupported_algorithm");
}

#[test]
fn companion_alg_must_match_the_key_named_by_kid() {
    let es = IdpKey::es256("shared");
    let rs = IdpKey::rs256("rsa-1");
    let v = verifier(&[&es, &rs]);
    // An RS256 signature presented under the kid of the ES256 key.
    let token = rs.sign_with_header(Some("shared"), &good_claims());
    assert_eq!(code(v.verify(&token, NOW)), "algorithm_mismatch");

    // A JWK that declares another algorithm is not used for this one.
    let mut declared = IdpKey::es256("es-declared");
    declared.jwk.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::ES384);
    assert_eq!(
        code(verifier(&[&declared]).verify(&declared.sign(&good_claims()), NOW)),
        "unknown_key"
    );
}

#[test]
fn companion_encryption_key_is_not_a_signature_key() {
    let mut key = IdpKey::es256("es-1");
    key.jwk.common.public_key_use = Some(PublicKeyUse::Encryption);
    assert_eq!(
        code(verifier(&[&key]).verify(&key.sign(&good_claims()), NOW)),
        "unknown_key"
    );
}

#[test]
fn companion_tampered_payload_is_rejected() {
    let key = IdpKey::es256("es-1");
    let token = key.sign(&good_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_payload = b64_json(&with(good_claims(), "sub", json!("admin")));
    parts[1] = &forged_payload;
    assert_eq!(
        code(verifier(&[&key]).verify(&parts.join("."), NOW)),
        "bad_signature"
    );

    let rsa = IdpKey::rs256("rsa-1");
    let token = rsa.sign(&good_claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[1] = &forged_payload;
    assert_eq!(
        code(verifier(&[&rsa]).verify(&parts.join("."), NOW)),
        "bad_signature"
    );
}

#[test]
fn companion_garbage_is_malformed() {
    let key = IdpKey::es256("es-1");
    let v = verifier(&[&key]);
    let good = key.sign(&good_claims());
    let (head, _) = good.rsplit_once('.').unwrap();
    let cases = [
        String::new(),
        "garbage".into(),
        "a.b.c".into(),
        "...".into(),
        format!("{good}.extra"),
        format!("{head}.!!!"),
        format!("{head}."),
        format!(" {good}"),
        format!("{}.{}.AAAA", B64.encode("not json"), B64.encode("{}")),
        format!(
            "{}.{}.AAAA",
            b64_json(&json!(["ES256"])),
            b64_json(&good_claims())
        ),
        format!(
            "{}.{}",
            b64_json(&json!({"alg": "ES256"})),
            "A".repeat(20_000)
        ),
        format!(
            "{}.{}.AAAA",
            b64_json(&json!({"alg": "ES256", "kid": "es-1", "crit": ["exp"], "exp": 1})),
            b64_json(&good_claims())
        ),
    ];
    for case in cases {
        assert_eq!(code(v.verify(&case, NOW)), "malformed", "{case:?}");
    }
}

#[test]
fn companion_error_messages_carry_no_token_contents() {
    let key = IdpKey::es256("es-1");
    let v = verifier(&[&key]);
    let secret_sub = "very-private-subject";
    for claims in [
        with(good_claims(), "iss", json!(secret_sub)),
        with(
            with(good_claims(), "sub", json!(secret_sub)),
            "exp",
            json!(0),
        ),
    ] {
        let token = key.sign(&claims);
        let err = v.verify(&token, NOW).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains(secret_sub), "{text}");
        assert!(!text.contains(&token), "{text}");
    }
}

#[test]
fn companion_key_set_can_be_replaced() {
    let old = IdpKey::es256("old");
    let new = IdpKey::es256("new");
    let v = CompanionVerifier::new(
        CompanionAuthConfig::new(ISSUER, AUDIENCE),
        JwkSet::default(),
    )
    .unwrap();
    assert_eq!(
        code(v.verify(&old.sign(&good_claims()), NOW)),
        "unknown_key"
    );
    v.replace_jwks(jwks(&[&old]));
    assert!(v.verify(&old.sign(&good_claims()), NOW).is_ok());
    v.replace_jwks(jwks(&[&new]));
    assert_eq!(
        code(v.verify(&old.sign(&good_claims()), NOW)),
        "unknown_key"
    );
    assert!(v.verify(&new.sign(&good_claims()), NOW).is_ok());
}

#[tokio::test]
async fn companion_refresh_keeps_the_old_set_when_the_new_one_is_unusable() {
    let key = IdpKey::es256("es-1");
    let v = CompanionVerifier::new(
        CompanionAuthConfig::new(ISSUER, AUDIENCE),
        JwkSet::default(),
    )
    .unwrap();
    assert_eq!(v.refresh(&StaticJwks(jwks(&[&key]))).await, Ok(1));
    assert!(v.verify(&key.sign(&good_claims()), NOW).is_ok());
    let err = v.refresh(&StaticJwks(JwkSet::default())).await.unwrap_err();
    assert_eq!(err.code(), "jwks_unavailable");
    assert!(v.verify(&key.sign(&good_claims()), NOW).is_ok());

    let dir = TempDir::new();
    let missing = FileJwks::new(dir.join("absent.json"));
    assert_eq!(v.refresh(&missing).await.unwrap_err().code(), "key_file");
    assert!(v.verify(&key.sign(&good_claims()), NOW).is_ok());
}

#[tokio::test]
async fn companion_jwks_file_source() {
    let dir = TempDir::new();
    let path = dir.join("jwks.json");
    let key = IdpKey::eddsa("ed-1");
    fs::write(&path, serde_json::to_vec(&jwks(&[&key])).unwrap()).unwrap();
    let v = CompanionVerifier::from_jwks_file(CompanionAuthConfig::new(ISSUER, AUDIENCE), &path)
        .unwrap();
    assert!(v.verify(&key.sign(&good_claims()), NOW).is_ok());

    // The operator replaces the file; a refresh picks it up.
    let next = IdpKey::es256("es-2");
    fs::write(&path, serde_json::to_vec(&jwks(&[&next])).unwrap()).unwrap();
    assert_eq!(v.refresh(&FileJwks::new(&path)).await, Ok(1));
    assert!(v.verify(&next.sign(&good_claims()), NOW).is_ok());

    fs::write(&path, br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap();
    let err = CompanionVerifier::from_jwks_file(CompanionAuthConfig::new(ISSUER, AUDIENCE), &path)
        .unwrap_err();
    assert_eq!(err.code(), "key_file");
    fs::write(&path, b"not json").unwrap();
    let err = CompanionVerifier::from_jwks_file(CompanionAuthConfig::new(ISSUER, AUDIENCE), &path)
        .unwrap_err();
    assert_eq!(err.code(), "key_file");
}

#[test]
fn companion_config_is_checked_at_construction() {
    let bad = |c: CompanionAuthConfig| CompanionVerifier::new(c, JwkSet::default()).unwrap_err();
    assert_eq!(bad(config(&[Algorithm::PS256])).code(), "invalid_config");
    assert_eq!(bad(config(&[Algorithm::ES384])).code(), "invalid_config");
    assert_eq!(bad(config(&[])).code(), "invalid_config");
    assert_eq!(
        bad(CompanionAuthConfig {
            leeway_secs: 3600,
            ..config(&[Algorithm::ES256])
        })
        .code(),
        "invalid_config"
    );
    assert_eq!(
        bad(CompanionAuthConfig::new("", AUDIENCE)).code(),
        "invalid_config"
    );
    assert_eq!(
        bad(CompanionAuthConfig::new(ISSUER, "")).code(),
        "invalid_config"
    );
    assert_eq!(CompanionAuthConfig::new(ISSUER, AUDIENCE).leeway_secs, 30);
}

// ---------------------------------------------------------------- dev issuer

#[test]
fn dev_issuer_tokens_verify_through_the_companion_verifier() {
    let dev = DevIssuer::generate();
    let v = CompanionVerifier::new(DevIssuer::companion_config(AUDIENCE), dev.jwks()).unwrap();
    let token = dev.mint("alice", AUDIENCE, NOW, 3600).unwrap();
    assert_eq!(
        v.verify(&token, NOW + 10).unwrap(),
        CompanionIdentity {
            issuer: DEV_ISSUER.into(),
            subject: "alice".into()
        }
    );
    assert_eq!(header_of(&token)["kid"], dev.kid());
    assert_eq!(header_of(&token)["alg"], "ES256");
    // Expiry and audience are real checks.
    assert_eq!(code(v.verify(&token, NOW + 3600 + 30)), "expired");
    let other = dev.mint("alice", "other-audience", NOW, 3600).unwrap();
    assert_eq!(code(v.verify(&other, NOW)), "wrong_audience");
    // Another dev issuer's tokens are not accepted.
    let stranger = DevIssuer::generate()
        .mint("alice", AUDIENCE, NOW, 3600)
        .unwrap();
    assert_eq!(code(v.verify(&stranger, NOW)), "unknown_key");
    // Each token has its own jti.
    let claims = |t: &str| -> Value {
        serde_json::from_slice(&B64.decode(t.split('.').nth(1).unwrap()).unwrap()).unwrap()
    };
    let again = dev.mint("alice", AUDIENCE, NOW, 3600).unwrap();
    assert_ne!(claims(&token)["jti"], claims(&again)["jti"]);
    assert_eq!(claims(&token)["iss"], DEV_ISSUER);
    assert_eq!(claims(&token)["nbf"], NOW);
    assert_eq!(claims(&token)["iat"], NOW);
    assert_eq!(claims(&token)["exp"], NOW + 3600);
    // Its convenience verifier is the same thing.
    assert!(dev.verifier(AUDIENCE).unwrap().verify(&token, NOW).is_ok());
}

#[test]
fn dev_issuer_jwks_is_public_only() {
    let dev = DevIssuer::generate();
    let json = serde_json::to_value(dev.jwks()).unwrap();
    let keys = json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], dev.kid());
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["use"], "sig");
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert!(keys[0].get("d").is_none());
    assert!(format!("{dev:?}").contains("[redacted]"));
}

#[test]
fn dev_issuer_rejects_bad_mint_requests() {
    let dev = DevIssuer::generate();
    assert_eq!(
        dev.mint("", AUDIENCE, NOW, 60).unwrap_err().code(),
        "invalid_claim"
    );
    assert_eq!(
        dev.mint(&"a".repeat(256), AUDIENCE, NOW, 60)
            .unwrap_err()
            .code(),
        "invalid_claim"
    );
    assert_eq!(
        dev.mint("alice", AUDIENCE, NOW, 0).unwrap_err().code(),
        "invalid_claim"
    );
    assert_eq!(
        dev.mint("alice", AUDIENCE, NOW, 366 * 24 * 3600)
            .unwrap_err()
            .code(),
        "lifetime_too_long"
    );
}

#[test]
fn dev_issuer_key_file_is_created_private_and_reloaded() {
    let dir = TempDir::new();
    let path = dir.join("dev-issuer.pem");
    let first = DevIssuer::load_or_create(&path).unwrap();
    let pem = fs::read_to_string(&path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    assert!(!format!("{first:?}").contains(pem.lines().nth(1).unwrap()));

    let second = DevIssuer::load_or_create(&path).unwrap();
    assert_eq!(first.kid(), second.kid());
    assert_eq!(first.jwks(), second.jwks());
    let token = first.mint("bob", AUDIENCE, NOW, 60).unwrap();
    let v = CompanionVerifier::new(DevIssuer::companion_config(AUDIENCE), second.jwks()).unwrap();
    assert_eq!(v.verify(&token, NOW).unwrap().subject, "bob");
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);

    fs::write(&path, "not a key").unwrap();
    assert_eq!(
        DevIssuer::load_or_create(&path).unwrap_err().code(),
        "key_file"
    );
    let nowhere = dir.join("missing-dir").join("dev.pem");
    assert_eq!(
        DevIssuer::load_or_create(&nowhere).unwrap_err().code(),
        "key_file"
    );
}

// ---------------------------------------------------------------- devices

const DEVICE_ID: &str = "dev_7Yk2-hub";
const JTI: &str = "jti-0123456789abcdef";

struct Device {
    secret: SecretKey,
    public: DevicePublicKey,
}

impl Device {
    fn new() -> Self {
        let secret = SecretKey::generate();
        let public = DevicePublicKey::from_sec1(&sec1_of(&secret)).unwrap();
        Self { secret, public }
    }

    fn token(&self, now: i64) -> String {
        mint_device_token(&self.secret, DEVICE_ID, AUDIENCE, now, 120, JTI).unwrap()
    }

    /// Signs arbitrary claims with an independent JWS implementation.
    fn sign_raw(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &ec_encoding_key(&self.secret)).unwrap()
    }

    fn verify(
        &self,
        token: &str,
        now: i64,
    ) -> Result<bridge::auth::device::DeviceClaims, AuthError> {
        verify_device_token(token, &self.public, DEVICE_ID, AUDIENCE, now)
    }
}

fn sec1_of(secret: &SecretKey) -> Vec<u8> {
    use p256::elliptic_curve::sec1::ToSec1Point as _;
    secret.public_key().to_sec1_point(false).as_bytes().to_vec()
}

fn device_claims(iat: i64, exp: i64) -> Value {
    json!({"iss": DEVICE_ID, "aud": AUDIENCE, "iat": iat, "exp": exp, "jti": JTI})
}

#[test]
fn device_token_round_trip() {
    let device = Device::new();
    let token = device.token(NOW);
    assert_eq!(unverified_kid(&token).unwrap(), DEVICE_ID);
    let header = header_of(&token);
    assert_eq!(
        header,
        json!({"alg": "ES256", "typ": "JWT", "kid": DEVICE_ID})
    );
    let claims = device.verify(&token, NOW + 1).unwrap();
    assert_eq!(claims.device_id, DEVICE_ID);
    assert_eq!(claims.jti, JTI);
    assert_eq!(claims.issued_at, NOW);
    assert_eq!(claims.expires_at, NOW + 120);
}

#[test]
fn device_token_from_an_independent_signer_is_accepted() {
    let device = Device::new();
    let token = device.sign_raw(DEVICE_ID, &device_claims(NOW, NOW + 300));
    assert_eq!(device.verify(&token, NOW).unwrap().expires_at, NOW + 300);
    // The public key survives its text encodings.
    let again = DevicePublicKey::from_base64url(&device.public.to_base64url()).unwrap();
    assert_eq!(again.to_sec1().to_vec(), sec1_of(&device.secret));
    assert!(verify_device_token(&token, &again, DEVICE_ID, AUDIENCE, NOW).is_ok());
}

#[test]
fn device_token_with_another_key_is_rejected() {
    let device = Device::new();
    let impostor = Device::new();
    let token = impostor.token(NOW);
    assert_eq!(
        device.verify(&token, NOW).unwrap_err().code(),
        "bad_signature"
    );
}

#[test]
fn device_token_with_another_kid_is_rejected() {
    let device = Device::new();
    let token = mint_device_token(&device.secret, "other-device", AUDIENCE, NOW, 60, JTI).unwrap();
    assert_eq!(
        device.verify(&token, NOW).unwrap_err().code(),
        "unknown_key"
    );
    // kid right but iss different.
    let token = device.sign_raw(
        DEVICE_ID,
        &with(device_claims(NOW, NOW + 60), "iss", json!("x")),
    );
    assert_eq!(
        device.verify(&token, NOW).unwrap_err().code(),
        "wrong_issuer"
    );
}

#[test]
fn device_token_expiry_and_future_iat() {
    let device = Device::new();
    let token = device.token(NOW);
    // exp = NOW + 120; leeway 30.
    assert!(device.verify(&token, NOW + 149).is_ok());
    assert_eq!(
        device.verify(&token, NOW + 150).unwrap_err().code(),
        "expired"
    );
    // Issued in the future: 30 s is tolerated, 31 s is not.
    assert!(device.verify(&device.token(NOW + 30), NOW).is_ok());
    assert_eq!(
        device
            .verify(&device.token(NOW + 31), NOW)
            .unwrap_err()
            .code(),
        "not_yet_valid"
    );
    let nbf = device.sign_raw(
        DEVICE_ID,
        &with(device_claims(NOW, NOW + 60), "nbf", json!(NOW + 100)),
    );
    assert_eq!(
        device.verify(&nbf, NOW).unwrap_err().code(),
        "not_yet_valid"
    );
}

#[test]
fn device_token_lifetime_is_bounded() {
    let device = Device::new();
    let max = device.sign_raw(
        DEVICE_ID,
        &device_claims(NOW, NOW + MAX_DEVICE_TOKEN_LIFETIME_SECS),
    );
    assert!(device.verify(&max, NOW).is_ok());
    let long = device.sign_raw(
        DEVICE_ID,
        &device_claims(NOW, NOW + MAX_DEVICE_TOKEN_LIFETIME_SECS + 1),
    );
    assert_eq!(
        device.verify(&long, NOW).unwrap_err(),
        AuthError::LifetimeTooLong
    );
    let backwards = device.sign_raw(DEVICE_ID, &device_claims(NOW, NOW));
    assert_eq!(
        device.verify(&backwards, NOW).unwrap_err(),
        AuthError::InvalidClaim("exp")
    );
    let err = mint_device_token(&device.secret, DEVICE_ID, AUDIENCE, NOW, 301, JTI).unwrap_err();
    assert_eq!(err.code(), "lifetime_too_long");
}

#[test]
fn device_token_for_another_audience_is_rejected() {
    let device = Device::new();
    let token = mint_device_token(&device.secret, DEVICE_ID, "other-bridge", NOW, 60, JTI).unwrap();
    assert_eq!(
        device.verify(&token, NOW).unwrap_err().code(),
        "wrong_audience"
    );
}

#[test]
fn device_token_claims_are_required_and_shaped() {
    let device = Device::new();
    for (claim, expected) in [
        ("iss", AuthError::MissingClaim("iss")),
        ("aud", AuthError::MissingClaim("aud")),
        ("iat", AuthError::MissingClaim("iat")),
        ("exp", AuthError::MissingClaim("exp")),
        ("jti", AuthError::MissingClaim("jti")),
    ] {
        let token = device.sign_raw(DEVICE_ID, &without(device_claims(NOW, NOW + 60), claim));
        assert_eq!(device.verify(&token, NOW).unwrap_err(), expected, "{claim}");
    }
    for jti in [
        json!("too-short"),
        json!("x".repeat(65)),
        json!("has space 0123456789"),
        json!(5),
    ] {
        let token = device.sign_raw(DEVICE_ID, &with(device_claims(NOW, NOW + 60), "jti", jti));
        assert_eq!(
            device.verify(&token, NOW).unwrap_err(),
            AuthError::InvalidClaim("jti")
        );
    }
}

#[test]
fn device_token_malformed_or_wrong_algorithm() {
    let device = Device::new();
    for garbage in ["", "x", "a.b.c", "..", &"A".repeat(3000)] {
        assert_eq!(
            device.verify(garbage, NOW).unwrap_err().code(),
            "malformed",
            "{garbage:?}"
        );
        assert_eq!(unverified_kid(garbage).unwrap_err().code(), "malformed");
    }
    let good = device.token(NOW);
    let (head, _) = good.rsplit_once('.').unwrap();
    assert_eq!(
        device
            .verify(&format!("{head}.%%%"), NOW)
            .unwrap_err()
            .code(),
        "malformed"
    );
    // 64-byte signature required; a DER signature is not ES256 JWS.
    assert_eq!(
        device
            .verify(&format!("{head}.{}", B64.encode([1u8; 70])), NOW)
            .unwrap_err()
            .code(),
        "bad_signature"
    );

    let hs = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(DEVICE_ID.into());
        jsonwebtoken::encode(
            &header,
            &device_claims(NOW, NOW + 60),
            &EncodingKey::from_secret(&device.public.to_sec1()),
        )
        .unwrap()
    };
    assert_eq!(
        device.verify(&hs, NOW).unwrap_err().code(),
        "unsupported_algorithm"
    );
    let none = format!(
        "{}.{}.",
        b64_json(&json!({"alg": "none", "kid": DEVICE_ID})),
        b64_json(&device_claims(NOW, NOW + 60))
    );
    assert_eq!(
        device.verify(&none, NOW).unwrap_err().code(),
        "unsupported_algorithm"
    );
    let typ = format!(
        "{}.{}.AAAA",
        b64_json(&json!({"alg": "ES256", "typ": "at+jwt", "kid": DEVICE_ID})),
        b64_json(&device_claims(NOW, NOW + 60))
    );
    assert_eq!(device.verify(&typ, NOW).unwrap_err().code(), "malformed");
}

#[test]
fn device_unverified_kid_is_shape_checked() {
    let key = SecretKey::generate();
    let no_kid = format!(
        "{}.{}.AAAA",
        b64_json(&json!({"alg": "ES256"})),
        b64_json(&device_claims(NOW, NOW + 60))
    );
    assert_eq!(unverified_kid(&no_kid).unwrap_err().code(), "missing_kid");
    for kid in ["", "has space", "slash/y", &"k".repeat(65), "ünïcode"] {
        let token = format!(
            "{}.{}.AAAA",
            b64_json(&json!({"alg": "ES256", "kid": kid})),
            b64_json(&device_claims(NOW, NOW + 60))
        );
        assert_eq!(
            unverified_kid(&token).unwrap_err().code(),
            "malformed",
            "{kid:?}"
        );
    }
    let longest = "k".repeat(64);
    let token = mint_device_token(&key, &longest, AUDIENCE, NOW, 60, JTI).unwrap();
    assert_eq!(unverified_kid(&token).unwrap(), longest);
}

#[test]
fn device_pairing_token_proves_possession_of_the_presented_key() {
    let device = Device::new();
    let token = mint_device_token(&device.secret, PAIRING_KID, AUDIENCE, NOW, 60, JTI).unwrap();
    let claims = verify_device_token(&token, &device.public, PAIRING_KID, AUDIENCE, NOW).unwrap();
    assert_eq!(claims.device_id, PAIRING_KID);
    // Someone presenting this device's public key with their own token fails.
    let thief = Device::new();
    let stolen = mint_device_token(&thief.secret, PAIRING_KID, AUDIENCE, NOW, 60, JTI).unwrap();
    assert_eq!(
        verify_device_token(&stolen, &device.public, PAIRING_KID, AUDIENCE, NOW)
            .unwrap_err()
            .code(),
        "bad_signature"
    );
}

#[test]
fn device_public_key_rejects_bad_encodings() {
    assert_eq!(
        DevicePublicKey::from_sec1(&[4u8; 65]).unwrap_err().code(),
        "invalid_key"
    );
    assert_eq!(
        DevicePublicKey::from_sec1(&[]).unwrap_err().code(),
        "invalid_key"
    );
    assert_eq!(
        DevicePublicKey::from_base64url("AAAA").unwrap_err().code(),
        "invalid_key"
    );
    assert_eq!(
        DevicePublicKey::from_base64url(&"A".repeat(10_000))
            .unwrap_err()
            .code(),
        "invalid_key"
    );
}

// ---------------------------------------------------------------- envelopes

const BRIDGE: &str = "https://bridge.example.com";
const COMPANION: &str = "tether-companion";
const LIFETIME: i64 = 300;

fn envelope(now: i64) -> EnvelopeClaims {
    EnvelopeClaims {
        iss: BRIDGE.into(),
        aud: COMPANION.into(),
        sub: "acct_123".into(),
        delivery_id: "dlv_456".into(),
        device_id: DEVICE_ID.into(),
        device_name: "Living room hub".into(),
        device_model: "Hub 2".into(),
        rp_id: "example.com".into(),
        request_type: "ga".into(),
        number_code: "42".into(),
        origin: None,
        user_name: None,
        iat: now,
        exp: now + LIFETIME,
    }
}

fn verify_env(token: &str, jwks: &JwkSet, now: i64) -> Result<EnvelopeClaims, SigningError> {
    verify_envelope(token, jwks, BRIDGE, COMPANION, now, 30)
}

#[test]
fn envelope_sign_then_verify_via_jwks() {
    let keys = KeySet::generate(NOW);
    let claims = envelope(NOW);
    let token = keys.sign(&claims).unwrap();
    assert_eq!(
        header_of(&token),
        json!({"alg": "ES256", "typ": "JWT", "kid": keys.active_kid()})
    );
    // Through JSON, as the companion app receives the JWKS.
    let published: JwkSet =
        serde_json::from_slice(&serde_json::to_vec(&keys.jwks()).unwrap()).unwrap();
    assert_eq!(verify_env(&token, &published, NOW + 5).unwrap(), claims);
    // Member names are exactly the field names.
    let payload: Value =
        serde_json::from_slice(&B64.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
    let mut names: Vec<_> = payload.as_object().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "aud",
            "delivery_id",
            "device_id",
            "device_model",
            "device_name",
            "exp",
            "iat",
            "iss",
            "number_code",
            "request_type",
            "rp_id",
            "sub"
        ]
    );
}

#[test]
fn envelope_jwks_has_no_private_members() {
    let mut keys = KeySet::generate(NOW);
    keys.rotate(NOW + 10);
    keys.rotate(NOW + 20);
    let json = serde_json::to_value(keys.jwks()).unwrap();
    let published = json["keys"].as_array().unwrap();
    assert_eq!(published.len(), 3);
    for key in published {
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "{key}");
        }
        assert_eq!(key["alg"], "ES256");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
    }
    assert_eq!(published[0]["kid"], keys.active_kid());
}

#[test]
fn envelope_of_a_rotated_key_verifies_until_pruned() {
    let mut keys = KeySet::generate(NOW);
    let old_kid = keys.active_kid().to_owned();
    let old_envelope = keys.sign(&envelope(NOW)).unwrap();

    keys.rotate(NOW + 100);
    assert_ne!(keys.active_kid(), old_kid);
    assert_eq!(keys.kids(), [keys.active_kid(), old_kid.as_str()]);
    assert!(verify_env(&old_envelope, &keys.jwks(), NOW + 100).is_ok());

    // Retired at NOW+100, lifetime 300, skew 60: kept through NOW+460.
    assert_eq!(keys.prune(NOW + 460, LIFETIME), 0);
    assert!(keys.jwks().find(&old_kid).is_some());
    assert_eq!(keys.prune(NOW + 461, LIFETIME), 1);
    assert!(keys.jwks().find(&old_kid).is_none());
    assert_eq!(keys.kids(), [keys.active_kid()]);
    assert_eq!(
        verify_envelope(&old_envelope, &keys.jwks(), BRIDGE, COMPANION, NOW, 30).unwrap_err(),
        SigningError::UnknownKey
    );
    // The active key is never pruned.
    assert_eq!(keys.prune(NOW + 1_000_000, LIFETIME), 0);
    assert!(keys.sign(&envelope(NOW + 1_000_000)).is_ok());
}

#[test]
fn envelope_is_never_signed_by_a_retired_key() {
    let mut keys = KeySet::generate(NOW);
    let old_jwks = keys.jwks();
    let old_kid = keys.active_kid().to_owned();
    keys.rotate(NOW + 1);
    for _ in 0..3 {
        let token = keys.sign(&envelope(NOW + 2)).unwrap();
        assert_eq!(header_of(&token)["kid"], keys.active_kid());
        assert_ne!(header_of(&token)["kid"], old_kid.as_str());
        // The retired key alone cannot verify it.
        assert_eq!(
            verify_env(&token, &old_jwks, NOW + 2).unwrap_err(),
            SigningError::UnknownKey
        );
        assert!(verify_env(&token, &keys.jwks(), NOW + 2).is_ok());
    }
}

#[test]
fn envelope_key_set_save_and_load_round_trip() {
    let dir = TempDir::new();
    let path = dir.join("signing-keys.json");
    let mut keys = KeySet::load_or_create(&path, NOW).unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    let first = keys.active_kid().to_owned();
    let signed_before = keys.sign(&envelope(NOW)).unwrap();

    keys.rotate(NOW + 50);
    keys.save(&path).unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    let loaded = KeySet::load_or_create(&path, NOW + 60).unwrap();
    assert_eq!(loaded.kids(), keys.kids());
    assert_eq!(loaded.active_kid(), keys.active_kid());
    assert_eq!(loaded.kids()[1], first);
    assert_eq!(loaded.jwks(), keys.jwks());
    assert!(verify_env(&signed_before, &loaded.jwks(), NOW + 60).is_ok());
    // A loaded set signs with the loaded active key.
    let token = loaded.sign(&envelope(NOW + 60)).unwrap();
    assert_eq!(header_of(&token)["kid"], keys.active_kid());
    assert!(verify_env(&token, &keys.jwks(), NOW + 60).is_ok());

    // Retirement times survive: pruning the loaded set behaves like the original.
    let mut loaded = loaded;
    assert_eq!(loaded.prune(NOW + 50 + LIFETIME + 61, LIFETIME), 1);
    // No temporary files are left behind.
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 1);
    // The file never leaks into Debug.
    let file = fs::read_to_string(&path).unwrap();
    assert!(file.contains("BEGIN PRIVATE KEY"));
    let debug = format!("{loaded:?}");
    for line in file.lines().filter(|l| l.len() > 40 && !l.contains("kid")) {
        assert!(!debug.contains(line.trim().trim_matches('"')), "{debug}");
    }

    fs::write(&path, "{}").unwrap();
    assert_eq!(
        KeySet::load_or_create(&path, NOW).unwrap_err().code(),
        "key_file"
    );
}

#[test]
fn envelope_tampering_is_rejected() {
    let keys = KeySet::generate(NOW);
    let token = keys.sign(&envelope(NOW)).unwrap();
    let mut forged = envelope(NOW);
    forged.number_code = "17".into();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = B64.encode(serde_json::to_vec(&forged).unwrap());
    assert_eq!(
        verify_env(&parts.join("."), &keys.jwks(), NOW)
            .unwrap_err()
            .code(),
        "bad_signature"
    );

    // A flipped signature bit.
    let mut sig = B64.decode(token.rsplit('.').next().unwrap()).unwrap();
    sig[10] ^= 1;
    let (head, _) = token.rsplit_once('.').unwrap();
    let flipped = format!("{head}.{}", B64.encode(sig));
    assert_eq!(
        verify_env(&flipped, &keys.jwks(), NOW).unwrap_err().code(),
        "bad_signature"
    );
    assert_eq!(
        verify_env("garbage", &keys.jwks(), NOW).unwrap_err().code(),
        "malformed"
    );
}

#[test]
fn envelope_wrong_audience_issuer_or_time_is_rejected() {
    let keys = KeySet::generate(NOW);
    let jwks = keys.jwks();
    let token = keys.sign(&envelope(NOW)).unwrap();
    let err = verify_envelope(&token, &jwks, BRIDGE, "someone-else", NOW, 30).unwrap_err();
    assert_eq!(err.code(), "wrong_audience");
    let err =
        verify_envelope(&token, &jwks, "https://evil.example", COMPANION, NOW, 30).unwrap_err();
    assert_eq!(err.code(), "wrong_issuer");
    // exp = NOW + 300, leeway 30.
    assert!(verify_env(&token, &jwks, NOW + 329).is_ok());
    assert_eq!(
        verify_env(&token, &jwks, NOW + 330).unwrap_err().code(),
        "expired"
    );
    assert_eq!(
        verify_envelope(&token, &jwks, BRIDGE, COMPANION, NOW + 300, 0)
            .unwrap_err()
            .code(),
        "expired"
    );
    assert_eq!(
        verify_env(&token, &jwks, NOW - 31).unwrap_err().code(),
        "not_yet_valid"
    );
}

#[test]
fn envelope_needs_kid_and_es256() {
    let keys = KeySet::generate(NOW);
    let jwks = keys.jwks();
    let claims = serde_json::to_value(envelope(NOW)).unwrap();
    // Signed by an independent ES256 implementation with the right claims but no kid.
    let other = SecretKey::generate();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims,
        &ec_encoding_key(&other),
    )
    .unwrap();
    assert_eq!(
        verify_env(&token, &jwks, NOW).unwrap_err().code(),
        "missing_kid"
    );

    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(keys.active_kid().into());
    let jwk_bytes = serde_json::to_vec(&jwks.keys[0]).unwrap();
    let hs = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&jwk_bytes)).unwrap();
    assert_eq!(
        verify_env(&hs, &jwks, NOW).unwrap_err().code(),
        "unsupported_algorithm"
    );

    let none = format!(
        "{}.{}.",
        b64_json(&json!({"alg": "none", "kid": keys.active_kid()})),
        b64_json(&claims)
    );
    assert_eq!(
        verify_env(&none, &jwks, NOW).unwrap_err().code(),
        "unsupported_algorithm"
    );
}

#[test]
fn envelope_claims_are_checked_when_signing() {
    let keys = KeySet::generate(NOW);
    let mut bad = envelope(NOW);
    bad.request_type = "xx".into();
    assert_eq!(
        keys.sign(&bad).unwrap_err(),
        SigningError::InvalidClaim("request_type")
    );
    let mut backwards = envelope(NOW);
    backwards.exp = backwards.iat;
    assert_eq!(
        keys.sign(&backwards).unwrap_err(),
        SigningError::InvalidClaim("exp")
    );
    let mut mc = envelope(NOW);
    mc.request_type = "mc".into();
    assert!(verify_env(&keys.sign(&mc).unwrap(), &keys.jwks(), NOW).is_ok());
}
