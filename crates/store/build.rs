//! Build script of phivault-store.

// `sqlx::migrate!` embeds the migration files at compile time; a new file alone would
// not make cargo rebuild this crate.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
