//! What filters cost, and save:
//!
//! - capture: pgbench single-row INSERT TPS into a plain table, a watched
//!   one, and a watched one whose `"when"` rejects 90 % of the rows (`n`,
//!   random 0–9, must be 0), at 2 and 16 clients, measured in turn;
//! - fan-out: `webhook._fan_out` alone (no worker, no HTTP) turning
//!   committed row events into deliveries for 100 endpoints, without
//!   filters, each with a filter every event passes (the same deliveries:
//!   the filters' own cost), and each with a filter passing 10 %.

use crate::db::{self, BenchDb};
use crate::{median, pgbench, Args};
use serde::Serialize;
use std::time::Instant;
use tokio_postgres::Client;

/// Capture TPS at one client count, medians of the runs.
#[derive(Debug, Clone, Serialize)]
pub struct WhenRow {
    pub clients: u32,
    pub plain_tps: f64,
    pub watched_tps: f64,
    /// watched, "when" rejecting 90 % of rows
    pub when_tps: f64,
}

/// Fan-out rate of one configuration, medians of the runs.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRow {
    pub label: String,
    pub events_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub deliveries: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Filters {
    pub capture: Vec<WhenRow>,
    pub fanout_events: usize,
    pub fanout_endpoints: usize,
    pub fanout: Vec<FanoutRow>,
}

const TABLES: [&str; 3] = ["flt_plain", "flt_watched", "flt_when"];
/// Events and endpoints of each fan-out run (200,000 deliveries unfiltered).
const EVENTS: usize = 2_000;
const ENDPOINTS: usize = 100;

fn script(table: &str) -> String {
    format!(
        "\\set n random(0, 9)\ninsert into {table} (n, payload) values (:n, repeat('x', 200));\n"
    )
}

async fn capture(args: &Args) -> anyhow::Result<Vec<WhenRow>> {
    let db = BenchDb::new(&args.dsn, "filters").await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, 1).await?;
    for t in TABLES {
        c.batch_execute(&format!(
            "create table {t} (id bigserial primary key, n int not null, payload text not null)"
        ))
        .await?;
    }
    c.batch_execute(
        "select webhook_watch('flt_watched', '{insert}', event_prefix => 'row');
         select webhook_watch('flt_when', '{insert}', event_prefix => 'row', \"when\" => 'new.n = 0');",
    )
    .await?;
    let mut rows = Vec::new();
    for clients in [2u32, 16] {
        let mut tps: [Vec<f64>; 3] = Default::default();
        for run in 0..args.runs {
            for k in 0..TABLES.len() {
                // Starting one further along each run: the drift falls on all.
                let i = (k + run) % TABLES.len();
                c.batch_execute("checkpoint").await?;
                let out = pgbench::run(
                    args,
                    &db.dsn,
                    "prepared",
                    clients,
                    TABLES[i],
                    &script(TABLES[i]),
                )?;
                c.batch_execute("vacuum").await?;
                tps[i].push(out.tps);
            }
            eprintln!(
                "  filters capture, {clients} clients, run {}: plain {:.0}, watched {:.0}, when (10 % kept) {:.0} tps",
                run + 1,
                tps[0][run],
                tps[1][run],
                tps[2][run]
            );
        }
        let [plain, watched, when] = tps.map(median);
        rows.push(WhenRow {
            clients,
            plain_tps: plain,
            watched_tps: watched,
            when_tps: when,
        });
    }
    drop(c);
    db.drop().await?;
    Ok(rows)
}

/// Seconds `webhook._fan_out` takes to fan out everything committed, and
/// the deliveries it made.
async fn fan_out_all(c: &Client) -> anyhow::Result<(f64, i64)> {
    let start = Instant::now();
    loop {
        c.query_one("select webhook._fan_out(1000)", &[]).await?;
        let pending: bool = c
            .query_one(
                "select webhook._fanout_pending(s) from webhook.fanout_state s",
                &[],
            )
            .await?
            .get(0);
        if !pending {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let made: i64 = c
        .query_one("select count(*) from webhook.deliveries", &[])
        .await?
        .get(0);
    Ok((secs, made))
}

async fn fanout_once(args: &Args, filter: Option<&str>) -> anyhow::Result<(f64, i64)> {
    let db = BenchDb::new(&args.dsn, "filters").await?;
    let c = db.client().await?;
    for i in 0..ENDPOINTS {
        c.execute(
            "select webhook_subscribe($1, name => $2, filter => $3)",
            &[&args.sink, &format!("sink-{i}"), &filter],
        )
        .await?;
    }
    db::watched_table(&c, "bench_rows").await?;
    crate::drain::fill(&c, EVENTS).await?;
    let out = fan_out_all(&c).await?;
    drop(c);
    db.drop().await?;
    Ok(out)
}

pub async fn run(args: &Args) -> anyhow::Result<Filters> {
    let capture = capture(args).await?;
    let configs: [(&str, Option<&str>); 3] = [
        ("no filter", None),
        (
            "a filter every event passes",
            Some("data->>'op' = 'INSERT'"),
        ),
        (
            "a filter 10 % pass",
            Some("(data->'new'->>'id')::bigint % 10 = 0"),
        ),
    ];
    let mut secs: [Vec<f64>; 3] = Default::default();
    let mut made = [0i64; 3];
    for run in 0..args.runs {
        for k in 0..configs.len() {
            let i = (k + run) % configs.len();
            let (s, m) = fanout_once(args, configs[i].1).await?;
            secs[i].push(s);
            made[i] = m;
            eprintln!(
                "  filters fan-out, {ENDPOINTS} endpoints, {}, run {}: {:.0} events/s, {m} deliveries",
                configs[i].0,
                run + 1,
                EVENTS as f64 / s
            );
        }
    }
    let fanout = configs
        .iter()
        .zip(secs)
        .zip(made)
        .map(|(((label, _), s), m)| {
            let s = median(s);
            FanoutRow {
                label: (*label).to_owned(),
                events_per_sec: EVENTS as f64 / s,
                deliveries_per_sec: m as f64 / s,
                deliveries: m,
            }
        })
        .collect();
    Ok(Filters {
        capture,
        fanout_events: EVENTS,
        fanout_endpoints: ENDPOINTS,
        fanout,
    })
}
