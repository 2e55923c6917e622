use std::fmt;

use serde::{Deserialize, Serialize};

/// Text that is protected health information (transcript or note text).
///
/// `Debug` and `Display` print only its length; the content is reached through
/// [`PhiText::expose`], so every place that handles clear text is easy to find in review.
/// It serializes as a plain string because notes are stored (encrypted) as JSON.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhiText(String);

impl PhiText {
    /// Marks text as PHI.
    pub fn new(text: impl Into<String>) -> Self {
        PhiText(text.into())
    }

    /// The clear text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The clear text, consuming the wrapper.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// Length in bytes (not PHI, so it may be logged).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for PhiText {
    fn from(text: String) -> Self {
        PhiText(text)
    }
}

impl From<&str> for PhiText {
    fn from(text: &str) -> Self {
        PhiText(text.to_owned())
    }
}

impl fmt::Debug for PhiText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhiText(<redacted, {} bytes>)", self.0.len())
    }
}

impl fmt::Display for PhiText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        // Synthetic text.
        let text = PhiText::new("Synthetic Patient reports chest pain");
        let debug = format!("{text:?}");
        let display = format!("{text}");
        assert_eq!(debug, "PhiText(<redacted, 36 bytes>)");
        assert_eq!(display, "<redacted, 36 bytes>");
        assert!(!format!("{:#?}", Some(&text)).contains("chest"));
        assert_eq!(text.expose(), "Synthetic Patient reports chest pain");
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let text = PhiText::new("synthetic \"quoted\" text");
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, r#""synthetic \"quoted\" text""#);
        let back: PhiText = serde_json::from_str(&json).unwrap();
        assert_eq!(back, text);
    }
}
