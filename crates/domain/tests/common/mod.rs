//! What the domain's integration tests share: a database on each backend, a tenant with
//! one user, and a macro that runs a test on both.

#![allow(dead_code)]

use chrono::Utc;
use phivault_domain::users::{self, NewUser, PracticeAccess, Role};
use phivault_domain::{TenantId, UserId, tenants};
use phivault_store::{Db, DbOptions, TxMode};

/// A migrated SQLite database in a temporary directory (kept alive by the `TempDir`).
pub async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("t.db"), &DbOptions::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    (db, dir)
}

/// A scratch PostgreSQL database, served as the non-owner role.
pub async fn postgres() -> Db {
    phivault_testkit::scratch_pg()
        .await
        .app_db(&DbOptions::default())
        .await
        .unwrap()
}

/// A tenant `slug` with one active user of `role` over every practice
/// (`<role>@<slug>.example.test`, synthetic).
pub async fn tenant_with_user(db: &Db, slug: &str, role: Role) -> (TenantId, UserId) {
    let now = Utc::now();
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    let tenant = tenants::create(&mut p, slug, "Synthetic tenant (test)", now)
        .await
        .unwrap()
        .id;
    p.commit().await.unwrap();
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let user = users::create(
        &mut tx,
        NewUser {
            email: format!("{}@{slug}.example.test", role.as_str()),
            display_name: "Synthetic User".into(),
            roles: vec![role],
            practices: PracticeAccess::All,
        },
        now,
    )
    .await
    .unwrap()
    .id;
    tx.commit().await.unwrap();
    (tenant, user)
}

/// Runs each named `async fn(&Db)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { let (db, _dir) = super::common::sqlite().await; super::$name(&db).await; })*
        }
        mod pg {
            $(#[tokio::test] async fn $name() { let db = super::common::postgres().await; super::$name(&db).await; })*
        }
    };
}
