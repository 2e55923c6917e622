//! Break-glass grants on both backends, with time moved by hand: the request rules, a
//! decision only by a different active super_admin, use only by the requester while the
//! grant lives, expiry by itself at the end of its duration, revocation, lapse of an
//! undecided request, and the register's database rules.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use phivault_domain::break_glass::{self, GrantScope, GrantStatus, NewGrant, Refusal};
use phivault_domain::staff::{self, NewStaff, StaffRole};
use phivault_domain::users::Role;
use phivault_domain::{DomainError, EncounterId, TenantId};
use phivault_store::{Db, TxMode};
use uuid::Uuid;

const GOOD: &str = "correct horse battery staple 42";
const REASON: &str = "Ticket SYN-1042: synthetic tenant cannot open an encounter";

async fn member(db: &Db, email: &str, role: StaffRole) -> Uuid {
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

fn new_grant(requester: Uuid, tenant: TenantId, minutes: i64) -> NewGrant {
    NewGrant {
        requester,
        tenant,
        scope: GrantScope::Tenant,
        reason: REASON.into(),
        duration_minutes: minutes,
    }
}

async fn ask(db: &Db, new: NewGrant, now: DateTime<Utc>) -> Uuid {
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    let g = break_glass::request(&mut tx, new, now).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(g.status(now), GrantStatus::Pending);
    g.id
}

async fn grant_lifecycle(db: &Db) {
    let (tenant, _) = common::tenant_with_user(db, "bg", Role::Owner).await;
    let support = member(db, "support@ops.example.test", StaffRole::Support).await;
    let boss = member(db, "boss@ops.example.test", StaffRole::SuperAdmin).await;
    let other = member(db, "other@ops.example.test", StaffRole::PlatformOps).await;
    let t0 = Utc.timestamp_opt(1_900_000_000, 0).unwrap();

    // The request's rules: a reason that says something, at most four hours, a real
    // tenant.
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    for (reason, minutes, field) in [
        ("too short", 30, "reason"),
        ("", 30, "reason"),
        ("bad\u{7}control character here", 30, "reason"),
        (REASON, 0, "duration_minutes"),
        (REASON, 241, "duration_minutes"),
        (REASON, -5, "duration_minutes"),
    ] {
        let r = break_glass::request(
            &mut tx,
            NewGrant {
                reason: reason.into(),
                ..new_grant(support, tenant, minutes)
            },
            t0,
        )
        .await;
        assert!(
            matches!(r, Err(DomainError::Invalid { field: f, .. }) if f == field),
            "{field}: {r:?}"
        );
    }
    let r = break_glass::request(
        &mut tx,
        new_grant(support, TenantId::from_uuid(Uuid::now_v7()), 30),
        t0,
    )
    .await;
    assert!(matches!(r, Err(DomainError::NotFound(_))), "{r:?}");
    drop(tx);

    let g = ask(db, new_grant(support, tenant, 30), t0).await;
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    // Not usable while pending.
    assert_eq!(
        break_glass::usable(&mut tx, g, support, t0).await.unwrap(),
        Err(Refusal::NotActive(GrantStatus::Pending))
    );
    // Only a super_admin decides, and not the requester.
    assert_eq!(
        break_glass::decide(&mut tx, g, other, true, t0)
            .await
            .unwrap(),
        Err(Refusal::NotSuperAdmin)
    );
    assert_eq!(
        break_glass::decide(&mut tx, g, support, true, t0)
            .await
            .unwrap(),
        Err(Refusal::NotSuperAdmin)
    );
    assert_eq!(
        break_glass::decide(&mut tx, Uuid::now_v7(), boss, true, t0)
            .await
            .unwrap(),
        Err(Refusal::Unknown)
    );
    let t1 = t0 + Duration::minutes(5);
    let approved = break_glass::decide(&mut tx, g, boss, true, t1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(approved.expires_at, Some(t1 + Duration::minutes(30)));
    assert_eq!(approved.status(t1), GrantStatus::Active);
    // A second decision loses.
    assert_eq!(
        break_glass::decide(&mut tx, g, boss, false, t1)
            .await
            .unwrap(),
        Err(Refusal::NotPending)
    );
    tx.commit().await.unwrap();

    // Usable by its requester only, and only until it ends by itself.
    let mut tx = db.begin_platform(TxMode::Read).await.unwrap();
    let live = break_glass::usable(&mut tx, g, support, t1 + Duration::minutes(29))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.tenant, tenant);
    assert_eq!(
        break_glass::usable(&mut tx, g, boss, t1).await.unwrap(),
        Err(Refusal::NotYours)
    );
    assert_eq!(
        break_glass::usable(&mut tx, g, support, t1 + Duration::minutes(30))
            .await
            .unwrap(),
        Err(Refusal::NotActive(GrantStatus::Expired))
    );
    drop(tx);

    // An expired grant cannot be revoked; a live one can, by its requester or a
    // super_admin, not by anyone else.
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    assert_eq!(
        break_glass::revoke(&mut tx, g, support, t1 + Duration::hours(1))
            .await
            .unwrap(),
        Err(Refusal::NotActive(GrantStatus::Expired))
    );
    tx.commit().await.unwrap();
    let g2 = ask(db, new_grant(support, tenant, 240), t1).await;
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    break_glass::decide(&mut tx, g2, boss, true, t1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        break_glass::revoke(&mut tx, g2, other, t1).await.unwrap(),
        Err(Refusal::NotYours)
    );
    let revoked = break_glass::revoke(&mut tx, g2, boss, t1 + Duration::minutes(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_by, Some(boss));
    assert_eq!(
        break_glass::usable(&mut tx, g2, support, t1 + Duration::minutes(2))
            .await
            .unwrap(),
        Err(Refusal::NotActive(GrantStatus::Revoked))
    );
    tx.commit().await.unwrap();

    // A request nobody decides lapses after an hour.
    let g3 = ask(db, new_grant(other, tenant, 10), t0).await;
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    assert_eq!(
        break_glass::decide(&mut tx, g3, boss, true, t0 + Duration::minutes(61))
            .await
            .unwrap(),
        Err(Refusal::NotPending)
    );
    let lapsed = break_glass::get(&mut tx, g3).await.unwrap().unwrap();
    assert_eq!(
        lapsed.status(t0 + Duration::minutes(61)),
        GrantStatus::Lapsed
    );
    // A super_admin's own request needs another super_admin.
    tx.commit().await.unwrap();
    let g4 = ask(db, new_grant(boss, tenant, 10), t0).await;
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    assert_eq!(
        break_glass::decide(&mut tx, g4, boss, true, t0)
            .await
            .unwrap(),
        Err(Refusal::SelfApproval)
    );
    // A deactivated super_admin decides nothing.
    let boss2 = {
        tx.commit().await.unwrap();
        member(db, "boss2@ops.example.test", StaffRole::SuperAdmin).await
    };
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    staff::deactivate(&mut tx, "boss2@ops.example.test", t0)
        .await
        .unwrap();
    assert_eq!(
        break_glass::decide(&mut tx, g4, boss2, true, t0)
            .await
            .unwrap(),
        Err(Refusal::NotSuperAdmin)
    );

    // The register: everything for a super_admin's view, one's own otherwise.
    assert_eq!(break_glass::list(&mut tx, None).await.unwrap().len(), 4);
    let mine = break_glass::list(&mut tx, Some(support)).await.unwrap();
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|g| g.requester == support));
    tx.commit().await.unwrap();
}

