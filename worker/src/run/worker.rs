//! The loop: wait → fan out and claim → spawn bounded → (record, in the
//! recorder task); graceful drain on cancellation. The only place that
//! spawns tasks.
//!
//! Waiting is event-driven: a NOTIFY at commit, finished deliveries that
//! free slots (or an endpoint's share of them), or a timer set to the next
//! due delivery (a retry, an expired lease) capped by the poll interval.
//! Never a blind busy loop.
//!
//! Must not: contain policy (retry.rs), HTTP (http/) or SQL (db/).

use crate::claim::{AttemptRecord, Claim};
use crate::config::Config;
use crate::db::connect::{check_extension, cluster_behind, connect, Backoff};
use crate::db::error::DbError;
use crate::db::listen;
use crate::db::queue::{ClaimRequest, Queue};
use crate::db::record::{self, MAX_RECORD_BATCH};
use crate::events::{Events, WorkerEvent};
use crate::http::dispatch::{Dispatcher, Outcome};
use crate::metrics::{self, Metrics};
use crate::retry::{self, Decision};
use crate::run::error::Error;
use crate::run::inflight::InFlight;
use crate::run::maintenance;
use crate::run::pacing::{idle, Linger, Pace, WakeGate};
use crate::serve::server;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// A configured worker, ready to run.
#[derive(Debug)]
pub struct Worker {
    config: Config,
    events: Events,
    metrics: Arc<Metrics>,
}

