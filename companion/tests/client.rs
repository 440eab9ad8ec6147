//! The companion client against a real in-process bridge (SQLite in a temporary directory, the
//! development identity provider, a manual clock), with the device side driven over GraphQL.
//! The JWKS cache policy is tested against a small counting key server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bridge::clock::Clock as _;
use companion::{
    AccessToken, BridgeConfig, ClientError, CompanionClient, DeliveryStatus, DenyReason,
    EnvelopeError, ErrorCode, JwksCache, JwksError, JwksPolicy, ManualClock, Platform, RequestKind,
    TokenError, TokenProvider,
};
use p256::SecretKey;
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer as _;
use serde_json::{Value, json};

/// Start time of both clocks: 2026-11-22T00:00:00Z.
const T0_MS: i64 = 1_795_305_600_000;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

struct TestBridge {
    state: bridge::state::AppState,
    clock: bridge::clock::ManualClock,
    url: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestBridge {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = bridge::config::Config {
            data_dir: dir.path().to_path_buf(),
            public_url: url.clone(),
            ..bridge::config::Config::default()
        };
        let store = bridge::store::Store::connect(&config.database_url(), 4)
            .await
            .unwrap();
        let clock = bridge::clock::ManualClock::new(T0_MS);
        let state = bridge::state::AppState::with_store(config, store, Arc::new(clock.clone()))
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = state.clone();
        tokio::spawn(async move {
            bridge::serve(listener, serving, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            state,
            clock,
            url,
            http: reqwest::Client::new(),
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn now_secs(&self) -> i64 {
        self.clock.now_secs()
    }

    /// A development-issuer access token for `account`.
    fn companion_token(&self, account: &str) -> String {
        mint_companion_token(&self.state, &self.url, account)
    }

    /// A companion client for `account` on `clock`; tokens are minted per request.
    fn companion(&self, account: &str, clock: &ManualClock) -> CompanionClient {
        self.companion_with(BridgeConfig::new(&self.url), account, clock)
    }

    fn companion_with(
        &self,
        config: BridgeConfig,
        account: &str,
        clock: &ManualClock,
    ) -> CompanionClient {
        let (state, url, account) = (self.state.clone(), self.url.clone(), account.to_owned());
        let tokens = move || {
            let token = mint_companion_token(&state, &url, &account);
            async move { Ok::<_, TokenError>(AccessToken::new(token)) }
        };
        CompanionClient::with_clock(config, Arc::new(tokens), Arc::new(clock.clone())).unwrap()
    }

    async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self
            .http
            .post(format!("{}/graphql", self.url))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap().json().await.unwrap()
    }

    /// Pairs a new device ("Living room", "Quest 3") to `client`'s account.
    async fn pair(&self, client: &CompanionClient) -> TestDevice {
        let key = random_secret_key();
        let public = SigningKey::from(&key)
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec();
        let proof = mint_device(&key, "pairing", &self.url, self.now_secs());
        let resp = self
            .gql(
                None,
                "mutation($i: StartPairingInput!) { startPairing(input: $i) { deviceId code } }",
                json!({"i": {"publicKey": URL_SAFE_NO_PAD.encode(public), "proof": proof,
                             "name": "Living room", "model": "Quest 3"}}),
            )
            .await;
        let started = &resp["data"]["startPairing"];
        let code = started["code"].as_str().expect("pairing code").to_owned();
        let id = started["deviceId"].as_str().unwrap().to_owned();
        let device = client.confirm_pairing(&code, None).await.unwrap();
        assert_eq!(device.id, id);
        assert_eq!(device.status, companion::DeviceStatus::Active);
        TestDevice { key, id }
    }

    /// The device asks for a sign-in or registration; returns (delivery id, the FIDO URL sent).
    async fn request(&self, device: &TestDevice, kind: RequestKind, key: &str) -> (String, String) {
        let fido_url = fido_url(kind, self.now_secs());
        let mutation = match kind {
            RequestKind::SignIn => "requestSignIn",
            RequestKind::Registration => "requestRegistration",
        };
        let query = format!("mutation($i: DeliveryInput!) {{ {mutation}(input: $i) {{ id }} }}");
        let resp = self
            .gql(
                Some(&device.token(self)),
                &query,
                json!({"i": {"fidoUrl": fido_url, "rpId": "example.com", "idempotencyKey": key,
                             "context": {"origin": "https://example.com", "userName": "alice"}}}),
            )
            .await;
        let id = resp["data"][mutation]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{mutation} failed: {resp}"))
            .to_owned();
        (id, fido_url)
    }

    /// The device reports success.
    async fn complete(&self, device: &TestDevice, delivery_id: &str) -> Value {
        self.gql(
            Some(&device.token(self)),
            "mutation($id: ID!) { completeDelivery(id: $id, outcome: SUCCESS) { id status } }",
            json!({"id": delivery_id}),
        )
        .await
    }
}

fn mint_companion_token(state: &bridge::state::AppState, url: &str, account: &str) -> String {
    state
        .dev_issuer
        .as_ref()
        .expect("development issuer")
        .mint(account, url, state.clock.now_secs(), 3600)
        .unwrap()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).unwrap();
    out
}

fn random_secret_key() -> SecretKey {
    loop {
        if let Ok(key) = SecretKey::from_slice(&random_bytes::<32>()) {
            return key;
        }
    }
}

fn mint_device(key: &SecretKey, kid: &str, audience: &str, now: i64) -> String {
    let jti: String = random_bytes::<16>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    bridge::auth::device::mint_device_token(key, kid, audience, now, 120, &jti).unwrap()
}

fn fido_url(kind: RequestKind, now: i64) -> String {
    hybrid::url::FidoUrl::new(
        random_secret_key().public_key(),
        hybrid::QrSecret::new(random_bytes::<16>()),
        kind.to_hybrid(),
        u64::try_from(now).unwrap(),
        true,
    )
    .encode()
}

struct TestDevice {
    key: SecretKey,
    id: String,
}

impl TestDevice {
    fn token(&self, bridge: &TestBridge) -> String {
        mint_device(&self.key, &self.id, &bridge.url, bridge.now_secs())
    }
}

fn api_code(err: &ClientError) -> ErrorCode {
    err.code()
        .unwrap_or_else(|| panic!("expected a bridge error code, got {err:?}"))
        .clone()
}

fn envelope_error(err: ClientError) -> EnvelopeError {
    match err {
        ClientError::Envelope(e) => e,
        other => panic!("expected an envelope error, got {other:?}"),
    }
}

/// A ready account: a client with its install registered and a paired device.
async fn setup(bridge: &TestBridge, account: &str) -> (CompanionClient, ManualClock, TestDevice) {
    let clock = ManualClock::new(T0_MS);
    let client = bridge.companion(account, &clock);
    client
        .register(
            Platform::Apns,
            &format!("apns-token-{account}"),
            "com.example.tether",
            "Alice's iPhone",
        )
        .await
        .unwrap();
    let device = bridge.pair(&client).await;
    (client, clock, device)
}

/// `token` re-signed with a key the bridge does not publish, under `kid`.
fn resigned(token: &str, kid: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let header = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&json!({"alg": "ES256", "typ": "JWT", "kid": kid})).unwrap());
    let input = format!("{header}.{payload}");
    let key = SigningKey::from(&random_secret_key());
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
}

