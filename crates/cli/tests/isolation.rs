//! Tenant and practice isolation through the HTTP API, on SQLite and on PostgreSQL (served
//! as the non-owner role, so row-level security is in force).
//!
//! Tenant A has practices P1 and P2 with a patient and an encounter in each, a billing
//! user and a provider limited to P1; tenant B has one practice with its own patient and
//! encounter. Each scenario checks every tenant route.

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Backend, Server, Site, TenantFixture, forged_token, patient_json, tenant_path};

/// Everything the scenarios need, built through the CLI and the API.
struct World {
    site: Site,
    server: Server,
    a: TenantFixture,
    b: TenantFixture,
    a_p1: String,
    a_p2: String,
    /// Billing user limited to P1, and its token.
    a_billing: (String, String),
    /// Provider limited to P1, and its token.
    a_provider: (String, String),
    a_patient1: String,
    a_patient2: String,
    a_encounter1: String,
    a_encounter2: String,
    b_practice: String,
    b_patient: String,
    b_encounter: String,
}

impl World {
    async fn build(backend: Backend) -> World {
        let site = Site::new(backend).await;
        let a = site.tenant("clinic-a", "Synthetic Clinic A");
        let b = site.tenant("clinic-b", "Synthetic Clinic B");
        let a_p1 = site.practice(&a.id, "A Practice One");
        let a_p2 = site.practice(&a.id, "A Practice Two");
        let b_practice = site.practice(&b.id, "B Practice");
        let billing = site.user(
            &a.id,
            "billing@clinic-a.example.test",
            "Synthetic Biller",
            &["billing"],
            Some(&[a_p1.as_str()]),
        );
        let (_, billing_token) = site.token(&a.id, &billing);
        let provider = site.user(
            &a.id,
            "provider@clinic-a.example.test",
            "Synthetic Provider",
            &["provider"],
            Some(&[a_p1.as_str()]),
        );
        let (_, provider_token) = site.token(&a.id, &provider);

        let server = site.serve();
        let id = |v: Value| v["id"].as_str().unwrap().to_string();
        let at = a.owner_token.as_str();
        let a_patient1 = id(server
            .create_patient(
                &a.id,
                at,
                &patient_json(&a_p1, "A-MRN-1", "Synthia", "Alpha", "1980-01-01"),
            )
            .await);
        let a_patient2 = id(server
            .create_patient(
                &a.id,
                at,
                &patient_json(&a_p2, "A-MRN-2", "Synthor", "Alpha", "1981-02-02"),
            )
            .await);
        let a_encounter1 = id(server
            .create_encounter(&a.id, at, &a_patient1, "A visit one")
            .await);
        let a_encounter2 = id(server
            .create_encounter(&a.id, at, &a_patient2, "A visit two")
            .await);
        let bt = b.owner_token.as_str();
        let b_patient = id(server
            .create_patient(
                &b.id,
                bt,
                &patient_json(&b_practice, "B-MRN-1", "Synthea", "Beta", "1990-03-03"),
            )
            .await);
        let b_encounter = id(server
            .create_encounter(&b.id, bt, &b_patient, "B visit")
            .await);
        World {
            site,
            server,
            a,
            b,
            a_p1,
            a_p2,
            a_billing: (billing, billing_token),
            a_provider: (provider, provider_token),
            a_patient1,
            a_patient2,
            a_encounter1,
            a_encounter2,
            b_practice,
            b_patient,
            b_encounter,
        }
    }

    /// Every id of tenant A.
    fn a_ids(&self) -> Vec<&str> {
        vec![
            &self.a.id,
            &self.a.owner_id,
            &self.a_p1,
            &self.a_p2,
            &self.a_billing.0,
            &self.a_provider.0,
            &self.a_patient1,
            &self.a_patient2,
            &self.a_encounter1,
            &self.a_encounter2,
        ]
    }

    async fn snapshot_a(&self) -> Value {
        self.server.snapshot(&self.a.id, &self.a.owner_token).await
    }

    async fn snapshot_b(&self) -> Value {
        self.server.snapshot(&self.b.id, &self.b.owner_token).await
    }
}

/// One request to a tenant route.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
}

