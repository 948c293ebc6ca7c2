//! The SQL contract: the worker's statements exist and prepare, and bad input
//! gets a specific SQLSTATE.

use pg_webhook_tests::TestDb;
use tokio_postgres::error::SqlState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_all_worker_queries() {
    let db = TestDb::new().await;
    let client = db.client().await;
    for sql in pg_webhook_worker::db::queries::ALL {
        client
            .prepare(sql)
            .await
            .unwrap_or_else(|e| panic!("worker query does not prepare: {sql}: {e:?}"));
    }
    db.finish().await;
}

async fn code_of(client: &tokio_postgres::Client, sql: &str) -> SqlState {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("expected an error from: {sql}"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("no SQLSTATE for {sql}: {e}"))
            .clone(),
    }
}

/// Sets one of pg_webhook's settings for this session: `set pg_webhook.<name>`
/// with the extension (superuser-only GUCs; the tests' role is one), the
/// row of webhook.settings with the SQL flavor (for the whole database).
async fn session_setting(client: &tokio_postgres::Client, name: &str, value: &str) {
    let sql = match pg_webhook_tests::flavor() {
        pg_webhook_tests::Flavor::Extension => format!("set pg_webhook.{name} = {value}"),
        pg_webhook_tests::Flavor::Sql => {
            format!("update webhook.settings set value = '{value}' where name = '{name}'")
        }
    };
    client
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_specific_sqlstate() {
    let db = TestDb::new().await;
    let c = db.client().await;
    // A payload limit the cases below go over: this session's
    // pg_webhook.max_payload_bytes, or the SQL flavor's webhook.settings.
    session_setting(&c, "max_payload_bytes", "1024").await;
    let cases: &[(&str, SqlState)] = &[
        ("select webhook_subscribe('not a url')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('ftp://example.com/x')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('https://user:pw@example.com/')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('https://example.com/', array['order.*.x'])", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('https://example.com/', array[]::text[])", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('https://example.com/', secret => 'whsec_short')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('https://example.com/', headers => '{\"webhook-id\": \"x\"}')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('https://example.com/', retry_policy => '{\"max_attempts\": 0}')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('https://example.com/', retry_policy => '{\"initial_delay\": \"soon\"}')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('https://example.com/', timeout => '1 hour')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_unsubscribe(424242)", SqlState::UNDEFINED_OBJECT),
        ("select webhook_publish('bad type!', '{}')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_publish('ok.type', null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_publish('big.one', jsonb_build_object('x', repeat('a', 2000)))", SqlState::PROGRAM_LIMIT_EXCEEDED),
        ("select webhook_watch('pg_class')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_watch('webhook.events')", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_sign('nope', 'id', 1, 'body')", SqlState::INVALID_PARAMETER_VALUE),
        // NULL where a value is needed.
        ("select webhook_watch(null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_watch('pg_class', null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_unwatch(null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_unsubscribe(null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_pause(null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_resume(null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_rotate_secret(null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_send_test(null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_update(null, url => 'https://example.com/')", SqlState::NULL_VALUE_NOT_ALLOWED),
        ("select webhook_replay(null)", SqlState::NULL_VALUE_NOT_ALLOWED),
        // Headers: bounded in number and size.
        ("select webhook_subscribe('https://example.com/', headers => (select jsonb_object_agg('x-h' || i, 'v') from generate_series(1, 33) i))", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook_subscribe('https://example.com/', headers => jsonb_build_object('x-big', repeat('v', 9000)))", SqlState::INVALID_PARAMETER_VALUE),
        // A retry policy edited by hand is checked like one given to webhook_update.
        ("insert into webhook.endpoints (name, url, event_types, retry_policy) values ('by-hand', 'https://example.com/', '{*}', '{\"max_attempts\": \"x\"}')", SqlState::INVALID_PARAMETER_VALUE),
        // The worker's record: arrays of one length, known outcomes.
        ("select webhook._record_attempts('w', array[1]::bigint[], array[1]::bigint[], array[1]::bigint[], array[1], array[now()], array[1.0::float8], array[200], array[null]::text[], array[null]::text[], array['cancelled'], array[null]::bigint[])", SqlState::INVALID_PARAMETER_VALUE),
        ("select webhook._record_attempts('w', array[1, 2]::bigint[], array[1]::bigint[], array[1]::bigint[], array[1], array[now()], array[1.0::float8], array[200], array[null]::text[], array[null]::text[], array['succeeded'], array[null]::bigint[])", SqlState::INVALID_PARAMETER_VALUE),
    ];
    for (sql, want) in cases {
        assert_eq!(&code_of(&c, sql).await, want, "{sql}");
    }
    // Private targets: refused while the setting is off (the test database
    // turns it on for the receivers; this session turns it back off).
    session_setting(&c, "allow_private_targets", "off").await;
    for url in [
        "http://127.0.0.1:8080/",
        "http://localhost/x",
        "http://169.254.169.254/latest",
        "http://10.0.0.8/",
        "http://[::1]/",
    ] {
        let sql = format!("select webhook_subscribe('{url}')");
        assert_eq!(
            code_of(&c, &sql).await,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
    // Nothing half-made: no endpoint row survived any of the failures.
    let n: i64 = c
        .query_one("select count(*) from webhook.endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    let n: i64 = c
        .query_one("select count(*) from webhook.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_verify_in_sql_match_the_protocol_crate() {
    let db = TestDb::new().await;
    let c = db.client().await;
    let row = c
        .query_one(
            "select webhook_sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{\"test\": 2432232314}'),
                    webhook_verify('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{\"test\": 2432232314}',
                                   'v1,bogus v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
    assert!(row.get::<_, bool>(1));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_only_settings_show_in_a_fresh_session_with_the_install_step_of_the_readme() {
    let db = TestDb::new().await;
    let fresh = db.client().await;
    let err = fresh
        .query_one("show pg_webhook.retention", &[])
        .await
        .expect_err("nothing of pg_webhook is loaded in a fresh session");
    assert_eq!(err.code(), Some(&SqlState::UNDEFINED_OBJECT));
    db.client()
        .await
        .batch_execute(&format!(
            "alter database {} set session_preload_libraries = 'pg_webhook'",
            db.name
        ))
        .await
        .unwrap();
    let fresh = db.client().await;
    for (setting, default) in [
        ("pg_webhook.retention", "30d"),
        ("pg_webhook.disable_after", "5d"),
        ("pg_webhook.max_payload_bytes", "1048576"),
    ] {
        let shown: String = fresh
            .query_one(&format!("show {setting}"), &[])
            .await
            .unwrap_or_else(|e| panic!("show {setting}: {e}"))
            .get(0);
        assert_eq!(shown, default, "{setting}");
    }
    db.finish().await;
}
