//! The chains in the database: appending, checkpointing and reading back.
//!
//! Each tenant has its own chain (`audit_events`, under row-level security on
//! PostgreSQL) and the platform has one (`platform_audit_events`). Appenders serialise on
//! the chain's head row: `UPDATE ... SET seq = seq + n ... RETURNING` takes the row lock
//! on PostgreSQL (SQLite's writer already holds the database lock), so concurrent
//! transactions extend one linear sequence, and the primary key on (chain, seq) refuses
//! a fork outright. The head row is only a lock point and a shortcut; verification never
//! trusts it except to notice a cut tail.

use chrono::{DateTime, TimeZone, Utc};
use std::sync::LazyLock;

use phivault_store::{PlatformTx, Query, TenantId, TenantTx};

use crate::chain::{ChainedEvent, GENESIS, chain};
use crate::checkpoint::{Checkpoint, CheckpointSigner, SignedCheckpoint};
use crate::event::{Action, Actor, ActorKind, AuditEvent, Outcome, Resource, Source};
use crate::{AuditError, Result};

/// Which chain: one per tenant, and the platform's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChainId {
    /// Platform events (unseal, staff sign-in, refusals without a tenant).
    Platform,
    /// One tenant's events.
    Tenant(TenantId),
}

impl std::fmt::Display for ChainId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainId::Platform => f.write_str("platform"),
            ChainId::Tenant(t) => write!(f, "{t}"),
        }
    }
}

/// A stored event row, exactly as the database holds it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    seq: i64,
    time_us: i64,
    actor_kind: String,
    actor_id: String,
    actor_role: String,
    source_ip: String,
    source_user_agent: String,
    source_device: String,
    action: String,
    resource_type: String,
    resource_id: String,
    fields: String,
    outcome: String,
    reason: Option<String>,
    request_id: String,
    before_json: Option<String>,
    after_json: Option<String>,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

fn actor_kind(s: &str) -> Option<ActorKind> {
    Some(match s {
        "user" => ActorKind::User,
        "staff" => ActorKind::Staff,
        "operator" => ActorKind::Operator,
        "system" => ActorKind::System,
        "device" => ActorKind::Device,
        "anonymous" => ActorKind::Anonymous,
        _ => return None,
    })
}

