//! Group commit of end-to-end utterance appends.
//!
//! Every append must be durable, with its audit event, before it is answered; one
//! transaction (and, on SQLite with `synchronous = FULL`, one fsync) per utterance caps a
//! busy session at the disk's flush rate. So appends go through one writer task that
//! takes the appends of concurrent requests, stores each of a tenant's in one
//! transaction with their audit events in one chain write, commits once, and only then
//! answers each caller. A refused append (its sequence did not rise, the session ended)
//! writes nothing and does not disturb the others; a storage failure fails the whole
//! group, and every caller of it is told so — none is answered as stored.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use phivault_access::TenantScope;
use phivault_audit::{AuditEvent, Auditor};
use phivault_domain::e2e::{self, NewUtterance, Refusal, Session, Utterance};
use phivault_store::{Db, TenantId, TxMode};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::ApiError;
use crate::audit::unavailable;

/// Most appends committed in one transaction.
const BATCH_MAX: usize = 512;

/// What an append ends as: stored, refused, or failed.
pub(crate) type AppendResult = Result<Result<Utterance, Refusal>, ApiError>;

/// One append waiting to be committed.
pub(crate) struct AppendJob {
    /// The participant's scope (its tenant).
    pub(crate) scope: TenantScope,
    /// The session, as the participant was authorized for it.
    pub(crate) session: Session,
    /// The participant's sender id.
    pub(crate) sender: Uuid,
    /// The utterance.
    pub(crate) utterance: NewUtterance,
    /// Its audit event; the resource id is set to the stored utterance's id.
    pub(crate) event: AuditEvent,
    /// When it arrived.
    pub(crate) now: DateTime<Utc>,
}

struct Queued {
    job: AppendJob,
    reply: oneshot::Sender<AppendResult>,
}

/// The handle of the writer task. Cheap to clone.
#[derive(Clone)]
pub(crate) struct E2eWriter {
    queue: mpsc::Sender<Queued>,
}

impl E2eWriter {
    /// Starts the writer task on the current runtime.
    pub(crate) fn start(db: Db, auditor: Auditor) -> Self {
        let (queue, rx) = mpsc::channel(4096);
        tokio::spawn(run(db, auditor, rx));
        E2eWriter { queue }
    }

    /// Stores `job` with its event, durably, and answers once committed.
    pub(crate) async fn append(&self, job: AppendJob) -> AppendResult {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down",
            )
        };
        self.queue
            .send(Queued { job, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(db: Db, auditor: Auditor, mut rx: mpsc::Receiver<Queued>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Let the requests that arrived meanwhile join this group.
        tokio::task::yield_now().await;
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let mut groups: HashMap<TenantId, Vec<Queued>> = HashMap::new();
        for q in batch {
            groups.entry(q.job.scope.tenant()).or_default().push(q);
        }
        for (_, group) in groups {
            commit_group(&db, &auditor, group).await;
        }
    }
}

async fn commit_group(db: &Db, auditor: &Auditor, group: Vec<Queued>) {
    let (jobs, replies): (Vec<AppendJob>, Vec<_>) =
        group.into_iter().map(|q| (q.job, q.reply)).unzip();
    match store(db, auditor, jobs).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that went away needs no answer.
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::error!(code = e.code(), "e2e append group failed; none was stored");
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

async fn store(
    db: &Db,
    auditor: &Auditor,
    jobs: Vec<AppendJob>,
) -> Result<Vec<Result<Utterance, Refusal>>, ApiError> {
    let Some(scope) = jobs.first().map(|j| j.scope.clone()) else {
        return Ok(Vec::new());
    };
    let mut tx = scope.begin(db, TxMode::Write).await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut events = Vec::with_capacity(jobs.len());
    for job in jobs {
        let outcome =
            e2e::append(&mut tx, &job.session, job.sender, job.utterance, job.now).await?;
        if let Ok(u) = &outcome {
            let mut event = job.event;
            event.resource.id = u.id.to_string();
            events.push(event);
        }
        outcomes.push(outcome);
    }
    auditor
        .append_all_in(&mut tx, events)
        .await
        .map_err(unavailable)?;
    tx.commit().await?;
    Ok(outcomes)
}
