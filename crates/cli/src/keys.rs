//! Key provider start-up and the `phivault keys` commands.

use std::io::{IsTerminal, Read};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use phivault_access::TenantScope;
use phivault_crypto::keys::{KeyService, KeyStatus};
use phivault_crypto::provider::KeyProvider;
use phivault_crypto::{aws_kms, keyring, pkcs11};
use phivault_domain::tenants;
use phivault_store::TxMode;
use zeroize::Zeroizing;

use crate::config::{Config, KeyProviderKind};
use crate::setup;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create the local keyring (a root key sealed by a passphrase through argon2id). The
    /// passphrase comes from PHIVAULT_KEYRING_PASSPHRASE, keys.passphrase_file
    /// (PHIVAULT_KEYRING_PASSPHRASE_FILE), or standard
    /// input.
    Init {
        /// Create a development keyring with an empty passphrase (unfit for PHI).
        #[arg(long)]
        dev: bool,
    },
    /// Create the marker key in the PKCS#11 token ([keys.pkcs11]) that identifies it as
    /// phivault's token; tenant roots are generated in the token on first use, sensitive
    /// and never extractable.
    InitHsm,
    /// Show which provider is configured and whether it unseals.
    Status,
    /// Create a new KEK version for a tenant and rewrap every data key under it, without
    /// re-encrypting data. Resumes an interrupted rotation; destroys the old version last.
    Rotate {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// Data keys rewrapped per transaction.
        #[arg(long, default_value_t = 500)]
        batch: u32,
    },
}

/// Reads the local keyring passphrase: environment, then file, then standard input.
fn passphrase(config: &Config) -> Result<Option<Zeroizing<Vec<u8>>>> {
    if let Ok(v) = std::env::var("PHIVAULT_KEYRING_PASSPHRASE") {
        return Ok(Some(Zeroizing::new(v.into_bytes())));
    }
    if let Some(path) = &config.keys.passphrase_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok(Some(Zeroizing::new(
            text.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
        )));
    }
    Ok(None)
}

fn read_stdin_passphrase() -> Result<Zeroizing<Vec<u8>>> {
    if std::io::stdin().is_terminal() {
        eprint!("keyring passphrase: ");
    }
    let mut text = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut text)?;
    Ok(Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
    ))
}

/// Builds the key service for the server: unsealed when the provider can be reached (or
/// the local passphrase is at hand), sealed otherwise. With the local provider and no
/// keyring file at the default path, creates a development keyring and says so.
pub async fn start(config: &Config) -> Result<Arc<KeyService>> {
    match config.keys.provider {
        KeyProviderKind::Local => {
            let path = config.keyring_path();
            if !path.exists() {
                if config.keys.keyring.is_some() {
                    bail!(
                        "keyring {} does not exist; create it with `phivault keys init`",
                        path.display()
                    );
                }
                setup::ensure_data_dir(&config.data_dir)?;
                keyring::init(&path, b"", true)?;
                tracing::warn!(keyring = %path.display(), "created a DEVELOPMENT keyring with an empty passphrase: not fit for PHI; run `phivault keys init` for a real one");
            }
            let info = keyring::info(&path)?;
            let secret = if info.development {
                Some(Zeroizing::new(Vec::new()))
            } else {
                passphrase(config)?
            };
            match secret {
                Some(p) => {
                    let provider = keyring::unseal(&path, &p)?;
                    if info.development {
                        tracing::warn!(keyring = %path.display(), "keys: DEVELOPMENT keyring unsealed; not fit for PHI");
                    } else {
                        tracing::info!(keyring = %path.display(), "keys: local keyring unsealed");
                    }
                    Ok(Arc::new(KeyService::with_provider(Arc::new(provider))))
                }
                None => {
                    tracing::warn!(
                        "keys: SEALED; PHI routes answer 503 `sealed` until `phivault unseal`, PHIVAULT_KEYRING_PASSPHRASE or keys.passphrase_file provides the passphrase"
                    );
                    Ok(Arc::new(KeyService::sealed()))
                }
            }
        }
        _ => Ok(Arc::new(KeyService::with_provider(
            remote_provider(config).await?,
        ))),
    }
}

