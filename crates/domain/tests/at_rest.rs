//! Encryption at rest, checked from the bytes up: no canary in any file or table, and
//! crypto-shredding that reaches copies of the database.

use std::path::Path;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use phivault_crypto::keys::KeyService;
use phivault_crypto::{CryptoError, keyring};
use phivault_domain::encounters::{self, NewEncounter};
use phivault_domain::patients::{self, Identifier, NewPatient};
use phivault_domain::users::{NewUser, PracticeAccess, Role};
use phivault_domain::{
    DomainError, PatientId, Phi, PracticeScope, TenantId, UserId, practices, tenants, users,
};
use phivault_store::{Db, DbOptions, TxMode};

const CANARIES: [&str; 4] = [
    "CANARYMRN9Z",
    "CanaryGiven9Z",
    "CanaryFamily9Z",
    "CanaryReason9Z",
];
const CANARY_DOB: &str = "1911-11-11";
/// A synthetic SSN (no real SSN starts with 9).
const CANARY_SSN: &str = "91122333";
const CANARY_MEMBER: &str = "CanaryMember9Z";

/// A local provider with its keyring and tenant roots in `dir`, apart from the data.
fn local_keys(dir: &Path) -> Arc<KeyService> {
    let path = dir.join("keyring.json");
    if !path.exists() {
        keyring::init(&path, b"synthetic test passphrase", false).unwrap();
    }
    Arc::new(KeyService::with_provider(Arc::new(
        keyring::unseal(&path, b"synthetic test passphrase").unwrap(),
    )))
}

struct Seeded {
    tenant: TenantId,
    user: UserId,
    patients: Vec<PatientId>,
}

async fn seed(db: &Db, keys: &KeyService, slug: &str) -> Seeded {
    let now = Utc::now();
    let mut p = db.begin_platform(TxMode::Write).await.unwrap();
    let tenant = tenants::create(&mut p, slug, "Synthetic Health (test)", now)
        .await
        .unwrap()
        .id;
    p.commit().await.unwrap();
    let mut tx = db.begin_tenant(tenant, TxMode::Write).await.unwrap();
    let practice = practices::create(&mut tx, "Synthetic Clinic", now)
        .await
        .unwrap()
        .id;
    let user = users::create(
        &mut tx,
        NewUser {
            email: "provider@example.test".into(),
            display_name: "Synthetic Provider".into(),
            roles: vec![Role::Provider],
            practices: PracticeAccess::All,
        },
        now,
    )
    .await
    .unwrap()
    .id;
    let mut ids = Vec::new();
    for n in 0..3 {
        let patient = patients::create(
            &mut tx,
            keys,
            PracticeScope::All,
            NewPatient {
                practice_id: practice,
                mrn: Phi::new(format!("{}{n}", CANARIES[0])),
                given_name: Phi::new(CANARIES[1].into()),
                family_name: Phi::new(CANARIES[2].into()),
                date_of_birth: Phi::new(NaiveDate::parse_from_str(CANARY_DOB, "%Y-%m-%d").unwrap()),
                ssn: Some(Phi::new(format!("{CANARY_SSN}{n}"))),
                identifiers: vec![Identifier {
                    kind: "insurance_member_id".into(),
                    value: Phi::new(format!("{CANARY_MEMBER}{n}")),
                }],
            },
            now,
        )
        .await
        .unwrap();
        encounters::create(
            &mut tx,
            keys,
            PracticeScope::All,
            user,
            NewEncounter {
                patient_id: patient.id,
                reason: Some(Phi::new(CANARIES[3].into())),
                started_at: None,
            },
            now,
        )
        .await
        .unwrap();
        ids.push(patient.id);
    }
    tx.commit().await.unwrap();
    Seeded {
        tenant,
        user,
        patients: ids,
    }
}

fn needles() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for c in CANARIES
        .iter()
        .copied()
        .chain([CANARY_DOB, CANARY_SSN, CANARY_MEMBER])
    {
        out.push(c.as_bytes().to_vec());
        out.push(c.to_uppercase().into_bytes());
        // As PostgreSQL renders bytea in text.
        out.push(
            c.bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
        );
    }
    out
}

fn assert_no_canary(label: &str, haystack: &[u8]) {
    for needle in needles() {
        assert!(
            !haystack
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "{label} contains a canary ({})",
            String::from_utf8_lossy(&needle)
        );
    }
}

fn scan_dir(dir: &Path) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files += scan_dir(&path);
        } else {
            assert_no_canary(&path.display().to_string(), &std::fs::read(&path).unwrap());
            files += 1;
        }
    }
    files
}

async fn read_patient(
    db: &Db,
    keys: &KeyService,
    tenant: TenantId,
    id: PatientId,
) -> Result<String, DomainError> {
    let mut tx = db.begin_tenant(tenant, TxMode::Read).await.unwrap();
    let p = patients::get(&mut tx, keys, PracticeScope::All, id).await?;
    Ok(p.family_name.into_inner())
}

