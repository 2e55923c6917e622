//! End-to-end encrypted sessions: the server side, which never holds a key.
//!
//! A session has an owner (the tenant user who made it) and, for two-device sessions, a
//! guest device that joined with a single-use invite. Each participant is a sender; each
//! utterance is stored as the devices made it — ciphertext, nonce, key fingerprint,
//! algorithm, the sender's sequence — after its shape is checked: nothing here can or
//! does decrypt. `position` orders a session's utterances as the server stored them.
//! Ending a session, or the tenant's retention window, deletes its ciphertext.
//! The wire contract is docs/e2e.md.

use chrono::{DateTime, Duration, Utc};
use phivault_store::TenantTx;
use uuid::Uuid;

use crate::error::invalid;
use crate::{Result, UserId, secret_token};

/// The one algorithm accepted.
pub const ALGORITHM: &str = "AES-256-GCM";
/// Prefix of invite tokens.
pub const INVITE_PREFIX: &str = "pvi_";
/// How long an invite may be used.
pub const INVITE_TTL: Duration = Duration::minutes(15);
/// Nonce length of AES-GCM.
pub const NONCE_LEN: usize = 12;
/// Smallest ciphertext: one byte of text and the 16-byte tag.
pub const MIN_CIPHERTEXT: usize = 17;
/// Largest ciphertext.
pub const MAX_CIPHERTEXT: usize = 64 * 1024;
/// Default retention window of utterances, in hours.
pub const DEFAULT_RETENTION_HOURS: i64 = 24;

/// Who takes part in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One device (both voices on the owner's device).
    SingleDevice,
    /// The owner's device and a guest device that joins by invite.
    TwoDevice,
}

impl Mode {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::SingleDevice => "single_device",
            Mode::TwoDevice => "two_device",
        }
    }

    /// Parses a stable name.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "single_device" => Some(Mode::SingleDevice),
            "two_device" => Some(Mode::TwoDevice),
            _ => None,
        }
    }
}

/// A session (metadata only; the server holds nothing secret about it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// Id.
    pub id: Uuid,
    /// The tenant user who made it.
    pub owner: UserId,
    /// Single- or two-device.
    pub mode: Mode,
    /// Lower-case hex SHA-256 of the SHA-256 of the key.
    pub key_fingerprint: String,
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// When it ended, if it did.
    pub ended_at: Option<DateTime<Utc>>,
    /// Position of the last stored utterance (0 for none).
    pub last_position: i64,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// Who a participant is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// The owner, a tenant user.
    User(UserId),
    /// A guest device.
    Device(Uuid),
}

/// A participant: a sender of the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    /// Id: the `sender` of its utterances and part of their associated data.
    pub id: Uuid,
    /// The session.
    pub session: Uuid,
    /// Who.
    pub who: Who,
    /// The highest sequence it has sent.
    pub last_sequence: i64,
}

/// Why an operation on a session was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Invites are for two-device sessions.
    SingleDevice,
    /// The session has ended.
    Ended,
    /// No invite with that token.
    InviteUnknown,
    /// The invite was used.
    InviteUsed,
    /// The invite expired.
    InviteExpired,
    /// The nonce is not 12 bytes.
    InvalidNonce,
    /// The ciphertext is shorter than a tag and a byte.
    CiphertextTooShort,
    /// The ciphertext is over the limit.
    CiphertextTooLarge,
    /// Not AES-256-GCM.
    UnsupportedAlgorithm,
    /// The fingerprint is not the session's.
    FingerprintMismatch,
    /// The sequence is not above the sender's last.
    SequenceNotIncreasing,
}

