//! A connection to one neighbour: which path it uses, and bounded request/response exchanges
//! on QUIC streams.
//!
//! Mapping of the v1 HTTP/2 requests onto QUIC (the plan for the peer protocol on top): one
//! bidirectional stream per request, as HTTP/3 does. The client writes the request (route,
//! range, then FIN), the server answers on the same stream (status, length, body, FIN); a
//! busy or missing segment is a short answer, an aborted relayed segment a stream reset
//! (`RESET_STREAM`, as `RST_STREAM` in v1). The endless `haves` feed is one long-lived stream
//! per swarm. QUIC streams are independent, so a lost packet of one segment does not stall
//! the others (HTTP/2 over TCP does), and flow control is per stream as in HTTP/2.
//!
//! Each side's first unidirectional stream is reserved: it carries a hello, the sender's
//! [`PeerAddr`] (its announced candidates with their kinds), which lets the accepting side
//! classify the path as well as the dialling side. It is only used to label paths, never to
//! decide whom to trust (the endpoint id is proven by TLS).

use crate::addr::{is_private, AddrKind, PeerAddr};
use crate::endpoint::PeerEndpoint;
use crate::{Result, TransportError};
use iroh::endpoint::{Connection, ConnectionError, ReadToEndError, TransportErrorCode};
use iroh::TransportAddr;
use serde::Serialize;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Default bound on one request or response ([`PeerConnection::request`]): 64 MiB, the v1
/// segment limit.
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;
/// Bound on the hello.
const MAX_HELLO: usize = 4096;
/// How long the hello exchange may take before it is given up (paths are then classified
/// with what the dialler was given, or without the remote's kinds).
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Which path carries a connection's data now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    /// A direct path to a private address (same LAN, or loopback).
    Lan,
    /// A direct path where no NAT had to be traversed: the remote's (or our own) announced
    /// local address is public.
    Direct,
    /// A direct path to an address the remote learned from outside (reflexive) or that hole
    /// punching found: NAT traversal coordinated through the relay.
    Punched,
    /// A direct path to a port the remote mapped on its router (UPnP, NAT-PMP, PCP).
    Mapped,
    /// Through the relay.
    Relay,
    /// No path open (the connection is closing).
    None,
}

impl PathKind {
    /// A direct UDP path (not the relay).
    pub fn is_direct(self) -> bool {
        matches!(
            self,
            PathKind::Lan | PathKind::Direct | PathKind::Punched | PathKind::Mapped
        )
    }

    /// The label of `shoal_edge_peer_connections_total{path=…}`.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Lan => "lan",
            PathKind::Direct => "direct",
            PathKind::Punched => "punched",
            PathKind::Mapped => "mapped",
            PathKind::Relay => "relay",
            PathKind::None => "none",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a path by its remote address, what the remote announced about its addresses,
/// and our own announced addresses:
/// relay → `Relay`; a private IP → `Lan`; the remote's mapped port → `Mapped`; the remote's
/// public local address, or our own public local address → `Direct`; anything else (the
/// remote's reflexive address or one found by punching) → `Punched`.
pub fn classify_path(
    remote: &TransportAddr,
    announced: Option<&PeerAddr>,
    own: &PeerAddr,
) -> PathKind {
    let addr = match remote {
        TransportAddr::Relay(_) => return PathKind::Relay,
        TransportAddr::Ip(a) => *a,
        _ => return PathKind::Relay,
    };
    if is_private(addr.ip()) {
        return PathKind::Lan;
    }
    match announced.and_then(|a| a.kind_of(addr)) {
        Some(AddrKind::Mapped) => return PathKind::Mapped,
        Some(AddrKind::Local) => return PathKind::Direct,
        _ => {}
    }
    let we_are_public = own
        .addrs
        .iter()
        .any(|d| d.kind == AddrKind::Local && !is_private(d.addr.ip()));
    if we_are_public {
        PathKind::Direct
    } else {
        PathKind::Punched
    }
}

/// A connection to one authenticated neighbour. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PeerConnection {
    conn: Connection,
    endpoint: PeerEndpoint,
    /// What the remote announced: given by the dialler, replaced by the remote's hello.
    remote: Arc<Mutex<Option<PeerAddr>>>,
    started: Instant,
}

/// A request read by [`PeerConnection::accept_request`]; answer it with
/// [`PeerRequest::respond`].
#[derive(Debug)]
pub struct PeerRequest {
    body: Vec<u8>,
    send: iroh::endpoint::SendStream,
}

impl PeerRequest {
    /// The request's bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Writes the answer and ends the stream.
    pub async fn respond(mut self, body: &[u8]) -> Result<()> {
        self.send
            .write_all(body)
            .await
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        self.send
            .finish()
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))
    }
}

