//! The WebAuthn Level 3 JSON layer: what a relying party hands the device and what it gets back.
//!
//! A relying party gives the agent `PublicKeyCredentialRequestOptionsJSON` (sign-in) or
//! `PublicKeyCredentialCreationOptionsJSON` (registration) and the origin the user signs in to.
//! This module does what a browser does with them (WebAuthn Level 3 §5.1.3, §5.1.4):
//!
//! 1. [`RequestOptions::from_json`] / [`CreationOptions::from_json`] parse the options
//!    (base64url binary fields; unknown members, `hints` and `extensions` are ignored; a
//!    `{"publicKey": …}` wrapper is accepted).
//! 2. [`Origin::parse`] accepts an `https` origin, or `http://localhost`; the RP id (the
//!    options' `rpId` / `rp.id`, or the origin's host) must equal the origin's host or be a
//!    dot-separated suffix of it. There is no Public Suffix List here, so a suffix that is a
//!    public suffix with a dot in it (`co.uk`) is not caught; a single-label RP id other than
//!    `localhost` is refused. IP-address origins are refused.
//! 3. [`SignInCeremony`] / [`RegistrationCeremony`] build `clientDataJSON` exactly as browsers
//!    serialize it (§5.8.1.1): `{"type":"webauthn.get","challenge":"<b64url>","origin":"<origin>",
//!    "crossOrigin":false}` in that order, and map the options to the CTAP2 getAssertion /
//!    makeCredential request ([`hybrid::ctap`]) with `clientDataHash` = SHA-256 of those bytes.
//!    `uv` is requested when `userVerification` is `required` or `preferred`; `rk` when
//!    `residentKey` is `required` or `preferred` (or the legacy `requireResidentKey` is true).
//!    Extensions are not forwarded and `clientExtensionResults` is `{}`.
//! 4. Their `response` methods check the authenticator's answer (RP id hash, credential id,
//!    attested credential data, algorithm) and build `AuthenticationResponseJSON` /
//!    `RegistrationResponseJSON` (§5.1.8, base64url fields, `authenticatorAttachment`
//!    `"cross-platform"`). The registration's `attestationObject` is the CBOR map
//!    `{"fmt", "attStmt", "authData"}` in CTAP2 canonical order; when the RP asked for no
//!    attestation (`"none"`, the default), a phone's attestation is replaced by `"none"` with an
//!    empty statement, as browsers do. `publicKey` is the credential key as DER
//!    SubjectPublicKeyInfo for ES256, EdDSA and RS256 (and absent otherwise).

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::URL_SAFE_NO_PAD};
use hybrid::cbor::{self, Value};
use hybrid::ctap::{
    GetAssertionOptions, GetAssertionRequest, GetAssertionResponse, MakeCredentialOptions,
    MakeCredentialRequest, MakeCredentialResponse, PUBLIC_KEY_TYPE, PublicKeyCredentialDescriptor,
    PublicKeyCredentialParameters, PublicKeyCredentialRpEntity, PublicKeyCredentialUserEntity,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Longest challenge accepted, bytes.
pub const MAX_CHALLENGE_LEN: usize = 1024;
/// Longest user handle (WebAuthn: at most 64 bytes).
pub const MAX_USER_ID_LEN: usize = 64;
/// Longest credential id accepted, bytes (CTAP: at most 1023).
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;
/// Longest options JSON accepted, bytes.
pub const MAX_OPTIONS_LEN: usize = 64 * 1024;
/// The transports a hybrid credential reports in `RegistrationResponseJSON`.
pub const HYBRID_TRANSPORTS: [&str; 2] = ["hybrid", "internal"];
/// COSE algorithm ES256.
pub const COSE_ES256: i64 = -7;
/// COSE algorithm EdDSA.
pub const COSE_EDDSA: i64 = -8;
/// COSE algorithm RS256.
pub const COSE_RS256: i64 = -257;

/// base64url that accepts input with or without padding (options from some RPs carry `=`).
const B64URL_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What went wrong, by fault: the options, the origin, or the authenticator's answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebAuthnError {
    /// The options are not a JSON object of the expected shape.
    #[error("WebAuthn options are not valid JSON: {0}")]
    Json(String),
    /// A member of the options is missing or invalid (named by its JSON path).
    #[error("WebAuthn options: invalid or missing {0}")]
    InvalidOptions(&'static str),
    /// The origin is not a usable web origin.
    #[error("origin {origin:?} is not usable: {reason}")]
    InvalidOrigin {
        /// The origin as given.
        origin: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The RP id is not the origin's host or a registrable suffix of it.
    #[error("origin {origin} may not use RP id {rp_id:?}")]
    OriginMismatch {
        /// The origin.
        origin: String,
        /// The RP id.
        rp_id: String,
    },
    /// The options ask for something a hybrid (phone) authenticator cannot do.
    #[error("not supported over hybrid transport: {0}")]
    Unsupported(&'static str),
    /// The authenticator's answer does not fit the request.
    #[error("authenticator response invalid: {0}")]
    InvalidResponse(&'static str),
}

fn invalid(field: &'static str) -> impl FnOnce() -> WebAuthnError {
    move || WebAuthnError::InvalidOptions(field)
}

/// A web origin, serialized as browsers put it into `clientDataJSON` (scheme, lower-case
/// ASCII host, port only when not the default). Valid by construction: `https`, or `http` on
/// `localhost`; a domain host.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    serialized: String,
    host: String,
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Origin").field(&self.serialized).finish()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialized)
    }
}

impl Origin {
    /// Parses an origin such as `https://example.com` or `http://localhost:8080`. A single
    /// trailing `/` is tolerated; a path, query, fragment or credentials are not.
    ///
    /// # Errors
    ///
    /// [`WebAuthnError::InvalidOrigin`].
    pub fn parse(text: &str) -> Result<Self, WebAuthnError> {
        let fail = |reason| WebAuthnError::InvalidOrigin {
            origin: text.to_owned(),
            reason,
        };
        let url = url::Url::parse(text).map_err(|_| fail("not a URL"))?;
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(_) => return Err(fail("an IP address cannot be a WebAuthn origin")),
            None => return Err(fail("no host")),
        };
        let localhost = host == "localhost" || host.ends_with(".localhost");
        match url.scheme() {
            "https" => {}
            "http" if localhost => {}
            "http" => return Err(fail("http is allowed only for localhost")),
            _ => return Err(fail("the scheme must be https")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(fail("credentials in the origin"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(fail("an origin has no path, query or fragment"));
        }
        if host.ends_with('.') {
            return Err(fail("trailing dot in the host"));
        }
        Ok(Self {
            serialized: url.origin().ascii_serialization(),
            host,
        })
    }

    /// The serialization, e.g. `https://example.com`.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// The host (the origin's effective domain), lower-case ASCII.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Checks that `rp_id` may be used from this origin and returns it normalized
    /// (lower-case).
    ///
    /// # Errors
    ///
    /// [`WebAuthnError::InvalidOptions`] for an RP id that is not a domain name,
    /// [`WebAuthnError::OriginMismatch`] when it is neither the host nor a suffix of it.
    pub fn check_rp_id(&self, rp_id: &str) -> Result<String, WebAuthnError> {
        let rp_id = rp_id.to_ascii_lowercase();
        if !is_domain_name(&rp_id) {
            return Err(WebAuthnError::InvalidOptions("rpId"));
        }
        let mismatch = || WebAuthnError::OriginMismatch {
            origin: self.serialized.clone(),
            rp_id: rp_id.clone(),
        };
        // Without the Public Suffix List, refuse at least the single-label suffixes ("com").
        if !rp_id.contains('.') && rp_id != "localhost" && rp_id != self.host {
            return Err(mismatch());
        }
        let suffix_of_host = self
            .host
            .strip_suffix(rp_id.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
        if !suffix_of_host {
            return Err(mismatch());
        }
        Ok(rp_id)
    }
}

fn is_domain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `userVerification` (§5.8.6). Unknown values mean the default, `preferred`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UserVerification {
    /// `"required"`.
    Required,
    /// `"preferred"` (the default).
    #[default]
    Preferred,
    /// `"discouraged"`.
    Discouraged,
}

impl UserVerification {
    fn parse(value: Option<&str>) -> Self {
        match value {
            Some("required") => Self::Required,
            Some("discouraged") => Self::Discouraged,
            _ => Self::Preferred,
        }
    }

    fn wants_uv(self) -> bool {
        matches!(self, Self::Required | Self::Preferred)
    }
}

/// `residentKey` (§5.4.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResidentKey {
    /// `"required"`.
    Required,
    /// `"preferred"`.
    Preferred,
    /// `"discouraged"` (the default when neither `residentKey` nor `requireResidentKey` says
    /// otherwise).
    #[default]
    Discouraged,
}

/// `attestation` conveyance (§5.4.7). Unknown values mean the default, `none`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttestationConveyance {
    /// `"none"` (the default).
    #[default]
    None,
    /// `"indirect"`.
    Indirect,
    /// `"direct"`.
    Direct,
    /// `"enterprise"`.
    Enterprise,
}

/// A `PublicKeyCredentialDescriptorJSON` of type `public-key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialDescriptor {
    /// The credential id.
    pub id: Vec<u8>,
    /// Transport hints, as given.
    pub transports: Option<Vec<String>>,
}

impl CredentialDescriptor {
    fn to_ctap(&self) -> PublicKeyCredentialDescriptor {
        PublicKeyCredentialDescriptor {
            id: self.id.clone(),
            transports: self.transports.clone(),
        }
    }
}

/// Parsed `PublicKeyCredentialRequestOptionsJSON` (§5.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOptions {
    /// The challenge.
    pub challenge: Vec<u8>,
    /// `timeout`, milliseconds.
    pub timeout_ms: Option<u32>,
    /// `rpId`; `None` means the origin's host.
    pub rp_id: Option<String>,
    /// `allowCredentials` (entries of other types dropped); empty for a discoverable sign-in.
    pub allow_credentials: Vec<CredentialDescriptor>,
    /// `userVerification`.
    pub user_verification: UserVerification,
}

/// Parsed `PublicKeyCredentialCreationOptionsJSON` (§5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreationOptions {
    /// `rp.id`; `None` means the origin's host.
    pub rp_id: Option<String>,
    /// `rp.name`.
    pub rp_name: Option<String>,
    /// `user.id`, the user handle (1 to 64 bytes).
    pub user_id: Vec<u8>,
    /// `user.name`.
    pub user_name: String,
    /// `user.displayName`.
    pub user_display_name: Option<String>,
    /// The challenge.
    pub challenge: Vec<u8>,
    /// `pubKeyCredParams` algorithms, most preferred first (entries of other types dropped;
    /// ES256 and RS256 when the list was empty).
    pub algorithms: Vec<i64>,
    /// `timeout`, milliseconds.
    pub timeout_ms: Option<u32>,
    /// `excludeCredentials`.
    pub exclude_credentials: Vec<CredentialDescriptor>,
    /// `authenticatorSelection.residentKey` (or `requireResidentKey`).
    pub resident_key: ResidentKey,
    /// `authenticatorSelection.userVerification`.
    pub user_verification: UserVerification,
    /// `attestation`.
    pub attestation: AttestationConveyance,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(default)]
    transports: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    timeout: Option<serde_json::Number>,
    #[serde(default)]
    rp_id: Option<String>,
    #[serde(default)]
    allow_credentials: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    user_verification: Option<String>,
}

