//! Consent to record, tenant consent texts, and recordings (the streaming upload).

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use phivault_access::Actor;
use phivault_audit::Action;
use phivault_domain::consent::{self, Consent, ConsentText, Method, NewConsent};
use phivault_domain::recordings::{self, Recording, UploadLimits};
use phivault_domain::{ConsentId, ConsentTextId, EncounterId, RecordingId};
use phivault_domain::{notes, scribe, transcripts, vocabulary};
use phivault_store::TxMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::extract::{ApiJson, ApiPath, Scoped, need};
use crate::{ApiError, AppState};

/// Routes with the ordinary body limit and timeout.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/consents",
            get(list_consents).post(record_consent),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/consents/{consent_id}/revoke",
            post(revoke_consent),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/consent-texts",
            get(list_consent_texts).post(add_consent_text),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/consent-texts/{text_id}/retire",
            post(retire_consent_text),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/recordings",
            get(list_recordings),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/recordings/{recording_id}",
            get(get_recording),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/recordings/{recording_id}/jobs",
            get(recording_jobs),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/transcripts",
            get(list_transcripts),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/transcripts/{transcript_id}",
            get(get_transcript),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/notes",
            get(list_notes),
        )
        .route("/api/v1/tenants/{tenant_id}/notes/{note_id}", get(get_note))
        .route(
            "/api/v1/tenants/{tenant_id}/settings/notes",
            get(get_note_settings).put(put_note_settings),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/settings/vocabulary",
            get(get_vocabulary).put(put_vocabulary),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/notes/{note_id}/approve",
            post(approve_note),
        )
}

/// The upload route: its own body limit (the upload limit) and timeout, set in `layers`.
pub(crate) fn uploads() -> Router<AppState> {
    Router::new().route(
        "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/recordings",
        post(upload_recording),
    )
}

/// The OpenAPI description of these routes.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(
            record_consent,
            list_consents,
            revoke_consent,
            add_consent_text,
            list_consent_texts,
            retire_consent_text,
            upload_recording,
            list_recordings,
            get_recording,
            recording_jobs,
            list_transcripts,
            get_transcript,
            list_notes,
            get_note,
            approve_note,
            get_note_settings,
            put_note_settings,
            get_vocabulary,
            put_vocabulary
        ),
        components(schemas(
            ConsentView,
            NewConsentBody,
            ConsentTextView,
            NewConsentText,
            RecordingView,
            JobView,
            JobProgress,
            TranscriptView,
            SegmentView,
            NoteView,
            NoteSectionView,
            NoteSettingsView,
            VocabularyView
        ))
    )]
    struct Api;
    <Api as utoipa::OpenApi>::openapi()
}

#[derive(Deserialize)]
pub(crate) struct EncounterPath {
    encounter_id: Uuid,
}

#[derive(Deserialize)]
pub(crate) struct ConsentPath {
    encounter_id: Uuid,
    consent_id: Uuid,
}

#[derive(Deserialize)]
pub(crate) struct TextPath {
    text_id: Uuid,
}

#[derive(Deserialize)]
pub(crate) struct RecordingPath {
    recording_id: Uuid,
}

/// A consent record (no PHI: how, where, which text, who, when).
#[derive(Serialize, ToSchema)]
pub(crate) struct ConsentView {
    id: Uuid,
    encounter_id: Uuid,
    /// `verbal`, `written` or `in_app`.
    method: String,
    /// `US-XX` or a two-letter country code.
    jurisdiction: String,
    /// Whether the jurisdiction needs every party's consent (see docs/consent.md).
    all_party_required: bool,
    all_parties_consented: bool,
    consent_text_id: Option<Uuid>,
    consent_text_version: String,
    documented_by: Uuid,
    obtained_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<Consent> for ConsentView {
    fn from(c: Consent) -> Self {
        ConsentView {
            id: c.id.as_uuid(),
            encounter_id: c.encounter_id.as_uuid(),
            method: c.method.as_str().into(),
            jurisdiction: c.jurisdiction,
            all_party_required: c.all_party_required,
            all_parties_consented: c.all_parties_consented,
            consent_text_id: c.consent_text_id.map(|t| t.as_uuid()),
            consent_text_version: c.consent_text_version,
            documented_by: c.documented_by.as_uuid(),
            obtained_at: c.obtained_at,
            created_at: c.created_at,
            revoked_at: c.revoked_at,
        }
    }
}

/// Consent to document; the caller is who documented it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewConsentBody {
    /// `verbal`, `written` or `in_app`.
    method: String,
    /// `US-XX` for a US state, or a two-letter country code.
    jurisdiction: String,
    /// Whether every party to the conversation consented; required true where the
    /// jurisdiction needs it.
    #[serde(default)]
    all_parties_consented: bool,
    /// The tenant's consent text shown; the built-in text if omitted.
    consent_text_id: Option<Uuid>,
    /// When consent was given; now if omitted.
    obtained_at: Option<DateTime<Utc>>,
}

