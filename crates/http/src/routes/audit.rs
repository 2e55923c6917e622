use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use phivault_audit::ledger::{self, EventFilter};
use phivault_audit::{Action, ChainedEvent};
use phivault_store::TxMode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiQuery, Scoped, need};
use crate::{ApiError, AppState};

/// One audit event: identifiers and field names, never PHI.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditEventView {
    /// Position in the tenant's chain.
    sequence: u64,
    time: DateTime<Utc>,
    /// `user`, `staff`, `operator`, `system`, `device` or `anonymous`.
    actor_kind: String,
    actor_id: String,
    actor_role: String,
    source_ip: String,
    source_user_agent: String,
    source_device: String,
    /// An action of the catalogue, e.g. `phi.read`.
    action: String,
    resource_type: String,
    resource_id: String,
    /// Names of the fields read or written.
    fields: Vec<String>,
    /// `success`, `denied` or `failure`.
    outcome: String,
    reason: Option<String>,
    request_id: String,
    /// Staff actions: the changed metadata before.
    #[schema(value_type = Option<Object>)]
    before: Option<serde_json::Value>,
    /// Staff actions: the changed metadata after.
    #[schema(value_type = Option<Object>)]
    after: Option<serde_json::Value>,
    /// SHA-256 of the previous event (hex).
    prev_hash: String,
    /// SHA-256 of this event's canonical encoding (hex).
    hash: String,
}

impl From<ChainedEvent> for AuditEventView {
    fn from(c: ChainedEvent) -> Self {
        let e = c.event;
        AuditEventView {
            sequence: e.sequence,
            time: e.time,
            actor_kind: e.actor.kind.as_str().into(),
            actor_id: e.actor.id,
            actor_role: e.actor.role,
            source_ip: e.source.ip,
            source_user_agent: e.source.user_agent,
            source_device: e.source.device,
            action: e.action.as_str().into(),
            resource_type: e.resource.kind,
            resource_id: e.resource.id,
            fields: e.fields,
            outcome: e.outcome.as_str().into(),
            reason: e.reason,
            request_id: e.request_id,
            before: e.before,
            after: e.after,
            prev_hash: hex::encode(c.prev_hash),
            hash: hex::encode(c.hash),
        }
    }
}

/// A page of events, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditPage {
    events: Vec<AuditEventView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    next_before: Option<u64>,
}

/// Filters and paging for the audit trail.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Only events by this actor id.
    actor: Option<String>,
    /// Only this action (e.g. `phi.read`).
    action: Option<String>,
    /// Only this resource type (e.g. `patient`).
    resource_type: Option<String>,
    /// Only this resource id.
    resource_id: Option<String>,
    /// At or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// Only events with a sequence number below this (the cursor of the next page).
    before: Option<u64>,
    /// Items per page, 1 to 200 (default 50).
    limit: Option<u32>,
}

/// The tenant's audit trail, newest first, for holders of `audit:view`.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/audit", tag = "audit",
    params(("tenant_id" = Uuid, Path), AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn list_audit(
    State(st): State<AppState>,
    s: Scoped<need::AuditView>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = super::page_limit(q.limit)?;
    let action = match q.action.as_deref() {
        None => None,
        Some(name) => Some(name.parse::<Action>().map_err(|_| {
            ApiError::bad_request("invalid_query", "action is not in the audit catalogue")
        })?),
    };
    let too_long = |v: &Option<String>| v.as_ref().is_some_and(|s| s.len() > 200);
    if too_long(&q.actor) || too_long(&q.resource_type) || too_long(&q.resource_id) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "a filter value is longer than 200 characters",
        ));
    }
    let filter = EventFilter {
        actor: q.actor,
        action,
        resource_type: q.resource_type,
        resource_id: q.resource_id,
        since: q.since,
        until: q.until,
        before_seq: q.before,
    };
    let mut tx = s.scope.begin(&st.db, TxMode::Read).await?;
    let events = ledger::list_tenant(&mut tx, &filter, limit)
        .await
        .map_err(crate::audit::unavailable)?;
    tx.commit().await?;
    let next_before = if events.len() == limit as usize {
        events.last().map(|e| e.event.sequence)
    } else {
        None
    };
    Ok(Json(AuditPage {
        events: events.into_iter().map(AuditEventView::from).collect(),
        next_before,
    }))
}
