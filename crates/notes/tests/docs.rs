//! `docs/notes.md` shows the rules generator's vocabulary exactly as the code has it.

use std::collections::BTreeSet;

const BEGIN: &str = "<!-- vocabulary:begin -->\n";
const END: &str = "<!-- vocabulary:end -->";

fn documented_block() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/notes.md");
    let doc = std::fs::read_to_string(path).expect("docs/notes.md exists");
    let start = doc
        .find(BEGIN)
        .expect("docs/notes.md has the vocabulary:begin marker")
        + BEGIN.len();
    let end = doc[start..]
        .find(END)
        .expect("docs/notes.md has the vocabulary:end marker")
        + start;
    doc[start..end].to_owned()
}

/// (section, pattern, weight) rows of the Markdown tables in `block`.
fn pattern_rows(block: &str) -> BTreeSet<(String, String, String)> {
    block
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .strip_prefix('|')?
                .strip_suffix('|')?
                .split('|')
                .map(str::trim)
                .collect();
            match cells.as_slice() {
                [section, pattern, weight] if pattern.starts_with('`') => Some((
                    section.to_string(),
                    pattern.trim_matches('`').to_owned(),
                    weight.to_string(),
                )),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn the_doc_lists_exactly_the_codes_vocabulary() {
    let documented = documented_block();
    let generated = phivault_notes::vocabulary_table_markdown();
    let (in_doc, in_code) = (pattern_rows(&documented), pattern_rows(&generated));
    let missing: Vec<_> = in_code.difference(&in_doc).collect();
    let stale: Vec<_> = in_doc.difference(&in_code).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/notes.md lacks {missing:?} and has stale {stale:?}; regenerate its block with \
         `cargo run -q -p phivault-notes --example vocabulary_table`"
    );
    assert!(
        in_code.len() > 200,
        "the vocabulary tables were not recognised"
    );
    assert_eq!(
        documented, generated,
        "docs/notes.md's vocabulary block differs from the code (nudges, number words or order); \
         regenerate it with `cargo run -q -p phivault-notes --example vocabulary_table`"
    );
}
