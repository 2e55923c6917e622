//! Sessions on both backends, with time moved by hand (every check takes `now`).

mod common;

use chrono::{Duration, Utc};
use phivault_domain::sessions::{self, Ended, PresentedRefresh, SessionPolicy};
use phivault_domain::users::Role;
use phivault_domain::{TenantId, UserId};
use phivault_store::{Db, TxMode};

async fn tenant_with_user(db: &Db, slug: &str) -> (TenantId, UserId) {
    common::tenant_with_user(db, slug, Role::Provider).await
}

async fn check(
    db: &Db,
    t: TenantId,
    s: phivault_domain::SessionId,
    at: chrono::DateTime<Utc>,
) -> Result<bool, Ended> {
    let mut tx = db.begin_tenant(t, TxMode::Read).await.unwrap();
    let r = sessions::check(&mut tx, s, at).await.unwrap();
    tx.rollback().await.unwrap();
    r.map(|(_, _, stale)| stale)
}

async fn timeouts(db: &Db) {
    let (t, u) = tenant_with_user(db, "sessions-timeouts").await;
    let t0 = Utc::now();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let (s, refresh) = sessions::start(&mut tx, u, false, t0).await.unwrap();
    tx.commit().await.unwrap();
    assert!(refresh.is_none(), "no refresh token without remember-me");
    assert_eq!(s.expires_at, t0 + Duration::hours(12));
    assert_eq!(check(db, t, s.id, t0).await, Ok(false));
    assert_eq!(
        check(db, t, s.id, t0 + Duration::seconds(31)).await,
        Ok(true)
    );
    // Idle: 15 minutes without activity ends it.
    assert_eq!(
        check(db, t, s.id, t0 + Duration::minutes(15)).await,
        Err(Ended::Idle)
    );
    // Activity written back keeps it alive, up to the absolute lifetime.
    let mut at = t0;
    while at + Duration::minutes(10) < t0 + Duration::hours(12) {
        at += Duration::minutes(10);
        assert!(check(db, t, s.id, at).await.is_ok(), "ended early at {at}");
        let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
        sessions::touch(&mut tx, s.id, at).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(
        check(db, t, s.id, t0 + Duration::hours(12)).await,
        Err(Ended::Expired)
    );

    // A tenant policy shortens the idle timeout; bad policies are refused.
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    for bad in [(59, 3600), (600, 299), (3600, 1800), (90_000, 100_000)] {
        assert!(
            sessions::set_policy(
                &mut tx,
                SessionPolicy {
                    idle: Duration::seconds(bad.0),
                    absolute: Duration::seconds(bad.1)
                },
                t0
            )
            .await
            .is_err(),
            "accepted {bad:?}"
        );
    }
    sessions::set_policy(
        &mut tx,
        SessionPolicy {
            idle: Duration::seconds(60),
            absolute: Duration::hours(1),
        },
        t0,
    )
    .await
    .unwrap();
    let (s2, _) = sessions::start(&mut tx, u, false, t0).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s2.expires_at, t0 + Duration::hours(1));
    assert!(
        check(db, t, s2.id, t0 + Duration::seconds(59))
            .await
            .is_ok()
    );
    assert_eq!(
        check(db, t, s2.id, t0 + Duration::seconds(60)).await,
        Err(Ended::Idle)
    );
}

async fn revocation(db: &Db) {
    let (t, u) = tenant_with_user(db, "sessions-revocation").await;
    let now = Utc::now();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let (a, _) = sessions::start(&mut tx, u, false, now).await.unwrap();
    let (b, _) = sessions::start(&mut tx, u, true, now).await.unwrap();
    let (c, _) = sessions::start(&mut tx, u, false, now).await.unwrap();
    sessions::revoke(&mut tx, a.id, "signed out", now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(check(db, t, a.id, now).await, Err(Ended::Revoked));
    assert!(check(db, t, b.id, now).await.is_ok());
    // Deactivation ends every session of the user at once.
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    tx.query("UPDATE users SET status = 'deactivated' WHERE tenant_id = $1 AND id = $2")
        .bind(u)
        .execute()
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(check(db, t, b.id, now).await, Err(Ended::UserInactive));
    assert_eq!(check(db, t, c.id, now).await, Err(Ended::UserInactive));
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    assert!(sessions::start(&mut tx, u, false, now).await.is_err());
    assert_eq!(
        sessions::revoke_user(&mut tx, u, "deactivated", now)
            .await
            .unwrap(),
        2
    );
    tx.commit().await.unwrap();
    // Another tenant's transaction does not see the session at all.
    let (other, _) = tenant_with_user(db, "sessions-other").await;
    assert_eq!(check(db, other, b.id, now).await, Err(Ended::Unknown));
}

async fn refresh_rotation_and_reuse(db: &Db) {
    let (t, u) = tenant_with_user(db, "sessions-refresh").await;
    let t0 = Utc::now();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let (s, first) = sessions::start(&mut tx, u, true, t0).await.unwrap();
    tx.commit().await.unwrap();
    let first = first.expect("remember-me gives a refresh token");
    let p1 = PresentedRefresh::parse(first.expose()).unwrap();

    // Rotation: the first token yields a second; the session lives on.
    let t1 = t0 + Duration::minutes(5);
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let (s1, user, second) = sessions::refresh(&mut tx, &p1, t1).await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(s1.id, s.id);
    assert_eq!(user.id, u);
    assert_ne!(second.expose(), first.expose());
    let p2 = PresentedRefresh::parse(second.expose()).unwrap();

    // Replaying the first token revokes the session, so the second fails too.
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let replay = sessions::refresh(&mut tx, &p1, t1 + Duration::minutes(1))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(replay.err(), Some(Ended::RefreshReused));
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let after = sessions::refresh(&mut tx, &p2, t1 + Duration::minutes(2))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(after.err(), Some(Ended::Revoked));
    assert_eq!(check(db, t, s.id, t1).await, Err(Ended::Revoked));

    // A token of another tenant, or an unknown one, is refused without side effects.
    let (other, _) = tenant_with_user(db, "sessions-refresh-other").await;
    let mut tx = db.begin_tenant(other, TxMode::Write).await.unwrap();
    assert_eq!(
        sessions::refresh(&mut tx, &p2, t1).await.unwrap().err(),
        Some(Ended::Unknown)
    );
    tx.rollback().await.unwrap();

    // Idle sessions cannot be refreshed either.
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    let (s3, tok) = sessions::start(&mut tx, u, true, t0).await.unwrap();
    tx.commit().await.unwrap();
    let p3 = PresentedRefresh::parse(tok.unwrap().expose()).unwrap();
    let mut tx = db.begin_tenant(t, TxMode::Write).await.unwrap();
    assert_eq!(
        sessions::refresh(&mut tx, &p3, t0 + Duration::minutes(20))
            .await
            .unwrap()
            .err(),
        Some(Ended::Idle)
    );
    tx.commit().await.unwrap();
    let _ = s3;
}

both!(timeouts, revocation, refresh_rotation_and_reuse);
