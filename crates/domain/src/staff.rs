//! The staff realm: platform operators, kept apart from tenant users. Staff belong to no
//! tenant, so everything here runs in a [`PlatformTx`] on platform tables.
//!
//! A staff member is created at the command line only. Sign-in is always two steps: a
//! password (argon2id; at least 12 and at most 128 characters, not in a bundled list of
//! common passwords, not containing the e-mail's local part), then TOTP. A staff member
//! without a factor gets a challenge that can only enroll one. TOTP codes are accepted
//! once, failures lock the factor after [`MAX_FAILURES`], and recovery codes are kept
//! hashed. The TOTP secret is wrapped by the key provider's platform root, so a copy of
//! the database does not hold it in clear. Sessions idle out after [`IDLE`] and end
//! after [`ABSOLUTE`]; every check takes `now` from the caller.

use std::collections::HashSet;
use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use chrono::{DateTime, Duration, Utc};
use phivault_crypto::SecretKey;
use phivault_crypto::keys::KeyService;
use phivault_store::PlatformTx;
use uuid::Uuid;

use crate::error::{invalid, on_write};
use crate::mfa::{Enrollment, RecoveryCodes, Verdict};
use crate::{DomainError, Result, validate};

/// Failed attempts before the factor locks, and for how long: the same as tenant users'.
pub use crate::mfa::{LOCKOUT, MAX_FAILURES};
/// How long a sign-in waits for its second factor.
pub const CHALLENGE_TTL: Duration = Duration::minutes(5);
/// Idle timeout of a staff session.
pub const IDLE: Duration = Duration::minutes(15);
/// Absolute lifetime of a staff session.
pub const ABSOLUTE: Duration = Duration::hours(12);
/// Activity is written back at most this often.
pub const TOUCH_EVERY: Duration = Duration::seconds(30);
/// Shortest password accepted.
pub const PASSWORD_MIN: usize = 12;
/// Longest password accepted.
pub const PASSWORD_MAX: usize = 128;

/// Common passwords, lower-cased, most common first: the list Django ships
/// (`django/contrib/auth/common-passwords.txt.gz`, BSD-3-Clause), 19,640 passwords
/// created by Royce Williams from breach corpora
/// (https://gist.github.com/roycewilliams/226886fd01572964e1431ac8afc999ce).
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| COMMON_PASSWORDS.lines().map(str::trim).collect());

/// A staff role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StaffRole {
    /// Everything staff may do, including managing staff.
    SuperAdmin,
    /// Runs the platform.
    PlatformOps,
    /// Helps tenants.
    Support,
    /// Billing and contracts.
    Finance,
    /// Looks only.
    ReadOnly,
}

impl StaffRole {
    /// Every role.
    pub const ALL: [StaffRole; 5] = [
        StaffRole::SuperAdmin,
        StaffRole::PlatformOps,
        StaffRole::Support,
        StaffRole::Finance,
        StaffRole::ReadOnly,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            StaffRole::SuperAdmin => "super_admin",
            StaffRole::PlatformOps => "platform_ops",
            StaffRole::Support => "support",
            StaffRole::Finance => "finance",
            StaffRole::ReadOnly => "read_only",
        }
    }

    /// Parses a stored or submitted name.
    pub fn parse(s: &str) -> Option<Self> {
        StaffRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for StaffRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StaffRole {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self> {
        StaffRole::parse(s).ok_or_else(|| {
            invalid(
                "role",
                "must be super_admin, platform_ops, support, finance or read_only",
            )
        })
    }
}

/// A staff member (never the password hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staff {
    /// Id.
    pub id: Uuid,
    /// Sign-in e-mail, lower-cased.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: StaffRole,
    /// Whether the account may sign in.
    pub active: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct StaffRow {
    id: Uuid,
    email: String,
    display_name: String,
    role: String,
    status: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<StaffRow> for Staff {
    type Error = DomainError;

    fn try_from(r: StaffRow) -> Result<Staff> {
        Ok(Staff {
            id: r.id,
            email: r.email,
            display_name: r.display_name,
            role: r.role.parse()?,
            active: r.status == "active",
            created_at: r.created_at,
        })
    }
}

/// Checks a new password against the rules; the error names the rule, never the value.
pub fn check_password(email: &str, password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < PASSWORD_MIN {
        return Err(invalid("password", "must have at least 12 characters"));
    }
    if n > PASSWORD_MAX {
        return Err(invalid("password", "must have at most 128 characters"));
    }
    let lower = password.to_lowercase();
    if COMMON.contains(lower.as_str()) {
        return Err(invalid(
            "password",
            "is in a list of common or breached passwords",
        ));
    }
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    if local.chars().count() >= 3 && lower.contains(&local) {
        return Err(invalid("password", "must not contain the e-mail address"));
    }
    Ok(())
}

/// An argon2id PHC string of `password` (default parameters, random salt).
pub fn hash_password(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| invalid("password", "could not be hashed"))
}

/// A hash of a random password, verified against when the e-mail is unknown, so that
/// an unknown account costs the same time as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut raw = [0u8; 24];
    let _ = getrandom::fill(&mut raw);
    hash_password(&hex::encode(raw)).unwrap_or_default()
});

