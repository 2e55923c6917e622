//! An engine that sends the recording to an OpenAI-compatible speech server
//! (`POST <base>/audio/transcriptions`: whisper.cpp's server, vLLM, faster-whisper based
//! servers), cleared like the note generator's endpoint: on this machine, or run by a vendor
//! with a BAA. Its answer is treated as hostile: size, times, segment count and text
//! length are all bounded before anything is kept.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use phivault_notes::EndpointClearance;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::multipart::{Form, Part};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::audio::wav_16k_duration_ms;
use crate::engine::{PhiText, Segment, TranscribeOptions, Transcriber, Transcript};
use crate::error::{EngineFailure, Error, Result};

/// The most response body read; a transcript of hours with per-segment metadata is a few MB.
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// How far past the end of the audio a time may lie and still be clamped to it: one Whisper
/// window, as a server's last window can round up to its end. Anything later is refused.
const OVERSHOOT_MS: u64 = 30_000;
/// Segments allowed: this many, plus four per second of audio. Real speech never comes
/// close; a server answering with more is misbehaving.
const BASE_SEGMENTS: usize = 64;
const SEGMENTS_PER_SECOND: u64 = 4;
/// Longest text of one segment, in bytes (a Whisper window holds at most 448 tokens).
const MAX_SEGMENT_TEXT: usize = 16 << 10;
/// Text allowed in all: this many bytes, plus this many per second of audio (speech runs at
/// about 15 characters a second).
const BASE_TEXT_BYTES: u64 = 4 << 10;
const TEXT_BYTES_PER_SECOND: u64 = 64;

/// Settings of an OpenAI-compatible transcription endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiTranscribeConfig {
    /// The API root, up to and including `/v1` (`http://127.0.0.1:8080/v1`); requests go to
    /// `<base_url>/audio/transcriptions`. No user name, password, query or fragment.
    pub base_url: Url,
    /// The model name the server knows (`whisper-1`, `tiny.en`, …).
    pub model: String,
    /// A bearer token, if the server wants one. Never logged; `Debug` redacts it.
    pub api_key: Option<SecretString>,
    /// The most time one recording may take, upload to last byte of the answer.
    pub timeout: Duration,
}

impl OpenAiTranscribeConfig {
    /// Settings with no key and a 30-minute timeout.
    pub fn new(base_url: Url, model: impl Into<String>) -> Self {
        OpenAiTranscribeConfig {
            base_url,
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(30 * 60),
        }
    }
}

/// The `openai-compatible` engine.
#[derive(Debug, Clone)]
pub struct OpenAiTranscriber {
    config: OpenAiTranscribeConfig,
    endpoint: Url,
    /// `<model> @ <host:port>`.
    model: String,
    client: reqwest::Client,
}

