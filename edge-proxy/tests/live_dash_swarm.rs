//! A live DASH swarm end to end: ffmpeg encodes a dynamic MPD now (`SegmentTimeline` with
//! `$Number$` names), nginx serves it, the tracker groups four `shoal-edge` processes, and a real player (ffmpeg's DASH
//! demuxer) plays through each for a minute.
//!
//! What a viewer and a provider rely on: every segment byte equals the origin's, most bytes
//! come from peers, and a proxy that dies takes nobody else's playback with it.
//!
//! The players pace at the media's rate (`-re`) and the MPD uses a timeline: ffmpeg 5.1's DASH
//! demuxer re-reads one segment forever on a live `$Number$` template without a timeline, and
//! without pacing it runs ahead of the live edge into 404s, directly against the origin too.

mod support;

use shoal_testkit::{FfmpegPlayer, LiveDash, LiveDashOpts, Nginx, PlayerOpts, RecordingRelay};
use std::time::Duration;
use support::{assert_swarm_offload, Edge};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_dash_swarm_delivers_identical_bytes_mostly_from_peers() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LiveDashOpts {
        timeline: true,
        ..LiveDashOpts::default()
    };
    let mut live = LiveDash::start(dir.path(), opts).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();
    let origin = nginx.host_port();

    let tracker = support::tracker_for(&origin, Duration::from_secs(2)).await;
    let tracker_url = tracker.url();

    let mut edges: Vec<Edge> = (0..4)
        .map(|_| Edge::start(&origin, Some(&tracker_url), &[]))
        .collect();
    let relays: Vec<RecordingRelay> = edges
        .iter()
        .map(|e| RecordingRelay::start(e.addr).unwrap())
        .collect();

    let mut players = Vec::new();
    for relay in &relays {
        let url = relay.url(&format!("/{origin}{}", LiveDash::MPD));
        let opts = PlayerOpts {
            realtime: true,
            ..PlayerOpts::new(Duration::from_secs(60))
        };
        players.push(FfmpegPlayer::start_with(&url, opts).unwrap());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // A proxy dies mid-run; the others must not notice beyond losing a neighbour.
    tokio::time::sleep(Duration::from_secs(25)).await;
    edges[3].kill();

    for (i, p) in players.iter_mut().enumerate().take(3) {
        let o = p.wait(Duration::from_secs(120)).await.unwrap();
        assert!(
            o.success(),
            "player {i} failed: {:?}\n{}",
            o.status,
            o.stderr
        );
        assert!(
            o.error_lines().is_empty(),
            "player {i} reported errors: {:?}",
            o.error_lines()
        );
    }

    // Every segment each surviving player received equals the origin's file.
    for (i, relay) in relays.iter().enumerate().take(3) {
        let segments: Vec<_> = relay
            .records()
            .into_iter()
            .filter(|r| r.uri.contains("/seg-") && (r.status == 200 || r.status == 206))
            .collect();
        assert!(
            segments.len() >= 20,
            "player {i} got only {} segments",
            segments.len()
        );
        for r in segments {
            assert!(r.complete, "player {i}: {} cut short", r.uri);
            assert!(
                r.matches_file(&live.archived(&r.uri)).unwrap(),
                "player {i}: {} differs from the origin",
                r.uri
            );
        }
    }

    assert_swarm_offload(&edges[..3]).await;
    drop(players);
    drop(edges);
    drop(live);
}
