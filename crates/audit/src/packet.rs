//! Evidence packet archives (docs/evidence.md): a deterministic tar signed with the audit
//! checkpoint key, and its verification offline.
//!
//! The archive holds `packet.json` and `report.html` (names sorted), then `SIGNATURE`,
//! then the two zero blocks that end a tar. Every header is fixed (ustar, mode 0644,
//! uid/gid 0, mtime 0, no owner names), so the same content always gives the same bytes.
//! The signature covers the SHA-256 of every byte before the SIGNATURE entry's header.
//! The verifier rebuilds the SIGNATURE entry and the end blocks from the signature it
//! read and compares them byte for byte with the rest of the file, so no byte is left
//! unchecked: content, headers, padding and trailer alike.
//!
//! The packet is signed by the same Ed25519 key as the chain checkpoints it carries, so a
//! reviewer checks both against one public key, which they compare with `phivault audit
//! checkpoint` output or the witness copies (the trust anchor lies outside the packet).

use std::collections::BTreeMap;
use std::io::Read;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use phivault_crypto::keys::KeyService;
use phivault_store::{Db, TxMode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::checkpoint::{Checkpoint, SignedCheckpoint};
use crate::encoding::canonical_bytes;
use crate::event::AuditEvent;
use crate::{AuditError, Result};

/// The packet format this code writes and reads (`format_version` in `packet.json`).
pub const FORMAT_VERSION: u32 = 1;
/// The machine-readable entry.
pub const PACKET_JSON: &str = "packet.json";
/// The human-readable entry.
pub const REPORT_HTML: &str = "report.html";
/// The final entry: the signature over everything before it.
pub const SIGNATURE_ENTRY: &str = "SIGNATURE";
/// The entries before the signature, in archive order.
pub const CONTENT_ENTRIES: [&str; 2] = [PACKET_JSON, REPORT_HTML];
/// The largest packet `verify` reads.
pub const MAX_PACKET_BYTES: usize = 256 * 1024 * 1024;
/// `format` of the SIGNATURE entry.
pub const SIGNATURE_FORMAT: &str = "phivault-evidence-signature-v1";
/// What the signature covers, as the SIGNATURE entry states it.
pub const SIGNATURE_COVERS: &str = "sha256 of every archive byte before this entry's header";
/// The signed message is this prefix followed by the 32 digest bytes, so a packet
/// signature can never pass for a checkpoint signature by the same key, or the reverse.
pub const SIGNED_PREFIX: &[u8] = b"phivault-evidence-packet-v1";

const BLOCK: usize = 512;

/// Why a packet could not be written or did not verify. Messages name the entry, chain
/// or checkpoint at fault.
#[derive(Debug, Error)]
pub enum PacketError {
    /// The file has no bytes.
    #[error("the file is empty")]
    Empty,
    /// The file is larger than any packet.
    #[error("the file is larger than 256 MiB, which no evidence packet is")]
    TooLarge,
    /// The bytes are not a tar archive of the expected shape.
    #[error("not an evidence packet archive: {0}")]
    Malformed(String),
    /// An entry is missing.
    #[error("the archive has no {0} entry")]
    MissingEntry(&'static str),
    /// The SIGNATURE entry, or what follows it, is not exactly what the signature implies.
    #[error("SIGNATURE entry: {0}")]
    SignatureEntry(String),
    /// The bytes before the SIGNATURE entry are not the ones signed.
    #[error(
        "the archive before the SIGNATURE entry has SHA-256 {found}, but the signature covers {signed}: the packet was changed after it was signed"
    )]
    DigestMismatch {
        /// The digest of the bytes as read.
        found: String,
        /// The digest the signature names.
        signed: String,
    },
    /// The Ed25519 signature does not verify.
    #[error("SIGNATURE entry: the Ed25519 signature does not verify under key {0}")]
    BadSignature(String),
    /// The packet is signed by another key than the one the verifier trusts.
    #[error("the packet is signed by key {found}, not by the trusted key {trusted}")]
    UntrustedKey {
        /// The packet's key (hex).
        found: String,
        /// The key the verifier was given (hex).
        trusted: String,
    },
    /// `packet.json` is not a packet this code reads.
    #[error("packet.json: {0}")]
    Packet(String),
    /// A signed checkpoint inside the packet does not verify.
    #[error("packet.json: audit chain {chain}, checkpoint at sequence {sequence}: {reason}")]
    Checkpoint {
        /// The chain.
        chain: String,
        /// The checkpoint's sequence number.
        sequence: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A sample event inside the packet does not verify.
    #[error("packet.json: sample event {sequence} of audit chain {chain}: {reason}")]
    SampleEvent {
        /// The chain.
        chain: String,
        /// The event's sequence number.
        sequence: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// Writing the archive failed.
    #[error("cannot write the archive: {0}")]
    Write(String),
}

/// Signs packets with the audit checkpoint key. `Debug` shows only the public half.
pub struct PacketSigner {
    key: SigningKey,
}

impl std::fmt::Debug for PacketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketSigner")
            .field("public", &self.key.verifying_key())
            .finish()
    }
}

