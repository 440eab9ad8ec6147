//! The `FIDO:/` URL a QR code carries (CTAP 2.2 §11.5.1.1; Chromium `qr::Parse`, `qr::Encode`).
//!
//! `FIDO:/` followed by the [digit encoding](crate::digits) of a canonical CBOR map:
//!
//! | key | type | meaning |
//! |---|---|---|
//! | 0 | bstr(33) | the client's QR identity key, compressed P-256 point |
//! | 1 | bstr(16) | QR secret |
//! | 2 | uint | number of assigned tunnel domains the client knows |
//! | 3 | uint | Unix time in seconds |
//! | 4 | bool | client can store linking data (state-assisted transactions) |
//! | 5 | tstr | request type hint, `"ga"` or `"mc"` |
//!
//! Our encoder always writes keys 0, 1, 4 and 5, and keys 2 and 3 when set (a client URL from
//! [`FidoUrl::new`] sets both) and never key 6 or GREASE
//! keys. The decoder matches the prefix in any case, requires canonical CBOR, ignores unknown
//! keys and unknown hints (→ `ga`), ignores a key 3 of the wrong type (as Chromium), and reports
//! the first failed check as a [`UrlError`].

use core::fmt;

use p256::PublicKey;
use p256::elliptic_curve::sec1::ToSec1Point;
use thiserror::Error;

use crate::cbor::{self, CborError, Strictness, Value};
use crate::derive;
use crate::digits::{self, DigitsError};
use crate::domain::KNOWN_ASSIGNED_DOMAINS;
use crate::secret::QrSecret;
use crate::tunnel::TunnelId;

/// The URL scheme prefix, as written.
pub const PREFIX: &str = "FIDO:/";
/// Longest URL accepted (in bytes). A full client URL is under 200; QR codes hold at most 7089
/// digits, but nothing legitimate comes close to this limit.
pub const MAX_URL_LEN: usize = 2048;

/// What the client will ask the phone to do (URL key 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestType {
    /// `"ga"`: authenticatorGetAssertion (sign in).
    GetAssertion,
    /// `"mc"`: authenticatorMakeCredential (register a passkey).
    MakeCredential,
}

impl RequestType {
    /// The hint as written in the URL.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::GetAssertion => "ga",
            Self::MakeCredential => "mc",
        }
    }

    /// Reads a hint; unknown hints mean `ga`, as in Chromium.
    pub fn from_hint(hint: &str) -> Self {
        match hint {
            "mc" => Self::MakeCredential,
            _ => Self::GetAssertion,
        }
    }
}

impl fmt::Display for RequestType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `FIDO:/` URL was rejected: the first check that failed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Longer than [`MAX_URL_LEN`].
    #[error("URL longer than {MAX_URL_LEN} bytes")]
    TooLong,
    /// Does not start with `FIDO:/` (any case).
    #[error("URL does not start with FIDO:/")]
    Prefix,
    /// The digits after the prefix do not decode.
    #[error("URL digits invalid: {0}")]
    Digits(DigitsError),
    /// The decoded bytes are not canonical CBOR.
    #[error("URL payload is not canonical CBOR: {0}")]
    Cbor(CborError),
    /// The CBOR item is not a map.
    #[error("URL payload is not a CBOR map")]
    NotMap,
    /// Key 0 or key 1 is missing.
    #[error("URL lacks key {0}")]
    MissingKey(u64),
    /// Key 0 or key 1 is not a byte string.
    #[error("URL key 0 and key 1 must be byte strings")]
    Key0Key1Type,
    /// Key 0 is not 33 bytes.
    #[error("URL public key must be 33 bytes (compressed), got {0}")]
    PublicKeyLength(usize),
    /// Key 1 is not 16 bytes.
    #[error("URL QR secret must be 16 bytes, got {0}")]
    SecretLength(usize),
    /// Key 2 is present but not an unsigned integer.
    #[error("URL key 2 (tunnel server domains) must be an unsigned integer")]
    Key2Type,
    /// Key 4 is present but not a boolean.
    #[error("URL key 4 (state-assisted) must be a boolean")]
    Key4Type,
    /// Key 5 is present but not a text string.
    #[error("URL key 5 (request type) must be a text string")]
    Key5Type,
    /// Key 0 is not a point on P-256.
    #[error("URL public key is not a point on P-256")]
    PublicKeyInvalid,
}

impl UrlError {
    /// A stable identifier for the failed check.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLong => "too_long",
            Self::Prefix => "prefix",
            Self::Digits(DigitsError::NonDigit { .. }) => "digits_non_digit",
            Self::Digits(DigitsError::Length { .. }) => "digits_length",
            Self::Digits(_) => "digits_range",
            Self::Cbor(_) => "cbor",
            Self::NotMap => "not_map",
            Self::MissingKey(_) => "missing_key",
            Self::Key0Key1Type => "key0_key1_type",
            Self::PublicKeyLength(_) => "public_key_length",
            Self::SecretLength(_) => "secret_length",
            Self::Key2Type => "key2_type",
            Self::Key4Type => "key4_type",
            Self::Key5Type => "key5_type",
            Self::PublicKeyInvalid => "public_key_invalid",
        }
    }
}

