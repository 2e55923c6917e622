//! The staff realm over HTTP: platform operators sign in with a password and then TOTP,
//! always (a staff member without a factor enrolls one through the same challenge), and
//! read platform metadata — tenant ids, names, status, times and counts, never PHI.
//! Staff tokens have their own audience: they do not work on tenant routes, and tenant
//! tokens do not work here. Every staff event goes on the platform audit chain.

use axum::Json;
use axum::extract::{FromRequestParts, MatchedPath, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use phivault_access::staff::{StaffPrincipal, authenticate_staff, issue_staff};
use phivault_audit::{Action, Actor, ActorKind, Outcome};
use phivault_domain::mfa::Verdict;
use phivault_domain::staff::{self, Challenge, StaffRole};
use phivault_domain::tenants;
use phivault_store::{PlatformTx, TenantId, TxMode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{Origin, record_refusal, unavailable};
use crate::extract::{ApiJson, ApiPath};
use crate::throttle::{self, Endpoint};
use crate::{ApiError, AppState};

const CHALLENGE_PREFIX: &str = "pvs_";

/// This module's routes.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/v1/staff/auth/login", post(login))
        .route("/api/v1/staff/auth/mfa/enroll", post(enroll))
        .route("/api/v1/staff/auth/mfa/enroll/confirm", post(confirm))
        .route("/api/v1/staff/auth/mfa/verify", post(verify))
        .route("/api/v1/staff/auth/logout", post(logout))
        .route("/api/v1/staff/tenants", get(list_tenants))
        .route("/api/v1/staff/tenants/{tenant_id}", get(get_tenant))
        .route("/api/v1/staff/staff", get(list_staff))
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    login,
    enroll,
    confirm,
    verify,
    logout,
    list_tenants,
    get_tenant,
    list_staff
))]
struct ModuleApi;

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    <ModuleApi as utoipa::OpenApi>::openapi()
}

pub(crate) fn staff_actor(id: Uuid, role: StaffRole) -> Actor {
    Actor {
        kind: ActorKind::Staff,
        id: id.to_string(),
        role: role.as_str().into(),
    }
}

fn anonymous() -> Actor {
    Actor {
        kind: ActorKind::Anonymous,
        id: String::new(),
        role: String::new(),
    }
}

/// The authenticated staff member, from `Authorization: Bearer <staff access token>`.
/// A refusal is recorded (`auth.failed`, platform chain) and answered 401.
pub(crate) struct StaffAuth(pub(crate) StaffPrincipal);

impl FromRequestParts<AppState> for StaffAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|t| {
                t.strip_prefix("Bearer ")
                    .or_else(|| t.strip_prefix("bearer "))
            });
        let result = match token {
            Some(t) => authenticate_staff(&st.db, &st.sessions, t.trim(), st.now()).await,
            None => Err(phivault_access::AccessError::Unauthenticated),
        };
        match result {
            Ok(p) => Ok(StaffAuth(p)),
            Err(phivault_access::AccessError::Unauthenticated) => {
                let route = parts
                    .extensions
                    .get::<MatchedPath>()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                let reason = if token.is_some() {
                    "staff bearer token not valid"
                } else {
                    "no bearer token"
                };
                record_refusal(
                    st,
                    parts,
                    None,
                    anonymous(),
                    Action::AuthFailed,
                    ("route", route),
                    reason,
                )
                .await;
                Err(phivault_access::AccessError::Unauthenticated.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

pub(crate) fn not_sealed(st: &AppState) -> Result<(), ApiError> {
    if st.keys.status() == phivault_crypto::keys::KeyStatus::Sealed {
        return Err(crate::error::sealed());
    }
    Ok(())
}

async fn write(st: &AppState, event: phivault_audit::AuditEvent) -> Result<(), ApiError> {
    st.auditor.record(event).await.map_err(unavailable)?;
    Ok(())
}

// --- sign-in --------------------------------------------------------------------------

/// A staff sign-in.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    /// The staff e-mail address.
    email: String,
    /// The password.
    password: String,
}

/// A sign-in waiting for its second factor.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChallengeView {
    /// `mfa_required` (answer with a code) or `mfa_enrollment_required` (enroll a factor
    /// with this challenge first).
    status: &'static str,
    /// The challenge (`pvs_…`), valid for 5 minutes.
    challenge: String,
}

fn credentials_refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the e-mail address or password is wrong",
    )
}

