//! Connecting, migrating and opening transactions on either backend.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use crate::scoped::Inner;
use crate::{PlatformTx, Result, StoreError, TenantId, TenantTx};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database engine a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, the embedded default.
    Sqlite,
    /// PostgreSQL, with row-level security.
    Postgres,
}

impl Backend {
    /// The backend's name as configuration and reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct DbOptions {
    /// Most connections held open at once.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing.
    pub acquire_timeout: Duration,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// A connection pool on one of the two backends. Cheap to clone. It hands out only
/// tenant-scoped and platform transactions, never a raw connection.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Whether a transaction may write. On SQLite a writing transaction takes the write lock
/// up front (`BEGIN IMMEDIATE`) so that two writers queue instead of deadlocking; on
/// PostgreSQL a reading one is declared `READ ONLY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxMode {
    /// Reads only.
    Read,
    /// Reads and writes.
    Write,
}

impl Db {
    /// Connects to `sqlite:` or `postgres:` URL.
    pub async fn connect(url: &str, opts: &DbOptions) -> Result<Db> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?;
            Self::sqlite_with(options, opts).await
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?.application_name("phivault");
            let pool = PgPoolOptions::new()
                .max_connections(opts.max_connections)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(options)
                .await?;
            Ok(Db {
                pool: Pool::Postgres(pool),
            })
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    /// Opens (creating if missing) an SQLite database file in WAL mode.
    pub async fn open_sqlite(path: &Path, opts: &DbOptions) -> Result<Db> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::sqlite_with(options, opts).await
    }

    async fn sqlite_with(options: SqliteConnectOptions, opts: &DbOptions) -> Result<Db> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed PHI write (and later its audit event) survives power loss.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Db {
            pool: Pool::Sqlite(pool),
        })
    }

    /// The engine behind this pool.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self.pool {
            Pool::Sqlite(_) => &SQLITE_MIGRATIONS,
            Pool::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies every pending migration. On PostgreSQL this must run as the schema owner,
    /// never as the role the server serves with.
    pub async fn migrate(&self) -> Result<()> {
        let result = match &self.pool {
            Pool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
        };
        result.map_err(StoreError::Migration)
    }

    /// Names and versions of the migrations this binary carries.
    pub fn known_migrations(&self) -> Vec<(i64, String)> {
        self.migrator()
            .iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    }

    /// Refuses to go on unless every migration this binary carries is applied, and no
    /// unknown one is.
    pub async fn ensure_schema_current(&self) -> Result<()> {
        const SQL: &str = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        let applied: Vec<i64> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_all(pool).await,
            Pool::Postgres(pool) => sqlx::query_scalar(SQL).fetch_all(pool).await,
        }
        .map_err(|e| {
            StoreError::SchemaVersion(format!(
                "cannot read applied migrations ({e}); run `phivault migrate`"
            ))
        })?;
        let known: Vec<i64> = self.migrator().iter().map(|m| m.version).collect();
        if applied == known {
            Ok(())
        } else {
            Err(StoreError::SchemaVersion(format!(
                "applied {applied:?}, this binary expects {known:?}; run `phivault migrate` with the owner role"
            )))
        }
    }

    /// Opens a transaction bound to `tenant`.
    pub async fn begin_tenant(&self, tenant: TenantId, mode: TxMode) -> Result<TenantTx> {
        let inner = match &self.pool {
            Pool::Sqlite(pool) => Inner::Sqlite(begin_sqlite(pool, mode).await?),
            Pool::Postgres(pool) => {
                // One round trip: BEGIN and the transaction-local (is_local = true) tenant
                // setting, which cannot leak to the next user of this pooled connection.
                // The tenant is a formatted UUID, so it cannot inject SQL.
                let sql = format!(
                    "BEGIN{}; SELECT set_config('phivault.tenant_id', '{}', true)",
                    if mode == TxMode::Read {
                        " READ ONLY"
                    } else {
                        ""
                    },
                    tenant.as_uuid().hyphenated()
                );
                Inner::Postgres(pool.begin_with(sqlx::AssertSqlSafe(sql)).await?)
            }
        };
        Ok(TenantTx::new(tenant, inner))
    }

    /// Opens a transaction over platform tables only.
    pub async fn begin_platform(&self, mode: TxMode) -> Result<PlatformTx> {
        let inner = match &self.pool {
            Pool::Sqlite(pool) => Inner::Sqlite(begin_sqlite(pool, mode).await?),
            Pool::Postgres(pool) => Inner::Postgres(match mode {
                TxMode::Read => pool.begin_with("BEGIN READ ONLY").await?,
                TxMode::Write => pool.begin().await?,
            }),
        };
        Ok(PlatformTx::new(inner))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Pool::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    pub(crate) fn pg_pool(&self) -> Option<&PgPool> {
        match &self.pool {
            Pool::Postgres(pool) => Some(pool),
            Pool::Sqlite(_) => None,
        }
    }
}

async fn begin_sqlite(
    pool: &SqlitePool,
    mode: TxMode,
) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    let tx = match mode {
        TxMode::Read => pool.begin().await?,
        TxMode::Write => pool.begin_with("BEGIN IMMEDIATE").await?,
    };
    Ok(tx)
}
