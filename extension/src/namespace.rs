//! The webhook-id namespace of the events this backend writes.
//!
//! A webhook-id is `msg_` + a namespace + the event id (both 16 hex
//! digits). Event ids come from a sequence, and a sequence rewinds with
//! everything else when a database is copied physically: a base backup
//! restored beside its original, a point-in-time recovery, a promoted
//! standby. Both copies then hand out the same ids to different events,
//! and a receiver that deduplicates on webhook-id (as it should) drops the
//! second one. So the namespace is not derived from anything a copy
//! shares with its original: each backend draws 64 random bits from
//! PostgreSQL's strong random source at its first event, and every event
//! stores the namespace it was written under (`webhook.events.id_namespace`),
//! so that the webhook-id is read back, identical, at every retry and
//! replay, whatever happened to the cluster since. Two copies that diverge
//! write their new events from new backends, under namespaces drawn apart.
//!
//! Per backend rather than per event: one draw per connection, and the
//! column costs 8 bytes per event whatever the granularity. (A copy of a
//! *running* machine's memory, backends included, would share them: that
//! is out of reach of anything stored.)
//!
//! Must not: write anything.

use crate::error::raise;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;

thread_local! {
    /// This backend's namespace, drawn at its first event.
    static NAMESPACE: Cell<Option<i64>> = const { Cell::new(None) };
}

/// This backend's namespace (drawn on first use).
pub(crate) fn current() -> i64 {
    if let Some(n) = NAMESPACE.get() {
        return n;
    }
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for writes of its whole length.
    if !unsafe { pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) } {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "pg_webhook: could not read random bytes for the webhook-id namespace",
        );
    }
    let n = i64::from_ne_bytes(bytes);
    NAMESPACE.set(Some(n));
    n
}

#[pgrx::pg_schema]
mod webhook {
    use pgrx::prelude::*;

    /// This backend's webhook-id namespace (see namespace.rs), for the
    /// events webhook_publish and pg_webhook itself write.
    #[pg_extern(volatile, name = "_id_namespace")]
    fn id_namespace() -> i64 {
        super::current()
    }
}
