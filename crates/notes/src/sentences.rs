//! Splitting a transcript into sentences, and the only changes the generators make to
//! transcript text: whitespace runs become one space, control characters (NUL, escape,
//! ...) and bidi overrides are removed, the first letter is capitalised.

use crate::{Speaker, TranscriptInput};

/// One sentence of the transcript, already normalised.
pub(crate) struct Sentence {
    /// Index of the segment it came from.
    pub segment: usize,
    pub speaker: Option<Speaker>,
    pub text: String,
}

/// Words after which a full stop does not end a sentence ("Dr. Synthetic", "e.g. this").
const ABBREVIATIONS: &[&str] = &[
    "dr", "mr", "mrs", "ms", "prof", "st", "vs", "approx", "e.g", "i.e",
];

fn is_terminator(c: char) -> bool {
    matches!(
        c,
        '.' | '?' | '!' | '…' | '。' | '？' | '！' | '‼' | '⁇' | '⁈' | '⁉'
    )
}

/// Characters that stay with the sentence they close (`"Stop!" he said`).
fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '»')
}

/// Bidirectional embeddings, overrides and isolates: an unbalanced one reorders everything
/// displayed after it (including other sections of the note), so they are removed.
/// Plain direction marks (U+200E, U+200F) are harmless and stay.
pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Splits every segment into sentences. Every segment with a word in it yields at least
/// one sentence, because recognisers often emit no punctuation at all; pieces without a
/// letter or digit (stray punctuation) are not sentences.
pub(crate) fn split(transcript: &TranscriptInput) -> Vec<Sentence> {
    let mut out = Vec::new();
    for (index, segment) in transcript.segments.iter().enumerate() {
        for piece in split_text(segment.text.expose()) {
            if let Some(text) = normalise(piece) {
                out.push(Sentence {
                    segment: index,
                    speaker: segment.speaker,
                    text,
                });
            }
        }
    }
    out
}

/// The sentence pieces of one segment's text, as slices of it.
fn split_text(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let (_, c) = chars[i];
        if is_terminator(c) && ends_sentence(text, &chars, i) {
            let mut j = i + 1;
            while j < chars.len() && (is_terminator(chars[j].1) || is_closer(chars[j].1)) {
                j += 1;
            }
            let end = chars.get(j).map_or(text.len(), |&(at, _)| at);
            pieces.push(&text[start..end]);
            start = end;
            i = j;
        } else {
            i += 1;
        }
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Whether the terminator at `chars[i]` ends a sentence. A full stop does only when
/// followed by a space, a closer, another terminator or the end (so `98.6`, `1.5mg` and
/// `example.org` stay whole), and not after a known abbreviation.
fn ends_sentence(text: &str, chars: &[(usize, char)], i: usize) -> bool {
    if chars[i].1 != '.' {
        return true;
    }
    if let Some(&(_, next)) = chars.get(i + 1)
        && !(next.is_whitespace() || next.is_control() || is_closer(next) || is_terminator(next))
    {
        return false;
    }
    let word_start = chars[..i]
        .iter()
        .rposition(|&(_, c)| !(c.is_alphanumeric() || c == '.'))
        .map_or(0, |p| p + 1);
    if word_start == i {
        return true;
    }
    let word = text[chars[word_start].0..chars[i].0].to_lowercase();
    !ABBREVIATIONS.contains(&word.as_str())
}

/// Normalises one piece; `None` if it has no letter or digit.
pub(crate) fn normalise(piece: &str) -> Option<String> {
    if !piece.chars().any(char::is_alphanumeric) {
        return None;
    }
    let mut text = String::with_capacity(piece.len());
    let mut pending_space = false;
    for c in piece.chars() {
        if c.is_whitespace() {
            pending_space = !text.is_empty();
            continue;
        }
        if c.is_control() || is_bidi_control(c) {
            continue;
        }
        if pending_space {
            text.push(' ');
            pending_space = false;
        }
        text.push(c);
    }
    Some(capitalise_first(text))
}

/// Upper-cases the first character when that is a one-character change (a letter whose
/// upper case is several characters, like `ß`, is left as written).
fn capitalise_first(text: String) -> String {
    let mut chars = text.chars();
    let Some(first) = chars.next() else {
        return text;
    };
    let mut upper = first.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) if u != first => {
            let mut out = String::with_capacity(text.len() + 2);
            out.push(u);
            out.push_str(chars.as_str());
            out
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InputSegment, PhiText};

    fn sentences_of(texts: &[&str]) -> Vec<String> {
        let transcript = TranscriptInput {
            segments: texts
                .iter()
                .map(|t| InputSegment {
                    start_ms: 0,
                    end_ms: 0,
                    text: PhiText::new(*t),
                    speaker: None,
                })
                .collect(),
        };
        split(&transcript).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_on_terminators_and_keeps_decimals_and_abbreviations() {
        assert_eq!(
            sentences_of(&[
                "Temperature 98.6 today. Any pain? Yes!  Dr. Synthetic saw him, e.g. twice."
            ]),
            [
                "Temperature 98.6 today.",
                "Any pain?",
                "Yes!",
                "Dr. Synthetic saw him, e.g. twice."
            ]
        );
        assert_eq!(
            sentences_of(&["Wait... what?! \"Stop.\" ok"]),
            ["Wait...", "What?!", "\"Stop.\"", "Ok"]
        );
        assert_eq!(
            sentences_of(&["take 1.5mg at example.org now"]),
            ["Take 1.5mg at example.org now"]
        );
    }

    #[test]
    fn unpunctuated_segments_are_one_sentence_each() {
        assert_eq!(
            sentences_of(&["i have had a cough for two days", "lungs clear"]),
            ["I have had a cough for two days", "Lungs clear"]
        );
    }

    #[test]
    fn normalises_whitespace_controls_and_bidi_and_drops_punctuation_only() {
        assert_eq!(
            sentences_of(&[
                "  pa\u{0}in\tin the \u{202E}knee\u{202C}\u{1b}\u{200F}  ",
                "?!...",
                "",
                "..."
            ]),
            ["Pain in the knee\u{200F}"]
        );
        assert_eq!(sentences_of(&["ßig. éa."]), ["ßig.", "Éa."]);
    }
}