impl Refusal {
    /// A stable name, for logs and audit reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SingleDevice => "single-device session",
            Refusal::Ended => "session ended",
            Refusal::InviteUnknown => "unknown invite",
            Refusal::InviteUsed => "invite already used",
            Refusal::InviteExpired => "invite expired",
            Refusal::InvalidNonce => "nonce is not 12 bytes",
            Refusal::CiphertextTooShort => "ciphertext too short",
            Refusal::CiphertextTooLarge => "ciphertext too large",
            Refusal::UnsupportedAlgorithm => "unsupported algorithm",
            Refusal::FingerprintMismatch => "key fingerprint mismatch",
            Refusal::SequenceNotIncreasing => "sequence not increasing",
        }
    }
}

/// Checks a key fingerprint: 64 lower-case hex characters.
pub fn check_fingerprint(text: &str) -> Result<String> {
    if text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(text.to_string())
    } else {
        Err(invalid(
            "key_fingerprint",
            "must be 64 lower-case hexadecimal characters",
        ))
    }
}

type SessionRow = (
    Uuid,
    Uuid,
    String,
    String,
    String,
    Option<DateTime<Utc>>,
    i64,
    DateTime<Utc>,
);

fn session_of(r: SessionRow) -> Session {
    Session {
        id: r.0,
        owner: UserId::from_uuid(r.1),
        mode: Mode::parse(&r.2).unwrap_or(Mode::SingleDevice),
        key_fingerprint: r.3,
        algorithm: r.4,
        ended_at: r.5,
        last_position: r.6,
        created_at: r.7,
    }
}

