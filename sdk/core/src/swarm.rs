//! A swarm's state as plain data: the segments its playlist lists, the neighbours the
//! tracker handed out, what each holds (its `haves`) and how well it served us, and the
//! estimates the scheduler reads (the player's buffer, origin fetch time, uplink capacity).
//!
//! Inputs are method calls with `now` (`learn_segments`, `peer_has`, `record_*`, ...);
//! [`SwarmState::decide`] turns the state into the scheduler's next step for one segment.
//! Methods whose input may unblock a waiting fetch return `true` when the caller should wake
//! its waiters. The SDK keeps one of these per swarm behind a short-held mutex and does the
//! I/O around it.

use crate::manifest::ByteRange;
use crate::scheduler::capacity::{self, Capacity};
use crate::scheduler::verdict::Verdict;
use crate::scheduler::{self, Candidate, Decision, PeerStats, Situation, Uplink};
use crate::source::{Provenance, Source};
use shoal_proto::{CandidateKind, PeerId, ReportReason, SegmentKey};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What the node knows of one segment of the swarm's playlist.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Absolute origin URL (query kept: it may carry the viewer's CDN token).
    pub url: url::Url,
    /// Byte range within `url`, for `EXT-X-BYTERANGE` segments.
    pub range: Option<ByteRange>,
    /// Media sequence number (orders segments for eviction of old state).
    pub sequence: u64,
    /// When this node first saw the segment in a playlist.
    pub revealed_at: Instant,
    /// The segment appeared at the live edge of a refresh (not in the first playlist seen), so
    /// some neighbour is probably fetching it right now: waiting for its `have` is worthwhile.
    pub fresh: bool,
    /// Media duration, when the manifest says (`EXTINF`, DASH `@d`).
    pub duration: Option<Duration>,
    /// Already handed to the player once (range requests of one segment count once).
    pub delivered: bool,
}

/// A segment as a manifest lists it, for [`Swarm::learn_segments`].
#[derive(Debug, Clone)]
pub struct NewSegment {
    /// Its key.
    pub key: SegmentKey,
    /// Absolute origin URL.
    pub url: url::Url,
    /// Byte range within `url`.
    pub range: Option<ByteRange>,
    /// Media sequence number.
    pub sequence: u64,
    /// Media duration, when known.
    pub duration: Option<Duration>,
}

/// How to reach a neighbour, and the key the tracker vouched for.
///
/// Peer protocol v1 (`quic: None`): the client connects over TCP to `addr` and accepts only
/// the certificate whose SHA-256 is `fingerprint`. Peer protocol v2 (`quic: Some`): the client
/// dials the endpoint whose id is `fingerprint` over QUIC at its candidates (`addr` is the
/// first of them) or through its relay, and the handshake proves the id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    /// The address exclusions and logs go by (v1: the peer server; v2: the first candidate).
    pub addr: SocketAddr,
    /// The vouched-for key, in hex: a certificate's SHA-256 (v1) or an endpoint id (v2).
    pub fingerprint: String,
    /// The v2 candidates and relay, when the neighbour speaks peer protocol v2.
    pub quic: Option<QuicAddr>,
}

impl PeerAddr {
    /// A v1 neighbour: a TCP peer server and its certificate's fingerprint.
    pub fn tcp(addr: SocketAddr, fingerprint: impl Into<String>) -> Self {
        PeerAddr {
            addr,
            fingerprint: fingerprint.into(),
            quic: None,
        }
    }
}

impl PeerAddr {
    /// Every IP this address may be dialled at (`addr` and the v2 candidates).
    pub fn ips(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        std::iter::once(self.addr.ip()).chain(
            self.quic
                .iter()
                .flat_map(|q| q.candidates.iter().map(|(_, a)| a.ip())),
        )
    }
}

/// A v2 neighbour's direct candidates (none of them excluded) and its relay.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuicAddr {
    /// UDP candidates with their kinds, in announced order.
    pub candidates: Vec<(CandidateKind, SocketAddr)>,
    /// Its relay's URL, if it announced one.
    pub relay: Option<String>,
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.quic {
            None => write!(f, "{} (key {})", self.addr, self.fingerprint),
            Some(q) => write!(
                f,
                "{} (endpoint {}, {} candidates{})",
                self.addr,
                self.fingerprint.get(..10).unwrap_or(&self.fingerprint),
                q.candidates.len(),
                if q.relay.is_some() { ", relay" } else { "" }
            ),
        }
    }
}

