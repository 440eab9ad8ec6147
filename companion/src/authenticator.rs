//! The simulated phone's software authenticator: 1Password's `passkey-authenticator` behind
//! [`hybrid::authenticator::CtapHandler`].
//!
//! # What this glue does
//!
//! * **Requests.** The hybrid session has already decoded the client's CTAP2 command into
//!   [`hybrid::ctap::CtapRequest`]; [`SoftAuthenticator`] maps its fields one by one onto
//!   `passkey-types`' typed requests. Extension inputs are dropped: this authenticator processes
//!   no extension and its getInfo lists none, and CTAP 2.2 §6.1/§6.2 tell authenticators to
//!   ignore extensions they do not support. Algorithms the request names that COSE does not
//!   register are dropped as well.
//! * **Replies.** `passkey-types`' responses are mapped onto hybrid's typed responses and encoded
//!   with [`hybrid::cbor::encode`], so every map in the reply (the response map, the credential
//!   descriptor, the user entity) is in CTAP2 canonical order, as Chromium requires. The
//!   credential public key inside `authData` is written by `coset`, whose order (1, 3, -1, -2, -3)
//!   is already canonical.
//! * **Algorithms.** Only ES256 ([`Authenticator::set_algorithms`]); without this the crate
//!   follows the relying party's order and may pick Ed25519 or ML-DSA.
//! * **Signature counter.** On by default ([`SoftAuthenticatorConfig::signature_counter`]):
//!   new passkeys start at 0 and each assertion increments and stores the counter. Off, passkeys
//!   have no counter and always sign 0, as synced passkeys do; relying parties must accept both.
//! * **User checks.** A [`UserPolicy`] scripts the person holding the phone: approve or deny
//!   (`CTAP2_ERR_OPERATION_DENIED`, 0x27), with or without user verification. With
//!   verification the UV flag is set on every reply, as phones verify with the screen lock
//!   anyway; without it getInfo does not offer `uv` and a request demanding it gets
//!   `CTAP2_ERR_UNSUPPORTED_OPTION` (0x2B).
//! * **Excluded credentials.** `passkey-authenticator` 0.6 deliberately goes on to create a
//!   credential when one in the exclude list exists; a phone must not. After the user's
//!   approval this authenticator answers `CTAP2_ERR_CREDENTIAL_EXCLUDED` (0x19), as CTAP 2.2 §6.1
//!   step 3 requires.
//! * **getInfo** looks like Chrome for Android's hybrid authenticator
//!   ([`GetInfoResponse::hybrid_phone`]): versions `FIDO_2_0` and `FIDO_2_1`, transports
//!   `cable`, `hybrid`, `internal`, options `rk` (and `uv` when verification is on), no
//!   `clientPin` or `pinUvAuthToken`, algorithm ES256, and no extensions.
//!
//! # Synchronous handler, asynchronous crate
//!
//! [`CtapHandler`] is synchronous (the hybrid core is sans-I/O), while `passkey-authenticator`'s
//! methods are `async` because its storage and user-check traits are. Here neither ever waits:
//! [`PasskeyStore`] does its (small, local) file I/O inline and the scripted user answers at once.
//! So each operation's future completes on its first poll, and [`SoftAuthenticator`] polls it
//! exactly once with a no-op waker — no executor, no `block_on`, nothing that could stall or
//! deadlock a tokio worker. Should a future ever return `Pending` (a store or user check that
//! really waits), the command fails with `CTAP1_ERR_OTHER` rather than hanging. A real phone
//! whose user check waits for a person would answer asynchronously instead; the hybrid core's
//! handler would then need a deferred-reply form. The phone driver ([`crate::phone`]) runs
//! the session step that calls this handler on tokio's blocking pool, so the store's file
//! write never occupies an async worker.

