//! Chaos, in bounded time: two worker processes SIGKILLed in turn every
//! couple of seconds, an immediate (crash) restart of PostgreSQL, a
//! receiver that answers 500 to a third of the requests and stalls past the
//! endpoint's timeout on some, producers committing and rolling back.
//! Every committed event arrives signed, no rolled-back one does, and every
//! delivery ends `succeeded`.

use pg_webhook_protocol::{verify, Secret};
use pg_webhook_tests::{KilledInTurn, OwnCluster, Receiver};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

const TRANSACTIONS: i64 = 150;
const EVENTS_PER_TX: i64 = 10;
/// Every fifth transaction rolls back.
const ROLLBACK_EVERY: i64 = 5;

async fn connect(dsn: &str) -> Option<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls).await.ok()?;
    tokio::spawn(connection);
    Some(client)
}

/// One producer transaction: `tx`'s events, and its row in the ledger when
/// it is meant to commit. Returns whether it committed. After an error (the
/// restart) the ledger says whether the commit happened.
async fn produce(dsn: &str, tx: i64) -> bool {
    let commit = tx % ROLLBACK_EVERY != ROLLBACK_EVERY - 1;
    loop {
        if let Some(c) = connect(dsn).await {
            let sql = format!(
                "begin;
                 {ledger}
                 select webhook_publish('chaos.item', jsonb_build_object('tx', {tx}, 'i', i))
                 from generate_series(1, {EVENTS_PER_TX}) i;
                 {end};",
                ledger = if commit {
                    format!("insert into ledger values ({tx});")
                } else {
                    String::new()
                },
                end = if commit { "commit" } else { "rollback" },
            );
            match c.batch_execute(&sql).await {
                Ok(()) => return commit,
                Err(_) => {
                    // Did the commit happen before the connection went?
                    if let Some(c) = connect(dsn).await {
                        if let Ok(row) = c
                            .query_one("select count(*) from ledger where tx = $1", &[&tx])
                            .await
                        {
                            if row.get::<_, i64>(0) == 1 {
                                return true;
                            }
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_survive_killed_workers_a_crash_restart_and_a_flaky_receiver() {
    let cluster = OwnCluster::start();
    let dsn = cluster.dsn("postgres");
    let receiver = Receiver::start().await;
    receiver.set_chaos(3, 11, Duration::from_millis(1500));
    let admin = connect(&dsn).await.expect("connect");
    pg_webhook_tests::install_over(&admin).await;
    admin
        .batch_execute("create table ledger (tx bigint primary key);")
        .await
        .unwrap();
    let secret: String = admin
        .query_one(
            r#"select signing_secret from webhook_subscribe($1, timeout => '1 second',
                   retry_policy => '{"max_attempts": 40, "initial_delay": "50 milliseconds", "max_delay": "300 milliseconds"}')"#,
            &[&receiver.url("/chaos")],
        )
        .await
        .unwrap()
        .get(0);
    drop(admin);

    // Two workers, one of them SIGKILLed and restarted every 1.5 s in turn.
    let workers = KilledInTurn::start(&dsn, "chaos", Duration::from_millis(1500));

    // Producers, with a crash restart of the server halfway.
    let mut committed = HashSet::new();
    let mut rolled_back = HashSet::new();
    for tx in 0..TRANSACTIONS {
        if tx == TRANSACTIONS / 2 {
            cluster.restart_immediately();
        }
        if produce(&dsn, tx).await {
            committed.insert(tx);
        } else {
            rolled_back.insert(tx);
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let expected = committed.len() as i64 * EVENTS_PER_TX;

    // Everything committed ends succeeded, within a bound.
    let client = connect(&dsn).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let row = client
            .query_one(
                "select (select count(*) from webhook.events where event_type = 'chaos.item'),
                        (select count(*) from webhook.deliveries where status = 'succeeded'),
                        (select count(*) from webhook.deliveries where status in ('failed', 'cancelled'))",
                &[],
            )
            .await
            .unwrap();
        let (events, succeeded, gave_up): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(gave_up, 0, "a delivery ended failed or cancelled");
        if events == expected && succeeded == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 150 s: {events} events and {succeeded} succeeded deliveries of {expected}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kills = workers.stop().await;
    assert!(kills >= 5, "the workers were killed {kills} times");
    let restarts: i64 = client
        .query_one(
            "select count(distinct worker_id) from webhook.attempts",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(restarts >= 2, "both workers delivered");

    // What arrived: every committed event, signed; nothing rolled back.
    let secret = Secret::parse(&secret).unwrap();
    let mut seen: HashMap<(i64, i64), usize> = HashMap::new();
    for r in receiver.requests() {
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!(
            verify(
                &secret,
                r.header("webhook-id").unwrap(),
                ts,
                r.body.as_bytes(),
                r.header("webhook-signature").unwrap()
            ),
            "every request is signed"
        );
        let data = &r.json()["data"];
        let key = (data["tx"].as_i64().unwrap(), data["i"].as_i64().unwrap());
        assert!(
            !rolled_back.contains(&key.0),
            "a rolled-back event arrived: {key:?}"
        );
        *seen.entry(key).or_default() += 1;
    }
    for tx in &committed {
        for i in 1..=EVENTS_PER_TX {
            assert!(
                seen.contains_key(&(*tx, i)),
                "committed event {tx}/{i} never arrived"
            );
        }
    }
    assert_eq!(seen.len() as i64, expected);
    // The cluster is the test's own: its invariants checked here, the
    // cluster removed when dropped.
    let c = connect(&dsn).await.expect("the cluster is up");
    let broken: Vec<(i64, String)> = c
        .query(
            "select object_id, invariant from webhook._invariant_violations()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(broken.is_empty(), "invariants broken: {broken:?}");
}
