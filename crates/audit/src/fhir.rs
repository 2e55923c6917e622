//! Audit events as FHIR R4 `AuditEvent` resources (for `phivault audit export --format
//! fhir-ndjson`).
//!
//! The mapping (documented in `docs/formats.md`): `type` is a DICOM audit event code
//! (`http://dicom.nema.org/resources/ontology/DCM`), `subtype` the phivault action name
//! (`urn:phivault:audit-action`), `action` the FHIR C/R/U/D/E code, `outcome` 0 / 4 / 8
//! for success / denied / failure. Like the event it comes from, a resource carries
//! identifiers and field names only, never PHI content: nothing is added here that the
//! event does not hold.

use chrono::SecondsFormat;
use serde_json::{Value, json};

use crate::chain::ChainedEvent;
use crate::encoding::canonical_json;
use crate::event::{Action, Outcome};
use crate::ledger::ChainId;

/// The DICOM code system of audit event types.
pub const DCM_SYSTEM: &str = "http://dicom.nema.org/resources/ontology/DCM";
/// The code system of `subtype`: phivault's action names.
pub const ACTION_SYSTEM: &str = "urn:phivault:audit-action";
/// The code system of `source.type`.
pub const SOURCE_TYPE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/security-source-type";
/// The prefix of an agent identifier's system; the actor kind follows.
pub const ACTOR_SYSTEM_PREFIX: &str = "urn:phivault:actor:";
/// The system of the client device agent's identifier.
pub const DEVICE_SYSTEM: &str = "urn:phivault:device";

/// The DICOM audit event type (code, display) of `action`.
pub fn event_type(action: Action) -> (&'static str, &'static str) {
    const APPLICATION_ACTIVITY: (&str, &str) = ("110100", "Application Activity");
    const EXPORT: (&str, &str) = ("110106", "Export");
    const PATIENT_RECORD: (&str, &str) = ("110110", "Patient Record");
    const SECURITY_ALERT: (&str, &str) = ("110113", "Security Alert");
    const USER_AUTHENTICATION: (&str, &str) = ("110114", "User Authentication");
    // Exhaustive on purpose: a new action must be given a type here.
    match action {
        Action::AuthLogin
        | Action::AuthLogout
        | Action::AuthMfaEnrolled
        | Action::AuthFailed
        | Action::AuthLinkSent => USER_AUTHENTICATION,
        Action::E2eInviteCreated | Action::E2eInviteConsumed | Action::DeviceRegistered => {
            USER_AUTHENTICATION
        }
        Action::E2eUtteranceStored | Action::E2eUtteranceRead | Action::E2eSessionEnded => {
            PATIENT_RECORD
        }
        Action::PhiRead
        | Action::PhiCreate
        | Action::PhiUpdate
        | Action::PhiDelete
        | Action::RecordingCreated
        | Action::NoteGenerated
        | Action::NoteApproved
        | Action::RetentionObjectDeleted => PATIENT_RECORD,
        Action::PhiExport | Action::NarrativeCopied => EXPORT,
        Action::AdminUserChanged
        | Action::KeysRotated
        | Action::KeysShredded
        | Action::BreakglassRequested
        | Action::BreakglassApproved
        | Action::BreakglassDenied
        | Action::BreakglassRevoked
        | Action::AccessDenied
        | Action::KeysSealed
        | Action::PhiModeChanged
        | Action::VendorChanged
        | Action::BaaChanged
        | Action::BreachReported => SECURITY_ALERT,
        Action::EvidenceExported => EXPORT,
        Action::ComplianceRecorded => APPLICATION_ACTIVITY,
        Action::TranscriptionStarted
        | Action::TranscriptionCompleted
        | Action::E2eSessionCreated
        | Action::AdminReferenceUpdated
        | Action::KeysUnsealed
        | Action::GateChanged
        | Action::StaffRead => APPLICATION_ACTIVITY,
    }
}

/// The FHIR `AuditEvent.action` code of `action`: `C`reate, `R`ead, `U`pdate, `D`elete
/// or `E`xecute.
pub fn action_code(action: Action) -> &'static str {
    match action {
        Action::PhiCreate
        | Action::AuthMfaEnrolled
        | Action::RecordingCreated
        | Action::NoteGenerated
        | Action::E2eSessionCreated
        | Action::E2eUtteranceStored
        | Action::E2eInviteCreated
        | Action::DeviceRegistered => "C",
        Action::PhiRead
        | Action::PhiExport
        | Action::NarrativeCopied
        | Action::StaffRead
        | Action::E2eUtteranceRead => "R",
        Action::PhiUpdate
        | Action::NoteApproved
        | Action::AdminUserChanged
        | Action::AdminReferenceUpdated
        | Action::KeysRotated
        | Action::GateChanged
        | Action::PhiModeChanged
        | Action::VendorChanged
        | Action::BaaChanged => "U",
        Action::ComplianceRecorded => "C",
        Action::EvidenceExported | Action::BreachReported => "R",
        Action::PhiDelete
        | Action::KeysShredded
        | Action::RetentionObjectDeleted
        | Action::E2eSessionEnded => "D",
        Action::AuthLogin
        | Action::AuthLogout
        | Action::AuthFailed
        | Action::AuthLinkSent
        | Action::TranscriptionStarted
        | Action::TranscriptionCompleted
        | Action::E2eInviteConsumed
        | Action::KeysUnsealed
        | Action::KeysSealed
        | Action::BreakglassRequested
        | Action::BreakglassApproved
        | Action::BreakglassDenied
        | Action::BreakglassRevoked
        | Action::AccessDenied => "E",
    }
}

