//! Ordered delivery per key (issue 19, item 1): what it costs a drain.
//!
//! - 10,000 keys: the same 100,000 published events (`ordering_key` =
//!   i % 10,000, 200-byte data) drained by one worker to one endpoint,
//!   ordered and not, in turn; the goal is ≥ 0.8 of the unordered drain.
//! - 1 key: 2,000 events of a single key to an ordered endpoint: one
//!   delivery at a time, each claimed only once the previous one was
//!   recorded. Reported: deliveries/s, the median gap between the starts of
//!   two successive attempts, and the median attempt (the receiver's own
//!   latency, as the worker measured it); the gap minus the attempt is what
//!   ordering adds per delivery (a record and a claim).

use crate::db::{self, BenchDb};
use crate::worker::WorkerProcess;
use crate::{median, Args};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct Ordering {
    pub events: usize,
    pub keys: usize,
    pub unordered_per_sec: f64,
    pub ordered_per_sec: f64,
    pub unordered_runs: Vec<f64>,
    pub ordered_runs: Vec<f64>,
    pub one_key_events: usize,
    pub one_key_per_sec: f64,
    /// median gap between the starts of two successive attempts (ms)
    pub one_key_gap_ms: f64,
    /// median attempt duration (ms)
    pub one_key_attempt_ms: f64,
}

const EVENTS: usize = 100_000;
const KEYS: usize = 10_000;
const ONE_KEY_EVENTS: usize = 2_000;
const BATCH: usize = 10_000;

/// One drain of `events` published events spread over `keys` keys, to an
/// endpoint ordered or not; returns deliveries/s and the database (for a
/// look at its attempts) still alive.
async fn drain(
    args: &Args,
    events: usize,
    keys: usize,
    ordered: bool,
) -> anyhow::Result<(f64, BenchDb)> {
    let db = BenchDb::new(&args.dsn, "ordering").await?;
    let c = db.client().await?;
    c.execute(
        "select webhook_subscribe($1, name => 'sink', ordered => $2)",
        &[&args.sink, &ordered],
    )
    .await?;
    let mut from = 0;
    while from < events {
        let to = (from + BATCH).min(events);
        c.execute(
            "select count(webhook_publish('bench.item', jsonb_build_object('i', i, 'payload', repeat('x', 200)),
                                          ordering_key => (i % $3)::text))
             from generate_series($1::bigint, $2::bigint) i",
            &[&(from as i64), &(to as i64 - 1), &(keys as i64)],
        )
        .await?;
        from = to;
    }
    c.batch_execute("vacuum analyze webhook.events").await?;
    let worker = WorkerProcess::start(&args.worker_bin, &db.dsn)?;
    let start = Instant::now();
    db::wait_drained(&c, Duration::from_millis(20), Duration::from_secs(1800)).await?;
    let elapsed = start.elapsed();
    worker.stop().await?;
    db::ensure_all_succeeded(&c, "deliveries").await?;
    Ok((events as f64 / elapsed.as_secs_f64(), db))
}

pub async fn run(args: &Args) -> anyhow::Result<Ordering> {
    let (mut unordered, mut ordered) = (Vec::new(), Vec::new());
    // Interleaved, so that the machine's drift falls on both.
    for i in 0..args.runs {
        for (flag, runs) in [(false, &mut unordered), (true, &mut ordered)] {
            let (per_sec, db) = drain(args, EVENTS, KEYS, flag).await?;
            db.drop().await?;
            eprintln!(
                "  ordering, run {}: {EVENTS} events over {KEYS} keys, {}: {per_sec:.0} deliveries/s",
                i + 1,
                if flag { "ordered" } else { "unordered" }
            );
            runs.push(per_sec);
        }
    }
    let (mut one, mut gaps, mut attempts) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.runs {
        let (per_sec, db) = drain(args, ONE_KEY_EVENTS, 1, true).await?;
        let c = db.client().await?;
        let row = c
            .query_one(
                "select percentile_cont(0.5) within group (order by extract(epoch from g.gap) * 1000),
                        (select percentile_cont(0.5) within group (order by a.duration_ms) from webhook.attempts a)
                 from (select a.started_at - lag(a.started_at) over (order by a.started_at) as gap
                       from webhook.attempts a) g
                 where g.gap is not null",
                &[],
            )
            .await?;
        let (gap, attempt): (f64, f64) = (row.get(0), row.get(1));
        drop(c);
        db.drop().await?;
        eprintln!(
            "  ordering, run {}: {ONE_KEY_EVENTS} events of one key: {per_sec:.0} deliveries/s, a delivery every {gap:.2} ms (attempt {attempt:.2} ms)",
            i + 1
        );
        one.push(per_sec);
        gaps.push(gap);
        attempts.push(attempt);
    }
    let unordered_per_sec = median(unordered.clone());
    let ordered_per_sec = median(ordered.clone());
    Ok(Ordering {
        events: EVENTS,
        keys: KEYS,
        unordered_per_sec,
        ordered_per_sec,
        unordered_runs: unordered,
        ordered_runs: ordered,
        one_key_events: ONE_KEY_EVENTS,
        one_key_per_sec: median(one),
        one_key_gap_ms: median(gaps),
        one_key_attempt_ms: median(attempts),
    })
}
