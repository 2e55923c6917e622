//! PHI readiness at the edge: what the server knows about itself, each tenant's
//! checklist, and the check every PHI route passes before it reads a byte of its body.
//!
//! The checklist is evaluated on every PHI request, not cached: a gate that stops
//! holding (keys sealed, a BAA removed by an operator at the command line) closes the
//! routes on the next request, in every server process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::http::request::Parts;
use phivault_audit::{Action, Actor, ActorKind, AuditEvent, Outcome, Resource};
use phivault_crypto::keys::KeyStatus;
use phivault_domain::readiness::{self, Checklist, PhiAccess, PlatformFacts, ServiceUse};
use phivault_domain::tenants;
use phivault_store::{TenantId, TxMode};

use crate::audit::{record_refusal, source_of};
use crate::{ApiError, AppState};

/// What the server's configuration says about the controls it cannot observe at run
/// time: how it is reached, where objects go, which outside services it calls.
#[derive(Clone, Debug)]
pub struct ReadinessConfig {
    /// Object storage backend (`local`, `s3`).
    pub object_backend: String,
    /// The backend's own encryption setting where it can be read (`sse-kms`, `sse-s3`).
    pub object_backend_encryption: Option<String>,
    /// Whether this server serves TLS itself.
    pub tls_served: bool,
    /// Whether a TLS-terminating proxy in front is declared.
    pub tls_proxy_declared: bool,
    /// The outside services this server calls, with their vendors.
    pub services: Vec<ServiceUse>,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            object_backend: "local".into(),
            object_backend_encryption: None,
            tls_served: false,
            tls_proxy_declared: false,
            services: Vec::new(),
        }
    }
}

/// The HSTS max-age the edge sends (crates/http/src/layers.rs).
pub(crate) const HSTS_MAX_AGE: u64 = 63_072_000;

/// Which gate was last seen open per tenant in PHI mode, so that a gate closing or
/// opening is recorded once (`gate.changed`), not on every request.
#[derive(Clone, Default)]
pub(crate) struct GateMemory(Arc<Mutex<HashMap<TenantId, &'static str>>>);

impl GateMemory {
    /// Remembers `open` (or none) for `tenant`; true when that is a change.
    fn changed(&self, tenant: TenantId, open: Option<&'static str>) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let before = map.get(&tenant).copied();
        match open {
            Some(id) => map.insert(tenant, id),
            None => map.remove(&tenant),
        };
        before != open
    }
}

impl AppState {
    /// What the server reports about itself, now.
    pub fn platform_facts(&self) -> PlatformFacts {
        let (provider, development, unsealed) = match self.keys.status() {
            KeyStatus::Sealed => (None, false, false),
            KeyStatus::Unsealed {
                provider,
                development,
            } => (Some(provider.to_string()), development, true),
        };
        let r = &self.readiness;
        PlatformFacts {
            key_provider: provider,
            key_provider_development: development,
            keys_unsealed: unsealed,
            audit_writable: self.auditor.is_healthy(),
            checkpoint_key: self
                .auditor
                .signer_public_key()
                .map(|k| format!("ed25519:{k}")),
            object_backend: r.object_backend.clone(),
            object_backend_encryption: r.object_backend_encryption.clone(),
            tls_served: r.tls_served,
            tls_proxy_declared: r.tls_proxy_declared,
            hsts_max_age: self.http.hsts.then_some(HSTS_MAX_AGE),
            services: r.services.clone(),
        }
    }
}

/// A tenant's checklist (the platform's gates, then its own).
pub(crate) async fn tenant_checklist(
    st: &AppState,
    tenant: TenantId,
) -> Result<Checklist, ApiError> {
    let mut p = st.db.begin_platform(TxMode::Read).await?;
    let row = tenants::get(&mut p, tenant).await?;
    checklist_of(st, p, row).await
}

/// Finishes a checklist from the tenant's row: the platform's vendors in the same
/// platform transaction `p`, then the tenant's records (PHI mode included) in one
/// tenant transaction.
async fn checklist_of(
    st: &AppState,
    mut p: phivault_store::PlatformTx,
    row: tenants::Tenant,
) -> Result<Checklist, ApiError> {
    let vendors = readiness::load_platform(&mut p).await?;
    p.commit().await?;
    let mut tx = st.db.begin_tenant(row.id, TxMode::Read).await?;
    let records = readiness::load_tenant(row, &mut tx).await?;
    tx.commit().await?;
    Ok(readiness::evaluate_tenant(
        &st.platform_facts(),
        &vendors,
        &records,
        st.now(),
    ))
}

/// Refuses a PHI request unless the tenant is a sandbox, or is in PHI mode with every
/// gate holding. A refusal is audited (`access.denied`), and a gate that closes or
/// opens again under a tenant in PHI mode is recorded once (`gate.changed`).
pub(crate) async fn require_phi_open(
    st: &AppState,
    parts: &Parts,
    tenant: TenantId,
    actor: Actor,
) -> Result<(), ApiError> {
    let mut p = st.db.begin_platform(TxMode::Read).await?;
    let row = tenants::get(&mut p, tenant).await?;
    // A sandbox needs no gates: one read, and the request goes on.
    if row.sandbox {
        p.commit().await?;
        return Ok(());
    }
    let checklist = checklist_of(st, p, row).await?;
    let access = readiness::phi_access(&checklist);
    if checklist.phi_mode {
        let open = match &access {
            PhiAccess::GateOpen(g) => Some(g.id),
            _ => None,
        };
        if st.gate_memory.changed(tenant, open) {
            record_gate_change(st, parts, tenant, &checklist, open).await;
        }
    }
    let (code, message, reason) = match access {
        PhiAccess::Sandbox | PhiAccess::Open => return Ok(()),
        PhiAccess::ModeOff => (
            "phi_mode_disabled",
            "PHI mode is off for this tenant: an officer turns it on once every readiness gate holds (GET …/readiness)".to_string(),
            "phi_mode_disabled".to_string(),
        ),
        PhiAccess::GateOpen(g) => (
            "phi_gate_open",
            format!(
                "a readiness gate stopped holding ({}: {}); PHI routes stay closed until it holds again",
                g.id, g.title
            ),
            format!("phi_gate_open: {}", g.id),
        ),
    };
    record_refusal(
        st,
        parts,
        Some(tenant),
        actor,
        Action::AccessDenied,
        ("route", route_of(parts)),
        &reason,
    )
    .await;
    Err(ApiError::new(StatusCode::FORBIDDEN, code, message))
}

fn route_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default()
}

async fn record_gate_change(
    st: &AppState,
    parts: &Parts,
    tenant: TenantId,
    checklist: &Checklist,
    open: Option<&'static str>,
) {
    let event = AuditEvent {
        sequence: 0,
        time: st.now(),
        tenant: Some(tenant),
        actor: Actor {
            kind: ActorKind::System,
            id: "readiness".into(),
            role: String::new(),
        },
        source: source_of(parts),
        action: Action::GateChanged,
        resource: Resource {
            kind: "readiness_gate".into(),
            id: open.unwrap_or("all").into(),
        },
        fields: Vec::new(),
        outcome: if open.is_some() {
            Outcome::Denied
        } else {
            Outcome::Success
        },
        reason: Some(match open {
            Some(id) => format!("gate {id} stopped holding; PHI routes closed"),
            None => "every gate holds again; PHI routes open".into(),
        }),
        request_id: String::new(),
        before: None,
        after: Some(checklist.snapshot()),
    };
    if let Err(e) = st.auditor.record(event).await {
        tracing::error!(error = %e, "could not record a readiness gate change");
    }
}
