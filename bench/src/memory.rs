//! Memory bounded by bytes, not rows: a backlog of 10,000 events of
//! 1 MiB each (the default pg_webhook.max_payload_bytes, nearly reached),
//! drained by the real worker with its default settings, its peak RSS
//! (VmHWM) read from /proc. The payloads compress well in the table (they
//! are one repeated character), not on the wire: the worker reads and
//! sends every byte of each.

use crate::db::{self, BenchDb};
use crate::worker::WorkerProcess;
use crate::Args;
use serde::Serialize;
use std::time::{Duration, Instant};

const EVENTS: i64 = 10_000;
/// The row's text column; with the event's JSON around it the payload is
/// just under 1 MiB.
const ROW_BYTES: i64 = 1_048_000;

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub events: i64,
    pub payload_bytes: i64,
    pub per_sec: f64,
    pub mib_per_sec: f64,
    pub peak_rss_mib: f64,
}

pub async fn run(args: &Args) -> anyhow::Result<Memory> {
    let db = BenchDb::new(&args.dsn, "memory").await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, 1).await?;
    c.batch_execute(
        "create table big_rows (id bigint primary key, body text not null);
         select webhook_watch('big_rows', event_prefix => 'big');",
    )
    .await?;
    eprintln!("  memory: committing {EVENTS} events of 1 MiB");
    for from in (1..=EVENTS).step_by(500) {
        c.execute(
            "insert into big_rows select i, repeat('x', $3::integer)
             from generate_series($1::bigint, $2::bigint) i",
            &[&from, &(from + 499).min(EVENTS), &(ROW_BYTES as i32)],
        )
        .await?;
    }
    let payload_bytes: i64 = c
        .query_one("select max(payload_bytes)::bigint from webhook.events", &[])
        .await?
        .get(0);
    let worker = WorkerProcess::start(&args.worker_bin, &db.dsn)?;
    let start = Instant::now();
    let mut peak = 0.0f64;
    loop {
        if let Some((rss, hwm)) = worker.rss_mib() {
            peak = peak.max(rss).max(hwm);
        }
        if !db::any_pending(&c).await? {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "the 1 MiB backlog did not drain in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some((_, hwm)) = worker.rss_mib() {
        peak = peak.max(hwm);
    }
    worker.stop().await?;
    db::ensure_all_succeeded(&c, "deliveries of 1 MiB").await?;
    drop(c);
    db.drop().await?;
    let m = Memory {
        events: EVENTS,
        payload_bytes,
        per_sec: EVENTS as f64 / elapsed,
        mib_per_sec: EVENTS as f64 * payload_bytes as f64 / elapsed / 1048576.0,
        peak_rss_mib: peak,
    };
    eprintln!(
        "  memory: {} deliveries of {} bytes: {:.0}/s ({:.0} MiB/s), peak RSS {:.1} MiB",
        m.events, m.payload_bytes, m.per_sec, m.mib_per_sec, m.peak_rss_mib
    );
    Ok(m)
}
