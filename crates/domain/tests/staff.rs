//! The staff realm on both backends: password rules, sign-in checks, TOTP enrollment and
//! single-use codes, lockout, sessions with idle and absolute timeouts, deactivation.

mod common;

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use phivault_crypto::keys::KeyService;
use phivault_crypto::provider::LocalProvider;
use phivault_domain::mfa::{Verdict, code_for_uri};
use phivault_domain::staff::{self, Ended, NewStaff, StaffRole};
use phivault_domain::{DomainError, tenants};
use phivault_store::{Db, TxMode};

const GOOD: &str = "correct horse battery staple 42";

#[test]
fn password_rules() {
    let email = "ops.person@example.test";
    assert!(staff::check_password(email, GOOD).is_ok());
    for bad in [
        "short",
        "elevenchars",
        "q1w2e3r4t5y6",
        "1QAZ2WSX3EDC",
        "my ops.person password",
        &"x".repeat(129),
    ] {
        assert!(
            matches!(
                staff::check_password(email, bad),
                Err(DomainError::Invalid {
                    field: "password",
                    ..
                })
            ),
            "accepted a bad password of {} characters",
            bad.len()
        );
    }
    let h = staff::hash_password(GOOD).unwrap();
    assert!(h.starts_with("$argon2id$"));
    assert!(staff::verify_password(Some(&h), GOOD));
    assert!(!staff::verify_password(Some(&h), "wrong password entirely"));
    assert!(!staff::verify_password(None, GOOD));
}

