//! Permissions and the roles that grant them. All checks are on the server.

use std::fmt;

use phivault_domain::users::Role;
use serde::Serialize;

/// A permission, spelled `area:action` in the API and in audit events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Permission {
    /// See the tenant's practices.
    PracticeRead,
    /// Create and change practices.
    PracticeManage,
    /// Read patient demographics.
    PatientRead,
    /// Register and change patients.
    PatientWrite,
    /// Read encounters.
    EncounterRead,
    /// Open and change encounters.
    EncounterWrite,
    /// See users, roles and grants.
    UserRead,
    /// Create users and change roles and grants.
    UserManage,
    /// Read the tenant's audit trail.
    AuditView,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 9] = [
        Permission::PracticeRead,
        Permission::PracticeManage,
        Permission::PatientRead,
        Permission::PatientWrite,
        Permission::EncounterRead,
        Permission::EncounterWrite,
        Permission::UserRead,
        Permission::UserManage,
        Permission::AuditView,
    ];

    /// The permission's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::PracticeRead => "practice:read",
            Permission::PracticeManage => "admin:manage_practices",
            Permission::PatientRead => "patient:read",
            Permission::PatientWrite => "patient:write",
            Permission::EncounterRead => "encounter:read",
            Permission::EncounterWrite => "encounter:write",
            Permission::UserRead => "admin:view_users",
            Permission::UserManage => "admin:manage_users",
            Permission::AuditView => "audit:view",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

use Permission::*;

/// Owners and admins hold every permission.
const ADMIN: &[Permission] = &Permission::ALL;
const CLINICAL: &[Permission] = &[
    PracticeRead,
    PatientRead,
    PatientWrite,
    EncounterRead,
    EncounterWrite,
];
const READER: &[Permission] = &[PracticeRead, PatientRead, EncounterRead];

/// The permissions a role grants.
pub(crate) fn of_role(role: Role) -> &'static [Permission] {
    match role {
        Role::Owner | Role::Admin => ADMIN,
        Role::Member | Role::Provider => CLINICAL,
        Role::Billing | Role::Qa => READER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_reads_but_never_writes() {
        assert!(of_role(Role::Billing).contains(&PatientRead));
        assert!(!of_role(Role::Billing).contains(&PatientWrite));
        assert!(!of_role(Role::Billing).contains(&UserManage));
    }

    #[test]
    fn names_are_unique() {
        let all = Permission::ALL;
        let mut names: Vec<_> = all.iter().map(|p| p.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
