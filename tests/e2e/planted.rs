//! Planted objects (CVE-2018-1058 and kin): a login with a schema of its
//! own, or with CREATE on a `public` schema that every session searches
//! (any database created before PostgreSQL 15 and carried over), defines
//! functions, operators and aggregates that shadow PostgreSQL's built-ins,
//! and waits for pg_webhook's code to call them. Each planted object
//! records who ran it; none may ever run with any role but the attacker's,
//! whoever triggers pg_webhook's code: the attacker itself under a hostile
//! search_path (capture, publish, views), a writer of a watched table, a
//! publisher, an admin calling every API function, a reader and a
//! superuser reading every view, and the worker (claim, record, fan-out,
//! maintenance, its status page).

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};
use pg_webhook_worker::WorkerEvent;
use tokio_postgres::Client;

/// Operators to plant: (name, left, right, result, what it computes as
/// `$1 OP $2` of pg_catalog). Exact copies of built-ins win under a
/// search_path that lists the attacker's schema before pg_catalog; the
/// others are better matches than any built-in for their argument types,
/// and win even behind pg_catalog.
fn operators() -> Vec<(&'static str, &'static str, &'static str, &'static str)> {
    let mut ops = Vec::new();
    for t in [
        "bigint",
        "integer",
        "smallint",
        "text",
        "name",
        "oid",
        "timestamp with time zone",
        "double precision",
        "numeric",
    ] {
        for op in ["=", "<>", "<", "<=", ">", ">="] {
            ops.push((op, t, t, "boolean"));
        }
    }
    for (l, r) in [("numeric", "integer"), ("numeric", "bigint")] {
        for op in ["=", "<", ">", ">="] {
            ops.push((op, l, r, "boolean"));
        }
    }
    ops.extend([
        ("+", "bigint", "bigint", "bigint"),
        ("+", "integer", "integer", "integer"),
        ("-", "bigint", "bigint", "bigint"),
        ("-", "integer", "integer", "integer"),
        (
            "+",
            "timestamp with time zone",
            "interval",
            "timestamp with time zone",
        ),
        (
            "-",
            "timestamp with time zone",
            "interval",
            "timestamp with time zone",
        ),
        ("%", "bigint", "bigint", "bigint"),
        ("%", "integer", "integer", "integer"),
        ("%", "bigint", "integer", "bigint"),
        ("%", "integer", "bigint", "bigint"),
        ("*", "numeric", "double precision", "double precision"),
        ("*", "bigint", "interval", "interval"),
        ("/", "numeric", "bigint", "numeric"),
        (
            "/",
            "double precision",
            "double precision",
            "double precision",
        ),
        (">>", "bigint", "integer", "bigint"),
        ("||", "text", "text", "text"),
        ("||", "text", "integer", "text"),
        ("||", "text", "bigint", "text"),
        ("~", "text", "text", "boolean"),
        ("->>", "jsonb", "text", "text"),
        ("->", "jsonb", "text", "jsonb"),
        ("?", "jsonb", "text", "boolean"),
    ]);
    ops
}