use core::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use coset::iana::{self, EnumI64};
use hybrid::authenticator::CtapHandler;
use hybrid::ctap::{
    CtapRequest, CtapResponse, CtapStatus, GetAssertionRequest, GetAssertionResponse,
    GetInfoResponse, LargeBlobKey, MakeCredentialRequest, MakeCredentialResponse,
    PublicKeyCredentialDescriptor, PublicKeyCredentialParameters, PublicKeyCredentialUserEntity,
};
use passkey_authenticator::{Authenticator, UiHint, UserCheck, UserValidationMethod};
use passkey_crypto::rust_crypto::RustCryptoBackend;
use passkey_types::ctap2::{Aaguid, Ctap2Error, Flags, StatusCode, get_assertion, make_credential};
use passkey_types::{Passkey, webauthn};
use thiserror::Error;

use crate::store::{PasskeyStore, StoreError};

/// What the simulated person holding the phone does when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserPolicy {
    /// Approve the request (`false`: deny, `CTAP2_ERR_OPERATION_DENIED`).
    pub approve: bool,
    /// Verify the user (screen lock) and set the UV flag.
    pub user_verification: bool,
}

impl UserPolicy {
    /// Approve, with user verification: what a phone normally does.
    pub const APPROVE: Self = Self {
        approve: true,
        user_verification: true,
    };
    /// Deny.
    pub const DENY: Self = Self {
        approve: false,
        user_verification: true,
    };
}

impl Default for UserPolicy {
    fn default() -> Self {
        Self::APPROVE
    }
}

/// How a [`SoftAuthenticator`] is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoftAuthenticatorConfig {
    /// The AAGUID in attested credential data; all zero, like Chrome's phone authenticator.
    pub aaguid: [u8; 16],
    /// Keep a per-passkey signature counter (true) or always sign 0 (false). Applies to passkeys
    /// created from now on.
    pub signature_counter: bool,
    /// The scripted user.
    pub policy: UserPolicy,
}

impl Default for SoftAuthenticatorConfig {
    fn default() -> Self {
        Self {
            aaguid: [0; 16],
            signature_counter: true,
            policy: UserPolicy::APPROVE,
        }
    }
}

/// Why a [`SoftAuthenticator`] could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuthenticatorError {
    /// The passkey store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The crypto backend does not offer ES256.
    #[error("the crypto backend does not support ES256")]
    Algorithm,
}

/// The software authenticator of the simulated phone. See the [module docs](self).
pub struct SoftAuthenticator {
    inner: Authenticator<PasskeyStore, ScriptedUser, RustCryptoBackend>,
    policy: Arc<Mutex<UserPolicy>>,
    aaguid: [u8; 16],
}

impl fmt::Debug for SoftAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftAuthenticator")
            .field("store", self.inner.store())
            .field("policy", &self.policy())
            .field(
                "signature_counter",
                &self.inner.make_credentials_with_signature_counter(),
            )
            .finish_non_exhaustive()
    }
}

impl SoftAuthenticator {
    /// An authenticator keeping its passkeys in `store`.
    ///
    /// # Errors
    ///
    /// [`AuthenticatorError::Algorithm`] if ES256 is unavailable (it always is with the
    /// RustCrypto backend).
    pub fn new(
        store: PasskeyStore,
        config: SoftAuthenticatorConfig,
    ) -> Result<Self, AuthenticatorError> {
        let policy = Arc::new(Mutex::new(config.policy));
        let user = ScriptedUser {
            policy: Arc::clone(&policy),
        };
        let mut inner =
            Authenticator::new(Aaguid::from(config.aaguid), store, user, RustCryptoBackend);
        inner
            .set_algorithms(&[iana::Algorithm::ES256])
            .map_err(|_| AuthenticatorError::Algorithm)?;
        inner.set_make_credentials_with_signature_counter(config.signature_counter);
        Ok(Self {
            inner,
            policy,
            aaguid: config.aaguid,
        })
    }

    /// An authenticator with the store in directory `dir` (see [`PasskeyStore::open`]).
    ///
    /// # Errors
    ///
    /// [`AuthenticatorError::Store`] if the store cannot be opened.
    pub fn open(
        dir: impl AsRef<Path>,
        config: SoftAuthenticatorConfig,
    ) -> Result<Self, AuthenticatorError> {
        Self::new(PasskeyStore::open(dir)?, config)
    }

