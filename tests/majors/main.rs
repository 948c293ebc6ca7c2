//! Across PostgreSQL majors: a database with pg_webhook in use on the old
//! major (endpoints, a secret in its rotation grace, a finished log, and
//! pending deliveries, some attempted already) moved to a newer one with
//! that major's real `pg_upgrade`, or with its `pg_dump` and `pg_restore`:
//! everything is there after, a worker delivers what was pending, and an
//! event attempted before keeps its webhook-id.
//!
//! Needs clusters of two majors, so it is not part of a plain `cargo test`
//! (`test = false`): tests/run.sh runs it with `PG_WEBHOOK_UPGRADE_FROM`
//! (the old major's bin directory: PyPI's 15, since Debian's 15 cannot be
//! pg_upgraded to PyPI's 18) and `PG_WEBHOOK_UPGRADE_TO` (the newer majors'
//! bin directories, space-separated), each with the extension installed.

use pg_webhook_tests::{
    attempt_due_once, connect, pg_tool_of, snapshot, OwnCluster, Receiver, RunningWorker, Snapshot,
    TestDb,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The bin directories named by `var` (space-separated).
fn bins(var: &str) -> Vec<PathBuf> {
    let value = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run this test with `bash tests/run.sh` (see tests/majors/main.rs)"
        )
    });
    let bins: Vec<PathBuf> = value.split_whitespace().map(PathBuf::from).collect();
    assert!(!bins.is_empty(), "{var} names no directory");
    for bin in &bins {
        assert!(
            bin.join("postgres").exists(),
            "{var}: no postgres in {}",
            bin.display()
        );
    }
    bins
}

/// Creates database `app` in `cluster`, private targets allowed (the
/// receiver is on 127.0.0.1).
async fn create_app_database(cluster: &OwnCluster) {
    let admin = connect(&cluster.dsn("postgres")).await;
    for sql in [
        "create database app",
        "alter database app set pg_webhook.allow_private_targets = on",
    ] {
        admin.batch_execute(sql).await.expect(sql);
    }
}

