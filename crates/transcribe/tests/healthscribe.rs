//! The AWS HealthScribe engine: the exact request, the transcript parser on a synthetic
//! fixture and hostile input, the refusals without a clearance (no connection made), and
//! whole runs against real local servers: S3 is moto on loopback (scripts/test starts it
//! and exports PHIVAULT_TEST_S3_ENDPOINT), the Transcribe JSON API a small axum server in
//! this file that checks each request and writes HealthScribe-shaped output into moto.
//! All tenants, dialogue and audio are synthetic.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use phivault_transcribe::{
    EngineFailure, Error, HealthScribe, HealthScribeClearance, HealthScribeConfig, SpeakerRole,
    Transcriber, build_request, parse_transcript, write_wav_16k,
};
use serde_json::{Value, json};
use url::Url;
use uuid::Uuid;

const REGION: &str = "us-east-1";
const KMS_KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-00000000c0de";
const ROLE: &str = "arn:aws:iam::111122223333:role/phivault-healthscribe-synthetic";
const ACCESS_KEY: &str = "testing";
const SECRET_KEY: &str = "synthetic-secret-Hs9";
const FIXTURE: &str = "tests/fixtures/healthscribe/transcript.json";

fn config(transcribe: &str, s3: &str, media: &str, output: &str) -> HealthScribeConfig {
    HealthScribeConfig {
        region: REGION.into(),
        media_bucket: media.into(),
        output_bucket: output.into(),
        kms_key_id: KMS_KEY.into(),
        data_access_role_arn: ROLE.into(),
        transcribe_endpoint: Some(Url::parse(transcribe).unwrap()),
        s3_endpoint: Some(Url::parse(s3).unwrap()),
        access_key_id: Some(ACCESS_KEY.into()),
        secret_access_key: Some(SECRET_KEY.into()),
        poll_interval: Duration::from_millis(50),
        timeout: Duration::from_secs(20),
        max_speakers: 2,
    }
}

// ---------------------------------------------------------------------------------------
// The request.

#[test]
fn request_has_the_fields_aws_expects_scoped_to_the_tenant() {
    let tenant = Uuid::parse_str("3f0c2a4e-1111-4222-8333-444455556666").unwrap();
    let job = Uuid::parse_str("9a8b7c6d-aaaa-4bbb-8ccc-ddddeeeeffff").unwrap();
    let mut config = config(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "phivault-media",
        "phivault-output",
    );
    config.max_speakers = 3;
    let request = build_request(&config, tenant, job);
    let expected = json!({
        "MedicalScribeJobName":
            "phivault-3f0c2a4e-1111-4222-8333-444455556666-9a8b7c6d-aaaa-4bbb-8ccc-ddddeeeeffff",
        "Media": {
            "MediaFileUri": "s3://phivault-media/phivault/3f0c2a4e-1111-4222-8333-444455556666/9a8b7c6d-aaaa-4bbb-8ccc-ddddeeeeffff/audio.wav"
        },
        "OutputBucketName": "phivault-output",
        "OutputEncryptionKMSKeyId": KMS_KEY,
        "KMSEncryptionContext": {
            "phivault:tenant_id": "3f0c2a4e-1111-4222-8333-444455556666",
            "phivault:job_id": "9a8b7c6d-aaaa-4bbb-8ccc-ddddeeeeffff"
        },
        "DataAccessRoleArn": ROLE,
        "Settings": {
            "ShowSpeakerLabels": true,
            "MaxSpeakerLabels": 3,
            "ChannelIdentification": false
        },
        "Tags": [
            { "Key": "phivault:tenant_id", "Value": "3f0c2a4e-1111-4222-8333-444455556666" },
            { "Key": "phivault:job_id", "Value": "9a8b7c6d-aaaa-4bbb-8ccc-ddddeeeeffff" }
        ]
    });
    assert_eq!(serde_json::to_value(&request).unwrap(), expected);
    // AWS's job-name rule: 1–200 of [0-9a-zA-Z._-].
    let name = &request.medical_scribe_job_name;
    assert!(name.len() <= 200);
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    );

    // Another tenant's job shares no prefix with this one's, in either bucket.
    let other = build_request(&config, Uuid::new_v4(), job);
    assert!(
        !other
            .media
            .media_file_uri
            .starts_with(&format!("s3://phivault-media/phivault/{tenant}/"))
    );
    assert!(
        !other
            .medical_scribe_job_name
            .starts_with(&format!("phivault-{tenant}-"))
    );
}

