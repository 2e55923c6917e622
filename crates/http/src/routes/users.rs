use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use phivault_access::Permission;
use phivault_domain::users::{self, NewUser, PracticeAccess, Role, User};
use phivault_domain::{PracticeId, UserId, practices, tokens};
use phivault_store::{TenantTx, TxMode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::extract::{ApiJson, ApiPath, Requires, Scoped, need};
use crate::{ApiError, AppState};

/// The user-administration routes.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post, put};
    axum::Router::new()
        .route(
            "/api/v1/tenants/{tenant_id}/users",
            get(list_users).post(create_user),
        )
        .route("/api/v1/tenants/{tenant_id}/users/{user_id}", get(get_user))
        .route(
            "/api/v1/tenants/{tenant_id}/users/{user_id}/roles",
            put(set_roles),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/users/{user_id}/practices",
            put(set_practices),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/users/{user_id}/deactivate",
            post(deactivate_user),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_users,
    create_user,
    get_user,
    set_roles,
    set_practices,
    deactivate_user
))]
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
    let practices = practice_access(body.all_practices, body.practice_ids)?;
    check_role_count(&body.roles)?;
    may_grant_roles(&s, &body.roles)?;
    let new = NewUser {
        email: body.email,
        display_name: body.display_name,
        roles: body.roles,
        practices,
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    may_grant_practices(&mut tx, &s, &new.practices).await?;
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

/// The most roles a request may name (each role once).
const MAX_ROLES: usize = Role::ALL.len();

/// The `{user_id}` of a user route.
#[derive(Deserialize)]
pub(crate) struct UserPath {
    user_id: Uuid,
}

/// A user's new roles.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetRoles {
    /// One to six of owner, admin, member, billing, provider, qa; they replace the
    /// user's roles.
    #[schema(value_type = Vec<String>)]
    roles: Vec<Role>,
}

/// A user's new practice grants: every practice, or a list.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetPractices {
    /// Grant every practice, present and future.
    #[serde(default)]
    all_practices: bool,
    /// Otherwise these practices (at most 500); an empty list removes every grant.
    #[serde(default)]
    practice_ids: Vec<Uuid>,
}

/// The grants a request names; both forms at once are refused.
fn practice_access(all: bool, ids: Vec<Uuid>) -> Result<PracticeAccess, ApiError> {
    if ids.len() > users::MAX_PRACTICE_GRANTS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!(
                "practice_ids has more than {} practices",
                users::MAX_PRACTICE_GRANTS
            ),
        ));
    }
    match (all, ids.is_empty()) {
        (true, true) => Ok(PracticeAccess::All),
        (false, _) => Ok(PracticeAccess::Only(
            ids.into_iter().map(PracticeId::from_uuid).collect(),
        )),
        (true, false) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "practice_ids must be empty when all_practices is true",
        )),
    }
}

fn check_role_count(roles: &[Role]) -> Result<(), ApiError> {
    if roles.len() > MAX_ROLES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("roles has more than {MAX_ROLES} entries"),
        ));
    }
    Ok(())
}

fn exceeds(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "exceeds_own_permissions", message)
}

/// Whether the caller holds every permission of `roles`.
fn holds_roles<R: Requires>(s: &Scoped<R>, roles: &[Role]) -> bool {
    let mine = s.principal.permissions();
    roles
        .iter()
        .flat_map(|r| Permission::granted_by(*r))
        .all(|p| mine.contains(p))
}

/// The caller may grant only roles whose permissions they hold (so only an owner makes
/// an owner).
fn may_grant_roles<R: Requires>(s: &Scoped<R>, roles: &[Role]) -> Result<(), ApiError> {
    if holds_roles(s, roles) {
        Ok(())
    } else {
        Err(exceeds(
            "a role can be granted only by a user who holds every permission it grants",
        ))
    }
}

/// The caller may change only users whose permissions they hold (so an admin cannot
/// demote or deactivate an owner).
fn may_change<R: Requires>(s: &Scoped<R>, target: &User) -> Result<(), ApiError> {
    if holds_roles(s, &target.roles) {
        Ok(())
    } else {
        Err(exceeds(
            "a user can be changed only by a user who holds every permission they hold",
        ))
    }
}

/// `all_practices` is granted only by a caller who has it; listed practices must be
/// visible to the caller (checked again in the change itself), else 404.
async fn may_grant_practices<R: Requires>(
    tx: &mut TenantTx,
    s: &Scoped<R>,
    access: &PracticeAccess,
) -> Result<(), ApiError> {
    match access {
        PracticeAccess::All => {
            let me = users::get(tx, s.principal.user()).await?;
            if me.practices != PracticeAccess::All {
                return Err(exceeds(
                    "access to every practice can be granted only by a user who has it",
                ));
            }
        }
        PracticeAccess::Only(ids) => {
            for id in ids {
                practices::ensure_visible(tx, s.scope.practices(), *id).await?;
            }
        }
    }
    Ok(())
}

/// No one changes their own roles or grants, or deactivates themselves.
fn not_self<R: Requires>(s: &Scoped<R>, target: UserId) -> Result<(), ApiError> {
    if s.principal.user() == target {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "self_change",
            "users cannot change their own roles or practice grants, or deactivate themselves",
        ))
    } else {
        Ok(())
    }
}

fn is_active_owner(user: &User) -> bool {
    user.is_active() && user.roles.contains(&Role::Owner)
}

/// Refuses a change that took the tenant's last active owner away. The owner rows were
/// locked (`users::lock_owners`) before `before` was read.
async fn keep_an_owner(tx: &mut TenantTx, before: &User, after: &User) -> Result<(), ApiError> {
    if is_active_owner(before) && !is_active_owner(after) && users::active_owners(tx).await? == 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_owner",
            "the tenant's last active owner cannot lose the owner role or be deactivated",
        ));
    }
    Ok(())
}

