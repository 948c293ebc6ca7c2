//! Writing outcomes back: the only writer of attempt rows and delivery state
//! transitions. Attempts are batched (everything waiting, up to
//! `MAX_RECORD_BATCH`) into one call of `webhook._record_attempts`, which moves
//! a delivery only while this worker still holds its lease.
//!
//! Must not: send HTTP or compute retry policy.

use crate::claim::AttemptRecord;
use crate::db::connect::{connect, Backoff};
use crate::db::error::{bounded, DbError};
use crate::db::isolation::at_read_committed;
use crate::db::queries;
use crate::db::queue::typed;
use crate::db::tls::PgTls;
use crate::events::{Events, WorkerEvent};
use crate::metrics::{Connection, Metrics};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

/// Most attempts written by one statement.
pub const MAX_RECORD_BATCH: usize = 500;
/// How long the recorder waits for more outcomes before writing a batch.
const RECORD_GATHER: std::time::Duration = std::time::Duration::from_millis(5);
/// Once shutdown began, give up writing a batch after this many failed
/// tries (before, transient failures are retried until they pass). The
/// leases then expire and the deliveries are sent again (at-least-once), so
/// nothing is lost.
const MAX_HOPELESS_TRIES: u32 = 5;

/// The recording side's connection.
pub struct Recorder {
    client: Client,
    worker_id: String,
    timeout: Duration,
}

impl Recorder {
    /// Records over `client` as `worker_id`, each call bounded by `timeout`.
    pub fn new(client: Client, worker_id: String, timeout: Duration) -> Self {
        Self {
            client,
            worker_id,
            timeout,
        }
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
        let row = bounded(
            self.timeout,
            at_read_committed(
                &self.client,
                self.client
                    .query_typed_one(queries::RECORD, &typed(&params, queries::RECORD_TYPES)),
            ),
        )
        .await?;
        let moved: i32 = row.get(0);
        Ok(moved.max(0) as u64)
    }
}

/// Receives attempt records until every sender is gone, writing them in
/// batches and reconnecting as needed.
/// After a batch holding an ordered endpoint's outcome it pokes `wake`
/// (the claim loop's wake-up), as the next event of that key is now due.
///
/// What cannot be written is never dropped lightly, nor does it block the
/// rest: a transient failure (no answer, a lost connection, SQLSTATE
/// classes 08, 40, 53, 57, 25006; see [`DbError::is_transient`]) is retried
/// until it passes, with the same batch (recording is idempotent per lease:
/// a retry after a commit whose answer was lost moves nothing twice, it only
/// logs the attempts again); a batch the server refuses is split in halves
/// until the row at fault is alone, which is then written once more with
/// its free text cut short, and only then given up (its lease expires and
/// the delivery is sent again: at-least-once).
#[allow(clippy::too_many_arguments)] // its connection's settings, its channels and its reporting
pub(crate) async fn run_recorder(
    pg: tokio_postgres::Config,
    tls: PgTls,
    db_timeout: Duration,
    worker_id: String,
    mut rx: mpsc::Receiver<AttemptRecord>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    events: Events,
    metrics: std::sync::Arc<Metrics>,
) {
    let mut conn = RecordConnection {
        pg,
        tls,
        db_timeout,
        worker_id,
        recorder: None,
        connected_once: false,
        metrics,
    };
    let mut batch = Vec::with_capacity(MAX_RECORD_BATCH);
    while rx.recv_many(&mut batch, MAX_RECORD_BATCH).await > 0 {
        // Under a trickle of deliveries each outcome would otherwise be its
        // own statement and commit; waiting a few ms for company costs no
        // delivery latency (the request was already sent) and saves most of
        // them. A full batch goes at once, and so does an ordered
        // endpoint's outcome: the next event of its key waits for it.
        let gather = tokio::time::sleep(RECORD_GATHER);
        tokio::pin!(gather);
        while batch.len() < MAX_RECORD_BATCH && !batch.iter().any(|r| r.ordered) {
            let room = MAX_RECORD_BATCH - batch.len();
            tokio::select! {
                _ = &mut gather => break,
                n = rx.recv_many(&mut batch, room) => if n == 0 { break },
            }
        }
        let ordered = batch.iter().any(|r| r.ordered);
        let mut parts = vec![std::mem::take(&mut batch)];
        while let Some(part) = parts.pop() {
            match conn.record_until_done(&part, || rx.is_closed()).await {
                Ok(moved) => {
                    tracing::debug!(attempts = part.len(), moved, "recorded attempts");
                    events.emit(WorkerEvent::Recorded {
                        delivery_ids: part.iter().map(|r| r.delivery_id).collect(),
                        moved,
                    });
                }
                Err(Refused::Statement(e)) if part.len() > 1 => {
                    tracing::warn!(error = %e, cause = ?e.cause(), attempts = part.len(),
                        "the database refused a batch of attempts; recording its halves apart");
                    let mut first = part;
                    let second = first.split_off(first.len() / 2);
                    parts.push(second);
                    parts.push(first);
                }
                Err(Refused::Statement(e)) if !part[0].is_cut_short() => {
                    tracing::warn!(error = %e, cause = ?e.cause(), delivery_id = part[0].delivery_id,
                        "the database refused an attempt; recording it with its texts cut short");
                    parts.push(vec![part[0].cut_short()]);
                }
                Err(Refused::Statement(e) | Refused::GaveUp(e)) => {
                    tracing::error!(error = %e, cause = ?e.cause(), attempts = part.len(),
                        delivery_ids = ?part.iter().map(|r| r.delivery_id).collect::<Vec<_>>(),
                        "could not record attempts; their leases will expire and they will be sent again");
                }
            }
        }
        if ordered {
            // The next event of each key is due now: the claim loop looks
            // at once instead of at its next poll.
            wake.notify_one();
        }
    }
}

