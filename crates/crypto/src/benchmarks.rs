//! Baselines for `phivault bench stream`: the throughput of the bare AEAD this crate
//! uses, with none of the envelope or stream framing, to compare the framed paths with.
//! Not part of the crate's API.

use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInOut;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{Nonce, Tag};

use crate::aead::{self, NONCE};
use crate::{CryptoError, Result, SecretKey};

/// Which direction of the AEAD to time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `encrypt_inout_detached`, in place.
    Seal,
    /// `decrypt_inout_detached` of one valid ciphertext into a second buffer (the tag is
    /// checked, then the keystream applied), so every call does the full work.
    Open,
}

/// Times AES-256-GCM (the `aes-gcm` crate, as [`crate::envelope`] and [`crate::stream`]
/// use it) over `total` bytes in buffers of `buf_len` bytes, without associated data,
/// allocation or I/O. `progress` is called with the byte count of each buffer done.
/// When opening, a partial last buffer is opened whole (its tag covers all of it).
///
/// # Errors
/// [`CryptoError::Stream`] if `buf_len` is 0; [`CryptoError::Decrypt`] if the AEAD
/// refuses a buffer.
pub fn raw_aead_throughput(
    key: &SecretKey,
    direction: Direction,
    total: u64,
    buf_len: usize,
    mut progress: impl FnMut(u64),
) -> Result<Duration> {
    if buf_len == 0 {
        return Err(CryptoError::Stream("buffer length must be at least 1"));
    }
    let cipher = aead::cipher(key);
    let mut buf: Vec<u8> = (0..buf_len).map(|i| i as u8).collect();
    let mut out = vec![0u8; buf_len];
    // Open: one valid ciphertext and tag, opened again and again.
    let fixed_nonce = Nonce::from([0u8; NONCE]);
    let tag: Tag = cipher
        .encrypt_inout_detached(&fixed_nonce, &[], buf.as_mut_slice().into())
        .map_err(|_| CryptoError::Decrypt)?;
    let mut done = 0u64;
    let mut counter = 0u64;
    let start = Instant::now();
    while done < total {
        let n = (total - done).min(buf_len as u64) as usize;
        match direction {
            Direction::Seal => {
                // Distinct nonces, as a real sealer would use.
                counter += 1;
                let mut nonce = [0u8; NONCE];
                nonce[4..].copy_from_slice(&counter.to_be_bytes());
                let tag = cipher
                    .encrypt_inout_detached(&Nonce::from(nonce), &[], (&mut buf[..n]).into())
                    .map_err(|_| CryptoError::Decrypt)?;
                std::hint::black_box(tag);
            }
            Direction::Open => {
                let inout = InOutBuf::new(&buf, &mut out).map_err(|_| CryptoError::Decrypt)?;
                cipher
                    .decrypt_inout_detached(&fixed_nonce, &[], inout, &tag)
                    .map_err(|_| CryptoError::Decrypt)?;
                std::hint::black_box(&out);
            }
        }
        done += n as u64;
        progress(n as u64);
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_run_over_a_partial_last_buffer() {
        let key = SecretKey::generate().unwrap();
        for direction in [Direction::Seal, Direction::Open] {
            let mut seen = 0;
            raw_aead_throughput(&key, direction, 100_000, 4096, |n| seen += n).unwrap();
            assert_eq!(seen, 100_000);
        }
        assert!(raw_aead_throughput(&key, Direction::Seal, 1, 0, |_| {}).is_err());
    }
}
