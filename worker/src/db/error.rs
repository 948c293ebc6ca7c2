//! The database boundary's error: what a call to PostgreSQL can end in,
//! and which of those are worth trying again.

/// A database call failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server or the connection reported an error.
    #[error("database error")]
    Postgres(#[from] tokio_postgres::Error),
    /// No answer within the worker's bound (`--db-timeout-ms`): the server
    /// is stuck or the connection is half-open (after a failover, say).
    /// The connection is given up.
    #[error("no answer from the database within {0:?}")]
    TimedOut(std::time::Duration),
    /// The answer lacks a column the worker reads: an extension whose SQL
    /// does not match this worker (the version check should have said so).
    #[error("the database's answer has no {0} column; is the extension at this worker's version?")]
    Unreadable(&'static str),
}

impl DbError {
    /// The SQLSTATE, when the server answered with an error.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Self::Postgres(e) => e.code(),
            Self::TimedOut(_) | Self::Unreadable(_) => None,
        }
    }

    /// The underlying driver error, for logs.
    pub fn cause(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Self::Postgres(e) => Some(e),
            Self::TimedOut(_) | Self::Unreadable(_) => None,
        }
    }

    /// True when the connection is gone or given up (reconnect rather than retry).
    pub fn is_closed(&self) -> bool {
        match self {
            Self::Postgres(e) => e.is_closed(),
            Self::TimedOut(_) => true,
            Self::Unreadable(_) => false,
        }
    }

    /// True when the same statement may well succeed if sent again: no
    /// answer, a lost connection, or a SQLSTATE of the classes that say so
    /// (08 connection, 40 serialization or deadlock, 53 resources, 57
    /// operator intervention such as a shutdown or a cancel, 25006 a
    /// read-only server during a failover). Anything else is the
    /// statement's own fault and will fail again.
    pub fn is_transient(&self) -> bool {
        if matches!(self, Self::Unreadable(_)) {
            return false;
        }
        match self.code() {
            None => true,
            Some(code) => {
                let c = code.code();
                c.starts_with("08")
                    || c.starts_with("40")
                    || c.starts_with("53")
                    || c.starts_with("57")
                    || c == "25006"
            }
        }
    }
}

/// Runs a database call with a bound on its wait (see [`DbError::TimedOut`]).
pub async fn bounded<T>(
    limit: std::time::Duration,
    call: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DbError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DbError::TimedOut(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_transient_and_closes_the_connection() {
        let e = DbError::TimedOut(std::time::Duration::from_secs(1));
        assert!(e.is_transient() && e.is_closed() && e.code().is_none());
    }
}
