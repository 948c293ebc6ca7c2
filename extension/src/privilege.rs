//! The capture's elevated window: storing an event with the extension
//! owner's rights, on behalf of a writer who has none on the webhook tables.
//!
//! The writer of a watched table may be anyone the table's owner lets
//! write, including a login with a schema of its own and a hostile
//! `search_path`. So the window
//! - is entered only to store an event that was built, whole, with the
//!   writer's own rights (trigger.rs): no code the writer can influence
//!   (a type's cast, an operator, a function) is reached from inside it;
//! - is a security-restricted operation, as PostgreSQL runs the index
//!   expressions of VACUUM and REFRESH MATERIALIZED VIEW as the table owner
//!   (`SECURITY_RESTRICTED_OPERATION`): nothing in it can `SET ROLE`, create
//!   temporary objects or otherwise leave state in the writer's session;
//! - resolves no name through the writer's `search_path`: the hot path
//!   looks its relations up by schema and name and runs no SQL, and every
//!   SQL statement it does run goes through [`with_safe_search_path`],
//!   which sets `search_path = pg_catalog, pg_temp` for that statement only.
//!
//! An ERROR inside the window aborts the (sub)transaction, which restores
//! the writer's identity and settings (PostgreSQL does both at abort).
//!
//! Must not: build the event (that happens as the writer), or run anything
//! a writer defined.

use crate::error::raise;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;

thread_local! {
    /// The extension's owner, looked up once per backend.
    static OWNER: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
}

/// The `search_path` every SQL statement of the elevated window runs with:
/// the system catalog first and the session's temporary schema last, so
/// that nothing the writer can create is found before a built-in
/// (PostgreSQL's own `GUC_SAFE_SEARCH_PATH`).
const SAFE_SEARCH_PATH: &std::ffi::CStr = c"pg_catalog, pg_temp";

/// Runs `f` (which runs SQL) with `search_path` set to
/// [`SAFE_SEARCH_PATH`], restoring the caller's on return. A nested
/// configuration level, as a function's `SET search_path` clause uses, so
/// that an ERROR in `f` restores it too.
pub(crate) fn with_safe_search_path<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: a new GUC nest level and a setting saved in it, as
    // fmgr_security_definer does for a function's SET clause; both are
    // undone by AtEOXact_GUC below, or by the abort of the transaction.
    let level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            SAFE_SEARCH_PATH.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        level
    };
    let out = f();
    // SAFETY: closes the level opened above.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    out
}

/// The extension's owner (looked up as the caller, with the safe
/// `search_path`: the lookup's `=` must not be the writer's).
fn owner() -> pg_sys::Oid {
    let cached = OWNER.get();
    if cached != pg_sys::InvalidOid {
        return cached;
    }
    let owner = with_safe_search_path(|| {
        Spi::get_one::<pg_sys::Oid>(
            "select e.extowner from pg_catalog.pg_extension e where e.extname = 'pg_webhook'",
        )
    })
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        raise(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            "the pg_webhook extension is not installed in this database",
        )
    });
    OWNER.set(owner);
    owner
}

/// Runs `f` as the extension's owner, as a security-restricted operation
/// (see the module docs), then switches back.
pub(crate) fn as_extension_owner<T>(f: impl FnOnce() -> T) -> T {
    let owner = owner();
    let (mut user, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: plain reads and writes of the session's current identity; the
    // flags mark the change as local (as SECURITY DEFINER functions do) and
    // the operation as restricted (as maintenance commands do).
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
        pg_sys::SetUserIdAndSecContext(
            owner,
            context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32
                | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
        );
    }
    let result = f();
    // SAFETY: restores what was read above.
    unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
    result
}
