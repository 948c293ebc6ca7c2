//! Sending one delivery: build the signed request, POST it, read a bounded
//! excerpt of the answer, and classify what happened.
//!
//! Must not: touch the database or decide retries (it only says whether a
//! failure is retryable).

use crate::claim::Claim;
use crate::config::Config;
use crate::http::guard::{Blocked, GuardedResolver};
use crate::http::redact::Secrets;
use crate::retry::Verdict;
use crate::text::{error_chain, truncate_at_char_boundary};
use pg_webhook_protocol::{destination, envelope, signature_header};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("pg-webhook-worker/", env!("CARGO_PKG_VERSION"));
/// Connection attempts give up after this long (the request timeout still
/// bounds the whole exchange).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Largest response head an HTTP/2 receiver may send (the header list,
/// decoded): h2's default would let each answer hold 16 MiB.
pub const HTTP2_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// The most memory one in-flight request may hold for a response head that
/// is slow to finish, whatever the receiver does: HTTP/1's read buffer,
/// which hyper caps at 8 KiB + 100 × 4 KiB and which reqwest does not let
/// us lower (an answer whose head does not fit is refused), or HTTP/2's
/// header list above.
pub const RESPONSE_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// What one in-flight request may hold besides its payload, whatever the
/// receiver does: [`RESPONSE_HEAD_BYTES`] and the connection's own buffers
/// (the request being written, TLS records of up to 16 KiB each way, the
/// task). The worker's memory bound counts this per slot (README "Memory");
/// the benchmark's `heads` scenario measures it (425 KiB a slot with 500
/// slots stalled on plain HTTP).
pub const SLOT_BYTES: usize = RESPONSE_HEAD_BYTES + 48 * 1024;

/// Why an attempt got no usable answer, or got a failing one.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No complete answer within the endpoint's timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Could not connect (refused, unreachable, DNS failure, TLS failure).
    #[error("connection failed: {0}")]
    Connect(String),
    /// The destination is of a refused class.
    #[error("destination refused: {0}")]
    Blocked(String),
    /// The request failed after connecting (reset, protocol error).
    #[error("request failed: {0}")]
    Request(String),
    /// The receiver answered with a non-2xx status.
    #[error("HTTP {status}")]
    Status {
        /// the status code
        status: u16,
        /// parsed `Retry-After`, if any
        retry_after: Option<Duration>,
    },
    /// A stored secret could not be parsed, so nothing was sent.
    #[error("the endpoint's signing secret is unreadable; rotate it")]
    NoSecret,
    /// Every attempt the retry policy allows was claimed and none was
    /// recorded (a worker stopped while sending each time), so this one is
    /// not sent: it would loop forever if it crashes the worker.
    #[error("not sent: attempt {attempt} is beyond the retry policy's {max}; the earlier ones were claimed and never recorded (did a worker stop while sending?)")]
    Exhausted {
        /// this attempt's number
        attempt: u32,
        /// the policy's max_attempts
        max: u32,
    },
}

impl SendError {
    /// Whether trying again may succeed. 410 Gone, a refused destination and
    /// an unreadable secret are final; everything else (timeouts, 5xx, 4xx,
    /// 3xx) is retried, as Stripe and Svix do.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Self::Blocked(_)
                | Self::NoSecret
                | Self::Exhausted { .. }
                | Self::Status { status: 410, .. }
        )
    }
}

/// What one attempt produced.
#[derive(Debug)]
pub struct Outcome {
    /// When the request started (worker clock).
    pub started_at: SystemTime,
    /// How long until the answer was read (or the failure).
    pub duration: Duration,
    /// The status code when a response arrived.
    pub status: Option<u16>,
    /// The first bytes of the response body (lossy UTF-8, NULs dropped).
    pub excerpt: Option<String>,
    /// `Ok` for 2xx.
    pub result: Result<(), SendError>,
}

impl Outcome {
    /// The retry policy's view of this outcome.
    pub fn verdict(&self) -> Verdict {
        match &self.result {
            Ok(()) => Verdict::Delivered,
            Err(e) if !e.is_retryable() => Verdict::Permanent,
            Err(SendError::Status { retry_after, .. }) => Verdict::Retryable {
                retry_after: *retry_after,
            },
            Err(_) => Verdict::Retryable { retry_after: None },
        }
    }
}