impl PacketSigner {
    /// The checkpoint key (created on first use, as for checkpoints), unwrapped by the
    /// key hierarchy.
    ///
    /// # Errors
    /// Sealed keys, or a stored key that no longer unwraps.
    pub async fn load(db: &Db, keys: &KeyService, now: DateTime<Utc>) -> Result<PacketSigner> {
        let public = crate::signing::load_or_create_signer(db, keys, now)
            .await?
            .verifying_key();
        // The checkpoint signer signs checkpoints only; the seed is unwrapped again here
        // so that packets get a signature of their own kind from the same key.
        let mut tx = db.begin_platform(TxMode::Read).await?;
        let row: Option<(Vec<u8>,)> = tx
            .query("SELECT wrapped FROM audit_signing_keys WHERE public_key = $1")
            .bind(public.to_bytes().to_vec())
            .fetch_optional()
            .await?;
        tx.commit().await?;
        let (wrapped,) =
            row.ok_or_else(|| AuditError::Unavailable("the checkpoint key row vanished".into()))?;
        let seed = keys.unwrap_platform_secret(&wrapped).await?;
        let key = SigningKey::from_bytes(seed.expose());
        if key.verifying_key() != public {
            return Err(AuditError::Unavailable(
                "the checkpoint key does not match its stored public key".into(),
            ));
        }
        Ok(PacketSigner { key })
    }

    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        PacketSigner {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The public key verifiers need.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }
}

/// The signed message for an archive digest.
fn message(digest: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNED_PREFIX.len() + 32);
    m.extend_from_slice(SIGNED_PREFIX);
    m.extend_from_slice(digest);
    m
}

/// The content of the SIGNATURE entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketSignature {
    /// [`SIGNATURE_FORMAT`].
    pub format: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signing key (64 hex digits), the audit checkpoint key.
    pub public_key: String,
    /// [`SIGNATURE_COVERS`].
    pub covers: String,
    /// The SHA-256 of the archive before the SIGNATURE entry (hex).
    pub sha256: String,
    /// Ed25519 over [`SIGNED_PREFIX`] followed by the 32 digest bytes (hex).
    pub signature: String,
}

impl PacketSignature {
    /// Its one encoding: pretty JSON and a new line. The verifier refuses any other.
    fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// The fixed header of an entry.
fn header(name: &str, size: usize) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// The SIGNATURE entry and the end of the archive, as written.
fn tail(signature: &PacketSignature) -> std::io::Result<Vec<u8>> {
    let body = signature.encode();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&header(SIGNATURE_ENTRY, body.len())?, body.as_slice())?;
    b.into_inner()
}

