//! The push outbox: one row per (delivery, companion install), written in the delivery's
//! transaction, leased by a push worker, and finished as `SENT`, `FAILED` or `CANCELLED`.
//!
//! Leasing: a worker marks due rows with a lease token (unique per lease) and `lease_until`.
//! Another worker skips a row while its lease holds; on PostgreSQL the claiming query uses
//! `FOR UPDATE SKIP LOCKED`, so concurrent bridge instances never claim the same row, and on
//! SQLite the single writer serialises claims. A worker that dies holding a lease simply lets it
//! lapse; the row is claimed again afterwards (the only window in which a push can be sent
//! twice, always with the same collapse id).
//!
//! Lock order (as everywhere): outbox rows, then companions, then deliveries.

use sqlx::{AnyConnection, Row};

use super::{Backend, StoreError};

/// Outbox row statuses.
pub mod status {
    /// Waiting to be (re)sent.
    pub const PENDING: &str = "PENDING";
    /// The provider accepted it.
    pub const SENT: &str = "SENT";
    /// Given up (dead token, permanent error, deadline).
    pub const FAILED: &str = "FAILED";
    /// No longer needed (delivery finished or expired, install removed).
    pub const CANCELLED: &str = "CANCELLED";
}

/// A leased row with everything needed to send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leased {
    /// Outbox row.
    pub id: String,
    /// Delivery.
    pub delivery_id: String,
    /// Target install.
    pub companion_id: String,
    /// Attempts including this one.
    pub attempts: i64,
    /// `APNS` or `FCM`.
    pub platform: String,
    /// Install's push token (absent once removed).
    pub push_token: Option<String>,
    /// APNs topic / FCM app id.
    pub app_id: String,
    /// Install still receives pushes.
    pub companion_active: bool,
    /// Account.
    pub account_id: String,
    /// `SIGN_IN` or `REGISTRATION`.
    pub kind: String,
    /// Relying party id.
    pub rp_id: String,
    /// Stored display context (JSON).
    pub context: String,
    /// Signed envelope.
    pub envelope: String,
    /// Delivery status.
    pub delivery_status: String,
    /// Delivery deadline (ms).
    pub expires_at: i64,
}