impl Call {
    fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    async fn send(&self, server: &Server, authorization: Option<&str>) -> support::Reply {
        let mut rb = server.request(self.method.clone(), &self.path);
        if let Some(value) = authorization {
            rb = rb.header(reqwest::header::AUTHORIZATION, value);
        }
        if let Some(body) = &self.body {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).unwrap());
        }
        server.send(rb).await
    }
}

/// Every tenant route on `tenant`'s path, with valid bodies that reference `practice`,
/// `patient` and `encounter`.
fn every_route(tenant: &str, practice: &str, patient: &str, encounter: &str) -> Vec<Call> {
    let call = |method: Method, rest: &str, body: Option<Value>| Call {
        method,
        path: tenant_path(tenant, rest),
        body,
    };
    let unique = uuid::Uuid::new_v4().simple().to_string();
    vec![
        call(Method::GET, "me", None),
        call(Method::GET, "practices", None),
        call(
            Method::POST,
            "practices",
            Some(json!({"name": format!("Intruder Practice {unique}")})),
        ),
        call(Method::GET, "users", None),
        call(
            Method::POST,
            "users",
            Some(json!({
                "email": format!("intruder-{unique}@example.test"),
                "display_name": "Synthetic Intruder",
                "roles": ["owner"],
                "all_practices": true,
            })),
        ),
        call(Method::GET, "patients", None),
        call(
            Method::POST,
            "patients",
            Some(json!({
                "practice_id": practice,
                "mrn": format!("X-{unique}"),
                "given_name": "Synthetic",
                "family_name": "Intruder",
                "date_of_birth": "1970-07-07",
            })),
        ),
        call(Method::GET, &format!("patients/{patient}"), None),
        call(Method::GET, "encounters", None),
        call(
            Method::GET,
            &format!("encounters?patient_id={patient}&limit=5"),
            None,
        ),
        call(
            Method::POST,
            "encounters",
            Some(json!({"patient_id": patient, "reason": "Intruder visit"})),
        ),
        call(Method::GET, &format!("encounters/{encounter}"), None),
    ]
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[track_caller]
fn assert_no_ids(what: &str, body: &str, ids: &[&str]) {
    for id in ids {
        assert!(!body.contains(id), "{what} reveals tenant A's id {id}");
    }
}

// ---------------------------------------------------------------------------------------
// Scenario 1: another tenant's token on tenant A's paths.

async fn cross_tenant_token_is_refused_on_every_route(backend: Backend) {
    let w = World::build(backend).await;
    let before = w.snapshot_a().await;
    let b_auth = bearer(&w.b.owner_token);
    let calls = every_route(&w.a.id, &w.a_p1, &w.a_patient1, &w.a_encounter1);
    assert_eq!(calls.len(), 12);
    for call in &calls {
        let reply = call.send(&w.server, Some(&b_auth)).await;
        if let Err(why) = reply.check_error(403, "tenant_mismatch") {
            panic!("B's token on {}: {why}", call.label());
        }
        assert_no_ids(&call.label(), &reply.text(), &w.a_ids()[1..]);
    }
    // The refused writes left nothing behind.
    assert_eq!(w.snapshot_a().await, before, "tenant A's data changed");

    // The other way round, too.
    let a_auth = bearer(&w.a.owner_token);
    for call in every_route(&w.b.id, &w.b_practice, &w.b_patient, &w.b_encounter) {
        let reply = call.send(&w.server, Some(&a_auth)).await;
        if let Err(why) = reply.check_error(403, "tenant_mismatch") {
            panic!("A's token on {}: {why}", call.label());
        }
    }
    // A limited user of A is refused on B's paths as well.
    let billing = bearer(&w.a_billing.1);
    let reply = w.server.get(&tenant_path(&w.b.id, "patients"), None).await;
    reply.expect_error(401, "unauthenticated");
    let reply = w
        .server
        .send(
            w.server
                .request(Method::GET, &tenant_path(&w.b.id, "patients"))
                .header("authorization", billing),
        )
        .await;
    reply.expect_error(403, "tenant_mismatch");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_cross_tenant_token_is_refused_on_every_route() {
    cross_tenant_token_is_refused_on_every_route(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_cross_tenant_token_is_refused_on_every_route() {
    cross_tenant_token_is_refused_on_every_route(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------
// Scenario 2: tenant B on its own paths, naming tenant A's ids.

async fn own_tenant_never_shows_another_tenants_ids(backend: Backend) {
    let w = World::build(backend).await;
    let s = &w.server;
    let bt = Some(w.b.owner_token.as_str());
    let a_before = w.snapshot_a().await;
    let b_before = w.snapshot_b().await;
    let a_ids = w.a_ids();

    // Direct reads of A's records through B's tenant path.
    for rest in [
        format!("patients/{}", w.a_patient1),
        format!("patients/{}", w.a_patient2),
        format!("encounters/{}", w.a_encounter1),
        format!("encounters/{}", w.a_encounter2),
    ] {
        let reply = s.get(&tenant_path(&w.b.id, &rest), bt).await;
        if let Err(why) = reply.check_error(404, "not_found") {
            panic!("B reading A's {rest}: {why}");
        }
    }

    // Lists hold B's records and none of A's, whatever the filters and cursors.
    let lists = [
        ("practices".to_string(), Some(&w.b_practice)),
        ("users".to_string(), Some(&w.b.owner_id)),
        ("patients".to_string(), Some(&w.b_patient)),
        ("patients?limit=200".to_string(), Some(&w.b_patient)),
        ("encounters".to_string(), Some(&w.b_encounter)),
        (
            format!("encounters?patient_id={}", w.a_patient1),
            None::<&String>,
        ),
        (
            format!("encounters?patient_id={}", w.a_patient2),
            None::<&String>,
        ),
        (
            format!("patients?after={}", uuid::Uuid::nil()),
            Some(&w.b_patient),
        ),
        (
            format!("encounters?after={}", uuid::Uuid::nil()),
            Some(&w.b_encounter),
        ),
    ];
    for (rest, own) in &lists {
        let reply = s.get(&tenant_path(&w.b.id, rest), bt).await;
        reply.expect(200);
        let ids = reply.ids();
        assert_no_ids(&format!("B's {rest}"), &reply.text(), &a_ids);
        match own {
            Some(own) => assert!(ids.contains(own), "B's {rest} misses B's own {own}"),
            None => assert!(ids.is_empty(), "B's {rest} is not empty: {ids:?}"),
        }
    }
    let me = s.get(&tenant_path(&w.b.id, "me"), bt).await;
    me.expect(200);
    assert_eq!(me.json()["tenant_id"], w.b.id.as_str());
    assert_no_ids("B's me", &me.text(), &a_ids);

    // Writes in B that name A's records fail as if they did not exist.
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let writes = [
        (
            "encounter for A's patient",
            "encounters",
            json!({"patient_id": w.a_patient1, "reason": "Cross-tenant visit"}),
        ),
        (
            "patient in A's practice",
            "patients",
            json!({"practice_id": w.a_p1, "mrn": "X-1", "given_name": "Synthetic",
                   "family_name": "Crosser", "date_of_birth": "1970-01-01"}),
        ),
        (
            "user granted A's practice",
            "users",
            json!({"email": format!("cross-{unique}@example.test"), "display_name": "Synthetic Crosser",
                   "roles": ["member"], "practice_ids": [w.b_practice, w.a_p1]}),
        ),
    ];
    for (what, rest, body) in writes {
        let reply = s.post_json(&tenant_path(&w.b.id, rest), bt, &body).await;
        if let Err(why) = reply.check_error(404, "not_found") {
            panic!("B creating {what}: {why}");
        }
        assert_no_ids(what, &reply.text(), &a_ids[1..]);
    }
    assert_eq!(w.snapshot_a().await, a_before, "tenant A's data changed");
    assert_eq!(
        w.snapshot_b().await,
        b_before,
        "a refused write left data in B"
    );

    // A sees its own records (the ids above are real).
    let at = Some(w.a.owner_token.as_str());
    s.get(
        &tenant_path(&w.a.id, &format!("patients/{}", w.a_patient1)),
        at,
    )
    .await
    .expect(200);
    s.get(
        &tenant_path(&w.a.id, &format!("encounters/{}", w.a_encounter2)),
        at,
    )
    .await
    .expect(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_own_tenant_never_shows_another_tenants_ids() {
    own_tenant_never_shows_another_tenants_ids(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_own_tenant_never_shows_another_tenants_ids() {
    own_tenant_never_shows_another_tenants_ids(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------
// Scenario 3: users limited to practice P1.

async fn practice_limited_users_stay_in_their_practice(backend: Backend) {
    let w = World::build(backend).await;
    let s = &w.server;
    let before = w.snapshot_a().await;
    let path = |rest: &str| tenant_path(&w.a.id, rest);
    let billing = Some(w.a_billing.1.as_str());

    let me = s.get(&path("me"), billing).await;
    me.expect(200);
    assert_eq!(me.json()["roles"], json!(["billing"]));
    assert_eq!(me.json()["user_id"], w.a_billing.0.as_str());

    // P1's records are visible, P2's are not.
    let p1 = s
        .get(&path(&format!("patients/{}", w.a_patient1)), billing)
        .await;
    p1.expect(200);
    assert_eq!(p1.json()["id"], w.a_patient1.as_str());
    let e1 = s
        .get(&path(&format!("encounters/{}", w.a_encounter1)), billing)
        .await;
    e1.expect(200);
    assert_eq!(e1.json()["id"], w.a_encounter1.as_str());
    for rest in [
        format!("patients/{}", w.a_patient2),
        format!("encounters/{}", w.a_encounter2),
    ] {
        let reply = s.get(&path(&rest), billing).await;
        if let Err(why) = reply.check_error(404, "not_found") {
            panic!("billing user reading P2's {rest}: {why}");
        }
    }
    let p2_ids = [
        w.a_p2.as_str(),
        w.a_patient2.as_str(),
        w.a_encounter2.as_str(),
    ];
    let lists = [
        ("practices".to_string(), Some(&w.a_p1)),
        ("patients".to_string(), Some(&w.a_patient1)),
        ("encounters".to_string(), Some(&w.a_encounter1)),
        (
            format!("encounters?patient_id={}", w.a_patient1),
            Some(&w.a_encounter1),
        ),
        (format!("encounters?patient_id={}", w.a_patient2), None),
    ];
    for (rest, own) in &lists {
        let reply = s.get(&path(rest), billing).await;
        reply.expect(200);
        assert_no_ids(&format!("billing {rest}"), &reply.text(), &p2_ids);
        let ids = reply.ids();
        match own {
            Some(own) => assert!(ids.contains(own), "billing {rest} misses {own}"),
            None => assert!(ids.is_empty(), "billing {rest}: {ids:?}"),
        }
    }

    // Billing reads only: every write, and the user list, is forbidden.
    let refused = every_route(&w.a.id, &w.a_p1, &w.a_patient1, &w.a_encounter1);
    let mut forbidden = 0;
    for call in &refused {
        let is_write = call.method == Method::POST;
        let is_users = call.path.ends_with("/users");
        if !(is_write || is_users) {
            continue;
        }
        let reply = call.send(s, Some(&bearer(&w.a_billing.1))).await;
        if let Err(why) = reply.check_error(403, "forbidden") {
            panic!("billing {}: {why}", call.label());
        }
        forbidden += 1;
    }
    assert_eq!(
        forbidden, 5,
        "POST practices/users/patients/encounters and GET users"
    );
    assert_eq!(
        w.snapshot_a().await,
        before,
        "a forbidden write changed data"
    );

    // A provider limited to P1 may write, but only in P1.
    let provider = Some(w.a_provider.1.as_str());
    let in_p1 = s
        .post_json(
            &path("patients"),
            provider,
            &json!({"practice_id": w.a_p1, "mrn": "P1-NEW", "given_name": "Synthetic",
                    "family_name": "Newcomer", "date_of_birth": "2000-01-01"}),
        )
        .await;
    in_p1.expect(201);
    let new_patient = in_p1.json()["id"].as_str().unwrap().to_string();
    s.post_json(
        &path("encounters"),
        provider,
        &json!({"patient_id": new_patient}),
    )
    .await
    .expect(201);
    let after_allowed = w.snapshot_a().await;
    let p2_writes = [
        (
            "patients",
            json!({"practice_id": w.a_p2, "mrn": "P2-NEW", "given_name": "Synthetic",
                   "family_name": "Outsider", "date_of_birth": "2000-01-01"}),
        ),
        ("encounters", json!({"patient_id": w.a_patient2})),
    ];
    for (rest, body) in p2_writes {
        let reply = s.post_json(&path(rest), provider, &body).await;
        if let Err(why) = reply.check_error(404, "not_found") {
            panic!("P1 provider writing {rest} in P2: {why}");
        }
    }
    for rest in [
        format!("patients/{}", w.a_patient2),
        format!("encounters/{}", w.a_encounter2),
    ] {
        s.get(&path(&rest), provider)
            .await
            .expect_error(404, "not_found");
    }
    assert_eq!(
        w.snapshot_a().await,
        after_allowed,
        "a refused P2 write left data"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_practice_limited_users_stay_in_their_practice() {
    practice_limited_users_stay_in_their_practice(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_practice_limited_users_stay_in_their_practice() {
    practice_limited_users_stay_in_their_practice(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------
// Scenario 4: missing, malformed, unknown and revoked credentials.

async fn bad_credentials_are_unauthenticated_on_every_route(backend: Backend) {
    let w = World::build(backend).await;
    let s = &w.server;
    let before = w.snapshot_a().await;

    // A token that works, then is revoked while the server runs.
    let (revoked_id, revoked) = w.site.token(&w.a.id, &w.a.owner_id);
    s.get(&tenant_path(&w.a.id, "me"), Some(&revoked))
        .await
        .expect(200);
    w.site.revoke(&w.a.id, &revoked_id);

    let real = &w.a.owner_token;
    let forged = forged_token(&w.a.id, "");
    assert_eq!(forged.len(), real.len(), "forged token is not token-shaped");
    let forged_other = forged_token(&uuid::Uuid::new_v4().to_string(), "");
    let b_token_a_tenant = {
        // B's real secret under A's tenant id.
        let secret = w.b.owner_token.rsplit('_').next().unwrap();
        format!("pvt_{}_{secret}", w.a.id.replace('-', ""))
    };
    let credentials: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("empty", Some(String::new())),
        ("bearer without token", Some("Bearer ".into())),
        ("not bearer", Some(format!("Basic {real}"))),
        ("bare token", Some(real.clone())),
        ("garbage", Some("Bearer not-a-token".into())),
        ("truncated", Some(bearer(&real[..real.len() - 1]))),
        ("extended", Some(bearer(&format!("{real}A")))),
        ("two tokens", Some(format!("Bearer {real} {real}"))),
        (
            "wrong prefix",
            Some(bearer(&real.replacen("pvt_", "pvx_", 1))),
        ),
        ("forged for A", Some(bearer(&forged))),
        ("forged for unknown tenant", Some(bearer(&forged_other))),
        ("B's secret as A's", Some(bearer(&b_token_a_tenant))),
        ("revoked", Some(bearer(&revoked))),
    ];
    let calls = every_route(&w.a.id, &w.a_p1, &w.a_patient1, &w.a_encounter1);
    for (what, auth) in &credentials {
        for call in &calls {
            let reply = call.send(s, auth.as_deref()).await;
            if let Err(why) = reply.check_error(401, "unauthenticated") {
                panic!("{what} on {}: {why}", call.label());
            }
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer"),
                "{what} on {}",
                call.label()
            );
            assert_no_ids(&call.label(), &reply.text(), &w.a_ids()[1..]);
        }
    }
    assert_eq!(
        w.snapshot_a().await,
        before,
        "an unauthenticated write changed data"
    );

    // Revoking one token leaves the owner's other token working.
    s.get(&tenant_path(&w.a.id, "me"), Some(real))
        .await
        .expect(200);
    // Revoking twice is an error, not a silent success.
    let again = w
        .site
        .cli_output(&["token", "revoke", "--tenant", &w.a.id, "--id", &revoked_id]);
    assert!(!again.status.success(), "second revoke succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_bad_credentials_are_unauthenticated_on_every_route() {
    bad_credentials_are_unauthenticated_on_every_route(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_bad_credentials_are_unauthenticated_on_every_route() {
    bad_credentials_are_unauthenticated_on_every_route(Backend::Postgres).await;
}