const CONSENT_FIELDS: &[&str] = &[
    "method",
    "jurisdiction",
    "all_parties_consented",
    "consent_text_version",
];

fn user(s: &Scoped<impl crate::extract::Requires>) -> Result<phivault_domain::UserId, ApiError> {
    match s.scope.actor() {
        Actor::User(u) => Ok(u),
        _ => Err(ApiError::internal()),
    }
}

/// Documents consent to record an encounter.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/consents", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("encounter_id" = Uuid, Path)), request_body = NewConsentBody,
    responses((status = 201, body = ConsentView), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn record_consent(
    State(st): State<AppState>,
    s: Scoped<need::RecordingCreate>,
    ApiPath(path): ApiPath<EncounterPath>,
    ApiJson(body): ApiJson<NewConsentBody>,
) -> Result<(StatusCode, Json<ConsentView>), ApiError> {
    let by = user(&s)?;
    let new = NewConsent {
        method: Method::parse(&body.method)?,
        jurisdiction: body.jurisdiction,
        all_parties_consented: body.all_parties_consented,
        consent_text_id: body.consent_text_id.map(ConsentTextId::from_uuid),
        obtained_at: body.obtained_at,
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let c = consent::record(
        &mut tx,
        s.scope.practices(),
        EncounterId::from_uuid(path.encounter_id),
        by,
        new,
        st.now(),
    )
    .await?;
    let event = s
        .audit
        .event(&st, Action::PhiCreate, "consent", c.id, CONSENT_FIELDS);
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(c.into())))
}

/// The consent records of an encounter, oldest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/consents", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("encounter_id" = Uuid, Path)),
    responses((status = 200, body = Vec<ConsentView>), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_consents(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiPath(path): ApiPath<EncounterPath>,
) -> Result<Json<Vec<ConsentView>>, ApiError> {
    let encounter = EncounterId::from_uuid(path.encounter_id);
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let list = consent::list(&mut tx, s.scope.practices(), encounter).await?;
    tx.commit().await?;
    let event = s.audit.event(
        &st,
        Action::PhiRead,
        "encounter_consents",
        encounter,
        CONSENT_FIELDS,
    );
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(list.into_iter().map(ConsentView::from).collect()))
}

/// Withdraws a consent record: new recordings need new consent.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/consents/{consent_id}/revoke", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("encounter_id" = Uuid, Path), ("consent_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn revoke_consent(
    State(st): State<AppState>,
    s: Scoped<need::RecordingCreate>,
    ApiPath(path): ApiPath<ConsentPath>,
) -> Result<StatusCode, ApiError> {
    let by = user(&s)?;
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    consent::revoke(
        &mut tx,
        s.scope.practices(),
        EncounterId::from_uuid(path.encounter_id),
        ConsentId::from_uuid(path.consent_id),
        by,
        st.now(),
    )
    .await?;
    let event = s.audit.event(
        &st,
        Action::PhiUpdate,
        "consent",
        path.consent_id,
        &["revoked_at"],
    );
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tenant consent text (not PHI).
#[derive(Serialize, ToSchema)]
pub(crate) struct ConsentTextView {
    id: Uuid,
    name: String,
    version: String,
    language: String,
    body: String,
    created_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
}

impl From<ConsentText> for ConsentTextView {
    fn from(t: ConsentText) -> Self {
        ConsentTextView {
            id: t.id,
            name: t.name,
            version: t.version,
            language: t.language,
            body: t.body,
            created_at: t.created_at,
            retired_at: t.retired_at,
        }
    }
}

/// A new version of a consent text.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewConsentText {
    /// Up to 100 characters.
    name: String,
    /// Up to 40 characters; a name and version pair is unique.
    version: String,
    /// A language tag such as `en` or `es-MX`.
    language: String,
    /// What the patient is shown, up to 20000 characters.
    body: String,
}

