//! The node's QUIC endpoint: binding, what it observed of its network, dialling and accepting.

use crate::addr::{AddrKind, DirectAddr, PeerAddr};
use crate::connection::{map_connection_error, PeerConnection};
use crate::{chain, Result, TransportError};
use iroh::endpoint::{
    presets, ConnectError, ConnectWithOptsError, ConnectingError, PortmapperConfig,
};
use iroh::unstable_net_report::Probe;
use iroh::{Endpoint, RelayMap, RelayMode, SecretKey, Watcher};
use iroh_relay::tls::CaTlsConfig;
use iroh_relay::{RelayConfig, RelayQuicConfig};
use rustls::pki_types::CertificateDer;
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One relay of the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayNode {
    /// Its HTTPS URL (`https://relay.example.com/` or `https://11.7.1.1:3443/`). An IP
    /// address in the URL means no DNS lookup at all.
    pub url: iroh::RelayUrl,
    /// Its QUIC address discovery port (UDP), or `None` when it runs none (then the endpoint
    /// learns no reflexive address from it and cannot hole-punch).
    pub quic_port: Option<u16>,
}

/// How to bind a [`PeerEndpoint`].
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The node's ed25519 secret key; its public key is the endpoint id the tracker hands out.
    /// Persist it ([`load_or_generate_secret_key`]) so the id survives restarts.
    pub secret_key: SecretKey,
    /// The provider's relays. Empty: no relay (direct addresses only; no hole punching, no
    /// reflexive address).
    pub relays: Vec<RelayNode>,
    /// CA certificates (DER) to trust for the relays' TLS, instead of the built-in web roots.
    /// Empty: the built-in roots (webpki).
    pub relay_ca: Vec<CertificateDer<'static>>,
    /// The one ALPN this endpoint speaks and accepts ([`crate::ALPN_V2`]).
    pub alpn: Vec<u8>,
    /// The UDP address to bind (`0.0.0.0:0`: every IPv4 interface, a random port).
    pub bind: SocketAddr,
    /// Ask the home router for a port mapping (UPnP IGD, NAT-PMP, PCP: iroh's portmapper).
    pub port_mapping: bool,
    /// Bound on [`PeerEndpoint::connect`].
    pub connect_timeout: Duration,
}

impl PeerConfig {
    /// Defaults: no relay, ALPN v2, `0.0.0.0:0`, port mapping on, 10 s connect timeout.
    pub fn new(secret_key: SecretKey) -> Self {
        PeerConfig {
            secret_key,
            relays: Vec::new(),
            relay_ca: Vec::new(),
            alpn: crate::ALPN_V2.to_vec(),
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            port_mapping: true,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Reads a secret key (32 raw bytes) from `path`, or makes a new one and writes it there
/// (mode 0600), so a node keeps its endpoint id across restarts.
pub fn load_or_generate_secret_key(path: &Path) -> Result<SecretKey> {
    let bad = |e: std::io::Error| {
        TransportError::InvalidConfig(format!("secret key file {}: {e}", path.display()))
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                TransportError::InvalidConfig(format!(
                    "secret key file {} has {} bytes; expected 32 (delete it to make a new key)",
                    path.display(),
                    b.len()
                ))
            })?;
            Ok(SecretKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(bad)?;
            f.write_all(&key.to_bytes()).map_err(bad)?;
            Ok(key)
        }
        Err(e) => Err(bad(e)),
    }
}

/// What the endpoint found out about its network, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// The endpoint id (hex).
    pub endpoint_id: String,
    /// The bound UDP sockets.
    pub bound: Vec<SocketAddr>,
    /// Interface addresses with the endpoint's port.
    pub local: Vec<SocketAddr>,
    /// The address as seen from outside (QUIC address discovery), if a relay answered.
    pub reflexive: Vec<SocketAddr>,
    /// Addresses from a port mapping on the router (or configured by hand).
    pub mapped: Vec<SocketAddr>,
    /// The home relay, if one was chosen.
    pub relay: Option<String>,
    /// Whether the connection to the home relay is up.
    pub relay_connected: bool,
    /// The NAT's behaviour as far as it can be told.
    pub nat: NatGuess,
}

