//! One endpoint that stops answering cannot starve the others.

use pg_webhook_tests::{Blackhole, Receiver, RunningWorker, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_endpoint_holds_only_its_share_of_the_slots() {
    const N: i64 = 60;
    let db = TestDb::new().await;
    let healthy = Receiver::start().await;
    let blackhole = Blackhole::start().await;
    let client = db.client().await;
    let (good, _) = db.subscribe(&client, &healthy.url("/"), &["*"], None).await;
    // It accepts connections and never answers: every request hangs until
    // the endpoint's timeout, which is longer than the test's waits.
    let bad: i64 = client
        .query_one(
            "select endpoint_id from webhook_subscribe($1, timeout => '60 seconds')",
            &[&blackhole.url("/")],
        )
        .await
        .unwrap()
        .get(0);
    // Both endpoints get every event. An oldest-first claim with one pool of
    // slots would soon hand every slot to the blackholed endpoint: its
    // deliveries never finish, so they stay the oldest due.
    client
        .batch_execute(&format!(
            "select webhook_publish('first.wave', jsonb_build_object('i', i)) from generate_series(1, {N}) i;
             select webhook_publish('second.wave', jsonb_build_object('i', i)) from generate_series(1, {N}) i;"
        ))
        .await
        .unwrap();
    let mut config = db.worker_config();
    config.concurrency = 16;
    config.batch_size = 16;
    config.drain_timeout = std::time::Duration::ZERO; // the blackholed requests are abandoned at the end
    let mut worker = RunningWorker::start(config);

    // All of the healthy endpoint's deliveries go through while the
    // blackholed ones are stuck in flight (none has timed out yet): while
    // both have work, each may hold 8 of the 16 slots. (Once the healthy one
    // is done, the other still may not hold more than half of them.)
    let got = healthy.wait_for(2 * N as usize).await;
    assert_eq!(got.len() as i64, 2 * N);
    db.wait_for(
        &client,
        &format!("select count(*) = {} from webhook.deliveries where endpoint_id = {good} and status = 'succeeded'", 2 * N),
        Some(&mut worker.events),
    )
    .await;
    let (bad_attempts, bad_in_flight): (i64, i64) = {
        let row = client
            .query_one(
                &format!(
                    "select (select count(*) from webhook.attempts a join webhook.deliveries d on d.id = a.delivery_id where d.endpoint_id = {bad}),
                            (select count(*) from webhook.deliveries_open where endpoint_id = {bad} and lease_token is not null)"
                ),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(
        bad_attempts, 0,
        "the healthy endpoint was served while every blackholed request still hung (none has timed out)"
    );
    assert!(
        (1..=8).contains(&bad_in_flight),
        "the blackholed endpoint was being tried all along, with at most half of the slots: {bad_in_flight} in flight"
    );
    assert!(blackhole.connections() >= 1);
    worker.stop().await;
    db.finish().await;
}
