//! The client against a small in-memory stand-in for the server that follows
//! docs/e2e.md (on loopback, in this process). It checks what the client sends (paths,
//! bearer tokens, JSON, signatures) and how it handles what comes back; the real
//! server's own black-box tests hold the server to the same contract.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use phivault_e2e::{
    Client, DeviceIdentity, E2eError, Invite, Mode, SecretString, ServerUrl, StreamEvent,
};
use serde_json::{Value, json};
use uuid::Uuid;

const OWNER_TOKEN: &str = "pvt_synthetic_owner";

#[derive(Default)]
struct Session {
    tenant: Uuid,
    mode: String,
    fingerprint: String,
    owner: Uuid,
    ended: bool,
    items: Vec<Value>,
    last_sequence: HashMap<Uuid, u64>,
}

#[derive(Default)]
struct Fake {
    sessions: HashMap<Uuid, Session>,
    invites: HashMap<String, (Uuid, bool)>,
    challenges: Vec<String>,
    /// device token -> (device id, participant id per session)
    devices: HashMap<String, (Uuid, HashMap<Uuid, Uuid>)>,
    device_ids: HashMap<String, Uuid>,
}

type Shared = Arc<Mutex<Fake>>;

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        Json(json!({"code": code, "message": format!("synthetic {code}"), "request_id": "req-1"})),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

/// The caller's participant id in `session`, from either kind of token.
fn participant(
    fake: &Fake,
    headers: &HeaderMap,
    session: Uuid,
) -> Result<Uuid, (StatusCode, &'static str)> {
    let unauthorized = (StatusCode::UNAUTHORIZED, "unauthorized");
    let token = bearer(headers).ok_or(unauthorized)?;
    let s = fake
        .sessions
        .get(&session)
        .ok_or((StatusCode::NOT_FOUND, "not_found"))?;
    if token == OWNER_TOKEN {
        return Ok(s.owner);
    }
    fake.devices
        .get(&token)
        .and_then(|(_, joined)| joined.get(&session).copied())
        .ok_or(unauthorized)
}

fn session_json(id: Uuid, s: &Session, participant: Uuid) -> Value {
    json!({
        "id": id, "mode": s.mode, "key_fingerprint": s.fingerprint,
        "algorithm": "AES-256-GCM", "status": if s.ended { "ended" } else { "open" },
        "created_at": "2026-01-01T00:00:00Z", "participant_id": participant,
    })
}

async fn create_session(
    State(fake): State<Shared>,
    Path(tenant): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if bearer(&headers).as_deref() != Some(OWNER_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let fingerprint = body["key_fingerprint"].as_str().unwrap_or_default();
    if fingerprint.len() != 64 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_fingerprint");
    }
    let id = Uuid::now_v7();
    let s = Session {
        tenant,
        mode: body["mode"].as_str().unwrap_or_default().to_string(),
        fingerprint: fingerprint.to_string(),
        owner: Uuid::now_v7(),
        ..Session::default()
    };
    let out = session_json(id, &s, s.owner);
    fake.lock().unwrap().sessions.insert(id, s);
    (StatusCode::CREATED, Json(out)).into_response()
}

