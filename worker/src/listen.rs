//! The wake-up path: a dedicated connection LISTENs on `pg_webhook_wake` and
//! turns each notification into a permit on a `Notify`. Permits coalesce, so
//! a burst of commits costs the claim loop one wake-up.
//!
//! NOTIFY is only a hint: notifications sent while this connection is down
//! are lost, so after every (re)connect the loop is woken once, and the claim
//! loop's own timer (next due time, poll interval) remains the fallback.
//!
//! Must not: claim or record anything.

use crate::events::{Events, WorkerEvent};
use crate::metrics::{Connection, Metrics};
use crate::pgtls::PgTls;
use crate::queries;
use futures_util::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Keeps a LISTEN connection up until `cancel` fires.
pub(crate) async fn run(
    pg: tokio_postgres::Config,
    tls: PgTls,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    events: Events,
    metrics: Arc<Metrics>,
) {
    let mut backoff = RECONNECT_MIN;
    let mut first = true;
    loop {
        if !first {
            metrics.reconnected(Connection::Listen);
        }
        first = false;
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listen_once(&pg, &tls, &wake, &events) => r,
        };
        match result {
            Ok(()) => tracing::warn!("LISTEN connection closed by the server; reconnecting"),
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; reconnecting in {backoff:?}")
            }
        }
        // Whatever was notified meanwhile is lost: look at the queue now.
        wake.notify_one();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

/// Connects, LISTENs, and forwards notifications until the connection ends.
async fn listen_once(
    pg: &tokio_postgres::Config,
    tls: &PgTls,
    wake: &Notify,
    events: &Events,
) -> Result<(), tokio_postgres::Error> {
    match tls.connector() {
        Some(connector) => {
            let (client, connection) = pg.connect(connector).await?;
            listen_on(client, connection, wake, events).await
        }
        None => {
            let (client, connection) = pg.connect(NoTls).await?;
            listen_on(client, connection, wake, events).await
        }
    }
}

/// LISTENs on `client` and forwards notifications until `connection` ends.
async fn listen_on<S, T>(
    client: tokio_postgres::Client,
    mut connection: tokio_postgres::Connection<S, T>,
    wake: &Notify,
    events: &Events,
) -> Result<(), tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The connection must be polled for the LISTEN to complete, and it is
    // also where notifications arrive: drive it here rather than in a
    // spawned task, so that its end is this function's end.
    let mut listened = false;
    let listen = client.batch_execute(queries::LISTEN);
    tokio::pin!(listen);
    loop {
        tokio::select! {
            r = &mut listen, if !listened => {
                r?;
                listened = true;
                events.emit(WorkerEvent::Listening);
                // Anything committed before LISTEN took effect is visible now.
                wake.notify_one();
            }
            msg = poll_fn(|cx| connection.poll_message(cx)) => match msg {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}
