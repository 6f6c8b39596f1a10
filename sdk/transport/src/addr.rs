//! What a node announces to the tracker and a neighbour dials: its endpoint id (the ed25519
//! public key, which is also the key the TLS handshake proves), its home relay, and its direct
//! addresses, each with the kind of candidate it is.
//!
//! Two encodings:
//! - **Compact string** ([`PeerAddr`]'s `Display`/`FromStr`), `;`-separated, for logs, flags
//!   and a single tracker field:
//!   `3b6a…(64 hex);relay=https://11.7.1.1:3443/;local=192.168.1.10:40000;reflexive=11.7.2.1:40000`.
//!   About 64 + 30 bytes per relay + 20–55 bytes per address: 150–250 bytes with IPv4.
//! - **Tracker fields** ([`PeerAddr::to_tracker`]): the id as 64 hex digits (where protocol v1
//!   has `fingerprint`, also 64 hex digits), and one `kind:ip:port` string per address, at
//!   most 57 bytes each (`reflexive:[8 groups of IPv6]:65535`), so each fits the tracker's
//!   64-byte `addrs[]` bound. The relay URL goes in a new field (see `docs/transport.md`).
//!
//! Unknown keys and kinds are skipped when parsing, so a later revision can add candidates
//! without breaking older readers.

use crate::TransportError;
use iroh::{EndpointAddr, EndpointId, RelayUrl, TransportAddr};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Longest compact string [`PeerAddr::from_str`] reads.
pub const MAX_COMPACT_LEN: usize = 2048;
/// Most direct addresses a [`PeerAddr`] carries (the tracker keeps 4 today; room for IPv6).
pub const MAX_DIRECT_ADDRS: usize = 8;
/// Most relay URLs a [`PeerAddr`] carries.
pub const MAX_RELAYS: usize = 2;
/// Longest relay URL accepted.
pub const MAX_RELAY_URL_LEN: usize = 256;

/// The kind of a direct address candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddrKind {
    /// An address of one of the node's own interfaces with the endpoint's port: a LAN address
    /// behind a router, or a public address on a host with no NAT.
    Local,
    /// The node's address as seen from outside (QUIC address discovery against the relay):
    /// its router's public address and the port the NAT gave this socket.
    Reflexive,
    /// A port mapped on the home router (UPnP IGD, NAT-PMP or PCP), or an address set by hand.
    Mapped,
}

impl AddrKind {
    /// The word used in both encodings.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrKind::Local => "local",
            AddrKind::Reflexive => "reflexive",
            AddrKind::Mapped => "mapped",
        }
    }

    fn parse(s: &str) -> Option<AddrKind> {
        match s {
            "local" => Some(AddrKind::Local),
            "reflexive" => Some(AddrKind::Reflexive),
            "mapped" => Some(AddrKind::Mapped),
            _ => None,
        }
    }
}

/// One direct address candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DirectAddr {
    /// What kind of candidate it is.
    pub kind: AddrKind,
    /// The UDP address.
    pub addr: SocketAddr,
}

/// Everything a neighbour needs to dial a node: the id it must prove, where it is relayed,
/// and its direct candidates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddr {
    /// The endpoint id: the node's ed25519 public key. The connection's TLS handshake proves
    /// the remote holds its secret key, so this is the key the tracker vouches for.
    #[serde(with = "id_hex")]
    pub id: EndpointId,
    /// The node's home relay(s), where it can always be reached (over HTTPS, also when UDP
    /// is blocked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<RelayUrl>,
    /// Direct candidates, local first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addrs: Vec<DirectAddr>,
}

/// The fields a node would announce to the tracker (peer protocol v2 proposal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerAddr {
    /// 64 lower-case hex digits of the endpoint id.
    pub endpoint_id: String,
    /// The home relay URL, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// `kind:ip:port` per candidate, each at most 57 bytes.
    pub addrs: Vec<String>,
}

