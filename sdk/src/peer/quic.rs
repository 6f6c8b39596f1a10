//! Peer protocol v2: the v1 exchange (HTTP/2, the same routes and answers) carried on one
//! bidirectional QUIC stream of a [`shoal_transport`] connection instead of TLS over TCP.
//!
//! What changes from v1 is reach and identity, not the exchange:
//! - the node binds a UDP endpoint (iroh) with its ed25519 key; the endpoint id, in hex, is
//!   the `fingerprint` the tracker vouches for, and the QUIC handshake proves it;
//! - it announces typed candidates (`local:`, `reflexive:`, `mapped:` addresses and
//!   `relay:URL`, see [`shoal_proto::addr`]), found without flags: interface addresses, the
//!   address its relay sees, and a port mapped on the home router (UPnP IGD, NAT-PMP, PCP);
//! - a dial starts on the relay when there is one and moves to a direct path once hole
//!   punching succeeds. Relay bytes cost the provider egress: unless `relay_media` is set, a
//!   connection that is not direct within `direct_wait` carries nothing and the node gets
//!   the segment elsewhere (other peers, the origin). The server side holds the same rule.
//!
//! Why HTTP/2 on one stream and not one stream per request (as HTTP/3 does): the whole v1
//! stack (busy answers, `haves` feeds, upload caps, relaying a segment still arriving,
//! stream resets) runs unchanged on it, and every hostile-input guard with it. The price is
//! head-of-line blocking across the requests of one neighbour, as over TCP today.

use super::PeerError;
use crate::metrics::{PathLabel, PathResultLabel};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use shoal_core::swarm::PeerAddr;
use shoal_proto::{CandidateKind, PathCounters};
use shoal_transport::{
    AddrKind, PathKind, PeerConnection, PeerEndpoint, TrackerAddr, TransportError,
};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream one HTTP/2 peer connection runs on (TLS over TCP, or a QUIC stream).
pub trait PeerIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> PeerIo for T {}

/// A boxed [`PeerIo`].
pub type BoxIo = Box<dyn PeerIo>;

/// Counters of connection attempts by path and result, and the path mix now.
#[derive(Debug, Clone, Default)]
pub struct PathMetrics {
    /// `shoal_edge_peer_connections_total{path,result}`.
    pub attempts: Family<PathResultLabel, Counter>,
    /// `shoal_edge_peer_paths{path}`: open peer connections by the path they use now.
    pub open: Family<PathLabel, Gauge>,
    /// Totals in the order of [`shoal_proto::PathCounters::fields`] (successful connections
    /// by path, then failures), and what of them the tracker was told.
    totals: Arc<[AtomicU32; 6]>,
    reported: Arc<[AtomicU32; 6]>,
    /// The last attempt to each neighbour (endpoint id in hex): its path when it connected,
    /// else the result label.
    last: Arc<dashmap::DashMap<String, &'static str>>,
}

impl PathMetrics {
    fn attempt_to(&self, peer: &PeerAddr, path: PathKind, result: &'static str) {
        let outcome = if result == "ok" {
            path.as_str()
        } else {
            result
        };
        self.last.insert(peer.fingerprint.clone(), outcome);
        self.attempt(path, result);
    }

    /// The last connection attempt to each neighbour dialled so far: its endpoint id (hex)
    /// and the path it took (`lan`, `direct`, `punched`, `mapped`, `relay`) or why it failed
    /// (`no_direct_path`, `unreachable`, …).
    pub fn last_attempts(&self) -> Vec<(String, &'static str)> {
        self.last
            .iter()
            .map(|e| (e.key().clone(), *e.value()))
            .collect()
    }

