//! pg_webhook on a real Citus cluster: a coordinator and two worker nodes
//! (three clusters of this machine's PostgreSQL with `citus` preloaded),
//! one pg-webhook-worker per node, a distributed and a reference table, a
//! node added with a shard moved to it, a node restarted.
//!
//! Citus is in none of the registries this project installs from, so this
//! runs only where `citus.so` is installed for the PostgreSQL under test
//! (built by hand, see docs/production.md); elsewhere it says, by name,
//! that it was skipped.

use pg_webhook_tests::{has_library, within, OwnCluster, Receiver, RunningWorker};
use pg_webhook_worker::Config;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_postgres::Client;

const NAME: &str = "citus::extension_only_a_citus_cluster_captures_and_delivers_on_every_node";

async fn connect(node: &OwnCluster) -> Client {
    pg_webhook_tests::connect(&node.dsn("postgres")).await
}

/// A node of the cluster: Citus loaded and created, private targets allowed
/// (the receiver is on 127.0.0.1).
async fn start_node() -> (OwnCluster, Client) {
    let node = OwnCluster::start_with_settings(&[
        "shared_preload_libraries = 'citus'",
        "max_prepared_transactions = 100",
        "wal_level = logical",
        "citus.enable_statistics_collection = off",
    ]);
    let client = connect(&node).await;
    client
        .batch_execute(
            "create extension citus;
             alter database postgres set pg_webhook.allow_private_targets = on;",
        )
        .await
        .expect("create extension citus");
    // A session of its own, with the database's settings.
    let client = connect(&node).await;
    (node, client)
}

fn worker_for(node: &OwnCluster) -> RunningWorker {
    let mut config = Config::for_database(&node.dsn("postgres")).expect("a DSN");
    config.allow_private_targets = true;
    config.poll_interval = Duration::from_millis(500);
    RunningWorker::start(config)
}

