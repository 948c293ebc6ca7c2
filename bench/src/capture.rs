//! What capture costs the writers: pgbench single-row INSERT TPS on a
//! watched table, with the worker stopped, at 2 and 16 clients, against
//!
//! - a plain table (the same INSERT, no trigger);
//! - the *floor*: the least SQL that stores one event beside the row — one
//!   statement inserting the row and, from its RETURNING, an event
//!   (`row_to_json` of the row into an outbox table with an identity key),
//!   no trigger;
//!
//! and with 1, 10 and 100 endpoints subscribed to `*` (capture writes one
//! row per captured row whatever the number of endpoints: the figures
//! should not move). Each run measures every configuration once, in turn,
//! so that the machine's drift spreads over all of them.

use crate::db::BenchDb;
use crate::{median, pgbench, Args};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct CaptureRow {
    pub clients: u32,
    pub plain_tps: f64,
    pub floor_tps: f64,
    /// watched-table TPS with 1, 10 and 100 endpoints
    pub watched_tps: Vec<(usize, f64)>,
}

impl CaptureRow {
    /// Watched TPS with one endpoint over plain INSERT.
    pub fn of_plain(&self) -> f64 {
        self.watched_tps
            .first()
            .map_or(f64::NAN, |(_, t)| t / self.plain_tps)
    }

    /// Watched TPS with one endpoint over the floor.
    pub fn of_floor(&self) -> f64 {
        self.watched_tps
            .first()
            .map_or(f64::NAN, |(_, t)| t / self.floor_tps)
    }

    /// Largest over smallest watched TPS across endpoint counts.
    pub fn spread(&self) -> f64 {
        let ts: Vec<f64> = self.watched_tps.iter().map(|(_, t)| *t).collect();
        let max = ts.iter().copied().fold(f64::MIN, f64::max);
        let min = ts.iter().copied().fold(f64::MAX, f64::min);
        max / min
    }
}

/// The statement of each pgbench script.
fn script_sql(table: &str) -> String {
    match table {
        "cap_floor" => "with r as (insert into cap_floor (payload) values (repeat('x', 200)) returning *)\n\
             insert into cap_outbox (event_type, payload) select 'row.created', row_to_json(r) from r;\n"
            .to_owned(),
        _ => format!("insert into {table} (payload) values (repeat('x', 200));\n"),
    }
}

/// `clients` writers running `table`'s single-row INSERT, prepared.
fn insert_tps(args: &Args, dsn: &str, clients: u32, table: &str) -> anyhow::Result<f64> {
    pgbench::tps(args, dsn, "prepared", clients, table, &script_sql(table))
}

/// One database per endpoint count, so that each keeps its endpoints.
async fn watched_db(args: &Args, endpoints: usize) -> anyhow::Result<BenchDb> {
    let db = BenchDb::new(&args.dsn, &format!("capture{endpoints}")).await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, endpoints).await?;
    c.batch_execute(
        "create table cap_watched (id bigserial primary key, payload text not null);
         select webhook_watch('cap_watched', event_prefix => 'row');",
    )
    .await?;
    Ok(db)
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<CaptureRow>> {
    const ENDPOINTS: [usize; 3] = [1, 10, 100];
    let base = BenchDb::new(&args.dsn, "capture").await?;
    base.client()
        .await?
        .batch_execute(
            "create table cap_plain (id bigserial primary key, payload text not null);
             create table cap_floor (id bigserial primary key, payload text not null);
             create table cap_outbox (id bigint generated always as identity primary key,
                                      event_type text not null, payload json not null,
                                      created_at timestamptz not null default now());",
        )
        .await?;
    let mut watched = Vec::new();
    for n in ENDPOINTS {
        watched.push((n, watched_db(args, n).await?));
    }
    let mut rows = Vec::new();
    for clients in [2u32, 16] {
        let (mut plain, mut floor) = (Vec::new(), Vec::new());
        let mut per_n: Vec<Vec<f64>> = vec![Vec::new(); ENDPOINTS.len()];
        for _ in 0..args.runs {
            plain.push(insert_tps(args, &base.dsn, clients, "cap_plain")?);
            floor.push(insert_tps(args, &base.dsn, clients, "cap_floor")?);
            for (i, (_, db)) in watched.iter().enumerate() {
                per_n[i].push(insert_tps(args, &db.dsn, clients, "cap_watched")?);
            }
        }
        let row = CaptureRow {
            clients,
            plain_tps: median(plain),
            floor_tps: median(floor),
            watched_tps: ENDPOINTS
                .iter()
                .copied()
                .zip(per_n.into_iter().map(median))
                .collect(),
        };
        eprintln!(
            "  capture, {clients} clients, worker stopped: plain {:.0} tps, floor {:.0} tps, watched {} → {:.2} of plain, {:.2} of the floor, spread {:.2}",
            row.plain_tps,
            row.floor_tps,
            row.watched_tps
                .iter()
                .map(|(n, t)| format!("{t:.0} tps ({n} endpoints)"))
                .collect::<Vec<_>>()
                .join(", "),
            row.of_plain(),
            row.of_floor(),
            row.spread()
        );
        rows.push(row);
    }
    base.drop().await?;
    for (_, db) in watched {
        db.drop().await?;
    }
    Ok(rows)
}
