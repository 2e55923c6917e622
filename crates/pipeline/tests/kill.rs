//! A worker process really killed (SIGKILL) while it holds a job: once its lease runs
//! out another worker takes the job over and completes it, once.
//!
//! The dying worker is this test binary run again as a child, selected by an
//! environment variable: it claims the job on the same database, writes a marker file
//! saying so, and blocks until killed.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use phivault_pipeline::PipelineError;
use phivault_pipeline::jobs::{self, Claimed, JobState, WorkerId};
use phivault_store::{Db, DbOptions, TenantId};
use uuid::Uuid;

use common::{complete_with_output, enqueue, job, outputs_of, tenant};

/// Set in the child: `<database URL> <tenant> <marker file>`.
const CHILD: &str = "PHIVAULT_TEST_PIPELINE_KILL_CHILD";
const LEASE: Duration = Duration::from_secs(60);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap()
}

/// The child: claim, say so, block.
async fn child(spec: &str) {
    let mut parts = spec.split(' ');
    let (url, marker) = (parts.next().unwrap(), parts.nth(1).unwrap());
    let db = Db::connect(url, &DbOptions::default()).await.unwrap();
    let worker = WorkerId::new("doomed-child").unwrap();
    let claimed = jobs::claim(&db, &worker, &["transcribe"], LEASE, t0())
        .await
        .unwrap()
        .expect("the child claims the job");
    // Written whole, then renamed: the parent never reads half a marker.
    let partial = format!("{marker}.partial");
    std::fs::write(
        &partial,
        format!("{} {}", claimed.job.id, claimed.lease_token),
    )
    .unwrap();
    std::fs::rename(&partial, marker).unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    panic!("the child was not killed");
}

async fn wait_for_marker(marker: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(text) = std::fs::read_to_string(marker) {
            return text;
        }
        let exited = child.try_wait().unwrap();
        if exited.is_none() && Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        if exited.is_some() || Instant::now() > deadline {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                stdout.read_to_string(&mut out).unwrap();
            }
            if let Some(mut stderr) = child.stderr.take() {
                stderr.read_to_string(&mut out).unwrap();
            }
            panic!("the child did not claim the job ({exited:?}):\n{out}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The parent: enqueue, let the child claim, kill it, take the job over.
async fn parent(db: &Db, url: &str, test_name: &str) {
    let t: TenantId = tenant(db, "synthetic-a").await;
    let queued = enqueue(db, t, "transcribe", t0()).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("claimed");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{url} {t} {}", marker.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = wait_for_marker(&marker, &mut child).await;
    let (job_id, token) = text.split_once(' ').unwrap();
    let (job_id, token): (Uuid, Uuid) = (job_id.parse().unwrap(), token.parse().unwrap());
    assert_eq!(job_id, queued.id);
    let held = job(db, t, queued.id).await;
    assert_eq!(held.state, JobState::Running);
    assert_eq!(held.lease_owner.as_deref(), Some("doomed-child"));

    child.kill().unwrap();
    let status = child.wait().unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "killed with SIGKILL: {status}");
    }

    // The dead worker's lease still holds until it runs out...
    let rescuer = WorkerId::new("rescuer").unwrap();
    let kinds = ["transcribe"];
    let before_expiry = t0() + TimeDelta::seconds(59);
    assert!(
        jobs::claim(db, &rescuer, &kinds, LEASE, before_expiry)
            .await
            .unwrap()
            .is_none()
    );
    // ...then the job is taken over, and completed once.
    let after_expiry = t0() + TimeDelta::seconds(61);
    let rescued = jobs::claim(db, &rescuer, &kinds, LEASE, after_expiry)
        .await
        .unwrap()
        .expect("the job is reclaimed after the lease");
    assert_eq!(rescued.job.id, queued.id);
    assert_eq!(rescued.job.attempts, 2);
    assert_ne!(rescued.lease_token, token);

    // Had the child come back to life, its claim would be refused.
    let ghost = Claimed {
        tenant: t,
        job: held,
        lease_token: token,
    };
    let err = complete_with_output(db, &ghost, after_expiry)
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::LeaseLost), "{err:?}");

    complete_with_output(db, &rescued, after_expiry)
        .await
        .unwrap();
    let done = job(db, t, queued.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(outputs_of(db, t, queued.id).await, 1);
    assert!(
        jobs::claim(
            db,
            &rescuer,
            &kinds,
            LEASE,
            after_expiry + TimeDelta::days(1)
        )
        .await
        .unwrap()
        .is_none()
    );
}

#[tokio::test]
async fn sqlite_killed_worker_process_job_is_taken_over_and_completed_once() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec).await;
    }
    let (db, dir) = common::sqlite().await;
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    parent(
        &db,
        &url,
        "sqlite_killed_worker_process_job_is_taken_over_and_completed_once",
    )
    .await;
}

#[tokio::test]
async fn pg_killed_worker_process_job_is_taken_over_and_completed_once() {
    if let Ok(spec) = std::env::var(CHILD) {
        return child(&spec).await;
    }
    let (db, scratch) = common::postgres().await;
    parent(
        &db,
        &scratch.app_url,
        "pg_killed_worker_process_job_is_taken_over_and_completed_once",
    )
    .await;
}
