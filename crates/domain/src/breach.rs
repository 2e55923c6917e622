//! The breach-impact report: which patients, encounters and other PHI records an actor,
//! a client address or a guest device touched in a time window, read from a tenant's
//! audit chain, for the notification HIPAA §164.404 asks for within 60 days.
//!
//! It lives in the domain layer, not in the audit crate, because naming the patients
//! behind an encounter, a recording, a transcript, a note or a consent takes a lookup in
//! the tenant's own tables. Those lookups read identifiers only (`encounters.patient_id`,
//! `recordings.encounter_id`, ...), never a sealed column, so the report needs no key
//! and holds no PHI value: it is made of ids, action names, times and counts.
//!
//! What counts as *touched* is a successful PHI action (read, create, update, delete,
//! export, recording, transcription, note, end-to-end traffic) on a record; refused and
//! failed attempts are listed apart, and everything else the filter matched (sign-ins,
//! lists that returned nothing, administrative changes) is summed up as activity. The
//! report shows what the trail recorded, nothing more: docs/breach.md says what that
//! leaves out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use phivault_audit::ledger::{self, EventFilter};
use phivault_audit::{Action, AuditError, AuditEvent, Outcome};
use phivault_store::{StoreError, TenantId, TenantTx};
use serde::Serialize;
use uuid::Uuid;

/// The longest window a report may cover, in days: any calendar year fits.
pub const MAX_WINDOW_DAYS: i64 = 366;

/// Longest actor or device identifier accepted in a filter.
const VALUE_MAX: usize = 200;

/// Events read per statement while scanning the window.
const PAGE: u32 = 1_000;

/// Whose events the report follows: exactly one of an actor id, a client address or a
/// guest device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Filter {
    /// Events whose actor id is this (a user, staff member, guest device, `cli:<name>`).
    Actor(String),
    /// Events from this client address (IPv4-mapped IPv6 addresses match their IPv4 form).
    Ip(IpAddr),
    /// Events of this guest device: its own requests, or a request naming it as source.
    Device(String),
}

/// Why a report was not started. Each has a stable code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No filter was given.
    #[error("give exactly one filter: actor, ip or device")]
    FilterMissing,
    /// More than one filter was given.
    #[error("give only one filter: actor, ip or device")]
    FilterConflict,
    /// `since` is not before `until`.
    #[error("since must be before until")]
    WindowOrder,
    /// The window is longer than [`MAX_WINDOW_DAYS`].
    #[error("the window is longer than 366 days; make one report per year")]
    WindowTooLong,
    /// A filter value is malformed (the message names the filter, never the value).
    #[error("{0}")]
    BadValue(&'static str),
}

impl QueryError {
    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::FilterMissing => "breach_filter_required",
            QueryError::FilterConflict => "breach_filter_conflict",
            QueryError::WindowOrder => "breach_window_invalid",
            QueryError::WindowTooLong => "breach_window_too_long",
            QueryError::BadValue(_) => "invalid_query",
        }
    }
}

fn identifier(value: &str, what: &'static str) -> Result<String, QueryError> {
    let v = value.trim();
    if v.is_empty() || v.len() > VALUE_MAX || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err(QueryError::BadValue(what));
    }
    Ok(v.to_string())
}

impl Filter {
    /// An actor filter; the id must be 1 to 200 printable ASCII characters.
    pub fn actor(id: &str) -> Result<Filter, QueryError> {
        identifier(
            id,
            "actor must be an actor id of 1 to 200 printable characters",
        )
        .map(Filter::Actor)
    }

    /// A client address filter; the value must be an IPv4 or IPv6 address.
    pub fn ip(ip: &str) -> Result<Filter, QueryError> {
        ip.trim()
            .parse::<IpAddr>()
            .map(|a| Filter::Ip(a.to_canonical()))
            .map_err(|_| QueryError::BadValue("ip must be an IPv4 or IPv6 address"))
    }

    /// A guest device filter; the id must be 1 to 200 printable ASCII characters.
    pub fn device(id: &str) -> Result<Filter, QueryError> {
        identifier(
            id,
            "device must be a device id of 1 to 200 printable characters",
        )
        .map(Filter::Device)
    }

