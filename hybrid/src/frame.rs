//! Messages inside the encrypted tunnel (CTAP 2.2 §11.5.3; Chromium `fido_tunnel_device.cc`,
//! `v2_authenticator.cc`).
//!
//! * The **post-handshake message** is the phone's first encrypted message: a CBOR map
//!   `{1: getInfo response, 3: ["ctap", ...]}` without a type byte.
//! * After it, every message is a **frame**: one type byte and a payload — shutdown (0, client
//!   only), CTAP (1), update (2, linking data) or JSON (3, digital credentials).
//! * **Linking data** lets a client reach the phone later without a QR code; it is authenticated
//!   by an HMAC over the handshake hash keyed by a Diffie-Hellman of the phone's identity key and
//!   the client's QR key.
//!
//! Old phones speak *revision 0*: the post-handshake map is padded inside the CBOR layer and later
//! messages have no type byte. [`PostHandshake::decode`] detects which revision the phone speaks.

use hmac::{Hmac, Mac};
use p256::{PublicKey, SecretKey};
use sha2::Sha256;
use thiserror::Error;

use crate::cbor::{self, CborError, Strictness, Value};
use crate::ctap::CtapError;
use crate::ctap::get_info::GetInfoResponse;
use crate::noise::uncompressed;
use crate::secret::Secret;

/// Size the phone pads an update frame's plaintext to (Chromium's `kPaddingTarget`-style
/// behaviour: updates do not reveal whether they carry linking data).
pub const UPDATE_PADDED_LEN: usize = 512;

/// Frame types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageType {
    /// Client → phone: the session is over.
    Shutdown = 0,
    /// A CTAP request (command byte ‖ CBOR) or reply (status byte ‖ CBOR).
    Ctap = 1,
    /// Linking data and other updates (CBOR map).
    Update = 2,
    /// Digital credential JSON (CTAP 2.3).
    Json = 3,
}

/// One framed message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Shutdown; any payload is ignored.
    Shutdown,
    /// A CTAP request or reply.
    Ctap(Vec<u8>),
    /// An update map.
    Update(Vec<u8>),
    /// A JSON message.
    Json(Vec<u8>),
}

/// Why a tunnel message could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The message is empty.
    #[error("empty message")]
    Empty,
    /// The type byte is not 0–3.
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// The post-handshake message is neither a revision 1 map nor a padded revision 0 map.
    #[error("post-handshake message is not a CBOR map: {0}")]
    PostHandshakeCbor(CborError),
    /// A post-handshake message or update is not a CBOR map (in either revision).
    #[error("message is not a CBOR map")]
    NotMap,
    /// Key 3 of the post-handshake message is not an array.
    #[error("post-handshake features (key 3) must be an array")]
    FeaturesType,
    /// CTAP is advertised (or implied) but key 1 is missing or not a byte string.
    #[error("post-handshake message lacks the getInfo response (key 1)")]
    MissingGetInfo,
    /// Key 1 is present although the phone does not advertise CTAP.
    #[error("post-handshake message carries getInfo without advertising ctap")]
    UnexpectedGetInfo,
    /// The getInfo response does not decode.
    #[error("post-handshake getInfo response invalid: {0}")]
    GetInfo(CtapError),
    /// An update is not a CBOR map.
    #[error("update is not a CBOR map: {0}")]
    UpdateCbor(CborError),
}

impl Frame {
    /// The frame's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Shutdown => MessageType::Shutdown,
            Self::Ctap(_) => MessageType::Ctap,
            Self::Update(_) => MessageType::Update,
            Self::Json(_) => MessageType::Json,
        }
    }

    /// Type byte ‖ payload.
    pub fn encode(&self) -> Vec<u8> {
        let payload: &[u8] = match self {
            Self::Shutdown => &[],
            Self::Ctap(p) | Self::Update(p) | Self::Json(p) => p,
        };
        let mut out = Vec::with_capacity(payload.len() + 1);
        out.push(self.message_type() as u8);
        out.extend_from_slice(payload);
        out
    }

    /// Reads a frame.
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let (&kind, payload) = bytes.split_first().ok_or(FrameError::Empty)?;
        match kind {
            0 => Ok(Self::Shutdown),
            1 => Ok(Self::Ctap(payload.to_vec())),
            2 => Ok(Self::Update(payload.to_vec())),
            3 => Ok(Self::Json(payload.to_vec())),
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

/// Which framing the phone speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revision {
    /// No type bytes, CBOR-level padding (older phones).
    Zero,
    /// Framed messages (current).
    One,
}

/// The phone's first encrypted message.
#[derive(Clone, Debug, PartialEq)]
pub struct PostHandshake {
    /// The phone's getInfo response, raw CBOR (the client answers getInfo from it locally).
    pub get_info: Option<Vec<u8>>,
    /// Key 3: advertised features; `None` means CTAP only.
    pub features: Option<Vec<String>>,
    /// Key 2 (legacy): linking data, as received.
    pub linking: Option<Value>,
}

