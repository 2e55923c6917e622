//! Recordings: the audio of an encounter, uploaded as a stream, sealed as it arrives.
//!
//! An upload is received in three steps so that a refused one leaves nothing behind:
//! [`prepare`] checks (in a read transaction) that the encounter is visible and has a
//! current consent; [`receive`] streams the body into object storage through the
//! streaming AEAD under a data key that exists only in memory, hashing the plaintext
//! and handing it to an audio prober on a blocking thread as it passes, and aborts the
//! staged object on any failure; [`save`] stores the data key and the row in the
//! caller's transaction (with its audit event and the transcription job). If that
//! transaction fails, [`discard`] deletes the object, which nothing could decrypt anyway.

use std::io::Read;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use phivault_crypto::keys::{DataKey, KeyService};
use phivault_crypto::stream::{DEFAULT_SEGMENT, StreamReader, StreamWriter};
use phivault_crypto::{Binding, KeyRef};
use phivault_store::{ObjectKey, ObjectStorage, TenantId, TenantTx};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

use crate::error::on_write;
use crate::{
    ConsentId, DomainError, EncounterId, PracticeId, PracticeScope, RecordingId, Result, UserId,
    consent,
};

/// The object kind and data-key kind of recordings.
pub const KIND: &str = "recording";

/// Why an upload was refused. Messages name limits and rules, never content.
#[derive(Debug, Error)]
pub enum UploadError {
    /// The body was empty.
    #[error("the upload is empty")]
    Empty,
    /// The body passed the size limit.
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The body's SHA-256 is not the one the client declared.
    #[error("the upload's SHA-256 does not match the declared checksum")]
    ChecksumMismatch,
    /// The audio was refused by the prober.
    #[error("{0}")]
    Audio(AudioRejection),
    /// The client stopped sending before the end of the body.
    #[error("the upload was interrupted before its end")]
    Interrupted,
}

/// What the prober says about a file it refuses.
#[derive(Clone, Debug)]
pub struct AudioRejection {
    /// Stable code, e.g. `unsupported_format`, `corrupt_audio`, `audio_too_long`.
    pub code: &'static str,
    /// For a person; no content.
    pub message: String,
    /// True for a format or codec phivault does not accept (415), false for a broken
    /// file of an accepted one (422).
    pub unsupported: bool,
}

impl std::fmt::Display for AudioRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the prober found in an accepted file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AudioFacts {
    /// Container, e.g. `wav`.
    pub format: String,
    /// Codec, e.g. `pcm_s16le`.
    pub codec: String,
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u32,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

/// Reads a whole audio stream (on a blocking thread) and describes or refuses it.
pub type Prober =
    Box<dyn FnOnce(Box<dyn Read + Send + Sync>) -> Result<AudioFacts, AudioRejection> + Send>;

/// Limits of one upload.
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    /// Largest body, in bytes.
    pub max_bytes: u64,
}

/// Where an upload goes: an encounter visible to the caller, with current consent.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The encounter.
    pub encounter: EncounterId,
    /// Its practice.
    pub practice: PracticeId,
    /// The consent that allows the recording.
    pub consent: ConsentId,
}

/// An upload that was received in full and passed every check, not yet saved.
pub struct Received {
    id: RecordingId,
    key: DataKey,
    sha256: String,
    size: u64,
    facts: AudioFacts,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("id", &self.id)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Received {
    /// The recording's id.
    pub fn id(&self) -> RecordingId {
        self.id
    }
}

/// A stored recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Recording {
    /// Identifier.
    pub id: Uuid,
    /// The encounter.
    pub encounter_id: Uuid,
    /// Its practice.
    pub practice_id: Uuid,
    /// The consent it was made under.
    pub consent_id: Uuid,
    /// Who uploaded it.
    pub created_by: Uuid,
    /// `stored` or `deleted`.
    pub state: String,
    /// Container.
    pub format: Option<String>,
    /// Codec.
    pub codec: Option<String>,
    /// Samples per second.
    pub sample_rate: Option<i64>,
    /// Channels.
    pub channels: Option<i64>,
    /// Duration in milliseconds.
    pub duration_ms: Option<i64>,
    /// Size of the uploaded file in bytes.
    pub size_bytes: Option<i64>,
    /// SHA-256 of the uploaded file, hex.
    pub sha256: Option<String>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When its audio was deleted.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// The object key of a recording's audio.
pub fn object_key(tenant: TenantId, id: RecordingId) -> ObjectKey {
    ObjectKey::new(tenant, KIND, id.as_uuid())
}

fn binding(tenant: TenantId, id: Uuid) -> Binding<'static> {
    Binding {
        tenant,
        kind: KIND,
        object: id,
        field: "audio",
    }
}

