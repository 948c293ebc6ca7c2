//! The worker's memory is bounded by payload bytes, not by rows.

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_bytes_in_flight_stay_within_the_budget_plus_one() {
    const N: i64 = 12;
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    // Slow answers keep what was claimed in flight for a while.
    receiver.set_delay(Duration::from_millis(400));
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    client
        .batch_execute(&format!(
            "select webhook_publish('big.item', jsonb_build_object('i', i, 'pad', repeat('x', 3000))) \
             from generate_series(1, {N}) i"
        ))
        .await
        .unwrap();
    let size: i32 = client
        .query_one("select max(payload_bytes) from webhook.events", &[])
        .await
        .unwrap()
        .get(0);
    assert!((3000..3100).contains(&size), "{size}");

    // Room for two payloads and a half: two fit, a third is claimed alone
    // into the half left, then nothing until one ends. With 16 slots and
    // no budget all twelve would be in flight at once.
    let mut config = db.worker_config();
    config.concurrency = 16;
    config.batch_size = 16;
    config.max_in_flight_bytes = (5 * size / 2) as usize;
    let mut worker = RunningWorker::start(config);
    db.wait_deliveries(&client, "succeeded", N, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;

    // The most attempts that were ever in flight at once, from the log.
    let most_at_once: i64 = client
        .query_one(
            "select max((select count(*) from webhook.attempts b
                         where b.started_at <= a.started_at
                           and b.started_at + b.duration_ms * interval '1 millisecond' > a.started_at))
             from webhook.attempts a",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        most_at_once, 3,
        "budget of 2.5 payloads: 2 that fit and one claimed alone into the rest"
    );
    assert_eq!(receiver.requests().len() as i64, N);
    db.finish().await;
}
