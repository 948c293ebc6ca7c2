//! Opening connections, keeping them up, and the start-up compatibility
//! check.
//!
//! Each connection is driven by its own task. The worker keeps three long-
//! lived ones: one to claim, one to record (so recording never waits behind
//! a claim), one to LISTEN (on `--listen-url`: behind a transaction-mode
//! pooler, LISTEN needs a direct connection); the maintenance and the
//! status page open theirs when they need them.
//!
//! TLS: as the connection string's `sslmode` and `sslrootcert` say, the way
//! libpq reads them (see tls.rs).
//!
//! Must not: know what is sent over the connections (queries.rs).

use crate::db::error::DbError;
use crate::db::queries;
use crate::db::tls::PgTls;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

/// The extension versions this worker speaks (its own `major.minor`).
pub const SUPPORTED_EXTENSION: &str = concat!(
    env!("CARGO_PKG_VERSION_MAJOR"),
    ".",
    env!("CARGO_PKG_VERSION_MINOR"),
    ".x"
);

/// Bounds every wait on a connection that the connection string leaves
/// open: connecting (10 s), an idle peer that vanished (TCP keepalives: 15 s
/// idle, then 3 probes 5 s apart) and sent data never acknowledged (TCP user
/// timeout, 30 s: a half-open connection after a failover). tokio-postgres'
/// own defaults wait for hours. `given` says which settings the connection
/// string set itself (by key, as tls.rs tokenized it), to leave them alone.
pub fn bound_waits(pg: &mut tokio_postgres::Config, given: &dyn Fn(&str) -> bool) {
    if !given("connect_timeout") {
        pg.connect_timeout(Duration::from_secs(10));
    }
    let keepalives = [
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_retries",
    ];
    if !keepalives.iter().any(|k| given(k)) {
        pg.keepalives(true)
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
    }
    if !given("tcp_user_timeout") {
        pg.tcp_user_timeout(Duration::from_secs(30));
    }
}

/// Opens a connection (with TLS as `tls` says) and spawns the task that
/// drives it.
pub async fn connect(pg: &tokio_postgres::Config, tls: &PgTls) -> Result<Client, DbError> {
    Ok(open(pg, tls, None).await?.0)
}

/// Opens a connection and spawns the task that drives it; each notification
/// that arrives on it (after a LISTEN) wakes `notified`. The task ends with
/// the connection; its handle says how.
///
/// The one place that connects: TLS or not is decided here only.
/// (tokio-postgres-rustls cannot stand in for "no TLS": it refuses a
/// connection without a host name to check, which is what a Unix-domain
/// socket is, so `disable` and sockets get tokio-postgres' `NoTls`.)
pub async fn open(
    pg: &tokio_postgres::Config,
    tls: &PgTls,
    notified: Option<Arc<Notify>>,
) -> Result<(Client, JoinHandle<Result<(), tokio_postgres::Error>>), DbError> {
    Ok(match tls.connector() {
        Some(connector) => {
            let (client, connection) = pg.connect(connector).await?;
            (client, tokio::spawn(drive(connection, notified)))
        }
        None => {
            let (client, connection) = pg.connect(NoTls).await?;
            (client, tokio::spawn(drive(connection, notified)))
        }
    })
}

/// Polls a connection until it ends, waking `notified` on notifications.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notified: Option<Arc<Notify>>,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(_))) => {
                if let Some(n) = &notified {
                    n.notify_one();
                }
            }
            // A WARNING is the database telling the operator something (a
            // subscription filter raising errors, say): logged as one. The
            // rest (NOTICE, INFO) is chatter.
            Some(Ok(AsyncMessage::Notice(notice))) if notice.severity() == "WARNING" => {
                tracing::warn!(
                    warning = %notice.message(),
                    hint = notice.hint().unwrap_or(""),
                    "warning from the database"
                )
            }
            Some(Ok(AsyncMessage::Notice(notice))) => {
                tracing::debug!(notice = %notice.message(), "notice from the database")
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "database connection closed");
                return Err(e);
            }
            None => return Ok(()),
        }
    }
}

/// How pg_webhook was installed in a database: the same schema, API and
/// delivery semantics, told apart for the log, `/readyz` and the status
/// page (what differs is in the README's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `create extension pg_webhook` with its C library.
    Extension,
    /// The SQL flavor, installed by its script (`psql -f pg_webhook--<version>.sql`).
    Sql,
    /// The SQL flavor installed as a pg_tle extension.
    SqlTle,
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Extension => "extension",
            Self::Sql => "SQL (script)",
            Self::SqlTle => "SQL (pg_tle extension)",
        })
    }
}

