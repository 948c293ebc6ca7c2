//! What the capture reads of the table it fires on: the names receivers
//! see, and its primary key's columns (for an oversized row). Read from
//! the relation and system caches: no SQL, so nothing resolved through
//! anyone's `search_path`; except, once per backend and partition, which
//! table a watch on a partitioned table was set on (below).
//!
//! A watch on a partitioned table puts the capture trigger on it, and
//! PostgreSQL clones the trigger onto every partition, where it fires with
//! the partition as its relation. Receivers must see the table that was
//! watched (`orders`), not a partition (`orders_2026_12`), which comes and
//! goes with the DBA's partitioning scheme: so a cloned trigger reports the
//! table of the trigger it was cloned from, up to the one webhook_watch
//! created.
//!
//! Must not: write anything.

use crate::error::raise;
use crate::privilege;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

thread_local! {
    /// For each cloned capture trigger seen by this backend (by its oid),
    /// the table its original trigger is on.
    static WATCHED: RefCell<HashMap<pg_sys::Oid, pg_sys::Oid>> = RefCell::new(HashMap::new());
}

/// The table the capture reports for `trigger` firing on `rel`: `rel`
/// itself, or for a clone, the table of the trigger it descends from.
pub(crate) fn reported_table(trigger: &pg_sys::Trigger, rel: pg_sys::Relation) -> pg_sys::Oid {
    // SAFETY: the trigger's relation is open for the whole call.
    let own = unsafe { (*rel).rd_id };
    if !trigger.tgisclone {
        return own;
    }
    if let Some(found) = WATCHED.with(|w| w.borrow().get(&trigger.tgoid).copied()) {
        return found;
    }
    // pg_trigger is readable by everyone; the statement runs as the writer,
    // with the safe search_path all the same.
    let found = privilege::with_safe_search_path(|| {
        Spi::get_one_with_args::<pg_sys::Oid>(
            "with recursive up (oid, parent, rel) as (
                 select t.oid, t.tgparentid, t.tgrelid from pg_catalog.pg_trigger t where t.oid = $1
                 union all
                 select t.oid, t.tgparentid, t.tgrelid from pg_catalog.pg_trigger t join up on t.oid = up.parent)
             select rel from up where parent = 0",
            &[trigger.tgoid.into()],
        )
    })
    .ok()
    .flatten()
    .unwrap_or(own);
    WATCHED.with(|w| w.borrow_mut().insert(trigger.tgoid, found));
    found
}

/// A table's names.
pub(crate) struct Names<'a> {
    /// Its name (`row_event`'s `table`).
    pub table: Cow<'a, str>,
    /// Its schema's name.
    pub schema: Cow<'a, str>,
    /// Both, quoted where needed (`webhook.events.source_table`).
    pub qualified: String,
}

/// Names given as they are (by the trigger's arguments, see trigger.rs).
pub(crate) fn named<'a>(schema: &'a str, table: &'a str) -> Names<'a> {
    // Trigger arguments are C strings: they hold no NUL.
    let c = |name: &str| std::ffi::CString::new(name).unwrap_or_default();
    Names {
        qualified: format!("{}.{}", quote(&c(schema)), quote(&c(table))),
        table: Cow::Borrowed(table),
        schema: Cow::Borrowed(schema),
    }
}

/// `name` quoted as an identifier where needed (quote_ident's rule).
fn quote(name: &CStr) -> Cow<'_, str> {
    // SAFETY: quote_identifier returns its argument or a fresh copy in the
    // current memory context, which outlives the trigger call.
    unsafe { CStr::from_ptr(pg_sys::quote_identifier(name.as_ptr())).to_string_lossy() }
}

/// The names of `relid`, the open relation `rel` or (a watched partitioned
/// table) one of its ancestors.
///
/// # Safety
/// `rel` must be an open relation; the names borrow from its relcache
/// entry and from fresh copies in the current memory context, valid for
/// the trigger call.
pub(crate) unsafe fn names<'a>(rel: pg_sys::Relation, relid: pg_sys::Oid) -> Names<'a> {
    // SAFETY: see the function's contract. get_rel_name and
    // get_namespace_name return fresh copies or null; quote_identifier its
    // argument or a fresh copy.
    unsafe {
        let class = &*(*rel).rd_rel;
        let (table, namespace) = if relid == (*rel).rd_id {
            (
                CStr::from_ptr(class.relname.data.as_ptr()),
                class.relnamespace,
            )
        } else {
            let name = pg_sys::get_rel_name(relid);
            if name.is_null() {
                raise(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                    "webhook._capture: the watched table no longer exists",
                );
            }
            (CStr::from_ptr(name), pg_sys::get_rel_namespace(relid))
        };
        let schema = pg_sys::get_namespace_name(namespace);
        if schema.is_null() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
                "webhook._capture: the table's schema no longer exists",
            );
        }
        let schema = CStr::from_ptr(schema);
        Names {
            qualified: format!("{}.{}", quote(schema), quote(table)),
            table: table.to_string_lossy(),
            schema: schema.to_string_lossy(),
        }
    }
}

/// The names of `rel`'s primary key columns, in key order (empty when it
/// has none). Only the rare oversized row needs them.
pub(crate) fn primary_key_columns(rel: pg_sys::Relation) -> Vec<String> {
    // SAFETY: the trigger's relation is open for the whole call;
    // RelationGetIndexList makes rd_pkindex valid; the index is opened and
    // closed here, its pg_index row read while it is open; get_attname
    // returns a fresh copy.
    unsafe {
        let list = pg_sys::RelationGetIndexList(rel);
        pg_sys::list_free(list);
        let pk = (*rel).rd_pkindex;
        if pk == pg_sys::InvalidOid {
            return Vec::new();
        }
        let relid = (*rel).rd_id;
        let index = pg_sys::index_open(pk, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let form = &*(*index).rd_index;
        let n = usize::try_from(form.indnkeyatts).unwrap_or(0);
        let columns = form
            .indkey
            .values
            .as_slice(n)
            .iter()
            .map(|&attnum| {
                CStr::from_ptr(pg_sys::get_attname(relid, attnum, false))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        pg_sys::index_close(index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        columns
    }
}
