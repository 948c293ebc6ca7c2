//! Failures: retried with the endpoint's policy, every attempt logged.

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};
use tokio_postgres::Client;

const FAST: &str =
    r#"{"max_attempts": 3, "initial_delay": "50 milliseconds", "max_delay": "200 milliseconds"}"#;

/// Publishes one `job.done` event to a receiver that answers `statuses`
/// (then 200), under the FAST policy, and runs a worker until the delivery
/// ends `final_status`; checks the invariants after the worker stopped.
async fn deliver_one(
    statuses: &[u16],
    data: &str,
    final_status: &str,
) -> (TestDb, Client, Receiver) {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    receiver.script(statuses);
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/hook"), &["*"], Some(FAST))
        .await;
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .execute(
            "select webhook_publish('job.done', $1::text::jsonb)",
            &[&data],
        )
        .await
        .unwrap();
    db.wait_deliveries(&client, final_status, 1, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;
    (db, client, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_500_then_succeeds() {
    let (db, client, receiver) = deliver_one(&[500, 500], r#"{"id": 7}"#, "succeeded").await;

    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "same webhook-id on every retry: {ids:?}"
    );
    let bodies: Vec<_> = got.iter().map(|r| r.body.clone()).collect();
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "same body on every retry"
    );

    let rows = client
        .query("select attempt_number, status_code, error from webhook.attempts order by attempt_number", &[])
        .await
        .unwrap();
    let codes: Vec<(i32, Option<i32>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(codes, [(1, Some(500)), (2, Some(500)), (3, Some(200))]);
    assert_eq!(
        rows[0].get::<_, Option<String>>(2).as_deref(),
        Some("HTTP 500")
    );
    let count: i32 = client
        .query_one("select attempt_count from webhook.deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_when_receiver_is_down() {
    let db = TestDb::new().await;
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = db.client().await;
    db.subscribe(
        &client,
        &format!("http://127.0.0.1:{port}/down"),
        &["*"],
        Some(FAST),
    )
    .await;
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute("select webhook_publish('job.done', '{}')")
        .await
        .unwrap();

    db.wait_deliveries(&client, "failed", 1, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;

    let rows = client
        .query("select attempt_number, status_code, error from webhook.attempts order by attempt_number", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "max_attempts = 3, each one logged");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, i32>(0), i as i32 + 1);
        assert_eq!(row.get::<_, Option<i32>>(1), None);
        let error: String = row.get(2);
        assert!(error.contains("connection failed"), "{error}");
    }
    let row = client
        .query_one("select attempt_count, finalized_at is not null, lease_token is null from webhook.deliveries", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 3);
    assert!(row.get::<_, bool>(1) && row.get::<_, bool>(2));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_410_is_final() {
    let (db, _client, receiver) = deliver_one(&[410], "{}", "failed").await;
    assert_eq!(receiver.requests().len(), 1, "410 Gone is not retried");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let (db, client, _receiver) = deliver_one(&[302, 302, 302], "{}", "failed").await;
    let codes: Vec<Option<i32>> = pg_webhook_tests::column(
        &client,
        "select status_code from webhook.attempts order by attempt_number",
        &[],
    )
    .await;
    assert_eq!(
        codes,
        [Some(302), Some(302), Some(302)],
        "a 3xx is a failed attempt"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receiver_times_out_and_excerpt_is_bounded() {
    let db = TestDb::new().await;
    let slow = Receiver::start().await;
    slow.set_delay(std::time::Duration::from_secs(3));
    let chatty = Receiver::start().await;
    let client = db.client().await;
    client
        .query_one(
            "select endpoint_id from webhook_subscribe($1, array['slow.*'], retry_policy => '{\"max_attempts\": 1}', timeout => '300 milliseconds')",
            &[&slow.url("/slow")],
        )
        .await
        .unwrap();
    db.subscribe(&client, &chatty.url("/chatty"), &["chatty.*"], None)
        .await;
    let mut config = db.worker_config();
    config.response_excerpt_bytes = 5;
    let mut worker = RunningWorker::start(config);
    client
        .batch_execute(
            "select webhook_publish('slow.one', '{}'); select webhook_publish('chatty.one', '{}');",
        )
        .await
        .unwrap();
    db.wait_for(
        &client,
        "select count(*) = 2 from webhook.deliveries where status in ('failed', 'succeeded')",
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;
    db.assert_invariants(&client).await;
    let rows = client
        .query(
            "select ev.event_type, d.status::text, a.status_code, a.error, a.response_excerpt, a.duration_ms
             from webhook.attempts a join webhook.deliveries d on d.id = a.delivery_id
             join webhook.events ev on ev.id = d.event_id order by ev.event_type",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let (chatty_row, slow_row) = (&rows[0], &rows[1]);
    assert_eq!(chatty_row.get::<_, String>(1), "succeeded");
    assert_eq!(
        chatty_row.get::<_, Option<String>>(4).as_deref(),
        Some("recei"),
        "excerpt bounded to 5 bytes"
    );
    assert_eq!(slow_row.get::<_, String>(1), "failed");
    assert_eq!(slow_row.get::<_, Option<i32>>(2), None);
    let error: String = slow_row.get(3);
    assert!(error.contains("timed out"), "{error}");
    let ms: f64 = slow_row.get(5);
    assert!(
        (250.0..2500.0).contains(&ms),
        "the attempt ended near the 300 ms timeout, not the 3 s answer: {ms}"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_whose_every_attempt_died_in_flight_ends_failed_unsent() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    client
        .query_one(
            r#"select endpoint_id from webhook_subscribe($1, timeout => '1 second', retry_policy => '{"max_attempts": 2}')"#,
            &[&receiver.url("/")],
        )
        .await
        .unwrap();
    client
        .batch_execute("select webhook_publish('job.doomed', '{}')")
        .await
        .unwrap();
    // Two workers that die while sending: each claims the delivery (its
    // lease already over: margin = -timeout) and never records anything.
    for _ in 0..2 {
        let claimed: i64 = client
            .query_one(
                "select count(*) from webhook._claim_deliveries('dies', 10, '-1 second', 256, '{}', '{}', 1000, 1048576) \
                 where delivery_id is not null",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(claimed, 1);
    }
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_deliveries(&client, "failed", 1, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;
    assert!(
        receiver.requests().is_empty(),
        "the third attempt is beyond the policy: not sent"
    );
    let row = client
        .query_one(
            "select d.attempt_count, d.last_error, (select count(*) from webhook.attempts) from webhook.deliveries d",
            &[],
        )
        .await
        .unwrap();
    let (count, error, logged): (i32, String, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(count, 3, "each claim counted an attempt");
    assert!(error.starts_with("not sent: attempt 3"), "{error}");
    assert_eq!(logged, 1, "only the worker that gave up recorded anything");
    db.finish().await;
}