fn outcome(s: &str) -> Option<Outcome> {
    Some(match s {
        "success" => Outcome::Success,
        "denied" => Outcome::Denied,
        "failure" => Outcome::Failure,
        _ => return None,
    })
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(us: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_micros(us).single()
}

fn hash32(v: &[u8]) -> Option<[u8; 32]> {
    v.try_into().ok()
}

impl EventRow {
    /// Decodes the row; a row that no longer decodes (an unknown action, bad JSON, a
    /// short hash) was altered, and is reported so by sequence number.
    pub(crate) fn decode(self, tenant: Option<TenantId>) -> Result<ChainedEvent> {
        let seq = self.seq;
        let bad = || AuditError::Undecodable {
            sequence: u64::try_from(seq).unwrap_or(0),
        };
        let json = |s: Option<String>| -> Result<Option<serde_json::Value>> {
            s.map(|s| serde_json::from_str(&s).map_err(|_| bad()))
                .transpose()
        };
        let event = AuditEvent {
            sequence: u64::try_from(seq).map_err(|_| bad())?,
            time: from_micros(self.time_us).ok_or_else(bad)?,
            tenant,
            actor: Actor {
                kind: actor_kind(&self.actor_kind).ok_or_else(bad)?,
                id: self.actor_id,
                role: self.actor_role,
            },
            source: Source {
                ip: self.source_ip,
                user_agent: self.source_user_agent,
                device: self.source_device,
            },
            action: self.action.parse::<Action>().map_err(|_| bad())?,
            resource: Resource {
                kind: self.resource_type,
                id: self.resource_id,
            },
            fields: serde_json::from_str(&self.fields).map_err(|_| bad())?,
            outcome: outcome(&self.outcome).ok_or_else(bad)?,
            reason: self.reason,
            request_id: self.request_id,
            before: json(self.before_json)?,
            after: json(self.after_json)?,
        };
        Ok(ChainedEvent {
            event,
            prev_hash: hash32(&self.prev_hash).ok_or_else(bad)?,
            hash: hash32(&self.hash).ok_or_else(bad)?,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    seq: i64,
    time_us: i64,
    head: Vec<u8>,
    public_key: Vec<u8>,
    signature: Vec<u8>,
}

impl CheckpointRow {
    fn decode(self) -> Result<(SignedCheckpoint, [u8; 32])> {
        let bad = || AuditError::Undecodable {
            sequence: u64::try_from(self.seq).unwrap_or(0),
        };
        let checkpoint = Checkpoint {
            sequence: u64::try_from(self.seq).map_err(|_| bad())?,
            head: hash32(&self.head).ok_or_else(bad)?,
            time: from_micros(self.time_us).ok_or_else(bad)?,
        };
        let signature: [u8; 64] = self.signature.as_slice().try_into().map_err(|_| bad())?;
        let key = hash32(&self.public_key).ok_or_else(bad)?;
        Ok((
            SignedCheckpoint {
                checkpoint,
                signature,
            },
            key,
        ))
    }
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn opt_json(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().map(crate::encoding::canonical_json)
}

fn fields_json(fields: &[String]) -> String {
    serde_json::to_string(fields).unwrap_or_else(|_| "[]".into())
}

/// Rows per INSERT statement: a batch of events is written in a few multi-row statements
/// rather than one statement per event (statement overhead dominates otherwise).
const INSERT_CHUNK: usize = 4;

const EVENT_COLUMNS: &str = "seq, time_us, actor_kind, actor_id, actor_role, source_ip, \
    source_user_agent, source_device, action, resource_type, resource_id, fields, outcome, \
    reason, request_id, before_json, after_json, prev_hash, hash";
const EVENT_PARAMS: usize = 19;

/// `INSERT INTO <table> (...) VALUES (...), ...` for 1 to [`INSERT_CHUNK`] rows. Tenant
/// rows all take `tenant_id` from `$1`, as the store's guard requires.
fn insert_statements(table: &str, tenant: bool) -> Vec<String> {
    (1..=INSERT_CHUNK)
        .map(|rows| {
            let first = if tenant { 2 } else { 1 };
            let values: Vec<String> = (0..rows)
                .map(|r| {
                    let params: Vec<String> = (0..EVENT_PARAMS)
                        .map(|i| format!("${}", first + r * EVENT_PARAMS + i))
                        .collect();
                    if tenant {
                        format!("($1, {})", params.join(", "))
                    } else {
                        format!("({})", params.join(", "))
                    }
                })
                .collect();
            format!(
                "INSERT INTO {table} ({}{EVENT_COLUMNS}) VALUES {}",
                if tenant { "tenant_id, " } else { "" },
                values.join(", ")
            )
        })
        .collect()
}

static TENANT_INSERTS: LazyLock<Vec<String>> =
    LazyLock::new(|| insert_statements("audit_events", true));
static PLATFORM_INSERTS: LazyLock<Vec<String>> =
    LazyLock::new(|| insert_statements("platform_audit_events", false));

/// Binds one event's columns, in [`EVENT_COLUMNS`] order.
fn bind_event<'t>(q: Query<'t>, c: &ChainedEvent) -> Query<'t> {
    let e = &c.event;
    q.bind(seq_i64(e.sequence))
        .bind(micros(e.time))
        .bind(e.actor.kind.as_str())
        .bind(e.actor.id.as_str())
        .bind(e.actor.role.as_str())
        .bind(e.source.ip.as_str())
        .bind(e.source.user_agent.as_str())
        .bind(e.source.device.as_str())
        .bind(e.action.as_str())
        .bind(e.resource.kind.as_str())
        .bind(e.resource.id.as_str())
        .bind(fields_json(&e.fields))
        .bind(e.outcome.as_str())
        .bind(e.reason.clone())
        .bind(e.request_id.as_str())
        .bind(opt_json(&e.before))
        .bind(opt_json(&e.after))
        .bind(c.prev_hash.to_vec())
        .bind(c.hash.to_vec())
}

/// The statements of one kind of chain. Tenant statements take the tenant as `$1`
/// (bound by the [`TenantTx`]); platform statements number their own parameters from
/// `$1`. Both bind the same values in the same order.
struct ChainSql {
    advance_head: &'static str,
    create_head: Option<&'static str>,
    set_head_hash: &'static str,
    head: &'static str,
    last_checkpoint: &'static str,
    events_after: &'static str,
    page: &'static str,
    insert_checkpoint: &'static str,
    checkpoints: &'static str,
}

const TENANT_SQL: ChainSql = ChainSql {
    advance_head: "UPDATE audit_heads SET seq = seq + $2 WHERE tenant_id = $1 RETURNING seq, hash",
    create_head: Some(
        "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2)
         ON CONFLICT (tenant_id) DO NOTHING",
    ),
    set_head_hash: "UPDATE audit_heads SET hash = $2 WHERE tenant_id = $1",
    head: "SELECT seq FROM audit_heads WHERE tenant_id = $1",
    last_checkpoint: "SELECT seq, time_us, head, public_key, signature FROM audit_checkpoints
         WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1",
    events_after: "SELECT seq, time_us, actor_kind, actor_id, actor_role, source_ip,
            source_user_agent, source_device, action, resource_type, resource_id, fields,
            outcome, reason, request_id, before_json, after_json, prev_hash, hash
         FROM audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq",
    page: "SELECT seq, time_us, actor_kind, actor_id, actor_role, source_ip,
            source_user_agent, source_device, action, resource_type, resource_id, fields,
            outcome, reason, request_id, before_json, after_json, prev_hash, hash
         FROM audit_events WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    insert_checkpoint: "INSERT INTO audit_checkpoints (tenant_id, seq, time_us, head, public_key,
            signature)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, seq) DO NOTHING",
    checkpoints: "SELECT seq, time_us, head, public_key, signature FROM audit_checkpoints
         WHERE tenant_id = $1 ORDER BY seq",
};

const PLATFORM_SQL: ChainSql = ChainSql {
    advance_head: "UPDATE platform_audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash",
    create_head: None,
    set_head_hash: "UPDATE platform_audit_head SET hash = $1 WHERE id = 1",
    head: "SELECT seq FROM platform_audit_head WHERE id = 1",
    last_checkpoint: "SELECT seq, time_us, head, public_key, signature
         FROM platform_audit_checkpoints ORDER BY seq DESC LIMIT 1",
    events_after: "SELECT seq, time_us, actor_kind, actor_id, actor_role, source_ip,
            source_user_agent, source_device, action, resource_type, resource_id, fields,
            outcome, reason, request_id, before_json, after_json, prev_hash, hash
         FROM platform_audit_events WHERE seq > $1 ORDER BY seq",
    page: "SELECT seq, time_us, actor_kind, actor_id, actor_role, source_ip,
            source_user_agent, source_device, action, resource_type, resource_id, fields,
            outcome, reason, request_id, before_json, after_json, prev_hash, hash
         FROM platform_audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
    insert_checkpoint: "INSERT INTO platform_audit_checkpoints (seq, time_us, head, public_key,
            signature)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
    checkpoints: "SELECT seq, time_us, head, public_key, signature FROM platform_audit_checkpoints
         ORDER BY seq",
};

