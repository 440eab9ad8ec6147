//! Who is calling: a companion app (access token from the identity provider) or a device
//! (short-lived JWT signed by its device key). Resolved per request from the `Authorization:
//! Bearer` header (HTTP) or the `authorization` field of the WebSocket `connection_init` payload.

use crate::auth::device::{self, DevicePublicKey};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::accounts::{self, Account};
use crate::store::audit::{self, NewEntry};
use crate::store::devices::{self, Device, status};

/// What the transport layer knows about a request.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    /// The bearer token, if any.
    pub token: Option<String>,
    /// The client's address.
    pub client_addr: Option<String>,
}

impl RequestMeta {
    /// Reads `Bearer <token>`.
    pub fn from_authorization(value: Option<&str>, client_addr: Option<String>) -> Self {
        let token = value
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty() && t.len() <= 8192);
        Self { token, client_addr }
    }
}

/// The token's `kid`, if it names a device.
fn device_kid(token: &str) -> Option<String> {
    device::unverified_kid(token)
        .ok()
        .filter(|kid| crate::id::is_valid("dev", kid))
}

async fn audit_auth_failure(state: &AppState, meta: &RequestMeta, actor: &str, reason: &str) {
    let now = state.now_ms();
    let entry = NewEntry {
        account_id: None,
        actor,
        event: "auth.failure",
        client_addr: meta.client_addr.as_deref(),
        outcome: "failure",
        detail: Some(reason.to_owned()),
    };
    if let Ok(mut conn) = state.store.pool().acquire().await
        && let Err(e) = audit::append(&mut conn, now, &entry).await
    {
        tracing::warn!(error = %e, "could not audit an authentication failure");
    }
}

/// A request's caller, resolved at most once per request (a device token's `jti` may be used
/// only once, and verification is not free).
///
/// A WebSocket connection is one long-lived caller: its token is verified once, at
/// `connection_init`, and every later operation re-checks that the token has not expired and,
/// for a device, that it has not been revoked meanwhile.
#[derive(Debug, Default)]
pub struct Caller {
    /// What the transport layer saw.
    pub meta: RequestMeta,
    /// Whether this caller outlives one request (a WebSocket connection).
    pub long_lived: bool,
    companion: tokio::sync::OnceCell<ApiResult<(Account, i64)>>,
    device: tokio::sync::OnceCell<ApiResult<(Device, i64)>>,
}

impl Caller {
    /// A caller for one request.
    pub fn new(meta: RequestMeta) -> Self {
        Self {
            meta,
            ..Self::default()
        }
    }

    /// A caller for a WebSocket connection.
    pub fn connection(meta: RequestMeta) -> Self {
        Self {
            meta,
            long_lived: true,
            ..Self::default()
        }
    }

    fn check_expiry(&self, state: &AppState, expires_at: i64) -> ApiResult<()> {
        if self.long_lived && state.clock.now_secs() > expires_at {
            return Err(ApiError::unauthenticated(
                "the connection's token has expired: reconnect with a fresh one (expired)",
            ));
        }
        Ok(())
    }

    /// The calling companion's account.
    pub async fn companion(&self, state: &AppState) -> ApiResult<Account> {
        let (account, expires_at) = self
            .companion
            .get_or_init(|| resolve_companion(state, &self.meta))
            .await
            .clone()?;
        self.check_expiry(state, expires_at)?;
        if self.long_lived
            && let Some(token) = self.meta.token.as_deref()
            && let Err(e) = state.companions.verify(token, state.clock.now_secs())
        {
            return Err(ApiError::unauthenticated(format!(
                "the connection's token is no longer valid ({}): reconnect with a fresh one",
                e.code()
            )));
        }
        Ok(account)
    }

    /// The calling device; pending (unpaired) devices only when `allow_pending`.
    pub async fn device(&self, state: &AppState, allow_pending: bool) -> ApiResult<Device> {
        let (mut device, expires_at) = self
            .device
            .get_or_init(|| resolve_device(state, &self.meta))
            .await
            .clone()?;
        self.check_expiry(state, expires_at)?;
        if self.long_lived {
            let mut conn = state.store.pool().acquire().await?;
            let current = devices::get(&mut conn, &device.id).await?;
            match current {
                Some(d) if d.status == status::ACTIVE || d.status == status::PENDING => device = d,
                _ => {
                    return Err(ApiError::unauthenticated(
                        "device is no longer active (device_not_active)",
                    ));
                }
            }
        }
        if device.status != status::ACTIVE && !allow_pending {
            return Err(ApiError::unauthenticated(
                "device is not paired yet (device_not_active)",
            ));
        }
        Ok(device)
    }
}

