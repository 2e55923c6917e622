//! A session as one participant holds it: ids, key and its own sequence counter. Turns
//! plaintext into an append body and stored records back into text, refusing any record
//! that does not authenticate.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::key::SessionKey;
use crate::seal::{self, ALGORITHM, MAX_PLAINTEXT_LEN, NONCE_LEN};
use crate::wire::{NewUtterance, UtteranceRecord};
use crate::{E2eError, Result};

/// One participant's view of a session.
#[derive(Clone, Debug)]
pub struct E2eSession {
    /// The session's tenant.
    pub tenant_id: Uuid,
    /// The session.
    pub session_id: Uuid,
    /// This participant's sender id.
    pub participant_id: Uuid,
    /// The session key.
    pub key: SessionKey,
    /// The last sequence this participant sent (0 before the first).
    pub last_sequence: u64,
}

/// An utterance read back. `text` is an error when the record failed authentication (or
/// was otherwise unreadable): such text is never produced, let alone shown.
pub struct Utterance {
    /// Place in the session, in server order.
    pub position: u64,
    /// The sender's participant id.
    pub sender: Uuid,
    /// The sender's sequence number.
    pub sequence: u64,
    /// The plaintext, or why it was refused.
    pub text: Result<String, E2eError>,
}

impl std::fmt::Debug for Utterance {
    // The text is PHI: a Debug print in a log must not carry it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match &self.text {
            Ok(t) => format!("{} bytes", t.len()),
            Err(e) => format!("refused: {e}"),
        };
        f.debug_struct("Utterance")
            .field("position", &self.position)
            .field("sender", &self.sender)
            .field("sequence", &self.sequence)
            .field("text", &text)
            .finish()
    }
}

impl E2eSession {
    /// Seals `text` as this participant's utterance number `sequence`.
    pub fn seal_text(&self, sequence: u64, text: &str) -> Result<NewUtterance> {
        if text.is_empty() {
            return Err(E2eError::InvalidText("empty"));
        }
        if text.len() > MAX_PLAINTEXT_LEN {
            return Err(E2eError::InvalidText("larger than 65,520 bytes"));
        }
        if sequence == 0 {
            return Err(E2eError::InvalidText("sequence numbers start at 1"));
        }
        let sealed = seal::seal(
            &self.key,
            self.session_id,
            self.participant_id,
            sequence,
            text.as_bytes(),
        )?;
        Ok(NewUtterance {
            sequence,
            nonce: URL_SAFE_NO_PAD.encode(sealed.nonce),
            ciphertext: URL_SAFE_NO_PAD.encode(&sealed.ciphertext),
            key_fingerprint: self.key.fingerprint(),
            algorithm: ALGORITHM.to_string(),
        })
    }

    /// Opens a stored record. The sender, sequence and session bound into the associated
    /// data are the ones the server reports, so a server that moves a ciphertext to
    /// another sender, sequence or session gets it refused.
    pub fn open_record(&self, record: &UtteranceRecord) -> Utterance {
        Utterance {
            position: record.position,
            sender: record.sender,
            sequence: record.sequence,
            text: self.open_text(record),
        }
    }

    fn open_text(&self, record: &UtteranceRecord) -> Result<String> {
        if record.algorithm != ALGORITHM {
            return Err(E2eError::UnsupportedAlgorithm(record.algorithm.clone()));
        }
        // A record claiming another key cannot open; say so rather than "authentication".
        if !self.key.matches_fingerprint(&record.key_fingerprint) {
            return Err(E2eError::FingerprintMismatch);
        }
        let nonce: [u8; NONCE_LEN] = URL_SAFE_NO_PAD
            .decode(&record.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(E2eError::Authentication)?;
        let ciphertext = URL_SAFE_NO_PAD
            .decode(&record.ciphertext)
            .map_err(|_| E2eError::Authentication)?;
        let mut plain = Zeroizing::new(seal::open(
            &self.key,
            self.session_id,
            record.sender,
            record.sequence,
            &nonce,
            &ciphertext,
        )?);
        String::from_utf8(std::mem::take(&mut *plain)).map_err(|e| {
            drop(Zeroizing::new(e.into_bytes()));
            E2eError::InvalidText("not UTF-8")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> E2eSession {
        E2eSession {
            tenant_id: Uuid::now_v7(),
            session_id: Uuid::now_v7(),
            participant_id: Uuid::now_v7(),
            key: SessionKey::generate().unwrap(),
            last_sequence: 0,
        }
    }

    fn record(s: &E2eSession, position: u64, n: &NewUtterance) -> UtteranceRecord {
        UtteranceRecord {
            id: Uuid::now_v7().to_string(),
            position,
            sender: s.participant_id,
            sequence: n.sequence,
            nonce: n.nonce.clone(),
            ciphertext: n.ciphertext.clone(),
            key_fingerprint: n.key_fingerprint.clone(),
            algorithm: n.algorithm.clone(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn sealed_text_opens() {
        let s = session();
        let n = s.seal_text(1, "synthetic: no known allergies").unwrap();
        assert_eq!(n.algorithm, "AES-256-GCM");
        assert_eq!(n.key_fingerprint, s.key.fingerprint());
        let u = s.open_record(&record(&s, 1, &n));
        assert_eq!(u.text.unwrap(), "synthetic: no known allergies");
    }

    #[test]
    fn tampered_records_are_refused() {
        let s = session();
        let n = s.seal_text(2, "synthetic").unwrap();
        let refused = |r: UtteranceRecord| s.open_record(&r).text.is_err();

        let mut r = record(&s, 1, &n);
        r.sequence = 3;
        assert!(refused(r));
        let mut r = record(&s, 1, &n);
        r.sender = Uuid::now_v7();
        assert!(refused(r));
        let mut r = record(&s, 1, &n);
        r.nonce = URL_SAFE_NO_PAD.encode([0u8; 12]);
        assert!(refused(r));
        let mut r = record(&s, 1, &n);
        r.nonce = "AAAA".into();
        assert!(refused(r));
        let mut r = record(&s, 1, &n);
        r.ciphertext = "not base64!".into();
        assert!(refused(r));
        let mut r = record(&s, 1, &n);
        r.algorithm = "ChaCha20-Poly1305".into();
        assert!(refused(r));
        let mut r = record(&s, 1, &n);
        r.key_fingerprint = "0".repeat(64);
        assert!(refused(r));

        let mut other = s.clone();
        other.session_id = Uuid::now_v7();
        assert!(matches!(
            other.open_record(&record(&s, 1, &n)).text,
            Err(E2eError::Authentication)
        ));
    }

    #[test]
    fn refuses_to_seal_what_the_server_would_refuse() {
        let s = session();
        assert!(s.seal_text(1, "").is_err());
        assert!(s.seal_text(0, "x").is_err());
        assert!(s.seal_text(1, &"x".repeat(MAX_PLAINTEXT_LEN + 1)).is_err());
    }

    #[test]
    fn debug_hides_the_text() {
        let s = session();
        let n = s.seal_text(1, "synthetic secret words").unwrap();
        let u = s.open_record(&record(&s, 1, &n));
        assert!(!format!("{u:?}").contains("secret words"));
        assert!(!format!("{s:?}").contains(s.key.to_base64url().as_str()));
    }
}