/// Verifies `password` against `hash` (argon2's own constant-time comparison). With no
/// hash (unknown e-mail) a dummy hash is verified and the answer is `false`. Slow on
/// purpose: call it off the async workers.
pub fn verify_password(hash: Option<&str>, password: &str) -> bool {
    let argon = Argon2::default();
    match hash {
        Some(h) => argon.verify_password(password.as_bytes(), h).is_ok(),
        None => {
            let _ = argon.verify_password(password.as_bytes(), DUMMY_HASH.as_str());
            false
        }
    }
}

/// A new staff member.
#[derive(Clone, Debug)]
pub struct NewStaff {
    /// Sign-in e-mail.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: StaffRole,
}

/// Creates a staff member after checking the password rules.
pub async fn create(
    tx: &mut PlatformTx,
    new: NewStaff,
    password: &str,
    now: DateTime<Utc>,
) -> Result<Staff> {
    let email = validate::email(&new.email)?;
    let display_name = validate::text("display_name", &new.display_name, 200)?;
    check_password(&email, password)?;
    let hash = hash_password(password)?;
    let id = Uuid::now_v7();
    tx.query(
        "INSERT INTO staff_users (id, email, display_name, password_hash, role, status, created_at)
         VALUES ($1, $2, $3, $4, $5, 'active', $6)",
    )
    .bind(id)
    .bind(email.clone())
    .bind(display_name.clone())
    .bind(hash)
    .bind(new.role.as_str())
    .bind(now)
    .execute()
    .await
    .map_err(on_write("staff member"))?;
    Ok(Staff {
        id,
        email,
        display_name,
        role: new.role,
        active: true,
        created_at: now,
    })
}

/// Every staff member, by e-mail.
pub async fn list(tx: &mut PlatformTx) -> Result<Vec<Staff>> {
    let rows: Vec<StaffRow> = tx
        .query(
            "SELECT id, email, display_name, role, status, created_at FROM staff_users
             ORDER BY email",
        )
        .fetch_all()
        .await?;
    rows.into_iter().map(Staff::try_from).collect()
}

