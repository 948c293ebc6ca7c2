//! Writing outcomes back: the only writer of attempt rows and delivery state
//! transitions. Attempts are batched (everything waiting, up to
//! `MAX_RECORD_BATCH`) into one call of `webhook._record_attempts`, which moves
//! a delivery only while this worker still holds its lease.
//!
//! Must not: send HTTP or compute retry policy.

use crate::dispatch::Outcome;
use crate::error::DbError;
use crate::events::{Events, WorkerEvent};
use crate::metrics::{Connection, Metrics};
use crate::queries;
use crate::queue::Claim;
use crate::retry::Decision;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// Most attempts written by one statement.
pub const MAX_RECORD_BATCH: usize = 500;
/// How long the recorder waits for more outcomes before writing a batch.
const RECORD_GATHER: std::time::Duration = std::time::Duration::from_millis(5);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Give up writing a batch after this many failed tries when retrying cannot
/// help: after shutdown began, or when the server rejected the statement
/// itself. The leases then expire and the deliveries are sent again
/// (at-least-once), so nothing is lost.
const MAX_HOPELESS_TRIES: u32 = 5;

/// One finished attempt and the decision taken on it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// the delivery
    pub delivery_id: i64,
    /// the lease it was sent under
    pub lease_token: i64,
    /// the delivery's endpoint
    pub endpoint_id: i64,
    /// 1-based attempt number
    pub attempt: i32,
    /// when the request started
    pub started_at: SystemTime,
    /// how long it took, in ms
    pub duration_ms: f64,
    /// the HTTP status, if any
    pub status_code: Option<i32>,
    /// bounded response excerpt
    pub excerpt: Option<String>,
    /// what went wrong, if anything
    pub error: Option<String>,
    /// 'succeeded', 'retry' or 'failed'
    pub outcome: &'static str,
    /// for 'retry': delay before the next attempt, in ms
    pub retry_delay_ms: Option<i64>,
}

impl AttemptRecord {
    /// Combines a claim, the attempt's outcome and the policy's decision.
    pub fn new(claim: &Claim, outcome: &Outcome, decision: Decision) -> Self {
        let (label, delay) = match decision {
            Decision::Succeeded => ("succeeded", None),
            Decision::RetryIn(d) => (
                "retry",
                Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            ),
            Decision::GiveUp => ("failed", None),
        };
        Self {
            delivery_id: claim.delivery_id,
            lease_token: claim.lease_token,
            endpoint_id: claim.endpoint_id,
            attempt: i32::try_from(claim.attempt).unwrap_or(i32::MAX),
            started_at: outcome.started_at,
            duration_ms: outcome.duration.as_secs_f64() * 1000.0,
            // webhook.attempts only holds real HTTP codes; an exotic one (600-999,
            // which HTTP libraries accept) stays visible in the error text.
            status_code: outcome
                .status
                .filter(|s| (100..=599).contains(s))
                .map(i32::from),
            excerpt: outcome.excerpt.clone(),
            error: outcome.result.as_ref().err().map(|e| e.to_string()),
            outcome: label,
            retry_delay_ms: delay,
        }
    }
}

/// The recording side's connection.
pub struct Recorder {
    client: Client,
    worker_id: String,
}

impl Recorder {
    /// Records over `client` as `worker_id`.
    pub fn new(client: Client, worker_id: String) -> Self {
        Self { client, worker_id }
    }

