//! Three edges play a live stream through two tracker instances on a Redis Cluster. A master is
//! SIGKILLed (its replica takes over), then the whole cluster goes away and comes back: players
//! never fail, the edges say the tracker's store is down, and P2P resumes each time.

mod support;

use shoal_testkit::{FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx, PlayerOpts, RedisCluster};
use std::time::Duration;
use support::{scrape, sum, Edge};

async fn p2p_bytes(edges: &[Edge]) -> f64 {
    let mut t = 0.0;
    for e in edges {
        t += sum(&e.metrics().await, "shoal_edge_bytes_total{source=\"p2p\"}");
    }
    t
}

/// Waits (bounded) until the edges' P2P bytes grow past `from`.
async fn p2p_grows(edges: &[Edge], from: f64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = p2p_bytes(edges).await;
        if now > from {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "P2P did not resume {what} (p2p bytes stay at {now})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn players_ride_through_a_failover_and_a_full_redis_outage() {
    let logs = tempfile::tempdir().unwrap();
    // Each edge's log goes to a file (support::Edge), read at the end.
    std::env::set_var("SHOAL_TEST_LOG_DIR", logs.path());
    let dir = tempfile::tempdir().unwrap();
    let mut live = LiveHls::start(dir.path(), LiveHlsOpts::default()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();
    let origin = nginx.host_port();

    let mut cluster = tokio::task::spawn_blocking(|| {
        RedisCluster::start_with_node_timeout(Duration::from_millis(2000))
    })
    .await
    .unwrap()
    .expect("starting a Redis Cluster");
    let mut trackers = Vec::new();
    for _ in 0..2 {
        let config = shoal_tracker::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            store: shoal_tracker::config::StoreSpec::RedisCluster(cluster.url.clone()),
            announce_interval: Duration::from_secs(2),
            origins: vec![origin.clone()],
            origin_schemes: vec![format!("{origin}=http")],
            ..Default::default()
        };
        trackers.push(shoal_tracker::spawn(config).await.unwrap());
    }
    // Two edges on one instance, one on the other: they share swarms only through Redis.
    let edges: Vec<Edge> = (0..3)
        .map(|i| Edge::start(&origin, Some(&trackers[i % 2].url()), &[]))
        .collect();
    let mut players: Vec<FfmpegPlayer> = edges
        .iter()
        .map(|e| {
            let url = e.url(&origin, LiveHls::MASTER);
            FfmpegPlayer::start_with(&url, PlayerOpts::new(Duration::from_secs(70))).unwrap()
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(12)).await;
    let before = p2p_bytes(&edges).await;
    assert!(before > 0.0, "the edges share segments before any failure");

    // A master dies; its replica takes over.
    cluster = tokio::task::spawn_blocking(move || {
        cluster
            .wait_ready(Duration::from_secs(30))
            .map(|()| cluster)
    })
    .await
    .unwrap()
    .unwrap();
    let victim = cluster.masters().unwrap()[0];
    cluster.kill(victim.port).unwrap();
    let killed = tokio::time::Instant::now();
    cluster = tokio::task::spawn_blocking(move || {
        cluster
            .wait_ready(Duration::from_secs(60))
            .map(|()| cluster)
    })
    .await
    .unwrap()
    .unwrap();
    eprintln!("replica took over {:?} after the SIGKILL", killed.elapsed());
    let after_failover = p2p_bytes(&edges).await;
    p2p_grows(&edges, after_failover, "after the failover").await;

    // All of Redis goes away for a while.
    cluster.stop_all();
    tokio::time::sleep(Duration::from_secs(6)).await;
    for t in &trackers {
        let r = reqwest::get(format!("{}/healthz", t.url())).await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    }
    let cluster = tokio::task::spawn_blocking(move || cluster.start_all().map(|()| cluster))
        .await
        .unwrap()
        .expect("restarting the cluster");
    let back = p2p_bytes(&edges).await;
    p2p_grows(&edges, back, "after Redis came back").await;

    for (i, p) in players.iter_mut().enumerate() {
        let o = p.wait(Duration::from_secs(150)).await.unwrap();
        assert!(o.success(), "player {i} failed:\n{}", o.stderr);
        assert!(
            o.error_lines().is_empty(),
            "player {i}: {:?}",
            o.error_lines()
        );
    }
    let mut errors = 0.0;
    for e in &edges {
        errors += sum(&e.metrics().await, "shoal_edge_tracker_errors_total");
    }
    assert!(errors > 0.0, "the edges noticed the outage");
    // The edges logged what the tracker said: its store is down.
    let mut said = 0;
    for f in std::fs::read_dir(logs.path()).unwrap() {
        let log = std::fs::read_to_string(f.unwrap().path()).unwrap();
        if log.contains("announce failed") && log.contains("store (Redis) is down") {
            said += 1;
        }
    }
    assert!(said > 0, "no edge logged that the tracker's store is down");
    // Every edge announced again after the restart (the cluster came back empty).
    let mut peers = 0.0;
    for t in &trackers {
        peers = f64::max(
            peers,
            sum(
                &scrape(&format!("{}/metrics", t.url())).await,
                "shoal_tracker_peers",
            ),
        );
    }
    assert_eq!(peers, 3.0, "all edges rejoined");
    drop(cluster);
    drop(live);
}
