//! Magic links on SQLite and PostgreSQL (as the non-owner serving role): issued only for
//! active users, consumed once, refused when expired, reused, foreign, tampered or when
//! the user was deactivated. Synthetic identities only.

use chrono::{DateTime, Duration, Utc};
use phivault_domain::magic_links::{self, DEFAULT_LIFETIME, PresentedLink};
use phivault_domain::users::{self, NewUser, PracticeAccess, Role};
use phivault_domain::{DomainError, TenantId, UserId, tenants};
use phivault_store::{Db, DbOptions, TxMode};

async fn sqlite() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open_sqlite(&dir.path().join("t.db"), &DbOptions::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    (db, dir)
}

async fn postgres() -> Db {
    phivault_testkit::scratch_pg()
        .await
        .app_db(&DbOptions::default())
        .await
        .unwrap()
}

/// A tenant with two active users.
async fn tenant(db: &Db, slug: &str) -> (TenantId, UserId, UserId) {
    let now = Utc::now();
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    let tenant = tenants::create(&mut p, slug, "Synthetic Health (test)", now)
        .await
        .unwrap()
        .id;
    p.commit().await.unwrap();
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let user = |email: &'static str| NewUser {
        email: email.into(),
        display_name: "Synthetic User".into(),
        roles: vec![Role::Provider],
        practices: PracticeAccess::All,
    };
    let a = users::create(&mut tx, user("alice@example.test"), now)
        .await
        .unwrap()
        .id;
    let b = users::create(&mut tx, user("bob@example.test"), now)
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    (tenant, a, b)
}

