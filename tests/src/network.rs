//! Network stand-ins: a blackhole that accepts and never answers, and a
//! forward proxy (CONNECT) that records what went through it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

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