    /// Exactly one of the three, as a query string or a command line gives them.
    pub fn one_of(
        actor: Option<&str>,
        ip: Option<&str>,
        device: Option<&str>,
    ) -> Result<Filter, QueryError> {
        match (actor, ip, device) {
            (Some(a), None, None) => Filter::actor(a),
            (None, Some(i), None) => Filter::ip(i),
            (None, None, Some(d)) => Filter::device(d),
            (None, None, None) => Err(QueryError::FilterMissing),
            _ => Err(QueryError::FilterConflict),
        }
    }

    /// The filter's kind: `actor`, `ip` or `device`.
    pub fn kind(&self) -> &'static str {
        match self {
            Filter::Actor(_) => "actor",
            Filter::Ip(_) => "ip",
            Filter::Device(_) => "device",
        }
    }

    /// The value filtered on.
    pub fn value(&self) -> String {
        match self {
            Filter::Actor(v) | Filter::Device(v) => v.clone(),
            Filter::Ip(ip) => ip.to_string(),
        }
    }

    fn matches(&self, e: &AuditEvent) -> bool {
        match self {
            Filter::Actor(id) => e.actor.id == *id,
            Filter::Ip(ip) => e
                .source
                .ip
                .parse::<IpAddr>()
                .is_ok_and(|a| a.to_canonical() == *ip),
            // Guest devices act as actors of kind `device`; other requests may name a
            // device as their source.
            Filter::Device(id) => {
                e.source.device == *id
                    || (e.actor.kind == phivault_audit::ActorKind::Device && e.actor.id == *id)
            }
        }
    }
}

/// A validated report request: a window `[since, until)` and one filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    filter: Filter,
}

impl Query {
    /// Checks the window: `since` before `until`, at most [`MAX_WINDOW_DAYS`] apart.
    pub fn new(
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        filter: Filter,
    ) -> Result<Query, QueryError> {
        if since >= until {
            return Err(QueryError::WindowOrder);
        }
        if until - since > Duration::days(MAX_WINDOW_DAYS) {
            return Err(QueryError::WindowTooLong);
        }
        Ok(Query {
            since,
            until,
            filter,
        })
    }

    /// Start of the window (inclusive).
    pub fn since(&self) -> DateTime<Utc> {
        self.since
    }

    /// End of the window (exclusive).
    pub fn until(&self) -> DateTime<Utc> {
        self.until
    }

    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }
}

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum BreachError {
    /// The trail could not be read, or a row no longer decodes (run `phivault audit
    /// verify`).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A link lookup failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A resource as the trail names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceRef {
    /// Resource type, e.g. `encounter`, `recording`.
    pub kind: String,
    /// Its id.
    pub id: String,
}

/// One record touched, with when, how and by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Touched {
    /// The record's id.
    pub id: String,
    /// First touching event.
    pub first: DateTime<Utc>,
    /// Last touching event.
    pub last: DateTime<Utc>,
    /// Touching events.
    pub events: u64,
    /// The actions, e.g. `phi.read`, `phi.create`.
    pub actions: Vec<String>,
    /// The actor ids.
    pub actors: Vec<String>,
}

/// The records of one resource type that were touched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KindGroup {
    /// Resource type.
    pub kind: String,
    /// How many distinct records.
    pub count: usize,
    /// The records, earliest first.
    pub records: Vec<Touched>,
}

/// A patient or encounter reached, directly or through records that belong to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reached {
    /// The patient's or encounter's id.
    pub id: String,
    /// First event that reached it.
    pub first: DateTime<Utc>,
    /// Last event that reached it.
    pub last: DateTime<Utc>,
    /// Events that reached it.
    pub events: u64,
    /// The actions of those events.
    pub actions: Vec<String>,
    /// The actor ids.
    pub actors: Vec<String>,
    /// The records of the trail that led to it (the record itself when touched directly).
    pub via: Vec<ResourceRef>,
}

/// A refused or failed attempt, grouped by action, resource and reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denied {
    /// The action attempted.
    pub action: String,
    /// `denied` or `failure`.
    pub outcome: String,
    /// Resource type (`route` for a refused request, with the route template as id).
    pub resource_kind: String,
    /// Resource id.
    pub resource_id: String,
    /// The recorded reason.
    pub reason: Option<String>,
    /// First attempt.
    pub first: DateTime<Utc>,
    /// Last attempt.
    pub last: DateTime<Utc>,
    /// Attempts.
    pub events: u64,
    /// The actor ids.
    pub actors: Vec<String>,
}

