//! Sessions from outside: sign in with a magic link (delivered to the development outbox),
//! use the access token, refresh with the cookie (rotation, and a replayed cookie
//! revoking the session), sign out, and tokens that are forged, tampered with, of the
//! `none` algorithm or of another tenant. Idle and absolute timeouts are tested with a
//! moved clock in the domain tests (crates/domain/tests/sessions.rs).

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::{Backend, Reply, Server, Site, TenantFixture, outbox_count, token_from_outbox};

async fn sign_in(server: &Server, site: &Site, slug: &str, email: &str, remember: bool) -> Reply {
    let outbox = site.data_dir().join("outbox");
    let seen = outbox_count(&outbox);
    server
        .post_json(
            "/api/v1/auth/magic-link",
            None,
            &json!({"tenant": slug, "email": email}),
        )
        .await
        .expect(202);
    let token = token_from_outbox(&outbox, seen);
    server
        .post_json(
            "/api/v1/auth/magic-link/verify",
            None,
            &json!({"token": token, "remember_me": remember}),
        )
        .await
}

fn refresh_cookie(reply: &Reply) -> String {
    let set = reply.header("set-cookie").expect("a refresh cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "cookie without {attribute}: {set}");
    }
    set.split(';').next().unwrap().to_string()
}

async fn refresh(server: &Server, cookie: &str) -> Reply {
    server
        .send(
            server
                .request(reqwest::Method::POST, "/api/v1/auth/refresh")
                .header("cookie", cookie),
        )
        .await
}

async fn me(server: &Server, t: &TenantFixture, token: &str) -> Reply {
    server.get(&t.path("me"), Some(token)).await
}

