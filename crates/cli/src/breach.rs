//! `phivault breach report`: the breach-impact report (docs/breach.md) for one actor,
//! client address or guest device in a window, over one tenant or every tenant, from
//! the audit trail. Each tenant's report is recorded (`breach.reported`, operator actor)
//! in the transaction that read its trail. Needs no key: the report is ids only.

use std::io::IsTerminal;

use anyhow::{Context, Result, anyhow};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{ArgGroup, Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use phivault_audit::Action;
use phivault_audit::ledger;
use phivault_domain::breach::{self, Filter, Query, Reached, TenantReport};
use phivault_domain::tenants::{self, Tenant};
use phivault_store::{Db, TxMode};
use serde::Serialize;

use crate::config::Config;
use crate::{oplog, setup};

#[derive(Subcommand)]
pub enum BreachCommand {
    /// List the patients, encounters and records an actor, a client address or a guest
    /// device touched in a window, from the audit trail, for the 60-day notification.
    ///
    /// Touched means a successful PHI action (read, create, change, delete, export,
    /// recording, transcription, note, end-to-end traffic); refused attempts are listed
    /// apart. Patients reached through an encounter, a recording, a transcript, a note or
    /// a consent are included. Ids, times and counts only, never PHI values. Over every
    /// tenant unless --tenant is given, with counts per tenant; each tenant's report is
    /// audited (breach.reported).
    Report(ReportArgs),
}

#[derive(Args)]
#[command(group(ArgGroup::new("filter").required(true).args(["actor", "ip", "device"])))]
pub struct ReportArgs {
    /// Start of the window, inclusive (RFC 3339, e.g. 2026-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: DateTime<Utc>,
    /// End of the window, exclusive (RFC 3339); at most 366 days after --since.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    until: DateTime<Utc>,
    /// Events of this actor id (a user, staff member or device id, or cli:<name>).
    #[arg(long, value_name = "ID")]
    actor: Option<String>,
    /// Events from this client address.
    #[arg(long, value_name = "IP")]
    ip: Option<String>,
    /// Events of this guest device id.
    #[arg(long, value_name = "ID")]
    device: Option<String>,
    /// Only this tenant (id or slug); default: every tenant.
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
    /// Print JSON (one object with every tenant's report, as the API answers it) instead
    /// of tables.
    #[arg(long)]
    json: bool,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-01-31T00:00:00Z ({e})"))
}

/// Every tenant's report, as `--json` prints it.
#[derive(Serialize)]
struct Output<'a> {
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    filter: &'a Filter,
    totals: Totals,
    tenants: &'a [TenantReport],
}

/// Sums over tenants (patients and encounters are per tenant, so they add up).
#[derive(Serialize, Default)]
struct Totals {
    tenants: usize,
    events_matched: u64,
    patients: usize,
    encounters: usize,
    records: usize,
    denied_attempts: u64,
}

pub async fn run(config: Config, cmd: BreachCommand) -> Result<()> {
    let BreachCommand::Report(args) = cmd;
    let refused = |e: breach::QueryError| anyhow!("{e} ({})", e.code());
    let filter = Filter::one_of(
        args.actor.as_deref(),
        args.ip.as_deref(),
        args.device.as_deref(),
    )
    .map_err(refused)?;
    let query = Query::new(args.since, args.until, filter).map_err(refused)?;
    let db = setup::open_db(&config).await?;
    let result = report(&db, &query, args.tenant.as_deref(), args.json).await;
    db.close().await;
    result
}