/// A transaction on one chain: a tenant's ([`TenantTx`]) or the platform's
/// ([`PlatformTx`]).
trait ChainTx: Send {
    const SQL: ChainSql;
    fn statement(&mut self, sql: &'static str) -> Query<'_>;
    fn chain_tenant(&self) -> Option<TenantId>;
    fn insert(rows: usize) -> &'static str;
}

impl ChainTx for TenantTx {
    const SQL: ChainSql = TENANT_SQL;
    fn statement(&mut self, sql: &'static str) -> Query<'_> {
        self.query(sql)
    }
    fn chain_tenant(&self) -> Option<TenantId> {
        Some(self.tenant())
    }
    fn insert(rows: usize) -> &'static str {
        &LazyLock::force(&TENANT_INSERTS)[rows - 1]
    }
}

impl ChainTx for PlatformTx {
    const SQL: ChainSql = PLATFORM_SQL;
    fn statement(&mut self, sql: &'static str) -> Query<'_> {
        self.query(sql)
    }
    fn chain_tenant(&self) -> Option<TenantId> {
        None
    }
    fn insert(rows: usize) -> &'static str {
        &LazyLock::force(&PLATFORM_INSERTS)[rows - 1]
    }
}

async fn append<T: ChainTx>(tx: &mut T, events: Vec<AuditEvent>) -> Result<Vec<ChainedEvent>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let n = i64::try_from(events.len()).map_err(|_| AuditError::TooLarge)?;
    let head = loop {
        let head: Option<(i64, Vec<u8>)> = tx
            .statement(T::SQL.advance_head)
            .bind(n)
            .fetch_optional()
            .await?;
        match (head, T::SQL.create_head) {
            (Some(h), _) => break h,
            (None, Some(create)) => {
                tx.statement(create)
                    .bind(GENESIS.to_vec())
                    .execute()
                    .await?;
            }
            (None, None) => return Err(AuditError::CorruptHead),
        }
    };
    let chained = link(head, events, tx.chain_tenant())?;
    for rows in chained.chunks(INSERT_CHUNK) {
        let mut q = tx.statement(T::insert(rows.len()));
        for c in rows {
            q = bind_event(q, c);
        }
        q.execute().await?;
    }
    let last = chained.last().map(|c| c.hash).unwrap_or(GENESIS);
    tx.statement(T::SQL.set_head_hash)
        .bind(last.to_vec())
        .execute()
        .await?;
    Ok(chained)
}

