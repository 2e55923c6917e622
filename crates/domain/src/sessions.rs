//! Sign-in sessions of tenant users.
//!
//! A session is created at sign-in and lives at most its absolute lifetime (12 hours by
//! default); it dies earlier after its idle timeout (15 minutes by default, a tenant
//! setting) without activity, at sign-out, or when its user is deactivated. Access
//! tokens name the session and are checked against it on every request, so each of those
//! ends takes effect at once.
//!
//! With "remember me" the session also has a refresh token, kept only as a SHA-256 hash.
//! Each use rotates it; the old one is kept, marked used, so that presenting it again —
//! a stolen token replayed after its owner refreshed, or the thief refreshing first —
//! revokes the whole session. All checks take `now` from the caller (an injectable
//! clock).

use chrono::{DateTime, Duration, Utc};
use phivault_store::{TenantId, TenantTx};
use uuid::Uuid;

use crate::error::invalid;
use crate::users::{self, User};
use crate::{DomainError, Result, SessionId, UserId, secret_token};

const REFRESH_PREFIX: &str = "pvr_";

/// Default idle timeout.
pub const DEFAULT_IDLE: Duration = Duration::minutes(15);
/// Default absolute lifetime.
pub const DEFAULT_ABSOLUTE: Duration = Duration::hours(12);
/// Activity is written back at most this often, so a busy session does not write on
/// every request (the idle timeout is therefore exact to within this margin).
pub const TOUCH_EVERY: Duration = Duration::seconds(30);

/// A tenant's session policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Idle timeout.
    pub idle: Duration,
    /// Absolute lifetime.
    pub absolute: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle: DEFAULT_IDLE,
            absolute: DEFAULT_ABSOLUTE,
        }
    }
}

/// The tenant's session policy (the defaults unless the tenant set its own).
pub async fn policy(tx: &mut TenantTx) -> Result<SessionPolicy> {
    let row: Option<(i64, i64)> = tx
        .query("SELECT session_idle_secs, session_absolute_secs FROM tenant_settings WHERE tenant_id = $1")
        .fetch_optional()
        .await?;
    Ok(match row {
        Some((idle, absolute)) => SessionPolicy {
            idle: Duration::seconds(idle),
            absolute: Duration::seconds(absolute),
        },
        None => SessionPolicy::default(),
    })
}

/// Sets the tenant's session policy: idle 1 minute to 24 hours, absolute 5 minutes to
/// 30 days and not shorter than idle.
pub async fn set_policy(tx: &mut TenantTx, p: SessionPolicy, now: DateTime<Utc>) -> Result<()> {
    let idle = p.idle.num_seconds();
    let absolute = p.absolute.num_seconds();
    if !(60..=86_400).contains(&idle) {
        return Err(invalid("session_idle_secs", "must be between 60 and 86400"));
    }
    if !(300..=2_592_000).contains(&absolute) || absolute < idle {
        return Err(invalid(
            "session_absolute_secs",
            "must be between 300 and 2592000 and not below the idle timeout",
        ));
    }
    tx.query(
        "INSERT INTO tenant_settings (tenant_id, session_idle_secs, session_absolute_secs, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id) DO UPDATE SET session_idle_secs = excluded.session_idle_secs,
             session_absolute_secs = excluded.session_absolute_secs, updated_at = excluded.updated_at",
    )
    .bind(idle)
    .bind(absolute)
    .bind(now)
    .execute()
    .await?;
    Ok(())
}

/// A refresh token in clear: handed to the client once, in a cookie. `Debug` redacts.
pub struct RefreshSecret(String);

impl RefreshSecret {
    /// The token text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RefreshSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshSecret([redacted])")
    }
}

/// A presented refresh token, parsed but not checked.
pub struct PresentedRefresh {
    tenant: TenantId,
    hash: [u8; 32],
}

impl PresentedRefresh {
    /// Parses `pvr_<tenant hex>_<43 base64url>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let p = secret_token::parse(REFRESH_PREFIX, text)?;
        Some(PresentedRefresh {
            tenant: p.tenant,
            hash: p.hash,
        })
    }

    /// The tenant the token claims.
    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
}

