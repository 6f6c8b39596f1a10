//! A live HLS swarm end to end: ffmpeg encodes now, nginx serves, the tracker groups four
//! `shoal-edge` processes, and a real player (ffmpeg) plays through each for a minute.
//!
//! What a viewer and a provider rely on: every segment byte equals the origin's, most bytes
//! come from peers, and a proxy that dies takes nobody else's playback with it.

mod support;

use shoal_testkit::{FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx, PlayerOpts, RecordingRelay};
use std::time::Duration;
use support::{assert_swarm_offload, scrape, sum, Edge};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_swarm_delivers_identical_bytes_mostly_from_peers() {
    let dir = tempfile::tempdir().unwrap();
    let mut live = LiveHls::start(dir.path(), LiveHlsOpts::default()).unwrap();
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

    // Viewers arrive a little apart, as they do.
    let mut players = Vec::new();
    for relay in &relays {
        let url = relay.url(&format!("/{origin}{}", LiveHls::MASTER));
        players.push(
            FfmpegPlayer::start_with(&url, PlayerOpts::new(Duration::from_secs(60))).unwrap(),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // A proxy dies mid-run; the others must not notice beyond losing a neighbour.
    tokio::time::sleep(Duration::from_secs(25)).await;
    edges[3].kill();

    let mut outcomes = Vec::new();
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
        outcomes.push(o);
    }

    // Every segment each surviving player received equals nginx's file.
    for (i, relay) in relays.iter().enumerate().take(3) {
        let segments: Vec<_> = relay
            .records()
            .into_iter()
            .filter(|r| r.uri.contains(".ts") && (r.status == 200 || r.status == 206))
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

    // Offload as each proxy and the tracker see it.
    assert_swarm_offload(&edges[..3]).await;
    // Loopback peers send far faster than the stream plays: no proxy takes the swarm for
    // one short of uplink, so no segment is fetched to supply it.
    for (i, e) in edges.iter().enumerate().take(3) {
        let supplied = sum(
            &e.metrics().await,
            "shoal_edge_fallbacks_total{reason=\"supply\"}",
        );
        assert_eq!(supplied, 0.0, "edge {i} supplied segments on loopback");
    }
    // Final counters reach the tracker when the proxies leave.
    drop(players);
    for mut e in edges.into_iter().take(3) {
        if let Some(mut c) = e.child.take() {
            // SIGTERM: a graceful stop that leaves swarms and reports.
            let pid = c.0.id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
            let _ = c.0.wait();
        }
    }
    let t = scrape(&format!("{tracker_url}/metrics")).await;
    let p2p = sum(&t, "shoal_tracker_reported_bytes_total{source=\"p2p\"}");
    let cdn = sum(&t, "shoal_tracker_reported_bytes_total{source=\"cdn\"}");
    assert!(p2p + cdn > 0.0, "tracker got no reports");
    let fleet = p2p / (p2p + cdn);
    eprintln!("tracker: fleet offload {fleet:.3} (p2p {p2p} B, cdn {cdn} B)");
    assert!(
        fleet > 0.5,
        "fleet offload at the tracker {fleet:.2} (p2p {p2p}, cdn {cdn})"
    );
    drop(live);
}
