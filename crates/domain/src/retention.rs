//! Retention: how long each class of PHI is kept, and deletion that really deletes.
//!
//! Four data classes, one policy each per tenant: `audio` (recordings), `transcript`,
//! `note` and `e2e_utterance` (end-to-end ciphertext). A class the tenant never set uses
//! the built-in default ([`default_policy`]). [`due`] lists what a sweep would delete at a
//! given time; [`delete`] deletes one item, in the caller's transaction, with its
//! `retention.object.deleted` audit event.
//!
//! Deleting a recording, transcript or note destroys its data key (so every copy of the
//! ciphertext, backups included, stays sealed for good), clears or deletes the bytes, and
//! keeps the row with its `deleted_at`: the row and the audit event are the deletion log.
//!
//! Audio is never kept forever: whatever the policy, a recording goes at the latest
//! [`AUDIO_MAX_HOURS`] after it was stored, even if no note is ever generated from it.
//!
//! The `e2e_utterance` window is the tenant's `e2e_retention_hours` setting (the
//! `settings/e2e` route writes the same column): one setting, never two that disagree.
//! Its policy has no `updated_by`/`updated_at`; who changed it is in the audit trail.

use chrono::{DateTime, Duration, Utc};
use phivault_audit::Source as EventSource;
use phivault_audit::{Action, Actor, ActorKind, AuditEvent, Auditor, Outcome, Resource};
use phivault_crypto::CryptoError;
use phivault_crypto::keys::KeyService;
use phivault_store::{ObjectKey, ObjectStorage, StoreError, TenantTx};
use serde::Serialize;
use uuid::Uuid;

use crate::error::invalid;
use crate::{DomainError, RecordingId, Result, UserId, e2e, recordings};

/// Longest any audio is kept, in hours (7 days), whatever the policy says.
pub const AUDIO_MAX_HOURS: i64 = 168;
/// Default audio window after the recording's note is generated, in hours.
pub const AUDIO_DEFAULT_HOURS: i64 = 24;
/// Default window of transcripts and notes after creation: six years, the HIPAA
/// minimum for documentation (45 CFR 164.316(b)(2)); a tenant may set shorter or longer.
pub const RECORD_DEFAULT_HOURS: i64 = 52_560;
/// Longest window any class accepts (10 years; the table's CHECK).
pub const MAX_WINDOW_HOURS: i64 = 87_600;
/// Longest `e2e_utterance` window (the `e2e_retention_hours` column's CHECK).
pub const E2E_MAX_HOURS: i64 = 8_760;

/// The actor id of deletions made by retention.
pub const ACTOR_ID: &str = "retention";

/// A class of data with its own retention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataClass {
    /// A recording's audio object.
    Audio,
    /// A transcript's segments.
    Transcript,
    /// A note's body.
    Note,
    /// End-to-end session utterances (ciphertext the server cannot read).
    E2eUtterance,
}

impl DataClass {
    /// Every class, in a fixed order.
    pub const ALL: [DataClass; 4] = [
        DataClass::Audio,
        DataClass::Transcript,
        DataClass::Note,
        DataClass::E2eUtterance,
    ];

    /// The stable name (`audio`, `transcript`, `note`, `e2e_utterance`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataClass::Audio => "audio",
            DataClass::Transcript => "transcript",
            DataClass::Note => "note",
            DataClass::E2eUtterance => "e2e_utterance",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<DataClass> {
        DataClass::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The fields a deletion of this class destroys, as the audit event names them.
    fn fields(self) -> &'static [&'static str] {
        match self {
            DataClass::Audio => &["audio", "data_key"],
            DataClass::Transcript => &["segments", "data_key"],
            DataClass::Note => &["body", "data_key"],
            DataClass::E2eUtterance => &["ciphertext"],
        }
    }

    /// The audit resource kind of a deleted item.
    fn resource_kind(self) -> &'static str {
        match self {
            DataClass::Audio => "recording",
            DataClass::Transcript => "transcript",
            DataClass::Note => "note",
            DataClass::E2eUtterance => "e2e_session",
        }
    }
}

/// What a window is counted from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// From when the recording's note was generated (audio only), capped at
    /// [`AUDIO_MAX_HOURS`] after the recording was stored.
    AfterNote,
    /// From when the item was stored.
    AfterCreation,
}

