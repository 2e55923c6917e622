//! The queue's contract on both backends: idempotent enqueue, leases, exactly-once
//! completion, retries with backoff, attempt limits, tenant isolation and fair share.

mod common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use phivault_pipeline::PipelineError;
use phivault_pipeline::jobs::{self, JobState, WorkerId};
use phivault_store::{Db, TxMode};
use uuid::Uuid;

use common::{complete_with_output, enqueue, job, outputs_of, tenant};

const LEASE: Duration = Duration::from_secs(60);
const KINDS: &[&str] = &["transcribe"];

/// A fixed instant to move time from (microsecond precision, as both backends store).
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap() + TimeDelta::microseconds(123_456)
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name).unwrap()
}

async fn enqueue_is_idempotent_and_commits_with_the_callers_transaction(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let subject = Uuid::now_v7();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let first = jobs::enqueue(&mut tx, "transcribe", subject, t0())
        .await
        .unwrap();
    let again = jobs::enqueue(&mut tx, "transcribe", subject, t0() + secs(5))
        .await
        .unwrap();
    assert_eq!(first, again, "a second enqueue returns the existing job");
    let other_kind = jobs::enqueue(&mut tx, "generate_note", subject, t0())
        .await
        .unwrap();
    assert_ne!(other_kind.id, first.id);
    tx.commit().await.unwrap();

    assert_eq!(first.state, JobState::Queued);
    assert_eq!(first.kind, "transcribe");
    assert_eq!(first.subject, subject);
    assert_eq!(first.tenant, t);
    assert_eq!(
        (first.attempts, first.max_attempts),
        (0, jobs::DEFAULT_MAX_ATTEMPTS)
    );
    assert_eq!(first.run_after, t0());
    assert_eq!(first.created_at, t0());
    assert_eq!(job(db, t, first.id).await, first, "reads back as written");

    // Even after it ran, enqueueing the same step again returns the same job.
    let w = worker("w1");
    let claimed = jobs::claim(db, &w, KINDS, LEASE, t0())
        .await
        .unwrap()
        .unwrap();
    complete_with_output(db, &claimed, t0() + secs(1))
        .await
        .unwrap();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let after = jobs::enqueue(&mut tx, "transcribe", subject, t0() + secs(9))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(after.id, first.id);
    assert_eq!(after.state, JobState::Succeeded);

    // A rolled-back record takes its job with it.
    let lost_subject = Uuid::now_v7();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    jobs::enqueue(&mut tx, "transcribe", lost_subject, t0())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = db.begin_tenant(t, TxMode::Read).await.unwrap();
    assert!(
        jobs::for_subject(&mut tx, lost_subject)
            .await
            .unwrap()
            .is_empty()
    );
    let all = jobs::for_subject(&mut tx, subject).await.unwrap();
    assert_eq!(
        all.iter().map(|j| j.kind.as_str()).collect::<Vec<_>>(),
        ["transcribe", "generate_note"]
    );
    tx.commit().await.unwrap();
}

async fn bad_arguments_are_refused(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    for kind in ["", "Transcribe", "transcribe audio", "x;drop"] {
        let err = jobs::enqueue(&mut tx, kind, Uuid::now_v7(), t0())
            .await
            .unwrap_err();
        assert!(matches!(err, PipelineError::InvalidKind), "{kind}: {err:?}");
    }
    for max in [0, jobs::MAX_ATTEMPTS_LIMIT + 1] {
        let err = jobs::enqueue_with(&mut tx, "transcribe", Uuid::now_v7(), max, t0())
            .await
            .unwrap_err();
        assert_eq!(err.code(), "invalid_argument");
    }
    tx.commit().await.unwrap();
    let w = worker("w1");
    let err = jobs::claim(db, &w, &["Bad kind"], LEASE, t0())
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::InvalidKind));
    let err = jobs::claim(db, &w, KINDS, Duration::ZERO, t0())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_argument");
    assert!(
        jobs::claim(db, &w, &[], LEASE, t0())
            .await
            .unwrap()
            .is_none()
    );

    enqueue(db, t, "transcribe", t0()).await;
    let claimed = jobs::claim(db, &w, KINDS, LEASE, t0())
        .await
        .unwrap()
        .unwrap();
    for code in ["", "Timeout", "patient said: ...", &"x".repeat(65)] {
        let err = jobs::fail(db, &claimed, code, true, t0())
            .await
            .unwrap_err();
        assert!(matches!(err, PipelineError::InvalidErrorCode), "{code}");
    }
    assert_eq!(job(db, t, claimed.job.id).await.state, JobState::Running);
}

