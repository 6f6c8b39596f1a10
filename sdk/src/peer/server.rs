//! The peer server: serves the node's cached segments and its `haves` stream to neighbours,
//! over QUIC streams whose handshake proved the neighbour's endpoint id (v2, [`super::quic`]),
//! or over TLS with a client certificate required of every neighbour (v1).

use super::quic::{BoxIo, QuicPeers};
use super::{identity::fingerprint_of, tls, NodeIdentity, PeerError, Route, RETRY_AFTER_MS};
use crate::cache::{CacheEvent, CacheEventKind, SegmentCache};
use bytes::{Bytes, BytesMut};
use dashmap::DashSet;
use futures::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use prometheus_client::metrics::counter::Counter;
use shoal_proto::{HaveMsg, SegmentKey, SwarmId, MAX_HAVE_LINE};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// Response bodies; an error resets the stream (a relayed segment that failed upstream).
type RespBody = BoxBody<Bytes, std::io::Error>;

/// Largest request head (HTTP/1.1 buffer, HTTP/2 header list) a client may send.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest chunk written per rate-limiter wait; small enough that concurrent uploads share
/// the cap fairly, large enough that waits stay cheap.
const MAX_UPLOAD_CHUNK: usize = 16 * 1024;
/// Smallest chunk written per rate-limiter wait.
const MIN_UPLOAD_CHUNK: usize = 1024;
/// Streams one client may open at once on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Lines due at once are sent together up to about this many bytes per DATA frame: a burst of
/// one tiny frame per line would trip HTTP/2 peers' small-frame flood protection (h2 answers
/// it with GOAWAY `ENHANCE_YOUR_CALM`, killing the whole connection).
const HAVES_FRAME_BYTES: usize = 64 * 1024;
/// Seconds a busy server asks the downloader to wait (`retry-after`) when all upload slots
/// are taken; the precise wait, in milliseconds, goes in [`RETRY_AFTER_MS`].
const BUSY_RETRY_AFTER_SECS: u32 = 1;
/// Under an upload cap, a new upload is admitted only while the bytes already admitted would
/// be sent within this long. Serving a few transfers at full speed beats many at a crawl: the
/// first finishes quickly and its downloader becomes one more source (a capped uplink shared
/// by ten downloaders finishes all ten late, and they all give up on P2P).
pub const ADMIT_BACKLOG: Duration = Duration::from_millis(250);
/// Shortest wait a busy answer asks for.
const MIN_BUSY_WAIT: Duration = Duration::from_millis(50);

/// How the peer server behaves. Every limit protects the node from its neighbours.
#[derive(Debug, Clone)]
pub struct PeerServerConfig {
    /// Total upload rate to all neighbours, in bytes per second; `None` is unlimited.
    pub upload_limit_bytes_per_sec: Option<u64>,
    /// Segment uploads in flight at once; one more gets 503 with `retry-after` at once.
    pub max_concurrent_uploads: usize,
    /// Open connections at once; connections beyond it are closed as soon as accepted.
    pub max_connections: usize,
    /// Bytes of segment bodies sent to peers (counted as they are handed to the connection).
    pub uploaded: Counter,
    /// How often an idle connection is pinged (HTTP/2) so dead peers are noticed.
    pub keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    pub keep_alive_timeout: Duration,
    /// How long an HTTP/1.1 client may take to send its request head.
    pub header_read_timeout: Duration,
    /// How long a client may take to complete the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long [`PeerServer::shutdown`] lets in-flight uploads finish.
    pub shutdown_grace: Duration,
    /// Addresses whose connections are closed as soon as accepted (the node's exclusion list).
    pub refused: super::Exclusions,
    /// Bytes of admitted uploads not yet sent under the upload cap; shared so that the node
    /// can tell whether its uplink would take one more upload now (see [`ADMIT_BACKLOG`]).
    pub backlog: Arc<AtomicU64>,
    /// Whether the node serves neighbours now (the node turns it off for download-only, on
    /// mobile data, offline). Turned off: new connections are refused, every request gets
    /// 404 at once, and `haves` streams end, so neighbours stop asking.
    pub serving: Arc<watch::Sender<bool>>,
}

