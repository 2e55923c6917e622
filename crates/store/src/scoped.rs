//! Tenant-scoped and platform transactions, and the one query builder both use.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments, FromRow, Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::guard::{check_platform_statement, check_tenant_statement};
use crate::{Backend, Result, StoreError, TenantId};

/// A value bound to a statement parameter. Owned, so one query text serves both backends.
#[derive(Clone, Debug)]
pub enum Arg {
    /// A UUID (PostgreSQL `uuid`, SQLite 16-byte BLOB).
    Uuid(Uuid),
    /// An optional UUID.
    OptUuid(Option<Uuid>),
    /// Text.
    Text(String),
    /// Optional text.
    OptText(Option<String>),
    /// A 64-bit integer.
    Int(i64),
    /// An optional 64-bit integer.
    OptInt(Option<i64>),
    /// A boolean.
    Bool(bool),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// Optional raw bytes.
    OptBytes(Option<Vec<u8>>),
    /// A UTC timestamp.
    Time(DateTime<Utc>),
    /// An optional UTC timestamp.
    OptTime(Option<DateTime<Utc>>),
    /// A calendar date.
    Date(NaiveDate),
    /// An optional calendar date.
    OptDate(Option<NaiveDate>),
}

macro_rules! arg_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Arg {
            fn from(v: $t) -> Self {
                Arg::$variant(v.into())
            }
        })*
    };
}

arg_from!(
    Uuid => Uuid,
    Option<Uuid> => OptUuid,
    String => Text,
    &str => Text,
    Option<String> => OptText,
    i64 => Int,
    Option<i64> => OptInt,
    bool => Bool,
    Vec<u8> => Bytes,
    Option<Vec<u8>> => OptBytes,
    &[u8] => Bytes,
    DateTime<Utc> => Time,
    Option<DateTime<Utc>> => OptTime,
    NaiveDate => Date,
    Option<NaiveDate> => OptDate,
);

impl From<TenantId> for Arg {
    fn from(v: TenantId) -> Self {
        Arg::Uuid(v.as_uuid())
    }
}

/// A row type that decodes from both backends.
pub trait BothRows:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}
impl<T> BothRows for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

