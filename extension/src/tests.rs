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
    fn capture_inserts_one_delivery_per_matching_endpoint() {
        subscribe("https://a.example.com/", "{order.*}");
        subscribe("https://b.example.com/", "{*}");
        subscribe("https://c.example.com/", "{invoice.*}");
        Spi::run("create table orders (id int primary key, note text)").unwrap();
        Spi::run("select webhook_watch('orders', event_prefix => 'order')").unwrap();
        Spi::run("insert into orders select i, 'n' || i from generate_series(1, 3) i").unwrap();
        assert_eq!(
            count("select count(*) from webhook.events where event_type = 'order.created'"),
            3
        );
        assert_eq!(count("select count(*) from webhook.deliveries"), 6);
        assert_eq!(
            count("select count(*) from webhook.deliveries d join webhook.endpoints e on e.id = d.endpoint_id where e.url like 'https://c.%'"),
            0
        );
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
    fn unsubscribe_cancels_pending_and_keeps_history() {
        let id = subscribe("https://a.example.com/", "{*}");
        Spi::run("select webhook_publish('a.b', '{}')").unwrap();
        assert!(
            Spi::get_one::<bool>(&format!("select webhook_unsubscribe({id})"))
                .unwrap()
                .unwrap()
        );
        assert!(
            !Spi::get_one::<bool>(&format!("select webhook_unsubscribe({id})"))
                .unwrap()
                .unwrap()
        );
        assert_eq!(
            count("select count(*) from webhook.deliveries where status = 'cancelled'"),
            1
        );
        assert_eq!(
            count("select count(*) from webhook.endpoints where deleted_at is not null"),
            1
        );
        assert_eq!(count("select count(*) from webhook.endpoint_secrets"), 0);
        Spi::run("select webhook_publish('a.c', '{}')").unwrap();
        assert_eq!(
            count("select count(*) from webhook.deliveries"),
            1,
            "a removed endpoint gets nothing new"
        );
    }

    #[pg_test]
    fn record_moves_a_delivery_only_under_its_lease() {
        subscribe("https://a.example.com/", "{*}");
        Spi::run("select webhook_publish('a.b', '{\"k\": 1}')").unwrap();
        let (id, token) = Spi::get_two::<i64, i64>(
            "select delivery_id, lease_token from webhook._claim_deliveries('w', 10, '30 seconds')",
        )
        .unwrap();
        let (id, token) = (id.unwrap(), token.unwrap());
        assert_eq!(
            count("select count(*) from webhook._claim_deliveries('w2', 10, '30 seconds')"),
            0,
            "leased rows are not due"
        );
        let record = |t: i64, outcome: &str| {
            Spi::get_one::<i32>(&format!(
                "select webhook._record_attempts('w', array[{id}]::bigint[], array[{t}]::bigint[], array[1], \
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
        assert_eq!(count("select count(*) from webhook.deliveries where status = 'succeeded' and lease_token is null"), 1);
        assert_eq!(
            count("select count(*) from webhook.attempts"),
            2,
            "every attempt is logged"
        );
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
}
