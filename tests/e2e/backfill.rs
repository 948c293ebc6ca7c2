//! Backfill (`webhook_backfill`): a table's existing rows as `<prefix>.read`
//! events, against real receivers and real workers, beside live writes,
//! across a worker restart and a dump and restore, with the rights of the
//! role that asks.

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};
use std::collections::BTreeSet;
use std::time::Duration;

/// The `data.new.id` of each request of type `event_type`, in arrival order.
fn row_ids(receiver: &Receiver, event_type: &str) -> Vec<i64> {
    receiver
        .requests()
        .iter()
        .map(|r| r.json())
        .filter(|b| b["type"] == event_type)
        .map(|b| b["data"]["new"]["id"].as_i64().expect("a row id"))
        .collect()
}

/// Asserts that `ids` holds each of `expected` exactly once.
fn assert_each_once(ids: &[i64], expected: impl Iterator<Item = i64>, what: &str) {
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "{what}: a row was sent twice");
    assert_eq!(
        distinct,
        expected.collect::<BTreeSet<i64>>(),
        "{what}: not every row, or a row too many"
    );
}

/// The SQLSTATE of `sql`'s error, run by `client`.
async fn sqlstate(client: &tokio_postgres::Client, sql: &str) -> String {
    let e = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{sql} should fail"));
    e.code().expect("a database error").code().to_string()
}

/// A table `items (id, v)` of `rows` rows, and `receiver` subscribed to
/// `patterns`.
async fn items(
    db: &TestDb,
    client: &tokio_postgres::Client,
    rows: i64,
    receiver: &Receiver,
    patterns: &[&str],
) {
    client
        .batch_execute(&format!(
            "create table items (id int primary key, v int);
             insert into items select g, g from generate_series(1, {rows}) g;"
        ))
        .await
        .unwrap();
    db.subscribe(client, &receiver.url("/r"), patterns, None)
        .await;
}