pub(crate) enum Inner {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Inner {
    async fn commit(self) -> Result<()> {
        match self {
            Inner::Sqlite(tx) => tx.commit().await?,
            Inner::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    async fn rollback(self) -> Result<()> {
        match self {
            Inner::Sqlite(tx) => tx.rollback().await?,
            Inner::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

/// A transaction bound to one tenant. Every statement run through it binds the tenant as
/// `$1`; on PostgreSQL the transaction also carries `phivault.tenant_id` for row-level
/// security. Dropped without [`TenantTx::commit`], it rolls back.
pub struct TenantTx {
    tenant: TenantId,
    inner: Inner,
}

impl TenantTx {
    pub(crate) fn new(tenant: TenantId, inner: Inner) -> Self {
        TenantTx { tenant, inner }
    }

    /// The tenant this transaction is bound to.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The engine this transaction runs on, for the rare statement whose text must differ
    /// between the two (row locks such as `FOR UPDATE SKIP LOCKED` exist on PostgreSQL
    /// only).
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Sqlite(_) => Backend::Sqlite,
            Inner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Starts a statement. `$1` is the tenant; the caller binds `$2` onwards.
    ///
    /// # Errors
    /// Running it fails with [`StoreError::Unscoped`] if the text does not use `$1` as its
    /// tenant filter (see the crate docs).
    pub fn query(&mut self, sql: &'static str) -> Query<'_> {
        let tenant = self.tenant;
        Query {
            conn: conn_of(&mut self.inner),
            sql,
            args: vec![Arg::from(tenant)],
            check: Check::Tenant,
        }
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<()> {
        self.inner.commit().await
    }

    /// Rolls the transaction back.
    pub async fn rollback(self) -> Result<()> {
        self.inner.rollback().await
    }
}

/// A transaction for platform tables only (the tenant registry); it can name no tenant
/// table.
pub struct PlatformTx {
    inner: Inner,
}

impl PlatformTx {
    pub(crate) fn new(inner: Inner) -> Self {
        PlatformTx { inner }
    }

    /// Starts a statement over platform tables; parameters start at `$1`.
    pub fn query(&mut self, sql: &'static str) -> Query<'_> {
        Query {
            conn: conn_of(&mut self.inner),
            sql,
            args: Vec::new(),
            check: Check::Platform,
        }
    }

    /// Commits the transaction.
    pub async fn commit(self) -> Result<()> {
        self.inner.commit().await
    }
}

fn conn_of(inner: &mut Inner) -> Conn<'_> {
    match inner {
        Inner::Sqlite(tx) => Conn::Sqlite(tx),
        Inner::Postgres(tx) => Conn::Postgres(tx),
    }
}

enum Conn<'t> {
    Sqlite(&'t mut Transaction<'static, Sqlite>),
    Postgres(&'t mut Transaction<'static, Postgres>),
}

#[derive(Clone, Copy)]
enum Check {
    Tenant,
    Platform,
}

/// A statement being built inside a [`TenantTx`] or [`PlatformTx`].
#[must_use = "a query does nothing until it is executed or fetched"]
pub struct Query<'t> {
    conn: Conn<'t>,
    sql: &'static str,
    args: Vec<Arg>,
    check: Check,
}

impl<'t> Query<'t> {
    /// Binds the next parameter.
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    fn checked(&self) -> Result<()> {
        match self.check {
            Check::Tenant => check_tenant_statement(self.sql),
            Check::Platform => check_platform_statement(self.sql),
        }
    }

    /// Runs the statement and returns the number of rows it affected.
    pub async fn execute(self) -> Result<u64> {
        self.checked()?;
        let n = match self.conn {
            Conn::Sqlite(tx) => sqlx::query_with(self.sql, sqlite_args(self.args)?)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Conn::Postgres(tx) => sqlx::query_with(self.sql, pg_args(self.args)?)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        };
        Ok(n)
    }

    /// Runs the statement and decodes every row.
    pub async fn fetch_all<R: BothRows>(self) -> Result<Vec<R>> {
        self.checked()?;
        let rows = match self.conn {
            Conn::Sqlite(tx) => {
                sqlx::query_as_with::<_, R, _>(self.sql, sqlite_args(self.args)?)
                    .fetch_all(&mut **tx)
                    .await?
            }
            Conn::Postgres(tx) => {
                sqlx::query_as_with::<_, R, _>(self.sql, pg_args(self.args)?)
                    .fetch_all(&mut **tx)
                    .await?
            }
        };
        Ok(rows)
    }

    /// Runs the statement and decodes the first row, if any.
    pub async fn fetch_optional<R: BothRows>(self) -> Result<Option<R>> {
        self.checked()?;
        let row = match self.conn {
            Conn::Sqlite(tx) => {
                sqlx::query_as_with::<_, R, _>(self.sql, sqlite_args(self.args)?)
                    .fetch_optional(&mut **tx)
                    .await?
            }
            Conn::Postgres(tx) => {
                sqlx::query_as_with::<_, R, _>(self.sql, pg_args(self.args)?)
                    .fetch_optional(&mut **tx)
                    .await?
            }
        };
        Ok(row)
    }

    /// Runs the statement and decodes exactly one row.
    pub async fn fetch_one<R: BothRows>(self) -> Result<R> {
        self.fetch_optional()
            .await?
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }
}

fn encode_err(e: sqlx::error::BoxDynError) -> StoreError {
    StoreError::Database(sqlx::Error::Encode(e))
}

fn sqlite_args(args: Vec<Arg>) -> Result<SqliteArguments> {
    let mut out = SqliteArguments::default();
    for arg in args {
        match arg {
            Arg::Uuid(v) => out.add(v),
            Arg::OptUuid(v) => out.add(v),
            Arg::Text(v) => out.add(v),
            Arg::OptText(v) => out.add(v),
            Arg::Int(v) => out.add(v),
            Arg::OptInt(v) => out.add(v),
            Arg::Bool(v) => out.add(v),
            Arg::Bytes(v) => out.add(v),
            Arg::OptBytes(v) => out.add(v),
            Arg::Time(v) => out.add(v),
            Arg::OptTime(v) => out.add(v),
            Arg::Date(v) => out.add(v),
            Arg::OptDate(v) => out.add(v),
        }
        .map_err(encode_err)?;
    }
    Ok(out)
}

fn pg_args(args: Vec<Arg>) -> Result<PgArguments> {
    let mut out = PgArguments::default();
    for arg in args {
        match arg {
            Arg::Uuid(v) => out.add(v),
            Arg::OptUuid(v) => out.add(v),
            Arg::Text(v) => out.add(v),
            Arg::OptText(v) => out.add(v),
            Arg::Int(v) => out.add(v),
            Arg::OptInt(v) => out.add(v),
            Arg::Bool(v) => out.add(v),
            Arg::Bytes(v) => out.add(v),
            Arg::OptBytes(v) => out.add(v),
            Arg::Time(v) => out.add(v),
            Arg::OptTime(v) => out.add(v),
            Arg::Date(v) => out.add(v),
            Arg::OptDate(v) => out.add(v),
        }
        .map_err(encode_err)?;
    }
    Ok(out)
}
