//! The client's real address behind load balancers: taken from `X-Forwarded-For` or
//! `Forwarded` (RFC 7239), but only as far as the hops that appended it are trusted proxies.

use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// Which header the trusted proxies append the client's address to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, ...` (nginx, HAProxy, cloud load balancers,
    /// ingress-nginx).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239; Envoy, Traefik optionally).
    Forwarded,
}

/// Where client addresses come from.
#[derive(Debug, Clone, Default)]
pub struct ClientAddrs {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
}

impl ClientAddrs {
    /// Peers in `trusted` are proxies whose `header` is believed.
    pub fn new(trusted: Vec<IpNet>, header: ForwardedHeader) -> Self {
        Self { trusted, header }
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request from `peer` with `headers`.
    ///
    /// Starting from the connection's peer, while the current hop is a trusted proxy, the
    /// address that proxy appended (the rightmost one not yet used) becomes the current hop.
    /// The first untrusted hop is the client. An entry that is not an address (`unknown`, an
    /// obfuscated name) stops the walk at the proxy that wrote it. Without trusted proxies,
    /// or from an untrusted peer, headers are ignored: a client cannot forge its address.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut current = canonical(peer.ip());
        if self.trusted.is_empty() || !self.is_trusted(current) {
            return current;
        }
        let chain: Vec<&str> = match self.header {
            ForwardedHeader::XForwardedFor => headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .collect(),
            ForwardedHeader::Forwarded => headers
                .get_all("forwarded")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|element| {
                    element
                        .split(';')
                        .find_map(|pair| {
                            let (k, v) = pair.trim().split_once('=')?;
                            k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
                        })
                        // An element without `for=` says nothing about that hop: stop there.
                        .unwrap_or("")
                })
                .collect(),
        };
        for entry in chain.iter().rev() {
            if !self.is_trusted(current) {
                break;
            }
            match parse_node(entry) {
                Some(ip) => current = ip,
                None => break,
            }
        }
        current
    }
}

/// An IPv4-mapped IPv6 address as IPv4, so that `10.0.0.0/8` matches `::ffff:10.1.2.3`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// An address of a forwarding chain: `1.2.3.4`, `1.2.3.4:5`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:5`, optionally in double quotes (RFC 7239 `for=`).
fn parse_node(entry: &str) -> Option<IpAddr> {
    let e = entry.trim().trim_matches('"');
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = e.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let xff = headers("x-forwarded-for", &["203.0.113.7"]);
        let none = ClientAddrs::default();
        assert_eq!(none.client(peer, &xff), ip("10.0.0.5"));
        let other = ClientAddrs::new(nets(&["192.168.0.0/16"]), ForwardedHeader::XForwardedFor);
        assert_eq!(other.client(peer, &xff), ip("10.0.0.5"));
        let lb = ClientAddrs::new(nets(&["10.0.0.0/8"]), ForwardedHeader::XForwardedFor);
        assert_eq!(lb.client(peer, &xff), ip("203.0.113.7"));
        // No header from a trusted proxy: the proxy itself (a health check).
        assert_eq!(lb.client(peer, &HeaderMap::new()), ip("10.0.0.5"));
    }

    #[test]
    fn the_walk_stops_at_the_first_untrusted_hop_so_a_forged_prefix_is_ignored() {
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let lb = ClientAddrs::new(
            nets(&["10.0.0.0/8", "fd00::/8"]),
            ForwardedHeader::XForwardedFor,
        );
        // The client sent "6.6.6.6" itself; the edge proxy appended its real address, the inner
        // proxy appended the edge proxy's.
        let h = headers("x-forwarded-for", &["6.6.6.6, 198.51.100.9", "10.1.1.1"]);
        assert_eq!(lb.client(peer, &h), ip("198.51.100.9"));
        let h = headers("x-forwarded-for", &["garbage, 10.2.2.2"]);
        assert_eq!(lb.client(peer, &h), ip("10.2.2.2"));
        let h = headers("x-forwarded-for", &["[2001:db8::7]:443"]);
        assert_eq!(lb.client(peer, &h), ip("2001:db8::7"));
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:1".parse().unwrap();
        let h = headers("x-forwarded-for", &["203.0.113.1"]);
        assert_eq!(lb.client(mapped, &h), ip("203.0.113.1"));
        // The Forwarded header is not read when the proxies append X-Forwarded-For.
        let h = headers("forwarded", &["for=203.0.113.9"]);
        assert_eq!(lb.client(peer, &h), ip("10.0.0.5"));
    }

    #[test]
    fn rfc_7239_forwarded_elements() {
        let peer: SocketAddr = "[fd00::1]:80".parse().unwrap();
        let lb = ClientAddrs::new(
            nets(&["fd00::/8", "10.0.0.0/8"]),
            ForwardedHeader::Forwarded,
        );
        let h = headers(
            "forwarded",
            &[
                "for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.9.9.9",
                "for=10.8.8.8;by=fd00::1",
            ],
        );
        assert_eq!(lb.client(peer, &h), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["for=unknown, for=10.3.3.3"]);
        assert_eq!(lb.client(peer, &h), ip("10.3.3.3"));
        let h = headers("forwarded", &["for=_hidden"]);
        assert_eq!(lb.client(peer, &h), ip("fd00::1"));
        let h = headers("forwarded", &["proto=https"]);
        assert_eq!(lb.client(peer, &h), ip("fd00::1"));
    }
}
