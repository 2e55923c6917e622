//! The audit trail seen from outside, on SQLite and on PostgreSQL:
//! - every route in the OpenAPI document is walked, and each one that touches PHI (or
//!   changes administrative data) must leave an event carrying its request id, so a new
//!   route that forgets to audit fails here;
//! - with the audit store made unwritable while PHI requests run, every one of them is
//!   refused with 503 `audit_unavailable` and nothing is served or written; when the
//!   store comes back the server recovers by itself;
//! - a retention setting below six years is refused at start-up.

mod support;

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Backend, Launch, Server, Site, TenantFixture, patient_json};

/// What a route must leave in the trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Audited {
    /// Touches PHI: an event with the request id, naming fields, never values.
    Phi,
    /// Changes administrative data: an event with the request id and an after-snapshot.
    Admin,
    /// Neither (health, documents, the caller's own metadata, lists without PHI).
    No,
}

struct Fixture {
    site: Site,
    server: Server,
    t: TenantFixture,
    practice: String,
    patient: String,
    encounter: String,
    /// A member whose roles and grants the walk changes, and one it deactivates.
    member: String,
    leaver: String,
}

/// Synthetic values that must never appear in the trail.
const CANARY_MRN: &str = "SYNTH-MRN-AUDIT-4417";
const CANARY_FAMILY: &str = "Zzsyntheticaudit";
const CANARY_REASON: &str = "synthetic reason canary 90210-audit";

