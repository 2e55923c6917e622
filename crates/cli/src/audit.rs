//! `phivault audit`: verify the stored chains, export them, sign checkpoints.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use ed25519_dalek::VerifyingKey;
use indicatif::{ProgressBar, ProgressStyle};
use phivault_audit::check::{self, VerifyError};
use phivault_audit::ledger::{self, ChainId, CheckpointOutcome};
use phivault_audit::witness::Witness;
use phivault_audit::{ChainedEvent, signing};
use phivault_crypto::keys::{KeyService, KeyStatus};
use phivault_domain::tenants;
use phivault_store::{Db, TxMode};

use crate::config::Config;
use crate::setup;

/// Events read per transaction while exporting.
const PAGE: u32 = 5_000;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the audit chains; exit non-zero at the first fault.
    ///
    /// Checks every event's hash and link, every checkpoint signature (against the keys
    /// of the key hierarchy, or --public-key), the witness copies and the recorded head,
    /// for the platform chain and every tenant's (or one tenant's). Prints one line per
    /// chain: events, the sequence signed through, and the events after the last
    /// checkpoint (unsigned, with a warning). At the first fault it names the chain, the
    /// sequence number and the kind of fault, and exits non-zero; it exits 0 when every
    /// chain verifies.
    Verify(VerifyArgs),
    /// Export the audit trail as FHIR R4 AuditEvent NDJSON or as raw JSON lines.
    ///
    /// Writes the platform chain, then every tenant's (or one tenant's), each in
    /// sequence order, optionally limited to a time range. Events carry identifiers and
    /// field names, never PHI. Export does not verify: run `phivault audit verify` for
    /// that.
    Export(ExportArgs),
    /// Sign a checkpoint for every chain now and copy it to the witness.
    ///
    /// Signs a checkpoint over the current head of every chain with events since its
    /// last one, and copies it to the witness (audit.witness), along with any earlier
    /// checkpoint the witness lacks. Useful before a verify, so that no event is left
    /// unsigned. Needs the unsealed keys; prints the checkpoint public key (for `verify
    /// --public-key`) on standard error.
    Checkpoint,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Verify only this tenant's chain (id or slug); default: the platform chain and
    /// every tenant's.
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
    /// Trust checkpoints signed by this Ed25519 public key (64 hex digits, as `phivault
    /// audit checkpoint` prints it) instead of the keys unwrapped from the key hierarchy;
    /// the keys then need not be unsealed. Repeat for several.
    #[arg(long = "public-key", value_name = "HEX", value_parser = parse_public_key)]
    public_keys: Vec<VerifyingKey>,
    /// Do not read the checkpoint copies in the witness (audit.witness); only the
    /// database's checkpoints are checked.
    #[arg(long)]
    no_witness: bool,
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// FHIR R4 AuditEvent resources, one per line.
    FhirNdjson,
    /// The stored events, one JSON object per line, with chain, sequence, prev_hash and
    /// hash (hex).
    Jsonl,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: ExportFormat,
    /// Export only this tenant's chain (id or slug); default: the platform chain and
    /// every tenant's.
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
    /// Only events at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only events before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// Write to this file (created with mode 0600, replaced if present) instead of
    /// standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "expected an Ed25519 public key as 64 hex digits".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not a valid Ed25519 public key".to_string())
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-01-31T00:00:00Z ({e})"))
}

pub async fn run(config: Config, cmd: AuditCommand) -> Result<()> {
    let db = setup::open_db(&config).await?;
    let result = match cmd {
        AuditCommand::Verify(args) => verify(&config, &db, args).await,
        AuditCommand::Export(args) => export(&db, args).await,
        AuditCommand::Checkpoint => checkpoint(&config, &db).await,
    };
    db.close().await;
    result
}

/// The chains to work on: one tenant's, or all of them.
async fn select_chains(db: &Db, tenant: Option<&str>) -> Result<Vec<ChainId>> {
    match tenant {
        Some(t) => {
            let mut tx = db.begin_platform(TxMode::Read).await?;
            let tenant = tenants::find(&mut tx, t)
                .await
                .with_context(|| format!("tenant {t:?}"))?;
            tx.commit().await?;
            Ok(vec![ChainId::Tenant(tenant.id)])
        }
        None => Ok(check::chains(db).await?),
    }
}

