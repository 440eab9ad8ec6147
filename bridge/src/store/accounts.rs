//! Accounts: one per (issuer, subject) of the identity provider.

use sqlx::{AnyConnection, Row};

use super::StoreError;
use crate::id;

/// An account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Our id.
    pub id: String,
    /// Identity provider issuer.
    pub issuer: String,
    /// Identity provider subject.
    pub subject: String,
    /// Wrong pairing codes in a row.
    pub pairing_failures: i64,
    /// Pairing confirmations refused until this time (ms).
    pub pairing_locked_until: i64,
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Account, sqlx::Error> {
    Ok(Account {
        id: row.try_get("id")?,
        issuer: row.try_get("issuer")?,
        subject: row.try_get("subject")?,
        pairing_failures: row.try_get("pairing_failures")?,
        pairing_locked_until: row.try_get("pairing_locked_until")?,
    })
}

const COLUMNS: &str = "id, issuer, subject, pairing_failures, pairing_locked_until";

/// The account for an identity, created on first sight.
pub async fn ensure(
    conn: &mut AnyConnection,
    issuer: &str,
    subject: &str,
    now: i64,
) -> Result<Account, StoreError> {
    sqlx::query(
        "INSERT INTO accounts (id, issuer, subject, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (issuer, subject) DO NOTHING",
    )
    .bind(id::new("acc"))
    .bind(issuer)
    .bind(subject)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM accounts WHERE issuer = $1 AND subject = $2"
    )))
    .bind(issuer)
    .bind(subject)
    .fetch_one(&mut *conn)
    .await?;
    Ok(from_row(&row)?)
}

/// An account by id, reading the current lockout state.
pub async fn get(conn: &mut AnyConnection, id: &str) -> Result<Option<Account>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM accounts WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Records a wrong pairing code; locks the account when `lock_after` is reached. Returns the
/// failure count and the lock end (0 when not locked).
pub async fn record_pairing_failure(
    conn: &mut AnyConnection,
    id: &str,
    now: i64,
    lock_after: i64,
    lock_ms: i64,
) -> Result<(i64, i64), StoreError> {
    sqlx::query(
        "UPDATE accounts SET pairing_failures = pairing_failures + 1,
             pairing_locked_until = CASE WHEN pairing_failures + 1 >= $2 THEN $3 ELSE pairing_locked_until END
         WHERE id = $1",
    )
    .bind(id)
    .bind(lock_after)
    .bind(now + lock_ms)
    .execute(&mut *conn)
    .await?;
    let row =
        sqlx::query("SELECT pairing_failures, pairing_locked_until FROM accounts WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    let failures: i64 = row.try_get(0)?;
    let locked: i64 = row.try_get(1)?;
    if failures >= lock_after {
        // The lockout starts a fresh count once it ends.
        sqlx::query("UPDATE accounts SET pairing_failures = 0 WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok((failures, if locked > now { locked } else { 0 }))
}

/// Clears the failure count after a correct code.
pub async fn reset_pairing_failures(conn: &mut AnyConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE accounts SET pairing_failures = 0 WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