/// Appends `events` to the transaction's tenant chain, numbering and linking them. The
/// events commit (or roll back) with the transaction.
pub async fn append_tenant(
    tx: &mut TenantTx,
    events: Vec<AuditEvent>,
) -> Result<Vec<ChainedEvent>> {
    append(tx, events).await
}

/// Appends `events` to the platform chain inside `tx`.
pub async fn append_platform(
    tx: &mut PlatformTx,
    events: Vec<AuditEvent>,
) -> Result<Vec<ChainedEvent>> {
    append(tx, events).await
}

/// Numbers and links `events` after the head (`seq` already advanced by their count).
fn link(
    (new_seq, prev): (i64, Vec<u8>),
    events: Vec<AuditEvent>,
    tenant: Option<TenantId>,
) -> Result<Vec<ChainedEvent>> {
    let mut prev = hash32(&prev).ok_or(AuditError::CorruptHead)?;
    let last = u64::try_from(new_seq).map_err(|_| AuditError::CorruptHead)?;
    let first = last + 1 - events.len() as u64;
    let mut out = Vec::with_capacity(events.len());
    for (i, mut event) in events.into_iter().enumerate() {
        event.sequence = first + i as u64;
        event.tenant = tenant;
        // The chain hashes microseconds; keep the stored event equal to what was hashed.
        event.time = from_micros(micros(event.time)).unwrap_or(event.time);
        let c = chain(prev, event);
        prev = c.hash;
        out.push(c);
    }
    Ok(out)
}

/// What a checkpoint attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointOutcome {
    /// A new checkpoint was signed and stored.
    Signed(SignedCheckpoint),
    /// Nothing new since the last checkpoint.
    UpToDate,
}