#[derive(Deserialize)]
struct RawRp {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawUser {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawParam {
    #[serde(rename = "type")]
    kind: String,
    alg: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSelection {
    #[serde(default)]
    authenticator_attachment: Option<String>,
    #[serde(default)]
    resident_key: Option<String>,
    #[serde(default)]
    require_resident_key: Option<bool>,
    #[serde(default)]
    user_verification: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCreation {
    #[serde(default)]
    rp: Option<RawRp>,
    #[serde(default)]
    user: Option<RawUser>,
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    pub_key_cred_params: Option<Vec<RawParam>>,
    #[serde(default)]
    timeout: Option<serde_json::Number>,
    #[serde(default)]
    exclude_credentials: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    authenticator_selection: Option<RawSelection>,
    #[serde(default)]
    attestation: Option<String>,
}

/// Parses `json`, unwrapping a `{"publicKey": {...}}` (`CredentialRequestOptions`) wrapper.
fn parse_json<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, WebAuthnError> {
    if json.len() > MAX_OPTIONS_LEN {
        return Err(WebAuthnError::Json(format!(
            "longer than {MAX_OPTIONS_LEN} bytes"
        )));
    }
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| WebAuthnError::Json(e.to_string()))?;
    let value = match value {
        serde_json::Value::Object(mut map) if map.contains_key("publicKey") => {
            map.remove("publicKey").unwrap_or(serde_json::Value::Null)
        }
        other => other,
    };
    if !value.is_object() {
        return Err(WebAuthnError::Json("not a JSON object".into()));
    }
    T::deserialize(value).map_err(|e| WebAuthnError::Json(e.to_string()))
}

fn decode_b64(text: &str, field: &'static str) -> Result<Vec<u8>, WebAuthnError> {
    B64URL_LENIENT.decode(text).map_err(|_| invalid(field)())
}

fn decode_challenge(text: Option<&str>) -> Result<Vec<u8>, WebAuthnError> {
    let text = text.ok_or(WebAuthnError::InvalidOptions("challenge"))?;
    let challenge = decode_b64(text, "challenge")?;
    if challenge.is_empty() || challenge.len() > MAX_CHALLENGE_LEN {
        return Err(WebAuthnError::InvalidOptions("challenge"));
    }
    Ok(challenge)
}

fn timeout_ms(value: Option<serde_json::Number>) -> Option<u32> {
    let n = value?;
    let ms = n
        .as_u64()
        .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))?;
    Some(u32::try_from(ms).unwrap_or(u32::MAX))
}

fn descriptors(
    raw: Option<Vec<RawDescriptor>>,
    field: &'static str,
) -> Result<Vec<CredentialDescriptor>, WebAuthnError> {
    let mut out = Vec::new();
    for d in raw.unwrap_or_default() {
        if d.kind != PUBLIC_KEY_TYPE {
            continue;
        }
        let id = decode_b64(&d.id, field)?;
        if id.is_empty() || id.len() > MAX_CREDENTIAL_ID_LEN {
            return Err(WebAuthnError::InvalidOptions(field));
        }
        out.push(CredentialDescriptor {
            id,
            transports: d.transports,
        });
    }
    Ok(out)
}

impl RequestOptions {
    /// Parses `PublicKeyCredentialRequestOptionsJSON`.
    ///
    /// # Errors
    ///
    /// [`WebAuthnError::Json`] or [`WebAuthnError::InvalidOptions`].
    pub fn from_json(json: &str) -> Result<Self, WebAuthnError> {
        let raw: RawRequest = parse_json(json)?;
        Ok(Self {
            challenge: decode_challenge(raw.challenge.as_deref())?,
            timeout_ms: timeout_ms(raw.timeout),
            rp_id: raw.rp_id,
            allow_credentials: descriptors(raw.allow_credentials, "allowCredentials[].id")?,
            user_verification: UserVerification::parse(raw.user_verification.as_deref()),
        })
    }
}

impl CreationOptions {
    /// Parses `PublicKeyCredentialCreationOptionsJSON`.
    ///
    /// # Errors
    ///
    /// [`WebAuthnError::Json`], [`WebAuthnError::InvalidOptions`], or
    /// [`WebAuthnError::Unsupported`] when only platform authenticators or no algorithm we
    /// know of are acceptable.
    pub fn from_json(json: &str) -> Result<Self, WebAuthnError> {
        let raw: RawCreation = parse_json(json)?;
        let rp = raw.rp.ok_or(WebAuthnError::InvalidOptions("rp"))?;
        let user = raw.user.ok_or(WebAuthnError::InvalidOptions("user"))?;
        let user_id = decode_b64(
            user.id
                .as_deref()
                .ok_or(WebAuthnError::InvalidOptions("user.id"))?,
            "user.id",
        )?;
        let user_name = user
            .name
            .ok_or(WebAuthnError::InvalidOptions("user.name"))?;
        if user_id.is_empty() || user_id.len() > MAX_USER_ID_LEN {
            return Err(WebAuthnError::InvalidOptions("user.id"));
        }
        let algorithms = match raw.pub_key_cred_params {
            None => vec![COSE_ES256, COSE_RS256],
            Some(params) if params.is_empty() => vec![COSE_ES256, COSE_RS256],
            Some(params) => {
                let algs: Vec<i64> = params
                    .iter()
                    .filter(|p| p.kind == PUBLIC_KEY_TYPE)
                    .map(|p| p.alg)
                    .collect();
                if algs.is_empty() {
                    return Err(WebAuthnError::Unsupported(
                        "pubKeyCredParams has no public-key algorithm",
                    ));
                }
                algs
            }
        };
        let selection = raw.authenticator_selection;
        if selection
            .as_ref()
            .and_then(|s| s.authenticator_attachment.as_deref())
            == Some("platform")
        {
            return Err(WebAuthnError::Unsupported(
                "authenticatorAttachment \"platform\": a phone is a cross-platform authenticator",
            ));
        }
        let resident_key = match selection.as_ref().and_then(|s| s.resident_key.as_deref()) {
            Some("required") => ResidentKey::Required,
            Some("preferred") => ResidentKey::Preferred,
            Some("discouraged") => ResidentKey::Discouraged,
            // Absent or unknown: the legacy member decides.
            _ if selection
                .as_ref()
                .and_then(|s| s.require_resident_key)
                .unwrap_or(false) =>
            {
                ResidentKey::Required
            }
            _ => ResidentKey::Discouraged,
        };
        Ok(Self {
            rp_id: rp.id,
            rp_name: rp.name,
            user_id,
            user_name,
            user_display_name: user.display_name,
            challenge: decode_challenge(raw.challenge.as_deref())?,
            algorithms,
            timeout_ms: timeout_ms(raw.timeout),
            exclude_credentials: descriptors(raw.exclude_credentials, "excludeCredentials[].id")?,
            resident_key,
            user_verification: UserVerification::parse(
                selection
                    .as_ref()
                    .and_then(|s| s.user_verification.as_deref()),
            ),
            attestation: match raw.attestation.as_deref() {
                Some("indirect") => AttestationConveyance::Indirect,
                Some("direct") => AttestationConveyance::Direct,
                Some("enterprise") => AttestationConveyance::Enterprise,
                _ => AttestationConveyance::None,
            },
        })
    }
}

/// The ceremony a `clientDataJSON` belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CeremonyType {
    /// `"webauthn.get"`: sign-in.
    Get,
    /// `"webauthn.create"`: registration.
    Create,
}

