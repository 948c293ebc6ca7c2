//! The capture trigger's direct insert into the event log gives way to the
//! SQL statement when a partition has something the executor must run.
//! End to end rather than a `#[pg_test]`: a trigger on the live log
//! partition, created while other tests write to the same partition, can
//! deadlock with them; here the database is this test's alone.

use pg_webhook_tests::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_honours_a_trigger_added_to_the_log_while_a_session_captures() {
    let db = TestDb::new().await;
    let writer = db.client().await;
    writer
        .batch_execute(
            "create table orders (id int primary key);
             select webhook_watch('orders');
             create table seen (event_id bigint);
             create function note_event() returns trigger language plpgsql as
             $$ begin insert into public.seen values (new.id); return null; end $$;
             insert into orders values (1);",
        )
        .await
        .unwrap();
    // The writer's session has captured once, straight into the partition.
    // Another session adds a trigger to that partition and commits.
    let dba = db.client().await;
    let slot: i16 = dba
        .query_one("select webhook._current_slot()", &[])
        .await
        .unwrap()
        .get(0);
    dba.batch_execute(&format!(
        "create trigger noted after insert on webhook.events_{slot} \
         for each row execute function note_event()"
    ))
    .await
    .unwrap();
    // The writer's next capture must see it and go through the executor.
    writer
        .batch_execute("insert into orders values (2)")
        .await
        .unwrap();
    let rows = writer
        .query(
            "select e.payload::jsonb -> 'new' ->> 'id'
             from public.seen s join webhook.events e on e.id = s.event_id
             where e.event_type = 'orders.created'",
            &[],
        )
        .await
        .unwrap();
    let ids: Vec<Option<String>> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        ids,
        vec![Some("2".to_owned())],
        "the trigger on the log saw the second event only (it did not exist at the first)"
    );
    let events: i64 = writer
        .query_one(
            "select count(*) from webhook.events where event_type = 'orders.created'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 2, "both rows were captured");
    db.finish().await;
}
