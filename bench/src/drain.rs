//! Drain rate, fan-out and the 1,000,000-event backlog: rows are committed
//! with the worker stopped, then the real worker binary is started and timed
//! until nothing is pending (its fan-out included: each claim first turns up
//! to 1,000 committed events into deliveries).

use crate::db::{self, BenchDb, Flavor};
use crate::worker::WorkerProcess;
use crate::{median, Args};
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// A throughput figure.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub events: usize,
    pub endpoints: usize,
    /// worker processes draining together
    pub workers: usize,
    pub deliveries: usize,
    /// deliveries per second, median of the runs
    pub per_sec: f64,
    pub runs: Vec<f64>,
    /// CPU time the whole machine spent per delivery while draining (µs;
    /// PostgreSQL, the worker, nginx and the benchmark's own polling), median
    pub cpu_us_per_delivery: f64,
    /// of which the worker processes' (µs), median
    pub worker_cpu_us_per_delivery: f64,
    /// share of the machine's cores that was busy while draining, median
    pub busy_share: f64,
}

/// One drain run's figures.
#[derive(Debug, Clone, Copy)]
pub struct DrainRun {
    /// deliveries per second
    pub per_sec: f64,
    /// machine CPU per delivery, µs
    pub cpu_us: f64,
    /// the worker's CPU per delivery, µs
    pub worker_cpu_us: f64,
    /// busy share of all cores
    pub busy: f64,
}

/// The backlog run.
#[derive(Debug, Clone, Serialize)]
pub struct Backlog {
    pub deliveries: usize,
    /// events turned into deliveries per second, fanning the whole backlog out in one call
    pub fanout_per_sec: f64,
    pub per_sec: f64,
    pub peak_rss_mib: f64,
    pub claim_at_start: ClaimPlan,
    pub claim_near_end: ClaimPlan,
    /// pending deliveries when the second plan was taken
    pub pending_near_end: i64,
}

/// The claim query's plan, as EXPLAIN (ANALYZE, BUFFERS) reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimPlan {
    pub nodes: String,
    pub total_cost: f64,
    pub execution_ms: f64,
    pub shared_buffers_hit: i64,
}

const BATCH: usize = 100_000;

pub async fn fill(c: &Client, events: usize) -> anyhow::Result<()> {
    let mut from = 1;
    while from <= events {
        let to = (from + BATCH - 1).min(events);
        c.execute(
            "insert into bench_rows select i, repeat('x', 200) from generate_series($1::bigint, $2::bigint) i",
            &[&(from as i64), &(to as i64)],
        )
        .await?;
        from = to + 1;
    }
    c.batch_execute("vacuum analyze webhook.deliveries, webhook.events")
        .await?;
    Ok(())
}

/// One drain of `events` row events to `endpoints` endpoints by `workers`
/// worker processes of `bin`, timed from their start until nothing is left.
pub async fn drain_once(
    args: &Args,
    bin: &std::path::Path,
    events: usize,
    endpoints: usize,
    workers: usize,
) -> anyhow::Result<DrainRun> {
    drain_flavor(args, bin, events, endpoints, workers, Flavor::Extension).await
}

/// [`drain_once`] with pg_webhook installed in `flavor`.
pub async fn drain_flavor(
    args: &Args,
    bin: &std::path::Path,
    events: usize,
    endpoints: usize,
    workers: usize,
    flavor: Flavor,
) -> anyhow::Result<DrainRun> {
    drain_in(args, bin, events, endpoints, workers, flavor, None).await
}

