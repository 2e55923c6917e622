//! Retention on both backends: what is due when, what deletion destroys (the object, the
//! data key, the content), that it is audited and idempotent, that listing deletes
//! nothing, policy validation, the one e2e setting, tenant isolation, and the training
//! opt-in guarding the export. All data is synthetic.

mod common;

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use phivault_audit::ledger::{self, EventFilter};
use phivault_audit::{Action, ActorKind, AuditConfig, Auditor};
use phivault_crypto::CryptoError;
use phivault_crypto::keys::KeyService;
use phivault_crypto::provider::LocalProvider;
use phivault_domain::consent::{self, Method, NewConsent};
use phivault_domain::encounters::{self, NewEncounter};
use phivault_domain::patients::{self, NewPatient};
use phivault_domain::recordings::{self, AudioFacts, UploadLimits};
use phivault_domain::retention::{self, Basis, DataClass, Due, Rule, Source};
use phivault_domain::training::{self, ExportRange};
use phivault_domain::users::Role;
use phivault_domain::{
    DomainError, EncounterId, Phi, PracticeScope, RecordingId, TenantId, UserId, e2e, notes,
    practices, transcripts,
};
use phivault_store::{Db, ObjectStorage, ObjectStoreConfig, TxMode};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Synthetic words that must come back out of the training export, and only there.
const SAID: &str = "synthetic retention canary words";

struct World {
    tenant: TenantId,
    user: UserId,
    encounter: EncounterId,
    keys: Arc<KeyService>,
    objects: ObjectStorage,
    auditor: Auditor,
    _dir: tempfile::TempDir,
}

