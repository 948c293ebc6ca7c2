//! `pg-webhook-worker listen`: a receiver for local development, as `stripe
//! listen` is used. It answers POSTs on 127.0.0.1, verifies each one as a
//! Standard Webhooks receiver must (signature over id, timestamp and raw
//! body; timestamp within a tolerance; a repeated `webhook-id` is a
//! duplicate), and prints what arrived. Subscribe an endpoint at the URL it
//! prints, with the same secret.
//!
//! Must not: touch the database; it is a receiver, not a worker.

use clap::Parser;
use pg_webhook_protocol::{envelope, verify, Secret};
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Remembered webhook-ids.
const SEEN_LIMIT: usize = 10_000;

/// `pg-webhook-worker listen`: print verified deliveries.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pg-webhook-worker listen",
    about = "Receive, verify and print webhook deliveries on 127.0.0.1 (for local development)."
)]
pub struct ListenCli {
    /// The endpoint's signing secret (whsec_…); or WEBHOOK_SECRET.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// Largest accepted difference between webhook-timestamp and this clock, in seconds.
    #[arg(long, default_value_t = 300)]
    pub tolerance_seconds: i64,
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// A required header is absent or not text.
    #[error("missing or unreadable {0} header")]
    MissingHeader(&'static str),
    /// The timestamp is not a number.
    #[error("webhook-timestamp is not a number")]
    BadTimestamp,
    /// The timestamp is too far from now.
    #[error("webhook-timestamp is {0} s away from this clock")]
    Stale(i64),
    /// No signature matches.
    #[error("no signature matches the secret")]
    Signature,
}

/// The verdict on one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Verified and new.
    Accepted,
    /// Verified, but this webhook-id was seen before.
    Duplicate,
}

/// Verification and deduplication, separate from HTTP so that it can be
/// tested alone.
pub struct Checker {
    secret: Secret,
    tolerance: i64,
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Checker {
    /// A checker for `secret`.
    pub fn new(secret: Secret, tolerance_seconds: i64) -> Self {
        Self {
            secret,
            tolerance: tolerance_seconds,
            seen: Mutex::default(),
        }
    }

    /// Checks one request given its three Standard Webhooks headers.
    pub fn check(
        &self,
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<Verdict, Rejection> {
        let id = id.ok_or(Rejection::MissingHeader(envelope::HEADER_ID))?;
        let ts = timestamp.ok_or(Rejection::MissingHeader(envelope::HEADER_TIMESTAMP))?;
        let signature = signature.ok_or(Rejection::MissingHeader(envelope::HEADER_SIGNATURE))?;
        let ts: i64 = ts.trim().parse().map_err(|_| Rejection::BadTimestamp)?;
        if (now - ts).abs() > self.tolerance {
            return Err(Rejection::Stale(now - ts));
        }
        if !verify(&self.secret, id, ts, body, signature) {
            return Err(Rejection::Signature);
        }
        let mut seen = self.seen.lock().expect("no panic while holding the lock");
        let (set, order) = &mut *seen;
        if !set.insert(id.to_owned()) {
            return Ok(Verdict::Duplicate);
        }
        order.push_back(id.to_owned());
        if order.len() > SEEN_LIMIT {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        Ok(Verdict::Accepted)
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs the receiver until Ctrl-C or SIGTERM.
pub async fn run(cli: ListenCli) -> anyhow::Result<()> {
    let secret = Secret::parse(&cli.secret)
        .map_err(|e| anyhow::anyhow!("--secret is not a Standard Webhooks secret: {e}"))?;
    let checker = Arc::new(Checker::new(secret, cli.tolerance_seconds));
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], cli.port))).await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    println!("subscribe it with: select * from webhook_subscribe('http://{addr}/', secret => '<the same secret>');");
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              headers: axum::http::HeaderMap,
              body: axum::body::Bytes| {
            let checker = checker.clone();
            async move {
                use axum::http::StatusCode;
                if method != axum::http::Method::POST {
                    return (StatusCode::METHOD_NOT_ALLOWED, "POST only\n".to_owned());
                }
                let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
                let id = h(envelope::HEADER_ID);
                match checker.check(
                    id,
                    h(envelope::HEADER_TIMESTAMP),
                    h(envelope::HEADER_SIGNATURE),
                    &body,
                    now(),
                ) {
                    Ok(verdict) => {
                        let event: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let kind = event["type"].as_str().unwrap_or("?");
                        match verdict {
                            Verdict::Accepted => {
                                println!("✔ {kind} {}", id.unwrap_or_default());
                                println!(
                                    "{}",
                                    serde_json::to_string_pretty(&event).unwrap_or_default()
                                );
                            }
                            Verdict::Duplicate => {
                                println!("= duplicate {kind} {}", id.unwrap_or_default())
                            }
                        }
                        (StatusCode::OK, "ok\n".to_owned())
                    }
                    Err(e) => {
                        println!("✘ rejected {}: {e}", id.unwrap_or("(no webhook-id)"));
                        (StatusCode::BAD_REQUEST, format!("{e}\n"))
                    }
                }
            }
        },
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler works on Unix");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_rejects_and_deduplicates() {
        let secret = Secret::from_bytes(&[9u8; 24]).unwrap();
        let checker = Checker::new(secret.clone(), 300);
        let body = br#"{"type":"a.b","timestamp":"2026-01-01T00:00:00Z","data":{}}"#;
        let sig = pg_webhook_protocol::sign(&secret, "msg_1", 1000, body);
        let check = |id, ts: &str, sig: &str, body: &[u8], now| {
            checker.check(Some(id), Some(ts), Some(sig), body, now)
        };
        assert_eq!(
            check("msg_1", "1000", &sig, body, 1010).unwrap(),
            Verdict::Accepted
        );
        assert_eq!(
            check("msg_1", "1000", &sig, body, 1010).unwrap(),
            Verdict::Duplicate
        );
        assert!(matches!(
            check("msg_1", "1000", &sig, b"{}", 1010),
            Err(Rejection::Signature)
        ));
        assert!(matches!(
            check("msg_1", "1000", &sig, body, 2000),
            Err(Rejection::Stale(1000))
        ));
        assert!(matches!(
            checker.check(None, Some("1"), Some("v1,x"), body, 1),
            Err(Rejection::MissingHeader(_))
        ));
    }
}
