//! The segment scheduler's decisions: pure functions over data and `now`, no I/O.
//!
//! The SDK's fetch runtime calls [`decide`] (through the swarm state's `decide`) whenever
//! something changed (a start, a neighbour's `have`, a finished or failed transfer, a timer)
//! and carries out the answer.
//! Everything here is deterministic, so it is tested with simulated time.

pub mod capacity;
pub mod verdict;

use crate::source::FallbackReason;
use sha2::{Digest, Sha256};
use shoal_proto::{PeerId, SegmentKey};
use std::collections::HashSet;
use std::time::Duration;
use std::time::Instant;

/// What to do next for one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The segment is cached: serve it.
    Cache,
    /// Fetch from this neighbour, abandoning the transfer at the deadline.
    Peer(PeerId),
    /// No neighbour has it yet but one may announce it: wait for a `have` until this instant,
    /// then decide again.
    Wait {
        /// When to give up waiting.
        until: Instant,
    },
    /// Fetch from the origin now.
    Origin(FallbackReason),
}

/// What the scheduler knows of a neighbour.
#[derive(Debug, Clone, Default)]
pub struct PeerStats {
    /// Smoothed throughput of past transfers from this peer, bytes per second.
    pub throughput_bps: Option<f64>,
    /// Failures since the last success (decays on success).
    pub recent_failures: u32,
    /// When the last failure happened.
    pub last_failure: Option<Instant>,
    /// Banned for this session (sent bytes that failed verification).
    pub banned: bool,
    /// Transfers from this peer in progress now.
    pub in_flight: u32,
    /// Misbehaviour seen this session: a `have` it then did not serve, a stall mid-body, a
    /// body that broke the protocol. At [`STRIKES_TO_BAN`] the peer is banned.
    pub strikes: u32,
    /// The peer answered "busy" (its upload slots or upload cap are taken) and asked us to
    /// come back at this instant. Not a failure: a capped uplink serving one transfer at a
    /// time is the peer doing its job well.
    pub busy_until: Option<Instant>,
    /// "Busy" answers since the node last reviewed its neighbours (the SDK's announce loop).
    pub busy_answers: u32,
}

/// Misbehaviours after which a peer is banned for the session and reported. Bytes that fail
/// the digest ban at once; these may be honest bad luck (an eviction racing a request, a
/// congested uplink), so a few are forgiven.
pub const STRIKES_TO_BAN: u32 = 3;

/// Failures after which the back-off is at its longest ([`PeerStats::in_backoff`]).
const LASTING_FAILURES: u32 = 6;

/// Weight of the newest sample in the throughput average.
const EWMA_ALPHA: f64 = 0.3;
/// Throughput assumed for a peer with no history (optimistic, so new peers get tried).
const PRIOR_BPS: f64 = 4_000_000.0;

impl PeerStats {
    /// Records a completed transfer of `bytes` that took `elapsed`.
    pub fn record_success(&mut self, bytes: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(0.000_1);
        let sample = bytes as f64 / secs;
        self.throughput_bps = Some(match self.throughput_bps {
            Some(old) => old + EWMA_ALPHA * (sample - old),
            None => sample,
        });
        self.recent_failures = self.recent_failures.saturating_sub(1);
    }

    /// Records a failed or stalled transfer at `now`.
    pub fn record_failure(&mut self, now: Instant) {
        self.recent_failures = self.recent_failures.saturating_add(1);
        self.last_failure = Some(now);
    }

    /// Records a failure at `now` that asking again soon will not mend (the peer presented
    /// another key, or broke the protocol): it sits out the longest back-off at once.
    pub fn record_lasting_failure(&mut self, now: Instant) {
        self.recent_failures = self.recent_failures.max(LASTING_FAILURES);
        self.record_failure(now);
    }

    /// Records a "busy, retry after `retry`" answer at `now`.
    pub fn record_busy(&mut self, now: Instant, retry: Duration) {
        self.busy_until = Some(now + retry);
        self.busy_answers = self.busy_answers.saturating_add(1);
    }

    /// Whether the peer asked us to come back later than `now`.
    pub fn is_busy(&self, now: Instant) -> bool {
        self.busy_until.is_some_and(|t| now < t)
    }

