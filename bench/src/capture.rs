//! What capture costs the writers: pgbench single-row INSERT TPS on a
//! watched table, with the worker stopped, at 2 and 16 clients, against
//!
//! - a plain table (the same INSERT, no trigger);
//! - the *floor*: the least SQL that stores one event beside the row — one
//!   statement inserting the row and, from its RETURNING, an event
//!   (`row_to_json` of the row into an outbox table with an identity key),
//!   no trigger;
//! - the *full floor*: the same one statement, no trigger, writing the
//!   event pg_webhook writes — the same columns (transaction id, source
//!   table, size), the same payload text (`{"table", "schema", "op", "new",
//!   "old"}`) and the same two indexes. The floor is the goal's yardstick;
//!   the full floor tells the trigger's cost apart from what the event's
//!   contents cost to write;
//!
//! and with 1, 10 and 100 endpoints subscribed to `*` (capture writes one
//! row per captured row whatever the number of endpoints: the figures
//! should not move). Each run measures every configuration once, in turn
//! (starting one further along each run), so that the machine's drift
//! spreads over all of them. Beside TPS, each
//! measurement notes the WAL written and the machine's CPU time per
//! transaction: at 16 clients this machine waits on WAL flushes
//! (`LWLock:WALWrite`) more than on anything else, so WAL per transaction
//! bounds what any of these statements can reach.

use crate::db::{BenchDb, Flavor};
use crate::{median, pgbench, Args};
use serde::Serialize;
use tokio_postgres::Client;

/// One figure for each configuration measured (pg_webhook's with one
/// endpoint).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PerConfig {
    pub plain: f64,
    pub floor: f64,
    pub full_floor: f64,
    pub watched: f64,
}