async fn claim_then_complete(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let queued = enqueue(db, t, "transcribe", t0()).await;
    let note = enqueue(db, t, "generate_note", t0()).await;
    let w = worker("w1");

    // Not due before run_after.
    assert!(
        jobs::claim(db, &w, KINDS, LEASE, t0() - secs(1))
            .await
            .unwrap()
            .is_none()
    );
    let claimed = jobs::claim(db, &w, KINDS, LEASE, t0())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.tenant, t);
    assert_eq!(claimed.job.id, queued.id, "only the kinds asked for");
    assert_eq!(claimed.job.state, JobState::Running);
    assert_eq!(claimed.job.attempts, 1);
    assert_eq!(claimed.job.lease_owner.as_deref(), Some("w1"));
    assert_eq!(claimed.job.lease_expires_at, Some(t0() + secs(60)));
    assert_eq!(job(db, t, queued.id).await, claimed.job);

    // While leased, nobody else gets it, even a moment before the lease ends.
    let other = worker("w2");
    assert!(
        jobs::claim(db, &other, KINDS, LEASE, t0() + secs(59))
            .await
            .unwrap()
            .is_none()
    );

    complete_with_output(db, &claimed, t0() + secs(10))
        .await
        .unwrap();
    let done = job(db, t, queued.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.finished_at, Some(t0() + secs(10)));
    assert_eq!(done.lease_owner, None);
    assert_eq!(done.lease_expires_at, None);
    assert_eq!(outputs_of(db, t, queued.id).await, 1);

    // A finished job is never claimed again, however late; completing twice is refused.
    assert!(
        jobs::claim(db, &other, KINDS, LEASE, t0() + secs(86_400))
            .await
            .unwrap()
            .is_none()
    );
    let err = complete_with_output(db, &claimed, t0() + secs(11))
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::LeaseLost), "{err:?}");
    assert_eq!(outputs_of(db, t, queued.id).await, 1);

    // The other kind is claimable by a worker that asks for it.
    let n = jobs::claim(db, &other, &["generate_note", "transcribe"], LEASE, t0())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.job.id, note.id);

    // A transaction of another tenant cannot complete it.
    let u = tenant(db, "synthetic-b").await;
    let mut tx = db.begin_tenant(u, TxMode::Write).await.unwrap();
    let err = jobs::complete_in(&mut tx, &n, t0()).await.unwrap_err();
    assert!(matches!(err, PipelineError::WrongTenant));
}

async fn an_expired_lease_is_reclaimed_and_the_stale_worker_cannot_complete(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let queued = enqueue(db, t, "transcribe", t0()).await;
    let (w1, w2) = (worker("w1"), worker("w2"));
    let first = jobs::claim(db, &w1, KINDS, LEASE, t0())
        .await
        .unwrap()
        .unwrap();

    // A heartbeat moves the lease on; the job stays w1's past the first expiry.
    assert!(
        jobs::heartbeat(db, &first, LEASE, t0() + secs(50))
            .await
            .unwrap()
    );
    assert!(
        jobs::claim(db, &w2, KINDS, LEASE, t0() + secs(100))
            .await
            .unwrap()
            .is_none()
    );

    // w1 stalls; once its lease has run out, w2 takes the job over.
    let second = jobs::claim(db, &w2, KINDS, LEASE, t0() + secs(111))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.job.id, queued.id);
    assert_eq!(second.job.attempts, 2);
    assert_eq!(second.job.lease_owner.as_deref(), Some("w2"));
    assert_ne!(second.lease_token, first.lease_token);
    let before = job(db, t, queued.id).await;

    // w1 wakes up: its heartbeat says the lease is gone, its completion is refused, and
    // its output rolls back with it.
    assert!(
        !jobs::heartbeat(db, &first, LEASE, t0() + secs(112))
            .await
            .unwrap()
    );
    let err = complete_with_output(db, &first, t0() + secs(113))
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::LeaseLost), "{err:?}");
    let err = jobs::fail(db, &first, "timeout", true, t0() + secs(113))
        .await
        .unwrap_err();
    assert!(matches!(err, PipelineError::LeaseLost), "{err:?}");
    assert_eq!(
        job(db, t, queued.id).await,
        before,
        "the stale worker changed nothing"
    );
    assert_eq!(outputs_of(db, t, queued.id).await, 0);

    complete_with_output(db, &second, t0() + secs(120))
        .await
        .unwrap();
    let done = job(db, t, queued.id).await;
    assert_eq!((done.state, done.attempts), (JobState::Succeeded, 2));
    assert_eq!(outputs_of(db, t, queued.id).await, 1);
}

