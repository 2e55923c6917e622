//! The evidence packet (docs/evidence.md): one signed archive that lets a reviewer check a
//! tenant's posture without a demo.
//!
//! [`build`] collects, for one tenant: the readiness checklist, the configuration the
//! caller hands in (already stripped of secrets), the vendor registries and BAAs, an
//! access review (users, roles, practice grants, MFA, last sign-in, live API tokens),
//! retention policies and the deletion log, the audit chains verified at export with
//! their signed checkpoints, the most recent audit events, and the compliance records.
//! It renders `report.html` from the same data, and signs both into a tar with the audit
//! checkpoint key ([`phivault_audit::packet`], which also verifies packets offline).
//!
//! Nothing here holds PHI: users are workforce members, deletions and events are named
//! by ids and field names, compliance records are PHI-free by their own rules, and no
//! patient, encounter, transcript or note is read.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::VerifyingKey;
use phivault_audit::check::{self, VerifyError};
use phivault_audit::ledger::{self, ChainId, EventFilter};
use phivault_audit::packet::{
    self, AuditEvidence, ChainEvidence, ChainOutcome, CheckpointEvidence, PacketError,
    PacketSigner, SampleEvent,
};
use phivault_audit::witness::Witness;
use phivault_audit::{Action, Actor, AuditError};
use phivault_crypto::CryptoError;
use phivault_crypto::keys::KeyService;
use phivault_store::{Db, StoreError, TenantId, TenantTx, TxMode};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

use crate::compliance::{self, Record};
use crate::practices::{self, Practice};
use crate::readiness::{self, Checklist, PhiMode, PlatformFacts, Status};
use crate::retention::Policy;
use crate::users::{self, PracticeAccess, Role};
use crate::vendors::{TenantBaa, Vendor};
use crate::{DomainError, PracticeScope, UserId, mfa, sessions, tenants};

/// Audit events sampled when the caller does not say.
pub const DEFAULT_SAMPLE_EVENTS: u32 = 50;
/// Most audit events a packet samples.
pub const MAX_SAMPLE_EVENTS: u32 = 200;
/// Most rows of each part of the deletion log (the newest are kept; totals are exact).
pub const DELETION_LOG_LIMIT: u32 = 5_000;

/// Why a packet could not be produced.
#[derive(Debug, Error)]
pub enum EvidenceError {
    /// Reading the tenant's records failed.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The audit trail could not be read, or the checkpoint key could not be loaded.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The archive could not be written.
    #[error(transparent)]
    Packet(#[from] PacketError),
}

impl From<StoreError> for EvidenceError {
    fn from(e: StoreError) -> Self {
        EvidenceError::Domain(DomainError::Store(e))
    }
}

impl EvidenceError {
    /// Whether it failed because the keys are sealed (the packet cannot be signed).
    pub fn is_sealed(&self) -> bool {
        matches!(
            self,
            EvidenceError::Audit(AuditError::Keys(CryptoError::Sealed))
                | EvidenceError::Domain(DomainError::Crypto(CryptoError::Sealed))
        )
    }
}

/// What to build a packet of, and for whom.
pub struct Request<'a> {
    /// The tenant.
    pub tenant: TenantId,
    /// What the server (or the operator's view of it) knows about the platform gates.
    pub facts: &'a PlatformFacts,
    /// The configuration, secrets already removed by the caller.
    pub configuration: Value,
    /// Who asked (written into the packet and its audit event).
    pub produced_by: Actor,
    /// The witness whose checkpoint copies are checked too, if the caller has one.
    pub witness: Option<&'a Witness>,
    /// This server's version.
    pub server_version: &'a str,
    /// How many of the tenant's most recent audit events to include (1 to
    /// [`MAX_SAMPLE_EVENTS`]).
    pub sample_events: u32,
    /// The time the packet is stamped with.
    pub now: DateTime<Utc>,
}

/// The tenant as the packet names it.
#[derive(Clone, Debug, Serialize)]
pub struct TenantSection {
    /// Id.
    pub id: TenantId,
    /// Slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
    /// Synthetic data only.
    pub sandbox: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Its PHI mode, who set it and when.
    pub phi_mode: PhiMode,
}

/// Both vendor registries and the tenant's BAA.
#[derive(Clone, Debug, Serialize)]
pub struct VendorsSection {
    /// The operator's subprocessors.
    pub platform: Vec<Vendor>,
    /// The tenant's own.
    pub tenant: Vec<Vendor>,
    /// The tenant's BAA with the operator.
    pub tenant_baa: Option<TenantBaa>,
}

