//! The auditor: the one way the server writes its trail.
//!
//! Two paths, both fail-closed:
//! - [`Auditor::append_in`] writes a PHI change's event inside the change's own
//!   transaction, so both commit or neither does.
//! - [`Auditor::record`] is for events that have no transaction of their own (a read, a
//!   refusal, a sign-in). It hands the event to a single writer task that batches the
//!   events of concurrent requests into one transaction per chain and one durable commit
//!   (group commit), and answers each caller only once its event is committed. A read is
//!   served only after that answer.
//!
//! A failed write is an error to the caller, who must refuse the request; nothing is
//! retried behind its back, so the server recovers the moment the store does.
//! Checkpoints are signed by a background task every `checkpoint_every` events of a
//! chain or every `checkpoint_interval`, whichever comes first, and copied to the
//! witness.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use phivault_store::{Db, PlatformTx, TenantTx, TxMode};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::checkpoint::CheckpointSigner;
use crate::event::AuditEvent;
use crate::ledger::{self, ChainId, CheckpointOutcome};
use crate::witness::Witness;
use crate::{AuditError, Result};

/// The least audit retention phivault accepts: six years (HIPAA §164.316(b)(2)).
pub const MIN_RETENTION_YEARS: u32 = 6;

/// How the auditor batches and checkpoints.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// Sign a checkpoint once a chain has this many events past its last one.
    pub checkpoint_every: u64,
    /// ...or this long after its last one, if it has any new event.
    pub checkpoint_interval: Duration,
    /// Most events committed in one group.
    pub batch_max: usize,
    /// Where checkpoints are copied outside the database.
    pub witness: Option<Witness>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every: 1000,
            checkpoint_interval: Duration::from_secs(60),
            batch_max: 1024,
            witness: None,
        }
    }
}

struct Job {
    event: AuditEvent,
    reply: oneshot::Sender<Result<u64>>,
}

/// What a chain's next checkpoint must cover. Sequence numbers rather than counts: an
/// `append_in` event is noted before its transaction commits, so a checkpoint that runs
/// in between does not cover it, and only a checkpoint that signs it settles it.
#[derive(Clone, Copy)]
struct Pending {
    /// The last sequence a checkpoint signed (or, for a chain first written since start,
    /// the one before its first event written here).
    covered: u64,
    /// The highest sequence written since, committed or not.
    written: u64,
}

struct Shared {
    db: Db,
    config: AuditConfig,
    signer: RwLock<Option<Arc<CheckpointSigner>>>,
    /// Per chain with events written since its last checkpoint.
    pending: Mutex<HashMap<ChainId, Pending>>,
    nudge: Notify,
    healthy: AtomicBool,
}

/// The server's audit writer. Cheap to clone.
#[derive(Clone)]
pub struct Auditor {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("healthy", &self.is_healthy())
            .field("signing", &self.has_signer())
            .finish()
    }
}

fn chain_of(event: &AuditEvent) -> ChainId {
    match event.tenant {
        Some(t) => ChainId::Tenant(t),
        None => ChainId::Platform,
    }
}

impl Auditor {
    /// Starts the writer and checkpoint tasks on the current tokio runtime.
    pub fn start(db: Db, config: AuditConfig) -> Auditor {
        let (queue, rx) = mpsc::channel(config.batch_max.max(1) * 8);
        let shared = Arc::new(Shared {
            db,
            config,
            signer: RwLock::new(None),
            pending: Mutex::new(HashMap::new()),
            nudge: Notify::new(),
            healthy: AtomicBool::new(true),
        });
        tokio::spawn(write_loop(shared.clone(), rx));
        tokio::spawn(checkpoint_loop(Arc::downgrade(&shared)));
        Auditor { shared, queue }
    }

