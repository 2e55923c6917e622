//! Consent to record and the streaming recording upload, through the HTTP API, on
//! SQLite and PostgreSQL: a refused upload (no consent, bad checksum, corrupt,
//! unsupported, empty, too large) answers its code and leaves no row and no object; an
//! accepted one is sealed at rest and described; tenant B reaches nothing of tenant A.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Backend, Server, Site, TenantFixture, patient_json, tenant_path};

/// A 1.5 s, 44.1 kHz stereo tone as WAV, made by sox (synthetic audio).
fn tone_wav(dir: &Path) -> PathBuf {
    let path = dir.join("tone.wav");
    let status = Command::new("sox")
        .args(["-n", "-r", "44100", "-c", "2", "-b", "16"])
        .arg(&path)
        .args(["synth", "1.5", "sine", "440"])
        .status()
        .expect("run sox (Debian package sox; scripts/test installs it)");
    assert!(status.success());
    path
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

async fn upload(
    server: &Server,
    tenant: &str,
    encounter: &str,
    token: &str,
    body: Vec<u8>,
    checksum: Option<String>,
) -> support::Reply {
    let mut rb = server
        .request(
            reqwest::Method::POST,
            &tenant_path(tenant, &format!("encounters/{encounter}/recordings")),
        )
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(body);
    if let Some(c) = checksum {
        rb = rb.header("x-content-sha256", c);
    }
    server.send(rb).await
}

/// Sends only the head of an upload with `Expect: 100-continue` and reads the answer: a
/// refusal that needs no body comes back without `100 Continue`, and no body is sent.
fn head_only(
    server: &Server,
    path: &str,
    token: &str,
    length: usize,
    checksum: &str,
) -> support::Reply {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\
         X-Content-SHA256: {checksum}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        server.addr()
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes).to_string();
    assert!(
        !text.starts_with("HTTP/1.1 100"),
        "the server asked for the body: {text}"
    );
    support::raw_reply(&bytes)
}

/// Every object file under the site's object directory.
fn objects(site: &Site) -> Vec<PathBuf> {
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
    out
}

struct World {
    site: Site,
    server: Server,
    a: TenantFixture,
    b: TenantFixture,
    encounter: String,
    b_encounter: String,
    dir: tempfile::TempDir,
}

