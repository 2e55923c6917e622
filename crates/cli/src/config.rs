//! Configuration: defaults, then a TOML file, then `PHIVAULT_*` environment variables,
//! then command-line flags. Every setting is listed in the README.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use phivault_domain::readiness::ServiceUse;
use phivault_store::{ObjectStoreConfig, S3Config};
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data directory: SQLite database, local objects, development TLS pair.
    pub data_dir: PathBuf,
    /// Address and port to serve on.
    pub listen: SocketAddr,
    /// Database URL the server uses; SQLite in the data directory when unset.
    pub database_url: Option<String>,
    /// Database URL of the schema owner, for `phivault migrate` on PostgreSQL.
    pub migrate_database_url: Option<String>,
    /// PostgreSQL role the server connects as; `migrate` grants it its privileges.
    pub app_role: String,
    /// Most database connections.
    pub db_max_connections: u32,
    /// TLS.
    pub tls: TlsConfig,
    /// HTTP edge.
    pub http: HttpSection,
    /// Object storage.
    pub objects: ObjectsConfig,
    /// Logging.
    pub log: LogConfig,
    /// Key provider.
    pub keys: KeysConfig,
    /// Audit trail.
    pub audit: AuditSection,
    /// The URL users reach the server at, for links in mail; the served URL when unset.
    pub public_url: Option<String>,
    /// Outgoing mail (sign-in links).
    pub mail: MailSection,
    /// Throttling of the authentication endpoints.
    pub throttle: ThrottleSection,
    /// End-to-end sessions and guest devices.
    pub e2e: E2eSection,
    /// The scribe pipeline: transcription engine, note generator, worker.
    pub scribe: ScribeSection,
    /// Which registered vendor runs each outside service.
    pub vendors: VendorsSection,
}

/// `[vendors]`: the vendor (its key in the vendor registry, `phivault vendor`) that runs
/// each outside service. A service reached beyond this host must name its vendor; a
/// service named here is treated as the vendor's even on a loopback address (a local
/// tunnel to the vendor), and PHI reaches it only while the vendor's BAA is on file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct VendorsSection {
    /// Object storage (S3).
    pub object_storage: Option<String>,
    /// The key management service (AWS KMS).
    pub kms: Option<String>,
    /// The SMTP relay.
    pub smtp: Option<String>,
    /// The transcription engine.
    pub transcription: Option<String>,
    /// The note generator.
    pub note_generation: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./phivault-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8420)),
            database_url: None,
            migrate_database_url: None,
            app_role: "phivault_app".into(),
            db_max_connections: 10,
            tls: TlsConfig::default(),
            http: HttpSection::default(),
            objects: ObjectsConfig::default(),
            log: LogConfig::default(),
            keys: KeysConfig::default(),
            audit: AuditSection::default(),
            public_url: None,
            mail: MailSection::default(),
            throttle: ThrottleSection::default(),
            e2e: E2eSection::default(),
            scribe: ScribeSection::default(),
            vendors: VendorsSection::default(),
        }
    }
}

/// `[e2e]`: end-to-end sessions and guest devices.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct E2eSection {
    /// Sessions a guest device may join in its lifetime (1 to 1000000).
    pub device_trial_sessions: i64,
    /// How often the retention sweeper deletes utterances past their tenant's window,
    /// seconds (10 to 86400).
    pub sweep_interval_secs: u64,
}

impl Default for E2eSection {
    fn default() -> Self {
        E2eSection {
            device_trial_sessions: 20,
            sweep_interval_secs: 300,
        }
    }
}