impl Default for PeerServerConfig {
    fn default() -> Self {
        Self {
            upload_limit_bytes_per_sec: None,
            max_concurrent_uploads: 8,
            max_connections: 64,
            uploaded: Counter::default(),
            keep_alive_interval: Duration::from_secs(15),
            keep_alive_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            refused: super::Exclusions::default(),
            backlog: Arc::default(),
            serving: Arc::new(watch::channel(true).0),
        }
    }
}

/// State every request handler shares.
struct Shared {
    cache: SegmentCache,
    swarms: Arc<DashSet<SwarmId>>,
    uploads: Arc<Semaphore>,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// The upload cap, bytes per second, when there is one.
    rate: Option<u64>,
    /// Bytes of admitted uploads not yet handed to their connections.
    backlog: Arc<AtomicU64>,
    chunk: usize,
    uploaded: Counter,
    /// Turns true on shutdown; ends the otherwise endless `haves` streams.
    closing: watch::Receiver<bool>,
    /// Tells the `haves` streams when the uplink takes uploads again after a "busy".
    free: Arc<FreeSignal>,
    /// Whether the node serves neighbours now ([`PeerServerConfig::serving`]).
    serving: Arc<watch::Sender<bool>>,
}

impl Shared {
    fn new(
        cache: SegmentCache,
        swarms: Arc<DashSet<SwarmId>>,
        config: &PeerServerConfig,
        closing: watch::Receiver<bool>,
    ) -> Arc<Shared> {
        let (limiter, chunk) = match config.upload_limit_bytes_per_sec {
            Some(rate) => {
                let (quota, chunk) = upload_quota(rate);
                (Some(Arc::new(RateLimiter::direct(quota))), chunk)
            }
            None => (None, usize::MAX),
        };
        Arc::new(Shared {
            cache,
            swarms,
            uploads: Arc::new(Semaphore::new(config.max_concurrent_uploads)),
            limiter,
            rate: config.upload_limit_bytes_per_sec.filter(|r| *r > 0),
            backlog: config.backlog.clone(),
            chunk,
            uploaded: config.uploaded.clone(),
            closing,
            free: Arc::new(FreeSignal::new()),
            serving: config.serving.clone(),
        })
    }
}

/// Whether the uplink turned a downloader away since it last had room, and a counter that
/// moves each time it has room again after one: every `haves` stream then says `free`, so
/// neighbours waiting out a `retry-after` (computed as if the running upload would go to its
/// end) may come back as soon as the uplink is free.
#[derive(Debug)]
struct FreeSignal {
    refused: AtomicBool,
    generation: watch::Sender<u64>,
}

impl FreeSignal {
    fn new() -> Self {
        Self {
            refused: AtomicBool::new(false),
            generation: watch::channel(0).0,
        }
    }

    /// A downloader was answered "busy".
    fn refused(&self) {
        self.refused.store(true, Ordering::Release);
    }

    /// The uplink would admit an upload now.
    fn room(&self) {
        if self.refused.swap(false, Ordering::AcqRel) {
            self.generation.send_modify(|g| *g = g.wrapping_add(1));
        }
    }
}