async fn world(backend: Backend, envs: &[(&str, &str)]) -> World {
    let site = Site::new(backend).await;
    let a = site.tenant("rec-a", "Synthetic Recording Clinic A");
    let b = site.tenant("rec-b", "Synthetic Recording Clinic B");
    let pa = site.practice(&a.id, "A Practice");
    let pb = site.practice(&b.id, "B Practice");
    let server = site.serve_with(envs);
    let patient = server
        .create_patient(
            &a.id,
            &a.owner_token,
            &patient_json(&pa, "SYN-REC-1", "Synthetic", "Patient", "1970-01-01"),
        )
        .await;
    let encounter = server
        .create_encounter(
            &a.id,
            &a.owner_token,
            patient["id"].as_str().unwrap(),
            "synthetic visit",
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_patient = server
        .create_patient(
            &b.id,
            &b.owner_token,
            &patient_json(&pb, "SYN-REC-2", "Synthetic", "Other", "1971-01-01"),
        )
        .await;
    let b_encounter = server
        .create_encounter(
            &b.id,
            &b.owner_token,
            b_patient["id"].as_str().unwrap(),
            "synthetic visit",
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    World {
        site,
        server,
        a,
        b,
        encounter,
        b_encounter,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl World {
    async fn consent(&self, body: Value) -> support::Reply {
        self.server
            .post_json(
                &self
                    .a
                    .path(&format!("encounters/{}/consents", self.encounter)),
                Some(&self.a.owner_token),
                &body,
            )
            .await
    }

    async fn upload(&self, body: Vec<u8>, checksum: Option<String>) -> support::Reply {
        upload(
            &self.server,
            &self.a.id,
            &self.encounter,
            &self.a.owner_token,
            body,
            checksum,
        )
        .await
    }

    async fn recordings(&self) -> Vec<Value> {
        self.server
            .get(
                &self
                    .a
                    .path(&format!("encounters/{}/recordings", self.encounter)),
                Some(&self.a.owner_token),
            )
            .await
            .expect(200)
            .json()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Nothing of a refused upload remains: no recording row, no object.
    async fn assert_nothing_left(&self, what: &str) {
        assert!(
            self.recordings().await.is_empty(),
            "{what}: a recording row remains"
        );
        let recs: Vec<_> = objects(&self.site)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("recording"))
            .collect();
        assert!(recs.is_empty(), "{what}: objects remain: {recs:?}");
    }
}

async fn refused_uploads_leave_nothing(backend: Backend) {
    let w = world(backend, &[("PHIVAULT_UPLOAD_LIMIT_BYTES", "400000")]).await;
    let wav = std::fs::read(tone_wav(w.dir.path())).unwrap();
    assert!(wav.len() > 200_000 && wav.len() < 400_000, "{}", wav.len());
    let good = sha256_hex(&wav);

    // No consent yet: refused before the body is read (a client that sends
    // `Expect: 100-continue` never sends it).
    let path = w.a.path(&format!("encounters/{}/recordings", w.encounter));
    head_only(&w.server, &path, &w.a.owner_token, wav.len(), &good)
        .expect_error(409, "consent_required");
    w.upload(wav[..2000].to_vec(), Some(sha256_hex(&wav[..2000])))
        .await
        .expect_error(409, "consent_required");
    w.assert_nothing_left("no consent").await;

    // An all-party state needs every party's consent; "US" alone names no state.
    w.consent(json!({"method": "verbal", "jurisdiction": "US-CA"}))
        .await
        .expect_error(422, "invalid_field");
    w.consent(json!({"method": "verbal", "jurisdiction": "US"}))
        .await
        .expect_error(422, "invalid_field");
    w.consent(json!({"method": "shouted", "jurisdiction": "US-NY"}))
        .await
        .expect_error(422, "invalid_field");
    w.upload(wav[..2000].to_vec(), Some(sha256_hex(&wav[..2000])))
        .await
        .expect_error(409, "consent_required");
    let consent = w
        .consent(
            json!({"method": "verbal", "jurisdiction": "US-CA", "all_parties_consented": true}),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(consent["all_party_required"], true);
    assert_eq!(consent["consent_text_version"], "phivault-default-1");

    // Checksums: missing, malformed (refused before the body), wrong.
    w.upload(wav[..2000].to_vec(), None)
        .await
        .expect_error(400, "checksum_required");
    head_only(&w.server, &path, &w.a.owner_token, wav.len(), "abc")
        .expect_error(400, "invalid_checksum");
    w.upload(wav.clone(), Some(sha256_hex(b"something else")))
        .await
        .expect_error(422, "checksum_mismatch");
    w.assert_nothing_left("wrong checksum").await;

    // Not audio, empty, corrupt, truncated.
    let text = b"this is not audio, just synthetic text".to_vec();
    w.upload(text.clone(), Some(sha256_hex(&text)))
        .await
        .expect_error(415, "unsupported_format");
    w.upload(Vec::new(), Some(sha256_hex(b"")))
        .await
        .expect_error(422, "empty_audio");
    let mut corrupt = wav[..44].to_vec();
    corrupt.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    // A WAV header whose format chunk is garbage.
    corrupt[20..36].copy_from_slice(&[0xff; 16]);
    let r = w.upload(corrupt.clone(), Some(sha256_hex(&corrupt))).await;
    assert!(
        r.check_error(422, "corrupt_audio").is_ok()
            || r.check_error(415, "unsupported_format").is_ok()
            || r.check_error(415, "unsupported_codec").is_ok(),
        "corrupt WAV: {} {}",
        r.status,
        r.text()
    );
    w.assert_nothing_left("bad audio").await;

    // Over the limit (400000 bytes here): a declared length is refused before the
    // body; a chunked body is cut off when it passes the limit. Nothing is kept.
    let mut big = wav.clone();
    big.extend(std::iter::repeat_n(0u8, 300_000));
    head_only(
        &w.server,
        &path,
        &w.a.owner_token,
        big.len(),
        &sha256_hex(&big),
    )
    .expect_error(413, "too_large");
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(10_000).map(|c| Ok(c.to_vec())).collect();
    let rb = w
        .server
        .request(reqwest::Method::POST, &path)
        .bearer_auth(&w.a.owner_token)
        .header("x-content-sha256", sha256_hex(&big))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)));
    // The server answers 413 and stops reading; the client may see the answer or, still
    // sending, a closed connection. Either way nothing is kept.
    if let Ok(response) = rb.send().await {
        assert_eq!(response.status().as_u16(), 413);
    }
    w.assert_nothing_left("too large").await;

    // The good file is stored, described, sealed at rest.
    let rec = w
        .upload(wav.clone(), Some(good.clone()))
        .await
        .expect(201)
        .json();
    assert_eq!(rec["state"], "stored");
    assert_eq!(rec["sha256"], good.as_str());
    assert_eq!(rec["size_bytes"], wav.len() as u64);
    assert_eq!(rec["sample_rate"], 44100);
    assert_eq!(rec["channels"], 2);
    let ms = rec["duration_ms"].as_i64().unwrap();
    assert!((1490..=1510).contains(&ms), "duration {ms}");
    assert_eq!(rec["consent_id"], consent["id"]);
    let stored: Vec<_> = objects(&w.site)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("recording"))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let at_rest = std::fs::read(&stored[0]).unwrap();
    assert!(at_rest.starts_with(b"PVS1"), "not a sealed stream");
    assert!(
        !at_rest.windows(4).any(|w| w == b"WAVE") && !at_rest.windows(4).any(|w| w == b"RIFF"),
        "the WAV header is readable at rest"
    );
    assert!(
        !at_rest.windows(64).any(|x| x == &wav[1000..1064]),
        "audio samples are readable at rest"
    );
    assert_eq!(w.recordings().await.len(), 1);

    // Withdrawn consent: the next upload is refused again.
    w.server
        .post_json(
            &w.a.path(&format!(
                "encounters/{}/consents/{}/revoke",
                w.encounter,
                consent["id"].as_str().unwrap()
            )),
            Some(&w.a.owner_token),
            &json!({}),
        )
        .await
        .expect(204);
    head_only(&w.server, &path, &w.a.owner_token, wav.len(), &good)
        .expect_error(409, "consent_required");
    assert_eq!(w.recordings().await.len(), 1);
}

#[tokio::test]
async fn sqlite_refused_uploads_leave_nothing() {
    refused_uploads_leave_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_refused_uploads_leave_nothing() {
    refused_uploads_leave_nothing(Backend::Postgres).await;
}

async fn chunked_upload_and_isolation(backend: Backend) {
    let w = world(backend, &[]).await;
    let wav = std::fs::read(tone_wav(w.dir.path())).unwrap();
    let good = sha256_hex(&wav);

    // A tenant's own consent text: consent names it; once retired, it cannot be used.
    let text = w
        .server
        .post_json(
            &w.a.path("consent-texts"),
            Some(&w.a.owner_token),
            &json!({"name": "Synthetic visit recording", "version": "2026-11", "language": "en",
                    "body": "A synthetic consent text.\nLine two."}),
        )
        .await
        .expect(201)
        .json();
    let text_id = text["id"].as_str().unwrap();
    w.server
        .post_json(
            &w.a.path("consent-texts"),
            Some(&w.a.owner_token),
            &json!({"name": "Synthetic visit recording", "version": "2026-11", "language": "en",
                    "body": "Another body, same name and version."}),
        )
        .await
        .expect_error(409, "conflict");
    let c = w
        .consent(json!({"method": "written", "jurisdiction": "US-NY", "consent_text_id": text_id}))
        .await
        .expect(201)
        .json();
    assert_eq!(c["consent_text_version"], "2026-11");
    assert_eq!(c["all_party_required"], false);
    w.server
        .post_json(
            &w.a.path(&format!("consent-texts/{text_id}/retire")),
            Some(&w.a.owner_token),
            &json!({}),
        )
        .await
        .expect(204);
    w.consent(json!({"method": "written", "jurisdiction": "US-NY", "consent_text_id": text_id}))
        .await
        .expect_error(422, "invalid_field");
    // B cannot use A's text.
    w.server
        .post_json(
            &w.b.path(&format!("encounters/{}/consents", w.b_encounter)),
            Some(&w.b.owner_token),
            &json!({"method": "written", "jurisdiction": "US-NY", "consent_text_id": text_id}),
        )
        .await
        .expect_error(422, "invalid_field");

    // Chunked transfer encoding: a body of unknown length, sent in small pieces.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        wav.chunks(7_001).map(|c| Ok(c.to_vec())).collect();
    let rb = w
        .server
        .request(
            reqwest::Method::POST,
            &w.a.path(&format!("encounters/{}/recordings", w.encounter)),
        )
        .bearer_auth(&w.a.owner_token)
        .header("x-content-sha256", good.clone())
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)));
    let rec = w.server.send(rb).await.expect(201).json();
    let id = rec["id"].as_str().unwrap().to_string();

    // Tenant B: its token on A's paths is refused; on its own paths A's ids are unknown.
    // (Refusals come before the body is read: small bodies, so the client finishes
    // sending before the answer.)
    let small = wav[..2000].to_vec();
    let small_sum = sha256_hex(&small);
    upload(
        &w.server,
        &w.a.id,
        &w.encounter,
        &w.b.owner_token,
        small.clone(),
        Some(small_sum.clone()),
    )
    .await
    .expect_error(403, "tenant_mismatch");
    upload(
        &w.server,
        &w.b.id,
        &w.encounter,
        &w.b.owner_token,
        small.clone(),
        Some(small_sum.clone()),
    )
    .await
    .expect_error(404, "not_found");
    w.server
        .get(
            &w.b.path(&format!("recordings/{id}")),
            Some(&w.b.owner_token),
        )
        .await
        .expect_error(404, "not_found");
    w.server
        .get(
            &w.b.path(&format!("encounters/{}/recordings", w.encounter)),
            Some(&w.b.owner_token),
        )
        .await
        .expect_error(404, "not_found");
    w.server
        .post_json(
            &w.b.path(&format!("encounters/{}/consents", w.encounter)),
            Some(&w.b.owner_token),
            &json!({"method": "verbal", "jurisdiction": "US-NY"}),
        )
        .await
        .expect_error(404, "not_found");
    // B's own encounter has no consent: its upload is refused, and A's stays one.
    upload(
        &w.server,
        &w.b.id,
        &w.b_encounter,
        &w.b.owner_token,
        small,
        Some(small_sum),
    )
    .await
    .expect_error(409, "consent_required");
    let mine = w
        .server
        .get(
            &w.a.path(&format!("recordings/{id}")),
            Some(&w.a.owner_token),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(mine["id"], id.as_str());

    // The audit trail names the recording and the consent, never content.
    let audit = w
        .server
        .get(&w.a.path("audit?limit=200"), Some(&w.a.owner_token))
        .await
        .expect(200)
        .text();
    assert!(audit.contains("recording.created"), "{audit}");
    assert!(audit.contains("admin.reference.updated"), "{audit}");
    assert!(
        !audit.contains("synthetic consent text"),
        "content in the audit trail"
    );
    assert!(audit.contains(&id));
}

#[tokio::test]
async fn sqlite_chunked_upload_and_isolation() {
    chunked_upload_and_isolation(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_chunked_upload_and_isolation() {
    chunked_upload_and_isolation(Backend::Postgres).await;
}
