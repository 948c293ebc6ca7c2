//! What a platform team watches: /metrics scraped during a run, /healthz,
//! /readyz following the database, JSON-free text logs aside; and the
//! status page, loaded in a real headless Chromium.

use pg_webhook_tests::{connect, Receiver, RunningWorker, TestDb};
use pg_webhook_worker::WorkerEvent;
use std::net::SocketAddr;

/// Starts a worker serving on a free port and returns it with the address.
async fn serving_worker(db: &TestDb, user: Option<&str>) -> (RunningWorker, SocketAddr) {
    let mut config = db.worker_config();
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    if let Some(u) = user {
        config.pg.user(u);
        config.listen_pg.user(u);
    }
    let mut worker = RunningWorker::start(config);
    let addr = pg_webhook_tests::within("the metrics server", async {
        loop {
            if let Some(WorkerEvent::Serving(addr)) = worker.events.recv().await {
                return addr;
            }
        }
    })
    .await;
    (worker, addr)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("the worker answers");
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The value of the first sample line starting with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_during_a_run() {
    let db = TestDb::new().await;
    let (good, bad) = (Receiver::start().await, Receiver::start().await);
    bad.script(&[500; 100]);
    let root = db.client().await;
    let role = format!("{}_obs", db.name);
    root.batch_execute(&format!("create role {role} login in role webhook_worker"))
        .await
        .unwrap();
    let (eg, _) = db
        // Not "*": the operator events about the other endpoint would add to its counts.
        .subscribe(&root, &good.url("/secret-path?token=abc"), &["m.*"], None)
        .await;
    let (eb, _) = db
        .subscribe(
            &root,
            &bad.url("/"),
            &["*"],
            Some(r#"{"max_attempts": 2, "initial_delay": "10 milliseconds"}"#),
        )
        .await;
    let (mut worker, addr) = serving_worker(&db, Some(&role)).await;

    assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
    let (code, text) = get(addr, "/readyz").await;
    assert_eq!(code, 200, "{text}");
    root.batch_execute(
        "select webhook_publish('m.one', jsonb_build_object('i', i)) from generate_series(1, 10) i",
    )
    .await
    .unwrap();
    db.wait_deliveries(&root, "succeeded", 10, &mut worker.events)
        .await;
    db.wait_deliveries(&root, "failed", 10, &mut worker.events)
        .await;
    // The failures' operator events (about the failing endpoint, so for no
    // endpoint here) wait for the fan-out that follows their recording.
    db.wait_for(
        &root,
        "select webhook._queue_lag_seconds() = 0",
        Some(&mut worker.events),
    )
    .await;

    let (code, m) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    let with = |labels: &str| format!("pg_webhook_{labels}");
    assert_eq!(
        sample(
            &m,
            &with(&format!(
                "deliveries_total{{endpoint=\"{eg}\",outcome=\"succeeded\"}}"
            ))
        ),
        Some(10.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &with(&format!(
                "deliveries_total{{endpoint=\"{eb}\",outcome=\"failed\"}}"
            ))
        ),
        Some(10.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &with(&format!(
                "deliveries_total{{endpoint=\"{eb}\",outcome=\"retry\"}}"
            ))
        ),
        Some(10.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &with(&format!(
                "attempts_total{{endpoint=\"{eb}\",status_class=\"5xx\"}}"
            ))
        ),
        Some(20.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, &with("delivery_latency_seconds_count")),
        Some(10.0),
        "{m}"
    );
    assert!(sample(&m, &with("claim_duration_seconds_count")).unwrap() >= 1.0);
    assert!(sample(&m, &with("record_duration_seconds_count")).unwrap() >= 1.0);
    assert!(sample(&m, &with("claimed_total")).unwrap() >= 30.0);
    assert!(sample(&m, &with("in_flight")).is_some());
    assert_eq!(
        sample(&m, &with("queue_lag_seconds")),
        Some(0.0),
        "nothing waits: {m}"
    );
    assert!(
        !m.contains("127.0.0.1") && !m.contains("token"),
        "labels carry endpoint ids, never URLs"
    );

    // The database goes away for the worker's login: not ready; it comes back: ready again.
    root.batch_execute(&format!(
        "alter role {role} nologin;
         select pg_terminate_backend(pid) from pg_stat_activity where usename = '{role}';"
    ))
    .await
    .unwrap();
    let (code, text) = get(addr, "/readyz").await;
    assert_eq!(code, 503, "{text}");
    assert!(text.starts_with("not ready"), "{text}");
    assert_eq!(get(addr, "/healthz").await.0, 200, "alive all the same");
    root.batch_execute(&format!("alter role {role} login"))
        .await
        .unwrap();
    db.wait_for(
        &root,
        &format!("select count(*) >= 2 from pg_stat_activity where usename = '{role}'"),
        None,
    )
    .await;
    let (code, text) = get(addr, "/readyz").await;
    assert_eq!(code, 200, "{text}");
    root.batch_execute("select webhook_publish('m.two', '{}')")
        .await
        .unwrap();
    db.wait_deliveries(&root, "succeeded", 11, &mut worker.events)
        .await;
    let (_, m) = get(addr, "/metrics").await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("pg_webhook_database_reconnects_total{") && !l.ends_with(" 0")),
        "reconnects are counted: {m}"
    );
    worker.stop().await;
    drop(root);
    let admin = connect(&pg_webhook_tests::admin_dsn()).await;
    let _ = admin
        .batch_execute(&format!(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = '{role}'"
        ))
        .await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_health_failures_and_a_chart_in_chromium() {
    let db = TestDb::new().await;
    let (good, bad) = (Receiver::start().await, Receiver::start().await);
    bad.script(&[500; 100]);
    let root = db.client().await;
    let (_, good_secret) = db
        .subscribe(&root, &good.url("/in?token=t0ps3cret"), &["page.*"], None)
        .await;
    root.batch_execute(&format!(
        "select webhook_subscribe('{}', name => 'billing-broken', retry_policy => '{{\"max_attempts\": 1}}',
                                  headers => '{{\"authorization\": \"Bearer h3ad3rvalue\"}}')",
        bad.url("/")
    ))
    .await
    .unwrap();
    let (mut worker, addr) = serving_worker(&db, None).await;
    root.batch_execute("select webhook_publish('page.view', jsonb_build_object('i', i)) from generate_series(1, 5) i")
        .await
        .unwrap();
    db.wait_deliveries(&root, "failed", 5, &mut worker.events)
        .await;
    db.wait_deliveries(&root, "succeeded", 5, &mut worker.events)
        .await;

    // Nothing secret in what the page serves.
    let (code, html) = get(addr, "/").await;
    assert_eq!(code, 200);
    for secret in [good_secret.as_str(), "t0ps3cret", "h3ad3rvalue", "<script"] {
        assert!(!html.contains(secret), "the page shows {secret:?}");
    }

    // A real browser renders it: what it shows, and a screenshot kept with the results.
    let url = format!("http://{addr}/");
    let dom = pg_webhook_tests::chromium(&["--dump-dom", &url]).await;
    assert!(dom.contains("billing-broken"), "{dom}");
    assert!(dom.contains("endpoint-1"), "{dom}");
    assert!(
        dom.contains("HTTP 500"),
        "the failure and its status: {dom}"
    );
    assert!(
        dom.contains("id=\"chart\"") && dom.contains("<rect") && dom.contains("<circle"),
        "the chart: {dom}"
    );
    assert!(
        dom.contains("100.0 %") && dom.contains("0.0 %"),
        "success rates: {dom}"
    );
    // Into target/, not the tracked results/status-page.png (which is
    // refreshed by hand from this file when the page changes).
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/status-page.png");
    pg_webhook_tests::chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1400,1000",
        &url,
    ])
    .await;
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real picture"
    );
    worker.stop().await;
    db.finish().await;
}
