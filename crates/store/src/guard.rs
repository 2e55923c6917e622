//! Static checks on statement text, run before every statement.
//!
//! They are the SQLite half of tenant isolation (PostgreSQL adds row-level security
//! underneath): a tenant-scoped statement must use its first parameter as the tenant
//! filter, and a platform statement may touch only platform tables.

use crate::StoreError;

/// Tables that hold no tenant data and may be queried outside a tenant scope: the tenant
/// registry, the platform's own audit chain (identifiers only), wrapped platform
/// secrets and the staff realm (platform operators, who belong to no tenant, and their
/// break-glass grants).
pub(crate) const PLATFORM_TABLES: &[&str] = &[
    "tenants",
    "platform_audit_events",
    "platform_audit_head",
    "platform_audit_checkpoints",
    "audit_signing_keys",
    "platform_secrets",
    "staff_users",
    "staff_totp",
    "staff_recovery_codes",
    "staff_sessions",
    "staff_challenges",
    "break_glass_grants",
    "guest_devices",
    "device_challenges",
    "platform_vendors",
];

/// Accepts a statement only if `$1` is its tenant filter (`... WHERE ... tenant_id = $1`)
/// or, for an INSERT, its first column is `tenant_id` bound to `$1`.
pub(crate) fn check_tenant_statement(sql: &'static str) -> Result<(), StoreError> {
    let norm = normalize(sql);
    let upper = norm.to_ascii_uppercase();
    if upper.starts_with("INSERT INTO ") {
        let columns_ok = norm.contains("(tenant_id,") || norm.contains("(tenant_id)");
        let values_ok = upper.contains("VALUES ($1,") || upper.contains("VALUES ($1)");
        let select_ok = upper.contains(" SELECT ") && after_where(&norm, &upper);
        if columns_ok && (values_ok || select_ok) {
            return Ok(());
        }
        return Err(StoreError::Unscoped("INSERT must set tenant_id from $1"));
    }
    if after_where(&norm, &upper) {
        Ok(())
    } else {
        Err(StoreError::Unscoped(
            "statement must filter on tenant_id = $1 in its WHERE clause",
        ))
    }
}

/// Accepts a statement only if every table it names is a platform table.
pub(crate) fn check_platform_statement(sql: &'static str) -> Result<(), StoreError> {
    let norm = normalize(sql);
    let tokens: Vec<&str> = norm
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == ';')
        .filter(|t| !t.is_empty())
        .collect();
    let mut named_any = false;
    for pair in tokens.windows(2) {
        let kw = pair[0].to_ascii_uppercase();
        if matches!(kw.as_str(), "FROM" | "JOIN" | "INTO" | "UPDATE") {
            // `ON CONFLICT ... DO UPDATE SET` names no table.
            if kw == "UPDATE" && pair[1].eq_ignore_ascii_case("SET") {
                continue;
            }
            named_any = true;
            let table = pair[1].trim_matches('"').to_ascii_lowercase();
            if !PLATFORM_TABLES.contains(&table.as_str()) {
                return Err(StoreError::Unscoped(
                    "platform statement names a tenant table",
                ));
            }
        }
    }
    if named_any {
        Ok(())
    } else {
        Err(StoreError::Unscoped("platform statement names no table"))
    }
}

/// True when the first WHERE clause opens with `[alias.]tenant_id = $1`, joined to the
/// rest only by AND: a top-level OR would let rows of other tenants through.
fn after_where(norm: &str, upper: &str) -> bool {
    let Some(pos) = upper.find(" WHERE ") else {
        return false;
    };
    let clause = &norm[pos + " WHERE ".len()..];
    let Some(first) = clause.split(' ').next() else {
        return false;
    };
    let column_ok = first == "tenant_id" || first.ends_with(".tenant_id");
    let rest = &clause[first.len()..];
    if !column_ok || !rest.starts_with(" = $1") {
        return false;
    }
    let tail = &rest[" = $1".len()..];
    if !(tail.is_empty() || tail.starts_with(' ') || tail.starts_with(')')) {
        return false;
    }
    !has_top_level_or(&upper[pos..])
}

fn has_top_level_or(upper: &str) -> bool {
    let mut depth = 0i32;
    let bytes = upper.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            b' ' if depth == 0 && upper[i..].starts_with(" OR ") => return true,
            _ => {}
        }
    }
    false
}

/// Collapses runs of white space so that layout does not matter to the checks.
fn normalize(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_select_update_delete_pass() {
        check_tenant_statement("SELECT id FROM patients WHERE tenant_id = $1 AND id = $2").unwrap();
        check_tenant_statement("SELECT p.id FROM patients p\n  WHERE p.tenant_id = $1").unwrap();
        check_tenant_statement("UPDATE users SET status = $2 WHERE tenant_id = $1 AND id = $3")
            .unwrap();
        check_tenant_statement("DELETE FROM encounters WHERE tenant_id = $1 AND id = $2").unwrap();
        check_tenant_statement("INSERT INTO practices (tenant_id, id, name) VALUES ($1, $2, $3)")
            .unwrap();
        check_tenant_statement(
            "SELECT id FROM e WHERE tenant_id = $1 AND (a = $2 OR b IN (SELECT x FROM y WHERE tenant_id = $1))",
        )
        .unwrap();
    }

    #[test]
    fn unscoped_statements_are_refused() {
        for sql in [
            "SELECT id FROM patients",
            "SELECT id FROM patients WHERE id = $1",
            "SELECT id FROM patients WHERE tenant_id = $2",
            "UPDATE patients SET tenant_id = $1 WHERE id = $2",
            "DELETE FROM patients WHERE id = $2 OR tenant_id <> $1",
            "INSERT INTO patients (id, tenant_id) VALUES ($2, $1)",
            "INSERT INTO patients (tenant_id, id) VALUES ($2, $1)",
            "SELECT id FROM patients WHERE id = $2 OR tenant_id = $1",
            "SELECT id FROM patients WHERE tenant_id = $1 AND a = $2 OR b = $3",
            "SELECT id FROM patients WHERE tenant_id = $10",
        ] {
            assert!(check_tenant_statement(sql).is_err(), "accepted: {sql}");
        }
    }

    #[test]
    fn platform_statements_touch_only_platform_tables() {
        check_platform_statement("SELECT id, slug FROM tenants ORDER BY slug").unwrap();
        check_platform_statement("INSERT INTO tenants (id, slug) VALUES ($1, $2)").unwrap();
        assert!(check_platform_statement("SELECT * FROM patients").is_err());
        assert!(check_platform_statement("SELECT * FROM tenants JOIN users ON true").is_err());
        assert!(check_platform_statement("SELECT 1").is_err());
        check_platform_statement(
            "INSERT INTO platform_vendors (id, key) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET key = excluded.key",
        )
        .unwrap();
        assert!(check_platform_statement("UPDATE SET FROM users").is_err());
        assert!(
            check_platform_statement(
                "INSERT INTO tenants (id) VALUES ($1) ON CONFLICT (id) DO UPDATE SET id = (SELECT id FROM users)"
            )
            .is_err()
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    proptest! {
        /// Any statement the tenant guard accepts names `tenant_id = $1` (or inserts it from
        /// `$1`); arbitrary text never panics the checks.
        #[test]
        fn accepted_statements_always_bind_the_tenant(s in "[ -~\n]{0,200}") {
            let sql = leak(s);
            if check_tenant_statement(sql).is_ok() {
                let norm = normalize(sql);
                prop_assert!(norm.contains("tenant_id = $1") || norm.to_ascii_uppercase().contains("VALUES ($1"));
            }
            let _ = check_platform_statement(sql);
        }
    }
}
