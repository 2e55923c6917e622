//! The scribe pipeline's job steps: transcribe a stored recording, then draft a note.
//!
//! Each step is a job of the durable queue (`phivault_pipeline`). A step reads what it
//! needs, does its slow work outside any transaction, then writes its output, its audit
//! event, the next job and its own completion in one transaction: a worker killed midway
//! leaves the job to expire and be claimed again, and a step that already wrote its
//! output (unique per source) finds it instead of writing a second.
//!
//! Transcription decrypts the audio into a private 0700 directory, decodes and resamples
//! it to 16 kHz mono there (streaming: a 60-minute visit never sits decoded in memory),
//! runs the engine on that file with the tenant's vocabulary, and overwrites and removes
//! the directory afterwards, also when the step fails. While the engine runs, its
//! progress (milliseconds of audio done, of the total) is written to the job about once a
//! second, so the job state shows how far a long recording got.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use phivault_audit::{Action, Actor, ActorKind, AuditEvent, Auditor, Outcome, Resource, Source};
use phivault_crypto::keys::KeyService;
use phivault_notes::{InputSegment, NoteGenerator, Speaker, TranscriptInput};
use phivault_pipeline::jobs::{self, Claimed};
use phivault_pipeline::worker::{Handler, StepError};
use phivault_store::{Db, ObjectStorage, TenantId, TxMode};
use phivault_transcribe::{PrivateDir, SpeakerRole, TranscribeOptions, Transcriber};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::{DomainError, RecordingId, notes, recordings, transcripts, vendors, vocabulary};

/// The job kind that transcribes a recording (subject: the recording).
pub const TRANSCRIBE: &str = "transcribe";
/// The job kind that drafts a note (subject: the transcript).
pub const GENERATE_NOTE: &str = "generate_note";

/// How often a running transcription's progress is written to its job.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the scribe steps need.
pub struct Scribe {
    /// The key hierarchy.
    pub keys: Arc<KeyService>,
    /// Where the audio is.
    pub objects: ObjectStorage,
    /// The audit trail.
    pub auditor: Auditor,
    /// The transcription engine.
    pub engine: Arc<dyn Transcriber>,
    /// The note generator.
    pub generator: Arc<dyn NoteGenerator>,
    /// The vendor that runs the transcription engine (`None`: it runs on this host).
    pub engine_vendor: Option<String>,
    /// The vendor that runs the note generator (`None`: it runs on this host).
    pub generator_vendor: Option<String>,
    /// Where private work directories are made (the system temporary directory if
    /// `None`; tmpfs or an encrypted volume is best).
    pub work_dir: Option<PathBuf>,
    /// Longest audio transcribed.
    pub max_duration: Duration,
    /// The clock.
    pub clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

/// Enqueues the transcription of a recording, in the caller's transaction (the upload's).
pub async fn enqueue_transcription(
    tx: &mut phivault_store::TenantTx,
    recording: RecordingId,
    now: DateTime<Utc>,
) -> crate::Result<()> {
    jobs::enqueue(tx, TRANSCRIBE, recording.as_uuid(), now)
        .await
        .map_err(pipeline_error)?;
    Ok(())
}

fn pipeline_error(e: phivault_pipeline::PipelineError) -> DomainError {
    match e {
        phivault_pipeline::PipelineError::Store(s) => DomainError::Store(s),
        _ => DomainError::Refused {
            code: "job_refused",
            message: "the job could not be queued",
        },
    }
}

fn system_event(
    now: DateTime<Utc>,
    tenant: TenantId,
    action: Action,
    (kind, id): (&str, Uuid),
    fields: &[&str],
    outcome: Outcome,
    reason: Option<String>,
) -> AuditEvent {
    AuditEvent {
        sequence: 0,
        time: now,
        tenant: Some(tenant),
        actor: Actor {
            kind: ActorKind::System,
            id: "scribe-worker".into(),
            role: String::new(),
        },
        source: Source::default(),
        action,
        resource: Resource {
            kind: kind.into(),
            id: id.to_string(),
        },
        fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        outcome,
        reason,
        request_id: String::new(),
        before: None,
        after: None,
    }
}

/// A domain failure as a job step error: missing records and unreadable content are
/// permanent; storage and key trouble is retried.
fn step_error(e: DomainError) -> StepError {
    match e {
        DomainError::NotFound(_) => StepError::permanent("record_gone"),
        DomainError::Crypto(phivault_crypto::CryptoError::KeyDestroyed) => {
            StepError::permanent("key_destroyed")
        }
        DomainError::Crypto(phivault_crypto::CryptoError::Sealed) => {
            StepError::retryable("keys_sealed")
        }
        DomainError::Crypto(_) => StepError::permanent("decrypt_failed"),
        DomainError::Upload(_) | DomainError::Invalid { .. } | DomainError::Refused { .. } => {
            StepError::permanent("invalid_record")
        }
        DomainError::Conflict(_) | DomainError::Store(_) => StepError::retryable("store_error"),
    }
}

fn transcribe_error(e: phivault_transcribe::Error) -> StepError {
    use phivault_transcribe::Error as E;
    match e {
        E::EngineUnavailable | E::EngineFailed { .. } | E::Io(_) | E::Internal(_) => {
            StepError::retryable(e.code())
        }
        _ => StepError::permanent(e.code()),
    }
}

fn audit_error(_: phivault_audit::AuditError) -> StepError {
    StepError::retryable("audit_unavailable")
}

impl Scribe {
    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Refuses to send a tenant's PHI to `vendor` unless the tenant's registry or the
    /// platform's has it with a BAA on file. Asked before every call, so a BAA removed
    /// while jobs are queued stops the next one. The refusal is audited and permanent.
    async fn clear_vendor(
        &self,
        db: &Db,
        job: &Claimed,
        vendor: &str,
        resource: (&str, Uuid),
    ) -> Result<(), StepError> {
        let store = |_| StepError::retryable("store_error");
        let mut p = db.begin_platform(TxMode::Read).await.map_err(store)?;
        let platform = vendors::list_platform(&mut p).await.map_err(step_error)?;
        p.commit().await.map_err(store)?;
        let mut tx = db
            .begin_tenant(job.tenant, TxMode::Read)
            .await
            .map_err(store)?;
        let own = vendors::list_tenant(&mut tx).await.map_err(step_error)?;
        tx.commit().await.map_err(store)?;
        if vendors::clearance(&platform, &own, vendor).is_ok() {
            return Ok(());
        }
        self.auditor
            .record(system_event(
                self.now(),
                job.tenant,
                Action::AccessDenied,
                resource,
                &[],
                Outcome::Denied,
                Some(format!(
                    "vendor_not_cleared: vendor {vendor} has no BAA on file; nothing was sent"
                )),
            ))
            .await
            .map_err(audit_error)?;
        Err(StepError::permanent("vendor_not_cleared"))
    }

