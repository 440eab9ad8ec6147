//! Storage on SQLite (embedded default) or PostgreSQL (many bridge instances), through sqlx's
//! `Any` driver so one set of queries serves both.
//!
//! * `migrations/sqlite` and `migrations/postgres` are the only schema sources; they differ only
//!   where the dialects do (byte strings, auto-increment ids). Queries use `$n` parameters, which
//!   both backends accept, and portable types only: text, 64-bit integers (times are Unix
//!   milliseconds, flags 0/1) and byte strings.
//! * SQLite runs in WAL mode with `synchronous = FULL`, so a delivery is on disk before the
//!   request that created it is answered. SQLite allows one writer at a time, so write
//!   transactions run one after another on a dedicated connection, as savepoints inside a
//!   shared batch that a committer task commits with one `fsync` (group commit,
//!   [`Store::begin_write`]); each caller's `commit` returns only after its batch is durable.
//! * PostgreSQL tests put each test in its own schema ([`Store::connect_with_schema`]) so they
//!   run in parallel.

pub mod accounts;
pub mod audit;
pub mod companions;
pub mod deliveries;
pub mod devices;
pub mod outbox;
pub mod pairings;

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, oneshot};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// Why a storage operation failed. Callers map it to `INTERNAL`; the cause goes to logs only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("unsupported database URL scheme (use sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// A database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether the error is a unique-constraint violation (a lost race on an insert).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
            _ => false,
        }
    }
}

/// The database handle.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: the one writer connection and its open batch.
    writer: Arc<Mutex<Writer>>,
    /// SQLite only: wakes the committer.
    wake: Arc<Notify>,
}

/// SQLite group commit: write transactions run one after another as savepoints inside one open
/// transaction on a dedicated connection; a committer commits the batch (one `fsync`) and only
/// then tells each transaction's caller that it is durable.
#[derive(Debug, Default)]
struct Writer {
    conn: Option<PoolConnection<Any>>,
    /// A batch transaction is open.
    open: bool,
    /// The last holder neither committed nor rolled back: its savepoint must be undone.
    dirty: bool,
    /// Callers whose savepoint is released, waiting for the batch commit.
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Writer {
    fn conn(&mut self) -> Result<&mut AnyConnection, StoreError> {
        self.conn
            .as_deref_mut()
            .ok_or(StoreError::Database(sqlx::Error::PoolClosed))
    }

    /// Undoes an abandoned savepoint; if that fails the whole batch is lost, and its waiters
    /// are told so.
    async fn clean(&mut self) -> Result<(), StoreError> {
        if !self.dirty {
            return Ok(());
        }
        self.dirty = false;
        let undone = async {
            let conn = self.conn()?;
            conn.execute("ROLLBACK TO w").await?;
            conn.execute("RELEASE w").await?;
            Ok::<(), StoreError>(())
        }
        .await;
        if let Err(e) = undone {
            self.abort(&e.to_string()).await;
        }
        Ok(())
    }

    /// Rolls the batch back and fails its waiters.
    async fn abort(&mut self, why: &str) {
        if let Ok(conn) = self.conn() {
            let _ = conn.execute("ROLLBACK").await;
        }
        self.open = false;
        self.conn = None;
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(why.to_owned()));
        }
    }

    /// Commits the open batch and answers its waiters.
    async fn commit_batch(&mut self) {
        if self.clean().await.is_err() || !self.open {
            for waiter in self.waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
            return;
        }
        let result = match self.conn() {
            Ok(conn) => conn
                .execute("COMMIT")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                self.open = false;
                // Between batches the connection goes back to the pool (so the pool can close).
                self.conn = None;
                for waiter in self.waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
            }
            Err(why) => self.abort(&why).await,
        }
    }
}

/// The connection of a write transaction (dereferences to an `AnyConnection`).
#[derive(Debug)]
pub struct TxConn(TxInner);

#[derive(Debug)]
enum TxInner {
    /// PostgreSQL: an ordinary transaction.
    Postgres(Transaction<'static, Any>),
    /// SQLite: a savepoint in the writer's open batch.
    Sqlite(SqliteTx),
}

/// The writer, held by one transaction. Dropping it (committed or not) wakes the committer, so
/// an abandoned savepoint is rolled back and the batch's write lock released promptly.
#[derive(Debug)]
struct SqliteTx {
    writer: Option<OwnedMutexGuard<Writer>>,
    wake: Arc<Notify>,
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

impl std::ops::Deref for TxConn {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match &self.0 {
            TxInner::Postgres(tx) => tx,
            TxInner::Sqlite(tx) => match tx.writer.as_ref().and_then(|w| w.conn.as_deref()) {
                Some(conn) => conn,
                // `begin_write` acquires the connection before handing out the guard.
                None => unreachable!("the writer connection is acquired before use"),
            },
        }
    }
}

impl std::ops::DerefMut for TxConn {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match &mut self.0 {
            TxInner::Postgres(tx) => tx,
            TxInner::Sqlite(tx) => match tx.writer.as_mut().and_then(|w| w.conn.as_deref_mut()) {
                Some(conn) => conn,
                None => unreachable!("the writer connection is acquired before use"),
            },
        }
    }
}