async fn create(db: &Db, email: &str, role: StaffRole) -> uuid::Uuid {
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    let s = staff::create(
        &mut tx,
        NewStaff {
            email: email.into(),
            display_name: "Synthetic Staff".into(),
            role,
        },
        GOOD,
        Utc::now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    s.id
}

async fn staff_lifecycle(db: &Db) {
    let k = KeyService::with_provider(Arc::new(LocalProvider::ephemeral().unwrap()));
    let id = create(db, "Ops@Staff.Example.Test", StaffRole::PlatformOps).await;

    // Duplicate e-mail (case-insensitive) and a weak password are refused.
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    let dup = staff::create(
        &mut tx,
        NewStaff {
            email: "ops@staff.example.test".into(),
            display_name: "Synthetic Dup".into(),
            role: StaffRole::ReadOnly,
        },
        GOOD,
        Utc::now(),
    )
    .await;
    assert!(matches!(dup, Err(DomainError::Conflict(_))), "{dup:?}");
    drop(tx);

    // Credentials: known and active only; the hash verifies.
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    let (s, hash) = staff::credentials(&mut tx, " OPS@staff.example.test ")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.id, id);
    assert_eq!(s.role, StaffRole::PlatformOps);
    assert!(staff::verify_password(Some(&hash), GOOD));
    assert!(
        staff::credentials(&mut tx, "nobody@staff.example.test")
            .await
            .unwrap()
            .is_none()
    );

    // Enrollment and single-use codes, with time moved by hand.
    let t0 = Utc.timestamp_opt(1_900_000_020, 0).unwrap();
    assert!(!staff::is_enrolled(&mut tx, id).await.unwrap());
    let c = staff::open_challenge(&mut tx, id, t0).await.unwrap();
    assert!(
        staff::find_challenge(&mut tx, c.id, t0)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        staff::find_challenge(&mut tx, c.id, t0 + Duration::minutes(6))
            .await
            .unwrap()
            .is_none()
    );
    let e = staff::begin_enrollment(&mut tx, &k, id, "ops@staff.example.test", t0)
        .await
        .unwrap();
    let code0 = code_for_uri(&e.otpauth_uri, t0).unwrap();
    // Not enrolled yet: a correct code does not sign in.
    assert_eq!(
        staff::verify(&mut tx, &k, id, &code0, t0).await.unwrap(),
        Verdict::Rejected
    );
    let codes = staff::confirm_enrollment(&mut tx, &k, id, &code0, t0)
        .await
        .unwrap();
    assert_eq!(codes.0.len(), 10);
    assert!(staff::is_enrolled(&mut tx, id).await.unwrap());
    let t1 = t0 + Duration::seconds(30);
    let code1 = code_for_uri(&e.otpauth_uri, t1).unwrap();
    assert_eq!(
        staff::verify(&mut tx, &k, id, &code1, t1).await.unwrap(),
        Verdict::Accepted
    );
    // The same code again is refused.
    assert_eq!(
        staff::verify(&mut tx, &k, id, &code1, t1).await.unwrap(),
        Verdict::Rejected
    );
    // A recovery code works once.
    assert_eq!(
        staff::verify(&mut tx, &k, id, &codes.0[0], t1)
            .await
            .unwrap(),
        Verdict::Accepted
    );
    assert_eq!(
        staff::verify(&mut tx, &k, id, &codes.0[0], t1)
            .await
            .unwrap(),
        Verdict::Rejected
    );
    // Lockout after five failures (one already counted above), whatever the code.
    let mut last = Verdict::Rejected;
    for _ in 0..4 {
        last = staff::verify(&mut tx, &k, id, "000000", t1).await.unwrap();
    }
    assert_eq!(last, Verdict::Locked);
    let t2 = t1 + Duration::seconds(30);
    let code2 = code_for_uri(&e.otpauth_uri, t2).unwrap();
    assert_eq!(
        staff::verify(&mut tx, &k, id, &code2, t2).await.unwrap(),
        Verdict::Locked
    );
    let t3 = t1 + Duration::minutes(16);
    let code3 = code_for_uri(&e.otpauth_uri, t3).unwrap();
    assert_eq!(
        staff::verify(&mut tx, &k, id, &code3, t3).await.unwrap(),
        Verdict::Accepted
    );

    // Sessions: idle 15 minutes, absolute 12 hours, revocation.
    let s = staff::start_session(&mut tx, id, t3).await.unwrap();
    assert!(
        staff::check_session(&mut tx, s.id, t3 + Duration::minutes(14))
            .await
            .unwrap()
            .is_ok()
    );
    assert_eq!(
        staff::check_session(&mut tx, s.id, t3 + Duration::minutes(16))
            .await
            .unwrap()
            .unwrap_err(),
        Ended::Idle
    );
    let mut t = t3;
    for _ in 0..52 {
        t += Duration::minutes(14);
        staff::touch(&mut tx, s.id, t).await.unwrap();
    }
    assert_eq!(
        staff::check_session(&mut tx, s.id, t)
            .await
            .unwrap()
            .unwrap_err(),
        Ended::Expired
    );
    let s2 = staff::start_session(&mut tx, id, t3).await.unwrap();
    staff::revoke_session(&mut tx, s2.id, t3).await.unwrap();
    assert_eq!(
        staff::check_session(&mut tx, s2.id, t3)
            .await
            .unwrap()
            .unwrap_err(),
        Ended::Revoked
    );
    // Deactivation ends sessions and sign-in.
    let s3 = staff::start_session(&mut tx, id, t3).await.unwrap();
    staff::deactivate(&mut tx, "ops@staff.example.test", t3)
        .await
        .unwrap();
    assert!(
        staff::check_session(&mut tx, s3.id, t3)
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        staff::credentials(&mut tx, "ops@staff.example.test")
            .await
            .unwrap()
            .is_none()
    );
    tx.commit().await.unwrap();
    assert_eq!(
        {
            let mut tx = db.begin_platform(TxMode::Read).await.unwrap();
            let l = staff::list(&mut tx).await.unwrap();
            tx.commit().await.unwrap();
            l.len()
        },
        1
    );
}

async fn tenant_counts(db: &Db) {
    let (t, _) =
        common::tenant_with_user(db, "staff-counts", phivault_domain::users::Role::Admin).await;
    let mut p = db.begin_platform(TxMode::Read).await.unwrap();
    assert_eq!(tenants::get(&mut p, t).await.unwrap().slug, "staff-counts");
    p.commit().await.unwrap();
    let mut tx = db.begin_tenant(t, TxMode::Read).await.unwrap();
    assert_eq!(staff::tenant_counts(&mut tx).await.unwrap(), (1, 0, 0));
    tx.commit().await.unwrap();
}

both!(staff_lifecycle, tenant_counts);
