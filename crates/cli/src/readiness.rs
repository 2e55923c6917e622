//! `phivault readiness`, `phivault vendor` and `phivault baa`: the PHI readiness
//! checklist, the vendor registries and the tenant's BAA, at the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{NaiveDate, Utc};
use clap::{Args, Subcommand};
use phivault_audit::{Action, ledger};
use phivault_crypto::keys::KeyStatus;
use phivault_domain::readiness::{self, Checklist, PlatformFacts, Status};
use phivault_domain::tenants;
use phivault_domain::vendors::{self, Baa, Vendor, VendorInput};
use phivault_store::{Db, TenantId, TxMode};

use crate::config::Config;
use crate::{oplog, setup};

/// `phivault readiness`.
#[derive(Args)]
pub struct ReadinessArgs {
    /// A tenant (id or slug): its checklist, platform gates included. Without it, the
    /// platform's gates only.
    #[arg(long)]
    tenant: Option<String>,
    /// Take the server's own view of its keys, audit store and TLS from the running
    /// server at this URL (on this host). Without it, they are evaluated as `phivault
    /// serve` would at start: the keys opened from the configuration
    /// (PHIVAULT_KEYRING_PASSPHRASE), the audit store probed.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Trust this PEM certificate for HTTPS (e.g. the dev-cert one).
    #[arg(long, value_name = "FILE", requires = "url")]
    ca_cert: Option<PathBuf>,
    /// Print the checklist as JSON.
    #[arg(long)]
    json: bool,
}

/// `phivault vendor`.
#[derive(Subcommand)]
pub enum VendorCommand {
    /// Register a vendor, or change it: the platform's registry, or a tenant's with
    /// --tenant. Audited with before and after.
    Set {
        /// Short unique key (a-z, 0-9, -), as `[vendors]` in the configuration names it.
        #[arg(long)]
        key: String,
        /// The vendor's name.
        #[arg(long)]
        name: String,
        /// What it does (e.g. "object storage", "transcription").
        #[arg(long)]
        service: String,
        /// PHI (even encrypted) reaches it.
        #[arg(long)]
        touches_phi: bool,
        /// When its BAA was signed (YYYY-MM-DD); omit when none is signed.
        #[arg(long, requires = "baa_evidence_ref")]
        baa_signed_on: Option<NaiveDate>,
        /// Where the signed BAA is kept (a document id or path; never the document).
        #[arg(long, requires = "baa_signed_on")]
        baa_evidence_ref: Option<String>,
        /// A tenant (id or slug): its own registry instead of the platform's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove a vendor from a registry.
    Remove {
        /// The vendor's key.
        #[arg(long)]
        key: String,
        /// A tenant (id or slug): its own registry instead of the platform's.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List a registry: the platform's, or with --tenant both the platform's and the
    /// tenant's.
    List {
        /// A tenant (id or slug).
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// `phivault baa`.
#[derive(Subcommand)]
pub enum BaaCommand {
    /// Record (or replace) a tenant's signed BAA with the operator of this server.
    Set {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// When it was signed (YYYY-MM-DD).
        #[arg(long)]
        signed_on: NaiveDate,
        /// Who signed for the tenant (name and title).
        #[arg(long)]
        signatory: String,
        /// Where the signed document is kept (never the document).
        #[arg(long)]
        evidence_ref: String,
    },
    /// Remove a tenant's BAA (it ended). PHI routes close at once if PHI mode is on.
    Remove {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
    },
    /// Show a tenant's BAA.
    Show {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
    },
}

async fn resolve(db: &Db, id_or_slug: &str) -> Result<tenants::Tenant> {
    let mut tx = db.begin_platform(TxMode::Read).await?;
    let t = tenants::find(&mut tx, id_or_slug).await?;
    tx.commit().await?;
    Ok(t)
}

/// An HTTP client for a server on this host, trusting `ca_cert` if given.
pub fn local_client(ca_cert: Option<&Path>) -> Result<reqwest::Client> {
    let mut client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60));
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(client.build()?)
}

/// The facts as `phivault serve` would see them at start.
pub(crate) async fn local_facts(config: &Config, db: &Db) -> Result<PlatformFacts> {
    let keys = crate::keys::start(config).await?;
    let (provider, development, unsealed) = match keys.status() {
        KeyStatus::Sealed => (None, false, false),
        KeyStatus::Unsealed {
            provider,
            development,
        } => (Some(provider.to_string()), development, true),
    };
    let auditor = phivault_audit::Auditor::start(db.clone(), config.audit()?);
    let audit_writable = auditor.probe().await.is_ok();
    let checkpoint_key = if unsealed {
        phivault_audit::signing::load_or_create_signer(db, &keys, Utc::now())
            .await
            .ok()
            .map(|s| format!("ed25519:{}", hex::encode(s.verifying_key().as_bytes())))
    } else {
        None
    };
    let r = config.readiness()?;
    let served = r.tls_served || r.tls_proxy_declared;
    Ok(PlatformFacts {
        key_provider: provider,
        key_provider_development: development,
        keys_unsealed: unsealed,
        audit_writable,
        checkpoint_key,
        object_backend: r.object_backend,
        object_backend_encryption: r.object_backend_encryption,
        tls_served: r.tls_served,
        tls_proxy_declared: r.tls_proxy_declared,
        // The edge sends HSTS whenever TLS is served or a proxy is declared.
        hsts_max_age: served.then_some(63_072_000),
        services: r.services,
    })
}

async fn server_facts(url: &str, ca_cert: Option<&Path>) -> Result<PlatformFacts> {
    let response = local_client(ca_cert)?
        .get(format!(
            "{}/api/v1/sys/readiness",
            url.trim_end_matches('/')
        ))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if !response.status().is_success() {
        bail!(
            "{url} answered {} to /api/v1/sys/readiness",
            response.status()
        );
    }
    response
        .json()
        .await
        .context("the server's readiness facts are not readable")
}

/// Prints the checklist; fails (non-zero exit) while any gate is open.
pub async fn run(config: Config, args: ReadinessArgs) -> Result<()> {
    let db = setup::open_db(&config).await?;
    let facts = match &args.url {
        Some(url) => server_facts(url, args.ca_cert.as_deref()).await?,
        None => local_facts(&config, &db).await?,
    };
    let mut p = db.begin_platform(TxMode::Read).await?;
    let platform = readiness::load_platform(&mut p).await?;
    p.commit().await?;
    let checklist = match &args.tenant {
        None => readiness::evaluate_platform(&facts, &platform, Utc::now()),
        Some(t) => {
            let tenant = resolve(&db, t).await?;
            let mut tx = db.begin_tenant(tenant.id, TxMode::Read).await?;
            let records = readiness::load_tenant(tenant, &mut tx).await?;
            tx.commit().await?;
            readiness::evaluate_tenant(&facts, &platform, &records, Utc::now())
        }
    };
    db.close().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checklist)?);
    } else {
        print_checklist(&checklist);
    }
    if checklist.all_ready() {
        Ok(())
    } else {
        bail!(
            "{}: PHI must not flow until every gate holds",
            checklist.summary()
        )
    }
}

