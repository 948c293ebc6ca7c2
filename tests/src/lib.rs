//! Harness for the end-to-end tests: a database per test in the throwaway
//! cluster started by `tests/run.sh`, an HTTP receiver on 127.0.0.1 with a
//! scriptable answer, the worker (in-process or as its real binary), and
//! waits that end on a condition or fail loudly at a deadline.
//!
//! Must not: sleep for a fixed time in place of waiting for a condition.
#![warn(missing_docs)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Version};
use pg_webhook_worker::{CancellationToken, Config, Worker, WorkerEvent};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_postgres::{Client, NoTls};

/// Default deadline of every wait.
pub const WAIT: Duration = Duration::from_secs(30);

/// Connection string of the cluster's admin database (set by tests/run.sh).
pub fn admin_dsn() -> String {
    std::env::var("PG_WEBHOOK_TEST_DSN").expect(
        "PG_WEBHOOK_TEST_DSN is not set: run the end-to-end tests with `bash tests/run.sh`, \
         which starts a throwaway PostgreSQL cluster and installs the extension",
    )
}

/// Connects and drives the connection in a task.
pub async fn connect(dsn: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {dsn}: {e}"));
    tokio::spawn(connection);
    client
}

/// A fresh database with the extension installed, for one test.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// Connection string to it.
    pub dsn: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// Creates the database and the extension, and allows private targets
    /// (the receivers live on 127.0.0.1).
    pub async fn new() -> Self {
        let db = Self::empty().await;
        connect(&db.dsn)
            .await
            .batch_execute("create extension pg_webhook")
            .await
            .expect("create extension");
        db
    }

    /// A database without the extension (a restore target, an upgrade test).
    pub async fn empty() -> Self {
        let admin = admin_dsn();
        let name = format!(
            "pgwh_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let client = connect(&admin).await;
        client
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create database");
        client
            .batch_execute(&format!(
                "alter database {name} set pg_webhook.allow_private_targets = on"
            ))
            .await
            .expect("alter database");
        let dsn = format!("{admin} dbname={name}");
        Self { name, dsn }
    }

    /// A new connection to this database.
    pub async fn client(&self) -> Client {
        connect(&self.dsn).await
    }

    /// Worker settings for tests: private targets allowed, short timers.
    pub fn worker_config(&self) -> Config {
        let mut c = Config::for_database(&self.dsn).expect("valid test DSN");
        c.allow_private_targets = true;
        c.poll_interval = Duration::from_millis(500);
        c.lease_margin = Duration::from_millis(500);
        c.drain_timeout = Duration::from_secs(10);
        c
    }

    /// Subscribes `url`; returns (endpoint id, signing secret).
    pub async fn subscribe(
        &self,
        client: &Client,
        url: &str,
        patterns: &[&str],
        retry_policy: Option<&str>,
    ) -> (i64, String) {
        let policy: Option<serde_json::Value> =
            retry_policy.map(|p| serde_json::from_str(p).expect("policy JSON"));
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let row = client
            .query_one(
                "select endpoint_id, signing_secret from webhook_subscribe($1, $2, retry_policy => $3)",
                &[&url, &patterns, &policy],
            )
            .await
            .expect("webhook_subscribe");
        (row.get(0), row.get(1))
    }

    /// A login role of this test's own (`<database>_<suffix>`: roles are
    /// cluster-wide), member of `member_of` (none when empty), created by
    /// `admin`; returns its name and a connection to this database as it.
    pub async fn login(
        &self,
        admin: &Client,
        suffix: &str,
        member_of: &[&str],
    ) -> (String, Client) {
        let name = format!("{}_{suffix}", self.name);
        let roles = if member_of.is_empty() {
            String::new()
        } else {
            format!(" in role {}", member_of.join(", "))
        };
        admin
            .batch_execute(&format!("create role {name} login{roles}"))
            .await
            .expect("create a login role");
        let client = connect(&format!("{} user={name}", self.dsn)).await;
        (name, client)
    }

    /// Ends a scenario: fails the test if anything breaks an invariant that
    /// spans rows (see [`Self::assert_invariants`]), then drops the
    /// database (its connections too). Every end-to-end test ends with it,
    /// once its workers are stopped.
    pub async fn finish(self) {
        let client = self.client().await;
        self.assert_invariants(&client).await;
        drop(client);
        connect(&admin_dsn())
            .await
            .batch_execute(&format!("drop database {} with (force)", self.name))
            .await
            .expect("drop the test database");
    }

    /// Fails the test if anything breaks an invariant that spans rows
    /// (`webhook._invariant_violations()`; each row's own are CHECKs).
    pub async fn assert_invariants(&self, client: &Client) {
        let rows = client
            .query(
                "select object_id, invariant from webhook._invariant_violations()",
                &[],
            )
            .await
            .expect("invariant check");
        let broken: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert!(broken.is_empty(), "invariants broken: {broken:?}");
    }

    /// What the deliveries look like (for failure messages).
    pub async fn describe_deliveries(&self, client: &Client) -> String {
        match client
            .query(
                "select d.endpoint_id, d.status::text, count(*), min(d.last_error)
                 from webhook.deliveries d group by 1, 2 order by 1, 2",
                &[],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    format!(
                        "endpoint {} {}: {} (last error {:?})",
                        r.get::<_, i64>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i64>(2),
                        r.get::<_, Option<String>>(3)
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("(cannot read them: {e})"),
        }
    }

    /// The webhook-id of the event with this id.
    pub async fn message_id(&self, client: &Client, event_id: i64) -> String {
        client
            .query_one(
                "select webhook._message_id(e.txid, e.id, e.id_namespace) from webhook.events e where e.id = $1",
                &[&event_id],
            )
            .await
            .expect("the event exists")
            .get(0)
    }

    /// Waits until exactly `n` deliveries have `status` (see [`Self::wait_for`]).
    pub async fn wait_deliveries(
        &self,
        client: &Client,
        status: &str,
        n: i64,
        events: &mut mpsc::UnboundedReceiver<WorkerEvent>,
    ) {
        let sql =
            format!("select count(*) = {n} from webhook.deliveries where status = '{status}'");
        self.wait_for(client, &sql, Some(events)).await;
    }

    /// Waits until `sql` (a query returning one boolean) is true, re-checking
    /// whenever the worker reports progress and at least every 100 ms (other
    /// processes' progress sends no events). Panics at the deadline.
    pub async fn wait_for(
        &self,
        client: &Client,
        sql: &str,
        events: Option<&mut mpsc::UnboundedReceiver<WorkerEvent>>,
    ) {
        let deadline = Instant::now() + WAIT;
        let mut events = events;
        loop {
            let ok: bool = client
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0);
            if ok {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out after {WAIT:?} waiting for: {sql}\ndeliveries now: {}",
                    self.describe_deliveries(client).await
                );
            }
            let tick = left.min(Duration::from_millis(100));
            match events.as_deref_mut() {
                Some(rx) => {
                    let _ = tokio::time::timeout(tick, rx.recv()).await;
                }
                None => tokio::time::sleep(tick).await,
            }
        }
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request's path.
    pub path: String,
    /// Header name (lowercase) → value.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: String,
    /// HTTP/1.1 or HTTP/2.
    pub version: Version,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("the body is JSON")
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Vec<Received>,
    script: VecDeque<u16>,
    delay: Duration,
    /// (every nth request fails with 500, every mth stalls this long)
    chaos: Option<(usize, usize, Duration)>,
    /// Answer with the request's headers, as a debugging endpoint does.
    echo: bool,
}

