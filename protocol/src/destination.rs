//! Where a webhook may be sent: URL syntax rules and the address classes that
//! are refused unless private targets are explicitly allowed.
//!
//! Shared by the extension (which checks a URL when it is subscribed, without
//! any DNS lookup: the extension does no network I/O) and the worker (which
//! checks every address a name resolves to, just before connecting, so that a
//! DNS record changed after subscription cannot reach an internal service).
//!
//! Must not: resolve names or do any other I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::Url;

/// Longest URL accepted, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Why a URL or a destination address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// Not a URL at all.
    #[error("not a valid URL: {0}")]
    Malformed(String),
    /// A scheme other than http or https.
    #[error("the scheme must be http or https, not {0:?}")]
    Scheme(String),
    /// Longer than [`MAX_URL_BYTES`].
    #[error("the URL is {0} bytes long; at most {MAX_URL_BYTES} are accepted")]
    TooLong(usize),
    /// `user:password@` in the URL: it would be readable by anyone who can
    /// read the endpoint list.
    #[error("the URL carries credentials (user:password@); pass them as a header instead")]
    Credentials,
    /// A `#fragment`, which is never sent over HTTP and is almost surely a mistake.
    #[error("the URL has a #fragment, which HTTP never sends")]
    Fragment,
    /// The destination is an address of a refused class.
    #[error("the destination {host} is a {class} address")]
    Forbidden {
        /// the host as written, or the resolved address
        host: String,
        /// loopback, private, link-local, …
        class: AddressClass,
    },
}

/// Classes of addresses that are not public destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1, and the name `localhost`.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7.
    Private,
    /// 169.254/16, fe80::/10 (cloud metadata services live here).
    LinkLocal,
    /// 100.64/10, carrier-grade NAT.
    SharedAddressSpace,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// Multicast and broadcast.
    Multicast,
    /// IETF-reserved, benchmarking and documentation ranges.
    Reserved,
}

impl std::fmt::Display for AddressClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::SharedAddressSpace => "shared (carrier-grade NAT)",
            Self::Unspecified => "unspecified",
            Self::Multicast => "multicast or broadcast",
            Self::Reserved => "reserved",
        })
    }
}

/// The class of a non-public address, or `None` for a public one.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::SharedAddressSpace
    } else if a == 0 {
        AddressClass::Unspecified
    } else if ip.is_multicast() || ip.is_broadcast() {
        AddressClass::Multicast
    } else if a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || ip.is_documentation()
    {
        AddressClass::Reserved
    } else {
        return None;
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let seg = ip.segments();
    let o = ip.octets();
    let low_v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // An IPv4 address written as IPv6 reaches the IPv4 host, so it gets the
    // IPv4 verdict: mapped (::ffff:a.b.c.d), the deprecated IPv4-compatible
    // form (::a.b.c.d, which some stacks still route), NAT64 (64:ff9b::/96)
    // and 6to4 (2002:aabb:ccdd::/48 carries a.b.c.d in its prefix).
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return classify_v4(low_v4);
    }
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        return classify_v4(low_v4);
    }
    if seg[0] == 0x2002 {
        return classify_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    Some(if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        AddressClass::Private
    } else if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1 {
        // 64:ff9b:1::/48, NAT64 for local use (RFC 8215): translates to
        // whatever IPv4 network the operator chose, private ones included.
        AddressClass::Private
    } else if (seg[0] & 0xffc0) == 0xfe80 {
        AddressClass::LinkLocal
    } else if (seg[0] & 0xffc0) == 0xfec0 {
        // Site-local (deprecated, RFC 3879), still routed inside some sites.
        AddressClass::Private
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        AddressClass::Reserved
    } else {
        return None;
    })
}

