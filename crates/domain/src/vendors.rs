//! Vendors (subprocessors) and business associate agreements.
//!
//! Two registries: the platform's, for the services the operator runs phivault on
//! (object storage, KMS, SMTP, transcription and note vendors), and each tenant's own.
//! A BAA is recorded by the date it was signed and a reference to where the signed
//! document is kept, never the document itself. The tenant's own BAA with the operator
//! of this server is kept apart ([`TenantBaa`]).
//!
//! A call that sends PHI to a vendor asks [`clearance`] first: a vendor that is not
//! registered, or has no BAA on file, is refused before any byte leaves.

use chrono::{DateTime, NaiveDate, Utc};
use phivault_store::{PlatformTx, TenantTx};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{invalid, on_write};
use crate::{DomainError, Result, validate};

/// Which registry a vendor is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Registry {
    /// The platform's (the operator's services).
    Platform,
    /// The tenant's own.
    Tenant,
}

/// A signed BAA, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Baa {
    /// When it was signed.
    pub signed_on: NaiveDate,
    /// Where the signed document is kept (a document-management id, a path), never the
    /// document.
    pub evidence_ref: String,
}

/// A registered vendor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Vendor {
    /// Which registry it is in.
    pub registry: Registry,
    /// Short unique key, as configuration names it (`aws`, `acme-speech`).
    pub key: String,
    /// The vendor's name.
    pub name: String,
    /// What it does for us.
    pub service: String,
    /// Whether PHI reaches it.
    pub touches_phi: bool,
    /// Its BAA, when one is on file.
    pub baa: Option<Baa>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

impl Vendor {
    /// A snapshot for an audit event's before/after: no free text beyond the vendor's
    /// own name and service (not PHI).
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "key": self.key,
            "touches_phi": self.touches_phi,
            "baa_signed_on": self.baa.as_ref().map(|b| b.signed_on.to_string()),
            "baa_evidence_ref": self.baa.as_ref().map(|b| b.evidence_ref.clone()),
        })
    }
}

/// A vendor to register or change.
#[derive(Clone, Debug)]
pub struct VendorInput {
    /// Short unique key: a-z, 0-9 and `-`, 2 to 63 characters.
    pub key: String,
    /// The vendor's name.
    pub name: String,
    /// What it does for us.
    pub service: String,
    /// Whether PHI reaches it.
    pub touches_phi: bool,
    /// Its BAA, if one is signed.
    pub baa: Option<Baa>,
}

/// Checks a vendor key: the same rule as a tenant slug.
pub fn check_key(key: &str) -> Result<()> {
    let ok = (2..=63).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "key",
            "must be 2-63 of a-z, 0-9 and -, starting with a letter or digit",
        ))
    }
}

fn check_baa(baa: &Option<Baa>, now: DateTime<Utc>) -> Result<Option<Baa>> {
    let Some(b) = baa else { return Ok(None) };
    if b.signed_on > now.date_naive() {
        return Err(invalid("baa_signed_on", "must not be in the future"));
    }
    Ok(Some(Baa {
        signed_on: b.signed_on,
        evidence_ref: validate::text("baa_evidence_ref", &b.evidence_ref, 500)?,
    }))
}

struct Checked {
    key: String,
    name: String,
    service: String,
    touches_phi: bool,
    baa: Option<Baa>,
}

fn check(input: &VendorInput, now: DateTime<Utc>) -> Result<Checked> {
    check_key(&input.key)?;
    Ok(Checked {
        key: input.key.clone(),
        name: validate::text("name", &input.name, 200)?,
        service: validate::text("service", &input.service, 200)?,
        touches_phi: input.touches_phi,
        baa: check_baa(&input.baa, now)?,
    })
}

type VendorRow = (
    String,
    String,
    String,
    bool,
    Option<NaiveDate>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn from_row(registry: Registry, r: VendorRow) -> Vendor {
    let baa = match (r.4, r.5) {
        (Some(signed_on), Some(evidence_ref)) => Some(Baa {
            signed_on,
            evidence_ref,
        }),
        _ => None,
    };
    Vendor {
        registry,
        key: r.0,
        name: r.1,
        service: r.2,
        touches_phi: r.3,
        baa,
        created_at: r.6,
        updated_at: r.7,
    }
}

/// The platform registry, by key.
pub async fn list_platform(tx: &mut PlatformTx) -> Result<Vec<Vendor>> {
    let rows: Vec<VendorRow> = tx
        .query(
            "SELECT key, name, service, touches_phi, baa_signed_on, baa_evidence_ref, created_at, updated_at
             FROM platform_vendors ORDER BY key",
        )
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| from_row(Registry::Platform, r))
        .collect())
}

