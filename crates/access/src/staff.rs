//! Staff (platform operators) as principals, kept apart from tenant users.
//!
//! A staff access token is a JWT signed with the deployment's session secret (HS256,
//! pinned) but with its own audience, `phivault-staff`, and no tenant claim: the tenant
//! check ([`crate::authenticate`]) requires audience `phivault-api` and refuses it, and
//! [`authenticate_staff`] requires `phivault-staff` and refuses tenant tokens (API tokens
//! are no JWTs at all). Like a tenant token it names a session that is checked on every
//! request, so sign-out and deactivation end it at once.

use chrono::{DateTime, Utc};
use phivault_domain::DomainError;
use phivault_domain::staff::{self, StaffRole, StaffSession};
use phivault_store::{Db, TxMode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AccessError;
use crate::session_token::{ACCESS_TTL, AccessToken, SessionKeys};

/// The audience of staff access tokens.
pub const STAFF_AUDIENCE: &str = "phivault-staff";

/// The claims of a staff access token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StaffClaims {
    /// Issuer, always `phivault`.
    pub iss: String,
    /// Audience, always `phivault-staff`.
    pub aud: String,
    /// The staff member's id.
    pub sub: Uuid,
    /// The staff session id.
    pub ssid: Uuid,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// A unique id.
    pub jti: Uuid,
}

/// An authenticated staff member.
#[derive(Clone, Debug)]
pub struct StaffPrincipal {
    staff: Uuid,
    session: Uuid,
    role: StaffRole,
}

impl StaffPrincipal {
    /// The staff member's id.
    pub fn staff(&self) -> Uuid {
        self.staff
    }

    /// The session the request presented.
    pub fn session(&self) -> Uuid {
        self.session
    }

    /// The staff role.
    pub fn role(&self) -> StaffRole {
        self.role
    }

    /// Whether the role is one of `roles`.
    pub fn is_one_of(&self, roles: &[StaffRole]) -> bool {
        roles.contains(&self.role)
    }
}

/// Issues a staff access token for `session`.
pub async fn issue_staff(
    keys: &SessionKeys,
    session: &StaffSession,
    now: DateTime<Utc>,
) -> Result<AccessToken, AccessError> {
    let exp = (now + ACCESS_TTL).min(session.expires_at);
    let claims = StaffClaims {
        iss: "phivault".into(),
        aud: STAFF_AUDIENCE.into(),
        sub: session.staff,
        ssid: session.id,
        iat: now.timestamp(),
        exp: exp.timestamp(),
        jti: Uuid::new_v4(),
    };
    let token = keys.encode_other(&claims, now).await?;
    Ok(AccessToken {
        token,
        expires_in: (exp - now).num_seconds(),
    })
}

fn store_error(e: DomainError) -> AccessError {
    match e {
        DomainError::Store(e) => AccessError::Store(e),
        _ => AccessError::Unauthenticated,
    }
}

/// Turns a staff bearer token into a staff principal. Every failure that is the
/// caller's is [`AccessError::Unauthenticated`], whatever the reason.
pub async fn authenticate_staff(
    db: &Db,
    keys: &SessionKeys,
    bearer: &str,
    now: DateTime<Utc>,
) -> Result<StaffPrincipal, AccessError> {
    if bearer.len() > 4096 || bearer.split('.').count() != 3 {
        return Err(AccessError::Unauthenticated);
    }
    let c: StaffClaims = keys.decode_other(bearer, STAFF_AUDIENCE, now).await?;
    if c.exp <= now.timestamp() || c.iat > now.timestamp() + 60 {
        return Err(AccessError::Unauthenticated);
    }
    let mut tx = db.begin_platform(TxMode::Read).await?;
    let checked = staff::check_session(&mut tx, c.ssid, now).await;
    tx.commit().await?;
    let (session, member, stale) = match checked.map_err(store_error)? {
        Ok(found) => found,
        Err(ended) => {
            tracing::info!(session = %c.ssid, reason = ended.as_str(), "staff session refused");
            return Err(AccessError::Unauthenticated);
        }
    };
    if session.staff != c.sub {
        return Err(AccessError::Unauthenticated);
    }
    if stale {
        let mut tx = db.begin_platform(TxMode::Write).await?;
        staff::touch(&mut tx, session.id, now)
            .await
            .map_err(store_error)?;
        tx.commit().await?;
    }
    Ok(StaffPrincipal {
        staff: member.id,
        session: session.id,
        role: member.role,
    })
}
