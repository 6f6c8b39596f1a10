//! The node's Prometheus metrics (names are a contract: dashboards and alerts read them).
//!
//! One [`Registry`] per node, so an app can embed several nodes.

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
pub use shoal_core::source::{FallbackReason, Provenance, Source};
use std::sync::atomic::AtomicU64;

/// What a fetch of a provider-signed digest list gave (`fetch::digest_list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestListResult {
    /// List and signature fetched, signature verified, list read: its digests are in use.
    Ok,
    /// The list or its signature could not be fetched (origin error, unreachable, too large),
    /// or the swarm's manifest URL is unknown.
    Missing,
    /// The signature does not verify with the configured key, or is not a signature.
    BadSignature,
    /// The signature verifies but the list is out of form (or over its bounds).
    Malformed,
}

impl DigestListResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestListResult::Ok => "ok",
            DigestListResult::Missing => "missing",
            DigestListResult::BadSignature => "bad_signature",
            DigestListResult::Malformed => "malformed",
        }
    }
}

impl EncodeLabelValue for DigestListResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Label set `{result}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    /// What the fetch gave.
    pub result: DigestListResult,
}

/// Label set `{source}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceLabel {
    /// Where bytes came from.
    pub source: Source,
}

impl EncodeLabelSet for SourceLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("source", self.source.as_str())].encode(encoder)
    }
}

/// Label set `{reason}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReasonLabel {
    /// Why the origin was used.
    pub reason: FallbackReason,
}

impl EncodeLabelSet for ReasonLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [("reason", self.reason.as_str())].encode(encoder)
    }
}

/// Label set `{path}`: a peer connection's path (`lan`, `direct`, `punched`, `mapped`,
/// `relay`, `none`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PathLabel {
    /// The path.
    pub path: &'static str,
}

/// Label set `{path,result}` of a peer connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PathResultLabel {
    /// The path it reached (`none` when it reached none).
    pub path: &'static str,
    /// `ok`, `no_direct_path`, `unreachable`, `version_mismatch`, `wrong_key`, `refused`,
    /// `lost` or `error`.
    pub result: &'static str,
}

/// Every metric of a node, cheap to clone (all handles are `Arc`s).
#[derive(Clone)]
pub struct NodeMetrics {
    /// `shoal_edge_bytes_total{source}`: bytes delivered to the player.
    pub bytes: Family<SourceLabel, Counter>,
    /// `shoal_edge_origin_bytes_total`: bytes fetched from the origin (segments, manifests,
    /// prefetches): what the CDN bills.
    pub origin_bytes: Counter,
    /// `shoal_edge_peer_bytes_total`: bytes fetched from peers.
    pub peer_bytes: Counter,
    /// `shoal_edge_uploaded_bytes_total`: bytes served to other peers.
    pub uploaded: Counter,
    /// `shoal_edge_offload_ratio`: p2p / (p2p + cdn) of player bytes since start.
    pub offload_ratio: Gauge<f64, AtomicU64>,
    /// `shoal_edge_segment_fetch_seconds{source}`: time to obtain a segment.
    pub fetch_seconds: Family<SourceLabel, Histogram>,
    /// `shoal_edge_fallbacks_total{reason}`: origin fetches of swarm segments, by reason.
    pub fallbacks: Family<ReasonLabel, Counter>,
    /// `shoal_edge_peers`: connected neighbours over all swarms.
    pub peers: Gauge,
    /// `shoal_edge_integrity_failures_total`: peer bytes that failed verification.
    pub integrity_failures: Counter,
    /// `shoal_edge_manifest_parse_failures_total`: manifests passed through unparsed.
    pub manifest_parse_failures: Counter,
    /// `shoal_edge_peer_failures_total`: peer transfers that failed or stalled.
    pub peer_failures: Counter,
    /// `shoal_edge_peers_banned_total`: neighbours banned for the session (bad bytes, or
    /// repeated false `have`s and stalls).
    pub peers_banned: Counter,
    /// `shoal_edge_swarms`: swarms this node is in.
    pub swarms: Gauge,
    /// `shoal_edge_tracker_errors_total`: announces that failed.
    pub tracker_errors: Counter,
    /// `shoal_edge_neighbours_excluded_total`: neighbours the tracker offered that were
    /// dropped because every address of theirs is excluded (by `exclude` or the swarm
    /// policy); counted at each announce that offers one.
    pub neighbours_excluded: Counter,
    /// `shoal_edge_peer_received_bytes_total`: segment bytes read from peers, finished
    /// transfers or not, verified or not: what the download cap meters.
    pub peer_received: Counter,
    /// `shoal_edge_digest_lists_total{result}`: fetches of provider-signed digest lists (one
    /// list and its signature each), by what they gave.
    pub digest_lists: Family<ResultLabel, Counter>,
    /// `shoal_edge_origin_completions_total`: peer transfers that ran out of time and were
    /// finished with a range request to the origin for the bytes still missing.
    pub origin_completions: Counter,
    /// `shoal_edge_peer_connections_total{path,result}` and `shoal_edge_peer_paths{path}`.
    pub paths: crate::peer::quic::PathMetrics,
    /// The `source="p2p"` and `source="cdn"` children of `bytes`, held so the hot path
    /// (every chunk streamed to a player) touches atomics only.
    delivered_p2p: Counter,
    delivered_cdn: Counter,
}

