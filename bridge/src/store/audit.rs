//! The audit log: every security event, append-only.

use sqlx::{AnyConnection, Row};

use super::StoreError;

/// One audit entry to write.
#[derive(Clone, Debug, Default)]
pub struct NewEntry<'a> {
    /// Account concerned, if known.
    pub account_id: Option<&'a str>,
    /// Who acted: `device:<id>`, `companion:<id>`, `account:<id>`, `address:<ip>` or `system`.
    pub actor: &'a str,
    /// What happened, e.g. `delivery.claim`.
    pub event: &'a str,
    /// Client address, if the event came from a request.
    pub client_addr: Option<&'a str>,
    /// `success`, `failure` or `denied`.
    pub outcome: &'a str,
    /// Extra detail (no secrets).
    pub detail: Option<String>,
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number (pagination cursor).
    pub id: i64,
    /// Time (ms).
    pub at: i64,
    /// Account.
    pub account_id: Option<String>,
    /// Actor.
    pub actor: String,
    /// Event.
    pub event: String,
    /// Client address.
    pub client_addr: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Detail.
    pub detail: Option<String>,
}

/// Appends an entry.
pub async fn append(
    conn: &mut AnyConnection,
    now: i64,
    e: &NewEntry<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (at, account_id, actor, event, client_addr, outcome, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now)
    .bind(e.account_id)
    .bind(e.actor)
    .bind(e.event)
    .bind(e.client_addr)
    .bind(e.outcome)
    .bind(e.detail.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An account's entries, newest first, strictly before `before` (a previous page's last id).
pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, account_id, actor, event, client_addr, outcome, detail FROM audit_log
         WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind(account_id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Entry {
                id: r.try_get(0)?,
                at: r.try_get(1)?,
                account_id: r.try_get(2)?,
                actor: r.try_get(3)?,
                event: r.try_get(4)?,
                client_addr: r.try_get(5)?,
                outcome: r.try_get(6)?,
                detail: r.try_get(7)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}
