//! Storage on SQLite (embedded default) or PostgreSQL (many bridge instances), through sqlx's
//! `Any` driver so one set of queries serves both.
//!
//! * `migrations/sqlite` and `migrations/postgres` are the only schema sources; they differ only
//!   where the dialects do (byte strings, auto-increment ids). Queries use `$n` parameters, which
//!   both backends accept, and portable types only: text, 64-bit integers (times are Unix
//!   milliseconds, flags 0/1) and byte strings.
//! * SQLite runs in WAL mode with `synchronous = FULL`, so a delivery is on disk before the
//!   request that created it is answered. SQLite allows one writer at a time; write
//!   transactions are serialized in-process ([`Store::begin_write`]) instead of failing with
//!   "database is locked".
//! * PostgreSQL tests put each test in its own schema ([`Store::connect_with_schema`]) so they
//!   run in parallel.

pub mod accounts;
pub mod audit;
pub mod companions;
pub mod deliveries;
pub mod devices;
pub mod pairings;

use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

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
    /// SQLite only: serializes write transactions.
    writer: Arc<Mutex<()>>,
}

/// A write transaction; on SQLite it also holds the writer lock.
#[derive(Debug)]
pub struct WriteTx {
    /// The transaction.
    pub tx: Transaction<'static, Any>,
    _guard: Option<OwnedMutexGuard<()>>,
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
        Ok(Self {
            pool,
            backend,
            writer: Arc::new(Mutex::new(())),
        })
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

    /// Starts a write transaction (serialized on SQLite).
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        let guard = match self.backend {
            Backend::Sqlite => Some(Arc::clone(&self.writer).lock_owned().await),
            Backend::Postgres => None,
        };
        // IMMEDIATE takes SQLite's write lock at BEGIN, so a transaction that reads first never
        // fails to upgrade (SQLITE_BUSY_SNAPSHOT) when another connection wrote meanwhile.
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _guard: guard })
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

    /// Commits (durably: `synchronous = FULL` on SQLite).
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
