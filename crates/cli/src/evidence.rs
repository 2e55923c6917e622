//! `phivault evidence export|verify`: the tenant's evidence packet (docs/evidence.md),
//! produced at the command line and verified offline.
//!
//! Export needs the keys (the packet is signed with the audit checkpoint key) and is
//! recorded in the tenant's chain (`evidence.exported`, operator actor) before the file
//! takes its name. Verify needs nothing but the file: no database, no keys.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;
use indicatif::{ProgressBar, ProgressStyle};
use phivault_audit::Action;
use phivault_audit::ledger::{self, ChainId};
use phivault_audit::packet::{self, ChainOutcome, VerifiedPacket};
use phivault_crypto::keys::KeyStatus;
use phivault_domain::evidence::{self, Request, redact_url};
use phivault_domain::tenants;
use phivault_store::TxMode;
use serde_json::{Value, json};

use crate::config::{Config, KeyProviderKind, LogFormat, ObjectBackend};
use crate::{oplog, setup};

#[derive(Subcommand)]
pub enum EvidenceCommand {
    /// Produce a tenant's evidence packet: one signed archive for a reviewer.
    ///
    /// The archive (a tar) holds report.html (for a person; print it to PDF from any
    /// browser), packet.json (everything, machine-readable: readiness gates,
    /// configuration without secrets, vendors and BAAs, access review, retention and the
    /// deletion log, both audit chains verified now with their signed checkpoints, the
    /// most recent audit events, compliance records) and SIGNATURE (Ed25519 by the audit
    /// checkpoint key). Needs the keys unsealed (PHIVAULT_KEYRING_PASSPHRASE); recorded
    /// in the tenant's audit chain (evidence.exported).
    Export(ExportArgs),
    /// Verify a packet offline: its signature over every byte, every signed checkpoint
    /// and the sample events inside it. No database or key is needed.
    ///
    /// Without --trusted-key the packet's own key is trusted and printed: compare it with
    /// the checkpoint key `phivault audit checkpoint` prints on the server, or with the
    /// public_key of the witness records. Exits non-zero on any fault, naming it.
    Verify(VerifyArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// Tenant id or slug.
    #[arg(long)]
    tenant: String,
    /// Write the archive here (created with mode 0600, replaced if present).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// How many of the tenant's most recent audit events to include.
    #[arg(long, value_name = "N", default_value_t = evidence::DEFAULT_SAMPLE_EVENTS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(evidence::MAX_SAMPLE_EVENTS)))]
    sample_events: u32,
    /// Do not check the checkpoint copies in the witness (audit.witness).
    #[arg(long)]
    no_witness: bool,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The packet (a .tar written by `evidence export` or the API).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Trust only this Ed25519 public key (64 hex digits, as `phivault audit checkpoint`
    /// prints it); a packet signed by any other key fails.
    #[arg(long = "trusted-key", value_name = "HEX", value_parser = parse_public_key)]
    trusted_key: Option<VerifyingKey>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "expected an Ed25519 public key as 64 hex digits".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid Ed25519 public key".to_string())
}

pub async fn run(config: Config, cmd: EvidenceCommand) -> Result<()> {
    match cmd {
        EvidenceCommand::Export(args) => export(&config, args).await,
        EvidenceCommand::Verify(args) => verify(&args),
    }
}

/// A marker for a secret that is set; its value never leaves the process.
const SET: &str = "[set; not shown]";

fn secret(v: Option<&str>) -> Option<&'static str> {
    v.filter(|s| !s.is_empty()).map(|_| SET)
}

/// The configuration for the packet: every setting a reviewer may ask about, never a
/// password, passphrase, PIN, secret key or credentials in a URL.
pub(crate) fn redacted(config: &Config) -> Value {
    let s3 = config.objects.s3.as_ref().map(|s| {
        json!({
            "bucket": s.bucket,
            "region": s.region,
            "endpoint": s.endpoint.as_deref().map(redact_url),
            "access_key_id": secret(s.access_key_id.as_deref()),
            "secret_access_key": secret(s.secret_access_key.as_deref()),
            "allow_http": s.allow_http,
        })
    });
    let kms = config.keys.aws_kms.as_ref().map(|k| {
        json!({
            "region": k.region,
            "alias_prefix": k.alias_prefix,
            "endpoint": k.endpoint.as_deref().map(redact_url),
            "access_key_id": secret(k.access_key_id.as_deref()),
            "secret_access_key": secret(k.secret_access_key.as_deref()),
        })
    });
    let pkcs11 = config.keys.pkcs11.as_ref().map(|p| {
        json!({
            "module": p.module,
            "token_label": p.token_label,
            "key_label": p.key_label,
            "pin": secret(Some(p.pin.as_str())),
        })
    });
    let m = &config.mail;
    let sc = &config.scribe;
    json!({
        "source": "configuration of the exporting command: defaults, file, PHIVAULT_* environment, flags",
        "data_dir": config.data_dir,
        "listen": config.listen.to_string(),
        "database": match &config.database_url {
            None => json!({ "backend": "sqlite", "path": config.sqlite_path() }),
            Some(url) => json!({ "url": redact_url(url) }),
        },
        "migrate_database_url": config.migrate_database_url.as_deref().map(redact_url),
        "app_role": config.app_role,
        "db_max_connections": config.db_max_connections,
        "public_url": config.public_url.as_deref().map(redact_url),
        "tls": {
            "cert": config.tls.cert,
            "key": config.tls.key,
            "behind_proxy": config.tls.behind_proxy,
        },
        "http": {
            "body_limit_bytes": config.http.body_limit_bytes,
            "request_timeout_secs": config.http.request_timeout_secs,
            "upload_limit_bytes": config.http.upload_limit_bytes,
            "upload_timeout_secs": config.http.upload_timeout_secs,
        },
        "objects": {
            "backend": match config.objects.backend {
                ObjectBackend::Local => "local",
                ObjectBackend::S3 => "s3",
            },
            "local_dir": config.objects.local_dir,
            "s3": s3,
        },
        "keys": {
            "provider": match config.keys.provider {
                KeyProviderKind::Local => "local",
                KeyProviderKind::AwsKms => "aws-kms",
                KeyProviderKind::Pkcs11 => "pkcs11",
            },
            "keyring": config.keyring_path(),
            "passphrase_file": config.keys.passphrase_file,
            "aws_kms": kms,
            "pkcs11": pkcs11,
        },
        "audit": {
            "retention_years": config.audit.retention_years,
            "checkpoint_every": config.audit.checkpoint_every,
            "checkpoint_interval_secs": config.audit.checkpoint_interval_secs,
            "witness": config.audit.witness,
        },
        "mail": {
            "from": m.from,
            "smtp_host": m.smtp_host,
            "smtp_port": m.smtp_port,
            "smtp_tls": m.smtp_tls.as_str(),
            "smtp_username": m.smtp_username,
            "smtp_password": secret(m.smtp_password.as_deref()),
            "outbox_dir": config.outbox_dir(),
            "link_lifetime_secs": m.link_lifetime_secs,
        },
        "throttle": {
            "window_secs": config.throttle.window_secs,
            "per_ip": config.throttle.per_ip,
            "per_account": config.throttle.per_account,
            "bearer_failures_per_ip": config.throttle.bearer_failures_per_ip,
        },
        "e2e": {
            "device_trial_sessions": config.e2e.device_trial_sessions,
            "sweep_interval_secs": config.e2e.sweep_interval_secs,
        },
        "scribe": {
            "engine": sc.engine,
            "whisper_model_dir": sc.whisper_model_dir,
            "whisper_threads": sc.whisper_threads,
            "pocketsphinx_model_dir": sc.pocketsphinx_model_dir,
            "command_program": sc.command_program,
            // Arguments of an outside program can carry tokens: only their number.
            "command_args": format!("{} argument(s), not shown", sc.command_args.len()),
            "command_output": sc.command_output,
            "transcription_openai_base_url":
                sc.transcription_openai_base_url.as_deref().map(redact_url),
            "transcription_openai_model": sc.transcription_openai_model,
            // A bearer token: only whether one is set.
            "transcription_openai_api_key": sc.transcription_openai_api_key.as_ref().map(|_| "set, not shown"),
            "note_generator": sc.note_generator,
            "openai_base_url": sc.openai_base_url.as_deref().map(redact_url),
            "openai_model": sc.openai_model,
            "work_dir": sc.work_dir,
            "in_process_worker": sc.in_process_worker,
            "max_duration_secs": sc.max_duration_secs,
            "lease_secs": sc.lease_secs,
            "poll_secs": sc.poll_secs,
        },
        "vendors": {
            "object_storage": config.vendors.object_storage,
            "kms": config.vendors.kms,
            "smtp": config.vendors.smtp,
            "transcription": config.vendors.transcription,
            "note_generation": config.vendors.note_generation,
        },
        "log": {
            "format": match config.log.format {
                LogFormat::Json => "json",
                LogFormat::Text => "text",
            },
            "level": config.log.level,
        },
    })
}

/// The file's directory and a hidden sibling to write first, so that the packet gets
/// its name only once it is whole and its export is recorded.
fn partial_path(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow::anyhow!("--out must name a file"))?;
    Ok(out.with_file_name(format!(".{name}.partial")))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

async fn export(config: &Config, args: ExportArgs) -> Result<()> {
    let partial = partial_path(&args.out)?;
    let db = setup::open_db(config).await?;
    let result = export_in(config, &db, &args, &partial).await;
    db.close().await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

async fn export_in(
    config: &Config,
    db: &phivault_store::Db,
    args: &ExportArgs,
    partial: &Path,
) -> Result<()> {
    let mut p = db.begin_platform(TxMode::Read).await?;
    let tenant = tenants::find(&mut p, &args.tenant)
        .await
        .with_context(|| format!("tenant {:?}", args.tenant))?;
    p.commit().await?;
    let keys = crate::keys::start(config).await?;
    if keys.status() == KeyStatus::Sealed {
        bail!(
            "keys are sealed: the packet is signed with the audit checkpoint key, which needs the keyring passphrase (PHIVAULT_KEYRING_PASSPHRASE or keys.passphrase_file)"
        );
    }
    let facts = crate::readiness::local_facts(config, db).await?;
    let witness = if args.no_witness {
        None
    } else {
        let w = config.witness()?;
        eprintln!("witness: {}", w.describe());
        Some(w)
    };
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("  verify {msg} [{wide_bar}] {pos}/{len} events")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let tick = bar.clone();
    let mut current: Option<ChainId> = None;
    let mut on_progress = move |chain: ChainId, n: u64, total: u64| {
        if current != Some(chain) {
            current = Some(chain);
            tick.set_length(total);
            tick.set_message(chain.to_string());
        }
        tick.set_position(n);
    };
    let now = Utc::now();
    let request = Request {
        tenant: tenant.id,
        facts: &facts,
        configuration: redacted(config),
        produced_by: oplog::event(Action::EvidenceExported, "", "", &[]).actor,
        witness: witness.as_ref(),
        server_version: env!("CARGO_PKG_VERSION"),
        sample_events: args.sample_events,
        now,
    };
    let built = evidence::build(db, &keys, request, &mut on_progress)
        .await
        .map_err(|e| {
            if e.is_sealed() {
                anyhow::anyhow!("keys are sealed: the packet cannot be signed")
            } else {
                anyhow::Error::new(e).context("cannot produce the evidence packet")
            }
        })?;
    bar.finish_and_clear();
    write_private(partial, &built.archive)?;
    let mut event = oplog::event(
        Action::EvidenceExported,
        "evidence_packet",
        built.packet_id,
        &evidence::SECTIONS,
    );
    event.after = Some(built.snapshot());
    let mut tx = db.begin_tenant(tenant.id, TxMode::Write).await?;
    ledger::append_tenant(&mut tx, vec![event])
        .await
        .context("cannot record the export in the audit trail; no packet was written")?;
    tx.commit()
        .await
        .context("cannot record the export in the audit trail; no packet was written")?;
    std::fs::rename(partial, &args.out)
        .with_context(|| format!("cannot move the packet to {}", args.out.display()))?;
    let key = hex::encode(built.signing_key.as_bytes());
    println!(
        "evidence packet for tenant {} written to {}",
        tenant.slug,
        args.out.display()
    );
    println!("  packet    {}", built.packet_id);
    println!(
        "  size      {} bytes, sha256 {}",
        built.archive.len(),
        hex::encode(built.sha256)
    );
    println!("  signed by checkpoint key {key}");
    println!("  readiness {}", built.readiness);
    for c in &built.chains {
        match c.outcome {
            ChainOutcome::Verified => println!(
                "  audit chain {}: ok, {} events, signed through {}, {} unsigned",
                c.chain, c.events, c.signed_through, c.unsigned
            ),
            ChainOutcome::Fault => println!(
                "  audit chain {}: {}",
                c.chain,
                c.fault.as_deref().unwrap_or("FAULT")
            ),
        }
    }
    if built
        .chains
        .iter()
        .any(|c| c.outcome == ChainOutcome::Fault)
    {
        eprintln!(
            "warning: an audit chain failed verification; the packet records the fault (run `phivault audit verify`)"
        );
    }
    println!(
        "verify it with: phivault evidence verify {} --trusted-key {key}",
        args.out.display()
    );
    Ok(())
}

fn read_packet(path: &Path) -> Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(packet::MAX_PACKET_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(bytes)
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let file = args.file.display();
    let bytes = read_packet(&args.file)
        .with_context(|| format!("evidence packet {file} FAILED verification"))?;
    let result = packet::verify(&bytes, args.trusted_key.as_ref());
    match result {
        Ok(v) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&as_json(&v, args))?);
            } else {
                print_verified(&v, args);
            }
            Ok(())
        }
        Err(e) => {
            if args.json {
                let out = json!({ "ok": false, "file": file.to_string(), "error": e.to_string() });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            bail!("evidence packet {file} FAILED verification: {e}")
        }
    }
}