/// Other successful events the filter matched, by action and resource type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// The action.
    pub action: String,
    /// Resource type.
    pub resource_kind: String,
    /// Events.
    pub events: u64,
    /// First event.
    pub first: DateTime<Utc>,
    /// Last event.
    pub last: DateTime<Utc>,
}

/// An actor among the matched events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ActorSeen {
    /// `user`, `staff`, `operator`, `system`, `device` or `anonymous`.
    pub kind: String,
    /// Actor id.
    pub id: String,
    /// Roles recorded with its events.
    pub roles: Vec<String>,
    /// Its matched events.
    pub events: u64,
}

/// A source (client address and device) among the matched events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceSeen {
    /// Client address (empty for the server's own work).
    pub ip: String,
    /// Device id, if the request named one.
    pub device: String,
    /// Matched events from it.
    pub events: u64,
}

/// The totals of a report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Distinct patients reached.
    pub patients: usize,
    /// Distinct encounters reached.
    pub encounters: usize,
    /// Distinct records touched, over every resource type.
    pub records: usize,
    /// Refused or failed attempts.
    pub denied_attempts: u64,
}

/// One tenant's breach-impact report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantReport {
    /// Names this report; the `breach.reported` event that records it carries the same id.
    pub report_id: Uuid,
    /// The tenant.
    pub tenant_id: TenantId,
    /// Start of the window (inclusive).
    pub since: DateTime<Utc>,
    /// End of the window (exclusive).
    pub until: DateTime<Utc>,
    /// Whose events.
    pub filter: Filter,
    /// Events the filter matched in the window, whatever their outcome.
    pub events_matched: u64,
    /// Totals.
    pub counts: Counts,
    /// Patients reached: touched directly, or through an encounter or a record of one.
    pub patients: Vec<Reached>,
    /// Encounters reached: touched directly, or through one of their records.
    pub encounters: Vec<Reached>,
    /// Every record touched, grouped by resource type as the trail names it.
    pub records: Vec<KindGroup>,
    /// Refused and failed attempts.
    pub denied: Vec<Denied>,
    /// Other successful events (sign-ins, empty lists, searches, administrative changes).
    pub activity: Vec<Activity>,
    /// The actors of the matched events.
    pub actors: Vec<ActorSeen>,
    /// The sources of the matched events.
    pub sources: Vec<SourceSeen>,
    /// Touched records whose encounter or patient could not be found (erased rows, or ids
    /// that are not record ids); listed in `records`, missing from `patients` and
    /// `encounters`.
    pub unlinked: Vec<ResourceRef>,
}

impl TenantReport {
    /// The report's summary, as the `breach.reported` event's after-snapshot: ids and
    /// counts only.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "report_id": self.report_id.to_string(),
            "since": self.since,
            "until": self.until,
            "filter": self.filter,
            "events_matched": self.events_matched,
            "patients": self.counts.patients,
            "encounters": self.counts.encounters,
            "records": self.counts.records,
            "denied_attempts": self.counts.denied_attempts,
        })
    }
}

/// How a resource type of the trail leads to an encounter and a patient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// The id is a patient's.
    Patient,
    /// The id is an encounter's (the encounter, or one of its lists).
    Encounter,
    /// The id is a row of this table, whose `encounter_id` names the encounter.
    Table(Table),
    /// A PHI record with no patient link (end-to-end sessions: the server never knows
    /// whose conversation it carries).
    Unlinked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Table {
    Recordings,
    Transcripts,
    Notes,
    Consents,
}

/// The resource types that name one PHI record, and how each links. Lists, searches
/// and summaries (`patient_list`, `patient_search`, `encounter_list`,
/// `training_export`) name no record: their records are audited one by one anyway.
fn link_of(kind: &str) -> Option<Link> {
    Some(match kind {
        "patient" => Link::Patient,
        "encounter"
        | "encounter_consents"
        | "encounter_recordings"
        | "encounter_transcripts"
        | "encounter_notes" => Link::Encounter,
        "recording" | "recording_jobs" => Link::Table(Table::Recordings),
        "transcript" => Link::Table(Table::Transcripts),
        "note" => Link::Table(Table::Notes),
        "consent" => Link::Table(Table::Consents),
        "e2e_session" | "e2e_utterance" | "e2e_invite" => Link::Unlinked,
        _ => return None,
    })
}