impl Worker {
    /// A worker with the given configuration.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            events: Events::default(),
            metrics: Arc::default(),
        }
    }

    /// Its metrics (also served at `/metrics` with `--metrics-addr`).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Sends progress signals to `tx` (tests wait on these instead of sleeping).
    pub fn with_events(mut self, tx: mpsc::UnboundedSender<WorkerEvent>) -> Self {
        self.events = Events::new(Some(tx));
        self
    }

    /// Runs until `cancel` fires, then stops claiming, lets in-flight
    /// deliveries finish (up to the drain timeout), records them, and returns.
    /// Fails only at start-up (no database, no extension, wrong version);
    /// afterwards, database and network failures are retried.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), Error> {
        let Worker {
            config,
            events,
            metrics,
        } = self;
        let client = connect(&config.pg, &config.pg_tls).await?;
        let installed = check_extension(&client).await?;
        tracing::info!(extension_version = %installed.version, flavor = %installed.flavor, ?config,
            "pg-webhook-worker starting");
        warn_if_cluster_behind(&client).await;
        if config.claim_timeout() < config.db_timeout {
            tracing::warn!(
                claim_timeout = ?config.claim_timeout(),
                "claims wait at most --lease-margin-ms, which is shorter than --db-timeout-ms"
            );
        }
        let mut queue = Queue::new(client, config.claim_timeout());
        let mut linger = Linger::new(queue.notify_min_interval().await?);
        let dispatcher = Arc::new(Dispatcher::new(&config)?);

        let serving = match config.metrics_addr {
            Some(addr) => Some(
                server::start(
                    addr,
                    config.pg.clone(),
                    config.pg_tls.clone(),
                    metrics.clone(),
                    config.worker_id.clone(),
                    cancel.clone(),
                    events.clone(),
                )
                .await
                .map_err(|source| Error::Serve { addr, source })?,
            ),
            None => None,
        };

        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen::run(
            config.listen_pg.clone(),
            config.listen_tls.clone(),
            wake.clone(),
            cancel.clone(),
            events.clone(),
            metrics.clone(),
        ));
        // Bounded: when recording falls behind, delivery tasks wait to hand
        // over their outcome and keep their slot, which stops new claims.
        let (record_tx, record_rx) = mpsc::channel(config.concurrency + MAX_RECORD_BATCH);
        let recorder = tokio::spawn(record::run_recorder(
            config.pg.clone(),
            config.pg_tls.clone(),
            config.db_timeout,
            config.worker_id.clone(),
            record_rx,
            wake.clone(),
            events.clone(),
            metrics.clone(),
        ));

        let maintenance = config.maintenance.is_on().then(|| {
            tokio::spawn(maintenance::run(
                config.pg.clone(),
                config.pg_tls.clone(),
                config.db_timeout,
                config.maintenance.clone(),
                cancel.clone(),
                events.clone(),
                metrics.clone(),
            ))
        });

        let mut in_flight = InFlight::default();
        let mut backoff = Backoff::default();
        // With a backlog, claim only once half a batch of slots is free: one
        // claim statement per delivery (claiming each slot as it frees up)
        // would cap throughput at the claim's round trip. When the queue is
        // idle every slot is free, so a lone event is still claimed at once.
        let min_claim = (config.batch_size.min(config.concurrency) / 2).max(1);
        let mut pace = Pace::default();
        let mut gate = WakeGate::default();
        loop {
            in_flight.reap();
            metrics.set_in_flight(in_flight.len());
            if cancel.is_cancelled() {
                break;
            }
            if queue.is_closed() {
                match reopen(&config, &cancel, &mut backoff, &metrics).await {
                    Some(q) => queue = q,
                    None => break,
                }
            }

            let free = config.concurrency.saturating_sub(in_flight.len());
            // Room for payload bytes: a claim takes what fits, and at least
            // one delivery, so the bytes in flight stay under the budget plus
            // one payload.
            let room = config.max_in_flight_bytes.saturating_sub(in_flight.bytes());
            if (free >= min_claim && room > 0) || in_flight.is_empty() {
                // Pace small claims (see pacing.rs).
                if let Some(wait) = pace.remaining() {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                let limit = free.min(config.batch_size);
                pace.claimed();
                let busy = in_flight.per_endpoint();
                let request = ClaimRequest {
                    worker_id: &config.worker_id,
                    limit,
                    lease_margin: config.lease_margin,
                    concurrency: config.concurrency,
                    busy: &busy,
                    fanout_events: config.fanout_batch,
                    max_bytes: room.max(1),
                };
                let started = Instant::now();
                metrics.checked(metrics::Check::Claim);
                match queue.claim_batch(&request).await {
                    Ok(claims) => {
                        metrics.claim(started.elapsed(), claims.len());
                        gate.claimed(claims.len(), config.poll_interval * 2);
                        backoff.reset();
                        pace.got(claims.len(), limit);
                        let full = claims.len() == limit;
                        if !claims.is_empty() {
                            linger.extend();
                            events.emit(WorkerEvent::Claimed(claims.len()));
                        }
                        for claim in claims {
                            let endpoint = claim.endpoint_id;
                            in_flight.spawn(
                                endpoint,
                                claim.payload.len(),
                                deliver(
                                    claim,
                                    dispatcher.clone(),
                                    record_tx.clone(),
                                    metrics.clone(),
                                ),
                            );
                        }
                        if in_flight.bytes() >= config.max_in_flight_bytes {
                            // The byte budget is spent: wait for a delivery
                            // to end (below), whatever else is due.
                        } else if !full {
                            // Nothing more for us now: the queue is empty, or
                            // what is due waits for an endpoint's share of the
                            // slots (or is locked by another worker's claim),
                            // or it did not fit in the bytes left.
                            idle(
                                &queue,
                                &config,
                                &wake,
                                &mut gate,
                                &metrics,
                                &cancel,
                                &mut linger,
                                &mut in_flight,
                                min_claim,
                            )
                            .await;
                            continue;
                        }
                        if config.concurrency - in_flight.len() >= min_claim {
                            continue; // more may be due right now
                        }
                    }
                    Err(e) => {
                        db_trouble(&e, "claiming deliveries", &cancel, &mut backoff).await;
                        continue;
                    }
                }
            }
            // A backlog, and too few free slots for a batch: wait for one to free up.
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = in_flight.next() => {}
            }
        }

        tracing::info!(
            in_flight = in_flight.len(),
            "shutting down: finishing in-flight deliveries"
        );
        let abandoned = in_flight.drain(config.drain_timeout).await;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "drain timeout reached; abandoned deliveries will be sent again when their lease expires"
            );
        }
        drop(record_tx);
        if let Err(e) = recorder.await {
            tracing::error!(error = %e, "the recorder task failed");
        }
        let _ = listener.await;
        if let Some(m) = maintenance {
            let _ = m.await;
        }
        if let Some(s) = serving {
            let _ = s.await;
        }
        tracing::info!("pg-webhook-worker stopped");
        Ok(())
    }
}