/// Writes the archive: `entries` (exactly [`CONTENT_ENTRIES`], any order), then the
/// signature.
///
/// # Errors
/// Entries other than the expected ones, or a write failure.
pub fn write_archive(
    entries: &[(&str, &[u8])],
    signer: &PacketSigner,
) -> Result<Vec<u8>, PacketError> {
    let mut sorted: Vec<&(&str, &[u8])> = entries.iter().collect();
    sorted.sort_by_key(|(name, _)| *name);
    let names: Vec<&str> = sorted.iter().map(|(n, _)| *n).collect();
    if names != CONTENT_ENTRIES {
        return Err(PacketError::Write(format!(
            "the entries must be {CONTENT_ENTRIES:?}"
        )));
    }
    let write = |e: std::io::Error| PacketError::Write(e.to_string());
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in sorted {
        b.append(&header(name, data.len()).map_err(write)?, *data)
            .map_err(write)?;
    }
    let digest: [u8; 32] = Sha256::digest(b.get_ref()).into();
    let signature = PacketSignature {
        format: SIGNATURE_FORMAT.into(),
        algorithm: "ed25519".into(),
        public_key: hex::encode(signer.verifying_key().as_bytes()),
        covers: SIGNATURE_COVERS.into(),
        sha256: hex::encode(digest),
        signature: hex::encode(signer.key.sign(&message(&digest)).to_bytes()),
    };
    let mut out = b.into_inner().map_err(write)?;
    // into_inner wrote the end blocks: the signature entry goes before them.
    out.truncate(out.len() - 2 * BLOCK);
    out.extend_from_slice(&tail(&signature).map_err(write)?);
    Ok(out)
}

/// The audit section of `packet.json`: what the exporting server verified.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvidence {
    /// The checkpoint public keys (hex) the exporting server trusted: those whose seed
    /// its key hierarchy unwraps. The packet's signing key is one of them.
    pub trusted_keys: Vec<String>,
    /// The tenant's chain and the platform's, as verified at export.
    pub chains: Vec<ChainEvidence>,
    /// The chain the sample events come from (the tenant's).
    pub sample_chain: String,
    /// The most recent events of that chain, oldest first, with their hashes.
    pub sample_events: Vec<SampleEvent>,
}

/// How a chain's verification at export ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainOutcome {
    /// Every event, link and checkpoint checked out.
    Verified,
    /// The first fault found is in `fault`.
    Fault,
}

/// One chain's verification at export, with its signed checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainEvidence {
    /// `platform`, or the tenant id.
    pub chain: String,
    /// When the verification finished.
    pub verified_at: DateTime<Utc>,
    /// Its outcome.
    pub outcome: ChainOutcome,
    /// The first fault (kind and sequence number), when there is one.
    pub fault: Option<String>,
    /// Events checked (0 on a fault).
    pub events: u64,
    /// The hash of the last event checked (hex), when verified and not empty.
    pub head: Option<String>,
    /// The highest sequence covered by a valid checkpoint (0 if none).
    pub signed_through: u64,
    /// Events after the last checkpoint: intact, but vouched for by no signature.
    pub unsigned: u64,
    /// The witness whose copies were checked too, if any.
    pub witness: Option<String>,
    /// The chain's stored checkpoints up to the events checked.
    pub checkpoints: Vec<CheckpointEvidence>,
}

/// A signed checkpoint, as the packet carries it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointEvidence {
    /// The last sequence number covered.
    pub sequence: u64,
    /// The hash of that event (hex).
    pub head: String,
    /// When it was signed.
    pub time: DateTime<Utc>,
    /// The key that signed it (hex).
    pub public_key: String,
    /// The Ed25519 signature over the checkpoint's encoding (hex; docs/formats.md).
    pub signature: String,
}

impl CheckpointEvidence {
    /// The packet's form of a stored checkpoint.
    pub fn of(signed: &SignedCheckpoint, public_key: &[u8; 32]) -> Self {
        CheckpointEvidence {
            sequence: signed.checkpoint.sequence,
            head: hex::encode(signed.checkpoint.head),
            time: signed.checkpoint.time,
            public_key: hex::encode(public_key),
            signature: hex::encode(signed.signature),
        }
    }
}

/// An event of the chain with its link and hash, so that it can be rehashed offline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleEvent {
    /// The event (identifiers and field names, never PHI).
    #[serde(flatten)]
    pub event: AuditEvent,
    /// The previous event's hash (hex).
    pub prev_hash: String,
    /// This event's hash (hex).
    pub hash: String,
}

/// What a successful verification found.
#[derive(Clone, Debug)]
pub struct VerifiedPacket {
    /// The key that signed the packet (and its checkpoints).
    pub public_key: VerifyingKey,
    /// The signed digest: SHA-256 of the archive before the SIGNATURE entry.
    pub signed_sha256: [u8; 32],
    /// The SHA-256 of the whole file (what `evidence.exported` records).
    pub file_sha256: [u8; 32],
    /// The content entries and their sizes.
    pub entries: Vec<(String, u64)>,
    /// `packet.json`.
    pub packet: Value,
    /// Per chain: outcome at export and checkpoints verified.
    pub chains: Vec<VerifiedChain>,
    /// Sample events rehashed and linked.
    pub sample_events: usize,
}

