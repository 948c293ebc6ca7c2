//! One bad endpoint and the others: a healthy endpoint's drain rate alone,
//! and with a blackholed neighbour (it accepts connections and never
//! answers, so every request to it runs into the endpoint's 10 s timeout)
//! subscribed to the same events. The goal: the healthy endpoint keeps at
//! least 0.8 of its rate alone.

use crate::db::{self, BenchDb};
use crate::worker::WorkerProcess;
use crate::{median, Args};
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct Fairness {
    pub events: usize,
    /// the healthy endpoint's deliveries per second, alone
    pub alone_per_sec: f64,
    /// the same with the blackholed neighbour
    pub with_blackhole_per_sec: f64,
    pub ratio: f64,
}

/// Accepts connections and holds them, unanswered, until dropped.
struct Blackhole {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/blackhole", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Ok(Self { url, task })
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Seconds until every delivery to the healthy endpoint (id 1) succeeded.
async fn healthy_drain(args: &Args, events: usize, blackhole: Option<&str>) -> anyhow::Result<f64> {
    let db = BenchDb::new(&args.dsn, "fairness").await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, 1).await?;
    if let Some(url) = blackhole {
        c.execute("select webhook_subscribe($1, name => 'blackhole')", &[&url])
            .await?;
    }
    db::watched_table(&c, "bench_rows").await?;
    c.execute(
        "insert into bench_rows select i, repeat('x', 200) from generate_series(1, $1::bigint) i",
        &[&(events as i64)],
    )
    .await?;
    c.batch_execute("vacuum analyze webhook.events").await?;
    // Maintenance off: it is not what is measured.
    let worker = WorkerProcess::start_with(
        &args.worker_bin,
        &db.dsn,
        &[("PG_WEBHOOK_MAINTENANCE_SCHEDULE", "off")],
    )?;
    let start = Instant::now();
    let done = "select count(*) = $1 from webhook.deliveries where endpoint_id = 1 and status = 'succeeded'";
    loop {
        // A count over the finished partition: once every 50 ms is cheap
        // next to the drain (and the same in both runs).
        if c.query_one(done, &[&(events as i64)])
            .await?
            .get::<_, bool>(0)
        {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(900),
            "the healthy endpoint did not drain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed();
    worker.stop_within(Duration::from_secs(1)).await;
    drop(c);
    db.drop().await?;
    Ok(events as f64 / elapsed.as_secs_f64())
}

pub async fn run(args: &Args) -> anyhow::Result<Fairness> {
    let events = args.fairness_events;
    let hole = Blackhole::start().await?;
    let (mut alone, mut with) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        let a = healthy_drain(args, events, None).await?;
        let b = healthy_drain(args, events, Some(&hole.url)).await?;
        eprintln!(
            "  fairness, run {}: healthy endpoint alone {a:.0}/s, beside a blackholed one {b:.0}/s ({:.2})",
            i + 1,
            b / a
        );
        alone.push(a);
        with.push(b);
    }
    let (a, b) = (median(alone), median(with));
    Ok(Fairness {
        events,
        alone_per_sec: a,
        with_blackhole_per_sec: b,
        ratio: b / a,
    })
}
