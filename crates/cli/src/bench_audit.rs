//! `phivault bench audit-verify`: how fast a chain verifies in memory, in events per
//! second; `phivault bench audit-append`: how fast events are appended through group
//! commit, with 1 and 16 concurrent writers, against plain inserts of the same rows, and
//! how fast the stored chain then verifies from the database.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{TimeZone, Utc};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use phivault_audit::{
    Action, Actor, ActorKind, AuditEvent, ChainedEvent, Checkpoint, CheckpointSigner, GENESIS,
    Outcome, Resource, Source, chain, verify,
};
use phivault_store::TenantId;
use uuid::Uuid;

#[derive(Args)]
pub struct AuditVerifyArgs {
    /// Events in the chain.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// A signed checkpoint every this many events.
    #[arg(long, default_value_t = 10_000)]
    checkpoint_every: u64,
    /// Verification rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn synthetic_event(seq: u64, tenant: TenantId) -> AuditEvent {
    AuditEvent {
        sequence: seq,
        time: Utc
            .timestamp_micros(1_800_000_000_000_000 + seq as i64)
            .single()
            .unwrap_or_default(),
        tenant: Some(tenant),
        actor: Actor {
            kind: ActorKind::User,
            id: Uuid::from_u128(u128::from(seq % 97)).to_string(),
            role: "provider".into(),
        },
        source: Source {
            ip: "127.0.0.1".into(),
            user_agent: "phivault-bench (synthetic)".into(),
            device: String::new(),
        },
        action: Action::PhiRead,
        resource: Resource {
            kind: "patient".into(),
            id: Uuid::from_u128(u128::from(seq)).to_string(),
        },
        fields: vec![
            "mrn".into(),
            "given_name".into(),
            "family_name".into(),
            "date_of_birth".into(),
        ],
        outcome: Outcome::Success,
        reason: None,
        request_id: Uuid::from_u128(u128::from(seq) << 64).to_string(),
        before: None,
        after: None,
    }
}

