//! Mutations.

use async_graphql::{Context, ID, Object, Result};

use super::types::{
    ClaimedDelivery, CompanionObject, DeliveryInput, DeliveryObject, DeliveryOutcome, DenyReason,
    DeviceObject, PairingStart, RegisterCompanionInput, StartPairingInput,
};
use super::{check_id, parts};
use crate::delivery::{self, DisplayContext, Kind, Outcome, Request};
use crate::error::ApiError;
use crate::id::rfc3339;
use crate::pairing::{self, audit_now, check_label};
use crate::store::{companions, devices};

/// Largest push token accepted (FCM tokens are about 160 bytes, APNs tokens 64 hex digits).
const MAX_PUSH_TOKEN_LEN: usize = 4096;

fn check_push_token(token: &str) -> Result<(), ApiError> {
    if token.is_empty()
        || token.len() > MAX_PUSH_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(format!(
            "pushToken must be 1 to {MAX_PUSH_TOKEN_LEN} printable ASCII characters"
        )));
    }
    Ok(())
}

fn check_app_id(app_id: &str) -> Result<(), ApiError> {
    if app_id.is_empty() || app_id.len() > 255 || !app_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "appId must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(())
}

/// Write operations.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mutation;

#[Object]
impl Mutation {
    /// Registers this companion install's push token. A token registered by another account
    /// moves here (the move is audited).
    async fn register_companion(
        &self,
        ctx: &Context<'_>,
        input: RegisterCompanionInput,
    ) -> Result<CompanionObject> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        check_push_token(&input.push_token)?;
        check_app_id(&input.app_id)?;
        let display_name = check_label("displayName", &input.display_name)?;
        let now = state.now_ms();
        let mut tx = state.store.begin_write().await.map_err(ApiError::from)?;
        let existing = companions::list(&mut tx.tx, &account.id)
            .await
            .map_err(ApiError::from)?;
        let already = existing
            .iter()
            .any(|c| c.push_token.as_deref() == Some(input.push_token.as_str()));
        if !already && existing.len() >= state.config.limits.companions_per_account as usize {
            return Err(ApiError::invalid(
                "the account has the most companion installs allowed: remove one first",
            )
            .into());
        }
        let registered = companions::register(
            &mut tx.tx,
            &account.id,
            input.platform.as_str(),
            &input.push_token,
            &input.app_id,
            &display_name,
            now,
        )
        .await
        .map_err(ApiError::from)?;
        audit_token(
            &mut tx.tx,
            now,
            &account.id,
            caller,
            "companion.register",
            &registered.companion.id,
            registered.moved_from.as_deref(),
        )
        .await?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(registered.companion.into())
    }

    /// Replaces an install's push token (providers rotate them).
    async fn update_push_token(
        &self,
        ctx: &Context<'_>,
        id: ID,
        push_token: String,
    ) -> Result<CompanionObject> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let id = check_id("cmp", &id, "companion")?;
        check_push_token(&push_token)?;
        let now = state.now_ms();
        let mut tx = state.store.begin_write().await.map_err(ApiError::from)?;
        let Some(updated) =
            companions::update_token(&mut tx.tx, &account.id, &id, &push_token, now)
                .await
                .map_err(ApiError::from)?
        else {
            return Err(ApiError::not_found("companion").into());
        };
        audit_token(
            &mut tx.tx,
            now,
            &account.id,
            caller,
            "companion.token_update",
            &id,
            updated.moved_from.as_deref(),
        )
        .await?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(updated.companion.into())
    }

    /// Removes a companion install; it receives no more pushes.
    async fn remove_companion(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let id = check_id("cmp", &id, "companion")?;
        let mut tx = state.store.begin_write().await.map_err(ApiError::from)?;
        if !companions::remove(&mut tx.tx, &account.id, &id, state.now_ms())
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::not_found("companion").into());
        }
        audit_success(
            &mut tx.tx,
            state.now_ms(),
            &account.id,
            &account.id,
            caller,
            "companion.remove",
            Some(id),
        )
        .await?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(true)
    }

    /// A device starts pairing (no account yet; the proof shows it holds the key).
    async fn start_pairing(
        &self,
        ctx: &Context<'_>,
        input: StartPairingInput,
    ) -> Result<PairingStart> {
        let (state, caller) = parts(ctx)?;
        let started = pairing::start(
            state,
            &caller.meta,
            &input.public_key,
            &input.proof,
            &input.name,
            &input.model,
        )
        .await?;
        Ok(PairingStart {
            pairing_id: ID(started.pairing.id),
            device_id: ID(started.pairing.device_id),
            code: started.code,
            expires_at: rfc3339(started.pairing.expires_at),
        })
    }

    /// A companion confirms the code a device showed, binding the device to the account.
    async fn confirm_pairing(
        &self,
        ctx: &Context<'_>,
        code: String,
        name: Option<String>,
    ) -> Result<DeviceObject> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        Ok(
            pairing::confirm(state, &caller.meta, &account, &code, name.as_deref())
                .await?
                .into(),
        )
    }

    /// Renames a device.
    async fn rename_device(&self, ctx: &Context<'_>, id: ID, name: String) -> Result<DeviceObject> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let id = check_id("dev", &id, "device")?;
        let name = check_label("name", &name)?;
        let mut conn = state.store.pool().acquire().await.map_err(ApiError::from)?;
        if !devices::rename(&mut conn, &account.id, &id, &name)
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::not_found("device").into());
        }
        let d = devices::get(&mut conn, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("device"))?;
        Ok(d.into())
    }

    /// Revokes a device: its next call fails.
    async fn revoke_device(&self, ctx: &Context<'_>, id: ID) -> Result<DeviceObject> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let id = check_id("dev", &id, "device")?;
        let mut tx = state.store.begin_write().await.map_err(ApiError::from)?;
        let current = devices::get(&mut tx.tx, &id)
            .await
            .map_err(ApiError::from)?;
        let Some(current) =
            current.filter(|d| d.account_id.as_deref() == Some(account.id.as_str()))
        else {
            return Err(ApiError::not_found("device").into());
        };
        if !devices::revoke(&mut tx.tx, &account.id, &id, state.now_ms())
            .await
            .map_err(ApiError::from)?
        {
            return Err(ApiError::invalid(format!(
                "device is {}, not active",
                current.status.to_lowercase()
            ))
            .into());
        }
        audit_success(
            &mut tx.tx,
            state.now_ms(),
            &account.id,
            &account.id,
            caller,
            "device.revoke",
            Some(id.clone()),
        )
        .await?;
        let d = devices::get(&mut tx.tx, &id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("device"))?;
        tx.commit().await.map_err(ApiError::from)?;
        Ok(d.into())
    }

    /// A device asks the account's phones to sign the user in.
    async fn request_sign_in(
        &self,
        ctx: &Context<'_>,
        input: DeliveryInput,
    ) -> Result<DeliveryObject> {
        request(ctx, Kind::SignIn, input).await
    }

    /// A device asks the account's phones to register a passkey.
    async fn request_registration(
        &self,
        ctx: &Context<'_>,
        input: DeliveryInput,
    ) -> Result<DeliveryObject> {
        request(ctx, Kind::Registration, input).await
    }

    /// A companion takes the FIDO URL of a delivery (once, before expiry).
    async fn claim_delivery(
        &self,
        ctx: &Context<'_>,
        id: ID,
        companion_id: Option<ID>,
    ) -> Result<ClaimedDelivery> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let id = check_id("dlv", &id, "delivery")?;
        let companion_id = companion_id
            .map(|c| check_id("cmp", &c, "companion"))
            .transpose()?;
        let (d, url) =
            delivery::claim(state, &caller.meta, &account, &id, companion_id.as_deref()).await?;
        Ok(ClaimedDelivery {
            delivery: d.into(),
            fido_url: url,
        })
    }

    /// A companion declines a delivery.
    async fn deny_delivery(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(default_with = "DenyReason::Declined")] reason: DenyReason,
    ) -> Result<DeliveryObject> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let id = check_id("dlv", &id, "delivery")?;
        let reason = match reason {
            DenyReason::Declined => delivery::DenyReason::Declined,
            DenyReason::NotMe => delivery::DenyReason::NotMe,
        };
        Ok(delivery::deny(state, &caller.meta, &account, &id, reason)
            .await?
            .into())
    }

    /// The device reports how its session ended.
    async fn complete_delivery(
        &self,
        ctx: &Context<'_>,
        id: ID,
        outcome: DeliveryOutcome,
    ) -> Result<DeliveryObject> {
        let (state, caller) = parts(ctx)?;
        let device = caller.device(state, false).await?;
        let id = check_id("dlv", &id, "delivery")?;
        let outcome = match outcome {
            DeliveryOutcome::Success => Outcome::Success,
            DeliveryOutcome::Cancelled => Outcome::Cancelled,
            DeliveryOutcome::PhoneNotFound => Outcome::PhoneNotFound,
            DeliveryOutcome::TunnelFailed => Outcome::TunnelFailed,
            DeliveryOutcome::AuthenticatorError => Outcome::AuthenticatorError,
        };
        Ok(
            delivery::complete(state, &caller.meta, &device, &id, outcome)
                .await?
                .into(),
        )
    }
}

