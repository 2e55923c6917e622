//! Hostile input: cut, scribbled-on and forged files must give `Ok` or a coded `Err`,
//! never a panic, and in bounded time, whether read from a file or as a stream.
//!
//! Needs `sox` and `PHIVAULT_TEST_AV_PYTHON` (see tests/audio.rs).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{av_encode, sox_tone};
use phivault_transcribe::{decode_mono_16k, probe, probe_reader};
use proptest::prelude::*;

/// Generous for 1.5 s files on a loaded 2-core machine; a decoder stuck in a loop blows it.
const TIME_LIMIT: Duration = Duration::from_secs(10);
const CODES: [&str; 6] = [
    "empty_audio",
    "unsupported_format",
    "unsupported_codec",
    "corrupt_audio",
    "audio_too_long",
    "io_error",
];

struct Seeds {
    _dir: tempfile::TempDir,
    files: Vec<(String, Vec<u8>)>,
}

fn seeds() -> Seeds {
    let dir = tempfile::tempdir().unwrap();
    let mut paths: Vec<PathBuf> = ["wav", "flac", "ogg"]
        .iter()
        .map(|ext| {
            let sub = dir.path().join(ext);
            std::fs::create_dir(&sub).unwrap();
            sox_tone(&sub, ext)
        })
        .collect();
    for (name, codec) in [
        ("tone.mp3", "libmp3lame"),
        ("tone.m4a", "aac"),
        ("tone.opus", "libopus"),
    ] {
        let dst = dir.path().join(name);
        av_encode(&paths[0], &dst, codec);
        paths.push(dst);
    }
    let files = paths
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(p).unwrap(),
            )
        })
        .collect();
    Seeds { _dir: dir, files }
}

/// Runs both entry points on `bytes`; checks for a known code and the time bound.
fn check(path: &Path, bytes: &[u8], what: &str) {
    std::fs::write(path, bytes).unwrap();
    let started = Instant::now();
    let probed = probe(path);
    let streamed = probe_reader(Box::new(std::io::Cursor::new(bytes.to_vec())));
    let decoded = decode_mono_16k(path, Duration::from_secs(600));
    let elapsed = started.elapsed();
    assert!(elapsed < TIME_LIMIT, "{what}: took {elapsed:?}");
    for err in [
        probed.as_ref().err(),
        streamed.as_ref().err(),
        decoded.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(CODES.contains(&err.code()), "{what}: unexpected {err:?}");
    }
    if let Ok(samples) = decoded {
        assert!(
            samples.iter().all(|s| s.is_finite()),
            "{what}: non-finite sample"
        );
    }
}

#[test]
fn every_truncation_point_is_handled() {
    let seeds = seeds();
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("case");
    for (name, bytes) in &seeds.files {
        let step = (bytes.len() / 97).max(1);
        let cuts = (0..96.min(bytes.len())).chain((96..bytes.len()).step_by(step));
        for cut in cuts {
            check(&path, &bytes[..cut], &format!("{name} cut at {cut}"));
        }
    }
}

#[test]
fn files_cut_in_half_keep_their_first_half() {
    let seeds = seeds();
    let work = tempfile::tempdir().unwrap();
    for (name, bytes) in &seeds.files {
        let path = work.path().join(format!("half-{name}"));
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let expected_error = match name.rsplit('.').next() {
            // symphonia's Ogg reader reads the last page when it opens a stream; a cut one
            // has none, so the damage is found before the (Opus) codec is.
            Some("ogg" | "opus") => Some("corrupt_audio"),
            // The MP4 index (moov) follows the media data here, so half a file has none.
            Some("m4a") => Some("corrupt_audio"),
            _ => None,
        };
        if let Some(code) = expected_error {
            assert_eq!(probe(&path).unwrap_err().code(), code, "{name}");
            continue;
        }
        let info = probe(&path).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(
            (500..1400).contains(&info.duration_ms),
            "{name}: {} ms",
            info.duration_ms
        );
        let samples = decode_mono_16k(&path, Duration::from_secs(600)).unwrap();
        let expected = info.duration_ms as usize * 16;
        assert!(
            samples.len().abs_diff(expected) <= 32,
            "{name}: {}",
            samples.len()
        );
    }
}

#[test]
fn forged_headers_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("forged");
    // A RIFF/WAVE header whose data chunk claims 4 GiB, a FLAC marker with nothing after
    // it, an ID3 tag that claims to be huge.
    let mut riff = b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x02\x00\x44\xac\x00\x00\x10\xb1\x02\x00\x04\x00\x10\x00data\xff\xff\xff\xff".to_vec();
    riff.extend(std::iter::repeat_n(0u8, 1000));
    check(&path, &riff, "riff claiming 4 GiB");
    check(&path, b"fLaC", "bare flac marker");
    check(&path, b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f", "huge id3");
    check(&path, b"OggS", "bare ogg marker");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_files_never_panic(
        seed in 0usize..6,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..24),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
    ) {
        thread_local! { static SEEDS: Seeds = seeds(); }
        let work = tempfile::tempdir().unwrap();
        let path = work.path().join("case");
        SEEDS.with(|seeds| {
            let (name, original) = &seeds.files[seed];
            let mut bytes = original.clone();
            for (at, value) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *value;
            }
            if do_cut {
                bytes.truncate(cut.index(bytes.len()));
            }
            check(&path, &bytes, &format!("{name} with {} changed bytes", flips.len()));
        });
    }

    #[test]
    fn random_bytes_behind_real_magic_never_panic(
        magic in prop::sample::select(vec![&b"RIFF\x00\x10\x00\x00WAVE"[..], b"fLaC", b"OggS\x00\x02", b"ID3\x03\x00\x00", b"\x00\x00\x00\x20ftypM4A ", b"\xff\xfb\x90\x64"]),
        tail in prop::collection::vec(any::<u8>(), 0..20_000),
    ) {
        let work = tempfile::tempdir().unwrap();
        let path = work.path().join("case");
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&tail);
        check(&path, &bytes, "random bytes behind a magic number");
    }
}
