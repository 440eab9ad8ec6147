#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The device agent's bridge client against a real bridge on 127.0.0.1:0 (SQLite, the
//! development issuer, a manual clock shared with the agent).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bridge::clock::{Clock as _, ManualClock};
use bridge::config::Config;
use bridge::state::AppState;
use bridge::store::Store;
use device_agent::bridge_client::{
    BridgeClient, BridgeConfig, BridgeError, Clock, DeliveryInput, DeliveryKind, DeliveryOutcome,
    DeliveryStatus, ErrorCode, PairingStatus,
};
use device_agent::device_key::DeviceKey;
use futures_util::StreamExt as _;
use hybrid::url::{FidoUrl, RequestType};
use p256::SecretKey;
use p256::elliptic_curve::Generate as _;
use serde_json::{Value, json};

/// 2026-11-22T00:00:00Z.
const T0_MS: i64 = 1_795_305_600_000;
/// The bridge's public URL: the device tokens' audience (deliberately not its socket address).
const PUBLIC_URL: &str = "http://bridge.test";
const ACCOUNT: &str = "alice";

/// The agent reads the bridge's manual clock.
#[derive(Debug)]
struct BridgeTime(ManualClock);

impl Clock for BridgeTime {
    fn now_unix_secs(&self) -> i64 {
        self.0.now_secs()
    }
}

struct TestBridge {
    state: AppState,
    clock: ManualClock,
    addr: SocketAddr,
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
        let config = Config {
            data_dir: dir.path().to_owned(),
            public_url: PUBLIC_URL.into(),
            ..Config::default()
        };
        let store = Store::connect(&config.database_url(), 4).await.unwrap();
        let clock = ManualClock::new(T0_MS);
        let state = AppState::with_store(config, store, Arc::new(clock.clone()))
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
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
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn config_for(&self, url: String) -> BridgeConfig {
        let mut config = BridgeConfig::new(url);
        config.audience = Some(PUBLIC_URL.into());
        // So long that a test which sees a change in time proves the subscription delivered
        // it; the polling test sets its own.
        config.poll_interval = Duration::from_secs(3600);
        config.connect_timeout = Duration::from_secs(5);
        config.request_timeout = Duration::from_secs(10);
        config
    }

    fn client(&self, key: &DeviceKey) -> BridgeClient {
        self.client_at(self.config_for(self.url()), key)
    }

    fn client_at(&self, config: BridgeConfig, key: &DeviceKey) -> BridgeClient {
        BridgeClient::with_clock(config, key, Arc::new(BridgeTime(self.clock.clone()))).unwrap()
    }

    fn companion_token(&self) -> String {
        self.state
            .dev_issuer
            .as_ref()
            .unwrap()
            .mint(ACCOUNT, PUBLIC_URL, self.clock.now_secs(), 3600)
            .unwrap()
    }

    /// A GraphQL call as the account's companion app; returns `data.<field>`.
    async fn companion(&self, query: &str, variables: Value, field: &str) -> Value {
        let resp: Value = self
            .http
            .post(format!("{}/graphql", self.url()))
            .bearer_auth(self.companion_token())
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = &resp["data"][field];
        assert!(!data.is_null(), "companion call failed: {resp}");
        data.clone()
    }

    async fn register_companion(&self) {
        self.companion(
            "mutation($i: RegisterCompanionInput!) { registerCompanion(input: $i) { id } }",
            json!({"i": {"platform": "APNS", "pushToken": "a1b2c3d4e5f6", "appId": "com.example.tether", "displayName": "Alice's iPhone"}}),
            "registerCompanion",
        )
        .await;
    }

    async fn confirm(&self, code: &str) -> Value {
        self.companion(
            "mutation($c: String!) { confirmPairing(code: $c) { id status } }",
            json!({"c": code}),
            "confirmPairing",
        )
        .await
    }

