//! The periodic maintenance: on the `--maintenance-schedule`, call
//! `webhook._maintenance()` (retention purge, auto-disable of failing
//! endpoints, old counters and secrets), on a connection of its own, and
//! log what it did. The SQL takes an advisory lock, so when several workers
//! share a database one of them does the work and the others skip.
//!
//! Must not: decide what to purge or disable (that is SQL's), or block the
//! delivery loop (it runs in its own task).

use crate::config::MaintenanceSchedule;
use crate::db::connect::connect;
use crate::db::error::bounded;
use crate::db::isolation::at_read_committed;
use crate::db::queries;
use crate::db::tls::PgTls;
use crate::events::{Events, WorkerEvent};
use crate::metrics::{Connection, Metrics};
use tokio_util::sync::CancellationToken;

/// Runs the maintenance on `schedule` until `cancel` fires.
pub(crate) async fn run(
    pg: tokio_postgres::Config,
    tls: PgTls,
    db_timeout: std::time::Duration,
    schedule: MaintenanceSchedule,
    cancel: CancellationToken,
    events: Events,
    metrics: std::sync::Arc<Metrics>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut connected_once = false;
    loop {
        let Some(wait) = schedule.until_next(chrono::Utc::now()) else {
            return; // off
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = match connect(&pg, &tls).await {
                Ok(c) => {
                    if connected_once {
                        metrics.reconnected(Connection::Maintenance);
                    }
                    connected_once = true;
                    Some(c)
                }
                Err(e) => {
                    tracing::warn!(error = %e, cause = ?e.cause(), "maintenance: cannot connect; trying at the next scheduled time");
                    continue;
                }
            };
        }
        let Some(c) = client.as_ref() else { continue };
        // The simple-query protocol: no prepared statement to keep (works
        // through a transaction-mode pooler), and this runs once a minute.
        // A purge may take a while on a big log: ten times the bound of the
        // other calls. Out of time, the connection is given up (the purge
        // is idempotent and runs again at the next schedule).
        let limit = db_timeout * 10;
        match bounded(
            limit,
            at_read_committed(c, c.simple_query(queries::MAINTENANCE)),
        )
        .await
        {
            Ok(messages) => {
                let report = messages.iter().find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                });
                match &report {
                    Some(done) => {
                        tracing::info!(report = %done, "maintenance done");
                        let purged = serde_json::from_str::<serde_json::Value>(done)
                            .ok()
                            .and_then(|r| r["events_purged"].as_u64())
                            .unwrap_or(0);
                        metrics.maintenance(purged);
                    }
                    None => tracing::debug!("maintenance: another worker is running it"),
                }
                events.emit(WorkerEvent::Maintenance(report));
            }
            Err(e) => {
                if e.is_closed() {
                    client = None;
                }
                tracing::warn!(error = %e, cause = ?e.cause(), "maintenance failed; it runs again at the next scheduled time")
            }
        }
    }
}
