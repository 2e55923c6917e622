//! The breach-impact report (docs/breach.md): which patients, encounters and records an
//! actor, a client address or a guest device touched in a window, from the tenant's
//! audit trail, for the 60-day notification.
//!
//! Reading it needs `audit:view`, like the trail itself: the report holds ids, action
//! names, times and counts, never a PHI value. Producing it is audited
//! (`breach.reported`, with the report id, window, filter and counts) in the transaction
//! that read the trail, so the record of who asked and the answer they got cannot part.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use phivault_audit::Action;
use phivault_domain::breach::{self, BreachError, Filter, Query, QueryError, TenantReport};
use phivault_store::TxMode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::extract::{ApiQuery, Scoped, need};
use crate::{ApiError, AppState};

/// This module's routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/tenants/{tenant_id}/breach-report",
        get(breach_report),
    )
}

/// This module's OpenAPI paths.
pub(crate) fn api() -> utoipa::openapi::OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        paths(breach_report),
        components(schemas(
            BreachReportDoc,
            FilterDoc,
            CountsDoc,
            ReachedDoc,
            ResourceRefDoc,
            KindGroupDoc,
            TouchedDoc,
            DeniedDoc,
            ActivityDoc,
            ActorSeenDoc,
            SourceSeenDoc
        ))
    )]
    struct Api;
    <Api as utoipa::OpenApi>::openapi()
}

/// The window and the one filter of a report.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreachParams {
    /// Start of the window, inclusive (RFC 3339, e.g. `2026-01-01T00:00:00Z`).
    since: Option<String>,
    /// End of the window, exclusive (RFC 3339); at most 366 days after `since`.
    until: Option<String>,
    /// Events of this actor id (a user, staff member, guest device, `cli:<name>`).
    actor: Option<String>,
    /// Events from this client address (IPv4 or IPv6).
    ip: Option<String>,
    /// Events of this guest device id.
    device: Option<String>,
}

fn time(value: Option<&str>, name: &'static str) -> Result<DateTime<Utc>, ApiError> {
    let message = match name {
        "since" => "since is required, as an RFC 3339 time such as 2026-01-01T00:00:00Z",
        _ => "until is required, as an RFC 3339 time such as 2026-02-01T00:00:00Z",
    };
    value
        .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| ApiError::bad_request("invalid_query", message))
}

fn refused(e: QueryError) -> ApiError {
    ApiError::bad_request(e.code(), e.to_string())
}

/// Checks the query: both times, exactly one filter, a window of at most 366 days.
fn parse(p: &BreachParams) -> Result<Query, ApiError> {
    let since = time(p.since.as_deref(), "since")?;
    let until = time(p.until.as_deref(), "until")?;
    let filter = Filter::one_of(p.actor.as_deref(), p.ip.as_deref(), p.device.as_deref())
        .map_err(refused)?;
    Query::new(since, until, filter).map_err(refused)
}