fn is_destroyed(r: &Result<String, DomainError>) -> bool {
    matches!(r, Err(DomainError::Crypto(CryptoError::KeyDestroyed)))
}

async fn open_sqlite(path: &Path) -> Db {
    let db = Db::open_sqlite(path, &DbOptions::default()).await.unwrap();
    db.migrate().await.unwrap();
    db
}

fn copy_sqlite(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let src = format!("{}{suffix}", from.display());
        if Path::new(&src).exists() {
            std::fs::copy(&src, format!("{}{suffix}", to.display())).unwrap();
        }
    }
}

#[tokio::test]
async fn sqlite_no_canary_in_any_file() {
    let dir = tempfile::tempdir().unwrap();
    let keys = local_keys(&dir.path().join("keys"));
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let db = open_sqlite(&dir.path().join("data/phivault.db")).await;
    let s = seed(&db, &keys, "canary").await;
    // The clear values do come back to an authorized reader...
    assert_eq!(
        read_patient(&db, &keys, s.tenant, s.patients[0])
            .await
            .unwrap(),
        CANARIES[2]
    );
    let mut tx = db.begin_tenant(s.tenant, TxMode::Read).await.unwrap();
    let found = patients::find_by_mrn(
        &mut tx,
        &keys,
        PracticeScope::All,
        &format!("{}1", CANARIES[0].to_lowercase()),
    )
    .await
    .unwrap();
    assert_eq!(
        found.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![s.patients[1]]
    );
    drop(tx);
    db.close().await;
    // ... but no byte of the data or key directories holds one.
    let files = scan_dir(dir.path());
    assert!(files >= 3, "scanned only {files} files");
}

#[tokio::test]
async fn pg_no_canary_in_any_table() {
    let scratch = phivault_testkit::scratch_pg().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = local_keys(dir.path());
    let db = scratch.app_db(&DbOptions::default()).await.unwrap();
    let s = seed(&db, &keys, "canary").await;
    assert_eq!(
        read_patient(&db, &keys, s.tenant, s.patients[2])
            .await
            .unwrap(),
        CANARIES[2]
    );
    db.close().await;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&scratch.admin_url)
        .await
        .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(tables.len() >= 10);
    for table in tables {
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(string_agg(t::text, E'\\n'), '') FROM {table} t"
        )))
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_no_canary(&format!("table {table}"), text.as_bytes());
    }
    admin.close().await;
}

#[tokio::test]
async fn sqlite_tenant_shred_makes_a_copy_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let keys = local_keys(&dir.path().join("keys"));
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::create_dir_all(dir.path().join("backup")).unwrap();
    let live_path = dir.path().join("data/phivault.db");
    let db = open_sqlite(&live_path).await;
    let doomed = seed(&db, &keys, "doomed").await;
    let kept = seed(&db, &keys, "kept").await;
    db.close().await;
    let copy_path = dir.path().join("backup/phivault.db");
    copy_sqlite(&live_path, &copy_path);

    let db = open_sqlite(&live_path).await;
    let mut tx = db.begin_tenant(doomed.tenant, TxMode::Write).await.unwrap();
    keys.shred_tenant(&mut tx, Utc::now()).await.unwrap();
    tx.commit().await.unwrap();

    let copy = open_sqlite(&copy_path).await;
    for id in &doomed.patients {
        assert!(
            is_destroyed(&read_patient(&copy, &keys, doomed.tenant, *id).await),
            "the copy still opens"
        );
        assert!(is_destroyed(
            &read_patient(&db, &keys, doomed.tenant, *id).await
        ));
    }
    // Other tenants are untouched, in the copy and live.
    assert_eq!(
        read_patient(&copy, &keys, kept.tenant, kept.patients[0])
            .await
            .unwrap(),
        CANARIES[2]
    );
    assert_eq!(
        read_patient(&db, &keys, kept.tenant, kept.patients[0])
            .await
            .unwrap(),
        CANARIES[2]
    );
    // A shredded tenant cannot be given a fresh key and new PHI.
    let mut tx = db.begin_tenant(doomed.tenant, TxMode::Write).await.unwrap();
    assert!(
        keys.new_data_key(&mut tx, "patient", Utc::now())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn pg_tenant_shred_makes_a_copy_unreadable() {
    let scratch = phivault_testkit::scratch_pg().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = local_keys(dir.path());
    let db = scratch.app_db(&DbOptions::default()).await.unwrap();
    let doomed = seed(&db, &keys, "doomed").await;
    let kept = seed(&db, &keys, "kept").await;
    db.close().await;
    // The copy: a new database cloned from the live one, as a restored backup would be.
    let copy_url = pg_copy(&scratch).await;

    let db = scratch.app_db(&DbOptions::default()).await.unwrap();
    let mut tx = db.begin_tenant(doomed.tenant, TxMode::Write).await.unwrap();
    keys.shred_tenant(&mut tx, Utc::now()).await.unwrap();
    tx.commit().await.unwrap();

    let copy = Db::connect(&copy_url, &DbOptions::default()).await.unwrap();
    for id in &doomed.patients {
        assert!(
            is_destroyed(&read_patient(&copy, &keys, doomed.tenant, *id).await),
            "the copy still opens"
        );
    }
    assert_eq!(
        read_patient(&copy, &keys, kept.tenant, kept.patients[0])
            .await
            .unwrap(),
        CANARIES[2]
    );
    copy.close().await;
}

/// Clones the scratch database, as a restored backup would be; returns its serving-role
/// URL. Connections to the source must be closed.
async fn pg_copy(scratch: &phivault_store::scratch::ScratchPg) -> String {
    let copy_name = format!("{}_copy", scratch.name);
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&scratch.admin_url)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {copy_name} TEMPLATE {}",
        scratch.name
    )))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    scratch
        .app_url
        .replace(&format!("/{}", scratch.name), &format!("/{copy_name}"))
}

