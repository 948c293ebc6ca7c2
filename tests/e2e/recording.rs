//! What the database refuses to record cannot take the rest of the batch
//! down with it.

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_database_refuses_is_recorded_alone_and_the_rest_goes_through() {
    const N: i64 = 10;
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    client
        .query_one(
            "select endpoint_id from webhook_subscribe($1, timeout => '1 second')",
            &[&receiver.url("/")],
        )
        .await
        .unwrap();
    // A poisoned row: the database refuses any attempt of one delivery
    // (as it would a row breaking a constraint), until the trigger goes.
    client
        .batch_execute(&format!(
            "select webhook_publish('batch.item', jsonb_build_object('i', i)) from generate_series(1, {N}) i;
             create table poison (delivery_id bigint);
             create function refuse_poison() returns trigger language plpgsql as $$
             begin
                 if new.delivery_id in (select delivery_id from public.poison) then
                     raise exception 'poisoned attempt' using errcode = '23514';
                 end if;
                 return new;
             end $$;
             create trigger refuse_poison before insert on webhook.attempts
                 for each row execute function refuse_poison();"
        ))
        .await
        .unwrap();
    // The fan-out makes the deliveries; the third one is poisoned.
    client
        .batch_execute(
            "select webhook._claim_deliveries('setup', 0, '1 minute', 1, '{}', '{}', 1000, 0);
             insert into poison select id from webhook.deliveries order by id offset 2 limit 1;",
        )
        .await
        .unwrap();
    let poisoned: i64 = client
        .query_one("select delivery_id from poison", &[])
        .await
        .unwrap()
        .get(0);

    let mut worker = RunningWorker::start(db.worker_config());
    // Everything else is recorded, although it was sent in the same batch.
    db.wait_deliveries(&client, "succeeded", N - 1, &mut worker.events)
        .await;
    let status: String = client
        .query_one(
            "select status::text from webhook.deliveries where id = $1",
            &[&poisoned],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "pending", "the poisoned delivery was not recorded");
    // Once the database takes it again, its lease runs out and it is sent
    // and recorded like the others: nothing was lost. (The trigger is
    // dropped with the worker stopped: DROP TRIGGER locks the partitioned
    // table and its partitions, and a record inserting into them at that
    // moment can take the same locks in the other order, a deadlock.)
    worker.stop().await;
    client
        .batch_execute("drop trigger refuse_poison on webhook.attempts")
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_deliveries(&client, "succeeded", N, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&client).await;
    let sent = receiver.requests().len() as i64;
    assert!(
        sent > N,
        "the poisoned delivery was sent again: {sent} requests"
    );
    db.finish().await;
}