/// One user in the access review.
#[derive(Clone, Debug, Serialize)]
pub struct UserReview {
    /// Id.
    pub id: UserId,
    /// Sign-in address (a workforce member's, not a patient's).
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// `active` or `deactivated`.
    pub status: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Practice grants.
    pub practices: PracticeAccess,
    /// Whether the tenant's MFA policy requires a second factor of this user.
    pub mfa_required: bool,
    /// Whether the user has an enabled second factor.
    pub mfa_enrolled: bool,
    /// The start of the user's most recent session (sign-in), if any.
    pub last_login: Option<DateTime<Utc>>,
    /// API tokens neither revoked nor expired.
    pub active_api_tokens: u64,
    /// When the user was created.
    pub created_at: DateTime<Utc>,
}

/// The access review.
#[derive(Clone, Debug, Serialize)]
pub struct AccessReview {
    /// `none`, `admins` or `everyone`.
    pub mfa_policy: &'static str,
    /// Session idle timeout, seconds.
    pub session_idle_secs: i64,
    /// Session absolute lifetime, seconds.
    pub session_absolute_secs: i64,
    /// The tenant's practices (grants name them).
    pub practices: Vec<Practice>,
    /// Every user, by e-mail.
    pub users: Vec<UserReview>,
}

/// A record whose content retention deleted.
#[derive(Clone, Debug, Serialize)]
pub struct DeletedRecord {
    /// `audio` (a recording), `transcript` or `note`.
    pub class: &'static str,
    /// The record's id.
    pub id: Uuid,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its content and data key were destroyed.
    pub deleted_at: DateTime<Utc>,
}

/// A `retention.object.deleted` event.
#[derive(Clone, Debug, Serialize)]
pub struct DeletionEvent {
    /// Its sequence in the tenant's chain.
    pub sequence: u64,
    /// When.
    pub time: DateTime<Utc>,
    /// `recording`, `transcript`, `note` or `e2e_session`.
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
    /// What was destroyed (field names).
    pub fields: Vec<String>,
    /// The policy and rule that applied.
    pub reason: Option<String>,
}

/// The deletion log: deleted rows and the events that recorded their deletion.
#[derive(Clone, Debug, Serialize)]
pub struct DeletionLog {
    /// Deleted records per class (exact).
    pub totals: BTreeMap<&'static str, u64>,
    /// The newest deleted records, at most [`DELETION_LOG_LIMIT`] per class.
    pub records: Vec<DeletedRecord>,
    /// The newest deletion events, at most [`DELETION_LOG_LIMIT`].
    pub events: Vec<DeletionEvent>,
    /// Whether a list was cut at the limit.
    pub truncated: bool,
}

/// Retention policies and the deletion log.
#[derive(Clone, Debug, Serialize)]
pub struct RetentionSection {
    /// Every class's policy, defaults filled in.
    pub policies: Vec<Policy>,
    /// What was deleted.
    pub deletion_log: DeletionLog,
}

/// `packet.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Packet {
    /// [`packet::FORMAT_VERSION`].
    pub format_version: u32,
    /// Names this packet; its `evidence.exported` event carries the same id.
    pub packet_id: Uuid,
    /// When it was produced.
    pub generated_at: DateTime<Utc>,
    /// The server's version.
    pub server_version: String,
    /// Who produced it.
    pub produced_by: Actor,
    /// The tenant.
    pub tenant: TenantSection,
    /// The readiness checklist (platform gates, then the tenant's).
    pub readiness: Checklist,
    /// The configuration, without secrets.
    pub configuration: Value,
    /// Vendors and BAAs.
    pub vendors: VendorsSection,
    /// Users, roles, grants, MFA, last sign-in.
    pub access_review: AccessReview,
    /// Policies and deletions.
    pub retention: RetentionSection,
    /// Chains verified at export, checkpoints, sample events.
    pub audit: AuditEvidence,
    /// The latest version of every compliance record.
    pub compliance: Vec<Record>,
}

/// A produced packet.
#[derive(Debug)]
pub struct Built {
    /// Its id.
    pub packet_id: Uuid,
    /// The archive.
    pub archive: Vec<u8>,
    /// SHA-256 of the archive.
    pub sha256: [u8; 32],
    /// The key that signed it (the checkpoint key).
    pub signing_key: VerifyingKey,
    /// Each chain's verification at export.
    pub chains: Vec<ChainEvidence>,
    /// The tenant's slug (for file names).
    pub tenant_slug: String,
    /// The readiness summary (`5/8 ready`).
    pub readiness: String,
}

impl Built {
    /// The `evidence.exported` event's after-snapshot: ids, digest and outcomes only.
    pub fn snapshot(&self) -> Value {
        json!({
            "packet_id": self.packet_id,
            "sha256": hex::encode(self.sha256),
            "bytes": self.archive.len(),
            "format_version": packet::FORMAT_VERSION,
            "signing_key": hex::encode(self.signing_key.as_bytes()),
            "readiness": self.readiness,
            "chains": self.chains.iter().map(|c| json!({
                "chain": c.chain,
                "outcome": c.outcome,
                "events": c.events,
                "signed_through": c.signed_through,
            })).collect::<Vec<_>>(),
        })
    }

