//! `pg-webhook-bench`: measures pg_webhook on this machine and writes the
//! figures (JSON, a Markdown table, an SVG plot). Started by
//! `scripts/bench.sh`, which provides a tuned throwaway cluster, an nginx
//! sink and release builds; run that script, not this binary, by hand.
//!
//! Every figure is the median of `--runs` runs.

mod analysts;
mod backfill;
mod capture;
mod ceiling;
mod cpu;
mod db;
mod drain;
mod fairness;
mod filters;
mod flavors;
mod heads;
mod health;
mod isolation;
mod latency;
mod memory;
mod ordering;
mod pgbench;
mod report;
mod retention;
mod statements;
mod worker;

use clap::Parser;
use std::path::PathBuf;

/// Where things are and how much to measure.
/// (A flag given twice takes its last value, so `scripts/bench.sh --out x` overrides its default.)
#[derive(Debug, Clone, Parser)]
#[command(args_override_self = true)]
pub struct Args {
    /// Admin connection string of the benchmark cluster.
    #[arg(long)]
    pub dsn: String,
    /// URL of the nginx sink (answers 200 to any POST).
    #[arg(long)]
    pub sink: String,
    /// The release worker binary.
    #[arg(long)]
    pub worker_bin: PathBuf,
    /// pgbench binary (of the server measured: its `postgres --version` is
    /// reported).
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin/pgbench")]
    pub pgbench: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Events for the drain run (one endpoint).
    #[arg(long, default_value_t = 100_000)]
    pub drain_events: usize,
    /// Events for the fan-out run (times --fanout-endpoints deliveries).
    #[arg(long, default_value_t = 10_000)]
    pub fanout_events: usize,
    /// Endpoints subscribed to `*` in the fan-out run.
    #[arg(long, default_value_t = 10)]
    pub fanout_endpoints: usize,
    /// Pending deliveries in the backlog run.
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// Seconds of each pgbench run.
    #[arg(long, default_value_t = 8)]
    pub pgbench_secs: u64,
    /// Seconds of each steady-rate latency run.
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// Events in each fairness run (to the healthy endpoint).
    #[arg(long, default_value_t = 20_000)]
    pub fairness_events: usize,
    /// Seconds of the steady-load retention run (pg_webhook.retention is 60 s).
    #[arg(long, default_value_t = 480)]
    pub retention_secs: u64,
    /// Rows of the table backfilled in the backfill run.
    #[arg(long, default_value_t = 1_000_000)]
    pub backfill_rows: usize,
    /// Rows per second in the retention run.
    #[arg(long, default_value_t = 500)]
    pub retention_rate: u32,
    /// Another worker binary, to compare drain and latency with this one in
    /// the same run (scenario `compare`).
    #[arg(long)]
    pub compare_worker_bin: Option<PathBuf>,
    /// What to call it in the report.
    #[arg(long, default_value = "the other worker")]
    pub compare_label: String,
    /// Requests in the HTTP ceiling run.
    #[arg(long, default_value_t = 100_000)]
    pub ceiling_requests: usize,
    /// The SQL flavor's install script (`bash scripts/package.sh --sql`),
    /// for the flavors scenario.
    #[arg(long, default_value = "target/package/pg_webhook--0.3.0.sql")]
    pub sql_script: PathBuf,
    /// Only these scenarios (comma separated: ceiling, drain, drain2 (the
    /// same drain by two worker processes), fanout, fanout2 (by two), capture,
    /// latency, backlog, memory, heads (hostile receivers' answer heads),
    /// fairness, retention, health, analysts, statements, compare, filters,
    /// backfill, ordering, flavors (the extension and the SQL flavor),
    /// isolation (the drain where the database defaults to SERIALIZABLE)).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Commit being measured (for the report).
    #[arg(long, default_value = "unknown")]
    pub commit: String,
    /// The command line that started the run (for the report).
    #[arg(long, default_value = "bash scripts/bench.sh")]
    pub command: String,
}

