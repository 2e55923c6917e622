//! Readiness gates: the controls that must hold before a tenant's PHI may flow.
//!
//! Each gate is evaluated from facts the server reports about itself ([`PlatformFacts`]:
//! keys, audit store, TLS, the services it calls) and from records kept here (vendors
//! and BAAs, retention policies, the MFA policy). A gate is `ready`, `planned` (not done
//! yet: its next action says what to do) or `blocked` (something that held is broken:
//! keys sealed, audit store failing). Evidence names what was checked and its values,
//! never a secret.
//!
//! A tenant in PHI mode may use its PHI routes only while every gate holds; the caller
//! evaluates the checklist on each PHI request ([`phi_access`]).

use chrono::{DateTime, Utc};
use phivault_store::{PlatformTx, TenantId, TenantTx};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::mfa::{self, MfaPolicy};
use crate::retention::{self, Source};
use crate::tenants::Tenant;
use crate::vendors::{self, TenantBaa, Vendor};
use crate::{DomainError, Result};

/// A gate's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The control holds.
    Ready,
    /// Not done yet; the next action says what to do.
    Planned,
    /// Broken: something that must hold does not (keys sealed, audit store failing).
    Blocked,
}

/// One gate's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Gate {
    /// Stable id (`tenant_baa`, `keys`, ...).
    pub id: &'static str,
    /// What it checks, for a person.
    pub title: &'static str,
    /// Its state.
    pub status: Status,
    /// What was checked, with values (never secrets).
    pub evidence: Value,
    /// What to do to make it hold; `None` when it holds.
    pub next_action: Option<String>,
}

/// The gate ids of a tenant's checklist, in order. The first five are the platform's.
pub const GATE_IDS: [&str; 8] = [
    "keys",
    "audit",
    "object_storage",
    "tls",
    "vendor_baas",
    "tenant_baa",
    "retention",
    "mfa_admins",
];

/// A checklist: the platform's gates, or a tenant's (platform gates included).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Checklist {
    /// The tenant, for a tenant checklist.
    pub tenant: Option<TenantId>,
    /// The tenant's slug.
    pub tenant_slug: Option<String>,
    /// Whether the tenant is a sandbox (synthetic data only).
    pub sandbox: bool,
    /// Whether the tenant's PHI mode is on.
    pub phi_mode: bool,
    /// The gates, in [`GATE_IDS`] order.
    pub gates: Vec<Gate>,
    /// When it was evaluated.
    pub evaluated_at: DateTime<Utc>,
}

impl Checklist {
    /// How many gates hold.
    pub fn ready_count(&self) -> usize {
        self.gates
            .iter()
            .filter(|g| g.status == Status::Ready)
            .count()
    }

    /// Whether every gate holds.
    pub fn all_ready(&self) -> bool {
        self.ready_count() == self.gates.len()
    }

    /// `5/8 ready`.
    pub fn summary(&self) -> String {
        format!("{}/{} ready", self.ready_count(), self.gates.len())
    }

    /// The first gate that does not hold.
    pub fn first_open(&self) -> Option<&Gate> {
        self.gates.iter().find(|g| g.status != Status::Ready)
    }

    /// Ids and states only, for an audit snapshot.
    pub fn snapshot(&self) -> Value {
        let gates: serde_json::Map<String, Value> = self
            .gates
            .iter()
            .map(|g| (g.id.to_string(), json!(g.status)))
            .collect();
        json!({ "summary": self.summary(), "gates": gates })
    }
}

/// A service the server calls out to, and whose vendor runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceUse {
    /// What it is: `transcription`, `note_generation`, `object_storage`, `kms`, `smtp`.
    pub service: String,
    /// Whether it is reached beyond this host (false: a local program, a loopback
    /// address, a device on this host).
    pub remote: bool,
    /// The vendor's registry key, as the configuration names it (`[vendors]`).
    pub vendor: Option<String>,
    /// Whether PHI reaches it whatever the registry says (transcription and note
    /// generation do; ciphertext-only services depend on the vendor entry).
    pub always_phi: bool,
}