/// Checks that `encounter` is visible in `scope` and has current consent to record.
///
/// # Errors
/// `NotFound("encounter")`; `Refused { code: "consent_required" }`.
pub async fn prepare(
    tx: &mut TenantTx,
    scope: PracticeScope,
    encounter: EncounterId,
) -> Result<Target> {
    let found: Option<(Uuid,)> = tx
        .query(concat!(
            "SELECT e.practice_id FROM encounters e WHERE e.tenant_id = $1 AND e.id = $3 AND ",
            in_scope!("e.practice_id")
        ))
        .bind(scope.as_param())
        .bind(encounter)
        .fetch_optional()
        .await?;
    let (practice,) = found.ok_or(DomainError::NotFound("encounter"))?;
    let consent = consent::current(tx, encounter).await?;
    Ok(Target {
        encounter,
        practice: PracticeId::from_uuid(practice),
        consent: consent.id,
    })
}

/// Streams an upload into object storage, sealed as it arrives, checking its size, its
/// SHA-256 against `expected_sha256` and its audio with `probe`. On any failure the
/// staged object is aborted and nothing remains.
pub async fn receive<S, E>(
    keys: &KeyService,
    objects: &ObjectStorage,
    tenant: TenantId,
    body: S,
    expected_sha256: [u8; 32],
    limits: UploadLimits,
    probe: Prober,
) -> Result<Received>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
{
    let id = RecordingId::generate();
    let key = keys.draft_data_key()?;
    let object = object_key(tenant, id);
    let mut writer = objects.writer(&object);
    match stream_in(
        &key,
        id,
        tenant,
        &mut writer,
        body,
        expected_sha256,
        limits,
        probe,
    )
    .await
    {
        Ok((sha256, size, facts)) => Ok(Received {
            id,
            key,
            sha256,
            size,
            facts,
        }),
        Err(e) => {
            // The staged parts go; the object never appeared. A failure to abort leaves
            // parts only the store can see, which its own multipart expiry removes.
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "recording upload: aborting the staged object failed");
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn stream_in<S, E>(
    key: &DataKey,
    id: RecordingId,
    tenant: TenantId,
    writer: &mut phivault_store::ObjectWriter,
    mut body: S,
    expected_sha256: [u8; 32],
    limits: UploadLimits,
    probe: Prober,
) -> Result<(String, u64, AudioFacts)>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin,
{
    let mut sealer = StreamWriter::new(
        &mut *writer,
        key.secret(),
        key.key_ref(),
        &binding(tenant, id.as_uuid()),
        DEFAULT_SEGMENT,
    )
    .await?;
    // The prober reads the plaintext on a blocking thread through a small channel: at
    // most a few chunks are in memory, and a slow prober slows the upload, not memory.
    let (feed, chunks) = tokio::sync::mpsc::channel::<Bytes>(8);
    let prober = tokio::task::spawn_blocking(move || {
        probe(Box::new(ChannelReader {
            chunks,
            current: Bytes::new(),
        }))
    });
    let mut feed = Some(feed);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return Err(DomainError::Upload(UploadError::Interrupted));
        };
        size += chunk.len() as u64;
        if size > limits.max_bytes {
            return Err(DomainError::Upload(UploadError::TooLarge {
                limit: limits.max_bytes,
            }));
        }
        hasher.update(&chunk);
        sealer.write(&chunk).await?;
        // A prober that stopped reading has its answer already; the upload goes on.
        if let Some(f) = &feed
            && f.send(chunk).await.is_err()
        {
            feed = None;
        }
    }
    drop(feed);
    let facts = prober
        .await
        .map_err(|_| DomainError::Upload(UploadError::Interrupted))?;
    if size == 0 {
        return Err(DomainError::Upload(UploadError::Empty));
    }
    let digest: [u8; 32] = hasher.finalize().into();
    if digest != expected_sha256 {
        return Err(DomainError::Upload(UploadError::ChecksumMismatch));
    }
    let facts = facts.map_err(|r| DomainError::Upload(UploadError::Audio(r)))?;
    sealer.finish().await?;
    writer.finish().await?;
    Ok((hex::encode(digest), size, facts))
}