    /// A file name for the archive: `phivault-evidence-<slug>-<time>.tar`.
    pub fn file_name(&self, at: DateTime<Utc>) -> String {
        format!(
            "phivault-evidence-{}-{}.tar",
            self.tenant_slug,
            at.format("%Y%m%dT%H%M%SZ")
        )
    }
}

/// The audit event fields of an export: the packet's sections.
pub const SECTIONS: [&str; 8] = [
    "readiness",
    "configuration",
    "vendors",
    "access_review",
    "retention",
    "audit",
    "sample_events",
    "compliance",
];

/// Removes the password (and any query or fragment, which may carry credentials) from a
/// URL, keeping scheme, user, host, port and path: `postgres://app:[redacted]@db/phivault`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "[not a URL; omitted]".into();
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = &rest[..end];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:[redacted]@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_string(),
    };
    let dropped = if end < url.len() - scheme.len() - 3 {
        " [query omitted]"
    } else {
        ""
    };
    format!("{scheme}://{authority}{path}{dropped}")
}

/// Produces the tenant's packet. `progress` is called as chains are verified with the
/// chain, events checked and the chain's length.
///
/// # Errors
/// Sealed keys (the packet cannot be signed: see [`EvidenceError::is_sealed`]), an
/// unreadable trail or store.
pub async fn build(
    db: &Db,
    keys: &KeyService,
    request: Request<'_>,
    progress: &mut (dyn FnMut(ChainId, u64, u64) + Send),
) -> Result<Built, EvidenceError> {
    let now = request.now;
    // The key first: a sealed server fails before doing any work.
    let signer = PacketSigner::load(db, keys, now).await?;
    let trusted = phivault_audit::signing::trusted_keys(db, keys).await?;

    let mut p = db.begin_platform(TxMode::Read).await?;
    let tenant = tenants::get(&mut p, request.tenant).await?;
    let platform_vendors = readiness::load_platform(&mut p).await?;
    p.commit().await?;

    let mut chains = Vec::new();
    for chain in [ChainId::Tenant(request.tenant), ChainId::Platform] {
        chains.push(verify(db, chain, &trusted, request.witness, progress).await?);
    }

    let mut tx = db.begin_tenant(request.tenant, TxMode::Read).await?;
    let records = readiness::load_tenant(tenant.clone(), &mut tx).await?;
    let checklist = readiness::evaluate_tenant(request.facts, &platform_vendors, &records, now);
    let access_review = access_review(&mut tx, records.mfa, now).await?;
    let deletion_log = deletion_log(&mut tx).await?;
    let compliance = compliance::latest(&mut tx, None).await?;
    let limit = request.sample_events.clamp(1, MAX_SAMPLE_EVENTS);
    let mut sample = ledger::list_tenant(&mut tx, &EventFilter::default(), limit).await?;
    tx.commit().await?;
    sample.reverse();

    let packet_id = Uuid::now_v7();
    let packet = Packet {
        format_version: packet::FORMAT_VERSION,
        packet_id,
        generated_at: now,
        server_version: request.server_version.to_string(),
        produced_by: request.produced_by,
        tenant: TenantSection {
            id: tenant.id,
            slug: tenant.slug.clone(),
            name: tenant.name.clone(),
            status: tenant.status.clone(),
            sandbox: tenant.sandbox,
            created_at: tenant.created_at,
            phi_mode: records.phi_mode.clone(),
        },
        readiness: checklist,
        configuration: request.configuration,
        vendors: VendorsSection {
            platform: platform_vendors,
            tenant: records.vendors.clone(),
            tenant_baa: records.baa.clone(),
        },
        access_review,
        retention: RetentionSection {
            policies: records.retention.clone(),
            deletion_log,
        },
        audit: AuditEvidence {
            trusted_keys: trusted.iter().map(|k| hex::encode(k.as_bytes())).collect(),
            chains,
            sample_chain: ChainId::Tenant(request.tenant).to_string(),
            sample_events: sample
                .into_iter()
                .map(|c| SampleEvent {
                    event: c.event,
                    prev_hash: hex::encode(c.prev_hash),
                    hash: hex::encode(c.hash),
                })
                .collect(),
        },
        compliance,
    };
    let signing_key = signer.verifying_key();
    let json = serde_json::to_vec_pretty(&packet)
        .map_err(|e| PacketError::Write(format!("packet.json: {e}")))?;
    let html = report_html(&packet, &signing_key);
    let archive = packet::write_archive(
        &[
            (packet::PACKET_JSON, json.as_slice()),
            (packet::REPORT_HTML, html.as_bytes()),
        ],
        &signer,
    )?;
    Ok(Built {
        packet_id,
        sha256: Sha256::digest(&archive).into(),
        archive,
        signing_key,
        chains: packet.audit.chains,
        tenant_slug: tenant.slug,
        readiness: packet.readiness.summary(),
    })
}