async fn issue(db: &Db, tenant: TenantId, email: &str, now: DateTime<Utc>) -> Option<String> {
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let issued = magic_links::request(&mut tx, email, DEFAULT_LIFETIME, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    issued.map(|i| {
        assert_eq!(i.expires_at, now + DEFAULT_LIFETIME);
        assert!(
            !format!("{i:?}").contains(i.secret.expose()),
            "Debug shows the link"
        );
        i.secret.expose().to_string()
    })
}

async fn consume(
    db: &Db,
    tenant: TenantId,
    text: &str,
    now: DateTime<Utc>,
) -> Result<UserId, DomainError> {
    let presented = PresentedLink::parse(text).expect("link shape");
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let result = magic_links::consume(&mut tx, &presented, now).await;
    if result.is_ok() {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
    result
}

fn refused(result: Result<UserId, DomainError>, what: &str) {
    match result {
        Err(DomainError::NotFound("magic link")) => {}
        other => panic!("{what}: expected a refusal, got {other:?}"),
    }
}

async fn links_are_single_use_and_expire(db: &Db) {
    let (tenant, alice, _) = tenant(db, "links").await;
    let now = Utc::now();

    // Issued for an existing user (the address is matched case-insensitively); the
    // link names its tenant and signs its user in once.
    let link = issue(db, tenant, " Alice@Example.TEST ", now)
        .await
        .expect("link for an active user");
    assert!(link.starts_with(&format!("pvm_{}_", tenant.as_uuid().simple())));
    assert_eq!(PresentedLink::parse(&link).unwrap().tenant(), tenant);
    assert_eq!(consume(db, tenant, &link, now).await.unwrap(), alice);
    // Reused.
    refused(consume(db, tenant, &link, now).await, "second use");

    // Expired: refused at and after its expiry, accepted just before.
    let link = issue(db, tenant, "alice@example.test", now).await.unwrap();
    refused(
        consume(db, tenant, &link, now + DEFAULT_LIFETIME).await,
        "expired",
    );
    refused(
        consume(db, tenant, &link, now + Duration::hours(3)).await,
        "long expired",
    );
    assert_eq!(
        consume(
            db,
            tenant,
            &link,
            now + DEFAULT_LIFETIME - Duration::seconds(1)
        )
        .await
        .unwrap(),
        alice
    );

    // A sign-in burns the user's other outstanding links.
    let first = issue(db, tenant, "alice@example.test", now).await.unwrap();
    let second = issue(db, tenant, "alice@example.test", now).await.unwrap();
    assert_ne!(first, second);
    assert_eq!(consume(db, tenant, &second, now).await.unwrap(), alice);
    refused(
        consume(db, tenant, &first, now).await,
        "older link after a sign-in",
    );

    // A refused consumption that rolls back leaves a good link usable.
    let link = issue(db, tenant, "alice@example.test", now).await.unwrap();
    {
        let presented = PresentedLink::parse(&link).unwrap();
        let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
        magic_links::consume(&mut tx, &presented, now)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    assert_eq!(consume(db, tenant, &link, now).await.unwrap(), alice);
}

async fn unknown_and_deactivated_users_get_no_link(db: &Db) {
    let (tenant, alice, bob) = tenant(db, "nolinks").await;
    let now = Utc::now();
    assert!(
        issue(db, tenant, "nobody@example.test", now)
            .await
            .is_none()
    );

    // A link issued before deactivation stops working, and no new one is issued.
    let link = issue(db, tenant, "bob@example.test", now).await.unwrap();
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    users::deactivate(&mut tx, bob).await.unwrap();
    tx.commit().await.unwrap();
    refused(consume(db, tenant, &link, now).await, "deactivated user");
    assert!(issue(db, tenant, "bob@example.test", now).await.is_none());

    // Malformed input and lifetimes are refused before anything is looked up.
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    for bad in ["", "not-an-address", "a@b@example.test", "x@localhost"] {
        assert!(
            matches!(
                magic_links::request(&mut tx, bad, DEFAULT_LIFETIME, now).await,
                Err(DomainError::Invalid { field: "email", .. })
            ),
            "accepted {bad:?}"
        );
    }
    for lifetime in [Duration::zero(), Duration::hours(25)] {
        assert!(
            magic_links::request(&mut tx, "alice@example.test", lifetime, now)
                .await
                .is_err()
        );
    }
    tx.rollback().await.unwrap();
    // Alice is unaffected.
    let link = issue(db, tenant, "alice@example.test", now).await.unwrap();
    assert_eq!(consume(db, tenant, &link, now).await.unwrap(), alice);
}

async fn links_stay_in_their_tenant(db: &Db) {
    let (a, alice, _) = tenant(db, "links-a").await;
    let (b, _, _) = tenant(db, "links-b").await;
    let now = Utc::now();
    let link = issue(db, a, "alice@example.test", now).await.unwrap();

    // Presented in another tenant's transaction: refused, and not burned.
    refused(
        consume(db, b, &link, now).await,
        "other tenant's transaction",
    );
    // The same secret relabelled with the other tenant's id: its hash matches nothing.
    let secret = &link[link.len() - 43..];
    let relabelled = format!("pvm_{}_{secret}", b.as_uuid().simple());
    refused(consume(db, b, &relabelled, now).await, "relabelled tenant");

    // Tampered: one character of the secret changed, still well-formed.
    let mut tampered = link.clone().into_bytes();
    let at = tampered.len() - 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    refused(consume(db, a, &tampered, now).await, "tampered");
    // An API token's shape is not a link.
    assert!(PresentedLink::parse(&link.replacen("pvm_", "pvt_", 1)).is_none());

    assert_eq!(consume(db, a, &link, now).await.unwrap(), alice);
}

/// Only the hash is stored.
async fn only_the_hash_is_stored(db: &Db) {
    let (tenant, _, _) = tenant(db, "hashed").await;
    let now = Utc::now();
    let link = issue(db, tenant, "alice@example.test", now).await.unwrap();
    let mut tx = db.begin_tenant(tenant, TxMode::Read).await.unwrap();
    let rows: Vec<(Vec<u8>,)> = tx
        .query("SELECT token_hash FROM magic_links WHERE tenant_id = $1")
        .fetch_all()
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(rows.len(), 1);
    use sha2::Digest;
    assert_eq!(rows[0].0, sha2::Sha256::digest(link.as_bytes()).to_vec());
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
    links_are_single_use_and_expire,
    unknown_and_deactivated_users_get_no_link,
    links_stay_in_their_tenant,
    only_the_hash_is_stored
);
