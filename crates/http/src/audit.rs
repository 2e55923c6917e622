//! Auditing at the edge: who and where a request came from, the events handlers write,
//! and the guard that keeps a PHI answer from leaving unaudited.
//!
//! A route marked PHI (its `Scoped` requirement says so) must write its event before it
//! answers: a PHI change inside its own transaction ([`RequestAudit::append_in`]), a PHI
//! read through group commit once the read is done ([`RequestAudit::record`]). If the
//! event cannot be written the request is refused with 503 `audit_unavailable`. And if a
//! handler forgets, [`guard`] turns its successful answer into a 500 `audit_missing`
//! before a byte of it is sent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use phivault_audit::{Action, Actor, ActorKind, AuditError, AuditEvent, Outcome, Resource, Source};
use phivault_store::{TenantId, TenantTx};

use crate::layers::RequestId;
use crate::{ApiError, AppState};

const PHI: u8 = 1;
const AUDITED: u8 = 2;

/// Per-request record of whether the route is PHI and whether it was audited.
#[derive(Clone, Default)]
pub(crate) struct AuditMark(Arc<AtomicU8>);

impl AuditMark {
    pub(crate) fn set_phi(&self) {
        self.0.fetch_or(PHI, Ordering::SeqCst);
    }

    fn set_audited(&self) {
        self.0.fetch_or(AUDITED, Ordering::SeqCst);
    }

    fn unaudited_phi(&self) -> bool {
        self.0.load(Ordering::SeqCst) & (PHI | AUDITED) == PHI
    }
}

/// Middleware: a successful answer from a PHI route that wrote no audit event is
/// replaced by 500 `audit_missing`.
pub(crate) async fn guard(mut req: Request, next: Next) -> Response {
    let mark = AuditMark::default();
    req.extensions_mut().insert(mark.clone());
    let response = next.run(req).await;
    if response.status().is_success() && mark.unaudited_phi() {
        tracing::error!("a PHI route answered without writing its audit event; answer withheld");
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "audit_missing",
            "the request was not audited, so its answer was withheld",
        )
        .into_response();
    }
    response
}

/// 503 when the audit trail cannot be written.
pub(crate) fn unavailable(e: AuditError) -> ApiError {
    tracing::error!(error = %e, "audit store unavailable; request refused");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        "the audit trail cannot be written, so the request was refused; retry later",
    )
}

/// Longest user agent kept in an event.
const USER_AGENT_MAX: usize = 200;

/// The source of a request: peer address and user agent (printable ASCII, truncated).
pub(crate) fn source_of(parts: &Parts) -> Source {
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip().to_string())
        .unwrap_or_default();
    let user_agent = parts
        .headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(USER_AGENT_MAX)
                .collect()
        })
        .unwrap_or_default();
    Source {
        ip,
        user_agent,
        device: String::new(),
    }
}

/// Who made a request and from where, ready to write events.
pub(crate) struct RequestAudit {
    tenant: TenantId,
    actor: Actor,
    source: Source,
    request_id: String,
    mark: Option<AuditMark>,
    note: Option<String>,
}

impl RequestAudit {
    pub(crate) fn new(parts: &Parts, tenant: TenantId, actor: Actor) -> Self {
        RequestAudit {
            tenant,
            actor,
            source: source_of(parts),
            request_id: parts
                .extensions
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            mark: parts.extensions.get::<AuditMark>().cloned(),
            note: None,
        }
    }

    /// Sets the reason every event of this request carries (the break-glass grant a
    /// staff member reads under).
    pub(crate) fn noting(mut self, note: String) -> Self {
        self.note = Some(note);
        self
    }

    /// Marks the request as touching PHI: it must write an event before it answers.
    pub(crate) fn require(&self) {
        if let Some(m) = &self.mark {
            m.set_phi();
        }
    }

    /// An event by this request's actor, in its tenant, naming fields, never values.
    pub(crate) fn event(
        &self,
        st: &AppState,
        action: Action,
        kind: &str,
        id: impl ToString,
        fields: &[&str],
    ) -> AuditEvent {
        AuditEvent {
            sequence: 0,
            time: st.now(),
            tenant: Some(self.tenant),
            actor: self.actor.clone(),
            source: self.source.clone(),
            action,
            resource: Resource {
                kind: kind.to_string(),
                id: id.to_string(),
            },
            fields: fields.iter().map(|f| f.to_string()).collect(),
            outcome: Outcome::Success,
            reason: self.note.clone(),
            request_id: self.request_id.clone(),
            before: None,
            after: None,
        }
    }

