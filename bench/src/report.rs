//! The report: a table on stdout, and under the output folder the figures as
//! JSON, the same table as Markdown (pasted into BENCHMARKS.md) and an SVG plot.

use crate::analysts::Analysts;
use crate::backfill::Backfill;
use crate::capture::CaptureRow;
use crate::ceiling::Ceiling;
use crate::drain::{Backlog, Throughput};
use crate::fairness::Fairness;
use crate::filters::Filters;
use crate::flavors::Flavors;
use crate::heads::Heads;
use crate::health::Health;
use crate::isolation::Isolation;
use crate::latency::LatencyRow;
use crate::memory::Memory;
use crate::ordering::Ordering;
use crate::retention::Retention;
use crate::statements::Statements;
use crate::Args;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub postgres: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub date: String,
    pub commit: String,
    pub command: String,
    pub runs: usize,
    pub machine: Machine,
    pub ceiling: Option<Ceiling>,
    pub drain: Option<Throughput>,
    /// the same drain by two worker processes
    pub drain2: Option<Throughput>,
    pub fanout: Option<Throughput>,
    /// the same fan-out by two worker processes
    pub fanout2: Option<Throughput>,
    pub capture: Vec<CaptureRow>,
    pub latency: Vec<LatencyRow>,
    pub backlog: Option<Backlog>,
    pub fairness: Option<Fairness>,
    pub filters: Option<Filters>,
    pub backfill: Option<Backfill>,
    pub ordering: Option<Ordering>,
    /// the extension and the SQL flavor side by side
    pub flavors: Option<Flavors>,
    /// the drain where the database defaults to SERIALIZABLE
    pub isolation: Option<Isolation>,
    pub retention: Option<Retention>,
    pub health: Option<Health>,
    pub memory: Option<Memory>,
    pub heads: Option<Heads>,
    pub analysts: Option<Analysts>,
    pub statements: Vec<Statements>,
    pub comparison: Option<Comparison>,
}

/// The same drain and latency runs with another worker binary, interleaved
/// with this one's (before/after a change, in one run).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub label: String,
    pub drain_this: Throughput,
    pub drain_other: Throughput,
    pub latency_this: Vec<LatencyRow>,
    pub latency_other: Vec<LatencyRow>,
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

impl Figures {
    pub fn new(args: &Args) -> Self {
        let mem_kb: f64 = sh("awk '/MemTotal/ {print $2}' /proc/meminfo")
            .parse()
            .unwrap_or(0.0);
        Self {
            date: sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
            commit: args.commit.clone(),
            command: args.command.clone(),
            runs: args.runs,
            machine: Machine {
                cpu: sh("awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo"),
                cores: std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(0),
                memory_gib: (mem_kb / 1024.0 / 1024.0 * 10.0).round() / 10.0,
                kernel: sh("uname -r"),
                // The server beside the pgbench the run uses.
                postgres: sh(&format!(
                    "{} --version",
                    args.pgbench.with_file_name("postgres").display()
                )),
            },
            ceiling: None,
            drain: None,
            drain2: None,
            fanout2: None,
            fanout: None,
            capture: Vec::new(),
            latency: Vec::new(),
            backlog: None,
            fairness: None,
            filters: None,
            backfill: None,
            ordering: None,
            flavors: None,
            isolation: None,
            retention: None,
            health: None,
            memory: None,
            heads: None,
            analysts: None,
            statements: Vec::new(),
            comparison: None,
        }
    }
}

fn frac(x: f64, of: Option<f64>) -> String {
    match of {
        Some(c) if c > 0.0 => format!("{:.2}", x / c),
        _ => "–".into(),
    }
}

