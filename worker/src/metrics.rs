//! The worker's Prometheus metrics (prometheus-client), updated where things
//! happen and served at `/metrics` by serve/server.rs. Labels are bounded: an
//! endpoint is its id, never its URL (which may carry tokens).
//!
//! Must not: do I/O; it only counts.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// How a delivery attempt ended, for the worker's policy.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: done.
    Succeeded,
    /// To be tried again later.
    Retry,
    /// Given up (retries exhausted, 410, refused destination).
    Failed,
}

/// The class of an HTTP answer; `none` when no answer came.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx
    Success,
    /// 3xx (not followed: a failure)
    Redirect,
    /// 4xx
    ClientError,
    /// 5xx
    ServerError,
    /// no answer (timeout, connection refused, refused destination)
    NoResponse,
}

impl StatusClass {
    /// The class of `status`.
    pub fn of(status: Option<u16>) -> Self {
        match status {
            Some(200..=299) => Self::Success,
            Some(300..=399) => Self::Redirect,
            Some(400..=499) => Self::ClientError,
            Some(_) => Self::ServerError,
            None => Self::NoResponse,
        }
    }
}

/// One of the worker's database connections.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Connection {
    /// claims (and fan-out)
    Claim,
    /// attempt records
    Record,
    /// LISTEN
    Listen,
    /// periodic maintenance
    Maintenance,
    /// the status page, readiness and metrics server
    Status,
}

/// Label values as Prometheus spells them (lower case).
macro_rules! label_values {
    ($($type:ty { $($variant:ident => $text:literal),+ $(,)? })+) => {$(
        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                encoder.write_str(match self { $(Self::$variant => $text),+ })
            }
        }
    )+};
}

label_values! {
    Outcome { Succeeded => "succeeded", Retry => "retry", Failed => "failed" }
    StatusClass {
        Success => "2xx", Redirect => "3xx", ClientError => "4xx", ServerError => "5xx", NoResponse => "none",
    }
    Connection {
        Claim => "claim", Record => "record", Listen => "listen", Maintenance => "maintenance", Status => "status",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    endpoint: i64,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    endpoint: i64,
    status_class: StatusClass,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    connection: Connection,
}

/// What the worker asked the queue.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Check {
    /// a claim (with its fan-out)
    Claim,
    /// when the next delivery is due
    NextDue,
}

/// What became of a wake-up notification.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Wakeup {
    /// the worker looked at the queue
    Heeded,
    /// held back until the pause after wake-ups that found nothing ends,
    /// then looked into once for all (see run/pacing.rs)
    Deferred,
}

label_values! {
    Check { Claim => "claim", NextDue => "next_due" }
    Wakeup { Heeded => "heeded", Deferred => "deferred" }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    kind: Check,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WakeupLabels {
    outcome: Wakeup,
}

/// Every metric, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    delivery_latency: Histogram,
    request_duration: Histogram,
    in_flight: Gauge,
    claimed: Counter,
    claim_duration: Histogram,
    record_duration: Histogram,
    queue_lag: Gauge<f64, AtomicU64>,
    reconnects: Family<ConnectionLabels, Counter>,
    maintenance_runs: Counter,
    events_purged: Counter,
    queue_checks: Family<CheckLabels, Counter>,
    wakeups: Family<WakeupLabels, Counter>,
}

/// Seconds, from 1 ms to about 65 s, doubling.
fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pg_webhook");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Delivery attempts by endpoint and what the worker decided: succeeded, retry, failed",
            deliveries.clone(),
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "attempts",
            "HTTP attempts by endpoint and status class (none: no answer)",
            attempts.clone(),
        );
        let delivery_latency = Histogram::new(seconds_buckets());
        registry.register(
            "delivery_latency_seconds",
            "From the event's transaction to the 2xx that delivered it",
            delivery_latency.clone(),
        );
        let request_duration = Histogram::new(seconds_buckets());
        registry.register(
            "request_duration_seconds",
            "Duration of HTTP attempts",
            request_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("in_flight", "Deliveries being sent now", in_flight.clone());
        let claimed = Counter::default();
        registry.register("claimed", "Deliveries claimed", claimed.clone());
        let claim_duration = Histogram::new(seconds_buckets());
        registry.register(
            "claim_duration_seconds",
            "Duration of a claim statement (fan-out included)",
            claim_duration.clone(),
        );
        let record_duration = Histogram::new(seconds_buckets());
        registry.register(
            "record_duration_seconds",
            "Duration of a batch of attempt records",
            record_duration.clone(),
        );
        let queue_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "queue_lag_seconds",
            "Age of the oldest event or delivery that is due and not being sent (read at each scrape)",
            queue_lag.clone(),
        );
        let reconnects = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "database_reconnects",
            "Database connections re-established after a failure",
            reconnects.clone(),
        );
        let maintenance_runs = Counter::default();
        registry.register(
            "maintenance_runs",
            "Maintenance runs done by this worker",
            maintenance_runs.clone(),
        );
        let events_purged = Counter::default();
        registry.register(
            "events_purged",
            "Events removed by this worker's maintenance",
            events_purged.clone(),
        );
        let queue_checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "queue_checks",
            "Statements that look at the queue: claims (fan-out included) and next-due reads",
            queue_checks.clone(),
        );
        let wakeups = Family::<WakeupLabels, Counter>::default();
        registry.register(
            "wakeups",
            "Wake-up notifications, heeded or ignored (after wake-ups that found nothing)",
            wakeups.clone(),
        );
        Self {
            registry,
            deliveries,
            attempts,
            delivery_latency,
            request_duration,
            in_flight,
            claimed,
            claim_duration,
            record_duration,
            queue_lag,
            reconnects,
            maintenance_runs,
            events_purged,
            queue_checks,
            wakeups,
        }
    }
}

