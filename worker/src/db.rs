//! Database connections and the start-up compatibility check.
//!
//! Each connection is driven by its own task. The worker keeps three: one to
//! claim, one to record (so recording never waits behind a claim), one to
//! LISTEN (on `--listen-url`: behind a transaction-mode pooler, LISTEN needs
//! a direct connection), plus one for the maintenance.
//!
//! TLS: connections are made without TLS (`sslmode=prefer` falls back to
//! plain); put the worker next to the database or behind a TLS tunnel.

use crate::error::{DbError, Error};
use crate::queries;
use tokio_postgres::{Client, NoTls};

/// The extension versions this worker speaks (its own `major.minor`).
pub const SUPPORTED_EXTENSION: &str = concat!(
    env!("CARGO_PKG_VERSION_MAJOR"),
    ".",
    env!("CARGO_PKG_VERSION_MINOR"),
    ".x"
);

/// Opens a connection and spawns the task that drives it.
pub async fn connect(pg: &tokio_postgres::Config) -> Result<Client, DbError> {
    let (client, connection) = pg.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection closed");
        }
    });
    Ok(client)
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
