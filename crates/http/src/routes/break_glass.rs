//! Break-glass over HTTP: a staff member asks for emergency, read-only access to a
//! tenant's PHI (or one encounter's) with a reason and a duration; a different
//! super_admin approves or denies it; it ends by itself, or earlier by revocation; and
//! while it lives, its requester reads through `/api/v1/staff/break-glass/{grant_id}/…`.
//!
//! Every lifecycle step is written to the platform chain in the transaction of the
//! change, then mirrored into the tenant's own chain so the tenant's privacy officer sees
//! it. Every read under a grant is a `phi.read` in the tenant's chain by a staff actor
//! whose reason names the grant. Refusals are `access.denied` on the platform chain.

use axum::Json;
use axum::extract::{FromRequestParts, MatchedPath, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use phivault_access::break_glass::{self as access, BreakGlassScope, GrantRefused};
use phivault_access::staff::StaffPrincipal;
use phivault_audit::{Action, Outcome};
use phivault_domain::break_glass::{self, Grant, GrantScope, NewGrant, Refusal};
use phivault_domain::{EncounterId, PatientId, encounters, patients};
use phivault_store::{TenantId, TxMode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::encounters::{ENCOUNTER_FIELDS, EncounterView};
use super::page_limit;
use super::patients::{PATIENT_FIELDS, PatientView};
use super::staff::{StaffAuth, not_sealed, staff_actor};
use crate::audit::{Origin, RequestAudit, record_refusal, unavailable};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::{ApiError, AppState};

/// This module's routes.
pub(crate) fn router() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(
            "/api/v1/staff/break-glass",
            get(list_grants).post(request_grant),
        )
        .route("/api/v1/staff/break-glass/{grant_id}", get(get_grant))
        .route(
            "/api/v1/staff/break-glass/{grant_id}/approve",
            post(approve_grant),
        )
        .route(
            "/api/v1/staff/break-glass/{grant_id}/deny",
            post(deny_grant),
        )
        .route(
            "/api/v1/staff/break-glass/{grant_id}/revoke",
            post(revoke_grant),
        )
        .route(
            "/api/v1/staff/break-glass/{grant_id}/encounters",
            get(grant_encounters),
        )
        .route(
            "/api/v1/staff/break-glass/{grant_id}/encounters/{encounter_id}",
            get(grant_encounter),
        )
        .route(
            "/api/v1/staff/break-glass/{grant_id}/patients/{patient_id}",
            get(grant_patient),
        )
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    request_grant,
    list_grants,
    get_grant,
    approve_grant,
    deny_grant,
    revoke_grant,
    grant_encounters,
    grant_encounter,
    grant_patient
))]
struct ModuleApi;

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    <ModuleApi as utoipa::OpenApi>::openapi()
}

/// A break-glass grant as staff see it.
#[derive(Serialize, ToSchema)]
pub(crate) struct GrantView {
    id: Uuid,
    requester_id: Uuid,
    tenant_id: Uuid,
    /// The one encounter the grant opens, or null for the whole tenant.
    encounter_id: Option<Uuid>,
    /// The requester's reason (a ticket or incident reference; never PHI).
    reason: String,
    duration_minutes: i64,
    /// `pending`, `lapsed`, `active`, `denied`, `revoked` or `expired`, now.
    status: &'static str,
    requested_at: DateTime<Utc>,
    decided_by: Option<Uuid>,
    decided_at: Option<DateTime<Utc>>,
    /// When an approved grant ends by itself.
    expires_at: Option<DateTime<Utc>>,
    revoked_by: Option<Uuid>,
    revoked_at: Option<DateTime<Utc>>,
}

fn view(g: Grant, now: DateTime<Utc>) -> GrantView {
    GrantView {
        id: g.id,
        requester_id: g.requester,
        tenant_id: g.tenant.as_uuid(),
        encounter_id: match g.scope {
            GrantScope::Tenant => None,
            GrantScope::Encounter(e) => Some(e.as_uuid()),
        },
        status: g.status(now).as_str(),
        reason: g.reason,
        duration_minutes: g.duration_minutes,
        requested_at: g.requested_at,
        decided_by: g.decided_by,
        decided_at: g.decided_at,
        expires_at: g.expires_at,
        revoked_by: g.revoked_by,
        revoked_at: g.revoked_at,
    }
}

