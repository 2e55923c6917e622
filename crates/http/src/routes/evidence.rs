//! The evidence packet (docs/evidence.md): one signed archive of the tenant's readiness
//! gates, configuration, vendors and BAAs, access review, retention and deletion log,
//! audit-chain verification with signed checkpoints, sample events and compliance
//! records, for a reviewer to check offline with `phivault evidence verify`.
//!
//! It needs `audit:view`, like the trail it summarises, and no PHI: nothing in it is a
//! patient's. It is signed with the audit checkpoint key, so it needs unsealed keys (503
//! `sealed` otherwise). Producing it is audited (`evidence.exported`, with the archive's
//! SHA-256) before the archive is sent; if the trail cannot take the event, nothing is.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use phivault_audit::{Action, AuditError};
use phivault_crypto::CryptoError;
use phivault_crypto::keys::KeyStatus;
use phivault_domain::evidence::{self, EvidenceError, Request};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use crate::extract::{ApiQuery, Scoped, need};
use crate::{ApiError, AppState};

/// This module's routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/tenants/{tenant_id}/evidence",
        post(export_evidence),
    )
}

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(paths(export_evidence))]
    struct Api;
    <Api as utoipa::OpenApi>::openapi()
}

/// Options of an export.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvidenceParams {
    /// How many of the tenant's most recent audit events to include (1 to 200, 50 by
    /// default).
    sample_events: Option<u32>,
}

/// What the server itself runs with, without secrets: the API has no configuration file
/// to read, so the packet shows the settings this process holds.
fn configuration(st: &AppState) -> Value {
    let t = st.throttle.config();
    let r = &st.readiness;
    json!({
        "source": "server: the settings of the process that produced the packet",
        "http": {
            "body_limit_bytes": st.http.body_limit,
            "request_timeout_secs": st.http.request_timeout.as_secs(),
            "upload_limit_bytes": st.http.upload_limit,
            "upload_timeout_secs": st.http.upload_timeout.as_secs(),
            "hsts": st.http.hsts,
        },
        "tls": {
            "served": r.tls_served,
            "behind_proxy": r.tls_proxy_declared,
        },
        "objects": {
            "backend": r.object_backend,
            "backend_encryption": r.object_backend_encryption,
            "storage": st.objects.describe(),
        },
        "services": r.services,
        "keys": st.platform_facts().key_provider,
        "audit": {
            "checkpoint_key": st.auditor.signer_public_key(),
            "writable": st.auditor.is_healthy(),
        },
        "mail": st.mailer.as_ref().map(|m| m.describe()),
        "sign_in_links": {
            "public_url": evidence::redact_url(&st.magic_link.public_url),
            "lifetime_secs": st.magic_link.lifetime.num_seconds(),
        },
        "throttle": {
            "window_secs": t.window.as_secs(),
            "per_ip": t.per_ip,
            "per_account": t.per_account,
            "bearer_failures_per_ip": t.bearer_failures_per_ip,
        },
        "e2e": { "device_trial_sessions": st.e2e.device_trial_sessions },
        "database": st.db.backend().as_str(),
    })
}

fn failed(e: EvidenceError) -> ApiError {
    if e.is_sealed() {
        return crate::error::sealed();
    }
    match e {
        EvidenceError::Domain(e) => e.into(),
        EvidenceError::Audit(AuditError::Store(e)) => e.into(),
        EvidenceError::Audit(AuditError::Keys(CryptoError::Store(e))) => e.into(),
        EvidenceError::Audit(e) => crate::audit::unavailable(e),
        EvidenceError::Packet(e) => {
            tracing::error!(error = %e, "evidence packet could not be written");
            ApiError::internal()
        }
    }
}

/// Produces the tenant's evidence packet: a tar of `packet.json` (machine-readable),
/// `report.html` (for a person; prints to PDF from any browser) and `SIGNATURE` (Ed25519
/// by the audit checkpoint key over the SHA-256 of the rest). Verify it offline with
/// `phivault evidence verify FILE --trusted-key HEX`. Audited `evidence.exported`.
#[utoipa::path(post, path = "/api/v1/tenants/{tenant_id}/evidence", tag = "audit",
    params(("tenant_id" = Uuid, Path), EvidenceParams),
    responses((status = 200, description = "the signed archive (attachment)",
               content_type = "application/x-tar", body = Vec<u8>),
              (status = 400, description = "invalid_query", body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody),
              (status = 503, description = "sealed, audit_unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn export_evidence(
    State(st): State<AppState>,
    s: Scoped<need::AuditView>,
    ApiQuery(params): ApiQuery<EvidenceParams>,
) -> Result<Response, ApiError> {
    let sample_events = match params.sample_events {
        None => evidence::DEFAULT_SAMPLE_EVENTS,
        Some(n @ 1..=evidence::MAX_SAMPLE_EVENTS) => n,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "sample_events must be between 1 and 200",
            ));
        }
    };
    // Signing needs the key hierarchy: say so before any work.
    if st.keys.status() == KeyStatus::Sealed {
        return Err(crate::error::sealed());
    }
    let now = st.now();
    let facts = st.platform_facts();
    let request = Request {
        tenant: s.scope.tenant(),
        facts: &facts,
        configuration: configuration(&st),
        produced_by: crate::audit::user_actor(&s.principal),
        witness: None,
        server_version: env!("CARGO_PKG_VERSION"),
        sample_events,
        now,
    };
    let built = evidence::build(&st.db, &st.keys, request, &mut |_, _, _| {})
        .await
        .map_err(failed)?;
    let mut event = s.audit.event(
        &st,
        Action::EvidenceExported,
        "evidence_packet",
        built.packet_id,
        &evidence::SECTIONS,
    );
    event.after = Some(built.snapshot());
    s.audit.record(&st, vec![event]).await?;
    let disposition = format!("attachment; filename=\"{}\"", built.file_name(now));
    let mut response = built.archive.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&hex::encode(built.sha256)) {
        headers.insert("x-evidence-sha256", v);
    }
    Ok(response)
}