async fn checkpoint<T: ChainTx>(
    tx: &mut T,
    signer: &CheckpointSigner,
    now: DateTime<Utc>,
) -> Result<CheckpointOutcome> {
    let last: Option<CheckpointRow> = tx
        .statement(T::SQL.last_checkpoint)
        .fetch_optional()
        .await?;
    let (from, prev) = match last {
        Some(row) => {
            let (cp, _) = row.decode()?;
            (cp.checkpoint.sequence, cp.checkpoint.head)
        }
        None => (0, GENESIS),
    };
    let rows: Vec<EventRow> = tx
        .statement(T::SQL.events_after)
        .bind(seq_i64(from))
        .fetch_all()
        .await?;
    let Some(cp) = check_segment(from, prev, rows, tx.chain_tenant(), now)? else {
        return Ok(CheckpointOutcome::UpToDate);
    };
    let signed = signer.sign(cp);
    tx.statement(T::SQL.insert_checkpoint)
        .bind(seq_i64(cp.sequence))
        .bind(micros(cp.time))
        .bind(cp.head.to_vec())
        .bind(signer.verifying_key().to_bytes().to_vec())
        .bind(signed.signature.to_vec())
        .execute()
        .await?;
    Ok(CheckpointOutcome::Signed(signed))
}

/// Signs a checkpoint over the tenant chain's current head, after checking that the
/// events since the previous checkpoint link to it, so a checkpoint never vouches for a
/// broken chain.
pub async fn checkpoint_tenant(
    tx: &mut TenantTx,
    signer: &CheckpointSigner,
    now: DateTime<Utc>,
) -> Result<CheckpointOutcome> {
    checkpoint(tx, signer, now).await
}

/// [`checkpoint_tenant`] for the platform chain.
pub async fn checkpoint_platform(
    tx: &mut PlatformTx,
    signer: &CheckpointSigner,
    now: DateTime<Utc>,
) -> Result<CheckpointOutcome> {
    checkpoint(tx, signer, now).await
}

/// Checks that `rows` continue the chain from (`from`, `prev`) and returns the
/// checkpoint to sign over their end, if there is one.
fn check_segment(
    from: u64,
    mut prev: [u8; 32],
    rows: Vec<EventRow>,
    tenant: Option<TenantId>,
    now: DateTime<Utc>,
) -> Result<Option<Checkpoint>> {
    let mut expected = from + 1;
    for row in rows {
        let c = row.decode(tenant)?;
        let seq = c.event.sequence;
        let recomputed = chain(c.prev_hash, c.event.clone());
        if seq != expected || c.prev_hash != prev || recomputed.hash != c.hash {
            return Err(AuditError::BrokenChain { sequence: seq });
        }
        prev = c.hash;
        expected += 1;
    }
    if expected == from + 1 {
        return Ok(None);
    }
    Ok(Some(Checkpoint {
        sequence: expected - 1,
        head: prev,
        time: from_micros(micros(now)).unwrap_or(now),
    }))
}

/// A stored checkpoint and the public key it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The signed checkpoint.
    pub signed: SignedCheckpoint,
    /// The Ed25519 public key the row says signed it (verifiers pin their own).
    pub public_key: [u8; 32],
}

async fn checkpoints<T: ChainTx>(tx: &mut T) -> Result<Vec<StoredCheckpoint>> {
    let rows: Vec<CheckpointRow> = tx.statement(T::SQL.checkpoints).fetch_all().await?;
    rows.into_iter()
        .map(|r| {
            r.decode()
                .map(|(signed, public_key)| StoredCheckpoint { signed, public_key })
        })
        .collect()
}

/// Every checkpoint of the transaction's tenant chain, in order.
pub async fn tenant_checkpoints(tx: &mut TenantTx) -> Result<Vec<StoredCheckpoint>> {
    checkpoints(tx).await
}