async fn sessions_end_to_end(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("session-clinic", "Synthetic Session Clinic");
    let email = "owner@session-clinic.example.test";
    let server = site.serve();

    // Sign in without remember-me: an access token and no cookie.
    let plain = sign_in(&server, &site, "session-clinic", email, false).await;
    plain.expect(201);
    assert!(plain.header("set-cookie").is_none());
    let body = plain.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() <= 15 * 60);
    let access = body["access_token"].as_str().unwrap().to_string();
    me(&server, &t, &access).await.expect(200);

    // A link works once.
    let outbox = site.data_dir().join("outbox");
    let seen = outbox_count(&outbox);
    server
        .post_json(
            "/api/v1/auth/magic-link",
            None,
            &json!({"tenant": "session-clinic", "email": email}),
        )
        .await
        .expect(202);
    let link = token_from_outbox(&outbox, seen);
    let verify = |token: String| {
        let server = &server;
        async move {
            server
                .post_json(
                    "/api/v1/auth/magic-link/verify",
                    None,
                    &json!({"token": token}),
                )
                .await
        }
    };
    verify(link.clone()).await.expect(201);
    verify(link.clone()).await.expect_error(401, "link_invalid");
    verify("pvm_nonsense".into())
        .await
        .expect_error(401, "link_invalid");

    // Remember-me: a cookie that rotates on use.
    let remembered = sign_in(&server, &site, "session-clinic", email, true).await;
    remembered.expect(201);
    let first = refresh_cookie(&remembered);
    let r1 = refresh(&server, &first).await;
    r1.expect(200);
    let second = refresh_cookie(&r1);
    assert_ne!(first, second);
    let rotated_access = r1.json()["access_token"].as_str().unwrap().to_string();
    me(&server, &t, &rotated_access).await.expect(200);
    // Cross-site refreshes are refused.
    server
        .send(
            server
                .request(reqwest::Method::POST, "/api/v1/auth/refresh")
                .header("cookie", &second)
                .header("sec-fetch-site", "cross-site"),
        )
        .await
        .expect_error(403, "cross_site_refused");
    // Replaying the used cookie revokes the whole session: the new cookie and the
    // session's access tokens stop working too.
    refresh(&server, &first)
        .await
        .expect_error(401, "session_ended");
    refresh(&server, &second)
        .await
        .expect_error(401, "session_ended");
    me(&server, &t, &rotated_access)
        .await
        .expect_error(401, "unauthenticated");

    // Sign-out ends the session at once.
    me(&server, &t, &access).await.expect(200);
    let out = server
        .send(
            server
                .request(reqwest::Method::POST, "/api/v1/auth/logout")
                .bearer_auth(&access),
        )
        .await;
    assert_eq!(out.status, 204);
    me(&server, &t, &access)
        .await
        .expect_error(401, "unauthenticated");
    // An API token has no session to end.
    server
        .send(
            server
                .request(reqwest::Method::POST, "/api/v1/auth/logout")
                .bearer_auth(&t.owner_token),
        )
        .await
        .expect_error(409, "not_a_session");

    // Forged and tampered tokens.
    let fresh = sign_in(&server, &site, "session-clinic", email, false).await;
    let token = fresh.json()["access_token"].as_str().unwrap().to_string();
    let parts: Vec<&str> = token.split('.').collect();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let none_header = encode(&json!({"alg": "none", "typ": "JWT"}));
    let hs512_header = encode(&json!({"alg": "HS512", "typ": "JWT"}));
    let mut other_tenant = claims.clone();
    other_tenant["tid"] = json!(uuid_like());
    let mut longer = claims.clone();
    longer["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
    let mut wrong_audience = claims.clone();
    wrong_audience["aud"] = json!("someone-else");
    let forged = [
        format!("{none_header}.{}.", parts[1]),
        format!("{none_header}.{}.{}", parts[1], parts[2]),
        format!("{hs512_header}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], encode(&other_tenant), parts[2]),
        format!("{}.{}.{}", parts[0], encode(&longer), parts[2]),
        format!("{}.{}.{}", parts[0], encode(&wrong_audience), parts[2]),
        format!("{}.{}.{}x", parts[0], parts[1], parts[2]),
        format!("{}.{}", parts[0], parts[1]),
        "eyJ.eyJ.sig".to_string(),
    ];
    for f in forged {
        me(&server, &t, &f)
            .await
            .expect_error(401, "unauthenticated");
    }
    me(&server, &t, &token).await.expect(200);

    // A session token of tenant A is refused in tenant B's routes.
    let b = site.tenant("session-other", "Synthetic Other Clinic");
    me(&server, &b, &token)
        .await
        .expect_error(403, "tenant_mismatch");

    // The trail has the sign-ins, the refusal of the replayed cookie, and the sign-out.
    let trail = server
        .get(&t.path("audit?limit=200"), Some(&t.owner_token))
        .await
        .expect(200)
        .json();
    let actions: Vec<&str> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["auth.login", "auth.logout", "auth.failed"] {
        assert!(actions.contains(&a), "no {a} in {actions:?}");
    }
    let text = trail.to_string();
    assert!(!text.contains(email), "an e-mail address is in the trail");
}

fn uuid_like() -> String {
    "0190a0a0-0000-7000-8000-000000000001".to_string()
}

#[tokio::test]
async fn sessions_end_to_end_sqlite() {
    sessions_end_to_end(Backend::Sqlite).await;
}

#[tokio::test]
async fn sessions_end_to_end_postgres() {
    sessions_end_to_end(Backend::Postgres).await;
}

async fn post(server: &Server, path: &str, body: Value) -> Reply {
    server.post_json(path, None, &body).await
}

async fn mfa_at_sign_in(backend: Backend) {
    let site = Site::new(backend).await;
    let t = site.tenant("mfa-clinic", "Synthetic MFA Clinic");
    let email = "owner@mfa-clinic.example.test";
    // Lockout is under test here, not throttling (crates/cli/tests/throttle.rs): raise
    // the limits so the lockout is what answers.
    let server = site.serve_with(&[
        ("PHIVAULT_THROTTLE_PER_IP", "1000"),
        ("PHIVAULT_THROTTLE_PER_ACCOUNT", "1000"),
    ]);

    // The tenant requires a second factor for owners and admins.
    server
        .send(
            server
                .request(reqwest::Method::PUT, &t.path("settings/mfa"))
                .bearer_auth(&t.owner_token)
                .json(&json!({"mfa_policy": "admins"})),
        )
        .await
        .expect(200);
    server
        .send(
            server
                .request(reqwest::Method::PUT, &t.path("settings/mfa"))
                .bearer_auth(&t.owner_token)
                .json(&json!({"mfa_policy": "sometimes"})),
        )
        .await
        .expect_error(422, "invalid_field");

    // The owner has no factor yet: the sign-in asks to enroll one, no session yet.
    let first = sign_in(&server, &site, "mfa-clinic", email, false).await;
    first.expect(200);
    let body = first.json();
    assert_eq!(body["status"], "mfa_enrollment_required");
    assert!(body.get("access_token").is_none());
    let challenge = body["challenge"].as_str().unwrap().to_string();
    let enrollment = post(
        &server,
        "/api/v1/auth/mfa/enroll",
        json!({"challenge": challenge}),
    )
    .await;
    enrollment.expect(200);
    let uri = enrollment.json()["otpauth_uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        enrollment.json()["qr_svg"]
            .as_str()
            .unwrap()
            .starts_with("<?xml")
    );
    let now = chrono::Utc::now();
    let code = phivault_domain::mfa::code_for_uri(&uri, now).unwrap();
    post(
        &server,
        "/api/v1/auth/mfa/enroll/confirm",
        json!({"challenge": challenge, "code": "12345"}),
    )
    .await
    .expect_error(422, "invalid_field");
    let confirmed = post(
        &server,
        "/api/v1/auth/mfa/enroll/confirm",
        json!({"challenge": challenge, "code": code}),
    )
    .await;
    confirmed.expect(200);
    let recovery: Vec<String> = confirmed.json()["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(recovery.len(), 10);
    // The code that confirmed enrollment cannot also finish the sign-in (used once).
    post(
        &server,
        "/api/v1/auth/mfa/verify",
        json!({"challenge": challenge, "code": code}),
    )
    .await
    .expect_error(401, "mfa_invalid");
    // A recovery code finishes it, once.
    let done = post(
        &server,
        "/api/v1/auth/mfa/verify",
        json!({"challenge": challenge, "code": recovery[0]}),
    )
    .await;
    done.expect(201);
    let access = done.json()["access_token"].as_str().unwrap().to_string();
    me(&server, &t, &access).await.expect(200);
    // The challenge is spent.
    post(
        &server,
        "/api/v1/auth/mfa/verify",
        json!({"challenge": challenge, "code": recovery[1]}),
    )
    .await
    .expect_error(401, "challenge_invalid");

    // Next sign-in: a code is required; the used recovery code is refused; the next
    // step's code is accepted (one step of skew), and not twice.
    let second = sign_in(&server, &site, "mfa-clinic", email, false).await;
    second.expect(200);
    assert_eq!(second.json()["status"], "mfa_required");
    let challenge = second.json()["challenge"].as_str().unwrap().to_string();
    post(
        &server,
        "/api/v1/auth/mfa/verify",
        json!({"challenge": challenge, "code": recovery[0]}),
    )
    .await
    .expect_error(401, "mfa_invalid");
    let next =
        phivault_domain::mfa::code_for_uri(&uri, now + chrono::Duration::seconds(30)).unwrap();
    post(
        &server,
        "/api/v1/auth/mfa/verify",
        json!({"challenge": challenge, "code": next}),
    )
    .await
    .expect(201);
    let third = sign_in(&server, &site, "mfa-clinic", email, false).await;
    let challenge = third.json()["challenge"].as_str().unwrap().to_string();
    post(
        &server,
        "/api/v1/auth/mfa/verify",
        json!({"challenge": challenge, "code": next}),
    )
    .await
    .expect_error(401, "mfa_invalid");
    // Repeated failures lock the factor.
    let mut last = None;
    for _ in 0..5 {
        last = Some(
            post(
                &server,
                "/api/v1/auth/mfa/verify",
                json!({"challenge": challenge, "code": "000000"}),
            )
            .await,
        );
    }
    last.unwrap().expect_error(429, "mfa_locked");
    post(
        &server,
        "/api/v1/auth/mfa/verify",
        json!({"challenge": "pvc_junk", "code": "000000"}),
    )
    .await
    .expect_error(401, "challenge_invalid");

    // Enrollment is in the trail; the secret and the codes are not.
    let trail = server
        .get(&t.path("audit?limit=200"), Some(&t.owner_token))
        .await
        .expect(200)
        .text();
    assert!(trail.contains("auth.mfa.enrolled"));
    let secret = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert!(!trail.contains(secret));
    assert!(!trail.contains(&recovery[2]));
}

#[tokio::test]
async fn mfa_at_sign_in_sqlite() {
    mfa_at_sign_in(Backend::Sqlite).await;
}

#[tokio::test]
async fn mfa_at_sign_in_postgres() {
    mfa_at_sign_in(Backend::Postgres).await;
}
