//! Domain behaviour, identical on SQLite and PostgreSQL (as the non-owner serving role).

use chrono::{Duration, NaiveDate, Utc};
use phivault_crypto::keys::KeyService;
use phivault_crypto::provider::LocalProvider;
use phivault_domain::encounters::{self, NewEncounter};
use phivault_domain::patients::{self, NewPatient};
use phivault_domain::tokens::{self, PresentedToken};
use phivault_domain::users::{self, NewUser, PracticeAccess, Role};
use phivault_domain::{
    DomainError, PatientId, Phi, PracticeId, PracticeScope, TenantId, UserId, practices, tenants,
};
use phivault_store::{Db, DbOptions, TxMode};
use std::sync::Arc;

fn keys() -> KeyService {
    KeyService::with_provider(Arc::new(LocalProvider::ephemeral().unwrap()))
}

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

struct World {
    tenant: TenantId,
    p1: PracticeId,
    p2: PracticeId,
    owner: UserId,
    biller: UserId,
    patient1: PatientId,
    patient2: PatientId,
}

fn dob() -> Phi<NaiveDate> {
    Phi::new(NaiveDate::from_ymd_opt(1975, 6, 1).unwrap())
}

fn new_patient(practice: PracticeId, n: u32) -> NewPatient {
    NewPatient {
        practice_id: practice,
        mrn: Phi::new(format!("SYN-{n:05}")),
        given_name: Phi::new("Synthetic".into()),
        family_name: Phi::new(format!("Patient{n}")),
        date_of_birth: dob(),
        ssn: None,
        identifiers: Vec::new(),
    }
}

async fn world(db: &Db, k: &KeyService, slug: &str) -> World {
    let now = Utc::now();
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    let tenant = tenants::create(&mut p, slug, "Synthetic Health (test)", now)
        .await
        .unwrap()
        .id;
    p.commit().await.unwrap();
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let p1 = practices::create(&mut tx, "Synthetic Clinic One", now)
        .await
        .unwrap()
        .id;
    let p2 = practices::create(&mut tx, "Synthetic Clinic Two", now)
        .await
        .unwrap()
        .id;
    let owner = users::create(
        &mut tx,
        NewUser {
            email: "owner@example.test".into(),
            display_name: "Synthetic Owner".into(),
            roles: vec![Role::Owner],
            practices: PracticeAccess::All,
        },
        now,
    )
    .await
    .unwrap()
    .id;
    let biller = users::create(
        &mut tx,
        NewUser {
            email: "biller@example.test".into(),
            display_name: "Synthetic Biller".into(),
            roles: vec![Role::Billing],
            practices: PracticeAccess::Only(vec![p1]),
        },
        now,
    )
    .await
    .unwrap()
    .id;
    let patient1 = patients::create(&mut tx, k, PracticeScope::All, new_patient(p1, 1), now)
        .await
        .unwrap()
        .id;
    let patient2 = patients::create(&mut tx, k, PracticeScope::All, new_patient(p2, 2), now)
        .await
        .unwrap()
        .id;
    tx.commit().await.unwrap();
    World {
        tenant,
        p1,
        p2,
        owner,
        biller,
        patient1,
        patient2,
    }
}

