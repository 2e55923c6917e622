//! Readiness gates, PHI mode, the tenant's vendors and its BAA (docs/readiness.md).
//!
//! Reading needs `security:view_readiness`; changing `security:manage_phi_gates`
//! (owners). Every change is audited with before and after in the tenant's chain, in
//! the transaction of the change. None of these records is PHI.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::NaiveDate;
use phivault_audit::{Action, Outcome};
use phivault_domain::DomainError;
use phivault_domain::readiness::{self, Checklist, PhiMode};
use phivault_domain::vendors::{self, Baa, TenantBaa, Vendor, VendorInput};
use phivault_store::TxMode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::extract::{ApiJson, ApiPath, Scoped, need};
use crate::readiness::tenant_checklist;
use crate::{ApiError, AppState};

/// This module's routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/tenants/{tenant_id}/readiness", get(get_readiness))
        .route(
            "/api/v1/tenants/{tenant_id}/phi-mode",
            get(get_phi_mode).put(put_phi_mode),
        )
        .route("/api/v1/tenants/{tenant_id}/vendors", get(list_vendors))
        .route(
            "/api/v1/tenants/{tenant_id}/vendors/{key}",
            axum::routing::put(put_vendor).delete(delete_vendor),
        )
        .route(
            "/api/v1/tenants/{tenant_id}/baa",
            get(get_baa).put(put_baa).delete(delete_baa),
        )
}

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(
            get_readiness,
            get_phi_mode,
            put_phi_mode,
            list_vendors,
            put_vendor,
            delete_vendor,
            get_baa,
            put_baa,
            delete_baa
        ),
        components(schemas(
            PhiModeView,
            PhiModeChange,
            VendorView,
            VendorBody,
            BaaBody,
            VendorList,
            TenantBaaBody,
            TenantBaaView
        ))
    )]
    struct Api;
    <Api as utoipa::OpenApi>::openapi()
}

/// The tenant's readiness checklist: each gate with its status (`ready`, `planned`,
/// `blocked`), its evidence and its next action; whether PHI mode is on.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/readiness", tag = "readiness",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = Object, description = "the checklist"),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_readiness(
    State(st): State<AppState>,
    s: Scoped<need::SecurityViewReadiness>,
) -> Result<Json<Checklist>, ApiError> {
    Ok(Json(tenant_checklist(&st, s.scope.tenant()).await?))
}

/// The tenant's PHI mode.
#[derive(Serialize, ToSchema)]
pub(crate) struct PhiModeView {
    /// Whether PHI mode is on.
    phi_mode: bool,
    /// A sandbox tenant holds synthetic data only and never enters PHI mode.
    sandbox: bool,
    /// Who changed it last.
    changed_by: Option<String>,
    /// When.
    changed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `5/8 ready`.
    summary: String,
}

fn phi_view(mode: &PhiMode, checklist: &Checklist) -> PhiModeView {
    PhiModeView {
        phi_mode: mode.on,
        sandbox: checklist.sandbox,
        changed_by: mode.changed_by.clone(),
        changed_at: mode.changed_at,
        summary: checklist.summary(),
    }
}

/// Turns PHI mode on or off.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PhiModeChange {
    /// On or off.
    phi_mode: bool,
}

/// Whether PHI mode is on.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/phi-mode", tag = "readiness",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = PhiModeView), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_phi_mode(
    State(st): State<AppState>,
    s: Scoped<need::SecurityViewReadiness>,
) -> Result<Json<PhiModeView>, ApiError> {
    let checklist = tenant_checklist(&st, s.scope.tenant()).await?;
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let mode = readiness::phi_mode(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(phi_view(&mode, &checklist)))
}

