//! The second factor at sign-in: a sign-in that passed its magic link gets a challenge;
//! the user answers it with a TOTP code (or a recovery code), or, when the tenant's
//! policy requires a factor the user does not have yet, enrolls one through the same
//! challenge. Only then does a session start.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use phivault_audit::{Action, Actor, ActorKind, Outcome};
use phivault_domain::mfa::{self, Challenge, Verdict};
use phivault_domain::sessions;
use phivault_store::{TenantId, TenantTx, TxMode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::sessions::{session_answer, user_actor};
use crate::audit::{Origin, unavailable};
use crate::extract::ApiJson;
use crate::throttle::{self, Endpoint};
use crate::{ApiError, AppState};

const CHALLENGE_PREFIX: &str = "pvc_";

/// This module's routes.
pub(crate) fn router() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/api/v1/auth/mfa/verify", axum::routing::post(verify))
        .route("/api/v1/auth/mfa/enroll", axum::routing::post(enroll))
        .route(
            "/api/v1/auth/mfa/enroll/confirm",
            axum::routing::post(confirm),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(verify, enroll, confirm))]
struct ModuleApi;

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    <ModuleApi as utoipa::OpenApi>::openapi()
}

/// A sign-in waiting for its second factor.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChallengeView {
    /// `mfa_required` (answer with a code) or `mfa_enrollment_required` (the tenant
    /// requires a factor: enroll one with this challenge first).
    status: &'static str,
    /// The challenge, valid for 5 minutes.
    challenge: String,
}

/// The answer to a sign-in whose second factor is due.
pub(crate) fn challenge_answer(tenant: TenantId, c: &Challenge, enrolled: bool) -> Response {
    (
        StatusCode::OK,
        Json(ChallengeView {
            status: if enrolled {
                "mfa_required"
            } else {
                "mfa_enrollment_required"
            },
            challenge: format!(
                "{CHALLENGE_PREFIX}{}_{}",
                tenant.as_uuid().simple(),
                c.id.simple()
            ),
        }),
    )
        .into_response()
}

fn challenge_refused() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "challenge_invalid",
        "the sign-in challenge is invalid or expired; sign in again",
    )
}

fn parse_challenge(text: &str) -> Option<(TenantId, Uuid)> {
    let rest = text.trim().strip_prefix(CHALLENGE_PREFIX)?;
    let (tenant, id) = rest.split_once('_')?;
    if tenant.len() != 32 || id.len() != 32 {
        return None;
    }
    Some((
        TenantId::from_uuid(Uuid::try_parse(tenant).ok()?),
        Uuid::try_parse(id).ok()?,
    ))
}