impl PeerAddr {
    /// A bare address: just the id.
    pub fn new(id: EndpointId) -> Self {
        PeerAddr {
            id,
            relays: Vec::new(),
            addrs: Vec::new(),
        }
    }

    /// The endpoint id as 64 lower-case hex digits.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id.as_bytes())
    }

    /// The kind this address announces for `addr`, if it announces it.
    pub fn kind_of(&self, addr: SocketAddr) -> Option<AddrKind> {
        self.addrs.iter().find(|d| d.addr == addr).map(|d| d.kind)
    }

    /// What iroh dials: the id, the relays and every direct address.
    pub fn to_endpoint_addr(&self) -> EndpointAddr {
        EndpointAddr::from_parts(
            self.id,
            self.relays
                .iter()
                .cloned()
                .map(TransportAddr::Relay)
                .chain(self.addrs.iter().map(|d| TransportAddr::Ip(d.addr))),
        )
    }

    /// The tracker form: the id as hex, the first relay, and `kind:ip:port` strings.
    pub fn to_tracker(&self) -> TrackerAddr {
        TrackerAddr {
            endpoint_id: self.id_hex(),
            relay: self.relays.first().map(|r| r.to_string()),
            addrs: self
                .addrs
                .iter()
                .map(|d| format!("{}:{}", d.kind.as_str(), d.addr))
                .collect(),
        }
    }

    /// Reads the tracker form back. Unknown kinds are skipped; a bad id or address is an
    /// error naming it.
    pub fn from_tracker(t: &TrackerAddr) -> Result<PeerAddr, TransportError> {
        let mut out = PeerAddr::new(parse_id(&t.endpoint_id)?);
        if let Some(r) = &t.relay {
            out.relays.push(parse_relay(r)?);
        }
        for a in &t.addrs {
            let (kind, addr) = a.split_once(':').ok_or_else(|| {
                TransportError::InvalidAddr(format!("{a:?}: expected kind:ip:port"))
            })?;
            if let Some(kind) = AddrKind::parse(kind) {
                out.push_addr(kind, parse_socket_addr(addr)?)?;
            }
        }
        Ok(out)
    }

    fn push_addr(&mut self, kind: AddrKind, addr: SocketAddr) -> Result<(), TransportError> {
        if self.addrs.iter().any(|d| d.addr == addr) {
            return Ok(());
        }
        if self.addrs.len() >= MAX_DIRECT_ADDRS {
            return Err(TransportError::InvalidAddr(format!(
                "more than {MAX_DIRECT_ADDRS} direct addresses"
            )));
        }
        self.addrs.push(DirectAddr { kind, addr });
        Ok(())
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id_hex())?;
        for r in &self.relays {
            write!(f, ";relay={r}")?;
        }
        for d in &self.addrs {
            write!(f, ";{}={}", d.kind.as_str(), d.addr)?;
        }
        Ok(())
    }
}

impl FromStr for PeerAddr {
    type Err = TransportError;

    /// Parses the compact form. Keys it does not know are skipped.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_COMPACT_LEN {
            return Err(TransportError::InvalidAddr(format!(
                "{} bytes; at most {MAX_COMPACT_LEN}",
                s.len()
            )));
        }
        let mut parts = s.trim().split(';');
        let id = parse_id(parts.next().unwrap_or_default())?;
        let mut out = PeerAddr::new(id);
        for part in parts.filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                TransportError::InvalidAddr(format!("{part:?}: expected key=value"))
            })?;
            if key == "relay" {
                if out.relays.len() >= MAX_RELAYS {
                    return Err(TransportError::InvalidAddr(format!(
                        "more than {MAX_RELAYS} relays"
                    )));
                }
                out.relays.push(parse_relay(value)?);
            } else if let Some(kind) = AddrKind::parse(key) {
                out.push_addr(kind, parse_socket_addr(value)?)?;
            }
        }
        Ok(out)
    }
}

