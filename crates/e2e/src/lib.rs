//! Client side of phivault's end-to-end encrypted sessions (docs/e2e.md): devices seal
//! every utterance with a per-session AES-256-GCM key the server never holds; the
//! server stores, orders and routes ciphertext only.
//!
//! - [`key`]: the session key and its fingerprint;
//! - [`seal`](mod@seal): sealing and opening one utterance;
//! - [`invite`]: invite links, with the key in the fragment;
//! - [`device`]: a guest device's Ed25519 identity;
//! - [`store`]: keys, tokens and state in the OS keyring or 0600 files;
//! - [`client`]: the HTTP routes and the steps built on them;
//! - [`session`], [`wire`], [`sse`], [`server`]: what those share.

pub mod client;
pub mod device;
mod error;
pub mod invite;
pub mod key;
pub mod seal;
pub mod server;
pub mod session;
pub mod sse;
pub mod store;
pub mod wire;

pub use client::{Client, StreamEvent, UtteranceStream};
pub use device::DeviceIdentity;
pub use error::{E2eError, Result};
pub use invite::Invite;
pub use key::SessionKey;
pub use seal::{Sealed, associated_data, open, seal};
pub use secrecy::{ExposeSecret, SecretString};
pub use server::ServerUrl;
pub use session::{E2eSession, Utterance};
pub use store::{KeyStore, Role, SessionState};
pub use wire::Mode;
