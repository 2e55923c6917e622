//! AWS HealthScribe (Amazon Transcribe's `StartMedicalScribeJob`): a cloud engine that
//! returns a transcript with speaker roles.
//!
//! One run: the 16 kHz WAV is uploaded to the media bucket under
//! `phivault/<tenant>/<job>/audio.wav` with SSE-KMS; a job named
//! `phivault-<tenant>-<job>` is started, writing its output (SSE-KMS, with the encryption
//! context `{"phivault:tenant_id": <tenant>, "phivault:job_id": <job>}`) to the output bucket
//! under `phivault-<tenant>-<job>/` (HealthScribe puts a job's files under its name and takes
//! no output key, and a job name cannot contain `/`); the job is polled until it completes,
//! fails or runs out of time; the transcript file is read and parsed; and finally the media
//! object, every object under the job's output prefix and the job record are deleted, also
//! after a failure or a timeout, and also when the future is dropped midway (then from a
//! spawned task).
//!
//! Nothing is sent unless the engine holds a [`HealthScribeClearance`] for its tenant:
//! without one, [`Transcriber::transcribe`] returns `vendor_not_cleared` before it reads the
//! file or opens a connection. See `docs/healthscribe.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_transcribe::Client;
use aws_sdk_transcribe::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_transcribe::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_transcribe::operation::start_medical_scribe_job::builders::StartMedicalScribeJobFluentBuilder;
use aws_sdk_transcribe::types::{Media, MedicalScribeJobStatus, MedicalScribeSettings, Tag};
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, CredentialProvider, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::audio::wav_16k_duration_ms;
use crate::engine::{PhiText, Segment, SpeakerRole, Transcriber, Transcript};
use crate::error::{EngineFailure, Error, Result, StderrTail};

/// The engine's name, as recorded with each transcript.
const ENGINE_NAME: &str = "aws-healthscribe";
/// The KMS encryption-context key (and job tag key) whose value is the tenant id.
const TENANT_CONTEXT_KEY: &str = "phivault:tenant_id";
/// The KMS encryption-context key (and job tag key) whose value is the job id.
const JOB_CONTEXT_KEY: &str = "phivault:job_id";

/// No transcript file needs more: word-level items of hours of talk fit in a few MB.
const MAX_TRANSCRIPT_BYTES: usize = 32 << 20;
/// Turns of a conversation; hours of talk are a few thousand.
const MAX_SEGMENTS: usize = 20_000;
/// One turn's text; a long monologue is a few KB.
const MAX_SEGMENT_TEXT: usize = 64 << 10;
/// Times past a day are not from a recording this product accepts.
const MAX_AUDIO_SECONDS: f64 = 86_400.0;
/// Objects listed under one job's output prefix when cleaning up (a job writes two).
const MAX_OUTPUT_OBJECTS: usize = 1_000;
/// AWS's bounds on `MaxSpeakerLabels`.
const SPEAKER_LABELS: std::ops::RangeInclusive<u8> = 2..=30;
/// Time limit of one Transcribe API call, retries included, and of one attempt.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit of one S3 request (the upload of hours of 16 kHz audio is a few hundred MB).
const S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Credentials from the SDK are renewed this long before they expire.
const CREDENTIAL_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Marker of the too-many-segments error inside serde's error.
const TOO_MANY_SEGMENTS: &str = "phivault: too many transcript segments";

/// Where HealthScribe runs and where its input and output live.
#[derive(Clone)]
pub struct HealthScribeConfig {
    /// AWS region of HealthScribe and both buckets (`us-east-1`).
    pub region: String,
    /// Bucket the audio is uploaded to (under `phivault/<tenant>/<job>/`).
    pub media_bucket: String,
    /// Bucket HealthScribe writes its output to (under `phivault-<tenant>-<job>/`).
    pub output_bucket: String,
    /// KMS key (id, ARN, alias name or alias ARN) for the uploaded audio (SSE-KMS) and
    /// HealthScribe's output.
    pub kms_key_id: String,
    /// ARN of the IAM role HealthScribe assumes to read the audio, write the output and use
    /// the key.
    pub data_access_role_arn: String,
    /// A custom Transcribe endpoint (a VPC endpoint, or a test server); AWS's by default.
    pub transcribe_endpoint: Option<Url>,
    /// A custom S3 endpoint (path-style requests); AWS's by default.
    pub s3_endpoint: Option<Url>,
    /// Static access key id; if absent, the AWS SDK's default credential chain is used
    /// (for S3 as well as for Transcribe).
    pub access_key_id: Option<String>,
    /// Static secret access key, given with `access_key_id`. Redacted in `Debug`.
    pub secret_access_key: Option<String>,
    /// Pause between two status polls of a job.
    pub poll_interval: Duration,
    /// Longest a job may take from its start to its completion.
    pub timeout: Duration,
    /// Most speakers HealthScribe tells apart (`MaxSpeakerLabels`, 2 to 30).
    pub max_speakers: u8,
}