impl OpenAiTranscriber {
    /// Builds the engine for an endpoint cleared to receive PHI. Refused: a URL the loopback
    /// clearance was not verified for, or a vendor clearance without a vendor
    /// (`vendor_not_cleared`); plain http to a host that is not loopback, and unusable
    /// settings (`engine_misconfigured`). Does no I/O.
    pub fn new(config: OpenAiTranscribeConfig, clearance: EndpointClearance) -> Result<Self> {
        let url = &config.base_url;
        if config.model.trim().is_empty() {
            return Err(Error::EngineMisconfigured("the model name is empty"));
        }
        if config.timeout.is_zero() {
            return Err(Error::EngineMisconfigured("the timeout is zero"));
        }
        if let Some(key) = &config.api_key
            && bearer(key).is_none()
        {
            return Err(Error::EngineMisconfigured(
                "the API key is not a valid header value",
            ));
        }
        let client = clearance
            .client_builder(url)
            .map_err(clearance_error)?
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|_| Error::EngineMisconfigured("the HTTP client could not be built"))?;
        let mut endpoint = url.clone();
        let path = format!("{}/audio/transcriptions", url.path().trim_end_matches('/'));
        endpoint.set_path(&path);
        let port = url
            .port_or_known_default()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        let model = format!(
            "{} @ {}{port}",
            config.model.trim(),
            url.host_str().unwrap_or_default()
        );
        Ok(OpenAiTranscriber {
            config,
            endpoint,
            model,
            client,
        })
    }

    /// Sends the WAV, streamed from its file, and reads the answer up to the limit.
    async fn exchange(&self, wav: &Path, prompt: Option<String>) -> Result<Vec<u8>> {
        let file = tokio::fs::File::open(wav).await.map_err(Error::Io)?;
        let length = file.metadata().await.map_err(Error::Io)?.len();
        let audio = Part::stream_with_length(file, length)
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .map_err(|_| Error::Internal("multipart content type"))?;
        let mut form = Form::new()
            .part("file", audio)
            .text("model", self.config.model.trim().to_owned())
            .text("response_format", "verbose_json")
            .text("language", "en")
            .text("temperature", "0");
        if let Some(prompt) = prompt {
            form = form.text("prompt", prompt);
        }
        let mut request = self.client.post(self.endpoint.clone()).multipart(form);
        if let Some(key) = &self.config.api_key {
            let value = bearer(key).ok_or(Error::EngineMisconfigured(
                "the API key is not a valid header value",
            ))?;
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| transport_error(&e, self.config.timeout))?;
        let status = response.status();
        if status != StatusCode::OK {
            tracing::warn!(
                status = status.as_u16(),
                "transcription server answered with an error status"
            );
            return Err(status_error(status));
        }
        let too_large = || Error::engine(EngineFailure::OutputTooLarge);
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport_error(&e, self.config.timeout))?
        {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// `Bearer <key>`, marked sensitive so that no `Debug` of a request shows it; `None` when
/// the key cannot be a header value.
fn bearer(key: &SecretString) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// The clearance's refusal in this crate's terms.
fn clearance_error(error: phivault_notes::Error) -> Error {
    use phivault_notes::Error as N;
    match error {
        N::EndpointNotCleared => Error::VendorNotCleared,
        N::InsecureEndpoint => {
            Error::EngineMisconfigured("the endpoint must use https unless it is on this machine")
        }
        N::InvalidConfig(reason) => Error::EngineMisconfigured(reason),
        _ => Error::Internal("endpoint clearance"),
    }
}

/// A non-200 answer. Trouble the server may get over (overload, a crash, a restart) is
/// retried by the pipeline; an answer that the same request will always get is permanent.
fn status_error(status: StatusCode) -> Error {
    match status.as_u16() {
        401 | 403 => Error::EngineMisconfigured("the server refused the API key"),
        404 => Error::EngineMisconfigured(
            "the server has no such endpoint or model (check the base URL and model)",
        ),
        300..=399 => {
            Error::EngineMisconfigured("the server answered with a redirect, which is not followed")
        }
        408 | 425 | 429 | 500..=599 => Error::EngineUnavailable,
        other => Error::VendorCall {
            operation: "POST audio/transcriptions",
            kind: format!("HTTP status {other}"),
        },
    }
}

/// A transport failure, without its text (which can name the URL).
fn transport_error(error: &reqwest::Error, timeout: Duration) -> Error {
    if error.is_timeout() {
        Error::engine(EngineFailure::Timeout(timeout))
    } else {
        tracing::warn!(
            connect = error.is_connect(),
            "transcription server could not be reached"
        );
        Error::EngineUnavailable
    }
}

#[async_trait]
impl Transcriber for OpenAiTranscriber {
    fn name(&self) -> &'static str {
        "openai-compatible"
    }

    fn model(&self) -> String {
        self.model.clone()
    }

    async fn transcribe(&self, wav_16k_mono: &Path) -> Result<Transcript> {
        self.transcribe_with(wav_16k_mono, &TranscribeOptions::default())
            .await
    }

    async fn transcribe_with(
        &self,
        wav_16k_mono: &Path,
        options: &TranscribeOptions,
    ) -> Result<Transcript> {
        let path = wav_16k_mono.to_owned();
        let duration_ms = tokio::task::spawn_blocking(move || wav_16k_duration_ms(&path))
            .await
            .map_err(|_| Error::Internal("join"))??;
        options.report(0, duration_ms);
        let body = tokio::time::timeout(
            self.config.timeout,
            self.exchange(wav_16k_mono, options.vocabulary_prompt()),
        )
        .await
        .map_err(|_| Error::engine(EngineFailure::Timeout(self.config.timeout)))??;
        let segments = parse_verbose_json(&body, duration_ms)?;
        drop(body);
        options.report(duration_ms, duration_ms);
        Ok(Transcript {
            engine: self.name().to_owned(),
            model: self.model(),
            segments,
        })
    }
}

