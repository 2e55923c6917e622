//! Hostile and broken requests: every one is a 4xx JSON error with a stable code, none
//! writes anything, and the server keeps serving valid requests afterwards.

mod support;

use serde_json::{Value, json};
use support::{Backend, Reply, Server, Site, TenantFixture, patient_json, tenant_path};

const BODY_LIMIT: usize = 4096;

/// One bad request and the answer it must get.
struct Case {
    name: String,
    method: reqwest::Method,
    path: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
}

struct Cases {
    tenant: String,
    list: Vec<Case>,
}

impl Cases {
    #[allow(clippy::too_many_arguments)] // one row of the table
    fn push(
        &mut self,
        name: &str,
        method: reqwest::Method,
        rest: &str,
        content_type: Option<&'static str>,
        body: Option<Vec<u8>>,
        status: u16,
        code: &'static str,
    ) {
        self.list.push(Case {
            name: name.to_string(),
            method,
            path: tenant_path(&self.tenant, rest),
            content_type,
            body,
            status,
            code,
        });
    }

    /// A POST of raw bytes as application/json.
    fn post(
        &mut self,
        name: &str,
        rest: &str,
        body: impl Into<Vec<u8>>,
        status: u16,
        code: &'static str,
    ) {
        self.push(
            name,
            reqwest::Method::POST,
            rest,
            Some("application/json"),
            Some(body.into()),
            status,
            code,
        );
    }

    /// A POST of a JSON value.
    fn post_json(&mut self, name: &str, rest: &str, body: Value, status: u16, code: &'static str) {
        self.post(name, rest, serde_json::to_vec(&body).unwrap(), status, code);
    }

    /// A GET.
    fn get(&mut self, name: &str, rest: &str, status: u16, code: &'static str) {
        self.push(name, reqwest::Method::GET, rest, None, None, status, code);
    }
}

fn patient(practice: &str) -> Value {
    json!({
        "practice_id": practice,
        "mrn": "BAD-0001",
        "given_name": "Synthetic",
        "family_name": "Badinput",
        "date_of_birth": "1975-05-05",
    })
}

fn with(mut value: Value, key: &str, field: Value) -> Value {
    value[key] = field;
    value
}

