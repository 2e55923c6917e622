//! Shared helpers for phivault's black-box tests: they run the real `phivault` binary in a
//! temporary data directory, on SQLite or on a scratch PostgreSQL database served through
//! the non-owner role, and talk HTTP to it from the outside.

#![allow(dead_code)]

pub mod speech;

use std::ffi::OsString;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_phivault");

/// How long a server gets to print its URL.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A command for the binary with no inherited `PHIVAULT_*` setting and no stdin.
pub fn phivault() -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PHIVAULT_") {
            cmd.env_remove(&name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Which database a site runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded SQLite file in the data directory.
    Sqlite,
    /// A fresh scratch PostgreSQL database, served as the non-owner role (RLS applies).
    Postgres,
}

type PgDrop = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A deployment: a data directory and a database. Dropping it drops the scratch
/// PostgreSQL database.
pub struct Site {
    /// The backend.
    pub backend: Backend,
    data: tempfile::TempDir,
    database_url: Option<String>,
    pg_admin_url: Option<String>,
    pg_drop: Option<PgDrop>,
}

impl Site {
    /// A fresh site on `backend`.
    pub async fn new(backend: Backend) -> Site {
        let data = tempfile::tempdir().expect("temp data dir");
        match backend {
            Backend::Sqlite => Site {
                backend,
                data,
                database_url: None,
                pg_admin_url: None,
                pg_drop: None,
            },
            Backend::Postgres => {
                let pg = phivault_testkit::scratch_pg().await;
                let admin = phivault_testkit::pg_admin_url();
                let database_url = Some(pg.app_url.clone());
                let pg_admin_url = Some(pg.admin_url.clone());
                let pg_drop: PgDrop = Box::new(move || {
                    Box::pin(async move {
                        let _ = pg.drop_database(&admin).await;
                    })
                });
                Site {
                    backend,
                    data,
                    database_url,
                    pg_admin_url,
                    pg_drop: Some(pg_drop),
                }
            }
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// A superuser URL of the scratch PostgreSQL database (PostgreSQL sites only), for
    /// inspecting what is stored.
    pub fn pg_admin_url(&self) -> Option<&str> {
        self.pg_admin_url.as_deref()
    }

    /// The global CLI arguments that select this site's data directory and database.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--data".into(), self.data.path().into()];
        if let Some(url) = &self.database_url {
            args.push("--database-url".into());
            args.push(url.into());
        }
        args
    }

    /// `phivault <site args> <args>`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = phivault();
        cmd.args(self.args()).args(args);
        cmd
    }

    /// Runs an admin command; returns its output whatever the exit status.
    pub fn cli_output(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run phivault")
    }