    fn attempt(&self, path: PathKind, result: &'static str) {
        self.attempts
            .get_or_create(&PathResultLabel {
                path: path.as_str(),
                result,
            })
            .inc();
        let slot = match (result, path) {
            ("ok", PathKind::Lan) => 0,
            ("ok", PathKind::Direct) => 1,
            ("ok", PathKind::Punched) => 2,
            ("ok", PathKind::Mapped) => 3,
            ("ok", PathKind::Relay) => 4,
            // A stream that failed to open on a path that worked says nothing of reach.
            ("lost", _) => return,
            _ => 5,
        };
        self.totals[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The connections not reported yet, now counted as reported.
    pub fn take_unreported(&self) -> PathCounters {
        let mut d = [0u32; 6];
        for (i, v) in d.iter_mut().enumerate() {
            let now = self.totals[i].load(Ordering::Relaxed);
            let before = self.reported[i].swap(now, Ordering::Relaxed);
            *v = now
                .wrapping_sub(before)
                .min(shoal_proto::MAX_REPORTED_CONNECTIONS);
        }
        PathCounters {
            lan: d[0],
            direct: d[1],
            punched: d[2],
            mapped: d[3],
            relay: d[4],
            failed: d[5],
        }
    }

    /// Puts back what [`PathMetrics::take_unreported`] took (the announce failed).
    pub fn restore_unreported(&self, c: PathCounters) {
        for (i, (_, v)) in c.fields().into_iter().enumerate() {
            self.reported[i].fetch_sub(v, Ordering::Relaxed);
        }
    }
}

/// How v2 connections behave.
#[derive(Debug, Clone)]
pub struct QuicPolicy {
    /// Longest wait for a connection to go direct before it is given up (unless
    /// `relay_media`).
    pub direct_wait: Duration,
    /// Segments and `haves` may travel through the relay (the provider pays its egress).
    pub relay_media: bool,
}

impl Default for QuicPolicy {
    fn default() -> Self {
        Self {
            direct_wait: Duration::from_secs(3),
            relay_media: false,
        }
    }
}

/// The node's v2 endpoint with its policy: dials neighbours and accepts them.
#[derive(Debug, Clone)]
pub struct QuicPeers {
    endpoint: PeerEndpoint,
    policy: QuicPolicy,
    metrics: PathMetrics,
    /// An address set by hand (`peer_advertise`), announced as a `mapped` candidate.
    advertise: Option<SocketAddr>,
}

/// One QUIC stream pair of a connection, which it keeps open while the stream lives.
struct QuicStream {
    io: tokio::io::Join<iroh::endpoint::RecvStream, iroh::endpoint::SendStream>,
    _conn: OpenConnection,
}

/// A connection counted in [`PathMetrics::open`] until it is dropped.
struct OpenConnection {
    conn: PeerConnection,
    gauge: Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
        self.conn.close("done");
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// An accepted neighbour: its stream, its endpoint id (hex) and, on a direct path, its IP.
pub struct Accepted {
    /// The HTTP/2 byte stream.
    pub io: BoxIo,
    /// The neighbour's endpoint id, proven by the handshake.
    pub client: String,
    /// The path the connection uses.
    pub path: PathKind,
}

impl QuicPeers {
    /// Wraps a bound endpoint.
    pub fn new(
        endpoint: PeerEndpoint,
        policy: QuicPolicy,
        metrics: PathMetrics,
        advertise: Option<SocketAddr>,
    ) -> Self {
        Self {
            endpoint,
            policy,
            metrics,
            advertise,
        }
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &PeerEndpoint {
        &self.endpoint
    }

    /// The endpoint id as 64 hex digits: the key announced as `fingerprint`.
    pub fn endpoint_id(&self) -> String {
        hex::encode(self.endpoint.id().as_bytes())
    }

    /// What to announce now, in the forms of [`shoal_proto::addr`]: the relay first, then
    /// the hand-set address, then the candidates the endpoint found (local, reflexive,
    /// mapped), up to `max` entries.
    pub fn announced_addrs(&self, max: usize) -> Vec<String> {
        let found = self.endpoint.endpoint_addr();
        let mut out: Vec<String> = found
            .relays
            .iter()
            .take(1)
            .map(|r| shoal_proto::Announced::relay(r.as_str()))
            .collect();
        if let Some(a) = self.advertise {
            out.push(shoal_proto::Announced::candidate(CandidateKind::Mapped, a));
        }
        for d in &found.addrs {
            if d.addr.ip().is_unspecified() || Some(d.addr) == self.advertise {
                continue;
            }
            // Link-local IPv6 needs a scope this form does not carry.
            if let IpAddr::V6(v6) = d.addr.ip() {
                if v6.is_unicast_link_local() {
                    continue;
                }
            }
            let kind = match d.kind {
                AddrKind::Local => CandidateKind::Local,
                AddrKind::Reflexive => CandidateKind::Reflexive,
                AddrKind::Mapped => CandidateKind::Mapped,
            };
            out.push(shoal_proto::Announced::candidate(kind, d.addr));
        }
        out.truncate(max);
        out
    }

    /// Dials `peer` (a v2 address) and opens the stream the HTTP/2 exchange runs on. Waits up
    /// to `direct_wait` for a direct path unless the relay may carry media.
    pub async fn dial(&self, peer: &PeerAddr) -> Result<BoxIo, PeerError> {
        let addr = transport_addr(peer)?;
        let conn = match self.endpoint.connect(&addr).await {
            Ok(c) => c,
            Err(e) => {
                self.metrics
                    .attempt_to(peer, PathKind::None, failure_label(&e));
                return Err(transport_error(e));
            }
        };
        let path = if self.policy.relay_media {
            conn.path()
        } else {
            conn.wait_direct(self.policy.direct_wait).await
        };
        if !path.is_direct() && !self.policy.relay_media {
            self.metrics.attempt_to(peer, path, "no_direct_path");
            conn.close("no direct path; the relay carries no media");
            return Err(PeerError::NoDirectPath(self.policy.direct_wait));
        }
        let (send, recv) = conn.inner().open_bi().await.map_err(|e| {
            self.metrics.attempt_to(peer, path, "lost");
            PeerError::Transport(e.into())
        })?;
        self.metrics.attempt_to(peer, path, "ok");
        tracing::debug!(peer = %peer, %path, "peer connected over QUIC");
        Ok(Box::new(self.stream(conn, path, recv, send)))
    }

    fn stream(
        &self,
        conn: PeerConnection,
        path: PathKind,
        recv: iroh::endpoint::RecvStream,
        send: iroh::endpoint::SendStream,
    ) -> QuicStream {
        let gauge = self
            .metrics
            .open
            .get_or_create(&PathLabel {
                path: path.as_str(),
            })
            .clone();
        gauge.inc();
        QuicStream {
            io: tokio::io::join(recv, send),
            _conn: OpenConnection { conn, gauge },
        }
    }

    /// The next neighbour that connected, completed its handshake and opened its stream, or
    /// `None` once the endpoint is closed. A neighbour that is refused (an excluded address,
    /// no direct path in time, a wrong protocol version) is logged and skipped: this keeps
    /// accepting. Each handshake runs on its own task, so a slow one holds up nobody.
    pub async fn accept(
        &self,
        refused: &super::Exclusions,
        out: tokio::sync::mpsc::Sender<Accepted>,
    ) {
        while let Some(incoming) = self.endpoint.accept().await {
            if let iroh::endpoint::IncomingAddr::Ip(remote) = incoming.remote_addr() {
                if refused.excludes(remote.ip()) {
                    tracing::debug!(%remote, "peer connection refused: address excluded");
                    incoming.refuse();
                    continue;
                }
            }
            let (me, out) = (self.clone(), out.clone());
            tokio::spawn(async move {
                match me.finish_accept(incoming).await {
                    Ok(a) => {
                        let _ = out.send(a).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "incoming peer connection dropped"),
                }
            });
        }
    }

    async fn finish_accept(
        &self,
        incoming: shoal_transport::IncomingPeer,
    ) -> Result<Accepted, PeerError> {
        let conn = incoming.accept().await.map_err(|e| {
            if let TransportError::WrongProtocol { .. } = e {
                tracing::info!(error = %e, "refused a neighbour that speaks another peer protocol version");
            }
            transport_error(e)
        })?;
        let client = hex::encode(conn.remote_id().as_bytes());
        let wait = self.policy.direct_wait + Duration::from_secs(2);
        let (send, recv) = tokio::time::timeout(wait, conn.inner().accept_bi())
            .await
            .map_err(|_| PeerError::Stalled(wait))?
            .map_err(|e| PeerError::Transport(e.into()))?;
        // The dialler waited for a direct path before opening its stream; this side may see
        // the switch a moment later.
        let path = if self.policy.relay_media {
            conn.path()
        } else {
            conn.wait_direct(Duration::from_secs(1)).await
        };
        if !path.is_direct() && !self.policy.relay_media {
            conn.close("no direct path; the relay carries no media");
            return Err(PeerError::NoDirectPath(Duration::from_secs(1)));
        }
        Ok(Accepted {
            io: Box::new(self.stream(conn, path, recv, send)),
            client,
            path,
        })
    }

    /// Closes every connection and the endpoint.
    pub async fn close(&self) {
        self.endpoint.close().await;
    }
}

/// The transport's form of a v2 neighbour address.
fn transport_addr(peer: &PeerAddr) -> Result<shoal_transport::PeerAddr, PeerError> {
    let Some(q) = &peer.quic else {
        return Err(PeerError::ProtocolMismatch(
            "the neighbour announced only peer protocol v1 (TCP) addresses",
        ));
    };
    let t = TrackerAddr {
        endpoint_id: peer.fingerprint.clone(),
        relay: q.relay.clone(),
        addrs: q
            .candidates
            .iter()
            .map(|(k, a)| shoal_proto::Announced::candidate(*k, *a))
            .collect(),
    };
    shoal_transport::PeerAddr::from_tracker(&t).map_err(|e| PeerError::Connect(e.into()))
}

fn failure_label(e: &TransportError) -> &'static str {
    match e {
        TransportError::Unreachable { .. } | TransportError::Timeout(_) => "unreachable",
        TransportError::WrongProtocol { .. } => "version_mismatch",
        TransportError::Authentication(_) => "wrong_key",
        TransportError::Refused(_) => "refused",
        _ => "error",
    }
}

fn transport_error(e: TransportError) -> PeerError {
    match e {
        TransportError::Authentication(_) => PeerError::WrongEndpoint(e),
        TransportError::WrongProtocol { .. } => PeerError::WrongVersion(e),
        e => PeerError::Connect(e.into()),
    }
}
