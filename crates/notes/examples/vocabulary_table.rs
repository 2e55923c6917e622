//! Prints the rules generator's vocabulary as the Markdown block of `docs/notes.md`
//! (between the `vocabulary:begin` and `vocabulary:end` markers).

fn main() {
    print!("{}", phivault_notes::vocabulary_table_markdown());
}
