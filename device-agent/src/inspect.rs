//! Decoding reports for `device-agent inspect`: pure functions from input text to a report that
//! renders as JSON or as aligned text.
//!
//! Every failure is an [`InspectError`] whose message names the failed check, so the CLI can
//! print it as one line.

use hybrid::QrSecret;
use hybrid::advert;
use hybrid::derive;
use hybrid::domain::DomainId;
use hybrid::tunnel;
use hybrid::url::FidoUrl;
use serde::Serialize;

/// Why an input could not be inspected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The FIDO URL is invalid.
    #[error("invalid FIDO URL ({code}): {source}")]
    Url {
        /// The stable code of the failed check.
        code: &'static str,
        /// The failed check.
        source: hybrid::url::UrlError,
    },
    /// A hex argument is not hex of the right length.
    #[error("invalid {what}: expected {expected}")]
    Hex {
        /// Which argument.
        what: &'static str,
        /// What was expected.
        expected: &'static str,
    },
    /// The advert is not for this QR secret, or not valid.
    #[error("advert rejected ({code}): {reason}")]
    Advert {
        /// The stable code of the failed check.
        code: &'static str,
        /// The failed check.
        reason: advert::AdvertReject,
    },
    /// The domain id is not a number from 0 to 65535.
    #[error("invalid domain id: expected an integer from 0 to 65535")]
    DomainId,
}

/// `inspect url`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct UrlReport {
    /// Compressed public key, hex.
    pub public_key: String,
    /// QR secret, hex.
    pub qr_secret: String,
    /// Key 2, if present.
    pub tunnel_server_domains: Option<u64>,
    /// Key 3, if present.
    pub timestamp: Option<u64>,
    /// Key 4, if present.
    pub state_assisted: Option<bool>,
    /// `"ga"` or `"mc"`.
    pub request_type: &'static str,
    /// Tunnel id derived from the QR secret, hex.
    pub tunnel_id: String,
}

/// `inspect advert`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct AdvertReport {
    /// The advert's nonce, hex.
    pub nonce: String,
    /// The relay's routing id, hex.
    pub routing_id: String,
    /// The tunnel server domain id.
    pub tunnel_server_domain_id: u16,
    /// The tunnel server's host name.
    pub tunnel_server_domain: Option<String>,
    /// The Noise PSK this advert yields, hex.
    pub psk: String,
    /// Where the client connects.
    pub connect_url: Option<String>,
}

/// `inspect domain`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DomainReport {
    /// The id.
    pub id: u16,
    /// Its host name, or `None` for the unassigned ids 2–255.
    pub domain: Option<String>,
}

/// Decodes a `FIDO:/` URL.
pub fn url(input: &str) -> Result<UrlReport, InspectError> {
    let url = FidoUrl::parse(input.trim()).map_err(|source| InspectError::Url {
        code: source.code(),
        source,
    })?;
    Ok(UrlReport {
        public_key: hex::encode(url.compressed_public_key()),
        qr_secret: hex::encode(url.qr_secret.expose()),
        tunnel_server_domains: url.tunnel_server_domains,
        timestamp: url.timestamp,
        state_assisted: url.state_assisted,
        request_type: url.request_type.as_str(),
        tunnel_id: hex::encode(url.tunnel_id().as_bytes()),
    })
}

/// Trial-decrypts an advert with the session's QR secret.
pub fn advert(qr_secret_hex: &str, advert_hex: &str) -> Result<AdvertReport, InspectError> {
    let secret = hex::decode(qr_secret_hex.trim())
        .ok()
        .and_then(|b| QrSecret::from_slice(&b))
        .ok_or(InspectError::Hex {
            what: "QR secret",
            expected: "32 hex digits (16 bytes)",
        })?;
    let bytes = hex::decode(advert_hex.trim()).map_err(|_| InspectError::Hex {
        what: "advert",
        expected: "hex digits (20 bytes or more)",
    })?;
    let (plaintext, block) =
        advert::decrypt_qr(&derive::eid_key(&secret), &bytes).map_err(|reason| {
            InspectError::Advert {
                code: reason.code(),
                reason,
            }
        })?;
    let domain = plaintext.domain_id.domain();
    let tunnel_id = derive::tunnel_id(&secret);
    Ok(AdvertReport {
        nonce: hex::encode(plaintext.nonce),
        routing_id: hex::encode(plaintext.routing_id.as_bytes()),
        tunnel_server_domain_id: plaintext.domain_id.0,
        psk: hex::encode(derive::psk(secret.expose(), &block).expose()),
        connect_url: domain
            .as_deref()
            .map(|d| tunnel::connect_url(d, &plaintext.routing_id, &tunnel_id)),
        tunnel_server_domain: domain,
    })
}

/// Names the tunnel server of a domain id.
pub fn domain(id: &str) -> Result<DomainReport, InspectError> {
    let id: u16 = id.trim().parse().map_err(|_| InspectError::DomainId)?;
    Ok(DomainReport {
        id,
        domain: DomainId(id).domain(),
    })
}

/// Renders `(label, value)` rows as aligned text, `-` for absent values.
pub fn text(rows: &[(&str, Option<String>)]) -> String {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(label, value)| format!("{label:width$}  {}\n", value.as_deref().unwrap_or("-"),))
        .collect()
}

impl UrlReport {
    /// Human-readable rendering.
    pub fn to_text(&self) -> String {
        text(&[
            ("public key", Some(self.public_key.clone())),
            ("QR secret", Some(self.qr_secret.clone())),
            (
                "tunnel server domains",
                self.tunnel_server_domains.map(|n| n.to_string()),
            ),
            ("timestamp", self.timestamp.map(|t| t.to_string())),
            ("state assisted", self.state_assisted.map(|b| b.to_string())),
            ("request type", Some(self.request_type.to_owned())),
            ("tunnel id", Some(self.tunnel_id.clone())),
        ])
    }
}

impl AdvertReport {
    /// Human-readable rendering.
    pub fn to_text(&self) -> String {
        text(&[
            ("nonce", Some(self.nonce.clone())),
            ("routing id", Some(self.routing_id.clone())),
            (
                "tunnel server domain id",
                Some(self.tunnel_server_domain_id.to_string()),
            ),
            ("tunnel server domain", self.tunnel_server_domain.clone()),
            ("psk", Some(self.psk.clone())),
            ("connect url", self.connect_url.clone()),
        ])
    }
}

impl DomainReport {
    /// Human-readable rendering.
    pub fn to_text(&self) -> String {
        text(&[
            ("id", Some(self.id.to_string())),
            (
                "domain",
                Some(
                    self.domain
                        .clone()
                        .unwrap_or_else(|| "none (unassigned id)".to_owned()),
                ),
            ),
        ])
    }
}
