//! A database's pg_webhook contents, compared before and after it moves.

/// What a database holds of pg_webhook, to compare before and after it
/// moves (a dump restored, a PostgreSQL upgrade).
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    /// Endpoints: id, URL as readers see it, secret.
    pub endpoints: Vec<(i64, String, String)>,
    /// Endpoints with a previous secret (a rotation in its grace).
    pub secrets: i64,
    /// Subscription periods.
    pub subscriptions: i64,
    /// Every event's webhook-id, by event id.
    pub message_ids: Vec<String>,
    /// The last event id.
    pub max_event_id: i64,
    /// Every delivery: id and status.
    pub deliveries: Vec<(i64, String)>,
    /// Attempts logged.
    pub attempts: i64,
    /// Open deliveries plus events not fanned out yet.
    pub pending_or_unfanned: i64,
    /// The event idempotency key 'key-1' names.
    pub key_1_event: i64,
}

/// Reads it (the idempotency key 'key-1' must exist).
pub async fn snapshot(c: &tokio_postgres::Client) -> Snapshot {
    let one =
        |sql: &'static str| async move { c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) };
    Snapshot {
        endpoints: c
            .query("select e.id, e.url, s.secret from webhook.endpoints e join webhook.endpoint_secrets s on s.endpoint_id = e.id order by 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect(),
        secrets: one("select count(*) from webhook.endpoint_secrets where previous_secret is not null").await,
        subscriptions: one("select count(*) from webhook.subscriptions").await,
        message_ids: c
            .query("select webhook._message_id(txid, id, id_namespace) from webhook.events order by id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect(),
        max_event_id: one("select max(id) from webhook.events").await,
        deliveries: c
            .query("select id, status::text from webhook.deliveries order by id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
        attempts: one("select count(*) from webhook.attempts").await,
        pending_or_unfanned: one(
            "select (select count(*) from webhook.deliveries_open)
                  + (select count(*) from webhook.events e
                     where not exists (select from webhook.deliveries d where d.event_id = e.id))",
        )
        .await,
        key_1_event: one("select event_id from webhook.idempotency_keys where idempotency_key = 'key-1'").await,
    }
}