/// [`drain_flavor`] in a database whose new sessions, the workers' among
/// them, default to `default_isolation` (when given) rather than READ
/// COMMITTED (see worker/src/db/isolation.rs).
pub async fn drain_in(
    args: &Args,
    bin: &std::path::Path,
    events: usize,
    endpoints: usize,
    workers: usize,
    flavor: Flavor,
    default_isolation: Option<&str>,
) -> anyhow::Result<DrainRun> {
    let db = BenchDb::with(&args.dsn, "drain", flavor, Some(&args.sql_script)).await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, endpoints).await?;
    db::watched_table(&c, "bench_rows").await?;
    fill(&c, events).await?;
    if let Some(level) = default_isolation {
        c.batch_execute(&format!(
            "alter database {} set default_transaction_isolation = '{level}'",
            db.name
        ))
        .await?;
    }
    let total = events * endpoints;
    let running = (0..workers.max(1))
        .map(|_| WorkerProcess::start(bin, &db.dsn))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let workers_cpu = || -> Option<f64> { running.iter().map(WorkerProcess::cpu_seconds).sum() };
    let start = Instant::now();
    let (machine0, worker0) = (crate::cpu::machine(), workers_cpu());
    db::wait_drained(&c, Duration::from_millis(20), Duration::from_secs(1800)).await?;
    let elapsed = start.elapsed();
    let (machine1, worker1) = (crate::cpu::machine(), workers_cpu());
    for worker in running {
        worker.stop().await?;
    }
    db::ensure_all_succeeded(&c, "deliveries").await?;
    drop(c);
    db.drop().await?;
    let per_delivery = |seconds: f64| seconds * 1e6 / total as f64;
    let (cpu_us, busy) = crate::cpu::busy_between(machine0, machine1)
        .map_or((f64::NAN, f64::NAN), |(busy, share)| {
            (per_delivery(busy), share)
        });
    let worker_cpu_us = match (worker0, worker1) {
        (Some(a), Some(b)) => per_delivery(b - a),
        _ => f64::NAN,
    };
    Ok(DrainRun {
        per_sec: total as f64 / elapsed.as_secs_f64(),
        cpu_us,
        worker_cpu_us,
        busy,
    })
}

/// Deliveries per second for `events` row events to `endpoints` endpoints,
/// with the worker binary `bin`.
pub async fn throughput(
    args: &Args,
    bin: &std::path::Path,
    events: usize,
    endpoints: usize,
    workers: usize,
) -> anyhow::Result<Throughput> {
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = drain_once(args, bin, events, endpoints, workers).await?;
        eprintln!(
            "  drain {events} events x {endpoints} endpoints, {workers} worker(s), run {}: {:.0} deliveries/s, {:.0} µs of CPU per delivery ({:.0} in the workers), cores {:.0} % busy",
            i + 1,
            r.per_sec,
            r.cpu_us,
            r.worker_cpu_us,
            r.busy * 100.0
        );
        runs.push(r);
    }
    Ok(Throughput::of(events, endpoints, workers, &runs))
}

impl Throughput {
    /// The medians of some runs.
    pub fn of(events: usize, endpoints: usize, workers: usize, runs: &[DrainRun]) -> Self {
        let m = |f: fn(&DrainRun) -> f64| median(runs.iter().map(f).collect());
        Throughput {
            events,
            endpoints,
            workers,
            deliveries: events * endpoints,
            per_sec: m(|r| r.per_sec),
            runs: runs.iter().map(|r| r.per_sec).collect(),
            cpu_us_per_delivery: m(|r| r.cpu_us),
            worker_cpu_us_per_delivery: m(|r| r.worker_cpu_us),
            busy_share: m(|r| r.busy),
        }
    }

    /// What the machine's cores could do at this CPU cost per delivery,
    /// were they all busy with it: the drain's CPU floor.
    pub fn cpu_bound_per_sec(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        cores * 1e6 / self.cpu_us_per_delivery
    }
}

