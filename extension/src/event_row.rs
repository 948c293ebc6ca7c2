//! Writing one captured event straight into its slot's partition of
//! `webhook.events`: a heap insert and its index entries, without SPI, a
//! plan or the executor.
//!
//! Why: the capture trigger runs for every captured row, and the INSERT it
//! used to run through SPI spent more time setting up the executor than
//! storing the row (measured at 16 pgbench clients: SPI_execute_plan was
//! 12.7 % of all CPU samples, of which the heap insert, its index entries
//! and nextval were under half; ExecutorStart, the partition check built
//! anew at every execution, projections and plan revalidation were the
//! rest). PostgreSQL's own catalog code stores rows this way
//! (`CatalogTupleInsert`), and so do extensions with metadata tables of
//! their own.
//!
//! Only when that is all the executor would do: the partition must have no
//! triggers, rules, row security or CHECK constraints, every index must be
//! on plain columns (no expression, predicate or exclusion constraint, no
//! deferred uniqueness), and its columns must be exactly the ones this
//! module fills (by name and type, wherever they sit), with or without
//! `id_namespace` (0.2.0's log has none until `ALTER EXTENSION pg_webhook
//! UPDATE` runs, and the new library writes into it meanwhile). Anything
//! else — a DBA's trigger on the log, a column added by a future upgrade —
//! makes [`insert`] return [`Outcome::UseStatement`], and the caller runs
//! its SQL statement instead, which honours it all. The values are those
//! the SQL would produce: `id` from `webhook.events_id_seq`, `created_at`
//! the transaction's start time (`now()`), no idempotency key.
//!
//! Must not: write anything but the one event row and its index entries,
//! or check privileges (the caller already acts as the extension owner).

use pgrx::pg_sys;
use std::ffi::CStr;

// commands/sequence.h, which pgrx's bindings do not include: nextval()
// without the SQL call, as the executor's column default would run it.
// Guarded, so that an ERROR it raises unwinds as a Rust panic.
#[pgrx::pg_guard]
unsafe extern "C-unwind" {
    fn nextval_internal(relid: pg_sys::Oid, check_permissions: bool) -> i64;
}

/// What [`insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The row is stored.
    Stored,
    /// Nothing was written: the partition is not plain (see the module
    /// docs); the caller's SQL statement must store the row, naming
    /// `id_namespace` only when the log has that column.
    UseStatement {
        /// The log has `id_namespace` (0.3.0 and later).
        with_namespace: bool,
    },
}

/// One event row, as the capture trigger makes it.
pub(crate) struct EventRow<'a> {
    /// The log slot: the row goes into `webhook.events_<slot>`.
    pub slot: i16,
    /// The producing transaction (virtual id, see vxid.rs).
    pub txid: i64,
    /// `<prefix>.created` and so on.
    pub event_type: &'a str,
    /// The body's data: a json datum (a text varlena holding valid JSON).
    pub payload: pg_sys::Datum,
    /// Its size in bytes.
    pub payload_bytes: i32,
    /// The schema-qualified source table.
    pub source_table: &'a str,
    /// The webhook-id namespace (namespace.rs).
    pub id_namespace: i64,
}

/// The columns of `webhook.events`, each with its type.
#[derive(Clone, Copy)]
enum Column {
    Id,
    Slot,
    Txid,
    EventType,
    Payload,
    PayloadBytes,
    SourceTable,
    IdempotencyKey,
    CreatedAt,
    IdNamespace,
}

/// Columns of `webhook.events` without `id_namespace` (0.2.0's log).
const COLUMNS_0_2: usize = 9;

impl Column {
    fn of(name: &CStr, type_oid: pg_sys::Oid) -> Option<Self> {
        let (column, expected) = match name.to_bytes() {
            b"id" => (Column::Id, pg_sys::INT8OID),
            b"slot" => (Column::Slot, pg_sys::INT2OID),
            b"txid" => (Column::Txid, pg_sys::INT8OID),
            b"event_type" => (Column::EventType, pg_sys::TEXTOID),
            b"payload" => (Column::Payload, pg_sys::JSONOID),
            b"payload_bytes" => (Column::PayloadBytes, pg_sys::INT4OID),
            b"source_table" => (Column::SourceTable, pg_sys::TEXTOID),
            b"idempotency_key" => (Column::IdempotencyKey, pg_sys::TEXTOID),
            b"created_at" => (Column::CreatedAt, pg_sys::TIMESTAMPTZOID),
            b"id_namespace" => (Column::IdNamespace, pg_sys::INT8OID),
            _ => return None,
        };
        (type_oid == expected).then_some(column)
    }
}

