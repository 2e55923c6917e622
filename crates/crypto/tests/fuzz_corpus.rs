//! Replays the seed corpus of the fuzz targets (`fuzz/corpus/envelope` and
//! `fuzz/corpus/stream`) through the same checks the targets run, so every input the
//! corpus holds is checked on every `cargo test`, without a fuzzer.
//!
//! File names say what to expect: `ok-*` must open with the fixed key and binding of
//! [`phivault_crypto::fuzzing`], `bad-*` must be rejected with an error, and any other
//! file (an input a fuzzer found, kept as a regression) must only not panic.
//!
//! The `ok-*` and `bad-*` seeds are written by the ignored test below:
//!
//! ```text
//! cargo test -p phivault-crypto --test fuzz_corpus -- --ignored regenerate_seed_corpus
//! ```

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use phivault_crypto::envelope;
use phivault_crypto::fuzzing::{binding, check_envelope, check_stream, key, key_ref};
use phivault_crypto::stream::{self, StreamWriter};
use phivault_crypto::{Binding, KeyRef, SecretKey};
use phivault_store::TenantId;
use uuid::Uuid;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Runs `check` over every file of the target's corpus and returns the failures.
fn replay<T>(target: &str, check: fn(&[u8]) -> phivault_crypto::Result<T>) -> Vec<String> {
    let dir = corpus_dir(target);
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let (mut ok, mut bad) = (0, 0);
    let mut failures = Vec::new();
    for path in &entries {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let data = fs::read(path).unwrap();
        match catch_unwind(AssertUnwindSafe(|| check(&data))) {
            Err(_) => failures.push(format!("{target}/{name}: panicked")),
            Ok(Ok(_)) if name.starts_with("bad-") => {
                failures.push(format!("{target}/{name}: opened, expected an error"))
            }
            Ok(Err(e)) if name.starts_with("ok-") => {
                failures.push(format!("{target}/{name}: {e}, expected to open"))
            }
            Ok(_) => {}
        }
        ok += usize::from(name.starts_with("ok-"));
        bad += usize::from(name.starts_with("bad-"));
    }
    assert!(
        ok > 0 && bad > 0,
        "{}: the seed corpus is missing ({ok} ok-, {bad} bad- files)",
        dir.display()
    );
    failures
}

#[test]
fn envelope_corpus_replays() {
    let failures = replay("envelope", check_envelope);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn stream_corpus_replays() {
    let failures = replay("stream", check_stream);
    assert!(failures.is_empty(), "{failures:#?}");
}

fn other_binding() -> Binding<'static> {
    Binding {
        tenant: TenantId::from_uuid(Uuid::from_u128(1)),
        ..binding()
    }
}

