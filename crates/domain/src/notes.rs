//! Clinical notes drafted from transcripts, stored sealed, approved by a clinician.
//!
//! A note is one generator's draft from one transcript (SOAP for clinics, DRAATT for EMS
//! tenants), sealed as one JSON document under its own data key; the generator and model
//! are kept in clear beside it. A draft becomes `approved` when a clinician approves it,
//! once. One note per transcript: a retried job finds the row it wrote before.

use chrono::{DateTime, Utc};
use phivault_crypto::Binding;
use phivault_crypto::keys::KeyService;
use phivault_notes::{Note, NoteKind};
use phivault_store::{TenantId, TenantTx};
use serde::Serialize;
use uuid::Uuid;

use crate::sealed::{DataKeyColumns, data_key_columns};
use crate::{DomainError, EncounterId, PracticeScope, Result, UserId};

/// The data-key kind and binding kind of notes.
pub const KIND: &str = "note";

fn binding(tenant: TenantId, id: Uuid) -> Binding<'static> {
    Binding {
        tenant,
        kind: KIND,
        object: id,
        field: "body",
    }
}

/// The stored name of a note kind.
pub fn kind_name(kind: NoteKind) -> &'static str {
    match kind {
        NoteKind::Soap => "soap",
        NoteKind::Draatt => "draatt",
    }
}

/// The tenant's note kind (`soap` unless it is an EMS tenant set to `draatt`).
pub async fn tenant_kind(tx: &mut TenantTx) -> Result<NoteKind> {
    let kind: Option<(String,)> = tx
        .query("SELECT note_kind FROM tenant_settings WHERE tenant_id = $1")
        .fetch_optional()
        .await?;
    Ok(match kind.as_ref().map(|k| k.0.as_str()) {
        Some("draatt") => NoteKind::Draatt,
        _ => NoteKind::Soap,
    })
}

/// Sets the tenant's note kind: `draatt` for EMS tenants, `soap` otherwise. Notes
/// drafted from then on use it.
pub async fn set_tenant_kind(tx: &mut TenantTx, kind: NoteKind, now: DateTime<Utc>) -> Result<()> {
    let defaults = crate::sessions::SessionPolicy::default();
    tx.query(
        "INSERT INTO tenant_settings (tenant_id, session_idle_secs, session_absolute_secs, note_kind, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET note_kind = excluded.note_kind,
             updated_at = excluded.updated_at",
    )
    .bind(defaults.idle.num_seconds())
    .bind(defaults.absolute.num_seconds())
    .bind(kind_name(kind))
    .bind(now)
    .execute()
    .await?;
    Ok(())
}

/// A note's record; `note` is `None` once retention deleted it (or in lists).
#[derive(Clone, Serialize)]
pub struct StoredNote {
    /// Identifier.
    pub id: Uuid,
    /// The transcript it was drafted from.
    pub transcript_id: Uuid,
    /// The encounter.
    pub encounter_id: Uuid,
    /// The practice.
    pub practice_id: Uuid,
    /// `soap` or `draatt`.
    pub kind: String,
    /// The generator that drafted it.
    pub generator: String,
    /// The generator's model, if any.
    pub model: Option<String>,
    /// `draft` or `approved`.
    pub status: String,
    /// Who approved it.
    pub approved_by: Option<Uuid>,
    /// When.
    pub approved_at: Option<DateTime<Utc>>,
    /// When it was generated.
    pub created_at: DateTime<Utc>,
    /// When retention deleted its content.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The note (PHI; its text redacts in `Debug`).
    pub note: Option<Note>,
}

impl std::fmt::Debug for StoredNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredNote")
            .field("id", &self.id)
            .field("transcript_id", &self.transcript_id)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    transcript_id: Uuid,
    encounter_id: Uuid,
    practice_id: Uuid,
    kind: String,
    generator: String,
    model: Option<String>,
    status: String,
    approved_by: Option<Uuid>,
    approved_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    body: Option<Vec<u8>>,
    #[sqlx(flatten)]
    dk: DataKeyColumns,
}

macro_rules! select_notes {
    ($($rest:expr),+ $(,)?) => {
        concat!(
            "SELECT n.id, n.transcript_id, n.encounter_id, n.practice_id, n.kind, n.generator, n.model, n.status,
                    n.approved_by, n.approved_at, n.created_at, n.deleted_at, n.body, ",
            data_key_columns!(),
            " FROM notes n JOIN data_keys k ON k.tenant_id = n.tenant_id AND k.id = n.data_key_id",
            $($rest),+
        )
    };
}

async fn open(tx: &mut TenantTx, keys: &KeyService, r: Row, with_body: bool) -> Result<StoredNote> {
    let note = match (&r.body, with_body) {
        (Some(sealed), true) => {
            let dk = keys.unwrap_data_key(tx, &r.dk.wrapped()).await?;
            let plain = dk.open(&binding(tx.tenant(), r.id), sealed)?;
            Some(
                serde_json::from_slice(&plain)
                    .map_err(|_| DomainError::Crypto(phivault_crypto::CryptoError::Decrypt))?,
            )
        }
        _ => None,
    };
    Ok(StoredNote {
        id: r.id,
        transcript_id: r.transcript_id,
        encounter_id: r.encounter_id,
        practice_id: r.practice_id,
        kind: r.kind,
        generator: r.generator,
        model: r.model,
        status: r.status,
        approved_by: r.approved_by,
        approved_at: r.approved_at,
        created_at: r.created_at,
        deleted_at: r.deleted_at,
        note,
    })
}

