//! The row-change capture trigger, `webhook._capture(event_prefix, columns...)`.
//!
//! Installed by `webhook_watch` as an AFTER … FOR EACH ROW trigger. For each
//! row it converts the old and new rows with PostgreSQL's own `row_to_json`
//! (every column type converts exactly as in SQL), wraps them into the
//! event's data (payload.rs), and stores the event — one row, whatever the
//! number of endpoints: deliveries are created later, off the writer's path,
//! by the fan-out. Then it asks for one wake-up at commit.
//!
//! Privileges: the rows are converted as the writer, and only the insert
//! (and the reads of the current slot and incarnation) run as the
//! extension's owner, so that writers need no right on the webhook tables.
//! The function is *not* SECURITY DEFINER, on purpose: converting a row to
//! JSON may call a cast to json defined by whoever owns a column's type, and
//! such a cast must never run with the owner's rights. Who may attach it to
//! a table is decided by EXECUTE on it, which only webhook_admin has.
//!
//! How the event is stored: straight into the slot's partition, a heap
//! insert and its index entries (event_row.rs), because this runs for every
//! captured row and the executor's set-up for an INSERT cost more than the
//! insert itself. Where the partition has anything the executor would have
//! to run (a trigger, a constraint, a column this code does not know),
//! one prepared statement through raw SPI does it instead: never re-parsed
//! or re-planned per row, and as simple as can be, since every expression
//! in it is compiled again at each execution; the event travels as
//! parameters, so a single plan serves every watched table.
//!
//! Must not: do network I/O, read secrets, or notify per row.

use crate::{event_row, gucs, payload, slots, vxid, wake};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;

/// The capture statement for one slot: $1 slot, $2 transaction (virtual
/// id), $3 event type, $4 the event's data (JSON text), $5 its size in
/// bytes, $6 qualified table.
/// It inserts into the slot's partition itself, not through
/// `webhook.events`: routing a row through the parent sets up tuple routing
/// at every execution (measured: most of the rest of the trigger's cost).
/// Every name is schema-qualified because the trigger runs as the extension
/// owner without pinning search_path (a `SET search_path` on the function
/// would cost a configuration save and restore on every row), so the
/// caller's search_path must not matter.
fn capture_sql(slot: i16) -> std::ffi::CString {
    std::ffi::CString::new(format!(
        "insert into webhook.events_{slot} (slot, txid, event_type, payload, payload_bytes, source_table) \
         values ($1::pg_catalog.int2, $2::pg_catalog.int8, $3::pg_catalog.text, $4::pg_catalog.json, \
         $5::pg_catalog.int4, $6::pg_catalog.text)"
    ))
    .expect("the statement has no NUL byte")
}

/// Slots there are (webhook._slots()).
const SLOTS: usize = 8;

const CAPTURE_ARG_TYPES: [pg_sys::Oid; 6] = [
    pg_sys::INT2OID,
    pg_sys::INT8OID,
    pg_sys::TEXTOID,
    pg_sys::JSONOID,
    pg_sys::INT4OID,
    pg_sys::TEXTOID,
];

/// The 0.1.0 capture statement (event and deliveries at once), used while
/// a database still has the 0.1.0 schema after the library was upgraded
/// (see slots.rs): $1 event type, $2 table, $3 schema, $4 op, $5 qualified
/// table, $6 new row, $7 old row (json, may be null).
const LEGACY_CAPTURE_SQL: &std::ffi::CStr = c"
with data as (
    select pg_catalog.json_build_object(
               'table', $2::pg_catalog.text, 'schema', $3::pg_catalog.text, 'op', $4::pg_catalog.text,
               'new', $6::pg_catalog.json, 'old', $7::pg_catalog.json) as payload
), ev as (
    insert into webhook.events (event_type, payload, source_table)
    select $1::pg_catalog.text, data.payload, $5::pg_catalog.text
    from data
    where webhook._check_payload_size(pg_catalog.octet_length(data.payload::pg_catalog.text))
    returning id, event_type
)
insert into webhook.deliveries (event_id, endpoint_id, status)
select ev.id, e.id, case when e.paused_at is null then 'pending' else 'paused' end::webhook.delivery_status
from ev
join webhook.endpoints e on e.is_active and webhook._matches(e.event_types, ev.event_type)";

