//! The tracker's Prometheus metrics (names are a contract: dashboards read them).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shoal_proto::{ByteCounters, ReportReason};
use std::fmt::Write;

/// How an announce ended; the `result` label of `shoal_tracker_announces_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum AnnounceResult {
    /// Accepted.
    Ok,
    /// Refused as malformed or out of bounds (400, 413, 415).
    Invalid,
    /// Wrong `peer_key`, or the peer is banned from the swarm (403).
    Forbidden,
    /// Missing or invalid access token (401).
    Unauthorized,
    /// Peer id in use in another swarm (409).
    Conflict,
    /// The store failed (503).
    Error,
}

const RESULTS: [AnnounceResult; 6] = [
    AnnounceResult::Ok,
    AnnounceResult::Invalid,
    AnnounceResult::Forbidden,
    AnnounceResult::Unauthorized,
    AnnounceResult::Conflict,
    AnnounceResult::Error,
];

const SOURCES: [ByteSource; 3] = [ByteSource::P2p, ByteSource::Cdn, ByteSource::Upload];

impl AnnounceResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Invalid => "invalid",
            Self::Forbidden => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::Conflict => "conflict",
            Self::Error => "error",
        }
    }
}

impl EncodeLabelValue for AnnounceResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Where reported bytes went; the `source` label of `shoal_tracker_reported_bytes_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum ByteSource {
    /// Delivered to players from peers.
    P2p,
    /// Delivered to players from the CDN.
    Cdn,
    /// Uploaded to other peers.
    Upload,
}

impl EncodeLabelValue for ByteSource {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::P2p => "p2p",
            Self::Cdn => "cdn",
            Self::Upload => "upload",
        })
    }
}

/// How a digest request ended; the `result` label of `shoal_tracker_digest_requests_total`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum DigestResult {
    /// Answered from the cache (or from a fetch another request started).
    Hit,
    /// Answered after this request's own origin fetch.
    Miss,
    /// Refused before any fetch: bad key, origin not allowed, not a member (4xx).
    Refused,
    /// The origin has no such segment (404).
    NotFound,
    /// The origin failed, or the segment is too large (502).
    OriginError,
}

const DIGEST_RESULTS: [DigestResult; 5] = [
    DigestResult::Hit,
    DigestResult::Miss,
    DigestResult::Refused,
    DigestResult::NotFound,
    DigestResult::OriginError,
];

impl EncodeLabelValue for DigestResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Refused => "refused",
            Self::NotFound => "not_found",
            Self::OriginError => "origin_error",
        })
    }
}

const REASONS: [ReportReason; 4] = [
    ReportReason::Integrity,
    ReportReason::FalseHave,
    ReportReason::Stall,
    ReportReason::Flood,
];

/// A report reason as a label value.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct Reason(ReportReason);

impl EncodeLabelValue for Reason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self.0 {
            ReportReason::Integrity => "integrity",
            ReportReason::FalseHave => "false_have",
            ReportReason::Stall => "stall",
            ReportReason::Flood => "flood",
        })
    }
}

/// `reason` label of `shoal_tracker_reports_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Reason,
}

/// Kinds of store failure, the `kind` label of `shoal_tracker_store_errors_total`
/// (see `StoreError::failure_kind`).
pub const STORE_ERROR_KINDS: [&str; 5] = ["unreachable", "timeout", "script", "data", "other"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DigestLabel {
    result: DigestResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: AnnounceResult,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: ByteSource,
}

/// Every metric the tracker exports, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    peers: Gauge,
    swarms: Gauge,
    /// One handle per `result`, in `AnnounceResult` order: no label lookup per announce.
    announces: [Counter; 6],
    /// `p2p`, `cdn`, `upload`.
    reported_bytes: [Counter; 3],
    announce_duration: Histogram,
    leaves: Counter,
    expired_peers: Counter,
    /// In `DigestResult` order.
    digest_requests: [Counter; 5],
    digest_origin_fetches: Counter,
    digest_origin_bytes: Counter,
    /// In `REASONS` order.
    reports: [Counter; 4],
    banned_peers: Gauge,
    /// In `STORE_ERROR_KINDS` order.
    store_errors: [Counter; 5],
    /// In `PathCounters::fields` order.
    peer_connections: [Counter; 6],
}

