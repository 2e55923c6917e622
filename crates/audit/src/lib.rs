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
//! Storage, group commit and fail-closed writing build on this (see the audit issue).

mod chain;
mod checkpoint;
mod encoding;
mod event;

pub use chain::{ChainFault, ChainedEvent, GENESIS, Verification, chain, verify};
pub use checkpoint::{Checkpoint, CheckpointSigner, SignedCheckpoint};
pub use encoding::canonical_bytes;
pub use event::{Action, Actor, ActorKind, AuditEvent, Outcome, Resource, Source};
