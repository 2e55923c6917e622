//! Retention policies, the training opt-in, and the training export (docs/retention.md).
//!
//! Settings are not PHI: reading them needs `admin:view_users` like the other tenant
//! settings, changing them `tenant:manage`, audited `admin.reference.updated` with before
//! and after. The training export is PHI leaving phivault: `tenant:manage`, refused
//! (409 `training_opt_in_required`, audited as denied) unless the tenant opted in, and
//! audited `phi.export` per record before it answers.

use std::collections::BTreeSet;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use phivault_access::Permission;
use phivault_audit::{Action, Outcome};
use phivault_domain::retention::{self, Basis, DataClass, Policy};
use phivault_domain::training::{self, ExportRange, TrainingOptIn};
use phivault_domain::{DomainError, UserId};
use phivault_store::{TenantTx, TxMode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::extract::{ApiJson, ApiQuery, Requires, Scoped, need};
use crate::{ApiError, AppState};

/// This module's routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tenants/{tenant_id}/settings/retention",
            get(get_retention).put(put_retention),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/settings/training",
            get(get_training).put(put_training),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/exports/training",
            post(export_training),
        )
}

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(
            get_retention,
            put_retention,
            get_training,
            put_training,
            export_training
        ),
        components(schemas(
            PolicyView,
            RetentionView,
            PolicyChange,
            RetentionChange,
            TrainingView,
            TrainingChange,
            ExportView,
            ExportRecordView
        ))
    )]
    struct Api;
    <Api as utoipa::OpenApi>::openapi()
}

/// `tenant:manage` on a route that returns readable PHI (the training export).
pub(crate) struct TrainingExport;
impl Requires for TrainingExport {
    const PERMISSION: Permission = Permission::TenantManage;
    const PHI: bool = true;
}

// --- retention policies ---------------------------------------------------------------

/// One data class's retention policy.
#[derive(Serialize, ToSchema)]
pub(crate) struct PolicyView {
    /// `audio`, `transcript`, `note` or `e2e_utterance`.
    data_class: String,
    /// How long, in hours.
    window_hours: i64,
    /// `after_note` (audio only: from when its note was generated) or `after_creation`.
    basis: String,
    /// `default` (built in) or `tenant` (set by the tenant).
    source: String,
    /// Who set it (not kept for `e2e_utterance`; see the audit trail).
    updated_by: Option<Uuid>,
    /// When it was set.
    updated_at: Option<DateTime<Utc>>,
}

impl From<&Policy> for PolicyView {
    fn from(p: &Policy) -> Self {
        PolicyView {
            data_class: p.class.as_str().into(),
            window_hours: p.window_hours,
            basis: p.basis.as_str().into(),
            source: p.source.as_str().into(),
            updated_by: p.updated_by.map(|u| u.as_uuid()),
            updated_at: p.updated_at,
        }
    }
}

/// The tenant's retention policies, one per data class.
#[derive(Serialize, ToSchema)]
pub(crate) struct RetentionView {
    /// Every class, defaults filled in.
    policies: Vec<PolicyView>,
    /// Audio is deleted at the latest this many hours after it was stored, whatever its
    /// policy, even when no note is ever generated.
    audio_max_hours: i64,
}

/// A policy to set.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyChange {
    /// `audio`, `transcript`, `note` or `e2e_utterance`.
    data_class: String,
    /// Hours: audio 1 to 168, e2e_utterance 1 to 8760, transcript and note 1 to 87600.
    window_hours: i64,
    /// `after_note` (audio only) or `after_creation`.
    basis: String,
}

/// Changes to the tenant's retention policies, applied together. Classes not named keep
/// their policy.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionChange {
    /// Policies to set.
    #[serde(default)]
    policies: Vec<PolicyChange>,
    /// Classes to put back on their built-in default.
    #[serde(default)]
    reset: Vec<String>,
}

fn class_of(name: &str) -> Result<DataClass, ApiError> {
    DataClass::parse(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "data_class must be audio, transcript, note or e2e_utterance",
        )
    })
}

