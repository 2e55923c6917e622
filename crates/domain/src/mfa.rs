//! Second factors: TOTP (RFC 6238, SHA-1, 6 digits, 30-second steps, one step of skew)
//! with single-use codes, hashed recovery codes, lockout after repeated failures, the
//! tenant's MFA policy, and sign-in challenges that wait for the second factor.
//!
//! The TOTP secret is sealed under a data key of the tenant (as PHI fields are), so a
//! copy of the database does not hold it in clear. A code is accepted once: the step it
//! matched is remembered and no code of that step or an earlier one is accepted again.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use phivault_crypto::Binding;
use phivault_crypto::keys::KeyService;
use phivault_store::TenantTx;
use sha2::{Digest, Sha256};
use totp_rs::{Builder, Totp};
use uuid::Uuid;

use crate::error::invalid;
use crate::users::Role;
use crate::{DomainError, Result, UserId};

/// Failed second-factor attempts before the factor locks.
pub const MAX_FAILURES: i64 = 5;
/// How long a locked factor stays locked.
pub const LOCKOUT: Duration = Duration::minutes(15);
/// How long a sign-in waits for its second factor.
pub const CHALLENGE_TTL: Duration = Duration::minutes(5);
/// Recovery codes issued at enrollment.
pub const RECOVERY_CODES: usize = 10;
const ISSUER: &str = "phivault";

/// Who a tenant requires to use a second factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaPolicy {
    /// Nobody (a user may still enroll).
    None,
    /// Owners and admins.
    Admins,
    /// Every user.
    Everyone,
}

impl MfaPolicy {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaPolicy::None => "none",
            MfaPolicy::Admins => "admins",
            MfaPolicy::Everyone => "everyone",
        }
    }

    /// Parses a stored or submitted name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => MfaPolicy::None,
            "admins" => MfaPolicy::Admins,
            "everyone" => MfaPolicy::Everyone,
            _ => return None,
        })
    }

    /// Whether a user with `roles` must use a second factor.
    pub fn requires(self, roles: &[Role]) -> bool {
        match self {
            MfaPolicy::None => false,
            MfaPolicy::Everyone => true,
            MfaPolicy::Admins => roles.iter().any(|r| matches!(r, Role::Owner | Role::Admin)),
        }
    }
}

/// The tenant's MFA policy.
pub async fn policy(tx: &mut TenantTx) -> Result<MfaPolicy> {
    let row: Option<(String,)> = tx
        .query("SELECT mfa_policy FROM tenant_settings WHERE tenant_id = $1")
        .fetch_optional()
        .await?;
    Ok(row
        .and_then(|(p,)| MfaPolicy::parse(&p))
        .unwrap_or(MfaPolicy::None))
}

/// Sets the tenant's MFA policy.
pub async fn set_policy(tx: &mut TenantTx, p: MfaPolicy, now: DateTime<Utc>) -> Result<()> {
    let defaults = crate::sessions::SessionPolicy::default();
    tx.query(
        "INSERT INTO tenant_settings (tenant_id, session_idle_secs, session_absolute_secs, mfa_policy, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET mfa_policy = excluded.mfa_policy,
             updated_at = excluded.updated_at",
    )
    .bind(defaults.idle.num_seconds())
    .bind(defaults.absolute.num_seconds())
    .bind(p.as_str())
    .bind(now)
    .execute()
    .await?;
    Ok(())
}

fn binding(tx: &TenantTx, user: UserId) -> Binding<'static> {
    Binding {
        tenant: tx.tenant(),
        kind: "user_totp",
        object: user.as_uuid(),
        field: "secret",
    }
}

/// The TOTP of `secret` (shared with the staff realm).
pub(crate) fn totp(secret: Vec<u8>, account: &str) -> Result<Totp> {
    Builder::new()
        .with_secret(secret)
        .with_account_name(account.replace(':', ""))
        .with_issuer(Some(ISSUER.to_string()))
        .build()
        .map_err(|_| invalid("totp", "could not be set up"))
}

/// What a user needs to add the factor to an authenticator app. The URI holds the
/// secret: show it to the user once, never log it.
pub struct Enrollment {
    /// `otpauth://totp/...` with the secret.
    pub otpauth_uri: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrollment([redacted])")
    }
}

