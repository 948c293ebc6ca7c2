//! The isolation level of the worker's writes: READ COMMITTED, whatever the
//! database's default.
//!
//! The claim (fan-out, then `FOR UPDATE SKIP LOCKED`), the recording and
//! the maintenance are written for READ COMMITTED, PostgreSQL's default:
//! each statement sees what committed before it began, and a row another
//! session changed meanwhile is read again rather than refused. A database
//! or role may default to REPEATABLE READ or SERIALIZABLE for its
//! applications (`default_transaction_isolation`); there a claim meeting a
//! delivery another worker just recorded fails (40001), and the SQL
//! flavor's fan-out refuses to run at all (0A000: it needs the latest
//! snapshot, see sql/plain/30_transactions.sql). So the worker reads each
//! connection's default when it opens it and, where it is not READ
//! COMMITTED, runs each write in a `START TRANSACTION ISOLATION LEVEL READ
//! COMMITTED` … `COMMIT` of its own.
//!
//! Not `SET default_transaction_isolation` once per session: behind a
//! transaction-mode pooler the next transaction may run on another server
//! connection, which never saw the SET; nor the start-up packet's
//! `options`, which pgbouncer refuses. An explicit transaction stays on one
//! server connection from BEGIN to COMMIT, and the three are pipelined: one
//! round trip, as the statement alone. Where the default is READ COMMITTED
//! (nearly everywhere) nothing more is sent.
//!
//! Must not: know what the statements are (queries.rs).

use crate::db::queries;
use std::future::Future;
use tokio_postgres::Client;

/// How a connection runs the worker's writes, as its session's default
/// isolation level requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// The session's default is READ COMMITTED: statements are sent as they are.
    Default,
    /// It is not: each write runs in an explicit READ COMMITTED transaction.
    Explicit,
}

impl Isolation {
    /// Reads the session's default isolation level (one round trip, when
    /// the connection is opened); logs once per connection when it is not
    /// READ COMMITTED, so that an operator sees why the worker sends more.
    pub async fn of(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let row = client
            .query_typed_one(queries::DEFAULT_ISOLATION, &[])
            .await?;
        let level: String = row.get(0);
        if level == "read committed" {
            return Ok(Self::Default);
        }
        tracing::info!(
            default_transaction_isolation = %level,
            "this connection's transactions default to another level than read committed; \
             the worker runs its own at read committed, each in an explicit transaction"
        );
        Ok(Self::Explicit)
    }

    /// Runs `call`, one statement on `client`, at READ COMMITTED. In an
    /// explicit transaction, pipelined: START TRANSACTION, the statement and
    /// COMMIT go out together and cost one round trip, as the statement
    /// alone does. (`biased`: polled in that order, each sends its message
    /// when first polled.) A failed statement leaves the transaction
    /// aborted, which the COMMIT then ends as a rollback; its error is
    /// returned, else a failed COMMIT's.
    pub async fn run<T>(
        self,
        client: &Client,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, tokio_postgres::Error> {
        if self == Self::Default {
            return call.await;
        }
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
}