async fn world(db: &Db, slug: &str) -> World {
    let (tenant, user) = common::tenant_with_user(db, slug, Role::Owner).await;
    let keys = Arc::new(KeyService::with_provider(Arc::new(
        LocalProvider::ephemeral().unwrap(),
    )));
    let dir = tempfile::tempdir().unwrap();
    let objects = ObjectStorage::open(&ObjectStoreConfig::Local {
        root: dir.path().join("objects"),
    })
    .unwrap();
    let now = Utc::now();
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let practice = practices::create(&mut tx, "Synthetic Retention Clinic", now)
        .await
        .unwrap()
        .id;
    let patient = patients::create(
        &mut tx,
        &keys,
        PracticeScope::All,
        NewPatient {
            practice_id: practice,
            mrn: Phi::new("SYN-RET-1".into()),
            given_name: Phi::new("Synthetic".into()),
            family_name: Phi::new("Retention".into()),
            date_of_birth: Phi::new(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()),
            ssn: None,
            identifiers: vec![],
        },
        now,
    )
    .await
    .unwrap();
    let encounter = encounters::create(
        &mut tx,
        &keys,
        PracticeScope::All,
        user,
        NewEncounter {
            patient_id: patient.id,
            reason: None,
            started_at: None,
        },
        now,
    )
    .await
    .unwrap()
    .id;
    consent::record(
        &mut tx,
        PracticeScope::All,
        encounter,
        user,
        NewConsent {
            method: Method::Verbal,
            jurisdiction: "US-NY".into(),
            all_parties_consented: true,
            consent_text_id: None,
            obtained_at: None,
        },
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    World {
        tenant,
        user,
        encounter,
        auditor: Auditor::start(db.clone(), AuditConfig::default()),
        keys,
        objects,
        _dir: dir,
    }
}

/// A tiny synthetic WAV: 16-bit mono PCM, 8 kHz, 100 ms of silence.
fn tiny_wav() -> Vec<u8> {
    let samples = 800u32;
    let data_len = samples * 2;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&8000u32.to_le_bytes());
    w.extend_from_slice(&16000u32.to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    w.resize(w.len() + data_len as usize, 0);
    w
}

/// Stores a recording at `at` through the real upload path (with a prober that reads the
/// whole stream and accepts a RIFF/WAVE header).
async fn recording(db: &Db, w: &World, at: DateTime<Utc>) -> RecordingId {
    let wav = tiny_wav();
    let sha: [u8; 32] = Sha256::digest(&wav).into();
    let body = futures::stream::iter(vec![Ok::<Bytes, std::io::Error>(Bytes::from(wav))]);
    let probe: recordings::Prober = Box::new(|mut r| {
        let mut all = Vec::new();
        r.read_to_end(&mut all)
            .map_err(|_| recordings::AudioRejection {
                code: "corrupt_audio",
                message: "unreadable".into(),
                unsupported: false,
            })?;
        if all.get(..4) != Some(b"RIFF") || all.get(8..12) != Some(b"WAVE") {
            return Err(recordings::AudioRejection {
                code: "unsupported_format",
                message: "not a WAV file".into(),
                unsupported: true,
            });
        }
        Ok(AudioFacts {
            format: "wav".into(),
            codec: "pcm_s16le".into(),
            sample_rate: 8000,
            channels: 1,
            duration_ms: 100,
        })
    });
    let received = recordings::receive(
        &w.keys,
        &w.objects,
        w.tenant,
        body,
        sha,
        UploadLimits { max_bytes: 1 << 20 },
        probe,
    )
    .await
    .unwrap();
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    let target = recordings::prepare(&mut tx, PracticeScope::All, w.encounter)
        .await
        .unwrap();
    let rec = recordings::save(&mut tx, &w.keys, target, &received, w.user, at)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    RecordingId::from_uuid(rec.id)
}

/// Stores a transcript of `rec` at `transcript_at` and, if given, its note at `note_at`.
async fn transcript_and_note(
    db: &Db,
    w: &World,
    rec: RecordingId,
    transcript_at: DateTime<Utc>,
    note_at: Option<DateTime<Utc>>,
) -> (Uuid, Option<Uuid>) {
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    let transcript = phivault_transcribe::Transcript {
        engine: "synthetic".into(),
        model: "synthetic-test".into(),
        segments: vec![phivault_transcribe::Segment {
            start_ms: 0,
            end_ms: 100,
            text: phivault_transcribe::PhiText::new(SAID),
            speaker: None,
        }],
    };
    let t = transcripts::save(&mut tx, &w.keys, rec, &transcript, transcript_at)
        .await
        .unwrap();
    let n = match note_at {
        Some(at) => {
            let note = phivault_notes::Note {
                kind: phivault_notes::NoteKind::Soap,
                generator: "rules".into(),
                model: None,
                sections: vec![phivault_notes::NoteSection {
                    heading: phivault_notes::SectionHeading::Subjective,
                    text: phivault_notes::PhiText::new(SAID),
                    sources: vec![0],
                }],
                unused_sentences: Some(0),
            };
            Some(notes::save(&mut tx, &w.keys, t, &note, at).await.unwrap())
        }
        None => None,
    };
    tx.commit().await.unwrap();
    (t, n)
}

async fn due_at(db: &Db, tenant: TenantId, at: DateTime<Utc>) -> Vec<Due> {
    let mut tx = db.begin_tenant(tenant, TxMode::Read).await.unwrap();
    let d = retention::due(&mut tx, at).await.unwrap();
    tx.commit().await.unwrap();
    d
}

fn of(due: &[Due], class: DataClass) -> Vec<&Due> {
    due.iter().filter(|d| d.class == class).collect()
}

async fn delete(db: &Db, w: &World, due: &Due) -> u64 {
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    let n = retention::delete(&mut tx, &w.keys, &w.objects, &w.auditor, due, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    n
}

async fn key_destroyed(db: &Db, w: &World, key: Uuid) -> bool {
    let mut tx = db.begin_tenant(w.tenant, TxMode::Read).await.unwrap();
    let r = w.keys.data_key(&mut tx, key).await;
    tx.commit().await.unwrap();
    matches!(r, Err(CryptoError::KeyDestroyed))
}

async fn deletion_events(db: &Db, tenant: TenantId, id: Uuid) -> Vec<phivault_audit::AuditEvent> {
    let mut tx = db.begin_tenant(tenant, TxMode::Read).await.unwrap();
    let filter = EventFilter {
        action: Some(Action::RetentionObjectDeleted),
        resource_id: Some(id.to_string()),
        ..EventFilter::default()
    };
    let events = ledger::list_tenant(&mut tx, &filter, 100).await.unwrap();
    tx.commit().await.unwrap();
    events.into_iter().map(|c| c.event).collect()
}

async fn audio_goes_a_day_after_its_note(db: &Db) {
    let w = world(db, "ret-audio").await;
    let t0 = Utc::now();
    let rec = recording(db, &w, t0).await;
    let note_at = t0 + Duration::minutes(90);
    transcript_and_note(db, &w, rec, t0 + Duration::hours(1), Some(note_at)).await;
    let object = recordings::object_key(w.tenant, rec);
    assert!(w.objects.exists(w.tenant, &object).await.unwrap());

    // Before the window has passed: nothing is due, at any point up to the note + 24 h.
    for at in [
        t0,
        note_at,
        note_at + Duration::hours(23) + Duration::minutes(59),
    ] {
        assert!(due_at(db, w.tenant, at).await.is_empty(), "due at {at}");
    }
    // After it: the audio, by its window, and nothing else (transcript and note keep six
    // years).
    let due = due_at(db, w.tenant, note_at + Duration::hours(25)).await;
    assert_eq!(due.len(), 1, "{due:?}");
    let d = &due[0];
    assert_eq!(
        (d.class, d.record_id, d.rule),
        (DataClass::Audio, rec.as_uuid(), Rule::Window)
    );
    assert_eq!(d.object.as_ref(), Some(&object));
    assert_eq!(d.policy.source, Source::Default);
    let key = d.data_key_id.unwrap();

    // Listing deleted nothing.
    assert_eq!(
        due_at(db, w.tenant, note_at + Duration::hours(25)).await,
        due
    );
    assert!(w.objects.exists(w.tenant, &object).await.unwrap());
    assert!(!key_destroyed(db, &w, key).await);

    assert_eq!(delete(db, &w, d).await, 1);
    assert!(!w.objects.exists(w.tenant, &object).await.unwrap());
    assert!(key_destroyed(db, &w, key).await);
    let mut tx = db.begin_tenant(w.tenant, TxMode::Read).await.unwrap();
    let row = recordings::get(&mut tx, PracticeScope::All, rec)
        .await
        .unwrap();
    assert_eq!(row.state, "deleted");
    assert!(row.deleted_at.is_some());
    assert!(matches!(
        recordings::open_audio(&mut tx, &w.keys, &w.objects, rec).await,
        Err(DomainError::NotFound("recording"))
    ));
    tx.commit().await.unwrap();

    let events = deletion_events(db, w.tenant, rec.as_uuid()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e.actor.kind, ActorKind::System);
    assert_eq!(e.actor.id, "retention");
    assert_eq!(e.resource.kind, "recording");
    assert_eq!(e.fields, vec!["audio", "data_key"]);
    let reason = e.reason.as_deref().unwrap();
    assert!(
        reason.contains("audio: 24 h after_note (default)"),
        "{reason}"
    );

    // A second sweep finds nothing, and deleting the same item again does nothing.
    assert!(
        due_at(db, w.tenant, note_at + Duration::hours(48))
            .await
            .is_empty()
    );
    assert_eq!(delete(db, &w, d).await, 0);
    assert_eq!(deletion_events(db, w.tenant, rec.as_uuid()).await.len(), 1);
}

async fn audio_without_a_note_goes_at_the_cap(db: &Db) {
    let w = world(db, "ret-cap").await;
    let t0 = Utc::now();
    let rec = recording(db, &w, t0).await;
    // A transcript but no note: only the cap applies.
    transcript_and_note(db, &w, rec, t0 + Duration::hours(1), None).await;
    assert!(
        due_at(db, w.tenant, t0 + Duration::hours(167))
            .await
            .is_empty()
    );
    let due = due_at(db, w.tenant, t0 + Duration::hours(169)).await;
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].class, due[0].rule),
        (DataClass::Audio, Rule::AudioCap)
    );

    // Counted from creation, a tenant's shorter window applies before the cap.
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    retention::set_policy(
        &mut tx,
        DataClass::Audio,
        2,
        Basis::AfterCreation,
        w.user,
        t0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(
        due_at(db, w.tenant, t0 + Duration::hours(1))
            .await
            .is_empty()
    );
    let due = due_at(db, w.tenant, t0 + Duration::hours(3)).await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].rule, Rule::Window);
    assert_eq!(due[0].policy.source, Source::Tenant);
}

