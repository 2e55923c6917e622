//! Practices: client clinics inside a tenant, the unit of practice-scoped access.

use chrono::{DateTime, Utc};
use phivault_store::TenantTx;
use serde::Serialize;
use uuid::Uuid;

use crate::error::on_write;
use crate::{DomainError, PracticeId, PracticeScope, Result, validate};

/// A practice.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Practice {
    /// Identifier.
    pub id: PracticeId,
    /// Display name (not PHI).
    pub name: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
}

impl From<Row> for Practice {
    fn from(r: Row) -> Self {
        Practice {
            id: PracticeId::from_uuid(r.id),
            name: r.name,
            created_at: r.created_at,
        }
    }
}

/// Creates a practice in the transaction's tenant.
pub async fn create(tx: &mut TenantTx, name: &str, now: DateTime<Utc>) -> Result<Practice> {
    let name = validate::text("name", name, 200)?;
    let id = PracticeId::generate();
    tx.query("INSERT INTO practices (tenant_id, id, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(name.as_str())
        .bind(now)
        .execute()
        .await
        .map_err(on_write("practice"))?;
    Ok(Practice {
        id,
        name,
        created_at: now,
    })
}

/// The practices visible in `scope`, by name.
pub async fn list(tx: &mut TenantTx, scope: PracticeScope) -> Result<Vec<Practice>> {
    let rows: Vec<Row> = tx
        .query(concat!(
            "SELECT p.id, p.name, p.created_at FROM practices p
             WHERE p.tenant_id = $1 AND ",
            in_scope!("p.id"),
            "
             ORDER BY p.name"
        ))
        .bind(scope.as_param())
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(Practice::from).collect())
}

/// Fails with `NotFound("practice")` unless `practice` exists and is visible in `scope`.
pub async fn ensure_visible(
    tx: &mut TenantTx,
    scope: PracticeScope,
    practice: PracticeId,
) -> Result<()> {
    let found: Option<(Uuid,)> = tx
        .query(concat!(
            "SELECT p.id FROM practices p
             WHERE p.tenant_id = $1 AND p.id = $3 AND ",
            in_scope!("p.id"),
            ""
        ))
        .bind(scope.as_param())
        .bind(practice)
        .fetch_optional()
        .await?;
    found.map(|_| ()).ok_or(DomainError::NotFound("practice"))
}
