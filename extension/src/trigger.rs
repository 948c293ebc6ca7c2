//! The row-change capture trigger, `webhook._capture(event_prefix, columns...)`,
//! or `webhook._capture('@table', schema, table, event_prefix, columns...)`
//! on a Citus distributed table (see [`TABLE_MARK`]).
//!
//! Installed by `webhook_watch` as an AFTER … FOR EACH ROW trigger. For each
//! row it converts the old and new rows with PostgreSQL's own `row_to_json`
//! (every column type converts exactly as in SQL), wraps them into the
//! event's data (payload.rs), and stores the event — one row, whatever the
//! number of endpoints: deliveries are created later, off the writer's path,
//! by the fan-out. Then it asks for one wake-up at commit.
//!
//! Split by privilege: the event is built whole as the writer (converting a
//! row to JSON may call a cast to json defined by whoever owns a column's
//! type, which must never run with the owner's rights), then only the
//! storing runs as the extension's owner, in the restricted window of
//! privilege.rs (store.rs), so that writers need no right on the webhook
//! tables. The function is *not* SECURITY DEFINER for the same reason. Who
//! may attach it to a table is decided by EXECUTE on it, which only
//! webhook_admin has; and since a trigger attached some other way (0.1.0
//! let anyone with TRIGGER on a table do it) must not emit pg_webhook's own
//! event types, its prefix is checked here at every row.
//!
//! Must not: do network I/O, read secrets, or notify per row.

use crate::{generated, gucs, legacy, payload, privilege, relation, store, wake};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;

use crate::error::raise;

/// The capture trigger function. Its SQL declaration is written by hand to
/// keep it in the webhook schema with a comment; see the module docs for
/// whose rights each step runs with.
#[pg_trigger(sql = r#"
-- API: Private
CREATE OR REPLACE FUNCTION webhook."_capture"() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION webhook."_capture"() IS
    'Row-change capture trigger installed by webhook_watch; arguments: the event prefix, then the columns to send (all when none), then ''@key'' and the key columns for ordered endpoints when the watch names them (read by the fan-out, not here); on a Citus distributed table, ''@table'', its schema and its name first.';
"#)]
fn _capture<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    if !gucs::capture_enabled() {
        return Ok(None);
    }
    if !matches!(trigger.level(), PgTriggerLevel::Row)
        || !matches!(trigger.when()?, PgTriggerWhen::After)
    {
        raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "webhook._capture must be an AFTER … FOR EACH ROW trigger; install it with webhook_watch()",
        );
    }
    let td = trigger.trigger_data();
    let all_args = arguments(td);
    // A watch on a Citus distributed table names the table receivers see:
    // its shards fire the trigger under their own names (`orders_102008`).
    let (named, args) = match all_args.as_slice() {
        [TABLE_MARK, schema, table, rest @ ..] => (Some((*schema, *table)), rest),
        all => (None, all),
    };
    let Some((prefix, columns)) = args.split_first() else {
        raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "webhook._capture needs the event prefix as its argument; install it with webhook_watch()",
        );
    };
    // The key columns a watch names (after KEY_MARK) are the fan-out's
    // business (webhook._watch_key_columns): the capture sends the columns before them.
    let columns = columns
        .iter()
        .position(|c| *c == KEY_MARK)
        .map_or(columns, |at| &columns[..at]);
    check_prefix(prefix);
    let (suffix, op, new_tuple, old_tuple) = match trigger.op()? {
        PgTriggerOperation::Insert => ("created", "INSERT", td.tg_trigtuple, std::ptr::null_mut()),
        PgTriggerOperation::Update => ("updated", "UPDATE", td.tg_newtuple, td.tg_trigtuple),
        PgTriggerOperation::Delete => ("deleted", "DELETE", std::ptr::null_mut(), td.tg_trigtuple),
        PgTriggerOperation::Truncate => raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "webhook._capture does not capture TRUNCATE",
        ),
    };
    // The watched table: the one the trigger fires on, or for a partition
    // the partitioned table that was watched (relation.rs).
    // SAFETY: tg_trigger is the firing trigger, tg_relation the open
    // relation it fired on.
    let names = match named {
        Some((schema, table)) => relation::named(schema, table),
        None => unsafe {
            let watched = relation::reported_table(&*td.tg_trigger, td.tg_relation);
            relation::names(td.tg_relation, watched)
        },
    };
    let event_type = format!("{prefix}.{suffix}");

    // As the writer: the rows, then the event's data.
    // SAFETY: tg_relation is the open, locked relation the trigger fired on;
    // its tuple descriptor describes both tuples.
    let tupdesc = unsafe { (*td.tg_relation).rd_att };
    let row = |tuple: pg_sys::HeapTuple| -> Option<&str> {
        // SAFETY: non-null tuples handed to us by the executor for this
        // relation; the composite copy and its JSON (a fresh, uncompressed
        // varlena) are made in the current (per-call) memory context, which
        // outlives this function's use of them.
        (!tuple.is_null()).then(|| unsafe {
            // As a SELECT shows it: with its virtual generated columns.
            let tuple = generated::complete(td.tg_relation, tuple);
            let json = row_to_json(pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc));
            pgrx::varlena::text_to_rust_str_unchecked(json.cast_mut_ptr())
        })
    };
    let (new_json, old_json) = (row(new_tuple), row(old_tuple));
    let columns = (!columns.is_empty()).then_some(columns);
    let data = event_data(&names, op, new_json, old_json, columns, td.tg_relation);

    // As the owner: storing it.
    let stored = privilege::as_extension_owner(|| {
        store::store(&store::Event {
            event_type: &event_type,
            data: &data,
            source_table: &names.qualified,
            legacy: legacy::Row {
                event_type: &event_type,
                table: &names.table,
                schema: &names.schema,
                op,
                qualified: &names.qualified,
                new: new_json,
                old: old_json,
            },
        })
    });
    if stored {
        wake::at_commit();
    }
    Ok(None)
}