struct Shared {
    state: Mutex<ReceiverState>,
    arrived: Notify,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ReceiverState::default()),
            arrived: Notify::new(),
        })
    }
}

/// An HTTP server on 127.0.0.1 that records every request and answers with
/// scripted statuses (then 200).
pub struct Receiver {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<Notify>,
}

impl Receiver {
    /// Starts on a free port.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// Binds 127.0.0.1:0 and serves the recording handler, over TLS when an
    /// acceptor is given (HTTP/2 or HTTP/1.1, as ALPN decides).
    async fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let shared = Shared::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let Some(acceptor) = tls else {
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stopped.notified().await })
                    .await
                    .expect("receiver server");
            });
            return Self { addr, shared, stop };
        };
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stopped.notified() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let acceptor = acceptor.clone();
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self { addr, shared, stop }
    }

    /// URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The next answers, in order; 200 after they run out.
    pub fn script(&self, statuses: &[u16]) {
        self.shared.state.lock().unwrap().script.extend(statuses);
    }

    /// Answer every request with its own headers (`name: value` lines).
    pub fn echo_headers(&self) {
        self.shared.state.lock().unwrap().echo = true;
    }

    /// Delay every answer by this much.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.state.lock().unwrap().delay = delay;
    }

    /// Everything received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Waits until at least `n` requests arrived; panics at the deadline.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + WAIT;
        loop {
            let arrived = self.shared.arrived.notified();
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {n} requests, got {}",
                got.len()
            );
            let _ = tokio::time::timeout(left, arrived).await;
        }
    }
}

