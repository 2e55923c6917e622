//! Compliance records: the security officer designation, annual risk assessments,
//! workforce training acknowledgements, incident records and the sanctions policy
//! (HIPAA 45 CFR 164.308(a)(1), (a)(2), (a)(5), (a)(6) and 164.530(e)).
//!
//! Each record is one version of a *subject*: saving never changes a stored row, it
//! appends version n+1 of (kind, subject), so the history of a designation or of an
//! incident is its own trail beside the audit events (the table refuses UPDATE and
//! DELETE). A save names the version it expects to replace (`expected_version`, 0 for
//! a new subject): of two concurrent saves of one subject, one wins and the other is
//! refused `version_conflict`, whichever backend.
//!
//! Bodies are typed per kind, validated strictly (unknown fields refused when they are
//! parsed, lengths, dates as `YYYY-MM-DD`, references to users and audit events checked
//! here) and stored as canonical JSON (keys sorted, no white space). They hold no PHI:
//! an incident names patients by counts and audit event sequence numbers only, and a
//! risk assessment names where its report is kept, not the report.
//!
//! Callers write the `compliance.recorded` event in the transaction of [`save`]; the
//! [`Record`] gives its fields ([`Record::audit_fields`]) and after-snapshot
//! ([`Record::audit_snapshot`]), which carry no body value.

use std::fmt;

use chrono::{DateTime, Datelike, DurationRound, NaiveDate, TimeDelta, Utc};
use phivault_store::{StoreError, TenantTx};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::invalid;
use crate::{DomainError, Result, UserId, validate};

/// Longest canonical body, in characters (the table's CHECK).
pub const MAX_BODY_CHARS: usize = 20_000;
/// Longest incident summary, in characters.
pub const MAX_SUMMARY_CHARS: usize = 2_000;
/// Most audit events one incident version may reference.
pub const MAX_AUDIT_REFS: usize = 200;
/// Largest count (findings, affected records) a body may hold.
pub const MAX_COUNT: u64 = 1_000_000_000;
/// The subject of the kinds that have one record at a time (security officer, sanctions
/// policy).
pub const CURRENT: &str = "current";
/// Earliest year a date or an assessment year may name.
pub const MIN_YEAR: i32 = 1990;
/// Latest year a date or an assessment year may name.
pub const MAX_YEAR: i32 = 2100;

/// The kinds of compliance record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Who the tenant's security officer is (subject `current`).
    SecurityOfficer,
    /// An annual risk assessment (subject: its year).
    RiskAssessment,
    /// A workforce member's training acknowledgement (subject `<user_id>:<course>`).
    TrainingAck,
    /// A security or privacy incident (subject: an id the server gives it).
    Incident,
    /// The sanctions policy in force (subject `current`).
    SanctionsPolicy,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 5] = [
        Kind::SecurityOfficer,
        Kind::RiskAssessment,
        Kind::TrainingAck,
        Kind::Incident,
        Kind::SanctionsPolicy,
    ];

    /// The stable name (`security_officer`, `risk_assessment`, `training_ack`,
    /// `incident`, `sanctions_policy`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::SecurityOfficer => "security_officer",
            Kind::RiskAssessment => "risk_assessment",
            Kind::TrainingAck => "training_ack",
            Kind::Incident => "incident",
            Kind::SanctionsPolicy => "sanctions_policy",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The body fields of this kind, as the API and the CLI name them.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::SecurityOfficer => &["user_id", "title", "designated_on"],
            Kind::RiskAssessment => &[
                "year",
                "performed_on",
                "performed_by",
                "method",
                "findings_count",
                "high_risks",
                "summary_ref",
                "next_review_due",
            ],
            Kind::TrainingAck => &["user_id", "course", "version", "completed_on"],
            Kind::Incident => &[
                "opened_on",
                "category",
                "severity",
                "status",
                "summary",
                "affected_records",
                "audit_event_refs",
                "closed_on",
            ],
            Kind::SanctionsPolicy => &["version_label", "adopted_on", "document_ref"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The designation of the tenant's security officer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityOfficer {
    /// The officer: an active user of the tenant.
    pub user_id: UserId,
    /// Their title (up to 200 characters).
    pub title: String,
    /// When the designation took effect (`YYYY-MM-DD`).
    pub designated_on: String,
}

