//! Compliance records from outside, on SQLite and PostgreSQL: every kind saved and
//! versioned, history in order, concurrent saves of one subject (one wins, the other is
//! refused `version_conflict`); malformed, oversized and hostile bodies refused with
//! their codes and nothing written; tenant B neither reads nor writes tenant A's
//! records; a member acknowledges their own training only; each save audited
//! `compliance.recorded` without a body value; the serving role cannot rewrite or
//! delete a version; and `phivault compliance record|list|history`. All data is
//! synthetic.

mod support;

use std::io::Write;
use std::process::Stdio;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Backend, Reply, Server, Site, TenantFixture};

/// A synthetic incident summary that must never reach the audit trail or the log.
const SUMMARY_CANARY: &str = "Synthetic canary summary QX7-compliance";

fn officer_body(user: &str, title: &str) -> Value {
    json!({"user_id": user, "title": title, "designated_on": "2025-01-15"})
}

fn risk_body(year: i32) -> Value {
    json!({
        "year": year,
        "performed_on": format!("{year}-03-01"),
        "performed_by": "Synthetic Assessors LLC",
        "method": "NIST SP 800-30 (synthetic)",
        "findings_count": 12,
        "high_risks": 2,
        "summary_ref": "dms://synthetic/risk",
        "next_review_due": format!("{}-03-01", year + 1),
    })
}

fn ack_body(user: Option<&str>, course: &str) -> Value {
    let mut b = json!({"course": course, "version": "2025.1", "completed_on": "2025-02-01"});
    if let Some(u) = user {
        b["user_id"] = json!(u);
    }
    b
}

fn incident_body(status: &str, closed_on: Option<&str>) -> Value {
    let mut b = json!({
        "opened_on": "2025-04-01",
        "category": "security",
        "severity": "moderate",
        "status": status,
        "summary": format!("{SUMMARY_CANARY}: a synthetic laptop was reported lost; 0 patients."),
        "affected_records": 0,
        "audit_event_refs": [1],
    });
    if let Some(d) = closed_on {
        b["closed_on"] = json!(d);
    }
    b
}

fn sanctions_body(label: &str) -> Value {
    json!({"version_label": label, "adopted_on": "2025-01-02", "document_ref": "dms://synthetic/sanctions"})
}

fn save_request(kind: &str, subject: Option<&str>, expected: i64, body: Value) -> Value {
    let mut req = json!({"kind": kind, "expected_version": expected, "body": body});
    if let Some(s) = subject {
        req["subject"] = json!(s);
    }
    req
}

async fn save(
    server: &Server,
    t: &TenantFixture,
    token: &str,
    kind: &str,
    subject: Option<&str>,
    expected: i64,
    body: Value,
) -> Reply {
    server
        .post_json(
            &t.path("compliance/records"),
            Some(token),
            &save_request(kind, subject, expected, body),
        )
        .await
}

async fn ack(server: &Server, t: &TenantFixture, token: &str, expected: i64, body: Value) -> Reply {
    server
        .post_json(
            &t.path("compliance/training-acks"),
            Some(token),
            &json!({"expected_version": expected, "body": body}),
        )
        .await
}

