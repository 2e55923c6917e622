//! Operator commands: tenants, practices, users, tokens. They run on the server host
//! with its configuration; tenant-scoped ones open a transaction bound to the named
//! tenant, exactly as the server does.

use anyhow::{Result, bail};
use chrono::{Duration, Utc};
use clap::Subcommand;
use phivault_access::TenantScope;
use phivault_audit::{Action, ledger};
use phivault_domain::users::{NewUser, PracticeAccess, Role};
use phivault_domain::{PracticeId, UserId, practices, tenants, tokens, users};
use phivault_store::{Db, TenantId, TxMode};

use crate::config::Config;
use crate::{oplog, setup};

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Register a tenant; prints its id.
    Create {
        /// Short unique name: a-z, 0-9 and -.
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// A sandbox tenant: synthetic data only. Its routes work without PHI mode, and
        /// it can never turn PHI mode on (for demonstrations, training and tests).
        #[arg(long)]
        sandbox: bool,
    },
    /// List tenants.
    List,
    /// Crypto-shred a tenant: destroy every version of its key-encryption key, so that
    /// all its encrypted data, including copies in backups, can never be decrypted.
    Shred {
        /// Tenant id or slug.
        tenant: String,
        /// Confirm: this cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum PracticeCommand {
    /// Create a practice in a tenant; prints its id.
    Create {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// List a tenant's practices.
    List {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user with roles and practice grants; prints its id.
    Create {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// Sign-in e-mail address.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Role (owner, admin, member, billing, provider, qa); repeat for several.
        #[arg(long = "role", required = true, value_name = "ROLE")]
        roles: Vec<String>,
        /// A practice id the user may work in; repeat for several.
        #[arg(
            long = "practice",
            conflicts_with = "all_practices",
            value_name = "PRACTICE_ID"
        )]
        practices: Vec<String>,
        /// Grant every practice, present and future.
        #[arg(long)]
        all_practices: bool,
    },
    /// List a tenant's users.
    List {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue an API token for a user; prints it once.
    Create {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// User id.
        #[arg(long)]
        user: String,
        /// What the token is for.
        #[arg(long, default_value = "cli")]
        label: String,
        /// Days until it expires (1 to 365).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=365))]
        expires_in_days: i64,
    },
    /// Revoke a token by id.
    Revoke {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// Token id.
        #[arg(long)]
        id: String,
    },
}

async fn resolve_tenant(db: &Db, id_or_slug: &str) -> Result<TenantId> {
    let mut tx = db.begin_platform(TxMode::Read).await?;
    let tenant = tenants::find(&mut tx, id_or_slug).await?;
    tx.commit().await?;
    Ok(tenant.id)
}

pub async fn tenant(config: Config, cmd: TenantCommand) -> Result<()> {
    let db = setup::open_db(&config).await?;
    match cmd {
        TenantCommand::Create {
            slug,
            name,
            sandbox,
        } => {
            let mut tx = db.begin_platform(TxMode::Write).await?;
            let t = tenants::create_with(&mut tx, &slug, &name, sandbox, Utc::now()).await?;
            let mut e = oplog::event(
                Action::AdminReferenceUpdated,
                "tenant",
                t.id,
                &["slug", "name", "sandbox"],
            );
            e.after = Some(
                serde_json::json!({ "tenant_id": t.id.to_string(), "slug": slug, "sandbox": sandbox }),
            );
            ledger::append_platform(&mut tx, vec![e]).await?;
            tx.commit().await?;
            println!("{}", t.id);
        }
        TenantCommand::Shred { tenant, yes } => {
            if !yes {
                bail!("crypto-shredding cannot be undone; pass --yes to confirm");
            }
            let id = resolve_tenant(&db, &tenant).await?;
            let keys = crate::keys::start(&config).await?;
            let scope = TenantScope::operator(id);
            let mut tx = scope.begin(&db, TxMode::Write).await?;
            let n = keys.shred_tenant(&mut tx, Utc::now()).await?;
            let mut e = oplog::event(Action::KeysShredded, "tenant", id, &["tenant_keks"]);
            e.after = Some(serde_json::json!({ "kek_versions_destroyed": n }));
            ledger::append_tenant(&mut tx, vec![e]).await?;
            tx.commit().await?;
            println!(
                "tenant {id}: {n} key-encryption key version(s) destroyed; its encrypted data is unrecoverable"
            );
        }
        TenantCommand::List => {
            let mut tx = db.begin_platform(TxMode::Read).await?;
            let list = tenants::list(&mut tx).await?;
            tx.commit().await?;
            println!(
                "{:<36}  {:<20}  {:<9}  {:<8}  name",
                "id", "slug", "status", "kind"
            );
            for t in list {
                let kind = if t.sandbox { "sandbox" } else { "tenant" };
                println!(
                    "{:<36}  {:<20}  {:<9}  {:<8}  {}",
                    t.id, t.slug, t.status, kind, t.name
                );
            }
        }
    }
    db.close().await;
    Ok(())
}

pub async fn practice(config: Config, cmd: PracticeCommand) -> Result<()> {
    let db = setup::open_db(&config).await?;
    match cmd {
        PracticeCommand::Create { tenant, name } => {
            let scope = TenantScope::operator(resolve_tenant(&db, &tenant).await?);
            let mut tx = scope.begin(&db, TxMode::Write).await?;
            let p = practices::create(&mut tx, &name, Utc::now()).await?;
            let mut e = oplog::event(Action::AdminReferenceUpdated, "practice", p.id, &["name"]);
            e.after = Some(serde_json::json!({ "practice_id": p.id.to_string() }));
            ledger::append_tenant(&mut tx, vec![e]).await?;
            tx.commit().await?;
            println!("{}", p.id);
        }
        PracticeCommand::List { tenant } => {
            let scope = TenantScope::operator(resolve_tenant(&db, &tenant).await?);
            let mut tx = scope.begin(&db, TxMode::Read).await?;
            let list = practices::list(&mut tx, scope.practices()).await?;
            tx.commit().await?;
            println!("{:<36}  name", "id");
            for p in list {
                println!("{:<36}  {}", p.id, p.name);
            }
        }
    }
    db.close().await;
    Ok(())
}

pub async fn user(config: Config, cmd: UserCommand) -> Result<()> {
    let db = setup::open_db(&config).await?;
    match cmd {
        UserCommand::Create {
            tenant,
            email,
            name,
            roles,
            practices,
            all_practices,
        } => {
            let roles = roles
                .iter()
                .map(|r| r.parse::<Role>())
                .collect::<Result<Vec<_>, _>>()?;
            let access = if all_practices {
                PracticeAccess::All
            } else {
                let ids = practices
                    .iter()
                    .map(|p| {
                        p.parse::<PracticeId>()
                            .map_err(|_| anyhow::anyhow!("--practice takes a practice id"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                PracticeAccess::Only(ids)
            };
            let scope = TenantScope::operator(resolve_tenant(&db, &tenant).await?);
            let mut tx = scope.begin(&db, TxMode::Write).await?;
            let u = users::create(
                &mut tx,
                NewUser {
                    email,
                    display_name: name,
                    roles,
                    practices: access,
                },
                Utc::now(),
            )
            .await?;
            let mut e = oplog::event(
                Action::AdminUserChanged,
                "user",
                u.id,
                &["email", "display_name", "roles", "practices", "status"],
            );
            e.after = Some(serde_json::json!({
                "user_id": u.id.to_string(),
                "roles": u.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "practices": match &u.practices {
                    PracticeAccess::All => serde_json::json!("all"),
                    PracticeAccess::Only(ids) => serde_json::json!(ids.iter().map(|p| p.to_string()).collect::<Vec<_>>()),
                },
                "status": u.status,
            }));
            ledger::append_tenant(&mut tx, vec![e]).await?;
            tx.commit().await?;
            println!("{}", u.id);
        }
        UserCommand::List { tenant } => {
            let scope = TenantScope::operator(resolve_tenant(&db, &tenant).await?);
            let mut tx = scope.begin(&db, TxMode::Read).await?;
            let list = users::list(&mut tx).await?;
            tx.commit().await?;
            println!(
                "{:<36}  {:<11}  {:<20}  practices  email",
                "id", "status", "roles"
            );
            for u in list {
                let roles: Vec<_> = u.roles.iter().map(|r| r.as_str()).collect();
                let practices = match &u.practices {
                    PracticeAccess::All => "all".to_string(),
                    PracticeAccess::Only(ids) => ids.len().to_string(),
                };
                println!(
                    "{:<36}  {:<11}  {:<20}  {:<9}  {}",
                    u.id,
                    u.status,
                    roles.join(","),
                    practices,
                    u.email
                );
            }
        }
    }
    db.close().await;
    Ok(())
}

pub async fn token(config: Config, cmd: TokenCommand) -> Result<()> {
    let db = setup::open_db(&config).await?;
    match cmd {
        TokenCommand::Create {
            tenant,
            user,
            label,
            expires_in_days,
        } => {
            let Ok(user) = user.parse::<UserId>() else {
                bail!("--user takes a user id")
            };
            let scope = TenantScope::operator(resolve_tenant(&db, &tenant).await?);
            let now = Utc::now();
            let mut tx = scope.begin(&db, TxMode::Write).await?;
            let issued = tokens::issue(
                &mut tx,
                user,
                &label,
                Some(now + Duration::days(expires_in_days)),
                now,
            )
            .await?;
            let mut e = oplog::event(Action::AdminUserChanged, "api_token", issued.id, &["token"]);
            e.after = Some(serde_json::json!({ "user_id": user.to_string(), "state": "issued" }));
            ledger::append_tenant(&mut tx, vec![e]).await?;
            tx.commit().await?;
            eprintln!(
                "token {} for user {user}, expires {}; shown once:",
                issued.id,
                issued.expires_at.unwrap_or(now)
            );
            println!("{}", issued.secret.expose());
        }
        TokenCommand::Revoke { tenant, id } => {
            let Ok(id) = id.parse() else {
                bail!("--id takes a token id")
            };
            let scope = TenantScope::operator(resolve_tenant(&db, &tenant).await?);
            let mut tx = scope.begin(&db, TxMode::Write).await?;
            tokens::revoke(&mut tx, id, Utc::now()).await?;
            let mut e = oplog::event(Action::AdminUserChanged, "api_token", id, &["revoked_at"]);
            e.after = Some(serde_json::json!({ "state": "revoked" }));
            ledger::append_tenant(&mut tx, vec![e]).await?;
            tx.commit().await?;
            println!("revoked");
        }
    }
    db.close().await;
    Ok(())
}