/// Starts (or restarts) TOTP enrollment: a new secret, sealed, not yet enabled. An
/// enabled factor cannot be replaced this way.
pub async fn begin_enrollment(
    tx: &mut TenantTx,
    keys: &KeyService,
    user: UserId,
    account: &str,
    now: DateTime<Utc>,
) -> Result<Enrollment> {
    if is_enrolled(tx, user).await? {
        return Err(DomainError::Conflict("second factor"));
    }
    let mut secret = vec![0u8; 20];
    getrandom::fill(&mut secret)
        .map_err(|_| invalid("totp", "the system random number generator failed"))?;
    let key = keys.new_data_key(tx, "user_totp", now).await?;
    let sealed = key.seal(&binding(tx, user), &secret)?;
    tx.query("DELETE FROM user_totp WHERE tenant_id = $1 AND user_id = $2 AND enabled_at IS NULL")
        .bind(user)
        .execute()
        .await?;
    tx.query(
        "INSERT INTO user_totp (tenant_id, user_id, data_key_id, secret, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user)
    .bind(key.key_ref().id)
    .bind(sealed)
    .bind(now)
    .execute()
    .await?;
    let uri = totp(secret, account)?
        .to_url()
        .map_err(|_| invalid("totp", "could not be set up"))?;
    Ok(Enrollment { otpauth_uri: uri })
}

#[derive(sqlx::FromRow)]
struct FactorRow {
    data_key_id: Uuid,
    secret: Vec<u8>,
    enabled_at: Option<DateTime<Utc>>,
    last_used_step: i64,
    failures: i64,
    locked_until: Option<DateTime<Utc>>,
}

async fn factor(tx: &mut TenantTx, user: UserId) -> Result<Option<FactorRow>> {
    Ok(tx
        .query(
            "SELECT data_key_id, secret, enabled_at, last_used_step, failures, locked_until
             FROM user_totp WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(user)
        .fetch_optional()
        .await?)
}

/// Whether the user has an enabled second factor.
pub async fn is_enrolled(tx: &mut TenantTx, user: UserId) -> Result<bool> {
    Ok(factor(tx, user)
        .await?
        .is_some_and(|f| f.enabled_at.is_some()))
}

/// How a second-factor attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted.
    Accepted,
    /// Wrong, reused or malformed code (counted towards the lockout).
    Rejected,
    /// Too many failures: refused until the lockout ends, whatever the code.
    Locked,
}

/// The stored state of one second factor, whichever realm owns it.
pub(crate) struct FactorState {
    /// Enrollment was confirmed.
    pub(crate) enabled: bool,
    /// The last TOTP step accepted.
    pub(crate) last_used_step: i64,
    /// Failures in a row.
    pub(crate) failures: i64,
    /// Locked until then, if locked.
    pub(crate) locked_until: Option<DateTime<Utc>>,
}

/// Where a second factor lives: a tenant user's row or a staff member's row. The rules
/// of [`check_code`] are the same for both.
pub(crate) trait FactorStore {
    /// The TOTP secret, unsealed.
    async fn secret(&mut self) -> Result<Vec<u8>>;
    /// Records `step` as used if it is later than the last one used; `false` if another
    /// use of the same code won.
    async fn claim_step(&mut self, step: i64) -> Result<bool>;
    /// Uses up the recovery code with this hash; `false` if there is none unused.
    async fn use_recovery(&mut self, hash: [u8; 32], now: DateTime<Utc>) -> Result<bool>;
    /// Enables the factor, `step` being the code that confirmed it.
    async fn enable(&mut self, step: i64, now: DateTime<Utc>) -> Result<()>;
    /// Replaces the recovery codes with these hashes.
    async fn replace_recovery(&mut self, hashes: &[[u8; 32]]) -> Result<()>;
    /// Stores the failure count and lockout.
    async fn set_failures(
        &mut self,
        failures: i64,
        locked_until: Option<DateTime<Utc>>,
    ) -> Result<()>;
}

/// Checks a TOTP code (accepted once) or a recovery code (used up) against a factor in
/// `state`; failures count towards a lockout. The caller commits whatever the verdict,
/// so that counters stick.
pub(crate) async fn check_code<S: FactorStore>(
    store: &mut S,
    state: &FactorState,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Verdict> {
    if state.locked_until.is_some_and(|until| until > now) {
        return Ok(Verdict::Locked);
    }
    let code = code.trim();
    let accepted = if !state.enabled {
        false
    } else if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        let secret = store.secret().await?;
        let step = totp(secret, "user")?.check(code, u64::try_from(now.timestamp()).unwrap_or(0));
        match step.map(|s| i64::try_from(s).unwrap_or(i64::MAX)) {
            Some(step) if step > state.last_used_step => store.claim_step(step).await?,
            _ => false,
        }
    } else if code.len() <= 64 {
        store.use_recovery(code_hash(code), now).await?
    } else {
        false
    };
    if accepted {
        store.set_failures(0, None).await?;
        return Ok(Verdict::Accepted);
    }
    let failures = state.failures + 1;
    let locked_until = (failures >= MAX_FAILURES).then(|| now + LOCKOUT);
    store
        .set_failures(
            if locked_until.is_some() { 0 } else { failures },
            locked_until,
        )
        .await?;
    Ok(if locked_until.is_some() {
        Verdict::Locked
    } else {
        Verdict::Rejected
    })
}

/// Confirms a pending factor with a first code from the app: the factor is enabled and
/// fresh recovery codes (stored hashed) are returned once.
pub(crate) async fn confirm_code<S: FactorStore>(
    store: &mut S,
    state: &FactorState,
    code: &str,
    now: DateTime<Utc>,
) -> Result<RecoveryCodes> {
    if state.enabled {
        return Err(DomainError::Conflict("second factor"));
    }
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("code", "must be the 6 digits the app shows"));
    }
    let secret = store.secret().await?;
    let Some(step) = totp(secret, "user")?.check(code, u64::try_from(now.timestamp()).unwrap_or(0))
    else {
        return Err(invalid(
            "code",
            "does not match; check the app's clock and try again",
        ));
    };
    store
        .enable(i64::try_from(step).unwrap_or(i64::MAX), now)
        .await?;
    let codes = (0..RECOVERY_CODES)
        .map(|_| new_recovery_code())
        .collect::<Result<Vec<_>>>()?;
    let hashes: Vec<[u8; 32]> = codes.iter().map(|c| code_hash(c)).collect();
    store.replace_recovery(&hashes).await?;
    Ok(RecoveryCodes(codes))
}

