//! The plain data that crosses the worker's layers: a claimed delivery with
//! its endpoint's settings (the database layer decodes it, the HTTP layer
//! sends it) and the record of one attempt (the orchestration builds it,
//! the database layer writes it). No behaviour beyond small helpers, so that
//! neither side depends on the other.

use crate::retry::RetryPolicy;
use crate::text::cut_at_char_boundary;
use pg_webhook_protocol::Secret;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// An endpoint's sending settings as the claim read them, shared by all of
/// its deliveries in the batch.
#[derive(Debug)]
pub struct Target {
    /// `webhook.endpoints.id`.
    pub endpoint_id: i64,
    /// Where to POST, as stored.
    pub url: String,
    /// The same, parsed once for the whole batch (`None` if it does not
    /// parse: each delivery then records the failure).
    pub parsed_url: Option<reqwest::Url>,
    /// Extra headers of the endpoint.
    pub headers: Vec<(String, String)>,
    /// Request timeout of the endpoint.
    pub timeout: Duration,
    /// Current secret first, then the previous one during a rotation. Empty
    /// only if a stored secret failed to parse (reported as a failed attempt).
    pub secrets: Vec<Secret>,
    /// The endpoint's retry policy, defaults filled in.
    pub policy: RetryPolicy,
    /// Whether the endpoint is ordered: the next event of a key waits for
    /// each outcome, so it is recorded without waiting for company.
    pub ordered: bool,
}

impl Target {
    /// The settings for `url` with no extra headers, the given timeout,
    /// secrets and policy (for callers that send without a claim, such as
    /// the benchmark's HTTP ceiling).
    pub fn new(
        endpoint_id: i64,
        url: &str,
        timeout: Duration,
        secrets: Vec<Secret>,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            endpoint_id,
            url: url.to_owned(),
            parsed_url: reqwest::Url::parse(url).ok(),
            headers: Vec::new(),
            timeout,
            secrets,
            policy,
            ordered: false,
        }
    }
}

/// One leased delivery, with everything needed to send it.
#[derive(Debug, Clone)]
pub struct Claim {
    /// `webhook.deliveries.id`.
    pub delivery_id: i64,
    /// Proof of the lease, checked when the attempt is recorded.
    pub lease_token: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The event's message id, sent as `webhook-id` (`msg_…`).
    pub message_id: String,
    /// The body's `type`.
    pub event_type: String,
    /// The body's `timestamp` (RFC 3339, UTC).
    pub event_time: String,
    /// When the event was written, in µs since the Unix epoch (for the
    /// event-to-delivery latency metric).
    pub event_created_us: i64,
    /// The body's `data`, JSON text as stored.
    pub payload: String,
    /// `webhook.endpoints.id`.
    pub endpoint_id: i64,
    /// Its endpoint's settings.
    pub target: Arc<Target>,
}

/// One finished attempt and the decision taken on it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// the delivery
    pub delivery_id: i64,
    /// the lease it was sent under
    pub lease_token: i64,
    /// the delivery's endpoint
    pub endpoint_id: i64,
    /// 1-based attempt number
    pub attempt: i32,
    /// when the request started
    pub started_at: SystemTime,
    /// how long it took, in ms
    pub duration_ms: f64,
    /// the HTTP status, if any
    pub status_code: Option<i32>,
    /// bounded response excerpt
    pub excerpt: Option<String>,
    /// what went wrong, if anything
    pub error: Option<String>,
    /// 'succeeded', 'retry' or 'failed'
    pub outcome: &'static str,
    /// for 'retry': delay before the next attempt, in ms
    pub retry_delay_ms: Option<i64>,
    /// of an ordered endpoint (see [`Target::ordered`])
    pub ordered: bool,
}

/// The most bytes of free text (error, excerpt) kept by [`AttemptRecord::cut_short`].
const CUT_SHORT_BYTES: usize = 200;

impl AttemptRecord {
    /// The same record with its free texts (response excerpt, error) cut
    /// to a few hundred bytes: what is tried once more when the database
    /// refused the record as it was.
    pub fn cut_short(&self) -> Self {
        let cut = |t: &Option<String>| {
            t.as_deref()
                .map(|t| cut_at_char_boundary(t, CUT_SHORT_BYTES).to_owned())
        };
        Self {
            excerpt: None,
            error: cut(&self.error),
            ..self.clone()
        }
    }

    /// True when the free texts are already within the cut-short bound.
    pub fn is_cut_short(&self) -> bool {
        self.excerpt.is_none()
            && self
                .error
                .as_ref()
                .is_none_or(|e| e.len() <= CUT_SHORT_BYTES)
    }
}
