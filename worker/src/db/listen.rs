//! The wake-up path: a dedicated connection LISTENs on `pg_webhook_wake` and
//! turns each notification into a permit on a `Notify`. Permits coalesce, so
//! a burst of commits costs the claim loop one wake-up.
//!
//! NOTIFY is only a hint: notifications sent while this connection is down
//! are lost, so after every (re)connect the loop is woken once, and the claim
//! loop's own timer (next due time, poll interval) remains the fallback.
//!
//! Must not: claim or record anything.

use crate::db::connect::{open, Backoff};
use crate::db::error::DbError;
use crate::db::queries;
use crate::db::tls::PgTls;
use crate::events::{Events, WorkerEvent};
use crate::metrics::{Connection, Metrics};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Keeps a LISTEN connection up until `cancel` fires.
pub(crate) async fn run(
    pg: tokio_postgres::Config,
    tls: PgTls,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    events: Events,
    metrics: Arc<Metrics>,
) {
    let mut backoff = Backoff::default();
    let mut listened_once = false;
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listen_once(&pg, &tls, &wake, || {
                // Counted once the LISTEN is in place again, not when
                // merely trying; and a success starts the backoff over.
                if listened_once {
                    metrics.reconnected(Connection::Listen);
                }
                listened_once = true;
                backoff.reset();
                events.emit(WorkerEvent::Listening);
            }) => r,
        };
        match result {
            Ok(()) => tracing::warn!("LISTEN connection closed by the server; reconnecting"),
            Err(e) => tracing::warn!(
                error = %e, cause = ?e.cause(),
                "LISTEN connection failed; reconnecting in {:?}", backoff.delay()
            ),
        }
        // Whatever was notified meanwhile is lost: look at the queue now.
        wake.notify_one();
        backoff.pause(&cancel).await;
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Connects, LISTENs (then calls `listening`), and lets the connection's
/// task wake `wake` on each notification until the connection ends.
async fn listen_once(
    pg: &tokio_postgres::Config,
    tls: &PgTls,
    wake: &Arc<Notify>,
    listening: impl FnOnce(),
) -> Result<(), DbError> {
    let (client, ended) = open(pg, tls, Some(wake.clone())).await?;
    client.batch_execute(queries::LISTEN).await?;
    listening();
    // Anything committed before LISTEN took effect is visible now.
    wake.notify_one();
    match ended.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        // The driving task panicked or was aborted: treat it as a lost connection.
        Err(_) => Ok(()),
    }
}