/// Adds a version of a consent text.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/consent-texts", tag = "scribe",
    params(("tenant_id" = Uuid, Path)), request_body = NewConsentText,
    responses((status = 201, body = ConsentTextView), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn add_consent_text(
    State(st): State<AppState>,
    s: Scoped<need::ManageTemplates>,
    ApiJson(body): ApiJson<NewConsentText>,
) -> Result<(StatusCode, Json<ConsentTextView>), ApiError> {
    let by = user(&s)?;
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let text = consent::add_text(
        &mut tx,
        &body.name,
        &body.version,
        &body.language,
        &body.body,
        by,
        st.now(),
    )
    .await?;
    let event = s.audit.event(
        &st,
        Action::AdminReferenceUpdated,
        "consent_text",
        text.id,
        &["name", "version", "language", "body"],
    );
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(text.into())))
}

/// The tenant's consent texts, current and retired.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/consent-texts", tag = "scribe",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = Vec<ConsentTextView>)),
    security(("bearer" = [])))]
pub(crate) async fn list_consent_texts(
    State(st): State<AppState>,
    // Reference data every member of the tenant may see, like its practices.
    s: Scoped<need::PracticeRead>,
) -> Result<Json<Vec<ConsentTextView>>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let list = consent::texts(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(list.into_iter().map(ConsentTextView::from).collect()))
}

/// Retires a consent text: consent can no longer be documented against it.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/consent-texts/{text_id}/retire", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("text_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn retire_consent_text(
    State(st): State<AppState>,
    s: Scoped<need::ManageTemplates>,
    ApiPath(path): ApiPath<TextPath>,
) -> Result<StatusCode, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    consent::retire_text(&mut tx, ConsentTextId::from_uuid(path.text_id), st.now()).await?;
    let event = s.audit.event(
        &st,
        Action::AdminReferenceUpdated,
        "consent_text",
        path.text_id,
        &["retired_at"],
    );
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A stored recording (its metadata; the audio is never served back).
#[derive(Serialize, ToSchema)]
pub(crate) struct RecordingView {
    id: Uuid,
    encounter_id: Uuid,
    practice_id: Uuid,
    consent_id: Uuid,
    created_by: Uuid,
    /// `stored`, or `deleted` once retention removed the audio.
    state: String,
    format: Option<String>,
    codec: Option<String>,
    sample_rate: Option<i64>,
    channels: Option<i64>,
    duration_ms: Option<i64>,
    size_bytes: Option<i64>,
    /// SHA-256 of the uploaded file, hex.
    sha256: Option<String>,
    created_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
}

impl From<Recording> for RecordingView {
    fn from(r: Recording) -> Self {
        RecordingView {
            id: r.id,
            encounter_id: r.encounter_id,
            practice_id: r.practice_id,
            consent_id: r.consent_id,
            created_by: r.created_by,
            state: r.state,
            format: r.format,
            codec: r.codec,
            sample_rate: r.sample_rate,
            channels: r.channels,
            duration_ms: r.duration_ms,
            size_bytes: r.size_bytes,
            sha256: r.sha256,
            created_at: r.created_at,
            deleted_at: r.deleted_at,
        }
    }
}

const RECORDING_FIELDS: &[&str] = &["audio"];
const RECORDING_META_FIELDS: &[&str] = &["duration_ms", "size_bytes", "sha256"];

/// The request header carrying the client's SHA-256 of the body, hex.
const CHECKSUM_HEADER: &str = "x-content-sha256";

fn expected_checksum(headers: &HeaderMap) -> Result<[u8; 32], ApiError> {
    let value = headers.get(CHECKSUM_HEADER).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "checksum_required",
            "send the body's SHA-256 in the X-Content-SHA256 header (64 hex digits)",
        )
    })?;
    let mut out = [0u8; 32];
    value
        .to_str()
        .ok()
        .filter(|v| v.len() == 64)
        .and_then(|v| hex::decode_to_slice(v, &mut out).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_checksum",
                "X-Content-SHA256 must be 64 hex digits",
            )
        })?;
    Ok(out)
}

