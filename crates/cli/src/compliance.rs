//! `phivault compliance record|list|history`: the tenant's compliance records
//! (docs/compliance.md) at the command line. A record is saved exactly as through the
//! API (same validation, same versioning) and its `compliance.recorded` event goes into
//! the tenant's chain in the same transaction, with the operator as actor.

use std::io::Read;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{SecondsFormat, Utc};
use clap::Subcommand;
use clap::builder::PossibleValuesParser;
use phivault_access::TenantScope;
use phivault_audit::{Action, ledger};
use phivault_domain::compliance::{self, Body, Kind, NewVersion, Record};
use phivault_domain::tenants;
use phivault_store::{Db, TenantId, TxMode};

use crate::config::Config;
use crate::{oplog, setup};

/// The kinds, as `--kind` takes them.
const KINDS: [&str; 5] = [
    "security_officer",
    "risk_assessment",
    "training_ack",
    "incident",
    "sanctions_policy",
];

/// Largest body file read; a stored body is at most 20000 characters.
const MAX_BODY_FILE: u64 = 256 * 1024;

#[derive(Subcommand)]
pub enum ComplianceCommand {
    /// Save a new version of a compliance record from a JSON file holding the kind's
    /// fields (docs/compliance.md). Prints kind, subject, version and id; the save is
    /// recorded in the tenant's audit chain. Records must not hold PHI.
    Record {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// The kind of record.
        #[arg(long, value_parser = PossibleValuesParser::new(KINDS))]
        kind: String,
        /// An incident's id, to add a version to it (omit it for a new incident). Other
        /// kinds' subjects follow from the body: `current` (security officer, sanctions
        /// policy), the year (risk assessment), `<user_id>:<course>` (training).
        #[arg(long)]
        subject: Option<String>,
        /// The JSON body (an object of the kind's fields), or - for standard input.
        #[arg(long, value_name = "FILE|-")]
        body_file: String,
        /// Refuse unless the subject is at this version (0 for a new one); by default
        /// the new version follows whatever is current.
        #[arg(long, value_name = "N")]
        expected_version: Option<i64>,
    },
    /// List the latest version of every subject: kind, subject, version, when, by whom.
    List {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// Only this kind.
        #[arg(long, value_parser = PossibleValuesParser::new(KINDS))]
        kind: Option<String>,
        /// Print the records, bodies included, as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show every version of one subject, oldest first, with its body.
    History {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// The kind of record.
        #[arg(long, value_parser = PossibleValuesParser::new(KINDS))]
        kind: String,
        /// The subject (as `list` prints it).
        #[arg(long)]
        subject: String,
        /// Print the versions as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn kind_of(name: &str) -> Result<Kind> {
    Kind::parse(name).ok_or_else(|| anyhow!("--kind must be one of {}", KINDS.join(", ")))
}

async fn resolve_tenant(db: &Db, id_or_slug: &str) -> Result<TenantId> {
    let mut tx = db.begin_platform(TxMode::Read).await?;
    let tenant = tenants::find(&mut tx, id_or_slug).await?;
    tx.commit().await?;
    Ok(tenant.id)
}

/// Reads the body file (or standard input), at most [`MAX_BODY_FILE`] bytes.
fn read_body(path: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if path == "-" {
        std::io::stdin()
            .take(MAX_BODY_FILE + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the body from standard input")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open the body file {path}"))?
            .take(MAX_BODY_FILE + 1)
            .read_to_end(&mut bytes)
            .with_context(|| format!("cannot read the body file {path}"))?;
    }
    if bytes.len() as u64 > MAX_BODY_FILE {
        bail!("the body is larger than {MAX_BODY_FILE} bytes");
    }
    Ok(bytes)
}

/// Parses a body of `kind`. Errors say where and what kind of problem, never the
/// value (serde's own messages quote it).
fn parse_body(kind: Kind, bytes: &[u8]) -> Result<Body> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        bail!("the body must be a JSON object of the {kind} fields");
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Body::deserialize_as(kind, &mut de)
        .and_then(|body| de.end().map(|()| body))
        .map_err(|e| describe(kind, &e))
}

