//! The real worker binary as a child process, with its memory sampled.

use std::path::Path;
use std::time::Duration;
use tokio::process::{Child, Command};

pub struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    pub fn start(bin: &Path, dsn: &str) -> anyhow::Result<Self> {
        Self::start_with(bin, dsn, &[])
    }

    /// Starts it with extra environment variables (maintenance off and the
    /// like); defaults otherwise.
    pub fn start_with(bin: &Path, dsn: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let child = Command::new(bin)
            .env("DATABASE_URL", dsn)
            .env("PG_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child })
    }

    /// (current RSS, peak RSS) in MiB, from /proc.
    pub fn rss_mib(&self) -> Option<(f64, f64)> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM, and a kill if it has not exited within `grace` (what it
    /// still had in flight does not matter to the caller).
    pub async fn stop_within(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }

    /// CPU time it has used so far (user and system), from /proc.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces, so split
        // after its closing parenthesis): utime and stime are the 12th and
        // 13th, in clock ticks of 1/100 s on Linux.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
        Some((ticks(11)? + ticks(12)?) / 100.0)
    }

    /// SIGTERM, then wait (the worker drains and exits).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => anyhow::ensure!(status?.success(), "worker exited with failure"),
            Err(_) => {
                self.child.start_kill()?;
                anyhow::bail!("worker did not stop within 30 s of SIGTERM");
            }
        }
        Ok(())
    }
}
