//! Start-up steps shared by the commands: data directory, database, logging.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use phivault_store::{Backend, Db, DbOptions};

use crate::config::{Config, LogFormat};

/// Creates the data directory, readable by its owner only.
pub fn ensure_data_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path)
        .with_context(|| format!("cannot create data directory {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict permissions of {}", path.display()))?;
    }
    Ok(())
}

/// Opens the configured database. The embedded SQLite default is created and migrated on
/// first use; PostgreSQL is migrated only by `phivault migrate` as the owner role.
pub async fn open_db(config: &Config) -> Result<Db> {
    let opts = DbOptions {
        max_connections: config.db_max_connections.max(1),
        acquire_timeout: Duration::from_secs(5),
    };
    let db = match &config.database_url {
        Some(url) => Db::connect(url, &opts)
            .await
            .context("cannot connect to the database")?,
        None => {
            ensure_data_dir(&config.data_dir)?;
            Db::open_sqlite(&config.sqlite_path(), &opts)
                .await
                .with_context(|| format!("cannot open {}", config.sqlite_path().display()))?
        }
    };
    if db.backend() == Backend::Sqlite {
        db.migrate()
            .await
            .context("cannot apply SQLite migrations")?;
    }
    Ok(db)
}

/// Installs the log subscriber: JSON lines (default) or text, on standard error.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