/// An annual risk assessment: its outcome in figures and where its report is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RiskAssessment {
    /// The year assessed (1990 to 2100); the record's subject.
    pub year: i32,
    /// When it was performed (`YYYY-MM-DD`).
    pub performed_on: String,
    /// Who performed it (a person or a firm, up to 200 characters).
    pub performed_by: String,
    /// The method followed (e.g. "NIST SP 800-30", up to 200 characters).
    pub method: String,
    /// How many findings it made.
    pub findings_count: u64,
    /// How many of them are high risks (at most `findings_count`).
    pub high_risks: u64,
    /// Where the report is kept (a document-system reference, up to 500 characters):
    /// never the report itself.
    pub summary_ref: String,
    /// When the next review is due (`YYYY-MM-DD`, after `performed_on`).
    pub next_review_due: String,
}

/// A workforce member's acknowledgement of a training course.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingAck {
    /// The user who completed the course: a user of the tenant.
    pub user_id: UserId,
    /// The course (up to 100 characters: letters, digits, spaces and `-_.,()&+'`).
    pub course: String,
    /// The course's version (up to 50 characters).
    pub version: String,
    /// When it was completed (`YYYY-MM-DD`).
    pub completed_on: String,
}

/// What an incident concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentCategory {
    /// Security (unauthorized access, malware, lost device).
    Security,
    /// Privacy (a use or disclosure not permitted).
    Privacy,
    /// Availability (an outage, lost data).
    Availability,
    /// Anything else.
    Other,
}

/// How severe an incident is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Low.
    Low,
    /// Moderate.
    Moderate,
    /// High.
    High,
}

/// Where an incident stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    /// Being investigated.
    Open,
    /// Contained, not yet closed.
    Contained,
    /// Closed (`closed_on` set).
    Closed,
}

/// An incident record. It holds no PHI: patients are counted (`affected_records`) and
/// the trail is referenced by audit event sequence numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// When it was opened (`YYYY-MM-DD`).
    pub opened_on: String,
    /// What it concerns.
    pub category: IncidentCategory,
    /// How severe it is.
    pub severity: Severity,
    /// Where it stands.
    pub status: IncidentStatus,
    /// What happened and what was done, without PHI (up to 2000 characters; new lines
    /// allowed).
    pub summary: String,
    /// How many records (patients, encounters) were affected.
    pub affected_records: u64,
    /// Sequence numbers of events in the tenant's audit chain that document it (at most
    /// 200, each existing, none twice).
    pub audit_event_refs: Vec<u64>,
    /// When it was closed (`YYYY-MM-DD`): set exactly when `status` is `closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_on: Option<String>,
}

/// The sanctions policy in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SanctionsPolicy {
    /// The policy's version label (up to 50 characters).
    pub version_label: String,
    /// When it was adopted (`YYYY-MM-DD`).
    pub adopted_on: String,
    /// Where the policy document is kept (up to 500 characters): never the document.
    pub document_ref: String,
}

/// A typed body of one kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// A security officer designation.
    SecurityOfficer(SecurityOfficer),
    /// A risk assessment.
    RiskAssessment(RiskAssessment),
    /// A training acknowledgement.
    TrainingAck(TrainingAck),
    /// An incident.
    Incident(Incident),
    /// A sanctions policy.
    SanctionsPolicy(SanctionsPolicy),
}

