//! The worker's error types, one per boundary, each keeping its cause.

use crate::config::ConfigError;

/// A database call failed.
#[derive(Debug, thiserror::Error)]
#[error("database error")]
pub struct DbError(#[from] pub tokio_postgres::Error);

impl DbError {
    /// The SQLSTATE, when the server answered with an error.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        self.0.code()
    }

    /// True when the connection is gone (reconnect rather than retry).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Fatal errors: the worker cannot start or cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The database has no pg_webhook extension.
    #[error("the pg_webhook extension is not installed in this database; run CREATE EXTENSION pg_webhook; first")]
    ExtensionMissing,
    /// The extension's version is one this worker does not speak.
    #[error("the pg_webhook extension is at version {found}, but this worker supports {supported}; run ALTER EXTENSION pg_webhook UPDATE; or use a matching worker")]
    ExtensionVersion {
        /// installed version
        found: String,
        /// versions this worker accepts
        supported: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
    Http(#[source] crate::dispatch::ClientError),
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}")]
    Serve {
        /// the address asked for
        addr: std::net::SocketAddr,
        /// why
        #[source]
        source: std::io::Error,
    },
    /// A database call failed at start-up.
    #[error(transparent)]
    Db(#[from] DbError),
}
