#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `tether-phone` binary, run as a child process against the bridge's relay on 127.0.0.1.
//!
//! Two clients answer it:
//!
//! * a *foreign* client written here from `hybrid`'s primitives only (advert decryption, Noise
//!   initiator, the crypter's `seal`/`open`, frames) with its own WebSocket loop. It takes the
//!   advert from the `ADVERT` line on the child's stdout, as a harness feeding another BLE stack
//!   would, and can behave like clients that are not ours: with or without the
//!   connection-signal header, and padding the payload *before* the type byte (libwebauthn),
//!   so that its frames are one byte over a multiple of 32;
//! * Tether's device agent (`device_agent::session::run`) scanning the cross-process simulated
//!   medium that the child advertises on (`--sim-ble`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::clock::{SharedClock, SystemClock};
use bridge::config::Config;
use device_agent::session;
use device_agent::tunnel::TunnelConfig;
use futures_util::{SinkExt as _, StreamExt as _};
use hybrid::advert;
use hybrid::crypter::{self, Construction};
use hybrid::ctap::get_info::GetInfoResponse;
use hybrid::ctap::{
    CtapRequest, CtapResponse, CtapStatus, GetAssertionRequest, MakeCredentialRequest,
    PublicKeyCredentialParameters, PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
use hybrid::derive;
use hybrid::domain::DomainId;
use hybrid::frame::{self, Frame, LinkingInfo, PostHandshake, Revision};
use hybrid::initiator::Initiator;
use hybrid::noise::{self, HandshakeInitiator, HandshakeOutput};
use hybrid::session::InitiatorTimeouts;
use hybrid::test_util::SeededRng;
use hybrid::tunnel::{SIGNAL_CONNECTION_HEADER, TunnelPath};
use hybrid::url::{FidoUrl, RequestType};
use hybrid::{QrSecret, Time};
use p256::SecretKey;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::elliptic_curve::Generate;
use tether_ble::sim::{SimMedium, SimScanner};
use tether_ble::{Advert, AdvertSource, BleError, ScanConfig, ServiceUuid};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const BIN: &str = env!("CARGO_BIN_EXE_tether-phone");
const RP: &str = "example.com";
/// A hashed domain id; the clients map its host name to the test relay.
const DOMAIN: DomainId = DomainId(256);
/// How long any one step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The relay

/// A bridge (with its relay) on 127.0.0.1:0 for one test.
struct Relay {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Relay {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let clock: SharedClock = Arc::new(SystemClock);
        tokio::spawn(async move {
            bridge::run(listener, config, clock, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            _dir: dir,
            stop: Some(stop),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
}

// ---------------------------------------------------------------------------------------------
// The child process

/// A running `tether-phone`; killed if the test ends before it does.
struct Phone {
    child: Option<Child>,
    stdout: mpsc::UnboundedReceiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// How a `tether-phone` run ended.
#[derive(Debug)]
struct Finished {
    code: i32,
    /// stdout lines after the `ADVERT` line (or all of them if it was not read).
    stdout: Vec<String>,
    stderr: String,
}

impl Phone {
    /// Starts `tether-phone` with `args`; `stdin` is written to its standard input.
    fn spawn<S: AsRef<std::ffi::OsStr>>(args: &[S], stdin: Option<&str>) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("TETHER_PHONE_URL")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            let mut input = child.stdin.take().unwrap();
            input.write_all(text.as_bytes()).unwrap();
        }
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Self {
            child: Some(child),
            stdout: rx,
            stderr: Some(stderr),
        }
    }

    /// The advert from the first stdout line, which must be `ADVERT <40 lower-case hex>`.
    async fn advert(&mut self) -> [u8; 20] {
        let line = tokio::time::timeout(STEP, self.stdout.recv())
            .await
            .expect("no ADVERT line in time")
            .expect("stdout closed without an ADVERT line");
        let hex_part = line
            .strip_prefix("ADVERT ")
            .unwrap_or_else(|| panic!("first stdout line is not an ADVERT line: {line:?}"));
        assert_eq!(hex_part.len(), 40, "{line:?}");
        assert!(
            hex_part
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "not lower-case hex: {line:?}"
        );
        hex::decode(hex_part).unwrap().try_into().unwrap()
    }

    /// Waits for the exit and collects what is left of the output.
    async fn finish(mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        let status = tokio::time::timeout(
            STEP,
            tokio::task::spawn_blocking(move || child.wait().unwrap()),
        )
        .await
        .expect("tether-phone did not exit in time")
        .unwrap();
        let mut stdout = Vec::new();
        while let Some(line) = self.stdout.recv().await {
            stdout.push(line);
        }
        let stderr = self.stderr.take().unwrap().join().unwrap();
        Finished {
            code: status.code().expect("killed by a signal"),
            stdout,
            stderr,
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `answer` arguments for `url` at `relay` with passkeys in `state`, then `extra`.
fn answer_args(url: &str, relay: &str, state: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "answer",
        "--url",
        url,
        "--relay",
        relay,
        "--domain-id",
        "256",
        "--state",
    ]
    .map(String::from)
    .to_vec();
    args.push(state.to_str().unwrap().to_owned());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// The last stderr line, which must be the one `error:` line.
fn error_line(finished: &Finished) -> &str {
    let last = finished.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{:?}", finished.stderr);
    assert_eq!(
        finished.stderr.matches("error:").count(),
        1,
        "{:?}",
        finished.stderr
    );
    last
}

// ---------------------------------------------------------------------------------------------
// Client keys and requests

/// What a client puts into its QR code, and keeps.
struct ClientKeys {
    identity: SecretKey,
    qr_secret: [u8; 16],
    url: String,
}

impl ClientKeys {
    fn new(seed: u64, request_type: RequestType) -> Self {
        Self::with_linking(seed, request_type, true)
    }

    /// Keys whose URL says (key 4) whether the client can store linking data.
    fn with_linking(seed: u64, request_type: RequestType, linking: bool) -> Self {
        let mut rng = SeededRng::new(seed);
        let identity = SecretKey::generate_from_rng(&mut rng);
        let mut qr_secret = [0u8; 16];
        rand_core::TryRng::try_fill_bytes(&mut rng, &mut qr_secret).unwrap();
        let url = FidoUrl::new(
            identity.public_key(),
            QrSecret::new(qr_secret),
            request_type,
            1_767_225_600,
            linking,
        )
        .encode();
        Self {
            identity,
            qr_secret,
            url,
        }
    }

    fn qr(&self) -> QrSecret {
        QrSecret::new(self.qr_secret)
    }

    /// Checks that `text` leaks neither the URL nor the tunnel id derived from it.
    fn assert_not_in(&self, text: &str) {
        let digits = self.url.trim_start_matches("FIDO:/");
        assert!(!text.contains(digits), "the FIDO URL leaked: {text}");
        let tid = derive::tunnel_id(&self.qr()).to_hex();
        assert!(
            !text.to_ascii_uppercase().contains(&tid),
            "the tunnel id leaked: {text}"
        );
    }
}

fn registration() -> CtapRequest {
    let mut request = MakeCredentialRequest::new(
        [0x11; 32],
        PublicKeyCredentialRpEntity {
            id: RP.to_owned(),
            name: Some("Example".to_owned()),
        },
        PublicKeyCredentialUserEntity {
            id: vec![7; 16],
            name: Some("alice".to_owned()),
            display_name: Some("Alice".to_owned()),
        },
        vec![PublicKeyCredentialParameters::ES256],
    );
    request.options.rk = Some(true);
    request.options.uv = Some(true);
    request.into()
}

fn assertion(client_data_hash: [u8; 32]) -> CtapRequest {
    let mut request = GetAssertionRequest::new(RP, client_data_hash);
    request.options.uv = Some(true);
    request.into()
}

/// The credential id and public key from makeCredential's authData.
fn credential_key(auth_data: &[u8]) -> (Vec<u8>, VerifyingKey) {
    assert_eq!(auth_data[32] & 0x45, 0x45, "UP, UV and AT must be set");
    let rest = &auth_data[37..];
    let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
    let id = rest[18..18 + len].to_vec();
    let key = hybrid::cbor::decode(&rest[18 + len..], hybrid::cbor::Strictness::Canonical).unwrap();
    let hybrid::cbor::Value::Map(map) = key else {
        panic!("COSE key is not a map")
    };
    let coordinate = |label: i64| {
        map.iter()
            .find_map(|(k, v)| match (k, v) {
                (hybrid::cbor::Value::Integer(i), hybrid::cbor::Value::Bytes(b))
                    if i128::from(*i) == i128::from(label) =>
                {
                    Some(b.clone())
                }
                _ => None,
            })
            .unwrap()
    };
    let mut sec1 = vec![4u8];
    sec1.extend(coordinate(-2));
    sec1.extend(coordinate(-3));
    (id, VerifyingKey::from_sec1_bytes(&sec1).unwrap())
}

// ---------------------------------------------------------------------------------------------
// The foreign client

/// How the foreign client behaves where hybrid clients differ.
#[derive(Clone, Copy, Debug)]
struct Style {
    /// Send `X-caBLE-Signal-Connection` on the upgrade (Chromium does).
    signal: bool,
    /// Pad the payload before prepending the type byte (libwebauthn does), instead of padding
    /// the whole frame: the plaintext is then one byte over a multiple of 32.
    pad_before_type: bool,
}

const PLAIN: Style = Style {
    signal: false,
    pad_before_type: false,
};

/// What the foreign client got.
#[derive(Debug)]
struct ForeignOutcome {
    get_info: GetInfoResponse,
    /// Linking data from updates, verified against this handshake.
    linking: Vec<LinkingInfo>,
    response: CtapResponse,
}

/// One direction's key and counter each way (the hybrid crypter, written out so that the
/// padding can be chosen).
struct Channel {
    keys: HandshakeOutput,
    sent: u32,
    received: u32,
    style: Style,
}

impl Channel {
    fn seal(&mut self, frame: &Frame) -> Vec<u8> {
        let encoded = frame.encode();
        let plaintext = if self.style.pad_before_type {
            let mut p = vec![encoded[0]];
            p.extend(crypter::pad(&encoded[1..]));
            assert_eq!(
                p.len() % 32,
                1,
                "libwebauthn-style frames are 32k + 1 bytes"
            );
            p
        } else {
            crypter::pad(&encoded)
        };
        let sealed = crypter::seal(
            &self.keys.send_key,
            Construction::New,
            self.sent,
            &plaintext,
        )
        .unwrap();
        self.sent += 1;
        sealed
    }

    fn open(&mut self, ciphertext: &[u8]) -> Vec<u8> {
        let padded = crypter::open(
            &self.keys.recv_key,
            Construction::New,
            self.received,
            ciphertext,
        )
        .expect("a message from the phone failed to decrypt");
        self.received += 1;
        crypter::unpad(&padded).unwrap().to_vec()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        let message = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("nothing from the relay in time")
            .expect("the tunnel closed")
            .expect("the tunnel broke");
        match message {
            Message::Binary(bytes) => return bytes.to_vec(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected tunnel message {other:?}"),
        }
    }
}

/// Joins the tunnel the advert names; checks the advert decrypts for `keys` and names `DOMAIN`.
async fn join_tunnel(
    relay: &str,
    advert: &[u8; 20],
    keys: &ClientKeys,
    signal: bool,
) -> (Ws, [u8; 16]) {
    let (plaintext, block) = advert::decrypt_qr(&derive::eid_key(&keys.qr()), advert)
        .expect("the ADVERT line does not decrypt with the client's QR secret");
    assert_eq!(plaintext.domain_id, DOMAIN);
    let path = TunnelPath::Connect(plaintext.routing_id, derive::tunnel_id(&keys.qr()));
    let mut request = format!("{relay}{path}").into_client_request().unwrap();
    let headers = request.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("fido.cable"),
    );
    if signal {
        headers.insert(SIGNAL_CONNECTION_HEADER, HeaderValue::from_static("true"));
    }
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "fido.cable");
    assert_eq!(
        response.headers().get(SIGNAL_CONNECTION_HEADER).is_some(),
        signal,
        "the signal header is echoed only to a client that sends it"
    );
    (ws, block)
}

/// A hybrid client built from `hybrid`'s primitives: joins the tunnel the advert names, runs
/// the handshake, reads the post-handshake message, sends `request`, reads updates and the
/// reply, sends shutdown and closes.
async fn foreign_client(
    relay: &str,
    advert: &[u8; 20],
    keys: &ClientKeys,
    request: &CtapRequest,
    style: Style,
    seed: u64,
) -> ForeignOutcome {
    let (mut ws, block) = join_tunnel(relay, advert, keys, style.signal).await;
    let psk = derive::psk(keys.qr().expose(), &block);
    let mut rng = SeededRng::new(seed);
    let (handshake, msg1) =
        HandshakeInitiator::new_qr(&psk, &keys.identity, SecretKey::generate_from_rng(&mut rng));
    ws.send(Message::binary(msg1.to_vec())).await.unwrap();

    let first = next_binary(&mut ws).await;
    let msg2 = if style.signal {
        assert_eq!(
            first,
            vec![0],
            "a client that asks gets the connection signal first"
        );
        next_binary(&mut ws).await
    } else {
        assert_ne!(
            first,
            vec![0],
            "the relay sent the connection signal to a client that did not ask"
        );
        first
    };
    assert_eq!(msg2.len(), noise::MESSAGE_LEN);
    let keys_out = handshake.finish(&msg2).expect("Noise message 2 refused");
    let handshake_hash = keys_out.handshake_hash;
    let mut channel = Channel {
        keys: keys_out,
        sent: 0,
        received: 0,
        style,
    };

    let post = channel.open(&next_binary(&mut ws).await);
    let (post, revision) = PostHandshake::decode(&post).unwrap();
    assert_eq!(revision, Revision::One);
    assert!(post.supports_ctap());
    let get_info = GetInfoResponse::from_cbor(post.get_info.as_deref().unwrap()).unwrap();

    let sealed = channel.seal(&Frame::Ctap(request.encode()));
    ws.send(Message::binary(sealed)).await.unwrap();

    let mut linking = Vec::new();
    let response = loop {
        let plaintext = channel.open(&next_binary(&mut ws).await);
        match Frame::decode(&plaintext).unwrap() {
            Frame::Update(update) => {
                if let Some(value) = frame::decode_update(&update).unwrap() {
                    let info = LinkingInfo::from_value(&value).unwrap();
                    info.verify(&keys.identity, &handshake_hash)
                        .expect("linking data does not verify");
                    linking.push(info);
                }
            }
            Frame::Ctap(reply) => break CtapResponse::decode(&reply).unwrap(),
            other => panic!("unexpected frame {other:?}"),
        }
    };
    let shutdown = channel.seal(&Frame::Shutdown);
    ws.send(Message::binary(shutdown)).await.unwrap();
    let _ = ws.close(None).await;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(STEP, ws.next()).await {}
    ForeignOutcome {
        get_info,
        linking,
        response,
    }
}

/// Runs `tether-phone` for `keys` and the foreign client sending `request`; returns both ends.
async fn run_foreign(
    relay: &Relay,
    state: &Path,
    keys: &ClientKeys,
    request: &CtapRequest,
    style: Style,
    extra: &[&str],
) -> (Finished, [u8; 20], ForeignOutcome) {
    let mut phone = Phone::spawn(&answer_args(&keys.url, &relay.url(), state, extra), None);
    let advert = phone.advert().await;
    let outcome = foreign_client(&relay.url(), &advert, keys, request, style, 99).await;
    (phone.finish().await, advert, outcome)
}

// ---------------------------------------------------------------------------------------------
// Tests: success

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_client_registers_then_signs_in_across_two_runs() {
    let relay = Relay::start().await;
    let state = tempfile::tempdir().unwrap();

    // Registration: no connection-signal header.
    let keys = ClientKeys::new(1, RequestType::MakeCredential);
    let (phone, advert, outcome) =
        run_foreign(&relay, state.path(), &keys, &registration(), PLAIN, &[]).await;
    assert_eq!(phone.code, 0, "{phone:?}");
    assert!(
        phone.stdout.is_empty(),
        "stdout is the ADVERT line only: {phone:?}"
    );
    assert!(
        phone.stderr.contains("tunnel registered"),
        "{}",
        phone.stderr
    );
    assert!(
        phone.stderr.contains("advertising under 0xFFF9"),
        "{}",
        phone.stderr
    );
    assert!(
        phone
            .stderr
            .contains("authenticatorMakeCredential (0x01) answered CTAP2_OK (0x00)"),
        "{}",
        phone.stderr
    );
    assert!(!phone.stderr.contains("error"), "{}", phone.stderr);
    keys.assert_not_in(&phone.stderr);
    keys.assert_not_in(&hex::encode(advert));
    assert!(outcome.get_info.transports.iter().any(|t| t == "hybrid"));
    assert_eq!(outcome.get_info.options.get("uv"), Some(&true));
    assert_eq!(outcome.response.status, CtapStatus::Ok);
    let made = outcome.response.make_credential().unwrap();
    let (credential_id, key) = credential_key(&made.auth_data);
    let [first_link] = outcome.linking.as_slice() else {
        panic!(
            "expected one verified linking update, got {:?}",
            outcome.linking
        )
    };
    assert_eq!(first_link.name, "Tether phone");
    assert!(state.path().join("passkeys.json").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(state.path().join("tether-phone-link.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Sign-in, by a second run on the same state: with the connection-signal header this time.
    let keys = ClientKeys::new(2, RequestType::GetAssertion);
    let hash = [0x22; 32];
    let style = Style {
        signal: true,
        ..PLAIN
    };
    let (phone, _, outcome) =
        run_foreign(&relay, state.path(), &keys, &assertion(hash), style, &[]).await;
    assert_eq!(phone.code, 0, "{phone:?}");
    keys.assert_not_in(&phone.stderr);
    let asserted = outcome.response.get_assertion().unwrap();
    assert_eq!(asserted.credential.unwrap().id, credential_id);
    assert_eq!(asserted.user.unwrap().id, vec![7; 16]);
    assert_eq!(asserted.auth_data[32] & 0x05, 0x05, "UP and UV");
    assert_eq!(&asserted.auth_data[33..37], &1u32.to_be_bytes());
    let mut signed = asserted.auth_data.clone();
    signed.extend_from_slice(&hash);
    key.verify(&signed, &Signature::from_der(&asserted.signature).unwrap())
        .unwrap();
    // The same phone: its linking identity survived the restart.
    let [second_link] = outcome.linking.as_slice() else {
        panic!("expected one verified linking update")
    };
    assert_eq!(
        second_link.identity_public_key,
        first_link.identity_public_key
    );
    assert_eq!(second_link.link_id, first_link.link_id);
    assert_eq!(second_link.contact_id, first_link.contact_id);
}

/// Issue 6: receivers strip padding from the end and never require a multiple of 32.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_padded_before_the_type_byte_are_answered() {
    let relay = Relay::start().await;
    let state = tempfile::tempdir().unwrap();
    // A client that cannot store linking data (URL key 4 false) gets none.
    let keys = ClientKeys::with_linking(3, RequestType::MakeCredential, false);
    // The URL comes on stdin this time.
    let mut phone = Phone::spawn(
        &answer_args("-", &relay.url(), state.path(), &[]),
        Some(&format!("{}\n", keys.url)),
    );
    let advert = phone.advert().await;
    let style = Style {
        signal: false,
        pad_before_type: true,
    };
    let outcome = foreign_client(&relay.url(), &advert, &keys, &registration(), style, 5).await;
    let phone = phone.finish().await;
    assert_eq!(phone.code, 0, "{phone:?}");
    assert_eq!(outcome.response.status, CtapStatus::Ok);
    outcome.response.make_credential().unwrap();
    assert!(outcome.linking.is_empty(), "URL key 4 is false");
    assert!(!state.path().join("tether-phone-link.json").exists());
}

/// An advert source that records what it passes on.
struct Recording {
    inner: SimScanner,
    seen: Arc<Mutex<Vec<Advert>>>,
}

#[async_trait::async_trait]
impl AdvertSource for Recording {
    async fn next_advert(&mut self) -> Result<Advert, BleError> {
        let advert = self.inner.next_advert().await?;
        self.seen.lock().unwrap().push(advert);
        Ok(advert)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_agent_hears_the_advert_on_the_shared_medium() {
    let relay = Relay::start().await;
    let state = tempfile::tempdir().unwrap();
    let air = tempfile::tempdir().unwrap();
    let medium = SimMedium::at_dir(air.path()).unwrap();
    let tunnels = TunnelConfig {
        domains: BTreeMap::from([(DOMAIN.domain().unwrap(), relay.url())]),
        danger_allow_plaintext: true,
        extra_ca_pem: None,
    };
    let sim_ble = air.path().to_str().unwrap();

    let mut credential = None;
    for (seed, request) in [(10, registration()), (11, assertion([0x33; 32]))] {
        let mut rng = SeededRng::new(seed);
        let identity = SecretKey::generate_from_rng(&mut rng);
        let qr_secret = [seed as u8; 16];
        let request_type = match request {
            CtapRequest::MakeCredential(_) => RequestType::MakeCredential,
            _ => RequestType::GetAssertion,
        };
        let url = FidoUrl::new(
            identity.public_key(),
            QrSecret::new(qr_secret),
            request_type,
            1_767_225_600,
            true,
        )
        .encode();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut scanner = Recording {
            inner: medium.scanner(ScanConfig::default()).unwrap(),
            seen: Arc::clone(&seen),
        };
        let mut phone = Phone::spawn(
            &answer_args(&url, &relay.url(), state.path(), &["--sim-ble", sim_ble]),
            None,
        );
        let initiator = Initiator::new(
            identity,
            QrSecret::new(qr_secret),
            &request,
            InitiatorTimeouts::default(),
            Time::ZERO,
            &mut rng,
        );
        let epoch = Instant::now();
        let mut ignore_progress = |_: session::Progress| {};
        let (agent, advert) = tokio::join!(
            session::run(
                initiator,
                epoch,
                epoch + STEP,
                &mut scanner,
                &tunnels,
                &mut ignore_progress,
            ),
            phone.advert(),
        );
        let phone = phone.finish().await;
        assert_eq!(phone.code, 0, "{phone:?}");
        assert!(
            phone.stderr.contains("simulated BLE medium in"),
            "{}",
            phone.stderr
        );
        let outcome = agent.unwrap();
        assert_eq!(outcome.rssi, Some(-50));
        assert!(outcome.linking.is_some(), "verified linking data");
        // What the agent heard on the medium is what the ADVERT line said.
        let seen = seen.lock().unwrap().clone();
        assert!(!seen.is_empty());
        for heard in seen {
            assert_eq!(heard.data, advert);
            assert_eq!(heard.service, ServiceUuid::Fido);
        }
        match outcome.response.make_credential() {
            Ok(made) => credential = Some(credential_key(&made.auth_data).0),
            Err(_) => {
                let asserted = outcome.response.get_assertion().unwrap();
                assert_eq!(asserted.credential.unwrap().id, credential.clone().unwrap());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests: the user says no, or there is nothing to answer with

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_exits_declined_and_the_client_sees_operation_denied() {
    let relay = Relay::start().await;
    let state = tempfile::tempdir().unwrap();
    let keys = ClientKeys::new(20, RequestType::MakeCredential);
    let (phone, _, outcome) = run_foreign(
        &relay,
        state.path(),
        &keys,
        &registration(),
        PLAIN,
        &["--policy", "deny"],
    )
    .await;
    assert_eq!(outcome.response.status, CtapStatus::OperationDenied);
    assert_eq!(phone.code, 7, "{phone:?}");
    assert_eq!(
        error_line(&phone),
        "error: declined: authenticatorMakeCredential (0x01) answered CTAP2_ERR_OPERATION_DENIED (0x27) \
         (--policy deny)"
    );
    assert!(!state.path().join("passkeys.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_policy_exits_declined_after_the_prompt_timeout() {
    let relay = Relay::start().await;
    let state = tempfile::tempdir().unwrap();
    let keys = ClientKeys::new(21, RequestType::MakeCredential);
    let started = Instant::now();
    let (phone, _, outcome) = run_foreign(
        &relay,
        state.path(),
        &keys,
        &registration(),
        PLAIN,
        &["--policy", "timeout", "--prompt-timeout", "300ms"],
    )
    .await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(outcome.response.status, CtapStatus::UserActionTimeout);
    assert_eq!(phone.code, 7, "{phone:?}");
    assert!(error_line(&phone).starts_with("error: declined: nobody answered the prompt"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_status_exits_8() {
    let relay = Relay::start().await;
    let state = tempfile::tempdir().unwrap();
    let keys = ClientKeys::new(22, RequestType::GetAssertion);
    let (phone, _, outcome) =
        run_foreign(&relay, state.path(), &keys, &assertion([1; 32]), PLAIN, &[]).await;
    assert_eq!(outcome.response.status, CtapStatus::NoCredentials);
    assert_eq!(phone.code, 8, "{phone:?}");
    assert_eq!(
        error_line(&phone),
        "error: authenticatorGetAssertion (0x02) answered with an error status: CTAP2_ERR_NO_CREDENTIALS (0x2E)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_no_user_verification_fde2_and_no_linking() {
    let relay = Relay::start().await;
    let state = tempfile::tempdir().unwrap();
    let keys = ClientKeys::new(23, RequestType::MakeCredential);
    let mut request = registration();
    if let CtapRequest::MakeCredential(mc) = &mut request {
        mc.options.uv = None;
    }
    let (phone, _, outcome) = run_foreign(
        &relay,
        state.path(),
        &keys,
        &request,
        PLAIN,
        &[
            "--no-user-verification",
            "--service",
            "fde2",
            "--no-linking",
        ],
    )
    .await;
    assert_eq!(phone.code, 0, "{phone:?}");
    assert!(outcome.linking.is_empty(), "--no-linking");
    assert!(
        phone.stderr.contains("advertising under 0xFDE2"),
        "{}",
        phone.stderr
    );
    assert!(!outcome.get_info.options.contains_key("uv"));
    let auth_data = outcome.response.make_credential().unwrap().auth_data;
    assert_eq!(auth_data[32] & 0x05, 0x01, "UP without UV");
}

// ---------------------------------------------------------------------------------------------
// Tests: failures and their exit statuses

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_exits_3_without_echoing_it() {
    let state = tempfile::tempdir().unwrap();
    for (url, reason) in [
        ("FIDO:/1234", "URL digits invalid"),
        (
            "https://example.com/FIDO:/123",
            "URL does not start with FIDO:/",
        ),
    ] {
        let phone = Phone::spawn(
            &answer_args(url, "ws://127.0.0.1:9", state.path(), &[]),
            None,
        )
        .finish()
        .await;
        assert_eq!(phone.code, 3, "{phone:?}");
        assert!(phone.stdout.is_empty());
        let line = error_line(&phone);
        assert!(
            line.starts_with("error: the FIDO URL is invalid: "),
            "{line}"
        );
        assert!(line.contains(reason), "{line}");
        assert!(!line.contains(url), "the URL is not echoed: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_or_unreachable_relay_exits_4() {
    let state = tempfile::tempdir().unwrap();
    let keys = ClientKeys::new(30, RequestType::GetAssertion);

    // Nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let phone = Phone::spawn(&answer_args(&keys.url, &nowhere, state.path(), &[]), None)
        .finish()
        .await;
    assert_eq!(phone.code, 4, "{phone:?}");
    assert!(
        error_line(&phone)
            .starts_with("error: cannot register the tunnel at the relay: cannot reach"),
        "{phone:?}"
    );
    assert!(phone.stdout.is_empty());

    // A bridge, but not at this path: 404.
    let relay = Relay::start().await;
    let wrong = format!("{}/elsewhere", relay.url());
    let phone = Phone::spawn(&answer_args(&keys.url, &wrong, state.path(), &[]), None)
        .finish()
        .await;
    assert_eq!(phone.code, 4, "{phone:?}");
    assert!(error_line(&phone).contains("HTTP 404"), "{phone:?}");
    keys.assert_not_in(&phone.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_in_time_exits_5() {
    let relay = Relay::start().await;
    let state = tempfile::tempdir().unwrap();
    let keys = ClientKeys::new(31, RequestType::GetAssertion);
    let mut phone = Phone::spawn(
        &answer_args(
            &keys.url,
            &relay.url(),
            state.path(),
            &["--connect-timeout", "1s"],
        ),
        None,
    );
    phone.advert().await;
    let phone = phone.finish().await;
    assert_eq!(phone.code, 5, "{phone:?}");
    assert_eq!(
        error_line(&phone),
        "error: no client connected within 1 s (--connect-timeout)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_handshake_exits_6() {
    let relay = Relay::start().await;
    let state = tempfile::tempdir().unwrap();
    let keys = ClientKeys::new(32, RequestType::GetAssertion);
    let mut phone = Phone::spawn(
        &answer_args(&keys.url, &relay.url(), state.path(), &[]),
        None,
    );
    let advert = phone.advert().await;
    let (mut ws, _) = join_tunnel(&relay.url(), &advert, &keys, false).await;
    // 81 bytes, but not a P-256 point.
    ws.send(Message::binary(vec![4u8; noise::MESSAGE_LEN]))
        .await
        .unwrap();
    let phone = phone.finish().await;
    assert_eq!(phone.code, 6, "{phone:?}");
    assert_eq!(
        error_line(&phone),
        "error: hybrid session failed: handshake failed: handshake message carries an invalid \
         P-256 point"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let state = tempfile::tempdir().unwrap();
    let keys = ClientKeys::new(33, RequestType::GetAssertion);
    let dir = state.path().to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["answer", "--url", &keys.url], "--relay"),
        (
            vec![
                "answer",
                "--url",
                &keys.url,
                "--relay",
                "ws://relay.example",
                "--domain-id",
                "256",
                "--state",
                dir,
            ],
            "--danger-allow-plaintext",
        ),
        (
            vec![
                "answer",
                "--url",
                &keys.url,
                "--relay",
                "http://127.0.0.1:1",
                "--domain-id",
                "256",
                "--state",
                dir,
            ],
            "wss://",
        ),
        (
            vec![
                "answer",
                "--url",
                &keys.url,
                "--relay",
                "ws://127.0.0.1:1",
                "--domain-id",
                "7",
                "--state",
                dir,
            ],
            "unassigned",
        ),
        (
            vec![
                "answer",
                "--url",
                &keys.url,
                "--relay",
                "ws://127.0.0.1:1",
                "--domain-id",
                "70000",
                "--state",
                dir,
            ],
            "--domain-id",
        ),
        (
            vec![
                "answer",
                "--url",
                &keys.url,
                "--relay",
                "ws://127.0.0.1:1",
                "--domain-id",
                "256",
                "--state",
                dir,
                "--connect-timeout",
                "soon",
            ],
            "not a duration",
        ),
        (
            vec![
                "answer",
                "--url",
                &keys.url,
                "--relay",
                "ws://127.0.0.1:1",
                "--domain-id",
                "256",
                "--state",
                dir,
                "--policy",
                "maybe",
            ],
            "--policy",
        ),
    ];
    for (args, needle) in cases {
        let phone = Phone::spawn(&args, None).finish().await;
        assert_eq!(phone.code, 2, "{args:?}: {phone:?}");
        assert!(phone.stdout.is_empty());
        assert!(phone.stderr.contains(needle), "{args:?}: {}", phone.stderr);
        keys.assert_not_in(&phone.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_failures_exit_1() {
    let state = tempfile::tempdir().unwrap();
    let keys = ClientKeys::new(34, RequestType::GetAssertion);
    let not_a_dir = state.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let missing = state.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    for (extra, state, needle) in [
        (
            vec!["--ble"],
            state.path(),
            "--ble (advertising through BlueZ's LEAdvertisingManager1) is not supported in this build",
        ),
        (
            vec!["--ca", missing],
            state.path(),
            "cannot read the CA file",
        ),
        (vec![], not_a_dir.as_path(), "cannot open the passkey store"),
    ] {
        let phone = Phone::spawn(
            &answer_args(&keys.url, "ws://127.0.0.1:1", state, &extra),
            None,
        )
        .finish()
        .await;
        assert_eq!(phone.code, 1, "{extra:?}: {phone:?}");
        assert!(phone.stdout.is_empty());
        assert!(error_line(&phone).contains(needle), "{extra:?}: {phone:?}");
    }
}