#[tokio::test]
async fn bad_configurations_are_refused() {
    let good = config(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "media-bucket",
        "output-bucket",
    );
    let tenant = Uuid::new_v4();
    type Change = Box<dyn Fn(&mut HealthScribeConfig)>;
    let cases: Vec<(&str, Change)> = vec![
        ("region", Box::new(|c| c.region = "US East".into())),
        (
            "bucket",
            Box::new(|c| c.output_bucket = "Bad_Bucket".into()),
        ),
        ("bucket", Box::new(|c| c.media_bucket = "ab".into())),
        ("key", Box::new(|c| c.kms_key_id = String::new())),
        (
            "role",
            Box::new(|c| c.data_access_role_arn = "admin".into()),
        ),
        ("speakers", Box::new(|c| c.max_speakers = 1)),
        ("speakers", Box::new(|c| c.max_speakers = 31)),
        ("poll", Box::new(|c| c.poll_interval = Duration::ZERO)),
        ("secret", Box::new(|c| c.secret_access_key = None)),
        (
            "endpoint",
            Box::new(|c| c.s3_endpoint = Some(Url::parse("file:///tmp").unwrap())),
        ),
    ];
    for (what, change) in cases {
        let mut config = good.clone();
        change(&mut config);
        let err = HealthScribe::new(config, tenant, None).await.unwrap_err();
        assert_eq!(err.code(), "engine_misconfigured", "{what}");
    }
    let engine = HealthScribe::new(good.clone(), tenant, None).await.unwrap();
    assert_eq!(engine.name(), "aws-healthscribe");
    assert_eq!(engine.model(), "HealthScribe (us-east-1)");
    let debug = format!("{good:?} {engine:?}");
    assert!(!debug.contains(SECRET_KEY), "{debug}");
}

// ---------------------------------------------------------------------------------------
// The transcript file.

#[test]
fn synthetic_fixture_parses_to_timed_segments_with_roles() {
    let json = std::fs::read(FIXTURE).unwrap();
    let segments = parse_transcript(&json).unwrap();
    let got: Vec<_> = segments
        .iter()
        .map(|s| (s.start_ms, s.end_ms, s.text.expose(), s.speaker))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                120,
                2845,
                "Synthetic visit. Good morning, what brings you in today?",
                Some(SpeakerRole::Clinician)
            ),
            (
                3100,
                6400,
                "I have had a dry cough for about three days.",
                Some(SpeakerRole::Patient)
            ),
            (
                7000,
                9250,
                "Any fever? Your temperature today is normal.",
                Some(SpeakerRole::Clinician)
            ),
            (9500, 11000, "My sister came with me today.", None),
            (
                11200,
                14000,
                "Rest, fluids, and come back if it gets worse.",
                Some(SpeakerRole::Clinician)
            ),
        ]
    );
    let debug = format!("{segments:?}");
    assert!(
        !debug.contains("cough"),
        "Debug shows transcript text: {debug}"
    );
}

fn segment(begin: Value, end: Value, content: Value, role: Value) -> Value {
    json!({
        "BeginAudioTime": begin,
        "EndAudioTime": end,
        "Content": content,
        "ParticipantDetails": { "ParticipantRole": role }
    })
}

fn file(segments: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "Conversation": { "TranscriptSegments": segments } })).unwrap()
}

fn failure(
    result: phivault_transcribe::Result<Vec<phivault_transcribe::Segment>>,
) -> EngineFailure {
    match result {
        Err(Error::EngineFailed {
            reason,
            stderr_tail: None,
        }) => reason,
        other => panic!("expected an engine failure, got {other:?}"),
    }
}