async fn retry_with_backoff_then_success(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let queued = enqueue(db, t, "transcribe", t0()).await;
    let w = worker("w1");
    let mut now = t0();
    for attempt in 1..=3u32 {
        let claimed = jobs::claim(db, &w, KINDS, LEASE, now)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.job.attempts, attempt);
        let failed = jobs::fail(db, &claimed, "engine_unavailable", true, now)
            .await
            .unwrap();
        assert_eq!(failed.state, JobState::Queued);
        assert_eq!(
            failed.last_error_code.as_deref(),
            Some("engine_unavailable")
        );
        assert_eq!(failed.lease_owner, None);
        let full = TimeDelta::seconds(10 << (attempt - 1));
        let wait = failed.run_after - now;
        assert!(
            wait >= full / 2 && wait <= full,
            "attempt {attempt}: waited {wait}, expected between {} and {full}",
            full / 2
        );
        // Not before its time...
        assert!(
            jobs::claim(
                db,
                &w,
                KINDS,
                LEASE,
                failed.run_after - TimeDelta::microseconds(1)
            )
            .await
            .unwrap()
            .is_none()
        );
        now = failed.run_after;
    }
    // ...but then: the fourth attempt succeeds.
    let claimed = jobs::claim(db, &w, KINDS, LEASE, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.job.attempts, 4);
    complete_with_output(db, &claimed, now).await.unwrap();
    let done = job(db, t, queued.id).await;
    assert_eq!((done.state, done.attempts), (JobState::Succeeded, 4));
    assert_eq!(done.last_error_code.as_deref(), Some("engine_unavailable"));
}

async fn attempts_run_out_and_permanent_errors_fail_at_once(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let limited = jobs::enqueue_with(&mut tx, "transcribe", Uuid::now_v7(), 2, t0())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let w = worker("w1");
    let c1 = jobs::claim(db, &w, KINDS, LEASE, t0())
        .await
        .unwrap()
        .unwrap();
    let j = jobs::fail(db, &c1, "timeout", true, t0()).await.unwrap();
    assert_eq!(j.state, JobState::Queued);
    let later = t0() + secs(3600);
    let c2 = jobs::claim(db, &w, KINDS, LEASE, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c2.job.attempts, 2);
    let j = jobs::fail(db, &c2, "timeout", true, later).await.unwrap();
    assert_eq!(j.state, JobState::Failed, "no attempts left");
    assert_eq!(j.finished_at, Some(later));
    assert_eq!(j.last_error_code.as_deref(), Some("timeout"));
    assert!(
        jobs::claim(db, &w, KINDS, LEASE, later + secs(86_400))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(job(db, t, limited.id).await, j);

    let permanent = enqueue(db, t, "transcribe", t0()).await;
    let c = jobs::claim(db, &w, KINDS, LEASE, later)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.job.id, permanent.id);
    let j = jobs::fail(db, &c, "unreadable_audio", false, later)
        .await
        .unwrap();
    assert_eq!((j.state, j.attempts), (JobState::Failed, 1));
}

