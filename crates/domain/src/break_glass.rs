//! Break-glass: emergency, time-boxed access of one staff member to one tenant's PHI, or
//! to one encounter of it.
//!
//! A staff member asks with a reason, a scope and a duration of at most
//! [`MAX_DURATION_MINUTES`]; a *different*, active super_admin approves or denies it
//! within [`PENDING_TTL`]; the grant is live from its approval for its duration, unless
//! revoked first, and then ends by itself: every check compares with `now`, so no job has
//! to run for it to close. Only the requester can use a grant. Grants are platform rows
//! (staff belong to no tenant) kept as a register: they are never deleted.

use chrono::{DateTime, Duration, Utc};
use phivault_store::{PlatformTx, TenantId, TenantTx};
use uuid::Uuid;

use crate::error::invalid;
use crate::staff::{self, StaffRole};
use crate::{EncounterId, PatientId, Result, validate};

/// The longest grant, in minutes (4 hours).
pub const MAX_DURATION_MINUTES: i64 = 240;
/// How long a request waits for a decision before it lapses.
pub const PENDING_TTL: Duration = Duration::hours(1);
/// Shortest reason accepted, in characters: a reason must say something.
pub const REASON_MIN: usize = 10;
/// Longest reason accepted, in characters.
pub const REASON_MAX: usize = 1000;

/// Where a grant opens PHI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantScope {
    /// Every practice, patient and encounter of the tenant (read only).
    Tenant,
    /// One encounter and its patient.
    Encounter(EncounterId),
}

/// A grant's state at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantStatus {
    /// Waiting for a decision.
    Pending,
    /// Not decided in time.
    Lapsed,
    /// Approved and not yet over: usable by its requester.
    Active,
    /// Denied by a super_admin.
    Denied,
    /// Ended early by its requester or a super_admin.
    Revoked,
    /// Ran its duration out.
    Expired,
}

impl GrantStatus {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Pending => "pending",
            GrantStatus::Lapsed => "lapsed",
            GrantStatus::Active => "active",
            GrantStatus::Denied => "denied",
            GrantStatus::Revoked => "revoked",
            GrantStatus::Expired => "expired",
        }
    }
}

/// A break-glass grant. `reason` is the requester's own words about the need (a ticket
/// or incident reference), which staff are told never to fill with PHI; it is kept in
/// the grant register and never copied into audit events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Id.
    pub id: Uuid,
    /// The staff member who asked and who alone may use it.
    pub requester: Uuid,
    /// The tenant it opens.
    pub tenant: TenantId,
    /// The tenant, or one encounter.
    pub scope: GrantScope,
    /// Why.
    pub reason: String,
    /// How long it lasts once approved.
    pub duration_minutes: i64,
    /// When it was asked for.
    pub requested_at: DateTime<Utc>,
    /// `pending`, `approved` or `denied`.
    decision: String,
    /// Who decided.
    pub decided_by: Option<Uuid>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// When an approved grant ends.
    pub expires_at: Option<DateTime<Utc>>,
    /// Who revoked it.
    pub revoked_by: Option<Uuid>,
    /// When.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Grant {
    /// The grant's state at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> GrantStatus {
        if self.revoked_at.is_some() {
            return GrantStatus::Revoked;
        }
        match (self.decision.as_str(), self.expires_at) {
            ("approved", Some(end)) if now < end => GrantStatus::Active,
            ("approved", _) => GrantStatus::Expired,
            ("denied", _) => GrantStatus::Denied,
            _ if now >= self.requested_at + PENDING_TTL => GrantStatus::Lapsed,
            _ => GrantStatus::Pending,
        }
    }
}

/// Why a decision, a revocation or a use of a grant was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such grant.
    Unknown,
    /// Only an active super_admin decides.
    NotSuperAdmin,
    /// The requester cannot approve their own grant.
    SelfApproval,
    /// The grant was already decided, revoked, or lapsed.
    NotPending,
    /// Only the requester or a super_admin revokes; only the requester uses.
    NotYours,
    /// The grant is not (or no longer) active.
    NotActive(GrantStatus),
}

impl Refusal {
    /// A stable name, for logs and audit reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unknown => "unknown grant",
            Refusal::NotSuperAdmin => "only a super_admin decides",
            Refusal::SelfApproval => "the requester cannot approve their own grant",
            Refusal::NotPending => "the grant is not pending",
            Refusal::NotYours => "the grant belongs to another staff member",
            Refusal::NotActive(_) => "the grant is not active",
        }
    }
}