const LEGACY_ARG_TYPES: [pg_sys::Oid; 7] = [
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::JSONOID,
    pg_sys::JSONOID,
];

thread_local! {
    /// The capture statement of each slot, prepared once per backend and
    /// kept by SPI (`SPI_keepplan`); the plan cache revalidates it after DDL.
    static PLANS: [Cell<pg_sys::SPIPlanPtr>; SLOTS] =
        const { [const { Cell::new(std::ptr::null_mut()) }; SLOTS] };
    /// The same for [`LEGACY_CAPTURE_SQL`].
    static LEGACY_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
}

fn raise(code: PgSqlErrorCode, message: String) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(code, message, "webhook._capture")
        .report(pgrx::PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) does not return")
}

/// The capture trigger function. Its SQL declaration is written by hand to
/// keep it in the webhook schema with a comment; see the module docs for
/// whose rights each step runs with.
#[pg_trigger(sql = r#"
-- API: Private
CREATE OR REPLACE FUNCTION webhook."_capture"() RETURNS trigger
    LANGUAGE c
    AS 'MODULE_PATHNAME', '@FUNCTION_NAME@';
COMMENT ON FUNCTION webhook."_capture"() IS
    'Row-change capture trigger installed by webhook_watch; arguments: the event prefix, then the columns to send (all when none).';
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
            "webhook._capture must be an AFTER … FOR EACH ROW trigger; install it with webhook_watch()".into(),
        );
    }
    let td = trigger.trigger_data();
    // The trigger's arguments and the table's names, borrowed from
    // PostgreSQL's own strings: this runs for every captured row, and
    // copying them into owned Strings showed in the profile.
    // SAFETY: tg_trigger is the firing trigger; it holds tgnargs
    // NUL-terminated arguments, valid for this call.
    let args: Vec<&str> = unsafe {
        let trig = &*td.tg_trigger;
        let n = usize::try_from(trig.tgnargs).unwrap_or(0);
        (0..n)
            .map(|i| {
                std::ffi::CStr::from_ptr(*trig.tgargs.add(i))
                    .to_str()
                    .unwrap_or_else(|_| {
                        raise(
                            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
                            "webhook._capture: a trigger argument is not valid UTF-8; install it with webhook_watch()".into(),
                        )
                    })
            })
            .collect()
    };
    let Some((prefix, columns)) = args.split_first() else {
        raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "webhook._capture needs the event prefix as its argument; install it with webhook_watch()".into(),
        );
    };
    let (suffix, op, new_tuple, old_tuple) = match trigger.op()? {
        PgTriggerOperation::Insert => ("created", "INSERT", td.tg_trigtuple, std::ptr::null_mut()),
        PgTriggerOperation::Update => ("updated", "UPDATE", td.tg_newtuple, td.tg_trigtuple),
        PgTriggerOperation::Delete => ("deleted", "DELETE", std::ptr::null_mut(), td.tg_trigtuple),
        PgTriggerOperation::Truncate => raise(
            PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "webhook._capture does not capture TRUNCATE".into(),
        ),
    };
    // SAFETY: tg_relation is the open relation the trigger fired on; its
    // name lives in its pg_class entry, its schema's name is a fresh copy
    // from the syscache, and quote_identifier returns either its argument
    // or a fresh copy: all valid for this call.
    let (table, schema, qualified) = unsafe {
        let class = &*(*td.tg_relation).rd_rel;
        let table = std::ffi::CStr::from_ptr(class.relname.data.as_ptr());
        let schema = pg_sys::get_namespace_name(class.relnamespace);
        if schema.is_null() {
            raise(
                PgSqlErrorCode::ERRCODE_INVALID_SCHEMA_NAME,
                "webhook._capture: the table's schema no longer exists".into(),
            );
        }
        let schema = std::ffi::CStr::from_ptr(schema);
        let quoted = |name: &std::ffi::CStr| {
            std::ffi::CStr::from_ptr(pg_sys::quote_identifier(name.as_ptr())).to_string_lossy()
        };
        let qualified = format!("{}.{}", quoted(schema), quoted(table));
        (table.to_string_lossy(), schema.to_string_lossy(), qualified)
    };
    let event_type = format!("{prefix}.{suffix}");

    // SAFETY: tg_relation is the open, locked relation the trigger fired on;
    // its tuple descriptor describes both tuples.
    let tupdesc = unsafe { (*td.tg_relation).rd_att };
    let row = |tuple: pg_sys::HeapTuple| -> Option<&str> {
        // SAFETY: non-null tuples handed to us by the executor for this
        // relation; the composite copy and its JSON (a fresh, uncompressed
        // varlena) are made in the current (per-call) memory context, which
        // outlives this function's use of them. Runs as the writer (see
        // module docs).
        (!tuple.is_null()).then(|| unsafe {
            let json = row_to_json(pg_sys::heap_copy_tuple_as_datum(tuple, tupdesc));
            pgrx::varlena::text_to_rust_str_unchecked(json.cast_mut_ptr())
        })
    };
    let (new_json, old_json) = (row(new_tuple), row(old_tuple));
    let inserted = as_extension_owner(|| match slots::current_or_legacy() {
        Some(slot) => {
            let columns = (!columns.is_empty()).then_some(columns);
            let mut data = payload::row_event(&table, &schema, op, new_json, old_json, columns);
            let max = gucs::max_payload_bytes();
            if data.len() > max as usize {
                // Too large to send: the writer's transaction goes on, and
                // the event carries the key and says it was cut (see payload.rs).
                let keys = primary_key_columns(td.tg_relation);
                data = payload::truncated_event(&table, &schema, op, new_json, old_json, &keys);
                if data.len() > max as usize {
                    // Keys larger than the limit: the bare event.
                    data = payload::truncated_event(&table, &schema, op, None, None, &[]);
                }
                pgrx::warning!(
                    "pg_webhook: the {op} event of {qualified} exceeds pg_webhook.max_payload_bytes ({max}); sent with its key columns only (\"truncated\": true)"
                );
            }
            // Within max_payload_bytes, an i32 (checked above).
            let bytes = i32::try_from(data.len()).unwrap_or(i32::MAX);
            // A json datum is a text varlena: the data is sent as it is,
            // without json_in parsing it again (it was made valid above).
            let data = pg_sys::Datum::from(pgrx::varlena::rust_str_to_text_p(&data).into_pg());
            let txid = vxid::current_vxid();
            let stored = event_row::insert(&event_row::EventRow {
                slot,
                txid,
                event_type: &event_type,
                payload: data,
                payload_bytes: bytes,
                source_table: &qualified,
            });
            if stored {
                return 1;
            }
            // The partition is not a plain one (see event_row.rs): the
            // statement, which honours whatever it has.
            let values = [
                slot.into_datum(),
                txid.into_datum(),
                event_type.as_str().into_datum(),
                Some(data),
                bytes.into_datum(),
                qualified.as_str().into_datum(),
            ];
            let index = usize::try_from(slot)
                .ok()
                .filter(|i| *i < SLOTS)
                .unwrap_or_else(|| {
                    raise(
                        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                        format!("pg_webhook: no log slot {slot}"),
                    )
                });
            PLANS.with(|plans| {
                execute_capture(
                    &plans[index],
                    || capture_sql(slot),
                    &CAPTURE_ARG_TYPES,
                    &values,
                )
            })
        }
        None => LEGACY_PLAN.with(|plan| {
            execute_capture(
                plan,
                || LEGACY_CAPTURE_SQL.to_owned(),
                &LEGACY_ARG_TYPES,
                &[
                    event_type.as_str().into_datum(),
                    table.as_ref().into_datum(),
                    schema.as_ref().into_datum(),
                    op.into_datum(),
                    qualified.as_str().into_datum(),
                    new_json.into_datum(),
                    old_json.into_datum(),
                ],
            )
        }),
    });
    if inserted > 0 {
        wake::at_commit();
    }
    Ok(None)
}

