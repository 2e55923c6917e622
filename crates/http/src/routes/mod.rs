//! Routes. Tenant routes live under `/api/v1/tenants/{tenant_id}/`.

mod encounters;
mod health;
mod me;
mod patients;
mod practices;
mod users;

use axum::Router;
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{ApiError, AppState};

pub(crate) use encounters::*;
pub(crate) use health::*;
pub(crate) use me::*;
pub(crate) use patients::*;
pub(crate) use practices::*;
pub(crate) use users::*;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/openapi.json", get(crate::openapi::document))
        .route("/api/v1/tenants/{tenant_id}/me", get(me))
        .route(
            "/api/v1/tenants/{tenant_id}/practices",
            get(list_practices).post(create_practice),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/users",
            get(list_users).post(create_user),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/patients",
            get(list_patients).post(create_patient),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/patients/{patient_id}",
            get(get_patient),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/encounters",
            get(list_encounters).post(create_encounter),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}",
            get(get_encounter),
        )
        .fallback(|| async { ApiError::not_found("route") })
}

/// Cursor pagination: `limit` items after the id `after`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct Page {
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u32>,
    /// Return items after this id.
    pub after: Option<uuid::Uuid>,
}

impl Page {
    pub(crate) fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=200) => Ok(n),
            Some(_) => Err(ApiError::bad_request(
                "invalid_query",
                "limit must be between 1 and 200",
            )),
        }
    }
}
