//! The tenant's transcription vocabulary: terms (drug names, local places, clinicians'
//! own words) that the Whisper engine takes as its previous-text prompt, so that
//! "metoprolol" comes out as metoprolol rather than "meto pro lol".
//!
//! The vocabulary is configuration, not PHI, and the rules keep it that way as far as a
//! rule can: short word-like terms (letters, digits, spaces and `-'./+`), at most
//! [`MAX_TERMS`] of them, no duplicates. A patient's name would pass those rules, so
//! audit events record how many terms changed, never the terms, and the API tells
//! administrators that names of patients do not belong here.

use chrono::{DateTime, Utc};
use phivault_store::TenantTx;

use crate::Result;
use crate::error::invalid;

/// Most terms a tenant may keep. Whisper reads at most 223 prompt tokens (about 60
/// drug names); terms past that are dropped from the front of the prompt.
pub const MAX_TERMS: usize = 200;
/// Longest term, in characters.
pub const MAX_TERM_CHARS: usize = 64;

/// Checks and normalises a vocabulary: each term trimmed, inner whitespace collapsed;
/// empty, over-long, oddly-charactered or duplicate (case-insensitively) terms refused.
pub fn normalise(terms: &[String]) -> Result<Vec<String>> {
    if terms.len() > MAX_TERMS {
        return Err(invalid("terms", "at most 200 terms"));
    }
    let mut out: Vec<String> = Vec::with_capacity(terms.len());
    let mut seen = std::collections::HashSet::new();
    for term in terms {
        let term = term.split_whitespace().collect::<Vec<_>>().join(" ");
        if term.is_empty() {
            return Err(invalid("terms", "a term is empty"));
        }
        if term.chars().count() > MAX_TERM_CHARS {
            return Err(invalid("terms", "a term is longer than 64 characters"));
        }
        if !term.chars().any(char::is_alphabetic) {
            return Err(invalid("terms", "a term has no letter"));
        }
        if !term
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '\'' | '.' | '/' | '+'))
        {
            return Err(invalid(
                "terms",
                "terms hold letters, digits, spaces and - ' . / + only",
            ));
        }
        if !seen.insert(term.to_lowercase()) {
            return Err(invalid("terms", "a term is listed twice"));
        }
        out.push(term);
    }
    Ok(out)
}

/// The tenant's vocabulary (empty when never set).
pub async fn get(tx: &mut TenantTx) -> Result<Vec<String>> {
    let row: Option<(String,)> = tx
        .query("SELECT vocabulary FROM tenant_settings WHERE tenant_id = $1")
        .fetch_optional()
        .await?;
    match row {
        None => Ok(Vec::new()),
        // Only `set` writes the column; a value it could not have written counts as none
        // rather than stopping every transcription of the tenant.
        Some((json,)) => Ok(serde_json::from_str(&json).unwrap_or_default()),
    }
}

/// Replaces the tenant's vocabulary with `terms` (checked by [`normalise`]); returns
/// what was stored. Transcriptions started from then on use it.
pub async fn set(tx: &mut TenantTx, terms: &[String], now: DateTime<Utc>) -> Result<Vec<String>> {
    let terms = normalise(terms)?;
    let json = serde_json::to_string(&terms).map_err(|_| invalid("terms", "not storable"))?;
    let defaults = crate::sessions::SessionPolicy::default();
    tx.query(
        "INSERT INTO tenant_settings (tenant_id, session_idle_secs, session_absolute_secs, vocabulary, updated_at)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id) DO UPDATE SET vocabulary = excluded.vocabulary,
             updated_at = excluded.updated_at",
    )
    .bind(defaults.idle.num_seconds())
    .bind(defaults.absolute.num_seconds())
    .bind(json)
    .bind(now)
    .execute()
    .await?;
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(terms: &[&str]) -> Vec<String> {
        terms.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn keeps_word_like_terms_and_tidies_spaces() {
        assert_eq!(
            normalise(&v(&[
                "  metoprolol ",
                "Tylenol \n 3",
                "St. Mary's",
                "co-amoxiclav",
                "5-FU"
            ]))
            .unwrap(),
            v(&[
                "metoprolol",
                "Tylenol 3",
                "St. Mary's",
                "co-amoxiclav",
                "5-FU"
            ])
        );
        assert!(normalise(&[]).unwrap().is_empty());
    }

    #[test]
    fn refuses_what_is_not_a_term() {
        for bad in [
            v(&[""]),
            v(&["   "]),
            v(&["1234"]),
            v(&["x".repeat(65).as_str()]),
            v(&["drop table; --"]),
            v(&["<|endoftext|>"]),
            v(&["bell\u{7}"]),
            v(&["metoprolol", "Metoprolol"]),
        ] {
            let e = normalise(&bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid terms"), "{e}");
            // The message never repeats the value.
            assert!(!e.contains("metoprolol") && !e.contains("drop"), "{e}");
        }
        let many: Vec<String> = (0..=MAX_TERMS).map(|i| format!("term{i}")).collect();
        assert!(normalise(&many).is_err());
        assert_eq!(normalise(&many[..MAX_TERMS]).unwrap().len(), MAX_TERMS);
    }
}
