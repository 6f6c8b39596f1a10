//! VOD: a second viewer of the same rendition gets its segments from the first viewer's proxy,
//! byte-identical to the origin's, for fMP4 (with `EXT-X-MAP`), TS and single-file byte-range
//! renditions.

mod support;

use shoal_testkit::{encode_vod_ladder, Nginx, RecordingRelay, VodLadder};
use std::time::Duration;
use support::{assert_identical_media, play_vod, sum, Edge};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_viewer_of_each_rendition_is_served_by_peers() {
    let dir = tempfile::tempdir().unwrap();
    let ladder = encode_vod_ladder(dir.path()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    let origin = nginx.host_port();
    let tracker = support::tracker_for(&origin, Duration::from_secs(2)).await;
    let first = Edge::start(&origin, Some(&tracker.url()), &[]);
    let second = Edge::start(&origin, Some(&tracker.url()), &[]);
    let relay_first = RecordingRelay::start(first.addr).unwrap();
    let relay_second = RecordingRelay::start(second.addr).unwrap();

    for path in [VodLadder::FMP4, VodLadder::TS, VodLadder::SINGLE_FILE] {
        play_vod(&relay_first, &origin, path).await;
        let before = sum(
            &second.metrics().await,
            "shoal_edge_bytes_total{source=\"p2p\"}",
        );
        play_vod(&relay_second, &origin, path).await;
        let after = second.metrics().await;
        let p2p = sum(&after, "shoal_edge_bytes_total{source=\"p2p\"}") - before;
        assert!(
            p2p > 0.0,
            "{path}: the second viewer got nothing from peers"
        );
    }

    // Everything both players received equals the origin's files (ranges included).
    for relay in [&relay_first, &relay_second] {
        assert_identical_media(relay, &nginx, 30);
    }
    // Most of the second viewer's media came from the first.
    let m = second.metrics().await;
    let p2p = sum(&m, "shoal_edge_bytes_total{source=\"p2p\"}");
    let cdn = sum(&m, "shoal_edge_bytes_total{source=\"cdn\"}");
    eprintln!("second viewer: p2p {p2p} B, cdn {cdn} B");
    assert!(
        p2p / (p2p + cdn) > 0.5,
        "second viewer offload {}",
        p2p / (p2p + cdn)
    );
    drop(ladder);
}