impl PeerConnection {
    pub(crate) fn start(
        conn: Connection,
        endpoint: PeerEndpoint,
        remote: Option<PeerAddr>,
    ) -> PeerConnection {
        let pc = PeerConnection {
            conn,
            endpoint,
            remote: Arc::new(Mutex::new(remote)),
            started: Instant::now(),
        };
        // The hello, both ways, in the background (bounded).
        let (send_side, read_side) = (pc.clone(), pc.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(HELLO_TIMEOUT, send_side.send_hello()).await;
        });
        tokio::spawn(async move {
            let _ = tokio::time::timeout(HELLO_TIMEOUT, read_side.read_hello()).await;
        });
        pc
    }

    async fn send_hello(&self) -> Result<()> {
        let hello = serde_json::to_vec(&self.endpoint.endpoint_addr())
            .map_err(|e| TransportError::InvalidConfig(e.to_string()))?;
        let mut s = self
            .conn
            .open_uni()
            .await
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        s.write_all(&hello)
            .await
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        s.finish()
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))
    }

    async fn read_hello(&self) -> Result<()> {
        let mut r = self
            .conn
            .accept_uni()
            .await
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        let bytes = r
            .read_to_end(MAX_HELLO)
            .await
            .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
        match serde_json::from_slice::<PeerAddr>(&bytes) {
            Ok(addr) if addr.id == self.conn.remote_id() => {
                *self.remote.lock().expect("hello lock") = Some(addr);
            }
            Ok(addr) => tracing::warn!(
                peer = %self.conn.remote_id().fmt_short(),
                claimed = %addr.id.fmt_short(),
                "hello names another endpoint id; ignored"
            ),
            Err(e) => tracing::warn!(
                peer = %self.conn.remote_id().fmt_short(),
                "malformed hello ignored: {e}"
            ),
        }
        Ok(())
    }

    /// The remote's endpoint id (proven by the handshake).
    pub fn remote_id(&self) -> iroh::EndpointId {
        self.conn.remote_id()
    }

    /// What the remote announced about its addresses, if known yet.
    pub fn remote_announced(&self) -> Option<PeerAddr> {
        self.remote.lock().expect("hello lock").clone()
    }

    /// The underlying iroh connection (raw streams, stats).
    pub fn inner(&self) -> &Connection {
        &self.conn
    }

    /// Which path carries the data now (the selected path; see [`classify_path`]).
    pub fn path(&self) -> PathKind {
        let paths = self.conn.paths();
        let Some(selected) = paths.iter().find(|p| p.is_selected()) else {
            return PathKind::None;
        };
        let announced = self.remote_announced();
        classify_path(
            selected.remote_addr(),
            announced.as_ref(),
            &self.endpoint.endpoint_addr(),
        )
    }

    /// The remote address of the selected path, for logs.
    pub fn path_addr(&self) -> Option<TransportAddr> {
        let paths = self.conn.paths();
        let selected = paths.iter().find(|p| p.is_selected());
        selected.map(|p| p.remote_addr().clone())
    }

    /// How long ago the connection was established.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until the selected path is direct, at most `timeout`, and returns the path kind
    /// then (still [`PathKind::Relay`] if hole punching did not succeed in time).
    pub async fn wait_direct(&self, timeout: Duration) -> PathKind {
        use futures::StreamExt;
        let deadline = Instant::now() + timeout;
        let mut stream = self.conn.paths_stream();
        loop {
            let kind = self.path();
            if kind.is_direct() || Instant::now() >= deadline {
                return kind;
            }
            // A new snapshot when paths change; re-check at least every 200 ms (the hello
            // may arrive and change the classification).
            let step = (Instant::now() + Duration::from_millis(200)).min(deadline);
            if let Ok(None) = tokio::time::timeout_at(step, stream.next()).await {
                return self.path();
            }
        }
    }

    /// Sends `body` on a new bidirectional stream and reads the answer (at most
    /// `max_response` bytes), all within `timeout`.
    pub async fn request(
        &self,
        body: &[u8],
        max_response: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let exchange = async {
            let (mut send, mut recv) = self
                .conn
                .open_bi()
                .await
                .map_err(|e| map_connection_error(&e, self.endpoint.alpn(), false))?;
            send.write_all(body)
                .await
                .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
            send.finish()
                .map_err(|e| TransportError::ConnectionLost(e.to_string()))?;
            read_bounded(&mut recv, max_response).await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
    }

    /// The next request the remote sends (at most `max_request` bytes), or `None` once the
    /// remote closed the connection normally.
    pub async fn accept_request(&self, max_request: usize) -> Result<Option<PeerRequest>> {
        let (send, mut recv) = match self.conn.accept_bi().await {
            Ok(s) => s,
            Err(ConnectionError::ApplicationClosed(c)) if c.error_code == 0u32.into() => {
                return Ok(None)
            }
            Err(ConnectionError::LocallyClosed) => return Ok(None),
            Err(e) => return Err(map_connection_error(&e, self.endpoint.alpn(), false)),
        };
        let body = read_bounded(&mut recv, max_request).await?;
        Ok(Some(PeerRequest { body, send }))
    }

    /// Closes the connection with code 0 and `reason` (at most a few dozen bytes).
    pub fn close(&self, reason: &str) {
        self.conn.close(0u32.into(), reason.as_bytes());
    }

    /// Waits until the connection is closed and says why.
    pub async fn closed(&self) -> TransportError {
        let e = self.conn.closed().await;
        map_connection_error(&e, self.endpoint.alpn(), false)
    }
}