fn print_checklist(c: &Checklist) {
    match (&c.tenant_slug, c.sandbox) {
        (Some(slug), true) => {
            println!("tenant {slug}: SANDBOX (synthetic data only; PHI mode cannot be turned on)")
        }
        (Some(slug), false) => println!(
            "tenant {slug}: PHI mode {}",
            if c.phi_mode { "ON" } else { "off" }
        ),
        (None, _) => println!("platform"),
    }
    for g in &c.gates {
        let mark = match g.status {
            Status::Ready => "ready  ",
            Status::Planned => "PLANNED",
            Status::Blocked => "BLOCKED",
        };
        println!("  [{mark}] {:<15} {}", g.id, g.title);
        println!("            evidence: {}", g.evidence);
        if let Some(next) = &g.next_action {
            println!("            next: {next}");
        }
    }
    println!("{}", c.summary());
}

fn vendor_line(v: &Vendor) {
    let baa = v
        .baa
        .as_ref()
        .map(|b| format!("BAA {} ({})", b.signed_on, b.evidence_ref))
        .unwrap_or_else(|| "no BAA".into());
    let registry = match v.registry {
        vendors::Registry::Platform => "platform",
        vendors::Registry::Tenant => "tenant",
    };
    println!(
        "{:<9} {:<20} {:<4} {:<40} {}",
        registry,
        v.key,
        if v.touches_phi { "PHI" } else { "-" },
        format!("{} ({})", v.name, v.service),
        baa
    );
}

