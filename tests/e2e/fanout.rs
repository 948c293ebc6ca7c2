//! The fan-out, run by the worker long after the writes: who gets what is
//! decided by what was committed while each endpoint was subscribed, whole
//! transactions at a time, once.

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};
use std::collections::BTreeSet;

/// The `n` of every event a receiver got.
fn ns(receiver: &Receiver) -> BTreeSet<i64> {
    receiver
        .requests()
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().expect("an n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_added_and_removed_while_the_worker_is_stopped() {
    let db = TestDb::new().await;
    let (a, b, c, p) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let client = db.client().await;
    let publish =
        |n: i64| format!("select webhook_publish('order.noted', jsonb_build_object('n', {n}));");
    // No worker runs while the endpoints change: every delivery is created
    // afterwards, by the fan-out.
    let (ea, _) = db.subscribe(&client, &a.url("/"), &["order.*"], None).await;
    let (eb, _) = db.subscribe(&client, &b.url("/"), &["*"], None).await;
    let (ep, _) = db.subscribe(&client, &p.url("/"), &["*"], None).await;
    client
        .batch_execute(&format!("select webhook_pause({ep});"))
        .await
        .unwrap();
    client.batch_execute(&publish(1)).await.unwrap();
    let (_ec, _) = db.subscribe(&client, &c.url("/"), &["*"], None).await;
    client.batch_execute(&publish(2)).await.unwrap();
    client
        .batch_execute(&format!("select webhook_unsubscribe({eb});"))
        .await
        .unwrap();
    client.batch_execute(&publish(3)).await.unwrap();
    client
        .batch_execute(&format!(
            "select webhook_update({ea}, event_types => '{{invoice.*}}');"
        ))
        .await
        .unwrap();
    client.batch_execute(&publish(4)).await.unwrap();
    // In one transaction: a publish, then a subscription. Changes apply to
    // their own transaction's events, so the new endpoint gets this one.
    let late = Receiver::start().await;
    client
        .batch_execute(&format!(
            "begin; {} select webhook_subscribe('{}'); commit;",
            publish(5),
            late.url("/")
        ))
        .await
        .unwrap();
    let deliveries: i64 = client
        .query_one("select count(*) from webhook.deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deliveries, 0, "nothing is fanned out before a worker runs");

    let mut worker = RunningWorker::start(db.worker_config());
    // a: 1, 2, 3 (then its filter changed); b: 1, 2 (then removed);
    // c: 2, 3, 4, 5; late: 5; p (paused): 1–5 wait.
    db.wait_deliveries(&client, "succeeded", 3 + 2 + 4 + 1, &mut worker.events)
        .await;
    db.wait_deliveries(&client, "paused", 5, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;
    assert_eq!(ns(&a), BTreeSet::from([1, 2, 3]));
    assert_eq!(
        ns(&b),
        BTreeSet::from([1, 2]),
        "a removed endpoint gets what was committed while it was subscribed"
    );
    assert_eq!(ns(&c), BTreeSet::from([2, 3, 4, 5]));
    assert_eq!(ns(&late), BTreeSet::from([5]));
    assert!(
        p.requests().is_empty(),
        "a paused endpoint receives nothing yet"
    );
    // The removed endpoint's secret was kept for those late deliveries; now
    // that nothing is left for it, the maintenance drops it.
    let report: String = client
        .query_one("select webhook._maintenance()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert!(report.contains("\"secrets_dropped\": 1"), "{report}");
    let kept: i64 = client
        .query_one(
            &format!("select count(*) from webhook.endpoint_secrets where endpoint_id = {eb}"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 0);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_committing_transaction_is_not_skipped() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    let mut worker = RunningWorker::start(db.worker_config());
    // A transaction that started first and commits last: its event has the
    // smallest transaction id, and the fan-out has moved past later ones.
    let slow = db.client().await;
    slow.batch_execute("begin; select webhook_publish('slow.one', '{\"n\": 1}');")
        .await
        .unwrap();
    client
        .batch_execute("select webhook_publish('fast.one', '{\"n\": 2}')")
        .await
        .unwrap();
    receiver.wait_for(1).await;
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;
    slow.batch_execute("commit").await.unwrap();
    receiver.wait_for(2).await;
    worker.stop().await;
    assert_eq!(ns(&receiver), BTreeSet::from([1, 2]));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_inside_a_writing_transaction_leaves_that_transaction_whole() {
    // A transaction that writes events, then fans out (as a script calling
    // the worker's functions could) after a later transaction committed:
    // PostgreSQL's snapshots leave a backend's own transaction out of their
    // running list, so it looked committed, and what it wrote after the
    // fan-out was never fanned out.
    let db = TestDb::new().await;
    let client = db.client().await;
    db.subscribe(&client, "https://example.com/", &["*"], None)
        .await;
    let fan_out = "select webhook._claim_deliveries('t', 0, '1 minute', 1, '{}', '{}', 1000, 0)";
    let writer = db.client().await;
    writer
        .batch_execute("begin; select webhook_publish('own.first', '{}');")
        .await
        .unwrap();
    client
        .batch_execute("select webhook_publish('later.committed', '{}')")
        .await
        .unwrap();
    writer.batch_execute(fan_out).await.unwrap();
    writer
        .batch_execute("select webhook_publish('own.second', '{}'); commit;")
        .await
        .unwrap();
    client.batch_execute(fan_out).await.unwrap();
    let fanned: Vec<String> = pg_webhook_tests::column(
        &client,
        "select e.event_type from webhook.events e join webhook.deliveries d on d.event_id = e.id order by e.event_type",
        &[],
    )
    .await;
    assert_eq!(fanned, ["later.committed", "own.first", "own.second"]);
    db.assert_invariants(&client).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_fanned_out_whole_and_once() {
    let db = TestDb::new().await;
    let client = db.client().await;
    for i in 0..3 {
        client
            .batch_execute(&format!(
                "select webhook_subscribe('https://e{i}.example.com/')"
            ))
            .await
            .unwrap();
    }
    client
        .batch_execute(
            "begin; select webhook_publish('big.tx', jsonb_build_object('i', i)) from generate_series(1, 50) i; commit;
             begin; select webhook_publish('next.tx', jsonb_build_object('i', i)) from generate_series(1, 5) i; commit;",
        )
        .await
        .unwrap();
    let deliveries = || async {
        client
            .query_one("select count(*) from webhook.deliveries", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // Fan out at most 10 events per call: the first call still takes the
    // whole first transaction, the second the next one.
    let fan_out = "select webhook._claim_deliveries('t', 0, '1 minute', 1, '{}', '{}', 10, 0)";
    client.batch_execute(fan_out).await.unwrap();
    assert_eq!(deliveries().await, 50 * 3);
    client.batch_execute(fan_out).await.unwrap();
    assert_eq!(deliveries().await, 55 * 3);
    client.batch_execute(fan_out).await.unwrap();
    assert_eq!(deliveries().await, 55 * 3, "nothing twice");
    let doubles: i64 = client
        .query_one(
            "select count(*) from (select 1 from webhook.deliveries group by event_id, endpoint_id having count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(doubles, 0);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_fanning_out_concurrently_create_each_delivery_once() {
    const TX: i64 = 200;
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/one"), &["*"], None)
        .await;
    db.subscribe(&client, &receiver.url("/two"), &["*"], None)
        .await;
    let config = |id: &str| {
        let mut c = db.worker_config();
        c.batch_size = 5;
        c.fanout_batch = 3;
        c.worker_id = id.into();
        c
    };
    let mut a = RunningWorker::start(config("fan-a"));
    let b = RunningWorker::start(config("fan-b"));
    // Many small transactions while both workers fan out.
    for i in 0..TX {
        client
            .batch_execute(&format!(
                "select webhook_publish('many.tx', jsonb_build_object('n', {i}))"
            ))
            .await
            .unwrap();
    }
    db.wait_deliveries(&client, "succeeded", 2 * TX, &mut a.events)
        .await;
    a.stop().await;
    b.stop().await;
    let doubles: i64 = client
        .query_one(
            "select count(*) from (select 1 from webhook.deliveries group by event_id, endpoint_id having count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(doubles, 0, "an event fanned out twice");
    assert_eq!(receiver.requests().len() as i64, 2 * TX);
    db.finish().await;
}
