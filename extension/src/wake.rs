//! Waking the workers at commit: a debounced NOTIFY.
//!
//! `NOTIFY` is transactional: PostgreSQL delivers it only if the transaction
//! commits, so a rolled-back write wakes nobody. But every transaction that
//! notifies takes a cluster-wide lock in its pre-commit step and holds it
//! until its commit is flushed, so notifying writers commit one at a time
//! (measured here at 16 clients: 0.19 of plain INSERT throughput with one
//! NOTIFY per transaction, 0.50 with none at all).
//!
//! So the decision is made once per transaction, at pre-commit, and a backend
//! that notified less than `pg_webhook.notify_min_interval` ago skips it: its
//! previous notification already woke the workers, and a worker keeps looking
//! at the queue for a while after each wake-up ("lingering", see the worker's
//! `run.rs`), long enough to see every commit whose notification was skipped.
//! An idle system therefore still wakes at the first commit, and a busy one
//! sends at most one notification per backend per interval.
//!
//! A prepared (two-phase) transaction may not NOTIFY, and its events become
//! visible only at its COMMIT PREPARED, a statement of a later transaction
//! (and usually of the same session: Citus commits each node's part on the
//! connection that prepared it). So this backend remembers the prepared
//! transactions that wanted a wake-up, and the next transaction it commits
//! after one of them has ended (the COMMIT PREPARED's own) sends the
//! notification. A COMMIT PREPARED run by another session, in which
//! pg_webhook is not loaded, wakes nobody: the workers' poll finds it.
//!
//! Must not: notify per row, or from a transaction that enqueued nothing
//! (beyond the one notification after a prepared transaction that did ends,
//! which a rollback of it makes a harmless look at an unchanged queue).

use crate::gucs;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};

/// The channel the worker LISTENs on.
const CHANNEL: &std::ffi::CStr = c"pg_webhook_wake";

// commands/async.h, which pgrx's bindings do not include. Guarded, so that
// an ERROR it raises unwinds as a Rust panic that pgrx re-raises.
#[pg_guard]
unsafe extern "C-unwind" {
    #[link_name = "Async_Notify"]
    fn async_notify(channel: *const std::ffi::c_char, payload: *const std::ffi::c_char);
}

/// At most this many prepared transactions are remembered per backend (the
/// oldest is forgotten first: its events are then found by the poll).
const MAX_PREPARED: usize = 64;

thread_local! {
    /// This transaction enqueued events (or deliveries) and wants a wake-up at commit.
    static WANTED: Cell<bool> = const { Cell::new(false) };
    /// Transactions this backend prepared while they wanted a wake-up, by
    /// full (64-bit) id.
    static PREPARED: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    /// When this backend last queued a notification (PostgreSQL timestamp, µs).
    static LAST_NOTIFY: Cell<pg_sys::TimestampTz> = const { Cell::new(i64::MIN) };
}

/// Registers the transaction callback; called once per backend from
/// `_PG_init`. One permanent callback and a flag cost less per transaction
/// than registering a callback in every transaction that enqueues.
pub(crate) fn init() {
    // SAFETY: registering a callback with a static lifetime and no argument.
    unsafe { pg_sys::RegisterXactCallback(Some(on_xact_event), std::ptr::null_mut()) };
}

/// Asks for a wake-up when this transaction commits.
pub(crate) fn at_commit() {
    WANTED.set(true);
}

#[pg_guard]
unsafe extern "C-unwind" fn on_xact_event(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => {
            // Both checks run: a prepared transaction that has ended is
            // forgotten whether or not this one notifies.
            let ended = any_prepared_ended();
            if WANTED.get() || ended {
                notify_unless_recent();
            }
        }
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE if WANTED.get() => remember_prepared(),
        // Every end of a transaction clears the request.
        pg_sys::XactEvent::XACT_EVENT_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_ABORT
        | pg_sys::XactEvent::XACT_EVENT_PREPARE
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT
        | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => WANTED.set(false),
        _ => {}
    }
}

/// Remembers the transaction being prepared, which wants a wake-up it may
/// not send itself.
fn remember_prepared() {
    // SAFETY: reads this backend's transaction state; assigns nothing.
    let xid = unsafe { pg_sys::GetTopFullTransactionIdIfAny() }.value;
    if xid == 0 {
        return; // no id: it wrote nothing
    }
    PREPARED.with_borrow_mut(|prepared| {
        if prepared.len() == MAX_PREPARED {
            prepared.remove(0);
        }
        prepared.push(xid);
    });
}

/// Forgets the remembered prepared transactions that have ended (committed
/// or rolled back); true if there was one. A prepared transaction counts as
/// in progress until its COMMIT/ROLLBACK PREPARED. TransactionIdIsInProgress
/// answers from the process array (at once for ids older than the latest
/// snapshot's xmin) and reads no commit-log page older than that xmin, so a
/// remembered id cannot make this commit fail; one 2^30 transactions old is
/// forgotten unasked (a prepared transaction holds the xmin horizon back,
/// and the server stops well before one could be that old), so that its
/// 32-bit form is never compared across a wraparound.
fn any_prepared_ended() -> bool {
    PREPARED.with_borrow_mut(|prepared| {
        if prepared.is_empty() {
            return false;
        }
        // SAFETY: ReadNextFullTransactionId takes its own lock;
        // TransactionIdIsInProgress reads shared state under PostgreSQL's locks.
        let next = unsafe { pg_sys::ReadNextFullTransactionId() }.value;
        let before = prepared.len();
        prepared.retain(|&xid| {
            next.saturating_sub(xid) < 1 << 30
                && unsafe {
                    pg_sys::TransactionIdIsInProgress(pg_sys::TransactionId::from(xid as u32))
                }
        });
        prepared.len() < before
    })
}

/// Runs at pre-commit, before PostgreSQL moves queued notifications into the
/// shared queue: queue ours unless this backend notified very recently.
fn notify_unless_recent() {
    // SAFETY: reads the clock; no preconditions.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let interval_us = i64::from(gucs::notify_min_interval_ms()) * 1000;
    if interval_us > 0 && now.saturating_sub(LAST_NOTIFY.get()) < interval_us {
        return;
    }
    // SAFETY: both arguments are NUL-terminated static strings; we are still
    // inside the committing transaction, as NOTIFY requires. Called directly
    // rather than through SPI, which would parse `select pg_notify(…)` on
    // every transaction.
    unsafe { async_notify(CHANNEL.as_ptr(), c"".as_ptr()) };
    LAST_NOTIFY.set(now);
}
