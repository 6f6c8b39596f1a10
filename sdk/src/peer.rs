//! The peer protocol: HTTP/2 between nodes, over QUIC (v2, the default: [`quic`]) or over
//! TLS over TCP (v1).
//!
//! Routes (ids are percent-encoded single path segments, since they hold `/` and `:`):
//! - `GET /p2p/v1/{swarm}/haves` — NDJSON stream of [`shoal_proto::HaveMsg`]: a `snapshot`
//!   line, then a `have` line per newly cached segment and a `lost` line per evicted one, until
//!   the client goes away. A snapshot too long for one line ([`shoal_proto::MAX_HAVE_LINE`])
//!   is completed by `have` lines; a server whose subscriber fell behind sends a fresh
//!   `snapshot`, which replaces everything the reader knew of that peer.
//! - `GET /p2p/v1/{swarm}/segments/{segment-key}` — the bytes with `content-length`, 404 at
//!   once if not held (or the swarm is not one the node is in), 503 with `retry-after` when
//!   the node is at its concurrent-upload cap.
//!
//! v1 runs over TLS 1.3 ([`tls`]): a client connects to a neighbour only if its certificate
//! has the fingerprint the tracker vouched for ([`PeerAddr`]), and a server requires every
//! client to present a certificate ([`identity::NodeIdentity`]). v2 runs on a QUIC stream whose
//! handshake proves the endpoint id the tracker vouched for, on a path found through home
//! routers ([`quic`]). A node speaks one version; neighbours of the other are skipped with a
//! reason, and a handshake across versions fails on the ALPN.
//!
//! [`server::PeerServer`] serves the node's [`crate::cache::SegmentCache`];
//! [`client::PeerClient`] fetches from and subscribes to neighbours.

pub mod client;
pub mod download_limits;
pub mod exclusions;
pub mod identity;
pub mod quic;
pub mod server;
pub mod tls;

pub use client::{PeerClient, PeerClientConfig, Transfer};
pub use download_limits::DownloadLimits;
pub use exclusions::Exclusions;
pub use identity::{IdentityError, NodeIdentity};
pub use server::{PeerServer, PeerServerConfig};

use http::StatusCode;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use shoal_core::scheduler::verdict::PeerFailure;
use shoal_proto::{HaveParseError, SegmentKey, SwarmId};
use std::time::Duration;

pub use shoal_core::swarm::PeerAddr;

/// Path prefix of every peer protocol v1 route.
pub const PATH_PREFIX: &str = "/p2p/v1/";

/// Longest request path the server looks at: the prefix plus both ids fully percent-encoded
/// (3 bytes per byte) and the route words fit with room to spare.
pub const MAX_PATH_LEN: usize = 4096;

/// The part a segment request asks for: `bytes=a-b` only (the one form this protocol's
/// client sends), as (offset, length). Anything else is `None`.
pub fn parse_part(range: &str) -> Option<(u64, u64)> {
    let (a, b) = range.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (b >= a).then(|| (a, b - a + 1))
}

/// Response header of a busy answer (503): how long to wait before asking again, in
/// milliseconds. `retry-after` only has whole seconds, far too coarse for a segment that
/// must arrive within a few.
pub const RETRY_AFTER_MS: &str = "x-shoal-retry-after-ms";

/// Everything but RFC 3986 unreserved characters is encoded, so `/` inside an id never
/// splits a path segment.
const ID_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(s: &str) -> percent_encoding::PercentEncode<'_> {
    percent_encoding::utf8_percent_encode(s, ID_ENCODE)
}

/// Path of a neighbour's `haves` stream.
pub fn haves_path(swarm: &SwarmId) -> String {
    format!("{PATH_PREFIX}{}/haves", encode(swarm.as_str()))
}

/// Path of a segment on a neighbour.
pub fn segment_path(swarm: &SwarmId, key: &SegmentKey) -> String {
    format!(
        "{PATH_PREFIX}{}/segments/{}",
        encode(swarm.as_str()),
        encode(key.as_str())
    )
}

/// A request the server understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /p2p/v1/{swarm}/haves`
    Haves(SwarmId),
    /// `GET /p2p/v1/{swarm}/segments/{segment-key}`
    Segment(SwarmId, SegmentKey),
}