/// How long a member a connection failed to for a lasting reason is left alone
/// ([`SwarmState::record_unreachable`]).
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(60);

/// A neighbour: where it is, what it holds, how it served us.
#[derive(Debug, Clone)]
pub struct Neighbour {
    /// Its peer server and key.
    pub addr: PeerAddr,
    /// Segments it announced.
    pub haves: HashSet<SegmentKey>,
    /// Its record for the scheduler.
    pub stats: PeerStats,
}

impl Neighbour {
    /// A neighbour just connected: it holds nothing we know of and has no record.
    pub fn new(addr: PeerAddr) -> Self {
        Self {
            addr,
            haves: HashSet::new(),
            stats: PeerStats::default(),
        }
    }
}

/// The node's settings the scheduler's rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Origin seeders per live segment; 0 sizes them by the swarm
    /// ([`scheduler::seeders_for`]).
    pub origin_seeders: usize,
    /// Less time than this before the deadline is not worth a peer attempt.
    pub min_peer_time: Duration,
}

/// One question to [`SwarmState::decide`]: what next for `key`, at `now`.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// Now.
    pub now: Instant,
    /// When the segment must be on its way from the origin at the latest.
    pub deadline: Instant,
    /// The segment.
    pub key: &'a SegmentKey,
    /// The segment is in the cache.
    pub cached: bool,
    /// Neighbours already tried for this segment.
    pub tried: &'a HashSet<PeerId>,
    /// What this node's uplink is doing (for the seeding roles).
    pub uplink: Uplink,
}

/// The swarm's uplink capacity estimate crossed its threshold (for the driver to log).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapacityChange {
    /// Peer transfers now run slower than the stream plays.
    BecameShort {
        /// Transfer rate over stream rate.
        ratio: f64,
    },
    /// Peer transfers keep up with the stream again.
    Recovered {
        /// Transfer rate over stream rate.
        ratio: f64,
    },
}

/// A member the tracker offered in an announce answer, with the address this node would
/// connect to (the driver parses the addresses and applies its exclusions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Its peer id.
    pub peer: PeerId,
    /// `None`: every address it gave is excluded (drop it); `Some(None)`: none parses (a
    /// member, but nothing to connect to); `Some(Some(a))`: connect to `a`.
    pub addr: Option<Option<SocketAddr>>,
    /// Its key as the tracker vouched for it; empty when none.
    pub fingerprint: String,
    /// Its v2 candidates (after exclusions) and relay, when it speaks peer protocol v2.
    pub quic: Option<QuicAddr>,
}

impl Offer {
    fn peer_addr(&self, addr: SocketAddr) -> PeerAddr {
        PeerAddr {
            addr,
            fingerprint: self.fingerprint.clone(),
            quic: self.quic.clone(),
        }
    }
}

/// What an announce answer means for the neighbour set ([`SwarmState::handle_announce`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnnouncePlan {
    /// Members to connect to (the driver follows their `haves`).
    pub connect: Vec<(PeerId, PeerAddr)>,
    /// Offers every address of which is excluded.
    pub excluded: Vec<PeerId>,
    /// The neighbour that made way, and the newcomer that takes its place.
    pub rotated: Option<(PeerId, PeerId)>,
    /// Neighbours dropped because P2P is off or their address is now excluded.
    pub dropped: Vec<PeerId>,
}

