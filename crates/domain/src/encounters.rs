//! Encounters: one visit of a patient with a provider, in the patient's practice.

use chrono::{DateTime, Utc};
use phivault_crypto::keys::KeyService;

use crate::sealed::{DataKeyColumns, data_key_columns, text};
use phivault_crypto::Binding;
use phivault_store::{TenantId, TenantTx};
use serde::Serialize;
use uuid::Uuid;

use crate::error::on_write;
use crate::{
    DomainError, EncounterId, PatientId, Phi, PracticeId, PracticeScope, Result, UserId, validate,
};

/// An encounter.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Encounter {
    /// Identifier.
    pub id: EncounterId,
    /// The patient.
    pub patient_id: PatientId,
    /// The practice (the patient's).
    pub practice_id: PracticeId,
    /// The provider who documents it.
    pub provider_id: UserId,
    /// `open` or `closed`.
    pub status: String,
    /// Reason for the visit, free text.
    pub reason: Option<Phi<String>>,
    /// When the visit started.
    pub started_at: DateTime<Utc>,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
}

/// What it takes to open an encounter.
#[derive(Clone, Debug)]
pub struct NewEncounter {
    /// The patient; must be visible in the caller's scope.
    pub patient_id: PatientId,
    /// Reason for the visit.
    pub reason: Option<Phi<String>>,
    /// When the visit started (defaults to now).
    pub started_at: Option<DateTime<Utc>>,
}

const KIND: &str = "encounter";

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
    patient_id: Uuid,
    practice_id: Uuid,
    provider_id: Uuid,
    status: String,
    reason: Option<Vec<u8>>,
    started_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    dk: DataKeyColumns,
}

/// An encounter query: the row with its wrapped data key, then `$rest`.
macro_rules! select_encounters {
    ($($rest:expr),+ $(,)?) => {
        concat!(
            "SELECT e.id, e.patient_id, e.practice_id, e.provider_id, e.status, e.reason, e.started_at, e.created_at,
                    ",
            data_key_columns!(),
            "
             FROM encounters e JOIN data_keys k ON k.tenant_id = e.tenant_id AND k.id = e.data_key_id",
            $($rest),+
        )
    };
}

async fn decrypt(tx: &mut TenantTx, keys: &KeyService, r: Row) -> Result<Encounter> {
    let reason = match &r.reason {
        None => None,
        Some(sealed) => {
            let dk = keys.unwrap_data_key(tx, &r.dk.wrapped()).await?;
            Some(Phi::new(text(
                dk.open(&binding(tx.tenant(), r.id, "reason"), sealed)?,
            )?))
        }
    };
    Ok(Encounter {
        id: EncounterId::from_uuid(r.id),
        patient_id: PatientId::from_uuid(r.patient_id),
        practice_id: PracticeId::from_uuid(r.practice_id),
        provider_id: UserId::from_uuid(r.provider_id),
        status: r.status,
        reason,
        started_at: r.started_at,
        created_at: r.created_at,
    })
}

/// Opens an encounter for a patient visible in `scope`, documented by `provider`.
pub async fn create(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    provider: UserId,
    new: NewEncounter,
    now: DateTime<Utc>,
) -> Result<Encounter> {
    let reason = match &new.reason {
        Some(r) => Some(validate::text("reason", r.expose(), 2000)?),
        None => None,
    };
    let id = EncounterId::generate();
    let started_at = new.started_at.unwrap_or(now);
    // Rolled back with the transaction if the patient is not visible below.
    let dk = keys.new_data_key(tx, KIND, now).await?;
    let sealed_reason = match &reason {
        Some(r) => Some(dk.seal(&binding(tx.tenant(), id.as_uuid(), "reason"), r.as_bytes())?),
        None => None,
    };
    // One statement: the patient's practice is read and its visibility in `scope` checked
    // by the INSERT itself, so a patient outside the caller's practices inserts nothing.
    let inserted: Option<(Uuid, Uuid)> = tx
        .query(concat!(
            "INSERT INTO encounters (tenant_id, id, patient_id, practice_id, provider_id, data_key_id, status, reason, started_at, created_at)
             SELECT p.tenant_id, $3, p.id, p.practice_id, $5, $9, 'open', $6, $7, $8
             FROM patients p
             WHERE p.tenant_id = $1 AND p.id = $4 AND ", in_scope!("p.practice_id"), "
             RETURNING patient_id, practice_id"))
        .bind(scope.as_param())
        .bind(id)
        .bind(new.patient_id)
        .bind(provider)
        .bind(sealed_reason)
        .bind(started_at)
        .bind(now)
        .bind(dk.id)
        .fetch_optional()
        .await
        .map_err(on_write("encounter"))?;
    let (patient_id, practice_id) = inserted.ok_or(DomainError::NotFound("patient"))?;
    Ok(Encounter {
        id,
        patient_id: PatientId::from_uuid(patient_id),
        practice_id: PracticeId::from_uuid(practice_id),
        provider_id: provider,
        status: "open".into(),
        reason: reason.map(Phi::new),
        started_at,
        created_at: now,
    })
}

/// One encounter, if visible in `scope`.
pub async fn get(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    id: EncounterId,
) -> Result<Encounter> {
    let row: Option<Row> = tx
        .query(select_encounters!(
            "
             WHERE e.tenant_id = $1 AND e.id = $3 AND ",
            in_scope!("e.practice_id"),
            ""
        ))
        .bind(scope.as_param())
        .bind(id)
        .fetch_optional()
        .await?;
    let row = row.ok_or(DomainError::NotFound("encounter"))?;
    decrypt(tx, keys, row).await
}

/// Encounters visible in `scope`, optionally of one patient, oldest first, `limit` at a
/// time after the cursor `after`.
pub async fn list(
    tx: &mut TenantTx,
    keys: &KeyService,
    scope: PracticeScope,
    patient: Option<PatientId>,
    after: Option<EncounterId>,
    limit: u32,
) -> Result<Vec<Encounter>> {
    let rows: Vec<Row> = tx
        .query(select_encounters!(
            "
             WHERE e.tenant_id = $1 AND ",
            in_scope!("e.practice_id"),
            "
               AND ($3 IS NULL OR e.patient_id = $3)
               AND ($4 IS NULL OR e.id > $4)
             ORDER BY e.id LIMIT $5"
        ))
        .bind(scope.as_param())
        .bind(patient.map(|p| p.as_uuid()))
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
