//! Shared helpers for the audit storage tests: databases on both backends (SQLite in a
//! temp file; PostgreSQL as a scratch database served by the non-owner app role),
//! tenants, synthetic events and raw row writes for tampering.

#![allow(dead_code)]

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use phivault_audit::witness::Witness;
use phivault_audit::{
    Action, Actor, ActorKind, AuditEvent, ChainedEvent, Outcome, Resource, Source,
};
use phivault_store::scratch::ScratchPg;
use phivault_store::{Db, DbOptions, ObjectStoreConfig, TenantId, TxMode};
use uuid::Uuid;

/// A database under test and what keeps it alive.
pub struct TestDb {
    /// The pool the code under test uses (the app role on PostgreSQL).
    pub db: Db,
    /// Scratch directory: the SQLite file and the witness live here.
    pub dir: tempfile::TempDir,
    /// The SQLite file, on SQLite.
    pub sqlite_path: Option<PathBuf>,
    /// The scratch database, on PostgreSQL.
    pub pg: Option<ScratchPg>,
}

fn opts() -> DbOptions {
    DbOptions {
        max_connections: 24,
        ..DbOptions::default()
    }
}

impl TestDb {
    /// A migrated SQLite database in a temp file.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let db = Db::open_sqlite(&path, &opts()).await.unwrap();
        db.migrate().await.unwrap();
        TestDb {
            db,
            dir,
            sqlite_path: Some(path),
            pg: None,
        }
    }

    /// A scratch PostgreSQL database, migrated by its owner, served as the app role.
    pub async fn postgres() -> TestDb {
        let scratch = phivault_testkit::scratch_pg().await;
        let db = scratch.app_db(&opts()).await.unwrap();
        TestDb {
            db,
            dir: tempfile::tempdir().unwrap(),
            sqlite_path: None,
            pg: Some(scratch),
        }
    }

    /// Both backends, SQLite first.
    pub async fn each() -> [TestDb; 2] {
        [TestDb::sqlite().await, TestDb::postgres().await]
    }

    /// `sqlite` or `postgres`, for assertion messages.
    pub fn name(&self) -> &'static str {
        self.db.backend().as_str()
    }

    /// A witness in the scratch directory.
    pub fn witness(&self) -> Witness {
        Witness::open(
            &ObjectStoreConfig::Local {
                root: self.dir.path().join("witness"),
            },
            "",
        )
        .unwrap()
    }

    /// Where the witness keeps `chain`'s checkpoint at `seq`.
    pub fn witness_file(&self, chain: &str, seq: u64) -> PathBuf {
        self.dir
            .path()
            .join("witness")
            .join(chain)
            .join(format!("{seq:020}.json"))
    }

    /// Closes the pool and drops the scratch database.
    pub async fn close(self) {
        self.db.close().await;
        if let Some(pg) = self.pg {
            pg.drop_database(&phivault_testkit::pg_admin_url())
                .await
                .unwrap();
        }
    }
}

/// Registers a tenant (the chains reference `tenants`).
pub async fn create_tenant(db: &Db) -> TenantId {
    let tenant = TenantId::generate();
    let slug = format!("t-{}", &tenant.as_uuid().simple().to_string()[20..]);
    let mut tx = db.begin_platform(TxMode::Write).await.unwrap();
    tx.query(
        "INSERT INTO tenants (id, slug, name, status, created_at) VALUES ($1, $2, $3, 'active', $4)",
    )
    .bind(tenant)
    .bind(slug)
    .bind("Synthetic tenant")
    .bind(Utc::now())
    .execute()
    .await
    .unwrap();
    tx.commit().await.unwrap();
    tenant
}

/// A synthetic event (identifiers only), varied by `n`; `request_id` is `tag-n`.
pub fn event(tag: &str, n: u64, tenant: Option<TenantId>) -> AuditEvent {
    const KINDS: [ActorKind; 4] = [
        ActorKind::User,
        ActorKind::Staff,
        ActorKind::System,
        ActorKind::Device,
    ];
    const OUTCOMES: [Outcome; 3] = [Outcome::Success, Outcome::Denied, Outcome::Failure];
    let fields: Vec<String> = ["mrn", "family_name", "given_name", "date_of_birth"]
        .iter()
        .take((n % 4) as usize)
        .map(|s| s.to_string())
        .collect();
    AuditEvent {
        sequence: 0,
        time: Utc
            .timestamp_micros(1_800_000_000_000_000 + n as i64 * 1_001)
            .unwrap(),
        tenant,
        actor: Actor {
            kind: KINDS[(n % 4) as usize],
            id: Uuid::from_u128(0xac70_0000 + u128::from(n % 13)).to_string(),
            role: "provider".into(),
        },
        source: Source {
            ip: "127.0.0.1".into(),
            user_agent: "synthetic-test".into(),
            device: if n.is_multiple_of(3) {
                String::new()
            } else {
                format!("device-{}", n % 5)
            },
        },
        action: Action::ALL[(n as usize * 7) % Action::ALL.len()],
        resource: Resource {
            kind: "patient".into(),
            id: Uuid::from_u128(u128::from(n) * 7 + 1).to_string(),
        },
        fields,
        outcome: OUTCOMES[(n % 3) as usize],
        reason: n.is_multiple_of(5).then(|| "synthetic reason".into()),
        request_id: format!("{tag}-{n}"),
        before: n
            .is_multiple_of(7)
            .then(|| serde_json::json!({"role": "member", "status": "active"})),
        after: n
            .is_multiple_of(7)
            .then(|| serde_json::json!({"status": "active", "role": "admin", "n": n})),
    }
}

