//! The machine's CPU time from /proc/stat: what the drain and capture
//! scenarios divide by their deliveries or transactions.

/// Busy and total CPU time of the machine so far, in seconds (all cores
/// together), from the first line of /proc/stat (clock ticks of 1/100 s).
pub fn machine() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait
    // are the idle ones; guest time is already counted in user.
    let idle = ticks.get(3)? + ticks.get(4)?;
    let total: f64 = ticks.iter().take(8).sum();
    Some(((total - idle) / 100.0, total / 100.0))
}

/// Busy CPU seconds between two readings of [`machine`], and the busy
/// share of all cores over that time; `None` if either reading failed.
pub fn busy_between(before: Option<(f64, f64)>, after: Option<(f64, f64)>) -> Option<(f64, f64)> {
    match (before, after) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => Some((b1 - b0, (b1 - b0) / (t1 - t0))),
        _ => None,
    }
}