/// Opens the change's transaction, locks the owner rows and reads the target, after the
/// checks every change shares.
async fn begin_change<R: Requires>(
    st: &AppState,
    s: &Scoped<R>,
    target: UserId,
) -> Result<(TenantTx, User), ApiError> {
    not_self(s, target)?;
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    users::lock_owners(&mut tx).await?;
    let before = users::get(&mut tx, target).await?;
    may_change(s, &before)?;
    Ok((tx, before))
}

/// Records the change in the same transaction and commits both.
async fn finish_change<R: Requires>(
    st: &AppState,
    s: &Scoped<R>,
    mut tx: TenantTx,
    before: &User,
    after: &User,
    fields: &[&str],
) -> Result<(), ApiError> {
    keep_an_owner(&mut tx, before, after).await?;
    let mut event = s.audit.event(
        st,
        phivault_audit::Action::AdminUserChanged,
        "user",
        after.id,
        fields,
    );
    event.before = Some(user_snapshot(before));
    event.after = Some(user_snapshot(after));
    s.audit.append_in(st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(())
}

/// One user with roles and practice grants.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/users/{user_id}", tag = "users",
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_user(
    State(st): State<AppState>,
    s: Scoped<need::UserRead>,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<Json<UserView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let user = users::get(&mut tx, UserId::from_uuid(path.user_id)).await?;
    tx.commit().await?;
    Ok(Json(user.into()))
}

/// Replaces a user's roles. Refused for one's own roles (403 `self_change`), for roles or
/// users beyond the caller's own permissions (403 `exceeds_own_permissions`) and for the
/// last active owner's owner role (409 `last_owner`).
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/users/{user_id}/roles", tag = "users",
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)), request_body = SetRoles,
    responses((status = 200, body = UserView), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn set_roles(
    State(st): State<AppState>,
    s: Scoped<need::UserManage>,
    ApiPath(path): ApiPath<UserPath>,
    ApiJson(body): ApiJson<SetRoles>,
) -> Result<Json<UserView>, ApiError> {
    let target = UserId::from_uuid(path.user_id);
    not_self(&s, target)?;
    check_role_count(&body.roles)?;
    may_grant_roles(&s, &body.roles)?;
    let (mut tx, before) = begin_change(&st, &s, target).await?;
    let after = users::set_roles(&mut tx, target, body.roles).await?;
    finish_change(&st, &s, tx, &before, &after, &["roles"]).await?;
    Ok(Json(after.into()))
}

/// Replaces a user's practice grants: `all_practices`, or `practice_ids` (each visible to
/// the caller; only a caller with every practice grants `all_practices`).
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/users/{user_id}/practices", tag = "users",
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)), request_body = SetPractices,
    responses((status = 200, body = UserView), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn set_practices(
    State(st): State<AppState>,
    s: Scoped<need::UserManage>,
    ApiPath(path): ApiPath<UserPath>,
    ApiJson(body): ApiJson<SetPractices>,
) -> Result<Json<UserView>, ApiError> {
    let target = UserId::from_uuid(path.user_id);
    not_self(&s, target)?;
    let access = practice_access(body.all_practices, body.practice_ids)?;
    let (mut tx, before) = begin_change(&st, &s, target).await?;
    may_grant_practices(&mut tx, &s, &access).await?;
    let after = users::set_practices(&mut tx, s.scope.practices(), target, access).await?;
    finish_change(&st, &s, tx, &before, &after, &["practices"]).await?;
    Ok(Json(after.into()))
}

/// Deactivates a user and revokes every API token of theirs: their next request is
/// refused (401). Refused for oneself (403 `self_change`), for the last active owner
/// (409 `last_owner`) and for a deactivated user (409 `already_deactivated`).
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/users/{user_id}/deactivate", tag = "users",
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn deactivate_user(
    State(st): State<AppState>,
    s: Scoped<need::UserManage>,
    ApiPath(path): ApiPath<UserPath>,
) -> Result<Json<UserView>, ApiError> {
    let target = UserId::from_uuid(path.user_id);
    let (mut tx, before) = begin_change(&st, &s, target).await?;
    if !before.is_active() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_deactivated",
            "the user is already deactivated",
        ));
    }
    users::deactivate(&mut tx, target).await?;
    tokens::revoke_all_of_user(&mut tx, target, st.now()).await?;
    // Sessions end too (authentication also refuses a deactivated user's sessions; this
    // records why in the session rows).
    phivault_domain::sessions::revoke_user(&mut tx, target, "user deactivated", st.now()).await?;
    let after = users::get(&mut tx, target).await?;
    finish_change(&st, &s, tx, &before, &after, &["status", "api_tokens"]).await?;
    Ok(Json(after.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_take_one_form_and_a_bounded_list() {
        assert_eq!(practice_access(true, vec![]).unwrap(), PracticeAccess::All);
        assert_eq!(
            practice_access(false, vec![]).unwrap(),
            PracticeAccess::Only(vec![])
        );
        assert_eq!(
            practice_access(true, vec![Uuid::nil()]).unwrap_err().code(),
            "invalid_field"
        );
        let many = vec![Uuid::nil(); users::MAX_PRACTICE_GRANTS + 1];
        assert_eq!(
            practice_access(false, many).unwrap_err().code(),
            "invalid_field"
        );
        assert!(check_role_count(&Role::ALL).is_ok());
        assert_eq!(
            check_role_count(&[Role::Qa; MAX_ROLES + 1])
                .unwrap_err()
                .code(),
            "invalid_field"
        );
    }
}