async fn fixture(backend: Backend) -> Fixture {
    let site = Site::new(backend).await;
    let t = site.tenant("audit-walk", "Synthetic Audit Clinic");
    let practice = site.practice(&t.id, "Synthetic Practice");
    let member = site.user(
        &t.id,
        "member@audit-walk.example.test",
        "Synthetic Member",
        &["member"],
        None,
    );
    let leaver = site.user(
        &t.id,
        "leaver@audit-walk.example.test",
        "Synthetic Leaver",
        &["member"],
        None,
    );
    // A vendor for the walk to remove and register again, and the tenant's BAA for its
    // GET.
    site.cli(&[
        "vendor",
        "set",
        "--tenant",
        &t.id,
        "--key",
        "walk-vendor",
        "--name",
        "Synthetic Walk Vendor",
        "--service",
        "billing",
    ]);
    site.cli(&[
        "baa",
        "set",
        "--tenant",
        &t.id,
        "--signed-on",
        "2026-01-03",
        "--signatory",
        "Synthetic Signatory",
        "--evidence-ref",
        "dms://baa/walk-tenant",
    ]);
    // A compliance record, so that the walk has a history to read.
    let sanctions = support::write_file(
        site.data_dir(),
        "walk-sanctions.json",
        r#"{"version_label": "v1", "adopted_on": "2026-01-02", "document_ref": "dms://walk"}"#,
    );
    site.cli(&[
        "compliance",
        "record",
        "--tenant",
        &t.id,
        "--kind",
        "sanctions_policy",
        "--body-file",
        sanctions.to_str().unwrap(),
    ]);
    let server = site.serve();
    let patient = server
        .create_patient(
            &t.id,
            &t.owner_token,
            &patient_json(
                &practice,
                CANARY_MRN,
                "Synthetic",
                CANARY_FAMILY,
                "1970-01-01",
            ),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let encounter = server
        .create_encounter(&t.id, &t.owner_token, &patient, CANARY_REASON)
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    Fixture {
        site,
        server,
        t,
        practice,
        patient,
        encounter,
        member,
        leaver,
    }
}

/// One request per route of the OpenAPI document. A route missing here fails the walk:
/// whoever adds a route decides here what it must audit.
fn walk(f: &Fixture) -> BTreeMap<(&'static str, &'static str), (String, Option<Value>, Audited)> {
    let t = |rest: &str| f.t.path(rest);
    let mut m = BTreeMap::new();
    let mut add = |method, template, path: String, body: Option<Value>, audited| {
        m.insert((method, template), (path, body, audited));
    };
    add("get", "/healthz", "/healthz".into(), None, Audited::No);
    add("get", "/readyz", "/readyz".into(), None, Audited::No);
    add(
        "get",
        "/api/v1/sys/keys",
        "/api/v1/sys/keys".into(),
        None,
        Audited::No,
    );
    // Unsealing needs a sealed server; it is audited on the platform chain (tested in
    // the keys tests' server runs), not part of this walk.
    add(
        "post",
        "/api/v1/sys/unseal",
        String::new(),
        None,
        Audited::No,
    );
    // Sign-in links are answered before the work is done and audited by a background job
    // (`auth.link.sent`, anonymous actor); tested in magic_link.rs, not part of this walk.
    add(
        "post",
        "/api/v1/auth/magic-link",
        String::new(),
        None,
        Audited::No,
    );
    // Sign-in, refresh, sign-out and the second factor need a session or a challenge;
    // their events (auth.login, auth.failed, auth.logout, auth.mfa.enrolled) are checked
    // in sessions.rs, not part of this walk.
    for (method, template) in [
        ("post", "/api/v1/auth/magic-link/verify"),
        ("post", "/api/v1/auth/refresh"),
        ("post", "/api/v1/auth/logout"),
        ("post", "/api/v1/auth/mfa/verify"),
        ("post", "/api/v1/auth/mfa/enroll"),
        ("post", "/api/v1/auth/mfa/enroll/confirm"),
    ] {
        add(method, template, String::new(), None, Audited::No);
    }
    // Staff routes need a staff sign-in (password and TOTP); their events (auth.login,
    // auth.failed, auth.logout, auth.mfa.enrolled, staff.read, all on the platform chain)
    // are checked in staff.rs, and break-glass (its grant lifecycle on both chains, its
    // reads in the tenant's chain) in break_glass.rs, not part of this walk.
    for (method, template) in [
        ("post", "/api/v1/staff/auth/login"),
        ("post", "/api/v1/staff/auth/mfa/enroll"),
        ("post", "/api/v1/staff/auth/mfa/enroll/confirm"),
        ("post", "/api/v1/staff/auth/mfa/verify"),
        ("post", "/api/v1/staff/auth/logout"),
        ("get", "/api/v1/staff/tenants"),
        ("get", "/api/v1/staff/tenants/{tenant_id}"),
        ("get", "/api/v1/staff/staff"),
        ("get", "/api/v1/staff/break-glass"),
        ("post", "/api/v1/staff/break-glass"),
        ("get", "/api/v1/staff/break-glass/{grant_id}"),
        ("post", "/api/v1/staff/break-glass/{grant_id}/approve"),
        ("post", "/api/v1/staff/break-glass/{grant_id}/deny"),
        ("post", "/api/v1/staff/break-glass/{grant_id}/revoke"),
        ("get", "/api/v1/staff/break-glass/{grant_id}/encounters"),
        (
            "get",
            "/api/v1/staff/break-glass/{grant_id}/encounters/{encounter_id}",
        ),
        (
            "get",
            "/api/v1/staff/break-glass/{grant_id}/patients/{patient_id}",
        ),
    ] {
        add(method, template, String::new(), None, Audited::No);
    }
    // End-to-end sessions carry ciphertext only; their events (e2e.session.created,
    // e2e.invite.consumed, e2e.utterance.stored/read, e2e.session.ended,
    // device.registered) need a session, a device and an invite, and are checked in
    // e2e.rs, not part of this walk.
    for (method, template) in [
        ("post", "/api/v1/devices/challenge"),
        ("post", "/api/v1/devices/register"),
        ("post", "/api/v1/e2e/join"),
        ("post", "/api/v1/tenants/{tenant_id}/e2e/sessions"),
        (
            "get",
            "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}",
        ),
        (
            "post",
            "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/invites",
        ),
        (
            "post",
            "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/end",
        ),
        (
            "get",
            "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/utterances",
        ),
        (
            "post",
            "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/utterances",
        ),
        (
            "get",
            "/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}/stream",
        ),
    ] {
        add(method, template, String::new(), None, Audited::No);
    }
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/settings/sessions",
        t("settings/sessions"),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/settings/sessions",
        t("settings/sessions"),
        Some(json!({"session_idle_secs": 900, "session_absolute_secs": 43200})),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/settings/e2e",
        t("settings/e2e"),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/settings/e2e",
        t("settings/e2e"),
        Some(json!({"e2e_retention_hours": 24})),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/settings/notes",
        t("settings/notes"),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/settings/notes",
        t("settings/notes"),
        Some(json!({"note_kind": "soap"})),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/settings/vocabulary",
        t("settings/vocabulary"),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/settings/vocabulary",
        t("settings/vocabulary"),
        Some(json!({"terms": ["metoprolol", "acetaminophen"]})),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/settings/retention",
        t("settings/retention"),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/settings/retention",
        t("settings/retention"),
        Some(json!({
            "policies": [{"data_class": "note", "window_hours": 52560, "basis": "after_creation"}],
            "reset": ["audio"]
        })),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/settings/training",
        t("settings/training"),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/settings/training",
        t("settings/training"),
        Some(json!({"training_opt_in": false})),
        Audited::Admin,
    );
    // Answers only once the tenant opted in to training; retention.rs checks its
    // phi.export events, and the denied one while the tenant is opted out.
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/exports/training",
        String::new(),
        None,
        Audited::No,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/settings/mfa",
        t("settings/mfa"),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/settings/mfa",
        t("settings/mfa"),
        Some(json!({"mfa_policy": "none"})),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/me",
        t("me"),
        None,
        Audited::No,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/practices",
        t("practices"),
        None,
        Audited::No,
    );
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/practices",
        t("practices"),
        Some(json!({"name": "Synthetic Walk Practice"})),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/users",
        t("users"),
        None,
        Audited::No,
    );
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/users",
        t("users"),
        Some(json!({
            "email": "walk@audit-walk.example.test",
            "display_name": "Synthetic Walker",
            "roles": ["provider"],
            "all_practices": true
        })),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/users/{user_id}",
        t(&format!("users/{}", f.member)),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/users/{user_id}/roles",
        t(&format!("users/{}/roles", f.member)),
        Some(json!({"roles": ["member", "qa"]})),
        Audited::Admin,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/users/{user_id}/practices",
        t(&format!("users/{}/practices", f.member)),
        Some(json!({"practice_ids": [f.practice]})),
        Audited::Admin,
    );
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/users/{user_id}/deactivate",
        t(&format!("users/{}/deactivate", f.leaver)),
        None,
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/patients",
        t("patients"),
        None,
        Audited::Phi,
    );
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/patients",
        t("patients"),
        Some(patient_json(
            &f.practice,
            "SYNTH-MRN-WALK-1",
            "Synthetic",
            "Walker",
            "1980-02-02",
        )),
        Audited::Phi,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/patients/{patient_id}",
        t(&format!("patients/{}", f.patient)),
        None,
        Audited::Phi,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/encounters",
        t("encounters"),
        None,
        Audited::Phi,
    );
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/encounters",
        t("encounters"),
        Some(json!({"patient_id": f.patient, "reason": "synthetic walk reason"})),
        Audited::Phi,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}",
        t(&format!("encounters/{}", f.encounter)),
        None,
        Audited::Phi,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/audit",
        t("audit"),
        None,
        Audited::No,
    );
    // Reads ids from the trail, not PHI; producing it is audited breach.reported with a
    // summary as the after-snapshot (breach.rs checks the report itself).
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/breach-report",
        t("breach-report?since=2000-01-01T00:00:00Z&until=2000-12-31T00:00:00Z&ip=127.0.0.1"),
        None,
        Audited::Admin,
    );
    // The evidence packet holds no PHI; producing it is audited evidence.exported with
    // the archive's digest as the after-snapshot (evidence.rs checks the packet).
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/evidence",
        t("evidence?sample_events=5"),
        None,
        Audited::Admin,
    );
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/consents",
        t(&format!("encounters/{}/consents", f.encounter)),
        Some(json!({"method": "verbal", "jurisdiction": "US-NY"})),
        Audited::Phi,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/consents",
        t(&format!("encounters/{}/consents", f.encounter)),
        None,
        Audited::Phi,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/transcripts",
        t(&format!("encounters/{}/transcripts", f.encounter)),
        None,
        Audited::Phi,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/notes",
        t(&format!("encounters/{}/notes", f.encounter)),
        None,
        Audited::Phi,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/recordings",
        t(&format!("encounters/{}/recordings", f.encounter)),
        None,
        Audited::Phi,
    );
    // Consent texts are reference data, not PHI: a change is audited
    // (admin.reference.updated), a read is not.
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/consent-texts",
        t("consent-texts"),
        None,
        Audited::No,
    );
    // These need a record made first (a consent, a consent text, an audio body, a stored
    // recording); their events (phi.update on consent, admin.reference.updated,
    // recording.created, phi.read) are checked in recordings.rs, not part of this walk.
    for (method, template) in [
        ("post", "/api/v1/tenants/{tenant_id}/consent-texts"),
        (
            "post",
            "/api/v1/tenants/{tenant_id}/consent-texts/{text_id}/retire",
        ),
        (
            "post",
            "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/consents/{consent_id}/revoke",
        ),
        (
            "post",
            "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}/recordings",
        ),
        (
            "get",
            "/api/v1/tenants/{tenant_id}/recordings/{recording_id}",
        ),
        (
            "get",
            "/api/v1/tenants/{tenant_id}/recordings/{recording_id}/jobs",
        ),
        (
            "get",
            "/api/v1/tenants/{tenant_id}/transcripts/{transcript_id}",
        ),
        ("get", "/api/v1/tenants/{tenant_id}/notes/{note_id}"),
        (
            "post",
            "/api/v1/tenants/{tenant_id}/notes/{note_id}/approve",
        ),
    ] {
        add(method, template, String::new(), None, Audited::No);
    }
    // Readiness: settings of the tenant, not PHI. Sealing needs the keyring's
    // passphrase and removing the BAA leaves the walk's GET without one: both are
    // walked, with their events, in readiness.rs.
    add(
        "get",
        "/api/v1/sys/readiness",
        "/api/v1/sys/readiness".into(),
        None,
        Audited::No,
    );
    add("post", "/api/v1/sys/seal", String::new(), None, Audited::No);
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/readiness",
        t("readiness"),
        None,
        Audited::No,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/phi-mode",
        t("phi-mode"),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/phi-mode",
        t("phi-mode"),
        Some(json!({"phi_mode": false})),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/vendors",
        t("vendors"),
        None,
        Audited::No,
    );
    add(
        "delete",
        "/api/v1/tenants/{tenant_id}/vendors/{key}",
        t("vendors/walk-vendor"),
        None,
        Audited::Admin,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/vendors/{key}",
        t("vendors/walk-vendor"),
        Some(json!({
            "name": "Synthetic Walk Vendor",
            "service": "billing",
            "touches_phi": true,
            "baa": {"signed_on": "2026-01-02", "evidence_ref": "dms://baa/walk"}
        })),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/baa",
        t("baa"),
        None,
        Audited::No,
    );
    add(
        "put",
        "/api/v1/tenants/{tenant_id}/baa",
        t("baa"),
        Some(json!({
            "signed_on": "2026-01-03",
            "signatory": "Synthetic Signatory",
            "evidence_ref": "dms://baa/walk-tenant"
        })),
        Audited::Admin,
    );
    add(
        "delete",
        "/api/v1/tenants/{tenant_id}/baa",
        String::new(),
        None,
        Audited::No,
    );
    // Compliance records are not PHI: a save is audited (compliance.recorded, with an
    // after-snapshot), a read is not.
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/compliance/records",
        t("compliance/records"),
        None,
        Audited::No,
    );
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/compliance/records",
        t("compliance/records"),
        Some(json!({"kind": "incident", "expected_version": 0, "body": {
            "opened_on": "2026-01-05", "category": "privacy", "severity": "low",
            "status": "open", "summary": "Synthetic walk incident", "affected_records": 0,
            "audit_event_refs": [1]
        }})),
        Audited::Admin,
    );
    add(
        "get",
        "/api/v1/tenants/{tenant_id}/compliance/records/{kind}/{subject}/versions",
        t("compliance/records/sanctions_policy/current/versions"),
        None,
        Audited::No,
    );
    add(
        "post",
        "/api/v1/tenants/{tenant_id}/compliance/training-acks",
        t("compliance/training-acks"),
        Some(json!({"expected_version": 0, "body": {
            "course": "Synthetic Walk Course", "version": "1", "completed_on": "2026-01-05"
        }})),
        Audited::Admin,
    );
    m
}

