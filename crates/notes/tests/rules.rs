//! The rules generator on synthetic dialogues, hostile input, and a property: whatever the
//! input, a note only ever contains the transcript's own sentences.

use std::time::Instant;

use phivault_notes::{
    InputSegment, NO_FINDINGS, Note, NoteGenerator, NoteKind, PhiText, RulesGenerator,
    SectionHeading, Speaker, TranscriptInput,
};
use proptest::prelude::*;

fn transcript(lines: &[(Option<Speaker>, &str)]) -> TranscriptInput {
    TranscriptInput {
        segments: lines
            .iter()
            .enumerate()
            .map(|(i, (speaker, text))| InputSegment {
                start_ms: i as u64 * 1000,
                end_ms: i as u64 * 1000 + 900,
                text: PhiText::new(*text),
                speaker: *speaker,
            })
            .collect(),
    }
}

fn lines(note: &Note, heading: SectionHeading) -> Vec<String> {
    note.section(heading)
        .unwrap()
        .text
        .expose()
        .lines()
        .map(str::to_owned)
        .collect()
}

const C: Option<Speaker> = Some(Speaker::Clinician);
const P: Option<Speaker> = Some(Speaker::Patient);

/// A SYNTHETIC clinic visit; no real person.
fn synthetic_clinic_visit() -> TranscriptInput {
    transcript(&[
        (C, "Good morning, I'm Doctor Synthetic. How are you today?"),
        (
            P,
            "Not great. I have had a sore throat and a fever for three days.",
        ),
        (P, "It hurts when I swallow. I also have a headache."),
        (P, "My daughter had the same thing last month."),
        (P, "I take lisinopril 10 mg daily."),
        (C, "The patient denies chest pain and shortness of breath."),
        (
            C,
            "Temperature is 101.2 degrees and blood pressure is 118 over 76.",
        ),
        (
            C,
            "On exam the throat is red with swollen tonsils, lungs clear.",
        ),
        (
            C,
            "This is likely strep throat, consistent with the rapid test.",
        ),
        (
            C,
            "I will prescribe amoxicillin 500 mg twice a day for ten days.",
        ),
        (
            C,
            "Return if the fever gets worse, and follow up in one week.",
        ),
        (P, "Thank you, doctor."),
        (C, "You're welcome, take care."),
    ])
}

#[tokio::test]
async fn synthetic_clinic_visit_becomes_a_soap_note() {
    let note = RulesGenerator::new()
        .generate(NoteKind::Soap, &synthetic_clinic_visit())
        .await
        .unwrap();
    assert_eq!(note.kind, NoteKind::Soap);
    assert_eq!(note.generator, "rules");
    assert_eq!(note.model, None);
    let headings: Vec<_> = note.sections.iter().map(|s| s.heading).collect();
    assert_eq!(headings, NoteKind::Soap.headings());

    assert_eq!(
        lines(&note, SectionHeading::Subjective),
        [
            "I have had a sore throat and a fever for three days.",
            "It hurts when I swallow.",
            "I also have a headache.",
            // No listed word, but a patient's own account of four or more words.
            "My daughter had the same thing last month.",
            // Plan (mg, daily) and Subjective (i take + patient nudge) tie at 3: note order.
            "I take lisinopril 10 mg daily.",
            // Negation is kept as said and does not move the sentence.
            "The patient denies chest pain and shortness of breath.",
        ]
    );
    assert_eq!(
        lines(&note, SectionHeading::Objective),
        [
            "Temperature is 101.2 degrees and blood pressure is 118 over 76.",
            "On exam the throat is red with swollen tonsils, lungs clear.",
        ]
    );
    assert_eq!(
        lines(&note, SectionHeading::Assessment),
        ["This is likely strep throat, consistent with the rapid test."]
    );
    assert_eq!(
        lines(&note, SectionHeading::Plan),
        [
            "I will prescribe amoxicillin 500 mg twice a day for ten days.",
            "Return if the fever gets worse, and follow up in one week.",
        ]
    );
    assert_eq!(
        note.section(SectionHeading::Subjective).unwrap().sources,
        [1, 2, 3, 4, 5]
    );
    assert_eq!(note.section(SectionHeading::Plan).unwrap().sources, [9, 10]);
    // Greeting, "How are you today?", "Not great.", two thank-you/goodbyes.
    assert_eq!(note.unused_sentences, Some(5));
    let text = note.render_text();
    assert!(
        text.expose()
            .contains("5 sentences of the transcript were not used.")
    );
    assert!(!text.expose().contains("Good morning"));
}