    /// Runs an admin command that must succeed; returns its trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(
            out.status.success(),
            "phivault {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8 stdout")
            .trim()
            .to_string()
    }

    /// `phivault serve --listen 127.0.0.1:0` on this site, not yet started.
    pub fn serve_command(&self) -> Command {
        let mut cmd = self.command(&["serve", "--listen", "127.0.0.1:0"]);
        cmd.env("PHIVAULT_LOG_FORMAT", "json");
        // Suites that send hundreds of bad credentials from one address on purpose
        // (isolation, bad input) would otherwise be throttled; throttle.rs sets its own
        // limits, which override this.
        cmd.env("PHIVAULT_THROTTLE_BEARER_FAILURES_PER_IP", "100000");
        cmd
    }

    /// Starts the server with extra environment variables.
    pub fn serve_with(&self, envs: &[(&str, &str)]) -> Server {
        let mut cmd = self.serve_command();
        cmd.envs(envs.iter().copied());
        let server = Server::start(cmd);
        // The start-up log line names the backend actually in use.
        let expected = match self.backend {
            Backend::Sqlite => "\"database\":\"sqlite\"",
            Backend::Postgres => "\"database\":\"postgres\"",
        };
        let log = server.stderr();
        let serving = log
            .lines()
            .find(|l| l.contains("phivault serving"))
            .unwrap_or_else(|| panic!("no start-up log line in: {log}"));
        assert!(
            serving.contains(expected),
            "not on {:?}: {serving}",
            self.backend
        );
        server
    }

    /// Starts the server.
    pub fn serve(&self) -> Server {
        self.serve_with(&[])
    }

    /// Creates a sandbox tenant (synthetic data only, so its PHI routes work without PHI
    /// mode) with an owner over all practices and a token for the owner.
    pub fn tenant(&self, slug: &str, name: &str) -> TenantFixture {
        let id = self.cli(&[
            "tenant",
            "create",
            "--slug",
            slug,
            "--name",
            name,
            "--sandbox",
        ]);
        let owner = self.user(
            &id,
            &format!("owner@{slug}.example.test"),
            "Synthetic Owner",
            &["owner"],
            None,
        );
        let (_, token) = self.token(&id, &owner);
        TenantFixture {
            id,
            owner_id: owner,
            owner_token: token,
        }
    }

    /// Creates a practice; returns its id.
    pub fn practice(&self, tenant: &str, name: &str) -> String {
        self.cli(&["practice", "create", "--tenant", tenant, "--name", name])
    }

    /// Creates a user with `roles`, limited to `practices` (or every practice when
    /// `None`); returns its id.
    pub fn user(
        &self,
        tenant: &str,
        email: &str,
        name: &str,
        roles: &[&str],
        practices: Option<&[&str]>,
    ) -> String {
        let mut args = vec![
            "user", "create", "--tenant", tenant, "--email", email, "--name", name,
        ];
        for role in roles {
            args.extend(["--role", role]);
        }
        match practices {
            None => args.push("--all-practices"),
            Some(ids) => {
                for id in ids {
                    args.extend(["--practice", id]);
                }
            }
        }
        self.cli(&args)
    }

    /// Issues a token; returns (token id, token secret).
    pub fn token(&self, tenant: &str, user: &str) -> (String, String) {
        let out = self.cli_output(&["token", "create", "--tenant", tenant, "--user", user]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "token create failed: {stderr}");
        let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(secret.starts_with("pvt_"), "unexpected token shape");
        let id = stderr
            .split_whitespace()
            .skip_while(|w| *w != "token")
            .nth(1)
            .unwrap_or_else(|| panic!("no token id in: {stderr}"))
            .to_string();
        (id, secret)
    }

    /// Revokes a token by id.
    pub fn revoke(&self, tenant: &str, token_id: &str) {
        let out = self.cli(&["token", "revoke", "--tenant", tenant, "--id", token_id]);
        assert_eq!(out, "revoked");
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(drop_db) = self.pg_drop.take() {
            // Drop may run inside the test's runtime; use a runtime of its own.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_db());
                }
            })
            .join();
        }
    }
}

/// A tenant made by [`Site::tenant`].
#[derive(Clone, Debug)]
pub struct TenantFixture {
    /// Tenant id.
    pub id: String,
    /// Owner user id.
    pub owner_id: String,
    /// Owner token.
    pub owner_token: String,
}

impl TenantFixture {
    /// `/api/v1/tenants/<id>/<rest>`.
    pub fn path(&self, rest: &str) -> String {
        tenant_path(&self.id, rest)
    }
}

/// A patient body for `POST patients`.
pub fn patient_json(practice: &str, mrn: &str, given: &str, family: &str, dob: &str) -> Value {
    json!({
        "practice_id": practice,
        "mrn": mrn,
        "given_name": given,
        "family_name": family,
        "date_of_birth": dob,
    })
}

/// `/api/v1/tenants/<tenant>/<rest>`.
pub fn tenant_path(tenant: &str, rest: &str) -> String {
    format!("/api/v1/tenants/{tenant}/{rest}")
}