/// The FHIR `AuditEvent.outcome` code: 0 success, 4 minor failure (refused by policy), 8
/// serious failure.
pub fn outcome_code(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "0",
        Outcome::Denied => "4",
        Outcome::Failure => "8",
    }
}

/// The resource id of an event: `<chain>-<sequence>` (at most 57 characters, within
/// FHIR's 64).
pub fn resource_id(chain: ChainId, sequence: u64) -> String {
    format!("{chain}-{sequence}")
}

fn detail(kind: &str, value: &str) -> Value {
    json!({ "type": kind, "valueString": value })
}

/// The FHIR R4 `AuditEvent` of one stored event of `chain`.
pub fn audit_event(chain: ChainId, stored: &ChainedEvent) -> Value {
    let e = &stored.event;
    let (type_code, type_display) = event_type(e.action);

    let mut agent = json!({
        "who": {
            "identifier": {
                "system": format!("{ACTOR_SYSTEM_PREFIX}{}", e.actor.kind.as_str()),
                "value": e.actor.id,
            }
        },
        "requestor": true,
    });
    if !e.actor.role.is_empty() {
        agent["role"] = json!([{ "text": e.actor.role }]);
    }
    if !e.source.ip.is_empty() {
        agent["network"] = json!({ "address": e.source.ip, "type": "2" });
    }
    let mut agents = vec![agent];
    if !e.source.device.is_empty() {
        agents.push(json!({
            "who": { "identifier": { "system": DEVICE_SYSTEM, "value": e.source.device } },
            "requestor": false,
        }));
    }

    let mut details: Vec<Value> = e.fields.iter().map(|f| detail("field", f)).collect();
    if !e.request_id.is_empty() {
        details.push(detail("request-id", &e.request_id));
    }
    if !e.source.user_agent.is_empty() {
        details.push(detail("user-agent", &e.source.user_agent));
    }
    details.push(detail("hash", &hex::encode(stored.hash)));
    details.push(detail("prev-hash", &hex::encode(stored.prev_hash)));
    if let Some(before) = &e.before {
        details.push(detail("before", &canonical_json(before)));
    }
    if let Some(after) = &e.after {
        details.push(detail("after", &canonical_json(after)));
    }
    let mut entity = json!({ "detail": details });
    if !e.resource.kind.is_empty() || !e.resource.id.is_empty() {
        entity["what"] = json!({
            "identifier": { "value": format!("{}/{}", e.resource.kind, e.resource.id) }
        });
    }

    let mut resource = json!({
        "resourceType": "AuditEvent",
        "id": resource_id(chain, e.sequence),
        "type": { "system": DCM_SYSTEM, "code": type_code, "display": type_display },
        "subtype": [{
            "system": ACTION_SYSTEM,
            "code": e.action.as_str(),
            "display": e.action.description(),
        }],
        "action": action_code(e.action),
        "recorded": e.time.to_rfc3339_opts(SecondsFormat::Micros, true),
        "outcome": outcome_code(e.outcome),
        "agent": agents,
        "source": {
            "observer": { "display": "phivault" },
            "type": [{
                "system": SOURCE_TYPE_SYSTEM,
                "code": "4",
                "display": "Application Server",
            }],
        },
        "entity": [entity],
    });
    if let Some(reason) = &e.reason {
        resource["outcomeDesc"] = Value::String(reason.clone());
    }
    resource
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use phivault_store::TenantId;
    use uuid::Uuid;

    use super::*;
    use crate::chain::{GENESIS, chain};
    use crate::event::{Actor, ActorKind, AuditEvent, Resource, Source};

    fn sample(action: Action, outcome: Outcome) -> ChainedEvent {
        let tenant = TenantId::from_uuid(Uuid::from_u128(0x42));
        chain(
            GENESIS,
            AuditEvent {
                sequence: 17,
                time: Utc.timestamp_micros(1_800_000_000_123_456).unwrap(),
                tenant: Some(tenant),
                actor: Actor {
                    kind: ActorKind::Staff,
                    id: Uuid::from_u128(7).to_string(),
                    role: "support,admin".into(),
                },
                source: Source {
                    ip: "192.0.2.10".into(),
                    user_agent: "synthetic-agent/1.0".into(),
                    device: "device-9".into(),
                },
                action,
                resource: Resource {
                    kind: "patient".into(),
                    id: Uuid::from_u128(99).to_string(),
                },
                fields: vec!["mrn".into(), "family_name".into()],
                outcome,
                reason: (outcome != Outcome::Success).then(|| "synthetic reason".into()),
                request_id: "req-17".into(),
                before: Some(json!({"status": "active", "role": "member"})),
                after: Some(json!({"role": "admin", "status": "active"})),
            },
        )
    }

    #[test]
    fn every_action_maps_to_a_type_and_an_action_code() {
        let dcm = ["110100", "110106", "110110", "110113", "110114"];
        for &action in Action::ALL {
            let (code, display) = event_type(action);
            assert!(dcm.contains(&code), "{action:?} maps to {code}");
            assert!(!display.is_empty());
            assert!(
                ["C", "R", "U", "D", "E"].contains(&action_code(action)),
                "{action:?}"
            );
            let r = audit_event(ChainId::Platform, &sample(action, Outcome::Success));
            assert_eq!(r["type"]["code"], code);
            assert_eq!(r["subtype"][0]["code"], action.as_str());
            assert_eq!(r["subtype"][0]["system"], ACTION_SYSTEM);
        }
        assert_eq!(event_type(Action::PhiRead).0, "110110");
        assert_eq!(event_type(Action::AuthLogin).0, "110114");
        assert_eq!(event_type(Action::PhiExport).0, "110106");
        assert_eq!(event_type(Action::TranscriptionStarted).0, "110100");
        assert_eq!(action_code(Action::PhiCreate), "C");
        assert_eq!(action_code(Action::PhiRead), "R");
        assert_eq!(action_code(Action::PhiUpdate), "U");
        assert_eq!(action_code(Action::PhiDelete), "D");
        assert_eq!(action_code(Action::AuthLogin), "E");
    }

    #[test]
    fn an_event_maps_field_by_field() {
        let stored = sample(Action::PhiRead, Outcome::Denied);
        let tenant = stored.event.tenant.unwrap();
        let r = audit_event(ChainId::Tenant(tenant), &stored);
        assert_eq!(r["resourceType"], "AuditEvent");
        assert_eq!(r["id"], "00000000-0000-0000-0000-000000000042-17");
        assert!(r["id"].as_str().unwrap().len() <= 64);
        assert_eq!(r["type"]["system"], DCM_SYSTEM);
        assert_eq!(r["type"]["display"], "Patient Record");
        assert_eq!(r["action"], "R");
        assert_eq!(r["recorded"], "2027-01-15T08:00:00.123456Z");
        assert_eq!(r["outcome"], "4");
        assert_eq!(r["outcomeDesc"], "synthetic reason");

        let agent = &r["agent"][0];
        assert_eq!(
            agent["who"]["identifier"]["system"],
            "urn:phivault:actor:staff"
        );
        assert_eq!(
            agent["who"]["identifier"]["value"],
            Uuid::from_u128(7).to_string()
        );
        assert_eq!(agent["role"][0]["text"], "support,admin");
        assert_eq!(agent["requestor"], true);
        assert_eq!(agent["network"]["address"], "192.0.2.10");
        assert_eq!(agent["network"]["type"], "2");
        assert_eq!(r["agent"][1]["who"]["identifier"]["value"], "device-9");
        assert_eq!(r["agent"][1]["requestor"], false);

        assert_eq!(r["source"]["observer"]["display"], "phivault");
        assert_eq!(r["source"]["type"][0]["system"], SOURCE_TYPE_SYSTEM);
        assert_eq!(r["source"]["type"][0]["code"], "4");

        let entity = &r["entity"][0];
        assert_eq!(
            entity["what"]["identifier"]["value"],
            format!("patient/{}", Uuid::from_u128(99))
        );
        let details: Vec<(String, String)> = entity["detail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["type"].as_str().unwrap().to_string(),
                    d["valueString"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let has = |k: &str, v: &str| details.iter().any(|(a, b)| a == k && b == v);
        assert!(has("field", "mrn"));
        assert!(has("field", "family_name"));
        assert!(has("request-id", "req-17"));
        assert!(has("hash", &hex::encode(stored.hash)));
        assert!(has("before", r#"{"role":"member","status":"active"}"#));
        assert!(has("after", r#"{"role":"admin","status":"active"}"#));
    }

    #[test]
    fn outcomes_and_optional_parts() {
        assert_eq!(outcome_code(Outcome::Success), "0");
        assert_eq!(outcome_code(Outcome::Denied), "4");
        assert_eq!(outcome_code(Outcome::Failure), "8");
        let mut stored = sample(Action::AuthFailed, Outcome::Success);
        stored.event.source = Source::default();
        stored.event.actor.role.clear();
        stored.event.resource = Resource {
            kind: String::new(),
            id: String::new(),
        };
        stored.event.before = None;
        stored.event.after = None;
        let r = audit_event(ChainId::Platform, &stored);
        assert_eq!(r["id"], "platform-17");
        assert_eq!(r["outcome"], "0");
        assert!(r.get("outcomeDesc").is_none());
        assert_eq!(r["agent"].as_array().unwrap().len(), 1);
        assert!(r["agent"][0].get("network").is_none());
        assert!(r["agent"][0].get("role").is_none());
        assert!(r["entity"][0].get("what").is_none());
        let failure = audit_event(
            ChainId::Platform,
            &sample(Action::PhiUpdate, Outcome::Failure),
        );
        assert_eq!(failure["outcome"], "8");
    }
}