/// One chain of a verified packet.
#[derive(Clone, Debug, Serialize)]
pub struct VerifiedChain {
    /// `platform` or the tenant id.
    pub chain: String,
    /// How its verification at export ended.
    pub outcome: ChainOutcome,
    /// The fault at export, if any.
    pub fault: Option<String>,
    /// Events verified at export.
    pub events: u64,
    /// Signed through this sequence.
    pub signed_through: u64,
    /// Events after the last checkpoint.
    pub unsigned: u64,
    /// Checkpoint signatures verified offline.
    pub checkpoints_verified: usize,
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Lower-case only: the packet writes lower-case, and one spelling per value keeps
    // every byte meaningful.
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(text).ok()?.try_into().ok()
}

fn key_of(text: &str) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(&hex_array::<32>(text)?).ok()
}

/// The content entries and the signature, checked: the archive layer of [`verify`].
struct Opened {
    entries: BTreeMap<String, Vec<u8>>,
    key: VerifyingKey,
    digest: [u8; 32],
}

fn open(bytes: &[u8]) -> Result<Opened, PacketError> {
    if bytes.is_empty() {
        return Err(PacketError::Empty);
    }
    if bytes.len() > MAX_PACKET_BYTES {
        return Err(PacketError::TooLarge);
    }
    if !bytes.len().is_multiple_of(BLOCK) {
        return Err(PacketError::Malformed(format!(
            "its length ({} bytes) is not a whole number of 512-byte tar blocks (truncated or extended)",
            bytes.len()
        )));
    }
    let malformed = |e: std::io::Error| PacketError::Malformed(e.to_string());
    let mut archive = tar::Archive::new(bytes);
    let mut entries = BTreeMap::new();
    let mut order = Vec::new();
    let mut signature: Option<(usize, Vec<u8>)> = None;
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let name = entry
            .path()
            .map_err(malformed)?
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| PacketError::Malformed("an entry name is not UTF-8".into()))?;
        if signature.is_some() {
            return Err(PacketError::SignatureEntry(format!(
                "entry {name:?} follows it; SIGNATURE must be the last entry"
            )));
        }
        if !entry.header().entry_type().is_file() {
            return Err(PacketError::Malformed(format!(
                "entry {name:?} is not a regular file"
            )));
        }
        let size = usize::try_from(entry.size())
            .ok()
            .filter(|s| *s <= bytes.len())
            .ok_or_else(|| PacketError::Malformed(format!("entry {name:?} has a bad size")))?;
        let mut data = Vec::with_capacity(size);
        entry.read_to_end(&mut data).map_err(malformed)?;
        if data.len() != size {
            return Err(PacketError::Malformed(format!(
                "entry {name:?} is cut short (truncated)"
            )));
        }
        if name == SIGNATURE_ENTRY {
            let at = usize::try_from(entry.raw_header_position())
                .map_err(|_| PacketError::Malformed("bad entry position".into()))?;
            signature = Some((at, data));
            continue;
        }
        if !CONTENT_ENTRIES.contains(&name.as_str()) {
            return Err(PacketError::Malformed(format!(
                "unexpected entry {name:?} (a packet holds {PACKET_JSON}, {REPORT_HTML} and {SIGNATURE_ENTRY})"
            )));
        }
        if entries.insert(name.clone(), data).is_some() {
            return Err(PacketError::Malformed(format!(
                "entry {name:?} appears twice"
            )));
        }
        order.push(name);
    }
    let (at, body) = signature.ok_or(PacketError::MissingEntry(SIGNATURE_ENTRY))?;
    for name in CONTENT_ENTRIES {
        if !entries.contains_key(name) {
            return Err(PacketError::MissingEntry(name));
        }
    }
    if order != CONTENT_ENTRIES {
        return Err(PacketError::Malformed(format!(
            "entries are not in order {CONTENT_ENTRIES:?}"
        )));
    }
    let sig: PacketSignature = serde_json::from_slice(&body)
        .map_err(|e| PacketError::SignatureEntry(format!("not the expected JSON ({e})")))?;
    let expected_tail = tail(&sig).map_err(|e| PacketError::SignatureEntry(e.to_string()))?;
    if bytes.get(at..) != Some(expected_tail.as_slice()) {
        return Err(PacketError::SignatureEntry(
            "its header, its JSON, its padding or the end-of-archive blocks after it are not exactly as written (altered, extended or truncated)".into(),
        ));
    }
    if sig.format != SIGNATURE_FORMAT
        || sig.algorithm != "ed25519"
        || sig.covers != SIGNATURE_COVERS
    {
        return Err(PacketError::SignatureEntry(format!(
            "unknown format or algorithm (expected {SIGNATURE_FORMAT}, ed25519)"
        )));
    }
    let key = key_of(&sig.public_key).ok_or_else(|| {
        PacketError::SignatureEntry("public_key is not an Ed25519 key in lower-case hex".into())
    })?;
    let signed: [u8; 32] = hex_array(&sig.sha256).ok_or_else(|| {
        PacketError::SignatureEntry("sha256 is not 64 lower-case hex digits".into())
    })?;
    let signature: [u8; 64] = hex_array(&sig.signature).ok_or_else(|| {
        PacketError::SignatureEntry("signature is not 128 lower-case hex digits".into())
    })?;
    let digest: [u8; 32] = Sha256::digest(&bytes[..at]).into();
    if digest != signed {
        return Err(PacketError::DigestMismatch {
            found: hex::encode(digest),
            signed: sig.sha256,
        });
    }
    key.verify_strict(&message(&digest), &Signature::from_bytes(&signature))
        .map_err(|_| PacketError::BadSignature(sig.public_key.clone()))?;
    Ok(Opened {
        entries,
        key,
        digest,
    })
}