async fn get_session(
    State(fake): State<Shared>,
    Path((_tenant, id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
) -> Response {
    let fake = fake.lock().unwrap();
    match participant(&fake, &headers, id) {
        Ok(p) => Json(session_json(id, &fake.sessions[&id], p)).into_response(),
        Err((status, code)) => error(status, code),
    }
}

async fn create_invite(
    State(fake): State<Shared>,
    Path((_tenant, id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
) -> Response {
    let mut fake = fake.lock().unwrap();
    if bearer(&headers).as_deref() != Some(OWNER_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if fake.sessions[&id].mode != "two_device" {
        return error(StatusCode::CONFLICT, "single_device_session");
    }
    let token = format!("pvi_{}", Uuid::now_v7().simple());
    fake.invites.insert(token.clone(), (id, false));
    let body = json!({"token": token, "expires_at": "2026-01-01T00:15:00Z",
                      "join_path": format!("/join?token={token}")});
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn end_session(
    State(fake): State<Shared>,
    Path((_tenant, id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
) -> Response {
    let mut fake = fake.lock().unwrap();
    if bearer(&headers).as_deref() != Some(OWNER_TOKEN) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let s = fake.sessions.get_mut(&id).unwrap();
    s.ended = true;
    s.items.clear();
    Json(session_json(id, s, s.owner)).into_response()
}

async fn challenge(State(fake): State<Shared>, Json(body): Json<Value>) -> Response {
    let key = URL_SAFE_NO_PAD
        .decode(body["public_key"].as_str().unwrap_or_default())
        .unwrap_or_default();
    if key.len() != 32 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_public_key");
    }
    let challenge = URL_SAFE_NO_PAD.encode(Uuid::now_v7().as_bytes().repeat(2));
    fake.lock().unwrap().challenges.push(challenge.clone());
    let body = json!({"challenge": challenge, "expires_at": "2026-01-01T00:05:00Z"});
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn register(State(fake): State<Shared>, Json(body): Json<Value>) -> Response {
    let mut fake = fake.lock().unwrap();
    let public_key = body["public_key"].as_str().unwrap_or_default().to_string();
    let challenge = body["challenge"].as_str().unwrap_or_default().to_string();
    let Some(i) = fake.challenges.iter().position(|c| *c == challenge) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_challenge");
    };
    fake.challenges.remove(i);
    let key: [u8; 32] = URL_SAFE_NO_PAD
        .decode(&public_key)
        .unwrap()
        .try_into()
        .unwrap();
    let sig: [u8; 64] = match URL_SAFE_NO_PAD
        .decode(body["signature"].as_str().unwrap_or_default())
        .map(<[u8; 64]>::try_from)
    {
        Ok(Ok(s)) => s,
        _ => return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature"),
    };
    let message = format!("phivault-device-v1:{challenge}");
    if VerifyingKey::from_bytes(&key)
        .unwrap()
        .verify(message.as_bytes(), &Signature::from_bytes(&sig))
        .is_err()
    {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_signature");
    }
    let device_id = *fake
        .device_ids
        .entry(public_key)
        .or_insert_with(Uuid::now_v7);
    // A new registration revokes the key's previous token, keeping its sessions.
    let previous = fake
        .devices
        .iter()
        .find(|(_, (id, _))| *id == device_id)
        .map(|(t, _)| t.clone());
    let joined = previous
        .and_then(|t| fake.devices.remove(&t))
        .map(|(_, j)| j)
        .unwrap_or_default();
    let token = format!("pvd_{}", Uuid::now_v7().simple());
    let count = joined.len();
    fake.devices.insert(token.clone(), (device_id, joined));
    let body = json!({"device_id": device_id, "device_token": token,
                      "trial": {"sessions_joined": count, "limit": 20}});
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn join(State(fake): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let mut fake = fake.lock().unwrap();
    let Some(token) = bearer(&headers).filter(|t| fake.devices.contains_key(t)) else {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    };
    let invite = body["token"].as_str().unwrap_or_default();
    let session = match fake.invites.get_mut(invite) {
        None => return error(StatusCode::NOT_FOUND, "not_found"),
        Some((_, true)) => return error(StatusCode::GONE, "invite_used"),
        Some((s, used)) => {
            *used = true;
            *s
        }
    };
    let participant = Uuid::now_v7();
    fake.devices
        .get_mut(&token)
        .unwrap()
        .1
        .insert(session, participant);
    let s = &fake.sessions[&session];
    Json(
        json!({"tenant_id": s.tenant, "session_id": session, "participant_id": participant,
                "key_fingerprint": s.fingerprint, "algorithm": "AES-256-GCM"}),
    )
    .into_response()
}

async fn append(
    State(fake): State<Shared>,
    Path((_tenant, id)): Path<(Uuid, Uuid)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut fake = fake.lock().unwrap();
    let sender = match participant(&fake, &headers, id) {
        Ok(p) => p,
        Err((status, code)) => return error(status, code),
    };
    let s = fake.sessions.get_mut(&id).unwrap();
    if s.ended {
        return error(StatusCode::GONE, "session_ended");
    }
    if body["algorithm"] != "AES-256-GCM" {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "unsupported_algorithm");
    }
    if body["key_fingerprint"] != s.fingerprint.as_str() {
        return error(StatusCode::CONFLICT, "fingerprint_mismatch");
    }
    let nonce = URL_SAFE_NO_PAD.decode(body["nonce"].as_str().unwrap_or_default());
    if nonce.map(|n| n.len()) != Ok(12) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_nonce");
    }
    let ct = URL_SAFE_NO_PAD.decode(body["ciphertext"].as_str().unwrap_or_default());
    if !matches!(ct.map(|c| c.len()), Ok(17..=65536)) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_ciphertext");
    }
    let sequence = body["sequence"].as_u64().unwrap_or(0);
    let last = s.last_sequence.entry(sender).or_insert(0);
    if sequence <= *last {
        return error(StatusCode::CONFLICT, "sequence_not_increasing");
    }
    *last = sequence;
    let position = s.items.len() as u64 + 1;
    let item = json!({
        "id": Uuid::now_v7(), "position": position, "sender": sender, "sequence": sequence,
        "nonce": body["nonce"], "ciphertext": body["ciphertext"],
        "key_fingerprint": body["key_fingerprint"], "algorithm": body["algorithm"],
        "created_at": "2026-01-01T00:00:01Z",
    });
    s.items.push(item.clone());
    let out = json!({"id": item["id"], "position": position, "sender": sender,
                     "sequence": sequence, "created_at": item["created_at"]});
    (StatusCode::CREATED, Json(out)).into_response()
}

async fn list(
    State(fake): State<Shared>,
    Path((_tenant, id)): Path<(Uuid, Uuid)>,
    Query(q): Query<HashMap<String, u64>>,
    headers: HeaderMap,
) -> Response {
    let fake = fake.lock().unwrap();
    if let Err((status, code)) = participant(&fake, &headers, id) {
        return error(status, code);
    }
    let after = q.get("after").copied().unwrap_or(0);
    let limit = q.get("limit").copied().unwrap_or(100).clamp(1, 500) as usize;
    // Pages of two, whatever the client asks, so that paging is exercised.
    let limit = limit.min(2);
    let rest: Vec<Value> = fake.sessions[&id]
        .items
        .iter()
        .filter(|i| i["position"].as_u64().unwrap() > after)
        .cloned()
        .collect();
    let page: Vec<Value> = rest.iter().take(limit).cloned().collect();
    let next = (rest.len() > limit).then(|| page.last().unwrap()["position"].clone());
    Json(json!({"items": page, "next_after": next})).into_response()
}

async fn stream(
    State(fake): State<Shared>,
    Path((_tenant, id)): Path<(Uuid, Uuid)>,
    Query(q): Query<HashMap<String, u64>>,
    headers: HeaderMap,
) -> Response {
    let fake = fake.lock().unwrap();
    if let Err((status, code)) = participant(&fake, &headers, id) {
        return error(status, code);
    }
    let after = q.get("after").copied().unwrap_or(0);
    let mut body = String::from(": synthetic keep-alive\n\n");
    for item in &fake.sessions[&id].items {
        let position = item["position"].as_u64().unwrap();
        if position > after {
            body.push_str(&format!(
                "event: utterance\r\nid: {position}\r\ndata: {item}\r\n\r\n"
            ));
        }
    }
    body.push_str("event: end\ndata: {}\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

async fn serve() -> (ServerUrl, Shared) {
    let fake: Shared = Arc::default();
    let s = "/api/v1/tenants/{tenant}/e2e/sessions/{session}";
    let app = Router::new()
        .route(
            "/api/v1/tenants/{tenant}/e2e/sessions",
            post(create_session),
        )
        .route(s, get(get_session))
        .route(&format!("{s}/invites"), post(create_invite))
        .route(&format!("{s}/end"), post(end_session))
        .route(&format!("{s}/utterances"), post(append).get(list))
        .route(&format!("{s}/stream"), get(stream))
        .route("/api/v1/devices/challenge", post(challenge))
        .route("/api/v1/devices/register", post(register))
        .route("/api/v1/e2e/join", post(join))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (ServerUrl::parse(&format!("http://{addr}")).unwrap(), fake)
}

fn owner(server: &ServerUrl) -> Client {
    Client::new(server.clone())
        .unwrap()
        .with_bearer(SecretString::from(OWNER_TOKEN))
}

#[tokio::test]
async fn two_devices_talk_and_tampering_is_refused() {
    let (server, fake) = serve().await;
    let tenant = Uuid::now_v7();
    let owner = owner(&server);

    let (mut mine, info) = owner.start_session(tenant, Mode::TwoDevice).await.unwrap();
    assert_eq!(info.key_fingerprint, mine.key.fingerprint());
    assert_eq!(info.status, "open");
    let got = owner.get_session(tenant, mine.session_id).await.unwrap();
    assert_eq!(got.id, mine.session_id);

    // Invite link, as the CLI prints it, and the guest's side of it.
    let created = owner.create_invite(tenant, mine.session_id).await.unwrap();
    let link = Invite::new(
        server.clone(),
        phivault_e2e::ExposeSecret::expose_secret(&created.token),
        mine.key.clone(),
    )
    .unwrap()
    .to_url();
    let invite = Invite::parse(&link).unwrap();
    assert_eq!(invite.server(), &server);

    let device = DeviceIdentity::generate().unwrap();
    let anonymous = Client::new(invite.server().clone()).unwrap();
    let registered = anonymous.register_device(&device).await.unwrap();
    let again = anonymous.register_device(&device).await.unwrap();
    assert_eq!(registered.device_id, again.device_id);
    let guest = anonymous.clone().with_bearer(again.device_token.clone());
    let (mut theirs, joined) = guest.join_invite(&invite).await.unwrap();
    assert_eq!(joined.session_id, mine.session_id);
    assert_eq!(theirs.tenant_id, tenant);

    // Single use.
    let err = guest.join_invite(&invite).await.unwrap_err();
    assert_eq!(err.code(), Some("invite_used"));
    assert_eq!(err.status(), Some(410));

    owner
        .send_text(&mut mine, "synthetic: how is the knee today?")
        .await
        .unwrap();
    guest
        .send_text(&mut theirs, "synthetic: better, thank you")
        .await
        .unwrap();
    for i in 0..3 {
        owner
            .send_text(&mut mine, &format!("synthetic follow-up {i}"))
            .await
            .unwrap();
    }
    assert_eq!(mine.last_sequence, 4);
    assert_eq!(theirs.last_sequence, 1);

    let read = guest.read_all(&theirs).await.unwrap();
    let texts: Vec<_> = read.iter().map(|u| u.text.as_deref().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "synthetic: how is the knee today?",
            "synthetic: better, thank you",
            "synthetic follow-up 0",
            "synthetic follow-up 1",
            "synthetic follow-up 2",
        ]
    );
    assert_eq!(
        read.iter().map(|u| u.position).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(read[1].sender, theirs.participant_id);

    // The server (or anyone between) changes stored utterances: each is refused.
    {
        let mut f = fake.lock().unwrap();
        let items = &mut f.sessions.get_mut(&mine.session_id).unwrap().items;
        let ct = items[0]["ciphertext"].as_str().unwrap().to_string();
        let mut bytes = URL_SAFE_NO_PAD.decode(ct).unwrap();
        bytes[0] ^= 1;
        items[0]["ciphertext"] = URL_SAFE_NO_PAD.encode(bytes).into();
        items[2]["sequence"] = 9.into();
        let other_sender = items[1]["sender"].clone();
        items[3]["sender"] = other_sender;
    }
    let read = owner.read_all(&mine).await.unwrap();
    let refused: Vec<u64> = read
        .iter()
        .filter(|u| matches!(u.text, Err(E2eError::Authentication)))
        .map(|u| u.position)
        .collect();
    assert_eq!(refused, [1, 3, 4]);
    assert_eq!(
        read[1].text.as_deref().unwrap(),
        "synthetic: better, thank you"
    );

    // The stream gives the same records, then the end.
    let mut stream = guest
        .stream_utterances(tenant, theirs.session_id, Some(3))
        .await
        .unwrap();
    let mut positions = Vec::new();
    loop {
        match stream.next().await.unwrap() {
            Some(StreamEvent::Utterance(r)) => {
                let u = theirs.open_record(&r);
                positions.push((r.position, u.text.is_ok()));
            }
            Some(StreamEvent::End) => break,
            None => panic!("stream closed before its end event"),
        }
    }
    assert_eq!(positions, [(4, false), (5, true)]);
    assert!(stream.next().await.unwrap().is_none());

    let ended = owner.end_session(tenant, mine.session_id).await.unwrap();
    assert_eq!(ended.status, "ended");
    let err = owner.send_text(&mut mine, "synthetic").await.unwrap_err();
    assert_eq!(err.code(), Some("session_ended"));
    assert!(err.to_string().contains("session_ended"));
}

#[tokio::test]
async fn lost_sequence_state_is_recovered_from_the_server() {
    let (server, _fake) = serve().await;
    let owner = owner(&server);
    let (mut mine, _) = owner
        .start_session(Uuid::now_v7(), Mode::SingleDevice)
        .await
        .unwrap();
    for _ in 0..3 {
        owner.send_text(&mut mine, "synthetic").await.unwrap();
    }
    // As after restoring an old copy of the key store.
    mine.last_sequence = 1;
    let stored = owner.send_text(&mut mine, "synthetic again").await.unwrap();
    assert_eq!(stored.sequence, 4);
    assert_eq!(mine.last_sequence, 4);

    let err = owner
        .create_invite(mine.tenant_id, mine.session_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("single_device_session"));
    assert_eq!(err.status(), Some(409));
}

#[tokio::test]
async fn a_link_with_another_key_is_refused_at_join() {
    let (server, _fake) = serve().await;
    let owner = owner(&server);
    let (mine, _) = owner
        .start_session(Uuid::now_v7(), Mode::TwoDevice)
        .await
        .unwrap();
    let created = owner
        .create_invite(mine.tenant_id, mine.session_id)
        .await
        .unwrap();
    let wrong = Invite::new(
        server.clone(),
        phivault_e2e::ExposeSecret::expose_secret(&created.token),
        phivault_e2e::SessionKey::generate().unwrap(),
    )
    .unwrap();
    let device = DeviceIdentity::generate().unwrap();
    let anonymous = Client::new(server.clone()).unwrap();
    let token = anonymous
        .register_device(&device)
        .await
        .unwrap()
        .device_token;
    let guest = anonymous.with_bearer(token);
    let err = guest.join_invite(&wrong).await.unwrap_err();
    assert!(matches!(err, E2eError::FingerprintMismatch), "{err}");
}

#[tokio::test]
async fn errors_carry_the_servers_code_and_refuse_bad_tokens() {
    let (server, _fake) = serve().await;
    let nobody = Client::new(server.clone())
        .unwrap()
        .with_bearer(SecretString::from("pvt_wrong"));
    let err = nobody
        .start_session(Uuid::now_v7(), Mode::TwoDevice)
        .await
        .unwrap_err();
    assert!(Client::is_unauthorized(&err));
    assert_eq!(err.code(), Some("unauthorized"));
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("pvt_wrong"), "{shown}");
    assert!(matches!(err, E2eError::Server { request_id: Some(ref r), .. } if r == "req-1"));

    // Nothing listening: a transport error, not a panic or a hang.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let closed =
        Client::new(ServerUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap()).unwrap();
    let err = closed.device_challenge("x").await.unwrap_err();
    assert!(matches!(err, E2eError::Transport(_)), "{err}");
}
