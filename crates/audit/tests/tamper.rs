//! Tampering with a stored chain, as someone with raw database access would: the
//! append-only triggers are out of the way (dropped on SQLite, disabled by the owner on
//! PostgreSQL), rows are edited, deleted, swapped, cut, forged and re-hashed. Every
//! change must fail `verify_chain`; the one thing a database writer can do undetected,
//! extending the chain past its last signed checkpoint, is reported as unsigned.
//!
//! Each case is committed on a separate raw connection (verification reads through the
//! `Db` pool, which cannot see another connection's open transaction), verified, then
//! undone from a pristine copy of the rows kept beside them.

mod common;

use chrono::Utc;
use common::{Lcg, TestDb, create_tenant, event, read_tenant_chain, rehash};
use ed25519_dalek::VerifyingKey;
use phivault_audit::check::{VerifyError, verify_chain};
use phivault_audit::ledger::{self, CheckpointOutcome};
use phivault_audit::witness::Witness;
use phivault_audit::{
    Action, AuditError, ChainFault, ChainId, ChainedEvent, Checkpoint, CheckpointSigner,
    SignedCheckpoint, Verification,
};
use phivault_store::{TenantId, TxMode};
use sqlx::{Connection, PgConnection, SqliteConnection};

const EVERY: u64 = 50;

/// A stored tenant chain with checkpoints every ~50 events and one at its end, all
/// witnessed.
struct Built {
    tenant: TenantId,
    chain: ChainId,
    signer: CheckpointSigner,
    key: VerifyingKey,
    witness: Witness,
    /// The events as stored, index `i` holding sequence `i + 1`.
    events: Vec<ChainedEvent>,
    /// The stored checkpoints.
    checkpoints: Vec<SignedCheckpoint>,
}

async fn build(t: &TestDb, n: u64) -> Built {
    let tenant = create_tenant(&t.db).await;
    let chain = ChainId::Tenant(tenant);
    let signer = CheckpointSigner::from_seed(&[11u8; 32]);
    let witness = t.witness();
    let mut appended = 0u64;
    let mut next_cp = EVERY;
    let mut batch_no = 0u64;
    let mut checkpoints = Vec::new();
    while appended < n {
        // Batches of 1..=6 events, as group commit would write them.
        let size = (1 + batch_no % 6).min(n - appended);
        let batch = (1..=size)
            .map(|j| event("ev", appended + j, None))
            .collect();
        let mut tx = t.db.begin_tenant(tenant, TxMode::Write).await.unwrap();
        ledger::append_tenant(&mut tx, batch).await.unwrap();
        tx.commit().await.unwrap();
        appended += size;
        batch_no += 1;
        if appended >= next_cp || appended == n {
            let mut tx = t.db.begin_tenant(tenant, TxMode::Write).await.unwrap();
            let outcome = ledger::checkpoint_tenant(&mut tx, &signer, Utc::now())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            let CheckpointOutcome::Signed(cp) = outcome else {
                panic!("nothing to checkpoint at {appended}")
            };
            assert_eq!(cp.checkpoint.sequence, appended);
            witness
                .put(chain, &cp, signer.verifying_key().as_bytes())
                .await
                .unwrap();
            checkpoints.push(cp);
            while next_cp <= appended {
                next_cp += EVERY;
            }
        }
    }
    let events = read_tenant_chain(&t.db, tenant).await;
    assert_eq!(events.len() as u64, n);
    let key = signer.verifying_key();
    let built = Built {
        tenant,
        chain,
        signer,
        key,
        witness,
        events,
        checkpoints,
    };
    let v = built.verify(t, true).await.unwrap();
    assert_eq!((v.events, v.signed_through, v.unsigned), (n, n, 0));
    built
}

impl Built {
    async fn verify(&self, t: &TestDb, with_witness: bool) -> Result<Verification, VerifyError> {
        let witness = with_witness.then_some(&self.witness);
        verify_chain(&t.db, self.chain, &[self.key], witness, &mut |_| {}).await
    }

    fn last_hash(&self) -> [u8; 32] {
        self.events.last().unwrap().hash
    }
}

/// Sets one column of one row (`$1` tenant, `$2` seq, `$3` value); exactly one row must
/// change.
macro_rules! update_one {
    ($conn:expr, $sql:expr, $tenant:expr, $seq:expr, $value:expr) => {{
        let done = sqlx::query($sql)
            .bind($tenant.as_uuid())
            .bind($seq)
            .bind($value)
            .execute(&mut *$conn)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1, "{}", $sql);
    }};
}

