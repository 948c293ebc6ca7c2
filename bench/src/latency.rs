//! Latency, commit to receipt, at a steady rate. Producers insert one row per
//! transaction at the target rate; a sink in this process notes when each
//! row's webhook arrives. A sample is measured from just before the INSERT
//! is sent (an autocommit statement: its commit is part of it) to receipt, so
//! it slightly overstates the commit-to-receipt time, never understates it.

use crate::db::{self, BenchDb};
use crate::worker::WorkerProcess;
use crate::{median, Args};
use axum::body::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    pub rate_per_sec: u32,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

type Arrivals = Arc<Mutex<HashMap<i64, Instant>>>;

async fn start_sink() -> anyhow::Result<(String, Arrivals)> {
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let now = Instant::now();
        let seen = seen.clone();
        async move {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(id) = v["data"]["new"]["id"].as_i64() {
                    seen.lock().unwrap().insert(id, now);
                }
            }
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/latency", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, arrivals))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn one_run(
    db: &BenchDb,
    arrivals: &Arrivals,
    rate: u32,
    secs: u64,
    first_id: i64,
) -> anyhow::Result<(Vec<f64>, i64)> {
    const PRODUCERS: u32 = 4;
    let total = i64::from(rate) * secs as i64;
    let per_producer = total / i64::from(PRODUCERS);
    let period = Duration::from_secs_f64(f64::from(PRODUCERS) / f64::from(rate));
    let mut tasks = Vec::new();
    for p in 0..i64::from(PRODUCERS) {
        let client = db.client().await?;
        let stmt = client
            .prepare("insert into lat (id, payload) values ($1, repeat('x', 200))")
            .await?;
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::with_capacity(per_producer as usize);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for k in 0..per_producer {
                tick.tick().await;
                let id = first_id + p * per_producer + k;
                let t0 = Instant::now();
                client.execute(&stmt, &[&id]).await?;
                sent.push((id, t0));
            }
            Ok::<_, anyhow::Error>(sent)
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await??);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = arrivals.lock().unwrap().len();
        if sent
            .iter()
            .all(|(id, _)| arrivals.lock().unwrap().contains_key(id))
        {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "only {got} webhooks arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = arrivals.lock().unwrap();
    let mut ms: Vec<f64> = sent
        .iter()
        .map(|(id, t0)| seen[id].saturating_duration_since(*t0).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok((ms, first_id + PRODUCERS as i64 * per_producer))
}

pub async fn run(args: &Args, bin: &std::path::Path) -> anyhow::Result<Vec<LatencyRow>> {
    let (url, arrivals) = start_sink().await?;
    let db = BenchDb::new(&args.dsn, "latency").await?;
    let c = db.client().await?;
    db.subscribe(&c, &url, 1).await?;
    c.batch_execute(
        "create table lat (id bigint primary key, payload text not null);
         select webhook_watch('lat', event_prefix => 'row');",
    )
    .await?;
    let worker = WorkerProcess::start(bin, &db.dsn)?;
    // Warm up: connections, prepared statements, HTTP keep-alive.
    let (_, mut next_id) = one_run(&db, &arrivals, 100, 1, 1).await?;
    let mut rows = Vec::new();
    for rate in [100u32, 1000] {
        let (mut p50, mut p99, mut max, mut samples) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for _ in 0..args.runs {
            let (ms, next) = one_run(&db, &arrivals, rate, args.latency_secs, next_id).await?;
            next_id = next;
            samples += ms.len();
            p50.push(percentile(&ms, 50.0));
            p99.push(percentile(&ms, 99.0));
            max.push(*ms.last().unwrap_or(&f64::NAN));
        }
        let row = LatencyRow {
            rate_per_sec: rate,
            samples,
            p50_ms: median(p50),
            p99_ms: median(p99),
            max_ms: median(max),
        };
        eprintln!(
            "  latency at {rate}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            row.p50_ms, row.p99_ms, row.max_ms
        );
        rows.push(row);
    }
    worker.stop().await?;
    db::wait_drained(&c, Duration::from_millis(50), Duration::from_secs(60))
        .await
        .ok();
    drop(c);
    db.drop().await?;
    Ok(rows)
}
