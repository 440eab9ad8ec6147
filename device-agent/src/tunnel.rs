//! The WebSocket tunnel client (CTAP 2.2 §11.5 tunnel service), for both roles.
//!
//! A hybrid tunnel is a WebSocket with subprotocol `fido.cable` at a relay. The phone opens
//! `/cable/new/<tunnel id>` and reads its routing id from the `X-caBLE-Routing-ID` response
//! header; the client (this agent) joins with `/cable/connect/<routing id>/<tunnel id>` at the
//! domain the phone's advert names. Then binary messages travel unchanged between the two; the
//! relay never sees plaintext.
//!
//! * [`TunnelConfig`] decides where a tunnel domain (from [`hybrid::domain`]) is really reached:
//!   `wss://<domain>` by default, or a base URL from [`TunnelConfig::domains`] (self-hosted
//!   relays, tests). Plaintext `ws://` is refused unless
//!   [`TunnelConfig::danger_allow_plaintext`] is set. TLS trusts the platform's roots (through
//!   `rustls-platform-verifier`, as the bridge client does) plus [`TunnelConfig::extra_ca_pem`].
//! * [`connect`] opens any tunnel URL with extra request headers and returns a [`TunnelConn`]
//!   that keeps the response headers; the simulated phone uses it for `/cable/new/…`.
//! * [`TunnelConn`] moves binary messages; a text message or one over
//!   [`MAX_MESSAGE_LEN`] is a typed error, never delivered.
//!
//! Nothing here knows the protocol: `crate::session` feeds what arrives to the sans-I/O hybrid
//! session. Tunnel URLs carry the tunnel id, derived from the QR secret; they are kept out of
//! logs and errors.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{SinkExt as _, StreamExt as _};
use hybrid::tunnel::{RoutingId, TunnelId, TunnelPath};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
pub use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use url::{Host, Url};

/// Largest tunnel message sent or accepted (the hybrid limit, 1 MiB).
pub const MAX_MESSAGE_LEN: usize = hybrid::session::MAX_MESSAGE_LEN;

/// Where tunnels are reached and what is trusted on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Tunnel domain (as [`hybrid::domain::DomainId::domain`] names it, e.g.
    /// `cable.ua5v.com`) → base URL (`wss://relay.example.com`, optionally with a path prefix).
    /// Unmapped domains are reached at `wss://<domain>`.
    pub domains: BTreeMap<String, String>,
    /// Allow `ws://` (plaintext) URLs. Only for local tests and demos: the relay and anyone on
    /// the path then see which tunnel ids are in use (message contents stay encrypted).
    pub danger_allow_plaintext: bool,
    /// Extra trusted CA certificates (PEM text), added to the platform's roots.
    pub extra_ca_pem: Option<String>,
}

impl TunnelConfig {
    /// The base URL at which `domain` is reached.
    pub fn base_url(&self, domain: &str) -> Result<Url, TunnelError> {
        let url = match self.domains.get(domain) {
            Some(mapped) => Url::parse(mapped)
                .map_err(|e| TunnelError::BadUrl(format!("mapping for {domain}: {e}")))?,
            None => Url::parse(&format!("wss://{domain}"))
                .map_err(|e| TunnelError::BadUrl(format!("tunnel domain {domain:?}: {e}")))?,
        };
        self.check_scheme(&url)?;
        if url.host().is_none() {
            return Err(TunnelError::BadUrl(format!(
                "mapping for {domain} has no host"
            )));
        }
        Ok(url)
    }

    /// `…/cable/connect/<routing id>/<tunnel id>` at `domain`: where the client joins.
    pub fn connect_url(
        &self,
        domain: &str,
        routing_id: &RoutingId,
        tunnel_id: &TunnelId,
    ) -> Result<String, TunnelError> {
        self.url_for(domain, &TunnelPath::Connect(*routing_id, *tunnel_id))
    }

    /// `…/cable/new/<tunnel id>` at `domain`: where the phone registers a tunnel.
    pub fn new_tunnel_url(
        &self,
        domain: &str,
        tunnel_id: &TunnelId,
    ) -> Result<String, TunnelError> {
        self.url_for(domain, &TunnelPath::New(*tunnel_id))
    }

    fn url_for(&self, domain: &str, path: &TunnelPath) -> Result<String, TunnelError> {
        let base = self.base_url(domain)?;
        let mut url = base.as_str().trim_end_matches('/').to_owned();
        url.push_str(&path.to_string());
        Ok(url)
    }

