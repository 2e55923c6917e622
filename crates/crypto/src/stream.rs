//! Segmented streaming AEAD for large objects (audio).
//!
//! ```text
//! header (37 bytes): magic "PVS1" | version 1 | algorithm 1 | key id (16) |
//!                    key version (u32 BE) | segment size (u32 BE) | nonce prefix (7)
//! then segments:     ciphertext (segment size bytes; the last may be shorter, even 0) | tag (16)
//! ```
//!
//! Segment `i` is sealed with nonce `prefix(7) | i (u32 BE) | last (1 byte: 0 or 1)` and
//! associated data `header | binding`. The counter in the nonce detects reordering,
//! duplication and removal of segments; the last flag detects truncation (a stream that
//! ends on a segment not sealed as last fails) and appended data (a segment sealed as
//! last that is not at the end fails). Memory is one segment, whatever the object size.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use crate::aead::{self, TAG};
use crate::secret::random;
use crate::{Binding, CryptoError, KeyRef, Result, SecretKey};

/// The magic bytes of a stream.
pub const MAGIC: [u8; 4] = *b"PVS1";
/// Header length.
pub const HEADER_LEN: usize = 37;
/// Default plaintext bytes per segment.
pub const DEFAULT_SEGMENT: u32 = 64 * 1024;
const MIN_SEGMENT: u32 = 16;
const MAX_SEGMENT: u32 = 16 * 1024 * 1024;

/// A parsed stream header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamHeader {
    /// The data key that sealed the stream.
    pub key: KeyRef,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
    nonce_prefix: [u8; 7],
}

impl StreamHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&MAGIC);
        h[4] = 1;
        h[5] = 1;
        h[6..22].copy_from_slice(self.key.id.as_bytes());
        h[22..26].copy_from_slice(&self.key.version.to_be_bytes());
        h[26..30].copy_from_slice(&self.segment_size.to_be_bytes());
        h[30..37].copy_from_slice(&self.nonce_prefix);
        h
    }

    /// Parses a header.
    ///
    /// # Errors
    /// [`CryptoError::Stream`] for a bad magic, version, algorithm or segment size.
    pub fn parse(h: &[u8; HEADER_LEN]) -> Result<Self> {
        if h[..4] != MAGIC {
            return Err(CryptoError::Stream("not a phivault stream (bad magic)"));
        }
        if h[4] != 1 {
            return Err(CryptoError::Stream("unsupported stream version"));
        }
        if h[5] != 1 {
            return Err(CryptoError::Stream("unsupported stream algorithm"));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&h[6..22]);
        let version = u32::from_be_bytes([h[22], h[23], h[24], h[25]]);
        let segment_size = u32::from_be_bytes([h[26], h[27], h[28], h[29]]);
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&segment_size) {
            return Err(CryptoError::Stream("segment size out of range"));
        }
        let mut nonce_prefix = [0u8; 7];
        nonce_prefix.copy_from_slice(&h[30..37]);
        Ok(StreamHeader {
            key: KeyRef {
                id: Uuid::from_bytes(id),
                version,
            },
            segment_size,
            nonce_prefix,
        })
    }
}

struct Segments {
    cipher: aes_gcm::Aes256Gcm,
    aad: Vec<u8>,
    prefix: [u8; 7],
    counter: u32,
}

impl Segments {
    fn new(key: &SecretKey, header: &StreamHeader, binding: &Binding<'_>) -> Self {
        let mut aad = header.encode().to_vec();
        aad.extend_from_slice(&binding.encode());
        Segments {
            cipher: aead::cipher(key),
            aad,
            prefix: header.nonce_prefix,
            counter: 0,
        }
    }

    fn nonce(&self, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..7].copy_from_slice(&self.prefix);
        n[7..11].copy_from_slice(&self.counter.to_be_bytes());
        n[11] = u8::from(last);
        n
    }

    fn advance(&mut self) -> Result<()> {
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(CryptoError::Stream("too many segments"))?;
        Ok(())
    }

    fn seal(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<()> {
        let nonce = self.nonce(last);
        aead::seal_in_place(&self.cipher, &nonce, &self.aad, buf)?;
        self.advance()
    }

    fn open(&mut self, buf: &mut Vec<u8>, last: bool) -> Result<()> {
        let nonce = self.nonce(last);
        aead::open_in_place(&self.cipher, &nonce, &self.aad, buf)?;
        self.advance()
    }
}

