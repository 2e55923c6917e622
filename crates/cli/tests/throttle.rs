//! Throttling of the authentication endpoints from outside: each limit answers 429
//! `throttled` with `Retry-After`, an account's limit does not block another account, a
//! limit resets after its window, and a throttled request leaves an `auth.failed` event
//! with the reason `throttled` (in the tenant's chain when the tenant is known, else on
//! the platform chain). Windows are shortened through the `PHIVAULT_THROTTLE_*`
//! variables so nothing sleeps long.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Backend, Reply, Server, Site, TenantFixture, outbox_count, token_from_outbox};

const WINDOW_SECS: u64 = 2;

fn check_throttled(reply: &Reply) {
    reply.expect_error(429, "throttled");
    let after: u64 = reply
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=WINDOW_SECS).contains(&after), "Retry-After {after}");
}

/// Sends `send` until it is throttled; asserts at least `allowed` went through first
/// (a bucket may refill a little while requests run) and returns how many did.
async fn until_throttled<F, Fut>(allowed: usize, mut send: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    for n in 0..allowed * 4 + 4 {
        let reply = send().await;
        if reply.status == 429 {
            check_throttled(&reply);
            assert!(
                n >= allowed,
                "throttled after {n}, expected at least {allowed}"
            );
            return n;
        }
    }
    panic!("never throttled");
}

async fn magic_link(server: &Server, slug: &str, email: &str) -> Reply {
    server
        .post_json(
            "/api/v1/auth/magic-link",
            None,
            &json!({"tenant": slug, "email": email}),
        )
        .await
}

async fn throttled_events(server: &Server, t: &TenantFixture) -> Vec<Value> {
    let page = server
        .get(&t.path("audit?action=auth.failed"), Some(&t.owner_token))
        .await
        .expect(200)
        .json();
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "throttled")
        .cloned()
        .collect()
}

