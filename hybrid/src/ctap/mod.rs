//! CTAP2 messages carried through the hybrid tunnel (CTAP 2.2 §6 "Authenticator API", §8
//! "Message Encoding").
//!
//! After the handshake the client sends exactly one CTAP request in a frame of type 1 and the
//! phone answers with one response (hybrid-protocol §9): a request is a command byte followed by a
//! CBOR map ([`CtapRequest`]), a response a status byte followed by a CBOR map ([`CtapResponse`]).
//! getInfo is never sent through the tunnel: the phone puts its [`GetInfoResponse`] into the
//! post-handshake message and the client answers getInfo locally from it.
//!
//! The types here are plain data. Encoding writes CTAP2 canonical CBOR with [`cbor::encode`] and
//! leaves absent optional fields out. Decoding reads CBOR with [`cbor::Strictness::Lenient`]
//! (a phone may not sort its keys), ignores unknown map keys, and reports the first failed check
//! as a [`CtapError`] naming the message and the field. Credential descriptors and parameters in a
//! list whose `type` is not `"public-key"` are skipped, as WebAuthn tells clients to ignore
//! unknown credential types; a single descriptor of another type is an error.
//!
//! Only makeCredential and getAssertion are modelled as requests: they are the only commands a
//! hybrid client sends (hybrid-protocol §9, "One command per tunnel").

use core::fmt;

use crate::cbor::{self, CborError, Value};

mod entity;
mod fields;
pub mod get_assertion;
pub mod get_info;
pub mod make_credential;
pub mod status;

