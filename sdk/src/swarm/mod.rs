//! Swarm membership: the segments a swarm's playlist lists, the neighbours the tracker handed
//! out, what each neighbour holds (its `haves`) and how well it served us.
//!
//! [`SwarmState`] is plain data guarded by one short-held mutex; the tasks that keep it fresh
//! (announce loop, one `haves` subscription per neighbour) live in [`crate::node`].

pub mod tracker;

use crate::fetch::scheduler::{self, Candidate, Decision, PeerStats, Situation};
use crate::manifest::ByteRange;
use crate::metrics::{Provenance, Source};
use crate::peer::PeerAddr;
use shoal_proto::{PeerId, SegmentKey, SwarmId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

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

/// A neighbour: where it is, what it holds, how it served us.
#[derive(Debug)]
pub struct Neighbour {
    /// Its peer server.
    pub addr: SocketAddr,
    /// Hex SHA-256 of its certificate, as the tracker vouched for it.
    pub fingerprint: String,
    /// Segments it announced.
    pub haves: HashSet<SegmentKey>,
    /// Its record for the scheduler.
    pub stats: PeerStats,
    /// Its `haves` subscription task.
    pub task: Option<AbortHandle>,
}

/// Mutable state of a swarm.
#[derive(Debug, Default)]
pub struct SwarmState {
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
    /// Fetches under way, joined by later requests for the same segment.
    pub in_flight: HashMap<SegmentKey, crate::fetch::InFlight>,
    /// When the player's buffer runs dry if no more media arrives: each segment handed to it
    /// adds its duration (from now, if it had run dry). Players do not tell a proxy their
    /// buffer, so this is an estimate from what was delivered, and a low one for a player
    /// that paused (which only makes P2P waits shorter, never a stall longer).
    pub player_dry_at: Option<Instant>,
    /// Smoothed time an origin segment fetch took, seconds.
    pub origin_secs: Option<f64>,
    /// When a segment last appeared at the live edge (from any playlist load).
    pub last_fresh_at: Option<Instant>,
    /// A task polls the live playlist near the moments new segments appear.
    pub edge_poller: bool,
    /// Segments are not fetched in parts from several peers before this instant: a split
    /// fetch failed its digest, and only whole transfers tell which peer lied.
    pub no_split_until: Option<Instant>,
    /// Whether one peer transfer runs as fast as the stream plays (see `fetch::capacity`).
    pub capacity: crate::fetch::capacity::Capacity,
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

/// One swarm this node is in.
#[derive(Debug)]
pub struct Swarm {
    /// The swarm's id.
    pub id: SwarmId,
    /// Our peer id in this swarm.
    pub peer_id: PeerId,
    /// The state.
    pub state: Mutex<SwarmState>,
    /// Woken whenever a neighbour announces a segment.
    pub have_notify: Notify,
    /// Player-bound bytes from the origin not yet reported to the tracker.
    pub unreported_cdn: AtomicU64,
    /// Bytes from peers not yet reported to the tracker.
    pub unreported_p2p: AtomicU64,
    /// Milliseconds since node start of the last player request in this swarm.
    pub last_used_ms: AtomicU64,
    /// When the last fetch of the signed digest list started; locked for a whole fetch, so
    /// one runs at a time and waiters share its result (`fetch::digest_list`).
    pub digest_list: tokio::sync::Mutex<Option<Instant>>,
}

impl Swarm {
    /// A swarm with no neighbours yet.
    pub fn new(id: SwarmId, peer_id: PeerId, discovering: bool) -> Self {
        Self {
            id,
            peer_id,
            state: Mutex::new(SwarmState {
                target_duration: Duration::from_secs(6),
                discovering,
                ..Default::default()
            }),
            have_notify: Notify::new(),
            unreported_cdn: AtomicU64::new(0),
            unreported_p2p: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(0),
            digest_list: tokio::sync::Mutex::new(None),
        }
    }

    /// Locks the state; callers keep the guard short and never hold it across `.await`.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, SwarmState> {
        // A panic while holding the lock cannot leave the data half-updated in a way that
        // matters more than stopping the node would: keep going with what is there.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learns the segments of a playlist load. Returns the keys that are new at the live edge
    /// (for prefetch). The first load of a swarm marks nothing fresh.
    pub fn learn_segments(
        &self,
        now: Instant,
        segs: impl IntoIterator<Item = NewSegment>,
        ended: bool,
        target_duration: Duration,
    ) -> Vec<SegmentKey> {
        let mut st = self.lock();
        let first_load = st.segments.is_empty();
        st.ended = ended;
        st.target_duration = target_duration;
        let mut new = Vec::new();
        for NewSegment {
            key,
            url,
            range,
            sequence,
            duration,
        } in segs
        {
            if let Some(info) = st.segments.get_mut(&key) {
                // Keep the newest URL: the viewer's token may have been renewed.
                info.url = url;
                continue;
            }
            let fresh = !first_load && !ended;
            st.segments.insert(
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
            st.by_sequence.insert(sequence, key.clone());
            if fresh {
                new.push(key);
            }
        }
        if !new.is_empty() {
            st.last_fresh_at = Some(now);
        }
        // Forget segments far behind the window.
        let len = st.by_sequence.len();
        if !ended && len > KEEP_BEHIND * 2 {
            let drop: Vec<u64> = st
                .by_sequence
                .keys()
                .take(len - KEEP_BEHIND * 2)
                .copied()
                .collect();
            for seq in drop {
                if let Some(k) = st.by_sequence.remove(&seq) {
                    st.segments.remove(&k);
                    st.sources.remove(&k);
                    st.digests.remove(&k);
                }
            }
        }
        new
    }

    /// The segments after `key` in playlist order, at most `n` (VOD read-ahead).
    pub fn following(&self, key: &SegmentKey, n: usize) -> Vec<SegmentKey> {
        let st = self.lock();
        let Some(seq) = st.segments.get(key).map(|i| i.sequence) else {
            return Vec::new();
        };
        st.by_sequence
            .range(seq + 1..)
            .take(n)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Records that `peer` holds `key`; wakes fetches waiting for it.
    pub fn peer_has(&self, peer: &PeerId, keys: impl IntoIterator<Item = SegmentKey>) {
        {
            let mut st = self.lock();
            let Some(n) = st.neighbours.get_mut(peer) else {
                return;
            };
            n.haves.extend(keys);
        }
        self.have_notify.notify_waiters();
    }

    /// A neighbour that answered "busy" says its uplink takes uploads again: it may be asked
    /// at once rather than after the wait it asked for.
    pub fn peer_free(&self, peer: &PeerId) {
        {
            let mut st = self.lock();
            let Some(n) = st.neighbours.get_mut(peer) else {
                return;
            };
            if n.stats.busy_until.take().is_none() {
                return;
            }
        }
        self.have_notify.notify_waiters();
    }

    /// One awaited neighbour snapshot arrived or will never come; ends discovery after the last.
    pub fn snapshot_settled(&self) {
        let done = {
            let mut st = self.lock();
            st.pending_snapshots = st.pending_snapshots.saturating_sub(1);
            let done = st.discovering && st.pending_snapshots == 0;
            if done {
                st.discovering = false;
            }
            done
        };
        if done {
            self.have_notify.notify_waiters();
        }
    }

    /// Ends discovery now (the first announce failed or found nobody).
    pub fn end_discovery(&self) {
        self.lock().discovering = false;
        self.have_notify.notify_waiters();
    }

    /// Where the cached bytes of `key` came from (the origin when not recorded).
    pub fn provenance(&self, key: &SegmentKey) -> Provenance {
        self.lock()
            .sources
            .get(key)
            .copied()
            .unwrap_or(Provenance::Whole(Source::Cdn))
    }

    /// Records that `peer` dropped `key`.
    pub fn peer_lost(&self, peer: &PeerId, key: &SegmentKey) {
        if let Some(n) = self.lock().neighbours.get_mut(peer) {
            n.haves.remove(key);
        }
    }

    /// Asks the scheduler what to do for `key`, from the swarm's current state.
    #[allow(clippy::too_many_arguments)]
    pub fn decide(
        &self,
        now: Instant,
        deadline: Instant,
        key: &SegmentKey,
        cached: bool,
        tried: &HashSet<PeerId>,
        origin_seeders: usize,
        min_peer_time: Duration,
        uplink: scheduler::Uplink,
    ) -> (Decision, Option<PeerAddr>) {
        let st = self.lock();
        let holders: Vec<(&PeerId, &Neighbour)> = st
            .neighbours
            .iter()
            .filter(|(_, n)| n.haves.contains(key))
            .collect();
        let candidates: Vec<Candidate<'_>> = holders
            .iter()
            .map(|(p, n)| Candidate {
                peer: p,
                stats: &n.stats,
            })
            .collect();
        let info = st.segments.get(key);
        let rank = scheduler::origin_rank(key, &self.peer_id, st.members.iter());
        let origin_seeders = scheduler::seeders_for(origin_seeders, st.members.len() + 1);
        let fresh = info.is_some_and(|i| i.fresh);
        let orphan_deadline = info
            .map(|i| orphan_deadline(i, rank, origin_seeders, st.target_duration))
            .unwrap_or(deadline);
        // Supplying is for the segment just published, which every member still lacks.
        let members = st.members.len() + 1;
        let short = st.capacity.short()
            && fresh
            && rank < crate::fetch::capacity::supply_ranks(members, st.capacity.ratio());
        let role =
            scheduler::seed_role(rank, origin_seeders, uplink, short).filter(|_| !st.discovering);
        let situation = Situation {
            now,
            deadline,
            orphan_deadline,
            cached,
            p2p_allowed: st.p2p_allowed,
            supply: role == Some(scheduler::SeedRole::Supply),
            seed_at: match role {
                None => None,
                Some(scheduler::SeedRole::Always | scheduler::SeedRole::Supply) => Some(now),
                // Long enough for an earlier seeder's origin fetch and its `have` to arrive.
                Some(scheduler::SeedRole::StandIn) => Some(
                    info.map_or(now, |i| i.revealed_at)
                        + Duration::from_secs_f64(st.origin_secs.unwrap_or(0.25) * 2.0)
                        + STAND_IN_SLACK,
                ),
            },
            have_expected: st.discovering || (fresh && !st.neighbours.is_empty()),
            candidates: &candidates,
            tried,
            min_peer_time,
            key,
        };
        let d = scheduler::decide(&situation);
        let addr = match &d {
            Decision::Peer(p) => st.neighbours.get(p).map(|n| PeerAddr {
                addr: n.addr,
                fingerprint: n.fingerprint.clone(),
            }),
            _ => None,
        };
        (d, addr)
    }

    /// Holders of `key` that could be asked now (not banned, busy, backing off or in
    /// `tried`), best first, with their address and expected rate.
    pub fn idle_holders(
        &self,
        key: &SegmentKey,
        now: Instant,
        tried: &HashSet<PeerId>,
    ) -> Vec<(PeerId, PeerAddr, f64)> {
        let st = self.lock();
        if st.no_split_until.is_some_and(|t| now < t) {
            return Vec::new();
        }
        let mut v: Vec<(f64, PeerId, PeerAddr, f64)> = st
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
                let addr = PeerAddr {
                    addr: n.addr,
                    fingerprint: n.fingerprint.clone(),
                };
                (n.stats.score(), p.clone(), addr, n.stats.expected_bps())
            })
            .collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0));
        v.into_iter().map(|(_, p, a, r)| (p, a, r)).collect()
    }

    /// How long a prefetch of a fresh live segment may wait for peers: until about when a
    /// player a few segments behind the live edge needs it, less the time an origin fetch
    /// takes. A player's own request for it sets a tighter deadline from its buffer.
    pub fn prefetch_deadline(&self, key: &SegmentKey) -> Option<Instant> {
        let st = self.lock();
        let info = st.segments.get(key)?;
        Some(info.revealed_at + st.target_duration * 2)
    }

    /// The deadline for a player's request of `key` at `now`: P2P may take what the player's
    /// buffer holds, less an origin fetch (twice its usual time) and `margin`, and never more
    /// than `max`. An empty buffer (startup, after a stall) means the origin at once unless
    /// the segment is already cached or arriving.
    pub fn player_deadline(&self, now: Instant, margin: Duration, max: Duration) -> Instant {
        let st = self.lock();
        let buffer = st
            .player_dry_at
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let origin = Duration::from_secs_f64(st.origin_secs.unwrap_or(0.25) * 2.0);
        now + buffer.saturating_sub(origin + margin).min(max)
    }

    /// Records that the player got `key` at `now` (its estimated buffer grows by its length).
    pub fn delivered_to_player(&self, now: Instant, key: &SegmentKey) {
        let mut st = self.lock();
        let target = st.target_duration;
        let Some(info) = st.segments.get_mut(key) else {
            return;
        };
        if std::mem::replace(&mut info.delivered, true) {
            return;
        }
        let length = info.duration.unwrap_or(target);
        let from = st.player_dry_at.map_or(now, |t| t.max(now));
        st.player_dry_at = Some(from + length);
    }

    /// Records a peer transfer that carried `bytes` over `since_first_byte` (finished or cut
    /// at a deadline), for the swarm's capacity estimate.
    pub fn record_transfer_rate(&self, bytes: u64, since_first_byte: Duration) {
        let mut st = self.lock();
        let was = st.capacity.short();
        st.capacity.record_transfer(bytes, since_first_byte);
        self.log_capacity_change(was, &st.capacity);
    }

    /// Records that `key` weighs `bytes`: with its duration, a sample of the stream's rate.
    pub fn record_segment_size(&self, key: &SegmentKey, bytes: u64) {
        let mut st = self.lock();
        let Some(duration) = st.segments.get(key).and_then(|i| i.duration) else {
            return;
        };
        let was = st.capacity.short();
        st.capacity.record_segment(bytes, duration);
        self.log_capacity_change(was, &st.capacity);
    }

    fn log_capacity_change(&self, was: bool, now: &crate::fetch::capacity::Capacity) {
        let ratio = now.ratio().unwrap_or(0.0);
        match (was, now.short()) {
            (false, true) => tracing::info!(
                swarm = %self.id,
                ratio = format_args!("{ratio:.2}"),
                "peer transfers run slower than the stream plays: with an idle uplink, this node \
                 fetches new segments from the origin at once and passes them on"
            ),
            (true, false) => tracing::info!(
                swarm = %self.id,
                ratio = format_args!("{ratio:.2}"),
                "peer transfers keep up with the stream again"
            ),
            _ => {}
        }
    }

    /// Records how long an origin segment fetch took.
    pub fn record_origin_time(&self, took: Duration) {
        let mut st = self.lock();
        let secs = took.as_secs_f64();
        st.origin_secs = Some(match st.origin_secs {
            Some(old) => old + 0.2 * (secs - old),
            None => secs,
        });
    }

    /// Records that `peer` answered busy and asked us to come back after `wait`.
    pub fn record_busy(&self, peer: &PeerId, now: Instant, wait: Duration) {
        let mut st = self.lock();
        if let Some(n) = st.neighbours.get_mut(peer) {
            n.stats.in_flight = n.stats.in_flight.saturating_sub(1);
            n.stats.record_busy(now, wait);
        }
    }

    /// Records that a transfer from `peer` was given up for want of time (not the peer's
    /// fault: our deadline came).
    pub fn transfer_abandoned(&self, peer: &PeerId) {
        if let Some(n) = self.lock().neighbours.get_mut(peer) {
            n.stats.in_flight = n.stats.in_flight.saturating_sub(1);
        }
    }

    /// Records the outcome of a transfer from `peer`.
    pub fn record_transfer(
        &self,
        peer: &PeerId,
        now: Instant,
        outcome: Result<(u64, Duration), ()>,
    ) {
        let mut st = self.lock();
        if let Some(n) = st.neighbours.get_mut(peer) {
            n.stats.in_flight = n.stats.in_flight.saturating_sub(1);
            match outcome {
                Ok((bytes, elapsed)) => n.stats.record_success(bytes, elapsed),
                Err(()) => n.stats.record_failure(now),
            }
        }
    }

    /// Marks a transfer from `peer` as started.
    pub fn transfer_started(&self, peer: &PeerId) {
        if let Some(n) = self.lock().neighbours.get_mut(peer) {
            n.stats.in_flight += 1;
        }
    }

    /// Records a misbehaviour of `peer`; true when it has reached the ban threshold (the
    /// caller bans and reports it).
    pub fn strike(&self, peer: &PeerId) -> bool {
        let mut st = self.lock();
        match st.neighbours.get_mut(peer) {
            Some(n) => {
                n.stats.strikes += 1;
                n.stats.strikes >= crate::fetch::scheduler::STRIKES_TO_BAN
            }
            None => false,
        }
    }

    /// Bans `peer` for the session and drops it.
    pub fn ban(&self, peer: &PeerId) {
        let mut st = self.lock();
        st.banned.insert(peer.clone());
        st.members.remove(peer);
        if let Some(n) = st.neighbours.remove(peer) {
            if let Some(t) = n.task {
                t.abort();
            }
        }
    }

    /// Takes the byte counts not yet reported.
    pub fn take_unreported(&self) -> (u64, u64) {
        (
            self.unreported_cdn.swap(0, Ordering::Relaxed),
            self.unreported_p2p.swap(0, Ordering::Relaxed),
        )
    }

    /// Puts back counts a failed announce could not report.
    pub fn restore_unreported(&self, cdn: u64, p2p: u64) {
        self.unreported_cdn.fetch_add(cdn, Ordering::Relaxed);
        self.unreported_p2p.fetch_add(p2p, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::capacity::MIN_SAMPLES;
    use crate::metrics::FallbackReason;

    const S: Duration = Duration::from_secs(2);

    fn seg(n: u64) -> NewSegment {
        NewSegment {
            key: SegmentKey::new(format!("cdn/live/seg{n}.ts")).unwrap(),
            url: url::Url::parse(&format!("https://cdn.example/live/seg{n}.ts")).unwrap(),
            range: None,
            sequence: n,
            duration: Some(S),
        }
    }

    /// A live swarm with one neighbour holding `seg0` (from the first playlist) and `seg1`
    /// (fresh at the live edge of the next one).
    fn live_swarm() -> (Swarm, PeerId) {
        let swarm = Swarm::new(
            SwarmId::new("cdn/live/stream.m3u8").unwrap(),
            PeerId::new("me").unwrap(),
            false,
        );
        let now = Instant::now();
        swarm.learn_segments(now, [seg(0)], false, S);
        let fresh = swarm.learn_segments(now, [seg(0), seg(1)], false, S);
        assert_eq!(fresh, [seg(1).key]);
        let n = PeerId::new("n").unwrap();
        let mut st = swarm.lock();
        st.p2p_allowed = true;
        st.members.insert(n.clone());
        st.neighbours.insert(
            n.clone(),
            Neighbour {
                addr: "127.0.0.1:1".parse().unwrap(),
                fingerprint: String::new(),
                haves: HashSet::from([seg(0).key, seg(1).key]),
                stats: PeerStats::default(),
                task: None,
            },
        );
        drop(st);
        (swarm, n)
    }

    fn decide(swarm: &Swarm, key: &SegmentKey, idle: bool) -> Decision {
        let now = Instant::now();
        let tried = HashSet::new();
        let deadline = now + Duration::from_secs(3);
        let d = swarm.decide(
            now,
            deadline,
            key,
            false,
            &tried,
            0,
            Duration::from_millis(200),
            scheduler::Uplink { free: idle, idle },
        );
        d.0
    }

    #[test]
    fn a_short_swarm_supplies_the_fresh_segment_from_a_free_uplink() {
        let (swarm, n) = live_swarm();
        let fresh = seg(1).key;
        // Transfers as fast as the stream: the neighbour that holds it is asked.
        swarm.record_segment_size(&fresh, 750_000);
        for _ in 0..MIN_SAMPLES {
            swarm.record_transfer_rate(750_000, S);
        }
        assert_eq!(decide(&swarm, &fresh, true), Decision::Peer(n.clone()));
        // At half the stream's rate: a free uplink fetches it from the origin at once.
        for _ in 0..MIN_SAMPLES * 4 {
            swarm.record_transfer_rate(375_000, S);
        }
        assert!(swarm.lock().capacity.short());
        assert_eq!(
            decide(&swarm, &fresh, true),
            Decision::Origin(FallbackReason::Supply)
        );
        // A busy uplink could not pass it on: from the neighbour, as before.
        assert_eq!(decide(&swarm, &fresh, false), Decision::Peer(n.clone()));
        // A segment every member has had for a while is not supplied.
        assert_eq!(decide(&swarm, &seg(0).key, true), Decision::Peer(n));
    }
}