impl Basis {
    /// The stable name (`after_note`, `after_creation`).
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::AfterNote => "after_note",
            Basis::AfterCreation => "after_creation",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Basis> {
        match s {
            "after_note" => Some(Basis::AfterNote),
            "after_creation" => Some(Basis::AfterCreation),
            _ => None,
        }
    }
}

/// Where a policy comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The built-in default.
    Default,
    /// Set by the tenant.
    Tenant,
}

impl Source {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Tenant => "tenant",
        }
    }
}

/// One class's retention policy in a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// The class.
    pub class: DataClass,
    /// How long, in hours.
    pub window_hours: i64,
    /// From when.
    pub basis: Basis,
    /// Default or set by the tenant.
    pub source: Source,
    /// Who set it (`None` for a default, and for `e2e_utterance`, whose setting keeps no
    /// author; the audit trail has it).
    pub updated_by: Option<UserId>,
    /// When it was set (as for `updated_by`).
    pub updated_at: Option<DateTime<Utc>>,
}

impl Policy {
    /// The policy, for an audit reason or a log line: `audio: 24 h after_note (default)`.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} h {} ({})",
            self.class.as_str(),
            self.window_hours,
            self.basis.as_str(),
            self.source.as_str()
        )
    }
}

/// The built-in policy of a class (for `e2e_utterance`, the column's own default).
pub fn default_policy(class: DataClass) -> Policy {
    let (window_hours, basis) = match class {
        DataClass::Audio => (AUDIO_DEFAULT_HOURS, Basis::AfterNote),
        DataClass::Transcript | DataClass::Note => (RECORD_DEFAULT_HOURS, Basis::AfterCreation),
        DataClass::E2eUtterance => (e2e::DEFAULT_RETENTION_HOURS, Basis::AfterCreation),
    };
    Policy {
        class,
        window_hours,
        basis,
        source: Source::Default,
        updated_by: None,
        updated_at: None,
    }
}

/// Checks a policy before it is stored.
fn check(class: DataClass, window_hours: i64, basis: Basis) -> Result<()> {
    let max = match class {
        DataClass::Audio => AUDIO_MAX_HOURS,
        DataClass::E2eUtterance => E2E_MAX_HOURS,
        DataClass::Transcript | DataClass::Note => MAX_WINDOW_HOURS,
    };
    if window_hours < 1 {
        return Err(invalid("window_hours", "must be at least 1 hour"));
    }
    if window_hours > max {
        return Err(invalid(
            "window_hours",
            match class {
                DataClass::Audio => "audio is kept at most 168 hours (7 days)",
                DataClass::E2eUtterance => "e2e_utterance is kept at most 8760 hours",
                _ => "must be at most 87600 hours",
            },
        ));
    }
    if basis == Basis::AfterNote && class != DataClass::Audio {
        return Err(invalid("basis", "after_note applies to audio only"));
    }
    Ok(())
}

type PolicyRow = (String, i64, String, Uuid, DateTime<Utc>);

/// Every class's policy in the transaction's tenant, defaults filled in, in
/// [`DataClass::ALL`] order.
pub async fn policies(tx: &mut TenantTx) -> Result<Vec<Policy>> {
    let rows: Vec<PolicyRow> = tx
        .query(
            "SELECT data_class, window_hours, basis, updated_by, updated_at
             FROM retention_policies WHERE tenant_id = $1",
        )
        .fetch_all()
        .await?;
    let e2e_hours = e2e::retention_hours(tx).await?;
    let mut out = Vec::with_capacity(DataClass::ALL.len());
    for class in DataClass::ALL {
        let policy = if class == DataClass::E2eUtterance {
            // The window itself lives in the e2e setting (which the e2e settings route
            // also changes); a row here records that the tenant chose it, and by whom.
            let chosen = rows.iter().find(|r| r.0 == class.as_str());
            let set = chosen.is_some() || e2e_hours != e2e::DEFAULT_RETENTION_HOURS;
            Policy {
                window_hours: e2e_hours,
                source: if set { Source::Tenant } else { Source::Default },
                updated_by: chosen.map(|r| UserId::from_uuid(r.3)),
                updated_at: chosen.map(|r| r.4),
                ..default_policy(class)
            }
        } else {
            let stored = rows.iter().find(|r| r.0 == class.as_str()).and_then(|r| {
                Some(Policy {
                    class,
                    window_hours: r.1,
                    basis: Basis::parse(&r.2)?,
                    source: Source::Tenant,
                    updated_by: Some(UserId::from_uuid(r.3)),
                    updated_at: Some(r.4),
                })
            });
            stored.unwrap_or_else(|| default_policy(class))
        };
        out.push(policy);
    }
    Ok(out)
}

