//! What sending the worker's statements unnamed (parse, bind and execute in
//! one round trip: pgbouncer-safe) costs against named prepared statements:
//! pgbench, one client, `-M extended` (unnamed, parsed and planned each
//! time) against `-M prepared`, on the worker's next-due call and on a
//! claim that finds nothing (the statements it sends most often when idle
//! or lingering). A claim or record statement carries a whole batch, so the
//! difference per delivery is this divided by the batch size.

use crate::db::BenchDb;
use crate::{median, Args};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Statements {
    pub statement: String,
    pub prepared_tps: f64,
    pub unnamed_tps: f64,
    /// extra time per statement when unnamed, µs
    pub extra_us: f64,
}

fn pgbench(args: &Args, dsn: &str, mode: &str, sql: &str) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join("pg_webhook_bench_statement.sql");
    std::fs::write(&script, format!("{sql};\n"))?;
    let out = std::process::Command::new(&args.pgbench)
        .args([
            "-n",
            "-M",
            mode,
            "-c",
            "1",
            "-j",
            "1",
            "-T",
            &args.pgbench_secs.to_string(),
        ])
        .args(["-f", script.to_str().unwrap_or_default()])
        .arg(dsn)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {text}"))
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
            prepared.push(pgbench(args, &db.dsn, "prepared", sql)?);
            unnamed.push(pgbench(args, &db.dsn, "extended", sql)?);
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