/// How a server start ended.
pub enum Launch {
    /// It printed its URL and is serving.
    Started(Server),
    /// It exited first.
    Exited {
        /// Exit status.
        status: ExitStatus,
        /// Everything it wrote to stdout.
        stdout: String,
        /// Everything it wrote to stderr.
        stderr: String,
    },
}

/// A running `phivault serve`. Killed on drop.
pub struct Server {
    child: Child,
    /// The URL it printed, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    stderr_path: PathBuf,
    _logs: tempfile::TempDir,
    client: reqwest::Client,
}

impl Server {
    /// Starts `cmd` (a `phivault serve` command) and waits for its URL.
    pub fn start(cmd: Command) -> Server {
        match Self::launch(cmd) {
            Launch::Started(server) => server,
            Launch::Exited { status, stderr, .. } => {
                panic!("phivault serve exited ({status}) before listening: {stderr}")
            }
        }
    }

    /// Starts `cmd` and reports whether it came up or exited.
    pub fn launch(mut cmd: Command) -> Launch {
        let logs = tempfile::tempdir().expect("temp log dir");
        let stderr_path = logs.path().join("stderr.log");
        let stderr_file = File::create(&stderr_path).expect("stderr file");
        cmd.stdout(Stdio::piped()).stderr(Stdio::from(stderr_file));
        let mut child = cmd.spawn().expect("spawn phivault serve");
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The receiver is gone once the URL was read; keep draining the pipe.
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut printed = String::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    printed.push_str(&line);
                    printed.push('\n');
                    if let Some(url) = line.strip_prefix("phivault listening on ") {
                        return Launch::Started(Server {
                            child,
                            url: url.trim().to_string(),
                            stderr_path,
                            _logs: logs,
                            client: plain_client(),
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is exiting.
                    let status = child.wait().expect("wait for phivault");
                    return Launch::Exited {
                        status,
                        stdout: printed,
                        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                    };
                }
            }
            if let Some(status) = child.try_wait().expect("try_wait") {
                while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                    printed.push_str(&line);
                    printed.push('\n');
                }
                return Launch::Exited {
                    status,
                    stdout: printed,
                    stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "phivault serve printed no URL within {START_TIMEOUT:?}: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        }
    }

    /// Replaces the HTTP client (e.g. one that trusts a development certificate).
    pub fn set_client(&mut self, client: reqwest::Client) {
        self.client = client;
    }

    /// `host:port` of the listener, from the printed URL.
    pub fn addr(&self) -> String {
        let rest = self.url.split("://").nth(1).expect("scheme in URL");
        rest.trim_end_matches('/').to_string()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in URL")
    }

    /// Everything the server wrote to stderr so far (its log).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).expect("read stderr log")
    }

    /// Asks the server to stop (SIGTERM) and waits for it; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("phivault serve did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A request to `path` (absolute path and query) on this server.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    /// Sends a request and collects the reply.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("HTTP request");
        Reply::read(response).await
    }

