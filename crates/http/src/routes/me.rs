use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::extract::{Scoped, need};

/// The caller, as the server sees them.
#[derive(Serialize, ToSchema)]
pub(crate) struct MeView {
    tenant_id: Uuid,
    user_id: Uuid,
    roles: Vec<String>,
    permissions: Vec<String>,
}

/// Who am I: the caller's user id, roles and permissions.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/me", tag = "identity",
    params(("tenant_id" = Uuid, Path, description = "The caller's tenant")),
    responses((status = 200, body = MeView), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn me(s: Scoped<need::PracticeRead>) -> Json<MeView> {
    let p = &s.principal;
    Json(MeView {
        tenant_id: p.tenant().as_uuid(),
        user_id: p.user().as_uuid(),
        roles: p.roles().iter().map(|r| r.as_str().to_string()).collect(),
        permissions: p
            .permissions()
            .iter()
            .map(|x| x.as_str().to_string())
            .collect(),
    })
}
