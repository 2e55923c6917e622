use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use phivault_domain::practices::{self, Practice};
use phivault_store::TxMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::extract::{ApiJson, Scoped, need};
use crate::{ApiError, AppState};

/// A practice.
#[derive(Serialize, ToSchema)]
pub(crate) struct PracticeView {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<Practice> for PracticeView {
    fn from(p: Practice) -> Self {
        PracticeView {
            id: p.id.as_uuid(),
            name: p.name,
            created_at: p.created_at,
        }
    }
}

/// A new practice.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePractice {
    /// Display name, 1 to 200 characters.
    name: String,
}

/// The practices the caller may see.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/practices", tag = "practices",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = Vec<PracticeView>), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_practices(
    State(st): State<AppState>,
    s: Scoped<need::PracticeRead>,
) -> Result<Json<Vec<PracticeView>>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let list = practices::list(&mut tx, s.scope.practices()).await?;
    tx.commit().await?;
    Ok(Json(list.into_iter().map(PracticeView::from).collect()))
}

/// Creates a practice.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/practices", tag = "practices",
    params(("tenant_id" = Uuid, Path)), request_body = CreatePractice,
    responses((status = 201, body = PracticeView), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_practice(
    State(st): State<AppState>,
    s: Scoped<need::PracticeManage>,
    ApiJson(body): ApiJson<CreatePractice>,
) -> Result<(StatusCode, Json<PracticeView>), ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let practice = practices::create(&mut tx, &body.name, st.now()).await?;
    let mut event = s.audit.event(
        &st,
        phivault_audit::Action::AdminReferenceUpdated,
        "practice",
        practice.id,
        &["name"],
    );
    event.after = Some(serde_json::json!({ "practice_id": practice.id.to_string() }));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(practice.into())))
}
