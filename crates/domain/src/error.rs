use phivault_store::StoreError;
use thiserror::Error;

/// Errors of domain operations. Messages name resources and fields, never values.
#[derive(Debug, Error)]
pub enum DomainError {
    /// The resource does not exist, or is not visible to the caller (the two are not told
    /// apart, so existence does not leak across practice or tenant lines).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A resource with the same unique value exists.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A field failed validation.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// Why, without the value.
        reason: &'static str,
    },
    /// The request is well formed but a precondition of the record's state does not
    /// hold (no consent for the recording, a recording already stored).
    #[error("{message}")]
    Refused {
        /// Stable machine code, e.g. `consent_required`.
        code: &'static str,
        /// What is missing, for a person.
        message: &'static str,
    },
    /// An upload was refused (size, checksum, audio).
    #[error(transparent)]
    Upload(crate::recordings::UploadError),
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
    /// Encryption or keys failed (sealed, destroyed key, integrity failure).
    #[error(transparent)]
    Crypto(phivault_crypto::CryptoError),
}

impl From<phivault_crypto::CryptoError> for DomainError {
    fn from(e: phivault_crypto::CryptoError) -> Self {
        match e {
            phivault_crypto::CryptoError::Store(s) => DomainError::Store(s),
            other => DomainError::Crypto(other),
        }
    }
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        DomainError::Store(e)
    }
}

pub(crate) fn invalid(field: &'static str, reason: &'static str) -> DomainError {
    DomainError::Invalid { field, reason }
}

/// Maps a uniqueness or reference failure of a write to a domain error naming `what`.
pub(crate) fn on_write(what: &'static str) -> impl Fn(StoreError) -> DomainError {
    move |e| match e {
        StoreError::Conflict => DomainError::Conflict(what),
        StoreError::ForeignKey => DomainError::NotFound("referenced record"),
        other => DomainError::Store(other),
    }
}