/// Uploads the audio of an encounter as the request body (any length, chunked or not),
/// with its SHA-256 in `X-Content-SHA256`. The audio is sealed as it arrives and never
/// held whole; WAV, FLAC, Ogg Vorbis, MP3 and MP4/M4A (AAC, index first: "fast start")
/// are accepted. A refused upload leaves no object and no row. Clients should send
/// `Expect: 100-continue`: refusals that need no body (authorization, consent, checksum
/// header, declared length) are then answered before the body is sent.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/recordings", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("encounter_id" = Uuid, Path),
           ("X-Content-SHA256" = String, Header, description = "SHA-256 of the body, hex")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = RecordingView),
              (status = 400, description = "checksum_required, invalid_checksum, upload_interrupted", body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "consent_required", body = crate::error::ErrorBody),
              (status = 413, description = "too_large", body = crate::error::ErrorBody),
              (status = 415, description = "unsupported_format, unsupported_codec", body = crate::error::ErrorBody),
              (status = 422, description = "checksum_mismatch, corrupt_audio, empty_audio, audio_too_long", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn upload_recording(
    State(st): State<AppState>,
    s: Scoped<need::RecordingCreate>,
    ApiPath(path): ApiPath<EncounterPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<RecordingView>), ApiError> {
    let by = user(&s)?;
    let expected = expected_checksum(&headers)?;
    let limits = UploadLimits {
        max_bytes: st.http.upload_limit,
    };
    // A declared length over the limit is refused before a byte is read; a chunked body
    // is counted as it arrives.
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes) {
        return Err(phivault_domain::DomainError::Upload(
            phivault_domain::recordings::UploadError::TooLarge {
                limit: limits.max_bytes,
            },
        )
        .into());
    }
    let tenant = s.scope.tenant();
    // Consent and visibility first: a refused upload reads no body.
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let target = recordings::prepare(
        &mut tx,
        s.scope.practices(),
        EncounterId::from_uuid(path.encounter_id),
    )
    .await?;
    tx.commit().await?;
    let received = recordings::receive(
        &st.keys,
        &st.objects,
        tenant,
        body.into_data_stream(),
        expected,
        limits,
        st.prober(),
    )
    .await?;
    let saved = async {
        let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
        let rec = recordings::save(&mut tx, &st.keys, target, &received, by, st.now()).await?;
        let event = s.audit.event(
            &st,
            Action::RecordingCreated,
            "recording",
            rec.id,
            RECORDING_FIELDS,
        );
        s.audit.append_in(&st, &mut tx, event).await?;
        // The transcription job commits with the recording: no recording without its job.
        scribe::enqueue_transcription(&mut tx, received.id(), st.now()).await?;
        tx.commit().await?;
        st.wake_workers();
        Ok::<_, ApiError>(rec)
    }
    .await;
    match saved {
        Ok(rec) => Ok((StatusCode::CREATED, Json(rec.into()))),
        Err(e) => {
            recordings::discard(&st.objects, tenant, &received).await;
            Err(e)
        }
    }
}

/// The recordings of an encounter.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/recordings", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("encounter_id" = Uuid, Path)),
    responses((status = 200, body = Vec<RecordingView>)),
    security(("bearer" = [])))]
pub(crate) async fn list_recordings(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiPath(path): ApiPath<EncounterPath>,
) -> Result<Json<Vec<RecordingView>>, ApiError> {
    let encounter = EncounterId::from_uuid(path.encounter_id);
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let list = recordings::for_encounter(&mut tx, s.scope.practices(), encounter).await?;
    tx.commit().await?;
    let event = s.audit.event(
        &st,
        Action::PhiRead,
        "encounter_recordings",
        encounter,
        RECORDING_META_FIELDS,
    );
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(list.into_iter().map(RecordingView::from).collect()))
}

/// One recording's metadata.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/recordings/{recording_id}", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("recording_id" = Uuid, Path)),
    responses((status = 200, body = RecordingView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_recording(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiPath(path): ApiPath<RecordingPath>,
) -> Result<Json<RecordingView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let rec = recordings::get(
        &mut tx,
        s.scope.practices(),
        RecordingId::from_uuid(path.recording_id),
    )
    .await?;
    tx.commit().await?;
    let event = s.audit.event(
        &st,
        Action::PhiRead,
        "recording",
        rec.id,
        RECORDING_META_FIELDS,
    );
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(rec.into()))
}

#[derive(Deserialize)]
pub(crate) struct TranscriptPath {
    transcript_id: Uuid,
}