pub use entity::{
    LargeBlobKey, PUBLIC_KEY_TYPE, PublicKeyCredentialDescriptor, PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
pub use get_assertion::{GetAssertionOptions, GetAssertionRequest, GetAssertionResponse};
pub use get_info::GetInfoResponse;
pub use make_credential::{MakeCredentialOptions, MakeCredentialRequest, MakeCredentialResponse};
pub use status::CtapStatus;

/// Why a CTAP message could not be decoded, or why a response carries no result.
///
/// By fault: [`CtapError::Status`] is the authenticator declining the request;
/// [`CtapError::UnsupportedCommand`] is a well-formed request this crate does not model; every
/// other variant is a malformed message from the peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CtapError {
    /// The message has no command or status byte.
    #[error("CTAP message is empty")]
    Empty,
    /// A request for a command other than makeCredential and getAssertion.
    #[error("unsupported CTAP command {0}")]
    UnsupportedCommand(CtapCommand),
    /// The CBOR part is not acceptable CBOR.
    #[error("invalid CBOR in CTAP message: {0}")]
    Cbor(#[from] CborError),
    /// `message` (or a structure inside it) is not a CBOR map.
    #[error("{message}: not a CBOR map")]
    NotAMap {
        /// The message or structure, e.g. "getAssertion request".
        message: &'static str,
    },
    /// A required integer-keyed field is absent.
    #[error("{message}: field {key:#04x} ({name}) missing")]
    MissingField {
        /// The message, e.g. "getAssertion request".
        message: &'static str,
        /// The field's map key.
        key: u64,
        /// The field's name in the spec, e.g. "rpId".
        name: &'static str,
    },
    /// An integer-keyed field has the wrong CBOR type (or an array element does).
    #[error("{message}: field {key:#04x} ({name}) has the wrong type")]
    WrongType {
        /// The message.
        message: &'static str,
        /// The field's map key.
        key: u64,
        /// The field's name in the spec.
        name: &'static str,
    },
    /// A fixed-size byte string field has the wrong length.
    #[error("{message}: field {key:#04x} ({name}) is {actual} bytes, expected {expected}")]
    WrongLength {
        /// The message.
        message: &'static str,
        /// The field's map key.
        key: u64,
        /// The field's name in the spec.
        name: &'static str,
        /// The required length.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// A required text-keyed member of an entity or options map is absent.
    #[error("{message}: member \"{member}\" missing")]
    MissingMember {
        /// The structure, e.g. "user entity".
        message: &'static str,
        /// The member's key, e.g. "id".
        member: &'static str,
    },
    /// A text-keyed member has the wrong CBOR type (or is out of range, for `alg`).
    #[error("{message}: member \"{member}\" has the wrong type")]
    WrongMemberType {
        /// The structure.
        message: &'static str,
        /// The member's key.
        member: &'static str,
    },
    /// A single credential descriptor whose type is not `"public-key"`.
    #[error("{message}: credential type \"{found}\" is not \"public-key\"")]
    UnknownCredentialType {
        /// The structure.
        message: &'static str,
        /// The type received.
        found: String,
    },
    /// The authenticator answered with a status other than `CTAP2_OK`.
    #[error("authenticator returned {0}")]
    Status(CtapStatus),
}

/// A CTAP2 command byte (CTAP 2.2 §6, "Commands"), lossless: every byte converts to a
/// `CtapCommand` and back to the same byte.
///
/// Equality and hashing compare the byte, so `Other(0x02) == GetAssertion`; [`From<u8>`] never
/// produces `Other` for a byte that has a named variant.
#[derive(Clone, Copy, Debug)]
pub enum CtapCommand {
    /// authenticatorMakeCredential (0x01).
    MakeCredential,
    /// authenticatorGetAssertion (0x02).
    GetAssertion,
    /// authenticatorGetInfo (0x04).
    GetInfo,
    /// authenticatorClientPIN (0x06).
    ClientPin,
    /// authenticatorReset (0x07).
    Reset,
    /// authenticatorGetNextAssertion (0x08).
    GetNextAssertion,
    /// authenticatorBioEnrollment (0x09).
    BioEnrollment,
    /// authenticatorCredentialManagement (0x0A).
    CredentialManagement,
    /// authenticatorSelection (0x0B).
    Selection,
    /// authenticatorLargeBlobs (0x0C).
    LargeBlobs,
    /// authenticatorConfig (0x0D).
    Config,
    /// Any other byte (vendor commands, prototypes, unassigned).
    Other(u8),
}

impl CtapCommand {
    /// The spec's name, e.g. "authenticatorGetAssertion", or "unknown" for [`CtapCommand::Other`].
    pub fn name(self) -> &'static str {
        match CtapCommand::from(u8::from(self)) {
            Self::MakeCredential => "authenticatorMakeCredential",
            Self::GetAssertion => "authenticatorGetAssertion",
            Self::GetInfo => "authenticatorGetInfo",
            Self::ClientPin => "authenticatorClientPIN",
            Self::Reset => "authenticatorReset",
            Self::GetNextAssertion => "authenticatorGetNextAssertion",
            Self::BioEnrollment => "authenticatorBioEnrollment",
            Self::CredentialManagement => "authenticatorCredentialManagement",
            Self::Selection => "authenticatorSelection",
            Self::LargeBlobs => "authenticatorLargeBlobs",
            Self::Config => "authenticatorConfig",
            Self::Other(_) => "unknown",
        }
    }
}

impl From<u8> for CtapCommand {
    fn from(byte: u8) -> Self {
        match byte {
            0x01 => Self::MakeCredential,
            0x02 => Self::GetAssertion,
            0x04 => Self::GetInfo,
            0x06 => Self::ClientPin,
            0x07 => Self::Reset,
            0x08 => Self::GetNextAssertion,
            0x09 => Self::BioEnrollment,
            0x0a => Self::CredentialManagement,
            0x0b => Self::Selection,
            0x0c => Self::LargeBlobs,
            0x0d => Self::Config,
            other => Self::Other(other),
        }
    }
}

impl From<CtapCommand> for u8 {
    fn from(command: CtapCommand) -> Self {
        match command {
            CtapCommand::MakeCredential => 0x01,
            CtapCommand::GetAssertion => 0x02,
            CtapCommand::GetInfo => 0x04,
            CtapCommand::ClientPin => 0x06,
            CtapCommand::Reset => 0x07,
            CtapCommand::GetNextAssertion => 0x08,
            CtapCommand::BioEnrollment => 0x09,
            CtapCommand::CredentialManagement => 0x0a,
            CtapCommand::Selection => 0x0b,
            CtapCommand::LargeBlobs => 0x0c,
            CtapCommand::Config => 0x0d,
            CtapCommand::Other(byte) => byte,
        }
    }
}

impl PartialEq for CtapCommand {
    fn eq(&self, other: &Self) -> bool {
        u8::from(*self) == u8::from(*other)
    }
}

impl Eq for CtapCommand {}

impl core::hash::Hash for CtapCommand {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        u8::from(*self).hash(state);
    }
}

impl fmt::Display for CtapCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.name(), u8::from(*self))
    }
}

/// A CTAP request as sent through the tunnel: command byte ‖ CTAP2 canonical CBOR map.
#[derive(Clone, Debug, PartialEq)]
pub enum CtapRequest {
    /// authenticatorMakeCredential (CTAP 2.2 §6.1).
    MakeCredential(MakeCredentialRequest),
    /// authenticatorGetAssertion (CTAP 2.2 §6.2).
    GetAssertion(GetAssertionRequest),
}