/// What a database has: pg_webhook's version and flavor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The installed version, e.g. `0.3.0`.
    pub version: String,
    /// How it was installed.
    pub flavor: Flavor,
}

impl std::fmt::Display for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {} flavor", self.version, self.flavor)
    }
}

/// Why the database cannot be served by this worker.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    /// The database has no pg_webhook.
    #[error("pg_webhook is not installed in this database; run CREATE EXTENSION pg_webhook; first (or, where no extension can be added, the SQL flavor's script: see the README)")]
    Missing,
    /// The installed version is one this worker does not speak.
    #[error("pg_webhook is at version {found}, but this worker supports {supported}; upgrade it (ALTER EXTENSION pg_webhook UPDATE;, or the SQL flavor's upgrade script) or use a matching worker")]
    Version {
        /// installed version
        found: String,
        /// versions this worker accepts
        supported: &'static str,
    },
    /// The check itself failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Refuses a database without pg_webhook, or with a version of another
/// `major.minor`; returns the installed version and flavor. At start-up
/// and on `/readyz`.
pub async fn check_extension(client: &Client) -> Result<Installed, ExtensionError> {
    let row = client
        .query_typed_one(queries::INSTALLED, &[])
        .await
        .map_err(DbError::from)?;
    let (extversion, capture_language, script): (Option<String>, Option<String>, bool) =
        (row.get(0), row.get(1), row.get(2));
    let library = capture_language.as_deref() == Some("c");
    let installed = match (extversion, script) {
        (Some(version), _) => Installed {
            version,
            flavor: if library || capture_language.is_none() {
                Flavor::Extension
            } else {
                Flavor::SqlTle
            },
        },
        (None, true) => Installed {
            version: client
                .query_typed_one(queries::SQL_FLAVOR_VERSION, &[])
                .await
                .map_err(DbError::from)?
                .get(0),
            flavor: Flavor::Sql,
        },
        (None, false) => return Err(ExtensionError::Missing),
    };
    let prefix = SUPPORTED_EXTENSION.trim_end_matches('x');
    if !installed.version.starts_with(prefix) {
        return Err(ExtensionError::Version {
            found: installed.version,
            supported: SUPPORTED_EXTENSION,
        });
    }
    Ok(installed)
}

/// On a Citus node: how many endpoints the coordinator published that this
/// node lacks or has otherwise (`webhook._cluster_behind`); 0 elsewhere.
pub async fn cluster_behind(client: &Client) -> Result<i64, DbError> {
    let row = client
        .query_typed_opt(queries::CLUSTER_BEHIND, &[])
        .await
        .map_err(DbError::from)?;
    Ok(row.map_or(0, |r| r.get(0)))
}

/// The wait between two tries of a long-lived connection that failed
/// (claim, record, LISTEN): doubling from 100 ms to at most 5 s, back to
/// the start after a success. One schedule for all of them: a database back
/// from a restart is noticed within 5 s by each, and a failed try every 5 s
/// costs nothing worth saving.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Backoff {
    /// The first wait.
    pub const MIN: Duration = Duration::from_millis(100);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(5);

    /// The wait the next [`Backoff::pause`] takes.
    pub fn delay(&self) -> Duration {
        self.next
    }

    /// A success: the next failure waits [`Backoff::MIN`] again.
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }

    /// Waits the current delay (cut short by `cancel`) and doubles it.
    pub async fn pause(&mut self, cancel: &CancellationToken) {
        let delay = self.step();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }

    /// Waits the current delay, whatever happens meanwhile, and doubles it
    /// (for work that must be tried again even when shutting down).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.step()).await;
    }

    /// The current delay; doubles it for next time.
    fn step(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backoff_doubles_up_to_its_bound_and_resets() {
        // Cancelled: each pause returns at once, and the schedule still moves.
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut b = Backoff::default();
        let mut seen = Vec::new();
        for _ in 0..8 {
            seen.push(b.delay());
            b.pause(&cancel).await;
        }
        assert_eq!(
            seen[..3],
            [Backoff::MIN, Backoff::MIN * 2, Backoff::MIN * 4]
        );
        assert_eq!(*seen.last().unwrap(), Backoff::MAX);
        b.reset();
        assert_eq!(b.delay(), Backoff::MIN);
    }
}