/// First step of a staff sign-in: e-mail and password. An unknown address, a
/// deactivated account and a wrong password get the same answer, in the same time.
#[utoipa::path(post, path = "/api/v1/staff/auth/login", tag = "staff", request_body = Login,
    responses((status = 200, body = ChallengeView), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn login(
    State(st): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::StaffLogin).await?;
    throttle::per_staff_account(&st, &origin, &body.email).await?;
    not_sealed(&st)?;
    let mut tx = st.db.begin_platform(TxMode::Read).await?;
    let found = if body.email.len() <= 320 {
        staff::credentials(&mut tx, &body.email).await?
    } else {
        None
    };
    tx.commit().await?;
    let hash = found.as_ref().map(|(_, h)| h.clone());
    let password = body.password;
    let ok = tokio::task::spawn_blocking(move || {
        password.len() <= 1024 && staff::verify_password(hash.as_deref(), &password)
    })
    .await
    .map_err(|_| ApiError::internal())?;
    let member = match (found, ok) {
        (Some((member, _)), true) => member,
        (found, _) => {
            let actor = match &found {
                Some((m, _)) => staff_actor(m.id, m.role),
                None => anonymous(),
            };
            let event = origin.event(
                &st,
                None,
                actor,
                Action::AuthFailed,
                ("staff_login", String::new()),
                (Outcome::Denied, Some("staff e-mail or password wrong")),
            );
            write(&st, event).await?;
            return Err(credentials_refused());
        }
    };
    let mut tx = st.db.begin_platform(TxMode::Write).await?;
    let enrolled = staff::is_enrolled(&mut tx, member.id).await?;
    let c = staff::open_challenge(&mut tx, member.id, st.now()).await?;
    tx.commit().await?;
    Ok((
        StatusCode::OK,
        Json(ChallengeView {
            status: if enrolled {
                "mfa_required"
            } else {
                "mfa_enrollment_required"
            },
            challenge: format!("{CHALLENGE_PREFIX}{}", c.id.simple()),
        }),
    )
        .into_response())
}

fn challenge_refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "challenge_invalid",
        "the sign-in challenge is invalid or expired; sign in again",
    )
}

/// Opens a platform transaction and finds the live challenge.
async fn open(st: &AppState, text: &str) -> Result<(PlatformTx, Challenge), ApiError> {
    not_sealed(st)?;
    let id = text
        .trim()
        .strip_prefix(CHALLENGE_PREFIX)
        .filter(|id| id.len() == 32)
        .and_then(|id| Uuid::try_parse(id).ok())
        .ok_or_else(challenge_refused)?;
    let mut tx = st.db.begin_platform(TxMode::Write).await?;
    let c = staff::find_challenge(&mut tx, id, st.now())
        .await?
        .ok_or_else(challenge_refused)?;
    Ok((tx, c))
}

async fn member(tx: &mut PlatformTx, id: Uuid) -> Result<staff::Staff, ApiError> {
    staff::get(tx, id).await?.ok_or_else(challenge_refused)
}

/// A challenge to enroll with.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnrollRequest {
    /// The challenge from the sign-in (`mfa_enrollment_required`).
    challenge: String,
}

/// A factor to add to an authenticator app.
#[derive(Serialize, ToSchema)]
pub(crate) struct EnrollmentView {
    /// The `otpauth://` URI (it holds the secret: show it to the staff member only).
    otpauth_uri: String,
    /// The same URI as a QR code (SVG).
    qr_svg: String,
}

/// Starts enrolling the TOTP factor of a staff member who has none.
#[utoipa::path(post, path = "/api/v1/staff/auth/mfa/enroll", tag = "staff", request_body = EnrollRequest,
    responses((status = 200, body = EnrollmentView), (status = 401, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn enroll(
    State(st): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<Json<EnrollmentView>, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::StaffMfaEnroll).await?;
    let (mut tx, c) = open(&st, &body.challenge).await?;
    let m = member(&mut tx, c.staff).await?;
    let e = staff::begin_enrollment(&mut tx, &st.keys, c.staff, &m.email, st.now()).await?;
    tx.commit().await?;
    let qr = qrcode::QrCode::new(e.otpauth_uri.as_bytes()).map_err(|_| ApiError::internal())?;
    let svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build();
    Ok(Json(EnrollmentView {
        otpauth_uri: e.otpauth_uri,
        qr_svg: svg,
    }))
}

/// An answer to a challenge.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Answer {
    /// The challenge from the sign-in.
    challenge: String,
    /// A 6-digit TOTP code, or a recovery code (`verify` only).
    code: String,
}

