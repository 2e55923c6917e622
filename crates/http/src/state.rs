use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use phivault_store::{Db, ObjectStorage};

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
    /// Edge settings.
    pub http: HttpConfig,
    clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

impl AppState {
    /// State with the system clock.
    pub fn new(db: Db, objects: ObjectStorage, http: HttpConfig) -> Self {
        AppState {
            db,
            objects,
            http,
            clock: Arc::new(Utc::now),
        }
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
