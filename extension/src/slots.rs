//! Which log slot new events go into (see `sql/install/03_log.sql`): the
//! slot of the current generation, `gen % 8`.
//!
//! Read once a second per backend rather than once per row: a captured row
//! would otherwise pay a query for it. A value up to a second stale is safe:
//! it names the slot that was current a moment ago, and a slot is purged
//! only once its generation ended more than the retention (at least a
//! minute) plus one second ago (see webhook._purge_slot).
//!
//! It also tells the capture trigger when the database still has the 0.1.0
//! schema: a new library is installed before `ALTER EXTENSION pg_webhook
//! UPDATE` runs, and writes to watched tables must keep working meanwhile.
//!
//! Must not: write anything.

use crate::privilege;
use pgrx::prelude::*;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long a backend trusts the slot it read.
const STALE_AFTER: Duration = Duration::from_secs(1);

thread_local! {
    /// The slot (None: the 0.1.0 schema, which has no slots) and when it was read.
    static CURRENT: Cell<Option<(Option<i16>, Instant)>> = const { Cell::new(None) };
}

/// The current slot, or `None` while the database has the 0.1.0 schema
/// (the library was upgraded, the extension not yet). The caller must be
/// allowed to read `webhook.generations` (the capture trigger runs this as
/// the extension owner). Its statements run with the safe search_path
/// (privilege.rs).
pub(crate) fn current_or_legacy() -> Option<i16> {
    if let Some((slot, at)) = CURRENT.get() {
        if at.elapsed() < STALE_AFTER {
            return slot;
        }
    }
    // Run by the capture trigger as the extension owner: no name in these
    // statements may resolve through the writer's search_path.
    let slot = privilege::with_safe_search_path(|| {
        let upgraded =
            Spi::get_one::<bool>("select to_regclass('webhook.generations') is not null")
                .ok()
                .flatten()
                .unwrap_or(true);
        upgraded.then(|| {
            // The max() always returns a row (null only if the table were empty).
            Spi::get_one::<i16>(
                "select (max(g.gen) % webhook._slots())::smallint from webhook.generations g",
            )
            .ok()
            .flatten()
            .unwrap_or(0)
        })
    });
    CURRENT.set(Some((slot, Instant::now())));
    slot
}

/// The current slot (0 where there are none yet).
pub(crate) fn current() -> i16 {
    current_or_legacy().unwrap_or(0)
}

/// Forgets the cached slot (after this backend rotated the log itself).
pub(crate) fn forget() {
    CURRENT.set(None);
}

#[pg_schema]
mod webhook {
    use pgrx::prelude::*;

    /// The log slot new events go into (cached for a second, see slots.rs).
    #[pg_extern(volatile, name = "_current_slot")]
    fn current_slot() -> i16 {
        super::current()
    }

    /// Forgets this backend's cached slot; called after a rotation.
    #[pg_extern(volatile, name = "_forget_slot")]
    fn forget_slot() {
        super::forget()
    }
}
