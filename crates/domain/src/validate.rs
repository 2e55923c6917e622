//! Field rules shared by the domain modules. Errors name the field and the rule, never
//! the value.

use crate::Result;
use crate::error::invalid;

/// Trims `value` and checks it has between 1 and `max` characters and no control
/// characters.
pub(crate) fn text(field: &'static str, value: &str, max: usize) -> Result<String> {
    let v = value.trim();
    if v.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(invalid(field, "is too long"));
    }
    if v.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    Ok(v.to_string())
}

/// A plausible e-mail address, lower-cased. Deliverability is checked by sending mail.
pub(crate) fn email(value: &str) -> Result<String> {
    let v = text("email", value, 320)?.to_lowercase();
    let mut parts = v.split('@');
    let (local, domain) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if parts.next().is_some()
        || local.is_empty()
        || !domain.contains('.')
        || v.contains(char::is_whitespace)
    {
        return Err(invalid("email", "is not an e-mail address"));
    }
    Ok(v)
}
