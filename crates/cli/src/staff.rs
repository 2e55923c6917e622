//! Staff (platform operators) at the command line: created only here, on the server
//! host, never through the API. Each change goes into the platform audit chain in the
//! same transaction.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::Subcommand;
use phivault_audit::{Action, ledger};
use phivault_domain::staff::{self, NewStaff, StaffRole};
use phivault_store::TxMode;
use zeroize::Zeroizing;

use crate::config::Config;
use crate::{oplog, setup};

#[derive(Subcommand)]
pub enum StaffCommand {
    /// Create a staff member; prints its id. The password comes from
    /// PHIVAULT_STAFF_PASSWORD or is asked for (not echoed).
    Create {
        /// Sign-in e-mail address.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Role: super_admin, platform_ops, support, finance or read_only.
        #[arg(long)]
        role: String,
    },
    /// List staff members.
    List,
    /// Deactivate a staff member; their sessions end at once.
    Deactivate {
        /// Sign-in e-mail address.
        #[arg(long)]
        email: String,
    },
}

/// Reads a line from the terminal with echo switched off (through `stty`).
fn prompt_password() -> Result<Zeroizing<String>> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("set PHIVAULT_STAFF_PASSWORD, or run this in a terminal to be asked");
    }
    eprint!("password for the new staff member: ");
    std::io::stderr().flush().ok();
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
    };
    stty("-echo").context("cannot switch terminal echo off")?;
    let mut line = Zeroizing::new(String::new());
    let read = stdin.lock().read_line(&mut line);
    let _ = stty("echo");
    eprintln!();
    read.context("cannot read the password")?;
    let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    Ok(trimmed)
}

pub async fn run(config: Config, cmd: StaffCommand) -> Result<()> {
    let db = setup::open_db(&config).await?;
    match cmd {
        StaffCommand::Create { email, name, role } => {
            let role: StaffRole = role.parse()?;
            let password = match std::env::var("PHIVAULT_STAFF_PASSWORD") {
                Ok(p) => Zeroizing::new(p),
                Err(_) => prompt_password()?,
            };
            let mut tx = db.begin_platform(TxMode::Write).await?;
            let s = staff::create(
                &mut tx,
                NewStaff {
                    email,
                    display_name: name,
                    role,
                },
                &password,
                Utc::now(),
            )
            .await?;
            let mut e = oplog::event(
                Action::AdminUserChanged,
                "staff",
                s.id,
                &["email", "display_name", "role", "password_hash"],
            );
            e.after = Some(serde_json::json!({
                "staff_id": s.id.to_string(),
                "role": role.as_str(),
                "status": "active",
            }));
            ledger::append_platform(&mut tx, vec![e]).await?;
            tx.commit().await?;
            println!("{}", s.id);
        }
        StaffCommand::List => {
            let mut tx = db.begin_platform(TxMode::Read).await?;
            let list = staff::list(&mut tx).await?;
            tx.commit().await?;
            println!("{:<36}  {:<12}  {:<11}  email", "id", "role", "status");
            for s in list {
                let status = if s.active { "active" } else { "deactivated" };
                println!("{:<36}  {:<12}  {:<11}  {}", s.id, s.role, status, s.email);
            }
        }
        StaffCommand::Deactivate { email } => {
            let mut tx = db.begin_platform(TxMode::Write).await?;
            let s = staff::deactivate(&mut tx, &email, Utc::now()).await?;
            let mut e = oplog::event(Action::AdminUserChanged, "staff", s.id, &["status"]);
            e.before =
                Some(serde_json::json!({ "staff_id": s.id.to_string(), "status": "active" }));
            e.after =
                Some(serde_json::json!({ "staff_id": s.id.to_string(), "status": "deactivated" }));
            ledger::append_platform(&mut tx, vec![e]).await?;
            tx.commit().await?;
            println!("staff {} deactivated", s.id);
        }
    }
    db.close().await;
    Ok(())
}