// ---------------------------------------------------------------------------------------------
// The flow
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sign_in_round_trip() {
    let bridge = TestBridge::start().await;
    let clock = ManualClock::new(T0_MS);
    let client = bridge.companion("alice", &clock);

    let registered = client
        .register(
            Platform::Apns,
            "apns-token-1",
            "com.example.tether",
            "Alice's iPhone",
        )
        .await
        .unwrap();
    assert!(registered.id.starts_with("cmp_"), "{registered:?}");
    assert_eq!(registered.platform, Platform::Apns);
    assert_eq!(registered.display_name, "Alice's iPhone");
    assert!(registered.active);
    assert_eq!(
        client.companion_id().as_deref(),
        Some(registered.id.as_str())
    );
    assert_eq!(client.companions().await.unwrap(), vec![registered.clone()]);

    let device = bridge.pair(&client).await;
    let (delivery_id, sent_url) = bridge.request(&device, RequestKind::SignIn, "k1").await;

    // Pull fallback lists it.
    let pending = client.pending_deliveries().await.unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let delivery = &pending[0];
    assert_eq!(delivery.id, delivery_id);
    assert_eq!(delivery.kind, RequestKind::SignIn);
    assert!(delivery.status.is_open(), "{:?}", delivery.status);

    // Its envelope verifies and presents the context.
    let envelope = client.verify_envelope(&delivery.envelope).await.unwrap();
    assert_eq!(client.jwks().fetch_count(), 1);
    assert_eq!(envelope.delivery_id(), delivery_id);
    assert_eq!(envelope.account_id(), client.account_id().await.unwrap());
    assert_eq!(envelope.device_id(), device.id);
    assert_eq!(envelope.device_name(), "Living room");
    assert_eq!(envelope.device_model(), "Quest 3");
    assert_eq!(envelope.rp_id(), "example.com");
    assert_eq!(envelope.kind(), RequestKind::SignIn);
    assert_eq!(envelope.number_code(), delivery.number_code);
    assert_eq!(envelope.number_code().len(), 2);
    assert_eq!(envelope.issued_at(), T0_MS / 1000);
    assert_eq!(envelope.expires_at(), T0_MS / 1000 + 300);
    assert_eq!(
        envelope.prompt(),
        "Sign in to example.com on Quest 3 'Living room'?"
    );

    // Watch it while it is claimed and completed.
    let mut watch = client.watch_delivery(&delivery_id).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.id, delivery_id);
    assert!(first.status.is_open(), "{:?}", first.status);

    let claimed = client.claim(envelope.delivery_id()).await.unwrap();
    assert_eq!(claimed.expose(), sent_url);
    assert_eq!(claimed.delivery_id(), delivery_id);
    assert_eq!(claimed.kind(), RequestKind::SignIn);
    assert_eq!(
        claimed.parse().unwrap().request_type,
        hybrid::url::RequestType::GetAssertion
    );
    let shown = format!("{claimed:?}");
    assert!(!shown.contains(&sent_url[6..]), "{shown}");

    // The URL comes once.
    let again = client.claim(&delivery_id).await.unwrap_err();
    assert_eq!(api_code(&again), ErrorCode::AlreadyUsed, "{again:?}");

    // Skip states the watch may have coalesced; it must reach CLAIMED, then COMPLETED, then end.
    let mut seen = Vec::new();
    loop {
        let d = watch.next().await.unwrap().unwrap();
        seen.push(d.status);
        if d.status == DeliveryStatus::Claimed {
            break;
        }
        assert!(d.status.is_open(), "{seen:?}");
    }
    let done = bridge.complete(&device, &delivery_id).await;
    assert_eq!(
        done["data"]["completeDelivery"]["status"], "COMPLETED",
        "{done}"
    );
    let last = watch.next().await.unwrap().unwrap();
    assert_eq!(last.status, DeliveryStatus::Completed);
    assert!(watch.next().await.is_none());

    let delivery = client.delivery(&delivery_id).await.unwrap();
    assert_eq!(delivery.status, DeliveryStatus::Completed);
    assert!(client.pending_deliveries().await.unwrap().is_empty());
}

