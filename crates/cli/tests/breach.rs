//! The breach-impact report from outside, on SQLite and PostgreSQL. A seeded scenario —
//! two users of tenant A (X and Y) and one of tenant B (Z), each creating and reading
//! their own patients and encounters, X also reading one encounter of Y's and storing a
//! recording, and X making one request from a second loopback address (127.0.0.2) —
//! must give, through `GET …/breach-report` and `phivault breach report`:
//! - for actor X exactly X's patients (including Y's patient reached only through the
//!   encounter X read), encounters and records, X's refused request apart;
//! - for an address exactly what came from it (127.0.0.2: X's one read; 127.0.0.1:
//!   everything else; an address never used: nothing);
//! - nothing of tenant B in tenant A's report, and B's own events in B's;
//! - 400 with stable codes for a missing or doubled filter, a reversed or too long
//!   window, bad timestamps and hostile values; 403 for a Member without `audit:view`;
//! - a `breach.reported` event for each report, API and CLI;
//! - the same JSON from the CLI (`--json`) as from the API, and the ids in its tables.
//!
//! All data is synthetic.

mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Backend, Reply, Server, Site, TenantFixture, patient_json};

/// One second of a synthetic 440 Hz tone: 16 kHz mono 16-bit PCM WAV.
fn tone_wav() -> Vec<u8> {
    let rate = 16_000u32;
    let samples: Vec<i16> = (0..rate)
        .map(|i| {
            let t = f64::from(i) / f64::from(rate);
            ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::new();
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&s.to_le_bytes());
    }
    w
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn set(items: &[&String]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The ids of a report's `patients` or `encounters`.
fn reached(report: &Value, list: &str) -> BTreeSet<String> {
    report[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {report}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// The ids of a report's touched records of one kind.
fn records(report: &Value, kind: &str) -> BTreeSet<String> {
    report["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["kind"] == kind)
        .flat_map(|g| g["records"].as_array().unwrap().iter())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// The record kinds of a report.
fn kinds(report: &Value) -> BTreeSet<String> {
    report["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["kind"].as_str().unwrap().to_string())
        .collect()
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

struct Scenario {
    site: Site,
    server: Server,
    a: TenantFixture,
    b: TenantFixture,
    x: String,
    x_token: String,
    y: String,
    z: String,
    member_token: String,
    /// X's patients, X's encounter, and the encounter of Y's that X read.
    px1: String,
    px2: String,
    ex1: String,
    py1: String,
    py2: String,
    ey1: String,
    consent: String,
    recording: String,
    pz1: String,
    ez1: String,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
}

async fn seed(backend: Backend) -> Scenario {
    let site = Site::new(backend).await;
    let a = site.tenant("breach-a", "Synthetic Breach Clinic A");
    let b = site.tenant("breach-b", "Synthetic Breach Clinic B");
    let pa = site.practice(&a.id, "Synthetic Practice A");
    let pb = site.practice(&b.id, "Synthetic Practice B");
    let x = site.user(
        &a.id,
        "x@breach-a.example.test",
        "Synthetic Provider X",
        &["provider"],
        None,
    );
    let y = site.user(
        &a.id,
        "y@breach-a.example.test",
        "Synthetic Provider Y",
        &["provider"],
        None,
    );
    let member = site.user(
        &a.id,
        "member@breach-a.example.test",
        "Synthetic Member",
        &["member"],
        None,
    );
    let z = site.user(
        &b.id,
        "z@breach-b.example.test",
        "Synthetic Provider Z",
        &["provider"],
        None,
    );
    let x_token = site.token(&a.id, &x).1;
    let y_token = site.token(&a.id, &y).1;
    let z_token = site.token(&b.id, &z).1;
    let member_token = site.token(&a.id, &member).1;
    let server = site.serve();
    let since = Utc::now() - Duration::seconds(2);

    let patient = async |tenant: &str, token: &str, practice: &str, mrn: &str| {
        id(&server
            .create_patient(
                tenant,
                token,
                &patient_json(practice, mrn, "Synthetic", "Breachtest", "1970-01-01"),
            )
            .await)
    };
    // Y first: a patient with an encounter, and a second patient read back.
    let py1 = patient(&a.id, &y_token, &pa, "SYN-BR-Y1").await;
    let py2 = patient(&a.id, &y_token, &pa, "SYN-BR-Y2").await;
    let ey1 = id(&server
        .create_encounter(&a.id, &y_token, &py1, "synthetic visit y")
        .await);
    server
        .get(&a.path(&format!("patients/{py2}")), Some(&y_token))
        .await
        .expect(200);
    // X: two patients, an encounter with consent and a recording, a read of Y's
    // encounter (never of Y's patient), and a refused look at the audit trail.
    let px1 = patient(&a.id, &x_token, &pa, "SYN-BR-X1").await;
    let px2 = patient(&a.id, &x_token, &pa, "SYN-BR-X2").await;
    let ex1 = id(&server
        .create_encounter(&a.id, &x_token, &px1, "synthetic visit x")
        .await);
    server
        .get(&a.path(&format!("patients/{px2}")), Some(&x_token))
        .await
        .expect(200);
    server
        .get(&a.path(&format!("encounters/{ey1}")), Some(&x_token))
        .await
        .expect(200);
    let consent = id(&server
        .post_json(
            &a.path(&format!("encounters/{ex1}/consents")),
            Some(&x_token),
            &json!({"method": "verbal", "jurisdiction": "US-NY"}),
        )
        .await
        .expect(201)
        .json());
    let wav = tone_wav();
    let rb = server
        .request(
            Method::POST,
            &a.path(&format!("encounters/{ex1}/recordings")),
        )
        .bearer_auth(&x_token)
        .header("content-type", "application/octet-stream")
        .header("x-content-sha256", hex::encode(Sha256::digest(&wav)))
        .body(wav);
    let recording = id(&server.send(rb).await.expect(201).json());
    server
        .get(&a.path("audit"), Some(&x_token))
        .await
        .expect_error(403, "forbidden");
    // X once more, from a second loopback address: every 127/8 address reaches the
    // listener, and the server records the peer address (it trusts no forwarding
    // header), so this request is told apart by address alone.
    let other_address = reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let r = server
        .send(
            other_address
                .get(format!(
                    "{}{}",
                    server.url,
                    a.path(&format!("patients/{px1}"))
                ))
                .bearer_auth(&x_token),
        )
        .await;
    r.expect(200);
    // Z in tenant B.
    let pz1 = patient(&b.id, &z_token, &pb, "SYN-BR-Z1").await;
    let ez1 = id(&server
        .create_encounter(&b.id, &z_token, &pz1, "synthetic visit z")
        .await);
    server
        .get(&b.path(&format!("encounters/{ez1}")), Some(&z_token))
        .await
        .expect(200);
    // The window ends here: the reports made below (and their own events) fall after it.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let until = Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    Scenario {
        site,
        server,
        a,
        b,
        x,
        x_token,
        y,
        z,
        member_token,
        px1,
        px2,
        ex1,
        py1,
        py2,
        ey1,
        consent,
        recording,
        pz1,
        ez1,
        since,
        until,
    }
}

impl Scenario {
    fn window(&self) -> String {
        format!(
            "since={}&until={}",
            urlencode(&rfc3339(self.since)),
            urlencode(&rfc3339(self.until))
        )
    }

    async fn api(&self, t: &TenantFixture, query: &str) -> Reply {
        self.server
            .get(
                &t.path(&format!("breach-report?{query}")),
                Some(&t.owner_token),
            )
            .await
    }

    async fn report(&self, t: &TenantFixture, filter: &str) -> Value {
        let r = self.api(t, &format!("{}&{filter}", self.window())).await;
        r.expect(200).json()
    }

    fn cli(&self, extra: &[&str]) -> std::process::Output {
        let since = rfc3339(self.since);
        let until = rfc3339(self.until);
        let mut args = vec!["breach", "report", "--since", &since, "--until", &until];
        args.extend_from_slice(extra);
        self.site.cli_output(&args)
    }

    fn cli_ok(&self, extra: &[&str]) -> String {
        let out = self.cli(extra);
        assert!(
            out.status.success(),
            "breach report {extra:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// A report without the id that names it (each report has its own).
fn without_id(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("report_id");
    v
}

async fn breach_report(backend: Backend) {
    let s = seed(backend).await;

    // Actor X: exactly X's records; Y's patient only through the encounter X read.
    let rx = s.report(&s.a, &format!("actor={}", s.x)).await;
    assert_eq!(
        reached(&rx, "patients"),
        set(&[&s.px1, &s.px2, &s.py1]),
        "{rx:#}"
    );
    assert_eq!(reached(&rx, "encounters"), set(&[&s.ex1, &s.ey1]));
    assert_eq!(records(&rx, "patient"), set(&[&s.px1, &s.px2]));
    assert_eq!(records(&rx, "encounter"), set(&[&s.ex1, &s.ey1]));
    assert_eq!(records(&rx, "consent"), set(&[&s.consent]));
    assert_eq!(records(&rx, "recording"), set(&[&s.recording]));
    assert_eq!(
        kinds(&rx),
        ["consent", "encounter", "patient", "recording"]
            .map(String::from)
            .into()
    );
    let py1 = rx["patients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == s.py1.as_str())
        .unwrap();
    assert_eq!(py1["via"], json!([{"kind": "encounter", "id": s.ey1}]));
    assert_eq!(py1["actions"], json!(["phi.read"]));
    let px1 = rx["patients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == s.px1.as_str())
        .unwrap();
    let via: BTreeSet<String> = px1["via"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{} {}",
                v["kind"].as_str().unwrap(),
                v["id"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        format!("patient {}", s.px1),
        format!("encounter {}", s.ex1),
        format!("consent {}", s.consent),
        format!("recording {}", s.recording),
    ] {
        assert!(via.contains(&expected), "{expected} not in {via:?}");
    }
    assert_eq!(
        rx["counts"],
        json!({"patients": 3, "encounters": 2, "records": 6, "denied_attempts": 1})
    );
    assert_eq!(rx["filter"], json!({"kind": "actor", "value": s.x}));
    assert_eq!(rx["tenant_id"], s.a.id.as_str());
    let actors: Vec<&str> = rx["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(actors, [s.x.as_str()]);
    assert_eq!(rx["denied"][0]["action"], "access.denied");
    assert_eq!(rx["denied"][0]["outcome"], "denied");
    assert!(rx["unlinked"].as_array().unwrap().is_empty(), "{rx:#}");
    let sources: BTreeSet<&str> = rx["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ip"].as_str().unwrap())
        .collect();
    assert_eq!(sources, BTreeSet::from(["127.0.0.1", "127.0.0.2"]));
    // Ids, never values: no synthetic MRN or name or reason reaches the report.
    let text = rx.to_string();
    for canary in ["SYN-BR-", "Breachtest", "synthetic visit"] {
        assert!(!text.contains(canary), "the report holds a PHI value");
    }

    // Actor Y: Y's own, nothing of X's.
    let ry = s.report(&s.a, &format!("actor={}", s.y)).await;
    assert_eq!(reached(&ry, "patients"), set(&[&s.py1, &s.py2]));
    assert_eq!(reached(&ry, "encounters"), set(&[&s.ey1]));
    assert_eq!(ry["counts"]["denied_attempts"], 0);

    // Addresses: 127.0.0.2 saw X's one read; 127.0.0.1 everything else of A; an address
    // never used, nothing.
    let r2 = s.report(&s.a, "ip=127.0.0.2").await;
    assert_eq!(reached(&r2, "patients"), set(&[&s.px1]));
    assert_eq!(r2["events_matched"], 1);
    assert_eq!(r2["actors"][0]["id"], s.x.as_str());
    let r1 = s.report(&s.a, "ip=127.0.0.1").await;
    assert_eq!(
        reached(&r1, "patients"),
        set(&[&s.px1, &s.px2, &s.py1, &s.py2])
    );
    assert!(
        r1["sources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["ip"] == "127.0.0.1")
    );
    let mapped = s.report(&s.a, "ip=%3A%3Affff%3A127.0.0.2").await;
    assert_eq!(reached(&mapped, "patients"), set(&[&s.px1]));
    let none = s.report(&s.a, "ip=10.9.8.7").await;
    assert_eq!(none["events_matched"], 0);
    assert_eq!(none["counts"]["records"], 0);
    let device = s.report(&s.a, "device=synthetic-device-0001").await;
    assert_eq!(device["events_matched"], 0);

    // Tenants: B's events never in A's report, B's own in B's.
    for r in [&rx, &ry, &r1, &r2] {
        let text = r.to_string();
        for b_id in [&s.pz1, &s.ez1, &s.z] {
            assert!(
                !text.contains(b_id.as_str()),
                "tenant B's {b_id} in A's report"
            );
        }
    }
    let z_in_a = s.report(&s.a, &format!("actor={}", s.z)).await;
    assert_eq!(z_in_a["events_matched"], 0);
    let rz = s.report(&s.b, &format!("actor={}", s.z)).await;
    assert_eq!(reached(&rz, "patients"), set(&[&s.pz1]));
    assert_eq!(reached(&rz, "encounters"), set(&[&s.ez1]));
    let x_in_b = s.report(&s.b, &format!("actor={}", s.x)).await;
    assert_eq!(x_in_b["events_matched"], 0);
    // Another tenant's owner cannot ask for A's report.
    s.server
        .get(
            &s.a.path(&format!("breach-report?{}&ip=127.0.0.1", s.window())),
            Some(&s.b.owner_token),
        )
        .await
        .expect_error(403, "tenant_mismatch");

    // Validation: stable codes, nothing quoted back.
    let w = s.window();
    let long = "a".repeat(5000);
    let cases: Vec<(String, &str)> = vec![
        (w.clone(), "breach_filter_required"),
        (
            format!("{w}&actor={}&ip=127.0.0.1", s.x),
            "breach_filter_conflict",
        ),
        (
            format!("{w}&ip=127.0.0.1&device=d1"),
            "breach_filter_conflict",
        ),
        (
            format!(
                "since={}&until={}&actor=u",
                urlencode(&rfc3339(s.until)),
                urlencode(&rfc3339(s.since))
            ),
            "breach_window_invalid",
        ),
        (
            format!(
                "since={}&until={}&actor=u",
                urlencode(&rfc3339(s.since)),
                urlencode(&rfc3339(s.since))
            ),
            "breach_window_invalid",
        ),
        (
            format!(
                "since={}&until={}&actor=u",
                urlencode(&rfc3339(s.until - Duration::days(367))),
                urlencode(&rfc3339(s.until))
            ),
            "breach_window_too_long",
        ),
        (
            "since=yesterday&until=today&actor=u".into(),
            "invalid_query",
        ),
        (
            format!(
                "since=2026-13-45T00%3A00%3A00Z&until={}&actor=u",
                urlencode(&rfc3339(s.until))
            ),
            "invalid_query",
        ),
        ("actor=u".into(), "invalid_query"),
        (format!("{w}&actor={long}"), "invalid_query"),
        (format!("{w}&actor=%00%01"), "invalid_query"),
        (
            format!("{w}&actor=x%27%20OR%20%271%27%3D%271"),
            "invalid_query",
        ),
        (format!("{w}&ip=999.1.1.1"), "invalid_query"),
        (format!("{w}&ip=127.0.0.1%2F8"), "invalid_query"),
        (format!("{w}&actor=u&limit=5"), "invalid_query"),
        (format!("{w}&actor=u&actor=v"), "invalid_query"),
    ];
    for (query, code) in &cases {
        let r = s.api(&s.a, query).await;
        let body = r.expect_error(400, code);
        let message = body["message"].as_str().unwrap();
        assert!(!message.contains("OR '1'") && !message.contains(&long[..50]));
    }
    // A hostile value that is a well-formed id matches nothing and breaks nothing.
    let hostile = s
        .report(&s.a, "actor=x%27%3B--DROP_TABLE_audit_events")
        .await;
    assert_eq!(hostile["events_matched"], 0);

    // Without audit:view: 403, itself audited.
    s.server
        .get(
            &s.a.path(&format!("breach-report?{}&ip=127.0.0.1", s.window())),
            Some(&s.member_token),
        )
        .await
        .expect_error(403, "forbidden");
    s.server
        .get(
            &s.a.path(&format!("breach-report?{}&ip=127.0.0.1", s.window())),
            Some(&s.x_token),
        )
        .await
        .expect_error(403, "forbidden");
    s.server
        .get(&s.a.path("breach-report"), None)
        .await
        .expect_error(401, "unauthenticated");

    // Every report made is in A's trail, with its id, window and counts.
    let trail = s
        .server
        .get(
            &s.a.path("audit?action=breach.reported&limit=200"),
            Some(&s.a.owner_token),
        )
        .await
        .expect(200)
        .json();
    let events = trail["events"].as_array().unwrap();
    let made = events
        .iter()
        .find(|e| e["resource_id"] == rx["report_id"])
        .unwrap_or_else(|| panic!("no breach.reported for {}: {events:?}", rx["report_id"]));
    assert_eq!(made["actor_id"], s.a.owner_id.as_str());
    assert_eq!(made["resource_type"], "breach_report");
    assert_eq!(made["outcome"], "success");
    assert_eq!(made["after"]["patients"], 3);
    assert_eq!(made["after"]["filter"]["value"], s.x.as_str());
    let denied = s
        .server
        .get(
            &s.a.path("audit?action=access.denied&limit=200"),
            Some(&s.a.owner_token),
        )
        .await
        .expect(200)
        .json();
    assert!(
        denied["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["resource_id"] == "/api/v1/tenants/{tenant_id}/breach-report"),
        "the refused report request is not in the trail"
    );

    // The CLI: the same JSON as the API for one tenant.
    let out: Value =
        serde_json::from_str(&s.cli_ok(&["--actor", &s.x, "--tenant", "breach-a", "--json"]))
            .unwrap();
    assert_eq!(out["totals"]["tenants"], 1);
    assert_eq!(out["filter"], rx["filter"]);
    assert_eq!(
        without_id(out["tenants"][0].clone()),
        without_id(rx.clone())
    );
    let cli_id = out["tenants"][0]["report_id"].as_str().unwrap().to_string();
    let trail = s
        .server
        .get(
            &s.a.path(&format!("audit?resource_id={cli_id}")),
            Some(&s.a.owner_token),
        )
        .await
        .expect(200)
        .json();
    let cli_event = &trail["events"][0];
    assert_eq!(cli_event["action"], "breach.reported");
    assert_eq!(cli_event["actor_kind"], "operator");
    let ip_out: Value =
        serde_json::from_str(&s.cli_ok(&["--ip", "127.0.0.2", "--tenant", &s.a.id, "--json"]))
            .unwrap();
    assert_eq!(
        without_id(ip_out["tenants"][0].clone()),
        without_id(r2.clone())
    );

    // Over every tenant: counts per tenant, Z's records in B only.
    let all: Value = serde_json::from_str(&s.cli_ok(&["--actor", &s.z, "--json"])).unwrap();
    let per_tenant: Vec<(String, u64)> = all["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant_id"].as_str().unwrap().to_string(),
                t["counts"]["patients"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(per_tenant.contains(&(s.a.id.clone(), 0)), "{per_tenant:?}");
    assert!(per_tenant.contains(&(s.b.id.clone(), 1)), "{per_tenant:?}");
    assert_eq!(all["totals"]["patients"], 1);
    let b_report = all["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant_id"] == s.b.id.as_str())
        .unwrap();
    assert_eq!(without_id(b_report.clone()), without_id(rz.clone()));

    // The tables name the same ids and counts.
    let table = s.cli_ok(&["--actor", &s.x]);
    for needle in [
        &s.px1,
        &s.px2,
        &s.py1,
        &s.ex1,
        &s.ey1,
        &s.consent,
        &s.recording,
    ] {
        assert!(table.contains(needle.as_str()), "{needle} not in:\n{table}");
    }
    assert!(table.contains("counts per tenant"), "{table}");
    let a_row = table
        .lines()
        .find(|l| l.trim_start().starts_with("breach-a "))
        .unwrap_or_else(|| panic!("no breach-a row in:\n{table}"));
    let cells: Vec<&str> = a_row.split_whitespace().collect();
    assert_eq!(cells[2..], ["3", "2", "6", "1"], "{a_row}");
    assert!(!table.contains(&s.pz1), "{table}");

    // The CLI refuses what the API refuses.
    for (extra, needle) in [
        (vec!["--tenant", "breach-a"], "--actor"),
        (
            vec!["--actor", "u", "--ip", "127.0.0.1"],
            "cannot be used with",
        ),
    ] {
        let out = s.cli(&extra);
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
    let since = rfc3339(s.since);
    let until = rfc3339(s.until);
    for (args, needle) in [
        (
            vec![
                "breach", "report", "--since", &until, "--until", &since, "--actor", "u",
            ],
            "breach_window_invalid",
        ),
        (
            vec![
                "breach",
                "report",
                "--since",
                "2020-01-01T00:00:00Z",
                "--until",
                &until,
                "--actor",
                "u",
            ],
            "breach_window_too_long",
        ),
        (
            vec![
                "breach",
                "report",
                "--since",
                &since,
                "--until",
                &until,
                "--ip",
                "not-an-ip",
            ],
            "invalid_query",
        ),
        (
            vec![
                "breach",
                "report",
                "--since",
                &since,
                "--until",
                &until,
                "--actor",
                "u",
                "--tenant",
                "no-such-tenant",
            ],
            "no-such-tenant",
        ),
    ] {
        let out = s.site.cli_output(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = s.site.cli_output(&[
        "breach",
        "report",
        "--since",
        "yesterday",
        "--until",
        &until,
        "--actor",
        "u",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn breach_report_sqlite() {
    breach_report(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn breach_report_postgres() {
    breach_report(Backend::Postgres).await;
}