/// `[scribe]`: the scribe pipeline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScribeSection {
    /// Transcription engine: `auto` (whisper when a model is configured or installed in
    /// the data directory, else pocketsphinx when installed), `whisper`, `pocketsphinx`,
    /// `command` or `openai-compatible` (a speech server's `/v1/audio/transcriptions`).
    pub engine: String,
    /// Whisper model directory (CTranslate2 format); when unset, the one model installed
    /// under `<data_dir>/models/whisper/` (`phivault models install-whisper`).
    pub whisper_model_dir: Option<PathBuf>,
    /// CPU threads one Whisper transcription uses (1 to 64).
    pub whisper_threads: usize,
    /// Model directory of pocketsphinx (Debian's en-us model when unset).
    pub pocketsphinx_model_dir: Option<PathBuf>,
    /// The program the `command` engine runs (absolute path).
    pub command_program: Option<PathBuf>,
    /// Its arguments; `{input}` and `{output_dir}` are replaced.
    pub command_args: Vec<String>,
    /// What it prints: `text`, `segments-json` or `whisper-cpp-json`.
    pub command_output: String,
    /// API root (up to and including `/v1`) of the `openai-compatible` transcription
    /// engine: on loopback, or run by the vendor named in `[vendors] transcription`.
    pub transcription_openai_base_url: Option<String>,
    /// The model name that server knows.
    pub transcription_openai_model: Option<String>,
    /// Its bearer token, if it wants one (prefer `PHIVAULT_TRANSCRIPTION_OPENAI_API_KEY`).
    pub transcription_openai_api_key: Option<String>,
    /// Note generator: `rules` or `openai-compatible`.
    pub note_generator: String,
    /// Base URL of the OpenAI-compatible endpoint: on loopback, or run by the vendor
    /// named in `[vendors] note_generation`.
    pub openai_base_url: Option<String>,
    /// Its model name.
    pub openai_model: Option<String>,
    /// Where private work directories for decrypted audio are made (tmpfs or an
    /// encrypted volume is best); the system temporary directory when unset.
    pub work_dir: Option<PathBuf>,
    /// Run a pipeline worker inside `phivault serve` (else run `phivault worker`).
    pub in_process_worker: bool,
    /// Longest recording transcribed, seconds.
    pub max_duration_secs: u64,
    /// How long a worker's claim on a job lasts without a heartbeat, seconds.
    pub lease_secs: u64,
    /// How often an idle worker looks for jobs, seconds.
    pub poll_secs: u64,
}

impl Default for ScribeSection {
    fn default() -> Self {
        ScribeSection {
            engine: "auto".into(),
            whisper_model_dir: None,
            whisper_threads: 1,
            pocketsphinx_model_dir: None,
            command_program: None,
            command_args: Vec::new(),
            command_output: "text".into(),
            transcription_openai_base_url: None,
            transcription_openai_model: None,
            transcription_openai_api_key: None,
            note_generator: "rules".into(),
            openai_base_url: None,
            openai_model: None,
            work_dir: None,
            in_process_worker: true,
            max_duration_secs: 4 * 3600,
            lease_secs: 120,
            poll_secs: 5,
        }
    }
}

/// `[mail]`: SMTP when `smtp_host` is set, else `.eml` files in an outbox directory (the
/// development default).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailSection {
    /// Sender address, e.g. `phivault <no-reply@clinic.example>`.
    pub from: String,
    /// SMTP relay host; unset means the outbox.
    pub smtp_host: Option<String>,
    /// SMTP port; 587 for starttls, 465 for tls, 25 for none when unset.
    pub smtp_port: Option<u16>,
    /// `starttls` (default), `tls`, or `none` (loopback relays only).
    pub smtp_tls: phivault_mail::TlsMode,
    /// SMTP user name.
    pub smtp_username: Option<String>,
    /// SMTP password (prefer `PHIVAULT_SMTP_PASSWORD`).
    pub smtp_password: Option<String>,
    /// The outbox directory; `<data_dir>/outbox` when unset.
    pub outbox_dir: Option<PathBuf>,
    /// How long a sign-in link works, seconds (60 to 86400).
    pub link_lifetime_secs: u64,
}

impl Default for MailSection {
    fn default() -> Self {
        MailSection {
            from: "phivault <no-reply@phivault.invalid>".into(),
            smtp_host: None,
            smtp_port: None,
            smtp_tls: phivault_mail::TlsMode::Starttls,
            smtp_username: None,
            smtp_password: None,
            outbox_dir: None,
            link_lifetime_secs: 900,
        }
    }
}

/// `[audit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Years audit events are kept; never below six (refused at start-up).
    pub retention_years: u32,
    /// Sign a checkpoint every this many events of a chain...
    pub checkpoint_every: u64,
    /// ...or every this many seconds, if the chain has new events.
    pub checkpoint_interval_secs: u64,
    /// Where checkpoints are copied outside the database: a directory, or
    /// `s3://bucket/prefix` (endpoint and credentials from `[objects.s3]`). Default:
    /// `audit-witness` in the data directory.
    pub witness: Option<String>,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            retention_years: phivault_audit::MIN_RETENTION_YEARS,
            checkpoint_every: 1000,
            checkpoint_interval_secs: 60,
            witness: None,
        }
    }
}

/// `[tls]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// A TLS-terminating proxy stands in front: plain HTTP is allowed on any address and
    /// HSTS is sent.
    pub behind_proxy: bool,
}

/// `[http]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Largest request body, bytes.
    pub body_limit_bytes: usize,
    /// Request timeout, seconds.
    pub request_timeout_secs: u64,
    /// Largest recording upload, bytes (the only route with a larger body).
    pub upload_limit_bytes: u64,
    /// Longest a recording upload may take, seconds.
    pub upload_timeout_secs: u64,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            upload_limit_bytes: 2 * 1024 * 1024 * 1024,
            upload_timeout_secs: 3600,
        }
    }
}

