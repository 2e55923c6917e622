//! Sealing and opening one utterance with AES-256-GCM, bound by the associated data to
//! its session, sender and sequence.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce, Tag};
use uuid::Uuid;
use zeroize::Zeroize;

use crate::key::SessionKey;
use crate::{E2eError, Result};

/// Nonce length in bytes.
pub const NONCE_LEN: usize = 12;
/// Tag length in bytes (appended to the ciphertext).
pub const TAG_LEN: usize = 16;
/// The largest ciphertext the server stores (64 KiB, tag included).
pub const MAX_CIPHERTEXT_LEN: usize = 64 * 1024;
/// The largest plaintext that fits in [`MAX_CIPHERTEXT_LEN`].
pub const MAX_PLAINTEXT_LEN: usize = MAX_CIPHERTEXT_LEN - TAG_LEN;
/// The only algorithm of the contract, as named on the wire.
pub const ALGORITHM: &str = "AES-256-GCM";

/// One sealed utterance: the nonce and the ciphertext with its tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// 12 random bytes, never reused with the same key.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// The UTF-8 bytes of `phivault-e2e-v1|{session_id}|{sender}|{sequence}`.
pub fn associated_data(session_id: Uuid, sender: Uuid, sequence: u64) -> Vec<u8> {
    // Uuid's Display is the lower-case hyphenated form and u64's has no leading zeros,
    // which is exactly what the contract asks for.
    format!("phivault-e2e-v1|{session_id}|{sender}|{sequence}").into_bytes()
}

fn cipher(key: &SessionKey) -> Aes256Gcm {
    Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.expose()))
}

/// Seals `plaintext` under a fresh random nonce.
pub fn seal(
    key: &SessionKey,
    session_id: Uuid,
    sender: Uuid,
    sequence: u64,
    plaintext: &[u8],
) -> Result<Sealed> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|_| E2eError::Random)?;
    seal_with_nonce(key, session_id, sender, sequence, nonce, plaintext)
}

/// Seals under a given nonce. Private so that no caller can pick a nonce twice; the
/// known-answer test is the only other user.
fn seal_with_nonce(
    key: &SessionKey,
    session_id: Uuid,
    sender: Uuid,
    sequence: u64,
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
) -> Result<Sealed> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(E2eError::InvalidText("larger than 65,520 bytes"));
    }
    let aad = associated_data(session_id, sender, sequence);
    let mut buf = plaintext.to_vec();
    let tag = cipher(key)
        .encrypt_inout_detached(&Nonce::from(nonce), &aad, buf.as_mut_slice().into())
        .map_err(|_| {
            buf.zeroize();
            E2eError::InvalidText("cannot be sealed")
        })?;
    buf.extend_from_slice(tag.as_slice());
    Ok(Sealed {
        nonce,
        ciphertext: buf,
    })
}