/// The unsealed key service, or an error saying how to unseal.
async fn unsealed_keys(config: &Config, what: &str) -> Result<std::sync::Arc<KeyService>> {
    let keys = crate::keys::start(config).await?;
    if keys.status() == KeyStatus::Sealed {
        bail!(
            "keys are sealed: {what} needs the keyring passphrase (PHIVAULT_KEYRING_PASSPHRASE or keys.passphrase_file)"
        );
    }
    Ok(keys)
}

/// A progress bar on standard error, hidden when standard error is not a terminal.
fn progress(len: u64, template: &str, chain: ChainId) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(chain.to_string());
    bar
}

async fn verify(config: &Config, db: &Db, args: VerifyArgs) -> Result<()> {
    let chains = select_chains(db, args.tenant.as_deref()).await?;
    let trusted = if args.public_keys.is_empty() {
        let keys = unsealed_keys(config, "verifying without --public-key").await?;
        signing::trusted_keys(db, &keys)
            .await
            .context("cannot load the checkpoint keys")?
    } else {
        args.public_keys
    };
    if trusted.is_empty() {
        eprintln!("note: no checkpoint key exists yet; any signed checkpoint will be refused");
    }
    for key in &trusted {
        eprintln!("trusting checkpoint key {}", hex::encode(key.as_bytes()));
    }
    let witness = if args.no_witness {
        None
    } else {
        let w = config.witness()?;
        eprintln!("witness: {}", w.describe());
        Some(w)
    };
    let mut unsigned_total = 0u64;
    for chain in &chains {
        let chain = *chain;
        let len = check::chain_length(db, chain).await?;
        let bar = progress(len, "  verify {msg} [{wide_bar}] {pos}/{len} events", chain);
        let tick = bar.clone();
        let mut on_progress = move |n: u64| tick.set_position(n);
        let result =
            check::verify_chain(db, chain, &trusted, witness.as_ref(), &mut on_progress).await;
        bar.finish_and_clear();
        match result {
            Ok(v) => {
                println!(
                    "audit chain {chain}: ok, {} events, signed through {}, {} unsigned",
                    v.events, v.signed_through, v.unsigned
                );
                if v.unsigned > 0 {
                    eprintln!(
                        "warning: audit chain {chain}: {} event(s) after sequence {} are covered by no signed checkpoint; run `phivault audit checkpoint` and verify again",
                        v.unsigned, v.signed_through
                    );
                }
                unsigned_total += v.unsigned;
            }
            Err(e) => return Err(fault(chain, &e)),
        }
    }
    println!(
        "{} audit chain(s) verified{}",
        chains.len(),
        if unsigned_total > 0 {
            format!("; {unsigned_total} event(s) unsigned")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn fault(chain: ChainId, e: &VerifyError) -> anyhow::Error {
    match e.sequence() {
        Some(seq) => anyhow::anyhow!("audit chain {chain}: FAULT at sequence {seq}: {e}"),
        None => anyhow::anyhow!("audit chain {chain}: cannot be verified: {e}"),
    }
}

async fn page(db: &Db, chain: ChainId, after: u64) -> Result<Vec<ChainedEvent>> {
    let rows = match chain {
        ChainId::Tenant(t) => {
            let mut tx = db.begin_tenant(t, TxMode::Read).await?;
            let rows = ledger::tenant_page(&mut tx, after, PAGE).await?;
            tx.commit().await?;
            rows
        }
        ChainId::Platform => {
            let mut tx = db.begin_platform(TxMode::Read).await?;
            let rows = ledger::platform_page(&mut tx, after, PAGE).await?;
            tx.commit().await?;
            rows
        }
    };
    rows.into_iter()
        .map(|r| {
            r.with_context(|| {
                format!("audit chain {chain}: cannot export (run `phivault audit verify`)")
            })
        })
        .collect()
}

fn jsonl(chain: ChainId, stored: &ChainedEvent) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(&stored.event)?;
    v["chain"] = serde_json::Value::String(chain.to_string());
    v["prev_hash"] = serde_json::Value::String(hex::encode(stored.prev_hash));
    v["hash"] = serde_json::Value::String(hex::encode(stored.hash));
    Ok(v)
}

fn create_private(path: &Path) -> Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

async fn export(db: &Db, args: ExportArgs) -> Result<()> {
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        bail!("--since must be before --until");
    }
    let chains = select_chains(db, args.tenant.as_deref()).await?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(create_private(path)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut total = 0u64;
    for chain in &chains {
        let chain = *chain;
        let len = check::chain_length(db, chain).await?;
        let bar = progress(len, "  export {msg} [{wide_bar}] {pos}/{len} events", chain);
        let mut after = 0u64;
        loop {
            let events = page(db, chain, after).await?;
            let n = events.len();
            for stored in &events {
                after = stored.event.sequence;
                let t = stored.event.time;
                if args.since.is_some_and(|s| t < s) || args.until.is_some_and(|u| t >= u) {
                    continue;
                }
                let line = match args.format {
                    ExportFormat::FhirNdjson => phivault_audit::fhir::audit_event(chain, stored),
                    ExportFormat::Jsonl => jsonl(chain, stored)?,
                };
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
                total += 1;
            }
            bar.set_position(after);
            if n < PAGE as usize {
                break;
            }
        }
        bar.finish_and_clear();
    }
    out.flush().context("cannot write the export")?;
    drop(out);
    eprintln!(
        "exported {total} audit event(s) from {} chain(s){}",
        chains.len(),
        args.out
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

async fn checkpoint(config: &Config, db: &Db) -> Result<()> {
    let audit = config.audit()?;
    let witness: Witness = match audit.witness {
        Some(w) => w,
        None => config.witness()?,
    };
    let keys = unsealed_keys(config, "signing a checkpoint").await?;
    let signer = signing::load_or_create_signer(db, &keys, Utc::now())
        .await
        .context("cannot load the checkpoint key")?;
    let public = signer.verifying_key();
    eprintln!("checkpoint key {}", hex::encode(public.as_bytes()));
    eprintln!("witness: {}", witness.describe());
    let mut failures = 0usize;
    for chain in check::chains(db).await? {
        let now = Utc::now();
        let outcome = match chain {
            ChainId::Tenant(t) => {
                let mut tx = db.begin_tenant(t, TxMode::Write).await?;
                let o = ledger::checkpoint_tenant(&mut tx, &signer, now).await;
                if o.is_ok() {
                    tx.commit().await?;
                }
                o
            }
            ChainId::Platform => {
                let mut tx = db.begin_platform(TxMode::Write).await?;
                let o = ledger::checkpoint_platform(&mut tx, &signer, now).await;
                if o.is_ok() {
                    tx.commit().await?;
                }
                o
            }
        };
        match outcome {
            Ok(CheckpointOutcome::Signed(cp)) => {
                witness
                    .put(chain, &cp, public.as_bytes())
                    .await
                    .with_context(|| format!("audit chain {chain}: cannot write the witness"))?;
                println!(
                    "audit chain {chain}: checkpoint signed at sequence {}",
                    cp.checkpoint.sequence
                );
            }
            Ok(CheckpointOutcome::UpToDate) => {
                println!("audit chain {chain}: up to date");
            }
            Err(e) => {
                eprintln!("audit chain {chain}: no checkpoint: {e}");
                failures += 1;
                continue;
            }
        }
        // Copy to the witness any checkpoint of ours it lacks (a witness write the
        // server could not make). Only checkpoints that verify under this key are copied.
        let witnessed = witness.list(chain).await?;
        let mut copied = 0usize;
        for stored in check::stored_checkpoints(db, chain).await? {
            if stored.public_key == *public.as_bytes()
                && stored.signed.verify(&public)
                && !witnessed.iter().any(|w| w.checkpoint == stored.signed)
            {
                witness
                    .put(chain, &stored.signed, public.as_bytes())
                    .await?;
                copied += 1;
            }
        }
        if copied > 0 {
            println!("audit chain {chain}: {copied} earlier checkpoint(s) copied to the witness");
        }
    }
    if failures > 0 {
        bail!(
            "{failures} chain(s) could not be checkpointed; run `phivault audit verify` to locate the fault"
        );
    }
    Ok(())
}
