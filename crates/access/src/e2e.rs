//! Access to end-to-end sessions: guest devices as principals, and participation as the
//! condition for every session route.
//!
//! A guest device authenticates with its device token and gets a scope in a tenant that
//! sees no practice data at all; it reaches a session only as a participant (it joined
//! by invite). A tenant user reaches a session only as its participant too (its owner),
//! after the usual permission check. [`SessionAccess`] is the only way to a session's
//! utterances, and its fields are private, so a handler cannot skip the check.

use phivault_domain::devices::{self, Device};
use phivault_domain::e2e::{self, Participant, Session, Who};
use phivault_domain::{DomainError, PracticeScope};
use phivault_store::{Db, TenantId, TxMode};
use uuid::Uuid;

use crate::{AccessError, Actor, TenantScope};

fn store(e: DomainError) -> AccessError {
    match e {
        DomainError::Store(e) => AccessError::Store(e),
        _ => AccessError::Unauthenticated,
    }
}

/// Whether `bearer` is shaped as a device token (and so is not a tenant credential).
pub fn is_device_token(bearer: &str) -> bool {
    bearer.starts_with(devices::TOKEN_PREFIX)
}

/// Turns a device token into its device; any failure that is the caller's is
/// [`AccessError::Unauthenticated`].
pub async fn authenticate_device(db: &Db, bearer: &str) -> Result<Device, AccessError> {
    if bearer.len() > 200 {
        return Err(AccessError::Unauthenticated);
    }
    let mut tx = db.begin_platform(TxMode::Read).await?;
    let found = devices::authenticate(&mut tx, bearer)
        .await
        .map_err(store)?;
    tx.commit().await?;
    found.ok_or(AccessError::Unauthenticated)
}

/// The scope of a guest device in `tenant`: it acts as itself and sees no practice.
pub fn device_scope(device: &Device, tenant: TenantId) -> TenantScope {
    TenantScope {
        tenant,
        actor: Actor::Device(device.id),
        practices: PracticeScope::Nothing,
    }
}

/// A participant's access to one session.
#[derive(Clone, Debug)]
pub struct SessionAccess {
    scope: TenantScope,
    session: Session,
    participant: Participant,
}

impl SessionAccess {
    /// The tenant scope.
    pub fn scope(&self) -> &TenantScope {
        &self.scope
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The caller as a participant.
    pub fn participant(&self) -> &Participant {
        &self.participant
    }

    /// Whether the caller owns the session (may invite and end it).
    pub fn is_owner(&self) -> bool {
        self.participant.who == Who::User(self.session.owner)
    }
}

/// Checks that the actor of `scope` takes part in `session`; `None` when the session does
/// not exist in the scope's tenant or the actor is not one of its participants (the two
/// are not told apart).
pub async fn participate(
    db: &Db,
    scope: &TenantScope,
    session: Uuid,
) -> Result<Option<SessionAccess>, AccessError> {
    let who = match scope.actor {
        Actor::User(u) => Who::User(u),
        Actor::Device(d) => Who::Device(d),
        Actor::Operator | Actor::BreakGlass { .. } => return Ok(None),
    };
    let mut tx = scope.begin(db, TxMode::Read).await?;
    let found = e2e::get(&mut tx, session).await.map_err(store)?;
    let participant = match &found {
        Some(_) => e2e::participant(&mut tx, session, who)
            .await
            .map_err(store)?,
        None => None,
    };
    tx.commit().await?;
    Ok(match (found, participant) {
        (Some(session), Some(participant)) => Some(SessionAccess {
            scope: scope.clone(),
            session,
            participant,
        }),
        _ => None,
    })
}
