//! A Citus cluster's endpoints: the state the coordinator publishes for
//! each endpoint change, applied on every node. Citus carries it (a
//! reference table, its trigger on every node, one two-phase transaction);
//! here databases of one cluster stand in for the nodes and the test
//! carries it, so the rule is checked on every machine. tests/e2e/citus.rs
//! runs the real thing where Citus is installed.

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};
use tokio_postgres::Client;

/// The coordinator's state of `endpoint`, applied on each node; returns
/// whether each node changed.
async fn carry(coordinator: &Client, nodes: &[&Client], endpoint: i64) -> Vec<bool> {
    let state: serde_json::Value = coordinator
        .query_one("select webhook._endpoint_state($1)", &[&endpoint])
        .await
        .unwrap()
        .get(0);
    let mut changed = Vec::new();
    for node in nodes {
        changed.push(
            node.query_one("select webhook._apply_endpoint_state($1)", &[&state])
                .await
                .unwrap()
                .get(0),
        );
    }
    changed
}

/// Every node's state of `endpoint` is the coordinator's.
async fn assert_same(coordinator: &Client, nodes: &[&Client], endpoint: i64) {
    let sql = "select webhook._endpoint_state($1)";
    let want: serde_json::Value = coordinator
        .query_one(sql, &[&endpoint])
        .await
        .unwrap()
        .get(0);
    for node in nodes {
        let got: serde_json::Value = node.query_one(sql, &[&endpoint]).await.unwrap().get(0);
        assert_eq!(got, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_change_applied_on_the_nodes_makes_the_same_endpoints() {
    let (a, b, c) = (
        TestDb::new().await,
        TestDb::new().await,
        TestDb::new().await,
    );
    let (ca, cb, cc) = (a.client().await, b.client().await, c.client().await);
    let nodes = [&cb, &cc];
    // A node's sessions may show times and intervals otherwise: the states
    // compare all the same.
    cb.batch_execute("set timezone = 'Asia/Kolkata'; set intervalstyle = 'iso_8601'")
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    let (id, _) = a
        .subscribe(&ca, &receiver.url("/first"), &["order.*"], None)
        .await;
    assert_eq!(carry(&ca, &nodes, id).await, [true, true], "created");
    assert_eq!(
        carry(&ca, &nodes, id).await,
        [false, false],
        "applied twice, changed once"
    );
    assert_same(&ca, &nodes, id).await;

    // Settings, secret and state, each as the API changed it there.
    let rotated: String = ca
        .query_one("select webhook_rotate_secret($1, '1 hour')", &[&id])
        .await
        .unwrap()
        .get(0);
    ca.batch_execute(&format!(
        "select webhook_update({id}, url => '{}', event_types => '{{order.*,invoice.paid}}',
                                 headers => '{{\"x-tenant\": \"7\"}}', retry_policy => '{{\"max_attempts\": 3}}',
                                 filter => 'data->>''tenant'' = ''7''');
         select webhook_pause({id});",
        receiver.url("/second")
    ))
    .await
    .unwrap();
    assert_eq!(carry(&ca, &nodes, id).await, [true, true]);
    assert_same(&ca, &nodes, id).await;
    // A node keeps its own subscription history (its own transactions).
    let periods: i64 = cb
        .query_one(
            "select count(*) from webhook.subscriptions where endpoint_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        periods, 2,
        "the new event types and filter opened a period on the node"
    );
    let filter: String = cb
        .query_one(
            "select filter from webhook.subscriptions where endpoint_id = $1 and until_txid is null",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        filter, "data->>'tenant' = '7'",
        "with the node's own filter function"
    );

    // Held on the node as on the coordinator; resumed, it sends what waited,
    // signed with the coordinator's (rotated) secret, to the new URL.
    // (Another tenant's event first: the node applies the filter.)
    cb.batch_execute(
        "select webhook_publish('invoice.paid', '{\"n\": 0, \"tenant\": \"8\"}');
         select webhook_publish('invoice.paid', '{\"n\": 1, \"tenant\": \"7\"}');",
    )
    .await
    .unwrap();
    let mut worker = RunningWorker::start(b.worker_config());
    b.wait_deliveries(&cb, "paused", 1, &mut worker.events)
        .await;
    ca.batch_execute(&format!("select webhook_resume({id})"))
        .await
        .unwrap();
    assert_eq!(carry(&ca, &nodes, id).await, [true, true]);
    let got = receiver.wait_for(1).await;
    b.wait_deliveries(&cb, "succeeded", 1, &mut worker.events)
        .await;
    worker.stop().await;
    let request = &got[0];
    assert_eq!(request.path, "/second");
    assert_eq!(request.header("x-tenant"), Some("7"));
    let secret = pg_webhook_protocol::Secret::parse(&rotated).unwrap();
    assert!(pg_webhook_protocol::verify(
        &secret,
        request.header("webhook-id").unwrap(),
        request
            .header("webhook-timestamp")
            .unwrap()
            .parse()
            .unwrap(),
        request.body.as_bytes(),
        request.header("webhook-signature").unwrap(),
    ));

    // Disabled on the coordinator: held on every node, and the
    // webhook.endpoint.disabled event is the coordinator's alone.
    ca.batch_execute(&format!("select webhook_update({id}, is_active => false)"))
        .await
        .unwrap();
    assert_eq!(carry(&ca, &nodes, id).await, [true, true]);
    assert_same(&ca, &nodes, id).await;
    let disabled_events =
        "select count(*) from webhook.events where event_type = 'webhook.endpoint.disabled'";
    for (client, want) in [(&ca, 1), (&cb, 0), (&cc, 0)] {
        let n: i64 = client.query_one(disabled_events, &[]).await.unwrap().get(0);
        assert_eq!(n, want);
    }

    // Removed; and a node that never knew an endpoint removed before it
    // joined does not create it.
    let (gone, _) = a.subscribe(&ca, &receiver.url("/gone"), &["*"], None).await;
    ca.batch_execute(&format!(
        "select webhook_unsubscribe({id}); select webhook_unsubscribe({gone});"
    ))
    .await
    .unwrap();
    assert_eq!(carry(&ca, &nodes, id).await, [true, true]);
    assert_same(&ca, &nodes, id).await;
    assert_eq!(carry(&ca, &nodes, gone).await, [false, false]);

    // Ids stay the coordinator's: a node's own sequence moved past them.
    let next: i64 = cc
        .query_one(
            "select nextval(pg_get_serial_sequence('webhook.endpoints', 'id'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(next > id, "{next} <= {id}");

    for (db, client) in [(&a, &ca), (&b, &cb), (&c, &cc)] {
        db.assert_invariants(client).await;
    }
    a.finish().await;
    b.finish().await;
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_citus_an_endpoint_change_publishes_nothing() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let (id, _) = db
        .subscribe(&client, "https://example.com/", &["*"], None)
        .await;
    client
        .batch_execute(&format!(
            "select webhook_pause({id}); select webhook_rotate_secret({id});"
        ))
        .await
        .unwrap();
    let published: i64 = client
        .query_one("select count(*) from webhook.cluster_endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, 0);
    let refused = client
        .batch_execute("select webhook_cluster_enable()")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED),
        "{refused:?}"
    );
    db.finish().await;
}