fn snapshot(policies: &[Policy]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = policies
        .iter()
        .map(|p| {
            (
                p.class.as_str().to_string(),
                serde_json::json!({
                    "window_hours": p.window_hours,
                    "basis": p.basis.as_str(),
                    "source": p.source.as_str(),
                }),
            )
        })
        .collect();
    serde_json::Value::Object(map)
}

fn retention_view(policies: &[Policy]) -> RetentionView {
    RetentionView {
        policies: policies.iter().map(PolicyView::from).collect(),
        audio_max_hours: retention::AUDIO_MAX_HOURS,
    }
}

/// The tenant's retention policies.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/settings/retention", tag = "retention",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = RetentionView), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_retention(
    State(st): State<AppState>,
    s: Scoped<need::UserRead>,
) -> Result<Json<RetentionView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let policies = retention::policies(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(retention_view(&policies)))
}

/// Sets or resets retention policies, all or none; audited with before and after. The
/// next sweep applies them.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/settings/retention", tag = "retention",
    params(("tenant_id" = Uuid, Path)), request_body = RetentionChange,
    responses((status = 200, body = RetentionView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_retention(
    State(st): State<AppState>,
    s: Scoped<need::TenantManage>,
    ApiJson(body): ApiJson<RetentionChange>,
) -> Result<Json<RetentionView>, ApiError> {
    let mut sets = Vec::with_capacity(body.policies.len());
    let mut named = BTreeSet::new();
    for p in &body.policies {
        let class = class_of(&p.data_class)?;
        let basis = Basis::parse(&p.basis).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "basis must be after_note or after_creation",
            )
        })?;
        sets.push((class, p.window_hours, basis));
        named.insert(class);
    }
    let mut resets = Vec::with_capacity(body.reset.len());
    for name in &body.reset {
        let class = class_of(name)?;
        resets.push(class);
        named.insert(class);
    }
    if named.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "name at least one data class in policies or reset",
        ));
    }
    if named.len() != sets.len() + resets.len() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "each data class may appear once, in policies or in reset",
        ));
    }
    let by = s.principal.user();
    let now = st.now();
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = retention::policies(&mut tx).await?;
    for (class, hours, basis) in sets {
        retention::set_policy(&mut tx, class, hours, basis, by, now).await?;
    }
    for class in resets {
        retention::reset_policy(&mut tx, class, now).await?;
    }
    let after = retention::policies(&mut tx).await?;
    let fields: Vec<&str> = named.iter().map(|c| c.as_str()).collect();
    let mut event = s.audit.event(
        &st,
        Action::AdminReferenceUpdated,
        "retention_policy",
        s.scope.tenant(),
        &fields,
    );
    event.before = Some(snapshot(&before));
    event.after = Some(snapshot(&after));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(retention_view(&after)))
}

// --- training opt-in ------------------------------------------------------------------

/// The tenant's training opt-in.
#[derive(Serialize, ToSchema)]
pub(crate) struct TrainingView {
    /// Whether transcripts and notes may be exported to train models (default false).
    training_opt_in: bool,
    /// Who last set it.
    set_by: Option<Uuid>,
    /// When.
    set_at: Option<DateTime<Utc>>,
}

impl From<TrainingOptIn> for TrainingView {
    fn from(t: TrainingOptIn) -> Self {
        TrainingView {
            training_opt_in: t.enabled,
            set_by: t.set_by.map(|u: UserId| u.as_uuid()),
            set_at: t.set_at,
        }
    }
}

/// Turns the training opt-in on or off.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrainingChange {
    /// On or off.
    training_opt_in: bool,
}

/// The tenant's training opt-in.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/settings/training", tag = "retention",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = TrainingView), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_training(
    State(st): State<AppState>,
    s: Scoped<need::UserRead>,
) -> Result<Json<TrainingView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let status = training::status(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(status.into()))
}