/// `[throttle]`: limits of the authentication endpoints, counted in memory by each
/// server process.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSection {
    /// The window every limit is counted over, seconds.
    pub window_secs: u64,
    /// Requests per client address to each sign-in endpoint per window.
    pub per_ip: u32,
    /// Requests per account (tenant and address for sign-in links, the challenge's user
    /// for the second factor) to each endpoint per window.
    pub per_account: u32,
    /// Failed bearer authentications per client address per window.
    pub bearer_failures_per_ip: u32,
}

impl Default for ThrottleSection {
    fn default() -> Self {
        let d = phivault_http::ThrottleConfig::default();
        ThrottleSection {
            window_secs: d.window.as_secs(),
            per_ip: d.per_ip,
            per_account: d.per_account,
            bearer_failures_per_ip: d.bearer_failures_per_ip,
        }
    }
}

/// `[objects]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectsConfig {
    /// `local` (default) or `s3`.
    pub backend: ObjectBackend,
    /// Directory of the local backend; `<data_dir>/objects` when unset.
    pub local_dir: Option<PathBuf>,
    /// `[objects.s3]`
    pub s3: Option<S3Config>,
}

/// Object storage backends.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ObjectBackend {
    /// A local directory.
    #[default]
    Local,
    /// An S3-compatible bucket.
    S3,
}

/// `[keys]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// `local` (default), `aws-kms` or `pkcs11`.
    pub provider: KeyProviderKind,
    /// The local keyring file; `<data_dir>/keyring.json` when unset.
    pub keyring: Option<PathBuf>,
    /// A file holding the local keyring's passphrase.
    pub passphrase_file: Option<PathBuf>,
    /// `[keys.aws_kms]`
    pub aws_kms: Option<phivault_crypto::aws_kms::AwsKmsConfig>,
    /// `[keys.pkcs11]`
    pub pkcs11: Option<phivault_crypto::pkcs11::Pkcs11Config>,
}

/// Key providers.
#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KeyProviderKind {
    /// A keyring file sealed with a passphrase.
    #[default]
    Local,
    /// AWS KMS (or a KMS-compatible service).
    AwsKms,
    /// A PKCS#11 hardware security module.
    Pkcs11,
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `json` (default) or `text`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `phivault=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

/// Log line formats.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Command-line values that override the file and the environment.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--data`
    pub data_dir: Option<PathBuf>,
    /// `--database-url`
    pub database_url: Option<String>,
    /// `--listen`
    pub listen: Option<SocketAddr>,
}

