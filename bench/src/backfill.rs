//! Backfill (`webhook_backfill`) of a large table to one endpoint, with
//! live writes beside it. Each run, in one fresh database:
//!
//! 1. the drain of 100,000 captured row events by the same worker (the
//!    floor the backfill rate is compared with, measured in the same run);
//! 2. live load alone for 5 s: 100 published events and 100 updates of
//!    watched rows per second, with the worker running (its latency,
//!    commit to the attempt's start);
//! 3. `webhook_backfill` of the table (`--backfill-rows` rows of 200 bytes)
//!    to one endpoint, timed from the call until every row's delivery has
//!    succeeded, with the same live load running all along (its latency
//!    again: what the backfill costs live events).

use crate::db::{self, BenchDb};
use crate::worker::WorkerProcess;
use crate::{median, Args};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// The backfill figures, medians of the runs.
#[derive(Debug, Clone, Serialize)]
pub struct Backfill {
    pub rows: usize,
    /// rows backfilled (read, sent and acknowledged) per second
    pub rows_per_sec: f64,
    /// the same run's drain of captured row events, deliveries per second
    pub drain_per_sec: f64,
    /// live events' latency (commit to attempt), p50 / p99 ms, alone
    pub live_alone_ms: (f64, f64),
    /// and while the backfill runs
    pub live_during_ms: (f64, f64),
    pub runs_rows_per_sec: Vec<f64>,
}

const DRAIN_EVENTS: usize = 100_000;

/// Runs the live load on its own connection until `stop` is set.
fn live_load(
    dsn: String,
    rows: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    tokio::spawn(async move {
        let c = db::connect(&dsn).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let id = 1 + (rand::random::<u64>() % rows as u64) as i64;
            c.batch_execute(&format!(
                "select webhook_publish('live.ping', '{{}}'); update bf_rows set n = n + 1 where id = {id}"
            ))
            .await?;
            n += 1;
        }
        Ok(n)
    })
}

/// p50 and p99 (ms) from commit to attempt of the live events after event id `after`.
async fn live_latency(c: &Client, after: i64) -> anyhow::Result<(f64, f64)> {
    let row = c
        .query_one(
            "select percentile_cont(0.5) within group (order by ms), percentile_cont(0.99) within group (order by ms)
             from (select extract(epoch from (a.started_at - e.created_at)) * 1000 as ms
                   from webhook.events e
                   join webhook.deliveries d on d.event_slot = e.slot and d.event_txid = e.txid and d.event_id = e.id
                   join webhook.attempts a on a.delivery_id = d.id and a.attempt_number = 1
                   where e.event_type = 'live.ping' and e.id > $1) s",
            &[&after],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

async fn last_event_id(c: &Client) -> anyhow::Result<i64> {
    Ok(
        c.query_one("select coalesce(max(id), 0) from webhook.events", &[])
            .await?
            .get(0),
    )
}

struct Run {
    rows_per_sec: f64,
    alone: (f64, f64),
    during: (f64, f64),
}

async fn once(args: &Args) -> anyhow::Result<Run> {
    let db = BenchDb::new(&args.dsn, "backfill").await?;
    let c = db.client().await?;
    let rows = args.backfill_rows;
    c.execute(
        "select webhook_subscribe($1, '{row.*}', 'rows')",
        &[&args.sink],
    )
    .await?;
    c.execute(
        "select webhook_subscribe($1, '{live.*}', 'live')",
        &[&args.sink],
    )
    .await?;
    c.batch_execute(&format!(
        "create table bf_rows (id bigint primary key, n int not null, payload text not null);
         insert into bf_rows select i, 0, repeat('x', 200) from generate_series(1, {rows}) i;
         select webhook_watch('bf_rows', '{{update}}', event_prefix => 'row');"
    ))
    .await?;
    c.batch_execute("vacuum analyze bf_rows").await?;
    let worker = WorkerProcess::start(&args.worker_bin, &db.dsn)?;

    let stop = Arc::new(AtomicBool::new(false));
    let mark = last_event_id(&c).await?;
    let load = live_load(db.dsn.clone(), rows, stop.clone());
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    load.await??;
    db::wait_drained(&c, Duration::from_millis(20), Duration::from_secs(60)).await?;
    let alone = live_latency(&c, mark).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mark = last_event_id(&c).await?;
    let start = Instant::now();
    c.batch_execute(
        "select webhook_backfill('bf_rows', endpoint => (select id from webhook.endpoints where name = 'rows'))",
    )
    .await?;
    let load = live_load(db.dsn.clone(), rows, stop.clone());
    loop {
        let done: bool = c
            .query_one(
                "select b.status = 'done' and not exists (select from webhook.deliveries_open d
                                                         where d.endpoint_id = b.endpoint_id)
                 from webhook.backfills b",
                &[],
            )
            .await?
            .get(0);
        if done {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "backfill not done in 30 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    load.await??;
    db::wait_drained(&c, Duration::from_millis(20), Duration::from_secs(60)).await?;
    let during = live_latency(&c, mark).await?;
    worker.stop().await?;
    let sent: i64 = c
        .query_one(
            "select count(*) from webhook.deliveries d join webhook.events e
               on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
             where e.event_type = 'row.read' and d.status = 'succeeded'",
            &[],
        )
        .await?
        .get(0);
    anyhow::ensure!(sent == rows as i64, "{sent} of {rows} rows delivered");
    db::ensure_all_succeeded(&c, "deliveries").await?;
    drop(c);
    db.drop().await?;
    Ok(Run {
        rows_per_sec: rows as f64 / secs,
        alone,
        during,
    })
}

pub async fn run(args: &Args) -> anyhow::Result<Backfill> {
    let (mut rates, mut drains) = (Vec::new(), Vec::new());
    let (mut a50, mut a99, mut d50, mut d99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.runs {
        let drain = crate::drain::drain_once(args, &args.worker_bin, DRAIN_EVENTS, 1, 1).await?;
        let r = once(args).await?;
        eprintln!(
            "  backfill, run {}: {:.0} rows/s (drain {:.0}/s); live p50/p99 alone {:.1}/{:.1} ms, during {:.1}/{:.1} ms",
            i + 1,
            r.rows_per_sec,
            drain.per_sec,
            r.alone.0,
            r.alone.1,
            r.during.0,
            r.during.1
        );
        rates.push(r.rows_per_sec);
        drains.push(drain.per_sec);
        a50.push(r.alone.0);
        a99.push(r.alone.1);
        d50.push(r.during.0);
        d99.push(r.during.1);
    }
    Ok(Backfill {
        rows: args.backfill_rows,
        rows_per_sec: median(rates.clone()),
        drain_per_sec: median(drains),
        live_alone_ms: (median(a50), median(a99)),
        live_during_ms: (median(d50), median(d99)),
        runs_rows_per_sec: rates,
    })
}
