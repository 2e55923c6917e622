//! End-to-end sessions and guest devices on both backends, with time moved by hand:
//! the retention window deletes old ciphertext and nothing newer, an ended session holds
//! nothing, invites expire, sequences only rise, the trial count is taken and given back,
//! and a device id is a function of its key.

mod common;

use chrono::{Duration, TimeZone, Utc};
use ed25519_dalek::{Signer, SigningKey};
use phivault_domain::devices;
use phivault_domain::e2e::{self, Mode, NewUtterance, Refusal, Who};
use phivault_domain::users::Role;
use phivault_store::{Db, TxMode};

const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn utterance(sequence: i64) -> NewUtterance {
    NewUtterance {
        sequence,
        nonce: vec![1; 12],
        ciphertext: vec![2; 32],
        key_fingerprint: FP.into(),
        algorithm: e2e::ALGORITHM.into(),
    }
}

async fn retention_and_order(db: &Db) {
    let (tenant, owner) = common::tenant_with_user(db, "e2e-ret", Role::Provider).await;
    let t0 = Utc.timestamp_opt(1_900_000_000, 0).unwrap();
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let (session, me) = e2e::create(&mut tx, owner, Mode::SingleDevice, FP, t0)
        .await
        .unwrap();
    assert_eq!(me.who, Who::User(owner));
    // Two old utterances, one recent.
    for (seq, at) in [
        (1, t0),
        (2, t0 + Duration::hours(1)),
        (5, t0 + Duration::hours(30)),
    ] {
        e2e::append(&mut tx, &session, me.id, utterance(seq), at)
            .await
            .unwrap()
            .unwrap();
    }
    // Sequences only rise, per sender.
    assert_eq!(
        e2e::append(&mut tx, &session, me.id, utterance(5), t0)
            .await
            .unwrap(),
        Err(Refusal::SequenceNotIncreasing)
    );
    assert_eq!(
        e2e::append(&mut tx, &session, me.id, utterance(4), t0)
            .await
            .unwrap(),
        Err(Refusal::SequenceNotIncreasing)
    );
    let mut wrong = utterance(9);
    wrong.key_fingerprint = "f".repeat(64);
    assert_eq!(
        e2e::append(&mut tx, &session, me.id, wrong, t0)
            .await
            .unwrap(),
        Err(Refusal::FingerprintMismatch)
    );
    tx.commit().await.unwrap();

    // The default window is 24 hours: at t0 + 26 h the first two are past it.
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    assert_eq!(e2e::retention_hours(&mut tx).await.unwrap(), 24);
    let swept = e2e::sweep(&mut tx, t0 + Duration::hours(26)).await.unwrap();
    assert_eq!(swept, vec![(session.id, 2)]);
    let left = e2e::page(&mut tx, session.id, 0, 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].sequence, 5);
    assert_eq!(left[0].position, 3);
    // Nothing more to sweep at the same time.
    assert!(
        e2e::sweep(&mut tx, t0 + Duration::hours(26))
            .await
            .unwrap()
            .is_empty()
    );
    // Ending deletes the rest and closes the session.
    assert_eq!(
        e2e::end(&mut tx, session.id, t0 + Duration::hours(31))
            .await
            .unwrap(),
        Ok(1)
    );
    assert_eq!(
        e2e::end(&mut tx, session.id, t0 + Duration::hours(31))
            .await
            .unwrap(),
        Err(Refusal::Ended)
    );
    assert!(
        e2e::page(&mut tx, session.id, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        e2e::append(&mut tx, &session, me.id, utterance(6), t0)
            .await
            .unwrap(),
        Err(Refusal::Ended)
    );
    tx.commit().await.unwrap();
}

async fn invites_and_devices(db: &Db) {
    let (tenant, owner) = common::tenant_with_user(db, "e2e-inv", Role::Provider).await;
    let now = Utc::now();
    let key = SigningKey::from_bytes(&[42u8; 32]);
    let public = key.verifying_key().to_bytes();
    assert_eq!(devices::device_id(&public), devices::device_id(&public));
    assert_ne!(
        devices::device_id(&public),
        devices::device_id(
            &SigningKey::from_bytes(&[43u8; 32])
                .verifying_key()
                .to_bytes()
        )
    );

    // Registration: a challenge for one key does not register another.
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    let (challenge, _) = devices::open_challenge(&mut p, &public, now).await.unwrap();
    let other = SigningKey::from_bytes(&[43u8; 32]);
    let sig = other.sign(format!("{}{challenge}", devices::SIGNED_PREFIX).as_bytes());
    let r = devices::register(
        &mut p,
        &other.verifying_key().to_bytes(),
        &challenge,
        &sig.to_bytes(),
        now,
    )
    .await
    .unwrap();
    assert_eq!(r, Err(devices::Refusal::Challenge));
    // An expired challenge is refused.
    let sig = key.sign(format!("{}{challenge}", devices::SIGNED_PREFIX).as_bytes());
    let late = devices::register(
        &mut p,
        &public,
        &challenge,
        &sig.to_bytes(),
        now + devices::CHALLENGE_TTL,
    )
    .await
    .unwrap();
    assert_eq!(late, Err(devices::Refusal::Challenge));
    let (device, token) = devices::register(&mut p, &public, &challenge, &sig.to_bytes(), now)
        .await
        .unwrap()
        .unwrap();
    let found = devices::authenticate(&mut p, &token)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, found.sessions_joined), (device.id, 0));
    assert_eq!(
        devices::authenticate(&mut p, &token.replace("pvd_", "pvt_"))
            .await
            .unwrap(),
        None
    );
    // The trial: taken up to the limit, given back on release.
    assert!(devices::reserve_trial(&mut p, device.id, 2).await.unwrap());
    assert!(devices::reserve_trial(&mut p, device.id, 2).await.unwrap());
    assert!(!devices::reserve_trial(&mut p, device.id, 2).await.unwrap());
    devices::release_trial(&mut p, device.id).await.unwrap();
    assert!(devices::reserve_trial(&mut p, device.id, 2).await.unwrap());
    p.commit().await.unwrap();

    // Invites: once, before they expire, for the tenant they name.
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let (session, _) = e2e::create(&mut tx, owner, Mode::TwoDevice, FP, now)
        .await
        .unwrap();
    let (invite, expires) = e2e::create_invite(&mut tx, &session, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expires, now + e2e::INVITE_TTL);
    assert_eq!(e2e::invite_tenant(&invite), Some(tenant));
    let (late, _) = e2e::create_invite(&mut tx, &session, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        e2e::consume_invite(&mut tx, &late, device.id, now + e2e::INVITE_TTL)
            .await
            .unwrap()
            .map(|_| ()),
        Err(Refusal::InviteExpired)
    );
    let (s, p1, new) = e2e::consume_invite(&mut tx, &invite, device.id, now)
        .await
        .unwrap()
        .unwrap();
    assert!(new);
    assert_eq!(s.id, session.id);
    assert_eq!(
        e2e::consume_invite(&mut tx, &invite, device.id, now)
            .await
            .unwrap()
            .map(|_| ()),
        Err(Refusal::InviteUsed)
    );
    // A second invite for the same device keeps its sender id.
    let (again, _) = e2e::create_invite(&mut tx, &session, now)
        .await
        .unwrap()
        .unwrap();
    let (_, p2, new) = e2e::consume_invite(&mut tx, &again, device.id, now)
        .await
        .unwrap()
        .unwrap();
    assert!(!new);
    assert_eq!(p1.id, p2.id);
    tx.commit().await.unwrap();
}

both!(retention_and_order, invites_and_devices);