/// A SYNTHETIC EMS radio narrative; no real person or incident.
fn synthetic_ems_narrative() -> TranscriptInput {
    transcript(&[
        (
            C,
            "Medic 12 was dispatched at 14:02 for a priority one call for chest pain.",
        ),
        (C, "We responded lights and sirens."),
        (
            C,
            "En route to the scene, dispatch advised the patient is conscious.",
        ),
        (
            C,
            "Arrived on scene at 14:10 and found the patient sitting in a chair.",
        ),
        (
            C,
            "Patient is a synthetic 64 year old male who complains of crushing chest pain radiating to the left arm.",
        ),
        (
            C,
            "He is alert and oriented times four, GCS 15. Blood pressure 160/94, heart rate 102, SpO2 93 percent.",
        ),
        (P, "It feels like an elephant on my chest."),
        (C, "He denies shortness of breath."),
        (
            C,
            "Administered 324 mg aspirin by mouth and placed him on oxygen at 4 liters by nasal cannula.",
        ),
        (C, "Established IV access in the left arm."),
        (
            C,
            "Transported to General Hospital emergency department without lights.",
        ),
        (
            C,
            "Care was transferred to the charge nurse with a verbal report.",
        ),
        (C, "Medic 12 clear."),
    ])
}

#[tokio::test]
async fn synthetic_ems_narrative_becomes_a_draatt_note() {
    let note = RulesGenerator::new()
        .generate(NoteKind::Draatt, &synthetic_ems_narrative())
        .await
        .unwrap();
    let headings: Vec<_> = note.sections.iter().map(|s| s.heading).collect();
    assert_eq!(headings, NoteKind::Draatt.headings());
    assert_eq!(
        lines(&note, SectionHeading::Dispatch),
        ["Medic 12 was dispatched at 14:02 for a priority one call for chest pain."]
    );
    assert_eq!(
        lines(&note, SectionHeading::Response),
        [
            "We responded lights and sirens.",
            // "en route" + "to the scene" outweigh "en route to" (Transport).
            "En route to the scene, dispatch advised the patient is conscious.",
        ]
    );
    assert_eq!(
        lines(&note, SectionHeading::Arrival),
        ["Arrived on scene at 14:10 and found the patient sitting in a chair."]
    );
    assert_eq!(
        lines(&note, SectionHeading::Assessment),
        [
            "Patient is a synthetic 64 year old male who complains of crushing chest pain radiating to the left arm.",
            "He is alert and oriented times four, GCS 15.",
            "Blood pressure 160/94, heart rate 102, SpO2 93 percent.",
            "It feels like an elephant on my chest.",
            "He denies shortness of breath.",
        ]
    );
    assert_eq!(
        lines(&note, SectionHeading::Treatment),
        [
            "Administered 324 mg aspirin by mouth and placed him on oxygen at 4 liters by nasal cannula.",
            "Established IV access in the left arm.",
        ]
    );
    assert_eq!(
        lines(&note, SectionHeading::Transport),
        [
            "Transported to General Hospital emergency department without lights.",
            "Care was transferred to the charge nurse with a verbal report.",
        ]
    );
    assert_eq!(
        note.section(SectionHeading::Assessment).unwrap().sources,
        [4, 5, 6, 7]
    );
    assert_eq!(note.unused_sentences, Some(1));
}