fn describe(kind: Kind, e: &serde_json::Error) -> anyhow::Error {
    use serde_json::error::Category;
    let at = format!("line {}, column {}", e.line(), e.column());
    match e.classify() {
        Category::Syntax => anyhow!("the body is not valid JSON ({at})"),
        Category::Eof => anyhow!("the body ends before its JSON object is complete"),
        Category::Io => anyhow!("the body could not be read"),
        Category::Data => {
            let text = e.to_string();
            let what = if let Some(field) = text
                .strip_prefix("missing field `")
                .and_then(|t| t.split('`').next())
            {
                // A missing field is one of ours, never input.
                format!("lacks the field `{field}`")
            } else if text.starts_with("unknown field") {
                "has a field this kind does not take".to_string()
            } else if text.starts_with("duplicate field") {
                "repeats a field".to_string()
            } else if text.starts_with("invalid type") {
                "has a value of the wrong type".to_string()
            } else {
                "has a value that is not allowed".to_string()
            };
            anyhow!(
                "the body {what} ({at}); a {kind} takes {}",
                kind.fields().join(", ")
            )
        }
    }
}

fn when(r: &Record) -> String {
    r.recorded_at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub async fn run(config: Config, cmd: ComplianceCommand) -> Result<()> {
    let db = setup::open_db(&config).await?;
    let result = match cmd {
        ComplianceCommand::Record {
            tenant,
            kind,
            subject,
            body_file,
            expected_version,
        } => {
            let kind = kind_of(&kind)?;
            let body = parse_body(kind, &read_body(&body_file)?)?;
            record(&db, &tenant, body, subject, expected_version).await
        }
        ComplianceCommand::List { tenant, kind, json } => {
            let kind = kind.as_deref().map(kind_of).transpose()?;
            let scope = TenantScope::operator(resolve_tenant(&db, &tenant).await?);
            let mut tx = scope.begin(&db, TxMode::Read).await?;
            let records = compliance::latest(&mut tx, kind).await?;
            tx.commit().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                println!(
                    "{:<16}  {:<50}  {:>7}  {:<20}  recorded_by",
                    "kind", "subject", "version", "recorded_at"
                );
                for r in &records {
                    println!(
                        "{:<16}  {:<50}  {:>7}  {:<20}  {}",
                        r.kind.as_str(),
                        r.subject,
                        r.version,
                        when(r),
                        r.recorded_by
                    );
                }
            }
            Ok(())
        }
        ComplianceCommand::History {
            tenant,
            kind,
            subject,
            json,
        } => {
            let kind = kind_of(&kind)?;
            let scope = TenantScope::operator(resolve_tenant(&db, &tenant).await?);
            let mut tx = scope.begin(&db, TxMode::Read).await?;
            let versions = compliance::history(&mut tx, kind, &subject).await?;
            tx.commit().await?;
            if versions.is_empty() {
                bail!("no {kind} record with that subject in this tenant");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&versions)?);
            } else {
                println!("{kind} {subject}");
                for r in &versions {
                    println!(
                        "  version {}  {}  {}  {}",
                        r.version,
                        when(r),
                        r.recorded_by,
                        serde_json::to_string(&r.body)?
                    );
                }
            }
            Ok(())
        }
    };
    db.close().await;
    result
}

async fn record(
    db: &Db,
    tenant: &str,
    body: Body,
    subject: Option<String>,
    expected_version: Option<i64>,
) -> Result<()> {
    let scope = TenantScope::operator(resolve_tenant(db, tenant).await?);
    // The operator as the audit trail names them: `cli:<account>`.
    let actor = oplog::event(Action::ComplianceRecorded, "compliance_record", "", &[])
        .actor
        .id;
    let mut tx = scope.begin(db, TxMode::Write).await?;
    let r = compliance::save(
        &mut tx,
        NewVersion {
            body,
            subject,
            expected_version,
        },
        &format!("operator:{actor}"),
        Utc::now(),
    )
    .await?;
    let fields = r.audit_fields();
    let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    let mut e = oplog::event(
        Action::ComplianceRecorded,
        "compliance_record",
        r.id,
        &fields,
    );
    e.after = Some(r.audit_snapshot());
    ledger::append_tenant(&mut tx, vec![e]).await?;
    tx.commit().await?;
    println!("{} {} version {} ({})", r.kind, r.subject, r.version, r.id);
    Ok(())
}
