#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `tether-demo` binary as a person runs it: options from a relying-party library
//! (`webauthn_rp`), `register` then `sign-in` on one state directory, only the response JSON on
//! stdout, and both responses verified by that library.

use std::path::Path;
use std::process::{Command, Output};

use webauthn_rp::bin::{Decode as _, Encode as _};
use webauthn_rp::request::auth::AuthenticationVerificationOptions;
use webauthn_rp::request::register::{
    PublicKeyCredentialUserEntity as RpUser, RegistrationVerificationOptions, UserHandle64,
};
use webauthn_rp::request::{AsciiDomain, RpId};
use webauthn_rp::response::register::{CompressedPubKey, StaticState};
use webauthn_rp::{
    AuthenticatedCredential, DiscoverableAuthentication64, DiscoverableCredentialRequestOptions,
    PublicKeyCredentialCreationOptions, Registration,
};

const BIN: &str = env!("CARGO_BIN_EXE_tether-demo");

fn demo(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn ceremony(command: &str, options: &Path, state: &Path) -> Output {
    demo(&[
        command,
        "--options",
        options.to_str().unwrap(),
        "--origin",
        "https://example.com",
        "--state",
        state.to_str().unwrap(),
    ])
}

/// stdout is exactly one line of JSON.
fn only_json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert!(
        output.status.success(),
        "exit {:?}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "stdout: {stdout}");
    serde_json::from_str(stdout.trim_end()).unwrap()
}

#[test]
fn register_then_sign_in_verify_with_a_relying_party_library() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rp_id = RpId::Domain(AsciiDomain::try_from("example.com".to_owned()).unwrap());

    let user_handle = UserHandle64::new();
    let user = RpUser {
        name: "alice".try_into().unwrap(),
        id: &user_handle,
        display_name: Some("Alice".try_into().unwrap()),
    };
    let (server, client) = PublicKeyCredentialCreationOptions::passkey(&rp_id, user, Vec::new())
        .start_ceremony()
        .unwrap();
    let options = dir.path().join("register.json");
    std::fs::write(&options, serde_json::to_string(&client).unwrap()).unwrap();
    let output = ceremony("register", &options, &state);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = only_json(&output);
    // First use: the device paired, and the progress went to stderr.
    assert!(stderr.contains("pairing: code"), "{stderr}");
    assert!(stderr.contains("passkey used"), "{stderr}");
    let registration: Registration = serde_json::from_value(json).unwrap();
    let registered = server
        .verify(
            &rp_id,
            &registration,
            &RegistrationVerificationOptions::<&str, &str>::default(),
        )
        .unwrap();
    assert!(registered.dynamic_state().user_verified);
    let (_, _, stored_user, static_state, dynamic_state, _) = registered.into_parts();
    let stored_static = static_state.encode().unwrap();

    // A second process on the same state: paired already, the passkey is still there.
    let (server, client) = DiscoverableCredentialRequestOptions::passkey(&rp_id)
        .start_ceremony()
        .unwrap();
    let options = dir.path().join("sign-in.json");
    std::fs::write(&options, serde_json::to_string(&client).unwrap()).unwrap();
    let output = ceremony("sign-in", &options, &state);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let json = only_json(&output);
    assert!(!stderr.contains("pairing: code"), "{stderr}");
    assert_eq!(json["authenticatorAttachment"], "cross-platform");
    let authentication: DiscoverableAuthentication64 = serde_json::from_value(json).unwrap();
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
    server
        .verify(
            &rp_id,
            &authentication,
            &mut credential,
            &AuthenticationVerificationOptions::<&str, &str>::default(),
        )
        .unwrap();
    assert_eq!(credential.dynamic_state().sign_count, 1);
    assert!(credential.dynamic_state().user_verified);
}

#[test]
fn sample_options_drive_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for (kind, file) in [("register", "reg.json"), ("sign-in", "signin.json")] {
        let output = demo(&["options", kind, "--rp-id", "example.com"]);
        let options = only_json(&output);
        std::fs::write(dir.path().join(file), options.to_string()).unwrap();
    }
    let registration = only_json(&ceremony("register", &dir.path().join("reg.json"), &state));
    let assertion = only_json(&ceremony(
        "sign-in",
        &dir.path().join("signin.json"),
        &state,
    ));
    assert_eq!(registration["id"], assertion["id"]);
    assert_eq!(assertion["type"], "public-key");
}

#[test]
fn failures_have_one_line_and_the_agents_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let options = dir.path().join("bad.json");
    std::fs::write(&options, r#"{"rpId":"example.com"}"#).unwrap();
    let output = ceremony("sign-in", &options, &dir.path().join("state"));
    assert_eq!(output.status.code(), Some(3), "invalid options");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("error: invalid options:"), "{stderr}");

    let output = demo(&["options", "register", "--rp-id", "not a host"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());

    let output = demo(&["options", "unknown"]);
    assert_eq!(output.status.code(), Some(2), "usage error");
}