/// What the server reports about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformFacts {
    /// The key provider's name (`local`, `aws-kms`, `pkcs11`), or `None` while sealed.
    pub key_provider: Option<String>,
    /// Whether the provider is a development one (an empty passphrase, an ephemeral key).
    pub key_provider_development: bool,
    /// Whether the keys are unsealed.
    pub keys_unsealed: bool,
    /// Whether the audit store accepted its last write (or probe).
    pub audit_writable: bool,
    /// The checkpoint signing key's fingerprint, when present.
    pub checkpoint_key: Option<String>,
    /// Object storage backend (`local`, `s3`).
    pub object_backend: String,
    /// The backend's own encryption setting where it can be read (`sse-kms`, `sse-s3`),
    /// `None` when it cannot be read or there is none.
    pub object_backend_encryption: Option<String>,
    /// Whether the server itself serves TLS.
    pub tls_served: bool,
    /// Whether a TLS-terminating proxy in front is declared in the configuration.
    pub tls_proxy_declared: bool,
    /// The HSTS max-age the server sends, seconds; `None` when it sends none.
    pub hsts_max_age: Option<u64>,
    /// The outside services the server is configured to call.
    pub services: Vec<ServiceUse>,
}

/// The least HSTS max-age accepted: one year, as browsers' preload lists ask.
pub const MIN_HSTS_SECS: u64 = 31_536_000;

fn gate(
    id: &'static str,
    title: &'static str,
    status: Status,
    evidence: Value,
    next: Option<String>,
) -> Gate {
    Gate {
        id,
        title,
        status,
        evidence,
        next_action: if status == Status::Ready { None } else { next },
    }
}

fn keys_gate(f: &PlatformFacts) -> Gate {
    let evidence = json!({
        "provider": f.key_provider,
        "development": f.key_provider_development,
        "unsealed": f.keys_unsealed,
    });
    let (status, next) = if !f.keys_unsealed {
        (
            Status::Blocked,
            "unseal the keys: `phivault unseal` on the server host",
        )
    } else if f.key_provider_development {
        (
            Status::Planned,
            "use a passphrase-sealed keyring (`phivault keys init`), AWS KMS or a PKCS#11 HSM instead of the development keyring",
        )
    } else {
        (Status::Ready, "")
    };
    gate(
        "keys",
        "A non-development key provider, unsealed",
        status,
        evidence,
        Some(next.into()),
    )
}

fn audit_gate(f: &PlatformFacts) -> Gate {
    let evidence = json!({
        "writable": f.audit_writable,
        "checkpoint_key": f.checkpoint_key,
    });
    let (status, next) = match (f.audit_writable, f.checkpoint_key.is_some()) {
        (false, _) => (
            Status::Blocked,
            "the audit store refuses writes: check the database (`/readyz` says more)",
        ),
        (true, false) => (
            Status::Blocked,
            "no checkpoint signing key: unseal the keys so that the server can load or create it",
        ),
        (true, true) => (Status::Ready, ""),
    };
    gate(
        "audit",
        "Audit store writable and checkpoint key present",
        status,
        evidence,
        Some(next.into()),
    )
}

fn object_gate(f: &PlatformFacts) -> Gate {
    // Every object is sealed by phivault before it is written, whatever the backend
    // does; the backend's own setting is reported beside it.
    let evidence = json!({
        "envelope": "AES-256-GCM, segmented per object, data key per object wrapped by the tenant key",
        "backend": f.object_backend,
        "backend_encryption": f.object_backend_encryption,
    });
    gate(
        "object_storage",
        "Object storage encrypted",
        Status::Ready,
        evidence,
        None,
    )
}

