//! authenticatorGetAssertion (0x02): request parameters and response (CTAP 2.2 §6.2).
//!
//! This is the command of a hybrid sign-in (URL hint `"ga"`, hybrid-protocol §2.1).

use super::fields::{Field, Fields, MapWriter, as_bool, as_bytes, as_map_value, as_text, as_uint};
use super::{
    CtapError, LargeBlobKey, PublicKeyCredentialDescriptor, PublicKeyCredentialUserEntity,
    decode_value,
};
use crate::cbor::{self, Value};

const REQUEST: &str = "getAssertion request";
const OPTIONS: &str = "getAssertion options";
const RESPONSE: &str = "getAssertion response";

const RP_ID: Field = Field::new(0x01, "rpId");
const CLIENT_DATA_HASH: Field = Field::new(0x02, "clientDataHash");
const ALLOW_LIST: Field = Field::new(0x03, "allowList");
const EXTENSIONS: Field = Field::new(0x04, "extensions");
const OPTIONS_FIELD: Field = Field::new(0x05, "options");
const PIN_UV_AUTH_PARAM: Field = Field::new(0x06, "pinUvAuthParam");
const PIN_UV_AUTH_PROTOCOL: Field = Field::new(0x07, "pinUvAuthProtocol");

const CREDENTIAL: Field = Field::new(0x01, "credential");
const AUTH_DATA: Field = Field::new(0x02, "authData");
const SIGNATURE: Field = Field::new(0x03, "signature");
const USER: Field = Field::new(0x04, "user");
const NUMBER_OF_CREDENTIALS: Field = Field::new(0x05, "numberOfCredentials");
const USER_SELECTED: Field = Field::new(0x06, "userSelected");
const LARGE_BLOB_KEY: Field = Field::new(0x07, "largeBlobKey");

/// getAssertion's options map (field 0x05): each option absent unless set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetAssertionOptions {
    /// `"up"`: require user presence (the authenticator's default is true).
    pub up: Option<bool>,
    /// `"uv"`: require built-in user verification.
    pub uv: Option<bool>,
}

impl GetAssertionOptions {
    fn is_empty(self) -> bool {
        self == Self::default()
    }

    fn to_value(self) -> Value {
        MapWriter::new()
            .member_opt("up", self.up)
            .member_opt("uv", self.uv)
            .build()
    }

    fn from_value(value: &Value) -> Result<Self, CtapError> {
        let fields = Fields::new(OPTIONS, value)?;
        Ok(Self {
            up: fields.member("up", as_bool)?,
            uv: fields.member("uv", as_bool)?,
        })
    }
}

/// authenticatorGetAssertion parameters (CTAP 2.2 §6.2).
#[derive(Clone, Debug, PartialEq)]
pub struct GetAssertionRequest {
    /// 0x01 rpId (required).
    pub rp_id: String,
    /// 0x02 clientDataHash: SHA-256 of the client data (required).
    pub client_data_hash: [u8; 32],
    /// 0x03 allowList; empty means absent (a discoverable-credential request).
    pub allow_list: Vec<PublicKeyCredentialDescriptor>,
    /// 0x04 extensions, kept as the CBOR map it is (extension identifier → input).
    pub extensions: Option<Value>,
    /// 0x05 options; written only if an option is set.
    pub options: GetAssertionOptions,
    /// 0x06 pinUvAuthParam.
    pub pin_uv_auth_param: Option<Vec<u8>>,
    /// 0x07 pinUvAuthProtocol.
    pub pin_uv_auth_protocol: Option<u64>,
}

impl GetAssertionRequest {
    /// A request with only the required fields.
    pub fn new(rp_id: impl Into<String>, client_data_hash: [u8; 32]) -> Self {
        Self {
            rp_id: rp_id.into(),
            client_data_hash,
            allow_list: Vec::new(),
            extensions: None,
            options: GetAssertionOptions::default(),
            pin_uv_auth_param: None,
            pin_uv_auth_protocol: None,
        }
    }

    /// The parameters as a CBOR map.
    pub fn to_value(&self) -> Value {
        let mut map = MapWriter::new();
        map.put(RP_ID, self.rp_id.as_str())
            .put(CLIENT_DATA_HASH, self.client_data_hash.as_slice());
        if !self.allow_list.is_empty() {
            let list = self.allow_list.iter().map(|d| d.to_value()).collect();
            map.put(ALLOW_LIST, Value::Array(list));
        }
        map.put_opt(EXTENSIONS, self.extensions.clone());
        if !self.options.is_empty() {
            map.put(OPTIONS_FIELD, self.options.to_value());
        }
        map.put_opt(PIN_UV_AUTH_PARAM, self.pin_uv_auth_param.as_deref())
            .put_opt(PIN_UV_AUTH_PROTOCOL, self.pin_uv_auth_protocol);
        map.build()
    }

