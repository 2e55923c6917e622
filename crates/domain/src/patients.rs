//! Patients. Every identifying field is [`Phi`] in memory and an envelope at rest, sealed
//! under the patient's own data key and bound to tenant, patient and field. The MRN is
//! looked up through the tenant's keyed blind index. Lookups are confined to the
//! caller's practices in SQL.

use chrono::{DateTime, NaiveDate, Utc};
use phivault_crypto::keys::KeyService;

use crate::sealed::{DataKeyColumns, data_key_columns, text};
use phivault_crypto::{Binding, CryptoError};
use phivault_store::{TenantId, TenantTx};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{invalid, on_write};
use crate::{DomainError, PatientId, Phi, PracticeId, PracticeScope, Result, practices, validate};

/// A patient of a practice.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Patient {
    /// Identifier.
    pub id: PatientId,
    /// The practice the patient belongs to.
    pub practice_id: PracticeId,
    /// Medical record number.
    pub mrn: Phi<String>,
    /// Given name.
    pub given_name: Phi<String>,
    /// Family name.
    pub family_name: Phi<String>,
    /// Date of birth.
    pub date_of_birth: Phi<NaiveDate>,
    /// US Social Security number, if recorded (digits only).
    pub ssn: Option<Phi<String>>,
    /// Further identifiers, by kind.
    pub identifiers: Vec<Identifier>,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
}

/// What it takes to register a patient.
#[derive(Clone, Debug)]
pub struct NewPatient {
    /// The practice.
    pub practice_id: PracticeId,
    /// Medical record number.
    pub mrn: Phi<String>,
    /// Given name.
    pub given_name: Phi<String>,
    /// Family name.
    pub family_name: Phi<String>,
    /// Date of birth.
    pub date_of_birth: Phi<NaiveDate>,
    /// US Social Security number (9 digits, dashes allowed), if recorded.
    pub ssn: Option<Phi<String>>,
    /// Further identifiers (at most one per kind, at most 10).
    pub identifiers: Vec<Identifier>,
}

/// A further patient identifier: an insurance member id, a driver's licence number, a
/// chart number of another system. Every identifier is treated as sensitive: sealed under
/// the patient's data key and found only by blind index.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Identifier {
    /// The kind, chosen by the tenant: `a-z`, digits and `_`, 2 to 40 characters.
    pub kind: String,
    /// The value.
    pub value: Phi<String>,
}

const MAX_IDENTIFIERS: usize = 10;

fn check_kind(kind: &str) -> Result<()> {
    let ok = (2..=40).contains(&kind.len())
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "identifiers.kind",
            "must be 2-40 of a-z, 0-9 and _, starting with a letter",
        ))
    }
}

fn identifier_field(kind: &str) -> String {
    format!("identifier:{kind}")
}

const KIND: &str = "patient";

fn binding(tenant: TenantId, id: Uuid, field: &str) -> Binding<'_> {
    Binding {
        tenant,
        kind: KIND,
        object: id,
        field,
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    practice_id: Uuid,
    mrn: Vec<u8>,
    given_name: Vec<u8>,
    family_name: Vec<u8>,
    date_of_birth: Vec<u8>,
    ssn: Option<Vec<u8>>,
    created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    dk: DataKeyColumns,
}

/// A patient query: the sealed columns with the row's wrapped data key, then `$rest`.
macro_rules! select_patients {
    ($($rest:expr),+ $(,)?) => {
        concat!(
            "SELECT p.id, p.practice_id, p.mrn, p.given_name, p.family_name, p.date_of_birth, p.ssn, p.created_at,
                    ",
            data_key_columns!(),
            "
             FROM patients p JOIN data_keys k ON k.tenant_id = p.tenant_id AND k.id = p.data_key_id",
            $($rest),+
        )
    };
}

async fn decrypt(tx: &mut TenantTx, keys: &KeyService, r: Row) -> Result<Patient> {
    let dk = keys.unwrap_data_key(tx, &r.dk.wrapped()).await?;
    let t = tx.tenant();
    let dob = text(dk.open(&binding(t, r.id, "date_of_birth"), &r.date_of_birth)?)?;
    let sealed_identifiers: Vec<(String, Vec<u8>)> = tx
        .query("SELECT kind, value FROM patient_identifiers WHERE tenant_id = $1 AND patient_id = $2 ORDER BY kind")
        .bind(r.id)
        .fetch_all()
        .await?;
    let mut identifiers = Vec::with_capacity(sealed_identifiers.len());
    for (kind, sealed) in sealed_identifiers {
        let value = text(dk.open(&binding(t, r.id, &identifier_field(&kind)), &sealed)?)?;
        identifiers.push(Identifier {
            kind,
            value: Phi::new(value),
        });
    }
    Ok(Patient {
        identifiers,
        id: PatientId::from_uuid(r.id),
        practice_id: PracticeId::from_uuid(r.practice_id),
        mrn: Phi::new(text(dk.open(&binding(t, r.id, "mrn"), &r.mrn)?)?),
        given_name: Phi::new(text(
            dk.open(&binding(t, r.id, "given_name"), &r.given_name)?,
        )?),
        family_name: Phi::new(text(
            dk.open(&binding(t, r.id, "family_name"), &r.family_name)?,
        )?),
        date_of_birth: Phi::new(
            dob.parse()
                .map_err(|_| DomainError::Crypto(CryptoError::Decrypt))?,
        ),
        ssn: match &r.ssn {
            Some(sealed) => Some(Phi::new(text(dk.open(&binding(t, r.id, "ssn"), sealed)?)?)),
            None => None,
        },
        created_at: r.created_at,
    })
}

