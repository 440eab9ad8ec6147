//! Screenless devices: their public keys, names and lifecycle.

use sqlx::{AnyConnection, Row};

use super::StoreError;
use crate::id;

/// Device lifecycle states.
pub mod status {
    /// Pairing started, not confirmed.
    pub const PENDING: &str = "PENDING";
    /// Bound to an account.
    pub const ACTIVE: &str = "ACTIVE";
    /// Revoked by the account.
    pub const REVOKED: &str = "REVOKED";
    /// Expired after inactivity.
    pub const EXPIRED: &str = "EXPIRED";
}

/// A device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Id (also the `kid` of its tokens).
    pub id: String,
    /// Owning account, once paired.
    pub account_id: Option<String>,
    /// Uncompressed P-256 public key (65 bytes).
    pub public_key: Vec<u8>,
    /// Name.
    pub name: String,
    /// Model.
    pub model: String,
    /// Lifecycle state.
    pub status: String,
    /// Created (ms).
    pub created_at: i64,
    /// Last authenticated call (ms).
    pub last_seen_at: i64,
}

const COLUMNS: &str = "id, account_id, public_key, name, model, status, created_at, last_seen_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Device, sqlx::Error> {
    Ok(Device {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        public_key: r.try_get(2)?,
        name: r.try_get(3)?,
        model: r.try_get(4)?,
        status: r.try_get(5)?,
        created_at: r.try_get(6)?,
        last_seen_at: r.try_get(7)?,
    })
}

/// A device by id.
pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Device>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM devices WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// A device by public key.
pub async fn by_public_key(
    conn: &mut AnyConnection,
    key: &[u8],
) -> Result<Option<Device>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM devices WHERE public_key = $1"
    )))
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Creates a pending device, or refreshes a pending one with the same key.
pub async fn upsert_pending(
    conn: &mut AnyConnection,
    public_key: &[u8],
    name: &str,
    model: &str,
    now: i64,
) -> Result<Result<Device, Device>, StoreError> {
    if let Some(existing) = by_public_key(conn, public_key).await? {
        if existing.status != status::PENDING {
            return Ok(Err(existing));
        }
        sqlx::query("UPDATE devices SET name = $2, model = $3, last_seen_at = $4 WHERE id = $1")
            .bind(&existing.id)
            .bind(name)
            .bind(model)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        return Ok(Ok(get(conn, &existing.id)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?));
    }
    let id = id::new("dev");
    sqlx::query(
        "INSERT INTO devices (id, account_id, public_key, name, model, status, created_at, last_seen_at)
         VALUES ($1, NULL, $2, $3, $4, 'PENDING', $5, $5)",
    )
    .bind(&id)
    .bind(public_key)
    .bind(name)
    .bind(model)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(Ok(get(conn, &id).await?.ok_or(sqlx::Error::RowNotFound)?))
}

/// Binds a pending device to an account under `name`.
pub async fn activate(
    conn: &mut AnyConnection,
    id: &str,
    account_id: &str,
    name: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE devices SET account_id = $2, name = $3, status = 'ACTIVE', last_seen_at = $4
         WHERE id = $1 AND status = 'PENDING'",
    )
    .bind(id)
    .bind(account_id)
    .bind(name)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The account's devices, newest first.
pub async fn list(conn: &mut AnyConnection, account_id: &str) -> Result<Vec<Device>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM devices WHERE account_id = $1 ORDER BY created_at DESC, id"
    )))
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Counts the account's active devices.
pub async fn count_active(conn: &mut AnyConnection, account_id: &str) -> Result<i64, StoreError> {
    let row =
        sqlx::query("SELECT COUNT(*) FROM devices WHERE account_id = $1 AND status = 'ACTIVE'")
            .bind(account_id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(row.try_get(0)?)
}

/// Renames an active device of the account; `false` if there is none.
pub async fn rename(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    name: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE devices SET name = $3 WHERE id = $1 AND account_id = $2")
        .bind(id)
        .bind(account_id)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes a device of the account; `false` if there is none or it is not active.
pub async fn revoke(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE devices SET status = 'REVOKED', revoked_at = $3 WHERE id = $1 AND account_id = $2 AND status = 'ACTIVE'",
    )
    .bind(id)
    .bind(account_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Last-seen times are written at most this often per device (inactivity expiry counts days).
pub const TOUCH_INTERVAL_MS: i64 = 60_000;

/// Records that a device was seen (at most once per [`TOUCH_INTERVAL_MS`]).
pub async fn touch(conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE devices SET last_seen_at = $2 WHERE id = $1 AND last_seen_at < $3")
        .bind(id)
        .bind(now)
        .bind(now - TOUCH_INTERVAL_MS)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Expires active devices not seen since `cutoff`; returns (device id, account id) of each.
pub async fn expire_inactive(
    conn: &mut AnyConnection,
    cutoff: i64,
) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, account_id FROM devices WHERE status = 'ACTIVE' AND last_seen_at < $1",
    )
    .bind(cutoff)
    .fetch_all(&mut *conn)
    .await?;
    let expired: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    sqlx::query(
        "UPDATE devices SET status = 'EXPIRED' WHERE status = 'ACTIVE' AND last_seen_at < $1",
    )
    .bind(cutoff)
    .execute(&mut *conn)
    .await?;
    Ok(expired)
}

/// Records a device token id; `false` if it was seen before (a replay).
pub async fn record_token_id(
    conn: &mut AnyConnection,
    jti: &str,
    expires_at: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO device_token_ids (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets token ids that have expired (they can no longer be replayed).
pub async fn prune_token_ids(conn: &mut AnyConnection, now: i64) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM device_token_ids WHERE expires_at < $1")
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}
