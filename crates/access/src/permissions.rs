//! The permission catalogue and the roles that grant it. All checks are on the server.
//!
//! `docs/access.md` lists the same catalogue and role table; a test below reads it and
//! fails if the two differ.

use std::fmt;
use std::str::FromStr;

use phivault_domain::users::Role;
use serde::Serialize;

macro_rules! catalogue {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A permission, spelled `area:action` in the API, in audit events and in
        /// `docs/access.md`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        pub enum Permission {
            $($(#[$doc])* $variant,)*
        }

        impl Permission {
            /// Every permission, in catalogue order.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant,)*];

            /// The permission's stable name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)*
                }
            }
        }
    };
}

catalogue! {
    /// See the tenant's practices (and who the caller is).
    PracticeRead => "practice:read",
    /// Create and change practices.
    PracticeManage => "admin:manage_practices",
    /// Read patient demographics.
    PatientRead => "patient:read",
    /// Register and change patients.
    PatientWrite => "patient:write",
    /// Read encounters.
    EncounterRead => "encounter:read",
    /// Open and change encounters.
    EncounterWrite => "encounter:write",
    /// Record a dictation (a conversation capture) for an encounter.
    DictationCreate => "dictation:create",
    /// Review and correct the notes drafted from one's own dictations.
    DictationReviewOwn => "dictation:review_own",
    /// Copy a finished narrative out of phivault (into an EHR).
    DictationCopyNarrative => "dictation:copy_narrative",
    /// Review notes submitted for quality assurance.
    QaReviewSubmitted => "qa:review_submitted",
    /// See users, roles and grants.
    UserRead => "admin:view_users",
    /// Invite users, change roles and practice grants, deactivate users.
    UserManage => "admin:manage_users",
    /// Manage note templates.
    ManageTemplates => "admin:manage_templates",
    /// Manage clinical protocols.
    ManageProtocols => "admin:manage_protocols",
    /// See the tenant's security readiness report.
    SecurityViewReadiness => "security:view_readiness",
    /// Open or close the gates that let PHI flow (e.g. to an outside service).
    SecurityManagePhiGates => "security:manage_phi_gates",
    /// Read the tenant's audit trail.
    AuditView => "audit:view",
    /// Change tenant settings and grant or remove the owner role.
    TenantManage => "tenant:manage",
    /// See billing information.
    BillingView => "billing:view",
}

impl Permission {
    /// The permissions `role` grants, in catalogue order.
    pub fn granted_by(role: Role) -> &'static [Permission] {
        of_role(role)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not in the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownPermission;

impl fmt::Display for UnknownPermission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a permission of the catalogue")
    }
}

impl std::error::Error for UnknownPermission {}

impl FromStr for Permission {
    type Err = UnknownPermission;

    fn from_str(s: &str) -> Result<Self, UnknownPermission> {
        Permission::ALL
            .iter()
            .copied()
            .find(|p| p.as_str() == s)
            .ok_or(UnknownPermission)
    }
}

use Permission::*;

/// Everything: the tenant's owners.
const OWNER: &[Permission] = Permission::ALL;
/// Everything but tenant settings (and the owner role) and the PHI gates.
const ADMIN: &[Permission] = &[
    PracticeRead,
    PracticeManage,
    PatientRead,
    PatientWrite,
    EncounterRead,
    EncounterWrite,
    DictationCreate,
    DictationReviewOwn,
    DictationCopyNarrative,
    QaReviewSubmitted,
    UserRead,
    UserManage,
    ManageTemplates,
    ManageProtocols,
    SecurityViewReadiness,
    AuditView,
    BillingView,
];
/// Clinicians: the clinical records and every dictation permission.
const PROVIDER: &[Permission] = &[
    PracticeRead,
    PatientRead,
    PatientWrite,
    EncounterRead,
    EncounterWrite,
    DictationCreate,
    DictationReviewOwn,
    DictationCopyNarrative,
];
/// Staff who work with the records (front desk, scribes): clinical reads and writes and
/// dictation, but a narrative leaves phivault only through a provider.
const MEMBER: &[Permission] = &[
    PracticeRead,
    PatientRead,
    PatientWrite,
    EncounterRead,
    EncounterWrite,
    DictationCreate,
    DictationReviewOwn,
];
/// Billers: read the records they bill, never write PHI.
const BILLING: &[Permission] = &[PracticeRead, PatientRead, EncounterRead, BillingView];
/// Reviewers: read the records and review submitted notes.
const QA: &[Permission] = &[PracticeRead, PatientRead, EncounterRead, QaReviewSubmitted];

