//! What the worker's sessions may rely on. Behind pgbouncer in transaction
//! mode, claims and records hop between server connections, so nothing may
//! rely on a named prepared statement or a session's SET; LISTEN uses a
//! direct connection. And a database may default to another isolation
//! level than READ COMMITTED, which the worker's writes need.

use pg_webhook_tests::{PgBouncer, Receiver, RunningWorker, TestDb};

/// The test settings with claims, records and maintenance (every second)
/// through `bouncer`, LISTEN direct, claims of 10.
fn through(bouncer: &PgBouncer, db: &TestDb) -> pg_webhook_worker::Config {
    let mut config = db.worker_config();
    config.pg = bouncer.dsn(&db.name).parse().unwrap();
    config.listen_pg = db.dsn.parse().unwrap();
    config.batch_size = 10;
    config.maintenance =
        pg_webhook_worker::config::MaintenanceSchedule::parse("* * * * * *").unwrap();
    config
}

/// Waits for `worker` to report a maintenance run that did its work.
async fn a_maintenance_report(worker: &mut RunningWorker) {
    pg_webhook_tests::within("a maintenance report", async {
        loop {
            if let Some(pg_webhook_worker::WorkerEvent::Maintenance(Some(_))) =
                worker.events.recv().await
            {
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_delivers_through_pgbouncer_in_transaction_mode() {
    const N: i64 = 200;
    let db = TestDb::new().await;
    let bouncer = PgBouncer::start(3).await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    let mut worker = RunningWorker::start(through(&bouncer, &db));
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
    a_maintenance_report(&mut worker).await;
    worker.stop().await;
    assert_eq!(receiver.requests().len() as i64, 2 * N);
    assert!(
        bouncer.transactions(&db.name).await > 2 * N / 10,
        "the claims and records went through pgbouncer"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_writes_at_read_committed_in_a_database_that_defaults_to_serializable() {
    const N: i64 = 40;
    let db = TestDb::new().await;
    let bouncer = PgBouncer::start(3).await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    db.subscribe(
        &client,
        &receiver.url("/"),
        &["*"],
        Some(r#"{"initial_delay": "10 milliseconds"}"#),
    )
    .await;
    // Every claim and record notes the isolation level it runs at: a row
    // trigger on the deliveries (claimed, fanned out, moved by a record)
    // and on the attempts (recorded). The first claim and the first record
    // fail (a sequence counts across rollbacks): the connection goes on
    // after a write that failed in its own transaction.
    client
        .batch_execute(
            "create table public.pgwh_levels (tbl text, level text);
             create sequence public.pgwh_refuse_deliveries;
             create sequence public.pgwh_refuse_attempts;
             create function public.pgwh_note_level() returns trigger language plpgsql
             security definer set search_path = pg_catalog, public as $$
             declare
                 v_table text := split_part(tg_table_name, '_', 1); -- the table, not its partition
             begin
                 if nextval(format('public.pgwh_refuse_%s', v_table)::regclass) = 1 then
                     raise exception 'the first % refused, on purpose', v_table;
                 end if;
                 insert into public.pgwh_levels values (v_table, current_setting('transaction_isolation'));
                 return null;
             end
             $$;
             create trigger pgwh_note_level after insert or update on webhook.deliveries
                 for each row execute function public.pgwh_note_level();
             create trigger pgwh_note_level after insert on webhook.attempts
                 for each row execute function public.pgwh_note_level();",
        )
        .await
        .unwrap();
    // From now on, every new session of this database (the worker's, the
    // pooler's server connections) starts in SERIALIZABLE.
    db.superuser_client()
        .await
        .batch_execute(&format!(
            "alter database {} set default_transaction_isolation = 'serializable'",
            db.name
        ))
        .await
        .unwrap();
    // Half of the first answers fail: each of those is recorded and retried.
    receiver.script(&[500; (N / 2) as usize]);
    let mut worker = RunningWorker::start(through(&bouncer, &db));
    client
        .batch_execute(&format!(
            "select webhook_publish('burst.one', jsonb_build_object('i', i)) from generate_series(1, {N}) i"
        ))
        .await
        .unwrap();
    db.wait_deliveries(&client, "succeeded", N, &mut worker.events)
        .await;
    a_maintenance_report(&mut worker).await;
    worker.stop().await;
    let superuser = db.superuser_client().await;
    let level: String = superuser
        .query_one("show default_transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        level, "serializable",
        "a new session defaults to serializable"
    );
    let levels: Vec<String> = pg_webhook_tests::column(
        &client,
        "select distinct tbl || ' ' || level from public.pgwh_levels order by 1",
        &[],
    )
    .await;
    assert_eq!(
        levels,
        ["attempts read committed", "deliveries read committed"],
        "every write of the worker ran at read committed"
    );
    let attempts: i64 = client
        .query_one("select count(*) from webhook.attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts, N + N / 2, "each failure recorded, then its retry");
    let refused: Vec<i64> = pg_webhook_tests::column(
        &client,
        "select last_value from public.pgwh_refuse_deliveries union all select last_value from public.pgwh_refuse_attempts",
        &[],
    )
    .await;
    assert!(
        refused.iter().all(|&n| n > 1),
        "a claim and a record were refused, and others ran after them: {refused:?}"
    );
    db.finish().await;
}
