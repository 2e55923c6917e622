//! `phivault retention run`, and the sweeper the server runs on a timer: every tenant's
//! recordings, transcripts, notes and end-to-end utterances past their retention window
//! are deleted, each in its own transaction with its `retention.object.deleted` event
//! (docs/retention.md).
//!
//! Deleting needs no key material: destroying a data key forgets its wrapped form, so
//! the sweep runs, and the command works, while the keys are sealed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use phivault_audit::Auditor;
use phivault_crypto::keys::KeyService;
use phivault_domain::retention::{self, DataClass, Due};
use phivault_domain::tenants::{self, Tenant};
use phivault_store::{Db, ObjectStorage, TenantId, TxMode};

use crate::config::Config;
use crate::setup;

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// List what is past its retention window (class, id, age; never content) and delete
    /// it: the data key is destroyed, the audio object deleted, the row marked deleted,
    /// each deletion audited. One line per tenant and per item, then a summary.
    Run {
        /// Only list what is due; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this tenant (id or slug).
        #[arg(long, value_name = "TENANT")]
        tenant: Option<String>,
        /// Evaluate the windows as of this time (RFC 3339, e.g. 2030-01-01T00:00:00Z)
        /// instead of now, to preview; deletions are still stamped with the real time.
        #[arg(long, value_name = "RFC3339")]
        as_of: Option<String>,
    },
}

pub async fn run(config: Config, cmd: RetentionCommand) -> Result<()> {
    let RetentionCommand::Run {
        dry_run,
        tenant,
        as_of,
    } = cmd;
    let as_of = match as_of {
        Some(text) => DateTime::parse_from_rfc3339(&text)
            .context("--as-of must be an RFC 3339 time, e.g. 2030-01-01T00:00:00Z")?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let db = setup::open_db(&config).await?;
    let objects =
        ObjectStorage::open(&config.object_store()?).context("cannot open object storage")?;
    let auditor = Auditor::start(db.clone(), config.audit()?);
    let keys = KeyService::sealed();
    let mut p = db.begin_platform(TxMode::Read).await?;
    let tenants: Vec<Tenant> = match &tenant {
        Some(t) => vec![tenants::find(&mut p, t).await?],
        None => tenants::list(&mut p).await?,
    };
    p.commit().await?;

    println!(
        "retention {} as of {}",
        if dry_run {
            "dry run (nothing is deleted)"
        } else {
            "run"
        },
        as_of.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let mut due_total = 0usize;
    let mut deleted: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut failed = 0usize;
    for t in &tenants {
        let items = list_due(&db, t.id, as_of).await?;
        due_total += items.len();
        if items.is_empty() {
            println!("tenant {} ({}): nothing due", t.slug, t.id);
            continue;
        }
        println!("tenant {} ({}): {} due", t.slug, t.id, items.len());
        for due in &items {
            let status = if dry_run {
                "due".to_string()
            } else {
                match delete_one(&db, &keys, &objects, &auditor, t.id, due, Utc::now()).await {
                    Ok(0) => "already deleted".to_string(),
                    Ok(n) => {
                        *deleted.entry(due.class.as_str()).or_default() += n;
                        "deleted".to_string()
                    }
                    Err(e) => {
                        failed += 1;
                        format!("FAILED: {e:#}")
                    }
                }
            };
            println!(
                "  {:<13} {}  age {:<8} {}  [{}]",
                due.class.as_str(),
                due.record_id,
                age(as_of - due.created_at),
                item_note(due),
                status
            );
        }
    }
    let classes: Vec<String> = deleted.iter().map(|(c, n)| format!("{c} {n}")).collect();
    let deleted_total: u64 = deleted.values().sum();
    if dry_run {
        println!("summary: {due_total} due, nothing deleted (dry run)");
    } else {
        println!(
            "summary: {due_total} due, {deleted_total} deleted{}, {failed} failed",
            if classes.is_empty() {
                String::new()
            } else {
                format!(" ({})", classes.join(", "))
            }
        );
    }
    db.close().await;
    if failed > 0 {
        bail!("{failed} deletion(s) failed; they are retried by the next run or sweep");
    }
    Ok(())
}

/// The policy and rule of an item, and the utterance count of a session.
fn item_note(due: &Due) -> String {
    let rule = match due.rule {
        retention::Rule::Window => "window",
        retention::Rule::AudioCap => "audio cap",
    };
    let mut note = format!(
        "{} h {} ({}, {rule})",
        due.policy.window_hours,
        due.policy.basis.as_str(),
        due.policy.source.as_str()
    );
    if due.class == DataClass::E2eUtterance {
        note.push_str(&format!(", {} utterances", due.count));
    }
    note
}

/// A duration as days and hours, or hours and minutes.
fn age(d: chrono::Duration) -> String {
    let minutes = d.num_minutes().max(0);
    let (days, hours, mins) = (minutes / 1440, (minutes / 60) % 24, minutes % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else {
        format!("{hours}h{mins}m")
    }
}

/// What is due in one tenant at `as_of`.
async fn list_due(db: &Db, tenant: TenantId, as_of: DateTime<Utc>) -> Result<Vec<Due>> {
    let mut tx = db.begin_tenant(tenant, TxMode::Read).await?;
    let items = retention::due(&mut tx, as_of).await?;
    tx.commit().await?;
    Ok(items)
}

/// Deletes one item in a transaction of its own, so one failure holds back no other.
async fn delete_one(
    db: &Db,
    keys: &KeyService,
    objects: &ObjectStorage,
    auditor: &Auditor,
    tenant: TenantId,
    due: &Due,
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await?;
    let n = retention::delete(&mut tx, keys, objects, auditor, due, now).await?;
    tx.commit().await?;
    Ok(n)
}

/// Deletes everything due in every tenant at `now`, each item in its own transaction
/// with its audit event. Returns how many items (recordings, transcripts, notes,
/// utterances) were deleted. An item that fails is logged and left for the next sweep;
/// the sweep goes on and reports the failures at the end.
pub async fn sweep(
    db: &Db,
    keys: &KeyService,
    objects: &ObjectStorage,
    auditor: &Auditor,
    now: DateTime<Utc>,
) -> Result<u64> {
    let mut p = db.begin_platform(TxMode::Read).await?;
    let tenants = tenants::list(&mut p).await?;
    p.commit().await?;
    let mut total = 0;
    let mut failed = 0usize;
    for t in tenants {
        for due in list_due(db, t.id, now).await? {
            match delete_one(db, keys, objects, auditor, t.id, &due, now).await {
                Ok(n) => total += n,
                Err(e) => {
                    failed += 1;
                    tracing::error!(
                        tenant = %t.id,
                        class = due.class.as_str(),
                        id = %due.record_id,
                        error = %format!("{e:#}"),
                        "retention: deletion failed; retried on the next sweep"
                    );
                }
            }
        }
    }
    if failed > 0 {
        bail!("retention: {failed} deletion(s) failed ({total} items deleted)");
    }
    Ok(total)
}

/// Runs [`sweep`] every `every` for as long as the server runs.
pub fn spawn_sweeper(
    db: Db,
    keys: Arc<KeyService>,
    objects: ObjectStorage,
    auditor: Auditor,
    every: Duration,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match sweep(&db, &keys, &objects, &auditor, Utc::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "retention: items deleted"),
                // What failed stays due and is retried on the next tick.
                Err(e) => tracing::error!(error = %format!("{e:#}"), "retention sweep failed"),
            }
        }
    });
}