/// A swarm's state (see the module doc).
#[derive(Debug)]
pub struct SwarmState {
    /// This node's peer id in the swarm (its place in the rendezvous rankings).
    pub me: PeerId,
    /// Segments of the playlist, by key.
    pub segments: HashMap<SegmentKey, SegmentInfo>,
    /// Keys by sequence number, to forget the oldest when the live window slides.
    pub by_sequence: BTreeMap<u64, SegmentKey>,
    /// Connected neighbours.
    pub neighbours: HashMap<PeerId, Neighbour>,
    /// Other members the tracker handed out (connected or not): the rendezvous universe.
    pub members: HashSet<PeerId>,
    /// Peers banned for this session (bad bytes).
    pub banned: HashSet<PeerId>,
    /// Members a connection to failed for a lasting reason (no direct path while the relay
    /// carries no media, another protocol version, another key), and when to try again:
    /// until then announces do not offer them as neighbours or count them as members.
    pub unreachable: HashMap<PeerId, Instant>,
    /// Trusted digests (SHA-256, size) of segments, as the tracker vouched for them (or, with a
    /// provider key configured, as the provider's signed digest list gives them).
    pub digests: HashMap<SegmentKey, ([u8; 32], u64)>,
    /// Where each cached segment came from, so cache hits count toward the right source.
    pub sources: HashMap<SegmentKey, Provenance>,
    /// The manifest (media playlist or MPD) this swarm's segments were last learned from,
    /// as the origin URL: where its signed digest list is found.
    pub manifest_url: Option<url::Url>,
    /// Whether the tracker allows P2P here; false until the first successful announce.
    pub p2p_allowed: bool,
    /// The secret the tracker handed out for our peer id.
    pub peer_key: Option<String>,
    /// The playlist said `EXT-X-ENDLIST` (VOD or ended event).
    pub ended: bool,
    /// Target duration of the playlist.
    pub target_duration: Duration,
    /// Neighbours are still being discovered (first announce, or their first `haves`
    /// snapshots, pending): a fetch may wait for them within its budget.
    pub discovering: bool,
    /// `haves` snapshots still expected from neighbours connected by the first announce.
    pub pending_snapshots: usize,
    /// When the player's buffer runs dry if no more media arrives: each segment handed to it
    /// adds its duration (from now, if it had run dry). Players do not tell a proxy their
    /// buffer, so this is an estimate from what was delivered, and a low one for a player
    /// that paused (which only makes P2P waits shorter, never a stall longer).
    pub player_dry_at: Option<Instant>,
    /// Smoothed time an origin segment fetch took, seconds.
    pub origin_secs: Option<f64>,
    /// When a segment last appeared at the live edge (from any playlist load).
    pub last_fresh_at: Option<Instant>,
    /// Segments are not fetched in parts from several peers before this instant: a split
    /// fetch failed its digest, and only whole transfers tell which peer lied.
    pub no_split_until: Option<Instant>,
    /// Whether one peer transfer runs as fast as the stream plays (see [`capacity`]).
    pub capacity: Capacity,
}

/// When a node that is not among a fresh segment's origin seeders stops waiting for a
/// neighbour to hold it at all (its seeders left or never saw it) and fetches it from the
/// origin: a target duration after it appeared here (the seeders' players refresh the playlist
/// at other moments, up to a target duration later), plus a step per rank behind the seeders,
/// so that one missing seeder is replaced by the next in rank rather than by everyone.
fn orphan_deadline(
    info: &SegmentInfo,
    rank: usize,
    origin_seeders: usize,
    target: Duration,
) -> Instant {
    let behind = rank.saturating_sub(origin_seeders) as u32 + 1;
    info.revealed_at + target + target.mul_f64(0.5) * behind.min(4)
}

/// What a stand-in seeder waits, beyond twice an origin fetch, for a seeder's `have`.
const STAND_IN_SLACK: Duration = Duration::from_millis(100);

/// Segments remembered beyond the live window (a player a little behind still gets P2P).
const KEEP_BEHIND: usize = 64;

impl SwarmState {
    /// A swarm with no segments and no neighbours yet; `discovering` while a tracker is
    /// expected to hand out neighbours.
    pub fn new(me: PeerId, discovering: bool) -> Self {
        Self {
            me,
            segments: HashMap::new(),
            by_sequence: BTreeMap::new(),
            neighbours: HashMap::new(),
            members: HashSet::new(),
            banned: HashSet::new(),
            unreachable: HashMap::new(),
            digests: HashMap::new(),
            sources: HashMap::new(),
            manifest_url: None,
            p2p_allowed: false,
            peer_key: None,
            ended: false,
            target_duration: Duration::from_secs(6),
            discovering,
            pending_snapshots: 0,
            player_dry_at: None,
            origin_secs: None,
            last_fresh_at: None,
            no_split_until: None,
            capacity: Capacity::default(),
        }
    }

