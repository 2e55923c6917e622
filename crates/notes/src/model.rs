use std::fmt;

use serde::{Deserialize, Serialize};

use crate::PhiText;

/// The text of a section the transcript gave nothing for. Generators write this rather than
/// leave a section out or fill it with content of their own.
pub const NO_FINDINGS: &str = "No findings documented.";

/// Who spoke a segment, when the recogniser or the device knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    /// The clinician or EMS provider.
    Clinician,
    /// The patient.
    Patient,
    /// Anyone else (family, bystander, interpreter).
    Other,
}

impl Speaker {
    fn label(self) -> &'static str {
        match self {
            Speaker::Clinician => "Clinician",
            Speaker::Patient => "Patient",
            Speaker::Other => "Other",
        }
    }
}

impl fmt::Display for Speaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One recognised stretch of speech.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSegment {
    /// Start, in milliseconds from the start of the recording.
    pub start_ms: u64,
    /// End, in milliseconds from the start of the recording.
    pub end_ms: u64,
    /// What was said.
    pub text: PhiText,
    /// Who said it, if known.
    #[serde(default)]
    pub speaker: Option<Speaker>,
}

/// A transcript, as the generators take it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptInput {
    /// The segments, in spoken order.
    pub segments: Vec<InputSegment>,
}

/// The kind of note to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// Subjective, Objective, Assessment, Plan (clinic visits).
    Soap,
    /// Dispatch, Response, Arrival, Assessment, Treatment, Transport (EMS narratives).
    Draatt,
}

impl NoteKind {
    /// The note's sections, in the order the note lists them.
    pub fn headings(self) -> &'static [SectionHeading] {
        use SectionHeading::*;
        match self {
            NoteKind::Soap => &[Subjective, Objective, Assessment, Plan],
            NoteKind::Draatt => &[
                Dispatch, Response, Arrival, Assessment, Treatment, Transport,
            ],
        }
    }

    /// The kind's display name (`SOAP`, `DRAATT`).
    pub fn title(self) -> &'static str {
        match self {
            NoteKind::Soap => "SOAP",
            NoteKind::Draatt => "DRAATT",
        }
    }
}

impl fmt::Display for NoteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// A section of a SOAP or DRAATT note. `Assessment` belongs to both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionHeading {
    /// SOAP: what the patient reports.
    Subjective,
    /// SOAP: what was measured or examined.
    Objective,
    /// SOAP and DRAATT: the clinical assessment.
    Assessment,
    /// SOAP: what will be done.
    Plan,
    /// DRAATT: how the call came in.
    Dispatch,
    /// DRAATT: the unit's response to the scene.
    Response,
    /// DRAATT: what was found on arrival.
    Arrival,
    /// DRAATT: what was done for the patient.
    Treatment,
    /// DRAATT: transport and transfer of care.
    Transport,
}

impl SectionHeading {
    /// The heading as printed in a note (`Subjective`).
    pub fn title(self) -> &'static str {
        match self {
            SectionHeading::Subjective => "Subjective",
            SectionHeading::Objective => "Objective",
            SectionHeading::Assessment => "Assessment",
            SectionHeading::Plan => "Plan",
            SectionHeading::Dispatch => "Dispatch",
            SectionHeading::Response => "Response",
            SectionHeading::Arrival => "Arrival",
            SectionHeading::Treatment => "Treatment",
            SectionHeading::Transport => "Transport",
        }
    }
}

impl fmt::Display for SectionHeading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.title())
    }
}

/// One section of a note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteSection {
    /// Which section.
    pub heading: SectionHeading,
    /// Its text ([`NO_FINDINGS`] when the transcript gave nothing for it).
    pub text: PhiText,
    /// Indexes into [`TranscriptInput::segments`] of the segments the text came from,
    /// ascending, without duplicates.
    #[serde(default)]
    pub sources: Vec<usize>,
}

/// A generated note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    /// SOAP or DRAATT.
    pub kind: NoteKind,
    /// The generator's name ([`crate::NoteGenerator::name`]).
    pub generator: String,
    /// The model that wrote it, for model-based generators.
    #[serde(default)]
    pub model: Option<String>,
    /// The sections, one per heading of `kind`, in the kind's order.
    pub sections: Vec<NoteSection>,
    /// How many transcript sentences the note does not use (small talk and sentences the
    /// rules could not place). A count, never their text; `None` when the generator cannot
    /// tell (a language model).
    #[serde(default)]
    pub unused_sentences: Option<usize>,
}

impl Note {
    /// The section with `heading`, if the note has it.
    pub fn section(&self, heading: SectionHeading) -> Option<&NoteSection> {
        self.sections.iter().find(|s| s.heading == heading)
    }

    /// The whole note as plain text: a title line, then each heading followed by its text,
    /// and, when known, how many transcript sentences were not used.
    pub fn render_text(&self) -> PhiText {
        let mut out = String::new();
        out.push_str(self.kind.title());
        out.push_str(" note\n");
        for section in &self.sections {
            out.push('\n');
            out.push_str(section.heading.title());
            out.push_str(":\n");
            out.push_str(section.text.expose().trim_end());
            out.push('\n');
        }
        if let Some(unused) = self.unused_sentences {
            out.push('\n');
            out.push_str(&match unused {
                1 => "1 sentence of the transcript was not used.\n".to_owned(),
                n => format!("{n} sentences of the transcript were not used.\n"),
            });
        }
        PhiText::new(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic_note() -> Note {
        Note {
            kind: NoteKind::Soap,
            generator: "rules".into(),
            model: None,
            sections: NoteKind::Soap
                .headings()
                .iter()
                .map(|&heading| NoteSection {
                    heading,
                    text: PhiText::new(if heading == SectionHeading::Subjective {
                        "Synthetic patient reports a cough."
                    } else {
                        NO_FINDINGS
                    }),
                    sources: if heading == SectionHeading::Subjective {
                        vec![0]
                    } else {
                        vec![]
                    },
                })
                .collect(),
            unused_sentences: Some(2),
        }
    }

    #[test]
    fn renders_headings_text_and_unused_count() {
        let text = synthetic_note().render_text();
        assert_eq!(
            text.expose(),
            "SOAP note\n\nSubjective:\nSynthetic patient reports a cough.\n\nObjective:\n\
             No findings documented.\n\nAssessment:\nNo findings documented.\n\nPlan:\n\
             No findings documented.\n\n2 sentences of the transcript were not used.\n"
        );
    }

    #[test]
    fn round_trips_through_json_and_debug_redacts() {
        let note = synthetic_note();
        let json = serde_json::to_string(&note).unwrap();
        assert!(json.contains(r#""heading":"subjective""#));
        assert!(json.contains(r#""text":"Synthetic patient reports a cough.""#));
        assert!(json.contains(r#""kind":"soap""#));
        let back: Note = serde_json::from_str(&json).unwrap();
        assert_eq!(back, note);
        assert!(!format!("{note:?}").contains("cough"));

        let segment = InputSegment {
            start_ms: 0,
            end_ms: 10,
            text: PhiText::new("synthetic secret words"),
            speaker: Some(Speaker::Patient),
        };
        let input = TranscriptInput {
            segments: vec![segment],
        };
        assert!(!format!("{input:?}").contains("secret"));
        let json = serde_json::to_string(&input).unwrap();
        assert!(json.contains(r#""text":"synthetic secret words""#));
        assert!(json.contains(r#""speaker":"patient""#));
    }
}