/// Functions to plant: (name, argument types, result, pg_catalog call).
const FUNCTIONS: &[(&str, &str, &str, &str)] = &[
    (
        "to_regclass",
        "text",
        "regclass",
        "pg_catalog.to_regclass($1)",
    ),
    ("now", "", "timestamp with time zone", "pg_catalog.now()"),
    (
        "clock_timestamp",
        "",
        "timestamp with time zone",
        "pg_catalog.clock_timestamp()",
    ),
    (
        "lpad",
        "text, integer, text",
        "text",
        "pg_catalog.lpad($1, $2, $3)",
    ),
    ("to_hex", "bigint", "text", "pg_catalog.to_hex($1)"),
    (
        "power",
        "integer, integer",
        "double precision",
        "pg_catalog.power($1::float8, $2::float8)",
    ),
    (
        "power",
        "double precision, double precision",
        "double precision",
        "pg_catalog.power($1, $2)",
    ),
    (
        "ln",
        "integer",
        "double precision",
        "pg_catalog.ln($1::float8)",
    ),
    (
        "ln",
        "double precision",
        "double precision",
        "pg_catalog.ln($1)",
    ),
    (
        "ceil",
        "double precision",
        "double precision",
        "pg_catalog.ceil($1)",
    ),
    (
        "octet_length",
        "text",
        "integer",
        "pg_catalog.octet_length($1)",
    ),
    ("md5", "text", "text", "pg_catalog.md5($1)"),
    (
        "jsonb_typeof",
        "jsonb",
        "text",
        "pg_catalog.jsonb_typeof($1)",
    ),
    (
        "date_trunc",
        "text, timestamp with time zone",
        "timestamp with time zone",
        "pg_catalog.date_trunc($1, $2)",
    ),
    ("left", "text, integer", "text", "pg_catalog.left($1, $2)"),
    (
        "substr",
        "text, integer, integer",
        "text",
        "pg_catalog.substr($1, $2, $3)",
    ),
    (
        "split_part",
        "text, text, integer",
        "text",
        "pg_catalog.split_part($1, $2, $3)",
    ),
    (
        "quote_literal",
        "text",
        "text",
        "pg_catalog.quote_literal($1)",
    ),
    ("lower", "text", "text", "pg_catalog.lower($1)"),
    (
        "set_config",
        "text, text, boolean",
        "text",
        "pg_catalog.set_config($1, $2, $3)",
    ),
    (
        "pg_notify",
        "text, text",
        "void",
        "pg_catalog.pg_notify($1, $2)",
    ),
    (
        "pg_try_advisory_xact_lock",
        "bigint",
        "boolean",
        "pg_catalog.pg_try_advisory_xact_lock($1)",
    ),
    ("to_json", "text", "json", "pg_catalog.to_json($1)"),
    ("to_jsonb", "text", "jsonb", "pg_catalog.to_jsonb($1)"),
    (
        "cardinality",
        "text[]",
        "integer",
        "pg_catalog.cardinality($1)",
    ),
    (
        "cardinality",
        "bigint[]",
        "integer",
        "pg_catalog.cardinality($1)",
    ),
    (
        "array_fill",
        "integer, integer[]",
        "integer[]",
        "pg_catalog.array_fill($1, $2)",
    ),
];

/// Set-returning functions to plant: unnest of arrays of these types (more
/// specific than the built-in `unnest(anyarray)`).
const UNNESTS: &[&str] = &["bigint", "integer", "smallint", "text"];

/// Aggregates to plant: (name, argument type, state/result type, step
/// expression of `$1` (state) and `$2` (value)).
const AGGREGATES: &[(&str, &str, &str, &str)] = &[
    ("max", "bigint", "bigint", "greatest($1, $2)"),
    ("max", "smallint", "smallint", "greatest($1, $2)"),
    ("min", "bigint", "bigint", "least($1, $2)"),
    (
        "min",
        "timestamp with time zone",
        "timestamp with time zone",
        "least($1, $2)",
    ),
    ("sum", "bigint", "numeric", "coalesce($1, 0) + $2"),
    ("sum", "integer", "bigint", "coalesce($1, 0) + $2"),
    ("array_agg", "text", "text[]", "$1 || $2"),
    ("array_agg", "bigint", "bigint[]", "$1 || $2"),
    ("array_agg", "integer", "integer[]", "$1 || $2"),
];

