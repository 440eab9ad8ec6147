//! authenticatorGetInfo (0x04) response (CTAP 2.2 §6.4).
//!
//! In hybrid transport getInfo never crosses the tunnel as a command: the phone sends its
//! response inside the post-handshake message (key 1) and the client answers getInfo locally
//! from it (hybrid-protocol §9). Only the fields a hybrid client or phone uses are modelled;
//! other keys are ignored on decode.

use std::collections::BTreeMap;

use super::fields::{Field, Fields, MapWriter, as_uint, text_array};
use super::{CtapError, PublicKeyCredentialParameters, decode_value};
use crate::cbor::{self, Value};

const RESPONSE: &str = "getInfo response";
const OPTIONS: &str = "getInfo options";

const VERSIONS: Field = Field::new(0x01, "versions");
const EXTENSIONS: Field = Field::new(0x02, "extensions");
const AAGUID: Field = Field::new(0x03, "aaguid");
const OPTIONS_FIELD: Field = Field::new(0x04, "options");
const MAX_MSG_SIZE: Field = Field::new(0x05, "maxMsgSize");
const PIN_UV_AUTH_PROTOCOLS: Field = Field::new(0x06, "pinUvAuthProtocols");
const TRANSPORTS: Field = Field::new(0x09, "transports");
const ALGORITHMS: Field = Field::new(0x0a, "algorithms");

/// authenticatorGetInfo response (CTAP 2.2 §6.4), the fields hybrid uses.
///
/// Lists are empty when absent and are not written when empty; `options` likewise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetInfoResponse {
    /// 0x01 versions, e.g. `"FIDO_2_0"`, `"FIDO_2_1"` (required).
    pub versions: Vec<String>,
    /// 0x02 extensions supported, e.g. `"prf"`.
    pub extensions: Vec<String>,
    /// 0x03 aaguid (required); all zero for Chrome's phone authenticator.
    pub aaguid: [u8; 16],
    /// 0x04 options, e.g. `"rk"`, `"uv"`. Entries whose key is not text or whose value is not a
    /// boolean are ignored on decode.
    pub options: BTreeMap<String, bool>,
    /// 0x05 maxMsgSize.
    pub max_msg_size: Option<u64>,
    /// 0x06 pinUvAuthProtocols, most preferred first.
    pub pin_uv_auth_protocols: Vec<u64>,
    /// 0x09 transports, e.g. `"hybrid"`.
    pub transports: Vec<String>,
    /// 0x0A algorithms; entries of a type other than `"public-key"` are dropped on decode.
    pub algorithms: Vec<PublicKeyCredentialParameters>,
}

impl GetInfoResponse {
    /// What Chrome for Android reports as a hybrid authenticator (hybrid-protocol §9,
    /// Chromium's `BuildGetInfoResponse`): versions `FIDO_2_0` and `FIDO_2_1`, extension `prf`,
    /// a zero AAGUID, options `rk` and `uv` true, transports `cable`, `hybrid` and `internal`.
    /// No `clientPin` or `pinUvAuthToken` option, so a client never sends a clientPIN command
    /// first.
    pub fn hybrid_phone() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
        Self {
            versions: strings(&["FIDO_2_0", "FIDO_2_1"]),
            extensions: strings(&["prf"]),
            aaguid: [0; 16],
            options: BTreeMap::from([("rk".to_owned(), true), ("uv".to_owned(), true)]),
            max_msg_size: None,
            pin_uv_auth_protocols: Vec::new(),
            transports: strings(&["cable", "hybrid", "internal"]),
            algorithms: Vec::new(),
        }
    }

    /// The response as a CBOR map.
    pub fn to_value(&self) -> Value {
        let mut map = MapWriter::new();
        map.put(VERSIONS, text_array(&self.versions));
        if !self.extensions.is_empty() {
            map.put(EXTENSIONS, text_array(&self.extensions));
        }
        map.put(AAGUID, self.aaguid.as_slice());
        if !self.options.is_empty() {
            let mut options = MapWriter::new();
            for (name, value) in &self.options {
                options.member(name, *value);
            }
            map.put(OPTIONS_FIELD, options.build());
        }
        map.put_opt(MAX_MSG_SIZE, self.max_msg_size);
        if !self.pin_uv_auth_protocols.is_empty() {
            let protocols = self.pin_uv_auth_protocols.iter().map(|p| cbor::int(*p));
            map.put(PIN_UV_AUTH_PROTOCOLS, Value::Array(protocols.collect()));
        }
        if !self.transports.is_empty() {
            map.put(TRANSPORTS, text_array(&self.transports));
        }
        if !self.algorithms.is_empty() {
            let algorithms = self.algorithms.iter().map(|a| a.to_value());
            map.put(ALGORITHMS, Value::Array(algorithms.collect()));
        }
        map.build()
    }

    /// The response as canonical CBOR (without a status byte).
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::encode(&self.to_value())
    }

    /// Reads the response map.
    ///
    /// # Errors
    ///
    /// The first failed check as a [`CtapError`].
    pub fn from_value(value: &Value) -> Result<Self, CtapError> {
        let fields = Fields::new(RESPONSE, value)?;
        Ok(Self {
            versions: fields
                .text_list(VERSIONS)?
                .ok_or_else(|| fields.missing(VERSIONS))?,
            extensions: fields.text_list(EXTENSIONS)?.unwrap_or_default(),
            aaguid: fields.required_array(AAGUID)?,
            options: fields
                .optional_with(OPTIONS_FIELD, |v| {
                    let options = Fields::new(OPTIONS, v)?;
                    Ok(options
                        .bool_members()
                        .map(|(name, value)| (name.to_owned(), value))
                        .collect())
                })?
                .unwrap_or_default(),
            max_msg_size: fields.optional(MAX_MSG_SIZE, as_uint)?,
            pin_uv_auth_protocols: fields
                .list(PIN_UV_AUTH_PROTOCOLS, |v| {
                    as_uint(v)
                        .map(Some)
                        .ok_or_else(|| fields.wrong_type(PIN_UV_AUTH_PROTOCOLS))
                })?
                .unwrap_or_default(),
            transports: fields.text_list(TRANSPORTS)?.unwrap_or_default(),
            algorithms: fields
                .list(ALGORITHMS, PublicKeyCredentialParameters::from_list_entry)?
                .unwrap_or_default(),
        })
    }

    /// Decodes the response from CBOR (without a status byte), leniently.
    ///
    /// # Errors
    ///
    /// [`CtapError::Cbor`] for bad CBOR, otherwise as [`GetInfoResponse::from_value`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CtapError> {
        Self::from_value(&decode_value(bytes)?)
    }
}