/// Whether an action touches PHI (content, or end-to-end ciphertext).
fn touches_phi(action: Action) -> bool {
    matches!(
        action,
        Action::PhiRead
            | Action::PhiCreate
            | Action::PhiUpdate
            | Action::PhiDelete
            | Action::PhiExport
            | Action::RecordingCreated
            | Action::TranscriptionStarted
            | Action::TranscriptionCompleted
            | Action::NoteGenerated
            | Action::NoteApproved
            | Action::NarrativeCopied
            | Action::E2eSessionCreated
            | Action::E2eInviteCreated
            | Action::E2eInviteConsumed
            | Action::E2eUtteranceStored
            | Action::E2eUtteranceRead
            | Action::E2eSessionEnded
            | Action::RetentionObjectDeleted
    )
}

#[derive(Clone, Debug)]
struct Stats {
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    events: u64,
    actions: BTreeSet<String>,
    actors: BTreeSet<String>,
}

impl Stats {
    fn new(t: DateTime<Utc>) -> Stats {
        Stats {
            first: t,
            last: t,
            events: 0,
            actions: BTreeSet::new(),
            actors: BTreeSet::new(),
        }
    }

    fn add(&mut self, e: &AuditEvent) {
        self.first = self.first.min(e.time);
        self.last = self.last.max(e.time);
        self.events += 1;
        self.actions.insert(e.action.as_str().to_string());
        self.actors.insert(e.actor.id.clone());
    }

    fn merge(&mut self, other: &Stats) {
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
        self.events += other.events;
        self.actions.extend(other.actions.iter().cloned());
        self.actors.extend(other.actors.iter().cloned());
    }
}

type DeniedKey = (String, String, String, String, Option<String>);

/// The matched events, folded. Pure: the lookups that link records to encounters and
/// patients come afterwards, in [`Links`].
#[derive(Default)]
struct Tally {
    matched: u64,
    touched: BTreeMap<ResourceRef, Stats>,
    denied: BTreeMap<DeniedKey, Stats>,
    activity: BTreeMap<(String, String), Stats>,
    actors: BTreeMap<(String, String), (BTreeSet<String>, u64)>,
    sources: BTreeMap<(String, String), u64>,
}

impl Tally {
    fn add(&mut self, e: &AuditEvent) {
        self.matched += 1;
        let actor = self
            .actors
            .entry((e.actor.kind.as_str().to_string(), e.actor.id.clone()))
            .or_default();
        actor.0.extend(
            e.actor
                .role
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_string),
        );
        actor.1 += 1;
        *self
            .sources
            .entry((e.source.ip.clone(), e.source.device.clone()))
            .or_default() += 1;
        if e.outcome != Outcome::Success {
            let key = (
                e.action.as_str().to_string(),
                e.outcome.as_str().to_string(),
                e.resource.kind.clone(),
                e.resource.id.clone(),
                e.reason.clone(),
            );
            self.denied
                .entry(key)
                .or_insert_with(|| Stats::new(e.time))
                .add(e);
            return;
        }
        let record = link_of(&e.resource.kind).is_some()
            && touches_phi(e.action)
            && !e.resource.id.is_empty();
        let stats = if record {
            self.touched
                .entry(ResourceRef {
                    kind: e.resource.kind.clone(),
                    id: e.resource.id.clone(),
                })
                .or_insert_with(|| Stats::new(e.time))
        } else {
            self.activity
                .entry((e.action.as_str().to_string(), e.resource.kind.clone()))
                .or_insert_with(|| Stats::new(e.time))
        };
        stats.add(e);
    }
}

/// What the tenant's tables say about the touched records: the encounter of each
/// recording, transcript, note and consent, and the patient of each encounter.
#[derive(Default)]
struct Links {
    encounter_of: HashMap<(Table, Uuid), Option<Uuid>>,
    patient_of: HashMap<Uuid, Option<Uuid>>,
}

