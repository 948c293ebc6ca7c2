//! Several workers, and workers that die: no loss, no double delivery.

use pg_webhook_tests::{worker_binary, Receiver, RunningWorker, TestDb};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_never_double_deliver() {
    const N: i64 = 400;
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    client
        .batch_execute(&format!("select webhook_publish('bulk.item', jsonb_build_object('i', i)) from generate_series(1, {N}) i"))
        .await
        .unwrap();

    let config = |id: &str| {
        let mut c = db.worker_config();
        c.batch_size = 7;
        c.concurrency = 8;
        c.worker_id = id.into();
        c
    };
    let mut a = RunningWorker::start(config("worker-a"));
    let b = RunningWorker::start(config("worker-b"));
    db.wait_deliveries(&client, "succeeded", N, &mut a.events)
        .await;
    a.stop().await;
    b.stop().await;
    db.assert_invariants(&client).await;

    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in receiver.requests() {
        *per_id
            .entry(r.header("webhook-id").unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_id.len() as i64, N, "every event arrived");
    let doubles: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubles.is_empty(), "delivered more than once: {doubles:?}");
    let attempts: i64 = client
        .query_one("select count(*) from webhook.attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, N);
    let workers: i64 = client
        .query_one(
            "select count(distinct worker_id) from webhook.attempts",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(workers >= 1);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_claims_are_taken_over() {
    const N: i64 = 20;
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    // Slow answers keep the first worker's claims in flight when it dies.
    receiver.set_delay(Duration::from_secs(5));
    let client = db.client().await;
    client
        .query_one(
            "select endpoint_id from webhook_subscribe($1, timeout => '2 seconds')",
            &[&receiver.url("/slow")],
        )
        .await
        .unwrap();
    client
        .batch_execute(&format!("select webhook_publish('work.item', jsonb_build_object('i', i)) from generate_series(1, {N}) i"))
        .await
        .unwrap();

    let mut doomed = tokio::process::Command::new(worker_binary())
        .env("DATABASE_URL", &db.dsn)
        .env("PG_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
        .env("PG_WEBHOOK_LEASE_MARGIN_MS", "500")
        .env("PG_WEBHOOK_WORKER_ID", "doomed")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker binary");
    receiver.wait_for(1).await;
    let leased: i64 = client
        .query_one(
            "select count(*) from webhook.deliveries where leased_by = 'doomed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        leased > 0,
        "the first worker holds claims when it is killed"
    );
    doomed.start_kill().expect("SIGKILL");
    let status = doomed.wait().await.unwrap();
    assert!(!status.success());

    receiver.set_delay(Duration::ZERO);
    let mut config = db.worker_config();
    config.worker_id = "rescuer".into();
    let mut rescuer = RunningWorker::start(config);
    db.wait_deliveries(&client, "succeeded", N, &mut rescuer.events)
        .await;
    rescuer.stop().await;
    db.assert_invariants(&client).await;

    let mut seen: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len() as i64, N, "every event reached the receiver");
    let by_doomed: i64 = client
        .query_one(
            "select count(*) from webhook.attempts where worker_id = 'doomed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(by_doomed, 0, "the killed worker recorded nothing");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_deliveries() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(1500));
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    client
        .batch_execute("select webhook_publish('drain.me', '{}')")
        .await
        .unwrap();
    let mut worker = tokio::process::Command::new(worker_binary())
        .env("DATABASE_URL", &db.dsn)
        .env("PG_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker binary");
    receiver.wait_for(1).await;
    // The request is in flight (the receiver answers after 1.5 s): ask the
    // worker to stop; it must finish and record the delivery, then exit 0.
    let pid = worker.id().expect("running");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = pg_webhook_tests::within("worker exit after SIGTERM", worker.wait())
        .await
        .unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
    let done: i64 = client
        .query_one(
            "select count(*) from webhook.deliveries where status = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        done, 1,
        "the in-flight delivery was finished and recorded before exit"
    );
    db.finish().await;
}
