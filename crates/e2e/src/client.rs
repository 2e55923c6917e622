//! HTTP client for every route of docs/e2e.md, plus the few steps a participant strings
//! together (start, join, send, read). The server only ever sees ciphertext, key
//! fingerprints and ids.

use std::collections::VecDeque;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;
use uuid::Uuid;

use crate::device::DeviceIdentity;
use crate::invite::Invite;
use crate::key::SessionKey;
use crate::seal::ALGORITHM;
use crate::server::ServerUrl;
use crate::session::{E2eSession, Utterance};
use crate::sse::{SseEvent, SseParser};
use crate::wire::{
    ApiError, DeviceChallenge, DeviceRegistered, InviteCreated, Joined, Mode, NewUtterance,
    SessionInfo, StoredUtterance, UtterancePage, UtteranceRecord,
};
use crate::{E2eError, Result};

/// Time allowed for one ordinary request, answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence on a connection: the server sends a comment every 15 seconds on a
/// stream, so this only fires on a dead one.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Page size used when reading a whole session (the contract's maximum).
pub const MAX_PAGE: u32 = 500;

/// A client of one server, with an optional bearer token (a tenant user's `pvt_…` or a
/// device's `pvd_…`).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    server: ServerUrl,
    bearer: Option<SecretString>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server.as_str())
            .field("bearer", &self.bearer.as_ref().map(|_| "redacted"))
            .finish()
    }
}

/// An event of an utterance stream.
#[derive(Clone, Debug)]
pub enum StreamEvent {
    /// A stored utterance, still sealed.
    Utterance(UtteranceRecord),
    /// The session ended; nothing follows.
    End,
}

/// An open `…/stream` response.
#[derive(Debug)]
pub struct UtteranceStream {
    response: Response,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    finished: bool,
}

impl UtteranceStream {
    /// The next event; `None` once the connection closed (after [`StreamEvent::End`] or
    /// without it, when the connection dropped).
    pub async fn next(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            while let Some(event) = self.pending.pop_front() {
                match event.event.as_str() {
                    "utterance" => {
                        let record = parse_json(event.data.as_bytes(), "stream utterance")?;
                        return Ok(Some(StreamEvent::Utterance(record)));
                    }
                    "end" => {
                        self.finished = true;
                        self.pending.clear();
                        return Ok(Some(StreamEvent::End));
                    }
                    // Events this client does not know are for newer clients.
                    _ => {}
                }
            }
            if self.finished {
                return Ok(None);
            }
            match self.response.chunk().await.map_err(E2eError::Transport)? {
                Some(bytes) => self.pending.extend(self.parser.feed(&bytes)?),
                None => {
                    self.finished = true;
                    return Ok(None);
                }
            }
        }
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        // serde's messages may quote values (a token, say); only field names are safe.
        let text = e.to_string();
        let detail = if text.starts_with("missing field") {
            text.split(" at line")
                .next()
                .unwrap_or_default()
                .to_string()
        } else {
            format!("{:?} error at column {}", e.classify(), e.column())
        };
        E2eError::Protocol(format!("{what}: {detail}"))
    })
}

/// Turns a refusal into [`E2eError::Server`], keeping the server's code and message.
async fn check(response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    let error = match serde_json::from_slice::<ApiError>(&body) {
        Ok(api) => E2eError::Server {
            status: status.as_u16(),
            code: api.code,
            message: api.message,
            request_id: api.request_id,
        },
        // Not phivault's JSON (a proxy's page, say): the status is all there is.
        Err(_) => E2eError::Server {
            status: status.as_u16(),
            code: format!("http_{}", status.as_u16()),
            message: status.canonical_reason().unwrap_or("error").to_string(),
            request_id: None,
        },
    };
    Err(error)
}

impl Client {
    /// A client of `server` with its own connection pool and no bearer token.
    pub fn new(server: ServerUrl) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("phivault-e2e/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(E2eError::Transport)?;
        Ok(Self::with_http_client(server, http))
    }

    /// A client over a configured `reqwest` client (extra root certificates, a proxy).
    /// Give it a read timeout rather than a total one, or streams will be cut.
    pub fn with_http_client(server: ServerUrl, http: reqwest::Client) -> Self {
        Client {
            http,
            server,
            bearer: None,
        }
    }

    /// The same client with a bearer token.
    pub fn with_bearer(mut self, token: SecretString) -> Self {
        self.bearer = Some(token);
        self
    }

    /// Sets the bearer token of later requests.
    pub fn set_bearer(&mut self, token: SecretString) {
        self.bearer = Some(token);
    }

    /// Drops the bearer token.
    pub fn clear_bearer(&mut self) {
        self.bearer = None;
    }