#[derive(Deserialize)]
pub(crate) struct NotePath {
    note_id: Uuid,
}

/// A pipeline job (no PHI: ids, kind, state, attempts, error code).
#[derive(Serialize, ToSchema)]
pub(crate) struct JobView {
    id: Uuid,
    /// `transcribe` or `generate_note`.
    kind: String,
    /// The recording (transcribe) or transcript (generate_note) it works on.
    subject_id: Uuid,
    /// `queued`, `running`, `succeeded` or `failed`.
    state: String,
    attempts: u32,
    max_attempts: u32,
    run_after: DateTime<Utc>,
    /// The stable code of the last failure, if any.
    last_error_code: Option<String>,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    /// How far the current (or last) attempt got, once its step reported.
    progress: Option<JobProgress>,
}

/// A running step's progress through the recording.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobProgress {
    /// Milliseconds of audio done.
    done_ms: u64,
    /// Milliseconds of audio in all.
    total_ms: u64,
}

impl From<phivault_pipeline::jobs::Job> for JobView {
    fn from(j: phivault_pipeline::jobs::Job) -> Self {
        JobView {
            id: j.id,
            kind: j.kind,
            subject_id: j.subject,
            state: j.state.as_str().into(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            run_after: j.run_after,
            last_error_code: j.last_error_code,
            created_at: j.created_at,
            finished_at: j.finished_at,
            progress: j
                .progress_ms
                .map(|(done_ms, total_ms)| JobProgress { done_ms, total_ms }),
        }
    }
}

/// The pipeline jobs of a recording and of its transcript, oldest first.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/recordings/{recording_id}/jobs", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("recording_id" = Uuid, Path)),
    responses((status = 200, body = Vec<JobView>), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn recording_jobs(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiPath(path): ApiPath<RecordingPath>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let rec = recordings::get(
        &mut tx,
        s.scope.practices(),
        RecordingId::from_uuid(path.recording_id),
    )
    .await?;
    let mut jobs = phivault_pipeline::jobs::for_subject(&mut tx, rec.id)
        .await
        .map_err(|_| ApiError::internal())?;
    let of_recording: Vec<Uuid> = transcripts::for_encounter(
        &mut tx,
        s.scope.practices(),
        EncounterId::from_uuid(rec.encounter_id),
    )
    .await?
    .into_iter()
    .filter(|t| t.recording_id == rec.id)
    .map(|t| t.id)
    .collect();
    for t in of_recording {
        jobs.extend(
            phivault_pipeline::jobs::for_subject(&mut tx, t)
                .await
                .map_err(|_| ApiError::internal())?,
        );
    }
    tx.commit().await?;
    jobs.sort_by_key(|j| (j.created_at, j.id));
    let event = s
        .audit
        .event(&st, Action::PhiRead, "recording_jobs", rec.id, &[]);
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(jobs.into_iter().map(JobView::from).collect()))
}

/// A transcript segment (PHI).
#[derive(Serialize, ToSchema)]
pub(crate) struct SegmentView {
    start_ms: u64,
    end_ms: u64,
    text: String,
    /// `clinician`, `patient` or `other`, where the engine tells.
    speaker: Option<String>,
}

/// A transcript: which engine and model made it, and its segments (PHI) when one is
/// asked for by id.
#[derive(Serialize, ToSchema)]
pub(crate) struct TranscriptView {
    id: Uuid,
    recording_id: Uuid,
    encounter_id: Uuid,
    engine: String,
    model: String,
    segment_count: i64,
    created_at: DateTime<Utc>,
    /// Set once retention deleted the content.
    deleted_at: Option<DateTime<Utc>>,
    segments: Option<Vec<SegmentView>>,
}

impl From<transcripts::StoredTranscript> for TranscriptView {
    fn from(t: transcripts::StoredTranscript) -> Self {
        TranscriptView {
            id: t.id,
            recording_id: t.recording_id,
            encounter_id: t.encounter_id,
            engine: t.engine,
            model: t.model,
            segment_count: t.segment_count,
            created_at: t.created_at,
            deleted_at: t.deleted_at,
            segments: t.segments.map(|segments| {
                segments
                    .into_iter()
                    .map(|s| SegmentView {
                        start_ms: s.start_ms,
                        end_ms: s.end_ms,
                        text: s.text.expose().to_owned(),
                        speaker: s.speaker.map(|r| {
                            match r {
                                phivault_transcribe::SpeakerRole::Clinician => "clinician",
                                phivault_transcribe::SpeakerRole::Patient => "patient",
                                phivault_transcribe::SpeakerRole::Other => "other",
                            }
                            .to_owned()
                        }),
                    })
                    .collect()
            }),
        }
    }
}

/// The transcripts of an encounter (without segments).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/transcripts", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("encounter_id" = Uuid, Path)),
    responses((status = 200, body = Vec<TranscriptView>), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_transcripts(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiPath(path): ApiPath<EncounterPath>,
) -> Result<Json<Vec<TranscriptView>>, ApiError> {
    let encounter = EncounterId::from_uuid(path.encounter_id);
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let list = transcripts::for_encounter(&mut tx, s.scope.practices(), encounter).await?;
    tx.commit().await?;
    let event = s.audit.event(
        &st,
        Action::PhiRead,
        "encounter_transcripts",
        encounter,
        &["engine", "model", "segment_count"],
    );
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(list.into_iter().map(TranscriptView::from).collect()))
}

/// One transcript with its segments.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/transcripts/{transcript_id}", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("transcript_id" = Uuid, Path)),
    responses((status = 200, body = TranscriptView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_transcript(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiPath(path): ApiPath<TranscriptPath>,
) -> Result<Json<TranscriptView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let t = transcripts::get(&mut tx, &st.keys, s.scope.practices(), path.transcript_id).await?;
    tx.commit().await?;
    let event = s
        .audit
        .event(&st, Action::PhiRead, "transcript", t.id, &["segments"]);
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(t.into()))
}

/// One section of a note (PHI).
#[derive(Serialize, ToSchema)]
pub(crate) struct NoteSectionView {
    /// The section's heading, e.g. `Subjective` or `Transport`.
    heading: String,
    text: String,
    /// Indexes of the transcript segments it came from.
    sources: Vec<usize>,
}

/// A note: its generator and status, and its sections (PHI) when one is asked for by id.
#[derive(Serialize, ToSchema)]
pub(crate) struct NoteView {
    id: Uuid,
    transcript_id: Uuid,
    encounter_id: Uuid,
    /// `soap` or `draatt`.
    kind: String,
    generator: String,
    model: Option<String>,
    /// `draft` or `approved`.
    status: String,
    approved_by: Option<Uuid>,
    approved_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    sections: Option<Vec<NoteSectionView>>,
    /// The whole note as plain text, for copying into an EHR.
    text: Option<String>,
}

impl From<notes::StoredNote> for NoteView {
    fn from(n: notes::StoredNote) -> Self {
        let text = n
            .note
            .as_ref()
            .map(|note| note.render_text().expose().to_owned());
        NoteView {
            id: n.id,
            transcript_id: n.transcript_id,
            encounter_id: n.encounter_id,
            kind: n.kind,
            generator: n.generator,
            model: n.model,
            status: n.status,
            approved_by: n.approved_by,
            approved_at: n.approved_at,
            created_at: n.created_at,
            deleted_at: n.deleted_at,
            sections: n.note.map(|note| {
                note.sections
                    .into_iter()
                    .map(|s| NoteSectionView {
                        heading: s.heading.to_string(),
                        text: s.text.expose().to_owned(),
                        sources: s.sources,
                    })
                    .collect()
            }),
            text,
        }
    }
}

/// The notes of an encounter (without content).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/notes", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("encounter_id" = Uuid, Path)),
    responses((status = 200, body = Vec<NoteView>), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_notes(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiPath(path): ApiPath<EncounterPath>,
) -> Result<Json<Vec<NoteView>>, ApiError> {
    let encounter = EncounterId::from_uuid(path.encounter_id);
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let list = notes::for_encounter(&mut tx, &st.keys, s.scope.practices(), encounter).await?;
    tx.commit().await?;
    let event = s.audit.event(
        &st,
        Action::PhiRead,
        "encounter_notes",
        encounter,
        &["kind", "status"],
    );
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(list.into_iter().map(NoteView::from).collect()))
}

/// One note with its sections.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/notes/{note_id}", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("note_id" = Uuid, Path)),
    responses((status = 200, body = NoteView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_note(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiPath(path): ApiPath<NotePath>,
) -> Result<Json<NoteView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let n = notes::get(&mut tx, &st.keys, s.scope.practices(), path.note_id).await?;
    tx.commit().await?;
    let event = s.audit.event(&st, Action::PhiRead, "note", n.id, &["body"]);
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(n.into()))
}

/// Approves a draft note of the caller's own dictation (once); another user's note is
/// not found.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/notes/{note_id}/approve", tag = "scribe",
    params(("tenant_id" = Uuid, Path), ("note_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "note_not_draft", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn approve_note(
    State(st): State<AppState>,
    s: Scoped<need::NoteReview>,
    ApiPath(path): ApiPath<NotePath>,
) -> Result<StatusCode, ApiError> {
    let by = user(&s)?;
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    notes::approve(&mut tx, s.scope.practices(), path.note_id, by, st.now()).await?;
    let event = s
        .audit
        .event(&st, Action::NoteApproved, "note", path.note_id, &["status"]);
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's note settings.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoteSettingsView {
    /// `soap` (clinic visits, the default) or `draatt` (EMS narratives: Dispatch,
    /// Response, Arrival, Assessment, Treatment, Transport).
    note_kind: String,
}

/// The tenant's note settings.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/settings/notes", tag = "scribe",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = NoteSettingsView), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_note_settings(
    State(st): State<AppState>,
    s: Scoped<need::UserRead>,
) -> Result<Json<NoteSettingsView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let kind = notes::tenant_kind(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(NoteSettingsView {
        note_kind: notes::kind_name(kind).into(),
    }))
}

