//! End-to-end sessions, server side, black box: guest device registration by signed
//! challenge (same key, same device, same trial count), invites that work once, the shape
//! and order checks on every utterance, participants only (every outsider gets 404),
//! paging and the live stream, ending a session deletes its ciphertext, the per-device
//! trial limit, and the audit events. The server is given bytes it cannot read: these
//! tests do not need real encryption (the client tests do).

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use support::{Backend, Reply, Server, Site};

const FINGERPRINT: &str = "5f0c1a1b2c3d4e5f60718293a4b5c6d7e8f90123456789abcdef0123456789ab";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A synthetic device key.
fn device_key() -> SigningKey {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    SigningKey::from_bytes(&seed)
}

/// Registers `key`; returns the registration answer.
async fn register(server: &Server, key: &SigningKey) -> Value {
    let public = b64(key.verifying_key().as_bytes());
    let c = server
        .post_json(
            "/api/v1/devices/challenge",
            None,
            &json!({"public_key": public}),
        )
        .await
        .expect(201)
        .json();
    let challenge = c["challenge"].as_str().unwrap();
    let sig = key.sign(format!("phivault-device-v1:{challenge}").as_bytes());
    server
        .post_json(
            "/api/v1/devices/register",
            None,
            &json!({"public_key": public, "challenge": challenge, "signature": b64(&sig.to_bytes())}),
        )
        .await
        .expect(201)
        .json()
}

fn utterance(sequence: i64, size: usize) -> Value {
    json!({
        "sequence": sequence,
        "nonce": b64(&[7u8; 12]),
        "ciphertext": b64(&vec![0xA5u8; size]),
        "key_fingerprint": FINGERPRINT,
        "algorithm": "AES-256-GCM",
    })
}

async fn post(server: &Server, path: &str, token: Option<&str>, body: &Value) -> Reply {
    server.post_json(path, token, body).await
}

async fn post_empty(server: &Server, path: &str, token: &str) -> Reply {
    let r = server
        .request(reqwest::Method::POST, path)
        .bearer_auth(token);
    server.send(r).await
}

