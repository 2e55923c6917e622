//! `phivault`: the server and its operator command line. This crate only wires the
//! layers together; every rule lives in the library crates.

mod admin;
mod audit;
mod bench;
mod bench_audit;
mod bench_auth;
mod bench_e2e;
mod bench_stream;
mod bench_transcribe;
mod bench_transcribe_long;
mod bench_upload;
mod breach;
mod compliance;
mod config;
mod devcert;
mod e2e;
mod evidence;
mod keys;
mod migrate;
mod models;
mod oplog;
mod readiness;
mod retention;
mod serve;
mod setup;
mod staff;
mod transcribe_cmd;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};

/// phivault: clinical conversation capture with HIPAA Security Rule safeguards enforced
/// in code.
///
/// With no configuration, `phivault serve` keeps everything in ./phivault-data: an
/// SQLite database and a local object directory. Settings come from a TOML file
/// (--config), then PHIVAULT_* environment variables, then flags.
#[derive(Parser)]
#[command(
    name = "phivault",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// TOML configuration file.
    #[arg(long, global = true, env = "PHIVAULT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (SQLite database, local objects, development TLS files).
    #[arg(
        long = "data",
        global = true,
        env = "PHIVAULT_DATA",
        value_name = "DIR"
    )]
    data_dir: Option<PathBuf>,
    /// Database URL (sqlite:... or postgres://...); SQLite in the data directory when unset.
    #[arg(
        long,
        global = true,
        env = "PHIVAULT_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server. Prints the URL it listens on.
    Serve {
        /// Address and port to listen on (plain HTTP only on loopback or behind a declared
        /// TLS-terminating proxy).
        #[arg(long, env = "PHIVAULT_LISTEN", value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
    },
    /// Apply database migrations. On PostgreSQL, run it with the schema owner's URL
    /// (PHIVAULT_MIGRATE_DATABASE_URL); it then grants the serving role its privileges.
    Migrate {
        /// The PostgreSQL role the server connects as (default from configuration:
        /// phivault_app). Created NOLOGIN if missing.
        #[arg(long, value_name = "ROLE")]
        app_role: Option<String>,
    },
    /// Manage tenants (the unit of isolation).
    #[command(subcommand)]
    Tenant(admin::TenantCommand),
    /// Manage practices (clinics inside a tenant).
    #[command(subcommand)]
    Practice(admin::PracticeCommand),
    /// Manage users of a tenant.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Manage staff (platform operators): create, list, deactivate.
    #[command(subcommand)]
    Staff(staff::StaffCommand),
    /// Issue and revoke API tokens.
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Manage the key hierarchy: create the keyring, check status, rotate a tenant's KEK.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Unseal a running server's local keyring. The passphrase comes from
    /// PHIVAULT_KEYRING_PASSPHRASE, keys.passphrase_file, or standard input.
    Unseal {
        /// The server's URL (it accepts unsealing from the server host only).
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        url: String,
        /// Trust this PEM certificate for HTTPS (e.g. the dev-cert one).
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
    /// Seal a running server's keys: PHI is refused until it is unsealed again (an
    /// emergency stop). Proven with the keyring's passphrase, as for unseal.
    Seal {
        /// The server's URL (it accepts sealing from the server host only).
        #[arg(long, default_value = "http://127.0.0.1:8420")]
        url: String,
        /// Trust this PEM certificate for HTTPS (e.g. the dev-cert one).
        #[arg(long, value_name = "FILE")]
        ca_cert: Option<PathBuf>,
    },
    /// Print the PHI readiness checklist (each gate, its evidence and next action) of the
    /// platform or of a tenant; exits non-zero while any gate is open.
    Readiness(readiness::ReadinessArgs),
    /// Manage the vendor registries (subprocessors and their BAAs).
    #[command(subcommand)]
    Vendor(readiness::VendorCommand),
    /// Record, show or remove a tenant's BAA with the operator of this server.
    #[command(subcommand)]
    Baa(readiness::BaaCommand),
    /// Write a self-signed certificate and key for HTTPS on localhost.
    DevCert(devcert::DevCertArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Install local speech models (Whisper) and show the engine and model in use.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Transcribe a local audio file with an engine and print the transcript (stores
    /// nothing): to check an engine or model before enabling it.
    Transcribe(transcribe_cmd::TranscribeArgs),
    /// Run the scribe pipeline's worker alone (transcription and note jobs), for a
    /// deployment that keeps it out of the server (`scribe.in_process_worker = false`).
    /// Needs the keys unsealed (PHIVAULT_KEYRING_PASSPHRASE) and a transcription engine.
    Worker,
    /// Verify, export and checkpoint the audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Measure performance; figures go in BENCHMARKS.md.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Take part in end-to-end encrypted sessions: keys stay on this machine, the server
    /// stores ciphertext only.
    #[command(subcommand)]
    E2e(e2e::E2eCommand),
    /// Delete what is past its retention window: recordings' audio, transcripts, notes
    /// and end-to-end utterances (data keys destroyed, each deletion audited), or list it
    /// with --dry-run. The server also sweeps on a timer.
    #[command(subcommand)]
    Retention(retention::RetentionCommand),
    /// Compliance records: security officer, risk assessments, training
    /// acknowledgements, incidents, sanctions policy; each save a new, audited version.
    #[command(subcommand)]
    Compliance(compliance::ComplianceCommand),
    /// Breach-impact report: the patients, encounters and records an actor, address or
    /// device touched in a window, from the audit trail (docs/breach.md).
    #[command(subcommand)]
    Breach(breach::BreachCommand),
    /// Evidence packet: export a tenant's signed archive for a reviewer (readiness,
    /// configuration, vendors, access review, retention, audit verification, compliance),
    /// or verify one offline (docs/evidence.md).
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let listen = match &cli.command {
        Command::Serve { listen } => *listen,
        _ => None,
    };
    let overrides = Overrides {
        data_dir: cli.global.data_dir,
        database_url: cli.global.database_url,
        listen,
    };
    let config = match Config::load(cli.global.config.as_deref(), overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("phivault: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phivault: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { .. } => serve::run(config).await,
            Command::Worker => worker::run(config).await,
            Command::Models(c) => models::run(config, c).await,
            Command::Transcribe(args) => transcribe_cmd::run(config, args).await,
            Command::Migrate { app_role } => migrate::run(config, app_role).await,
            Command::Tenant(c) => admin::tenant(config, c).await,
            Command::Practice(c) => admin::practice(config, c).await,
            Command::User(c) => admin::user(config, c).await,
            Command::Token(c) => admin::token(config, c).await,
            Command::Staff(c) => staff::run(config, c).await,
            Command::Keys(c) => keys::run(config, c).await,
            Command::Unseal { url, ca_cert } => {
                key_op(&config, &url, ca_cert.as_deref(), "unseal").await
            }
            Command::Seal { url, ca_cert } => {
                key_op(&config, &url, ca_cert.as_deref(), "seal").await
            }
            Command::Readiness(args) => readiness::run(config, args).await,
            Command::Vendor(c) => readiness::vendor(config, c).await,
            Command::Baa(c) => readiness::baa(config, c).await,
            Command::DevCert(args) => devcert::run(&config, args),
            Command::Openapi => {
                println!("{}", phivault_http::openapi::openapi_json());
                Ok(())
            }
            Command::Audit(c) => audit::run(config, c).await,
            Command::Bench(c) => bench::run(config, c).await,
            Command::E2e(c) => e2e::run(c).await,
            Command::Retention(c) => retention::run(config, c).await,
            Command::Compliance(c) => compliance::run(config, c).await,
            Command::Breach(c) => breach::run(config, c).await,
            Command::Evidence(c) => evidence::run(config, c).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phivault: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Asks the server on this host to `unseal` or `seal` its keys, with the passphrase.
async fn key_op(
    config: &Config,
    url: &str,
    ca_cert: Option<&std::path::Path>,
    op: &str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let passphrase = keys::unseal_passphrase(config)?;
    let body = serde_json::json!({ "passphrase": String::from_utf8_lossy(&passphrase) });
    let response = readiness::local_client(ca_cert)?
        .post(format!("{}/api/v1/sys/{op}", url.trim_end_matches('/')))
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if status.is_success() {
        match op {
            "seal" => println!("sealed: PHI is refused until the keys are unsealed"),
            _ => println!("unsealed ({})", answer["provider"].as_str().unwrap_or("?")),
        }
        Ok(())
    } else {
        anyhow::bail!(
            "{}: {}",
            answer["code"].as_str().unwrap_or("error"),
            answer["message"].as_str().unwrap_or("")
        )
    }
}
