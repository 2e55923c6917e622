//! The training opt-in: whether a tenant lets its transcripts and notes leave phivault
//! to train models. Off by default; who turned it on or off, and when, is kept.
//!
//! [`export_for_training`] is the one way out for that purpose, and it checks the flag
//! itself ([`require`]) in the same transaction as the read, so no caller can skip it.
//! What it exports is PHI, decrypted: the caller audits it as `phi.export`.

use chrono::{DateTime, Utc};
use phivault_crypto::Binding;
use phivault_crypto::keys::KeyService;
use phivault_store::TenantTx;
use serde::Serialize;
use uuid::Uuid;

use crate::retention::DataClass;
use crate::sealed::{DataKeyColumns, data_key_columns, text};
use crate::{DomainError, Phi, Result, UserId, notes, transcripts};

/// Most records of each class one export returns.
pub const MAX_EXPORT: u32 = 1000;

/// The tenant's training opt-in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrainingOptIn {
    /// Whether exports for training are allowed.
    pub enabled: bool,
    /// Who last set it (`None` if never set).
    pub set_by: Option<UserId>,
    /// When.
    pub set_at: Option<DateTime<Utc>>,
}

/// The tenant's training opt-in (off when never set).
pub async fn status(tx: &mut TenantTx) -> Result<TrainingOptIn> {
    let row: Option<(bool, Option<Uuid>, Option<DateTime<Utc>>)> = tx
        .query(
            "SELECT training_opt_in, training_opt_in_by, training_opt_in_at
             FROM tenant_settings WHERE tenant_id = $1",
        )
        .fetch_optional()
        .await?;
    Ok(match row {
        Some((enabled, by, at)) => TrainingOptIn {
            enabled,
            set_by: by.map(UserId::from_uuid),
            set_at: at,
        },
        None => TrainingOptIn {
            enabled: false,
            set_by: None,
            set_at: None,
        },
    })
}

/// Turns the opt-in on or off, recording who and when; returns it as stored.
pub async fn set(
    tx: &mut TenantTx,
    enabled: bool,
    by: UserId,
    now: DateTime<Utc>,
) -> Result<TrainingOptIn> {
    let defaults = crate::sessions::SessionPolicy::default();
    tx.query(
        "INSERT INTO tenant_settings (tenant_id, session_idle_secs, session_absolute_secs, training_opt_in,
                                      training_opt_in_by, training_opt_in_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT (tenant_id) DO UPDATE SET training_opt_in = excluded.training_opt_in,
             training_opt_in_by = excluded.training_opt_in_by,
             training_opt_in_at = excluded.training_opt_in_at, updated_at = excluded.updated_at",
    )
    .bind(defaults.idle.num_seconds())
    .bind(defaults.absolute.num_seconds())
    .bind(enabled)
    .bind(by)
    .bind(now)
    .execute()
    .await?;
    // Read back, so the answer carries the time as stored (microseconds).
    status(tx).await
}

/// Succeeds only while the tenant is opted in.
///
/// # Errors
/// `Refused { code: "training_opt_in_required" }` when it is off.
pub async fn require(tx: &mut TenantTx) -> Result<()> {
    if status(tx).await?.enabled {
        Ok(())
    } else {
        Err(DomainError::Refused {
            code: "training_opt_in_required",
            message: "this tenant has not opted in to model training, so nothing is exported for it",
        })
    }
}

/// One exported transcript or note. `Debug` redacts the content.
#[derive(Clone, Debug, Serialize)]
pub struct TrainingRecord {
    /// `transcript` or `note`.
    pub class: DataClass,
    /// The transcript's or note's id.
    pub id: Uuid,
    /// Its encounter.
    pub encounter_id: Uuid,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// The content as stored: the JSON document of a transcript's segments or of a
    /// note (PHI).
    pub content: Phi<String>,
}

/// What to export.
#[derive(Clone, Copy, Debug)]
pub struct ExportRange {
    /// Only records stored at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// At most this many transcripts and this many notes (1 to [`MAX_EXPORT`]).
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    encounter_id: Uuid,
    created_at: DateTime<Utc>,
    content: Option<Vec<u8>>,
    #[sqlx(flatten)]
    dk: DataKeyColumns,
}

/// The tenant's transcripts and notes not deleted by retention, decrypted, oldest
/// first: at most `range.limit` of each. Refused unless the tenant opted in.
///
/// # Errors
/// `Refused { code: "training_opt_in_required" }`; `Invalid { field: "limit" }`;
/// `Crypto` when keys are sealed or a record does not open.
pub async fn export_for_training(
    tx: &mut TenantTx,
    keys: &KeyService,
    range: ExportRange,
) -> Result<Vec<TrainingRecord>> {
    require(tx).await?;
    if !(1..=MAX_EXPORT).contains(&range.limit) {
        return Err(crate::error::invalid("limit", "must be between 1 and 1000"));
    }
    let limit = i64::from(range.limit);
    let transcript_rows: Vec<Row> = tx
        .query(concat!(
            "SELECT t.id, t.encounter_id, t.created_at, t.segments AS content, ",
            data_key_columns!(),
            " FROM transcripts t JOIN data_keys k ON k.tenant_id = t.tenant_id AND k.id = t.data_key_id
             WHERE t.tenant_id = $1 AND t.deleted_at IS NULL AND ($2 IS NULL OR t.created_at >= $2)
             ORDER BY t.created_at, t.id LIMIT $3"
        ))
        .bind(range.since)
        .bind(limit)
        .fetch_all()
        .await?;
    let note_rows: Vec<Row> = tx
        .query(concat!(
            "SELECT n.id, n.encounter_id, n.created_at, n.body AS content, ",
            data_key_columns!(),
            " FROM notes n JOIN data_keys k ON k.tenant_id = n.tenant_id AND k.id = n.data_key_id
             WHERE n.tenant_id = $1 AND n.deleted_at IS NULL AND ($2 IS NULL OR n.created_at >= $2)
             ORDER BY n.created_at, n.id LIMIT $3"
        ))
        .bind(range.since)
        .bind(limit)
        .fetch_all()
        .await?;
    let mut out = Vec::with_capacity(transcript_rows.len() + note_rows.len());
    for (class, kind, field, rows) in [
        (
            DataClass::Transcript,
            transcripts::KIND,
            "segments",
            transcript_rows,
        ),
        (DataClass::Note, notes::KIND, "body", note_rows),
    ] {
        for r in rows {
            // A row deleted between the filter and here has no content; skip it.
            let Some(sealed) = &r.content else { continue };
            let key = keys.unwrap_data_key(tx, &r.dk.wrapped()).await?;
            let binding = Binding {
                tenant: tx.tenant(),
                kind,
                object: r.id,
                field,
            };
            let plain = key.open(&binding, sealed)?;
            out.push(TrainingRecord {
                class,
                id: r.id,
                encounter_id: r.encounter_id,
                created_at: r.created_at,
                content: Phi::new(text(plain)?),
            });
        }
    }
    Ok(out)
}
