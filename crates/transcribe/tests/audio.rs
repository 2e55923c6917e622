//! Probing and decoding real files made by sox and FFmpeg (through PyAV).
//!
//! Needs `sox` on PATH and `PHIVAULT_TEST_AV_PYTHON` pointing at a python with PyAV
//! (`av==18.1.0`), which writes the MP3, AAC/M4A and Opus fixtures sox cannot.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{av_encode, av_encode_with, dominant_frequency, sox, sox_tone};
use phivault_transcribe::{AudioInfo, Error, decode_mono_16k, probe, probe_reader, write_wav_16k};

const LONG_ENOUGH: Duration = Duration::from_secs(60);

fn assert_tone_info(info: &AudioInfo, container: &str, codec: &str, tolerance_ms: u64) {
    assert_eq!(info.container, container, "{info:?}");
    assert_eq!(info.codec, codec, "{info:?}");
    assert_eq!(info.sample_rate, 44_100, "{info:?}");
    assert_eq!(info.channels, 2, "{info:?}");
    assert!(
        info.duration_ms.abs_diff(1500) <= tolerance_ms,
        "duration {} ms, expected 1500 ± {tolerance_ms}",
        info.duration_ms
    );
}

/// 1.5 s of 44.1 kHz stereo 440 Hz must come out as 24000 ± `tolerance` samples of 440 Hz.
fn assert_tone_decodes(path: &Path, tolerance: usize) {
    let samples = decode_mono_16k(path, LONG_ENOUGH).unwrap();
    assert!(
        samples.len().abs_diff(24_000) <= tolerance,
        "{} samples, expected 24000 ± {tolerance}",
        samples.len()
    );
    let freq = dominant_frequency(&samples, 16_000);
    assert!((freq - 440.0).abs() < 3.0, "dominant frequency {freq} Hz");
    let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    // sox's synth writes −3 dBFS (0.705) in both channels; their average keeps that level.
    assert!((0.65..=0.76).contains(&peak), "peak {peak}");
}

#[test]
fn wav_probes_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "wav");
    assert_tone_info(&probe(&wav).unwrap(), "wave", "pcm_s16le", 1);
    assert_tone_decodes(&wav, 1);
}

#[test]
fn flac_probes_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let flac = sox_tone(dir.path(), "flac");
    assert_tone_info(&probe(&flac).unwrap(), "flac", "flac", 1);
    assert_tone_decodes(&flac, 1);
}

#[test]
fn ogg_vorbis_probes_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let ogg = sox_tone(dir.path(), "ogg");
    assert_tone_info(&probe(&ogg).unwrap(), "ogg", "vorbis", 1);
    assert_tone_decodes(&ogg, 1);
}

#[test]
fn mp3_probes_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "wav");
    let mp3 = dir.path().join("tone.mp3");
    av_encode(&wav, &mp3, "libmp3lame");
    // LAME writes its encoder delay and padding in the Xing/LAME header; symphonia trims
    // them, so the duration is exact.
    assert_tone_info(&probe(&mp3).unwrap(), "mp3", "mp3", 2);
    assert_tone_decodes(&mp3, 50);
}

#[test]
fn m4a_aac_probes_and_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "wav");
    let m4a = dir.path().join("tone.m4a");
    av_encode(&wav, &m4a, "aac");
    // symphonia's MP4 reader is not gapless: AAC's 1024 priming frames and the padding of
    // the last 1024-frame packet stay in, up to 2047 frames (46 ms, 743 samples at 16 kHz).
    assert_tone_info(&probe(&m4a).unwrap(), "isomp4", "aac", 47);
    assert_tone_decodes(&m4a, 743);
}

#[test]
fn ogg_opus_is_refused_as_unsupported_codec() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "wav");
    let opus = dir.path().join("tone.opus");
    av_encode(&wav, &opus, "libopus");
    let err = probe(&opus).unwrap_err();
    assert_eq!(err.code(), "unsupported_codec");
    assert_eq!(err.to_string(), "the audio codec (opus) is not supported");
    assert_eq!(
        decode_mono_16k(&opus, LONG_ENOUGH).unwrap_err().code(),
        "unsupported_codec"
    );
}

