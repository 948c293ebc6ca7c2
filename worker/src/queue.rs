//! Claiming work: one statement claims and leases a batch of due deliveries
//! (`FOR UPDATE SKIP LOCKED` inside `webhook._claim_deliveries`), in its own
//! short transaction that commits before any request is sent.
//!
//! Must not: hold a transaction open across dispatch.

use crate::error::DbError;
use crate::queries;
use crate::retry::RetryPolicy;
use pg_webhook_protocol::Secret;
use std::time::Duration;
use tokio_postgres::{Client, Row, Statement};

/// One leased delivery, with everything needed to send it.
#[derive(Debug, Clone)]
pub struct Claim {
    /// `webhook.deliveries.id`.
    pub delivery_id: i64,
    /// Proof of the lease, checked when the attempt is recorded.
    pub lease_token: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `webhook.events.id`, sent as `webhook-id`.
    pub event_id: i64,
    /// The body's `type`.
    pub event_type: String,
    /// The body's `timestamp` (RFC 3339, UTC).
    pub event_time: String,
    /// The body's `data`, JSON text as stored.
    pub payload: String,
    /// `webhook.endpoints.id`.
    pub endpoint_id: i64,
    /// Where to POST.
    pub url: String,
    /// Extra headers of the endpoint.
    pub headers: Vec<(String, String)>,
    /// Request timeout of the endpoint.
    pub timeout: Duration,
    /// Current secret first, then the previous one during a rotation. Empty
    /// only if a stored secret failed to parse (reported as a failed attempt).
    pub secrets: Vec<Secret>,
    /// The endpoint's retry policy, defaults filled in.
    pub policy: RetryPolicy,
}

impl Claim {
    /// Decodes a row of [`queries::CLAIM`], by position (the columns are
    /// listed in this order there; looking them up by name would compare
    /// strings for every column of every row).
    fn from_row(row: &Row) -> Self {
        let headers: String = row.get(9);
        let headers = if headers == "{}" {
            Vec::new()
        } else {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&headers)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                .collect()
        };
        let secrets: Vec<String> = row.get(11);
        let timeout_ms: i32 = row.get(10);
        Self {
            delivery_id: row.get(0),
            lease_token: row.get(1),
            attempt: row.get::<_, i32>(2).max(1) as u32,
            event_id: row.get(3),
            event_type: row.get(4),
            event_time: row.get(5),
            payload: row.get(6),
            endpoint_id: row.get(7),
            url: row.get(8),
            headers,
            timeout: Duration::from_millis(timeout_ms.max(1) as u64),
            secrets: secrets
                .iter()
                .filter_map(|s| Secret::parse(s).ok())
                .collect(),
            policy: RetryPolicy::with_overrides(row.get(12), row.get(13), row.get(14), row.get(15)),
        }
    }
}

/// The claim side's connection and prepared statements.
pub struct Queue {
    client: Client,
    claim: Statement,
    next_due: Statement,
}

impl Queue {
    /// Prepares the statements on `client`.
    pub async fn new(client: Client) -> Result<Self, DbError> {
        let claim = client.prepare(queries::CLAIM).await?;
        let next_due = client.prepare(queries::NEXT_DUE).await?;
        Ok(Self {
            client,
            claim,
            next_due,
        })
    }

    /// Claims up to `limit` due deliveries, each leased for its endpoint's
    /// timeout plus `lease_margin`.
    pub async fn claim_batch(
        &self,
        worker_id: &str,
        limit: usize,
        lease_margin: Duration,
    ) -> Result<Vec<Claim>, DbError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let margin_ms = i64::try_from(lease_margin.as_millis()).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(&self.claim, &[&worker_id, &limit, &margin_ms])
            .await?;
        Ok(rows.iter().map(Claim::from_row).collect())
    }

    /// How long until the next pending delivery is due; `None` when nothing
    /// is pending.
    pub async fn next_due(&self) -> Result<Option<Duration>, DbError> {
        let row = self.client.query_one(&self.next_due, &[]).await?;
        let ms: Option<i64> = row.get(0);
        Ok(ms.map(|ms| Duration::from_millis(ms.max(0) as u64)))
    }

    /// The extension's notify debounce interval (see `linger` in run.rs).
    pub async fn notify_min_interval(&self) -> Result<Duration, DbError> {
        let row = self
            .client
            .query_one(queries::NOTIFY_MIN_INTERVAL, &[])
            .await?;
        let ms: i32 = row.get(0);
        Ok(Duration::from_millis(ms.max(0) as u64))
    }

    /// True when the connection is gone and the queue must be rebuilt.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}