thread_local! {
    /// `row_to_json(record)`, looked up once per backend.
    static ROW_TO_JSON: Cell<*mut pg_sys::FmgrInfo> = const { Cell::new(std::ptr::null_mut()) };
    /// The extension's owner, looked up once per backend.
    static OWNER: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

/// `row_to_json(composite)`, called directly through a cached function
/// lookup (no SQL, no planning).
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

/// The primary key's column names of `rel`, in key order (empty when it has
/// none). Only the rare oversized row needs them, so they are read from the
/// catalog then, not cached.
fn primary_key_columns(rel: pg_sys::Relation) -> Vec<String> {
    // SAFETY: the trigger's relation is open for the whole call.
    let relid = unsafe { (*rel).rd_id };
    Spi::get_one_with_args::<Vec<String>>(
        "select coalesce(array_agg(a.attname::text order by k.n), '{}')
         from pg_catalog.pg_index i
         cross join unnest(i.indkey::int2[]) with ordinality as k(attnum, n)
         join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
         where i.indrelid = $1 and i.indisprimary",
        &[relid.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_default()
}

/// Runs `f` with the extension owner's rights, then switches back. If `f`
/// raises an ERROR, PostgreSQL restores the caller's identity when it aborts
/// the (sub)transaction.
fn as_extension_owner<T>(f: impl FnOnce() -> T) -> T {
    let mut owner = OWNER.get();
    if owner == pg_sys::InvalidOid {
        owner = Spi::get_one::<pg_sys::Oid>(
            "select extowner from pg_catalog.pg_extension where extname = 'pg_webhook'",
        )
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                "the pg_webhook extension is not installed in this database".into(),
            )
        });
        OWNER.set(owner);
    }
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: plain reads and writes of the session's current identity; the
    // flag marks the change as local, as SECURITY DEFINER functions do.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let result = f();
    // SAFETY: restores what was read above.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    result
}