/// Parses and checks a subscription URL: syntax, http(s), a host, no
/// credentials or fragment. With `allow_private == false` it also refuses IP
/// literals of a non-public class and the name `localhost` (names are checked
/// again, after resolution, by the worker).
pub fn check_url(raw: &str, allow_private: bool) -> Result<Url, DestinationError> {
    if raw.len() > MAX_URL_BYTES {
        return Err(DestinationError::TooLong(raw.len()));
    }
    let url = Url::parse(raw.trim()).map_err(|e| DestinationError::Malformed(e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(DestinationError::Scheme(url.scheme().to_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DestinationError::Credentials);
    }
    if url.fragment().is_some() {
        return Err(DestinationError::Fragment);
    }
    if !allow_private {
        check_host(&url)?;
    }
    Ok(url)
}

/// Refuses a URL whose host is a non-public IP literal or a `localhost` name.
pub fn check_host(url: &Url) -> Result<(), DestinationError> {
    match url.host_str() {
        None => Err(DestinationError::Malformed("the URL has no host".into())),
        Some(host) => check_host_name(host),
    }
}

/// [`check_host`] for a host as written in a URL: a name, an IPv4 address or
/// a bracketed IPv6 address (`[::1]`).
pub fn check_host_name(host: &str) -> Result<(), DestinationError> {
    let forbidden = |class| DestinationError::Forbidden {
        host: host.to_owned(),
        class,
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return classify(ip).map_or(Ok(()), |c| Err(forbidden(c)));
    }
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        Err(forbidden(AddressClass::Loopback))
    } else {
        Ok(())
    }
}

/// What people who may not see the endpoint's secrets see of its URL: the
/// scheme, host and port, with `/…` in place of anything after them. A
/// webhook URL's path and query often are the credential (Slack's
/// `/services/T…/B…/X…`, a `?token=`), so they are shown only to those who
/// manage endpoints. (Credentials and fragments are refused at
/// subscription, see [`check_url`].)
pub fn redacted(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let rest = if url.path() == "/" && url.query().is_none() {
        "/"
    } else {
        "/…"
    };
    format!("{}://{host}{port}{rest}", url.scheme())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<AddressClass> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn classifies_addresses() {
        assert_eq!(class("127.0.0.1"), Some(AddressClass::Loopback));
        assert_eq!(class("10.1.2.3"), Some(AddressClass::Private));
        assert_eq!(class("172.31.255.255"), Some(AddressClass::Private));
        assert_eq!(class("192.168.0.1"), Some(AddressClass::Private));
        assert_eq!(class("169.254.169.254"), Some(AddressClass::LinkLocal));
        assert_eq!(class("100.64.0.1"), Some(AddressClass::SharedAddressSpace));
        assert_eq!(class("0.0.0.0"), Some(AddressClass::Unspecified));
        assert_eq!(class("255.255.255.255"), Some(AddressClass::Multicast));
        assert_eq!(class("::1"), Some(AddressClass::Loopback));
        assert_eq!(class("::ffff:127.0.0.1"), Some(AddressClass::Loopback));
        assert_eq!(class("64:ff9b::a9fe:a9fe"), Some(AddressClass::LinkLocal));
        assert_eq!(class("fd00::1"), Some(AddressClass::Private));
        assert_eq!(class("fe80::1"), Some(AddressClass::LinkLocal));
        assert_eq!(
            class("::7f00:1"),
            Some(AddressClass::Loopback),
            "IPv4-compatible 127.0.0.1"
        );
        assert_eq!(
            class("::a9fe:a9fe"),
            Some(AddressClass::LinkLocal),
            "IPv4-compatible 169.254.169.254"
        );
        assert_eq!(class("fec0::1"), Some(AddressClass::Private));
        assert_eq!(class("64:ff9b:1::a00:1"), Some(AddressClass::Private));
        assert_eq!(
            class("2002:a00:1::1"),
            Some(AddressClass::Private),
            "6to4 of 10.0.0.1"
        );
        assert_eq!(
            class("2002:7f00:1::"),
            Some(AddressClass::Loopback),
            "6to4 of 127.0.0.1"
        );
        assert_eq!(class("2002:5db8:d822::1"), None, "6to4 of a public address");
        assert_eq!(class("::5db8:d822"), None, "IPv4-compatible public address");
        assert_eq!(class("93.184.216.34"), None);
        assert_eq!(class("172.32.0.1"), None);
        assert_eq!(class("2606:4700::1111"), None);
    }

    #[test]
    fn checks_urls() {
        assert!(check_url("https://example.com/hook?x=1", false).is_ok());
        assert!(matches!(
            check_url("ftp://example.com", false),
            Err(DestinationError::Scheme(_))
        ));
        assert!(matches!(
            check_url("not a url", false),
            Err(DestinationError::Malformed(_))
        ));
        assert!(matches!(
            check_url("https://u:p@example.com", false),
            Err(DestinationError::Credentials)
        ));
        assert!(matches!(
            check_url("https://example.com/#x", false),
            Err(DestinationError::Fragment)
        ));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(matches!(
            check_url(&long, false),
            Err(DestinationError::TooLong(_))
        ));
        for private in [
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://localhost/",
            "http://api.localhost./x",
            "http://169.254.169.254/",
        ] {
            assert!(
                matches!(
                    check_url(private, false),
                    Err(DestinationError::Forbidden { .. })
                ),
                "{private} should be refused"
            );
            assert!(
                check_url(private, true).is_ok(),
                "{private} should be allowed"
            );
        }
    }

    #[test]
    fn redacted_urls_keep_the_origin_only() {
        let r = |u: &str| redacted(&Url::parse(u).unwrap());
        assert_eq!(
            r("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(r("https://example.com/?token=abc"), "https://example.com/…");
        assert_eq!(r("http://example.com:8080/"), "http://example.com:8080/");
        assert_eq!(r("https://example.com"), "https://example.com/");
        assert_eq!(r("http://[::1]:9/x"), "http://[::1]:9/…");
    }
}