impl PostHandshake {
    /// The message a phone sends: its getInfo and `["ctap"]`.
    pub fn for_ctap(get_info: &GetInfoResponse) -> Self {
        Self {
            get_info: Some(get_info.to_cbor()),
            features: Some(vec!["ctap".to_owned()]),
            linking: None,
        }
    }

    /// Whether the phone accepts CTAP messages.
    pub fn supports_ctap(&self) -> bool {
        self.features
            .as_ref()
            .is_none_or(|f| f.iter().any(|s| s == "ctap"))
    }

    /// Canonical CBOR (revision 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut map = Vec::new();
        if let Some(info) = &self.get_info {
            map.push((cbor::int(1), Value::Bytes(info.clone())));
        }
        if let Some(linking) = &self.linking {
            map.push((cbor::int(2), linking.clone()));
        }
        if let Some(features) = &self.features {
            let list = features.iter().cloned().map(Value::Text).collect();
            map.push((cbor::int(3), Value::Array(list)));
        }
        cbor::encode(&Value::Map(map))
    }

    /// Decodes an unpadded post-handshake plaintext, detecting the revision: exactly one CBOR
    /// map is revision 1; anything else is tried as a padded revision 0 map.
    pub fn decode(plaintext: &[u8]) -> Result<(Self, Revision), FrameError> {
        let (map, revision) = match cbor::decode(plaintext, Strictness::Lenient) {
            Ok(Value::Map(map)) => (map, Revision::One),
            Ok(_) => return Err(FrameError::NotMap),
            Err(e) => match decode_padded_map_v0(plaintext) {
                Ok(map) => (map, Revision::Zero),
                Err(_) => return Err(FrameError::PostHandshakeCbor(e)),
            },
        };
        let features = match cbor::map_get(&map, 3) {
            None => None,
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(|v| match v {
                        Value::Text(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            Some(_) => return Err(FrameError::FeaturesType),
        };
        let mut message = Self {
            get_info: None,
            features,
            linking: cbor::map_get(&map, 2).cloned(),
        };
        match cbor::map_get(&map, 1) {
            Some(_) if !message.supports_ctap() => return Err(FrameError::UnexpectedGetInfo),
            Some(Value::Bytes(info)) => {
                GetInfoResponse::from_cbor(info).map_err(FrameError::GetInfo)?;
                message.get_info = Some(info.clone());
            }
            _ if message.supports_ctap() => return Err(FrameError::MissingGetInfo),
            _ => {}
        }
        Ok((message, revision))
    }
}

/// Removes revision 0 CBOR-level padding and decodes the map: zeros and a 16-bit little-endian
/// zero count (total a multiple of 512), or the older form with an 8-bit count (multiple of 256).
pub fn decode_padded_map_v0(padded: &[u8]) -> Result<Vec<(Value, Value)>, FrameError> {
    let try_form = |granule: usize, count_len: usize| -> Option<Vec<(Value, Value)>> {
        if padded.is_empty() || !padded.len().is_multiple_of(granule) || padded.len() < count_len {
            return None;
        }
        let (body, count) = padded.split_at(padded.len() - count_len);
        let zeros = match count {
            [a, b] => usize::from(u16::from_le_bytes([*a, *b])),
            [a] => usize::from(*a),
            _ => return None,
        };
        let end = body.len().checked_sub(zeros)?;
        match cbor::decode(&body[..end], Strictness::Lenient) {
            Ok(Value::Map(map)) => Some(map),
            _ => None,
        }
    };
    try_form(512, 2)
        .or_else(|| try_form(256, 1))
        .ok_or(FrameError::NotMap)
}

/// Linking data a phone sends so the client can reach it later (update key 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkingInfo {
    /// Key 1: how the tunnel service reaches the phone.
    pub contact_id: Vec<u8>,
    /// Key 2: which link this is.
    pub link_id: [u8; 8],
    /// Key 3: the secret for state-assisted adverts and PSKs.
    pub link_secret: Secret<32>,
    /// Key 4: the phone's identity public key.
    pub identity_public_key: PublicKey,
    /// Key 5: the phone's name for the user interface.
    pub name: String,
    /// Key 6: HMAC over the handshake hash.
    pub signature: [u8; 32],
}

/// Why linking data was refused. The session goes on either way; the link is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LinkingError {
    /// A field is missing or has the wrong type or length.
    #[error("linking data field {0} missing or malformed")]
    Field(u64),
    /// Key 4 is not a P-256 point.
    #[error("linking data identity key is not a P-256 point")]
    IdentityKey,
    /// The signature does not match this handshake.
    #[error("linking data signature does not match")]
    Signature,
}

fn fixed_bytes<const N: usize>(map: &[(Value, Value)], key: u64) -> Result<[u8; N], LinkingError> {
    match cbor::map_get(map, key) {
        Some(Value::Bytes(b)) => {
            <[u8; N]>::try_from(b.as_slice()).map_err(|_| LinkingError::Field(key))
        }
        _ => Err(LinkingError::Field(key)),
    }
}

