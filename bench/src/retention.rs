//! Retention under steady load: producers insert rows into a watched table
//! at a steady rate while the worker delivers them, with
//! `pg_webhook.retention` at its minimum (one minute) and the maintenance
//! run every two seconds, for many retention windows. Measured:
//!
//! - the size of the log (events, deliveries, attempts: tables and indexes)
//!   at the end of each window: it must stay flat once the first window has
//!   passed;
//! - the producers' INSERT latency, split into inserts that overlapped a
//!   purge (a maintenance call that removed events) and the others: a purge
//!   must not block producers.
//!
//! The maintenance is called by this program (the worker's own schedule is
//! off) so that each purge's start and end are known exactly.

use crate::db::BenchDb;
use crate::worker::WorkerProcess;
use crate::Args;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct Retention {
    pub seconds: u64,
    pub rate_per_sec: u32,
    pub retention_secs: u64,
    /// log size (MiB) at the end of each retention window
    pub size_mib_per_window: Vec<f64>,
    pub purges: usize,
    pub events_purged: i64,
    pub inserts: usize,
    pub inserts_during_purge: usize,
    pub p99_ms_during_purge: f64,
    pub p99_ms_otherwise: f64,
    pub max_ms_during_purge: f64,
    pub max_ms_otherwise: f64,
    /// how long the purges took (median, max), ms
    pub purge_ms_median: f64,
    pub purge_ms_max: f64,
}

const LOG_SIZE: &str = "select sum(pg_total_relation_size(i.inhrelid))::float8 / 1048576
    from pg_inherits i
    where i.inhparent in ('webhook.events'::regclass, 'webhook.deliveries'::regclass, 'webhook.attempts'::regclass)";

fn percentile(mut xs: Vec<f64>, p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

pub async fn run(args: &Args) -> anyhow::Result<Retention> {
    const RETENTION_SECS: u64 = 60;
    const PRODUCERS: u32 = 4;
    let seconds = args.retention_secs;
    let rate = args.retention_rate;
    let db = BenchDb::new(&args.dsn, "retention").await?;
    let admin = crate::db::connect(&args.dsn).await?;
    admin
        .batch_execute(&format!(
            "alter database {} set pg_webhook.retention = '{RETENTION_SECS}s'",
            db.name
        ))
        .await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, 1).await?;
    c.batch_execute(
        "create table steady (id bigserial primary key, payload text not null);
         select webhook_watch('steady', event_prefix => 'row');",
    )
    .await?;
    let worker = WorkerProcess::start_with(
        &args.worker_bin,
        &db.dsn,
        &[("PG_WEBHOOK_MAINTENANCE_SCHEDULE", "off")],
    )?;

    let start = Instant::now();
    let stop = start + Duration::from_secs(seconds);
    // Producers: (start, end) of every INSERT, relative to `start`.
    let mut producers = Vec::new();
    for _ in 0..PRODUCERS {
        let client = db.client().await?;
        let stmt = client
            .prepare("insert into steady (payload) values (repeat('x', 200))")
            .await?;
        producers.push(tokio::spawn(async move {
            let period = Duration::from_secs_f64(f64::from(PRODUCERS) / f64::from(rate));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut spans = Vec::new();
            while Instant::now() < stop {
                tick.tick().await;
                let t0 = start.elapsed();
                client.execute(&stmt, &[]).await?;
                spans.push((t0, start.elapsed()));
            }
            Ok::<_, anyhow::Error>(spans)
        }));
    }
    // Maintenance every 2 s, and the log's size at the end of each window.
    let purges: Arc<Mutex<Vec<(Duration, Duration, i64)>>> = Arc::default();
    let mut sizes = Vec::new();
    let maint = db.client().await?;
    let mut next_window = Duration::from_secs(RETENTION_SECS);
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t0 = start.elapsed();
        let report: Option<String> = maint
            .query_one("select webhook._maintenance()::text", &[])
            .await?
            .get(0);
        let t1 = start.elapsed();
        let purged = report
            .as_deref()
            .and_then(|r| serde_json::from_str::<serde_json::Value>(r).ok())
            .and_then(|r| r["events_purged"].as_i64())
            .unwrap_or(0);
        if purged > 0 {
            purges.lock().unwrap().push((t0, t1, purged));
        }
        if t1 >= next_window {
            let size: f64 = maint.query_one(LOG_SIZE, &[]).await?.get(0);
            eprintln!(
                "  retention: {:.0} s, log {size:.1} MiB, {} purges so far",
                t1.as_secs_f64(),
                purges.lock().unwrap().len()
            );
            sizes.push(size);
            next_window += Duration::from_secs(RETENTION_SECS);
        }
    }
    let mut spans = Vec::new();
    for p in producers {
        spans.extend(p.await??);
    }
    worker.stop_within(Duration::from_secs(30)).await;
    let purges = purges.lock().unwrap().clone();
    let (mut during, mut otherwise) = (Vec::new(), Vec::new());
    for (a, b) in &spans {
        let ms = (*b - *a).as_secs_f64() * 1000.0;
        if purges.iter().any(|(p0, p1, _)| a < p1 && b > p0) {
            during.push(ms);
        } else {
            otherwise.push(ms);
        }
    }
    let purge_ms: Vec<f64> = purges
        .iter()
        .map(|(a, b, _)| (*b - *a).as_secs_f64() * 1000.0)
        .collect();
    let result = Retention {
        seconds,
        rate_per_sec: rate,
        retention_secs: RETENTION_SECS,
        size_mib_per_window: sizes,
        purges: purges.len(),
        events_purged: purges.iter().map(|(_, _, n)| n).sum(),
        inserts: spans.len(),
        inserts_during_purge: during.len(),
        p99_ms_during_purge: percentile(during.clone(), 99.0),
        p99_ms_otherwise: percentile(otherwise.clone(), 99.0),
        max_ms_during_purge: during.iter().copied().fold(f64::NAN, f64::max),
        max_ms_otherwise: otherwise.iter().copied().fold(f64::NAN, f64::max),
        purge_ms_median: crate::median(purge_ms.clone()),
        purge_ms_max: purge_ms.iter().copied().fold(f64::NAN, f64::max),
    };
    eprintln!(
        "  retention: {} purges removed {} events; INSERT p99 {:.2} ms during purges ({} inserts), {:.2} ms otherwise; sizes per window {:?} MiB",
        result.purges,
        result.events_purged,
        result.p99_ms_during_purge,
        result.inserts_during_purge,
        result.p99_ms_otherwise,
        result.size_mib_per_window.iter().map(|s| (s * 10.0).round() / 10.0).collect::<Vec<_>>()
    );
    drop(c);
    drop(maint);
    db.drop().await?;
    Ok(result)
}