/// Registers a platform vendor, or changes it. Returns (before, after).
pub async fn set_platform(
    tx: &mut PlatformTx,
    input: &VendorInput,
    now: DateTime<Utc>,
) -> Result<(Option<Vendor>, Vendor)> {
    let v = check(input, now)?;
    let before = list_platform(tx)
        .await?
        .into_iter()
        .find(|x| x.key == v.key);
    let (signed, evidence) = split(&v.baa);
    tx.query(
        "INSERT INTO platform_vendors (id, key, name, service, touches_phi, baa_signed_on, baa_evidence_ref, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
         ON CONFLICT (key) DO UPDATE SET name = excluded.name, service = excluded.service,
             touches_phi = excluded.touches_phi, baa_signed_on = excluded.baa_signed_on,
             baa_evidence_ref = excluded.baa_evidence_ref, updated_at = excluded.updated_at",
    )
    .bind(Uuid::new_v4())
    .bind(v.key.as_str())
    .bind(v.name.as_str())
    .bind(v.service.as_str())
    .bind(v.touches_phi)
    .bind(signed)
    .bind(evidence)
    .bind(now)
    .execute()
    .await
    .map_err(on_write("vendor"))?;
    let after = list_platform(tx)
        .await?
        .into_iter()
        .find(|x| x.key == v.key)
        .ok_or(DomainError::NotFound("vendor"))?;
    Ok((before, after))
}

/// Removes a platform vendor; returns what was removed.
pub async fn remove_platform(tx: &mut PlatformTx, key: &str) -> Result<Vendor> {
    let before = list_platform(tx)
        .await?
        .into_iter()
        .find(|x| x.key == key)
        .ok_or(DomainError::NotFound("vendor"))?;
    tx.query("DELETE FROM platform_vendors WHERE key = $1")
        .bind(key)
        .execute()
        .await?;
    Ok(before)
}

/// The tenant's own registry, by key.
pub async fn list_tenant(tx: &mut TenantTx) -> Result<Vec<Vendor>> {
    let rows: Vec<VendorRow> = tx
        .query(
            "SELECT key, name, service, touches_phi, baa_signed_on, baa_evidence_ref, created_at, updated_at
             FROM tenant_vendors WHERE tenant_id = $1 ORDER BY key",
        )
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| from_row(Registry::Tenant, r))
        .collect())
}

/// Registers a vendor in the tenant's registry, or changes it. Returns (before, after).
pub async fn set_tenant(
    tx: &mut TenantTx,
    input: &VendorInput,
    now: DateTime<Utc>,
) -> Result<(Option<Vendor>, Vendor)> {
    let v = check(input, now)?;
    let before = list_tenant(tx).await?.into_iter().find(|x| x.key == v.key);
    let (signed, evidence) = split(&v.baa);
    tx.query(
        "INSERT INTO tenant_vendors (tenant_id, id, key, name, service, touches_phi, baa_signed_on, baa_evidence_ref, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (tenant_id, key) DO UPDATE SET name = excluded.name, service = excluded.service,
             touches_phi = excluded.touches_phi, baa_signed_on = excluded.baa_signed_on,
             baa_evidence_ref = excluded.baa_evidence_ref, updated_at = excluded.updated_at",
    )
    .bind(Uuid::new_v4())
    .bind(v.key.as_str())
    .bind(v.name.as_str())
    .bind(v.service.as_str())
    .bind(v.touches_phi)
    .bind(signed)
    .bind(evidence)
    .bind(now)
    .execute()
    .await
    .map_err(on_write("vendor"))?;
    let after = list_tenant(tx)
        .await?
        .into_iter()
        .find(|x| x.key == v.key)
        .ok_or(DomainError::NotFound("vendor"))?;
    Ok((before, after))
}

/// Removes a vendor from the tenant's registry; returns what was removed.
pub async fn remove_tenant(tx: &mut TenantTx, key: &str) -> Result<Vendor> {
    let before = list_tenant(tx)
        .await?
        .into_iter()
        .find(|x| x.key == key)
        .ok_or(DomainError::NotFound("vendor"))?;
    tx.query("DELETE FROM tenant_vendors WHERE tenant_id = $1 AND key = $2")
        .bind(key)
        .execute()
        .await?;
    Ok(before)
}

fn split(baa: &Option<Baa>) -> (Option<NaiveDate>, Option<String>) {
    match baa {
        Some(b) => (Some(b.signed_on), Some(b.evidence_ref.clone())),
        None => (None, None),
    }
}

/// Whether PHI may be sent to vendor `key` on behalf of a tenant whose registry is
/// `tenant` (the platform's is `platform`): the vendor must be registered in one of
/// them with a BAA on file. The tenant's own entry wins over the platform's.
///
/// # Errors
/// `Refused { code: "vendor_not_cleared" }`.
pub fn clearance<'a>(
    platform: &'a [Vendor],
    tenant: &'a [Vendor],
    key: &str,
) -> Result<&'a Vendor> {
    let found = tenant
        .iter()
        .find(|v| v.key == key)
        .or_else(|| platform.iter().find(|v| v.key == key));
    match found {
        Some(v) if v.baa.is_some() => Ok(v),
        Some(_) => Err(DomainError::Refused {
            code: "vendor_not_cleared",
            message: "the vendor has no BAA on file; PHI is not sent to it",
        }),
        None => Err(DomainError::Refused {
            code: "vendor_not_cleared",
            message: "the vendor is not registered; PHI is not sent to it",
        }),
    }
}

