#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The fake push providers, driven by a bare reqwest client over TLS: every check answers the
//! exact status and reason, scripts are consumed in order, and drops and GOAWAYs reach the client.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tether_tests::fake_apns::generate_provider_key;
use tether_tests::{
    ApnsReply, ApnsVerifyingKey, FakeApns, FakeApnsConfig, FakeFcm, FakeFcmConfig, FcmReply,
};

const TEAM: &str = "TEAM123456";
const KEY_ID: &str = "KEY7890ABC";
const TOPIC: &str = "com.example.tether";
const WAIT: Duration = Duration::from_secs(10);

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A bare client trusting only `ca_pem`.
fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- APNs

struct Apns {
    fake: FakeApns,
    p8: String,
    client: reqwest::Client,
}

async fn apns() -> Apns {
    let (p8, verifying_key) = generate_provider_key().unwrap();
    let fake = FakeApns::start(FakeApnsConfig {
        team_id: TEAM.into(),
        key_id: KEY_ID.into(),
        verifying_key,
        topics: vec![TOPIC.into()],
    })
    .await
    .unwrap();
    let client = client(&fake.ca_pem());
    Apns { fake, p8, client }
}

fn provider_jwt(p8: &str, kid: &str, iss: &str, iat: i64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(p8.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &json!({ "iss": iss, "iat": iat }), &key).unwrap()
}

fn device_token(n: u8) -> String {
    hex::encode([n; 32])
}

/// A request's parts, valid unless a test changes them.
#[derive(Clone)]
struct ApnsParts {
    method: reqwest::Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl ApnsParts {
    fn valid(p8: &str, token: &str) -> Self {
        Self {
            method: reqwest::Method::POST,
            path: format!("/3/device/{token}"),
            headers: vec![
                (
                    "authorization",
                    format!("bearer {}", provider_jwt(p8, KEY_ID, TEAM, now())),
                ),
                ("apns-topic", TOPIC.into()),
                ("apns-push-type", "alert".into()),
                ("apns-priority", "10".into()),
                ("apns-expiration", (now() + 300).to_string()),
                ("apns-collapse-id", "delivery-1".into()),
                ("apns-id", "123e4567-e89b-12d3-a456-426655440000".into()),
            ],
            body: br#"{"aps":{"alert":{"title":"Sign in?","body":"Quest 3"}},"e":"x"}"#.to_vec(),
        }
    }

    fn set(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    async fn send(&self, fx: &Apns) -> reqwest::Result<reqwest::Response> {
        let mut request = fx.client.request(
            self.method.clone(),
            format!("{}{}", fx.fake.base_url(), self.path),
        );
        for (name, value) in &self.headers {
            request = request.header(*name, value);
        }
        request.body(self.body.clone()).send().await
    }
}

/// Sends and returns (status, reason, apns-id header).
async fn apns_answer(fx: &Apns, parts: &ApnsParts) -> (u16, Option<String>, Option<String>) {
    let response = parts.send(fx).await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let status = response.status().as_u16();
    let apns_id = response
        .headers()
        .get("apns-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.bytes().await.unwrap();
    let reason = if body.is_empty() {
        None
    } else {
        let body: Value = serde_json::from_slice(&body).unwrap();
        Some(body["reason"].as_str().unwrap().to_owned())
    };
    (status, reason, apns_id)
}

#[tokio::test]
async fn apns_accepts_a_valid_alert_and_records_it() {
    let fx = apns().await;
    let token = device_token(1);
    let parts = ApnsParts::valid(&fx.p8, &token);
    let (status, reason, apns_id) = apns_answer(&fx, &parts).await;
    assert_eq!((status, reason), (200, None));
    assert_eq!(
        apns_id.as_deref(),
        Some("123e4567-e89b-12d3-a456-426655440000")
    );

    let received = fx.fake.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].device_token, token);
    assert_eq!(received[0].header("apns-topic"), Some(TOPIC));
    assert_eq!(received[0].header("apns-collapse-id"), Some("delivery-1"));
    assert_eq!(received[0].payload["aps"]["alert"]["title"], "Sign in?");
    assert_eq!(received[0].connection, 1);
    assert!(!format!("{:?}", received[0]).contains("bearer "));
    let answers = fx.fake.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].status, Some(200));
    assert_eq!(answers[0].reason, None);

    // Without apns-id the fake makes one up, in canonical UUID form.
    let (status, _, apns_id) = apns_answer(&fx, &parts.clone().without("apns-id")).await;
    assert_eq!(status, 200);
    let apns_id = apns_id.unwrap();
    assert_eq!(apns_id.len(), 36);
    assert_eq!(apns_id.matches('-').count(), 4);
    assert_ne!(apns_id, "123e4567-e89b-12d3-a456-426655440000");
}

