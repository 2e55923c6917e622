//! Row-level security on PostgreSQL, tested as the serving role with application code
//! bypassed: raw SQL on a raw connection.

use chrono::Utc;
use phivault_store::scratch::{APP_ROLE, OWNER_ROLE};
use phivault_store::{APP_GRANTS, Db, DbOptions, StoreError, TenantId, TxMode};
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

async fn seed_tenant(db: &Db, slug: &str) -> (TenantId, Uuid, Uuid) {
    let tenant = TenantId::generate();
    let now = Utc::now();
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    p.query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant)
        .bind(slug)
        .bind("Synthetic tenant")
        .bind(now)
        .execute()
        .await
        .unwrap();
    p.commit().await.unwrap();
    let (practice, patient) = (Uuid::now_v7(), Uuid::now_v7());
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    tx.query("INSERT INTO practices (tenant_id, id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(practice)
        .bind("Synthetic Clinic")
        .bind(now)
        .execute()
        .await
        .unwrap();
    // Key rows and a patient row with opaque bytes: the store does not know cryptography.
    tx.query(
        "INSERT INTO tenant_keks (tenant_id, version, provider, wrapped, state, created_at)
         VALUES ($1, 1, 'test', $2, 'active', $3)",
    )
    .bind(vec![1u8; 60])
    .bind(now)
    .execute()
    .await
    .unwrap();
    let data_key = Uuid::now_v7();
    tx.query("INSERT INTO data_keys (tenant_id, id, kek_version, kind, wrapped, created_at) VALUES ($1, $2, 1, 'patient', $3, $4)")
        .bind(data_key)
        .bind(vec![2u8; 86])
        .bind(now)
        .execute()
        .await
        .unwrap();
    tx.query(
        "INSERT INTO patients (tenant_id, id, practice_id, data_key_id, mrn_index, mrn, given_name, family_name, date_of_birth, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $6, $6, $7)",
    )
    .bind(patient)
    .bind(practice)
    .bind(data_key)
    .bind(vec![3u8; 32])
    .bind(b"sealed".to_vec())
    .bind(now)
    .execute()
    .await
    .unwrap();
    tx.commit().await.unwrap();
    (tenant, practice, patient)
}

async fn set_tenant(conn: &mut PgConnection, tenant: Option<TenantId>) {
    sqlx::query("SELECT set_config('phivault.tenant_id', $1, true)")
        .bind(tenant.map(|t| t.to_string()).unwrap_or_default())
        .execute(&mut *conn)
        .await
        .unwrap();
}

fn is_rls_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("42501"))
}

#[tokio::test]
async fn pg_schema_has_forced_rls_on_every_tenant_table_and_a_safe_serving_role() {
    let scratch = phivault_testkit::scratch_pg().await;
    let owner = Db::connect(&scratch.owner_url, &DbOptions::default())
        .await
        .unwrap();
    let report = owner.rls_report().await.unwrap();
    let tenant_tables: Vec<_> = report.iter().filter(|t| t.has_tenant_id).collect();
    assert!(
        tenant_tables.len() >= 7,
        "expected the foundation's tenant tables, got {report:?}"
    );
    for t in &tenant_tables {
        assert!(
            t.rls_enabled && t.rls_forced,
            "table {} lacks ENABLE+FORCE row-level security",
            t.table
        );
        assert_eq!(
            t.owner, OWNER_ROLE,
            "table {} must be owned by the owner role",
            t.table
        );
    }
    for t in &report {
        assert!(
            APP_GRANTS.iter().any(|(name, _)| *name == t.table),
            "table {} has no entry in APP_GRANTS: decide the serving role's privileges on it",
            t.table
        );
    }
    let app = owner.inspect_role(Some(APP_ROLE)).await.unwrap();
    assert!(
        !app.superuser && !app.bypass_rls && app.owned_tables.is_empty(),
        "{app:?}"
    );
    assert_eq!(app.problem(), None);
    owner.close().await;

    let served = scratch.app_db(&DbOptions::default()).await.unwrap();
    served
        .check_serving_role()
        .await
        .expect("the serving role is safe");
    served
        .ensure_schema_current()
        .await
        .expect("schema current");
    served.close().await;
}

#[tokio::test]
async fn pg_serving_refuses_owner_and_superuser_roles() {
    let scratch = phivault_testkit::scratch_pg().await;
    let owner = Db::connect(&scratch.owner_url, &DbOptions::default())
        .await
        .unwrap();
    match owner.check_serving_role().await {
        Err(StoreError::UnsafeRole(why)) => assert!(why.contains("owns tables"), "{why}"),
        other => panic!("owner role accepted for serving: {other:?}"),
    }
    owner.close().await;
    let admin = Db::connect(&scratch.admin_url, &DbOptions::default())
        .await
        .unwrap();
    match admin.check_serving_role().await {
        Err(StoreError::UnsafeRole(why)) => assert!(why.contains("superuser"), "{why}"),
        other => panic!("superuser accepted for serving: {other:?}"),
    }
    admin.close().await;
}