/// Every checkpoint of the platform chain, in order.
pub async fn platform_checkpoints(tx: &mut PlatformTx) -> Result<Vec<StoredCheckpoint>> {
    checkpoints(tx).await
}

async fn page<T: ChainTx>(tx: &mut T, after: u64, limit: u32) -> Result<Vec<Result<ChainedEvent>>> {
    let rows: Vec<EventRow> = tx
        .statement(T::SQL.page)
        .bind(seq_i64(after))
        .bind(i64::from(limit))
        .fetch_all()
        .await?;
    let tenant = tx.chain_tenant();
    Ok(rows.into_iter().map(|r| r.decode(tenant)).collect())
}

/// A page of the tenant chain in sequence order: events with `seq > after`, at most
/// `limit`. Rows that no longer decode come back as errors naming their sequence.
pub async fn tenant_page(
    tx: &mut TenantTx,
    after: u64,
    limit: u32,
) -> Result<Vec<Result<ChainedEvent>>> {
    page(tx, after, limit).await
}

/// A page of the platform chain in sequence order.
pub async fn platform_page(
    tx: &mut PlatformTx,
    after: u64,
    limit: u32,
) -> Result<Vec<Result<ChainedEvent>>> {
    page(tx, after, limit).await
}

async fn head<T: ChainTx>(tx: &mut T) -> Result<u64> {
    let row: Option<(i64,)> = tx.statement(T::SQL.head).fetch_optional().await?;
    Ok(row.map(|(s,)| u64::try_from(s).unwrap_or(0)).unwrap_or(0))
}

/// The head the chain's head row records (sequence 0 for a chain never written). A
/// chain whose last event is below it lost its tail.
pub async fn tenant_head(tx: &mut TenantTx) -> Result<u64> {
    head(tx).await
}

/// The platform chain's recorded head.
pub async fn platform_head(tx: &mut PlatformTx) -> Result<u64> {
    head(tx).await
}

/// Filters for listing a tenant's events, newest first.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this actor id.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<Action>,
    /// Only this resource type.
    pub resource_type: Option<String>,
    /// Only this resource id.
    pub resource_id: Option<String>,
    /// At or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only events with a sequence number below this (the page cursor).
    pub before_seq: Option<u64>,
}

/// Lists the tenant's events matching `filter`, newest first, at most `limit`.
pub async fn list_tenant(
    tx: &mut TenantTx,
    filter: &EventFilter,
    limit: u32,
) -> Result<Vec<ChainedEvent>> {
    let rows: Vec<EventRow> = tx
        .query(
            "SELECT seq, time_us, actor_kind, actor_id, actor_role, source_ip, source_user_agent,
                    source_device, action, resource_type, resource_id, fields, outcome, reason,
                    request_id, before_json, after_json, prev_hash, hash
             FROM audit_events
             WHERE tenant_id = $1
               AND (CAST($2 AS TEXT) IS NULL OR actor_id = $2)
               AND (CAST($3 AS TEXT) IS NULL OR action = $3)
               AND (CAST($4 AS TEXT) IS NULL OR resource_type = $4)
               AND (CAST($5 AS TEXT) IS NULL OR resource_id = $5)
               AND (CAST($6 AS BIGINT) IS NULL OR time_us >= $6)
               AND (CAST($7 AS BIGINT) IS NULL OR time_us < $7)
               AND (CAST($8 AS BIGINT) IS NULL OR seq < $8)
             ORDER BY seq DESC LIMIT $9",
        )
        .bind(filter.actor.clone())
        .bind(filter.action.map(|a| a.as_str().to_string()))
        .bind(filter.resource_type.clone())
        .bind(filter.resource_id.clone())
        .bind(filter.since.map(micros))
        .bind(filter.until.map(micros))
        .bind(filter.before_seq.map(seq_i64))
        .bind(i64::from(limit))
        .fetch_all()
        .await?;
    let tenant = tx.tenant();
    rows.into_iter().map(|r| r.decode(Some(tenant))).collect()
}