/// A running peer server. Stops gracefully with [`PeerServer::shutdown`]; dropping it stops
/// accepting too, and lets open connections finish in the background.
#[derive(Debug)]
pub struct PeerServer {
    local_addr: SocketAddr,
    uploads: Arc<Semaphore>,
    closing: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl PeerServer {
    /// Binds `addr` and starts serving `cache` for the swarms in `swarms` (the node adds and
    /// removes swarms there as it joins and leaves them), presenting `identity` over TLS.
    pub async fn bind(
        addr: SocketAddr,
        cache: SegmentCache,
        swarms: Arc<DashSet<SwarmId>>,
        identity: &NodeIdentity,
        config: PeerServerConfig,
    ) -> Result<PeerServer, PeerError> {
        let acceptor =
            TlsAcceptor::from(tls::server_config(identity).map_err(PeerError::TlsConfig)?);
        let listener = TcpListener::bind(addr).await.map_err(PeerError::Bind)?;
        let local_addr = listener.local_addr().map_err(PeerError::Bind)?;
        let (closing, closing_rx) = watch::channel(false);
        let shared = Shared::new(cache, swarms, &config, closing_rx.clone());
        let uploads = shared.uploads.clone();
        let task = tokio::spawn(accept_loop(listener, acceptor, shared, config, closing_rx));
        Ok(PeerServer {
            local_addr,
            uploads,
            closing,
            task,
        })
    }

    /// Serves `cache` for the swarms in `swarms` to neighbours that connect to `quic`'s
    /// endpoint (peer protocol v2). `local_addr` is the endpoint's first bound socket.
    pub fn serve_quic(
        quic: QuicPeers,
        cache: SegmentCache,
        swarms: Arc<DashSet<SwarmId>>,
        config: PeerServerConfig,
    ) -> PeerServer {
        let local_addr = quic
            .endpoint()
            .bound_sockets()
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (closing, closing_rx) = watch::channel(false);
        let shared = Shared::new(cache, swarms, &config, closing_rx.clone());
        let uploads = shared.uploads.clone();
        let task = tokio::spawn(quic_accept_loop(quic, shared, config, closing_rx));
        PeerServer {
            local_addr,
            uploads,
            closing,
            task,
        }
    }

    /// The upload slots (`max_concurrent_uploads` permits; each running upload holds one).
    pub fn upload_slots(&self) -> Arc<Semaphore> {
        self.uploads.clone()
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends `haves` streams, and waits (up to the configured grace) for
    /// in-flight uploads to finish.
    pub async fn shutdown(self) {
        let _ = self.closing.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "peer server task failed");
        }
    }
}

/// The token bucket for `rate` bytes/s and the chunk size that fits its burst.
fn upload_quota(rate: u64) -> (Quota, usize) {
    let rate = NonZeroU32::new(u32::try_from(rate).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    // A burst of ~1/8 s keeps the cap tight. The floor keeps DATA frames from being so small
    // that the downloader's HTTP/2 flood protection fires (absurdly low caps burst a little).
    let chunk = (rate.get() as usize / 8).clamp(MIN_UPLOAD_CHUNK, MAX_UPLOAD_CHUNK);
    let burst = NonZeroU32::new(chunk as u32).unwrap_or(NonZeroU32::MIN);
    (Quota::per_second(rate).allow_burst(burst), chunk)
}

fn http_builder(config: &PeerServerConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .max_buf_size(MAX_HEADER_BYTES)
        .header_read_timeout(config.header_read_timeout)
        .timer(TokioTimer::new());
    b.http2()
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(config.keep_alive_interval)
        .keep_alive_timeout(config.keep_alive_timeout)
        .timer(TokioTimer::new());
    b
}

/// What both accept loops serve connections with: the HTTP builder, the connection cap, and
/// the watcher of connections for a graceful stop.
struct Serving {
    builder: Arc<auto::Builder<TokioExecutor>>,
    connections: Arc<Semaphore>,
    graceful: GracefulShutdown,
}

impl Serving {
    fn new(config: &PeerServerConfig) -> Serving {
        Serving {
            builder: Arc::new(http_builder(config)),
            connections: Arc::new(Semaphore::new(config.max_connections)),
            graceful: GracefulShutdown::new(),
        }
    }
}

/// Lets in-flight uploads finish, for at most `grace`.
async fn finish(graceful: GracefulShutdown, grace: Duration) {
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("peer server shutdown grace elapsed with uploads in flight");
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    config: PeerServerConfig,
    mut closing: watch::Receiver<bool>,
) {
    let Serving {
        builder,
        connections,
        graceful,
    } = Serving::new(&config);
    loop {
        let accepted = tokio::select! {
            // A dropped `PeerServer` closes the channel: stop as on shutdown.
            _ = closing.wait_for(|c| *c) => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "peer server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if config.refused.excludes(remote.ip()) {
            tracing::debug!(%remote, "peer connection refused: address excluded");
            continue;
        }
        if !*config.serving.borrow() {
            tracing::debug!(%remote, "peer connection refused: not serving neighbours now");
            continue;
        }
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!(%remote, "peer connection refused: at the connection cap");
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "set_nodelay failed");
        }
        tokio::spawn(serve_connection(
            Arc::clone(&builder),
            graceful.watcher(),
            acceptor.clone(),
            config.tls_handshake_timeout,
            tcp,
            Arc::clone(&shared),
            permit,
            remote,
        ));
    }
    drop(listener);
    finish(graceful, config.shutdown_grace).await;
}