async fn remote_provider(config: &Config) -> Result<Arc<dyn KeyProvider>> {
    match config.keys.provider {
        KeyProviderKind::AwsKms => {
            let kms = config
                .keys
                .aws_kms
                .clone()
                .context("keys.provider is aws-kms but [keys.aws_kms] is not set")?;
            Ok(Arc::new(aws_kms::AwsKmsProvider::connect(kms).await?))
        }
        KeyProviderKind::Pkcs11 => {
            let cfg = config
                .keys
                .pkcs11
                .as_ref()
                .context("keys.provider is pkcs11 but [keys.pkcs11] is not set")?;
            let cfg = cfg.clone();
            let provider =
                tokio::task::spawn_blocking(move || pkcs11::Pkcs11Provider::open(&cfg)).await??;
            Ok(Arc::new(provider))
        }
        KeyProviderKind::Local => bail!("the local provider is not remote"),
    }
}

/// The passphrase `phivault unseal` sends: environment, file, or standard input.
pub fn unseal_passphrase(config: &Config) -> Result<Zeroizing<Vec<u8>>> {
    match passphrase(config)? {
        Some(p) => Ok(p),
        None => read_stdin_passphrase(),
    }
}

pub async fn run(config: Config, cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Init { dev } => {
            let path = config.keyring_path();
            let secret = if dev {
                Zeroizing::new(Vec::new())
            } else {
                match passphrase(&config)? {
                    Some(p) => p,
                    None => read_stdin_passphrase()?,
                }
            };
            let info = keyring::init(&path, &secret, dev)?;
            println!(
                "created {} keyring {} (root key {})",
                if dev { "DEVELOPMENT" } else { "sealed" },
                path.display(),
                info.root_key_id
            );
            Ok(())
        }
        KeysCommand::InitHsm => {
            let cfg = config
                .keys
                .pkcs11
                .clone()
                .context("[keys.pkcs11] (or PHIVAULT_PKCS11_MODULE) is not set")?;
            tokio::task::spawn_blocking(move || pkcs11::Pkcs11Provider::create_key(&cfg)).await??;
            println!(
                "created the marker key in the PKCS#11 token; tenant roots are created on first use"
            );
            Ok(())
        }
        KeysCommand::Status => {
            let keys = start(&config).await?;
            match keys.status() {
                KeyStatus::Sealed => println!("provider {:?}: sealed", config.keys.provider),
                KeyStatus::Unsealed {
                    provider,
                    development,
                } => {
                    println!(
                        "provider {provider}: unsealed{}",
                        if development {
                            " (DEVELOPMENT keyring: not fit for PHI)"
                        } else {
                            ""
                        }
                    )
                }
            }
            Ok(())
        }
        KeysCommand::Rotate { tenant, batch } => rotate(config, &tenant, batch.max(1)).await,
    }
}

async fn rotate(config: Config, tenant: &str, batch: u32) -> Result<()> {
    let db = setup::open_db(&config).await?;
    let keys = start(&config).await?;
    if keys.status() == KeyStatus::Sealed {
        bail!("keys are sealed: provide the keyring passphrase");
    }
    let mut p = db.begin_platform(TxMode::Read).await?;
    let tenant = tenants::find(&mut p, tenant).await?.id;
    p.commit().await?;
    let scope = TenantScope::operator(tenant);
    let mut tx = scope.begin(&db, TxMode::Write).await?;
    let version = keys.begin_rotation(&mut tx, Utc::now()).await?;
    let (_, remaining) = keys.rewrap_batch(&mut tx, version, 0).await?;
    tx.commit().await?;
    println!("rotating tenant {tenant} to KEK version {version}: {remaining} data keys to rewrap");
    let bar = ProgressBar::new(remaining);
    bar.set_style(
        ProgressStyle::with_template("  rewrap [{bar:30}] {pos}/{len} data keys ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    loop {
        let mut tx = scope.begin(&db, TxMode::Write).await?;
        let (done, left) = keys.rewrap_batch(&mut tx, version, batch).await?;
        tx.commit().await?;
        bar.inc(done);
        if left == 0 {
            break;
        }
    }
    bar.finish_and_clear();
    let mut tx = scope.begin(&db, TxMode::Write).await?;
    let destroyed = keys.finish_rotation(&mut tx, version, Utc::now()).await?;
    let mut e = crate::oplog::event(
        phivault_audit::Action::KeysRotated,
        "tenant",
        tenant,
        &["tenant_keks", "data_keys"],
    );
    e.after =
        Some(serde_json::json!({ "active_version": version, "versions_destroyed": destroyed }));
    phivault_audit::ledger::append_tenant(&mut tx, vec![e]).await?;
    tx.commit().await?;
    println!("done: KEK version {version} active; {destroyed} old version(s) destroyed");
    db.close().await;
    Ok(())
}