#[derive(Deserialize)]
struct VerboseJson {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    segments: Option<Vec<RawSegment>>,
}

#[derive(Deserialize)]
struct RawSegment {
    start: f64,
    end: f64,
    text: String,
}

/// Reads a `verbose_json` answer (`{"text", "segments": [{"start", "end", "text"}]}`, times
/// in seconds) into segments of a recording `duration_ms` long. Without segments, a
/// non-empty `text` becomes one segment spanning the audio; empty text is silence.
fn parse_verbose_json(body: &[u8], duration_ms: u64) -> Result<Vec<Segment>> {
    let malformed = || Error::engine(EngineFailure::MalformedOutput);
    let too_large = || Error::engine(EngineFailure::OutputTooLarge);
    let answer: VerboseJson = serde_json::from_slice(body).map_err(|_| malformed())?;
    let seconds = duration_ms.div_ceil(1000);
    let max_segments = BASE_SEGMENTS.saturating_add(
        usize::try_from(seconds.saturating_mul(SEGMENTS_PER_SECOND)).unwrap_or(usize::MAX),
    );
    let max_text = BASE_TEXT_BYTES.saturating_add(seconds.saturating_mul(TEXT_BYTES_PER_SECOND));
    let mut total_text: u64 = 0;
    let mut count_text = |text: &str| {
        total_text += text.len() as u64;
        if total_text > max_text {
            Err(too_large())
        } else {
            Ok(())
        }
    };

    let raw = match answer.segments {
        Some(raw) if !raw.is_empty() => raw,
        _ => {
            let Some(text) = answer.text else {
                return Err(malformed());
            };
            let text = clean_text(&text);
            count_text(&text)?;
            if text.is_empty() {
                return Ok(Vec::new());
            }
            return Ok(vec![Segment {
                start_ms: 0,
                end_ms: duration_ms,
                text: PhiText::new(text),
                speaker: None,
            }]);
        }
    };
    if raw.len() > max_segments {
        return Err(too_large());
    }
    let mut segments = Vec::with_capacity(raw.len());
    for segment in raw {
        let start_ms = time_ms(segment.start, duration_ms).ok_or_else(malformed)?;
        let end_ms = time_ms(segment.end, duration_ms).ok_or_else(malformed)?;
        if segment.end < segment.start {
            return Err(malformed());
        }
        if segment.text.len() > MAX_SEGMENT_TEXT {
            return Err(too_large());
        }
        let text = clean_text(&segment.text);
        count_text(&text)?;
        if text.is_empty() {
            continue;
        }
        segments.push(Segment {
            start_ms: start_ms.min(end_ms),
            end_ms,
            text: PhiText::new(text),
            speaker: None,
        });
    }
    Ok(segments)
}

/// Seconds from the server as milliseconds, clamped to the audio; `None` for a time that is
/// not a finite non-negative number or lies more than [`OVERSHOOT_MS`] past the end.
fn time_ms(seconds: f64, duration_ms: u64) -> Option<u64> {
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    let ms = seconds * 1000.0;
    if ms > (duration_ms + OVERSHOOT_MS) as f64 {
        return None;
    }
    // In range by the check above, so the cast neither saturates nor wraps.
    Some((ms.round() as u64).min(duration_ms))
}

