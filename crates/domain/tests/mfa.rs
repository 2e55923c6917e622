//! TOTP second factors on both backends, acting as the authenticator app, with time
//! moved by hand.

mod common;

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use phivault_crypto::keys::KeyService;
use phivault_crypto::provider::LocalProvider;
use phivault_domain::mfa::{self, MfaPolicy, Verdict};
use phivault_domain::users::Role;
use phivault_domain::{TenantId, UserId};
use phivault_store::{Db, TxMode};

async fn tenant_with_user(db: &Db, slug: &str) -> (TenantId, UserId) {
    common::tenant_with_user(db, slug, Role::Admin).await
}

async fn verify(
    db: &Db,
    k: &KeyService,
    t: TenantId,
    u: UserId,
    code: &str,
    at: chrono::DateTime<Utc>,
) -> Verdict {
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let v = mfa::verify(&mut tx, k, u, code, at).await.unwrap();
    tx.commit().await.unwrap();
    v
}

async fn totp_lifecycle(db: &Db) {
    let k = KeyService::with_provider(Arc::new(LocalProvider::ephemeral().unwrap()));
    let (t, u) = tenant_with_user(db, "mfa-totp").await;
    // A fixed time at the start of a 30-second step.
    let t0 = Utc.timestamp_opt(1_900_000_020, 0).unwrap();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let e = mfa::begin_enrollment(&mut tx, &k, u, "admin@mfa-totp.example.test", t0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(e.otpauth_uri.starts_with("otpauth://totp/"));
    assert!(!format!("{e:?}").contains("otpauth"));
    // Not enrolled until confirmed: a correct code does not sign in yet.
    let code0 = mfa::code_for_uri(&e.otpauth_uri, t0).unwrap();
    assert_eq!(verify(db, &k, t, u, &code0, t0).await, Verdict::Rejected);

    let t1 = t0 + Duration::seconds(30);
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    assert!(
        mfa::confirm_enrollment(&mut tx, &k, u, "000000x", t1)
            .await
            .is_err()
    );
    let code1 = mfa::code_for_uri(&e.otpauth_uri, t1).unwrap();
    let codes = mfa::confirm_enrollment(&mut tx, &k, u, &code1, t1)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(codes.0.len(), mfa::RECOVERY_CODES);
    assert!(!format!("{codes:?}").contains(&codes.0[0]));
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    assert!(mfa::is_enrolled(&mut tx, u).await.unwrap());
    assert!(
        mfa::begin_enrollment(&mut tx, &k, u, "x", t1)
            .await
            .is_err(),
        "an enabled factor was replaced"
    );
    tx.rollback().await.unwrap();

    // The confirming code cannot be used again, nor can any code of an earlier step.
    assert_eq!(verify(db, &k, t, u, &code1, t1).await, Verdict::Rejected);
    let t2 = t1 + Duration::seconds(30);
    let code2 = mfa::code_for_uri(&e.otpauth_uri, t2).unwrap();
    assert_eq!(verify(db, &k, t, u, &code2, t2).await, Verdict::Accepted);
    assert_eq!(
        verify(db, &k, t, u, &code2, t2 + Duration::seconds(5)).await,
        Verdict::Rejected,
        "a used code was accepted twice"
    );

    // A recovery code works once.
    assert_eq!(
        verify(db, &k, t, u, &codes.0[0], t2).await,
        Verdict::Accepted
    );
    assert_eq!(
        verify(db, &k, t, u, &codes.0[0], t2).await,
        Verdict::Rejected
    );

    // Five failures in a row lock the factor, even against a right code, until the
    // lockout ends. (A success resets the count: start from one.)
    let t3 = t2 + Duration::minutes(2);
    let fresh = mfa::code_for_uri(&e.otpauth_uri, t3).unwrap();
    assert_eq!(verify(db, &k, t, u, &fresh, t3).await, Verdict::Accepted);
    for _ in 0..(mfa::MAX_FAILURES - 1) {
        assert_eq!(verify(db, &k, t, u, "123456", t3).await, Verdict::Rejected);
    }
    assert_eq!(verify(db, &k, t, u, "123456", t3).await, Verdict::Locked);
    let t3b = t3 + Duration::seconds(30);
    let right = mfa::code_for_uri(&e.otpauth_uri, t3b).unwrap();
    assert_eq!(verify(db, &k, t, u, &right, t3b).await, Verdict::Locked);
    let t4 = t3 + mfa::LOCKOUT + Duration::seconds(30);
    let after = mfa::code_for_uri(&e.otpauth_uri, t4).unwrap();
    assert_eq!(verify(db, &k, t, u, &after, t4).await, Verdict::Accepted);

    // The secret is not stored in clear.
    let secret_b32 = e
        .otpauth_uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    let mut tx = db.begin_tenant(t, TxMode::Read).await.unwrap();
    let (stored,): (Vec<u8>,) = tx
        .query("SELECT secret FROM user_totp WHERE tenant_id = $1 AND user_id = $2")
        .bind(u)
        .fetch_one()
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(!String::from_utf8_lossy(&stored).contains(&secret_b32));
}

async fn policy_and_challenges(db: &Db) {
    let (t, u) = tenant_with_user(db, "mfa-policy").await;
    let now = Utc::now();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    assert_eq!(mfa::policy(&mut tx).await.unwrap(), MfaPolicy::None);
    mfa::set_policy(&mut tx, MfaPolicy::Admins, now)
        .await
        .unwrap();
    assert_eq!(mfa::policy(&mut tx).await.unwrap(), MfaPolicy::Admins);
    assert!(MfaPolicy::Admins.requires(&[Role::Admin]));
    assert!(MfaPolicy::Admins.requires(&[Role::Provider, Role::Owner]));
    assert!(!MfaPolicy::Admins.requires(&[Role::Provider]));
    assert!(MfaPolicy::Everyone.requires(&[Role::Billing]));
    let c = mfa::open_challenge(&mut tx, u, true, now).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    assert_eq!(
        mfa::find_challenge(&mut tx, c.id, now).await.unwrap(),
        Some(c)
    );
    assert_eq!(
        mfa::find_challenge(&mut tx, c.id, now + mfa::CHALLENGE_TTL)
            .await
            .unwrap(),
        None
    );
    assert!(mfa::close_challenge(&mut tx, c.id, now).await.unwrap());
    assert!(!mfa::close_challenge(&mut tx, c.id, now).await.unwrap());
    assert_eq!(mfa::find_challenge(&mut tx, c.id, now).await.unwrap(), None);
    tx.commit().await.unwrap();
}

both!(totp_lifecycle, policy_and_challenges);
