//! Serving: `/metrics`, `/healthz`, `/readyz` and the status page on
//! `--metrics-addr`. Read-only; reads the database through the database
//! layer, and the worker's counters through the metrics leaf.

pub(crate) mod server;
mod status_page;
