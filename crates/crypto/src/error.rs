use thiserror::Error;

use crate::EnvelopeError;

/// Errors of encryption and key handling. None carries key material or plaintext.
#[derive(Debug, Error)]
pub enum CryptoError {
    /// The ciphertext is not a well-formed envelope.
    #[error("malformed ciphertext: {0}")]
    Envelope(#[from] EnvelopeError),
    /// Authentication failed: the ciphertext, its header, its binding (tenant, kind,
    /// object, field) or the key is not the one it was sealed with.
    #[error("decryption failed: the ciphertext was altered, moved, or sealed under another key")]
    Decrypt,
    /// A segmented stream ended early, was reordered or carried extra data.
    #[error("encrypted stream is invalid: {0}")]
    Stream(&'static str),
    /// The envelope names a key other than the one supplied.
    #[error("the ciphertext was sealed under key {found}, not {expected}")]
    WrongKey {
        /// The key the caller supplied.
        expected: String,
        /// The key the envelope names.
        found: String,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Keys are sealed: no root key is available.
    #[error("keys are sealed")]
    Sealed,
    /// A key was destroyed (crypto-shredded).
    #[error("the key was destroyed")]
    KeyDestroyed,
    /// No such key.
    #[error("key not found")]
    KeyNotFound,
    /// The keyring file is missing, malformed or the passphrase is wrong.
    #[error("keyring: {0}")]
    Keyring(String),
    /// A key provider failed.
    #[error("key provider {provider}: {message}")]
    Provider {
        /// Which provider.
        provider: &'static str,
        /// What failed (never key material).
        message: String,
    },
    /// Storage of wrapped keys failed.
    #[error(transparent)]
    Store(#[from] phivault_store::StoreError),
    /// Reading or writing a stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
