//! The forms of an announced address (`AnnounceRequest::addrs`, `Neighbour::addrs`).
//!
//! Each entry names one way to reach the peer and, by its form, the peer protocol it speaks:
//!
//! | form | protocol | meaning |
//! |---|---|---|
//! | `ip:port` | v1 (HTTP/2 over TLS over TCP) | the peer server's TCP address |
//! | `local:ip:port` | v2 (QUIC, ALPN `shoal/p2p/2`) | an address of one of the node's own interfaces |
//! | `reflexive:ip:port` | v2 | the node's address as seen from outside its router |
//! | `mapped:ip:port` | v2 | a port mapped on its router (UPnP IGD, NAT-PMP, PCP) or set by hand |
//! | `relay:https://…` | v2 | the relay where the node can always be reached |
//!
//! A v2 node announces `fingerprint` as its endpoint id (the hex ed25519 public key that its
//! QUIC handshake proves); a v1 node, the SHA-256 of its certificate. A node of one version
//! skips neighbours that announce only the other's forms, with a reason in its log: old and
//! new nodes never mix silently. Forms a reader does not know are [`Announced::Unknown`] and
//! skipped, so a later revision can add kinds.

use std::net::SocketAddr;

/// Kinds of a v2 direct candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CandidateKind {
    /// An address of one of the node's own interfaces (a LAN address behind a router, or a
    /// public address on a host with no NAT).
    Local,
    /// The address seen from outside (the router's public address and the NAT's port).
    Reflexive,
    /// A port mapped on the router, or an address set by hand (`--peer-advertise`).
    Mapped,
}

impl CandidateKind {
    /// The word of the `kind:ip:port` form.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateKind::Local => "local",
            CandidateKind::Reflexive => "reflexive",
            CandidateKind::Mapped => "mapped",
        }
    }
}

/// One announced address, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announced<'a> {
    /// Peer protocol v1: a TCP peer server.
    Tcp(SocketAddr),
    /// Peer protocol v2: a UDP candidate.
    Quic(CandidateKind, SocketAddr),
    /// Peer protocol v2: the node's relay URL (not checked beyond its scheme).
    Relay(&'a str),
    /// A form this version does not know (skipped).
    Unknown,
}

impl<'a> Announced<'a> {
    /// Parses one entry. Never fails: what does not parse is [`Announced::Unknown`].
    pub fn parse(s: &'a str) -> Announced<'a> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Announced::Tcp(a);
        }
        let Some((kind, rest)) = s.split_once(':') else {
            return Announced::Unknown;
        };
        let kind = match kind {
            "local" => CandidateKind::Local,
            "reflexive" => CandidateKind::Reflexive,
            "mapped" => CandidateKind::Mapped,
            "relay" if rest.starts_with("https://") => return Announced::Relay(rest),
            _ => return Announced::Unknown,
        };
        match rest.parse::<SocketAddr>() {
            Ok(a) => Announced::Quic(kind, a),
            Err(_) => Announced::Unknown,
        }
    }

    /// The IP address this entry would be dialled at (none for a relay or an unknown form).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Announced::Tcp(a) | Announced::Quic(_, a) => Some(*a),
            _ => None,
        }
    }

    /// The `kind:ip:port` form of a v2 candidate.
    pub fn candidate(kind: CandidateKind, addr: SocketAddr) -> String {
        format!("{}:{addr}", kind.as_str())
    }

    /// The `relay:URL` form.
    pub fn relay(url: &str) -> String {
        format!("relay:{url}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_unknown_ones_are_skipped() {
        let a: SocketAddr = "192.168.1.10:4000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(Announced::parse("192.168.1.10:4000"), Announced::Tcp(a));
        assert_eq!(
            Announced::parse("local:192.168.1.10:4000"),
            Announced::Quic(CandidateKind::Local, a)
        );
        assert_eq!(
            Announced::parse("reflexive:[2001:db8::1]:4000"),
            Announced::Quic(CandidateKind::Reflexive, v6)
        );
        assert_eq!(
            Announced::parse("relay:https://relay.example.com/"),
            Announced::Relay("https://relay.example.com/")
        );
        for s in [
            "",
            "relay:http://x/",
            "webrtc:1.2.3.4:5",
            "local:nonsense",
            "mapped:",
        ] {
            assert_eq!(Announced::parse(s), Announced::Unknown, "{s}");
        }
        for kind in [
            CandidateKind::Local,
            CandidateKind::Reflexive,
            CandidateKind::Mapped,
        ] {
            let s = Announced::candidate(kind, v6);
            assert_eq!(Announced::parse(&s), Announced::Quic(kind, v6));
            assert!(s.len() <= crate::MAX_ADDR_LEN);
        }
    }
}