/// One class's policy.
pub async fn policy(tx: &mut TenantTx, class: DataClass) -> Result<Policy> {
    policies(tx)
        .await?
        .into_iter()
        .find(|p| p.class == class)
        .ok_or(DomainError::NotFound("retention policy"))
}

/// Sets a class's policy. Audio: at most [`AUDIO_MAX_HOURS`]; `after_note` is for audio
/// only; `e2e_utterance` writes the tenant's `e2e_retention_hours`. Returns the policy
/// as stored.
///
/// # Errors
/// `Invalid { field: "window_hours" | "basis" }`.
pub async fn set_policy(
    tx: &mut TenantTx,
    class: DataClass,
    window_hours: i64,
    basis: Basis,
    by: UserId,
    now: DateTime<Utc>,
) -> Result<Policy> {
    check(class, window_hours, basis)?;
    if class == DataClass::E2eUtterance {
        e2e::set_retention_hours(tx, window_hours, now).await?;
    }
    tx.query(
        "INSERT INTO retention_policies (tenant_id, data_class, window_hours, basis, updated_by, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, data_class) DO UPDATE SET window_hours = excluded.window_hours,
             basis = excluded.basis, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
    )
    .bind(class.as_str())
    .bind(window_hours)
    .bind(basis.as_str())
    .bind(by)
    .bind(now)
    .execute()
    .await?;
    policy(tx, class).await
}

/// Puts a class back on its built-in default.
pub async fn reset_policy(
    tx: &mut TenantTx,
    class: DataClass,
    now: DateTime<Utc>,
) -> Result<Policy> {
    if class == DataClass::E2eUtterance {
        e2e::set_retention_hours(tx, e2e::DEFAULT_RETENTION_HOURS, now).await?;
    }
    tx.query("DELETE FROM retention_policies WHERE tenant_id = $1 AND data_class = $2")
        .bind(class.as_str())
        .execute()
        .await?;
    Ok(default_policy(class))
}

/// Which rule made an item due.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The policy's window has passed.
    Window,
    /// Audio whose note never came in time: [`AUDIO_MAX_HOURS`] after it was stored.
    AudioCap,
}

/// One item a sweep would delete now. Identifiers and times only, never content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// The class.
    pub class: DataClass,
    /// The recording, transcript or note; for `e2e_utterance`, the session.
    pub record_id: Uuid,
    /// The data key to destroy (`None` for end-to-end ciphertext: the server holds no
    /// key to it).
    pub data_key_id: Option<Uuid>,
    /// The object to delete (a recording's audio).
    pub object: Option<ObjectKey>,
    /// When the item was stored (for a session, its oldest due utterance).
    pub created_at: DateTime<Utc>,
    /// The policy that applies.
    pub policy: Policy,
    /// Which rule of it made the item due.
    pub rule: Rule,
    /// How many items it stands for (utterances of a session; 1 otherwise).
    pub count: u64,
    /// For utterances: those stored before this time are due.
    cutoff: DateTime<Utc>,
}

impl Due {
    /// The audit reason: the policy and the rule that applied.
    pub fn reason(&self) -> String {
        let rule = match self.rule {
            Rule::Window => "window passed".to_string(),
            Rule::AudioCap => format!("audio kept at most {AUDIO_MAX_HOURS} h after creation"),
        };
        let mut reason = format!("retention policy {}; {rule}", self.policy.describe());
        if self.class == DataClass::E2eUtterance {
            reason.push_str(&format!("; {} utterances", self.count));
        }
        reason
    }
}

/// `id, data_key_id, created_at` of a recording and `created_at` of its note, if any.
type AudioRow = (Uuid, Uuid, DateTime<Utc>, Option<DateTime<Utc>>);

fn hours(h: i64) -> Duration {
    Duration::hours(h)
}

