//! PHI canaries: distinctive synthetic values sent through every endpoint, in valid and
//! in broken requests, at debug (and trace) log level. None may appear in the server's log, nor in
//! any error answer (an authorized read may return them: that is its job).

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Backend, Reply, Server, Site, forged_token};

const GIVEN: &str = "CANARYGIVEN7Q";
const FAMILY: &str = "CANARYFAMILY7Q";
const MRN: &str = "CANARYMRN7Q";
const REASON: &str = "CANARYREASON7Q";
const DOB: &str = "1911-11-11";
const PRACTICE: &str = "CANARYPRACTICE7Q Clinic";
const STAFF: &str = "CANARYSTAFF7Q";
const STAFF_EMAIL: &str = "canarystaff7q@example.test";

/// Every canary contains this (compared case-insensitively), or is one of these dates.
const MARK: &str = "canary";
const DATE_FORMS: [&str; 3] = ["1911-11-11", "19111111", "11/11/1911"];

fn leaks(text: &str) -> bool {
    text.to_lowercase().contains(MARK) || DATE_FORMS.iter().any(|d| text.contains(d))
}

/// What a probe's answer may be.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// An authorized PHI request: must succeed, may carry the canaries.
    Success,
    /// Must be a 4xx error in phivault's shape, with no canary.
    Error,
    /// Any status, no canary in the answer.
    Quiet,
}

struct Probes {
    list: Vec<(String, Expect, Reply)>,
}

impl Probes {
    fn add(&mut self, what: impl Into<String>, expect: Expect, reply: Reply) -> &Reply {
        self.list.push((what.into(), expect, reply));
        &self.list.last().unwrap().2
    }

    /// Every failure to meet the expectations.
    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (what, expect, reply) in &self.list {
            match expect {
                Expect::Success => {
                    if !(200..300).contains(&reply.status) {
                        out.push(format!("{what}: expected success, got {}", reply.status));
                    }
                    continue;
                }
                Expect::Error => {
                    if !(400..500).contains(&reply.status) {
                        out.push(format!("{what}: expected a 4xx, got {}", reply.status));
                    } else {
                        let code = serde_json::from_slice::<Value>(&reply.body)
                            .ok()
                            .and_then(|v| v["code"].as_str().map(str::to_string))
                            .unwrap_or_default();
                        if let Err(why) = reply.check_error(reply.status, &code) {
                            out.push(format!("{what}: {why}"));
                        }
                    }
                }
                Expect::Quiet => {}
            }
            if leaks(&reply.text()) {
                out.push(format!(
                    "{what}: answer body echoes a canary: {}",
                    reply.text()
                ));
            }
            for (name, value) in &reply.headers {
                if leaks(name) || leaks(value) {
                    out.push(format!("{what}: header {name} echoes a canary"));
                }
            }
        }
        out
    }
}

fn canary_patient(practice: &str) -> Value {
    json!({
        "practice_id": practice,
        "mrn": MRN,
        "given_name": GIVEN,
        "family_name": FAMILY,
        "date_of_birth": DOB,
    })
}

fn with(mut value: Value, key: &str, field: Value) -> Value {
    value[key] = field;
    value
}

async fn post(server: &Server, path: &str, token: Option<&str>, ct: &str, body: Vec<u8>) -> Reply {
    server.post_raw(path, token, Some(ct), body).await
}

async fn post_json(server: &Server, path: &str, token: Option<&str>, body: &Value) -> Reply {
    server.post_json(path, token, body).await
}