impl fmt::Debug for HealthScribeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthScribeConfig")
            .field("region", &self.region)
            .field("media_bucket", &self.media_bucket)
            .field("output_bucket", &self.output_bucket)
            .field("kms_key_id", &self.kms_key_id)
            .field("data_access_role_arn", &self.data_access_role_arn)
            .field("transcribe_endpoint", &self.transcribe_endpoint)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[redacted]"),
            )
            .field("poll_interval", &self.poll_interval)
            .field("timeout", &self.timeout)
            .field("max_speakers", &self.max_speakers)
            .finish()
    }
}

impl HealthScribeConfig {
    fn validate(&self) -> Result<()> {
        let misconfigured = Error::EngineMisconfigured;
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(misconfigured("the region is not an AWS region name"));
        }
        if !is_bucket_name(&self.media_bucket) {
            return Err(misconfigured("the media bucket is not an S3 bucket name"));
        }
        if !is_bucket_name(&self.output_bucket) {
            return Err(misconfigured("the output bucket is not an S3 bucket name"));
        }
        if self.kms_key_id.is_empty()
            || self.kms_key_id.len() > 2048
            || !self.kms_key_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(misconfigured("the KMS key id is empty or malformed"));
        }
        let arn = &self.data_access_role_arn;
        if !arn.starts_with("arn:")
            || !arn.contains(":role/")
            || arn.len() > 2048
            || !arn.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(misconfigured("the data access role is not an IAM role ARN"));
        }
        for endpoint in [&self.transcribe_endpoint, &self.s3_endpoint]
            .into_iter()
            .flatten()
        {
            if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
                return Err(misconfigured("an endpoint is not an http(s) URL"));
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), Some(_)) | (None, None) => {}
            _ => {
                return Err(misconfigured(
                    "access_key_id and secret_access_key must be given together",
                ));
            }
        }
        if self.poll_interval.is_zero() || self.timeout.is_zero() {
            return Err(misconfigured("the poll interval or the timeout is zero"));
        }
        if !SPEAKER_LABELS.contains(&self.max_speakers) {
            return Err(misconfigured("max_speakers is not between 2 and 30"));
        }
        Ok(())
    }
}

/// S3's rules for bucket names (3–63 of `a-z 0-9 . -`, starting and ending alphanumeric),
/// which HealthScribe's `OutputBucketName` also follows.
fn is_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// Permission to send one tenant's recordings to AWS: the tenant has PHI mode on and AWS is
/// a registered vendor with a BAA on file.
///
/// The only constructor, [`HealthScribeClearance::granted`], refuses unless both hold, so
/// an engine holding a clearance was handed one deliberately. The answers come from the
/// tenant's settings and the vendor registry (not built yet: until it is, the server has no
/// clearance to hand over and the engine refuses every job).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthScribeClearance {
    tenant: Uuid,
}

impl HealthScribeClearance {
    /// A clearance for `tenant`, or `vendor_not_cleared` unless the tenant has PHI mode on
    /// and AWS has a BAA on file.
    pub fn granted(tenant: Uuid, phi_mode: bool, aws_baa_on_file: bool) -> Result<Self> {
        if phi_mode && aws_baa_on_file {
            Ok(Self { tenant })
        } else {
            Err(Error::VendorNotCleared)
        }
    }

    /// The tenant it was granted for.
    pub fn tenant(&self) -> Uuid {
        self.tenant
    }
}