    /// GET, with a bearer token if given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut rb = self.request(reqwest::Method::GET, path);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        self.send(rb).await
    }

    /// POST of a JSON value, with a bearer token if given.
    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.post_raw(
            path,
            token,
            Some("application/json"),
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    /// POST of raw bytes with an optional content type.
    pub async fn post_raw(
        &self,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        let mut rb = self.request(reqwest::Method::POST, path).body(body);
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(ct) = content_type {
            rb = rb.header(reqwest::header::CONTENT_TYPE, ct);
        }
        self.send(rb).await
    }

    /// Sends raw bytes over a fresh TCP connection (plain HTTP only) and parses the
    /// HTTP/1.1 answer. For requests a well-behaved client cannot make.
    pub fn raw(&self, request: &[u8]) -> Reply {
        raw_http(&self.addr(), request)
    }

    /// Registers a patient from a [`patient_json`] body (must succeed); returns its JSON.
    pub async fn create_patient(&self, tenant: &str, token: &str, patient: &Value) -> Value {
        let reply = self
            .post_json(&tenant_path(tenant, "patients"), Some(token), patient)
            .await;
        reply.expect(201).json()
    }

    /// Opens an encounter (must succeed); returns its JSON.
    pub async fn create_encounter(
        &self,
        tenant: &str,
        token: &str,
        patient: &str,
        reason: &str,
    ) -> Value {
        let reply = self
            .post_json(
                &tenant_path(tenant, "encounters"),
                Some(token),
                &json!({ "patient_id": patient, "reason": reason }),
            )
            .await;
        reply.expect(201).json()
    }

    /// The tenant's practices, users, patients and encounters as `token` sees them, for
    /// before/after comparisons.
    pub async fn snapshot(&self, tenant: &str, token: &str) -> Value {
        let mut out = serde_json::Map::new();
        for list in [
            "practices",
            "users",
            "patients?limit=200",
            "encounters?limit=200",
        ] {
            let reply = self.get(&tenant_path(tenant, list), Some(token)).await;
            let name = list.split('?').next().unwrap().to_string();
            out.insert(name, reply.expect(200).json());
        }
        Value::Object(out)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP client that ignores proxies and times out.
pub fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// An HTTP reply, fully read.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    async fn read(response: reqwest::Response) -> Reply {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                )
            })
            .collect();
        let body = response.bytes().await.expect("read body").to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Asserts the status; returns self.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Reply {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}: {}",
            self.status,
            self.text()
        );
        self
    }

    /// Checks that this is an error in phivault's shape — `status`, JSON
    /// `{"code","message","request_id"}` with `code`, and a request id equal to the
    /// `x-request-id` header — and returns the body.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> Value {
        if let Err(why) = self.check_error(status, code) {
            panic!("{why}");
        }
        self.json()
    }

    /// [`Reply::expect_error`] as a result, for tests that collect every failure.
    pub fn check_error(&self, status: u16, code: &str) -> Result<(), String> {
        let text = self.text();
        if self.status != status {
            return Err(format!("expected {status}, got {}: {text}", self.status));
        }
        let ct = self.header("content-type").unwrap_or("");
        if !ct.starts_with("application/json") {
            return Err(format!("error content-type is {ct:?}: {text}"));
        }
        let body: Value = serde_json::from_slice(&self.body)
            .map_err(|e| format!("error body is not JSON ({e}): {text}"))?;
        let obj = body
            .as_object()
            .ok_or_else(|| format!("error body is not an object: {text}"))?;
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        if keys != ["code", "message", "request_id"] {
            return Err(format!("error body keys are {keys:?}: {text}"));
        }
        if body["code"] != code {
            return Err(format!("expected code {code:?}: {text}"));
        }
        if body["message"].as_str().is_none_or(str::is_empty) {
            return Err(format!("error message missing: {text}"));
        }
        let header_id = self.header("x-request-id");
        let body_id = body["request_id"].as_str();
        if header_id.is_none() || header_id != body_id {
            return Err(format!(
                "request_id {body_id:?} differs from x-request-id {header_id:?}"
            ));
        }
        Ok(())
    }

    /// The `id` of every item of a JSON array body.
    pub fn ids(&self) -> Vec<String> {
        self.json()
            .as_array()
            .unwrap_or_else(|| panic!("expected a JSON array: {}", self.text()))
            .iter()
            .map(|item| item["id"].as_str().expect("id").to_string())
            .collect()
    }
}

/// Sends raw bytes to `addr` and parses an HTTP/1.1 reply (the request should ask for
/// `Connection: close`).
pub fn raw_http(addr: &str, request: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // The server may answer and stop reading before the whole request is sent.
    let _ = stream.write_all(request);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse_http_reply(&bytes)
}

/// Parses a raw HTTP/1.1 reply read off a socket.
pub fn raw_reply(bytes: &[u8]) -> Reply {
    parse_http_reply(bytes)
}

