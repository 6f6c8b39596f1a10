//! The peer client: fetches segments from neighbours and follows their `haves` streams, over
//! QUIC to the endpoint id the tracker vouched for (peer protocol v2, [`super::quic`]) or TLS
//! over TCP pinned to the certificate it vouched for (v1).

use super::quic::{BoxIo, QuicPeers};
use super::{haves_path, segment_path, tls, DownloadLimits, NodeIdentity, PeerAddr, PeerError};
use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use futures::{Stream, StreamExt, TryStreamExt};
use http::{header, HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyDataStream, BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use shoal_proto::{HaveMsg, SegmentKey, SwarmId, MAX_HAVE_LINE};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

/// Largest response head (HTTP/2 header list) a neighbour may send.
const MAX_RESPONSE_HEAD_BYTES: u32 = 16 * 1024;

/// How the peer client behaves.
#[derive(Debug, Clone)]
pub struct PeerClientConfig {
    /// Longest wait for a connection to a neighbour (TCP and TLS handshake together).
    pub connect_timeout: Duration,
    /// Largest segment accepted from a peer; a larger `content-length` is refused unread.
    pub max_segment_bytes: u64,
    /// Longest wait for the response head of a `haves` request.
    pub haves_response_timeout: Duration,
    /// How often the connection is pinged (HTTP/2), also while idle, so a dead neighbour is
    /// noticed and its `haves` stream ends.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    pub keep_alive_timeout: Duration,
    /// A connection with no request or stream in flight is closed within one to two of
    /// these, so neighbours we stopped talking to do not keep sockets open.
    pub idle_timeout: Duration,
    /// Download cap, bound on transfers at once, and the count of segment bytes received.
    pub download: DownloadLimits,
}

impl Default for PeerClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            max_segment_bytes: 64 * 1024 * 1024,
            haves_response_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(15),
            keep_alive_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            download: DownloadLimits::default(),
        }
    }
}

/// A segment fetched from a peer, with what the scheduler needs to score the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The body, exactly `content-length` bytes. Not yet verified: check its digest before
    /// using it.
    pub bytes: Bytes,
    /// From sending the request to the last byte.
    pub elapsed: Duration,
}

impl Transfer {
    /// Observed throughput in bytes per second (infinite-free: a zero elapsed counts as 1 µs).
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes.len() as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }
}

type Sender = http2::SendRequest<Empty<Bytes>>;
type Connection = http2::Connection<TokioIo<BoxIo>, Empty<Bytes>, TokioExecutor>;

/// How the client reaches neighbours.
#[derive(Debug, Clone)]
enum Dialer {
    /// Peer protocol v1: TLS over TCP, presenting this identity.
    Tcp(NodeIdentity),
    /// Peer protocol v2: QUIC through this endpoint.
    Quic(QuicPeers),
}

/// One pooled connection. `lease` is cloned into every request and response in flight, so
/// the connection is idle exactly when the pool's own copy is the only one left.
#[derive(Debug, Clone)]
struct Conn {
    sender: Sender,
    lease: Arc<()>,
}

/// The pooled connection of one (address, fingerprint), if any. The lock is held while
/// connecting, so concurrent requests to a neighbour share one connection.
type Slot = Arc<tokio::sync::Mutex<Option<Conn>>>;
type Pool = DashMap<PeerAddr, Slot>;

/// Client side of the peer protocol. Clone freely: clones share one pooled HTTP/2-over-TLS
/// connection per (neighbour address, fingerprint), multiplexing fetches and `haves` streams
/// on it.
#[derive(Debug, Clone)]
pub struct PeerClient {
    dialer: Dialer,
    pool: Arc<Pool>,
    config: Arc<PeerClientConfig>,
}

impl PeerClient {
    /// A peer protocol v1 client with its own connection pool that presents `identity` to
    /// neighbours (TLS over TCP).
    pub fn new(config: PeerClientConfig, identity: NodeIdentity) -> Self {
        Self {
            dialer: Dialer::Tcp(identity),
            pool: Arc::new(DashMap::new()),
            config: Arc::new(config),
        }
    }

    /// A peer protocol v2 client dialling through `peers` (QUIC).
    pub fn quic(config: PeerClientConfig, peers: QuicPeers) -> Self {
        Self {
            dialer: Dialer::Quic(peers),
            pool: Arc::new(DashMap::new()),
            config: Arc::new(config),
        }
    }

