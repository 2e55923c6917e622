//! Break-glass, black box: a staff member asks for emergency access with a reason, a
//! scope and a duration; only a different super_admin approves; the grant opens PHI to
//! its requester only, read-only, inside its scope, until it is revoked (its end by
//! itself is moved through with a test clock in the domain tests); every step is on the
//! platform chain and in the tenant's, and every read under a grant is a `phi.read` in
//! the tenant's chain by a staff actor naming the grant.

mod support;

use serde_json::{Value, json};
use support::{Backend, Server, Site, patient_json, staff_tokens};

const PASSWORD: &str = "vivid-otter-harbor-1987!";
const CANARY: &str = "Zzbreakglasscanary";
const REASON: &str = "Ticket SYN-2001: synthetic encounter will not load for the tenant";

async fn ask(server: &Server, token: &str, body: Value) -> support::Reply {
    server
        .post_json("/api/v1/staff/break-glass", Some(token), &body)
        .await
}

async fn act(server: &Server, token: &str, grant: &str, verb: &str) -> support::Reply {
    let r = server
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/staff/break-glass/{grant}/{verb}"),
        )
        .bearer_auth(token);
    server.send(r).await
}

async fn read(server: &Server, token: &str, grant: &str, rest: &str) -> support::Reply {
    server
        .get(
            &format!("/api/v1/staff/break-glass/{grant}/{rest}"),
            Some(token),
        )
        .await
}