fn tls_gate(f: &PlatformFacts) -> Gate {
    let evidence = json!({
        "tls_served": f.tls_served,
        "tls_proxy_declared": f.tls_proxy_declared,
        "hsts_max_age": f.hsts_max_age,
    });
    let transport = f.tls_served || f.tls_proxy_declared;
    let hsts = f.hsts_max_age.is_some_and(|s| s >= MIN_HSTS_SECS);
    let (status, next) = match (transport, hsts) {
        (true, true) => (Status::Ready, String::new()),
        (false, _) => (
            Status::Planned,
            "serve TLS (`[tls]` with a certificate) or declare the TLS-terminating proxy in front (`http.tls_proxy = true`)".into(),
        ),
        (true, false) => (
            Status::Planned,
            format!("send HSTS with max-age of at least {MIN_HSTS_SECS} seconds (`http.hsts_max_age_secs`)"),
        ),
    };
    gate(
        "tls",
        "TLS served, or a declared TLS-terminating proxy, with HSTS",
        status,
        evidence,
        Some(next),
    )
}

fn vendor_gate(f: &PlatformFacts, platform: &[Vendor], tenant: Option<&[Vendor]>) -> Gate {
    let tenant_list = tenant.unwrap_or(&[]);
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for s in &f.services {
        if !s.remote {
            rows.push(json!({ "service": s.service, "vendor": s.vendor, "runs": "on this host or loopback" }));
            continue;
        }
        let Some(key) = &s.vendor else {
            rows.push(json!({ "service": s.service, "vendor": null, "registered": false }));
            missing.push(format!(
                "name the vendor of {} in the configuration (`[vendors] {} = \"<key>\"`) and register it with its BAA",
                s.service, s.service
            ));
            continue;
        };
        let entry = tenant_list
            .iter()
            .find(|v| &v.key == key)
            .or_else(|| platform.iter().find(|v| &v.key == key));
        let touches = s.always_phi || entry.is_none_or(|v| v.touches_phi);
        let baa = entry.and_then(|v| v.baa.as_ref());
        rows.push(json!({
            "service": s.service,
            "vendor": key,
            "registered": entry.is_some(),
            "touches_phi": touches,
            "baa_signed_on": baa.map(|b| b.signed_on.to_string()),
        }));
        if touches && baa.is_none() {
            missing.push(if entry.is_none() {
                format!("register vendor `{key}` ({}) with its BAA", s.service)
            } else {
                format!("record the BAA of vendor `{key}` ({})", s.service)
            });
        }
    }
    for v in tenant_list {
        if v.touches_phi
            && v.baa.is_none()
            && !f.services.iter().any(|s| s.vendor.as_ref() == Some(&v.key))
        {
            rows.push(json!({
                "service": v.service,
                "vendor": v.key,
                "registered": true,
                "touches_phi": true,
                "baa_signed_on": null,
            }));
            missing.push(format!("record the BAA of the tenant's vendor `{}`", v.key));
        }
    }
    let status = if missing.is_empty() {
        Status::Ready
    } else {
        Status::Planned
    };
    gate(
        "vendor_baas",
        "Every PHI-touching vendor in use has a BAA on file",
        status,
        json!({ "services": rows }),
        Some(missing.join("; ")),
    )
}

fn tenant_baa_gate(baa: Option<&TenantBaa>) -> Gate {
    let evidence = match baa {
        Some(b) => json!({
            "signed_on": b.signed_on.to_string(),
            "signatory": b.signatory,
            "evidence_ref": b.evidence_ref,
            "recorded_at": b.recorded_at,
        }),
        None => json!({ "recorded": false }),
    };
    gate(
        "tenant_baa",
        "BAA recorded for the tenant",
        if baa.is_some() {
            Status::Ready
        } else {
            Status::Planned
        },
        evidence,
        Some(
            "record the signed BAA: `PUT /api/v1/tenants/{tenant_id}/baa` or `phivault baa set`"
                .into(),
        ),
    )
}

