//! The worker loop against real databases: outcomes of a handler, the wake-up, the
//! heartbeat, and several workers draining one queue with every job completed once.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use phivault_pipeline::jobs::{self, Claimed, JobState, WorkerId};
use phivault_pipeline::worker::{Handler, StepError, Worker, WorkerOptions};
use phivault_store::{Db, TenantId, TxMode};
use tokio::sync::watch;
use uuid::Uuid;

use common::{complete_with_output, enqueue, job, outputs_of, tenant};

/// What the test handler does with a job.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Writes its output and completes the job.
    Complete,
    /// Sleeps this long first (past its lease unless heartbeats keep it), then completes.
    SlowComplete(Duration),
    /// Fails with a retryable code.
    Retryable,
    /// Fails with a permanent code.
    Permanent,
    /// Fails with a code that is not a valid code.
    BadCode,
    /// Returns success without completing.
    ForgetToComplete,
}

struct TestHandler {
    behaviour: Behaviour,
    /// Runs per job id, counted before the step does anything.
    runs: Mutex<HashMap<Uuid, u32>>,
}

impl TestHandler {
    fn new(behaviour: Behaviour) -> Arc<TestHandler> {
        Arc::new(TestHandler {
            behaviour,
            runs: Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl Handler for TestHandler {
    fn kinds(&self) -> &[&'static str] {
        &["transcribe"]
    }

    async fn run(&self, db: &Db, job: &Claimed) -> Result<(), StepError> {
        *self.runs.lock().unwrap().entry(job.job.id).or_default() += 1;
        match self.behaviour {
            Behaviour::Complete => Ok(complete_with_output(db, job, Utc::now()).await?),
            Behaviour::SlowComplete(d) => {
                tokio::time::sleep(d).await;
                Ok(complete_with_output(db, job, Utc::now()).await?)
            }
            Behaviour::Retryable => Err(StepError::retryable("engine_unavailable")),
            Behaviour::Permanent => Err(StepError::permanent("unreadable_audio")),
            Behaviour::BadCode => Err(StepError::permanent("Synthetic message, not a code")),
            Behaviour::ForgetToComplete => Ok(()),
        }
    }
}

fn fast() -> WorkerOptions {
    WorkerOptions {
        lease: Duration::from_secs(60),
        poll_interval: Duration::from_millis(20),
        heartbeat_every: Duration::from_secs(20),
    }
}

/// Starts a worker; returns the way to stop it and its task.
fn start(
    db: &Db,
    name: &str,
    handler: Arc<TestHandler>,
    options: WorkerOptions,
) -> (
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
    Arc<tokio::sync::Notify>,
) {
    let (stop, mut stopped) = watch::channel(false);
    let worker = Worker::new(db.clone(), WorkerId::new(name).unwrap(), handler, options);
    let waker = worker.waker();
    let task = tokio::spawn(worker.run(async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    (stop, task, waker)
}

async fn stop(stop: watch::Sender<bool>, task: tokio::task::JoinHandle<()>) {
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("worker stops on shutdown")
        .unwrap();
}

/// Waits until `tenant`'s job `id` was claimed and is in `state`.
async fn wait_for(db: &Db, tenant: TenantId, id: Uuid, state: JobState) -> jobs::Job {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = job(db, tenant, id).await;
        if j.state == state && j.attempts > 0 {
            return j;
        }
        assert!(Instant::now() < deadline, "job stuck in {:?}", j.state);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn handler_outcomes_are_recorded(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    for (behaviour, state, code) in [
        (Behaviour::Complete, JobState::Succeeded, None),
        (
            Behaviour::Retryable,
            JobState::Queued,
            Some("engine_unavailable"),
        ),
        (
            Behaviour::Permanent,
            JobState::Failed,
            Some("unreadable_audio"),
        ),
        (
            Behaviour::BadCode,
            JobState::Failed,
            Some("invalid_step_error_code"),
        ),
        (
            Behaviour::ForgetToComplete,
            JobState::Failed,
            Some("handler_did_not_complete"),
        ),
    ] {
        let queued = enqueue(db, t, "transcribe", Utc::now()).await;
        let handler = TestHandler::new(behaviour);
        let (tx, task, _) = start(db, "w1", handler.clone(), fast());
        let j = wait_for(db, t, queued.id, state).await;
        stop(tx, task).await;
        assert_eq!(j.last_error_code.as_deref(), code);
        assert_eq!(j.attempts, 1);
        assert_eq!(handler.runs.lock().unwrap()[&queued.id], 1);
        if state == JobState::Queued {
            let wait = j.run_after - Utc::now();
            assert!(wait > chrono::TimeDelta::seconds(3), "backoff {wait}");
        }
        // Clear the queue for the next round.
        if !state.is_final() {
            let w = WorkerId::new("cleaner").unwrap();
            let c = jobs::claim(db, &w, &["transcribe"], fast().lease, j.run_after)
                .await
                .unwrap()
                .unwrap();
            complete_with_output(db, &c, j.run_after).await.unwrap();
        }
    }
}

async fn an_idle_worker_wakes_when_poked(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let handler = TestHandler::new(Behaviour::Complete);
    let options = WorkerOptions {
        poll_interval: Duration::from_secs(3600),
        ..fast()
    };
    let (tx, task, waker) = start(db, "w1", handler, options);
    // Let it find the queue empty and go to sleep for an hour.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = enqueue(db, t, "transcribe", Utc::now()).await;
    waker.notify_one();
    let started = Instant::now();
    wait_for(db, t, queued.id, JobState::Succeeded).await;
    assert!(started.elapsed() < Duration::from_secs(30));
    stop(tx, task).await;
}

async fn heartbeats_keep_a_long_step_its_lease(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let queued = enqueue(db, t, "transcribe", Utc::now()).await;
    let handler = TestHandler::new(Behaviour::SlowComplete(Duration::from_millis(3500)));
    let options = WorkerOptions {
        lease: Duration::from_secs(1),
        poll_interval: Duration::from_millis(20),
        heartbeat_every: Duration::from_millis(200),
    };
    let (tx, task, _) = start(db, "w1", handler.clone(), options);
    wait_for(db, t, queued.id, JobState::Running).await;
    // For three times the lease, another worker finds nothing to take over.
    let other = WorkerId::new("w2").unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let stolen = jobs::claim(
            db,
            &other,
            &["transcribe"],
            Duration::from_secs(1),
            Utc::now(),
        )
        .await
        .unwrap();
        assert!(stolen.is_none(), "the lease lapsed while the step ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = wait_for(db, t, queued.id, JobState::Succeeded).await;
    stop(tx, task).await;
    assert_eq!(done.attempts, 1);
    assert_eq!(handler.runs.lock().unwrap()[&queued.id], 1);
    assert_eq!(outputs_of(db, t, queued.id).await, 1);
}

/// Four workers, each with its own pool, drain 200 jobs of three tenants.
async fn drain(dbs: Vec<Db>) {
    const JOBS: usize = 200;
    let db = dbs[0].clone();
    let tenants = [
        tenant(&db, "synthetic-a").await,
        tenant(&db, "synthetic-b").await,
        tenant(&db, "synthetic-c").await,
    ];
    let mut all = Vec::new();
    for i in 0..JOBS {
        let t = tenants[i % 3];
        all.push((t, enqueue(&db, t, "transcribe", Utc::now()).await.id));
    }
    let handler = TestHandler::new(Behaviour::Complete);
    let started = Instant::now();
    let workers: Vec<_> = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| start(db, &format!("w{i}"), handler.clone(), fast()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut done = 0;
        for t in tenants {
            let mut tx = db.begin_tenant(t, TxMode::Read).await.unwrap();
            done += jobs::list(&mut tx, Some(JobState::Succeeded), 500)
                .await
                .unwrap()
                .len();
            tx.commit().await.unwrap();
        }
        if done == JOBS {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of {JOBS} jobs done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    for (tx, task, _) in workers {
        stop(tx, task).await;
    }
    println!(
        "{:?}: {JOBS} jobs drained by {} workers in {elapsed:?}",
        db.backend(),
        dbs.len()
    );
    let runs = handler.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), JOBS, "every job ran");
    assert!(runs.values().all(|n| *n == 1), "a job ran twice: {runs:?}");
    for (t, id) in all {
        let j = job(&db, t, id).await;
        assert_eq!((j.state, j.attempts), (JobState::Succeeded, 1));
        assert_eq!(outputs_of(&db, t, id).await, 1, "job {id} output count");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_four_workers_drain_two_hundred_jobs_each_completed_once() {
    let (db, scratch) = common::postgres().await;
    let mut dbs = vec![db];
    for _ in 1..4 {
        dbs.push(
            scratch
                .app_db(&phivault_store::DbOptions::default())
                .await
                .unwrap(),
        );
    }
    drain(dbs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_four_workers_drain_two_hundred_jobs_each_completed_once() {
    let (db, dir) = common::sqlite().await;
    let mut dbs = vec![db];
    for _ in 1..4 {
        dbs.push(common::sqlite_again(&dir).await);
    }
    drain(dbs).await;
}

#[test]
fn step_errors_from_queue_errors() {
    let e = StepError::from(phivault_pipeline::PipelineError::LeaseLost);
    assert_eq!(e, StepError::retryable("lease_lost"));
    let e = StepError::from(phivault_pipeline::PipelineError::InvalidKind);
    assert_eq!(e, StepError::permanent("invalid_kind"));
    assert_eq!(e.to_string(), "step failed: invalid_kind");
}

both!(
    handler_outcomes_are_recorded,
    an_idle_worker_wakes_when_poked,
    heartbeats_keep_a_long_step_its_lease,
);
