//! Verifying stored chains: every event, every checkpoint signature, the witness copies
//! and the head row, in constant memory.

use ed25519_dalek::VerifyingKey;
use phivault_store::{Db, TenantId, TxMode};
use thiserror::Error;
use uuid::Uuid;

use crate::chain::{ChainFault, ChainedEvent, Verification, Verifier};
use crate::checkpoint::SignedCheckpoint;
use crate::ledger::{self, ChainId};
use crate::witness::Witness;
use crate::{AuditError, Result};

/// Events read per page while verifying.
const PAGE: u32 = 10_000;

/// Why a stored chain failed verification.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The chain or its checkpoints were tampered with.
    #[error("{0}")]
    Fault(ChainFault),
    /// The chain could not be read.
    #[error("{0}")]
    Audit(#[from] AuditError),
}

impl VerifyError {
    /// The first bad sequence number, when the failure is a fault.
    pub fn sequence(&self) -> Option<u64> {
        match self {
            VerifyError::Fault(f) => Some(match f {
                ChainFault::Gap { expected, .. } => *expected,
                ChainFault::BrokenLink { sequence }
                | ChainFault::Altered { sequence }
                | ChainFault::BadSignature { sequence }
                | ChainFault::CheckpointMismatch { sequence } => *sequence,
                ChainFault::Truncated { last, .. } => last + 1,
            }),
            VerifyError::Audit(AuditError::Undecodable { sequence }) => Some(*sequence),
            VerifyError::Audit(_) => None,
        }
    }
}

/// Every chain in the database: the platform's, then each tenant's.
pub async fn chains(db: &Db) -> Result<Vec<ChainId>> {
    let mut tx = db.begin_platform(TxMode::Read).await?;
    let ids: Vec<(Uuid,)> = tx
        .query("SELECT id FROM tenants ORDER BY id")
        .fetch_all()
        .await?;
    tx.commit().await?;
    let mut out = vec![ChainId::Platform];
    out.extend(
        ids.into_iter()
            .map(|(id,)| ChainId::Tenant(TenantId::from_uuid(id))),
    );
    Ok(out)
}

/// The checkpoints stored for `chain`.
pub async fn stored_checkpoints(db: &Db, chain: ChainId) -> Result<Vec<ledger::StoredCheckpoint>> {
    match chain {
        ChainId::Tenant(t) => {
            let mut tx = db.begin_tenant(t, TxMode::Read).await?;
            let cps = ledger::tenant_checkpoints(&mut tx).await?;
            tx.commit().await?;
            Ok(cps)
        }
        ChainId::Platform => {
            let mut tx = db.begin_platform(TxMode::Read).await?;
            let cps = ledger::platform_checkpoints(&mut tx).await?;
            tx.commit().await?;
            Ok(cps)
        }
    }
}

async fn page(db: &Db, chain: ChainId, after: u64) -> Result<Vec<Result<ChainedEvent>>> {
    match chain {
        ChainId::Tenant(t) => {
            let mut tx = db.begin_tenant(t, TxMode::Read).await?;
            let rows = ledger::tenant_page(&mut tx, after, PAGE).await?;
            tx.commit().await?;
            Ok(rows)
        }
        ChainId::Platform => {
            let mut tx = db.begin_platform(TxMode::Read).await?;
            let rows = ledger::platform_page(&mut tx, after, PAGE).await?;
            tx.commit().await?;
            Ok(rows)
        }
    }
}

async fn recorded_head(db: &Db, chain: ChainId) -> Result<u64> {
    match chain {
        ChainId::Tenant(t) => {
            let mut tx = db.begin_tenant(t, TxMode::Read).await?;
            let h = ledger::tenant_head(&mut tx).await?;
            tx.commit().await?;
            Ok(h)
        }
        ChainId::Platform => {
            let mut tx = db.begin_platform(TxMode::Read).await?;
            let h = ledger::platform_head(&mut tx).await?;
            tx.commit().await?;
            Ok(h)
        }
    }
}

/// Verifies one stored chain against checkpoints signed by one of `trusted` keys: the
/// database's checkpoints and, when given, the witness's copies (a checkpoint missing
/// from the database or disagreeing with it is caught either way). `progress` is called
/// with the number of events checked so far.
pub async fn verify_chain(
    db: &Db,
    chain: ChainId,
    trusted: &[VerifyingKey],
    witness: Option<&Witness>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Verification, VerifyError> {
    let mut checkpoints: Vec<SignedCheckpoint> = stored_checkpoints(db, chain)
        .await?
        .into_iter()
        .map(|c| c.signed)
        .collect();
    if let Some(w) = witness {
        for record in w.list(chain).await? {
            if !checkpoints.contains(&record.checkpoint) {
                checkpoints.push(record.checkpoint);
            }
        }
    }
    let mut verifier = Verifier::new(&checkpoints, trusted).map_err(VerifyError::Fault)?;
    // The head is read before the events: on a live server, events appended while the
    // pages are read only add to what is checked, and never look like a cut tail.
    let head = recorded_head(db, chain).await?;
    let mut after = 0u64;
    loop {
        let rows = page(db, chain, after).await?;
        let n = rows.len();
        for row in rows {
            let event = row.map_err(|e| match e {
                AuditError::Undecodable { sequence } => {
                    VerifyError::Fault(ChainFault::Altered { sequence })
                }
                other => VerifyError::Audit(other),
            })?;
            after = event.event.sequence;
            verifier.push(&event).map_err(VerifyError::Fault)?;
        }
        progress(verifier.expected() - 1);
        if n < PAGE as usize {
            break;
        }
    }
    let verification = verifier.finish().map_err(VerifyError::Fault)?;
    if head > verification.events {
        return Err(VerifyError::Fault(ChainFault::Truncated {
            sequence: head,
            last: verification.events,
        }));
    }
    Ok(verification)
}

/// The number of events in `chain` (its recorded head), for progress bars.
pub async fn chain_length(db: &Db, chain: ChainId) -> Result<u64> {
    recorded_head(db, chain).await
}