async fn transcripts_and_notes_go_after_their_window(db: &Db) {
    let w = world(db, "ret-records").await;
    let t0 = Utc::now();
    let rec = recording(db, &w, t0).await;
    let (t, n) = transcript_and_note(db, &w, rec, t0, Some(t0)).await;
    let n = n.unwrap();

    // The defaults: six years after creation (the audio goes long before, at its window).
    let six_years = Duration::hours(retention::RECORD_DEFAULT_HOURS);
    let before = due_at(db, w.tenant, t0 + six_years - Duration::hours(1)).await;
    assert!(of(&before, DataClass::Transcript).is_empty());
    assert!(of(&before, DataClass::Note).is_empty());
    let after = due_at(db, w.tenant, t0 + six_years + Duration::hours(1)).await;
    assert_eq!(of(&after, DataClass::Transcript)[0].record_id, t);
    assert_eq!(of(&after, DataClass::Note)[0].record_id, n);

    // A tenant's shorter windows.
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    for (class, hours) in [(DataClass::Transcript, 48), (DataClass::Note, 72)] {
        retention::set_policy(&mut tx, class, hours, Basis::AfterCreation, w.user, t0)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let due = due_at(db, w.tenant, t0 + Duration::hours(49)).await;
    let transcript_due = of(&due, DataClass::Transcript);
    assert_eq!(transcript_due.len(), 1);
    assert!(of(&due, DataClass::Note).is_empty());
    let transcript_key = transcript_due[0].data_key_id.unwrap();
    assert_eq!(delete(db, &w, transcript_due[0]).await, 1);
    assert!(key_destroyed(db, &w, transcript_key).await);
    let mut tx = db.begin_tenant(w.tenant, TxMode::Read).await.unwrap();
    let stored = transcripts::load(&mut tx, &w.keys, t).await.unwrap();
    tx.commit().await.unwrap();
    assert!(stored.segments.is_none());
    assert!(stored.deleted_at.is_some());
    let e = &deletion_events(db, w.tenant, t).await[0];
    assert_eq!(
        (e.resource.kind.as_str(), e.fields.clone()),
        (
            "transcript",
            vec!["segments".to_string(), "data_key".into()]
        )
    );

    let due = due_at(db, w.tenant, t0 + Duration::hours(73)).await;
    let note_due = of(&due, DataClass::Note);
    assert_eq!(note_due.len(), 1);
    assert!(of(&due, DataClass::Transcript).is_empty());
    let note_key = note_due[0].data_key_id.unwrap();
    assert_eq!(delete(db, &w, note_due[0]).await, 1);
    assert!(key_destroyed(db, &w, note_key).await);
    let mut tx = db.begin_tenant(w.tenant, TxMode::Read).await.unwrap();
    let stored = notes::get(&mut tx, &w.keys, PracticeScope::All, n)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(stored.note.is_none());
    assert!(stored.deleted_at.is_some());
    assert_eq!(
        deletion_events(db, w.tenant, n).await[0].fields,
        vec!["body", "data_key"]
    );
}

async fn a_missing_object_is_still_deleted(db: &Db) {
    let w = world(db, "ret-recover").await;
    let t0 = Utc::now();
    let rec = recording(db, &w, t0).await;
    let at = t0 + Duration::hours(200);
    let due = due_at(db, w.tenant, at).await;
    let d = &due[0];
    let key = d.data_key_id.unwrap();

    // A sweep whose transaction fails after the object was deleted: the object is gone,
    // the row still says stored and the key is intact.
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    assert_eq!(
        retention::delete(&mut tx, &w.keys, &w.objects, &w.auditor, d, Utc::now())
            .await
            .unwrap(),
        1
    );
    tx.rollback().await.unwrap();
    let object = recordings::object_key(w.tenant, rec);
    assert!(!w.objects.exists(w.tenant, &object).await.unwrap());
    assert!(!key_destroyed(db, &w, key).await);
    assert!(
        deletion_events(db, w.tenant, rec.as_uuid())
            .await
            .is_empty()
    );

    // The next sweep finds it due again and finishes the job.
    let again = due_at(db, w.tenant, at).await;
    assert_eq!(again, due);
    assert_eq!(delete(db, &w, &again[0]).await, 1);
    assert!(key_destroyed(db, &w, key).await);
    assert_eq!(deletion_events(db, w.tenant, rec.as_uuid()).await.len(), 1);
    assert!(due_at(db, w.tenant, at).await.is_empty());
}

async fn policies_are_validated(db: &Db) {
    let w = world(db, "ret-policy").await;
    let now = Utc::now();
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    let all = retention::policies(&mut tx).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|p| (p.class, p.window_hours, p.basis, p.source))
            .collect::<Vec<_>>(),
        vec![
            (DataClass::Audio, 24, Basis::AfterNote, Source::Default),
            (
                DataClass::Transcript,
                52_560,
                Basis::AfterCreation,
                Source::Default
            ),
            (
                DataClass::Note,
                52_560,
                Basis::AfterCreation,
                Source::Default
            ),
            (
                DataClass::E2eUtterance,
                24,
                Basis::AfterCreation,
                Source::Default
            ),
        ]
    );
    for (class, hours, basis, field) in [
        (DataClass::Audio, 169, Basis::AfterNote, "window_hours"),
        (DataClass::Audio, 0, Basis::AfterCreation, "window_hours"),
        (DataClass::Transcript, 24, Basis::AfterNote, "basis"),
        (
            DataClass::Note,
            87_601,
            Basis::AfterCreation,
            "window_hours",
        ),
        (
            DataClass::E2eUtterance,
            8_761,
            Basis::AfterCreation,
            "window_hours",
        ),
        (DataClass::E2eUtterance, 24, Basis::AfterNote, "basis"),
    ] {
        match retention::set_policy(&mut tx, class, hours, basis, w.user, now).await {
            Err(DomainError::Invalid { field: f, .. }) => assert_eq!(f, field, "{class:?}"),
            other => panic!("{class:?} {hours} {basis:?}: {other:?}"),
        }
    }
    // Longer than the six-year default is allowed for records.
    let set = retention::set_policy(
        &mut tx,
        DataClass::Note,
        87_600,
        Basis::AfterCreation,
        w.user,
        now,
    )
    .await
    .unwrap();
    assert_eq!(set.source, Source::Tenant);
    let p = retention::policy(&mut tx, DataClass::Note).await.unwrap();
    assert_eq!(
        (p.window_hours, p.updated_by, p.source),
        (87_600, Some(w.user), Source::Tenant)
    );
    retention::reset_policy(&mut tx, DataClass::Note, now)
        .await
        .unwrap();
    let p = retention::policy(&mut tx, DataClass::Note).await.unwrap();
    assert_eq!((p.window_hours, p.source), (52_560, Source::Default));

    // One e2e setting: the policy and the e2e module read and write the same column.
    retention::set_policy(
        &mut tx,
        DataClass::E2eUtterance,
        48,
        Basis::AfterCreation,
        w.user,
        now,
    )
    .await
    .unwrap();
    assert_eq!(e2e::retention_hours(&mut tx).await.unwrap(), 48);
    e2e::set_retention_hours(&mut tx, 12, now).await.unwrap();
    let p = retention::policy(&mut tx, DataClass::E2eUtterance)
        .await
        .unwrap();
    assert_eq!((p.window_hours, p.source), (12, Source::Tenant));
    retention::reset_policy(&mut tx, DataClass::E2eUtterance, now)
        .await
        .unwrap();
    assert_eq!(e2e::retention_hours(&mut tx).await.unwrap(), 24);
    tx.commit().await.unwrap();
}

