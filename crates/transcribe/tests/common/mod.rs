//! Fixture helpers shared by the integration tests. All audio is synthetic: sine tones made
//! by sox, and speech synthesized from invented sentences.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs sox with `args`, panicking with its stderr if it fails.
pub fn sox(args: &[&str]) {
    let out = Command::new("sox")
        .args(args)
        .output()
        .expect("sox must be installed (Debian package sox)");
    assert!(
        out.status.success(),
        "sox {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 1.5 s 440 Hz stereo tone at 44.1 kHz (−3 dBFS, sox's synth level), in the format
/// `ext` names; 16-bit where the format has a bit depth.
pub fn sox_tone(dir: &Path, ext: &str) -> PathBuf {
    let path = dir.join(format!("tone.{ext}"));
    let bits: &[&str] = if ext == "ogg" { &[] } else { &["-b", "16"] };
    let mut args = vec!["-n", "-r", "44100", "-c", "2"];
    args.extend_from_slice(bits);
    args.extend_from_slice(&[path.to_str().unwrap(), "synth", "1.5", "sine", "440"]);
    sox(&args);
    path
}

fn python_from_env(var: &str, packages: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "{var} is not set: point it at a python interpreter that has {packages} installed, \
             e.g. `python3 -m venv /tmp/venv && /tmp/venv/bin/pip install {packages} && \
             export {var}=/tmp/venv/bin/python`"
        ),
    }
}

/// Encodes `src` (a WAV) to `dst` with FFmpeg's encoder `codec` through PyAV, for the
/// formats sox cannot write here (MP3, AAC in MP4, Opus in Ogg).
pub fn av_encode(src: &Path, dst: &Path, codec: &str) {
    av_encode_with(src, dst, codec, "")
}

/// As [`av_encode`], with MP4 `movflags` (e.g. "faststart": the index before the media).
pub fn av_encode_with(src: &Path, dst: &Path, codec: &str, movflags: &str) {
    let python = python_from_env("PHIVAULT_TEST_AV_PYTHON", "av==18.1.0");
    const SCRIPT: &str = r#"
import sys, av
src, dst, codec, movflags = sys.argv[1:5]
options = {"movflags": movflags} if movflags else {}
with av.open(src) as inp, av.open(dst, "w", options=options) as out:
    ins = inp.streams.audio[0]
    rate = 48000 if codec == "libopus" else ins.rate
    st = out.add_stream(codec, rate=rate, layout="stereo" if ins.channels == 2 else "mono")
    st.format = st.codec.audio_formats[0].name
    for frame in inp.decode(ins):
        frame.pts = None
        for p in st.encode(frame):
            out.mux(p)
    for p in st.encode(None):
        out.mux(p)
"#;
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .arg(src)
        .arg(dst)
        .arg(codec)
        .arg(movflags)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "PyAV encoding to {codec} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Speaks `text` (synthetic, invented) into a 24 kHz WAV with hibari-tts.
pub fn tts(text: &str, dst: &Path) {
    let python = python_from_env("PHIVAULT_TEST_TTS_PYTHON", "hibari-tts");
    let out = Command::new(&python)
        .args(["-m", "hibari.cli", text, "--seed", "1", "-o"])
        .arg(dst)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(
        out.status.success(),
        "hibari-tts failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Frequency estimated from upward zero crossings, over the middle 80 % of `samples`.
pub fn dominant_frequency(samples: &[f32], rate: u32) -> f64 {
    let start = samples.len() / 10;
    let end = samples.len() - samples.len() / 10;
    let window = &samples[start..end];
    let crossings = window
        .windows(2)
        .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
        .count();
    crossings as f64 * f64::from(rate) / window.len() as f64
}
