//! The `jobs` table: enqueueing, claiming under a lease, heartbeats, completion, failure
//! with retry, and the reads the API needs.
//!
//! Every function takes the current time as an argument rather than reading the clock,
//! so that leases and backoff can be tested by moving time. Times are truncated to
//! microseconds, the precision PostgreSQL stores, so a job reads back as it was written
//! on both backends.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use phivault_store::{Backend, Db, TenantId, TenantTx, TxMode};
use serde::Serialize;
use tracing::warn;
use uuid::Uuid;

use crate::{PipelineError, Result};

/// How many attempts [`enqueue`] allows a job.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// The most attempts a job may be given.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// The delay before the first retry; each further retry doubles it.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest delay between two attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(15 * 60);
/// The longest lease a claim may take (a longer step must send heartbeats).
const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);
/// How many exhausted jobs one claim gives up on before it stops looking, so that a
/// backlog of them cannot keep one claim busy indefinitely.
const MAX_SWEEP: usize = 32;
/// What a job that lost its worker on every attempt fails with.
const LEASE_EXPIRED: &str = "lease_expired";

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to be claimed once `run_after` has passed.
    Queued,
    /// Claimed by a worker whose lease runs until `lease_expires_at`.
    Running,
    /// Completed; final.
    Succeeded,
    /// Out of attempts, or failed with an error that retrying cannot fix; final.
    Failed,
}

impl JobState {
    /// The state as the table and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    /// Parses the spelling of [`JobState::as_str`].
    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            _ => return None,
        })
    }

    /// Whether the job will not run again.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

/// One job. It names the record it works on by id only; it holds no PHI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Job {
    /// The tenant the job belongs to.
    pub tenant: TenantId,
    /// The job's id.
    pub id: Uuid,
    /// The step, e.g. `transcribe`.
    pub kind: String,
    /// The id of the record the step works on.
    pub subject: Uuid,
    /// Where the job stands.
    pub state: JobState,
    /// How many times the job was claimed.
    pub attempts: u32,
    /// How many claims the job is allowed.
    pub max_attempts: u32,
    /// A queued job is not claimed before this time.
    pub run_after: DateTime<Utc>,
    /// The worker holding the lease, while running.
    pub lease_owner: Option<String>,
    /// When the lease runs out, while running.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The code of the most recent failed attempt (kept after a later success).
    pub last_error_code: Option<String>,
    /// When the job was enqueued.
    pub created_at: DateTime<Utc>,
    /// When the job last changed.
    pub updated_at: DateTime<Utc>,
    /// When the job succeeded or failed for good.
    pub finished_at: Option<DateTime<Utc>>,
    /// How far the current or last attempt got: (milliseconds of audio done, in all), as
    /// its step reported; `None` before a step reports.
    pub progress_ms: Option<(u64, u64)>,
}

/// A job claimed by a worker: the lease token is what proves the claim is still current.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The tenant the job belongs to; open the step's transaction for this tenant.
    pub tenant: TenantId,
    /// The job as it was claimed (state running, attempts counting this claim).
    pub job: Job,
    /// The token of this claim; a later claim of the same job gets a new one.
    pub lease_token: Uuid,
}

/// A worker's identity, recorded as the lease owner of the jobs it claims, and its place
/// in the round-robin over tenants.
#[derive(Debug)]
pub struct WorkerId {
    name: String,
    last_tenant: Mutex<Option<TenantId>>,
}