async fn e2e_utterances_go_by_the_e2e_window(db: &Db) {
    let w = world(db, "ret-e2e").await;
    let t0 = Utc::now();
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    let (session, me) = e2e::create(
        &mut tx,
        w.user,
        e2e::Mode::SingleDevice,
        &"ab".repeat(32),
        t0,
    )
    .await
    .unwrap();
    for (seq, at) in [(1, t0), (2, t0 + Duration::hours(10))] {
        e2e::append(
            &mut tx,
            &session,
            me.id,
            e2e::NewUtterance {
                sequence: seq,
                nonce: vec![7; 12],
                ciphertext: vec![9; 32],
                key_fingerprint: "ab".repeat(32),
                algorithm: e2e::ALGORITHM.into(),
            },
            at,
        )
        .await
        .unwrap()
        .unwrap();
    }
    tx.commit().await.unwrap();
    assert!(
        due_at(db, w.tenant, t0 + Duration::hours(23))
            .await
            .is_empty()
    );
    let due = due_at(db, w.tenant, t0 + Duration::hours(25)).await;
    assert_eq!(due.len(), 1);
    assert_eq!(
        (
            due[0].class,
            due[0].record_id,
            due[0].count,
            due[0].data_key_id
        ),
        (DataClass::E2eUtterance, session.id, 1, None)
    );
    assert_eq!(delete(db, &w, &due[0]).await, 1);
    let mut tx = db.begin_tenant(w.tenant, TxMode::Read).await.unwrap();
    let left = e2e::page(&mut tx, session.id, 0, 10).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(left.iter().map(|u| u.sequence).collect::<Vec<_>>(), vec![2]);
    let e = &deletion_events(db, w.tenant, session.id).await[0];
    assert_eq!(e.resource.kind, "e2e_session");
    assert!(e.reason.as_deref().unwrap().contains("1 utterances"));
}

