//! The HTTP edge seen from outside: zero-configuration start, security headers, health,
//! the OpenAPI document, and the JSON shape of router-level errors.

mod support;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Backend, Launch, Reply, Server, Site, patient_json, phivault, tenant_path};

const TENANT_PATHS: [(&str, &[&str]); 7] = [
    ("/api/v1/tenants/{tenant_id}/me", &["get"]),
    ("/api/v1/tenants/{tenant_id}/practices", &["get", "post"]),
    ("/api/v1/tenants/{tenant_id}/users", &["get", "post"]),
    ("/api/v1/tenants/{tenant_id}/patients", &["get", "post"]),
    (
        "/api/v1/tenants/{tenant_id}/patients/{patient_id}",
        &["get"],
    ),
    ("/api/v1/tenants/{tenant_id}/encounters", &["get", "post"]),
    (
        "/api/v1/tenants/{tenant_id}/encounters/{encounter_id}",
        &["get"],
    ),
];

/// A readiness report without the transcription engine and model, which depend on what
/// this machine has installed (both keys must be there, possibly null).
fn without_engine(mut report: serde_json::Value) -> serde_json::Value {
    let fields = report.as_object_mut().expect("a JSON object");
    for key in ["transcription_engine", "transcription_model"] {
        assert!(fields.remove(key).is_some(), "/readyz has no {key}");
    }
    report
}