/// Verifies one chain as `phivault audit verify` does and records the outcome with the
/// checkpoints it was checked against. A fault is evidence too: it goes in the packet.
async fn verify(
    db: &Db,
    chain: ChainId,
    trusted: &[VerifyingKey],
    witness: Option<&Witness>,
    progress: &mut (dyn FnMut(ChainId, u64, u64) + Send),
) -> Result<ChainEvidence, EvidenceError> {
    let total = check::chain_length(db, chain).await?;
    progress(chain, 0, total);
    let mut tick = |n: u64| progress(chain, n, total);
    let result = check::verify_chain(db, chain, trusted, witness, &mut tick).await;
    let verified_at = Utc::now();
    let stored = check::stored_checkpoints(db, chain).await?;
    let mut evidence = ChainEvidence {
        chain: chain.to_string(),
        verified_at,
        outcome: ChainOutcome::Verified,
        fault: None,
        events: 0,
        head: None,
        signed_through: 0,
        unsigned: 0,
        witness: witness.map(|w| w.describe().to_string()),
        checkpoints: Vec::new(),
    };
    match result {
        Ok(v) => {
            evidence.events = v.events;
            evidence.head = (v.events > 0).then(|| hex::encode(v.head));
            evidence.signed_through = v.signed_through;
            evidence.unsigned = v.unsigned;
            // A checkpoint signed after the verification read its list covers events it
            // may not have checked; those wait for the next packet.
            evidence.checkpoints = stored
                .iter()
                .filter(|c| c.signed.checkpoint.sequence <= v.events)
                .map(|c| CheckpointEvidence::of(&c.signed, &c.public_key))
                .collect();
        }
        Err(VerifyError::Fault(f)) => {
            evidence.outcome = ChainOutcome::Fault;
            let at = VerifyError::Fault(f.clone()).sequence().unwrap_or(0);
            evidence.fault = Some(format!("FAULT at sequence {at}: {f}"));
            evidence.checkpoints = stored
                .iter()
                .map(|c| CheckpointEvidence::of(&c.signed, &c.public_key))
                .collect();
        }
        Err(VerifyError::Audit(e)) => return Err(e.into()),
    }
    Ok(evidence)
}

async fn access_review(
    tx: &mut TenantTx,
    policy: mfa::MfaPolicy,
    now: DateTime<Utc>,
) -> Result<AccessReview, EvidenceError> {
    let session_policy = sessions::policy(tx).await?;
    let practices = practices::list(tx, PracticeScope::All).await?;
    let mut users_out = Vec::new();
    for u in users::list(tx).await? {
        let last: Option<(DateTime<Utc>,)> = tx
            .query(
                "SELECT created_at FROM sessions WHERE tenant_id = $1 AND user_id = $2
                 ORDER BY created_at DESC LIMIT 1",
            )
            .bind(u.id)
            .fetch_optional()
            .await?;
        let tokens: Vec<(Option<DateTime<Utc>>,)> = tx
            .query(
                "SELECT expires_at FROM api_tokens
                 WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(u.id)
            .fetch_all()
            .await?;
        users_out.push(UserReview {
            mfa_required: policy.requires(&u.roles),
            mfa_enrolled: mfa::is_enrolled(tx, u.id).await?,
            last_login: last.map(|(t,)| t),
            active_api_tokens: tokens
                .iter()
                .filter(|(expires,)| expires.is_none_or(|e| e > now))
                .count() as u64,
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            status: u.status,
            roles: u.roles,
            practices: u.practices,
            created_at: u.created_at,
        });
    }
    Ok(AccessReview {
        mfa_policy: policy.as_str(),
        session_idle_secs: session_policy.idle.num_seconds(),
        session_absolute_secs: session_policy.absolute.num_seconds(),
        practices,
        users: users_out,
    })
}

type DeletedRow = (Uuid, DateTime<Utc>, DateTime<Utc>);

async fn deletion_log(tx: &mut TenantTx) -> Result<DeletionLog, EvidenceError> {
    let limit = i64::from(DELETION_LOG_LIMIT);
    let mut totals = BTreeMap::new();
    let mut records = Vec::new();
    let mut truncated = false;
    // One static statement per table: the store accepts only static SQL.
    for class in ["audio", "transcript", "note"] {
        let (count,): (i64,) = match class {
            "audio" => tx.query(
                "SELECT COUNT(*) FROM recordings WHERE tenant_id = $1 AND deleted_at IS NOT NULL",
            ),
            "transcript" => tx.query(
                "SELECT COUNT(*) FROM transcripts WHERE tenant_id = $1 AND deleted_at IS NOT NULL",
            ),
            _ => tx.query(
                "SELECT COUNT(*) FROM notes WHERE tenant_id = $1 AND deleted_at IS NOT NULL",
            ),
        }
        .fetch_one()
        .await?;
        let rows: Vec<DeletedRow> = match class {
            "audio" => tx.query(
                "SELECT id, created_at, deleted_at FROM recordings
                 WHERE tenant_id = $1 AND deleted_at IS NOT NULL ORDER BY deleted_at DESC LIMIT $2",
            ),
            "transcript" => tx.query(
                "SELECT id, created_at, deleted_at FROM transcripts
                 WHERE tenant_id = $1 AND deleted_at IS NOT NULL ORDER BY deleted_at DESC LIMIT $2",
            ),
            _ => tx.query(
                "SELECT id, created_at, deleted_at FROM notes
                 WHERE tenant_id = $1 AND deleted_at IS NOT NULL ORDER BY deleted_at DESC LIMIT $2",
            ),
        }
        .bind(limit)
        .fetch_all()
        .await?;
        let count = u64::try_from(count).unwrap_or(0);
        truncated |= count > rows.len() as u64;
        totals.insert(class, count);
        records.extend(
            rows.into_iter()
                .map(|(id, created_at, deleted_at)| DeletedRecord {
                    class,
                    id,
                    created_at,
                    deleted_at,
                }),
        );
    }
    let filter = EventFilter {
        action: Some(Action::RetentionObjectDeleted),
        ..EventFilter::default()
    };
    let events = ledger::list_tenant(tx, &filter, DELETION_LOG_LIMIT).await?;
    truncated |= events.len() as u64 >= u64::from(DELETION_LOG_LIMIT);
    Ok(DeletionLog {
        totals,
        records,
        events: events
            .into_iter()
            .map(|c| DeletionEvent {
                sequence: c.event.sequence,
                time: c.event.time,
                resource_type: c.event.resource.kind,
                resource_id: c.event.resource.id,
                fields: c.event.fields,
                reason: c.event.reason,
            })
            .collect(),
        truncated,
    })
}

// ---------------------------------------------------------------------------------------
// report.html: self-contained (inline style, no script, no external resource), printable.

/// Escapes text for HTML content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opt_ts(t: Option<DateTime<Utc>>) -> String {
    t.map(ts).unwrap_or_else(|| "—".into())
}

