//! Transcripts: one engine's reading of one recording, stored sealed.
//!
//! The segments (times, text and, where the engine gives them, speaker roles) are one
//! JSON document sealed under the transcript's own data key, bound to the tenant, the
//! kind and the transcript's id. The engine and model that produced it are stored
//! beside it in clear, so a reviewer knows what wrote it. One transcript per recording:
//! a retried job finds the row it wrote before.

use chrono::{DateTime, Utc};
use phivault_crypto::Binding;
use phivault_crypto::keys::KeyService;
use phivault_store::{TenantId, TenantTx};
use phivault_transcribe::{Segment, Transcript};
use serde::Serialize;
use uuid::Uuid;

use crate::sealed::{DataKeyColumns, data_key_columns};
use crate::{DomainError, EncounterId, PracticeScope, RecordingId, Result};

/// The data-key kind and binding kind of transcripts.
pub const KIND: &str = "transcript";

fn binding(tenant: TenantId, id: Uuid) -> Binding<'static> {
    Binding {
        tenant,
        kind: KIND,
        object: id,
        field: "segments",
    }
}

/// A transcript's record; `segments` is `None` once retention deleted it.
#[derive(Clone, Serialize)]
pub struct StoredTranscript {
    /// Identifier.
    pub id: Uuid,
    /// The recording it was made from.
    pub recording_id: Uuid,
    /// The encounter.
    pub encounter_id: Uuid,
    /// The practice.
    pub practice_id: Uuid,
    /// The engine that produced it.
    pub engine: String,
    /// The engine's model.
    pub model: String,
    /// How many segments it has.
    pub segment_count: i64,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When retention deleted its content.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The segments (PHI; their text redacts in `Debug`).
    pub segments: Option<Vec<Segment>>,
}

impl std::fmt::Debug for StoredTranscript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTranscript")
            .field("id", &self.id)
            .field("recording_id", &self.recording_id)
            .field("engine", &self.engine)
            .field("segment_count", &self.segment_count)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    recording_id: Uuid,
    encounter_id: Uuid,
    practice_id: Uuid,
    engine: String,
    model: String,
    segment_count: i64,
    created_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    segments: Option<Vec<u8>>,
    #[sqlx(flatten)]
    dk: DataKeyColumns,
}

macro_rules! select_transcripts {
    ($($rest:expr),+ $(,)?) => {
        concat!(
            "SELECT t.id, t.recording_id, t.encounter_id, t.practice_id, t.engine, t.model, t.segment_count,
                    t.created_at, t.deleted_at, t.segments, ",
            data_key_columns!(),
            " FROM transcripts t JOIN data_keys k ON k.tenant_id = t.tenant_id AND k.id = t.data_key_id",
            $($rest),+
        )
    };
}

async fn open(tx: &mut TenantTx, keys: &KeyService, r: Row) -> Result<StoredTranscript> {
    let segments = match &r.segments {
        None => None,
        Some(sealed) => {
            let dk = keys.unwrap_data_key(tx, &r.dk.wrapped()).await?;
            let plain = dk.open(&binding(tx.tenant(), r.id), sealed)?;
            let segments: Vec<Segment> = serde_json::from_slice(&plain)
                .map_err(|_| DomainError::Crypto(phivault_crypto::CryptoError::Decrypt))?;
            Some(segments)
        }
    };
    Ok(StoredTranscript {
        id: r.id,
        recording_id: r.recording_id,
        encounter_id: r.encounter_id,
        practice_id: r.practice_id,
        engine: r.engine,
        model: r.model,
        segment_count: r.segment_count,
        created_at: r.created_at,
        deleted_at: r.deleted_at,
        segments,
    })
}

/// Stores the transcript of `recording`, or returns the id of the one stored before (a
/// retried step). The recording must be stored.
pub async fn save(
    tx: &mut TenantTx,
    keys: &KeyService,
    recording: RecordingId,
    transcript: &Transcript,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    if let Some((id,)) = tx
        .query("SELECT id FROM transcripts WHERE tenant_id = $1 AND recording_id = $2")
        .bind(recording)
        .fetch_optional::<(Uuid,)>()
        .await?
    {
        return Ok(id);
    }
    let id = Uuid::now_v7();
    let dk = keys.new_data_key(tx, KIND, now).await?;
    let json = serde_json::to_vec(&transcript.segments)
        .map_err(|_| DomainError::Crypto(phivault_crypto::CryptoError::Decrypt))?;
    let sealed = dk.seal(&binding(tx.tenant(), id), &json)?;
    let n = tx
        .query(
            "INSERT INTO transcripts (tenant_id, id, recording_id, encounter_id, practice_id, data_key_id, engine,
                                      model, segments, segment_count, created_at)
             SELECT r.tenant_id, $2, r.id, r.encounter_id, r.practice_id, $4, $5, $6, $7, $8, $9
             FROM recordings r WHERE r.tenant_id = $1 AND r.id = $3 AND r.state = 'stored'",
        )
        .bind(id)
        .bind(recording)
        .bind(dk.id)
        .bind(transcript.engine.as_str())
        .bind(transcript.model.as_str())
        .bind(sealed)
        .bind(i64::try_from(transcript.segments.len()).unwrap_or(i64::MAX))
        .bind(now)
        .execute()
        .await?;
    if n != 1 {
        return Err(DomainError::NotFound("recording"));
    }
    Ok(id)
}

/// Loads a transcript with its segments, for the pipeline (no practice scope: the
/// pipeline acts for the tenant).
pub async fn load(tx: &mut TenantTx, keys: &KeyService, id: Uuid) -> Result<StoredTranscript> {
    let row: Option<Row> = tx
        .query(select_transcripts!(" WHERE t.tenant_id = $1 AND t.id = $2"))
        .bind(id)
        .fetch_optional()
        .await?;
    open(tx, keys, row.ok_or(DomainError::NotFound("transcript"))?).await
}

/// One transcript with its segments, if visible in `scope`.
pub async fn get(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    id: Uuid,
) -> Result<StoredTranscript> {
    let row: Option<Row> = tx
        .query(select_transcripts!(
            " WHERE t.tenant_id = $1 AND t.id = $3 AND ",
            in_scope!("t.practice_id")
        ))
        .bind(scope.as_param())
        .bind(id)
        .fetch_optional()
        .await?;
    open(tx, keys, row.ok_or(DomainError::NotFound("transcript"))?).await
}

/// The transcripts of an encounter visible in `scope`, without their segments.
pub async fn for_encounter(
    tx: &mut TenantTx,
    scope: PracticeScope,
    encounter: EncounterId,
) -> Result<Vec<StoredTranscript>> {
    crate::consent::ensure_encounter(tx, scope, encounter).await?;
    let rows: Vec<ListRow> = tx
        .query(
            "SELECT id, recording_id, encounter_id, practice_id, engine, model, segment_count, created_at, deleted_at
             FROM transcripts WHERE tenant_id = $1 AND encounter_id = $2 ORDER BY created_at, id",
        )
        .bind(encounter)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredTranscript {
            id: r.id,
            recording_id: r.recording_id,
            encounter_id: r.encounter_id,
            practice_id: r.practice_id,
            engine: r.engine,
            model: r.model,
            segment_count: r.segment_count,
            created_at: r.created_at,
            deleted_at: r.deleted_at,
            segments: None,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct ListRow {
    id: Uuid,
    recording_id: Uuid,
    encounter_id: Uuid,
    practice_id: Uuid,
    engine: String,
    model: String,
    segment_count: i64,
    created_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
}