/// The SQL that plants everything into `schema` on behalf of `attacker`:
/// every planted object calls `<schema>.hit(what)`, which counts every call
/// in `<schema>.tries` and, when it runs as anyone but the attacker, counts
/// it in `<schema>.hits` (a sequence: it survives the rollback) and raises,
/// so that the victim's statement fails on the spot.
fn plant_sql(schema: &str, attacker: &str) -> String {
    let mut sql = format!(
        "create sequence {schema}.tries; create sequence {schema}.hits;
         grant usage on schema {schema} to public;
         grant usage, update on sequence {schema}.tries, {schema}.hits to public;
         create function {schema}.hit(what text) returns void language plpgsql
         set search_path = pg_catalog, pg_temp as $f$
         begin
             perform nextval('{schema}.tries');
             if current_user::text <> '{attacker}' then
                 perform nextval('{schema}.hits');
                 raise exception 'planted % ran as %', what, current_user;
             end if;
         end $f$;\n"
    );
    for (i, (op, left, right, result)) in operators().into_iter().enumerate() {
        sql.push_str(&format!(
            "create function {schema}.op_{i}(a {left}, b {right}) returns {result} language plpgsql
             set search_path = pg_catalog, pg_temp as $f$
             begin perform {schema}.hit('operator {op}({left}, {right})');
                   return a operator(pg_catalog.{op}) b; end $f$;
             create operator {schema}.{op} (leftarg = {left}, rightarg = {right}, function = {schema}.op_{i});\n"
        ));
    }
    for (name, args, result, call) in FUNCTIONS {
        let typed: Vec<String> = args
            .split(", ")
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let ret = if *result == "void" {
            format!("perform {call}; return;")
        } else {
            format!("return {call};")
        };
        sql.push_str(&format!(
            "create function {schema}.{name}({}) returns {result} language plpgsql
             set search_path = pg_catalog, pg_temp as $f$
             begin perform {schema}.hit('{name}({args})'); {ret} end $f$;\n",
            typed.join(", ")
        ));
    }
    for t in UNNESTS {
        sql.push_str(&format!(
            "create function {schema}.unnest({t}[]) returns setof {t} language plpgsql
             set search_path = pg_catalog, pg_temp as $f$
             begin perform {schema}.hit('unnest({t}[])'); return query select pg_catalog.unnest($1); end $f$;\n"
        ));
    }
    for (i, (name, arg, state, step)) in AGGREGATES.iter().enumerate() {
        sql.push_str(&format!(
            "create function {schema}.agg_{i}({state}, {arg}) returns {state} language plpgsql
             set search_path = pg_catalog, pg_temp as $f$
             begin perform {schema}.hit('{name}({arg})'); return {step}; end $f$;
             create aggregate {schema}.{name}({arg}) (sfunc = {schema}.agg_{i}, stype = {state});\n"
        ));
    }
    sql
}