async fn resolve_companion(state: &AppState, meta: &RequestMeta) -> ApiResult<(Account, i64)> {
    let Some(token) = meta.token.as_deref() else {
        return Err(ApiError::unauthenticated(
            "a companion access token is required",
        ));
    };
    if device_kid(token).is_some() {
        return Err(ApiError::forbidden("this operation is for companion apps"));
    }
    let mut verified = state.companions.verify(token, state.clock.now_secs());
    // A key the bridge has not seen: the provider may have rotated. Re-fetch (at most every
    // 30 s) and try once more.
    if matches!(verified, Err(crate::auth::AuthError::UnknownKey))
        && state.refresh_jwks(30_000).await
    {
        verified = state.companions.verify(token, state.clock.now_secs());
    }
    let identity = match verified {
        Ok(identity) => identity,
        Err(e) if e.is_server_fault() => return Err(ApiError::internal(&e)),
        Err(e) => {
            audit_auth_failure(state, meta, "companion", e.code()).await;
            return Err(ApiError::unauthenticated(format!(
                "access token rejected ({})",
                e.code()
            )));
        }
    };
    let mut conn = state.store.pool().acquire().await?;
    let account = accounts::ensure(
        &mut conn,
        &identity.issuer,
        &identity.subject,
        state.now_ms(),
    )
    .await?;
    // Companion tokens of a connection are re-verified per operation (see `Caller::companion`).
    Ok((account, i64::MAX))
}

async fn resolve_device(state: &AppState, meta: &RequestMeta) -> ApiResult<(Device, i64)> {
    let Some(token) = meta.token.as_deref() else {
        return Err(ApiError::unauthenticated("a device token is required"));
    };
    let Some(kid) = device_kid(token) else {
        // Not a device token: a valid companion token is the wrong kind of caller, anything
        // else is no credential at all.
        return Err(
            if state
                .companions
                .verify(token, state.clock.now_secs())
                .is_ok()
            {
                ApiError::forbidden("this operation is for devices")
            } else {
                audit_auth_failure(state, meta, "unknown", "malformed").await;
                ApiError::unauthenticated("device token rejected (malformed)")
            },
        );
    };
    let now = state.now_ms();
    let mut conn = state.store.pool().acquire().await?;
    let Some(found) = devices::get(&mut conn, &kid).await? else {
        audit_auth_failure(state, meta, "device", "unknown_device").await;
        return Err(ApiError::unauthenticated(
            "device token rejected (unknown_device)",
        ));
    };
    let usable = found.status == status::ACTIVE || found.status == status::PENDING;
    if !usable {
        audit_auth_failure(
            state,
            meta,
            &format!("device:{}", found.id),
            "device_not_active",
        )
        .await;
        return Err(ApiError::unauthenticated(format!(
            "device is {} (device_not_active)",
            found.status.to_lowercase()
        )));
    }
    let key = DevicePublicKey::from_sec1(&found.public_key)
        .map_err(|e| ApiError::internal(&format!("stored device key invalid: {e}")))?;
    let claims = match device::verify_device_token(
        token,
        &key,
        &found.id,
        &state.config.public_url,
        state.clock.now_secs(),
    ) {
        Ok(claims) => claims,
        Err(e) => {
            audit_auth_failure(state, meta, &format!("device:{}", found.id), e.code()).await;
            return Err(ApiError::unauthenticated(format!(
                "device token rejected ({})",
                e.code()
            )));
        }
    };
    drop(conn);
    // The token id and the last-seen time are written in one serialized transaction (one
    // commit; on SQLite no busy-waiting against other writers).
    let mut tx = state.store.begin_write().await?;
    let fresh = devices::record_token_id(
        &mut tx.tx,
        &claims.jti,
        (claims.expires_at + crate::auth::device::DEVICE_TOKEN_LEEWAY_SECS).saturating_mul(1000),
    )
    .await?;
    if !fresh {
        drop(tx);
        audit_auth_failure(
            state,
            meta,
            &format!("device:{}", found.id),
            "replayed_token",
        )
        .await;
        return Err(ApiError::unauthenticated(
            "device token rejected (replayed_token)",
        ));
    }
    devices::touch(&mut tx.tx, &found.id, now).await?;
    tx.commit().await?;
    Ok((found, claims.expires_at))
}