impl Links {
    /// The encounter a record belongs to, if it can be told.
    fn encounter(&self, r: &ResourceRef) -> Option<Uuid> {
        let id = Uuid::parse_str(&r.id).ok()?;
        match link_of(&r.kind)? {
            Link::Encounter => Some(id),
            Link::Table(t) => self.encounter_of.get(&(t, id)).copied().flatten(),
            Link::Patient | Link::Unlinked => None,
        }
    }

    /// The patient a record belongs to, if it can be told.
    fn patient(&self, r: &ResourceRef) -> Option<Uuid> {
        if link_of(&r.kind)? == Link::Patient {
            return Uuid::parse_str(&r.id).ok();
        }
        let encounter = self.encounter(r)?;
        self.patient_of.get(&encounter).copied().flatten()
    }

    /// Looks up what `touched` needs, once per id. Ids only: no sealed column is read.
    async fn resolve<'a>(
        tx: &mut TenantTx,
        touched: impl Iterator<Item = &'a ResourceRef>,
    ) -> Result<Links, StoreError> {
        let mut links = Links::default();
        let mut encounters = BTreeSet::new();
        for r in touched {
            let Ok(id) = Uuid::parse_str(&r.id) else {
                continue;
            };
            match link_of(&r.kind) {
                Some(Link::Encounter) => {
                    encounters.insert(id);
                }
                Some(Link::Table(t)) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) =
                        links.encounter_of.entry((t, id))
                    {
                        let found = encounter_in(tx, t, id).await?;
                        slot.insert(found);
                        encounters.extend(found);
                    }
                }
                _ => {}
            }
        }
        for e in encounters {
            let found: Option<(Uuid,)> = tx
                .query("SELECT patient_id FROM encounters WHERE tenant_id = $1 AND id = $2")
                .bind(e)
                .fetch_optional()
                .await?;
            links.patient_of.insert(e, found.map(|(p,)| p));
        }
        Ok(links)
    }
}

async fn encounter_in(
    tx: &mut TenantTx,
    table: Table,
    id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    // One static statement per table: the store accepts only static SQL.
    let sql = match table {
        Table::Recordings => "SELECT encounter_id FROM recordings WHERE tenant_id = $1 AND id = $2",
        Table::Transcripts => {
            "SELECT encounter_id FROM transcripts WHERE tenant_id = $1 AND id = $2"
        }
        Table::Notes => "SELECT encounter_id FROM notes WHERE tenant_id = $1 AND id = $2",
        Table::Consents => "SELECT encounter_id FROM consents WHERE tenant_id = $1 AND id = $2",
    };
    let found: Option<(Uuid,)> = tx.query(sql).bind(id).fetch_optional().await?;
    Ok(found.map(|(e,)| e))
}

fn sorted(set: &BTreeSet<String>) -> Vec<String> {
    set.iter().cloned().collect()
}