/// First argument of a trigger that names its table (then its schema and
/// name, then the usual arguments); webhook_watch puts it on a Citus
/// distributed table. No event prefix can start with "@".
const TABLE_MARK: &str = "@table";
/// Marks the end of the columns sent in a capture trigger's arguments: the
/// key columns for ordered endpoints follow it (see webhook_watch).
const KEY_MARK: &str = "@key";

/// The trigger's arguments, borrowed from PostgreSQL's own strings: this
/// runs for every captured row, and copying them into owned Strings
/// showed in the profile.
fn arguments(td: &pg_sys::TriggerData) -> Vec<&str> {
    // SAFETY: tg_trigger is the firing trigger; it holds tgnargs
    // NUL-terminated arguments, valid for this call.
    unsafe {
        let trig = &*td.tg_trigger;
        let n = usize::try_from(trig.tgnargs).unwrap_or(0);
        (0..n)
            .map(|i| {
                std::ffi::CStr::from_ptr(*trig.tgargs.add(i))
                    .to_str()
                    .unwrap_or_else(|_| {
                        raise(
                            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                            "webhook._capture: a trigger argument is not valid UTF-8; install it with webhook_watch()",
                        )
                    })
            })
            .collect()
    }
}

/// Refuses a prefix webhook_watch would refuse: one that is not
/// dot-separated words, or pg_webhook's own `webhook`. A trigger attached
/// by hand (or by 0.1.0, which let any table owner do it) must not emit
/// `webhook.endpoint.disabled` and the like.
fn check_prefix(prefix: &str) {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if prefix.len() > 240 || !prefix.split('.').all(word) {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("webhook._capture: invalid event prefix {prefix:?}; install the trigger with webhook_watch()"),
        );
    }
    if prefix == "webhook" || prefix.starts_with("webhook.") {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "webhook._capture: the event prefix \"webhook\" is reserved for pg_webhook's own events; install the trigger with webhook_watch() and another prefix",
        );
    }
}

/// The event's data, within `pg_webhook.max_payload_bytes`: the whole rows
/// (projected to the watch's columns), or, for a row too large, its key
/// and `"truncated": true` (see payload.rs), with a WARNING to the writer.
fn event_data(
    names: &relation::Names<'_>,
    op: &str,
    new: Option<&str>,
    old: Option<&str>,
    columns: Option<&[&str]>,
    rel: pg_sys::Relation,
) -> String {
    let data = payload::row_event(&names.table, &names.schema, op, new, old, columns);
    let max = usize::try_from(gucs::max_payload_bytes()).unwrap_or(usize::MAX);
    if data.len() <= max {
        return data;
    }
    // Too large to send: the writer's transaction goes on, and the event
    // carries the key (only what the watch chose to send) and says it was cut.
    let keys = relation::primary_key_columns(rel);
    let mut data =
        payload::truncated_event(&names.table, &names.schema, op, new, old, &keys, columns);
    if data.len() > max {
        // Keys larger than the limit: the bare event.
        data = payload::truncated_event(&names.table, &names.schema, op, None, None, &[], None);
    }
    pgrx::warning!(
        "pg_webhook: the {op} event of {} exceeds pg_webhook.max_payload_bytes ({max}); sent with its key columns only (\"truncated\": true)",
        names.qualified
    );
    data
}

thread_local! {
    /// `row_to_json(record)`, looked up once per backend.
    static ROW_TO_JSON: Cell<*mut pg_sys::FmgrInfo> = const { Cell::new(std::ptr::null_mut()) };
}

/// `row_to_json(composite)`, called directly through a cached function
/// lookup (no SQL, no planning, no name resolved).
///
/// # Safety
/// `composite` must be a valid composite datum.
unsafe fn row_to_json(composite: pg_sys::Datum) -> pg_sys::Datum {
    let mut finfo = ROW_TO_JSON.get();
    if finfo.is_null() {
        // SAFETY: allocated in TopMemoryContext, which lives as long as the
        // backend, and filled in by fmgr for a built-in function.
        unsafe {
            finfo = pg_sys::MemoryContextAllocZero(
                pg_sys::TopMemoryContext,
                std::mem::size_of::<pg_sys::FmgrInfo>(),
            )
            .cast();
            pg_sys::fmgr_info_cxt(
                pg_sys::Oid::from(pg_sys::F_ROW_TO_JSON_RECORD),
                finfo,
                pg_sys::TopMemoryContext,
            );
        }
        ROW_TO_JSON.set(finfo);
    }
    // SAFETY: finfo describes row_to_json(record), which takes one composite
    // and reads its type from the datum itself.
    unsafe { pg_sys::FunctionCall1Coll(finfo, pg_sys::InvalidOid, composite) }
}