impl CeremonyType {
    /// The `type` member.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "webauthn.get",
            Self::Create => "webauthn.create",
        }
    }
}

/// `clientDataJSON` as browsers serialize it (WebAuthn Level 3 §5.8.1.1, same-origin):
/// `{"type":…,"challenge":…,"origin":…,"crossOrigin":false}`, challenge in base64url without
/// padding.
pub fn client_data_json(kind: CeremonyType, challenge: &[u8], origin: &Origin) -> Vec<u8> {
    let mut out = String::with_capacity(96 + challenge.len() * 4 / 3 + origin.as_str().len());
    out.push_str("{\"type\":");
    push_json_string(&mut out, kind.as_str());
    out.push_str(",\"challenge\":");
    push_json_string(&mut out, &URL_SAFE_NO_PAD.encode(challenge));
    out.push_str(",\"origin\":");
    push_json_string(&mut out, origin.as_str());
    out.push_str(",\"crossOrigin\":false}");
    out.into_bytes()
}

/// Appends `text` as a JSON string, escaped as the CCDToString algorithm does: `"` and `\`
/// with a backslash, control characters as `\u00XX`.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A sign-in in progress: the getAssertion request to send, and how to read its answer.
#[derive(Clone, Debug)]
pub struct SignInCeremony {
    rp_id: String,
    origin: Origin,
    client_data_json: Vec<u8>,
    client_data_hash: [u8; 32],
    allow_credentials: Vec<CredentialDescriptor>,
    user_verification: UserVerification,
    timeout_ms: Option<u32>,
}

