//! The JSON shapes of docs/e2e.md, as the client sends and receives them. Unknown fields
//! are ignored so that the server can add some without breaking older clients.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Who may write to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One device only (dictation); no invites.
    SingleDevice,
    /// The owner plus one guest device that joins with an invite.
    TwoDevice,
}

impl Mode {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::SingleDevice => "single_device",
            Mode::TwoDevice => "two_device",
        }
    }
}

/// A session as the server describes it.
#[derive(Clone, Debug, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    pub id: Uuid,
    /// Single- or two-device.
    pub mode: Mode,
    /// Fingerprint of the session key.
    pub key_fingerprint: String,
    /// Always `AES-256-GCM` today.
    pub algorithm: String,
    /// `open` or `ended`.
    pub status: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// The caller's sender id in this session, when the server says it.
    #[serde(default)]
    pub participant_id: Option<Uuid>,
}

/// A new invite. `Debug` hides the token.
#[derive(Clone, Deserialize)]
pub struct InviteCreated {
    /// The single-use invite token (`pvi_…`).
    pub token: SecretString,
    /// When the invite stops working (RFC 3339).
    pub expires_at: String,
    /// `/join?token=…`, relative to the server.
    #[serde(default)]
    pub join_path: Option<String>,
}

impl std::fmt::Debug for InviteCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteCreated")
            .field("token", &"redacted")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A registration challenge for a device key.
#[derive(Clone, Debug, Deserialize)]
pub struct DeviceChallenge {
    /// base64url of 32 random bytes; single use.
    pub challenge: String,
    /// When it stops working (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// How many sessions a guest device has joined and may join.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct Trial {
    /// Sessions joined so far.
    pub sessions_joined: u64,
    /// The lifetime limit.
    pub limit: u64,
}

/// A registered device. `Debug` hides the token.
#[derive(Clone, Deserialize)]
pub struct DeviceRegistered {
    /// Derived from the public key: the same key gives the same id.
    pub device_id: Uuid,
    /// The device's bearer token (`pvd_…`); a new registration revokes the old one.
    pub device_token: SecretString,
    /// Trial count, when the server reports it.
    #[serde(default)]
    pub trial: Option<Trial>,
}

impl std::fmt::Debug for DeviceRegistered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceRegistered")
            .field("device_id", &self.device_id)
            .field("device_token", &"redacted")
            .field("trial", &self.trial)
            .finish()
    }
}

/// The answer to a successful join.
#[derive(Clone, Debug, Deserialize)]
pub struct Joined {
    /// The session's tenant.
    pub tenant_id: Uuid,
    /// The session joined.
    pub session_id: Uuid,
    /// The device's sender id in this session.
    pub participant_id: Uuid,
    /// Fingerprint of the session key, to check the key from the link against.
    pub key_fingerprint: String,
    /// Always `AES-256-GCM` today.
    pub algorithm: String,
}

/// The body of an append.
#[derive(Clone, Debug, Serialize)]
pub struct NewUtterance {
    /// Per sender, strictly increasing from 1.
    pub sequence: u64,
    /// base64url of the 12-byte nonce.
    pub nonce: String,
    /// base64url of ciphertext and tag.
    pub ciphertext: String,
    /// Fingerprint of the key it was sealed with.
    pub key_fingerprint: String,
    /// `AES-256-GCM`.
    pub algorithm: String,
}

/// The answer to an append.
#[derive(Clone, Debug, Deserialize)]
pub struct StoredUtterance {
    /// Utterance id.
    pub id: String,
    /// Place in the session, in server order.
    pub position: u64,
    /// The sender's participant id.
    pub sender: Uuid,
    /// The sender's sequence number.
    pub sequence: u64,
    /// When the server stored it (RFC 3339).
    pub created_at: String,
}

/// A stored utterance as listed or streamed: still sealed.
#[derive(Clone, Debug, Deserialize)]
pub struct UtteranceRecord {
    /// Utterance id.
    pub id: String,
    /// Place in the session, in server order.
    pub position: u64,
    /// The sender's participant id.
    pub sender: Uuid,
    /// The sender's sequence number.
    pub sequence: u64,
    /// base64url of the nonce.
    pub nonce: String,
    /// base64url of ciphertext and tag.
    pub ciphertext: String,
    /// Fingerprint of the key it claims to be sealed with.
    pub key_fingerprint: String,
    /// The algorithm it claims.
    pub algorithm: String,
    /// When the server stored it (RFC 3339).
    pub created_at: String,
}

/// One page of a listing.
#[derive(Clone, Debug, Deserialize)]
pub struct UtterancePage {
    /// Utterances in server order.
    pub items: Vec<UtteranceRecord>,
    /// The `after` of the next page, or `None` at the end.
    #[serde(default)]
    pub next_after: Option<u64>,
}

/// The server's error body.
#[derive(Debug, Deserialize)]
pub(crate) struct ApiError {
    pub(crate) code: String,
    #[serde(default)]
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn parses_the_contract_shapes() {
        let s: SessionInfo = serde_json::from_str(
            r#"{"id":"0190f5a2-7c3e-7d41-9a6b-3f2e1d0c4b5a","mode":"two_device",
                "key_fingerprint":"ab","algorithm":"AES-256-GCM","status":"open",
                "created_at":"2026-01-01T00:00:00Z",
                "participant_id":"0190f5a2-7c3e-7d41-9a6b-3f2e1d0c4b5b","extra":1}"#,
        )
        .unwrap();
        assert_eq!(s.mode, Mode::TwoDevice);
        assert!(s.participant_id.is_some());

        let r: DeviceRegistered = serde_json::from_str(
            r#"{"device_id":"0190f5a2-7c3e-7d41-9a6b-3f2e1d0c4b5a","device_token":"pvd_synthetic",
                "trial":{"sessions_joined":1,"limit":20}}"#,
        )
        .unwrap();
        assert_eq!(r.device_token.expose_secret(), "pvd_synthetic");
        assert!(!format!("{r:?}").contains("pvd_synthetic"));

        let p: UtterancePage = serde_json::from_str(r#"{"items":[],"next_after":null}"#).unwrap();
        assert!(p.next_after.is_none());

        let n = serde_json::to_value(NewUtterance {
            sequence: 1,
            nonce: "n".into(),
            ciphertext: "c".into(),
            key_fingerprint: "f".into(),
            algorithm: "AES-256-GCM".into(),
        })
        .unwrap();
        assert_eq!(
            n,
            serde_json::json!({"sequence":1,"nonce":"n","ciphertext":"c",
                "key_fingerprint":"f","algorithm":"AES-256-GCM"})
        );
        assert_eq!(
            serde_json::to_value(Mode::SingleDevice).unwrap(),
            "single_device"
        );
    }
}