/// Makes a session owned by `owner`, who is its first participant.
pub async fn create(
    tx: &mut TenantTx,
    owner: UserId,
    mode: Mode,
    key_fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<(Session, Participant)> {
    let key_fingerprint = check_fingerprint(key_fingerprint)?;
    let id = Uuid::now_v7();
    tx.query(
        "INSERT INTO e2e_sessions (tenant_id, id, owner_id, mode, key_fingerprint, algorithm, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(owner)
    .bind(mode.as_str())
    .bind(key_fingerprint.clone())
    .bind(ALGORITHM)
    .bind(now)
    .execute()
    .await?;
    let participant = add_participant(tx, id, Who::User(owner), now).await?;
    Ok((
        Session {
            id,
            owner,
            mode,
            key_fingerprint,
            algorithm: ALGORITHM.into(),
            ended_at: None,
            last_position: 0,
            created_at: now,
        },
        participant,
    ))
}

async fn add_participant(
    tx: &mut TenantTx,
    session: Uuid,
    who: Who,
    now: DateTime<Utc>,
) -> Result<Participant> {
    let id = Uuid::now_v7();
    let (user, device) = match who {
        Who::User(u) => (Some(u.as_uuid()), None),
        Who::Device(d) => (None, Some(d)),
    };
    tx.query(
        "INSERT INTO e2e_participants (tenant_id, session_id, id, user_id, device_id, joined_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(session)
    .bind(id)
    .bind(user)
    .bind(device)
    .bind(now)
    .execute()
    .await?;
    Ok(Participant {
        id,
        session,
        who,
        last_sequence: 0,
    })
}

/// One session of the transaction's tenant.
pub async fn get(tx: &mut TenantTx, id: Uuid) -> Result<Option<Session>> {
    let row: Option<SessionRow> = tx
        .query(
            "SELECT id, owner_id, mode, key_fingerprint, algorithm, ended_at, last_position, created_at
             FROM e2e_sessions WHERE tenant_id = $1 AND id = $2",
        )
        .bind(id)
        .fetch_optional()
        .await?;
    Ok(row.map(session_of))
}

/// The participant `who` of `session`, if it takes part.
pub async fn participant(
    tx: &mut TenantTx,
    session: Uuid,
    who: Who,
) -> Result<Option<Participant>> {
    let row: Option<(Uuid, i64)> = match who {
        Who::User(u) => {
            tx.query(
                "SELECT id, last_sequence FROM e2e_participants
                 WHERE tenant_id = $1 AND session_id = $2 AND user_id = $3",
            )
            .bind(session)
            .bind(u)
            .fetch_optional()
            .await?
        }
        Who::Device(d) => {
            tx.query(
                "SELECT id, last_sequence FROM e2e_participants
                 WHERE tenant_id = $1 AND session_id = $2 AND device_id = $3",
            )
            .bind(session)
            .bind(d)
            .fetch_optional()
            .await?
        }
    };
    Ok(row.map(|(id, last_sequence)| Participant {
        id,
        session,
        who,
        last_sequence,
    }))
}

/// Issues a single-use invite for a two-device session; returns the token (shown once)
/// and when it expires.
pub async fn create_invite(
    tx: &mut TenantTx,
    session: &Session,
    now: DateTime<Utc>,
) -> Result<std::result::Result<(String, DateTime<Utc>), Refusal>> {
    if session.ended_at.is_some() {
        return Ok(Err(Refusal::Ended));
    }
    if session.mode != Mode::TwoDevice {
        return Ok(Err(Refusal::SingleDevice));
    }
    let (token, hash) = secret_token::generate(INVITE_PREFIX, tx.tenant())?;
    let expires = now + INVITE_TTL;
    tx.query(
        "INSERT INTO e2e_invites (tenant_id, id, session_id, token_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(session.id)
    .bind(hash.to_vec())
    .bind(now)
    .bind(expires)
    .execute()
    .await?;
    Ok(Ok((token, expires)))
}

/// The tenant an invite token names, to open its transaction; `None` for anything that
/// is not an invite token.
pub fn invite_tenant(token: &str) -> Option<crate::TenantId> {
    secret_token::parse(INVITE_PREFIX, token).map(|p| p.tenant)
}

/// `id, session_id, expires_at, used_at` of an invite.
type InviteRow = (Uuid, Uuid, DateTime<Utc>, Option<DateTime<Utc>>);

/// Uses the invite `token` for `device`: the session and the device's participant, and
/// whether the participant is new (a device that joined before keeps its sender id).
pub async fn consume_invite(
    tx: &mut TenantTx,
    token: &str,
    device: Uuid,
    now: DateTime<Utc>,
) -> Result<std::result::Result<(Session, Participant, bool), Refusal>> {
    let Some(parsed) = secret_token::parse(INVITE_PREFIX, token) else {
        return Ok(Err(Refusal::InviteUnknown));
    };
    if parsed.tenant != tx.tenant() {
        return Ok(Err(Refusal::InviteUnknown));
    }
    let row: Option<InviteRow> = tx
        .query(
            "SELECT id, session_id, expires_at, used_at FROM e2e_invites
             WHERE tenant_id = $1 AND token_hash = $2",
        )
        .bind(parsed.hash.to_vec())
        .fetch_optional()
        .await?;
    let Some((invite, session_id, expires_at, used_at)) = row else {
        return Ok(Err(Refusal::InviteUnknown));
    };
    if used_at.is_some() {
        return Ok(Err(Refusal::InviteUsed));
    }
    if expires_at <= now {
        return Ok(Err(Refusal::InviteExpired));
    }
    let Some(session) = get(tx, session_id).await? else {
        return Ok(Err(Refusal::InviteUnknown));
    };
    if session.ended_at.is_some() {
        return Ok(Err(Refusal::Ended));
    }
    // The `used_at IS NULL` condition makes two concurrent uses one winner.
    let used = tx
        .query(
            "UPDATE e2e_invites SET used_at = $3, used_by = $4
             WHERE tenant_id = $1 AND id = $2 AND used_at IS NULL",
        )
        .bind(invite)
        .bind(now)
        .bind(device)
        .execute()
        .await?;
    if used == 0 {
        return Ok(Err(Refusal::InviteUsed));
    }
    if let Some(p) = participant(tx, session.id, Who::Device(device)).await? {
        return Ok(Ok((session, p, false)));
    }
    let p = add_participant(tx, session.id, Who::Device(device), now).await?;
    Ok(Ok((session, p, true)))
}

/// An utterance as a device sent it.
#[derive(Clone, Debug)]
pub struct NewUtterance {
    /// The sender's sequence, strictly increasing.
    pub sequence: i64,
    /// 12 bytes.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
    /// Must be the session's.
    pub key_fingerprint: String,
    /// Must be [`ALGORITHM`].
    pub algorithm: String,
}

/// A stored utterance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utterance {
    /// Id.
    pub id: Uuid,
    /// Order in the session.
    pub position: i64,
    /// The participant who sent it.
    pub sender: Uuid,
    /// The sender's sequence.
    pub sequence: i64,
    /// 12 bytes.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
    /// The key fingerprint.
    pub key_fingerprint: String,
    /// The algorithm.
    pub algorithm: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// Checks an utterance's shape against `session`, without touching storage.
fn check_shape(session: &Session, u: &NewUtterance) -> std::result::Result<(), Refusal> {
    if u.algorithm != ALGORITHM {
        return Err(Refusal::UnsupportedAlgorithm);
    }
    if u.nonce.len() != NONCE_LEN {
        return Err(Refusal::InvalidNonce);
    }
    if u.ciphertext.len() < MIN_CIPHERTEXT {
        return Err(Refusal::CiphertextTooShort);
    }
    if u.ciphertext.len() > MAX_CIPHERTEXT {
        return Err(Refusal::CiphertextTooLarge);
    }
    if u.key_fingerprint != session.key_fingerprint {
        return Err(Refusal::FingerprintMismatch);
    }
    if u.sequence < 1 {
        return Err(Refusal::SequenceNotIncreasing);
    }
    Ok(())
}

/// Stores an utterance of `sender` after checking its shape, its sequence and that the
/// session is open.
pub async fn append(
    tx: &mut TenantTx,
    session: &Session,
    sender: Uuid,
    u: NewUtterance,
    now: DateTime<Utc>,
) -> Result<std::result::Result<Utterance, Refusal>> {
    if let Err(r) = check_shape(session, &u) {
        return Ok(Err(r));
    }
    let advanced = tx
        .query(
            "UPDATE e2e_participants SET last_sequence = $3
             WHERE tenant_id = $1 AND id = $2 AND last_sequence < $3",
        )
        .bind(sender)
        .bind(u.sequence)
        .execute()
        .await?;
    if advanced == 0 {
        return Ok(Err(Refusal::SequenceNotIncreasing));
    }
    let position: Option<(i64,)> = tx
        .query(
            "UPDATE e2e_sessions SET last_position = last_position + 1
             WHERE tenant_id = $1 AND id = $2 AND status = 'open' RETURNING last_position",
        )
        .bind(session.id)
        .fetch_optional()
        .await?;
    let Some((position,)) = position else {
        return Ok(Err(Refusal::Ended));
    };
    let stored = Utterance {
        id: Uuid::now_v7(),
        position,
        sender,
        sequence: u.sequence,
        nonce: u.nonce,
        ciphertext: u.ciphertext,
        key_fingerprint: u.key_fingerprint,
        algorithm: u.algorithm,
        created_at: now,
    };
    tx.query(
        "INSERT INTO e2e_utterances (tenant_id, session_id, position, id, sender, sequence, nonce,
                                     ciphertext, key_fingerprint, algorithm, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(session.id)
    .bind(position)
    .bind(stored.id)
    .bind(sender)
    .bind(stored.sequence)
    .bind(stored.nonce.clone())
    .bind(stored.ciphertext.clone())
    .bind(stored.key_fingerprint.clone())
    .bind(stored.algorithm.clone())
    .bind(now)
    .execute()
    .await?;
    Ok(Ok(stored))
}

type UtteranceRow = (
    Uuid,
    i64,
    Uuid,
    i64,
    Vec<u8>,
    Vec<u8>,
    String,
    String,
    DateTime<Utc>,
);

/// Utterances of `session` after position `after`, in order, at most `limit`.
pub async fn page(
    tx: &mut TenantTx,
    session: Uuid,
    after: i64,
    limit: u32,
) -> Result<Vec<Utterance>> {
    let rows: Vec<UtteranceRow> = tx
        .query(
            "SELECT id, position, sender, sequence, nonce, ciphertext, key_fingerprint, algorithm,
                    created_at
             FROM e2e_utterances WHERE tenant_id = $1 AND session_id = $2 AND position > $3
             ORDER BY position LIMIT $4",
        )
        .bind(session)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| Utterance {
            id: r.0,
            position: r.1,
            sender: r.2,
            sequence: r.3,
            nonce: r.4,
            ciphertext: r.5,
            key_fingerprint: r.6,
            algorithm: r.7,
            created_at: r.8,
        })
        .collect())
}

/// Ends `session`: deletes every utterance and closes it to appends and invites. Returns
/// how many utterances were deleted.
pub async fn end(
    tx: &mut TenantTx,
    session: Uuid,
    now: DateTime<Utc>,
) -> Result<std::result::Result<u64, Refusal>> {
    let closed = tx
        .query(
            "UPDATE e2e_sessions SET status = 'ended', ended_at = $3
             WHERE tenant_id = $1 AND id = $2 AND status = 'open'",
        )
        .bind(session)
        .bind(now)
        .execute()
        .await?;
    if closed == 0 {
        return Ok(Err(Refusal::Ended));
    }
    let deleted = tx
        .query("DELETE FROM e2e_utterances WHERE tenant_id = $1 AND session_id = $2")
        .bind(session)
        .execute()
        .await?;
    Ok(Ok(deleted))
}

/// The tenant's retention window for utterances, in hours.
pub async fn retention_hours(tx: &mut TenantTx) -> Result<i64> {
    let row: Option<(i64,)> = tx
        .query("SELECT e2e_retention_hours FROM tenant_settings WHERE tenant_id = $1")
        .fetch_optional()
        .await?;
    Ok(row.map(|(h,)| h).unwrap_or(DEFAULT_RETENTION_HOURS))
}

/// Sets the tenant's retention window for utterances (1 to 8760 hours).
pub async fn set_retention_hours(tx: &mut TenantTx, hours: i64, now: DateTime<Utc>) -> Result<()> {
    if !(1..=8760).contains(&hours) {
        return Err(invalid(
            "e2e_retention_hours",
            "must be between 1 and 8760 hours",
        ));
    }
    let defaults = crate::sessions::SessionPolicy::default();
    tx.query(
        "INSERT INTO tenant_settings (tenant_id, session_idle_secs, session_absolute_secs, e2e_retention_hours, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET e2e_retention_hours = excluded.e2e_retention_hours,
             updated_at = excluded.updated_at",
    )
    .bind(defaults.idle.num_seconds())
    .bind(defaults.absolute.num_seconds())
    .bind(hours)
    .bind(now)
    .execute()
    .await?;
    Ok(())
}

/// Deletes the utterances older than the tenant's retention window; returns the count
/// deleted per session.
pub async fn sweep(tx: &mut TenantTx, now: DateTime<Utc>) -> Result<Vec<(Uuid, u64)>> {
    let cutoff = now - Duration::hours(retention_hours(tx).await?);
    let due: Vec<(Uuid, i64)> = tx
        .query(
            "SELECT session_id, count(*) FROM e2e_utterances
             WHERE tenant_id = $1 AND created_at < $2 GROUP BY session_id ORDER BY session_id",
        )
        .bind(cutoff)
        .fetch_all()
        .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    tx.query("DELETE FROM e2e_utterances WHERE tenant_id = $1 AND created_at < $2")
        .bind(cutoff)
        .execute()
        .await?;
    Ok(due.into_iter().map(|(s, n)| (s, n as u64)).collect())
}
