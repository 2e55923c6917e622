//! The audit tables are append-only below the application: SQLite triggers refuse UPDATE
//! and DELETE; on PostgreSQL the serving role has no UPDATE, DELETE or TRUNCATE
//! privilege, the schema owner is refused by triggers, and row-level security keeps one
//! tenant's trail from another. Raw SQL on raw connections, application code bypassed.

mod common;

use std::sync::Arc;

use chrono::Utc;
use common::{TestDb, create_tenant, event};
use phivault_audit::CheckpointSigner;
use phivault_audit::ledger::{self, CheckpointOutcome};
use phivault_audit::signing::load_or_create_signer;
use phivault_crypto::keys::KeyService;
use phivault_crypto::provider::LocalProvider;
use phivault_store::{Db, TenantId, TxMode};
use sqlx::{Connection, PgConnection, SqliteConnection};

/// Writes a few events and a checkpoint to `tenant`'s chain and the platform's, and the
/// signing key row.
async fn populate(db: &Db, tenant: TenantId) {
    let signer = CheckpointSigner::from_seed(&[7u8; 32]);
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    ledger::append_tenant(&mut tx, (1..=5).map(|n| event("ev", n, None)).collect())
        .await
        .unwrap();
    let cp = ledger::checkpoint_tenant(&mut tx, &signer, Utc::now())
        .await
        .unwrap();
    assert!(matches!(cp, CheckpointOutcome::Signed(_)));
    tx.commit().await.unwrap();
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    ledger::append_platform(&mut tx, (1..=5).map(|n| event("pl", n, None)).collect())
        .await
        .unwrap();
    let cp = ledger::checkpoint_platform(&mut tx, &signer, Utc::now())
        .await
        .unwrap();
    assert!(matches!(cp, CheckpointOutcome::Signed(_)));
    tx.commit().await.unwrap();
}

async fn ensure_signing_key(db: &Db) {
    let keys = KeyService::with_provider(Arc::new(LocalProvider::ephemeral().unwrap()));
    load_or_create_signer(db, &keys, Utc::now()).await.unwrap();
}

/// (table, an UPDATE, a DELETE) for every append-only table.
const STATEMENTS: &[(&str, &str, &str)] = &[
    (
        "audit_events",
        "UPDATE audit_events SET actor_id = 'forged'",
        "DELETE FROM audit_events",
    ),
    (
        "audit_checkpoints",
        "UPDATE audit_checkpoints SET time_us = time_us + 1",
        "DELETE FROM audit_checkpoints",
    ),
    (
        "platform_audit_events",
        "UPDATE platform_audit_events SET resource_id = 'forged'",
        "DELETE FROM platform_audit_events",
    ),
    (
        "platform_audit_checkpoints",
        "UPDATE platform_audit_checkpoints SET time_us = time_us + 1",
        "DELETE FROM platform_audit_checkpoints",
    ),
    (
        "audit_signing_keys",
        "UPDATE audit_signing_keys SET provider = 'forged'",
        "DELETE FROM audit_signing_keys",
    ),
];

const COUNTS: &[&str] = &[
    "SELECT COUNT(*) FROM audit_events",
    "SELECT COUNT(*) FROM audit_checkpoints",
    "SELECT COUNT(*) FROM platform_audit_events",
    "SELECT COUNT(*) FROM platform_audit_checkpoints",
    "SELECT COUNT(*) FROM audit_signing_keys",
];

