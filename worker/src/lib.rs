//! # pg-webhook-worker
//!
//! The sending half of pg_webhook. The extension stores one event per
//! captured row or publish in the producer's transaction and NOTIFYs at
//! commit; this worker:
//!
//! 1. LISTENs on `pg_webhook_wake` (and falls back to a timer);
//! 2. fans out what was committed (one delivery per subscribed endpoint)
//!    and claims due deliveries in batches, in one call
//!    (`webhook._claim_deliveries`: `FOR UPDATE SKIP LOCKED` plus a
//!    lease), committing before any request;
//! 3. signs each one (Standard Webhooks) and POSTs it with the endpoint's
//!    timeout, no redirects, refusing private destinations after DNS;
//! 4. decides success, retry (exponential backoff with jitter) or give-up;
//! 5. records every attempt in batches (`webhook._record_attempts`), moving a
//!    delivery only while it still holds the lease.
//!
//! A worker killed at any point loses nothing: its leases expire and any
//! worker takes the deliveries again (at-least-once; receivers deduplicate on
//! `webhook-id`). Several workers can share one database.
//!
//! Embedding: build a [`Config`] (for example [`Config::for_database`]) and
//! call [`run`] with a cancellation token; or use [`Worker`] to also receive
//! [`WorkerEvent`]s.
#![warn(missing_docs)]

pub mod config;
pub mod db;
pub mod delivery_log;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod guard;
mod inflight;
pub mod listen;
mod maintenance;
pub mod metrics;
mod pacing;
pub mod pgtls;
pub mod queries;
pub mod queue;
pub mod receiver;
mod redact;
pub mod retry;
pub mod run;
mod server;
mod status_page;

pub use config::{Cli, Config, ConfigError};
pub use error::{DbError, Error};
pub use events::WorkerEvent;
pub use run::{run, Worker};
pub use tokio_util::sync::CancellationToken;
