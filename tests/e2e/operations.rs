//! Operating endpoints from SQL: update, pause and resume, secret rotation,
//! test events, replays, auto-disable and the health view — each against a
//! real receiver, signatures checked as a receiver would.

use pg_webhook_protocol::{verify, Secret};
use pg_webhook_tests::{Listener, Received, Receiver, RunningWorker, TestDb};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(c: &Client, sql: &str) -> T {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

async fn code_of(c: &Client, sql: &str) -> SqlState {
    match c.batch_execute(sql).await {
        Ok(()) => panic!("expected an error from {sql}"),
        Err(e) => e.code().cloned().unwrap_or_else(|| panic!("{sql}: {e}")),
    }
}

/// True when one of the request's signatures is by `secret`.
fn signed_by(r: &Received, secret: &str) -> bool {
    let ts: i64 = r.header("webhook-timestamp").unwrap().parse().unwrap();
    verify(
        &Secret::parse(secret).unwrap(),
        r.header("webhook-id").unwrap(),
        ts,
        r.body.as_bytes(),
        r.header("webhook-signature").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_url_for_the_next_attempt_and_checks_like_subscribe() {
    let db = TestDb::new().await;
    let (old, new) = (Receiver::start().await, Receiver::start().await);
    old.script(&[500]);
    let client = db.client().await;
    let (id, secret) = db
        .subscribe(
            &client,
            &old.url("/"),
            &["*"],
            Some(r#"{"initial_delay": "1 second"}"#),
        )
        .await;
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute("select webhook_publish('a.b', '{}')")
        .await
        .unwrap();
    old.wait_for(1).await;
    db.wait_for(
        &client,
        "select attempt_count = 1 from webhook.deliveries",
        Some(&mut worker.events),
    )
    .await;
    let row = client
        .query_one(
            "select url, name, timeout, is_active, header_names from webhook_update($1, url => $2, name => 'renamed', timeout => '3 seconds', headers => '{\"x-team\": \"ops\"}')",
            &[&id, &new.url("/moved")],
        )
        .await
        .unwrap();
    // Returned as readers see it: the path hidden; the whole URL is read
    // from the secrets (admins may).
    let origin = new.url("/");
    assert_eq!(row.get::<_, String>(0), format!("{origin}…"));
    let full: String = client
        .query_one(
            "select url from webhook.endpoint_secrets where endpoint_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(full, new.url("/moved"));
    assert_eq!(row.get::<_, String>(1), "renamed");
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, Vec<String>>(4), vec!["x-team".to_owned()]);
    let cols: Vec<String> = client
        .query("select column_name::text from information_schema.columns where table_schema = 'webhook' and table_name = 'endpoints'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        !cols.iter().any(|c| c.contains("secret")),
        "the endpoint row has no secret: {cols:?}"
    );
    // The pending delivery's retry goes to the new URL, with the new header.
    let got = new.wait_for(1).await;
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;
    worker.stop().await;
    assert_eq!(got[0].header("x-team"), Some("ops"));
    assert!(signed_by(&got[0], &secret));
    assert_eq!(old.requests().len(), 1);
    // The same checks and SQLSTATEs as webhook_subscribe.
    client
        .batch_execute("select webhook_subscribe('https://example.com/', name => 'taken')")
        .await
        .unwrap();
    for (sql, code) in [
        (
            format!("select webhook_update({id}, url => 'ftp://x')"),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            format!("select webhook_update({id}, event_types => '{{bad pattern}}')"),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            format!("select webhook_update({id}, retry_policy => '{{\"max_attempts\": 0}}')"),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            format!("select webhook_update({id}, auth => '{{\"type\": \"magic\"}}')"),
            SqlState::INVALID_PARAMETER_VALUE,
        ),
        (
            format!("select webhook_update({id}, name => 'taken')"),
            SqlState::DUPLICATE_OBJECT,
        ),
        (
            "select webhook_update(424242, name => 'x')".to_owned(),
            SqlState::UNDEFINED_OBJECT,
        ),
    ] {
        assert_eq!(code_of(&client, &sql).await, code, "{sql}");
    }
    let name: String = one(
        &client,
        &format!("select name from webhook.endpoints where id = {id}"),
    )
    .await;
    assert_eq!(name, "renamed", "a refused update changes nothing");
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_everything_and_resume_sends_the_backlog_oldest_first() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    let (id, _) = db
        .subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    assert!(one::<bool>(&client, &format!("select webhook_pause({id})")).await);
    assert!(
        !one::<bool>(&client, &format!("select webhook_pause({id})")).await,
        "pausing twice is a no-op"
    );
    // One delivery at a time, so that arrival order is claim order.
    let mut config = db.worker_config();
    config.concurrency = 1;
    let mut worker = RunningWorker::start(config);
    for n in 1..=5 {
        client
            .batch_execute(&format!(
                "select webhook_publish('step.done', '{{\"n\": {n}}}')"
            ))
            .await
            .unwrap();
    }
    // All five are fanned out and held; nothing is sent, no attempt spent.
    db.wait_deliveries(&client, "paused", 5, &mut worker.events)
        .await;
    let state: String = one(
        &client,
        &format!("select state from webhook.endpoint_health where endpoint_id = {id}"),
    )
    .await;
    assert_eq!(state, "paused");
    let (attempts, waiting): (i64, i64) = {
        let r = client
            .query_one(&format!("select (select count(*) from webhook.attempts), waiting from webhook.endpoint_health where endpoint_id = {id}"), &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((attempts, waiting), (0, 5));
    assert!(receiver.requests().is_empty());

    assert!(one::<bool>(&client, &format!("select webhook_resume({id})")).await);
    assert!(
        !one::<bool>(&client, &format!("select webhook_resume({id})")).await,
        "resuming an active endpoint is a no-op"
    );
    let got = receiver.wait_for(5).await;
    db.wait_deliveries(&client, "succeeded", 5, &mut worker.events)
        .await;
    worker.stop().await;
    let order: Vec<i64> = got
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![1, 2, 3, 4, 5],
        "the backlog goes out oldest first"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_signs_beside_the_old_one_until_the_grace_ends() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    let (id, old) = db
        .subscribe(&client, &receiver.url("/"), &["*"], None)
        .await;
    let new: String = one(
        &client,
        &format!("select webhook_rotate_secret({id}, '2 seconds')"),
    )
    .await;
    assert!(new.starts_with("whsec_") && new != old);
    let stored: String = one(
        &client,
        &format!("select secret from webhook.endpoint_secrets where endpoint_id = {id}"),
    )
    .await;
    assert_eq!(stored, new);
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute("select webhook_publish('in.grace', '{}')")
        .await
        .unwrap();
    let got = receiver.wait_for(1).await;
    let during = &got[0];
    assert_eq!(
        during
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    assert!(
        signed_by(during, &new) && signed_by(during, &old),
        "a receiver holding either secret verifies"
    );

    // After the grace, only the new secret signs.
    db.wait_for(
        &client,
        &format!("select now() > previous_expires_at from webhook.endpoint_secrets where endpoint_id = {id}"),
        None,
    )
    .await;
    client
        .batch_execute("select webhook_publish('after.grace', '{}')")
        .await
        .unwrap();
    let got = receiver.wait_for(2).await;
    db.wait_deliveries(&client, "succeeded", 2, &mut worker.events)
        .await;
    worker.stop().await;
    let after = &got[1];
    assert_eq!(after.json()["type"], "after.grace");
    assert_eq!(
        after
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    assert!(signed_by(after, &new) && !signed_by(after, &old));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_reaches_one_endpoint_whatever_its_filters() {
    let db = TestDb::new().await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let client = db.client().await;
    let (ea, secret) = db.subscribe(&client, &a.url("/"), &["order.*"], None).await;
    db.subscribe(&client, &b.url("/"), &["*"], None).await;
    let mut worker = RunningWorker::start(db.worker_config());
    let event: i64 = one(&client, &format!("select webhook_send_test({ea})")).await;
    let got = a.wait_for(1).await;
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;
    worker.stop().await;
    assert_eq!(got[0].json()["type"], "webhook.test");
    assert_eq!(got[0].json()["data"]["endpoint_id"], ea);
    assert!(signed_by(&got[0], &secret));
    assert!(
        b.requests().is_empty(),
        "the other endpoint gets nothing, though it takes every type"
    );
    let logged: String = one(
        &client,
        &format!("select event_type from webhook.delivery_log where event_id = {event}"),
    )
    .await;
    assert_eq!(logged, "webhook.test");
    assert_eq!(
        code_of(&client, "select webhook_send_test(424242)").await,
        SqlState::UNDEFINED_OBJECT
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_sends_the_same_webhook_id_and_keeps_the_history() {
    let db = TestDb::new().await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let client = db.client().await;
    let (ea, _) = db
        .subscribe(&client, &a.url("/"), &["*"], Some(r#"{"max_attempts": 1}"#))
        .await;
    let mut worker = RunningWorker::start(db.worker_config());
    let event: i64 = one(
        &client,
        "select webhook_publish('order.paid', '{\"id\": 9}')",
    )
    .await;
    a.wait_for(1).await;
    db.wait_deliveries(&client, "succeeded", 1, &mut worker.events)
        .await;
    // Subscribed after the event: it was never this endpoint's.
    let (eb, _) = db.subscribe(&client, &b.url("/"), &["order.*"], None).await;

    assert_eq!(
        one::<i32>(&client, &format!("select webhook_replay({event})")).await,
        1
    );
    let got = a.wait_for(2).await;
    db.wait_deliveries(&client, "succeeded", 2, &mut worker.events)
        .await;
    assert_eq!(
        got[0].header("webhook-id"),
        got[1].header("webhook-id"),
        "receivers can deduplicate"
    );
    assert_eq!(got[0].body, got[1].body);
    let history: Vec<(i64, i32, Option<i64>)> = client
        .query(
            "select id, attempt_count, replay_of from webhook.deliveries order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (history[0].1, history[0].2),
        (1, None),
        "the original is untouched"
    );
    assert_eq!(
        history[1].2,
        Some(history[0].0),
        "the replay says what it repeats"
    );
    assert_eq!(
        code_of(&client, &format!("select webhook_replay({event}, {eb})")).await,
        SqlState::INVALID_PARAMETER_VALUE,
        "not subscribed when it was committed"
    );
    assert_eq!(
        code_of(&client, "select webhook_replay(424242)").await,
        SqlState::UNDEFINED_OBJECT
    );

    // replay_failed: a delivery that gave up, sent again once the receiver is back.
    a.script(&[503]);
    client
        .batch_execute("select webhook_publish('invoice.failed', '{\"id\": 10}')")
        .await
        .unwrap();
    db.wait_deliveries(&client, "failed", 1, &mut worker.events)
        .await;
    let replayed: i32 = one(
        &client,
        &format!("select webhook_replay_failed({ea}, now() - interval '1 hour')"),
    )
    .await;
    assert_eq!(replayed, 1);
    db.wait_deliveries(&client, "succeeded", 3, &mut worker.events)
        .await;
    let failed_still: i64 = one(
        &client,
        "select count(*) from webhook.deliveries where status = 'failed'",
    )
    .await;
    assert_eq!(
        failed_still, 1,
        "the failed delivery stays failed; its replay succeeded"
    );
    client
        .batch_execute(&format!("select webhook_unsubscribe({ea})"))
        .await
        .unwrap();
    assert_eq!(
        code_of(&client, &format!("select webhook_replay({event}, {ea})")).await,
        SqlState::UNDEFINED_OBJECT,
        "a removed endpoint"
    );
    worker.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_at_once_notifies_and_resume_sends_what_waited() {
    let db = TestDb::new().await;
    let (gone, ops) = (Receiver::start().await, Receiver::start().await);
    gone.script(&[410]);
    let client = db.client().await;
    let (eg, _) = db
        .subscribe(&client, &gone.url("/"), &["order.*"], None)
        .await;
    let (_eo, _) = db
        .subscribe(&client, &ops.url("/ops"), &["webhook.*"], None)
        .await;
    let mut disabled = Listener::start(&db.dsn, "pg_webhook_endpoint_disabled").await;
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute("select webhook_publish('order.one', '{}')")
        .await
        .unwrap();
    assert_eq!(disabled.next().await, eg.to_string());
    let row = client
        .query_one(&format!("select is_active, disabled_at is not null, disabled_reason from webhook.endpoints where id = {eg}"), &[])
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert_eq!(row.get::<_, String>(2), "the endpoint answered 410 Gone");
    // The operations endpoint hears of it (and of the delivery given up).
    let heard: Vec<serde_json::Value> = ops.wait_for(2).await.iter().map(|r| r.json()).collect();
    let disabled = heard
        .iter()
        .find(|j| j["type"] == "webhook.endpoint.disabled")
        .expect("webhook.endpoint.disabled");
    assert_eq!(disabled["data"]["endpoint_id"], eg);
    assert!(heard
        .iter()
        .any(|j| j["type"] == "webhook.delivery.exhausted"));
    // What comes next waits, it does not fail.
    client
        .batch_execute("select webhook_publish('order.two', '{}')")
        .await
        .unwrap();
    db.wait_for(&client, &format!("select count(*) = 1 from webhook.deliveries where endpoint_id = {eg} and status = 'paused'"), Some(&mut worker.events))
        .await;
    assert_eq!(gone.requests().len(), 1);
    assert!(one::<bool>(&client, &format!("select webhook_resume({eg})")).await);
    let got = gone.wait_for(2).await;
    assert_eq!(got[1].json()["type"], "order.two");
    db.wait_for(
        &client,
        &format!("select is_active from webhook.endpoints where id = {eg}"),
        None,
    )
    .await;
    worker.stop().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_events_tell_of_failing_recovered_and_exhausted() {
    let db = TestDb::new().await;
    let (flaky, dead, ops) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    flaky.script(&[500, 500, 500]);
    dead.script(&[503]);
    let client = db.client().await;
    pg_webhook_tests::set_setting(&client, &db.name, "failing_after", 3).await;
    let quick =
        r#"{"initial_delay": "100 milliseconds", "backoff_multiplier": 1, "max_attempts": 10}"#;
    // flaky takes everything, pg_webhook's own events included: it must
    // never hear of itself.
    let (ef, _) = db
        .subscribe(&client, &flaky.url("/"), &["*"], Some(quick))
        .await;
    let (ed, _) = db
        .subscribe(
            &client,
            &dead.url("/"),
            &["order.two"],
            Some(r#"{"max_attempts": 1}"#),
        )
        .await;
    db.subscribe(&client, &ops.url("/ops"), &["webhook.*"], None)
        .await;
    let mut failing = Listener::start(&db.dsn, "pg_webhook_endpoint_failing").await;
    let mut recovered = Listener::start(&db.dsn, "pg_webhook_endpoint_recovered").await;
    let mut exhausted = Listener::start(&db.dsn, "pg_webhook_delivery_exhausted").await;
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute("select webhook_publish('order.one', '{}')")
        .await
        .unwrap();
    assert_eq!(failing.next().await, ef.to_string());
    assert_eq!(recovered.next().await, ef.to_string());
    let heard = ops.wait_for(2).await;
    let (f, r) = (heard[0].json(), heard[1].json());
    assert_eq!(f["type"], "webhook.endpoint.failing");
    assert_eq!(f["data"]["endpoint_id"], ef);
    assert_eq!(f["data"]["consecutive_failures"], 3);
    assert_eq!(f["data"]["last_failure_status"], 500);
    assert!(
        f["data"]["disables_in_seconds"].as_f64().unwrap() > 0.0,
        "{f}"
    );
    assert_eq!(r["type"], "webhook.endpoint.recovered");
    assert_eq!(r["data"]["consecutive_failures"], 3);
    assert_eq!(r["data"]["failing_since"], f["data"]["failing_since"]);

    // A delivery that gives up (one attempt allowed) is reported; one
    // failure is not a failing endpoint.
    client
        .batch_execute("select webhook_publish('order.two', '{}')")
        .await
        .unwrap();
    assert_eq!(exhausted.next().await, ed.to_string());
    let heard = ops.wait_for(3).await;
    let x = heard[2].json();
    assert_eq!(x["type"], "webhook.delivery.exhausted");
    assert_eq!(x["data"]["endpoint_id"], ed);
    assert_eq!(x["data"]["event_type"], "order.two");
    assert_eq!(x["data"]["attempts"], 1);
    assert_eq!(x["data"]["last_status_code"], 503);
    assert!(x["data"]["message_id"]
        .as_str()
        .unwrap()
        .starts_with("msg_"));
    // flaky heard of dead's delivery, never of itself.
    db.wait_for(
        &client,
        &format!("select count(*) = 0 from webhook.deliveries_open where endpoint_id = {ef}"),
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;
    let about: Vec<(String, i64)> = flaky
        .requests()
        .iter()
        .map(|q| q.json())
        .filter(|j| j["type"].as_str().unwrap().starts_with("webhook."))
        .map(|j| {
            (
                j["type"].as_str().unwrap().to_owned(),
                j["data"]["endpoint_id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(about, [("webhook.delivery.exhausted".to_owned(), ed)]);
    db.assert_invariants(&client).await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_longer_than_disable_after_is_disabled() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    receiver.script(&[500; 1000]);
    let client = db.client().await;
    // Seconds instead of days: the rule is the same.
    pg_webhook_tests::set_setting(&client, &db.name, "disable_after", 2).await;
    let (id, _) = db
        .subscribe(&client, &receiver.url("/"), &["*"], Some(r#"{"initial_delay": "300 milliseconds", "backoff_multiplier": 1, "max_attempts": 100}"#))
        .await;
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute("select webhook_publish('keeps.failing', '{}')")
        .await
        .unwrap();
    db.wait_for(
        &client,
        &format!("select disabled_at is not null from webhook.endpoints where id = {id}"),
        Some(&mut worker.events),
    )
    .await;
    worker.stop().await;
    let row = client
        .query_one(
            &format!("select e.disabled_reason, a.failing_since <= e.disabled_at - interval '2 seconds', d.status::text
                      from webhook.endpoints e join webhook.endpoint_activity a on a.endpoint_id = e.id
                      join webhook.deliveries d on d.endpoint_id = e.id
                      join webhook.events ev on ev.id = d.event_id and ev.event_type = 'keeps.failing'
                      where e.id = {id}"),
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, String>(0)
            .starts_with("no successful delivery since"),
        "{}",
        row.get::<_, String>(0)
    );
    assert!(
        row.get::<_, bool>(1),
        "disabled only once it had failed for disable_after"
    );
    assert_eq!(
        row.get::<_, String>(2),
        "paused",
        "its delivery waits, it is not failed"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_health_reports_rates_latency_failures_and_backlog() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    receiver.script(&[500, 500]);
    let client = db.client().await;
    let (id, _) = db
        .subscribe(
            &client,
            &receiver.url("/"),
            &["*"],
            Some(r#"{"initial_delay": "100 milliseconds", "max_attempts": 5}"#),
        )
        .await;
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute(
            "select webhook_publish('h.one', '{}'); select webhook_publish('h.two', '{}');",
        )
        .await
        .unwrap();
    db.wait_deliveries(&client, "succeeded", 2, &mut worker.events)
        .await;
    worker.stop().await;
    let r = client
        .query_one(
            &format!("select state, attempts_1h, success_rate_1h::float8, p50_ms_1h, p95_ms_1h, attempts_24h,
                             last_success_at is not null, last_failure_status, last_failure_error,
                             consecutive_failures, pending, waiting
                      from webhook.endpoint_health where endpoint_id = {id}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "active");
    assert_eq!(r.get::<_, i64>(1), 4, "two failures and two successes");
    assert_eq!(r.get::<_, f64>(2), 0.5);
    assert!(r.get::<_, Option<f64>>(3).unwrap() >= 1.0);
    assert!(r.get::<_, Option<f64>>(4).unwrap() >= r.get::<_, Option<f64>>(3).unwrap());
    assert_eq!(r.get::<_, i64>(5), 4);
    assert!(r.get::<_, bool>(6));
    assert_eq!(r.get::<_, Option<i32>>(7), Some(500));
    assert_eq!(r.get::<_, Option<String>>(8).as_deref(), Some("HTTP 500"));
    assert_eq!(r.get::<_, i32>(9), 0, "a success ends the run of failures");
    assert_eq!((r.get::<_, i64>(10), r.get::<_, i64>(11)), (0, 0));
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_auth_is_sent_on_every_request_and_never_shown_to_readers() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    for (path, auth) in [
        (
            "/basic",
            r#"{"type": "basic", "username": "shop", "password": "pa:ss wörd"}"#,
        ),
        ("/bearer", r#"{"type": "bearer", "token": "tok-123"}"#),
        (
            "/key",
            r#"{"type": "api_key", "header": "x-api-key", "key": "k-456"}"#,
        ),
    ] {
        client
            .query_one(
                "select endpoint_id from webhook_subscribe($1, auth => $2::text::jsonb)",
                &[&receiver.url(path), &auth],
            )
            .await
            .unwrap();
    }
    let mut worker = RunningWorker::start(db.worker_config());
    client
        .batch_execute("select webhook_publish('auth.check', '{}')")
        .await
        .unwrap();
    db.wait_deliveries(&client, "succeeded", 3, &mut worker.events)
        .await;
    worker.stop().await;
    let got = receiver.requests();
    let by_path = |p: &str| {
        got.iter()
            .find(|r| r.path == p)
            .unwrap_or_else(|| panic!("no request to {p}"))
            .clone()
    };
    let basic: String = one(
        &client,
        "select encode(convert_to('shop:pa:ss wörd', 'UTF8'), 'base64')",
    )
    .await;
    assert_eq!(
        by_path("/basic").header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(
        by_path("/bearer").header("authorization"),
        Some("Bearer tok-123")
    );
    assert_eq!(by_path("/key").header("x-api-key"), Some("k-456"));
    // The credentials live with the secrets: not in webhook.endpoints.
    let shown: String = one(
        &client,
        "select string_agg(row_to_json(e)::text, ' ') from webhook.endpoints e",
    )
    .await;
    for secret in ["pa:ss", "tok-123", "k-456"] {
        assert!(
            !shown.contains(secret),
            "{secret} shown in webhook.endpoints"
        );
    }
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_types_lists_watched_and_published_types_with_counts() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "create table orders (id int primary key);
             select webhook_watch('orders', operations => '{insert,delete}', event_prefix => 'order');
             insert into orders values (1), (2);
             select webhook_publish('invoice.paid', '{}') from generate_series(1, 3);",
        )
        .await
        .unwrap();
    let rows = client
        .query(
            "select event_type, source, events_kept, last_seen_at is not null from webhook.event_types order by 1",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, i64, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        vec![
            ("invoice.paid".into(), "published".into(), 3, true),
            ("order.created".into(), "watched".into(), 2, true),
            ("order.deleted".into(), "watched".into(), 0, false),
        ]
    );
    db.finish().await;
}