#[tokio::test]
async fn apns_rejects_each_bad_request_with_apples_status_and_reason() {
    let fx = apns().await;
    let token = device_token(2);
    let valid = ApnsParts::valid(&fx.p8, &token);
    let (other_p8, _) = generate_provider_key().unwrap();
    let bearer = |jwt: String| format!("bearer {jwt}");
    let mut wrong_method = valid.clone();
    wrong_method.method = reqwest::Method::PUT;
    let mut wrong_path = valid.clone();
    wrong_path.path = format!("/3/devices/{token}");
    let mut short_token = valid.clone();
    short_token.path = format!("/3/device/{}", &token[..63]);
    let mut non_hex_token = valid.clone();
    non_hex_token.path = format!("/3/device/{}", "g".repeat(64));
    let mut long_token = valid.clone();
    long_token.path = format!("/3/device/{}", "a".repeat(202));
    let mut no_token = valid.clone();
    no_token.path = "/3/device/".into();
    let mut duplicate_topic = valid.clone();
    duplicate_topic.headers.push(("apns-topic", TOPIC.into()));

    let cases: Vec<(&str, ApnsParts, u16, &str)> = vec![
        ("method", wrong_method, 405, "MethodNotAllowed"),
        ("path", wrong_path, 404, "BadPath"),
        ("duplicate header", duplicate_topic, 400, "DuplicateHeaders"),
        (
            "no authorization",
            valid.clone().without("authorization"),
            403,
            "MissingProviderToken",
        ),
        (
            "empty bearer",
            valid.clone().set("authorization", "bearer "),
            403,
            "MissingProviderToken",
        ),
        (
            "not a JWT",
            valid.clone().set("authorization", "bearer abc.def"),
            403,
            "InvalidProviderToken",
        ),
        (
            "wrong kid",
            valid.clone().set(
                "authorization",
                bearer(provider_jwt(&fx.p8, "OTHERKEY00", TEAM, now())),
            ),
            403,
            "InvalidProviderToken",
        ),
        (
            "wrong team",
            valid.clone().set(
                "authorization",
                bearer(provider_jwt(&fx.p8, KEY_ID, "OTHERTEAM0", now())),
            ),
            403,
            "InvalidProviderToken",
        ),
        (
            "signed by another key",
            valid.clone().set(
                "authorization",
                bearer(provider_jwt(&other_p8, KEY_ID, TEAM, now())),
            ),
            403,
            "InvalidProviderToken",
        ),
        (
            "older than an hour",
            valid.clone().set(
                "authorization",
                bearer(provider_jwt(&fx.p8, KEY_ID, TEAM, now() - 3700)),
            ),
            403,
            "ExpiredProviderToken",
        ),
        (
            "no topic",
            valid.clone().without("apns-topic"),
            400,
            "MissingTopic",
        ),
        (
            "foreign topic",
            valid.clone().set("apns-topic", "com.other.app"),
            400,
            "TopicDisallowed",
        ),
        ("no device token", no_token, 400, "MissingDeviceToken"),
        ("63 hex digits", short_token, 400, "BadDeviceToken"),
        ("not hex", non_hex_token, 400, "BadDeviceToken"),
        ("202 hex digits", long_token, 400, "BadDeviceToken"),
        (
            "no push type",
            valid.clone().without("apns-push-type"),
            400,
            "InvalidPushType",
        ),
        (
            "background push type",
            valid.clone().set("apns-push-type", "background"),
            400,
            "InvalidPushType",
        ),
        (
            "priority 7",
            valid.clone().set("apns-priority", "7"),
            400,
            "BadPriority",
        ),
        (
            "expiration not a number",
            valid.clone().set("apns-expiration", "soon"),
            400,
            "BadExpirationDate",
        ),
        (
            "collapse id 65 bytes",
            valid.clone().set("apns-collapse-id", "c".repeat(65)),
            400,
            "BadCollapseId",
        ),
        (
            "apns-id not a UUID",
            valid.clone().set("apns-id", "not-a-uuid"),
            400,
            "BadMessageId",
        ),
        (
            "payload 4097 bytes",
            valid.clone().body(oversized_payload(4097)),
            413,
            "PayloadTooLarge",
        ),
        (
            "empty payload",
            valid.clone().body(Vec::new()),
            400,
            "PayloadEmpty",
        ),
        (
            "payload not JSON",
            valid.clone().body(&b"{\"aps\":"[..]),
            400,
            "PayloadEmpty",
        ),
        (
            "payload without aps",
            valid.clone().body(&br#"{"e":"x"}"#[..]),
            400,
            "PayloadEmpty",
        ),
    ];
    let count = cases.len();
    for (name, parts, status, reason) in cases {
        let (got_status, got_reason, apns_id) = apns_answer(&fx, &parts).await;
        assert_eq!(
            (got_status, got_reason.as_deref()),
            (status, Some(reason)),
            "case: {name}"
        );
        assert!(
            apns_id.is_some(),
            "case {name}: every answer carries apns-id"
        );
    }
    assert!(
        fx.fake.received().is_empty(),
        "rejected requests are not recorded as received"
    );
    assert_eq!(fx.fake.answers().len(), count);

    // Limits are inclusive: 64-byte collapse id, 4096-byte payload, 200 hex digits, priority 5.
    let mut at_limits = valid
        .set("apns-collapse-id", "c".repeat(64))
        .set("apns-priority", "5")
        .body(oversized_payload(4096));
    at_limits.path = format!("/3/device/{}", "A".repeat(200));
    assert_eq!(apns_answer(&fx, &at_limits).await.0, 200);
}

/// A valid payload of exactly `len` bytes.
fn oversized_payload(len: usize) -> Vec<u8> {
    let skeleton = r#"{"aps":{"alert":"x"},"pad":""}"#;
    let pad = "p".repeat(len - skeleton.len());
    let body = format!(r#"{{"aps":{{"alert":"x"}},"pad":"{pad}"}}"#);
    assert_eq!(body.len(), len);
    body.into_bytes()
}

#[tokio::test]
async fn apns_provider_token_expires_by_the_fakes_clock() {
    let fx = apns().await;
    let parts = ApnsParts::valid(&fx.p8, &device_token(3));
    assert_eq!(apns_answer(&fx, &parts).await.0, 200);
    fx.fake.advance_clock(Duration::from_secs(3601));
    let (status, reason, _) = apns_answer(&fx, &parts).await;
    assert_eq!(
        (status, reason.as_deref()),
        (403, Some("ExpiredProviderToken"))
    );
}

#[tokio::test]
async fn apns_counts_provider_tokens_and_connections() {
    let fx = apns().await;
    let parts = ApnsParts::valid(&fx.p8, &device_token(4));
    for _ in 0..5 {
        assert_eq!(apns_answer(&fx, &parts).await.0, 200);
    }
    assert_eq!(fx.fake.provider_tokens_seen(), 1);
    assert_eq!(fx.fake.connections(), 1);
    assert!(fx.fake.received().iter().all(|r| r.connection == 1));

    let refreshed = parts.clone().set(
        "authorization",
        format!("bearer {}", provider_jwt(&fx.p8, KEY_ID, TEAM, now() - 60)),
    );
    assert_eq!(apns_answer(&fx, &refreshed).await.0, 200);
    assert_eq!(fx.fake.provider_tokens_seen(), 2);
    assert_eq!(fx.fake.connections(), 1);

    // Load runs can stop keeping records; counts go on.
    fx.fake.keep_records(false);
    assert_eq!(apns_answer(&fx, &parts).await.0, 200);
    assert_eq!(fx.fake.answer_count(), 7);
    assert_eq!(fx.fake.answers().len(), 6);
    assert_eq!(fx.fake.received().len(), 6);
}

#[tokio::test]
async fn apns_script_is_consumed_in_order_then_200() {
    let fx = apns().await;
    let token = device_token(5);
    let other = device_token(6);
    fx.fake.script(
        &token,
        [
            ApnsReply::Status {
                status: 410,
                reason: "Unregistered",
            },
            ApnsReply::TooManyRequests {
                retry_after: Some(7),
            },
            ApnsReply::TooManyRequests { retry_after: None },
            ApnsReply::Status {
                status: 503,
                reason: "ServiceUnavailable",
            },
            ApnsReply::Status {
                status: 500,
                reason: "InternalServerError",
            },
        ],
    );
    let parts = ApnsParts::valid(&fx.p8, &token);

    // Another token is unaffected by the script.
    assert_eq!(
        apns_answer(&fx, &ApnsParts::valid(&fx.p8, &other)).await.0,
        200
    );

    let response = parts.send(&fx).await.unwrap();
    assert_eq!(response.status(), 410);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "Unregistered");
    let timestamp = body["timestamp"].as_u64().unwrap();
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    assert!(timestamp <= now_ms && now_ms - timestamp < 60_000);

    let response = parts.send(&fx).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({ "reason": "TooManyRequests" }));

    let response = parts.send(&fx).await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_none());

    let (status, reason, _) = apns_answer(&fx, &parts).await;
    assert_eq!(
        (status, reason.as_deref()),
        (503, Some("ServiceUnavailable"))
    );
    let (status, reason, _) = apns_answer(&fx, &parts).await;
    assert_eq!(
        (status, reason.as_deref()),
        (500, Some("InternalServerError"))
    );
    assert_eq!(
        apns_answer(&fx, &parts).await,
        (
            200,
            None,
            Some("123e4567-e89b-12d3-a456-426655440000".into())
        )
    );

    let statuses: Vec<Option<u16>> = fx.fake.answers().iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        [
            Some(200),
            Some(410),
            Some(429),
            Some(429),
            Some(503),
            Some(500),
            Some(200)
        ]
    );
    assert_eq!(
        fx.fake.received().len(),
        7,
        "scripted answers follow accepted requests"
    );

    // A script is not consumed by a request that fails a check.
    fx.fake.script(
        &token,
        [ApnsReply::Status {
            status: 410,
            reason: "Unregistered",
        }],
    );
    let (status, ..) = apns_answer(&fx, &parts.clone().without("apns-topic")).await;
    assert_eq!(status, 400);
    assert_eq!(apns_answer(&fx, &parts).await.0, 410);
}