/// Sets the kind of note drafted for the tenant's recordings; audited with before and
/// after. Notes already drafted keep their kind.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/settings/notes", tag = "scribe",
    params(("tenant_id" = Uuid, Path)), request_body = NoteSettingsView,
    responses((status = 200, body = NoteSettingsView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_note_settings(
    State(st): State<AppState>,
    s: Scoped<need::TenantManage>,
    ApiJson(body): ApiJson<NoteSettingsView>,
) -> Result<Json<NoteSettingsView>, ApiError> {
    let kind = match body.note_kind.as_str() {
        "soap" => phivault_notes::NoteKind::Soap,
        "draatt" => phivault_notes::NoteKind::Draatt,
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "note_kind must be soap or draatt",
            ));
        }
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = notes::tenant_kind(&mut tx).await?;
    notes::set_tenant_kind(&mut tx, kind, st.now()).await?;
    let mut event = s.audit.event(
        &st,
        Action::AdminReferenceUpdated,
        "note_settings",
        s.scope.tenant(),
        &["note_kind"],
    );
    event.before = Some(serde_json::json!({ "note_kind": notes::kind_name(before) }));
    event.after = Some(serde_json::json!({ "note_kind": notes::kind_name(kind) }));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(body))
}

/// The tenant's transcription vocabulary.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VocabularyView {
    /// Terms the Whisper engine should spell right: drug names, local places. At most
    /// 200, each 1 to 64 letters, digits, spaces and `- ' . / +`. Configuration, not
    /// PHI: never put a patient's name here.
    terms: Vec<String>,
}