fn new_refresh(tenant: TenantId) -> Result<(RefreshSecret, [u8; 32])> {
    let (text, hash) = secret_token::generate(REFRESH_PREFIX, tenant)?;
    Ok((RefreshSecret(text), hash))
}

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Its id (named by its access tokens).
    pub id: SessionId,
    /// Whose.
    pub user_id: UserId,
    /// Whether it has a refresh token.
    pub remember: bool,
    /// When it began.
    pub created_at: DateTime<Utc>,
    /// Last activity written back.
    pub last_seen_at: DateTime<Utc>,
    /// When it ends at the latest.
    pub expires_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: Uuid,
    user_id: Uuid,
    remember: bool,
    created_at: DateTime<Utc>,
    last_seen_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<&SessionRow> for Session {
    fn from(r: &SessionRow) -> Self {
        Session {
            id: SessionId::from_uuid(r.id),
            user_id: UserId::from_uuid(r.user_id),
            remember: r.remember,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            expires_at: r.expires_at,
        }
    }
}

/// Why a session no longer works. Callers answer all of them with one "sign in again".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// No such session.
    Unknown,
    /// Signed out or revoked.
    Revoked,
    /// Idle too long.
    Idle,
    /// Past its absolute lifetime.
    Expired,
    /// Its user is deactivated.
    UserInactive,
    /// A used refresh token was presented again: the session is now revoked.
    RefreshReused,
}

impl Ended {
    /// A stable name for audit reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Unknown => "unknown session",
            Ended::Revoked => "session revoked",
            Ended::Idle => "idle timeout",
            Ended::Expired => "absolute lifetime reached",
            Ended::UserInactive => "user deactivated",
            Ended::RefreshReused => "refresh token reused; session revoked",
        }
    }
}

/// The outcome of a session check that can fail for a reason the caller must not be told
/// but the audit trail should record.
pub type Checked<T> = std::result::Result<T, Ended>;

/// Starts a session for an active user; with `remember`, also its first refresh token.
pub async fn start(
    tx: &mut TenantTx,
    user: UserId,
    remember: bool,
    now: DateTime<Utc>,
) -> Result<(Session, Option<RefreshSecret>)> {
    let u = users::get(tx, user).await?;
    if !u.is_active() {
        return Err(invalid("user", "is deactivated"));
    }
    let policy = policy(tx).await?;
    let id = SessionId::generate();
    let expires_at = now + policy.absolute;
    tx.query(
        "INSERT INTO sessions (tenant_id, id, user_id, remember, created_at, last_seen_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $5, $6)",
    )
    .bind(id)
    .bind(user)
    .bind(remember)
    .bind(now)
    .bind(expires_at)
    .execute()
    .await?;
    let refresh = if remember {
        Some(issue_refresh(tx, id, now).await?)
    } else {
        None
    };
    Ok((
        Session {
            id,
            user_id: user,
            remember,
            created_at: now,
            last_seen_at: now,
            expires_at,
        },
        refresh,
    ))
}