#[tokio::test]
async fn incoming_deliveries_stream_pending_then_new() {
    let bridge = TestBridge::start().await;
    let (client, _clock, device) = setup(&bridge, "alice").await;
    let (first, _) = bridge.request(&device, RequestKind::SignIn, "i1").await;
    let mut incoming = client.incoming_deliveries().await.unwrap();
    let got = incoming.next().await.unwrap().unwrap();
    assert_eq!(got.id, first);
    let (second, _) = bridge
        .request(&device, RequestKind::Registration, "i2")
        .await;
    let got = incoming.next().await.unwrap().unwrap();
    assert_eq!(got.id, second);
    assert_eq!(got.kind, RequestKind::Registration);
    let verified = client.verify_envelope(&got.envelope).await.unwrap();
    assert_eq!(verified.delivery_id(), second);
    incoming.close().await;
}

#[tokio::test]
async fn registration_envelope_and_claim() {
    let bridge = TestBridge::start().await;
    let (client, _clock, device) = setup(&bridge, "alice").await;
    let (id, sent_url) = bridge
        .request(&device, RequestKind::Registration, "r1")
        .await;
    let delivery = client.delivery(&id).await.unwrap();
    assert_eq!(delivery.kind, RequestKind::Registration);
    let envelope = client.verify_envelope(&delivery.envelope).await.unwrap();
    assert_eq!(envelope.kind(), RequestKind::Registration);
    assert_eq!(
        envelope.prompt(),
        "Create a passkey for example.com on Quest 3 'Living room'?"
    );
    let claimed = client.claim(&id).await.unwrap();
    assert_eq!(claimed.kind(), RequestKind::Registration);
    assert_eq!(claimed.expose(), sent_url);
}

