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
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            hsts: false,
        }
    }
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
        AppState {
            db,
            objects,
            keys,
            unsealer: None,
            unseal_lock: Arc::new(tokio::sync::Mutex::new(())),
            http,
            auditor,
            clock: Arc::new(Utc::now),
        }
    }

    /// Sets how `POST /api/v1/sys/unseal` turns a passphrase into a provider.
    pub fn with_unsealer(mut self, unsealer: Unsealer) -> Self {
        self.unsealer = Some(unsealer);
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
}
