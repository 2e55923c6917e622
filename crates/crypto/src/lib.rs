//! phivault's encryption at rest.
//!
//! A key hierarchy: a root key held by a [`provider::KeyProvider`] (a local sealed
//! keyring, a KMS or an HSM) wraps one key-encryption key per tenant, which wraps one
//! data key per object or record. Data is sealed with AES-256-GCM under its data key,
//! and the associated data of every ciphertext is a [`Binding`] of tenant, object kind,
//! object id and field, so a ciphertext copied to another row or tenant does not open.
//!
//! The key decision: every ciphertext is a self-describing, versioned [`envelope`] (or,
//! for audio, a segmented [`stream`]) that names the key that sealed it, so keys can be
//! rotated by rewrapping data keys without touching data, and destroyed to shred it.
//! Key material lives in [`SecretKey`], zeroized on drop and redacted in `Debug`; no
//! error of this crate carries key material or plaintext.

mod aead;
mod binding;
mod error;
mod secret;

pub mod aws_kms;
#[doc(hidden)]
pub mod benchmarks;
pub mod blind;
pub mod envelope;
#[doc(hidden)]
pub mod fuzzing;
pub mod keyring;
pub mod keys;
pub mod pkcs11;
pub mod provider;
pub mod stream;

pub use binding::Binding;
pub use envelope::{Algorithm, EnvelopeError, KeyRef};
pub use error::CryptoError;
pub use secret::SecretKey;

/// Result type of this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;
