//! The tracker going away must not break playback; when it returns, proxies rejoin.

mod support;

use shoal_testkit::{FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx, PlayerOpts};
use std::time::Duration;
use support::{scrape, sum, Edge};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn playback_survives_a_tracker_outage_and_p2p_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut live = LiveHls::start(dir.path(), LiveHlsOpts::default()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();
    let origin = nginx.host_port();

    let listen: std::net::SocketAddr = ([127, 0, 0, 1], shoal_testkit::free_port()).into();
    let config = shoal_tracker::config::Config {
        listen,
        announce_interval: Duration::from_secs(1),
        origins: vec![origin.clone()],
        origin_schemes: vec![format!("{origin}=http")],
        ..Default::default()
    };
    let tracker = shoal_tracker::spawn(config.clone()).await.unwrap();
    let tracker_url = format!("http://{listen}");

    let edges: Vec<Edge> = (0..3)
        .map(|_| Edge::start(&origin, Some(&tracker_url), &[]))
        .collect();
    let mut players: Vec<FfmpegPlayer> = edges
        .iter()
        .map(|e| {
            let url = e.url(&origin, LiveHls::MASTER);
            FfmpegPlayer::start_with(&url, PlayerOpts::new(Duration::from_secs(45))).unwrap()
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(12)).await;
    tracker.shutdown().await.unwrap();
    let p2p_at_outage: f64 = {
        let mut t = 0.0;
        for e in &edges {
            t += sum(&e.metrics().await, "shoal_edge_bytes_total{source=\"p2p\"}");
        }
        t
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let tracker = shoal_tracker::spawn(config).await.unwrap();

    for (i, p) in players.iter_mut().enumerate() {
        let o = p.wait(Duration::from_secs(120)).await.unwrap();
        assert!(
            o.success(),
            "player {i} failed during the outage:\n{}",
            o.stderr
        );
        assert!(
            o.error_lines().is_empty(),
            "player {i}: {:?}",
            o.error_lines()
        );
    }
    let mut p2p_end = 0.0;
    let mut errors = 0.0;
    for e in &edges {
        let m = e.metrics().await;
        p2p_end += sum(&m, "shoal_edge_bytes_total{source=\"p2p\"}");
        errors += sum(&m, "shoal_edge_tracker_errors_total");
    }
    assert!(errors > 0.0, "the outage was noticed");
    assert!(p2p_end > p2p_at_outage, "P2P went on after the outage");
    // Every proxy announced to the restarted tracker.
    let t = scrape(&format!("{tracker_url}/metrics")).await;
    assert_eq!(sum(&t, "shoal_tracker_peers"), 3.0, "all proxies rejoined");
    drop(tracker);
    drop(live);
}