/// Verifies a packet offline: the archive's signature (every byte of the file), then,
/// under the same key, every signed checkpoint and the sample events inside
/// `packet.json`. With `trusted`, a packet signed by any other key fails.
///
/// # Errors
/// The first fault, naming the entry, chain, checkpoint or event.
pub fn verify(bytes: &[u8], trusted: Option<&VerifyingKey>) -> Result<VerifiedPacket, PacketError> {
    let opened = open(bytes)?;
    if let Some(t) = trusted
        && *t != opened.key
    {
        return Err(PacketError::UntrustedKey {
            found: hex::encode(opened.key.as_bytes()),
            trusted: hex::encode(t.as_bytes()),
        });
    }
    let json = &opened.entries[PACKET_JSON];
    let packet: Value =
        serde_json::from_slice(json).map_err(|e| PacketError::Packet(format!("not JSON ({e})")))?;
    if packet.get("format_version").and_then(Value::as_u64) != Some(u64::from(FORMAT_VERSION)) {
        return Err(PacketError::Packet(format!(
            "format_version is not {FORMAT_VERSION}"
        )));
    }
    if std::str::from_utf8(&opened.entries[REPORT_HTML]).is_err() {
        return Err(PacketError::Malformed(format!(
            "{REPORT_HTML} is not UTF-8"
        )));
    }
    let audit: AuditEvidence = packet
        .get("audit")
        .cloned()
        .ok_or_else(|| PacketError::Packet("no audit section".into()))
        .and_then(|v| {
            serde_json::from_value(v)
                .map_err(|e| PacketError::Packet(format!("audit section: {e}")))
        })?;
    let (chains, sample_events) = check_audit(&audit, &opened.key)?;
    Ok(VerifiedPacket {
        public_key: opened.key,
        signed_sha256: opened.digest,
        file_sha256: Sha256::digest(bytes).into(),
        entries: CONTENT_ENTRIES
            .iter()
            .map(|n| (n.to_string(), opened.entries[*n].len() as u64))
            .collect(),
        packet,
        chains,
        sample_events,
    })
}

