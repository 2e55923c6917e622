//! Consent to record: a recording of an encounter needs a consent record for it.
//!
//! A consent record says how consent was given (verbal, written, in-app), where (a US
//! state as `US-XX`, or a country as its ISO 3166-1 alpha-2 code), which consent text
//! version was shown, who documented it and when, and whether the jurisdiction needs
//! the consent of every party to the conversation. Where it does, the record must say
//! that every party consented, or it is refused. Tenants may keep their own consent
//! texts, versioned; the built-in text is [`DEFAULT_TEXT`].

use chrono::{DateTime, Utc};
use phivault_store::TenantTx;
use serde::Serialize;
use uuid::Uuid;

use crate::error::{invalid, on_write};
use crate::{
    ConsentId, ConsentTextId, DomainError, EncounterId, PracticeScope, Result, UserId, validate,
};

/// US states and territories whose eavesdropping or wiretap statutes require the
/// consent of every party to record a private conversation, as phivault applies them:
/// `(code, name, note)`. Source: Reporters Committee for Freedom of the Press,
/// "Reporter's Recording Guide" (rcfp.org/reporters-recording-guide), read with the
/// statutes it cites. Where a state's rule is narrower or contested, phivault takes
/// the stricter reading, because a clinic cannot check case law at the bedside; the
/// note says why the state is listed. docs/consent.md prints this table (a test keeps
/// them equal).
pub const ALL_PARTY_US_STATES: &[(&str, &str, &str)] = &[
    (
        "US-CA",
        "California",
        "Cal. Penal Code § 632: all parties to a confidential communication",
    ),
    (
        "US-DE",
        "Delaware",
        "11 Del. C. § 1335 requires all parties; § 2402 allows one party: stricter reading",
    ),
    ("US-FL", "Florida", "Fla. Stat. § 934.03: all parties"),
    (
        "US-IL",
        "Illinois",
        "720 ILCS 5/14-2: all parties to a private conversation",
    ),
    (
        "US-MD",
        "Maryland",
        "Md. Cts. & Jud. Proc. § 10-402: all parties",
    ),
    (
        "US-MA",
        "Massachusetts",
        "M.G.L. c. 272 § 99: all parties (secret recording)",
    ),
    (
        "US-MI",
        "Michigan",
        "MCL 750.539c: contested whether a participant may record: stricter reading",
    ),
    ("US-MT", "Montana", "Mont. Code § 45-8-213: all parties"),
    (
        "US-NV",
        "Nevada",
        "NRS 200.620 (wire communications) requires all parties: stricter reading",
    ),
    ("US-NH", "New Hampshire", "RSA 570-A:2: all parties"),
    (
        "US-OR",
        "Oregon",
        "ORS 165.540: all parties to an in-person conversation",
    ),
    ("US-PA", "Pennsylvania", "18 Pa. C.S. § 5704: all parties"),
    ("US-WA", "Washington", "RCW 9.73.030: all parties"),
];

/// The two-letter codes of the US states, DC and the inhabited territories.
const US_CODES: &[&str] = &[
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY", "AS", "GU", "MP", "PR", "VI",
];

/// The version string of the built-in consent text.
pub const DEFAULT_TEXT_VERSION: &str = "phivault-default-1";

/// The built-in consent text, shown when a tenant has none of its own.
pub const DEFAULT_TEXT: &str = "With your permission, this visit will be recorded so \
that a draft of the visit note can be prepared for your clinician, who reviews it. The \
recording is encrypted, is used only for your care, and is deleted within 24 hours of \
the note being prepared. You may say no, or stop the recording at any time, and your \
care will not change.";

/// Whether a jurisdiction requires the consent of every party. US states in
/// [`ALL_PARTY_US_STATES`] do; other US states do not. Outside the US phivault requires
/// every party's consent: recording and data-protection laws vary, and all-party consent
/// satisfies every one of them.
pub fn all_party_required(jurisdiction: &str) -> bool {
    if jurisdiction.starts_with("US-") {
        ALL_PARTY_US_STATES
            .iter()
            .any(|(code, _, _)| *code == jurisdiction)
    } else {
        true
    }
}

/// Checks a jurisdiction code: `US-XX` for a US state or territory, or a two-letter
/// country code other than `US` (a US recording needs its state).
pub fn check_jurisdiction(value: &str) -> Result<String> {
    let v = value.trim();
    if let Some(state) = v.strip_prefix("US-") {
        if US_CODES.contains(&state) {
            return Ok(v.to_owned());
        }
        return Err(invalid(
            "jurisdiction",
            "is not a US state or territory code",
        ));
    }
    if v == "US" {
        return Err(invalid(
            "jurisdiction",
            "must name the US state (US-XX): recording consent is state law",
        ));
    }
    if v.len() == 2 && v.bytes().all(|b| b.is_ascii_uppercase()) {
        return Ok(v.to_owned());
    }
    Err(invalid(
        "jurisdiction",
        "must be US-XX or a two-letter country code",
    ))
}

