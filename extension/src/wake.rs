//! Waking the workers at commit, at most once per transaction.
//!
//! `NOTIFY` is transactional: PostgreSQL queues it and delivers it only if the
//! transaction commits, so a rolled-back write wakes nobody. PostgreSQL also
//! folds identical notifications of one transaction into one, but every call
//! still costs a lookup; we skip the call entirely after the first one in a
//! (sub)transaction. Every transaction that notifies takes a cluster-wide lock
//! at commit, so this path is kept to one notification per transaction and
//! never one per row.
//!
//! Must not: notify per row, or notify from a transaction that enqueued nothing.

use pgrx::pg_sys;
use pgrx::Spi;
use std::cell::Cell;

/// Queues the wake-up on the channel the worker LISTENs on, `pg_webhook_wake`.
const NOTIFY_SQL: &str = "select pg_catalog.pg_notify('pg_webhook_wake', '')";

thread_local! {
    /// (top-level xid, subtransaction id) of the last notification issued by
    /// this backend. The subtransaction id matters: a notification made inside
    /// a subtransaction that later rolls back is discarded by PostgreSQL, so
    /// the next row in the parent must notify again.
    static LAST_NOTIFIED: Cell<(pg_sys::TransactionId, pg_sys::SubTransactionId)> =
        const { Cell::new((pg_sys::InvalidTransactionId, 0)) };
}

/// Queues `NOTIFY pg_webhook_wake` for this transaction unless already done.
pub(crate) fn at_commit() {
    // SAFETY: plain reads of the current transaction state; we run inside a
    // transaction (called from SQL or a trigger).
    let key = unsafe {
        (
            pg_sys::GetTopTransactionIdIfAny(),
            pg_sys::GetCurrentSubTransactionId(),
        )
    };
    if key.0 != pg_sys::InvalidTransactionId && LAST_NOTIFIED.get() == key {
        return;
    }
    // Once per transaction, so the cost of going through SPI is immaterial.
    Spi::run(NOTIFY_SQL).unwrap_or_else(|e| {
        pgrx::error!("pg_webhook: could not queue the wake-up notification: {e}")
    });
    LAST_NOTIFIED.set(key);
}
