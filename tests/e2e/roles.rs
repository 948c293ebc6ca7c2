//! The trust boundary: each of pg_webhook's roles, logged in with alone,
//! can do its job and nothing more; a plain login can do nothing.

use pg_webhook_tests::{connect, Receiver, RunningWorker, TestDb};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// `TestDb::login`, with CREATE on `public` (each role may make a table
/// of its own).
async fn login(db: &TestDb, admin: &Client, suffix: &str, member_of: &[&str]) -> (String, Client) {
    let (name, client) = db.login(admin, suffix, member_of).await;
    admin
        .batch_execute(&format!("grant create on schema public to {name}"))
        .await
        .unwrap();
    (name, client)
}

async fn denied(client: &Client, sql: &str) -> SqlState {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("expected a refusal for: {sql}"),
        Err(e) => e.code().cloned().unwrap_or_else(|| panic!("{sql}: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_login_can_neither_publish_nor_read_nor_forge_a_capture() {
    let db = TestDb::new().await;
    let admin = db.client().await;
    admin
        .batch_execute("select webhook_subscribe('https://example.com/hooks')")
        .await
        .unwrap();
    let (_, bi) = login(&db, &admin, "bi", &[]).await;
    for sql in [
        "select webhook_publish('order.created', '{\"forged\": true}')",
        "select * from webhook.events",
        "select * from webhook.delivery_log",
        "select * from webhook.endpoint_secrets",
        "select webhook_subscribe('https://evil.example.com/')",
        "select webhook_sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'id', 1, 'body')",
    ] {
        assert_eq!(
            denied(&bi, sql).await,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
    // Attaching the capture trigger to a table of one's own, with a prefix
    // of one's choosing, would forge row events: refused.
    bi.batch_execute("create table mine (id int)")
        .await
        .unwrap();
    let code = denied(
        &bi,
        "create trigger forge after insert on mine for each row execute function webhook._capture('order')",
    )
    .await;
    assert_eq!(code, SqlState::INSUFFICIENT_PRIVILEGE);
    assert_eq!(
        denied(&bi, "select webhook_watch('mine', event_prefix => 'order')").await,
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    let events: i64 = admin
        .query_one("select count(*) from webhook.events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 0, "nothing was enqueued");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_reader_admin_and_worker_each_do_their_job_alone() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let root = db.client().await;
    let (_, admin) = login(&db, &root, "admin", &["webhook_admin"]).await;
    let (_, publisher) = login(&db, &root, "app", &["webhook_publisher"]).await;
    let (_, reader) = login(&db, &root, "analyst", &["webhook_reader"]).await;
    let (worker_role, _) = login(&db, &root, "worker", &["webhook_worker"]).await;

    // The admin manages endpoints and watches its own table.
    let row = admin
        .query_one(
            "select endpoint_id, signing_secret from webhook_subscribe($1, headers => '{\"authorization\": \"Bearer t0ken\"}')",
            &[&receiver.url("/hooks")],
        )
        .await
        .expect("webhook_admin subscribes");
    let endpoint: i64 = row.get(0);
    let secret: String = row.get(1);
    admin
        .batch_execute(&format!(
            "create table orders (id int); select webhook_watch('orders', event_prefix => 'order');
             select webhook_pause({endpoint}); select webhook_resume({endpoint});"
        ))
        .await
        .expect("webhook_admin watches its table and operates its endpoint");
    admin
        .batch_execute(&format!("grant insert on orders to {}_app", db.name))
        .await
        .unwrap();

    // The publisher publishes, and writes a watched table, with no right on
    // the webhook tables.
    publisher
        .batch_execute("select webhook_publish('order.shipped', '{\"id\": 1}'); insert into orders values (7);")
        .await
        .expect("webhook_publisher publishes and captures");
    assert_eq!(
        denied(&publisher, "select * from webhook.events").await,
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    assert_eq!(
        denied(
            &publisher,
            &format!("select webhook_unsubscribe({endpoint})")
        )
        .await,
        SqlState::INSUFFICIENT_PRIVILEGE
    );

    // The worker's role cannot act at another time than now: a future
    // date would purge the log and disable endpoints early.
    let as_worker = connect(&format!("{} user={worker_role}", db.dsn)).await;
    assert_eq!(
        denied(
            &as_worker,
            "select webhook._maintenance_at(now() + interval '1 year')"
        )
        .await,
        SqlState::INSUFFICIENT_PRIVILEGE
    );
    as_worker
        .batch_execute("select webhook._maintenance()")
        .await
        .expect("webhook_worker runs the maintenance, now");

    // The worker, logged in with webhook_worker alone, delivers both.
    let mut config = db.worker_config();
    config.pg.user(&worker_role);
    let mut worker = RunningWorker::start(config);
    let got = receiver.wait_for(2).await;
    db.wait_deliveries(&root, "succeeded", 2, &mut worker.events)
        .await;
    worker.stop().await;
    let secret = pg_webhook_protocol::Secret::parse(&secret).unwrap();
    for r in &got {
        assert_eq!(r.header("authorization"), Some("Bearer t0ken"));
        let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
        assert!(pg_webhook_protocol::verify(
            &secret,
            r.header("webhook-id").unwrap(),
            ts,
            r.body.as_bytes(),
            r.header("webhook-signature").unwrap()
        ));
    }

    // The analyst reads the log and the health view, never a secret or a
    // header value.
    let logged: i64 = reader
        .query_one(
            "select count(*) from webhook.delivery_log where status = 'succeeded'",
            &[],
        )
        .await
        .expect("webhook_reader reads the log")
        .get(0);
    assert_eq!(logged, 2);
    reader
        .query("select * from webhook.endpoint_health", &[])
        .await
        .expect("webhook_reader reads endpoint health");
    reader
        .query(
            "select * from webhook.events, webhook.attempts, webhook.endpoints limit 1",
            &[],
        )
        .await
        .expect("webhook_reader reads the tables");
    let headers: Vec<String> = reader
        .query_one("select header_names from webhook.endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(headers, vec!["authorization".to_owned()], "names only");
    for sql in [
        "select * from webhook.endpoint_secrets",
        "select webhook_publish('order.created', '{}')",
        "select webhook_replay(1)",
    ] {
        assert_eq!(
            denied(&reader, sql).await,
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{sql}"
        );
    }
    db.finish().await;
}