/// How consent was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Said aloud and documented by the clinician.
    Verbal,
    /// Signed on paper or a form.
    Written,
    /// Given in an app by the patient.
    InApp,
}

impl Method {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Verbal => "verbal",
            Method::Written => "written",
            Method::InApp => "in_app",
        }
    }

    /// Parses a stored or submitted name.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "verbal" => Ok(Method::Verbal),
            "written" => Ok(Method::Written),
            "in_app" => Ok(Method::InApp),
            _ => Err(invalid("method", "must be verbal, written or in_app")),
        }
    }
}

/// A consent record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Consent {
    /// Identifier.
    pub id: ConsentId,
    /// The encounter it covers.
    pub encounter_id: EncounterId,
    /// How it was given.
    pub method: Method,
    /// Where: `US-XX` or a country code.
    pub jurisdiction: String,
    /// Whether the jurisdiction needs every party's consent.
    pub all_party_required: bool,
    /// Whether every party consented.
    pub all_parties_consented: bool,
    /// The tenant's consent text shown, if not the built-in one.
    pub consent_text_id: Option<ConsentTextId>,
    /// The version of the text shown.
    pub consent_text_version: String,
    /// Who documented it.
    pub documented_by: UserId,
    /// When consent was given.
    pub obtained_at: DateTime<Utc>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When it was withdrawn, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What it takes to document consent.
