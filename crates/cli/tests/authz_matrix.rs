//! The authorization matrix, generated from the route table: every route of the served
//! OpenAPI document × every tenant role × each way of standing towards a resource (own
//! tenant, other tenant, allowed practice, other practice, anonymous), with the expected
//! answer computed from [`rules`] and the role table of `docs/access.md` (which a unit
//! test in `crates/access` checks against the code). A route missing from [`rules`], or a
//! rule for a route that no longer exists, fails the suite: whoever adds a route decides
//! here what it requires.
//!
//! Expected answers: anonymous → 401 `unauthenticated`; another tenant's user → 403
//! `tenant_mismatch`; a role without the route's permission → 403 `forbidden`; a
//! practice-scoped record in a practice the user is not granted → 404 `not_found`;
//! otherwise 2xx. Lists answered to a limited user never show the other practice's ids.
//!
//! Staff routes (`/api/v1/staff/`) are walked with every tenant token and none: all are
//! refused 401, as staff tokens have their own audience. Staff tokens on tenant routes
//! and the staff roles are checked in staff.rs.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Backend, Reply, Server, Site, TenantFixture, patient_json};

const ROLES: [&str; 6] = ["owner", "admin", "member", "billing", "provider", "qa"];

/// What a route needs.
#[derive(Clone, Copy, Debug)]
enum Rule {
    /// Open to anyone (health, key status): 2xx with or without a token.
    Public,
    /// Not walked here, with the reason and where it is tested instead.
    NotWalked(&'static str),
    /// A staff route: every tenant token and no token at all → 401 `unauthenticated`
    /// (staff roles are covered in staff.rs).
    Staff,
    /// A tenant route: the permission (as `docs/access.md` names it) and whether the
    /// request names a record that lives in one practice.
    Tenant {
        permission: &'static str,
        practice_scoped: bool,
    },
}

const fn tenant(permission: &'static str) -> Rule {
    Rule::Tenant {
        permission,
        practice_scoped: false,
    }
}

const fn in_practice(permission: &'static str) -> Rule {
    Rule::Tenant {
        permission,
        practice_scoped: true,
    }
}

/// Every route, keyed by (method, path template) as the OpenAPI document spells them.
fn rules() -> BTreeMap<(&'static str, &'static str), Rule> {
    let t = "/api/v1/tenants/{tenant_id}";
    let entries: Vec<(&'static str, String, Rule)> = vec![
        ("get", "/healthz".into(), Rule::Public),
        ("get", "/readyz".into(), Rule::Public),
        ("get", "/api/v1/sys/keys".into(), Rule::Public),
        (
            "post",
            "/api/v1/sys/unseal".into(),
            Rule::NotWalked(
                "needs a sealed server and answers loopback callers only; \
                 covered by the keys tests",
            ),
        ),
        // Sign-in endpoints are open by design and answer by the credentials in the body
        // or cookie, not by role; their own tests cover them.
        (
            "post",
            "/api/v1/auth/magic-link".into(),
            Rule::NotWalked("public sign-in; covered by the magic-link tests"),
        ),
        (
            "post",
            "/api/v1/auth/magic-link/verify".into(),
            Rule::NotWalked("public sign-in; covered by the session tests"),
        ),
        (
            "post",
            "/api/v1/auth/refresh".into(),
            Rule::NotWalked("refresh cookie, not a role; covered by the session tests"),
        ),
        (
            "post",
            "/api/v1/auth/logout".into(),
            Rule::NotWalked("ends the caller's own session; covered by the session tests"),
        ),
        (
            "post",
            "/api/v1/auth/mfa/verify".into(),
            Rule::NotWalked("second step of a sign-in; covered by the MFA tests"),
        ),
        (
            "post",
            "/api/v1/auth/mfa/enroll".into(),
            Rule::NotWalked("the caller's own factor; covered by the MFA tests"),
        ),
        (
            "post",
            "/api/v1/auth/mfa/enroll/confirm".into(),
            Rule::NotWalked("the caller's own factor; covered by the MFA tests"),
        ),
        // Staff sign-in answers by the credentials in the body; staff.rs covers it.
        (
            "post",
            "/api/v1/staff/auth/login".into(),
            Rule::NotWalked("public staff sign-in; covered by the staff tests"),
        ),
        (
            "post",
            "/api/v1/staff/auth/mfa/enroll".into(),
            Rule::NotWalked("the staff member's own factor; covered by the staff tests"),
        ),
        (
            "post",
            "/api/v1/staff/auth/mfa/enroll/confirm".into(),
            Rule::NotWalked("the staff member's own factor; covered by the staff tests"),
        ),
        (
            "post",
            "/api/v1/staff/auth/mfa/verify".into(),
            Rule::NotWalked("second step of a staff sign-in; covered by the staff tests"),
        ),
        ("post", "/api/v1/staff/auth/logout".into(), Rule::Staff),
        ("get", "/api/v1/staff/tenants".into(), Rule::Staff),
        (
            "get",
            "/api/v1/staff/tenants/{tenant_id}".into(),
            Rule::Staff,
        ),
        ("get", "/api/v1/staff/staff".into(), Rule::Staff),
        ("get", "/api/v1/staff/break-glass".into(), Rule::Staff),
        ("post", "/api/v1/staff/break-glass".into(), Rule::Staff),
        (
            "get",
            "/api/v1/staff/break-glass/{grant_id}".into(),
            Rule::Staff,
        ),
        (
            "post",
            "/api/v1/staff/break-glass/{grant_id}/approve".into(),
            Rule::Staff,
        ),
        (
            "post",
            "/api/v1/staff/break-glass/{grant_id}/deny".into(),
            Rule::Staff,
        ),
        (
            "post",
            "/api/v1/staff/break-glass/{grant_id}/revoke".into(),
            Rule::Staff,
        ),
        (
            "get",
            "/api/v1/staff/break-glass/{grant_id}/encounters".into(),
            Rule::Staff,
        ),
        (
            "get",
            "/api/v1/staff/break-glass/{grant_id}/encounters/{encounter_id}".into(),
            Rule::Staff,
        ),
        (
            "get",
            "/api/v1/staff/break-glass/{grant_id}/patients/{patient_id}".into(),
            Rule::Staff,
        ),
        (
            "get",
            format!("{t}/settings/mfa"),
            tenant("admin:view_users"),
        ),
        ("put", format!("{t}/settings/mfa"), tenant("tenant:manage")),
        ("get", format!("{t}/me"), tenant("practice:read")),
        (
            "get",
            format!("{t}/settings/sessions"),
            tenant("admin:view_users"),
        ),
        (
            "put",
            format!("{t}/settings/sessions"),
            tenant("tenant:manage"),
        ),
        ("get", format!("{t}/practices"), tenant("practice:read")),
        (
            "post",
            format!("{t}/practices"),
            tenant("admin:manage_practices"),
        ),
        ("get", format!("{t}/users"), tenant("admin:view_users")),
        // The body grants a practice: a limited admin cannot grant one they cannot see.
        (
            "post",
            format!("{t}/users"),
            in_practice("admin:manage_users"),
        ),
        (
            "get",
            format!("{t}/users/{{user_id}}"),
            tenant("admin:view_users"),
        ),
        (
            "put",
            format!("{t}/users/{{user_id}}/roles"),
            tenant("admin:manage_users"),
        ),
        (
            "put",
            format!("{t}/users/{{user_id}}/practices"),
            in_practice("admin:manage_users"),
        ),
        (
            "post",
            format!("{t}/users/{{user_id}}/deactivate"),
            tenant("admin:manage_users"),
        ),
        ("get", format!("{t}/patients"), tenant("patient:read")),
        (
            "post",
            format!("{t}/patients"),
            in_practice("patient:write"),
        ),
        (
            "get",
            format!("{t}/patients/{{patient_id}}"),
            in_practice("patient:read"),
        ),
        ("get", format!("{t}/encounters"), tenant("encounter:read")),
        (
            "post",
            format!("{t}/encounters"),
            in_practice("encounter:write"),
        ),
        (
            "get",
            format!("{t}/encounters/{{encounter_id}}"),
            in_practice("encounter:read"),
        ),
        ("get", format!("{t}/audit"), tenant("audit:view")),
        ("get", format!("{t}/breach-report"), tenant("audit:view")),
        // The evidence packet summarises the trail: audit:view, like the trail itself.
        ("post", format!("{t}/evidence"), tenant("audit:view")),
        (
            "post",
            format!("{t}/e2e/sessions"),
            tenant("dictation:create"),
        ),
        (
            "get",
            format!("{t}/settings/e2e"),
            tenant("admin:view_users"),
        ),
        ("put", format!("{t}/settings/e2e"), tenant("tenant:manage")),
        (
            "get",
            format!("{t}/settings/retention"),
            tenant("admin:view_users"),
        ),
        (
            "put",
            format!("{t}/settings/retention"),
            tenant("tenant:manage"),
        ),
        (
            "get",
            format!("{t}/settings/training"),
            tenant("admin:view_users"),
        ),
        (
            "put",
            format!("{t}/settings/training"),
            tenant("tenant:manage"),
        ),
        // PHI out of phivault: answers only once the tenant opted in, which request_for
        // does first.
        (
            "post",
            format!("{t}/exports/training"),
            tenant("tenant:manage"),
        ),
        (
            "get",
            "/api/v1/sys/readiness".into(),
            Rule::NotWalked(
                "answers loopback peers with no token by design; covered by readiness.rs",
            ),
        ),
        (
            "post",
            "/api/v1/sys/seal".into(),
            Rule::NotWalked("needs the keyring's passphrase; covered by readiness.rs"),
        ),
        (
            "get",
            format!("{t}/readiness"),
            tenant("security:view_readiness"),
        ),
        (
            "get",
            format!("{t}/phi-mode"),
            tenant("security:view_readiness"),
        ),
        (
            "put",
            format!("{t}/phi-mode"),
            tenant("security:manage_phi_gates"),
        ),
        (
            "get",
            format!("{t}/vendors"),
            tenant("security:view_readiness"),
        ),
        (
            "put",
            format!("{t}/vendors/{{key}}"),
            tenant("security:manage_phi_gates"),
        ),
        (
            "delete",
            format!("{t}/vendors/{{key}}"),
            tenant("security:manage_phi_gates"),
        ),
        ("get", format!("{t}/baa"), tenant("security:view_readiness")),
        (
            "put",
            format!("{t}/baa"),
            tenant("security:manage_phi_gates"),
        ),
        (
            "delete",
            format!("{t}/baa"),
            tenant("security:manage_phi_gates"),
        ),
        (
            "get",
            format!("{t}/compliance/records"),
            tenant("security:view_readiness"),
        ),
        (
            "post",
            format!("{t}/compliance/records"),
            tenant("security:manage_phi_gates"),
        ),
        (
            "get",
            format!("{t}/compliance/records/{{kind}}/{{subject}}/versions"),
            tenant("security:view_readiness"),
        ),
        // Every user records their own training acknowledgements.
        (
            "post",
            format!("{t}/compliance/training-acks"),
            tenant("practice:read"),
        ),
        (
            "post",
            format!("{t}/encounters/{{encounter_id}}/consents"),
            in_practice("dictation:create"),
        ),
        (
            "get",
            format!("{t}/encounters/{{encounter_id}}/consents"),
            in_practice("encounter:read"),
        ),
        (
            "post",
            format!("{t}/encounters/{{encounter_id}}/consents/{{consent_id}}/revoke"),
            Rule::NotWalked("needs a consent record; covered by recordings.rs"),
        ),
        ("get", format!("{t}/consent-texts"), tenant("practice:read")),
        (
            "post",
            format!("{t}/consent-texts"),
            tenant("admin:manage_templates"),
        ),
        (
            "post",
            format!("{t}/consent-texts/{{text_id}}/retire"),
            Rule::NotWalked("needs a consent text; covered by recordings.rs"),
        ),
        (
            "post",
            format!("{t}/encounters/{{encounter_id}}/recordings"),
            Rule::NotWalked("a streamed audio body; covered by recordings.rs"),
        ),
        (
            "get",
            format!("{t}/encounters/{{encounter_id}}/recordings"),
            in_practice("encounter:read"),
        ),
        (
            "get",
            format!("{t}/recordings/{{recording_id}}"),
            Rule::NotWalked("needs a stored recording; covered by recordings.rs"),
        ),
        (
            "get",
            format!("{t}/recordings/{{recording_id}}/jobs"),
            Rule::NotWalked("needs a stored recording; covered by scribe.rs"),
        ),
        (
            "get",
            format!("{t}/encounters/{{encounter_id}}/transcripts"),
            in_practice("encounter:read"),
        ),
        (
            "get",
            format!("{t}/transcripts/{{transcript_id}}"),
            Rule::NotWalked("needs a transcript; covered by scribe.rs"),
        ),
        (
            "get",
            format!("{t}/encounters/{{encounter_id}}/notes"),
            in_practice("encounter:read"),
        ),
        (
            "get",
            format!("{t}/settings/notes"),
            tenant("admin:view_users"),
        ),
        (
            "put",
            format!("{t}/settings/notes"),
            tenant("tenant:manage"),
        ),
        (
            "get",
            format!("{t}/settings/vocabulary"),
            tenant("admin:view_users"),
        ),
        (
            "put",
            format!("{t}/settings/vocabulary"),
            tenant("tenant:manage"),
        ),
        (
            "get",
            format!("{t}/notes/{{note_id}}"),
            Rule::NotWalked("needs a note; covered by scribe.rs"),
        ),
        (
            "post",
            format!("{t}/notes/{{note_id}}/approve"),
            Rule::NotWalked("needs a note; covered by scribe.rs"),
        ),
    ];
    // A session's routes answer its participants only (its owner, a device that
    // joined); anyone else gets 404 as for a session that does not exist. e2e.rs walks
    // them with the owner, a joined device, another user, another tenant, another
    // device and no token.
    let participants = [
        ("get", format!("{t}/e2e/sessions/{{session_id}}")),
        ("post", format!("{t}/e2e/sessions/{{session_id}}/invites")),
        ("post", format!("{t}/e2e/sessions/{{session_id}}/end")),
        ("get", format!("{t}/e2e/sessions/{{session_id}}/utterances")),
        (
            "post",
            format!("{t}/e2e/sessions/{{session_id}}/utterances"),
        ),
        ("get", format!("{t}/e2e/sessions/{{session_id}}/stream")),
    ]
    .into_iter()
    .map(|(m, p)| {
        (
            m,
            p,
            Rule::NotWalked("session participants only; covered by e2e.rs"),
        )
    });
    // Guest devices have no account: registration is public and proved by a signature,
    // and the join takes a device token; e2e.rs covers both.
    let devices = [
        ("post", "/api/v1/devices/challenge"),
        ("post", "/api/v1/devices/register"),
        ("post", "/api/v1/e2e/join"),
    ]
    .into_iter()
    .map(|(m, p)| {
        (
            m,
            p.to_string(),
            Rule::NotWalked("guest devices; covered by e2e.rs"),
        )
    });
    let entries: Vec<_> = entries
        .into_iter()
        .chain(participants)
        .chain(devices)
        .collect();
    entries
        .into_iter()
        .map(|(m, p, r)| ((m, &*Box::leak(p.into_boxed_str())), r))
        .collect()
}

/// The role table of `docs/access.md`: role → permission names.
fn role_table() -> BTreeMap<String, BTreeSet<String>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/access.md"))
        .expect("read docs/access.md");
    let mut lines = doc
        .lines()
        .skip_while(|l| !l.starts_with("| permission |"))
        .take_while(|l| l.starts_with('|'));
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('`').to_string())
            .collect()
    };
    let roles = cells(lines.next().expect("role table header"))[1..].to_vec();
    assert_eq!(roles, ROLES, "docs/access.md's role columns");
    lines.next();
    let mut table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in lines {
        let row = cells(line);
        for (role, cell) in roles.iter().zip(&row[1..]) {
            let entry = table.entry(role.clone()).or_default();
            if cell == "✓" {
                entry.insert(row[0].clone());
            }
        }
    }
    table
}