async fn break_glass(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("bg-t", "Synthetic Break-Glass Tenant");
    let practice = site.practice(&t.id, "Break-Glass Practice");
    let server = site.serve();
    let p1 = server
        .create_patient(
            &t.id,
            &t.owner_token,
            &patient_json(&practice, "SYNTH-BG-1", "Synthetic", CANARY, "1971-02-03"),
        )
        .await;
    let p2 = server
        .create_patient(
            &t.id,
            &t.owner_token,
            &patient_json(&practice, "SYNTH-BG-2", "Synthetic", "Other", "1972-03-04"),
        )
        .await;
    let (p1, p2) = (p1["id"].as_str().unwrap(), p2["id"].as_str().unwrap());
    let e1 = server
        .create_encounter(&t.id, &t.owner_token, p1, "synthetic visit one")
        .await;
    let e2 = server
        .create_encounter(&t.id, &t.owner_token, p2, "synthetic visit two")
        .await;
    let (e1, e2) = (e1["id"].as_str().unwrap(), e2["id"].as_str().unwrap());

    let tokens = staff_tokens(
        &site,
        &server,
        &[
            ("support@ops.example.test", "support"),
            ("boss@ops.example.test", "super_admin"),
            ("reader@ops.example.test", "read_only"),
        ],
        PASSWORD,
    )
    .await;
    let (support, boss, reader) = (&tokens[0], &tokens[1], &tokens[2]);

    // Who may ask, and what a request must say.
    let tenant_grant = json!({"tenant_id": t.id, "reason": REASON, "duration_minutes": 30});
    ask(&server, reader, tenant_grant.clone())
        .await
        .expect_error(403, "staff_forbidden");
    ask(&server, &t.owner_token, tenant_grant.clone())
        .await
        .expect_error(401, "unauthenticated");
    for (body, status, code) in [
        (
            json!({"tenant_id": t.id, "reason": "short", "duration_minutes": 30}),
            422,
            "invalid_field",
        ),
        (
            json!({"tenant_id": t.id, "reason": REASON, "duration_minutes": 241}),
            422,
            "invalid_field",
        ),
        (
            json!({"tenant_id": t.id, "reason": REASON, "duration_minutes": 30, "encounter_id": uuid::Uuid::now_v7()}),
            404,
            "not_found",
        ),
        (
            json!({"tenant_id": uuid::Uuid::now_v7(), "reason": REASON, "duration_minutes": 30}),
            404,
            "not_found",
        ),
        (
            json!({"tenant_id": t.id, "reason": REASON}),
            422,
            "invalid_body",
        ),
    ] {
        ask(&server, support, body).await.expect_error(status, code);
    }

    // A tenant-wide grant: pending, not usable; the requester cannot approve it, nor
    // can a super_admin approve their own.
    let g1 = ask(&server, support, tenant_grant.clone())
        .await
        .expect(201)
        .json();
    assert_eq!(g1["status"], "pending");
    let g1 = g1["id"].as_str().unwrap().to_string();
    read(&server, support, &g1, "encounters")
        .await
        .expect_error(403, "grant_not_active");
    act(&server, support, &g1, "approve")
        .await
        .expect_error(403, "staff_forbidden");
    let own = ask(&server, boss, tenant_grant.clone())
        .await
        .expect(201)
        .json();
    let own = own["id"].as_str().unwrap().to_string();
    act(&server, boss, &own, "approve")
        .await
        .expect_error(403, "self_approval");
    act(&server, boss, &own, "revoke").await.expect(200);

    // Approved by a different super_admin: live for its duration, once.
    let approved = act(&server, boss, &g1, "approve").await.expect(200).json();
    assert_eq!(approved["status"], "active");
    let decided: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(approved["decided_at"].clone()).unwrap();
    let ends: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(approved["expires_at"].clone()).unwrap();
    assert_eq!((ends - decided).num_minutes(), 30);
    act(&server, boss, &g1, "approve")
        .await
        .expect_error(409, "grant_not_pending");

    // Only its requester reads under it, and reads only.
    read(&server, boss, &g1, "encounters")
        .await
        .expect_error(403, "grant_not_yours");
    read(&server, &t.owner_token, &g1, "encounters")
        .await
        .expect_error(401, "unauthenticated");
    let list = read(&server, support, &g1, "encounters")
        .await
        .expect(200)
        .json();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&e1) && ids.contains(&e2), "{ids:?}");
    let patient = read(&server, support, &g1, &format!("patients/{p1}"))
        .await
        .expect(200)
        .json();
    assert_eq!(patient["family_name"], CANARY);
    let r = server
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/staff/break-glass/{g1}/encounters"),
        )
        .bearer_auth(support);
    let r = server.send(r).await;
    assert_eq!(r.status, 405, "a grant must not open writes");

    // Revoked: closed on the next request.
    let revoked = act(&server, support, &g1, "revoke")
        .await
        .expect(200)
        .json();
    assert_eq!(revoked["status"], "revoked");
    read(&server, support, &g1, &format!("patients/{p1}"))
        .await
        .expect_error(403, "grant_not_active");
    act(&server, support, &g1, "revoke")
        .await
        .expect_error(403, "grant_not_active");

    // A grant for one encounter opens that encounter and its patient, nothing else.
    let g2 = ask(
        &server,
        support,
        json!({"tenant_id": t.id, "encounter_id": e1, "reason": REASON, "duration_minutes": 15}),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(g2["encounter_id"], e1);
    let g2 = g2["id"].as_str().unwrap().to_string();
    act(&server, boss, &g2, "approve").await.expect(200);
    read(&server, support, &g2, &format!("encounters/{e1}"))
        .await
        .expect(200);
    read(&server, support, &g2, &format!("encounters/{e2}"))
        .await
        .expect_error(404, "not_found");
    read(&server, support, &g2, &format!("patients/{p1}"))
        .await
        .expect(200);
    read(&server, support, &g2, &format!("patients/{p2}"))
        .await
        .expect_error(404, "not_found");
    let only = read(&server, support, &g2, "encounters")
        .await
        .expect(200)
        .json();
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["id"], e1);

    // A denied grant never opens.
    let g3 = ask(&server, support, tenant_grant.clone())
        .await
        .expect(201)
        .json();
    let g3 = g3["id"].as_str().unwrap().to_string();
    let denied = act(&server, boss, &g3, "deny").await.expect(200).json();
    assert_eq!(denied["status"], "denied");
    read(&server, support, &g3, "encounters")
        .await
        .expect_error(403, "grant_not_active");

    // The register: a super_admin sees every grant, others their own; no PHI in it.
    let all = server
        .get("/api/v1/staff/break-glass", Some(boss))
        .await
        .expect(200)
        .json();
    assert_eq!(all.as_array().unwrap().len(), 4);
    let mine = server
        .get("/api/v1/staff/break-glass", Some(support))
        .await
        .expect(200)
        .text();
    assert!(!mine.contains(CANARY));
    assert_eq!(
        serde_json::from_str::<Value>(&mine)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    server
        .get(&format!("/api/v1/staff/break-glass/{own}"), Some(support))
        .await
        .expect_error(404, "not_found");

    // The trail: lifecycle on both chains; every read under a grant in the tenant's
    // chain, by the staff member, naming the grant; no PHI anywhere in it.
    let out = site.cli(&["audit", "export", "--format", "jsonl"]);
    assert!(!out.contains(CANARY) && !out.contains(REASON));
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let count = |tenant: bool, action: &str, grant: &str| {
        events
            .iter()
            .filter(|e| {
                e["tenant"].is_null() != tenant
                    && e["action"] == action
                    && e["resource"]["id"] == grant
                    && e["actor"]["kind"] == "staff"
            })
            .count()
    };
    for tenant in [false, true] {
        assert_eq!(count(tenant, "breakglass.requested", &g1), 1);
        assert_eq!(count(tenant, "breakglass.approved", &g1), 1);
        assert_eq!(count(tenant, "breakglass.revoked", &g1), 1);
        assert_eq!(count(tenant, "breakglass.denied", &g3), 1);
    }
    let reads_under = |grant: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| {
                e["action"] == "phi.read" && e["reason"].as_str().is_some_and(|r| r.contains(grant))
            })
            .collect()
    };
    let g1_reads = reads_under(&g1);
    // Two encounters listed and one patient read.
    assert_eq!(g1_reads.len(), 3, "{g1_reads:?}");
    for e in &g1_reads {
        assert_eq!(e["tenant"], t.id.as_str());
        assert_eq!(e["actor"]["kind"], "staff");
        assert_eq!(e["actor"]["role"], "support");
    }
    assert!(g1_reads.iter().any(|e| e["resource"]["id"] == p1));
    assert_eq!(reads_under(&g2).len(), 3);
    let denials = events
        .iter()
        .filter(|e| {
            e["tenant"].is_null() && e["action"] == "access.denied" && e["actor"]["kind"] == "staff"
        })
        .count();
    assert!(denials >= 6, "refusals on the platform chain: {denials}");
    // The tenant's privacy officer sees the grant in the tenant's own audit view.
    let seen = server
        .get(
            &t.path("audit?action=breakglass.approved"),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .text();
    assert!(seen.contains(&g1) && seen.contains(&g2));
    let verify = site.cli_output(&["audit", "verify"]);
    assert!(verify.status.success(), "the chains verify");
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_sqlite() {
    break_glass(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn break_glass_postgres() {
    break_glass(Backend::Postgres).await;
}
