use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::sentences::{self, Sentence};
use crate::vocabulary::{self, Compiled, MIN_WORDS_FOR_NUDGE_ALONE, SPEAKER_NUDGES};
use crate::{
    Error, NO_FINDINGS, Note, NoteGenerator, NoteKind, NoteSection, PhiText, Result,
    TranscriptInput,
};

/// The most transcript text (summed over segments) a generator accepts: about fifty hours of
/// speech, far beyond one encounter.
pub const MAX_TRANSCRIPT_BYTES: usize = 4 * 1024 * 1024;

/// The most segments a generator accepts.
pub const MAX_TRANSCRIPT_SEGMENTS: usize = 100_000;

/// Transcripts up to this size are sorted on the calling task; larger ones on a blocking
/// thread.
const INLINE_LIMIT_BYTES: usize = 256 * 1024;

/// Refuses transcripts over the limits, and ones without a single word.
pub(crate) fn check_transcript(transcript: &TranscriptInput) -> Result<()> {
    if transcript.segments.len() > MAX_TRANSCRIPT_SEGMENTS {
        return Err(Error::TranscriptTooLarge);
    }
    let bytes: usize = transcript.segments.iter().map(|s| s.text.len()).sum();
    if bytes > MAX_TRANSCRIPT_BYTES {
        return Err(Error::TranscriptTooLarge);
    }
    if !transcript
        .segments
        .iter()
        .any(|s| s.text.expose().chars().any(char::is_alphanumeric))
    {
        return Err(Error::EmptyTranscript);
    }
    Ok(())
}

/// The local, deterministic note generator: it sorts the transcript's own sentences into
/// the note's sections by the documented vocabulary (`docs/notes.md`). It never writes,
/// summarises or rephrases clinical content, and the same transcript always gives the same
/// note.
#[derive(Debug, Clone, Copy, Default)]
pub struct RulesGenerator;

impl RulesGenerator {
    /// The rules generator.
    pub fn new() -> Self {
        RulesGenerator
    }

    /// Writes a note synchronously (what [`NoteGenerator::generate`] does, without a
    /// runtime).
    pub fn generate_note(&self, kind: NoteKind, transcript: &TranscriptInput) -> Result<Note> {
        check_transcript(transcript)?;
        let sentences = sentences::split(transcript);
        if sentences.is_empty() {
            return Err(Error::EmptyTranscript);
        }
        let headings = kind.headings();
        let mut texts: Vec<Vec<&str>> = vec![Vec::new(); headings.len()];
        let mut sources: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); headings.len()];
        let mut unused = 0;
        for sentence in &sentences {
            match classify(kind, sentence) {
                Some(index) => {
                    texts[index].push(&sentence.text);
                    sources[index].insert(sentence.segment);
                }
                None => unused += 1,
            }
        }
        let sections = headings
            .iter()
            .zip(texts.into_iter().zip(sources))
            .map(|(&heading, (lines, sources))| NoteSection {
                heading,
                text: PhiText::new(if lines.is_empty() {
                    NO_FINDINGS.to_owned()
                } else {
                    lines.join("\n")
                }),
                sources: sources.into_iter().collect(),
            })
            .collect();
        Ok(Note {
            kind,
            generator: "rules".to_owned(),
            model: None,
            sections,
            unused_sentences: Some(unused),
        })
    }
}

/// The section index (in the kind's heading order) a sentence goes to, or `None` when it is
/// small talk or nothing places it.
///
/// 1. Score every section by the vocabulary; score small talk likewise.
/// 2. Small talk at least as heavy as the best section: dropped.
/// 3. The speaker's nudge is added, if the sentence matched any pattern or has enough words.
/// 4. The highest score wins; ties go to the section that comes first in the note.
/// 5. A best score of zero: dropped.
fn classify(kind: NoteKind, sentence: &Sentence) -> Option<usize> {
    let headings = kind.headings();
    let words = vocabulary::words(&sentence.text);
    let mut scores = Compiled::of(kind).score(&words, headings.len());
    let best_vocabulary = scores.sections.iter().copied().max().unwrap_or(0);
    if scores.small_talk > 0 && scores.small_talk >= best_vocabulary {
        return None;
    }
    let word_count = words.iter().filter(|w| vocabulary::is_word(w)).count();
    if best_vocabulary > 0 || word_count >= MIN_WORDS_FOR_NUDGE_ALONE {
        for &(nudge_kind, speaker, heading, weight) in SPEAKER_NUDGES {
            if nudge_kind == kind
                && sentence.speaker == Some(speaker)
                && let Some(index) = headings.iter().position(|&h| h == heading)
            {
                scores.sections[index] += u32::from(weight);
            }
        }
    }
    // `max_by_key` keeps the last maximum; scanning in reverse makes it the first.
    let (index, &score) = scores
        .sections
        .iter()
        .enumerate()
        .rev()
        .max_by_key(|&(_, score)| *score)?;
    (score > 0).then_some(index)
}

#[async_trait]
impl NoteGenerator for RulesGenerator {
    fn name(&self) -> &'static str {
        "rules"
    }

    async fn generate(&self, kind: NoteKind, transcript: &TranscriptInput) -> Result<Note> {
        let bytes: usize = transcript.segments.iter().map(|s| s.text.len()).sum();
        // A long transcript takes long enough to sort (seconds at the size limit in a debug
        // build) that it must not hold up the runtime's other tasks.
        if bytes > INLINE_LIMIT_BYTES
            && bytes <= MAX_TRANSCRIPT_BYTES
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let transcript = transcript.clone();
            let generator = *self;
            return match runtime
                .spawn_blocking(move || generator.generate_note(kind, &transcript))
                .await
            {
                Ok(result) => result,
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                Err(_) => Err(Error::Cancelled),
            };
        }
        self.generate_note(kind, transcript)
    }
}
