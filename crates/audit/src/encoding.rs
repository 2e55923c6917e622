//! The canonical encoding hashed into the chain (documented in `docs/formats.md`).
//!
//! Every variable-length part is length-prefixed, optional parts carry a presence byte,
//! times are microseconds since the Unix epoch, and JSON snapshots are re-serialised with
//! sorted keys, so one event has exactly one encoding.

use crate::event::AuditEvent;

const DOMAIN: &[u8] = b"phivault-audit-event-v1";

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

/// JSON with object keys sorted at every level and no white space.
pub(crate) fn canonical_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(canonical_json)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// The bytes hashed for `event` linked to `prev_hash`.
pub fn canonical_bytes(event: &AuditEvent, prev_hash: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(prev_hash);
    out.extend_from_slice(&event.sequence.to_be_bytes());
    out.extend_from_slice(&event.time.timestamp_micros().to_be_bytes());
    match event.tenant {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            out.extend_from_slice(t.as_uuid().as_bytes());
        }
    }
    put_str(&mut out, event.actor.kind.as_str());
    put_str(&mut out, &event.actor.id);
    put_str(&mut out, &event.actor.role);
    put_str(&mut out, &event.source.ip);
    put_str(&mut out, &event.source.user_agent);
    put_str(&mut out, &event.source.device);
    put_str(&mut out, event.action.as_str());
    put_str(&mut out, &event.resource.kind);
    put_str(&mut out, &event.resource.id);
    out.extend_from_slice(&(event.fields.len() as u32).to_be_bytes());
    for f in &event.fields {
        put_str(&mut out, f);
    }
    put_str(&mut out, event.outcome.as_str());
    put_opt(&mut out, event.reason.as_deref());
    put_str(&mut out, &event.request_id);
    put_opt(
        &mut out,
        event.before.as_ref().map(canonical_json).as_deref(),
    );
    put_opt(
        &mut out,
        event.after.as_ref().map(canonical_json).as_deref(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_are_sorted_at_every_level() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"z":0,"y":1}],"c":"x"}}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"x","d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }
}
