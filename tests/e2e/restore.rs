//! pg_dump and restore keep everything, and webhook-ids stay unique across
//! databases and restores.

use pg_webhook_tests::{snapshot, OwnCluster, Receiver, RunningWorker, TestDb};
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_restored_into_a_fresh_database_carries_on() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    let (endpoint, secret) = db
        .subscribe(&client, &receiver.url("/a"), &["*"], None)
        .await;
    client
        .batch_execute(&format!(
            "create table orders (id int primary key); select webhook_watch('orders', event_prefix => 'order');
             select webhook_rotate_secret({endpoint}, '1 day');"
        ))
        .await
        .unwrap();
    // Finished deliveries: two events delivered by a worker.
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute("insert into orders values (1); select webhook_publish('order.noted', '{\"n\": 1}', 'key-1');")
        .await
        .unwrap();
    db.wait_deliveries(&client, "succeeded", 2, &mut worker.events)
        .await;
    worker.stop().await;
    // Pending work: a fanned-out delivery and events not fanned out yet
    // (three transactions: a fan-out never takes its own transaction's events).
    for sql in [
        "insert into orders values (2)",
        "select webhook._claim_deliveries('dump-test', 0, '1 minute', 1, '{}', '{}', 1000, 0)",
        "insert into orders values (3), (4)",
    ] {
        client.batch_execute(sql).await.unwrap();
    }
    let fanned_out: i64 = client
        .query_one(
            "select count(*) from webhook.deliveries where status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(fanned_out, 1);
    let before = snapshot(&client).await;
    assert_eq!(before.pending_or_unfanned, 3);
    let delivered_ids: HashSet<String> = receiver
        .requests()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();

    // The real tools of PostgreSQL 15: custom-format dump, restore into a
    // fresh database (the extension is created by the restore itself).
    let restored = db.dump_and_restore().await;

    let rclient = restored.client().await;
    let after = snapshot(&rclient).await;
    assert_eq!(
        after, before,
        "every endpoint, secret, subscription, event and delivery is there"
    );

    // Ids continue without collision, and new events get new webhook-ids.
    let new_id: i64 = rclient
        .query_one("select webhook_publish('order.noted', '{\"n\": 2}')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(new_id > before.max_event_id);
    let again: i64 = rclient
        .query_one(
            "select webhook_publish('order.noted', '{\"n\": 1}', 'key-1')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        again, before.key_1_event,
        "idempotency keys survive the restore"
    );

    // A worker on the restored database delivers what was pending, signed
    // with the restored secrets, and the new event.
    let mut worker = RunningWorker::start(restored.worker_config());
    let got = receiver.wait_for(2 + 4).await;
    restored
        .wait_deliveries(&rclient, "succeeded", 2 + 4, &mut worker.events)
        .await;
    worker.stop().await;
    restored.assert_invariants(&rclient).await;
    let new: Vec<_> = got[2..].iter().collect();
    let secret = pg_webhook_protocol::Secret::parse(&secret).unwrap();
    let mut seen = delivered_ids.clone();
    for r in &new {
        let id = r.header("webhook-id").unwrap();
        assert!(
            seen.insert(id.to_owned()),
            "webhook-id {id} was used before the restore"
        );
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        // Two signatures during the rotation's grace: the old secret's verifies.
        let sig = r.header("webhook-signature").unwrap();
        assert_eq!(sig.split(' ').count(), 2, "{sig}");
        assert!(pg_webhook_protocol::verify(
            &secret,
            id,
            ts,
            r.body.as_bytes(),
            sig
        ));
    }
    let restored_event_ids: Vec<String> = pg_webhook_tests::column(
        &rclient,
        "select webhook._message_id(txid, id, id_namespace) from webhook.events where id <= $1 order by id",
        &[&before.max_event_id],
    )
    .await;
    assert_eq!(
        restored_event_ids, before.message_ids,
        "a restored event keeps its webhook-id"
    );
    db.finish().await;
    restored.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_ids_differ_across_databases_and_reinstalls() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    let mut ids = HashSet::new();
    for db in [&a, &b] {
        let c = db.client().await;
        let id: i64 = c
            .query_one("select webhook_publish('x.y', '{}')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(id, 1, "each database counts from 1");
        assert!(
            ids.insert(db.message_id(&c, id).await),
            "same webhook-id in two databases"
        );
    }
    // Dropping and re-creating the extension starts the counters again, not
    // the ids. (The SQL flavor has no DROP EXTENSION.)
    if pg_webhook_tests::flavor() == pg_webhook_tests::Flavor::Sql {
        a.finish().await;
        b.finish().await;
        return;
    }
    let c = a.client().await;
    c.batch_execute("drop extension pg_webhook; create extension pg_webhook;")
        .await
        .unwrap();
    let c = a.client().await;
    let id: i64 = c
        .query_one("select webhook_publish('x.y', '{}')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 1);
    assert!(
        ids.insert(a.message_id(&c, id).await),
        "same webhook-id after a re-install"
    );
    a.finish().await;
    b.finish().await;
}

/// Every event's (id, webhook-id) in `dsn`'s database, in id order.
async fn event_ids(dsn: &str) -> Vec<(i64, String)> {
    pg_webhook_tests::connect(dsn)
        .await
        .query(
            "select id, webhook._message_id(txid, id, id_namespace) from webhook.events order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_backup_and_its_original_never_share_a_webhook_id() {
    // A physical copy shares everything with its original, event ids and
    // transaction ids included; once both run, they hand out the same
    // event ids to different events. Their webhook-ids must still differ,
    // or receivers (who deduplicate on them) would drop the copy's events.
    let original = OwnCluster::start();
    let admin = pg_webhook_tests::connect(&original.dsn("postgres")).await;
    admin.batch_execute("create database app").await.unwrap();
    let dsn = original.dsn("app");
    let c = pg_webhook_tests::connect(&dsn).await;
    pg_webhook_tests::install_over(&c).await;
    c.batch_execute(
        "select webhook_publish('order.noted', jsonb_build_object('n', n)) from generate_series(1, 3) n;",
    )
    .await
    .unwrap();
    let copy = original.base_backup();
    let copy_dsn = copy.dsn("app");
    let publish = "select webhook_publish('order.noted', jsonb_build_object('n', n)) from generate_series(1, 60) n";
    for dsn in [&dsn, &copy_dsn] {
        // Each from a session of its own, as after a restore.
        pg_webhook_tests::connect(dsn)
            .await
            .batch_execute(publish)
            .await
            .unwrap();
    }
    let (a, b) = (event_ids(&dsn).await, event_ids(&copy_dsn).await);
    assert_eq!(
        a[..3],
        b[..3],
        "the events from before the copy are the same events in both, with the same webhook-ids"
    );
    let (a, b) = (&a[3..], &b[3..]);
    let ids_a: HashSet<i64> = a.iter().map(|(id, _)| *id).collect();
    assert!(
        b.iter().any(|(id, _)| ids_a.contains(id)),
        "the copy hands out event ids the original also used (else this test proves nothing): {a:?} {b:?}"
    );
    let webhook_ids_a: HashSet<&String> = a.iter().map(|(_, m)| m).collect();
    let shared: Vec<&String> = b
        .iter()
        .map(|(_, m)| m)
        .filter(|m| webhook_ids_a.contains(m))
        .collect();
    assert!(
        shared.is_empty(),
        "webhook-ids written by both copies: {shared:?}"
    );
    for dsn in [&dsn, &copy_dsn] {
        let broken = pg_webhook_tests::connect(dsn)
            .await
            .query(
                "select object_id, invariant from webhook._invariant_violations()",
                &[],
            )
            .await
            .unwrap();
        assert!(broken.is_empty(), "invariants broken in {dsn}");
    }
}