/// Why a part of a batch was not recorded.
enum Refused {
    /// The server refused the statement itself: sending it again would fail again.
    Statement(DbError),
    /// Shutting down, and the database still failed after several tries.
    GaveUp(DbError),
}

/// The recorder's connection, opened again when lost.
struct RecordConnection {
    pg: tokio_postgres::Config,
    tls: PgTls,
    db_timeout: Duration,
    worker_id: String,
    recorder: Option<Recorder>,
    connected_once: bool,
    metrics: std::sync::Arc<Metrics>,
}

impl RecordConnection {
    /// Records `part`, retrying transient failures with backoff until they
    /// pass (at most [`MAX_HOPELESS_TRIES`] once `shutting_down` says so).
    async fn record_until_done(
        &mut self,
        part: &[AttemptRecord],
        shutting_down: impl Fn() -> bool,
    ) -> Result<u64, Refused> {
        let mut backoff = Backoff::default();
        let mut tries_at_shutdown = 0;
        loop {
            let started = std::time::Instant::now();
            let result = self.record_once(part).await;
            self.metrics.record(started.elapsed());
            let e = match result {
                Ok(moved) => return Ok(moved),
                Err(e) => e,
            };
            if e.is_closed() {
                self.recorder = None;
            }
            if !e.is_transient() {
                return Err(Refused::Statement(e));
            }
            if shutting_down() {
                tries_at_shutdown += 1;
                if tries_at_shutdown >= MAX_HOPELESS_TRIES {
                    return Err(Refused::GaveUp(e));
                }
            }
            tracing::warn!(error = %e, cause = ?e.cause(), "recording attempts failed; retrying in {:?}", backoff.delay());
            // Not cut short by a shutdown: what is being recorded must be
            // tried again (the bound above is what ends it).
            backoff.wait().await;
        }
    }

    async fn record_once(&mut self, part: &[AttemptRecord]) -> Result<u64, DbError> {
        if self.recorder.is_none() {
            let client = connect(&self.pg, &self.tls).await?;
            if self.connected_once {
                self.metrics.reconnected(Connection::Record);
            }
            self.connected_once = true;
            self.recorder = Some(Recorder::new(
                client,
                self.worker_id.clone(),
                self.db_timeout,
            ));
        }
        let recorder = self.recorder.as_ref().expect("connected above");
        recorder.record(part).await
    }
}