const ROWS: i64 = 4000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_sends_every_row_once_beside_live_writes_and_goes_on_after_a_restart() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let all = Receiver::start().await;
    let one = Receiver::start().await;
    let live = Receiver::start().await;
    // A slow receiver and a worker of 32 slots (16 for it): the backfill
    // lasts seconds (about 800 rows/s), and live events come in the middle
    // of it.
    all.set_delay(Duration::from_millis(20));
    let mut config = db.worker_config();
    config.concurrency = 32;
    client
        .batch_execute(&format!(
            "create table items (id bigint primary key, v int not null, secret text);
             insert into items select g, g, 'not sent' from generate_series(1, {ROWS}) g;
             analyze items;
             select webhook_watch('items', '{{update}}', columns => '{{id,v}}');"
        ))
        .await
        .unwrap();
    db.subscribe(&client, &all.url("/all"), &["items.*"], None)
        .await;
    let (one_id, _) = db
        .subscribe(&client, &one.url("/one"), &["other.*"], None)
        .await;
    db.subscribe(&client, &live.url("/live"), &["live.*"], None)
        .await;
    let to_all: i64 = client
        .query_one("select webhook_backfill('items')", &[])
        .await
        .unwrap()
        .get(0);
    let to_one: i64 = client
        .query_one(
            "select webhook_backfill('items', endpoint => $1, \"where\" => 'id % 10 = 0')",
            &[&one_id],
        )
        .await
        .unwrap()
        .get(0);

    let mut worker = RunningWorker::start(config.clone());
    db.wait_for(
        &client,
        &format!("select rows_read >= 1000 from webhook.backfills where id = {to_all}"),
        Some(&mut worker.events),
    )
    .await;
    // Live writes in the middle of it: 100 rows updated (their change
    // events and their read events both arrive), 20 events of their own.
    client
        .batch_execute(
            "update items set v = v + 1000000 where id % 40 = 1;
             select webhook_publish('live.ping', jsonb_build_object('n', g)) from generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    db.wait_for(
        &client,
        "select count(*) = 20 from webhook.delivery_log where event_type = 'live.ping' and status = 'succeeded'",
        Some(&mut worker.events),
    )
    .await;
    let running: bool = client
        .query_one(
            &format!("select status = 'running' from webhook.backfills where id = {to_all}"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        running,
        "live events went out while the backfill was still sending, not behind it"
    );

    // A restart: the next worker goes on from the committed cursor.
    worker.stop().await;
    let read_at_stop: i64 = client
        .query_one(
            &format!("select rows_read from webhook.backfills where id = {to_all}"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        read_at_stop > 0 && read_at_stop < ROWS,
        "stopped in the middle: {read_at_stop}"
    );
    let mut worker = RunningWorker::start(config);
    db.wait_for(
        &client,
        "select bool_and(status = 'done') and not exists (select from webhook.deliveries_open) \
         from webhook.backfills",
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;

    assert_each_once(&row_ids(&all, "items.read"), 1..=ROWS, "to every endpoint");
    assert_eq!(row_ids(&all, "items.updated").len(), 100);
    assert_each_once(
        &row_ids(&one, "items.read"),
        (1..=ROWS).filter(|id| id % 10 == 0),
        "to one endpoint, where id % 10 = 0",
    );
    assert_eq!(
        one.requests().len(),
        (ROWS / 10) as usize,
        "the one endpoint got the backfill alone, whatever its event types"
    );
    assert_eq!(live.requests().len(), 20);
    let body = all
        .requests()
        .iter()
        .map(|r| r.json())
        .find(|b| b["type"] == "items.read" && b["data"]["new"]["id"] == 7)
        .expect("row 7");
    assert_eq!(
        body["data"],
        serde_json::json!({"table": "items", "schema": "public", "op": "read",
                           "new": {"id": 7, "v": 7}, "old": null}),
        "the shape of a captured row, with the watch's columns"
    );
    let progress = client
        .query(
            "select rows_read, rows_sent from webhook.backfills order by id",
            &[],
        )
        .await
        .unwrap();
    let progress: Vec<(i64, i64)> = progress.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        progress,
        [(ROWS, ROWS), (ROWS, ROWS / 10)],
        "{to_all} {to_one}"
    );
    let types: Vec<String> = pg_webhook_tests::column(
        &client,
        "select event_type || ' ' || source || ' ' || source_table::text || ' ' || (events_kept > 0)::text
         from webhook.event_types where source_table = 'items'::regclass order by 1",
        &[],
    )
    .await;
    assert!(
        types.contains(&"items.read backfilled items true".to_owned()),
        "webhook.event_types lists the backfills' type: {types:?}"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_reads_with_the_rights_of_the_role_that_asks_and_can_be_cancelled() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start().await;
    client
        .batch_execute(
            "create table accounts (id int primary key, tenant text not null, v int, secret text);
             insert into accounts select g, case when g % 2 = 0 then 'a' else 'b' end, g, 'hidden'
             from generate_series(1, 100) g;
             alter table accounts enable row level security;
             create policy tenant_a on accounts for select using (tenant = 'a');",
        )
        .await
        .unwrap();
    let (endpoint, _) = db
        .subscribe(&client, &receiver.url("/r"), &["accounts.*"], None)
        .await;
    let (name, admin) = db.login(&client, "bf", &["webhook_admin"]).await;
    if pg_webhook_tests::flavor() == pg_webhook_tests::Flavor::Sql {
        // Without a superuser, pg_webhook's owner makes the reader a
        // function of the role that asks only when it may (the error's hint).
        assert_eq!(
            sqlstate(&admin, "select webhook_backfill('accounts')").await,
            "42501"
        );
        pg_webhook_tests::let_owner_take(&client, &name).await;
    }

    // No right on the table; then the right on some columns but not on
    // every one the backfill would send (no watch: all of them) or on the
    // one its condition names.
    assert_eq!(
        sqlstate(&admin, "select webhook_backfill('accounts')").await,
        "42501"
    );
    client
        .batch_execute(&format!(
            "grant select (id, tenant, v) on accounts to {name}"
        ))
        .await
        .unwrap();
    assert_eq!(
        sqlstate(&admin, "select webhook_backfill('accounts')").await,
        "42501"
    );
    client
        .batch_execute("select webhook_watch('accounts', columns => '{id,tenant,v}')")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(
            &admin,
            "select webhook_backfill('accounts', \"where\" => 'secret is not null')"
        )
        .await,
        "42501"
    );

    // Allowed now; its row-level security applies (tenant a only).
    let allowed: i64 = admin
        .query_one(
            "select webhook_backfill('accounts', \"where\" => 'v > 10')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Its owner turns a reader into SECURITY INVOKER: the step calls it as
    // webhook_filter, which may read nothing, not as the extension owner.
    let hijacked: i64 = admin
        .query_one(
            "select webhook_backfill('accounts', endpoint => $1)",
            &[&endpoint],
        )
        .await
        .unwrap()
        .get(0);
    admin
        .batch_execute(&format!(
            "alter function webhook._backfill_{hijacked}_rows(jsonb, integer) security invoker"
        ))
        .await
        .unwrap();
    // Cancelled before any worker runs: nothing of it is ever read.
    let cancelled: i64 = admin
        .query_one("select webhook_backfill('accounts')", &[])
        .await
        .unwrap()
        .get(0);
    let first: bool = admin
        .query_one("select webhook_backfill_cancel($1)", &[&cancelled])
        .await
        .unwrap()
        .get(0);
    let again: bool = admin
        .query_one("select webhook_backfill_cancel($1)", &[&cancelled])
        .await
        .unwrap()
        .get(0);
    assert!(
        first && !again,
        "cancelled once; the second time it had ended"
    );
    assert_eq!(
        sqlstate(&admin, "select webhook_backfill_cancel(-1)").await,
        "42704"
    );

    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_for(
        &client,
        "select count(*) = 3 from webhook.backfills where status <> 'running' \
         and not exists (select from webhook.deliveries_open)",
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;
    let rows = client
        .query(
            "select id, status, rows_read, rows_sent, coalesce(error, '') from webhook.backfills order by id",
            &[],
        )
        .await
        .unwrap();
    let state: Vec<(i64, String, i64, i64, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(state[0].0, allowed);
    assert_eq!(
        (&state[0].1[..], state[0].2, state[0].3),
        ("done", 50, 45),
        "tenant a's 50 rows read, the 45 over 10 sent"
    );
    assert_eq!(state[1].0, hijacked);
    assert_eq!(state[1].1, "failed");
    assert!(
        state[1].4.contains("permission denied") && state[1].4.contains("42501"),
        "{}",
        state[1].4
    );
    assert_eq!(
        (state[2].0, &state[2].1[..], state[2].2),
        (cancelled, "cancelled", 0)
    );
    assert_each_once(
        &row_ids(&receiver, "accounts.read"),
        (12..=100).step_by(2),
        "tenant a, v > 10",
    );
    assert!(
        receiver
            .requests()
            .iter()
            .all(|r| r.json()["data"]["new"].get("secret").is_none()),
        "the watch's columns only"
    );
    drop(admin);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backfill_goes_on_after_a_dump_and_restore() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start().await;
    items(&db, &client, 2500, &receiver, &["items.*"]).await;
    // One batch read (what a worker's claim does), then the dump: the
    // backfill's row and its two functions are in it.
    client
        .batch_execute("select webhook_backfill('items')")
        .await
        .unwrap();
    let read: i32 = client
        .query_one("select webhook._backfill_step()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(read, 1000);
    let restored = db.dump_and_restore().await;

    let rclient = restored.client().await;
    let mut worker = RunningWorker::start(restored.worker_config());
    restored
        .wait_for(
            &rclient,
            "select bool_and(status = 'done') and not exists (select from webhook.deliveries_open) \
             from webhook.backfills",
            Some(&mut worker.events),
        )
        .await;
    worker.stop().await;
    assert_each_once(
        &row_ids(&receiver, "items.read"),
        1..=2500,
        "the first batch and the rest, after the restore",
    );
    restored.finish().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_on_the_table_holds_back_its_backfill_and_not_the_live_deliveries() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start().await;
    items(&db, &client, 3000, &receiver, &["items.*", "live.*"]).await;
    let id: i64 = client
        .query_one("select webhook_backfill('items')", &[])
        .await
        .unwrap()
        .get(0);
    // Someone holds the table (an ALTER TABLE would): the batch gives up
    // on the lock, the claim goes on, live events are delivered.
    let locker = db.client().await;
    locker
        .batch_execute("begin; lock table items in access exclusive mode")
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute("select webhook_publish('live.ping', jsonb_build_object('n', g)) from generate_series(1, 5) g")
        .await
        .unwrap();
    db.wait_for(
        &client,
        &format!(
            "select count(*) = 5 from webhook.delivery_log where event_type = 'live.ping' and status = 'succeeded'
             and exists (select from webhook.backfills b where b.id = {id} and b.error like '%55P03%')"
        ),
        Some(&mut worker.events),
    )
    .await;
    let row = client
        .query_one(
            &format!("select status, rows_read from webhook.backfills where id = {id}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("running".to_owned(), 0),
        "held back, not failed"
    );
    // The lock goes: the backfill goes on, from where it was.
    locker.batch_execute("commit").await.unwrap();
    db.wait_for(
        &client,
        &format!(
            "select status = 'done' and error is null and not exists (select from webhook.deliveries_open) \
             from webhook.backfills where id = {id}"
        ),
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;
    assert_each_once(
        &row_ids(&receiver, "items.read"),
        1..=3000,
        "after the lock",
    );
    drop(locker);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backfill_resumes_from_its_last_key_and_sends_no_row_twice() {
    const N: i64 = 3000;
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start().await;
    items(&db, &client, N, &receiver, &["items.*"]).await;
    // Row 2500 makes the condition divide by zero: the third batch (rows
    // 2001-3000) fails, the first two are sent.
    client
        .batch_execute("update items set v = 0 where id = 2500")
        .await
        .unwrap();
    let id: i64 = client
        .query_one(
            "select webhook_backfill('items', \"where\" => '100 / v >= 0')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let running: bool = client
        .query_one("select webhook_backfill_resume($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(!running, "a running backfill is left alone");
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_for(
        &client,
        &format!("select status = 'failed' from webhook.backfills where id = {id}"),
        Some(&mut worker.events),
    )
    .await;
    let failed = client
        .query_one(
            "select last_key::text, rows_read, error from webhook.backfills where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (failed.get::<_, String>(0), failed.get::<_, i64>(1)),
        (r#"{"id": 2000}"#.to_owned(), 2000)
    );
    let error: String = failed.get(2);
    assert!(error.contains("division by zero"), "{error}");

    // Fixed, it goes on from row 2001: every row once, none twice.
    client
        .batch_execute("update items set v = 1 where id = 2500")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(&client, "select webhook_backfill_resume(-1)").await,
        "42704"
    );
    let resumed: bool = client
        .query_one("select webhook_backfill_resume($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(resumed);
    db.wait_for(
        &client,
        &format!(
            "select b.status = 'done' and not exists (select from webhook.deliveries_open) \
             from webhook.backfills b where b.id = {id}"
        ),
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;
    assert_each_once(&row_ids(&receiver, "items.read"), 1..=N, "resumed");
    let done = client
        .query_one(
            "select rows_read, rows_sent, error is null, finished_at is not null from webhook.backfills where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            done.get::<_, i64>(0),
            done.get::<_, i64>(1),
            done.get::<_, bool>(2),
            done.get::<_, bool>(3)
        ),
        (N, N, true, true)
    );
    let again: bool = client
        .query_one("select webhook_backfill_resume($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(!again, "a finished backfill is left alone");

    // One that fails on its first batch cannot go on once the key it walks
    // is another.
    let second: i64 = client
        .query_one(
            "select webhook_backfill('items', \"where\" => '100 / (v - 7) >= 0')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_for(
        &client,
        &format!("select status = 'failed' and last_key is null from webhook.backfills where id = {second}"),
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;
    client
        .batch_execute("alter table items drop constraint items_pkey, add primary key (v, id)")
        .await
        .unwrap();
    assert_eq!(
        sqlstate(
            &client,
            &format!("select webhook_backfill_resume({second})")
        )
        .await,
        "55000"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_endpoint_does_not_hold_a_backfill_to_every_endpoint() {
    // More rows than the window (2,000): a paused endpoint's held
    // deliveries fill it, and would stop the backfill there.
    const N: i64 = 2500;
    let db = TestDb::new().await;
    let client = db.client().await;
    let active = Receiver::start().await;
    let paused = Receiver::start().await;
    items(&db, &client, N, &active, &["items.*"]).await;
    let (held, _) = db
        .subscribe(&client, &paused.url("/p"), &["items.*"], None)
        .await;
    client
        .execute("select webhook_pause($1)", &[&held])
        .await
        .unwrap();
    client
        .batch_execute("select webhook_backfill('items')")
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_for(
        &client,
        &format!(
            "select (select status from webhook.backfills) = 'done' \
             and (select count(*) from webhook.deliveries where endpoint_id <> {held} and status = 'succeeded') = {N}"
        ),
        Some(&mut worker.events),
    )
    .await;
    assert_each_once(
        &row_ids(&active, "items.read"),
        1..=N,
        "the active endpoint",
    );
    assert!(paused.requests().is_empty(), "nothing to the paused one");
    // Resumed, it gets every row.
    client
        .execute("select webhook_resume($1)", &[&held])
        .await
        .unwrap();
    db.wait_deliveries(&client, "succeeded", 2 * N, &mut worker.events)
        .await;
    worker.stop().await;
    assert_each_once(
        &row_ids(&paused, "items.read"),
        1..=N,
        "the resumed endpoint",
    );
    db.finish().await;
}