fn parse_id(s: &str) -> Result<EndpointId, TransportError> {
    let bad = |why: &str| TransportError::InvalidAddr(format!("endpoint id {s:?}: {why}"));
    let bytes = hex::decode(s).map_err(|_| bad("expected 64 hex digits"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| bad("expected 64 hex digits"))?;
    EndpointId::from_bytes(&bytes).map_err(|_| bad("not an ed25519 public key"))
}

fn parse_relay(s: &str) -> Result<RelayUrl, TransportError> {
    if s.len() > MAX_RELAY_URL_LEN {
        return Err(TransportError::InvalidAddr(format!(
            "relay URL over {MAX_RELAY_URL_LEN} bytes"
        )));
    }
    RelayUrl::from_str(s).map_err(|e| TransportError::InvalidAddr(format!("relay {s:?}: {e}")))
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, TransportError> {
    s.parse()
        .map_err(|_| TransportError::InvalidAddr(format!("{s:?}: expected ip:port")))
}

/// True for addresses that are never on the public internet: loopback, private (RFC 1918),
/// link-local, unique-local IPv6, shared (CGNAT 100.64/10) and unspecified.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(v4.into()))
        }
    }
}

mod id_hex {
    use iroh::EndpointId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(id: &EndpointId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(id.as_bytes()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EndpointId, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_id(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PeerAddr {
        let id = iroh::SecretKey::from_bytes(&[7; 32]).public();
        PeerAddr {
            id,
            relays: vec!["https://11.7.1.1:3443".parse().unwrap()],
            addrs: vec![
                DirectAddr {
                    kind: AddrKind::Local,
                    addr: "192.168.1.10:40000".parse().unwrap(),
                },
                DirectAddr {
                    kind: AddrKind::Reflexive,
                    addr: "11.7.2.1:40000".parse().unwrap(),
                },
                DirectAddr {
                    kind: AddrKind::Mapped,
                    addr: "[2001:db8::1]:51000".parse().unwrap(),
                },
            ],
        }
    }

    #[test]
    fn compact_form_round_trips_and_skips_unknown_keys() {
        let a = sample();
        let s = a.to_string();
        assert!(s.starts_with(&a.id_hex()), "{s}");
        assert_eq!(s.parse::<PeerAddr>().unwrap(), a);
        let later = format!("{s};turn=11.7.1.9:3478;");
        assert_eq!(later.parse::<PeerAddr>().unwrap(), a);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<PeerAddr>(&json).unwrap(), a);
    }

    #[test]
    fn tracker_form_fits_the_tracker_bounds() {
        let a = sample();
        let t = a.to_tracker();
        assert_eq!(t.endpoint_id.len(), 64);
        let longest = format!(
            "reflexive:{}",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
        );
        assert_eq!(longest.len(), 57);
        assert!(t.addrs.iter().all(|s| s.len() <= 64), "{t:?}");
        assert_eq!(t.addrs[1], "reflexive:11.7.2.1:40000");
        assert_eq!(PeerAddr::from_tracker(&t).unwrap(), a);
    }

    #[test]
    fn bad_input_is_refused_with_what_is_wrong() {
        let id = sample().id_hex();
        for (bad, says) in [
            ("", "endpoint id"),
            ("abcd", "64 hex"),
            (&format!("{id};local=1.2.3.4"), "ip:port"),
            (&format!("{id};local"), "key=value"),
            (&format!("{id};relay=not a url"), "relay"),
            (&"ab".repeat(32), "ed25519"),
        ] {
            let err = bad.parse::<PeerAddr>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let long = "a".repeat(MAX_COMPACT_LEN + 1);
        assert!(long.parse::<PeerAddr>().is_err());
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "10.1.2.3",
            "192.168.1.10",
            "172.16.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "fd00::1",
            "fe80::1",
            "::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["11.7.2.1", "8.8.8.8", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