impl SignInCeremony {
    /// Starts a sign-in for `options` from `origin`.
    ///
    /// # Errors
    ///
    /// [`WebAuthnError::OriginMismatch`] or [`WebAuthnError::InvalidOptions`] (`rpId`).
    pub fn new(options: &RequestOptions, origin: &Origin) -> Result<Self, WebAuthnError> {
        let rp_id = origin.check_rp_id(options.rp_id.as_deref().unwrap_or(origin.host()))?;
        let client_data_json = client_data_json(CeremonyType::Get, &options.challenge, origin);
        let client_data_hash = Sha256::digest(&client_data_json).into();
        Ok(Self {
            rp_id,
            origin: origin.clone(),
            client_data_json,
            client_data_hash,
            allow_credentials: options.allow_credentials.clone(),
            user_verification: options.user_verification,
            timeout_ms: options.timeout_ms,
        })
    }

    /// The RP id (what `requestSignIn` carries).
    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// The origin.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The `clientDataJSON` bytes.
    pub fn client_data_json(&self) -> &[u8] {
        &self.client_data_json
    }

    /// SHA-256 of `clientDataJSON`.
    pub fn client_data_hash(&self) -> [u8; 32] {
        self.client_data_hash
    }

    /// The options' `timeout`, milliseconds.
    pub fn timeout_ms(&self) -> Option<u32> {
        self.timeout_ms
    }