/// What a sweep would delete in the transaction's tenant at `now`: recordings past
/// their window (or cap), transcripts and notes past theirs, utterances past the e2e
/// window (one item per session). Oldest first within a class.
pub async fn due(tx: &mut TenantTx, now: DateTime<Utc>) -> Result<Vec<Due>> {
    let tenant = tx.tenant();
    let policies = policies(tx).await?;
    let of = |class: DataClass| {
        policies
            .iter()
            .find(|p| p.class == class)
            .cloned()
            .unwrap_or_else(|| default_policy(class))
    };
    let mut out = Vec::new();

    // Audio: the window after the note (if any note) or after creation, and the cap.
    let audio = of(DataClass::Audio);
    let window_cutoff = now - hours(audio.window_hours);
    let cap_cutoff = now - hours(AUDIO_MAX_HOURS);
    let (creation_cutoff, note_cutoff) = match audio.basis {
        Basis::AfterNote => (cap_cutoff, Some(window_cutoff)),
        Basis::AfterCreation => (window_cutoff.max(cap_cutoff), None),
    };
    let rows: Vec<AudioRow> = tx
        .query(
            "SELECT r.id, r.data_key_id, r.created_at, n.created_at
             FROM recordings r
             LEFT JOIN transcripts t ON t.tenant_id = r.tenant_id AND t.recording_id = r.id
             LEFT JOIN notes n ON n.tenant_id = t.tenant_id AND n.transcript_id = t.id
             WHERE r.tenant_id = $1 AND r.state = 'stored' AND (r.created_at < $2 OR n.created_at < $3)
             ORDER BY r.created_at, r.id",
        )
        .bind(creation_cutoff)
        .bind(note_cutoff)
        .fetch_all()
        .await?;
    for (id, key, created_at, note_at) in rows {
        let by_window = match audio.basis {
            Basis::AfterNote => note_at.is_some_and(|n| n < window_cutoff),
            Basis::AfterCreation => created_at < window_cutoff,
        };
        out.push(Due {
            class: DataClass::Audio,
            record_id: id,
            data_key_id: Some(key),
            object: Some(recordings::object_key(tenant, RecordingId::from_uuid(id))),
            created_at,
            policy: audio.clone(),
            rule: if by_window {
                Rule::Window
            } else {
                Rule::AudioCap
            },
            count: 1,
            cutoff: now,
        });
    }

    // Transcripts and notes: the window after creation.
    let transcript = of(DataClass::Transcript);
    let rows: Vec<(Uuid, Uuid, DateTime<Utc>)> = tx
        .query(
            "SELECT id, data_key_id, created_at FROM transcripts
             WHERE tenant_id = $1 AND deleted_at IS NULL AND created_at < $2
             ORDER BY created_at, id",
        )
        .bind(now - hours(transcript.window_hours))
        .fetch_all()
        .await?;
    out.extend(rows.into_iter().map(|(id, key, created_at)| Due {
        class: DataClass::Transcript,
        record_id: id,
        data_key_id: Some(key),
        object: None,
        created_at,
        policy: transcript.clone(),
        rule: Rule::Window,
        count: 1,
        cutoff: now,
    }));
    let note = of(DataClass::Note);
    let rows: Vec<(Uuid, Uuid, DateTime<Utc>)> = tx
        .query(
            "SELECT id, data_key_id, created_at FROM notes
             WHERE tenant_id = $1 AND deleted_at IS NULL AND created_at < $2
             ORDER BY created_at, id",
        )
        .bind(now - hours(note.window_hours))
        .fetch_all()
        .await?;
    out.extend(rows.into_iter().map(|(id, key, created_at)| Due {
        class: DataClass::Note,
        record_id: id,
        data_key_id: Some(key),
        object: None,
        created_at,
        policy: note.clone(),
        rule: Rule::Window,
        count: 1,
        cutoff: now,
    }));

    // End-to-end utterances: one item per session with utterances past the window.
    let utterance = of(DataClass::E2eUtterance);
    let cutoff = now - hours(utterance.window_hours);
    let rows: Vec<(Uuid, i64)> = tx
        .query(
            "SELECT session_id, count(*) FROM e2e_utterances
             WHERE tenant_id = $1 AND created_at < $2 GROUP BY session_id ORDER BY session_id",
        )
        .bind(cutoff)
        .fetch_all()
        .await?;
    for (session, n) in rows {
        // The oldest is read on its own: an aggregate's timestamp does not decode alike
        // on both backends.
        let (oldest,): (DateTime<Utc>,) = tx
            .query(
                "SELECT created_at FROM e2e_utterances
                 WHERE tenant_id = $1 AND session_id = $2 ORDER BY created_at LIMIT 1",
            )
            .bind(session)
            .fetch_one()
            .await?;
        out.push(Due {
            class: DataClass::E2eUtterance,
            record_id: session,
            data_key_id: None,
            object: None,
            created_at: oldest,
            policy: utterance.clone(),
            rule: Rule::Window,
            count: u64::try_from(n).unwrap_or(0),
            cutoff,
        });
    }
    Ok(out)
}

