//! Running pgbench for a fixed time on a script and reading its TPS and
//! transactions: what the capture and statement-cost scenarios measure with.

use crate::Args;

/// What one pgbench run did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// transactions per second (pgbench's own figure, connection time excluded)
    pub tps: f64,
    /// transactions committed
    pub transactions: f64,
}

/// `clients` pgbench clients (`-j` up to 2, the machine's cores) running
/// `script` for `--pgbench-secs` in protocol `mode` (`prepared`,
/// `extended`, …). The script is written to a file named after `name` in
/// the temporary directory.
pub fn run(
    args: &Args,
    dsn: &str,
    mode: &str,
    clients: u32,
    name: &str,
    script: &str,
) -> anyhow::Result<Outcome> {
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
    // "tps = 14603.236113 (without initial connection time)" and
    // "number of transactions actually processed: 175008"
    let figure = |prefix: &str, nth: usize| -> anyhow::Result<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(nth))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no '{prefix}' in pgbench output: {text}"))
    };
    Ok(Outcome {
        tps: figure("tps = ", 2)?,
        transactions: figure("number of transactions actually processed:", 5)?,
    })
}
