//! phivault's audit trail: what an event is, how it is encoded, how events are chained
//! and checkpointed, and how a chain is verified.
//!
//! The guarantee this crate gives is that **any change to a stored trail is detected**:
//! each event's hash covers its canonical encoding and the previous event's hash, and
//! signed checkpoints (Ed25519) over (sequence, head hash, time) pin the chain, so even a
//! rewrite that recomputes every hash fails at the next checkpoint, and events after the
//! last checkpoint are reported as unsigned. Events carry identifiers and field names,
//! never PHI content: there is no field for a value.
//!
//! [`Auditor`] is how the server writes: inside a PHI change's transaction, or through
//! group commit for reads and refusals, failing closed either way. [`ledger`] stores
//! and reads the per-tenant and platform chains; [`signing`] holds the checkpoint key
//! in the key hierarchy; [`witness`] copies checkpoints outside the database.

mod chain;
pub mod check;
mod checkpoint;
mod encoding;
mod error;
mod event;
pub mod fhir;
pub mod ledger;
pub mod packet;
pub mod signing;
pub mod witness;
mod writer;

pub use chain::{ChainFault, ChainedEvent, GENESIS, Verification, Verifier, chain, verify};
pub use checkpoint::{Checkpoint, CheckpointSigner, SignedCheckpoint};
pub use encoding::canonical_bytes;
pub use error::AuditError;
pub use event::{Action, Actor, ActorKind, AuditEvent, Outcome, Resource, Source};
pub use ledger::ChainId;
pub use writer::{AuditConfig, Auditor, MIN_RETENTION_YEARS};

/// Result type of this crate.
pub type Result<T, E = AuditError> = std::result::Result<T, E>;
