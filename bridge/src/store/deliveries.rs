//! Deliveries (one sign-in or registration request pushed to an account's phones) and their
//! outbox rows.

use sqlx::{AnyConnection, Executor as _, Row};

use super::audit::NewEntry;
use super::{Backend, StoreError};

/// Delivery statuses.
pub mod status {
    /// Stored; pushes not yet sent.
    pub const QUEUED: &str = "QUEUED";
    /// At least one push went out.
    pub const SENT: &str = "SENT";
    /// A companion took the FIDO URL.
    pub const CLAIMED: &str = "CLAIMED";
    /// The device reported success.
    pub const COMPLETED: &str = "COMPLETED";
    /// The user declined on the phone.
    pub const DENIED: &str = "DENIED";
    /// Five minutes passed.
    pub const EXPIRED: &str = "EXPIRED";
    /// Failed for the stated reason.
    pub const FAILED: &str = "FAILED";
}

/// A delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Id.
    pub id: String,
    /// Account.
    pub account_id: String,
    /// Requesting device.
    pub device_id: String,
    /// `SIGN_IN` or `REGISTRATION`.
    pub kind: String,
    /// Relying party id.
    pub rp_id: String,
    /// The device's idempotency key.
    pub idempotency_key: String,
    /// Two-digit number shown on both screens... or spoken by the device.
    pub number_code: String,
    /// Display context (JSON).
    pub context: String,
    /// The signed envelope.
    pub envelope: String,
    /// Status.
    pub status: String,
    /// Why it failed or was denied.
    pub reason: Option<String>,
    /// Created (ms).
    pub created_at: i64,
    /// Expires (ms): created + 300 s.
    pub expires_at: i64,
    /// Last status change (ms).
    pub updated_at: i64,
}

const COLUMNS: &str = "id, account_id, device_id, kind, rp_id, idempotency_key, number_code, context, envelope, status, reason, created_at, expires_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Delivery, sqlx::Error> {
    Ok(Delivery {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        device_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        rp_id: r.try_get(4)?,
        idempotency_key: r.try_get(5)?,
        number_code: r.try_get(6)?,
        context: r.try_get(7)?,
        envelope: r.try_get(8)?,
        status: r.try_get(9)?,
        reason: r.try_get(10)?,
        created_at: r.try_get(11)?,
        expires_at: r.try_get(12)?,
        updated_at: r.try_get(13)?,
    })
}

/// A new delivery with its FIDO URL.
#[derive(Debug)]
pub struct NewDelivery<'a> {
    /// The delivery (status `QUEUED`).
    pub delivery: &'a Delivery,
    /// The FIDO URL, kept until claimed or expired.
    pub fido_url: &'a str,
}

/// The device token use recorded with a delivery (see `principal::TokenUse`).
#[derive(Debug, Clone, Copy)]
pub struct TokenRecord<'a> {
    /// The token's `jti`.
    pub jti: &'a str,
    /// Keep the id until then (ms).
    pub keep_until_ms: i64,
    /// Also refresh the device's last-seen time to this (ms).
    pub touch_at: Option<i64>,
}

/// What [`insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The token id was new (false: a replay — roll back).
    pub token_fresh: bool,
    /// Outbox rows written (0: the account has no install to push to — roll back).
    pub outbox_rows: u64,
}

