use std::fmt;
use std::str::FromStr;

use phivault_store::Arg;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! define_id {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                $name(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(id: Uuid) -> Self {
                $name(id)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }

        impl From<$name> for Arg {
            fn from(v: $name) -> Arg {
                Arg::Uuid(v.0)
            }
        }
    )*};
}

define_id!(
    /// A practice (client clinic) inside a tenant.
    PracticeId,
    /// A user of a tenant.
    UserId,
    /// A patient.
    PatientId,
    /// An encounter (a visit).
    EncounterId,
    /// An API token.
    TokenId,
    /// A sign-in session.
    SessionId,
    /// A consent-to-record record.
    ConsentId,
    /// A tenant's own consent text (one version).
    ConsentTextId,
    /// A recording (one uploaded audio file of an encounter).
    RecordingId,
);