impl LinkingInfo {
    /// Builds and signs linking data on the phone.
    pub fn sign(
        contact_id: Vec<u8>,
        link_id: [u8; 8],
        link_secret: Secret<32>,
        identity: &SecretKey,
        name: String,
        client_public_key: &PublicKey,
        handshake_hash: &[u8; 32],
    ) -> Self {
        Self {
            contact_id,
            link_id,
            link_secret,
            identity_public_key: identity.public_key(),
            name,
            signature: linking_signature(identity, client_public_key, handshake_hash),
        }
    }

    /// The CBOR map.
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (cbor::int(1), Value::Bytes(self.contact_id.clone())),
            (cbor::int(2), Value::Bytes(self.link_id.to_vec())),
            (
                cbor::int(3),
                Value::Bytes(self.link_secret.expose().to_vec()),
            ),
            (
                cbor::int(4),
                Value::Bytes(uncompressed(&self.identity_public_key).to_vec()),
            ),
            (cbor::int(5), Value::Text(self.name.clone())),
            (cbor::int(6), Value::Bytes(self.signature.to_vec())),
        ])
    }

    /// Reads linking data, checking every field's type and length.
    pub fn from_value(value: &Value) -> Result<Self, LinkingError> {
        let Value::Map(map) = value else {
            return Err(LinkingError::Field(0));
        };
        let contact_id = match cbor::map_get(map, 1) {
            Some(Value::Bytes(b)) if !b.is_empty() => b.clone(),
            _ => return Err(LinkingError::Field(1)),
        };
        let link_id = fixed_bytes::<8>(map, 2)?;
        let link_secret = Secret::new(fixed_bytes::<32>(map, 3)?);
        let identity = fixed_bytes::<65>(map, 4)?;
        let name = match cbor::map_get(map, 5) {
            Some(Value::Text(s)) => s.clone(),
            _ => return Err(LinkingError::Field(5)),
        };
        let signature = fixed_bytes::<32>(map, 6)?;
        if identity[0] != 4 {
            return Err(LinkingError::IdentityKey);
        }
        let identity_public_key =
            PublicKey::from_sec1_bytes(&identity).map_err(|_| LinkingError::IdentityKey)?;
        Ok(Self {
            contact_id,
            link_id,
            link_secret,
            identity_public_key,
            name,
            signature,
        })
    }

    /// Checks the signature with the client's QR private key and its own handshake hash.
    pub fn verify(
        &self,
        client_identity: &SecretKey,
        handshake_hash: &[u8; 32],
    ) -> Result<(), LinkingError> {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(
            client_identity
                .diffie_hellman(&self.identity_public_key)
                .raw_secret_bytes(),
        )
        .map_err(|_| LinkingError::Signature)?;
        mac.update(handshake_hash);
        mac.verify_slice(&self.signature)
            .map_err(|_| LinkingError::Signature)
    }
}

/// HMAC-SHA256 keyed by the x-coordinate of ECDH(phone identity, client QR key) over the
/// handshake hash.
pub fn linking_signature(
    identity: &SecretKey,
    client_public_key: &PublicKey,
    handshake_hash: &[u8; 32],
) -> [u8; 32] {
    match <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(
        identity
            .diffie_hellman(client_public_key)
            .raw_secret_bytes(),
    ) {
        Ok(mut mac) => {
            mac.update(handshake_hash);
            mac.finalize().into_bytes().into()
        }
        // HMAC accepts keys of any length.
        Err(_) => [0; 32],
    }
}

/// An update payload (the CBOR after the type byte): `{0: zero padding, 1: linking data}`,
/// padded so the whole frame is [`UPDATE_PADDED_LEN`] bytes when it fits (as close below as
/// CBOR head sizes allow otherwise), so that its size does not tell whether it links.
pub fn encode_update(linking: Option<&LinkingInfo>) -> Vec<u8> {
    let mut map: Vec<(Value, Value)> = linking
        .map(|l| vec![(cbor::int(1), l.to_value())])
        .unwrap_or_default();
    let unpadded = cbor::encode(&Value::Map(map.clone()));
    // The frame is the type byte plus the map. Key 0 adds one key byte, the byte string's head
    // (1, 2 or 3 bytes) and the zeros; the map's own head stays one byte.
    let room = (UPDATE_PADDED_LEN - 1).saturating_sub(unpadded.len() + 1);
    let head_len = |zeros: usize| match zeros {
        0..24 => 1,
        24..256 => 2,
        _ => 3,
    };
    let Some(zeros) = (0..=room).rev().find(|&z| z + head_len(z) <= room) else {
        return unpadded;
    };
    map.push((cbor::int(0), Value::Bytes(vec![0; zeros])));
    cbor::encode(&Value::Map(map))
}

/// Reads an update payload; returns its linking data, if any, undecoded.
pub fn decode_update(payload: &[u8]) -> Result<Option<Value>, FrameError> {
    match cbor::decode(payload, Strictness::Lenient).map_err(FrameError::UpdateCbor)? {
        Value::Map(map) => Ok(cbor::map_get(&map, 1).cloned()),
        _ => Err(FrameError::NotMap),
    }
}