async fn report(db: &Db, query: &Query, tenant: Option<&str>, json: bool) -> Result<()> {
    let mut p = db.begin_platform(TxMode::Read).await?;
    let list: Vec<Tenant> = match tenant {
        Some(t) => vec![
            tenants::find(&mut p, t)
                .await
                .with_context(|| format!("tenant {t:?}"))?,
        ],
        None => tenants::list(&mut p).await?,
    };
    p.commit().await?;
    let mut reports = Vec::with_capacity(list.len());
    for t in &list {
        reports.push(one(db, t, query).await?);
    }
    let mut totals = Totals {
        tenants: reports.len(),
        ..Totals::default()
    };
    for r in &reports {
        totals.events_matched += r.events_matched;
        totals.patients += r.counts.patients;
        totals.encounters += r.counts.encounters;
        totals.records += r.counts.records;
        totals.denied_attempts += r.counts.denied_attempts;
    }
    if json {
        let out = Output {
            since: query.since(),
            until: query.until(),
            filter: query.filter(),
            totals,
            tenants: &reports,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_tables(query, &list, &reports, &totals);
    }
    Ok(())
}

/// One tenant's report, read and recorded in one transaction.
async fn one(db: &Db, t: &Tenant, query: &Query) -> Result<TenantReport> {
    let bar = spinner(&t.slug);
    let mut tx = db.begin_tenant(t.id, TxMode::Write).await?;
    let tick = bar.clone();
    let report = breach::report(&mut tx, query, move |n| tick.set_position(n))
        .await
        .with_context(|| {
            format!(
                "tenant {}: cannot read the audit trail (run `phivault audit verify`)",
                t.slug
            )
        })?;
    bar.finish_and_clear();
    let mut e = oplog::event(
        Action::BreachReported,
        "breach_report",
        report.report_id,
        &["since", "until", "filter"],
    );
    e.after = Some(report.summary());
    ledger::append_tenant(&mut tx, vec![e]).await?;
    tx.commit().await?;
    Ok(report)
}

/// A counter of events read on standard error, hidden when it is not a terminal.
fn spinner(slug: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("  {spinner} breach report {msg}: {pos} events read")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(slug.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn print_reached(title: &str, list: &[Reached]) {
    if list.is_empty() {
        return;
    }
    println!("  {title} ({})", list.len());
    println!(
        "    {:<36}  {:<20}  {:<20}  {:>6}  {:<24}  actors / via",
        "id", "first", "last", "events", "actions"
    );
    for r in list {
        let via: Vec<String> = r
            .via
            .iter()
            .map(|v| format!("{} {}", v.kind, v.id))
            .collect();
        println!(
            "    {:<36}  {:<20}  {:<20}  {:>6}  {:<24}  {} / {}",
            r.id,
            ts(r.first),
            ts(r.last),
            r.events,
            r.actions.join(","),
            r.actors.join(","),
            via.join(", ")
        );
    }
}

fn print_tables(query: &Query, list: &[Tenant], reports: &[TenantReport], totals: &Totals) {
    println!(
        "breach-impact report {} .. {}, {} {}",
        ts(query.since()),
        ts(query.until()),
        query.filter().kind(),
        query.filter().value()
    );
    for (t, r) in list.iter().zip(reports) {
        println!();
        println!(
            "tenant {} ({}): {} events matched; {} patients, {} encounters, {} records touched; {} denied attempts  [report {}]",
            t.slug,
            t.id,
            r.events_matched,
            r.counts.patients,
            r.counts.encounters,
            r.counts.records,
            r.counts.denied_attempts,
            r.report_id
        );
        print_reached("patients", &r.patients);
        print_reached("encounters", &r.encounters);
        if !r.records.is_empty() {
            println!("  records ({})", r.counts.records);
            println!(
                "    {:<22}  {:<36}  {:<20}  {:<20}  {:>6}  {:<24}  actors",
                "kind", "id", "first", "last", "events", "actions"
            );
            for g in &r.records {
                for x in &g.records {
                    println!(
                        "    {:<22}  {:<36}  {:<20}  {:<20}  {:>6}  {:<24}  {}",
                        g.kind,
                        x.id,
                        ts(x.first),
                        ts(x.last),
                        x.events,
                        x.actions.join(","),
                        x.actors.join(",")
                    );
                }
            }
        }
        if !r.denied.is_empty() {
            println!("  denied attempts ({})", r.counts.denied_attempts);
            for d in &r.denied {
                println!(
                    "    {:<20}  {:<7}  {} {}  x{}  {} .. {}  {}  ({})",
                    d.action,
                    d.outcome,
                    d.resource_kind,
                    d.resource_id,
                    d.events,
                    ts(d.first),
                    ts(d.last),
                    d.actors.join(","),
                    d.reason.as_deref().unwrap_or("")
                );
            }
        }
        if !r.activity.is_empty() {
            println!("  other activity");
            for a in &r.activity {
                println!(
                    "    {:<24}  {:<22}  x{}  {} .. {}",
                    a.action,
                    a.resource_kind,
                    a.events,
                    ts(a.first),
                    ts(a.last)
                );
            }
        }
        if !r.actors.is_empty() {
            let actors: Vec<String> = r
                .actors
                .iter()
                .map(|a| format!("{} {} ({}) x{}", a.kind, a.id, a.roles.join(","), a.events))
                .collect();
            println!("  actors: {}", actors.join("; "));
        }
        if !r.sources.is_empty() {
            let sources: Vec<String> = r
                .sources
                .iter()
                .map(|s| {
                    let ip = if s.ip.is_empty() { "-" } else { s.ip.as_str() };
                    if s.device.is_empty() {
                        format!("{ip} x{}", s.events)
                    } else {
                        format!("{ip} device {} x{}", s.device, s.events)
                    }
                })
                .collect();
            println!("  sources: {}", sources.join("; "));
        }
        if !r.unlinked.is_empty() {
            let ids: Vec<String> = r
                .unlinked
                .iter()
                .map(|u| format!("{} {}", u.kind, u.id))
                .collect();
            println!(
                "  not linked to a patient (record erased or id unknown): {}",
                ids.join(", ")
            );
        }
    }
    println!();
    println!("counts per tenant");
    println!(
        "  {:<24}  {:>8}  {:>8}  {:>10}  {:>8}  {:>7}",
        "tenant", "events", "patients", "encounters", "records", "denied"
    );
    for (t, r) in list.iter().zip(reports) {
        println!(
            "  {:<24}  {:>8}  {:>8}  {:>10}  {:>8}  {:>7}",
            t.slug,
            r.events_matched,
            r.counts.patients,
            r.counts.encounters,
            r.counts.records,
            r.counts.denied_attempts
        );
    }
    println!(
        "  {:<24}  {:>8}  {:>8}  {:>10}  {:>8}  {:>7}",
        format!("total ({} tenants)", totals.tenants),
        totals.events_matched,
        totals.patients,
        totals.encounters,
        totals.records,
        totals.denied_attempts
    );
}
