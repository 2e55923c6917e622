//! Who may do what in phivault.
//!
//! A request becomes a [`Principal`] by [`authenticate`], and a principal becomes a
//! [`TenantScope`] only through [`authorize`], which checks that the tenant the request
//! names is the principal's own and that the principal's roles grant the permission.
//! A `TenantScope` is the only way the layers above reach tenant data (it opens the
//! tenant-bound transaction), and its fields are private to this crate, so a handler
//! cannot conjure one for a tenant it was not authorized for.

mod permissions;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use phivault_domain::tokens::{self, PresentedToken};
use phivault_domain::users::Role;
use phivault_domain::{DomainError, PracticeScope, TokenId, UserId};
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
}

/// An authenticated tenant user.
#[derive(Clone, Debug)]
pub struct Principal {
    tenant: TenantId,
    user: UserId,
    token: TokenId,
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

    /// The token the request presented.
    pub fn token(&self) -> TokenId {
        self.token
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

/// Turns a bearer token into a principal. Every failure is [`AccessError::Unauthenticated`]
/// (store failures excepted), so callers cannot tell unknown from revoked or expired.
pub async fn authenticate(
    db: &Db,
    bearer: &str,
    now: DateTime<Utc>,
) -> Result<Principal, AccessError> {
    let token = PresentedToken::parse(bearer).ok_or(AccessError::Unauthenticated)?;
    let mut tx = db.begin_tenant(token.tenant(), TxMode::Read).await?;
    let found = tokens::authenticate(&mut tx, &token, now).await;
    tx.rollback().await?;
    match found {
        Ok((token_id, user)) => Ok(Principal {
            tenant: token.tenant(),
            user: user.id,
            token: token_id,
            roles: user.roles,
        }),
        Err(DomainError::NotFound(_)) => Err(AccessError::Unauthenticated),
        Err(DomainError::Store(e)) => Err(AccessError::Store(e)),
        Err(_) => Err(AccessError::Unauthenticated),
    }
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