#[test]
fn hostile_transcripts_are_refused_or_clamped_never_panic() {
    let fixture = std::fs::read(FIXTURE).unwrap();
    let secret_word = "synthetic-zebra-quartz";
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("not json", b"\xff\xfe synthetic".to_vec()),
        ("truncated", fixture[..fixture.len() / 2].to_vec()),
        ("array", b"[]".to_vec()),
        ("no conversation", br#"{"Other": {}}"#.to_vec()),
        (
            "segments not an array",
            br#"{"Conversation": {"TranscriptSegments": {"a": 1}}}"#.to_vec(),
        ),
        (
            "time as string",
            file(vec![segment(json!("0.5"), json!(1.0), json!("x"), json!("PATIENT_0"))]),
        ),
        (
            "content as number",
            file(vec![segment(json!(0.5), json!(1.0), json!(7), json!("PATIENT_0"))]),
        ),
        (
            "content null",
            file(vec![segment(json!(0.5), json!(1.0), Value::Null, json!("PATIENT_0"))]),
        ),
        (
            "role as object",
            file(vec![segment(json!(0.5), json!(1.0), json!("x"), json!({"a": 1}))]),
        ),
        (
            "content quoted in a type error",
            file(vec![segment(
                json!(secret_word),
                json!(1.0),
                json!(secret_word),
                json!("PATIENT_0"),
            )]),
        ),
        (
            "time past a day",
            file(vec![segment(json!(1e9), json!(2e9), json!("x"), json!("PATIENT_0"))]),
        ),
        (
            "number out of range",
            br#"{"Conversation": {"TranscriptSegments": [{"BeginAudioTime": 1e999, "EndAudioTime": 1, "Content": "x"}]}}"#.to_vec(),
        ),
        (
            "deep nesting where a role belongs",
            format!(
                r#"{{"Conversation": {{"TranscriptSegments": [{{"BeginAudioTime": 0, "EndAudioTime": 1, "Content": "x", "ParticipantDetails": {{"ParticipantRole": {}{}}}}}]}}}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
        ),
    ];
    for (what, input) in malformed {
        let result = parse_transcript(&input);
        if let Err(e) = &result {
            assert!(!e.to_string().contains("zebra"), "{what}: {e}");
            assert!(!format!("{e:?}").contains("zebra"), "{what}: {e:?}");
        }
        assert_eq!(failure(result), EngineFailure::MalformedOutput, "{what}");
    }

    let many = file(
        (0..100_000)
            .map(|i| {
                segment(
                    json!(i),
                    json!(i + 1),
                    json!("synthetic"),
                    json!("PATIENT_0"),
                )
            })
            .collect(),
    );
    assert_eq!(
        failure(parse_transcript(&many)),
        EngineFailure::OutputTooLarge
    );
    let huge_text = file(vec![segment(
        json!(0),
        json!(1),
        json!("synthetic ".repeat(10_000)),
        json!("PATIENT_0"),
    )]);
    assert_eq!(
        failure(parse_transcript(&huge_text)),
        EngineFailure::OutputTooLarge
    );
    let mut huge_file = br#"{"Conversation": {"TranscriptSegments": [], "Pad": ""#.to_vec();
    huge_file.extend(std::iter::repeat_n(b'a', 33 << 20));
    huge_file.extend(br#""}}"#);
    assert_eq!(
        failure(parse_transcript(&huge_file)),
        EngineFailure::OutputTooLarge
    );

    // Negative times read as 0, an end before its start as the start; huge role strings
    // and unknown roles are no role; nothing else is lost.
    let odd = file(vec![
        segment(
            json!(-5.0),
            json!(-1.0),
            json!("synthetic a"),
            json!("CLINICIAN_0"),
        ),
        segment(
            json!(4.0),
            json!(2.5),
            json!("synthetic b"),
            json!("R".repeat(100_000)),
        ),
        segment(json!(0), json!(0.0004), json!("synthetic c"), Value::Null),
    ]);
    let parsed = parse_transcript(&odd).unwrap();
    let got: Vec<_> = parsed
        .iter()
        .map(|s| (s.start_ms, s.end_ms, s.speaker))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 0, Some(SpeakerRole::Clinician)),
            (4000, 4000, None),
            (0, 0, None)
        ]
    );
    assert!(parse_transcript(&file(vec![])).unwrap().is_empty());
    // Deep nesting in a field the parser skips costs no stack either.
    let nested = format!(
        r#"{{"Conversation": {{"ClinicalInsights": {}{}, "TranscriptSegments": []}}}}"#,
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    assert!(parse_transcript(nested.as_bytes()).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Refusals.

/// A listener nobody accepts on: any connection attempt would queue in its backlog.
fn silent_listener() -> (StdListener, String) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

fn assert_no_connection(listener: &StdListener) {
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(_) => panic!("the engine opened a connection"),
        Err(e) => panic!("accept failed: {e}"),
    }
}

#[tokio::test]
async fn refuses_without_a_clearance_for_the_tenant_and_sends_nothing() {
    let (listener, url) = silent_listener();
    let dir = tempfile::tempdir().unwrap();
    let wav = synthetic_wav(dir.path(), 500);
    let tenant = Uuid::new_v4();

    // A tenant without PHI mode, or AWS without a BAA, gets no clearance at all.
    for (phi_mode, baa) in [(false, true), (true, false), (false, false)] {
        let err = HealthScribeClearance::granted(tenant, phi_mode, baa).unwrap_err();
        assert_eq!(err.code(), "vendor_not_cleared");
    }
    let other_tenants = HealthScribeClearance::granted(Uuid::new_v4(), true, true).unwrap();
    for clearance in [None, Some(other_tenants)] {
        let engine =
            HealthScribe::new(config(&url, &url, "media-b", "output-b"), tenant, clearance)
                .await
                .unwrap();
        let err = refusal(&engine, &wav).await;
        assert!(matches!(err, Error::VendorNotCleared), "{err:?}");
        // Refused before the file is even read.
        let err = refusal(&engine, Path::new("/nonexistent/synthetic.wav")).await;
        assert_eq!(err.code(), "vendor_not_cleared");
    }
    assert_no_connection(&listener);
    // A closed port too: the answer is the refusal, not a connection error.
    drop(listener);
    let engine = HealthScribe::new(config(&url, &url, "media-b", "output-b"), tenant, None)
        .await
        .unwrap();
    assert_eq!(refusal(&engine, &wav).await.code(), "vendor_not_cleared");
}

/// The engine's answer, which must come at once: a refusal waits for no network.
async fn refusal(engine: &HealthScribe, wav: &Path) -> Error {
    tokio::time::timeout(Duration::from_secs(5), engine.transcribe(wav))
        .await
        .expect("no immediate answer: the engine went to the network instead of refusing")
        .expect_err("the engine ran without a clearance")
}

#[tokio::test]
async fn cleared_engine_does_connect() {
    // The other half of the refusal test: with a clearance, the same setup reaches the
    // network (and fails there), so the silent listener does notice connections.
    let (listener, url) = silent_listener();
    let dir = tempfile::tempdir().unwrap();
    let wav = synthetic_wav(dir.path(), 500);
    let tenant = Uuid::new_v4();
    let clearance = HealthScribeClearance::granted(tenant, true, true).unwrap();
    let engine = HealthScribe::new(
        config(&url, &url, "media-b", "output-b"),
        tenant,
        Some(clearance),
    )
    .await
    .unwrap();
    let run = tokio::time::timeout(Duration::from_secs(2), engine.transcribe(&wav)).await;
    assert!(run.is_err(), "the upload to a silent server cannot finish");
    std::thread::sleep(Duration::from_millis(100));
    assert!(listener.accept().is_ok(), "no connection was made");
}

// ---------------------------------------------------------------------------------------
// Whole runs against moto and a local Transcribe API.

fn moto_endpoint() -> String {
    let endpoint = std::env::var("PHIVAULT_TEST_S3_ENDPOINT").unwrap_or_default();
    assert!(
        !endpoint.is_empty(),
        "PHIVAULT_TEST_S3_ENDPOINT is not set: the HealthScribe tests need moto's S3 on \
         loopback; run scripts/test (it starts moto and exports the variable)"
    );
    let url = Url::parse(&endpoint).expect("PHIVAULT_TEST_S3_ENDPOINT is a URL");
    let addr = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap()
    );
    assert!(
        std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
            .is_ok(),
        "moto is not reachable at {endpoint}: run scripts/test, which starts it"
    );
    endpoint.trim_end_matches('/').to_owned()
}