    /// The pooled connection to `peer`, connecting if there is none or it died.
    async fn conn(&self, peer: &PeerAddr) -> Result<Conn, PeerError> {
        if peer.fingerprint.is_empty() {
            return Err(PeerError::NoFingerprint);
        }
        // Clone the slot out so no map guard is held across an await.
        let slot = self.pool.entry(peer.clone()).or_default().clone();
        let mut pooled = slot.lock().await;
        if let Some(c) = pooled.as_ref().filter(|c| !c.sender.is_closed()) {
            return Ok(c.clone());
        }
        let (sender, connection) = timeout(self.config.connect_timeout, self.connect(peer))
            .await
            .map_err(|_| PeerError::Connect("connect timed out".into()))??;
        let conn = Conn {
            sender,
            lease: Arc::new(()),
        };
        *pooled = Some(conn.clone());
        tokio::spawn(drive(
            connection,
            Arc::downgrade(&self.pool),
            peer.clone(),
            Arc::clone(&slot),
            Arc::downgrade(&conn.lease),
            self.config.idle_timeout,
        ));
        Ok(conn)
    }

    async fn connect(&self, peer: &PeerAddr) -> Result<(Sender, Connection), PeerError> {
        let io = match &self.dialer {
            Dialer::Tcp(identity) => self.connect_tcp(identity, peer).await?,
            Dialer::Quic(quic) => quic.dial(peer).await?,
        };
        http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(self.config.keep_alive_interval)
            .keep_alive_timeout(self.config.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .max_header_list_size(MAX_RESPONSE_HEAD_BYTES)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| PeerError::Connect(e.into()))
    }

