//! Compliance records (docs/compliance.md): the security officer designation, risk
//! assessments, training acknowledgements, incidents and the sanctions policy, each a
//! versioned subject.
//!
//! Reading needs `security:view_readiness`, saving `security:manage_phi_gates`, except a
//! user's own training acknowledgement, which any user of the tenant may record
//! (`POST …/compliance/training-acks`; another user's is refused 403 `not_own_record`).
//! Every save is audited `compliance.recorded` in its own transaction, with the body's
//! field names and an after-snapshot of kind, subject and version, never a body value.
//! Records are not PHI (they must not hold any), so reads are not audited.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::routing::{get, post};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use phivault_audit::{Action, Outcome};
use phivault_domain::compliance::{
    self, Body, Incident, Kind, NewVersion, Record, RiskAssessment, SanctionsPolicy,
    SecurityOfficer, TrainingAck,
};
use phivault_store::TxMode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::extract::{ApiJson, ApiPath, ApiQuery, Requires, Scoped, need, parse_json};
use crate::{ApiError, AppState};

/// This module's routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant_id}/compliance/records",
            get(list_records).post(save_record),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/compliance/records/{kind}/{subject}/versions",
            get(record_versions),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/compliance/training-acks",
            post(ack_training),
        )
}

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(list_records, save_record, record_versions, ack_training),
        components(schemas(
            RecordView,
            RecordsView,
            HistoryView,
            SaveRecord,
            OwnTrainingAck,
            OwnTrainingAckBody
        ))
    )]
    struct Api;
    <Api as utoipa::OpenApi>::openapi()
}

const KINDS: &str = "security_officer, risk_assessment, training_ack, incident or sanctions_policy";

/// One version of a compliance record.
#[derive(Serialize, ToSchema)]
pub(crate) struct RecordView {
    /// The version's id (the resource id of its `compliance.recorded` event).
    id: Uuid,
    /// `security_officer`, `risk_assessment`, `training_ack`, `incident` or
    /// `sanctions_policy`.
    kind: String,
    /// The subject its versions share: `current` (security officer, sanctions policy),
    /// the year (risk assessment), `<user_id>:<course>` (training acknowledgement), the
    /// incident's id (incident).
    subject: String,
    /// The version, from 1.
    version: i64,
    /// The body as stored (canonical JSON; its fields depend on the kind).
    #[schema(value_type = Object)]
    body: serde_json::Value,
    /// Who saved it: a user id, or `operator:<account>` for the command line.
    recorded_by: String,
    /// When.
    recorded_at: DateTime<Utc>,
}

impl From<Record> for RecordView {
    fn from(r: Record) -> Self {
        RecordView {
            id: r.id,
            kind: r.kind.as_str().into(),
            subject: r.subject,
            version: r.version,
            body: r.body,
            recorded_by: r.recorded_by,
            recorded_at: r.recorded_at,
        }
    }
}

/// The latest version of every subject.
#[derive(Serialize, ToSchema)]
pub(crate) struct RecordsView {
    /// By kind, then subject.
    records: Vec<RecordView>,
}

/// Every version of one subject.
#[derive(Serialize, ToSchema)]
pub(crate) struct HistoryView {
    /// The kind.
    kind: String,
    /// The subject.
    subject: String,
    /// Oldest first.
    versions: Vec<RecordView>,
}

/// A version to save. `body` holds the kind's fields (docs/compliance.md); unknown
/// fields are refused.
// The request's documented shape; it is read as `Typed<T>`, whose body is typed by kind.
#[allow(dead_code)]
#[derive(ToSchema)]
pub(crate) struct SaveRecord {
    /// `security_officer`, `risk_assessment`, `training_ack`, `incident` or
    /// `sanctions_policy`.
    kind: String,
    /// Omit it, except to add a version to an incident (its id). For other kinds it
    /// follows from the body; if given it must match.
    subject: Option<String>,
    /// The version the caller last read: 0 for a new subject (and a new incident).
    expected_version: i64,
    /// The kind's fields.
    #[schema(value_type = Object)]
    body: serde_json::Value,
}

/// The kind, read first to choose the body's type.
#[derive(Deserialize)]
struct KindOnly {
    kind: Kind,
}

/// [`SaveRecord`] with the body typed by its kind, so an error names `body.<field>`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Typed<T> {
    #[serde(rename = "kind")]
    _kind: Kind,
    subject: Option<String>,
    expected_version: i64,
    body: T,
}

fn typed<T: DeserializeOwned>(bytes: &[u8], wrap: fn(T) -> Body) -> Result<NewVersion, ApiError> {
    let t: Typed<T> = parse_json(bytes)?;
    Ok(NewVersion {
        body: wrap(t.body),
        subject: t.subject,
        expected_version: Some(t.expected_version),
    })
}

/// A JSON request body as bytes, so that it can be read twice (kind, then typed body)
/// with every check `ApiJson` makes (content type, size, syntax, duplicate keys).
pub(crate) struct RawJson(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than allowed",
                )
            } else {
                ApiError::bad_request("body_unreadable", "the request body could not be read")
            }
        })?;
        Ok(RawJson(bytes))
    }
}