fn refused(r: Refusal) -> ApiError {
    match r {
        Refusal::Unknown => ApiError::not_found("break-glass grant"),
        Refusal::NotSuperAdmin => ApiError::new(
            StatusCode::FORBIDDEN,
            "staff_forbidden",
            "this requires the staff role super_admin",
        ),
        Refusal::SelfApproval => ApiError::new(
            StatusCode::FORBIDDEN,
            "self_approval",
            "a break-glass grant must be decided by a super_admin other than its requester",
        ),
        Refusal::NotPending => ApiError::new(
            StatusCode::CONFLICT,
            "grant_not_pending",
            "the break-glass grant was already decided, revoked, or has lapsed",
        ),
        Refusal::NotYours => ApiError::new(
            StatusCode::FORBIDDEN,
            "grant_not_yours",
            "the break-glass grant belongs to another staff member",
        ),
        Refusal::NotActive(status) => ApiError::new(
            StatusCode::FORBIDDEN,
            "grant_not_active",
            format!("the break-glass grant is {}", status.as_str()),
        ),
    }
}

/// Records a refusal on the platform chain and answers it.
async fn refuse(
    st: &AppState,
    origin: &Origin,
    p: &StaffPrincipal,
    grant: Option<Uuid>,
    reason: &str,
    answer: ApiError,
) -> ApiError {
    let event = origin.event(
        st,
        None,
        staff_actor(p.staff(), p.role()),
        Action::AccessDenied,
        (
            "break_glass_grant",
            grant.map(|g| g.to_string()).unwrap_or_default(),
        ),
        (Outcome::Denied, Some(reason)),
    );
    if let Err(e) = st.auditor.record(event).await {
        tracing::error!(error = %e, "could not record a refused break-glass request");
        return unavailable(e);
    }
    answer
}

/// Commits a lifecycle change with its platform event, then mirrors the event into the
/// tenant's chain.
async fn commit_with_events(
    st: &AppState,
    origin: &Origin,
    p: &StaffPrincipal,
    mut tx: phivault_store::PlatformTx,
    grant: &Grant,
    action: Action,
) -> Result<(), ApiError> {
    let event = |tenant: Option<TenantId>| {
        origin.event(
            st,
            tenant,
            staff_actor(p.staff(), p.role()),
            action,
            ("break_glass_grant", grant.id.to_string()),
            (Outcome::Success, None),
        )
    };
    st.auditor
        .append_platform_in(&mut tx, event(None))
        .await
        .map_err(unavailable)?;
    tx.commit().await?;
    st.auditor
        .record(event(Some(grant.tenant)))
        .await
        .map_err(unavailable)?;
    Ok(())
}

// --- the grant lifecycle ----------------------------------------------------------------

/// A request for emergency access.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestGrant {
    /// The tenant whose PHI is needed.
    tenant_id: Uuid,
    /// Limit the grant to this encounter (and its patient); omit for the whole tenant.
    encounter_id: Option<Uuid>,
    /// Why, 10 to 1000 characters: a ticket or incident reference, never PHI.
    reason: String,
    /// How long the grant lasts once approved, 1 to 240 minutes.
    duration_minutes: i64,
}

