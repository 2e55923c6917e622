//! PostgreSQL role hygiene: the server's role must be subject to row-level security.
//!
//! Row-level security means nothing if the role that serves requests can bypass it. A
//! superuser or a `BYPASSRLS` role skips every policy, and a table's owner can switch
//! its policies off, so the serving role must be neither, and must own no table.
//! Migrations therefore run as a separate owner role, which grants the serving role
//! exactly the privileges listed in [`APP_GRANTS`].

use crate::{Db, Result, StoreError};

/// The privileges the serving role gets on each table. A test checks that every table in
/// the schema is listed, so a new table cannot be forgotten.
pub const APP_GRANTS: &[(&str, &str)] = &[
    ("_sqlx_migrations", "SELECT"),
    ("tenants", "SELECT, INSERT, UPDATE"),
    ("practices", "SELECT, INSERT, UPDATE, DELETE"),
    ("users", "SELECT, INSERT, UPDATE, DELETE"),
    ("user_roles", "SELECT, INSERT, UPDATE, DELETE"),
    ("user_practices", "SELECT, INSERT, UPDATE, DELETE"),
    ("api_tokens", "SELECT, INSERT, UPDATE, DELETE"),
    ("tenant_keks", "SELECT, INSERT, UPDATE"),
    ("data_keys", "SELECT, INSERT, UPDATE"),
    ("patients", "SELECT, INSERT, UPDATE, DELETE"),
    ("patient_identifiers", "SELECT, INSERT, UPDATE, DELETE"),
    ("encounters", "SELECT, INSERT, UPDATE, DELETE"),
    ("magic_links", "SELECT, INSERT, UPDATE, DELETE"),
    // The audit trail is append-only: no UPDATE or DELETE, and triggers refuse them too.
    ("audit_events", "SELECT, INSERT"),
    ("audit_heads", "SELECT, INSERT, UPDATE"),
    ("audit_checkpoints", "SELECT, INSERT"),
    ("platform_audit_events", "SELECT, INSERT"),
    ("platform_audit_head", "SELECT, UPDATE"),
    ("platform_audit_checkpoints", "SELECT, INSERT"),
    ("audit_signing_keys", "SELECT, INSERT"),
    ("tenant_settings", "SELECT, INSERT, UPDATE"),
    ("sessions", "SELECT, INSERT, UPDATE, DELETE"),
    ("session_refresh_tokens", "SELECT, INSERT, UPDATE, DELETE"),
    ("platform_secrets", "SELECT, INSERT"),
    ("user_totp", "SELECT, INSERT, UPDATE, DELETE"),
    ("recovery_codes", "SELECT, INSERT, UPDATE, DELETE"),
    ("mfa_challenges", "SELECT, INSERT, UPDATE, DELETE"),
    ("staff_users", "SELECT, INSERT, UPDATE"),
    ("staff_totp", "SELECT, INSERT, UPDATE, DELETE"),
    ("staff_recovery_codes", "SELECT, INSERT, UPDATE, DELETE"),
    ("staff_sessions", "SELECT, INSERT, UPDATE"),
    ("staff_challenges", "SELECT, INSERT, UPDATE"),
    ("break_glass_grants", "SELECT, INSERT, UPDATE"),
    ("guest_devices", "SELECT, INSERT, UPDATE"),
    ("device_challenges", "SELECT, INSERT, UPDATE, DELETE"),
    ("e2e_sessions", "SELECT, INSERT, UPDATE"),
    ("e2e_participants", "SELECT, INSERT, UPDATE"),
    ("e2e_invites", "SELECT, INSERT, UPDATE"),
    ("e2e_utterances", "SELECT, INSERT, DELETE"),
    ("jobs", "SELECT, INSERT, UPDATE, DELETE"),
    ("consent_texts", "SELECT, INSERT, UPDATE"),
    ("consents", "SELECT, INSERT, UPDATE"),
    ("recordings", "SELECT, INSERT, UPDATE, DELETE"),
    ("transcripts", "SELECT, INSERT, UPDATE"),
    ("notes", "SELECT, INSERT, UPDATE"),
    ("retention_policies", "SELECT, INSERT, UPDATE, DELETE"),
    ("platform_vendors", "SELECT, INSERT, UPDATE, DELETE"),
    ("tenant_vendors", "SELECT, INSERT, UPDATE, DELETE"),
    ("tenant_baas", "SELECT, INSERT, UPDATE, DELETE"),
    // Versions are appended, never rewritten.
    ("compliance_records", "SELECT, INSERT"),
];

/// What phivault found out about a PostgreSQL role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRoleReport {
    /// The role's name.
    pub role: String,
    /// Superusers bypass row-level security.
    pub superuser: bool,
    /// `BYPASSRLS` roles bypass row-level security.
    pub bypass_rls: bool,
    /// Tables in the schema owned by the role (owners can disable policies).
    pub owned_tables: Vec<String>,
}

