//! Claiming work: one statement fans out what was committed since the last
//! call and claims and leases a batch of due deliveries, fairly across
//! endpoints (`FOR UPDATE SKIP LOCKED` inside `webhook._claim_deliveries`),
//! in its own short transaction that commits before any request is sent.
//!
//! Must not: hold a transaction open across dispatch.

use crate::claim::{Claim, Target};
use crate::db::error::{bounded, DbError};
use crate::db::isolation::at_read_committed;
use crate::db::queries;
use crate::retry::RetryPolicy;
use pg_webhook_protocol::{envelope, Secret};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

/// Where each column of [`queries::CLAIM`] is, found by name once per
/// claim (not once per row: that would compare strings for every column of
/// every row). CLAIM names every column it selects, so the statement itself
/// fails (before claiming anything) when the function lacks one; a name
/// missing here would be this file disagreeing with CLAIM, which every
/// end-to-end delivery shows.
struct ClaimColumns {
    kind: usize,
    delivery_id: usize,
    lease_token: usize,
    attempt_number: usize,
    event_id: usize,
    message_namespace: usize,
    event_type: usize,
    event_created_at: usize,
    payload: usize,
    endpoint_id: usize,
    url: usize,
    headers: usize,
    timeout_ms: usize,
    secrets: usize,
    max_attempts: usize,
    initial_delay_ms: usize,
    max_delay_ms: usize,
    backoff_multiplier: usize,
    ordered: usize,
}

impl ClaimColumns {
    /// The columns of `row`; an error naming the first one missing.
    fn of(row: &Row) -> Result<Self, DbError> {
        let at = |name: &'static str| {
            row.columns()
                .iter()
                .position(|c| c.name() == name)
                .ok_or(DbError::Unreadable(name))
        };
        Ok(Self {
            kind: at("row_kind")?,
            delivery_id: at("delivery_id")?,
            lease_token: at("lease_token")?,
            attempt_number: at("attempt_number")?,
            event_id: at("event_id")?,
            message_namespace: at("message_namespace")?,
            event_type: at("event_type")?,
            event_created_at: at("event_created_at")?,
            payload: at("payload")?,
            endpoint_id: at("endpoint_id")?,
            url: at("url")?,
            headers: at("headers")?,
            timeout_ms: at("timeout_ms")?,
            secrets: at("secrets")?,
            max_attempts: at("max_attempts")?,
            initial_delay_ms: at("initial_delay_ms")?,
            max_delay_ms: at("max_delay_ms")?,
            backoff_multiplier: at("backoff_multiplier")?,
            ordered: at("ordered")?,
        })
    }

    /// Decodes an 'endpoint' row.
    fn target(&self, row: &Row) -> Target {
        let headers: String = row.get(self.headers);
        let headers = if headers == "{}" {
            Vec::new()
        } else {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&headers)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
                .collect()
        };
        let secrets: Vec<String> = row.get(self.secrets);
        let timeout_ms: i32 = row.get(self.timeout_ms);
        let url: String = row.get(self.url);
        Target {
            endpoint_id: row.get(self.endpoint_id),
            parsed_url: reqwest::Url::parse(&url).ok(),
            url,
            headers,
            timeout: Duration::from_millis(timeout_ms.max(1) as u64),
            secrets: secrets
                .iter()
                .filter_map(|s| Secret::parse(s).ok())
                .collect(),
            policy: RetryPolicy::with_overrides(
                row.get(self.max_attempts),
                row.get(self.initial_delay_ms),
                row.get(self.max_delay_ms),
                row.get(self.backoff_multiplier),
            ),
            ordered: row.get::<_, Option<bool>>(self.ordered).unwrap_or(false),
        }
    }
}

/// Decodes the rows of one [`queries::CLAIM`] call: the 'endpoint' rows
/// (each endpoint's settings, once), then the 'delivery' rows, each joined
/// to its endpoint's settings.
fn claims_from_rows(rows: &[Row]) -> Result<Vec<Claim>, DbError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let col = ClaimColumns::of(first)?;
    let mut targets: HashMap<i64, Arc<Target>> = HashMap::new();
    for row in rows {
        if row.get::<_, &str>(col.kind) == "endpoint" {
            let target = col.target(row);
            targets.insert(target.endpoint_id, Arc::new(target));
        }
    }
    Ok(rows
        .iter()
        .filter(|row| row.get::<_, &str>(col.kind) == "delivery")
        .map(|row| {
            let delivery_id: i64 = row.get(col.delivery_id);
            let endpoint_id: i64 = row.get(col.endpoint_id);
            // The SQL sends a row for each endpoint of the claimed
            // deliveries. Were one missing, the delivery is still
            // attempted and fails on its empty URL, so that the failure
            // is recorded and retried rather than the lease left to lapse.
            let target = targets.get(&endpoint_id).cloned().unwrap_or_else(|| {
                tracing::error!(
                    endpoint_id,
                    delivery_id,
                    "the claim returned no settings for this endpoint"
                );
                Arc::new(Target::new(
                    endpoint_id,
                    "",
                    Duration::from_secs(1),
                    Vec::new(),
                    RetryPolicy::default(),
                ))
            });
            let created: SystemTime = row.get(col.event_created_at);
            let created_us = created
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            let namespace: Option<&str> = row.get(col.message_namespace);
            Claim {
                delivery_id,
                lease_token: row.get(col.lease_token),
                attempt: row.get::<_, i32>(col.attempt_number).max(1) as u32,
                message_id: envelope::message_id(namespace, row.get(col.event_id)),
                event_type: row.get(col.event_type),
                event_time: envelope::timestamp(created_us).unwrap_or_default(),
                event_created_us: created_us,
                payload: row.get(col.payload),
                endpoint_id,
                target,
            }
        })
        .collect())
}