#[tokio::test]
async fn unpunctuated_segments_are_sorted_one_sentence_each() {
    // SYNTHETIC, as a recogniser without punctuation would emit it.
    let input = transcript(&[
        (None, "patient reports knee pain for two weeks"),
        (None, "on exam the knee is tender with mild swelling"),
        (None, "likely a sprain"),
        (None, "start ibuprofen 400 mg three times a day"),
        (None, "okay"),
    ]);
    let note = RulesGenerator::new()
        .generate(NoteKind::Soap, &input)
        .await
        .unwrap();
    assert_eq!(
        lines(&note, SectionHeading::Subjective),
        ["Patient reports knee pain for two weeks"]
    );
    assert_eq!(
        lines(&note, SectionHeading::Objective),
        ["On exam the knee is tender with mild swelling"]
    );
    assert_eq!(
        lines(&note, SectionHeading::Assessment),
        ["Likely a sprain"]
    );
    assert_eq!(
        lines(&note, SectionHeading::Plan),
        ["Start ibuprofen 400 mg three times a day"]
    );
    assert_eq!(note.unused_sentences, Some(1));
}

#[tokio::test]
async fn sections_without_content_say_so_and_invent_nothing() {
    let input = transcript(&[(P, "I have had a rash on my arm for two days.")]);
    let note = RulesGenerator::new()
        .generate(NoteKind::Soap, &input)
        .await
        .unwrap();
    assert_eq!(
        lines(&note, SectionHeading::Subjective),
        ["I have had a rash on my arm for two days."]
    );
    for heading in [
        SectionHeading::Objective,
        SectionHeading::Assessment,
        SectionHeading::Plan,
    ] {
        let section = note.section(heading).unwrap();
        assert_eq!(section.text.expose(), NO_FINDINGS);
        assert!(section.sources.is_empty());
    }
}

#[tokio::test]
async fn empty_transcripts_are_refused() {
    let generator = RulesGenerator::new();
    for input in [
        TranscriptInput::default(),
        transcript(&[(None, ""), (P, "   \n\t ")]),
        transcript(&[(None, "?!... —"), (C, ".")]),
    ] {
        let error = generator
            .generate(NoteKind::Soap, &input)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "empty_transcript");
        assert_eq!(error.to_string(), "the transcript is empty");
    }
}

#[tokio::test]
async fn oversized_transcripts_are_refused() {
    let big = "pain ".repeat(phivault_notes::MAX_TRANSCRIPT_BYTES / 5 + 1);
    let input = transcript(&[(None, big.as_str())]);
    let error = RulesGenerator::new()
        .generate(NoteKind::Soap, &input)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "transcript_too_large");
}

fn assert_bounded(note: &Note, input: &TranscriptInput) {
    let input_bytes: usize = input.segments.iter().map(|s| s.text.len()).sum();
    let rendered = note.render_text();
    // A sentence has at least one byte and gains at most a line break and one byte of
    // capitalisation; headings and "No findings documented." are a constant.
    assert!(
        rendered.len() <= 3 * input_bytes + 1024,
        "{} > bound",
        rendered.len()
    );
    for section in &note.sections {
        assert!(
            !section
                .text
                .expose()
                .chars()
                .any(|c| c != '\n' && c.is_control()),
            "control character in a section"
        );
        assert!(
            !section
                .text
                .expose()
                .contains(['\u{202E}', '\u{202D}', '\u{2066}'])
        );
    }
}