/// Recovery codes, at the end of enrollment.
#[derive(Serialize, ToSchema)]
pub(crate) struct Enrolled {
    /// Single-use recovery codes, shown this once.
    recovery_codes: Vec<String>,
}

/// Confirms enrollment with a first code and answers the recovery codes, this once. The
/// sign-in then finishes at `verify` with the next code, on the same challenge.
#[utoipa::path(post, path = "/api/v1/staff/auth/mfa/enroll/confirm", tag = "staff", request_body = Answer,
    responses((status = 200, body = Enrolled), (status = 401, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn confirm(
    State(st): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<Answer>,
) -> Result<Json<Enrolled>, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::StaffMfaConfirm).await?;
    let (mut tx, c) = open(&st, &body.challenge).await?;
    let m = member(&mut tx, c.staff).await?;
    let codes = staff::confirm_enrollment(&mut tx, &st.keys, c.staff, &body.code, st.now()).await?;
    tx.commit().await?;
    let event = origin.event(
        &st,
        None,
        staff_actor(m.id, m.role),
        Action::AuthMfaEnrolled,
        ("staff_second_factor", m.id.to_string()),
        (Outcome::Success, Some("totp")),
    );
    write(&st, event).await?;
    Ok(Json(Enrolled {
        recovery_codes: codes.0,
    }))
}

/// A new staff access token.
#[derive(Serialize, ToSchema)]
pub(crate) struct StaffTokenView {
    /// A signed staff access token for `Authorization: Bearer` on `/api/v1/staff/` routes.
    access_token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// Seconds until the access token expires (at most 600).
    expires_in: i64,
    /// The staff session it belongs to.
    session_id: String,
    /// When the session ends at the latest.
    session_expires_at: chrono::DateTime<chrono::Utc>,
}

/// Answers a staff challenge with a TOTP or recovery code; starts the staff session.
#[utoipa::path(post, path = "/api/v1/staff/auth/mfa/verify", tag = "staff", request_body = Answer,
    responses((status = 201, body = StaffTokenView), (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn verify(
    State(st): State<AppState>,
    origin: Origin,
    ApiJson(body): ApiJson<Answer>,
) -> Result<Response, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::StaffMfaVerify).await?;
    let (mut tx, c) = open(&st, &body.challenge).await?;
    let m = member(&mut tx, c.staff).await?;
    if !staff::is_enrolled(&mut tx, c.staff).await? {
        return Err(challenge_refused());
    }
    let now = st.now();
    let verdict = staff::verify(&mut tx, &st.keys, c.staff, &body.code, now).await?;
    if verdict != Verdict::Accepted {
        // The attempt counters stick.
        tx.commit().await?;
        let event = origin.event(
            &st,
            None,
            staff_actor(m.id, m.role),
            Action::AuthFailed,
            ("staff_second_factor", m.id.to_string()),
            (
                Outcome::Denied,
                Some(if verdict == Verdict::Locked {
                    "second factor locked after repeated failures"
                } else {
                    "wrong or reused second-factor code"
                }),
            ),
        );
        write(&st, event).await?;
        return Err(if verdict == Verdict::Locked {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "mfa_locked",
                "too many wrong codes; the second factor is locked for 15 minutes",
            )
        } else {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "mfa_invalid",
                "the code is wrong or was already used",
            )
        });
    }
    if !staff::close_challenge(&mut tx, c.id, now).await? {
        return Err(challenge_refused());
    }
    let session = staff::start_session(&mut tx, c.staff, now).await?;
    tx.commit().await?;
    let event = origin.event(
        &st,
        None,
        staff_actor(m.id, m.role),
        Action::AuthLogin,
        ("staff_session", session.id.to_string()),
        (Outcome::Success, Some("staff password and TOTP")),
    );
    write(&st, event).await?;
    let token = issue_staff(&st.sessions, &session, now).await?;
    Ok((
        StatusCode::CREATED,
        Json(StaffTokenView {
            access_token: token.token,
            token_type: "Bearer",
            expires_in: token.expires_in,
            session_id: session.id.to_string(),
            session_expires_at: session.expires_at,
        }),
    )
        .into_response())
}

