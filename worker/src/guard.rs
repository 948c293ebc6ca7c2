//! The destination guard: a DNS resolver that drops every non-public address
//! (loopback, private, link-local, …) from a lookup's answer, so that a name
//! which resolves to an internal service — at subscription or any time later
//! (DNS rebinding) — is refused just before connecting.
//!
//! Must not: be installed when private targets are allowed.

use pg_webhook_protocol::destination::{classify, AddressClass};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::SocketAddr;

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

/// Resolver that keeps public addresses only.
#[derive(Debug, Default)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
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
                    return Err(Box::new(Blocked { host, class, addrs })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}
