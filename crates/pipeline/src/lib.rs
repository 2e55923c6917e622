//! The durable job queue for phivault.