fn other_key_ref() -> KeyRef {
    KeyRef {
        version: 2,
        ..key_ref()
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

fn flip(mut v: Vec<u8>, at: usize) -> Vec<u8> {
    v[at] ^= 0x01;
    v
}

fn envelope_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (k, kr, b) = (key(), key_ref(), binding());
    let seal = |plain: &[u8]| envelope::seal(&k, kr, &b, plain).unwrap();
    let short = seal(b"SYN-12345");
    let mut other_magic = short.clone();
    other_magic[..4].copy_from_slice(b"PVS1");
    let mut version = short.clone();
    version[4] = 2;
    let mut algorithm = short.clone();
    algorithm[5] = 2;
    vec![
        ("ok-empty", seal(b"")),
        ("ok-short", short.clone()),
        ("ok-1000", seal(&pattern(1000))),
        ("bad-empty", Vec::new()),
        ("bad-garbage", pattern(80)),
        ("bad-truncated-header", short[..20].to_vec()),
        ("bad-header-only", short[..envelope::HEADER_LEN].to_vec()),
        ("bad-truncated-tag", short[..short.len() - 1].to_vec()),
        ("bad-appended", [short.as_slice(), b"x"].concat()),
        (
            "bad-flipped-body",
            flip(short.clone(), envelope::HEADER_LEN),
        ),
        ("bad-flipped-tag", flip(short.clone(), short.len() - 1)),
        ("bad-flipped-nonce", flip(short.clone(), 30)),
        ("bad-magic", other_magic),
        ("bad-version", version),
        ("bad-algorithm", algorithm),
        (
            "bad-other-key-ref",
            envelope::seal(&k, other_key_ref(), &b, b"SYN-12345").unwrap(),
        ),
        (
            "bad-other-key",
            envelope::seal(&SecretKey::from_bytes([7; 32]), kr, &b, b"SYN-12345").unwrap(),
        ),
        (
            "bad-other-binding",
            envelope::seal(&k, kr, &other_binding(), b"SYN-12345").unwrap(),
        ),
    ]
}

async fn seal_stream(
    key_ref: KeyRef,
    binding: &Binding<'_>,
    plain: &[u8],
    segment: u32,
) -> Vec<u8> {
    let k = key();
    let mut w = StreamWriter::new(Vec::new(), &k, key_ref, binding, segment)
        .await
        .unwrap();
    for c in plain.chunks(7) {
        w.write(c).await.unwrap();
    }
    w.finish().await.unwrap().0
}

async fn stream_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (kr, b) = (key_ref(), binding());
    let multi = seal_stream(kr, &b, &pattern(100), 16).await;
    let seg = 16 + 16;
    let h = stream::HEADER_LEN;
    let mut swapped = multi.clone();
    swapped[h..h + seg].copy_from_slice(&multi[h + seg..h + 2 * seg]);
    swapped[h + seg..h + 2 * seg].copy_from_slice(&multi[h..h + seg]);
    let mut duplicated = multi[..h + seg].to_vec();
    duplicated.extend_from_slice(&multi[h..]);
    let with_segment = |size: u32| {
        let mut v = multi.clone();
        v[26..30].copy_from_slice(&size.to_be_bytes());
        v
    };
    vec![
        ("ok-empty", seal_stream(kr, &b, b"", 16).await),
        (
            "ok-partial-segment",
            seal_stream(kr, &b, &pattern(10), 16).await,
        ),
        (
            "ok-full-last-segment",
            seal_stream(kr, &b, &pattern(32), 16).await,
        ),
        ("ok-multi", multi.clone()),
        (
            "ok-default-segment",
            seal_stream(kr, &b, &pattern(300), stream::DEFAULT_SEGMENT).await,
        ),
        ("bad-empty", Vec::new()),
        ("bad-garbage", pattern(120)),
        ("bad-truncated-header", multi[..20].to_vec()),
        ("bad-header-only", multi[..h].to_vec()),
        ("bad-cut-at-boundary", multi[..h + 2 * seg].to_vec()),
        ("bad-cut-mid-segment", multi[..h + seg + 5].to_vec()),
        ("bad-cut-last-tag", multi[..multi.len() - 1].to_vec()),
        ("bad-appended", [multi.as_slice(), &[0u8; 20]].concat()),
        ("bad-swapped-segments", swapped),
        ("bad-duplicated-segment", duplicated),
        ("bad-flipped-segment", flip(multi.clone(), h + seg + 3)),
        ("bad-flipped-header", flip(multi.clone(), 33)),
        ("bad-segment-size-zero", with_segment(0)),
        ("bad-segment-size-huge", with_segment(u32::MAX)),
        ("bad-segment-size-changed", with_segment(32)),
        (
            "bad-other-key-ref",
            seal_stream(other_key_ref(), &b, &pattern(100), 16).await,
        ),
        (
            "bad-other-binding",
            seal_stream(kr, &other_binding(), &pattern(100), 16).await,
        ),
        (
            "bad-envelope",
            envelope::seal(&key(), kr, &b, &pattern(40)).unwrap(),
        ),
    ]
}

fn write_seeds(target: &str, seeds: Vec<(&'static str, Vec<u8>)>) {
    let dir = corpus_dir(target);
    fs::create_dir_all(&dir).unwrap();
    // Replace the generated seeds; keep any other file (fuzzer-found regressions).
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("ok-") || name.starts_with("bad-") {
            fs::remove_file(&path).unwrap();
        }
    }
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Writes the `ok-*` and `bad-*` seeds. Ignored: run it by hand after a format change.
#[tokio::test]
#[ignore = "writes the seed corpus into the source tree"]
async fn regenerate_seed_corpus() {
    write_seeds("envelope", envelope_seeds());
    write_seeds("stream", stream_seeds().await);
    assert!(replay("envelope", check_envelope).is_empty());
    assert!(replay("stream", check_stream).is_empty());
}