impl CtapRequest {
    /// The command byte this request is sent with.
    pub fn command(&self) -> CtapCommand {
        match self {
            Self::MakeCredential(_) => CtapCommand::MakeCredential,
            Self::GetAssertion(_) => CtapCommand::GetAssertion,
        }
    }

    /// Command byte ‖ canonical CBOR parameters.
    pub fn encode(&self) -> Vec<u8> {
        let body = match self {
            Self::MakeCredential(r) => r.to_cbor(),
            Self::GetAssertion(r) => r.to_cbor(),
        };
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(u8::from(self.command()));
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a request: the first byte selects the command, the rest is its CBOR map.
    ///
    /// # Errors
    ///
    /// [`CtapError::Empty`] for no bytes, [`CtapError::UnsupportedCommand`] for commands other
    /// than makeCredential and getAssertion, otherwise the parameters' decoding error.
    pub fn decode(bytes: &[u8]) -> Result<Self, CtapError> {
        let (&command, body) = bytes.split_first().ok_or(CtapError::Empty)?;
        match CtapCommand::from(command) {
            CtapCommand::MakeCredential => {
                MakeCredentialRequest::from_cbor(body).map(Self::MakeCredential)
            }
            CtapCommand::GetAssertion => {
                GetAssertionRequest::from_cbor(body).map(Self::GetAssertion)
            }
            other => Err(CtapError::UnsupportedCommand(other)),
        }
    }
}

impl From<MakeCredentialRequest> for CtapRequest {
    fn from(request: MakeCredentialRequest) -> Self {
        Self::MakeCredential(request)
    }
}

impl From<GetAssertionRequest> for CtapRequest {
    fn from(request: GetAssertionRequest) -> Self {
        Self::GetAssertion(request)
    }
}

/// A CTAP response as sent through the tunnel: status byte ‖ body (a CBOR map, or empty).
///
/// The body is kept as bytes; the typed accessors decode it. An error status with a non-empty
/// body is accepted and the body kept, since some authenticators send one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtapResponse {
    /// The status byte.
    pub status: CtapStatus,
    /// Everything after the status byte.
    pub body: Vec<u8>,
}

impl CtapResponse {
    /// A `CTAP2_OK` response with `body` (already encoded CBOR).
    pub fn ok(body: Vec<u8>) -> Self {
        Self {
            status: CtapStatus::Ok,
            body,
        }
    }

    /// A response with `status` and no body.
    pub fn error(status: CtapStatus) -> Self {
        Self {
            status,
            body: Vec::new(),
        }
    }

    /// Status byte ‖ body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.body.len());
        out.push(u8::from(self.status));
        out.extend_from_slice(&self.body);
        out
    }

    /// Splits a response into its status byte and body; the body is not decoded here.
    ///
    /// # Errors
    ///
    /// [`CtapError::Empty`] for no bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, CtapError> {
        let (&status, body) = bytes.split_first().ok_or(CtapError::Empty)?;
        Ok(Self {
            status: CtapStatus::from(status),
            body: body.to_vec(),
        })
    }

    fn ok_body(&self) -> Result<&[u8], CtapError> {
        if self.status.is_ok() {
            Ok(&self.body)
        } else {
            Err(CtapError::Status(self.status))
        }
    }

    /// The body as a getAssertion response.
    ///
    /// # Errors
    ///
    /// [`CtapError::Status`] if the status is not `CTAP2_OK`, otherwise the body's decoding
    /// error.
    pub fn get_assertion(&self) -> Result<GetAssertionResponse, CtapError> {
        GetAssertionResponse::from_cbor(self.ok_body()?)
    }

    /// The body as a makeCredential response.
    ///
    /// # Errors
    ///
    /// As [`CtapResponse::get_assertion`].
    pub fn make_credential(&self) -> Result<MakeCredentialResponse, CtapError> {
        MakeCredentialResponse::from_cbor(self.ok_body()?)
    }

    /// The body as a getInfo response.
    ///
    /// # Errors
    ///
    /// As [`CtapResponse::get_assertion`].
    pub fn get_info(&self) -> Result<GetInfoResponse, CtapError> {
        GetInfoResponse::from_cbor(self.ok_body()?)
    }
}

/// Decodes `bytes` leniently as the CBOR of a CTAP structure.
fn decode_value(bytes: &[u8]) -> Result<Value, CtapError> {
    Ok(cbor::decode(bytes, cbor::Strictness::Lenient)?)
}
