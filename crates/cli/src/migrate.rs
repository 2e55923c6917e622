//! `phivault migrate`.

use std::time::Duration;

use anyhow::{Context, Result};
use phivault_store::{Backend, Db, DbOptions};

use crate::config::Config;
use crate::setup;

pub async fn run(config: Config, app_role: Option<String>) -> Result<()> {
    let url = config
        .migrate_database_url
        .clone()
        .or_else(|| config.database_url.clone());
    let opts = DbOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
    };
    let db = match &url {
        Some(url) => Db::connect(url, &opts)
            .await
            .context("cannot connect to the database")?,
        None => {
            setup::ensure_data_dir(&config.data_dir)?;
            Db::open_sqlite(&config.sqlite_path(), &opts).await?
        }
    };
    let known = db.known_migrations();
    println!(
        "phivault migrate: {} backend, {} migrations in this binary",
        db.backend().as_str(),
        known.len()
    );
    db.migrate().await?;
    for (version, description) in &known {
        println!("  applied {version:04} {description}");
    }
    if db.backend() == Backend::Postgres {
        let role = app_role.unwrap_or_else(|| config.app_role.clone());
        let report = db.grant_app_role(&role).await?;
        println!(
            "  serving role {}: superuser={}, bypassrls={}, owns {} tables; privileges granted",
            report.role,
            report.superuser,
            report.bypass_rls,
            report.owned_tables.len()
        );
        let rls = db.rls_report().await?;
        let scoped: Vec<_> = rls.iter().filter(|t| t.has_tenant_id).collect();
        let forced = scoped
            .iter()
            .filter(|t| t.rls_enabled && t.rls_forced)
            .count();
        println!(
            "  row-level security enabled and forced on {forced}/{} tenant tables",
            scoped.len()
        );
    }
    db.close().await;
    println!("phivault migrate: done");
    Ok(())
}
