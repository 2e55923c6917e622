//! Users of a tenant, their roles and their practice grants. Sign-in comes with the
//! identity work; a user here is a row with a tenant, roles and grants.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use phivault_store::TenantTx;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{invalid, on_write};
use crate::{DomainError, PracticeId, PracticeScope, Result, UserId, practices, validate};

/// A tenant role. What each may do is decided by the access layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Owns the tenant: everything, including tenant settings.
    Owner,
    /// Manages users, practices and policy.
    Admin,
    /// Works with the tenant's records.
    Member,
    /// Reads records for billing, often limited to some practices.
    Billing,
    /// A clinician who documents encounters.
    Provider,
    /// Reviews submitted notes.
    Qa,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 6] = [
        Role::Owner,
        Role::Admin,
        Role::Member,
        Role::Billing,
        Role::Provider,
        Role::Qa,
    ];

    /// The role's name as stored and as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Billing => "billing",
            Role::Provider => "provider",
            Role::Qa => "qa",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
            .ok_or(invalid(
                "role",
                "is not one of owner, admin, member, billing, provider, qa",
            ))
    }
}

/// Which practices a user may work in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PracticeAccess {
    /// Every practice of the tenant, present and future.
    All,
    /// Only these.
    Only(Vec<PracticeId>),
}

/// A user with roles and grants.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct User {
    /// Identifier.
    pub id: UserId,
    /// Sign-in address (workforce identity, not patient PHI; still never logged).
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// `active` or `deactivated`.
    pub status: String,
    /// Roles, sorted.
    pub roles: Vec<Role>,
    /// Practice grants.
    pub practices: PracticeAccess,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

impl User {
    /// Whether the user may act at all.
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// What it takes to create a user.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// Sign-in address.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// At least one role.
    pub roles: Vec<Role>,
    /// Practice grants.
    pub practices: PracticeAccess,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    email: String,
    display_name: String,
    status: String,
    all_practices: bool,
    created_at: DateTime<Utc>,
}