    /// The CTAP2 getAssertion request.
    pub fn ctap_request(&self) -> GetAssertionRequest {
        let mut request = GetAssertionRequest::new(self.rp_id.clone(), self.client_data_hash);
        request.allow_list = self
            .allow_credentials
            .iter()
            .map(CredentialDescriptor::to_ctap)
            .collect();
        request.options = GetAssertionOptions {
            up: None,
            uv: self.user_verification.wants_uv().then_some(true),
        };
        request
    }

    /// Checks the authenticator's answer and builds `AuthenticationResponseJSON`.
    ///
    /// # Errors
    ///
    /// [`WebAuthnError::InvalidResponse`] when the authenticator data is malformed or for
    /// another RP, or the credential is missing or not one the RP allowed.
    pub fn response(
        &self,
        response: &GetAssertionResponse,
    ) -> Result<AuthenticationResponse, WebAuthnError> {
        let auth_data = AuthData::parse(&response.auth_data)?;
        check_rp_id_hash(&auth_data, &self.rp_id)?;
        let credential_id = match (&response.credential, self.allow_credentials.as_slice()) {
            (Some(credential), _) => credential.id.clone(),
            // CTAP: the authenticator may omit the credential when the allow list had one.
            (None, [only]) => only.id.clone(),
            (None, _) => return Err(WebAuthnError::InvalidResponse("no credential id")),
        };
        if credential_id.is_empty() {
            return Err(WebAuthnError::InvalidResponse("empty credential id"));
        }
        if !self.allow_credentials.is_empty()
            && !self.allow_credentials.iter().any(|c| c.id == credential_id)
        {
            return Err(WebAuthnError::InvalidResponse(
                "credential not in allowCredentials",
            ));
        }
        if response.signature.is_empty() {
            return Err(WebAuthnError::InvalidResponse("empty signature"));
        }
        let id = URL_SAFE_NO_PAD.encode(&credential_id);
        Ok(AuthenticationResponse {
            raw_id: id.clone(),
            id,
            response: AssertionJson {
                client_data_json: URL_SAFE_NO_PAD.encode(&self.client_data_json),
                authenticator_data: URL_SAFE_NO_PAD.encode(&response.auth_data),
                signature: URL_SAFE_NO_PAD.encode(&response.signature),
                user_handle: response
                    .user
                    .as_ref()
                    .filter(|u| !u.id.is_empty())
                    .map(|u| URL_SAFE_NO_PAD.encode(&u.id)),
            },
            authenticator_attachment: "cross-platform",
            client_extension_results: EmptyObject {},
            kind: PUBLIC_KEY_TYPE,
        })
    }
}

/// A registration in progress: the makeCredential request to send, and how to read its
/// answer.
#[derive(Clone, Debug)]
pub struct RegistrationCeremony {
    rp_id: String,
    origin: Origin,
    client_data_json: Vec<u8>,
    client_data_hash: [u8; 32],
    options: CreationOptions,
}