async fn events(f: &Fixture, query: &str) -> Vec<Value> {
    let reply = f
        .server
        .get(
            &f.t.path(&format!("audit?limit=200{query}")),
            Some(&f.t.owner_token),
        )
        .await;
    reply.expect(200).json()["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn every_phi_route_writes_its_event(backend: Backend) {
    let f = fixture(backend).await;
    let doc = f
        .server
        .get("/api/openapi.json", None)
        .await
        .expect(200)
        .json();
    let table = walk(&f);
    let mut walked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let key = table
                .keys()
                .find(|(m, t)| *m == method.as_str() && *t == template.as_str())
                .copied()
                .unwrap_or_else(|| {
                    panic!(
                        "route {method} {template} is not in the audit walk: add it to walk() \
                         and decide what it must audit"
                    )
                });
            let (path, body, audited) = &table[&key];
            if path.is_empty() {
                continue;
            }
            let mut rb = f
                .server
                .request(method.to_uppercase().parse::<Method>().unwrap(), path)
                .bearer_auth(&f.t.owner_token)
                .header("user-agent", "synthetic-audit-walk/1.0");
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let reply = f.server.send(rb).await;
            assert!(
                (200..300).contains(&reply.status),
                "{method} {template} answered {}: {}",
                reply.status,
                reply.text()
            );
            let request_id = reply
                .header("x-request-id")
                .expect("request id")
                .to_string();
            let found: Vec<Value> = events(&f, "")
                .await
                .into_iter()
                .filter(|e| e["request_id"] == request_id)
                .collect();
            match audited {
                Audited::No => {}
                Audited::Phi | Audited::Admin => {
                    assert!(
                        !found.is_empty(),
                        "{method} {template} answered {} without an audit event",
                        reply.status
                    );
                    for e in &found {
                        assert_eq!(e["outcome"], "success");
                        assert_eq!(e["actor_id"], f.t.owner_id.as_str());
                        assert_eq!(e["source_ip"], "127.0.0.1");
                        assert_eq!(e["source_user_agent"], "synthetic-audit-walk/1.0");
                    }
                    if *audited == Audited::Phi {
                        assert!(
                            found
                                .iter()
                                .all(|e| e["action"].as_str().unwrap().starts_with("phi.")
                                    && !e["fields"].as_array().unwrap().is_empty()
                                    || e["resource_type"].as_str().unwrap().ends_with("_list")),
                            "{method} {template}: {found:?}"
                        );
                    } else {
                        assert!(found.iter().all(|e| e["after"].is_object()), "{found:?}");
                    }
                }
            }
            walked += 1;
        }
    }
    assert!(walked >= 12, "walked only {walked} routes");

    // Operator commands are in the trail too: the fixture's practice, user and token
    // were made at the command line.
    let operator: Vec<Value> = events(&f, "")
        .await
        .into_iter()
        .filter(|e| e["actor_kind"] == "operator")
        .collect();
    for (action, kind) in [
        ("admin.reference.updated", "practice"),
        ("admin.user.changed", "user"),
        ("admin.user.changed", "api_token"),
    ] {
        assert!(
            operator.iter().any(|e| e["action"] == action
                && e["resource_type"] == kind
                && e["after"].is_object()),
            "no operator event {action} on {kind}: {operator:?}"
        );
    }

    // The events name fields and ids, never the values.
    let all = serde_json::to_string(&events(&f, "").await).unwrap();
    for canary in [
        CANARY_MRN,
        CANARY_FAMILY,
        CANARY_REASON,
        "SYNTH-MRN-WALK-1",
        "Walker",
    ] {
        assert!(!all.contains(canary), "the trail holds a PHI value");
    }

    // Filters: by action, resource and actor.
    let reads = events(&f, "&action=phi.read&resource_type=patient").await;
    assert!(!reads.is_empty());
    assert!(
        reads
            .iter()
            .all(|e| e["action"] == "phi.read" && e["resource_type"] == "patient")
    );
    let by_resource = events(&f, &format!("&resource_id={}", f.patient)).await;
    assert!(by_resource.iter().any(|e| e["action"] == "phi.create"));
    assert!(
        by_resource
            .iter()
            .all(|e| e["resource_id"] == f.patient.as_str())
    );
    let nobody = events(&f, "&actor=00000000-0000-0000-0000-000000000000").await;
    assert!(nobody.is_empty());
    // Paging: newest first, `next_before` continues strictly below.
    let page = f
        .server
        .get(&f.t.path("audit?limit=2"), Some(&f.t.owner_token))
        .await
        .expect(200)
        .json();
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 2);
    assert!(seqs[0] > seqs[1]);
    let next = page["next_before"].as_u64().unwrap();
    let older = f
        .server
        .get(
            &f.t.path(&format!("audit?limit=2&before={next}")),
            Some(&f.t.owner_token),
        )
        .await
        .expect(200)
        .json();
    assert!(older["events"][0]["sequence"].as_u64().unwrap() < next);
    // Bad filters are clear 400s.
    f.server
        .get(&f.t.path("audit?action=phi.peek"), Some(&f.t.owner_token))
        .await
        .expect_error(400, "invalid_query");
    f.server
        .get(&f.t.path("audit?since=yesterday"), Some(&f.t.owner_token))
        .await
        .expect_error(400, "invalid_query");
    // Without audit:view: 403, and the refusal itself is in the trail.
    let provider = f.site.user(
        &f.t.id,
        "provider@audit-walk.example.test",
        "Synthetic Provider",
        &["provider"],
        None,
    );
    let (_, provider_token) = f.site.token(&f.t.id, &provider);
    let denied = f
        .server
        .get(&f.t.path("audit"), Some(&provider_token))
        .await;
    denied.expect_error(403, "forbidden");
    let rid = denied.header("x-request-id").unwrap().to_string();
    let refusals = events(&f, "&action=access.denied").await;
    assert!(
        refusals
            .iter()
            .any(|e| e["request_id"] == rid.as_str() && e["outcome"] == "denied"),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn every_phi_route_writes_its_event_sqlite() {
    every_phi_route_writes_its_event(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_phi_route_writes_its_event_postgres() {
    every_phi_route_writes_its_event(Backend::Postgres).await;
}

/// Makes the audit tables refuse new rows (SQLite: a trigger, as a full or failing disk
/// would; PostgreSQL: the INSERT grant revoked), or lifts that.
async fn set_audit_writable(f: &Fixture, writable: bool) {
    match f.site.backend {
        Backend::Sqlite => {
            let path = f.site.data_dir().join("phivault.db");
            let db = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
                .await
                .unwrap();
            for table in ["audit_events", "platform_audit_events"] {
                let sql = if writable {
                    format!("DROP TRIGGER IF EXISTS test_block_{table}")
                } else {
                    format!(
                        "CREATE TRIGGER test_block_{table} BEFORE INSERT ON {table} \
                         BEGIN SELECT RAISE(ABORT, 'audit store unwritable (test)'); END"
                    )
                };
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&db)
                    .await
                    .unwrap();
            }
            db.close().await;
        }
        Backend::Postgres => {
            let admin = f.site.pg_admin_url().unwrap();
            let db = sqlx::PgPool::connect(admin).await.unwrap();
            let role: String = sqlx::query_scalar(
                "SELECT grantee::text FROM information_schema.role_table_grants
                 WHERE table_name = 'audit_events' AND privilege_type = 'SELECT'
                   AND grantee NOT IN (SELECT tableowner FROM pg_tables WHERE tablename = 'audit_events')
                 LIMIT 1",
            )
            .fetch_one(&db)
            .await
            .unwrap();
            for table in ["audit_events", "platform_audit_events"] {
                let sql = if writable {
                    format!("GRANT INSERT ON {table} TO {role}")
                } else {
                    format!("REVOKE INSERT ON {table} FROM {role}")
                };
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&db)
                    .await
                    .unwrap();
            }
            db.close().await;
        }
    }
}

async fn phi_requests_fail_closed(backend: Backend) {
    let f = fixture(backend).await;
    let before = f.server.snapshot(&f.t.id, &f.t.owner_token).await;
    let ready = f.server.get("/readyz", None).await;
    ready.expect(200);
    assert_eq!(ready.json()["audit"], "ok");

    set_audit_writable(&f, false).await;
    let token = f.t.owner_token.as_str();
    let reads = [
        f.t.path("patients"),
        f.t.path(&format!("patients/{}", f.patient)),
        f.t.path(&format!("patients?mrn={CANARY_MRN}")),
        f.t.path("encounters"),
        f.t.path(&format!("encounters/{}", f.encounter)),
    ];
    let mut tasks = Vec::new();
    for round in 0..4 {
        for path in &reads {
            tasks.push(f.server.get(path, Some(token)));
        }
        let _ = round;
    }
    let replies = futures::future::join_all(tasks).await;
    for r in &replies {
        r.expect_error(503, "audit_unavailable");
        let body = r.text();
        for canary in [CANARY_MRN, CANARY_FAMILY, CANARY_REASON] {
            assert!(!body.contains(canary), "a refused read leaked PHI");
        }
    }
    let server = &f.server;
    let writes = futures::future::join_all((0..4).map(|i| {
        let body = patient_json(
            &f.practice,
            &format!("SYNTH-MRN-REFUSED-{i}"),
            "Synthetic",
            "Refused",
            "1990-03-03",
        );
        let path = f.t.path("patients");
        async move { server.post_json(&path, Some(token), &body).await }
    }))
    .await;
    for r in &writes {
        r.expect_error(503, "audit_unavailable");
    }
    let enc = f
        .server
        .post_json(
            &f.t.path("encounters"),
            Some(token),
            &json!({"patient_id": f.patient, "reason": "synthetic refused"}),
        )
        .await;
    enc.expect_error(503, "audit_unavailable");
    let ready = f.server.get("/readyz", None).await;
    ready.expect(503);
    assert_eq!(ready.json()["audit"], "unavailable");

    // The store comes back; the server recovers without a restart.
    set_audit_writable(&f, true).await;
    let after = f.server.snapshot(&f.t.id, &f.t.owner_token).await;
    assert_eq!(before, after, "a refused write left something behind");
    f.server
        .get(&f.t.path(&format!("patients/{}", f.patient)), Some(token))
        .await
        .expect(200);
    f.server.get("/readyz", None).await.expect(200);

    // The chain stayed one linear sequence through the outage.
    let all = events(&f, "").await;
    let mut seqs: Vec<u64> = all
        .iter()
        .map(|e| e["sequence"].as_u64().unwrap())
        .collect();
    seqs.reverse();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn phi_requests_fail_closed_sqlite() {
    phi_requests_fail_closed(Backend::Sqlite).await;
}

#[tokio::test]
async fn phi_requests_fail_closed_postgres() {
    phi_requests_fail_closed(Backend::Postgres).await;
}

#[tokio::test]
async fn retention_below_six_years_is_refused_at_start() {
    let site = Site::new(Backend::Sqlite).await;
    let mut cmd = site.serve_command();
    cmd.env("PHIVAULT_AUDIT_RETENTION_YEARS", "5");
    match Server::launch(cmd) {
        Launch::Started(_) => panic!("a five-year audit retention was accepted"),
        Launch::Exited { status, stderr, .. } => {
            assert!(!status.success());
            assert!(stderr.contains("retention"), "unclear refusal: {stderr}");
        }
    }
}
