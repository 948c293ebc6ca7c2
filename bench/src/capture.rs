//! Capture overhead: pgbench single-row INSERT TPS on a watched table divided
//! by the same on a plain table, at 2 and 16 clients, worker running and not.
//!
//! With the worker stopped it also measures a hand-written transactional
//! outbox: one statement that inserts the row, an event and a delivery
//! (no trigger, a minimal payload). That is what writing the event and its
//! delivery in the producer's transaction costs at the least, whoever does
//! it; the trigger's own cost is the gap between the two.

use crate::db::{self, BenchDb};
use crate::worker::WorkerProcess;
use crate::{median, Args};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct CaptureRow {
    pub clients: u32,
    pub worker_running: bool,
    pub plain_tps: f64,
    pub watched_tps: f64,
    pub ratio: f64,
    /// the hand-written outbox statement (worker stopped only)
    pub outbox_floor_tps: Option<f64>,
}

/// The statement of each pgbench script.
fn script_sql(table: &str) -> String {
    match table {
        "cap_floor" => "with a as (insert into cap_floor (payload) values (repeat('x', 200)) returning id, payload),\n\
             e as (insert into webhook.events (event_type, payload, source_table)\n\
                   select 'row.created', json_build_object('id', a.id, 'payload', a.payload), 'public.cap_floor' from a\n\
                   returning id)\n\
             insert into webhook.deliveries (event_id, endpoint_id) select e.id, 1 from e;\n"
            .to_owned(),
        _ => format!("insert into {table} (payload) values (repeat('x', 200));\n"),
    }
}

fn pgbench(args: &Args, db: &BenchDb, clients: u32, table: &str) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join(format!("pg_webhook_bench_{table}.sql"));
    std::fs::write(&script, script_sql(table))?;
    let out = std::process::Command::new(&args.pgbench)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args([
            "-T",
            &args.pgbench_secs.to_string(),
            "-f",
            script.to_str().unwrap_or_default(),
        ])
        .arg(&db.dsn)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {text}"))
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<CaptureRow>> {
    let db = BenchDb::new(&args.dsn, "capture").await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, 1).await?;
    c.batch_execute(
        "create table cap_plain (id bigserial primary key, payload text not null);
         create table cap_watched (id bigserial primary key, payload text not null);
         create table cap_floor (id bigserial primary key, payload text not null);
         select webhook_watch('cap_watched', event_prefix => 'row');",
    )
    .await?;
    let mut rows = Vec::new();
    for clients in [2u32, 16] {
        for worker_running in [false, true] {
            let worker = if worker_running {
                Some(WorkerProcess::start(&args.worker_bin, &db.dsn)?)
            } else {
                None
            };
            let (mut plain, mut watched, mut floor) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..args.runs {
                plain.push(pgbench(args, &db, clients, "cap_plain")?);
                watched.push(pgbench(args, &db, clients, "cap_watched")?);
                if !worker_running {
                    floor.push(pgbench(args, &db, clients, "cap_floor")?);
                }
            }
            if let Some(w) = worker {
                // Let the worker finish what the watched runs enqueued, so
                // that the next configuration starts from an empty queue.
                db::wait_drained(
                    &c,
                    std::time::Duration::from_millis(100),
                    std::time::Duration::from_secs(600),
                )
                .await?;
                w.stop().await?;
            } else {
                c.batch_execute("update webhook.deliveries set status = 'cancelled', finalized_at = now() where status = 'pending'")
                    .await?;
            }
            let row = CaptureRow {
                clients,
                worker_running,
                plain_tps: median(plain),
                watched_tps: median(watched),
                ratio: 0.0,
                outbox_floor_tps: (!floor.is_empty()).then(|| median(floor)),
            };
            let row = CaptureRow {
                ratio: row.watched_tps / row.plain_tps,
                ..row
            };
            eprintln!(
                "  capture, {clients} clients, worker {}: plain {:.0} tps, watched {:.0} tps, ratio {:.2}{}",
                if worker_running { "running" } else { "stopped" },
                row.plain_tps,
                row.watched_tps,
                row.ratio,
                row.outbox_floor_tps
                    .map(|f| format!(", hand-written outbox {f:.0} tps ({:.2})", f / row.plain_tps))
                    .unwrap_or_default()
            );
            rows.push(row);
            c.batch_execute(
                "vacuum webhook.deliveries, webhook.events, cap_plain, cap_watched, cap_floor",
            )
            .await?;
        }
    }
    drop(c);
    db.drop().await?;
    Ok(rows)
}
