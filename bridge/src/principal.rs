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
    token: tokio::sync::Mutex<TokenState>,
}

/// Whether the device token's `jti` has been recorded (a token may be used once).
#[derive(Debug, Default)]
enum TokenState {
    /// Not a device caller yet.
    #[default]
    Unresolved,
    /// Verified; its id is not recorded yet.
    Pending(PendingToken),
    /// Recorded: this caller may act.
    Recorded,
}

/// A verified device token whose id still has to be recorded.
#[derive(Debug, Clone)]
struct PendingToken {
    jti: String,
    keep_until_ms: i64,
    device_id: String,
    /// Set when the device's last-seen time is stale enough to be worth a write.
    touch_at: Option<i64>,
}

async fn record_token(conn: &mut sqlx::AnyConnection, pending: &PendingToken) -> ApiResult<bool> {
    if !devices::record_token_id(conn, &pending.jti, pending.keep_until_ms).await? {
        return Ok(false);
    }
    if let Some(now) = pending.touch_at {
        devices::touch(conn, &pending.device_id, now).await?;
    }
    Ok(true)
}

fn replayed() -> ApiError {
    ApiError::unauthenticated("device token rejected (replayed_token)")
}

/// The right to act on a device token, held while a write it authorizes is in progress.
///
/// Writers that can, record the token id inside their own transaction ([`TokenUse::record_in`],
/// then [`TokenUse::committed`]): one write instead of two. Whatever happens, the caller ends
/// with [`TokenUse::settle`], which records the id on its own if the transaction did not, so a
/// token is never usable twice — not even one whose first use failed. Other operations of the
/// same request wait until the use is settled.
#[derive(Debug)]
pub struct TokenUse<'a> {
    guard: tokio::sync::MutexGuard<'a, TokenState>,
    device_label: String,
}

impl TokenUse<'_> {
    /// Records the token id (and the device's last-seen time) in the caller's transaction.
    /// `Err` (unauthenticated, `replayed_token`) if the id was used before: drop the
    /// transaction.
    pub async fn record_in(&mut self, conn: &mut sqlx::AnyConnection) -> ApiResult<()> {
        let TokenState::Pending(pending) = &*self.guard else {
            return Ok(());
        };
        if record_token(conn, pending).await? {
            Ok(())
        } else {
            Err(replayed())
        }
    }

    /// The token id to record in the caller's own statements (`None` once recorded).
    pub fn pending_record(&self) -> Option<crate::store::deliveries::TokenRecord<'_>> {
        match &*self.guard {
            TokenState::Pending(p) => Some(crate::store::deliveries::TokenRecord {
                jti: &p.jti,
                keep_until_ms: p.keep_until_ms,
                touch_at: p.touch_at,
            }),
            _ => None,
        }
    }

    /// The transaction that recorded the id committed.
    pub fn committed(&mut self) {
        if matches!(*self.guard, TokenState::Pending(_)) {
            *self.guard = TokenState::Recorded;
        }
    }

    /// Records the id on its own if it is still pending. `Err` if the token was replayed: the
    /// caller must then discard its result.
    pub async fn settle(mut self, state: &AppState, meta: &RequestMeta) -> ApiResult<()> {
        let TokenState::Pending(pending) = &*self.guard else {
            return Ok(());
        };
        let mut tx = state.store.begin_write().await?;
        if !record_token(&mut tx.tx, pending).await? {
            drop(tx);
            audit_auth_failure(state, meta, &self.device_label, "replayed_token").await;
            return Err(replayed());
        }
        tx.commit().await?;
        *self.guard = TokenState::Recorded;
        Ok(())
    }
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
        let (device, token) = self.device_for_write(state, allow_pending).await?;
        token.settle(state, &self.meta).await?;
        Ok(device)
    }

    /// The calling device, with the use of its token still to be recorded: see [`TokenUse`].
    pub async fn device_for_write(
        &self,
        state: &AppState,
        allow_pending: bool,
    ) -> ApiResult<(Device, TokenUse<'_>)> {
        let (mut device, expires_at) = self
            .device
            .get_or_init(|| async {
                let (device, expires_at, pending) = resolve_device(state, &self.meta).await?;
                *self.token.lock().await = TokenState::Pending(pending);
                Ok((device, expires_at))
            })
            .await
            .clone()?;
        let guard = self.token.lock().await;
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
        let device_label = format!("device:{}", device.id);
        Ok((
            device,
            TokenUse {
                guard,
                device_label,
            },
        ))
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

async fn resolve_device(
    state: &AppState,
    meta: &RequestMeta,
) -> ApiResult<(Device, i64, PendingToken)> {
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
    // The token id (and a stale last-seen time) is written by the first use of the caller: in
    // the transaction of the write it authorizes when there is one (see `TokenUse`).
    let pending = PendingToken {
        jti: claims.jti.clone(),
        keep_until_ms: (claims.expires_at + crate::auth::device::DEVICE_TOKEN_LEEWAY_SECS)
            .saturating_mul(1000),
        device_id: found.id.clone(),
        touch_at: (found.last_seen_at < now - devices::TOUCH_INTERVAL_MS).then_some(now),
    };
    Ok((found, claims.expires_at, pending))
}