/// Builds the report from the tally and the links.
fn build(report_id: Uuid, tenant: TenantId, q: &Query, t: Tally, links: &Links) -> TenantReport {
    let mut records: BTreeMap<String, Vec<Touched>> = BTreeMap::new();
    let mut patients: BTreeMap<Uuid, (Stats, BTreeSet<ResourceRef>)> = BTreeMap::new();
    let mut encounters: BTreeMap<Uuid, (Stats, BTreeSet<ResourceRef>)> = BTreeMap::new();
    let mut unlinked = Vec::new();
    let reach = |map: &mut BTreeMap<Uuid, (Stats, BTreeSet<ResourceRef>)>,
                 id: Uuid,
                 r: &ResourceRef,
                 s: &Stats| {
        let entry = map
            .entry(id)
            .or_insert_with(|| (Stats::new(s.first), BTreeSet::new()));
        entry.0.merge(s);
        entry.1.insert(r.clone());
    };
    for (r, s) in &t.touched {
        records.entry(r.kind.clone()).or_default().push(Touched {
            id: r.id.clone(),
            first: s.first,
            last: s.last,
            events: s.events,
            actions: sorted(&s.actions),
            actors: sorted(&s.actors),
        });
        let link = link_of(&r.kind);
        if let Some(e) = links.encounter(r) {
            reach(&mut encounters, e, r, s);
        }
        match links.patient(r) {
            Some(p) => reach(&mut patients, p, r, s),
            None if link != Some(Link::Unlinked) => unlinked.push(r.clone()),
            None => {}
        }
    }
    let reached = |map: BTreeMap<Uuid, (Stats, BTreeSet<ResourceRef>)>| {
        let mut v: Vec<Reached> = map
            .into_iter()
            .map(|(id, (s, via))| Reached {
                id: id.to_string(),
                first: s.first,
                last: s.last,
                events: s.events,
                actions: sorted(&s.actions),
                actors: sorted(&s.actors),
                via: via.into_iter().collect(),
            })
            .collect();
        v.sort_by(|a, b| (a.first, &a.id).cmp(&(b.first, &b.id)));
        v
    };
    let patients = reached(patients);
    let encounters = reached(encounters);
    let records: Vec<KindGroup> = records
        .into_iter()
        .map(|(kind, mut list)| {
            list.sort_by(|a, b| (a.first, &a.id).cmp(&(b.first, &b.id)));
            KindGroup {
                kind,
                count: list.len(),
                records: list,
            }
        })
        .collect();
    let mut denied: Vec<Denied> = t
        .denied
        .into_iter()
        .map(|((action, outcome, kind, id, reason), s)| Denied {
            action,
            outcome,
            resource_kind: kind,
            resource_id: id,
            reason,
            first: s.first,
            last: s.last,
            events: s.events,
            actors: sorted(&s.actors),
        })
        .collect();
    denied.sort_by_key(|d| d.first);
    let activity = t
        .activity
        .into_iter()
        .map(|((action, kind), s)| Activity {
            action,
            resource_kind: kind,
            events: s.events,
            first: s.first,
            last: s.last,
        })
        .collect();
    let actors = t
        .actors
        .into_iter()
        .map(|((kind, id), (roles, events))| ActorSeen {
            kind,
            id,
            roles: sorted(&roles),
            events,
        })
        .collect();
    let sources = t
        .sources
        .into_iter()
        .map(|((ip, device), events)| SourceSeen { ip, device, events })
        .collect();
    let counts = Counts {
        patients: patients.len(),
        encounters: encounters.len(),
        records: records.iter().map(|g| g.count).sum(),
        denied_attempts: denied.iter().map(|d| d.events).sum(),
    };
    TenantReport {
        report_id,
        tenant_id: tenant,
        since: q.since,
        until: q.until,
        filter: q.filter.clone(),
        events_matched: t.matched,
        counts,
        patients,
        encounters,
        records,
        denied,
        activity,
        actors,
        sources,
        unlinked,
    }
}

/// Produces the report for the transaction's tenant: reads the chain's events in the
/// window (newest first, a page at a time), keeps those the filter matches, and links
/// the touched records to their encounters and patients. `progress` is called with the
/// number of events read so far. The caller records `breach.reported` in the same
/// transaction.
pub async fn report<F: FnMut(u64) + Send>(
    tx: &mut TenantTx,
    q: &Query,
    mut progress: F,
) -> Result<TenantReport, BreachError> {
    let mut filter = EventFilter {
        since: Some(q.since),
        until: Some(q.until),
        ..EventFilter::default()
    };
    // The actor filter runs in SQL (there is an index on it); addresses and devices are
    // compared after decoding, so that equivalent spellings of an address match.
    if let Filter::Actor(id) = &q.filter {
        filter.actor = Some(id.clone());
    }
    let mut tally = Tally::default();
    let mut read = 0u64;
    loop {
        let page = ledger::list_tenant(tx, &filter, PAGE).await?;
        let n = page.len();
        for c in &page {
            read += 1;
            if q.filter.matches(&c.event) {
                tally.add(&c.event);
            }
        }
        progress(read);
        match page.last() {
            Some(last) if n == PAGE as usize => filter.before_seq = Some(last.event.sequence),
            _ => break,
        }
    }
    let links = Links::resolve(tx, tally.touched.keys()).await?;
    Ok(build(Uuid::now_v7(), tx.tenant(), q, tally, &links))
}

