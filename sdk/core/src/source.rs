//! Where a segment's bytes came from, and why the origin was asked: the labels of the node's
//! byte and fallback metrics, and the `x-shoal-source` header.

/// Where the bytes of a segment came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// From another peer.
    P2p,
    /// From the origin CDN.
    Cdn,
}

/// Where the bytes of one segment came from: all from one source, or the first `p2p` bytes
/// from a peer and the rest from the origin (a peer transfer that ran out of time, finished
/// with a range request instead of fetched again whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// Every byte from this source.
    Whole(Source),
    /// The first `p2p` bytes from a peer, the rest from the origin.
    Split {
        /// Length of the prefix that came from the peer.
        p2p: u64,
    },
}

impl Provenance {
    /// How many of the bytes `offset..offset + len` of the segment came from peers.
    pub fn p2p_bytes_in(self, offset: u64, len: u64) -> u64 {
        match self {
            Provenance::Whole(Source::P2p) => len,
            Provenance::Whole(Source::Cdn) => 0,
            Provenance::Split { p2p } => p2p.saturating_sub(offset).min(len),
        }
    }

    /// The value of the `x-shoal-source` header: `p2p`, `cdn` or `mixed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provenance::Whole(s) => s.as_str(),
            Provenance::Split { .. } => "mixed",
        }
    }
}

impl From<Source> for Provenance {
    fn from(s: Source) -> Self {
        Provenance::Whole(s)
    }
}

/// Why a segment was fetched from the origin rather than a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackReason {
    /// No neighbour announced the segment before the deadline.
    NoPeer,
    /// This node was chosen by rendezvous hashing to fetch the segment from the origin first.
    Seeder,
    /// The swarm's peer transfers are slower than the stream, and this node's idle uplink
    /// fetched a fresh segment from the origin to pass it on (`fetch::capacity`).
    Supply,
    /// A peer transfer failed or stalled and no time was left for another peer.
    PeerFailed,
    /// The bytes a peer sent did not match the trusted digest.
    Integrity,
    /// P2P is off (by policy, or no tracker yet).
    P2pOff,
    /// A peer had the bytes but no trusted digest could be had to verify them.
    Unverifiable,
}

impl Source {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::P2p => "p2p",
            Source::Cdn => "cdn",
        }
    }
}

impl FallbackReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::NoPeer => "no_peer",
            FallbackReason::Seeder => "seeder",
            FallbackReason::Supply => "supply",
            FallbackReason::PeerFailed => "peer_failed",
            FallbackReason::Integrity => "integrity",
            FallbackReason::P2pOff => "p2p_off",
            FallbackReason::Unverifiable => "unverifiable",
        }
    }
}
