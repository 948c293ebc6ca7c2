//! What sending the worker's statements unnamed (parse, bind and execute in
//! one round trip: pgbouncer-safe) costs against named prepared statements:
//! pgbench, one client, `-M extended` (unnamed, parsed and planned each
//! time) against `-M prepared`, on the worker's next-due call and on a
//! claim that finds nothing (the statements it sends most often when idle
//! or lingering). A claim or record statement carries a whole batch, so the
//! difference per delivery is this divided by the batch size.

use crate::db::BenchDb;
use crate::{median, pgbench, Args};
use serde::Serialize;

/// One client running `sql` alone in protocol `mode`.
fn statement_tps(args: &Args, dsn: &str, mode: &str, sql: &str) -> anyhow::Result<f64> {
    Ok(pgbench::run(args, dsn, mode, 1, "statement", &format!("{sql};\n"))?.tps)
}

#[derive(Debug, Clone, Serialize)]
pub struct Statements {
    pub statement: String,
    pub prepared_tps: f64,
    pub unnamed_tps: f64,
    /// extra time per statement when unnamed, µs
    pub extra_us: f64,
}

pub async fn run(args: &Args) -> anyhow::Result<Vec<Statements>> {
    let db = BenchDb::new(&args.dsn, "statements").await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, 1).await?;
    let cases = [
        ("next due", "select webhook._next_due_ms(128, '{}'::bigint[], '{}'::integer[])"),
        (
            "empty claim",
            "select * from webhook._claim_deliveries('bench', 100, '30 seconds', 128, '{}'::bigint[], '{}'::integer[], 1000, 33554432)",
        ),
    ];
    let mut out = Vec::new();
    for (name, sql) in cases {
        let (mut prepared, mut unnamed) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            prepared.push(statement_tps(args, &db.dsn, "prepared", sql)?);
            unnamed.push(statement_tps(args, &db.dsn, "extended", sql)?);
        }
        let (p, u) = (median(prepared), median(unnamed));
        let row = Statements {
            statement: name.into(),
            prepared_tps: p,
            unnamed_tps: u,
            extra_us: (1.0 / u - 1.0 / p) * 1e6,
        };
        eprintln!(
            "  statements, {name}: prepared {p:.0}/s, unnamed {u:.0}/s: {:.1} µs more per statement",
            row.extra_us
        );
        out.push(row);
    }
    drop(c);
    db.drop().await?;
    Ok(out)
}