/// Asks for a break-glass grant (super_admin, platform_ops or support). It stays pending
/// until a different super_admin decides, and lapses after an hour undecided.
#[utoipa::path(post, path = "/api/v1/staff/break-glass", tag = "break-glass", request_body = RequestGrant,
    responses((status = 201, body = GrantView), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn request_grant(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
    ApiJson(body): ApiJson<RequestGrant>,
) -> Result<(StatusCode, Json<GrantView>), ApiError> {
    if !access::may_request(&p) {
        let answer = ApiError::new(
            StatusCode::FORBIDDEN,
            "staff_forbidden",
            "this requires the staff role super_admin, platform_ops or support",
        );
        return Err(refuse(&st, &origin, &p, None, "staff role may not ask", answer).await);
    }
    let tenant = TenantId::from_uuid(body.tenant_id);
    let scope = match body.encounter_id {
        None => GrantScope::Tenant,
        Some(e) => {
            let id = EncounterId::from_uuid(e);
            let mut tx = st.db.begin_tenant(tenant, TxMode::Read).await?;
            let found = break_glass::encounter_patient(&mut tx, id).await?;
            tx.commit().await?;
            if found.is_none() {
                return Err(ApiError::not_found("encounter"));
            }
            GrantScope::Encounter(id)
        }
    };
    let now = st.now();
    let mut tx = st.db.begin_platform(TxMode::Write).await?;
    let grant = break_glass::request(
        &mut tx,
        NewGrant {
            requester: p.staff(),
            tenant,
            scope,
            reason: body.reason,
            duration_minutes: body.duration_minutes,
        },
        now,
    )
    .await?;
    commit_with_events(&st, &origin, &p, tx, &grant, Action::BreakglassRequested).await?;
    Ok((StatusCode::CREATED, Json(view(grant, now))))
}

/// Grants: every grant for a super_admin, the caller's own for anyone else; newest
/// first, at most 200.
#[utoipa::path(get, path = "/api/v1/staff/break-glass", tag = "break-glass",
    responses((status = 200, body = [GrantView]), (status = 401, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_grants(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    let whose = (!access::may_decide(&p)).then(|| p.staff());
    let mut tx = st.db.begin_platform(TxMode::Read).await?;
    let list = break_glass::list(&mut tx, whose).await?;
    tx.commit().await?;
    let event = origin.event(
        &st,
        None,
        staff_actor(p.staff(), p.role()),
        Action::StaffRead,
        ("break_glass_grants", String::new()),
        (Outcome::Success, None),
    );
    st.auditor.record(event).await.map_err(unavailable)?;
    let now = st.now();
    Ok(Json(list.into_iter().map(|g| view(g, now)).collect()))
}

#[derive(Deserialize)]
pub(crate) struct GrantPath {
    grant_id: Uuid,
}

/// One grant (its requester, or a super_admin).
#[utoipa::path(get, path = "/api/v1/staff/break-glass/{grant_id}", tag = "break-glass",
    params(("grant_id" = Uuid, Path)),
    responses((status = 200, body = GrantView), (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_grant(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
    ApiPath(path): ApiPath<GrantPath>,
) -> Result<Json<GrantView>, ApiError> {
    let mut tx = st.db.begin_platform(TxMode::Read).await?;
    let grant = break_glass::get(&mut tx, path.grant_id).await?;
    tx.commit().await?;
    // Another's grant is not found, as an unknown one.
    let Some(grant) = grant.filter(|g| g.requester == p.staff() || access::may_decide(&p)) else {
        return Err(ApiError::not_found("break-glass grant"));
    };
    let event = origin.event(
        &st,
        None,
        staff_actor(p.staff(), p.role()),
        Action::StaffRead,
        ("break_glass_grant", grant.id.to_string()),
        (Outcome::Success, None),
    );
    st.auditor.record(event).await.map_err(unavailable)?;
    Ok(Json(view(grant, st.now())))
}

async fn decide(
    st: AppState,
    p: StaffPrincipal,
    origin: Origin,
    id: Uuid,
    approve: bool,
) -> Result<Json<GrantView>, ApiError> {
    not_sealed(&st)?;
    let now = st.now();
    let mut tx = st.db.begin_platform(TxMode::Write).await?;
    let grant = match break_glass::decide(&mut tx, id, p.staff(), approve, now).await? {
        Ok(g) => g,
        Err(r) => {
            drop(tx);
            return Err(refuse(&st, &origin, &p, Some(id), r.as_str(), refused(r)).await);
        }
    };
    let action = if approve {
        Action::BreakglassApproved
    } else {
        Action::BreakglassDenied
    };
    commit_with_events(&st, &origin, &p, tx, &grant, action).await?;
    Ok(Json(view(grant, now)))
}

/// Approves another staff member's pending grant (super_admin): it is live from now for
/// its duration.
#[utoipa::path(post, path = "/api/v1/staff/break-glass/{grant_id}/approve", tag = "break-glass",
    params(("grant_id" = Uuid, Path)),
    responses((status = 200, body = GrantView), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn approve_grant(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
    ApiPath(path): ApiPath<GrantPath>,
) -> Result<Json<GrantView>, ApiError> {
    decide(st, p, origin, path.grant_id, true).await
}

/// Denies another staff member's pending grant (super_admin).
#[utoipa::path(post, path = "/api/v1/staff/break-glass/{grant_id}/deny", tag = "break-glass",
    params(("grant_id" = Uuid, Path)),
    responses((status = 200, body = GrantView), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn deny_grant(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
    ApiPath(path): ApiPath<GrantPath>,
) -> Result<Json<GrantView>, ApiError> {
    decide(st, p, origin, path.grant_id, false).await
}

/// Ends a pending or active grant at once (its requester, or a super_admin).
#[utoipa::path(post, path = "/api/v1/staff/break-glass/{grant_id}/revoke", tag = "break-glass",
    params(("grant_id" = Uuid, Path)),
    responses((status = 200, body = GrantView), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn revoke_grant(
    State(st): State<AppState>,
    StaffAuth(p): StaffAuth,
    origin: Origin,
    ApiPath(path): ApiPath<GrantPath>,
) -> Result<Json<GrantView>, ApiError> {
    let now = st.now();
    let mut tx = st.db.begin_platform(TxMode::Write).await?;
    let grant = match break_glass::revoke(&mut tx, path.grant_id, p.staff(), now).await? {
        Ok(g) => g,
        Err(r) => {
            drop(tx);
            let id = Some(path.grant_id);
            return Err(refuse(&st, &origin, &p, id, r.as_str(), refused(r)).await);
        }
    };
    commit_with_events(&st, &origin, &p, tx, &grant, Action::BreakglassRevoked).await?;
    Ok(Json(view(grant, now)))
}

// --- reading under a grant --------------------------------------------------------------

/// A staff caller reading under a live grant named by the `{grant_id}` path segment.
/// Every request re-reads the grant, so revocation and expiry hold on the next request.
/// The route is PHI: it cannot answer without writing its event, and every event names
/// the grant.
pub(crate) struct UnderGrant {
    scope: BreakGlassScope,
    audit: RequestAudit,
}

impl FromRequestParts<AppState> for UnderGrant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let StaffAuth(p) = StaffAuth::from_request_parts(parts, st).await?;
        let ApiPath(path) = ApiPath::<GrantPath>::from_request_parts(parts, st).await?;
        let checked = access::authorize_use(&st.db, &p, path.grant_id, st.now()).await?;
        let scope = match checked {
            Ok(scope) => scope,
            Err(GrantRefused(r)) => {
                let route = parts
                    .extensions
                    .get::<MatchedPath>()
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default();
                let why = format!("break-glass grant {}: {}", path.grant_id, r.as_str());
                record_refusal(
                    st,
                    parts,
                    None,
                    staff_actor(p.staff(), p.role()),
                    Action::AccessDenied,
                    ("route", route),
                    &why,
                )
                .await;
                return Err(refused(r));
            }
        };
        not_sealed(st)?;
        let audit = RequestAudit::new(
            parts,
            scope.scope().tenant(),
            staff_actor(p.staff(), p.role()),
        )
        .noting(format!("break-glass grant {}", scope.grant().id));
        audit.require();
        Ok(UnderGrant { scope, audit })
    }
}

/// Paging of the encounters under a grant.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantEncounterQuery {
    /// Items per page, 1 to 200 (default 50).
    limit: Option<u32>,
    /// Return items after this id.
    after: Option<Uuid>,
}

/// The encounters a live grant opens: every encounter of the tenant, oldest first, or the
/// grant's one encounter. Each one returned is audited with the grant id.
#[utoipa::path(get, path = "/api/v1/staff/break-glass/{grant_id}/encounters", tag = "break-glass",
    params(("grant_id" = Uuid, Path), GrantEncounterQuery),
    responses((status = 200, body = [EncounterView]), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn grant_encounters(
    State(st): State<AppState>,
    g: UnderGrant,
    ApiQuery(q): ApiQuery<GrantEncounterQuery>,
) -> Result<Json<Vec<EncounterView>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let mut tx = g.scope.scope().begin(&st.db, TxMode::Read).await?;
    let list = match g.scope.encounter() {
        None => {
            let after = q.after.map(EncounterId::from_uuid);
            encounters::list(
                &mut tx,
                &st.keys,
                g.scope.scope().practices(),
                None,
                after,
                limit,
            )
            .await?
        }
        // One encounter: a cursor past it, or a page of none, answers nothing.
        Some(id) if q.after.is_none() => {
            vec![encounters::get(&mut tx, &st.keys, g.scope.scope().practices(), id).await?]
        }
        Some(_) => Vec::new(),
    };
    tx.commit().await?;
    let events = list
        .iter()
        .map(|e| {
            g.audit
                .event(&st, Action::PhiRead, "encounter", e.id, ENCOUNTER_FIELDS)
        })
        .collect();
    g.audit.record(&st, events).await?;
    Ok(Json(list.into_iter().map(EncounterView::from).collect()))
}

#[derive(Deserialize)]
pub(crate) struct GrantEncounterPath {
    encounter_id: Uuid,
}

/// One encounter under a live grant.
#[utoipa::path(get, path = "/api/v1/staff/break-glass/{grant_id}/encounters/{encounter_id}", tag = "break-glass",
    params(("grant_id" = Uuid, Path), ("encounter_id" = Uuid, Path)),
    responses((status = 200, body = EncounterView), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn grant_encounter(
    State(st): State<AppState>,
    g: UnderGrant,
    ApiPath(path): ApiPath<GrantEncounterPath>,
) -> Result<Json<EncounterView>, ApiError> {
    let id = EncounterId::from_uuid(path.encounter_id);
    if !g.scope.allows_encounter(id) {
        // Outside the grant is not found, as an unknown encounter.
        return Err(ApiError::not_found("encounter"));
    }
    let mut tx = g.scope.scope().begin(&st.db, TxMode::Read).await?;
    let e = encounters::get(&mut tx, &st.keys, g.scope.scope().practices(), id).await?;
    tx.commit().await?;
    let event = g
        .audit
        .event(&st, Action::PhiRead, "encounter", e.id, ENCOUNTER_FIELDS);
    g.audit.record(&st, vec![event]).await?;
    Ok(Json(e.into()))
}

#[derive(Deserialize)]
pub(crate) struct GrantPatientPath {
    patient_id: Uuid,
}

/// One patient under a live grant: any patient of the tenant, or, for an encounter grant,
/// that encounter's patient only.
#[utoipa::path(get, path = "/api/v1/staff/break-glass/{grant_id}/patients/{patient_id}", tag = "break-glass",
    params(("grant_id" = Uuid, Path), ("patient_id" = Uuid, Path)),
    responses((status = 200, body = PatientView), (status = 401, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn grant_patient(
    State(st): State<AppState>,
    g: UnderGrant,
    ApiPath(path): ApiPath<GrantPatientPath>,
) -> Result<Json<PatientView>, ApiError> {
    let id = PatientId::from_uuid(path.patient_id);
    let mut tx = g.scope.scope().begin(&st.db, TxMode::Read).await?;
    if let Some(encounter) = g.scope.encounter() {
        let of_encounter = break_glass::encounter_patient(&mut tx, encounter).await?;
        if of_encounter != Some(id) {
            return Err(ApiError::not_found("patient"));
        }
    }
    let patient = patients::get(&mut tx, &st.keys, g.scope.scope().practices(), id).await?;
    tx.commit().await?;
    let event = g
        .audit
        .event(&st, Action::PhiRead, "patient", patient.id, PATIENT_FIELDS);
    g.audit.record(&st, vec![event]).await?;
    Ok(Json(patient.into()))
}