/// Encrypts a stream as it is written: feed plaintext with [`StreamWriter::write`], then
/// call [`StreamWriter::finish`]. Holds at most one segment of plaintext.
pub struct StreamWriter<W> {
    inner: W,
    segments: Segments,
    segment_size: usize,
    pending: Vec<u8>,
    plaintext_len: u64,
}

impl<W: AsyncWrite + Unpin> StreamWriter<W> {
    /// Writes the header to `inner` and prepares to seal under `key` (named `key_ref`),
    /// bound to `binding`.
    pub async fn new(
        mut inner: W,
        key: &SecretKey,
        key_ref: KeyRef,
        binding: &Binding<'_>,
        segment_size: u32,
    ) -> Result<Self> {
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&segment_size) {
            return Err(CryptoError::Stream("segment size out of range"));
        }
        let header = StreamHeader {
            key: key_ref,
            segment_size,
            nonce_prefix: random::<7>()?,
        };
        inner.write_all(&header.encode()).await?;
        Ok(StreamWriter {
            inner,
            segments: Segments::new(key, &header, binding),
            segment_size: segment_size as usize,
            pending: Vec::with_capacity(segment_size as usize + TAG),
            plaintext_len: 0,
        })
    }

    /// Encrypts and writes every full segment `data` completes. The last segment is held
    /// back until [`StreamWriter::finish`], which seals it as last.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        self.plaintext_len += data.len() as u64;
        while !data.is_empty() {
            if self.pending.len() == self.segment_size {
                // More data follows, so the pending full segment is not the last.
                self.flush_pending(false).await?;
            }
            let take = (self.segment_size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    async fn flush_pending(&mut self, last: bool) -> Result<()> {
        self.segments.seal(&mut self.pending, last)?;
        self.inner.write_all(&self.pending).await?;
        self.pending.clear();
        Ok(())
    }

    /// Seals the final segment, flushes, and returns the inner writer and the plaintext
    /// length.
    pub async fn finish(mut self) -> Result<(W, u64)> {
        self.flush_pending(true).await?;
        self.inner.flush().await?;
        Ok((self.inner, self.plaintext_len))
    }
}

/// Decrypts a stream segment by segment; nothing is returned from a segment before its
/// tag is checked. Holds at most one segment.
pub struct StreamReader<R> {
    inner: R,
    segments: Segments,
    segment_size: usize,
    carry: Option<u8>,
    done: bool,
}

impl<R: AsyncRead + Unpin> StreamReader<R> {
    /// Reads the header and checks it names `key_ref`.
    pub async fn new(
        mut inner: R,
        key: &SecretKey,
        key_ref: KeyRef,
        binding: &Binding<'_>,
    ) -> Result<Self> {
        let mut h = [0u8; HEADER_LEN];
        inner.read_exact(&mut h).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => CryptoError::Stream("truncated header"),
            _ => CryptoError::Io(e),
        })?;
        let header = StreamHeader::parse(&h)?;
        if header.key != key_ref {
            return Err(CryptoError::WrongKey {
                expected: key_ref.to_string(),
                found: header.key.to_string(),
            });
        }
        Ok(StreamReader {
            inner,
            segments: Segments::new(key, &header, binding),
            segment_size: header.segment_size as usize,
            carry: None,
            done: false,
        })
    }

    /// The next authenticated plaintext segment, or `None` after the last.
    ///
    /// # Errors
    /// [`CryptoError::Stream`] if the stream ends without its last segment;
    /// [`CryptoError::Decrypt`] if any segment was altered, reordered or duplicated.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let full = self.segment_size + TAG;
        let mut buf = Vec::with_capacity(full);
        if let Some(b) = self.carry.take() {
            buf.push(b);
        }
        while buf.len() < full {
            let before = buf.len();
            let n = (&mut self.inner)
                .take((full - before) as u64)
                .read_to_end(&mut buf)
                .await?;
            if n == 0 {
                break;
            }
        }
        let last = if buf.len() < full {
            true
        } else {
            // A full segment is the last only if nothing follows it.
            let mut one = [0u8; 1];
            match self.inner.read(&mut one).await? {
                0 => true,
                _ => {
                    self.carry = Some(one[0]);
                    false
                }
            }
        };
        if buf.len() < TAG {
            return Err(CryptoError::Stream(
                "truncated: the stream ends before its last segment",
            ));
        }
        self.segments
            .open(&mut buf, last)
            .map_err(|e| match (e, last) {
                // A cut at a segment boundary leaves a valid non-last segment at the end.
                (CryptoError::Decrypt, true) => {
                    CryptoError::Stream("truncated, reordered or altered stream")
                }
                (e, _) => e,
            })?;
        if last {
            self.done = true;
        }
        Ok(Some(buf))
    }

    /// Reads the whole stream into memory (small objects and tests only).
    pub async fn read_to_vec(mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use phivault_store::TenantId;

    use super::*;

    fn binding(t: TenantId, o: Uuid) -> Binding<'static> {
        Binding {
            tenant: t,
            kind: "recording",
            object: o,
            field: "",
        }
    }

    async fn seal_all(
        key: &SecretKey,
        kr: KeyRef,
        b: &Binding<'_>,
        data: &[u8],
        seg: u32,
        chunk: usize,
    ) -> Vec<u8> {
        let mut w = StreamWriter::new(Vec::new(), key, kr, b, seg)
            .await
            .unwrap();
        for c in data.chunks(chunk.max(1)) {
            w.write(c).await.unwrap();
        }
        if data.is_empty() {
            w.write(&[]).await.unwrap();
        }
        w.finish().await.unwrap().0
    }

    async fn open_all(
        key: &SecretKey,
        kr: KeyRef,
        b: &Binding<'_>,
        bytes: &[u8],
    ) -> Result<Vec<u8>> {
        StreamReader::new(bytes, key, kr, b)
            .await?
            .read_to_vec()
            .await
    }

    #[tokio::test]
    async fn round_trips_at_every_boundary() {
        let key = SecretKey::generate().unwrap();
        let kr = KeyRef {
            id: Uuid::now_v7(),
            version: 1,
        };
        let b = binding(TenantId::generate(), Uuid::now_v7());
        for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 64, 100] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for chunk in [1, 7, 16, 1000] {
                let sealed = seal_all(&key, kr, &b, &data, 16, chunk).await;
                assert_eq!(
                    open_all(&key, kr, &b, &sealed).await.unwrap(),
                    data,
                    "len {len} chunk {chunk}"
                );
            }
        }
    }

    #[tokio::test]
    async fn tampering_is_detected() {
        let key = SecretKey::generate().unwrap();
        let kr = KeyRef {
            id: Uuid::now_v7(),
            version: 1,
        };
        let (t, o) = (TenantId::generate(), Uuid::now_v7());
        let b = binding(t, o);
        let data: Vec<u8> = (0..100u8).collect();
        let sealed = seal_all(&key, kr, &b, &data, 16, 10).await;
        let seg = 16 + TAG;
        assert_eq!(sealed.len(), HEADER_LEN + 7 * seg - (16 - 4));

        // Bit flips anywhere.
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x80;
            assert!(open_all(&key, kr, &b, &bad).await.is_err(), "flip at {i}");
        }
        // Truncation at every length, including on segment boundaries.
        for cut in 0..sealed.len() {
            assert!(
                open_all(&key, kr, &b, &sealed[..cut]).await.is_err(),
                "cut at {cut}"
            );
        }
        // Swapped segments 0 and 1.
        let mut swapped = sealed.clone();
        let (s0, s1) = (HEADER_LEN, HEADER_LEN + seg);
        let first = sealed[s0..s1].to_vec();
        swapped[s0..s1].copy_from_slice(&sealed[s1..s1 + seg]);
        swapped[s1..s1 + seg].copy_from_slice(&first);
        assert!(open_all(&key, kr, &b, &swapped).await.is_err());
        // Duplicated segment.
        let mut dup = sealed[..s1].to_vec();
        dup.extend_from_slice(&sealed[s0..]);
        assert!(open_all(&key, kr, &b, &dup).await.is_err());
        // Appended data.
        let mut longer = sealed.clone();
        longer.extend_from_slice(&[0u8; 20]);
        assert!(open_all(&key, kr, &b, &longer).await.is_err());
        // Moved to another tenant or object.
        assert!(
            open_all(&key, kr, &binding(TenantId::generate(), o), &sealed)
                .await
                .is_err()
        );
        assert!(
            open_all(&key, kr, &binding(t, Uuid::now_v7()), &sealed)
                .await
                .is_err()
        );
    }
}
