//! Ordered delivery per key (issue 19, item 1), end to end: writers that
//! update the same rows concurrently, two worker processes SIGKILLed in
//! turn, a receiver that fails and stalls; each key's events arrive in the
//! order the database serialized them. And a poison event that blocks its
//! key and nothing else, resumed or skipped.

use pg_webhook_protocol::{verify, Secret};
use pg_webhook_tests::{
    connect, examples_python, KilledInTurn, Received, Receiver, RunningWorker, TestDb,
};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const ROWS: i32 = 12;
const WRITERS: i32 = 4;
const UPDATES_PER_WRITER: i32 = 30;

/// Checks that, per key, the counter `n` each request carries never goes
/// down in arrival order (a redelivery repeats the last one, as
/// at-least-once allows, and nothing of its key goes past it), that every
/// request is signed, and that each key's counters 1..=last all arrived.
/// `key_of` picks a request's key and counter from its body.
fn assert_in_order(
    requests: &[Received],
    secret: &Secret,
    last: &HashMap<String, i64>,
    key_of: impl Fn(&serde_json::Value) -> Option<(String, i64)>,
) {
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for r in requests {
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!(
            verify(
                secret,
                r.header("webhook-id").unwrap(),
                ts,
                r.body.as_bytes(),
                r.header("webhook-signature").unwrap()
            ),
            "every request is signed"
        );
        if let Some((key, n)) = key_of(&r.json()) {
            seen.entry(key).or_default().push(n);
        }
    }
    for (key, last) in last {
        let ns = seen.get(key).cloned().unwrap_or_default();
        assert!(
            ns.windows(2).all(|w| w[0] <= w[1]),
            "key {key} arrived out of order: {ns:?}"
        );
        let distinct: HashSet<i64> = ns.iter().copied().collect();
        assert_eq!(
            distinct,
            (1..=*last).collect::<HashSet<i64>>(),
            "key {key}: every event once at least"
        );
    }
}