/// Opens the challenge's tenant transaction and finds the live challenge, and counts the
/// request against the challenge's user (the handler has counted it against the client
/// address already).
async fn open(
    st: &AppState,
    origin: &Origin,
    endpoint: Endpoint,
    text: &str,
) -> Result<(TenantId, TenantTx, Challenge), ApiError> {
    if st.keys.status() == phivault_crypto::keys::KeyStatus::Sealed {
        return Err(crate::error::sealed());
    }
    let (tenant, id) = parse_challenge(text).ok_or_else(challenge_refused)?;
    let mut tx = st.db.begin_tenant(tenant, TxMode::Write).await?;
    let c = mfa::find_challenge(&mut tx, id, st.now())
        .await?
        .ok_or_else(challenge_refused)?;
    if let Err(wait) = throttle::user_check(st, endpoint, tenant, c.user) {
        tx.rollback().await?;
        return Err(throttle::refuse_user(st, origin, endpoint, tenant, c.user, wait).await);
    }
    Ok((tenant, tx, c))
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

/// Records a refused second factor; commits the attempt counters with it.
async fn refuse(
    st: &AppState,
    origin: &Origin,
    tenant: TenantId,
    mut tx: TenantTx,
    c: &Challenge,
    verdict: Verdict,
) -> Result<Response, ApiError> {
    let event = origin.event(
        st,
        Some(tenant),
        Actor {
            kind: ActorKind::User,
            id: c.user.to_string(),
            role: String::new(),
        },
        Action::AuthFailed,
        ("second_factor", c.user.to_string()),
        (
            Outcome::Denied,
            Some(if verdict == Verdict::Locked {
                "second factor locked after repeated failures"
            } else {
                "wrong or reused second-factor code"
            }),
        ),
    );
    st.auditor
        .append_in(&mut tx, event)
        .await
        .map_err(unavailable)?;
    tx.commit().await?;
    Err(if verdict == Verdict::Locked {
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
    })
}

/// Starts the session a challenge was waiting for.
async fn finish(
    st: &AppState,
    origin: &Origin,
    tenant: TenantId,
    mut tx: TenantTx,
    c: &Challenge,
    how: &'static str,
) -> Result<Response, ApiError> {
    let now = st.now();
    if !mfa::close_challenge(&mut tx, c.id, now).await? {
        return Err(challenge_refused());
    }
    let (session, refresh) = sessions::start(&mut tx, c.user, c.remember, now).await?;
    let roles = phivault_domain::users::get(&mut tx, c.user).await?.roles;
    let event = origin.event(
        st,
        Some(tenant),
        user_actor(c.user, &roles),
        Action::AuthLogin,
        ("session", session.id.to_string()),
        (Outcome::Success, Some(how)),
    );
    st.auditor
        .append_in(&mut tx, event)
        .await
        .map_err(unavailable)?;
    tx.commit().await?;
    session_answer(st, tenant, &session, refresh, StatusCode::CREATED).await
}

/// Answers a sign-in challenge with a TOTP or recovery code; starts the session.
#[utoipa::path(post, path = "/api/v1/auth/mfa/verify", tag = "sessions", request_body = Answer,
    responses((status = 201, body = super::sessions::TokenView),
              (status = 401, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub(crate) async fn verify(
    State(st): State<AppState>,
    origin: Origin,
    body: Result<ApiJson<Answer>, ApiError>,
) -> Result<Response, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::MfaVerify).await?;
    let ApiJson(body) = body?;
    let (tenant, mut tx, c) = open(&st, &origin, Endpoint::MfaVerify, &body.challenge).await?;
    if !mfa::is_enrolled(&mut tx, c.user).await? {
        return Err(challenge_refused());
    }
    match mfa::verify(&mut tx, &st.keys, c.user, &body.code, st.now()).await? {
        Verdict::Accepted => finish(&st, &origin, tenant, tx, &c, "magic link and TOTP").await,
        other => refuse(&st, &origin, tenant, tx, &c, other).await,
    }
}

/// A factor to add to an authenticator app.
#[derive(Serialize, ToSchema)]
pub(crate) struct EnrollmentView {
    /// The `otpauth://` URI (it holds the secret: show it to the user only).
    otpauth_uri: String,
    /// The same URI as a QR code (SVG).
    qr_svg: String,
}

/// A challenge to enroll with.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnrollRequest {
    /// The challenge from the sign-in (`mfa_enrollment_required`).
    challenge: String,
}

/// Starts enrolling a TOTP factor during a sign-in that requires one.
#[utoipa::path(post, path = "/api/v1/auth/mfa/enroll", tag = "sessions", request_body = EnrollRequest,
    responses((status = 200, body = EnrollmentView), (status = 401, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn enroll(
    State(st): State<AppState>,
    origin: Origin,
    body: Result<ApiJson<EnrollRequest>, ApiError>,
) -> Result<Json<EnrollmentView>, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::MfaEnroll).await?;
    let ApiJson(body) = body?;
    let (_, mut tx, c) = open(&st, &origin, Endpoint::MfaEnroll, &body.challenge).await?;
    let account = c.user.to_string();
    let e = mfa::begin_enrollment(&mut tx, &st.keys, c.user, &account, st.now()).await?;
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

/// Recovery codes and the session, at the end of enrollment.
#[derive(Serialize, ToSchema)]
pub(crate) struct Enrolled {
    /// Single-use recovery codes, shown this once.
    recovery_codes: Vec<String>,
}

/// Confirms enrollment with a first code and answers the recovery codes, this once. The
/// sign-in then finishes at `verify` with the next code, on the same challenge.
#[utoipa::path(post, path = "/api/v1/auth/mfa/enroll/confirm", tag = "sessions", request_body = Answer,
    responses((status = 200, body = Enrolled), (status = 401, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn confirm(
    State(st): State<AppState>,
    origin: Origin,
    body: Result<ApiJson<Answer>, ApiError>,
) -> Result<Json<Enrolled>, ApiError> {
    throttle::per_ip(&st, &origin, Endpoint::MfaConfirm).await?;
    let ApiJson(body) = body?;
    let (tenant, mut tx, c) = open(&st, &origin, Endpoint::MfaConfirm, &body.challenge).await?;
    let codes = mfa::confirm_enrollment(&mut tx, &st.keys, c.user, &body.code, st.now()).await?;
    let event = origin.event(
        &st,
        Some(tenant),
        Actor {
            kind: ActorKind::User,
            id: c.user.to_string(),
            role: String::new(),
        },
        Action::AuthMfaEnrolled,
        ("second_factor", c.user.to_string()),
        (Outcome::Success, Some("totp")),
    );
    st.auditor
        .append_in(&mut tx, event)
        .await
        .map_err(unavailable)?;
    tx.commit().await?;
    Ok(Json(Enrolled {
        recovery_codes: codes.0,
    }))
}
