//! Audit events for operator commands: tenant, practice, user, token and key changes
//! made at the command line go into the trail like those made through the API, in the
//! same transaction as the change.

use chrono::Utc;
use phivault_audit::{Action, Actor, ActorKind, AuditEvent, Outcome, Resource, Source};

/// An event by the operator running this command (named by the OS account).
pub fn event(action: Action, kind: &str, id: impl ToString, fields: &[&str]) -> AuditEvent {
    let account = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    AuditEvent {
        sequence: 0,
        time: Utc::now(),
        tenant: None,
        actor: Actor {
            kind: ActorKind::Operator,
            id: format!("cli:{account}"),
            role: "operator".into(),
        },
        source: Source {
            ip: "local".into(),
            user_agent: concat!("phivault-cli/", env!("CARGO_PKG_VERSION")).into(),
            device: String::new(),
        },
        action,
        resource: Resource {
            kind: kind.into(),
            id: id.to_string(),
        },
        fields: fields.iter().map(|f| f.to_string()).collect(),
        outcome: Outcome::Success,
        reason: None,
        request_id: String::new(),
        before: None,
        after: None,
    }
}