/// A certificate authority made up for one test, and a server certificate
/// it signed for `127.0.0.1` and `localhost`.
pub struct TestCa {
    /// The CA certificate, PEM (what the worker is told to trust).
    pub ca_pem: String,
    /// The server certificate and its key, PEM (for PostgreSQL's ssl_cert_file / ssl_key_file).
    pub server_pem: (String, String),
    server_cert: rustls::pki_types::CertificateDer<'static>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl TestCa {
    /// Generates the CA and the server certificate.
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned()]).expect("server params");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().expect("an IP")));
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        Self {
            ca_pem: ca.pem(),
            server_pem: (cert.pem(), key.serialize_pem()),
            server_cert: cert.der().clone(),
            server_key: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }

    /// The CA certificate as the worker's `extra_roots`.
    pub fn roots(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("the CA PEM parses")
    }

    /// Writes the CA certificate to a file and returns its path.
    pub fn write_ca_file(&self) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "pgwh-ca-{}-{}.pem",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&path, &self.ca_pem).expect("write the CA file");
        path
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl Receiver {
    /// Starts an HTTPS receiver (HTTP/2 or HTTP/1.1 by ALPN) with a
    /// certificate of `ca`.
    pub async fn start_tls(ca: &TestCa) -> Self {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![ca.server_cert.clone()], ca.server_key.clone_key())
            .expect("server certificate");
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))).await
    }

    /// Misbehaves on a fixed pattern: every `fail_every`th request gets a
    /// 500, every `stall_every`th is answered only after `stall`.
    pub fn set_chaos(&self, fail_every: usize, stall_every: usize, stall: Duration) {
        self.shared.state.lock().unwrap().chaos = Some((fail_every, stall_every, stall));
    }

    /// `https://` URL of `path` on this receiver.
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{}", self.addr, path)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    version: Version,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let received = Received {
        path: uri.path().to_owned(),
        version,
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    };
    let echoed: String = received
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect();
    let (status, delay, answer) = {
        let mut s = shared.state.lock().unwrap();
        s.requests.push(received);
        let answer = if s.echo {
            echoed
        } else {
            "receiver says hi".to_owned()
        };
        let n = s.requests.len();
        match s.chaos {
            Some((fail, stall, long)) => (
                if n % fail == 0 { 500 } else { 200 },
                if n % stall == 0 { long } else { s.delay },
                answer,
            ),
            None => (s.script.pop_front().unwrap_or(200), s.delay, answer),
        }
    };
    shared.arrived.notify_waiters();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    (
        StatusCode::from_u16(status).expect("scripted status is valid"),
        answer,
    )
}

/// A worker running in this process.
pub struct RunningWorker {
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), pg_webhook_worker::Error>>,
    /// Its progress signals.
    pub events: mpsc::UnboundedReceiver<WorkerEvent>,
    /// Its metrics (what it counts as it runs).
    pub metrics: Arc<pg_webhook_worker::metrics::Metrics>,
}

