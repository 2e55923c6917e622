//! Test support shared by the crates' integration tests. Not part of the product.
//!
//! PostgreSQL tests never skip: without a server they fail, saying how to get one
//! (`scripts/test` provides it), so a green run always includes them.

use phivault_store::scratch::ScratchPg;

/// The superuser URL of the PostgreSQL server under test.
///
/// # Panics
/// If neither `PHIVAULT_TEST_PG_URL` nor `DATABASE_URL` is set.
pub fn pg_admin_url() -> String {
    std::env::var("PHIVAULT_TEST_PG_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .expect("PostgreSQL tests need a server: run scripts/test, or set PHIVAULT_TEST_PG_URL to a superuser URL")
}

/// A fresh migrated scratch database (owner role + serving role), named `phivault_t_*`.
pub async fn scratch_pg() -> ScratchPg {
    ScratchPg::create(&pg_admin_url(), "t")
        .await
        .expect("create scratch PostgreSQL database")
}