fn retention_gate(policies: &[retention::Policy]) -> Gate {
    let evidence: Vec<Value> = policies
        .iter()
        .map(|p| {
            json!({
                "class": p.class.as_str(),
                "window_hours": p.window_hours,
                "basis": p.basis.as_str(),
                "source": p.source.as_str(),
            })
        })
        .collect();
    let unset: Vec<&str> = policies
        .iter()
        .filter(|p| p.source != Source::Tenant)
        .map(|p| p.class.as_str())
        .collect();
    gate(
        "retention",
        "Retention policy defined for every data class",
        if unset.is_empty() {
            Status::Ready
        } else {
            Status::Planned
        },
        json!({ "policies": evidence }),
        Some(format!(
            "set the retention policy of {} (`PUT /api/v1/tenants/{{tenant_id}}/settings/retention`); the built-in defaults are not a decision",
            unset.join(", ")
        )),
    )
}

fn mfa_gate(policy: MfaPolicy) -> Gate {
    let ready = matches!(policy, MfaPolicy::Admins | MfaPolicy::Everyone);
    gate(
        "mfa_admins",
        "MFA required for Owner and Admin",
        if ready {
            Status::Ready
        } else {
            Status::Planned
        },
        json!({ "mfa_policy": policy.as_str() }),
        Some("require a second factor for admins: `PUT /api/v1/tenants/{tenant_id}/settings/mfa` with `admins` or `everyone`".into()),
    )
}

/// The platform's gates.
pub fn evaluate_platform(
    facts: &PlatformFacts,
    platform_vendors: &[Vendor],
    now: DateTime<Utc>,
) -> Checklist {
    Checklist {
        tenant: None,
        tenant_slug: None,
        sandbox: false,
        phi_mode: false,
        gates: platform_gates(facts, platform_vendors, None),
        evaluated_at: now,
    }
}

fn platform_gates(
    facts: &PlatformFacts,
    platform: &[Vendor],
    tenant: Option<&[Vendor]>,
) -> Vec<Gate> {
    vec![
        keys_gate(facts),
        audit_gate(facts),
        object_gate(facts),
        tls_gate(facts),
        vendor_gate(facts, platform, tenant),
    ]
}

/// A tenant's PHI mode: off (synthetic-only, the start) or on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PhiMode {
    /// Whether PHI mode is on.
    pub on: bool,
    /// Who changed it last (a user id, or `operator:<login>` at the command line).
    pub changed_by: Option<String>,
    /// When it was changed last.
    pub changed_at: Option<DateTime<Utc>>,
}

/// The tenant's PHI mode.
pub async fn phi_mode(tx: &mut TenantTx) -> Result<PhiMode> {
    let row: Option<(bool, Option<String>, Option<DateTime<Utc>>)> = tx
        .query(
            "SELECT phi_mode, phi_mode_changed_by, phi_mode_changed_at
             FROM tenant_settings WHERE tenant_id = $1",
        )
        .fetch_optional()
        .await?;
    Ok(match row {
        Some((on, changed_by, changed_at)) => PhiMode {
            on,
            changed_by,
            changed_at,
        },
        None => PhiMode {
            on: false,
            changed_by: None,
            changed_at: None,
        },
    })
}

