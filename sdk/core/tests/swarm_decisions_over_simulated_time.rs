//! The swarm state and the scheduler driven through scripted sequences of playlist loads,
//! `have`s, transfers, busy answers and deadlines on a simulated clock: inputs in, decisions
//! out, no runtime. The cases are the ones the swarm benchmark taught (docs/benchmarks.md).

use shoal_core::scheduler::capacity::MIN_SAMPLES;
use shoal_core::scheduler::verdict::{verdict, PeerFailure};
use shoal_core::scheduler::{Decision, Uplink, STRIKES_TO_BAN};
use shoal_core::source::FallbackReason;
use shoal_core::swarm::{
    Ask, Neighbour, NewSegment, Offer, PeerAddr, Rules, SwarmState, UNREACHABLE_BACKOFF,
};
use shoal_proto::{PeerId, ReportReason, SegmentKey};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const TARGET: Duration = Duration::from_secs(2);
const RULES: Rules = Rules {
    origin_seeders: 0,
    min_peer_time: Duration::from_millis(200),
};
const IDLE: Uplink = Uplink {
    free: true,
    idle: true,
};
const BUSY_UPLINK: Uplink = Uplink {
    free: false,
    idle: false,
};

/// A simulated clock: one reading of the real clock as the base, then offsets.
struct Clock(Instant);