/// Turns PHI mode on (every gate must hold: 409 `gates_open` otherwise, and 409
/// `sandbox_tenant` for a sandbox) or off. Audited `phi_mode.changed` with the checklist;
/// a refusal is audited as denied.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/phi-mode", tag = "readiness",
    params(("tenant_id" = Uuid, Path)), request_body = PhiModeChange,
    responses((status = 200, body = PhiModeView), (status = 403, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_phi_mode(
    State(st): State<AppState>,
    s: Scoped<need::SecurityManagePhiGates>,
    ApiJson(body): ApiJson<PhiModeChange>,
) -> Result<Json<PhiModeView>, ApiError> {
    let checklist = tenant_checklist(&st, s.scope.tenant()).await?;
    let by = s.principal.user().to_string();
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = readiness::phi_mode(&mut tx).await?;
    match readiness::set_phi_mode(&mut tx, &checklist, body.phi_mode, &by, st.now()).await {
        Ok(after) => {
            let mut event = s.audit.event(
                &st,
                Action::PhiModeChanged,
                "tenant",
                s.scope.tenant(),
                &["phi_mode"],
            );
            event.before = Some(serde_json::json!({ "phi_mode": before.on }));
            event.after = Some(serde_json::json!({
                "phi_mode": after.on,
                "checklist": checklist.snapshot(),
            }));
            s.audit.append_in(&st, &mut tx, event).await?;
            tx.commit().await?;
            Ok(Json(phi_view(&after, &checklist)))
        }
        Err(DomainError::Refused { code, message }) => {
            drop(tx);
            let mut event = s.audit.event(
                &st,
                Action::PhiModeChanged,
                "tenant",
                s.scope.tenant(),
                &["phi_mode"],
            );
            event.outcome = Outcome::Denied;
            event.reason = Some(code.to_string());
            event.after = Some(serde_json::json!({ "checklist": checklist.snapshot() }));
            s.audit.record(&st, vec![event]).await?;
            let message = match checklist.first_open() {
                Some(_) if code == "gates_open" => format!(
                    "{message} ({}; open: {})",
                    checklist.summary(),
                    checklist
                        .gates
                        .iter()
                        .filter(|g| g.status != readiness::Status::Ready)
                        .map(|g| g.id)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => message.to_string(),
            };
            Err(ApiError::new(StatusCode::CONFLICT, code, message))
        }
        Err(e) => Err(e.into()),
    }
}

// --- vendors --------------------------------------------------------------------------

/// A registered vendor.
#[derive(Serialize, ToSchema)]
pub(crate) struct VendorView {
    /// `platform` (the operator's services) or `tenant` (the tenant's own).
    registry: String,
    /// Short unique key.
    key: String,
    /// The vendor's name.
    name: String,
    /// What it does.
    service: String,
    /// Whether PHI reaches it.
    touches_phi: bool,
    /// Its BAA, when one is on file.
    baa: Option<BaaBody>,
}

impl From<&Vendor> for VendorView {
    fn from(v: &Vendor) -> Self {
        VendorView {
            registry: match v.registry {
                vendors::Registry::Platform => "platform".into(),
                vendors::Registry::Tenant => "tenant".into(),
            },
            key: v.key.clone(),
            name: v.name.clone(),
            service: v.service.clone(),
            touches_phi: v.touches_phi,
            baa: v.baa.as_ref().map(|b| BaaBody {
                signed_on: b.signed_on,
                evidence_ref: b.evidence_ref.clone(),
            }),
        }
    }
}

/// A signed BAA: its date and where the signed document is kept (never the document).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BaaBody {
    /// When it was signed (YYYY-MM-DD; not in the future).
    signed_on: NaiveDate,
    /// Where the signed document is kept (1 to 500 characters).
    evidence_ref: String,
}

/// A vendor to register or change in the tenant's registry.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VendorBody {
    /// The vendor's name.
    name: String,
    /// What it does for the tenant.
    service: String,
    /// Whether PHI reaches it.
    touches_phi: bool,
    /// Its BAA, or null when none is signed.
    baa: Option<BaaBody>,
}

/// Both registries.
#[derive(Serialize, ToSchema)]
pub(crate) struct VendorList {
    /// The platform's vendors (the services this server runs on).
    platform: Vec<VendorView>,
    /// The tenant's own.
    tenant: Vec<VendorView>,
}

/// The vendors that may receive the tenant's data: the platform's and its own.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/vendors", tag = "readiness",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = VendorList), (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_vendors(
    State(st): State<AppState>,
    s: Scoped<need::SecurityViewReadiness>,
) -> Result<Json<VendorList>, ApiError> {
    let mut p = st.db.begin_platform(TxMode::Read).await?;
    let platform = vendors::list_platform(&mut p).await?;
    p.commit().await?;
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let tenant = vendors::list_tenant(&mut tx).await?;
    tx.commit().await?;
    Ok(Json(VendorList {
        platform: platform.iter().map(VendorView::from).collect(),
        tenant: tenant.iter().map(VendorView::from).collect(),
    }))
}

#[derive(Deserialize)]
pub(crate) struct VendorPath {
    key: String,
}

