//! `device-agent inspect` as a user runs it: the real binary, the public vectors, exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::{Value, json};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_device-agent"))
        .args(args)
        .output()
        .expect("device-agent runs")
}

fn vectors() -> Value {
    serde_json::from_str(include_str!("../../hybrid/testdata/hybrid.json")).unwrap()
}

fn stdout_json(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// Invalid input: exit 1, nothing on stdout, exactly one line on stderr containing `needle`.
fn assert_invalid(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(needle), "{err:?} should name {needle}");
}

#[test]
fn url_json_matches_every_valid_vector() {
    let v = vectors();
    let mut checked = 0;
    for e in v["fido_urls"].as_array().unwrap() {
        let url = e["url"].as_str().unwrap();
        let out = agent(&["inspect", "url", url, "--json"]);
        if let Some(code) = e["error"].as_str() {
            assert_invalid(&out, code);
            continue;
        }
        let got = stdout_json(&out);
        // Absent key 2 is null here; the vector file writes its meaning, 0.
        let domains = got["tunnel_server_domains"].as_u64().unwrap_or(0);
        assert_eq!(Some(domains), e["tunnel_server_domains"].as_u64(), "{url}");
        for field in [
            "public_key",
            "qr_secret",
            "timestamp",
            "state_assisted",
            "request_type",
        ] {
            let want = e.get(format!("{field}_hex")).or(e.get(field)).unwrap();
            assert_eq!(&got[field], want, "{field} of {url}");
        }
        assert_eq!(got["tunnel_id"].as_str().unwrap().len(), 32);
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn url_fields_absent_are_null_and_tunnel_id_is_derived() {
    let v = vectors();
    let first = v["fido_urls"][0]["url"].as_str().unwrap();
    let got = stdout_json(&agent(&["inspect", "url", first, "--json"]));
    assert_eq!(got["tunnel_server_domains"], Value::Null);
    assert_eq!(got["timestamp"], Value::Null);
    assert_eq!(got["state_assisted"], Value::Null);
    // The vector secret 7768… derives the tunnel id used by the tunnel URL vectors.
    let url = v["fido_urls"][14]["url"].as_str().unwrap();
    let got = stdout_json(&agent(&["inspect", "url", url, "--json"]));
    assert_eq!(got["tunnel_id"], "59a32df746592f4a7e4a5b84402537c4");
}

#[test]
fn url_text_output_is_readable() {
    let v = vectors();
    let url = v["fido_urls"][14]["url"].as_str().unwrap();
    let out = agent(&["inspect", "url", url]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("request type           ga"), "{text}");
    assert!(
        text.contains("tunnel id              59a32df746592f4a7e4a5b84402537c4"),
        "{text}"
    );
}

#[test]
fn advert_decrypts_with_the_qr_secret() {
    let secret = "7768bdb1e9cb710ad287dc7a448455ba";
    let got = stdout_json(&agent(&[
        "inspect",
        "advert",
        "--qr-secret",
        secret,
        "5e47c5be28c04565aefb0851404f0aa63cce3676",
        "--json",
    ]));
    assert_eq!(
        got,
        json!({
            "nonce": "8729123969f2a7c9ad89",
            "routing_id": "5a3c01",
            "tunnel_server_domain_id": 0,
            "tunnel_server_domain": "cable.ua5v.com",
            "psk": "0c2d437f424201dcb14e344475ba0eca4afe3a895f7be2ca5ea5f019071cfeb0",
            "connect_url": "wss://cable.ua5v.com/cable/connect/5A3C01/59A32DF746592F4A7E4A5B84402537C4"
        })
    );
    let got = stdout_json(&agent(&[
        "inspect",
        "advert",
        "--qr-secret",
        secret,
        "6cb08c467f5a008927eb7395238eeed15e2974fb",
        "--json",
    ]));
    assert_eq!(got["tunnel_server_domain"], "cable.wufkweyy3uaxb.com");
    assert_eq!(got["tunnel_server_domain_id"], 266);
}

#[test]
fn advert_failures_name_the_check() {
    let secret = "7768bdb1e9cb710ad287dc7a448455ba";
    assert_invalid(
        &agent(&[
            "inspect",
            "advert",
            "--qr-secret",
            secret,
            "5e47c5be28c04565aefb0851404f0aa63cce3689",
        ]),
        "(tag)",
    );
    assert_invalid(
        &agent(&["inspect", "advert", "--qr-secret", secret, "5e47c5be"]),
        "(short)",
    );
    assert_invalid(
        &agent(&["inspect", "advert", "--qr-secret", secret, "zz"]),
        "invalid advert",
    );
    assert_invalid(
        &agent(&["inspect", "advert", "--qr-secret", "abcd", "00"]),
        "invalid QR secret",
    );
}

#[test]
fn domain_vectors() {
    let v = vectors();
    for e in v["domains"].as_array().unwrap() {
        let id = e["id"].as_u64().unwrap().to_string();
        let got = stdout_json(&agent(&["inspect", "domain", &id, "--json"]));
        assert_eq!(got, json!({"id": e["id"], "domain": e["domain"]}));
    }
    assert_invalid(&agent(&["inspect", "domain", "65536"]), "domain id");
    assert_invalid(&agent(&["inspect", "domain", "12x"]), "domain id");
}

#[test]
fn invalid_url_checks_are_named() {
    for (input, code) in [
        ("http://x", "prefix"),
        ("FIDO:/12a", "digits_non_digit"),
        ("FIDO:/999", "digits_range"),
        ("FIDO:/", "cbor"),
        (&*format!("FIDO:/{}", "0".repeat(5000)), "too_long"),
    ] {
        assert_invalid(&agent(&["inspect", "url", input]), code);
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(agent(&["inspect"]).status.code(), Some(2));
    assert_eq!(agent(&["inspect", "url"]).status.code(), Some(2));
    assert_eq!(agent(&["inspect", "advert", "00"]).status.code(), Some(2));
    assert_eq!(agent(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(agent(&["--help"]).status.code(), Some(0));
}