    /// Gives the auditor its checkpoint key (once the keys are unsealed).
    pub fn set_signer(&self, signer: CheckpointSigner) {
        *self
            .shared
            .signer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(signer));
        self.shared.nudge.notify_one();
    }

    /// Drops the checkpoint key (the keys were sealed); checkpoints wait for the next
    /// [`Auditor::set_signer`].
    pub fn clear_signer(&self) {
        *self
            .shared
            .signer
            .write()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether checkpoints can be signed.
    pub fn has_signer(&self) -> bool {
        self.shared
            .signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The checkpoint key's public half (hex), when the auditor has the key.
    pub fn signer_public_key(&self) -> Option<String> {
        self.shared
            .signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|s| hex::encode(s.verifying_key().as_bytes()))
    }

    /// Whether the last write succeeded. Informational (for `/readyz`): every request
    /// still tries, and is refused if its own event cannot be written.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed)
    }

    /// Makes `event` durable through group commit and returns its sequence number in its
    /// chain (the tenant's, or the platform's when `event.tenant` is `None`).
    ///
    /// # Errors
    /// The store could not write it: the caller must refuse the request.
    pub async fn record(&self, event: AuditEvent) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { event, reply })
            .await
            .map_err(|_| AuditError::WriterStopped)?;
        answer.await.map_err(|_| AuditError::WriterStopped)?
    }

    /// Appends `event` to the transaction's tenant chain; it commits with the
    /// transaction. The event's tenant is set to the transaction's.
    pub async fn append_in(&self, tx: &mut TenantTx, event: AuditEvent) -> Result<u64> {
        let result = ledger::append_tenant(tx, vec![event]).await;
        self.note(&result);
        let chained = result?;
        let seq = chained.last().map(|c| c.event.sequence).unwrap_or(0);
        self.shared.count(ChainId::Tenant(tx.tenant()), seq, seq);
        Ok(seq)
    }

    /// Appends `events` to the transaction's tenant chain in one write; they commit with
    /// the transaction. Returns the last sequence number (0 for none).
    pub async fn append_all_in(&self, tx: &mut TenantTx, events: Vec<AuditEvent>) -> Result<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let result = ledger::append_tenant(tx, events).await;
        self.note(&result);
        let chained = result?;
        let first = chained.first().map(|c| c.event.sequence).unwrap_or(0);
        let last = chained.last().map(|c| c.event.sequence).unwrap_or(0);
        self.shared.count(ChainId::Tenant(tx.tenant()), first, last);
        Ok(last)
    }

    /// Appends `event` to the platform chain inside `tx`; it commits with the transaction.
    /// The event's tenant is cleared: the platform chain holds platform events only.
    pub async fn append_platform_in(&self, tx: &mut PlatformTx, event: AuditEvent) -> Result<u64> {
        let event = AuditEvent {
            tenant: None,
            ..event
        };
        let result = ledger::append_platform(tx, vec![event]).await;
        self.note(&result);
        let chained = result?;
        let seq = chained.last().map(|c| c.event.sequence).unwrap_or(0);
        self.shared.count(ChainId::Platform, seq, seq);
        Ok(seq)
    }

    fn note<T>(&self, result: &Result<T>) {
        self.shared.healthy.store(result.is_ok(), Ordering::Relaxed);
    }

    /// Checks that the trail can be written, leaving no trace: a probe event is appended
    /// to the platform chain in a transaction that is then rolled back.
    pub async fn probe(&self) -> Result<()> {
        let mut tx = self.shared.db.begin_platform(TxMode::Write).await?;
        let probe = AuditEvent {
            sequence: 0,
            time: Utc::now(),
            tenant: None,
            actor: crate::Actor {
                kind: crate::ActorKind::System,
                id: "readiness-probe".into(),
                role: String::new(),
            },
            source: crate::Source::default(),
            action: crate::Action::GateChanged,
            resource: crate::Resource {
                kind: "audit_store".into(),
                id: String::new(),
            },
            fields: Vec::new(),
            outcome: crate::Outcome::Success,
            reason: None,
            request_id: String::new(),
            before: None,
            after: None,
        };
        let result = ledger::append_platform(&mut tx, vec![probe]).await;
        // Dropping the transaction rolls it back: the probe is never committed.
        drop(tx);
        self.note(&result);
        result.map(|_| ())
    }

    /// Signs a checkpoint for every chain with events since its last one, now.
    pub async fn checkpoint_now(&self) -> Result<()> {
        self.shared.checkpoint_pending(0).await
    }

    /// Signs (if needed) and witnesses a checkpoint of `chain`, now.
    pub async fn checkpoint_chain(&self, chain: ChainId) -> Result<CheckpointOutcome> {
        self.shared.checkpoint(chain).await
    }
}