/// Ends the caller's staff session at once.
#[utoipa::path(post, path = "/api/v1/staff/auth/logout", tag = "staff",
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn logout(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
) -> Result<Response, ApiError> {
    let mut tx = st.db.begin_platform(TxMode::Write).await?;
    staff::revoke_session(&mut tx, p.session(), st.now()).await?;
    tx.commit().await?;
    let event = origin.event(
        &st,
        None,
        staff_actor(p.staff(), p.role()),
        Action::AuthLogout,
        ("staff_session", p.session().to_string()),
        (Outcome::Success, None),
    );
    write(&st, event).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- platform metadata ----------------------------------------------------------------

/// A tenant as staff see it: metadata and counts, never PHI.
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantMeta {
    id: String,
    slug: String,
    name: String,
    /// `active` or `suspended`.
    status: String,
    created_at: chrono::DateTime<chrono::Utc>,
    users: i64,
    practices: i64,
    patients: i64,
}

async fn tenant_meta(st: &AppState, t: tenants::Tenant) -> Result<TenantMeta, ApiError> {
    let mut tx = st.db.begin_tenant(t.id, TxMode::Read).await?;
    let (users, practices, patients) = staff::tenant_counts(&mut tx).await?;
    tx.commit().await?;
    Ok(TenantMeta {
        id: t.id.to_string(),
        slug: t.slug,
        name: t.name,
        status: t.status,
        created_at: t.created_at,
        users,
        practices,
        patients,
    })
}

async fn record_read(
    st: &AppState,
    origin: &Origin,
    p: &StaffPrincipal,
    what: (&str, String),
) -> Result<(), ApiError> {
    let event = origin.event(
        st,
        None,
        staff_actor(p.staff(), p.role()),
        Action::StaffRead,
        what,
        (Outcome::Success, None),
    );
    write(st, event).await
}

/// Every tenant's metadata (any staff role).
#[utoipa::path(get, path = "/api/v1/staff/tenants", tag = "staff",
    responses((status = 200, body = [TenantMeta]), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_tenants(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
) -> Result<Json<Vec<TenantMeta>>, ApiError> {
    let mut tx = st.db.begin_platform(TxMode::Read).await?;
    let list = tenants::list(&mut tx).await?;
    tx.commit().await?;
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        out.push(tenant_meta(&st, t).await?);
    }
    record_read(&st, &origin, &p, ("tenants", String::new())).await?;
    Ok(Json(out))
}

/// One tenant's metadata (any staff role).
#[utoipa::path(get, path = "/api/v1/staff/tenants/{tenant_id}", tag = "staff",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = TenantMeta), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_tenant(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
    ApiPath(tenant_id): ApiPath<Uuid>,
) -> Result<Json<TenantMeta>, ApiError> {
    let mut tx = st.db.begin_platform(TxMode::Read).await?;
    let t = tenants::get(&mut tx, TenantId::from_uuid(tenant_id)).await?;
    tx.commit().await?;
    let meta = tenant_meta(&st, t).await?;
    record_read(&st, &origin, &p, ("tenant", tenant_id.to_string())).await?;
    Ok(Json(meta))
}

/// A staff member (no password, no factor).
#[derive(Serialize, ToSchema)]
pub(crate) struct StaffView {
    id: String,
    email: String,
    display_name: String,
    role: &'static str,
    /// `active` or `deactivated`.
    status: &'static str,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Every staff member (super_admin only).
#[utoipa::path(get, path = "/api/v1/staff/staff", tag = "staff",
    responses((status = 200, body = [StaffView]), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_staff(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
) -> Result<Json<Vec<StaffView>>, ApiError> {
    if !p.is_one_of(&[StaffRole::SuperAdmin]) {
        let event = origin.event(
            &st,
            None,
            staff_actor(p.staff(), p.role()),
            Action::AccessDenied,
            ("route", "/api/v1/staff/staff".into()),
            (Outcome::Denied, Some("staff role is not super_admin")),
        );
        if let Err(e) = st.auditor.record(event).await {
            tracing::error!(error = %e, "could not record a refused staff request");
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "staff_forbidden",
            "this requires the staff role super_admin",
        ));
    }
    let mut tx = st.db.begin_platform(TxMode::Read).await?;
    let list = staff::list(&mut tx).await?;
    tx.commit().await?;
    record_read(&st, &origin, &p, ("staff", String::new())).await?;
    Ok(Json(
        list.into_iter()
            .map(|s| StaffView {
                id: s.id.to_string(),
                email: s.email,
                display_name: s.display_name,
                role: s.role.as_str(),
                status: if s.active { "active" } else { "deactivated" },
                created_at: s.created_at,
            })
            .collect(),
    ))
}
