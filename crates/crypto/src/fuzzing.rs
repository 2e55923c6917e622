//! Checks shared by the cargo-fuzz targets in `crates/crypto/fuzz` and the corpus replay
//! test (`tests/fuzz_corpus.rs`), so both run exactly the same code.
//!
//! Each check feeds arbitrary bytes to a parser or opener with a fixed key and binding.
//! It must return an error for anything that is not a valid ciphertext, and must never
//! panic; a check panics itself only when an accepted input breaks an invariant of the
//! format (a bug the fuzzer should report). Not part of the crate's API.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use phivault_store::TenantId;
use uuid::Uuid;

use crate::aead::TAG;
use crate::envelope::{self, Envelope};
use crate::stream::{self, StreamReader};
use crate::{Binding, KeyRef, Result, SecretKey};

/// The fixed key every check opens with. A test key, never used for data.
pub fn key() -> SecretKey {
    SecretKey::from_bytes([0x5a; 32])
}

/// The key reference the fixed key is named by.
pub fn key_ref() -> KeyRef {
    KeyRef {
        id: Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_f022),
        version: 1,
    }
}

/// The fixed binding every check opens with.
pub fn binding() -> Binding<'static> {
    Binding {
        tenant: TenantId::from_uuid(Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_7e17)),
        kind: "recording",
        object: Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0b1e),
        field: "",
    }
}

/// Parses `data` as an envelope and opens it with the fixed key and binding.
///
/// Returns the plaintext length if it opens, or the error. Panics only if an accepted
/// input breaks the format's invariants.
pub fn check_envelope(data: &[u8]) -> Result<usize> {
    let parsed = Envelope::parse(data);
    if let Ok(env) = &parsed {
        assert!(
            data.len() >= envelope::MIN_LEN,
            "parsed a too-short envelope"
        );
        assert_eq!(data[..4], envelope::MAGIC, "parsed a bad magic");
        assert_eq!(env.body().len(), data.len() - envelope::HEADER_LEN);
    }
    let opened = envelope::open(&key(), key_ref(), &binding(), data);
    if let Ok(plain) = &opened {
        assert!(parsed.is_ok(), "opened an envelope the parser rejects");
        assert_eq!(plain.len() + envelope::MIN_LEN, data.len());
    }
    opened.map(|p| p.len())
}

/// Reads `data` as a segmented stream with the fixed key and binding, chunk by chunk to
/// the end.
///
/// Returns the plaintext length if the whole stream authenticates, or the first error.
/// Panics only if an accepted input breaks the format's invariants.
pub fn check_stream(data: &[u8]) -> Result<u64> {
    block_on(async {
        let (key, key_ref, binding) = (key(), key_ref(), binding());
        let mut reader = StreamReader::new(data, &key, key_ref, &binding).await?;
        let header: &[u8; stream::HEADER_LEN] = data[..stream::HEADER_LEN]
            .try_into()
            .expect("the reader accepted a short header");
        let segment = stream::StreamHeader::parse(header)
            .expect("the reader accepted a header the parser rejects")
            .segment_size as usize;
        let (mut plain, mut segments, mut short_seen) = (0u64, 0u64, false);
        while let Some(chunk) = reader.next_chunk().await? {
            assert!(
                chunk.len() <= segment,
                "a segment longer than the header says"
            );
            assert!(!short_seen, "a segment after a short one");
            short_seen = chunk.len() < segment;
            plain += chunk.len() as u64;
            segments += 1;
        }
        // An accepted stream is exactly its header, its segments and one tag each.
        assert!(segments >= 1, "a stream with no segment");
        assert_eq!(
            stream::HEADER_LEN as u64 + plain + TAG as u64 * segments,
            data.len() as u64,
            "accepted bytes do not add up"
        );
        Ok(plain)
    })
}

/// Drives a future that never waits: the stream is read from a byte slice, whose reads
/// are always ready, so no runtime is needed (and none is built per fuzz input).
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("an in-memory stream read returned Pending"),
    }
}
