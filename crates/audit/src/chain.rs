//! The hash chain and its verification.

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::checkpoint::SignedCheckpoint;
use crate::encoding::canonical_bytes;
use crate::event::AuditEvent;

/// The `prev_hash` of the first event.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// An event as stored: with the hash of the previous event and its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainedEvent {
    /// The event.
    pub event: AuditEvent,
    /// The previous event's hash ([`GENESIS`] for the first).
    pub prev_hash: [u8; 32],
    /// SHA-256 of the canonical encoding, which includes `prev_hash`.
    pub hash: [u8; 32],
}

/// Links `event` after an event whose hash is `prev_hash`.
pub fn chain(prev_hash: [u8; 32], event: AuditEvent) -> ChainedEvent {
    let hash = Sha256::digest(canonical_bytes(&event, &prev_hash)).into();
    ChainedEvent {
        event,
        prev_hash,
        hash,
    }
}

/// The first fault found, by kind and sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ChainFault {
    /// A sequence number is missing, repeated or out of order (a deleted, inserted or
    /// reordered event).
    #[error(
        "sequence {found} where {expected} was expected (event deleted, inserted or reordered)"
    )]
    Gap {
        /// The number expected.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// The event does not link to the previous event's hash.
    #[error("event {sequence} does not link to the previous event")]
    BrokenLink {
        /// Where.
        sequence: u64,
    },
    /// The event's content no longer matches its hash (an edited field).
    #[error("event {sequence} was altered")]
    Altered {
        /// Where.
        sequence: u64,
    },
    /// A checkpoint's signature does not verify.
    #[error("checkpoint at {sequence} has a bad signature")]
    BadSignature {
        /// The checkpoint's sequence.
        sequence: u64,
    },
    /// The chain at a signed checkpoint does not end in the signed head (the chain was
    /// rewritten, hashes and all).
    #[error("the chain at {sequence} differs from its signed checkpoint")]
    CheckpointMismatch {
        /// The checkpoint's sequence.
        sequence: u64,
    },
    /// A signed checkpoint covers events the chain no longer has (the tail was cut).
    #[error("the chain ends at {last} but a checkpoint covers {sequence} (truncated)")]
    Truncated {
        /// The checkpoint's sequence.
        sequence: u64,
        /// The last event present.
        last: u64,
    },
}

/// The result of a verification that found no fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verification {
    /// Events checked.
    pub events: u64,
    /// The head hash.
    pub head: [u8; 32],
    /// The highest sequence covered by a valid checkpoint (0 if none).
    pub signed_through: u64,
    /// Events after the last checkpoint: intact as a chain, but vouched for by no
    /// signature (a forger with database access could have written them).
    pub unsigned: u64,
}

/// Verifies `events` (in stored order, from sequence 1) against `checkpoints` signed by
/// `key`. Returns the first fault.
pub fn verify<'a>(
    events: impl IntoIterator<Item = &'a ChainedEvent>,
    checkpoints: &[SignedCheckpoint],
    key: &VerifyingKey,
) -> Result<Verification, ChainFault> {
    let mut v = Verifier::new(checkpoints, &[*key])?;
    for e in events {
        v.push(e)?;
    }
    v.finish()
}

/// Verifies a chain one event at a time, so a chain of any length is checked in constant
/// memory (the checkpoints are held, the events are not).
#[derive(Debug)]
pub struct Verifier {
    checkpoints: Vec<SignedCheckpoint>,
    next_cp: usize,
    prev: [u8; 32],
    expected: u64,
    signed_through: u64,
}

impl Verifier {
    /// Starts a verification. Every checkpoint must carry a valid signature by one of
    /// `trusted` keys.
    ///
    /// # Errors
    /// [`ChainFault::BadSignature`] for the first checkpoint that fails.
    pub fn new(
        checkpoints: &[SignedCheckpoint],
        trusted: &[VerifyingKey],
    ) -> Result<Self, ChainFault> {
        let mut cps = checkpoints.to_vec();
        cps.sort_by_key(|c| c.checkpoint.sequence);
        for cp in &cps {
            if !trusted.iter().any(|k| cp.verify(k)) {
                return Err(ChainFault::BadSignature {
                    sequence: cp.checkpoint.sequence,
                });
            }
        }
        Ok(Verifier {
            checkpoints: cps,
            next_cp: 0,
            prev: GENESIS,
            expected: 1,
            signed_through: 0,
        })
    }