impl RunningWorker {
    /// Starts a worker with `config`.
    pub fn start(config: Config) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let worker = Worker::new(config).with_events(tx);
        let metrics = worker.metrics();
        let handle = tokio::spawn(worker.run(cancel.clone()));
        Self {
            cancel,
            handle,
            events,
            metrics,
        }
    }

    /// Cancels it and waits for a clean exit.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.handle
            .await
            .expect("worker task")
            .expect("worker ran without a fatal error");
    }
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers:
/// an endpoint that stopped responding (every request runs into its timeout).
pub struct Blackhole {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    /// Starts on a free port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind blackhole");
        let addr = listener.local_addr().expect("blackhole address");
        let accepted = Arc::new(AtomicU32::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                held.push(socket); // kept open, never read, never answered
            }
        });
        Self {
            addr,
            accepted,
            task,
        }
    }

    /// URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::Relaxed) as usize
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A small forward proxy on 127.0.0.1: `CONNECT host:port` tunnels (for
/// https destinations) and absolute-form requests (`POST http://host/...`,
/// for http ones), forwarded as they are. It notes every destination asked
/// for, so a test can tell that traffic went through it.
pub struct ForwardProxy {
    addr: std::net::SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ForwardProxy {
    /// Starts on a free port.
    pub async fn start() -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = targets.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut client = BufReader::new(client);
                    let mut head = Vec::new();
                    // The request head, up to the blank line.
                    loop {
                        let mut line = Vec::new();
                        if client.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let end = line == b"\r\n";
                        head.extend_from_slice(&line);
                        if end {
                            break;
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let mut first = text.lines().next().unwrap_or_default().split_whitespace();
                    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
                    let host_port = if method == "CONNECT" {
                        target.to_owned()
                    } else {
                        target
                            .strip_prefix("http://")
                            .and_then(|rest| rest.split('/').next())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    seen.lock().unwrap().push(format!("{method} {host_port}"));
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(&host_port).await else {
                        let _ = client
                            .get_mut()
                            .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    };
                    if method == "CONNECT" {
                        if client
                            .get_mut()
                            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    } else if upstream.write_all(&head).await.is_err() {
                        // An origin server accepts the absolute form (RFC 9112, 3.2.2).
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        Self {
            addr,
            targets,
            task,
        }
    }

    /// Its URL, to pass as the worker's proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every "METHOD host:port" asked for so far.
    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Debian's pgbouncer in transaction pooling mode, in front of the test
/// cluster, on a free port of 127.0.0.1; stopped when dropped.
pub struct PgBouncer {
    port: u16,
    dir: std::path::PathBuf,
    child: std::process::Child,
}

impl PgBouncer {
    /// Starts it with a pool of `pool_size` server connections per
    /// database, so that consecutive transactions of one client run on
    /// different server connections.
    pub async fn start(pool_size: u32) -> Self {
        let admin: tokio_postgres::Config = admin_dsn().parse().expect("admin DSN");
        let pg_port = admin.get_ports().first().copied().unwrap_or(5432);
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("pgwh-pgbouncer-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pgbouncer directory");
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={pg_port} user=postgres\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = any\npool_mode = transaction\ndefault_pool_size = {pool_size}\n\
                 max_client_conn = 200\nstats_users = postgres\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {log}\npidfile = {pid}\n",
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .expect("pgbouncer.ini");
        let bin = std::env::var("PGBOUNCER_BIN").unwrap_or_else(|_| "/usr/sbin/pgbouncer".into());
        // pgbouncer refuses to run as root: as root, it runs as postgres.
        chown_to_cluster_owner(&dir);
        let mut command = command_as_cluster_owner(&bin);
        let child = command
            .arg(&ini)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (install Debian's pgbouncer): {e}"));
        let bouncer = Self { port, dir, child };
        // Ready once it accepts a client.
        let deadline = Instant::now() + WAIT;
        while tokio_postgres::connect(&bouncer.dsn("postgres"), NoTls)
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not start: see {}",
                bouncer.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bouncer
    }

    /// A connection string to `dbname` through it.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// Transactions it has passed on for `dbname` (SHOW STATS).
    pub async fn transactions(&self, dbname: &str) -> i64 {
        let c = connect(&self.dsn("pgbouncer")).await;
        let rows = c.simple_query("show stats").await.expect("show stats");
        rows.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get("database") == Some(dbname) => {
                    r.get("total_xact_count")
                        .and_then(|v| v.parse::<i64>().ok())
                }
                _ => None,
            })
            .sum()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // SIGTERM through kill: the child may be runuser, whose pgbouncer
        // child gets the signal forwarded.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pgbouncer.pid")) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", pid.trim()])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root (PostgreSQL tools then run as postgres).
fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL's programs (and pgbouncer) refuse to run as root: as root,
/// `program` runs as the `postgres` OS user, else as the test itself.
fn command_as_cluster_owner(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    if running_as_root() {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

/// Gives `dir` (recursively) to the user [`command_as_cluster_owner`] runs as.
fn chown_to_cluster_owner(dir: &std::path::Path) {
    if running_as_root() {
        let _ = std::process::Command::new("chown")
            .args(["-R", "postgres"])
            .arg(dir)
            .status();
    }
}

/// A TCP port free on 127.0.0.1 (for a server a program starts itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A connection LISTENing on a channel; notifications' payloads arrive on `rx`.
pub struct Listener {
    /// Payloads, in the order they were notified.
    pub rx: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Connects and LISTENs on `channel` (a plain identifier).
    pub async fn start(dsn: &str, channel: &str) -> Self {
        use futures_util::future::poll_fn;
        let (client, mut connection) = tokio_postgres::connect(dsn, NoTls)
            .await
            .expect("listener connects");
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sql = format!("listen {channel}");
        let task = tokio::spawn(async move {
            let listen = client.batch_execute(&sql);
            tokio::pin!(listen);
            let mut ready = Some(ready_tx);
            loop {
                tokio::select! {
                    r = &mut listen, if ready.is_some() => {
                        r.expect("listen");
                        let _ = ready.take().map(|t| t.send(()));
                    }
                    msg = poll_fn(|cx| connection.poll_message(cx)) => match msg {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                            let _ = tx.send(n.payload().to_owned());
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                }
            }
        });
        ready_rx.await.expect("the listener is listening");
        Self { rx, task }
    }

    /// The next payload; panics at the wait deadline.
    pub async fn next(&mut self) -> String {
        within("a notification", self.rx.recv())
            .await
            .expect("the listener is running")
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs headless Chromium (Debian's `chromium`, or `CHROMIUM`) with `args`
/// and returns what it printed; fails the test if it fails. Flags as for a
/// closed network: no background traffic, no sandbox (we may be root).
pub async fn chromium(args: &[&str]) -> String {
    let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = std::env::temp_dir().join(format!(
        "pgwh-chromium-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let run = tokio::process::Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("{bin} did not finish within a minute"))
        .unwrap_or_else(|e| panic!("cannot run {bin} (install Debian's chromium): {e}"));
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "{bin} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs one of PostgreSQL's client programs (`pg_dump`, `pg_restore`, …)
/// from `PG_BIN` (default: Debian's PostgreSQL 15) and fails the test with
/// its output if it fails.
pub async fn pg_tool(program: &str, args: &[&str]) {
    let bin = std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
    let out = tokio::process::Command::new(std::path::Path::new(&bin).join(program))
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Path of the real `pg-webhook-worker` binary (built by tests/run.sh).
pub fn worker_binary() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("PG_WEBHOOK_WORKER_BIN") {
        return p.into();
    }
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pg-webhook-worker");
    assert!(p.exists(), "{} not found: build it with `cargo build -p pg-webhook-worker` or set PG_WEBHOOK_WORKER_BIN", p.display());
    p
}

/// Runs `f` and fails the test if it takes longer than the wait deadline.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A PostgreSQL cluster of its own that accepts only TLS connections
/// (`ssl = on`, `hostssl` rules only), with a server certificate of `ca`
/// for `localhost` and `127.0.0.1`; stopped when dropped.
pub struct TlsCluster {
    dir: std::path::PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl TlsCluster {
    /// Initialises and starts it (a few seconds).
    pub fn start(ca: &TestCa) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgwh-tls-{}-{port}", std::process::id()));
        let files = dir.join("files");
        std::fs::create_dir_all(&files).expect("cluster directory");
        let (cert, key) = &ca.server_pem;
        std::fs::write(files.join("server.crt"), cert).expect("server.crt");
        std::fs::write(files.join("server.key"), key).expect("server.key");
        std::fs::write(
            files.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            files.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("key permissions");
        chown_to_cluster_owner(&dir);
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.join("pg"))
            .arg(port.to_string())
            .arg("ssl = on")
            .arg(format!(
                "ssl_cert_file = '{}'",
                files.join("server.crt").display()
            ))
            .arg(format!(
                "ssl_key_file = '{}'",
                files.join("server.key").display()
            ))
            .arg(format!(
                "hba_file = '{}'",
                files.join("pg_hba.conf").display()
            ))
            .status()
            .expect("run scripts/cluster.sh");
        assert!(status.success(), "the TLS cluster did not start");
        Self { dir, port }
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
        let _ = std::process::Command::new("bash")
            .arg(&script)
            .arg("stop")
            .arg(self.dir.join("pg"))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of the test's own (trust authentication, loopback),
/// for what must not touch the shared one: an immediate restart. Stopped
/// when dropped.
pub struct OwnCluster {
    dir: std::path::PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl OwnCluster {
    /// Initialises and starts it (a few seconds).
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgwh-own-{}-{port}", std::process::id()));
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .arg(port.to_string())
            .arg("fsync = off")
            .status()
            .expect("run scripts/cluster.sh");
        assert!(status.success(), "the cluster did not start");
        Self { dir, port }
    }

    /// A connection string to `dbname` as postgres, through the cluster's
    /// Unix-domain socket.
    pub fn socket_dsn(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.dir.join("sock").display(),
            self.port
        )
    }

    /// A connection string to `dbname` as postgres.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={dbname}",
            self.port
        )
    }

    /// Stops it as a crash would (`pg_ctl -m immediate`: no checkpoint, every
    /// connection cut) and starts it again (crash recovery).
    pub fn restart_immediately(&self) {
        let data = self.dir.join("data").display().to_string();
        let log = self.dir.join("log").display().to_string();
        run_as_cluster_owner("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
        run_as_cluster_owner(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-w", "-t", "60", "start"],
        );
    }

    /// A physical copy of it, started beside it: `pg_basebackup` (WAL
    /// streamed, fast checkpoint) into a directory of its own, started on
    /// a port of its own, as a base backup restored elsewhere is. The copy
    /// and the original then diverge.
    pub fn base_backup(&self) -> OwnCluster {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("pgwh-own-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("sock")).expect("copy directory");
        chown_to_cluster_owner(&dir);
        let data = dir.join("data").display().to_string();
        run_as_cluster_owner(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                &data,
                "-X",
                "stream",
                "-c",
                "fast",
            ],
        );
        let options = format!("-p {port} -k {}", dir.join("sock").display());
        let log = dir.join("log").display().to_string();
        run_as_cluster_owner(
            "pg_ctl",
            &[
                "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
            ],
        );
        OwnCluster { dir, port }
    }
}

/// Runs one of PostgreSQL 15's server programs as the cluster's owner (the
/// `postgres` OS user when the tests run as root), and fails the test if it fails.
fn run_as_cluster_owner(program: &str, args: &[&str]) {
    let out = command_as_cluster_owner(format!("/usr/lib/postgresql/15/bin/{program}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster.sh");
        let _ = std::process::Command::new("bash")
            .arg(&script)
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
