//! Throwaway PostgreSQL databases for tests and benchmarks, laid out as production is:
//! a schema owner that runs migrations, and a serving role without `BYPASSRLS` that owns
//! nothing.

use sqlx::Connection;
use url::Url;

use crate::{Db, DbOptions, Result, StoreError};

/// The schema owner role of scratch databases.
pub const OWNER_ROLE: &str = "phivault_scratch_owner";
/// The serving role of scratch databases.
pub const APP_ROLE: &str = "phivault_scratch_app";
const PASSWORD: &str = "phivault-scratch-only";

/// A migrated scratch database.
pub struct ScratchPg {
    /// Database name.
    pub name: String,
    /// URL as a superuser (administrative).
    pub admin_url: String,
    /// URL as the schema owner.
    pub owner_url: String,
    /// URL as the serving role.
    pub app_url: String,
}

fn with_identity(base: &Url, user: &str, password: Option<&str>, database: &str) -> Result<String> {
    let mut url = base.clone();
    let bad = |_| StoreError::ObjectConfig("cannot build a database URL".into());
    url.set_username(user).map_err(bad)?;
    url.set_password(password).map_err(bad)?;
    url.set_path(&format!("/{database}"));
    Ok(url.to_string())
}

async fn exec_ignoring_duplicates(conn: &mut sqlx::PgConnection, sql: String) -> Result<()> {
    match sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(()),
        // Concurrent tests race to create the same cluster-wide role.
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42710") | Some("23505")) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl ScratchPg {
    /// Creates the roles if needed, then a fresh database named `phivault_<prefix>_<random>`
    /// owned by the owner role, migrated, with the serving role granted.
    pub async fn create(admin_url: &str, prefix: &str) -> Result<ScratchPg> {
        let base = Url::parse(admin_url).map_err(|_| StoreError::UnsupportedUrl)?;
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        exec_ignoring_duplicates(
            &mut admin,
            format!("CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '{PASSWORD}'"),
        )
        .await?;
        exec_ignoring_duplicates(
            &mut admin,
            format!("CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD '{PASSWORD}'"),
        )
        .await?;
        let name = format!("phivault_{prefix}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name} OWNER {OWNER_ROLE}"
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        let scratch = ScratchPg {
            admin_url: with_identity(&base, base.username(), base.password(), &name)?,
            owner_url: with_identity(&base, OWNER_ROLE, Some(PASSWORD), &name)?,
            app_url: with_identity(&base, APP_ROLE, Some(PASSWORD), &name)?,
            name,
        };
        let owner = Db::connect(
            &scratch.owner_url,
            &DbOptions {
                max_connections: 2,
                ..DbOptions::default()
            },
        )
        .await?;
        owner.migrate().await?;
        owner.grant_app_role(APP_ROLE).await?;
        owner.close().await;
        Ok(scratch)
    }

    /// Connects as the serving role.
    pub async fn app_db(&self, opts: &DbOptions) -> Result<Db> {
        Db::connect(&self.app_url, opts).await
    }

    /// Drops the database (connections to it must be closed).
    pub async fn drop_database(self, admin_url: &str) -> Result<()> {
        let mut admin = sqlx::PgConnection::connect(admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}