#[tokio::test]
async fn sqlite_triggers_refuse_update_and_delete_on_every_audit_table() {
    let t = TestDb::sqlite().await;
    let tenant = create_tenant(&t.db).await;
    populate(&t.db, tenant).await;
    ensure_signing_key(&t.db).await;

    let mut conn = SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(t.sqlite_path.as_ref().unwrap()),
    )
    .await
    .unwrap();
    let mut before = Vec::new();
    for sql in COUNTS {
        let (n,): (i64,) = sqlx::query_as(*sql).fetch_one(&mut conn).await.unwrap();
        assert!(n > 0, "{sql}: nothing to protect");
        before.push(n);
    }
    for (table, update, delete) in STATEMENTS {
        for sql in [update, delete] {
            match sqlx::query(*sql).execute(&mut conn).await {
                Err(sqlx::Error::Database(e)) => assert!(
                    e.message().contains("append-only"),
                    "{table}: {sql}: {}",
                    e.message()
                ),
                other => panic!("{table}: {sql} was not refused: {other:?}"),
            }
        }
    }
    // An upsert is an UPDATE too.
    let upsert = sqlx::query(
        "INSERT INTO platform_audit_events SELECT * FROM platform_audit_events WHERE seq = 1
         ON CONFLICT (seq) DO UPDATE SET actor_id = 'forged'",
    )
    .execute(&mut conn)
    .await;
    assert!(upsert.is_err(), "upsert over an audit row was accepted");
    for (sql, n) in COUNTS.iter().zip(before) {
        let (now,): (i64,) = sqlx::query_as(*sql).fetch_one(&mut conn).await.unwrap();
        assert_eq!(now, n, "{sql}");
    }
    let (forged,): (i64,) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM audit_events WHERE actor_id = 'forged')
              + (SELECT COUNT(*) FROM platform_audit_events
                 WHERE actor_id = 'forged' OR resource_id = 'forged')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(forged, 0);
    conn.close().await.unwrap();
    t.close().await;
}

/// SQLite's `INSERT OR REPLACE` deletes the conflicting row without firing DELETE
/// triggers (unless `recursive_triggers` is on); a BEFORE INSERT trigger refuses an
/// insert over an existing key, so it cannot rewrite an audit row in place.
#[tokio::test]
async fn sqlite_insert_or_replace_is_refused() {
    let t = TestDb::sqlite().await;
    let tenant = create_tenant(&t.db).await;
    populate(&t.db, tenant).await;
    let mut conn = SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new().filename(t.sqlite_path.as_ref().unwrap()),
    )
    .await
    .unwrap();
    let replaced = sqlx::query(
        "INSERT OR REPLACE INTO platform_audit_events (seq, time_us, actor_kind, actor_id,
             actor_role, source_ip, source_user_agent, source_device, action, resource_type,
             resource_id, fields, outcome, reason, request_id, before_json, after_json,
             prev_hash, hash)
         SELECT seq, time_us, actor_kind, 'forged', actor_role, source_ip, source_user_agent,
             source_device, action, resource_type, resource_id, fields, outcome, reason,
             request_id, before_json, after_json, prev_hash, hash
         FROM platform_audit_events WHERE seq = 1",
    )
    .execute(&mut conn)
    .await;
    assert!(
        replaced.is_err(),
        "INSERT OR REPLACE rewrote an audit row in place"
    );
    conn.close().await.unwrap();
    t.close().await;
}