#[cfg(test)]
mod tests {
    use super::*;
    use phivault_audit::{Actor, ActorKind, Resource, Source};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn ev(s: i64, actor: &str, ip: &str, action: Action, kind: &str, id: &str) -> AuditEvent {
        AuditEvent {
            sequence: 0,
            time: at(s),
            tenant: None,
            actor: Actor {
                kind: ActorKind::User,
                id: actor.into(),
                role: "provider,qa".into(),
            },
            source: Source {
                ip: ip.into(),
                user_agent: "synthetic-test".into(),
                device: String::new(),
            },
            action,
            resource: Resource {
                kind: kind.into(),
                id: id.into(),
            },
            fields: vec![],
            outcome: Outcome::Success,
            reason: None,
            request_id: String::new(),
            before: None,
            after: None,
        }
    }

    fn q(filter: Filter) -> Query {
        Query::new(at(0), at(1000), filter).unwrap()
    }

    #[test]
    fn window_and_filters_are_checked() {
        let f = || Filter::actor("u").unwrap();
        assert_eq!(Query::new(at(5), at(5), f()), Err(QueryError::WindowOrder));
        assert_eq!(Query::new(at(6), at(5), f()), Err(QueryError::WindowOrder));
        let year = Duration::days(MAX_WINDOW_DAYS);
        assert!(Query::new(at(0), at(0) + year, f()).is_ok());
        assert_eq!(
            Query::new(at(0), at(0) + year + Duration::seconds(1), f()),
            Err(QueryError::WindowTooLong)
        );
        assert_eq!(
            Filter::one_of(None, None, None),
            Err(QueryError::FilterMissing)
        );
        assert_eq!(
            Filter::one_of(Some("a"), Some("127.0.0.1"), None),
            Err(QueryError::FilterConflict)
        );
        assert_eq!(
            Filter::one_of(Some("a"), None, Some("d")),
            Err(QueryError::FilterConflict)
        );
        for bad in ["", "   ", "a b", "é", &"x".repeat(201)] {
            assert!(matches!(Filter::actor(bad), Err(QueryError::BadValue(_))));
            assert!(matches!(Filter::device(bad), Err(QueryError::BadValue(_))));
        }
        for bad in ["", "127.0.0", "localhost", "1.2.3.4/8", "::g"] {
            assert!(matches!(Filter::ip(bad), Err(QueryError::BadValue(_))));
        }
        // An error message never quotes the value.
        let secret = "secret-value-1";
        let err = Filter::ip(secret).unwrap_err();
        assert!(!err.to_string().contains(secret));
        assert_eq!(err.code(), "invalid_query");
        assert_eq!(
            Filter::ip("::ffff:10.0.0.9").unwrap(),
            Filter::ip("10.0.0.9").unwrap()
        );
    }

    #[test]
    fn filters_match_actor_address_and_device() {
        let e = ev(1, "u1", "::ffff:10.1.2.3", Action::PhiRead, "patient", "p");
        assert!(Filter::actor("u1").unwrap().matches(&e));
        assert!(!Filter::actor("u2").unwrap().matches(&e));
        assert!(Filter::ip("10.1.2.3").unwrap().matches(&e));
        assert!(!Filter::ip("10.1.2.4").unwrap().matches(&e));
        assert!(!Filter::device("u1").unwrap().matches(&e));
        let mut d = e.clone();
        d.actor.kind = ActorKind::Device;
        d.actor.id = "dev-1".into();
        assert!(Filter::device("dev-1").unwrap().matches(&d));
        let mut s = e.clone();
        s.source.device = "dev-2".into();
        assert!(Filter::device("dev-2").unwrap().matches(&s));
        // An empty or odd stored address matches no address filter.
        let mut local = e;
        local.source.ip = "local".into();
        assert!(!Filter::ip("127.0.0.1").unwrap().matches(&local));
    }