/// A guess at the NAT's behaviour from the net report (QUIC address discovery against each
/// relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatGuess {
    /// The reflexive address is one of the node's own: no NAT.
    NoNat,
    /// Two relays saw the same external address and port: endpoint-independent mapping, hole
    /// punching should work.
    EndpointIndependent,
    /// Two relays saw different external ports: a symmetric NAT; direct paths need the other
    /// side to be public or mapped, otherwise the relay carries the traffic.
    EndpointDependent,
    /// Behind a NAT (the reflexive address is not our own) but only one relay answered, so
    /// the mapping's behaviour cannot be told.
    BehindNat,
    /// No QUIC address discovery answer: UDP is blocked (or the relays run no QAD); only the
    /// relay (over HTTPS) can carry traffic.
    NoUdp,
    /// No net report yet.
    Unknown,
}

/// A bound QUIC endpoint of peer protocol v2. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PeerEndpoint {
    ep: Endpoint,
    alpn: Arc<Vec<u8>>,
    connect_timeout: Duration,
}

impl PeerEndpoint {
    /// Binds the endpoint. Never contacts anything but the configured relays: built from
    /// iroh's `presets::Minimal` (crypto provider only), with no address lookup (no DNS, no
    /// pkarr) and `RelayMode::Custom` with exactly the given relays (or none).
    pub async fn bind(config: PeerConfig) -> Result<PeerEndpoint> {
        if config.alpn.is_empty() {
            return Err(TransportError::InvalidConfig("empty ALPN".into()));
        }
        for r in &config.relays {
            if r.url.scheme() != "https" {
                return Err(TransportError::InvalidConfig(format!(
                    "relay {}: use an https URL (QUIC address discovery, needed for hole \
                     punching, only runs beside TLS)",
                    r.url
                )));
            }
        }
        let relay_mode = if config.relays.is_empty() {
            RelayMode::Disabled
        } else {
            RelayMode::Custom(RelayMap::from_iter(config.relays.iter().map(|r| {
                RelayConfig::new(r.url.clone(), r.quic_port.map(RelayQuicConfig::new))
            })))
        };
        let mut builder = Endpoint::builder(presets::Minimal)
            .clear_address_lookup()
            .relay_mode(relay_mode)
            .secret_key(config.secret_key.clone())
            .alpns(vec![config.alpn.clone()])
            .portmapper_config(if config.port_mapping {
                PortmapperConfig::default()
            } else {
                PortmapperConfig::Disabled
            })
            .clear_ip_transports()
            .bind_addr(config.bind)
            .map_err(|e| TransportError::Bind(format!("{}: {}", config.bind, chain(&e))))?;
        if !config.relay_ca.is_empty() {
            builder = builder.ca_tls_config(CaTlsConfig::custom_roots(config.relay_ca.clone()));
        }
        let ep = builder
            .bind()
            .await
            .map_err(|e| TransportError::Bind(format!("{}: {}", config.bind, chain(&e))))?;
        Ok(PeerEndpoint {
            ep,
            alpn: Arc::new(config.alpn),
            connect_timeout: config.connect_timeout,
        })
    }

    /// The endpoint id (the public half of the secret key).
    pub fn id(&self) -> iroh::EndpointId {
        self.ep.id()
    }

    /// The ALPN this endpoint speaks.
    pub fn alpn(&self) -> &[u8] {
        &self.alpn
    }

    /// The bound UDP sockets.
    pub fn bound_sockets(&self) -> Vec<SocketAddr> {
        self.ep.bound_sockets()
    }

    /// The underlying iroh endpoint (for metrics and what this crate does not wrap).
    pub fn inner(&self) -> &Endpoint {
        &self.ep
    }

    /// What the node announces now: id, home relay, and direct candidates with their kinds
    /// (local first, then reflexive, then mapped). Candidates appear over the first second or
    /// two (net report, port mapping): wait with [`PeerEndpoint::observe`] first.
    pub fn endpoint_addr(&self) -> PeerAddr {
        let ea = self.ep.addr();
        let report = self.ep.net_report().get();
        let own = interface_ips();
        let mut addrs: Vec<DirectAddr> = ea
            .ip_addrs()
            .map(|&addr| {
                let reflexive = report.as_ref().is_some_and(|r| {
                    r.global_v4.map(SocketAddr::V4) == Some(addr)
                        || r.global_v6.map(SocketAddr::V6) == Some(addr)
                });
                let kind = if own.contains(&addr.ip()) {
                    AddrKind::Local
                } else if reflexive {
                    AddrKind::Reflexive
                } else {
                    AddrKind::Mapped
                };
                DirectAddr { kind, addr }
            })
            .collect();
        addrs.sort();
        addrs.truncate(crate::addr::MAX_DIRECT_ADDRS);
        PeerAddr {
            id: ea.id,
            relays: ea
                .relay_urls()
                .take(crate::addr::MAX_RELAYS)
                .cloned()
                .collect(),
            addrs,
        }
    }