/// One staff member by id.
pub async fn get(tx: &mut PlatformTx, id: Uuid) -> Result<Option<Staff>> {
    let row: Option<StaffRow> = tx
        .query(
            "SELECT id, email, display_name, role, status, created_at FROM staff_users
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional()
        .await?;
    row.map(Staff::try_from).transpose()
}

/// The active staff member with `email` and their password hash, for sign-in.
pub async fn credentials(tx: &mut PlatformTx, email: &str) -> Result<Option<(Staff, String)>> {
    let email = email.trim().to_lowercase();
    let row: Option<(Uuid, String)> = tx
        .query("SELECT id, password_hash FROM staff_users WHERE email = $1 AND status = 'active'")
        .bind(email)
        .fetch_optional()
        .await?;
    let Some((id, hash)) = row else {
        return Ok(None);
    };
    Ok(get(tx, id).await?.map(|s| (s, hash)))
}

/// Deactivates the staff member with `email` and revokes their sessions at once.
pub async fn deactivate(tx: &mut PlatformTx, email: &str, now: DateTime<Utc>) -> Result<Staff> {
    let email = email.trim().to_lowercase();
    let row: Option<(Uuid,)> = tx
        .query("SELECT id FROM staff_users WHERE email = $1")
        .bind(email)
        .fetch_optional()
        .await?;
    let Some((id,)) = row else {
        return Err(DomainError::NotFound("staff member"));
    };
    tx.query("UPDATE staff_users SET status = 'deactivated' WHERE id = $1")
        .bind(id)
        .execute()
        .await?;
    tx.query(
        "UPDATE staff_sessions SET revoked_at = $2 WHERE staff_id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .bind(now)
    .execute()
    .await?;
    get(tx, id)
        .await?
        .ok_or(DomainError::NotFound("staff member"))
}

// --- challenges -----------------------------------------------------------------------

/// A sign-in that passed its password and waits for TOTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Its id, handed to the client.
    pub id: Uuid,
    /// Whose.
    pub staff: Uuid,
}

/// Opens a challenge after the password.
pub async fn open_challenge(
    tx: &mut PlatformTx,
    staff: Uuid,
    now: DateTime<Utc>,
) -> Result<Challenge> {
    let id = Uuid::new_v4();
    tx.query("INSERT INTO staff_challenges (id, staff_id, expires_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(staff)
        .bind(now + CHALLENGE_TTL)
        .execute()
        .await?;
    Ok(Challenge { id, staff })
}

/// A live challenge (unexpired, unused, of an active staff member).
pub async fn find_challenge(
    tx: &mut PlatformTx,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Challenge>> {
    let row: Option<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = tx
        .query("SELECT staff_id, expires_at, used_at FROM staff_challenges WHERE id = $1")
        .bind(id)
        .fetch_optional()
        .await?;
    let Some((staff, expires_at, None)) = row else {
        return Ok(None);
    };
    if expires_at <= now || !get(tx, staff).await?.is_some_and(|s| s.active) {
        return Ok(None);
    }
    Ok(Some(Challenge { id, staff }))
}

/// Marks a challenge used; `false` if someone else used it first.
pub async fn close_challenge(tx: &mut PlatformTx, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    Ok(tx
        .query("UPDATE staff_challenges SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
        .bind(id)
        .bind(now)
        .execute()
        .await?
        == 1)
}

// --- TOTP -----------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct FactorRow {
    secret: Vec<u8>,
    enabled_at: Option<DateTime<Utc>>,
    last_used_step: i64,
    failures: i64,
    locked_until: Option<DateTime<Utc>>,
}

async fn factor(tx: &mut PlatformTx, staff: Uuid) -> Result<Option<FactorRow>> {
    Ok(tx
        .query(
            "SELECT secret, enabled_at, last_used_step, failures, locked_until
             FROM staff_totp WHERE staff_id = $1",
        )
        .bind(staff)
        .fetch_optional()
        .await?)
}

/// Whether the staff member has an enabled TOTP factor.
pub async fn is_enrolled(tx: &mut PlatformTx, staff: Uuid) -> Result<bool> {
    Ok(factor(tx, staff)
        .await?
        .is_some_and(|f| f.enabled_at.is_some()))
}

/// The TOTP secret (32 random bytes), unwrapped.
async fn secret(keys: &KeyService, wrapped: &[u8]) -> Result<Vec<u8>> {
    Ok(keys
        .unwrap_platform_secret(wrapped)
        .await?
        .expose()
        .to_vec())
}

/// Starts (or restarts) enrollment: a new secret, wrapped, not yet enabled. An enabled
/// factor cannot be replaced this way.
pub async fn begin_enrollment(
    tx: &mut PlatformTx,
    keys: &KeyService,
    staff: Uuid,
    account: &str,
    now: DateTime<Utc>,
) -> Result<Enrollment> {
    if is_enrolled(tx, staff).await? {
        return Err(DomainError::Conflict("second factor"));
    }
    let key = SecretKey::generate()?;
    let (provider, wrapped) = keys.wrap_platform_secret(&key).await?;
    tx.query("DELETE FROM staff_totp WHERE staff_id = $1 AND enabled_at IS NULL")
        .bind(staff)
        .execute()
        .await?;
    tx.query(
        "INSERT INTO staff_totp (staff_id, provider, secret, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(staff)
    .bind(provider)
    .bind(wrapped)
    .bind(now)
    .execute()
    .await
    .map_err(on_write("second factor"))?;
    let uri = crate::mfa::totp(key.expose().to_vec(), account)?
        .to_url()
        .map_err(|_| invalid("totp", "could not be set up"))?;
    Ok(Enrollment { otpauth_uri: uri })
}

/// Confirms enrollment with a first code: the factor is enabled and fresh recovery
/// codes (stored hashed) are returned once (the same rules as tenant users').
pub async fn confirm_enrollment(
    tx: &mut PlatformTx,
    keys: &KeyService,
    staff: Uuid,
    code: &str,
    now: DateTime<Utc>,
) -> Result<RecoveryCodes> {
    let Some(f) = factor(tx, staff).await? else {
        return Err(DomainError::NotFound("pending second factor"));
    };
    let (state, mut store) = staff_factor(tx, keys, staff, f);
    crate::mfa::confirm_code(&mut store, &state, code, now).await
}

/// A staff member's factor, in a platform transaction.
struct StaffFactor<'a> {
    tx: &'a mut PlatformTx,
    keys: &'a KeyService,
    staff: Uuid,
    wrapped: Vec<u8>,
}

impl crate::mfa::FactorStore for StaffFactor<'_> {
    async fn enable(&mut self, step: i64, now: DateTime<Utc>) -> Result<()> {
        self.tx
            .query(
                "UPDATE staff_totp SET enabled_at = $2, last_used_step = $3, failures = 0
                 WHERE staff_id = $1",
            )
            .bind(self.staff)
            .bind(now)
            .bind(step)
            .execute()
            .await?;
        Ok(())
    }

    async fn replace_recovery(&mut self, hashes: &[[u8; 32]]) -> Result<()> {
        self.tx
            .query("DELETE FROM staff_recovery_codes WHERE staff_id = $1")
            .bind(self.staff)
            .execute()
            .await?;
        for h in hashes {
            self.tx
                .query("INSERT INTO staff_recovery_codes (staff_id, code_hash) VALUES ($1, $2)")
                .bind(self.staff)
                .bind(h.to_vec())
                .execute()
                .await?;
        }
        Ok(())
    }

    async fn secret(&mut self) -> Result<Vec<u8>> {
        secret(self.keys, &self.wrapped).await
    }

    async fn claim_step(&mut self, step: i64) -> Result<bool> {
        // Conditional, so that of two concurrent uses of one code only one wins.
        Ok(self
            .tx
            .query(
                "UPDATE staff_totp SET last_used_step = $2
                 WHERE staff_id = $1 AND last_used_step < $2",
            )
            .bind(self.staff)
            .bind(step)
            .execute()
            .await?
            == 1)
    }

    async fn use_recovery(&mut self, hash: [u8; 32], now: DateTime<Utc>) -> Result<bool> {
        Ok(self
            .tx
            .query(
                "UPDATE staff_recovery_codes SET used_at = $3
                 WHERE staff_id = $1 AND code_hash = $2 AND used_at IS NULL",
            )
            .bind(self.staff)
            .bind(hash.to_vec())
            .bind(now)
            .execute()
            .await?
            == 1)
    }

    async fn set_failures(
        &mut self,
        failures: i64,
        locked_until: Option<DateTime<Utc>>,
    ) -> Result<()> {
        self.tx
            .query("UPDATE staff_totp SET failures = $2, locked_until = $3 WHERE staff_id = $1")
            .bind(self.staff)
            .bind(failures)
            .bind(locked_until)
            .execute()
            .await?;
        Ok(())
    }
}

fn staff_factor<'a>(
    tx: &'a mut PlatformTx,
    keys: &'a KeyService,
    staff: Uuid,
    f: FactorRow,
) -> (crate::mfa::FactorState, StaffFactor<'a>) {
    (
        crate::mfa::FactorState {
            enabled: f.enabled_at.is_some(),
            last_used_step: f.last_used_step,
            failures: f.failures,
            locked_until: f.locked_until,
        },
        StaffFactor {
            tx,
            keys,
            staff,
            wrapped: f.secret,
        },
    )
}

/// Checks a TOTP code (or a recovery code) at `now`, by the same rules as tenant users'
/// factors (`mfa::check_code`): a TOTP code is accepted once; failures count towards a
/// lockout. The caller commits whatever the verdict.
pub async fn verify(
    tx: &mut PlatformTx,
    keys: &KeyService,
    staff: Uuid,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Verdict> {
    let Some(f) = factor(tx, staff).await? else {
        return Ok(Verdict::Rejected);
    };
    let (state, mut store) = staff_factor(tx, keys, staff, f);
    crate::mfa::check_code(&mut store, &state, code, now).await
}

// --- sessions -------------------------------------------------------------------------

/// A staff session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaffSession {
    /// Its id (named by its access tokens).
    pub id: Uuid,
    /// Whose.
    pub staff: Uuid,
    /// When it began.
    pub created_at: DateTime<Utc>,
    /// Last activity written back.
    pub last_seen_at: DateTime<Utc>,
    /// When it ends at the latest.
    pub expires_at: DateTime<Utc>,
}

/// Why a staff session no longer works (callers answer all with "sign in again").
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
    /// The staff member is deactivated.
    Inactive,
}

