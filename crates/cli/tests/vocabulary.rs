//! The tenant's transcription vocabulary through the API, on both backends: empty at
//! first; an administrator replaces it and reads it back tidied; malformed, oversized,
//! truncated and hostile bodies are refused with a stable code and change nothing; a
//! clinician may neither read nor change it; another tenant's user gets nothing of it; each
//! change is audited by count, never by the terms. That the Whisper engine uses it is
//! shown end to end in scribe.rs (`sqlite_whisper_long_recording_…`).

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Backend, Server, Site, TenantFixture};

async fn get(server: &Server, t: &TenantFixture, token: &str) -> Value {
    server
        .get(&t.path("settings/vocabulary"), Some(token))
        .await
        .expect(200)
        .json()
}

async fn put_raw(server: &Server, t: &TenantFixture, token: &str, body: Vec<u8>) -> support::Reply {
    server
        .send(
            server
                .request(Method::PUT, &t.path("settings/vocabulary"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body),
        )
        .await
}

async fn vocabulary_api(backend: Backend) {
    let site = Site::new(backend).await;
    let a = site.tenant("vocab-a", "Synthetic Vocabulary Clinic A");
    let b = site.tenant("vocab-b", "Synthetic Vocabulary Clinic B");
    let server = site.serve();

    assert_eq!(get(&server, &a, &a.owner_token).await, json!({"terms": []}));
    let body = json!({"terms": ["  metoprolol ", "acetaminophen", "St. Mary's", "co-amoxiclav"]});
    let stored = put_raw(&server, &a, &a.owner_token, body.to_string().into_bytes())
        .await
        .expect(200)
        .json();
    let want = json!({"terms": ["metoprolol", "acetaminophen", "St. Mary's", "co-amoxiclav"]});
    assert_eq!(stored, want);
    assert_eq!(get(&server, &a, &a.owner_token).await, want);

    // Refused, each with its code, and nothing changes.
    let long = "x".repeat(65);
    let many: Vec<String> = (0..201).map(|i| format!("term{i}")).collect();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"not json".to_vec(), 400, "invalid_json"),
        (br#"{"terms": ["metoprolol""#.to_vec(), 400, "invalid_json"),
        (Vec::new(), 400, "invalid_json"),
        (b"[\"metoprolol\"]".to_vec(), 422, "invalid_body"),
        (
            json!({"terms": "metoprolol"}).to_string().into_bytes(),
            422,
            "invalid_body",
        ),
        (
            json!({"terms": [["nested"]]}).to_string().into_bytes(),
            422,
            "invalid_body",
        ),
        (
            json!({"terms": [], "extra": 1}).to_string().into_bytes(),
            422,
            "invalid_body",
        ),
        (json!({}).to_string().into_bytes(), 422, "invalid_body"),
        (
            json!({"terms": [long]}).to_string().into_bytes(),
            422,
            "invalid_field",
        ),
        (
            json!({"terms": many}).to_string().into_bytes(),
            422,
            "invalid_field",
        ),
        (
            json!({"terms": ["<|endoftext|>"]}).to_string().into_bytes(),
            422,
            "invalid_field",
        ),
        (
            json!({"terms": ["bell\u{7}"]}).to_string().into_bytes(),
            422,
            "invalid_field",
        ),
        (
            json!({"terms": ["ok", "OK"]}).to_string().into_bytes(),
            422,
            "invalid_field",
        ),
        (
            json!({"terms": [""]}).to_string().into_bytes(),
            422,
            "invalid_field",
        ),
        (
            json!({"terms": ["12345"]}).to_string().into_bytes(),
            422,
            "invalid_field",
        ),
        (
            format!("{{\"terms\": [\"{}\"]}}", "a".repeat(3 << 20)).into_bytes(),
            413,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let preview = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let reply = put_raw(&server, &a, &a.owner_token, body).await;
        if let Err(why) = reply.check_error(status, code) {
            panic!("{preview}: {why}");
        }
        // The message never echoes the value.
        assert!(!reply.text().contains("endoftext"), "{}", reply.text());
    }
    assert_eq!(get(&server, &a, &a.owner_token).await, want);

    // A clinician (no admin permission) may neither read nor change it.
    let provider = site.user(
        &a.id,
        "provider@vocab-a.example.test",
        "Synthetic Provider",
        &["provider"],
        None,
    );
    let (_, provider_token) = site.token(&a.id, &provider);
    server
        .get(&a.path("settings/vocabulary"), Some(&provider_token))
        .await
        .expect_error(403, "forbidden");
    put_raw(
        &server,
        &a,
        &provider_token,
        json!({"terms": []}).to_string().into_bytes(),
    )
    .await
    .expect_error(403, "forbidden");

    // Tenant B's owner gets nothing of A's, and B's own vocabulary is B's.
    server
        .get(&a.path("settings/vocabulary"), Some(&b.owner_token))
        .await
        .expect_error(403, "tenant_mismatch");
    put_raw(
        &server,
        &a,
        &b.owner_token,
        json!({"terms": ["x-ray"]}).to_string().into_bytes(),
    )
    .await
    .expect_error(403, "tenant_mismatch");
    assert_eq!(get(&server, &b, &b.owner_token).await, json!({"terms": []}));
    assert_eq!(get(&server, &a, &a.owner_token).await, want);

    // Audited by count only.
    let audit = server
        .get(&a.path("audit?limit=100"), Some(&a.owner_token))
        .await
        .expect(200)
        .json();
    let changes: Vec<&Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource_type"] == "vocabulary" && e["outcome"] == "success")
        .collect();
    assert_eq!(changes.len(), 1, "{audit}");
    assert_eq!(changes[0]["before"], json!({"terms": 0}));
    assert_eq!(changes[0]["after"], json!({"terms": 4}));
    assert_eq!(changes[0]["fields"], json!(["terms"]));
    let raw = audit.to_string();
    assert!(
        !raw.contains("metoprolol") && !raw.contains("amoxiclav"),
        "{raw}"
    );
}

#[tokio::test]
async fn sqlite_vocabulary_api() {
    vocabulary_api(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_vocabulary_api() {
    vocabulary_api(Backend::Postgres).await;
}