impl Route {
    /// Parses a request path (without query). The error is the status to answer with.
    pub fn parse(path: &str) -> Result<Route, StatusCode> {
        if path.len() > MAX_PATH_LEN {
            return Err(StatusCode::URI_TOO_LONG);
        }
        let rest = path
            .strip_prefix(PATH_PREFIX)
            .ok_or(StatusCode::NOT_FOUND)?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [swarm, "haves"] => Ok(Route::Haves(decode(swarm, SwarmId::new)?)),
            [swarm, "segments", key] => Ok(Route::Segment(
                decode(swarm, SwarmId::new)?,
                decode(key, SegmentKey::new)?,
            )),
            _ => Err(StatusCode::NOT_FOUND),
        }
    }
}

fn decode<T, E>(segment: &str, new: fn(String) -> Result<T, E>) -> Result<T, StatusCode> {
    let s = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    new(s.into_owned()).map_err(|_| StatusCode::BAD_REQUEST)
}

/// Why a peer operation failed. [`PeerError::is_misbehaviour`] and
/// [`PeerError::is_retryable`] tell the scheduler how to score the peer; every failure of a
/// fetch means "get the segment elsewhere" (another peer or the origin).
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer server could not bind its listening socket.
    #[error("cannot bind the peer server: {0}")]
    Bind(#[source] std::io::Error),
    /// The TLS configuration could not be built from the node's identity (a bug).
    #[error("cannot set up TLS: {0}")]
    TlsConfig(#[source] rustls::Error),
    /// No connection to the peer (refused, unreachable or connect timeout).
    #[error("cannot connect to peer: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The tracker vouched for no key of this peer, so there is nothing to check its
    /// certificate against: we do not connect.
    #[error("no key fingerprint is known for the peer; refusing to connect")]
    NoFingerprint,
    /// The peer did not present the certificate the tracker vouched for, or could not prove it
    /// holds that certificate's key: an impostor, or a stale address now used by another node.
    #[error("peer's certificate is not the one vouched for: {0}")]
    WrongKey(#[source] rustls::Error),
    /// The TLS handshake failed for another reason (protocol error, peer refused us).
    #[error("TLS handshake with peer failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The neighbour speaks the other peer protocol version (its announced addresses are all
    /// of the other version's form). One side must be upgraded.
    #[error("peer protocol version mismatch: {0}")]
    ProtocolMismatch(&'static str),
    /// The QUIC handshake found no common ALPN: the neighbour runs another peer protocol
    /// version. One side must be upgraded.
    #[error("peer speaks another protocol version: {0}")]
    WrongVersion(#[source] shoal_transport::TransportError),
    /// The endpoint that answered could not prove it holds the endpoint id the tracker
    /// vouched for: an impostor, or a stale address now used by another node.
    #[error("peer is not the endpoint vouched for: {0}")]
    WrongEndpoint(#[source] shoal_transport::TransportError),
    /// The connection stayed on the relay past the wait for a direct path, and the relay
    /// carries no media (`relay_media` is off): the segment comes from elsewhere.
    #[error("no direct path to the peer within {0:?}; the relay carries no media")]
    NoDirectPath(Duration),
    /// The connection failed during the request or the body.
    #[error("peer connection failed: {0}")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Neither the response head nor body progress arrived within the stall timeout.
    #[error("peer stalled: no progress for {0:?}")]
    Stalled(Duration),
    /// The peer does not hold the segment (or is not in the swarm).
    #[error("peer does not hold the segment")]
    NotFound,
    /// The peer is at its upload cap; try elsewhere.
    #[error("peer is busy (retry after {retry_after:?})")]
    Busy {
        /// What the peer's `retry-after` asked for, if anything.
        retry_after: Option<Duration>,
    },
    /// The peer answered with a status the protocol does not use for this request.
    #[error("peer answered {0}")]
    Status(StatusCode),
    /// The segment response had no usable `content-length`.
    #[error("peer sent no valid content-length")]
    BadContentLength,
    /// The peer announced a body larger than we accept.
    #[error("peer offered {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Our limit.
        max: u64,
    },
    /// The body's length differs from its `content-length`.
    #[error("peer sent {received} bytes after announcing {expected}")]
    LengthMismatch {
        /// Announced length.
        expected: u64,
        /// Bytes received (at least; reading stops at the first excess byte).
        received: u64,
    },
    /// A `haves` line exceeded [`shoal_proto::MAX_HAVE_LINE`].
    #[error("peer sent a have line over {} bytes", shoal_proto::MAX_HAVE_LINE)]
    HaveLineTooLong,
    /// A `haves` line was not a valid [`shoal_proto::HaveMsg`].
    #[error("peer sent a malformed have line: {0}")]
    MalformedHave(#[source] HaveParseError),
    /// We could not build the request (a bug: ids are validated).
    #[error("cannot build peer request: {0}")]
    Request(#[source] http::Error),
}

impl PeerError {
    /// The peer broke the protocol (lied about lengths, sent garbage): score it down hard or
    /// drop it. Failures that honest peers also have (busy, evicted, slow, gone) are not.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            PeerError::BadContentLength
                | PeerError::TooLarge { .. }
                | PeerError::LengthMismatch { .. }
                | PeerError::HaveLineTooLong
                | PeerError::MalformedHave(_)
        )
    }

    /// The same peer may well succeed later (it was busy, slow, briefly unreachable, or has
    /// not got the segment yet). False for misbehaviour and for our own errors.
    pub fn is_retryable(&self) -> bool {
        match self {
            PeerError::Connect(_)
            | PeerError::Tls(_)
            | PeerError::Transport(_)
            | PeerError::Stalled(_)
            | PeerError::NotFound
            | PeerError::Busy { .. } => true,
            PeerError::Status(s) => s.is_server_error(),
            _ => false,
        }
    }

    /// The failure as the scheduler's rules weigh it (`shoal_core::scheduler::verdict`).
    pub fn failure(&self) -> PeerFailure {
        match self {
            PeerError::Busy { retry_after } => PeerFailure::Busy {
                retry_after: *retry_after,
            },
            PeerError::NotFound => PeerFailure::NotFound,
            PeerError::Stalled(_) => PeerFailure::Stalled,
            e if e.is_misbehaviour() => PeerFailure::Misbehaved,
            e => PeerFailure::Other {
                retryable: e.is_retryable(),
            },
        }
    }

    /// How long the peer asked us to wait before asking it again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PeerError::Busy { retry_after } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_slashes_and_colons_round_trip_through_paths() {
        let swarm = SwarmId::new("cdn.example.com/live/720p.m3u8#video:1").unwrap();
        let key = SegmentKey::new("seg/00042.ts?range=0-100%/x:y").unwrap();
        let p = segment_path(&swarm, &key);
        assert_eq!(p.matches('/').count(), 5, "{p}");
        assert_eq!(Route::parse(&p), Ok(Route::Segment(swarm.clone(), key)));
        assert_eq!(Route::parse(&haves_path(&swarm)), Ok(Route::Haves(swarm)));
    }

    #[test]
    fn hostile_paths_are_refused() {
        let long = format!("{PATH_PREFIX}{}/haves", "a".repeat(MAX_PATH_LEN));
        for (path, status) in [
            ("/", StatusCode::NOT_FOUND),
            ("/p2p/v1/", StatusCode::NOT_FOUND),
            ("/p2p/v1/s/haves/extra", StatusCode::NOT_FOUND),
            ("/p2p/v1/s/segments", StatusCode::NOT_FOUND),
            ("/p2p/v1/s/../segments/k", StatusCode::NOT_FOUND),
            ("/p2p/v2/s/haves", StatusCode::NOT_FOUND),
            ("/p2p/v1//haves", StatusCode::BAD_REQUEST),
            ("/p2p/v1/%FF/haves", StatusCode::BAD_REQUEST),
            ("/p2p/v1/a%20b/haves", StatusCode::BAD_REQUEST),
            ("/p2p/v1/s/segments/%00", StatusCode::BAD_REQUEST),
            (long.as_str(), StatusCode::URI_TOO_LONG),
        ] {
            assert_eq!(Route::parse(path), Err(status), "{path}");
        }
        // `..` is just an (unheld) key, never a file path.
        assert!(matches!(
            Route::parse("/p2p/v1/s/segments/.."),
            Ok(Route::Segment(_, _))
        ));
    }

    #[test]
    fn error_classes() {
        assert!(PeerError::TooLarge { len: 2, max: 1 }.is_misbehaviour());
        assert!(!PeerError::NotFound.is_misbehaviour());
        assert!(PeerError::Busy { retry_after: None }.is_retryable());
        assert_eq!(parse_part("bytes=0-0"), Some((0, 1)));
        assert_eq!(parse_part("bytes=10-19"), Some((10, 10)));
        for bad in [
            "bytes=5-4",
            "bytes=-5",
            "bytes=1-",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes= 0-1",
        ] {
            assert_eq!(parse_part(bad), None, "{bad}");
        }
        assert!(!PeerError::HaveLineTooLong.is_retryable());
        assert!(PeerError::Status(StatusCode::BAD_GATEWAY).is_retryable());
        assert!(!PeerError::Status(StatusCode::BAD_REQUEST).is_retryable());
    }
}