#[tokio::test]
async fn pg_isolation_holds_for_raw_sql_as_the_serving_role() {
    let scratch = phivault_testkit::scratch_pg().await;
    let db = scratch.app_db(&DbOptions::default()).await.unwrap();
    let (a, a_practice, a_patient) = seed_tenant(&db, "tenant-a").await;
    let (b, _b_practice, b_patient) = seed_tenant(&db, "tenant-b").await;
    let tables: Vec<String> = {
        let owner = Db::connect(&scratch.owner_url, &DbOptions::default())
            .await
            .unwrap();
        let r = owner.rls_report().await.unwrap();
        owner.close().await;
        r.into_iter()
            .filter(|t| t.has_tenant_id)
            .map(|t| t.table)
            .collect()
    };
    db.close().await;

    let mut conn = PgConnection::connect(&scratch.app_url).await.unwrap();

    // Without a tenant, no tenant table shows a row.
    for table in &tables {
        let mut tx = conn.begin().await.unwrap();
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} shows rows with no tenant set");
        tx.rollback().await.unwrap();
    }

    // With tenant A set, every visible row of every table is A's.
    for table in &tables {
        let mut tx = conn.begin().await.unwrap();
        set_tenant(&mut tx, Some(a)).await;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT tenant_id FROM {table}"
        )))
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        for row in rows {
            let t: Uuid = row.get(0);
            assert_eq!(t, a.as_uuid(), "{table} leaked another tenant's row");
        }
        tx.rollback().await.unwrap();
    }

    // Tenant A cannot read B's patient even by naming it.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, Some(a)).await;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM patients WHERE tenant_id = $1 OR id = $2")
            .bind(b.as_uuid())
            .bind(b_patient)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(n, 0, "B's patient is readable while tenant A is set");

    // ... cannot update or delete it (the rows are invisible, so nothing is touched) ...
    let updated = sqlx::query("UPDATE patients SET family_name = '\\x00' WHERE id = $1")
        .bind(b_patient)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
    let deleted = sqlx::query("DELETE FROM patients WHERE tenant_id = $1")
        .bind(b.as_uuid())
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    tx.rollback().await.unwrap();

    // ... cannot insert a row for B ...
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, Some(a)).await;
    let err = sqlx::query("INSERT INTO practices (tenant_id, id, name, created_at) VALUES ($1, $2, 'Injected', now())")
        .bind(b.as_uuid())
        .bind(Uuid::now_v7())
        .execute(&mut *tx)
        .await
        .expect_err("insert into another tenant must fail");
    assert!(is_rls_violation(&err), "{err}");
    tx.rollback().await.unwrap();

    // ... and cannot move its own row into B.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, Some(a)).await;
    let err = sqlx::query("UPDATE practices SET tenant_id = $1 WHERE id = $2")
        .bind(b.as_uuid())
        .bind(a_practice)
        .execute(&mut *tx)
        .await
        .expect_err("moving a row to another tenant must fail");
    assert!(
        is_rls_violation(&err)
            || matches!(&err, sqlx::Error::Database(d) if d.code().as_deref() == Some("23503")),
        "{err}"
    );
    tx.rollback().await.unwrap();

    // With no tenant set, inserts fail too.
    let mut tx = conn.begin().await.unwrap();
    let err = sqlx::query("INSERT INTO practices (tenant_id, id, name, created_at) VALUES ($1, $2, 'Injected', now())")
        .bind(a.as_uuid())
        .bind(Uuid::now_v7())
        .execute(&mut *tx)
        .await
        .expect_err("insert without a tenant must fail");
    assert!(is_rls_violation(&err), "{err}");
    tx.rollback().await.unwrap();

    // The setting is transaction-local: after commit, the pooled connection sees nothing.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, Some(a)).await;
    tx.commit().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM patients")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 0, "the tenant setting outlived its transaction");

    // The serving role cannot switch the policies off or take the owner's identity.
    for sql in [
        "ALTER TABLE patients DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE patients NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON patients",
        "SET ROLE phivault_scratch_owner",
        "SET SESSION AUTHORIZATION postgres",
    ] {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await;
        assert!(r.is_err(), "serving role could run: {sql}");
    }

    // A's own patient is still there, untouched, for A.
    let mut tx = conn.begin().await.unwrap();
    set_tenant(&mut tx, Some(a)).await;
    let family: Vec<u8> = sqlx::query_scalar("SELECT family_name FROM patients WHERE id = $1")
        .bind(a_patient)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(family, b"sealed");
    tx.rollback().await.unwrap();
    conn.close().await.unwrap();
    let admin = phivault_testkit::pg_admin_url();
    scratch.drop_database(&admin).await.unwrap();
}
