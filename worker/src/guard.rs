//! The destination guard: the HTTP client's DNS resolver, which drops every
//! non-public address (loopback, private, link-local, …) from a lookup's
//! answer unless private targets are allowed, so that a name which resolves
//! to an internal service — at subscription or any time later (DNS
//! rebinding) — is refused just before connecting. IP literals never reach a
//! resolver; `dispatch.rs` checks them.

use hyper_util::client::legacy::connect::dns::Name;
use pg_webhook_protocol::destination::{classify, AddressClass};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Every address of `host` was of a refused class.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to {class} addresses ({addrs}); set PG_WEBHOOK_ALLOW_PRIVATE_TARGETS=true to allow them")]
pub struct Blocked {
    /// the name looked up
    pub host: String,
    /// class of the first refused address
    pub class: AddressClass,
    /// the refused addresses
    pub addrs: String,
}

/// The system resolver (getaddrinfo, on tokio's blocking pool), filtered.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl GuardedResolver {
    /// A resolver that keeps public addresses only, or all of them.
    pub fn new(allow_private: bool) -> Self {
        Self { allow_private }
    }
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, BoxError>> + Send>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Resolving;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allow_private {
                return Ok(all.into_iter());
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
                    return Err(Box::new(Blocked { host, class, addrs }) as BoxError);
                }
            }
            Ok(public.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use tower_service::Service;

    #[tokio::test]
    async fn refuses_names_that_resolve_to_loopback() {
        let name = Name::from_str("localhost").unwrap();
        let err = GuardedResolver::new(false)
            .call(name.clone())
            .await
            .unwrap_err();
        let blocked = err.downcast_ref::<Blocked>().expect("a Blocked error");
        assert_eq!(blocked.class, AddressClass::Loopback);
        let allowed: Vec<_> = GuardedResolver::new(true)
            .call(name)
            .await
            .unwrap()
            .collect();
        assert!(allowed.iter().all(|a| a.ip().is_loopback()) && !allowed.is_empty());
    }
}