/// The mutations, written once for both backends' raw connections.
macro_rules! define_mutator {
    ($mutate:ident, $rewrite:ident, $conn:ty) => {
        /// Replaces the chain from index `from` on with `m[from..]` and moves the head
        /// row to match, as a forger who recomputes hashes would.
        async fn $rewrite(conn: &mut $conn, tenant: TenantId, m: &[ChainedEvent], from: usize) {
            sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq > $2")
                .bind(tenant.as_uuid())
                .bind(from as i64)
                .execute(&mut *conn)
                .await
                .unwrap();
            for c in &m[from..] {
                insert_event_row!(&mut *conn, tenant, c);
            }
            let head = m.last().map(|c| c.hash).unwrap_or(phivault_audit::GENESIS);
            let done = sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1")
                .bind(tenant.as_uuid())
                .bind(m.len() as i64)
                .bind(head.to_vec())
                .execute(&mut *conn)
                .await
                .unwrap();
            assert_eq!(done.rows_affected(), 1);
        }

        /// Applies mutation `kind` to the stored copy of `pristine`; returns what it did.
        async fn $mutate(
            conn: &mut $conn,
            tenant: TenantId,
            pristine: &[ChainedEvent],
            kind: u64,
            rng: &mut Lcg,
        ) -> String {
            let n = pristine.len() as u64;
            let i = rng.below(n) as usize;
            let seq = i as i64 + 1;
            let ev = &pristine[i].event;
            match kind {
                0 => {
                    let v = format!("{}x", ev.actor.id);
                    update_one!(conn, "UPDATE audit_events SET actor_id = $3 WHERE tenant_id = $1 AND seq = $2", tenant, seq, v);
                    format!("edit actor_id of {seq}")
                }
                1 => {
                    let all = Action::ALL;
                    let at = all.iter().position(|a| *a == ev.action).unwrap();
                    let other = all[(at + 1 + rng.below(all.len() as u64 - 1) as usize) % all.len()];
                    update_one!(conn, "UPDATE audit_events SET action = $3 WHERE tenant_id = $1 AND seq = $2", tenant, seq, other.as_str());
                    format!("action of {seq}: {} -> {}", ev.action.as_str(), other.as_str())
                }
                2 => {
                    let mut f = ev.fields.clone();
                    let (v, what) = match rng.below(4) {
                        0 => {
                            f.push("ssn".into());
                            (serde_json::to_string(&f).unwrap(), "add a field name")
                        }
                        1 if !f.is_empty() => {
                            f.pop();
                            (serde_json::to_string(&f).unwrap(), "drop a field name")
                        }
                        2 if f.len() >= 2 => {
                            f.reverse();
                            (serde_json::to_string(&f).unwrap(), "reorder field names")
                        }
                        3 => ("[\"mrn\"".to_string(), "fields no longer JSON"),
                        _ => ("{}".to_string(), "fields not a list"),
                    };
                    update_one!(conn, "UPDATE audit_events SET fields = $3 WHERE tenant_id = $1 AND seq = $2", tenant, seq, v);
                    format!("{what} in {seq}")
                }
                3 => {
                    let v = format!("{}0", ev.resource.id);
                    update_one!(conn, "UPDATE audit_events SET resource_id = $3 WHERE tenant_id = $1 AND seq = $2", tenant, seq, v);
                    format!("edit resource_id of {seq}")
                }
                4 => {
                    let d = 1 + rng.below(10_000_000) as i64;
                    let d = if rng.below(2) == 0 { d } else { -d };
                    update_one!(conn, "UPDATE audit_events SET time_us = time_us + $3 WHERE tenant_id = $1 AND seq = $2", tenant, seq, d);
                    format!("move time_us of {seq} by {d}")
                }
                5 => {
                    let others: Vec<&str> = ["success", "denied", "failure"]
                        .into_iter()
                        .filter(|o| *o != ev.outcome.as_str())
                        .collect();
                    let v = others[rng.below(2) as usize];
                    update_one!(conn, "UPDATE audit_events SET outcome = $3 WHERE tenant_id = $1 AND seq = $2", tenant, seq, v);
                    format!("outcome of {seq} -> {v}")
                }
                6 => match rng.below(3) {
                    0 => {
                        let v = Some(if ev.before.is_some() {
                            r#"{"role":"owner","status":"active"}"#.to_string()
                        } else {
                            r#"{"role":"member"}"#.to_string()
                        });
                        update_one!(conn, "UPDATE audit_events SET before_json = $3 WHERE tenant_id = $1 AND seq = $2", tenant, seq, v);
                        format!("edit before_json of {seq}")
                    }
                    1 => {
                        let v: Option<String> = ev.after.is_none().then(|| "{}".to_string());
                        update_one!(conn, "UPDATE audit_events SET after_json = $3 WHERE tenant_id = $1 AND seq = $2", tenant, seq, v);
                        format!("add or remove after_json of {seq}")
                    }
                    _ => {
                        let v: Option<String> = ev.reason.is_none().then(|| "forged reason".to_string());
                        update_one!(conn, "UPDATE audit_events SET reason = $3 WHERE tenant_id = $1 AND seq = $2", tenant, seq, v);
                        format!("add or remove the reason of {seq}")
                    }
                },
                7 => {
                    let done = sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq = $2")
                        .bind(tenant.as_uuid())
                        .bind(seq)
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                    assert_eq!(done.rows_affected(), 1);
                    format!("delete {seq}")
                }
                8 => {
                    let j = ((i as u64 + 1 + rng.below(n - 1)) % n) as i64 + 1;
                    for (to, from) in [(seq, j), (j, seq)] {
                        let done = sqlx::query(
                            "UPDATE audit_events SET (time_us, actor_kind, actor_id, actor_role,
                                 source_ip, source_user_agent, source_device, action,
                                 resource_type, resource_id, fields, outcome, reason, request_id,
                                 before_json, after_json, prev_hash, hash) =
                             (SELECT time_us, actor_kind, actor_id, actor_role, source_ip,
                                 source_user_agent, source_device, action, resource_type,
                                 resource_id, fields, outcome, reason, request_id, before_json,
                                 after_json, prev_hash, hash
                              FROM pristine_events WHERE tenant_id = $1 AND seq = $3)
                             WHERE tenant_id = $1 AND seq = $2",
                        )
                        .bind(tenant.as_uuid())
                        .bind(to)
                        .bind(from)
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                        assert_eq!(done.rows_affected(), 1);
                    }
                    format!("swap the contents of {seq} and {j}")
                }
                9 => {
                    let k = 1 + rng.below(n);
                    let done = sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq > $2")
                        .bind(tenant.as_uuid())
                        .bind((n - k) as i64)
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                    assert_eq!(done.rows_affected(), k);
                    format!("cut the last {k} events")
                }
                10 => {
                    let mut m = pristine.to_vec();
                    m[i].event.resource.id = "forged".into();
                    rehash(&mut m, i);
                    $rewrite(conn, tenant, &m, i).await;
                    format!("forge {seq}, rehash the rest, move the head")
                }
                11 => {
                    let mut m = pristine.to_vec();
                    let mut forged = m[i].clone();
                    forged.event.action = Action::PhiExport;
                    forged.event.request_id = "forged".into();
                    m.insert(i, forged);
                    for (k, c) in m.iter_mut().enumerate().skip(i) {
                        c.event.sequence = k as u64 + 1;
                    }
                    rehash(&mut m, i);
                    $rewrite(conn, tenant, &m, i).await;
                    format!("insert a forged event at {seq}, renumber and rehash the rest")
                }
                _ => {
                    let mut m = pristine.to_vec();
                    m.remove(i);
                    for (k, c) in m.iter_mut().enumerate().skip(i) {
                        c.event.sequence = k as u64 + 1;
                    }
                    rehash(&mut m, i);
                    $rewrite(conn, tenant, &m, i).await;
                    format!("delete {seq}, renumber and rehash the rest")
                }
            }
        }
    };
}