    /// Learns the segments of a playlist load at `now`. Returns the keys that are new at the
    /// live edge (for prefetch). The first load of a swarm marks nothing fresh.
    pub fn learn_segments(
        &mut self,
        now: Instant,
        segs: impl IntoIterator<Item = NewSegment>,
        ended: bool,
        target_duration: Duration,
    ) -> Vec<SegmentKey> {
        let first_load = self.segments.is_empty();
        self.ended = ended;
        self.target_duration = target_duration;
        let mut new = Vec::new();
        for NewSegment {
            key,
            url,
            range,
            sequence,
            duration,
        } in segs
        {
            if let Some(info) = self.segments.get_mut(&key) {
                // Keep the newest URL: the viewer's token may have been renewed.
                info.url = url;
                continue;
            }
            let fresh = !first_load && !ended;
            self.segments.insert(
                key.clone(),
                SegmentInfo {
                    url,
                    range,
                    sequence,
                    revealed_at: now,
                    fresh,
                    duration,
                    delivered: false,
                },
            );
            self.by_sequence.insert(sequence, key.clone());
            if fresh {
                new.push(key);
            }
        }
        if !new.is_empty() {
            self.last_fresh_at = Some(now);
        }
        // Forget segments far behind the window.
        let len = self.by_sequence.len();
        if !ended && len > KEEP_BEHIND * 2 {
            let drop: Vec<u64> = self
                .by_sequence
                .keys()
                .take(len - KEEP_BEHIND * 2)
                .copied()
                .collect();
            for seq in drop {
                if let Some(k) = self.by_sequence.remove(&seq) {
                    self.segments.remove(&k);
                    self.sources.remove(&k);
                    self.digests.remove(&k);
                }
            }
        }
        new
    }