#[tokio::test]
async fn deny_ends_the_delivery() {
    let bridge = TestBridge::start().await;
    let (client, _clock, device) = setup(&bridge, "alice").await;
    let (id, _) = bridge.request(&device, RequestKind::SignIn, "d1").await;

    let denied = client.deny(&id, DenyReason::NotMe).await.unwrap();
    assert_eq!(denied.status, DeliveryStatus::Denied);
    assert_eq!(denied.reason.as_deref(), Some("NOT_ME"));

    let claim = client.claim(&id).await.unwrap_err();
    assert_eq!(api_code(&claim), ErrorCode::AlreadyUsed);
    let deny = client.deny(&id, DenyReason::Declined).await.unwrap_err();
    assert_eq!(api_code(&deny), ErrorCode::AlreadyUsed);
    assert!(client.pending_deliveries().await.unwrap().is_empty());

    // A plain decline.
    let (id, _) = bridge.request(&device, RequestKind::SignIn, "d2").await;
    let denied = client.deny(&id, DenyReason::Declined).await.unwrap();
    assert_eq!(denied.reason.as_deref(), Some("DECLINED"));
}

#[tokio::test]
async fn other_account_cannot_claim_or_verify() {
    let bridge = TestBridge::start().await;
    let (alice, _clock, device) = setup(&bridge, "alice").await;
    let (id, sent_url) = bridge.request(&device, RequestKind::SignIn, "o1").await;
    let envelope = alice.delivery(&id).await.unwrap().envelope;

    let bob_clock = ManualClock::new(T0_MS);
    let bob = bridge.companion("bob", &bob_clock);
    bob.register(
        Platform::Fcm,
        "fcm-token-bob",
        "com.example.tether",
        "Bob's phone",
    )
    .await
    .unwrap();
    let claim = bob.claim(&id).await.unwrap_err();
    assert_eq!(api_code(&claim), ErrorCode::NotFound, "{claim:?}");
    let deny = bob.deny(&id, DenyReason::NotMe).await.unwrap_err();
    assert_eq!(api_code(&deny), ErrorCode::NotFound);
    let read = bob.delivery(&id).await.unwrap_err();
    assert_eq!(api_code(&read), ErrorCode::NotFound);
    assert!(bob.pending_deliveries().await.unwrap().is_empty());
    let mut watch = bob.watch_delivery(&id).await.unwrap();
    let refused = watch.next().await.unwrap().unwrap_err();
    assert_eq!(api_code(&refused), ErrorCode::NotFound);
    assert!(watch.next().await.is_none());

    // Bob's phone refuses Alice's envelope: it is for another account.
    let err = bob.verify_envelope(&envelope).await.unwrap_err();
    assert_eq!(envelope_error(err), EnvelopeError::WrongAccount);

    // Alice still can.
    assert_eq!(alice.claim(&id).await.unwrap().expose(), sent_url);
}