/// A request for a grant.
#[derive(Clone, Debug)]
pub struct NewGrant {
    /// Who asks.
    pub requester: Uuid,
    /// Which tenant.
    pub tenant: TenantId,
    /// The tenant, or one encounter of it.
    pub scope: GrantScope,
    /// Why (10 to 1000 characters).
    pub reason: String,
    /// For how long once approved (1 to 240 minutes).
    pub duration_minutes: i64,
}

/// Records a request. The tenant must exist; an encounter scope must have been checked
/// against the tenant with [`encounter_patient`] by the caller, in the tenant's own
/// transaction.
pub async fn request(tx: &mut PlatformTx, new: NewGrant, now: DateTime<Utc>) -> Result<Grant> {
    let reason = validate::text("reason", &new.reason, REASON_MAX)?;
    if reason.chars().count() < REASON_MIN {
        return Err(invalid("reason", "must have at least 10 characters"));
    }
    if !(1..=MAX_DURATION_MINUTES).contains(&new.duration_minutes) {
        return Err(invalid(
            "duration_minutes",
            "must be between 1 and 240 minutes",
        ));
    }
    // Existence of the tenant, read here rather than left to the foreign key, so a wrong
    // id is a 404 like everywhere else.
    crate::tenants::get(tx, new.tenant).await?;
    let grant = Grant {
        id: Uuid::now_v7(),
        requester: new.requester,
        tenant: new.tenant,
        scope: new.scope,
        reason,
        duration_minutes: new.duration_minutes,
        requested_at: now,
        decision: "pending".into(),
        decided_by: None,
        decided_at: None,
        expires_at: None,
        revoked_by: None,
        revoked_at: None,
    };
    let encounter = match grant.scope {
        GrantScope::Tenant => None,
        GrantScope::Encounter(e) => Some(e.as_uuid()),
    };
    tx.query(
        "INSERT INTO break_glass_grants
           (id, requester_id, target_tenant, encounter_id, reason, duration_minutes, requested_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(grant.id)
    .bind(grant.requester)
    .bind(grant.tenant.as_uuid())
    .bind(encounter)
    .bind(grant.reason.clone())
    .bind(grant.duration_minutes)
    .bind(now)
    .execute()
    .await?;
    Ok(grant)
}

/// The patient of encounter `id` in the transaction's tenant, if the encounter exists
/// (metadata only: nothing is decrypted).
pub async fn encounter_patient(tx: &mut TenantTx, id: EncounterId) -> Result<Option<PatientId>> {
    let row: Option<(Uuid,)> = tx
        .query("SELECT patient_id FROM encounters WHERE tenant_id = $1 AND id = $2")
        .bind(id)
        .fetch_optional()
        .await?;
    Ok(row.map(|(p,)| PatientId::from_uuid(p)))
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: Uuid,
    requester_id: Uuid,
    target_tenant: Uuid,
    encounter_id: Option<Uuid>,
    reason: String,
    duration_minutes: i64,
    requested_at: DateTime<Utc>,
    decision: String,
    decided_by: Option<Uuid>,
    decided_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    revoked_by: Option<Uuid>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<GrantRow> for Grant {
    fn from(r: GrantRow) -> Grant {
        Grant {
            id: r.id,
            requester: r.requester_id,
            tenant: TenantId::from_uuid(r.target_tenant),
            scope: match r.encounter_id {
                Some(e) => GrantScope::Encounter(EncounterId::from_uuid(e)),
                None => GrantScope::Tenant,
            },
            reason: r.reason,
            duration_minutes: r.duration_minutes,
            requested_at: r.requested_at,
            decision: r.decision,
            decided_by: r.decided_by,
            decided_at: r.decided_at,
            expires_at: r.expires_at,
            revoked_by: r.revoked_by,
            revoked_at: r.revoked_at,
        }
    }
}

macro_rules! select_grants {
    ($rest:literal) => {
        concat!(
            "SELECT id, requester_id, target_tenant, encounter_id, reason, duration_minutes,
                    requested_at, decision, decided_by, decided_at, expires_at, revoked_by,
                    revoked_at
             FROM break_glass_grants ",
            $rest
        )
    };
}

/// One grant.
pub async fn get(tx: &mut PlatformTx, id: Uuid) -> Result<Option<Grant>> {
    let row: Option<GrantRow> = tx
        .query(select_grants!("WHERE id = $1"))
        .bind(id)
        .fetch_optional()
        .await?;
    Ok(row.map(Grant::from))
}

/// The newest 200 grants, all of them or those asked for by `requester`.
pub async fn list(tx: &mut PlatformTx, requester: Option<Uuid>) -> Result<Vec<Grant>> {
    let rows: Vec<GrantRow> = tx
        .query(select_grants!(
            "WHERE ($1 IS NULL OR requester_id = $1) ORDER BY requested_at DESC, id DESC LIMIT 200"
        ))
        .bind(requester)
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(Grant::from).collect())
}

/// Approves (`approve`) or denies a pending grant, as staff member `by`: an active
/// super_admin who is not the requester. An approved grant runs from `now` for its
/// duration.
pub async fn decide(
    tx: &mut PlatformTx,
    id: Uuid,
    by: Uuid,
    approve: bool,
    now: DateTime<Utc>,
) -> Result<std::result::Result<Grant, Refusal>> {
    let Some(grant) = get(tx, id).await? else {
        return Ok(Err(Refusal::Unknown));
    };
    // The decider's role is read from the register, not taken from the token.
    let decider = staff::get(tx, by).await?;
    if !decider.is_some_and(|s| s.active && s.role == StaffRole::SuperAdmin) {
        return Ok(Err(Refusal::NotSuperAdmin));
    }
    if grant.requester == by {
        return Ok(Err(Refusal::SelfApproval));
    }
    if grant.status(now) != GrantStatus::Pending {
        return Ok(Err(Refusal::NotPending));
    }
    let expires_at = approve.then(|| now + Duration::minutes(grant.duration_minutes));
    // The `decision = 'pending'` condition makes two concurrent decisions one winner.
    let done = tx
        .query(
            "UPDATE break_glass_grants
             SET decision = $2, decided_by = $3, decided_at = $4, expires_at = $5
             WHERE id = $1 AND decision = 'pending' AND revoked_at IS NULL
               AND requester_id <> $3",
        )
        .bind(id)
        .bind(if approve { "approved" } else { "denied" })
        .bind(by)
        .bind(now)
        .bind(expires_at)
        .execute()
        .await?;
    if done == 0 {
        return Ok(Err(Refusal::NotPending));
    }
    Ok(Ok(Grant {
        decision: if approve { "approved" } else { "denied" }.into(),
        decided_by: Some(by),
        decided_at: Some(now),
        expires_at,
        ..grant
    }))
}

/// Ends a pending or active grant at once, as its requester or a super_admin.
pub async fn revoke(
    tx: &mut PlatformTx,
    id: Uuid,
    by: Uuid,
    now: DateTime<Utc>,
) -> Result<std::result::Result<Grant, Refusal>> {
    let Some(grant) = get(tx, id).await? else {
        return Ok(Err(Refusal::Unknown));
    };
    let member = staff::get(tx, by).await?.filter(|s| s.active);
    let is_super = member.is_some_and(|s| s.role == StaffRole::SuperAdmin);
    if grant.requester != by && !is_super {
        return Ok(Err(Refusal::NotYours));
    }
    let status = grant.status(now);
    if !matches!(status, GrantStatus::Pending | GrantStatus::Active) {
        return Ok(Err(Refusal::NotActive(status)));
    }
    let done = tx
        .query(
            "UPDATE break_glass_grants SET revoked_by = $2, revoked_at = $3
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(by)
        .bind(now)
        .execute()
        .await?;
    if done == 0 {
        return Ok(Err(Refusal::NotActive(GrantStatus::Revoked)));
    }
    Ok(Ok(Grant {
        revoked_by: Some(by),
        revoked_at: Some(now),
        ..grant
    }))
}

/// The grant `id` if staff member `staff` may use it at `now`: theirs, approved, not
/// revoked, not expired.
pub async fn usable(
    tx: &mut PlatformTx,
    id: Uuid,
    staff: Uuid,
    now: DateTime<Utc>,
) -> Result<std::result::Result<Grant, Refusal>> {
    let Some(grant) = get(tx, id).await? else {
        return Ok(Err(Refusal::Unknown));
    };
    if grant.requester != staff {
        return Ok(Err(Refusal::NotYours));
    }
    match grant.status(now) {
        GrantStatus::Active => Ok(Ok(grant)),
        other => Ok(Err(Refusal::NotActive(other))),
    }
}