/// Turns the training opt-in on or off, recording who and when; audited with before
/// and after.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/settings/training", tag = "retention",
    params(("tenant_id" = Uuid, Path)), request_body = TrainingChange,
    responses((status = 200, body = TrainingView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_training(
    State(st): State<AppState>,
    s: Scoped<need::TenantManage>,
    ApiJson(body): ApiJson<TrainingChange>,
) -> Result<Json<TrainingView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = training::status(&mut tx).await?;
    let after = training::set(&mut tx, body.training_opt_in, s.principal.user(), st.now()).await?;
    let mut event = s.audit.event(
        &st,
        Action::AdminReferenceUpdated,
        "training_opt_in",
        s.scope.tenant(),
        &["training_opt_in"],
    );
    event.before = Some(serde_json::json!({ "training_opt_in": before.enabled }));
    event.after = Some(serde_json::json!({ "training_opt_in": after.enabled }));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(after.into()))
}

// --- training export ------------------------------------------------------------------

/// What to export.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportQuery {
    /// Only records stored at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// At most this many transcripts and this many notes, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// One exported transcript or note.
#[derive(Serialize, ToSchema)]
pub(crate) struct ExportRecordView {
    /// `transcript` or `note`.
    class: String,
    /// Its id.
    id: Uuid,
    /// Its encounter.
    encounter_id: Uuid,
    /// When it was stored.
    created_at: DateTime<Utc>,
    /// The stored document: a transcript's segments, or a note.
    #[schema(value_type = Object)]
    content: serde_json::Value,
}

/// A training export.
#[derive(Serialize, ToSchema)]
pub(crate) struct ExportView {
    /// Transcripts first, then notes, each oldest first.
    records: Vec<ExportRecordView>,
}

/// The tenant's transcripts and notes for model training, decrypted; refused with 409
/// `training_opt_in_required` unless the tenant opted in. Each exported record is
/// audited `phi.export` before the answer is sent.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/exports/training", tag = "retention",
    params(("tenant_id" = Uuid, Path), ExportQuery),
    responses((status = 200, body = ExportView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn export_training(
    State(st): State<AppState>,
    s: Scoped<TrainingExport>,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> Result<Json<ExportView>, ApiError> {
    let range = ExportRange {
        since: q.since,
        limit: q.limit.unwrap_or(100),
    };
    let mut tx: TenantTx = s.scope.begin(&st.db, TxMode::Read).await?;
    let records = match training::export_for_training(&mut tx, &st.keys, range).await {
        Ok(r) => r,
        Err(DomainError::Refused { code, message }) if code == "training_opt_in_required" => {
            drop(tx);
            let mut event = s.audit.event(
                &st,
                Action::PhiExport,
                "training_export",
                s.scope.tenant(),
                &[],
            );
            event.outcome = Outcome::Denied;
            event.reason = Some("training opt-in is off".into());
            s.audit.record(&st, vec![event]).await?;
            return Err(ApiError::new(StatusCode::CONFLICT, code, message));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    let mut views = Vec::with_capacity(records.len());
    let mut events = Vec::with_capacity(records.len() + 1);
    let (mut transcripts, mut notes) = (0, 0);
    for r in records {
        let field = match r.class {
            DataClass::Note => {
                notes += 1;
                "body"
            }
            _ => {
                transcripts += 1;
                "segments"
            }
        };
        let mut event = s
            .audit
            .event(&st, Action::PhiExport, r.class.as_str(), r.id, &[field]);
        event.reason = Some("training export".into());
        events.push(event);
        let content = serde_json::from_str(r.content.expose()).map_err(|_| {
            tracing::error!(record = %r.id, "a stored record is not JSON; export refused");
            ApiError::internal()
        })?;
        views.push(ExportRecordView {
            class: r.class.as_str().into(),
            id: r.id,
            encounter_id: r.encounter_id,
            created_at: r.created_at,
            content,
        });
    }
    let mut summary = s.audit.event(
        &st,
        Action::PhiExport,
        "training_export",
        s.scope.tenant(),
        &["segments", "body"],
    );
    summary.reason = Some(format!(
        "training export: {transcripts} transcripts, {notes} notes"
    ));
    events.push(summary);
    s.audit.record(&st, events).await?;
    Ok(Json(ExportView { records: views }))
}