/// A JSON value as `path: value` lines, for evidence and record bodies.
fn flatten(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            if map.is_empty() && !prefix.is_empty() {
                out.push((prefix.to_string(), "{}".into()));
            }
            for (k, v) in map {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(v, &p, out);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let parts: Vec<String> = items.iter().map(scalar).collect();
            out.push((prefix.to_string(), parts.join(", ")));
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push((prefix.to_string(), "[]".into()));
            }
            for (i, v) in items.iter().enumerate() {
                flatten(v, &format!("{prefix}[{i}]"), out);
            }
        }
        other => out.push((prefix.to_string(), scalar(other))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "—".into(),
        other => other.to_string(),
    }
}

fn kv_list(v: &Value) -> String {
    let mut lines = Vec::new();
    flatten(v, "", &mut lines);
    let mut out = String::from("<dl class=\"kv\">");
    for (k, v) in lines {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(&k), esc(&v));
    }
    out.push_str("</dl>");
    out
}

fn status_badge(s: Status) -> &'static str {
    match s {
        Status::Ready => "<span class=\"ok\">ready</span>",
        Status::Planned => "<span class=\"warn\">planned</span>",
        Status::Blocked => "<span class=\"bad\">blocked</span>",
    }
}

fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1b1f24}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2.2rem}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;width:100%;margin:.6rem 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f3f5f7}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;word-break:break-all}
.ok{color:#116329;font-weight:600}.warn{color:#9a6700;font-weight:600}.bad{color:#b3261e;font-weight:600}
.summary td:first-child{width:16rem;font-weight:600}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:0}
dl.kv dt{font-family:ui-monospace,Menlo,monospace;font-size:12px;color:#57606a}dl.kv dd{margin:0;word-break:break-word}
.note{background:#f6f8fa;border-left:4px solid #8c959f;padding:.5rem .8rem}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}tr{break-inside:avoid}}
";

/// Renders `report.html` from the packet.
pub fn report_html(p: &Packet, key: &VerifyingKey) -> String {
    let key_hex = hex::encode(key.as_bytes());
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Evidence packet: {name}</title><style>{STYLE}</style></head><body>\
         <h1>Evidence packet: {name}</h1>\
         <p>Tenant <code>{slug}</code> (<code>{id}</code>), produced {at} by {kind} <code>{who}</code> \
         with phivault {version}. Packet <code>{pid}</code>, format {fv}.</p>",
        name = esc(&p.tenant.name),
        slug = esc(&p.tenant.slug),
        id = p.tenant.id,
        at = ts(p.generated_at),
        kind = p.produced_by.kind.as_str(),
        who = esc(&p.produced_by.id),
        version = esc(&p.server_version),
        pid = p.packet_id,
        fv = p.format_version,
    );
    let _ = write!(
        h,
        "<p class=\"note\">This report and <code>packet.json</code> are signed together with the \
         audit checkpoint key <code>{key_hex}</code>. Check the signature and every checkpoint \
         offline with <code>phivault evidence verify FILE --trusted-key {key_hex}</code>, after \
         comparing that key with the one <code>phivault audit checkpoint</code> prints on the \
         server or the <code>public_key</code> of the audit witness records \
         (docs/evidence.md). The report holds identifiers, settings and counts, never PHI.</p>"
    );
    summary(&mut h, p);
    readiness_html(&mut h, &p.readiness);
    let _ = write!(
        h,
        "<h2 id=\"configuration\">Configuration</h2>\
         <p>Settings in force when the packet was produced; passwords, passphrases, PINs and \
         secret keys are never included.</p>{}",
        kv_list(&p.configuration)
    );
    vendors_html(&mut h, &p.vendors);
    access_html(&mut h, &p.access_review);
    retention_html(&mut h, &p.retention);
    audit_html(&mut h, &p.audit);
    compliance_html(&mut h, &p.compliance);
    h.push_str("</body></html>\n");
    h
}

fn summary(h: &mut String, p: &Packet) {
    let chains: Vec<String> = p
        .audit
        .chains
        .iter()
        .map(|c| match c.outcome {
            ChainOutcome::Verified => format!(
                "<span class=\"ok\">{} verified</span>: {} events, signed through {}",
                esc(&c.chain),
                c.events,
                c.signed_through
            ),
            ChainOutcome::Fault => format!(
                "<span class=\"bad\">{} FAULT</span>: {}",
                esc(&c.chain),
                esc(c.fault.as_deref().unwrap_or(""))
            ),
        })
        .collect();
    let mfa_gaps = p
        .access_review
        .users
        .iter()
        .filter(|u| u.status == "active" && u.mfa_required && !u.mfa_enrolled)
        .count();
    let _ = write!(
        h,
        "<h2 id=\"summary\">Summary</h2><table class=\"summary\">\
         <tr><td>Readiness</td><td>{ready}{mode}</td></tr>\
         <tr><td>Audit chains</td><td>{chains}</td></tr>\
         <tr><td>Users</td><td>{users} ({active} active); {mfa_gaps} active user(s) required to use MFA without a second factor</td></tr>\
         <tr><td>Vendors</td><td>{pv} platform, {tv} tenant; tenant BAA {baa}</td></tr>\
         <tr><td>Deletions by retention</td><td>{deleted}</td></tr>\
         <tr><td>Compliance records</td><td>{comp}</td></tr></table>",
        ready = esc(&p.readiness.summary()),
        mode = if p.tenant.sandbox {
            "; sandbox tenant (synthetic data only)".to_string()
        } else if p.tenant.phi_mode.on {
            "; PHI mode on".to_string()
        } else {
            "; PHI mode off".to_string()
        },
        chains = chains.join("<br>"),
        users = p.access_review.users.len(),
        active = p
            .access_review
            .users
            .iter()
            .filter(|u| u.status == "active")
            .count(),
        pv = p.vendors.platform.len(),
        tv = p.vendors.tenant.len(),
        baa = match &p.vendors.tenant_baa {
            Some(b) => format!("signed {}", b.signed_on),
            None => "<span class=\"bad\">not recorded</span>".into(),
        },
        deleted = p
            .retention
            .deletion_log
            .totals
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        comp = p.compliance.len(),
    );
}

fn readiness_html(h: &mut String, c: &Checklist) {
    let _ = write!(
        h,
        "<h2 id=\"readiness\">Readiness gates ({})</h2><p>Evaluated {}.</p>\
         <table><tr><th>gate</th><th>status</th><th>evidence</th><th>next action</th></tr>",
        esc(&c.summary()),
        ts(c.evaluated_at)
    );
    for g in &c.gates {
        let _ = write!(
            h,
            "<tr><td><b>{}</b><br><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(g.title),
            esc(g.id),
            status_badge(g.status),
            kv_list(&g.evidence),
            esc(g.next_action.as_deref().unwrap_or("—"))
        );
    }
    h.push_str("</table>");
}

fn vendor_rows(h: &mut String, list: &[Vendor]) {
    if list.is_empty() {
        h.push_str("<p>None registered.</p>");
        return;
    }
    h.push_str(
        "<table><tr><th>key</th><th>name</th><th>service</th><th>PHI</th><th>BAA signed</th>\
         <th>BAA evidence reference</th><th>updated</th></tr>",
    );
    for v in list {
        let (signed, reference) = match &v.baa {
            Some(b) => (b.signed_on.to_string(), esc(&b.evidence_ref)),
            None if v.touches_phi => ("<span class=\"bad\">none</span>".into(), "—".into()),
            None => ("none".into(), "—".into()),
        };
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&v.key),
            esc(&v.name),
            esc(&v.service),
            if v.touches_phi { "yes" } else { "no" },
            signed,
            reference,
            ts(v.updated_at)
        );
    }
    h.push_str("</table>");
}