    /// The server this client talks to.
    pub fn server(&self) -> &ServerUrl {
        &self.server
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.bearer {
            Some(token) => request.bearer_auth(token.expose_secret()),
            None => request,
        }
    }

    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder, what: &str) -> Result<T> {
        let response = request
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(E2eError::Transport)?;
        let response = check(response).await?;
        let body = response.bytes().await.map_err(E2eError::Transport)?;
        parse_json(&body, what)
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        what: &str,
    ) -> Result<T> {
        let url = self.server.endpoint(path)?;
        self.call(self.request(Method::POST, url).json(body), what)
            .await
    }

    fn session_path(tenant_id: Uuid, session_id: Uuid) -> String {
        format!("/api/v1/tenants/{tenant_id}/e2e/sessions/{session_id}")
    }

    /// `POST /api/v1/tenants/{tenant}/e2e/sessions`: creates a session for a key the
    /// server knows only by its fingerprint.
    pub async fn create_session(
        &self,
        tenant_id: Uuid,
        mode: Mode,
        key_fingerprint: &str,
    ) -> Result<SessionInfo> {
        let body = serde_json::json!({ "mode": mode, "key_fingerprint": key_fingerprint });
        self.post(
            &format!("/api/v1/tenants/{tenant_id}/e2e/sessions"),
            &body,
            "session",
        )
        .await
    }

    /// `GET …/sessions/{session}`.
    pub async fn get_session(&self, tenant_id: Uuid, session_id: Uuid) -> Result<SessionInfo> {
        let url = self
            .server
            .endpoint(&Self::session_path(tenant_id, session_id))?;
        self.call(self.request(Method::GET, url), "session").await
    }

    /// `POST …/sessions/{session}/invites` (owner of a two-device session).
    pub async fn create_invite(&self, tenant_id: Uuid, session_id: Uuid) -> Result<InviteCreated> {
        let path = format!("{}/invites", Self::session_path(tenant_id, session_id));
        self.post(&path, &serde_json::json!({}), "invite").await
    }

    /// `POST …/sessions/{session}/end` (owner): the server deletes every utterance.
    pub async fn end_session(&self, tenant_id: Uuid, session_id: Uuid) -> Result<SessionInfo> {
        let path = format!("{}/end", Self::session_path(tenant_id, session_id));
        self.post(&path, &serde_json::json!({}), "session").await
    }

    /// `POST /api/v1/devices/challenge`.
    pub async fn device_challenge(&self, public_key: &str) -> Result<DeviceChallenge> {
        let body = serde_json::json!({ "public_key": public_key });
        self.post("/api/v1/devices/challenge", &body, "device challenge")
            .await
    }

    /// `POST /api/v1/devices/register`.
    pub async fn device_register(
        &self,
        public_key: &str,
        challenge: &str,
        signature: &str,
    ) -> Result<DeviceRegistered> {
        let body = serde_json::json!({
            "public_key": public_key,
            "challenge": challenge,
            "signature": signature,
        });
        self.post("/api/v1/devices/register", &body, "device registration")
            .await
    }

    /// Challenge, sign and register: the device's id and a new token (the previous
    /// token of the same key stops working).
    pub async fn register_device(&self, device: &DeviceIdentity) -> Result<DeviceRegistered> {
        let public_key = device.public_key_base64url();
        let challenge = self.device_challenge(&public_key).await?;
        let signature = device.sign_challenge(&challenge.challenge);
        self.device_register(&public_key, &challenge.challenge, &signature)
            .await
    }

    /// `POST /api/v1/e2e/join` with the device's token as bearer.
    pub async fn join(&self, invite_token: &str) -> Result<Joined> {
        let body = serde_json::json!({ "token": invite_token });
        self.post("/api/v1/e2e/join", &body, "join").await
    }

    /// `POST …/sessions/{session}/utterances`.
    pub async fn append_utterance(
        &self,
        tenant_id: Uuid,
        session_id: Uuid,
        utterance: &NewUtterance,
    ) -> Result<StoredUtterance> {
        let path = format!("{}/utterances", Self::session_path(tenant_id, session_id));
        self.post(&path, utterance, "stored utterance").await
    }

    /// `GET …/sessions/{session}/utterances?after=&limit=`: one page, in server order.
    pub async fn list_utterances(
        &self,
        tenant_id: Uuid,
        session_id: Uuid,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<UtterancePage> {
        let path = format!("{}/utterances", Self::session_path(tenant_id, session_id));
        let mut url = self.server.endpoint(&path)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(after) = after {
                query.append_pair("after", &after.to_string());
            }
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.call(self.request(Method::GET, url), "utterance page")
            .await
    }

    /// `GET …/sessions/{session}/stream?after=`: stored utterances after `after`, then
    /// live ones, until the session ends.
    pub async fn stream_utterances(
        &self,
        tenant_id: Uuid,
        session_id: Uuid,
        after: Option<u64>,
    ) -> Result<UtteranceStream> {
        let path = format!("{}/stream", Self::session_path(tenant_id, session_id));
        let mut url = self.server.endpoint(&path)?;
        if let Some(after) = after {
            url.query_pairs_mut()
                .append_pair("after", &after.to_string());
        }
        // No total timeout here: a stream lives as long as the session.
        let response = self
            .request(Method::GET, url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(E2eError::Transport)?;
        let response = check(response).await?;
        let is_event_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
        if !is_event_stream {
            return Err(E2eError::Protocol(
                "the stream is not text/event-stream".into(),
            ));
        }
        Ok(UtteranceStream {
            response,
            parser: SseParser::new(),
            pending: VecDeque::new(),
            finished: false,
        })
    }

    /// Makes a key and a session for it; checks the server recorded the right
    /// fingerprint. The key never leaves this process.
    pub async fn start_session(
        &self,
        tenant_id: Uuid,
        mode: Mode,
    ) -> Result<(E2eSession, SessionInfo)> {
        let key = SessionKey::generate()?;
        let info = self
            .create_session(tenant_id, mode, &key.fingerprint())
            .await?;
        if !key.matches_fingerprint(&info.key_fingerprint) {
            return Err(E2eError::FingerprintMismatch);
        }
        let participant_id = info
            .participant_id
            .ok_or_else(|| E2eError::Protocol("the new session has no participant_id".into()))?;
        let session = E2eSession {
            tenant_id,
            session_id: info.id,
            participant_id,
            key,
            last_sequence: 0,
        };
        Ok((session, info))
    }

    /// Consumes an invite (the bearer must be the device's token) and checks that the
    /// key from the link is the session's key.
    pub async fn join_invite(&self, invite: &Invite) -> Result<(E2eSession, Joined)> {
        let joined = self.join(invite.token()).await?;
        if joined.algorithm != ALGORITHM {
            return Err(E2eError::UnsupportedAlgorithm(joined.algorithm));
        }
        // A link whose secret was altered (or belongs to another session) would seal
        // utterances nobody else can read.
        if !invite.key().matches_fingerprint(&joined.key_fingerprint) {
            return Err(E2eError::FingerprintMismatch);
        }
        let session = E2eSession {
            tenant_id: joined.tenant_id,
            session_id: joined.session_id,
            participant_id: joined.participant_id,
            key: invite.key().clone(),
            last_sequence: 0,
        };
        Ok((session, joined))
    }

    /// Seals `text` with the next sequence number and appends it. When the server says
    /// the sequence is not increasing (another copy of this participant sent meanwhile,
    /// or local state was lost), it catches up from the stored utterances once and tries
    /// again. `session.last_sequence` is advanced on success.
    pub async fn send_text(&self, session: &mut E2eSession, text: &str) -> Result<StoredUtterance> {
        let mut caught_up = false;
        loop {
            let sequence = session
                .last_sequence
                .checked_add(1)
                .ok_or(E2eError::InvalidText("sequence numbers exhausted"))?;
            let body = session.seal_text(sequence, text)?;
            match self
                .append_utterance(session.tenant_id, session.session_id, &body)
                .await
            {
                Ok(stored) => {
                    session.last_sequence = stored.sequence.max(sequence);
                    return Ok(stored);
                }
                Err(e) if !caught_up && e.code() == Some("sequence_not_increasing") => {
                    caught_up = true;
                    let highest = self.highest_own_sequence(session).await?;
                    if highest <= session.last_sequence {
                        return Err(e);
                    }
                    session.last_sequence = highest;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Every stored record of the session, page by page.
    pub async fn list_all(
        &self,
        tenant_id: Uuid,
        session_id: Uuid,
    ) -> Result<Vec<UtteranceRecord>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .list_utterances(tenant_id, session_id, after, Some(MAX_PAGE))
                .await?;
            let empty = page.items.is_empty();
            all.extend(page.items);
            match page.next_after {
                Some(next) if !empty => {
                    // A cursor that does not move would loop forever.
                    if after.is_some_and(|a| next <= a) {
                        return Err(E2eError::Protocol("next_after does not advance".into()));
                    }
                    after = Some(next);
                }
                _ => return Ok(all),
            }
        }
    }

    /// The highest sequence this participant has stored in the session (0 if none).
    pub async fn highest_own_sequence(&self, session: &E2eSession) -> Result<u64> {
        let records = self.list_all(session.tenant_id, session.session_id).await?;
        Ok(records
            .iter()
            .filter(|r| r.sender == session.participant_id)
            .map(|r| r.sequence)
            .max()
            .unwrap_or(0))
    }

    /// Every utterance of the session, opened. One that fails authentication has an
    /// error as its text, never the text.
    pub async fn read_all(&self, session: &E2eSession) -> Result<Vec<Utterance>> {
        let records = self.list_all(session.tenant_id, session.session_id).await?;
        Ok(records.iter().map(|r| session.open_record(r)).collect())
    }

    /// Whether an error means the bearer token is not (or no longer) accepted.
    pub fn is_unauthorized(error: &E2eError) -> bool {
        error.status() == Some(StatusCode::UNAUTHORIZED.as_u16())
    }
}
