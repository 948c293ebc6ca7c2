//! The worker's own HTTP server, on `--metrics-addr` (off by default):
//! `/metrics` (Prometheus text format), `/healthz` (the process is alive),
//! `/readyz` (the database answers and has a compatible extension), and the
//! read-only status page at `/` (status_page.rs). It reads the database on
//! a connection of its own, never the claim's.
//!
//! Must not: change anything; every route is read-only.

use crate::db::connect::{check_extension, connect};
use crate::db::queries;
use crate::db::tls::PgTls;
use crate::events::{Events, WorkerEvent};
use crate::metrics::{Connection, Metrics};
use crate::serve::status_page;
use crate::text::error_chain;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// How long a route waits for the database before answering without it.
const DB_TIMEOUT: Duration = Duration::from_secs(3);

struct Shared {
    pg: tokio_postgres::Config,
    tls: PgTls,
    metrics: Arc<Metrics>,
    worker_id: String,
    client: Mutex<Option<Client>>,
}

impl Shared {
    /// Runs `f` on the server's connection, (re)connecting as needed. A
    /// connection found dead by `f` itself (the server ended it since the
    /// last request) is replaced and `f` tried once more: a stale
    /// connection says nothing about the database, and /readyz must not
    /// report it.
    async fn with_db<T, E: std::error::Error>(
        &self,
        f: impl AsyncFn(&Client) -> Result<T, E>,
    ) -> Result<T, String> {
        let work = async {
            let mut guard = self.client.lock().await;
            for last_try in [false, true] {
                if guard.as_ref().is_none_or(|c| c.is_closed()) {
                    let reconnect = guard.is_some();
                    *guard = Some(
                        connect(&self.pg, &self.tls)
                            .await
                            .map_err(|e| error_chain(&e))?,
                    );
                    if reconnect {
                        self.metrics.reconnected(Connection::Status);
                    }
                }
                let client = guard.as_ref().expect("connected just above");
                match f(client).await {
                    Err(_) if !last_try && client.is_closed() => continue,
                    r => return r.map_err(|e| error_chain(&e)),
                }
            }
            Err("the database connection closed twice in a row".to_owned())
        };
        match tokio::time::timeout(DB_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("the database did not answer within {DB_TIMEOUT:?}")),
        }
    }
}

/// Binds `addr` and serves until `cancel` fires. Binding happens before it
/// returns (a port in use is a start-up error); the serving runs in a task.
pub(crate) async fn start(
    addr: SocketAddr,
    pg: tokio_postgres::Config,
    tls: PgTls,
    metrics: Arc<Metrics>,
    worker_id: String,
    cancel: CancellationToken,
    events: Events,
) -> Result<tokio::task::JoinHandle<()>, std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let shared = Arc::new(Shared {
        pg,
        tls,
        metrics,
        worker_id,
        client: Mutex::new(None),
    });
    let app = axum::Router::new()
        .route("/", get(status))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(shared);
    tracing::info!(%bound, "serving /metrics, /healthz, /readyz and the status page");
    events.emit(WorkerEvent::Serving(bound));
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics server failed");
        }
    }))
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    // The same check as at start-up (an extension, of a version this worker speaks).
    match shared.with_db(async |c| check_extension(c).await).await {
        Ok(installed) => {
            (StatusCode::OK, format!("ready: pg_webhook {installed}\n")).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    // The lag is read now; when the database is away the last value stays
    // (and database_reconnects tells the story).
    if let Ok(lag) = shared
        .with_db(async |c| {
            Ok::<_, tokio_postgres::Error>(
                c.query_typed_one(queries::QUEUE_LAG, &[])
                    .await?
                    .get::<_, f64>(0),
            )
        })
        .await
    {
        shared.metrics.set_queue_lag(lag);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    match shared.with_db(async |c| status_page::load(c).await).await {
        Ok(s) => Html(status_page::render(&s, &shared.worker_id)).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Html(format!(
                "<!DOCTYPE html><title>pg_webhook status</title><h1>pg_webhook</h1><p>The database is not reachable: {}</p>",
                maud::html! { (e) }.into_string()
            )),
        )
            .into_response(),
    }
}