/// Whitespace runs become one space; other control characters and bidi overrides, which
/// could disguise the text where it is shown, are removed.
fn clean_text(text: &str) -> String {
    text.split_whitespace()
        .map(|word| {
            word.chars()
                .filter(|&c| !c.is_control() && !is_bidi_control(c))
                .collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(segments: &[Segment]) -> Vec<(u64, u64, &str)> {
        segments
            .iter()
            .map(|s| (s.start_ms, s.end_ms, s.text.expose()))
            .collect()
    }

    #[test]
    fn segments_are_read_clamped_and_cleaned() {
        let body = br#"{"text": "ignored", "segments": [
            {"id": 0, "start": 0.0, "end": 1.25, "text": " synthetic  one\u202e ", "tokens": [1, 2]},
            {"start": 1.25, "end": 1.25, "text": "   "},
            {"start": 2.0, "end": 12.5, "text": "two\u0000"}
        ]}"#;
        assert_eq!(
            texts(&parse_verbose_json(body, 10_000).unwrap()),
            [(0, 1250, "synthetic one"), (2000, 10_000, "two")]
        );
    }

    #[test]
    fn text_alone_spans_the_audio_and_empty_text_is_silence() {
        assert_eq!(
            texts(&parse_verbose_json(br#"{"text": " synthetic words "}"#, 3000).unwrap()),
            [(0, 3000, "synthetic words")]
        );
        assert_eq!(
            texts(&parse_verbose_json(br#"{"text": "x", "segments": []}"#, 3000).unwrap()),
            [(0, 3000, "x")]
        );
        assert!(
            parse_verbose_json(br#"{"text": "", "segments": []}"#, 3000)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn hostile_times_counts_and_lengths_are_refused() {
        let code = |body: &str, duration_ms| {
            parse_verbose_json(body.as_bytes(), duration_ms)
                .unwrap_err()
                .to_string()
        };
        let malformed = "the transcription engine failed: its output was malformed";
        let too_large = "the transcription engine failed: its output was too large";
        for body in [
            r#"{"segments": [{"start": -0.5, "end": 1, "text": "a"}]}"#,
            r#"{"segments": [{"start": 2, "end": 1, "text": "a"}]}"#,
            r#"{"segments": [{"start": 0, "end": 1e300, "text": "a"}]}"#,
            r#"{"segments": [{"start": 0, "end": 41, "text": "a"}]}"#,
            r#"{"segments": [{"start": 0, "end": NaN, "text": "a"}]}"#,
            r#"{"segments": [{"start": 0, "end": 1e999, "text": "a"}]}"#,
            r#"{"segments": [{"start": "0", "end": 1, "text": "a"}]}"#,
            r#"{"segments": [{"start": 0, "end": 1}]}"#,
            r#"{"segments": "none"}"#,
            r#"{}"#,
            "[]",
            "not json",
        ] {
            assert_eq!(code(body, 10_000), malformed, "{body}");
        }
        let many: Vec<String> = (0..105)
            .map(|_| r#"{"start": 0, "end": 1, "text": "a"}"#.to_owned())
            .collect();
        assert_eq!(
            code(&format!(r#"{{"segments": [{}]}}"#, many.join(",")), 10_000),
            too_large
        );
        let long = "a".repeat(MAX_SEGMENT_TEXT + 1);
        assert_eq!(
            code(
                &format!(r#"{{"segments": [{{"start": 0, "end": 1, "text": "{long}"}}]}}"#),
                3_600_000
            ),
            too_large
        );
        let wordy = "a ".repeat(3000);
        assert_eq!(
            code(&format!(r#"{{"text": "{wordy}"}}"#), 10_000),
            too_large
        );
    }
}