    async fn transcribe(&self, db: &Db, job: &Claimed) -> Result<(), StepError> {
        let tenant = job.tenant;
        let recording = RecordingId::from_uuid(job.job.subject);
        if let Some(vendor) = &self.engine_vendor {
            self.clear_vendor(db, job, vendor, ("recording", recording.as_uuid()))
                .await?;
        }
        self.auditor
            .record(system_event(
                self.now(),
                tenant,
                Action::TranscriptionStarted,
                ("recording", recording.as_uuid()),
                &["audio"],
                Outcome::Success,
                Some(format!("job {} attempt {}", job.job.id, job.job.attempts)),
            ))
            .await
            .map_err(audit_error)?;

        let dir = PrivateDir::create(self.work_dir.as_deref()).map_err(transcribe_error)?;
        let result = self.transcribe_in(db, job, recording, &dir).await;
        dir.wipe().await;
        let transcript = result?;

        let now = self.now();
        let mut tx = db
            .begin_tenant(tenant, TxMode::Write)
            .await
            .map_err(|_| StepError::retryable("store_error"))?;
        let id = transcripts::save(&mut tx, &self.keys, recording, &transcript, now)
            .await
            .map_err(step_error)?;
        let event = system_event(
            now,
            tenant,
            Action::TranscriptionCompleted,
            ("transcript", id),
            &["segments"],
            Outcome::Success,
            Some(format!(
                "recording {recording} by {} ({})",
                transcript.engine, transcript.model
            )),
        );
        self.auditor
            .append_in(&mut tx, event)
            .await
            .map_err(audit_error)?;
        jobs::enqueue(&mut tx, GENERATE_NOTE, id, now).await?;
        jobs::complete_in(&mut tx, job, now).await?;
        tx.commit()
            .await
            .map_err(|_| StepError::retryable("store_error"))?;
        Ok(())
    }