#[derive(Clone, Debug)]
pub struct NewConsent {
    /// How it was given.
    pub method: Method,
    /// Where.
    pub jurisdiction: String,
    /// Whether every party to the conversation consented.
    pub all_parties_consented: bool,
    /// The tenant's consent text shown; the built-in text if `None`.
    pub consent_text_id: Option<ConsentTextId>,
    /// When consent was given (now if `None`); not in the future.
    pub obtained_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    encounter_id: Uuid,
    method: String,
    jurisdiction: String,
    all_party_required: bool,
    all_parties_consented: bool,
    consent_text_id: Option<Uuid>,
    consent_text_version: String,
    documented_by: Uuid,
    obtained_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl Row {
    fn into_consent(self) -> Result<Consent> {
        Ok(Consent {
            id: ConsentId::from_uuid(self.id),
            encounter_id: EncounterId::from_uuid(self.encounter_id),
            method: Method::parse(&self.method)?,
            jurisdiction: self.jurisdiction,
            all_party_required: self.all_party_required,
            all_parties_consented: self.all_parties_consented,
            consent_text_id: self.consent_text_id.map(ConsentTextId::from_uuid),
            consent_text_version: self.consent_text_version,
            documented_by: UserId::from_uuid(self.documented_by),
            obtained_at: self.obtained_at,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

/// Documents consent for an encounter visible in `scope`.
///
/// # Errors
/// `NotFound("encounter")` outside the scope; `Invalid` for a bad jurisdiction, a time
/// in the future, a missing or retired consent text, or an all-party jurisdiction
/// without every party's consent.
pub async fn record(
    tx: &mut TenantTx,
    scope: PracticeScope,
    encounter: EncounterId,
    by: UserId,
    new: NewConsent,
    now: DateTime<Utc>,
) -> Result<Consent> {
    let jurisdiction = check_jurisdiction(&new.jurisdiction)?;
    let all_party = all_party_required(&jurisdiction);
    if all_party && !new.all_parties_consented {
        return Err(invalid(
            "all_parties_consented",
            "must be true: this jurisdiction requires the consent of every party",
        ));
    }
    let obtained_at = new.obtained_at.unwrap_or(now);
    if obtained_at > now + chrono::Duration::minutes(5) {
        return Err(invalid("obtained_at", "is in the future"));
    }
    let version = match new.consent_text_id {
        None => DEFAULT_TEXT_VERSION.to_owned(),
        Some(text) => {
            let found: Option<(String,)> = tx
                .query(
                    "SELECT version FROM consent_texts
                     WHERE tenant_id = $1 AND id = $2 AND retired_at IS NULL",
                )
                .bind(text)
                .fetch_optional()
                .await?;
            found
                .ok_or(invalid(
                    "consent_text_id",
                    "names no current consent text of this tenant",
                ))?
                .0
        }
    };
    let id = ConsentId::generate();
    // One statement: the encounter's visibility in `scope` is checked by the INSERT.
    let inserted = tx
        .query(concat!(
            "INSERT INTO consents (tenant_id, id, encounter_id, method, jurisdiction, all_party_required,
                                   all_parties_consented, consent_text_id, consent_text_version,
                                   documented_by, obtained_at, created_at)
             SELECT e.tenant_id, $3, e.id, $5, $6, $7, $8, $9, $10, $11, $12, $13
             FROM encounters e
             WHERE e.tenant_id = $1 AND e.id = $4 AND ",
            in_scope!("e.practice_id")
        ))
        .bind(scope.as_param())
        .bind(id)
        .bind(encounter)
        .bind(new.method.as_str())
        .bind(jurisdiction.as_str())
        .bind(all_party)
        .bind(new.all_parties_consented)
        .bind(new.consent_text_id.map(|t| t.as_uuid()))
        .bind(version.as_str())
        .bind(by)
        .bind(obtained_at)
        .bind(now)
        .execute()
        .await
        .map_err(on_write("consent"))?;
    if inserted != 1 {
        return Err(DomainError::NotFound("encounter"));
    }
    Ok(Consent {
        id,
        encounter_id: encounter,
        method: new.method,
        jurisdiction,
        all_party_required: all_party,
        all_parties_consented: new.all_parties_consented,
        consent_text_id: new.consent_text_id,
        consent_text_version: version,
        documented_by: by,
        obtained_at,
        created_at: now,
        revoked_at: None,
    })
}

/// The consent records of an encounter visible in `scope`, oldest first.
pub async fn list(
    tx: &mut TenantTx,
    scope: PracticeScope,
    encounter: EncounterId,
) -> Result<Vec<Consent>> {
    ensure_encounter(tx, scope, encounter).await?;
    let rows: Vec<Row> = tx
        .query(
            "SELECT c.id, c.encounter_id, c.method, c.jurisdiction, c.all_party_required, c.all_parties_consented, c.consent_text_id, c.consent_text_version, c.documented_by, c.obtained_at, c.created_at, c.revoked_at
             FROM consents c WHERE c.tenant_id = $1 AND c.encounter_id = $2
             ORDER BY c.created_at, c.id",
        )
        .bind(encounter)
        .fetch_all()
        .await?;
    rows.into_iter().map(Row::into_consent).collect()
}

/// Withdraws a consent record; recordings already made stay, new ones need new consent.
pub async fn revoke(
    tx: &mut TenantTx,
    scope: PracticeScope,
    encounter: EncounterId,
    consent: ConsentId,
    by: UserId,
    now: DateTime<Utc>,
) -> Result<()> {
    ensure_encounter(tx, scope, encounter).await?;
    let n = tx
        .query(
            "UPDATE consents SET revoked_at = $4, revoked_by = $5
             WHERE tenant_id = $1 AND id = $2 AND encounter_id = $3 AND revoked_at IS NULL",
        )
        .bind(consent)
        .bind(encounter)
        .bind(now)
        .bind(by)
        .execute()
        .await?;
    if n == 1 {
        Ok(())
    } else {
        Err(DomainError::NotFound("consent"))
    }
}

/// The consent that allows recording the encounter now: its latest record that is not
/// withdrawn.
///
/// # Errors
/// `Refused { code: "consent_required" }` when there is none.
pub async fn current(tx: &mut TenantTx, encounter: EncounterId) -> Result<Consent> {
    let row: Option<Row> = tx
        .query(
            "SELECT c.id, c.encounter_id, c.method, c.jurisdiction, c.all_party_required, c.all_parties_consented, c.consent_text_id, c.consent_text_version, c.documented_by, c.obtained_at, c.created_at, c.revoked_at
             FROM consents c
             WHERE c.tenant_id = $1 AND c.encounter_id = $2 AND c.revoked_at IS NULL
               AND (c.all_parties_consented OR NOT c.all_party_required)
             ORDER BY c.created_at DESC, c.id DESC LIMIT 1",
        )
        .bind(encounter)
        .fetch_optional()
        .await?;
    match row {
        Some(r) => r.into_consent(),
        None => Err(DomainError::Refused {
            code: "consent_required",
            message: "this encounter has no current consent to record: document consent first",
        }),
    }
}

/// `NotFound("encounter")` unless the encounter is visible in `scope`.
pub(crate) async fn ensure_encounter(
    tx: &mut TenantTx,
    scope: PracticeScope,
    encounter: EncounterId,
) -> Result<()> {
    let found: Option<(Uuid,)> = tx
        .query(concat!(
            "SELECT e.id FROM encounters e WHERE e.tenant_id = $1 AND e.id = $3 AND ",
            in_scope!("e.practice_id")
        ))
        .bind(scope.as_param())
        .bind(encounter)
        .fetch_optional()
        .await?;
    found.map(|_| ()).ok_or(DomainError::NotFound("encounter"))
}

/// One version of a tenant's consent text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ConsentText {
    /// Identifier.
    pub id: Uuid,
    /// The text's name, e.g. `Visit recording (English)`.
    pub name: String,
    /// Its version, e.g. `2026-11`.
    pub version: String,
    /// Its language tag, e.g. `en` or `es-MX`.
    pub language: String,
    /// What the patient is shown.
    pub body: String,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When it was retired, if it was.
    pub retired_at: Option<DateTime<Utc>>,
}

/// Adds a version of a consent text. A name and version pair is unique.
pub async fn add_text(
    tx: &mut TenantTx,
    name: &str,
    version: &str,
    language: &str,
    body: &str,
    by: UserId,
    now: DateTime<Utc>,
) -> Result<ConsentText> {
    let name = validate::text("name", name, 100)?;
    let version = validate::text("version", version, 40)?;
    if version == DEFAULT_TEXT_VERSION {
        return Err(invalid("version", "is the built-in text's version"));
    }
    let language = validate::text("language", language, 35)?;
    if language.len() < 2
        || !language
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(invalid(
            "language",
            "must be a language tag such as en or es-MX",
        ));
    }
    // The body may hold line breaks; other control characters are refused.
    let body = body.trim();
    if body.is_empty() || body.chars().count() > 20_000 {
        return Err(invalid("body", "must have 1 to 20000 characters"));
    }
    if body
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    {
        return Err(invalid("body", "must not contain control characters"));
    }
    let id = ConsentTextId::generate();
    tx.query(
        "INSERT INTO consent_texts (tenant_id, id, name, version, language, body, created_by, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(name.as_str())
    .bind(version.as_str())
    .bind(language.as_str())
    .bind(body)
    .bind(by)
    .bind(now)
    .execute()
    .await
    .map_err(on_write("consent text"))?;
    Ok(ConsentText {
        id: id.as_uuid(),
        name,
        version,
        language,
        body: body.to_owned(),
        created_at: now,
        retired_at: None,
    })
}

/// The tenant's consent texts, current and retired, by name and version.
pub async fn texts(tx: &mut TenantTx) -> Result<Vec<ConsentText>> {
    Ok(tx
        .query(
            "SELECT id, name, version, language, body, created_at, retired_at FROM consent_texts
             WHERE tenant_id = $1 ORDER BY name, created_at, id",
        )
        .fetch_all()
        .await?)
}

/// Retires a consent text: consent can no longer be documented against it; records
/// that name it keep it.
pub async fn retire_text(tx: &mut TenantTx, id: ConsentTextId, now: DateTime<Utc>) -> Result<()> {
    let n = tx
        .query(
            "UPDATE consent_texts SET retired_at = $3
             WHERE tenant_id = $1 AND id = $2 AND retired_at IS NULL",
        )
        .bind(id)
        .bind(now)
        .execute()
        .await?;
    if n == 1 {
        Ok(())
    } else {
        Err(DomainError::NotFound("consent text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jurisdictions() {
        assert_eq!(check_jurisdiction(" US-CA ").unwrap(), "US-CA");
        assert!(check_jurisdiction("US").is_err());
        assert!(check_jurisdiction("US-XX").is_err());
        assert!(check_jurisdiction("us-ca").is_err());
        assert_eq!(check_jurisdiction("DE").unwrap(), "DE");
        assert!(check_jurisdiction("DEU").is_err());
        assert!(check_jurisdiction("").is_err());
        assert!(all_party_required("US-CA"));
        assert!(all_party_required("US-WA"));
        assert!(!all_party_required("US-NY"));
        assert!(!all_party_required("US-TX"));
        assert!(all_party_required("CA"));
        for (code, _, _) in ALL_PARTY_US_STATES {
            assert!(check_jurisdiction(code).is_ok(), "{code}");
        }
    }

    #[test]
    fn the_doc_lists_the_all_party_table() {
        let doc = include_str!("../../../docs/consent.md");
        let listed: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| US-"))
            .map(|l| &l[..2])
            .collect();
        let code: Vec<&str> = ALL_PARTY_US_STATES
            .iter()
            .map(|(c, _, _)| &c[3..])
            .collect();
        assert_eq!(
            listed, code,
            "docs/consent.md and ALL_PARTY_US_STATES differ"
        );
    }
}