/// Saves `new` with its `compliance.recorded` event in one transaction.
async fn save<R: Requires>(
    st: &AppState,
    s: &Scoped<R>,
    new: NewVersion,
) -> Result<Record, ApiError> {
    let by = s.principal.user().to_string();
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let record = compliance::save(&mut tx, new, &by, st.now()).await?;
    let fields = record.audit_fields();
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let mut event = s.audit.event(
        st,
        Action::ComplianceRecorded,
        "compliance_record",
        record.id,
        &fields,
    );
    event.after = Some(record.audit_snapshot());
    s.audit.append_in(st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(record)
}

/// Saves a new version of a compliance record: version n+1 of its subject. Refused 409
/// `version_conflict` unless the subject is at `expected_version` (0 for a new one),
/// so of two concurrent saves one wins. Audited `compliance.recorded`.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/compliance/records", tag = "compliance",
    params(("tenant_id" = Uuid, Path)), request_body = SaveRecord,
    responses((status = 201, body = RecordView), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn save_record(
    State(st): State<AppState>,
    s: Scoped<need::SecurityManagePhiGates>,
    RawJson(bytes): RawJson,
) -> Result<(StatusCode, Json<RecordView>), ApiError> {
    let KindOnly { kind } = parse_json(&bytes)?;
    let new = match kind {
        Kind::SecurityOfficer => typed::<SecurityOfficer>(&bytes, Body::SecurityOfficer)?,
        Kind::RiskAssessment => typed::<RiskAssessment>(&bytes, Body::RiskAssessment)?,
        Kind::TrainingAck => typed::<TrainingAck>(&bytes, Body::TrainingAck)?,
        Kind::Incident => typed::<Incident>(&bytes, Body::Incident)?,
        Kind::SanctionsPolicy => typed::<SanctionsPolicy>(&bytes, Body::SanctionsPolicy)?,
    };
    let record = save(&st, &s, new).await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}

/// Which records to list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this kind.
    kind: Option<String>,
}

fn kind_of(name: &str, code: &'static str) -> Result<Kind, ApiError> {
    Kind::parse(name).ok_or_else(|| ApiError::bad_request(code, format!("kind must be {KINDS}")))
}

/// The latest version of every subject, by kind and subject; `?kind=` narrows it.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/compliance/records", tag = "compliance",
    params(("tenant_id" = Uuid, Path), ListQuery),
    responses((status = 200, body = RecordsView), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_records(
    State(st): State<AppState>,
    s: Scoped<need::SecurityViewReadiness>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<RecordsView>, ApiError> {
    let kind = q
        .kind
        .as_deref()
        .map(|k| kind_of(k, "invalid_query"))
        .transpose()?;
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let records = compliance::latest(&mut tx, kind).await?;
    tx.commit().await?;
    Ok(Json(RecordsView {
        records: records.into_iter().map(RecordView::from).collect(),
    }))
}

/// The `{kind}/{subject}` of a history.
#[derive(Deserialize)]
pub(crate) struct VersionsPath {
    kind: String,
    subject: String,
}

/// Every version of one subject, oldest first; 404 when it has none.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/compliance/records/{kind}/{subject}/versions",
    tag = "compliance",
    params(("tenant_id" = Uuid, Path), ("kind" = String, Path), ("subject" = String, Path)),
    responses((status = 200, body = HistoryView), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn record_versions(
    State(st): State<AppState>,
    s: Scoped<need::SecurityViewReadiness>,
    ApiPath(path): ApiPath<VersionsPath>,
) -> Result<Json<HistoryView>, ApiError> {
    let kind = kind_of(&path.kind, "invalid_path")?;
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let versions = compliance::history(&mut tx, kind, &path.subject).await?;
    tx.commit().await?;
    if versions.is_empty() {
        return Err(ApiError::not_found("compliance record"));
    }
    Ok(Json(HistoryView {
        kind: kind.as_str().into(),
        subject: path.subject,
        versions: versions.into_iter().map(RecordView::from).collect(),
    }))
}

/// The caller's own training acknowledgement.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnTrainingAck {
    /// The version the caller last read of this course's acknowledgement: 0 for the
    /// first.
    expected_version: i64,
    /// What was completed.
    body: OwnTrainingAckBody,
}

/// A training acknowledgement's body; `user_id` is the caller's (and may be omitted).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnTrainingAckBody {
    /// The caller's user id; another user's is refused 403 `not_own_record`.
    user_id: Option<Uuid>,
    /// The course (up to 100 characters: letters, digits, spaces and `-_.,()&+'`).
    course: String,
    /// The course's version (up to 50 characters).
    version: String,
    /// When it was completed (`YYYY-MM-DD`).
    completed_on: String,
}

/// Records the caller's own training acknowledgement (a new version of
/// `<user_id>:<course>`); any user of the tenant may. Audited `compliance.recorded`;
/// another user's is refused 403 `not_own_record` and audited `access.denied`.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/compliance/training-acks", tag = "compliance",
    params(("tenant_id" = Uuid, Path)), request_body = OwnTrainingAck,
    responses((status = 201, body = RecordView), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn ack_training(
    State(st): State<AppState>,
    s: Scoped<need::PracticeRead>,
    ApiJson(req): ApiJson<OwnTrainingAck>,
) -> Result<(StatusCode, Json<RecordView>), ApiError> {
    let me = s.principal.user();
    if req.body.user_id.is_some_and(|u| u != me.as_uuid()) {
        let mut event = s.audit.event(
            &st,
            Action::AccessDenied,
            "compliance_record",
            Kind::TrainingAck.as_str(),
            &[],
        );
        event.outcome = Outcome::Denied;
        event.reason = Some("a training acknowledgement for another user".into());
        // The refusal is answered whatever happens to its record, as other refusals are.
        if let Err(e) = st.auditor.record(event).await {
            tracing::error!(error = %e, "could not record a refused request in the audit trail");
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_own_record",
            "a user may record their own training acknowledgements only",
        ));
    }
    let body = req.body;
    let new = NewVersion {
        body: Body::TrainingAck(TrainingAck {
            user_id: me,
            course: body.course,
            version: body.version,
            completed_on: body.completed_on,
        }),
        subject: None,
        expected_version: Some(req.expected_version),
    };
    let record = save(&st, &s, new).await?;
    Ok((StatusCode::CREATED, Json(record.into())))
}
