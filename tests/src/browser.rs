//! Headless Chromium, for the status page.

use std::time::Duration;

/// Runs headless Chromium (Debian's `chromium`, or `CHROMIUM`) with `args`
/// and returns what it printed; fails the test if it fails. Flags as for a
/// closed network: no background traffic, no sandbox (we may be root).
pub async fn chromium(args: &[&str]) -> String {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = std::env::temp_dir().join(format!(
        "pgwh-chromium-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let run = tokio::process::Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("{bin} did not finish within a minute"))
        .unwrap_or_else(|e| panic!("cannot run {bin} (install Debian's chromium): {e}"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