impl WorkerId {
    /// A worker id of 1 to 128 characters from `[A-Za-z0-9._:-]` (for example
    /// `host-1:4242:0`). Name each worker distinctly: the id shows who holds a lease.
    pub fn new(name: impl Into<String>) -> Result<WorkerId> {
        let name = name.into();
        let ok = (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if !ok {
            return Err(PipelineError::InvalidWorkerId);
        }
        Ok(WorkerId {
            name,
            last_tenant: Mutex::new(None),
        })
    }

    /// The id as recorded in `lease_owner`.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    fn last_tenant(&self) -> Option<TenantId> {
        *self.last_tenant.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn served(&self, tenant: TenantId) {
        *self.last_tenant.lock().unwrap_or_else(|p| p.into_inner()) = Some(tenant);
    }
}

/// Checks a job kind or error code: `[a-z0-9_]{1,64}`, which cannot carry free text.
fn is_code(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn check_kind(kind: &str) -> Result<()> {
    if is_code(kind) {
        Ok(())
    } else {
        Err(PipelineError::InvalidKind)
    }
}

/// Microsecond precision, as PostgreSQL stores it.
fn at(now: DateTime<Utc>) -> DateTime<Utc> {
    now.duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now)
}

fn lease_delta(lease: Duration) -> Result<TimeDelta> {
    if lease.is_zero() || lease > MAX_LEASE {
        return Err(PipelineError::InvalidArgument("lease duration"));
    }
    TimeDelta::from_std(lease).map_err(|_| PipelineError::InvalidArgument("lease duration"))
}

macro_rules! columns {
    () => {
        "tenant_id, id, kind, subject_id, state, attempts, max_attempts, run_after, lease_owner, \
         lease_expires_at, last_error_code, created_at, updated_at, finished_at, \
         progress_done_ms, progress_total_ms"
    };
}

#[derive(sqlx::FromRow)]
struct JobRow {
    tenant_id: Uuid,
    id: Uuid,
    kind: String,
    subject_id: Uuid,
    state: String,
    attempts: i64,
    max_attempts: i64,
    run_after: DateTime<Utc>,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    last_error_code: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    progress_done_ms: Option<i64>,
    progress_total_ms: Option<i64>,
}

impl TryFrom<JobRow> for Job {
    type Error = PipelineError;

    fn try_from(r: JobRow) -> Result<Job> {
        let count = |n: i64| u32::try_from(n).map_err(|_| PipelineError::CorruptRow);
        Ok(Job {
            tenant: TenantId::from_uuid(r.tenant_id),
            id: r.id,
            kind: r.kind,
            subject: r.subject_id,
            state: JobState::parse(&r.state).ok_or(PipelineError::CorruptRow)?,
            attempts: count(r.attempts)?,
            max_attempts: count(r.max_attempts)?,
            run_after: r.run_after,
            lease_owner: r.lease_owner,
            lease_expires_at: r.lease_expires_at,
            last_error_code: r.last_error_code,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            progress_ms: match (r.progress_done_ms, r.progress_total_ms) {
                (Some(done), Some(total)) => Some((
                    u64::try_from(done).map_err(|_| PipelineError::CorruptRow)?,
                    u64::try_from(total).map_err(|_| PipelineError::CorruptRow)?,
                )),
                _ => None,
            },
        })
    }
}

fn job(row: Option<JobRow>) -> Result<Option<Job>> {
    row.map(Job::try_from).transpose()
}

/// Enqueues step `kind` on record `subject` with [`DEFAULT_MAX_ATTEMPTS`], due at once.
///
/// Runs in the caller's transaction, so the record and its job commit (or roll back)
/// together. Idempotent: if the tenant already has a job of this kind on this subject,
/// in whatever state, that job is returned unchanged.
pub async fn enqueue(
    tx: &mut TenantTx,
    kind: &str,
    subject: Uuid,
    now: DateTime<Utc>,
) -> Result<Job> {
    enqueue_with(tx, kind, subject, DEFAULT_MAX_ATTEMPTS, now).await
}

/// [`enqueue`] with an attempt limit of 1 to [`MAX_ATTEMPTS_LIMIT`]. An existing job
/// keeps its own limit.
pub async fn enqueue_with(
    tx: &mut TenantTx,
    kind: &str,
    subject: Uuid,
    max_attempts: u32,
    now: DateTime<Utc>,
) -> Result<Job> {
    check_kind(kind)?;
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
        return Err(PipelineError::InvalidArgument("max attempts"));
    }
    let now = at(now);
    tx.query(
        "INSERT INTO jobs (tenant_id, id, kind, subject_id, state, attempts, max_attempts,
                           run_after, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $6, $6)
         ON CONFLICT (tenant_id, kind, subject_id) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(kind)
    .bind(subject)
    .bind(i64::from(max_attempts))
    .bind(now)
    .execute()
    .await?;
    let row: JobRow = tx
        .query(concat!(
            "SELECT ",
            columns!(),
            " FROM jobs WHERE tenant_id = $1 AND kind = $2 AND subject_id = $3"
        ))
        .bind(kind)
        .bind(subject)
        .fetch_one()
        .await?;
    row.try_into()
}