/// Opens a sealed utterance. Any change to the ciphertext, nonce, sequence, sender or
/// session gives [`E2eError::Authentication`] and no plaintext at all.
pub fn open(
    key: &SessionKey,
    session_id: Uuid,
    sender: Uuid,
    sequence: u64,
    nonce: &[u8; NONCE_LEN],
    ciphertext: &[u8],
) -> Result<Vec<u8>> {
    if ciphertext.len() < TAG_LEN {
        return Err(E2eError::Authentication);
    }
    let split = ciphertext.len() - TAG_LEN;
    let tag = Tag::try_from(&ciphertext[split..]).map_err(|_| E2eError::Authentication)?;
    let mut buf = ciphertext[..split].to_vec();
    let aad = associated_data(session_id, sender, sequence);
    match cipher(key).decrypt_inout_detached(
        &Nonce::from(*nonce),
        &aad,
        buf.as_mut_slice().into(),
        &tag,
    ) {
        Ok(()) => Ok(buf),
        Err(_) => {
            // The buffer holds unauthenticated keystream output: never hand it out.
            buf.zeroize();
            Err(E2eError::Authentication)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Uuid, Uuid) {
        (
            Uuid::parse_str("0190f5a2-7c3e-7d41-9a6b-3f2e1d0c4b5a").unwrap(),
            Uuid::parse_str("0190f5a2-7c3e-7d41-9a6b-3f2e1d0c4b5b").unwrap(),
        )
    }

    #[test]
    fn associated_data_follows_the_contract() {
        let (session, sender) = ids();
        assert_eq!(
            associated_data(session, sender, 7),
            b"phivault-e2e-v1|0190f5a2-7c3e-7d41-9a6b-3f2e1d0c4b5a|0190f5a2-7c3e-7d41-9a6b-3f2e1d0c4b5b|7"
        );
        let upper = Uuid::parse_str("0190F5A2-7C3E-7D41-9A6B-3F2E1D0C4B5A").unwrap();
        let aad = String::from_utf8(associated_data(upper, sender, 10)).unwrap();
        assert!(aad.contains("|0190f5a2-7c3e-7d41-9a6b-3f2e1d0c4b5a|"));
        assert!(aad.ends_with("|10"));
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let key = SessionKey::generate().unwrap();
        let (session, sender) = ids();
        let text = b"Synthetic: patient reports mild headache since Tuesday.";
        let a = seal(&key, session, sender, 1, text).unwrap();
        let b = seal(&key, session, sender, 1, text).unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.ciphertext.len(), text.len() + TAG_LEN);
        let opened = open(&key, session, sender, 1, &a.nonce, &a.ciphertext).unwrap();
        assert_eq!(opened, text);
    }

    #[test]
    fn any_change_fails_authentication() {
        let key = SessionKey::generate().unwrap();
        let (session, sender) = ids();
        let s = seal(&key, session, sender, 3, b"synthetic utterance").unwrap();
        let fails = |r: Result<Vec<u8>>| matches!(r, Err(E2eError::Authentication));

        let mut ct = s.ciphertext.clone();
        ct[0] ^= 1;
        assert!(fails(open(&key, session, sender, 3, &s.nonce, &ct)));
        let mut ct = s.ciphertext.clone();
        *ct.last_mut().unwrap() ^= 0x80;
        assert!(fails(open(&key, session, sender, 3, &s.nonce, &ct)));
        assert!(fails(open(
            &key,
            session,
            sender,
            3,
            &s.nonce,
            &s.ciphertext[..TAG_LEN - 1]
        )));

        let mut nonce = s.nonce;
        nonce[11] ^= 1;
        assert!(fails(open(&key, session, sender, 3, &nonce, &s.ciphertext)));

        assert!(fails(open(
            &key,
            session,
            sender,
            4,
            &s.nonce,
            &s.ciphertext
        )));
        assert!(fails(open(
            &key,
            session,
            session,
            3,
            &s.nonce,
            &s.ciphertext
        )));
        assert!(fails(open(
            &key,
            sender,
            sender,
            3,
            &s.nonce,
            &s.ciphertext
        )));

        let other = SessionKey::generate().unwrap();
        assert!(fails(open(
            &other,
            session,
            sender,
            3,
            &s.nonce,
            &s.ciphertext
        )));
    }

    #[test]
    fn plaintext_size_limit() {
        let key = SessionKey::generate().unwrap();
        let (session, sender) = ids();
        let max = vec![b'a'; MAX_PLAINTEXT_LEN];
        let s = seal(&key, session, sender, 1, &max).unwrap();
        assert_eq!(s.ciphertext.len(), MAX_CIPHERTEXT_LEN);
        let over = vec![b'a'; MAX_PLAINTEXT_LEN + 1];
        assert!(matches!(
            seal(&key, session, sender, 1, &over),
            Err(E2eError::InvalidText(_))
        ));
    }

    /// Known answer: key = bytes 0x00..=0x1f, nonce = bytes 0xa0..=0xab, session and
    /// sender as in `ids()`, sequence 42, plaintext "synthetic: BP 120/80". The expected
    /// ciphertext was computed once, independently of this crate, with Python's
    /// `cryptography` package (AESGCM(key).encrypt(nonce, plaintext, aad)).
    #[test]
    fn known_answer() {
        let key = SessionKey::from_bytes(std::array::from_fn(|i| i as u8));
        let nonce: [u8; NONCE_LEN] = std::array::from_fn(|i| 0xa0 + i as u8);
        let (session, sender) = ids();
        let plaintext = b"synthetic: BP 120/80";
        let sealed = seal_with_nonce(&key, session, sender, 42, nonce, plaintext).unwrap();
        assert_eq!(hex::encode(&sealed.ciphertext), KNOWN_CIPHERTEXT);
        let opened = open(&key, session, sender, 42, &nonce, &sealed.ciphertext).unwrap();
        assert_eq!(opened, plaintext);
    }

    const KNOWN_CIPHERTEXT: &str =
        "956112592dae76d6015fa791575af1ec408361208fd98d4a2d0754b33cef243594375e71";
}
