//! The `pg_webhook` PostgreSQL extension: tables, public SQL API, the
//! row-change capture trigger and the wake-up at commit.
//!
//! Most of the extension is hand-written SQL in `sql/install/` (state and
//! invariants belong to SQL); Rust is used where it is genuinely needed: the
//! capture trigger's hot path, signing (shared with the worker through
//! `pg_webhook_protocol`), URL checks, random secrets and GUCs.
//! The extension never does network I/O.

// `Result<_, ErrorReport>` is how pgrx reports an error with its own
// SQLSTATE (see error.rs); the report is large, and only built on the error path.
#![allow(clippy::result_large_err)]

use pgrx::prelude::*;

mod api;
mod error;
mod gucs;
mod trigger;
mod wake;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!(
    "../../sql/install/01_tables.sql",
    name = "tables",
    bootstrap
);
extension_sql_file!(
    "../../sql/install/02_internal.sql",
    name = "internal",
    requires = ["tables"]
);
extension_sql_file!(
    "../../sql/install/03_api.sql",
    name = "api",
    requires = ["internal"]
);
extension_sql_file!("../../sql/install/04_grants.sql", name = "grants", finalize);

/// Called by PostgreSQL when the library is loaded into a backend.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    wake::init();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    /// One-off set-up when the test framework starts.
    pub fn setup(_options: Vec<&str>) {}

    /// postgresql.conf settings for the test cluster.
    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