async fn encounter_scope(db: &Db) {
    let (tenant, _) = common::tenant_with_user(db, "bge", Role::Owner).await;
    let support = member(db, "support@ops.example.test", StaffRole::Support).await;
    // An encounter scope is stored and read back; the existence check runs in the
    // tenant's own transaction and finds nothing for an unknown id.
    let unknown = EncounterId::from_uuid(Uuid::now_v7());
    let mut tx = db.begin_tenant(tenant, TxMode::Read).await.unwrap();
    assert_eq!(
        break_glass::encounter_patient(&mut tx, unknown)
            .await
            .unwrap(),
        None
    );
    drop(tx);
    let now = Utc::now();
    let g = ask(
        db,
        NewGrant {
            scope: GrantScope::Encounter(unknown),
            ..new_grant(support, tenant, 15)
        },
        now,
    )
    .await;
    let mut tx = db.begin_platform(TxMode::Read).await.unwrap();
    let read = break_glass::get(&mut tx, g).await.unwrap().unwrap();
    assert_eq!(read.scope, GrantScope::Encounter(unknown));
    assert_eq!(read.duration_minutes, 15);
    drop(tx);

    // The schema holds the rules too: a requester cannot be recorded as the decider, and
    // an approval needs an end.
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    let selfish = tx
        .query(
            "UPDATE break_glass_grants SET decision = 'approved', decided_by = requester_id,
             decided_at = $2, expires_at = $2 WHERE id = $1",
        )
        .bind(g)
        .bind(now)
        .execute()
        .await;
    assert!(selfish.is_err(), "self-approval stored");
    drop(tx);
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    let endless = tx
        .query("UPDATE break_glass_grants SET decision = 'approved', decided_at = $2 WHERE id = $1")
        .bind(g)
        .bind(now)
        .execute()
        .await;
    assert!(endless.is_err(), "approval without an end stored");
}

both!(grant_lifecycle, encounter_scope);