#[tokio::test]
async fn hostile_input_neither_panics_nor_grows() {
    let generator = RulesGenerator::new();
    let long_word_salad: String = "the patient reports pain and we will follow up, ".repeat(2_100);
    assert!(long_word_salad.len() > 100_000);
    let long_no_spaces = "x".repeat(100_000);
    let controls = "\u{0}\u{7}\u{1b}[31m chest pain\u{8}\u{7f} in the \u{85}morning\u{9f}. ok\r\n";
    let bidi = "\u{202E}lungs clear\u{202C} \u{2067}\u{200F}blood pressure 120 over 80\u{200F}";
    let cases: Vec<TranscriptInput> = vec![
        transcript(&[(P, long_word_salad.as_str())]),
        transcript(&[(None, long_no_spaces.as_str())]),
        transcript(&[(C, controls)]),
        transcript(&[(C, bidi)]),
        transcript(&[(None, "!!!???...,,,;;;"), (P, "... ? !")]),
        transcript(&[(None, &".".repeat(100_000))]),
        TranscriptInput {
            segments: (0..10_000)
                .map(|i| InputSegment {
                    start_ms: i,
                    end_ms: i + 1,
                    text: PhiText::new(match i % 4 {
                        0 => "blood pressure 120 over 80",
                        1 => "hello. thank you!",
                        2 => "we will prescribe 5 mg. likely a cold",
                        _ => "\u{202E}???",
                    }),
                    speaker: [None, P, C][i as usize % 3],
                })
                .collect(),
        },
    ];
    for input in &cases {
        let started = Instant::now();
        match generator.generate(NoteKind::Soap, input).await {
            Ok(note) => assert_bounded(&note, input),
            Err(error) => assert_eq!(error.code(), "empty_transcript"),
        }
        match generator.generate(NoteKind::Draatt, input).await {
            Ok(note) => assert_bounded(&note, input),
            Err(error) => assert_eq!(error.code(), "empty_transcript"),
        }
        eprintln!(
            "hostile case of {} segments, {} bytes: both notes in {:?}",
            input.segments.len(),
            input.segments.iter().map(|s| s.text.len()).sum::<usize>(),
            started.elapsed()
        );
    }
    let note = generator.generate(NoteKind::Soap, &cases[2]).await.unwrap();
    assert_eq!(
        lines(&note, SectionHeading::Subjective),
        ["[31m chest pain in the morning."]
    );
    let note = generator.generate(NoteKind::Soap, &cases[3]).await.unwrap();
    assert_eq!(
        lines(&note, SectionHeading::Objective),
        ["Lungs clear \u{200F}blood pressure 120 over 80\u{200F}"]
    );
    let note = generator.generate(NoteKind::Soap, &cases[6]).await.unwrap();
    assert_eq!(
        note.section(SectionHeading::Objective)
            .unwrap()
            .sources
            .len(),
        2_500
    );
    assert_eq!(note.unused_sentences, Some(5_000));
}

#[tokio::test]
async fn same_input_gives_the_same_note() {
    let generator = RulesGenerator::new();
    for (kind, input) in [
        (NoteKind::Soap, synthetic_clinic_visit()),
        (NoteKind::Draatt, synthetic_ems_narrative()),
        (NoteKind::Draatt, synthetic_clinic_visit()),
    ] {
        let first = generator.generate(kind, &input).await.unwrap();
        let second = RulesGenerator::new()
            .generate(kind, &input.clone())
            .await
            .unwrap();
        assert_eq!(first, second);
        assert_eq!(
            serde_json::to_string(&first).unwrap(),
            serde_json::to_string(&second).unwrap()
        );
    }
}