    /// A paired device (and a registered companion) with its client.
    async fn paired_client(&self) -> BridgeClient {
        self.register_companion().await;
        let key = DeviceKey::generate().unwrap();
        let mut client = self.client(&key);
        let started = client
            .start_pairing("Living room", "Quest 3")
            .await
            .unwrap();
        assert_eq!(self.confirm(&started.code).await["status"], "ACTIVE");
        client
    }

    fn sign_in_input(&self, key: &str) -> DeliveryInput {
        DeliveryInput {
            fido_url: fido_url(self.clock.now_secs(), RequestType::GetAssertion),
            rp_id: "example.com".into(),
            idempotency_key: key.into(),
            origin: Some("https://example.com".into()),
            user_name: Some("alice".into()),
        }
    }
}

fn fido_url(now: i64, request_type: RequestType) -> String {
    let mut secret = [0u8; 16];
    getrandom::fill(&mut secret).unwrap();
    FidoUrl::new(
        SecretKey::generate().public_key(),
        hybrid::QrSecret::new(secret),
        request_type,
        u64::try_from(now).unwrap(),
        true,
    )
    .encode()
}

#[tokio::test]
async fn tokens_verify_with_the_bridge() {
    let bridge = TestBridge::start().await;
    let key = DeviceKey::generate().unwrap();
    let client = bridge.client(&key);
    let token = client.mint_token("dev_abc").unwrap();
    let public = bridge::auth::device::DevicePublicKey::from_sec1(&key.public_key_sec1()).unwrap();
    let claims = bridge::auth::device::verify_device_token(
        token.as_str(),
        &public,
        "dev_abc",
        PUBLIC_URL,
        bridge.clock.now_secs(),
    )
    .unwrap();
    assert_eq!(claims.device_id, "dev_abc");
    assert_eq!(claims.issued_at, T0_MS / 1000);
    assert_eq!(claims.expires_at - claims.issued_at, 60);
    assert_eq!(claims.jti.len(), 22, "16 random bytes in base64url");
    let second = client.mint_token("dev_abc").unwrap();
    assert_ne!(token, second, "every token is fresh");
    // A wrong audience is refused.
    assert!(
        bridge::auth::device::verify_device_token(
            token.as_str(),
            &public,
            "dev_abc",
            "https://elsewhere.example",
            bridge.clock.now_secs(),
        )
        .is_err()
    );
}

#[tokio::test]
async fn pairs_and_requests_a_sign_in() {
    let bridge = TestBridge::start().await;
    bridge.register_companion().await;
    let key = DeviceKey::generate().unwrap();
    let mut client = bridge.client(&key);
    assert!(matches!(
        client.request_sign_in(&bridge.sign_in_input("k")).await,
        Err(BridgeError::NotPaired)
    ));
    let started = client
        .start_pairing("Living room", "Quest 3")
        .await
        .unwrap();
    assert_eq!(client.device_id(), Some(started.device_id.as_str()));
    assert!(!started.code.is_empty());

    let pending = client.pairing_status(&started.pairing_id).await.unwrap();
    assert_eq!(pending.status, PairingStatus::Pending);
    assert_eq!(pending.device_id, started.device_id);

    // Wait (subscription) while the companion confirms the code.
    let waiter = {
        let client = client.clone();
        let id = started.pairing_id.clone();
        tokio::spawn(async move { client.wait_for_pairing(&id).await })
    };
    let device = bridge.confirm(&started.code).await;
    assert_eq!(device["id"], started.device_id.as_str());
    let confirmed = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(confirmed.status, PairingStatus::Confirmed);
    assert_eq!(confirmed.id, started.pairing_id);

    // A sign-in request is accepted.
    let input = bridge.sign_in_input("idem-1");
    let delivery = client.request_sign_in(&input).await.unwrap();
    assert_eq!(delivery.kind, DeliveryKind::SignIn);
    assert!(
        matches!(
            delivery.status,
            DeliveryStatus::Queued | DeliveryStatus::Sent
        ),
        "{delivery:?}"
    );
    assert_eq!(delivery.rp_id, "example.com");
    assert_eq!(delivery.device_id, started.device_id);
    assert_eq!(delivery.device_name, "Living room");
    assert_eq!(delivery.device_model, "Quest 3");
    assert_eq!(delivery.origin.as_deref(), Some("https://example.com"));
    assert_eq!(delivery.user_name.as_deref(), Some("alice"));
    assert_eq!(delivery.number_code.len(), 2);

    // The same idempotency key gives the same delivery; another key a new one.
    let again = client.request_sign_in(&input).await.unwrap();
    assert_eq!(again.id, delivery.id);
    let other = client
        .request_sign_in(&bridge.sign_in_input("idem-2"))
        .await
        .unwrap();
    assert_ne!(other.id, delivery.id);
    assert_eq!(client.delivery(&delivery.id).await.unwrap().id, delivery.id);

    // A registration needs an "mc" URL: the bridge's INVALID_INPUT comes through.
    let err = client.request_registration(&input).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InvalidInput), "{err:?}");
    let mut mc = bridge.sign_in_input("idem-3");
    mc.fido_url = fido_url(bridge.clock.now_secs(), RequestType::MakeCredential);
    let registration = client.request_registration(&mc).await.unwrap();
    assert_eq!(registration.kind, DeliveryKind::Registration);

    // An unknown delivery id.
    let err = client.delivery("dlv_0123456789abcdef").await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::NotFound), "{err:?}");
}