/// `phivault vendor ...`.
pub async fn vendor(config: Config, cmd: VendorCommand) -> Result<()> {
    let db = setup::open_db(&config).await?;
    let now = Utc::now();
    match cmd {
        VendorCommand::Set {
            key,
            name,
            service,
            touches_phi,
            baa_signed_on,
            baa_evidence_ref,
            tenant,
        } => {
            let input = VendorInput {
                key,
                name,
                service,
                touches_phi,
                baa: baa_signed_on
                    .zip(baa_evidence_ref)
                    .map(|(signed_on, evidence_ref)| Baa {
                        signed_on,
                        evidence_ref,
                    }),
            };
            let fields = ["name", "service", "touches_phi", "baa"];
            let after = match tenant {
                None => {
                    let mut tx = db.begin_platform(TxMode::Write).await?;
                    let (before, after) = vendors::set_platform(&mut tx, &input, now).await?;
                    let mut e = oplog::event(Action::VendorChanged, "vendor", &after.key, &fields);
                    e.before = before.as_ref().map(Vendor::snapshot);
                    e.after = Some(after.snapshot());
                    ledger::append_platform(&mut tx, vec![e]).await?;
                    tx.commit().await?;
                    after
                }
                Some(t) => {
                    let id = resolve(&db, &t).await?.id;
                    let mut tx = db.begin_tenant(id, TxMode::Write).await?;
                    let (before, after) = vendors::set_tenant(&mut tx, &input, now).await?;
                    let mut e = oplog::event(Action::VendorChanged, "vendor", &after.key, &fields);
                    e.before = before.as_ref().map(Vendor::snapshot);
                    e.after = Some(after.snapshot());
                    ledger::append_tenant(&mut tx, vec![e]).await?;
                    tx.commit().await?;
                    after
                }
            };
            vendor_line(&after);
        }
        VendorCommand::Remove { key, tenant } => {
            let removed = match tenant {
                None => {
                    let mut tx = db.begin_platform(TxMode::Write).await?;
                    let before = vendors::remove_platform(&mut tx, &key).await?;
                    let mut e = oplog::event(Action::VendorChanged, "vendor", &key, &[]);
                    e.before = Some(before.snapshot());
                    ledger::append_platform(&mut tx, vec![e]).await?;
                    tx.commit().await?;
                    before
                }
                Some(t) => {
                    let id = resolve(&db, &t).await?.id;
                    let mut tx = db.begin_tenant(id, TxMode::Write).await?;
                    let before = vendors::remove_tenant(&mut tx, &key).await?;
                    let mut e = oplog::event(Action::VendorChanged, "vendor", &key, &[]);
                    e.before = Some(before.snapshot());
                    ledger::append_tenant(&mut tx, vec![e]).await?;
                    tx.commit().await?;
                    before
                }
            };
            println!("removed vendor {}", removed.key);
        }
        VendorCommand::List { tenant } => {
            let mut p = db.begin_platform(TxMode::Read).await?;
            let mut list = vendors::list_platform(&mut p).await?;
            p.commit().await?;
            if let Some(t) = tenant {
                let id = resolve(&db, &t).await?.id;
                let mut tx = db.begin_tenant(id, TxMode::Read).await?;
                list.extend(vendors::list_tenant(&mut tx).await?);
                tx.commit().await?;
            }
            println!(
                "{:<9} {:<20} {:<4} {:<40} baa",
                "registry", "key", "phi", "name (service)"
            );
            for v in &list {
                vendor_line(v);
            }
        }
    }
    db.close().await;
    Ok(())
}

fn operator() -> String {
    let account = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("operator:cli:{account}")
}

/// `phivault baa ...`.
pub async fn baa(config: Config, cmd: BaaCommand) -> Result<()> {
    let db = setup::open_db(&config).await?;
    let fields = ["signed_on", "signatory", "evidence_ref"];
    match cmd {
        BaaCommand::Set {
            tenant,
            signed_on,
            signatory,
            evidence_ref,
        } => {
            let id: TenantId = resolve(&db, &tenant).await?.id;
            let mut tx = db.begin_tenant(id, TxMode::Write).await?;
            let (before, after) = vendors::set_tenant_baa(
                &mut tx,
                signed_on,
                &signatory,
                &evidence_ref,
                &operator(),
                Utc::now(),
            )
            .await?;
            let mut e = oplog::event(Action::BaaChanged, "tenant_baa", id, &fields);
            e.before = before.as_ref().map(vendors::TenantBaa::snapshot);
            e.after = Some(after.snapshot());
            ledger::append_tenant(&mut tx, vec![e]).await?;
            tx.commit().await?;
            println!("tenant {id}: BAA signed {} recorded", after.signed_on);
        }
        BaaCommand::Remove { tenant } => {
            let id = resolve(&db, &tenant).await?.id;
            let mut tx = db.begin_tenant(id, TxMode::Write).await?;
            let before = vendors::remove_tenant_baa(&mut tx).await?;
            let mut e = oplog::event(Action::BaaChanged, "tenant_baa", id, &[]);
            e.before = Some(before.snapshot());
            ledger::append_tenant(&mut tx, vec![e]).await?;
            tx.commit().await?;
            println!("tenant {id}: BAA removed");
        }
        BaaCommand::Show { tenant } => {
            let id = resolve(&db, &tenant).await?.id;
            let mut tx = db.begin_tenant(id, TxMode::Read).await?;
            let baa = vendors::tenant_baa(&mut tx).await?;
            tx.commit().await?;
            match baa {
                Some(b) => println!(
                    "signed {} by {}; document: {}; recorded by {} at {}",
                    b.signed_on, b.signatory, b.evidence_ref, b.recorded_by, b.recorded_at
                ),
                None => bail!("tenant {id} has no BAA recorded"),
            }
        }
    }
    db.close().await;
    Ok(())
}