impl Clock {
    #[allow(clippy::disallowed_methods)] // the base of the simulated time
    fn new() -> Self {
        Self(Instant::now())
    }
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn pid(s: &str) -> PeerId {
    PeerId::new(s).unwrap()
}

fn seg(n: u64) -> NewSegment {
    NewSegment {
        key: SegmentKey::new(format!("cdn/live/seg{n}.ts")).unwrap(),
        url: url::Url::parse(&format!("https://cdn.example/live/seg{n}.ts")).unwrap(),
        range: None,
        sequence: n,
        duration: Some(TARGET),
    }
}

fn key(n: u64) -> SegmentKey {
    seg(n).key
}

fn neighbour(port: u16) -> Neighbour {
    Neighbour::new(PeerAddr::tcp(
        format!("127.0.0.1:{port}").parse().unwrap(),
        "00".repeat(32),
    ))
}

/// A live swarm seen by `me` at `clock.at(0)`: the first playlist lists seg0, the next one
/// (at the same instant) reveals seg1 at the live edge. `peers` are members and connected
/// neighbours; P2P is allowed and discovery is over.
fn live_swarm(clock: &Clock, me: &str, peers: &[&str]) -> SwarmState {
    let mut st = SwarmState::new(pid(me), false);
    assert!(st
        .learn_segments(clock.at(0), [seg(0)], false, TARGET)
        .is_empty());
    let fresh = st.learn_segments(clock.at(0), [seg(0), seg(1)], false, TARGET);
    assert_eq!(
        fresh,
        [key(1)],
        "the second load reveals seg1 at the live edge"
    );
    st.p2p_allowed = true;
    for (i, p) in peers.iter().enumerate() {
        st.members.insert(pid(p));
        st.neighbours.insert(pid(p), neighbour(1000 + i as u16));
    }
    st
}

/// A peer id that ranks after every one of `others` for `k` (so it is no origin seeder).
fn last_ranked(k: &SegmentKey, others: &[&str]) -> String {
    use shoal_core::scheduler::origin_rank;
    (0..10_000)
        .map(|i| format!("me{i}"))
        .find(|me| {
            let members: Vec<PeerId> = others.iter().map(|p| pid(p)).collect();
            origin_rank(k, &pid(me), members.iter()) == others.len()
        })
        .expect("some id ranks last")
}

fn decide(
    st: &SwarmState,
    now: Instant,
    deadline: Instant,
    k: &SegmentKey,
    tried: &HashSet<PeerId>,
    uplink: Uplink,
) -> Decision {
    let ask = Ask {
        now,
        deadline,
        key: k,
        cached: false,
        tried,
        uplink,
    };
    st.decide(&ask, &RULES).0
}

#[test]
fn a_fresh_segment_is_waited_for_until_a_have_arrives_then_fetched_from_that_peer() {
    let clock = Clock::new();
    let peers = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let me = last_ranked(&key(1), &peers);
    let mut st = live_swarm(&clock, &me, &peers);
    let none = HashSet::new();
    let deadline = clock.at(3_000);
    // Nobody holds it yet and this node is no seeder: wait for a `have`.
    let d = decide(&st, clock.at(10), deadline, &key(1), &none, BUSY_UPLINK);
    assert!(
        matches!(d, Decision::Wait { until } if until <= deadline),
        "{d:?}"
    );
    // A neighbour announces it: ask that neighbour.
    assert!(
        st.peer_has(&pid("c"), [key(1)]),
        "a neighbour's have wakes waiters"
    );
    assert_eq!(
        decide(&st, clock.at(400), deadline, &key(1), &none, BUSY_UPLINK),
        Decision::Peer(pid("c"))
    );
    // A stranger's `have` changes nothing and wakes nobody.
    assert!(!st.peer_has(&pid("stranger"), [key(1)]));
}

#[test]
fn an_orphaned_segment_goes_to_the_origin_after_its_orphan_deadline_not_the_players() {
    let clock = Clock::new();
    let peers = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let me = last_ranked(&key(1), &peers);
    let st = live_swarm(&clock, &me, &peers);
    let none = HashSet::new();
    // A far player deadline: the orphan deadline (seeders gone) ends the wait first.
    let far = clock.at(60_000);
    let Decision::Wait { until } = decide(&st, clock.at(10), far, &key(1), &none, BUSY_UPLINK)
    else {
        panic!("expected a wait");
    };
    assert!(until < far, "the orphan deadline comes before the player's");
    assert_eq!(
        decide(&st, until, far, &key(1), &none, BUSY_UPLINK),
        Decision::Origin(FallbackReason::NoPeer)
    );
}

#[test]
fn a_busy_holder_is_waited_for_until_it_is_free_or_says_so() {
    let clock = Clock::new();
    let mut st = live_swarm(&clock, "me", &["n"]);
    let none = HashSet::new();
    let deadline = clock.at(5_000);
    st.peer_has(&pid("n"), [key(0)]);
    st.transfer_started(&pid("n"));
    let v = verdict(
        PeerFailure::Busy {
            retry_after: Some(Duration::from_millis(800)),
        },
        0.0,
    );
    assert_eq!(st.record_verdict(&pid("n"), clock.at(100), v), None);
    // The only holder is busy: wait until it takes requests again, not until the deadline.
    assert_eq!(
        decide(&st, clock.at(150), deadline, &key(0), &none, BUSY_UPLINK),
        Decision::Wait {
            until: clock.at(900)
        }
    );
    assert_eq!(
        decide(&st, clock.at(900), deadline, &key(0), &none, BUSY_UPLINK),
        Decision::Peer(pid("n"))
    );
    // Busy again, then it says it is free: asked at once.
    st.record_verdict(&pid("n"), clock.at(1_000), v);
    assert!(
        st.peer_free(&pid("n")),
        "a free message after busy wakes waiters"
    );
    assert!(!st.peer_free(&pid("n")), "a second one changes nothing");
    assert_eq!(
        decide(&st, clock.at(1_001), deadline, &key(0), &none, BUSY_UPLINK),
        Decision::Peer(pid("n"))
    );
}

#[test]
fn a_late_transfer_ends_at_the_deadline_and_the_origin_finishes_it() {
    let clock = Clock::new();
    let mut st = live_swarm(&clock, "me", &["n"]);
    st.peer_has(&pid("n"), [key(0)]);
    let deadline = clock.at(2_000);
    assert_eq!(
        decide(
            &st,
            clock.at(0),
            deadline,
            &key(0),
            &HashSet::new(),
            BUSY_UPLINK
        ),
        Decision::Peer(pid("n"))
    );
    st.transfer_started(&pid("n"));
    // The deadline came mid-transfer: not the peer's fault.
    st.transfer_abandoned(&pid("n"));
    let tried = HashSet::from([pid("n")]);
    assert_eq!(
        decide(&st, deadline, deadline, &key(0), &tried, BUSY_UPLINK),
        Decision::Origin(FallbackReason::PeerFailed)
    );
    // And the peer is not held against it: the next segment is asked of it again.
    st.peer_has(&pid("n"), [key(1)]);
    assert_eq!(
        decide(
            &st,
            clock.at(2_001),
            clock.at(4_000),
            &key(1),
            &HashSet::new(),
            BUSY_UPLINK
        ),
        Decision::Peer(pid("n"))
    );
}

#[test]
fn false_haves_are_struck_and_the_third_bans_and_reports() {
    let clock = Clock::new();
    let mut st = live_swarm(&clock, "me", &["liar", "honest"]);
    let mut bans = Vec::new();
    for i in 0..STRIKES_TO_BAN {
        st.transfer_started(&pid("liar"));
        let v = verdict(PeerFailure::NotFound, 0.5);
        bans.push(st.record_verdict(&pid("liar"), clock.at(u64::from(i) * 100), v));
    }
    assert_eq!(bans.last(), Some(&Some(ReportReason::FalseHave)));
    assert!(bans[..bans.len() - 1].iter().all(Option::is_none));
    assert!(st.ban(&pid("liar")), "the banned peer was a neighbour");
    st.peer_has(&pid("honest"), [key(0)]);
    assert_eq!(
        decide(
            &st,
            clock.at(500),
            clock.at(3_000),
            &key(0),
            &HashSet::new(),
            BUSY_UPLINK
        ),
        Decision::Peer(pid("honest"))
    );
    assert!(
        !st.peer_has(&pid("liar"), [key(0)]),
        "a banned peer's haves are ignored"
    );
}

#[test]
fn a_peer_that_presents_another_key_sits_out_the_longest_back_off() {
    let clock = Clock::new();
    let mut st = live_swarm(&clock, "me", &["impostor"]);
    st.peer_has(&pid("impostor"), [key(0), key(1)]);
    let v = verdict(PeerFailure::Other { retryable: false }, 0.0);
    assert_eq!(st.record_verdict(&pid("impostor"), clock.at(0), v), None);
    let s = &st.neighbours[&pid("impostor")].stats;
    assert!(
        s.in_backoff(clock.at(59_000)),
        "still backing off after 59 s"
    );
    assert!(!s.in_backoff(clock.at(60_001)), "back after a minute");
    // A retryable failure backs off for two seconds only.
    let mut st = live_swarm(&clock, "me", &["flaky"]);
    let v = verdict(PeerFailure::Other { retryable: true }, 0.0);
    st.record_verdict(&pid("flaky"), clock.at(0), v);
    let s = &st.neighbours[&pid("flaky")].stats;
    assert!(s.in_backoff(clock.at(1_900)) && !s.in_backoff(clock.at(2_001)));
}

#[test]
fn a_swarm_short_of_uplink_supplies_the_fresh_segment_from_an_idle_uplink() {
    let clock = Clock::new();
    let mut st = live_swarm(&clock, "me", &["n"]);
    st.peer_has(&pid("n"), [key(0), key(1)]);
    let none = HashSet::new();
    let (now, deadline) = (clock.at(10), clock.at(3_000));
    // Transfers as fast as the stream plays: the neighbour that holds it is asked.
    st.record_segment_size(&key(1), 750_000);
    for _ in 0..MIN_SAMPLES {
        st.record_transfer_rate(750_000, TARGET);
    }
    assert_eq!(
        decide(&st, now, deadline, &key(1), &none, IDLE),
        Decision::Peer(pid("n"))
    );
    // At half the stream's rate (an upload cap of 0.5x): an idle uplink fetches the fresh
    // segment from the origin at once, to pass it on.
    let mut changes = Vec::new();
    for _ in 0..MIN_SAMPLES * 4 {
        changes.extend(st.record_transfer_rate(375_000, TARGET));
    }
    assert_eq!(changes.len(), 1, "the change is reported once: {changes:?}");
    assert!(st.capacity.short());
    assert_eq!(
        decide(&st, now, deadline, &key(1), &none, IDLE),
        Decision::Origin(FallbackReason::Supply)
    );
    // A busy uplink could not pass it on: from the neighbour, as before.
    assert_eq!(
        decide(&st, now, deadline, &key(1), &none, BUSY_UPLINK),
        Decision::Peer(pid("n"))
    );
    // A segment every member has had for a while is not supplied.
    assert_eq!(
        decide(&st, now, deadline, &key(0), &none, IDLE),
        Decision::Peer(pid("n"))
    );
}

#[test]
fn the_players_deadline_follows_what_it_was_handed() {
    let clock = Clock::new();
    let mut st = live_swarm(&clock, "me", &[]);
    let (margin, max) = (Duration::from_millis(500), Duration::from_secs(10));
    // Nothing delivered yet: an empty buffer leaves P2P no time.
    assert_eq!(st.player_deadline(clock.at(0), margin, max), clock.at(0));
    st.delivered_to_player(clock.at(0), &key(0));
    st.delivered_to_player(clock.at(0), &key(0)); // a range request of the same segment
    st.delivered_to_player(clock.at(0), &key(1));
    // Two 2 s segments, less twice the assumed origin time (0.25 s) and the margin.
    assert_eq!(
        st.player_deadline(clock.at(0), margin, max),
        clock.at(4_000 - 500 - 500)
    );
    // A second on, a second less.
    assert_eq!(
        st.player_deadline(clock.at(1_000), margin, max),
        clock.at(3_000)
    );
}

#[test]
fn a_playlist_reload_keeps_the_newest_url_and_forgets_far_behind_the_window() {
    let clock = Clock::new();
    let mut st = live_swarm(&clock, "me", &[]);
    let mut renewed = seg(1);
    renewed.url = url::Url::parse("https://cdn.example/live/seg1.ts?token=new").unwrap();
    assert!(st
        .learn_segments(clock.at(2_000), [renewed], false, TARGET)
        .is_empty());
    assert_eq!(st.segments[&key(1)].url.query(), Some("token=new"));
    // A long live run: the state stays bounded.
    for n in 2..1_000 {
        st.learn_segments(clock.at(n * 2_000), [seg(n)], false, TARGET);
    }
    assert!(
        st.segments.len() <= 128,
        "{} segments kept",
        st.segments.len()
    );
    assert!(st.segments.contains_key(&key(999)));
}

fn offer(p: &str, port: u16) -> Offer {
    Offer {
        peer: pid(p),
        addr: Some(Some(format!("127.0.0.1:{port}").parse().unwrap())),
        fingerprint: "00".repeat(32),
        quic: None,
    }
}

#[test]
fn an_announce_connects_offered_members_up_to_the_limit_and_skips_the_unusable() {
    let clock = Clock::new();
    let mut st = SwarmState::new(pid("me"), true);
    let mut keyless = offer("keyless", 3);
    keyless.fingerprint.clear();
    let excluded = Offer {
        addr: None,
        ..offer("excluded", 4)
    };
    let offers = [
        offer("me", 9),
        offer("a", 1),
        offer("b", 2),
        keyless,
        excluded,
        offer("c", 5),
    ];
    let plan = st.handle_announce(clock.at(0), true, "k".into(), &offers, 2, |_| false);
    let connect: Vec<&str> = plan.connect.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        connect,
        ["a", "b"],
        "two slots, taken in the tracker's order"
    );
    assert_eq!(plan.excluded, [pid("excluded")]);
    assert!(st.members.contains(&pid("keyless")) && st.members.contains(&pid("c")));
    assert!(!st.members.contains(&pid("me")) && !st.members.contains(&pid("excluded")));
    assert!(st.p2p_allowed && st.peer_key.as_deref() == Some("k"));
}

