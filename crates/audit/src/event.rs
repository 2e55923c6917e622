//! The event model and the catalogue of actions.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use phivault_store::TenantId;
use serde::{Deserialize, Serialize};

macro_rules! catalogue {
    ($($variant:ident => $name:literal : $doc:literal),* $(,)?) => {
        /// An audited action. The catalogue is closed: an action not listed here cannot be
        /// recorded.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum Action {
            $(#[doc = $doc] #[serde(rename = $name)] $variant,)*
        }

        impl Action {
            /// Every action, in catalogue order.
            pub const ALL: &'static [Action] = &[$(Action::$variant),*];

            /// The action's stable name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            /// What the action records.
            pub fn description(self) -> &'static str {
                match self {
                    $(Action::$variant => $doc,)*
                }
            }
        }

        impl FromStr for Action {
            type Err = UnknownAction;

            fn from_str(s: &str) -> Result<Self, UnknownAction> {
                match s {
                    $($name => Ok(Action::$variant),)*
                    _ => Err(UnknownAction),
                }
            }
        }
    };
}

catalogue!(
    AuthLogin => "auth.login": "A user or staff member signed in.",
    AuthLogout => "auth.logout": "A session ended by sign-out.",
    AuthMfaEnrolled => "auth.mfa.enrolled": "A second factor was enrolled.",
    AuthFailed => "auth.failed": "A sign-in, token or second factor was refused.",
    AuthLinkSent => "auth.link.sent": "A sign-in link was sent.",
    PhiRead => "phi.read": "PHI was read (the fields are named, never their values).",
    PhiCreate => "phi.create": "A PHI record was created.",
    PhiUpdate => "phi.update": "A PHI record was changed.",
    PhiDelete => "phi.delete": "A PHI record was erased (its data key destroyed).",
    PhiExport => "phi.export": "PHI left the system in an export.",
    RecordingCreated => "recording.created": "An audio recording was stored.",
    TranscriptionStarted => "transcription.started": "Transcription of a recording started.",
    TranscriptionCompleted => "transcription.completed": "Transcription of a recording finished.",
    NoteGenerated => "note.generated": "A clinical note was generated.",
    NoteApproved => "note.approved": "A clinician approved a note.",
    NarrativeCopied => "narrative.copied": "A note's narrative was copied out for the EHR.",
    E2eSessionCreated => "e2e.session.created": "An end-to-end encrypted session was created.",
    E2eInviteCreated => "e2e.invite.created": "An invite to an end-to-end session was issued (its token is never recorded).",
    E2eInviteConsumed => "e2e.invite.consumed": "An end-to-end session invite was used (or refused on reuse).",
    E2eUtteranceStored => "e2e.utterance.stored": "An end-to-end encrypted utterance was stored (ciphertext only).",
    E2eUtteranceRead => "e2e.utterance.read": "End-to-end encrypted utterances were read (a page, or a stream opened).",
    E2eSessionEnded => "e2e.session.ended": "An end-to-end session ended and its ciphertext was deleted.",
    DeviceRegistered => "device.registered": "A guest device registered its key (or registered again).",
    AdminUserChanged => "admin.user.changed": "A user, role or practice grant was changed.",
    AdminReferenceUpdated => "admin.reference.updated": "Reference data (templates, consent texts, vendors) was changed.",
    KeysRotated => "keys.rotated": "A tenant's key-encryption key was rotated.",
    KeysShredded => "keys.shredded": "A tenant's keys were destroyed (crypto-shredding).",
    KeysUnsealed => "keys.unsealed": "The server's keys were unsealed (or an attempt failed).",
    KeysSealed => "keys.sealed": "An operator sealed the server's keys: PHI is refused until they are unsealed.",
    RetentionObjectDeleted => "retention.object.deleted": "Retention deleted an object and its data key.",
    BreakglassRequested => "breakglass.requested": "Staff asked for emergency PHI access.",
    BreakglassApproved => "breakglass.approved": "Emergency PHI access was approved.",
    BreakglassDenied => "breakglass.denied": "A request for emergency PHI access was denied.",
    BreakglassRevoked => "breakglass.revoked": "Emergency PHI access was ended before its time.",
    GateChanged => "gate.changed": "A readiness gate or PHI mode changed state.",
    PhiModeChanged => "phi_mode.changed": "A tenant's PHI mode was turned on or off (or an attempt was refused).",
    VendorChanged => "vendor.changed": "A vendor or its BAA was registered, changed or removed.",
    BaaChanged => "baa.changed": "The tenant's BAA with the operator was recorded or removed.",
    ComplianceRecorded => "compliance.recorded": "A compliance record (officer, risk assessment, training, incident, sanctions) was saved as a new version.",
    EvidenceExported => "evidence.exported": "An evidence packet was produced.",
    BreachReported => "breach.reported": "A breach-impact report was produced.",
    AccessDenied => "access.denied": "A request was refused: tenant mismatch or missing permission.",
    StaffRead => "staff.read": "Staff read platform metadata.",
);

