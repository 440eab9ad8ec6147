//! WebAuthn structures shared by several CTAP messages (CTAP 2.2 §6.1, §6.2; WebAuthn Level 3
//! §5.4 "Options for Credential Creation", §5.8 "Supporting Data Structures").
//!
//! They are CBOR maps with text keys. Encoding writes only the members that are present;
//! decoding ignores unknown members (such as the deprecated `icon`).

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::CtapError;
use super::fields::{Fields, MapWriter, as_bytes, as_text, text_array};
use crate::cbor::Value;

/// The only credential type WebAuthn defines, written as the `type` member of descriptors and
/// parameters.
pub const PUBLIC_KEY_TYPE: &str = "public-key";

const RP: &str = "rp entity";
const USER: &str = "user entity";
const DESCRIPTOR: &str = "credential descriptor";
const PARAMETERS: &str = "credential parameters";

/// A relying party (`PublicKeyCredentialRpEntity`): makeCredential field 0x02.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyCredentialRpEntity {
    /// The RP ID, a domain name (member `"id"`, required).
    pub id: String,
    /// A human-readable name (member `"name"`).
    pub name: Option<String>,
}

impl PublicKeyCredentialRpEntity {
    /// The CBOR map `{"id": .., "name": ..}`.
    pub fn to_value(&self) -> Value {
        MapWriter::new()
            .member("id", self.id.as_str())
            .member_opt("name", self.name.as_deref())
            .build()
    }

    /// Reads an RP entity map.
    ///
    /// # Errors
    ///
    /// [`CtapError::NotAMap`], [`CtapError::MissingMember`] for `id`,
    /// [`CtapError::WrongMemberType`].
    pub fn from_value(value: &Value) -> Result<Self, CtapError> {
        let fields = Fields::new(RP, value)?;
        Ok(Self {
            id: fields.required_member("id", as_text)?,
            name: fields.member("name", as_text)?,
        })
    }
}

/// A user account (`PublicKeyCredentialUserEntity`): makeCredential field 0x03 and getAssertion
/// response field 0x04.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyCredentialUserEntity {
    /// The user handle (member `"id"`, required, a byte string).
    pub id: Vec<u8>,
    /// The account name (member `"name"`).
    pub name: Option<String>,
    /// The display name (member `"displayName"`).
    pub display_name: Option<String>,
}

impl PublicKeyCredentialUserEntity {
    /// The CBOR map `{"id": .., "name": .., "displayName": ..}`.
    pub fn to_value(&self) -> Value {
        MapWriter::new()
            .member("id", self.id.as_slice())
            .member_opt("name", self.name.as_deref())
            .member_opt("displayName", self.display_name.as_deref())
            .build()
    }

    /// Reads a user entity map.
    ///
    /// # Errors
    ///
    /// [`CtapError::NotAMap`], [`CtapError::MissingMember`] for `id`,
    /// [`CtapError::WrongMemberType`].
    pub fn from_value(value: &Value) -> Result<Self, CtapError> {
        let fields = Fields::new(USER, value)?;
        Ok(Self {
            id: fields.required_member("id", as_bytes)?,
            name: fields.member("name", as_text)?,
            display_name: fields.member("displayName", as_text)?,
        })
    }
}

/// A credential reference (`PublicKeyCredentialDescriptor`) of type `"public-key"`: entries of
/// allowList and excludeList, and getAssertion response field 0x01.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyCredentialDescriptor {
    /// The credential ID (member `"id"`, required).
    pub id: Vec<u8>,
    /// Transport hints such as `"hybrid"` or `"internal"` (member `"transports"`); `None` when
    /// absent, which is not the same as an empty list.
    pub transports: Option<Vec<String>>,
}

impl PublicKeyCredentialDescriptor {
    /// A descriptor for credential `id` with no transport hints.
    pub fn new(id: Vec<u8>) -> Self {
        Self {
            id,
            transports: None,
        }
    }

    /// The CBOR map `{"id": .., "type": "public-key", "transports": [..]}`.
    pub fn to_value(&self) -> Value {
        MapWriter::new()
            .member("id", self.id.as_slice())
            .member("type", PUBLIC_KEY_TYPE)
            .member_opt("transports", self.transports.as_deref().map(text_array))
            .build()
    }

