//! The report: a table on stdout, and under the output folder the figures as
//! JSON, the same table as Markdown (pasted into BENCHMARKS.md) and an SVG plot.

use crate::capture::CaptureRow;
use crate::ceiling::Ceiling;
use crate::drain::{Backlog, Throughput};
use crate::latency::LatencyRow;
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
    pub fanout: Option<Throughput>,
    pub capture: Vec<CaptureRow>,
    pub latency: Vec<LatencyRow>,
    pub backlog: Option<Backlog>,
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
                postgres: sh("/usr/lib/postgresql/15/bin/postgres --version"),
            },
            ceiling: None,
            drain: None,
            fanout: None,
            capture: Vec::new(),
            latency: Vec::new(),
            backlog: None,
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
    let upd = f.ceiling.as_ref().map(|c| c.update_rows_per_sec);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| figure | value | goal | of HTTP ceiling | of UPDATE ceiling |"
    );
    let _ = writeln!(t, "|---|---|---|---|---|");
    if let Some(d) = &f.drain {
        let _ = writeln!(
            t,
            "| drain, {} events × 1 endpoint | **{:.0} deliveries/s** | ≥ 10,000 | {} | {} |",
            d.events,
            d.per_sec,
            frac(d.per_sec, http),
            frac(d.per_sec, upd)
        );
    }
    if let Some(d) = &f.fanout {
        let _ =
            writeln!(
            t,
            "| fan-out, {} events × {} endpoints | **{:.0} deliveries/s** | ≥ 20,000 | {} | {} |",
            d.events, d.endpoints, d.per_sec, frac(d.per_sec, http), frac(d.per_sec, upd)
        );
    }
    for c in &f.capture {
        let floor = c
            .outbox_floor_tps
            .map(|x| format!("; hand-written outbox statement: {:.2}", x / c.plain_tps))
            .unwrap_or_default();
        let _ = writeln!(
            t,
            "| capture, {} clients, worker {} | **{:.2}** of plain INSERT ({:.0} / {:.0} TPS{floor}) | ≥ 0.80 | | |",
            c.clients,
            if c.worker_running { "running" } else { "stopped" },
            c.ratio,
            c.watched_tps,
            c.plain_tps
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
            "| backlog of {} deliveries | **{:.0} deliveries/s**, peak worker RSS **{:.1} MiB** | RSS ≤ 100 MB | {} | {} |",
            b.deliveries, b.per_sec, b.peak_rss_mib, frac(b.per_sec, http), frac(b.per_sec, upd)
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
            "| ceiling: batched UPDATE (1,000 rows/statement) | {:.0} rows/s | | | 1.00 |",
            c.update_rows_per_sec
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