/// How the caller stands towards the request. (Staff: see the module comment.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    /// A user of the tenant with every practice, on a record of the second practice.
    OwnTenant,
    /// A user of another tenant (same role), on the first tenant's path and records.
    OtherTenant,
    /// A user limited to the first practice, on a record of it.
    AllowedPractice,
    /// The same limited user, on a record of the second practice.
    OtherPractice,
    /// No token.
    Anonymous,
}

const CONTEXTS: [Context; 5] = [
    Context::OwnTenant,
    Context::OtherTenant,
    Context::AllowedPractice,
    Context::OtherPractice,
    Context::Anonymous,
];

/// What an answer must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Success,
    Error(u16, &'static str),
}

fn expected(rule: Rule, ctx: Context, holds: bool) -> Expect {
    match rule {
        Rule::Public => Expect::Success,
        Rule::NotWalked(_) => unreachable!(),
        // Tenant principals are no staff, whatever their role or tenant.
        Rule::Staff => Expect::Error(401, "unauthenticated"),
        Rule::Tenant {
            practice_scoped, ..
        } => match ctx {
            Context::Anonymous => Expect::Error(401, "unauthenticated"),
            Context::OtherTenant => Expect::Error(403, "tenant_mismatch"),
            _ if !holds => Expect::Error(403, "forbidden"),
            Context::OtherPractice if practice_scoped => Expect::Error(404, "not_found"),
            _ => Expect::Success,
        },
    }
}