#[tokio::test]
async fn a_revoked_device_is_rejected_with_the_code() {
    let bridge = TestBridge::start().await;
    let client = bridge.paired_client().await;
    let id = client.device_id().unwrap().to_owned();
    let before = client
        .request_sign_in(&bridge.sign_in_input("before-revoke"))
        .await
        .unwrap();
    let revoked = bridge
        .companion(
            "mutation($id: ID!) { revokeDevice(id: $id) { id status } }",
            json!({"id": id}),
            "revokeDevice",
        )
        .await;
    assert_eq!(revoked["status"], "REVOKED");
    let err = client
        .request_sign_in(&bridge.sign_in_input("after-revoke"))
        .await
        .unwrap_err();
    match &err {
        BridgeError::Rejected {
            code,
            message,
            retry_after_secs,
        } => {
            assert_eq!(*code, ErrorCode::Unauthenticated);
            assert!(message.contains("revoked"), "{message}");
            assert_eq!(*retry_after_secs, None);
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // The watch ends with the same rejection instead of polling forever.
    let mut watch = client.watch_delivery(&before.id);
    let first = watch.next().await.unwrap().unwrap_err();
    assert_eq!(first.code(), Some(&ErrorCode::Unauthenticated), "{first:?}");
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn an_unreachable_bridge_is_reported_as_such() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let key = DeviceKey::generate().unwrap();
    let mut config = BridgeConfig::new(format!("http://{addr}"));
    config.poll_interval = Duration::from_millis(5);
    config.max_failed_polls = 2;
    let mut client = BridgeClient::new(config, &key).unwrap();
    let err = client.start_pairing("Hub", "Model").await.unwrap_err();
    assert!(matches!(err, BridgeError::Unreachable(_)), "{err:?}");
    let client = client.with_device_id("dev_1");
    let err = client
        .complete_delivery("dlv_1", DeliveryOutcome::Cancelled)
        .await
        .unwrap_err();
    assert!(matches!(err, BridgeError::Unreachable(_)), "{err:?}");
    // Socket and polls both fail: the watch ends with Unreachable.
    let mut watch = client.watch_delivery("dlv_1");
    let err = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, BridgeError::Unreachable(_)), "{err:?}");
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn plaintext_to_a_remote_bridge_needs_the_danger_option() {
    let key = DeviceKey::generate().unwrap();
    let err = BridgeClient::new(BridgeConfig::new("http://bridge.example.com"), &key).unwrap_err();
    assert!(matches!(err, BridgeError::Config(_)), "{err:?}");
    let mut config = BridgeConfig::new("http://bridge.example.com");
    config.danger_allow_http = true;
    let client = BridgeClient::new(config, &key).unwrap();
    assert_eq!(client.audience(), "http://bridge.example.com");
    let client = BridgeClient::new(BridgeConfig::new("https://bridge.example.com/"), &key).unwrap();
    assert_eq!(client.audience(), "https://bridge.example.com");
    let mut config = BridgeConfig::new("https://bridge.example.com");
    config.extra_ca_pem = Some(b"not a certificate".to_vec());
    assert!(matches!(
        BridgeClient::new(config, &key),
        Err(BridgeError::Config(_))
    ));
}

/// Reads the watch until a final status; returns every status seen.
async fn statuses_until_final(
    watch: &mut device_agent::bridge_client::DeliveryWatch,
) -> Vec<(DeliveryStatus, Option<String>)> {
    let mut seen = Vec::new();
    loop {
        let delivery = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("a status change within 10 s")
            .expect("the watch ended before a final status")
            .unwrap();
        seen.push((delivery.status, delivery.reason.clone()));
        if delivery.status.is_final() {
            return seen;
        }
    }
}

#[tokio::test]
async fn the_subscription_sees_a_deny() {
    let bridge = TestBridge::start().await;
    let client = bridge.paired_client().await;
    let delivery = client
        .request_sign_in(&bridge.sign_in_input("deny"))
        .await
        .unwrap();
    let mut watch = client.watch_delivery(&delivery.id);
    // The first item is the current state: the subscription is live from here on.
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.id, delivery.id);
    assert!(matches!(
        first.status,
        DeliveryStatus::Queued | DeliveryStatus::Sent
    ));
    let denied = bridge
        .companion(
            "mutation($id: ID!) { denyDelivery(id: $id, reason: DECLINED) { id status } }",
            json!({"id": delivery.id}),
            "denyDelivery",
        )
        .await;
    assert_eq!(denied["status"], "DENIED");
    let seen = statuses_until_final(&mut watch).await;
    assert_eq!(
        seen.last().unwrap(),
        &(DeliveryStatus::Denied, Some("DECLINED".to_owned()))
    );
    // Each change once: no status repeats back to back.
    let mut all = vec![(first.status, first.reason)];
    all.extend(seen);
    assert!(all.windows(2).all(|w| w[0] != w[1]), "{all:?}");
    assert!(watch.next().await.is_none(), "the watch ends after DENIED");
}

