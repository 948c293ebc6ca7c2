//! The two flavors side by side, on one cluster in one run: what capture
//! costs writers (pgbench single-row INSERT TPS against a plain table, at
//! 2 and 16 clients, with 1 and 100 endpoints subscribed, worker stopped:
//! the measurement of capture.rs) and the drain (deliveries per second of
//! row events to one endpoint, one worker), with the extension and with the
//! SQL flavor (README, "Installing on a managed service"). Configurations
//! are measured in turn, each run starting one further along, so that the
//! machine's drift falls on all of them. Goal: the SQL flavor keeps at
//! least 0.7 of plain INSERT at 2 clients.

use crate::capture::{measure, watched_db};
use crate::db::{BenchDb, Flavor};
use crate::drain::{drain_flavor, DrainRun};
use crate::{median, Args};
use serde::Serialize;

/// Endpoint counts measured.
const ENDPOINTS: [usize; 2] = [1, 100];

/// Capture at one client count.
#[derive(Debug, Clone, Serialize)]
pub struct FlavorCapture {
    pub clients: u32,
    pub plain_tps: f64,
    /// watched-table TPS with the extension, per endpoint count
    pub extension_tps: Vec<(usize, f64)>,
    /// the same with the SQL flavor
    pub sql_tps: Vec<(usize, f64)>,
    /// CPU time of the whole machine per transaction (µs): plain,
    /// extension and SQL flavor with one endpoint (medians)
    pub cpu_us_per_txn: (f64, f64, f64),
}

impl FlavorCapture {
    /// Watched TPS with one endpoint over plain INSERT, per flavor.
    pub fn of_plain(&self) -> (f64, f64) {
        (
            self.extension_tps[0].1 / self.plain_tps,
            self.sql_tps[0].1 / self.plain_tps,
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Flavors {
    pub capture: Vec<FlavorCapture>,
    /// row events drained per run
    pub drain_events: usize,
    /// deliveries per second, extension / SQL flavor (medians)
    pub drain_per_sec: (f64, f64),
    /// CPU µs per delivery, extension / SQL flavor (medians)
    pub drain_cpu_us: (f64, f64),
}

pub async fn run(args: &Args) -> anyhow::Result<Flavors> {
    let base = BenchDb::new(&args.dsn, "flavor_plain").await?;
    let bc = base.client().await?;
    bc.batch_execute("create table cap_plain (id bigserial primary key, payload text not null);")
        .await?;
    // plain, then (flavor, endpoints) for each flavor and count.
    let mut watched = Vec::new();
    for flavor in [Flavor::Extension, Flavor::Sql] {
        for n in ENDPOINTS {
            let db = watched_db(args, n, flavor).await?;
            let c = db.client().await?;
            watched.push((flavor, n, db, c));
        }
    }
    let configs = 1 + watched.len();
    let mut capture = Vec::new();
    for clients in [2u32, 16] {
        let mut samples = vec![Vec::new(); configs];
        for run in 0..args.runs {
            for k in 0..configs {
                let i = (run + k) % configs;
                let sample = if i == 0 {
                    measure(args, &base, &bc, clients, "cap_plain").await?
                } else {
                    let (_, _, db, c) = &watched[i - 1];
                    measure(args, db, c, clients, "cap_watched").await?
                };
                samples[i].push(sample);
            }
        }
        let tps = |i: usize| median(samples[i].iter().map(|s| s.tps).collect());
        let cpu = |i: usize| median(samples[i].iter().map(|s| s.cpu_us_per_txn).collect());
        let of = |flavor: Flavor| -> Vec<(usize, f64)> {
            watched
                .iter()
                .enumerate()
                .filter(|(_, w)| w.0 == flavor)
                .map(|(i, w)| (w.1, tps(i + 1)))
                .collect()
        };
        let row = FlavorCapture {
            clients,
            plain_tps: tps(0),
            extension_tps: of(Flavor::Extension),
            sql_tps: of(Flavor::Sql),
            cpu_us_per_txn: (cpu(0), cpu(1), cpu(1 + ENDPOINTS.len())),
        };
        let (ext, sql) = row.of_plain();
        eprintln!(
            "  flavors, capture at {clients} clients: plain {:.0} tps; extension {}; SQL flavor {} → {ext:.2} / {sql:.2} of plain (one endpoint); CPU µs per transaction {:.0} / {:.0} / {:.0}",
            row.plain_tps,
            row.extension_tps.iter().map(|(n, t)| format!("{t:.0} tps ({n})")).collect::<Vec<_>>().join(", "),
            row.sql_tps.iter().map(|(n, t)| format!("{t:.0} tps ({n})")).collect::<Vec<_>>().join(", "),
            row.cpu_us_per_txn.0,
            row.cpu_us_per_txn.1,
            row.cpu_us_per_txn.2,
        );
        capture.push(row);
    }
    drop(bc);
    base.drop().await?;
    for (_, _, db, c) in watched {
        drop(c);
        db.drop().await?;
    }
    // The drain, alternating.
    let (mut ext, mut sql): (Vec<DrainRun>, Vec<DrainRun>) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        for k in 0..2 {
            let flavor = if (run + k) % 2 == 0 {
                Flavor::Extension
            } else {
                Flavor::Sql
            };
            let r = drain_flavor(args, &args.worker_bin, args.drain_events, 1, 1, flavor).await?;
            eprintln!(
                "  flavors, drain of {} events, {flavor:?}, run {}: {:.0} deliveries/s, {:.0} µs of CPU per delivery",
                args.drain_events,
                run + 1,
                r.per_sec,
                r.cpu_us
            );
            match flavor {
                Flavor::Extension => ext.push(r),
                Flavor::Sql => sql.push(r),
            }
        }
    }
    let per_sec = |rs: &[DrainRun]| median(rs.iter().map(|r| r.per_sec).collect());
    let cpu = |rs: &[DrainRun]| median(rs.iter().map(|r| r.cpu_us).collect());
    Ok(Flavors {
        capture,
        drain_events: args.drain_events,
        drain_per_sec: (per_sec(&ext), per_sec(&sql)),
        drain_cpu_us: (cpu(&ext), cpu(&sql)),
    })
}