async fn a_job_that_keeps_losing_its_worker_fails_with_lease_expired(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let queued = jobs::enqueue_with(&mut tx, "transcribe", Uuid::now_v7(), 2, t0())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let w = worker("w1");
    // Two claims whose workers never come back.
    jobs::claim(db, &w, KINDS, LEASE, t0())
        .await
        .unwrap()
        .unwrap();
    let c2 = jobs::claim(db, &w, KINDS, LEASE, t0() + secs(61))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c2.job.attempts, 2);
    // The next claim after the last lease ran out gives up on the job instead.
    let now = t0() + secs(200);
    assert!(
        jobs::claim(db, &w, KINDS, LEASE, now)
            .await
            .unwrap()
            .is_none()
    );
    let j = job(db, t, queued.id).await;
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.last_error_code.as_deref(), Some("lease_expired"));
    assert_eq!((j.attempts, j.finished_at), (2, Some(now)));
}

async fn tenants_do_not_see_each_others_jobs(db: &Db) {
    let a = tenant(db, "synthetic-a").await;
    let b = tenant(db, "synthetic-b").await;
    let subject = Uuid::now_v7();
    let mut tx = db.begin_tenant(a, TxMode::Write).await.unwrap();
    let ja = jobs::enqueue(&mut tx, "transcribe", subject, t0())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = db.begin_tenant(b, TxMode::Write).await.unwrap();
    assert_eq!(jobs::get(&mut tx, ja.id).await.unwrap(), None);
    assert!(
        jobs::for_subject(&mut tx, subject)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(jobs::list(&mut tx, None, 100).await.unwrap().is_empty());
    // The same subject id in tenant B is B's own job, not A's.
    let jb = jobs::enqueue(&mut tx, "transcribe", subject, t0())
        .await
        .unwrap();
    assert_ne!(jb.id, ja.id);
    assert_eq!(jb.tenant, b);
    tx.commit().await.unwrap();

    let mut tx = db.begin_tenant(a, TxMode::Read).await.unwrap();
    let listed = jobs::list(&mut tx, None, 100).await.unwrap();
    assert_eq!(listed, vec![ja.clone()]);
    assert_eq!(
        jobs::list(&mut tx, Some(JobState::Queued), 100)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        jobs::list(&mut tx, Some(JobState::Running), 100)
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit().await.unwrap();

    // A claim of B's job cannot touch A's.
    let w = worker("w1");
    let c1 = jobs::claim(db, &w, KINDS, LEASE, t0())
        .await
        .unwrap()
        .unwrap();
    let c2 = jobs::claim(db, &w, KINDS, LEASE, t0())
        .await
        .unwrap()
        .unwrap();
    let mut seen = [c1.tenant, c2.tenant];
    seen.sort();
    let mut want = [a, b];
    want.sort();
    assert_eq!(seen, want, "each tenant's job claimed in its own tenant");
}

async fn list_is_newest_first_and_limited(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(enqueue(db, t, "transcribe", t0() + secs(i)).await.id);
    }
    let mut tx = db.begin_tenant(t, TxMode::Read).await.unwrap();
    let listed = jobs::list(&mut tx, None, 3).await.unwrap();
    assert_eq!(
        listed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[4], ids[3], ids[2]]
    );
    assert_eq!(jobs::list(&mut tx, None, 0).await.unwrap().len(), 1);
}

async fn a_small_tenant_is_served_next_to_a_busy_one(db: &Db) {
    let a = tenant(db, "synthetic-busy").await;
    let b = tenant(db, "synthetic-small").await;
    for _ in 0..50 {
        enqueue(db, a, "transcribe", t0()).await;
    }
    // B's single job is also the youngest.
    let small = enqueue(db, b, "transcribe", t0() + secs(1)).await;
    let w = worker("w1");
    let now = t0() + secs(2);
    let first = jobs::claim(db, &w, KINDS, LEASE, now)
        .await
        .unwrap()
        .unwrap();
    let second = jobs::claim(db, &w, KINDS, LEASE, now)
        .await
        .unwrap()
        .unwrap();
    assert!(
        first.job.id == small.id || second.job.id == small.id,
        "B's job was not among the first two claims"
    );
    // Then the rest of A's queue drains.
    let mut rest = 0;
    while let Some(c) = jobs::claim(db, &w, KINDS, LEASE, now).await.unwrap() {
        assert_eq!(c.tenant, a);
        rest += 1;
    }
    assert_eq!(rest, 49);
}