/// `StartMedicalScribeJob`'s request body as Amazon Transcribe's JSON API names it, so its
/// exact shape can be checked; the engine sends it field by field through the SDK.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StartMedicalScribeJobRequest {
    /// `phivault-<tenant>-<job>`; also the output prefix (with a trailing `/`).
    pub medical_scribe_job_name: String,
    /// Where the audio is.
    pub media: ScribeMedia,
    /// The output bucket.
    pub output_bucket_name: String,
    /// The KMS key of the output.
    #[serde(rename = "OutputEncryptionKMSKeyId")]
    pub output_encryption_kms_key_id: String,
    /// Tenant and job, bound into every KMS operation on the output.
    #[serde(rename = "KMSEncryptionContext")]
    pub kms_encryption_context: BTreeMap<String, String>,
    /// The role HealthScribe assumes.
    pub data_access_role_arn: String,
    /// Speaker labelling.
    pub settings: ScribeSettings,
    /// Tenant and job, for AWS-side accounting and access policies.
    pub tags: Vec<ScribeTag>,
}

/// `Media` of the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ScribeMedia {
    /// `s3://<media bucket>/phivault/<tenant>/<job>/audio.wav`.
    pub media_file_uri: String,
}

/// `Settings` of the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ScribeSettings {
    /// Always true: one channel, speakers told apart by voice.
    pub show_speaker_labels: bool,
    /// From the configuration.
    pub max_speaker_labels: i32,
    /// Always false (HealthScribe takes exactly one of the two modes).
    pub channel_identification: bool,
}

/// One of the request's `Tags`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ScribeTag {
    /// Tag key.
    pub key: String,
    /// Tag value.
    pub value: String,
}

fn job_name(tenant: Uuid, job: Uuid) -> String {
    format!("phivault-{tenant}-{job}")
}

fn media_key(tenant: Uuid, job: Uuid) -> String {
    format!("phivault/{tenant}/{job}/audio.wav")
}

/// The request for `job` of `tenant`.
pub fn build_request(
    config: &HealthScribeConfig,
    tenant: Uuid,
    job: Uuid,
) -> StartMedicalScribeJobRequest {
    let (tenant_id, job_id) = (tenant.to_string(), job.to_string());
    StartMedicalScribeJobRequest {
        medical_scribe_job_name: job_name(tenant, job),
        media: ScribeMedia {
            media_file_uri: format!("s3://{}/{}", config.media_bucket, media_key(tenant, job)),
        },
        output_bucket_name: config.output_bucket.clone(),
        output_encryption_kms_key_id: config.kms_key_id.clone(),
        kms_encryption_context: BTreeMap::from([
            (TENANT_CONTEXT_KEY.to_owned(), tenant_id.clone()),
            (JOB_CONTEXT_KEY.to_owned(), job_id.clone()),
        ]),
        data_access_role_arn: config.data_access_role_arn.clone(),
        settings: ScribeSettings {
            show_speaker_labels: true,
            max_speaker_labels: i32::from(config.max_speakers),
            channel_identification: false,
        },
        tags: vec![
            ScribeTag {
                key: TENANT_CONTEXT_KEY.to_owned(),
                value: tenant_id,
            },
            ScribeTag {
                key: JOB_CONTEXT_KEY.to_owned(),
                value: job_id,
            },
        ],
    }
}

/// The SDK call that sends `request`, every field of it and nothing else.
fn start_call(
    client: &Client,
    request: &StartMedicalScribeJobRequest,
) -> Result<StartMedicalScribeJobFluentBuilder> {
    let construction = |_| Error::Internal("StartMedicalScribeJob request");
    let media = Media::builder()
        .media_file_uri(&request.media.media_file_uri)
        .build();
    let settings = MedicalScribeSettings::builder()
        .show_speaker_labels(request.settings.show_speaker_labels)
        .max_speaker_labels(request.settings.max_speaker_labels)
        .channel_identification(request.settings.channel_identification)
        .build();
    let mut call = client
        .start_medical_scribe_job()
        .medical_scribe_job_name(&request.medical_scribe_job_name)
        .media(media)
        .output_bucket_name(&request.output_bucket_name)
        .output_encryption_kms_key_id(&request.output_encryption_kms_key_id)
        .data_access_role_arn(&request.data_access_role_arn)
        .settings(settings);
    for (key, value) in &request.kms_encryption_context {
        call = call.kms_encryption_context(key, value);
    }
    for tag in &request.tags {
        call = call.tags(
            Tag::builder()
                .key(&tag.key)
                .value(&tag.value)
                .build()
                .map_err(construction)?,
        );
    }
    Ok(call)
}