/// Audits a push token registration or update: `event` normally, or `companion.token_moved` in
/// both accounts when the token was taken from another account.
async fn audit_token(
    conn: &mut sqlx::AnyConnection,
    now: i64,
    account: &str,
    caller: &crate::principal::Caller,
    event: &str,
    companion: &str,
    moved_from: Option<&str>,
) -> Result<(), ApiError> {
    let Some(from) = moved_from else {
        return audit_success(
            conn,
            now,
            account,
            account,
            caller,
            event,
            Some(companion.to_owned()),
        )
        .await;
    };
    let detail = format!("{companion} (token moved from account {from})");
    audit_success(
        conn,
        now,
        account,
        account,
        caller,
        "companion.token_moved",
        Some(detail),
    )
    .await?;
    let notice = "a push token of this account was registered by another account".to_owned();
    audit_success(
        conn,
        now,
        from,
        account,
        caller,
        "companion.token_moved",
        Some(notice),
    )
    .await
}

/// Audits a successful change made by an account's companion. `subject` is the account the entry
/// belongs to (another account when a push token moved away from it).
async fn audit_success(
    conn: &mut sqlx::AnyConnection,
    now: i64,
    subject: &str,
    actor_account: &str,
    caller: &crate::principal::Caller,
    event: &str,
    detail: Option<String>,
) -> Result<(), ApiError> {
    crate::store::audit::append(
        conn,
        now,
        &crate::store::audit::NewEntry {
            account_id: Some(subject),
            actor: &format!("account:{actor_account}"),
            event,
            client_addr: caller.meta.client_addr.as_deref(),
            outcome: "success",
            detail,
        },
    )
    .await
    .map_err(ApiError::from)
}

async fn request(ctx: &Context<'_>, kind: Kind, input: DeliveryInput) -> Result<DeliveryObject> {
    let (state, caller) = parts(ctx)?;
    // The token id is recorded in the delivery's own transaction (one write per request), or
    // on its own by `settle` whenever that transaction did not commit.
    let (device, mut token) = caller.device_for_write(state, false).await?;
    let context = input.context.map(|c| DisplayContext {
        origin: c.origin,
        user_name: c.user_name,
    });
    let result = delivery::request(
        state,
        &caller.meta,
        &device,
        &mut token,
        Request {
            kind,
            fido_url: &input.fido_url,
            rp_id: &input.rp_id,
            idempotency_key: &input.idempotency_key,
            context: context.unwrap_or_default(),
        },
    )
    .await;
    token.settle(state, &caller.meta).await?;
    let d = result?;
    let _ = audit_now;
    Ok(d.into())
}
