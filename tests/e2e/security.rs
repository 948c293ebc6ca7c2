//! Privileges: nothing a table owner defines may run with the extension
//! owner's rights, and producers need no right on the webhook tables.

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_conversion_runs_as_the_writer_not_as_the_extension_owner() {
    let db = TestDb::new().await;
    let admin = db.client().await;
    let writer = format!("pgwh_writer_{}", db.name);
    admin
        .batch_execute(&format!(
            "create role {writer} login;
             grant create on schema public to {writer};
             select webhook_subscribe('https://example.com/hooks');"
        ))
        .await
        .unwrap();
    // The writer owns a type whose cast to json is their own function: the
    // capture converts rows to JSON, which calls that cast (PostgreSQL uses a
    // type's cast to json, when there is one, for non-composite user types).
    // It tells whose rights it runs with in a notice.
    let (as_writer, mut notices) =
        pg_webhook_tests::connect_with_notices(&format!("{} user={writer}", db.dsn)).await;
    as_writer
        .batch_execute(
            "create type probe as enum ('x');
             create function probe_to_json(probe) returns json language plpgsql as $$
                 begin raise notice 'probe ran as %', current_user; return '{}'; end $$;
             create cast (probe as json) with function probe_to_json(probe);
             create table watched (id int, p probe);",
        )
        .await
        .unwrap();
    // The table's owner lets the admin attach triggers to it.
    let admin_role: String = admin
        .query_one("select current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    as_writer
        .batch_execute(&format!("grant trigger on watched to {admin_role}"))
        .await
        .unwrap();
    // An admin watches the writer's table (writers cannot: the trigger
    // function lives in the webhook schema).
    admin
        .batch_execute("select webhook_watch('watched')")
        .await
        .unwrap();
    as_writer
        .batch_execute("insert into watched values (1, 'x')")
        .await
        .expect("a writer with no right on the webhook tables can still produce events");
    let notice = notices.recv().await.expect("the cast ran");
    // With the extension, as the writer; the SQL flavor cannot switch back
    // to the writer, and converts as webhook_capture, a role that may only
    // store events (see sql/plain/40_capture.sql). Never as pg_webhook's owner.
    let expected = match pg_webhook_tests::flavor() {
        pg_webhook_tests::Flavor::Extension => writer.clone(),
        pg_webhook_tests::Flavor::Sql => "webhook_capture".to_owned(),
    };
    assert_eq!(
        notice.message(),
        format!("probe ran as {expected}"),
        "the writer's cast must run as {expected}"
    );
    let events: i64 = admin
        .query_one("select count(*) from webhook.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1);
    let denied = as_writer
        .query("select * from webhook.events", &[])
        .await
        .unwrap_err();
    assert_eq!(
        denied.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );

    drop(as_writer);
    db.superuser_client()
        .await
        .batch_execute(
            "drop table watched; drop cast (probe as json); drop function probe_to_json(probe);
             drop type probe;",
        )
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "revoke create on schema public from {writer}; drop role {writer};"
        ))
        .await
        .unwrap();
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_echoing_the_request_leaves_no_secret_in_the_log() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    receiver.echo_headers();
    receiver.script(&[500]); // the excerpt of a failure is what people read
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "select webhook_subscribe('{}', name => 'bearer',
                 headers => '{{\"x-api-token\": \"hdr-s3cret-value\", \"x-tenant\": \"acme\"}}',
                 auth => '{{\"type\": \"basic\", \"username\": \"alice\", \"password\": \"pw-s3cret\"}}');
             select webhook_publish('order.noted', '{{}}');",
            receiver.url("/echo")
        ))
        .await
        .unwrap();
    let mut worker = RunningWorker::start(db.worker_config());
    let got = receiver.wait_for(2).await;
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;
    worker.stop().await;
    let sent: Vec<String> = got
        .iter()
        .flat_map(|r| {
            [
                r.header("authorization").unwrap().to_owned(),
                r.header("webhook-signature").unwrap().to_owned(),
            ]
        })
        .collect();
    let excerpts: Vec<String> = pg_webhook_tests::column(
        &client,
        "select response_excerpt from webhook.attempts order by id",
        &[],
    )
    .await;
    assert_eq!(excerpts.len(), 2);
    for excerpt in &excerpts {
        assert!(excerpt.contains("x-tenant: acme"), "{excerpt}");
        assert!(excerpt.contains("[redacted]"), "{excerpt}");
        for secret in ["hdr-s3cret-value", "pw-s3cret", "alice:pw-s3cret"]
            .iter()
            .map(|s| s.to_string())
            .chain(
                sent.iter()
                    .flat_map(|v| v.split([' ', ',']).map(str::to_owned)),
            )
            .filter(|s| s.len() >= 6)
        {
            assert!(
                !excerpt.contains(&secret),
                "{secret:?} is in the recorded excerpt: {excerpt}"
            );
        }
    }
    db.finish().await;
}
