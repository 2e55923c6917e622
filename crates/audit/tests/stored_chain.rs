//! The audit trail as stored, on SQLite and on PostgreSQL (served by the non-owner app
//! role): appending through the auditor, in-transaction and by group commit, under
//! concurrency; checkpoints and witness; verification; the checkpoint signing key.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{TestDb, create_tenant, event, read_platform_chain, read_tenant_chain};
use phivault_audit::check::verify_chain;
use phivault_audit::signing::{load_or_create_signer, trusted_keys};
use phivault_audit::{AuditConfig, Auditor, ChainId, CheckpointSigner};
use phivault_crypto::keys::KeyService;
use phivault_crypto::provider::LocalProvider;
use phivault_store::{Db, TxMode};

fn config(witness: Option<phivault_audit::witness::Witness>) -> AuditConfig {
    AuditConfig {
        checkpoint_every: 50,
        // Only the event count (and explicit calls) trigger checkpoints in these tests.
        checkpoint_interval: Duration::from_secs(3600),
        batch_max: 64,
        witness,
    }
}

async fn verify_all_signed(
    t: &TestDb,
    chain: ChainId,
    key: ed25519_dalek::VerifyingKey,
    witness: Option<&phivault_audit::witness::Witness>,
    expected: u64,
) {
    let mut progress = 0;
    let v = verify_chain(&t.db, chain, &[key], witness, &mut |n| progress = n)
        .await
        .unwrap_or_else(|e| panic!("{}: chain {chain} does not verify: {e}", t.name()));
    assert_eq!(v.events, expected, "{}: chain {chain}", t.name());
    assert_eq!(v.signed_through, expected, "{}: chain {chain}", t.name());
    assert_eq!(v.unsigned, 0, "{}: chain {chain}", t.name());
    assert_eq!(progress, expected, "{}: chain {chain}", t.name());
}

