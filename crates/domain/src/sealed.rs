//! What the PHI tables share: the columns of a record's data key, read in the same query
//! as the record, and the UTF-8 check of an opened field.

use phivault_crypto::CryptoError;
use phivault_crypto::keys::WrappedDataKey;
use uuid::Uuid;

use crate::{DomainError, Result};

/// The `data_keys` row joined to a record as `k`, selected with [`DATA_KEY_COLUMNS`].
#[derive(sqlx::FromRow)]
pub(crate) struct DataKeyColumns {
    dk_id: Uuid,
    dk_kek_version: i64,
    dk_kind: String,
    dk_wrapped: Option<Vec<u8>>,
}

/// The select list of [`DataKeyColumns`].
macro_rules! data_key_columns {
    () => {
        "k.id AS dk_id, k.kek_version AS dk_kek_version, k.kind AS dk_kind, k.wrapped AS dk_wrapped"
    };
}
pub(crate) use data_key_columns;

impl DataKeyColumns {
    /// The wrapped key, for `KeyService::unwrap_data_key`.
    pub(crate) fn wrapped(&self) -> WrappedDataKey {
        WrappedDataKey {
            id: self.dk_id,
            kek_version: self.dk_kek_version,
            kind: self.dk_kind.clone(),
            wrapped: self.dk_wrapped.clone(),
        }
    }
}

/// An opened field as text; invalid UTF-8 means the stored bytes are not what was sealed.
pub(crate) fn text(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| DomainError::Crypto(CryptoError::Decrypt))
}
