//! `phivault bench e2e-append`: end-to-end utterance appends as a client sees them.
//!
//! Starts this binary as `phivault serve` (embedded SQLite in a fresh data directory, or
//! a scratch PostgreSQL database served through the non-owner role), creates a tenant,
//! an owner and an API token, opens one two-device session per connection, then drives a
//! closed loop of `POST …/utterances` on loopback: each request is authenticated (API
//! token lookup), authorized (`dictation:create`, then participation), shape- and
//! order-checked, stored and audited (`e2e.utterance.stored` in the append's own
//! transaction). The ciphertext is 256 random-looking bytes, the size of a sentence or
//! two once sealed: the server never decrypts, so real encryption would change nothing
//! on its side.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use serde_json::json;

use crate::bench::BenchBackend;
use crate::bench_auth::{cli_on, load_with, start_server_on};

/// `phivault bench e2e-append`.
#[derive(Args, Debug)]
pub struct E2eAppendArgs {
    /// Backends to measure.
    #[arg(long, value_enum, default_values_t = [BenchBackend::Sqlite, BenchBackend::Postgres])]
    backend: Vec<BenchBackend>,
    /// Concurrent connections of the load generator (one session each).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds measured per backend.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds of load before the measurement (not counted).
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Superuser URL of a PostgreSQL server; a scratch database is created and dropped.
    #[arg(
        long,
        env = "PHIVAULT_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_admin_url: String,
}

const FINGERPRINT: &str = "b3e1c2d4a5f60718293a4b5c6d7e8f90123456789abcdef0123456789abcdef0";

/// Runs the benchmark.
pub async fn run(args: E2eAppendArgs) -> Result<()> {
    if args.connections == 0 || args.duration_secs == 0 {
        bail!("--connections and --duration-secs must be at least 1");
    }
    println!(
        "phivault bench e2e-append: loopback HTTP, {} connections (one session each), 256-byte \
         ciphertext, {} s measured after {} s warm-up",
        args.connections, args.duration_secs, args.warmup_secs
    );
    println!(
        "{:<10} {:>12} {:>9} {:>9}",
        "backend", "appends/s", "p50 ms", "p99 ms"
    );
    for backend in &args.backend {
        let scratch = match backend {
            BenchBackend::Sqlite => None,
            BenchBackend::Postgres => Some(
                phivault_store::scratch::ScratchPg::create(&args.pg_admin_url, "bench_e2e")
                    .await
                    .context("cannot create a scratch PostgreSQL database")?,
            ),
        };
        let url = scratch.as_ref().map(|s| s.app_url.clone());
        let result = one_backend(&args, url.as_deref()).await;
        if let Some(s) = scratch {
            s.drop_database(&args.pg_admin_url).await?;
        }
        let o = result?;
        let name = match backend {
            BenchBackend::Sqlite => "sqlite",
            BenchBackend::Postgres => "postgres",
        };
        println!(
            "{:<10} {:>12.0} {:>9.2} {:>9.2}",
            name, o.requests_per_sec, o.p50_ms, o.p99_ms
        );
    }
    Ok(())
}

async fn one_backend(
    args: &E2eAppendArgs,
    database_url: Option<&str>,
) -> Result<crate::bench_auth::Outcome> {
    let data = std::env::temp_dir().join(format!("phivault-bench-e2e-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data)?;
    let cli = |a: &[&str]| cli_on(&data, database_url, a).map(|(out, _)| out);
    let tenant = cli(&[
        "tenant",
        "create",
        "--slug",
        "bench-e2e",
        "--name",
        "Benchmark tenant (synthetic)",
        "--sandbox",
    ])?;
    let owner = cli(&[
        "user",
        "create",
        "--tenant",
        &tenant,
        "--email",
        "owner@bench-e2e.example.test",
        "--name",
        "Synthetic Owner",
        "--role",
        "owner",
        "--all-practices",
    ])?;
    let token = cli(&["token", "create", "--tenant", &tenant, "--user", &owner])?;
    let (server, base) = start_server_on(&data, database_url)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let mut paths = Vec::new();
    for _ in 0..args.connections {
        let s: serde_json::Value = client
            .post(format!("{base}/api/v1/tenants/{tenant}/e2e/sessions"))
            .bearer_auth(&token)
            .json(&json!({"mode": "two_device", "key_fingerprint": FINGERPRINT}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = s["id"].as_str().context("no session id")?;
        paths.push(format!(
            "{base}/api/v1/tenants/{tenant}/e2e/sessions/{id}/utterances"
        ));
    }
    let paths = Arc::new(paths);
    // Sequences keep rising across the warm-up and the measurement.
    let sequences: Arc<Vec<AtomicI64>> =
        Arc::new((0..args.connections).map(|_| AtomicI64::new(0)).collect());
    let nonce = URL_SAFE_NO_PAD.encode([3u8; 12]);
    let ciphertext = URL_SAFE_NO_PAD.encode(
        (0..256u32)
            .map(|i| (i * 37 % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let make = move |client: &reqwest::Client, connection: usize, _n: u64| {
        let sequence = sequences[connection].fetch_add(1, Ordering::Relaxed) + 1;
        client
            .post(&paths[connection])
            .bearer_auth(&token)
            .json(&json!({
                "sequence": sequence,
                "nonce": nonce,
                "ciphertext": ciphertext,
                "key_fingerprint": FINGERPRINT,
                "algorithm": "AES-256-GCM",
            }))
    };
    let make = Arc::new(make);
    if args.warmup_secs > 0 {
        let m = make.clone();
        load_with(
            &client,
            args.connections,
            Duration::from_secs(args.warmup_secs),
            move |c, i, n| m(c, i, n),
        )
        .await?;
    }
    let outcome = load_with(
        &client,
        args.connections,
        Duration::from_secs(args.duration_secs),
        move |c, i, n| make(c, i, n),
    )
    .await?;
    // Dropping the server removes its data directory.
    drop(server);
    Ok(outcome)
}