#[tokio::test]
async fn claim_after_the_deadline_is_expired() {
    let bridge = TestBridge::start().await;
    let (client, _clock, device) = setup(&bridge, "alice").await;
    let (id, _) = bridge.request(&device, RequestKind::SignIn, "e1").await;
    bridge.clock.advance_ms(301_000);
    let err = client.claim(&id).await.unwrap_err();
    assert_eq!(api_code(&err), ErrorCode::Expired, "{err:?}");
}

#[tokio::test]
async fn push_payload_shapes() {
    let bridge = TestBridge::start().await;
    let (client, _clock, device) = setup(&bridge, "alice").await;
    let (id, _) = bridge.request(&device, RequestKind::SignIn, "p1").await;
    let envelope = client.delivery(&id).await.unwrap().envelope;

    let apns = json!({"aps": {"alert": {"title": "Sign-in request"}, "mutable-content": 1},
                      "envelope": envelope});
    let fcm_data_map = json!({"envelope": envelope, "delivery_id": id});
    let fcm_message = json!({"data": {"envelope": envelope}, "priority": "high"});
    let fcm_v1 = json!({"message": {"token": "t", "data": {"envelope": envelope}}});
    for payload in [apns, fcm_data_map, fcm_message, fcm_v1] {
        let verified = client.handle_push(&payload.to_string()).await.unwrap();
        assert_eq!(verified.delivery_id(), id, "{payload}");
    }
    let err = client
        .handle_push(r#"{"aps":{"alert":"hi"}}"#)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Push(companion::PushPayloadError::NoEnvelope)
        ),
        "{err:?}"
    );
    let err = client.handle_push("not json").await.unwrap_err();
    assert!(
        matches!(err, ClientError::Push(companion::PushPayloadError::NotJson)),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Envelope failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_envelopes_fail_with_their_error() {
    let bridge = TestBridge::start().await;
    let (client, clock, device) = setup(&bridge, "alice").await;
    let (id, _) = bridge.request(&device, RequestKind::SignIn, "b1").await;
    let envelope = client.delivery(&id).await.unwrap().envelope;
    client.verify_envelope(&envelope).await.unwrap();

    // Tampered: one payload character changed.
    let (head, rest) = envelope.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut bytes = payload.as_bytes().to_vec();
    bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{head}.{}.{sig}", String::from_utf8(bytes).unwrap());
    let err = client.verify_envelope(&tampered).await.unwrap_err();
    assert_eq!(envelope_error(err), EnvelopeError::BadSignature);

    // Wrong audience and wrong issuer: clients configured for something else.
    let mut config = BridgeConfig::new(&bridge.url);
    config.envelope_audience = "another-app".into();
    let other = bridge.companion_with(config, "alice", &clock);
    let err = other.verify_envelope(&envelope).await.unwrap_err();
    assert_eq!(envelope_error(err), EnvelopeError::WrongAudience);
    let mut config = BridgeConfig::new(&bridge.url);
    config.issuer = Some("https://bridge.example.com".into());
    let other = bridge.companion_with(config, "alice", &clock);
    let err = other.verify_envelope(&envelope).await.unwrap_err();
    assert_eq!(envelope_error(err), EnvelopeError::WrongIssuer);

    // Not ES256.
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"x"}"#);
    let err = client
        .verify_envelope(&format!("{none_header}.{payload}.{sig}"))
        .await
        .unwrap_err();
    assert_eq!(envelope_error(err), EnvelopeError::UnsupportedAlgorithm);

    // Expired: the phone's clock passes the deadline plus the 30 s leeway.
    clock.advance(Duration::from_secs(329));
    client.verify_envelope(&envelope).await.unwrap();
    clock.advance(Duration::from_secs(1));
    let err = client.verify_envelope(&envelope).await.unwrap_err();
    assert_eq!(envelope_error(err), EnvelopeError::Expired);
}