async fn read_bounded(recv: &mut iroh::endpoint::RecvStream, max: usize) -> Result<Vec<u8>> {
    recv.read_to_end(max).await.map_err(|e| match e {
        ReadToEndError::TooLong => TransportError::TooLarge { limit: max },
        other => TransportError::ConnectionLost(other.to_string()),
    })
}

/// TLS alert `no_application_protocol` (120) as a QUIC crypto error code.
const NO_APPLICATION_PROTOCOL: u8 = 120;

/// Maps a QUIC connection error to [`TransportError`]. `dialling`: the error ended a connect
/// attempt (a timeout then means unreachable).
pub(crate) fn map_connection_error(
    e: &ConnectionError,
    alpn: &[u8],
    dialling: bool,
) -> TransportError {
    let ours = String::from_utf8_lossy(alpn).into_owned();
    let no_alpn = TransportErrorCode::crypto(NO_APPLICATION_PROTOCOL);
    let is_crypto = |c: TransportErrorCode| (0x100..0x200).contains(&u64::from(c));
    let wrong = |detail: &str| TransportError::WrongProtocol {
        ours: ours.clone(),
        detail: detail.into(),
    };
    match e {
        ConnectionError::TransportError(t) if t.code == no_alpn => wrong(
            "the TLS handshake found no common ALPN: the peer speaks another peer protocol \
             version (or is not a Shoal node)",
        ),
        ConnectionError::ConnectionClosed(c) if c.error_code == no_alpn => wrong(
            "the peer refused our ALPN in the TLS handshake: it speaks another peer protocol \
             version",
        ),
        ConnectionError::TransportError(t) if is_crypto(t.code) => {
            TransportError::Authentication(t.to_string())
        }
        ConnectionError::ConnectionClosed(c) if is_crypto(c.error_code) => {
            TransportError::Authentication(c.to_string())
        }
        ConnectionError::VersionMismatch => wrong("no common QUIC version"),
        ConnectionError::ApplicationClosed(c) => TransportError::Refused(format!(
            "code {}: {}",
            c.error_code,
            String::from_utf8_lossy(&c.reason)
        )),
        ConnectionError::TimedOut if dialling => TransportError::Unreachable {
            peer: String::new(),
            detail: "no answer on any path (idle timeout)".into(),
        },
        ConnectionError::LocallyClosed => TransportError::Closed,
        other => TransportError::ConnectionLost(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::DirectAddr;

    fn addr(pairs: &[(AddrKind, &str)]) -> PeerAddr {
        let mut a = PeerAddr::new(iroh::SecretKey::from_bytes(&[3; 32]).public());
        a.addrs = pairs
            .iter()
            .map(|(kind, s)| DirectAddr {
                kind: *kind,
                addr: s.parse().unwrap(),
            })
            .collect();
        a
    }

    #[test]
    fn paths_are_classified_by_the_candidate_they_use() {
        let ip = |s: &str| TransportAddr::Ip(s.parse().unwrap());
        let remote = addr(&[
            (AddrKind::Local, "192.168.1.10:4000"),
            (AddrKind::Reflexive, "11.7.2.1:4000"),
            (AddrKind::Mapped, "11.7.2.1:5000"),
        ]);
        let public_remote = addr(&[(AddrKind::Local, "11.7.2.9:4000")]);
        let natted_me = addr(&[
            (AddrKind::Local, "192.168.2.10:6000"),
            (AddrKind::Reflexive, "11.7.2.2:6000"),
        ]);
        let public_me = addr(&[(AddrKind::Local, "11.7.2.3:6000")]);
        let relay = TransportAddr::Relay("https://11.7.1.1:3443".parse().unwrap());
        let cases = [
            (&relay, Some(&remote), &natted_me, PathKind::Relay),
            (
                &ip("192.168.1.10:4000"),
                Some(&remote),
                &natted_me,
                PathKind::Lan,
            ),
            (
                &ip("11.7.2.1:5000"),
                Some(&remote),
                &natted_me,
                PathKind::Mapped,
            ),
            (
                &ip("11.7.2.1:4000"),
                Some(&remote),
                &natted_me,
                PathKind::Punched,
            ),
            // A port only punching found (not announced).
            (
                &ip("11.7.2.1:4999"),
                Some(&remote),
                &natted_me,
                PathKind::Punched,
            ),
            (
                &ip("11.7.2.9:4000"),
                Some(&public_remote),
                &natted_me,
                PathKind::Direct,
            ),
            // We are public: the remote behind a NAT reached us without traversal.
            (
                &ip("11.7.2.1:4000"),
                Some(&remote),
                &public_me,
                PathKind::Direct,
            ),
            // Nothing known of the remote yet.
            (&ip("11.7.2.1:4000"), None, &natted_me, PathKind::Punched),
        ];
        for (path, announced, own, want) in cases {
            assert_eq!(classify_path(path, announced, own), want, "{path:?}");
        }
        assert!(PathKind::Mapped.is_direct() && !PathKind::Relay.is_direct());
        assert_eq!(PathKind::Punched.to_string(), "punched");
    }
}