impl RegistrationCeremony {
    /// Starts a registration for `options` from `origin`.
    ///
    /// # Errors
    ///
    /// [`WebAuthnError::OriginMismatch`] or [`WebAuthnError::InvalidOptions`] (`rp.id`).
    pub fn new(options: &CreationOptions, origin: &Origin) -> Result<Self, WebAuthnError> {
        let rp_id = origin
            .check_rp_id(options.rp_id.as_deref().unwrap_or(origin.host()))
            .map_err(|e| match e {
                WebAuthnError::InvalidOptions(_) => WebAuthnError::InvalidOptions("rp.id"),
                e => e,
            })?;
        let client_data_json = client_data_json(CeremonyType::Create, &options.challenge, origin);
        let client_data_hash = Sha256::digest(&client_data_json).into();
        Ok(Self {
            rp_id,
            origin: origin.clone(),
            client_data_json,
            client_data_hash,
            options: options.clone(),
        })
    }

    /// The RP id (what `requestRegistration` carries).
    pub fn rp_id(&self) -> &str {
        &self.rp_id
    }

    /// The origin.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The account name (`user.name`), for the phone's display.
    pub fn user_name(&self) -> &str {
        &self.options.user_name
    }

    /// The `clientDataJSON` bytes.
    pub fn client_data_json(&self) -> &[u8] {
        &self.client_data_json
    }

    /// SHA-256 of `clientDataJSON`.
    pub fn client_data_hash(&self) -> [u8; 32] {
        self.client_data_hash
    }

    /// The options' `timeout`, milliseconds.
    pub fn timeout_ms(&self) -> Option<u32> {
        self.options.timeout_ms
    }

    /// The CTAP2 makeCredential request.
    pub fn ctap_request(&self) -> MakeCredentialRequest {
        let options = &self.options;
        let mut request = MakeCredentialRequest::new(
            self.client_data_hash,
            PublicKeyCredentialRpEntity {
                id: self.rp_id.clone(),
                name: Some(
                    options
                        .rp_name
                        .clone()
                        .unwrap_or_else(|| self.rp_id.clone()),
                ),
            },
            PublicKeyCredentialUserEntity {
                id: options.user_id.clone(),
                name: Some(options.user_name.clone()),
                display_name: Some(
                    options
                        .user_display_name
                        .clone()
                        .unwrap_or_else(|| options.user_name.clone()),
                ),
            },
            options
                .algorithms
                .iter()
                .map(|&alg| PublicKeyCredentialParameters { alg })
                .collect(),
        );
        request.exclude_list = options
            .exclude_credentials
            .iter()
            .map(CredentialDescriptor::to_ctap)
            .collect();
        request.options = MakeCredentialOptions {
            rk: matches!(
                options.resident_key,
                ResidentKey::Required | ResidentKey::Preferred
            )
            .then_some(true),
            up: None,
            uv: options.user_verification.wants_uv().then_some(true),
        };
        request
    }

    /// Checks the authenticator's answer and builds `RegistrationResponseJSON`.
    ///
    /// # Errors
    ///
    /// [`WebAuthnError::InvalidResponse`] when the authenticator data is malformed, for
    /// another RP, has no attested credential, or uses an algorithm the RP did not offer.
    pub fn response(
        &self,
        response: &MakeCredentialResponse,
    ) -> Result<RegistrationResponse, WebAuthnError> {
        let auth_data = AuthData::parse(&response.auth_data)?;
        check_rp_id_hash(&auth_data, &self.rp_id)?;
        let attested = auth_data
            .attested
            .as_ref()
            .ok_or(WebAuthnError::InvalidResponse(
                "no attested credential data",
            ))?;
        let key = CoseKey::parse(&attested.public_key_cbor)?;
        if !self.options.algorithms.contains(&key.alg) {
            return Err(WebAuthnError::InvalidResponse(
                "credential algorithm not in pubKeyCredParams",
            ));
        }
        let (fmt, att_stmt) = if self.options.attestation == AttestationConveyance::None {
            ("none".to_owned(), Value::Map(Vec::new()))
        } else {
            (response.fmt.clone(), response.att_stmt.clone())
        };
        let attestation_object = cbor::encode(&Value::Map(vec![
            (Value::Text("fmt".into()), Value::Text(fmt)),
            (Value::Text("attStmt".into()), att_stmt),
            (
                Value::Text("authData".into()),
                Value::Bytes(response.auth_data.clone()),
            ),
        ]));
        let id = URL_SAFE_NO_PAD.encode(&attested.credential_id);
        Ok(RegistrationResponse {
            raw_id: id.clone(),
            id,
            response: AttestationJson {
                client_data_json: URL_SAFE_NO_PAD.encode(&self.client_data_json),
                authenticator_data: URL_SAFE_NO_PAD.encode(&response.auth_data),
                transports: HYBRID_TRANSPORTS,
                public_key: key.spki.as_ref().map(|der| URL_SAFE_NO_PAD.encode(der)),
                public_key_algorithm: key.alg,
                attestation_object: URL_SAFE_NO_PAD.encode(attestation_object),
            },
            authenticator_attachment: "cross-platform",
            client_extension_results: EmptyObject {},
            kind: PUBLIC_KEY_TYPE,
        })
    }
}

/// An empty JSON object (`clientExtensionResults`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct EmptyObject {}

