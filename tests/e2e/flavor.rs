//! The SQL flavor against the library it stands in for: its URL checks,
//! secrets and signatures give what the protocol crate (the extension's
//! and the worker's code) gives, and its capture sends the extension's
//! bytes. The first run with the SQL flavor only (`sql_only_…`); the last
//! needs both flavors in one cluster, so runs with the extension's.

use pg_webhook_protocol::destination::{check_url, DestinationError};
use pg_webhook_protocol::{sign, verify, Secret};
use pg_webhook_tests::TestDb;
use tokio_postgres::Client;

/// What `webhook._check_url` says of `url`: the URL it keeps, or the
/// SQLSTATE it refuses with.
async fn sql_check(c: &Client, url: &str) -> Result<String, String> {
    match c.query_one("select webhook._check_url($1)", &[&url]).await {
        Ok(row) => Ok(row.get(0)),
        Err(e) => Err(e.code().expect("a SQLSTATE").code().to_owned()),
    }
}

/// The SQLSTATE the extension gives a URL the protocol crate refuses.
fn sqlstate(e: &DestinationError) -> String {
    match e {
        DestinationError::Forbidden { .. } => "42501".into(),
        _ => "22023".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_only_urls_are_kept_as_the_extension_keeps_them_or_refused() {
    let db = TestDb::new().await;
    let c = db.client().await;
    // The shapes people write: both accept them, and keep the same text.
    let common = [
        "https://example.com/hooks",
        "HTTPS://Example.COM:443",
        "http://example.com:80/a/b?x=1&y=%20z",
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "https://api.example.com:8443/in?token=abc",
        "http://93.184.216.34:8080/x",
        "https://[2606:4700::1111]/dns",
        "https://example.com./trailing-dot",
        "https://sub-domain.example_under.com/p?q",
        "  https://example.com/padded  ",
        "https://example.com/?",
        "https://example.com:0/",
        "https://example.com:00443/",
    ];
    // Refused by both, with the same SQLSTATE (some only when private
    // targets are not allowed).
    let refused = [
        "not a url",
        "ftp://example.com/x",
        "https://user:pw@example.com/",
        "https://example.com/#frag",
        "https://example.com:65536/",
        "https://example.com:99999999/",
        "https://",
        "https://[::1/",
        "http://127.0.0.1:8080/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest",
        "http://localhost/x",
        "http://api.LOCALHOST./x",
        "http://[::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fd00::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[2002:a00:1::1]/",
        "http://0.0.0.0/",
        "http://100.64.0.1/",
        "http://198.18.0.1/",
        "http://224.0.0.1/",
    ];
    // Accepted by the extension (a browser's parser rewrites them), refused
    // by the SQL flavor with 22023 and what to write instead.
    let rewritten = [
        "https://example.com/a/../b",
        "https://example.com/a b",
        "https://exämple.com/",
        "http://127.1/",
        "http://0x7f.0.0.1/",
        "https:example.com",
        "https://example.com\\path",
    ];
    for allow in [false, true] {
        c.batch_execute(&format!(
            "update webhook.settings set value = '{}' where name = 'allow_private_targets'",
            if allow { "on" } else { "off" }
        ))
        .await
        .unwrap();
        for url in common.iter().chain(&refused) {
            let sql = sql_check(&c, url).await;
            let rust = check_url(url, allow);
            match (&sql, &rust) {
                (Ok(s), Ok(r)) => assert_eq!(s, &r.to_string(), "{url} (private allowed: {allow})"),
                (Err(s), Err(r)) => {
                    assert_eq!(s, &sqlstate(r), "{url} (private allowed: {allow}): {r}")
                }
                _ => panic!(
                    "{url} (private allowed: {allow}): SQL flavor {sql:?}, extension {rust:?}"
                ),
            }
        }
        for url in common {
            assert!(sql_check(&c, url).await.is_ok(), "{url} is accepted");
        }
        for url in rewritten {
            assert!(
                check_url(url, true).is_ok(),
                "{url}: the extension accepts it"
            );
            assert_eq!(
                sql_check(&c, url).await,
                Err("22023".to_owned()),
                "{url}: the SQL flavor refuses it"
            );
        }
    }
    // What readers see of a URL.
    for (url, shown) in [
        ("https://example.com/", "https://example.com/"),
        ("https://example.com/?", "https://example.com/…"),
        ("http://example.com:8080/x?y", "http://example.com:8080/…"),
        ("http://[2606:4700::1111]:9/", "http://[2606:4700::1111]:9/"),
    ] {
        let got: String = c
            .query_one("select webhook._redact_url($1)", &[&url])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, shown, "{url}");
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_only_secrets_and_signatures_are_the_protocols() {
    let db = TestDb::new().await;
    let c = db.client().await;
    // The published Standard Webhooks vector.
    let signed: String = c
        .query_one(
            "select webhook_sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{\"test\": 2432232314}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    for n in 0..20 {
        // Generated secrets are 32 random bytes in whsec_ form.
        let secret: String = c
            .query_one("select webhook._generate_secret()", &[])
            .await
            .unwrap()
            .get(0);
        let key = Secret::parse(&secret).expect("a generated secret parses");
        assert_eq!(key.expose_encoded(), secret);
        let body = format!("{{\"n\": {n}, \"text\": \"é ✓ {}\"}}", "x".repeat(n * 37));
        let ts = 1_700_000_000 + n as i64 * 7919 - 10_000;
        let row = c
            .query_one(
                "select webhook_sign($1, $2, $3, $4), webhook_verify($1, $2, $3, $4, $5), \
                        webhook_verify($1, $2, $3, $4 || ' ', $5), webhook_verify($1, $2, $3, $4, 'v2,' || substr($5, 4))",
                &[&secret, &format!("msg_{n}"), &ts, &body, &sign(&key, &format!("msg_{n}"), ts, body.as_bytes())],
            )
            .await
            .unwrap();
        let sql_signature: String = row.get(0);
        assert_eq!(
            sql_signature,
            sign(&key, &format!("msg_{n}"), ts, body.as_bytes())
        );
        assert!(verify(
            &key,
            &format!("msg_{n}"),
            ts,
            body.as_bytes(),
            &sql_signature
        ));
        assert!(row.get::<_, bool>(1), "verifies the protocol's signature");
        assert!(!row.get::<_, bool>(2), "not for another body");
        assert!(!row.get::<_, bool>(3), "not under another version");
    }
    // Secrets: what the protocol accepts, in the same form; what it refuses, 22023.
    for secret in [
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_  MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw ",
        "whsec_short",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx",
        "whsec_MfKQ9r8GKYqrTwjUPD8I LPZIo2LaLaSw",
        "whsec_",
        " whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        &format!("whsec_{}", "QUFB".repeat(21) + "QQ=="),
        &format!("whsec_{}", "QUFB".repeat(22)),
    ] {
        let sql = match c
            .query_one("select webhook._check_secret($1)", &[&secret])
            .await
        {
            Ok(r) => Ok(r.get::<_, String>(0)),
            Err(e) => Err(e.code().unwrap().code().to_owned()),
        };
        match Secret::parse(secret) {
            Ok(key) => assert_eq!(sql, Ok(key.expose_encoded()), "{secret:?}"),
            Err(_) => assert_eq!(sql, Err("22023".to_owned()), "{secret:?}"),
        }
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_only_subscription_changes_commit_only_at_read_committed() {
    // The SQL flavor reads "committed by now" from the statement's
    // snapshot, which REPEATABLE READ freezes: it refuses there (0A000) at
    // commit rather than place the change at the wrong point of the log.
    let db = TestDb::new().await;
    let c = db.client().await;
    for isolation in ["repeatable read", "serializable"] {
        let err = c
            .batch_execute(&format!(
                "begin isolation level {isolation}; select webhook_subscribe('https://example.com/'); commit;"
            ))
            .await
            .expect_err("refused at commit");
        assert_eq!(
            err.code().map(|s| s.code()),
            Some("0A000"),
            "{isolation}: {err:?}"
        );
        c.batch_execute("rollback").await.ok();
    }
    let n: i64 = c
        .query_one("select count(*) from webhook.endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing half-made");
    c.batch_execute("select webhook_subscribe('https://example.com/')")
        .await
        .expect("read committed, the default");
    db.finish().await;
}

/// The SQL flavor reads pg_control_system() (everyone may, by default):
/// where the installing role may not, the install is refused, and capture
/// after the right was taken away fails, each with 42501 and what to grant
/// (function rights are per database: the revoke touches this test's only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_only_without_pg_control_system_the_install_and_capture_say_what_to_grant() {
    let db = TestDb::empty().await;
    let superuser = db.superuser_client().await;
    let revoke = "revoke execute on function pg_catalog.pg_control_system() from public";
    let grant = "grant execute on function pg_catalog.pg_control_system() to public";
    let says_what_to_grant = |e: &tokio_postgres::Error, what: &str| {
        let e = e.as_db_error().unwrap_or_else(|| panic!("{what}: {e:?}"));
        assert_eq!(e.code().code(), "42501", "{what}: {e:?}");
        assert!(e.message().contains("pg_control_system()"), "{what}: {e:?}");
        assert_eq!(
            e.hint(),
            Some(
                format!(
                    "As a superuser: grant execute on function pg_catalog.pg_control_system() to {}",
                    pg_webhook_tests::INSTALLER
                )
                .as_str()
            ),
            "{what}"
        );
    };

    superuser.batch_execute(revoke).await.unwrap();
    let script = std::fs::read_to_string(pg_webhook_tests::sql_script()).unwrap();
    let refused = db
        .client()
        .await
        .batch_execute(&script)
        .await
        .expect_err("the install refused");
    says_what_to_grant(&refused, "install");
    let schemas: i64 = db
        .client()
        .await
        .query_one(
            "select count(*) from pg_namespace where nspname = 'webhook'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(schemas, 0, "nothing half-made");

    superuser.batch_execute(grant).await.unwrap();
    pg_webhook_tests::install_over(&db.client().await).await;
    db.client()
        .await
        .batch_execute("create table t (id int); select webhook_watch('t');")
        .await
        .unwrap();
    superuser.batch_execute(revoke).await.unwrap();
    let c = db.client().await; // a new session: it looks its incarnation up
    let refused = c
        .batch_execute("insert into t values (1)")
        .await
        .expect_err("capture refused");
    says_what_to_grant(&refused, "capture");
    superuser.batch_execute(grant).await.unwrap();
    c.batch_execute("insert into t values (1)")
        .await
        .expect("capture again once granted");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_only_both_flavors_capture_the_same_bytes() {
    // The same table and writes in a database of each flavor (one cluster:
    // this needs the library), every kind of column, all columns and some,
    // a delete, an update, a partition, a row over the size limit, generated
    // columns (stored; from PostgreSQL 18 virtual ones too, which a trigger
    // sees null and a SELECT computes).
    let extension = TestDb::new().await;
    let sql = TestDb::empty().await;
    pg_webhook_tests::install_sql_flavor(&sql.client().await).await;
    let server: i32 = extension
        .client()
        .await
        .query_one("select current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    let virtual_columns = if server >= 180000 {
        ", c numeric generated always as (a / 4.0) virtual, \"D\" text generated always as ('#' || a) virtual"
    } else {
        ""
    };
    let mut payloads = Vec::new();
    for db in [&extension, &sql] {
        let c = db.client().await;
        c.batch_execute(&format!(
            "create table g (id int primary key, a int, b int generated always as (a * 2) stored{virtual_columns});
             select webhook_watch('g');
             insert into g (id, a) values (1, 7);
             update g set a = 8;
             alter table g drop column b;
             delete from g;"
        ))
        .await
        .unwrap();
        c.batch_execute(
            "set timezone = 'UTC';
             create type mood as enum ('ok', 'meh');
             create table t (id int primary key, price numeric, f float8, ok boolean, at timestamptz,
                             doc jsonb, raw json, tags text[], m mood, b bytea, \"Odd \"\"name\" text);
             select webhook_watch('t');
             create table part_cols (id int, k int, note text, price numeric, primary key (id, k));
             select webhook_watch('part_cols', columns => '{price,id,note}');
             create table p (id int, k int, v text) partition by range (k);
             create table p1 partition of p for values from (0) to (10);
             select webhook_watch('p', columns => '{id,v}');
             insert into t values (1, 9.50, 1e20, true, '2026-12-07 05:00:00+00', '{\"b\": [1, 2.0], \"a\": null}',
                                   '{\"x\":  1, \"x\": 2}', '{a,\"b c\"}', 'meh', '\\x00ff', 'é\"\\\t'),
                                  (2, null, 'NaN', null, null, null, null, '{}', null, null, null);
             update t set price = 10.000 where id = 1;
             delete from t where id = 2;
             insert into part_cols values (1, 2, 'n', 1.10);
             update part_cols set note = 'm' where id = 1;
             insert into p values (7, 3, 'v');",
        )
        .await
        .unwrap();
        // A limit the next row goes over: the extension's GUC, the SQL
        // flavor's webhook.settings.
        let limit = if std::ptr::eq(db, &sql) {
            "update webhook.settings set value = '1024' where name = 'max_payload_bytes'"
        } else {
            "set pg_webhook.max_payload_bytes = 1024"
        };
        c.batch_execute(limit).await.unwrap();
        c.batch_execute("insert into part_cols values (2, 3, repeat('x', 2000), 2.50)")
            .await
            .unwrap();
        let rows: Vec<String> = c
            .query("select event_type || ' ' || source_table || ' ' || payload::text from webhook.events order by id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        payloads.push(rows);
    }
    assert_eq!(payloads[0].len(), 11, "{:#?}", payloads[0]);
    assert_eq!(
        payloads[0], payloads[1],
        "the extension's events, then the SQL flavor's"
    );
    if server >= 180000 {
        assert!(
            payloads[1][1].contains(r##""c":2.0000000000000000,"D":"#8"}"##),
            "the SQL flavor computes virtual generated columns: {}",
            payloads[1][1]
        );
    }
    extension.finish().await;
    sql.finish().await;
}
