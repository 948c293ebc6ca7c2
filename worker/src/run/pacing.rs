//! When to look at the queue: pacing small claims, lingering after activity
//! (the other half of the extension's debounced NOTIFY), heeding wake-ups,
//! and the idle wait.
//!
//! Must not: claim, send or record anything; it only decides how long to wait.

use crate::config::Config;
use crate::db::queue::Queue;
use crate::metrics::{Check, Metrics, Wakeup};
use crate::run::inflight::InFlight;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Shortest idle sleep: when deliveries are due but another worker holds
/// them in its claim transaction, look again soon but do not spin.
const MIN_IDLE: Duration = Duration::from_millis(5);
/// Shortest time between two claims when the previous one came back small:
/// under a trickle of events (one per transaction, thousands a second), a
/// claim per event would cost a statement and a commit each. Waiting at most
/// this long lets a few gather, for a little latency (measured: p50 +1 ms).
const CLAIM_PACE: Duration = Duration::from_millis(2);
/// How often the queue is looked at while lingering (see [`Linger`]).
const LINGER_POLL: Duration = Duration::from_millis(2);
/// Margin added to the linger window for a skipped commit to become visible
/// (its WAL flush) after its pre-commit step.
const LINGER_SLACK: Duration = Duration::from_millis(100);
/// Shortest pause in heeding wake-ups after one that found nothing.
const WAKE_PAUSE_MIN: Duration = Duration::from_millis(50);

/// Wake-ups are hints, and anyone may send them: PostgreSQL lets any login
/// NOTIFY any channel. A wake-up that makes the worker find nothing (a
/// stray or hostile notification, or one another worker answered first)
/// therefore makes the next ones count for less while the worker is idle
/// (lingering after real work, it looks every few ms anyway, and only real
/// work makes it linger): after such a wake-up, wake-ups are held back for
/// a pause that doubles from [`WAKE_PAUSE_MIN`] with each empty one, up to
/// a cap (twice the poll interval), and the first wake-up that finds work
/// restores them all. Held back, not dropped: the worker looks at the
/// queue once when the pause ends (however many came meanwhile), so a real
/// event notified right after an empty wake-up waits for the pause, not
/// for the poll. A flood of notifications then costs at most one extra
/// look at the queue per pause, and at the cap one per cap.
#[derive(Debug, Default)]
pub(crate) struct WakeGate {
    /// A wake-up was heeded and its claim has not reported yet.
    pending: bool,
    /// The current pause (zero: wake-ups are heeded at once).
    pause: Duration,
    /// Wake-ups are ignored until then.
    closed_until: Option<Instant>,
}

impl WakeGate {
    /// Whether a wake-up arriving now is heeded.
    pub(crate) fn open(&self) -> bool {
        self.closed_until.is_none_or(|t| Instant::now() >= t)
    }

    /// When a wake-up held back now is to be looked into: the pause's end.
    pub(crate) fn opens_at(&self) -> Option<Instant> {
        self.closed_until
    }

    /// A wake-up was heeded: the next claim tells whether it found anything.
    pub(crate) fn heeded(&mut self) {
        self.pending = true;
    }

    /// The claim that followed a heeded wake-up returned `n` deliveries
    /// (claims that did not follow one change nothing).
    pub(crate) fn claimed(&mut self, n: usize, cap: Duration) {
        if !std::mem::take(&mut self.pending) {
            return;
        }
        if n > 0 {
            self.pause = Duration::ZERO;
            self.closed_until = None;
        } else {
            self.pause = (self.pause * 2).clamp(WAKE_PAUSE_MIN, cap.max(WAKE_PAUSE_MIN));
            self.closed_until = Some(Instant::now() + self.pause);
        }
    }
}

/// Remembers when the last claim started and whether it came back small
/// (under half its limit), to space out small claims by [`CLAIM_PACE`].
#[derive(Debug, Default)]
pub(crate) struct Pace {
    last: Option<Instant>,
    small: bool,
}

impl Pace {
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let since = self.last?.elapsed();
        (self.small && since < CLAIM_PACE).then(|| CLAIM_PACE - since)
    }

    pub(crate) fn claimed(&mut self) {
        self.last = Some(Instant::now());
    }

    pub(crate) fn got(&mut self, n: usize, limit: usize) {
        self.small = n * 2 < limit;
    }
}

/// How long to keep looking at the queue after activity. A session that
/// notified less than `pg_webhook.notify_min_interval` ago commits without
/// notifying (see the extension's wake.rs); every such commit happens within
/// that interval of a notification the worker received, or of events it
/// found. So after each wake-up or non-empty claim, the worker polls the
/// queue every [`LINGER_POLL`] for twice the interval plus [`LINGER_SLACK`]
/// before it sleeps until the next NOTIFY.
#[derive(Debug)]
pub(crate) struct Linger {
    window: Duration,
    until: Instant,
}

impl Linger {
    pub(crate) fn new(notify_min_interval: Duration) -> Self {
        let window = if notify_min_interval.is_zero() {
            Duration::ZERO // every commit notifies: nothing to catch
        } else {
            notify_min_interval * 2 + LINGER_SLACK
        };
        Self {
            window,
            until: Instant::now(),
        }
    }