    /// Reads a single descriptor, which must be of type `"public-key"`.
    ///
    /// # Errors
    ///
    /// [`CtapError::NotAMap`], [`CtapError::MissingMember`] for `type` or `id`,
    /// [`CtapError::WrongMemberType`], or [`CtapError::UnknownCredentialType`].
    pub fn from_value(value: &Value) -> Result<Self, CtapError> {
        let fields = Fields::new(DESCRIPTOR, value)?;
        let kind: String = fields.required_member("type", as_text)?;
        if kind != PUBLIC_KEY_TYPE {
            return Err(CtapError::UnknownCredentialType {
                message: DESCRIPTOR,
                found: kind,
            });
        }
        Self::members(fields)
    }

    /// Reads one entry of a credential list: `None` for a well-formed entry of another type,
    /// which WebAuthn says to ignore.
    pub(super) fn from_list_entry(value: &Value) -> Result<Option<Self>, CtapError> {
        let fields = Fields::new(DESCRIPTOR, value)?;
        if fields.required_member("type", as_text)? != PUBLIC_KEY_TYPE {
            return Ok(None);
        }
        Self::members(fields).map(Some)
    }

    fn members(fields: Fields<'_>) -> Result<Self, CtapError> {
        let transports = fields.member("transports", |v| match v {
            Value::Array(items) => items.iter().map(as_text).collect::<Option<Vec<_>>>(),
            _ => None,
        })?;
        Ok(Self {
            id: fields.required_member("id", as_bytes)?,
            transports,
        })
    }
}

/// A requested credential algorithm (`PublicKeyCredentialParameters`) of type `"public-key"`:
/// entries of makeCredential's pubKeyCredParams and getInfo's algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublicKeyCredentialParameters {
    /// The COSE algorithm identifier (member `"alg"`), e.g. -7 for ES256.
    pub alg: i64,
}

impl PublicKeyCredentialParameters {
    /// ES256 (ECDSA P-256 with SHA-256), COSE algorithm -7.
    pub const ES256: Self = Self { alg: -7 };

    /// The CBOR map `{"alg": .., "type": "public-key"}`.
    pub fn to_value(&self) -> Value {
        MapWriter::new()
            .member("alg", self.alg)
            .member("type", PUBLIC_KEY_TYPE)
            .build()
    }

    /// Reads a single parameters map, which must be of type `"public-key"`.
    ///
    /// # Errors
    ///
    /// [`CtapError::NotAMap`], [`CtapError::MissingMember`] for `type` or `alg`,
    /// [`CtapError::WrongMemberType`] (also for an `alg` outside the `i64` range), or
    /// [`CtapError::UnknownCredentialType`].
    pub fn from_value(value: &Value) -> Result<Self, CtapError> {
        match Self::from_list_entry(value)? {
            Some(parameters) => Ok(parameters),
            None => {
                let fields = Fields::new(PARAMETERS, value)?;
                Err(CtapError::UnknownCredentialType {
                    message: PARAMETERS,
                    found: fields.required_member("type", as_text)?,
                })
            }
        }
    }

    /// Reads one entry of a parameters list: `None` for a well-formed entry of another type.
    pub(super) fn from_list_entry(value: &Value) -> Result<Option<Self>, CtapError> {
        let fields = Fields::new(PARAMETERS, value)?;
        if fields.required_member("type", as_text)? != PUBLIC_KEY_TYPE {
            return Ok(None);
        }
        let alg = fields.required_member("alg", |v| match v {
            Value::Integer(i) => i64::try_from(*i).ok(),
            _ => None,
        })?;
        Ok(Some(Self { alg }))
    }
}

/// A per-credential large-blob key (makeCredential response 0x05, getAssertion response 0x07).
///
/// Whoever holds it can read the credential's large blob, so it is zeroized on drop, compared in
/// constant time and printed as `[redacted]`.
#[derive(Clone)]
pub struct LargeBlobKey(Zeroizing<Vec<u8>>);

impl LargeBlobKey {
    /// Wraps the key bytes (32 bytes from a conforming authenticator; not checked).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl PartialEq for LargeBlobKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for LargeBlobKey {}

impl fmt::Debug for LargeBlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LargeBlobKey([redacted])")
    }
}
