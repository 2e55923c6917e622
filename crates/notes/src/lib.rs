//! Note generators for phivault: they turn a transcript of a clinical conversation into a
//! structured note (SOAP for clinics, DRAATT for EMS tenants).
//!
//! Two generators sit behind the [`NoteGenerator`] trait:
//!
//! - [`RulesGenerator`] (`"rules"`): local and deterministic. It splits the transcript into
//!   sentences and sorts them into sections by a fixed, documented vocabulary
//!   ([`vocabulary_table_markdown`], `docs/notes.md`). It selects and orders the
//!   transcript's own sentences and never writes clinical content of its own.
//! - [`OpenAiGenerator`] (`"openai-compatible"`): a chat-completions client for a local
//!   llama.cpp or vLLM server, or a vendor under a BAA. It is built only with an
//!   [`EndpointClearance`], so transcript text cannot be sent to an endpoint nobody cleared.
//!
//! Transcript and note text is PHI and travels as [`PhiText`], whose `Debug` and `Display`
//! redact; no error message of this crate contains it.

mod error;
mod model;
mod openai;
mod phi;
mod rules;
mod sentences;
mod vocabulary;

use async_trait::async_trait;

pub use error::{Error, Result};
pub use model::{
    InputSegment, NO_FINDINGS, Note, NoteKind, NoteSection, SectionHeading, Speaker,
    TranscriptInput,
};
pub use openai::{EndpointClearance, LoopbackEndpoint, OpenAiConfig, OpenAiGenerator};
pub use phi::PhiText;
pub use rules::{MAX_TRANSCRIPT_BYTES, MAX_TRANSCRIPT_SEGMENTS, RulesGenerator};
pub use vocabulary::vocabulary_table_markdown;

/// Something that writes a clinical note from a transcript.
#[async_trait]
pub trait NoteGenerator: Send + Sync {
    /// The generator's stable name, recorded in the note (`"rules"`, `"openai-compatible"`).
    fn name(&self) -> &'static str;

    /// Writes a note of `kind` from `transcript`.
    async fn generate(&self, kind: NoteKind, transcript: &TranscriptInput) -> Result<Note>;
}