/// `name` in the schema `webhook`, or None.
fn webhook_relation(namespace: pg_sys::Oid, name: &CStr) -> Option<pg_sys::Oid> {
    // SAFETY: a syscache lookup by name; both arguments are valid.
    let oid = unsafe { pg_sys::get_relname_relid(name.as_ptr(), namespace) };
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// Stores `row` directly, or says which statement to use (having written
/// nothing) when the partition is not one this module may write to, see
/// the module docs.
pub(crate) fn insert(row: &EventRow<'_>) -> Outcome {
    // When the relations cannot be found, the statement reports it.
    let missing = Outcome::UseStatement {
        with_namespace: true,
    };
    // Looked up by name at every call (syscache hits): a cached oid would
    // outlive a DROP and CREATE EXTENSION in the same session.
    // SAFETY: a syscache lookup; missing_ok, so no error is raised.
    let namespace = unsafe { pg_sys::get_namespace_oid(c"webhook".as_ptr(), true) };
    if namespace == pg_sys::InvalidOid {
        return missing;
    }
    let Ok(name) = std::ffi::CString::new(format!("events_{}", row.slot)) else {
        return missing;
    };
    let (Some(relid), Some(sequence)) = (
        webhook_relation(namespace, &name),
        webhook_relation(namespace, c"events_id_seq"),
    ) else {
        return missing;
    };
    // SAFETY: the relation exists (looked up above under the same catalog
    // snapshot; table_open raises a clean ERROR if it went away meanwhile)
    // and is locked as an INSERT would lock it, until the transaction ends.
    // Every pointer read below belongs to the open relation or to the
    // index state opened on it, which live until they are closed here.
    unsafe {
        let rel = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let (columns, with_namespace) = layout(rel);
        let Some(columns) = columns else {
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return Outcome::UseStatement { with_namespace };
        };
        let indexes = pg_sys::CatalogOpenIndexes(rel);
        if !plain_indexes(indexes) {
            pg_sys::CatalogCloseIndexes(indexes);
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return Outcome::UseStatement { with_namespace };
        }
        let desc = (*rel).rd_att;
        let natts = (*desc).natts as usize;
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        let id = nextval_internal(sequence, false);
        for (i, column) in columns.iter().enumerate() {
            let value = match column {
                None | Some(Column::IdempotencyKey) => None,
                Some(Column::Id) => Some(pg_sys::Datum::from(id)),
                Some(Column::Slot) => Some(pg_sys::Datum::from(row.slot)),
                Some(Column::Txid) => Some(pg_sys::Datum::from(row.txid)),
                Some(Column::EventType) => Some(text_datum(row.event_type)),
                Some(Column::Payload) => Some(row.payload),
                Some(Column::PayloadBytes) => Some(pg_sys::Datum::from(row.payload_bytes)),
                Some(Column::SourceTable) => Some(text_datum(row.source_table)),
                Some(Column::CreatedAt) => Some(pg_sys::Datum::from(
                    pg_sys::GetCurrentTransactionStartTimestamp(),
                )),
                Some(Column::IdNamespace) => Some(pg_sys::Datum::from(row.id_namespace)),
            };
            if let Some(v) = value {
                values[i] = v;
                nulls[i] = false;
            }
        }
        let tuple = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::CatalogTupleInsertWithInfo(rel, tuple, indexes);
        pg_sys::heap_freetuple(tuple);
        pg_sys::CatalogCloseIndexes(indexes);
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
    }
    Outcome::Stored
}

/// A text datum (a fresh varlena in the current memory context).
fn text_datum(s: &str) -> pg_sys::Datum {
    pg_sys::Datum::from(pgrx::varlena::rust_str_to_text_p(s).into_pg())
}

/// The column each attribute of `rel` is (None: dropped), when `rel` is a
/// plain table with exactly the columns of `webhook.events` (with or
/// without `id_namespace`) and nothing the executor would run on an
/// INSERT; None otherwise. And whether `rel` has `id_namespace`, either way.
///
/// # Safety
/// `rel` must be an open relation.
unsafe fn layout(rel: pg_sys::Relation) -> (Option<Vec<Option<Column>>>, bool) {
    // SAFETY: rd_rel and rd_att of an open relation are valid, and rd_att
    // holds natts attributes.
    unsafe {
        let class = &*(*rel).rd_rel;
        let desc = (*rel).rd_att;
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        let mut plain = class.relkind as u8 == pg_sys::RELKIND_RELATION
            && !class.relhastriggers
            && !class.relhasrules
            && !class.relrowsecurity;
        let constr = (*desc).constr;
        if !constr.is_null() && ((*constr).num_check > 0 || (*constr).has_generated_stored) {
            plain = false;
        }
        let mut with_namespace = false;
        let mut found = 0;
        let mut columns = Vec::with_capacity(attrs.len());
        for att in attrs {
            if att.attisdropped {
                columns.push(None);
                continue;
            }
            let name = CStr::from_ptr(att.attname.data.as_ptr());
            let column = Column::of(name, att.atttypid);
            if matches!(column, Some(Column::IdNamespace)) {
                with_namespace = true;
            }
            if att.attgenerated != 0 || column.is_none() {
                plain = false;
            }
            columns.push(column);
            found += 1;
        }
        // Each name appears once in a table, so nine (or ten) matches are
        // all of them.
        let expected = COLUMNS_0_2 + usize::from(with_namespace);
        let plain = plain && found == expected;
        (plain.then_some(columns), with_namespace)
    }
}

/// True when every index of `indexes` takes its keys from plain columns
/// and checks uniqueness (if at all) at once: what `CatalogTupleInsert`
/// maintains exactly as the executor would.
///
/// # Safety
/// `indexes` must come from `CatalogOpenIndexes`.
unsafe fn plain_indexes(indexes: pg_sys::CatalogIndexState) -> bool {
    // SAFETY: CatalogOpenIndexes filled ri_NumIndices entries of both arrays.
    unsafe {
        let n = (*indexes).ri_NumIndices.max(0) as usize;
        (0..n).all(|i| {
            let info = &**(*indexes).ri_IndexRelationInfo.add(i);
            let index = *(*indexes).ri_IndexRelationDescs.add(i);
            info.ii_Expressions.is_null()
                && info.ii_Predicate.is_null()
                && info.ii_ExclusionOps.is_null()
                && (*(*index).rd_index).indimmediate
        })
    }
}
