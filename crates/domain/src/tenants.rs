//! The tenant registry: platform metadata (no PHI).

use chrono::{DateTime, Utc};
use phivault_store::{PlatformTx, TenantId};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{invalid, on_write};
use crate::{DomainError, Result, validate};

/// A tenant: one customer organisation, the unit of isolation.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Tenant {
    /// Identifier.
    pub id: TenantId,
    /// Short unique name: lower-case letters, digits and `-`.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
    /// A sandbox tenant holds synthetic data only: its routes work without PHI mode,
    /// which it can never turn on. Set when the operator creates it, never changed.
    pub sandbox: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    slug: String,
    name: String,
    status: String,
    sandbox: bool,
    created_at: DateTime<Utc>,
}

impl From<Row> for Tenant {
    fn from(r: Row) -> Self {
        Tenant {
            id: TenantId::from_uuid(r.id),
            slug: r.slug,
            name: r.name,
            status: r.status,
            sandbox: r.sandbox,
            created_at: r.created_at,
        }
    }
}

fn check_slug(slug: &str) -> Result<()> {
    let ok = (2..=63).contains(&slug.len())
        && slug.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && slug
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "slug",
            "must be 2-63 of a-z, 0-9 and -, starting with a letter or digit",
        ))
    }
}

/// Registers a tenant, with PHI mode off.
pub async fn create(
    tx: &mut PlatformTx,
    slug: &str,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Tenant> {
    create_with(tx, slug, name, false, now).await
}

/// Registers a tenant, a sandbox one (synthetic data only) when `sandbox` is set.
pub async fn create_with(
    tx: &mut PlatformTx,
    slug: &str,
    name: &str,
    sandbox: bool,
    now: DateTime<Utc>,
) -> Result<Tenant> {
    check_slug(slug)?;
    let name = validate::text("name", name, 200)?;
    let id = TenantId::generate();
    tx.query("INSERT INTO tenants (id, slug, name, status, sandbox, created_at) VALUES ($1, $2, $3, 'active', $4, $5)")
        .bind(id)
        .bind(slug)
        .bind(name.as_str())
        .bind(sandbox)
        .bind(now)
        .execute()
        .await
        .map_err(on_write("tenant"))?;
    Ok(Tenant {
        id,
        slug: slug.to_string(),
        name,
        status: "active".into(),
        sandbox,
        created_at: now,
    })
}

/// Every tenant, by slug.
pub async fn list(tx: &mut PlatformTx) -> Result<Vec<Tenant>> {
    let rows: Vec<Row> = tx
        .query("SELECT id, slug, name, status, sandbox, created_at FROM tenants ORDER BY slug")
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(Tenant::from).collect())
}

/// One tenant by id.
pub async fn get(tx: &mut PlatformTx, id: TenantId) -> Result<Tenant> {
    let row: Option<Row> = tx
        .query("SELECT id, slug, name, status, sandbox, created_at FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional()
        .await?;
    row.map(Tenant::from).ok_or(DomainError::NotFound("tenant"))
}

/// One tenant by id or slug, as an operator types it.
pub async fn find(tx: &mut PlatformTx, id_or_slug: &str) -> Result<Tenant> {
    if let Ok(id) = id_or_slug.parse::<TenantId>() {
        return get(tx, id).await;
    }
    let row: Option<Row> = tx
        .query("SELECT id, slug, name, status, sandbox, created_at FROM tenants WHERE slug = $1")
        .bind(id_or_slug)
        .fetch_optional()
        .await?;
    row.map(Tenant::from).ok_or(DomainError::NotFound("tenant"))
}
