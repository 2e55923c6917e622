//! `phivault audit verify | export | checkpoint`, black-box: a site's trail is written
//! through the real `Auditor`, then the binary checkpoints, verifies and exports it, and
//! must name the first altered event once the database is tampered with behind its back.
//! All events are synthetic and carry no PHI.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::process::Output;

use chrono::{DateTime, Duration, TimeZone, Utc};
use phivault_audit::{
    Action, Actor, ActorKind, AuditConfig, AuditEvent, Auditor, Outcome, Resource, Source,
};
use phivault_store::{Db, DbOptions, TenantId};
use serde_json::Value;
use support::{Backend, Site};
use uuid::Uuid;

/// Events written to tenant A's chain, tenant B's and the platform's.
const A_EVENTS: u64 = 12;
const B_EVENTS: u64 = 5;
/// Events the test writes to the platform chain, after the two that `tenant create`
/// records there (one per tenant).
const PLATFORM_WRITTEN: u64 = 3;
const PLATFORM_EVENTS: u64 = PLATFORM_WRITTEN + 2;
const TOTAL: u64 = A_EVENTS + B_EVENTS + PLATFORM_EVENTS;
/// The event of tenant A the tamper test alters.
const ALTERED: u64 = 7;

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

/// The `i`th synthetic event (from 1), `i` minutes after the base time.
fn event(tenant: Option<TenantId>, i: u64) -> AuditEvent {
    let (action, fields) = match i % 4 {
        0 => (
            Action::PhiRead,
            vec!["mrn".to_string(), "family_name".into()],
        ),
        1 => (Action::AuthLogin, vec![]),
        2 => (Action::PhiUpdate, vec!["date_of_birth".to_string()]),
        _ => (Action::AdminUserChanged, vec![]),
    };
    let staff = action == Action::AdminUserChanged;
    AuditEvent {
        sequence: 0,
        time: base_time() + Duration::minutes(i as i64),
        tenant,
        actor: Actor {
            kind: if staff {
                ActorKind::Staff
            } else {
                ActorKind::User
            },
            id: Uuid::from_u128(u128::from(i)).to_string(),
            role: "provider".into(),
        },
        source: Source {
            ip: "127.0.0.1".into(),
            user_agent: "audit-cli-test (synthetic)".into(),
            device: String::new(),
        },
        action,
        resource: Resource {
            kind: "patient".into(),
            id: Uuid::from_u128(1000 + u128::from(i)).to_string(),
        },
        fields,
        outcome: if i.is_multiple_of(5) {
            Outcome::Denied
        } else {
            Outcome::Success
        },
        reason: i.is_multiple_of(5).then(|| "synthetic refusal".to_string()),
        request_id: format!("req-{i}"),
        before: staff.then(|| serde_json::json!({"role": "member"})),
        after: staff.then(|| serde_json::json!({"role": "admin"})),
    }
}

/// The site's database URL, as its CLI arguments name it.
fn database_url(site: &Site) -> String {
    match site.backend {
        Backend::Sqlite => format!("sqlite://{}", site.data_dir().join("phivault.db").display()),
        Backend::Postgres => {
            let args = site.args();
            let i = args
                .iter()
                .position(|a| a == "--database-url")
                .expect("a PostgreSQL site names its database");
            args[i + 1].to_string_lossy().to_string()
        }
    }
}

/// Writes the synthetic trail through the real auditor (group commit), as the server
/// would.
async fn populate(site: &Site, a: TenantId, b: TenantId) {
    let db = Db::connect(&database_url(site), &DbOptions::default())
        .await
        .expect("open the site's database");
    let auditor = Auditor::start(db.clone(), AuditConfig::default());
    for i in 1..=A_EVENTS {
        assert_eq!(auditor.record(event(Some(a), i)).await.unwrap(), i);
    }
    for i in 1..=B_EVENTS {
        assert_eq!(auditor.record(event(Some(b), i)).await.unwrap(), i);
    }
    for i in 1..=PLATFORM_WRITTEN {
        assert_eq!(auditor.record(event(None, i)).await.unwrap(), i + 2);
    }
    db.close().await;
}

/// Alters one stored event's actor behind phivault's back, as someone with direct
/// database access would: the append-only trigger is dropped (disabled) first.
async fn tamper(site: &Site, tenant: TenantId, seq: u64) {
    match site.backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database_url(site))
                .await
                .unwrap();
            sqlx::query("DROP TRIGGER audit_events_no_update")
                .execute(&pool)
                .await
                .unwrap();
            let done = sqlx::query(
                "UPDATE audit_events SET actor_id = 'forged-actor' WHERE tenant_id = ? AND seq = ?",
            )
            .bind(tenant.as_uuid())
            .bind(seq as i64)
            .execute(&pool)
            .await
            .unwrap();
            assert_eq!(done.rows_affected(), 1);
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(site.pg_admin_url().unwrap())
                .await
                .unwrap();
            sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER append_only")
                .execute(&pool)
                .await
                .unwrap();
            let done = sqlx::query(
                "UPDATE audit_events SET actor_id = 'forged-actor' WHERE tenant_id = $1 AND seq = $2",
            )
            .bind(tenant.as_uuid())
            .bind(seq as i64)
            .execute(&pool)
            .await
            .unwrap();
            assert_eq!(done.rows_affected(), 1);
            pool.close().await;
        }
    }
}