/// A write transaction. Dropping it without [`WriteTx::commit`] rolls it back.
#[derive(Debug)]
pub struct WriteTx {
    /// The connection to write with.
    pub tx: TxConn,
}

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with_schema(url, max_connections, None).await
    }

    /// Connects with every PostgreSQL connection's `search_path` set to `schema` (created if
    /// missing). Tests use this to isolate from each other.
    pub async fn connect_with_schema(
        url: &str,
        max_connections: u32,
        schema: Option<&str>,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let options: AnyConnectOptions = url.parse()?;
        let schema = schema
            .filter(|s| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
            .map(str::to_owned);
        if let (Backend::Postgres, Some(schema)) = (backend, &schema) {
            let setup = AnyPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            setup
                .execute(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema}"
                )))
                .await?;
            setup.close().await;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = FULL",
                                "PRAGMA foreign_keys = ON",
                                "PRAGMA busy_timeout = 10000",
                            ] {
                                conn.execute(pragma).await?;
                            }
                        }
                        Backend::Postgres => {
                            if let Some(schema) = schema {
                                conn.execute(sqlx::AssertSqlSafe(format!(
                                    "SET search_path TO {schema}"
                                )))
                                .await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Self {
            pool,
            backend,
            writer: Arc::default(),
            wake: Arc::default(),
        };
        if backend == Backend::Sqlite {
            tokio::spawn(committer(Arc::downgrade(&store.writer), store.wake.clone()));
        }
        Ok(store)
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// Whether the database answers and every migration is applied (readiness).
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let applied: Vec<(i64,)> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success = $1")
                .bind(true)
                .fetch_all(&self.pool)
                .await?;
        Ok(self
            .migrator()
            .iter()
            .all(|m| applied.iter().any(|(v,)| *v == m.version)))
    }

    /// The pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction: on PostgreSQL an ordinary one; on SQLite a savepoint in the
    /// writer's group-commit batch (write transactions run one at a time).
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let tx = match self.backend {
            Backend::Postgres => TxConn(TxInner::Postgres(self.pool.begin().await?)),
            Backend::Sqlite => {
                let mut writer = Arc::clone(&self.writer).lock_owned().await;
                if writer.conn.is_none() {
                    writer.conn = Some(self.pool.acquire().await?);
                }
                writer.clean().await?;
                if !writer.open {
                    // IMMEDIATE takes SQLite's write lock now, so reads inside the batch
                    // never fail to upgrade.
                    writer.conn()?.execute("BEGIN IMMEDIATE").await?;
                    writer.open = true;
                }
                writer.conn()?.execute("SAVEPOINT w").await?;
                writer.dirty = true;
                TxConn(TxInner::Sqlite(SqliteTx {
                    writer: Some(writer),
                    wake: self.wake.clone(),
                }))
            }
        };
        Ok(WriteTx { tx })
    }
}

/// Commits SQLite batches whenever a transaction is waiting for durability. While one batch
/// commits, the next one gathers the transactions that arrive meanwhile.
async fn committer(writer: std::sync::Weak<Mutex<Writer>>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(writer) = writer.upgrade() else {
            return;
        };
        let mut guard = writer.lock().await;
        if !guard.waiters.is_empty() || guard.open || guard.dirty {
            guard.commit_batch().await;
        }
    }
}

impl WriteTx {
    /// Takes a cluster-wide lock named by `key` for the rest of the transaction, waiting for
    /// it (PostgreSQL advisory lock; on SQLite the writer is already exclusive). Serializes a
    /// periodic job across bridge instances.
    pub async fn exclusive(&mut self, backend: Backend, key: i64) -> Result<(), StoreError> {
        if backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(key)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Commits durably (`synchronous = FULL` on SQLite): returns once the data is on disk.
    pub async fn commit(self) -> Result<(), StoreError> {
        match self.tx.0 {
            TxInner::Postgres(tx) => tx.commit().await?,
            TxInner::Sqlite(mut tx) => {
                let mut writer = tx
                    .writer
                    .take()
                    .ok_or(StoreError::Database(sqlx::Error::PoolClosed))?;
                writer.conn()?.execute("RELEASE w").await?;
                writer.dirty = false;
                let (done, durable) = oneshot::channel();
                writer.waiters.push(done);
                drop(writer);
                // Dropping `tx` wakes the committer.
                drop(tx);
                durable
                    .await
                    .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
                    .map_err(|why| {
                        StoreError::Database(sqlx::Error::Protocol(format!(
                            "batch commit failed: {why}"
                        )))
                    })?;
            }
        }
        Ok(())
    }
}
