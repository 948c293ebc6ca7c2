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
//! UPDATE` runs, and the new library writes into it meanwhile). The values
//! are those the SQL would produce, and that too is checked: `id`'s default
//! is `nextval('webhook.events_id_seq')` and `created_at`'s is `now()`
//! (the transaction's start time), the idempotency key (left null) has no
//! default and no NOT NULL, and the partition is the one an INSERT into
//! `webhook.events` routes the slot's rows to (its bound), as the
//! executor's partition check would insist. Anything else — a DBA's trigger
//! or default on the log, a column added by a future upgrade, a partition
//! attached with another bound — makes [`insert`] return
//! [`Outcome::UseStatement`], and the caller runs its SQL statement
//! instead, which honours it all (or fails as the INSERT would).
//!
//! The checks run once per relation cache load of a partition, not per
//! row: their verdict is kept until PostgreSQL invalidates the partition's
//! cache entry, which every ALTER TABLE, ATTACH or DETACH of it does.
//!
//! Must not: write anything but the one event row and its index entries,
//! or check privileges (the caller already acts as the extension owner).

use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;
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
    /// Null in a captured row (only a backfill to one endpoint sets it).
    EndpointId,
    /// Null in a captured row (a row event's key is worked out from its
    /// table and data when an ordered endpoint needs it, off the writer's path).
    OrderingKey,
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
            b"endpoint_id" => (Column::EndpointId, pg_sys::INT8OID),
            b"ordering_key" => (Column::OrderingKey, pg_sys::TEXTOID),
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
        let verdict = verdict(rel, namespace, sequence, row.slot);
        let Some(columns) = verdict.columns else {
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return Outcome::UseStatement {
                with_namespace: verdict.with_namespace,
            };
        };
        let indexes = pg_sys::CatalogOpenIndexes(rel);
        if !plain_indexes(indexes) {
            pg_sys::CatalogCloseIndexes(indexes);
            pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
            return Outcome::UseStatement {
                with_namespace: verdict.with_namespace,
            };
        }
        let desc = (*rel).rd_att;
        let natts = (*desc).natts as usize;
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![true; natts];
        let id = nextval_internal(sequence, false);
        for (i, column) in columns.iter().enumerate() {
            let value = match column {
                None
                | Some(Column::IdempotencyKey)
                | Some(Column::EndpointId)
                | Some(Column::OrderingKey) => None,
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

/// What the checks found for one partition (see the module docs).
#[derive(Clone)]
struct Verdict {
    /// The column each attribute is (None: dropped), when the direct insert
    /// may write to the partition; None when the statement must. Shared:
    /// taking the verdict from the cache for a row costs a reference count.
    columns: Option<std::rc::Rc<[Option<Column>]>>,
    /// The partition has `id_namespace`.
    with_namespace: bool,
}

thread_local! {
    /// Each partition's verdict, by relation oid, until its cache entry is
    /// invalidated (see [`forget`]).
    static VERDICTS: RefCell<HashMap<pg_sys::Oid, Verdict>> = RefCell::new(HashMap::new());
    /// Whether [`forget`] is registered with the relation cache (once per backend).
    static REGISTERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Relation cache invalidation: drop the verdict of `relid` (of every
/// relation when it is invalid, as after a cache reset).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn forget(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    VERDICTS.with(|v| {
        if let Ok(mut v) = v.try_borrow_mut() {
            if relid == pg_sys::InvalidOid {
                v.clear();
            } else {
                v.remove(&relid);
            }
        }
    });
}

/// The verdict on `rel`, the partition of `slot`: from the cache, or
/// worked out and kept.
///
/// # Safety
/// `rel` must be an open relation.
unsafe fn verdict(
    rel: pg_sys::Relation,
    namespace: pg_sys::Oid,
    sequence: pg_sys::Oid,
    slot: i16,
) -> Verdict {
    if !REGISTERED.with(|r| r.replace(true)) {
        // SAFETY: registering a callback that only touches this module's cache.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(forget), pg_sys::Datum::from(0)) };
    }
    // SAFETY: rd_id of an open relation.
    let relid = unsafe { (*rel).rd_id };
    if let Some(v) = VERDICTS.with(|v| v.borrow().get(&relid).cloned()) {
        return v;
    }
    // SAFETY: `rel` is open (the caller's contract).
    let (columns, with_namespace) = unsafe { layout(rel) };
    let columns = columns.filter(|columns| {
        // SAFETY: as above; the parent is looked up and opened by the check.
        unsafe { values_match(rel, columns, sequence) && routed_here(relid, namespace, slot) }
    });
    let v = Verdict {
        columns: columns.map(std::rc::Rc::from),
        with_namespace,
    };
    VERDICTS.with(|c| c.borrow_mut().insert(relid, v.clone()));
    v
}

/// True when the values the direct insert writes are those the statement
/// would: `id`'s default is `nextval` of `sequence`, `created_at`'s is
/// `now()`, no other column the statement leaves out (the idempotency key,
/// the endpoint) has a default or NOT NULL.
///
/// # Safety
/// `rel` must be an open relation whose attributes `columns` describes.
unsafe fn values_match(
    rel: pg_sys::Relation,
    columns: &[Option<Column>],
    sequence: pg_sys::Oid,
) -> bool {
    // SAFETY: rd_att of an open relation, natts attributes, and its
    // constraint data (defaults) when present.
    unsafe {
        let desc = (*rel).rd_att;
        let attrs = attributes(desc);
        let constr = (*desc).constr;
        let defaults: &[pg_sys::AttrDefault] = if constr.is_null() || (*constr).defval.is_null() {
            &[]
        } else {
            std::slice::from_raw_parts((*constr).defval, (*constr).num_defval as usize)
        };
        let default_of = |attnum: i16| {
            defaults
                .iter()
                .find(|d| d.adnum == attnum)
                .map(|d| pg_sys::stringToNode(d.adbin).cast::<pg_sys::Node>())
        };
        columns
            .iter()
            .zip(&attrs)
            .enumerate()
            .all(|(i, (column, att))| {
                let attnum = i as i16 + 1;
                match column {
                    None => true,
                    Some(Column::Id) => {
                        default_of(attnum).is_some_and(|e| is_nextval_of(e, sequence))
                    }
                    Some(Column::CreatedAt) => {
                        default_of(attnum).is_some_and(|e| is_call_of(e, pg_sys::F_NOW))
                    }
                    Some(Column::IdempotencyKey | Column::EndpointId | Column::OrderingKey) => {
                        !att.atthasdef && !att.attnotnull
                    }
                    // Given a value by both the statement and the direct insert.
                    Some(_) => true,
                }
            })
    }
}

/// The argument list of `e` when it is a call of the function `funcid`
/// (null for a call without arguments); None when it is anything else.
///
/// # Safety
/// `e` must be a valid expression node.
unsafe fn call_args(e: *mut pg_sys::Node, funcid: u32) -> Option<*mut pg_sys::List> {
    // SAFETY: a node's tag is always readable; a FuncExpr's fields then are.
    unsafe {
        let f = e.cast::<pg_sys::FuncExpr>();
        ((*e).type_ == pg_sys::NodeTag::T_FuncExpr && (*f).funcid == pg_sys::Oid::from(funcid))
            .then(|| (*f).args)
    }
}

/// True when `e` is a call of the function `funcid` without arguments.
///
/// # Safety
/// `e` must be a valid expression node.
unsafe fn is_call_of(e: *mut pg_sys::Node, funcid: u32) -> bool {
    // SAFETY: the caller's contract.
    unsafe { call_args(e, funcid) }.is_some_and(|args| args.is_null())
}

/// True when `e` is `nextval(<sequence>::regclass)`.
///
/// # Safety
/// `e` must be a valid expression node.
unsafe fn is_nextval_of(e: *mut pg_sys::Node, sequence: pg_sys::Oid) -> bool {
    // SAFETY: the caller's contract; a one-element argument list's cell
    // holds a node, and a Const's fields are readable once its tag is.
    unsafe {
        let Some(args) = call_args(e, pg_sys::F_NEXTVAL) else {
            return false;
        };
        if args.is_null() || (*args).length != 1 {
            return false;
        }
        let arg = (*(*args).elements).ptr_value.cast::<pg_sys::Node>();
        (*arg).type_ == pg_sys::NodeTag::T_Const && {
            let c = arg.cast::<pg_sys::Const>();
            !(*c).constisnull
                && (*c).consttype == pg_sys::REGCLASSOID
                && pg_sys::Oid::from((*c).constvalue.value() as u32) == sequence
        }
    }
}

/// True when `relid` is the partition an INSERT into `webhook.events`
/// routes rows of `slot` to (its list bound holds `slot`).
///
/// # Safety
/// Must run in a transaction (it opens `webhook.events`).
unsafe fn routed_here(relid: pg_sys::Oid, namespace: pg_sys::Oid, slot: i16) -> bool {
    let Some(parent) = webhook_relation(namespace, c"events") else {
        return false;
    };
    // SAFETY: the parent exists; it is locked as an INSERT into it would
    // lock it (until the transaction ends), and its partition descriptor
    // (list bounds: one datum per value, each mapped to a partition
    // index) is read while it is open.
    unsafe {
        let rel = pg_sys::table_open(parent, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        let desc = pg_sys::RelationGetPartitionDesc(rel, true);
        let mut found = false;
        if !desc.is_null() && !(*desc).boundinfo.is_null() {
            let bounds = &*(*desc).boundinfo;
            // PARTITION_STRATEGY_LIST: the character 'l' on every major (a
            // #define in 15, an enum member of that value since 16).
            if bounds.strategy as u8 == b'l' {
                for i in 0..bounds.ndatums.max(0) as usize {
                    let value = (**bounds.datums.add(i)).value() as i16;
                    if value == slot {
                        let index = *bounds.indexes.add(i);
                        found = index >= 0 && *(*desc).oids.add(index as usize) == relid;
                        break;
                    }
                }
            }
        }
        pg_sys::table_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        found
    }
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
        let attrs = attributes(desc);
        let mut plain = class.relkind as u8 == pg_sys::RELKIND_RELATION
            && !class.relhastriggers
            && !class.relhasrules
            && !class.relrowsecurity;
        let constr = (*desc).constr;
        if !constr.is_null() && ((*constr).num_check > 0 || (*constr).has_generated_stored) {
            plain = false;
        }
        let mut with_namespace = false;
        let mut with_endpoint = false;
        let mut with_key = false;
        let mut found = 0;
        let mut columns = Vec::with_capacity(attrs.len());
        for att in &attrs {
            if att.attisdropped {
                columns.push(None);
                continue;
            }
            let name = CStr::from_ptr(att.attname.data.as_ptr());
            let column = Column::of(name, att.atttypid);
            if matches!(column, Some(Column::IdNamespace)) {
                with_namespace = true;
            }
            if matches!(column, Some(Column::EndpointId)) {
                with_endpoint = true;
            }
            if matches!(column, Some(Column::OrderingKey)) {
                with_key = true;
            }
            if att.attgenerated != 0 || column.is_none() {
                plain = false;
            }
            columns.push(column);
            found += 1;
        }
        // Each name appears once in a table, so nine (to twelve) matches
        // are all of them.
        let expected = COLUMNS_0_2
            + usize::from(with_namespace)
            + usize::from(with_endpoint)
            + usize::from(with_key);
        let plain = plain && found == expected;
        (plain.then_some(columns), with_namespace)
    }
}

/// Copies of the attributes of `desc`, on every major: PostgreSQL 18 put
/// an array of compact attributes first in `TupleDescData`, and pgrx's
/// `PgTupleDesc` knows where the full ones sit on each.
///
/// # Safety
/// `desc` must be a valid tuple descriptor.
unsafe fn attributes(desc: pg_sys::TupleDesc) -> Vec<pg_sys::FormData_pg_attribute> {
    // SAFETY: the caller's; unchecked, so that dropping the wrapper neither
    // releases nor frees the descriptor it borrows.
    unsafe {
        pgrx::PgTupleDesc::from_pg_unchecked(desc)
            .iter()
            .copied()
            .collect()
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