// ---------------------------------------------------------------------------------------
// The transcript file.

#[derive(Deserialize)]
struct TranscriptFile {
    #[serde(rename = "Conversation")]
    conversation: Conversation,
}

#[derive(Deserialize)]
struct Conversation {
    #[serde(rename = "TranscriptSegments")]
    segments: CappedSegments,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSegment {
    begin_audio_time: f64,
    end_audio_time: f64,
    content: String,
    #[serde(default)]
    participant_details: Option<ParticipantDetails>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ParticipantDetails {
    #[serde(default)]
    participant_role: Option<String>,
}

/// The segments array, refused as soon as it holds more than [`MAX_SEGMENTS`].
struct CappedSegments(Vec<RawSegment>);

impl<'de> Deserialize<'de> for CappedSegments {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Capped;
        impl<'de> Visitor<'de> for Capped {
            type Value = CappedSegments;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of transcript segments")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(segment) = seq.next_element::<RawSegment>()? {
                    if out.len() == MAX_SEGMENTS {
                        return Err(de::Error::custom(TOO_MANY_SEGMENTS));
                    }
                    out.push(segment);
                }
                Ok(CappedSegments(out))
            }
        }
        deserializer.deserialize_seq(Capped)
    }
}

/// Seconds (HealthScribe's unit) to ms: negative times become 0; non-finite times and
/// times past a day are refused.
fn seconds_to_ms(seconds: f64) -> Option<u64> {
    if !seconds.is_finite() || seconds > MAX_AUDIO_SECONDS {
        return None;
    }
    Some((seconds.max(0.0) * 1000.0).round() as u64)
}

fn role(label: Option<&str>) -> Option<SpeakerRole> {
    // HealthScribe numbers participants of one role: CLINICIAN_0, CLINICIAN_1, PATIENT_0.
    let label = label?;
    let base = label.split_once('_').map_or(label, |(base, _)| base);
    match base {
        "CLINICIAN" => Some(SpeakerRole::Clinician),
        "PATIENT" => Some(SpeakerRole::Patient),
        _ => None,
    }
}

/// Parses HealthScribe's transcript file (`Conversation.TranscriptSegments`, times in
/// seconds, `ParticipantDetails.ParticipantRole` such as `CLINICIAN_0` or `PATIENT_0`) into
/// segments, in the file's order. Text is trimmed and empty segments are dropped; a
/// negative time is read as 0 and an end before its start as the start; an unknown or
/// missing role is `None`.
///
/// `engine_failed` (malformed output) for anything not in that shape, a non-finite time or
/// one past a day; `engine_failed` (output too large) for more than 32 MiB, more than
/// 20,000 segments, or a segment of more than 64 KiB of text. The error says nothing about
/// the content.
pub fn parse_transcript(json: &[u8]) -> Result<Vec<Segment>> {
    let malformed = || Error::engine(EngineFailure::MalformedOutput);
    let too_large = || Error::engine(EngineFailure::OutputTooLarge);
    if json.len() > MAX_TRANSCRIPT_BYTES {
        return Err(too_large());
    }
    let file: TranscriptFile = serde_json::from_slice(json).map_err(|e| {
        // serde's message may quote the input: only the marker is looked at.
        if e.to_string().contains(TOO_MANY_SEGMENTS) {
            too_large()
        } else {
            malformed()
        }
    })?;
    let mut segments = Vec::with_capacity(file.conversation.segments.0.len());
    for raw in file.conversation.segments.0 {
        let start_ms = seconds_to_ms(raw.begin_audio_time).ok_or_else(malformed)?;
        let end_ms = seconds_to_ms(raw.end_audio_time)
            .ok_or_else(malformed)?
            .max(start_ms);
        if raw.content.len() > MAX_SEGMENT_TEXT {
            return Err(too_large());
        }
        let text = raw.content.trim();
        if text.is_empty() {
            continue;
        }
        let speaker = role(
            raw.participant_details
                .as_ref()
                .and_then(|p| p.participant_role.as_deref()),
        );
        segments.push(Segment {
            start_ms,
            end_ms,
            text: PhiText::new(text),
            speaker,
        });
    }
    Ok(segments)
}