impl Metrics {
    /// One attempt of a delivery to `endpoint` ended.
    pub fn attempt(
        &self,
        endpoint: i64,
        status: Option<u16>,
        duration: Duration,
        outcome: Outcome,
        since_event: Option<Duration>,
    ) {
        self.attempts
            .get_or_create(&AttemptLabels {
                endpoint,
                status_class: StatusClass::of(status),
            })
            .inc();
        self.deliveries
            .get_or_create(&DeliveryLabels { endpoint, outcome })
            .inc();
        self.request_duration.observe(duration.as_secs_f64());
        if let (Outcome::Succeeded, Some(latency)) = (outcome, since_event) {
            self.delivery_latency.observe(latency.as_secs_f64());
        }
    }

    /// A claim took `duration` and returned `n` deliveries.
    pub fn claim(&self, duration: Duration, n: usize) {
        self.claim_duration.observe(duration.as_secs_f64());
        self.claimed.inc_by(n as u64);
    }

    /// The worker looked at the queue.
    pub fn checked(&self, kind: Check) {
        self.queue_checks.get_or_create(&CheckLabels { kind }).inc();
    }

    /// How many times the worker looked at the queue, all kinds together.
    pub fn queue_checks(&self) -> u64 {
        [Check::Claim, Check::NextDue]
            .into_iter()
            .map(|kind| self.queue_checks.get_or_create(&CheckLabels { kind }).get())
            .sum()
    }

    /// A wake-up notification arrived and was heeded or ignored.
    pub fn woken(&self, outcome: Wakeup) {
        self.wakeups.get_or_create(&WakeupLabels { outcome }).inc();
    }

    /// Wake-up notifications with this outcome so far.
    pub fn wakeups(&self, outcome: Wakeup) -> u64 {
        self.wakeups.get_or_create(&WakeupLabels { outcome }).get()
    }

    /// A batch of records took `duration`.
    pub fn record(&self, duration: Duration) {
        self.record_duration.observe(duration.as_secs_f64());
    }

    /// Deliveries in flight now.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A connection came back after a failure.
    pub fn reconnected(&self, connection: Connection) {
        self.reconnects
            .get_or_create(&ConnectionLabels { connection })
            .inc();
    }

    /// A maintenance run removed `events_purged` events.
    pub fn maintenance(&self, events_purged: u64) {
        self.maintenance_runs.inc();
        self.events_purged.inc_by(events_purged);
    }

    /// The queue's lag, as just read from the database.
    pub fn set_queue_lag(&self, seconds: f64) {
        self.queue_lag.set(seconds);
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_endpoint_ids_and_classes() {
        let m = Metrics::default();
        m.attempt(
            7,
            Some(503),
            Duration::from_millis(20),
            Outcome::Retry,
            None,
        );
        m.attempt(
            7,
            Some(200),
            Duration::from_millis(5),
            Outcome::Succeeded,
            Some(Duration::from_millis(30)),
        );
        m.reconnected(Connection::Listen);
        let text = m.encode();
        assert!(
            text.contains(r#"pg_webhook_attempts_total{endpoint="7",status_class="5xx"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"pg_webhook_deliveries_total{endpoint="7",outcome="succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("pg_webhook_delivery_latency_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(r#"pg_webhook_database_reconnects_total{connection="listen"} 1"#),
            "{text}"
        );
    }
}