async fn list(server: &Server, t: &TenantFixture, query: &str) -> Vec<Value> {
    server
        .get(
            &t.path(&format!("compliance/records{query}")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json()["records"]
        .as_array()
        .unwrap()
        .clone()
}

async fn versions(server: &Server, t: &TenantFixture, kind: &str, subject: &str) -> Vec<Value> {
    server
        .get(
            &t.path(&format!("compliance/records/{kind}/{subject}/versions")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json()["versions"]
        .as_array()
        .unwrap()
        .clone()
}

/// The tenant's audit events (the whole trail of these small scenarios), newest first.
async fn trail(server: &Server, t: &TenantFixture) -> Vec<Value> {
    server
        .get(&t.path("audit?limit=200"), Some(&t.owner_token))
        .await
        .expect(200)
        .json()["events"]
        .as_array()
        .unwrap()
        .clone()
}

async fn recorded_events(server: &Server, t: &TenantFixture) -> Vec<Value> {
    trail(server, t)
        .await
        .into_iter()
        .filter(|e| e["action"] == "compliance.recorded")
        .collect()
}

/// The tenant's trail as `phivault audit export` writes it.
fn exported_trail(site: &Site, tenant: &str) -> String {
    site.cli(&["audit", "export", "--format", "jsonl", "--tenant", tenant])
}

async fn versioned_and_audited(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("comp-ver", "Synthetic Compliance Versions");
    let officer = site.user(
        &t.id,
        "officer@comp-ver.example.test",
        "Synthetic Officer",
        &["admin"],
        None,
    );
    let (_, admin_token) = site.token(&t.id, &officer);
    let server = site.serve();
    let owner = t.owner_token.as_str();

    // Version 1 of every kind.
    let so = save(
        &server,
        &t,
        owner,
        "security_officer",
        None,
        0,
        officer_body(&officer, "  Synthetic Security Officer "),
    )
    .await;
    let so = so.expect(201).json();
    assert_eq!(so["subject"], "current");
    assert_eq!(so["version"], 1);
    assert_eq!(
        so["body"]["title"], "Synthetic Security Officer",
        "text is trimmed"
    );
    assert_eq!(so["recorded_by"], t.owner_id.as_str());
    let ra = save(
        &server,
        &t,
        owner,
        "risk_assessment",
        None,
        0,
        risk_body(2025),
    )
    .await;
    assert_eq!(ra.expect(201).json()["subject"], "2025");
    let course = "HIPAA Security Awareness";
    let ta = save(
        &server,
        &t,
        owner,
        "training_ack",
        None,
        0,
        ack_body(Some(&officer), course),
    )
    .await;
    assert_eq!(
        ta.expect(201).json()["subject"],
        format!("{officer}:{course}")
    );
    let inc = save(
        &server,
        &t,
        owner,
        "incident",
        None,
        0,
        incident_body("open", None),
    )
    .await;
    let inc = inc.expect(201).json();
    let incident = inc["subject"].as_str().unwrap().to_string();
    assert!(
        uuid::Uuid::parse_str(&incident).is_ok(),
        "incident id {incident}"
    );
    let sp = save(
        &server,
        &t,
        owner,
        "sanctions_policy",
        None,
        0,
        sanctions_body("v1"),
    )
    .await;
    sp.expect(201);

    // Version 2 of every kind, each naming the version it read.
    save(
        &server,
        &t,
        owner,
        "security_officer",
        None,
        1,
        officer_body(&t.owner_id, "Synthetic Privacy and Security Officer"),
    )
    .await
    .expect(201);
    save(
        &server,
        &t,
        owner,
        "risk_assessment",
        Some("2025"),
        1,
        risk_body(2025),
    )
    .await
    .expect(201);
    save(
        &server,
        &t,
        owner,
        "training_ack",
        None,
        1,
        ack_body(Some(&officer), course),
    )
    .await
    .expect(201);
    let closed = save(
        &server,
        &t,
        owner,
        "incident",
        Some(&incident),
        1,
        incident_body("closed", Some("2025-04-09")),
    )
    .await;
    let closed = closed.expect(201).json();
    assert_eq!(closed["version"], 2);
    assert_eq!(closed["body"]["closed_on"], "2025-04-09");
    save(
        &server,
        &t,
        owner,
        "sanctions_policy",
        Some("current"),
        1,
        sanctions_body("v2"),
    )
    .await
    .expect(201);

    // A save that read an old version is refused, and so is a "new" subject that exists.
    save(
        &server,
        &t,
        owner,
        "sanctions_policy",
        None,
        1,
        sanctions_body("v3-stale"),
    )
    .await
    .expect_error(409, "version_conflict");
    save(
        &server,
        &t,
        owner,
        "risk_assessment",
        None,
        0,
        risk_body(2025),
    )
    .await
    .expect_error(409, "version_conflict");
    save(
        &server,
        &t,
        owner,
        "incident",
        None,
        1,
        incident_body("open", None),
    )
    .await
    .expect_error(409, "version_conflict");

    // Latest of each subject, by kind and subject.
    let latest = list(&server, &t, "").await;
    let kinds: Vec<&str> = latest.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "incident",
            "risk_assessment",
            "sanctions_policy",
            "security_officer",
            "training_ack"
        ]
    );
    assert!(latest.iter().all(|r| r["version"] == 2), "{latest:?}");
    let so_latest = latest
        .iter()
        .find(|r| r["kind"] == "security_officer")
        .unwrap();
    assert_eq!(so_latest["body"]["user_id"], t.owner_id.as_str());
    let only = list(&server, &t, "?kind=incident").await;
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["subject"], incident.as_str());
    server
        .get(&t.path("compliance/records?kind=officer"), Some(owner))
        .await
        .expect_error(400, "invalid_query");

    // History in order, with each version's body.
    let history = versions(&server, &t, "security_officer", "current").await;
    let seen: Vec<(i64, &str)> = history
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["body"]["user_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(1, officer.as_str()), (2, t.owner_id.as_str())]);
    let history = versions(&server, &t, "incident", &incident).await;
    let statuses: Vec<&str> = history
        .iter()
        .map(|v| v["body"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["open", "closed"]);
    // The answer to a save is the version as stored (times to the microsecond).
    assert_eq!(history[1], closed);
    let subject = format!("{officer}:{course}").replace(' ', "%20");
    assert_eq!(
        versions(&server, &t, "training_ack", &subject).await.len(),
        2
    );
    for (path, status, code) in [
        (
            "compliance/records/incident/0191f0a2-0000-7000-8000-000000000000/versions",
            404,
            "not_found",
        ),
        (
            "compliance/records/security_officer/former/versions",
            404,
            "not_found",
        ),
        (
            "compliance/records/officer/current/versions",
            400,
            "invalid_path",
        ),
    ] {
        server
            .get(&t.path(path), Some(owner))
            .await
            .expect_error(status, code);
    }

    // An admin reads (security:view_readiness) but does not write
    // (security:manage_phi_gates is the owner's).
    server
        .get(&t.path("compliance/records"), Some(&admin_token))
        .await
        .expect(200);
    save(
        &server,
        &t,
        &admin_token,
        "sanctions_policy",
        None,
        2,
        sanctions_body("v3"),
    )
    .await
    .expect_error(403, "forbidden");

    // Two saves of one subject at once: one wins, the other is refused.
    let (x, y) = tokio::join!(
        save(
            &server,
            &t,
            owner,
            "risk_assessment",
            None,
            0,
            risk_body(2031)
        ),
        save(
            &server,
            &t,
            owner,
            "risk_assessment",
            None,
            0,
            risk_body(2031)
        ),
    );
    let mut statuses = [x.status, y.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409], "{} / {}", x.text(), y.text());
    let loser = if x.status == 409 { &x } else { &y };
    loser.expect_error(409, "version_conflict");
    assert_eq!(
        versions(&server, &t, "risk_assessment", "2031").await.len(),
        1
    );

    // One event per save, naming fields and kind/subject/version, never a value.
    let events = recorded_events(&server, &t).await;
    assert_eq!(events.len(), 11, "{events:?}");
    for e in &events {
        assert_eq!(e["resource_type"], "compliance_record");
        assert_eq!(e["outcome"], "success");
        assert_eq!(e["actor_id"], t.owner_id.as_str());
        let after = &e["after"];
        assert!(
            after["kind"].is_string() && after["subject"].is_string() && after["version"].is_i64(),
            "{e}"
        );
        let fields: Vec<&str> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert!(!fields.is_empty());
        let mut sorted = fields.clone();
        sorted.sort_unstable();
        assert_eq!(fields, sorted);
    }
    let closing = events
        .iter()
        .find(|e| e["resource_id"] == closed["id"])
        .expect("the incident's second version is audited");
    assert_eq!(
        closing["after"],
        json!({"kind": "incident", "subject": incident, "version": 2})
    );
    assert!(
        closing["fields"]
            .as_array()
            .unwrap()
            .contains(&json!("summary"))
    );
    // The summary (and every other body value) stays out of the trail and the log.
    let whole: String = trail(&server, &t)
        .await
        .iter()
        .map(Value::to_string)
        .collect();
    assert!(!whole.contains(SUMMARY_CANARY));
    assert!(!whole.contains("Synthetic Assessors"));
    assert!(!exported_trail(&site, &t.id).contains(SUMMARY_CANARY));
    assert!(!server.stderr().contains(SUMMARY_CANARY));
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_records_are_versioned_and_audited() {
    versioned_and_audited(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_records_are_versioned_and_audited() {
    versioned_and_audited(Backend::Postgres).await;
}

async fn bad_input_writes_nothing(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("comp-bad", "Synthetic Compliance Bad Input");
    let other = site.tenant("comp-bad-b", "Synthetic Compliance Other");
    let leaver = site.user(
        &t.id,
        "leaver@comp-bad.example.test",
        "Synthetic Leaver",
        &["member"],
        None,
    );
    // A small body limit, so that an oversized request is refused before it is read.
    let server = site.serve_with(&[("PHIVAULT_BODY_LIMIT_BYTES", "65536")]);
    let owner = t.owner_token.as_str();
    let gone = server
        .send(
            server
                .request(Method::POST, &t.path(&format!("users/{leaver}/deactivate")))
                .bearer_auth(owner),
        )
        .await;
    assert!((200..300).contains(&gone.status), "{}", gone.text());
    let before = trail(&server, &t).await.len();

    let long = "S".repeat(201);
    let good_officer = officer_body(&t.owner_id, "Synthetic Officer");
    let with = |mut body: Value, key: &str, value: Value| {
        body[key] = value;
        body
    };
    let hostile = format!("{SUMMARY_CANARY} \u{0}\u{7} <script>");
    let valid = serde_json::to_string(&save_request(
        "security_officer",
        None,
        0,
        good_officer.clone(),
    ))
    .unwrap();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("malformed JSON", br#"{"kind": "incident", "#.to_vec(), 400, "invalid_json"),
        ("truncated body", valid.as_bytes()[..valid.len() - 7].to_vec(), 400, "invalid_json"),
        ("empty body", Vec::new(), 400, "invalid_json"),
        ("trailing data", format!("{valid} {{}}").into_bytes(), 400, "invalid_json"),
        ("not UTF-8", b"{\"kind\": \"\xff\xfe\"}".to_vec(), 400, "invalid_json"),
        ("an array", format!("[{valid}]").into_bytes(), 422, "invalid_body"),
        ("wrong kind", serde_json::to_vec(&save_request("breach", None, 0, good_officer.clone())).unwrap(), 422, "invalid_body"),
        ("kind of another body", serde_json::to_vec(&save_request("sanctions_policy", None, 0, good_officer.clone())).unwrap(), 422, "invalid_body"),
        ("no kind", serde_json::to_vec(&json!({"expected_version": 0, "body": good_officer})).unwrap(), 422, "invalid_body"),
        ("no expected_version", serde_json::to_vec(&json!({"kind": "security_officer", "body": good_officer})).unwrap(), 422, "invalid_body"),
        ("unknown top-level field", serde_json::to_vec(&with(save_request("security_officer", None, 0, good_officer.clone()), "note", json!(SUMMARY_CANARY))).unwrap(), 422, "invalid_body"),
        ("unknown body field", serde_json::to_vec(&save_request("security_officer", None, 0, with(good_officer.clone(), "phone", json!(SUMMARY_CANARY)))).unwrap(), 422, "invalid_body"),
        ("repeated field", br#"{"kind":"sanctions_policy","expected_version":0,"body":{"version_label":"a","version_label":"b","adopted_on":"2025-01-01","document_ref":"x"}}"#.to_vec(), 422, "invalid_body"),
        ("wrong type", serde_json::to_vec(&save_request("risk_assessment", None, 0, with(risk_body(2025), "year", json!("2025")))).unwrap(), 422, "invalid_body"),
        ("negative count", serde_json::to_vec(&save_request("risk_assessment", None, 0, with(risk_body(2025), "findings_count", json!(-1)))).unwrap(), 422, "invalid_body"),
        ("body not an object", serde_json::to_vec(&save_request("incident", None, 0, json!(SUMMARY_CANARY))).unwrap(), 422, "invalid_body"),
        ("unknown category", serde_json::to_vec(&save_request("incident", None, 0, with(incident_body("open", None), "category", json!("hipaa")))).unwrap(), 422, "invalid_body"),
        ("month 13", serde_json::to_vec(&save_request("security_officer", None, 0, with(good_officer.clone(), "designated_on", json!("2025-13-01")))).unwrap(), 422, "invalid_field"),
        ("30 February", serde_json::to_vec(&save_request("security_officer", None, 0, with(good_officer.clone(), "designated_on", json!("2025-02-30")))).unwrap(), 422, "invalid_field"),
        ("US date", serde_json::to_vec(&save_request("sanctions_policy", None, 0, with(sanctions_body("v1"), "adopted_on", json!("01/02/2025")))).unwrap(), 422, "invalid_field"),
        ("timestamp for a date", serde_json::to_vec(&save_request("sanctions_policy", None, 0, with(sanctions_body("v1"), "adopted_on", json!("2025-01-02T00:00:00Z")))).unwrap(), 422, "invalid_field"),
        ("oversized title", serde_json::to_vec(&save_request("security_officer", None, 0, with(good_officer.clone(), "title", json!(long)))).unwrap(), 422, "invalid_field"),
        ("oversized summary", serde_json::to_vec(&save_request("incident", None, 0, with(incident_body("open", None), "summary", json!("s".repeat(2001))))).unwrap(), 422, "invalid_field"),
        ("control characters", serde_json::to_vec(&save_request("incident", None, 0, with(incident_body("open", None), "summary", json!(hostile)))).unwrap(), 422, "invalid_field"),
        ("empty title", serde_json::to_vec(&save_request("security_officer", None, 0, with(good_officer.clone(), "title", json!("   ")))).unwrap(), 422, "invalid_field"),
        ("negative expected_version", serde_json::to_vec(&save_request("security_officer", None, -1, good_officer.clone())).unwrap(), 422, "invalid_field"),
        ("subject that does not match", serde_json::to_vec(&save_request("security_officer", Some(SUMMARY_CANARY), 0, good_officer.clone())).unwrap(), 422, "invalid_field"),
        ("incident subject not an id", serde_json::to_vec(&save_request("incident", Some("../../etc"), 1, incident_body("open", None))).unwrap(), 422, "invalid_field"),
        ("unknown incident", serde_json::to_vec(&save_request("incident", Some("0191f0a2-0000-7000-8000-000000000000"), 1, incident_body("open", None))).unwrap(), 404, "not_found"),
        ("officer not a user", serde_json::to_vec(&save_request("security_officer", None, 0, officer_body(&uuid::Uuid::now_v7().to_string(), "Synthetic"))).unwrap(), 422, "invalid_field"),
        ("officer of another tenant", serde_json::to_vec(&save_request("security_officer", None, 0, officer_body(&other.owner_id, "Synthetic"))).unwrap(), 422, "invalid_field"),
        ("deactivated officer", serde_json::to_vec(&save_request("security_officer", None, 0, officer_body(&leaver, "Synthetic"))).unwrap(), 422, "invalid_field"),
        ("officer id not a uuid", serde_json::to_vec(&save_request("security_officer", None, 0, officer_body("nobody", "Synthetic"))).unwrap(), 422, "invalid_body"),
        ("more high risks than findings", serde_json::to_vec(&save_request("risk_assessment", None, 0, with(risk_body(2025), "high_risks", json!(13)))).unwrap(), 422, "invalid_field"),
        ("review due before the assessment", serde_json::to_vec(&save_request("risk_assessment", None, 0, with(risk_body(2025), "next_review_due", json!("2024-01-01")))).unwrap(), 422, "invalid_field"),
        ("year out of range", serde_json::to_vec(&save_request("risk_assessment", None, 0, with(risk_body(2025), "year", json!(99999)))).unwrap(), 422, "invalid_field"),
        ("closed without a date", serde_json::to_vec(&save_request("incident", None, 0, incident_body("closed", None))).unwrap(), 422, "invalid_field"),
        ("closed before opened", serde_json::to_vec(&save_request("incident", None, 0, incident_body("closed", Some("2025-03-01")))).unwrap(), 422, "invalid_field"),
        ("event beyond the trail", serde_json::to_vec(&save_request("incident", None, 0, with(incident_body("open", None), "audit_event_refs", json!([1_000_000])))).unwrap(), 422, "invalid_field"),
        ("event named twice", serde_json::to_vec(&save_request("incident", None, 0, with(incident_body("open", None), "audit_event_refs", json!([1, 1])))).unwrap(), 422, "invalid_field"),
        ("too many events", serde_json::to_vec(&save_request("incident", None, 0, with(incident_body("open", None), "audit_event_refs", json!((1..=201).collect::<Vec<u64>>())))).unwrap(), 422, "invalid_field"),
        ("course with a slash", serde_json::to_vec(&save_request("training_ack", None, 0, ack_body(Some(&t.owner_id), "a/../b"))).unwrap(), 422, "invalid_field"),
        ("body over the request limit", serde_json::to_vec(&save_request("incident", None, 0, with(incident_body("open", None), "summary", json!("s".repeat(100 * 1024))))).unwrap(), 413, "payload_too_large"),
    ];
    let mut failures = Vec::new();
    for (what, body, status, code) in &cases {
        let reply = server
            .post_raw(
                &t.path("compliance/records"),
                Some(owner),
                Some("application/json"),
                body.clone(),
            )
            .await;
        if let Err(why) = reply.check_error(*status, code) {
            failures.push(format!("{what}: {why}"));
        }
        if reply.text().contains(SUMMARY_CANARY) {
            failures.push(format!("{what}: the answer echoes a submitted value"));
        }
    }
    let reply = server
        .post_raw(
            &t.path("compliance/records"),
            Some(owner),
            Some("text/plain"),
            valid.clone().into_bytes(),
        )
        .await;
    if let Err(why) = reply.check_error(415, "unsupported_media_type") {
        failures.push(format!("text/plain: {why}"));
    }
    for (what, body, status, code) in [
        (
            "ack: unknown field",
            json!({"expected_version": 0, "body": with(ack_body(None, "Course"), "score", json!(100))}),
            422,
            "invalid_body",
        ),
        (
            "ack: bad date",
            json!({"expected_version": 0, "body": with(ack_body(None, "Course"), "completed_on", json!("yesterday"))}),
            422,
            "invalid_field",
        ),
        (
            "ack: oversized course",
            json!({"expected_version": 0, "body": ack_body(None, &"c".repeat(101))}),
            422,
            "invalid_field",
        ),
        (
            "ack: no body",
            json!({"expected_version": 0}),
            422,
            "invalid_body",
        ),
    ] {
        let reply = server
            .post_json(&t.path("compliance/training-acks"), Some(owner), &body)
            .await;
        if let Err(why) = reply.check_error(status, code) {
            failures.push(format!("{what}: {why}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Nothing was written, nothing audited as recorded.
    assert!(list(&server, &t, "").await.is_empty());
    let after = trail(&server, &t).await;
    assert!(
        after.iter().all(|e| e["action"] != "compliance.recorded"),
        "{after:?}"
    );
    assert_eq!(after.len(), before, "refused saves wrote events");
    assert!(
        !server.stderr().contains(SUMMARY_CANARY),
        "a submitted value reached the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_bad_input_writes_nothing() {
    bad_input_writes_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_bad_input_writes_nothing() {
    bad_input_writes_nothing(Backend::Postgres).await;
}

async fn tenants_and_members(backend: Backend) {
    let site = Site::new(backend).await;
    let a = site.tenant("comp-a", "Synthetic Compliance A");
    let b = site.tenant("comp-b", "Synthetic Compliance B");
    let member = site.user(
        &a.id,
        "member@comp-a.example.test",
        "Synthetic Member",
        &["member"],
        None,
    );
    let colleague = site.user(
        &a.id,
        "colleague@comp-a.example.test",
        "Synthetic Colleague",
        &["provider"],
        None,
    );
    let (_, member_token) = site.token(&a.id, &member);
    let server = site.serve();

    let sp = save(
        &server,
        &a,
        &a.owner_token,
        "sanctions_policy",
        None,
        0,
        sanctions_body("a-v1"),
    )
    .await;
    let sp = sp.expect(201).json();

    // Tenant B's owner cannot read or write A's records, and sees none of them in B.
    let list_a = a.path("compliance/records");
    server
        .get(&list_a, Some(&b.owner_token))
        .await
        .expect_error(403, "tenant_mismatch");
    server
        .get(
            &a.path("compliance/records/sanctions_policy/current/versions"),
            Some(&b.owner_token),
        )
        .await
        .expect_error(403, "tenant_mismatch");
    server
        .post_json(
            &list_a,
            Some(&b.owner_token),
            &save_request("sanctions_policy", None, 1, sanctions_body("b-on-a")),
        )
        .await
        .expect_error(403, "tenant_mismatch");
    ack(
        &server,
        &a,
        &b.owner_token,
        0,
        ack_body(None, "Cross tenant"),
    )
    .await
    .expect_error(403, "tenant_mismatch");
    assert!(list(&server, &b, "").await.is_empty());
    server
        .get(
            &b.path("compliance/records/sanctions_policy/current/versions"),
            Some(&b.owner_token),
        )
        .await
        .expect_error(404, "not_found");
    // B's first sanctions policy is its own version 1; A's stays as it was.
    let b_sp = save(
        &server,
        &b,
        &b.owner_token,
        "sanctions_policy",
        None,
        0,
        sanctions_body("b-v1"),
    )
    .await;
    assert_eq!(b_sp.expect(201).json()["version"], 1);
    let a_history = versions(&server, &a, "sanctions_policy", "current").await;
    assert_eq!(a_history.len(), 1);
    assert_eq!(a_history[0]["id"], sp["id"]);
    assert!(
        !server
            .get(&list_a, Some(&a.owner_token))
            .await
            .text()
            .contains("b-v1")
    );

    // A member acknowledges their own training, with or without naming themselves.
    let mine = ack(
        &server,
        &a,
        &member_token,
        0,
        ack_body(None, "Privacy Basics"),
    )
    .await;
    let mine = mine.expect(201).json();
    assert_eq!(mine["subject"], format!("{member}:Privacy Basics"));
    assert_eq!(mine["body"]["user_id"], member.as_str());
    assert_eq!(mine["recorded_by"], member.as_str());
    ack(
        &server,
        &a,
        &member_token,
        0,
        ack_body(Some(&member), "Security Basics"),
    )
    .await
    .expect(201);
    let again = ack(
        &server,
        &a,
        &member_token,
        1,
        ack_body(None, "Privacy Basics"),
    )
    .await;
    assert_eq!(again.expect(201).json()["version"], 2);
    ack(
        &server,
        &a,
        &member_token,
        1,
        ack_body(None, "Privacy Basics"),
    )
    .await
    .expect_error(409, "version_conflict");
    // ...but not a colleague's, and writes no other record, nor reads them.
    ack(
        &server,
        &a,
        &member_token,
        0,
        ack_body(Some(&colleague), "Privacy Basics"),
    )
    .await
    .expect_error(403, "not_own_record");
    save(
        &server,
        &a,
        &member_token,
        "training_ack",
        None,
        0,
        ack_body(Some(&member), "Other Course"),
    )
    .await
    .expect_error(403, "forbidden");
    save(
        &server,
        &a,
        &member_token,
        "incident",
        None,
        0,
        incident_body("open", None),
    )
    .await
    .expect_error(403, "forbidden");
    server
        .get(&list_a, Some(&member_token))
        .await
        .expect_error(403, "forbidden");

    // The owner sees the member's acknowledgements; the refusal is in the trail.
    let acks = list(&server, &a, "?kind=training_ack").await;
    let subjects: Vec<&str> = acks
        .iter()
        .map(|r| r["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects.iter().all(|s| s.starts_with(&member)));
    assert!(!subjects.iter().any(|s| s.starts_with(&colleague)));
    let events = trail(&server, &a).await;
    let denied = events
        .iter()
        .find(|e| e["action"] == "access.denied" && e["resource_type"] == "compliance_record")
        .expect("the refused acknowledgement is audited");
    assert_eq!(denied["actor_id"], member.as_str());
    assert_eq!(denied["outcome"], "denied");
    let recorded: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "compliance.recorded")
        .collect();
    assert_eq!(
        recorded.len(),
        4,
        "sanctions policy and three acknowledgements"
    );
    assert!(
        trail(&server, &b)
            .await
            .iter()
            .all(|e| e["resource_id"] != sp["id"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_tenants_and_members() {
    tenants_and_members(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_tenants_and_members() {
    tenants_and_members(Backend::Postgres).await;
}

/// The site's database URL as the server uses it (on PostgreSQL, the serving role).
fn database_url(site: &Site) -> String {
    match site.backend {
        Backend::Sqlite => format!("sqlite://{}", site.data_dir().join("phivault.db").display()),
        Backend::Postgres => {
            let args = site.args();
            let i = args
                .iter()
                .position(|a| a == "--database-url")
                .expect("a PostgreSQL site names its database");
            args[i + 1].to_string_lossy().to_string()
        }
    }
}

async fn versions_cannot_be_rewritten(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("comp-ro", "Synthetic Compliance Append Only");
    let server = site.serve();
    let sp = save(
        &server,
        &t,
        &t.owner_token,
        "sanctions_policy",
        None,
        0,
        sanctions_body("v1"),
    )
    .await;
    let sp = sp.expect(201).json();
    let tenant = uuid::Uuid::parse_str(&t.id).unwrap();
    let id = uuid::Uuid::parse_str(sp["id"].as_str().unwrap()).unwrap();
    match backend {
        Backend::Postgres => {
            use sqlx::Connection;
            // As the serving role, inside the tenant's row-level security scope.
            let mut conn = sqlx::PgConnection::connect(&database_url(&site))
                .await
                .unwrap();
            for sql in [
                "UPDATE compliance_records SET body = '{\"version_label\":\"forged\"}' WHERE tenant_id = $1 AND id = $2",
                "DELETE FROM compliance_records WHERE tenant_id = $1 AND id = $2",
            ] {
                let mut tx = conn.begin().await.unwrap();
                sqlx::query("SELECT set_config('phivault.tenant_id', $1, true)")
                    .bind(t.id.as_str())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let err = sqlx::query(sql)
                    .bind(tenant)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .expect_err("the serving role changed a compliance record");
                let code = match &err {
                    sqlx::Error::Database(d) => d.code().map(|c| c.to_string()),
                    _ => None,
                };
                assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
            }
        }
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database_url(&site))
                .await
                .unwrap();
            for sql in [
                "UPDATE compliance_records SET body = '{\"version_label\":\"forged\"}' WHERE tenant_id = ? AND id = ?",
                "DELETE FROM compliance_records WHERE tenant_id = ? AND id = ?",
            ] {
                let err = sqlx::query(sql)
                    .bind(tenant)
                    .bind(id)
                    .execute(&pool)
                    .await
                    .expect_err("a compliance record was changed");
                assert!(err.to_string().contains("append-only"), "{sql}: {err}");
            }
            pool.close().await;
        }
    }
    let history = versions(&server, &t, "sanctions_policy", "current").await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["body"]["version_label"], "v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_versions_cannot_be_rewritten() {
    versions_cannot_be_rewritten(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_serving_role_cannot_update_or_delete_versions() {
    versions_cannot_be_rewritten(Backend::Postgres).await;
}

/// Runs `phivault compliance …` with `stdin` on standard input.
fn cli_with_stdin(site: &Site, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = site
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run phivault");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

async fn command_line(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("comp-cli", "Synthetic Compliance CLI");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &Value| support::write_file(dir.path(), name, &body.to_string());

    // A body from a file, and one on standard input.
    let file = write("sanctions.json", &sanctions_body("cli-v1"));
    let out = site.cli(&[
        "compliance",
        "record",
        "--tenant",
        "comp-cli",
        "--kind",
        "sanctions_policy",
        "--body-file",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.starts_with("sanctions_policy current version 1 ("),
        "{out}"
    );
    let out = cli_with_stdin(
        &site,
        &[
            "compliance",
            "record",
            "--tenant",
            &t.id,
            "--kind",
            "incident",
            "--body-file",
            "-",
        ],
        &incident_body("open", None).to_string(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    let incident = printed.split_whitespace().nth(1).unwrap().to_string();
    assert!(
        printed.starts_with(&format!("incident {incident} version 1 (")),
        "{printed}"
    );
    let closed = write("closed.json", &incident_body("closed", Some("2025-04-10")));
    let out = site.cli(&[
        "compliance",
        "record",
        "--tenant",
        &t.id,
        "--kind",
        "incident",
        "--subject",
        &incident,
        "--expected-version",
        "1",
        "--body-file",
        closed.to_str().unwrap(),
    ]);
    assert!(
        out.starts_with(&format!("incident {incident} version 2 (")),
        "{out}"
    );

    // Refusals: a stale version, a hostile body, a missing file, a wrong kind. Nothing
    // is written and no value is echoed.
    let stale = site.cli_output(&[
        "compliance",
        "record",
        "--tenant",
        &t.id,
        "--kind",
        "sanctions_policy",
        "--expected-version",
        "0",
        "--body-file",
        file.to_str().unwrap(),
    ]);
    assert!(!stale.status.success());
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("expected_version"),
        "{}",
        String::from_utf8_lossy(&stale.stderr)
    );
    let mut extra = incident_body("open", None);
    extra["patient_name"] = json!(SUMMARY_CANARY);
    let extra = write("extra.json", &extra);
    let mut wrong_type = sanctions_body("x");
    wrong_type["adopted_on"] = json!(SUMMARY_CANARY);
    let wrong_type = write("bad-date.json", &wrong_type);
    let truncated = support::write_file(
        dir.path(),
        "truncated.json",
        &incident_body("open", None).to_string()[..40],
    );
    for (args, expect) in [
        (
            vec!["--kind", "incident", "--body-file", extra.to_str().unwrap()],
            "does not take",
        ),
        (
            vec![
                "--kind",
                "sanctions_policy",
                "--body-file",
                wrong_type.to_str().unwrap(),
            ],
            "adopted_on",
        ),
        (
            vec![
                "--kind",
                "incident",
                "--body-file",
                truncated.to_str().unwrap(),
            ],
            "ends before",
        ),
        (
            vec![
                "--kind",
                "incident",
                "--body-file",
                "/nonexistent/body.json",
            ],
            "cannot open",
        ),
        (
            vec!["--kind", "breach", "--body-file", file.to_str().unwrap()],
            "breach",
        ),
    ] {
        let mut all = vec!["compliance", "record", "--tenant", &t.id];
        all.extend(args);
        let out = site.cli_output(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} succeeded");
        assert!(stderr.contains(expect), "{all:?}: {stderr}");
        assert!(
            !stderr.contains(SUMMARY_CANARY),
            "{all:?} echoes a value: {stderr}"
        );
    }

    // list and history, as tables and as JSON, agree with the API.
    let table = site.cli(&["compliance", "list", "--tenant", &t.id]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("kind"), "{table}");
    assert!(
        lines[1].starts_with("incident") && lines[1].contains(&incident),
        "{table}"
    );
    assert!(
        lines[2].starts_with("sanctions_policy") && lines[2].contains("current"),
        "{table}"
    );
    assert!(
        lines.iter().skip(1).all(|l| l.contains("operator:cli:")),
        "{table}"
    );
    let json_list: Value =
        serde_json::from_str(&site.cli(&["compliance", "list", "--tenant", &t.id, "--json"]))
            .unwrap();
    let only: Value = serde_json::from_str(&site.cli(&[
        "compliance",
        "list",
        "--tenant",
        &t.id,
        "--kind",
        "incident",
        "--json",
    ]))
    .unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["version"], 2);
    let history = site.cli(&[
        "compliance",
        "history",
        "--tenant",
        &t.id,
        "--kind",
        "incident",
        "--subject",
        &incident,
    ]);
    let v1 = history.find("version 1").expect("version 1 listed");
    let v2 = history.find("version 2").expect("version 2 listed");
    assert!(v1 < v2, "{history}");
    assert!(history.contains("\"status\":\"closed\""), "{history}");
    let missing = site.cli_output(&[
        "compliance",
        "history",
        "--tenant",
        &t.id,
        "--kind",
        "incident",
        "--subject",
        "nothing",
    ]);
    assert!(!missing.status.success());

    let server = site.serve();
    let api = list(&server, &t, "").await;
    let ids = |v: &[Value]| {
        v.iter()
            .map(|r| (r["id"].clone(), r["version"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(json_list.as_array().unwrap()), ids(&api));
    let json_history: Value = serde_json::from_str(&site.cli(&[
        "compliance",
        "history",
        "--tenant",
        &t.id,
        "--kind",
        "incident",
        "--subject",
        &incident,
        "--json",
    ]))
    .unwrap();
    assert_eq!(
        json_history.as_array().unwrap(),
        &versions(&server, &t, "incident", &incident).await
    );

    // Each operator save is in the tenant's chain, as the operator, without values.
    let events = recorded_events(&server, &t).await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["actor_kind"] == "operator" && e["resource_type"] == "compliance_record")
    );
    assert!(!exported_trail(&site, &t.id).contains(SUMMARY_CANARY));

    let help = site.cli(&["compliance", "--help"]);
    for word in ["record", "list", "history"] {
        assert!(help.contains(word), "{help}");
    }
    let help = site.cli(&["compliance", "record", "--help"]);
    assert!(
        help.contains("--body-file") && help.contains("security_officer"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_command_line() {
    command_line(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_command_line() {
    command_line(Backend::Postgres).await;
}