    /// The scripted user.
    pub fn policy(&self) -> UserPolicy {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the scripted user for the next command.
    pub fn set_policy(&mut self, policy: UserPolicy) {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = policy;
    }

    /// Keep a signature counter on passkeys created from now on (or not).
    pub fn set_signature_counter(&mut self, on: bool) {
        self.inner.set_make_credentials_with_signature_counter(on);
    }

    /// The passkey store.
    pub fn store(&self) -> &PasskeyStore {
        self.inner.store()
    }

    /// The passkey store, mutably (for example to take its last write error).
    pub fn store_mut(&mut self) -> &mut PasskeyStore {
        self.inner.store_mut()
    }

    /// authenticatorMakeCredential.
    ///
    /// # Errors
    ///
    /// The CTAP status to answer with, e.g. `CTAP2_ERR_OPERATION_DENIED` when the user denies.
    pub fn make_credential(
        &mut self,
        request: &MakeCredentialRequest,
    ) -> Result<MakeCredentialResponse, CtapStatus> {
        let request = to_make_credential(request);
        let response = poll_once(self.inner.make_credential(request))
            .ok_or(CtapStatus::Other)?
            .map_err(status)?;
        Ok(MakeCredentialResponse {
            fmt: response.fmt,
            auth_data: response.auth_data.to_vec(),
            att_stmt: response.att_stmt,
            ep_att: response.ep_att,
            large_blob_key: response.large_blob_key.map(|k| LargeBlobKey::new(k.into())),
        })
    }

    /// authenticatorGetAssertion. With user verification the user entity carries the stored
    /// name and display name as well as the user handle.
    ///
    /// # Errors
    ///
    /// The CTAP status to answer with, e.g. `CTAP2_ERR_NO_CREDENTIALS`.
    pub fn get_assertion(
        &mut self,
        request: &GetAssertionRequest,
    ) -> Result<GetAssertionResponse, CtapStatus> {
        let request = to_get_assertion(request);
        let response = poll_once(self.inner.get_assertion(request))
            .ok_or(CtapStatus::Other)?
            .map_err(status)?;
        let credential_id = response.credential.as_ref().map(|d| d.id.to_vec());
        let verified = response.auth_data.flags.contains(Flags::UV);
        let user = response.user.map(|user| {
            // Names only after user verification (CTAP 2.2 §6.2 step 11).
            let stored = verified
                .then(|| {
                    let id = credential_id.as_deref()?;
                    self.store()
                        .list()
                        .into_iter()
                        .find(|p| p.credential_id == id)
                })
                .flatten();
            PublicKeyCredentialUserEntity {
                id: user.id.into(),
                name: stored.as_ref().and_then(|p| non_empty(p.user_name.clone())),
                display_name: stored.and_then(|p| non_empty(p.user_display_name)),
            }
        });
        Ok(GetAssertionResponse {
            credential: credential_id.map(PublicKeyCredentialDescriptor::new),
            auth_data: response.auth_data.to_vec(),
            signature: response.signature.into(),
            user,
            number_of_credentials: response.number_of_credentials.map(u64::from),
            user_selected: response.user_selected,
            large_blob_key: response.large_blob_key.map(|k| LargeBlobKey::new(k.into())),
        })
    }
}

impl CtapHandler for SoftAuthenticator {
    fn get_info(&self) -> GetInfoResponse {
        let mut info = GetInfoResponse::hybrid_phone();
        info.aaguid = self.aaguid;
        info.extensions.clear();
        info.options.clear();
        info.options.insert("rk".to_owned(), true);
        if self.policy().user_verification {
            info.options.insert("uv".to_owned(), true);
        }
        info.algorithms = vec![PublicKeyCredentialParameters::ES256];
        info
    }

