//! Break-glass as an access decision: who may ask for, decide and revoke a grant, and the
//! read-only [`TenantScope`] a live grant gives its requester.
//!
//! A staff principal reaches tenant PHI only through [`authorize_use`], which re-reads the
//! grant on every request (so a revocation or the end of its duration takes effect on the
//! next one) and returns a scope whose actor names the grant, so every event written in
//! it carries the grant id.

use chrono::{DateTime, Utc};
use phivault_domain::break_glass::{self, Grant, GrantScope, Refusal};
use phivault_domain::staff::StaffRole;
use phivault_domain::{DomainError, EncounterId, PracticeScope};
use phivault_store::{Db, TxMode};
use uuid::Uuid;

use crate::staff::StaffPrincipal;
use crate::{AccessError, Actor, TenantScope};

/// Staff roles that may ask for a grant: those whose work can need PHI in an emergency.
pub const MAY_REQUEST: &[StaffRole] = &[
    StaffRole::SuperAdmin,
    StaffRole::PlatformOps,
    StaffRole::Support,
];

/// Staff roles that may approve or deny another staff member's grant.
pub const MAY_DECIDE: &[StaffRole] = &[StaffRole::SuperAdmin];

/// Whether `principal` may ask for a grant.
pub fn may_request(principal: &StaffPrincipal) -> bool {
    principal.is_one_of(MAY_REQUEST)
}

/// Whether `principal` may see every grant and decide others' grants.
pub fn may_decide(principal: &StaffPrincipal) -> bool {
    principal.is_one_of(MAY_DECIDE)
}

/// A live grant turned into a scope: read-only access to the grant's tenant (every
/// practice), narrowed to one encounter when the grant is.
#[derive(Clone, Debug)]
pub struct BreakGlassScope {
    scope: TenantScope,
    grant: Grant,
}

impl BreakGlassScope {
    /// The tenant scope to read in; its actor is [`Actor::BreakGlass`].
    pub fn scope(&self) -> &TenantScope {
        &self.scope
    }

    /// The grant.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Whether encounter `id` is inside the grant.
    pub fn allows_encounter(&self, id: EncounterId) -> bool {
        match self.grant.scope {
            GrantScope::Tenant => true,
            GrantScope::Encounter(e) => e == id,
        }
    }

    /// The one encounter the grant is limited to, if it is.
    pub fn encounter(&self) -> Option<EncounterId> {
        match self.grant.scope {
            GrantScope::Tenant => None,
            GrantScope::Encounter(e) => Some(e),
        }
    }
}

/// Why a grant could not be used; carries the domain's reason for the audit record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantRefused(pub Refusal);

/// Checks that `principal` may use grant `grant` at `now` and returns its scope. A
/// refusal is `Ok(Err(..))`, so that the caller can audit it; storage failures are
/// errors.
pub async fn authorize_use(
    db: &Db,
    principal: &StaffPrincipal,
    grant: Uuid,
    now: DateTime<Utc>,
) -> Result<Result<BreakGlassScope, GrantRefused>, AccessError> {
    let mut tx = db.begin_platform(TxMode::Read).await?;
    let found = break_glass::usable(&mut tx, grant, principal.staff(), now).await;
    tx.commit().await?;
    let grant = match found {
        Ok(Ok(g)) => g,
        Ok(Err(r)) => return Ok(Err(GrantRefused(r))),
        Err(DomainError::Store(e)) => return Err(AccessError::Store(e)),
        Err(_) => return Ok(Err(GrantRefused(Refusal::Unknown))),
    };
    Ok(Ok(BreakGlassScope {
        scope: TenantScope {
            tenant: grant.tenant,
            actor: Actor::BreakGlass {
                staff: principal.staff(),
                grant: grant.id,
            },
            practices: PracticeScope::All,
        },
        grant,
    }))
}
