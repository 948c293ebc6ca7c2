//! The worker's fatal error: why it cannot start. Everything after start-up
//! is retried instead (database, network), so this is the one error type
//! `run` returns; it wraps each lower layer's own error, keeping its cause.

use crate::config::ConfigError;
use crate::db::connect::ExtensionError;
use crate::db::error::DbError;
use crate::http::dispatch::ClientError;

/// Fatal errors: the worker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// The database has no usable pg_webhook extension.
    #[error(transparent)]
    Extension(#[from] ExtensionError),
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client")]
    Http(#[from] ClientError),
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