#[test]
fn with_a_full_list_the_busiest_neighbour_makes_way_for_a_newcomer() {
    let clock = Clock::new();
    let mut st = live_swarm(&clock, "me", &["quiet", "busy"]);
    let busy = verdict(PeerFailure::Busy { retry_after: None }, 0.0);
    for i in 0..3 {
        st.record_verdict(&pid("busy"), clock.at(i), busy);
    }
    st.record_verdict(&pid("quiet"), clock.at(0), busy);
    let offers = [offer("quiet", 1), offer("busy", 2), offer("new", 3)];
    let plan = st.handle_announce(clock.at(0), true, "k".into(), &offers, 2, |_| false);
    assert_eq!(plan.rotated, Some((pid("busy"), pid("new"))));
    assert_eq!(plan.connect.len(), 1);
    assert!(!st.neighbours.contains_key(&pid("busy")));
    assert!(
        st.members.contains(&pid("busy")),
        "it stays a member, just not followed"
    );
    assert_eq!(
        st.neighbours[&pid("quiet")].stats.busy_answers,
        0,
        "the counts start again after a rotation"
    );
    // Nobody busy since: no rotation.
    let plan = st.handle_announce(clock.at(0), true, "k".into(), &offers, 2, |_| false);
    assert_eq!(plan.rotated, None);
}