/// `(tries, hits)` of the planted objects in `schema`.
async fn counters(c: &Client, schema: &str) -> (i64, i64) {
    let row = c
        .query_one(
            &format!(
                "select (select case when is_called then last_value else 0 end from {schema}.tries),
                        (select case when is_called then last_value else 0 end from {schema}.hits)"
            ),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Runs `sql` and fails the test with the statement and the error.
async fn run(c: &Client, who: &str, sql: &str) {
    if let Err(e) = c.batch_execute(sql).await {
        panic!("{who}: {sql}\nfailed: {e:?}");
    }
}

/// Every view and helper readers and the worker read.
const READS: &str = "select * from webhook.delivery_log order by started_at desc nulls last limit 20;
     select * from webhook.endpoint_health;
     select * from webhook.event_types;
     select * from webhook.delivery_log where message_id = (select min(message_id) from webhook.delivery_log);
     select webhook.message_event_id('msg_00000000000000000000000000000001');
     select * from webhook.endpoints, webhook.events, webhook.deliveries, webhook.attempts limit 1;";

/// The whole scenario; `hostile_path` is the attacker's own search_path
/// (its schema first), or None for the default one (public writable).
async fn scenario(public_writable: bool) {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let root = db.client().await;
    let (attacker, as_attacker) = db
        .login(&root, "attacker", &["webhook_publisher", "webhook_reader"])
        .await;
    let (admin_role, admin) = db.login(&root, "admin", &["webhook_admin"]).await;
    let (_, reader) = db.login(&root, "reader", &["webhook_reader"]).await;
    let (_, publisher) = db.login(&root, "publisher", &["webhook_publisher"]).await;
    let (writer_role, writer) = db.login(&root, "writer", &[]).await;
    let (worker_role, _) = db.login(&root, "worker", &["webhook_worker"]).await;
    let url = receiver.url("/hooks");
    run(
        &root,
        "superuser",
        &format!(
            "create table orders (id int primary key, note text);
             select webhook_watch('orders', event_prefix => 'order');
             grant select, insert, update, delete on orders to {attacker}, {writer_role};
             grant create on schema public to {admin_role};
             select webhook_subscribe('{url}', name => 'main');"
        ),
    )
    .await;
    let schema = if public_writable {
        run(
            &root,
            "superuser",
            "grant create on schema public to public",
        )
        .await;
        "public".to_owned()
    } else {
        run(
            &db.superuser_client().await,
            "superuser",
            &format!("create schema evil authorization {attacker}"),
        )
        .await;
        "evil".to_owned()
    };
    run(&as_attacker, "attacker", &plant_sql(&schema, &attacker)).await;
    if !public_writable {
        run(
            &as_attacker,
            "attacker",
            "set search_path = evil, pg_catalog, public",
        )
        .await;
    }
    // The planted objects work: the attacker's own arithmetic goes
    // through them (else this test would prove nothing).
    run(
        &as_attacker,
        "attacker",
        "select 7::bigint % 2, power(2, 3)",
    )
    .await;
    assert!(
        counters(&as_attacker, &schema).await.0 >= 2,
        "the planted operator and function are what a query finds"
    );

    // The attacker writes the watched table, publishes and reads, under its
    // own search_path, in new sessions each time (a backend's first capture
    // reads the log slot and the incarnation with SQL).
    run(
        &as_attacker,
        "attacker",
        "insert into orders values (1, 'a'); update orders set note = 'b' where id = 1;
         delete from orders where id = 1; insert into orders values (2, 'x');
         select webhook_publish('order.noted', '{\"n\": 1}', 'k1');",
    )
    .await;
    run(&as_attacker, "attacker", READS).await;
    // A writer, a publisher, an admin with every API function.
    run(
        &writer,
        "writer",
        "insert into orders values (3, 'w'); update orders set note = 'v' where id = 3; delete from orders where id = 3;",
    )
    .await;
    run(
        &publisher,
        "publisher",
        "select webhook_publish('order.shipped', '{\"id\": 1}', 'k2');",
    )
    .await;
    run(
        &admin,
        "admin",
        &format!(
            "select * from webhook_subscribe('{url}', array['order.*'], name => 'second',
                 headers => '{{\"x-tenant\": \"acme\"}}', retry_policy => '{{\"max_attempts\": 3}}',
                 auth => '{{\"type\": \"bearer\", \"token\": \"t0ken-t0ken\"}}');
             select webhook_update(2, timeout => '5 seconds', max_in_flight => 4);
             select webhook_pause(2); select webhook_resume(2);
             select webhook_rotate_secret(2, '1 hour');
             select webhook_send_test(2);
             select webhook_replay(1);
             select webhook_replay_failed(1, now() - interval '1 day');
             create table notes (id int primary key);
             select webhook_watch('notes', columns => '{{id}}'); select webhook_unwatch('notes');
             select webhook_sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 1, '{{}}');
             select webhook_verify('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_1', 1, '{{}}', 'v1,x');
             select webhook_purge();"
        ),
    )
    .await;

    // The worker, logged in as webhook_worker alone: fan-out, claims,
    // records, maintenance every second, and its status page.
    let mut config = db.worker_config();
    config.pg.user(&worker_role);
    config.listen_pg.user(&worker_role);
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    config.maintenance =
        pg_webhook_worker::config::MaintenanceSchedule::parse("* * * * * *").unwrap();
    let mut worker = RunningWorker::start(config);
    let addr = pg_webhook_tests::within("the metrics server", async {
        loop {
            if let Some(WorkerEvent::Serving(addr)) = worker.events.recv().await {
                return addr;
            }
        }
    })
    .await;
    db.wait_for(
        &root,
        "select not exists (select from webhook.deliveries_open) and exists (select from webhook.attempts)",
        Some(&mut worker.events),
    )
    .await;
    pg_webhook_tests::within("a maintenance run", async {
        loop {
            if let Some(WorkerEvent::Maintenance(Some(_))) = worker.events.recv().await {
                return;
            }
        }
    })
    .await;
    for path in ["/", "/metrics", "/readyz"] {
        let r = reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("the worker answers");
        assert_eq!(
            r.status().as_u16(),
            200,
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    worker.stop().await;

    // A reader and a superuser read every view.
    run(&reader, "reader", READS).await;
    run(&root, "superuser", READS).await;
    run(
        &root,
        "superuser",
        "select * from webhook._invariant_violations()",
    )
    .await;

    let (tries, hits) = counters(&db.superuser_client().await, &schema).await;
    assert_eq!(
        hits, 0,
        "a planted object ran with another role's rights ({tries} calls in all)"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_planted_in_a_writable_public_schema_never_run_as_anyone_else() {
    scenario(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_planted_in_an_attackers_schema_first_on_its_path_never_run_as_anyone_else() {
    scenario(false).await;
}
