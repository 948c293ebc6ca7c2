//! The demo's webhook receiver: listens on 127.0.0.1:PORT, verifies each
//! request's Standard Webhooks signature with the secret in DEMO_SECRET, and
//! prints one line per request. Answers 200, or 401 when the signature fails.
//!
//! Usage: DEMO_SECRET=whsec_… demo-receiver PORT

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use pg_webhook_protocol::{verify, Secret};

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: demo-receiver PORT");
    let secret = Secret::parse(
        &std::env::var("DEMO_SECRET").expect("DEMO_SECRET must hold the whsec_ secret"),
    )
    .expect("DEMO_SECRET is a valid whsec_ secret");
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let secret = secret.clone();
        async move {
            let get = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let (id, ts, sig) = (
                get("webhook-id"),
                get("webhook-timestamp"),
                get("webhook-signature"),
            );
            let ok = ts
                .parse::<i64>()
                .is_ok_and(|ts| verify(&secret, &id, ts, &body, &sig));
            println!(
                "received webhook-id={id} signature={} body={}",
                if ok { "verified" } else { "INVALID" },
                String::from_utf8_lossy(&body)
            );
            if ok {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            }
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    axum::serve(listener, app).await.expect("serve");
}
