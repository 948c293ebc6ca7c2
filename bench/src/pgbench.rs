//! Running pgbench for a fixed time on a script and reading its TPS: what
//! the capture and statement-cost scenarios both measure with.

use crate::Args;

/// Transactions per second of `clients` pgbench clients (`-j` up to 2, the
/// machine's cores) running `script` for `--pgbench-secs` in protocol
/// `mode` (`prepared`, `extended`, …). The script is written to a file
/// named after `name` in the temporary directory.
pub fn tps(
    args: &Args,
    dsn: &str,
    mode: &str,
    clients: u32,
    name: &str,
    script: &str,
) -> anyhow::Result<f64> {
    let path = std::env::temp_dir().join(format!("pg_webhook_bench_{name}.sql"));
    std::fs::write(&path, script)?;
    let out = std::process::Command::new(&args.pgbench)
        .args(["-n", "-M", mode])
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
        ])
        .args(["-T", &args.pgbench_secs.to_string()])
        .args(["-f", path.to_str().unwrap_or_default()])
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