/// A tenant user's factor, in the user's tenant transaction.
struct UserFactor<'a> {
    tx: &'a mut TenantTx,
    keys: &'a KeyService,
    user: UserId,
    data_key_id: Uuid,
    sealed: Vec<u8>,
}

impl FactorStore for UserFactor<'_> {
    async fn enable(&mut self, step: i64, now: DateTime<Utc>) -> Result<()> {
        self.tx
            .query(
                "UPDATE user_totp SET enabled_at = $3, last_used_step = $4, failures = 0
                 WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(self.user)
            .bind(now)
            .bind(step)
            .execute()
            .await?;
        Ok(())
    }

    async fn replace_recovery(&mut self, hashes: &[[u8; 32]]) -> Result<()> {
        self.tx
            .query("DELETE FROM recovery_codes WHERE tenant_id = $1 AND user_id = $2")
            .bind(self.user)
            .execute()
            .await?;
        for h in hashes {
            self.tx
                .query(
                    "INSERT INTO recovery_codes (tenant_id, user_id, code_hash) VALUES ($1, $2, $3)",
                )
                .bind(self.user)
                .bind(&h[..])
                .execute()
                .await?;
        }
        Ok(())
    }

    async fn secret(&mut self) -> Result<Vec<u8>> {
        let key = self.keys.data_key(self.tx, self.data_key_id).await?;
        Ok(key.open(&binding(self.tx, self.user), &self.sealed)?)
    }

    async fn claim_step(&mut self, step: i64) -> Result<bool> {
        // Conditional, so that of two concurrent uses of one code only one wins.
        Ok(self
            .tx
            .query(
                "UPDATE user_totp SET last_used_step = $3
                 WHERE tenant_id = $1 AND user_id = $2 AND last_used_step < $3",
            )
            .bind(self.user)
            .bind(step)
            .execute()
            .await?
            == 1)
    }

    async fn use_recovery(&mut self, hash: [u8; 32], now: DateTime<Utc>) -> Result<bool> {
        Ok(self
            .tx
            .query(
                "UPDATE recovery_codes SET used_at = $4
                 WHERE tenant_id = $1 AND user_id = $2 AND code_hash = $3 AND used_at IS NULL",
            )
            .bind(self.user)
            .bind(&hash[..])
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
            .query(
                "UPDATE user_totp SET failures = $3, locked_until = $4
                 WHERE tenant_id = $1 AND user_id = $2",
            )
            .bind(self.user)
            .bind(failures)
            .bind(locked_until)
            .execute()
            .await?;
        Ok(())
    }
}

fn user_factor<'a>(
    tx: &'a mut TenantTx,
    keys: &'a KeyService,
    user: UserId,
    f: FactorRow,
) -> (FactorState, UserFactor<'a>) {
    (
        FactorState {
            enabled: f.enabled_at.is_some(),
            last_used_step: f.last_used_step,
            failures: f.failures,
            locked_until: f.locked_until,
        },
        UserFactor {
            tx,
            keys,
            user,
            data_key_id: f.data_key_id,
            sealed: f.secret,
        },
    )
}

