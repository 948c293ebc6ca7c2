//! Transaction ids and snapshots in pg_webhook's *virtual* id space, and the
//! incarnation that prefixes them.
//!
//! The fan-out places events by the commit order of their transactions
//! (PgQ's snapshot batches), so every event stores its transaction id and
//! every subscription change the snapshot of its commit. Raw ids are only
//! comparable within one cluster: a dump restored into another cluster (or a
//! fresh one) starts counting again, and a restored event would look older
//! than events written after the restore. So each stored id is
//! `incarnation × 2^48 + xid8`, where the incarnation is the number of the
//! (cluster, database) the data lives in, registered on first use in
//! `webhook.incarnations`: after a restore, every new id sorts after every
//! restored one. 2^48 transactions is about 90 years at 100,000 per second.
//!
//! Must not: write anything but the registration of an incarnation.

use crate::privilege;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;

/// Bits of a virtual id below the incarnation.
const XID_BITS: u32 = 48;

thread_local! {
    /// This backend's incarnation, once found committed (0 = not yet).
    static INCARNATION: Cell<i32> = const { Cell::new(0) };
}

/// The incarnation of the cluster and database this backend runs in,
/// registering it when it is new. Cached only once found committed: a
/// registration made by this transaction could still roll back.
pub(crate) fn incarnation() -> i32 {
    let cached = INCARNATION.get();
    if cached > 0 {
        return cached;
    }
    // SAFETY: plain reads of process-wide values set at start-up.
    let (system_identifier, database) =
        unsafe { (pg_sys::GetSystemIdentifier() as i64, pg_sys::MyDatabaseId) };
    // Run by the capture trigger as the extension owner: no name in these
    // statements may resolve through the writer's search_path.
    privilege::with_safe_search_path(|| register(system_identifier, database))
}

/// Finds or registers the incarnation of (`system_identifier`, `database`).
fn register(system_identifier: i64, database: pg_sys::Oid) -> i32 {
    let found = Spi::connect(|client| {
        let rows = client.select(
            "select n from webhook.incarnations where system_identifier = $1 and database_oid = $2",
            Some(1),
            &[system_identifier.into(), database.into()],
        )?;
        if rows.is_empty() {
            Ok(None)
        } else {
            rows.first().get_one::<i32>()
        }
    });
    match found {
        Ok(Some(n)) => {
            INCARNATION.set(n);
            n
        }
        Ok(None) => Spi::get_one_with_args::<i32>(
            "select webhook._register_incarnation($1, $2)",
            &[system_identifier.into(), database.into()],
        )
        .ok()
        .flatten()
        .unwrap_or_else(|| fail("could not register this database's incarnation")),
        Err(e) => fail(&format!("could not read webhook.incarnations: {e}")),
    }
}

fn fail(message: &str) -> ! {
    crate::error::raise(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        format!("pg_webhook: {message}"),
    )
}

/// `full` (a FullTransactionId value) in the virtual space of `incarnation`.
fn virtualize(incarnation: i32, full: u64) -> i64 {
    if full >= 1 << XID_BITS {
        fail("transaction ids have outgrown pg_webhook's 48-bit space");
    }
    (i64::from(incarnation) << XID_BITS) | full as i64
}

/// The 64-bit form of a 32-bit xid seen in a snapshot, relative to the next
/// transaction id (PostgreSQL's FullXidRelativeTo).
pub(crate) fn widen(next: u64, xid: u32) -> u64 {
    let next_xid = next as u32;
    next.wrapping_add_signed(i64::from(xid.wrapping_sub(next_xid) as i32))
}

/// The current top-level transaction's id, in the virtual space (assigns
/// a transaction id if it has none yet, as `pg_current_xact_id()` does).
pub(crate) fn current_vxid() -> i64 {
    let n = incarnation();
    // SAFETY: only valid inside a transaction, which every caller is in.
    let full = unsafe { pg_sys::GetTopFullTransactionId() };
    virtualize(n, full.value)
}

/// The latest snapshot as `{xmin, xmax, xip...}` in the virtual space, as
/// another session would take it: this transaction, if it has an id, counts
/// as running. Latest, not the transaction's: callers need "committed by
/// now" even in a REPEATABLE READ transaction (see
/// webhook._subscription_commit).
///
/// PostgreSQL leaves the backend's own transaction out of its snapshots'
/// running list (its visibility checks ask "is it mine?" first), so a
/// transaction that wrote events and then fanned out would read its own
/// id as committed as soon as a later transaction had committed (xmax past
/// it): its events so far fanned out, the position moved past it, and the
/// events it wrote afterwards never fanned out at all.
pub(crate) fn latest_vsnapshot() -> Vec<i64> {
    let n = incarnation();
    // SAFETY: GetLatestSnapshot returns a static snapshot that stays valid
    // until the next call; everything is copied out before returning.
    // ReadNextFullTransactionId takes its own lock; GetTopFullTransactionIdIfAny
    // reads this backend's state and assigns nothing.
    unsafe {
        let snap = pg_sys::GetLatestSnapshot();
        let next = pg_sys::ReadNextFullTransactionId().value;
        let own = pg_sys::GetTopFullTransactionIdIfAny().value;
        let xcnt = (*snap).xcnt as usize;
        let mut out = Vec::with_capacity(3 + xcnt);
        out.push(virtualize(n, widen(next, u32::from((*snap).xmin))));
        let xmax = widen(next, u32::from((*snap).xmax));
        out.push(virtualize(n, xmax));
        if xcnt > 0 {
            for &xid in std::slice::from_raw_parts((*snap).xip, xcnt) {
                out.push(virtualize(n, widen(next, u32::from(xid))));
            }
        }
        // 0 is InvalidTransactionId: no id, nothing written, nothing to hide.
        // At or past xmax it is already invisible.
        if own != 0 && own < xmax {
            out.push(virtualize(n, own));
        }
        out[2..].sort_unstable();
        out
    }
}

#[pg_schema]
mod webhook {
    use pgrx::prelude::*;

    /// This transaction's id in pg_webhook's virtual id space (see vxid.rs).
    #[pg_extern(volatile, name = "_vxid")]
    fn vxid() -> i64 {
        super::current_vxid()
    }

    /// The latest snapshot, `{xmin, xmax, xip...}`, in the virtual id space.
    #[pg_extern(volatile, name = "_vsnapshot")]
    fn vsnapshot() -> Vec<i64> {
        super::latest_vsnapshot()
    }
}