struct Run {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(site: &Site, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = site.cli_output(args);
    Run {
        ok: status.success(),
        code: status.code(),
        stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
    }
}

#[track_caller]
fn must(site: &Site, args: &[&str]) -> Run {
    let r = run(site, args);
    assert!(
        r.ok,
        "phivault {args:?} failed ({:?}):\n{}\n{}",
        r.code, r.stdout, r.stderr
    );
    r
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

async fn audit_cli(backend: Backend) {
    let site = Site::new(backend).await;
    let a_text = site.cli(&[
        "tenant",
        "create",
        "--slug",
        "audit-a",
        "--name",
        "Synthetic A",
    ]);
    let b_text = site.cli(&[
        "tenant",
        "create",
        "--slug",
        "audit-b",
        "--name",
        "Synthetic B",
    ]);
    let a: TenantId = a_text.parse().unwrap();
    let b: TenantId = b_text.parse().unwrap();
    populate(&site, a, b).await;

    // Before any checkpoint: the chains verify, every event is reported unsigned.
    let r = must(&site, &["audit", "verify"]);
    assert!(
        r.stdout.contains(&format!(
            "audit chain {a}: ok, {A_EVENTS} events, signed through 0, {A_EVENTS} unsigned"
        )),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("warning: audit chain"), "{}", r.stderr);

    // Checkpoint every chain; the key is printed and the witness gets a copy.
    let r = must(&site, &["audit", "checkpoint"]);
    for (chain, n) in [
        ("platform".to_string(), PLATFORM_EVENTS),
        (a.to_string(), A_EVENTS),
        (b.to_string(), B_EVENTS),
    ] {
        assert!(
            r.stdout.contains(&format!(
                "audit chain {chain}: checkpoint signed at sequence {n}"
            )),
            "{}",
            r.stdout
        );
    }
    let key = r
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint key "))
        .unwrap_or_else(|| panic!("no checkpoint key in: {}", r.stderr))
        .trim()
        .to_string();
    assert_eq!(key.len(), 64);
    let witnessed = site
        .data_dir()
        .join("audit-witness")
        .join(b.to_string())
        .join(format!("{B_EVENTS:020}.json"));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(&witnessed).unwrap()).unwrap();
    assert_eq!(record["format"], "phivault-audit-checkpoint-v1");
    assert_eq!(record["chain"], b.to_string());
    assert_eq!(record["public_key"], key);
    assert_eq!(record["checkpoint"]["checkpoint"]["sequence"], B_EVENTS);
    let r = must(&site, &["audit", "checkpoint"]);
    assert!(
        r.stdout.contains(&format!("audit chain {a}: up to date")),
        "{}",
        r.stdout
    );

    // Now everything is signed, with the key hierarchy's keys or the printed key.
    for args in [
        vec!["audit", "verify"],
        vec!["audit", "verify", "--public-key", &key],
        vec!["audit", "verify", "--no-witness"],
    ] {
        let r = must(&site, &args);
        for (chain, n) in [
            ("platform".to_string(), PLATFORM_EVENTS),
            (a.to_string(), A_EVENTS),
            (b.to_string(), B_EVENTS),
        ] {
            assert!(
                r.stdout.contains(&format!(
                    "audit chain {chain}: ok, {n} events, signed through {n}, 0 unsigned"
                )),
                "{args:?}: {}",
                r.stdout
            );
        }
        assert!(!r.stderr.contains("warning"), "{args:?}: {}", r.stderr);
    }
    let r = must(&site, &["audit", "verify", "--tenant", "audit-b"]);
    assert!(r.stdout.contains(&format!("audit chain {b}: ok")));
    assert!(!r.stdout.contains("audit chain platform"), "{}", r.stdout);

    // Another key does not vouch for these checkpoints.
    let other = "5866666666666666666666666666666666666666666666666666666666666666";
    let r = run(&site, &["audit", "verify", "--public-key", other]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains(&format!(
            "audit chain platform: FAULT at sequence {PLATFORM_EVENTS}: checkpoint at {PLATFORM_EVENTS} has a bad signature"
        )),
        "{}",
        r.stderr
    );

    // A doctored witness copy is caught, unless the witness is left out.
    let original = std::fs::read_to_string(&witnessed).unwrap();
    let mut forged: Value = serde_json::from_str(&original).unwrap();
    forged["checkpoint"]["checkpoint"]["head"][0] = Value::from(1);
    std::fs::write(&witnessed, serde_json::to_vec(&forged).unwrap()).unwrap();
    let r = run(&site, &["audit", "verify", "--tenant", &b.to_string()]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains(&format!(
            "audit chain {b}: FAULT at sequence {B_EVENTS}: checkpoint at {B_EVENTS} has a bad signature"
        )),
        "{}",
        r.stderr
    );
    must(
        &site,
        &[
            "audit",
            "verify",
            "--tenant",
            &b.to_string(),
            "--no-witness",
        ],
    );
    std::fs::write(&witnessed, original).unwrap();

    // FHIR export: one AuditEvent per event, ids unique.
    let r = must(&site, &["audit", "export", "--format", "fhir-ndjson"]);
    let resources = json_lines(&r.stdout);
    assert_eq!(resources.len() as u64, TOTAL);
    let mut ids = HashSet::new();
    for res in &resources {
        assert_eq!(res["resourceType"], "AuditEvent", "{res}");
        assert_eq!(
            res["type"]["system"],
            "http://dicom.nema.org/resources/ontology/DCM"
        );
        assert!(["C", "R", "U", "D", "E"].contains(&res["action"].as_str().unwrap()));
        assert!(["0", "4", "8"].contains(&res["outcome"].as_str().unwrap()));
        assert_eq!(res["source"]["observer"]["display"], "phivault");
        assert!(ids.insert(res["id"].as_str().unwrap().to_string()));
    }
    assert!(ids.contains(&format!("{a}-{A_EVENTS}")));
    assert!(ids.contains("platform-1"));

    // JSON lines to a file: every event once, each linking to the previous one.
    let out = site.data_dir().join("trail.jsonl");
    let out_arg = out.to_str().unwrap();
    let r = must(
        &site,
        &["audit", "export", "--format", "jsonl", "--out", out_arg],
    );
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr
            .contains(&format!("exported {TOTAL} audit event(s) from 3 chain(s)")),
        "{}",
        r.stderr
    );
    let lines = json_lines(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(lines.len() as u64, TOTAL);
    let mut by_chain: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for l in &lines {
        by_chain
            .entry(l["chain"].as_str().unwrap().to_string())
            .or_default()
            .push(l);
    }
    assert_eq!(by_chain["platform"].len() as u64, PLATFORM_EVENTS);
    assert_eq!(by_chain[&a.to_string()].len() as u64, A_EVENTS);
    assert_eq!(by_chain[&b.to_string()].len() as u64, B_EVENTS);
    for events in by_chain.values() {
        let mut prev = "0".repeat(64);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["sequence"], i as u64 + 1);
            assert_eq!(e["prev_hash"], prev.as_str());
            prev = e["hash"].as_str().unwrap().to_string();
            assert_eq!(prev.len(), 64);
        }
    }
    assert_eq!(by_chain[&a.to_string()][0]["tenant"], a.to_string());
    assert_eq!(by_chain[&a.to_string()][0]["action"], "auth.login");

    // A time range of one tenant: [base + 5 min, base + 9 min) holds events 5 to 8.
    let since = (base_time() + Duration::minutes(5)).to_rfc3339();
    let until = (base_time() + Duration::minutes(9)).to_rfc3339();
    let r = must(
        &site,
        &[
            "audit", "export", "--format", "jsonl", "--tenant", "audit-a", "--since", &since,
            "--until", &until,
        ],
    );
    let seqs: Vec<u64> = json_lines(&r.stdout)
        .iter()
        .map(|l| l["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 6, 7, 8]);

    // Bad arguments: a clear message and a non-zero exit.
    for (args, says) in [
        (
            vec!["audit", "export", "--format", "xml"],
            "invalid value 'xml'",
        ),
        (
            vec![
                "audit",
                "export",
                "--format",
                "jsonl",
                "--since",
                "yesterday",
            ],
            "RFC 3339",
        ),
        (
            vec![
                "audit", "export", "--format", "jsonl", "--since", &until, "--until", &since,
            ],
            "--since must be before --until",
        ),
        (
            vec![
                "audit", "export", "--format", "jsonl", "--tenant", "no-such",
            ],
            "no-such",
        ),
        (
            vec!["audit", "verify", "--public-key", "abc"],
            "64 hex digits",
        ),
    ] {
        let r = run(&site, &args);
        assert!(!r.ok, "{args:?} succeeded");
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?} wrote: {}", r.stdout);
    }

    // Alter one event behind phivault's back: verify names the chain, the sequence and
    // the kind of fault, and exits non-zero; the other tenant's chain still verifies.
    tamper(&site, a, ALTERED).await;
    let r = run(&site, &["audit", "verify"]);
    assert!(!r.ok, "a tampered trail verified: {}", r.stdout);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains(&format!(
            "audit chain {a}: FAULT at sequence {ALTERED}: event {ALTERED} was altered"
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("audit chain platform: ok"),
        "{}",
        r.stdout
    );
    let r = run(&site, &["audit", "verify", "--public-key", &key]);
    assert!(!r.ok);
    assert!(r.stderr.contains(&format!("FAULT at sequence {ALTERED}")));
    must(&site, &["audit", "verify", "--tenant", &b.to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_audit_verify_export_checkpoint() {
    audit_cli(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_audit_verify_export_checkpoint() {
    audit_cli(Backend::Postgres).await;
}