/// Turns PHI mode on or off. Turning it on needs `checklist` (the tenant's, evaluated
/// in this request) to hold in full, and is refused for a sandbox tenant; turning it
/// off is always allowed.
///
/// # Errors
/// `Refused { code: "sandbox_tenant" | "gates_open" }`.
pub async fn set_phi_mode(
    tx: &mut TenantTx,
    checklist: &Checklist,
    on: bool,
    by: &str,
    now: DateTime<Utc>,
) -> Result<PhiMode> {
    if checklist.tenant != Some(tx.tenant()) {
        return Err(DomainError::NotFound("tenant checklist"));
    }
    if on && checklist.sandbox {
        return Err(DomainError::Refused {
            code: "sandbox_tenant",
            message: "a sandbox tenant holds synthetic data only and cannot enter PHI mode",
        });
    }
    if on && !checklist.all_ready() {
        return Err(DomainError::Refused {
            code: "gates_open",
            message: "PHI mode needs every readiness gate to hold; see the checklist for the next actions",
        });
    }
    let defaults = crate::sessions::SessionPolicy::default();
    tx.query(
        "INSERT INTO tenant_settings (tenant_id, session_idle_secs, session_absolute_secs, phi_mode, phi_mode_changed_by, phi_mode_changed_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $6)
         ON CONFLICT (tenant_id) DO UPDATE SET phi_mode = excluded.phi_mode,
             phi_mode_changed_by = excluded.phi_mode_changed_by,
             phi_mode_changed_at = excluded.phi_mode_changed_at, updated_at = excluded.updated_at",
    )
    .bind(defaults.idle.num_seconds())
    .bind(defaults.absolute.num_seconds())
    .bind(on)
    .bind(by)
    .bind(now)
    .execute()
    .await?;
    phi_mode(tx).await
}

/// What a tenant's checklist is evaluated from, read by [`load_tenant`].
#[derive(Clone, Debug)]
pub struct TenantRecords {
    /// The tenant.
    pub tenant: Tenant,
    /// Its PHI mode.
    pub phi_mode: PhiMode,
    /// Its BAA with the operator.
    pub baa: Option<TenantBaa>,
    /// Its own vendors.
    pub vendors: Vec<Vendor>,
    /// Its retention policies (defaults filled in).
    pub retention: Vec<retention::Policy>,
    /// Its MFA policy.
    pub mfa: MfaPolicy,
}

/// Reads the platform vendor registry.
pub async fn load_platform(tx: &mut PlatformTx) -> Result<Vec<Vendor>> {
    vendors::list_platform(tx).await
}

/// Reads what a tenant's gates are evaluated from: `tenant` is its row (read through
/// a platform transaction), the rest is read through `tx`, bound to the same tenant.
pub async fn load_tenant(tenant: Tenant, tx: &mut TenantTx) -> Result<TenantRecords> {
    Ok(TenantRecords {
        phi_mode: phi_mode(tx).await?,
        baa: vendors::tenant_baa(tx).await?,
        vendors: vendors::list_tenant(tx).await?,
        retention: retention::policies(tx).await?,
        mfa: mfa::policy(tx).await?,
        tenant,
    })
}

/// A tenant's gates: the platform's, then its own.
pub fn evaluate_tenant(
    facts: &PlatformFacts,
    platform_vendors: &[Vendor],
    records: &TenantRecords,
    now: DateTime<Utc>,
) -> Checklist {
    let mut gates = platform_gates(facts, platform_vendors, Some(&records.vendors));
    gates.push(tenant_baa_gate(records.baa.as_ref()));
    gates.push(retention_gate(&records.retention));
    gates.push(mfa_gate(records.mfa));
    Checklist {
        tenant: Some(records.tenant.id),
        tenant_slug: Some(records.tenant.slug.clone()),
        sandbox: records.tenant.sandbox,
        phi_mode: records.phi_mode.on,
        gates,
        evaluated_at: now,
    }
}

/// Whether a tenant's PHI routes are open, and if not, why.
#[derive(Clone, Debug, PartialEq)]
pub enum PhiAccess {
    /// A sandbox tenant: synthetic data only, no gates asked.
    Sandbox,
    /// PHI mode is on and every gate holds.
    Open,
    /// PHI mode is off.
    ModeOff,
    /// PHI mode is on but this gate does not hold (fail closed).
    GateOpen(Gate),
}

