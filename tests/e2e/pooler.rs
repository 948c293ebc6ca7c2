//! Behind pgbouncer in transaction mode: claims and records hop between
//! server connections, so nothing may rely on a named prepared statement;
//! LISTEN uses a direct connection.

use pg_webhook_tests::{PgBouncer, Receiver, RunningWorker, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_delivers_through_pgbouncer_in_transaction_mode() {
    const N: i64 = 200;
    let db = TestDb::new().await;
    let bouncer = PgBouncer::start(3).await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    let mut config = db.worker_config();
    // Claims, records and maintenance through the pooler; LISTEN direct.
    config.pg = bouncer.dsn(&db.name).parse().unwrap();
    config.listen_pg = db.dsn.parse().unwrap();
    config.batch_size = 10;
    config.maintenance =
        pg_webhook_worker::config::MaintenanceSchedule::parse("* * * * * *").unwrap();
    let mut worker = RunningWorker::start(config);
    // A burst (found by the NOTIFY on the direct connection) and a trickle.
    client
        .batch_execute(&format!(
            "select webhook_publish('burst.one', jsonb_build_object('i', i)) from generate_series(1, {N}) i"
        ))
        .await
        .unwrap();
    for i in 0..N {
        client
            .batch_execute(&format!(
                "select webhook_publish('trickle.one', '{{\"i\": {i}}}')"
            ))
            .await
            .unwrap();
    }
    db.wait_deliveries(&client, "succeeded", 2 * N, &mut worker.events)
        .await;
    // And a maintenance run went through it too.
    pg_webhook_tests::within("a maintenance report through pgbouncer", async {
        loop {
            if let Some(pg_webhook_worker::WorkerEvent::Maintenance(Some(_))) =
                worker.events.recv().await
            {
                return;
            }
        }
    })
    .await;
    worker.stop().await;
    assert_eq!(receiver.requests().len() as i64, 2 * N);
    assert!(
        bouncer.transactions(&db.name).await > 2 * N / 10,
        "the claims and records went through pgbouncer"
    );
    db.finish().await;
}