    pub(crate) fn extend(&mut self) {
        self.until = Instant::now() + self.window;
    }

    pub(crate) fn active(&self) -> bool {
        Instant::now() < self.until
    }
}

/// The last claim came back short: sleep until a delivery this worker may
/// claim is due (a retry, an expired lease; "may" as in an endpoint's share
/// of the slots), a NOTIFY (heeded as [`WakeGate`] says, unless lingering;
/// one held back brings the wait's end forward to the gate's opening), the
/// poll interval, or cancellation; while lingering, look at the queue
/// every [`LINGER_POLL`] instead. A wake-up does not start lingering: the
/// claim it leads to does, if it finds something. With
/// deliveries in flight, also return once `min_claim` of them (or all) have
/// finished: they give endpoints back their share. Counted from here and
/// not as free slots: a short claim means every endpoint with work was at
/// its share, which free slots do not show (an endpoint alone may hold only
/// half of them), and claiming after each finished delivery would make a
/// claim statement per delivery.
#[allow(clippy::too_many_arguments)] // the loop's state, lent for the wait
pub(crate) async fn idle(
    queue: &Queue,
    config: &Config,
    wake: &Notify,
    gate: &mut WakeGate,
    metrics: &Metrics,
    cancel: &CancellationToken,
    linger: &mut Linger,
    in_flight: &mut InFlight,
    min_claim: usize,
) {
    let want = min_claim.min(in_flight.len());
    let mut finished = 0;
    loop {
        metrics.checked(Check::NextDue);
        let due = match queue
            .next_due(config.concurrency, &in_flight.per_endpoint())
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, cause = ?e.cause(), "could not read the next due time");
                None
            }
        };
        let lingering = linger.active();
        let busy = !in_flight.is_empty();
        let sleep_for = match due {
            Some(due) if lingering && due.is_zero() => return, // new work: claim it
            Some(due) if lingering => due.min(LINGER_POLL),
            Some(due) => due.clamp(MIN_IDLE, config.poll_interval),
            None if lingering => LINGER_POLL,
            None => config.poll_interval,
        };
        let sleep = tokio::time::sleep(sleep_for);
        tokio::pin!(sleep);
        let mut held_back = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = wake.notified() => {
                    // Lingering (after real work) the worker looks every
                    // LINGER_POLL anyway: a wake-up only brings that look
                    // forward, and a stranger's notifications cannot make
                    // the worker linger. Idle, the gate decides.
                    if lingering {
                        return;
                    }
                    if gate.open() {
                        metrics.woken(Wakeup::Heeded);
                        gate.heeded();
                        return;
                    }
                    metrics.woken(Wakeup::Deferred);
                    if let Some(at) = gate.opens_at().map(tokio::time::Instant::from_std) {
                        if at < sleep.deadline() {
                            sleep.as_mut().reset(at);
                        }
                    }
                    held_back = true;
                    continue;
                }
                Some(()) = in_flight.next(), if busy => {
                    finished += 1;
                    if finished >= want {
                        return;
                    }
                    continue;
                }
                _ = &mut sleep => {}
            }
            break;
        }
        if held_back {
            // The look it was held back for: it counts as a heeded one.
            gate.heeded();
        }
        if !lingering {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linger_covers_twice_the_notify_interval() {
        let mut l = Linger::new(Duration::from_millis(50));
        assert_eq!(l.window, Duration::from_millis(200));
        assert!(!l.active());
        l.extend();
        assert!(l.active());
        let mut never = Linger::new(Duration::ZERO);
        never.extend();
        assert!(
            !never.active(),
            "every commit notifies: nothing to linger for"
        );
    }

    #[test]
    fn wake_ups_that_find_nothing_are_heeded_less_and_less() {
        let cap = Duration::from_secs(2);
        let mut g = WakeGate::default();
        assert!(g.open());
        g.claimed(0, cap);
        assert!(g.open(), "a claim no wake-up led to changes nothing");
        let mut pauses = Vec::new();
        for _ in 0..8 {
            g.heeded();
            g.claimed(0, cap);
            assert!(!g.open());
            pauses.push(g.pause);
        }
        assert_eq!(pauses[0], WAKE_PAUSE_MIN);
        assert_eq!(pauses[1], WAKE_PAUSE_MIN * 2);
        assert_eq!(*pauses.last().unwrap(), cap, "doubling up to the cap");
        g.heeded();
        g.claimed(3, cap);
        assert!(g.open(), "one that finds work restores them");
        assert_eq!(g.pause, Duration::ZERO);
    }

    #[test]
    fn only_small_claims_are_paced() {
        let mut p = Pace::default();
        assert_eq!(p.remaining(), None);
        p.claimed();
        p.got(100, 100);
        assert_eq!(p.remaining(), None, "a full claim is followed at once");
        p.claimed();
        p.got(3, 100);
        let wait = p.remaining().expect("a small claim is paced");
        assert!(wait <= CLAIM_PACE);
    }
}
