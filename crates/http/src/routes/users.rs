use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use phivault_domain::PracticeId;
use phivault_domain::users::{self, NewUser, PracticeAccess, Role, User};
use phivault_store::TxMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::extract::{ApiJson, Scoped, need};
use crate::{ApiError, AppState};

/// The user-administration routes.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/api/v1/tenants/{tenant_id}/users",
        axum::routing::get(list_users).post(create_user),
    )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(list_users, create_user))]
struct UsersApi;

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    <UsersApi as utoipa::OpenApi>::openapi()
}

/// A user of the tenant.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserView {
    id: Uuid,
    email: String,
    display_name: String,
    status: String,
    roles: Vec<String>,
    /// `true` when the user may work in every practice.
    all_practices: bool,
    /// The granted practices when `all_practices` is false.
    practice_ids: Vec<Uuid>,
    created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        let (all_practices, practice_ids) = match u.practices {
            PracticeAccess::All => (true, Vec::new()),
            PracticeAccess::Only(ids) => (false, ids.into_iter().map(|p| p.as_uuid()).collect()),
        };
        UserView {
            id: u.id.as_uuid(),
            email: u.email,
            display_name: u.display_name,
            status: u.status,
            roles: u.roles.iter().map(|r| r.as_str().to_string()).collect(),
            all_practices,
            practice_ids,
            created_at: u.created_at,
        }
    }
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUser {
    email: String,
    display_name: String,
    /// One or more of owner, admin, member, billing, provider, qa.
    #[schema(value_type = Vec<String>)]
    roles: Vec<Role>,
    /// Practices the user may work in; omit or leave empty with `all_practices`.
    #[serde(default)]
    practice_ids: Vec<Uuid>,
    /// Grant every practice, present and future.
    #[serde(default)]
    all_practices: bool,
}

/// Users of the tenant.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/users", tag = "users",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = Vec<UserView>), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_users(
    State(st): State<AppState>,
    s: Scoped<need::UserRead>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let list = users::list(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(list.into_iter().map(UserView::from).collect()))
}

/// Creates a user with roles and practice grants.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/users", tag = "users",
    params(("tenant_id" = Uuid, Path)), request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn create_user(
    State(st): State<AppState>,
    s: Scoped<need::UserManage>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let practices = match (body.all_practices, body.practice_ids.is_empty()) {
        (true, true) => PracticeAccess::All,
        (false, _) => PracticeAccess::Only(
            body.practice_ids
                .into_iter()
                .map(PracticeId::from_uuid)
                .collect(),
        ),
        (true, false) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "practice_ids must be empty when all_practices is true",
            ));
        }
    };
    let new = NewUser {
        email: body.email,
        display_name: body.display_name,
        roles: body.roles,
        practices,
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let user = users::create(&mut tx, new, st.now()).await?;
    let mut event = s.audit.event(
        &st,
        phivault_audit::Action::AdminUserChanged,
        "user",
        user.id,
        &["email", "display_name", "roles", "practices", "status"],
    );
    event.before = None;
    event.after = Some(user_snapshot(&user));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// The metadata an admin change records before and after: ids, roles, grants, status.
/// Names and e-mail addresses are not copied into the trail.
fn user_snapshot(user: &users::User) -> serde_json::Value {
    serde_json::json!({
        "user_id": user.id.to_string(),
        "roles": user.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "practices": match &user.practices {
            PracticeAccess::All => serde_json::json!("all"),
            PracticeAccess::Only(ids) => serde_json::json!(ids.iter().map(|p| p.to_string()).collect::<Vec<_>>()),
        },
        "status": user.status.as_str(),
    })
}
