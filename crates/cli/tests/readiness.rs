//! PHI readiness end to end, through the binary: a new tenant's PHI routes are refused
//! while its gates are open; each gate is satisfied through the API or the CLI until
//! PHI mode can be turned on and the routes work; sealing the keys, removing a vendor's
//! BAA or the tenant's own closes them again, and restoring it reopens them. A
//! transcription engine run by a vendor without a BAA is refused before it runs.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Backend, Server, Site, TenantFixture, patient_json};

/// A synthetic passphrase for the test keyring.
const PASSPHRASE: &str = "synthetic-test-passphrase-1";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `phivault readiness --tenant T --url U`: its output, and whether it succeeded.
fn readiness_cli(site: &Site, server: &Server, tenant: &str) -> (bool, String) {
    let url = format!("http://{}", server.addr());
    let out = site.cli_output(&["readiness", "--tenant", tenant, "--url", &url]);
    (out.status.success(), stdout(&out))
}

async fn checklist(server: &Server, t: &TenantFixture) -> Value {
    server
        .get(&t.path("readiness"), Some(&t.owner_token))
        .await
        .expect(200)
        .json()
}

fn open_gates(c: &Value) -> Vec<String> {
    c["gates"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["status"] != "ready")
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect()
}

async fn put(server: &Server, t: &TenantFixture, path: &str, body: &Value) -> support::Reply {
    server
        .send(
            server
                .request(reqwest::Method::PUT, &t.path(path))
                .bearer_auth(&t.owner_token)
                .json(body),
        )
        .await
}

/// Lists the tenant's patients: the probe of whether PHI routes are open.
async fn patients(server: &Server, t: &TenantFixture) -> support::Reply {
    server.get(&t.path("patients"), Some(&t.owner_token)).await
}