    async fn transcribe_in(
        &self,
        db: &Db,
        job: &Claimed,
        recording: RecordingId,
        dir: &PrivateDir,
    ) -> Result<phivault_transcribe::Transcript, StepError> {
        let tenant = job.tenant;
        let original = dir.path().join("audio");
        let wav = dir.path().join("audio-16k.wav");
        let terms = {
            let mut tx = db
                .begin_tenant(tenant, TxMode::Read)
                .await
                .map_err(|_| StepError::retryable("store_error"))?;
            let terms = vocabulary::get(&mut tx).await.map_err(step_error)?;
            let mut reader = recordings::open_audio(&mut tx, &self.keys, &self.objects, recording)
                .await
                .map_err(step_error)?;
            tx.commit()
                .await
                .map_err(|_| StepError::retryable("store_error"))?;
            let mut file = private_file(&original)
                .await
                .map_err(|_| StepError::retryable("work_dir"))?;
            while let Some(chunk) = reader
                .next_chunk()
                .await
                .map_err(|_| StepError::permanent("audio_unreadable"))?
            {
                file.write_all(&chunk)
                    .await
                    .map_err(|_| StepError::retryable("work_dir"))?;
            }
            file.flush()
                .await
                .map_err(|_| StepError::retryable("work_dir"))?;
            terms
        };
        let (from, to, max) = (original.clone(), wav.clone(), self.max_duration);
        let samples = tokio::task::spawn_blocking(move || {
            phivault_transcribe::decode_to_wav_16k(&from, &to, max)
        })
        .await
        .map_err(|_| StepError::retryable("internal_error"))?
        .map_err(transcribe_error)?;
        let total_ms = samples * 1000 / u64::from(phivault_transcribe::TARGET_RATE);

        // The engine reports into two counters; this task writes them to the job while
        // it runs. A lost write is only a stale figure, so errors are not fatal here.
        let done = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(total_ms));
        let options = TranscribeOptions {
            vocabulary: terms,
            progress: Some({
                let (done, total) = (done.clone(), total.clone());
                Arc::new(move |d, t| {
                    done.store(d, Ordering::Relaxed);
                    total.store(t, Ordering::Relaxed);
                })
            }),
        };
        let engine = self.engine.transcribe_with(&wav, &options);
        tokio::pin!(engine);
        let mut written = None;
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        let transcript = loop {
            tokio::select! {
                result = &mut engine => break result,
                _ = tick.tick() => {
                    let now = (done.load(Ordering::Relaxed), total.load(Ordering::Relaxed));
                    if written != Some(now)
                        && jobs::report_progress(db, job, now.0, now.1, self.now()).await.is_ok()
                    {
                        written = Some(now);
                    }
                }
            }
        };
        let transcript = transcript.map_err(transcribe_error)?;
        if written != Some((total_ms, total_ms)) {
            let _ = jobs::report_progress(db, job, total_ms, total_ms, self.now()).await;
        }
        Ok(transcript)
    }

    async fn generate_note(&self, db: &Db, job: &Claimed) -> Result<(), StepError> {
        let tenant = job.tenant;
        let transcript_id = job.job.subject;
        let (transcript, kind) = {
            let mut tx = db
                .begin_tenant(tenant, TxMode::Read)
                .await
                .map_err(|_| StepError::retryable("store_error"))?;
            let t = transcripts::load(&mut tx, &self.keys, transcript_id)
                .await
                .map_err(step_error)?;
            let kind = notes::tenant_kind(&mut tx).await.map_err(step_error)?;
            tx.commit()
                .await
                .map_err(|_| StepError::retryable("store_error"))?;
            (t, kind)
        };
        let segments = transcript
            .segments
            .ok_or_else(|| StepError::permanent("transcript_deleted"))?;
        let input = TranscriptInput {
            segments: segments
                .into_iter()
                .map(|s| InputSegment {
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                    text: phivault_notes::PhiText::new(s.text.expose().to_owned()),
                    speaker: s.speaker.map(|r| match r {
                        SpeakerRole::Clinician => Speaker::Clinician,
                        SpeakerRole::Patient => Speaker::Patient,
                        SpeakerRole::Other => Speaker::Other,
                    }),
                })
                .collect(),
        };
        if let Some(vendor) = &self.generator_vendor {
            self.clear_vendor(db, job, vendor, ("transcript", transcript_id))
                .await?;
        }
        let note = self.generator.generate(kind, &input).await.map_err(|e| {
            let code = e.code();
            match code {
                "generator_unavailable" | "generator_timeout" | "generation_cancelled" => {
                    StepError::retryable(code)
                }
                _ => StepError::permanent(code),
            }
        })?;
        let now = self.now();
        let mut tx = db
            .begin_tenant(tenant, TxMode::Write)
            .await
            .map_err(|_| StepError::retryable("store_error"))?;
        let id = notes::save(&mut tx, &self.keys, transcript_id, &note, now)
            .await
            .map_err(step_error)?;
        let event = system_event(
            now,
            tenant,
            Action::NoteGenerated,
            ("note", id),
            &["body"],
            Outcome::Success,
            Some(format!(
                "{} note from transcript {transcript_id} by {}",
                notes::kind_name(kind),
                note.generator
            )),
        );
        self.auditor
            .append_in(&mut tx, event)
            .await
            .map_err(audit_error)?;
        jobs::complete_in(&mut tx, job, now).await?;
        tx.commit()
            .await
            .map_err(|_| StepError::retryable("store_error"))?;
        Ok(())
    }
}

/// Creates a file only this user can read.
async fn private_file(path: &std::path::Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

#[async_trait]
impl Handler for Scribe {
    fn kinds(&self) -> &[&'static str] {
        &[TRANSCRIBE, GENERATE_NOTE]
    }

    async fn run(&self, db: &Db, job: &Claimed) -> Result<(), StepError> {
        match job.job.kind.as_str() {
            TRANSCRIBE => self.transcribe(db, job).await,
            GENERATE_NOTE => self.generate_note(db, job).await,
            _ => Err(StepError::permanent("unknown_job_kind")),
        }
    }
}
