//! Filters in SQL: a watch's "when" and a subscription's filter, against
//! real receivers, a real worker and a real pg_dump and restore.

use pg_webhook_tests::{connect_with_notices, Receiver, RunningWorker, TestDb};
use std::time::Duration;

/// Subscribes `url` to every event with `filter`; returns the endpoint id.
async fn subscribe_filtered(client: &tokio_postgres::Client, url: &str, filter: &str) -> i64 {
    client
        .query_one(
            "select endpoint_id from webhook_subscribe($1, filter => $2)",
            &[&url, &filter],
        )
        .await
        .expect("webhook_subscribe")
        .get(0)
}

/// The `amount` of each request's data, smallest first (deliveries of
/// one endpoint go out concurrently: their order of arrival is not theirs).
fn amounts(receiver: &Receiver) -> Vec<i64> {
    let mut amounts: Vec<i64> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["data"]["amount"].as_i64().expect("a number"))
        .collect();
    amounts.sort_unstable();
    amounts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_sends_only_the_events_it_matches_and_a_new_one_applies_from_its_commit() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let all = Receiver::start().await;
    let big = Receiver::start().await;
    db.subscribe(&client, &all.url("/all"), &["*"], None).await;
    let endpoint = subscribe_filtered(
        &client,
        &big.url("/big"),
        "(data->>'amount')::numeric > 100 -- big orders",
    )
    .await;
    let mut worker = RunningWorker::start(db.worker_config());
    // One transaction with every kind: matched, not matched, and one the
    // filter raises an error on (not delivered to it, delivered elsewhere).
    client
        .batch_execute(
            "begin;
             select webhook_publish('order.paid', '{\"amount\": 50}');
             select webhook_publish('order.paid', '{\"amount\": 500}');
             select webhook_publish('order.paid', '{\"amount\": \"abc\"}');
             select webhook_publish('order.paid', '{\"amount\": 150}');
             commit;",
        )
        .await
        .unwrap();
    db.wait_deliveries(&client, "succeeded", 4 + 2, &mut worker.events)
        .await;
    assert_eq!(amounts(&big), [150, 500]);
    assert_eq!(all.requests().len(), 4);

    // A new filter is for events committed after it; the one before stays
    // for what was committed before, however late the fan-out runs.
    worker.stop().await;
    client
        .batch_execute(
            "select webhook_publish('order.paid', '{\"amount\": 1000, \"status\": \"open\"}')",
        )
        .await
        .unwrap();
    client
        .execute(
            "select webhook_update($1, filter => 'data->>''status'' = ''paid''')",
            &[&endpoint],
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "select webhook_publish('order.paid', '{\"amount\": 2000, \"status\": \"open\"}');
             select webhook_publish('order.paid', '{\"amount\": 3, \"status\": \"paid\"}');",
        )
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_deliveries(&client, "succeeded", 7 + 4, &mut worker.events)
        .await;
    assert_eq!(amounts(&big), [3, 150, 500, 1000]);
    worker.stop().await;
    db.assert_invariants(&client).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_when_and_a_filter_survive_a_dump_and_restore() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start().await;
    subscribe_filtered(
        &client,
        &receiver.url("/paid"),
        "data->'new'->>'status' = 'paid'",
    )
    .await;
    client
        .batch_execute(
            "create table orders (id int primary key, status text, region text);
             select webhook_watch('orders', '{insert,update}', \"when\" => 'new.region = ''eu''');",
        )
        .await
        .unwrap();
    let restored = db.dump_and_restore().await;

    // With the extension, pg_dump keeps the filter's text, not its function
    // (a member of the extension): the fan-out makes it again before it fans
    // out the first events. The SQL flavor's are dumped like any function.
    let rclient = restored.client().await;
    let functions = "select count(*) from pg_proc where proname ~ '^_filter_[0-9]+$'";
    let n: i64 = rclient.query_one(functions, &[]).await.unwrap().get(0);
    let dumped = match pg_webhook_tests::flavor() {
        pg_webhook_tests::Flavor::Extension => 0,
        pg_webhook_tests::Flavor::Sql => 1,
    };
    assert_eq!(n, dumped, "what a restore brings of the filter's function");
    rclient
        .batch_execute(
            "insert into orders values (1, 'paid', 'us'), (2, 'open', 'eu'), (3, 'paid', 'eu');
             update orders set status = 'paid' where id = 2;",
        )
        .await
        .unwrap();
    let mut worker = RunningWorker::start(restored.worker_config());
    let got = receiver.wait_for(2).await;
    restored
        .wait_deliveries(&rclient, "succeeded", 2, &mut worker.events)
        .await;
    worker.stop().await;
    let mut rows: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let body = r.json();
            (
                body["type"].as_str().unwrap().to_owned(),
                body["data"]["new"]["id"].to_string(),
            )
        })
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ("orders.created".into(), "3".into()),
            ("orders.updated".into(), "2".into())
        ],
        "only EU rows are captured, and only paid ones sent"
    );
    let n: i64 = rclient.query_one(functions, &[]).await.unwrap().get(0);
    assert_eq!(n, 1);
    let events: i64 = rclient
        .query_one("select count(*) from webhook.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 3, "the row outside the condition wrote no event");
    restored.assert_invariants(&rclient).await;
    db.finish().await;
    restored.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_a_filter_errs_on_is_left_out_with_a_warning_and_can_be_replayed() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let endpoint = subscribe_filtered(
        &client,
        "http://127.0.0.1:9/big",
        "(data->>'amount')::numeric > 100",
    )
    .await;
    // One transaction: one chunk, which the fan-out makes again catching
    // the filter's error on the first event.
    let ids: Vec<i64> = pg_webhook_tests::column(
        &client,
        "select webhook_publish('order.paid', d::jsonb)
         from unnest(array['{\"amount\": \"abc\"}', '{\"amount\": 500}']) with ordinality as t(d, n)
         order by n",
        &[],
    )
    .await;
    let (fanner, mut notices) = connect_with_notices(&db.dsn).await;
    let made: i32 = fanner
        .query_one("select webhook._fan_out(100)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        made, 1,
        "the event the filter passes, not the one it errs on"
    );
    let warning = tokio::time::timeout(Duration::from_secs(10), notices.recv())
        .await
        .expect("a warning in time")
        .expect("a warning");
    assert_eq!(warning.severity(), "WARNING");
    assert!(
        warning.message()
            == format!("the filters of endpoints {endpoint} raised an error on 1 deliveries, which were not made"),
        "{}",
        warning.message()
    );
    let delivered: Vec<i64> = pg_webhook_tests::column(
        &client,
        "select event_id from webhook.deliveries where endpoint_id = $1",
        &[&endpoint],
    )
    .await;
    assert_eq!(delivered, [ids[1]]);
    // The endpoint was subscribed to it: a replay sends it (after a fix).
    let replayed: i32 = client
        .query_one("select webhook_replay($1, $2)", &[&ids[0], &endpoint])
        .await
        .unwrap()
        .get(0);
    assert_eq!(replayed, 1);
    db.finish().await;
}

