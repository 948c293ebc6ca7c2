//! The isolation level of the worker's writes: READ COMMITTED, whatever the
//! database's default.
//!
//! The claim (fan-out, then `FOR UPDATE SKIP LOCKED`), the recording and
//! the maintenance are written for READ COMMITTED, PostgreSQL's default:
//! each statement sees what committed before it began, and a row another
//! session changed meanwhile is read again rather than refused. A database
//! or role may default to REPEATABLE READ or SERIALIZABLE for its
//! applications (`default_transaction_isolation`), and may be changed to
//! at any time; there a claim meeting a delivery another worker just
//! recorded would fail (40001), and the SQL flavor's fan-out refuses to run
//! at all (0A000: it needs the latest snapshot, see
//! sql/plain/30_transactions.sql). So each write runs in a `START
//! TRANSACTION ISOLATION LEVEL READ COMMITTED` … `COMMIT` of its own.
//!
//! Not `SET default_transaction_isolation` once per session: behind a
//! transaction-mode pooler the next transaction may run on another server
//! connection, which never saw the SET; nor the start-up packet's
//! `options`, which pgbouncer refuses; nor only where a connection's
//! default was found to differ when it opened: a pooler's server
//! connections opened after an `ALTER DATABASE … SET` would start in the
//! new level. An explicit transaction stays on one server connection from
//! BEGIN to COMMIT, and the three are pipelined: one round trip, as the
//! statement alone (BENCHMARKS.md measured the drain the same).
//!
//! Must not: know what the statements are (queries.rs).

use crate::db::queries;
use std::future::Future;
use tokio_postgres::Client;

/// Runs `call`, one statement on `client`, in a READ COMMITTED transaction
/// of its own, pipelined: START TRANSACTION, the statement and COMMIT go
/// out together. (`biased`: polled in that order, each sends its message
/// when first polled.) A failed statement leaves the transaction aborted,
/// which the COMMIT then ends as a rollback; its error is returned, else a
/// failed COMMIT's.
pub async fn at_read_committed<T>(
    client: &Client,
    call: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, tokio_postgres::Error> {
    let (begun, result, committed) = tokio::join!(
        biased;
        client.batch_execute(queries::BEGIN_READ_COMMITTED),
        call,
        client.batch_execute(queries::COMMIT),
    );
    begun?;
    let value = result?;
    committed?;
    Ok(value)
}