/// The v2 accept loop: neighbours arrive authenticated, with their stream open
/// ([`QuicPeers::accept`]); each is served like a v1 connection after its TLS handshake.
async fn quic_accept_loop(
    quic: QuicPeers,
    shared: Arc<Shared>,
    config: PeerServerConfig,
    mut closing: watch::Receiver<bool>,
) {
    let Serving {
        builder,
        connections,
        graceful,
    } = Serving::new(&config);
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let acceptor = {
        let (quic, refused) = (quic.clone(), config.refused.clone());
        tokio::spawn(async move { quic.accept(&refused, tx).await })
    };
    loop {
        let accepted = tokio::select! {
            _ = closing.wait_for(|c| *c) => break,
            accepted = rx.recv() => accepted,
        };
        let Some(accepted) = accepted else { break };
        if !*config.serving.borrow() {
            tracing::debug!(client = %accepted.client, "peer connection refused: not serving neighbours now");
            continue;
        }
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!(client = %accepted.client, "peer connection refused: at the connection cap");
            continue;
        };
        let label = format!("quic/{}", accepted.path);
        tokio::spawn(serve_http(
            Arc::clone(&builder),
            graceful.watcher(),
            accepted.io,
            Arc::clone(&shared),
            permit,
            label,
            accepted.client,
        ));
    }
    acceptor.abort();
    finish(graceful, config.shutdown_grace).await;
    // Tells every neighbour the node is gone (bounded by iroh), so none waits out a timeout.
    let _ = tokio::time::timeout(Duration::from_secs(2), quic.close()).await;
}

/// Serves one accepted connection (run on its own task): TLS handshake within
/// `handshake_timeout`, then HTTP. The client's certificate fingerprint names the connection
/// in every log line about it.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    tcp: TcpStream,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    remote: SocketAddr,
) {
    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "peer TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "peer TLS handshake timed out");
            return;
        }
    };
    // Client authentication is mandatory, so a finished handshake always has a certificate.
    let client = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| fingerprint_of(cert))
        .unwrap_or_default();
    let io: BoxIo = Box::new(stream);
    serve_http(
        builder,
        watcher,
        io,
        shared,
        permit,
        remote.to_string(),
        client,
    )
    .await;
}

/// Serves the peer protocol's HTTP on one authenticated byte stream until it ends.
async fn serve_http(
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    io: BoxIo,
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
    remote: String,
    client: String,
) {
    tracing::debug!(%remote, %client, "peer connected");
    let service = hyper::service::service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(&shared, req)) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%remote, %client, error = %e, "peer connection ended with an error");
    }
    drop(permit);
}

