//! `phivault bench`: throughput figures for BENCHMARKS.md.
//!
//! `bench scoping` measures what tenant scoping costs: encounters created and read
//! through the domain layer in a tenant-bound transaction (tenant bound as `$1`,
//! practice-scope subqueries, and on PostgreSQL `set_config` plus row-level security as
//! the serving role), against the same inserts (data key row, then encounter row, with
//! the same wrapped key and sealed bytes) and primary-key reads issued directly, with no
//! tenant setting, no practice filter and, on PostgreSQL, as a superuser, which bypasses
//! row-level security. The scoped side also does its envelope encryption (a data key
//! wrapped per encounter, the reason sealed and opened), so the ratio is an upper bound
//! on what scoping costs. Both run on the same database, one after the other,
//! alternating which goes first over several rounds; the median round is reported. Both
//! sides use pools of the same size (a one-connection pool makes every acquire wait for
//! the previous connection's return).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{NaiveDate, Utc};
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use phivault_crypto::keys::KeyService;
use phivault_crypto::provider::LocalProvider;
use phivault_domain::encounters::{self, NewEncounter};
use phivault_domain::patients::{self, NewPatient};
use phivault_domain::users::{NewUser, PracticeAccess, Role};
use phivault_domain::{
    EncounterId, PatientId, Phi, PracticeScope, UserId, practices, tenants, users,
};
use phivault_store::scratch::ScratchPg;
use phivault_store::{Db, DbOptions, TenantId, TxMode};
use std::sync::Arc;
use uuid::Uuid;

use crate::config::Config;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Streaming encryption throughput on one core against raw AES-256-GCM, and the
    /// peak memory to encrypt and decrypt one large object.
    Stream(crate::bench_stream::StreamArgs),
    /// Audit chain verification throughput (events per second, one thread, in memory).
    AuditVerify(crate::bench_audit::AuditVerifyArgs),
    /// Audit append throughput through group commit (1 and 16 writers) against plain
    /// inserts of the same rows, on SQLite and PostgreSQL, and verification from the
    /// database.
    AuditAppend(crate::bench_audit::AuditAppendArgs),
    /// Authenticated, authorized (and audited) reads against `GET /healthz` on a
    /// server started on a fresh SQLite data directory: requests/s and p99 latency.
    Auth(crate::bench_auth::AuthArgs),
    /// End-to-end utterance appends (authenticated, authorized, audited) on a server
    /// started per backend: appends/s and p99 latency.
    E2eAppend(crate::bench_e2e::E2eAppendArgs),
    /// Recording upload throughput (one large WAV over loopback HTTP) against writing the
    /// same bytes to the same disk, and the server's peak memory.
    Upload(crate::bench_upload::UploadArgs),
    /// Transcription word error rate and real-time factor of the engines side by side,
    /// clean and with pink noise, on a dialogue set (scripts/make-dialogue-set), and the
    /// effect of a vocabulary prompt.
    Transcribe(crate::bench_transcribe::TranscribeArgs),
    /// A long recording (60 minutes by default) made from a dialogue set, transcribed
    /// the server's way: word error rate, real-time factor, peak memory and progress.
    TranscribeLong(crate::bench_transcribe_long::TranscribeLongArgs),
    /// Tenant-scoped create/read of encounters against the same operations unscoped.
    Scoping {
        /// Backends to measure.
        #[arg(long, value_enum, default_values_t = [BenchBackend::Sqlite, BenchBackend::Postgres])]
        backend: Vec<BenchBackend>,
        /// Encounters created and read per round and mode.
        #[arg(long, default_value_t = 2000)]
        ops: usize,
        /// Rounds per mode (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Superuser URL of a PostgreSQL server; a scratch database is created and dropped.
        #[arg(
            long,
            env = "PHIVAULT_BENCH_PG_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/postgres"
        )]
        pg_admin_url: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum BenchBackend {
    Sqlite,
    Postgres,
}