/// Creates a fresh bucket on moto (moto does not check signatures; the header makes the
/// request look like the SDK's).
async fn create_bucket(endpoint: &str, prefix: &str) -> String {
    let bucket = format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let response = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .header("authorization", moto_auth())
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    bucket
}

fn moto_auth() -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/{REGION}/s3/aws4_request, \
         SignedHeaders=host, Signature=00"
    )
}

fn store(endpoint: &str, bucket: &str, encrypt: bool) -> AmazonS3 {
    let mut builder = AmazonS3Builder::new()
        .with_region(REGION)
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY);
    if encrypt {
        builder = builder.with_sse_kms_encryption(KMS_KEY);
    }
    builder.build().unwrap()
}

async fn all_keys(store: &AmazonS3) -> Vec<String> {
    store
        .list(None)
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

/// A 16 kHz mono WAV of `ms` milliseconds of a synthetic tone.
fn synthetic_wav(dir: &Path, ms: usize) -> PathBuf {
    let path = dir.join("synthetic.wav");
    let samples: Vec<f32> = (0..ms * 16)
        .map(|i| (i as f32 * 0.07).sin() * 0.2)
        .collect();
    write_wav_16k(&samples, &path).unwrap();
    path
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    /// IN_PROGRESS on the first poll, COMPLETED (output written) on the second.
    Complete,
    /// Writes part of its output on the first poll, then FAILED.
    Fail,
    /// Writes part of its output on the first poll, then stays IN_PROGRESS.
    Hang,
}

struct FakeJob {
    polls: u32,
    media_bytes: u64,
}

/// The Transcribe JSON 1.1 API as far as HealthScribe jobs go, writing its output to moto.
struct FakeTranscribe {
    behaviour: Behaviour,
    config: HealthScribeConfig,
    tenant: Uuid,
    s3_endpoint: String,
    media: AmazonS3,
    output: AmazonS3,
    jobs: Mutex<HashMap<String, FakeJob>>,
    targets: Mutex<Vec<String>>,
    deleted_jobs: Mutex<Vec<String>>,
    /// Checks that failed inside a handler (a panic there would only drop the connection).
    problems: Mutex<Vec<String>>,
}

impl FakeTranscribe {
    fn problem(&self, text: String) {
        self.problems.lock().unwrap().push(text);
    }

    fn check_signature(&self, headers: &HeaderMap) {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let scope_ok = auth.starts_with("AWS4-HMAC-SHA256 Credential=testing/")
            && auth.contains(&format!("/{REGION}/transcribe/aws4_request"))
            && auth.contains("SignedHeaders=")
            && auth.contains("Signature=");
        if !scope_ok {
            self.problem(format!("request not SigV4-signed for transcribe: {auth:?}"));
        }
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
        if content_type != Some("application/x-amz-json-1.1") {
            self.problem(format!("content type {content_type:?}"));
        }
    }

    async fn start(&self, body: &Value) -> Response {
        let name = body["MedicalScribeJobName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(job) = name
            .strip_prefix(&format!("phivault-{}-", self.tenant))
            .and_then(|j| Uuid::parse_str(j).ok())
        else {
            self.problem(format!("job name {name:?} is not the tenant's"));
            return aws_error("BadRequestException");
        };
        // The SDK call carries exactly the documented request, nothing more or less.
        let expected = serde_json::to_value(build_request(&self.config, self.tenant, job)).unwrap();
        if *body != expected {
            self.problem(format!("request body {body} differs from {expected}"));
        }
        let key = format!("phivault/{}/{job}/audio.wav", self.tenant);
        let media_bytes = match self.media.head(&ObjectPath::from(key.as_str())).await {
            Ok(meta) => meta.size,
            Err(e) => {
                self.problem(format!("media object missing: {e}"));
                return aws_error("BadRequestException");
            }
        };
        // The upload is SSE-KMS with the configured key.
        let head = reqwest::Client::new()
            .head(format!(
                "{}/{}/{key}",
                self.s3_endpoint, self.config.media_bucket
            ))
            .header("authorization", moto_auth())
            .send()
            .await
            .unwrap();
        let header = |n: &str| {
            head.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if header("x-amz-server-side-encryption").as_deref() != Some("aws:kms")
            || header("x-amz-server-side-encryption-aws-kms-key-id").as_deref() != Some(KMS_KEY)
        {
            self.problem(format!("media not SSE-KMS encrypted: {:?}", head.headers()));
        }
        self.jobs.lock().unwrap().insert(
            name.clone(),
            FakeJob {
                polls: 0,
                media_bytes,
            },
        );
        ok(json!({ "MedicalScribeJob": {
            "MedicalScribeJobName": name,
            "MedicalScribeJobStatus": "IN_PROGRESS"
        }}))
    }

    async fn get(&self, body: &Value) -> Response {
        let name = body["MedicalScribeJobName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (polls, media_bytes) = {
            let mut jobs = self.jobs.lock().unwrap();
            let Some(job) = jobs.get_mut(&name) else {
                return aws_error("BadRequestException");
            };
            job.polls += 1;
            (job.polls, job.media_bytes)
        };
        let transcript_key = format!("{name}/transcript.json");
        let summary_key = format!("{name}/summary.json");
        let uri = |key: &str| {
            format!(
                "https://s3.{REGION}.amazonaws.com/{}/{key}",
                self.config.output_bucket
            )
        };
        let status = match (self.behaviour, polls) {
            (Behaviour::Complete, 1) => "IN_PROGRESS",
            (Behaviour::Complete, _) => {
                if polls == 2 {
                    self.write(&transcript_key, synthetic_output(media_bytes))
                        .await;
                    self.write(
                        &summary_key,
                        json!({"ClinicalDocumentation": {"Sections": []}}),
                    )
                    .await;
                }
                return ok(json!({ "MedicalScribeJob": {
                    "MedicalScribeJobName": name,
                    "MedicalScribeJobStatus": "COMPLETED",
                    "MedicalScribeOutput": {
                        "TranscriptFileUri": uri(&transcript_key),
                        "ClinicalDocumentUri": uri(&summary_key)
                    }
                }}));
            }
            (_, 1) => {
                self.write(&transcript_key, synthetic_output(media_bytes))
                    .await;
                "IN_PROGRESS"
            }
            (Behaviour::Fail, _) => {
                return ok(json!({ "MedicalScribeJob": {
                    "MedicalScribeJobName": name,
                    "MedicalScribeJobStatus": "FAILED",
                    "FailureReason": "synthetic failure: the media could not be decoded"
                }}));
            }
            (Behaviour::Hang, _) => "IN_PROGRESS",
        };
        ok(json!({ "MedicalScribeJob": {
            "MedicalScribeJobName": name,
            "MedicalScribeJobStatus": status
        }}))
    }

    async fn write(&self, key: &str, value: Value) {
        let bytes = serde_json::to_vec(&value).unwrap();
        if let Err(e) = self
            .output
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await
        {
            self.problem(format!("could not write output: {e}"));
        }
    }
}

/// HealthScribe-shaped output whose content depends on the audio received: the first
/// turn quotes its size, and the last runs past its end (the engine clamps it).
fn synthetic_output(media_bytes: u64) -> Value {
    let audio_s = (media_bytes - 44) as f64 / 32_000.0;
    json!({ "Conversation": {
        "ConversationId": "synthetic",
        "JobType": "ASYNC",
        "LanguageCode": "en-US",
        "TranscriptItems": [],
        "ClinicalInsights": [],
        "TranscriptSegments": [
            {
                "SegmentId": "s0",
                "BeginAudioTime": 0.0,
                "EndAudioTime": audio_s / 2.0,
                "Content": format!("Synthetic visit: {media_bytes} bytes of audio arrived."),
                "ParticipantDetails": { "ParticipantRole": "CLINICIAN_0" },
                "SectionDetails": { "SectionName": "VISIT_FLOW_MANAGEMENT" }
            },
            {
                "SegmentId": "s1",
                "BeginAudioTime": audio_s / 2.0,
                "EndAudioTime": audio_s + 0.5,
                "Content": "Synthetic patient: a mild cough.",
                "ParticipantDetails": { "ParticipantRole": "PATIENT_0" },
                "SectionDetails": { "SectionName": "SUBJECTIVE" }
            }
        ]
    }})
}

fn ok(body: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        body.to_string(),
    )
        .into_response()
}

fn aws_error(code: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/x-amz-json-1.1")],
        json!({ "__type": code, "message": "synthetic" }).to_string(),
    )
        .into_response()
}

async fn handle(
    State(fake): State<Arc<FakeTranscribe>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.check_signature(&headers);
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    fake.targets.lock().unwrap().push(target.clone());
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        fake.problem(format!("{target}: body is not JSON"));
        return aws_error("SerializationException");
    };
    match target.as_str() {
        "Transcribe.StartMedicalScribeJob" => fake.start(&body).await,
        "Transcribe.GetMedicalScribeJob" => fake.get(&body).await,
        "Transcribe.DeleteMedicalScribeJob" => {
            let name = body["MedicalScribeJobName"].as_str().unwrap_or_default();
            fake.deleted_jobs.lock().unwrap().push(name.to_owned());
            ok(json!({}))
        }
        other => {
            fake.problem(format!("unexpected target {other:?}"));
            aws_error("UnknownOperationException")
        }
    }
}