// ---------------------------------------------------------------------------------------
// The engine.

/// The HealthScribe engine for one tenant's recordings.
pub struct HealthScribe {
    config: HealthScribeConfig,
    tenant: Uuid,
    clearance: Option<HealthScribeClearance>,
    transcribe: Client,
    media: AmazonS3,
    output: AmazonS3,
}

impl fmt::Debug for HealthScribe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthScribe")
            .field("config", &self.config)
            .field("tenant", &self.tenant)
            .field("cleared", &self.cleared())
            .finish()
    }
}

impl HealthScribe {
    /// An engine for `tenant`'s recordings. `clearance` is what the tenant settings and
    /// the vendor registry allow: without one for this tenant every job is refused with
    /// `vendor_not_cleared` before any network call. Validates the configuration
    /// (`engine_misconfigured`) and builds the clients; makes no network call (default-chain
    /// credentials are resolved on first use).
    pub async fn new(
        config: HealthScribeConfig,
        tenant: Uuid,
        clearance: Option<HealthScribeClearance>,
    ) -> Result<Self> {
        config.validate()?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(OPERATION_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .build(),
            );
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.clone(),
                None,
                None,
                "phivault-config",
            ));
        }
        let sdk_config = loader.load().await;
        let mut transcribe_config = aws_sdk_transcribe::config::Builder::from(&sdk_config);
        if let Some(endpoint) = &config.transcribe_endpoint {
            transcribe_config = transcribe_config.endpoint_url(endpoint.as_str());
        }
        let credentials = Arc::new(SdkCredentials {
            provider: sdk_config
                .credentials_provider()
                .ok_or(Error::EngineMisconfigured(
                    "no AWS credentials are configured",
                ))?,
            cached: tokio::sync::Mutex::new(None),
        });
        let media = s3_store(&config, &config.media_bucket, credentials.clone(), true)?;
        let output = s3_store(&config, &config.output_bucket, credentials, false)?;
        Ok(Self {
            transcribe: Client::from_conf(transcribe_config.build()),
            config,
            tenant,
            clearance,
            media,
            output,
        })
    }

    fn cleared(&self) -> bool {
        self.clearance
            .as_ref()
            .is_some_and(|c| c.tenant() == self.tenant)
    }

    async fn run(
        &self,
        wav: &Path,
        job: Uuid,
        duration_ms: u64,
        cleanup: &mut Cleanup,
    ) -> Result<Vec<Segment>> {
        let request = build_request(&self.config, self.tenant, job);
        let audio = tokio::fs::read(wav).await.map_err(Error::Io)?;
        self.media
            .put(&cleanup.media_key, PutPayload::from(audio))
            .await
            .map_err(|e| s3_error("S3 PutObject", &e))?;
        cleanup.job_started = true;
        start_call(&self.transcribe, &request)?
            .send()
            .await
            .map_err(|e| sdk_error("StartMedicalScribeJob", &e))?;
        tracing::info!(tenant = %self.tenant, %job, "started a HealthScribe job");
        let transcript_uri = tokio::time::timeout(
            self.config.timeout,
            self.wait_for(&request.medical_scribe_job_name),
        )
        .await
        .map_err(|_| Error::engine(EngineFailure::Timeout(self.config.timeout)))??;
        let key = self.transcript_key(&transcript_uri, &cleanup.output_prefix)?;
        let bytes = self.read_capped(&key).await?;
        let mut segments = parse_transcript(&bytes)?;
        for segment in &mut segments {
            segment.end_ms = segment.end_ms.min(duration_ms);
            segment.start_ms = segment.start_ms.min(segment.end_ms);
        }
        Ok(segments)
    }

    /// Polls the job until it completes (returning its transcript's URI) or fails.
    async fn wait_for(&self, job_name: &str) -> Result<String> {
        loop {
            tokio::time::sleep(self.config.poll_interval).await;
            let output = self
                .transcribe
                .get_medical_scribe_job()
                .medical_scribe_job_name(job_name)
                .send()
                .await
                .map_err(|e| sdk_error("GetMedicalScribeJob", &e))?;
            let job = output
                .medical_scribe_job
                .ok_or(Error::engine(EngineFailure::MalformedOutput))?;
            match job.medical_scribe_job_status {
                Some(MedicalScribeJobStatus::Completed) => {
                    return job
                        .medical_scribe_output
                        .map(|o| o.transcript_file_uri)
                        .ok_or(Error::engine(EngineFailure::MalformedOutput));
                }
                Some(MedicalScribeJobStatus::Failed) => {
                    return Err(Error::EngineFailed {
                        reason: EngineFailure::JobFailed,
                        stderr_tail: job.failure_reason.as_deref().map(sanitized_reason),
                    });
                }
                Some(MedicalScribeJobStatus::Queued | MedicalScribeJobStatus::InProgress) => {}
                _ => return Err(Error::engine(EngineFailure::MalformedOutput)),
            }
        }
    }

    /// The key of the transcript file that `uri` names, which must lie under the job's
    /// prefix in the output bucket: the engine reads nothing else.
    fn transcript_key(&self, uri: &str, prefix: &ObjectPath) -> Result<ObjectPath> {
        let malformed = || Error::engine(EngineFailure::MalformedOutput);
        let key = object_key_in(uri, &self.config.output_bucket).ok_or_else(malformed)?;
        let path = ObjectPath::parse(&key).map_err(|_| malformed())?;
        if path
            .prefix_match(prefix)
            .is_none_or(|mut rest| rest.next().is_none())
        {
            return Err(malformed());
        }
        Ok(path)
    }

    async fn read_capped(&self, key: &ObjectPath) -> Result<Vec<u8>> {
        let too_large = || Error::engine(EngineFailure::OutputTooLarge);
        let result = self
            .output
            .get(key)
            .await
            .map_err(|e| s3_error("S3 GetObject", &e))?;
        if result.meta.size > MAX_TRANSCRIPT_BYTES as u64 {
            return Err(too_large());
        }
        let mut stream = result.into_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| s3_error("S3 GetObject", &e))?;
            if bytes.len() + chunk.len() > MAX_TRANSCRIPT_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

