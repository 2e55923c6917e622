//! The evidence packet from outside, on SQLite and PostgreSQL: `phivault evidence export`
//! and `POST …/evidence` produce a signed archive whose `packet.json` holds every section
//! with the tenant's real records (users and roles, a vendor with its BAA, the tenant's
//! BAA, a retention deletion, both audit chains verified with a signed checkpoint, sample
//! events, a compliance record); `phivault evidence verify` accepts it offline, and
//! refuses it once any one byte is changed (first byte, report, a tar header, padding,
//! the signature, the last byte), under a wrong `--trusted-key`, cut short, or empty. No
//! configured secret and no patient value appears in it. The API refuses bad options, a
//! role without `audit:view` and sealed keys, and audits every export. All data is
//! synthetic.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use chrono::{Duration, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Backend, Server, Site, TenantFixture, patient_json};

/// Synthetic secrets the configuration holds while packets are made.
const SMTP_SECRET: &str = "synthetic-smtp-password-7731";
const S3_SECRET: &str = "synthetic-s3-secret-key-4409";
const SPEECH_KEY: &str = "synthetic-speech-api-key-6120";
const SECRETS: [(&str, &str); 3] = [
    ("PHIVAULT_SMTP_PASSWORD", SMTP_SECRET),
    ("PHIVAULT_S3_SECRET_ACCESS_KEY", S3_SECRET),
    ("PHIVAULT_TRANSCRIPTION_OPENAI_API_KEY", SPEECH_KEY),
];
/// Synthetic patient values that must never reach a packet.
const PATIENT_GIVEN: &str = "Synthgivenevid";
const PATIENT_FAMILY: &str = "Zzevidencecanary";
const PATIENT_MRN: &str = "SYNTH-MRN-EVID-5521";
const VISIT_REASON: &str = "synthetic evidence canary reason 4471";

/// One entry of a tar archive: name, where its header and data start, its size.
#[derive(Debug)]
struct TarEntry {
    name: String,
    header: usize,
    data: usize,
    size: usize,
}

/// Reads the ustar headers (the test's own reader, independent of the server's).
fn tar_entries(bytes: &[u8]) -> Vec<TarEntry> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 512 <= bytes.len() {
        let h = &bytes[at..at + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let name = h[..100].split(|b| *b == 0).next().unwrap();
        let size = std::str::from_utf8(&h[124..136])
            .unwrap()
            .trim_matches(|c: char| c == '\0' || c == ' ');
        let size = usize::from_str_radix(size, 8).unwrap();
        out.push(TarEntry {
            name: String::from_utf8(name.to_vec()).unwrap(),
            header: at,
            data: at + 512,
            size,
        });
        at += 512 + size.div_ceil(512) * 512;
    }
    out
}

fn entry<'a>(bytes: &'a [u8], entries: &[TarEntry], name: &str) -> &'a [u8] {
    let e = entries
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name} in {entries:?}"));
    &bytes[e.data..e.data + e.size]
}