/// Polls the tenant's trail until `count` throttled events are there (some are written in
/// the background).
async fn wait_for_events(server: &Server, t: &TenantFixture, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = throttled_events(server, t).await;
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn per_account_limits() {
    let site = Site::new(Backend::Sqlite).await;
    let t = site.tenant("throttle-clinic", "Synthetic Throttle Clinic");
    let window = WINDOW_SECS.to_string();
    let server = site.serve_with(&[
        ("PHIVAULT_THROTTLE_WINDOW_SECS", &window),
        ("PHIVAULT_THROTTLE_PER_IP", "1000"),
        ("PHIVAULT_THROTTLE_PER_ACCOUNT", "2"),
    ]);
    let slug = "throttle-clinic";
    let owner = "owner@throttle-clinic.example.test";

    // Sign-in links per (tenant, address): the address's bucket runs out...
    until_throttled(2, || magic_link(&server, slug, owner)).await;
    // ...in any letter case...
    check_throttled(&magic_link(&server, slug, "OWNER@throttle-clinic.example.test").await);
    // ...without blocking another address, whether or not it has an account.
    magic_link(&server, slug, "nobody@throttle-clinic.example.test")
        .await
        .expect(202);
    // The refusal is in the tenant's trail, without the address.
    let events = wait_for_events(&server, &t, 1).await;
    assert!(!events.is_empty(), "no throttled event in the trail");
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.to_lowercase().contains("owner@"),
        "address in the trail: {text}"
    );
    assert_eq!(events[0]["resource_id"], "/api/v1/auth/magic-link");
    // Staff sign-in per address, whether or not a staff member has it, in any letter case;
    // another address is not blocked.
    let staff_login = async |email: &str| {
        server
            .post_json(
                "/api/v1/staff/auth/login",
                None,
                &json!({"email": email, "password": "not the password at all"}),
            )
            .await
    };
    until_throttled(2, || staff_login("ops@throttle-clinic.example.test")).await;
    check_throttled(&staff_login("OPS@throttle-clinic.example.test").await);
    staff_login("other-ops@throttle-clinic.example.test")
        .await
        .expect_error(401, "invalid_credentials");
    // After the window the address may ask again.
    tokio::time::sleep(Duration::from_millis(WINDOW_SECS * 1000 + 200)).await;
    let outbox = site.data_dir().join("outbox");
    let seen = outbox_count(&outbox);
    magic_link(&server, slug, owner).await.expect(202);
    let link = token_from_outbox(&outbox, seen);

    // The second factor per challenge's user: a sign-in that needs enrollment.
    server
        .send(
            server
                .request(reqwest::Method::PUT, &t.path("settings/mfa"))
                .bearer_auth(&t.owner_token)
                .json(&json!({"mfa_policy": "everyone"})),
        )
        .await
        .expect(200);
    let signed = server
        .post_json(
            "/api/v1/auth/magic-link/verify",
            None,
            &json!({"token": link}),
        )
        .await;
    signed.expect(200);
    let body = signed.json();
    assert_eq!(body["status"], "mfa_enrollment_required");
    let challenge = body["challenge"].as_str().unwrap().to_string();
    let before = throttled_events(&server, &t).await.len();
    // verify refuses a challenge of a user without a factor (401) until the user's
    // bucket runs out.
    let answer = json!({"challenge": challenge, "code": "000000"});
    until_throttled(2, || {
        server.post_json("/api/v1/auth/mfa/verify", None, &answer)
    })
    .await;
    let events = wait_for_events(&server, &t, before + 1).await;
    let user_event = events
        .iter()
        .find(|e| e["resource_id"] == "/api/v1/auth/mfa/verify")
        .expect("a throttled second-factor event");
    assert_eq!(user_event["actor_id"], t.owner_id.as_str());
    assert_eq!(user_event["outcome"], "denied");
    // Another endpoint of the same user has its own bucket.
    server
        .post_json(
            "/api/v1/auth/mfa/enroll",
            None,
            &json!({"challenge": challenge}),
        )
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn per_ip_limits() {
    let site = Site::new(Backend::Sqlite).await;
    let t = site.tenant("ip-clinic", "Synthetic IP Clinic");
    let window = WINDOW_SECS.to_string();
    let server = site.serve_with(&[
        ("PHIVAULT_THROTTLE_WINDOW_SECS", &window),
        ("PHIVAULT_THROTTLE_PER_IP", "3"),
        ("PHIVAULT_THROTTLE_PER_ACCOUNT", "1000"),
        ("PHIVAULT_THROTTLE_BEARER_FAILURES_PER_IP", "3"),
    ]);
    let bogus_challenge = format!("pvc_{}_{}", "0".repeat(32), "0".repeat(32));
    // Each sign-in endpoint has its own bucket per address; malformed requests count.
    let posts: Vec<(&str, Value)> = vec![
        (
            "/api/v1/auth/magic-link",
            json!({"tenant": "ip-clinic", "email": "a@ip-clinic.example.test"}),
        ),
        ("/api/v1/auth/magic-link/verify", json!({"token": "pvm_x"})),
        (
            "/api/v1/auth/mfa/verify",
            json!({"challenge": bogus_challenge, "code": "000000"}),
        ),
        (
            "/api/v1/auth/mfa/enroll",
            json!({"challenge": bogus_challenge}),
        ),
        (
            "/api/v1/auth/mfa/enroll/confirm",
            json!({"challenge": bogus_challenge, "code": "000000"}),
        ),
        (
            "/api/v1/staff/auth/login",
            json!({"email": "ops@ip-clinic.example.test", "password": "not the password at all"}),
        ),
        (
            "/api/v1/staff/auth/mfa/verify",
            json!({"challenge": "pvs_x", "code": "000000"}),
        ),
        (
            "/api/v1/staff/auth/mfa/enroll",
            json!({"challenge": "pvs_x"}),
        ),
        (
            "/api/v1/staff/auth/mfa/enroll/confirm",
            json!({"challenge": "pvs_x", "code": "000000"}),
        ),
        ("/api/v1/devices/challenge", json!({"public_key": "AAAA"})),
        (
            "/api/v1/devices/register",
            json!({"public_key": "AAAA", "challenge": "x", "signature": "AAAA"}),
        ),
    ];
    for (path, body) in &posts {
        until_throttled(3, || server.post_json(path, None, body)).await;
    }
    until_throttled(3, || {
        server.send(server.request(reqwest::Method::POST, "/api/v1/auth/refresh"))
    })
    .await;

    // Failed bearer tokens per address; a valid token still works, and a missing token
    // is not counted.
    let forged = support::forged_token(&t.id, "forged");
    let me = t.path("me");
    until_throttled(3, || server.get(&me, Some(&forged))).await;
    server
        .get(&t.path("me"), Some(&t.owner_token))
        .await
        .expect(200);
    server
        .get(&t.path("me"), None)
        .await
        .expect_error(401, "unauthenticated");

    // The buckets refill after the window.
    tokio::time::sleep(Duration::from_millis(WINDOW_SECS * 1000 + 200)).await;
    server
        .post_json(
            "/api/v1/auth/magic-link/verify",
            None,
            &json!({"token": "pvm_x"}),
        )
        .await
        .expect_error(401, "link_invalid");
    server
        .get(&t.path("me"), Some(&forged))
        .await
        .expect_error(401, "unauthenticated");

    // Per-address refusals are on the platform chain.
    let mut server = server;
    assert!(server.stop().success());
    let trail = site.cli(&["audit", "export", "--format", "jsonl"]);
    let throttled: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e.to_string().contains("\"throttled\""))
        .collect();
    let text = serde_json::to_string(&throttled).unwrap();
    for route in [
        "/api/v1/auth/magic-link\"",
        "/api/v1/auth/magic-link/verify",
        "/api/v1/auth/refresh",
        "/api/v1/auth/mfa/verify",
        "/api/v1/auth/mfa/enroll\"",
        "/api/v1/auth/mfa/enroll/confirm",
        "/api/v1/staff/auth/login",
        "/api/v1/staff/auth/mfa/verify",
        "/api/v1/staff/auth/mfa/enroll\"",
        "/api/v1/staff/auth/mfa/enroll/confirm",
        "/api/v1/devices/challenge",
        "/api/v1/devices/register",
        "/api/v1/tenants/{tenant_id}/me",
    ] {
        assert!(
            text.contains(route),
            "no throttled event for {route}: {text}"
        );
    }
    assert!(text.contains("auth.failed"), "{text}");
}