/// The major of the server `c` is connected to.
async fn server_major(c: &tokio_postgres::Client) -> i32 {
    c.query_one(
        "select current_setting('server_version_num')::int / 10000",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// What the old cluster held before it moved.
struct Before {
    snapshot: Snapshot,
    /// The signing secret the endpoint was created with.
    secret: String,
    /// Webhook-ids of the events whose deliveries were pending, by event id
    /// (their receivers had seen them once already for the attempted ones).
    pending: BTreeMap<i64, String>,
    /// Of those, how many were attempted once.
    attempted: i64,
    /// The old server's major.
    major: i32,
}

/// A cluster of the old major with database `app` in use, as described in
/// the module docs.
async fn old_cluster_in_use(from: &std::path::Path, receiver: &Receiver) -> (OwnCluster, Before) {
    let old = OwnCluster::start_with(from);
    create_app_database(&old).await;
    let db = TestDb {
        name: "app".into(),
        dsn: old.dsn("app"),
    };
    let c = db.client().await;
    c.batch_execute("create extension pg_webhook")
        .await
        .expect("create extension");
    let (endpoint, secret) = db
        .subscribe(&c, &receiver.url("/hooks"), &["*"], None)
        .await;
    c.batch_execute(&format!(
        "create table orders (id int primary key, note text);
         select webhook_watch('orders', event_prefix => 'order');
         select webhook_rotate_secret({endpoint}, '1 day');"
    ))
    .await
    .unwrap();

    // A finished log: two events delivered by a worker.
    let mut worker = RunningWorker::start(db.worker_config());
    c.batch_execute(
        "insert into orders values (1, 'first');
         select webhook_publish('order.noted', '{\"n\": 1}', 'key-1');",
    )
    .await
    .unwrap();
    db.wait_deliveries(&c, "succeeded", 2, &mut worker.events)
        .await;
    worker.stop().await;

    // Pending: two events fanned out and attempted once (a 503, to retry at
    // once), and two more committed but not fanned out yet.
    c.batch_execute("insert into orders values (2, 'second'), (3, 'third')")
        .await
        .unwrap();
    assert_eq!(
        attempt_due_once(&c, "old-major").await,
        2,
        "the claim hands out both"
    );
    c.batch_execute("insert into orders values (4, 'fourth'), (5, 'fifth')")
        .await
        .unwrap();
    let pending: BTreeMap<i64, String> = c
        .query(
            "select e.id, webhook._message_id(e.txid, e.id, e.id_namespace)
             from webhook.events e
             where not exists (select from webhook.deliveries d
                               where d.event_id = e.id and d.status = 'succeeded')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(pending.len(), 4);
    db.assert_invariants(&c).await;
    let before = Before {
        snapshot: snapshot(&c).await,
        secret,
        pending,
        attempted: 2,
        major: server_major(&c).await,
    };
    assert_eq!(before.snapshot.pending_or_unfanned, 4);
    (old, before)
}

/// The moved database: the same contents, and a worker that delivers what
/// was pending (each with the webhook-id it had, signed with the rotated
/// secrets) and a new event.
async fn carries_on(new: &OwnCluster, before: &Before, receiver: &Receiver, what: &str) {
    let db = TestDb {
        name: "app".into(),
        dsn: new.dsn("app"),
    };
    let c = db.client().await;
    assert!(
        server_major(&c).await > before.major,
        "{what}: the database now runs on a newer major"
    );
    assert_eq!(
        snapshot(&c).await,
        before.snapshot,
        "{what}: every endpoint, secret, event, delivery and attempt"
    );
    db.assert_invariants(&c).await;
    let attempted: i64 = c
        .query_one(
            "select count(*) from webhook.deliveries_open where attempt_count = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        attempted, before.attempted,
        "{what}: the attempted ones keep their count"
    );

    let seen = receiver.requests().len();
    c.batch_execute("insert into orders values (6, 'after the move')")
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    let pending = before.pending.len();
    let got = receiver.wait_for(seen + pending + 1).await;
    db.wait_deliveries(&c, "succeeded", 2 + pending as i64 + 1, &mut worker.events)
        .await;
    worker.stop().await;
    db.assert_invariants(&c).await;

    let secret = pg_webhook_protocol::Secret::parse(&before.secret).unwrap();
    let ids: Vec<&str> = got[seen..]
        .iter()
        .map(|r| {
            let id = r.header("webhook-id").unwrap();
            let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
            let sig = r.header("webhook-signature").unwrap();
            assert!(
                pg_webhook_protocol::verify(&secret, id, ts, r.body.as_bytes(), sig),
                "{what}: {id} verifies with the secret made before the move"
            );
            id
        })
        .collect();
    for (event, id) in &before.pending {
        assert!(
            ids.contains(&id.as_str()),
            "{what}: event {event}, pending across the move, keeps its webhook-id {id}: {ids:?}"
        );
    }
    let new_ids: Vec<&&str> = ids
        .iter()
        .filter(|id| !before.pending.values().any(|p| p == *id))
        .collect();
    assert_eq!(new_ids.len(), 1, "{what}: one new event: {ids:?}");
    assert!(
        !before.snapshot.message_ids.iter().any(|m| m == *new_ids[0]),
        "{what}: the new event's webhook-id {} was never used before",
        new_ids[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_upgrade_to_each_newer_major_keeps_everything_and_delivers_what_was_pending() {
    let from = bins("PG_WEBHOOK_UPGRADE_FROM").remove(0);
    for to in bins("PG_WEBHOOK_UPGRADE_TO") {
        let receiver = Receiver::start().await;
        let (old, before) = old_cluster_in_use(&from, &receiver).await;
        let new = old.pg_upgrade(&to);
        carries_on(
            &new,
            &before,
            &receiver,
            &format!("pg_upgrade to {}", to.display()),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_of_the_old_major_restored_into_the_newest_carries_on() {
    let from = bins("PG_WEBHOOK_UPGRADE_FROM").remove(0);
    let to = bins("PG_WEBHOOK_UPGRADE_TO").pop().unwrap();
    let receiver = Receiver::start().await;
    let (old, before) = old_cluster_in_use(&from, &receiver).await;
    let new = OwnCluster::start_with(&to);
    create_app_database(&new).await;
    // The new major's pg_dump reads the old server, as the PostgreSQL
    // documentation asks; the restore creates the extension itself.
    let dump = std::env::temp_dir().join(format!("pgwh-majors-{}.dump", std::process::id()));
    let dump_path = dump.to_str().unwrap();
    pg_tool_of(
        &to,
        "pg_dump",
        &["-Fc", "-f", dump_path, "-d", &old.dsn("app")],
    )
    .await;
    drop(old);
    pg_tool_of(
        &to,
        "pg_restore",
        &["--exit-on-error", "-d", &new.dsn("app"), dump_path],
    )
    .await;
    std::fs::remove_file(&dump).ok();
    carries_on(
        &new,
        &before,
        &receiver,
        &format!("a dump restored into {}", to.display()),
    )
    .await;
}
