//! Storage for phivault: one contract over SQLite (the embedded default) and
//! PostgreSQL, plus tenant-prefixed object storage.
//!
//! The guarantee this crate gives is that **no query runs without a tenant**. Code above
//! it never sees a connection: it gets a [`TenantTx`], a transaction bound to one
//! tenant, whose query builder binds that tenant as the first parameter (`$1`) of every
//! statement and refuses SQL that does not filter or insert on `tenant_id = $1`. On
//! PostgreSQL the same transaction also sets the transaction-local
//! `phivault.tenant_id`, which the row-level security policies of every tenant table
//! check, so a query that forgot its filter still cannot see another tenant's rows.
//!
//! The one design choice worth knowing: queries are written once, as static SQL that
//! both backends accept, and bound through an owned [`Arg`] value rather than generic
//! over `sqlx::Database`. That keeps each repository function a single piece of code
//! for both backends, at the cost of a small closed set of bindable types.

mod db;
mod error;
mod guard;
mod ids;
mod objects;
mod postgres;
mod scoped;
pub mod scratch;

pub use db::{Backend, Db, DbOptions, TxMode};
pub use error::StoreError;
pub use ids::TenantId;
pub use objects::{ObjectKey, ObjectStorage, ObjectStoreConfig, ObjectWriter, S3Config};
pub use postgres::{APP_GRANTS, AppRoleReport, RoleCheck};
pub use scoped::{Arg, BothRows, PlatformTx, Query, TenantTx};

/// Result type of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