/// The transcript text as the generator may quote it: bidi overrides and control characters
/// removed, whitespace runs collapsed to single spaces.
fn normalised(text: &str) -> String {
    let mut out = String::new();
    let mut space = false;
    for c in text.chars() {
        if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            continue;
        }
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() {
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

/// Whether `line` occurs in `text`, allowing only its first letter to have been capitalised.
fn quotes(text: &str, line: &str) -> bool {
    let mut chars = line.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let rest = chars.as_str();
    text.match_indices(rest).any(|(at, _)| {
        text[..at].chars().next_back().is_some_and(|c| {
            c == first || (c.to_uppercase().count() == 1 && c.to_uppercase().next() == Some(first))
        })
    })
}

fn segment_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("pain".to_owned()),
        Just("blood pressure 120 over 80".to_owned()),
        Just("likely".to_owned()),
        Just("we will start 5 mg".to_owned()),
        Just("en route to the hospital".to_owned()),
        Just("hello".to_owned()),
        Just("thank you".to_owned()),
        Just("denies".to_owned()),
        Just("Dr.".to_owned()),
        Just("98.6".to_owned()),
        "[.?!,;…\"' ]{1,3}",
        "[ \t\n\u{0}\u{202E}\u{200F}]{1,2}",
        any::<String>().prop_map(|s| s.chars().take(12).collect()),
        "[a-zß-ÿ]{1,8}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.join(" "))
}

fn speaker() -> impl Strategy<Value = Option<Speaker>> {
    prop_oneof![Just(None), Just(C), Just(P), Just(Some(Speaker::Other))]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn notes_hold_only_the_transcripts_own_sentences(
        segments in prop::collection::vec((segment_text(), speaker()), 0..8),
        draatt in any::<bool>(),
    ) {
        let input = TranscriptInput {
            segments: segments
                .into_iter()
                .enumerate()
                .map(|(i, (text, speaker))| InputSegment {
                    start_ms: i as u64,
                    end_ms: i as u64,
                    text: PhiText::new(text),
                    speaker,
                })
                .collect(),
        };
        let kind = if draatt { NoteKind::Draatt } else { NoteKind::Soap };
        match RulesGenerator::new().generate_note(kind, &input) {
            Err(error) => prop_assert_eq!(error.code(), "empty_transcript"),
            Ok(note) => {
                let headings: Vec<_> = note.sections.iter().map(|s| s.heading).collect();
                prop_assert_eq!(headings, kind.headings());
                let mut used = 0;
                for section in &note.sections {
                    let text = section.text.expose();
                    if section.sources.is_empty() {
                        prop_assert_eq!(text, NO_FINDINGS);
                        continue;
                    }
                    for line in text.lines() {
                        used += 1;
                        prop_assert!(!line.is_empty());
                        let quoted = section.sources.iter().any(|&s| {
                            quotes(&normalised(input.segments[s].text.expose()), line)
                        });
                        prop_assert!(quoted, "a line of {:?} is not a sentence of its sources", section.heading);
                    }
                }
                prop_assert!(used + note.unused_sentences.unwrap() >= 1);
            }
        }
    }
}

#[tokio::test]
async fn the_documented_examples_hold() {
    // SYNTHETIC sentences quoted in docs/notes.md.
    let input = transcript(&[
        (P, "Thank you, doctor."),
        (P, "Thanks, it hurts more today."),
        (P, "My blood pressure at home was 130 over 85."),
        (C, "Any chest pain?"),
        (P, "Okay."),
    ]);
    let note = RulesGenerator::new()
        .generate(NoteKind::Soap, &input)
        .await
        .unwrap();
    assert_eq!(
        lines(&note, SectionHeading::Subjective),
        ["Thanks, it hurts more today.", "Any chest pain?"]
    );
    assert_eq!(
        lines(&note, SectionHeading::Objective),
        ["My blood pressure at home was 130 over 85."]
    );
    assert_eq!(note.unused_sentences, Some(2));
}

#[tokio::test]
async fn long_transcripts_give_the_same_note_off_the_runtime() {
    // SYNTHETIC; over the size that is sorted on a blocking thread.
    let unit = "patient reports pain for two days. lungs clear. likely a strain. we will follow up. thanks. ";
    let input = TranscriptInput {
        segments: (0..40)
            .map(|i| InputSegment {
                start_ms: i,
                end_ms: i + 1,
                text: PhiText::new(unit.repeat(100)),
                speaker: None,
            })
            .collect(),
    };
    assert!(input.segments.iter().map(|s| s.text.len()).sum::<usize>() > 256 * 1024);
    let generator = RulesGenerator::new();
    let through_trait = generator.generate(NoteKind::Soap, &input).await.unwrap();
    assert_eq!(
        through_trait,
        generator.generate_note(NoteKind::Soap, &input).unwrap()
    );
    assert_eq!(through_trait.unused_sentences, Some(4_000));
    assert_eq!(lines(&through_trait, SectionHeading::Plan).len(), 4_000);
}
