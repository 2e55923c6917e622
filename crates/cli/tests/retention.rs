//! Retention and the training opt-in from outside, on SQLite and PostgreSQL:
//! `phivault retention run --dry-run --as-of` lists a recording past its window and
//! deletes nothing; `phivault retention run` deletes it (object gone, row marked, event
//! in the trail) and a second run finds nothing; another tenant's run touches nothing;
//! the retention settings validate and are audited; the training export is refused
//! (and audited as denied) until the tenant opts in, then answers and is audited
//! `phi.export`. All data is synthetic.

mod support;

use std::path::{Path, PathBuf};

use chrono::{Duration, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Backend, Server, Site, TenantFixture, patient_json};

/// One second of a synthetic 440 Hz tone: 16 kHz mono 16-bit PCM WAV.
fn tone_wav() -> Vec<u8> {
    let rate = 16_000u32;
    let samples: Vec<i16> = (0..rate)
        .map(|i| {
            let t = f64::from(i) / f64::from(rate);
            ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

/// Every file under the site's object directory whose path contains `needle`.
fn objects_named(site: &Site, needle: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&site.data_dir().join("objects"), &mut out);
    out.retain(|p| p.to_string_lossy().contains(needle));
    out
}

async fn put_json(server: &Server, path: &str, token: &str, body: &Value) -> support::Reply {
    server
        .send(
            server
                .request(Method::PUT, path)
                .bearer_auth(token)
                .json(body),
        )
        .await
}

async fn audit(server: &Server, t: &TenantFixture, query: &str) -> Vec<Value> {
    server
        .get(
            &t.path(&format!("audit?limit=200{query}")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json()["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// A recording stored in tenant `t` through the API; returns its id.
async fn stored_recording(server: &Server, t: &TenantFixture, practice: &str) -> String {
    let patient = server
        .create_patient(
            &t.id,
            &t.owner_token,
            &patient_json(
                practice,
                "SYN-RET-CLI-1",
                "Synthetic",
                "Sweep",
                "1970-01-01",
            ),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let encounter = server
        .create_encounter(&t.id, &t.owner_token, &patient, "synthetic retention visit")
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .post_json(
            &t.path(&format!("encounters/{encounter}/consents")),
            Some(&t.owner_token),
            &json!({"method": "verbal", "jurisdiction": "US-NY"}),
        )
        .await
        .expect(201);
    let wav = tone_wav();
    let rb = server
        .request(
            Method::POST,
            &t.path(&format!("encounters/{encounter}/recordings")),
        )
        .bearer_auth(&t.owner_token)
        .header("content-type", "application/octet-stream")
        .header("x-content-sha256", hex::encode(Sha256::digest(&wav)))
        .body(wav);
    server.send(rb).await.expect(201).json()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn recording_state(server: &Server, t: &TenantFixture, id: &str) -> String {
    server
        .get(&t.path(&format!("recordings/{id}")), Some(&t.owner_token))
        .await
        .expect(200)
        .json()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The output line of `id` in a `retention run`, if listed.
fn line_of<'a>(out: &'a str, id: &str) -> Option<&'a str> {
    out.lines().find(|l| l.contains(id))
}

async fn sweep_through_the_binary(backend: Backend) {
    let site = Site::new(backend).await;
    let a = site.tenant("ret-cli-a", "Synthetic Retention A");
    let b = site.tenant("ret-cli-b", "Synthetic Retention B");
    let practice = site.practice(&a.id, "Synthetic Retention Practice");
    let server = site.serve();
    let rec = stored_recording(&server, &a, &practice).await;
    assert_eq!(objects_named(&site, &rec).len(), 1);

    // Now: not due (audio waits for its note, 7 days at most).
    let out = site.cli(&["retention", "run", "--dry-run", "--tenant", &a.id]);
    assert!(line_of(&out, &rec).is_none(), "{out}");
    assert!(out.contains("dry run"), "{out}");

    // Eight days on, by the cap; listing deletes nothing.
    let later = (Utc::now() + Duration::days(8) + Duration::minutes(30))
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let out = site.cli(&["retention", "run", "--dry-run", "--as-of", &later]);
    let line = line_of(&out, &rec).unwrap_or_else(|| panic!("not listed: {out}"));
    assert!(line.trim_start().starts_with("audio"), "{line}");
    assert!(line.contains("age 8d0h"), "{line}");
    assert!(
        line.contains("audio cap") && line.ends_with("[due]"),
        "{line}"
    );
    assert!(
        out.contains(&format!("tenant ret-cli-a ({}):", a.id)),
        "{out}"
    );
    assert!(
        out.contains(&format!("tenant ret-cli-b ({}): nothing due", b.id)),
        "{out}"
    );
    assert!(out.contains("nothing deleted (dry run)"), "{out}");
    assert_eq!(recording_state(&server, &a, &rec).await, "stored");
    assert_eq!(objects_named(&site, &rec).len(), 1);

    // Tenant B's run touches nothing of A's.
    let out = site.cli(&[
        "retention",
        "run",
        "--tenant",
        "ret-cli-b",
        "--as-of",
        &later,
    ]);
    assert!(out.contains("nothing due"), "{out}");
    assert!(out.contains("summary: 0 due, 0 deleted, 0 failed"), "{out}");
    assert_eq!(recording_state(&server, &a, &rec).await, "stored");

    // The run deletes it.
    let out = site.cli(&[
        "retention",
        "run",
        "--tenant",
        "ret-cli-a",
        "--as-of",
        &later,
    ]);
    let line = line_of(&out, &rec).unwrap_or_else(|| panic!("not listed: {out}"));
    assert!(line.ends_with("[deleted]"), "{line}");
    assert!(out.contains("audio 1"), "{out}");
    assert_eq!(recording_state(&server, &a, &rec).await, "deleted");
    assert!(
        objects_named(&site, &rec).is_empty(),
        "the audio object remains"
    );
    let events = audit(
        &server,
        &a,
        &format!("&action=retention.object.deleted&resource_id={rec}"),
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["actor_kind"], "system");
    assert_eq!(events[0]["actor_id"], "retention");
    assert_eq!(events[0]["resource_type"], "recording");

    // A second run finds nothing of it.
    let out = site.cli(&["retention", "run", "--as-of", &later]);
    assert!(line_of(&out, &rec).is_none(), "{out}");

    // A malformed time is refused before anything runs.
    let bad = site.cli_output(&["retention", "run", "--as-of", "next tuesday"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("RFC 3339"));
}

async fn settings_and_training_export(backend: Backend) {
    let site = Site::new(backend).await;
    let a = site.tenant("ret-set-a", "Synthetic Retention Settings");
    let server = site.serve();
    let token = a.owner_token.as_str();

    // Retention policies: defaults, validation, a change audited with before and after.
    let view = server
        .get(&a.path("settings/retention"), Some(token))
        .await
        .expect(200)
        .json();
    assert_eq!(view["audio_max_hours"], 168);
    let classes: Vec<(String, i64, String, String)> = view["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["data_class"].as_str().unwrap().into(),
                p["window_hours"].as_i64().unwrap(),
                p["basis"].as_str().unwrap().into(),
                p["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        classes,
        vec![
            ("audio".into(), 24, "after_note".into(), "default".into()),
            (
                "transcript".into(),
                52560,
                "after_creation".into(),
                "default".into()
            ),
            (
                "note".into(),
                52560,
                "after_creation".into(),
                "default".into()
            ),
            (
                "e2e_utterance".into(),
                24,
                "after_creation".into(),
                "default".into()
            ),
        ]
    );
    for (body, code) in [
        (
            json!({"policies": [{"data_class": "audio", "window_hours": 169, "basis": "after_note"}]}),
            "invalid_field",
        ),
        (
            json!({"policies": [{"data_class": "note", "window_hours": 24, "basis": "after_note"}]}),
            "invalid_field",
        ),
        (
            json!({"policies": [{"data_class": "video", "window_hours": 24, "basis": "after_creation"}]}),
            "invalid_field",
        ),
        (json!({}), "invalid_body"),
        (
            json!({"policies": [{"data_class": "note", "window_hours": 24, "basis": "after_creation"}],
                   "reset": ["note"]}),
            "invalid_body",
        ),
    ] {
        put_json(&server, &a.path("settings/retention"), token, &body)
            .await
            .expect_error(422, code);
    }
    let changed = put_json(
        &server,
        &a.path("settings/retention"),
        token,
        &json!({"policies": [
            {"data_class": "audio", "window_hours": 2, "basis": "after_creation"},
            {"data_class": "e2e_utterance", "window_hours": 48, "basis": "after_creation"}
        ]}),
    )
    .await;
    let request_id = changed.header("x-request-id").unwrap().to_string();
    let view = changed.expect(200).json();
    assert_eq!(view["policies"][0]["window_hours"], 2);
    assert_eq!(view["policies"][0]["source"], "tenant");
    assert_eq!(view["policies"][0]["updated_by"], a.owner_id.as_str());
    // The e2e window is one setting, whichever route sets it.
    let e2e = server
        .get(&a.path("settings/e2e"), Some(token))
        .await
        .expect(200)
        .json();
    assert_eq!(e2e["e2e_retention_hours"], 48);
    let event = audit(
        &server,
        &a,
        "&action=admin.reference.updated&resource_type=retention_policy",
    )
    .await
    .into_iter()
    .find(|e| e["request_id"] == request_id.as_str())
    .expect("the change is audited");
    assert_eq!(event["before"]["audio"]["window_hours"], 24);
    assert_eq!(event["after"]["audio"]["window_hours"], 2);

    // Training: refused (and audited as denied) while off.
    let status = server
        .get(&a.path("settings/training"), Some(token))
        .await
        .expect(200)
        .json();
    assert_eq!(status["training_opt_in"], false);
    assert!(status["set_by"].is_null());
    let refused = server
        .post_json(&a.path("exports/training"), Some(token), &json!({}))
        .await;
    refused.expect_error(409, "training_opt_in_required");
    let refused_id = refused.header("x-request-id").unwrap().to_string();
    let denied = audit(&server, &a, "&action=phi.export")
        .await
        .into_iter()
        .find(|e| e["request_id"] == refused_id.as_str())
        .expect("the refusal is audited");
    assert_eq!(denied["outcome"], "denied");

    // An admin may read the setting but not change it.
    let admin = site.user(
        &a.id,
        "admin@ret-set-a.example.test",
        "Synthetic Admin",
        &["admin"],
        None,
    );
    let (_, admin_token) = site.token(&a.id, &admin);
    server
        .get(&a.path("settings/training"), Some(&admin_token))
        .await
        .expect(200);
    put_json(
        &server,
        &a.path("settings/training"),
        &admin_token,
        &json!({"training_opt_in": true}),
    )
    .await
    .expect_error(403, "forbidden");

    // Opted in by the owner: the export answers, audited phi.export.
    let on = put_json(
        &server,
        &a.path("settings/training"),
        token,
        &json!({"training_opt_in": true}),
    )
    .await;
    let on_view = on.expect(200).json();
    assert_eq!(on_view["training_opt_in"], true);
    assert_eq!(on_view["set_by"], a.owner_id.as_str());
    let export = server
        .post_json(
            &a.path("exports/training?limit=10"),
            Some(token),
            &json!({}),
        )
        .await;
    let export_id = export.header("x-request-id").unwrap().to_string();
    assert!(export.expect(200).json()["records"].is_array());
    let exported = audit(&server, &a, "&action=phi.export")
        .await
        .into_iter()
        .find(|e| e["request_id"] == export_id.as_str() && e["resource_type"] == "training_export")
        .expect("the export is audited");
    assert_eq!(exported["outcome"], "success");
    server
        .post_json(&a.path("exports/training?limit=0"), Some(token), &json!({}))
        .await
        .expect_error(422, "invalid_field");
}

#[tokio::test]
async fn sqlite_sweep_through_the_binary() {
    sweep_through_the_binary(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_sweep_through_the_binary() {
    sweep_through_the_binary(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_settings_and_training_export() {
    settings_and_training_export(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_settings_and_training_export() {
    settings_and_training_export(Backend::Postgres).await;
}