impl NodeMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let bytes = Family::<SourceLabel, Counter>::default();
        let delivered_p2p = bytes.get_or_create_owned(&SourceLabel {
            source: Source::P2p,
        });
        let delivered_cdn = bytes.get_or_create_owned(&SourceLabel {
            source: Source::Cdn,
        });
        let m = Self {
            bytes,
            delivered_p2p,
            delivered_cdn,
            origin_bytes: Counter::default(),
            peer_bytes: Counter::default(),
            uploaded: Counter::default(),
            offload_ratio: Gauge::default(),
            fetch_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            fallbacks: Family::default(),
            peers: Gauge::default(),
            integrity_failures: Counter::default(),
            manifest_parse_failures: Counter::default(),
            peer_failures: Counter::default(),
            swarms: Gauge::default(),
            peers_banned: Counter::default(),
            tracker_errors: Counter::default(),
            neighbours_excluded: Counter::default(),
            peer_received: Counter::default(),
            digest_lists: Family::default(),
            origin_completions: Counter::default(),
            paths: Default::default(),
        };
        let r = registry.sub_registry_with_prefix("shoal_edge");
        r.register(
            "bytes",
            "Bytes delivered to the player, by source",
            m.bytes.clone(),
        );
        r.register(
            "origin_bytes",
            "Bytes fetched from the origin CDN",
            m.origin_bytes.clone(),
        );
        r.register(
            "peer_bytes",
            "Bytes fetched from peers",
            m.peer_bytes.clone(),
        );
        r.register(
            "uploaded_bytes",
            "Bytes served to other peers",
            m.uploaded.clone(),
        );
        r.register(
            "offload_ratio",
            "Share of player bytes that came from peers since start",
            m.offload_ratio.clone(),
        );
        r.register(
            "segment_fetch_seconds",
            "Time to obtain a segment, by source",
            m.fetch_seconds.clone(),
        );
        r.register(
            "fallbacks",
            "Swarm segments fetched from the origin, by reason",
            m.fallbacks.clone(),
        );
        r.register("peers", "Connected neighbours", m.peers.clone());
        r.register(
            "origin_completions",
            "Peer transfers out of time, finished with a range request to the origin",
            m.origin_completions.clone(),
        );
        r.register(
            "integrity_failures",
            "Peer transfers whose bytes failed verification",
            m.integrity_failures.clone(),
        );
        r.register(
            "manifest_parse_failures",
            "Manifests passed through unchanged because they did not parse",
            m.manifest_parse_failures.clone(),
        );
        r.register(
            "peer_failures",
            "Peer transfers that failed or stalled",
            m.peer_failures.clone(),
        );
        r.register("swarms", "Swarms this node is in", m.swarms.clone());
        r.register(
            "peers_banned",
            "Neighbours banned for the session",
            m.peers_banned.clone(),
        );
        r.register(
            "tracker_errors",
            "Announces that failed",
            m.tracker_errors.clone(),
        );
        r.register(
            "neighbours_excluded",
            "Neighbours offered by the tracker and dropped because their addresses are excluded",
            m.neighbours_excluded.clone(),
        );
        r.register(
            "peer_received_bytes",
            "Segment bytes read from peers, complete transfers or not (what the download cap meters)",
            m.peer_received.clone(),
        );
        r.register(
            "peer_connections",
            "Peer connection attempts (peer protocol v2), by the path reached and the result",
            m.paths.attempts.clone(),
        );
        r.register(
            "peer_paths",
            "Open peer connections (peer protocol v2), by the path they use",
            m.paths.open.clone(),
        );
        r.register(
            "digest_lists",
            "Fetches of provider-signed digest lists, by result",
            m.digest_lists.clone(),
        );
        m
    }

    /// Counts `n` bytes delivered to the player from `source` and updates the ratio.
    pub fn delivered(&self, source: Source, n: u64) {
        match source {
            Source::P2p => self.delivered_split(n, 0),
            Source::Cdn => self.delivered_split(0, n),
        }
    }

    /// Counts the bytes `offset..offset + len` of a segment delivered to the player, each
    /// toward the source it came from.
    pub fn delivered_from(&self, provenance: Provenance, offset: u64, len: u64) {
        let p2p = provenance.p2p_bytes_in(offset, len);
        self.delivered_split(p2p, len - p2p);
    }

    fn delivered_split(&self, p2p: u64, cdn: u64) {
        if p2p > 0 {
            self.delivered_p2p.inc_by(p2p);
        }
        if cdn > 0 {
            self.delivered_cdn.inc_by(cdn);
        }
        let (p2p, cdn) = (self.delivered_p2p.get(), self.delivered_cdn.get());
        if p2p + cdn > 0 {
            self.offload_ratio.set(p2p as f64 / (p2p + cdn) as f64);
        }
    }

    /// Bytes delivered to the player from `source` since start.
    pub fn delivered_total(&self, source: Source) -> u64 {
        match source {
            Source::P2p => self.delivered_p2p.get(),
            Source::Cdn => self.delivered_cdn.get(),
        }
    }

    /// Counts an origin fetch of a swarm segment.
    pub fn fallback(&self, reason: FallbackReason) {
        self.fallbacks.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// Renders `registry` in the OpenMetrics text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_segment_counts_its_prefix_as_p2p_whatever_slice_the_player_asks_for() {
        let split = Provenance::Split { p2p: 600 };
        // The whole segment: 600 from peers, the rest from the origin.
        assert_eq!(split.p2p_bytes_in(0, 1000), 600);
        // A range inside the prefix, straddling it, and past it.
        assert_eq!(split.p2p_bytes_in(100, 200), 200);
        assert_eq!(split.p2p_bytes_in(500, 300), 100);
        assert_eq!(split.p2p_bytes_in(700, 300), 0);
        assert_eq!(Provenance::Whole(Source::P2p).p2p_bytes_in(10, 20), 20);
        assert_eq!(Provenance::Whole(Source::Cdn).p2p_bytes_in(10, 20), 0);
        assert_eq!(split.as_str(), "mixed");
    }

    #[test]
    fn delivered_bytes_of_a_split_segment_go_to_both_sources() {
        let m = NodeMetrics::new(&mut Registry::default());
        m.delivered_from(Provenance::Split { p2p: 750 }, 0, 1000);
        m.delivered(Source::Cdn, 1000);
        assert_eq!(m.delivered_total(Source::P2p), 750);
        assert_eq!(m.delivered_total(Source::Cdn), 1250);
        assert_eq!(m.offload_ratio.get(), 0.375);
    }
}
