//! SQL functions that need Rust: the Standard Webhooks scheme in SQL
//! (`webhook_sign`, `webhook_verify`) and the private helpers the SQL API
//! calls (URL and secret checks, secret generation, the payload limit).
//!
//! Must not: do network I/O (URLs are checked syntactically here; the worker
//! checks resolved addresses), or put a secret into an error message.

use crate::error::Error;
use crate::gucs;
use pg_webhook_protocol::{destination, Secret};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Bytes of randomness in a generated secret (Svix uses 24; the spec allows 24 to 64).
const GENERATED_SECRET_BYTES: usize = 32;

/// The `webhook-signature` value for one secret: `v1,<base64>`.
#[pg_extern(immutable, parallel_safe, name = "webhook_sign")]
fn webhook_sign(secret: &str, msg_id: &str, ts: i64, body: &str) -> Result<String, ErrorReport> {
    let secret = Secret::parse(secret).map_err(Error::from)?;
    Ok(pg_webhook_protocol::sign(
        &secret,
        msg_id,
        ts,
        body.as_bytes(),
    ))
}

/// True when one of the space-separated `v1,` signatures matches. The
/// timestamp is not compared with the clock: that tolerance is the receiver's.
#[pg_extern(immutable, parallel_safe, name = "webhook_verify")]
fn webhook_verify(
    secret: &str,
    msg_id: &str,
    ts: i64,
    body: &str,
    signature: &str,
) -> Result<bool, ErrorReport> {
    let secret = Secret::parse(secret).map_err(Error::from)?;
    Ok(pg_webhook_protocol::verify(
        &secret,
        msg_id,
        ts,
        body.as_bytes(),
        signature,
    ))
}

/// Private helpers, created in the schema `webhook` (the schema itself is
/// created by `sql/install/01_schema.sql`; pgrx's `if not exists` is a no-op).
#[pg_schema]
mod webhook {
    use super::*;

    /// Checks a subscription URL and returns it normalised. Refuses loopback,
    /// private and link-local literals (and `localhost`) unless
    /// `pg_webhook.allow_private_targets` is on.
    #[pg_extern(stable, name = "_check_url")]
    fn check_url(url: Option<&str>) -> Result<String, ErrorReport> {
        let url = url.ok_or(Error::Url(destination::DestinationError::Malformed(
            "the URL is null".into(),
        )))?;
        let parsed =
            destination::check_url(url, gucs::allow_private_targets()).map_err(Error::from)?;
        Ok(parsed.to_string())
    }

    /// The URL as readers see it: scheme, host and port, `/…` for the rest
    /// (see `destination::redacted`). Input is a URL `_check_url` returned.
    #[pg_extern(immutable, parallel_safe, name = "_redact_url")]
    fn redact_url(url: &str) -> Result<String, ErrorReport> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Url(destination::DestinationError::Malformed(e.to_string())))?;
        Ok(destination::redacted(&parsed))
    }

    /// Checks a caller-provided secret and returns it in `whsec_` form.
    #[pg_extern(immutable, name = "_check_secret")]
    fn check_secret(secret: &str) -> Result<String, ErrorReport> {
        Ok(Secret::parse(secret).map_err(Error::from)?.expose_encoded())
    }

    /// A fresh `whsec_` secret from PostgreSQL's strong random source.
    #[pg_extern(volatile, name = "_generate_secret")]
    fn generate_secret() -> Result<String, ErrorReport> {
        let mut key = [0u8; GENERATED_SECRET_BYTES];
        // SAFETY: the buffer is valid for writes of its whole length.
        let ok = unsafe { pg_sys::pg_strong_random(key.as_mut_ptr().cast(), key.len()) };
        if !ok {
            return Err(Error::Random.into());
        }
        let secret = Secret::from_bytes(&key).map_err(Error::from)?;
        Ok(secret.expose_encoded())
    }

    /// Raises 54000 when event data of `bytes` bytes is over
    /// `pg_webhook.max_payload_bytes`; returns true otherwise (so that it can sit
    /// in a WHERE clause: 0.1.0's capture statement, legacy.rs).
    #[pg_extern(stable, parallel_safe, name = "_check_payload_size")]
    fn check_payload_size(bytes: i64) -> Result<bool, ErrorReport> {
        let max = gucs::max_payload_bytes();
        if bytes > i64::from(max) {
            return Err(Error::PayloadTooLarge { bytes, max }.into());
        }
        Ok(true)
    }

    /// True when one of an endpoint's patterns selects the event type. In
    /// Rust because a SQL version cannot be inlined (it needs a sub-select),
    /// and a non-inlined SQL function is parsed and planned again for every
    /// row the fan-out matches (for every captured row, when 0.1.0 matched
    /// in the writer's transaction).
    #[pg_extern(immutable, parallel_safe, strict, name = "_matches")]
    fn matches(patterns: Array<'_, &str>, event_type: &str) -> bool {
        pg_webhook_protocol::patterns::any_matches(patterns.iter().flatten(), event_type)
    }

    /// `pg_webhook.notify_min_interval` in ms, read by the worker at start so
    /// that it lingers long enough after each wake-up.
    #[pg_extern(stable, name = "_notify_min_interval_ms")]
    fn notify_min_interval_ms() -> i32 {
        gucs::notify_min_interval_ms()
    }

    /// `pg_webhook.retention` in seconds, for the retention SQL.
    #[pg_extern(stable, name = "_retention_s")]
    fn retention_s() -> i32 {
        gucs::retention_s()
    }

    /// `pg_webhook.disable_after` in seconds, for the record and maintenance SQL.
    #[pg_extern(stable, name = "_disable_after_s")]
    fn disable_after_s() -> i32 {
        gucs::disable_after_s()
    }

    /// `pg_webhook.failing_after`, for the record SQL.
    #[pg_extern(stable, name = "_failing_after")]
    fn failing_after() -> i32 {
        gucs::failing_after()
    }

    /// Wakes the workers when this transaction commits (once per transaction,
    /// see `wake.rs`).
    #[pg_extern(volatile, name = "_wake")]
    fn wake() {
        crate::wake::at_commit();
    }
}
