//! Upgrading from the released versions (their frozen install scripts, in
//! tests/fixtures, run against the current library) gives exactly the schema
//! of a fresh install, keeps every row, and delivers what was pending, each
//! event with the webhook-id it was first sent with. The scripts a release
//! shipped never change: their hashes are checked here.

use pg_webhook_tests::{attempt_due_once, Receiver, RunningWorker, TestDb};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tokio_postgres::Client;

/// Everything pg_webhook defines in a database, as comparable text
/// (tests/catalog.sql): tables, partitions and their options, columns,
/// constraints, indexes, triggers, functions and aggregates (definitions,
/// privileges, comments), views, types, sequences, privileges, owners, and
/// what pg_dump keeps; with the SQL flavor's script (no extension), the
/// functions of the schema webhook and public's `webhook_*` ones.
pub(crate) async fn catalog(c: &Client) -> Vec<String> {
    let sql = include_str!("../catalog.sql");
    let mut rows: Vec<String> = pg_webhook_tests::column(c, sql, &[]).await;
    rows.sort();
    rows
}

/// The scripts of released versions, with the SHA-256 they were released
/// with: a user's database was installed or upgraded by exactly these
/// bytes, so they are never regenerated or edited (a change goes into the
/// next upgrade script).
const RELEASED: &[(&str, &str)] = &[
    (
        "tests/fixtures/pg_webhook--0.1.0.sql",
        "7955d55f793e3a62d3c8cdf648195c318caffab1989e69835b760c95da20483c",
    ),
    (
        "tests/fixtures/pg_webhook--0.2.0.sql",
        "0cd528d2d40185c151f4eddab1b89397ca7ec439dd509328341a59ab3bef43fa",
    ),
    (
        "sql/pg_webhook--0.1.0--0.2.0.sql",
        "a3de074ed672b8ac9b8448749319dc597c56d00f4ffb7cc183b23acaddd45070",
    ),
];

#[test]
fn released_scripts_are_unchanged() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (path, expected) in RELEASED {
        let bytes = std::fs::read(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let found: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            &found, expected,
            "{path} was released and must not change; put the change into the next upgrade script"
        );
    }
}

/// Fails with both sides' differences unless `db` has exactly the objects
/// of a fresh install of the current version.
async fn assert_same_as_fresh_install(c: &Client) {
    let fresh = TestDb::new().await;
    assert_same_catalog(c, &fresh.client().await).await;
}

/// Fails with both sides' differences unless the databases `upgraded` and
/// `fresh` are connected to hold exactly the same objects of pg_webhook.
pub(crate) async fn assert_same_catalog(upgraded: &Client, fresh: &Client) {
    let upgraded_catalog = catalog(upgraded).await;
    let fresh_catalog = catalog(fresh).await;
    let only_upgraded: Vec<_> = upgraded_catalog
        .iter()
        .filter(|r| !fresh_catalog.contains(r))
        .collect();
    let only_fresh: Vec<_> = fresh_catalog
        .iter()
        .filter(|r| !upgraded_catalog.contains(r))
        .collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgraded schema differs from a fresh install:\nonly after upgrade: {only_upgraded:#?}\nonly in a fresh install: {only_fresh:#?}"
    );
}

/// A connection whose notices (WARNINGs included) are kept, in order.
async fn connect_keeping_notices(
    dsn: &str,
) -> (Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use futures_util::future::poll_fn;
    let (client, mut connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = notices.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notice(n) = message {
                kept.lock().unwrap().push(n.message().to_owned());
            }
        }
    });
    (client, notices)
}