/// Runs a capture statement, prepared (from `sql()`) once per backend into
/// `plan_cell`; returns the number of rows inserted by its last step.
fn execute_capture<const N: usize>(
    plan_cell: &Cell<pg_sys::SPIPlanPtr>,
    sql: impl FnOnce() -> std::ffi::CString,
    arg_types: &[pg_sys::Oid; N],
    values: &[Option<pg_sys::Datum>; N],
) -> u64 {
    let mut datums: [pg_sys::Datum; N] = [pg_sys::Datum::from(0); N];
    let mut nulls: [std::ffi::c_char; N] = [b' ' as std::ffi::c_char; N];
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(d) => datums[i] = *d,
            None => nulls[i] = b'n' as std::ffi::c_char,
        }
    }
    // SAFETY: SPI is connected and finished in this block; errors raised
    // inside SPI unwind through pgrx's guard and abort the transaction, which
    // also cleans up the SPI connection. The plan pointer is either null or a
    // plan we kept with SPI_keepplan.
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "pg_webhook: SPI_connect failed".into(),
            );
        }
        let mut plan = plan_cell.get();
        if plan.is_null() {
            let sql = sql();
            plan = pg_sys::SPI_prepare(sql.as_ptr(), N as i32, arg_types.as_ptr().cast_mut());
            if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    "pg_webhook: could not prepare the capture statement".into(),
                );
            }
            plan_cell.set(plan);
        }
        let rc = pg_sys::SPI_execute_plan(plan, datums.as_mut_ptr(), nulls.as_ptr(), false, 0);
        if rc != pg_sys::SPI_OK_INSERT as i32 {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("pg_webhook: capture statement returned SPI code {rc}"),
            );
        }
        let inserted = pg_sys::SPI_processed;
        pg_sys::SPI_finish();
        inserted
    }
}