/// `AuthenticationResponseJSON` (§5.1.8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationResponse {
    /// The credential id, base64url.
    pub id: String,
    /// The same.
    pub raw_id: String,
    /// `AuthenticatorAssertionResponseJSON`.
    pub response: AssertionJson,
    /// `"cross-platform"`.
    pub authenticator_attachment: &'static str,
    /// `{}`.
    pub client_extension_results: EmptyObject,
    /// `"public-key"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `AuthenticatorAssertionResponseJSON`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssertionJson {
    /// base64url `clientDataJSON`.
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    /// base64url authenticator data.
    pub authenticator_data: String,
    /// base64url signature.
    pub signature: String,
    /// base64url user handle (discoverable credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_handle: Option<String>,
}

/// `RegistrationResponseJSON` (§5.1.8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationResponse {
    /// The credential id, base64url.
    pub id: String,
    /// The same.
    pub raw_id: String,
    /// `AuthenticatorAttestationResponseJSON`.
    pub response: AttestationJson,
    /// `"cross-platform"`.
    pub authenticator_attachment: &'static str,
    /// `{}`.
    pub client_extension_results: EmptyObject,
    /// `"public-key"`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `AuthenticatorAttestationResponseJSON`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttestationJson {
    /// base64url `clientDataJSON`.
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: String,
    /// base64url authenticator data.
    pub authenticator_data: String,
    /// `["hybrid", "internal"]`.
    pub transports: [&'static str; 2],
    /// base64url DER SubjectPublicKeyInfo of the credential key (ES256, EdDSA, RS256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// COSE algorithm of the credential key.
    pub public_key_algorithm: i64,
    /// base64url CBOR attestation object.
    pub attestation_object: String,
}

impl AuthenticationResponse {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        // Plain strings and a fixed shape: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl RegistrationResponse {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Authenticator data (WebAuthn §6.1), parsed.
struct AuthData<'a> {
    rp_id_hash: &'a [u8],
    attested: Option<Attested>,
}

struct Attested {
    credential_id: Vec<u8>,
    public_key_cbor: Vec<u8>,
}

const FLAG_AT: u8 = 0x40;
const FLAG_ED: u8 = 0x80;

impl<'a> AuthData<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, WebAuthnError> {
        let bad = WebAuthnError::InvalidResponse;
        if bytes.len() < 37 {
            return Err(bad("authenticator data shorter than 37 bytes"));
        }
        let flags = bytes[32];
        let mut rest = &bytes[37..];
        let attested = if flags & FLAG_AT != 0 {
            if rest.len() < 18 {
                return Err(bad("attested credential data truncated"));
            }
            let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            rest = &rest[18..];
            if len == 0 || len > MAX_CREDENTIAL_ID_LEN || rest.len() < len {
                return Err(bad("credential id length"));
            }
            let credential_id = rest[..len].to_vec();
            rest = &rest[len..];
            let (_, used) = cbor::decode_prefix(rest, cbor::Strictness::Lenient)
                .map_err(|_| bad("credential public key is not CBOR"))?;
            let public_key_cbor = rest[..used].to_vec();
            rest = &rest[used..];
            Some(Attested {
                credential_id,
                public_key_cbor,
            })
        } else {
            None
        };
        if flags & FLAG_ED != 0 {
            let (_, used) = cbor::decode_prefix(rest, cbor::Strictness::Lenient)
                .map_err(|_| bad("extensions are not CBOR"))?;
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes in authenticator data"));
        }
        Ok(Self {
            rp_id_hash: &bytes[..32],
            attested,
        })
    }
}

fn check_rp_id_hash(auth_data: &AuthData<'_>, rp_id: &str) -> Result<(), WebAuthnError> {
    if auth_data.rp_id_hash != Sha256::digest(rp_id.as_bytes()).as_slice() {
        return Err(WebAuthnError::InvalidResponse(
            "authenticator data is for another RP id",
        ));
    }
    Ok(())
}

/// A COSE_Key (RFC 9052 §7) reduced to what the response JSON needs.
struct CoseKey {
    alg: i64,
    spki: Option<Vec<u8>>,
}

