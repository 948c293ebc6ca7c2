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
use std::cell::Cell;

/// The channel the worker LISTENs on.
const CHANNEL: &std::ffi::CStr = c"pg_webhook_wake";

// commands/async.h, which pgrx's bindings do not include.
unsafe extern "C-unwind" {
    fn Async_Notify(channel: *const std::ffi::c_char, payload: *const std::ffi::c_char);
}

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
    // SAFETY: both arguments are NUL-terminated static strings; we are in a
    // transaction, as NOTIFY requires. Called directly rather than through
    // SPI: with one row per transaction, parsing `select pg_notify(…)` would
    // be paid on every captured row.
    // The guard turns a PostgreSQL ERROR raised inside into a Rust panic that
    // pgrx re-raises, instead of a longjmp across Rust frames.
    unsafe {
        pg_sys::submodules::ffi::pg_guard_ffi_boundary(|| {
            Async_Notify(CHANNEL.as_ptr(), c"".as_ptr())
        })
    };
    LAST_NOTIFIED.set(key);
}