/// The tenant's breach-impact report for one actor, client address or guest device in a
/// window: the patients, encounters and records touched (successful PHI actions), by
/// whom and when, refused attempts apart, with counts. Ids only, never PHI values.
/// Audited `breach.reported`.
#[utoipa::path(get, path = "/api/v1/tenants/{tenant_id}/breach-report", tag = "audit",
    params(("tenant_id" = Uuid, Path), BreachParams),
    responses((status = 200, body = BreachReportDoc),
              (status = 400, description = "invalid_query, breach_filter_required, breach_filter_conflict, breach_window_invalid, breach_window_too_long", body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody),
              (status = 503, description = "audit_unavailable", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn breach_report(
    State(st): State<AppState>,
    s: Scoped<need::AuditView>,
    ApiQuery(params): ApiQuery<BreachParams>,
) -> Result<Json<TenantReport>, ApiError> {
    let query = parse(&params)?;
    let mut tx = s.scope.begin(&st.db, TxMode::Write).await?;
    let report = breach::report(&mut tx, &query, |_| {})
        .await
        .map_err(|e| match e {
            BreachError::Audit(e) => crate::audit::unavailable(e),
            BreachError::Store(e) => e.into(),
        })?;
    let mut event = s.audit.event(
        &st,
        Action::BreachReported,
        "breach_report",
        report.report_id,
        &["since", "until", "filter"],
    );
    event.after = Some(report.summary());
    s.audit.append_in(&st, &mut tx, event).await?;
    tx.commit().await?;
    Ok(Json(report))
}

// The answer is the domain's `TenantReport` serialised as is, so that the API and
// `phivault breach report --json` cannot differ. These types only describe it to
// OpenAPI; a test below checks they name the same fields.

/// A breach-impact report of one tenant.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachReport)]
pub(crate) struct BreachReportDoc {
    /// Names this report; the `breach.reported` event carries the same id.
    report_id: Uuid,
    tenant_id: Uuid,
    /// Start of the window (inclusive).
    since: DateTime<Utc>,
    /// End of the window (exclusive).
    until: DateTime<Utc>,
    filter: FilterDoc,
    /// Events the filter matched in the window, whatever their outcome.
    events_matched: u64,
    counts: CountsDoc,
    /// Patients reached: touched directly, or through an encounter or one of its records.
    patients: Vec<ReachedDoc>,
    /// Encounters reached: touched directly, or through one of their records.
    encounters: Vec<ReachedDoc>,
    /// Every record touched (successful PHI actions), by resource type.
    records: Vec<KindGroupDoc>,
    /// Refused and failed attempts.
    denied: Vec<DeniedDoc>,
    /// Other successful events (sign-ins, empty lists, searches, administrative changes).
    activity: Vec<ActivityDoc>,
    /// The actors of the matched events.
    actors: Vec<ActorSeenDoc>,
    /// The sources of the matched events.
    sources: Vec<SourceSeenDoc>,
    /// Touched records whose encounter or patient could not be found.
    unlinked: Vec<ResourceRefDoc>,
}

/// Whose events the report follows.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachFilter)]
pub(crate) struct FilterDoc {
    /// `actor`, `ip` or `device`.
    kind: String,
    /// The actor id, address or device id.
    value: String,
}

/// The totals of a report.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachCounts)]
pub(crate) struct CountsDoc {
    patients: u64,
    encounters: u64,
    /// Distinct records touched, over every resource type.
    records: u64,
    /// Refused or failed attempts.
    denied_attempts: u64,
}

/// A patient or encounter reached.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachReached)]
pub(crate) struct ReachedDoc {
    id: Uuid,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    events: u64,
    actions: Vec<String>,
    /// Actor ids.
    actors: Vec<String>,
    /// The records of the trail that led to it (the record itself when touched directly).
    via: Vec<ResourceRefDoc>,
}

/// A resource as the trail names it.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachResourceRef)]
pub(crate) struct ResourceRefDoc {
    kind: String,
    id: String,
}

/// The touched records of one resource type.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachKindGroup)]
pub(crate) struct KindGroupDoc {
    /// Resource type, e.g. `patient`, `encounter`, `recording`, `encounter_notes`.
    kind: String,
    count: u64,
    records: Vec<TouchedDoc>,
}

/// One record touched.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachTouched)]
pub(crate) struct TouchedDoc {
    id: String,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    events: u64,
    actions: Vec<String>,
    actors: Vec<String>,
}

/// Refused or failed attempts with the same action, resource and reason.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachDenied)]
pub(crate) struct DeniedDoc {
    action: String,
    /// `denied` or `failure`.
    outcome: String,
    resource_kind: String,
    resource_id: String,
    reason: Option<String>,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    events: u64,
    actors: Vec<String>,
}

/// Other successful events, by action and resource type.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachActivity)]
pub(crate) struct ActivityDoc {
    action: String,
    resource_kind: String,
    events: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

/// An actor among the matched events.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachActor)]
pub(crate) struct ActorSeenDoc {
    /// `user`, `staff`, `operator`, `system`, `device` or `anonymous`.
    kind: String,
    id: String,
    roles: Vec<String>,
    events: u64,
}

/// A source among the matched events.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = BreachSource)]
pub(crate) struct SourceSeenDoc {
    ip: String,
    device: String,
    events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn params(pairs: &[(&str, &str)]) -> BreachParams {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        BreachParams {
            since: get("since"),
            until: get("until"),
            actor: get("actor"),
            ip: get("ip"),
            device: get("device"),
        }
    }

    #[test]
    fn bad_queries_have_stable_codes() {
        let since = ("since", "2026-01-01T00:00:00Z");
        let until = ("until", "2026-02-01T00:00:00Z");
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[until, ("actor", "u")], "invalid_query"),
            (&[since, ("actor", "u")], "invalid_query"),
            (
                &[("since", "yesterday"), until, ("actor", "u")],
                "invalid_query",
            ),
            (&[since, until], "breach_filter_required"),
            (
                &[since, until, ("actor", "u"), ("ip", "127.0.0.1")],
                "breach_filter_conflict",
            ),
            (
                &[("since", "2026-02-01T00:00:00Z"), until, ("actor", "u")],
                "breach_window_invalid",
            ),
            (
                &[("since", "2024-01-01T00:00:00Z"), until, ("actor", "u")],
                "breach_window_too_long",
            ),
            (&[since, until, ("ip", "not-an-address")], "invalid_query"),
        ];
        for (pairs, code) in cases {
            let err = parse(&params(pairs)).unwrap_err();
            assert_eq!(err.code(), *code, "{pairs:?}");
            assert_eq!(err.status(), 400);
        }
        assert!(parse(&params(&[since, until, ("device", "d-1")])).is_ok());
    }

    /// Every object of `value` has exactly the properties its schema names.
    fn same_fields(doc: &Value, schema: &Value, value: &Value, at: &str) {
        let schema = match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.rsplit('/').next().unwrap();
                &doc["components"]["schemas"][name]
            }
            None => schema,
        };
        let schema = match schema.get("oneOf").and_then(Value::as_array) {
            // Option<T>: the non-null alternative.
            Some(alts) => alts.iter().find(|a| a["type"] != "null").unwrap(),
            None => schema,
        };
        match value {
            Value::Object(map) => {
                let props = schema["properties"].as_object().unwrap_or_else(|| {
                    panic!("{at}: no properties in {schema}");
                });
                let want: Vec<_> = props.keys().collect();
                let got: Vec<_> = map.keys().collect();
                let (mut want, mut got) = (want, got);
                want.sort();
                got.sort();
                assert_eq!(got, want, "{at}: the answer and the OpenAPI schema differ");
                for (k, v) in map {
                    same_fields(doc, &props[k], v, &format!("{at}.{k}"));
                }
            }
            Value::Array(items) => {
                for item in items {
                    same_fields(doc, &schema["items"], item, &format!("{at}[]"));
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_schema_describes_the_answer() {
        use phivault_domain::breach::*;
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let via = ResourceRef {
            kind: "encounter".into(),
            id: Uuid::nil().to_string(),
        };
        let reached = Reached {
            id: Uuid::nil().to_string(),
            first: t,
            last: t,
            events: 1,
            actions: vec!["phi.read".into()],
            actors: vec!["u".into()],
            via: vec![via.clone()],
        };
        let report = TenantReport {
            report_id: Uuid::nil(),
            tenant_id: phivault_store::TenantId::from_uuid(Uuid::nil()),
            since: t,
            until: t,
            filter: Filter::ip("127.0.0.1").unwrap(),
            events_matched: 1,
            counts: Counts::default(),
            patients: vec![reached.clone()],
            encounters: vec![reached],
            records: vec![KindGroup {
                kind: "encounter".into(),
                count: 1,
                records: vec![Touched {
                    id: via.id.clone(),
                    first: t,
                    last: t,
                    events: 1,
                    actions: vec!["phi.read".into()],
                    actors: vec!["u".into()],
                }],
            }],
            denied: vec![Denied {
                action: "access.denied".into(),
                outcome: "denied".into(),
                resource_kind: "route".into(),
                resource_id: "/r".into(),
                reason: Some("why".into()),
                first: t,
                last: t,
                events: 1,
                actors: vec!["u".into()],
            }],
            activity: vec![Activity {
                action: "auth.login".into(),
                resource_kind: "session".into(),
                events: 1,
                first: t,
                last: t,
            }],
            actors: vec![ActorSeen {
                kind: "user".into(),
                id: "u".into(),
                roles: vec!["owner".into()],
                events: 1,
            }],
            sources: vec![SourceSeen {
                ip: "127.0.0.1".into(),
                device: String::new(),
                events: 1,
            }],
            unlinked: vec![via],
        };
        let doc = serde_json::to_value(api()).unwrap();
        let value = serde_json::to_value(&report).unwrap();
        let schema = serde_json::json!({"$ref": "#/components/schemas/BreachReport"});
        same_fields(&doc, &schema, &value, "report");
    }
}
