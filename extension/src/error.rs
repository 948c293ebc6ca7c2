//! The extension's errors, each mapped to a specific SQLSTATE so that callers
//! can tell bad input (22023) from a policy refusal (42501) or a limit (54000).

use pg_webhook_protocol::destination::DestinationError;
use pg_webhook_protocol::SecretError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;

/// Raises an ERROR with `code` and `message` at once (for code that cannot
/// return a `Result`: the capture trigger and its helpers).
pub(crate) fn raise(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    ErrorReport::new(code, message.into(), "pg_webhook").report(pgrx::PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) does not return")
}

/// Errors raised by the extension's Rust functions.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A subscription URL that is malformed, not http(s), or a refused destination.
    #[error("invalid webhook URL: {0}")]
    Url(#[from] DestinationError),
    /// A signing secret that is not `whsec_<base64 of 24 to 64 bytes>`.
    #[error("invalid signing secret: {0}")]
    Secret(#[from] SecretError),
    /// Event data over `pg_webhook.max_payload_bytes`.
    #[error("webhook payload is {bytes} bytes, over the limit of {max} bytes")]
    PayloadTooLarge { bytes: i64, max: i32 },
    /// The operating system's random source failed.
    #[error("could not read random bytes for a signing secret")]
    Random,
}

impl From<Error> for ErrorReport {
    fn from(e: Error) -> Self {
        let (code, hint) = match &e {
            Error::Url(DestinationError::Forbidden { .. }) => (
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                Some("A superuser may allow such targets with: set pg_webhook.allow_private_targets = on"),
            ),
            Error::Url(_) => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                Some("Use an absolute http:// or https:// URL, such as 'https://example.com/webhooks'."),
            ),
            Error::Secret(_) => (
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                Some("Pass null to have a secret generated, or a whsec_ secret from another Standard Webhooks provider."),
            ),
            Error::PayloadTooLarge { .. } => (
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                Some("Send a smaller payload (for example an id to fetch), or have a superuser raise pg_webhook.max_payload_bytes."),
            ),
            Error::Random => (PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, None),
        };
        let report = ErrorReport::new(code, e.to_string(), "pg_webhook");
        match hint {
            Some(h) => report.set_hint(h),
            None => report,
        }
    }
}