fn sql_state(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

async fn set_tenant(conn: &mut PgConnection, tenant: Option<TenantId>) {
    sqlx::query("SELECT set_config('phivault.tenant_id', $1, false)")
        .bind(tenant.map(|t| t.to_string()).unwrap_or_default())
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn count(conn: &mut PgConnection, sql: &'static str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut *conn).await.unwrap();
    n
}

#[tokio::test]
async fn pg_serving_role_cannot_change_audit_rows_or_read_another_tenants() {
    let t = TestDb::postgres().await;
    let a = create_tenant(&t.db).await;
    let b = create_tenant(&t.db).await;
    populate(&t.db, a).await;
    let mut tx = t.db.begin_tenant(b, TxMode::Write).await.unwrap();
    ledger::append_tenant(&mut tx, (1..=3).map(|n| event("b", n, None)).collect())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    ensure_signing_key(&t.db).await;

    let app_url = &t.pg.as_ref().unwrap().app_url;
    let mut conn = PgConnection::connect(app_url).await.unwrap();
    set_tenant(&mut conn, Some(a)).await;
    let before: Vec<i64> = {
        let mut v = Vec::new();
        for sql in COUNTS {
            v.push(count(&mut conn, sql).await);
        }
        v
    };
    assert_eq!(before[0], 5, "tenant a sees exactly its own events");
    for (table, update, delete) in STATEMENTS {
        let truncate = format!("TRUNCATE {table}");
        for sql in [update.to_string(), delete.to_string(), truncate] {
            let r = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await;
            match r {
                Err(e) => assert_eq!(
                    sql_state(&e).as_deref(),
                    Some("42501"),
                    "{table}: {sql}: {e}"
                ),
                Ok(done) => panic!(
                    "{table}: {sql} was accepted for the serving role ({} rows)",
                    done.rows_affected()
                ),
            }
        }
    }

    // Row-level security: tenant b's trail is invisible and cannot be written as a.
    let b_uuid = b.as_uuid();
    for sql in [
        "SELECT COUNT(*) FROM audit_events WHERE tenant_id = $1",
        "SELECT COUNT(*) FROM audit_heads WHERE tenant_id = $1",
        "SELECT COUNT(*) FROM audit_checkpoints WHERE tenant_id = $1",
    ] {
        let (n,): (i64,) = sqlx::query_as(sql)
            .bind(b_uuid)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 0, "{sql}: tenant a sees tenant b's rows");
    }
    let moved = sqlx::query("UPDATE audit_heads SET seq = 0 WHERE tenant_id = $1")
        .bind(b_uuid)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(moved.rows_affected(), 0, "tenant a moved tenant b's head");
    let forged = sqlx::query(
        "INSERT INTO audit_events (tenant_id, seq, time_us, actor_kind, actor_id, actor_role,
             source_ip, source_user_agent, source_device, action, resource_type, resource_id,
             fields, outcome, reason, request_id, before_json, after_json, prev_hash, hash)
         VALUES ($1, 99, 0, 'user', 'x', 'x', '', '', '', 'phi.read', 'patient', 'x', '[]',
             'success', NULL, 'x', NULL, NULL, $2, $2)",
    )
    .bind(b_uuid)
    .bind(vec![0u8; 32])
    .execute(&mut conn)
    .await;
    assert_eq!(
        forged.as_ref().err().and_then(sql_state).as_deref(),
        Some("42501"),
        "tenant a wrote into tenant b's trail: {forged:?}"
    );
    // No tenant set: no tenant rows at all.
    set_tenant(&mut conn, None).await;
    assert_eq!(
        count(&mut conn, "SELECT COUNT(*) FROM audit_events").await,
        0
    );
    assert_eq!(
        count(&mut conn, "SELECT COUNT(*) FROM audit_checkpoints").await,
        0
    );

    set_tenant(&mut conn, Some(a)).await;
    for (sql, n) in COUNTS.iter().zip(before) {
        assert_eq!(count(&mut conn, sql).await, n, "{sql}");
    }
    set_tenant(&mut conn, Some(b)).await;
    assert_eq!(
        count(&mut conn, "SELECT COUNT(*) FROM audit_events").await,
        3
    );
    conn.close().await.unwrap();
    t.close().await;
}

#[tokio::test]
async fn pg_schema_owner_is_refused_by_the_append_only_triggers() {
    let t = TestDb::postgres().await;
    let a = create_tenant(&t.db).await;
    populate(&t.db, a).await;
    ensure_signing_key(&t.db).await;

    let owner_url = &t.pg.as_ref().unwrap().owner_url;
    let mut conn = PgConnection::connect(owner_url).await.unwrap();
    // Row-level security is forced on the owner too: without the tenant the UPDATE and
    // DELETE below would match no row and prove nothing.
    set_tenant(&mut conn, Some(a)).await;
    let mut before = Vec::new();
    for sql in COUNTS {
        let n = count(&mut conn, sql).await;
        assert!(n > 0, "{sql}: nothing to protect");
        before.push(n);
    }
    for (table, update, delete) in STATEMENTS {
        let truncate = format!("TRUNCATE {table}");
        for sql in [update.to_string(), delete.to_string(), truncate] {
            let r = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await;
            match r {
                Err(sqlx::Error::Database(e)) => assert!(
                    e.message().contains("append-only"),
                    "{table}: {sql}: refused, but not by the trigger: {}",
                    e.message()
                ),
                other => panic!("{table}: {sql} was accepted for the owner: {other:?}"),
            }
        }
    }
    for (sql, n) in COUNTS.iter().zip(before) {
        assert_eq!(count(&mut conn, sql).await, n, "{sql}");
    }
    conn.close().await.unwrap();
    t.close().await;
}
