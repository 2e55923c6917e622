//! phivault's domain: tenants, practices (client clinics inside a tenant), users,
//! patients and encounters.
//!
//! Every function here takes a store handle that is already bound to a tenant
//! ([`phivault_store::TenantTx`]) or to platform tables only
//! ([`phivault_store::PlatformTx`]); none can be called with a raw connection, so none
//! can run a query without a tenant. Functions that touch patients or encounters also
//! take a [`PracticeScope`], which narrows them, inside SQL, to the practices the acting
//! user is granted.
//!
//! PHI values (names, MRN, date of birth, free text) are held in [`Phi`], whose `Debug`
//! and `Display` print a redaction marker, so a log line or error built from a domain
//! value cannot carry PHI by accident.

mod error;
mod ids;
mod phi;
mod validate;

pub mod encounters;
pub mod patients;
pub mod practices;
pub mod tenants;
pub mod tokens;
pub mod users;

pub use error::DomainError;
pub use ids::{EncounterId, PatientId, PracticeId, TokenId, UserId};
pub use phi::Phi;
pub use phivault_store::TenantId;

/// Result type of this crate.
pub type Result<T, E = DomainError> = std::result::Result<T, E>;

/// Which practices of the tenant an operation may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PracticeScope {
    /// Every practice of the tenant (operator tools acting for the tenant).
    All,
    /// The practices granted to this user (all of them if the user has all-practice
    /// access). Checked in SQL against current grants, so a revoked grant takes effect on
    /// the next query.
    User(UserId),
}

impl PracticeScope {
    /// The user id bound as `$2` in scoped SQL, `None` meaning every practice.
    pub(crate) fn as_param(self) -> Option<uuid::Uuid> {
        match self {
            PracticeScope::All => None,
            PracticeScope::User(u) => Some(u.as_uuid()),
        }
    }
}
