//! What the capture reads of the table it fires on: its names, as
//! receivers see them, and its primary key's columns (for an oversized
//! row). Read from the relation cache: no SQL, so nothing resolved through
//! anyone's `search_path`.
//!
//! Must not: write anything.

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::borrow::Cow;
use std::ffi::CStr;

/// A table's names.
pub(crate) struct Names<'a> {
    /// Its name (`row_event`'s `table`).
    pub table: Cow<'a, str>,
    /// Its schema's name.
    pub schema: Cow<'a, str>,
    /// Both, quoted where needed (`webhook.events.source_table`).
    pub qualified: String,
}

/// The names of `rel`.
///
/// # Safety
/// `rel` must be an open relation; the names borrow from its relcache
/// entry and from fresh copies in the current memory context, valid for
/// the trigger call.
pub(crate) unsafe fn names<'a>(rel: pg_sys::Relation) -> Names<'a> {
    // SAFETY: see the function's contract. get_namespace_name returns a
    // fresh copy or null; quote_identifier its argument or a fresh copy.
    unsafe {
        let class = &*(*rel).rd_rel;
        let table = CStr::from_ptr(class.relname.data.as_ptr());
        let schema = pg_sys::get_namespace_name(class.relnamespace);
        if schema.is_null() {
            pgrx::pg_sys::panic::ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
                "webhook._capture: the table's schema no longer exists",
                "webhook._capture",
            )
            .report(pgrx::PgLogLevel::ERROR);
        }
        let schema = CStr::from_ptr(schema);
        let quoted =
            |name: &CStr| CStr::from_ptr(pg_sys::quote_identifier(name.as_ptr())).to_string_lossy();
        let qualified = format!("{}.{}", quoted(schema), quoted(table));
        Names {
            table: table.to_string_lossy(),
            schema: schema.to_string_lossy(),
            qualified,
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