    fn check_scheme(&self, url: &Url) -> Result<(), TunnelError> {
        match url.scheme() {
            "wss" => Ok(()),
            "ws" if self.danger_allow_plaintext => Ok(()),
            "ws" => Err(TunnelError::PlaintextRefused),
            other => Err(TunnelError::BadUrl(format!(
                "scheme {other:?}: tunnels use wss:// (or ws:// when allowed)"
            ))),
        }
    }
}

/// Why a tunnel could not be opened or used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// A URL or a domain mapping is malformed.
    #[error("tunnel URL is invalid: {0}")]
    BadUrl(String),
    /// A `ws://` URL without [`TunnelConfig::danger_allow_plaintext`].
    #[error("plaintext ws:// tunnel refused (only allowed with danger_allow_plaintext)")]
    PlaintextRefused,
    /// The extra CA certificates or the TLS setup are unusable.
    #[error("tunnel TLS configuration: {0}")]
    TlsConfig(String),
    /// Name resolution, TCP or TLS failed.
    #[error("cannot reach the tunnel service: {0}")]
    Unreachable(String),
    /// The relay answered the upgrade with an HTTP error.
    #[error("the tunnel service refused the tunnel: HTTP {status}{}", fmt_message(.message))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The start of the relay's plain-text explanation, if it gave one.
        message: String,
    },
    /// The relay did not agree on the `fido.cable` subprotocol.
    #[error("the tunnel service did not accept the fido.cable subprotocol")]
    Subprotocol,
    /// The WebSocket upgrade failed otherwise.
    #[error("WebSocket handshake with the tunnel service failed: {0}")]
    Handshake(String),
    /// The relay's answer to `/cable/new` carries no valid `X-caBLE-Routing-ID`.
    #[error("the tunnel service sent no valid routing id")]
    MissingRoutingId,
    /// A text message arrived; the tunnel carries binary messages only.
    #[error("text message on the tunnel")]
    TextMessage,
    /// A message exceeds [`MAX_MESSAGE_LEN`].
    #[error("tunnel message of {0} bytes exceeds the limit")]
    MessageTooLarge(usize),
    /// The relay closed the tunnel with an error code (for example a time or size limit).
    #[error("the tunnel service closed the tunnel: code {code}{}", fmt_message(.reason))]
    ClosedByRelay {
        /// The WebSocket close code.
        code: u16,
        /// The close reason text.
        reason: String,
    },
    /// The connection broke without a closing handshake.
    #[error("tunnel connection lost: {0}")]
    Dropped(String),
}

fn fmt_message(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

/// Bytes and characters of a relay's explanation kept in [`TunnelError::Refused`].
const MAX_REFUSAL_TEXT: usize = 200;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open tunnel: binary messages in and out.
pub struct TunnelConn {
    ws: WebSocketStream<Box<dyn Io>>,
    headers: HeaderMap,
}

impl core::fmt::Debug for TunnelConn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TunnelConn").finish_non_exhaustive()
    }
}

/// Opens the tunnel WebSocket at `url` (`wss://`, or `ws://` when the config allows) with
/// subprotocol `fido.cable` and the extra request `headers`.
///
/// Not bounded in time: callers wrap it in their own deadline.
pub async fn connect(
    config: &TunnelConfig,
    url: &str,
    headers: HeaderMap,
) -> Result<TunnelConn, TunnelError> {
    let parsed = Url::parse(url).map_err(|e| TunnelError::BadUrl(e.to_string()))?;
    config.check_scheme(&parsed)?;
    let tls = parsed.scheme() == "wss";
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| TunnelError::BadUrl("no port".into()))?;
    let (tcp, server_name) = match parsed.host() {
        Some(Host::Domain(domain)) => (
            tokio::net::TcpStream::connect((domain, port)).await,
            domain.to_owned(),
        ),
        Some(Host::Ipv4(ip)) => (
            tokio::net::TcpStream::connect((ip, port)).await,
            ip.to_string(),
        ),
        Some(Host::Ipv6(ip)) => (
            tokio::net::TcpStream::connect((ip, port)).await,
            ip.to_string(),
        ),
        None => return Err(TunnelError::BadUrl("no host".into())),
    };
    let host = format!("{server_name}:{port}");
    let tcp = tcp.map_err(|e| TunnelError::Unreachable(format!("{host}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = if tls {
        let name = rustls::pki_types::ServerName::try_from(server_name)
            .map_err(|e| TunnelError::BadUrl(format!("host name: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(tls_config(config)?);
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| TunnelError::Unreachable(format!("{host}: TLS: {e}")))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut request = parsed
        .as_str()
        .into_client_request()
        .map_err(|e| TunnelError::BadUrl(e.to_string()))?;
    request.headers_mut().extend(headers);
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(hybrid::tunnel::SUBPROTOCOL),
    );
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_LEN))
        .max_frame_size(Some(MAX_MESSAGE_LEN));
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config))
            .await
            .map_err(|e| handshake_error(e, &host))?;
    Ok(TunnelConn {
        ws,
        headers: response.headers().clone(),
    })
}