/// Creates a user with roles and practice grants.
pub async fn create(tx: &mut TenantTx, new: NewUser, now: DateTime<Utc>) -> Result<User> {
    let email = validate::email(&new.email)?;
    let display_name = validate::text("display_name", &new.display_name, 200)?;
    let roles = normalise_roles(new.roles)?;
    if let PracticeAccess::Only(ids) = &new.practices
        && ids.len() > MAX_PRACTICE_GRANTS
    {
        return Err(invalid("practice_ids", "has more than 500 practices"));
    }
    let id = UserId::generate();
    let all = matches!(new.practices, PracticeAccess::All);
    tx.query(
        "INSERT INTO users (tenant_id, id, email, display_name, status, all_practices, created_at)
         VALUES ($1, $2, $3, $4, 'active', $5, $6)",
    )
    .bind(id)
    .bind(email.as_str())
    .bind(display_name.as_str())
    .bind(all)
    .bind(now)
    .execute()
    .await
    .map_err(on_write("user"))?;
    for role in &roles {
        tx.query("INSERT INTO user_roles (tenant_id, user_id, role) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(role.as_str())
            .execute()
            .await?;
    }
    let practices = match new.practices {
        PracticeAccess::All => PracticeAccess::All,
        PracticeAccess::Only(ids) => {
            let mut ids = ids;
            ids.sort();
            ids.dedup();
            for practice in &ids {
                practices::ensure_visible(tx, PracticeScope::All, *practice).await?;
                tx.query("INSERT INTO user_practices (tenant_id, user_id, practice_id) VALUES ($1, $2, $3)")
                    .bind(id)
                    .bind(*practice)
                    .execute()
                    .await?;
            }
            PracticeAccess::Only(ids)
        }
    };
    Ok(User {
        id,
        email,
        display_name,
        status: "active".into(),
        roles,
        practices,
        created_at: now,
    })
}

/// One user with roles and grants.
pub async fn get(tx: &mut TenantTx, id: UserId) -> Result<User> {
    let row: Option<Row> = tx
        .query(
            "SELECT id, email, display_name, status, all_practices, created_at FROM users
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(id)
        .fetch_optional()
        .await?;
    let row = row.ok_or(DomainError::NotFound("user"))?;
    complete(tx, row).await
}

/// Every user of the tenant, by e-mail.
pub async fn list(tx: &mut TenantTx) -> Result<Vec<User>> {
    let rows: Vec<Row> = tx
        .query(
            "SELECT id, email, display_name, status, all_practices, created_at FROM users
             WHERE tenant_id = $1 ORDER BY email",
        )
        .fetch_all()
        .await?;
    let mut users = Vec::with_capacity(rows.len());
    for row in rows {
        users.push(complete(tx, row).await?);
    }
    Ok(users)
}

async fn complete(tx: &mut TenantTx, row: Row) -> Result<User> {
    let id = UserId::from_uuid(row.id);
    let role_rows: Vec<(String,)> = tx
        .query("SELECT role FROM user_roles WHERE tenant_id = $1 AND user_id = $2 ORDER BY role")
        .bind(id)
        .fetch_all()
        .await?;
    let mut roles = role_rows
        .into_iter()
        .map(|(r,)| r.parse())
        .collect::<Result<Vec<Role>>>()?;
    roles.sort();
    let practices = if row.all_practices {
        PracticeAccess::All
    } else {
        let rows: Vec<(Uuid,)> = tx
            .query("SELECT practice_id FROM user_practices WHERE tenant_id = $1 AND user_id = $2 ORDER BY practice_id")
            .bind(id)
            .fetch_all()
            .await?;
        PracticeAccess::Only(
            rows.into_iter()
                .map(|(p,)| PracticeId::from_uuid(p))
                .collect(),
        )
    };
    Ok(User {
        id,
        email: row.email,
        display_name: row.display_name,
        status: row.status,
        roles,
        practices,
        created_at: row.created_at,
    })
}

/// Deactivates a user; their tokens stop working on the next request (authentication
/// checks the user is active). [`crate::tokens::revoke_all_of_user`] revokes them too.
pub async fn deactivate(tx: &mut TenantTx, id: UserId) -> Result<()> {
    let n = tx
        .query("UPDATE users SET status = 'deactivated' WHERE tenant_id = $1 AND id = $2")
        .bind(id)
        .execute()
        .await?;
    if n == 1 {
        Ok(())
    } else {
        Err(DomainError::NotFound("user"))
    }
}

/// The most practices a user may be granted one by one.
pub const MAX_PRACTICE_GRANTS: usize = 500;

/// Checks and normalises a role list: at least one role, each once, sorted.
fn normalise_roles(mut roles: Vec<Role>) -> Result<Vec<Role>> {
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(invalid("roles", "must name at least one role"));
    }
    Ok(roles)
}

/// Replaces a user's roles; returns the user as changed.
pub async fn set_roles(tx: &mut TenantTx, id: UserId, roles: Vec<Role>) -> Result<User> {
    let roles = normalise_roles(roles)?;
    // The user must exist in this tenant before its rows are touched.
    get(tx, id).await?;
    tx.query("DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2")
        .bind(id)
        .execute()
        .await?;
    for role in &roles {
        tx.query("INSERT INTO user_roles (tenant_id, user_id, role) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(role.as_str())
            .execute()
            .await?;
    }
    get(tx, id).await
}

/// Replaces a user's practice grants; returns the user as changed. Every practice named
/// must be visible in `scope` (the acting user's own practices), else
/// `NotFound("practice")`, so no one grants a practice they cannot see.
pub async fn set_practices(
    tx: &mut TenantTx,
    scope: PracticeScope,
    id: UserId,
    access: PracticeAccess,
) -> Result<User> {
    get(tx, id).await?;
    let (all, mut ids) = match access {
        PracticeAccess::All => (true, Vec::new()),
        PracticeAccess::Only(ids) => (false, ids),
    };
    if ids.len() > MAX_PRACTICE_GRANTS {
        return Err(invalid("practice_ids", "has more than 500 practices"));
    }
    ids.sort();
    ids.dedup();
    for practice in &ids {
        practices::ensure_visible(tx, scope, *practice).await?;
    }
    tx.query("UPDATE users SET all_practices = $3 WHERE tenant_id = $1 AND id = $2")
        .bind(id)
        .bind(all)
        .execute()
        .await?;
    tx.query("DELETE FROM user_practices WHERE tenant_id = $1 AND user_id = $2")
        .bind(id)
        .execute()
        .await?;
    for practice in &ids {
        tx.query(
            "INSERT INTO user_practices (tenant_id, user_id, practice_id) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(*practice)
        .execute()
        .await?;
    }
    get(tx, id).await
}

/// Locks the rows of the tenant's active owners until the transaction ends (a no-op
/// update: PostgreSQL takes row locks, SQLite holds its writer lock anyway). A change that
/// could leave the tenant without an active owner takes it first, so two such changes
/// run one after the other and the second sees the first's result in
/// [`active_owners`].
pub async fn lock_owners(tx: &mut TenantTx) -> Result<()> {
    tx.query(
        "UPDATE users SET status = status
         WHERE tenant_id = $1 AND status = 'active'
           AND id IN (SELECT r.user_id FROM user_roles r WHERE r.tenant_id = $1 AND r.role = 'owner')",
    )
    .execute()
    .await?;
    Ok(())
}

/// How many active users hold the owner role.
pub async fn active_owners(tx: &mut TenantTx) -> Result<u64> {
    let (n,): (i64,) = tx
        .query(
            "SELECT COUNT(*) FROM users u
             WHERE u.tenant_id = $1 AND u.status = 'active'
               AND EXISTS (SELECT 1 FROM user_roles r
                           WHERE r.tenant_id = $1 AND r.user_id = u.id AND r.role = 'owner')",
        )
        .fetch_one()
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}