#[test]
fn mono_16k_input_passes_through_unchanged_in_length() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("speechband.wav");
    sox(&[
        "-n",
        "-r",
        "16000",
        "-c",
        "1",
        wav.to_str().unwrap(),
        "synth",
        "2",
        "sine",
        "300",
    ]);
    let info = probe(&wav).unwrap();
    assert_eq!(
        (info.sample_rate, info.channels, info.duration_ms),
        (16_000, 1, 2000)
    );
    let samples = decode_mono_16k(&wav, LONG_ENOUGH).unwrap();
    assert_eq!(samples.len(), 32_000);
    assert!((dominant_frequency(&samples, 16_000) - 300.0).abs() < 3.0);
}

#[test]
fn other_rates_resample_to_the_right_length() {
    let dir = tempfile::tempdir().unwrap();
    for rate in ["8000", "22050", "48000", "96000"] {
        let wav = dir.path().join(format!("r{rate}.wav"));
        sox(&[
            "-n",
            "-r",
            rate,
            "-c",
            "1",
            wav.to_str().unwrap(),
            "synth",
            "1",
            "sine",
            "1000",
        ]);
        let samples = decode_mono_16k(&wav, LONG_ENOUGH).unwrap();
        assert!(
            samples.len().abs_diff(16_000) <= 1,
            "{rate}: {}",
            samples.len()
        );
        let freq = dominant_frequency(&samples, 16_000);
        assert!((freq - 1000.0).abs() < 5.0, "{rate}: {freq} Hz");
    }
}

#[test]
fn downsampling_filters_out_what_16k_cannot_hold() {
    // A 12 kHz tone is above the 8 kHz Nyquist limit of the output: a real anti-aliasing
    // filter removes it; naive decimation would fold it to 4 kHz at full strength.
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("high.wav");
    sox(&[
        "-n",
        "-r",
        "48000",
        "-c",
        "1",
        wav.to_str().unwrap(),
        "synth",
        "1",
        "sine",
        "12000",
    ]);
    let samples = decode_mono_16k(&wav, LONG_ENOUGH).unwrap();
    let rms = (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt();
    assert!(rms < 0.01, "aliased energy left: rms {rms}");
}

#[test]
fn too_long_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let flac = sox_tone(dir.path(), "flac");
    let err = decode_mono_16k(&flac, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.code(), "audio_too_long");
    assert_eq!(err.to_string(), "the audio is longer than the limit of 1 s");
    // A WAV whose header promises more than it holds is measured by what it holds.
    let wav = sox_tone(dir.path(), "wav");
    let bytes = std::fs::read(&wav).unwrap();
    let cut = dir.path().join("cut.wav");
    std::fs::write(&cut, &bytes[..44 + 4 * 44_100 * 9 / 10]).unwrap();
    let samples = decode_mono_16k(&cut, Duration::from_secs(1)).unwrap();
    assert!(samples.len().abs_diff(14_400) <= 1, "{}", samples.len());
}

#[test]
fn empty_and_unknown_inputs_have_distinct_codes() {
    let dir = tempfile::tempdir().unwrap();
    let code = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        probe(&path).unwrap_err().code()
    };
    assert_eq!(code("empty.wav", b""), "empty_audio");
    let missing: Error = probe(&dir.path().join("missing.wav")).unwrap_err();
    assert_eq!(missing.code(), "io_error");
    assert_eq!(
        code(
            "notes.txt",
            "synthetic: not audio at all\n".repeat(100).as_bytes()
        ),
        "unsupported_format"
    );
    // A valid WAV header with no samples.
    let silent = dir.path().join("zero.wav");
    sox(&[
        "-n",
        "-r",
        "16000",
        "-c",
        "1",
        silent.to_str().unwrap(),
        "trim",
        "0",
        "0",
    ]);
    assert_eq!(probe(&silent).unwrap_err().code(), "empty_audio");
    // The RIFF/WAVE header alone, cut before the format chunk ends.
    let wav = sox_tone(dir.path(), "wav");
    let header = std::fs::read(&wav).unwrap();
    assert_eq!(code("cut-header.wav", &header[..30]), "corrupt_audio");
}

