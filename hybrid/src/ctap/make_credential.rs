//! authenticatorMakeCredential (0x01): request parameters and response (CTAP 2.2 §6.1).
//!
//! This is the command of a hybrid registration (URL hint `"mc"`, hybrid-protocol §2.1).

use super::fields::{Field, Fields, MapWriter, as_bool, as_bytes, as_map_value, as_text, as_uint};
use super::{
    CtapError, LargeBlobKey, PublicKeyCredentialDescriptor, PublicKeyCredentialParameters,
    PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity, decode_value,
};
use crate::cbor::{self, Value};

const REQUEST: &str = "makeCredential request";
const OPTIONS: &str = "makeCredential options";
const RESPONSE: &str = "makeCredential response";

const CLIENT_DATA_HASH: Field = Field::new(0x01, "clientDataHash");
const RP: Field = Field::new(0x02, "rp");
const USER: Field = Field::new(0x03, "user");
const PUB_KEY_CRED_PARAMS: Field = Field::new(0x04, "pubKeyCredParams");
const EXCLUDE_LIST: Field = Field::new(0x05, "excludeList");
const EXTENSIONS: Field = Field::new(0x06, "extensions");
const OPTIONS_FIELD: Field = Field::new(0x07, "options");
const PIN_UV_AUTH_PARAM: Field = Field::new(0x08, "pinUvAuthParam");
const PIN_UV_AUTH_PROTOCOL: Field = Field::new(0x09, "pinUvAuthProtocol");
const ENTERPRISE_ATTESTATION: Field = Field::new(0x0a, "enterpriseAttestation");

const FMT: Field = Field::new(0x01, "fmt");
const AUTH_DATA: Field = Field::new(0x02, "authData");
const ATT_STMT: Field = Field::new(0x03, "attStmt");
const EP_ATT: Field = Field::new(0x04, "epAtt");
const LARGE_BLOB_KEY: Field = Field::new(0x05, "largeBlobKey");

/// makeCredential's options map (field 0x07): each option absent unless set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MakeCredentialOptions {
    /// `"rk"`: create a discoverable (resident) credential.
    pub rk: Option<bool>,
    /// `"up"`: user presence (CTAP 2.1+ authenticators reject `false` here).
    pub up: Option<bool>,
    /// `"uv"`: require built-in user verification.
    pub uv: Option<bool>,
}

impl MakeCredentialOptions {
    fn is_empty(self) -> bool {
        self == Self::default()
    }

    fn to_value(self) -> Value {
        MapWriter::new()
            .member_opt("rk", self.rk)
            .member_opt("up", self.up)
            .member_opt("uv", self.uv)
            .build()
    }

    fn from_value(value: &Value) -> Result<Self, CtapError> {
        let fields = Fields::new(OPTIONS, value)?;
        Ok(Self {
            rk: fields.member("rk", as_bool)?,
            up: fields.member("up", as_bool)?,
            uv: fields.member("uv", as_bool)?,
        })
    }
}

/// authenticatorMakeCredential parameters (CTAP 2.2 §6.1).
#[derive(Clone, Debug, PartialEq)]
pub struct MakeCredentialRequest {
    /// 0x01 clientDataHash: SHA-256 of the client data (required).
    pub client_data_hash: [u8; 32],
    /// 0x02 rp (required).
    pub rp: PublicKeyCredentialRpEntity,
    /// 0x03 user (required).
    pub user: PublicKeyCredentialUserEntity,
    /// 0x04 pubKeyCredParams, most preferred first (required; always written, even empty).
    /// Entries of a type other than `"public-key"` are dropped on decode.
    pub pub_key_cred_params: Vec<PublicKeyCredentialParameters>,
    /// 0x05 excludeList; empty means absent.
    pub exclude_list: Vec<PublicKeyCredentialDescriptor>,
    /// 0x06 extensions, kept as the CBOR map it is (extension identifier → input).
    pub extensions: Option<Value>,
    /// 0x07 options; written only if an option is set.
    pub options: MakeCredentialOptions,
    /// 0x08 pinUvAuthParam.
    pub pin_uv_auth_param: Option<Vec<u8>>,
    /// 0x09 pinUvAuthProtocol.
    pub pin_uv_auth_protocol: Option<u64>,
    /// 0x0A enterpriseAttestation.
    pub enterprise_attestation: Option<u64>,
}

impl MakeCredentialRequest {
    /// A request with only the required fields.
    pub fn new(
        client_data_hash: [u8; 32],
        rp: PublicKeyCredentialRpEntity,
        user: PublicKeyCredentialUserEntity,
        pub_key_cred_params: Vec<PublicKeyCredentialParameters>,
    ) -> Self {
        Self {
            client_data_hash,
            rp,
            user,
            pub_key_cred_params,
            exclude_list: Vec::new(),
            extensions: None,
            options: MakeCredentialOptions::default(),
            pin_uv_auth_param: None,
            pin_uv_auth_protocol: None,
            enterprise_attestation: None,
        }
    }