async fn practice_scope_limits_reads_and_writes(db: &Db) {
    let k = keys();
    let w = world(db, &k, "scope").await;
    let now = Utc::now();
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    let biller = PracticeScope::User(w.biller);

    let visible: Vec<_> = practices::list(&mut tx, biller)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(visible, vec![w.p1]);
    let seen: Vec<_> = patients::list(&mut tx, &k, biller, None, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(seen, vec![w.patient1]);
    assert!(matches!(
        patients::get(&mut tx, &k, biller, w.patient2).await,
        Err(DomainError::NotFound("patient"))
    ));
    assert!(matches!(
        patients::create(&mut tx, &k, biller, new_patient(w.p2, 3), now).await,
        Err(DomainError::NotFound("practice"))
    ));
    let outside = NewEncounter {
        patient_id: w.patient2,
        reason: None,
        started_at: None,
    };
    assert!(matches!(
        encounters::create(&mut tx, &k, biller, w.biller, outside, now).await,
        Err(DomainError::NotFound("patient"))
    ));

    // The owner (all practices) opens encounters in both; the biller sees only P1's.
    let owner = PracticeScope::User(w.owner);
    let e1 = encounters::create(
        &mut tx,
        &k,
        owner,
        w.owner,
        NewEncounter {
            patient_id: w.patient1,
            reason: Some(Phi::new("synthetic follow-up".into())),
            started_at: None,
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(e1.practice_id, w.p1);
    let e2 = encounters::create(
        &mut tx,
        &k,
        owner,
        w.owner,
        NewEncounter {
            patient_id: w.patient2,
            reason: None,
            started_at: None,
        },
        now,
    )
    .await
    .unwrap();
    let listed: Vec<_> = encounters::list(&mut tx, &k, biller, None, None, 50)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, vec![e1.id]);
    assert!(encounters::get(&mut tx, &k, biller, e2.id).await.is_err());
    assert_eq!(
        encounters::get(&mut tx, &k, biller, e1.id)
            .await
            .unwrap()
            .reason
            .unwrap()
            .expose(),
        "synthetic follow-up"
    );
    let all = encounters::list(&mut tx, &k, owner, None, None, 50)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let of_patient2 = encounters::list(&mut tx, &k, owner, Some(w.patient2), None, 50)
        .await
        .unwrap();
    assert_eq!(
        of_patient2.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![e2.id]
    );
    tx.commit().await.unwrap();
}

async fn another_tenant_sees_nothing(db: &Db) {
    let k = keys();
    let a = world(db, &k, "tenant-a").await;
    let b = world(db, &k, "tenant-b").await;
    let mut tx = db.begin_tenant(b.tenant, TxMode::Write).await.unwrap();
    assert!(
        patients::get(&mut tx, &k, PracticeScope::All, a.patient1)
            .await
            .is_err()
    );
    let listed = patients::list(&mut tx, &k, PracticeScope::All, None, 50)
        .await
        .unwrap();
    assert!(
        listed
            .iter()
            .all(|p| p.id != a.patient1 && p.id != a.patient2)
    );
    assert_eq!(listed.len(), 2);
    // B cannot open an encounter on A's patient, nor register a patient in A's practice.
    let foreign = NewEncounter {
        patient_id: a.patient1,
        reason: None,
        started_at: None,
    };
    assert!(
        encounters::create(
            &mut tx,
            &k,
            PracticeScope::All,
            b.owner,
            foreign,
            Utc::now()
        )
        .await
        .is_err()
    );
    assert!(
        patients::create(
            &mut tx,
            &k,
            PracticeScope::All,
            new_patient(a.p1, 9),
            Utc::now()
        )
        .await
        .is_err()
    );
    assert!(users::get(&mut tx, a.owner).await.is_err());
    tx.rollback().await.unwrap();
}

async fn tokens_work_until_revoked_expired_or_deactivated(db: &Db) {
    let k = keys();
    let w = world(db, &k, "tokens").await;
    let now = Utc::now();
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    let issued = tokens::issue(
        &mut tx,
        w.biller,
        "test",
        Some(now + Duration::hours(1)),
        now,
    )
    .await
    .unwrap();
    assert!(
        !format!("{issued:?}").contains(issued.secret.expose()),
        "Debug shows the token"
    );
    let presented = PresentedToken::parse(issued.secret.expose()).unwrap();
    assert_eq!(presented.tenant(), w.tenant);
    let (_, user) = tokens::authenticate(&mut tx, &presented, now)
        .await
        .unwrap();
    assert_eq!(user.id, w.biller);
    // Expired.
    assert!(
        tokens::authenticate(&mut tx, &presented, now + Duration::hours(2))
            .await
            .is_err()
    );
    // Deactivated user.
    let other = tokens::issue(&mut tx, w.owner, "test", None, now)
        .await
        .unwrap();
    let other_presented = PresentedToken::parse(other.secret.expose()).unwrap();
    users::deactivate(&mut tx, w.owner).await.unwrap();
    assert!(
        tokens::authenticate(&mut tx, &other_presented, now)
            .await
            .is_err()
    );
    // Revoked.
    tokens::revoke(&mut tx, issued.id, now).await.unwrap();
    assert!(
        tokens::authenticate(&mut tx, &presented, now)
            .await
            .is_err()
    );
    assert!(
        tokens::revoke(&mut tx, issued.id, now).await.is_err(),
        "revoking twice"
    );
    tx.commit().await.unwrap();

    // A token presented inside another tenant's transaction is refused.
    let other_world = world(db, &k, "tokens-other").await;
    let fresh = {
        let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
        let t = tokens::issue(&mut tx, w.biller, "test", None, now)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        t
    };
    let mut tx = db
        .begin_tenant(other_world.tenant, TxMode::Read)
        .await
        .unwrap();
    let presented = PresentedToken::parse(fresh.secret.expose()).unwrap();
    assert!(
        tokens::authenticate(&mut tx, &presented, now)
            .await
            .is_err()
    );
}

async fn invalid_input_is_refused_without_echo(db: &Db) {
    let k = keys();
    let w = world(db, &k, "invalid").await;
    let now = Utc::now();
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    let mut future = new_patient(w.p1, 4);
    future.date_of_birth = Phi::new(now.date_naive() + Duration::days(1));
    let err = patients::create(&mut tx, &k, PracticeScope::All, future, now)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DomainError::Invalid {
                field: "date_of_birth",
                ..
            }
        ),
        "{err:?}"
    );
    let mut blank = new_patient(w.p1, 5);
    blank.given_name = Phi::new("   ".into());
    assert!(matches!(
        patients::create(&mut tx, &k, PracticeScope::All, blank, now).await,
        Err(DomainError::Invalid {
            field: "given_name",
            ..
        })
    ));
    let mut long = new_patient(w.p1, 6);
    long.mrn = Phi::new("9".repeat(65));
    let err = patients::create(&mut tx, &k, PracticeScope::All, long, now)
        .await
        .unwrap_err();
    assert!(
        !err.to_string().contains("99999"),
        "error echoes the value: {err}"
    );
    let mut dup_kinds = new_patient(w.p1, 7);
    dup_kinds.identifiers = vec![
        patients::Identifier {
            kind: "member_id".into(),
            value: Phi::new("A1".into()),
        },
        patients::Identifier {
            kind: "member_id".into(),
            value: Phi::new("A2".into()),
        },
    ];
    assert!(matches!(
        patients::create(&mut tx, &k, PracticeScope::All, dup_kinds, now).await,
        Err(DomainError::Invalid {
            field: "identifiers",
            ..
        })
    ));
    let mut bad_kind = new_patient(w.p1, 8);
    bad_kind.identifiers = vec![patients::Identifier {
        kind: "Bad Kind!".into(),
        value: Phi::new("A1".into()),
    }];
    assert!(matches!(
        patients::create(&mut tx, &k, PracticeScope::All, bad_kind, now).await,
        Err(DomainError::Invalid {
            field: "identifiers.kind",
            ..
        })
    ));
    let dup = NewUser {
        email: "OWNER@example.test".into(),
        display_name: "Synthetic Duplicate".into(),
        roles: vec![Role::Member],
        practices: PracticeAccess::All,
    };
    assert!(matches!(
        users::create(&mut tx, dup, now).await,
        Err(DomainError::Conflict("user"))
    ));
    let bad_email = NewUser {
        email: "not-an-address".into(),
        display_name: "X".into(),
        roles: vec![Role::Member],
        practices: PracticeAccess::All,
    };
    assert!(matches!(
        users::create(&mut tx, bad_email, now).await,
        Err(DomainError::Invalid { field: "email", .. })
    ));
    assert!("superuser".parse::<Role>().is_err());
    tx.rollback().await.unwrap();

    // A failed statement aborts a PostgreSQL transaction, so each check gets its own.
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    assert!(matches!(
        tenants::create(&mut p, "invalid", "Again", now).await,
        Err(DomainError::Conflict("tenant"))
    ));
    drop(p);
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    assert!(matches!(
        tenants::create(&mut p, "Bad Slug!", "X", now).await,
        Err(DomainError::Invalid { field: "slug", .. })
    ));
    assert_eq!(tenants::find(&mut p, "invalid").await.unwrap().id, w.tenant);
}

async fn pages_follow_the_cursor(db: &Db) {
    let k = keys();
    let w = world(db, &k, "pages").await;
    let now = Utc::now();
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    for n in 10..20 {
        patients::create(&mut tx, &k, PracticeScope::All, new_patient(w.p1, n), now)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = patients::list(&mut tx, &k, PracticeScope::All, after, 5)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|p| p.id);
        seen.extend(page.into_iter().map(|p| p.id));
    }
    assert_eq!(seen.len(), 12);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages overlap or are out of order");
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
    practice_scope_limits_reads_and_writes,
    another_tenant_sees_nothing,
    tokens_work_until_revoked_expired_or_deactivated,
    invalid_input_is_refused_without_echo,
    pages_follow_the_cursor
);