/// Stores the note drafted from `transcript`, or returns the id of the one stored before
/// (a retried step).
pub async fn save(
    tx: &mut TenantTx,
    keys: &KeyService,
    transcript: Uuid,
    note: &Note,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    if let Some((id,)) = tx
        .query("SELECT id FROM notes WHERE tenant_id = $1 AND transcript_id = $2")
        .bind(transcript)
        .fetch_optional::<(Uuid,)>()
        .await?
    {
        return Ok(id);
    }
    let id = Uuid::now_v7();
    let dk = keys.new_data_key(tx, KIND, now).await?;
    let json = serde_json::to_vec(note)
        .map_err(|_| DomainError::Crypto(phivault_crypto::CryptoError::Decrypt))?;
    let sealed = dk.seal(&binding(tx.tenant(), id), &json)?;
    let n = tx
        .query(
            "INSERT INTO notes (tenant_id, id, transcript_id, encounter_id, practice_id, data_key_id, kind,
                                generator, model, body, created_at)
             SELECT t.tenant_id, $2, t.id, t.encounter_id, t.practice_id, $4, $5, $6, $7, $8, $9
             FROM transcripts t WHERE t.tenant_id = $1 AND t.id = $3 AND t.deleted_at IS NULL",
        )
        .bind(id)
        .bind(transcript)
        .bind(dk.id)
        .bind(kind_name(note.kind))
        .bind(note.generator.as_str())
        .bind(note.model.clone())
        .bind(sealed)
        .bind(now)
        .execute()
        .await?;
    if n != 1 {
        return Err(DomainError::NotFound("transcript"));
    }
    Ok(id)
}

/// One note with its content, if visible in `scope`.
pub async fn get(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    id: Uuid,
) -> Result<StoredNote> {
    let row: Option<Row> = tx
        .query(select_notes!(
            " WHERE n.tenant_id = $1 AND n.id = $3 AND ",
            in_scope!("n.practice_id")
        ))
        .bind(scope.as_param())
        .bind(id)
        .fetch_optional()
        .await?;
    open(tx, keys, row.ok_or(DomainError::NotFound("note"))?, true).await
}

/// The notes of an encounter visible in `scope`, without their content.
pub async fn for_encounter(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    encounter: EncounterId,
) -> Result<Vec<StoredNote>> {
    crate::consent::ensure_encounter(tx, scope, encounter).await?;
    let rows: Vec<Row> = tx
        .query(select_notes!(
            " WHERE n.tenant_id = $1 AND n.encounter_id = $2 ORDER BY n.created_at, n.id"
        ))
        .bind(encounter)
        .fetch_all()
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(open(tx, keys, r, false).await?);
    }
    Ok(out)
}

/// The note comes from a recording that `$4` uploaded: `dictation:review_own` is about
/// one's own dictations, so another provider's note is not found.
macro_rules! own_dictation {
    () => {
        "EXISTS (SELECT 1 FROM transcripts t JOIN recordings r
                  ON r.tenant_id = t.tenant_id AND r.id = t.recording_id
                 WHERE t.tenant_id = $1 AND t.id = notes.transcript_id AND r.created_by = $4)"
    };
}

/// Approves a draft note of the caller's own dictation, once.
///
/// # Errors
/// `NotFound("note")` outside `scope` or for another user's dictation; `Refused { code: "note_not_draft" }` if it was
/// approved already or its content was deleted.
pub async fn approve(
    tx: &mut TenantTx,
    scope: PracticeScope,
    id: Uuid,
    by: UserId,
    now: DateTime<Utc>,
) -> Result<()> {
    let n = tx
        .query(concat!(
            "UPDATE notes SET status = 'approved', approved_by = $4, approved_at = $5
             WHERE tenant_id = $1 AND id = $3 AND status = 'draft' AND deleted_at IS NULL AND ",
            in_scope!("practice_id"),
            " AND ",
            own_dictation!()
        ))
        .bind(scope.as_param())
        .bind(id)
        .bind(by)
        .bind(now)
        .execute()
        .await?;
    if n == 1 {
        return Ok(());
    }
    let exists: Option<(Uuid,)> = tx
        .query(concat!(
            "SELECT id FROM notes WHERE tenant_id = $1 AND id = $3 AND ",
            in_scope!("practice_id"),
            " AND ",
            own_dictation!()
        ))
        .bind(scope.as_param())
        .bind(id)
        .bind(by)
        .fetch_optional()
        .await?;
    match exists {
        None => Err(DomainError::NotFound("note")),
        Some(_) => Err(DomainError::Refused {
            code: "note_not_draft",
            message: "only a draft note can be approved, once",
        }),
    }
}