async fn e2e_server(backend: Backend) {
    let site = Site::new(backend).await;
    let a = site.tenant("e2e-a", "Synthetic E2E Tenant A");
    let b = site.tenant("e2e-b", "Synthetic E2E Tenant B");
    let practice = site.practice(&a.id, "E2E Practice");
    let other_user = site.user(
        &a.id,
        "provider@e2e-a.example.test",
        "Synthetic Provider",
        &["provider"],
        Some(&[&practice]),
    );
    let (_, other_token) = site.token(&a.id, &other_user);
    // Device registration is throttled per address like every sign-in endpoint; this
    // test registers a few devices from one address.
    let server = site.serve_with(&[
        ("PHIVAULT_E2E_DEVICE_TRIAL_SESSIONS", "3"),
        ("PHIVAULT_THROTTLE_PER_IP", "1000"),
    ]);
    let sessions = a.path("e2e/sessions");

    // Creating: the fingerprint and mode are checked.
    for (body, code) in [
        (
            json!({"mode": "two_device", "key_fingerprint": "ABC"}),
            "invalid_field",
        ),
        (
            json!({"mode": "three_device", "key_fingerprint": FINGERPRINT}),
            "invalid_field",
        ),
        (
            json!({"mode": "two_device", "key_fingerprint": FINGERPRINT.to_uppercase()}),
            "invalid_field",
        ),
        (json!({"mode": "two_device"}), "invalid_body"),
    ] {
        post(&server, &sessions, Some(&a.owner_token), &body)
            .await
            .expect_error(422, code);
    }
    let s = post(
        &server,
        &sessions,
        Some(&a.owner_token),
        &json!({"mode": "two_device", "key_fingerprint": FINGERPRINT}),
    )
    .await
    .expect(201)
    .json();
    assert_eq!(s["algorithm"], "AES-256-GCM");
    assert_eq!(s["status"], "open");
    let sid = s["id"].as_str().unwrap().to_string();
    let owner_sender = s["participant_id"].as_str().unwrap().to_string();
    let base = a.path(&format!("e2e/sessions/{sid}"));

    // Devices: a key that is no point, a wrong signature and a reused challenge are
    // refused; the same key registered again is the same device with a new token.
    post(
        &server,
        "/api/v1/devices/challenge",
        None,
        &json!({"public_key": b64(&[1u8; 31])}),
    )
    .await
    .expect_error(422, "invalid_field");
    let key = device_key();
    let public = b64(key.verifying_key().as_bytes());
    let c = post(
        &server,
        "/api/v1/devices/challenge",
        None,
        &json!({"public_key": public}),
    )
    .await
    .expect(201)
    .json();
    let challenge = c["challenge"].as_str().unwrap().to_string();
    let wrong = device_key().sign(format!("phivault-device-v1:{challenge}").as_bytes());
    let reg =
        |sig: &[u8]| json!({"public_key": public, "challenge": challenge, "signature": b64(sig)});
    post(
        &server,
        "/api/v1/devices/register",
        None,
        &reg(&wrong.to_bytes()),
    )
    .await
    .expect_error(401, "device_proof_invalid");
    // The failed attempt used the challenge up.
    let right = key.sign(format!("phivault-device-v1:{challenge}").as_bytes());
    post(
        &server,
        "/api/v1/devices/register",
        None,
        &reg(&right.to_bytes()),
    )
    .await
    .expect_error(401, "device_proof_invalid");
    let first = register(&server, &key).await;
    let again = register(&server, &key).await;
    assert_eq!(first["device_id"], again["device_id"]);
    assert_eq!(again["trial"]["limit"], 3);
    let stale = first["device_token"].as_str().unwrap();
    let device = again["device_token"].as_str().unwrap().to_string();
    assert!(device.starts_with("pvd_"));
    post(
        &server,
        "/api/v1/e2e/join",
        Some(stale),
        &json!({"token": "pvi_x"}),
    )
    .await
    .expect_error(401, "unauthenticated");

    // Invites: the owner's, once.
    let inv = post_empty(&server, &format!("{base}/invites"), &a.owner_token)
        .await
        .expect(201)
        .json();
    let invite = inv["token"].as_str().unwrap().to_string();
    assert_eq!(inv["join_path"], format!("/join?token={invite}"));
    let joined = post(
        &server,
        "/api/v1/e2e/join",
        Some(&device),
        &json!({"token": invite}),
    )
    .await
    .expect(200)
    .json();
    assert_eq!(joined["session_id"], sid.as_str());
    assert_eq!(joined["tenant_id"], a.id.as_str());
    assert_eq!(joined["key_fingerprint"], FINGERPRINT);
    let device_sender = joined["participant_id"].as_str().unwrap().to_string();
    assert_ne!(device_sender, owner_sender);
    let intruder = register(&server, &device_key()).await["device_token"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        &server,
        "/api/v1/e2e/join",
        Some(&intruder),
        &json!({"token": invite}),
    )
    .await
    .expect_error(410, "invite_used");
    let unknown = format!("pvi_{}_{}", a.id.replace('-', ""), b64(&[9u8; 32]));
    post(
        &server,
        "/api/v1/e2e/join",
        Some(&intruder),
        &json!({"token": unknown}),
    )
    .await
    .expect_error(404, "not_found");
    post(
        &server,
        "/api/v1/e2e/join",
        Some(&a.owner_token),
        &json!({"token": invite}),
    )
    .await
    .expect_error(401, "unauthenticated");
    // Only the owner invites and ends.
    post_empty(&server, &format!("{base}/invites"), &device)
        .await
        .expect_error(403, "not_session_owner");

    // Appends: both participants, each with its own strictly increasing sequence.
    let utt = format!("{base}/utterances");
    let r = post(&server, &utt, Some(&a.owner_token), &utterance(1, 40))
        .await
        .expect(201)
        .json();
    assert_eq!(r["position"], 1);
    assert_eq!(r["sender"], owner_sender.as_str());
    let r = post(&server, &utt, Some(&device), &utterance(1, 40))
        .await
        .expect(201)
        .json();
    assert_eq!(r["position"], 2);
    assert_eq!(r["sender"], device_sender.as_str());
    post(&server, &utt, Some(&device), &utterance(1, 40))
        .await
        .expect_error(409, "sequence_not_increasing");
    let mut bad = utterance(5, 40);
    bad["nonce"] = json!(b64(&[1u8; 11]));
    post(&server, &utt, Some(&device), &bad)
        .await
        .expect_error(422, "invalid_nonce");
    bad["nonce"] = json!("not base64 !!");
    post(&server, &utt, Some(&device), &bad)
        .await
        .expect_error(422, "invalid_nonce");
    let mut bad = utterance(5, 40);
    bad["algorithm"] = json!("AES-128-GCM");
    post(&server, &utt, Some(&device), &bad)
        .await
        .expect_error(422, "unsupported_algorithm");
    let mut bad = utterance(5, 40);
    bad["key_fingerprint"] = json!("0".repeat(64));
    post(&server, &utt, Some(&device), &bad)
        .await
        .expect_error(409, "fingerprint_mismatch");
    post(&server, &utt, Some(&device), &utterance(5, 16))
        .await
        .expect_error(422, "invalid_ciphertext");
    post(&server, &utt, Some(&device), &utterance(5, 64 * 1024 + 1))
        .await
        .expect_error(413, "ciphertext_too_large");
    let mut bad = utterance(5, 40);
    bad["ciphertext"] = json!("%%%");
    post(&server, &utt, Some(&device), &bad)
        .await
        .expect_error(422, "invalid_ciphertext");
    let mut bad = utterance(5, 40);
    bad["extra"] = json!(1);
    post(&server, &utt, Some(&device), &bad)
        .await
        .expect_error(422, "invalid_body");
    // None of the refused ones took a sequence or a position.
    let r = post(&server, &utt, Some(&device), &utterance(2, 64 * 1024))
        .await
        .expect(201)
        .json();
    assert_eq!(r["position"], 3);

    // Reading: participants only; every outsider is told the session does not exist.
    let page = server.get(&utt, Some(&device)).await.expect(200).json();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["sender"], owner_sender.as_str());
    assert_eq!(items[1]["nonce"], b64(&[7u8; 12]));
    assert_eq!(page["next_after"], Value::Null);
    let paged = server
        .get(&format!("{utt}?after=1&limit=1"), Some(&a.owner_token))
        .await
        .expect(200)
        .json();
    assert_eq!(paged["items"][0]["position"], 2);
    assert_eq!(paged["next_after"], 2);
    server
        .get(&format!("{utt}?limit=0"), Some(&device))
        .await
        .expect_error(400, "invalid_query");
    server
        .get(&utt, Some(&other_token))
        .await
        .expect_error(404, "not_found");
    server
        .get(&utt, Some(&intruder))
        .await
        .expect_error(404, "not_found");
    server
        .get(&utt, None)
        .await
        .expect_error(401, "unauthenticated");
    server
        .get(&utt, Some(&b.owner_token))
        .await
        .expect_error(403, "tenant_mismatch");
    // A device token names no tenant: the path's tenant is not its session's.
    let elsewhere = b.path(&format!("e2e/sessions/{sid}/utterances"));
    server
        .get(&elsewhere, Some(&device))
        .await
        .expect_error(404, "not_found");
    post(&server, &utt, Some(&other_token), &utterance(9, 40))
        .await
        .expect_error(404, "not_found");
    let meta = server.get(&base, Some(&device)).await.expect(200).json();
    assert_eq!(meta["participant_id"], device_sender.as_str());

    // The live stream: stored ones first, then a new one, then the end.
    let resp = server
        .request(reqwest::Method::GET, &format!("{base}/stream?after=1"))
        .bearer_auth(&device)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut resp = resp;
    let mut text = String::new();
    let read_until = async |resp: &mut reqwest::Response, text: &mut String, needle: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !text.contains(needle) {
            let chunk = tokio::time::timeout_at(deadline, resp.chunk())
                .await
                .expect("stream timed out")
                .unwrap()
                .expect("stream ended early");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    read_until(&mut resp, &mut text, "id: 3").await;
    assert!(
        !text.contains("id: 1\n"),
        "after=1 skips position 1: {text}"
    );
    assert!(text.contains("event: utterance"));
    post(&server, &utt, Some(&a.owner_token), &utterance(2, 40))
        .await
        .expect(201);
    read_until(&mut resp, &mut text, "id: 4").await;

    // Ending: the owner only; the ciphertext goes at once; later appends are refused.
    post_empty(&server, &format!("{base}/end"), &device)
        .await
        .expect_error(403, "not_session_owner");
    let ended = post_empty(&server, &format!("{base}/end"), &a.owner_token)
        .await
        .expect(200)
        .json();
    assert_eq!(ended["status"], "ended");
    read_until(&mut resp, &mut text, "event: end").await;
    post(&server, &utt, Some(&device), &utterance(3, 40))
        .await
        .expect_error(410, "session_ended");
    let after = server
        .get(&utt, Some(&a.owner_token))
        .await
        .expect(200)
        .json();
    assert_eq!(after["items"].as_array().unwrap().len(), 0);
    post_empty(&server, &format!("{base}/invites"), &a.owner_token)
        .await
        .expect_error(410, "session_ended");

    // Single-device sessions take no invites.
    let single = post(
        &server,
        &sessions,
        Some(&a.owner_token),
        &json!({"mode": "single_device", "key_fingerprint": FINGERPRINT}),
    )
    .await
    .expect(201)
    .json();
    post_empty(
        &server,
        &a.path(&format!(
            "e2e/sessions/{}/invites",
            single["id"].as_str().unwrap()
        )),
        &a.owner_token,
    )
    .await
    .expect_error(409, "single_device_session");

    // The trial: three sessions per device, counted across registrations of its key; a
    // refused join does not use one up.
    let mut joins = 1;
    loop {
        let s = post(
            &server,
            &sessions,
            Some(&a.owner_token),
            &json!({"mode": "two_device", "key_fingerprint": FINGERPRINT}),
        )
        .await
        .expect(201)
        .json();
        let path = a.path(&format!(
            "e2e/sessions/{}/invites",
            s["id"].as_str().unwrap()
        ));
        let inv = post_empty(&server, &path, &a.owner_token)
            .await
            .expect(201)
            .json();
        let token = register(&server, &key).await["device_token"]
            .as_str()
            .unwrap()
            .to_string();
        let r = post(
            &server,
            "/api/v1/e2e/join",
            Some(&token),
            &json!({"token": inv["token"]}),
        )
        .await;
        if joins < 3 {
            r.expect(200);
            joins += 1;
        } else {
            r.expect_error(403, "device_trial_exhausted");
            break;
        }
    }
    let reinstalled = register(&server, &key).await;
    assert_eq!(reinstalled["trial"]["sessions_joined"], 3);

    // The tenant's retention window: read by its users, set under tenant:manage.
    let settings = a.path("settings/e2e");
    let current = server
        .get(&settings, Some(&a.owner_token))
        .await
        .expect(200)
        .json();
    assert_eq!(current["e2e_retention_hours"], 24);
    let put = |hours: i64| {
        let r = server
            .request(reqwest::Method::PUT, &settings)
            .bearer_auth(&a.owner_token)
            .json(&json!({ "e2e_retention_hours": hours }));
        server.send(r)
    };
    put(0).await.expect_error(422, "invalid_field");
    put(8761).await.expect_error(422, "invalid_field");
    put(48).await.expect(200);
    let current = server
        .get(&settings, Some(&a.owner_token))
        .await
        .expect(200)
        .json();
    assert_eq!(current["e2e_retention_hours"], 48);
    let r = server
        .request(reqwest::Method::PUT, &settings)
        .bearer_auth(&other_token)
        .json(&json!({ "e2e_retention_hours": 1 }));
    server.send(r).await.expect_error(403, "forbidden");

    // The trail: identifiers only, never the bytes the devices sent.
    let out = site.cli(&["audit", "export", "--format", "jsonl"]);
    assert!(!out.contains(&b64(&[0xA5u8; 40])));
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |action: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert_eq!(count("e2e.utterance.stored", "success"), 4);
    assert!(count("e2e.invite.created", "success") >= 4);
    assert!(count("e2e.invite.consumed", "success") >= 3);
    assert!(count("e2e.invite.consumed", "denied") >= 2);
    assert_eq!(count("e2e.session.ended", "success"), 1);
    assert!(count("device.registered", "success") >= 5);
    assert!(count("e2e.utterance.read", "success") >= 3);
    let stored_by_device = events
        .iter()
        .filter(|e| e["action"] == "e2e.utterance.stored" && e["actor"]["kind"] == "device")
        .count();
    assert_eq!(stored_by_device, 2);
    assert!(site.cli_output(&["audit", "verify"]).status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn e2e_server_sqlite() {
    e2e_server(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn e2e_server_postgres() {
    e2e_server(Backend::Postgres).await;
}