    /// The segments after `key` in playlist order, at most `n` (VOD read-ahead).
    pub fn following(&self, key: &SegmentKey, n: usize) -> Vec<SegmentKey> {
        let Some(seq) = self.segments.get(key).map(|i| i.sequence) else {
            return Vec::new();
        };
        self.by_sequence
            .range(seq + 1..)
            .take(n)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Records that `peer` holds `keys`. True when `peer` is a neighbour (wake waiters).
    pub fn peer_has(&mut self, peer: &PeerId, keys: impl IntoIterator<Item = SegmentKey>) -> bool {
        let Some(n) = self.neighbours.get_mut(peer) else {
            return false;
        };
        n.haves.extend(keys);
        true
    }

    /// `peer` sent a fresh snapshot of what it holds: it replaces what it announced before.
    pub fn peer_snapshot(
        &mut self,
        peer: &PeerId,
        keys: impl IntoIterator<Item = SegmentKey>,
    ) -> bool {
        if let Some(n) = self.neighbours.get_mut(peer) {
            n.haves.clear();
        }
        self.peer_has(peer, keys)
    }

    /// A neighbour that answered "busy" says its uplink takes uploads again: it may be asked
    /// at once rather than after the wait it asked for. True when that changed anything.
    pub fn peer_free(&mut self, peer: &PeerId) -> bool {
        self.neighbours
            .get_mut(peer)
            .is_some_and(|n| n.stats.busy_until.take().is_some())
    }

    /// Records that `peer` dropped `key`.
    pub fn peer_lost(&mut self, peer: &PeerId, key: &SegmentKey) {
        if let Some(n) = self.neighbours.get_mut(peer) {
            n.haves.remove(key);
        }
    }

    /// One awaited neighbour snapshot arrived or will never come; ends discovery after the
    /// last. True when discovery ended now.
    pub fn snapshot_settled(&mut self) -> bool {
        self.pending_snapshots = self.pending_snapshots.saturating_sub(1);
        let done = self.discovering && self.pending_snapshots == 0;
        if done {
            self.discovering = false;
        }
        done
    }

    /// Where the cached bytes of `key` came from (the origin when not recorded).
    pub fn provenance(&self, key: &SegmentKey) -> Provenance {
        self.sources
            .get(key)
            .copied()
            .unwrap_or(Provenance::Whole(Source::Cdn))
    }

    /// The scheduler's next step for `ask.key`, from the swarm's current state, and the
    /// address of the neighbour to fetch from when it says [`Decision::Peer`].
    pub fn decide(&self, ask: &Ask<'_>, rules: &Rules) -> (Decision, Option<PeerAddr>) {
        let Ask {
            now,
            deadline,
            key,
            cached,
            tried,
            uplink,
        } = *ask;
        let candidates: Vec<Candidate<'_>> = self
            .neighbours
            .iter()
            .filter(|(_, n)| n.haves.contains(key))
            .map(|(p, n)| Candidate {
                peer: p,
                stats: &n.stats,
            })
            .collect();
        let info = self.segments.get(key);
        let rank = scheduler::origin_rank(key, &self.me, self.members.iter());
        let members = self.members.len() + 1;
        let origin_seeders = scheduler::seeders_for(rules.origin_seeders, members);
        let fresh = info.is_some_and(|i| i.fresh);
        let orphan_deadline = info
            .map(|i| orphan_deadline(i, rank, origin_seeders, self.target_duration))
            .unwrap_or(deadline);
        // Supplying is for the segment just published, which every member still lacks.
        let short = self.capacity.short()
            && fresh
            && rank < capacity::supply_ranks(members, self.capacity.ratio());
        let role =
            scheduler::seed_role(rank, origin_seeders, uplink, short).filter(|_| !self.discovering);
        let situation = Situation {
            now,
            deadline,
            orphan_deadline,
            cached,
            p2p_allowed: self.p2p_allowed,
            supply: role == Some(scheduler::SeedRole::Supply),
            seed_at: match role {
                None => None,
                Some(scheduler::SeedRole::Always | scheduler::SeedRole::Supply) => Some(now),
                // Long enough for an earlier seeder's origin fetch and its `have` to arrive.
                Some(scheduler::SeedRole::StandIn) => Some(
                    info.map_or(now, |i| i.revealed_at)
                        + Duration::from_secs_f64(self.origin_secs.unwrap_or(0.25) * 2.0)
                        + STAND_IN_SLACK,
                ),
            },
            have_expected: self.discovering || (fresh && !self.neighbours.is_empty()),
            candidates: &candidates,
            tried,
            min_peer_time: rules.min_peer_time,
            key,
        };
        let d = scheduler::decide(&situation);
        let addr = match &d {
            Decision::Peer(p) => self.neighbours.get(p).map(|n| n.addr.clone()),
            _ => None,
        };
        (d, addr)
    }

    /// Holders of `key` that could be asked at `now` (not banned, busy, backing off or in
    /// `tried`), best first, with their address and expected rate. None while split fetches
    /// are off ([`SwarmState::no_split_until`]).
    pub fn idle_holders(
        &self,
        key: &SegmentKey,
        now: Instant,
        tried: &HashSet<PeerId>,
    ) -> Vec<(PeerId, PeerAddr, f64)> {
        if self.no_split_until.is_some_and(|t| now < t) {
            return Vec::new();
        }
        let mut v: Vec<(f64, PeerId, PeerAddr, f64)> = self
            .neighbours
            .iter()
            .filter(|(p, n)| {
                n.haves.contains(key)
                    && !n.stats.banned
                    && !tried.contains(*p)
                    && !n.stats.in_backoff(now)
                    && !n.stats.is_busy(now)
            })
            .map(|(p, n)| {
                (
                    n.stats.score(),
                    p.clone(),
                    n.addr.clone(),
                    n.stats.expected_bps(),
                )
            })
            .collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0));
        v.into_iter().map(|(_, p, a, r)| (p, a, r)).collect()
    }

    /// How long a prefetch of a fresh live segment may wait for peers: until about when a
    /// player a few segments behind the live edge needs it, less the time an origin fetch
    /// takes. A player's own request for it sets a tighter deadline from its buffer.
    pub fn prefetch_deadline(&self, key: &SegmentKey) -> Option<Instant> {
        let info = self.segments.get(key)?;
        Some(info.revealed_at + self.target_duration * 2)
    }

    /// The deadline for a player's request of a segment at `now`: P2P may take what the
    /// player's buffer holds, less an origin fetch (twice its usual time) and `margin`, and
    /// never more than `max`. An empty buffer (startup, after a stall) means the origin at
    /// once unless the segment is already cached or arriving.
    pub fn player_deadline(&self, now: Instant, margin: Duration, max: Duration) -> Instant {
        let buffer = self
            .player_dry_at
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let origin = Duration::from_secs_f64(self.origin_secs.unwrap_or(0.25) * 2.0);
        now + buffer.saturating_sub(origin + margin).min(max)
    }

    /// Records that the player got `key` at `now` (its estimated buffer grows by its length).
    pub fn delivered_to_player(&mut self, now: Instant, key: &SegmentKey) {
        let target = self.target_duration;
        let Some(info) = self.segments.get_mut(key) else {
            return;
        };
        if std::mem::replace(&mut info.delivered, true) {
            return;
        }
        let length = info.duration.unwrap_or(target);
        let from = self.player_dry_at.map_or(now, |t| t.max(now));
        self.player_dry_at = Some(from + length);
    }

    /// Takes an announce answer: the tracker's policy (`p2p`), our key, and the members it
    /// offered. Neighbours it returns in the plan as rotated or dropped are already removed
    /// from the state; the driver stops following them and connects the plan's new ones.
    /// `excludes` is the node's exclusion list merged with the swarm policy's.
    ///
    /// Rotation keeps the neighbour graph mixing. Nodes choose their neighbours and nobody
    /// chooses a node whose list is full, so without it the first nodes of a swarm end up the
    /// neighbours of everyone (always busy) and the last ones of nobody (their uplinks idle).
    /// With a full list, the neighbour that answered "busy" most since the last rotation
    /// makes way for an offered member we do not follow yet.
    pub fn handle_announce(
        &mut self,
        now: Instant,
        p2p: bool,
        peer_key: String,
        offers: &[Offer],
        max_peers: usize,
        excludes: impl Fn(std::net::IpAddr) -> bool,
    ) -> AnnouncePlan {
        self.p2p_allowed = p2p;
        self.peer_key = Some(peer_key);
        let mut plan = AnnouncePlan::default();
        let mut pairs = Vec::new();
        self.unreachable.retain(|_, until| *until > now);
        for o in offers {
            if self.banned.contains(&o.peer)
                || o.peer == self.me
                || self.unreachable.contains_key(&o.peer)
            {
                continue;
            }
            let Some(addr) = o.addr else {
                plan.excluded.push(o.peer.clone());
                continue;
            };
            self.members.insert(o.peer.clone());
            let room = self.neighbours.len() + plan.connect.len() < max_peers;
            // Without a vouched-for key there is nothing to check its certificate against.
            if room && !self.neighbours.contains_key(&o.peer) && !o.fingerprint.is_empty() {
                if let Some(addr) = addr {
                    plan.connect.push((o.peer.clone(), o.peer_addr(addr)));
                }
            }
            pairs.push(o);
        }
        if !self.discovering && plan.connect.is_empty() && self.neighbours.len() >= max_peers {
            let busiest = self
                .neighbours
                .iter()
                .filter(|(_, n)| n.stats.busy_answers > 0)
                .max_by_key(|(_, n)| n.stats.busy_answers)
                .map(|(id, _)| id.clone());
            let newcomer = pairs.iter().find_map(|o| {
                let fresh = !self.neighbours.contains_key(&o.peer) && !o.fingerprint.is_empty();
                let addr = o.addr.flatten()?;
                fresh.then(|| (o.peer.clone(), o.peer_addr(addr)))
            });
            // The counts start again after a rotation only: the tracker offers a random few
            // members, and when none of them is new the next announce's offer may be.
            if let (Some(busiest), Some(newcomer)) = (busiest, newcomer) {
                self.neighbours.remove(&busiest);
                plan.rotated = Some((busiest, newcomer.0.clone()));
                plan.connect.push(newcomer);
                for n in self.neighbours.values_mut() {
                    n.stats.busy_answers = 0;
                }
            }
        }
        plan.dropped = self
            .neighbours
            .iter()
            .filter(|(_, n)| !p2p || n.addr.ips().any(&excludes))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &plan.dropped {
            self.neighbours.remove(id);
            if p2p {
                self.members.remove(id);
            }
        }
        plan
    }

    /// A connection to `peer` failed for a lasting reason at `now`: it is neither a neighbour
    /// nor a member until [`UNREACHABLE_BACKOFF`] has passed (each retry of a pair with no
    /// direct path costs a relay handshake and a wait for a path that will not open).
    pub fn record_unreachable(&mut self, peer: &PeerId, now: Instant) {
        self.neighbours.remove(peer);
        self.members.remove(peer);
        self.unreachable
            .insert(peer.clone(), now + UNREACHABLE_BACKOFF);
    }

    /// Records a peer transfer that carried `bytes` over `since_first_byte` (finished or cut
    /// at a deadline), for the swarm's capacity estimate.
    pub fn record_transfer_rate(
        &mut self,
        bytes: u64,
        since_first_byte: Duration,
    ) -> Option<CapacityChange> {
        let was = self.capacity.short();
        self.capacity.record_transfer(bytes, since_first_byte);
        self.capacity_change(was)
    }

    /// Records that `key` weighs `bytes`: with its duration, a sample of the stream's rate.
    pub fn record_segment_size(&mut self, key: &SegmentKey, bytes: u64) -> Option<CapacityChange> {
        let duration = self.segments.get(key).and_then(|i| i.duration)?;
        let was = self.capacity.short();
        self.capacity.record_segment(bytes, duration);
        self.capacity_change(was)
    }

    fn capacity_change(&self, was: bool) -> Option<CapacityChange> {
        let ratio = self.capacity.ratio().unwrap_or(0.0);
        match (was, self.capacity.short()) {
            (false, true) => Some(CapacityChange::BecameShort { ratio }),
            (true, false) => Some(CapacityChange::Recovered { ratio }),
            _ => None,
        }
    }

    /// Records how long an origin segment fetch took.
    pub fn record_origin_time(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        self.origin_secs = Some(match self.origin_secs {
            Some(old) => old + 0.2 * (secs - old),
            None => secs,
        });
    }

    /// Marks a transfer from `peer` as started.
    pub fn transfer_started(&mut self, peer: &PeerId) {
        if let Some(n) = self.neighbours.get_mut(peer) {
            n.stats.in_flight += 1;
        }
    }

    /// Records that a transfer from `peer` was given up for want of time (not the peer's
    /// fault: our deadline came).
    pub fn transfer_abandoned(&mut self, peer: &PeerId) {
        if let Some(n) = self.neighbours.get_mut(peer) {
            n.stats.in_flight = n.stats.in_flight.saturating_sub(1);
        }
    }

    /// Records the outcome of a transfer from `peer` at `now`: bytes and time taken, or a
    /// failure.
    pub fn record_transfer(
        &mut self,
        peer: &PeerId,
        now: Instant,
        outcome: Result<(u64, Duration), ()>,
    ) {
        if let Some(n) = self.neighbours.get_mut(peer) {
            n.stats.in_flight = n.stats.in_flight.saturating_sub(1);
            match outcome {
                Ok((bytes, elapsed)) => n.stats.record_success(bytes, elapsed),
                Err(()) => n.stats.record_failure(now),
            }
        }
    }

    /// Records what a failed transfer from `peer` at `now` means ([`crate::scheduler::verdict`]). Returns the
    /// reason to ban and report the peer for when it has reached the ban threshold.
    pub fn record_verdict(
        &mut self,
        peer: &PeerId,
        now: Instant,
        verdict: Verdict,
    ) -> Option<ReportReason> {
        let n = self.neighbours.get_mut(peer)?;
        n.stats.in_flight = n.stats.in_flight.saturating_sub(1);
        match verdict {
            Verdict::Busy { wait } => {
                n.stats.record_busy(now, wait);
                None
            }
            Verdict::Failed { strike, retryable } => {
                if retryable {
                    n.stats.record_failure(now);
                } else {
                    n.stats.record_lasting_failure(now);
                }
                let reason = strike?;
                n.stats.strikes += 1;
                (n.stats.strikes >= scheduler::STRIKES_TO_BAN).then_some(reason)
            }
        }
    }

    /// Bans `peer` for the session and drops it. True when it was a neighbour (the caller
    /// stops following it).
    pub fn ban(&mut self, peer: &PeerId) -> bool {
        self.banned.insert(peer.clone());
        self.members.remove(peer);
        self.neighbours.remove(peer).is_some()
    }
}