#[test]
fn p2p_turned_off_or_an_excluded_address_drops_neighbours() {
    let clock = Clock::new();
    let mut st = live_swarm(&clock, "me", &["a", "b"]);
    let banned_net: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    st.neighbours.get_mut(&pid("b")).unwrap().addr.addr = (banned_net, 1).into();
    let offers = [offer("a", 1000), offer("b", 1001)];
    // The swarm's policy now excludes b's address.
    let plan = st.handle_announce(clock.at(0), true, "k".into(), &offers, 4, |ip| {
        ip == banned_net
    });
    assert_eq!(
        plan.dropped,
        [pid("b")],
        "b now sits at an excluded address"
    );
    assert!(!st.members.contains(&pid("b")) && st.neighbours.contains_key(&pid("a")));
    // P2P turned off: every neighbour goes, members stay for when it returns.
    let plan = st.handle_announce(clock.at(0), false, "k".into(), &offers, 4, |_| false);
    assert_eq!(plan.dropped, [pid("a")]);
    assert!(st.neighbours.is_empty() && !st.p2p_allowed);
    assert!(st.members.contains(&pid("a")));
}

#[test]
fn a_member_with_no_usable_path_is_left_alone_for_the_back_off_then_tried_again() {
    let clock = Clock::new();
    let mut st = SwarmState::new(pid("me"), false);
    let offers = [offer("far", 1), offer("near", 2)];
    let plan = st.handle_announce(clock.at(0), true, "k".into(), &offers, 4, |_| false);
    assert_eq!(plan.connect.len(), 2);
    for (peer, addr) in plan.connect {
        st.neighbours.insert(peer, Neighbour::new(addr));
    }
    // The connection to `far` stayed on the relay past the wait for a direct path.
    st.record_unreachable(&pid("far"), clock.at(1_000));
    assert!(!st.neighbours.contains_key(&pid("far")) && !st.members.contains(&pid("far")));
    // Announces within the back-off neither offer it again nor count it as a member.
    let just_before = 1_000 + UNREACHABLE_BACKOFF.as_millis() as u64 - 1;
    for at in [3_000, 30_000, just_before] {
        let plan = st.handle_announce(clock.at(at), true, "k".into(), &offers, 4, |_| false);
        assert!(plan.connect.is_empty(), "at {at} ms: {:?}", plan.connect);
        assert!(!st.members.contains(&pid("far")));
    }
    // Then it is tried again.
    let after = just_before + 1;
    let plan = st.handle_announce(clock.at(after), true, "k".into(), &offers, 4, |_| false);
    let connect: Vec<&str> = plan.connect.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(connect, ["far"]);
    assert!(st.unreachable.is_empty());
}