#[tokio::test]
async fn apns_delay_answers_200_late() {
    let fx = apns().await;
    let token = device_token(7);
    fx.fake
        .script(&token, [ApnsReply::Delay(Duration::from_millis(300))]);
    let started = Instant::now();
    assert_eq!(
        apns_answer(&fx, &ApnsParts::valid(&fx.p8, &token)).await.0,
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn apns_drop_connection_fails_the_request_and_the_next_one_reconnects() {
    let fx = apns().await;
    let token = device_token(8);
    let parts = ApnsParts::valid(&fx.p8, &token);
    assert_eq!(apns_answer(&fx, &parts).await.0, 200);
    fx.fake.script(&token, [ApnsReply::DropConnection]);

    let error = parts.send(&fx).await.unwrap_err();
    assert!(error.status().is_none(), "no HTTP answer: {error:?}");
    assert!(error.is_request() || error.is_connect(), "{error:?}");

    assert_eq!(apns_answer(&fx, &parts).await.0, 200);
    assert_eq!(fx.fake.connections(), 2);
    let answers = tokio::time::timeout(WAIT, fx.fake.wait_for_answers(3))
        .await
        .unwrap();
    assert_eq!(answers[1].status, None);
    assert_eq!(answers[2].connection, 2);
}

#[tokio::test]
async fn apns_go_away_answers_shutdown_and_moves_the_client_to_a_new_connection() {
    let fx = apns().await;
    let token = device_token(9);
    let parts = ApnsParts::valid(&fx.p8, &token);
    assert_eq!(apns_answer(&fx, &parts).await.0, 200);
    fx.fake.script(&token, [ApnsReply::GoAway]);

    let (status, reason, _) = apns_answer(&fx, &parts).await;
    assert_eq!((status, reason.as_deref()), (503, Some("Shutdown")));
    assert_eq!(apns_answer(&fx, &parts).await.0, 200);
    assert_eq!(fx.fake.connections(), 2);
    let connections: Vec<u64> = fx.fake.answers().iter().map(|a| a.connection).collect();
    assert_eq!(connections, [1, 1, 2]);
}

#[tokio::test]
async fn apns_speaks_http2_only() {
    let fx = apns().await;
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(fx.fake.ca_pem().as_bytes()).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    let error = http1
        .post(format!(
            "{}/3/device/{}",
            fx.fake.base_url(),
            device_token(10)
        ))
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(error.status().is_none(), "{error:?}");
    assert!(fx.fake.answers().is_empty());
}

#[tokio::test]
async fn apns_verifying_key_parses_p8_and_public_pem() {
    let (p8, _) = generate_provider_key().unwrap();
    ApnsVerifyingKey::from_pem(&p8).unwrap();
    let pair = rcgen::KeyPair::from_pem(&p8).unwrap();
    ApnsVerifyingKey::from_pem(&pair.public_key_pem()).unwrap();
    ApnsVerifyingKey::from_public_key_bytes(pair.public_key_raw()).unwrap();
    assert!(
        ApnsVerifyingKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
            .is_err()
    );
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    assert!(ApnsVerifyingKey::from_pem(&rsa.serialize_pem()).is_err());
}

// ---------------------------------------------------------------- FCM

const PROJECT: &str = "tether-test";

struct Fcm {
    fake: FakeFcm,
    key: Value,
    client: reqwest::Client,
}

async fn fcm() -> Fcm {
    let fake = FakeFcm::start(FakeFcmConfig {
        project_id: PROJECT.into(),
    })
    .await
    .unwrap();
    let key: Value = serde_json::from_str(&fake.service_account_json()).unwrap();
    let client = client(&fake.ca_pem());
    Fcm { fake, key, client }
}

#[derive(Clone)]
struct Assertion {
    kid: Option<String>,
    iss: String,
    aud: String,
    scope: String,
    iat: i64,
    exp: i64,
    pem: String,
}

impl Assertion {
    fn valid(fx: &Fcm) -> Self {
        Self {
            kid: Some(fx.key["private_key_id"].as_str().unwrap().to_owned()),
            iss: fx.key["client_email"].as_str().unwrap().to_owned(),
            aud: fx.key["token_uri"].as_str().unwrap().to_owned(),
            scope: "https://www.googleapis.com/auth/firebase.messaging".into(),
            iat: now(),
            exp: now() + 3600,
            pem: fx.key["private_key"].as_str().unwrap().to_owned(),
        }
    }

    fn sign(&self) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid.clone_from(&self.kid);
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.pem.as_bytes()).unwrap();
        let claims = json!({
            "iss": self.iss, "aud": self.aud, "scope": self.scope, "iat": self.iat, "exp": self.exp,
        });
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

async fn token_call(fx: &Fcm, form: &str) -> (u16, Value) {
    let response = fx
        .client
        .post(fx.key["token_uri"].as_str().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn grant_form(assertion: &str) -> String {
    format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    )
}

async fn access_token(fx: &Fcm) -> String {
    let (status, body) = token_call(fx, &grant_form(&Assertion::valid(fx).sign())).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

fn send_url(fx: &Fcm, project: &str) -> String {
    format!("{}/v1/projects/{project}/messages:send", fx.fake.base_url())
}

async fn send(fx: &Fcm, bearer: &str, body: &Value) -> reqwest::Response {
    fx.client
        .post(send_url(fx, PROJECT))
        .bearer_auth(bearer)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn message(token: &str) -> Value {
    json!({
        "message": {
            "token": token,
            "data": { "envelope": "abc", "delivery": "d-1" },
            "notification": { "title": "Sign in?", "body": "Quest 3" },
            "android": { "ttl": "287s", "priority": "high", "collapse_key": "d-1" },
            "apns": {
                "headers": { "apns-priority": "10", "apns-collapse-id": "d-1" },
                "payload": { "aps": { "alert": { "title": "Sign in?" } } }
            }
        }
    })
}

#[tokio::test]
async fn fcm_key_file_has_googles_shape() {
    let started = Instant::now();
    let fx = fcm().await;
    // RSA-2048 generation through aws-lc-rs stays fast in debug builds.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let key = &fx.key;
    assert_eq!(key["type"], "service_account");
    assert_eq!(key["project_id"], PROJECT);
    assert_eq!(key["private_key_id"].as_str().unwrap().len(), 40);
    assert!(
        key["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    assert!(
        key["private_key"]
            .as_str()
            .unwrap()
            .ends_with("-----END PRIVATE KEY-----\n")
    );
    assert_eq!(
        key["client_email"],
        format!("firebase-adminsdk-fbsvc@{PROJECT}.iam.gserviceaccount.com")
    );
    assert_eq!(key["client_id"].as_str().unwrap().len(), 21);
    assert_eq!(key["token_uri"], fx.fake.token_uri());
    assert_eq!(key["token_uri"], format!("{}/token", fx.fake.base_url()));
    assert_eq!(key["auth_uri"], "https://accounts.google.com/o/oauth2/auth");
    assert_eq!(key["universe_domain"], "googleapis.com");
    assert!(
        key["client_x509_cert_url"]
            .as_str()
            .unwrap()
            .ends_with("%40tether-test.iam.gserviceaccount.com")
    );
}

#[tokio::test]
async fn fcm_issues_a_token_and_accepts_a_message() {
    let fx = fcm().await;
    let (status, body) = token_call(&fx, &grant_form(&Assertion::valid(&fx).sign())).await;
    assert_eq!(status, 200);
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["token_type"], "Bearer");
    let bearer = body["access_token"].as_str().unwrap();
    assert!(bearer.starts_with("ya29."));

    let response = send(&fx, bearer, &message("reg-token-1")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let body: Value = response.json().await.unwrap();
    let name = body["name"].as_str().unwrap();
    assert!(
        name.starts_with(&format!("projects/{PROJECT}/messages/0:")),
        "{name}"
    );

    let received = fx.fake.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].token(), Some("reg-token-1"));
    assert_eq!(received[0].message["android"]["ttl"], "287s");
    assert_eq!(received[0].http_version, "HTTP/2.0");
    assert!(!received[0].validate_only);
    let requests = fx.fake.token_requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].granted);
    assert_eq!(fx.fake.answers()[0].status, Some(200));

    // Accepted spellings: camelCase names, fractional TTL, upper-case priority, topic target,
    // validate_only.
    let variant = json!({
        "validateOnly": true,
        "message": {
            "topic": "news",
            "android": { "ttl": "1.5s", "priority": "HIGH", "collapseKey": "d-2", "directBootOk": true },
            "fcmOptions": { "analyticsLabel": "x" }
        }
    });
    let response = send(&fx, bearer, &variant).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["name"],
        format!("projects/{PROJECT}/messages/fake_message_id")
    );
    assert!(fx.fake.received()[1].validate_only);
}

#[tokio::test]
async fn fcm_token_endpoint_refuses_bad_assertions_like_google() {
    let fx = fcm().await;
    let valid = Assertion::valid(&fx);
    let other_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .unwrap()
        .serialize_pem();
    let tampered = {
        let jwt = valid.sign();
        let (rest, signature) = jwt.rsplit_once('.').unwrap();
        let flipped = if signature.starts_with('A') { "B" } else { "A" };
        format!("{rest}.{flipped}{}", &signature[1..])
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong grant type",
            format!("grant_type=password&assertion={}", valid.sign()),
            "unsupported_grant_type",
        ),
        (
            "no assertion",
            grant_form("").replace("&assertion=", ""),
            "invalid_request",
        ),
        ("garbage", grant_form("not-a-jwt"), "invalid_grant"),
        ("tampered signature", grant_form(&tampered), "invalid_grant"),
        (
            "other key",
            grant_form(
                &Assertion {
                    pem: other_key,
                    ..valid.clone()
                }
                .sign(),
            ),
            "invalid_grant",
        ),
        (
            "wrong kid",
            grant_form(
                &Assertion {
                    kid: Some("00".into()),
                    ..valid.clone()
                }
                .sign(),
            ),
            "invalid_grant",
        ),
        (
            "wrong iss",
            grant_form(
                &Assertion {
                    iss: "x@y.iam.gserviceaccount.com".into(),
                    ..valid.clone()
                }
                .sign(),
            ),
            "invalid_grant",
        ),
        (
            "wrong aud",
            grant_form(
                &Assertion {
                    aud: "https://oauth2.googleapis.com/token".into(),
                    ..valid.clone()
                }
                .sign(),
            ),
            "invalid_grant",
        ),
        (
            "too long-lived",
            grant_form(
                &Assertion {
                    exp: valid.iat + 3601,
                    ..valid.clone()
                }
                .sign(),
            ),
            "invalid_grant",
        ),
        (
            "expired",
            grant_form(
                &Assertion {
                    iat: now() - 4000,
                    exp: now() - 400,
                    ..valid.clone()
                }
                .sign(),
            ),
            "invalid_grant",
        ),
        (
            "wrong scope",
            grant_form(
                &Assertion {
                    scope: "https://www.googleapis.com/auth/cloud-platform".into(),
                    ..valid.clone()
                }
                .sign(),
            ),
            "invalid_scope",
        ),
    ];
    let count = cases.len();
    for (name, form, error) in cases {
        let (status, body) = token_call(&fx, &form).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(error)),
            "case {name}: {body}"
        );
        assert!(body["error_description"].is_string(), "case {name}");
    }
    let (_, body) = token_call(&fx, &grant_form(&tampered)).await;
    assert_eq!(body["error_description"], "Invalid JWT Signature.");

    // Without kid Google tries every key of the account; so does the fake.
    let (status, _) = token_call(
        &fx,
        &grant_form(
            &Assertion {
                kid: None,
                ..valid.clone()
            }
            .sign(),
        ),
    )
    .await;
    assert_eq!(status, 200);
    // Several scopes, space separated.
    let scopes = format!(
        "https://www.googleapis.com/auth/cloud-platform {}",
        valid.scope
    );
    let (status, _) = token_call(
        &fx,
        &grant_form(
            &Assertion {
                scope: scopes,
                ..valid
            }
            .sign(),
        ),
    )
    .await;
    assert_eq!(status, 200);

    let requests = fx.fake.token_requests();
    assert_eq!(requests.len(), count + 3);
    assert_eq!(requests.iter().filter(|r| r.granted).count(), 2);
    assert_eq!(requests[0].error.as_deref(), Some("unsupported_grant_type"));
}