async fn one_tenant_never_touches_another(db: &Db) {
    let a = world(db, "ret-iso-a").await;
    let b = world(db, "ret-iso-b").await;
    let t0 = Utc::now();
    let rec = recording(db, &a, t0).await;
    let far = t0 + Duration::hours(100_000);
    let a_due = due_at(db, a.tenant, far).await;
    assert_eq!(a_due.len(), 1);
    // B's sweep sees nothing of A's.
    assert!(due_at(db, b.tenant, far).await.is_empty());
    // A's item deleted in B's transaction touches nothing.
    let mut tx = db.begin_tenant(b.tenant, TxMode::Write).await.unwrap();
    assert_eq!(
        retention::delete(
            &mut tx,
            &b.keys,
            &b.objects,
            &b.auditor,
            &a_due[0],
            Utc::now()
        )
        .await
        .unwrap(),
        0
    );
    tx.commit().await.unwrap();
    assert!(
        a.objects
            .exists(a.tenant, &recordings::object_key(a.tenant, rec))
            .await
            .unwrap()
    );
    assert!(!key_destroyed(db, &a, a_due[0].data_key_id.unwrap()).await);
    assert_eq!(due_at(db, a.tenant, far).await, a_due);
}

async fn training_export_needs_the_opt_in(db: &Db) {
    let w = world(db, "ret-training").await;
    let t0 = Utc::now();
    let rec = recording(db, &w, t0).await;
    let (t, n) = transcript_and_note(db, &w, rec, t0, Some(t0)).await;
    let range = ExportRange {
        since: None,
        limit: 100,
    };
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    assert!(!training::status(&mut tx).await.unwrap().enabled);
    for result in [
        training::require(&mut tx).await.map(|_| ()),
        training::export_for_training(&mut tx, &w.keys, range)
            .await
            .map(|_| ()),
    ] {
        match result {
            Err(DomainError::Refused { code, .. }) => {
                assert_eq!(code, "training_opt_in_required")
            }
            other => panic!("not refused: {other:?}"),
        }
    }
    let on = training::set(&mut tx, true, w.user, t0).await.unwrap();
    assert_eq!(training::status(&mut tx).await.unwrap(), on);
    assert_eq!(on.set_by, Some(w.user));
    let records = training::export_for_training(&mut tx, &w.keys, range)
        .await
        .unwrap();
    assert_eq!(
        records.iter().map(|r| (r.class, r.id)).collect::<Vec<_>>(),
        vec![(DataClass::Transcript, t), (DataClass::Note, n.unwrap())]
    );
    for r in &records {
        assert!(r.content.expose().contains(SAID));
        let shown = format!("{r:?}");
        assert!(!shown.contains(SAID), "Debug shows content: {shown}");
    }
    assert!(matches!(
        training::export_for_training(
            &mut tx,
            &w.keys,
            ExportRange {
                since: None,
                limit: 0
            }
        )
        .await,
        Err(DomainError::Invalid { field: "limit", .. })
    ));
    tx.commit().await.unwrap();

    // What retention deleted is not exported.
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    retention::set_policy(
        &mut tx,
        DataClass::Note,
        1,
        Basis::AfterCreation,
        w.user,
        t0,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let due = due_at(db, w.tenant, t0 + Duration::hours(2)).await;
    delete(db, &w, of(&due, DataClass::Note)[0]).await;
    let mut tx = db.begin_tenant(w.tenant, TxMode::Write).await.unwrap();
    let records = training::export_for_training(&mut tx, &w.keys, range)
        .await
        .unwrap();
    assert_eq!(
        records.iter().map(|r| r.class).collect::<Vec<_>>(),
        vec![DataClass::Transcript]
    );
    // Turned off again: refused again.
    training::set(&mut tx, false, w.user, t0).await.unwrap();
    assert!(matches!(
        training::export_for_training(&mut tx, &w.keys, range).await,
        Err(DomainError::Refused {
            code: "training_opt_in_required",
            ..
        })
    ));
    tx.commit().await.unwrap();
}

both!(
    audio_goes_a_day_after_its_note,
    audio_without_a_note_goes_at_the_cap,
    transcripts_and_notes_go_after_their_window,
    a_missing_object_is_still_deleted,
    policies_are_validated,
    e2e_utterances_go_by_the_e2e_window,
    one_tenant_never_touches_another,
    training_export_needs_the_opt_in,
);
