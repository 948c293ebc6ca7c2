//! What arrives, when, and signed how.

use pg_webhook_protocol::{verify, Secret};
use pg_webhook_tests::{Receiver, RunningWorker, TestDb};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_signed_webhook_after_commit() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    let (_endpoint, secret) = db
        .subscribe(&client, &receiver.url("/hooks"), &["order.*"], None)
        .await;
    client
        .batch_execute(
            "create table orders (id int primary key, item text, qty int);
             select webhook_watch('orders', event_prefix => 'order');",
        )
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());

    client
        .batch_execute("begin; insert into orders values (1, 'book', 2); commit;")
        .await
        .unwrap();
    let got = receiver.wait_for(1).await;
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;

    let req = &got[0];
    assert_eq!(req.header("content-type"), Some("application/json"));
    let event_id: i64 = client
        .query_one("select id from webhook.events", &[])
        .await
        .unwrap()
        .get(0);
    let msg_id = req.header("webhook-id").expect("webhook-id header");
    assert_eq!(msg_id, db.message_id(&client, event_id).await);
    assert!(
        msg_id.starts_with("msg_") && msg_id.len() == 36,
        "a namespaced message id, not a counter: {msg_id}"
    );
    let ts: i64 = req
        .header("webhook-timestamp")
        .expect("webhook-timestamp")
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts).abs() < 60, "timestamp {ts} is not now ({now})");
    let signature = req.header("webhook-signature").expect("webhook-signature");
    assert!(signature.starts_with("v1,"));
    let secret = Secret::parse(&secret).unwrap();
    assert!(
        verify(&secret, msg_id, ts, req.body.as_bytes(), signature),
        "signature must verify"
    );

    let body = req.json();
    assert_eq!(body["type"], "order.created");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(body["data"]["table"], "orders");
    assert_eq!(body["data"]["op"], "INSERT");
    assert_eq!(body["data"]["new"]["item"], "book");
    assert_eq!(body["data"]["new"]["qty"], 2);
    assert!(body["data"]["old"].is_null());

    let row = client
        .query_one("select status_code, attempt_number, error is null, response_excerpt from webhook.attempts", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), Some(200));
    assert_eq!(row.get::<_, i32>(1), 1);
    assert!(row.get::<_, bool>(2));
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("receiver says hi")
    );

    // Updates and deletes carry old and new rows.
    client
        .batch_execute("update orders set qty = 3 where id = 1; delete from orders where id = 1;")
        .await
        .unwrap();
    let got = receiver.wait_for(3).await;
    let bodies: Vec<_> = got.iter().map(|r| r.json()).collect();
    let update = bodies
        .iter()
        .find(|b| b["type"] == "order.updated")
        .expect("an update event");
    assert_eq!(update["data"]["old"]["qty"], 2);
    assert_eq!(update["data"]["new"]["qty"], 3);
    let delete = bodies
        .iter()
        .find(|b| b["type"] == "order.deleted")
        .expect("a delete event");
    assert!(delete["data"]["new"].is_null());
    assert_eq!(delete["data"]["old"]["id"], 1);

    worker.stop().await;
    db.assert_invariants(&client).await;
    assert_eq!(
        receiver.requests().len(),
        3,
        "each event is delivered exactly once when all goes well"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_delivery_after_rollback() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    client
        .batch_execute("create table items (id int); select webhook_watch('items');")
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());

    client
        .batch_execute(
            "begin; insert into items values (1); select webhook_publish('rolled.back', '{}'); rollback;
             begin; savepoint s; insert into items values (2); rollback to savepoint s; insert into items values (3); commit;",
        )
        .await
        .unwrap();
    // The committed row 3 is the marker: once it has been recorded, anything
    // from the rolled-back work would have been claimed too.
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;

    let got = receiver.requests();
    assert_eq!(got.len(), 1, "only the committed row is delivered: {got:?}");
    assert_eq!(got[0].json()["data"]["new"]["id"], 3);
    let events: i64 = client
        .query_one("select count(*) from webhook.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1, "rolled-back work leaves no event behind");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_get_only_matching_event_types() {
    let db = TestDb::new().await;
    let orders = Receiver::start().await;
    let everything = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &orders.url("/orders"), &["order.*"], None)
        .await;
    db.subscribe(&client, &everything.url("/all"), &["*"], None)
        .await;
    let mut worker = RunningWorker::start(db.worker_config());

    client
        .batch_execute(
            "select webhook_publish('order.created', '{\"n\": 1}');
             select webhook_publish('invoice.paid', '{\"n\": 2}');
             select webhook_publish('order.shipped.late', '{\"n\": 3}');
             select webhook_publish('orders.created', '{\"n\": 4}');",
        )
        .await
        .unwrap();
    db.wait_deliveries(&client, "succeeded", 6, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;

    let types = |r: &Receiver| {
        let mut t: Vec<String> = r
            .requests()
            .iter()
            .map(|q| q.json()["type"].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    };
    assert_eq!(types(&orders), ["order.created", "order.shipped.late"]);
    assert_eq!(
        types(&everything),
        [
            "invoice.paid",
            "order.created",
            "order.shipped.late",
            "orders.created"
        ]
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_with_idempotency_key_is_one_event() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let a = db.client().await;
    let b = db.client().await;
    db.subscribe(&a, &receiver.url("/"), &["*"], None).await;

    let first: i64 = a
        .query_one(
            "select webhook_publish('payment.done', '{\"v\": 1}', 'key-1')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let again: i64 = a
        .query_one(
            "select webhook_publish('payment.done', '{\"v\": 2}', 'key-1')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(first, again);

    // Two sessions racing on one new key: the second waits for the first's
    // commit and then returns the same id.
    a.batch_execute("begin").await.unwrap();
    let in_a: i64 = a
        .query_one("select webhook_publish('payment.done', '{}', 'key-2')", &[])
        .await
        .unwrap()
        .get(0);
    let racing = tokio::spawn(async move {
        let id: i64 = b
            .query_one("select webhook_publish('payment.done', '{}', 'key-2')", &[])
            .await
            .unwrap()
            .get(0);
        id
    });
    a.batch_execute("commit").await.unwrap();
    assert_eq!(racing.await.unwrap(), in_a);

    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_deliveries(&a, "succeeded", 2, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&a).await;
    let events: i64 = a
        .query_one("select count(*) from webhook.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 2);
    assert_eq!(receiver.requests().len(), 2);
    db.finish().await;
}

/// A database with a receiver subscribed to everything and a worker whose
/// poll is an hour, once it listens: only a NOTIFY can wake it before then.
async fn listening_with_an_hourly_poll() -> (TestDb, Receiver, tokio_postgres::Client, RunningWorker)
{
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    let mut config = db.worker_config();
    config.poll_interval = Duration::from_secs(3600);
    let mut worker = RunningWorker::start(config);
    while worker.events.recv().await != Some(pg_webhook_worker::WorkerEvent::Listening) {}
    (db, receiver, client, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_the_worker_without_polling() {
    let (db, receiver, client, worker) = listening_with_an_hourly_poll().await;
    client
        .batch_execute("select webhook_publish('ping.now', '{}')")
        .await
        .unwrap();
    pg_webhook_tests::within("delivery woken by NOTIFY", receiver.wait_for(1)).await;
    worker.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_is_only_a_hint_poll_still_delivers() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    let mut worker = RunningWorker::start(db.worker_config());
    while worker.events.recv().await != Some(pg_webhook_worker::WorkerEvent::Listening) {}
    // Enqueue behind the extension's back: no NOTIFY is sent at all.
    client
        .batch_execute(
            "insert into webhook.events (slot, txid, event_type, payload, payload_bytes)
             values (webhook._current_slot(), webhook._vxid(), 'silent.one', '{}', 2)",
        )
        .await
        .unwrap();
    receiver.wait_for(1).await;
    worker.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_refuses_private_destinations_unless_allowed() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    let mut config = db.worker_config();
    config.allow_private_targets = false;
    let mut worker = RunningWorker::start(config);
    client
        .batch_execute("select webhook_publish('internal.probe', '{}')")
        .await
        .unwrap();
    db.wait_deliveries(&client, "failed", 1, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;
    let error: String = client
        .query_one("select error from webhook.attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("loopback"), "{error}");
    assert!(
        receiver.requests().is_empty(),
        "nothing may reach a loopback receiver"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_commit_wakes_the_worker_at_commit_prepared() {
    // NOTIFY is not allowed in a prepared transaction: with the extension,
    // the session that prepared it sends the wake-up when it runs COMMIT
    // PREPARED (as Citus does on each node). The SQL flavor notifies as it
    // enqueues: a session that prepares transactions turns that off, and
    // the worker's poll finds the events.
    let sql_flavor = pg_webhook_tests::flavor() == pg_webhook_tests::Flavor::Sql;
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    client
        .batch_execute("create table t2pc (id int); select webhook_watch('t2pc');")
        .await
        .unwrap();
    if sql_flavor {
        client
            .batch_execute("set webhook.notify = off")
            .await
            .unwrap();
    }
    // No worker yet: nothing else notifies.
    let mut wake = pg_webhook_tests::Listener::start(&db.dsn, "pg_webhook_wake").await;
    let gid = format!("pgwh-{}", db.name);
    client
        .batch_execute(&format!(
            "begin; insert into t2pc values (1); prepare transaction '{gid}';"
        ))
        .await
        .unwrap();
    let pending: i64 = client
        .query_one("select count(*) from webhook.deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0, "nothing is visible before COMMIT PREPARED");
    client
        .batch_execute(&format!("commit prepared '{gid}'"))
        .await
        .unwrap();
    // The wake-up itself (a worker would also find the event at its poll).
    if !sql_flavor {
        wake.next().await;
    }
    let mut worker = RunningWorker::start(db.worker_config());
    receiver.wait_for(1).await;
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;
    // A prepared transaction rolled back leaves no event (and is forgotten).
    client
        .batch_execute(&format!(
            "begin; insert into t2pc values (2); prepare transaction '{gid}';"
        ))
        .await
        .unwrap();
    client
        .batch_execute(&format!("rollback prepared '{gid}'"))
        .await
        .unwrap();
    worker.stop().await;
    let events: i64 = client
        .query_one("select count(*) from webhook.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1, "nothing of the rolled-back prepared transaction");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_over_https_with_http2_and_checks_certificates() {
    let ca = pg_webhook_tests::TestCa::new();
    let db = TestDb::new().await;
    let receiver = Receiver::start_tls(&ca).await;
    let client = db.client().await;
    let (_, secret) = db
        .subscribe(
            &client,
            &receiver.https_url("/tls"),
            &["*"],
            Some(r#"{"max_attempts": 1}"#),
        )
        .await;

    // Without the test CA, the certificate is refused: one failed attempt.
    let mut untrusting = RunningWorker::start(db.worker_config());
    client
        .batch_execute("select webhook_publish('tls.first', '{}')")
        .await
        .unwrap();
    db.wait_deliveries(&client, "failed", 1, &mut untrusting.events)
        .await;
    untrusting.stop().await;
    let error: String = client
        .query_one("select error from webhook.attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        error.contains("connection failed") && error.to_lowercase().contains("certificate"),
        "{error}"
    );
    assert!(receiver.requests().is_empty());

    // Trusting it (what --ca-file does): delivered, over HTTP/2 (ALPN).
    let mut config = db.worker_config();
    config.extra_roots = pg_webhook_worker::config::Roots(ca.roots());
    let mut worker = RunningWorker::start(config);
    client
        .batch_execute("select webhook_publish('tls.second', '{\"x\": 1}')")
        .await
        .unwrap();
    let got = receiver.wait_for(1).await;
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;
    let req = &got[0];
    assert_eq!(req.version, axum::http::Version::HTTP_2);
    let ts: i64 = req.header("webhook-timestamp").unwrap().parse().unwrap();
    let secret = Secret::parse(&secret).unwrap();
    assert!(verify(
        &secret,
        req.header("webhook-id").unwrap(),
        ts,
        req.body.as_bytes(),
        req.header("webhook-signature").unwrap()
    ));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wake_ups_from_any_login_is_not_a_lever() {
    // PostgreSQL lets any login NOTIFY any channel. A flood of empty
    // wake-ups must leave the worker looking at the queue about as often as
    // when idle (at most twice as often), and real events still arrive.
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let root = db.client().await;
    db.subscribe(&root, &receiver.url("/"), &["*"], None).await;
    let (_, stranger) = db.login(&root, "nobody", &[]).await;
    let mut config = db.worker_config();
    config.poll_interval = Duration::from_millis(250);
    let mut worker = RunningWorker::start(config);
    while worker.events.recv().await != Some(pg_webhook_worker::WorkerEvent::Listening) {}
    let window = Duration::from_secs(3);
    // The rate of queue checks is what is measured: over a fixed window.
    let checks_during = |metrics: std::sync::Arc<pg_webhook_worker::metrics::Metrics>| async move {
        let before = metrics.queue_checks();
        tokio::time::sleep(window).await;
        metrics.queue_checks() - before
    };
    let idle = checks_during(worker.metrics.clone()).await;

    let flooding = pg_webhook_worker::CancellationToken::new();
    let flood = {
        let stop = flooding.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            let mut sent = 0u32;
            while !stop.is_cancelled() {
                every.tick().await;
                stranger
                    .batch_execute("notify pg_webhook_wake")
                    .await
                    .expect("any login may notify");
                sent += 1;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await; // the flood settles in
    let flooded = checks_during(worker.metrics.clone()).await;
    // Real work during the flood is still delivered.
    root.batch_execute("select webhook_publish('real.one', '{}')")
        .await
        .unwrap();
    receiver.wait_for(1).await;
    flooding.cancel();
    let sent = flood.await.unwrap();
    let deferred = worker
        .metrics
        .wakeups(pg_webhook_worker::metrics::Wakeup::Deferred);
    worker.stop().await;
    eprintln!(
        "queue checks: idle {idle}, flooded {flooded}, {sent} notifications, {deferred} held back"
    );
    assert!(sent >= 60, "the flood ran ({sent} notifications)");
    assert!(deferred > 0, "wake-ups after empty ones were held back");
    assert!(
        flooded <= 2 * idle,
        "the worker looked at the queue {flooded} times in {window:?} under {sent} notifications, {idle} times idle"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_up_held_back_after_empty_ones_is_looked_into_when_the_pause_ends() {
    // Empty wake-ups (a second of stray notifications) make the worker hold
    // the next ones back for a growing pause; a real event notified during
    // it must be found when the pause ends, not at the (hour-long) poll.
    let (db, receiver, client, worker) = listening_with_an_hourly_poll().await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        client
            .batch_execute("notify pg_webhook_wake")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client
        .batch_execute("select webhook_publish('real.one', '{}')")
        .await
        .unwrap();
    pg_webhook_tests::within("the held-back wake-up's look", receiver.wait_for(1)).await;
    let deferred = worker
        .metrics
        .wakeups(pg_webhook_worker::metrics::Wakeup::Deferred);
    worker.stop().await;
    assert!(deferred > 0, "wake-ups were held back");
    db.finish().await;
}