/// Deliveries in flight per endpoint as the two arrays the SQL takes.
fn split_busy(busy: &[(i64, usize)]) -> (Vec<i64>, Vec<i32>) {
    busy.iter()
        .map(|(id, n)| (*id, i32::try_from(*n).unwrap_or(i32::MAX)))
        .unzip()
}

/// What one claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// Recorded in `leased_by`.
    pub worker_id: &'a str,
    /// Most deliveries to claim.
    pub limit: usize,
    /// Added to each endpoint's timeout to make the lease.
    pub lease_margin: Duration,
    /// The worker's slots: each endpoint with work may hold an equal share
    /// of them, at most half (less if its `max_in_flight` says so).
    pub concurrency: usize,
    /// This worker's deliveries in flight, per endpoint id.
    pub busy: &'a [(i64, usize)],
    /// Most events to fan out before claiming.
    pub fanout_events: usize,
    /// Most payload bytes to claim (the first delivery is claimed whatever its size).
    pub max_bytes: usize,
}

/// The claim side's connection.
pub struct Queue {
    client: Client,
    /// Bound on each call (see `--db-timeout-ms`).
    timeout: Duration,
    /// Set when a call ran out of time: the connection is given up.
    given_up: std::sync::atomic::AtomicBool,
}

/// Pairs each parameter with its type, for `query_typed`.
pub(crate) fn typed<'a>(
    params: &'a [&'a (dyn ToSql + Sync)],
    types: &[Type],
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    params.iter().copied().zip(types.iter().cloned()).collect()
}

impl Queue {
    /// The claim side over `client`, each call bounded by `timeout`.
    pub fn new(client: Client, timeout: Duration) -> Self {
        Self {
            client,
            timeout,
            given_up: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Runs a call within the bound; a call that runs out of time gives the
    /// connection up (it may be half-open, or busy with the late statement).
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, DbError> {
        let result = bounded(self.timeout, call).await;
        if matches!(result, Err(DbError::TimedOut(_))) {
            self.given_up
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    /// Fans out, then claims up to `request.limit` due deliveries, each
    /// leased for its endpoint's timeout plus the lease margin.
    pub async fn claim_batch(&self, request: &ClaimRequest<'_>) -> Result<Vec<Claim>, DbError> {
        let limit = i32::try_from(request.limit).unwrap_or(i32::MAX);
        let margin_ms = i64::try_from(request.lease_margin.as_millis()).unwrap_or(i64::MAX);
        let concurrency = i32::try_from(request.concurrency).unwrap_or(i32::MAX);
        let (busy_ids, busy_counts) = split_busy(request.busy);
        let fanout = i32::try_from(request.fanout_events).unwrap_or(i32::MAX);
        let max_bytes = i64::try_from(request.max_bytes).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 8] = [
            &request.worker_id,
            &limit,
            &margin_ms,
            &concurrency,
            &busy_ids,
            &busy_counts,
            &fanout,
            &max_bytes,
        ];
        let rows = self
            .bounded(at_read_committed(
                &self.client,
                self.client
                    .query_typed(queries::CLAIM, &typed(&params, queries::CLAIM_TYPES)),
            ))
            .await?;
        claims_from_rows(&rows)
    }

    /// How long until a delivery this worker may claim is due (given its
    /// deliveries in flight per endpoint); `None` when nothing is pending.
    pub async fn next_due(
        &self,
        concurrency: usize,
        busy: &[(i64, usize)],
    ) -> Result<Option<Duration>, DbError> {
        let concurrency = i32::try_from(concurrency).unwrap_or(i32::MAX);
        let (ids, counts) = split_busy(busy);
        let params: [&(dyn ToSql + Sync); 3] = [&concurrency, &ids, &counts];
        let row = self
            .bounded(
                self.client
                    .query_typed_one(queries::NEXT_DUE, &typed(&params, queries::NEXT_DUE_TYPES)),
            )
            .await?;
        let ms: Option<i64> = row.get(0);
        Ok(ms.map(|ms| Duration::from_millis(ms.max(0) as u64)))
    }

    /// The extension's notify debounce interval (see `Linger` in run/pacing.rs).
    pub async fn notify_min_interval(&self) -> Result<Duration, DbError> {
        let row = self
            .bounded(
                self.client
                    .query_typed_one(queries::NOTIFY_MIN_INTERVAL, &[]),
            )
            .await?;
        let ms: i32 = row.get(0);
        Ok(Duration::from_millis(ms.max(0) as u64))
    }

    /// True when the connection is gone and the queue must be rebuilt.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed() || self.given_up.load(std::sync::atomic::Ordering::Relaxed)
    }
}