/// A filter runs as webhook_filter, a backfill's reader as the role that
/// asks and (SQL flavor) a writer's cast to json as webhook_capture: none
/// may make a function in schema webhook, where one could catch a call of
/// pg_webhook's SECURITY DEFINER functions. (With the SQL flavor, whose
/// owner is no superuser, they hold CREATE on the schema only inside the
/// ALTER that gives them their function.) Nor may PUBLIC call the
/// functions made for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_a_filter_nor_a_backfill_reader_can_make_a_function_in_schema_webhook() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start().await;
    let (name, admin) = db.login(&client, "planter", &["webhook_admin"]).await;
    client
        .batch_execute(&format!(
            "create function public.pgwh_plant() returns boolean language plpgsql as $$
             begin
                 create function webhook.planted() returns integer language sql return 1;
                 return true;
             end
             $$;
             create table plants (id int primary key);
             insert into plants values (1);
             select webhook_watch('plants');
             grant select on plants to {name}"
        ))
        .await
        .unwrap();
    pg_webhook_tests::let_owner_take(&client, &name).await;
    let planted = || async {
        client
            .query_one(
                "select to_regprocedure('webhook.planted()') is not null",
                &[],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
    };

    // The filter runs once, on an empty event, as it is made.
    let e = admin
        .query_one(
            "select endpoint_id from webhook_subscribe($1, filter => 'public.pgwh_plant()')",
            &[&receiver.url("/f")],
        )
        .await
        .expect_err("a filter that makes a function");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e}");
    assert!(!planted().await, "the filter made webhook.planted()");

    // A filter and a backfill made as they should be leave no role that
    // runs code of theirs with that right.
    subscribe_filtered(&admin, &receiver.url("/f"), "data->>'id' = '1'").await;
    db.subscribe(&client, &receiver.url("/b"), &["plants.*"], None)
        .await;
    admin
        .batch_execute("select webhook_backfill('plants')")
        .await
        .unwrap();
    let may_create: Vec<String> = pg_webhook_tests::column(
        &client,
        "select r from unnest(array['webhook_filter', $1]) r
         where has_schema_privilege(r, 'webhook', 'CREATE')
         union all
         select r.rolname::text from pg_roles r
         where r.rolname = 'webhook_capture' and has_schema_privilege(r.oid, 'webhook', 'CREATE')",
        &[&name],
    )
    .await;
    assert!(
        may_create.is_empty(),
        "{may_create:?} may make functions in schema webhook"
    );
    // And the functions made for them are granted to no one but whom they
    // are for (set before they are given away: with the SQL flavor, the
    // owner of pg_webhook is no superuser, and its REVOKE on a function of
    // another role did nothing).
    let public: Vec<String> = pg_webhook_tests::column(
        &client,
        "select p.oid::regprocedure::text from pg_proc p
         where p.pronamespace = 'webhook'::regnamespace
           and (p.proacl is null or exists (select from aclexplode(p.proacl) a where a.grantee = 0))",
        &[],
    )
    .await;
    assert!(public.is_empty(), "PUBLIC may call {public:?}");
    db.assert_invariants(&client).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_filters_function_is_dropped_once_the_fan_out_is_past_it() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::start().await;
    let endpoint = subscribe_filtered(
        &client,
        &receiver.url("/"),
        "(data->>'amount')::numeric > 100",
    )
    .await;
    for filter in [
        "(data->>'amount')::numeric > 200",
        "(data->>'amount')::numeric > 300",
    ] {
        client
            .execute(
                "select webhook_update($1, filter => $2)",
                &[&endpoint, &filter],
            )
            .await
            .unwrap();
    }
    let functions = || async {
        pg_webhook_tests::column::<String>(
            &client,
            "select p.proname::text from pg_proc p
             where p.pronamespace = 'webhook'::regnamespace and p.proname ~ '^_filter_[0-9]+$' order by p.oid",
            &[],
        )
        .await
    };
    let maintenance = || async {
        client
            .query_one(
                "select (webhook._maintenance_at(now())->>'filters_dropped')::int",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i32>(0)
    };
    let periods: Vec<i64> = pg_webhook_tests::column(
        &client,
        "select id from webhook.subscriptions where endpoint_id = $1 order by id",
        &[&endpoint],
    )
    .await;
    assert_eq!(periods.len(), 3);
    assert_eq!(functions().await.len(), 3);
    // Nothing fanned out yet: an event committed before a filter was
    // replaced may still need it.
    assert_eq!(maintenance().await, 0);
    assert_eq!(functions().await.len(), 3);

    // The fan-out passes the two ended periods once it has fanned out a
    // snapshot taken after their end with no transaction of before still
    // running (other tests' transactions in this cluster may hold it back
    // a while).
    pg_webhook_tests::within("the fan-out passing the replaced filters", async {
        loop {
            client
                .batch_execute("select webhook_publish('tick.one', '{\"amount\": 1}')")
                .await
                .unwrap();
            client
                .batch_execute("select webhook._fan_out(100)")
                .await
                .unwrap();
            let live: Vec<i64> =
                pg_webhook_tests::column(&client, "select unnest(webhook._filter_periods())", &[])
                    .await;
            if live == periods[2..] {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(maintenance().await, 2);
    assert_eq!(functions().await, [format!("_filter_{}", periods[2])]);
    let knows: Vec<i64> =
        pg_webhook_tests::column(&client, "select unnest(webhook._filter_match_knows())", &[])
            .await;
    assert_eq!(knows, periods[2..], "the dispatcher without their branches");
    assert_eq!(maintenance().await, 0, "nothing more to drop");

    // The live filter still decides, and no fan-out makes the dropped ones again.
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute(
            "select webhook_publish('order.paid', '{\"amount\": 150}');
             select webhook_publish('order.paid', '{\"amount\": 350}');",
        )
        .await
        .unwrap();
    db.wait_for(
        &client,
        "select count(*) = 1 from webhook.deliveries where status = 'succeeded'",
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;
    assert_eq!(amounts(&receiver), [350]);
    assert_eq!(functions().await, [format!("_filter_{}", periods[2])]);
    db.assert_invariants(&client).await;
    db.finish().await;
}