/// Stores a delivery, one outbox row per active companion install of its account (with a
/// push token), the token id that authorized it and its audit entry, in the caller's
/// transaction. The caller rolls back unless the token was fresh and at least one outbox row
/// was written; a unique violation means the idempotency key was used before.
///
/// On SQLite all of it is one multi-statement round trip to the database thread (the single
/// writer is the bottleneck of the embedded setup); on PostgreSQL the same statements run one
/// by one.
pub async fn insert(
    conn: &mut AnyConnection,
    backend: Backend,
    new: &NewDelivery<'_>,
    token: Option<TokenRecord<'_>>,
    audit: &NewEntry<'_>,
) -> Result<Inserted, StoreError> {
    let d = new.delivery;
    let statements = [
        "INSERT INTO device_token_ids (jti, expires_at) VALUES ($16, $17) ON CONFLICT (jti) DO NOTHING",
        "INSERT INTO deliveries (id, account_id, device_id, kind, rp_id, idempotency_key, number_code, context, envelope, status, reason, created_at, expires_at, updated_at, fido_url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        // One statement for every install; row ids derive from the delivery and the install.
        "INSERT INTO outbox (id, delivery_id, companion_id, status, attempts, next_attempt_at, created_at, updated_at)
         SELECT 'obx_' || $1 || '_' || id, $1, id, 'PENDING', 0, $12, $12, $12
         FROM companions WHERE account_id = $2 AND active = 1 AND push_token IS NOT NULL",
        "INSERT INTO audit_log (at, account_id, actor, event, client_addr, outcome, detail)
         VALUES ($12, $2, $18, $19, $20, $21, $22)",
        "UPDATE devices SET last_seen_at = $23 WHERE id = $3 AND last_seen_at < $23",
    ];
    // Statement 0 only with a token, statement 4 only with a touch.
    let chosen: Vec<usize> = (0..statements.len())
        .filter(|&i| match i {
            0 => token.is_some(),
            4 => token.is_some_and(|t| t.touch_at.is_some()),
            _ => true,
        })
        .collect();
    let bind = |sql: String| {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&d.id)
            .bind(&d.account_id)
            .bind(&d.device_id)
            .bind(&d.kind)
            .bind(&d.rp_id)
            .bind(&d.idempotency_key)
            .bind(&d.number_code)
            .bind(&d.context)
            .bind(&d.envelope)
            .bind(&d.status)
            .bind(d.reason.as_deref())
            .bind(d.created_at)
            .bind(d.expires_at)
            .bind(d.updated_at)
            .bind(new.fido_url)
            .bind(token.map(|t| t.jti))
            .bind(token.map(|t| t.keep_until_ms))
            .bind(audit.actor)
            .bind(audit.event)
            .bind(audit.client_addr)
            .bind(audit.outcome)
            .bind(audit.detail.as_deref())
            .bind(token.and_then(|t| t.touch_at))
    };
    let mut affected = Vec::with_capacity(chosen.len());
    match backend {
        Backend::Sqlite => {
            use futures_util::TryStreamExt as _;
            let sql = chosen
                .iter()
                .map(|&i| statements[i])
                .collect::<Vec<_>>()
                .join(";\n");
            let query = bind(sql);
            let mut results = conn.execute_many(query);
            while let Some(r) = results.try_next().await? {
                affected.push(r.rows_affected());
            }
        }
        Backend::Postgres => {
            // PostgreSQL prepares each statement: send only the parameters it uses, renumbered.
            for &i in &chosen {
                let (sql, params) = renumber(statements[i]);
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for p in params {
                    q = bind_param(q, p, d, new, token, audit);
                }
                affected.push(q.execute(&mut *conn).await?.rows_affected());
            }
        }
    }
    let at = |stmt: usize| {
        chosen
            .iter()
            .position(|&i| i == stmt)
            .and_then(|p| affected.get(p).copied())
            .unwrap_or(0)
    };
    Ok(Inserted {
        token_fresh: token.is_none() || at(0) == 1,
        outbox_rows: at(2),
    })
}

/// Rewrites `$n` parameters to `$1…` in order of first use; returns the SQL and the original
/// numbers.
fn renumber(sql: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(sql.len());
    let mut order: Vec<usize> = Vec::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len() && bytes[end].is_ascii_digit() {
                end += 1;
            }
            if let Ok(n) = sql[start..end].parse::<usize>() {
                let idx = match order.iter().position(|&x| x == n) {
                    Some(p) => p + 1,
                    None => {
                        order.push(n);
                        order.len()
                    }
                };
                out.push('$');
                out.push_str(&idx.to_string());
                i = end;
                continue;
            }
        }
        out.push(char::from(bytes[i]));
        i += 1;
    }
    (out, order)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

fn bind_param<'q>(
    q: AnyQuery<'q>,
    param: usize,
    d: &'q Delivery,
    new: &'q NewDelivery<'_>,
    token: Option<TokenRecord<'q>>,
    audit: &'q NewEntry<'_>,
) -> AnyQuery<'q> {
    match param {
        1 => q.bind(&d.id),
        2 => q.bind(&d.account_id),
        3 => q.bind(&d.device_id),
        4 => q.bind(&d.kind),
        5 => q.bind(&d.rp_id),
        6 => q.bind(&d.idempotency_key),
        7 => q.bind(&d.number_code),
        8 => q.bind(&d.context),
        9 => q.bind(&d.envelope),
        10 => q.bind(&d.status),
        11 => q.bind(d.reason.clone()),
        12 => q.bind(d.created_at),
        13 => q.bind(d.expires_at),
        14 => q.bind(d.updated_at),
        15 => q.bind(new.fido_url.to_owned()),
        16 => q.bind(token.map(|t| t.jti.to_owned())),
        17 => q.bind(token.map(|t| t.keep_until_ms)),
        18 => q.bind(audit.actor.to_owned()),
        19 => q.bind(audit.event.to_owned()),
        20 => q.bind(audit.client_addr.map(str::to_owned)),
        21 => q.bind(audit.outcome.to_owned()),
        22 => q.bind(audit.detail.clone()),
        _ => q.bind(token.and_then(|t| t.touch_at)),
    }
}

/// A delivery by id.
pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Delivery>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deliveries WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// The delivery a device made with an idempotency key.
pub async fn by_idempotency_key(
    conn: &mut AnyConnection,
    device_id: &str,
    key: &str,
) -> Result<Option<Delivery>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deliveries WHERE device_id = $1 AND idempotency_key = $2"
    )))
    .bind(device_id)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// The FIDO URL of a delivery, if still held.
