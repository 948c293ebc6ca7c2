//! Storing one captured event, with the extension owner's rights (the
//! caller is inside `privilege::as_extension_owner`): the current slot, the
//! transaction's virtual id and this backend's webhook-id namespace, then
//! the row itself, straight into the slot's partition (event_row.rs), or
//! one prepared SQL statement where the partition is not plain. A database
//! still on the 0.1.0 schema has a path of its own (legacy.rs).
//!
//! The statement is prepared once per backend and kept by SPI
//! (`SPI_keepplan`; the plan cache revalidates it after DDL), and as
//! simple as can be, since every expression in it is compiled again at
//! each execution; the event travels as parameters, so one plan serves
//! every watched table. It inserts into the slot's partition itself, not
//! through `webhook.events`: routing a row through the parent sets up
//! tuple routing at every execution. Every name in it is schema-qualified
//! and it runs with the safe search_path (privilege.rs).
//!
//! Must not: build or change the event (it arrives built, as the writer
//! made it), or resolve a name through the caller's search_path.

use crate::error::raise;
use crate::{event_row, legacy, namespace, privilege, slots, vxid};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;

/// Slots there are (`webhook._slots()`, which `tests.rs` checks against this).
pub(crate) const SLOTS: usize = 8;

/// A captured event, built as the writer.
pub(crate) struct Event<'a> {
    /// `<prefix>.created` and so on.
    pub event_type: &'a str,
    /// The body's data: JSON text within `pg_webhook.max_payload_bytes`.
    pub data: &'a str,
    /// The schema-qualified source table.
    pub source_table: &'a str,
    /// What the 0.1.0 schema's statement needs instead of `data`.
    pub legacy: legacy::Row<'a>,
}

/// The statement for one slot and log layout: $1 slot, $2 transaction
/// (virtual id), $3 event type, $4 the event's data (JSON text), $5 its
/// size in bytes, $6 qualified table, and (0.3.0 on) $7 the namespace.
fn capture_sql(slot: i16, with_namespace: bool) -> std::ffi::CString {
    let (column, value) = if with_namespace {
        (", id_namespace", ", $7::pg_catalog.int8")
    } else {
        ("", "")
    };
    std::ffi::CString::new(format!(
        "insert into webhook.events_{slot} (slot, txid, event_type, payload, payload_bytes, source_table{column}) \
         values ($1::pg_catalog.int2, $2::pg_catalog.int8, $3::pg_catalog.text, $4::pg_catalog.json, \
         $5::pg_catalog.int4, $6::pg_catalog.text{value})"
    ))
    .expect("the statement has no NUL byte")
}

const CAPTURE_ARG_TYPES: [pg_sys::Oid; 7] = [
    pg_sys::INT2OID,
    pg_sys::INT8OID,
    pg_sys::TEXTOID,
    pg_sys::JSONOID,
    pg_sys::INT4OID,
    pg_sys::TEXTOID,
    pg_sys::INT8OID,
];

thread_local! {
    /// The statement of each slot, for the 0.2.0 log (no id_namespace)
    /// and the current one.
    static PLANS: [[Cell<pg_sys::SPIPlanPtr>; SLOTS]; 2] =
        const { [const { [const { Cell::new(std::ptr::null_mut()) }; SLOTS] }; 2] };
}

/// Stores `event`; returns whether a row was written (the 0.1.0 schema
/// writes none when no endpoint wants it).
pub(crate) fn store(event: &Event<'_>) -> bool {
    let Some(slot) = slots::current_or_legacy() else {
        return legacy::capture(&event.legacy);
    };
    // Within max_payload_bytes (checked by the caller), so an i32.
    let bytes = i32::try_from(event.data.len()).unwrap_or(i32::MAX);
    // A json datum is a text varlena: the data is stored as it is, without
    // json_in parsing it again (the caller made it valid JSON).
    let data = pg_sys::Datum::from(pgrx::varlena::rust_str_to_text_p(event.data).into_pg());
    let txid = vxid::current_vxid();
    let id_namespace = namespace::current();
    let outcome = event_row::insert(&event_row::EventRow {
        slot,
        txid,
        event_type: event.event_type,
        payload: data,
        payload_bytes: bytes,
        source_table: event.source_table,
        id_namespace,
    });
    let event_row::Outcome::UseStatement { with_namespace } = outcome else {
        return true;
    };
    let index = usize::try_from(slot)
        .ok()
        .filter(|i| *i < SLOTS)
        .unwrap_or_else(|| {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("pg_webhook: no log slot {slot}"),
            )
        });
    let values = [
        slot.into_datum(),
        txid.into_datum(),
        event.event_type.into_datum(),
        Some(data),
        bytes.into_datum(),
        event.source_table.into_datum(),
        id_namespace.into_datum(),
    ];
    let n = if with_namespace { 7 } else { 6 };
    PLANS.with(|plans| {
        execute(
            &plans[usize::from(with_namespace)][index],
            || capture_sql(slot, with_namespace),
            &CAPTURE_ARG_TYPES[..n],
            &values[..n],
        )
    }) > 0
}

/// Runs a statement, prepared (from `sql()`) once per backend into
/// `plan_cell`, with the safe search_path; returns the number of rows
/// inserted by its last step.
pub(crate) fn execute(
    plan_cell: &Cell<pg_sys::SPIPlanPtr>,
    sql: impl FnOnce() -> std::ffi::CString,
    arg_types: &[pg_sys::Oid],
    values: &[Option<pg_sys::Datum>],
) -> u64 {
    let mut datums: Vec<pg_sys::Datum> = Vec::with_capacity(values.len());
    let mut nulls: Vec<std::ffi::c_char> = Vec::with_capacity(values.len());
    for v in values {
        datums.push(v.unwrap_or(pg_sys::Datum::from(0)));
        nulls.push(if v.is_some() { b' ' } else { b'n' } as std::ffi::c_char);
    }
    let nargs = i32::try_from(arg_types.len()).expect("a handful of parameters");
    // SAFETY: SPI is connected and finished in this block; errors raised
    // inside SPI unwind through pgrx's guard and abort the transaction, which
    // also cleans up the SPI connection. The plan pointer is either null or a
    // plan we kept with SPI_keepplan; the arrays hold nargs entries.
    privilege::with_safe_search_path(|| unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "pg_webhook: SPI_connect failed",
            );
        }
        let mut plan = plan_cell.get();
        if plan.is_null() {
            let sql = sql();
            plan = pg_sys::SPI_prepare(sql.as_ptr(), nargs, arg_types.as_ptr().cast_mut());
            if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                raise(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    "pg_webhook: could not prepare the capture statement",
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
    })
}