#[tokio::test]
async fn claim_then_complete_is_followed_to_the_end() {
    let bridge = TestBridge::start().await;
    let client = bridge.paired_client().await;
    let delivery = client
        .request_sign_in(&bridge.sign_in_input("complete"))
        .await
        .unwrap();
    let mut watch = client.watch_delivery(&delivery.id);
    watch.next().await.unwrap().unwrap();
    let claimed = bridge
        .companion(
            "mutation($id: ID!) { claimDelivery(id: $id) { fidoUrl delivery { id status } } }",
            json!({"id": delivery.id}),
            "claimDelivery",
        )
        .await;
    assert_eq!(claimed["delivery"]["status"], "CLAIMED");
    // Wait for the watch to see CLAIMED before completing, so both changes are observed.
    loop {
        let d = watch.next().await.unwrap().unwrap();
        if d.status == DeliveryStatus::Claimed {
            break;
        }
        assert!(!d.status.is_final(), "{d:?}");
    }
    let completed = client
        .complete_delivery(&delivery.id, DeliveryOutcome::Success)
        .await
        .unwrap();
    assert_eq!(completed.status, DeliveryStatus::Completed);
    let seen = statuses_until_final(&mut watch).await;
    assert_eq!(seen, vec![(DeliveryStatus::Completed, None)]);
    let again = client
        .complete_delivery(&delivery.id, DeliveryOutcome::Success)
        .await
        .unwrap_err();
    assert_eq!(again.code(), Some(&ErrorCode::AlreadyUsed), "{again:?}");
}