pub async fn run(config: Config, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Stream(args) => crate::bench_stream::run(args).await,
        BenchCommand::AuditVerify(args) => crate::bench_audit::run(args),
        BenchCommand::AuditAppend(args) => crate::bench_audit::run_append(args).await,
        BenchCommand::Auth(args) => crate::bench_auth::run(args).await,
        BenchCommand::E2eAppend(args) => crate::bench_e2e::run(args).await,
        BenchCommand::Upload(args) => crate::bench_upload::run(args).await,
        BenchCommand::Transcribe(args) => crate::bench_transcribe::run(&config, args).await,
        BenchCommand::TranscribeLong(args) => {
            crate::bench_transcribe_long::run(&config, args).await
        }
        BenchCommand::Scoping {
            backend,
            ops,
            rounds,
            pg_admin_url,
        } => {
            if ops == 0 || rounds == 0 {
                bail!("--ops and --rounds must be at least 1");
            }
            println!(
                "phivault bench scoping: {ops} encounters per round, {rounds} rounds, median reported"
            );
            println!(
                "{:<9} {:<10} {:>14} {:>14} {:>8}",
                "backend", "operation", "unscoped op/s", "scoped op/s", "ratio"
            );
            for b in backend {
                match b {
                    BenchBackend::Sqlite => {
                        let dir = tempfile_dir()?;
                        let db =
                            Db::open_sqlite(&dir.join("bench.db"), &DbOptions::default()).await?;
                        db.migrate().await?;
                        let baseline = Baseline::Sqlite(
                            sqlx::sqlite::SqlitePoolOptions::new()
                                .max_connections(DbOptions::default().max_connections)
                                .connect_with(
                                    sqlx::sqlite::SqliteConnectOptions::new()
                                        .filename(dir.join("bench.db"))
                                        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                                        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                                        .foreign_keys(true),
                                )
                                .await?,
                        );
                        measure("sqlite", &db, &baseline, ops, rounds).await?;
                        db.close().await;
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    BenchBackend::Postgres => {
                        let scratch = ScratchPg::create(&pg_admin_url, "bench")
                            .await
                            .context("cannot create a scratch PostgreSQL database (is --pg-admin-url a superuser?)")?;
                        let db = scratch.app_db(&DbOptions::default()).await?;
                        let admin = sqlx::postgres::PgPoolOptions::new()
                            .max_connections(DbOptions::default().max_connections)
                            .connect(&scratch.admin_url)
                            .await?;
                        let baseline = Baseline::Postgres(admin);
                        let result = measure("postgres", &db, &baseline, ops, rounds).await;
                        db.close().await;
                        if let Baseline::Postgres(p) = &baseline {
                            p.close().await;
                        }
                        scratch.drop_database(&pg_admin_url).await?;
                        result?;
                    }
                }
            }
            Ok(())
        }
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("phivault-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

enum Baseline {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

struct Fixture {
    keys: KeyService,
    tenant: TenantId,
    user: UserId,
    patient: PatientId,
    practice: Uuid,
    /// A wrapped data key and a sealed reason, so the unscoped baseline writes the same
    /// rows and bytes as the scoped path without doing its cryptography.
    wrapped_key: Vec<u8>,
    sealed_reason: Vec<u8>,
}

async fn fixture(db: &Db) -> Result<Fixture> {
    let now = Utc::now();
    let keys = KeyService::with_provider(Arc::new(LocalProvider::ephemeral()?));
    let mut p = db.begin_platform(TxMode::Write).await?;
    let slug = format!("bench-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let tenant =
        tenants::create_with(&mut p, &slug, "Benchmark tenant (synthetic)", true, now).await?;
    p.commit().await?;
    let mut tx = db.begin_tenant(tenant.id, TxMode::Write).await?;
    let practice = practices::create(&mut tx, "Synthetic Clinic", now).await?;
    let user = users::create(
        &mut tx,
        NewUser {
            email: "bench.provider@example.test".into(),
            display_name: "Synthetic Provider".into(),
            roles: vec![Role::Provider],
            practices: PracticeAccess::Only(vec![practice.id]),
        },
        now,
    )
    .await?;
    let patient = patients::create(
        &mut tx,
        &keys,
        PracticeScope::All,
        NewPatient {
            practice_id: practice.id,
            mrn: Phi::new("SYN-000001".into()),
            given_name: Phi::new("Synthetic".into()),
            family_name: Phi::new("Patient".into()),
            date_of_birth: Phi::new(NaiveDate::from_ymd_opt(1980, 1, 1).unwrap_or_default()),
            ssn: None,
            identifiers: Vec::new(),
        },
        now,
    )
    .await?;
    let sample = encounters::create(
        &mut tx,
        &keys,
        PracticeScope::All,
        user.id,
        NewEncounter {
            patient_id: patient.id,
            reason: Some(Phi::new("synthetic reason".into())),
            started_at: None,
        },
        now,
    )
    .await?;
    let (wrapped_key, sealed_reason): (Option<Vec<u8>>, Option<Vec<u8>>) = tx
        .query(
            "SELECT k.wrapped, e.reason FROM encounters e JOIN data_keys k ON k.tenant_id = e.tenant_id AND k.id = e.data_key_id
             WHERE e.tenant_id = $1 AND e.id = $2",
        )
        .bind(sample.id)
        .fetch_one()
        .await?;
    tx.commit().await?;
    Ok(Fixture {
        keys,
        wrapped_key: wrapped_key.unwrap_or_default(),
        sealed_reason: sealed_reason.unwrap_or_default(),
        tenant: tenant.id,
        user: user.id,
        patient: patient.id,
        practice: practice.id.as_uuid(),
    })
}

fn bar(label: &str, total: usize) -> ProgressBar {
    let pb = ProgressBar::new(total as u64);
    pb.set_style(
        ProgressStyle::with_template("  {prefix:<28} [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_string());
    pb
}

async fn scoped_round(
    db: &Db,
    f: &Fixture,
    ops: usize,
    label: &str,
) -> Result<(Duration, Duration)> {
    let scope = PracticeScope::User(f.user);
    let pb = bar(label, ops * 2);
    let mut ids = Vec::with_capacity(ops);
    let start = Instant::now();
    for _ in 0..ops {
        let mut tx = db.begin_tenant(f.tenant, TxMode::Write).await?;
        let new = NewEncounter {
            patient_id: f.patient,
            reason: Some(Phi::new("synthetic reason".into())),
            started_at: None,
        };
        let e = encounters::create(&mut tx, &f.keys, scope, f.user, new, Utc::now()).await?;
        tx.commit().await?;
        ids.push(e.id);
        pb.inc(1);
    }
    let create = start.elapsed();
    let start = Instant::now();
    for id in &ids {
        let mut tx = db.begin_tenant(f.tenant, TxMode::Read).await?;
        let e = encounters::get(&mut tx, &f.keys, scope, *id).await?;
        tx.commit().await?;
        std::hint::black_box(e);
        pb.inc(1);
    }
    let read = start.elapsed();
    pb.finish_and_clear();
    Ok((create, read))
}

const RAW_KEY: &str =
    "INSERT INTO data_keys (tenant_id, id, kek_version, kind, wrapped, created_at)
     VALUES ($1, $2, 1, 'encounter', $3, $4)";
const RAW_INSERT: &str = "INSERT INTO encounters (tenant_id, id, patient_id, practice_id, provider_id, data_key_id, status, reason, started_at, created_at)
     VALUES ($1, $2, $3, $4, $5, $2, 'open', $6, $7, $8)";
const RAW_GET: &str = "SELECT e.id, e.patient_id, e.practice_id, e.provider_id, e.status, e.reason, e.started_at, e.created_at,
            k.kek_version, k.wrapped
     FROM encounters e JOIN data_keys k ON k.tenant_id = e.tenant_id AND k.id = e.data_key_id
     WHERE e.tenant_id = $1 AND e.id = $2";

/// The row the baseline reads; decoded to measure decoding, never inspected.
#[derive(sqlx::FromRow)]
#[allow(dead_code)]
struct RawRow {
    id: Uuid,
    patient_id: Uuid,
    practice_id: Uuid,
    provider_id: Uuid,
    status: String,
    reason: Option<Vec<u8>>,
    started_at: chrono::DateTime<Utc>,
    created_at: chrono::DateTime<Utc>,
    kek_version: i64,
    wrapped: Option<Vec<u8>>,
}

/// One unscoped round; `$begin_read` opens the reading transactions as the scoped side
/// does (`BEGIN READ ONLY` on PostgreSQL, a deferred `BEGIN` on SQLite).
macro_rules! raw_round {
    ($pool:expr, $f:expr, $ops:expr, $pb:expr, $begin_read:expr) => {{
        let mut ids = Vec::with_capacity($ops);
        let start = Instant::now();
        for _ in 0..$ops {
            let id = EncounterId::generate().as_uuid();
            let now = Utc::now();
            let mut tx = $pool.begin().await?;
            sqlx::query(RAW_KEY)
                .bind($f.tenant.as_uuid())
                .bind(id)
                .bind($f.wrapped_key.clone())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(RAW_INSERT)
                .bind($f.tenant.as_uuid())
                .bind(id)
                .bind($f.patient.as_uuid())
                .bind($f.practice)
                .bind($f.user.as_uuid())
                .bind($f.sealed_reason.clone())
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            ids.push(id);
            $pb.inc(1);
        }
        let create = start.elapsed();
        let start = Instant::now();
        for id in &ids {
            let mut tx = $pool.begin_with($begin_read).await?;
            let row: RawRow = sqlx::query_as(RAW_GET)
                .bind($f.tenant.as_uuid())
                .bind(*id)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            std::hint::black_box(row);
            $pb.inc(1);
        }
        (create, start.elapsed())
    }};
}

async fn baseline_round(
    base: &Baseline,
    f: &Fixture,
    ops: usize,
    label: &str,
) -> Result<(Duration, Duration)> {
    let pb = bar(label, ops * 2);
    let out = match base {
        Baseline::Sqlite(pool) => raw_round!(pool, f, ops, pb, "BEGIN"),
        Baseline::Postgres(pool) => {
            // A superuser bypasses row-level security even on FORCEd tables.
            raw_round!(pool, f, ops, pb, "BEGIN READ ONLY")
        }
    };
    pb.finish_and_clear();
    Ok(out)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn measure(name: &str, db: &Db, base: &Baseline, ops: usize, rounds: usize) -> Result<()> {
    let f = fixture(db).await?;
    // Warm-up: caches, prepared statements, page allocation.
    let warm = ops.min(200);
    scoped_round(db, &f, warm, &format!("{name} warm-up scoped")).await?;
    baseline_round(base, &f, warm, &format!("{name} warm-up unscoped")).await?;
    let (mut sc, mut sr, mut bc, mut br) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate which mode goes first, so neither always meets the warmer cache.
        for scoped_turn in if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        } {
            if scoped_turn {
                let (c, r) =
                    scoped_round(db, &f, ops, &format!("{name} round {round} scoped")).await?;
                sc.push(c);
                sr.push(r);
            } else {
                let (c, r) =
                    baseline_round(base, &f, ops, &format!("{name} round {round} unscoped"))
                        .await?;
                bc.push(c);
                br.push(r);
            }
        }
    }
    let rate = |d: Duration| ops as f64 / d.as_secs_f64();
    for (op, b, s) in [
        ("create", median(bc), median(sc)),
        ("read", median(br), median(sr)),
    ] {
        let (bo, so) = (rate(b), rate(s));
        println!("{name:<9} {op:<10} {bo:>14.0} {so:>14.0} {:>8.3}", so / bo);
    }
    Ok(())
}
