//! The transcription trait and what it returns.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Text taken from a recording: PHI. `Debug` and `Display` print only its length; the
/// content is reachable through [`PhiText::expose`] alone, so it cannot slip into a log line
/// by formatting. Serializes as a plain string (the server encrypts the JSON it is part of).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhiText(String);

impl PhiText {
    /// Wraps text from a recording.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text itself. Call only where the content is meant to go (storage, the clinician).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for PhiText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhiText(<redacted, {} bytes>)", self.0.len())
    }
}

impl fmt::Display for PhiText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0.len())
    }
}

/// Who spoke a segment, when an engine (or a later step) knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeakerRole {
    /// The clinician.
    Clinician,
    /// The patient.
    Patient,
    /// Anyone else (a relative, an interpreter).
    Other,
}

/// One stretch of speech with its place in the recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Start, in ms from the start of the audio.
    pub start_ms: u64,
    /// End, in ms from the start of the audio; never before `start_ms`.
    pub end_ms: u64,
    /// What was said.
    pub text: PhiText,
    /// Who said it, if known.
    pub speaker: Option<SpeakerRole>,
}

/// An engine's transcript of one recording.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    /// Engine name, as [`Transcriber::name`].
    pub engine: String,
    /// Model description, as [`Transcriber::model`].
    pub model: String,
    /// Segments in the order the engine reported them.
    pub segments: Vec<Segment>,
}

impl Transcript {
    /// All segments' text, space-separated.
    pub fn text(&self) -> PhiText {
        let parts: Vec<&str> = self.segments.iter().map(|s| s.text.expose()).collect();
        PhiText::new(parts.join(" "))
    }
}

/// Told how far an engine got: (milliseconds of audio done, milliseconds in all). Called
/// from the engine's thread; it must return quickly.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What a transcription may use besides the audio.
#[derive(Clone, Default)]
pub struct TranscribeOptions {
    /// Terms the tenant wants spelled right (drug names, local places): Whisper takes them
    /// as its previous-text prompt, the `openai-compatible` engine sends them as `prompt`;
    /// engines without such an input ignore them.
    pub vocabulary: Vec<String>,
    /// Progress reports, for engines that can tell (Whisper: after every 30-second window).
    pub progress: Option<Progress>,
}

impl fmt::Debug for TranscribeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The terms are tenant configuration, not PHI, but stay out of logs all the same.
        f.debug_struct("TranscribeOptions")
            .field("vocabulary_terms", &self.vocabulary.len())
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl TranscribeOptions {
    /// The vocabulary as one prompt text: the terms, comma-separated, in the order given.
    /// `None` when there are none.
    pub fn vocabulary_prompt(&self) -> Option<String> {
        let terms: Vec<&str> = self
            .vocabulary
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        (!terms.is_empty()).then(|| terms.join(", "))
    }

    /// Reports progress, if anyone listens.
    pub fn report(&self, done_ms: u64, total_ms: u64) {
        if let Some(progress) = &self.progress {
            progress(done_ms.min(total_ms), total_ms);
        }
    }
}

/// A speech-to-text engine: a local program or model, or a vendor service under a BAA.
#[async_trait]
pub trait Transcriber: Send + Sync {
    /// Short engine name, e.g. "pocketsphinx" or "command".
    fn name(&self) -> &'static str;
    /// The model in use, for the record kept with each transcript.
    fn model(&self) -> String;
    /// Transcribes a 16 kHz mono 16-bit WAV (as [`crate::write_wav_16k`] writes).
    async fn transcribe(&self, wav_16k_mono: &Path) -> Result<Transcript>;
    /// [`Transcriber::transcribe`] with a vocabulary and progress reports; engines that
    /// use neither keep this default.
    async fn transcribe_with(
        &self,
        wav_16k_mono: &Path,
        options: &TranscribeOptions,
    ) -> Result<Transcript> {
        let _ = options;
        self.transcribe(wav_16k_mono).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNTHETIC: &str = "synthetic: the patient reports chest pain";

    #[test]
    fn debug_and_display_redact() {
        let text = PhiText::new(SYNTHETIC);
        assert_eq!(format!("{text:?}"), "PhiText(<redacted, 41 bytes>)");
        assert_eq!(format!("{text}"), "<redacted, 41 bytes>");
        let transcript = Transcript {
            engine: "e".into(),
            model: "m".into(),
            segments: vec![Segment {
                start_ms: 0,
                end_ms: 10,
                text: text.clone(),
                speaker: Some(SpeakerRole::Patient),
            }],
        };
        let debug = format!("{transcript:?} {:#?}", transcript.segments[0]);
        assert!(!debug.contains("chest"), "{debug}");
        assert_eq!(transcript.text().expose(), SYNTHETIC);
    }

    #[test]
    fn serializes_text_as_plain_string() {
        let transcript = Transcript {
            engine: "pocketsphinx".into(),
            model: "m".into(),
            segments: vec![Segment {
                start_ms: 5,
                end_ms: 900,
                text: PhiText::new(SYNTHETIC),
                speaker: Some(SpeakerRole::Clinician),
            }],
        };
        let json = serde_json::to_value(&transcript).unwrap();
        assert_eq!(json["segments"][0]["text"], SYNTHETIC);
        assert_eq!(json["segments"][0]["speaker"], "clinician");
        let back: Transcript = serde_json::from_value(json).unwrap();
        assert_eq!(back, transcript);
    }
}
