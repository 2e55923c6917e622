//! Routes. Tenant routes live under `/api/v1/tenants/{tenant_id}/`.

mod audit;
mod breach;
mod break_glass;
mod compliance;
mod e2e;
mod encounters;
mod evidence;
mod health;
mod magic_link;
mod me;
mod mfa;
mod patients;
mod practices;
mod readiness;
mod retention;
mod scribe;
mod sessions;
mod staff;
mod sys;
mod users;
mod web;

use axum::Router;
use axum::routing::get;

use crate::{ApiError, AppState};

pub(crate) use audit::*;
pub(crate) use encounters::*;
pub(crate) use health::*;
pub(crate) use me::*;
pub(crate) use patients::*;
pub(crate) use practices::*;
pub(crate) use sys::*;

/// The OpenAPI paths of the route modules that keep their own document.
pub(crate) fn module_docs() -> Vec<utoipa::openapi::OpenApi> {
    vec![
        users::api(),
        magic_link::api(),
        sessions::api(),
        mfa::api(),
        staff::api(),
        break_glass::api(),
        e2e::api(),
        scribe::api(),
        retention::api(),
        readiness::api(),
        compliance::api(),
        breach::api(),
        evidence::api(),
    ]
}

/// Routes whose bodies are streamed uploads, with their own limit and timeout.
pub(crate) fn uploads() -> Router<AppState> {
    scribe::uploads()
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/openapi.json", get(crate::openapi::document))
        .route("/api/v1/sys/keys", get(keys_status))
        .route("/api/v1/sys/unseal", axum::routing::post(unseal))
        .route("/api/v1/sys/seal", axum::routing::post(seal))
        .route("/api/v1/sys/readiness", get(platform_facts))
        .route("/api/v1/tenants/{tenant_id}/me", get(me))
        .route(
            "/api/v1/tenants/{tenant_id}/practices",
            get(list_practices).post(create_practice),
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
        .route("/api/v1/tenants/{tenant_id}/audit", get(list_audit))
        .merge(users::router())
        .merge(magic_link::router())
        .merge(sessions::router())
        .merge(mfa::router())
        .merge(staff::router())
        .merge(break_glass::router())
        .merge(e2e::router())
        .merge(scribe::router())
        .merge(retention::router())
        .merge(readiness::router())
        .merge(compliance::router())
        .merge(breach::router())
        .merge(evidence::router())
        .merge(web::router())
        .fallback(|| async { ApiError::not_found("route") })
}

/// Checks a page size: 1 to 200, 50 when omitted.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=200) => Ok(n),
        Some(_) => Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 200",
        )),
    }
}
