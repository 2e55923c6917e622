//! PocketSphinx on synthetic speech.
//!
//! Needs Debian's `pocketsphinx` and `pocketsphinx-en-us`, `sox`, and
//! `PHIVAULT_TEST_TTS_PYTHON` pointing at a python with `hibari-tts` installed. The speech is
//! synthesized from invented sentences (no real patient), then goes through this crate's own
//! decode → 16 kHz → WAV path, as an upload would.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{sox, tts};
use phivault_transcribe::{
    PocketSphinx, PocketSphinxConfig, Transcriber, Transcript, decode_mono_16k, probe,
    write_wav_16k,
};

fn engine() -> PocketSphinx {
    PocketSphinx::detect(&PocketSphinxConfig::default())
        .expect("pocketsphinx is not installed: apt-get install pocketsphinx pocketsphinx-en-us")
}

/// Decodes `src` the way the server would and writes the engine's input; returns its path
/// and duration in ms.
fn prepare(src: &Path, dir: &Path) -> (PathBuf, u64) {
    let samples = decode_mono_16k(src, Duration::from_secs(600)).unwrap();
    let wav = dir.join("engine-input.wav");
    write_wav_16k(&samples, &wav).unwrap();
    (wav, samples.len() as u64 * 1000 / 16_000)
}

async fn transcribe_timed(wav: &Path, duration_ms: u64) -> Transcript {
    let started = Instant::now();
    let transcript = engine().transcribe(wav).await.unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "pocketsphinx: {duration_ms} ms of audio in {} ms, real-time factor {:.2}",
        elapsed.as_millis(),
        elapsed.as_secs_f64() * 1000.0 / duration_ms as f64
    );
    transcript
}

fn assert_times_sane(transcript: &Transcript, duration_ms: u64) {
    let mut last_end = 0;
    for segment in &transcript.segments {
        assert!(segment.start_ms >= last_end, "{:?}", transcript.segments);
        assert!(
            segment.start_ms < segment.end_ms,
            "{:?}",
            transcript.segments
        );
        assert!(segment.end_ms <= duration_ms, "{:?}", transcript.segments);
        last_end = segment.end_ms;
    }
}

#[tokio::test]
async fn a_clinical_sentence_comes_back_word_for_word() {
    let dir = tempfile::tempdir().unwrap();
    let speech = dir.path().join("speech-24k.wav");
    tts("The patient reports chest pain for two days.", &speech);
    assert_eq!(probe(&speech).unwrap().sample_rate, 24_000);
    let (wav, duration_ms) = prepare(&speech, dir.path());

    let transcript = transcribe_timed(&wav, duration_ms).await;
    assert_eq!(transcript.engine, "pocketsphinx");
    assert_eq!(
        transcript.model,
        "cmusphinx-en-us (Debian pocketsphinx-en-us)"
    );
    assert_eq!(
        transcript.text().expose(),
        "the patient reports chest pain for two days"
    );
    assert_times_sane(&transcript, duration_ms);
    // The words start after TTS's leading silence and end before its trailing silence.
    let first = &transcript.segments[0];
    assert!(
        first.start_ms > 0 && first.end_ms + 100 < duration_ms,
        "{first:?}"
    );
}

#[tokio::test]
async fn a_pause_splits_utterances_with_their_own_times() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.wav");
    let second = dir.path().join("second.wav");
    tts("The patient reports chest pain for two days.", &first);
    tts("She has no fever and no cough.", &second);
    // Two seconds of silence between the sentences, and stereo 44.1 kHz, like a phone app.
    let joined = dir.path().join("joined.wav");
    let pause = dir.path().join("pause.wav");
    sox(&[
        "-n",
        "-r",
        "24000",
        "-c",
        "1",
        pause.to_str().unwrap(),
        "trim",
        "0",
        "2",
    ]);
    sox(&[
        first.to_str().unwrap(),
        pause.to_str().unwrap(),
        second.to_str().unwrap(),
        "-r",
        "44100",
        "-c",
        "2",
        joined.to_str().unwrap(),
    ]);
    let first_ms = probe(&first).unwrap().duration_ms;
    let (wav, duration_ms) = prepare(&joined, dir.path());

    let transcript = transcribe_timed(&wav, duration_ms).await;
    let texts: Vec<&str> = transcript
        .segments
        .iter()
        .map(|s| s.text.expose())
        .collect();
    assert_eq!(
        texts,
        [
            "the patient reports chest pain for two days",
            "she has no fever and no cough"
        ]
    );
    assert_times_sane(&transcript, duration_ms);
    // The second utterance starts after the first sentence and the pause.
    assert!(
        transcript.segments[1].start_ms > first_ms + 2000,
        "{:?}",
        transcript.segments
    );
}

#[tokio::test]
async fn input_that_is_not_16k_mono_wav_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tone = common::sox_tone(dir.path(), "wav");
    let err = engine().transcribe(&tone).await.unwrap_err();
    assert_eq!(err.code(), "unsupported_format");
}

#[tokio::test]
async fn a_broken_model_fails_with_engine_failed() {
    // A model directory with the right file names but garbage inside: pocketsphinx starts,
    // fails to load it and exits non-zero.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("en-us");
    std::fs::create_dir_all(model.join("en-us")).unwrap();
    for file in ["en-us/mdef", "en-us.lm.bin", "cmudict-en-us.dict"] {
        std::fs::write(model.join(file), b"synthetic garbage, not a model\n").unwrap();
    }
    let engine = PocketSphinx::new(&PocketSphinxConfig {
        model_dir: model.clone(),
        ..Default::default()
    })
    .unwrap();
    assert!(engine.model().starts_with("cmusphinx-en-us ("));
    let wav = dir.path().join("in.wav");
    write_wav_16k(&vec![0.0; 16_000], &wav).unwrap();
    let err = engine.transcribe(&wav).await.unwrap_err();
    assert_eq!(err.code(), "engine_failed");
    assert!(!err.to_string().contains(dir.path().to_str().unwrap()));
}
