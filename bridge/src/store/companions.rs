//! Companion app installs: where an account's pushes go.

use sqlx::{AnyConnection, Row};

use super::StoreError;
use crate::id;

/// A companion install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Companion {
    /// Id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// `APNS` or `FCM`.
    pub platform: String,
    /// Push token (absent once removed).
    pub push_token: Option<String>,
    /// APNs topic (bundle id) or FCM app id.
    pub app_id: String,
    /// Name shown to the user.
    pub display_name: String,
    /// Whether pushes go to it.
    pub active: bool,
    /// Created (ms).
    pub created_at: i64,
    /// Last changed (ms).
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, account_id, platform, push_token, app_id, display_name, active, created_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Companion, sqlx::Error> {
    Ok(Companion {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        platform: r.try_get(2)?,
        push_token: r.try_get(3)?,
        app_id: r.try_get(4)?,
        display_name: r.try_get(5)?,
        active: r.try_get::<i64, _>(6)? != 0,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}

/// What registering did.
#[derive(Debug)]
pub struct Registered {
    /// The install now holding the token.
    pub companion: Companion,
    /// The account the token was taken from, if it belonged to another account.
    pub moved_from: Option<String>,
}

/// Registers a push token for `account_id`. A token already registered to this account updates
/// that install; a token registered to another account moves to this one (the old install is
/// removed) and `moved_from` says from where.
#[allow(clippy::too_many_arguments)]
pub async fn register(
    conn: &mut AnyConnection,
    account_id: &str,
    platform: &str,
    push_token: &str,
    app_id: &str,
    display_name: &str,
    now: i64,
) -> Result<Registered, StoreError> {
    let existing = by_token(conn, push_token).await?;
    let mut moved_from = None;
    if let Some(old) = existing {
        if old.account_id == account_id {
            sqlx::query(
                "UPDATE companions SET platform = $2, app_id = $3, display_name = $4, active = 1,
                 updated_at = $5 WHERE id = $1",
            )
            .bind(&old.id)
            .bind(platform)
            .bind(app_id)
            .bind(display_name)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            let companion = get(conn, account_id, &old.id)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
            return Ok(Registered {
                companion,
                moved_from: None,
            });
        }
        remove_row(conn, &old.id, now).await?;
        moved_from = Some(old.account_id);
    }
    let id = id::new("cmp");
    sqlx::query(
        "INSERT INTO companions (id, account_id, platform, push_token, app_id, display_name, active, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
    )
    .bind(&id)
    .bind(account_id)
    .bind(platform)
    .bind(push_token)
    .bind(app_id)
    .bind(display_name)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let companion = get(conn, account_id, &id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(Registered {
        companion,
        moved_from,
    })
}

async fn by_token(conn: &mut AnyConnection, token: &str) -> Result<Option<Companion>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM companions WHERE push_token = $1"
    )))
    .bind(token)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

async fn remove_row(conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE companions SET push_token = NULL, active = 0, removed_at = $2, updated_at = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An install of `account_id` (removed installs are not found).
pub async fn get(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
) -> Result<Option<Companion>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM companions WHERE id = $1 AND account_id = $2 AND removed_at IS NULL"
    )))
    .bind(id)
    .bind(account_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

/// Replaces an install's push token (which may move it from another install, as in
/// [`register`]). Returns the updated install and the account a moved token came from.
pub async fn update_token(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    push_token: &str,
    now: i64,
) -> Result<Option<Registered>, StoreError> {
    if get(conn, account_id, id).await?.is_none() {
        return Ok(None);
    }
    let mut moved_from = None;
    if let Some(holder) = by_token(conn, push_token).await?
        && holder.id != id
    {
        remove_row(conn, &holder.id, now).await?;
        if holder.account_id != account_id {
            moved_from = Some(holder.account_id);
        }
    }
    sqlx::query("UPDATE companions SET push_token = $2, active = 1, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(push_token)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    let companion = get(conn, account_id, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok(Some(Registered {
        companion,
        moved_from,
    }))
}

/// Removes an install; `false` if it is not this account's.
pub async fn remove(
    conn: &mut AnyConnection,
    account_id: &str,
    id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    if get(conn, account_id, id).await?.is_none() {
        return Ok(false);
    }
    remove_row(conn, id, now).await?;
    Ok(true)
}

/// The account's installs (not removed), oldest first.
pub async fn list(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Vec<Companion>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM companions WHERE account_id = $1 AND removed_at IS NULL ORDER BY created_at, id"
    )))
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// The account's installs that receive pushes.
pub async fn active(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Vec<Companion>, StoreError> {
    Ok(list(conn, account_id)
        .await?
        .into_iter()
        .filter(|c| c.active && c.push_token.is_some())
        .collect())
}