/// Leases up to `limit` due rows under `lease` (a token unique to this lease) until
/// `lease_until`, and returns them with their delivery and install.
pub async fn lease(
    conn: &mut AnyConnection,
    backend: Backend,
    lease: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<Leased>, StoreError> {
    let skip_locked = match backend {
        Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE outbox SET lease_until = $2, leased_by = $3, attempts = attempts + 1, updated_at = $1
         WHERE id IN (SELECT id FROM outbox WHERE status = 'PENDING' AND next_attempt_at <= $1 AND lease_until <= $1
                      ORDER BY next_attempt_at LIMIT $4 {skip_locked})"
    )))
    .bind(now)
    .bind(lease_until)
    .bind(lease)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query(
        "SELECT o.id, o.delivery_id, o.companion_id, o.attempts, c.platform, c.push_token, c.app_id, c.active,
                d.account_id, d.kind, d.rp_id, d.context, d.envelope, d.status, d.expires_at
         FROM outbox o JOIN companions c ON c.id = o.companion_id JOIN deliveries d ON d.id = o.delivery_id
         WHERE o.leased_by = $1 AND o.status = 'PENDING'
         ORDER BY o.next_attempt_at",
    )
    .bind(lease)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Leased {
                id: r.try_get(0)?,
                delivery_id: r.try_get(1)?,
                companion_id: r.try_get(2)?,
                attempts: r.try_get(3)?,
                platform: r.try_get(4)?,
                push_token: r.try_get(5)?,
                app_id: r.try_get(6)?,
                companion_active: r.try_get::<i64, _>(7)? != 0,
                account_id: r.try_get(8)?,
                kind: r.try_get(9)?,
                rp_id: r.try_get(10)?,
                context: r.try_get(11)?,
                envelope: r.try_get(12)?,
                delivery_status: r.try_get(13)?,
                expires_at: r.try_get(14)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// `$first, $first+1, …` for `n` bind parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finishes rows of one lease with `status` (`SENT`, `FAILED`, `CANCELLED`) and `error`.
/// Rows whose lease was lost (taken over after it lapsed) are left alone.
pub async fn finish(
    conn: &mut AnyConnection,
    lease: &str,
    ids: &[&str],
    status: &str,
    error: Option<&str>,
    now: i64,
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let sql = format!(
        "UPDATE outbox SET status = $1, last_error = $2, lease_until = 0, updated_at = $3
         WHERE leased_by = $4 AND status = 'PENDING' AND id IN ({})",
        placeholders(5, ids.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(status)
        .bind(error)
        .bind(now)
        .bind(lease);
    for id in ids {
        q = q.bind(*id);
    }
    Ok(q.execute(&mut *conn).await?.rows_affected())
}

/// Releases a row of a lease for another attempt at `next_attempt_at`.
pub async fn retry_at(
    conn: &mut AnyConnection,
    lease: &str,
    id: &str,
    next_attempt_at: i64,
    error: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE outbox SET next_attempt_at = $1, last_error = $2, lease_until = 0, updated_at = $3
         WHERE id = $4 AND leased_by = $5 AND status = 'PENDING'",
    )
    .bind(next_attempt_at)
    .bind(error)
    .bind(now)
    .bind(id)
    .bind(lease)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves `QUEUED` deliveries among `ids` to `SENT`; returns those that moved.
pub async fn mark_sent(
    conn: &mut AnyConnection,
    ids: &[&str],
    now: i64,
) -> Result<Vec<String>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE deliveries SET status = 'SENT', updated_at = $1
         WHERE status = 'QUEUED' AND expires_at > $1 AND id IN ({}) RETURNING id",
        placeholders(2, ids.len())
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
    for id in ids {
        q = q.bind(*id);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}

/// Fails a `QUEUED` delivery with `reason` when none of its outbox rows is pending or sent any
/// more. Returns whether it failed.
pub async fn fail_if_exhausted(
    conn: &mut AnyConnection,
    delivery_id: &str,
    reason: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE deliveries SET status = 'FAILED', reason = $2, fido_url = NULL, updated_at = $3
         WHERE id = $1 AND status = 'QUEUED'
           AND NOT EXISTS (SELECT 1 FROM outbox WHERE delivery_id = $1 AND status IN ('PENDING', 'SENT'))",
    )
    .bind(delivery_id)
    .bind(reason)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stops pushes to an install whose token the provider declared dead — unless the app has
/// registered a new token since (`token` is the one that failed). Returns whether it changed.
pub async fn deactivate_companion(
    conn: &mut AnyConnection,
    companion_id: &str,
    token: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE companions SET active = 0, updated_at = $3 WHERE id = $1 AND push_token = $2 AND active = 1",
    )
    .bind(companion_id)
    .bind(token)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Pending rows and the age of the oldest (ms), for metrics.
pub async fn depth(conn: &mut AnyConnection, now: i64) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*), COALESCE(MIN(created_at), $1) FROM outbox WHERE status = 'PENDING'",
    )
    .bind(now)
    .fetch_one(&mut *conn)
    .await?;
    let count: i64 = row.try_get(0)?;
    let oldest: i64 = row.try_get(1)?;
    Ok((count, (now - oldest).max(0)))
}

/// All outbox rows of a delivery as (companion id, status, attempts, last error): for tests and
/// the console.
pub async fn for_delivery(
    conn: &mut AnyConnection,
    delivery_id: &str,
) -> Result<Vec<(String, String, i64, Option<String>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT companion_id, status, attempts, last_error FROM outbox WHERE delivery_id = $1 ORDER BY companion_id",
    )
    .bind(delivery_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