fn handshake_error(e: tungstenite::Error, host: &str) -> TunnelError {
    match e {
        tungstenite::Error::Http(response) => {
            let text = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let message: String = text
                .trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_REFUSAL_TEXT)
                .collect();
            TunnelError::Refused {
                status: response.status().as_u16(),
                message,
            }
        }
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_),
        ) => TunnelError::Subprotocol,
        tungstenite::Error::Io(e) => TunnelError::Unreachable(format!("{host}: {e}")),
        other => TunnelError::Handshake(other.to_string()),
    }
}

impl TunnelConn {
    /// The headers of the relay's `101 Switching Protocols` response.
    pub fn response_headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The routing id from `X-caBLE-Routing-ID` (the answer to `/cable/new/…`).
    pub fn routing_id(&self) -> Result<RoutingId, TunnelError> {
        self.headers
            .get(hybrid::tunnel::ROUTING_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| RoutingId::from_hex(v.trim()).ok())
            .ok_or(TunnelError::MissingRoutingId)
    }

    /// Sends one binary message.
    pub async fn send(&mut self, message: Vec<u8>) -> Result<(), TunnelError> {
        if message.len() > MAX_MESSAGE_LEN {
            return Err(TunnelError::MessageTooLarge(message.len()));
        }
        self.ws
            .send(Message::binary(message))
            .await
            .map_err(stream_error)
    }

    /// The next binary message; `Ok(None)` once the tunnel closed normally. Control frames are
    /// answered internally. Cancel safe.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, TunnelError> {
        loop {
            let Some(message) = self.ws.next().await else {
                return Ok(None);
            };
            match message {
                Ok(Message::Binary(bytes)) => {
                    if bytes.len() > MAX_MESSAGE_LEN {
                        return Err(TunnelError::MessageTooLarge(bytes.len()));
                    }
                    return Ok(Some(bytes.to_vec()));
                }
                Ok(Message::Text(_)) => return Err(TunnelError::TextMessage),
                Ok(Message::Close(Some(frame))) if frame.code != CloseCode::Normal => {
                    return Err(TunnelError::ClosedByRelay {
                        code: u16::from(frame.code),
                        reason: frame
                            .reason
                            .chars()
                            .filter(|c| !c.is_control())
                            .take(MAX_REFUSAL_TEXT)
                            .collect(),
                    });
                }
                Ok(Message::Close(_)) => return Ok(None),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(None);
                }
                Err(e) => return Err(stream_error(e)),
            }
        }
    }

    /// Closes the tunnel (sends the closing handshake; errors are ignored: the tunnel is being
    /// abandoned either way).
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn stream_error(e: tungstenite::Error) -> TunnelError {
    match e {
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size,
            ..
        }) => TunnelError::MessageTooLarge(size),
        tungstenite::Error::Utf8(_) => TunnelError::TextMessage,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            TunnelError::Dropped("connection closed".into())
        }
        other => TunnelError::Dropped(other.to_string()),
    }
}