const KINDS: u64 = 13;

define_mutator!(mutate_sqlite, rewrite_sqlite, SqliteConnection);
define_mutator!(mutate_pg, rewrite_pg, PgConnection);

async fn raw_sqlite(t: &TestDb) -> SqliteConnection {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(t.sqlite_path.as_ref().unwrap())
        .busy_timeout(std::time::Duration::from_secs(5));
    let mut conn = SqliteConnection::connect_with(&opts).await.unwrap();
    // This connection only tampers; its commits need not be durable.
    sqlx::raw_sql("PRAGMA synchronous = OFF")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Drops the append-only triggers on the events (as a tamperer would) and keeps a
/// pristine copy of the rows in connection-local temp tables.
async fn prepare_sqlite(conn: &mut SqliteConnection) {
    sqlx::raw_sql(
        "DROP TRIGGER audit_events_no_update;
         DROP TRIGGER audit_events_no_delete;
         CREATE TEMP TABLE pristine_events AS SELECT * FROM main.audit_events;
         CREATE TEMP TABLE pristine_heads AS SELECT * FROM main.audit_heads;",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
}

async fn restore_sqlite(conn: &mut SqliteConnection) {
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql(
        "DELETE FROM main.audit_events;
         INSERT INTO main.audit_events SELECT * FROM temp.pristine_events;
         DELETE FROM main.audit_heads;
         INSERT INTO main.audit_heads SELECT * FROM temp.pristine_heads;",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

fn expect_fault(case: &str, r: Result<Verification, VerifyError>) -> ChainFault {
    match r {
        Err(VerifyError::Fault(f)) => f,
        other => panic!("{case}: went undetected (or failed for another reason): {other:?}"),
    }
}

const CASES: u64 = 3000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_thousands_of_random_mutations_of_a_stored_chain_are_all_detected() {
    let t = TestDb::sqlite().await;
    let b = build(&t, 300).await;
    let mut conn = raw_sqlite(&t).await;
    prepare_sqlite(&mut conn).await;
    let mut rng = Lcg(0x5eed_a0d1);
    let mut tally = [0u32; KINDS as usize];
    for case in 0..CASES {
        let kind = rng.below(KINDS);
        let mut tx = conn.begin().await.unwrap();
        let label = mutate_sqlite(&mut tx, b.tenant, &b.events, kind, &mut rng).await;
        tx.commit().await.unwrap();
        expect_fault(
            &format!("case {case} (kind {kind}): '{label}'"),
            b.verify(&t, false).await,
        );
        restore_sqlite(&mut conn).await;
        tally[kind as usize] += 1;
        if case % 500 == 499 {
            // The restore really restores: otherwise every later case would be moot.
            let v = b.verify(&t, true).await.unwrap();
            assert_eq!(v.signed_through, 300, "after case {case}");
        }
    }
    assert!(tally.iter().all(|n| *n > 0), "{tally:?}");
    conn.close().await.unwrap();
    t.close().await;
}

#[tokio::test]
async fn pg_random_mutations_of_a_stored_chain_are_all_detected() {
    let t = TestDb::postgres().await;
    let b = build(&t, 120).await;
    let owner_url = t.pg.as_ref().unwrap().owner_url.clone();
    let mut conn = PgConnection::connect(&owner_url).await.unwrap();
    let tenant_setting = b.tenant.to_string();
    // Row-level security is forced on the owner too: name the tenant.
    sqlx::query("SELECT set_config('phivault.tenant_id', $1, false)")
        .bind(&tenant_setting)
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE pristine_events AS SELECT * FROM audit_events;
         CREATE TABLE pristine_heads AS SELECT * FROM audit_heads;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let mut rng = Lcg(0x9e5eed);
    let mut tally = [0u32; KINDS as usize];
    for case in 0..3 * KINDS {
        // Every kind three times, indices and details at random.
        let kind = case % KINDS;
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql("ALTER TABLE audit_events DISABLE TRIGGER append_only")
            .execute(&mut *tx)
            .await
            .unwrap();
        let label = mutate_pg(&mut tx, b.tenant, &b.events, kind, &mut rng).await;
        sqlx::raw_sql("ALTER TABLE audit_events ENABLE TRIGGER append_only")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        expect_fault(
            &format!("case {case} (kind {kind}): '{label}'"),
            b.verify(&t, case % 2 == 0).await,
        );
        // Undo, triggers out of the way again only inside this transaction.
        let mut tx = conn.begin().await.unwrap();
        sqlx::raw_sql(
            "ALTER TABLE audit_events DISABLE TRIGGER append_only;
             DELETE FROM audit_events;
             INSERT INTO audit_events SELECT * FROM pristine_events;
             UPDATE audit_heads h SET seq = p.seq, hash = p.hash FROM pristine_heads p
              WHERE h.tenant_id = p.tenant_id;
             ALTER TABLE audit_events ENABLE TRIGGER append_only;",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        tally[kind as usize] += 1;
    }
    let v = b.verify(&t, true).await.unwrap();
    assert_eq!(v.signed_through, 120);
    // The triggers are back: the owner is refused again.
    let refused = sqlx::query("DELETE FROM audit_events")
        .execute(&mut conn)
        .await;
    assert!(refused.is_err(), "append_only trigger left disabled");
    conn.close().await.unwrap();
    t.close().await;
}

/// Appends `k` forged events with valid hashes after the stored chain and moves the
/// head row, on a raw connection (SQLite: any connection; PostgreSQL: the serving role).
fn forge_tail(b: &Built, k: u64) -> Vec<ChainedEvent> {
    let mut prev = b.last_hash();
    let n = b.events.len() as u64;
    (n + 1..=n + k)
        .map(|seq| {
            let mut e = event("forged", seq, Some(b.tenant));
            e.sequence = seq;
            let c = phivault_audit::chain(prev, e);
            prev = c.hash;
            c
        })
        .collect()
}

#[tokio::test]
async fn sqlite_a_forged_tail_past_the_last_checkpoint_is_reported_unsigned() {
    let t = TestDb::sqlite().await;
    let b = build(&t, 120).await;
    let tail = forge_tail(&b, 3);
    let mut conn = raw_sqlite(&t).await;
    // Appending needs no trigger out of the way.
    let mut tx = conn.begin().await.unwrap();
    for c in &tail {
        insert_event_row!(&mut *tx, b.tenant, c);
    }
    sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1")
        .bind(b.tenant.as_uuid())
        .bind(123i64)
        .bind(tail.last().unwrap().hash.to_vec())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for with_witness in [false, true] {
        let v = b.verify(&t, with_witness).await.unwrap();
        assert_eq!((v.events, v.signed_through, v.unsigned), (123, 120, 3));
    }
    conn.close().await.unwrap();
    t.close().await;
}

#[tokio::test]
async fn pg_serving_role_can_only_forge_an_unsigned_tail() {
    let t = TestDb::postgres().await;
    let b = build(&t, 60).await;
    let tail = forge_tail(&b, 4);
    let app_url = t.pg.as_ref().unwrap().app_url.clone();
    let mut conn = PgConnection::connect(&app_url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('phivault.tenant_id', $1, true)")
        .bind(b.tenant.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    for c in &tail {
        insert_event_row!(&mut *tx, b.tenant, c);
    }
    sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE tenant_id = $1")
        .bind(b.tenant.as_uuid())
        .bind(64i64)
        .bind(tail.last().unwrap().hash.to_vec())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for with_witness in [false, true] {
        let v = b.verify(&t, with_witness).await.unwrap();
        assert_eq!((v.events, v.signed_through, v.unsigned), (64, 60, 4));
    }
    conn.close().await.unwrap();
    t.close().await;
}

#[tokio::test]
async fn sqlite_cutting_the_unsigned_tail_is_caught_by_the_head_row() {
    let t = TestDb::sqlite().await;
    let b = build(&t, 100).await;
    // Five genuine events past the last checkpoint.
    let mut tx = t.db.begin_tenant(b.tenant, TxMode::Write).await.unwrap();
    ledger::append_tenant(
        &mut tx,
        (101..=105).map(|n| event("late", n, None)).collect(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let v = b.verify(&t, true).await.unwrap();
    assert_eq!((v.events, v.signed_through, v.unsigned), (105, 100, 5));

    let mut conn = raw_sqlite(&t).await;
    prepare_sqlite(&mut conn).await;
    // An unsigned event altered: no checkpoint covers it, the hashes still do...
    update_one!(
        &mut conn,
        "UPDATE audit_events SET actor_id = $3 WHERE tenant_id = $1 AND seq = $2",
        b.tenant,
        103i64,
        "forged"
    );
    assert_eq!(
        expect_fault("edit unsigned 103", b.verify(&t, true).await),
        ChainFault::Altered { sequence: 103 }
    );
    // ...and no checkpoint is signed over it.
    let mut tx = t.db.begin_tenant(b.tenant, TxMode::Write).await.unwrap();
    match ledger::checkpoint_tenant(&mut tx, &b.signer, Utc::now()).await {
        Err(AuditError::BrokenChain { sequence: 103 }) => {}
        other => panic!("a checkpoint was signed over a broken chain: {other:?}"),
    }
    tx.rollback().await.unwrap();
    restore_sqlite(&mut conn).await;

    // The last two events cut: only the head row remembers them.
    sqlx::query("DELETE FROM audit_events WHERE tenant_id = $1 AND seq > 103")
        .bind(b.tenant.as_uuid())
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        expect_fault("cut 104..=105", b.verify(&t, true).await),
        ChainFault::Truncated {
            sequence: 105,
            last: 103
        }
    );
    conn.close().await.unwrap();
    t.close().await;
}

#[tokio::test]
async fn sqlite_witness_copies_are_checked() {
    let t = TestDb::sqlite().await;
    let b = build(&t, 150).await;
    let cp = b.checkpoints[1].clone();
    let s = cp.checkpoint.sequence;
    let file = t.witness_file(&b.chain.to_string(), s);
    assert!(file.exists(), "{}", file.display());

    // A witness copy gone: the database's checkpoints still pin the chain.
    std::fs::remove_file(&file).unwrap();
    let v = b.verify(&t, true).await.unwrap();
    assert_eq!(v.signed_through, 150);

    // Another key's checkpoint over another head: refused outright.
    let stranger = CheckpointSigner::from_seed(&[12u8; 32]);
    let other_head = Checkpoint {
        head: [0xab; 32],
        ..cp.checkpoint
    };
    b.witness
        .put(
            b.chain,
            &stranger.sign(other_head),
            stranger.verifying_key().as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        expect_fault("witness re-signed by another key", b.verify(&t, true).await),
        ChainFault::BadSignature { sequence: s }
    );
    assert!(b.verify(&t, false).await.is_ok());

    // The trusted key over another head (a leaked key, or a rewritten database that
    // was witnessed first): the chain does not end in it.
    b.witness
        .put(b.chain, &b.signer.sign(other_head), b.key.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        expect_fault("witness over another head", b.verify(&t, true).await),
        ChainFault::CheckpointMismatch { sequence: s }
    );

    // A witnessed checkpoint past the end: the database lost events.
    b.witness.put(b.chain, &cp, b.key.as_bytes()).await.unwrap();
    assert!(b.verify(&t, true).await.is_ok());
    let beyond = b.signer.sign(Checkpoint {
        sequence: 160,
        head: [0xcd; 32],
        time: cp.checkpoint.time,
    });
    b.witness
        .put(b.chain, &beyond, b.key.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        expect_fault("witness past the end", b.verify(&t, true).await),
        ChainFault::Truncated {
            sequence: 160,
            last: 150
        }
    );
    std::fs::remove_file(t.witness_file(&b.chain.to_string(), 160)).unwrap();

    // A witness file that is not a checkpoint: an error, never a silent skip.
    std::fs::write(&file, b"{\"not\": \"a checkpoint\"}").unwrap();
    match b.verify(&t, true).await {
        Err(VerifyError::Audit(AuditError::Witness(_))) => {}
        other => panic!("a garbled witness file was accepted: {other:?}"),
    }
    t.close().await;
}

#[tokio::test]
async fn sqlite_a_full_rewrite_with_checkpoints_replaced_is_caught() {
    let t = TestDb::sqlite().await;
    let b = build(&t, 150).await;
    let mut conn = raw_sqlite(&t).await;
    prepare_sqlite(&mut conn).await;
    sqlx::raw_sql(
        "DROP TRIGGER audit_checkpoints_no_update;
         DROP TRIGGER audit_checkpoints_no_delete;",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // Event 30 forged, everything after it rehashed, and the database's checkpoints
    // deleted: the rewrite is internally consistent.
    let mut m = b.events.clone();
    m[29].event.actor.id = "forged".into();
    rehash(&mut m, 29);
    let mut tx = conn.begin().await.unwrap();
    rewrite_sqlite(&mut tx, b.tenant, &m, 29).await;
    sqlx::query("DELETE FROM audit_checkpoints WHERE tenant_id = $1")
        .bind(b.tenant.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Without the witness nothing vouches for any event: all of them are unsigned...
    let v = b.verify(&t, false).await.unwrap();
    assert_eq!((v.events, v.signed_through, v.unsigned), (150, 0, 150));
    // ...and the witness catches the rewrite at its first checkpoint.
    let first = b.checkpoints[0].checkpoint.sequence;
    assert!(first >= 30);
    assert_eq!(
        expect_fault("rewrite, checkpoints deleted", b.verify(&t, true).await),
        ChainFault::CheckpointMismatch { sequence: first }
    );

    // The forger signs fresh checkpoints with a key of their own: not trusted.
    let forger = CheckpointSigner::from_seed(&[13u8; 32]);
    let mut tx = t.db.begin_tenant(b.tenant, TxMode::Write).await.unwrap();
    let outcome = ledger::checkpoint_tenant(&mut tx, &forger, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(outcome, CheckpointOutcome::Signed(_)));
    assert_eq!(
        expect_fault("rewrite, checkpoints re-signed", b.verify(&t, false).await),
        ChainFault::BadSignature { sequence: 150 }
    );
    conn.close().await.unwrap();
    t.close().await;
}