    async fn connect_tcp(
        &self,
        identity: &NodeIdentity,
        peer: &PeerAddr,
    ) -> Result<BoxIo, PeerError> {
        if peer.quic.is_some() {
            return Err(PeerError::ProtocolMismatch(
                "the neighbour speaks peer protocol v2 (QUIC); this node speaks v1 (TCP)",
            ));
        }
        let tcp = TcpStream::connect(peer.addr)
            .await
            .map_err(|e| PeerError::Connect(e.into()))?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(peer = %peer.addr, error = %e, "set_nodelay failed");
        }
        let config =
            tls::client_config(identity, &peer.fingerprint).map_err(PeerError::TlsConfig)?;
        let name = ServerName::IpAddress(peer.addr.ip().into());
        let stream: TlsStream<TcpStream> = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(handshake_error)?;
        Ok(Box::new(stream))
    }

    /// Sends a GET; the response comes with the connection's lease, to be held while the body
    /// is read.
    async fn get(
        &self,
        peer: &PeerAddr,
        path: String,
        head_timeout: Duration,
        part: Option<(u64, u64)>,
    ) -> Result<(http::Response<Incoming>, Arc<()>), PeerError> {
        let uri: Uri = format!("https://{}{path}", peer.addr)
            .parse()
            .map_err(|e: http::uri::InvalidUri| PeerError::Request(e.into()))?;
        let mut req = Request::get(uri);
        if let Some((offset, len)) = part {
            let last = offset + len.max(1) - 1;
            req = req.header(header::RANGE, format!("bytes={offset}-{last}"));
        }
        let req = req.body(Empty::new()).map_err(PeerError::Request)?;
        let attempt = async {
            let Conn { mut sender, lease } = self.conn(peer).await?;
            sender
                .ready()
                .await
                .map_err(|e| PeerError::Transport(e.into()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| PeerError::Transport(e.into()))?;
            Ok::<_, PeerError>((resp, lease))
        };
        let (resp, lease) = timeout(head_timeout, attempt)
            .await
            .map_err(|_| PeerError::Stalled(head_timeout))??;
        match resp.status() {
            StatusCode::OK if part.is_none() => Ok((resp, lease)),
            StatusCode::PARTIAL_CONTENT if part.is_some() => Ok((resp, lease)),
            StatusCode::NOT_FOUND => Err(PeerError::NotFound),
            StatusCode::SERVICE_UNAVAILABLE => Err(PeerError::Busy {
                retry_after: retry_after(resp.headers()),
            }),
            s => Err(PeerError::Status(s)),
        }
    }

    /// Fetches a segment. Fails fast on 404/503; fails with [`PeerError::Stalled`] when the
    /// response head (after connecting) or any body progress takes longer than
    /// `stall_timeout`; refuses bodies over the configured maximum or whose length differs
    /// from `content-length`.
    pub async fn fetch(
        &self,
        peer: &PeerAddr,
        swarm: &SwarmId,
        key: &SegmentKey,
        stall_timeout: Duration,
    ) -> Result<Transfer, PeerError> {
        self.fetch_with(peer, swarm, key, stall_timeout, |_| {})
            .await
    }

    /// [`fetch`](Self::fetch), telling `progress` the announced length once the response head
    /// is accepted and then every piece of the body as it arrives (to relay it onward before
    /// the whole has arrived).
    pub async fn fetch_with(
        &self,
        peer: &PeerAddr,
        swarm: &SwarmId,
        key: &SegmentKey,
        stall_timeout: Duration,
        progress: impl FnMut(Progress<'_>),
    ) -> Result<Transfer, PeerError> {
        self.fetch_inner(peer, swarm, key, stall_timeout, None, progress)
            .await
    }

    /// Fetches `len` bytes of a segment from `offset` (one part of a segment fetched from
    /// several peers at once); the peer must answer 206 with exactly that many bytes.
    pub async fn fetch_part(
        &self,
        peer: &PeerAddr,
        swarm: &SwarmId,
        key: &SegmentKey,
        stall_timeout: Duration,
        offset: u64,
        len: u64,
    ) -> Result<Transfer, PeerError> {
        self.fetch_inner(peer, swarm, key, stall_timeout, Some((offset, len)), |_| {})
            .await
    }

    async fn fetch_inner(
        &self,
        peer: &PeerAddr,
        swarm: &SwarmId,
        key: &SegmentKey,
        stall_timeout: Duration,
        part: Option<(u64, u64)>,
        mut progress: impl FnMut(Progress<'_>),
    ) -> Result<Transfer, PeerError> {
        let _slot = self.config.download.slot().await;
        let start = Instant::now();
        let head_timeout = self.config.connect_timeout + stall_timeout;
        let (resp, _lease) = self
            .get(peer, segment_path(swarm, key), head_timeout, part)
            .await?;
        let expected = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(PeerError::BadContentLength)?;
        if let Some((_, len)) = part {
            if expected != len {
                return Err(PeerError::LengthMismatch {
                    expected: len,
                    received: expected,
                });
            }
        }
        if expected > self.config.max_segment_bytes {
            return Err(PeerError::TooLarge {
                len: expected,
                max: self.config.max_segment_bytes,
            });
        }
        progress(Progress::Started { len: expected });
        // Bounded by max_segment_bytes just above.
        let mut buf = BytesMut::with_capacity(expected as usize);
        let mut body = resp.into_body();
        loop {
            let frame = match timeout(stall_timeout, body.frame()).await {
                Err(_) => return Err(PeerError::Stalled(stall_timeout)),
                Ok(None) => break,
                Ok(Some(frame)) => frame.map_err(|e| PeerError::Transport(e.into()))?,
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing we use
            };
            let received = (buf.len() + data.len()) as u64;
            if received > expected {
                return Err(PeerError::LengthMismatch { expected, received });
            }
            // Waiting here, outside the stall timeout, is the cap: a slow peer is not blamed.
            self.config.download.admit(data.len()).await;
            buf.extend_from_slice(&data);
            progress(Progress::Data(&data));
        }
        if buf.len() as u64 != expected {
            return Err(PeerError::LengthMismatch {
                expected,
                received: buf.len() as u64,
            });
        }
        Ok(Transfer {
            bytes: buf.freeze(),
            elapsed: start.elapsed(),
        })
    }

    /// Subscribes to a neighbour's haves for `swarm`: a snapshot first, then updates, until
    /// the neighbour closes the stream or the connection dies. A line over
    /// [`MAX_HAVE_LINE`] or a malformed line yields one error and ends the stream, so a lying
    /// peer cannot make us buffer without bound.
    pub async fn haves(
        &self,
        peer: &PeerAddr,
        swarm: &SwarmId,
    ) -> Result<impl Stream<Item = Result<HaveMsg, PeerError>> + Send + 'static, PeerError> {
        let (resp, lease) = self
            .get(
                peer,
                haves_path(swarm),
                self.config.connect_timeout + self.config.haves_response_timeout,
                None,
            )
            .await?;
        let data = BodyDataStream::new(resp.into_body()).map_err(std::io::Error::other);
        // The lease rides along: the connection is in use while the stream lives.
        Ok(haves_from_body(data).map(move |item| {
            let _lease = &lease;
            item
        }))
    }
}

/// Reads the body of a `haves` response: one [`HaveMsg`] per line. A line over
/// [`MAX_HAVE_LINE`], a malformed line or a failing body yields one error and ends the stream.
/// Pure over its input, so it can be driven with any byte chunks (tests, fuzzing).
pub fn haves_from_body<S, E>(body: S) -> impl Stream<Item = Result<HaveMsg, PeerError>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<std::io::Error>,
{
    let lines = FramedRead::new(
        StreamReader::new(body),
        LinesCodec::new_with_max_length(MAX_HAVE_LINE),
    );
    lines
        .map(|line| match line {
            Ok(line) => HaveMsg::parse_line(line.as_bytes()).map_err(PeerError::MalformedHave),
            Err(e) => Err(line_error(e)),
        })
        .scan(false, |failed, item| {
            let out = if *failed {
                None
            } else {
                *failed = item.is_err();
                Some(item)
            };
            futures::future::ready(out)
        })
}

/// Drives one pooled connection until it ends or has been idle for `idle`, then forgets it.
async fn drive(
    connection: Connection,
    pool: Weak<Pool>,
    peer: PeerAddr,
    slot: Slot,
    lease: Weak<()>,
    idle: Duration,
) {
    tokio::pin!(connection);
    let mut tick = tokio::time::interval(idle);
    tick.reset();
    loop {
        tokio::select! {
            end = &mut connection => {
                if let Err(e) = end {
                    tracing::debug!(peer = %peer.addr, error = %e, "peer connection ended with an error");
                }
                break;
            }
            _ = tick.tick() => {
                // Checked under the slot lock: nobody can take a new lease meanwhile.
                let pooled = slot.lock().await;
                if lease.strong_count() <= 1 {
                    tracing::debug!(peer = %peer.addr, "closing idle peer connection");
                    forget(pooled, &pool, &peer, &slot, &lease);
                    return;
                }
            }
        }
    }
    forget(slot.lock().await, &pool, &peer, &slot, &lease);
}

/// Removes the connection behind `lease` from its slot, and the slot from the pool once empty.
fn forget(
    mut pooled: tokio::sync::MutexGuard<'_, Option<Conn>>,
    pool: &Weak<Pool>,
    peer: &PeerAddr,
    slot: &Slot,
    lease: &Weak<()>,
) {
    if pooled
        .as_ref()
        .is_some_and(|c| std::ptr::eq(Arc::as_ptr(&c.lease), lease.as_ptr()))
    {
        *pooled = None;
    }
    if let (None, Some(pool)) = (pooled.as_ref(), pool.upgrade()) {
        pool.remove_if(peer, |_, s| Arc::ptr_eq(s, slot));
    }
}

/// Our verifier refuses a certificate other than the pinned one, or one whose key did not sign
/// the handshake; tell that apart from other handshake failures.
fn handshake_error(e: std::io::Error) -> PeerError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(err @ rustls::Error::InvalidCertificate(_)) => PeerError::WrongKey(err.clone()),
        _ => PeerError::Tls(e),
    }
}

fn line_error(e: LinesCodecError) -> PeerError {
    match e {
        LinesCodecError::MaxLineLengthExceeded => PeerError::HaveLineTooLong,
        // The codec reports bytes that are not UTF-8 as InvalidData; anything else is the
        // connection failing underneath.
        LinesCodecError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            PeerError::MalformedHave(shoal_proto::HaveParseError::Json(serde_json::Error::io(e)))
        }
        LinesCodecError::Io(e) => PeerError::Transport(e.into()),
    }
}

/// What [`PeerClient::fetch_with`] reports while a body arrives.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The peer accepted the request and will send this many bytes.
    Started {
        /// The body's `content-length`.
        len: u64,
    },
    /// The next piece of the body.
    Data(&'a Bytes),
}

/// The wait a busy peer asked for: its millisecond header, else `retry-after` seconds;
/// bounded, since a peer could ask for anything.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let ms = headers
        .get(super::RETRY_AFTER_MS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    ms.or_else(|| retry_after_secs(headers))
        .map(|d| d.min(Duration::from_secs(60)))
}

fn retry_after_secs(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