#[async_trait]
impl Transcriber for HealthScribe {
    fn name(&self) -> &'static str {
        ENGINE_NAME
    }

    fn model(&self) -> String {
        format!("HealthScribe ({})", self.config.region)
    }

    async fn transcribe(&self, wav_16k_mono: &Path) -> Result<Transcript> {
        if !self.cleared() {
            return Err(Error::VendorNotCleared);
        }
        let path = wav_16k_mono.to_owned();
        let duration_ms = tokio::task::spawn_blocking(move || wav_16k_duration_ms(&path))
            .await
            .map_err(|_| Error::Internal("join"))??;
        let job = Uuid::new_v4();
        let mut cleanup = CleanupGuard(Some(Cleanup {
            media: self.media.clone(),
            output: self.output.clone(),
            transcribe: self.transcribe.clone(),
            media_key: ObjectPath::from(media_key(self.tenant, job)),
            output_prefix: ObjectPath::from(job_name(self.tenant, job)),
            job_name: job_name(self.tenant, job),
            job_started: false,
        }));
        let outcome = match cleanup.0.as_mut() {
            Some(state) => self.run(wav_16k_mono, job, duration_ms, state).await,
            None => Err(Error::Internal("cleanup state")),
        };
        cleanup.run().await;
        Ok(Transcript {
            engine: self.name().to_owned(),
            model: self.model(),
            segments: outcome?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Cleanup.

/// What one job leaves in AWS until it is deleted.
struct Cleanup {
    media: AmazonS3,
    output: AmazonS3,
    transcribe: Client,
    media_key: ObjectPath,
    output_prefix: ObjectPath,
    job_name: String,
    /// Set just before the start request: from then on there may be a job record and
    /// output, even if the request seemed to fail.
    job_started: bool,
}

impl Cleanup {
    /// Deletes the media object, every object under the output prefix and the job record;
    /// logs (object keys and job names hold ids only) what could not be deleted.
    async fn run(self) {
        if let Err(e) = self.media.delete(&self.media_key).await {
            tracing::error!(
                key = %self.media_key,
                error = %s3_error("S3 DeleteObject", &e),
                "could not delete a HealthScribe media object: delete it by hand"
            );
        }
        if !self.job_started {
            return;
        }
        let listed: Vec<_> = self
            .output
            .list(Some(&self.output_prefix))
            .take(MAX_OUTPUT_OBJECTS)
            .collect()
            .await;
        for entry in listed {
            let outcome = match entry {
                Ok(meta) => self
                    .output
                    .delete(&meta.location)
                    .await
                    .map_err(|e| s3_error("S3 DeleteObject", &e)),
                Err(e) => Err(s3_error("S3 ListObjectsV2", &e)),
            };
            if let Err(error) = outcome {
                tracing::error!(
                    prefix = %self.output_prefix,
                    %error,
                    "could not delete HealthScribe output: delete the prefix by hand"
                );
            }
        }
        if let Err(e) = self
            .transcribe
            .delete_medical_scribe_job()
            .medical_scribe_job_name(&self.job_name)
            .send()
            .await
        {
            tracing::warn!(
                job_name = %self.job_name,
                error = %sdk_error("DeleteMedicalScribeJob", &e),
                "could not delete a HealthScribe job record"
            );
        }
    }
}

/// Runs the cleanup when the run ends, or from a spawned task if the run's future is
/// dropped midway.
struct CleanupGuard(Option<Cleanup>);

impl CleanupGuard {
    async fn run(&mut self) {
        if let Some(cleanup) = self.0.take() {
            cleanup.run().await;
        }
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(cleanup) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(cleanup.run());
                }
                Err(_) => tracing::error!(
                    key = %cleanup.media_key,
                    prefix = %cleanup.output_prefix,
                    "a HealthScribe run was dropped outside a runtime: delete its objects by hand"
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// AWS plumbing.

fn s3_store(
    config: &HealthScribeConfig,
    bucket: &str,
    credentials: Arc<SdkCredentials>,
    encrypt: bool,
) -> Result<AmazonS3> {
    let mut builder = AmazonS3Builder::new()
        .with_region(&config.region)
        .with_bucket_name(bucket)
        .with_credentials(credentials)
        .with_client_options(ClientOptions::new().with_timeout(S3_REQUEST_TIMEOUT))
        .with_retry(RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(120),
        });
    if encrypt {
        builder = builder.with_sse_kms_encryption(&config.kms_key_id);
    }
    if let Some(endpoint) = &config.s3_endpoint {
        builder = builder
            .with_endpoint(endpoint.as_str().trim_end_matches('/'))
            .with_allow_http(endpoint.scheme() == "http");
    }
    builder
        .build()
        .map_err(|_| Error::EngineMisconfigured("the S3 client cannot be built"))
}

/// The key that `uri` (`s3://bucket/key`, path-style `https://host/bucket/key` as
/// Transcribe reports it, or virtual-hosted `https://bucket.host/key`) names in `bucket`;
/// `None` if it names another bucket or holds characters no HealthScribe key has.
fn object_key_in(uri: &str, bucket: &str) -> Option<String> {
    let url = Url::parse(uri).ok()?;
    let host = url.host_str()?;
    let path = url.path().strip_prefix('/')?;
    let key = match url.scheme() {
        "s3" if host == bucket => path,
        "https" | "http" => match host.strip_prefix(bucket) {
            Some(rest) if rest.starts_with(".s3.") || rest.starts_with(".s3-") => path,
            _ => path.strip_prefix(bucket)?.strip_prefix('/')?,
        },
        _ => return None,
    };
    let safe = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'));
    (safe && !key.is_empty() && url.query().is_none()).then(|| key.to_owned())
}

/// A failure reason from AWS, as printable ASCII, for an operator only.
fn sanitized_reason(reason: &str) -> StderrTail {
    let cleaned: String = reason
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(500)
        .collect();
    StderrTail::new(cleaned)
}

/// An error naming the operation and the SDK error's kind or the service's error code
/// only: the SDK's messages and sources are left out.
fn sdk_error<E: ProvideErrorMetadata, R>(operation: &'static str, error: &SdkError<E, R>) -> Error {
    let kind = match error {
        SdkError::ConstructionFailure(_) => "request construction failed".to_owned(),
        SdkError::TimeoutError(_) => "timeout".to_owned(),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "timeout".to_owned(),
        SdkError::DispatchFailure(failure) if failure.is_io() => "connection".to_owned(),
        SdkError::DispatchFailure(_) => "dispatch failed".to_owned(),
        SdkError::ResponseError(_) => "unparseable response".to_owned(),
        SdkError::ServiceError(_) => error
            .code()
            .map(|code| {
                code.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'))
                    .take(64)
                    .collect()
            })
            .unwrap_or_else(|| "service error".to_owned()),
        _ => "unknown SDK error".to_owned(),
    };
    Error::VendorCall { operation, kind }
}

/// An error naming the S3 operation and the kind of failure, not object_store's message
/// (which names keys and may carry the server's text).
fn s3_error(operation: &'static str, error: &object_store::Error) -> Error {
    let kind = match error {
        object_store::Error::NotFound { .. } => "not found",
        object_store::Error::PermissionDenied { .. } => "permission denied",
        object_store::Error::Unauthenticated { .. } => "unauthenticated",
        object_store::Error::Precondition { .. } => "precondition failed",
        object_store::Error::AlreadyExists { .. } => "already exists",
        object_store::Error::InvalidPath { .. } => "invalid key",
        _ => "request failed",
    };
    Error::VendorCall {
        operation,
        kind: kind.to_owned(),
    }
}

/// The AWS SDK's credentials (static or its default chain) for object_store, renewed
/// shortly before they expire, so S3 and Transcribe calls sign with the same identity.
struct SdkCredentials {
    provider: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl fmt::Debug for SdkCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SdkCredentials")
    }
}

#[async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref()
            && expiry.is_none_or(|at| at > SystemTime::now() + CREDENTIAL_REFRESH_MARGIN)
        {
            return Ok(credential.clone());
        }
        let fresh = self.provider.provide_credentials().await.map_err(|e| {
            object_store::Error::Unauthenticated {
                path: String::new(),
                source: Box::new(e),
            }
        })?;
        let credential = Arc::new(AwsCredential {
            key_id: fresh.access_key_id().to_owned(),
            secret_key: fresh.secret_access_key().to_owned(),
            token: fresh.session_token().map(str::to_owned),
        });
        *cached = Some((credential.clone(), fresh.expiry()));
        Ok(credential)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_uris_resolve_to_keys_in_the_output_bucket_only() {
        let bucket = "out-bucket";
        let key = "phivault-a-b/transcript.json";
        for uri in [
            format!("https://s3.us-east-1.amazonaws.com/{bucket}/{key}"),
            format!("https://{bucket}.s3.us-east-1.amazonaws.com/{key}"),
            format!("s3://{bucket}/{key}"),
            format!("http://127.0.0.1:9000/{bucket}/{key}"),
        ] {
            assert_eq!(object_key_in(&uri, bucket).as_deref(), Some(key), "{uri}");
        }
        for uri in [
            format!("https://s3.us-east-1.amazonaws.com/other/{key}"),
            format!("https://s3.us-east-1.amazonaws.com/{bucket}x/{key}"),
            format!("s3://other/{key}"),
            format!("ftp://{bucket}/{key}"),
            format!("https://s3.amazonaws.com/{bucket}/a%20b"),
            format!("https://s3.amazonaws.com/{bucket}/{key}?versionId=1"),
            format!("https://s3.amazonaws.com/{bucket}/"),
            format!("https://{bucket}.example.com/{key}"),
            "not a uri".to_owned(),
        ] {
            assert_eq!(object_key_in(&uri, bucket), None, "{uri}");
        }
    }

    #[test]
    fn roles_and_times() {
        assert_eq!(role(Some("CLINICIAN_0")), Some(SpeakerRole::Clinician));
        assert_eq!(role(Some("CLINICIAN_1")), Some(SpeakerRole::Clinician));
        assert_eq!(role(Some("PATIENT_0")), Some(SpeakerRole::Patient));
        assert_eq!(role(Some("PATIENT")), Some(SpeakerRole::Patient));
        assert_eq!(role(Some("UNKNOWN_0")), None);
        assert_eq!(role(None), None);
        assert_eq!(seconds_to_ms(1.2345), Some(1235));
        assert_eq!(seconds_to_ms(-3.0), Some(0));
        assert_eq!(seconds_to_ms(f64::INFINITY), None);
        assert_eq!(seconds_to_ms(1e12), None);
    }

    #[test]
    fn failure_reasons_are_withheld_and_cleaned() {
        let tail = sanitized_reason("bad\u{7}media\nformat é");
        assert_eq!(tail.expose(), "badmediaformat ");
        assert!(!format!("{tail:?}").contains("media"));
    }
}
