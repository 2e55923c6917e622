//! The worker loop: claim a job, run its handler while a ticker keeps the lease alive,
//! record a failure, and sleep when idle until polled or woken.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use futures::FutureExt;
use phivault_store::Db;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::PipelineError;
use crate::jobs::{self, Claimed, JobState, WorkerId};

/// What a step failed with: a stable code (`[a-z0-9_]{1,64}`, never a message, which
/// could hold PHI) and whether trying again could help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepError {
    /// The stable code recorded as the job's `last_error_code`.
    pub code: String,
    /// Whether the job should be retried (if it has attempts left).
    pub retryable: bool,
}

impl StepError {
    /// A failure worth retrying (a timeout, an engine that is down).
    pub fn retryable(code: impl Into<String>) -> StepError {
        StepError {
            code: code.into(),
            retryable: true,
        }
    }

    /// A failure that retrying cannot fix (unreadable audio, a deleted record).
    pub fn permanent(code: impl Into<String>) -> StepError {
        StepError {
            code: code.into(),
            retryable: false,
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "step failed: {}", self.code)
    }
}

impl std::error::Error for StepError {}

impl From<PipelineError> for StepError {
    /// Storage trouble and a lost lease are worth retrying (a lost lease is then refused
    /// by `fail` too, as the job is someone else's); the rest are programming errors.
    fn from(e: PipelineError) -> StepError {
        let retryable = matches!(e, PipelineError::Store(_) | PipelineError::LeaseLost);
        StepError {
            code: e.code().to_owned(),
            retryable,
        }
    }
}

/// Runs the steps of some job kinds.
#[async_trait]
pub trait Handler: Send + Sync {
    /// The job kinds this handler runs.
    fn kinds(&self) -> &[&'static str];

    /// Runs one claimed job. On success the handler must itself have committed
    /// [`jobs::complete_in`] in the transaction that wrote the step's output; on error
    /// the worker records the failure.
    async fn run(&self, db: &Db, job: &Claimed) -> Result<(), StepError>;
}

/// Timing of a [`Worker`].
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How long an idle worker waits before looking for work again, unless woken.
    pub poll_interval: Duration,
    /// How often the lease of a running job is extended; well below `lease`.
    pub heartbeat_every: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            lease: Duration::from_secs(120),
            poll_interval: Duration::from_secs(5),
            heartbeat_every: Duration::from_secs(30),
        }
    }
}

/// Claims and runs jobs one at a time; run several for parallelism.
pub struct Worker {
    db: Db,
    id: Arc<WorkerId>,
    handler: Arc<dyn Handler>,
    options: WorkerOptions,
    wake: Arc<Notify>,
}

/// Code recorded when a handler returned success without completing its job.
const NOT_COMPLETED: &str = "handler_did_not_complete";
/// Code recorded when a handler's error code is not a valid code.
const INVALID_STEP_CODE: &str = "invalid_step_error_code";

impl Worker {
    /// A worker claiming the handler's kinds on `db` as `id`.
    pub fn new(db: Db, id: WorkerId, handler: Arc<dyn Handler>, options: WorkerOptions) -> Worker {
        Worker {
            db,
            id: Arc::new(id),
            handler,
            options,
            wake: Arc::new(Notify::new()),
        }
    }

    /// A handle that wakes this worker early when idle: call `notify_one()` on it after
    /// committing an enqueue. A wake-up sent while the worker is busy is kept, so the
    /// worker looks again straight after.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Runs until `shutdown` completes. A job in progress is finished first; a caller
    /// that cannot wait may drop this future instead, and the job's lease then expires
    /// and another worker takes it over.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let kinds: Vec<&str> = self.handler.kinds().to_vec();
        info!(worker = self.id.as_str(), ?kinds, "job worker started");
        loop {
            if shutdown.as_mut().now_or_never().is_some() {
                break;
            }
            match jobs::claim(&self.db, &self.id, &kinds, self.options.lease, Utc::now()).await {
                Ok(Some(claimed)) => {
                    self.process(claimed).await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => warn!(
                    worker = self.id.as_str(),
                    code = e.code(),
                    "claiming a job failed"
                ),
            }
            tokio::select! {
                () = shutdown.as_mut() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
        info!(worker = self.id.as_str(), "job worker stopped");
    }

    async fn process(&self, claimed: Claimed) {
        let job = &claimed.job;
        info!(
            worker = self.id.as_str(),
            job = %job.id,
            kind = job.kind.as_str(),
            tenant = %claimed.tenant,
            attempt = job.attempts,
            "job claimed"
        );
        let ticker = tokio::spawn(keep_alive(
            self.db.clone(),
            claimed.clone(),
            self.options.lease,
            self.options.heartbeat_every,
        ));
        let result = self.handler.run(&self.db, &claimed).await;
        ticker.abort();
        let (code, retryable) = match result {
            Ok(()) => match jobs::state_of(&self.db, &claimed).await {
                Ok((_, true)) => {
                    warn!(job = %job.id, kind = job.kind.as_str(),
                          "handler returned success without completing its job");
                    (NOT_COMPLETED.to_owned(), false)
                }
                Ok((state, false)) => {
                    // Not ours any more: completed by this handler, or (if the handler
                    // skipped completion) taken over by another worker.
                    let outcome = if state == JobState::Succeeded {
                        "succeeded"
                    } else {
                        "lease_lost"
                    };
                    info!(job = %job.id, kind = job.kind.as_str(), tenant = %claimed.tenant,
                          attempt = job.attempts, outcome, "job finished");
                    return;
                }
                Err(e) => {
                    // The lease will expire and the job be retried; nothing to record now.
                    warn!(job = %job.id, code = e.code(), "could not check a finished job");
                    return;
                }
            },
            Err(step) if jobs::valid_code(&step.code) => (step.code, step.retryable),
            Err(step) => (INVALID_STEP_CODE.to_owned(), step.retryable),
        };
        match jobs::fail(&self.db, &claimed, &code, retryable, Utc::now()).await {
            Ok(after) => info!(
                job = %job.id,
                kind = job.kind.as_str(),
                tenant = %claimed.tenant,
                attempt = job.attempts,
                outcome = code.as_str(),
                state = after.state.as_str(),
                "job attempt failed"
            ),
            Err(e) => warn!(
                job = %job.id,
                kind = job.kind.as_str(),
                tenant = %claimed.tenant,
                attempt = job.attempts,
                outcome = code.as_str(),
                code = e.code(),
                "could not record a failed attempt"
            ),
        }
    }
}

/// Extends the lease every `every` until aborted or the lease is lost. A lost lease is
/// not forced on the handler: its completion will be refused, which rolls its work back.
async fn keep_alive(db: Db, claimed: Claimed, lease: Duration, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match jobs::heartbeat(&db, &claimed, lease, Utc::now()).await {
            Ok(true) => debug!(job = %claimed.job.id, "lease extended"),
            Ok(false) => {
                debug!(job = %claimed.job.id, "lease no longer held; heartbeats stop");
                return;
            }
            // A missed beat is not fatal while the lease lasts; try again next tick.
            Err(e) => warn!(job = %claimed.job.id, code = e.code(), "heartbeat failed"),
        }
    }
}