/// The tenant's transcription vocabulary.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/settings/vocabulary", tag = "scribe",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = VocabularyView), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_vocabulary(
    State(st): State<AppState>,
    s: Scoped<need::UserRead>,
) -> Result<Json<VocabularyView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let terms = vocabulary::get(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(VocabularyView { terms }))
}

/// Replaces the tenant's transcription vocabulary; transcriptions started from then on
/// use it. Audited with the number of terms before and after (never the terms).
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/settings/vocabulary", tag = "scribe",
    params(("tenant_id" = Uuid, Path)), request_body = VocabularyView,
    responses((status = 200, body = VocabularyView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_vocabulary(
    State(st): State<AppState>,
    s: Scoped<need::TenantManage>,
    ApiJson(body): ApiJson<VocabularyView>,
) -> Result<Json<VocabularyView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = vocabulary::get(&mut tx).await?;
    let terms = vocabulary::set(&mut tx, &body.terms, st.now()).await?;
    let mut event = s.audit.event(
        &st,
        Action::AdminReferenceUpdated,
        "vocabulary",
        s.scope.tenant(),
        &["terms"],
    );
    event.before = Some(serde_json::json!({ "terms": before.len() }));
    event.after = Some(serde_json::json!({ "terms": terms.len() }));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(VocabularyView { terms }))
}