async fn three_tenants_take_turns(db: &Db) {
    let tenants = [
        tenant(db, "synthetic-a").await,
        tenant(db, "synthetic-b").await,
        tenant(db, "synthetic-c").await,
    ];
    for t in tenants {
        for _ in 0..4 {
            enqueue(db, t, "transcribe", t0()).await;
        }
    }
    let w = worker("w1");
    let mut order = Vec::new();
    while let Some(c) = jobs::claim(db, &w, KINDS, LEASE, t0()).await.unwrap() {
        order.push(c.tenant);
    }
    assert_eq!(order.len(), 12);
    for window in order.chunks(3) {
        let mut w = window.to_vec();
        w.sort();
        w.dedup();
        assert_eq!(w.len(), 3, "each round serves every tenant once: {order:?}");
    }
}

async fn suspended_tenants_wait(db: &Db) {
    let t = tenant(db, "synthetic-a").await;
    enqueue(db, t, "transcribe", t0()).await;
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    p.query("UPDATE tenants SET status = 'suspended' WHERE id = $1")
        .bind(t)
        .execute()
        .await
        .unwrap();
    p.commit().await.unwrap();
    let w = worker("w1");
    assert!(
        jobs::claim(db, &w, KINDS, LEASE, t0())
            .await
            .unwrap()
            .is_none()
    );
}

both!(
    enqueue_is_idempotent_and_commits_with_the_callers_transaction,
    bad_arguments_are_refused,
    claim_then_complete,
    an_expired_lease_is_reclaimed_and_the_stale_worker_cannot_complete,
    retry_with_backoff_then_success,
    attempts_run_out_and_permanent_errors_fail_at_once,
    a_job_that_keeps_losing_its_worker_fails_with_lease_expired,
    tenants_do_not_see_each_others_jobs,
    list_is_newest_first_and_limited,
    a_small_tenant_is_served_next_to_a_busy_one,
    three_tenants_take_turns,
    suspended_tenants_wait,
);

/// Row-level security on `jobs`, as the serving role with the application bypassed.
#[tokio::test]
async fn pg_raw_sql_as_the_serving_role_sees_only_its_tenants_jobs() {
    use sqlx::{Connection, PgConnection};

    let (db, scratch) = common::postgres().await;
    let a = tenant(&db, "synthetic-a").await;
    let b = tenant(&db, "synthetic-b").await;
    for _ in 0..3 {
        enqueue(&db, a, "transcribe", t0()).await;
    }
    enqueue(&db, b, "transcribe", t0()).await;
    db.close().await;

    let mut conn = PgConnection::connect(&scratch.app_url).await.unwrap();
    for (as_tenant, expect_a, expect_b) in [(Some(b), 0i64, 1i64), (Some(a), 3, 0), (None, 0, 0)] {
        let setting = as_tenant.map(|t| t.to_string()).unwrap_or_default();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('phivault.tenant_id', $1, true)")
            .bind(setting)
            .execute(&mut *tx)
            .await
            .unwrap();
        let (seen_a, seen_b): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id = $2) FROM jobs",
        )
        .bind(a.as_uuid())
        .bind(b.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!((seen_a, seen_b), (expect_a, expect_b), "as {as_tenant:?}");
        // Nor can it touch them.
        let touched = sqlx::query("UPDATE jobs SET updated_at = updated_at WHERE tenant_id = $1")
            .bind(a.as_uuid())
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(touched, expect_a as u64);
        tx.rollback().await.unwrap();
    }

    // Writing a job for A while B is set is refused by the policy.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('phivault.tenant_id', $1, true)")
        .bind(b.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query(
        "INSERT INTO jobs (tenant_id, id, kind, subject_id, state, attempts, max_attempts,
                           run_after, created_at, updated_at)
         VALUES ($1, $2, 'transcribe', $3, 'queued', 0, 5, now(), now(), now())",
    )
    .bind(a.as_uuid())
    .bind(Uuid::now_v7())
    .bind(Uuid::now_v7())
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(
        matches!(&err, sqlx::Error::Database(d) if d.code().as_deref() == Some("42501")),
        "{err:?}"
    );
    tx.rollback().await.unwrap();
    conn.close().await.unwrap();
}