impl Ended {
    /// A stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Unknown => "unknown session",
            Ended::Revoked => "session revoked",
            Ended::Idle => "session idle too long",
            Ended::Expired => "session expired",
            Ended::Inactive => "staff member deactivated",
        }
    }
}

/// Starts a session.
pub async fn start_session(
    tx: &mut PlatformTx,
    staff: Uuid,
    now: DateTime<Utc>,
) -> Result<StaffSession> {
    let s = StaffSession {
        id: Uuid::new_v4(),
        staff,
        created_at: now,
        last_seen_at: now,
        expires_at: now + ABSOLUTE,
    };
    tx.query(
        "INSERT INTO staff_sessions (id, staff_id, created_at, last_seen_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(s.id)
    .bind(staff)
    .bind(now)
    .bind(now)
    .bind(s.expires_at)
    .execute()
    .await?;
    Ok(s)
}

/// `staff_id, created_at, last_seen_at, expires_at, revoked_at` of a session.
type SessionRow = (
    Uuid,
    DateTime<Utc>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// Checks a session at `now`: the session, its staff member, and whether its activity
/// should be written back ([`touch`]); or why it ended.
pub async fn check_session(
    tx: &mut PlatformTx,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<std::result::Result<(StaffSession, Staff, bool), Ended>> {
    let row: Option<SessionRow> = tx
        .query(
            "SELECT staff_id, created_at, last_seen_at, expires_at, revoked_at
             FROM staff_sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional()
        .await?;
    let Some((staff, created_at, last_seen_at, expires_at, revoked_at)) = row else {
        return Ok(Err(Ended::Unknown));
    };
    if revoked_at.is_some() {
        return Ok(Err(Ended::Revoked));
    }
    if expires_at <= now {
        return Ok(Err(Ended::Expired));
    }
    if last_seen_at + IDLE <= now {
        return Ok(Err(Ended::Idle));
    }
    let Some(member) = get(tx, staff).await?.filter(|s| s.active) else {
        return Ok(Err(Ended::Inactive));
    };
    let session = StaffSession {
        id,
        staff,
        created_at,
        last_seen_at,
        expires_at,
    };
    Ok(Ok((session, member, last_seen_at + TOUCH_EVERY <= now)))
}

/// Writes back activity.
pub async fn touch(tx: &mut PlatformTx, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    tx.query("UPDATE staff_sessions SET last_seen_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(now)
        .execute()
        .await?;
    Ok(())
}

/// Ends a session at once.
pub async fn revoke_session(tx: &mut PlatformTx, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    tx.query("UPDATE staff_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(now)
        .execute()
        .await?;
    Ok(())
}

// --- tenant metadata ------------------------------------------------------------------

/// Counts of a tenant's users, practices and patients (metadata only), read in the
/// tenant's own transaction.
pub async fn tenant_counts(tx: &mut phivault_store::TenantTx) -> Result<(i64, i64, i64)> {
    let (users,): (i64,) = tx
        .query("SELECT COUNT(*) FROM users WHERE tenant_id = $1")
        .fetch_one()
        .await?;
    let (practices,): (i64,) = tx
        .query("SELECT COUNT(*) FROM practices WHERE tenant_id = $1")
        .fetch_one()
        .await?;
    let (patients,): (i64,) = tx
        .query("SELECT COUNT(*) FROM patients WHERE tenant_id = $1")
        .fetch_one()
        .await?;
    Ok((users, practices, patients))
}
