use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use phivault_domain::patients::{self, Identifier, NewPatient, Patient};
use phivault_domain::{PatientId, Phi, PracticeId};
use phivault_store::TxMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use phivault_audit::Action;

use super::page_limit;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Scoped, need};
use crate::{ApiError, AppState};

/// A patient. Every field but the ids and times is PHI.
#[derive(Serialize, ToSchema)]
pub(crate) struct PatientView {
    id: Uuid,
    practice_id: Uuid,
    mrn: String,
    given_name: String,
    family_name: String,
    date_of_birth: NaiveDate,
    /// US Social Security number (nine digits), if recorded.
    ssn: Option<String>,
    /// Further identifiers.
    identifiers: Vec<IdentifierView>,
    created_at: DateTime<Utc>,
}

/// A further identifier of a patient (PHI, stored sealed and blind-indexed).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentifierView {
    /// The kind: `a-z`, digits and `_`, 2 to 40 characters (e.g. `insurance_member_id`).
    kind: String,
    /// The value, 1 to 128 characters.
    #[schema(value_type = String)]
    value: Phi<String>,
}

impl From<Patient> for PatientView {
    fn from(p: Patient) -> Self {
        PatientView {
            id: p.id.as_uuid(),
            practice_id: p.practice_id.as_uuid(),
            mrn: p.mrn.into_inner(),
            given_name: p.given_name.into_inner(),
            family_name: p.family_name.into_inner(),
            date_of_birth: p.date_of_birth.into_inner(),
            ssn: p.ssn.map(Phi::into_inner),
            identifiers: p
                .identifiers
                .into_iter()
                .map(|i| IdentifierView {
                    kind: i.kind,
                    value: i.value,
                })
                .collect(),
            created_at: p.created_at,
        }
    }
}

/// A new patient. Values are held redacted on the server until stored.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePatient {
    practice_id: Uuid,
    /// Medical record number, 1 to 64 characters.
    #[schema(value_type = String)]
    mrn: Phi<String>,
    #[schema(value_type = String)]
    given_name: Phi<String>,
    #[schema(value_type = String)]
    family_name: Phi<String>,
    /// `YYYY-MM-DD`, not in the future.
    #[schema(value_type = NaiveDate)]
    date_of_birth: Phi<NaiveDate>,
    /// US Social Security number, 9 digits (dashes allowed); optional. Stored encrypted
    /// and blind-indexed.
    #[schema(value_type = Option<String>)]
    #[serde(default)]
    ssn: Option<Phi<String>>,
    /// Further identifiers, at most one per kind, at most 10; all stored sealed and
    /// blind-indexed.
    #[serde(default)]
    identifiers: Vec<IdentifierView>,
}

/// Filters and paging for the patient list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatientQuery {
    /// Exact MRN (matched through the tenant's blind index; the MRN is never stored in clear).
    mrn: Option<String>,
    /// Exact SSN, likewise.
    ssn: Option<String>,
    /// With `identifier_value`: the kind of identifier to match exactly.
    identifier_kind: Option<String>,
    /// With `identifier_kind`: the value to match exactly.
    identifier_value: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    limit: Option<u32>,
    /// Return items after this id.
    after: Option<Uuid>,
}

/// The PHI fields a patient answer carries, as audit events name them.
pub(crate) const PATIENT_FIELDS: &[&str] = &[
    "mrn",
    "given_name",
    "family_name",
    "date_of_birth",
    "ssn",
    "identifiers",
];

#[derive(Deserialize)]
pub(crate) struct PatientPath {
    patient_id: Uuid,
}