/// Nine digits, with or without the usual dashes; stored as the nine digits.
fn normalize_ssn(value: &str) -> Result<String> {
    let digits: String = value.trim().chars().filter(|c| *c != '-').collect();
    if digits.len() == 9 && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(invalid("ssn", "must be 9 digits (dashes allowed)"))
    }
}

/// Registers a patient in a practice visible in `scope`.
pub async fn create(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    new: NewPatient,
    now: DateTime<Utc>,
) -> Result<Patient> {
    let mrn = validate::text("mrn", new.mrn.expose(), 64)?;
    let given = validate::text("given_name", new.given_name.expose(), 200)?;
    let family = validate::text("family_name", new.family_name.expose(), 200)?;
    let dob = *new.date_of_birth.expose();
    let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN);
    if dob > now.date_naive() || dob < earliest {
        return Err(invalid(
            "date_of_birth",
            "must be between 1900-01-01 and today",
        ));
    }
    practices::ensure_visible(tx, scope, new.practice_id).await?;
    let id = PatientId::generate();
    let t = tx.tenant();
    let index = keys.blind_index_key(tx, now).await?.index("mrn", &mrn);
    let ssn = new
        .ssn
        .as_ref()
        .map(|s| normalize_ssn(s.expose()))
        .transpose()?;
    let ssn_index = match &ssn {
        Some(v) => Some(keys.blind_index_key(tx, now).await?.index("ssn", v)),
        None => None,
    };
    if new.identifiers.len() > MAX_IDENTIFIERS {
        return Err(invalid("identifiers", "at most 10 identifiers"));
    }
    let mut identifiers = Vec::with_capacity(new.identifiers.len());
    for ident in &new.identifiers {
        check_kind(&ident.kind)?;
        let value = validate::text("identifiers.value", ident.value.expose(), 128)?;
        if identifiers
            .iter()
            .any(|(k, _): &(String, String)| *k == ident.kind)
        {
            return Err(invalid("identifiers", "name each kind at most once"));
        }
        identifiers.push((ident.kind.clone(), value));
    }
    let dk = keys.new_data_key(tx, KIND, now).await?;
    let u = id.as_uuid();
    tx.query(
        "INSERT INTO patients (tenant_id, id, practice_id, data_key_id, mrn_index, mrn, given_name, family_name, date_of_birth, ssn_index, ssn, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(id)
    .bind(new.practice_id)
    .bind(dk.id)
    .bind(&index[..])
    .bind(dk.seal(&binding(t, u, "mrn"), mrn.as_bytes())?)
    .bind(dk.seal(&binding(t, u, "given_name"), given.as_bytes())?)
    .bind(dk.seal(&binding(t, u, "family_name"), family.as_bytes())?)
    .bind(dk.seal(&binding(t, u, "date_of_birth"), dob.to_string().as_bytes())?)
    .bind(ssn_index.map(|i| i.to_vec()))
    .bind(match &ssn {
        Some(v) => Some(dk.seal(&binding(t, u, "ssn"), v.as_bytes())?),
        None => None,
    })
    .bind(now)
    .execute()
    .await
    .map_err(on_write("patient"))?;
    if !identifiers.is_empty() {
        let index_key = keys.blind_index_key(tx, now).await?;
        for (kind, value) in &identifiers {
            let field = identifier_field(kind);
            tx.query(
                "INSERT INTO patient_identifiers (tenant_id, patient_id, kind, value, value_index)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(kind.as_str())
            .bind(dk.seal(&binding(t, u, &field), value.as_bytes())?)
            .bind(&index_key.index(&field, value)[..])
            .execute()
            .await?;
        }
    }
    Ok(Patient {
        id,
        practice_id: new.practice_id,
        mrn: Phi::new(mrn),
        given_name: Phi::new(given),
        family_name: Phi::new(family),
        date_of_birth: Phi::new(dob),
        ssn: ssn.map(Phi::new),
        identifiers: identifiers
            .into_iter()
            .map(|(kind, v)| Identifier {
                kind,
                value: Phi::new(v),
            })
            .collect(),
        created_at: now,
    })
}

/// One patient, if visible in `scope`.
pub async fn get(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    id: PatientId,
) -> Result<Patient> {
    let row: Option<Row> = tx
        .query(select_patients!(
            "
             WHERE p.tenant_id = $1 AND p.id = $3 AND ",
            in_scope!("p.practice_id"),
            ""
        ))
        .bind(scope.as_param())
        .bind(id)
        .fetch_optional()
        .await?;
    let row = row.ok_or(DomainError::NotFound("patient"))?;
    decrypt(tx, keys, row).await
}

/// Patients visible in `scope` whose MRN is `mrn` (exact match through the blind index).
pub async fn find_by_mrn(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    mrn: &str,
) -> Result<Vec<Patient>> {
    let sql = select_patients!(
        "
         WHERE p.tenant_id = $1 AND p.mrn_index = $3 AND ",
        in_scope!("p.practice_id"),
        "
         ORDER BY p.id"
    );
    find_by_index(tx, keys, scope, "mrn", mrn, sql).await
}

/// Patients visible in `scope` whose SSN is `ssn` (exact match through the blind index).
pub async fn find_by_ssn(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    ssn: &str,
) -> Result<Vec<Patient>> {
    let ssn = normalize_ssn(ssn)?;
    let sql = select_patients!(
        "
         WHERE p.tenant_id = $1 AND p.ssn_index = $3 AND ",
        in_scope!("p.practice_id"),
        "
         ORDER BY p.id"
    );
    find_by_index(tx, keys, scope, "ssn", &ssn, sql).await
}

/// Patients visible in `scope` with identifier `kind` equal to `value` (exact match
/// through the blind index).
pub async fn find_by_identifier(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    kind: &str,
    value: &str,
) -> Result<Vec<Patient>> {
    check_kind(kind)?;
    let sql = select_patients!(
        "
         WHERE p.tenant_id = $1 AND p.id IN (SELECT i.patient_id FROM patient_identifiers i
                                             WHERE i.tenant_id = $1 AND i.value_index = $3)
           AND ",
        in_scope!("p.practice_id"),
        "
         ORDER BY p.id"
    );
    find_by_index(tx, keys, scope, &identifier_field(kind), value, sql).await
}

/// Runs `sql` (which filters on one index column as `$3`) with the blind index of
/// `value` in `field`. A tenant without an index key has nothing indexed.
async fn find_by_index(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    field: &str,
    value: &str,
    sql: &'static str,
) -> Result<Vec<Patient>> {
    let Some(index_key) = keys.existing_blind_index_key(tx).await? else {
        return Ok(Vec::new());
    };
    let index = index_key.index(field, value);
    let rows: Vec<Row> = tx
        .query(sql)
        .bind(scope.as_param())
        .bind(&index[..])
        .fetch_all()
        .await?;
    decrypt_all(tx, keys, rows).await
}

async fn decrypt_all(tx: &mut TenantTx, keys: &KeyService, rows: Vec<Row>) -> Result<Vec<Patient>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(decrypt(tx, keys, r).await?);
    }
    Ok(out)
}