/// Sends and returns (status, error JSON object).
async fn send_error(fx: &Fcm, bearer: &str, body: &Value) -> (u16, Value) {
    let response = send(fx, bearer, body).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"].clone())
}

fn field_violation(error: &Value) -> (&str, &str) {
    assert_eq!(
        error["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    let violation = &error["details"][0]["fieldViolations"][0];
    (
        violation["field"].as_str().unwrap(),
        error["details"][1]["errorCode"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn fcm_send_refuses_bad_credentials_and_bad_messages() {
    let fx = fcm().await;
    let bearer = access_token(&fx).await;

    // Credentials.
    let response = fx
        .client
        .post(send_url(&fx, PROJECT))
        .json(&message("t"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    assert_eq!(body["error"]["code"], 401);
    let (status, error) = send_error(&fx, "ya29.not-issued", &message("t")).await;
    assert_eq!(
        (status, error["status"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let response = fx
        .client
        .post(send_url(&fx, "other-project"))
        .bearer_auth(&bearer)
        .json(&message("t"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");

    // The exact shape for one field violation.
    let mut bad_ttl = message("t");
    bad_ttl["message"]["android"]["ttl"] = json!("287");
    let (status, error) = send_error(&fx, &bearer, &bad_ttl).await;
    assert_eq!(status, 400);
    assert_eq!(error["code"], 400);
    assert_eq!(error["status"], "INVALID_ARGUMENT");
    assert_eq!(error["details"].as_array().unwrap().len(), 2);
    assert_eq!(
        error["details"][0]["@type"],
        "type.googleapis.com/google.rpc.BadRequest"
    );
    assert_eq!(
        error["details"][0]["fieldViolations"][0]["field"],
        "message.android.ttl"
    );
    assert!(error["details"][0]["fieldViolations"][0]["description"].is_string());
    assert_eq!(
        error["details"][1],
        json!({ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "INVALID_ARGUMENT" })
    );

    let with = |path: &[&str], value: Value| {
        let mut body = message("t");
        let mut slot = &mut body["message"];
        for key in path {
            slot = &mut slot[*key];
        }
        *slot = value;
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "ttl without unit",
            with(&["android", "ttl"], json!("10")),
            "message.android.ttl",
        ),
        (
            "ttl as number",
            with(&["android", "ttl"], json!(10)),
            "message.android.ttl",
        ),
        (
            "negative ttl",
            with(&["android", "ttl"], json!("-1s")),
            "message.android.ttl",
        ),
        (
            "ttl bare dot",
            with(&["android", "ttl"], json!("1.s")),
            "message.android.ttl",
        ),
        (
            "priority",
            with(&["android", "priority"], json!("urgent")),
            "message.android.priority",
        ),
        (
            "collapse key number",
            with(&["android", "collapse_key"], json!(5)),
            "message.android.collapse_key",
        ),
        (
            "data number",
            with(&["data"], json!({ "delivery": 1 })),
            "message.data[0].value",
        ),
        (
            "android data number",
            with(&["android", "data"], json!({"a": true})),
            "message.android.data[0].value",
        ),
        (
            "notification title",
            with(&["notification", "title"], json!(["x"])),
            "message.notification.title",
        ),
        (
            "apns header number",
            with(&["apns", "headers"], json!({ "apns-priority": 10 })),
            "message.apns.headers[0].value",
        ),
        (
            "apns payload string",
            with(&["apns", "payload"], json!("x")),
            "message.apns.payload",
        ),
        (
            "unknown field",
            with(&["priority"], json!("high")),
            "message.priority",
        ),
        (
            "unknown android field",
            with(&["android", "time_to_live"], json!(3)),
            "message.android.time_to_live",
        ),
        ("two targets", with(&["topic"], json!("news")), "message"),
        ("empty token", with(&["token"], json!("")), "message.token"),
        (
            "too big",
            with(&["data", "envelope"], json!("e".repeat(4096))),
            "message",
        ),
    ];
    for (name, body, field) in cases {
        let (status, error) = send_error(&fx, &bearer, &body).await;
        assert_eq!(status, 400, "case {name}: {error}");
        assert_eq!(error["status"], "INVALID_ARGUMENT", "case {name}");
        assert_eq!(
            field_violation(&error),
            (field, "INVALID_ARGUMENT"),
            "case {name}: {error}"
        );
    }
    let mut no_target = message("t");
    no_target["message"]
        .as_object_mut()
        .unwrap()
        .remove("token");
    let (status, error) = send_error(&fx, &bearer, &no_target).await;
    assert_eq!((status, field_violation(&error).0), (400, "message"));
    let (status, error) = send_error(&fx, &bearer, &json!({ "msg": {} })).await;
    assert_eq!((status, field_violation(&error).0), (400, "msg"));

    assert!(fx.fake.received().is_empty());

    // Access tokens expire after 3599 s by the fake's clock.
    assert_eq!(send(&fx, &bearer, &message("t")).await.status(), 200);
    fx.fake.advance_clock(Duration::from_secs(3600));
    let (status, error) = send_error(&fx, &bearer, &message("t")).await;
    assert_eq!(
        (status, error["status"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
}

#[tokio::test]
async fn fcm_script_is_consumed_in_order_then_200() {
    let fx = fcm().await;
    let bearer = access_token(&fx).await;
    fx.fake.script(
        "reg-a",
        [
            FcmReply::Unregistered,
            FcmReply::InvalidToken,
            FcmReply::SenderIdMismatch,
            FcmReply::QuotaExceeded {
                retry_after: Some(30),
            },
            FcmReply::Internal,
            FcmReply::Unavailable {
                retry_after: Some(5),
            },
            FcmReply::Unavailable { retry_after: None },
        ],
    );
    assert_eq!(send(&fx, &bearer, &message("reg-b")).await.status(), 200);

    let expected: [(u16, &str, &str, Option<&str>); 7] = [
        (404, "NOT_FOUND", "UNREGISTERED", None),
        (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", None),
        (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", None),
        (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", Some("30")),
        (500, "INTERNAL", "INTERNAL", None),
        (503, "UNAVAILABLE", "UNAVAILABLE", Some("5")),
        (503, "UNAVAILABLE", "UNAVAILABLE", None),
    ];
    for (status, google_status, code, retry_after) in expected {
        let response = send(&fx, &bearer, &message("reg-a")).await;
        assert_eq!(response.status(), status);
        assert_eq!(
            response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after,
            "{code}"
        );
        let body: Value = response.json().await.unwrap();
        let error = &body["error"];
        assert_eq!(error["code"], status);
        assert_eq!(error["status"], google_status);
        let details = error["details"].as_array().unwrap();
        let fcm_error = details.last().unwrap();
        assert_eq!(
            fcm_error["@type"],
            "type.googleapis.com/google.firebase.fcm.v1.FcmError"
        );
        assert_eq!(fcm_error["errorCode"], code);
        if code == "INVALID_ARGUMENT" {
            assert_eq!(field_violation(error).0, "message.token");
        }
    }
    assert_eq!(send(&fx, &bearer, &message("reg-a")).await.status(), 200);
    let answers = fx.fake.answers();
    assert_eq!(answers.len(), 9);
    assert_eq!(answers[1].error_code.as_deref(), Some("UNREGISTERED"));
    assert_eq!(answers[1].token.as_deref(), Some("reg-a"));
    assert_eq!(answers[8].error_code, None);
}

#[tokio::test]
async fn fcm_delay_and_drop_over_http2_and_http1() {
    let fx = fcm().await;
    let bearer = access_token(&fx).await;
    fx.fake.script(
        "reg-d",
        [
            FcmReply::Delay(Duration::from_millis(300)),
            FcmReply::DropConnection,
        ],
    );
    let started = Instant::now();
    assert_eq!(send(&fx, &bearer, &message("reg-d")).await.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let error = fx
        .client
        .post(send_url(&fx, PROJECT))
        .bearer_auth(&bearer)
        .json(&message("reg-d"))
        .send()
        .await
        .unwrap_err();
    assert!(
        error.status().is_none() && (error.is_request() || error.is_connect()),
        "{error:?}"
    );
    assert_eq!(send(&fx, &bearer, &message("reg-d")).await.status(), 200);
    assert_eq!(fx.fake.connections(), 2);

    // The same over HTTP/1.1.
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(fx.fake.ca_pem().as_bytes()).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    fx.fake.script("reg-e", [FcmReply::DropConnection]);
    let post = || {
        http1
            .post(send_url(&fx, PROJECT))
            .bearer_auth(&bearer)
            .json(&message("reg-e"))
    };
    let error = post().send().await.unwrap_err();
    assert!(error.status().is_none(), "{error:?}");
    let response = post().send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(fx.fake.received().last().unwrap().http_version, "HTTP/1.1");
    assert_eq!(fx.fake.connections(), 4);

    let answers = tokio::time::timeout(WAIT, fx.fake.wait_for_answers(5))
        .await
        .unwrap();
    let statuses: Vec<Option<u16>> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(200), None, Some(200), None, Some(200)]);
}

#[tokio::test]
async fn fakes_shut_down_and_free_their_port() {
    let fx = fcm().await;
    let base = fx.fake.base_url();
    assert_eq!(
        fx.client
            .post(format!("{base}/nowhere"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    fx.fake.shutdown().await;
    let result = fx.client.post(format!("{base}/token")).send().await;
    assert!(result.is_err(), "{result:?}");
}
