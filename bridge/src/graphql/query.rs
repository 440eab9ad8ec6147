//! Queries.

use async_graphql::{Context, ID, Object, Result};

use super::types::{
    AccountObject, AuditPage, CompanionObject, DeliveryObject, DeviceObject, PairingObject,
};
use super::{check_id, parts};
use crate::error::ApiError;
use crate::store::{audit, companions, devices};

/// Read operations.
#[derive(Debug, Default, Clone, Copy)]
pub struct Query;

#[Object]
impl Query {
    /// The calling companion's account.
    async fn account(&self, ctx: &Context<'_>) -> Result<AccountObject> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        Ok(AccountObject { id: ID(account.id) })
    }

    /// The account's companion installs.
    async fn companions(&self, ctx: &Context<'_>) -> Result<Vec<CompanionObject>> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let mut conn = state.store.pool().acquire().await.map_err(ApiError::from)?;
        let list = companions::list(&mut conn, &account.id)
            .await
            .map_err(ApiError::from)?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// The account's devices, newest first.
    async fn devices(&self, ctx: &Context<'_>) -> Result<Vec<DeviceObject>> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let mut conn = state.store.pool().acquire().await.map_err(ApiError::from)?;
        let list = devices::list(&mut conn, &account.id)
            .await
            .map_err(ApiError::from)?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// One device of the account.
    async fn device(&self, ctx: &Context<'_>, id: ID) -> Result<DeviceObject> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let id = check_id("dev", &id, "device")?;
        let mut conn = state.store.pool().acquire().await.map_err(ApiError::from)?;
        match devices::get(&mut conn, &id).await.map_err(ApiError::from)? {
            Some(d) if d.account_id.as_deref() == Some(account.id.as_str()) => Ok(d.into()),
            _ => Err(ApiError::not_found("device").into()),
        }
    }

    /// Deliveries waiting for this account's companions (for apps with pushes turned off).
    async fn pending_deliveries(&self, ctx: &Context<'_>) -> Result<Vec<DeliveryObject>> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let list = crate::delivery::pending(state, &account).await?;
        Ok(list.into_iter().map(Into::into).collect())
    }

    /// A delivery: the requesting device's own, or any of a companion's account.
    async fn delivery(&self, ctx: &Context<'_>, id: ID) -> Result<DeliveryObject> {
        let (state, caller) = parts(ctx)?;
        let id = check_id("dlv", &id, "delivery")?;
        let d = if caller.meta.token.as_deref().is_some_and(is_device_token) {
            let device = caller.device(state, false).await?;
            crate::delivery::get_for_device(state, &device, &id).await?
        } else {
            let account = caller.companion(state).await?;
            crate::delivery::get_for_account(state, &account.id, &id).await?
        };
        Ok(d.into())
    }

    /// A pairing of the calling device (its status while the user enters the code).
    async fn pairing(&self, ctx: &Context<'_>, id: ID) -> Result<PairingObject> {
        let (state, caller) = parts(ctx)?;
        let device = caller.device(state, true).await?;
        let id = check_id("par", &id, "pairing")?;
        Ok(crate::pairing::get_for_device(state, &device, &id)
            .await?
            .into())
    }

    /// The account's audit log, newest first.
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, validator(minimum = 1, maximum = 100))] first: i32,
        after: Option<String>,
    ) -> Result<AuditPage> {
        let (state, caller) = parts(ctx)?;
        let account = caller.companion(state).await?;
        let before =
            match after {
                Some(cursor) => Some(cursor.parse::<i64>().map_err(|_| {
                    ApiError::invalid("after must be a cursor from a previous page")
                })?),
                None => None,
            };
        let limit = i64::from(first);
        let mut conn = state.store.pool().acquire().await.map_err(ApiError::from)?;
        let entries = audit::list(&mut conn, &account.id, before, limit + 1)
            .await
            .map_err(ApiError::from)?;
        let more = entries.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        let entries: Vec<_> = entries
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .collect();
        let next_cursor = more
            .then(|| entries.last().map(|e| e.id.to_string()))
            .flatten();
        Ok(AuditPage {
            entries: entries.into_iter().map(Into::into).collect(),
            next_cursor,
        })
    }
}

/// Whether a bearer token is a device token (its `kid` is a device id).
pub(crate) fn is_device_token(token: &str) -> bool {
    crate::auth::device::unverified_kid(token).is_ok_and(|kid| crate::id::is_valid("dev", &kid))
}