fn without(mut value: Value, key: &str) -> Value {
    value.as_object_mut().unwrap().remove(key);
    value
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn cases(t: &TenantFixture, practice: &str, patient_id: &str) -> Cases {
    use reqwest::Method;
    let mut c = Cases {
        tenant: t.id.clone(),
        list: Vec::new(),
    };
    let valid = patient(practice);
    let valid_bytes = bytes(&valid);
    let missing = uuid::Uuid::new_v4().to_string();
    let today = chrono::Utc::now().date_naive();
    let future = (today + chrono::Days::new(2)).to_string();

    // Syntax.
    c.post(
        "malformed JSON",
        "patients",
        format!(r#"{{"practice_id": "{practice}", "mrn": }}"#),
        400,
        "invalid_json",
    );
    c.post(
        "not JSON at all",
        "patients",
        b"hello".to_vec(),
        400,
        "invalid_json",
    );
    c.post(
        "single quotes",
        "patients",
        b"{'mrn': 'x'}".to_vec(),
        400,
        "invalid_json",
    );
    c.post(
        "truncated JSON",
        "patients",
        valid_bytes[..valid_bytes.len() / 2].to_vec(),
        400,
        "invalid_json",
    );
    c.post("empty body", "patients", Vec::new(), 400, "invalid_json");
    c.post(
        "whitespace body",
        "patients",
        b"  \n\t ".to_vec(),
        400,
        "invalid_json",
    );
    c.post(
        "deep nesting (under the body limit)",
        "patients",
        "[".repeat(BODY_LIMIT - 96),
        422,
        "invalid_body",
    );
    c.post(
        "deep nesting of objects (under the body limit)",
        "patients",
        "{\"mrn\":".repeat((BODY_LIMIT - 96) / 7),
        422,
        "invalid_body",
    );
    let mut trailing = valid_bytes.clone();
    trailing.extend_from_slice(b" garbage");
    c.post(
        "trailing garbage",
        "patients",
        trailing,
        400,
        "invalid_json",
    );
    let mut twice = valid_bytes.clone();
    twice.extend_from_slice(&valid_bytes);
    c.post("two JSON objects", "patients", twice, 400, "invalid_json");
    let mut bad_utf8 = br#"{"practice_id": ""#.to_vec();
    bad_utf8.extend_from_slice(practice.as_bytes());
    bad_utf8.extend_from_slice(b"\", \"mrn\": \"BAD-\xff\xfe\", \"given_name\": \"Synthetic\", \"family_name\": \"Bad\", \"date_of_birth\": \"1975-05-05\"}");
    c.post(
        "invalid UTF-8 in a string",
        "patients",
        bad_utf8,
        400,
        "invalid_json",
    );
    let mut bad_utf8_outside = b"\xc3\x28".to_vec();
    bad_utf8_outside.extend_from_slice(&valid_bytes);
    c.post(
        "invalid UTF-8 before the JSON",
        "patients",
        bad_utf8_outside,
        400,
        "invalid_json",
    );
    let surrogate = format!(
        r#"{{"practice_id":"{practice}","mrn":"\ud800","given_name":"S","family_name":"B","date_of_birth":"1975-05-05"}}"#
    );
    c.post(
        "lone surrogate escape",
        "patients",
        surrogate,
        400,
        "invalid_json",
    );

    // Shape and types.
    c.post(
        "JSON array instead of object",
        "patients",
        b"[]".to_vec(),
        422,
        "invalid_body",
    );
    c.post_json(
        "array holding the object",
        "patients",
        json!([valid]),
        422,
        "invalid_body",
    );
    c.post_json(
        "array of the field values in order",
        "patients",
        json!([practice, "BAD-ARR", "Synthetic", "Positional", "1975-05-05"]),
        422,
        "invalid_body",
    );
    c.post(
        "null body",
        "patients",
        b"null".to_vec(),
        422,
        "invalid_body",
    );
    c.post(
        "string body",
        "patients",
        b"\"patient\"".to_vec(),
        422,
        "invalid_body",
    );
    c.post(
        "number body",
        "patients",
        b"42".to_vec(),
        422,
        "invalid_body",
    );
    c.post_json("empty object", "patients", json!({}), 422, "invalid_body");
    c.post_json(
        "missing field",
        "patients",
        without(valid.clone(), "mrn"),
        422,
        "invalid_body",
    );
    c.post_json(
        "unknown field",
        "patients",
        with(valid.clone(), "religion", json!("synthetic-unknown-field")),
        422,
        "invalid_body",
    );
    c.post_json(
        "malformed ssn",
        "patients",
        with(valid.clone(), "ssn", json!("12-345")),
        422,
        "invalid_field",
    );
    c.post_json(
        "ssn of the wrong type",
        "patients",
        with(valid.clone(), "ssn", json!(123456789)),
        422,
        "invalid_body",
    );
    c.post_json(
        "identifier of a malformed kind",
        "patients",
        with(
            valid.clone(),
            "identifiers",
            json!([{"kind": "Bad Kind!", "value": "X1"}]),
        ),
        422,
        "invalid_field",
    );
    c.post_json(
        "identifier kind named twice",
        "patients",
        with(
            valid.clone(),
            "identifiers",
            json!([{"kind": "member_id", "value": "X1"}, {"kind": "member_id", "value": "X2"}]),
        ),
        422,
        "invalid_field",
    );
    c.post_json(
        "identifier with an unknown field",
        "patients",
        with(
            valid.clone(),
            "identifiers",
            json!([{"kind": "member_id", "value": "X1", "note": "n"}]),
        ),
        422,
        "invalid_body",
    );
    c.post_json(
        "null field",
        "patients",
        with(valid.clone(), "given_name", Value::Null),
        422,
        "invalid_body",
    );
    c.post_json(
        "number for a UUID",
        "patients",
        with(valid.clone(), "practice_id", json!(7)),
        422,
        "invalid_body",
    );
    c.post_json(
        "malformed UUID",
        "patients",
        with(valid.clone(), "practice_id", json!("not-a-uuid")),
        422,
        "invalid_body",
    );
    c.post_json(
        "number for a name",
        "patients",
        with(valid.clone(), "given_name", json!(42)),
        422,
        "invalid_body",
    );
    c.post_json(
        "object for a name",
        "patients",
        with(valid.clone(), "family_name", json!({"x": 1})),
        422,
        "invalid_body",
    );
    c.post_json(
        "bool for a date",
        "patients",
        with(valid.clone(), "date_of_birth", json!(true)),
        422,
        "invalid_body",
    );
    let mut duplicate = valid_bytes.clone();
    duplicate.pop();
    duplicate.extend_from_slice(br#","mrn":"BAD-DUP"}"#);
    c.post(
        "duplicate field",
        "patients",
        duplicate,
        422,
        "invalid_body",
    );

    // Values.
    c.post_json(
        "birth date in the future",
        "patients",
        with(valid.clone(), "date_of_birth", json!(future)),
        422,
        "invalid_field",
    );
    c.post_json(
        "birth date far in the future",
        "patients",
        with(valid.clone(), "date_of_birth", json!("2999-01-01")),
        422,
        "invalid_field",
    );
    c.post_json(
        "birth date before 1900",
        "patients",
        with(valid.clone(), "date_of_birth", json!("1899-12-31")),
        422,
        "invalid_field",
    );
    c.post_json(
        "impossible birth date",
        "patients",
        with(valid.clone(), "date_of_birth", json!("1990-02-30")),
        422,
        "invalid_body",
    );
    c.post_json(
        "birth date in another format",
        "patients",
        with(valid.clone(), "date_of_birth", json!("12/31/1990")),
        422,
        "invalid_body",
    );
    c.post_json(
        "empty birth date",
        "patients",
        with(valid.clone(), "date_of_birth", json!("")),
        422,
        "invalid_body",
    );
    c.post_json(
        "MRN too long",
        "patients",
        with(valid.clone(), "mrn", json!("M".repeat(65))),
        422,
        "invalid_field",
    );
    c.post_json(
        "given name too long",
        "patients",
        with(valid.clone(), "given_name", json!("G".repeat(201))),
        422,
        "invalid_field",
    );
    c.post_json(
        "family name too long (multibyte)",
        "patients",
        with(valid.clone(), "family_name", json!("é".repeat(201))),
        422,
        "invalid_field",
    );
    c.post_json(
        "blank given name",
        "patients",
        with(valid.clone(), "given_name", json!("   ")),
        422,
        "invalid_field",
    );
    c.post_json(
        "empty MRN",
        "patients",
        with(valid.clone(), "mrn", json!("")),
        422,
        "invalid_field",
    );
    c.post_json(
        "control character in a name",
        "patients",
        with(valid.clone(), "given_name", json!("Syn\u{0}thetic")),
        422,
        "invalid_field",
    );
    c.post_json(
        "unknown practice",
        "patients",
        with(valid.clone(), "practice_id", json!(missing)),
        404,
        "not_found",
    );

    // Media type and size.
    for (name, ct) in [
        ("text/plain", Some("text/plain")),
        ("form encoded", Some("application/x-www-form-urlencoded")),
        ("json-ish type", Some("application/jsonx")),
        ("multipart", Some("multipart/form-data; boundary=x")),
        ("no content type", None),
    ] {
        c.push(
            name,
            Method::POST,
            "patients",
            ct,
            Some(valid_bytes.clone()),
            415,
            "unsupported_media_type",
        );
    }
    let mut large = valid.clone();
    large["given_name"] = json!("L".repeat(64 * 1024));
    c.post_json("64 KiB body", "patients", large, 413, "payload_too_large");

    // Encounters.
    c.post_json(
        "encounter without patient",
        "encounters",
        json!({"reason": "Checkup"}),
        422,
        "invalid_body",
    );
    c.post_json(
        "encounter with malformed patient id",
        "encounters",
        json!({"patient_id": "123"}),
        422,
        "invalid_body",
    );
    c.post_json(
        "encounter reason of wrong type",
        "encounters",
        json!({"patient_id": patient_id, "reason": 5}),
        422,
        "invalid_body",
    );
    c.post_json(
        "encounter reason too long",
        "encounters",
        json!({"patient_id": patient_id, "reason": "R".repeat(2001)}),
        422,
        "invalid_field",
    );
    c.post_json(
        "encounter reason blank",
        "encounters",
        json!({"patient_id": patient_id, "reason": " "}),
        422,
        "invalid_field",
    );
    c.post_json(
        "encounter start malformed",
        "encounters",
        json!({"patient_id": patient_id, "started_at": "yesterday"}),
        422,
        "invalid_body",
    );
    c.post_json(
        "encounter unknown field",
        "encounters",
        json!({"patient_id": patient_id, "status": "closed"}),
        422,
        "invalid_body",
    );
    c.post_json(
        "encounter for unknown patient",
        "encounters",
        json!({"patient_id": missing}),
        404,
        "not_found",
    );
    c.post(
        "encounter trailing garbage",
        "encounters",
        format!(r#"{{"patient_id":"{patient_id}"}}]"#),
        400,
        "invalid_json",
    );
    c.push(
        "encounter as text",
        Method::POST,
        "encounters",
        Some("text/plain"),
        Some(bytes(&json!({"patient_id": patient_id}))),
        415,
        "unsupported_media_type",
    );

    // Practices.
    c.post_json(
        "practice name too long",
        "practices",
        json!({"name": "P".repeat(201)}),
        422,
        "invalid_field",
    );
    c.post_json(
        "practice without name",
        "practices",
        json!({}),
        422,
        "invalid_body",
    );
    c.post_json(
        "practice name of wrong type",
        "practices",
        json!({"name": ["x"]}),
        422,
        "invalid_body",
    );
    c.post_json(
        "practice name taken",
        "practices",
        json!({"name": "Bad Input Practice"}),
        409,
        "conflict",
    );

    // Users.
    let user = |email: &str| json!({"email": email, "display_name": "Synthetic User", "roles": ["member"], "all_practices": true});
    c.post_json(
        "user with invalid email",
        "users",
        user("not-an-email"),
        422,
        "invalid_field",
    );
    c.post_json(
        "user with no roles",
        "users",
        with(user("noroles@example.test"), "roles", json!([])),
        422,
        "invalid_field",
    );
    c.post_json(
        "user with unknown role",
        "users",
        with(user("badrole@example.test"), "roles", json!(["superuser"])),
        422,
        "invalid_body",
    );
    c.post_json(
        "user with roles as a string",
        "users",
        with(user("strrole@example.test"), "roles", json!("owner")),
        422,
        "invalid_body",
    );
    c.post_json(
        "user with both grants",
        "users",
        with(user("both@example.test"), "practice_ids", json!([practice])),
        422,
        "invalid_field",
    );
    c.post_json(
        "user granted an unknown practice",
        "users",
        json!({"email": "partial@example.test", "display_name": "Synthetic Partial", "roles": ["member"],
               "practice_ids": [practice, missing]}),
        404,
        "not_found",
    );
    c.post_json(
        "user with a taken email",
        "users",
        user(&format!("owner@{}.example.test", "bad-input")),
        409,
        "conflict",
    );
    c.post_json(
        "user with long name",
        "users",
        with(
            user("long@example.test"),
            "display_name",
            json!("N".repeat(201)),
        ),
        422,
        "invalid_field",
    );

    // Paths.
    c.get(
        "patient id not a UUID",
        "patients/not-a-uuid",
        400,
        "invalid_path",
    );
    c.get(
        "encounter id a number",
        "encounters/123",
        400,
        "invalid_path",
    );
    c.get(
        "patient id with a suffix",
        &format!("patients/{patient_id}x"),
        400,
        "invalid_path",
    );
    c.get(
        "patient id percent-encoded NUL",
        "patients/%00",
        400,
        "invalid_path",
    );
    c.get(
        "patient id invalid UTF-8",
        "patients/%ff%fe",
        400,
        "invalid_path",
    );
    c.list.push(Case {
        name: "tenant id not a UUID".into(),
        method: Method::GET,
        path: "/api/v1/tenants/not-a-uuid/patients".into(),
        content_type: None,
        body: None,
        status: 400,
        code: "invalid_path",
    });
    c.list.push(Case {
        name: "tenant id not a UUID on a write".into(),
        method: Method::POST,
        path: "/api/v1/tenants/12345/patients".into(),
        content_type: Some("application/json"),
        body: Some(valid_bytes.clone()),
        status: 400,
        code: "invalid_path",
    });

    // Queries.
    for query in [
        "patients?limit=0",
        "patients?limit=201",
        "patients?limit=abc",
        "patients?limit=-1",
        "patients?limit=",
        "patients?limit=99999999999",
        "patients?limit=1&limit=2",
        "patients?unknown=1",
        "patients?after=xyz",
        "encounters?patient_id=xyz",
        "encounters?limit=0",
        "encounters?foo=bar",
        "encounters?after=1",
    ] {
        c.get(&format!("query {query}"), query, 400, "invalid_query");
    }
    c
}

async fn run(server: &Server, token: &str, case: &Case) -> Reply {
    let mut rb = server
        .request(case.method.clone(), &case.path)
        .bearer_auth(token);
    if let Some(ct) = case.content_type {
        rb = rb.header(reqwest::header::CONTENT_TYPE, ct);
    }
    if let Some(body) = &case.body {
        rb = rb.body(body.clone());
    }
    server.send(rb).await
}

async fn bad_input_is_refused_and_nothing_is_written(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("bad-input", "Synthetic Bad Input Clinic");
    let practice = site.practice(&t.id, "Bad Input Practice");
    let limit = BODY_LIMIT.to_string();
    let server = site.serve_with(&[("PHIVAULT_BODY_LIMIT_BYTES", limit.as_str())]);
    let token = t.owner_token.as_str();
    let existing = server
        .create_patient(
            &t.id,
            token,
            &patient_json(&practice, "BAD-BASE", "Synthetic", "Baseline", "1960-06-06"),
        )
        .await;
    let existing_id = existing["id"].as_str().unwrap().to_string();
    server
        .create_encounter(&t.id, token, &existing_id, "Baseline visit")
        .await;
    let before = server.snapshot(&t.id, token).await;

    let cases = cases(&t, &practice, &existing_id);
    let mut failures = Vec::new();
    for case in &cases.list {
        let reply = run(&server, token, case).await;
        if let Err(why) = reply.check_error(case.status, case.code) {
            failures.push(format!("{}: {why}", case.name));
        }
    }

    // An over-limit body without a length, sent chunked.
    let mut chunked = format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        t.path("practices")
    )
    .into_bytes();
    chunked.extend_from_slice(b"1\r\n{\r\n");
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 2048).as_bytes());
        chunked.extend_from_slice(&[b' '; 2048]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let reply = server.raw(&chunked);
    if let Err(why) = reply.check_error(413, "payload_too_large") {
        failures.push(format!("chunked over-limit body: {why}"));
    }

    assert!(
        failures.is_empty(),
        "{} of {} bad requests were not refused as expected:\n{}",
        failures.len(),
        cases.list.len() + 1,
        failures.join("\n")
    );
    assert_eq!(
        server.snapshot(&t.id, token).await,
        before,
        "a refused request changed data"
    );

    // The server still serves valid requests, at the edges of the rules.
    let today = chrono::Utc::now().date_naive().to_string();
    let edge = json!({
        "practice_id": practice,
        "mrn": "M".repeat(64),
        "given_name": "G".repeat(200),
        "family_name": "é".repeat(200),
        "date_of_birth": today,
    });
    let reply = server
        .post_raw(
            &t.path("patients"),
            Some(token),
            Some("application/json; charset=utf-8"),
            bytes(&edge),
        )
        .await;
    reply.expect(201);
    let created = reply.json();
    assert_eq!(created["mrn"], edge["mrn"]);
    assert_eq!(created["family_name"], edge["family_name"]);
    let reply = server
        .post_json(
            &t.path("encounters"),
            Some(token),
            &json!({"patient_id": created["id"], "reason": "R".repeat(2000)}),
        )
        .await;
    reply.expect(201);
    server
        .post_json(
            &t.path("users"),
            Some(token),
            &json!({"email": "partial@example.test", "display_name": "Synthetic Partial",
                    "roles": ["member"], "practice_ids": [practice]}),
        )
        .await
        .expect(201);
    let after = server.snapshot(&t.id, token).await;
    assert_eq!(
        after["patients"].as_array().unwrap().len(),
        before["patients"].as_array().unwrap().len() + 1
    );
    assert_eq!(
        after["users"].as_array().unwrap().len(),
        before["users"].as_array().unwrap().len() + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_bad_input_is_refused_and_nothing_is_written() {
    bad_input_is_refused_and_nothing_is_written(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_bad_input_is_refused_and_nothing_is_written() {
    bad_input_is_refused_and_nothing_is_written(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn very_deep_nesting_is_refused_and_the_server_lives_on() {
    // The default body limit (1 MiB) lets 100 000 levels through to the parser.
    let site = Site::new(Backend::Sqlite).await;
    let t = site.tenant("deep-nest", "Synthetic Deep Nesting Clinic");
    let practice = site.practice(&t.id, "Deep Practice");
    let server = site.serve();
    let token = Some(t.owner_token.as_str());
    let before = server.snapshot(&t.id, &t.owner_token).await;
    let deep_array = "[".repeat(100_000) + &"]".repeat(100_000);
    let deep_value = format!(
        r#"{{"practice_id":"{practice}","mrn":"D-1","given_name":{},"family_name":"Deep","date_of_birth":"1975-05-05"}}"#,
        "[".repeat(100_000)
    );
    let deep_unknown = format!(
        r#"{{"practice_id":"{practice}","mrn":"D-1","given_name":"Deep","family_name":"Deep","date_of_birth":"1975-05-05","x":{}}}"#,
        "{\"x\":".repeat(100_000)
    );
    let deep_reason = format!(
        r#"{{"patient_id":"{}","reason":{}}}"#,
        uuid::Uuid::new_v4(),
        "[".repeat(100_000)
    );
    for (what, rest, body) in [
        ("array of arrays", "patients", deep_array),
        ("nested value of a field", "patients", deep_value),
        ("nested unknown field", "patients", deep_unknown),
        ("nested reason", "encounters", deep_reason),
    ] {
        let reply = server
            .post_raw(
                &t.path(rest),
                token,
                Some("application/json"),
                body.into_bytes(),
            )
            .await;
        assert!(
            (400..500).contains(&reply.status),
            "{what}: {} {}",
            reply.status,
            reply.text()
        );
        let code = reply.json()["code"].as_str().unwrap_or("").to_string();
        if let Err(why) = reply.check_error(reply.status, &code) {
            panic!("{what}: {why}");
        }
        assert!(
            ["invalid_json", "invalid_body"].contains(&code.as_str()),
            "{what}: code {code}"
        );
        server.get("/healthz", None).await.expect(200);
    }
    assert_eq!(server.snapshot(&t.id, &t.owner_token).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_body_does_not_break_the_clients_next_request() {
    let site = Site::new(Backend::Sqlite).await;
    let t = site.tenant("big-body", "Synthetic Big Body Clinic");
    let limit = BODY_LIMIT.to_string();
    let server = site.serve_with(&[("PHIVAULT_BODY_LIMIT_BYTES", limit.as_str())]);
    for round in 0..3 {
        let reply = server
            .post_raw(
                &t.path("practices"),
                Some(&t.owner_token),
                Some("application/json"),
                vec![b' '; 256 * 1024],
            )
            .await;
        reply.expect_error(413, "payload_too_large");
        // The same client (and its connection pool) goes on working.
        let next = server
            .post_json(
                &t.path("practices"),
                Some(&t.owner_token),
                &json!({"name": format!("After Big Body {round}")}),
            )
            .await;
        next.expect(201);
    }
    // Just under the limit is accepted (as far as size goes).
    let padded = format!("{{\"name\": \"Padded\"{}}}", " ".repeat(BODY_LIMIT - 20));
    assert!(padded.len() <= BODY_LIMIT);
    server
        .post_raw(
            &t.path("practices"),
            Some(&t.owner_token),
            Some("application/json"),
            padded.into_bytes(),
        )
        .await
        .expect(201);
}