/// The Markdown table (also printed).
pub fn table(f: &Figures) -> String {
    let http = f.ceiling.as_ref().map(|c| c.http_requests_per_sec);
    let sql = f.ceiling.as_ref().map(|c| c.sql_deliveries_per_sec);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| figure | value | goal | of HTTP ceiling | of SQL ceiling |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    for (what, d) in [
        ("drain (fan-out included)", &f.drain),
        ("fan-out", &f.fanout),
        ("drain by two worker processes", &f.drain2),
        ("fan-out by two worker processes", &f.fanout2),
    ] {
        if let Some(d) = d {
            let endpoints = match d.endpoints {
                1 => "1 endpoint".to_owned(),
                n => format!("{n} endpoints"),
            };
            let _ = writeln!(
                t,
                "| {what}, {} events × {endpoints} | **{:.0} deliveries/s** | ≥ 20,000 | {} | {} |",
                d.events,
                d.per_sec,
                frac(d.per_sec, http),
                frac(d.per_sec, sql)
            );
        }
    }
    for (what, d) in [
        ("drain", &f.drain),
        ("drain by two workers", &f.drain2),
        ("fan-out", &f.fanout),
        ("fan-out by two workers", &f.fanout2),
    ] {
        if let Some(d) = d {
            let _ = writeln!(
                t,
                "| {what}: CPU per delivery, whole machine (of which the worker processes) | **{:.0} µs** ({:.0} µs); cores {:.0} % busy | {} cores at this cost: {:.0}/s | | |",
                d.cpu_us_per_delivery,
                d.worker_cpu_us_per_delivery,
                d.busy_share * 100.0,
                f.machine.cores,
                d.cpu_bound_per_sec()
            );
        }
    }
    for c in &f.capture {
        let _ = writeln!(
            t,
            "| capture, {} clients, worker stopped | **{:.2}** of plain INSERT, **{:.2}** of the floor ({:.0} TPS; plain {:.0}, floor {:.0}) | ≥ 0.80 of plain (2 clients), ≥ 0.90 of the floor (16) | | |",
            c.clients,
            c.of_plain(),
            c.of_floor(),
            c.watched_tps.first().map_or(f64::NAN, |w| w.1),
            c.plain_tps,
            c.floor_tps
        );
        let _ = writeln!(
            t,
            "| capture, {} clients: the full floor (pg_webhook's event, no trigger); WAL and CPU per transaction, plain / floor / full floor / watched | watched **{:.2}** of the full floor ({:.0} TPS); WAL {} B; CPU {} µs | | | |",
            c.clients,
            c.of_full_floor(),
            c.full_floor_tps,
            c.wal_bytes_per_txn.joined(),
            c.cpu_us_per_txn.joined()
        );
        let _ = writeln!(
            t,
            "| capture, {} clients, 1 / 10 / 100 endpoints | {} TPS: spread **{:.2}** | within 10 % (≤ 1.10) | | |",
            c.clients,
            c.watched_tps.iter().map(|(_, t)| format!("{t:.0}")).collect::<Vec<_>>().join(" / "),
            c.spread()
        );
    }
    for l in &f.latency {
        let _ = writeln!(
            t,
            "| latency at {}/s ({} samples) | p50 **{:.2} ms**, p99 **{:.2} ms**, max {:.2} ms | p50 ≤ 5, p99 ≤ 20 | | |",
            l.rate_per_sec, l.samples, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    if let Some(b) = &f.backlog {
        let _ = writeln!(
            t,
            "| backlog of {} events: fan-out in one call | **{:.0} events/s** | | | |",
            b.deliveries, b.fanout_per_sec
        );
        let _ = writeln!(
            t,
            "| backlog of {} deliveries: drain | **{:.0} deliveries/s**, peak worker RSS **{:.1} MiB** | RSS ≤ 100 MB | {} | {} |",
            b.deliveries, b.per_sec, b.peak_rss_mib, frac(b.per_sec, http), frac(b.per_sec, sql)
        );
        for (label, p) in [
            ("start", &b.claim_at_start),
            ("near end", &b.claim_near_end),
        ] {
            let _ = writeln!(
                t,
                "| claim plan at {label} | {} — cost {:.2}, {:.3} ms, {} buffers | flat | | |",
                p.nodes, p.total_cost, p.execution_ms, p.shared_buffers_hit
            );
        }
    }
    if let Some(fair) = &f.fairness {
        let _ = writeln!(
            t,
            "| fairness, {} events: healthy endpoint alone / beside a blackholed one | {:.0} / {:.0} deliveries/s: **{:.2}** | ≥ 0.80 | | |",
            fair.events, fair.alone_per_sec, fair.with_blackhole_per_sec, fair.ratio
        );
    }
    if let Some(fl) = &f.filters {
        for r in &fl.capture {
            let _ = writeln!(
                t,
                "| capture, {} clients: plain / watched / watched with a \"when\" keeping 10 % of rows | {:.0} / {:.0} / {:.0} tps: **{:.2}** of plain, {:.2} of watched | a rejected row costs no event | | |",
                r.clients, r.plain_tps, r.watched_tps, r.when_tps, r.when_tps / r.plain_tps, r.when_tps / r.watched_tps
            );
        }
        let base = fl.fanout.first().map_or(f64::NAN, |r| r.events_per_sec);
        for r in &fl.fanout {
            let _ = writeln!(
                t,
                "| fan-out alone, {} events to {} endpoints, {} | {:.0} events/s, {:.0} deliveries/s ({} made): **{:.2}** of no filter | | | |",
                fl.fanout_events, fl.fanout_endpoints, r.label, r.events_per_sec, r.deliveries_per_sec, r.deliveries,
                r.events_per_sec / base
            );
        }
    }
    if let Some(b) = &f.backfill {
        let _ = writeln!(
            t,
            "| backfill of {} rows to one endpoint, live load beside it / drain of captured rows | {:.0} rows/s / {:.0} deliveries/s: **{:.2}** | | | |",
            b.rows, b.rows_per_sec, b.drain_per_sec, b.rows_per_sec / b.drain_per_sec
        );
        let _ = writeln!(
            t,
            "| live events (100/s) during the backfill / alone, latency p50 and p99 | {:.1} / {:.1} ms and {:.1} / {:.1} ms | not starved | | |",
            b.live_during_ms.0, b.live_alone_ms.0, b.live_during_ms.1, b.live_alone_ms.1
        );
    }
    if let Some(o) = &f.ordering {
        let _ = writeln!(
            t,
            "| drain of {} published events over {} keys, ordered / unordered endpoint | {:.0} / {:.0} deliveries/s: **{:.2}** | ≥ 0.80 | | |",
            o.events, o.keys, o.ordered_per_sec, o.unordered_per_sec, o.ordered_per_sec / o.unordered_per_sec
        );
        let _ = writeln!(
            t,
            "| {} events of one key to an ordered endpoint: a delivery every / attempt | {:.0} deliveries/s; {:.2} / {:.2} ms | back to back | | |",
            o.one_key_events, o.one_key_per_sec, o.one_key_gap_ms, o.one_key_attempt_ms
        );
    }
    if let Some(fl) = &f.flavors {
        for c in &fl.capture {
            let (ext, sql) = c.of_plain();
            let per = |v: &[(usize, f64)]| {
                v.iter()
                    .map(|(n, t)| format!("{t:.0} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                t,
                "| capture at {} clients, extension / SQL flavor: watched TPS (endpoints) over plain INSERT {:.0} tps | {} / {}: **{:.2} / {:.2}** | SQL flavor ≥ 0.70 at 2 clients | | |",
                c.clients, c.plain_tps, per(&c.extension_tps), per(&c.sql_tps), ext, sql
            );
        }
        let _ = writeln!(
            t,
            "| drain of {} row events to one endpoint, extension / SQL flavor | {:.0} / {:.0} deliveries/s ({:.0} / {:.0} µs CPU each): **{:.2}** | | | |",
            fl.drain_events, fl.drain_per_sec.0, fl.drain_per_sec.1, fl.drain_cpu_us.0, fl.drain_cpu_us.1,
            fl.drain_per_sec.1 / fl.drain_per_sec.0
        );
    }
    if let Some(i) = &f.isolation {
        let _ = writeln!(
            t,
            "| drain of {} row events to one endpoint where the database defaults to read committed / serializable | {:.0} / {:.0} deliveries/s ({:.0} / {:.0} µs CPU each): **{:.2}** | | | |",
            i.read_committed.events, i.read_committed.per_sec, i.serializable.per_sec,
            i.read_committed.cpu_us_per_delivery, i.serializable.cpu_us_per_delivery,
            i.serializable.per_sec / i.read_committed.per_sec
        );
    }
    if let Some(r) = &f.retention {
        let _ = writeln!(
            t,
            "| retention: {} s at {}/s, retention {} s — log size at the end of each window | {} MiB | flat after the first | | |",
            r.seconds,
            r.rate_per_sec,
            r.retention_secs,
            r.size_mib_per_window.iter().map(|s| format!("{s:.1}")).collect::<Vec<_>>().join(", ")
        );
        let _ = writeln!(
            t,
            "| retention: INSERT p99 during purges / otherwise ({} purges, {} events removed; purge median {:.0} ms, max {:.0} ms) | **{:.2} ms** ({} inserts) / {:.2} ms ({} inserts); max {:.2} / {:.2} ms | not blocked | | |",
            r.purges, r.events_purged, r.purge_ms_median, r.purge_ms_max,
            r.p99_ms_during_purge, r.inserts_during_purge, r.p99_ms_otherwise, r.inserts - r.inserts_during_purge,
            r.max_ms_during_purge, r.max_ms_otherwise
        );
    }
    if let Some(h) = &f.health {
        let _ = writeln!(
            t,
            "| endpoint_health: {} endpoints, {} counter rows, {} attempts, {} open | **{:.1} ms**, {} buffers: {} | cheap to poll | | |",
            h.endpoints, h.stats_rows, h.attempts, h.open_deliveries, h.execution_ms, h.shared_buffers, h.plan
        );
    }
    if let Some(m) = &f.memory {
        let _ = writeln!(
            t,
            "| backlog of {} events of {} bytes (1 MiB payloads), default worker | {:.0} deliveries/s ({:.0} MiB/s), peak worker RSS **{:.1} MiB** | RSS ≤ 256 MB | | |",
            m.events, m.payload_bytes, m.per_sec, m.mib_per_sec, m.peak_rss_mib
        );
    }
    if let Some(h) = &f.heads {
        let _ = writeln!(
            t,
            "| hostile receivers: {} of {} slots stalled on a {} KiB answer head | peak worker RSS **{:.1} MiB** (at rest {:.1}) | ≤ the stated bound, {:.1} MiB (at rest + {:.0} KiB per slot) | | |",
            h.stalled, h.slots, h.head_bytes_sent / 1024, h.peak_rss_mib, h.rss_at_rest_mib, h.bound_mib, h.per_slot_bound_kib
        );
    }
    if let Some(a) = &f.analysts {
        for q in &a.questions {
            let _ = writeln!(
                t,
                "| analysts ({} attempts, {} deliveries, 30 days): {} | **{:.1} ms**, {} rows: {} | ≤ 50 ms | | |",
                a.attempts, a.deliveries, q.question, q.ms, q.rows, q.plan
            );
        }
    }
    for st in &f.statements {
        let _ = writeln!(
            t,
            "| unnamed vs prepared statement: {} | {:.0} / {:.0} per s: **{:+.1} µs** each | | | |",
            st.statement, st.unnamed_tps, st.prepared_tps, st.extra_us
        );
    }
    if let Some(cmp) = &f.comparison {
        let _ = writeln!(
            t,
            "| drain, this worker / {} | **{:.0}** / {:.0} deliveries/s | | | |",
            cmp.label, cmp.drain_this.per_sec, cmp.drain_other.per_sec
        );
        for (a, b) in cmp.latency_this.iter().zip(&cmp.latency_other) {
            let _ = writeln!(
                t,
                "| latency at {}/s, this worker / {} | p50 **{:.2}** / {:.2} ms, p99 **{:.2}** / {:.2} ms | | | |",
                a.rate_per_sec, cmp.label, a.p50_ms, b.p50_ms, a.p99_ms, b.p99_ms
            );
        }
    }
    if let Some(c) = &f.ceiling {
        let _ = writeln!(
            t,
            "| ceiling: worker HTTP client → nginx, no database | {:.0} requests/s | | 1.00 | |",
            c.http_requests_per_sec
        );
        let _ = writeln!(
            t,
            "| ceiling: batched INSERT (1,000 rows/statement) | {:.0} rows/s | | | |",
            c.insert_rows_per_sec
        );
        let _ = writeln!(
            t,
            "| ceiling: batched UPDATE (1,000 rows/statement) | {:.0} rows/s | | | |",
            c.update_rows_per_sec
        );
        let _ = writeln!(
            t,
            "| ceiling: claim (fan-out included) + record, no HTTP, no worker, 2 connections | {:.0} deliveries/s | | | 1.00 |",
            c.sql_deliveries_per_sec
        );
    }
    t
}

/// A bar chart of the throughput figures and one of the latencies.
pub fn svg(f: &Figures) -> String {
    let mut bars: Vec<(String, f64)> = Vec::new();
    if let Some(d) = &f.drain {
        bars.push(("drain".into(), d.per_sec));
    }
    if let Some(d) = &f.drain2 {
        bars.push(("drain, 2 workers".into(), d.per_sec));
    }
    if let Some(d) = &f.fanout2 {
        bars.push((format!("fan-out ×{}, 2 workers", d.endpoints), d.per_sec));
    }
    if let Some(d) = &f.fanout {
        bars.push((format!("fan-out ×{}", d.endpoints), d.per_sec));
    }
    if let Some(b) = &f.backlog {
        bars.push(("1M backlog".into(), b.per_sec));
    }
    if let Some(c) = &f.ceiling {
        bars.push(("HTTP ceiling".into(), c.http_requests_per_sec));
    }
    let lat: Vec<(String, f64, f64)> = f
        .latency
        .iter()
        .map(|l| (format!("{}/s", l.rate_per_sec), l.p50_ms, l.p99_ms))
        .collect();
    let (w, h) = (820.0, 360.0);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14">pg_webhook {} ({}) — deliveries/s (left), latency ms (right)</text>
"#,
        f.commit, f.date
    );
    let max = bars.iter().map(|b| b.1).fold(1.0, f64::max);
    let (x0, y0, bh) = (20.0, 320.0, 260.0);
    for (i, (label, v)) in bars.iter().enumerate() {
        let x = x0 + i as f64 * 110.0;
        let hgt = bh * v / max;
        let _ = writeln!(
            s,
            r##"<rect x="{x}" y="{}" width="80" height="{hgt}" fill="#4a7fb0"/><text x="{}" y="{}" text-anchor="middle">{v:.0}</text><text x="{}" y="{}" text-anchor="middle">{label}</text>"##,
            y0 - hgt,
            x + 40.0,
            y0 - hgt - 4.0,
            x + 40.0,
            y0 + 16.0
        );
    }
    let lmax = lat.iter().map(|l| l.2).fold(20.0, f64::max);
    for (i, (label, p50, p99)) in lat.iter().enumerate() {
        let x = 500.0 + i as f64 * 150.0;
        for (j, (v, color)) in [(p50, "#6aa84f"), (p99, "#e69138")].iter().enumerate() {
            let hgt = bh * **v / lmax;
            let xx = x + j as f64 * 55.0;
            let _ = writeln!(
                s,
                r#"<rect x="{xx}" y="{}" width="50" height="{hgt}" fill="{color}"/><text x="{}" y="{}" text-anchor="middle">{v:.1}</text>"#,
                y0 - hgt,
                xx + 25.0,
                y0 - hgt - 4.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{label} p50 / p99</text>"#,
            x + 52.0,
            y0 + 16.0
        );
    }
    let goal = y0 - bh * 20.0 / lmax;
    let _ = writeln!(
        s,
        r##"<line x1="495" x2="810" y1="{goal}" y2="{goal}" stroke="#cc0000" stroke-dasharray="4"/><text x="805" y="{}" text-anchor="end" fill="#cc0000">p99 goal 20 ms</text>"##,
        goal - 4.0
    );
    s.push_str("</svg>\n");
    s
}

/// Writes JSON, Markdown and SVG under the output folder and prints the table.
pub fn write(args: &Args, f: &Figures) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let stamp = f.date.replace(':', "");
    let json = serde_json::to_string_pretty(f)?;
    std::fs::write(
        args.out.join(format!("bench-{stamp}-{}.json", f.commit)),
        &json,
    )?;
    std::fs::write(args.out.join("latest.json"), &json)?;
    let md = format!(
        "Machine: {} ({} cores, {} GiB), {}, Linux {}.\nCommit `{}`, {}, median of {} runs: `{}`\n\n{}",
        f.machine.cpu, f.machine.cores, f.machine.memory_gib, f.machine.postgres, f.machine.kernel, f.commit, f.date, f.runs, f.command, table(f)
    );
    std::fs::write(args.out.join("latest.md"), &md)?;
    std::fs::write(args.out.join("latest.svg"), svg(f))?;
    println!("{md}");
    println!(
        "written: {}/latest.json, latest.md, latest.svg",
        args.out.display()
    );
    Ok(())
}