/// A blocking `Read` over chunks sent from the upload task.
struct ChannelReader {
    chunks: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Stores a received upload: its data key and its row, in the caller's transaction.
pub async fn save(
    tx: &mut TenantTx,
    keys: &KeyService,
    target: Target,
    received: &Received,
    by: UserId,
    now: DateTime<Utc>,
) -> Result<Recording> {
    keys.save_data_key(tx, &received.key, KIND, now).await?;
    let f = &received.facts;
    tx.query(
        "INSERT INTO recordings (tenant_id, id, encounter_id, practice_id, consent_id, created_by, data_key_id,
                                 state, format, codec, sample_rate, channels, duration_ms, size_bytes, sha256,
                                 created_at, stored_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'stored', $8, $9, $10, $11, $12, $13, $14, $15, $15)",
    )
    .bind(received.id)
    .bind(target.encounter)
    .bind(target.practice)
    .bind(target.consent)
    .bind(by)
    .bind(received.key.id)
    .bind(f.format.as_str())
    .bind(f.codec.as_str())
    .bind(i64::from(f.sample_rate))
    .bind(i64::from(f.channels))
    .bind(i64::try_from(f.duration_ms).unwrap_or(i64::MAX))
    .bind(i64::try_from(received.size).unwrap_or(i64::MAX))
    .bind(received.sha256.as_str())
    .bind(now)
    .execute()
    .await
    .map_err(on_write("recording"))?;
    Ok(Recording {
        id: received.id.as_uuid(),
        encounter_id: target.encounter.as_uuid(),
        practice_id: target.practice.as_uuid(),
        consent_id: target.consent.as_uuid(),
        created_by: by.as_uuid(),
        state: "stored".into(),
        format: Some(f.format.clone()),
        codec: Some(f.codec.clone()),
        sample_rate: Some(i64::from(f.sample_rate)),
        channels: Some(i64::from(f.channels)),
        duration_ms: i64::try_from(f.duration_ms).ok(),
        size_bytes: i64::try_from(received.size).ok(),
        sha256: Some(received.sha256.clone()),
        created_at: now,
        deleted_at: None,
    })
}

/// Deletes the object of a received upload whose row was never saved.
pub async fn discard(objects: &ObjectStorage, tenant: TenantId, received: &Received) {
    if let Err(e) = objects
        .delete(tenant, &object_key(tenant, received.id))
        .await
    {
        tracing::warn!(error = %e, recording = %received.id, "recording upload: deleting an unsaved object failed");
    }
}

/// One recording, if visible in `scope`.
pub async fn get(tx: &mut TenantTx, scope: PracticeScope, id: RecordingId) -> Result<Recording> {
    let row: Option<Recording> = tx
        .query(concat!(
            "SELECT r.id, r.encounter_id, r.practice_id, r.consent_id, r.created_by, r.state, r.format, r.codec,
                    r.sample_rate, r.channels, r.duration_ms, r.size_bytes, r.sha256, r.created_at, r.deleted_at
             FROM recordings r WHERE r.tenant_id = $1 AND r.id = $3 AND ",
            in_scope!("r.practice_id")
        ))
        .bind(scope.as_param())
        .bind(id)
        .fetch_optional()
        .await?;
    row.ok_or(DomainError::NotFound("recording"))
}

/// The recordings of an encounter visible in `scope`, oldest first.
pub async fn for_encounter(
    tx: &mut TenantTx,
    scope: PracticeScope,
    encounter: EncounterId,
) -> Result<Vec<Recording>> {
    consent::ensure_encounter(tx, scope, encounter).await?;
    Ok(tx
        .query(concat!(
            "SELECT r.id, r.encounter_id, r.practice_id, r.consent_id, r.created_by, r.state, r.format, r.codec,
                    r.sample_rate, r.channels, r.duration_ms, r.size_bytes, r.sha256, r.created_at, r.deleted_at
             FROM recordings r WHERE r.tenant_id = $1 AND r.encounter_id = $3 AND ",
            in_scope!("r.practice_id"),
            " ORDER BY r.created_at, r.id"
        ))
        .bind(scope.as_param())
        .bind(encounter)
        .fetch_all()
        .await?)
}

/// Opens a stored recording's audio for reading, decrypted segment by segment.
pub async fn open_audio(
    tx: &mut TenantTx,
    keys: &KeyService,
    objects: &ObjectStorage,
    id: RecordingId,
) -> Result<StreamReader<impl tokio::io::AsyncRead + Send + Unpin + use<>>> {
    let key_id: Option<(Uuid,)> = tx
        .query("SELECT data_key_id FROM recordings WHERE tenant_id = $1 AND id = $2 AND state = 'stored'")
        .bind(id)
        .fetch_optional()
        .await?;
    let (key_id,) = key_id.ok_or(DomainError::NotFound("recording"))?;
    let key = keys.data_key(tx, key_id).await?;
    let tenant = tx.tenant();
    let reader = objects.reader(tenant, &object_key(tenant, id)).await?;
    let key_ref: KeyRef = key.key_ref();
    Ok(StreamReader::new(
        reader,
        key.secret(),
        key_ref,
        &binding(tenant, id.as_uuid()),
    )
    .await?)
}