    /// Waits (at most `timeout`) for the first net report and, with relays configured, for
    /// the home relay connection and a port mapping attempt, then says what was found.
    pub async fn observe(&self, timeout: Duration) -> Observed {
        let deadline = Instant::now() + timeout;
        let mut report = self.ep.net_report();
        let _ = tokio::time::timeout_at(deadline, report.initialized()).await;
        let has_relays = !self.ep.home_relay_status().get().is_empty();
        if has_relays {
            let _ = tokio::time::timeout_at(deadline, self.ep.online()).await;
        }
        // Port mapping runs beside the net report; give it a moment to land in the address.
        let settle = Instant::now() + Duration::from_millis(1500);
        let _ = tokio::time::timeout_at(settle.min(deadline), async {
            loop {
                if self
                    .endpoint_addr()
                    .addrs
                    .iter()
                    .any(|d| d.kind == AddrKind::Mapped)
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        if has_relays {
            // The home relay may have changed with the net report (the lowest latency wins):
            // wait for that connection too.
            let _ = tokio::time::timeout_at(deadline, self.ep.online()).await;
        }
        self.observed()
    }

    /// What the endpoint knows of its network now (no waiting).
    pub fn observed(&self) -> Observed {
        let addr = self.endpoint_addr();
        let of = |k: AddrKind| -> Vec<SocketAddr> {
            addr.addrs
                .iter()
                .filter(|d| d.kind == k)
                .map(|d| d.addr)
                .collect()
        };
        let report = self.ep.net_report().get();
        let status = self.ep.home_relay_status().get();
        let own = interface_ips();
        let nat = match &report {
            None => NatGuess::Unknown,
            Some(r) if !r.has_udp() => NatGuess::NoUdp,
            Some(r) => {
                let global = r.global_v4.map(|a| IpAddr::V4(*a.ip()));
                if global.is_some_and(|ip| own.contains(&ip)) {
                    NatGuess::NoNat
                } else {
                    // Two QAD answers from different relays are needed to compare mappings.
                    let qad_relays: BTreeSet<_> = r
                        .relay_latency
                        .iter()
                        .filter(|(probe, _, _)| matches!(probe, Probe::QadIpv4 | Probe::QadIpv6))
                        .map(|(_, url, _)| url.clone())
                        .collect();
                    match r.mapping_varies_by_dest() {
                        Some(true) => NatGuess::EndpointDependent,
                        Some(false) if qad_relays.len() > 1 => NatGuess::EndpointIndependent,
                        _ => NatGuess::BehindNat,
                    }
                }
            }
        };
        Observed {
            endpoint_id: addr.id_hex(),
            bound: self.bound_sockets(),
            local: of(AddrKind::Local),
            reflexive: of(AddrKind::Reflexive),
            mapped: of(AddrKind::Mapped),
            relay: status.first().map(|s| s.url().to_string()),
            relay_connected: status.iter().any(|s| s.is_connected()),
            nat,
        }
    }

    /// Dials `addr` and completes only with the endpoint whose id it names: iroh's TLS
    /// handshake uses the id as a raw public key, so whoever answers must prove it holds the
    /// matching secret key ([`TransportError::Authentication`] otherwise). Bounded by the
    /// configured connect timeout. Starts on the relay when it has one; hole punching then
    /// runs in the background ([`PeerConnection::wait_direct`]).
    pub async fn connect(&self, addr: &PeerAddr) -> Result<PeerConnection> {
        if addr.id == self.id() {
            return Err(TransportError::SelfConnect);
        }
        let peer = addr.id.fmt_short().to_string();
        let fut = self.ep.connect(addr.to_endpoint_addr(), &self.alpn);
        let conn = match tokio::time::timeout(self.connect_timeout, fut).await {
            Err(_) => {
                return Err(TransportError::Unreachable {
                    peer,
                    detail: format!("no handshake within {:?}", self.connect_timeout),
                })
            }
            Ok(Err(e)) => return Err(self.map_connect_error(e, peer)),
            Ok(Ok(conn)) => conn,
        };
        Ok(PeerConnection::start(
            conn,
            self.clone(),
            Some(addr.clone()),
        ))
    }

    fn map_connect_error(&self, e: ConnectError, peer: String) -> TransportError {
        let detail = chain(&e);
        match e {
            ConnectError::Connect { source, .. } => match source {
                ConnectWithOptsError::SelfConnect { .. } => TransportError::SelfConnect,
                ConnectWithOptsError::EndpointClosed { .. } => TransportError::Closed,
                ConnectWithOptsError::InvalidAlpn { .. } => {
                    TransportError::InvalidConfig("empty ALPN".into())
                }
                _ => TransportError::Unreachable { peer, detail },
            },
            ConnectError::Connecting { source, .. } => match source {
                ConnectingError::ConnectionError { source, .. } => {
                    map_connection_error(&source, &self.alpn, true)
                }
                ConnectingError::HandshakeFailure { .. } => TransportError::Authentication(detail),
                _ => TransportError::Unreachable { peer, detail },
            },
            ConnectError::Connection { source, .. } => {
                map_connection_error(&source, &self.alpn, true)
            }
            _ => TransportError::Unreachable { peer, detail },
        }
    }

    /// The next incoming connection, or `None` once the endpoint is closed. Finish it with
    /// [`IncomingPeer::accept`].
    pub async fn accept(&self) -> Option<IncomingPeer> {
        let incoming = self.ep.accept().await?;
        Some(IncomingPeer {
            incoming,
            endpoint: self.clone(),
        })
    }

    /// Closes every connection (with code 0) and the endpoint, waiting (bounded by iroh) for
    /// the peers to learn of it.
    pub async fn close(&self) {
        self.ep.close().await;
    }
}

/// A connection attempt from a remote, before its handshake.
#[derive(Debug)]
pub struct IncomingPeer {
    incoming: iroh::endpoint::Incoming,
    endpoint: PeerEndpoint,
}

impl IncomingPeer {
    /// Where the attempt came from (an IP address, or the relay).
    pub fn remote_addr(&self) -> iroh::endpoint::IncomingAddr {
        self.incoming.remote_addr()
    }

    /// Completes the handshake (bounded by the endpoint's connect timeout). A remote offering
    /// another ALPN (an older or newer protocol version) is refused in the TLS handshake with
    /// `no_application_protocol`, and this returns [`TransportError::WrongProtocol`]; the
    /// remote sees the same error on its side.
    pub async fn accept(self) -> Result<PeerConnection> {
        let alpn = self.endpoint.alpn.clone();
        let accepting = self
            .incoming
            .accept()
            .map_err(|e| map_connection_error(&e, &alpn, false))?;
        let conn = match tokio::time::timeout(self.endpoint.connect_timeout, accepting).await {
            Err(_) => return Err(TransportError::Timeout(self.endpoint.connect_timeout)),
            Ok(Err(e)) => {
                return Err(match e {
                    ConnectingError::ConnectionError { source, .. } => {
                        map_connection_error(&source, &alpn, false)
                    }
                    ConnectingError::HandshakeFailure { .. } => {
                        TransportError::Authentication(chain(&e))
                    }
                    other => TransportError::ConnectionLost(chain(&other)),
                })
            }
            Ok(Ok(conn)) => conn,
        };
        if conn.alpn() != alpn.as_slice() {
            // Cannot happen with one ALPN configured; guards a future second one.
            let theirs = String::from_utf8_lossy(conn.alpn()).into_owned();
            conn.close(1u32.into(), b"unsupported protocol version");
            return Err(TransportError::WrongProtocol {
                ours: String::from_utf8_lossy(&alpn).into_owned(),
                detail: format!("the peer negotiated {theirs}"),
            });
        }
        Ok(PeerConnection::start(conn, self.endpoint.clone(), None))
    }

    /// Refuses the attempt without a handshake.
    pub fn refuse(self) {
        self.incoming.refuse();
    }
}

/// Addresses of this host's interfaces (up or down), from `getifaddrs`.
pub(crate) fn interface_ips() -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifa in addrs {
            if let Some(a) = ifa.address {
                if let Some(v4) = a.as_sockaddr_in() {
                    out.insert(IpAddr::V4(v4.ip()));
                } else if let Some(v6) = a.as_sockaddr_in6() {
                    out.insert(IpAddr::V6(v6.ip()));
                }
            }
        }
    }
    out
}