/// The claim's plan: the statement `webhook._claim_deliveries` really runs
/// (its RETURN QUERY, in the plan the function keeps), as auto_explain
/// reports it from inside the function, for a claim of 100 taken in a
/// transaction that is rolled back (nothing leased, nothing fanned out).
/// `nodes` lists each scan once, in plan order, with its index or table.
async fn claim_plan(dsn: &str) -> anyhow::Result<ClaimPlan> {
    let (c, mut notices) = db::connect_with_notices(dsn).await?;
    c.batch_execute(
        "begin;
         load 'auto_explain';
         set local auto_explain.log_min_duration = 0;
         set local auto_explain.log_analyze = on;
         set local auto_explain.log_buffers = on;
         set local auto_explain.log_nested_statements = on;
         set local auto_explain.log_format = json;
         set local auto_explain.log_level = notice;
         select count(*) from webhook._claim_deliveries('bench-plan', 100, '1 minute', 512, '{}', '{}', 0, 1000000000);
         rollback;",
    )
    .await?;
    drop(c);
    let mut plan = None;
    while let Some(message) = notices.recv().await {
        // "duration: 1.234 ms  plan:\n{ ... }"
        let Some(json) = message.split_once("plan:").map(|(_, j)| j.trim()) else {
            continue;
        };
        let Ok(p) = serde_json::from_str::<serde_json::Value>(json) else {
            continue;
        };
        if p["Query Text"]
            .as_str()
            .is_some_and(|q| q.contains("_endpoint_quotas"))
        {
            plan = Some(p);
        }
    }
    let plan =
        plan.ok_or_else(|| anyhow::anyhow!("auto_explain reported no plan for the claim"))?;
    Ok(ClaimPlan {
        // auto_explain reports one plan object; plan_scans reads EXPLAIN's
        // list of them.
        nodes: crate::analysts::plan_scans(&serde_json::json!([&plan])),
        total_cost: plan["Plan"]["Total Cost"].as_f64().unwrap_or(f64::NAN),
        execution_ms: plan["Plan"]["Actual Total Time"]
            .as_f64()
            .unwrap_or(f64::NAN),
        shared_buffers_hit: plan["Plan"]["Shared Hit Blocks"].as_i64().unwrap_or(-1),
    })
}

/// One backlog run (not repeated: it is the longest scenario).
pub async fn backlog(args: &Args) -> anyhow::Result<Backlog> {
    let db = BenchDb::new(&args.dsn, "backlog").await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, 1).await?;
    db::watched_table(&c, "bench_rows").await?;
    eprintln!("  backlog: committing {} row events", args.backlog);
    fill(&c, args.backlog).await?;
    // The whole backlog fanned out at once (one call, whole transactions),
    // so that the claim's plan is taken with every delivery pending.
    let fan = Instant::now();
    c.batch_execute(&format!(
        "select count(*) from webhook._claim_deliveries('bench', 0, '1 minute', 1, '{{}}', '{{}}', {}, 0)",
        args.backlog
    ))
    .await?;
    let fanout_per_sec = args.backlog as f64 / fan.elapsed().as_secs_f64();
    eprintln!("  backlog: fanned out at {fanout_per_sec:.0} events/s");
    c.batch_execute("vacuum analyze webhook.deliveries_open")
        .await?;
    let claim_at_start = claim_plan(&db.dsn).await?;

    let worker = WorkerProcess::start(&args.worker_bin, &db.dsn)?;
    let start = Instant::now();
    let mut peak = 0.0f64;
    let mut near_end: Option<(ClaimPlan, i64)> = None;
    let threshold = (args.backlog / 10) as i64;
    let mut last_count = Instant::now();
    loop {
        if let Some((rss, hwm)) = worker.rss_mib() {
            peak = peak.max(rss).max(hwm);
        }
        // Counting walks the remaining backlog: once a second is enough to
        // catch the "near the end" moment without slowing the drain.
        if near_end.is_none() && last_count.elapsed() >= Duration::from_secs(1) {
            last_count = Instant::now();
            let left = db::unfinished(&c).await?;
            if left <= threshold && left > 0 {
                near_end = Some((claim_plan(&db.dsn).await?, left));
            }
        }
        if !db::any_pending(&c).await? {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(3600),
            "backlog not drained in an hour"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed();
    if let Some((_, hwm)) = worker.rss_mib() {
        peak = peak.max(hwm);
    }
    worker.stop().await?;
    let (claim_near_end, pending_near_end) = match near_end {
        Some(x) => x,
        None => (claim_plan(&db.dsn).await?, 0),
    };
    drop(c);
    db.drop().await?;
    let per_sec = args.backlog as f64 / elapsed.as_secs_f64();
    eprintln!("  backlog: {per_sec:.0} deliveries/s, peak RSS {peak:.1} MiB");
    Ok(Backlog {
        deliveries: args.backlog,
        fanout_per_sec,
        per_sec,
        peak_rss_mib: peak,
        claim_at_start,
        claim_near_end,
        pending_near_end,
    })
}