async fn extension_version(c: &Client) -> String {
    c.query_one(
        "select extversion from pg_extension where extname = 'pg_webhook'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn deliveries(c: &Client) -> Vec<(i64, String)> {
    c.query(
        "select id, status::text from webhook.deliveries order by id",
        &[],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_only_fresh_0_2_0_upgrades_to_a_fresh_install() {
    let db = TestDb::empty().await;
    let c = db.client().await;
    c.batch_execute("create extension pg_webhook version '0.2.0'")
        .await
        .expect("the frozen 0.2.0 script installs (tests/run.sh copies it into PostgreSQL's extension directory)");
    c.batch_execute("alter extension pg_webhook update")
        .await
        .expect("0.2.0 → current");
    let c = db.client().await;
    assert_eq!(extension_version(&c).await, env!("CARGO_PKG_VERSION"));
    assert_same_as_fresh_install(&c).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_only_upgrade_chain_from_0_1_0_matches_a_fresh_install_and_keeps_the_data() {
    let old = TestDb::empty().await;
    let receiver = Receiver::start().await;
    let c = old.client().await;
    c.batch_execute("create extension pg_webhook version '0.1.0'")
        .await
        .expect("the frozen 0.1.0 script installs (tests/run.sh copies it into PostgreSQL's extension directory)");
    // 0.1.0 data, made with the 0.1.0 API: endpoints (one removed), a
    // watched table, events with their deliveries, one of them delivered
    // (claimed and recorded through 0.1.0's functions).
    let url = receiver.url("/");
    c.batch_execute(&format!(
        "select webhook_subscribe('{url}', name => 'live');
         select webhook_subscribe('{url}', name => 'gone');
         create table orders (id int primary key, note text);
         select webhook_watch('orders', event_prefix => 'order');
         insert into orders values (1, 'first');
         select webhook_publish('order.noted', '{{\"n\": 1}}', 'key-1');
         select webhook_unsubscribe(2);"
    ))
    .await
    .unwrap();
    // 0.1.0 let any table owner attach the capture trigger, with any
    // prefix: a reader's table emitting pg_webhook's own event types.
    let sneaky = format!("{}_sneaky", old.name);
    c.batch_execute(&format!(
        "create role {sneaky} login in role webhook_reader;
         create table sneaky (id int); alter table sneaky owner to {sneaky};
         create trigger webhook_capture after insert on sneaky
             for each row execute function webhook._capture('webhook.endpoint');"
    ))
    .await
    .unwrap();
    let claimed = c
        .query_one(
            "select delivery_id, lease_token from webhook._claim_deliveries('w01', 1, '1 minute')",
            &[],
        )
        .await
        .unwrap();
    let (delivery, token): (i64, i64) = (claimed.get(0), claimed.get(1));
    c.execute(
        "select webhook._record_attempts('w01', array[$1::bigint], array[$2::bigint], array[1], array[now()],
                array[3.5::float8], array[200], array['ok'], array[null]::text[], array['succeeded'], array[null]::bigint[])",
        &[&delivery, &token],
    )
    .await
    .unwrap();
    let rows_before = deliveries(&c).await;

    c.batch_execute("alter extension pg_webhook update to '0.2.0'")
        .await
        .expect("0.1.0 → 0.2.0 update");
    let c = old.client().await; // a session that loaded nothing of 0.1.0
    assert_eq!(extension_version(&c).await, "0.2.0");
    assert_eq!(
        deliveries(&c).await,
        rows_before,
        "every delivery kept, with its state"
    );

    // 0.2.0 data, written by the current library before the extension is
    // updated (as a rolling upgrade does): a captured row and a published
    // event, fanned out, claimed and attempted through 0.2.0's functions,
    // so that they are pending with an attempt behind them. Each one's
    // webhook-id as 0.2.0 sent it must survive the update.
    c.batch_execute(
        "insert into orders values (2, 'under 0.2.0');
         select webhook_publish('order.noted', '{\"n\": 2}', 'key-2');",
    )
    .await
    .unwrap();
    assert!(
        attempt_due_once(&c, "w02").await > 0,
        "0.2.0's claim hands out deliveries"
    );
    // The webhook-id of every event still to send, as 0.2.0 computes it.
    let before_update: BTreeMap<i64, String> = c
        .query(
            "select e.id, webhook._message_id(e.txid, e.id)
             from webhook.events e
             where exists (select from webhook.deliveries_open d where d.event_id = e.id)",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(before_update.len() >= 2, "{before_update:?}");
    let rows_before = deliveries(&c).await;

    let (updater, notices) = connect_keeping_notices(&old.dsn).await;
    updater
        .batch_execute("alter extension pg_webhook update")
        .await
        .expect("0.2.0 → current update");
    let warned = notices.lock().unwrap().clone();
    assert!(
        warned
            .iter()
            .any(|n| n.contains("table sneaky has a capture trigger")
                && n.contains(&sneaky)
                && n.contains("not a member of webhook_admin")),
        "the update reports the trigger 0.1.0 let a non-admin attach: {warned:?}"
    );
    let c = old.client().await;
    assert_eq!(extension_version(&c).await, env!("CARGO_PKG_VERSION"));
    assert_same_as_fresh_install(&c).await;
    let refused = c
        .batch_execute("insert into sneaky values (1)")
        .await
        .expect_err("the trigger refuses pg_webhook's own prefix");
    assert!(
        refused
            .as_db_error()
            .is_some_and(|e| e.message().contains("reserved")),
        "{refused:?}"
    );
    assert_eq!(
        deliveries(&c).await,
        rows_before,
        "every delivery kept, with its state"
    );
    old.assert_invariants(&c).await;
    // The log finds each of them by the webhook-id it had before.
    for (event_id, message_id) in &before_update {
        let found: i64 = c
            .query_one(
                "select count(*) from webhook.delivery_log where message_id = $1 and event_id = $2",
                &[message_id, event_id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            found >= 1,
            "{message_id} of event {event_id} in delivery_log"
        );
    }

    // The watched table keeps capturing, and a worker delivers what was
    // pending, each with the webhook-id it had before (0.1.0's: the event's
    // number; 0.2.0's: msg_…), and what comes after (a new msg_ id).
    c.batch_execute("insert into orders values (3, 'after')")
        .await
        .unwrap();
    let pending: i64 = c
        .query_one(
            "select count(*) from webhook.deliveries_open where status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let expected = usize::try_from(pending).unwrap() + 1;
    let mut worker = RunningWorker::start(old.worker_config());
    let got = receiver.wait_for(expected).await;
    old.wait_for(
        &c,
        "select not exists (select from webhook.deliveries_open)",
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;
    old.assert_invariants(&c).await;
    let ids: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), expected, "{ids:?}");
    for id in before_update.values() {
        assert!(
            ids.contains(id),
            "an event pending across the update keeps its webhook-id {id}: {ids:?}"
        );
    }
    let new: Vec<&String> = ids
        .iter()
        .filter(|id| !before_update.values().any(|b| b == *id))
        .collect();
    assert_eq!(new.len(), 1, "{ids:?}");
    assert!(new[0].starts_with("msg_"), "{ids:?}");
    let key: i64 = c
        .query_one(
            "select webhook_publish('order.noted', '{\"n\": 1}', 'key-1')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, 2, "idempotency keys carry over");
    old.finish().await;
}

/// Everything a database's pg_webhook holds that a move must keep: the
/// endpoints with their secrets, the subscriptions, every event with its
/// webhook-id, every delivery with its state and every attempt.
async fn held(c: &Client) -> Vec<String> {
    let sql = "select 'endpoint ' || e.id || ' ' || e.name || ' ' || s.url || ' ' || e.is_active
                      || ' ' || s.secret || ' ' || coalesce(s.previous_secret, '')
               from webhook.endpoints e join webhook.endpoint_secrets s on s.endpoint_id = e.id
               union all
               select 'subscription ' || id || ' ' || endpoint_id || ' ' || event_types::text
               from webhook.subscriptions
               union all
               select 'event ' || id || ' ' || event_type || ' ' || payload::text || ' '
                      || webhook._message_id(txid, id, id_namespace)
               from webhook.events
               union all
               select 'delivery ' || id || ' ' || event_id || ' ' || endpoint_id || ' ' || status::text
               from webhook.deliveries
               union all
               select 'attempt ' || id || ' ' || delivery_id || ' ' || coalesce(status_code, 0)
               from webhook.attempts";
    let mut rows: Vec<String> = pg_webhook_tests::column(c, sql, &[]).await;
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_only_a_database_moves_from_the_sql_flavor_to_the_extension() {
    // A database given pg_webhook by the SQL flavor's script (a managed
    // service), in use; then, on a server with the extension's files, the
    // move script: the extension's exact schema, every row kept, and the
    // same worker goes on with the same secrets and webhook-ids.
    let db = TestDb::empty().await;
    let receiver = Receiver::start().await;
    let c = db.client().await;
    pg_webhook_tests::install_sql_flavor(&c).await;
    c.batch_execute(
        "update webhook.settings set value = 'on' where name = 'allow_private_targets';
         update webhook.settings set value = '7' where name = 'failing_after';
         create table orders (id int primary key, note text);
         select webhook_watch('orders', event_prefix => 'order');",
    )
    .await
    .unwrap();
    let (_, secret) = db
        .subscribe(&c, &receiver.url("/"), &["order.*"], None)
        .await;
    c.batch_execute(
        "insert into orders values (1, 'a'), (2, 'b');
         select webhook_publish('order.noted', '{\"n\": 1}', 'key-1');",
    )
    .await
    .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_deliveries(&c, "succeeded", 3, &mut worker.events)
        .await;
    worker.stop().await;
    // Pending across the move: one attempted and due again, one never sent.
    c.batch_execute("insert into orders values (3, 'c')")
        .await
        .unwrap();
    assert_eq!(attempt_due_once(&c, "w-sql").await, 1);
    c.batch_execute("insert into orders values (4, 'd')")
        .await
        .unwrap();
    c.query(
        "select * from webhook._claim_deliveries('fan-out', 0, '1 minute', 1, '{}', '{}', 1000, 0)",
        &[],
    )
    .await
    .unwrap();
    let before = held(&c).await;
    drop(c);

    let mover = db.client().await;
    let moving = std::fs::read_to_string(pg_webhook_tests::repo_path(
        "sql/move/sql_flavor_to_extension.sql",
    ))
    .unwrap();
    mover
        .batch_execute(&format!("begin;\n{moving}\ncommit;"))
        .await
        .unwrap_or_else(|e| panic!("the move: {e:?}"));
    drop(mover);

    let c = db.client().await;
    assert_eq!(extension_version(&c).await, env!("CARGO_PKG_VERSION"));
    assert_same_as_fresh_install(&c).await;
    assert_eq!(held(&c).await, before, "every row kept");
    let failing_after: String = c
        .query_one("select current_setting('pg_webhook.failing_after')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(failing_after, "7", "a setting that differed became the GUC");
    db.assert_invariants(&c).await;

    // The capture goes on through the extension's trigger, and the worker
    // sends what was pending and what comes, signed with the same secret,
    // with ids never sent before.
    c.batch_execute("insert into orders values (5, 'e')")
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    db.wait_deliveries(&c, "succeeded", 6, &mut worker.events)
        .await;
    worker.stop().await;
    let got = receiver.requests();
    let key = pg_webhook_protocol::Secret::parse(&secret).unwrap();
    let mut ids = std::collections::HashSet::new();
    for r in &got {
        let id = r.header("webhook-id").unwrap();
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!(
            pg_webhook_protocol::verify(
                &key,
                id,
                ts,
                r.body.as_bytes(),
                r.header("webhook-signature").unwrap()
            ),
            "signed with the secret from before the move"
        );
        ids.insert(id.to_owned());
    }
    let notes: Vec<i64> = got
        .iter()
        .filter_map(|r| r.json()["data"]["new"]["id"].as_i64())
        .collect();
    for n in 1..=5 {
        assert!(notes.contains(&n), "row {n} delivered: {notes:?}");
    }
    assert_eq!(
        ids.len(),
        6,
        "six events, each sent once with a webhook-id of its own"
    );
    db.finish().await;
}

/// What a database's pg_webhook offers to call, however it was installed:
/// each function's name, arguments, result, volatility and grants (the
/// capture trigger's grants name its owner, which differs by flavor).
async fn callable(c: &Client) -> Vec<String> {
    let sql = r"
        select p.oid::regprocedure::text || ' returns ' || pg_get_function_result(p.oid)
               || ' volatility=' || p.provolatile::text
               || case when p.proname = '_capture' then ''
                       else ' acl=' || coalesce(p.proacl::text, '') end
        from pg_proc p
        where (p.pronamespace = 'webhook'::regnamespace or p.proname like 'webhook\_%')
          and p.pronamespace in ('webhook'::regnamespace, 'public'::regnamespace)";
    let mut rows: Vec<String> = pg_webhook_tests::column(c, sql, &[]).await;
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_only_the_sql_flavor_has_the_schema_and_functions_of_the_extension() {
    // Both flavors come from sql/install/; the SQL flavor replaces the
    // library's functions and adds its own helpers and webhook.settings.
    // Installed here by the same superuser, so that grants name the same
    // grantor.
    let sql = TestDb::empty().await;
    let c = sql.client().await;
    pg_webhook_tests::install_sql_flavor(&c).await;
    let extension = TestDb::new().await;
    let e = extension.client().await;
    // Tables, columns, constraints, indexes, triggers, views, types,
    // sequences, the schema: the same but for webhook.settings.
    // (The SQL flavor's schema also lets webhook_capture call its one
    // function there: see sql/plain/90_roles.sql.)
    let schema = |rows: Vec<String>| -> Vec<String> {
        rows.into_iter()
            .filter(|r| {
                !(r.starts_with("fn ")
                    || r.starts_with("member ")
                    || r.starts_with("dump ")
                    || r.contains("webhook.settings"))
            })
            .map(|r| r.replace(",webhook_capture=U/postgres", ""))
            .collect()
    };
    let (in_sql, in_extension) = (schema(catalog(&c).await), schema(catalog(&e).await));
    let only_sql: Vec<_> = in_sql
        .iter()
        .filter(|r| !in_extension.contains(r))
        .collect();
    let only_extension: Vec<_> = in_extension
        .iter()
        .filter(|r| !in_sql.contains(r))
        .collect();
    assert!(
        only_sql.is_empty() && only_extension.is_empty(),
        "the flavors' schemas differ:\nonly in the SQL flavor: {only_sql:#?}\nonly in the extension: {only_extension:#?}"
    );
    // Every function of the extension, with the same signature, volatility
    // and grants.
    let sql_functions = callable(&c).await;
    let missing: Vec<_> = callable(&e)
        .await
        .into_iter()
        .filter(|f| !sql_functions.contains(f))
        .collect();
    assert!(
        missing.is_empty(),
        "functions of the extension the SQL flavor lacks or has otherwise: {missing:#?}"
    );
    sql.finish().await;
    extension.finish().await;
}