    fn handle(&mut self, request: CtapRequest) -> CtapResponse {
        let command = request.command();
        let reply = match &request {
            CtapRequest::MakeCredential(r) => self.make_credential(r).map(|r| r.to_cbor()),
            CtapRequest::GetAssertion(r) => self.get_assertion(r).map(|r| r.to_cbor()),
        };
        match reply {
            Ok(body) => {
                tracing::debug!(%command, "CTAP command answered");
                CtapResponse::ok(body)
            }
            Err(status) => {
                tracing::debug!(%command, %status, "CTAP command refused");
                CtapResponse::error(status)
            }
        }
    }
}

/// The scripted user behind `passkey-authenticator`'s user checks.
struct ScriptedUser {
    policy: Arc<Mutex<UserPolicy>>,
}

impl ScriptedUser {
    fn policy(&self) -> UserPolicy {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl UserValidationMethod for ScriptedUser {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        hint: UiHint<'a, Passkey>,
        presence: bool,
        _verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        let policy = self.policy();
        if !policy.approve {
            return Err(Ctap2Error::OperationDenied);
        }
        if matches!(hint, UiHint::InformExcludedCredentialFound(_)) {
            // The user was present and saw "already registered": CTAP 2.2 §6.1 step 3.
            return Err(Ctap2Error::CredentialExcluded);
        }
        Ok(UserCheck {
            // A silent request (up = false) is answered without asking for presence.
            presence,
            verification: policy.user_verification,
        })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        self.policy().user_verification.then_some(true)
    }
}

/// Polls `future` once with a no-op waker; `None` if it is not ready. See the module docs for
/// why that is enough here.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => {
            tracing::error!("software authenticator operation did not complete synchronously");
            None
        }
    }
}

fn status(code: StatusCode) -> CtapStatus {
    CtapStatus::from(u8::from(code))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn descriptor(d: &PublicKeyCredentialDescriptor) -> webauthn::PublicKeyCredentialDescriptor {
    webauthn::PublicKeyCredentialDescriptor {
        ty: webauthn::PublicKeyCredentialType::PublicKey,
        id: d.id.clone().into(),
        transports: None,
    }
}

fn descriptors(
    list: &[PublicKeyCredentialDescriptor],
) -> Option<Vec<webauthn::PublicKeyCredentialDescriptor>> {
    (!list.is_empty()).then(|| list.iter().map(descriptor).collect())
}

/// A PIN protocol number as the crate's `u8`; numbers that do not fit become 255 (unsupported).
fn pin_protocol(protocol: Option<u64>) -> Option<u8> {
    protocol.map(|p| u8::try_from(p).unwrap_or(u8::MAX))
}

fn to_make_credential(r: &MakeCredentialRequest) -> make_credential::Request {
    make_credential::Request {
        client_data_hash: r.client_data_hash.to_vec().into(),
        rp: make_credential::PublicKeyCredentialRpEntity {
            id: r.rp.id.clone(),
            name: r.rp.name.clone(),
        },
        // CTAP makes name and displayName optional; the crate's type does not.
        user: webauthn::PublicKeyCredentialUserEntity {
            id: r.user.id.clone().into(),
            name: r.user.name.clone().unwrap_or_default(),
            display_name: r.user.display_name.clone().unwrap_or_default(),
        },
        pub_key_cred_params: r
            .pub_key_cred_params
            .iter()
            .filter_map(|p| iana::Algorithm::from_i64(p.alg))
            .map(webauthn::PublicKeyCredentialParameters::from)
            .collect(),
        exclude_list: descriptors(&r.exclude_list),
        extensions: None,
        options: make_credential::Options {
            rk: r.options.rk.unwrap_or(false),
            up: r.options.up.unwrap_or(true),
            uv: r.options.uv.unwrap_or(false),
        },
        pin_auth: r.pin_uv_auth_param.clone().map(Into::into),
        pin_protocol: pin_protocol(r.pin_uv_auth_protocol),
    }
}

fn to_get_assertion(r: &GetAssertionRequest) -> get_assertion::Request {
    get_assertion::Request {
        rp_id: r.rp_id.clone(),
        client_data_hash: r.client_data_hash.to_vec().into(),
        allow_list: descriptors(&r.allow_list),
        extensions: None,
        options: get_assertion::Options {
            up: r.options.up.unwrap_or(true),
            uv: r.options.uv.unwrap_or(false),
        },
        pin_auth: r.pin_uv_auth_param.clone().map(Into::into),
        pin_protocol: pin_protocol(r.pin_uv_auth_protocol),
    }
}