    /// Whether the peer sits out after failures: 2^failures seconds after the last one, up to
    /// a minute, so a flaky peer gets fewer chances and a recovered one comes back.
    pub fn in_backoff(&self, now: Instant) -> bool {
        match self.last_failure {
            Some(at) if self.recent_failures > 0 => {
                let secs = 1u64 << self.recent_failures.min(6);
                now < at + Duration::from_secs(secs.min(60))
            }
            _ => false,
        }
    }

    /// The rate to expect from this peer, bytes per second (the prior for a peer with no
    /// history).
    pub fn expected_bps(&self) -> f64 {
        self.throughput_bps.unwrap_or(PRIOR_BPS)
    }

    /// Higher is better: throughput discounted by failures and by transfers already running.
    pub fn score(&self) -> f64 {
        let bps = self.throughput_bps.unwrap_or(PRIOR_BPS);
        bps / (1.0 + self.recent_failures as f64) / (1.0 + self.in_flight as f64)
    }
}

/// How many peers to fetch parts of a `size`-byte segment from, given the expected rates of
/// the idle holders (best first) and the time left: one (the whole from the best, which
/// neighbours can relay while it arrives) when the best finishes in well under the time
/// left, else as many as it takes for parts to finish in half of it, at most `max`.
/// A split that still cannot make it in time is not tried (returns 0).
pub fn parts_for(size: u64, rates_bps: &[f64], time_left: Duration, max: usize) -> usize {
    let Some(best) = rates_bps.first() else {
        return 0;
    };
    let left = time_left.as_secs_f64();
    if size as f64 / best.max(1.0) <= 0.6 * left {
        return 1;
    }
    for k in 2..=rates_bps.len().min(max) {
        // Parts of equal size: the slowest of the k decides.
        let slowest = rates_bps[..k]
            .iter()
            .copied()
            .fold(f64::MAX, f64::min)
            .max(1.0);
        if size as f64 / k as f64 / slowest <= 0.5 * left {
            return k;
        }
    }
    1
}

/// A neighbour that announced the segment, with what we know of it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The neighbour.
    pub peer: &'a PeerId,
    /// Its record.
    pub stats: &'a PeerStats,
}

/// Everything [`decide`] looks at for one segment.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    /// Now.
    pub now: Instant,
    /// When the segment must be on its way from the origin at the latest: derived from the
    /// player's buffer, or a prefetch's wait limit.
    pub deadline: Instant,
    /// When to stop waiting if no neighbour holds the segment at all by then (its origin
    /// seeder left or is slow). Neighbours that hold it, even busy ones, are waited for until
    /// `deadline`.
    pub orphan_deadline: Instant,
    /// The segment is in the cache.
    pub cached: bool,
    /// P2P is allowed in this swarm (tracker policy, configuration).
    pub p2p_allowed: bool,
    /// This node is one of the segment's origin seeders (rendezvous hashing): from this
    /// instant it fetches the segment from the origin unless a neighbour holds it by then
    /// (see [`seed_role`]); `None` for the others.
    pub seed_at: Option<Instant>,
    /// The seeding at `seed_at` goes ahead even when neighbours hold the segment
    /// ([`SeedRole::Supply`]).
    pub supply: bool,
    /// Whether a neighbour may still announce the segment (it is new at the live edge, or a
    /// neighbour is fetching it); when false, waiting is pointless.
    pub have_expected: bool,
    /// Neighbours that announced the segment.
    pub candidates: &'a [Candidate<'a>],
    /// Neighbours already tried for this segment.
    pub tried: &'a HashSet<PeerId>,
    /// Less time than this before the deadline is not worth a peer attempt.
    pub min_peer_time: Duration,
    /// Segment key (tie-breaks between equal peers so that nodes spread their load).
    pub key: &'a SegmentKey,
}

