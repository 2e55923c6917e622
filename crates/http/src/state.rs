use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use phivault_audit::Auditor;
use phivault_crypto::keys::KeyService;
use phivault_crypto::provider::KeyProvider;
use phivault_store::{Db, ObjectStorage};

/// Turns a passphrase into an unsealed key provider.
pub type Unsealer =
    Arc<dyn Fn(&[u8]) -> Result<Arc<dyn KeyProvider>, phivault_crypto::CryptoError> + Send + Sync>;

/// Settings of the HTTP edge.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Longest a request may take before it is answered 408.
    pub request_timeout: Duration,
    /// Send `Strict-Transport-Security` (TLS served here or by a declared proxy).
    pub hsts: bool,
    /// Largest recording upload, in bytes.
    pub upload_limit: u64,
    /// Longest a recording upload may take.
    pub upload_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            hsts: false,
            upload_limit: 2 * 1024 * 1024 * 1024,
            upload_timeout: Duration::from_secs(3600),
        }
    }
}

/// Sign-in link jobs (lookup, token, audit event, mail) that may run at once; more
/// requests are answered 429 until some finish.
const MAIL_JOBS: usize = 64;

/// How sign-in links are made.
#[derive(Clone, Debug)]
pub struct MagicLinkSettings {
    /// The base URL users open (`<public_url>/login?token=...`), without a trailing `/`.
    pub public_url: String,
    /// How long a link works (15 minutes by default).
    pub lifetime: chrono::Duration,
}

impl Default for MagicLinkSettings {
    fn default() -> Self {
        MagicLinkSettings {
            public_url: "http://127.0.0.1:8420".into(),
            lifetime: phivault_domain::magic_links::DEFAULT_LIFETIME,
        }
    }
}

/// Settings of end-to-end sessions and guest devices.
#[derive(Clone, Debug)]
pub struct E2eSettings {
    /// Sessions a guest device may join in its lifetime.
    pub device_trial_sessions: i64,
}

impl Default for E2eSettings {
    fn default() -> Self {
        E2eSettings {
            device_trial_sessions: 20,
        }
    }
}

/// Wakes the live streams of a session when an utterance is stored or the session ends
/// (in this process; streams also poll, for utterances stored by another process).
#[derive(Clone)]
pub(crate) struct E2eHub(tokio::sync::broadcast::Sender<uuid::Uuid>);

impl E2eHub {
    fn new() -> Self {
        E2eHub(tokio::sync::broadcast::channel(1024).0)
    }

    /// Tells the streams of `session` to look again.
    pub(crate) fn wake(&self, session: uuid::Uuid) {
        // No receiver is not an error: nobody is streaming.
        let _ = self.0.send(session);
    }

    /// A receiver of wake-ups.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<uuid::Uuid> {
        self.0.subscribe()
    }
}

/// The transcription engine a process's worker runs, as `/readyz` reports it.
#[derive(Clone, Debug)]
pub struct TranscriptionInfo {
    /// Engine name, e.g. `whisper` or `pocketsphinx`.
    pub engine: String,
    /// Its model, e.g. `tiny.en sha256:…`.
    pub model: String,
}

/// What every handler shares, built once at start-up.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Object storage.
    pub objects: ObjectStorage,
    /// The key hierarchy; PHI routes answer 503 `sealed` while it is sealed.
    pub keys: Arc<KeyService>,
    /// Turns the local keyring's passphrase into a provider (`None` for providers that
    /// are not unsealed by passphrase).
    pub unsealer: Option<Unsealer>,
    /// One unseal attempt at a time, so passphrase guessing is as slow as the KDF allows.
    pub(crate) unseal_lock: Arc<tokio::sync::Mutex<()>>,
    /// Edge settings.
    pub http: HttpConfig,
    /// The audit writer; PHI routes refuse to answer if it cannot write.
    pub auditor: Auditor,
    /// Outgoing mail (sign-in links); `None` until [`AppState::with_mailer`], and then
    /// `POST /api/v1/auth/magic-link` answers 503 `mail_unavailable`.
    pub mailer: Option<Arc<phivault_mail::Mailer>>,
    /// How sign-in links are built and how long they last.
    pub magic_link: MagicLinkSettings,
    /// Bounds the sign-in link jobs running in the background.
    pub(crate) mail_jobs: Arc<tokio::sync::Semaphore>,
    /// Throttles the authentication endpoints (in memory, per process).
    pub throttle: Arc<crate::throttle::Throttle>,
    /// Signs and verifies session access tokens.
    pub sessions: Arc<phivault_access::session_token::SessionKeys>,
    /// End-to-end session settings.
    pub e2e: E2eSettings,
    pub(crate) e2e_hub: E2eHub,
    pub(crate) e2e_writer: crate::e2e_writer::E2eWriter,
    /// Wakes this process's pipeline worker when a job is queued (`None`: no worker
    /// here; another process's worker finds the job at its next poll).
    pub worker_waker: Option<Arc<tokio::sync::Notify>>,
    /// What the configuration says about the readiness gates it alone knows (TLS in
    /// front, object backend, outside services and their vendors).
    pub readiness: crate::readiness::ReadinessConfig,
    /// The transcription engine and model of this process's pipeline worker, for
    /// `/readyz` (`None`: no worker here).
    pub transcription: Option<TranscriptionInfo>,
    pub(crate) gate_memory: crate::readiness::GateMemory,
    clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

