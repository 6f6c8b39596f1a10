//! The peer client: fetches segments from neighbours and follows their `haves` streams.

use super::{haves_path, segment_path, PeerError};
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use http::{header, HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyDataStream, BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use shoal_proto::{HaveMsg, SegmentKey, SwarmId, MAX_HAVE_LINE};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{timeout, Instant};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

/// How the peer client behaves.
#[derive(Debug, Clone)]
pub struct PeerClientConfig {
    /// Longest wait for a TCP connection to a neighbour.
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
}

impl Default for PeerClientConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            max_segment_bytes: 64 * 1024 * 1024,
            haves_response_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(15),
            keep_alive_timeout: Duration::from_secs(10),
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

/// Client side of the peer protocol. Clone freely: clones share one pooled HTTP/2
/// connection per neighbour address, multiplexing fetches and `haves` streams on it.
#[derive(Debug, Clone)]
pub struct PeerClient {
    // The connector is where TLS plugs in later (a rustls connector over `HttpConnector`).
    http: Client<HttpConnector, Empty<Bytes>>,
    config: Arc<PeerClientConfig>,
}

impl PeerClient {
    /// A client with its own connection pool.
    pub fn new(config: PeerClientConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_keep_alive_interval(config.keep_alive_interval)
            .http2_keep_alive_timeout(config.keep_alive_timeout)
            .http2_keep_alive_while_idle(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Self {
            http,
            config: Arc::new(config),
        }
    }

    async fn get(
        &self,
        peer: SocketAddr,
        path: String,
        head_timeout: Duration,
    ) -> Result<http::Response<Incoming>, PeerError> {
        let uri: Uri = format!("http://{peer}{path}")
            .parse()
            .map_err(|e: http::uri::InvalidUri| PeerError::Request(e.into()))?;
        let req = Request::get(uri)
            .body(Empty::new())
            .map_err(PeerError::Request)?;
        let resp = timeout(head_timeout, self.http.request(req))
            .await
            .map_err(|_| PeerError::Stalled(head_timeout))?
            .map_err(|e| {
                if e.is_connect() {
                    PeerError::Connect(e.into())
                } else {
                    PeerError::Transport(e.into())
                }
            })?;
        match resp.status() {
            StatusCode::OK => Ok(resp),
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
        peer: SocketAddr,
        swarm: &SwarmId,
        key: &SegmentKey,
        stall_timeout: Duration,
    ) -> Result<Transfer, PeerError> {
        let start = Instant::now();
        let head_timeout = self.config.connect_timeout + stall_timeout;
        let resp = self
            .get(peer, segment_path(swarm, key), head_timeout)
            .await?;
        let expected = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(PeerError::BadContentLength)?;
        if expected > self.config.max_segment_bytes {
            return Err(PeerError::TooLarge {
                len: expected,
                max: self.config.max_segment_bytes,
            });
        }
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
            buf.extend_from_slice(&data);
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
        peer: SocketAddr,
        swarm: &SwarmId,
    ) -> Result<impl Stream<Item = Result<HaveMsg, PeerError>> + Send + 'static, PeerError> {
        let resp = self
            .get(
                peer,
                haves_path(swarm),
                self.config.connect_timeout + self.config.haves_response_timeout,
            )
            .await?;
        let data = BodyDataStream::new(resp.into_body()).map_err(std::io::Error::other);
        let lines = FramedRead::new(
            StreamReader::new(data),
            LinesCodec::new_with_max_length(MAX_HAVE_LINE),
        );
        Ok(lines
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
            }))
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

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