/// `phivault evidence verify`, run with no data directory or database: offline.
fn verify(file: &Path, extra: &[&str]) -> Output {
    let cwd = tempfile::tempdir().unwrap();
    let out = support::phivault()
        .current_dir(cwd.path())
        .args(["evidence", "verify"])
        .arg(file)
        .args(extra)
        .output()
        .expect("run phivault");
    assert!(
        !cwd.path().join("phivault-data").exists(),
        "verify touched a data directory"
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn assert_refused(out: &Output, what: &str) {
    let all = text(out);
    assert!(!out.status.success(), "{what}: verify passed: {all}");
    assert!(!all.contains("panicked"), "{what}: {all}");
    assert!(all.contains("FAILED verification"), "{what}: {all}");
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// One second of synthetic 16 kHz mono silence-ish tone as a WAV file.
fn tone_wav() -> Vec<u8> {
    let rate = 16_000u32;
    let samples: Vec<i16> = (0..rate)
        .map(|i| {
            ((f64::from(i) / f64::from(rate) * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
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

/// A synthetic patient, encounter, consent and stored recording; returns the recording.
async fn recording(server: &Server, t: &TenantFixture, practice: &str) -> String {
    let patient = server
        .create_patient(
            &t.id,
            &t.owner_token,
            &patient_json(
                practice,
                PATIENT_MRN,
                PATIENT_GIVEN,
                PATIENT_FAMILY,
                "1970-01-01",
            ),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let encounter = server
        .create_encounter(&t.id, &t.owner_token, &patient, VISIT_REASON)
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

async fn events(server: &Server, t: &TenantFixture, query: &str) -> Vec<Value> {
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

/// The tenant's records every section of the packet should show.
struct World {
    site: Site,
    server: Server,
    t: TenantFixture,
    billing: String,
    member_token: String,
    practice: String,
    recording: String,
    checkpoint_key: String,
}

async fn world(backend: Backend) -> World {
    let site = Site::new(backend).await;
    let t = site.tenant("evidence-clinic", "Synthetic Evidence Clinic");
    site.tenant("evidence-other", "Synthetic Other Clinic");
    let practice = site.practice(&t.id, "Synthetic Evidence Practice");
    let billing = site.user(
        &t.id,
        "biller@evidence-clinic.example.test",
        "Synthetic Biller",
        &["billing"],
        Some(&[&practice]),
    );
    let member = site.user(
        &t.id,
        "member@evidence-clinic.example.test",
        "Synthetic Member",
        &["member"],
        None,
    );
    let (_, member_token) = site.token(&t.id, &member);
    site.cli(&[
        "vendor",
        "set",
        "--tenant",
        &t.id,
        "--key",
        "synthetic-speech",
        "--name",
        "Synthetic Speech Vendor",
        "--service",
        "transcription",
        "--touches-phi",
        "--baa-signed-on",
        "2026-01-10",
        "--baa-evidence-ref",
        "dms://baa/synthetic-speech",
    ]);
    site.cli(&[
        "baa",
        "set",
        "--tenant",
        &t.id,
        "--signed-on",
        "2026-01-05",
        "--signatory",
        "Synthetic Signatory, CEO",
        "--evidence-ref",
        "dms://baa/evidence-clinic",
    ]);
    let sanctions = support::write_file(
        site.data_dir(),
        "evidence-sanctions.json",
        r#"{"version_label": "v7-synthetic", "adopted_on": "2026-01-02", "document_ref": "dms://policies/sanctions-synthetic"}"#,
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
    let server = site.serve_with(&SECRETS);
    let recording = recording(&server, &t, &practice).await;
    // Eight days on, the audio is past its cap: a deletion for the log.
    let later = (Utc::now() + Duration::days(8) + Duration::minutes(30))
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    let out = site.cli(&["retention", "run", "--tenant", &t.id, "--as-of", &later]);
    assert!(
        out.contains(&recording) && out.contains("[deleted]"),
        "{out}"
    );
    // A signed checkpoint over every chain, and the key a reviewer compares against.
    let out = site.cli_output(&["audit", "checkpoint"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let checkpoint_key = stderr
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint key "))
        .unwrap_or_else(|| panic!("no checkpoint key in: {stderr}"))
        .trim()
        .to_string();
    World {
        site,
        server,
        t,
        billing,
        member_token,
        practice,
        recording,
        checkpoint_key,
    }
}

/// Checks the sections of `packet.json` against the world; returns it.
fn check_packet(w: &World, bytes: &[u8], configuration_source: &str) -> Value {
    let entries = tar_entries(bytes);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["packet.json", "report.html", "SIGNATURE"]);
    let p: Value = serde_json::from_slice(entry(bytes, &entries, "packet.json")).unwrap();
    assert_eq!(p["format_version"], 1);
    assert!(p["generated_at"].as_str().is_some());
    assert!(p["server_version"].as_str().is_some_and(|v| !v.is_empty()));
    assert_eq!(p["tenant"]["id"], w.t.id.as_str());
    assert_eq!(p["tenant"]["slug"], "evidence-clinic");

    // Readiness: all eight gates, each with evidence.
    let gates = p["readiness"]["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 8, "{gates:?}");
    assert!(gates.iter().all(|g| g["evidence"].is_object()));
    let baa_gate = gates.iter().find(|g| g["id"] == "tenant_baa").unwrap();
    assert_eq!(baa_gate["status"], "ready", "{baa_gate}");

    // Configuration, without secrets but saying they are set.
    let config = &p["configuration"];
    assert!(
        config["source"]
            .as_str()
            .unwrap()
            .starts_with(configuration_source),
        "{config}"
    );

    // Vendors and BAAs.
    let vendor = p["vendors"]["tenant"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["key"] == "synthetic-speech")
        .unwrap_or_else(|| panic!("no vendor: {}", p["vendors"]));
    assert_eq!(vendor["touches_phi"], true);
    assert_eq!(vendor["baa"]["signed_on"], "2026-01-10");
    assert_eq!(vendor["baa"]["evidence_ref"], "dms://baa/synthetic-speech");
    assert_eq!(p["vendors"]["tenant_baa"]["signed_on"], "2026-01-05");

    // Access review: users, roles, grants, MFA.
    let review = &p["access_review"];
    assert_eq!(review["mfa_policy"], "none");
    let users = review["users"].as_array().unwrap();
    assert_eq!(users.len(), 3, "{users:?}");
    let owner = users
        .iter()
        .find(|u| u["id"] == w.t.owner_id.as_str())
        .unwrap();
    assert_eq!(owner["roles"], json!(["owner"]));
    assert_eq!(owner["practices"], "all");
    assert_eq!(owner["mfa_enrolled"], false);
    assert_eq!(owner["active_api_tokens"], 1);
    let biller = users
        .iter()
        .find(|u| u["id"] == w.billing.as_str())
        .unwrap();
    assert_eq!(biller["roles"], json!(["billing"]));
    assert_eq!(biller["practices"], json!({"only": [w.practice]}));
    assert_eq!(
        review["practices"][0]["name"],
        "Synthetic Evidence Practice"
    );

    // Retention: the four policies and the deletion.
    assert_eq!(p["retention"]["policies"].as_array().unwrap().len(), 4);
    let log = &p["retention"]["deletion_log"];
    assert_eq!(log["totals"]["audio"], 1, "{log}");
    assert_eq!(log["records"][0]["id"], w.recording.as_str());
    assert!(
        log["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["resource_id"] == w.recording.as_str() && e["resource_type"] == "recording"),
        "{log}"
    );

    // Audit: both chains verified, the tenant's with the checkpoint, sample events.
    let audit = &p["audit"];
    assert_eq!(audit["trusted_keys"], json!([w.checkpoint_key]));
    let chains = audit["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 2);
    assert_eq!(chains[0]["chain"], w.t.id.as_str());
    assert_eq!(chains[1]["chain"], "platform");
    for c in chains {
        assert_eq!(c["outcome"], "verified", "{c}");
        assert!(c["events"].as_u64().unwrap() > 0);
    }
    let tenant_chain = &chains[0];
    assert!(tenant_chain["signed_through"].as_u64().unwrap() >= 1);
    let cps = tenant_chain["checkpoints"].as_array().unwrap();
    assert!(!cps.is_empty());
    assert!(
        cps.iter()
            .all(|c| c["public_key"] == w.checkpoint_key.as_str())
    );
    let sample = audit["sample_events"].as_array().unwrap();
    assert!(!sample.is_empty());
    assert!(
        sample
            .windows(2)
            .all(|s| s[1]["sequence"].as_u64() == s[0]["sequence"].as_u64().map(|n| n + 1))
    );

    // Compliance records.
    let sanctions = p["compliance"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "sanctions_policy")
        .unwrap_or_else(|| panic!("no sanctions policy: {}", p["compliance"]));
    assert_eq!(sanctions["body"]["version_label"], "v7-synthetic");

    // The report: self-contained, for a person, the same facts.
    let html = std::str::from_utf8(entry(bytes, &entries, "report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for forbidden in [
        "<script", " src=", "href=", "@import", "url(", "<link", "<iframe",
    ] {
        assert!(!html.contains(forbidden), "report.html holds {forbidden}");
    }
    for expected in [
        "Synthetic Evidence Clinic",
        "Readiness gates",
        "Synthetic Speech Vendor",
        "biller@evidence-clinic.example.test",
        "Deletion log",
        w.recording.as_str(),
        "Sample events",
        "v7-synthetic",
        w.checkpoint_key.as_str(),
    ] {
        assert!(html.contains(expected), "report.html lacks {expected}");
    }

    // No configured secret and no patient value anywhere in the archive.
    let all = String::from_utf8_lossy(bytes);
    for canary in [
        SMTP_SECRET,
        S3_SECRET,
        SPEECH_KEY,
        PATIENT_GIVEN,
        PATIENT_FAMILY,
        PATIENT_MRN,
        VISIT_REASON,
    ] {
        assert!(!all.contains(canary), "the packet holds {canary}");
    }
    p
}

/// Flips one bit at each named position; `evidence verify` must refuse every copy.
fn tampering_fails(bytes: &[u8], dir: &Path, key: &str) {
    let entries = tar_entries(bytes);
    let find = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
    let json = find("packet.json");
    let html = find("report.html");
    let sig = find("SIGNATURE");
    // A padded entry: its last padding byte.
    let padded = [json, html, sig]
        .into_iter()
        .find(|e| !e.size.is_multiple_of(512))
        .expect("an entry with padding");
    let padding = padded.data + padded.size.div_ceil(512) * 512 - 1;
    let positions = [
        ("first byte", 0),
        ("inside report.html", html.data + html.size / 2),
        ("inside packet.json", json.data + json.size / 3),
        ("report.html header (mtime)", html.header + 136),
        ("SIGNATURE header (size)", sig.header + 130),
        ("padding", padding),
        ("inside SIGNATURE", sig.data + sig.size / 2),
        ("end-of-archive block", bytes.len() - 700),
        ("last byte", bytes.len() - 1),
    ];
    for (what, at) in positions {
        let mut t = bytes.to_vec();
        t[at] ^= 0x01;
        let f = write(dir, "tampered.tar", &t);
        assert_refused(&verify(&f, &["--trusted-key", key]), what);
        assert_refused(&verify(&f, &[]), what);
    }
    // Cut short, extended, empty, absent, foreign.
    for (what, t) in [
        ("truncated by half", bytes[..bytes.len() / 2].to_vec()),
        ("truncated by a block", bytes[..bytes.len() - 512].to_vec()),
        ("one byte short", bytes[..bytes.len() - 1].to_vec()),
        ("extended", [bytes, &[0u8; 512][..]].concat()),
        ("empty", Vec::new()),
        ("not a tar", b"synthetic: not an evidence packet\n".to_vec()),
    ] {
        let f = write(dir, "damaged.tar", &t);
        assert_refused(&verify(&f, &[]), what);
    }
    assert_refused(&verify(&dir.join("absent.tar"), &[]), "absent");
}

async fn evidence_packet(backend: Backend) {
    let w = world(backend).await;
    let dir = tempfile::tempdir().unwrap();

    // The CLI export, with secrets in the configuration.
    let out_file = dir.path().join("packet-cli.tar");
    let mut cmd = w.site.command(&[
        "evidence",
        "export",
        "--tenant",
        "evidence-clinic",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    cmd.envs(SECRETS);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "export failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains(&format!("signed by checkpoint key {}", w.checkpoint_key)),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")),
        "a partial file was left behind"
    );
    let cli_bytes = std::fs::read(&out_file).unwrap();
    let p = check_packet(&w, &cli_bytes, "configuration");
    assert_eq!(p["produced_by"]["kind"], "operator");
    assert_eq!(
        p["configuration"]["mail"]["smtp_password"],
        "[set; not shown]"
    );
    assert_eq!(
        p["configuration"]["objects"]["s3"]["secret_access_key"],
        "[set; not shown]"
    );

    // Offline verification: the packet's own key, then the key compared out of band.
    let ok = verify(&out_file, &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    let said = text(&ok);
    assert!(said.contains("signature OK"), "{said}");
    assert!(said.contains(&w.checkpoint_key), "{said}");
    assert!(said.contains("no --trusted-key"), "{said}");
    let ok = verify(&out_file, &["--trusted-key", &w.checkpoint_key, "--json"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let v: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["public_key"], w.checkpoint_key.as_str());
    assert_eq!(v["tenant"], "evidence-clinic");
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(&cli_bytes)));
    assert!(v["chains"][0]["checkpoints_verified"].as_u64().unwrap() >= 1);
    assert!(v["sample_events_verified"].as_u64().unwrap() >= 1);

    // A wrong trusted key, and a malformed one.
    let other = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]).verifying_key();
    let wrong = verify(
        &out_file,
        &["--trusted-key", &hex::encode(other.as_bytes())],
    );
    assert_refused(&wrong, "wrong --trusted-key");
    assert!(
        text(&wrong).contains("not by the trusted key"),
        "{}",
        text(&wrong)
    );
    let malformed = verify(&out_file, &["--trusted-key", "zz-not-hex"]);
    assert!(!malformed.status.success());

    // Every byte counts.
    tampering_fails(&cli_bytes, dir.path(), &w.checkpoint_key);

    // The export is in the tenant's trail, with the archive's digest.
    let exported = events(&w.server, &w.t, "&action=evidence.exported").await;
    let cli_event = exported
        .iter()
        .find(|e| e["actor_kind"] == "operator")
        .unwrap_or_else(|| panic!("no operator export event: {exported:?}"));
    assert_eq!(
        cli_event["after"]["sha256"],
        hex::encode(Sha256::digest(&cli_bytes))
    );
    assert_eq!(cli_event["resource_type"], "evidence_packet");
    assert_eq!(cli_event["resource_id"], p["packet_id"]);

    // The API: the same packet shape, for an owner.
    let reply = w
        .server
        .post_raw(
            &w.t.path("evidence"),
            Some(&w.t.owner_token),
            None,
            Vec::new(),
        )
        .await;
    reply.expect(200);
    assert_eq!(reply.header("content-type"), Some("application/x-tar"));
    let disposition = reply.header("content-disposition").unwrap_or("");
    assert!(
        disposition.starts_with("attachment; filename=\"phivault-evidence-evidence-clinic-"),
        "{disposition}"
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let api_bytes = reply.body.clone();
    assert_eq!(
        reply.header("x-evidence-sha256"),
        Some(hex::encode(Sha256::digest(&api_bytes)).as_str())
    );
    let p = check_packet(&w, &api_bytes, "server");
    assert_eq!(p["produced_by"]["kind"], "user");
    assert_eq!(p["produced_by"]["id"], w.t.owner_id.as_str());
    let api_file = write(dir.path(), "packet-api.tar", &api_bytes);
    let ok = verify(&api_file, &["--trusted-key", &w.checkpoint_key]);
    assert!(ok.status.success(), "{}", text(&ok));
    let mut flipped = api_bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x80;
    let f = write(dir.path(), "packet-api-tampered.tar", &flipped);
    assert_refused(
        &verify(&f, &["--trusted-key", &w.checkpoint_key]),
        "API packet",
    );
    let exported = events(&w.server, &w.t, "&action=evidence.exported").await;
    let api_event = exported
        .iter()
        .find(|e| e["actor_kind"] == "user")
        .unwrap_or_else(|| panic!("no user export event: {exported:?}"));
    assert_eq!(api_event["actor_id"], w.t.owner_id.as_str());
    assert_eq!(
        api_event["after"]["sha256"],
        hex::encode(Sha256::digest(&api_bytes))
    );
    assert_eq!(api_event["outcome"], "success");
    let all_events = serde_json::to_string(&events(&w.server, &w.t, "").await).unwrap();
    assert!(!all_events.contains(PATIENT_FAMILY));

    // Options: a smaller sample; malformed, oversized and unknown options are refused.
    let reply = w
        .server
        .post_raw(
            &w.t.path("evidence?sample_events=3"),
            Some(&w.t.owner_token),
            None,
            Vec::new(),
        )
        .await;
    reply.expect(200);
    let entries = tar_entries(&reply.body);
    let small: Value = serde_json::from_slice(entry(&reply.body, &entries, "packet.json")).unwrap();
    assert_eq!(small["audit"]["sample_events"].as_array().unwrap().len(), 3);
    let long = "9".repeat(4000);
    for query in [
        "sample_events=0",
        "sample_events=201",
        "sample_events=-1",
        "sample_events=abc",
        "sample_events=99999999999999999999",
        "sample_events=1&sample_events=2",
        "samples=3",
        "sample_events=%00",
        &format!("sample_events={long}"),
    ] {
        let reply = w
            .server
            .post_raw(
                &w.t.path(&format!("evidence?{query}")),
                Some(&w.t.owner_token),
                None,
                Vec::new(),
            )
            .await;
        reply.expect_error(400, "invalid_query");
    }
    // An oversized body is refused by the edge before the route runs.
    w.server
        .post_raw(
            &w.t.path("evidence"),
            Some(&w.t.owner_token),
            Some("application/octet-stream"),
            vec![b'x'; 1024 * 1024 + 1],
        )
        .await
        .expect_error(413, "payload_too_large");
    // A body is not read: hostile bytes change nothing.
    let reply = w
        .server
        .post_raw(
            &w.t.path("evidence"),
            Some(&w.t.owner_token),
            Some("application/json"),
            b"{\"tenant\": \"../../etc\", \"sample_events\": 1e99".to_vec(),
        )
        .await;
    reply.expect(200);

    // Who may: a member lacks audit:view; nobody anonymous; not another tenant's.
    w.server
        .post_raw(
            &w.t.path("evidence"),
            Some(&w.member_token),
            None,
            Vec::new(),
        )
        .await
        .expect_error(403, "forbidden");
    w.server
        .post_raw(&w.t.path("evidence"), None, None, Vec::new())
        .await
        .expect_error(401, "unauthenticated");
    w.server
        .post_raw(
            "/api/v1/tenants/not-a-uuid/evidence",
            Some(&w.t.owner_token),
            None,
            Vec::new(),
        )
        .await
        .expect_error(400, "invalid_path");
    let other_tenant = uuid::Uuid::now_v7().to_string();
    w.server
        .post_raw(
            &support::tenant_path(&other_tenant, "evidence"),
            Some(&w.t.owner_token),
            None,
            Vec::new(),
        )
        .await
        .expect_error(403, "tenant_mismatch");

    // Sealed keys: the packet cannot be signed.
    let seal = w
        .server
        .post_json("/api/v1/sys/seal", None, &json!({"passphrase": ""}))
        .await;
    seal.expect(200);
    w.server
        .post_raw(
            &w.t.path("evidence"),
            Some(&w.t.owner_token),
            None,
            Vec::new(),
        )
        .await
        .expect_error(503, "sealed");
    w.server
        .post_json("/api/v1/sys/unseal", None, &json!({"passphrase": ""}))
        .await
        .expect(200);
    w.server
        .post_raw(
            &w.t.path("evidence"),
            Some(&w.t.owner_token),
            None,
            Vec::new(),
        )
        .await
        .expect(200);

    // The CLI refuses a tenant it does not know and leaves no file.
    let missing = dir.path().join("missing.tar");
    let out = w.site.cli_output(&[
        "evidence",
        "export",
        "--tenant",
        "no-such-tenant",
        "--out",
        missing.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_evidence_packet() {
    evidence_packet(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_evidence_packet() {
    evidence_packet(Backend::Postgres).await;
}