async fn append_checkpoint_and_verify(t: &TestDb) {
    let db = &t.db;
    let tenant = create_tenant(db).await;
    let other = create_tenant(db).await;
    let witness = t.witness();
    let signer = CheckpointSigner::from_seed(&[7u8; 32]);
    let key = signer.verifying_key();
    let auditor = Auditor::start(db.clone(), config(Some(witness.clone())));
    auditor.set_signer(signer);
    assert!(auditor.has_signer());

    // In-transaction appends, each committed with its transaction. The event's own
    // tenant is overridden by the transaction's.
    let mut tenant_ids = BTreeSet::new();
    for n in 0..40 {
        let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
        let claimed = if n % 4 == 0 { Some(other) } else { None };
        let seq = auditor
            .append_in(&mut tx, event("tx", n, claimed))
            .await
            .unwrap();
        assert_eq!(seq, n + 1, "{}", t.name());
        tx.commit().await.unwrap();
        tenant_ids.insert(format!("tx-{n}"));
    }
    // Rolled back (explicitly, and by drop): the events vanish with their transactions
    // and their numbers are handed out again.
    {
        let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
        let seq = auditor
            .append_in(&mut tx, event("rolled-back", 0, None))
            .await
            .unwrap();
        assert_eq!(seq, 41);
        tx.rollback().await.unwrap();
        let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
        let seq = auditor
            .append_in(&mut tx, event("rolled-back", 1, None))
            .await
            .unwrap();
        assert_eq!(seq, 41);
        drop(tx);
    }
    // Group commit: concurrent reads and refusals on the tenant's chain, the platform's
    // and another tenant's.
    let mut jobs = Vec::new();
    for n in 0..420u64 {
        let (tag, chain) = match n % 3 {
            0 | 1 => ("rec", Some(tenant)),
            _ => ("plat", None),
        };
        let chain = if n % 21 == 20 { Some(other) } else { chain };
        let tag = if chain == Some(other) { "other" } else { tag };
        if chain == Some(tenant) {
            tenant_ids.insert(format!("{tag}-{n}"));
        }
        jobs.push((chain, auditor.record(event(tag, n, chain))));
    }
    let (chains, futures): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
    let results = futures::future::join_all(futures).await;
    let mut seqs: [Vec<u64>; 3] = Default::default();
    for (chain, r) in chains.into_iter().zip(results) {
        let seq = r.unwrap();
        let slot = match chain {
            Some(c) if c == tenant => 0,
            Some(_) => 1,
            None => 2,
        };
        seqs[slot].push(seq);
    }
    for s in &mut seqs {
        s.sort_unstable();
    }
    let tenant_total = 40 + seqs[0].len() as u64;
    assert_eq!(seqs[0], (41..=tenant_total).collect::<Vec<_>>());
    assert_eq!(seqs[1], (1..=seqs[1].len() as u64).collect::<Vec<_>>());
    assert_eq!(seqs[2], (1..=seqs[2].len() as u64).collect::<Vec<_>>());
    assert!(auditor.is_healthy());

    auditor.checkpoint_now().await.unwrap();

    // What is stored is exactly what was committed.
    let stored = read_tenant_chain(db, tenant).await;
    let ids: BTreeSet<String> = stored.iter().map(|c| c.event.request_id.clone()).collect();
    assert_eq!(ids.len(), stored.len(), "{}: duplicate events", t.name());
    assert_eq!(ids, tenant_ids, "{}", t.name());
    assert!(!ids.iter().any(|id| id.starts_with("rolled-back")));
    assert!(stored.iter().all(|c| c.event.tenant == Some(tenant)));
    let platform = read_platform_chain(db).await;
    assert_eq!(platform.len(), seqs[2].len());
    assert!(platform.iter().all(|c| c.event.tenant.is_none()));

    for (chain, n) in [
        (ChainId::Tenant(tenant), tenant_total),
        (ChainId::Tenant(other), seqs[1].len() as u64),
        (ChainId::Platform, seqs[2].len() as u64),
    ] {
        verify_all_signed(t, chain, key, Some(&witness), n).await;
        verify_all_signed(t, chain, key, None, n).await;
        let cps = phivault_audit::check::stored_checkpoints(db, chain)
            .await
            .unwrap();
        assert_eq!(cps.last().unwrap().signed.checkpoint.sequence, n);
        assert!(
            cps.iter()
                .all(|c| c.public_key == key.to_bytes() && c.signed.verify(&key))
        );
        let witnessed = witness.list(chain).await.unwrap();
        assert!(!witnessed.is_empty(), "{}: nothing witnessed", t.name());
        assert!(witnessed.iter().all(|r| r.checkpoint.verify(&key)
            && r.public_key == hex::encode(key.to_bytes())
            && r.chain == chain.to_string()));
        // A second checkpoint with nothing new signs nothing.
        assert_eq!(
            auditor.checkpoint_chain(chain).await.unwrap(),
            phivault_audit::ledger::CheckpointOutcome::UpToDate
        );
    }
    // The verifier pins its keys: another key's checkpoints are refused.
    let stranger = CheckpointSigner::from_seed(&[8u8; 32]).verifying_key();
    assert!(
        verify_chain(db, ChainId::Tenant(tenant), &[stranger], None, &mut |_| {})
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_append_checkpoint_verify() {
    let t = TestDb::sqlite().await;
    append_checkpoint_and_verify(&t).await;
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_append_checkpoint_verify() {
    let t = TestDb::postgres().await;
    append_checkpoint_and_verify(&t).await;
    t.close().await;
}

const TASKS: u64 = 16;
const ROUNDS: u64 = 20;

async fn concurrent_appenders(t: &TestDb) {
    let db = &t.db;
    let tenant = create_tenant(db).await;
    let signer = CheckpointSigner::from_seed(&[7u8; 32]);
    let key = signer.verifying_key();
    let auditor = Auditor::start(db.clone(), config(None));
    auditor.set_signer(signer);

    let mut appenders = Vec::new();
    for task in 0..TASKS {
        let (db, auditor) = (db.clone(), auditor.clone());
        appenders.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for round in 0..ROUNDS {
                let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
                let k = 1 + (task + round) % 3;
                let mut mine = Vec::new();
                for j in 0..k {
                    let e = event(&format!("task{task}"), round * 10 + j, None);
                    mine.push(auditor.append_in(&mut tx, e).await.unwrap());
                }
                // One transaction's events are consecutive.
                assert!(mine.windows(2).all(|w| w[1] == w[0] + 1), "{mine:?}");
                tx.commit().await.unwrap();
                seqs.extend(mine);
            }
            seqs
        }));
    }
    let mut recorders = Vec::new();
    for task in 0..4u64 {
        let auditor = auditor.clone();
        recorders.push(tokio::spawn(async move {
            let mut tenant_seqs = Vec::new();
            for chunk in 0..6u64 {
                let jobs: Vec<_> = (0..10u64)
                    .map(|j| {
                        let n = chunk * 10 + j;
                        let chain = (n % 2 == 0).then_some(tenant);
                        (
                            chain,
                            auditor.record(event(&format!("rec{task}"), n, chain)),
                        )
                    })
                    .collect();
                let (chains, futures): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
                for (chain, r) in chains
                    .into_iter()
                    .zip(futures::future::join_all(futures).await)
                {
                    let seq = r.unwrap();
                    if chain.is_some() {
                        tenant_seqs.push(seq);
                    }
                }
            }
            tenant_seqs
        }));
    }
    let mut all = Vec::new();
    for h in appenders.into_iter().chain(recorders) {
        all.extend(h.await.unwrap());
    }
    let n = all.len() as u64;
    assert_eq!(
        n,
        (0..TASKS)
            .map(|task| (0..ROUNDS).map(|r| 1 + (task + r) % 3).sum::<u64>())
            .sum::<u64>()
            + 4 * 30
    );
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=n).collect::<Vec<_>>(),
        "{}: sequence numbers handed out are not one linear sequence",
        t.name()
    );

    // Stored: one linear sequence, every event exactly once.
    let stored = read_tenant_chain(db, tenant).await;
    assert_eq!(
        stored.iter().map(|c| c.event.sequence).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "{}",
        t.name()
    );
    let ids: BTreeSet<&str> = stored.iter().map(|c| c.event.request_id.as_str()).collect();
    assert_eq!(
        ids.len() as u64,
        n,
        "{}: an event was stored twice",
        t.name()
    );

    for chain in [ChainId::Tenant(tenant), ChainId::Platform] {
        auditor.checkpoint_chain(chain).await.unwrap();
    }
    verify_all_signed(t, ChainId::Tenant(tenant), key, None, n).await;
    verify_all_signed(t, ChainId::Platform, key, None, 4 * 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_appenders_extend_one_linear_chain() {
    let t = TestDb::sqlite().await;
    concurrent_appenders(&t).await;
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_concurrent_appenders_extend_one_linear_chain() {
    let t = TestDb::postgres().await;
    concurrent_appenders(&t).await;
    t.close().await;
}

/// A checkpoint that runs while an `append_in` transaction is still open (the background
/// task can run at any moment) must not make the auditor forget that event: once it
/// commits, the next `checkpoint_now` signs it. On SQLite the checkpoint cannot run
/// while a writer is open, so this is PostgreSQL's case.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_checkpoint_now_signs_events_committed_after_a_concurrent_checkpoint() {
    let t = TestDb::postgres().await;
    let db = &t.db;
    let tenant = create_tenant(db).await;
    let signer = CheckpointSigner::from_seed(&[7u8; 32]);
    let key = signer.verifying_key();
    let auditor = Auditor::start(db.clone(), config(None));
    auditor.set_signer(signer);
    let chain = ChainId::Tenant(tenant);

    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    auditor
        .append_in(&mut tx, event("a", 1, None))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    auditor.checkpoint_now().await.unwrap();
    verify_all_signed(&t, chain, key, None, 1).await;

    // Nothing new committed: the checkpoint in between is up to date.
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    auditor
        .append_in(&mut tx, event("a", 2, None))
        .await
        .unwrap();
    auditor.checkpoint_now().await.unwrap();
    tx.commit().await.unwrap();
    auditor.checkpoint_now().await.unwrap();
    verify_all_signed(&t, chain, key, None, 2).await;

    // Something new committed: the checkpoint in between signs it, not the open one.
    auditor.record(event("a", 3, Some(tenant))).await.unwrap();
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    auditor
        .append_in(&mut tx, event("a", 4, None))
        .await
        .unwrap();
    auditor.checkpoint_now().await.unwrap();
    tx.commit().await.unwrap();
    auditor.checkpoint_now().await.unwrap();
    verify_all_signed(&t, chain, key, None, 4).await;

    // A rolled-back event is simply not there; the chain stays fully signed.
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    auditor
        .append_in(&mut tx, event("a", 5, None))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    auditor.checkpoint_now().await.unwrap();
    verify_all_signed(&t, chain, key, None, 4).await;
    t.close().await;
}

async fn signing_key_lifecycle(db: &Db, name: &str) {
    let now = Utc::now();
    let count = || async {
        let mut tx = db.begin_platform(TxMode::Read).await.unwrap();
        let (n,): (i64,) = tx
            .query("SELECT COUNT(*) FROM audit_signing_keys")
            .fetch_one()
            .await
            .unwrap();
        tx.commit().await.unwrap();
        n
    };

    // Sealed: no key can be made (and none is stored).
    assert!(
        load_or_create_signer(db, &KeyService::sealed(), now)
            .await
            .is_err(),
        "{name}"
    );
    assert_eq!(count().await, 0, "{name}");

    let keys = KeyService::with_provider(Arc::new(LocalProvider::ephemeral().unwrap()));
    let first = load_or_create_signer(db, &keys, now).await.unwrap();
    let again = load_or_create_signer(db, &keys, Utc::now()).await.unwrap();
    assert_eq!(
        first.verifying_key().to_bytes(),
        again.verifying_key().to_bytes(),
        "{name}: a second key was made"
    );
    assert_eq!(count().await, 1, "{name}");
    let trusted = trusted_keys(db, &keys).await.unwrap();
    assert_eq!(
        trusted.iter().map(|k| k.to_bytes()).collect::<Vec<_>>(),
        vec![first.verifying_key().to_bytes()],
        "{name}"
    );

    // A row written with database access alone (a key pair the hierarchy never wrapped)
    // is not trusted.
    let forger = CheckpointSigner::from_seed(&[9u8; 32]);
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    tx.query(
        "INSERT INTO audit_signing_keys (public_key, provider, wrapped, created_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(forger.verifying_key().to_bytes().to_vec())
    .bind("local")
    .bind(vec![0u8; 72])
    .bind(now - chrono::Duration::days(1))
    .execute()
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let trusted = trusted_keys(db, &keys).await.unwrap();
    assert_eq!(
        trusted.iter().map(|k| k.to_bytes()).collect::<Vec<_>>(),
        vec![first.verifying_key().to_bytes()],
        "{name}: a forged key row is trusted"
    );
    let loaded = load_or_create_signer(db, &keys, now).await.unwrap();
    assert_eq!(
        loaded.verifying_key().to_bytes(),
        first.verifying_key().to_bytes(),
        "{name}: the forged key row was chosen to sign"
    );

    // Sealed again, or another hierarchy: refused, never a silently created second key.
    let sealed = KeyService::sealed();
    assert!(
        load_or_create_signer(db, &sealed, now).await.is_err(),
        "{name}"
    );
    assert!(trusted_keys(db, &sealed).await.is_err(), "{name}");
    let stranger = KeyService::with_provider(Arc::new(LocalProvider::ephemeral().unwrap()));
    assert!(
        load_or_create_signer(db, &stranger, now).await.is_err(),
        "{name}"
    );
    assert!(trusted_keys(db, &stranger).await.is_err(), "{name}");
    assert_eq!(count().await, 2, "{name}");
}

#[tokio::test]
async fn sqlite_signing_key_is_created_once_and_needs_the_unsealed_hierarchy() {
    let t = TestDb::sqlite().await;
    signing_key_lifecycle(&t.db, t.name()).await;
    t.close().await;
}

#[tokio::test]
async fn pg_signing_key_is_created_once_and_needs_the_unsealed_hierarchy() {
    let t = TestDb::postgres().await;
    signing_key_lifecycle(&t.db, t.name()).await;
    t.close().await;
}
