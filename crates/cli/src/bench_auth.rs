//! `phivault bench auth`: what authentication, authorization and auditing cost a request.
//!
//! Starts this binary as `phivault serve` on a fresh data directory (embedded SQLite,
//! loopback, plain HTTP), creates a tenant, an owner, an API token and, through the
//! development outbox, a session access token, then drives a closed-loop load (N
//! connections, each sending its next request when the previous answer arrived, for a
//! fixed time) at:
//!
//! - `GET /healthz`: no authentication, no database: the baseline of the HTTP stack
//!   (layers, access log, loopback, client);
//! - `GET /api/v1/tenants/{id}/me` with the API token and with the session token:
//!   authenticated and authorized, no audit event;
//! - `GET /api/v1/tenants/{id}/encounters` on the empty tenant with each token: a PHI
//!   list of zero rows, so authenticated, authorized and audited (`phi.read` through
//!   group commit) plus one empty tenant-scoped query.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

/// `phivault bench auth`.
#[derive(Args, Debug)]
pub struct AuthArgs {
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds measured per route.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds of load before each measurement (not counted).
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
}

/// The server under test; killed on drop, with its data directory.
pub(crate) struct ServerProcess {
    child: Child,
    data: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// This binary on data directory `data` and, when given, a PostgreSQL database, with
/// no inherited `PHIVAULT_*` setting.
pub(crate) fn phivault(data: &Path, database_url: Option<&str>) -> Result<Command> {
    let mut cmd = Command::new(std::env::current_exe().context("own executable")?);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PHIVAULT_") {
            cmd.env_remove(&name);
        }
    }
    cmd.arg("--data").arg(data).stdin(Stdio::null());
    if let Some(url) = database_url {
        cmd.arg("--database-url").arg(url);
    }
    Ok(cmd)
}

fn cli(data: &Path, args: &[&str]) -> Result<(String, String)> {
    cli_on(data, None, args)
}

/// Runs an operator command that must succeed; returns trimmed stdout and stderr.
pub(crate) fn cli_on(
    data: &Path,
    database_url: Option<&str>,
    args: &[&str],
) -> Result<(String, String)> {
    let out = phivault(data, database_url)?.args(args).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        bail!("phivault {args:?} failed: {stderr}");
    }
    Ok((String::from_utf8(out.stdout)?.trim().to_string(), stderr))
}

fn start_server(data: &Path) -> Result<(ServerProcess, String)> {
    start_server_on(data, None)
}

/// Starts `phivault serve` on loopback; returns the process guard and its URL.
pub(crate) fn start_server_on(
    data: &Path,
    database_url: Option<&str>,
) -> Result<(ServerProcess, String)> {
    use std::io::BufRead;
    let log = std::fs::File::create(data.join("server.log"))?;
    let mut child = phivault(data, database_url)?
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .context("start phivault serve")?;
    let stdout = child.stdout.take().context("stdout")?;
    let guard = ServerProcess {
        child,
        data: data.to_path_buf(),
    };
    let mut lines = std::io::BufReader::new(stdout).lines();
    let url = loop {
        let Some(line) = lines.next() else {
            bail!("phivault serve exited before listening");
        };
        if let Some(url) = line?.strip_prefix("phivault listening on ") {
            break url.trim().trim_end_matches('/').to_string();
        }
    };
    // Keep draining stdout so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Ok((guard, url))
}

