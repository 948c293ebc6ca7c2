//! Egress: deliveries through an egress proxy (for a stable source address),
//! and what the private-destination guard can still refuse behind one.

use pg_webhook_tests::{ForwardProxy, Receiver, RunningWorker, TestCa, TestDb};
use pg_webhook_worker::config::ProxyUrl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_through_the_proxy_over_http_and_https() {
    let db = TestDb::new().await;
    let proxy = ForwardProxy::start().await;
    let ca = TestCa::new();
    let plain = Receiver::start().await;
    let tls = Receiver::start_tls(&ca).await;
    let client = db.client().await;
    db.subscribe(&client, &plain.url("/plain"), &["*"], None)
        .await;
    db.subscribe(&client, &tls.https_url("/tls"), &["*"], None)
        .await;
    let mut config = db.worker_config();
    config.proxy = Some(ProxyUrl::parse(&proxy.url()).unwrap());
    config.extra_roots = pg_webhook_worker::config::Roots(ca.roots());
    let mut worker = RunningWorker::start(config);
    client
        .batch_execute("select webhook_publish('via.proxy', '{}')")
        .await
        .unwrap();
    plain.wait_for(1).await;
    tls.wait_for(1).await;
    db.wait_deliveries(&client, "succeeded", 2, &mut worker.events)
        .await;
    worker.stop().await;
    let targets = proxy.targets();
    let plain_host = plain.url("").trim_start_matches("http://").to_owned();
    let tls_host = tls.https_url("").trim_start_matches("https://").to_owned();
    assert!(
        targets.contains(&format!("POST {plain_host}")),
        "{targets:?}"
    );
    assert!(
        targets.contains(&format!("CONNECT {tls_host}")),
        "{targets:?}"
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_private_literals_are_still_refused_before_sending() {
    let db = TestDb::new().await;
    let proxy = ForwardProxy::start().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    // The database lets the loopback URL in; the worker does not.
    db.subscribe(
        &client,
        &receiver.url("/"),
        &["*"],
        Some(r#"{"max_attempts": 1}"#),
    )
    .await;
    let mut config = db.worker_config();
    config.allow_private_targets = false;
    config.proxy = Some(ProxyUrl::parse(&proxy.url()).unwrap());
    let mut worker = RunningWorker::start(config);
    client
        .batch_execute("select webhook_publish('no.way', '{}')")
        .await
        .unwrap();
    db.wait_deliveries(&client, "failed", 1, &mut worker.events)
        .await;
    worker.stop().await;
    let error: String = client
        .query_one("select error from webhook.attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert!(error.starts_with("destination refused"), "{error}");
    assert!(
        proxy.targets().is_empty(),
        "nothing reached the proxy: {:?}",
        proxy.targets()
    );
    assert!(receiver.requests().is_empty());
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_sent_past_the_proxy_does_not_inherit_its_trust() {
    // The proxy is known by a name that resolves to an internal address
    // (this machine's own name: loopback here). NO_PROXY sends requests for
    // that name past the proxy; the guard lets the proxy's name resolve to
    // any address, so such a request must be refused, not sent.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the machine's name")
        .trim()
        .to_owned();
    let db = TestDb::new().await;
    let proxy = ForwardProxy::start().await;
    let receiver = Receiver::start().await;
    let client = db.client().await;
    let port = |url: &str| {
        url.trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .to_owned()
    };
    let target = format!("http://{host}:{}/", port(&receiver.url("")));
    db.subscribe(&client, &target, &["*"], Some(r#"{"max_attempts": 1}"#))
        .await;
    let mut config = db.worker_config();
    config.allow_private_targets = false;
    config.proxy = Some(ProxyUrl::parse(&format!("http://{host}:{}", port(&proxy.url()))).unwrap());
    config.no_proxy = Some(host.clone());
    let mut worker = RunningWorker::start(config);
    client
        .batch_execute("select webhook_publish('no.way', '{}')")
        .await
        .unwrap();
    db.wait_deliveries(&client, "failed", 1, &mut worker.events)
        .await;
    worker.stop().await;
    let error: String = client
        .query_one("select error from webhook.attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        error, "destination refused: the egress proxy's own host is not a destination",
        "{error}"
    );
    assert!(receiver.requests().is_empty());
    assert!(proxy.targets().is_empty(), "{:?}", proxy.targets());
    db.finish().await;
}
