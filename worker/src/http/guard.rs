//! The destination guard: the HTTP client's DNS resolver, which drops every
//! non-public address (loopback, private, link-local, …) from a lookup's
//! answer unless private targets are allowed, so that a name which resolves
//! to an internal service — at subscription or any time later (DNS
//! rebinding) — is refused just before connecting. IP literals never reach a
//! resolver; `dispatch.rs` checks them.
//!
//! Behind an egress proxy (`--proxy`) the proxy resolves the destination's
//! name, not this resolver, so only literals and `localhost` names can be
//! refused here (dispatch.rs does it before sending); the proxy itself must
//! refuse internal destinations (Smokescreen does by default). The proxy's
//! own name is the one name this resolver lets through to any address: it
//! usually is an internal service. So that a request sent past the proxy
//! (NO_PROXY) cannot borrow that trust, dispatch.rs refuses the proxy's
//! host as a destination.

use pg_webhook_protocol::destination::{classify, AddressClass};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;

/// Every address of `host` was of a refused class. Its message (recorded
/// in `webhook.attempts.error`, which readers read) names the class but not
/// the addresses: what an internal name resolves to is the operators'
/// business, and goes to the worker's log instead.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to {class} addresses; set PG_WEBHOOK_ALLOW_PRIVATE_TARGETS=true to allow them")]
pub struct Blocked {
    /// the name looked up
    pub host: String,
    /// class of the first refused address
    pub class: AddressClass,
}

/// The system resolver (getaddrinfo, on tokio's blocking pool), filtered.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow_private: bool,
    /// The proxy's host name, resolved without the filter.
    proxy_host: Option<String>,
}

impl GuardedResolver {
    /// A resolver that keeps public addresses only, or all of them; the
    /// proxy's host, if any, always resolves.
    pub fn new(allow_private: bool, proxy_host: Option<String>) -> Self {
        Self {
            allow_private,
            proxy_host: proxy_host.map(|h| h.to_ascii_lowercase()),
        }
    }

    /// Looks `host` up and keeps what may be connected to.
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, BoxError> {
        let all: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        let trusted = self.allow_private
            || self
                .proxy_host
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(host));
        if trusted {
            return Ok(all);
        }
        let (public, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
            all.into_iter().partition(|a| classify(a.ip()).is_none());
        if public.is_empty() {
            if let Some(first) = refused.first() {
                let class = classify(first.ip()).expect("partitioned as non-public");
                let addrs = refused
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                tracing::warn!(host, %class, addresses = %addrs, "destination refused: it resolves only to non-public addresses");
                return Err(Box::new(Blocked {
                    host: host.to_owned(),
                    class,
                }));
            }
        }
        Ok(public)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.lookup(name.as_str()).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_names_that_resolve_to_loopback() {
        let err = GuardedResolver::new(false, None)
            .lookup("localhost")
            .await
            .unwrap_err();
        let blocked = err.downcast_ref::<Blocked>().expect("a Blocked error");
        assert_eq!(blocked.class, AddressClass::Loopback);
        assert!(
            !blocked.to_string().contains("127.0.0.1"),
            "readers see the class, not the address: {blocked}"
        );
        let allowed = GuardedResolver::new(true, None)
            .lookup("localhost")
            .await
            .unwrap();
        assert!(allowed.iter().all(|a| a.ip().is_loopback()) && !allowed.is_empty());
    }

    #[tokio::test]
    async fn the_proxy_host_resolves_whatever_its_address() {
        let proxy = GuardedResolver::new(false, Some("LOCALHOST".into()))
            .lookup("localhost")
            .await
            .unwrap();
        assert!(!proxy.is_empty());
    }
}