/// The `path` label of `shoal_tracker_peer_connections_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let peers = Gauge::default();
        let swarms = Gauge::default();
        let announces = Family::<ResultLabel, Counter>::default();
        let reported_bytes = Family::<SourceLabel, Counter>::default();
        // 50 µs .. ~1.6 s, twice as wide per bucket: fine below a millisecond where we aim.
        let announce_duration = Histogram::new((0..16).map(|i| 0.000_05 * f64::from(1u32 << i)));
        let leaves = Counter::default();
        let expired_peers = Counter::default();
        registry.register(
            "shoal_tracker_peers",
            "Live peers (announced within two intervals)",
            peers.clone(),
        );
        registry.register(
            "shoal_tracker_swarms",
            "Swarms with at least one live peer",
            swarms.clone(),
        );
        registry.register(
            "shoal_tracker_announces",
            "Announces answered, by result",
            announces.clone(),
        );
        registry.register(
            "shoal_tracker_reported_bytes",
            "Sum of the byte counters peers reported, by where the bytes came from or went",
            reported_bytes.clone(),
        );
        registry.register(
            "shoal_tracker_announce_duration_seconds",
            "Time to answer an announce, from request body to response",
            announce_duration.clone(),
        );
        registry.register(
            "shoal_tracker_leaves",
            "Peers that left with a valid leave",
            leaves.clone(),
        );
        registry.register(
            "shoal_tracker_expired_peers",
            "Peers dropped because they stopped announcing",
            expired_peers.clone(),
        );
        let digest_requests = Family::<DigestLabel, Counter>::default();
        let digest_origin_fetches = Counter::default();
        let digest_origin_bytes = Counter::default();
        let reports = Family::<ReasonLabel, Counter>::default();
        let banned_peers = Gauge::default();
        registry.register(
            "shoal_tracker_digest_requests",
            "Digest requests answered, by result",
            digest_requests.clone(),
        );
        registry.register(
            "shoal_tracker_digest_origin_fetches",
            "Requests the digest service sent to origins",
            digest_origin_fetches.clone(),
        );
        registry.register(
            "shoal_tracker_digest_origin_bytes",
            "Body bytes the digest service received from origins",
            digest_origin_bytes.clone(),
        );
        registry.register(
            "shoal_tracker_reports",
            "Accepted reports of misbehaving peers, by reason",
            reports.clone(),
        );
        registry.register(
            "shoal_tracker_banned_peers",
            "Peers banned from a swarm now",
            banned_peers.clone(),
        );
        let store_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "shoal_tracker_store_errors",
            "Store operations that failed (Redis unreachable, timed out, ...), by kind",
            store_errors.clone(),
        );
        let store_errors =
            STORE_ERROR_KINDS.map(|kind| store_errors.get_or_create(&KindLabel { kind }).clone());
        let peer_connections = Family::<PathLabel, Counter>::default();
        registry.register(
            "shoal_tracker_peer_connections",
            "Peer connections the fleet's nodes reported opening, by path (lan, direct, punched, \
             mapped, relay), and attempts that found no usable path (failed)",
            peer_connections.clone(),
        );
        let peer_connections = shoal_proto::PathCounters::default()
            .fields()
            .map(|(path, _)| peer_connections.get_or_create(&PathLabel { path }).clone());
        let digest_requests = DIGEST_RESULTS.map(|result| {
            digest_requests
                .get_or_create(&DigestLabel { result })
                .clone()
        });
        let reports = REASONS.map(|reason| {
            reports
                .get_or_create(&ReasonLabel {
                    reason: Reason(reason),
                })
                .clone()
        });
        // Creating every label value up front also makes dashboards see zeros, not gaps.
        let announces =
            RESULTS.map(|result| announces.get_or_create(&ResultLabel { result }).clone());
        let reported_bytes = SOURCES.map(|source| {
            reported_bytes
                .get_or_create(&SourceLabel { source })
                .clone()
        });
        Self {
            registry,
            peers,
            swarms,
            announces,
            reported_bytes,
            announce_duration,
            leaves,
            expired_peers,
            digest_requests,
            digest_origin_fetches,
            digest_origin_bytes,
            reports,
            banned_peers,
            store_errors,
            peer_connections,
        }
    }

    /// Counts one failed store operation of `kind` (one of [`STORE_ERROR_KINDS`]).
    pub fn store_error(&self, kind: &str) {
        let i = STORE_ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(STORE_ERROR_KINDS.len() - 1);
        self.store_errors[i].inc();
    }

    /// Counts one digest request.
    pub fn digest(&self, result: DigestResult) {
        self.digest_requests[result as usize].inc();
    }

    /// Counts one request to an origin.
    pub fn digest_origin_fetch(&self) {
        self.digest_origin_fetches.inc();
    }

    /// Counts body bytes received from an origin.
    pub fn digest_origin_bytes(&self, bytes: u64) {
        self.digest_origin_bytes.inc_by(bytes);
    }

    /// Counts one accepted report.
    pub fn peer_report(&self, reason: ReportReason) {
        let i = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        self.reports[i].inc();
    }

    /// Counts one announce and how long it took.
    pub fn announce(&self, result: AnnounceResult, seconds: f64) {
        self.announces[result as usize].inc();
        self.announce_duration.observe(seconds);
    }

    /// Adds an authorised peer's report to the fleet sums.
    pub fn report(&self, counters: &ByteCounters) {
        for (counter, bytes) in
            self.reported_bytes
                .iter()
                .zip([counters.p2p, counters.cdn, counters.upload])
        {
            if bytes > 0 {
                counter.inc_by(bytes);
            }
        }
    }

    /// Adds the peer connections a node reported.
    pub fn report_connections(&self, c: &shoal_proto::PathCounters) {
        for (counter, (_, n)) in self.peer_connections.iter().zip(c.fields()) {
            if n > 0 {
                counter.inc_by(n.into());
            }
        }
    }

    /// Counts one leave.
    pub fn leave(&self) {
        self.leaves.inc();
    }

    /// Counts peers dropped by a sweep.
    pub fn expired(&self, peers: u64) {
        self.expired_peers.inc_by(peers);
    }

    /// Sets the live peer, swarm and ban gauges.
    pub fn set_counts(&self, peers: u64, swarms: u64, bans: u64) {
        self.banned_peers
            .set(i64::try_from(bans).unwrap_or(i64::MAX));
        self.peers.set(i64::try_from(peers).unwrap_or(i64::MAX));
        self.swarms.set(i64::try_from(swarms).unwrap_or(i64::MAX));
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