impl AppState {
    /// State with the system clock.
    pub fn new(
        db: Db,
        objects: ObjectStorage,
        keys: Arc<KeyService>,
        auditor: Auditor,
        http: HttpConfig,
    ) -> Self {
        let e2e_writer = crate::e2e_writer::E2eWriter::start(db.clone(), auditor.clone());
        AppState {
            sessions: Arc::new(phivault_access::session_token::SessionKeys::new(
                db.clone(),
                keys.clone(),
            )),
            db,
            objects,
            keys,
            unsealer: None,
            unseal_lock: Arc::new(tokio::sync::Mutex::new(())),
            http,
            auditor,
            mailer: None,
            magic_link: MagicLinkSettings::default(),
            mail_jobs: Arc::new(tokio::sync::Semaphore::new(MAIL_JOBS)),
            throttle: Arc::new(crate::throttle::Throttle::new(
                crate::throttle::ThrottleConfig::default(),
            )),
            e2e: E2eSettings::default(),
            e2e_hub: E2eHub::new(),
            e2e_writer,
            worker_waker: None,
            readiness: crate::readiness::ReadinessConfig::default(),
            transcription: None,
            gate_memory: crate::readiness::GateMemory::default(),
            clock: Arc::new(Utc::now),
        }
    }

    /// Names the notifier of this process's pipeline worker.
    pub fn with_worker_waker(mut self, waker: Arc<tokio::sync::Notify>) -> Self {
        self.worker_waker = Some(waker);
        self
    }

    /// Names the transcription engine and model this process's worker runs.
    pub fn with_transcription(mut self, engine: &str, model: String) -> Self {
        self.transcription = Some(TranscriptionInfo {
            engine: engine.to_owned(),
            model,
        });
        self
    }

    /// Sets what the configuration says about the readiness gates.
    pub fn with_readiness(mut self, readiness: crate::readiness::ReadinessConfig) -> Self {
        self.readiness = readiness;
        self
    }

    /// Sets the end-to-end session settings.
    pub fn with_e2e(mut self, settings: E2eSettings) -> Self {
        self.e2e = settings;
        self
    }

    /// Sets how `POST /api/v1/sys/unseal` turns a passphrase into a provider.
    pub fn with_unsealer(mut self, unsealer: Unsealer) -> Self {
        self.unsealer = Some(unsealer);
        self
    }

    /// Sets the mailer that sends sign-in links.
    pub fn with_mailer(mut self, mailer: Arc<phivault_mail::Mailer>) -> Self {
        self.mailer = Some(mailer);
        self
    }

    /// Sets the public URL links point to and their lifetime.
    pub fn with_magic_link(mut self, settings: MagicLinkSettings) -> Self {
        self.magic_link = settings;
        self
    }

    /// Sets the limits of the authentication endpoints (fresh, empty buckets).
    pub fn with_throttle(mut self, config: crate::throttle::ThrottleConfig) -> Self {
        self.throttle = Arc::new(crate::throttle::Throttle::new(config));
        self
    }

    /// Replaces the clock (tests move time with it).
    pub fn with_clock(mut self, clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Wakes the pipeline worker of this process, if it has one.
    pub(crate) fn wake_workers(&self) {
        if let Some(w) = &self.worker_waker {
            w.notify_one();
        }
    }

    /// The audio check every upload passes: symphonia decodes the whole stream as it
    /// arrives, so a corrupt or unsupported file is refused before anything is saved.
    pub(crate) fn prober(&self) -> phivault_domain::recordings::Prober {
        Box::new(|reader| {
            phivault_transcribe::probe_reader(reader)
                .map(|info| phivault_domain::recordings::AudioFacts {
                    format: info.container.to_owned(),
                    codec: info.codec.to_owned(),
                    sample_rate: info.sample_rate,
                    channels: u32::from(info.channels),
                    duration_ms: info.duration_ms,
                })
                .map_err(|e| phivault_domain::recordings::AudioRejection {
                    code: e.code(),
                    message: e.to_string(),
                    unsupported: matches!(
                        e,
                        phivault_transcribe::Error::UnsupportedFormat
                            | phivault_transcribe::Error::UnsupportedCodec { .. }
                    ),
                })
        })
    }
}