/// Runs a worker until `cancel` fires (see [`Worker::run`]).
pub async fn run(config: Config, cancel: CancellationToken) -> Result<(), Error> {
    Worker::new(config).run(cancel).await
}

/// Sends one delivery and hands its outcome to the recorder.
async fn deliver(
    claim: Claim,
    dispatcher: Arc<Dispatcher>,
    record_tx: mpsc::Sender<AttemptRecord>,
    metrics: Arc<Metrics>,
) {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let outcome = dispatcher.send(&claim, timestamp).await;
    let decision = retry::decide(
        &claim.target.policy,
        claim.attempt,
        outcome.verdict(),
        rand::random::<f64>(),
    );
    match &outcome.result {
        Ok(()) => {
            tracing::debug!(delivery_id = claim.delivery_id, status = ?outcome.status, "delivered")
        }
        Err(e) => tracing::info!(
            delivery_id = claim.delivery_id,
            endpoint_id = claim.endpoint_id,
            attempt = claim.attempt,
            error = %e,
            ?decision,
            "attempt failed"
        ),
    }
    let since_event = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|now| {
            now.checked_sub(Duration::from_micros(
                u64::try_from(claim.event_created_us).unwrap_or(0),
            ))
        });
    metrics.attempt(
        claim.endpoint_id,
        outcome.status,
        outcome.duration,
        match decision {
            Decision::Succeeded => metrics::Outcome::Succeeded,
            Decision::RetryIn(_) => metrics::Outcome::Retry,
            Decision::GiveUp => metrics::Outcome::Failed,
        },
        since_event,
    );
    let record = attempt_record(&claim, &outcome, decision);
    if record_tx.send(record).await.is_err() {
        tracing::error!(
            delivery_id = claim.delivery_id,
            "recorder gone; the lease will expire and the delivery be retried"
        );
    }
}

/// Logs a database failure and backs off (cancellation cuts the wait short).
async fn db_trouble(e: &DbError, doing: &str, cancel: &CancellationToken, backoff: &mut Backoff) {
    tracing::warn!(error = %e, cause = ?e.cause(), "{doing} failed; retrying in {:?}", backoff.delay());
    backoff.pause(cancel).await;
}

/// Reconnects the claim connection, retrying until it works or `cancel` fires.
async fn reopen(
    config: &Config,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
    metrics: &Metrics,
) -> Option<Queue> {
    loop {
        if cancel.is_cancelled() {
            return None;
        }
        let attempt = async {
            Ok::<_, DbError>(Queue::new(
                connect(&config.pg, &config.pg_tls).await?,
                config.claim_timeout(),
            ))
        };
        match attempt.await {
            Ok(q) => {
                tracing::info!("claim connection re-established");
                metrics.reconnected(metrics::Connection::Claim);
                backoff.reset();
                return Some(q);
            }
            Err(e) => db_trouble(&e, "reconnecting", cancel, backoff).await,
        }
    }
}

/// Combines a claim, the attempt's outcome and the policy's decision
/// into what the recorder writes.
fn attempt_record(claim: &Claim, outcome: &Outcome, decision: Decision) -> AttemptRecord {
    let (label, delay) = match decision {
        Decision::Succeeded => ("succeeded", None),
        Decision::RetryIn(d) => (
            "retry",
            Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        ),
        Decision::GiveUp => ("failed", None),
    };
    AttemptRecord {
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
        ordered: claim.target.ordered,
    }
}

/// On a Citus node that lacks endpoints the coordinator published (a node
/// added without running webhook_cluster_enable() again), events captured
/// here reach only the endpoints it has: say so, with the fix.
async fn warn_if_cluster_behind(client: &tokio_postgres::Client) {
    match cluster_behind(client).await {
        Ok(0) => {}
        Ok(behind) => tracing::warn!(
            endpoints = behind,
            "this Citus node lacks endpoints the coordinator published, or has them otherwise; events captured here go only to the endpoints it has: run select webhook_cluster_enable() on the coordinator"
        ),
        Err(e) => tracing::warn!(error = %e, "could not compare this node's endpoints with the coordinator's"),
    }
}