/// Sends deliveries over one shared reqwest client: a keep-alive pool per
/// destination, HTTP/2 when a TLS server offers it (ALPN), HTTP/1.1
/// otherwise, through the egress proxy when one is configured.
///
/// reqwest rather than hyper's lower-level client: what it adds over hyper
/// (its request type, proxying, redirect and timeout policies) is what a
/// webhook sender needs, above all an egress proxy for a stable source IP.
/// Measured before and after in BENCHMARKS.md.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    client: reqwest::Client,
    excerpt_bytes: usize,
    allow_private: bool,
    /// The egress proxy's host (lowercase, no trailing dot), if any.
    proxy_host: Option<String>,
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS set-up failed.
    #[error("could not set up TLS for the HTTP client")]
    Tls(#[source] rustls::Error),
    /// reqwest refused the configuration (for example the proxy URL).
    #[error("could not build the HTTP client")]
    Build(#[source] reqwest::Error),
}

impl Dispatcher {
    /// Builds the client: redirects are never followed (a 3xx is a failure),
    /// TLS with the Mozilla root certificates (plus `--ca-file`'s), the
    /// guarded resolver, and the proxy of `--proxy` (else none: reqwest's
    /// own reading of proxy variables is off, so that one is used only when
    /// configured, and shows in the worker's configuration log).
    pub fn new(config: &Config) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in &config.extra_roots.0 {
            roots.add(cert.clone()).map_err(ClientError::Tls)?;
        }
        // The ring provider, named explicitly: rustls refuses to guess when
        // a build pulls in more than one.
        let mut tls = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let proxy_host = config
            .proxy
            .as_ref()
            .and_then(|p| p.host_str())
            .map(normal_host);
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver::new(
                config.allow_private_targets,
                proxy_host.clone(),
            )))
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .http2_max_header_list_size(HTTP2_MAX_HEADER_LIST_BYTES)
            .user_agent(USER_AGENT)
            .no_proxy();
        if let Some(proxy) = &config.proxy {
            let proxy = reqwest::Proxy::all(proxy.as_str())
                .map_err(ClientError::Build)?
                .no_proxy(
                    config
                        .no_proxy
                        .as_deref()
                        .and_then(reqwest::NoProxy::from_string),
                );
            builder = builder.proxy(proxy);
        }
        Ok(Self {
            client: builder.build().map_err(ClientError::Build)?,
            excerpt_bytes: config.response_excerpt_bytes,
            allow_private: config.allow_private_targets,
            proxy_host,
        })
    }

    /// Sends one attempt of `claim`, signed for `timestamp` (unix seconds).
    pub async fn send(&self, claim: &Claim, timestamp: i64) -> Outcome {
        let started_at = SystemTime::now();
        let clock = Instant::now();
        let (status, excerpt, result) = match self.exchange(claim, timestamp).await {
            Ok((status, excerpt, retry_after)) => {
                let result = if (200..300).contains(&status) {
                    Ok(())
                } else {
                    Err(SendError::Status {
                        status,
                        retry_after,
                    })
                };
                (Some(status), Some(excerpt), result)
            }
            Err(e) => (None, None, Err(e)),
        };
        Outcome {
            started_at,
            duration: clock.elapsed(),
            status,
            excerpt,
            result,
        }
    }

    async fn exchange(
        &self,
        claim: &Claim,
        timestamp: i64,
    ) -> Result<(u16, String, Option<Duration>), SendError> {
        let target = &*claim.target;
        if claim.attempt > target.policy.max_attempts {
            return Err(SendError::Exhausted {
                attempt: claim.attempt,
                max: target.policy.max_attempts,
            });
        }
        if target.secrets.is_empty() {
            return Err(SendError::NoSecret);
        }
        // Parsed once per claimed batch (see claim::Target).
        let url = target
            .parsed_url
            .clone()
            .ok_or_else(|| SendError::Request("invalid URL".to_owned()))?;
        if !self.allow_private {
            // IP literals never reach the resolver, and behind a proxy no
            // name does: refuse what can be refused by looking at the URL.
            let host = url.host_str().unwrap_or_default();
            destination::check_host_name(host).map_err(|e| SendError::Blocked(e.to_string()))?;
            // The proxy's host resolves unfiltered (it usually is an
            // internal service, see guard.rs): a request that NO_PROXY sends
            // past the proxy to that same host would inherit the trust.
            if self.proxy_host.as_deref() == Some(normal_host(host).as_str()) {
                return Err(SendError::Blocked(
                    "the egress proxy's own host is not a destination".to_owned(),
                ));
            }
        }
        let body = envelope::body(&claim.event_type, &claim.event_time, &claim.payload);
        let msg_id = &claim.message_id;
        let signature = signature_header(&target.secrets, msg_id, timestamp, body.as_bytes());

        let mut headers = HeaderMap::with_capacity(target.headers.len() + 4);
        for (name, value) in &target.headers {
            // Validated by SQL at subscription; anything unparsable is skipped
            // rather than failing the delivery.
            if let (Ok(n), Ok(v)) = (
                HeaderName::try_from(name.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) {
                headers.insert(n, v);
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(envelope::HEADER_ID, header_value(msg_id));
        headers.insert(
            envelope::HEADER_TIMESTAMP,
            header_value(&timestamp.to_string()),
        );
        headers.insert(envelope::HEADER_SIGNATURE, header_value(&signature));
        let signature = &signature;

        let exchange = async {
            let mut response = self
                .client
                .post(url)
                .headers(headers)
                .body(body)
                .send()
                .await
                .map_err(classify)?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let mut excerpt = Vec::new();
            while excerpt.len() < self.excerpt_bytes {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = self.excerpt_bytes - excerpt.len();
                        excerpt.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    // The status is what counts; a body cut short is still an answer.
                    Ok(None) | Err(_) => break,
                }
            }
            let mut excerpt = clean_text(&excerpt, self.excerpt_bytes);
            if !excerpt.is_empty() {
                // Whatever of the request the receiver echoed stays out of
                // the log readers read (redact.rs).
                let secrets =
                    Secrets::of_request(target.headers.iter().map(|(_, v)| v.as_str()), signature);
                excerpt = secrets.apply(excerpt, self.excerpt_bytes);
            }
            Ok::<_, SendError>((status, excerpt, retry_after))
        };
        // One deadline for the whole exchange: connect, send, headers, excerpt.
        match tokio::time::timeout(target.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(SendError::Timeout(target.timeout)),
        }
    }
}

/// A host name as compared with the proxy's: lowercase, no trailing dot.
fn normal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("ids, timestamps and base64 signatures are visible ASCII")
}

