//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "phivault", description = "Clinical conversation capture with HIPAA Security Rule safeguards enforced in code."),
    paths(
        routes::healthz, routes::readyz, routes::me, routes::keys_status, routes::unseal, routes::seal, routes::platform_facts,
        routes::list_practices, routes::create_practice,
        routes::list_patients, routes::create_patient, routes::get_patient,
        routes::list_encounters, routes::create_encounter, routes::get_encounter,
        routes::list_audit,
    ),
    components(schemas(crate::error::ErrorBody)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The whole document: the paths listed here and those of the route modules that keep
/// their own.
fn full() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for part in routes::module_docs() {
        doc.merge(part);
    }
    doc
}

/// The document as served at `/api/openapi.json`.
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(full())
}

/// The document, for the CLI and tests.
pub fn openapi_json() -> String {
    full().to_pretty_json().unwrap_or_default()
}
