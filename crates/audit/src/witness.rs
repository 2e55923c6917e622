//! The witness: a copy of every signed checkpoint outside the database (a directory or
//! an object-store prefix), so that someone who can rewrite the database, checkpoints
//! included, is still caught by `phivault audit verify`.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use phivault_store::ObjectStoreConfig;
use serde::{Deserialize, Serialize};

use crate::checkpoint::SignedCheckpoint;
use crate::ledger::ChainId;
use crate::{AuditError, Result};

const FORMAT: &str = "phivault-audit-checkpoint-v1";

/// One witnessed checkpoint, as written to `<prefix>/<chain>/<sequence>.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessRecord {
    /// Always `phivault-audit-checkpoint-v1`.
    pub format: String,
    /// `platform` or the tenant id.
    pub chain: String,
    /// The signer's Ed25519 public key, hex.
    pub public_key: String,
    /// The signed checkpoint.
    pub checkpoint: SignedCheckpoint,
}

/// Where checkpoints are witnessed.
#[derive(Clone)]
pub struct Witness {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    description: String,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl Witness {
    /// A witness at `prefix` inside the configured store.
    pub fn open(config: &ObjectStoreConfig, prefix: &str) -> Result<Self> {
        let store = config
            .open_store()
            .map_err(|e| AuditError::Witness(e.to_string()))?;
        let prefix = prefix.trim_matches('/').to_string();
        Ok(Witness {
            store,
            description: format!("{}/{}", config.describe(), prefix),
            prefix,
        })
    }

    /// Where the witness writes, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    fn chain_dir(&self, chain: ChainId) -> String {
        if self.prefix.is_empty() {
            chain.to_string()
        } else {
            format!("{}/{chain}", self.prefix)
        }
    }

    /// Writes one checkpoint.
    pub async fn put(
        &self,
        chain: ChainId,
        checkpoint: &SignedCheckpoint,
        public_key: &[u8; 32],
    ) -> Result<()> {
        let record = WitnessRecord {
            format: FORMAT.into(),
            chain: chain.to_string(),
            public_key: hex::encode(public_key),
            checkpoint: checkpoint.clone(),
        };
        let body =
            serde_json::to_vec_pretty(&record).map_err(|e| AuditError::Witness(e.to_string()))?;
        let path = ObjectPath::from(format!(
            "{}/{:020}.json",
            self.chain_dir(chain),
            checkpoint.checkpoint.sequence
        ));
        self.store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| AuditError::Witness(e.to_string()))?;
        Ok(())
    }

    /// Every checkpoint witnessed for `chain`, in sequence order. A record that does not
    /// parse is an error: the witness was tampered with.
    pub async fn list(&self, chain: ChainId) -> Result<Vec<WitnessRecord>> {
        let dir = ObjectPath::from(self.chain_dir(chain));
        let metas: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| AuditError::Witness(e.to_string()))?;
        let mut out = Vec::with_capacity(metas.len());
        for meta in metas {
            let bytes = self
                .store
                .get(&meta.location)
                .await
                .map_err(|e| AuditError::Witness(e.to_string()))?
                .bytes()
                .await
                .map_err(|e| AuditError::Witness(e.to_string()))?;
            let record: WitnessRecord = serde_json::from_slice(&bytes).map_err(|_| {
                AuditError::Witness(format!("{} is not a witnessed checkpoint", meta.location))
            })?;
            if record.format != FORMAT || record.chain != chain.to_string() {
                return Err(AuditError::Witness(format!(
                    "{} does not belong to chain {chain}",
                    meta.location
                )));
            }
            out.push(record);
        }
        out.sort_by_key(|r| r.checkpoint.checkpoint.sequence);
        Ok(out)
    }
}