/// Checks a TOTP code (or a recovery code) for `user` at `now` ([`check_code`]'s rules).
pub async fn verify(
    tx: &mut TenantTx,
    keys: &KeyService,
    user: UserId,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Verdict> {
    let Some(f) = factor(tx, user).await? else {
        return Ok(Verdict::Rejected);
    };
    let (state, mut store) = user_factor(tx, keys, user, f);
    check_code(&mut store, &state, code, now).await
}

/// The stored hash of a recovery code (shared with the staff realm).
pub(crate) fn code_hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.replace('-', "").to_ascii_lowercase().as_bytes()).into()
}

/// Recovery codes in clear, shown once at enrollment. `Debug` redacts.
pub struct RecoveryCodes(pub Vec<String>);

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCodes([{} redacted])", self.0.len())
    }
}

/// Confirms enrollment with a first code from the app: the factor is enabled and fresh
/// recovery codes (stored hashed) are returned once.
pub async fn confirm_enrollment(
    tx: &mut TenantTx,
    keys: &KeyService,
    user: UserId,
    code: &str,
    now: DateTime<Utc>,
) -> Result<RecoveryCodes> {
    let Some(f) = factor(tx, user).await? else {
        return Err(DomainError::NotFound("pending second factor"));
    };
    let (state, mut store) = user_factor(tx, keys, user, f);
    confirm_code(&mut store, &state, code, now).await
}

/// A fresh recovery code in clear (`xxxxxx-xxxxxx`; shared with the staff realm).
pub(crate) fn new_recovery_code() -> Result<String> {
    let mut raw = [0u8; 10];
    getrandom::fill(&mut raw)
        .map_err(|_| invalid("totp", "the system random number generator failed"))?;
    let text = URL_SAFE_NO_PAD.encode(raw).to_ascii_lowercase();
    Ok(format!("{}-{}", &text[..6], &text[6..12]))
}

/// A sign-in waiting for its second factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Its id, handed to the client.
    pub id: Uuid,
    /// Whose.
    pub user: UserId,
    /// Whether the session to start should have a refresh token.
    pub remember: bool,
}

/// Opens a challenge after the first factor.
pub async fn open_challenge(
    tx: &mut TenantTx,
    user: UserId,
    remember: bool,
    now: DateTime<Utc>,
) -> Result<Challenge> {
    let id = Uuid::new_v4();
    tx.query(
        "INSERT INTO mfa_challenges (tenant_id, id, user_id, remember, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(user)
    .bind(remember)
    .bind(now + CHALLENGE_TTL)
    .execute()
    .await?;
    Ok(Challenge { id, user, remember })
}

/// `user_id, remember, expires_at, used_at` of a challenge.
type ChallengeRow = (Uuid, bool, DateTime<Utc>, Option<DateTime<Utc>>);

/// Finds a live challenge (unexpired, unused).
pub async fn find_challenge(
    tx: &mut TenantTx,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Challenge>> {
    let row: Option<ChallengeRow> = tx
        .query(
            "SELECT user_id, remember, expires_at, used_at FROM mfa_challenges
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(id)
        .fetch_optional()
        .await?;
    Ok(match row {
        Some((user, remember, expires_at, None)) if expires_at > now => Some(Challenge {
            id,
            user: UserId::from_uuid(user),
            remember,
        }),
        _ => None,
    })
}

/// Marks a challenge used; `false` if someone else used it first.
pub async fn close_challenge(tx: &mut TenantTx, id: Uuid, now: DateTime<Utc>) -> Result<bool> {
    Ok(tx
        .query(
            "UPDATE mfa_challenges SET used_at = $3 WHERE tenant_id = $1 AND id = $2 AND used_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute()
        .await?
        == 1)
}

/// The current code for a secret, for tests that act as the authenticator app.
#[doc(hidden)]
pub fn code_for_uri(uri: &str, at: DateTime<Utc>) -> Option<String> {
    let t = Totp::from_url(uri).ok()?;
    Some(t.generate(u64::try_from(at.timestamp()).ok()?).to_string())
}