pub async fn fido_url(conn: &mut AnyConnection, id: &str) -> Result<Option<String>, StoreError> {
    let row = sqlx::query("SELECT fido_url FROM deliveries WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(match row {
        Some(r) => r.try_get(0)?,
        None => None,
    })
}

/// Moves a delivery from one of `from` to `to`, if it has not expired. Erases the FIDO URL when
/// `erase_url`. `false` if the delivery was not in one of those states (a lost race or a
/// repeated call).
#[allow(clippy::too_many_arguments)]
pub async fn transition(
    conn: &mut AnyConnection,
    id: &str,
    from: &[&str],
    to: &str,
    reason: Option<&str>,
    claimed_by: Option<&str>,
    erase_url: bool,
    now: i64,
) -> Result<bool, StoreError> {
    // `from` holds our own constants only; never user input.
    let states = from
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE deliveries SET status = $2, reason = COALESCE($3, reason), claimed_by = COALESCE($4, claimed_by),
             fido_url = CASE WHEN $5 = 1 THEN NULL ELSE fido_url END, updated_at = $6
         WHERE id = $1 AND status IN ({states}) AND expires_at > $6"
    )))
    .bind(id)
    .bind(to)
    .bind(reason)
    .bind(claimed_by)
    .bind(i64::from(erase_url))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The account's deliveries still waiting for a companion (pull fallback), newest first.
pub async fn pending(
    conn: &mut AnyConnection,
    account_id: &str,
    now: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deliveries WHERE account_id = $1 AND status IN ('QUEUED', 'SENT') AND expires_at > $2
         ORDER BY created_at DESC LIMIT 50"
    )))
    .bind(account_id)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Expires open deliveries past their deadline and erases their URLs; returns them as they were.
///
/// Lock order, here and in every writer that touches both tables: outbox rows first, then the
/// delivery row. Concurrent sweepers and push workers therefore cannot deadlock.
pub async fn expire(conn: &mut AnyConnection, now: i64) -> Result<Vec<Delivery>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM deliveries WHERE status IN ('QUEUED', 'SENT', 'CLAIMED') AND expires_at <= $1 ORDER BY id"
    )))
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let candidates: Vec<Delivery> = rows.iter().map(from_row).collect::<Result<_, _>>()?;
    if candidates.is_empty() {
        return Ok(candidates);
    }
    sqlx::query(
        "UPDATE outbox SET status = 'CANCELLED', updated_at = $1 WHERE status = 'PENDING' AND delivery_id IN
             (SELECT id FROM deliveries WHERE status IN ('QUEUED', 'SENT', 'CLAIMED') AND expires_at <= $1)",
    )
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let mut expired = Vec::with_capacity(candidates.len());
    for d in candidates {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'EXPIRED', reason = 'EXPIRED', fido_url = NULL, updated_at = $2
             WHERE id = $1 AND status IN ('QUEUED', 'SENT', 'CLAIMED')",
        )
        .bind(&d.id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        // Zero rows: another sweeper got there first.
        if done.rows_affected() == 1 {
            expired.push(d);
        }
    }
    Ok(expired)
}

/// Erases URLs of finished deliveries that still hold one (defence in depth).
pub async fn erase_finished_urls(conn: &mut AnyConnection) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE deliveries SET fido_url = NULL WHERE fido_url IS NOT NULL AND status NOT IN ('QUEUED', 'SENT')",
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// An outbox row due for sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id.
    pub id: String,
    /// Delivery.
    pub delivery_id: String,
    /// Target install.
    pub companion_id: String,
    /// Attempts so far.
    pub attempts: i64,
}

/// Leases up to `limit` due rows to `worker` until `lease_until`.
pub async fn lease_outbox(
    conn: &mut AnyConnection,
    worker: &str,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, delivery_id, companion_id, attempts FROM outbox
         WHERE status = 'PENDING' AND next_attempt_at <= $1 AND lease_until <= $1
         ORDER BY next_attempt_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut leased = Vec::with_capacity(rows.len());
    for r in &rows {
        let row = OutboxRow {
            id: r.try_get(0)?,
            delivery_id: r.try_get(1)?,
            companion_id: r.try_get(2)?,
            attempts: r.try_get(3)?,
        };
        let done = sqlx::query(
            "UPDATE outbox SET lease_until = $2, leased_by = $3, attempts = attempts + 1, updated_at = $4
             WHERE id = $1 AND status = 'PENDING' AND lease_until <= $4",
        )
        .bind(&row.id)
        .bind(lease_until)
        .bind(worker)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            leased.push(row);
        }
    }
    Ok(leased)
}

/// Records a sent push.
pub async fn outbox_sent(conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE outbox SET status = 'SENT', lease_until = 0, updated_at = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