impl Shared {
    /// Notes that events `first..=last` of `chain` were written.
    fn count(&self, chain: ChainId, first: u64, last: u64) {
        let reached = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let p = pending.entry(chain).or_insert(Pending {
                covered: first.saturating_sub(1),
                written: last,
            });
            p.written = p.written.max(last);
            p.written.saturating_sub(p.covered) >= self.config.checkpoint_every
        };
        if reached {
            self.nudge.notify_one();
        }
    }

    fn signer(&self) -> Option<Arc<CheckpointSigner>> {
        self.signer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn checkpoint(&self, chain: ChainId) -> Result<CheckpointOutcome> {
        let Some(signer) = self.signer() else {
            return Ok(CheckpointOutcome::UpToDate);
        };
        let now = Utc::now();
        let outcome = match chain {
            ChainId::Tenant(t) => {
                let mut tx = self.db.begin_tenant(t, TxMode::Write).await?;
                let o = ledger::checkpoint_tenant(&mut tx, &signer, now).await?;
                tx.commit().await?;
                o
            }
            ChainId::Platform => {
                let mut tx = self.db.begin_platform(TxMode::Write).await?;
                let o = ledger::checkpoint_platform(&mut tx, &signer, now).await?;
                tx.commit().await?;
                o
            }
        };
        if let (CheckpointOutcome::Signed(cp), Some(w)) = (&outcome, &self.config.witness) {
            w.put(chain, cp, signer.verifying_key().as_bytes()).await?;
        }
        Ok(outcome)
    }

    /// Checkpoints every chain with more than `threshold` pending events. A chain stays
    /// pending until a checkpoint signs its last written event (one still uncommitted is
    /// retried; one rolled back is settled by the next event, which reuses its number).
    async fn checkpoint_pending(&self, threshold: u64) -> Result<()> {
        if self.signer().is_none() {
            return Ok(());
        }
        let due: Vec<ChainId> = {
            let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending
                .iter()
                .filter(|(_, p)| p.written.saturating_sub(p.covered) > threshold)
                .map(|(c, _)| *c)
                .collect()
        };
        let mut first_error = None;
        for chain in due {
            match self.checkpoint(chain).await {
                Ok(outcome) => {
                    if let CheckpointOutcome::Signed(cp) = outcome {
                        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(p) = pending.get_mut(&chain) {
                            p.covered = p.covered.max(cp.checkpoint.sequence);
                            if p.covered >= p.written {
                                pending.remove(&chain);
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%chain, error = %e, "audit checkpoint failed; will retry");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn write_chain(&self, chain: ChainId, events: Vec<AuditEvent>) -> Result<Vec<u64>> {
        let chained = match chain {
            ChainId::Tenant(t) => {
                let mut tx = self.db.begin_tenant(t, TxMode::Write).await?;
                let c = ledger::append_tenant(&mut tx, events).await?;
                tx.commit().await?;
                c
            }
            ChainId::Platform => {
                let mut tx = self.db.begin_platform(TxMode::Write).await?;
                let c = ledger::append_platform(&mut tx, events).await?;
                tx.commit().await?;
                c
            }
        };
        Ok(chained.iter().map(|c| c.event.sequence).collect())
    }
}

async fn write_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Job>) {
    let max = shared.config.batch_max.max(1);
    let mut batch = Vec::with_capacity(max);
    while rx.recv_many(&mut batch, max).await > 0 {
        // The callers just answered are still resubmitting; one yield lets them join this
        // batch instead of leaving a batch of one behind them (which costs a whole commit).
        if batch.len() < max {
            tokio::task::yield_now().await;
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        let mut by_chain: BTreeMap<ChainId, Vec<Job>> = BTreeMap::new();
        for job in batch.drain(..) {
            by_chain.entry(chain_of(&job.event)).or_default().push(job);
        }
        for (chain, jobs) in by_chain {
            let (events, replies): (Vec<_>, Vec<_>) =
                jobs.into_iter().map(|j| (j.event, j.reply)).unzip();
            match shared.write_chain(chain, events).await {
                Ok(seqs) => {
                    shared.healthy.store(true, Ordering::Relaxed);
                    if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
                        shared.count(chain, *first, *last);
                    }
                    for (reply, seq) in replies.into_iter().zip(seqs) {
                        let _ = reply.send(Ok(seq));
                    }
                }
                Err(e) => {
                    shared.healthy.store(false, Ordering::Relaxed);
                    tracing::error!(%chain, error = %e, "audit write failed; refusing the requests that needed it");
                    let message = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(AuditError::Unavailable(message.clone())));
                    }
                }
            }
        }
    }
}

async fn checkpoint_loop(shared: std::sync::Weak<Shared>) {
    let interval = match shared.upgrade() {
        Some(s) => s.config.checkpoint_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let threshold = tokio::select! {
            _ = tick.tick() => 0,
            _ = s.nudge.notified() => s.config.checkpoint_every.saturating_sub(1),
        };
        // Errors are logged inside; the next tick retries.
        let _ = s.checkpoint_pending(threshold).await;
    }
}
