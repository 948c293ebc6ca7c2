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
mod event_row;
mod generated;
mod gucs;
mod histogram;
mod legacy;
mod namespace;
mod payload;
mod privilege;
mod relation;
mod slots;
mod store;
mod trigger;
mod vxid;
mod wake;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// What `#[pg_guard] extern "C-unwind" { … }` blocks expand to call
/// (`crate::ffi::pg_guard_ffi_boundary`): the wrapper that turns an ERROR
/// raised by a PostgreSQL function we declare ourselves (event_row.rs,
/// wake.rs) into a Rust panic that pgrx re-raises.
mod ffi {
    pub(crate) use pgrx::pg_sys::ffi::pg_guard_ffi_boundary;
}

::pgrx::pg_module_magic!(name, version);

// The install script, in dependency order. SQL-language functions and
// views are checked when created, so the Rust functions they call are
// listed where they are needed; plpgsql bodies are resolved when run.
extension_sql_file!(
    "../../sql/install/01_schema.sql",
    name = "schema",
    bootstrap
);
extension_sql_file!(
    "../../sql/install/02_endpoints.sql",
    name = "endpoints",
    requires = ["schema"]
);
extension_sql_file!(
    "../../sql/install/03_log.sql",
    name = "log",
    requires = ["endpoints"]
);
extension_sql_file!(
    "../../sql/install/04_checks.sql",
    name = "checks",
    requires = ["log"]
);
extension_sql_file!(
    "../../sql/install/05_capture.sql",
    name = "capture",
    requires = ["checks", vxid::webhook::vxid]
);
extension_sql_file!(
    "../../sql/install/06_fanout.sql",
    name = "fanout",
    requires = ["capture"]
);
extension_sql_file!(
    "../../sql/install/07_worker.sql",
    name = "worker",
    requires = [
        "fanout",
        histogram::webhook::hist_add,
        histogram::webhook::hist_acc
    ]
);
extension_sql_file!(
    "../../sql/install/08_retention.sql",
    name = "retention",
    requires = ["worker"]
);
extension_sql_file!(
    "../../sql/install/09_endpoints_api.sql",
    name = "endpoints_api",
    requires = ["retention"]
);
extension_sql_file!(
    "../../sql/install/10_events_api.sql",
    name = "events_api",
    requires = ["endpoints_api"]
);
extension_sql_file!(
    "../../sql/install/11_views.sql",
    name = "views",
    requires = ["events_api", trigger::_capture]
);
extension_sql_file!(
    "../../sql/install/12_cluster.sql",
    name = "cluster",
    requires = ["views"]
);
extension_sql_file!(
    "../../sql/install/13_filters.sql",
    name = "filters",
    requires = ["cluster"]
);
extension_sql_file!(
    "../../sql/install/14_backfill.sql",
    name = "backfill",
    requires = ["filters"]
);
extension_sql_file!(
    "../../sql/install/15_ordering.sql",
    name = "ordering",
    requires = ["backfill"]
);
extension_sql_file!(
    "../../sql/install/16_invariants.sql",
    name = "invariants",
    requires = ["ordering"]
);
extension_sql_file!("../../sql/install/17_grants.sql", name = "grants", finalize);

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