fn check_audit(
    audit: &AuditEvidence,
    packet_key: &VerifyingKey,
) -> Result<(Vec<VerifiedChain>, usize), PacketError> {
    let mut trusted = Vec::new();
    for (i, k) in audit.trusted_keys.iter().enumerate() {
        trusted.push(key_of(k).ok_or_else(|| {
            PacketError::Packet(format!("audit.trusted_keys[{i}] is not an Ed25519 key"))
        })?);
    }
    if !trusted.contains(packet_key) {
        return Err(PacketError::Packet(
            "the key that signed the packet is not among audit.trusted_keys".into(),
        ));
    }
    let mut out = Vec::new();
    for chain in &audit.chains {
        let fail = |sequence, reason| PacketError::Checkpoint {
            chain: chain.chain.clone(),
            sequence,
            reason,
        };
        for cp in &chain.checkpoints {
            let key = key_of(&cp.public_key)
                .ok_or_else(|| fail(cp.sequence, "public_key is not an Ed25519 key"))?;
            if !trusted.contains(&key) {
                return Err(fail(
                    cp.sequence,
                    "signed by a key that audit.trusted_keys does not list",
                ));
            }
            let head = hex_array::<32>(&cp.head)
                .ok_or_else(|| fail(cp.sequence, "head is not 64 lower-case hex digits"))?;
            let signature = hex_array::<64>(&cp.signature)
                .ok_or_else(|| fail(cp.sequence, "signature is not 128 lower-case hex digits"))?;
            let signed = SignedCheckpoint {
                checkpoint: Checkpoint {
                    sequence: cp.sequence,
                    head,
                    time: cp.time,
                },
                signature,
            };
            if !signed.verify(&key) {
                return Err(fail(cp.sequence, "the signature does not verify"));
            }
            if chain.outcome == ChainOutcome::Verified && cp.sequence > chain.events {
                return Err(fail(
                    cp.sequence,
                    "covers events beyond those the chain's verification checked",
                ));
            }
        }
        if chain.outcome == ChainOutcome::Verified {
            let names_checkpoint = chain.signed_through == 0
                || chain
                    .checkpoints
                    .iter()
                    .any(|c| c.sequence == chain.signed_through);
            if !names_checkpoint
                || chain.signed_through > chain.events
                || chain.unsigned != chain.events - chain.signed_through
            {
                return Err(PacketError::Packet(format!(
                    "audit chain {}: signed_through and unsigned do not agree with its events and checkpoints",
                    chain.chain
                )));
            }
        }
        out.push(VerifiedChain {
            chain: chain.chain.clone(),
            outcome: chain.outcome,
            fault: chain.fault.clone(),
            events: chain.events,
            signed_through: chain.signed_through,
            unsigned: chain.unsigned,
            checkpoints_verified: chain.checkpoints.len(),
        });
    }
    let samples = check_samples(audit)?;
    Ok((out, samples))
}