/// The permissions a role grants.
pub(crate) fn of_role(role: Role) -> &'static [Permission] {
    match role {
        Role::Owner => OWNER,
        Role::Admin => ADMIN,
        Role::Member => MEMBER,
        Role::Billing => BILLING,
        Role::Provider => PROVIDER,
        Role::Qa => QA,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn billing_reads_but_never_writes() {
        assert!(of_role(Role::Billing).contains(&PatientRead));
        assert!(!of_role(Role::Billing).contains(&PatientWrite));
        assert!(!of_role(Role::Billing).contains(&EncounterWrite));
        assert!(!of_role(Role::Billing).contains(&UserManage));
    }

    #[test]
    fn only_owners_manage_the_tenant_and_the_phi_gates() {
        for role in Role::ALL {
            let owner = role == Role::Owner;
            assert_eq!(of_role(role).contains(&TenantManage), owner, "{role}");
            assert_eq!(
                of_role(role).contains(&SecurityManagePhiGates),
                owner,
                "{role}"
            );
        }
        let admin: BTreeSet<_> = of_role(Role::Admin).iter().collect();
        let expected: BTreeSet<_> = Permission::ALL
            .iter()
            .filter(|p| !matches!(p, TenantManage | SecurityManagePhiGates))
            .collect();
        assert_eq!(admin, expected);
    }

    #[test]
    fn names_are_unique_and_parse_back() {
        let mut names: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Permission::ALL.len());
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(*p));
            let (area, action) = p.as_str().split_once(':').expect("area:action");
            assert!(!area.is_empty() && !action.is_empty());
        }
        assert_eq!("patient:READ".parse::<Permission>(), Err(UnknownPermission));
    }

    #[test]
    fn the_catalogue_has_what_the_design_names() {
        for name in [
            "dictation:create",
            "dictation:review_own",
            "dictation:copy_narrative",
            "qa:review_submitted",
            "admin:manage_templates",
            "admin:manage_protocols",
            "admin:manage_users",
            "admin:view_users",
            "admin:manage_practices",
            "security:view_readiness",
            "security:manage_phi_gates",
            "audit:view",
            "tenant:manage",
            "billing:view",
            "patient:read",
            "patient:write",
            "practice:read",
            "encounter:read",
            "encounter:write",
        ] {
            assert!(name.parse::<Permission>().is_ok(), "{name} missing");
        }
    }

    /// The role table of `docs/access.md`: permission name → roles with a mark.
    fn doc_table() -> Vec<(String, BTreeSet<Role>)> {
        let doc = include_str!("../../../docs/access.md");
        let mut lines = doc
            .lines()
            .skip_while(|l| !l.starts_with("| permission |"))
            .take_while(|l| l.starts_with('|'));
        let header = lines.next().expect("docs/access.md has no role table");
        let cells = |l: &str| -> Vec<String> {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        };
        let roles: Vec<Role> = cells(header)[1..]
            .iter()
            .map(|r| r.parse().expect("a role name in the table header"))
            .collect();
        assert_eq!(
            roles,
            Role::ALL,
            "the table's columns are the roles, in order"
        );
        lines.next().expect("separator row");
        lines
            .map(|l| {
                let row = cells(l);
                let name = row[0].trim_matches('`').to_string();
                assert_eq!(row.len(), roles.len() + 1, "row {name} has a cell per role");
                let marked = roles
                    .iter()
                    .zip(&row[1..])
                    .filter(|(_, c)| match c.as_str() {
                        "✓" => true,
                        "" | "–" => false,
                        other => panic!("cell {other:?} in row {name}: use ✓ or –"),
                    })
                    .map(|(r, _)| *r)
                    .collect();
                (name, marked)
            })
            .collect()
    }

    #[test]
    fn docs_access_md_matches_the_code() {
        let table = doc_table();
        let names: Vec<&str> = table.iter().map(|(n, _)| n.as_str()).collect();
        let code: Vec<&str> = Permission::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            names, code,
            "docs/access.md lists the catalogue in code order"
        );
        for (name, marked) in &table {
            let p: Permission = name.parse().unwrap();
            let granted: BTreeSet<Role> = Role::ALL
                .into_iter()
                .filter(|r| of_role(*r).contains(&p))
                .collect();
            assert_eq!(
                marked, &granted,
                "docs/access.md and the code disagree on who holds {name}"
            );
        }
        // Each permission is described in the catalogue section too.
        let doc = include_str!("../../../docs/access.md");
        for p in Permission::ALL {
            assert!(
                doc.contains(&format!("- `{}` —", p.as_str())),
                "docs/access.md does not describe {p}"
            );
        }
    }
}
