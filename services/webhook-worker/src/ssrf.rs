//! SSRF defence: which webhook targets the worker may connect to.
//!
//! Only `https://` URLs whose every resolved address is public are allowed. Resolution happens
//! here (a reqwest DNS resolver), and reqwest connects only to the addresses this resolver
//! returned, so no second lookup can swap in a private address after the check. Literal IP hosts
//! never reach a resolver and are checked before the request is built.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a target was refused. Carries no secret (URLs of merchants are not secret).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TargetRefused {
    #[error("webhook URL `{0}` is not a valid absolute URL")]
    InvalidUrl(String),
    #[error("webhook URL scheme `{0}` is refused: only https is allowed")]
    Scheme(String),
    #[error("webhook URL has no host")]
    NoHost,
    #[error("webhook target address {0} is not public ({1})")]
    NonPublicAddress(IpAddr, &'static str),
    #[error("webhook host `{0}` resolved to no address")]
    NoAddress(String),
}

/// Whether the worker enforces the guard. `Insecure` exists for the sandbox and tests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetPolicy {
    PublicHttpsOnly,
    Insecure,
}

/// The reason an address is not public, or `None` when it is.
pub fn non_public_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = match (a, b, c) {
        (0, _, _) => "this-network / unspecified",
        (10, _, _) => "private",
        (100, 64..=127, _) => "carrier-grade NAT",
        (127, _, _) => "loopback",
        (169, 254, _) => "link-local (includes cloud metadata)",
        (172, 16..=31, _) => "private",
        (192, 0, 0) => "IETF protocol assignments",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 88, 99) => "6to4 relay anycast",
        (192, 168, _) => "private",
        (198, 18..=19, _) => "benchmarking",
        (224..=239, _, _) => "multicast",
        (240..=255, _, _) => "reserved / broadcast",
        _ => return None,
    };
    Some(reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    let segments = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let reason = match segments[0] {
        0x0000 if segments[..6] == [0; 6] => "IPv4-compatible (deprecated)",
        0x0064 if segments[1] == 0xff9b => "NAT64",
        0x0100 if segments[1..4] == [0; 3] => "discard-only",
        0x2001 if segments[1] < 0x0200 => {
            "IETF protocol assignments (Teredo, ORCHID, benchmarking)"
        }
        0x2001 if segments[1] == 0x0db8 => "documentation",
        0x2002 => "6to4",
        0x3fff if segments[1] < 0x1000 => "documentation",
        s if s & 0xfe00 == 0xfc00 => "unique-local",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        s if s & 0xffc0 == 0xfec0 => "site-local (deprecated)",
        s if s & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    };
    Some(reason)
}

/// Checks a URL before any request: scheme, host presence, and literal IP hosts.
pub fn check_url(raw: &str, policy: TargetPolicy) -> Result<reqwest::Url, TargetRefused> {
    let url = reqwest::Url::parse(raw).map_err(|_| TargetRefused::InvalidUrl(raw.to_owned()))?;
    match (url.scheme(), policy) {
        ("https", _) | ("http", TargetPolicy::Insecure) => {}
        (other, _) => return Err(TargetRefused::Scheme(other.to_owned())),
    }
    let host = url.host_str().ok_or(TargetRefused::NoHost)?;
    if policy == TargetPolicy::PublicHttpsOnly {
        // IPv6 literals keep their brackets in `host_str`.
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>()
            && let Some(reason) = non_public_reason(ip)
        {
            return Err(TargetRefused::NonPublicAddress(ip, reason));
        }
    }
    Ok(url)
}

/// Keeps only resolved addresses the policy allows; refuses the whole name if any is non-public
/// (a name that mixes public and private answers is a rebinding attempt, not a merchant).
pub fn filter_addresses(
    host: &str,
    addrs: Vec<SocketAddr>,
    policy: TargetPolicy,
) -> Result<Vec<SocketAddr>, TargetRefused> {
    if addrs.is_empty() {
        return Err(TargetRefused::NoAddress(host.to_owned()));
    }
    if policy == TargetPolicy::PublicHttpsOnly {
        for addr in &addrs {
            if let Some(reason) = non_public_reason(addr.ip()) {
                return Err(TargetRefused::NonPublicAddress(addr.ip(), reason));
            }
        }
    }
    Ok(addrs)
}

/// A reqwest DNS resolver that resolves with the system resolver and applies [`filter_addresses`].
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub policy: TargetPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest substitutes the URL's port.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed = filter_addresses(&host, addrs, policy)?;
            let iter: Addrs = Box::new(allowed.into_iter());
            Ok(iter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str) -> bool {
        non_public_reason(ip.parse().unwrap()).is_some()
    }

    #[test]
    fn non_public_v4_ranges_are_refused() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn non_public_v6_ranges_are_refused() {
        for ip in [
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
            "2002:7f00:1::1",
            "100::1",
        ] {
            assert!(refused(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
        ] {
            assert!(!refused(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let strict = TargetPolicy::PublicHttpsOnly;
        assert!(
            matches!(check_url("http://example.com/h", strict), Err(TargetRefused::Scheme(s)) if s == "http")
        );
        assert!(matches!(
            check_url("ftp://example.com/h", TargetPolicy::Insecure),
            Err(TargetRefused::Scheme(_))
        ));
        assert!(matches!(
            check_url("https://127.0.0.1/h", strict),
            Err(TargetRefused::NonPublicAddress(..))
        ));
        assert!(matches!(
            check_url("https://[::1]:8443/h", strict),
            Err(TargetRefused::NonPublicAddress(..))
        ));
        assert!(matches!(
            check_url("https://169.254.169.254/latest/meta-data", strict),
            Err(TargetRefused::NonPublicAddress(
                _,
                "link-local (includes cloud metadata)"
            ))
        ));
        assert!(matches!(
            check_url("not a url", strict),
            Err(TargetRefused::InvalidUrl(_))
        ));
        assert!(check_url("https://merchant.example/hook", strict).is_ok());
        assert!(check_url("http://127.0.0.1:8080/hook", TargetPolicy::Insecure).is_ok());
    }

    #[test]
    fn a_name_with_any_private_answer_is_refused() {
        let public: SocketAddr = "8.8.8.8:0".parse().unwrap();
        let private: SocketAddr = "10.0.0.1:0".parse().unwrap();
        let strict = TargetPolicy::PublicHttpsOnly;
        assert!(filter_addresses("h", vec![public, private], strict).is_err());
        assert_eq!(
            filter_addresses("h", vec![public], strict).unwrap(),
            vec![public]
        );
        assert!(matches!(
            filter_addresses("h", vec![], strict),
            Err(TargetRefused::NoAddress(_))
        ));
        assert_eq!(
            filter_addresses("h", vec![private], TargetPolicy::Insecure).unwrap(),
            vec![private]
        );
    }

    #[tokio::test]
    async fn localhost_is_refused_after_resolution() {
        let resolver = GuardedResolver {
            policy: TargetPolicy::PublicHttpsOnly,
        };
        let result = resolver.resolve("localhost".parse().unwrap()).await;
        let Err(err) = result else {
            panic!("localhost must be refused")
        };
        assert!(err.to_string().contains("not public"), "{err}");
    }
}
