//! Retention: what is finished goes after pg_webhook.retention, whole log
//! slots at a time; what is pending stays, with its event; the worker runs
//! it on its schedule, one worker at a time.

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};
use pg_webhook_worker::WorkerEvent;
use tokio_postgres::Client;

async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_finished_groups_whole_and_keeps_what_is_pending() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["done.*"], None)
        .await;
    let (held, _) = db
        .subscribe(&client, &receiver.url("/held"), &["held.*"], None)
        .await;
    client
        .batch_execute(&format!("select webhook_pause({held})"))
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute(
            "select webhook_publish('done.one', jsonb_build_object('i', i)) from generate_series(1, 20) i;
             select webhook_publish('held.one', '{}');",
        )
        .await
        .unwrap();
    db.wait_deliveries(&client, "succeeded", 20, &mut worker.events)
        .await;
    db.wait_deliveries(&client, "paused", 1, &mut worker.events)
        .await;
    worker.stop().await;
    assert_eq!(
        count(&client, "select count(*) from webhook.attempts").await,
        20
    );

    // Nothing is past the retention yet.
    assert_eq!(count(&client, "select webhook_purge()").await, 0);
    // Five days on, a new generation starts; forty days on, the first one
    // ended more than the 30 days of retention ago and its slot is purged.
    assert_eq!(
        count(&client, "select webhook._purge(now() + interval '5 days')").await,
        0
    );
    assert_eq!(
        count(&client, "select webhook._purge(now() + interval '40 days')").await,
        20,
        "every finished event goes"
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from webhook.deliveries where status = 'succeeded'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&client, "select count(*) from webhook.attempts").await,
        0
    );
    // The held delivery and its event stay, whatever their age.
    assert_eq!(
        count(&client, &format!("select count(*) from webhook.deliveries where endpoint_id = {held} and status = 'paused'")).await,
        1
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from webhook.events where event_type = 'held.one'"
        )
        .await,
        1
    );
    // Removed whole: the purged slot's partitions are empty files.
    assert_eq!(
        count(
            &client,
            "select (pg_relation_size('webhook.events_0') + pg_relation_size('webhook.deliveries_0') + pg_relation_size('webhook.attempts_0'))::bigint"
        )
        .await,
        0
    );
    db.assert_invariants(&client).await;

    // Resumed, the held delivery goes out from its new slot.
    client
        .batch_execute(&format!("select webhook_resume({held})"))
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;
    worker.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_maintenance_on_schedule_one_worker_at_a_time() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    let mut config = db.worker_config();
    config.maintenance =
        pg_webhook_worker::config::MaintenanceSchedule::parse("* * * * * *").unwrap();
    let mut worker = RunningWorker::start(config.clone());
    client
        .batch_execute("select webhook_publish('old.one', jsonb_build_object('i', i)) from generate_series(1, 5) i")
        .await
        .unwrap();
    db.wait_deliveries(&client, "succeeded", 5, &mut worker.events)
        .await;
    worker.stop().await;
    // Make the first generation look 40 days old, ended 31 days ago, and
    // its deliveries finished 35 days ago.
    client
        .batch_execute(
            "update webhook.generations set started_at = now() - interval '40 days' where gen = 0;
             insert into webhook.generations (gen, started_at) values (1, now() - interval '31 days');
             update webhook.deliveries set finalized_at = finalized_at - interval '35 days';",
        )
        .await
        .unwrap();

    // While another session holds the maintenance lock, the worker skips it.
    let holder = db.client().await;
    holder
        .batch_execute("begin; select pg_advisory_xact_lock(8099547421255821423);")
        .await
        .unwrap();
    let mut worker = RunningWorker::start(config);
    let mut next_run = async || loop {
        match worker.events.recv().await {
            Some(WorkerEvent::Maintenance(report)) => return report,
            Some(_) => {}
            None => panic!("the worker stopped"),
        }
    };
    for _ in 0..2 {
        let skipped = pg_webhook_tests::within("a maintenance run", next_run()).await;
        assert_eq!(
            skipped, None,
            "maintenance ran while another session held its lock"
        );
    }
    holder.batch_execute("commit").await.unwrap();
    let report = pg_webhook_tests::within("a maintenance report", next_run())
        .await
        .expect("with the lock free, the worker runs the maintenance");
    worker.stop().await;
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["events_purged"], 5, "{report}");
    assert_eq!(
        count(&client, "select count(*) from webhook.events").await,
        0
    );
    assert_eq!(
        count(
            &client,
            "select count(*) from webhook.generations where purged_at is not null"
        )
        .await,
        1
    );
    db.finish().await;
}