    /// Writes `events` durably (group commit) before the caller answers.
    pub(crate) async fn record(
        &self,
        st: &AppState,
        events: Vec<AuditEvent>,
    ) -> Result<(), ApiError> {
        let writes = events.into_iter().map(|e| st.auditor.record(e));
        for result in futures::future::join_all(writes).await {
            result.map_err(unavailable)?;
        }
        if let Some(m) = &self.mark {
            m.set_audited();
        }
        Ok(())
    }

    /// Records that this request's events were committed by a writer that owns the
    /// transaction (the end-to-end append group commit).
    pub(crate) fn committed_elsewhere(&self) {
        if let Some(m) = &self.mark {
            m.set_audited();
        }
    }

    /// Writes `event` inside `tx`, to commit with the change it records.
    pub(crate) async fn append_in(
        &self,
        st: &AppState,
        tx: &mut TenantTx,
        event: AuditEvent,
    ) -> Result<(), ApiError> {
        st.auditor.append_in(tx, event).await.map_err(unavailable)?;
        if let Some(m) = &self.mark {
            m.set_audited();
        }
        Ok(())
    }
}

/// The audit actor of an authenticated tenant user.
pub(crate) fn user_actor(principal: &phivault_access::Principal) -> Actor {
    Actor {
        kind: ActorKind::User,
        id: principal.user().to_string(),
        role: principal
            .roles()
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(","),
    }
}

/// Records a refusal (`access.denied` in the caller's tenant, or `auth.failed` on the
/// platform chain). A refusal is answered whatever happens here; a failure to record
/// it is logged.
pub(crate) async fn record_refusal(
    st: &AppState,
    parts: &Parts,
    tenant: Option<TenantId>,
    actor: Actor,
    action: Action,
    what: (&str, String),
    reason: &str,
) {
    let event = AuditEvent {
        sequence: 0,
        time: st.now(),
        tenant,
        actor,
        source: source_of(parts),
        action,
        resource: Resource {
            kind: what.0.to_string(),
            id: what.1,
        },
        fields: Vec::new(),
        outcome: Outcome::Denied,
        reason: Some(reason.to_string()),
        request_id: parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        before: None,
        after: None,
    };
    if let Err(e) = st.auditor.record(event).await {
        tracing::error!(error = %e, "could not record a refused request in the audit trail");
    }
}

/// Loads (or creates) the checkpoint signing key and gives it to the auditor. Needs
/// unsealed keys; without them checkpoints wait, and the failure is logged.
pub async fn attach_signer(st: &AppState) {
    match phivault_audit::signing::load_or_create_signer(&st.db, &st.keys, st.now()).await {
        Ok(signer) => st.auditor.set_signer(signer),
        Err(e) => tracing::error!(error = %e, "audit checkpoint key unavailable; checkpoints wait"),
    }
}

/// Where a request came from, for handlers that write events without a `Scoped`
/// extractor (sign-in, refresh, sign-out).
pub(crate) struct Origin {
    pub(crate) source: Source,
    pub(crate) request_id: String,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Origin {
            source: source_of(parts),
            request_id: parts
                .extensions
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
        })
    }
}

impl Origin {
    /// An event from this request about `resource` in `tenant`'s chain.
    pub(crate) fn event(
        &self,
        st: &AppState,
        tenant: Option<TenantId>,
        actor: Actor,
        action: Action,
        resource: (&str, String),
        (outcome, reason): (Outcome, Option<&str>),
    ) -> AuditEvent {
        AuditEvent {
            sequence: 0,
            time: st.now(),
            tenant,
            actor,
            source: self.source.clone(),
            action,
            resource: Resource {
                kind: resource.0.to_string(),
                id: resource.1,
            },
            fields: Vec::new(),
            outcome,
            reason: reason.map(str::to_string),
            request_id: self.request_id.clone(),
            before: None,
            after: None,
        }
    }
}
