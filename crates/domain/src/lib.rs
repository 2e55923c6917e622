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

/// The practice-scope condition, in SQL, on the practice column `$col`: `$2` is the acting
/// user (NULL for every practice), who sees a row if they have all-practice access or a
/// grant for its practice. Written once here so that every scoped query applies the same
/// rule; it reads current grants, so a revoked grant takes effect on the next query.
macro_rules! in_scope {
    ($col:literal) => {
        concat!(
            "($2 IS NULL
              OR EXISTS (SELECT 1 FROM users u WHERE u.tenant_id = $1 AND u.id = $2 AND u.all_practices)
              OR ",
            $col,
            " IN (SELECT g.practice_id FROM user_practices g WHERE g.tenant_id = $1 AND g.user_id = $2))"
        )
    };
}

mod error;
mod ids;
mod phi;
mod sealed;
mod validate;

pub mod breach;
pub mod break_glass;
pub mod compliance;
pub mod consent;
pub mod devices;
pub mod e2e;
pub mod encounters;
pub mod evidence;
pub mod magic_links;
pub mod mfa;
pub mod notes;
pub mod patients;
pub mod practices;
pub mod readiness;
pub mod recordings;
pub mod retention;
pub mod scribe;
mod secret_token;
pub mod sessions;
pub mod staff;
pub mod tenants;
pub mod tokens;
pub mod training;
pub mod transcripts;
pub mod users;
pub mod vendors;
pub mod vocabulary;

pub use error::DomainError;
pub use ids::{
    ConsentId, ConsentTextId, EncounterId, PatientId, PracticeId, RecordingId, SessionId, TokenId,
    UserId,
};
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
    /// No practice at all (a guest device, which reaches only the sessions it joined).
    Nothing,
}

impl PracticeScope {
    /// The user id bound as `$2` in scoped SQL, `None` meaning every practice.
    pub(crate) fn as_param(self) -> Option<uuid::Uuid> {
        match self {
            PracticeScope::All => None,
            PracticeScope::User(u) => Some(u.as_uuid()),
            // No user has the nil id, so the scoped SQL matches no practice.
            PracticeScope::Nothing => Some(uuid::Uuid::nil()),
        }
    }
}