/// Signs the owner in through the outbox; returns a session access token.
async fn session_token(client: &reqwest::Client, url: &str, data: &Path) -> Result<String> {
    client
        .post(format!("{url}/api/v1/auth/magic-link"))
        .json(&json!({"tenant": "bench-auth", "email": "owner@bench-auth.example.test"}))
        .send()
        .await?
        .error_for_status()?;
    let outbox = data.join("outbox");
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let file = std::fs::read_dir(&outbox)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok());
        if let Some(file) = file {
            break std::fs::read_to_string(file.path())?;
        }
        if Instant::now() > deadline {
            bail!("no sign-in link reached the outbox");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = text
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    let start = text.find("pvm_").context("no link in the mail")?;
    let link: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let answer: serde_json::Value = client
        .post(format!("{url}/api/v1/auth/magic-link/verify"))
        .json(&json!({"token": link}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["access_token"]
        .as_str()
        .map(str::to_string)
        .context("no access token in the sign-in answer")
}

/// Throughput and latency of one load run.
pub(crate) struct Outcome {
    /// Successful requests per second.
    pub(crate) requests_per_sec: f64,
    /// Median latency.
    pub(crate) p50_ms: f64,
    /// 99th percentile latency.
    pub(crate) p99_ms: f64,
}

/// Closed-loop load of `GET url`: `connections` tasks, each one request at a time.
async fn load(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Result<Outcome> {
    let url = url.to_string();
    let token = token.map(str::to_string);
    load_with(client, connections, duration, move |client, _, _| {
        let mut request = client.get(&url);
        if let Some(t) = &token {
            request = request.bearer_auth(t);
        }
        request
    })
    .await
}

/// Closed-loop load: `connections` tasks, each sending `make(client, connection, n)` for
/// its n-th request (from 0) when the previous answer arrived; any answer but 2xx fails
/// the run.
pub(crate) async fn load_with<F>(
    client: &reqwest::Client,
    connections: usize,
    duration: Duration,
    make: F,
) -> Result<Outcome>
where
    F: Fn(&reqwest::Client, usize, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let started = Instant::now();
    let deadline = started + duration;
    let make = Arc::new(make);
    let mut tasks = Vec::new();
    for connection in 0..connections {
        let client = client.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let request = make(&client, connection, n);
                n += 1;
                let sent = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                if !status.is_success() {
                    bail!(
                        "the server answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pick = |q: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    Ok(Outcome {
        requests_per_sec: all.len() as f64 / elapsed,
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    })
}

pub async fn run(args: AuthArgs) -> Result<()> {
    if args.connections == 0 || args.duration_secs == 0 {
        bail!("--connections and --duration-secs must be at least 1");
    }
    let data = std::env::temp_dir().join(format!("phivault-bench-auth-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data)?;
    let (tenant, _) = cli(
        &data,
        &[
            "tenant",
            "create",
            "--slug",
            "bench-auth",
            "--name",
            "Benchmark tenant (synthetic)",
            "--sandbox",
        ],
    )?;
    let (owner, _) = cli(
        &data,
        &[
            "user",
            "create",
            "--tenant",
            &tenant,
            "--email",
            "owner@bench-auth.example.test",
            "--name",
            "Synthetic Owner",
            "--role",
            "owner",
            "--all-practices",
        ],
    )?;
    let (api_token, _) = cli(
        &data,
        &["token", "create", "--tenant", &tenant, "--user", &owner],
    )?;
    let (server, url) = start_server(&data)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let session = session_token(&client, &url, &data).await?;

    let me = format!("{url}/api/v1/tenants/{tenant}/me");
    let encounters = format!("{url}/api/v1/tenants/{tenant}/encounters");
    let healthz = format!("{url}/healthz");
    let cases: Vec<(&str, &str, Option<&str>)> = vec![
        ("GET /healthz (no auth)", &healthz, None),
        ("GET /me, API token", &me, Some(&api_token)),
        ("GET /me, session token", &me, Some(&session)),
        (
            "GET /encounters (0 rows, audited), API token",
            &encounters,
            Some(&api_token),
        ),
        (
            "GET /encounters (0 rows, audited), session token",
            &encounters,
            Some(&session),
        ),
    ];
    println!(
        "phivault bench auth: SQLite, loopback HTTP, {} connections, {} s per route after {} s warm-up",
        args.connections, args.duration_secs, args.warmup_secs
    );
    println!(
        "{:<50} {:>10} {:>9} {:>9} {:>12} {:>10}",
        "route", "req/s", "p50 ms", "p99 ms", "req/s vs hz", "p99 vs hz"
    );
    let client = Arc::new(client);
    let mut baseline: Option<Outcome> = None;
    for (name, target, token) in cases {
        if args.warmup_secs > 0 {
            load(
                &client,
                target,
                token,
                args.connections,
                Duration::from_secs(args.warmup_secs),
            )
            .await?;
        }
        let o = load(
            &client,
            target,
            token,
            args.connections,
            Duration::from_secs(args.duration_secs),
        )
        .await?;
        let (rps_delta, p99_delta) = match &baseline {
            Some(b) => (
                format!(
                    "{:+.1}%",
                    (o.requests_per_sec / b.requests_per_sec - 1.0) * 100.0
                ),
                format!("{:+.1}%", (o.p99_ms / b.p99_ms - 1.0) * 100.0),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<50} {:>10.0} {:>9.2} {:>9.2} {:>12} {:>10}",
            name, o.requests_per_sec, o.p50_ms, o.p99_ms, rps_delta, p99_delta
        );
        if baseline.is_none() {
            baseline = Some(o);
        }
    }
    drop(server);
    Ok(())
}