impl AppRoleReport {
    /// Why serving with this role would be unsafe, or `None` if it is safe.
    pub fn problem(&self) -> Option<String> {
        if self.superuser {
            Some(format!(
                "role {} is a superuser and bypasses row-level security",
                self.role
            ))
        } else if self.bypass_rls {
            Some(format!("role {} has BYPASSRLS", self.role))
        } else if !self.owned_tables.is_empty() {
            Some(format!(
                "role {} owns tables ({}); run migrations as a separate owner role",
                self.role,
                self.owned_tables.join(", ")
            ))
        } else {
            None
        }
    }
}

/// One table's row-level security state, for reports and tests.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RoleCheck {
    /// Table name.
    pub table: String,
    /// Whether the table has a `tenant_id` column.
    pub has_tenant_id: bool,
    /// `ENABLE ROW LEVEL SECURITY`.
    pub rls_enabled: bool,
    /// `FORCE ROW LEVEL SECURITY`.
    pub rls_forced: bool,
    /// The table's owner.
    pub owner: String,
}

fn valid_role_name(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 63
        && role.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Db {
    fn require_pg(&self) -> Result<&sqlx::PgPool> {
        self.pg_pool()
            .ok_or_else(|| StoreError::UnsafeRole("role checks apply to PostgreSQL only".into()))
    }

    /// Inspects `role` (or the connected role when `None`).
    pub async fn inspect_role(&self, role: Option<&str>) -> Result<AppRoleReport> {
        let pool = self.require_pg()?;
        let (name, superuser, bypass_rls): (String, bool, bool) = sqlx::query_as(
            "SELECT rolname::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = COALESCE($1, current_user)",
        )
        .bind(role)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| StoreError::UnsafeRole(format!("role {} does not exist", role.unwrap_or("?"))))?;
        let owned_tables: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm')
               AND pg_get_userbyid(c.relowner) = $1 ORDER BY 1",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        Ok(AppRoleReport {
            role: name,
            superuser,
            bypass_rls,
            owned_tables,
        })
    }

    /// Refuses to serve on PostgreSQL unless the connected role is subject to row-level
    /// security. A no-op on SQLite.
    pub async fn check_serving_role(&self) -> Result<Option<AppRoleReport>> {
        if self.pg_pool().is_none() {
            return Ok(None);
        }
        let report = self.inspect_role(None).await?;
        match report.problem() {
            Some(problem) => Err(StoreError::UnsafeRole(problem)),
            None => Ok(Some(report)),
        }
    }

    /// As the schema owner: grants the serving role its privileges, creating the role
    /// (NOLOGIN until an operator gives it a password or another login method) if it is
    /// missing, then checks that it is safe to serve with.
    pub async fn grant_app_role(&self, role: &str) -> Result<AppRoleReport> {
        if !valid_role_name(role) {
            return Err(StoreError::UnsafeRole(format!(
                "{role:?} is not a valid role name (a-z, 0-9, _)"
            )));
        }
        let pool = self.require_pg()?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(role)
                .fetch_one(pool)
                .await?;
        if !exists {
            let create = format!(
                "CREATE ROLE {role} NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
            );
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(pool)
                .await
                .map_err(|e| {
                    StoreError::UnsafeRole(format!(
                        "role {role} does not exist and could not be created ({e}); create it with \
                     CREATE ROLE {role} LOGIN NOBYPASSRLS"
                    ))
                })?;
        }
        let mut tx = pool.begin().await?;
        // The role name was validated above, so quoting is not needed.
        let usage = format!(
            "GRANT USAGE ON SCHEMA {} TO {role}",
            current_schema(pool).await?
        );
        sqlx::query(sqlx::AssertSqlSafe(usage))
            .execute(&mut *tx)
            .await?;
        for (table, privileges) in APP_GRANTS {
            let revoke = format!("REVOKE ALL ON {table} FROM {role}");
            sqlx::query(sqlx::AssertSqlSafe(revoke))
                .execute(&mut *tx)
                .await?;
            let grant = format!("GRANT {privileges} ON {table} TO {role}");
            sqlx::query(sqlx::AssertSqlSafe(grant))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let report = self.inspect_role(Some(role)).await?;
        match report.problem() {
            Some(problem) => Err(StoreError::UnsafeRole(problem)),
            None => Ok(report),
        }
    }

    /// Row-level security state of every table in the schema.
    pub async fn rls_report(&self) -> Result<Vec<RoleCheck>> {
        let pool = self.require_pg()?;
        let rows = sqlx::query_as::<_, RoleCheck>(
            "SELECT c.relname::text AS table,
                    EXISTS (SELECT 1 FROM pg_attribute a
                            WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped) AS has_tenant_id,
                    c.relrowsecurity AS rls_enabled,
                    c.relforcerowsecurity AS rls_forced,
                    pg_get_userbyid(c.relowner)::text AS owner
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
             ORDER BY 1",
        )
        .fetch_all(pool)
        .await?;
        Ok(rows)
    }
}

async fn current_schema(pool: &sqlx::PgPool) -> Result<String> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(pool)
        .await?;
    if valid_role_name(&schema) {
        Ok(schema)
    } else {
        Err(StoreError::UnsafeRole(format!(
            "unsupported schema name {schema:?}"
        )))
    }
}