/// The distribution column values (from `from`) that Citus places in `shard`.
async fn ids_in_shard(coordinator: &Client, shard: i64, from: i64, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut id = from;
    while ids.len() < n {
        let s: i64 = coordinator
            .query_one(
                "select get_shard_id_for_distribution_column('orders', $1::bigint)",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        if s == shard {
            ids.push(id);
        }
        id += 1;
    }
    ids
}

/// Returns once `sql` (one boolean) is true, asking again every 50 ms.
async fn until(client: &Client, sql: &str) {
    while !client.query_one(sql, &[]).await.unwrap().get::<_, bool>(0) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `id` of every row event the receiver got.
fn ids(receiver: &Receiver) -> BTreeSet<i64> {
    receiver
        .requests()
        .iter()
        .map(|r| r.json()["data"]["new"]["id"].as_i64().expect("a row id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_only_a_citus_cluster_captures_and_delivers_on_every_node() {
    if !has_library("citus.so") {
        // Straight to the process's stderr: the test harness keeps what
        // eprintln! prints from a passing test to itself.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {NAME}: citus.so is not installed for this PostgreSQL"
        );
        return;
    }
    let (coordinator, c0) = start_node().await;
    let (node1, c1) = start_node().await;
    let (node2, c2) = start_node().await;
    c0.batch_execute(&format!(
        "select citus_set_coordinator_host('127.0.0.1', {});
         select citus_add_node('127.0.0.1', {});
         select citus_add_node('127.0.0.1', {});
         create extension pg_webhook;
         select webhook_cluster_enable();",
        coordinator.port, node1.port, node2.port
    ))
    .await
    .expect("the cluster and pg_webhook");
    let receiver = Receiver::start().await;
    let row = c0
        .query_one(
            "select endpoint_id, signing_secret from webhook_subscribe($1, '{orders.*}')",
            &[&receiver.url("/")],
        )
        .await
        .unwrap();
    let (endpoint, secret): (i64, String) = (row.get(0), row.get(1));
    for node in [&c1, &c2] {
        let same: String = node
            .query_one(
                "select secret from webhook.endpoint_secrets where endpoint_id = $1",
                &[&endpoint],
            )
            .await
            .expect("the endpoint reached the node")
            .get(0);
        assert_eq!(same, secret);
    }

    // A distributed table is watched (its shards' triggers name it); a
    // reference table is refused (its trigger would fire on every node).
    for sql in [
        "create table orders (id bigint primary key, total int)",
        "select create_distributed_table('orders', 'id')",
        "select webhook_watch('orders')",
        "create table countries (code text primary key)",
        "select create_reference_table('countries')",
    ] {
        c0.batch_execute(sql).await.unwrap();
    }
    let refused = c0
        .batch_execute("select webhook_watch('countries')")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
    );

    let mut workers = vec![
        worker_for(&coordinator),
        worker_for(&node1),
        worker_for(&node2),
    ];
    // One distributed transaction across the nodes (two-phase commit), and
    // one rolled back.
    c0.batch_execute("insert into orders select g, g from generate_series(1, 20) g")
        .await
        .unwrap();
    c0.batch_execute("begin; insert into orders values (100, 1), (200, 2); rollback;")
        .await
        .unwrap();
    let got = receiver.wait_for(20).await;
    assert_eq!(ids(&receiver), (1..=20).collect());
    let webhook_ids: BTreeSet<&str> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(webhook_ids.len(), 20, "every node's ids are its own");
    for r in &got {
        assert_eq!(
            r.json()["data"]["table"],
            "orders",
            "the table, not its shard"
        );
    }

    // A node added later gets every endpoint before it gets a shard.
    let (node3, c3) = start_node().await;
    for sql in [
        format!("select citus_add_node('127.0.0.1', {})", node3.port),
        "select replicate_reference_tables()".to_owned(),
    ] {
        c0.batch_execute(&sql).await.unwrap();
    }
    // Until webhook_cluster_enable() runs again, the node lacks the
    // endpoint: its worker would warn (webhook._cluster_behind), and so do
    // the invariants.
    let behind: i64 = c3
        .query_one("select webhook._cluster_behind()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(behind, 1);
    c0.batch_execute("select webhook_cluster_enable()")
        .await
        .unwrap();
    let known: i64 = c3
        .query_one(
            "select count(*) from webhook.endpoints where id = $1",
            &[&endpoint],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(known, 1);
    workers.push(worker_for(&node3));
    let shard: i64 = c0
        .query_one(
            "select shardid from pg_dist_shard_placement p join pg_dist_shard s using (shardid)
             where s.logicalrelid = 'orders'::regclass and p.nodeport = $1 limit 1",
            &[&i32::from(node1.port)],
        )
        .await
        .unwrap()
        .get(0);
    c0.execute(
        "select citus_move_shard_placement($1, '127.0.0.1', $2, '127.0.0.1', $3, shard_transfer_mode => 'block_writes')",
        &[&shard, &i32::from(node1.port), &i32::from(node3.port)],
    )
    .await
    .expect("move a shard to the new node");
    let moved = ids_in_shard(&c0, shard, 1000, 3).await;
    for id in &moved {
        c0.execute("insert into orders values ($1, 0)", &[id])
            .await
            .unwrap();
    }
    receiver.wait_for(23).await;
    // Captured and delivered on the node the shard moved to (the receiver
    // may answer before the node's worker records it).
    within(
        "the new node's three deliveries recorded",
        until(
            &c3,
            "select count(*) = 3 from webhook.deliveries where status = 'succeeded'",
        ),
    )
    .await;

    // A node restarted as a crash would: its worker reconnects and what was
    // captured there goes out.
    node2.restart_immediately();
    let c2 = connect(&node2).await;
    // The coordinator's cached connection to it is gone: Citus fails the
    // first statement that uses it (nothing is written), as for any table.
    let insert = "insert into orders select g, g from generate_series(21, 40) g";
    if c0.batch_execute(insert).await.is_err() {
        c0.batch_execute(insert).await.unwrap();
    }
    receiver.wait_for(43).await;

    // Endpoints are managed on the coordinator only.
    let refused = c1
        .batch_execute("select webhook_subscribe('https://example.com/')")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED)
    );
    // A change that fails on one node changes nothing anywhere: a name
    // taken on node 2 alone (made there behind the cluster's back).
    c2.batch_execute(
        "set pg_webhook_cluster.applying = on;
         select webhook_subscribe('https://example.com/', name => 'taken');",
    )
    .await
    .unwrap();
    let failed = c0
        .execute("select webhook_update($1, name => 'taken')", &[&endpoint])
        .await
        .unwrap_err();
    assert_eq!(
        failed.code(),
        Some(&tokio_postgres::error::SqlState::DUPLICATE_OBJECT),
        "{failed:?}"
    );
    for node in [&c0, &c1, &c3] {
        let name: String = node
            .query_one(
                "select name from webhook.endpoints where id = $1",
                &[&endpoint],
            )
            .await
            .unwrap()
            .get(0);
        assert_ne!(name, "taken");
    }
    c2.batch_execute(
        "set pg_webhook_cluster.applying = on;
         select webhook_unsubscribe((select id from webhook.endpoints where name = 'taken'));
         reset pg_webhook_cluster.applying;",
    )
    .await
    .unwrap();

    // Analysts read every node's log and health on the coordinator.
    for node in [&c0, &c1, &c2, &c3] {
        within(
            "every delivery recorded",
            until(node, "select count(*) = 0 from webhook.deliveries_open"),
        )
        .await;
    }
    let logged: i64 = c0
        .query_one(
            "select count(distinct (node_id, (log).delivery_id)) from webhook.cluster_delivery_log()
             where (log).status = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(logged, 43);
    let health: i64 = c0
        .query_one(
            "select count(distinct node_id) from webhook.cluster_endpoint_health()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(health, 4);

    // An endpoint change on the coordinator reaches every node.
    c0.execute("select webhook_pause($1)", &[&endpoint])
        .await
        .unwrap();
    for node in [&c0, &c1, &c2, &c3] {
        let paused: bool = node
            .query_one(
                "select paused_at is not null from webhook.endpoints where id = $1",
                &[&endpoint],
            )
            .await
            .unwrap()
            .get(0);
        assert!(paused);
    }
    // A filter: each node makes its own function, for its own period (Citus
    // propagates none of it, and would refuse it on a worker node).
    c0.execute(
        "select webhook_update($1, filter => 'data->>''table'' = ''orders''')",
        &[&endpoint],
    )
    .await
    .unwrap();
    for node in [&c0, &c1, &c2, &c3] {
        let made: i64 = node
            .query_one(
                "select count(*) from webhook.subscriptions s
                 where s.endpoint_id = $1 and s.until_txid is null and s.filter is not null
                   and to_regprocedure(format('webhook.%I(jsonb, text)', webhook._filter_name(s.id))) is not null",
                &[&endpoint],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(made, 1);
    }
    for worker in workers {
        worker.stop().await;
    }
    // Unwatched on every shard, without the DBA telling Citus anything.
    let unwatched: bool = c0
        .query_one("select webhook_unwatch('orders')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(unwatched);
    let events = "select count(*) from webhook.events where event_type like 'orders.%'";
    let mut before = Vec::new();
    for node in [&c1, &c2, &c3] {
        before.push(node.query_one(events, &[]).await.unwrap().get::<_, i64>(0));
    }
    c0.batch_execute("insert into orders select g, g from generate_series(2001, 2020) g")
        .await
        .unwrap();
    for (node, before) in [&c1, &c2, &c3].into_iter().zip(before) {
        let after: i64 = node.query_one(events, &[]).await.unwrap().get(0);
        assert_eq!(after, before, "nothing captured once unwatched");
    }
    let mut expected: BTreeSet<i64> = (1..=40).collect();
    expected.extend(moved);
    assert_eq!(ids(&receiver), expected);
    for node in [&c0, &c1, &c2, &c3] {
        let violations: i64 = node
            .query_one("select count(*) from webhook._invariant_violations()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(violations, 0);
    }
}
