//! PostgreSQL 18's virtual generated columns, computed for a captured row.
//!
//! Why: PostgreSQL never computes a virtual generated column when triggers
//! fire ("in the C language interface, their content is undefined in a
//! trigger function"), while a SELECT, `to_json(t)` included, shows its
//! value. A receiver must see the row as SQL shows it, so the capture
//! evaluates each virtual column's generation expression against the row,
//! the expression the planner itself substitutes for such a column
//! (`build_generation_expression`), and converts the completed row.
//!
//! Before 18 there are no virtual columns, and a table without one costs a
//! flag test per row.
//!
//! Must not: change the stored row (the completed one is a copy).

use pgrx::pg_sys;

/// `tuple` with its virtual generated columns computed: a new tuple, or
/// `tuple` itself when `rel` has no virtual generated column.
///
/// # Safety
/// `rel` must be the open relation `tuple` (not null) belongs to.
#[cfg(feature = "pg18")]
pub(crate) unsafe fn complete(
    rel: pg_sys::Relation,
    tuple: pg_sys::HeapTuple,
) -> pg_sys::HeapTuple {
    // SAFETY: rd_att of an open relation, natts attributes, and a tuple of
    // it; the expression context, its slot and every datum they make live
    // until heap_form_tuple has copied the values.
    unsafe {
        let desc = (*rel).rd_att;
        let constr = (*desc).constr;
        if constr.is_null() || !(*constr).has_generated_virtual {
            return tuple;
        }
        let natts = (*desc).natts as usize;
        let mut values = vec![pg_sys::Datum::from(0); natts];
        let mut nulls = vec![false; natts];
        pg_sys::heap_deform_tuple(tuple, desc, values.as_mut_ptr(), nulls.as_mut_ptr());

        let econtext = pg_sys::CreateStandaloneExprContext();
        let slot = pg_sys::MakeSingleTupleTableSlot(desc, &pg_sys::TTSOpsHeapTuple);
        pg_sys::ExecStoreHeapTuple(tuple, slot, false);
        // The generation expression's Vars (varno 1) read the scan tuple.
        (*econtext).ecxt_scantuple = slot;
        let virtual_ = pg_sys::ATTRIBUTE_GENERATED_VIRTUAL as std::ffi::c_char;
        for (i, att) in pgrx::PgTupleDesc::from_pg_unchecked(desc)
            .iter()
            .enumerate()
        {
            if att.attisdropped || att.attgenerated != virtual_ {
                continue;
            }
            let expr = pg_sys::build_generation_expression(rel, i as i32 + 1);
            // Planned as the executor would (operators' functions looked
            // up, constants folded), then evaluated in the context's
            // per-tuple memory, as ExecEvalExprSwitchContext does.
            let expr = pg_sys::expression_planner(expr.cast());
            let state = pg_sys::ExecInitExpr(expr, std::ptr::null_mut());
            let eval = (*state).evalfunc.expect("ExecInitExpr sets evalfunc");
            let old = pg_sys::MemoryContextSwitchTo((*econtext).ecxt_per_tuple_memory);
            let mut isnull = false;
            values[i] = eval(state, econtext, &mut isnull);
            pg_sys::MemoryContextSwitchTo(old);
            nulls[i] = isnull;
        }
        let completed = pg_sys::heap_form_tuple(desc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::ExecDropSingleTupleTableSlot(slot);
        pg_sys::FreeExprContext(econtext, true);
        completed
    }
}

/// Before PostgreSQL 18 there are no virtual generated columns.
///
/// # Safety
/// None needed; the signature matches PostgreSQL 18's.
#[cfg(not(feature = "pg18"))]
pub(crate) unsafe fn complete(
    _rel: pg_sys::Relation,
    tuple: pg_sys::HeapTuple,
) -> pg_sys::HeapTuple {
    tuple
}