struct Harness {
    fake: Arc<FakeTranscribe>,
    engine: HealthScribe,
    tenant: Uuid,
    media: AmazonS3,
    output: AmazonS3,
    _dir: tempfile::TempDir,
    wav: PathBuf,
}

async fn harness(behaviour: Behaviour, timeout: Duration) -> Harness {
    let s3 = moto_endpoint();
    let media_bucket = create_bucket(&s3, "hs-media").await;
    let output_bucket = create_bucket(&s3, "hs-output").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let transcribe = format!("http://{}", listener.local_addr().unwrap());
    let mut config = config(&transcribe, &s3, &media_bucket, &output_bucket);
    config.timeout = timeout;
    let tenant = Uuid::new_v4();
    let fake = Arc::new(FakeTranscribe {
        behaviour,
        config: config.clone(),
        tenant,
        s3_endpoint: s3.clone(),
        media: store(&s3, &media_bucket, false),
        output: store(&s3, &output_bucket, true),
        jobs: Mutex::default(),
        targets: Mutex::default(),
        deleted_jobs: Mutex::default(),
        problems: Mutex::default(),
    });
    let app = Router::new()
        .route("/", axum::routing::post(handle))
        .with_state(fake.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let clearance = HealthScribeClearance::granted(tenant, true, true).unwrap();
    let engine = HealthScribe::new(config, tenant, Some(clearance))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wav = synthetic_wav(dir.path(), 1500);
    Harness {
        fake,
        engine,
        tenant,
        media: store(&s3, &media_bucket, false),
        output: store(&s3, &output_bucket, false),
        _dir: dir,
        wav,
    }
}

impl Harness {
    /// Nothing of the job is left in either bucket, the job record was deleted, and the
    /// fake saw nothing wrong.
    async fn assert_clean(&self) {
        assert_eq!(
            all_keys(&self.media).await,
            Vec::<String>::new(),
            "media left"
        );
        assert_eq!(
            all_keys(&self.output).await,
            Vec::<String>::new(),
            "output left"
        );
        let jobs: Vec<String> = self.fake.jobs.lock().unwrap().keys().cloned().collect();
        assert_eq!(jobs.len(), 1);
        assert!(jobs[0].starts_with(&format!("phivault-{}-", self.tenant)));
        assert_eq!(*self.fake.deleted_jobs.lock().unwrap(), jobs);
        assert_eq!(*self.fake.problems.lock().unwrap(), Vec::<String>::new());
    }
}

#[tokio::test]
async fn whole_run_against_moto_and_a_local_transcribe_api() {
    let h = harness(Behaviour::Complete, Duration::from_secs(20)).await;
    let transcript = h.engine.transcribe(&h.wav).await.unwrap();
    assert_eq!(transcript.engine, "aws-healthscribe");
    assert_eq!(transcript.model, "HealthScribe (us-east-1)");
    let wav_bytes = std::fs::metadata(&h.wav).unwrap().len();
    assert_eq!(wav_bytes, 44 + 1500 * 32);
    let got: Vec<_> = transcript
        .segments
        .iter()
        .map(|s| (s.start_ms, s.end_ms, s.text.expose().to_owned(), s.speaker))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                0,
                750,
                format!("Synthetic visit: {wav_bytes} bytes of audio arrived."),
                Some(SpeakerRole::Clinician)
            ),
            (
                750,
                1500,
                "Synthetic patient: a mild cough.".to_owned(),
                Some(SpeakerRole::Patient)
            ),
        ]
    );
    assert_eq!(
        *h.fake.targets.lock().unwrap(),
        [
            "Transcribe.StartMedicalScribeJob",
            "Transcribe.GetMedicalScribeJob",
            "Transcribe.GetMedicalScribeJob",
            "Transcribe.DeleteMedicalScribeJob",
        ]
    );
    h.assert_clean().await;
}