    #[test]
    fn records_are_grouped_and_linked() {
        let (p1, p2, p3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (e1, e2) = (Uuid::now_v7(), Uuid::now_v7());
        let rec = Uuid::now_v7();
        let gone = Uuid::now_v7();
        let s = |u: Uuid| u.to_string();
        let events = vec![
            ev(1, "u", "10.0.0.1", Action::PhiCreate, "patient", &s(p1)),
            ev(2, "u", "10.0.0.1", Action::PhiRead, "patient", &s(p1)),
            ev(3, "u", "10.0.0.1", Action::PhiRead, "encounter", &s(e1)),
            ev(
                4,
                "u",
                "10.0.0.1",
                Action::RecordingCreated,
                "recording",
                &s(rec),
            ),
            ev(
                5,
                "u",
                "10.0.0.1",
                Action::PhiRead,
                "encounter_notes",
                &s(e2),
            ),
            ev(6, "u", "10.0.0.1", Action::PhiRead, "patient_list", "0"),
            ev(7, "u", "10.0.0.1", Action::AuthLogin, "session", "s1"),
            ev(8, "u", "10.0.0.1", Action::PhiRead, "note", &s(gone)),
            ev(
                9,
                "u",
                "10.0.0.1",
                Action::E2eUtteranceStored,
                "e2e_utterance",
                "x",
            ),
            // Not PHI although the kind could be: an admin change names no record touched.
            ev(
                10,
                "u",
                "10.0.0.1",
                Action::AdminUserChanged,
                "patient",
                &s(p3),
            ),
        ];
        let mut denied = ev(11, "u", "10.0.0.1", Action::AccessDenied, "route", "/x");
        denied.outcome = Outcome::Denied;
        denied.reason = Some("missing permission audit:view".into());
        let mut t = Tally::default();
        for e in events.iter().chain([&denied, &denied]) {
            t.add(e);
        }
        let mut links = Links::default();
        links
            .encounter_of
            .insert((Table::Recordings, rec), Some(e1));
        links.encounter_of.insert((Table::Notes, gone), None);
        links.patient_of.insert(e1, Some(p2));
        links.patient_of.insert(e2, Some(p2));
        let r = build(
            Uuid::nil(),
            TenantId::generate(),
            &q(Filter::actor("u").unwrap()),
            t,
            &links,
        );

        assert_eq!(r.events_matched, 12);
        let ids = |v: &[Reached]| v.iter().map(|x| x.id.clone()).collect::<BTreeSet<_>>();
        assert_eq!(ids(&r.patients), BTreeSet::from([s(p1), s(p2)]));
        assert_eq!(ids(&r.encounters), BTreeSet::from([s(e1), s(e2)]));
        let p2r = r.patients.iter().find(|x| x.id == s(p2)).unwrap();
        assert_eq!(p2r.events, 3);
        assert_eq!(p2r.first, at(3));
        assert_eq!(p2r.last, at(5));
        assert_eq!(p2r.via.len(), 3);
        let p1r = r.patients.iter().find(|x| x.id == s(p1)).unwrap();
        assert_eq!(p1r.actions, vec!["phi.create", "phi.read"]);
        assert_eq!(p1r.events, 2);
        let kinds: Vec<_> = r
            .records
            .iter()
            .map(|g| (g.kind.as_str(), g.count))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("e2e_utterance", 1),
                ("encounter", 1),
                ("encounter_notes", 1),
                ("note", 1),
                ("patient", 1),
                ("recording", 1)
            ]
        );
        assert_eq!(r.counts.records, 6);
        assert_eq!(r.counts.patients, 2);
        assert_eq!(r.counts.denied_attempts, 2);
        assert_eq!(r.denied.len(), 1);
        assert_eq!(r.denied[0].events, 2);
        assert_eq!(
            r.unlinked,
            vec![ResourceRef {
                kind: "note".into(),
                id: s(gone)
            }]
        );
        let activity: BTreeSet<_> = r
            .activity
            .iter()
            .map(|a| (a.action.as_str(), a.resource_kind.as_str()))
            .collect();
        assert_eq!(
            activity,
            BTreeSet::from([
                ("phi.read", "patient_list"),
                ("auth.login", "session"),
                ("admin.user.changed", "patient")
            ])
        );
        assert_eq!(r.actors.len(), 1);
        assert_eq!(r.actors[0].roles, vec!["provider", "qa"]);
        assert_eq!(r.actors[0].events, 12);
        assert_eq!(r.sources[0].ip, "10.0.0.1");
        let summary = r.summary();
        assert_eq!(summary["patients"], 2);
        assert_eq!(summary["filter"]["kind"], "actor");
        assert_eq!(summary["filter"]["value"], "u");
    }
}
