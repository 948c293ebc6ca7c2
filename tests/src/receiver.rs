//! An HTTP receiver on 127.0.0.1 with a scriptable answer (status codes,
//! delays, TLS), recording every request.

use crate::{TestCa, WAIT};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Version};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

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
    /// Answer 500 to every request whose body holds this (a poison event).
    refuse: Option<String>,
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

    /// Answers 500 to every request whose body contains `needle` (None:
    /// no longer), whatever else it is told.
    pub fn refuse_bodies_with(&self, needle: Option<&str>) {
        self.shared.state.lock().unwrap().refuse = needle.map(str::to_owned);
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
        let refused = s
            .refuse
            .as_deref()
            .is_some_and(|needle| received.body.contains(needle));
        s.requests.push(received);
        let answer = if s.echo {
            echoed
        } else {
            "receiver says hi".to_owned()
        };
        let n = s.requests.len();
        match s.chaos {
            _ if refused => (500, s.delay, answer),
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