/// A TCP proxy to the bridge that refuses WebSocket upgrades (as some corporate proxies do).
async fn proxy_without_websockets(target: SocketAddr) -> SocketAddr {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut first = [0u8; 4];
                if inbound.peek(&mut first).await.is_err() {
                    return;
                }
                if &first == b"GET " {
                    let _ = inbound
                        .write_all(
                            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn without_websockets_the_watch_polls() {
    let bridge = TestBridge::start().await;
    bridge.register_companion().await;
    let proxy = proxy_without_websockets(bridge.addr).await;
    let key = DeviceKey::generate().unwrap();
    let mut config = bridge.config_for(format!("http://{proxy}"));
    config.poll_interval = Duration::from_millis(20);
    let mut client =
        BridgeClient::with_clock(config, &key, Arc::new(BridgeTime(bridge.clock.clone()))).unwrap();
    let started = client.start_pairing("Hub", "Model").await.unwrap();
    // wait_for_pairing falls back to polling too.
    let waiter = {
        let client = client.clone();
        let id = started.pairing_id.clone();
        tokio::spawn(async move { client.wait_for_pairing(&id).await })
    };
    bridge.confirm(&started.code).await;
    let pairing = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pairing.status, PairingStatus::Confirmed);

    let delivery = client
        .request_sign_in(&bridge.sign_in_input("poll"))
        .await
        .unwrap();
    let mut watch = client.watch_delivery(&delivery.id);
    let first = watch.next().await.unwrap().unwrap();
    assert!(!first.status.is_final());
    bridge
        .companion(
            "mutation($id: ID!) { denyDelivery(id: $id, reason: NOT_ME) { id status } }",
            json!({"id": delivery.id}),
            "denyDelivery",
        )
        .await;
    let seen = statuses_until_final(&mut watch).await;
    assert_eq!(
        seen.last().unwrap(),
        &(DeliveryStatus::Denied, Some("NOT_ME".to_owned()))
    );
    assert!(watch.next().await.is_none());
}

/// A TLS-terminating proxy in front of the bridge, with a certificate for `localhost` from a
/// fresh test CA; returns its address and the CA's PEM.
async fn tls_proxy(target: SocketAddr) -> (SocketAddr, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(inbound).await else {
                    return;
                };
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut outbound).await;
            });
        }
    });
    (addr, ca_cert.pem())
}

#[tokio::test]
async fn https_and_wss_with_an_extra_ca() {
    let bridge = TestBridge::start().await;
    bridge.register_companion().await;
    let (proxy, ca_pem) = tls_proxy(bridge.addr).await;
    let url = format!("https://localhost:{}", proxy.port());
    let key = DeviceKey::generate().unwrap();

    // Without the CA the bridge's certificate is not trusted.
    let mut untrusting = bridge.client_at(bridge.config_for(url.clone()), &key);
    let err = untrusting.start_pairing("Hub", "Model").await.unwrap_err();
    assert!(matches!(err, BridgeError::Unreachable(_)), "{err:?}");

    let mut config = bridge.config_for(url);
    config.extra_ca_pem = Some(ca_pem.into_bytes());
    let mut client = bridge.client_at(config, &key);
    let started = client.start_pairing("Hub", "Model").await.unwrap();
    let waiter = {
        let client = client.clone();
        let id = started.pairing_id.clone();
        tokio::spawn(async move { client.wait_for_pairing(&id).await })
    };
    bridge.confirm(&started.code).await;
    // The poll interval is an hour: only the subscription (over wss) can deliver this in time.
    let pairing = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pairing.status, PairingStatus::Confirmed);
    let delivery = client
        .request_sign_in(&bridge.sign_in_input("tls"))
        .await
        .unwrap();
    assert_eq!(delivery.kind, DeliveryKind::SignIn);
}
