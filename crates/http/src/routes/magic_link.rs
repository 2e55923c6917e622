//! Magic-link sign-in for tenant users.

use crate::AppState;

/// This module's routes.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
}

#[derive(utoipa::OpenApi)]
#[openapi()]
struct ModuleApi;

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    <ModuleApi as utoipa::OpenApi>::openapi()
}
