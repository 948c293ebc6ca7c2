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
//!
//! ## Layers
//!
//! Each layer uses only those below it (`tests/layers.rs` checks that the
//! module graph drawn from the `use` lines has no cycle):
//!
//! - leaves, used by all: [`claim`] (the data that crosses layers),
//!   [`events`], [`metrics`], [`retry`] (the policy), `text`;
//! - [`db`]: connections, SQL, claiming, recording, LISTEN;
//! - [`config`]: every setting, once (uses `db` to read connection strings);
//! - [`http`]: signing and sending (uses `config`);
//! - [`run`]: the loop, pacing, maintenance schedule (uses all of the above);
//! - `serve`: metrics, health and the status page (uses `db`, started by `run`).
//!
//! [`receiver`] (`pg-webhook-worker listen`) stands apart: it uses none of them.
#![warn(missing_docs)]

pub mod claim;
pub mod config;
pub mod db;
pub mod events;
pub mod http;
pub mod metrics;
pub mod receiver;
pub mod retry;
pub mod run;
mod serve;
mod text;

pub use config::{Config, ConfigError};
pub use db::error::DbError;
pub use events::WorkerEvent;
pub use run::error::Error;
pub use run::worker::{run, Worker};
pub use tokio_util::sync::CancellationToken;
