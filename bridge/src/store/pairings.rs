//! Pairing codes: how a screenless device joins an account.

use sqlx::{AnyConnection, Row};

use super::StoreError;
use crate::id;

/// A pairing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pairing {
    /// Id.
    pub id: String,
    /// The device being paired.
    pub device_id: String,
    /// `PENDING`, `CONFIRMED` or `EXPIRED`.
    pub status: String,
    /// The account that confirmed it.
    pub account_id: Option<String>,
    /// Expiry (ms).
    pub expires_at: i64,
}

const COLUMNS: &str = "id, device_id, status, account_id, expires_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Pairing, sqlx::Error> {
    Ok(Pairing {
        id: r.try_get(0)?,
        device_id: r.try_get(1)?,
        status: r.try_get(2)?,
        account_id: r.try_get(3)?,
        expires_at: r.try_get(4)?,
    })
}

/// Starts a pairing; earlier pending pairings of the device end.
pub async fn create(
    conn: &mut AnyConnection,
    device_id: &str,
    code_hash: &[u8],
    now: i64,
    expires_at: i64,
) -> Result<Pairing, StoreError> {
    sqlx::query(
        "UPDATE pairings SET status = 'EXPIRED' WHERE device_id = $1 AND status = 'PENDING'",
    )
    .bind(device_id)
    .execute(&mut *conn)
    .await?;
    let id = id::new("par");
    sqlx::query(
        "INSERT INTO pairings (id, device_id, code_hash, status, created_at, expires_at)
         VALUES ($1, $2, $3, 'PENDING', $4, $5)",
    )
    .bind(&id)
    .bind(device_id)
    .bind(code_hash)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *conn)
    .await?;
    get(conn, &id)
        .await?
        .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
}

/// A pairing by id.
pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Pairing>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM pairings WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Pending, unexpired pairings whose code hash matches (the caller compares in constant time).
pub async fn pending_by_code(
    conn: &mut AnyConnection,
    code_hash: &[u8],
    now: i64,
) -> Result<Vec<(Pairing, Vec<u8>)>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, code_hash FROM pairings WHERE code_hash = $1 AND status = 'PENDING' AND expires_at > $2"
    )))
    .bind(code_hash)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((from_row(r)?, r.try_get::<Vec<u8>, _>(5)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Whether a pending, unexpired pairing already uses this code hash.
pub async fn code_in_use(
    conn: &mut AnyConnection,
    code_hash: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    Ok(!pending_by_code(conn, code_hash, now).await?.is_empty())
}

/// Marks a pending pairing confirmed by `account_id`; `false` if it was no longer pending.
pub async fn confirm(
    conn: &mut AnyConnection,
    id: &str,
    account_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE pairings SET status = 'CONFIRMED', account_id = $2, confirmed_at = $3
         WHERE id = $1 AND status = 'PENDING' AND expires_at > $3",
    )
    .bind(id)
    .bind(account_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Expires pending pairings past their time; returns their ids.
pub async fn expire(conn: &mut AnyConnection, now: i64) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query("SELECT id FROM pairings WHERE status = 'PENDING' AND expires_at <= $1")
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    sqlx::query(
        "UPDATE pairings SET status = 'EXPIRED' WHERE status = 'PENDING' AND expires_at <= $1",
    )
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(ids)
}