/// `Retry-After` as delta-seconds (the HTTP-date form is rare for webhooks
/// and is ignored: the backoff schedule applies).
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Text safe to store in PostgreSQL: lossy UTF-8 without NUL bytes.
pub(crate) fn clean_text(bytes: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(bytes).replace('\0', "");
    // The repair can grow it (each invalid byte becomes a 3-byte U+FFFD):
    // cut back to the bound, on a character boundary, so that the row
    // always fits webhook.attempts' limit.
    truncate_at_char_boundary(&mut text, max);
    text
}

/// Maps a client failure to our classes, with a message that has no URL
/// (the URL is on the endpoint row already, and may carry tokens).
fn classify(e: reqwest::Error) -> SendError {
    let e = e.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(blocked) = s.downcast_ref::<Blocked>() {
            return SendError::Blocked(blocked.to_string());
        }
        source = s.source();
    }
    let chain = error_chain(&e);
    if e.is_connect() {
        SendError::Connect(chain)
    } else {
        SendError::Request(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classes() {
        assert!(SendError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(SendError::Status {
            status: 500,
            retry_after: None
        }
        .is_retryable());
        assert!(SendError::Status {
            status: 301,
            retry_after: None
        }
        .is_retryable());
        assert!(!SendError::Status {
            status: 410,
            retry_after: None
        }
        .is_retryable());
        assert!(!SendError::Blocked("x".into()).is_retryable());
    }

    #[test]
    fn retry_after_seconds_only() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn excerpt_is_storable_text() {
        assert_eq!(clean_text(b"a\0b\xffc", 100), "ab\u{fffd}c");
        // Four invalid bytes would become 12: cut to 10 on a boundary (9).
        let cut = clean_text(b"\xff\xfe\xfd\xfc", 10);
        assert_eq!(cut, "\u{fffd}\u{fffd}\u{fffd}");
        assert!(cut.len() <= 10);
    }
}
