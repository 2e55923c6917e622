//! The one error type of the crate. No variant carries key material, a token or
//! plaintext: these errors end up in terminals and logs.

/// Everything that can go wrong on the client side of an end-to-end session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum E2eError {
    /// The ciphertext, nonce, sequence, sender or session was changed, or the key is
    /// wrong: the utterance must not be shown.
    #[error("failed authentication")]
    Authentication,
    /// A session key that is not 32 bytes of base64url.
    #[error("invalid session key: {0}")]
    InvalidKey(&'static str),
    /// An invite link that does not follow the contract.
    #[error("invalid invite link: {0}")]
    InvalidInvite(&'static str),
    /// A server URL that cannot be used.
    #[error("invalid server URL: {0}")]
    InvalidServer(&'static str),
    /// Plaintext the contract does not allow (empty, too large, not UTF-8).
    #[error("invalid text: {0}")]
    InvalidText(&'static str),
    /// The session key does not hash to the fingerprint the server holds.
    #[error("the session key does not match the session's key fingerprint")]
    FingerprintMismatch,
    /// An algorithm other than AES-256-GCM.
    #[error("unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The server refused the request with its usual JSON error.
    #[error("{code}: {message} (HTTP {status})")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's machine-readable code, e.g. `invite_used`.
        code: String,
        /// The server's human-readable message.
        message: String,
        /// The server's request id, for the operator's logs.
        request_id: Option<String>,
    },
    /// The request did not get an answer (connection, TLS, timeout).
    #[error("cannot reach the server")]
    Transport(#[source] reqwest::Error),
    /// The server answered something the contract does not describe.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random,
    /// The key store could not save or load a secret.
    #[error("key store: {0}")]
    Store(String),
}

impl E2eError {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<&str> {
        match self {
            E2eError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when the server refused the request.
    pub fn status(&self) -> Option<u16> {
        match self {
            E2eError::Server { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result with [`E2eError`].
pub type Result<T, E = E2eError> = std::result::Result<T, E>;
