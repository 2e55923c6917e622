//! Helpers of the speech tests (scribe.rs, whisper.rs, openai_transcribe.rs): synthetic
//! speech from hibari-tts, word comparison, and the upload-then-wait path of a recording.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Server, TenantFixture};

/// Runs a helper program, failing the test with its stderr if it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Python with hibari-tts (and faster-whisper) that scripts/test provides.
pub fn tts_python() -> String {
    std::env::var("PHIVAULT_TEST_TTS_PYTHON").unwrap_or_else(|_| {
        panic!("PHIVAULT_TEST_TTS_PYTHON is not set: run scripts/test, or point it at a python with hibari-tts")
    })
}

/// Speaks one synthetic sentence and converts it to 44.1 kHz stereo FLAC.
pub fn spoken_flac(dir: &Path, text: &str) -> PathBuf {
    let raw = dir.join("sentence.wav");
    run(Command::new(tts_python())
        .args(["-m", "hibari.cli", text, "--seed", "1", "-o"])
        .arg(&raw));
    let flac = dir.join("sentence.flac");
    run(Command::new("sox")
        .arg(&raw)
        .args(["-r", "44100", "-c", "2"])
        .arg(&flac)
        .args(["pad", "0.5", "0.5"]));
    flac
}

/// Speaks the synthetic sentences into one 16 kHz mono WAV, a second of silence apart.
pub fn dialogue(dir: &Path, sentences: &[&str]) -> PathBuf {
    let python = tts_python();
    let pause = dir.join("pause.wav");
    run(Command::new("sox")
        .args(["-n", "-r", "24000", "-c", "1"])
        .arg(&pause)
        .args(["trim", "0", "1"]));
    let mut parts = Vec::new();
    for (i, text) in sentences.iter().enumerate() {
        let part = dir.join(format!("s{i}.wav"));
        run(Command::new(&python)
            .args(["-m", "hibari.cli", text, "--seed", "1", "-o"])
            .arg(&part));
        parts.push(part);
        parts.push(pause.clone());
    }
    let out = dir.join("dialogue.wav");
    run(Command::new("sox")
        .args(&parts)
        .args(["-r", "16000", "-c", "1", "-b", "16"])
        .arg(&out));
    out
}

/// Lower-case words, punctuation removed.
pub fn words(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Uploads a recording to an encounter as the tenant's owner; returns the recording.
pub async fn upload(server: &Server, t: &TenantFixture, encounter: &str, wav: &[u8]) -> Value {
    let rb = server
        .request(
            reqwest::Method::POST,
            &t.path(&format!("encounters/{encounter}/recordings")),
        )
        .bearer_auth(&t.owner_token)
        .header("x-content-sha256", hex::encode(Sha256::digest(wav)))
        .body(wav.to_vec());
    server.send(rb).await.expect(201).json()
}

/// Waits until every job of the recording is finished; returns them.
pub async fn jobs_done(
    server: &Server,
    t: &TenantFixture,
    recording: &str,
    want: usize,
) -> Vec<Value> {
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
        let finished = jobs
            .iter()
            .filter(|j| j["state"] == "succeeded" || j["state"] == "failed")
            .count();
        if jobs.len() >= want && finished == jobs.len() {
            return jobs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "jobs not done after 240 s: {jobs:?}\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