fn parse_http_reply(bytes: &[u8]) -> Reply {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).to_string();
    let mut body = bytes[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..end]).to_string();
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        data = &data[end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// A well-formed token for `tenant` (a UUID) that was never issued: the shape the
/// server parses (`pvt_<32 hex>_<43 base64url>`), with a random secret that starts with
/// `secret_prefix` (base64url characters only).
pub fn forged_token(tenant: &str, secret_prefix: &str) -> String {
    let hex: String = tenant.chars().filter(|c| *c != '-').collect();
    assert_eq!(hex.len(), 32, "tenant id is not a UUID");
    let random = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    // 42 free characters, then one whose low bits are zero, so the 43 characters decode
    // to exactly 32 bytes.
    let secret: String = secret_prefix
        .chars()
        .chain(random.chars())
        .take(42)
        .collect();
    format!("pvt_{hex}_{secret}A")
}

/// Writes `text` into a file in `dir`; returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).expect("create file");
    f.write_all(text.as_bytes()).expect("write file");
    path
}

/// How many mails the development outbox holds.
pub fn outbox_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Waits for a sign-in link beyond the first `seen` mails to land in the outbox and
/// returns its token (the body may be quoted-printable).
pub fn token_from_outbox(dir: &Path, seen: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        if files.len() > seen {
            let raw = std::fs::read_to_string(files.last().unwrap()).unwrap();
            let text = raw
                .replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "=");
            let start = text.find("pvm_").expect("a link token in the mail");
            return text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect();
        }
        assert!(Instant::now() < deadline, "no mail reached the outbox");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `phivault staff create` for a synthetic staff member; returns its output.
pub fn create_staff(site: &Site, email: &str, role: &str, password: &str) -> Output {
    site.command(&[
        "staff",
        "create",
        "--email",
        email,
        "--name",
        "Synthetic Staff",
        "--role",
        role,
    ])
    .env("PHIVAULT_STAFF_PASSWORD", password)
    .output()
    .expect("run phivault")
}

/// Creates staff members (`email`, `role`) at the command line with `password` and signs
/// each in: password, TOTP enrollment, then a code of the next 30-second step (the
/// enrollment's code is used up), one shared wait for all. Returns their access tokens,
/// in order.
pub async fn staff_tokens(
    site: &Site,
    server: &Server,
    members: &[(&str, &str)],
    password: &str,
) -> Vec<String> {
    let mut pending = Vec::new();
    for (email, role) in members {
        let out = create_staff(site, email, role, password);
        assert!(out.status.success(), "staff create {email} failed");
        let c = server
            .post_json(
                "/api/v1/staff/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await
            .expect(200)
            .json();
        let challenge = c["challenge"].as_str().unwrap().to_string();
        let e = server
            .post_json(
                "/api/v1/staff/auth/mfa/enroll",
                None,
                &json!({"challenge": challenge}),
            )
            .await
            .expect(200)
            .json();
        let uri = e["otpauth_uri"].as_str().unwrap().to_string();
        let code = phivault_domain::mfa::code_for_uri(&uri, chrono::Utc::now()).unwrap();
        server
            .post_json(
                "/api/v1/staff/auth/mfa/enroll/confirm",
                None,
                &json!({"challenge": challenge, "code": code}),
            )
            .await
            .expect(200);
        pending.push((challenge, uri));
    }
    let now = chrono::Utc::now().timestamp();
    let wait = 30 - now % 30;
    tokio::time::sleep(Duration::from_millis(wait as u64 * 1000 + 200)).await;
    let mut tokens = Vec::new();
    for (challenge, uri) in pending {
        let code = phivault_domain::mfa::code_for_uri(&uri, chrono::Utc::now()).unwrap();
        let r = server
            .post_json(
                "/api/v1/staff/auth/mfa/verify",
                None,
                &json!({"challenge": challenge, "code": code}),
            )
            .await;
        tokens.push(
            r.expect(201).json()["access_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    tokens
}