    /// The sequence number the next event must carry.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Checks the next event.
    pub fn push(&mut self, e: &ChainedEvent) -> Result<(), ChainFault> {
        let seq = e.event.sequence;
        if seq != self.expected {
            return Err(ChainFault::Gap {
                expected: self.expected,
                found: seq,
            });
        }
        if e.prev_hash != self.prev {
            return Err(ChainFault::BrokenLink { sequence: seq });
        }
        let hash: [u8; 32] = Sha256::digest(canonical_bytes(&e.event, &e.prev_hash)).into();
        if hash != e.hash {
            return Err(ChainFault::Altered { sequence: seq });
        }
        while let Some(cp) = self.checkpoints.get(self.next_cp) {
            if cp.checkpoint.sequence > seq {
                break;
            }
            if cp.checkpoint.sequence == seq {
                if cp.checkpoint.head != hash {
                    return Err(ChainFault::CheckpointMismatch { sequence: seq });
                }
                self.signed_through = seq;
            }
            self.next_cp += 1;
        }
        self.prev = hash;
        self.expected += 1;
        Ok(())
    }

    /// Ends the verification: a checkpoint past the last event means the tail was cut.
    pub fn finish(self) -> Result<Verification, ChainFault> {
        let last = self.expected - 1;
        if let Some(cp) = self.checkpoints.get(self.next_cp) {
            return Err(ChainFault::Truncated {
                sequence: cp.checkpoint.sequence,
                last,
            });
        }
        Ok(Verification {
            events: last,
            head: self.prev,
            signed_through: self.signed_through,
            unsigned: last - self.signed_through,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use phivault_store::TenantId;
    use uuid::Uuid;

    use super::*;
    use crate::checkpoint::{Checkpoint, CheckpointSigner};
    use crate::event::{Action, Actor, ActorKind, Outcome, Resource, Source};

    fn event(seq: u64, tenant: TenantId) -> AuditEvent {
        AuditEvent {
            sequence: seq,
            time: Utc
                .timestamp_micros(1_800_000_000_000_000 + seq as i64 * 1000)
                .unwrap(),
            tenant: Some(tenant),
            actor: Actor {
                kind: ActorKind::User,
                id: Uuid::from_u128(seq as u128).to_string(),
                role: "provider".into(),
            },
            source: Source {
                ip: "127.0.0.1".into(),
                user_agent: "synthetic-test".into(),
                device: String::new(),
            },
            action: Action::ALL[seq as usize % Action::ALL.len()],
            resource: Resource {
                kind: "patient".into(),
                id: Uuid::from_u128(seq as u128 * 7).to_string(),
            },
            fields: vec!["mrn".into(), "family_name".into()],
            outcome: Outcome::Success,
            reason: if seq.is_multiple_of(5) {
                Some("synthetic reason".into())
            } else {
                None
            },
            request_id: format!("req-{seq}"),
            before: seq
                .is_multiple_of(7)
                .then(|| serde_json::json!({"role": "member", "status": "active"})),
            after: seq
                .is_multiple_of(7)
                .then(|| serde_json::json!({"status": "active", "role": "admin"})),
        }
    }

    const N: u64 = 600;
    const EVERY: u64 = 50;

    fn build() -> (Vec<ChainedEvent>, Vec<SignedCheckpoint>, CheckpointSigner) {
        let signer = CheckpointSigner::from_seed(&[7u8; 32]);
        let tenant = TenantId::from_uuid(Uuid::from_u128(42));
        let mut prev = GENESIS;
        let mut events = Vec::new();
        let mut cps = Vec::new();
        for seq in 1..=N {
            let e = chain(prev, event(seq, tenant));
            prev = e.hash;
            if seq.is_multiple_of(EVERY) {
                cps.push(signer.sign(Checkpoint {
                    sequence: seq,
                    head: e.hash,
                    time: e.event.time,
                }));
            }
            events.push(e);
        }
        (events, cps, signer)
    }

    /// A small deterministic generator, so a failure names its case.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// Recomputes every hash from `from` on, as a forger with database access would.
    fn rehash(events: &mut [ChainedEvent], from: usize) {
        let mut prev = if from == 0 {
            GENESIS
        } else {
            events[from - 1].hash
        };
        for e in events[from..].iter_mut() {
            *e = chain(prev, e.event.clone());
            prev = e.hash;
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (events, cps, signer) = build();
        let v = verify(&events, &cps, &signer.verifying_key()).unwrap();
        assert_eq!(v.events, N);
        assert_eq!(v.signed_through, N);
        assert_eq!(v.unsigned, 0);
    }

    #[test]
    fn thousands_of_random_mutations_are_all_detected() {
        let (events, cps, signer) = build();
        let key = signer.verifying_key();
        let mut rng = Lcg(0x5eed);
        for case in 0..3000 {
            let mut m = events.clone();
            let i = rng.below(N) as usize;
            let kind = rng.below(7);
            let label = match kind {
                0 => {
                    m[i].event.fields.push("ssn".into());
                    "edit a field"
                }
                1 => {
                    m[i].event.actor.id.push('x');
                    "edit the actor"
                }
                2 => {
                    m.remove(i);
                    "delete an event"
                }
                3 => {
                    let j = (i + 1 + rng.below(N - 1) as usize) % N as usize;
                    m.swap(i, j);
                    "swap two events"
                }
                4 => {
                    m.truncate(i);
                    "truncate the tail"
                }
                5 => {
                    // Forge an event in the middle and recompute every later hash.
                    let mut forged = m[i].event.clone();
                    forged.resource.id = "forged".into();
                    m[i].event = forged;
                    rehash(&mut m, i);
                    "forge an event, rehash the rest"
                }
                _ => {
                    // Insert a forged event, renumber and rehash everything after it.
                    let mut forged = m[i].event.clone();
                    forged.action = Action::PhiExport;
                    m.insert(
                        i,
                        ChainedEvent {
                            event: forged,
                            prev_hash: GENESIS,
                            hash: GENESIS,
                        },
                    );
                    for (k, e) in m.iter_mut().enumerate().skip(i) {
                        e.event.sequence = k as u64 + 1;
                    }
                    rehash(&mut m, i);
                    "insert a forged event, renumber and rehash"
                }
            };
            assert!(
                verify(&m, &cps, &key).is_err(),
                "case {case}: '{label}' at index {i} went undetected"
            );
        }
    }

    #[test]
    fn a_forged_tail_past_the_last_checkpoint_is_reported_unsigned() {
        let (mut events, cps, signer) = build();
        let tenant = TenantId::from_uuid(Uuid::from_u128(42));
        let mut prev = events.last().unwrap().hash;
        for seq in N + 1..=N + 3 {
            let e = chain(prev, event(seq, tenant));
            prev = e.hash;
            events.push(e);
        }
        let v = verify(&events, &cps, &signer.verifying_key()).unwrap();
        assert_eq!(v.signed_through, N);
        assert_eq!(v.unsigned, 3);
    }

    #[test]
    fn checkpoints_signed_by_another_key_or_altered_are_refused() {
        let (events, mut cps, _) = build();
        let other = CheckpointSigner::from_seed(&[8u8; 32]);
        assert!(matches!(
            verify(&events, &cps, &other.verifying_key()),
            Err(ChainFault::BadSignature { .. })
        ));
        let signer = CheckpointSigner::from_seed(&[7u8; 32]);
        cps[3].checkpoint.sequence += 1;
        assert!(matches!(
            verify(&events, &cps, &signer.verifying_key()),
            Err(ChainFault::BadSignature { .. })
        ));
        let round_trip: SignedCheckpoint =
            serde_json::from_str(&serde_json::to_string(&cps[0]).unwrap()).unwrap();
        assert_eq!(round_trip, cps[0]);
        assert!(!format!("{signer:?}").contains("07070707"));
    }
}