/// Rehashes the sample events, checks they link up, and that any of them a checkpoint
/// (or the verified head) names has the signed hash.
fn check_samples(audit: &AuditEvidence) -> Result<usize, PacketError> {
    if audit.sample_events.is_empty() {
        return Ok(0);
    }
    let chain = audit
        .chains
        .iter()
        .find(|c| c.chain == audit.sample_chain)
        .ok_or_else(|| {
            PacketError::Packet("sample_chain names no chain of the audit section".into())
        })?;
    let mut previous: Option<(u64, [u8; 32])> = None;
    for s in &audit.sample_events {
        let seq = s.event.sequence;
        let fail = |reason| PacketError::SampleEvent {
            chain: chain.chain.clone(),
            sequence: seq,
            reason,
        };
        let prev = hex_array::<32>(&s.prev_hash)
            .ok_or_else(|| fail("prev_hash is not 64 lower-case hex digits"))?;
        let hash =
            hex_array::<32>(&s.hash).ok_or_else(|| fail("hash is not 64 lower-case hex digits"))?;
        if let Some((p_seq, p_hash)) = previous {
            if seq != p_seq + 1 {
                return Err(fail("does not follow the previous sample event"));
            }
            if prev != p_hash {
                return Err(fail("does not link to the previous sample event"));
            }
        }
        let recomputed: [u8; 32] = Sha256::digest(canonical_bytes(&s.event, &prev)).into();
        if recomputed != hash {
            return Err(fail("its content does not match its hash (altered)"));
        }
        let hash_hex = hex::encode(hash);
        if chain
            .checkpoints
            .iter()
            .any(|c| c.sequence == seq && c.head != hash_hex)
        {
            return Err(fail("differs from the signed checkpoint at its sequence"));
        }
        if chain.outcome == ChainOutcome::Verified
            && seq == chain.events
            && chain.head.as_deref() != Some(hash_hex.as_str())
        {
            return Err(fail("differs from the head the verification reported"));
        }
        previous = Some((seq, hash));
    }
    Ok(audit.sample_events.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{GENESIS, chain};
    use crate::checkpoint::CheckpointSigner;
    use crate::event::{Action, Actor, ActorKind, Outcome, Resource, Source};

    const SEED: [u8; 32] = [7u8; 32];

    fn event(sequence: u64) -> AuditEvent {
        AuditEvent {
            sequence,
            time: DateTime::from_timestamp_micros(1_767_225_600_000_000 + sequence as i64).unwrap(),
            tenant: None,
            actor: Actor {
                kind: ActorKind::Operator,
                id: "cli:synthetic".into(),
                role: "operator".into(),
            },
            source: Source::default(),
            action: Action::EvidenceExported,
            resource: Resource {
                kind: "evidence_packet".into(),
                id: format!("synthetic-{sequence}"),
            },
            fields: vec!["sha256".into()],
            outcome: Outcome::Success,
            reason: None,
            request_id: String::new(),
            before: None,
            after: Some(serde_json::json!({"b": 1, "a": [1, 2]})),
        }
    }

    /// A packet over a synthetic three-event chain with a checkpoint at 2.
    fn packet() -> (Vec<u8>, PacketSigner) {
        let signer = PacketSigner::from_seed(&SEED);
        let cp_signer = CheckpointSigner::from_seed(&SEED);
        let mut prev = GENESIS;
        let mut events = Vec::new();
        for seq in 1..=3 {
            let c = chain(prev, event(seq));
            prev = c.hash;
            events.push(c);
        }
        let cp = cp_signer.sign(Checkpoint {
            sequence: 2,
            head: events[1].hash,
            time: events[1].event.time,
        });
        let public = *signer.verifying_key().as_bytes();
        let audit = AuditEvidence {
            trusted_keys: vec![hex::encode(public)],
            chains: vec![ChainEvidence {
                chain: "platform".into(),
                verified_at: events[2].event.time,
                outcome: ChainOutcome::Verified,
                fault: None,
                events: 3,
                head: Some(hex::encode(events[2].hash)),
                signed_through: 2,
                unsigned: 1,
                witness: None,
                checkpoints: vec![CheckpointEvidence::of(&cp, &public)],
            }],
            sample_chain: "platform".into(),
            sample_events: events
                .iter()
                .map(|c| SampleEvent {
                    event: c.event.clone(),
                    prev_hash: hex::encode(c.prev_hash),
                    hash: hex::encode(c.hash),
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&serde_json::json!({
            "format_version": FORMAT_VERSION,
            "audit": audit,
        }))
        .unwrap();
        let html = b"<!doctype html><title>synthetic</title>".to_vec();
        let bytes = write_archive(
            &[
                (REPORT_HTML, html.as_slice()),
                (PACKET_JSON, json.as_slice()),
            ],
            &signer,
        )
        .unwrap();
        (bytes, signer)
    }

    #[test]
    fn a_packet_verifies_and_is_deterministic() {
        let (bytes, signer) = packet();
        assert_eq!(bytes, packet().0, "same content, same bytes");
        assert_eq!(bytes.len() % BLOCK, 0);
        assert!(bytes[bytes.len() - 1024..].iter().all(|b| *b == 0));
        let v = verify(&bytes, None).unwrap();
        assert_eq!(v.public_key, signer.verifying_key());
        assert_eq!(v.chains[0].checkpoints_verified, 1);
        assert_eq!(v.sample_events, 3);
        verify(&bytes, Some(&signer.verifying_key())).unwrap();
        let other = PacketSigner::from_seed(&[8u8; 32]).verifying_key();
        assert!(matches!(
            verify(&bytes, Some(&other)),
            Err(PacketError::UntrustedKey { .. })
        ));
    }

    #[test]
    fn every_byte_counts() {
        let (bytes, _) = packet();
        // Every byte of a short synthetic packet: no flip goes unnoticed.
        for i in 0..bytes.len() {
            let mut t = bytes.clone();
            t[i] ^= 0x01;
            assert!(verify(&t, None).is_err(), "flipping byte {i} passed");
        }
    }

    #[test]
    fn cut_extended_and_foreign_files_fail_cleanly() {
        let (bytes, _) = packet();
        assert!(matches!(verify(&[], None), Err(PacketError::Empty)));
        for len in [1, 511, 512, 1024, bytes.len() - 1024, bytes.len() - 512] {
            assert!(verify(&bytes[..len], None).is_err(), "cut at {len} passed");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0u8; 512]);
        assert!(verify(&longer, None).is_err());
        assert!(verify(&[0u8; 4096], None).is_err());
        assert!(verify(b"not a tar at all", None).is_err());
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
        assert!(verify(&garbage, None).is_err());
    }

    #[test]
    fn oversized_and_hostile_archives_are_refused() {
        // Zeroed pages are not touched: the size is refused before any byte is read.
        let huge = vec![0u8; MAX_PACKET_BYTES + 1];
        assert!(matches!(verify(&huge, None), Err(PacketError::TooLarge)));
        // A signed archive with an entry that climbs out of the extraction directory,
        // and one with a link entry: refused by name and type before the signature.
        let signer = PacketSigner::from_seed(&SEED);
        for (name, kind) in [
            ("../escape", tar::EntryType::Regular),
            ("packet.json", tar::EntryType::Symlink),
        ] {
            let mut b = tar::Builder::new(Vec::new());
            // The writer refuses `..`, so the name goes into the header's bytes directly.
            let mut h = header("placeholder", 2).unwrap();
            let raw = &mut h.as_old_mut().name;
            raw.fill(0);
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(kind);
            h.set_cksum();
            b.append(&h, b"{}".as_slice()).unwrap();
            for n in CONTENT_ENTRIES {
                b.append(&header(n, 2).unwrap(), b"{}".as_slice()).unwrap();
            }
            let digest: [u8; 32] = Sha256::digest(b.get_ref()).into();
            let sig = PacketSignature {
                format: SIGNATURE_FORMAT.into(),
                algorithm: "ed25519".into(),
                public_key: hex::encode(signer.verifying_key().as_bytes()),
                covers: SIGNATURE_COVERS.into(),
                sha256: hex::encode(digest),
                signature: hex::encode(signer.key.sign(&message(&digest)).to_bytes()),
            };
            let mut bytes = b.into_inner().unwrap();
            bytes.truncate(bytes.len() - 2 * BLOCK);
            bytes.extend_from_slice(&tail(&sig).unwrap());
            assert!(
                matches!(verify(&bytes, None), Err(PacketError::Malformed(_))),
                "{name} {kind:?} passed"
            );
        }
    }

    #[test]
    fn a_forged_checkpoint_fails_by_name() {
        let signer = PacketSigner::from_seed(&SEED);
        let (bytes, _) = packet();
        let v = verify(&bytes, None).unwrap();
        // Re-sign a packet whose checkpoint head was changed: the archive signature holds
        // (the signer signed it) but the checkpoint does not.
        let mut json = v.packet.clone();
        json["audit"]["chains"][0]["checkpoints"][0]["head"] = Value::String("00".repeat(32));
        let json = serde_json::to_vec(&json).unwrap();
        let forged = write_archive(
            &[
                (PACKET_JSON, json.as_slice()),
                (REPORT_HTML, b"x".as_slice()),
            ],
            &signer,
        )
        .unwrap();
        match verify(&forged, None) {
            Err(PacketError::Checkpoint { sequence: 2, .. }) => {}
            other => panic!("expected a checkpoint fault, got {other:?}"),
        }
    }

    #[test]
    fn unexpected_entries_are_refused_when_writing() {
        let signer = PacketSigner::from_seed(&SEED);
        let empty: &[u8] = b"";
        assert!(write_archive(&[(PACKET_JSON, empty)], &signer).is_err());
        let three = [
            (PACKET_JSON, empty),
            (REPORT_HTML, empty),
            ("../escape", empty),
        ];
        assert!(write_archive(&three, &signer).is_err());
    }
}