/// Destroys a data key; one already destroyed is fine (the key is gone either way).
async fn destroy_key(
    tx: &mut TenantTx,
    keys: &KeyService,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<()> {
    match keys.destroy_data_key(tx, id, now).await {
        // `destroy_data_key` touches only rows still holding a wrapped key, and the
        // record's foreign key guarantees the row exists: not found means destroyed.
        Ok(()) | Err(CryptoError::KeyNotFound) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes one due item in `tx` and writes its `retention.object.deleted` event there.
/// Returns how many items were deleted: 0 when another sweep got there first (nothing
/// is audited then).
///
/// The order keeps it fail-closed: the row is marked deleted and the data key
/// destroyed in the transaction, then the object is deleted before the caller commits.
/// If the transaction then fails, the object may be gone while the row still says
/// `stored`; the next sweep finds it due again, takes a missing object as deleted, and
/// destroys the key and marks the row.
pub async fn delete(
    tx: &mut TenantTx,
    keys: &KeyService,
    objects: &ObjectStorage,
    auditor: &Auditor,
    due: &Due,
    now: DateTime<Utc>,
) -> Result<u64> {
    let id = due.record_id;
    let deleted = match due.class {
        DataClass::Audio => {
            tx.query(
                "UPDATE recordings SET state = 'deleted', deleted_at = $3
                 WHERE tenant_id = $1 AND id = $2 AND state = 'stored'",
            )
            .bind(id)
            .bind(now)
            .execute()
            .await?
        }
        DataClass::Transcript => {
            tx.query(
                "UPDATE transcripts SET segments = NULL, deleted_at = $3
                 WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute()
            .await?
        }
        DataClass::Note => {
            tx.query(
                "UPDATE notes SET body = NULL, deleted_at = $3
                 WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL",
            )
            .bind(id)
            .bind(now)
            .execute()
            .await?
        }
        DataClass::E2eUtterance => {
            tx.query(
                "DELETE FROM e2e_utterances WHERE tenant_id = $1 AND session_id = $2 AND created_at < $3",
            )
            .bind(id)
            .bind(due.cutoff)
            .execute()
            .await?
        }
    };
    if deleted == 0 {
        return Ok(0);
    }
    if let Some(key) = due.data_key_id {
        destroy_key(tx, keys, key, now).await?;
    }
    let mut reason = due.reason();
    if due.class == DataClass::E2eUtterance && deleted != due.count {
        reason = format!("{reason} listed; {deleted} deleted");
    }
    let event = AuditEvent {
        sequence: 0,
        time: now,
        tenant: Some(tx.tenant()),
        actor: Actor {
            kind: ActorKind::System,
            id: ACTOR_ID.into(),
            role: String::new(),
        },
        source: EventSource::default(),
        action: Action::RetentionObjectDeleted,
        resource: Resource {
            kind: due.class.resource_kind().into(),
            id: id.to_string(),
        },
        fields: due.class.fields().iter().map(|f| f.to_string()).collect(),
        outcome: Outcome::Success,
        reason: Some(reason),
        request_id: String::new(),
        before: None,
        after: None,
    };
    auditor
        .append_in(tx, event)
        .await
        .map_err(|_| DomainError::Refused {
            code: "audit_unavailable",
            message: "the audit trail cannot be written, so nothing was deleted",
        })?;
    if let Some(object) = &due.object {
        match objects.delete(tx.tenant(), object).await {
            Ok(()) | Err(StoreError::ObjectNotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(deleted)
}