impl Body {
    /// The body's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Body::SecurityOfficer(_) => Kind::SecurityOfficer,
            Body::RiskAssessment(_) => Kind::RiskAssessment,
            Body::TrainingAck(_) => Kind::TrainingAck,
            Body::Incident(_) => Kind::Incident,
            Body::SanctionsPolicy(_) => Kind::SanctionsPolicy,
        }
    }

    /// Reads a body of `kind` from `de`, refusing unknown fields.
    pub fn deserialize_as<'de, D: Deserializer<'de>>(
        kind: Kind,
        de: D,
    ) -> std::result::Result<Body, D::Error> {
        Ok(match kind {
            Kind::SecurityOfficer => Body::SecurityOfficer(SecurityOfficer::deserialize(de)?),
            Kind::RiskAssessment => Body::RiskAssessment(RiskAssessment::deserialize(de)?),
            Kind::TrainingAck => Body::TrainingAck(TrainingAck::deserialize(de)?),
            Kind::Incident => Body::Incident(Incident::deserialize(de)?),
            Kind::SanctionsPolicy => Body::SanctionsPolicy(SanctionsPolicy::deserialize(de)?),
        })
    }

    fn to_value(&self) -> Result<Value> {
        let v = match self {
            Body::SecurityOfficer(b) => serde_json::to_value(b),
            Body::RiskAssessment(b) => serde_json::to_value(b),
            Body::TrainingAck(b) => serde_json::to_value(b),
            Body::Incident(b) => serde_json::to_value(b),
            Body::SanctionsPolicy(b) => serde_json::to_value(b),
        };
        v.map_err(|_| invalid("body", "cannot be encoded as JSON"))
    }
}

/// One stored version of a compliance record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// The version's id (the audit event's resource id).
    pub id: Uuid,
    /// Its kind.
    pub kind: Kind,
    /// The subject its versions share.
    pub subject: String,
    /// Its version, from 1.
    pub version: i64,
    /// The body as stored (canonical JSON).
    pub body: Value,
    /// Who saved it: a user id, or `operator:<account>` at the command line.
    pub recorded_by: String,
    /// When.
    pub recorded_at: DateTime<Utc>,
}

impl Record {
    /// The body's field names, sorted: the audit event's fields (never their values).
    pub fn audit_fields(&self) -> Vec<String> {
        match &self.body {
            Value::Object(m) => {
                let mut keys: Vec<String> = m.keys().cloned().collect();
                keys.sort();
                keys
            }
            _ => Vec::new(),
        }
    }

    /// The audit event's after-snapshot: kind, subject and version, no body value.
    pub fn audit_snapshot(&self) -> Value {
        serde_json::json!({
            "kind": self.kind.as_str(),
            "subject": self.subject,
            "version": self.version,
        })
    }
}

/// A version to save.
#[derive(Clone, Debug)]
pub struct NewVersion {
    /// The body (its kind is the record's).
    pub body: Body,
    /// The subject, when the caller names it. For an incident: absent for a new one
    /// (the server gives it an id), its id to add a version. For the other kinds it
    /// follows from the body and may be omitted; if given it must match.
    pub subject: Option<String>,
    /// The version the caller read (0 for a new subject); `None` takes whatever is
    /// current (operator tools, which run in the same transaction as the read).
    pub expected_version: Option<i64>,
}

/// The version conflict refusal.
fn version_conflict() -> DomainError {
    DomainError::Refused {
        code: "version_conflict",
        message: "the record is not at expected_version (another save came first, or it does not exist yet): read its history and retry",
    }
}

/// Checks a date written `YYYY-MM-DD` in the years this module accepts.
fn date(field: &'static str, value: &str) -> Result<NaiveDate> {
    let bytes = value.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        });
    let parsed = shaped
        .then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .flatten()
        .ok_or_else(|| invalid(field, "must be a calendar date written YYYY-MM-DD"))?;
    if !(MIN_YEAR..=MAX_YEAR).contains(&parsed.year()) {
        return Err(invalid(field, "must be between 1990-01-01 and 2100-12-31"));
    }
    Ok(parsed)
}

fn count(field: &'static str, value: u64) -> Result<u64> {
    if value > MAX_COUNT {
        return Err(invalid(field, "must be at most 1000000000"));
    }
    Ok(value)
}

/// A course name: it is part of a subject, which travels in URL paths.
fn course(value: &str) -> Result<String> {
    let v = validate::text("body.course", value, 100)?;
    let allowed = |c: char| c.is_alphanumeric() || " -_.,()&+'".contains(c);
    if !v.chars().all(allowed) {
        return Err(invalid(
            "body.course",
            "may hold letters, digits, spaces and - _ . , ( ) & + ' only",
        ));
    }
    Ok(v)
}

