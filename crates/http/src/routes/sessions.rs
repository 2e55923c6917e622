//! Sessions: refreshing an access token with the refresh cookie, signing out, and the
//! tenant's session policy. Sign-in (which starts a session) is in `magic_link`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use phivault_access::Credential;
use phivault_audit::{Action, Actor, ActorKind, Outcome};
use phivault_domain::UserId;
use phivault_domain::sessions::{self, PresentedRefresh, RefreshSecret, Session, SessionPolicy};
use phivault_store::{TenantId, TxMode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{Origin, unavailable};
use crate::extract::{ApiJson, Auth, Scoped, need};
use crate::throttle::{self, Endpoint};
use crate::{ApiError, AppState};

/// The refresh cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub(crate) const REFRESH_COOKIE: &str = "__Host-phivault-refresh";

/// This module's routes.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route(
            "/api/v1/auth/magic-link/verify",
            axum::routing::post(sign_in),
        )
        .route("/api/v1/auth/refresh", axum::routing::post(refresh))
        .route("/api/v1/auth/logout", axum::routing::post(logout))
        .route(
            "/api/v1/tenants/{tenant_id}/settings/sessions",
            axum::routing::get(get_policy).put(put_policy),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/settings/mfa",
            axum::routing::get(get_mfa).put(put_mfa),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(sign_in, refresh, logout, get_policy, put_policy, get_mfa, put_mfa))]
struct ModuleApi;

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    <ModuleApi as utoipa::OpenApi>::openapi()
}

/// A new access token.
#[derive(Serialize, ToSchema)]
pub(crate) struct TokenView {
    /// A signed access token for `Authorization: Bearer`.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires (at most 600).
    expires_in: i64,
    /// The session it belongs to.
    session_id: String,
    /// When the session ends at the latest.
    session_expires_at: chrono::DateTime<chrono::Utc>,
}

pub(crate) fn user_actor(user: UserId, roles: &[phivault_domain::users::Role]) -> Actor {
    Actor {
        kind: ActorKind::User,
        id: user.to_string(),
        role: roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn refresh_cookie(secret: &RefreshSecret, max_age: Duration) -> HeaderValue {
    let value = format!(
        "{REFRESH_COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        secret.expose(),
        max_age.num_seconds().max(0)
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-phivault-refresh=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
    )
}

/// The answer that starts or continues a session: the access token in the body and, with
/// a refresh token, the rotated cookie.
pub(crate) async fn session_answer(
    st: &AppState,
    tenant: TenantId,
    session: &Session,
    refresh: Option<RefreshSecret>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let now = st.now();
    let token = st.sessions.issue(tenant, session, now).await?;
    let body = TokenView {
        access_token: token.token,
        token_type: "Bearer",
        expires_in: token.expires_in,
        session_id: session.id.to_string(),
        session_expires_at: session.expires_at,
    };
    let mut response = (status, Json(body)).into_response();
    if let Some(secret) = refresh {
        response.headers_mut().insert(
            header::SET_COOKIE,
            refresh_cookie(&secret, session.expires_at - now),
        );
    }
    Ok(response)
}

/// A sign-in with a magic link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    /// The token from the link (`pvm_…`).
    token: String,
    /// Keep the session past the access token's life with a refresh cookie.
    #[serde(default)]
    remember_me: bool,
}

fn link_refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "link_invalid",
        "the sign-in link is invalid, expired or already used; ask for a new one",
    )
}