/// Decides the next step for one segment. Call it at start, on every `have` for the segment,
/// after every finished transfer attempt, and when a [`Decision::Wait`] expires.
pub fn decide(s: &Situation<'_>) -> Decision {
    if s.cached {
        return Decision::Cache;
    }
    if !s.p2p_allowed {
        return Decision::Origin(FallbackReason::P2pOff);
    }
    if s.supply && s.tried.is_empty() && s.seed_at.is_some_and(|at| s.now >= at) {
        return Decision::Origin(FallbackReason::Supply);
    }
    let gave_up_reason = if s.tried.is_empty() {
        FallbackReason::NoPeer
    } else {
        FallbackReason::PeerFailed
    };
    let holders = || s.candidates.iter().filter(|c| !c.stats.banned);
    let usable = holders().filter(|c| {
        !s.tried.contains(c.peer) && !c.stats.in_backoff(s.now) && !c.stats.is_busy(s.now)
    });
    let best = usable.max_by(|a, b| {
        a.stats
            .score()
            .total_cmp(&b.stats.score())
            .then_with(|| tie_break(s.key, a.peer).cmp(&tie_break(s.key, b.peer)))
    });
    let time_left = s.deadline.saturating_duration_since(s.now);
    if let Some(best) = best {
        if time_left >= s.min_peer_time {
            return Decision::Peer(best.peer.clone());
        }
        return Decision::Origin(gave_up_reason);
    }
    let held = holders().next().is_some();
    if let Some(at) = s.seed_at.filter(|_| s.tried.is_empty() && !held) {
        let at = at.min(s.deadline);
        if s.now >= at {
            return Decision::Origin(FallbackReason::Seeder);
        }
        // A stand-in gives the seeders' `have`s a moment to arrive.
        return Decision::Wait { until: at };
    }
    // The earliest instant a busy holder takes requests again.
    let busy_ends = holders()
        .filter(|c| !s.tried.contains(c.peer))
        .filter_map(|c| c.stats.busy_until.filter(|t| *t > s.now))
        .min();
    let limit = if held {
        s.deadline
    } else {
        s.deadline.min(s.orphan_deadline)
    };
    let worth_waiting = s.have_expected || busy_ends.is_some();
    if worth_waiting && limit.saturating_duration_since(s.now) >= s.min_peer_time {
        let until = busy_ends.map_or(limit, |b| b.min(limit));
        return Decision::Wait { until };
    }
    Decision::Origin(gave_up_reason)
}

fn tie_break(key: &SegmentKey, peer: &PeerId) -> u64 {
    rendezvous_weight(key, peer)
}

/// Rendezvous (highest random weight) hash of (segment, peer): every node computes the same
/// ranking of a swarm's peers for a segment without talking to each other. SHA-256 so that
/// nodes of different builds and platforms agree.
pub fn rendezvous_weight(key: &SegmentKey, peer: &PeerId) -> u64 {
    let mut h = Sha256::new();
    h.update(key.as_str().as_bytes());
    h.update([0u8]);
    h.update(peer.as_str().as_bytes());
    let d = h.finalize();
    let mut w = [0u8; 8];
    w.copy_from_slice(&d[..8]);
    u64::from_be_bytes(w)
}

/// Origin seeders per live segment for a swarm of `members` nodes (this one included):
/// `configured`, or when that is 0, one per relay tree worth growing: the square root of the
/// members over 1.6, at least 1 and at most 6 (2 at 8 members, 4 at 32, 6 from 81).
///
/// Each seeder costs the swarm one origin copy (1/members of its offload), but every tree
/// it roots halves the depth a segment travels before the slowest player needs it. Measured
/// with the swarm benchmark at 32 members (docs/benchmarks.md): 2 seeders 72.6 % offload,
/// 3 81.2 %, 4 82.4 %, 6 79.6 %.
pub fn seeders_for(configured: usize, members: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    ((members as f64).sqrt() / 1.6).round().clamp(1.0, 6.0) as usize
}

/// What the node's uplink is doing when it decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uplink {
    /// It would admit one more upload now (under a cap: its backlog is short).
    pub free: bool,
    /// It would pass a segment on at once: free, and without a cap, no upload running.
    pub idle: bool,
}