/// A decoded `FIDO:/` URL. Valid by construction: the key is a P-256 point and the secret 16
/// bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FidoUrl {
    /// The client's QR identity public key.
    pub public_key: PublicKey,
    /// The QR secret.
    pub qr_secret: QrSecret,
    /// Key 2: assigned tunnel domains the client knows (absent means 0).
    pub tunnel_server_domains: Option<u64>,
    /// Key 3: Unix time in seconds when the URL was made.
    pub timestamp: Option<u64>,
    /// Key 4: whether the client can store linking data.
    pub state_assisted: Option<bool>,
    /// Key 5: the request type.
    pub request_type: RequestType,
}

impl FidoUrl {
    /// A client's URL as Tether builds it: both assigned domains known, the time given, key 4
    /// present.
    pub fn new(
        public_key: PublicKey,
        qr_secret: QrSecret,
        request_type: RequestType,
        unix_time: u64,
        state_assisted: bool,
    ) -> Self {
        Self {
            public_key,
            qr_secret,
            tunnel_server_domains: Some(KNOWN_ASSIGNED_DOMAINS),
            timestamp: Some(unix_time),
            state_assisted: Some(state_assisted),
            request_type,
        }
    }

    /// The compressed 33-byte public key as carried in key 0.
    pub fn compressed_public_key(&self) -> [u8; 33] {
        let point = self.public_key.to_sec1_point(true);
        let mut out = [0u8; 33];
        out.copy_from_slice(point.as_bytes());
        out
    }

    /// The tunnel id both sides derive from the QR secret.
    pub fn tunnel_id(&self) -> TunnelId {
        derive::tunnel_id(&self.qr_secret)
    }

    /// The canonical CBOR map.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut map = vec![
            (
                cbor::int(0),
                Value::Bytes(self.compressed_public_key().to_vec()),
            ),
            (cbor::int(1), Value::Bytes(self.qr_secret.expose().to_vec())),
        ];
        if let Some(n) = self.tunnel_server_domains {
            map.push((cbor::int(2), cbor::int(n)));
        }
        if let Some(t) = self.timestamp {
            map.push((cbor::int(3), cbor::int(t)));
        }
        map.push((
            cbor::int(4),
            Value::Bool(self.state_assisted.unwrap_or(false)),
        ));
        map.push((
            cbor::int(5),
            Value::Text(self.request_type.as_str().to_owned()),
        ));
        cbor::encode(&Value::Map(map))
    }

    /// The URL: `FIDO:/` and digits.
    pub fn encode(&self) -> String {
        let mut url = String::from(PREFIX);
        url.push_str(&digits::encode(&self.to_cbor()));
        url
    }

    /// Parses a URL.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        if url.len() > MAX_URL_LEN {
            return Err(UrlError::TooLong);
        }
        let prefix_ok = url
            .get(..PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX));
        if !prefix_ok {
            return Err(UrlError::Prefix);
        }
        let bytes = digits::decode(&url[PREFIX.len()..]).map_err(UrlError::Digits)?;
        Self::from_cbor(&bytes)
    }

    /// Parses the CBOR map.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, UrlError> {
        let value = cbor::decode(bytes, Strictness::Canonical).map_err(UrlError::Cbor)?;
        let Value::Map(map) = value else {
            return Err(UrlError::NotMap);
        };
        let key0 = cbor::map_get(&map, 0).ok_or(UrlError::MissingKey(0))?;
        let key1 = cbor::map_get(&map, 1).ok_or(UrlError::MissingKey(1))?;
        let (Value::Bytes(public_key), Value::Bytes(secret)) = (key0, key1) else {
            return Err(UrlError::Key0Key1Type);
        };
        if public_key.len() != 33 {
            return Err(UrlError::PublicKeyLength(public_key.len()));
        }
        let qr_secret = QrSecret::from_slice(secret).ok_or(UrlError::SecretLength(secret.len()))?;
        let tunnel_server_domains = match cbor::map_get(&map, 2) {
            None => None,
            Some(v) => Some(cbor::uint(v).ok_or(UrlError::Key2Type)?),
        };
        let timestamp = cbor::map_get(&map, 3).and_then(cbor::uint);
        let state_assisted = match cbor::map_get(&map, 4) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(UrlError::Key4Type),
        };
        let request_type = match cbor::map_get(&map, 5) {
            None => RequestType::GetAssertion,
            Some(Value::Text(hint)) => RequestType::from_hint(hint),
            Some(_) => return Err(UrlError::Key5Type),
        };
        let public_key =
            PublicKey::from_sec1_bytes(public_key).map_err(|_| UrlError::PublicKeyInvalid)?;
        Ok(Self {
            public_key,
            qr_secret,
            tunnel_server_domains,
            timestamp,
            state_assisted,
            request_type,
        })
    }
}