/// Registers or changes a vendor in the tenant's registry (set `baa` to null to record
/// that its BAA ended). Audited `vendor.changed` with before and after.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/vendors/{key}", tag = "readiness",
    params(("tenant_id" = Uuid, Path), ("key" = String, Path)), request_body = VendorBody,
    responses((status = 200, body = VendorView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_vendor(
    State(st): State<AppState>,
    s: Scoped<need::SecurityManagePhiGates>,
    ApiPath(path): ApiPath<VendorPath>,
    ApiJson(body): ApiJson<VendorBody>,
) -> Result<Json<VendorView>, ApiError> {
    let input = VendorInput {
        key: path.key,
        name: body.name,
        service: body.service,
        touches_phi: body.touches_phi,
        baa: body.baa.map(|b| Baa {
            signed_on: b.signed_on,
            evidence_ref: b.evidence_ref,
        }),
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let (before, after) = vendors::set_tenant(&mut tx, &input, st.now()).await?;
    let mut event = s.audit.event(
        &st,
        Action::VendorChanged,
        "vendor",
        &after.key,
        &["name", "service", "touches_phi", "baa"],
    );
    event.before = before.as_ref().map(Vendor::snapshot);
    event.after = Some(after.snapshot());
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(VendorView::from(&after)))
}

/// Removes a vendor from the tenant's registry. Audited `vendor.changed`.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant_id}/vendors/{key}", tag = "readiness",
    params(("tenant_id" = Uuid, Path), ("key" = String, Path)),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn delete_vendor(
    State(st): State<AppState>,
    s: Scoped<need::SecurityManagePhiGates>,
    ApiPath(path): ApiPath<VendorPath>,
) -> Result<StatusCode, ApiError> {
    vendors::check_key(&path.key)?;
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = vendors::remove_tenant(&mut tx, &path.key).await?;
    let mut event = s
        .audit
        .event(&st, Action::VendorChanged, "vendor", &before.key, &[]);
    event.before = Some(before.snapshot());
    event.after = Some(serde_json::json!({ "key": before.key, "removed": true }));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// --- the tenant's BAA -----------------------------------------------------------------

/// The tenant's BAA with the operator of this server.
#[derive(Serialize, ToSchema)]
pub(crate) struct TenantBaaView {
    /// When it was signed.
    signed_on: NaiveDate,
    /// Who signed for the tenant.
    signatory: String,
    /// Where the signed document is kept.
    evidence_ref: String,
    /// Who recorded it.
    recorded_by: String,
    /// When.
    recorded_at: chrono::DateTime<chrono::Utc>,
}

impl From<TenantBaa> for TenantBaaView {
    fn from(b: TenantBaa) -> Self {
        TenantBaaView {
            signed_on: b.signed_on,
            signatory: b.signatory,
            evidence_ref: b.evidence_ref,
            recorded_by: b.recorded_by,
            recorded_at: b.recorded_at,
        }
    }
}

/// Records the tenant's signed BAA.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantBaaBody {
    /// When it was signed (YYYY-MM-DD; not in the future).
    signed_on: NaiveDate,
    /// Who signed for the tenant: a name and title (1 to 200 characters).
    signatory: String,
    /// Where the signed document is kept (1 to 500 characters).
    evidence_ref: String,
}

/// The tenant's BAA, if recorded (404 otherwise).
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/baa", tag = "readiness",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = TenantBaaView), (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn get_baa(
    State(st): State<AppState>,
    s: Scoped<need::SecurityViewReadiness>,
) -> Result<Json<TenantBaaView>, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let baa = vendors::tenant_baa(&mut tx).await?;
    tx.commit().await?;
    baa.map(|b| Json(b.into()))
        .ok_or_else(|| ApiError::not_found("tenant BAA"))
}

/// Records (or replaces) the tenant's BAA. Audited `baa.changed` with before and after.
#[utoipa::path(put, path = "/api/v1/tenants/{tenant_id}/baa", tag = "readiness",
    params(("tenant_id" = Uuid, Path)), request_body = TenantBaaBody,
    responses((status = 200, body = TenantBaaView), (status = 403, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn put_baa(
    State(st): State<AppState>,
    s: Scoped<need::SecurityManagePhiGates>,
    ApiJson(body): ApiJson<TenantBaaBody>,
) -> Result<Json<TenantBaaView>, ApiError> {
    let by = s.principal.user().to_string();
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let (before, after) = vendors::set_tenant_baa(
        &mut tx,
        body.signed_on,
        &body.signatory,
        &body.evidence_ref,
        &by,
        st.now(),
    )
    .await?;
    let mut event = s.audit.event(
        &st,
        Action::BaaChanged,
        "tenant_baa",
        s.scope.tenant(),
        &["signed_on", "signatory", "evidence_ref"],
    );
    event.before = before.as_ref().map(TenantBaa::snapshot);
    event.after = Some(after.snapshot());
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(after.into()))
}

/// Removes the tenant's BAA (it ended). PHI routes close at once if PHI mode is on.
/// Audited `baa.changed`.
#[utoipa::path(delete, path = "/api/v1/tenants/{tenant_id}/baa", tag = "readiness",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn delete_baa(
    State(st): State<AppState>,
    s: Scoped<need::SecurityManagePhiGates>,
) -> Result<StatusCode, ApiError> {
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let before = vendors::remove_tenant_baa(&mut tx).await?;
    let mut event = s
        .audit
        .event(&st, Action::BaaChanged, "tenant_baa", s.scope.tenant(), &[]);
    event.before = Some(before.snapshot());
    event.after = Some(serde_json::json!({ "removed": true }));
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
