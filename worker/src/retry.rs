//! Retry policy: when to try a failed delivery again, and when to give up.
//!
//! Pure: the attempt number, the verdict on the attempt and the jitter are all
//! inputs, so the schedule is testable without a clock or a global RNG.
//!
//! Must not: do I/O or read the clock.

use std::time::Duration;

/// Default number of attempts, the first one included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 11;
/// Default delay before the first retry.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(5);
/// Default ceiling on one delay.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(6 * 3600);
/// Default growth factor between delays.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 4.0;
/// Jitter spreads each delay uniformly over ±20 %, so that deliveries which
/// failed together (an endpoint outage) do not all come back together.
pub const JITTER_SPREAD: f64 = 0.2;

/// How one endpoint is retried. The defaults give delays of 5 s, 20 s, 80 s,
/// 5 min 20 s, 21 min, 1 h 25 min, then 5 h 41 min and 6 h thrice: the last
/// attempt comes about 25 hours after the first, like Svix and Stripe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included (≥ 1).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Ceiling on any one delay (also caps `Retry-After`).
    pub max_delay: Duration,
    /// Factor between consecutive delays (≥ 1).
    pub backoff_multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_delay: DEFAULT_INITIAL_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            backoff_multiplier: DEFAULT_BACKOFF_MULTIPLIER,
        }
    }
}

impl RetryPolicy {
    /// The default with an endpoint's overrides applied (each `None` keeps the
    /// default). Values were validated by SQL at subscription; out-of-range
    /// values are clamped rather than trusted.
    pub fn with_overrides(
        max_attempts: Option<i32>,
        initial_delay_ms: Option<i64>,
        max_delay_ms: Option<i64>,
        backoff_multiplier: Option<f64>,
    ) -> Self {
        let d = Self::default();
        let ms = |v: i64| Duration::from_millis(v.max(0) as u64);
        let initial_delay = initial_delay_ms.map(ms).unwrap_or(d.initial_delay);
        // An initial delay above the default ceiling lifts the ceiling with it.
        let max_delay = max_delay_ms
            .map(ms)
            .unwrap_or(d.max_delay.max(initial_delay));
        Self {
            max_attempts: max_attempts.map_or(d.max_attempts, |n| n.clamp(1, 1000) as u32),
            initial_delay,
            max_delay,
            backoff_multiplier: backoff_multiplier
                .filter(|m| m.is_finite())
                .map_or(d.backoff_multiplier, |m| m.clamp(1.0, 100.0)),
        }
    }

    /// The delay after attempt number `attempt` (1-based) failed, before
    /// jitter: `initial × multiplier^(attempt-1)`, capped at `max_delay`.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(1000) as i32;
        let secs = self.initial_delay.as_secs_f64() * self.backoff_multiplier.powi(exp);
        let capped = secs.min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64(capped.max(0.0))
    }
}

/// What an attempt's result means for the retry policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// 2xx: done.
    Delivered,
    /// A failure worth retrying; `retry_after` from the response if any.
    Retryable {
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// A failure that retrying cannot fix (410 Gone, a refused destination).
    Permanent,
}

/// The decision recorded with an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The delivery succeeded.
    Succeeded,
    /// Try again after this long.
    RetryIn(Duration),
    /// Stop: the delivery ends `failed`.
    GiveUp,
}

/// Decides what follows attempt number `attempt` (1-based). `jitter` is a
/// uniform random number in [0, 1), injected by the caller.
pub fn decide(policy: &RetryPolicy, attempt: u32, verdict: Verdict, jitter: f64) -> Decision {
    match verdict {
        Verdict::Delivered => Decision::Succeeded,
        Verdict::Permanent => Decision::GiveUp,
        Verdict::Retryable { .. } if attempt >= policy.max_attempts => Decision::GiveUp,
        Verdict::Retryable { retry_after } => {
            let factor = 1.0 - JITTER_SPREAD + 2.0 * JITTER_SPREAD * jitter.clamp(0.0, 1.0);
            let mut delay = policy.base_delay(attempt).mul_f64(factor);
            // Retry-After is honoured as a floor, but never beyond the
            // endpoint's own ceiling: a receiver cannot park a delivery for days.
            if let Some(asked) = retry_after {
                delay = delay.max(asked.min(policy.max_delay));
            }
            Decision::RetryIn(delay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Verdict = Verdict::Retryable { retry_after: None };

    #[test]
    fn follows_schedule_then_gives_up() {
        let p = RetryPolicy::default();
        let delays: Vec<Duration> = (1..p.max_attempts)
            .map(|n| match decide(&p, n, RETRY, 0.5) {
                Decision::RetryIn(d) => d,
                other => panic!("attempt {n}: expected a retry, got {other:?}"),
            })
            .collect();
        assert_eq!(delays[0], Duration::from_secs(5));
        assert_eq!(delays[1], Duration::from_secs(20));
        assert_eq!(delays[2], Duration::from_secs(80));
        assert_eq!(*delays.last().unwrap(), Duration::from_secs(6 * 3600));
        let total: Duration = delays.iter().sum();
        assert!(
            (20 * 3600..30 * 3600).contains(&total.as_secs()),
            "default schedule spans about a day, got {total:?}"
        );
        assert_eq!(decide(&p, p.max_attempts, RETRY, 0.5), Decision::GiveUp);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let p = RetryPolicy::default();
        let at = |j| match decide(&p, 2, RETRY, j) {
            Decision::RetryIn(d) => d.as_secs_f64(),
            other => panic!("{other:?}"),
        };
        assert!((at(0.0) - 16.0).abs() < 1e-9);
        assert!((at(0.999_999) - 24.0).abs() < 1e-3);
        assert!(
            (at(5.0) - 24.0).abs() < 1e-9,
            "out-of-range jitter is clamped"
        );
    }

    #[test]
    fn retry_after_is_a_floor_clamped_to_max_delay() {
        let p = RetryPolicy::with_overrides(Some(5), Some(1000), Some(60_000), Some(2.0));
        let after = |secs| Verdict::Retryable {
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            decide(&p, 1, after(30), 0.5),
            Decision::RetryIn(Duration::from_secs(30))
        );
        assert_eq!(
            decide(&p, 1, after(86_400), 0.5),
            Decision::RetryIn(Duration::from_secs(60))
        );
        assert_eq!(
            decide(&p, 1, after(0), 0.5),
            Decision::RetryIn(Duration::from_secs(1))
        );
    }

    #[test]
    fn success_and_permanent_failures_end_at_once() {
        let p = RetryPolicy::default();
        assert_eq!(decide(&p, 1, Verdict::Delivered, 0.5), Decision::Succeeded);
        assert_eq!(decide(&p, 1, Verdict::Permanent, 0.5), Decision::GiveUp);
    }

    #[test]
    fn overrides_replace_defaults() {
        let p = RetryPolicy::with_overrides(Some(3), Some(100), None, None);
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.initial_delay, Duration::from_millis(100));
        assert_eq!(p.max_delay, DEFAULT_MAX_DELAY);
        assert_eq!(p.base_delay(2), Duration::from_millis(400));
        let big = RetryPolicy::with_overrides(None, Some(10 * 3600 * 1000), None, None);
        assert_eq!(big.max_delay, Duration::from_secs(10 * 3600));
        assert_eq!(decide(&p, 3, RETRY, 0.5), Decision::GiveUp);
    }
}