/// Patients visible in `scope`, oldest first, `limit` at a time after the cursor `after`.
pub async fn list(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    after: Option<PatientId>,
    limit: u32,
) -> Result<Vec<Patient>> {
    let rows: Vec<Row> = tx
        .query(select_patients!(
            "
             WHERE p.tenant_id = $1 AND ",
            in_scope!("p.practice_id"),
            "
               AND ($3 IS NULL OR p.id > $3)
             ORDER BY p.id LIMIT $4"
        ))
        .bind(scope.as_param())
        .bind(after.map(|a| a.as_uuid()))
        .bind(i64::from(limit))
        .fetch_all()
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.push(decrypt(tx, keys, r).await?);
    }
    Ok(out)
}

/// Erases a patient visible in `scope` with their encounters: the rows are deleted and
/// every data key that sealed them is destroyed. Copies of the rows in database backups
/// stay readable only while the KEK version that wrapped those data keys lives; the next
/// KEK rotation (`phivault keys rotate`) destroys it, and with it every such copy.
pub async fn erase(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    id: PatientId,
    now: DateTime<Utc>,
) -> Result<()> {
    let visible: Option<(Uuid,)> = tx
        .query(concat!(
            "SELECT p.data_key_id FROM patients p
             WHERE p.tenant_id = $1 AND p.id = $3 AND ",
            in_scope!("p.practice_id"),
            ""
        ))
        .bind(scope.as_param())
        .bind(id)
        .fetch_optional()
        .await?;
    let (patient_key,) = visible.ok_or(DomainError::NotFound("patient"))?;
    let encounter_keys: Vec<(Uuid,)> = tx
        .query("SELECT data_key_id FROM encounters WHERE tenant_id = $1 AND patient_id = $2")
        .bind(id)
        .fetch_all()
        .await?;
    tx.query("DELETE FROM encounters WHERE tenant_id = $1 AND patient_id = $2")
        .bind(id)
        .execute()
        .await?;
    tx.query("DELETE FROM patients WHERE tenant_id = $1 AND id = $2")
        .bind(id)
        .execute()
        .await?;
    for (key,) in encounter_keys
        .into_iter()
        .chain(std::iter::once((patient_key,)))
    {
        keys.destroy_data_key(tx, key, now).await?;
    }
    Ok(())
}
