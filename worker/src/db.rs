//! Database connections and the start-up compatibility check.
//!
//! Each connection is driven by its own task. The worker keeps three: one to
//! claim, one to record (so recording never waits behind a claim), one to
//! LISTEN (on `--listen-url`: behind a transaction-mode pooler, LISTEN needs
//! a direct connection), plus one for the maintenance.
//!
//! TLS: as the connection string's `sslmode` and `sslrootcert` say, the way
//! libpq reads them (see pgtls.rs).

use crate::error::{DbError, Error};
use crate::pgtls::PgTls;
use crate::queries;
use tokio_postgres::{Client, NoTls};

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
/// own defaults wait for hours. `raw` is the connection string as given, to
/// leave alone what the user set.
pub fn bound_waits(pg: &mut tokio_postgres::Config, raw: &str) {
    let given = |key: &str| raw.to_ascii_lowercase().contains(key);
    if !given("connect_timeout") {
        pg.connect_timeout(std::time::Duration::from_secs(10));
    }
    if !given("keepalives") {
        pg.keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(15))
            .keepalives_interval(std::time::Duration::from_secs(5))
            .keepalives_retries(3);
    }
    if !given("tcp_user_timeout") {
        pg.tcp_user_timeout(std::time::Duration::from_secs(30));
    }
}

/// Opens a connection (with TLS as `tls` says) and spawns the task that drives it.
pub async fn connect(pg: &tokio_postgres::Config, tls: &PgTls) -> Result<Client, DbError> {
    let client = match tls.connector() {
        Some(connector) => {
            let (client, connection) = pg.connect(connector).await?;
            tokio::spawn(drive(connection));
            client
        }
        None => {
            let (client, connection) = pg.connect(NoTls).await?;
            tokio::spawn(drive(connection));
            client
        }
    };
    Ok(client)
}

async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::warn!(error = %e, "database connection closed");
    }
}

/// Refuses to run against a database without the extension, or with a
/// version of another `major.minor`.
pub async fn check_extension(client: &Client) -> Result<String, Error> {
    let row = client
        .query_typed_opt(queries::EXTENSION_VERSION, &[])
        .await
        .map_err(DbError::from)?;
    let found: String = match row {
        None => return Err(Error::ExtensionMissing),
        Some(r) => r.get(0),
    };
    let prefix = SUPPORTED_EXTENSION.trim_end_matches('x');
    if !found.starts_with(prefix) {
        return Err(Error::ExtensionVersion {
            found,
            supported: SUPPORTED_EXTENSION,
        });
    }
    Ok(found)
}
