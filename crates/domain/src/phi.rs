use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that is protected health information. `Debug` and `Display` print
/// `[phi redacted]`; the value is reached only through [`Phi::expose`], which makes
/// every place that handles the clear value easy to find in review.
///
/// It serializes as the bare value, because authorized API responses must carry it;
/// error bodies and logs never serialize domain values.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Phi<T>(T);

const REDACTED: &str = "[phi redacted]";

impl<T> Phi<T> {
    /// Marks a value as PHI.
    pub fn new(value: T) -> Self {
        Phi(value)
    }

    /// The clear value.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The clear value, consuming the wrapper.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Phi<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> fmt::Display for Phi<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T: Serialize> Serialize for Phi<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Phi<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Phi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let name = Phi::new("Synthetic Patient Zyx".to_string());
        assert_eq!(format!("{name}"), REDACTED);
        assert_eq!(format!("{name:?}"), REDACTED);
        assert_eq!(format!("{:?}", Some(&name)), format!("Some({REDACTED})"));
        assert_eq!(name.expose(), "Synthetic Patient Zyx");
    }
}