fn key_op(site: &Site, server: &Server, op: &str) {
    let url = format!("http://{}", server.addr());
    let out = site
        .command(&[op, "--url", &url])
        .env("PHIVAULT_KEYRING_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "phivault {op}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn engine_script(dir: &Path) -> String {
    let engine = dir.join("vendor-engine.sh");
    std::fs::write(
        &engine,
        "#!/bin/sh\n# synthetic test engine standing for a vendor's client: a fixed transcript\n\
         test -s \"$1\" || exit 1\n\
         printf '%s' '[{\"start_ms\":0,\"end_ms\":2000,\"text\":\"The patient reports a mild headache.\"}]'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    engine.to_str().unwrap().to_string()
}

fn tone(dir: &Path) -> Vec<u8> {
    let path = dir.join("tone.wav");
    let out = Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&path)
        .args(["synth", "1", "sine", "300"])
        .output()
        .expect("sox");
    assert!(out.status.success());
    std::fs::read(path).unwrap()
}

/// Opens an encounter with consent and uploads a recording; returns the recording id.
async fn record(server: &Server, site: &Site, t: &TenantFixture, wav: &[u8]) -> String {
    let practice = site.practice(&t.id, "Synthetic Readiness Practice");
    let patient = server
        .create_patient(
            &t.id,
            &t.owner_token,
            &patient_json(
                &practice,
                "SYN-READY-1",
                "Synthetic",
                "Patient",
                "1970-01-01",
            ),
        )
        .await;
    let encounter = server
        .create_encounter(
            &t.id,
            &t.owner_token,
            patient["id"].as_str().unwrap(),
            "synthetic visit",
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .post_json(
            &t.path(&format!("encounters/{encounter}/consents")),
            Some(&t.owner_token),
            &json!({"method": "verbal", "jurisdiction": "US-WA", "all_parties_consented": true}),
        )
        .await
        .expect(201);
    let rb = server
        .request(
            reqwest::Method::POST,
            &t.path(&format!("encounters/{encounter}/recordings")),
        )
        .bearer_auth(&t.owner_token)
        .header("x-content-sha256", hex::encode(Sha256::digest(wav)))
        .body(wav.to_vec());
    server.send(rb).await.expect(201).json()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until the recording's jobs are all finished; returns them.
async fn jobs_done(server: &Server, t: &TenantFixture, recording: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let jobs = server
            .get(
                &t.path(&format!("recordings/{recording}/jobs")),
                Some(&t.owner_token),
            )
            .await
            .expect(200)
            .json();
        let jobs = jobs.as_array().unwrap().clone();
        if !jobs.is_empty()
            && jobs
                .iter()
                .all(|j| j["state"] == "succeeded" || j["state"] == "failed")
        {
            return jobs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "jobs not done: {jobs:?}\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn vendor_set(site: &Site, baa: bool) {
    let mut args = vec![
        "vendor",
        "set",
        "--key",
        "acme-speech",
        "--name",
        "Acme Speech (synthetic vendor)",
        "--service",
        "transcription",
        "--touches-phi",
    ];
    if baa {
        args.extend([
            "--baa-signed-on",
            "2026-01-10",
            "--baa-evidence-ref",
            "dms://contracts/baa/acme-speech",
        ]);
    }
    site.cli(&args);
}

async fn walk(backend: Backend) {
    let site = Site::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    // A passphrase-sealed keyring, not the development one.
    let out = site
        .command(&["keys", "init"])
        .env("PHIVAULT_KEYRING_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A real (not sandbox) tenant, and a sandbox beside it.
    let id = site.cli(&[
        "tenant",
        "create",
        "--slug",
        "ready-clinic",
        "--name",
        "Synthetic Readiness Clinic",
    ]);
    let owner = site.user(
        &id,
        "owner@ready-clinic.example.test",
        "Synthetic Owner",
        &["owner"],
        None,
    );
    let (_, token) = site.token(&id, &owner);
    let t = TenantFixture {
        id,
        owner_id: owner,
        owner_token: token,
    };
    let sandbox = site.tenant("ready-sandbox", "Synthetic Sandbox Clinic");

    let engine = engine_script(dir.path());
    let env = |proxy: bool| -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("PHIVAULT_KEYRING_PASSPHRASE", PASSPHRASE.to_string()),
            ("PHIVAULT_SCRIBE_ENGINE", "command".into()),
            ("PHIVAULT_SCRIBE_COMMAND_PROGRAM", engine.clone()),
            ("PHIVAULT_SCRIBE_COMMAND_ARGS", r#"["{input}"]"#.into()),
            ("PHIVAULT_SCRIBE_COMMAND_OUTPUT", "segments-json".into()),
            ("PHIVAULT_SCRIBE_POLL_SECS", "1".into()),
            ("PHIVAULT_VENDOR_TRANSCRIPTION", "acme-speech".into()),
        ];
        if proxy {
            v.push(("PHIVAULT_BEHIND_TLS_PROXY", "true".into()));
        }
        v
    };
    let start = |proxy: bool| {
        let e = env(proxy);
        let refs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        site.serve_with(&refs)
    };
    let mut server = start(false);

    // Everything open that the operator and the tenant have not done yet.
    let (ok, text) = readiness_cli(&site, &server, &t.id);
    assert!(!ok, "readiness must fail while gates are open:\n{text}");
    assert!(text.contains("tenant ready-clinic: PHI mode off"), "{text}");
    assert!(text.contains("3/8 ready"), "{text}");
    for gate in [
        "tls",
        "vendor_baas",
        "tenant_baa",
        "retention",
        "mfa_admins",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains("[PLANNED]") && l.contains(gate)),
            "{gate} not planned in:\n{text}"
        );
    }
    assert!(
        text.contains("next: register vendor `acme-speech`"),
        "{text}"
    );
    let c = checklist(&server, &t).await;
    assert_eq!(
        open_gates(&c),
        [
            "tls",
            "vendor_baas",
            "tenant_baa",
            "retention",
            "mfa_admins"
        ]
    );
    assert_eq!(c["phi_mode"], false);

    // PHI routes are refused; the sandbox's work.
    patients(&server, &t)
        .await
        .expect_error(403, "phi_mode_disabled");
    server
        .post_json(
            &t.path("patients"),
            Some(&t.owner_token),
            &json!({"not": "even read"}),
        )
        .await
        .expect_error(403, "phi_mode_disabled");
    patients(&server, &sandbox).await.expect(200);
    put(&server, &t, "phi-mode", &json!({"phi_mode": true}))
        .await
        .expect_error(409, "gates_open");
    put(&server, &sandbox, "phi-mode", &json!({"phi_mode": true}))
        .await
        .expect_error(409, "sandbox_tenant");

    // The sandbox's recording goes to the vendor's engine, which has no BAA: refused
    // before the engine runs, and no transcript exists.
    let wav = tone(dir.path());
    let rec = record(&server, &site, &sandbox, &wav).await;
    let jobs = jobs_done(&server, &sandbox, &rec).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0]["state"], "failed", "{jobs:?}");
    assert_eq!(jobs[0]["last_error_code"], "vendor_not_cleared", "{jobs:?}");
    assert_eq!(jobs[0]["kind"], "transcribe");

    // Each gate, through the API or the CLI.
    put(
        &server,
        &t,
        "baa",
        &json!({"signed_on": "2026-01-15", "signatory": "Synthetic Signatory, CEO", "evidence_ref": "dms://contracts/baa/ready-clinic"}),
    )
    .await
    .expect(200);
    put(
        &server,
        &t,
        "baa",
        &json!({"signed_on": "2999-01-01", "signatory": "x", "evidence_ref": "y"}),
    )
    .await
    .expect_error(422, "invalid_field");
    put(
        &server,
        &t,
        "settings/retention",
        &json!({"policies": [
            {"data_class": "audio", "window_hours": 24, "basis": "after_note"},
            {"data_class": "transcript", "window_hours": 52560, "basis": "after_creation"},
            {"data_class": "note", "window_hours": 52560, "basis": "after_creation"},
            {"data_class": "e2e_utterance", "window_hours": 720, "basis": "after_creation"}
        ]}),
    )
    .await
    .expect(200);
    put(
        &server,
        &t,
        "settings/mfa",
        &json!({"mfa_policy": "admins"}),
    )
    .await
    .expect(200);
    vendor_set(&site, true);
    assert_eq!(open_gates(&checklist(&server, &t).await), ["tls"]);

    // TLS: a declared TLS-terminating proxy (the server sends HSTS).
    server.stop();
    server = start(true);
    let (ok, text) = readiness_cli(&site, &server, &t.id);
    assert!(ok, "{text}");
    assert!(text.contains("8/8 ready"), "{text}");
    assert_eq!(
        patients(&server, &t)
            .await
            .header("strict-transport-security"),
        Some("max-age=63072000; includeSubDomains")
    );

    // PHI mode on: the routes work, and the vendor's engine runs.
    let on = put(&server, &t, "phi-mode", &json!({"phi_mode": true})).await;
    on.expect(200);
    assert_eq!(on.json()["phi_mode"], true);
    patients(&server, &t).await.expect(200);
    let rec = record(&server, &site, &t, &wav).await;
    let jobs = jobs_done(&server, &t, &rec).await;
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:?}");

    // Sealing the keys closes them; unsealing opens them again.
    key_op(&site, &server, "seal");
    patients(&server, &t).await.expect_error(503, "sealed");
    let c = checklist(&server, &t).await;
    assert_eq!(open_gates(&c), ["keys", "audit"]);
    assert_eq!(c["gates"][0]["status"], "blocked");
    key_op(&site, &server, "unseal");
    patients(&server, &t).await.expect(200);

    // The vendor's BAA removed at the command line: closed at the next request.
    vendor_set(&site, false);
    let refused = patients(&server, &t).await;
    refused.expect_error(403, "phi_gate_open");
    assert!(refused.text().contains("vendor_baas"), "{}", refused.text());
    vendor_set(&site, true);
    patients(&server, &t).await.expect(200);

    // The tenant's own BAA removed through the API.
    server
        .send(
            server
                .request(reqwest::Method::DELETE, &t.path("baa"))
                .bearer_auth(&t.owner_token),
        )
        .await
        .expect(204);
    patients(&server, &t)
        .await
        .expect_error(403, "phi_gate_open");
    let (ok, text) = readiness_cli(&site, &server, &t.id);
    assert!(!ok && text.contains("7/8 ready"), "{text}");
    site.cli(&[
        "baa",
        "set",
        "--tenant",
        "ready-clinic",
        "--signed-on",
        "2026-01-15",
        "--signatory",
        "Synthetic Signatory, CEO",
        "--evidence-ref",
        "dms://contracts/baa/ready-clinic",
    ]);
    patients(&server, &t).await.expect(200);

    // PHI mode off again: refused, whatever the gates say.
    put(&server, &t, "phi-mode", &json!({"phi_mode": false}))
        .await
        .expect(200);
    patients(&server, &t)
        .await
        .expect_error(403, "phi_mode_disabled");

    // The trail: PHI mode refused then changed, BAA and gate changes, refusals.
    let trail = server
        .get(&t.path("audit?limit=200"), Some(&t.owner_token))
        .await
        .expect(200)
        .json();
    let events = trail["events"].as_array().unwrap();
    let count = |action: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("phi_mode.changed", "denied"), 1, "{trail}");
    assert_eq!(count("phi_mode.changed", "success"), 2, "{trail}");
    assert!(count("baa.changed", "success") >= 3, "{trail}");
    // Closed by the vendor's BAA, open, closed by the tenant's BAA, open.
    assert_eq!(count("gate.changed", "denied"), 2, "{trail}");
    assert_eq!(count("gate.changed", "success"), 2, "{trail}");
    assert!(count("access.denied", "denied") >= 4, "{trail}");
    server.stop();
}

#[tokio::test]
async fn sqlite_gates_open_and_close_phi_routes() {
    walk(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_gates_open_and_close_phi_routes() {
    walk(Backend::Postgres).await;
}