/// Patients in the caller's practices.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/patients", tag = "patients",
    params(("tenant_id" = Uuid, Path), PatientQuery),
    responses((status = 200, body = Vec<PatientView>), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_patients(
    State(st): State<AppState>,
    s: Scoped<need::PatientRead>,
    ApiQuery(page): ApiQuery<PatientQuery>,
) -> Result<Json<Vec<PatientView>>, ApiError> {
    let limit = page_limit(page.limit)?;
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let practices = s.scope.practices();
    let list = match (
        &page.mrn,
        &page.ssn,
        &page.identifier_kind,
        &page.identifier_value,
    ) {
        (None, None, None, None) => {
            let after = page.after.map(PatientId::from_uuid);
            patients::list(&mut tx, &st.keys, practices, after, limit).await?
        }
        (Some(mrn), None, None, None) => {
            patients::find_by_mrn(&mut tx, &st.keys, practices, mrn).await?
        }
        (None, Some(ssn), None, None) => {
            patients::find_by_ssn(&mut tx, &st.keys, practices, ssn).await?
        }
        (None, None, Some(kind), Some(value)) => {
            patients::find_by_identifier(&mut tx, &st.keys, practices, kind, value).await?
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give at most one of mrn, ssn, or identifier_kind with identifier_value",
            ));
        }
    };
    tx.commit().await?;
    // One event per patient returned; a search also records what it searched by (the
    // kind of identifier, never the value), even when it found nothing.
    let mut events: Vec<_> = list
        .iter()
        .map(|p| {
            s.audit
                .event(&st, Action::PhiRead, "patient", p.id, PATIENT_FIELDS)
        })
        .collect();
    let searched_by = match (&page.mrn, &page.ssn, &page.identifier_kind) {
        (Some(_), _, _) => Some("mrn".to_string()),
        (_, Some(_), _) => Some("ssn".to_string()),
        (_, _, Some(kind)) => Some(format!("identifier:{kind}")),
        _ => None,
    };
    if let Some(field) = searched_by {
        events.push(s.audit.event(
            &st,
            Action::PhiRead,
            "patient_search",
            list.len(),
            &[&field],
        ));
    } else if events.is_empty() {
        events.push(s.audit.event(&st, Action::PhiRead, "patient_list", 0, &[]));
    }
    s.audit.record(&st, events).await?;
    Ok(Json(list.into_iter().map(PatientView::from).collect()))
}

/// Registers a patient in one of the caller's practices.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/patients", tag = "patients",
    params(("tenant_id" = Uuid, Path)), request_body = CreatePatient,
    responses((status = 201, body = PatientView), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_patient(
    State(st): State<AppState>,
    s: Scoped<need::PatientWrite>,
    ApiJson(body): ApiJson<CreatePatient>,
) -> Result<(StatusCode, Json<PatientView>), ApiError> {
    let new = NewPatient {
        practice_id: PracticeId::from_uuid(body.practice_id),
        mrn: body.mrn,
        given_name: body.given_name,
        family_name: body.family_name,
        date_of_birth: body.date_of_birth,
        ssn: body.ssn,
        identifiers: body
            .identifiers
            .into_iter()
            .map(|i| Identifier {
                kind: i.kind,
                value: i.value,
            })
            .collect(),
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let patient = patients::create(&mut tx, &st.keys, s.scope.practices(), new, st.now()).await?;
    let event = s.audit.event(
        &st,
        Action::PhiCreate,
        "patient",
        patient.id,
        PATIENT_FIELDS,
    );
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(patient.into())))
}

/// One patient.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/patients/{patient_id}", tag = "patients",
    params(("tenant_id" = Uuid, Path), ("patient_id" = Uuid, Path)),
    responses((status = 200, body = PatientView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_patient(
    State(st): State<AppState>,
    s: Scoped<need::PatientRead>,
    ApiPath(path): ApiPath<PatientPath>,
) -> Result<Json<PatientView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let patient = patients::get(
        &mut tx,
        &st.keys,
        s.scope.practices(),
        PatientId::from_uuid(path.patient_id),
    )
    .await?;
    tx.commit().await?;
    let event = s
        .audit
        .event(&st, Action::PhiRead, "patient", patient.id, PATIENT_FIELDS);
    s.audit.record(&st, vec![event]).await?;
    Ok(Json(patient.into()))
}