async fn erase_then_rotate(db: &Db, copy: &Db, keys: &KeyService, s: &Seeded) {
    let now = Utc::now();
    let erased = s.patients[0];
    let mut tx = db.begin_tenant(s.tenant, TxMode::Write).await.unwrap();
    patients::erase(&mut tx, keys, PracticeScope::User(s.user), erased, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(matches!(
        read_patient(db, keys, s.tenant, erased).await,
        Err(DomainError::NotFound("patient"))
    ));
    // Before the rotation the copy's rows still open: its data key rows are intact.
    assert!(read_patient(copy, keys, s.tenant, erased).await.is_ok());

    // Rotate, interrupted after one data key and resumed.
    let mut tx = db.begin_tenant(s.tenant, TxMode::Write).await.unwrap();
    let version = keys.begin_rotation(&mut tx, now).await.unwrap();
    assert_eq!(version, 2);
    let (done, remaining) = keys.rewrap_batch(&mut tx, version, 1).await.unwrap();
    assert_eq!(done, 1);
    assert!(remaining > 0);
    tx.commit().await.unwrap();
    let mut tx = db.begin_tenant(s.tenant, TxMode::Write).await.unwrap();
    assert!(
        keys.finish_rotation(&mut tx, version, now).await.is_err(),
        "old version destroyed before the rewrap ended"
    );
    drop(tx);
    let mut tx = db.begin_tenant(s.tenant, TxMode::Write).await.unwrap();
    assert_eq!(
        keys.begin_rotation(&mut tx, now).await.unwrap(),
        version,
        "resume found another version"
    );
    loop {
        let (_, remaining) = keys.rewrap_batch(&mut tx, version, 2).await.unwrap();
        if remaining == 0 {
            break;
        }
    }
    keys.finish_rotation(&mut tx, version, now).await.unwrap();
    tx.commit().await.unwrap();

    // Live: the survivors still open under the new version. Copy: nothing opens.
    assert_eq!(
        read_patient(db, keys, s.tenant, s.patients[1])
            .await
            .unwrap(),
        CANARIES[2]
    );
    assert!(
        is_destroyed(&read_patient(copy, keys, s.tenant, erased).await),
        "the erased record survives in the copy"
    );
}

#[tokio::test]
async fn sqlite_erase_and_rotation_make_a_copy_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let keys = local_keys(&dir.path().join("keys"));
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::create_dir_all(dir.path().join("backup")).unwrap();
    let live_path = dir.path().join("data/phivault.db");
    let db = open_sqlite(&live_path).await;
    let s = seed(&db, &keys, "erase").await;
    db.close().await;
    copy_sqlite(&live_path, &dir.path().join("backup/phivault.db"));
    let db = open_sqlite(&live_path).await;
    let copy = open_sqlite(&dir.path().join("backup/phivault.db")).await;
    erase_then_rotate(&db, &copy, &keys, &s).await;
}

#[tokio::test]
async fn pg_erase_and_rotation_make_a_copy_unreadable() {
    let scratch = phivault_testkit::scratch_pg().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = local_keys(dir.path());
    let db = scratch.app_db(&DbOptions::default()).await.unwrap();
    let s = seed(&db, &keys, "erase").await;
    db.close().await;
    let copy_url = pg_copy(&scratch).await;
    let db = scratch.app_db(&DbOptions::default()).await.unwrap();
    let copy = Db::connect(&copy_url, &DbOptions::default()).await.unwrap();
    erase_then_rotate(&db, &copy, &keys, &s).await;
}