/// The stored form of `fields` and of the JSON snapshots (the ledger's own encoding:
/// a JSON array, and JSON with sorted keys; the hash covers the parsed value, so any
/// JSON spelling of the same value would do).
pub fn fields_json(e: &AuditEvent) -> String {
    serde_json::to_string(&e.fields).unwrap()
}

/// See [`fields_json`].
pub fn snapshot_json(v: &Option<serde_json::Value>) -> Option<String> {
    v.as_ref().map(|v| serde_json::to_string(v).unwrap())
}

/// Inserts `c` as a raw `audit_events` row of `tenant`, on a raw SQLite or PostgreSQL
/// connection (`$conn` is anything that derefs to the connection, e.g. `&mut *tx`).
#[macro_export]
macro_rules! insert_event_row {
    ($conn:expr, $tenant:expr, $c:expr) => {{
        let c: &phivault_audit::ChainedEvent = $c;
        let e = &c.event;
        sqlx::query(
            "INSERT INTO audit_events (tenant_id, seq, time_us, actor_kind, actor_id, actor_role,
                 source_ip, source_user_agent, source_device, action, resource_type, resource_id,
                 fields, outcome, reason, request_id, before_json, after_json, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19, $20)",
        )
        .bind($tenant.as_uuid())
        .bind(e.sequence as i64)
        .bind(e.time.timestamp_micros())
        .bind(e.actor.kind.as_str())
        .bind(e.actor.id.as_str())
        .bind(e.actor.role.as_str())
        .bind(e.source.ip.as_str())
        .bind(e.source.user_agent.as_str())
        .bind(e.source.device.as_str())
        .bind(e.action.as_str())
        .bind(e.resource.kind.as_str())
        .bind(e.resource.id.as_str())
        .bind($crate::common::fields_json(e))
        .bind(e.outcome.as_str())
        .bind(e.reason.clone())
        .bind(e.request_id.as_str())
        .bind($crate::common::snapshot_json(&e.before))
        .bind($crate::common::snapshot_json(&e.after))
        .bind(c.prev_hash.to_vec())
        .bind(c.hash.to_vec())
        .execute($conn)
        .await
        .unwrap();
    }};
}

/// Recomputes every hash from index `from` on, as a forger with database access would.
pub fn rehash(events: &mut [ChainedEvent], from: usize) {
    let mut prev = if from == 0 {
        phivault_audit::GENESIS
    } else {
        events[from - 1].hash
    };
    for e in events[from..].iter_mut() {
        *e = phivault_audit::chain(prev, e.event.clone());
        prev = e.hash;
    }
}

/// Every event of a tenant chain, read through the ledger (panics on an undecodable row).
pub async fn read_tenant_chain(db: &Db, tenant: TenantId) -> Vec<ChainedEvent> {
    let mut out = Vec::new();
    loop {
        let after = out
            .last()
            .map(|c: &ChainedEvent| c.event.sequence)
            .unwrap_or(0);
        let mut tx = db.begin_tenant(tenant, TxMode::Read).await.unwrap();
        let page = phivault_audit::ledger::tenant_page(&mut tx, after, 1000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page.into_iter().map(|r| r.unwrap()));
    }
}

/// Every event of the platform chain.
pub async fn read_platform_chain(db: &Db) -> Vec<ChainedEvent> {
    let mut out = Vec::new();
    loop {
        let after = out
            .last()
            .map(|c: &ChainedEvent| c.event.sequence)
            .unwrap_or(0);
        let mut tx = db.begin_platform(TxMode::Read).await.unwrap();
        let page = phivault_audit::ledger::platform_page(&mut tx, after, 1000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page.into_iter().map(|r| r.unwrap()));
    }
}

/// A small deterministic generator, so a failure names its case.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}