/// Verifies every request with the official Standard Webhooks package (the
/// Python examples' `standardwebhooks`), as a receiver would.
fn assert_verified_by_the_official_package(requests: &[Received], secret: &str) {
    use std::io::Write;
    let script = "import json, sys, standardwebhooks\n\
                  wh = standardwebhooks.Webhook(sys.argv[1])\n\
                  n = 0\n\
                  for line in sys.stdin:\n\
                  \x20   r = json.loads(line)\n\
                  \x20   wh.verify(r['body'], r['headers'])\n\
                  \x20   n += 1\n\
                  print(n)\n";
    let mut child = std::process::Command::new(examples_python())
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the examples' Python (tests/run.sh sets it up)");
    {
        let mut stdin = child.stdin.take().unwrap();
        for r in requests {
            let headers: serde_json::Map<String, serde_json::Value> =
                ["webhook-id", "webhook-timestamp", "webhook-signature"]
                    .iter()
                    .map(|h| (h.to_string(), r.header(h).unwrap().into()))
                    .collect();
            writeln!(
                stdin,
                "{}",
                serde_json::json!({"body": r.body, "headers": headers})
            )
            .unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the official verifier refused a request"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        requests.len().to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_arrives_in_commit_order_through_concurrent_writers_chaos_and_killed_workers() {
    let db = TestDb::new().await;
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "create table accounts (id integer primary key, n integer not null default 0);
             insert into accounts (id) select generate_series(1, {ROWS});
             select webhook_watch('accounts', '{{update}}', 'account', key_columns => '{{id}}');"
        ))
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    // Every fourth request fails, every eleventh stalls past the timeout.
    receiver.set_chaos(4, 11, Duration::from_millis(1300));
    let secret: String = admin
        .query_one(
            r#"select signing_secret from webhook_subscribe($1, ordered => true, timeout => '1 second',
                   retry_policy => '{"max_attempts": 60, "initial_delay": "20 milliseconds", "max_delay": "200 milliseconds"}')"#,
            &[&receiver.url("/ordered")],
        )
        .await
        .unwrap()
        .get(0);

    // Two workers, each SIGKILLed and restarted in turn every 2 s.
    let workers = KilledInTurn::start(&db.dsn, "ordered", Duration::from_millis(2000));

    // Writers updating the same rows at once: each transaction bumps a
    // row's counter (the row's lock orders them) and publishes an event
    // keyed by the row with the same counter, and half of them first take
    // the row's lock and wait a little, so that others queue behind.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let dsn = db.dsn.clone();
        writers.push(tokio::spawn(async move {
            let c = connect(&dsn).await;
            for i in 0..UPDATES_PER_WRITER {
                let id = 1 + (w * 7 + i * 5) % ROWS;
                let pause = if i % 2 == 0 { "select pg_sleep(0.005);" } else { "" };
                c.batch_execute(&format!(
                    "begin;
                     select txid_current();
                     select from accounts where id = {id} for update;
                     {pause}
                     with u as (update accounts set n = n + 1 where id = {id} returning n)
                     select webhook_publish('account.noted', jsonb_build_object('id', {id}, 'n', u.n),
                                            ordering_key => 'account-{id}')
                     from u;
                     commit;"
                ))
                .await
                .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = i64::from(WRITERS * UPDATES_PER_WRITER);

    // Every event (an update and a published one per transaction) ends
    // succeeded, within a bound (longer than WAIT: a key's events go one at
    // a time through the chaos, and every kill holds its keys for a lease).
    let deadline = std::time::Instant::now() + Duration::from_secs(150);
    loop {
        let succeeded: i64 = admin
            .query_one(
                "select count(*) from webhook.deliveries where status = 'succeeded'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if succeeded == 2 * total {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 150 s, {succeeded} of {} deliveries succeeded: {}",
            2 * total,
            db.describe_deliveries(&admin).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kills = workers.stop().await;
    assert!(kills >= 2, "the workers were killed {kills} times");
    let gave_up: i64 = admin
        .query_one(
            "select count(*) from webhook.deliveries where status <> 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gave_up, 0, "every delivery succeeded");

    let last: HashMap<String, i64> = admin
        .query("select id, n from accounts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, i32>(0).to_string(),
                i64::from(r.get::<_, i32>(1)),
            )
        })
        .collect();
    assert_eq!(last.values().sum::<i64>(), total);
    let requests = receiver.requests();
    assert_verified_by_the_official_package(&requests, &secret);
    let secret = Secret::parse(&secret).unwrap();
    // The row events (key: the table and primary key) ...
    assert_in_order(&requests, &secret, &last, |body| {
        (body["type"] == "account.updated").then(|| {
            let new = &body["data"]["new"];
            (new["id"].to_string(), new["n"].as_i64().unwrap())
        })
    });
    // ... and the published ones (key: ordering_key).
    assert_in_order(&requests, &secret, &last, |body| {
        (body["type"] == "account.noted").then(|| {
            let data = &body["data"];
            (data["id"].to_string(), data["n"].as_i64().unwrap())
        })
    });
    // Keys went on in parallel: some key's event arrived before an earlier
    // event of another key had (the order is per key, not per endpoint).
    let firsts: Vec<i64> = requests
        .iter()
        .filter_map(|r| {
            let body = r.json();
            (body["type"] == "account.updated").then(|| body["data"]["new"]["n"].as_i64().unwrap())
        })
        .collect();
    assert!(
        firsts.windows(2).any(|w| w[0] > w[1]),
        "events of different keys interleave"
    );
    db.assert_invariants(&admin).await;
    db.finish().await;
}

/// The `name` in the data of every request, in arrival order.
fn arrivals(receiver: &Receiver) -> Vec<String> {
    receiver
        .requests()
        .iter()
        .map(|r| r.json()["data"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_blocks_its_key_and_nothing_else_until_resumed_or_skipped() {
    let db = TestDb::new().await;
    let admin = db.client().await;
    let receiver = Receiver::start().await;
    receiver.refuse_bodies_with(Some("poison"));
    let endpoint: i64 = admin
        .query_one(
            r#"select endpoint_id from webhook_subscribe($1, ordered => true,
                   retry_policy => '{"max_attempts": 3, "initial_delay": "10 milliseconds", "max_delay": "20 milliseconds"}')"#,
            &[&receiver.url("/ordered")],
        )
        .await
        .unwrap()
        .get(0);
    admin
        .batch_execute(
            "select webhook_publish('thing.happened', jsonb_build_object('name', n), ordering_key => left(n, 1))
             from unnest(array['a1', 'b1', 'a2-poison', 'b2', 'a3', 'b3']) n;",
        )
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_for(
        &admin,
        "select count(*) filter (where status = 'succeeded') = 4 and count(*) filter (where status = 'failed') = 1
         from webhook.deliveries",
        Some(&mut worker.events),
    )
    .await;
    // Key a is blocked behind its poison event, key b went on.
    let blocked = admin
        .query_one(
            "select endpoint_id, ordering_key, waiting, last_status_code from webhook.blocked_keys",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(blocked.get::<_, i64>(0), endpoint);
    assert_eq!(blocked.get::<_, &str>(1), "a");
    assert_eq!(blocked.get::<_, i64>(2), 1, "a3 waits");
    assert_eq!(blocked.get::<_, Option<i32>>(3), Some(500));
    let status: String = admin
        .query_one(
            "select d.status::text from webhook.deliveries d join webhook.events e on e.id = d.event_id
             where e.payload->>'name' = 'a3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "waiting");
    let seen = arrivals(&receiver);
    let b: Vec<&String> = seen.iter().filter(|n| n.starts_with('b')).collect();
    assert_eq!(b, ["b1", "b2", "b3"], "key b in order, once each");
    assert_eq!(
        seen.iter().filter(|n| *n == "a2-poison").count(),
        3,
        "three attempts"
    );
    assert!(
        !seen.iter().any(|n| n == "a3"),
        "nothing of key a after the poison"
    );
    assert_eq!(
        seen.iter().position(|n| n == "a1"),
        seen.iter().position(|n| n.starts_with('a')),
        "a1 first of its key"
    );

    // Resumed: the receiver was fixed; the poison event goes again first, then a3.
    receiver.refuse_bodies_with(None);
    let resumed: i32 = admin
        .query_one("select webhook_unblock($1, 'a')", &[&endpoint])
        .await
        .unwrap()
        .get(0);
    assert_eq!(resumed, 1);
    db.wait_for(
        &admin,
        "select count(*) filter (where status = 'succeeded') = 6 from webhook.deliveries",
        Some(&mut worker.events),
    )
    .await;
    let seen = arrivals(&receiver);
    let a: Vec<&String> = seen.iter().filter(|n| n.starts_with('a')).collect();
    assert_eq!(
        a,
        [
            "a1",
            "a2-poison",
            "a2-poison",
            "a2-poison",
            "a2-poison",
            "a3"
        ]
    );
    assert_eq!(
        admin
            .query_one("select count(*) from webhook.blocked_keys", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0
    );

    // With on_exhausted => 'skip', a poison event fails alone and its key goes on.
    receiver.refuse_bodies_with(Some("poison"));
    admin
        .batch_execute(&format!(
            "select webhook_update({endpoint}, on_exhausted => 'skip');
             select webhook_publish('thing.happened', jsonb_build_object('name', n), ordering_key => left(n, 1))
             from unnest(array['c1-poison', 'c2']) n;"
        ))
        .await
        .unwrap();
    db.wait_for(
        &admin,
        "select count(*) filter (where status = 'succeeded') = 7 and count(*) filter (where status = 'failed') = 2
         from webhook.deliveries",
        Some(&mut worker.events),
    )
    .await;
    let seen = arrivals(&receiver);
    let c: Vec<&String> = seen.iter().filter(|n| n.starts_with('c')).collect();
    assert_eq!(c, ["c1-poison", "c1-poison", "c1-poison", "c2"]);
    assert_eq!(
        admin
            .query_one("select count(*) from webhook.blocked_keys", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        0,
        "skipped, not blocked"
    );
    worker.stop().await;
    db.assert_invariants(&admin).await;
    db.finish().await;
}

/// Claims as worker 'chunks' (fanning out at most one event's transaction
/// first): (endpoint, event, delivery, lease token) of each delivery claimed.
async fn claim_one_chunk(c: &tokio_postgres::Client) -> Vec<(i64, i64, i64, i64)> {
    c.query(
        "select endpoint_id, event_id, delivery_id, lease_token
         from webhook._claim_deliveries('chunks', 10, '1 minute', 10, '{}', '{}', 1, 1000000)
         where row_kind = 'delivery'",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_event_fanned_out_in_a_later_chunk_still_goes_first() {
    let db = TestDb::new().await;
    let admin = db.client().await;
    admin
        .batch_execute(
            "create table t (id integer primary key, n integer);
             insert into t values (1, 0);
             select webhook_watch('t', '{update}');",
        )
        .await
        .unwrap();
    let subscribe = |ordered: bool| {
        let admin = &admin;
        async move {
            admin
                .query_one(
                    "select endpoint_id from webhook_subscribe('http://127.0.0.1:9/', ordered => $1)",
                    &[&ordered],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let ordered = subscribe(true).await;
    let unordered = subscribe(false).await;

    // B takes its transaction id first, then waits for A's lock on the row:
    // A's event has the lower id and the higher transaction id.
    let a = db.client().await;
    let b = db.client().await;
    b.batch_execute("begin; select txid_current();")
        .await
        .unwrap();
    a.batch_execute("begin; select txid_current(); update t set n = 1 where id = 1;")
        .await
        .unwrap();
    let b = tokio::spawn(async move {
        b.batch_execute("update t set n = 2 where id = 1; commit;")
            .await
            .unwrap();
        b
    });
    db.wait_for(
        &admin,
        "select exists (select from pg_stat_activity
                        where datname = current_database() and wait_event_type = 'Lock')",
        None,
    )
    .await;
    a.batch_execute("commit").await.unwrap();
    drop(b.await.unwrap());
    let events: Vec<(i64, i64, String)> = admin
        .query(
            "select id, txid, payload::jsonb->'new'->>'n' from webhook.events order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(events.len(), 2);
    let (first, second) = (&events[0], &events[1]);
    assert_eq!((first.2.as_str(), second.2.as_str()), ("1", "2"));
    assert!(
        first.1 > second.1,
        "A's transaction id is the higher: {events:?}"
    );

    // Fanned out one transaction per chunk: B's event (the lower
    // transaction id) first. The unordered endpoint gets it at once; the
    // ordered one gets nothing until A's event, in the next chunk, took
    // its place, and the batch ended.
    let mut claimed = Vec::new();
    for _ in 0..5 {
        claimed.extend(claim_one_chunk(&admin).await);
    }
    let of = |endpoint: i64| -> Vec<i64> {
        claimed
            .iter()
            .filter(|c| c.0 == endpoint)
            .map(|c| c.1)
            .collect()
    };
    assert_eq!(
        of(unordered),
        [second.0, first.0],
        "the chunks did put B's event first"
    );
    assert_eq!(of(ordered), [first.0], "A's event, and only it, goes first");

    // A's succeeds: B's is next.
    let (_, _, delivery, token) = *claimed.iter().find(|c| c.0 == ordered).unwrap();
    admin
        .execute(
            "select webhook._record_attempts('chunks', array[$1::bigint], array[$2::bigint], array[$3::bigint],
                 array[1], array[now()], array[1.0::float8], array[200], array[''], array[null::text],
                 array['succeeded'], array[0::bigint])",
            &[&delivery, &token, &ordered],
        )
        .await
        .unwrap();
    let next: Vec<i64> = claim_one_chunk(&admin)
        .await
        .iter()
        .filter(|c| c.0 == ordered)
        .map(|c| c.1)
        .collect();
    assert_eq!(next, [second.0]);
    db.assert_invariants(&admin).await;
    db.finish().await;
}