async fn canaries_never_reach_logs_or_error_bodies(backend: Backend, level: &str) {
    let site = Site::new(backend).await;
    let a = site.tenant("sentinel-a", "Sentinel Clinic A");
    let b = site.tenant("sentinel-b", "Sentinel Clinic B");
    let biller = site.user(
        &a.id,
        "biller@sentinel-a.example.test",
        "Sentinel Biller",
        &["billing"],
        None,
    );
    let (_, billing_token) = site.token(&a.id, &biller);
    let mut server = site.serve_with(&[
        ("PHIVAULT_LOG", level),
        ("PHIVAULT_LOG_FORMAT", "json"),
        ("PHIVAULT_BODY_LIMIT_BYTES", "16384"),
    ]);
    let s = &server;
    let owner = Some(a.owner_token.as_str());
    let path = |rest: &str| a.path(rest);
    let mut p = Probes { list: Vec::new() };
    let id_of = |r: &Reply| r.json()["id"].as_str().unwrap_or_default().to_string();

    // Valid writes and authorized reads carry the canaries.
    let r = post_json(s, &path("practices"), owner, &json!({"name": PRACTICE})).await;
    let practice = id_of(p.add("create practice", Expect::Success, r));
    let r = post_json(s, &path("patients"), owner, &canary_patient(&practice)).await;
    let patient = id_of(p.add("create patient", Expect::Success, r));
    let r = post_json(
        s,
        &path("encounters"),
        owner,
        &json!({"patient_id": patient, "reason": format!("{REASON} follow-up")}),
    )
    .await;
    let encounter = id_of(p.add("create encounter", Expect::Success, r));
    let r = post_json(
        s,
        &path("users"),
        owner,
        &json!({"email": STAFF_EMAIL, "display_name": STAFF, "roles": ["member"],
                "practice_ids": [practice]}),
    )
    .await;
    p.add("create user", Expect::Success, r);
    for rest in [
        format!("patients/{patient}"),
        "patients".to_string(),
        format!("encounters/{encounter}"),
        format!("encounters?patient_id={patient}"),
        "practices".to_string(),
        "users".to_string(),
        "me".to_string(),
    ] {
        let r = s.get(&path(&rest), owner).await;
        p.add(format!("GET {rest}"), Expect::Success, r);
    }
    let read_back = s.get(&path(&format!("patients/{patient}")), owner).await;
    let text = read_back.text();
    assert!(
        text.contains(GIVEN) && text.contains(FAMILY) && text.contains(MRN) && text.contains(DOB),
        "the canary patient was not stored as sent: {text}"
    );
    let r = s
        .get(&path(&format!("encounters/{encounter}")), owner)
        .await;
    assert!(r.text().contains(REASON), "encounter reason not stored");

    // Broken patient bodies.
    let valid = canary_patient(&practice);
    let missing = uuid::Uuid::new_v4().to_string();
    let mut bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "canary as a UUID",
            with(valid.clone(), "practice_id", json!(GIVEN)),
        ),
        (
            "canary in an array",
            with(valid.clone(), "given_name", json!([GIVEN])),
        ),
        (
            "canary as a key",
            with(valid.clone(), "family_name", json!({FAMILY: FAMILY})),
        ),
        (
            "canary as a date",
            with(valid.clone(), "date_of_birth", json!("CANARYDOB7Q")),
        ),
        (
            "date as a number",
            with(valid.clone(), "date_of_birth", json!(19111111)),
        ),
        (
            "impossible date",
            with(valid.clone(), "date_of_birth", json!("1911-11-31")),
        ),
        (
            "future date",
            with(valid.clone(), "date_of_birth", json!("2911-11-11")),
        ),
        ("mrn of wrong type", with(valid.clone(), "mrn", json!(7))),
        (
            "unknown field",
            with(valid.clone(), "CANARYFIELD7Q", json!("CANARYVALUE7Q")),
        ),
        (
            "unknown nested field",
            with(
                valid.clone(),
                "extra",
                json!({"CANARYFIELD7Q": ["CANARYVALUE7Q"]}),
            ),
        ),
        (
            "too long",
            with(valid.clone(), "given_name", json!(GIVEN.repeat(20))),
        ),
        (
            "control character",
            with(
                valid.clone(),
                "family_name",
                json!(format!("{FAMILY}\u{1}")),
            ),
        ),
        (
            "unknown practice",
            with(valid.clone(), "practice_id", json!(missing)),
        ),
        (
            "positional array",
            json!([practice, MRN, GIVEN, FAMILY, DOB]),
        ),
        ("wrapped in an array", json!([valid])),
    ]
    .into_iter()
    .map(|(w, v)| (w, serde_json::to_vec(&v).unwrap()))
    .collect();
    let mut missing_field = valid.clone();
    missing_field.as_object_mut().unwrap().remove("mrn");
    bodies.push(("missing field", serde_json::to_vec(&missing_field).unwrap()));
    bodies.push((
        "bare words",
        format!(r#"{{"given_name": "{GIVEN}", "mrn": {MRN}}}"#).into_bytes(),
    ));
    bodies.push((
        "truncated",
        format!(r#"{{"given_name": "{GIVEN}"#).into_bytes(),
    ));
    bodies.push(("unquoted key", br#"{CANARYFIELD7Q: 1}"#.to_vec()));
    let mut trailing = serde_json::to_vec(&valid).unwrap();
    trailing.extend_from_slice(b" CANARYTRAIL7Q");
    bodies.push(("trailing garbage", trailing));
    let mut twice = serde_json::to_vec(&valid).unwrap();
    twice.pop();
    twice.extend_from_slice(format!(r#","mrn":"{MRN}"}}"#).as_bytes());
    bodies.push(("duplicate field", twice));
    let mut bad_utf8 = format!(r#"{{"given_name":"{GIVEN}"#).into_bytes();
    bad_utf8.extend_from_slice(b"\xff\"}");
    bodies.push(("invalid UTF-8", bad_utf8));
    for (what, body) in bodies {
        let r = post(s, &path("patients"), owner, "application/json", body).await;
        p.add(format!("patient: {what}"), Expect::Error, r);
    }
    let body = serde_json::to_vec(&valid).unwrap();
    for ct in ["text/plain", "application/CANARYCT7Q"] {
        let r = post(s, &path("patients"), owner, ct, body.clone()).await;
        p.add(format!("patient as {ct}"), Expect::Error, r);
    }
    let r = post(
        s,
        &path("patients"),
        owner,
        "application/json",
        format!(r#"{{"given_name":"{}"}}"#, GIVEN.repeat(2000)).into_bytes(),
    )
    .await;
    p.add("patient over the body limit", Expect::Error, r);
    let r = post_json(s, &path("patients"), Some(&billing_token), &valid).await;
    p.add("patient by a billing user", Expect::Error, r);
    let r = post_json(s, &path("patients"), Some(&b.owner_token), &valid).await;
    p.add("patient by another tenant", Expect::Error, r);
    let r = post_json(s, &path("patients"), None, &valid).await;
    p.add("patient without a token", Expect::Error, r);

    // Broken encounters, practices and users.
    let broken: Vec<(&str, &str, Value)> = vec![
        (
            "encounters",
            "canary as patient id",
            json!({"patient_id": "CANARYPID7Q"}),
        ),
        (
            "encounters",
            "reason of wrong type",
            json!({"patient_id": patient, "reason": {REASON: 1}}),
        ),
        (
            "encounters",
            "reason too long",
            json!({"patient_id": patient, "reason": REASON.repeat(200)}),
        ),
        (
            "encounters",
            "canary as a time",
            json!({"patient_id": patient, "started_at": "CANARYTIME7Q"}),
        ),
        (
            "encounters",
            "unknown patient",
            json!({"patient_id": missing, "reason": REASON}),
        ),
        (
            "encounters",
            "unknown field",
            json!({"patient_id": patient, "reason": REASON, "CANARYFIELD7Q": 1}),
        ),
        ("practices", "taken name", json!({"name": PRACTICE})),
        (
            "practices",
            "name too long",
            json!({"name": PRACTICE.repeat(20)}),
        ),
        (
            "practices",
            "unknown field",
            json!({"CANARYFIELD7Q": PRACTICE}),
        ),
        (
            "users",
            "canary as email",
            json!({"email": "CANARYEMAIL7Q", "display_name": STAFF,
                                            "roles": ["member"], "all_practices": true}),
        ),
        (
            "users",
            "canary as role",
            json!({"email": "other7q@example.test", "display_name": STAFF,
                                           "roles": ["CANARYROLE7Q"], "all_practices": true}),
        ),
        (
            "users",
            "taken email",
            json!({"email": STAFF_EMAIL, "display_name": STAFF,
                                        "roles": ["member"], "all_practices": true}),
        ),
        (
            "users",
            "canary as practice id",
            json!({"email": "third7q@example.test", "display_name": STAFF,
                                                  "roles": ["member"], "practice_ids": ["CANARYPRACTICEID7Q"]}),
        ),
        (
            "users",
            "name too long",
            json!({"email": "fourth7q@example.test", "display_name": STAFF.repeat(20),
                                          "roles": ["member"], "all_practices": true}),
        ),
    ];
    for (rest, what, body) in broken {
        let r = post_json(s, &path(rest), owner, &body).await;
        p.add(format!("{rest}: {what}"), Expect::Error, r);
    }

    // Canaries in paths and query strings.
    for (what, full) in [
        ("patient id", path("patients/CANARYPATH7Q")),
        ("encounter id", path("encounters/CANARYPATH7Q")),
        (
            "tenant id",
            "/api/v1/tenants/CANARYTENANT7Q/patients".to_string(),
        ),
        ("route", "/api/v1/CANARYROUTE7Q".to_string()),
        ("tenant route", path("CANARYROUTE7Q")),
        (
            "encoded route",
            "/CANARYROUTE7Q/%43ANARY%20PATH7Q".to_string(),
        ),
        ("query name", path("patients?CANARYQUERY7Q=CANARYQVAL7Q")),
        ("query limit", path("patients?limit=CANARYLIMIT7Q")),
        ("query cursor", path("patients?after=CANARYAFTER7Q")),
        ("query patient", path("encounters?patient_id=CANARYPID7Q")),
        (
            "query extra",
            path(&format!("encounters?patient_id={patient}&CANARYQUERY7Q=1")),
        ),
    ] {
        let r = s.get(&full, owner).await;
        p.add(format!("GET with canary {what}"), Expect::Error, r);
        let r = s.get(&full, None).await;
        p.add(
            format!("GET with canary {what}, no token"),
            Expect::Error,
            r,
        );
    }
    let r = s
        .send(s.request(Method::DELETE, &path("patients/CANARYPATH7Q")))
        .await;
    p.add("DELETE canary path", Expect::Error, r);
    for quiet in [
        "/healthz?CANARYQUERY7Q=CANARYQVAL7Q".to_string(),
        "/readyz?CANARYQUERY7Q=1".to_string(),
        "/api/openapi.json?CANARYQUERY7Q=1".to_string(),
        path("me?CANARYQUERY7Q=1"),
    ] {
        let r = s.get(&quiet, owner).await;
        p.add(format!("GET {quiet}"), Expect::Quiet, r);
    }

    // Canaries in headers, on a good request and on a refused one.
    let headers = [
        ("x-canaryheader7q", "CANARYHVAL7Q"),
        ("user-agent", "CANARYAGENT7Q/1.0"),
        ("referer", "https://example.test/CANARYREF7Q"),
        ("x-request-id", "CANARYRID7Q"),
        ("x-forwarded-for", "CANARYXFF7Q"),
        ("forwarded", "for=CANARYFWD7Q"),
        ("cookie", "session=CANARYCOOKIE7Q"),
        ("accept", "application/CANARYACCEPT7Q"),
        ("origin", "https://canary7q.example.test"),
    ];
    for (what, full, expect) in [
        ("me", path("me"), Expect::Quiet),
        ("bad path", path("patients/CANARYPATH7Q"), Expect::Error),
    ] {
        let mut rb = s.request(Method::GET, &full).bearer_auth(&a.owner_token);
        for (name, value) in headers {
            rb = rb.header(name, value);
        }
        let r = s.send(rb).await;
        p.add(format!("canary headers on {what}"), expect, r);
    }

    // Canaries as credentials.
    let forged = forged_token(&a.id, "CANARYTOKEN7Q");
    for (what, auth) in [
        ("bearer canary", "Bearer CANARYTOKEN7Q".to_string()),
        ("bare canary", "CANARYTOKEN7Q".to_string()),
        ("basic canary", "Basic CANARYTOKEN7Q".to_string()),
        (
            "token-like canary",
            "Bearer pvt_CANARYTOKEN7Q_CANARYTOKEN7Q".to_string(),
        ),
        ("well-formed canary token", format!("Bearer {forged}")),
    ] {
        let rb = s
            .request(Method::GET, &path("me"))
            .header("authorization", auth.clone());
        let r = s.send(rb).await;
        p.add(format!("{what} on me"), Expect::Error, r);
        let rb = s
            .request(Method::POST, &path("patients"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&valid).unwrap());
        let r = s.send(rb).await;
        p.add(format!("{what} on a patient write"), Expect::Error, r);
    }

    // Canaries sent to the key routes (this server is unsealed: a development keyring).
    for (what, ct, body) in [
        (
            "unseal passphrase",
            "application/json",
            br#"{"passphrase":"CANARYPASS7Q"}"#.to_vec(),
        ),
        (
            "unseal bare word",
            "application/json",
            br#"{"passphrase": CANARYPASS7Q}"#.to_vec(),
        ),
        (
            "unseal unknown field",
            "application/json",
            br#"{"CANARYFIELD7Q":"CANARYPASS7Q"}"#.to_vec(),
        ),
        ("unseal as text", "text/plain", b"CANARYPASS7Q".to_vec()),
    ] {
        let r = post(s, "/api/v1/sys/unseal", None, ct, body).await;
        p.add(what, Expect::Error, r);
    }
    let r = s.get("/api/v1/sys/keys?CANARYQUERY7Q=1", None).await;
    p.add("key status with a canary query", Expect::Quiet, r);

    // A canary as the method.
    let verb = Method::from_bytes(b"CANARYVERB7Q").unwrap();
    for full in ["/healthz".to_string(), path("patients")] {
        let r = s.send(s.request(verb.clone(), &full)).await;
        p.add(format!("canary method on {full}"), Expect::Error, r);
    }

    // Requests the HTTP parser refuses before the application sees them.
    let sent_through_app = p.list.len();
    if !server.url.starts_with("https") {
        for raw in [
            "GET /CANARYRAW7Q PATH HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-CANARYRAW7Q: CANARY\x01RAW7Q\r\nConnection: close\r\n\r\n",
        ] {
            let r = server.raw(raw.as_bytes());
            p.add("raw malformed request", Expect::Quiet, r);
        }
    }

    let failures = p.failures();
    assert!(
        failures.is_empty(),
        "{} of {} probes failed:\n{}",
        failures.len(),
        p.list.len(),
        failures.join("\n")
    );

    // The log: debug was on, every line is JSON, and no line holds a canary.
    let status = server.stop();
    assert!(status.success(), "server exit: {status}");
    let log = server.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    for line in &lines {
        assert!(
            serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()),
            "log line is not a JSON object: {line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "no debug line: PHIVAULT_LOG={level} was not in effect"
    );
    let access = lines
        .iter()
        .filter(|l| l.contains("phivault::access_log"))
        .count();
    assert!(
        access >= sent_through_app,
        "{access} access-log lines for {sent_through_app} requests"
    );
    let leaked: Vec<String> = lines
        .iter()
        .filter(|l| leaks(l))
        .map(|l| l.chars().take(400).collect())
        .collect();
    assert!(
        leaked.is_empty(),
        "{} of {} log lines hold a canary:\n{}",
        leaked.len(),
        lines.len(),
        leaked.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_canaries_never_reach_logs_or_error_bodies() {
    canaries_never_reach_logs_or_error_bodies(Backend::Sqlite, "debug").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_canaries_never_reach_logs_or_error_bodies() {
    canaries_never_reach_logs_or_error_bodies(Backend::Postgres, "debug").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_canaries_never_reach_logs_even_at_trace_level() {
    canaries_never_reach_logs_or_error_bodies(Backend::Sqlite, "trace").await;
}

/// Every byte the site stores: its data directory's files, and on PostgreSQL every row
/// of every table as text (bytea as hex), read as superuser.
async fn stored_bytes(site: &Site) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dirs = vec![site.data_dir().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.extend(std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    if let Some(url) = site.pg_admin_url() {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .expect("connect as admin");
        let tables: Vec<(String,)> = sqlx::query_as(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(tables.len() > 5, "no tables found: {tables:?}");
        for (table,) in tables {
            let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT t::text FROM \"{table}\" t"
            )))
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for (row,) in rows {
                out.extend(row.into_bytes());
                out.push(b'\n');
            }
        }
        conn.close().await.ok();
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn phi_is_not_stored_in_clear(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("at-rest", "Synthetic At Rest Clinic");
    let practice = site.practice(&t.id, "At Rest Practice");
    let mut server = site.serve();
    let token = t.owner_token.as_str();
    let patient = server
        .create_patient(&t.id, token, &canary_patient(&practice))
        .await;
    let id = patient["id"].as_str().unwrap().to_string();
    server.create_encounter(&t.id, token, &id, REASON).await;
    // Read back through the API: the values are stored, somehow.
    let read = server
        .get(&t.path(&format!("patients/{id}")), Some(token))
        .await;
    read.expect(200);
    assert_eq!(read.json()["given_name"], GIVEN);
    assert!(server.stop().success());

    let stored = stored_bytes(&site).await;
    assert!(
        find(&stored, b"At Rest Practice"),
        "the storage scan misses plain data (a practice name is not PHI)"
    );
    let mut leaked = Vec::new();
    for canary in [GIVEN, FAMILY, MRN, REASON, DOB] {
        let hex: String = canary.bytes().map(|b| format!("{b:02x}")).collect();
        let lower = canary.to_lowercase();
        for form in [canary, lower.as_str(), hex.as_str()] {
            if find(&stored, form.as_bytes()) {
                leaked.push(form.to_string());
            }
        }
    }
    assert!(
        leaked.is_empty(),
        "PHI stored in clear on {backend:?}: {leaked:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_phi_is_not_stored_in_clear() {
    phi_is_not_stored_in_clear(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_phi_is_not_stored_in_clear() {
    phi_is_not_stored_in_clear(Backend::Postgres).await;
}

#[test]
fn the_leak_check_sees_every_canary() {
    for canary in [
        GIVEN,
        FAMILY,
        MRN,
        REASON,
        DOB,
        PRACTICE,
        STAFF,
        STAFF_EMAIL,
        "CANARYFIELD7Q",
        "x-canaryheader7q",
    ] {
        assert!(leaks(&format!("{{\"message\":\"{canary}\"}}")), "{canary}");
    }
    assert!(!leaks("{\"message\":\"request\",\"route\":\"/healthz\"}"));
}