pub fn run(args: AuditVerifyArgs) -> Result<()> {
    if args.events == 0 || args.checkpoint_every == 0 || args.rounds == 0 {
        bail!("--events, --checkpoint-every and --rounds must be at least 1");
    }
    let signer = CheckpointSigner::from_seed(&[0x42; 32]);
    let tenant = TenantId::from_uuid(Uuid::from_u128(1));
    let bar = ProgressBar::new(args.events);
    bar.set_style(
        ProgressStyle::with_template("  building chain [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut events: Vec<ChainedEvent> = Vec::with_capacity(args.events as usize);
    let mut checkpoints = Vec::new();
    let mut prev = GENESIS;
    for seq in 1..=args.events {
        let e = chain(prev, synthetic_event(seq, tenant));
        prev = e.hash;
        if seq.is_multiple_of(args.checkpoint_every) || seq == args.events {
            checkpoints.push(signer.sign(Checkpoint {
                sequence: seq,
                head: e.hash,
                time: e.event.time,
            }));
        }
        events.push(e);
        if seq.is_multiple_of(10_000) {
            bar.set_position(seq);
        }
    }
    bar.finish_and_clear();
    let key = signer.verifying_key();
    let mut rates = Vec::new();
    for round in 1..=args.rounds {
        let start = Instant::now();
        let v = verify(&events, &checkpoints, &key)
            .map_err(|f| anyhow::anyhow!("the synthetic chain failed: {f}"))?;
        let secs = start.elapsed().as_secs_f64();
        rates.push(v.events as f64 / secs);
        eprintln!(
            "  round {round}: {} events, {} checkpoints, {:.3} s",
            v.events,
            checkpoints.len(),
            secs
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "phivault bench audit-verify: {} events, a checkpoint every {}, one thread: {:.0} events/s (median of {})",
        args.events,
        args.checkpoint_every,
        rates[rates.len() / 2],
        args.rounds
    );
    Ok(())
}

/// `phivault bench audit-append`.
#[derive(Args)]
pub struct AuditAppendArgs {
    /// Backends to measure.
    #[arg(long, value_enum, default_values_t = [crate::bench::BenchBackend::Sqlite, crate::bench::BenchBackend::Postgres])]
    backend: Vec<crate::bench::BenchBackend>,
    /// Events written per measurement.
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Concurrent writers to measure with (each awaits its event's commit, as a request
    /// does).
    #[arg(long, default_values_t = [1, 16])]
    writers: Vec<usize>,
    /// A signed checkpoint every this many events of the chain.
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    /// Superuser URL of a PostgreSQL server; a scratch database is created and dropped.
    #[arg(
        long,
        env = "PHIVAULT_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_admin_url: String,
}

/// A pool that writes the same rows to a plain table: no chain, no head row, no
/// triggers, no row-level security.
enum Plain {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

const PLAIN_INSERT: &str = "INSERT INTO bench_plain_events (tenant_id, seq, time_us, actor_kind, actor_id,
    actor_role, source_ip, source_user_agent, source_device, action, resource_type, resource_id,
    fields, outcome, reason, request_id, before_json, after_json, prev_hash, hash)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)";

macro_rules! bind_plain {
    ($q:expr, $tenant:expr, $seq:expr, $e:expr) => {
        $q.bind($tenant)
            .bind($seq as i64)
            .bind($e.time.timestamp_micros())
            .bind($e.actor.kind.as_str())
            .bind($e.actor.id.clone())
            .bind($e.actor.role.clone())
            .bind($e.source.ip.clone())
            .bind($e.source.user_agent.clone())
            .bind($e.source.device.clone())
            .bind($e.action.as_str())
            .bind($e.resource.kind.clone())
            .bind($e.resource.id.clone())
            .bind(serde_json::to_string(&$e.fields).unwrap_or_default())
            .bind($e.outcome.as_str())
            .bind($e.reason.clone())
            .bind($e.request_id.clone())
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(vec![0u8; 32])
            .bind(vec![0u8; 32])
    };
}

impl Plain {
    /// One event per transaction, as an application without group commit writes.
    async fn insert_one(&self, tenant: Uuid, seq: u64, e: &AuditEvent) -> Result<()> {
        match self {
            Plain::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                bind_plain!(sqlx::query(PLAIN_INSERT), tenant, seq, e)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Plain::Postgres(p) => {
                let mut tx = p.begin().await?;
                bind_plain!(sqlx::query(PLAIN_INSERT), tenant, seq, e)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Many events in one transaction: the best a plain insert can do.
    async fn insert_batch(&self, tenant: Uuid, first: u64, events: &[AuditEvent]) -> Result<()> {
        match self {
            Plain::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                for (i, e) in events.iter().enumerate() {
                    bind_plain!(sqlx::query(PLAIN_INSERT), tenant, first + i as u64, e)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Plain::Postgres(p) => {
                let mut tx = p.begin().await?;
                for (i, e) in events.iter().enumerate() {
                    bind_plain!(sqlx::query(PLAIN_INSERT), tenant, first + i as u64, e)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    async fn close(&self) {
        match self {
            Plain::Sqlite(p) => p.close().await,
            Plain::Postgres(p) => p.close().await,
        }
    }
}

async fn new_tenant(db: &phivault_store::Db) -> Result<TenantId> {
    let mut p = db.begin_platform(phivault_store::TxMode::Write).await?;
    let slug = format!("bench-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let t = phivault_domain::tenants::create_with(
        &mut p,
        &slug,
        "Benchmark tenant (synthetic)",
        true,
        Utc::now(),
    )
    .await?;
    p.commit().await?;
    Ok(t.id)
}

fn progress(label: &str, len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("  {label:<28} [{{bar:30}}] {{pos}}/{{len}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

async fn chained(
    db: &phivault_store::Db,
    writers: usize,
    events: u64,
    checkpoint_every: u64,
) -> Result<(f64, TenantId)> {
    let tenant = new_tenant(db).await?;
    let auditor = phivault_audit::Auditor::start(
        db.clone(),
        phivault_audit::AuditConfig {
            checkpoint_every,
            ..phivault_audit::AuditConfig::default()
        },
    );
    auditor.set_signer(CheckpointSigner::from_seed(&[0x42; 32]));
    let per = events / writers as u64;
    let bar = progress(
        &format!("chained, {writers} writer(s)"),
        per * writers as u64,
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let auditor = auditor.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let mut e = synthetic_event(w as u64 * per + i + 1, tenant);
                e.tenant = Some(tenant);
                auditor.record(e).await?;
                bar.inc(1);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    auditor.checkpoint_now().await?;
    Ok(((per * writers as u64) as f64 / secs, tenant))
}

async fn plain_per_tx(plain: &Arc<Plain>, writers: usize, events: u64) -> Result<f64> {
    let tenant = Uuid::new_v4();
    let per = events / writers as u64;
    let bar = progress(&format!("plain, {writers} writer(s)"), per * writers as u64);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let plain = plain.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let seq = w as u64 * per + i + 1;
                let e = synthetic_event(seq, TenantId::from_uuid(tenant));
                plain.insert_one(tenant, seq, &e).await?;
                bar.inc(1);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok((per * writers as u64) as f64 / secs)
}

async fn plain_batched(plain: &Plain, events: u64) -> Result<f64> {
    let tenant = Uuid::new_v4();
    let batch: Vec<AuditEvent> = (1..=1024)
        .map(|s| synthetic_event(s, TenantId::from_uuid(tenant)))
        .collect();
    let start = Instant::now();
    let mut written = 0u64;
    while written < events {
        let n = (events - written).min(batch.len() as u64) as usize;
        plain.insert_batch(tenant, written + 1, &batch[..n]).await?;
        written += n as u64;
    }
    Ok(written as f64 / start.elapsed().as_secs_f64())
}

async fn measure_append(
    name: &str,
    db: &phivault_store::Db,
    plain: Plain,
    args: &AuditAppendArgs,
) -> Result<()> {
    let plain = Arc::new(plain);
    let batched = plain_batched(&plain, args.events).await?;
    println!(
        "{name:<9} {:>7} {:>16} {:>16} {:>12}",
        "-",
        "-",
        format!("{batched:.0}"),
        "(batched 1024/tx)"
    );
    let mut last_tenant = None;
    for &w in &args.writers {
        let per_tx = plain_per_tx(&plain, w, args.events).await?;
        let (rate, tenant) = chained(db, w, args.events, args.checkpoint_every).await?;
        last_tenant = Some(tenant);
        println!(
            "{name:<9} {w:>7} {:>16} {:>16} {:>12}",
            format!("{rate:.0}"),
            format!("{per_tx:.0}"),
            format!("{:.2}", rate / batched)
        );
    }
    plain.close().await;
    if let Some(tenant) = last_tenant {
        let chain = phivault_audit::ChainId::Tenant(tenant);
        let start = Instant::now();
        let v = phivault_audit::check::verify_chain(
            db,
            chain,
            &[CheckpointSigner::from_seed(&[0x42; 32]).verifying_key()],
            None,
            &mut |_| {},
        )
        .await
        .map_err(|e| anyhow::anyhow!("the benchmark chain failed to verify: {e}"))?;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name:<9} verify from the database: {} events in {secs:.3} s = {:.0} events/s (signed through {})",
            v.events,
            v.events as f64 / secs,
            v.signed_through
        );
    }
    Ok(())
}

pub async fn run_append(args: AuditAppendArgs) -> Result<()> {
    if args.events == 0 || args.writers.contains(&0) || args.checkpoint_every == 0 {
        bail!("--events, --writers and --checkpoint-every must be at least 1");
    }
    println!(
        "phivault bench audit-append: {} events per measurement; chained = group-committed, hash-chained, checkpointed every {}",
        args.events, args.checkpoint_every
    );
    println!(
        "{:<9} {:>7} {:>16} {:>16} {:>12}",
        "backend", "writers", "chained ev/s", "plain 1/tx ev/s", "chained/batched"
    );
    for b in &args.backend {
        match b {
            crate::bench::BenchBackend::Sqlite => {
                let dir = std::env::temp_dir()
                    .join(format!("phivault-bench-{}", Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir)?;
                let path = dir.join("bench.db");
                let db =
                    phivault_store::Db::open_sqlite(&path, &phivault_store::DbOptions::default())
                        .await?;
                db.migrate().await?;
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(phivault_store::DbOptions::default().max_connections)
                    .connect_with(
                        sqlx::sqlite::SqliteConnectOptions::new()
                            .filename(&path)
                            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                            .busy_timeout(std::time::Duration::from_secs(30)),
                    )
                    .await?;
                sqlx::query(
                    "CREATE TABLE bench_plain_events AS SELECT * FROM audit_events WHERE 0",
                )
                .execute(&pool)
                .await?;
                let result = measure_append("sqlite", &db, Plain::Sqlite(pool), &args).await;
                db.close().await;
                let _ = std::fs::remove_dir_all(&dir);
                result?;
            }
            crate::bench::BenchBackend::Postgres => {
                let scratch = phivault_store::scratch::ScratchPg::create(
                    &args.pg_admin_url,
                    "bench",
                )
                .await
                .context(
                    "cannot create a scratch PostgreSQL database (is --pg-admin-url a superuser?)",
                )?;
                let db = scratch
                    .app_db(&phivault_store::DbOptions::default())
                    .await?;
                let admin = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(phivault_store::DbOptions::default().max_connections)
                    .connect(&scratch.admin_url)
                    .await?;
                sqlx::query(
                    "CREATE TABLE bench_plain_events (LIKE audit_events INCLUDING DEFAULTS)",
                )
                .execute(&admin)
                .await?;
                let result = measure_append("postgres", &db, Plain::Postgres(admin), &args).await;
                db.close().await;
                scratch.drop_database(&args.pg_admin_url).await?;
                result?;
            }
        }
    }
    Ok(())
}
