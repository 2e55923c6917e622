//! Patients. Every identifying field is [`Phi`]; lookups are confined to the caller's
//! practices in SQL.

use chrono::{DateTime, NaiveDate, Utc};
use phivault_store::TenantTx;
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
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    practice_id: Uuid,
    mrn: String,
    given_name: String,
    family_name: String,
    date_of_birth: NaiveDate,
    created_at: DateTime<Utc>,
}

impl From<Row> for Patient {
    fn from(r: Row) -> Self {
        Patient {
            id: PatientId::from_uuid(r.id),
            practice_id: PracticeId::from_uuid(r.practice_id),
            mrn: Phi::new(r.mrn),
            given_name: Phi::new(r.given_name),
            family_name: Phi::new(r.family_name),
            date_of_birth: Phi::new(r.date_of_birth),
            created_at: r.created_at,
        }
    }
}

/// Registers a patient in a practice visible in `scope`.
pub async fn create(
    tx: &mut TenantTx,
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
    tx.query(
        "INSERT INTO patients (tenant_id, id, practice_id, mrn, given_name, family_name, date_of_birth, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(new.practice_id)
    .bind(mrn.as_str())
    .bind(given.as_str())
    .bind(family.as_str())
    .bind(dob)
    .bind(now)
    .execute()
    .await
    .map_err(on_write("patient"))?;
    Ok(Patient {
        id,
        practice_id: new.practice_id,
        mrn: Phi::new(mrn),
        given_name: Phi::new(given),
        family_name: Phi::new(family),
        date_of_birth: Phi::new(dob),
        created_at: now,
    })
}

/// One patient, if visible in `scope`.
pub async fn get(tx: &mut TenantTx, scope: PracticeScope, id: PatientId) -> Result<Patient> {
    let row: Option<Row> = tx
        .query(
            "SELECT p.id, p.practice_id, p.mrn, p.given_name, p.family_name, p.date_of_birth, p.created_at
             FROM patients p
             WHERE p.tenant_id = $1 AND p.id = $3 AND ($2 IS NULL
                 OR EXISTS (SELECT 1 FROM users u WHERE u.tenant_id = $1 AND u.id = $2 AND u.all_practices)
                 OR p.practice_id IN (SELECT g.practice_id FROM user_practices g WHERE g.tenant_id = $1 AND g.user_id = $2))",
        )
        .bind(scope.as_param())
        .bind(id)
        .fetch_optional()
        .await?;
    row.map(Patient::from)
        .ok_or(DomainError::NotFound("patient"))
}

/// Patients visible in `scope`, oldest first, `limit` at a time after the cursor `after`.
pub async fn list(
    tx: &mut TenantTx,
    scope: PracticeScope,
    after: Option<PatientId>,
    limit: u32,
) -> Result<Vec<Patient>> {
    let rows: Vec<Row> = tx
        .query(
            "SELECT p.id, p.practice_id, p.mrn, p.given_name, p.family_name, p.date_of_birth, p.created_at
             FROM patients p
             WHERE p.tenant_id = $1 AND ($2 IS NULL
                 OR EXISTS (SELECT 1 FROM users u WHERE u.tenant_id = $1 AND u.id = $2 AND u.all_practices)
                 OR p.practice_id IN (SELECT g.practice_id FROM user_practices g WHERE g.tenant_id = $1 AND g.user_id = $2))
               AND ($3 IS NULL OR p.id > $3)
             ORDER BY p.id LIMIT $4",
        )
        .bind(scope.as_param())
        .bind(after.map(|a| a.as_uuid()))
        .bind(i64::from(limit))
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(Patient::from).collect())
}
