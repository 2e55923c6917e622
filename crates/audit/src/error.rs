//! Errors of the audit trail.

use thiserror::Error;

/// What can go wrong writing or reading the trail. Messages name sequence numbers and
/// causes, never event content.
#[derive(Debug, Error)]
pub enum AuditError {
    /// The database refused or failed.
    #[error("audit store: {0}")]
    Store(#[from] phivault_store::StoreError),
    /// The group-commit writer could not make an event durable.
    #[error("audit store unavailable: {0}")]
    Unavailable(String),
    /// The writer task is gone (the server is shutting down).
    #[error("the audit writer has stopped")]
    WriterStopped,
    /// A stored row no longer decodes (an unknown action, a short hash, bad JSON).
    #[error("audit record {sequence} does not decode (altered)")]
    Undecodable {
        /// Its sequence number.
        sequence: u64,
    },
    /// The chain is broken before the point a checkpoint would cover.
    #[error("the audit chain is broken at {sequence}; refusing to sign a checkpoint over it")]
    BrokenChain {
        /// Where.
        sequence: u64,
    },
    /// The head row of a chain is malformed.
    #[error("the audit chain head is malformed")]
    CorruptHead,
    /// More events in one append than a sequence can number.
    #[error("too many events in one append")]
    TooLarge,
    /// Keys are sealed or the provider failed, so no checkpoint key.
    #[error("checkpoint key: {0}")]
    Keys(#[from] phivault_crypto::CryptoError),
    /// The witness location could not be written or read.
    #[error("audit witness: {0}")]
    Witness(String),
}
