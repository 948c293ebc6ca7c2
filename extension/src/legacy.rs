//! Capture into the 0.1.0 schema (event and deliveries at once), for a
//! database whose library was upgraded before `ALTER EXTENSION pg_webhook
//! UPDATE` ran: writes to watched tables must keep working meanwhile
//! (slots.rs tells which schema the database has).
//!
//! Removed in 0.4.0: from then on, a database still at 0.1.0 runs `ALTER
//! EXTENSION pg_webhook UPDATE` (to 0.3.0, with the 0.3.0 package) before
//! the 0.4.0 library is installed, and the README's upgrading section says so.
//!
//! Must not: be used by a database with the 0.2.0 schema or later.

use crate::store;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::Cell;

/// What 0.1.0's statement takes: it builds the data itself.
pub(crate) struct Row<'a> {
    /// `<prefix>.created` and so on.
    pub event_type: &'a str,
    /// The table's name.
    pub table: &'a str,
    /// Its schema's name.
    pub schema: &'a str,
    /// INSERT, UPDATE or DELETE.
    pub op: &'a str,
    /// Schema-qualified table.
    pub qualified: &'a str,
    /// The new row's JSON, if any.
    pub new: Option<&'a str>,
    /// The old row's JSON, if any.
    pub old: Option<&'a str>,
}

/// 0.1.0's capture statement: $1 event type, $2 table, $3 schema, $4 op,
/// $5 qualified table, $6 new row, $7 old row (json, may be null).
const SQL: &std::ffi::CStr = c"
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

const ARG_TYPES: [pg_sys::Oid; 7] = [
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::TEXTOID,
    pg_sys::JSONOID,
    pg_sys::JSONOID,
];

thread_local! {
    static PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
}

/// Stores `row` the 0.1.0 way; true when deliveries were created.
pub(crate) fn capture(row: &Row<'_>) -> bool {
    PLAN.with(|plan| {
        store::execute(
            plan,
            || SQL.to_owned(),
            &ARG_TYPES,
            &[
                row.event_type.into_datum(),
                row.table.into_datum(),
                row.schema.into_datum(),
                row.op.into_datum(),
                row.qualified.into_datum(),
                row.new.into_datum(),
                row.old.into_datum(),
            ],
        )
    }) > 0
}