/// The tenant's BAA with the operator of this server (the tenant is the covered entity).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantBaa {
    /// When it was signed.
    pub signed_on: NaiveDate,
    /// Who signed for the tenant (a name and title; not PHI).
    pub signatory: String,
    /// Where the signed document is kept.
    pub evidence_ref: String,
    /// Who recorded it (a user id, or `operator:<name>`).
    pub recorded_by: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
}

impl TenantBaa {
    /// A snapshot for an audit event's before/after.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "signed_on": self.signed_on.to_string(),
            "evidence_ref": self.evidence_ref,
        })
    }
}

/// The tenant's BAA, if recorded.
pub async fn tenant_baa(tx: &mut TenantTx) -> Result<Option<TenantBaa>> {
    let row: Option<(NaiveDate, String, String, String, DateTime<Utc>)> = tx
        .query(
            "SELECT signed_on, signatory, evidence_ref, recorded_by, recorded_at
             FROM tenant_baas WHERE tenant_id = $1",
        )
        .fetch_optional()
        .await?;
    Ok(row.map(|r| TenantBaa {
        signed_on: r.0,
        signatory: r.1,
        evidence_ref: r.2,
        recorded_by: r.3,
        recorded_at: r.4,
    }))
}

/// Records (or replaces) the tenant's BAA. Returns (before, after).
pub async fn set_tenant_baa(
    tx: &mut TenantTx,
    signed_on: NaiveDate,
    signatory: &str,
    evidence_ref: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<(Option<TenantBaa>, TenantBaa)> {
    if signed_on > now.date_naive() {
        return Err(invalid("signed_on", "must not be in the future"));
    }
    let signatory = validate::text("signatory", signatory, 200)?;
    let evidence_ref = validate::text("evidence_ref", evidence_ref, 500)?;
    let before = tenant_baa(tx).await?;
    tx.query(
        "INSERT INTO tenant_baas (tenant_id, signed_on, signatory, evidence_ref, recorded_by, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id) DO UPDATE SET signed_on = excluded.signed_on,
             signatory = excluded.signatory, evidence_ref = excluded.evidence_ref,
             recorded_by = excluded.recorded_by, recorded_at = excluded.recorded_at",
    )
    .bind(signed_on)
    .bind(signatory.as_str())
    .bind(evidence_ref.as_str())
    .bind(by)
    .bind(now)
    .execute()
    .await
    .map_err(on_write("tenant BAA"))?;
    let after = tenant_baa(tx)
        .await?
        .ok_or(DomainError::NotFound("tenant BAA"))?;
    Ok((before, after))
}

/// Removes the tenant's BAA (it ended, or was recorded by mistake); returns it.
pub async fn remove_tenant_baa(tx: &mut TenantTx) -> Result<TenantBaa> {
    let before = tenant_baa(tx)
        .await?
        .ok_or(DomainError::NotFound("tenant BAA"))?;
    tx.query("DELETE FROM tenant_baas WHERE tenant_id = $1")
        .execute()
        .await?;
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vendor(registry: Registry, key: &str, baa: bool) -> Vendor {
        let now = Utc::now();
        Vendor {
            registry,
            key: key.into(),
            name: "Synthetic Vendor".into(),
            service: "transcription".into(),
            touches_phi: true,
            baa: baa.then(|| Baa {
                signed_on: NaiveDate::from_ymd_opt(2026, 1, 2).unwrap(),
                evidence_ref: "dms://baa/1".into(),
            }),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn clearance_needs_a_registered_vendor_with_a_baa() {
        let platform = [vendor(Registry::Platform, "aws", true)];
        let tenant = [vendor(Registry::Tenant, "acme", false)];
        assert!(clearance(&platform, &tenant, "aws").is_ok());
        for key in ["acme", "nobody"] {
            match clearance(&platform, &tenant, key) {
                Err(DomainError::Refused { code, .. }) => assert_eq!(code, "vendor_not_cleared"),
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_tenant_entry_wins_over_the_platform_entry() {
        let platform = [vendor(Registry::Platform, "aws", true)];
        let tenant = [vendor(Registry::Tenant, "aws", false)];
        assert!(clearance(&platform, &tenant, "aws").is_err());
    }

    #[test]
    fn keys_follow_the_slug_rule() {
        for ok in ["aws", "acme-speech", "a1"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "AWS", "-aws", "a b", "a_b", &"x".repeat(64)] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