/// The TLS client configuration: platform roots plus the extra CA. The last one built is
/// cached (loading the platform's roots costs milliseconds).
fn tls_config(config: &TunnelConfig) -> Result<Arc<rustls::ClientConfig>, TunnelError> {
    static CACHE: Mutex<Option<(Option<String>, Arc<rustls::ClientConfig>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((pem, tls)) = cache.as_ref()
        && *pem == config.extra_ca_pem
    {
        return Ok(Arc::clone(tls));
    }
    let extra = match &config.extra_ca_pem {
        Some(pem) => parse_ca_pem(pem.as_bytes())?,
        None => Vec::new(),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, Arc::clone(&provider))
            .map_err(|e| TunnelError::TlsConfig(format!("trusted roots: {e}")))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TunnelError::TlsConfig(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = Arc::new(tls);
    *cache = Some((config.extra_ca_pem.clone(), Arc::clone(&tls)));
    Ok(tls)
}

fn parse_ca_pem(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TunnelError> {
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TunnelError::TlsConfig(format!("extra CA PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TunnelError::TlsConfig(
            "extra CA PEM holds no CERTIFICATE block".into(),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;

    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    use tokio_tungstenite::tungstenite::http::StatusCode;

    use super::*;

    /// A test CA (P-256, valid 2020–2120) and a server certificate it issued for `localhost`
    /// and `127.0.0.1`; made with `openssl ca` for these tests only.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBczCCARqgAwIBAgICEAAwCgYIKoZIzj0EAwIwIDEeMBwGA1UEAwwVVGV0aGVy
IHR1bm5lbCB0ZXN0IENBMCAXDTIwMDEwMTAwMDAwMFoYDzIxMjAwMTAxMDAwMDAw
WjAgMR4wHAYDVQQDDBVUZXRoZXIgdHVubmVsIHRlc3QgQ0EwWTATBgcqhkjOPQIB
BggqhkjOPQMBBwNCAASwNTizxGWarx8YjzEe5QFKD3xn4R9Dq+MpPElXTNpv5VC7
hqsW3D1Nkb5zV3u75Pc+p86x061KkiZYTairNypmo0IwQDAPBgNVHRMBAf8EBTAD
AQH/MA4GA1UdDwEB/wQEAwIBBjAdBgNVHQ4EFgQURGqvdDIpRHH30rf/mzDgpHnH
S+swCgYIKoZIzj0EAwIDRwAwRAIgUzjRGiEMwNS2LC7pLWghXMrvC5zbB6GhQ9hh
9MDVjjgCIA88281d4Xn3gQOAZzRFbDLfUH1VGpuGbLolfv4d34oA
-----END CERTIFICATE-----
";
    const TEST_SERVER_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBuTCCAV+gAwIBAgICEAEwCgYIKoZIzj0EAwIwIDEeMBwGA1UEAwwVVGV0aGVy
IHR1bm5lbCB0ZXN0IENBMCAXDTIwMDEwMTAwMDAwMFoYDzIxMjAwMTAxMDAwMDAw
WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQu+s92kdyZ6pSqbBwvvmd8fIDId0Mpwb4V15X5bRckFtPjSkd8zAqghn6syb7x
6fLW6Nlefb2cdsxsGML61D+Wo4GSMIGPMAwGA1UdEwEB/wQCMAAwDgYDVR0PAQH/
BAQDAgeAMBMGA1UdJQQMMAoGCCsGAQUFBwMBMBoGA1UdEQQTMBGCCWxvY2FsaG9z
dIcEfwAAATAfBgNVHSMEGDAWgBREaq90MilEcffSt/+bMOCkecdL6zAdBgNVHQ4E
FgQUi8sJ/BNDW2k9N1lHnAnqWlOImgwwCgYIKoZIzj0EAwIDSAAwRQIgFBe9ZZfe
vXdNY2wpjPWRzK+fmkgcxTPSmI40F8ZvAB8CIQCpTWCVa1URTaCO1WbHx/PWMwC5
tYUrt4ps+EzmQhKYFQ==
-----END CERTIFICATE-----
";
    const TEST_SERVER_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgh3zWU7toyrYbAF7P
f8rpKb75RafOoAVzBA08NtAMt1OhRANCAAQu+s92kdyZ6pSqbBwvvmd8fIDId0Mp
wb4V15X5bRckFtPjSkd8zAqghn6syb7x6fLW6Nlefb2cdsxsGML61D+W
-----END PRIVATE KEY-----
";

    fn rid() -> RoutingId {
        RoutingId::new([0xab, 0x01, 0xff])
    }

    fn tid() -> TunnelId {
        TunnelId::new([0x5a; 16])
    }

    #[test]
    fn urls_follow_the_domain_map() {
        let mut config = TunnelConfig::default();
        assert_eq!(
            config
                .connect_url("cable.ua5v.com", &rid(), &tid())
                .unwrap(),
            format!(
                "wss://cable.ua5v.com/cable/connect/AB01FF/{}",
                "5A".repeat(16)
            )
        );
        config.domains.insert(
            "cable.ua5v.com".into(),
            "wss://relay.example/tether/".into(),
        );
        assert_eq!(
            config.new_tunnel_url("cable.ua5v.com", &tid()).unwrap(),
            format!("wss://relay.example/tether/cable/new/{}", "5A".repeat(16))
        );
        config
            .domains
            .insert("cable.auth.com".into(), "ws://127.0.0.1:8080".into());
        assert!(matches!(
            config.connect_url("cable.auth.com", &rid(), &tid()),
            Err(TunnelError::PlaintextRefused)
        ));
        config.danger_allow_plaintext = true;
        assert_eq!(
            config
                .connect_url("cable.auth.com", &rid(), &tid())
                .unwrap(),
            format!(
                "ws://127.0.0.1:8080/cable/connect/AB01FF/{}",
                "5A".repeat(16)
            )
        );
        config
            .domains
            .insert("x.test".into(), "https://relay.example".into());
        assert!(matches!(
            config.base_url("x.test"),
            Err(TunnelError::BadUrl(m)) if m.contains("\"https\"")
        ));
        config.domains.insert("y.test".into(), "not a url".into());
        assert!(matches!(
            config.base_url("y.test"),
            Err(TunnelError::BadUrl(_))
        ));
    }

    #[test]
    fn ca_pem_must_hold_a_certificate() {
        assert_eq!(parse_ca_pem(TEST_CA.as_bytes()).unwrap().len(), 1);
        assert!(matches!(
            parse_ca_pem(b"no pem here"),
            Err(TunnelError::TlsConfig(m)) if m.contains("no CERTIFICATE")
        ));
        assert!(matches!(
            parse_ca_pem(TEST_SERVER_KEY.as_bytes()),
            Err(TunnelError::TlsConfig(_))
        ));
    }

    /// How the test server behaves after (or instead of) the upgrade.
    #[derive(Clone, Copy)]
    enum Script {
        /// Echo binary messages back; also sends the routing id header.
        Echo,
        /// Refuse with 404 and a text body.
        Refuse,
        /// Upgrade without selecting a subprotocol.
        NoSubprotocol,
        /// Send a text message.
        Text,
        /// Send a message one byte over the limit.
        Oversized,
        /// Close with code 1009.
        CloseTooBig,
    }

    // The handshake callback's signature is tungstenite's.
    #[allow(clippy::result_large_err)]
    async fn serve_one<S>(stream: S, script: Script)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let callback = move |req: &Request, mut resp: Response| {
            let offered = req
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            if matches!(script, Script::Refuse) {
                let mut refusal = ErrorResponse::new(Some("no pending tunnel\n".into()));
                *refusal.status_mut() = StatusCode::NOT_FOUND;
                return Err(refusal);
            }
            if offered == "fido.cable" && !matches!(script, Script::NoSubprotocol) {
                resp.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static("fido.cable"),
                );
            }
            resp.headers_mut()
                .insert("X-caBLE-Routing-ID", HeaderValue::from_static("ab01ff"));
            Ok(resp)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
            return;
        };
        match script {
            Script::Echo => {
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_binary() && ws.send(m).await.is_err() {
                        break;
                    }
                }
            }
            Script::Text => {
                let _ = ws.send(Message::text("hello")).await;
            }
            Script::Oversized => {
                let _ = ws
                    .send(Message::binary(vec![0u8; MAX_MESSAGE_LEN + 1]))
                    .await;
            }
            Script::CloseTooBig => {
                let _ = ws
                    .close(Some(tungstenite::protocol::CloseFrame {
                        code: CloseCode::Size,
                        reason: "frame too large".into(),
                    }))
                    .await;
            }
            Script::Refuse | Script::NoSubprotocol => {}
        }
        // Wait for the client to finish.
        while let Some(Ok(_)) = ws.next().await {}
    }

    async fn server(script: Script, tls: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.then(|| {
            use rustls::pki_types::pem::PemObject as _;
            let certs = vec![
                rustls::pki_types::CertificateDer::from_pem_slice(TEST_SERVER_CERT.as_bytes())
                    .unwrap(),
            ];
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(TEST_SERVER_KEY.as_bytes())
                .unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve_one(tls, script).await;
                            }
                        }
                        None => serve_one(tcp, script).await,
                    }
                });
            }
        });
        addr
    }

    fn plaintext() -> TunnelConfig {
        TunnelConfig {
            danger_allow_plaintext: true,
            ..TunnelConfig::default()
        }
    }

    fn url(scheme: &str, addr: SocketAddr) -> String {
        format!("{scheme}://{addr}/cable/new/{}", "5A".repeat(16))
    }

    #[tokio::test]
    async fn binary_messages_and_response_headers() {
        let addr = server(Script::Echo, false).await;
        let mut headers = HeaderMap::new();
        headers.insert("X-caBLE-Test", HeaderValue::from_static("1"));
        let mut conn = connect(&plaintext(), &url("ws", addr), headers)
            .await
            .unwrap();
        assert_eq!(conn.routing_id().unwrap(), rid());
        assert_eq!(
            conn.response_headers()["sec-websocket-protocol"],
            "fido.cable"
        );
        conn.send(vec![1, 2, 3]).await.unwrap();
        assert_eq!(conn.recv().await.unwrap(), Some(vec![1, 2, 3]));
        assert!(matches!(
            conn.send(vec![0; MAX_MESSAGE_LEN + 1]).await,
            Err(TunnelError::MessageTooLarge(n)) if n == MAX_MESSAGE_LEN + 1
        ));
        conn.close().await;
        assert_eq!(conn.recv().await.unwrap(), None);
    }

    #[tokio::test]
    async fn plaintext_needs_the_danger_option() {
        let addr = server(Script::Echo, false).await;
        let got = connect(&TunnelConfig::default(), &url("ws", addr), HeaderMap::new()).await;
        assert!(matches!(got, Err(TunnelError::PlaintextRefused)), "{got:?}");
        let got = connect(&plaintext(), &url("http", addr), HeaderMap::new()).await;
        assert!(matches!(got, Err(TunnelError::BadUrl(_))), "{got:?}");
    }

    #[tokio::test]
    async fn refusals_carry_the_status_and_the_relay_text() {
        let addr = server(Script::Refuse, false).await;
        let got = connect(&plaintext(), &url("ws", addr), HeaderMap::new()).await;
        match got {
            Err(e @ TunnelError::Refused { .. }) => assert_eq!(
                e.to_string(),
                "the tunnel service refused the tunnel: HTTP 404 (no pending tunnel)"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_subprotocol_is_required() {
        let addr = server(Script::NoSubprotocol, false).await;
        let got = connect(&plaintext(), &url("ws", addr), HeaderMap::new()).await;
        assert!(matches!(got, Err(TunnelError::Subprotocol)), "{got:?}");
    }

    #[tokio::test]
    async fn text_oversized_and_error_closes_are_typed_errors() {
        let addr = server(Script::Text, false).await;
        let mut conn = connect(&plaintext(), &url("ws", addr), HeaderMap::new())
            .await
            .unwrap();
        assert!(matches!(conn.recv().await, Err(TunnelError::TextMessage)));

        let addr = server(Script::Oversized, false).await;
        let mut conn = connect(&plaintext(), &url("ws", addr), HeaderMap::new())
            .await
            .unwrap();
        let got = conn.recv().await;
        assert!(
            matches!(got, Err(TunnelError::MessageTooLarge(n)) if n > MAX_MESSAGE_LEN),
            "{got:?}"
        );

        let addr = server(Script::CloseTooBig, false).await;
        let mut conn = connect(&plaintext(), &url("ws", addr), HeaderMap::new())
            .await
            .unwrap();
        match conn.recv().await {
            Err(TunnelError::ClosedByRelay { code, reason }) => {
                assert_eq!((code, reason.as_str()), (1009, "frame too large"));
            }
            other => panic!("expected a close code, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn unreachable_relay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let got = connect(&plaintext(), &url("ws", addr), HeaderMap::new()).await;
        assert!(matches!(got, Err(TunnelError::Unreachable(_))), "{got:?}");
    }

    #[tokio::test]
    async fn tls_trusts_the_extra_ca_only_when_given() {
        let addr = server(Script::Echo, true).await;
        let got = connect(
            &TunnelConfig::default(),
            &url("wss", addr),
            HeaderMap::new(),
        )
        .await;
        assert!(
            matches!(&got, Err(TunnelError::Unreachable(m)) if m.contains("TLS")),
            "{got:?}"
        );
        let config = TunnelConfig {
            extra_ca_pem: Some(TEST_CA.into()),
            ..TunnelConfig::default()
        };
        let mut conn = connect(&config, &url("wss", addr), HeaderMap::new())
            .await
            .unwrap();
        conn.send(vec![9; 300]).await.unwrap();
        assert_eq!(conn.recv().await.unwrap(), Some(vec![9; 300]));
        let bad = TunnelConfig {
            extra_ca_pem: Some("garbage".into()),
            ..TunnelConfig::default()
        };
        let got = connect(&bad, &url("wss", addr), HeaderMap::new()).await;
        assert!(matches!(got, Err(TunnelError::TlsConfig(_))), "{got:?}");
    }
}
