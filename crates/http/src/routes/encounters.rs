use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use phivault_access::Actor;
use phivault_domain::encounters::{self, Encounter, NewEncounter};
use phivault_domain::{EncounterId, PatientId, Phi};
use phivault_store::TxMode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use phivault_audit::Action;

use crate::extract::{ApiJson, ApiPath, ApiQuery, Scoped, need};
use crate::{ApiError, AppState};

/// An encounter.
#[derive(Serialize, ToSchema)]
pub(crate) struct EncounterView {
    id: Uuid,
    patient_id: Uuid,
    practice_id: Uuid,
    provider_id: Uuid,
    status: String,
    /// Reason for the visit (PHI).
    reason: Option<String>,
    started_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl From<Encounter> for EncounterView {
    fn from(e: Encounter) -> Self {
        EncounterView {
            id: e.id.as_uuid(),
            patient_id: e.patient_id.as_uuid(),
            practice_id: e.practice_id.as_uuid(),
            provider_id: e.provider_id.as_uuid(),
            status: e.status,
            reason: e.reason.map(Phi::into_inner),
            started_at: e.started_at,
            created_at: e.created_at,
        }
    }
}

/// A new encounter; the caller is its provider.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateEncounter {
    patient_id: Uuid,
    /// Reason for the visit, up to 2000 characters.
    #[schema(value_type = Option<String>)]
    reason: Option<Phi<String>>,
    /// When the visit started; now if omitted.
    started_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
pub(crate) struct EncounterPath {
    encounter_id: Uuid,
}

/// The PHI fields an encounter answer carries, as audit events name them.
pub(crate) const ENCOUNTER_FIELDS: &[&str] = &["reason", "started_at", "patient_id"];

/// Filters and paging for the encounter list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct EncounterQuery {
    /// Only this patient's encounters.
    patient_id: Option<Uuid>,
    /// Items per page, 1 to 200 (default 50).
    limit: Option<u32>,
    /// Return items after this id.
    after: Option<Uuid>,
}

/// Encounters in the caller's practices.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/encounters", tag = "encounters",
    params(("tenant_id" = Uuid, Path), EncounterQuery),
    responses((status = 200, body = Vec<EncounterView>), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_encounters(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiQuery(q): ApiQuery<EncounterQuery>,
) -> Result<Json<Vec<EncounterView>>, ApiError> {
    let limit = super::page_limit(q.limit)?;
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let list = encounters::list(
        &mut tx,
        &st.keys,
        s.scope.practices(),
        q.patient_id.map(PatientId::from_uuid),
        q.after.map(EncounterId::from_uuid),
        limit,
    )
    .await?;
    tx.commit().await?;
    let mut events: Vec<_> = list
        .iter()
        .map(|e| {
            s.audit
                .event(&st, Action::PhiRead, "encounter", e.id, ENCOUNTER_FIELDS)
        })
        .collect();
    if events.is_empty() {
        events.push(
            s.audit
                .event(&st, Action::PhiRead, "encounter_list", 0, &[]),
        );
    }
    s.audit.record(&st, events).await?;
    Ok(Json(list.into_iter().map(EncounterView::from).collect()))
}

/// Opens an encounter for a patient in one of the caller's practices.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/encounters", tag = "encounters",
    params(("tenant_id" = Uuid, Path)), request_body = CreateEncounter,
    responses((status = 201, body = EncounterView), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_encounter(
    State(st): State<AppState>,
    s: Scoped<need::EncounterWrite>,
    ApiJson(body): ApiJson<CreateEncounter>,
) -> Result<(StatusCode, Json<EncounterView>), ApiError> {
    let Actor::User(provider) = s.scope.actor() else {
        return Err(ApiError::internal());
    };
    let new = NewEncounter {
        patient_id: PatientId::from_uuid(body.patient_id),
        reason: body.reason,
        started_at: body.started_at,
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let encounter = encounters::create(
        &mut tx,
        &st.keys,
        s.scope.practices(),
        provider,
        new,
        st.now(),
    )
    .await?;
    let event = s.audit.event(
        &st,
        Action::PhiCreate,
        "encounter",
        encounter.id,
        ENCOUNTER_FIELDS,
    );
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(encounter.into())))
}

/// One encounter.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}", tag = "encounters",
    params(("tenant_id" = Uuid, Path), ("encounter_id" = Uuid, Path)),
    responses((status = 200, body = EncounterView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_encounter(
    State(st): State<AppState>,
    s: Scoped<need::EncounterRead>,
    ApiPath(path): ApiPath<EncounterPath>,
) -> Result<Json<EncounterView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let encounter = encounters::get(
        &mut tx,
        &st.keys,
        s.scope.practices(),
        EncounterId::from_uuid(path.encounter_id),
    )
    .await?;
    tx.commit().await?;
    let event = s.audit.event(
        &st,
        Action::PhiRead,
        "encounter",
        encounter.id,
        ENCOUNTER_FIELDS,
    );
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(encounter.into()))
}