/// The records of one practice of tenant A.
struct Side {
    practice: String,
    patient: String,
    encounter: String,
}

struct World {
    _site: Site,
    server: Server,
    a: TenantFixture,
    p1: Side,
    p2: Side,
    /// Tokens of tenant A's users limited to P1, by role.
    limited: BTreeMap<&'static str, String>,
    /// Tokens of tenant A's users with every practice, by role.
    all: BTreeMap<&'static str, String>,
    /// Tokens of tenant B's users, by role.
    other: BTreeMap<&'static str, String>,
    /// A member of A that user-administration calls read and change.
    target: String,
}

async fn build(backend: Backend) -> World {
    let site = Site::new(backend).await;
    let a = site.tenant("matrix-a", "Synthetic Matrix A");
    let b = site.tenant("matrix-b", "Synthetic Matrix B");
    let p1 = site.practice(&a.id, "Matrix Practice One");
    let p2 = site.practice(&a.id, "Matrix Practice Two");
    let mut limited = BTreeMap::new();
    let mut all = BTreeMap::new();
    let mut other = BTreeMap::new();
    for role in ROLES {
        let u = site.user(
            &a.id,
            &format!("{role}-p1@matrix-a.example.test"),
            "Synthetic Limited",
            &[role],
            Some(&[p1.as_str()]),
        );
        limited.insert(role, site.token(&a.id, &u).1);
        let u = site.user(
            &a.id,
            &format!("{role}-all@matrix-a.example.test"),
            "Synthetic Wide",
            &[role],
            None,
        );
        all.insert(role, site.token(&a.id, &u).1);
        let u = site.user(
            &b.id,
            &format!("{role}-other@matrix-b.example.test"),
            "Synthetic Other",
            &[role],
            None,
        );
        other.insert(role, site.token(&b.id, &u).1);
    }
    let target = site.user(
        &a.id,
        "target@matrix-a.example.test",
        "Synthetic Target",
        &["member"],
        Some(&[p1.as_str()]),
    );
    let server = site.serve();
    let token = a.owner_token.clone();
    let side = async |practice: String, mrn: &str| {
        let patient = server
            .create_patient(
                &a.id,
                &token,
                &patient_json(&practice, mrn, "Synthetic", "Matrix", "1975-05-05"),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let encounter = server
            .create_encounter(&a.id, &token, &patient, "matrix visit")
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        Side {
            practice,
            patient,
            encounter,
        }
    };
    let p1 = side(p1, "MATRIX-1").await;
    let p2 = side(p2, "MATRIX-2").await;
    World {
        _site: site,
        server,
        a,
        p1,
        p2,
        limited,
        all,
        other,
        target,
    }
}

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn matrix_vendor() -> Value {
    json!({"name": "Synthetic Matrix Vendor", "service": "billing", "touches_phi": false, "baa": null})
}

/// A new incident each time (no subject, expected version 0).
fn matrix_incident() -> Value {
    json!({"kind": "incident", "expected_version": 0, "body": {
        "opened_on": "2026-01-05", "category": "other", "severity": "low", "status": "open",
        "summary": "Synthetic matrix incident", "affected_records": 0, "audit_event_refs": []}})
}

fn matrix_baa() -> Value {
    json!({"signed_on": "2026-01-04", "signatory": "Synthetic Signatory", "evidence_ref": "dms://baa/matrix"})
}

/// The request for one route in one context: path and body.
async fn request_for(
    w: &World,
    method: &str,
    template: &str,
    side: &Side,
) -> (String, Option<Value>) {
    let path = template
        .replace("{tenant_id}", &w.a.id)
        .replace("{patient_id}", &side.patient)
        .replace("{encounter_id}", &side.encounter)
        .replace("{grant_id}", &uuid::Uuid::new_v4().to_string())
        .replace("{key}", "matrix-vendor");
    let rest = template.rsplit("{tenant_id}/").next().unwrap_or("");
    // A compliance history needs a subject: a fresh incident, saved by the owner.
    let path = if rest.ends_with("{kind}/{subject}/versions") {
        let made = w
            .server
            .post_json(
                &w.a.path("compliance/records"),
                Some(&w.a.owner_token),
                &matrix_incident(),
            )
            .await;
        let subject = made.expect(201).json()["subject"]
            .as_str()
            .unwrap()
            .to_string();
        path.replace("{kind}", "incident")
            .replace("{subject}", &subject)
    } else {
        path
    };
    let body = match (method, rest) {
        ("post", "practices") => Some(json!({"name": format!("Matrix Practice {}", unique())})),
        ("post", "users") => Some(json!({
            "email": format!("invitee-{}@matrix-a.example.test", unique()),
            "display_name": "Synthetic Invitee",
            "roles": ["member"],
            "practice_ids": [side.practice],
        })),
        ("put", "users/{user_id}/roles") => Some(json!({"roles": ["member"]})),
        ("put", "users/{user_id}/practices") => Some(json!({"practice_ids": [side.practice]})),
        ("post", "patients") => Some(patient_json(
            &side.practice,
            &format!("MATRIX-{}", unique()),
            "Synthetic",
            "Matrix",
            "1976-06-06",
        )),
        ("post", "encounters") => Some(json!({"patient_id": side.patient, "reason": "matrix"})),
        ("post", "encounters/{encounter_id}/consents") => {
            Some(json!({"method": "verbal", "jurisdiction": "US-NY"}))
        }
        ("post", "consent-texts") => Some(json!({
            "name": "Synthetic matrix consent",
            "version": unique(),
            "language": "en",
            "body": "A synthetic consent text for the authorization matrix.",
        })),
        ("post", "e2e/sessions") => {
            Some(json!({"mode": "two_device", "key_fingerprint": "ab".repeat(32)}))
        }
        // Policies are shown with their source and author, which are not set: put the
        // default back where it is.
        ("put", "settings/retention") => Some(json!({"reset": ["audio"]})),
        ("put", "settings/training") => Some(json!({"training_opt_in": true})),
        // A sandbox tenant cannot turn PHI mode on; off is always accepted.
        ("put", "phi-mode") => Some(json!({"phi_mode": false})),
        ("put", "vendors/{key}") => Some(matrix_vendor()),
        ("put", "baa") => Some(matrix_baa()),
        ("post", "compliance/records") => Some(matrix_incident()),
        // The caller's own acknowledgement (user_id omitted), of a course never seen.
        ("post", "compliance/training-acks") => Some(json!({"expected_version": 0, "body": {
            "course": format!("Matrix course {}", unique()), "version": "1", "completed_on": "2026-01-05"}})),
        // Something to read or remove, put there by the owner first.
        ("get", "baa") | ("delete", "baa") => {
            let put = w
                .server
                .request(Method::PUT, &w.a.path("baa"))
                .bearer_auth(&w.a.owner_token)
                .json(&matrix_baa());
            w.server.send(put).await.expect(200);
            None
        }
        ("delete", "vendors/{key}") => {
            let put = w
                .server
                .request(Method::PUT, &w.a.path("vendors/matrix-vendor"))
                .bearer_auth(&w.a.owner_token)
                .json(&matrix_vendor());
            w.server.send(put).await.expect(200);
            None
        }
        ("post", "exports/training") => {
            let on = w
                .server
                .request(Method::PUT, &w.a.path("settings/training"))
                .bearer_auth(&w.a.owner_token)
                .json(&json!({"training_opt_in": true}));
            w.server.send(on).await.expect(200);
            None
        }
        // Put back what is there.
        ("put", setting) if setting.starts_with("settings/") => Some(
            w.server
                .get(&w.a.path(setting), Some(&w.a.owner_token))
                .await
                .expect(200)
                .json(),
        ),
        _ => None,
    };
    // The report needs a window and one filter; an empty window of the year 2000 will do.
    let path = if rest == "breach-report" {
        format!("{path}?since=2000-01-01T00:00:00Z&until=2000-12-31T00:00:00Z&ip=127.0.0.1")
    } else {
        path
    };
    let path = if rest == "users/{user_id}/deactivate" {
        // A fresh user each time, so every call has someone to deactivate.
        let fresh = w
            .server
            .post_json(
                &w.a.path("users"),
                Some(&w.a.owner_token),
                &json!({
                    "email": format!("leaver-{}@matrix-a.example.test", unique()),
                    "display_name": "Synthetic Leaver",
                    "roles": ["member"],
                    "practice_ids": [w.p1.practice],
                }),
            )
            .await;
        let id = fresh.expect(201).json()["id"].as_str().unwrap().to_string();
        path.replace("{user_id}", &id)
    } else {
        path.replace("{user_id}", &w.target)
    };
    (path, body)
}

async fn send(
    w: &World,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Reply {
    let mut rb = w
        .server
        .request(method.to_uppercase().parse::<Method>().unwrap(), path);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(b);
    }
    w.server.send(rb).await
}

async fn matrix(backend: Backend) {
    let started = Instant::now();
    let w = build(backend).await;
    let doc = w
        .server
        .get("/api/openapi.json", None)
        .await
        .expect(200)
        .json();
    let rules = rules();
    let roles = role_table();

    // The route table and the rules cover each other.
    let mut routes = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            routes.push((method.clone(), template.clone()));
        }
    }
    let missing: Vec<String> = routes
        .iter()
        .filter(|(m, t)| !rules.contains_key(&(m.as_str(), t.as_str())))
        .map(|(m, t)| format!("{} {t}", m.to_uppercase()))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without an authorization rule (add them to rules() in authz_matrix.rs): {missing:?}"
    );
    let stale: Vec<String> = rules
        .keys()
        .filter(|(m, t)| !routes.iter().any(|(rm, rt)| rm == m && rt == t))
        .map(|(m, t)| format!("{} {t}", m.to_uppercase()))
        .collect();
    assert!(
        stale.is_empty(),
        "rules for routes that do not exist: {stale:?}"
    );

    // Each role's users hold exactly the documented permissions.
    for role in ROLES {
        for token in [&w.limited[role], &w.all[role]] {
            let me = w.server.get(&w.a.path("me"), Some(token)).await;
            let held: BTreeSet<String> = me.expect(200).json()["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                held, roles[role],
                "{role}'s permissions differ from docs/access.md"
            );
        }
    }

    let mut failures = Vec::new();
    let mut cells = 0;
    for ((method, template), rule) in &rules {
        if let Rule::NotWalked(why) = rule {
            eprintln!("not walked: {} {template}: {why}", method.to_uppercase());
            continue;
        }
        for role in ROLES {
            for ctx in CONTEXTS {
                let (token, side) = match ctx {
                    Context::OwnTenant => (Some(&w.all[role]), &w.p2),
                    Context::OtherTenant => (Some(&w.other[role]), &w.p1),
                    Context::AllowedPractice => (Some(&w.limited[role]), &w.p1),
                    Context::OtherPractice => (Some(&w.limited[role]), &w.p2),
                    Context::Anonymous => (None, &w.p1),
                };
                let holds = match rule {
                    Rule::Tenant { permission, .. } => {
                        assert!(
                            roles["owner"].contains(*permission),
                            "{permission} of {method} {template} is not in docs/access.md"
                        );
                        roles[role].contains(*permission)
                    }
                    _ => true,
                };
                let want = expected(*rule, ctx, holds);
                let (path, body) = request_for(&w, method, template, side).await;
                let reply = send(&w, method, &path, body.as_ref(), token.map(String::as_str)).await;
                cells += 1;
                let label = format!("{} {template} as {role} ({ctx:?})", method.to_uppercase());
                match want {
                    Expect::Success => {
                        if !(200..300).contains(&reply.status) {
                            failures.push(format!(
                                "{label}: expected 2xx, got {}: {}",
                                reply.status,
                                reply.text()
                            ));
                        } else if method == &"get"
                            && matches!(ctx, Context::AllowedPractice | Context::OtherPractice)
                            && ["practices", "patients", "encounters"]
                                .iter()
                                .any(|r| template.contains(&format!("}}/{r}")))
                        {
                            // A limited user never sees the other practice's records.
                            let text = reply.text();
                            for id in [&w.p2.practice, &w.p2.patient, &w.p2.encounter] {
                                if text.contains(id.as_str()) {
                                    failures.push(format!("{label}: shows practice two's {id}"));
                                }
                            }
                        }
                    }
                    Expect::Error(status, code) => {
                        if let Err(why) = reply.check_error(status, code) {
                            failures.push(format!("{label}: {why}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        cells >= 16 * ROLES.len() * CONTEXTS.len(),
        "walked only {cells} cells"
    );
    eprintln!(
        "authorization matrix on {backend:?}: {cells} cells in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_authorization_matrix() {
    matrix(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_authorization_matrix() {
    matrix(Backend::Postgres).await;
}