#[tokio::test]
async fn unknown_kid_refetches_once_per_interval() {
    let bridge = TestBridge::start().await;
    let (client, clock, device) = setup(&bridge, "alice").await;
    let (id, _) = bridge.request(&device, RequestKind::SignIn, "u1").await;
    let envelope = client.delivery(&id).await.unwrap().envelope;
    client.verify_envelope(&envelope).await.unwrap();
    assert_eq!(client.jwks().fetch_count(), 1);

    // A made-up key id: one refetch, then none until the interval has passed.
    clock.advance(Duration::from_secs(10));
    let forged = resigned(&envelope, "not-a-bridge-key");
    for _ in 0..5 {
        let err = client.verify_envelope(&forged).await.unwrap_err();
        assert_eq!(envelope_error(err), EnvelopeError::UnknownKey);
    }
    assert_eq!(client.jwks().fetch_count(), 2);
    clock.advance(Duration::from_secs(9));
    let err = client.verify_envelope(&forged).await.unwrap_err();
    assert_eq!(envelope_error(err), EnvelopeError::UnknownKey);
    assert_eq!(client.jwks().fetch_count(), 2);
    clock.advance(Duration::from_secs(1));
    let err = client.verify_envelope(&forged).await.unwrap_err();
    assert_eq!(envelope_error(err), EnvelopeError::UnknownKey);
    assert_eq!(client.jwks().fetch_count(), 3);

    // The bridge rotates its key: the next envelope names the new key, which the phone fetches
    // (once the interval since the last fetch has passed) and trusts.
    let old_kid = bridge.state.keys.read().unwrap().active_kid().to_owned();
    bridge.state.keys.write().unwrap().rotate(bridge.now_secs());
    let new_kid = bridge.state.keys.read().unwrap().active_kid().to_owned();
    assert_ne!(old_kid, new_kid);
    let (id, _) = bridge.request(&device, RequestKind::SignIn, "u2").await;
    let rotated = client.delivery(&id).await.unwrap().envelope;
    let err = client.verify_envelope(&rotated).await.unwrap_err();
    assert_eq!(envelope_error(err), EnvelopeError::UnknownKey);
    assert_eq!(client.jwks().fetch_count(), 3, "within the interval");
    clock.advance(Duration::from_secs(10));
    let verified = client.verify_envelope(&rotated).await.unwrap();
    assert_eq!(verified.kid(), new_kid);
    assert_eq!(client.jwks().fetch_count(), 4);
    // The retired key still verifies its envelopes.
    client.verify_envelope(&envelope).await.unwrap();
    assert_eq!(client.jwks().fetch_count(), 4);
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

/// Hands out a broken token until told it was rejected, then good ones.
struct RecoveringTokens {
    good: String,
    rejected: AtomicUsize,
    asked: AtomicUsize,
}

impl TokenProvider for RecoveringTokens {
    fn access_token(&self) -> companion::client::TokenFuture<'_> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let token = if self.rejected.load(Ordering::SeqCst) == 0 {
            "not-a-token".to_owned()
        } else {
            self.good.clone()
        };
        Box::pin(async move { Ok(AccessToken::new(token)) })
    }

    fn token_rejected(&self, token: &AccessToken) {
        assert_eq!(token.expose(), "not-a-token");
        self.rejected.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn rejected_token_is_refreshed_once() {
    let bridge = TestBridge::start().await;
    let tokens = Arc::new(RecoveringTokens {
        good: bridge.companion_token("alice"),
        rejected: AtomicUsize::new(0),
        asked: AtomicUsize::new(0),
    });
    let client = CompanionClient::with_clock(
        BridgeConfig::new(&bridge.url),
        tokens.clone(),
        Arc::new(ManualClock::new(T0_MS)),
    )
    .unwrap();
    client.companions().await.unwrap();
    assert_eq!(tokens.rejected.load(Ordering::SeqCst), 1);
    assert_eq!(tokens.asked.load(Ordering::SeqCst), 2);

    // A provider that never recovers: the error comes back after one retry.
    let broken = CompanionClient::new(BridgeConfig::new(&bridge.url), || async {
        Ok::<_, TokenError>(AccessToken::new("still-not-a-token"))
    })
    .unwrap();
    let err = broken.companions().await.unwrap_err();
    assert_eq!(api_code(&err), ErrorCode::Unauthenticated);
    let failing = CompanionClient::new(BridgeConfig::new(&bridge.url), || async {
        Err::<AccessToken, _>(TokenError::new("signed out"))
    })
    .unwrap();
    assert!(matches!(
        failing.companions().await.unwrap_err(),
        ClientError::Token(_)
    ));
}

#[tokio::test]
async fn push_token_update_and_remove() {
    let bridge = TestBridge::start().await;
    let clock = ManualClock::new(T0_MS);
    let client = bridge.companion("alice", &clock);
    let first = client
        .register(Platform::Fcm, "fcm-1", "com.example.tether", "Pixel")
        .await
        .unwrap();
    let updated = client.update_push_token(&first.id, "fcm-2").await.unwrap();
    assert_eq!(updated.id, first.id);
    assert!(updated.active);
    assert!(client.remove(&first.id).await.unwrap());
    assert_eq!(client.companion_id(), None);
    assert!(client.companions().await.unwrap().is_empty());
    let err = client
        .update_push_token(&first.id, "fcm-3")
        .await
        .unwrap_err();
    assert_eq!(api_code(&err), ErrorCode::NotFound);
}

// ---------------------------------------------------------------------------------------------
// JWKS cache policy against a counting key server
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct KeyServer {
    hits: Arc<AtomicUsize>,
    body: Arc<std::sync::Mutex<(u16, String, Value)>>,
}

impl KeyServer {
    fn set(&self, status: u16, cache_control: &str, keys: Vec<Value>) {
        *self.body.lock().unwrap() = (status, cache_control.to_owned(), json!({ "keys": keys }));
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn key_server() -> (KeyServer, reqwest::Url) {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let server = KeyServer {
        hits: Arc::new(AtomicUsize::new(0)),
        body: Arc::new(std::sync::Mutex::new((
            200,
            String::new(),
            json!({"keys": []}),
        ))),
    };
    let shared = server.clone();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let s = shared.clone();
            async move {
                s.hits.fetch_add(1, Ordering::SeqCst);
                let (status, cache, body) = s.body.lock().unwrap().clone();
                let mut response =
                    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
                if !cache.is_empty() {
                    response
                        .headers_mut()
                        .insert(header::CACHE_CONTROL, cache.parse().unwrap());
                }
                response
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let url = format!("http://{addr}/.well-known/jwks.json")
        .parse()
        .unwrap();
    (server, url)
}

fn jwk(kid: &str) -> Value {
    let key = SigningKey::from(&random_secret_key());
    let point = key.verifying_key().to_sec1_point(false);
    let bytes = point.as_bytes();
    json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
           "x": URL_SAFE_NO_PAD.encode(&bytes[1..33]), "y": URL_SAFE_NO_PAD.encode(&bytes[33..])})
}

#[tokio::test]
async fn jwks_cache_policy() {
    let (server, url) = key_server().await;
    server.set(200, "", vec![jwk("a")]);
    let clock = ManualClock::new(T0_MS);
    let mut policy = JwksPolicy::default();
    policy.max_age = Duration::from_secs(60);
    policy.min_refetch_interval = Duration::from_secs(10);
    let cache = JwksCache::new(url, reqwest::Client::new(), policy, Arc::new(clock.clone()));

    // Fetched on first use, then served from the cache.
    cache.key("a").await.unwrap();
    cache.key("a").await.unwrap();
    assert_eq!(server.hits(), 1);

    // An unknown kid refetches once; more unknown kids within the interval do not.
    clock.advance(Duration::from_secs(10));
    assert_eq!(cache.key("b").await.unwrap_err(), JwksError::UnknownKey);
    assert_eq!(server.hits(), 2);
    for kid in ["b", "c", "d", "b"] {
        assert_eq!(cache.key(kid).await.unwrap_err(), JwksError::UnknownKey);
    }
    assert_eq!(server.hits(), 2);

    // Concurrent lookups share one fetch.
    clock.advance(Duration::from_secs(10));
    let lookups: Vec<_> = (0..8).map(|_| cache.key("c")).collect();
    for result in futures_util::future::join_all(lookups).await {
        assert_eq!(result.unwrap_err(), JwksError::UnknownKey);
    }
    assert_eq!(server.hits(), 3);

    // A new key becomes usable at the first refetch the interval allows.
    server.set(200, "", vec![jwk("a"), jwk("b")]);
    clock.advance(Duration::from_secs(5));
    assert_eq!(cache.key("b").await.unwrap_err(), JwksError::UnknownKey);
    assert_eq!(server.hits(), 3);
    clock.advance(Duration::from_secs(5));
    cache.key("b").await.unwrap();
    assert_eq!(server.hits(), 4);

    // Max age: a known key is fetched again once the set is 60 s old.
    clock.advance(Duration::from_secs(59));
    cache.key("a").await.unwrap();
    assert_eq!(server.hits(), 4);
    clock.advance(Duration::from_secs(1));
    cache.key("a").await.unwrap();
    assert_eq!(server.hits(), 5);

    // A shorter Cache-Control max-age wins.
    server.set(200, "public, max-age=5", vec![jwk("a")]);
    assert_eq!(cache.refresh().await.unwrap(), 1);
    assert_eq!(server.hits(), 6);
    clock.advance(Duration::from_secs(4));
    cache.key("a").await.unwrap();
    assert_eq!(server.hits(), 6);
    clock.advance(Duration::from_secs(6));
    cache.key("a").await.unwrap();
    assert_eq!(server.hits(), 7);
    // ... and the key "b" the bridge stopped publishing is gone.
    clock.advance(Duration::from_secs(10));
    assert_eq!(cache.key("b").await.unwrap_err(), JwksError::UnknownKey);
    assert_eq!(server.hits(), 8);

    // A stale set is not used when the refetch fails, and failures are not retried in a storm.
    server.set(503, "", vec![]);
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        cache.key("a").await.unwrap_err(),
        JwksError::Fetch("HTTP 503".into())
    );
    assert_eq!(server.hits(), 9);
    for _ in 0..3 {
        assert_eq!(cache.key("a").await.unwrap_err(), JwksError::Unavailable);
    }
    assert_eq!(server.hits(), 9);
    server.set(200, "", vec![jwk("a")]);
    clock.advance(Duration::from_secs(10));
    cache.key("a").await.unwrap();
    assert_eq!(server.hits(), 10);
    assert_eq!(cache.fetch_count(), 10);

    // Keys other than ES256 P-256 are ignored.
    let mut p384 = jwk("p384");
    p384["crv"] = json!("P-384");
    let mut no_alg = jwk("no-alg");
    no_alg.as_object_mut().unwrap().remove("alg");
    server.set(200, "", vec![jwk("a"), p384, no_alg]);
    cache.refresh().await.unwrap();
    assert_eq!(cache.cached_kids().await, vec!["a".to_owned()]);
}