#[track_caller]
fn assert_security_headers(reply: &Reply) {
    let expect = [
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ];
    for (name, value) in expect {
        assert_eq!(reply.header(name), Some(value), "header {name}");
    }
    let id = reply.header("x-request-id").expect("x-request-id header");
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "x-request-id {id:?} is not a UUID"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_config_start_creates_wal_sqlite_and_objects_in_cwd() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = phivault();
    cmd.current_dir(cwd.path())
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let mut server = Server::start(cmd);
    assert!(
        server.url.starts_with("http://127.0.0.1:") && server.port() != 0,
        "printed URL {}",
        server.url
    );

    let data = cwd.path().join("phivault-data");
    assert!(data.is_dir(), "./phivault-data was not created");
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "data directory mode {mode:o}");
    let db = data.join("phivault.db");
    assert!(db.is_file(), "phivault.db missing");
    assert!(data.join("objects").is_dir(), "objects dir missing");
    // With no keyring configured, a development keyring is made, private, and said so.
    let keyring = data.join("keyring.json");
    let mode = std::fs::metadata(&keyring)
        .expect("keyring.json missing")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "keyring.json mode {mode:o}");
    assert!(
        server.stderr().contains("DEVELOPMENT keyring"),
        "no warning about the development keyring"
    );

    // A request that touches the database, so the WAL is in use.
    server.get("/readyz", None).await.expect(200);
    assert!(
        data.join("phivault.db-wal").exists(),
        "no phivault.db-wal while serving"
    );
    // SQLite file header: bytes 18 and 19 are 2 in WAL mode.
    let header = std::fs::read(&db).unwrap();
    assert_eq!((header[18], header[19]), (2, 2), "journal mode is not WAL");

    // Nothing else appeared in the working directory.
    let entries: Vec<_> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(entries, ["phivault-data"]);

    // SIGTERM stops it cleanly.
    let status = server.stop();
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(
        server.stderr().contains("phivault stopped"),
        "no shutdown log line"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_sends_security_headers_and_no_hsts_on_loopback() {
    let site = Site::new(Backend::Sqlite).await;
    let server = site.serve();

    let reply = server.get("/healthz", None).await;
    reply.expect(200);
    assert_eq!(reply.json(), json!({"status": "ok"}));
    assert_security_headers(&reply);
    assert_eq!(
        reply.header("strict-transport-security"),
        None,
        "HSTS on plain loopback"
    );

    let ready = server.get("/readyz", None).await;
    ready.expect(200);
    assert_eq!(
        without_engine(ready.json()),
        json!({"status": "ready", "database": "ok", "object_storage": "ok", "keys": "unsealed",
               "audit": "ok", "audit_checkpoints": "signing"})
    );
    assert_security_headers(&ready);

    // Every request gets a fresh id; a client-sent one is not reflected.
    let sent = server
        .send(
            server
                .request(Method::GET, "/healthz")
                .header("x-request-id", "client-chosen-id"),
        )
        .await;
    let id = sent.header("x-request-id").unwrap();
    assert_ne!(id, "client-chosen-id");
    assert_ne!(id, reply.header("x-request-id").unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_lists_every_tenant_route() {
    let site = Site::new(Backend::Sqlite).await;
    let server = site.serve();
    let reply = server.get("/api/openapi.json", None).await;
    reply.expect(200);
    assert!(
        reply
            .header("content-type")
            .unwrap_or("")
            .starts_with("application/json")
    );
    assert_security_headers(&reply);
    let doc = reply.json();
    assert!(
        doc["openapi"].as_str().unwrap_or("").starts_with('3'),
        "not an OpenAPI 3 document"
    );
    let paths = doc["paths"].as_object().expect("paths");
    for (path, methods) in TENANT_PATHS {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for method in methods {
            let op = &item[*method];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(
                op["security"].is_array(),
                "{method} {path} does not declare bearer security"
            );
        }
    }
    for path in ["/healthz", "/readyz"] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert!(
        doc["components"]["securitySchemes"]["bearer"].is_object(),
        "no bearer security scheme"
    );

    // The CLI prints the same document.
    let out = phivault().arg("openapi").output().unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).expect("CLI OpenAPI is JSON");
    assert_eq!(printed, doc);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_are_json_404() {
    let site = Site::new(Backend::Sqlite).await;
    let server = site.serve();
    let tenant = uuid::Uuid::new_v4().to_string();
    let unknown = [
        (Method::GET, "/".to_string()),
        (Method::GET, "/nope".to_string()),
        (Method::POST, "/nope".to_string()),
        (Method::GET, "/api/v1".to_string()),
        (Method::GET, "/api/v1/tenants".to_string()),
        (Method::GET, tenant_path(&tenant, "nope")),
        (Method::GET, tenant_path(&tenant, "patients/a/b")),
        (Method::GET, "/healthz/extra".to_string()),
        (Method::GET, "/api/openapi.yaml".to_string()),
    ];
    for (method, path) in unknown {
        let reply = server.send(server.request(method.clone(), &path)).await;
        if let Err(why) = reply.check_error(404, "not_found") {
            panic!("{method} {path}: {why}");
        }
        assert_security_headers(&reply);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_methods_are_json_405() {
    let site = Site::new(Backend::Sqlite).await;
    let server = site.serve();
    let tenant = uuid::Uuid::new_v4().to_string();
    let id = uuid::Uuid::new_v4().to_string();
    let cases = [
        (Method::DELETE, "/healthz".to_string(), "GET"),
        (Method::POST, "/readyz".to_string(), "GET"),
        (Method::PUT, "/api/openapi.json".to_string(), "GET"),
        (Method::POST, tenant_path(&tenant, "me"), "GET"),
        (Method::PUT, tenant_path(&tenant, "patients"), "GET"),
        (Method::DELETE, tenant_path(&tenant, "practices"), "GET"),
        (Method::PATCH, tenant_path(&tenant, "users"), "GET"),
        (
            Method::DELETE,
            tenant_path(&tenant, &format!("patients/{id}")),
            "GET",
        ),
        (
            Method::POST,
            tenant_path(&tenant, &format!("encounters/{id}")),
            "GET",
        ),
    ];
    for (method, path, allowed) in cases {
        let reply = server.send(server.request(method.clone(), &path)).await;
        if let Err(why) = reply.check_error(405, "method_not_allowed") {
            panic!("{method} {path}: {why}");
        }
        assert_security_headers(&reply);
        let allow = reply.header("allow").unwrap_or("");
        assert!(
            allow.contains(allowed),
            "{method} {path}: Allow header {allow:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_body_carries_the_request_id_of_its_header() {
    let site = Site::new(Backend::Sqlite).await;
    let t = site.tenant("edge-clinic", "Edge Test Clinic");
    let practice = site.practice(&t.id, "Edge Practice");
    let server = site.serve_with(&[("PHIVAULT_BODY_LIMIT_BYTES", "4096")]);
    let token = Some(t.owner_token.as_str());
    let other_tenant = uuid::Uuid::new_v4().to_string();
    let missing = uuid::Uuid::new_v4().to_string();

    let mut replies: Vec<(&str, Reply, u16, &str)> = Vec::new();
    replies.push((
        "no route",
        server.get("/missing", None).await,
        404,
        "not_found",
    ));
    replies.push((
        "wrong method",
        server
            .send(server.request(Method::DELETE, "/healthz"))
            .await,
        405,
        "method_not_allowed",
    ));
    replies.push((
        "no token",
        server.get(&t.path("me"), None).await,
        401,
        "unauthenticated",
    ));
    replies.push((
        "other tenant",
        server
            .get(&tenant_path(&other_tenant, "patients"), token)
            .await,
        403,
        "tenant_mismatch",
    ));
    replies.push((
        "bad path id",
        server.get(&t.path("patients/not-a-uuid"), token).await,
        400,
        "invalid_path",
    ));
    replies.push((
        "bad query",
        server.get(&t.path("patients?limit=0"), token).await,
        400,
        "invalid_query",
    ));
    replies.push((
        "missing patient",
        server
            .get(&t.path(&format!("patients/{missing}")), token)
            .await,
        404,
        "not_found",
    ));
    replies.push((
        "text body",
        server
            .post_raw(
                &t.path("practices"),
                token,
                Some("text/plain"),
                b"x".to_vec(),
            )
            .await,
        415,
        "unsupported_media_type",
    ));
    replies.push((
        "broken json",
        server
            .post_raw(
                &t.path("practices"),
                token,
                Some("application/json"),
                b"{".to_vec(),
            )
            .await,
        400,
        "invalid_json",
    ));
    replies.push((
        "wrong type",
        server
            .post_json(&t.path("practices"), token, &json!({"name": 7}))
            .await,
        422,
        "invalid_body",
    ));
    replies.push((
        "empty name",
        server
            .post_json(&t.path("practices"), token, &json!({"name": "  "}))
            .await,
        422,
        "invalid_field",
    ));
    replies.push((
        "too large",
        server
            .post_raw(
                &t.path("practices"),
                token,
                Some("application/json"),
                vec![b' '; 64 * 1024],
            )
            .await,
        413,
        "payload_too_large",
    ));
    replies.push((
        "future birth",
        server
            .post_json(
                &t.path("patients"),
                token,
                &json!({"practice_id": practice, "mrn": "M-1", "given_name": "Synthetic",
                        "family_name": "Testperson", "date_of_birth": "2999-01-01"}),
            )
            .await,
        422,
        "invalid_field",
    ));

    let mut seen = HashSet::new();
    for (what, reply, status, code) in &replies {
        if let Err(why) = reply.check_error(*status, code) {
            panic!("{what}: {why}");
        }
        assert_security_headers(reply);
        let id = reply.header("x-request-id").unwrap().to_string();
        assert!(seen.insert(id), "{what}: request id reused");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_an_unusable_database_url() {
    let site = Site::new(Backend::Sqlite).await;
    let mut cmd = phivault();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(site.data_dir())
        .args(["--database-url", "mysql://127.0.0.1:1/db"]);
    match Server::launch(cmd) {
        Launch::Started(_) => panic!("served with an unsupported database URL"),
        Launch::Exited { status, .. } => assert!(!status.success()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_server_refuses_phi_until_unsealed() {
    const PASSPHRASE: &str = "CANARYREALPASS7Q-synthetic";
    const WRONG: &str = "CANARYWRONGPASS7Q-synthetic";
    let site = Site::new(Backend::Sqlite).await;
    let init = site
        .command(&["keys", "init"])
        .env("PHIVAULT_KEYRING_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "keys init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let t = site.tenant("sealed-clinic", "Synthetic Sealed Clinic");
    let practice = site.practice(&t.id, "Sealed Practice");
    let token = Some(t.owner_token.as_str());
    let patient = patient_json(&practice, "S-1", "Synthetic", "Sealed", "1970-01-01");

    // No passphrase at hand: the server starts sealed.
    let mut server = site.serve();
    server.get("/healthz", None).await.expect(200);
    let ready = server.get("/readyz", None).await;
    ready.expect(503);
    // The documented readiness report, saying what is not ready.
    assert_eq!(
        without_engine(ready.json()),
        json!({"status": "not_ready", "database": "ok", "object_storage": "ok", "keys": "sealed",
               "audit": "ok", "audit_checkpoints": "waiting_for_keys"})
    );
    let keys = server.get("/api/v1/sys/keys", None).await;
    keys.expect(200);
    assert_eq!(keys.json()["status"], "sealed");

    // PHI routes answer 503 `sealed`; the others work.
    for rest in ["patients", "encounters"] {
        server
            .get(&t.path(rest), token)
            .await
            .expect_error(503, "sealed");
    }
    server
        .post_json(&t.path("patients"), token, &patient)
        .await
        .expect_error(503, "sealed");
    for rest in ["me", "practices", "users"] {
        server.get(&t.path(rest), token).await.expect(200);
    }
    // Sealed or not, credentials come first.
    server
        .get(&t.path("patients"), None)
        .await
        .expect_error(401, "unauthenticated");

    // A wrong passphrase and broken unseal requests are refused.
    let unseal = "/api/v1/sys/unseal";
    server
        .post_json(unseal, None, &json!({"passphrase": WRONG}))
        .await
        .expect_error(403, "unseal_failed");
    server
        .post_json(unseal, None, &json!({"passphrase": 5}))
        .await
        .expect_error(422, "invalid_body");
    server
        .post_json(unseal, None, &json!({"passphrase": WRONG, "x": 1}))
        .await
        .expect_error(422, "invalid_body");
    server
        .post_raw(unseal, None, Some("text/plain"), PASSPHRASE.into())
        .await
        .expect_error(415, "unsupported_media_type");
    server
        .get(unseal, None)
        .await
        .expect_error(405, "method_not_allowed");
    server.get("/readyz", None).await.expect(503);

    // The operator unseals with the CLI; PHI is served.
    let out = phivault()
        .args(["unseal", "--url", &server.url])
        .env("PHIVAULT_KEYRING_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "phivault unseal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("unsealed"));
    let ready = server.get("/readyz", None).await;
    ready.expect(200);
    // Unsealing also gave the auditor its checkpoint key.
    assert_eq!(ready.json()["audit_checkpoints"], "signing");
    let created = server.post_json(&t.path("patients"), token, &patient).await;
    created.expect(201);
    let id = created.json()["id"].as_str().unwrap().to_string();
    server
        .get(&t.path(&format!("patients/{id}")), token)
        .await
        .expect(200);
    server
        .post_json(unseal, None, &json!({"passphrase": PASSPHRASE}))
        .await
        .expect_error(409, "already_unsealed");

    // Neither passphrase reaches the log.
    assert!(server.stop().success());
    // Both unseal attempts are on the platform chain: the refused one and the success.
    let trail = site.cli(&["audit", "export", "--format", "jsonl"]);
    let unseals: Vec<serde_json::Value> = trail
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e.to_string().contains("keys.unsealed"))
        .collect();
    let outcomes: Vec<String> = unseals
        .iter()
        .map(|e| e.to_string())
        .map(|t| {
            if t.contains("\"failure\"") {
                "failure"
            } else {
                "success"
            }
            .to_string()
        })
        .collect();
    assert!(outcomes.contains(&"failure".to_string()), "{unseals:?}");
    assert!(outcomes.contains(&"success".to_string()), "{unseals:?}");
    assert!(
        !trail.to_lowercase().contains("canary"),
        "a passphrase is in the trail"
    );
    let log = server.stderr();
    assert!(
        !log.to_lowercase().contains("canary"),
        "a passphrase is in the log"
    );

    // Restarted with the passphrase, it starts unsealed and reads what it wrote.
    let server = site.serve_with(&[("PHIVAULT_KEYRING_PASSPHRASE", PASSPHRASE)]);
    server.get("/readyz", None).await.expect(200);
    let read = server.get(&t.path(&format!("patients/{id}")), token).await;
    read.expect(200);
    assert_eq!(read.json()["family_name"], "Sealed");
}