/// Signs in with a magic link: the link is used up and a session starts. Answers the
/// access token, and with `remember_me` sets the refresh cookie.
#[utoipa::path(post, path = "/api/v1/auth/magic-link/verify", tag = "sessions",
    request_body = SignIn,
    responses((status = 201, body = TokenView), (status = 401, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn sign_in(
    State(st): State<AppState>,
    origin: Origin,
    body: Result<ApiJson<SignIn>, ApiError>,
) -> Result<Response, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::MagicLinkVerify).await?;
    let ApiJson(body) = body?;
    // A sealed server cannot sign session tokens: refuse before the link is used up.
    if st.keys.status() == phivault_crypto::keys::KeyStatus::Sealed {
        return Err(crate::error::sealed());
    }
    let Some(presented) = phivault_domain::magic_links::PresentedLink::parse(body.token.trim())
    else {
        return Err(link_refused());
    };
    let tenant = presented.tenant();
    let now = st.now();
    // A link naming a tenant that does not exist fails like any other bad link.
    let mut tx = match st.db.begin_tenant(tenant, TxMode::Write).await {
        Ok(tx) => tx,
        Err(e) => return Err(e.into()),
    };
    let user = match phivault_domain::magic_links::consume(&mut tx, &presented, now).await {
        Ok(user) => user,
        Err(phivault_domain::DomainError::NotFound(_)) => {
            drop(tx);
            let event = origin.event(
                &st,
                None,
                Actor {
                    kind: ActorKind::Anonymous,
                    id: String::new(),
                    role: String::new(),
                },
                Action::AuthFailed,
                ("magic_link", String::new()),
                (
                    Outcome::Denied,
                    Some("sign-in link invalid, expired or used"),
                ),
            );
            if let Err(e) = st.auditor.record(event).await {
                tracing::error!(error = %e, "could not record a refused sign-in");
            }
            return Err(link_refused());
        }
        Err(e) => return Err(e.into()),
    };
    let roles = phivault_domain::users::get(&mut tx, user).await?.roles;
    // A second factor comes before the session when the user has one, or when the
    // tenant's policy requires one (then it is enrolled as part of this sign-in).
    let enrolled = phivault_domain::mfa::is_enrolled(&mut tx, user).await?;
    let required = phivault_domain::mfa::policy(&mut tx)
        .await?
        .requires(&roles);
    if enrolled || required {
        let challenge =
            phivault_domain::mfa::open_challenge(&mut tx, user, body.remember_me, now).await?;
        tx.commit().await?;
        return Ok(super::mfa::challenge_answer(tenant, &challenge, enrolled));
    }
    let (session, refresh) = sessions::start(&mut tx, user, body.remember_me, now).await?;
    let event = origin.event(
        &st,
        Some(tenant),
        user_actor(user, &roles),
        Action::AuthLogin,
        ("session", session.id.to_string()),
        (
            Outcome::Success,
            Some(if body.remember_me {
                "magic link, remember me"
            } else {
                "magic link"
            }),
        ),
    );
    st.auditor
        .append_in(&mut tx, event)
        .await
        .map_err(unavailable)?;
    tx.commit().await?;
    session_answer(&st, tenant, &session, refresh, StatusCode::CREATED).await
}

/// Refuses cookie-authenticated state changes from another site (CSRF): a browser says
/// where a request comes from in `Sec-Fetch-Site` and `Origin`.
fn same_site_only(headers: &HeaderMap) -> Result<(), ApiError> {
    let refused = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site_refused",
            "this request must come from the application's own origin",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        match site.to_str().unwrap_or("") {
            "same-origin" | "none" => {}
            _ => return Err(refused()),
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split("://").nth(1).unwrap_or("");
        if host.is_empty() || origin_host != host {
            return Err(refused());
        }
    }
    Ok(())
}

fn presented_refresh(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.to_string())
}

fn signed_out() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "session_ended",
        "the session has ended; sign in again",
    )
}

/// Trades the refresh cookie for a new access token and a new refresh cookie. Presenting
/// a refresh token that was already used revokes its whole session.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "sessions",
    responses((status = 200, body = TokenView), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)))]
pub(crate) async fn refresh(
    State(st): State<AppState>,
    origin: Origin,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::Refresh).await?;
    same_site_only(&headers)?;
    if st.keys.status() == phivault_crypto::keys::KeyStatus::Sealed {
        return Err(crate::error::sealed());
    }
    let Some(text) = presented_refresh(&headers) else {
        return Err(signed_out());
    };
    let Some(presented) = PresentedRefresh::parse(&text) else {
        return Err(signed_out());
    };
    let tenant = presented.tenant();
    let now = st.now();
    let mut tx = st.db.begin_tenant(tenant, TxMode::Write).await?;
    let result = sessions::refresh(&mut tx, &presented, now).await?;
    match result {
        Ok((session, user, next)) => {
            let event = origin.event(
                &st,
                Some(tenant),
                user_actor(user.id, &user.roles),
                Action::AuthLogin,
                ("session", session.id.to_string()),
                (Outcome::Success, Some("session refreshed")),
            );
            st.auditor
                .append_in(&mut tx, event)
                .await
                .map_err(unavailable)?;
            tx.commit().await?;
            session_answer(&st, tenant, &session, Some(next), StatusCode::OK).await
        }
        Err(ended) => {
            // The revocation a reused token causes must stick, with its event.
            let event = origin.event(
                &st,
                Some(tenant),
                Actor {
                    kind: ActorKind::Anonymous,
                    id: String::new(),
                    role: String::new(),
                },
                Action::AuthFailed,
                ("session_refresh", String::new()),
                (Outcome::Denied, Some(ended.as_str())),
            );
            st.auditor
                .append_in(&mut tx, event)
                .await
                .map_err(unavailable)?;
            tx.commit().await?;
            let mut response = signed_out().into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, clear_cookie());
            Ok(response)
        }
    }
}