impl Config {
    /// Loads defaults, the file (if any), the environment, then the overrides.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Config> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read configuration file {}", path.display())
                })?;
                toml::from_str(&text)
                    .with_context(|| format!("invalid configuration file {}", path.display()))?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        if let Some(d) = overrides.data_dir {
            config.data_dir = d;
        }
        if let Some(u) = overrides.database_url {
            config.database_url = Some(u);
        }
        if let Some(l) = overrides.listen {
            config.listen = l;
        }
        config.database_url = config.database_url.filter(|u| !u.trim().is_empty());
        config.migrate_database_url = config.migrate_database_url.filter(|u| !u.trim().is_empty());
        Ok(config)
    }

    /// Applies `PHIVAULT_*` variables (those not handled by clap's flags).
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn parse<T: std::str::FromStr>(name: &str, v: &str) -> Result<T> {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{name} has an invalid value"))
        }
        fn flag(name: &str, v: &str) -> Result<bool> {
            match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => bail!("{name} must be true or false"),
            }
        }
        if let Some(v) = get("PHIVAULT_MIGRATE_DATABASE_URL") {
            self.migrate_database_url = Some(v);
        }
        if let Some(v) = get("PHIVAULT_APP_ROLE") {
            self.app_role = v;
        }
        if let Some(v) = get("PHIVAULT_DB_MAX_CONNECTIONS") {
            self.db_max_connections = parse("PHIVAULT_DB_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_TLS_CERT") {
            self.tls.cert = Some(v.into());
        }
        if let Some(v) = get("PHIVAULT_TLS_KEY") {
            self.tls.key = Some(v.into());
        }
        if let Some(v) = get("PHIVAULT_BEHIND_TLS_PROXY") {
            self.tls.behind_proxy = flag("PHIVAULT_BEHIND_TLS_PROXY", &v)?;
        }
        if let Some(v) = get("PHIVAULT_BODY_LIMIT_BYTES") {
            self.http.body_limit_bytes = parse("PHIVAULT_BODY_LIMIT_BYTES", &v)?;
        }
        if let Some(v) = get("PHIVAULT_REQUEST_TIMEOUT_SECS") {
            self.http.request_timeout_secs = parse("PHIVAULT_REQUEST_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_UPLOAD_LIMIT_BYTES") {
            self.http.upload_limit_bytes = parse("PHIVAULT_UPLOAD_LIMIT_BYTES", &v)?;
        }
        if let Some(v) = get("PHIVAULT_UPLOAD_TIMEOUT_SECS") {
            self.http.upload_timeout_secs = parse("PHIVAULT_UPLOAD_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_THROTTLE_WINDOW_SECS") {
            self.throttle.window_secs = parse("PHIVAULT_THROTTLE_WINDOW_SECS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_E2E_DEVICE_TRIAL_SESSIONS") {
            self.e2e.device_trial_sessions = parse("PHIVAULT_E2E_DEVICE_TRIAL_SESSIONS", &v)?;
        }
        for (name, slot) in [
            (
                "PHIVAULT_VENDOR_OBJECT_STORAGE",
                &mut self.vendors.object_storage,
            ),
            ("PHIVAULT_VENDOR_KMS", &mut self.vendors.kms),
            ("PHIVAULT_VENDOR_SMTP", &mut self.vendors.smtp),
            (
                "PHIVAULT_VENDOR_TRANSCRIPTION",
                &mut self.vendors.transcription,
            ),
            (
                "PHIVAULT_VENDOR_NOTE_GENERATION",
                &mut self.vendors.note_generation,
            ),
        ] {
            if let Some(v) = get(name) {
                *slot = Some(v);
            }
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_ENGINE") {
            self.scribe.engine = v;
        }
        if let Some(v) = get("PHIVAULT_WHISPER_MODEL") {
            self.scribe.whisper_model_dir = Some(v.into());
        }
        if let Some(v) = get("PHIVAULT_WHISPER_THREADS") {
            self.scribe.whisper_threads = parse("PHIVAULT_WHISPER_THREADS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_COMMAND_PROGRAM") {
            self.scribe.command_program = Some(v.into());
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_COMMAND_ARGS") {
            self.scribe.command_args = serde_json::from_str(&v).map_err(|_| {
                anyhow::anyhow!("PHIVAULT_SCRIBE_COMMAND_ARGS must be a JSON array of strings")
            })?;
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_COMMAND_OUTPUT") {
            self.scribe.command_output = v;
        }
        if let Some(v) = get("PHIVAULT_TRANSCRIPTION_OPENAI_BASE_URL") {
            self.scribe.transcription_openai_base_url = Some(v);
        }
        if let Some(v) = get("PHIVAULT_TRANSCRIPTION_OPENAI_MODEL") {
            self.scribe.transcription_openai_model = Some(v);
        }
        if let Some(v) = get("PHIVAULT_TRANSCRIPTION_OPENAI_API_KEY") {
            self.scribe.transcription_openai_api_key = Some(v);
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_NOTE_GENERATOR") {
            self.scribe.note_generator = v;
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_OPENAI_BASE_URL") {
            self.scribe.openai_base_url = Some(v);
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_OPENAI_MODEL") {
            self.scribe.openai_model = Some(v);
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_WORK_DIR") {
            self.scribe.work_dir = Some(v.into());
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_IN_PROCESS_WORKER") {
            self.scribe.in_process_worker = flag("PHIVAULT_SCRIBE_IN_PROCESS_WORKER", &v)?;
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_LEASE_SECS") {
            self.scribe.lease_secs = parse("PHIVAULT_SCRIBE_LEASE_SECS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_SCRIBE_POLL_SECS") {
            self.scribe.poll_secs = parse("PHIVAULT_SCRIBE_POLL_SECS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_E2E_SWEEP_INTERVAL_SECS") {
            self.e2e.sweep_interval_secs = parse("PHIVAULT_E2E_SWEEP_INTERVAL_SECS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_THROTTLE_PER_IP") {
            self.throttle.per_ip = parse("PHIVAULT_THROTTLE_PER_IP", &v)?;
        }
        if let Some(v) = get("PHIVAULT_THROTTLE_PER_ACCOUNT") {
            self.throttle.per_account = parse("PHIVAULT_THROTTLE_PER_ACCOUNT", &v)?;
        }
        if let Some(v) = get("PHIVAULT_THROTTLE_BEARER_FAILURES_PER_IP") {
            self.throttle.bearer_failures_per_ip =
                parse("PHIVAULT_THROTTLE_BEARER_FAILURES_PER_IP", &v)?;
        }
        if let Some(v) = get("PHIVAULT_OBJECTS") {
            self.objects.backend = match v.as_str() {
                "local" => ObjectBackend::Local,
                "s3" => ObjectBackend::S3,
                _ => bail!("PHIVAULT_OBJECTS must be local or s3"),
            };
        }
        if let Some(v) = get("PHIVAULT_OBJECTS_DIR") {
            self.objects.local_dir = Some(v.into());
        }
        let s3_vars = [
            "PHIVAULT_S3_BUCKET",
            "PHIVAULT_S3_REGION",
            "PHIVAULT_S3_ENDPOINT",
            "PHIVAULT_S3_ACCESS_KEY_ID",
            "PHIVAULT_S3_SECRET_ACCESS_KEY",
            "PHIVAULT_S3_ALLOW_HTTP",
        ];
        if s3_vars.iter().any(|n| get(n).is_some()) {
            let s3 = self.objects.s3.get_or_insert_with(|| S3Config {
                region: "us-east-1".into(),
                ..S3Config::default()
            });
            if let Some(v) = get("PHIVAULT_S3_BUCKET") {
                s3.bucket = v;
            }
            if let Some(v) = get("PHIVAULT_S3_REGION") {
                s3.region = v;
            }
            if let Some(v) = get("PHIVAULT_S3_ENDPOINT") {
                s3.endpoint = Some(v);
            }
            if let Some(v) = get("PHIVAULT_S3_ACCESS_KEY_ID") {
                s3.access_key_id = Some(v);
            }
            if let Some(v) = get("PHIVAULT_S3_SECRET_ACCESS_KEY") {
                s3.secret_access_key = Some(v);
            }
            if let Some(v) = get("PHIVAULT_S3_ALLOW_HTTP") {
                s3.allow_http = flag("PHIVAULT_S3_ALLOW_HTTP", &v)?;
            }
        }
        if let Some(v) = get("PHIVAULT_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                _ => bail!("PHIVAULT_LOG_FORMAT must be json or text"),
            };
        }
        if let Some(v) = get("PHIVAULT_LOG") {
            self.log.level = v;
        }
        if let Some(v) = get("PHIVAULT_AUDIT_RETENTION_YEARS") {
            self.audit.retention_years = parse("PHIVAULT_AUDIT_RETENTION_YEARS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_AUDIT_CHECKPOINT_EVERY") {
            self.audit.checkpoint_every = parse("PHIVAULT_AUDIT_CHECKPOINT_EVERY", &v)?;
        }
        if let Some(v) = get("PHIVAULT_AUDIT_CHECKPOINT_INTERVAL_SECS") {
            self.audit.checkpoint_interval_secs =
                parse("PHIVAULT_AUDIT_CHECKPOINT_INTERVAL_SECS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_AUDIT_WITNESS") {
            self.audit.witness = Some(v);
        }
        if let Some(v) = get("PHIVAULT_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = get("PHIVAULT_SMTP_HOST") {
            self.mail.smtp_host = Some(v);
        }
        if let Some(v) = get("PHIVAULT_SMTP_PORT") {
            self.mail.smtp_port = Some(parse("PHIVAULT_SMTP_PORT", &v)?);
        }
        if let Some(v) = get("PHIVAULT_SMTP_FROM") {
            self.mail.from = v;
        }
        if let Some(v) = get("PHIVAULT_SMTP_USERNAME") {
            self.mail.smtp_username = Some(v);
        }
        if let Some(v) = get("PHIVAULT_SMTP_PASSWORD") {
            self.mail.smtp_password = Some(v);
        }
        if let Some(v) = get("PHIVAULT_SMTP_TLS") {
            self.mail.smtp_tls = v
                .parse()
                .map_err(|_| anyhow::anyhow!("PHIVAULT_SMTP_TLS must be none, starttls or tls"))?;
        }
        if let Some(v) = get("PHIVAULT_MAIL_OUTBOX") {
            self.mail.outbox_dir = Some(v.into());
        }
        if let Some(v) = get("PHIVAULT_MAGIC_LINK_LIFETIME_SECS") {
            self.mail.link_lifetime_secs = parse("PHIVAULT_MAGIC_LINK_LIFETIME_SECS", &v)?;
        }
        if let Some(v) = get("PHIVAULT_KEY_PROVIDER") {
            self.keys.provider = match v.as_str() {
                "local" => KeyProviderKind::Local,
                "aws-kms" => KeyProviderKind::AwsKms,
                "pkcs11" => KeyProviderKind::Pkcs11,
                _ => bail!("PHIVAULT_KEY_PROVIDER must be local, aws-kms or pkcs11"),
            };
        }
        if let Some(v) = get("PHIVAULT_KEYRING") {
            self.keys.keyring = Some(v.into());
        }
        if let Some(v) = get("PHIVAULT_KEYRING_PASSPHRASE_FILE") {
            self.keys.passphrase_file = Some(v.into());
        }
        if let Some(region) = get("PHIVAULT_KMS_REGION") {
            self.keys.aws_kms = Some(phivault_crypto::aws_kms::AwsKmsConfig {
                region,
                alias_prefix: get("PHIVAULT_KMS_ALIAS_PREFIX"),
                endpoint: get("PHIVAULT_KMS_ENDPOINT"),
                access_key_id: None,
                secret_access_key: None,
            });
        }
        if let Some(module) = get("PHIVAULT_PKCS11_MODULE") {
            self.keys.pkcs11 = Some(phivault_crypto::pkcs11::Pkcs11Config {
                module: module.into(),
                token_label: get("PHIVAULT_PKCS11_TOKEN").unwrap_or_default(),
                pin: get("PHIVAULT_PKCS11_PIN").unwrap_or_default(),
                key_label: get("PHIVAULT_PKCS11_KEY_LABEL")
                    .unwrap_or_else(|| "phivault-root".into()),
            });
        }
        Ok(())
    }

    /// The SQLite file used when no database URL is configured.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("phivault.db")
    }

    /// The object storage configuration, resolved against the data directory.
    pub fn object_store(&self) -> Result<ObjectStoreConfig> {
        match self.objects.backend {
            ObjectBackend::Local => Ok(ObjectStoreConfig::Local {
                root: self
                    .objects
                    .local_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("objects")),
            }),
            ObjectBackend::S3 => match &self.objects.s3 {
                Some(s3) if !s3.bucket.is_empty() => Ok(ObjectStoreConfig::S3(s3.clone())),
                _ => bail!(
                    "objects.backend is s3 but objects.s3.bucket (PHIVAULT_S3_BUCKET) is not set"
                ),
            },
        }
    }

    /// The outside services this configuration calls, each with whether it is reached
    /// beyond this host and the vendor named for it, for the readiness gates.
    ///
    /// # Errors
    /// A vendor key that is not a valid key.
    pub fn services(&self) -> Result<Vec<ServiceUse>> {
        let v = &self.vendors;
        for key in [
            &v.object_storage,
            &v.kms,
            &v.smtp,
            &v.transcription,
            &v.note_generation,
        ]
        .into_iter()
        .flatten()
        {
            phivault_domain::vendors::check_key(key).map_err(|_| {
                anyhow::anyhow!("[vendors]: {key:?} is not a vendor key (a-z, 0-9 and -)")
            })?;
        }
        let service =
            |name: &str, beyond_host: bool, vendor: &Option<String>, always_phi: bool| ServiceUse {
                service: name.into(),
                remote: beyond_host || vendor.is_some(),
                vendor: vendor.clone(),
                always_phi,
            };
        let mut out = vec![
            service(
                "transcription",
                self.scribe.engine == "openai-compatible"
                    && !self
                        .scribe
                        .transcription_openai_base_url
                        .as_deref()
                        .is_some_and(url_is_loopback),
                &v.transcription,
                true,
            ),
            service(
                "note_generation",
                self.scribe.note_generator == "openai-compatible"
                    && !self
                        .scribe
                        .openai_base_url
                        .as_deref()
                        .is_some_and(url_is_loopback),
                &v.note_generation,
                true,
            ),
        ];
        if self.objects.backend == ObjectBackend::S3 {
            let endpoint = self.objects.s3.as_ref().and_then(|s| s.endpoint.as_deref());
            out.push(service(
                "object_storage",
                !endpoint.is_some_and(url_is_loopback),
                &v.object_storage,
                false,
            ));
        }
        if self.keys.provider == KeyProviderKind::AwsKms {
            let endpoint = self
                .keys
                .aws_kms
                .as_ref()
                .and_then(|k| k.endpoint.as_deref());
            out.push(service(
                "kms",
                !endpoint.is_some_and(url_is_loopback),
                &v.kms,
                false,
            ));
        }
        if let Some(host) = &self.mail.smtp_host {
            out.push(service("smtp", !host_is_loopback(host), &v.smtp, false));
        }
        Ok(out)
    }

    /// What the readiness gates need from the configuration.
    pub fn readiness(&self) -> Result<phivault_http::ReadinessConfig> {
        Ok(phivault_http::ReadinessConfig {
            object_backend: match self.objects.backend {
                ObjectBackend::Local => "local".into(),
                ObjectBackend::S3 => "s3".into(),
            },
            // The S3 client sets no server-side encryption and cannot read the bucket's
            // default; phivault's own envelope is what the gate relies on.
            object_backend_encryption: None,
            tls_served: self.tls.cert.is_some() && self.tls.key.is_some(),
            tls_proxy_declared: self.tls.behind_proxy,
            services: self.services()?,
        })
    }

    /// The local keyring file.
    pub fn keyring_path(&self) -> PathBuf {
        self.keys
            .keyring
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keyring.json"))
    }

    /// The audit settings, checked: retention below six years is refused, as is a
    /// checkpoint cadence of zero.
    pub fn audit(&self) -> Result<phivault_audit::AuditConfig> {
        let a = &self.audit;
        if a.retention_years < phivault_audit::MIN_RETENTION_YEARS {
            bail!(
                "audit.retention_years is {}; HIPAA requires audit records be kept at least {} years, so phivault refuses a lower setting",
                a.retention_years,
                phivault_audit::MIN_RETENTION_YEARS
            );
        }
        if a.checkpoint_every == 0 || a.checkpoint_interval_secs == 0 {
            bail!("audit.checkpoint_every and audit.checkpoint_interval_secs must be at least 1");
        }
        Ok(phivault_audit::AuditConfig {
            checkpoint_every: a.checkpoint_every,
            checkpoint_interval: Duration::from_secs(a.checkpoint_interval_secs),
            witness: Some(self.witness()?),
            ..phivault_audit::AuditConfig::default()
        })
    }

    /// The audit witness location.
    pub fn witness(&self) -> Result<phivault_audit::witness::Witness> {
        let (store, prefix) = match self.audit.witness.as_deref() {
            Some(url) if url.starts_with("s3://") => {
                let rest = &url["s3://".len()..];
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    bail!("audit.witness {url:?} names no bucket");
                }
                let mut s3 = self.objects.s3.clone().unwrap_or_else(|| S3Config {
                    region: "us-east-1".into(),
                    ..S3Config::default()
                });
                s3.bucket = bucket.to_string();
                (ObjectStoreConfig::S3(s3), prefix.to_string())
            }
            Some(dir) => (
                ObjectStoreConfig::Local {
                    root: PathBuf::from(dir),
                },
                String::new(),
            ),
            None => (
                ObjectStoreConfig::Local {
                    root: self.data_dir.join("audit-witness"),
                },
                String::new(),
            ),
        };
        phivault_audit::witness::Witness::open(&store, &prefix)
            .context("cannot open the audit witness location")
    }

    /// The mailer: SMTP when `mail.smtp_host` is set, else the outbox directory.
    pub fn mailer(&self) -> Result<phivault_mail::Mailer> {
        let m = &self.mail;
        match m
            .smtp_host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
        {
            Some(host) => phivault_mail::Mailer::smtp(
                phivault_mail::SmtpSettings {
                    host: host.to_string(),
                    port: m.smtp_port,
                    tls: m.smtp_tls,
                    username: m.smtp_username.clone().filter(|u| !u.is_empty()),
                    password: m
                        .smtp_password
                        .clone()
                        .filter(|p| !p.is_empty())
                        .map(zeroize::Zeroizing::new),
                },
                &m.from,
            )
            .context("cannot set up SMTP mail"),
            None => phivault_mail::Mailer::outbox(self.outbox_dir(), &m.from)
                .context("cannot set up the mail outbox"),
        }
    }

    /// The outbox directory (used when no SMTP host is configured).
    pub fn outbox_dir(&self) -> PathBuf {
        self.mail
            .outbox_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("outbox"))
    }

    /// How long a sign-in link works: 60 seconds to 24 hours.
    pub fn link_lifetime(&self) -> Result<chrono::Duration> {
        let secs = self.mail.link_lifetime_secs;
        if !(60..=86_400).contains(&secs) {
            bail!("mail.link_lifetime_secs must be between 60 and 86400 (it is {secs})");
        }
        Ok(chrono::Duration::seconds(secs as i64))
    }

    /// The public URL links point to: `public_url`, checked, or `served` when unset.
    pub fn public_url_or(&self, served: &str) -> Result<String> {
        let Some(url) = self.public_url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(served.trim_end_matches('/').to_string());
        };
        let parsed = reqwest::Url::parse(url.trim())
            .map_err(|_| anyhow::anyhow!("public_url (PHIVAULT_PUBLIC_URL) is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            bail!(
                "public_url (PHIVAULT_PUBLIC_URL) must be an http(s) URL without query or fragment"
            );
        }
        Ok(parsed.as_str().trim_end_matches('/').to_string())
    }

    /// The throttling limits; every number must be at least 1.
    pub fn throttle(&self) -> Result<phivault_http::ThrottleConfig> {
        let t = &self.throttle;
        if t.window_secs == 0 || t.window_secs > 86_400 {
            bail!("throttle.window_secs (PHIVAULT_THROTTLE_WINDOW_SECS) must be 1 to 86400");
        }
        for (name, v) in [
            ("throttle.per_ip (PHIVAULT_THROTTLE_PER_IP)", t.per_ip),
            (
                "throttle.per_account (PHIVAULT_THROTTLE_PER_ACCOUNT)",
                t.per_account,
            ),
            (
                "throttle.bearer_failures_per_ip (PHIVAULT_THROTTLE_BEARER_FAILURES_PER_IP)",
                t.bearer_failures_per_ip,
            ),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        Ok(phivault_http::ThrottleConfig {
            window: Duration::from_secs(t.window_secs),
            per_ip: t.per_ip,
            per_account: t.per_account,
            bearer_failures_per_ip: t.bearer_failures_per_ip,
        })
    }

    /// The end-to-end settings, checked.
    pub fn e2e(&self) -> Result<(phivault_http::E2eSettings, Duration)> {
        let e = &self.e2e;
        if !(1..=1_000_000).contains(&e.device_trial_sessions) {
            bail!(
                "e2e.device_trial_sessions (PHIVAULT_E2E_DEVICE_TRIAL_SESSIONS) must be 1 to 1000000"
            );
        }
        if !(10..=86_400).contains(&e.sweep_interval_secs) {
            bail!("e2e.sweep_interval_secs (PHIVAULT_E2E_SWEEP_INTERVAL_SECS) must be 10 to 86400");
        }
        Ok((
            phivault_http::E2eSettings {
                device_trial_sessions: e.device_trial_sessions,
            },
            Duration::from_secs(e.sweep_interval_secs),
        ))
    }

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.http.request_timeout_secs.max(1))
    }
}

/// Whether a host name or address is this host's loopback.
pub fn host_is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a URL's host is this host's loopback.
pub fn url_is_loopback(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(host_is_loopback))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_then_flags() {
        let mut c: Config = toml::from_str(
            "listen = \"127.0.0.1:9000\"\napp_role = \"from_file\"\n[http]\nbody_limit_bytes = 10\n[tls]\nbehind_proxy = true\n",
        )
        .unwrap();
        assert_eq!(c.app_role, "from_file");
        c.apply_env(|n| match n {
            "PHIVAULT_APP_ROLE" => Some("from_env".into()),
            "PHIVAULT_BEHIND_TLS_PROXY" => Some("false".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.app_role, "from_env");
        assert!(!c.tls.behind_proxy);
        assert_eq!(c.http.body_limit_bytes, 10);
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn mail_settings() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let outbox = c.mailer().unwrap();
        assert_eq!(
            outbox.outbox_dir(),
            Some(dir.path().join("outbox").as_path())
        );
        assert_eq!(c.link_lifetime().unwrap(), chrono::Duration::minutes(15));
        assert_eq!(
            c.public_url_or("http://127.0.0.1:1234/").unwrap(),
            "http://127.0.0.1:1234"
        );
        c.apply_env(|n| match n {
            "PHIVAULT_SMTP_HOST" => Some("127.0.0.1".into()),
            "PHIVAULT_SMTP_PORT" => Some("2525".into()),
            "PHIVAULT_SMTP_TLS" => Some("none".into()),
            "PHIVAULT_SMTP_FROM" => Some("phivault <links@example.test>".into()),
            "PHIVAULT_PUBLIC_URL" => Some("https://phivault.example.test/app/".into()),
            "PHIVAULT_MAGIC_LINK_LIFETIME_SECS" => Some("600".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.mailer().unwrap().describe(),
            "smtp://127.0.0.1:2525 (tls: none)"
        );
        assert_eq!(c.link_lifetime().unwrap(), chrono::Duration::minutes(10));
        assert_eq!(
            c.public_url_or("http://ignored").unwrap(),
            "https://phivault.example.test/app"
        );
        // Plaintext SMTP to a remote relay, bad modes, lifetimes and URLs are refused.
        c.mail.smtp_host = Some("mail.example.test".into());
        assert!(c.mailer().is_err());
        assert!(
            c.apply_env(|n| (n == "PHIVAULT_SMTP_TLS").then(|| "ssl".into()))
                .is_err()
        );
        c.mail.link_lifetime_secs = 10;
        assert!(c.link_lifetime().is_err());
        for bad in [
            "ftp://x.example.test",
            "not a url",
            "https://x.example.test/?a=1",
        ] {
            c.public_url = Some(bad.into());
            assert!(c.public_url_or("http://127.0.0.1:1").is_err(), "{bad}");
        }
        let from_file: Config =
            toml::from_str("[mail]\nsmtp_host = \"127.0.0.1\"\nsmtp_tls = \"tls\"\n").unwrap();
        assert_eq!(from_file.mail.smtp_tls, phivault_mail::TlsMode::Tls);
        assert!(toml::from_str::<Config>("[mail]\nsmtp_tls = \"ssl\"\n").is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("listen_port = 1").is_err());
        let mut c = Config::default();
        assert!(
            c.apply_env(|n| (n == "PHIVAULT_BEHIND_TLS_PROXY").then(|| "maybe".into()))
                .is_err()
        );
        assert!(
            c.apply_env(|n| (n == "PHIVAULT_OBJECTS").then(|| "ftp".into()))
                .is_err()
        );
    }
}