impl Args {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut figures = report::Figures::new(&args);

    if args.wants("ceiling") {
        figures.ceiling = Some(ceiling::run(&args).await?);
        eprintln!();
    }
    // The drains: by one worker process and by two, to one endpoint and
    // fanned out to several.
    for (name, events, endpoints, workers, figure) in [
        ("drain", args.drain_events, 1, 1, &mut figures.drain),
        ("drain2", args.drain_events, 1, 2, &mut figures.drain2),
        (
            "fanout",
            args.fanout_events,
            args.fanout_endpoints,
            1,
            &mut figures.fanout,
        ),
        (
            "fanout2",
            args.fanout_events,
            args.fanout_endpoints,
            2,
            &mut figures.fanout2,
        ),
    ] {
        if args.wants(name) {
            *figure =
                Some(drain::throughput(&args, &args.worker_bin, events, endpoints, workers).await?);
            eprintln!();
        }
    }
    if args.wants("capture") {
        figures.capture = capture::run(&args).await?;
        eprintln!();
    }
    if args.wants("latency") {
        figures.latency = latency::run(&args, &args.worker_bin).await?;
        eprintln!();
    }
    if args.wants("backlog") {
        figures.backlog = Some(drain::backlog(&args).await?);
        eprintln!();
    }
    if args.wants("memory") {
        figures.memory = Some(memory::run(&args).await?);
        eprintln!();
    }
    if args.wants("heads") {
        figures.heads = Some(heads::run(&args).await?);
        eprintln!();
    }
    if args.wants("fairness") {
        figures.fairness = Some(fairness::run(&args).await?);
        eprintln!();
    }
    if args.wants("health") {
        figures.health = Some(health::run(&args).await?);
        eprintln!();
    }
    if args.wants("analysts") {
        figures.analysts = Some(analysts::run(&args).await?);
        eprintln!();
    }
    if args.wants("filters") {
        figures.filters = Some(filters::run(&args).await?);
        eprintln!();
    }
    if args.wants("backfill") {
        figures.backfill = Some(backfill::run(&args).await?);
        eprintln!();
    }
    if args.wants("ordering") {
        figures.ordering = Some(ordering::run(&args).await?);
        eprintln!();
    }
    if args.wants("flavors") {
        figures.flavors = Some(flavors::run(&args).await?);
        eprintln!();
    }
    if args.wants("isolation") {
        figures.isolation = Some(isolation::run(&args).await?);
        eprintln!();
    }
    if args.wants("statements") {
        figures.statements = statements::run(&args).await?;
        eprintln!();
    }
    if let (true, Some(other)) = (args.wants("compare"), &args.compare_worker_bin) {
        // Interleaved, so that the machine's drift falls on both.
        let (mut this, mut that) = (Vec::new(), Vec::new());
        for i in 0..args.runs {
            this.push(drain::drain_once(&args, &args.worker_bin, args.drain_events, 1, 1).await?);
            that.push(drain::drain_once(&args, other, args.drain_events, 1, 1).await?);
            eprintln!(
                "  compare, run {}: this worker {:.0}/s, {} {:.0}/s",
                i + 1,
                this[i].per_sec,
                args.compare_label,
                that[i].per_sec
            );
        }
        let throughput =
            |runs: Vec<drain::DrainRun>| drain::Throughput::of(args.drain_events, 1, 1, &runs);
        figures.comparison = Some(report::Comparison {
            label: args.compare_label.clone(),
            drain_this: throughput(this),
            drain_other: throughput(that),
            latency_this: latency::run(&args, &args.worker_bin).await?,
            latency_other: latency::run(&args, other).await?,
        });
        eprintln!();
    }
    if args.wants("retention") {
        figures.retention = Some(retention::run(&args).await?);
    }
    report::write(&args, &figures)?;
    Ok(())
}

/// The median of some measurements.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}