    /// The parameters as a CBOR map.
    pub fn to_value(&self) -> Value {
        let mut map = MapWriter::new();
        let params = self
            .pub_key_cred_params
            .iter()
            .map(|p| p.to_value())
            .collect();
        map.put(CLIENT_DATA_HASH, self.client_data_hash.as_slice())
            .put(RP, self.rp.to_value())
            .put(USER, self.user.to_value())
            .put(PUB_KEY_CRED_PARAMS, Value::Array(params));
        if !self.exclude_list.is_empty() {
            let list = self.exclude_list.iter().map(|d| d.to_value()).collect();
            map.put(EXCLUDE_LIST, Value::Array(list));
        }
        map.put_opt(EXTENSIONS, self.extensions.clone());
        if !self.options.is_empty() {
            map.put(OPTIONS_FIELD, self.options.to_value());
        }
        map.put_opt(PIN_UV_AUTH_PARAM, self.pin_uv_auth_param.as_deref())
            .put_opt(PIN_UV_AUTH_PROTOCOL, self.pin_uv_auth_protocol)
            .put_opt(ENTERPRISE_ATTESTATION, self.enterprise_attestation);
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
            client_data_hash: fields.required_array(CLIENT_DATA_HASH)?,
            rp: fields.required_with(RP, PublicKeyCredentialRpEntity::from_value)?,
            user: fields.required_with(USER, PublicKeyCredentialUserEntity::from_value)?,
            pub_key_cred_params: fields
                .list(
                    PUB_KEY_CRED_PARAMS,
                    PublicKeyCredentialParameters::from_list_entry,
                )?
                .ok_or_else(|| fields.missing(PUB_KEY_CRED_PARAMS))?,
            exclude_list: fields
                .list(EXCLUDE_LIST, PublicKeyCredentialDescriptor::from_list_entry)?
                .unwrap_or_default(),
            extensions: fields.optional(EXTENSIONS, as_map_value)?,
            options: fields
                .optional_with(OPTIONS_FIELD, MakeCredentialOptions::from_value)?
                .unwrap_or_default(),
            pin_uv_auth_param: fields.optional(PIN_UV_AUTH_PARAM, as_bytes)?,
            pin_uv_auth_protocol: fields.optional(PIN_UV_AUTH_PROTOCOL, as_uint)?,
            enterprise_attestation: fields.optional(ENTERPRISE_ATTESTATION, as_uint)?,
        })
    }

    /// Decodes the parameters from CBOR (without the command byte), leniently.
    ///
    /// # Errors
    ///
    /// [`CtapError::Cbor`] for bad CBOR, otherwise as [`MakeCredentialRequest::from_value`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CtapError> {
        Self::from_value(&decode_value(bytes)?)
    }
}

/// authenticatorMakeCredential response body: the attestation object (CTAP 2.2 §6.1).
#[derive(Clone, Debug, PartialEq)]
pub struct MakeCredentialResponse {
    /// 0x01 fmt: the attestation statement format, e.g. `"none"` or `"packed"` (required).
    pub fmt: String,
    /// 0x02 authData (required).
    pub auth_data: Vec<u8>,
    /// 0x03 attStmt: the attestation statement, a CBOR map kept as is (required; `{}` for
    /// `"none"`).
    pub att_stmt: Value,
    /// 0x04 epAtt: whether enterprise attestation was returned.
    pub ep_att: Option<bool>,
    /// 0x05 largeBlobKey.
    pub large_blob_key: Option<LargeBlobKey>,
}

impl MakeCredentialResponse {
    /// The response as a CBOR map.
    pub fn to_value(&self) -> Value {
        MapWriter::new()
            .put(FMT, self.fmt.as_str())
            .put(AUTH_DATA, self.auth_data.as_slice())
            .put(ATT_STMT, self.att_stmt.clone())
            .put_opt(EP_ATT, self.ep_att)
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
    /// The first failed check as a [`CtapError`]; `attStmt` must be a map.
    pub fn from_value(value: &Value) -> Result<Self, CtapError> {
        let fields = Fields::new(RESPONSE, value)?;
        Ok(Self {
            fmt: fields.required(FMT, as_text)?,
            auth_data: fields.required(AUTH_DATA, as_bytes)?,
            att_stmt: fields.required(ATT_STMT, as_map_value)?,
            ep_att: fields.optional(EP_ATT, as_bool)?,
            large_blob_key: fields
                .optional(LARGE_BLOB_KEY, as_bytes)?
                .map(LargeBlobKey::new),
        })
    }

    /// Decodes the response from CBOR (without the status byte), leniently.
    ///
    /// # Errors
    ///
    /// [`CtapError::Cbor`] for bad CBOR, otherwise as [`MakeCredentialResponse::from_value`].
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, CtapError> {
        Self::from_value(&decode_value(bytes)?)
    }
}