fn as_json(v: &VerifiedPacket, args: &VerifyArgs) -> Value {
    let p = &v.packet;
    json!({
        "ok": true,
        "file": args.file.display().to_string(),
        "sha256": hex::encode(v.file_sha256),
        "signed_sha256": hex::encode(v.signed_sha256),
        "public_key": hex::encode(v.public_key.as_bytes()),
        "key_trusted": if args.trusted_key.is_some() { "given with --trusted-key" } else { "the packet's own: compare it with the checkpoint key" },
        "packet_id": p["packet_id"],
        "generated_at": p["generated_at"],
        "tenant": p["tenant"]["slug"],
        "tenant_id": p["tenant"]["id"],
        "server_version": p["server_version"],
        "entries": v.entries.iter().map(|(n, s)| json!({"name": n, "bytes": s})).collect::<Vec<_>>(),
        "chains": v.chains,
        "sample_events_verified": v.sample_events,
    })
}

fn print_verified(v: &VerifiedPacket, args: &VerifyArgs) {
    let p = &v.packet;
    let key = hex::encode(v.public_key.as_bytes());
    println!(
        "evidence packet {}: signature OK (every byte of the file checked)",
        args.file.display()
    );
    println!(
        "  tenant {} ({}), produced {} by phivault {}, packet {}",
        p["tenant"]["slug"].as_str().unwrap_or("?"),
        p["tenant"]["id"].as_str().unwrap_or("?"),
        p["generated_at"].as_str().unwrap_or("?"),
        p["server_version"].as_str().unwrap_or("?"),
        p["packet_id"].as_str().unwrap_or("?"),
    );
    for (name, size) in &v.entries {
        println!("  {name}: {size} bytes");
    }
    for c in &v.chains {
        match c.outcome {
            ChainOutcome::Verified => println!(
                "  audit chain {}: verified at export, {} events, signed through {}, {} unsigned; {} checkpoint signature(s) OK",
                c.chain, c.events, c.signed_through, c.unsigned, c.checkpoints_verified
            ),
            ChainOutcome::Fault => println!(
                "  audit chain {}: the export found a fault: {}; {} checkpoint signature(s) OK",
                c.chain,
                c.fault.as_deref().unwrap_or("?"),
                c.checkpoints_verified
            ),
        }
    }
    println!("  {} sample event(s) rehashed and linked", v.sample_events);
    match args.trusted_key {
        Some(_) => println!("  signed by the trusted key {key}"),
        None => {
            println!("  signed by key {key} (trusted because the packet names it)");
            eprintln!(
                "note: no --trusted-key given, so the packet's own key was trusted. Compare {key} with the checkpoint key `phivault audit checkpoint` prints on the server (or the public_key of the audit witness records), then verify with --trusted-key {key}."
            );
        }
    }
    if v.chains.iter().any(|c| c.outcome == ChainOutcome::Fault) {
        eprintln!(
            "warning: the packet is authentic, but it records an audit chain that failed verification at export"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redacted_configuration_holds_no_secret() {
        let mut config = Config {
            database_url: Some(
                "postgres://app:synthetic-db-password@db.example.test/phivault".into(),
            ),
            ..Config::default()
        };
        config.mail.smtp_password = Some("synthetic-smtp-password".into());
        config.objects.s3 = Some(phivault_store::S3Config {
            bucket: "synthetic-bucket".into(),
            region: "us-east-1".into(),
            endpoint: Some("https://user:synthetic-endpoint-secret@s3.example.test".into()),
            access_key_id: Some("SYNTHETICKEYID".into()),
            secret_access_key: Some("synthetic-s3-secret".into()),
            allow_http: false,
        });
        config.scribe.command_args = vec!["--api-key=synthetic-arg-secret".into()];
        let text = serde_json::to_string(&redacted(&config)).unwrap();
        for secret in [
            "synthetic-db-password",
            "synthetic-smtp-password",
            "synthetic-endpoint-secret",
            "SYNTHETICKEYID",
            "synthetic-s3-secret",
            "synthetic-arg-secret",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("synthetic-bucket"));
        assert!(text.contains("db.example.test"));
    }
}