impl PerConfig {
    /// "plain / floor / full floor / watched", rounded.
    pub fn joined(&self) -> String {
        format!(
            "{:.0} / {:.0} / {:.0} / {:.0}",
            self.plain, self.floor, self.full_floor, self.watched
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptureRow {
    pub clients: u32,
    pub plain_tps: f64,
    pub floor_tps: f64,
    /// the floor writing pg_webhook's whole event (see the module's doc)
    pub full_floor_tps: f64,
    /// watched-table TPS with 1, 10 and 100 endpoints
    pub watched_tps: Vec<(usize, f64)>,
    /// WAL bytes written per transaction (the whole cluster's), medians
    pub wal_bytes_per_txn: PerConfig,
    /// CPU time of the whole machine per transaction (µs), medians
    pub cpu_us_per_txn: PerConfig,
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

    /// Watched TPS with one endpoint over the full floor.
    pub fn of_full_floor(&self) -> f64 {
        self.watched_tps
            .first()
            .map_or(f64::NAN, |(_, t)| t / self.full_floor_tps)
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
        // pg_webhook's event, byte for byte but for the table's name (three
        // letters shorter than cap_watched, twice): its payload text, its virtual
        // transaction id (an incarnation above the xid8), its size. The
        // colons are written \x3a: pgbench would read `:"name"` as a
        // variable.
        "cap_full" => "with r as (insert into cap_full (payload) values (repeat('x', 200)) returning *),\n\
             e as (select format(E'{\"table\"\\x3a\"cap_full\",\"schema\"\\x3a\"public\",\"op\"\\x3a\"INSERT\",\"new\"\\x3a%s,\"old\"\\x3anull}', row_to_json(r))::json as p from r)\n\
             insert into cap_full_events (slot, txid, event_type, payload, payload_bytes, source_table)\n\
             select 0, (1::bigint << 48) + pg_current_xact_id()::text::bigint, 'row.created', p, octet_length(p::text), 'public.cap_full' from e;\n"
            .to_owned(),
        _ => format!("insert into {table} (payload) values (repeat('x', 200));\n"),
    }
}

/// One measurement of one configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub tps: f64,
    pub wal_bytes_per_txn: f64,
    pub cpu_us_per_txn: f64,
}

/// The cluster's WAL insert position, in bytes.
async fn wal_position(c: &Client) -> anyhow::Result<f64> {
    Ok(c.query_one(
        "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::float8",
        &[],
    )
    .await?
    .get(0))
}

/// `clients` writers running `table`'s single-row INSERT, prepared, with
/// the WAL and CPU they cost per transaction. Each starts from a
/// checkpoint and leaves its database vacuumed (neither timed): otherwise
/// the autovacuum of the rows one configuration wrote, and the checkpoint
/// its WAL brought on, would be paid by whichever runs next.
pub(crate) async fn measure(
    args: &Args,
    db: &BenchDb,
    c: &Client,
    clients: u32,
    table: &str,
) -> anyhow::Result<Sample> {
    c.batch_execute("checkpoint").await?;
    let (wal0, cpu0) = (wal_position(c).await?, crate::cpu::machine());
    let out = pgbench::run(
        args,
        &db.dsn,
        "prepared",
        clients,
        table,
        &script_sql(table),
    )?;
    let (wal1, cpu1) = (wal_position(c).await?, crate::cpu::machine());
    c.batch_execute("vacuum").await?;
    let per_txn = |v: f64| v / out.transactions.max(1.0);
    Ok(Sample {
        tps: out.tps,
        wal_bytes_per_txn: per_txn(wal1 - wal0),
        cpu_us_per_txn: crate::cpu::busy_between(cpu0, cpu1)
            .map_or(f64::NAN, |(busy, _)| per_txn(busy * 1e6)),
    })
}

/// One database per endpoint count (and flavor), so that each keeps its
/// endpoints.
pub(crate) async fn watched_db(
    args: &Args,
    endpoints: usize,
    flavor: Flavor,
) -> anyhow::Result<BenchDb> {
    let label = format!("capture_{flavor:?}_{endpoints}").to_lowercase();
    let db = BenchDb::with(&args.dsn, &label, flavor, Some(&args.sql_script)).await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, endpoints).await?;
    c.batch_execute(
        "create table cap_watched (id bigserial primary key, payload text not null);
         select webhook_watch('cap_watched', event_prefix => 'row');",
    )
    .await?;
    Ok(db)
}

/// Medians of one figure of the samples of plain, floor, full floor and
/// pg_webhook with one endpoint (the first four configurations).
fn medians(samples: &[Vec<Sample>], figure: impl Fn(&Sample) -> f64) -> PerConfig {
    let m = |i: usize| median(samples[i].iter().map(&figure).collect());
    PerConfig {
        plain: m(0),
        floor: m(1),
        full_floor: m(2),
        watched: m(3),
    }
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<CaptureRow>> {
    const ENDPOINTS: [usize; 3] = [1, 10, 100];
    let base = BenchDb::new(&args.dsn, "capture").await?;
    let bc = base.client().await?;
    bc.batch_execute(
        "create table cap_plain (id bigserial primary key, payload text not null);
         create table cap_floor (id bigserial primary key, payload text not null);
         create table cap_outbox (id bigint generated always as identity primary key,
                                  event_type text not null, payload json not null,
                                  created_at timestamptz not null default now());
         create table cap_full (id bigserial primary key, payload text not null);
         -- webhook.events' columns and indexes (one partition of it)
         create table cap_full_events (
             id bigint generated always as identity, slot smallint not null,
             txid bigint not null, event_type text not null, payload json not null,
             payload_bytes integer not null, source_table text, idempotency_key text,
             created_at timestamptz not null default now());
         create index on cap_full_events (txid, id);
         create index on cap_full_events using brin (id);",
    )
    .await?;
    let mut watched = Vec::new();
    for n in ENDPOINTS {
        let db = watched_db(args, n, Flavor::Extension).await?;
        let c = db.client().await?;
        watched.push((n, db, c));
    }
    let mut rows = Vec::new();
    for clients in [2u32, 16] {
        // The six configurations: plain, floor, full floor (0..3), then
        // pg_webhook with each endpoint count (3..6). Each run starts one
        // further along, so that no configuration always follows the same one.
        const BASE_TABLES: [&str; 3] = ["cap_plain", "cap_floor", "cap_full"];
        const CONFIGS: usize = BASE_TABLES.len() + ENDPOINTS.len();
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); CONFIGS];
        for run in 0..args.runs {
            for k in 0..CONFIGS {
                let i = (run + k) % CONFIGS;
                let sample = match BASE_TABLES.get(i) {
                    Some(table) => measure(args, &base, &bc, clients, table).await?,
                    None => {
                        let (_, db, c) = &watched[i - BASE_TABLES.len()];
                        measure(args, db, c, clients, "cap_watched").await?
                    }
                };
                samples[i].push(sample);
            }
        }
        let tps = medians(&samples, |s| s.tps);
        let row = CaptureRow {
            clients,
            plain_tps: tps.plain,
            floor_tps: tps.floor,
            full_floor_tps: tps.full_floor,
            watched_tps: ENDPOINTS
                .iter()
                .copied()
                .zip(
                    samples[BASE_TABLES.len()..]
                        .iter()
                        .map(|s| median(s.iter().map(|x| x.tps).collect())),
                )
                .collect(),
            wal_bytes_per_txn: medians(&samples, |s| s.wal_bytes_per_txn),
            cpu_us_per_txn: medians(&samples, |s| s.cpu_us_per_txn),
        };
        eprintln!(
            "  capture, {clients} clients, worker stopped: plain {:.0} tps, floor {:.0} tps, full floor {:.0} tps, watched {} → {:.2} of plain, {:.2} of the floor, {:.2} of the full floor, spread {:.2}; WAL per transaction {} B, CPU {} µs (plain / floor / full floor / watched)",
            row.plain_tps,
            row.floor_tps,
            row.full_floor_tps,
            row.watched_tps
                .iter()
                .map(|(n, t)| format!("{t:.0} tps ({n} endpoints)"))
                .collect::<Vec<_>>()
                .join(", "),
            row.of_plain(),
            row.of_floor(),
            row.of_full_floor(),
            row.spread(),
            row.wal_bytes_per_txn.joined(),
            row.cpu_us_per_txn.joined()
        );
        rows.push(row);
    }
    drop(bc);
    base.drop().await?;
    for (_, db, c) in watched {
        drop(c);
        db.drop().await?;
    }
    Ok(rows)
}