/// How the node of `rank` seeds a fresh live segment, with `seeders` the swarm's seeder
/// count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedRole {
    /// Fetches it from the origin at once (the first half of the seeders).
    Always,
    /// Fetches it from the origin after a short wait, unless a neighbour announced it by then:
    /// the rest of the first `2 × seeders` ranks, while their uplink would take an upload now.
    StandIn,
    /// Fetches it from the origin at once even when neighbours hold it: any rank, in a swarm
    /// whose uplinks are slower than the stream ([`capacity`]), while this node's uplink
    /// is idle ([`Uplink::idle`]). There most transfers end at a deadline and the origin sends
    /// the rest anyway; fetched when the segment appears, those origin bytes give an idle
    /// uplink something the other members lack, instead of serving one player late.
    Supply,
}

/// This node's [`SeedRole`] for a segment, if any. A seeder is worth its origin copy only if
/// it can pass the segment on at once, and a node still uploading the previous segment held
/// each new one back by up to a second (docs/benchmarks.md); ranks beyond `seeders` stand in
/// for busy ones. Stand-ins wait a moment because players that all ask at one instant (DASH
/// live edge) would otherwise make every one of them fetch before any `have` arrives.
///
/// A swarm with a single seeder (fewer than about six members) has no stand-ins: there a
/// second origin copy per segment costs more offload than a busy seeder's delay.
pub fn seed_role(
    rank: usize,
    seeders: usize,
    uplink: Uplink,
    swarm_short: bool,
) -> Option<SeedRole> {
    if swarm_short && uplink.idle {
        Some(SeedRole::Supply)
    } else if rank < seeders.div_ceil(2) {
        Some(SeedRole::Always)
    } else if seeders >= 2 && uplink.free && rank < 2 * seeders {
        Some(SeedRole::StandIn)
    } else {
        None
    }
}