fn status(code: StatusCode, message: &'static str) -> Response<RespBody> {
    let body = Full::new(Bytes::from_static(message.as_bytes())).map_err(|never| match never {});
    let mut r = Response::new(body.boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn handle(shared: &Shared, req: Request<Incoming>) -> Response<RespBody> {
    if req.method() != Method::GET {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    // The body is never read; refusing it keeps a client from parking data on us.
    if !req.body().is_end_stream() {
        return status(StatusCode::BAD_REQUEST, "request bodies are not accepted\n");
    }
    let route = match Route::parse(req.uri().path()) {
        Ok(r) => r,
        Err(code) => return status(code, "no such resource\n"),
    };
    if !*shared.serving.borrow() {
        return status(StatusCode::NOT_FOUND, "not serving neighbours now\n");
    }
    match route {
        Route::Haves(swarm) => {
            if !shared.swarms.contains(&swarm) {
                return status(StatusCode::NOT_FOUND, "not in this swarm\n");
            }
            haves_response(shared, swarm)
        }
        Route::Segment(swarm, key) => {
            if !shared.swarms.contains(&swarm) {
                return status(StatusCode::NOT_FOUND, "not in this swarm\n");
            }
            let part = match req.headers().get(header::RANGE) {
                None => None,
                Some(v) => match v.to_str().ok().and_then(super::parse_part) {
                    Some(p) => Some(p),
                    None => return status(StatusCode::RANGE_NOT_SATISFIABLE, "bad range\n"),
                },
            };
            let source = match shared.cache.get(&swarm, &key) {
                Some(bytes) => match part {
                    None => Source::Whole(bytes),
                    Some((offset, len)) => {
                        let end = offset.saturating_add(len);
                        if end > bytes.len() as u64 {
                            return status(StatusCode::RANGE_NOT_SATISFIABLE, "beyond the end\n");
                        }
                        Source::Whole(bytes.slice(offset as usize..end as usize))
                    }
                },
                // Parts are served from whole segments only; come back when it is.
                None if part.is_some() && shared.cache.partial(&swarm, &key).is_some() => {
                    // Not the uplink's doing: no `free` will follow.
                    return busy(MIN_BUSY_WAIT * 4);
                }
                None => match shared.cache.partial(&swarm, &key) {
                    Some(p) => Source::Arriving {
                        len: p.len(),
                        reader: p.reader(),
                        ready: Bytes::new(),
                    },
                    None => return status(StatusCode::NOT_FOUND, "segment not held\n"),
                },
            };
            let Ok(permit) = Arc::clone(&shared.uploads).try_acquire_owned() else {
                shared.free.refused();
                return busy(Duration::from_secs(BUSY_RETRY_AFTER_SECS.into()));
            };
            if let Err(wait) = admit(shared, source.len()) {
                shared.free.refused();
                return busy(wait);
            }
            let mut r = segment_response(shared, source, permit);
            if let Some((offset, len)) = part {
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                // The whole length is not needed by our client; `*` keeps this cheap.
                if let Ok(v) =
                    HeaderValue::from_str(&format!("bytes {offset}-{}/*", offset + len.max(1) - 1))
                {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            r
        }
    }
}

/// Admits an upload of `len` bytes under the upload cap, adding it to the backlog; or says how
/// long until the backlog has room.
fn admit(shared: &Shared, len: u64) -> Result<(), Duration> {
    let Some(rate) = shared.rate else {
        return Ok(());
    };
    let room = admit_room(rate);
    shared
        .backlog
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
            (b <= room).then_some(b + len)
        })
        .map(|_| ())
        .map_err(|b| Duration::from_secs_f64((b - room) as f64 / rate as f64).max(MIN_BUSY_WAIT))
}

/// The backlog, in bytes, under which an upload capped at `rate` bytes per second is
/// admitted: what the cap sends in [`ADMIT_BACKLOG`].
pub fn admit_room(rate: u64) -> u64 {
    (rate as f64 * ADMIT_BACKLOG.as_secs_f64()) as u64
}

/// 503 asking the downloader to come back after `wait`.
fn busy(wait: Duration) -> Response<RespBody> {
    let mut r = status(StatusCode::SERVICE_UNAVAILABLE, "busy\n");
    let h = r.headers_mut();
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    h.insert(
        RETRY_AFTER_MS,
        HeaderValue::from(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
    );
    r
}

/// What an upload sends: a cached segment, or one still arriving from a peer.
enum Source {
    /// Held whole (what is left to send).
    Whole(Bytes),
    /// Arriving: relayed as it comes, the last chunk only once verified.
    Arriving {
        /// The whole segment's length.
        len: u64,
        /// Reads what has arrived.
        reader: crate::cache::PartialReader,
        /// Read but not yet sent.
        ready: Bytes,
    },
}

impl Source {
    fn len(&self) -> u64 {
        match self {
            Source::Whole(b) => b.len() as u64,
            Source::Arriving { len, .. } => *len,
        }
    }

    /// The next piece of at most `max` bytes; `None` at the end.
    async fn next_piece(&mut self, max: usize) -> Option<Result<Bytes, std::io::Error>> {
        match self {
            Source::Whole(rest) if rest.is_empty() => None,
            Source::Whole(rest) => Some(Ok(rest.split_to(max.min(rest.len())))),
            Source::Arriving { reader, ready, .. } => {
                while ready.is_empty() {
                    match reader.next().await {
                        Ok(Some(chunk)) => *ready = chunk,
                        Ok(None) => return None,
                        Err(e) => return Some(Err(std::io::Error::other(e))),
                    }
                }
                Some(Ok(ready.split_to(max.min(ready.len()))))
            }
        }
    }
}

/// Sends a segment chunk by chunk, waiting for the shared token bucket before each chunk.
/// The upload slot is held until the last chunk is handed over or the client goes away.
fn segment_response(
    shared: &Shared,
    source: Source,
    permit: OwnedSemaphorePermit,
) -> Response<RespBody> {
    let len = source.len();
    struct Upload {
        source: Source,
        /// Bytes not yet handed over.
        left: u64,
        chunk: usize,
        limiter: Option<Arc<DefaultDirectRateLimiter>>,
        uploaded: Counter,
        /// The server's backlog when this upload was admitted under a cap; what is not sent
        /// leaves it when the upload ends, finished or not.
        backlog: Option<Arc<AtomicU64>>,
        /// The backlog under which another upload is admitted.
        room: u64,
        free: Arc<FreeSignal>,
        permit: Option<OwnedSemaphorePermit>,
    }
    impl Upload {
        /// `n` bytes of the backlog are gone (sent, or dropped with the upload).
        fn release(&self, n: u64) {
            if let Some(b) = &self.backlog {
                if b.fetch_sub(n, Ordering::AcqRel).saturating_sub(n) <= self.room {
                    self.free.room();
                }
            }
        }
    }
    impl Drop for Upload {
        fn drop(&mut self) {
            // The upload slot first, so that a downloader told `free` finds it open.
            self.permit.take();
            self.release(self.left);
            if self.backlog.is_none() {
                self.free.room();
            }
        }
    }
    let upload = Upload {
        source,
        left: len,
        chunk: shared.chunk,
        limiter: shared.limiter.clone(),
        uploaded: shared.uploaded.clone(),
        backlog: shared.rate.map(|_| shared.backlog.clone()),
        room: shared.rate.map_or(u64::MAX, admit_room),
        free: shared.free.clone(),
        permit: Some(permit),
    };
    let stream = futures::stream::unfold(upload, |mut up| async move {
        // `None` drops the permit before the end of stream is sent.
        let piece = match up.source.next_piece(up.chunk).await? {
            Ok(p) => p,
            Err(e) => {
                // Reset the stream once; nothing follows.
                up.source = Source::Whole(Bytes::new());
                return Some((Err(e), up));
            }
        };
        if let Some(limiter) = &up.limiter {
            let n = NonZeroU32::new(piece.len() as u32).unwrap_or(NonZeroU32::MIN);
            // Chunks never exceed the burst, so the bucket can always serve them.
            if let Err(e) = limiter.until_n_ready(n).await {
                tracing::error!(error = %e, "upload chunk exceeds the rate limiter's burst");
            }
        }
        let n = piece.len() as u64;
        up.uploaded.inc_by(n);
        up.left = up.left.saturating_sub(n);
        up.release(n);
        Some((Ok(Frame::data(piece)), up))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

fn ndjson_line(msg: &HaveMsg) -> Bytes {
    // These types always serialize; an empty line would be refused by the reader anyway.
    let mut v = serde_json::to_vec(msg).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// The snapshot as lines: one `snapshot` line as large as the line limit allows, then `have`
/// lines for the keys that did not fit.
fn snapshot_lines(keys: Vec<SegmentKey>) -> Vec<Bytes> {
    // Room for the envelope `{"t":"snapshot","segments":[]}` and the newline.
    let budget = MAX_HAVE_LINE - 64;
    let mut size = 0;
    let split = keys
        .iter()
        .position(|k| {
            // The key as a JSON string, plus its comma.
            size += serde_json::to_string(k.as_str()).map_or(usize::MAX / 2, |j| j.len()) + 1;
            size > budget
        })
        .unwrap_or(keys.len());
    let mut keys = keys;
    let rest = keys.split_off(split);
    let mut lines = vec![ndjson_line(&HaveMsg::Snapshot { segments: keys })];
    lines.extend(
        rest.into_iter()
            .map(|segment| ndjson_line(&HaveMsg::Have { segment })),
    );
    lines
}

/// State of one `haves` stream.
struct Haves {
    swarm: SwarmId,
    cache: SegmentCache,
    events: broadcast::Receiver<CacheEvent>,
    closing: watch::Receiver<bool>,
    /// Lines due before any further event (the snapshot).
    pending: std::vec::IntoIter<Bytes>,
    /// The cache is gone: send what is due, then end.
    done: bool,
    /// Moves when the uplink has room again after a "busy" (see [`FreeSignal`]).
    free: watch::Receiver<u64>,
    /// Turns false when the node stops serving neighbours: the stream ends.
    serving: watch::Receiver<bool>,
}

impl Haves {
    fn resync(&mut self, missed: u64) {
        tracing::debug!(swarm = %self.swarm, missed, "haves subscriber lagged; resending snapshot");
        self.pending = snapshot_lines(self.cache.keys(&self.swarm)).into_iter();
    }

    fn push_event(&self, e: CacheEvent, out: &mut BytesMut) {
        if e.swarm != self.swarm {
            return;
        }
        let msg = match e.kind {
            CacheEventKind::Have => HaveMsg::Have { segment: e.key },
            CacheEventKind::Lost => HaveMsg::Lost { segment: e.key },
        };
        out.extend_from_slice(&ndjson_line(&msg));
    }

    /// Appends every line already due, up to about one frame's worth, without waiting.
    fn drain_due(&mut self, out: &mut BytesMut) {
        while out.len() < HAVES_FRAME_BYTES {
            if let Some(line) = self.pending.next() {
                out.extend_from_slice(&line);
                continue;
            }
            match self.events.try_recv() {
                Ok(e) => self.push_event(e, out),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.resync(n),
                Err(broadcast::error::TryRecvError::Empty) => return,
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.done = true;
                    return;
                }
            }
        }
    }

    /// The next chunk of the stream: everything due now, or, if nothing is, the next change.
    async fn next_chunk(mut self) -> Option<(Bytes, Self)> {
        let mut out = BytesMut::new();
        loop {
            self.drain_due(&mut out);
            if !out.is_empty() {
                return Some((out.freeze(), self));
            }
            if self.done {
                return None;
            }
            let event = tokio::select! {
                _ = self.closing.wait_for(|c| *c) => return None,
                _ = self.serving.wait_for(|s| !*s) => return None,
                event = self.events.recv() => event,
                // The sender lives as long as the server, which outlives its streams.
                Ok(()) = self.free.changed() => {
                    out.extend_from_slice(&ndjson_line(&HaveMsg::Free));
                    continue;
                }
            };
            match event {
                Ok(e) => self.push_event(e, &mut out),
                Err(broadcast::error::RecvError::Lagged(n)) => self.resync(n),
                Err(broadcast::error::RecvError::Closed) => self.done = true,
            }
        }
    }
}

fn haves_response(shared: &Shared, swarm: SwarmId) -> Response<RespBody> {
    // Subscribe before taking the snapshot so no change falls between the two.
    let events = shared.cache.subscribe();
    let pending = snapshot_lines(shared.cache.keys(&swarm)).into_iter();
    let state = Haves {
        swarm,
        cache: shared.cache.clone(),
        events,
        closing: shared.closing.clone(),
        pending,
        done: false,
        free: shared.free.generation.subscribe(),
        serving: shared.serving.subscribe(),
    };
    let stream = futures::stream::unfold(state, Haves::next_chunk)
        .map(|chunk| Ok::<_, std::io::Error>(Frame::data(chunk)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_too_long_for_one_line_is_completed_by_have_lines() {
        let keys: Vec<SegmentKey> = (0..2000)
            .map(|i| SegmentKey::new(format!("{i:0>500}")).unwrap())
            .collect();
        let lines = snapshot_lines(keys.clone());
        assert!(lines.len() > 1);
        let mut seen = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            assert!(line.len() <= MAX_HAVE_LINE);
            match HaveMsg::parse_line(line.strip_suffix(b"\n").unwrap()).unwrap() {
                HaveMsg::Snapshot { segments } if i == 0 => seen.extend(segments),
                HaveMsg::Have { segment } if i > 0 => seen.push(segment),
                other => panic!("unexpected line {i}: {other:?}"),
            }
        }
        assert_eq!(seen, keys);
    }

    #[test]
    fn empty_snapshot_is_one_line() {
        let lines = snapshot_lines(Vec::new());
        assert_eq!(&lines[0][..], b"{\"t\":\"snapshot\",\"segments\":[]}\n");
        assert_eq!(lines.len(), 1);
    }

    #[test]
    fn upload_chunks_fit_the_burst() {
        for rate in [1, 7, 100, 256 * 1024, 10_000_000, u64::MAX] {
            let (quota, chunk) = upload_quota(rate);
            assert!(
                chunk >= 1 && chunk as u32 <= quota.burst_size().get(),
                "{rate}"
            );
        }
    }
}