#[tokio::test]
async fn failed_job_is_reported_and_cleaned_up() {
    let h = harness(Behaviour::Fail, Duration::from_secs(20)).await;
    let err = h.engine.transcribe(&h.wav).await.unwrap_err();
    assert_eq!(err.code(), "engine_failed");
    let Error::EngineFailed {
        reason: EngineFailure::JobFailed,
        stderr_tail: Some(tail),
    } = &err
    else {
        panic!("{err:?}");
    };
    // AWS's reason is kept for an operator, out of the message and Debug.
    assert_eq!(
        tail.expose(),
        "synthetic failure: the media could not be decoded"
    );
    assert!(!err.to_string().contains("decoded"));
    assert!(!format!("{err:?}").contains("decoded"));
    h.assert_clean().await;
}

#[tokio::test]
async fn job_past_its_timeout_is_abandoned_and_cleaned_up() {
    let timeout = Duration::from_millis(700);
    let h = harness(Behaviour::Hang, timeout).await;
    let err = h.engine.transcribe(&h.wav).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::EngineFailed {
                reason: EngineFailure::Timeout(t),
                ..
            } if t == timeout
        ),
        "{err:?}"
    );
    assert!(
        h.fake.targets.lock().unwrap().len() >= 3,
        "polled more than once"
    );
    h.assert_clean().await;
}

#[tokio::test]
async fn dropped_run_is_still_cleaned_up() {
    let h = harness(Behaviour::Hang, Duration::from_secs(60)).await;
    let run = tokio::time::timeout(Duration::from_millis(600), h.engine.transcribe(&h.wav)).await;
    assert!(run.is_err(), "the hanging job cannot finish");
    // The cleanup runs in a spawned task: give it a moment.
    for _ in 0..100 {
        if !h.fake.deleted_jobs.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.assert_clean().await;
}