/// A name not in the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownAction;

impl fmt::Display for UnknownAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an action of the audit catalogue")
    }
}

impl std::error::Error for UnknownAction {}

/// Who acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A tenant user.
    User,
    /// Platform staff.
    Staff,
    /// An operator at the command line on the server host.
    Operator,
    /// The server itself (retention, pipeline).
    System,
    /// A guest device of an end-to-end session.
    Device,
    /// Nobody authenticated (a refused request).
    Anonymous,
}

impl ActorKind {
    /// The kind's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Staff => "staff",
            ActorKind::Operator => "operator",
            ActorKind::System => "system",
            ActorKind::Device => "device",
            ActorKind::Anonymous => "anonymous",
        }
    }
}

/// The actor: kind, identifier and role at the time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// What kind of actor.
    pub kind: ActorKind,
    /// Its identifier (a user id, a device id, `cli`, ...).
    pub id: String,
    /// Its role(s) at the time, comma-separated.
    pub role: String,
}

/// Where the request came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Client IP address.
    pub ip: String,
    /// User agent, truncated by the writer.
    pub user_agent: String,
    /// Device identifier, if any.
    pub device: String,
}

/// What was acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// Resource type (`patient`, `encounter`, `user`, ...).
    pub kind: String,
    /// Its identifier.
    pub id: String,
}

/// How it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused by policy.
    Denied,
    /// Failed.
    Failure,
}

impl Outcome {
    /// The outcome's stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// One audit event. Identifiers and field names only: no field holds PHI content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Position in the chain, from 1, without gaps.
    pub sequence: u64,
    /// When it happened (stored to the microsecond).
    pub time: DateTime<Utc>,
    /// The tenant, or `None` for platform events.
    pub tenant: Option<TenantId>,
    /// Who.
    pub actor: Actor,
    /// From where.
    pub source: Source,
    /// What.
    pub action: Action,
    /// On what.
    pub resource: Resource,
    /// Names of the fields read or written.
    pub fields: Vec<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, where required (break-glass, denials).
    pub reason: Option<String>,
    /// The request id, joining the event to the access log.
    pub request_id: String,
    /// For staff actions: the changed metadata before.
    pub before: Option<serde_json::Value>,
    /// For staff actions: the changed metadata after.
    pub after: Option<serde_json::Value>,
}

#[cfg(test)]
mod catalogue_tests {
    use super::Action;

    #[test]
    fn the_documented_catalogue_names_every_action() {
        let doc = include_str!("../../../docs/audit.md");
        for a in Action::ALL {
            assert!(
                doc.contains(&format!("| `{}` |", a.as_str())),
                "docs/audit.md does not list {}",
                a.as_str()
            );
            assert_eq!(a.as_str().parse::<Action>(), Ok(*a));
        }
    }
}