/// Free text that may span lines.
fn summary(value: &str) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid("body.summary", "must not be empty"));
    }
    if v.chars().count() > MAX_SUMMARY_CHARS {
        return Err(invalid("body.summary", "is too long"));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(
            "body.summary",
            "must not contain control characters other than new lines and tabs",
        ));
    }
    Ok(v.to_string())
}

/// Validates a body and returns it normalized (text trimmed).
fn normalize(body: Body) -> Result<Body> {
    Ok(match body {
        Body::SecurityOfficer(b) => {
            let title = validate::text("body.title", &b.title, 200)?;
            date("body.designated_on", &b.designated_on)?;
            Body::SecurityOfficer(SecurityOfficer { title, ..b })
        }
        Body::RiskAssessment(b) => {
            if !(MIN_YEAR..=MAX_YEAR).contains(&b.year) {
                return Err(invalid("body.year", "must be between 1990 and 2100"));
            }
            let performed = date("body.performed_on", &b.performed_on)?;
            let due = date("body.next_review_due", &b.next_review_due)?;
            if due <= performed {
                return Err(invalid(
                    "body.next_review_due",
                    "must be after performed_on",
                ));
            }
            count("body.findings_count", b.findings_count)?;
            if b.high_risks > b.findings_count {
                return Err(invalid("body.high_risks", "must not exceed findings_count"));
            }
            Body::RiskAssessment(RiskAssessment {
                performed_by: validate::text("body.performed_by", &b.performed_by, 200)?,
                method: validate::text("body.method", &b.method, 200)?,
                summary_ref: validate::text("body.summary_ref", &b.summary_ref, 500)?,
                ..b
            })
        }
        Body::TrainingAck(b) => {
            date("body.completed_on", &b.completed_on)?;
            Body::TrainingAck(TrainingAck {
                course: course(&b.course)?,
                version: validate::text("body.version", &b.version, 50)?,
                ..b
            })
        }
        Body::Incident(b) => {
            let opened = date("body.opened_on", &b.opened_on)?;
            match (&b.closed_on, b.status) {
                (Some(closed), IncidentStatus::Closed) => {
                    if date("body.closed_on", closed)? < opened {
                        return Err(invalid("body.closed_on", "must not be before opened_on"));
                    }
                }
                (None, IncidentStatus::Closed) => {
                    return Err(invalid(
                        "body.closed_on",
                        "is required when status is closed",
                    ));
                }
                (Some(_), _) => {
                    return Err(invalid(
                        "body.closed_on",
                        "is set only when status is closed",
                    ));
                }
                (None, _) => {}
            }
            count("body.affected_records", b.affected_records)?;
            if b.audit_event_refs.len() > MAX_AUDIT_REFS {
                return Err(invalid(
                    "body.audit_event_refs",
                    "holds at most 200 references",
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for r in &b.audit_event_refs {
                if *r == 0 || *r > i64::MAX as u64 {
                    return Err(invalid(
                        "body.audit_event_refs",
                        "holds audit event sequence numbers, from 1",
                    ));
                }
                if !seen.insert(*r) {
                    return Err(invalid("body.audit_event_refs", "names an event twice"));
                }
            }
            Body::Incident(Incident {
                summary: summary(&b.summary)?,
                ..b
            })
        }
        Body::SanctionsPolicy(b) => {
            date("body.adopted_on", &b.adopted_on)?;
            Body::SanctionsPolicy(SanctionsPolicy {
                version_label: validate::text("body.version_label", &b.version_label, 50)?,
                document_ref: validate::text("body.document_ref", &b.document_ref, 500)?,
                ..b
            })
        }
    })
}

/// The subject a body belongs to, checked against the one the caller named. For an
/// incident, `None` means a new incident (whose id is generated by the caller of this).
fn subject_of(body: &Body, named: Option<&str>) -> Result<Option<String>> {
    let derived = match body {
        Body::SecurityOfficer(_) | Body::SanctionsPolicy(_) => CURRENT.to_string(),
        Body::RiskAssessment(b) => b.year.to_string(),
        Body::TrainingAck(b) => format!("{}:{}", b.user_id, b.course),
        Body::Incident(_) => {
            return match named {
                None => Ok(None),
                Some(s) => s
                    .parse::<Uuid>()
                    .map(|id| Some(id.to_string()))
                    .map_err(|_| invalid("subject", "must be the incident's id")),
            };
        }
    };
    match named {
        Some(s) if s != derived => Err(invalid(
            "subject",
            "does not match the body (current; the year; user_id:course)",
        )),
        _ => Ok(Some(derived)),
    }
}

/// Writes `v` as canonical JSON: object keys sorted, no white space.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Checks what a body points at in the tenant: users and audit events.
async fn check_references(tx: &mut TenantTx, body: &Body) -> Result<()> {
    match body {
        Body::SecurityOfficer(b) => {
            if user_status(tx, b.user_id).await?.as_deref() != Some("active") {
                return Err(invalid(
                    "body.user_id",
                    "is not an active user of this tenant",
                ));
            }
        }
        Body::TrainingAck(b) => {
            if user_status(tx, b.user_id).await?.is_none() {
                return Err(invalid("body.user_id", "is not a user of this tenant"));
            }
        }
        Body::Incident(b) => {
            if let Some(max) = b.audit_event_refs.iter().max() {
                let head = phivault_audit::ledger::tenant_head(tx)
                    .await
                    .map_err(|_| DomainError::Refused {
                        code: "audit_unavailable",
                        message: "the audit trail cannot be read, so the references were not checked",
                    })?;
                if *max > head {
                    return Err(invalid(
                        "body.audit_event_refs",
                        "names an event that is not in this tenant's audit trail",
                    ));
                }
            }
        }
        Body::RiskAssessment(_) | Body::SanctionsPolicy(_) => {}
    }
    Ok(())
}

async fn user_status(tx: &mut TenantTx, user: UserId) -> Result<Option<String>> {
    let row: Option<(String,)> = tx
        .query("SELECT status FROM users WHERE tenant_id = $1 AND id = $2")
        .bind(user)
        .fetch_optional()
        .await?;
    Ok(row.map(|(s,)| s))
}

/// The current version of (kind, subject): 0 when it has none.
async fn current_version(tx: &mut TenantTx, kind: Kind, subject: &str) -> Result<i64> {
    let row: Option<(i64,)> = tx
        .query(
            "SELECT version FROM compliance_records
             WHERE tenant_id = $1 AND kind = $2 AND subject = $3
             ORDER BY version DESC LIMIT 1",
        )
        .bind(kind.as_str())
        .bind(subject)
        .fetch_optional()
        .await?;
    Ok(row.map_or(0, |(v,)| v))
}

/// Saves a new version of a record: version n+1 of (kind, subject), in `tx`. The caller
/// writes its `compliance.recorded` event in the same transaction.
///
/// # Errors
/// `Invalid` for a field that breaks a rule (the field is named `body.<name>`,
/// `subject` or `expected_version`); `Refused { code: "version_conflict" }` when the
/// subject is not at `expected_version` (including a concurrent save that came first);
/// `NotFound` for an incident id that has no record.
pub async fn save(
    tx: &mut TenantTx,
    new: NewVersion,
    recorded_by: &str,
    now: DateTime<Utc>,
) -> Result<Record> {
    if new.expected_version.is_some_and(|v| v < 0) {
        return Err(invalid("expected_version", "must be 0 or more"));
    }
    let body = normalize(new.body)?;
    let kind = body.kind();
    let named = new
        .subject
        .as_deref()
        .map(|s| validate::text("subject", s, 200))
        .transpose()?;
    let subject = subject_of(&body, named.as_deref())?;
    let recorded_by = validate::text("recorded_by", recorded_by, 200)?;
    let value = body.to_value()?;
    let mut text = String::new();
    canonical(&value, &mut text);
    if text.chars().count() > MAX_BODY_CHARS {
        return Err(invalid("body", "is too long once encoded"));
    }
    check_references(tx, &body).await?;

    let (subject, current) = match subject {
        Some(subject) => {
            let current = current_version(tx, kind, &subject).await?;
            (subject, current)
        }
        // A new incident: the id is fresh, so it has no version yet.
        None => (Uuid::now_v7().to_string(), 0),
    };
    if kind == Kind::Incident && named.is_some() && current == 0 {
        return Err(DomainError::NotFound("incident"));
    }
    if new.expected_version.is_some_and(|v| v != current) {
        return Err(version_conflict());
    }
    let id = Uuid::now_v7();
    let version = current + 1;
    // PostgreSQL keeps microseconds: answer with the time as a later read will show it.
    let now = now
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap_or(now);
    tx.query(
        "INSERT INTO compliance_records (tenant_id, id, kind, subject, version, body, recorded_by, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(kind.as_str())
    .bind(subject.as_str())
    .bind(version)
    .bind(text.as_str())
    .bind(recorded_by.as_str())
    .bind(now)
    .execute()
    .await
    .map_err(|e| match e {
        // Another transaction saved this version between our read and our insert.
        StoreError::Conflict => version_conflict(),
        other => DomainError::Store(other),
    })?;
    Ok(Record {
        id,
        kind,
        subject,
        version,
        body: value,
        recorded_by,
        recorded_at: now,
    })
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    kind: String,
    subject: String,
    version: i64,
    body: String,
    recorded_by: String,
    recorded_at: DateTime<Utc>,
}

fn records(rows: Vec<Row>) -> Vec<Record> {
    rows.into_iter()
        .filter_map(|r| {
            // The table's CHECK admits the known kinds only.
            let kind = Kind::parse(&r.kind)?;
            let body = serde_json::from_str(&r.body).unwrap_or_else(|_| {
                tracing::error!(record = %r.id, "a stored compliance record is not JSON");
                Value::Null
            });
            Some(Record {
                id: r.id,
                kind,
                subject: r.subject,
                version: r.version,
                body,
                recorded_by: r.recorded_by,
                recorded_at: r.recorded_at,
            })
        })
        .collect()
}

/// The latest version of every subject (of one kind, or of all), by kind and subject.
pub async fn latest(tx: &mut TenantTx, kind: Option<Kind>) -> Result<Vec<Record>> {
    let rows: Vec<Row> = tx
        .query(
            "SELECT c.id, c.kind, c.subject, c.version, c.body, c.recorded_by, c.recorded_at
             FROM compliance_records c
             WHERE c.tenant_id = $1 AND ($2 IS NULL OR c.kind = $2)
               AND NOT EXISTS (SELECT 1 FROM compliance_records n
                               WHERE n.tenant_id = $1 AND n.kind = c.kind
                                 AND n.subject = c.subject AND n.version > c.version)
             ORDER BY c.kind, c.subject",
        )
        .bind(kind.map(|k| k.as_str().to_string()))
        .fetch_all()
        .await?;
    Ok(records(rows))
}

/// Every version of (kind, subject), oldest first; empty when it has none.
pub async fn history(tx: &mut TenantTx, kind: Kind, subject: &str) -> Result<Vec<Record>> {
    let rows: Vec<Row> = tx
        .query(
            "SELECT id, kind, subject, version, body, recorded_by, recorded_at
             FROM compliance_records
             WHERE tenant_id = $1 AND kind = $2 AND subject = $3
             ORDER BY version",
        )
        .bind(kind.as_str())
        .bind(subject)
        .fetch_all()
        .await?;
    Ok(records(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident() -> Incident {
        Incident {
            opened_on: "2025-03-01".into(),
            category: IncidentCategory::Security,
            severity: Severity::Low,
            status: IncidentStatus::Open,
            summary: "Synthetic: a laptop was reported lost.".into(),
            affected_records: 0,
            audit_event_refs: vec![3, 1],
            closed_on: None,
        }
    }

    #[test]
    fn dates_are_strict() {
        for ok in ["2025-01-31", "1990-01-01", "2100-12-31", "2024-02-29"] {
            assert!(date("d", ok).is_ok(), "{ok}");
        }
        for bad in [
            "2025-1-31",
            "2025-02-30",
            "2023-02-29",
            "20250131",
            "2025-01-31T00:00:00Z",
            "+2025-01-31",
            " 2025-01-31",
            "1989-12-31",
            "2101-01-01",
            "２０２５-01-31",
            "",
        ] {
            assert!(date("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"z": [2, {"y": "é\"", "x": null}], "c": true}});
        let mut out = String::new();
        canonical(&v, &mut out);
        assert_eq!(
            out,
            r#"{"a":{"c":true,"z":[2,{"x":null,"y":"é\""}]},"b":1}"#
        );
    }

    #[test]
    fn incident_rules() {
        assert!(normalize(Body::Incident(incident())).is_ok());
        let closed_without_date = Incident {
            status: IncidentStatus::Closed,
            ..incident()
        };
        assert!(normalize(Body::Incident(closed_without_date)).is_err());
        let date_while_open = Incident {
            closed_on: Some("2025-03-02".into()),
            ..incident()
        };
        assert!(normalize(Body::Incident(date_while_open)).is_err());
        let closed_before_opened = Incident {
            status: IncidentStatus::Closed,
            closed_on: Some("2025-02-28".into()),
            ..incident()
        };
        assert!(normalize(Body::Incident(closed_before_opened)).is_err());
        let twice = Incident {
            audit_event_refs: vec![2, 2],
            ..incident()
        };
        assert!(normalize(Body::Incident(twice)).is_err());
        let zero = Incident {
            audit_event_refs: vec![0],
            ..incident()
        };
        assert!(normalize(Body::Incident(zero)).is_err());
        let control = Incident {
            summary: "a\u{7}b".into(),
            ..incident()
        };
        assert!(normalize(Body::Incident(control)).is_err());
        let lines = Incident {
            summary: "  line one\nline two  ".into(),
            ..incident()
        };
        match normalize(Body::Incident(lines)).unwrap() {
            Body::Incident(i) => assert_eq!(i.summary, "line one\nline two"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subjects_follow_the_body() {
        let user = UserId::generate();
        let ack = Body::TrainingAck(TrainingAck {
            user_id: user,
            course: "HIPAA basics".into(),
            version: "1".into(),
            completed_on: "2025-01-02".into(),
        });
        let want = format!("{user}:HIPAA basics");
        assert_eq!(subject_of(&ack, None).unwrap(), Some(want.clone()));
        assert_eq!(subject_of(&ack, Some(&want)).unwrap(), Some(want));
        assert!(subject_of(&ack, Some("current")).is_err());
        let inc = Body::Incident(incident());
        assert_eq!(subject_of(&inc, None).unwrap(), None);
        assert!(subject_of(&inc, Some("not-an-id")).is_err());
    }

    #[test]
    fn bodies_refuse_unknown_fields() {
        let json =
            r#"{"version_label":"v1","adopted_on":"2025-01-01","document_ref":"dms:1","extra":1}"#;
        let mut de = serde_json::Deserializer::from_str(json);
        assert!(Body::deserialize_as(Kind::SanctionsPolicy, &mut de).is_err());
        let json = r#"{"version_label":"v1","adopted_on":"2025-01-01","document_ref":"dms:1"}"#;
        let mut de = serde_json::Deserializer::from_str(json);
        assert!(Body::deserialize_as(Kind::SanctionsPolicy, &mut de).is_ok());
    }

    #[test]
    fn fields_name_every_serialized_field() {
        let officer = SecurityOfficer {
            user_id: UserId::generate(),
            title: "t".into(),
            designated_on: "2025-01-01".into(),
        };
        let v = Body::SecurityOfficer(officer).to_value().unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = Kind::SecurityOfficer.fields().to_vec();
        keys.sort_unstable();
        want.sort_unstable();
        assert_eq!(keys, want);
    }
}