#[test]
fn truncated_wav_reports_the_real_duration() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "wav");
    let bytes = std::fs::read(&wav).unwrap();
    // Keep the header and 0.5 s of 16-bit stereo frames; the header still says 1.5 s.
    let cut = dir.path().join("cut.wav");
    std::fs::write(&cut, &bytes[..44 + 4 * 22_050]).unwrap();
    let info = probe(&cut).unwrap();
    assert_eq!(info.duration_ms, 500);
}

#[test]
fn damaged_flac_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let flac = sox_tone(dir.path(), "flac");
    let mut bytes = std::fs::read(&flac).unwrap();
    // Scribble over a stretch in the middle: frames there fail their CRC.
    let mid = bytes.len() / 2;
    for (i, b) in bytes[mid..mid + 2000].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    let damaged = dir.path().join("damaged.flac");
    std::fs::write(&damaged, &bytes).unwrap();
    assert_eq!(probe(&damaged).unwrap_err().code(), "corrupt_audio");
    assert_eq!(
        decode_mono_16k(&damaged, LONG_ENOUGH).unwrap_err().code(),
        "corrupt_audio"
    );
}

#[test]
fn written_wav_is_16k_mono_pcm_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<f32> = (0..16_000)
        .map(|i| (i as f32 * 2.0 * std::f32::consts::PI * 250.0 / 16_000.0).sin() * 0.5)
        .chain([2.0, -2.0, f32::NAN])
        .collect();
    let path = dir.path().join("out.wav");
    write_wav_16k(&samples, &path).unwrap();
    let mut reader = hound::WavReader::open(&path).unwrap();
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 16_000, 16)
    );
    let back: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    assert_eq!(back.len(), samples.len());
    for (orig, got) in samples[..16_000].iter().zip(&back) {
        assert!((orig * 32767.0 - f32::from(*got)).abs() <= 1.0);
    }
    assert_eq!(&back[16_000..], &[32767, -32767, 0]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // And it reads back through the decoder as the same audio.
    let decoded = decode_mono_16k(&path, LONG_ENOUGH).unwrap();
    assert_eq!(decoded.len(), samples.len());
    assert!((decoded[4] - samples[4]).abs() < 1e-3);
}

#[test]
fn streaming_probe_agrees_with_file_probe() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sox_tone(dir.path(), "wav");
    let mut files = vec![
        wav.clone(),
        sox_tone(dir.path(), "flac"),
        sox_tone(dir.path(), "ogg"),
    ];
    for (name, codec, movflags) in [
        ("tone.mp3", "libmp3lame", ""),
        ("faststart.m4a", "aac", "faststart"),
        ("tone.opus", "libopus", ""),
    ] {
        let dst = dir.path().join(name);
        av_encode_with(&wav, &dst, codec, movflags);
        files.push(dst);
    }
    let streamed = |path: &Path| probe_reader(Box::new(std::fs::File::open(path).unwrap()));
    for path in &files {
        match (streamed(path), probe(path)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.code(), b.code()),
            (a, b) => panic!("{}: streamed {a:?}, from file {b:?}", path.display()),
        }
    }
    // The index-last layout FFmpeg writes by default needs seeking.
    let index_last = dir.path().join("index-last.m4a");
    av_encode(&wav, &index_last, "aac");
    assert_eq!(
        streamed(&index_last).unwrap_err().code(),
        "unsupported_format"
    );
    assert_eq!(probe(&index_last).unwrap().codec, "aac");
    // Cut in half, it is damage when read from a file.
    let bytes = std::fs::read(&index_last).unwrap();
    let cut = dir.path().join("cut.m4a");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(probe(&cut).unwrap_err().code(), "corrupt_audio");

    assert_eq!(
        probe_reader(Box::new(std::io::empty())).unwrap_err().code(),
        "empty_audio"
    );
    assert_eq!(
        probe_reader(Box::new(&b"synthetic: not audio"[..]))
            .unwrap_err()
            .code(),
        "unsupported_format"
    );
}
