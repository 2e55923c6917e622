//! What the pipeline's integration tests share: a database on each backend, synthetic
//! tenants, a stand-in for a step's output, and a macro that runs a test on both.

#![allow(dead_code)]

use chrono::{DateTime, Utc};
use phivault_pipeline::jobs::{self, Claimed};
use phivault_pipeline::{PipelineError, Result};
use phivault_store::scratch::ScratchPg;
use phivault_store::{Db, DbOptions, TenantId, TxMode};
use uuid::Uuid;

/// A migrated SQLite database in a temporary directory (kept alive by the `TempDir`).
pub async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("t.db"), &DbOptions::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    (db, dir)
}

/// Another pool on the SQLite file of [`sqlite`], as a second process would open it.
pub async fn sqlite_again(dir: &tempfile::TempDir) -> Db {
    Db::open_sqlite(&dir.path().join("t.db"), &DbOptions::default())
        .await
        .unwrap()
}

/// A scratch PostgreSQL database and a pool on it as the non-owner serving role.
pub async fn postgres() -> (Db, ScratchPg) {
    let scratch = phivault_testkit::scratch_pg().await;
    let db = scratch.app_db(&DbOptions::default()).await.unwrap();
    (db, scratch)
}

/// A synthetic tenant `slug`, inserted directly into the platform registry.
pub async fn tenant(db: &Db, slug: &str) -> TenantId {
    let tenant = TenantId::generate();
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    p.query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant)
        .bind(slug)
        .bind("Synthetic tenant (test)")
        .bind(Utc::now())
        .execute()
        .await
        .unwrap();
    p.commit().await.unwrap();
    tenant
}

/// Enqueues `kind` on a fresh subject in its own transaction.
pub async fn enqueue(db: &Db, tenant: TenantId, kind: &str, now: DateTime<Utc>) -> jobs::Job {
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let job = jobs::enqueue(&mut tx, kind, Uuid::now_v7(), now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    job
}

/// What a step writes: one row in a tenant table (a practice named after the job and
/// the claim, unique per call), in the transaction that completes the job. Completed
/// twice, a job would leave two such rows.
pub async fn complete_with_output(db: &Db, claimed: &Claimed, now: DateTime<Utc>) -> Result<()> {
    let mut tx = db.begin_tenant(claimed.tenant, TxMode::Write).await?;
    tx.query("INSERT INTO practices (tenant_id, id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(Uuid::now_v7())
        .bind(format!(
            "Synthetic output {} {} {}",
            claimed.job.id,
            claimed.lease_token,
            Uuid::new_v4()
        ))
        .bind(now)
        .execute()
        .await
        .map_err(PipelineError::from)?;
    jobs::complete_in(&mut tx, claimed, now).await?;
    tx.commit().await?;
    Ok(())
}

/// How many step outputs job `job` left.
pub async fn outputs_of(db: &Db, tenant: TenantId, job: Uuid) -> usize {
    let mut tx = db.begin_tenant(tenant, TxMode::Read).await.unwrap();
    let names: Vec<(String,)> = tx
        .query("SELECT name FROM practices WHERE tenant_id = $1")
        .fetch_all()
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let prefix = format!("Synthetic output {job} ");
    names.iter().filter(|(n,)| n.starts_with(&prefix)).count()
}

/// The tenant's job `id`.
pub async fn job(db: &Db, tenant: TenantId, id: Uuid) -> jobs::Job {
    let mut tx = db.begin_tenant(tenant, TxMode::Read).await.unwrap();
    let job = jobs::get(&mut tx, id).await.unwrap().expect("job exists");
    tx.commit().await.unwrap();
    job
}

/// Runs each named `async fn(&Db)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { let (db, _dir) = super::common::sqlite().await; super::$name(&db).await; })*
        }
        mod pg {
            $(#[tokio::test] async fn $name() { let (db, _scratch) = super::common::postgres().await; super::$name(&db).await; })*
        }
    };
}