impl CoseKey {
    fn parse(bytes: &[u8]) -> Result<Self, WebAuthnError> {
        let bad = WebAuthnError::InvalidResponse;
        let value = cbor::decode(bytes, cbor::Strictness::Lenient)
            .map_err(|_| bad("credential public key is not CBOR"))?;
        let Value::Map(map) = value else {
            return Err(bad("credential public key is not a map"));
        };
        let int = |key: i64| {
            map.iter().find_map(|(k, v)| match (k, v) {
                (Value::Integer(k), Value::Integer(v)) if i128::from(*k) == i128::from(key) => {
                    i64::try_from(*v).ok()
                }
                _ => None,
            })
        };
        let bytes_at = |key: i64| {
            map.iter().find_map(|(k, v)| match (k, v) {
                (Value::Integer(k), Value::Bytes(v)) if i128::from(*k) == i128::from(key) => {
                    Some(v.as_slice())
                }
                _ => None,
            })
        };
        let kty = int(1).ok_or(bad("credential public key has no kty"))?;
        let alg = int(3).ok_or(bad("credential public key has no alg"))?;
        let spki = match (kty, alg) {
            (2, COSE_ES256) => {
                let (x, y) = match (int(-1), bytes_at(-2), bytes_at(-3)) {
                    (Some(1), Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => (x, y),
                    _ => return Err(bad("ES256 key is not a P-256 point")),
                };
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                p256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|_| bad("ES256 key is not on the curve"))?;
                let mut der = P256_SPKI_PREFIX.to_vec();
                der.extend_from_slice(&point);
                Some(der)
            }
            (1, COSE_EDDSA) => match (int(-1), bytes_at(-2)) {
                (Some(6), Some(x)) if x.len() == 32 => {
                    let mut der = ED25519_SPKI_PREFIX.to_vec();
                    der.extend_from_slice(x);
                    Some(der)
                }
                _ => return Err(bad("EdDSA key is not Ed25519")),
            },
            (3, COSE_RS256) => match (bytes_at(-1), bytes_at(-2)) {
                (Some(n), Some(e)) if !n.is_empty() && !e.is_empty() => Some(rsa_spki(n, e)),
                _ => return Err(bad("RS256 key lacks n or e")),
            },
            (1..=3, COSE_ES256 | COSE_EDDSA | COSE_RS256) => {
                return Err(bad("key type does not match the algorithm"));
            }
            _ => None,
        };
        Ok(Self { alg, spki })
    }
}

/// DER of `SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING` header for a 65-byte
/// point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// DER of `SEQUENCE { SEQUENCE { id-Ed25519 }, BIT STRING` header for a 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER of `SEQUENCE { rsaEncryption, NULL }`.
const RSA_ALGORITHM_ID: [u8; 15] = [
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

fn der_tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

fn der_unsigned_integer(value: &[u8], out: &mut Vec<u8>) {
    let trimmed = {
        let skip = value.iter().take_while(|b| **b == 0).count();
        &value[skip.min(value.len().saturating_sub(1))..]
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der_tlv(0x02, &content, out);
}

fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut integers = Vec::with_capacity(n.len() + e.len() + 16);
    der_unsigned_integer(n, &mut integers);
    der_unsigned_integer(e, &mut integers);
    let mut rsa_key = Vec::with_capacity(integers.len() + 8);
    der_tlv(0x30, &integers, &mut rsa_key);
    let mut bit_string = Vec::with_capacity(rsa_key.len() + 1);
    bit_string.push(0);
    bit_string.extend_from_slice(&rsa_key);
    let mut body = RSA_ALGORITHM_ID.to_vec();
    der_tlv(0x03, &bit_string, &mut body);
    let mut out = Vec::with_capacity(body.len() + 8);
    der_tlv(0x30, &body, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn origins() {
        let o = Origin::parse("https://Example.COM/").unwrap();
        assert_eq!(o.as_str(), "https://example.com");
        assert_eq!(o.host(), "example.com");
        assert_eq!(
            Origin::parse("https://login.example.com:443")
                .unwrap()
                .as_str(),
            "https://login.example.com"
        );
        assert_eq!(
            Origin::parse("https://example.com:8443").unwrap().as_str(),
            "https://example.com:8443"
        );
        assert_eq!(
            Origin::parse("http://localhost:8080").unwrap().as_str(),
            "http://localhost:8080"
        );
        for bad in [
            "http://example.com",
            "https://example.com/login",
            "https://example.com/?q",
            "https://u:p@example.com",
            "https://127.0.0.1",
            "https://[::1]",
            "ftp://example.com",
            "example.com",
        ] {
            assert!(
                matches!(Origin::parse(bad), Err(WebAuthnError::InvalidOrigin { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn rp_id_must_be_the_host_or_a_suffix() {
        let o = Origin::parse("https://login.example.com").unwrap();
        assert_eq!(o.check_rp_id("example.com").unwrap(), "example.com");
        assert_eq!(
            o.check_rp_id("LOGIN.example.com").unwrap(),
            "login.example.com"
        );
        for bad in [
            "other.com",
            "xample.com",
            "com",
            "ogin.example.com",
            "a.login.example.com",
        ] {
            assert!(
                matches!(
                    o.check_rp_id(bad),
                    Err(WebAuthnError::OriginMismatch { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            o.check_rp_id("exa mple.com"),
            Err(WebAuthnError::InvalidOptions("rpId"))
        );
        let local = Origin::parse("http://localhost:3000").unwrap();
        assert_eq!(local.check_rp_id("localhost").unwrap(), "localhost");
    }

    #[test]
    fn rsa_spki_der() {
        // n with the high bit set gets a leading zero; e = 65537.
        let n = [0x80u8; 256];
        let der = rsa_spki(&n, &[1, 0, 1]);
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert_eq!(der.len(), 4 + 0x122);
        assert!(der.ends_with(&[0x02, 0x03, 0x01, 0x00, 0x01]));
    }
}