fn vendors_html(h: &mut String, v: &VendorsSection) {
    h.push_str("<h2 id=\"vendors\">Vendors and BAAs</h2><h3>Platform subprocessors</h3>");
    vendor_rows(h, &v.platform);
    h.push_str("<h3>The tenant's vendors</h3>");
    vendor_rows(h, &v.tenant);
    h.push_str("<h3>The tenant's BAA with the operator</h3>");
    match &v.tenant_baa {
        Some(b) => {
            let _ = write!(
                h,
                "<table><tr><th>signed</th><th>signatory</th><th>document reference</th><th>recorded by</th><th>recorded</th></tr>\
                 <tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr></table>",
                b.signed_on,
                esc(&b.signatory),
                esc(&b.evidence_ref),
                esc(&b.recorded_by),
                ts(b.recorded_at)
            );
        }
        None => h.push_str("<p class=\"bad\">No BAA recorded.</p>"),
    }
}

fn access_html(h: &mut String, a: &AccessReview) {
    let names: BTreeMap<String, &str> = a
        .practices
        .iter()
        .map(|p| (p.id.to_string(), p.name.as_str()))
        .collect();
    let _ = write!(
        h,
        "<h2 id=\"access\">Access review</h2><p>MFA policy <b>{}</b>; sessions end after {} s idle \
         and {} s in all. Last sign-in is the start of the user's latest session (API tokens \
         sign nobody in; live ones are counted).</p>\
         <table><tr><th>user</th><th>status</th><th>roles</th><th>practices</th><th>MFA</th>\
         <th>last sign-in</th><th>live API tokens</th><th>created</th></tr>",
        a.mfa_policy, a.session_idle_secs, a.session_absolute_secs
    );
    for u in &a.users {
        let practices = match &u.practices {
            PracticeAccess::All => "all practices".to_string(),
            PracticeAccess::Only(ids) if ids.is_empty() => "none".to_string(),
            PracticeAccess::Only(ids) => ids
                .iter()
                .map(|id| {
                    let id = id.to_string();
                    names
                        .get(&id)
                        .map(|n| esc(n))
                        .unwrap_or_else(|| format!("<code>{id}</code>"))
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        let mfa = match (u.mfa_required, u.mfa_enrolled) {
            (_, true) => "<span class=\"ok\">enrolled</span>",
            (true, false) if u.status == "active" => {
                "<span class=\"bad\">required, not enrolled</span>"
            }
            (true, false) => "required, not enrolled",
            (false, false) => "not enrolled",
        };
        let _ = write!(
            h,
            "<tr><td>{}<br><code>{}</code><br><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.display_name),
            esc(&u.email),
            u.id,
            esc(&u.status),
            role_list(&u.roles),
            practices,
            mfa,
            opt_ts(u.last_login),
            u.active_api_tokens,
            ts(u.created_at)
        );
    }
    h.push_str("</table>");
}

fn retention_html(h: &mut String, r: &RetentionSection) {
    h.push_str(
        "<h2 id=\"retention\">Retention</h2><table><tr><th>class</th><th>window</th><th>basis</th>\
         <th>source</th><th>set by</th><th>set</th></tr>",
    );
    for p in &r.policies {
        let _ = write!(
            h,
            "<tr><td><code>{}</code></td><td>{} h</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.class.as_str(),
            p.window_hours,
            p.basis.as_str(),
            p.source.as_str(),
            p.updated_by
                .map(|u| format!("<code>{u}</code>"))
                .unwrap_or_else(|| "—".into()),
            opt_ts(p.updated_at)
        );
    }
    h.push_str("</table>");
    let log = &r.deletion_log;
    let _ = write!(
        h,
        "<h3>Deletion log</h3><p>Records whose content and data key retention destroyed: {}.{}</p>",
        log.totals
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        if log.truncated {
            format!(" Lists are cut to the newest {DELETION_LOG_LIMIT}; the totals are exact.")
        } else {
            String::new()
        }
    );
    if !log.records.is_empty() {
        h.push_str("<table><tr><th>class</th><th>record</th><th>created</th><th>deleted</th></tr>");
        for d in &log.records {
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                d.class,
                d.id,
                ts(d.created_at),
                ts(d.deleted_at)
            );
        }
        h.push_str("</table>");
    }
    if !log.events.is_empty() {
        h.push_str(
            "<h3>Deletion events (<code>retention.object.deleted</code>)</h3><table><tr><th>seq</th>\
             <th>time</th><th>resource</th><th>destroyed</th><th>policy and rule</th></tr>",
        );
        for e in &log.events {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{} <code>{}</code></td><td>{}</td><td>{}</td></tr>",
                e.sequence,
                ts(e.time),
                esc(&e.resource_type),
                esc(&e.resource_id),
                esc(&e.fields.join(", ")),
                esc(e.reason.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</table>");
    }
}

fn audit_html(h: &mut String, a: &AuditEvidence) {
    let _ = write!(
        h,
        "<h2 id=\"audit\">Audit trail</h2><p>Each chain was verified at export as \
         <code>phivault audit verify</code> does: every event's hash and link, every checkpoint \
         signature, the recorded head. Checkpoint keys trusted: {}.</p>",
        a.trusted_keys
            .iter()
            .map(|k| format!("<code>{}</code>", esc(k)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for c in &a.chains {
        let outcome = match c.outcome {
            ChainOutcome::Verified => "<span class=\"ok\">verified</span>".to_string(),
            ChainOutcome::Fault => format!(
                "<span class=\"bad\">{}</span>",
                esc(c.fault.as_deref().unwrap_or("fault"))
            ),
        };
        let _ = write!(
            h,
            "<h3>Chain <code>{}</code></h3><table class=\"summary\">\
             <tr><td>outcome</td><td>{}</td></tr><tr><td>events</td><td>{}</td></tr>\
             <tr><td>head hash</td><td><code>{}</code></td></tr>\
             <tr><td>signed through</td><td>{}</td></tr><tr><td>unsigned (after the last checkpoint)</td><td>{}</td></tr>\
             <tr><td>witness checked</td><td>{}</td></tr><tr><td>verified at</td><td>{}</td></tr></table>",
            esc(&c.chain),
            outcome,
            c.events,
            esc(c.head.as_deref().unwrap_or("—")),
            c.signed_through,
            c.unsigned,
            esc(c.witness.as_deref().unwrap_or("no")),
            ts(c.verified_at)
        );
        if c.checkpoints.is_empty() {
            h.push_str("<p>No signed checkpoint yet.</p>");
            continue;
        }
        h.push_str(
            "<table><tr><th>sequence</th><th>signed</th><th>head hash</th><th>key</th>\
             <th>signature</th></tr>",
        );
        for cp in &c.checkpoints {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td></tr>",
                cp.sequence,
                ts(cp.time),
                esc(&cp.head),
                esc(&cp.public_key),
                esc(&cp.signature)
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h3>Sample events</h3><p>The {} most recent events of chain <code>{}</code>, oldest \
         first. Events hold identifiers and field names, never values.</p>\
         <table><tr><th>seq</th><th>time</th><th>actor</th><th>action</th><th>resource</th>\
         <th>fields</th><th>outcome</th><th>source</th><th>reason</th></tr>",
        a.sample_events.len(),
        esc(&a.sample_chain)
    );
    for s in &a.sample_events {
        let e = &s.event;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{} <code>{}</code><br>{}</td><td><code>{}</code></td>\
             <td>{} <code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.sequence,
            ts(e.time),
            e.actor.kind.as_str(),
            esc(&e.actor.id),
            esc(&e.actor.role),
            e.action.as_str(),
            esc(&e.resource.kind),
            esc(&e.resource.id),
            esc(&e.fields.join(", ")),
            e.outcome.as_str(),
            esc(&e.source.ip),
            esc(e.reason.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>");
}

fn compliance_html(h: &mut String, records: &[Record]) {
    h.push_str("<h2 id=\"compliance\">Compliance records</h2>");
    if records.is_empty() {
        h.push_str(
            "<p class=\"bad\">None recorded (security officer, risk assessment, training, \
             incidents, sanctions policy).</p>",
        );
        return;
    }
    h.push_str(
        "<p>The latest version of each record.</p><table><tr><th>kind</th><th>subject</th>\
         <th>version</th><th>recorded</th><th>content</th></tr>",
    );
    for r in records {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}<br><code>{}</code></td><td>{}</td></tr>",
            r.kind.as_str(),
            esc(&r.subject),
            r.version,
            ts(r.recorded_at),
            esc(&r.recorded_by),
            kv_list(&r.body)
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db.example.test:5432/phivault?sslmode=require"),
            "postgres://app:[redacted]@db.example.test:5432/phivault [query omitted]"
        );
        assert_eq!(
            redact_url("postgres://app@db/phivault"),
            "postgres://app@db/phivault"
        );
        assert_eq!(
            redact_url("https://x.example.test/v1#token=abc"),
            "https://x.example.test/v1 [query omitted]"
        );
        assert_eq!(redact_url("sqlite:/tmp/x.db"), "[not a URL; omitted]");
        assert_eq!(
            redact_url("postgres://u:p:q@h@evil/db"),
            "postgres://u:[redacted]@evil/db"
        );
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        let mut lines = Vec::new();
        flatten(
            &json!({"a": {"b": [1, 2]}, "c": null, "d": [{"e": "<b>"}]}),
            "",
            &mut lines,
        );
        assert_eq!(
            lines,
            vec![
                ("a.b".to_string(), "1, 2".to_string()),
                ("c".to_string(), "—".to_string()),
                ("d[0].e".to_string(), "<b>".to_string()),
            ]
        );
        assert!(!kv_list(&json!({"x": "<script>"})).contains("<script>"));
    }
}
