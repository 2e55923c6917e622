//! The durable job queue for phivault: the steps of the scribe pipeline (transcribe a
//! recording, generate a note) run as jobs stored in the database, so they survive
//! restarts and crashes.
//!
//! A job is enqueued with [`jobs::enqueue`] in the same transaction as the record it
//! works on, so the two commit together. A [`worker::Worker`] claims due jobs under a
//! lease (a token and an expiry), keeps the lease alive while its
//! [`worker::Handler`] runs, and records failures with retry and backoff. The handler
//! completes the job with [`jobs::complete_in`] inside the transaction that writes the
//! step's output: completion is refused once the lease was taken over by another
//! worker, so a step's output commits exactly once even if a worker died or stalled
//! half-way.
//!
//! The table holds ids, states and short error codes only, never PHI. See
//! `docs/jobs.md` for the states, leases and the differences between SQLite and
//! PostgreSQL.

mod error;
pub mod jobs;
pub mod worker;

pub use error::PipelineError;

/// Result type of this crate.
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
