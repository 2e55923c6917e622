//! Who may do what in phivault.
//!
//! A request becomes a [`Principal`] by [`authenticate`], and a principal becomes a
//! [`TenantScope`] only through [`authorize`], which checks that the tenant the request
//! names is the principal's own and that the principal's roles grant the permission.
//! A `TenantScope` is the only way the layers above reach tenant data (it opens the
//! tenant-bound transaction), and its fields are private to this crate, so a handler
//! cannot conjure one for a tenant it was not authorized for.

pub mod break_glass;
pub mod e2e;
mod permissions;
pub mod session_token;
pub mod staff;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use phivault_domain::sessions;
use phivault_domain::tokens::{self, PresentedToken};
use phivault_domain::users::Role;
use phivault_domain::{DomainError, PracticeScope, SessionId, TokenId, UserId};
use phivault_store::{Db, StoreError, TenantId, TenantTx, TxMode};
use thiserror::Error;

pub use permissions::Permission;

/// Why access was refused. Messages carry ids and permission names only.
#[derive(Debug, Error)]
pub enum AccessError {
    /// No credentials, or credentials that do not identify an active user.
    #[error("authentication required")]
    Unauthenticated,
    /// The request names a tenant other than the principal's.
    #[error("the request's tenant is not the caller's tenant")]
    TenantMismatch {
        /// The tenant the request named.
        requested: TenantId,
        /// The principal's tenant.
        principal: TenantId,
    },
    /// The principal's roles do not grant the permission.
    #[error("missing permission {0}")]
    Forbidden(Permission),
    /// Storage failed while checking.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Session tokens cannot be signed or verified: the keys are sealed.
    #[error("session keys unavailable (keys sealed)")]
    KeysUnavailable,
}

/// How a principal proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An API token (`pvt_…`).
    ApiToken(TokenId),
    /// A session's access token.
    Session(SessionId),
}

/// An authenticated tenant user.
#[derive(Clone, Debug)]
pub struct Principal {
    tenant: TenantId,
    user: UserId,
    credential: Credential,
    roles: Vec<Role>,
}

impl Principal {
    /// The principal's tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The user.
    pub fn user(&self) -> UserId {
        self.user
    }

    /// The credential the request presented.
    pub fn credential(&self) -> Credential {
        self.credential
    }

    /// The user's roles.
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    /// Every permission the roles grant.
    pub fn permissions(&self) -> BTreeSet<Permission> {
        self.roles
            .iter()
            .flat_map(|r| permissions::of_role(*r).iter().copied())
            .collect()
    }

    /// Whether the roles grant `permission`.
    pub fn has(&self, permission: Permission) -> bool {
        self.roles
            .iter()
            .any(|r| permissions::of_role(*r).contains(&permission))
    }
}

/// Turns a bearer credential into a principal: an API token (`pvt_…`) or a session's
/// access token (a JWT, whose session must still be live). Every failure that is the
/// caller's is [`AccessError::Unauthenticated`], whatever the reason, so a caller learns
/// nothing about which check failed; the reason of a session that ended is logged.
pub async fn authenticate(
    db: &Db,
    sessions: &session_token::SessionKeys,
    bearer: &str,
    now: DateTime<Utc>,
) -> Result<Principal, AccessError> {
    if let Some(token) = PresentedToken::parse(bearer) {
        let mut tx = db.begin_tenant(token.tenant(), TxMode::Read).await?;
        let found = tokens::authenticate(&mut tx, &token, now).await;
        tx.rollback().await?;
        return match found {
            Ok((token_id, user)) => Ok(Principal {
                tenant: token.tenant(),
                user: user.id,
                credential: Credential::ApiToken(token_id),
                roles: user.roles,
            }),
            Err(DomainError::Store(e)) => Err(AccessError::Store(e)),
            Err(_) => Err(AccessError::Unauthenticated),
        };
    }
    // Anything else must be a JWT (three base64url parts); refuse junk before any work.
    if bearer.len() > 4096 || bearer.split('.').count() != 3 {
        return Err(AccessError::Unauthenticated);
    }
    let claims = sessions.verify(bearer, now).await?;
    let (tenant, session) = session_token::session_of(&claims);
    let mut tx = db.begin_tenant(tenant, TxMode::Read).await?;
    let checked = sessions::check(&mut tx, session, now).await;
    tx.rollback().await?;
    let (s, user, stale) = match checked {
        Ok(Ok(found)) => found,
        Ok(Err(ended)) => {
            tracing::info!(session = %session, reason = ended.as_str(), "session refused");
            return Err(AccessError::Unauthenticated);
        }
        Err(DomainError::Store(e)) => return Err(AccessError::Store(e)),
        Err(_) => return Err(AccessError::Unauthenticated),
    };
    if s.user_id.as_uuid() != claims.sub {
        return Err(AccessError::Unauthenticated);
    }
    if stale {
        let mut tx = db.begin_tenant(tenant, TxMode::Write).await?;
        sessions::touch(&mut tx, session, now)
            .await
            .map_err(|e| match e {
                DomainError::Store(e) => AccessError::Store(e),
                _ => AccessError::Unauthenticated,
            })?;
        tx.commit().await?;
    }
    Ok(Principal {
        tenant,
        user: user.id,
        credential: Credential::Session(session),
        roles: user.roles,
    })
}

/// Checks that `principal` may use `permission` in `requested` tenant and returns the
/// scope to do it in.
pub fn authorize(
    principal: &Principal,
    requested: TenantId,
    permission: Permission,
) -> Result<TenantScope, AccessError> {
    if principal.tenant != requested {
        tracing::warn!(
            requested_tenant = %requested,
            principal_tenant = %principal.tenant,
            user = %principal.user,
            "tenant mismatch refused"
        );
        return Err(AccessError::TenantMismatch {
            requested,
            principal: principal.tenant,
        });
    }
    if !principal.has(permission) {
        return Err(AccessError::Forbidden(permission));
    }
    Ok(TenantScope {
        tenant: requested,
        actor: Actor::User(principal.user),
        practices: PracticeScope::User(principal.user),
    })
}

/// Who acts inside a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Actor {
    /// A tenant user, limited to their practices.
    User(UserId),
    /// An operator at the command line on the server host, acting for the tenant.
    Operator,
    /// A guest device, inside the end-to-end sessions it joined.
    Device(uuid::Uuid),
    /// A staff member reading under an approved break-glass grant.
    BreakGlass {
        /// The staff member.
        staff: uuid::Uuid,
        /// The grant.
        grant: uuid::Uuid,
    },
}

/// The right to work inside one tenant, limited to some practices.
#[derive(Clone, Debug)]
pub struct TenantScope {
    tenant: TenantId,
    actor: Actor,
    practices: PracticeScope,
}

impl TenantScope {
    /// A scope for the operator's command-line tools, which run on the server host with
    /// its configuration and act for a named tenant over all its practices.
    pub fn operator(tenant: TenantId) -> Self {
        TenantScope {
            tenant,
            actor: Actor::Operator,
            practices: PracticeScope::All,
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// Who acts.
    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// The practices the actor may see.
    pub fn practices(&self) -> PracticeScope {
        self.practices
    }

    /// Opens a transaction bound to this scope's tenant.
    pub async fn begin(&self, db: &Db, mode: TxMode) -> Result<TenantTx, StoreError> {
        db.begin_tenant(self.tenant, mode).await
    }
}
