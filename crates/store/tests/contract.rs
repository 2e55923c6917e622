//! The store's contract, identical on SQLite and PostgreSQL.

use chrono::Utc;
use phivault_store::{Db, DbOptions, StoreError, TenantId, TxMode};
use uuid::Uuid;

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("t.db"), &DbOptions::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    (db, dir)
}

async fn postgres() -> Db {
    let scratch = phivault_testkit::scratch_pg().await;
    scratch.app_db(&DbOptions::default()).await.unwrap()
}

async fn new_tenant(db: &Db, slug: &str) -> TenantId {
    let id = TenantId::generate();
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    p.query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, 'Synthetic', $3)")
        .bind(id)
        .bind(slug)
        .bind(Utc::now())
        .execute()
        .await
        .unwrap();
    p.commit().await.unwrap();
    id
}

async fn unscoped_statements_are_refused(db: &Db) {
    let t = new_tenant(db, "guard").await;
    let mut tx = db.begin_tenant(t, TxMode::Read).await.unwrap();
    for sql in [
        "SELECT id FROM practices",
        "SELECT id FROM practices WHERE id = $2",
        "DELETE FROM practices WHERE tenant_id = $2",
    ] {
        let err = tx
            .query(sql)
            .bind(Uuid::now_v7())
            .execute()
            .await
            .expect_err(sql);
        assert!(matches!(err, StoreError::Unscoped(_)), "{sql}: {err:?}");
    }
    tx.rollback().await.unwrap();
    let mut p = db.begin_platform(TxMode::Read).await.unwrap();
    let err = p
        .query("SELECT id FROM patients")
        .execute()
        .await
        .expect_err("platform reading PHI");
    assert!(matches!(err, StoreError::Unscoped(_)));
}

async fn a_scoped_transaction_sees_only_its_tenant(db: &Db) {
    let (a, b) = (new_tenant(db, "iso-a").await, new_tenant(db, "iso-b").await);
    let now = Utc::now();
    for (t, name) in [(a, "Synthetic A"), (b, "Synthetic B")] {
        let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
        tx.query("INSERT INTO practices (tenant_id, id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(Uuid::now_v7())
            .bind(name)
            .bind(now)
            .execute()
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = db.begin_tenant(a, TxMode::Read).await.unwrap();
    let names: Vec<(String,)> = tx
        .query("SELECT name FROM practices WHERE tenant_id = $1 ORDER BY name")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(names, vec![("Synthetic A".to_string(),)]);
}

async fn composite_keys_refuse_cross_tenant_references(db: &Db) {
    let (a, b) = (new_tenant(db, "fk-a").await, new_tenant(db, "fk-b").await);
    let practice_a = Uuid::now_v7();
    let mut tx = db.begin_tenant(a, TxMode::Write).await.unwrap();
    tx.query("INSERT INTO practices (tenant_id, id, name, created_at) VALUES ($1, $2, 'P', $3)")
        .bind(practice_a)
        .bind(Utc::now())
        .execute()
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin_tenant(b, TxMode::Write).await.unwrap();
    // Tenant B's user grant naming A's practice: the composite foreign key fails.
    let user_b = Uuid::now_v7();
    tx.query("INSERT INTO users (tenant_id, id, email, display_name, all_practices, created_at) VALUES ($1, $2, 'b@example.test', 'Synthetic B', $3, $4)")
        .bind(user_b)
        .bind(false)
        .bind(Utc::now())
        .execute()
        .await
        .unwrap();
    let err = tx
        .query("INSERT INTO user_practices (tenant_id, user_id, practice_id) VALUES ($1, $2, $3)")
        .bind(user_b)
        .bind(practice_a)
        .execute()
        .await
        .expect_err("cross-tenant reference");
    assert!(matches!(err, StoreError::ForeignKey), "{err:?}");
}

/// PostgreSQL declares reading transactions READ ONLY (SQLite has no such mode: there a
/// reading transaction is a deferred one).
#[tokio::test]
async fn pg_read_transactions_cannot_write() {
    let db = postgres().await;
    let t = new_tenant(&db, "ro").await;
    let mut tx = db.begin_tenant(t, TxMode::Read).await.unwrap();
    let r = tx
        .query("INSERT INTO practices (tenant_id, id, name, created_at) VALUES ($1, $2, 'P', $3)")
        .bind(Uuid::now_v7())
        .bind(Utc::now())
        .execute()
        .await;
    assert!(r.is_err(), "a READ ONLY transaction wrote");
}

macro_rules! both {
    ($($name:ident),*) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { let (db, _dir) = super::sqlite().await; super::$name(&db).await; })*
        }
        mod pg {
            $(#[tokio::test] async fn $name() { let db = super::postgres().await; super::$name(&db).await; })*
        }
    };
}

both!(
    unscoped_statements_are_refused,
    a_scoped_transaction_sees_only_its_tenant,
    composite_keys_refuse_cross_tenant_references
);

#[tokio::test]
async fn sqlite_uses_wal_and_foreign_keys() {
    use sqlx::ConnectOptions;
    let (db, dir) = sqlite().await;
    db.close().await;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("t.db"))
        .connect()
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}