/// Decides [`PhiAccess`] from a tenant's checklist.
pub fn phi_access(checklist: &Checklist) -> PhiAccess {
    if checklist.sandbox {
        return PhiAccess::Sandbox;
    }
    if !checklist.phi_mode {
        return PhiAccess::ModeOff;
    }
    match checklist.first_open() {
        Some(g) => PhiAccess::GateOpen(g.clone()),
        None => PhiAccess::Open,
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::retention::{DataClass, default_policy};
    use crate::vendors::{Baa, Registry};

    fn good_facts() -> PlatformFacts {
        PlatformFacts {
            key_provider: Some("local".into()),
            key_provider_development: false,
            keys_unsealed: true,
            audit_writable: true,
            checkpoint_key: Some("ed25519:abcd".into()),
            object_backend: "local".into(),
            object_backend_encryption: None,
            tls_served: true,
            tls_proxy_declared: false,
            hsts_max_age: Some(MIN_HSTS_SECS),
            services: vec![ServiceUse {
                service: "transcription".into(),
                remote: false,
                vendor: None,
                always_phi: true,
            }],
        }
    }

    fn records(sandbox: bool, phi: bool) -> TenantRecords {
        let now = Utc::now();
        TenantRecords {
            tenant: Tenant {
                id: TenantId::generate(),
                slug: "synthetic".into(),
                name: "Synthetic Clinic".into(),
                status: "active".into(),
                sandbox,
                created_at: now,
            },
            phi_mode: PhiMode {
                on: phi,
                changed_by: None,
                changed_at: None,
            },
            baa: Some(TenantBaa {
                signed_on: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
                signatory: "Synthetic Signatory, CEO".into(),
                evidence_ref: "dms://baa/tenant".into(),
                recorded_by: "operator:test".into(),
                recorded_at: now,
            }),
            vendors: Vec::new(),
            retention: DataClass::ALL
                .iter()
                .map(|c| retention::Policy {
                    source: Source::Tenant,
                    ..default_policy(*c)
                })
                .collect(),
            mfa: MfaPolicy::Admins,
        }
    }

    fn ids_not_ready(c: &Checklist) -> Vec<&'static str> {
        c.gates
            .iter()
            .filter(|g| g.status != Status::Ready)
            .map(|g| g.id)
            .collect()
    }

    #[test]
    fn a_complete_tenant_is_ready_and_open() {
        let c = evaluate_tenant(&good_facts(), &[], &records(false, true), Utc::now());
        assert_eq!(c.gates.iter().map(|g| g.id).collect::<Vec<_>>(), GATE_IDS);
        assert!(c.all_ready(), "{:?}", ids_not_ready(&c));
        assert_eq!(c.summary(), "8/8 ready");
        assert_eq!(phi_access(&c), PhiAccess::Open);
        assert!(c.gates.iter().all(|g| g.next_action.is_none()));
    }

    #[test]
    fn each_missing_control_opens_its_gate_with_a_next_action() {
        let now = Utc::now();
        let mut f = good_facts();
        f.keys_unsealed = false;
        f.key_provider = None;
        let c = evaluate_tenant(&f, &[], &records(false, true), now);
        assert_eq!(ids_not_ready(&c), ["keys"]);
        assert_eq!(c.gates[0].status, Status::Blocked);
        assert!(matches!(phi_access(&c), PhiAccess::GateOpen(g) if g.id == "keys"));

        let mut f = good_facts();
        f.key_provider_development = true;
        assert_eq!(
            evaluate_tenant(&f, &[], &records(false, true), now).gates[0].status,
            Status::Planned
        );

        let mut f = good_facts();
        f.checkpoint_key = None;
        assert_eq!(
            ids_not_ready(&evaluate_tenant(&f, &[], &records(false, true), now)),
            ["audit"]
        );

        let mut f = good_facts();
        f.tls_served = false;
        assert_eq!(
            ids_not_ready(&evaluate_tenant(&f, &[], &records(false, true), now)),
            ["tls"]
        );
        f.tls_proxy_declared = true;
        f.hsts_max_age = Some(3600);
        let c = evaluate_tenant(&f, &[], &records(false, true), now);
        assert_eq!(ids_not_ready(&c), ["tls"]);
        assert!(c.gates[3].next_action.as_deref().unwrap().contains("HSTS"));

        let mut r = records(false, true);
        r.baa = None;
        assert_eq!(
            ids_not_ready(&evaluate_tenant(&good_facts(), &[], &r, now)),
            ["tenant_baa"]
        );

        let mut r = records(false, true);
        r.retention[1].source = Source::Default;
        let c = evaluate_tenant(&good_facts(), &[], &r, now);
        assert_eq!(ids_not_ready(&c), ["retention"]);
        assert!(
            c.gates[6]
                .next_action
                .as_deref()
                .unwrap()
                .contains("transcript")
        );

        let mut r = records(false, true);
        r.mfa = MfaPolicy::None;
        assert_eq!(
            ids_not_ready(&evaluate_tenant(&good_facts(), &[], &r, now)),
            ["mfa_admins"]
        );
    }

    #[test]
    fn a_vendor_in_use_needs_a_registered_baa() {
        let now = Utc::now();
        let mut f = good_facts();
        f.services.push(ServiceUse {
            service: "note_generation".into(),
            remote: true,
            vendor: None,
            always_phi: true,
        });
        let c = evaluate_tenant(&f, &[], &records(false, true), now);
        assert!(
            c.gates[4]
                .next_action
                .as_deref()
                .unwrap()
                .contains("name the vendor")
        );
        f.services[1].vendor = Some("acme-llm".into());
        let c = evaluate_tenant(&f, &[], &records(false, true), now);
        assert_eq!(ids_not_ready(&c), ["vendor_baas"]);
        assert!(
            c.gates[4]
                .next_action
                .as_deref()
                .unwrap()
                .contains("register vendor `acme-llm`")
        );

        let mut v = Vendor {
            registry: Registry::Platform,
            key: "acme-llm".into(),
            name: "Acme LLM (synthetic)".into(),
            service: "note generation".into(),
            touches_phi: false,
            baa: None,
            created_at: now,
            updated_at: now,
        };
        // Note generation always carries PHI, whatever the entry says.
        let c = evaluate_tenant(&f, std::slice::from_ref(&v), &records(false, true), now);
        assert!(
            c.gates[4]
                .next_action
                .as_deref()
                .unwrap()
                .contains("record the BAA")
        );
        v.baa = Some(Baa {
            signed_on: NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
            evidence_ref: "dms://baa/acme".into(),
        });
        assert!(evaluate_tenant(&f, &[v], &records(false, true), now).all_ready());
    }

    #[test]
    fn a_tenant_vendor_touching_phi_without_a_baa_opens_the_gate() {
        let now = Utc::now();
        let mut r = records(false, true);
        r.vendors.push(Vendor {
            registry: Registry::Tenant,
            key: "billing-co".into(),
            name: "Synthetic Billing Co".into(),
            service: "billing".into(),
            touches_phi: true,
            baa: None,
            created_at: now,
            updated_at: now,
        });
        assert_eq!(
            ids_not_ready(&evaluate_tenant(&good_facts(), &[], &r, now)),
            ["vendor_baas"]
        );
    }

    #[test]
    fn mode_off_and_sandbox() {
        let now = Utc::now();
        let c = evaluate_tenant(&good_facts(), &[], &records(false, false), now);
        assert_eq!(phi_access(&c), PhiAccess::ModeOff);
        let mut f = good_facts();
        f.keys_unsealed = false;
        let c = evaluate_tenant(&f, &[], &records(true, false), now);
        assert_eq!(phi_access(&c), PhiAccess::Sandbox);
        assert_eq!(c.summary(), "7/8 ready");
    }

    #[test]
    fn the_platform_checklist_has_the_five_platform_gates() {
        let c = evaluate_platform(&good_facts(), &[], Utc::now());
        assert_eq!(
            c.gates.iter().map(|g| g.id).collect::<Vec<_>>(),
            GATE_IDS[..5]
        );
        assert!(c.all_ready());
    }
}