async fn issue_refresh(
    tx: &mut TenantTx,
    session: SessionId,
    now: DateTime<Utc>,
) -> Result<RefreshSecret> {
    let (secret, hash) = new_refresh(tx.tenant())?;
    tx.query(
        "INSERT INTO session_refresh_tokens (tenant_id, token_hash, session_id, issued_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&hash[..])
    .bind(session)
    .bind(now)
    .execute()
    .await?;
    Ok(secret)
}

async fn load(tx: &mut TenantTx, id: SessionId) -> Result<Option<SessionRow>> {
    Ok(tx
        .query(
            "SELECT id, user_id, remember, created_at, last_seen_at, expires_at, revoked_at
             FROM sessions WHERE tenant_id = $1 AND id = $2",
        )
        .bind(id)
        .fetch_optional()
        .await?)
}

/// Checks that session `id` is live at `now` for an active user: not revoked, not idle
/// past the tenant's timeout, not past its absolute lifetime. Returns the session, its
/// user, and whether its activity should be written back ([`touch`]).
pub async fn check(
    tx: &mut TenantTx,
    id: SessionId,
    now: DateTime<Utc>,
) -> Result<Checked<(Session, User, bool)>> {
    let Some(row) = load(tx, id).await? else {
        return Ok(Err(Ended::Unknown));
    };
    if row.revoked_at.is_some() {
        return Ok(Err(Ended::Revoked));
    }
    if now >= row.expires_at {
        return Ok(Err(Ended::Expired));
    }
    let policy = policy(tx).await?;
    if now - row.last_seen_at >= policy.idle {
        return Ok(Err(Ended::Idle));
    }
    let user = match users::get(tx, UserId::from_uuid(row.user_id)).await {
        Ok(u) if u.is_active() => u,
        Ok(_) | Err(DomainError::NotFound(_)) => return Ok(Err(Ended::UserInactive)),
        Err(e) => return Err(e),
    };
    let stale = now - row.last_seen_at >= TOUCH_EVERY;
    Ok(Ok((Session::from(&row), user, stale)))
}

/// Writes activity back (the idle clock restarts).
pub async fn touch(tx: &mut TenantTx, id: SessionId, now: DateTime<Utc>) -> Result<()> {
    tx.query(
        "UPDATE sessions SET last_seen_at = $3
         WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL AND last_seen_at < $3",
    )
    .bind(id)
    .bind(now)
    .execute()
    .await?;
    Ok(())
}

/// Uses a refresh token: checks its session, marks it used and issues its successor. A
/// token already used revokes the session ([`Ended::RefreshReused`]). The caller must
/// commit in both cases, so that the revocation sticks.
pub async fn refresh(
    tx: &mut TenantTx,
    presented: &PresentedRefresh,
    now: DateTime<Utc>,
) -> Result<Checked<(Session, User, RefreshSecret)>> {
    if presented.tenant != tx.tenant() {
        return Ok(Err(Ended::Unknown));
    }
    let row: Option<(Uuid, Option<DateTime<Utc>>)> = tx
        .query(
            "SELECT session_id, used_at FROM session_refresh_tokens
             WHERE tenant_id = $1 AND token_hash = $2",
        )
        .bind(&presented.hash[..])
        .fetch_optional()
        .await?;
    let Some((session, used_at)) = row else {
        return Ok(Err(Ended::Unknown));
    };
    let session = SessionId::from_uuid(session);
    if used_at.is_some() {
        revoke(tx, session, Ended::RefreshReused.as_str(), now).await?;
        return Ok(Err(Ended::RefreshReused));
    }
    let (s, user) = match check(tx, session, now).await? {
        Ok((s, user, _)) => (s, user),
        Err(ended) => return Ok(Err(ended)),
    };
    // Marks the token used only if nobody else did in between: of two concurrent uses,
    // one wins and the other is a reuse.
    let n = tx
        .query(
            "UPDATE session_refresh_tokens SET used_at = $3
             WHERE tenant_id = $1 AND token_hash = $2 AND used_at IS NULL",
        )
        .bind(&presented.hash[..])
        .bind(now)
        .execute()
        .await?;
    if n != 1 {
        revoke(tx, session, Ended::RefreshReused.as_str(), now).await?;
        return Ok(Err(Ended::RefreshReused));
    }
    touch(tx, session, now).await?;
    let next = issue_refresh(tx, session, now).await?;
    Ok(Ok((s, user, next)))
}

/// Revokes a session (sign-out, reuse, administrator). Revoking one already revoked is
/// not an error.
pub async fn revoke(
    tx: &mut TenantTx,
    id: SessionId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    tx.query(
        "UPDATE sessions SET revoked_at = $3, revoked_reason = $4
         WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(now)
    .bind(reason)
    .execute()
    .await?;
    Ok(())
}

/// Revokes every live session of `user` (deactivation, "sign out everywhere"); returns
/// how many.
pub async fn revoke_user(
    tx: &mut TenantTx,
    user: UserId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64> {
    Ok(tx
        .query(
            "UPDATE sessions SET revoked_at = $3, revoked_reason = $4
             WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        )
        .bind(user)
        .bind(now)
        .bind(reason)
        .execute()
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_parse_only_in_their_shape() {
        let t = TenantId::generate();
        let (secret, hash) = new_refresh(t).unwrap();
        let parsed = PresentedRefresh::parse(secret.expose()).unwrap();
        assert_eq!(parsed.tenant(), t);
        assert_eq!(parsed.hash, hash);
        assert!(!format!("{secret:?}").contains(secret.expose()));
        for bad in [
            "",
            "pvr_",
            &secret.expose()[1..],
            &secret.expose().replace("pvr_", "pvt_"),
            &format!("{}x", secret.expose()),
        ] {
            assert!(PresentedRefresh::parse(bad).is_none(), "accepted {bad:?}");
        }
    }
}
