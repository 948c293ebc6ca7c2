//! Harness for the end-to-end tests: a database per test in the throwaway
//! cluster started by `tests/run.sh`, an HTTP receiver on 127.0.0.1 with a
//! scriptable answer, the worker (in-process or as its real binary), and
//! waits that end on a condition or fail loudly at a deadline.
//!
//! One file per thing it starts: db.rs (a database per test, LISTEN),
//! receiver.rs, worker.rs (in-process), network.rs (blackhole, proxy),
//! cluster.rs (pgbouncer, TLS and whole clusters, PostgreSQL's programs),
//! ca.rs, browser.rs, snapshot.rs (what a database holds, compared); this file holds the connection and the waits.
//!
//! Must not: sleep for a fixed time in place of waiting for a condition.
#![warn(missing_docs)]

mod browser;
mod ca;
mod cluster;
mod db;
mod flavor;
mod killed;
mod network;
mod receiver;
mod snapshot;
mod worker;

pub use browser::chromium;
pub use ca::{version_1_certificate, TestCa};
pub use cluster::{has_library, pg_script, pg_tool, pg_tool_of, OwnCluster, PgBouncer, TlsCluster};
pub use db::{attempt_due_once, Listener, TestDb};
pub use flavor::{
    flavor, install, install_over, install_sql_flavor, let_owner_take, set_setting, sql_script,
    Flavor, INSTALLER, WORKER_LOGIN,
};
pub use killed::KilledInTurn;
pub use network::{Blackhole, ForwardProxy};
pub use receiver::{Received, Receiver};
pub use snapshot::{snapshot, Snapshot};
pub use worker::RunningWorker;

use std::future::Future;
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// Default deadline of every wait.
pub const WAIT: Duration = Duration::from_secs(30);

/// Connection string of the cluster's admin database (set by tests/run.sh).
pub fn admin_dsn() -> String {
    std::env::var("PG_WEBHOOK_TEST_DSN").expect(
        "PG_WEBHOOK_TEST_DSN is not set: run the end-to-end tests with `bash tests/run.sh`, \
         which starts a throwaway PostgreSQL cluster and installs the extension",
    )
}

/// Connects and drives the connection in a task.
pub async fn connect(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {dsn}: {e}"));
    tokio::spawn(connection);
    client
}

/// The first column of the rows `sql` returns (run by `client` with
/// `params`), in their order; panics on an error.
pub async fn column<T>(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    client
        .query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Connects to `dsn` as [`connect`] does, and hands each notice the server
/// sends on that connection (a WARNING, a NOTICE) to the receiver.
pub async fn connect_with_notices(
    dsn: &str,
) -> (
    Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::error::DbError>,
) {
    let (client, mut connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {dsn}: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notice(notice) = message {
                let _ = tx.send(notice);
            }
        }
    });
    (client, rx)
}

/// Path of the real `pg-webhook-worker` binary (built by tests/run.sh).
pub fn worker_binary() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("PG_WEBHOOK_WORKER_BIN") {
        return p.into();
    }
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pg-webhook-worker");
    assert!(p.exists(), "{} not found: build it with `cargo build -p pg-webhook-worker` or set PG_WEBHOOK_WORKER_BIN", p.display());
    p
}

/// `path` in this repository.
pub fn repo_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The Python of the examples' venv, which has the official Standard
/// Webhooks package (tests/run.sh sets it up), or `PG_WEBHOOK_EXAMPLES_PYTHON`.
pub fn examples_python() -> std::path::PathBuf {
    std::env::var("PG_WEBHOOK_EXAMPLES_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_path("examples/python/.venv/bin/python"))
}

/// Runs `f` and fails the test if it takes longer than the wait deadline.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}