    /// The parameters as canonical CBOR (without the command byte).
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::encode(&self.to_value())
    }

    /// Reads the parameters map.
    ///
    /// # Errors
    ///
    /// The first failed check as a [`CtapError`].
    pub fn from_value(value: &Value) -> Result<Self, CtapError> {
        let fields = Fields::new(REQUEST, value)?;
        Ok(Self {
            rp_id: fields.required(RP_ID, as_text)?,
            client_data_hash: fields.required_array(CLIENT_DATA_HASH)?,
            allow_list: fields
                .list(ALLOW_LIST, PublicKeyCredentialDescriptor::from_list_entry)?
                .unwrap_or_default(),
            extensions: fields.optional(EXTENSIONS, as_map_value)?,
            options: fields
                .optional_with(OPTIONS_FIELD, GetAssertionOptions::from_value)?
                .unwrap_or_default(),
            pin_uv_auth_param: fields.optional(PIN_UV_AUTH_PARAM, as_bytes)?,
            pin_uv_auth_protocol: fields.optional(PIN_UV_AUTH_PROTOCOL, as_uint)?,
        })
    }

    /// Decodes the parameters from CBOR (without the command byte), leniently.
    ///
    /// # Errors
    ///
    /// [`CtapError::Cbor`] for bad CBOR, otherwise as [`GetAssertionRequest::from_value`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CtapError> {
        Self::from_value(&decode_value(bytes)?)
    }
}

/// authenticatorGetAssertion response body (CTAP 2.2 §6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetAssertionResponse {
    /// 0x01 credential; may be omitted when the allowList had exactly one entry.
    pub credential: Option<PublicKeyCredentialDescriptor>,
    /// 0x02 authData (required).
    pub auth_data: Vec<u8>,
    /// 0x03 signature (required).
    pub signature: Vec<u8>,
    /// 0x04 user: the account of a discoverable credential.
    pub user: Option<PublicKeyCredentialUserEntity>,
    /// 0x05 numberOfCredentials.
    pub number_of_credentials: Option<u64>,
    /// 0x06 userSelected.
    pub user_selected: Option<bool>,
    /// 0x07 largeBlobKey.
    pub large_blob_key: Option<LargeBlobKey>,
}

impl GetAssertionResponse {
    /// The response as a CBOR map.
    pub fn to_value(&self) -> Value {
        MapWriter::new()
            .put_opt(CREDENTIAL, self.credential.as_ref().map(|c| c.to_value()))
            .put(AUTH_DATA, self.auth_data.as_slice())
            .put(SIGNATURE, self.signature.as_slice())
            .put_opt(USER, self.user.as_ref().map(|u| u.to_value()))
            .put_opt(NUMBER_OF_CREDENTIALS, self.number_of_credentials)
            .put_opt(USER_SELECTED, self.user_selected)
            .put_opt(
                LARGE_BLOB_KEY,
                self.large_blob_key.as_ref().map(|k| k.as_bytes()),
            )
            .build()
    }

    /// The response as canonical CBOR (without the status byte).
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
            credential: fields
                .optional_with(CREDENTIAL, PublicKeyCredentialDescriptor::from_value)?,
            auth_data: fields.required(AUTH_DATA, as_bytes)?,
            signature: fields.required(SIGNATURE, as_bytes)?,
            user: fields.optional_with(USER, PublicKeyCredentialUserEntity::from_value)?,
            number_of_credentials: fields.optional(NUMBER_OF_CREDENTIALS, as_uint)?,
            user_selected: fields.optional(USER_SELECTED, as_bool)?,
            large_blob_key: fields
                .optional(LARGE_BLOB_KEY, as_bytes)?
                .map(LargeBlobKey::new),
        })
    }

    /// Decodes the response from CBOR (without the status byte), leniently.
    ///
    /// # Errors
    ///
    /// [`CtapError::Cbor`] for bad CBOR, otherwise as [`GetAssertionResponse::from_value`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CtapError> {
        Self::from_value(&decode_value(bytes)?)
    }
}