/// Ends the caller's session at once: its access tokens and refresh token stop working.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "sessions",
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn logout(
    State(st): State<AppState>,
    Auth(principal): Auth,
    origin: Origin,
) -> Result<Response, ApiError> {
    let Credential::Session(session) = principal.credential() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_a_session",
            "an API token has no session to end; revoke it instead",
        ));
    };
    let tenant = principal.tenant();
    let mut tx = st.db.begin_tenant(tenant, TxMode::Write).await?;
    sessions::revoke(&mut tx, session, "signed out", st.now()).await?;
    let event = origin.event(
        &st,
        Some(tenant),
        user_actor(principal.user(), principal.roles()),
        Action::AuthLogout,
        ("session", session.to_string()),
        (Outcome::Success, None),
    );
    st.auditor
        .append_in(&mut tx, event)
        .await
        .map_err(unavailable)?;
    tx.commit().await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

/// A tenant's session policy.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyView {
    /// Idle timeout, 60 to 86400 seconds (default 900).
    session_idle_secs: i64,
    /// Absolute lifetime, 300 to 2592000 seconds, not below the idle timeout (default
    /// 43200).
    session_absolute_secs: i64,
}

/// The tenant's session policy.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/settings/sessions", tag = "sessions",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = PolicyView), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_policy(
    State(st): State<AppState>,
    s: Scoped<need::UserRead>,
) -> Result<Json<PolicyView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let p = sessions::policy(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(PolicyView {
        session_idle_secs: p.idle.num_seconds(),
        session_absolute_secs: p.absolute.num_seconds(),
    }))
}

/// Sets the tenant's session policy; audited with before and after.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/settings/sessions", tag = "sessions",
    params(("tenant_id" = Uuid, Path)), request_body = PolicyView,
    responses((status = 200, body = PolicyView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_policy(
    State(st): State<AppState>,
    s: Scoped<need::TenantManage>,
    ApiJson(body): ApiJson<PolicyView>,
) -> Result<Json<PolicyView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = sessions::policy(&mut tx).await?;
    let after = SessionPolicy {
        idle: Duration::seconds(body.session_idle_secs),
        absolute: Duration::seconds(body.session_absolute_secs),
    };
    sessions::set_policy(&mut tx, after, st.now()).await?;
    let mut event = s.audit.event(
        &st,
        Action::AdminReferenceUpdated,
        "session_policy",
        s.scope.tenant(),
        &["session_idle_secs", "session_absolute_secs"],
    );
    event.before = Some(serde_json::json!({
        "session_idle_secs": before.idle.num_seconds(),
        "session_absolute_secs": before.absolute.num_seconds(),
    }));
    event.after = Some(serde_json::json!({
        "session_idle_secs": body.session_idle_secs,
        "session_absolute_secs": body.session_absolute_secs,
    }));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(body))
}

/// Who must use a second factor in a tenant.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MfaView {
    /// `none`, `admins` (owners and admins) or `everyone`.
    mfa_policy: String,
}

/// The tenant's MFA policy.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/settings/mfa", tag = "sessions",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = MfaView), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_mfa(
    State(st): State<AppState>,
    s: Scoped<need::UserRead>,
) -> Result<Json<MfaView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let p = phivault_domain::mfa::policy(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(MfaView {
        mfa_policy: p.as_str().into(),
    }))
}

/// Sets the tenant's MFA policy; audited with before and after. Users the policy newly
/// covers enroll a factor at their next sign-in.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/settings/mfa", tag = "sessions",
    params(("tenant_id" = Uuid, Path)), request_body = MfaView,
    responses((status = 200, body = MfaView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_mfa(
    State(st): State<AppState>,
    s: Scoped<need::TenantManage>,
    ApiJson(body): ApiJson<MfaView>,
) -> Result<Json<MfaView>, ApiError> {
    let Some(policy) = phivault_domain::mfa::MfaPolicy::parse(&body.mfa_policy) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "mfa_policy must be none, admins or everyone",
        ));
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = phivault_domain::mfa::policy(&mut tx).await?;
    phivault_domain::mfa::set_policy(&mut tx, policy, st.now()).await?;
    let mut event = s.audit.event(
        &st,
        Action::AdminReferenceUpdated,
        "mfa_policy",
        s.scope.tenant(),
        &["mfa_policy"],
    );
    event.before = Some(serde_json::json!({ "mfa_policy": before.as_str() }));
    event.after = Some(serde_json::json!({ "mfa_policy": policy.as_str() }));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(body))
}
