//! `#[pg_test]`s: what can be checked inside one transaction (each test is
//! rolled back). Commit visibility, NOTIFY and cross-session locking are
//! covered end to end in `tests/e2e`.

use pgrx::prelude::*;

/// The schema pgrx's test runner calls into.
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql)
            .expect("query runs")
            .expect("a count")
    }

    fn subscribe(url: &str, patterns: &str) -> i64 {
        Spi::get_one::<i64>(&format!(
            "select endpoint_id from webhook_subscribe('{url}', '{patterns}')"
        ))
        .expect("subscribe")
        .expect("an id")
    }

    #[pg_test]
    fn capture_writes_one_event_per_row_whatever_the_endpoints() {
        for i in 0..10 {
            subscribe(&format!("https://e{i}.example.com/"), "{*}");
        }
        Spi::run("create table orders (id int primary key, note text)").unwrap();
        Spi::run("select webhook_watch('orders', event_prefix => 'order')").unwrap();
        Spi::run("insert into orders select i, 'n' || i from generate_series(1, 3) i").unwrap();
        assert_eq!(
            count("select count(*) from webhook.events where event_type = 'order.created'"),
            3
        );
        assert_eq!(
            count("select count(*) from webhook.deliveries"),
            0,
            "deliveries are the fan-out's job, not the writer's"
        );
        assert_eq!(
            count("select count(distinct txid) from webhook.events where txid = webhook._vxid()"),
            1,
            "every event carries its transaction"
        );
    }

    #[pg_test]
    fn a_captured_event_row_is_complete_and_indexed() {
        Spi::run("create table orders (id int primary key, note text)").unwrap();
        Spi::run("select webhook_watch('orders', event_prefix => 'order')").unwrap();
        Spi::run("insert into orders values (1, 'first'), (2, 'second')").unwrap();
        // Written straight into the slot's partition (event_row.rs): every
        // column as the SQL statement would set it ...
        assert_eq!(
            count(
                "select count(*) from webhook.events e
                 where e.slot = webhook._current_slot() and e.txid = webhook._vxid()
                   and e.id between 1 and currval('webhook.events_id_seq')
                   and e.event_type = 'order.created' and e.source_table = 'public.orders'
                   and e.payload_bytes = octet_length(e.payload::text)
                   and e.payload::jsonb -> 'new' ->> 'note' in ('first', 'second')
                   and e.idempotency_key is null and e.created_at = now()"
            ),
            2
        );
        // ... and found through both of its indexes.
        Spi::run("set local enable_seqscan = off").unwrap();
        assert_eq!(
            count("select count(*) from webhook.events where txid = webhook._vxid()"),
            2
        );
        assert_eq!(
            count(
                "select count(*) from webhook.events where id = currval('webhook.events_id_seq')"
            ),
            1
        );
    }

    #[pg_test]
    fn the_direct_insert_gives_way_to_a_changed_default_not_null_or_bound() {
        Spi::run("create table orders (id int primary key, note text)").unwrap();
        Spi::run("select webhook_watch('orders', event_prefix => 'order')").unwrap();
        // A first row: the partition's verdict is worked out and kept.
        Spi::run("insert into orders values (1, 'first')").unwrap();
        let outcome = |id: i32| -> String {
            Spi::get_one::<String>(&format!("select webhook_test_insert({id})"))
                .unwrap()
                .unwrap()
        };
        Spi::run(
            "create function webhook_test_insert(p_id int) returns text language plpgsql as $$
             begin
                 insert into orders values (p_id, 'n');
                 return 'stored';
             exception when others then
                 return sqlstate;
             end $$",
        )
        .unwrap();
        // A default changed on the log: the next row takes it (the cached
        // verdict was dropped with the partition's cache entry).
        Spi::run("alter table webhook.events alter column created_at set default '2001-02-03 04:05:06+00'")
            .unwrap();
        assert_eq!(outcome(2), "stored");
        assert_eq!(
            count(
                "select count(*) from webhook.events where payload::jsonb -> 'new' ->> 'id' = '2'
                   and created_at = '2001-02-03 04:05:06+00'"
            ),
            1,
            "the statement's default, not now()"
        );
        Spi::run("alter table webhook.events alter column created_at set default now()").unwrap();
        Spi::run("alter table webhook.events alter column idempotency_key set default 'k'")
            .unwrap();
        assert_eq!(outcome(3), "stored");
        assert_eq!(
            count(
                "select count(*) from webhook.events where payload::jsonb -> 'new' ->> 'id' = '3'
                   and idempotency_key = 'k'"
            ),
            1
        );
        Spi::run("alter table webhook.events alter column idempotency_key drop default").unwrap();
        // NOT NULL on a column the capture leaves empty: refused, as the
        // INSERT would refuse it, not stored anyway.
        Spi::run("update webhook.events set idempotency_key = 'old'").unwrap();
        Spi::run("alter table webhook.events alter column idempotency_key set not null").unwrap();
        assert_eq!(outcome(4), "23502");
        Spi::run("alter table webhook.events alter column idempotency_key drop not null").unwrap();
        // The slot's partition attached with another bound: no row lands
        // where the bound says it may not be.
        Spi::run(
            "do $$ declare s int := webhook._current_slot(); begin
                 execute format('alter table webhook.events detach partition webhook.events_%s', s);
                 execute format('delete from webhook.events_%s', s);
                 execute format('alter table webhook.events attach partition webhook.events_%s for values in (%s)', s, 100 + s);
             end $$",
        )
        .unwrap();
        assert_eq!(
            outcome(5),
            "23514",
            "the partition constraint, as an INSERT would report it"
        );
        assert_eq!(
            count(
                "select count(*) from webhook.events where payload::jsonb -> 'new' ->> 'id' = '5'"
            ),
            0
        );
    }

    #[pg_test]
    fn watch_can_limit_the_columns_sent() {
        Spi::run("create table users (id int, email text, password_hash text)").unwrap();
        Spi::run("select webhook_watch('users', columns => '{id,email}')").unwrap();
        Spi::run("insert into users values (1, 'a@example.com', 'secret')").unwrap();
        Spi::run("update users set email = 'b@example.com'").unwrap();
        assert_eq!(
            count("select count(*) from webhook.events where payload::jsonb -> 'new' = '{\"id\": 1, \"email\": \"a@example.com\"}'"),
            1
        );
        assert_eq!(
            count("select count(*) from webhook.events where payload::jsonb -> 'old' = '{\"id\": 1, \"email\": \"a@example.com\"}' \
                   and payload::jsonb -> 'new' = '{\"id\": 1, \"email\": \"b@example.com\"}'"),
            1,
            "the hash is never sent"
        );
    }

    /// A row as SQL shows it, on every major: generated columns (stored,
    /// and on 18 virtual, which PostgreSQL leaves uncomputed in a trigger)
    /// carry the values a SELECT gives, before and after an UPDATE.
    #[pg_test]
    fn a_captured_row_carries_its_generated_columns() {
        let pg18 = cfg!(feature = "pg18");
        let virtual_columns = if pg18 {
            ", c int generated always as (a * 3) virtual, d text generated always as ('#' || a) virtual"
        } else {
            ""
        };
        Spi::run(&format!(
            "create table g (id int primary key, a int, b int generated always as (a * 2) stored{virtual_columns})"
        ))
        .unwrap();
        Spi::run("select webhook_watch('g', event_prefix => 'g')").unwrap();
        let jsonb = |sql: &str| Spi::get_one::<pgrx::JsonB>(sql).unwrap().unwrap().0;
        let selected = || jsonb("select to_jsonb(g) from g");
        Spi::run("insert into g (id, a) values (1, 5)").unwrap();
        let inserted = selected();
        Spi::run("update g set a = 7").unwrap();
        let updated = selected();
        Spi::run("delete from g").unwrap();
        assert_eq!(inserted["b"], 10);
        if pg18 {
            assert_eq!((&inserted["c"], &inserted["d"]), (&15.into(), &"#5".into()));
        }
        let captured = |op: &str, side: &str| {
            jsonb(&format!(
                "select payload::jsonb -> '{side}' from webhook.events where event_type = 'g.{op}'"
            ))
        };
        assert_eq!(captured("created", "new"), inserted);
        assert_eq!(captured("updated", "old"), inserted);
        assert_eq!(captured("updated", "new"), updated);
        assert_eq!(captured("deleted", "old"), updated);
    }

    /// MERGE fires the same row triggers as INSERT, UPDATE and DELETE: each
    /// row it changes is captured as that change, with RETURNING (new in
    /// 17) as without.
    #[pg_test]
    fn merge_is_captured_like_insert_update_and_delete() {
        Spi::run("create table stock (id int primary key, qty int)").unwrap();
        Spi::run("select webhook_watch('stock', event_prefix => 'stock')").unwrap();
        let merge = "merge into stock s
             using (values (1, 0), (2, 25), (3, 30)) v(id, qty) on s.id = v.id
             when matched and v.qty = 0 then delete
             when matched then update set qty = v.qty
             when not matched then insert values (v.id, v.qty)";
        let reset = || {
            Spi::run("delete from stock; insert into stock values (1, 10), (2, 20); delete from webhook.events")
                .unwrap()
        };
        let captured = || {
            Spi::get_one::<String>(
                "select string_agg(e.event_type || ' ' || e.id || ' ' || e.op, ', ' order by e.id)
                 from (select event_type, payload::jsonb ->> 'op' as op,
                              coalesce(payload::jsonb -> 'new' ->> 'id', payload::jsonb -> 'old' ->> 'id') as id
                       from webhook.events) e",
            )
            .unwrap()
            .unwrap()
        };
        let expected = "stock.deleted 1 DELETE, stock.updated 2 UPDATE, stock.created 3 INSERT";
        reset();
        Spi::run(merge).unwrap();
        assert_eq!(captured(), expected);
        assert_eq!(
            count("select count(*) from webhook.events where payload::jsonb -> 'new' ->> 'qty' = '25'"),
            1
        );
        if cfg!(any(feature = "pg17", feature = "pg18")) {
            reset();
            // In a WITH query: pgrx 0.18's SPI does not know the status of a
            // bare MERGE … RETURNING (SPI_OK_MERGE_RETURNING, new in 17).
            let returned = count(&format!(
                "with m as ({merge} returning merge_action(), s.id) select count(*) from m"
            ));
            assert_eq!(returned, 3);
            assert_eq!(captured(), expected);
        }
    }

    #[pg_test(error = "table public.users has no column nope")]
    fn watch_rejects_unknown_columns() {
        Spi::run("create table users (id int)").unwrap();
        Spi::run("select webhook_watch('users', columns => '{id,nope}')").unwrap();
    }

    #[pg_test(
        error = "event types starting with \"webhook.\" are reserved for pg_webhook's own events, not 'webhook.test'"
    )]
    fn webhook_prefix_is_reserved() {
        Spi::run("select webhook_publish('webhook.test', '{}')").unwrap();
    }

    #[pg_test]
    fn message_ids_are_namespaced_and_stable() {
        let (legacy, current) = Spi::get_two::<String, String>(
            "select webhook._message_id(0, 42, null), webhook._message_id(webhook._vxid(), 42, webhook._id_namespace())",
        )
        .unwrap();
        assert_eq!(legacy.unwrap(), "42", "0.1.0 events keep their number");
        let current = current.unwrap();
        assert!(
            current.starts_with("msg_") && current.len() == 36,
            "{current}"
        );
        assert!(current.ends_with("000000000000002a"), "{current}");
        let (before_0_3, namespace) = Spi::get_two::<String, String>(
            "select webhook._message_id(webhook._vxid(), 42, null), \
                    lpad(to_hex(webhook._id_namespace()), 16, '0')",
        )
        .unwrap();
        assert_eq!(
            current,
            format!("msg_{}000000000000002a", namespace.unwrap()),
            "0.3.0 on: the namespace of the session that wrote the event"
        );
        assert_eq!(
            before_0_3.unwrap(),
            Spi::get_one::<String>(
                "select 'msg_' || namespace || '000000000000002a' from webhook.incarnations"
            )
            .unwrap()
            .unwrap(),
            "0.2.0's events keep their incarnation's namespace"
        );
        assert_eq!(
            count(&format!(
                "select webhook.message_event_id('{current}') + webhook.message_event_id('{legacy}')",
                legacy = "42"
            )),
            84,
            "the event id comes back out of both kinds of webhook-id"
        );
        assert_eq!(
            count("select count(webhook.message_event_id(x)) from unnest(array['msg_', 'msg_zz', '', '-1', 'msg_0123456789abcdef80000000000000ff']) x"),
            0,
            "anything else is null"
        );
    }

    #[pg_test]
    fn latency_histogram_percentiles_are_bucket_bounds() {
        let (b1, b2, b5, top) = (
            count("select webhook._latency_bucket(0.3)"),
            count("select webhook._latency_bucket(1.5)"),
            count("select webhook._latency_bucket(12)"),
            count("select webhook._latency_bucket(1e9)"),
        );
        assert_eq!((b1, b2, b5, top), (1, 2, 5, 20));
        let p50 = Spi::get_one::<f64>(
            "select webhook._hist_percentile(array[0,0,0,10,0,0,0,0,0,1]::bigint[], 0.5)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p50, 8.0);
        let p95 = Spi::get_one::<f64>(
            "select webhook._hist_percentile(array[0,0,0,10,0,0,0,0,0,1]::bigint[], 0.95)",
        )
        .unwrap()
        .unwrap();
        assert_eq!(p95, 512.0);
    }

    #[pg_test]
    fn payload_contains_old_and_new_on_update() {
        Spi::run("create table t (id int, price numeric, tags text[], at date)").unwrap();
        Spi::run("select webhook_watch('t', array['update'])").unwrap();
        Spi::run("insert into t values (1, 9.50, '{a,b}', '2026-01-02')").unwrap();
        assert_eq!(
            count("select count(*) from webhook.events"),
            0,
            "only updates are watched"
        );
        Spi::run("update t set price = 10.25").unwrap();
        let payload = Spi::get_one::<pgrx::JsonB>("select payload::jsonb from webhook.events")
            .unwrap()
            .unwrap()
            .0;
        // A numeric as PostgreSQL renders it in JSON.
        let serde_json_number = |s: &str| {
            Spi::get_one::<pgrx::JsonB>(&format!("select to_jsonb({s}::numeric)"))
                .unwrap()
                .unwrap()
                .0
        };
        assert_eq!(payload["op"], "UPDATE");
        assert_eq!(payload["table"], "t");
        assert_eq!(payload["schema"], "public");
        assert_eq!(payload["old"]["price"], serde_json_number("9.50"));
        assert_eq!(payload["new"]["price"], serde_json_number("10.25"));
        assert_eq!(payload["new"]["tags"][1], "b");
        assert_eq!(payload["new"]["at"], "2026-01-02");
        let event_type = Spi::get_one::<String>("select event_type from webhook.events")
            .unwrap()
            .unwrap();
        assert_eq!(event_type, "t.updated");
    }

    #[pg_test(error = "invalid webhook URL: the scheme must be http or https, not \"ftp\"")]
    fn create_endpoint_rejects_non_http_url() {
        subscribe("ftp://example.com/", "{*}");
    }

    #[pg_test(error = "webhook payload is 2009 bytes, over the limit of 1024 bytes")]
    fn guc_max_payload_bytes_is_enforced() {
        subscribe("https://a.example.com/", "{*}");
        Spi::run("set pg_webhook.max_payload_bytes = 1024").unwrap();
        Spi::run("select webhook_publish('big.one', jsonb_build_object('x', repeat('a', 2000)))")
            .unwrap();
    }

    #[pg_test]
    fn a_row_too_large_still_commits_and_its_event_carries_the_key() {
        subscribe("https://a.example.com/", "{*}");
        Spi::run(
            "create table docs (tenant int, id int, body text, primary key (id, tenant));
             select webhook_watch('docs');
             set pg_webhook.max_payload_bytes = 1024;
             insert into docs values (3, 7, repeat('x', 5000));",
        )
        .unwrap();
        let payload = Spi::get_one::<pgrx::JsonB>("select payload::jsonb from webhook.events")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(payload["truncated"], true);
        assert_eq!(payload["new"], serde_json::json!({"tenant": 3, "id": 7}));
        assert_eq!(payload["old"], serde_json::Value::Null);
        assert_eq!(payload["op"], "INSERT");
        assert_eq!(
            count("select count(*) from docs"),
            1,
            "the writer's row is there"
        );
        // A row that fits is sent whole, without the flag.
        Spi::run("insert into docs values (3, 8, 'small')").unwrap();
        let small = Spi::get_one::<pgrx::JsonB>(
            "select payload::jsonb from webhook.events order by id desc limit 1",
        )
        .unwrap()
        .unwrap()
        .0;
        assert_eq!(small["new"]["body"], "small");
        assert!(small.get("truncated").is_none());
    }

    #[pg_test]
    fn capture_can_be_turned_off_for_a_session() {
        subscribe("https://a.example.com/", "{*}");
        Spi::run("create table bulk (id int); select webhook_watch('bulk')").unwrap();
        Spi::run("set pg_webhook.capture_enabled = off").unwrap();
        Spi::run("insert into bulk select generate_series(1, 10)").unwrap();
        Spi::run("set pg_webhook.capture_enabled = on").unwrap();
        Spi::run("insert into bulk values (11)").unwrap();
        assert_eq!(count("select count(*) from webhook.events"), 1);
    }

    #[pg_test]
    fn unwatch_removes_the_trigger() {
        Spi::run("create table w (id int); select webhook_watch('w')").unwrap();
        assert!(Spi::get_one::<bool>("select webhook_unwatch('w')")
            .unwrap()
            .unwrap());
        assert!(!Spi::get_one::<bool>("select webhook_unwatch('w')")
            .unwrap()
            .unwrap());
        Spi::run("insert into w values (1)").unwrap();
        assert_eq!(count("select count(*) from webhook.events"), 0);
    }

    #[pg_test]
    fn unsubscribe_cancels_what_is_held_and_keeps_history() {
        let a = subscribe("https://a.example.com/", "{*}");
        let b = subscribe("https://b.example.com/", "{*}");
        Spi::run(&format!(
            "select webhook_send_test({a}), webhook_send_test({b})"
        ))
        .unwrap();
        Spi::run(&format!("select webhook_pause({b})")).unwrap();
        for id in [a, b] {
            assert!(
                Spi::get_one::<bool>(&format!("select webhook_unsubscribe({id})"))
                    .unwrap()
                    .unwrap()
            );
        }
        assert!(
            !Spi::get_one::<bool>(&format!("select webhook_unsubscribe({a})"))
                .unwrap()
                .unwrap(),
            "removing twice is a no-op"
        );
        assert_eq!(
            count(&format!("select count(*) from webhook.deliveries where endpoint_id = {b} and status = 'cancelled'")),
            1,
            "what a paused endpoint held can never be sent"
        );
        assert_eq!(
            count(&format!("select count(*) from webhook.deliveries where endpoint_id = {a} and status = 'pending'")),
            1,
            "what was committed while subscribed still goes out"
        );
        assert_eq!(
            count("select count(*) from webhook.endpoint_secrets"),
            2,
            "secrets stay until the fan-out has passed the removal and nothing is left to send"
        );
        assert_eq!(
            count("select count(*) from webhook.subscriptions where until_txid = webhook._vxid()"),
            2
        );
    }

    #[pg_test]
    fn operator_events_follow_runs_of_failures_and_never_report_their_own_deliveries() {
        let endpoint = subscribe("https://a.example.com/", "{*}");
        Spi::run("set local pg_webhook.failing_after = 2").unwrap();
        let claim = "select delivery_id, lease_token from webhook._claim_deliveries('w', 10, '30 seconds', 100, '{}', '{}', 0, 1048576) \
                     where delivery_id is not null";
        // One test delivery after another, each recorded with `outcome`.
        let attempt = |outcome: &str, status: i32| {
            Spi::run(&format!("select webhook_send_test({endpoint})")).unwrap();
            let (id, token) = Spi::get_two::<i64, i64>(claim).unwrap();
            Spi::run(&format!(
                "select webhook._record_attempts('w', array[{}]::bigint[], array[{}]::bigint[], array[{endpoint}]::bigint[], array[1], \
                 array[clock_timestamp()], array[1.5::float8], array[{status}], array['x'], array[null]::text[], array['{outcome}'], \
                 array[null]::bigint[])",
                id.unwrap(),
                token.unwrap()
            ))
            .unwrap();
        };
        let events = |t: &str| {
            count(&format!(
                "select count(*) from webhook.events where event_type = '{t}'"
            ))
        };
        attempt("failed", 500);
        assert_eq!(
            events("webhook.endpoint.failing"),
            0,
            "one failure is not a run"
        );
        attempt("failed", 500);
        assert_eq!(events("webhook.endpoint.failing"), 1, "the second is");
        attempt("failed", 500);
        assert_eq!(events("webhook.endpoint.failing"), 1, "once per run");
        assert_eq!(
            events("webhook.delivery.exhausted"),
            0,
            "deliveries of pg_webhook's own events (webhook.test here) are not reported"
        );
        attempt("succeeded", 200);
        assert_eq!(events("webhook.endpoint.recovered"), 1);
        assert_eq!(
            count(&format!(
                "select count(*) from webhook.events where event_type = 'webhook.endpoint.recovered' \
                 and (payload ->> 'endpoint_id')::bigint = {endpoint} \
                 and (payload ->> 'consecutive_failures')::int = 3"
            )),
            1,
            "{}",
            Spi::get_one::<String>("select payload::text from webhook.events where event_type = 'webhook.endpoint.recovered'")
                .unwrap()
                .unwrap_or_default()
        );
        attempt("succeeded", 200);
        assert_eq!(events("webhook.endpoint.recovered"), 1, "once");
    }

    #[pg_test]
    fn record_moves_a_delivery_only_under_its_lease() {
        let endpoint = subscribe("https://a.example.com/", "{*}");
        Spi::run(&format!("select webhook_send_test({endpoint})")).unwrap();
        // The delivery rows (the others carry the endpoint's settings).
        let claim = "select delivery_id, lease_token from webhook._claim_deliveries('w', 10, '30 seconds', 100, '{}', '{}', 0, 1048576) \
                     where delivery_id is not null";
        let (id, token) = Spi::get_two::<i64, i64>(claim).unwrap();
        let (id, token) = (id.unwrap(), token.unwrap());
        assert_eq!(
            count(&format!("select count(*) from ({claim}) c")),
            0,
            "leased rows are not due"
        );
        let record = |t: i64, outcome: &str| {
            Spi::get_one::<i32>(&format!(
                "select webhook._record_attempts('w', array[{id}]::bigint[], array[{t}]::bigint[], array[{endpoint}]::bigint[], array[1], \
                 array[now()], array[1.5::float8], array[200], array['ok'], array[null]::text[], array['{outcome}'], array[null]::bigint[])"
            ))
            .unwrap()
            .unwrap()
        };
        assert_eq!(
            record(token + 1, "succeeded"),
            0,
            "a stale lease moves nothing"
        );
        assert_eq!(record(token, "succeeded"), 1);
        assert_eq!(
            count("select count(*) from webhook.deliveries where status = 'succeeded' and slot is not null"),
            1,
            "a finished delivery leaves the open partition"
        );
        assert_eq!(
            count(&format!(
                "select count(*) from webhook.attempts where endpoint_id = {endpoint}"
            )),
            2,
            "every attempt is logged, with its endpoint"
        );
        assert_eq!(
            count(&format!(
                "select count(*) from webhook.attempts where endpoint_id = {endpoint} and not lease_held"
            )),
            1,
            "the attempt recorded without the lease is marked as such"
        );
        // Attempts of deliveries that do not exist (or of another endpoint)
        // are not logged at all: the worker role cannot fill the log with
        // attempts nobody made.
        Spi::run(&format!(
            "select webhook._record_attempts('w', array[{id} + 1000, {id}]::bigint[], array[1, 2]::bigint[], \
             array[{endpoint}, {endpoint} + 1]::bigint[], array[1, 1], array[now(), now()], array[1.5, 1.5]::float8[], \
             array[200, 200], array['ok', 'ok'], array[null, null]::text[], array['succeeded', 'succeeded'], \
             array[null, null]::bigint[])"
        ))
        .unwrap();
        assert_eq!(count("select count(*) from webhook.attempts"), 2);
        assert_eq!(
            count(&format!(
                "select count(*) from webhook.endpoint_stats_hourly \
                 where endpoint_id = {endpoint} and attempts = 1 and successes = 1 and latency_hist[2] = 1"
            )),
            1,
            "the hourly counters count the attempt that moved the delivery (1.5 ms: bucket 2)"
        );
        assert_eq!(
            count(&format!(
                "select count(*) from webhook.endpoint_stats \
                 where endpoint_id = {endpoint} and attempts = 1 and latency_hist = webhook._hist_one(2, 1)"
            )),
            1
        );
    }

    #[pg_test]
    fn the_delivery_log_shows_each_attempt_and_each_delivery_no_attempt_moved() {
        let endpoint = subscribe("https://a.example.com/", "{*}");
        Spi::run(&format!("select webhook_send_test({endpoint})")).unwrap();
        let rows = |sql: &str| {
            count(&format!(
                "select count(*) from webhook.delivery_log where {sql}"
            ))
        };
        assert_eq!(rows("true"), 1);
        assert_eq!(
            rows("attempt_number is null and started_at is null and status = 'pending'"),
            1,
            "a delivery not tried yet shows once, without an attempt"
        );
        // Tried once, to be retried: its attempt shows, and no empty row.
        let (id, token) = Spi::get_two::<i64, i64>(
            "select delivery_id, lease_token from webhook._claim_deliveries('w', 10, '30 seconds', 100, '{}', '{}', 0, 1048576) \
             where row_kind = 'delivery'",
        )
        .unwrap();
        let (id, token) = (id.unwrap(), token.unwrap());
        Spi::run(&format!(
            "select webhook._record_attempts('w', array[{id}]::bigint[], array[{token}]::bigint[], array[{endpoint}]::bigint[], \
             array[1], array[now()], array[2.5::float8], array[500], array['no'], array[null]::text[], array['retry'], \
             array[60000]::bigint[])"
        ))
        .unwrap();
        assert_eq!(rows("true"), 1);
        assert_eq!(
            rows(&format!(
                "delivery_id = {id} and attempt_number = 1 and status_code = 500"
            )),
            1
        );
        // Another, then the endpoint paused and removed (what it held is
        // cancelled): the second ends cancelled unsent and shows once, first
        // in "latest attempts" order (a null sorts first when descending);
        // the first keeps its attempt only.
        Spi::run(&format!("select webhook_send_test({endpoint})")).unwrap();
        Spi::run(&format!("select webhook_pause({endpoint})")).unwrap();
        Spi::run(&format!("select webhook_unsubscribe({endpoint})")).unwrap();
        assert_eq!(rows("true"), 2);
        assert_eq!(rows("status = 'cancelled' and attempt_number is null"), 1);
        assert_eq!(
            rows(&format!("delivery_id = {id} and attempt_number is null")),
            0
        );
        assert_eq!(
            count(&format!(
                "select count(*) from (select delivery_id from webhook.delivery_log order by started_at desc limit 1) l \
                 where l.delivery_id <> {id}"
            )),
            1
        );
        // Every row names its event's webhook-id.
        assert_eq!(
            rows(
                "message_id is distinct from (select webhook._message_id(e.txid, e.id, e.id_namespace) \
                 from webhook.events e where e.id = delivery_log.event_id)"
            ),
            0
        );
    }

    #[pg_test]
    fn a_claim_takes_the_deliveries_whose_payloads_fit_and_at_least_one() {
        let endpoint = subscribe("https://a.example.com/", "{*}");
        for _ in 0..3 {
            Spi::run(&format!("select webhook_send_test({endpoint})")).unwrap();
        }
        let bytes = count("select min(payload_bytes)::bigint from webhook.events");
        assert!(bytes > 10, "{bytes}");
        let claim = |max: i64| {
            count(&format!(
                "select count(*) from webhook._claim_deliveries('w', 10, '30 seconds', 100, '{{}}', '{{}}', 0, {max}) \
                 where delivery_id is not null"
            ))
        };
        assert_eq!(
            claim(1),
            1,
            "one delivery even when it is larger than the budget"
        );
        assert_eq!(claim(bytes), 1, "then exactly what fits");
        assert_eq!(claim(10 * bytes), 1, "and what is left");
        assert_eq!(claim(10 * bytes), 0);
    }

    #[pg_test]
    fn a_claim_sends_each_endpoints_settings_once() {
        let a = subscribe("https://a.example.com/", "{*}");
        let b = subscribe("https://b.example.com/", "{*}");
        for e in [a, a, a, b] {
            Spi::run(&format!("select webhook_send_test({e})")).unwrap();
        }
        Spi::run(
            "create temp table c as select * from webhook._claim_deliveries('w', 10, '30 seconds', 100, '{}', '{}', 0, 1048576)",
        )
        .unwrap();
        assert_eq!(
            count("select count(*) from c where delivery_id is not null and url is null"),
            4
        );
        assert_eq!(
            count(&format!(
                "select count(*) from c where delivery_id is null and url is not null and cardinality(secrets) = 1 \
                 and endpoint_id in ({a}, {b})"
            )),
            2,
            "one row of settings per endpoint"
        );
        assert_eq!(
            count(
                "select count(*) from c d join webhook.events e on e.id = d.event_id \
                 where d.message_namespace = lpad(to_hex(webhook._id_namespace()), 16, '0') \
                   and webhook._message_id(e.txid, e.id, e.id_namespace) = 'msg_' || d.message_namespace || lpad(to_hex(d.event_id), 16, '0') \
                   and d.event_created_at = e.created_at"
            ),
            4,
            "the parts the worker makes the webhook-id and timestamp from"
        );
    }

    #[pg_test]
    fn histograms_add_element_by_element() {
        assert_eq!(
            count("select count(*) where webhook._hist_add('{1,2,3}', '{10,20}') = '{11,22,3}'"),
            1
        );
        assert_eq!(
            count("select count(*) from (select webhook._hist_sum(h) as s from (values ('{1,2}'::integer[]), ('{0,0,5}'), (null)) v(h)) x where x.s = '{1,2,5}'"),
            1
        );
    }

    /// Every function of the extension resolves names independently of its
    /// caller: a SQL or PL/pgSQL function either has a SQL-standard body
    /// (parsed when created) or pins a search_path of trusted schemas with
    /// the session's temporary schema last. (C functions parse nothing;
    /// the ones that run SQL set the safe search_path themselves, see
    /// privilege.rs, and the end-to-end planted-object tests cover them.)
    #[pg_test]
    fn every_function_resolves_names_independently_of_its_caller() {
        let offenders = Spi::get_one::<Vec<String>>(
            "select coalesce(array_agg(p.oid::regprocedure::text order by 1), '{}') \
             from pg_proc p \
             join pg_depend d on d.objid = p.oid and d.classid = 'pg_proc'::regclass and d.deptype = 'e' \
             join pg_extension e on e.oid = d.refobjid and e.extname = 'pg_webhook' \
             join pg_language l on l.oid = p.prolang \
             where p.prokind <> 'a' and l.lanname not in ('c', 'internal') \
               and p.prosqlbody is null \
               and not exists (select from unnest(p.proconfig) c \
                               where c in ('search_path=pg_catalog, pg_temp', 'search_path=pg_catalog, webhook, pg_temp'))",
        )
        .unwrap()
        .unwrap();
        assert!(
            offenders.is_empty(),
            "functions that would resolve names through their caller's search_path: {offenders:?}"
        );
        assert!(
            count(
                "select count(*) from pg_proc p join pg_depend d on d.objid = p.oid and d.deptype = 'e' \
                 join pg_extension e on e.oid = d.refobjid and e.extname = 'pg_webhook' \
                 where p.prosqlbody is not null"
            ) >= 7,
            "the small SQL functions keep their SQL-standard bodies"
        );
    }

    #[pg_test]
    fn a_watched_partitioned_table_is_reported_by_its_own_name() {
        Spi::run(
            "create table measures (id int, at date, v int) partition by range (at);
             create table measures_2026 partition of measures for values from ('2026-01-01') to ('2027-01-01');
             create table measures_2027 partition of measures
                 for values from ('2027-01-01') to ('2028-01-01') partition by range (id);
             create table measures_2027_low partition of measures_2027 for values from (0) to (100);
             select webhook_watch('measures');
             insert into measures values (1, '2026-06-01', 1), (2, '2027-06-01', 2);",
        )
        .unwrap();
        assert_eq!(
            count(
                "select count(*) from webhook.events \
                 where payload->>'table' = 'measures' and source_table = 'public.measures' \
                   and event_type = 'measures.created'"
            ),
            2,
            "receivers see the watched table, not its partitions"
        );
        assert_eq!(
            count("select count(*) from webhook.event_types where source = 'watched'"),
            3,
            "one table watched (three operations), whatever its partitions"
        );
    }

    #[pg_test]
    fn a_shard_reports_the_distributed_table_its_trigger_names() {
        // What Citus makes of webhook_watch on a distributed table: the
        // trigger, arguments and all, on each shard (`<table>_<shard id>`).
        Spi::run(
            r#"create schema "Sales";
             create table "Sales"."Orders_102008" (id int primary key, total int);
             create trigger webhook_capture after insert or update on "Sales"."Orders_102008"
                 for each row execute function webhook._capture('@table', 'Sales', 'Orders', 'order', 'id');
             insert into "Sales"."Orders_102008" values (1, 10);"#,
        )
        .unwrap();
        assert_eq!(
            count(
                r#"select count(*) from webhook.events
                   where payload->>'table' = 'Orders' and payload->>'schema' = 'Sales'
                     and source_table = '"Sales"."Orders"' and event_type = 'order.created'
                     and (payload->'new')::jsonb = '{"id": 1}'::jsonb"#
            ),
            1,
            "receivers see the distributed table, with only the watched columns"
        );
        assert_eq!(
            count(
                "select count(*) from webhook.event_types \
                 where source = 'watched' and event_type in ('order.created', 'order.updated')"
            ),
            2,
            "the prefix after the table's names"
        );
        // Without Citus, a table is a plain one: watched under its own name.
        assert_eq!(
            Spi::get_one::<String>(
                r#"select webhook._citus_table_kind('"Sales"."Orders_102008"')"#
            )
            .unwrap(),
            None
        );
    }

    #[pg_test]
    fn each_rule_is_defined_once_and_inlined_where_it_runs() {
        let plan = |sql: &str| -> String {
            // Read-write: SPI refuses EXPLAIN in a read-only (select) call.
            Spi::connect_mut(|c| {
                c.update(&format!("explain (costs off, verbose) {sql}"), None, &[])
                    .unwrap()
                    .map(|row| row.get::<String>(1).unwrap().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        };
        // The skip scan and the quotas: planned into their callers, not
        // run as functions (which would be planned again at every call).
        let quotas = plan("select * from webhook._endpoint_quotas(8, '{}', '{}')");
        assert!(
            !quotas.contains("Function Scan on webhook._endpoint")
                && quotas.contains("deliveries_open_due"),
            "{quotas}"
        );
        // The webhook-id rule: the view's column is the inlined expression,
        // so that the planner sees through it.
        let log = plan("select message_id from webhook.delivery_log");
        assert!(
            !log.contains("_webhook_id(") && log.contains("lpad"),
            "{log}"
        );
        // Of the delivery's own columns, as the finished deliveries' hash
        // index holds it: among 5,000 finished deliveries, a receiver's
        // webhook-id is an index read (only if the expressions match).
        Spi::run(
            "insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status,
                                             finalized_at, last_attempt_at, event_namespace)
             select i, 3, i, 1, 3, 1, 'succeeded', now(), now(), 255 from generate_series(1, 5000) i;
             insert into webhook.attempts (slot, delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                                           status_code, worker_id)
             select 3, i, 1, 1, now(), 5, 200, 'w' from generate_series(1, 5000) i;
             analyze webhook.deliveries_3, webhook.attempts_3;",
        )
        .unwrap();
        let by_id = plan(
            "select * from webhook.delivery_log where message_id = 'msg_00000000000000ff000000000000002a'",
        );
        assert!(by_id.contains("deliveries_3_message"), "{by_id}");
        // And it gives what webhook._message_id gives, for each kind of event.
        Spi::run(
            "insert into webhook.incarnations (n, system_identifier, database_oid, namespace)
                 values (7, 1, 1, '00000000000000aa');",
        )
        .unwrap();
        for (txid, ns, expected) in [
            ("5", "null", "42"),
            (
                "(7::bigint << 48) + 5",
                "null",
                "msg_00000000000000aa000000000000002a",
            ),
            (
                "(7::bigint << 48) + 5",
                "255",
                "msg_00000000000000ff000000000000002a",
            ),
            (
                "(9::bigint << 48) + 5",
                "null",
                "msg_0000000000000000000000000000002a",
            ),
        ] {
            let got =
                Spi::get_one::<String>(&format!("select webhook._message_id({txid}, 42, {ns})"))
                    .unwrap()
                    .unwrap();
            assert_eq!(got, expected, "txid {txid}, namespace {ns}");
        }
    }

    #[pg_test]
    fn the_capture_knows_the_number_of_slots() {
        assert_eq!(count("select webhook._slots()"), crate::store::SLOTS as i64);
    }

    #[pg_test]
    fn a_truncated_event_never_carries_a_column_the_watch_left_out() {
        subscribe("https://a.example.com/", "{*}");
        Spi::run(
            "create table people (email text primary key, bio text);
             select webhook_watch('people', columns => '{bio}');
             set pg_webhook.max_payload_bytes = 1024;
             insert into people values ('someone@example.com', repeat('x', 5000));",
        )
        .unwrap();
        let payload = Spi::get_one::<pgrx::JsonB>("select payload::jsonb from webhook.events")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(payload["truncated"], true);
        assert_eq!(
            payload["new"],
            serde_json::json!({}),
            "the key (email) was not chosen: nothing of the row is sent"
        );
    }

    #[pg_test(
        error = "webhook._capture: the event prefix \"webhook\" is reserved for pg_webhook's own events; install the trigger with webhook_watch() and another prefix"
    )]
    fn a_capture_trigger_attached_by_hand_cannot_emit_reserved_types() {
        Spi::run(
            "create table sneaky (id int);
             create trigger webhook_capture after insert on sneaky
                 for each row execute function webhook._capture('webhook.endpoint');
             insert into sneaky values (1);",
        )
        .unwrap();
    }

    #[pg_test]
    fn nothing_is_granted_to_public() {
        assert_eq!(
            count(
                "select count(*) from pg_proc p join pg_depend d on d.objid = p.oid and d.deptype = 'e' \
                 join pg_extension e on e.oid = d.refobjid and e.extname = 'pg_webhook' \
                 where has_function_privilege('public', p.oid, 'execute')"
            ),
            0
        );
        assert_eq!(
            count(
                "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                   where n.nspname = 'webhook' and has_table_privilege('public', c.oid, 'select')"
            ),
            0
        );
        assert!(Spi::get_one::<bool>(
            "select has_function_privilege('webhook_publisher', 'webhook_publish(text, jsonb, text, text)', 'execute')"
        )
        .unwrap()
        .unwrap());
        assert!(!Spi::get_one::<bool>(
            "select has_function_privilege('webhook_publisher', 'webhook._capture()', 'execute')"
        )
        .unwrap()
        .unwrap());
    }

    #[pg_test]
    fn secrets_are_not_readable_by_analysts() {
        assert!(!Spi::get_one::<bool>(
            "select has_table_privilege('webhook_reader', 'webhook.endpoint_secrets', 'select')"
        )
        .unwrap()
        .unwrap());
        assert!(Spi::get_one::<bool>(
            "select has_table_privilege('webhook_reader', 'webhook.endpoints', 'select')"
        )
        .unwrap()
        .unwrap());
        assert!(!Spi::get_one::<bool>(
            "select has_table_privilege('public', 'webhook.endpoint_secrets', 'select')"
        )
        .unwrap()
        .unwrap());
        // URLs: readers see the origin; the whole one sits with the secrets,
        // where admins (and only they) may read it.
        subscribe(
            "https://hooks.example.com/services/T000/B000/XXXX?token=abc",
            "{*}",
        );
        assert_eq!(
            Spi::get_one::<String>("select url from webhook.endpoints")
                .unwrap()
                .unwrap(),
            "https://hooks.example.com/…"
        );
        assert_eq!(
            Spi::get_one::<String>("select url from webhook.endpoint_secrets")
                .unwrap()
                .unwrap(),
            "https://hooks.example.com/services/T000/B000/XXXX?token=abc"
        );
        assert!(Spi::get_one::<bool>(
            "select has_column_privilege('webhook_admin', 'webhook.endpoint_secrets', 'url', 'select') \
                and not has_column_privilege('webhook_admin', 'webhook.endpoint_secrets', 'secret', 'select') \
                and not has_column_privilege('webhook_reader', 'webhook.endpoint_secrets', 'url', 'select')"
        )
        .unwrap()
        .unwrap());
    }

    #[pg_test(error = "auth takes at most 8192 bytes")]
    fn auth_is_bounded_like_headers() {
        Spi::run(
            "select webhook_subscribe('https://a.example.com/', \
                 auth => jsonb_build_object('type', 'bearer', 'token', repeat('t', 9000)))",
        )
        .unwrap();
    }

    /// The SQLSTATE `sql` fails with, or 00000.
    fn sqlstate_of(sql: &str) -> String {
        Spi::run(
            "create or replace function pg_temp.sqlstate_of(q text) returns text language plpgsql as \
             $$ begin execute q; return '00000'; exception when others then return sqlstate; end $$",
        )
        .unwrap();
        Spi::get_one_with_args::<String>("select pg_temp.sqlstate_of($1)", &[sql.into()])
            .unwrap()
            .unwrap()
    }

    #[pg_test]
    fn a_watch_with_when_captures_only_the_rows_that_match() {
        Spi::run(
            "create table orders (id int primary key, status text); \
             select webhook_watch('orders', '{insert,update}', \"when\" => 'new.status = ''paid'' -- paid only')",
        )
        .unwrap();
        Spi::run("insert into orders values (1, 'open'), (2, 'paid'); update orders set status = 'paid' where id = 1")
            .unwrap();
        assert_eq!(
            Spi::get_one::<String>(
                "select string_agg(event_type || ':' || (payload -> 'new' ->> 'id'), ',' order by id) from webhook.events"
            )
            .unwrap()
            .unwrap(),
            "orders.created:2,orders.updated:1",
            "a row that does not match writes no event"
        );
        // Conditions PostgreSQL cannot put on the trigger: a clear error,
        // and the watch before it stays.
        for (sql, state) in [
            // new on delete, old on insert
            (
                "select webhook_watch('orders', \"when\" => 'new.status = ''paid''')",
                "42P17",
            ),
            (
                "select webhook_watch('orders', '{insert}', \"when\" => 'old.status = ''paid''')",
                "42P17",
            ),
            (
                "select webhook_watch('orders', \"when\" => 'new.nope = 1')",
                "42703",
            ),
            (
                "select webhook_watch('orders', '{insert}', \"when\" => 'new.status =')",
                "42601",
            ),
            ("select webhook_watch('orders', \"when\" => ' ')", "22023"),
        ] {
            assert_eq!(sqlstate_of(sql), state, "{sql}");
        }
        assert_eq!(
            count("select count(*) from pg_trigger where tgname = 'webhook_capture' and tgqual is not null"),
            1
        );
        assert_eq!(
            sqlstate_of("select webhook_watch('orders', '{update,delete}', \"when\" => 'old.status = ''paid''')"),
            "00000"
        );
    }

    #[pg_test]
    fn a_filter_is_checked_when_defined_and_runs_without_rights() {
        for (filter, state) in [
            ("data->>'x' =", "42601"),
            ("true)) or ((true", "42601"),
            ("true; select true", "42601"),
            ("nope = 1", "42703"),
            ("1", "42P13"),
            ("exists (select from webhook.endpoint_secrets)", "42501"),
            ("exists (select from pg_authid)", "42501"),
            ("  ", "00000"), // no filter
        ] {
            assert_eq!(
                sqlstate_of(&format!(
                    "select webhook_subscribe('https://a.example.com/', filter => {})",
                    pgrx::spi::quote_literal(filter)
                )),
                state,
                "{filter}"
            );
        }
        assert_eq!(
            count("select count(*) from webhook.subscriptions where filter is not null"),
            0,
            "a filter refused leaves nothing behind"
        );
        // Filters run as webhook_filter: while it has rights, none is taken.
        Spi::run("alter role webhook_filter login").unwrap();
        assert_eq!(
            sqlstate_of("select webhook_subscribe('https://a.example.com/', filter => 'true')"),
            "42501"
        );
        Spi::run("alter role webhook_filter nologin").unwrap();
        let endpoint = Spi::get_one::<i64>(
            "select endpoint_id from webhook_subscribe('https://a.example.com/', \
             filter => '(data->>''amount'')::numeric > 100')",
        )
        .unwrap()
        .unwrap();
        let sub = count(&format!(
            "select id from webhook.subscriptions where endpoint_id = {endpoint}"
        ));
        // It runs as webhook_filter, through the dispatcher: true, false,
        // or null for its error.
        assert_eq!(
            Spi::get_one::<String>(&format!(
                "select concat_ws(',', webhook._filter_match({sub}, '{{\"amount\": 500}}', 'x', false), \
                 webhook._filter_match({sub}, '{{\"amount\": 5}}', 'x', false), \
                 coalesce(webhook._filter_match({sub}, '{{\"amount\": \"abc\"}}', 'x', true)::text, 'error'))"
            ))
            .unwrap()
            .unwrap(),
            "t,f,error"
        );
        assert_eq!(
            Spi::get_one::<String>(&format!(
                "select p.proowner::regrole::text || ' ' || p.prosecdef from pg_proc p \
                 where p.oid = 'webhook._filter_{sub}(jsonb, text)'::regprocedure"
            ))
            .unwrap()
            .unwrap(),
            "webhook_filter true"
        );
        // A new filter is a new period; '' removes it.
        Spi::run(&format!(
            "select webhook_update({endpoint}, filter => 'data->>''status'' = ''paid'''); \
             select webhook_update({endpoint}, event_types => '{{order.*}}'); \
             select webhook_update({endpoint}, filter => '')"
        ))
        .unwrap();
        assert_eq!(
            Spi::get_one::<String>(&format!(
                "select string_agg(coalesce(filter, '-') || ' ' || event_types::text, ' | ' order by id) \
                 from webhook.subscriptions where endpoint_id = {endpoint}"
            ))
            .unwrap()
            .unwrap(),
            "(data->>'amount')::numeric > 100 {*} | data->>'status' = 'paid' {*} | data->>'status' = 'paid' {order.*} | - {order.*}"
        );
        assert!(Spi::get_one::<bool>(&format!(
            "select e.filter is null from webhook.endpoints e where e.id = {endpoint}"
        ))
        .unwrap()
        .unwrap());
        // The dry run: each of the last events, matched or the error.
        Spi::run(
            "select webhook_publish('order.paid', '{\"amount\": 50}'); \
             select webhook_publish('order.paid', '{\"amount\": \"abc\"}'); \
             select webhook_publish('invoice.paid', '{\"amount\": 500}')",
        )
        .unwrap();
        assert_eq!(
            Spi::get_one::<String>(
                "select string_agg(concat_ws(':', event_type, matched, error), ', ' order by event_id) \
                 from webhook_filter_preview('(data->>''amount'')::numeric > 100', '{order.*}', 10)"
            )
            .unwrap()
            .unwrap(),
            "order.paid:f, order.paid:invalid input syntax for type numeric: \"abc\""
        );
        assert_eq!(
            count("select count(*) from pg_proc where proname like '\\_filter\\_-%'"),
            0,
            "the dry run leaves no function behind"
        );
    }

    #[pg_test]
    fn a_rate_limit_is_checked_and_taken_from_one_bucket() {
        for (sql, state) in [
            ("select webhook_subscribe('https://a.example.com/', max_per_second => 0)", "22023"),
            ("select webhook_subscribe('https://a.example.com/', burst => 5)", "22023"),
            ("select webhook_subscribe('https://a.example.com/', max_per_second => 5, burst => 0)", "22023"),
        ] {
            assert_eq!(sqlstate_of(sql), state, "{sql}");
        }
        let endpoint = Spi::get_one::<i64>(
            "select endpoint_id from webhook_subscribe('https://a.example.com/', max_per_second => 2, burst => 3)",
        )
        .unwrap()
        .unwrap();
        for _ in 0..10 {
            Spi::run(&format!("select webhook_send_test({endpoint})")).unwrap();
        }
        let claim = |limit: i32| {
            count(&format!(
                "select count(*) from webhook._claim_deliveries('w', {limit}, '30 seconds', 100, '{{}}', '{{}}', 0, 1048576) \
                 where row_kind = 'delivery'"
            ))
        };
        assert_eq!(claim(100), 3, "a full bucket: the burst");
        assert_eq!(claim(100), 0, "then nothing until the next token");
        // (The next-due time waits for it: webhook._next_due_ms, end to end.)
        let wait = count(&format!(
            "select (extract(epoch from webhook._token_at(tokens, updated_at, per_second) - updated_at) * 1000)::bigint              from webhook.endpoint_rates where endpoint_id = {endpoint}"
        ));
        assert!(
            (400..=500).contains(&wait),
            "the next token, half a second after the burst was taken: {wait} ms"
        );
        // A new setting, a new (full) bucket; tokens a claim did not use go back.
        Spi::run(&format!("select webhook_update({endpoint}, burst => 5)")).unwrap();
        assert_eq!(claim(2), 2);
        assert_eq!(
            count(&format!(
                "select floor(tokens)::bigint from webhook.endpoint_rates where endpoint_id = {endpoint}"
            )),
            3
        );
        // No limit: no bucket, nothing held back.
        Spi::run(&format!(
            "select webhook_update({endpoint}, max_per_second => 0)"
        ))
        .unwrap();
        assert_eq!(count("select count(*) from webhook.endpoint_rates"), 0);
        assert!(Spi::get_one::<bool>(&format!(
            "select max_per_second is null and burst is null from webhook.endpoints where id = {endpoint}"
        ))
        .unwrap()
        .unwrap());
        assert_eq!(claim(100), 5);
    }

    #[pg_test]
    fn generated_secrets_are_unique_whsec() {
        let (a, b) = Spi::get_two::<String, String>(
            "select webhook._generate_secret(), webhook._generate_secret()",
        )
        .unwrap();
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.starts_with("whsec_") && b.starts_with("whsec_"));
        assert_ne!(a, b);
    }

    #[pg_test]
    fn a_backfill_is_checked_when_asked_and_walks_its_table_by_key_within_its_window() {
        Spi::run(
            "create table pairs (a int, b text, v int, primary key (a, b));
             insert into pairs select g / 3, chr(97 + g % 3), g from generate_series(0, 2499) g;
             create table t (id int primary key, x int, big text);
             insert into t values (1, 1, repeat('x', 2000)), (2, 2, 'small');
             create table nokey (x int);
             create table lonely (id int primary key);
             create temp table scratch (id int primary key);
             create view v as select * from t;",
        )
        .unwrap();
        let e = subscribe("https://e.example.com/", "{pairs.*,t.*,nokey.*}");
        let f = subscribe("https://f.example.com/", "{other.*}");
        for (sql, state) in [
            ("select webhook_backfill(null)".to_string(), "22004"),
            ("select webhook_backfill('v')".into(), "42809"),
            (
                "select webhook_backfill('webhook.endpoints')".into(),
                "22023",
            ),
            (
                "select webhook_backfill('pg_catalog.pg_class')".into(),
                "22023",
            ),
            ("select webhook_backfill('nokey')".into(), "0A000"),
            (format!("select webhook_backfill('scratch', {f})"), "0A000"),
            ("select webhook_backfill('lonely')".into(), "22023"),
            (
                "select webhook_backfill('t', endpoint => -1)".into(),
                "42704",
            ),
            (format!("select webhook_backfill('t', {f}, ' ')"), "22023"),
            (
                format!("select webhook_backfill('t', {f}, 'x > 1; select 1')"),
                "42601",
            ),
            (format!("select webhook_backfill('t', {f}, 'x >')"), "42601"),
            (
                format!("select webhook_backfill('t', {f}, 'nope = 1')"),
                "42703",
            ),
            (format!("select webhook_backfill('t', {f}, 'x')"), "42804"),
        ] {
            assert_eq!(sqlstate_of(&sql), state, "{sql}");
        }
        assert_eq!(
            count("select count(*) from webhook.backfills"),
            0,
            "a backfill refused leaves nothing behind"
        );

        // A composite key, to one endpoint not subscribed to it: batches of
        // half the window, then nothing while the endpoint holds a window's
        // worth, then the rest, in key order.
        let id = Spi::get_one::<i64>(&format!("select webhook_backfill('pairs', {f})"))
            .unwrap()
            .unwrap();
        let steps: Vec<i32> = (0..3)
            .map(|_| {
                Spi::get_one::<i32>("select webhook._backfill_step()")
                    .unwrap()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, [1000, 1000, 0], "a window of 2,000 open deliveries");
        assert!(!Spi::get_one::<bool>("select webhook._backfill_ready()")
            .unwrap()
            .unwrap());
        Spi::run(&format!(
            "delete from webhook.deliveries_open where endpoint_id = {f}"
        ))
        .unwrap();
        assert!(Spi::get_one::<bool>("select webhook._backfill_ready()")
            .unwrap()
            .unwrap());
        assert_eq!(
            Spi::get_one::<i32>("select webhook._backfill_step()")
                .unwrap()
                .unwrap(),
            500
        );
        assert_eq!(
            Spi::get_one::<String>(&format!(
                "select status || ' ' || rows_read || ' ' || rows_sent || ' ' || last_key::text
                 from webhook.backfills where id = {id}"
            ))
            .unwrap()
            .unwrap(),
            r#"done 2500 2500 {"a": 833, "b": "a"}"#
        );
        assert_eq!(
            count(&format!(
                "select count(*) from (select (payload->'new'->>'v')::int as v, row_number() over (order by id) as n
                                      from webhook.events where event_type = 'pairs.read' and endpoint_id = {f}) s
                 where s.v = s.n - 1"
            )),
            2500,
            "events in key order, one per row"
        );
        assert_eq!(
            count(&format!(
                "select count(*) from pg_proc where proname like '\\_backfill\\_{id}%' and pronamespace = 'webhook'::regnamespace"
            )),
            0,
            "a finished backfill drops its functions"
        );

        // A row over the size limit is cut to its key, as a captured one.
        Spi::run("set local pg_webhook.max_payload_bytes = 1024").unwrap();
        Spi::run(&format!(
            "select webhook_backfill('t', {e}, 'x >= 1 -- every row')"
        ))
        .unwrap();
        assert_eq!(
            Spi::get_one::<i32>("select webhook._backfill_step()")
                .unwrap()
                .unwrap(),
            2
        );
        assert_eq!(
            Spi::get_one::<String>(
                "select string_agg(payload::text, ' ' order by id) from webhook.events where event_type = 't.read'"
            )
            .unwrap()
            .unwrap(),
            r#"{"table":"t","schema":"public","op":"read","new":{"id": 1},"old":null,"truncated":true} {"table":"t","schema":"public","op":"read","new":{"id":2,"x":2,"big":"small"},"old":null}"#
        );
        assert_eq!(
            count(&format!(
                "select count(*) from webhook.deliveries where endpoint_id = {e}"
            )),
            2,
            "a backfill to one endpoint makes its deliveries itself"
        );

        // Cancelled: its functions go, its row says so.
        let cancelled = Spi::get_one::<i64>(&format!("select webhook_backfill('t', {e})"))
            .unwrap()
            .unwrap();
        assert!(
            Spi::get_one::<bool>(&format!("select webhook_backfill_cancel({cancelled})"))
                .unwrap()
                .unwrap()
        );
        assert_eq!(
            Spi::get_one::<i32>("select webhook._backfill_step()")
                .unwrap()
                .unwrap(),
            0
        );
        assert_eq!(
            // (Subscription periods get their snapshots at commit: not here.)
            count(
                "select count(*) from webhook._invariant_violations() \
                 where invariant like '%backfill%' or invariant like '%one endpoint%'"
            ),
            0,
            "no function left behind, no event delivered elsewhere"
        );
    }

    #[pg_test]
    fn an_ordered_endpoint_keeps_one_head_per_key_in_event_order_and_blocks_or_skips() {
        Spi::run(
            "create table pairs (a int, b text, primary key (a, b)); create table nokey (x int);",
        )
        .unwrap();
        let e = Spi::get_one::<i64>(
            "select endpoint_id from webhook_subscribe('https://o.example.com/', ordered => true)",
        )
        .unwrap()
        .unwrap();
        for (sql, state) in [
            (
                "select webhook_subscribe('https://p.example.com/', on_exhausted => 'nope')"
                    .to_string(),
                "22023",
            ),
            (
                "select webhook_subscribe('https://p.example.com/', on_exhausted => null)".into(),
                "22023",
            ),
            (
                format!("select webhook_update({e}, on_exhausted => 'later')"),
                "22023",
            ),
            (
                "select webhook_publish('a.b', '{}', ordering_key => '')".into(),
                "22023",
            ),
            (
                "select webhook_publish('a.b', '{}', ordering_key => repeat('k', 1025))".into(),
                "22023",
            ),
            ("select webhook_unblock(-1)".into(), "42704"),
            (
                format!("select webhook_unblock({e}, skip => null)"),
                "22004",
            ),
        ] {
            assert_eq!(sqlstate_of(&sql), state, "{sql}");
        }
        // A watch may name the key columns (they must be sent); else the primary key.
        Spi::run(
            "create table keyed (id int primary key, account int, v int); \
             select webhook_watch('keyed', key_columns => '{account}');",
        )
        .unwrap();
        for (sql, state) in [
            (
                "select webhook_watch('keyed', key_columns => '{}')",
                "22023",
            ),
            (
                "select webhook_watch('keyed', key_columns => '{nope}')",
                "42703",
            ),
            (
                "select webhook_watch('keyed', columns => '{id,v}', key_columns => '{account}')",
                "22023",
            ),
        ] {
            assert_eq!(sqlstate_of(sql), state, "{sql}");
        }
        let text = |sql: &str| Spi::get_one::<String>(sql).unwrap().unwrap();
        assert_eq!(
            text("select array_to_string(webhook._key_columns('public.keyed'), ',')"),
            "account"
        );
        assert_eq!(
            text("select array_to_string(webhook._watch_args('keyed'), ',')"),
            "keyed",
            "the watch's prefix and columns, without its key"
        );
        assert_eq!(
            text("select array_to_string(webhook._key_columns('public.pairs'), ',')"),
            "a,b"
        );
        // A row event's key: its table and primary key values, from new (old for a delete).
        let key = |sql: &str| Spi::get_one::<String>(sql).unwrap().unwrap();
        assert_eq!(
            key(
                "select webhook._row_key('public.pairs', webhook._key_columns('public.pairs'), \
                 '{\"new\": {\"b\": \"x\", \"a\": 1}, \"old\": null}')"
            ),
            "public.pairs:[1, \"x\"]"
        );
        assert_eq!(
            key("select webhook._row_key('public.pairs', '{a,b}', '{\"new\": null, \"old\": {\"a\": 2}}')"),
            "public.pairs:[2, null]"
        );
        assert_eq!(
            key("select webhook._row_key('public.nokey', webhook._key_columns('public.nokey'), '{\"new\": {\"x\": 1}}')"),
            "public.nokey:[]"
        );
        // Deliveries made out of event order (a later chunk, a replay): the
        // earliest event is the head, the others wait behind it.
        let ids: Vec<i64> = (1..=3)
            .map(|i| {
                Spi::get_one::<i64>(&format!(
                    "select webhook_publish('a.b', '{{\"i\": {i}}}', ordering_key => 'k')"
                ))
                .unwrap()
                .unwrap()
            })
            .collect();
        for i in [2, 0, 1] {
            Spi::run(&format!(
                "select webhook._deliver_again(e, {e}, null) from webhook.events e where e.id = {}",
                ids[i]
            ))
            .unwrap();
        }
        let states = || {
            Spi::get_one::<String>(&format!(
                "select string_agg(d.status::text, ',' order by d.event_id) from webhook.deliveries_open d \
                 where d.endpoint_id = {e} and d.ordering_key = 'k'"
            ))
            .unwrap()
            .unwrap_or_default()
        };
        // (Subscription periods get their snapshots at commit: not here.)
        let healthy = || {
            assert_eq!(
                Spi::get_one::<String>(
                    "select string_agg(invariant, '; ') from webhook._invariant_violations() \
                     where invariant not like '%subscription period%'"
                )
                .unwrap(),
                None
            )
        };
        assert_eq!(states(), "pending,waiting,waiting");
        healthy();
        // The head finishes (as webhook._record_attempts moves it out): the next goes.
        let finish = |event: i64, failed: bool| {
            Spi::run(&format!(
                "with gone as (delete from webhook.deliveries_open d \
                               where d.endpoint_id = {e} and d.event_id = {event} returning d.id) \
                 select webhook._heads_finished(array[(select id from gone)], array[{e}::bigint], array['k'], \
                                                array[{event}::bigint], array[{failed}])"
            ))
            .unwrap();
        };
        finish(ids[0], false);
        assert_eq!(states(), "pending,waiting");
        healthy();
        // It gives up: the key is blocked, the rest waits and is listed.
        finish(ids[1], true);
        assert_eq!(states(), "waiting");
        assert_eq!(
            Spi::get_one::<i64>(&format!(
                "select waiting from webhook.blocked_keys where endpoint_id = {e} and ordering_key = 'k'"
            ))
            .unwrap(),
            Some(1)
        );
        healthy();
        // Skipped: the next event goes.
        assert_eq!(
            Spi::get_one::<i32>(&format!("select webhook_unblock({e}, 'k', skip => true)"))
                .unwrap(),
            Some(1)
        );
        assert_eq!(states(), "pending");
        assert_eq!(
            Spi::get_one::<i64>("select count(*) from webhook.key_blocks").unwrap(),
            Some(0)
        );
        healthy();
        // Ordered turned off: nothing waits any more.
        Spi::run(&format!(
            "select webhook_publish('a.b', '{{}}', ordering_key => 'k'); \
             select webhook._deliver_again(e, {e}, null) from webhook.events e \
             where e.id = currval('webhook.events_id_seq'); \
             select webhook_update({e}, ordered => false)"
        ))
        .unwrap();
        assert_eq!(
            Spi::get_one::<String>(&format!(
                "select string_agg(d.status::text || ':' || coalesce(d.ordering_key, '-'), ',' order by d.event_id) \
                 from webhook.deliveries_open d where d.endpoint_id = {e}"
            ))
            .unwrap()
            .unwrap(),
            "pending:-,pending:-"
        );
        healthy();
    }
}