/// This node's rank (0 = first) for fetching `key` from the origin among `me` and `members`.
/// Nodes ranked below the seeder count fetch at once; the others wait for a `have`, later the
/// lower they rank, so a seeder that left is covered by the next one instead of by everyone.
pub fn origin_rank<'a>(
    key: &SegmentKey,
    me: &PeerId,
    members: impl IntoIterator<Item = &'a PeerId>,
) -> usize {
    let mine = rendezvous_weight(key, me);
    members
        .into_iter()
        .filter(|p| *p != me && rendezvous_weight(key, p) > mine)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }

    /// An uplink that is free and idle, or neither.
    fn up(free: bool) -> Uplink {
        Uplink { free, idle: free }
    }

    struct Fixture {
        key: SegmentKey,
        tried: HashSet<PeerId>,
        now: Instant,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                key: SegmentKey::new("cdn/live/seg1.ts").unwrap(),
                tried: HashSet::new(),
                now: crate::test_clock::start(),
            }
        }
        fn situation<'a>(&'a self, candidates: &'a [Candidate<'a>]) -> Situation<'a> {
            Situation {
                now: self.now,
                deadline: self.now + Duration::from_secs(2),
                orphan_deadline: self.now + Duration::from_secs(2),
                cached: false,
                p2p_allowed: true,
                seed_at: None,
                supply: false,
                have_expected: true,
                candidates,
                tried: &self.tried,
                min_peer_time: Duration::from_millis(200),
                key: &self.key,
            }
        }
    }

    #[test]
    fn cache_wins_over_everything() {
        let f = Fixture::new();
        let s = Situation {
            cached: true,
            p2p_allowed: false,
            ..f.situation(&[])
        };
        assert_eq!(decide(&s), Decision::Cache);
    }

    #[test]
    fn p2p_off_goes_to_origin() {
        let f = Fixture::new();
        let (a, st) = (pid("a"), PeerStats::default());
        let c = [Candidate {
            peer: &a,
            stats: &st,
        }];
        let s = Situation {
            p2p_allowed: false,
            ..f.situation(&c)
        };
        assert_eq!(decide(&s), Decision::Origin(FallbackReason::P2pOff));
    }

    #[test]
    fn fastest_reliable_peer_is_chosen() {
        let f = Fixture::new();
        let (a, b, c) = (pid("a"), pid("b"), pid("c"));
        let mut slow = PeerStats::default();
        slow.record_success(1_000_000, Duration::from_secs(2));
        let mut fast = PeerStats::default();
        fast.record_success(1_000_000, Duration::from_millis(100));
        let mut flaky = PeerStats::default();
        flaky.record_success(1_000_000, Duration::from_millis(50));
        flaky.recent_failures = 5;
        let cands = [
            Candidate {
                peer: &a,
                stats: &slow,
            },
            Candidate {
                peer: &b,
                stats: &fast,
            },
            Candidate {
                peer: &c,
                stats: &flaky,
            },
        ];
        assert_eq!(decide(&f.situation(&cands)), Decision::Peer(b.clone()));
    }

    #[test]
    fn banned_tried_and_backed_off_peers_are_skipped() {
        let mut f = Fixture::new();
        let (a, b, c) = (pid("a"), pid("b"), pid("c"));
        let banned = PeerStats {
            banned: true,
            ..Default::default()
        };
        let mut failing = PeerStats::default();
        failing.record_failure(f.now);
        let ok = PeerStats::default();
        f.tried.insert(c.clone());
        let cands = [
            Candidate {
                peer: &a,
                stats: &banned,
            },
            Candidate {
                peer: &b,
                stats: &failing,
            },
            Candidate {
                peer: &c,
                stats: &ok,
            },
        ];
        // Everyone unusable, something was tried, a have could still come: wait.
        assert_eq!(
            decide(&f.situation(&cands)),
            Decision::Wait {
                until: f.now + Duration::from_secs(2)
            }
        );
        // Backoff ends after 2 s: b is usable again.
        let later = Fixture {
            now: f.now + Duration::from_secs(3),
            ..Fixture::new()
        };
        let mut tried = HashSet::new();
        tried.insert(c.clone());
        let s = Situation {
            tried: &tried,
            ..later.situation(&cands)
        };
        assert_eq!(decide(&s), Decision::Peer(b));
    }

    #[test]
    fn seeder_fetches_origin_at_once_unless_a_peer_has_it() {
        let f = Fixture::new();
        let s = Situation {
            seed_at: Some(f.now),
            ..f.situation(&[])
        };
        assert_eq!(decide(&s), Decision::Origin(FallbackReason::Seeder));
        let (a, st) = (pid("a"), PeerStats::default());
        let c = [Candidate {
            peer: &a,
            stats: &st,
        }];
        let s = Situation {
            seed_at: Some(f.now),
            ..f.situation(&c)
        };
        assert_eq!(decide(&s), Decision::Peer(a));
    }

    #[test]
    fn waits_for_a_have_only_while_the_budget_allows() {
        let f = Fixture::new();
        let s = f.situation(&[]);
        assert_eq!(decide(&s), Decision::Wait { until: s.deadline });
        // At the deadline (simulated time moved on), the origin.
        let s2 = Situation {
            now: s.deadline,
            ..s.clone()
        };
        assert_eq!(decide(&s2), Decision::Origin(FallbackReason::NoPeer));
        // A segment nobody will announce: no waiting at all.
        let s3 = Situation {
            have_expected: false,
            ..s
        };
        assert_eq!(decide(&s3), Decision::Origin(FallbackReason::NoPeer));
    }

    #[test]
    fn a_busy_holder_is_waited_for_and_an_idle_one_preferred() {
        let f = Fixture::new();
        let (a, b) = (pid("a"), pid("b"));
        let mut busy = PeerStats::default();
        busy.record_success(1_000_000, Duration::from_millis(10));
        busy.record_busy(f.now, Duration::from_millis(300));
        let idle_slow = {
            let mut s = PeerStats::default();
            s.record_success(1_000_000, Duration::from_secs(1));
            s
        };
        let only_busy = [Candidate {
            peer: &a,
            stats: &busy,
        }];
        // Busy is not failure: come back when it said, not the origin.
        assert_eq!(
            decide(&f.situation(&only_busy)),
            Decision::Wait {
                until: f.now + Duration::from_millis(300)
            }
        );
        // Even a seeder waits for a neighbour that already holds the segment.
        let s = Situation {
            seed_at: Some(f.now),
            have_expected: false,
            ..f.situation(&only_busy)
        };
        assert!(matches!(decide(&s), Decision::Wait { .. }));
        // After the retry time it is asked again.
        let later = Situation {
            now: f.now + Duration::from_millis(300),
            ..f.situation(&only_busy)
        };
        assert_eq!(decide(&later), Decision::Peer(a.clone()));
        // An idle holder, even a slower one, beats waiting for the busy one.
        let both = [
            Candidate {
                peer: &a,
                stats: &busy,
            },
            Candidate {
                peer: &b,
                stats: &idle_slow,
            },
        ];
        assert_eq!(decide(&f.situation(&both)), Decision::Peer(b));
    }

    #[test]
    fn nobody_holding_it_by_the_orphan_deadline_means_origin() {
        let mut f = Fixture::new();
        let orphan = f.now + Duration::from_millis(500);
        let s = Situation {
            orphan_deadline: orphan,
            ..f.situation(&[])
        };
        // Before the orphan deadline: wait for a have, but no longer than it.
        assert_eq!(decide(&s), Decision::Wait { until: orphan });
        let at = Situation {
            now: orphan,
            ..s.clone()
        };
        assert_eq!(decide(&at), Decision::Origin(FallbackReason::NoPeer));
        // A neighbour holds it (its attempt failed; another have may come): the full
        // deadline applies.
        let a = pid("a");
        f.tried.insert(a.clone());
        let st = PeerStats::default();
        let c = [Candidate {
            peer: &a,
            stats: &st,
        }];
        let held = Situation {
            now: orphan,
            orphan_deadline: orphan,
            ..f.situation(&c)
        };
        assert_eq!(
            decide(&held),
            Decision::Wait {
                until: held.deadline
            }
        );
    }

    #[test]
    fn no_peer_attempt_in_the_last_moments_before_the_deadline() {
        let mut f = Fixture::new();
        let (a, b, st) = (pid("a"), pid("b"), PeerStats::default());
        f.tried.insert(b);
        let c = [Candidate {
            peer: &a,
            stats: &st,
        }];
        let s = f.situation(&c);
        let late = Situation {
            now: s.deadline - Duration::from_millis(100),
            ..s
        };
        assert_eq!(decide(&late), Decision::Origin(FallbackReason::PeerFailed));
    }

    #[test]
    fn rendezvous_ranks_are_a_permutation_agreed_by_all() {
        let key = SegmentKey::new("k/1.ts").unwrap();
        let peers: Vec<PeerId> = (0..16).map(|i| pid(&format!("p{i}"))).collect();
        let mut ranks: Vec<usize> = peers
            .iter()
            .map(|me| origin_rank(&key, me, peers.iter()))
            .collect();
        ranks.sort_unstable();
        assert_eq!(ranks, (0..16).collect::<Vec<_>>());
        // Different segments pick different first seeders (load spreads over the swarm).
        let firsts: HashSet<&PeerId> = (0..64)
            .map(|n| {
                let k = SegmentKey::new(format!("k/{n}.ts")).unwrap();
                peers
                    .iter()
                    .find(|me| origin_rank(&k, me, peers.iter()) == 0)
                    .unwrap()
            })
            .collect();
        assert!(firsts.len() > 8, "only {} distinct seeders", firsts.len());
    }

    #[test]
    fn a_segment_is_split_only_when_one_peer_is_too_slow() {
        let s = Duration::from_secs;
        // 750 KB at 750 KB/s with 3 s left: one peer (relayable) is fine.
        assert_eq!(parts_for(750_000, &[750_000.0, 750_000.0], s(3), 4), 1);
        // At 187 KB/s one peer needs 4 s: three peers need 1.3 s each, within half of 3 s.
        let slow = [187_500.0; 6];
        assert_eq!(parts_for(750_000, &slow, s(3), 4), 3);
        assert_eq!(parts_for(750_000, &slow, s(2), 4), 4);
        // Only two holders: the best split available is still tried.
        assert_eq!(parts_for(750_000, &slow[..2], s(3), 4), 1);
        assert_eq!(parts_for(750_000, &slow[..3], s(4), 4), 2);
        // Nobody idle: nothing to do.
        assert_eq!(parts_for(750_000, &[], s(3), 4), 0);
    }

    #[test]
    fn seeders_grow_slowly_with_the_swarm() {
        assert_eq!(seeders_for(3, 1000), 3);
        let auto: Vec<usize> = [1, 8, 16, 32, 64, 100, 1000]
            .iter()
            .map(|n| seeders_for(0, *n))
            .collect();
        assert_eq!(auto, [1, 2, 3, 4, 5, 6, 6]);
    }

    #[test]
    fn busy_seeders_are_stood_in_for_by_the_next_ranks() {
        use SeedRole::*;
        // Four seeders: ranks 0 and 1 always fetch at once.
        assert_eq!(seed_role(0, 4, up(false), false), Some(Always));
        assert_eq!(seed_role(1, 4, up(true), false), Some(Always));
        // Ranks 2 to 7 only with an uplink free to pass the segment on.
        assert_eq!(seed_role(2, 4, up(false), false), None);
        assert_eq!(seed_role(2, 4, up(true), false), Some(StandIn));
        assert_eq!(seed_role(7, 4, up(true), false), Some(StandIn));
        // Beyond twice the count: never.
        assert_eq!(seed_role(8, 4, up(true), false), None);
        // One seeder (a small swarm): it always fetches, and nobody stands in.
        assert_eq!(seed_role(0, 1, up(false), false), Some(Always));
        assert_eq!(seed_role(1, 1, up(true), false), None);
    }

    #[test]
    fn in_a_short_swarm_every_free_uplink_supplies() {
        use SeedRole::*;
        // Any rank with a free uplink, beyond twice the seeder count too.
        assert_eq!(seed_role(0, 4, up(true), true), Some(Supply));
        assert_eq!(seed_role(30, 4, up(true), true), Some(Supply));
        // A busy uplink falls back to the usual roles.
        assert_eq!(seed_role(0, 4, up(false), true), Some(Always));
        assert_eq!(seed_role(30, 4, up(false), true), None);
        // Free to admit one more, but (without a cap) already uploading: not idle.
        let running = Uplink {
            free: true,
            idle: false,
        };
        assert_eq!(seed_role(2, 4, running, true), Some(StandIn));
        assert_eq!(seed_role(30, 4, running, true), None);
    }

    #[test]
    fn a_supplier_fetches_at_once_though_a_neighbour_holds_it() {
        let f = Fixture::new();
        let (a, st) = (pid("a"), PeerStats::default());
        let c = [Candidate {
            peer: &a,
            stats: &st,
        }];
        let s = Situation {
            seed_at: Some(f.now),
            supply: true,
            ..f.situation(&c)
        };
        assert_eq!(decide(&s), Decision::Origin(FallbackReason::Supply));
        // Once it has tried a peer for the segment, it is an ordinary fetch.
        let tried = HashSet::from([a.clone()]);
        let after = Situation {
            tried: &tried,
            ..s.clone()
        };
        assert_ne!(decide(&after), Decision::Origin(FallbackReason::Supply));
        // Without the role, the holder is asked.
        let plain = Situation { supply: false, ..s };
        assert_eq!(decide(&plain), Decision::Peer(a));
    }

    #[test]
    fn a_stand_in_seeder_waits_for_a_have_first() {
        let f = Fixture::new();
        let at = f.now + Duration::from_millis(100);
        let s = Situation {
            seed_at: Some(at),
            ..f.situation(&[])
        };
        assert_eq!(decide(&s), Decision::Wait { until: at });
        // Nobody announced it meanwhile: to the origin.
        let later = Situation {
            now: at,
            seed_at: Some(at),
            ..f.situation(&[])
        };
        assert_eq!(decide(&later), Decision::Origin(FallbackReason::Seeder));
        // Someone did: from that peer.
        let (a, st) = (pid("a"), PeerStats::default());
        let c = [Candidate {
            peer: &a,
            stats: &st,
        }];
        let held = Situation {
            now: at,
            seed_at: Some(at),
            ..f.situation(&c)
        };
        assert_eq!(decide(&held), Decision::Peer(a));
    }

    #[test]
    fn throughput_average_moves_toward_new_samples() {
        let mut s = PeerStats::default();
        s.record_success(1000, Duration::from_secs(1));
        assert_eq!(s.throughput_bps, Some(1000.0));
        s.record_success(2000, Duration::from_secs(1));
        let t = s.throughput_bps.unwrap();
        assert!(t > 1000.0 && t < 2000.0);
    }
}