    /// Writes a batch in one statement; returns how many deliveries moved.
    pub async fn record(&self, batch: &[AttemptRecord]) -> Result<u64, DbError> {
        let ids: Vec<i64> = batch.iter().map(|r| r.delivery_id).collect();
        let tokens: Vec<i64> = batch.iter().map(|r| r.lease_token).collect();
        let endpoints: Vec<i64> = batch.iter().map(|r| r.endpoint_id).collect();
        let attempts: Vec<i32> = batch.iter().map(|r| r.attempt).collect();
        let started: Vec<SystemTime> = batch.iter().map(|r| r.started_at).collect();
        let durations: Vec<f64> = batch.iter().map(|r| r.duration_ms).collect();
        let statuses: Vec<Option<i32>> = batch.iter().map(|r| r.status_code).collect();
        let excerpts: Vec<Option<&str>> = batch.iter().map(|r| r.excerpt.as_deref()).collect();
        let errors: Vec<Option<&str>> = batch.iter().map(|r| r.error.as_deref()).collect();
        let outcomes: Vec<&str> = batch.iter().map(|r| r.outcome).collect();
        let delays: Vec<Option<i64>> = batch.iter().map(|r| r.retry_delay_ms).collect();
        let params: [&(dyn ToSql + Sync); 12] = [
            &self.worker_id,
            &ids,
            &tokens,
            &endpoints,
            &attempts,
            &started,
            &durations,
            &statuses,
            &excerpts,
            &errors,
            &outcomes,
            &delays,
        ];
        let row = self
            .client
            .query_typed_one(
                queries::RECORD,
                &crate::queue::typed(&params, queries::RECORD_TYPES),
            )
            .await?;
        let moved: i32 = row.get(0);
        Ok(moved.max(0) as u64)
    }
}

/// Receives attempt records until every sender is gone, writing them in
/// batches and reconnecting as needed.
pub(crate) async fn run_recorder(
    pg: tokio_postgres::Config,
    worker_id: String,
    mut rx: mpsc::Receiver<AttemptRecord>,
    events: Events,
    metrics: std::sync::Arc<Metrics>,
) {
    let mut connected_once = false;
    let mut recorder: Option<Recorder> = None;
    let mut batch = Vec::with_capacity(MAX_RECORD_BATCH);
    while rx.recv_many(&mut batch, MAX_RECORD_BATCH).await > 0 {
        // Under a trickle of deliveries each outcome would otherwise be its
        // own statement and commit; waiting a few ms for company costs no
        // delivery latency (the request was already sent) and saves most of
        // them. A full batch goes at once.
        let gather = tokio::time::sleep(RECORD_GATHER);
        tokio::pin!(gather);
        while batch.len() < MAX_RECORD_BATCH {
            let room = MAX_RECORD_BATCH - batch.len();
            tokio::select! {
                _ = &mut gather => break,
                n = rx.recv_many(&mut batch, room) => if n == 0 { break },
            }
        }
        let mut backoff = RETRY_MIN;
        let mut hopeless_tries = 0;
        loop {
            let started = std::time::Instant::now();
            let result = match &recorder {
                Some(r) => r.record(&batch).await,
                None => match crate::db::connect(&pg).await {
                    Ok(client) => {
                        if connected_once {
                            metrics.reconnected(Connection::Record);
                        }
                        connected_once = true;
                        recorder
                            .insert(Recorder::new(client, worker_id.clone()))
                            .record(&batch)
                            .await
                    }
                    Err(e) => Err(e),
                },
            };
            metrics.record(started.elapsed());
            match result {
                Ok(moved) => {
                    tracing::debug!(attempts = batch.len(), moved, "recorded attempts");
                    events.emit(WorkerEvent::Recorded {
                        delivery_ids: batch.iter().map(|r| r.delivery_id).collect(),
                        moved,
                    });
                    break;
                }
                Err(e) => {
                    if recorder.as_ref().is_none_or(|r| r.client.is_closed()) {
                        recorder = None;
                    }
                    if rx.is_closed() || e.code().is_some() {
                        hopeless_tries += 1;
                        if hopeless_tries >= MAX_HOPELESS_TRIES {
                            tracing::error!(error = %e, cause = ?e.0, attempts = batch.len(),
                                "could not record attempts; their leases will expire and they will be sent again");
                            break;
                        }
                    }
                    tracing::warn!(error = %e, cause = ?e.0, "recording attempts failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
        batch.clear();
    }
}