/// Claims one due job of one of `kinds`, from any tenant, for `lease`.
///
/// A job is due when it is queued and its `run_after` has passed, or when it is running
/// under a lease that expired (its worker died or stalled). Claiming sets it running,
/// counts the attempt, and gives it a fresh lease token; the claim is committed before
/// this returns. A job whose lease expired on its last allowed attempt is not claimed
/// again but failed with `lease_expired`: a step that keeps killing its worker must not
/// run forever.
///
/// Tenants are served round-robin, starting after the tenant this worker was last
/// served from, so a tenant with a long queue cannot starve the others. Each tenant is
/// tried in a transaction bound to it, under row-level security on PostgreSQL. Two
/// workers never claim the same job: on PostgreSQL the candidate row is locked with
/// `FOR UPDATE SKIP LOCKED`, and on SQLite the write transaction holds the database's
/// write lock from its start; on both, the claiming UPDATE re-checks that the job is
/// still due.
pub async fn claim(
    db: &Db,
    worker: &WorkerId,
    kinds: &[&str],
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Option<Claimed>> {
    for kind in kinds {
        check_kind(kind)?;
    }
    let lease = lease_delta(lease)?;
    if kinds.is_empty() {
        return Ok(None);
    }
    // Kinds are `[a-z0-9_]`, so they need no escaping inside a JSON string.
    let kinds_json = format!("[\"{}\"]", kinds.join("\",\""));
    let now = at(now);

    let mut tenants = active_tenants(db).await?;
    if tenants.is_empty() {
        return Ok(None);
    }
    tenants.sort();
    let start = match worker.last_tenant() {
        Some(last) => tenants.partition_point(|t| *t <= last),
        None => 0,
    };
    // One tenant failing (say, a corrupt row) must not stop the others being served.
    let mut first_error = None;
    for i in 0..tenants.len() {
        let tenant = tenants[(start + i) % tenants.len()];
        match claim_in(db, tenant, worker, &kinds_json, lease, now).await {
            Ok(Some(claimed)) => {
                worker.served(tenant);
                return Ok(Some(claimed));
            }
            Ok(None) => {}
            Err(e) => {
                warn!(tenant = %tenant, code = e.code(), "claiming in a tenant failed");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// Tenants whose jobs are served. A suspended tenant's jobs wait, queued, until it is
/// active again.
async fn active_tenants(db: &Db) -> Result<Vec<TenantId>> {
    let mut p = db.begin_platform(TxMode::Read).await?;
    let rows: Vec<(Uuid,)> = p
        .query("SELECT id FROM tenants WHERE status = 'active'")
        .fetch_all()
        .await?;
    p.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(id,)| TenantId::from_uuid(id))
        .collect())
}

#[derive(sqlx::FromRow)]
struct Candidate {
    id: Uuid,
    state: String,
    attempts: i64,
    max_attempts: i64,
}

// Candidates: running jobs whose lease expired come first (they are the oldest work),
// then queued jobs that are due. `$2` is the JSON array of kinds, `$3` the time.
const EXPIRED_SQLITE: &str = "SELECT id, state, attempts, max_attempts FROM jobs
     WHERE tenant_id = $1 AND state = 'running' AND lease_expires_at < $3
       AND kind IN (SELECT value FROM json_each($2))
     ORDER BY lease_expires_at LIMIT 1";
const EXPIRED_PG: &str = "SELECT id, state, attempts, max_attempts FROM jobs
     WHERE tenant_id = $1 AND state = 'running' AND lease_expires_at < $3
       AND kind IN (SELECT jsonb_array_elements_text($2::jsonb))
     ORDER BY lease_expires_at LIMIT 1 FOR UPDATE SKIP LOCKED";
const DUE_SQLITE: &str = "SELECT id, state, attempts, max_attempts FROM jobs
     WHERE tenant_id = $1 AND state = 'queued' AND run_after <= $3
       AND kind IN (SELECT value FROM json_each($2))
     ORDER BY run_after, id LIMIT 1";
const DUE_PG: &str = "SELECT id, state, attempts, max_attempts FROM jobs
     WHERE tenant_id = $1 AND state = 'queued' AND run_after <= $3
       AND kind IN (SELECT jsonb_array_elements_text($2::jsonb))
     ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED";

async fn claim_in(
    db: &Db,
    tenant: TenantId,
    worker: &WorkerId,
    kinds_json: &str,
    lease: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Option<Claimed>> {
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await?;
    let (expired_sql, due_sql) = match tx.backend() {
        Backend::Postgres => (EXPIRED_PG, DUE_PG),
        Backend::Sqlite => (EXPIRED_SQLITE, DUE_SQLITE),
    };
    for _ in 0..MAX_SWEEP {
        let mut candidate: Option<Candidate> = tx
            .query(expired_sql)
            .bind(kinds_json)
            .bind(now)
            .fetch_optional()
            .await?;
        if candidate.is_none() {
            candidate = tx
                .query(due_sql)
                .bind(kinds_json)
                .bind(now)
                .fetch_optional()
                .await?;
        }
        let Some(candidate) = candidate else {
            break;
        };
        if candidate.state == "running" && candidate.attempts >= candidate.max_attempts {
            tx.query(
                "UPDATE jobs SET state = 'failed', last_error_code = $3, finished_at = $4,
                        updated_at = $4, lease_owner = NULL, lease_token = NULL,
                        lease_expires_at = NULL
                 WHERE tenant_id = $1 AND id = $2 AND state = 'running' AND lease_expires_at < $4",
            )
            .bind(candidate.id)
            .bind(LEASE_EXPIRED)
            .bind(now)
            .execute()
            .await?;
            warn!(
                tenant = %tenant,
                job = %candidate.id,
                attempt = candidate.attempts,
                outcome = LEASE_EXPIRED,
                "job lost its worker on its last attempt; failed"
            );
            continue;
        }
        let token = Uuid::new_v4();
        let row: Option<JobRow> = tx
            .query(concat!(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $3,
                        lease_token = $4, lease_expires_at = $5, updated_at = $6,
                        progress_done_ms = NULL, progress_total_ms = NULL
                 WHERE tenant_id = $1 AND id = $2 AND attempts < max_attempts
                   AND ((state = 'queued' AND run_after <= $6)
                        OR (state = 'running' AND lease_expires_at < $6))
                 RETURNING ",
                columns!()
            ))
            .bind(candidate.id)
            .bind(worker.as_str())
            .bind(token)
            .bind(now + lease)
            .bind(now)
            .fetch_optional()
            .await?;
        if let Some(job) = job(row)? {
            tx.commit().await?;
            return Ok(Some(Claimed {
                tenant,
                job,
                lease_token: token,
            }));
        }
    }
    tx.commit().await?;
    Ok(None)
}

/// Extends the lease to `now + lease` if the job is still running under this claim.
/// Returns false if the lease was lost (the job was reclaimed, completed or failed); the
/// worker should then stop, as its completion would be refused.
pub async fn heartbeat(
    db: &Db,
    claimed: &Claimed,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<bool> {
    let lease = lease_delta(lease)?;
    let now = at(now);
    let mut tx = db.begin_tenant(claimed.tenant, TxMode::Write).await?;
    let n = tx
        .query(
            "UPDATE jobs SET lease_expires_at = $4, updated_at = $5
             WHERE tenant_id = $1 AND id = $2 AND lease_token = $3 AND state = 'running'",
        )
        .bind(claimed.job.id)
        .bind(claimed.lease_token)
        .bind(now + lease)
        .bind(now)
        .execute()
        .await?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Records how far the claimed job's step got: `done_ms` of `total_ms` milliseconds of
/// audio (`done_ms` is capped at `total_ms`). Returns false if the lease was lost. Numbers
/// only, so progress can be shown to anyone who may see the job.
pub async fn report_progress(
    db: &Db,
    claimed: &Claimed,
    done_ms: u64,
    total_ms: u64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let total = i64::try_from(total_ms).map_err(|_| PipelineError::InvalidArgument("progress"))?;
    let done = i64::try_from(done_ms.min(total_ms))
        .map_err(|_| PipelineError::InvalidArgument("progress"))?;
    let mut tx = db.begin_tenant(claimed.tenant, TxMode::Write).await?;
    let n = tx
        .query(
            "UPDATE jobs SET progress_done_ms = $4, progress_total_ms = $5, updated_at = $6
             WHERE tenant_id = $1 AND id = $2 AND lease_token = $3 AND state = 'running'",
        )
        .bind(claimed.job.id)
        .bind(claimed.lease_token)
        .bind(done)
        .bind(total)
        .bind(at(now))
        .execute()
        .await?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Marks the claimed job succeeded, in the caller's transaction, so that the step's
/// output and the completion commit together.
///
/// # Errors
/// [`PipelineError::LeaseLost`] if the job is no longer running under this claim's
/// token: another worker took it over, or it already finished. The caller must then
/// roll its transaction back (dropping it does), so the step's output is written once,
/// by the holder of the current lease. [`PipelineError::WrongTenant`] if `tx` is bound
/// to another tenant than the job.
pub async fn complete_in(tx: &mut TenantTx, claimed: &Claimed, now: DateTime<Utc>) -> Result<()> {
    if tx.tenant() != claimed.tenant {
        return Err(PipelineError::WrongTenant);
    }
    let now = at(now);
    let n = tx
        .query(
            "UPDATE jobs SET state = 'succeeded', finished_at = $4, updated_at = $4,
                    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE tenant_id = $1 AND id = $2 AND lease_token = $3 AND state = 'running'",
        )
        .bind(claimed.job.id)
        .bind(claimed.lease_token)
        .bind(now)
        .execute()
        .await?;
    if n == 1 {
        Ok(())
    } else {
        Err(PipelineError::LeaseLost)
    }
}

/// Records that the claimed attempt failed with `error_code` (`[a-z0-9_]{1,64}`, a
/// stable code, never a message). A retryable failure with attempts left puts the job
/// back in the queue after a backoff; anything else fails it for good. Returns the job
/// as it now stands.
///
/// # Errors
/// [`PipelineError::LeaseLost`] if the job is no longer running under this claim.
pub async fn fail(
    db: &Db,
    claimed: &Claimed,
    error_code: &str,
    retryable: bool,
    now: DateTime<Utc>,
) -> Result<Job> {
    if !is_code(error_code) {
        return Err(PipelineError::InvalidErrorCode);
    }
    let now = at(now);
    let mut tx = db.begin_tenant(claimed.tenant, TxMode::Write).await?;
    // The attempt count cannot have changed since the claim: a new claim would have
    // replaced the token this update requires.
    let row: Option<JobRow> = if retryable && claimed.job.attempts < claimed.job.max_attempts {
        let delay = TimeDelta::from_std(backoff(claimed.job.attempts))
            .map_err(|_| PipelineError::InvalidArgument("backoff"))?;
        tx.query(concat!(
            "UPDATE jobs SET state = 'queued', run_after = $4, last_error_code = $5,
                    updated_at = $6, lease_owner = NULL, lease_token = NULL,
                    lease_expires_at = NULL
             WHERE tenant_id = $1 AND id = $2 AND lease_token = $3 AND state = 'running'
             RETURNING ",
            columns!()
        ))
        .bind(claimed.job.id)
        .bind(claimed.lease_token)
        .bind(at(now + delay))
        .bind(error_code)
        .bind(now)
        .fetch_optional()
        .await?
    } else {
        tx.query(concat!(
            "UPDATE jobs SET state = 'failed', finished_at = $4, last_error_code = $5,
                    updated_at = $4, lease_owner = NULL, lease_token = NULL,
                    lease_expires_at = NULL
             WHERE tenant_id = $1 AND id = $2 AND lease_token = $3 AND state = 'running'
             RETURNING ",
            columns!()
        ))
        .bind(claimed.job.id)
        .bind(claimed.lease_token)
        .bind(now)
        .bind(error_code)
        .fetch_optional()
        .await?
    };
    let job = job(row)?.ok_or(PipelineError::LeaseLost)?;
    tx.commit().await?;
    Ok(job)
}

/// The delay before the attempt after attempt `attempts` (counted from 1):
/// `10 s · 2^(attempts-1)`, at most 15 minutes, then a random point between half of
/// that and all of it, so that jobs that failed together do not retry together.
fn backoff(attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1 << exponent).min(BACKOFF_CAP);
    let half_ms = u64::try_from(full.as_millis() / 2).unwrap_or(u64::MAX);
    // Jitter only spreads retries; if the OS cannot supply randomness, the full delay is
    // a safe answer.
    let jitter_ms = getrandom::u64()
        .map(|r| r % (half_ms + 1))
        .unwrap_or(half_ms);
    Duration::from_millis(half_ms + jitter_ms)
}

/// The tenant's job `id`, if it exists.
pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Option<Job>> {
    let row: Option<JobRow> = tx
        .query(concat!(
            "SELECT ",
            columns!(),
            " FROM jobs WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(id)
        .fetch_optional()
        .await?;
    job(row)
}

/// Every job of the tenant on record `subject`, oldest first.
pub async fn for_subject(tx: &mut TenantTx, subject: Uuid) -> Result<Vec<Job>> {
    let rows: Vec<JobRow> = tx
        .query(concat!(
            "SELECT ",
            columns!(),
            " FROM jobs WHERE tenant_id = $1 AND subject_id = $2 ORDER BY created_at, id"
        ))
        .bind(subject)
        .fetch_all()
        .await?;
    rows.into_iter().map(Job::try_from).collect()
}

/// The tenant's most recent jobs (newest first), in `state` if given, at most `limit`
/// (clamped to 1..=500).
pub async fn list(tx: &mut TenantTx, state: Option<JobState>, limit: u32) -> Result<Vec<Job>> {
    let limit = i64::from(limit.clamp(1, 500));
    let rows: Vec<JobRow> = match state {
        Some(state) => {
            tx.query(concat!(
                "SELECT ",
                columns!(),
                " FROM jobs WHERE tenant_id = $1 AND state = $2
                  ORDER BY created_at DESC, id DESC LIMIT $3"
            ))
            .bind(state.as_str())
            .bind(limit)
            .fetch_all()
            .await?
        }
        None => {
            tx.query(concat!(
                "SELECT ",
                columns!(),
                " FROM jobs WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2"
            ))
            .bind(limit)
            .fetch_all()
            .await?
        }
    };
    rows.into_iter().map(Job::try_from).collect()
}

/// The job's state now, and whether it still runs under this claim (the worker checks
/// that a handler that returned success really completed its job).
pub(crate) async fn state_of(db: &Db, claimed: &Claimed) -> Result<(JobState, bool)> {
    let mut tx = db.begin_tenant(claimed.tenant, TxMode::Read).await?;
    let row: Option<(String, Option<Uuid>)> = tx
        .query("SELECT state, lease_token FROM jobs WHERE tenant_id = $1 AND id = $2")
        .bind(claimed.job.id)
        .fetch_optional()
        .await?;
    tx.commit().await?;
    let (state, token) = row.ok_or(PipelineError::CorruptRow)?;
    let state = JobState::parse(&state).ok_or(PipelineError::CorruptRow)?;
    Ok((
        state,
        state == JobState::Running && token == Some(claimed.lease_token),
    ))
}

pub(crate) fn valid_code(code: &str) -> bool {
    is_code(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_fifteen_minutes_with_jitter() {
        for attempts in 1..=40u32 {
            let full = if attempts >= 8 {
                BACKOFF_CAP
            } else {
                Duration::from_secs(10 << (attempts - 1))
            }
            .min(BACKOFF_CAP);
            for _ in 0..20 {
                let d = backoff(attempts);
                assert!(
                    d <= full && d >= full / 2,
                    "attempt {attempts}: {d:?} vs {full:?}"
                );
            }
        }
        // Jitter really varies the delay.
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(3)).collect();
        assert!(samples.len() > 1);
    }

    #[test]
    fn codes_and_worker_ids_are_validated() {
        for ok in ["transcribe", "generate_note", "a", "x9_"] {
            assert!(is_code(ok), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "Transcribe", "bad code", "é", "a-b", long.as_str()] {
            assert!(!is_code(bad), "{bad}");
        }
        assert!(WorkerId::new("host-1:4242:0").is_ok());
        assert!(WorkerId::new("").is_err());
        assert!(WorkerId::new("a b").is_err());
        assert!(WorkerId::new("x".repeat(129)).is_err());
    }

    #[test]
    fn states_round_trip() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
        ] {
            assert_eq!(JobState::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobState::parse("done"), None);
    }
}
