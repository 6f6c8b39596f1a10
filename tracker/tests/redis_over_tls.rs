//! The Redis stores over TLS: `rediss://` (one server) and `rediss+cluster://` (a Redis
//! Cluster whose nodes serve TLS only, bus and replication included), verified against the
//! CA given with `redis_ca`; without it the test CA is unknown and the tracker does not start.

mod common;

use common::tls::TestCa;
use shoal_testkit::{RedisCluster, RedisServer, RedisTls};
use shoal_tracker::config::{Config, StoreSpec};
use std::time::Duration;

fn tls_files(dir: &std::path::Path) -> RedisTls {
    let ca = TestCa::new("Shoal test Redis CA");
    let server = ca.issue(dir, "redis");
    RedisTls {
        cert: server.cert,
        key: server.key,
        ca: ca.write(dir, "redis-ca.pem"),
    }
}

fn config(store: StoreSpec, ca: Option<std::path::PathBuf>) -> Config {
    Config {
        redis_ca: ca,
        ..common::config(store, Duration::from_secs(20))
    }
}

/// Three peers in two swarms announce; each sees the other member of its swarm, and the
/// gauges count all three.
async fn swarms_work(tracker: &shoal_tracker::RunningTracker) {
    let client = reqwest::Client::new();
    let url = format!("{}/v1/announce", tracker.url());
    let mut answers = Vec::new();
    for (peer, swarm) in [("a", "tls-1"), ("b", "tls-1"), ("c", "tls-2")] {
        let r = client
            .post(&url)
            .json(&common::announce_body(peer, swarm, None))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{peer}: {}", r.text().await.unwrap());
        answers.push(r.json::<shoal_proto::AnnounceResponse>().await.unwrap());
    }
    assert_eq!(answers[1].neighbours.len(), 1, "b sees a");
    assert_eq!(answers[1].neighbours[0].peer_id.as_str(), "a");
    assert!(answers[2].neighbours.is_empty(), "c is alone in tls-2");
    let metrics = client
        .get(format!("{}/metrics", tracker.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(common::metric(&metrics, "shoal_tracker_peers"), 3.0);
    assert_eq!(common::metric(&metrics, "shoal_tracker_swarms"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_server_over_tls_is_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    let redis = RedisServer::start_tls(&tls).expect("redis-server with --tls-port");
    assert!(redis.url.starts_with("rediss://"), "{}", redis.url);
    let store = StoreSpec::Redis(redis.url.clone());

    let tracker = shoal_tracker::spawn(config(store.clone(), Some(tls.ca.clone())))
        .await
        .unwrap();
    swarms_work(&tracker).await;
    tracker.shutdown().await.unwrap();

    // The system's roots do not know the test CA: the store cannot be opened, and says why.
    let e = shoal_tracker::spawn(config(store, None)).await.unwrap_err();
    let text = format!("{e}");
    assert!(
        text.contains("cannot open the store") && text.to_lowercase().contains("certificate"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_over_tls_is_verified_against_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path());
    let cluster =
        tokio::task::spawn_blocking(move || RedisCluster::start_tls(&tls).map(|c| (c, tls)))
            .await
            .unwrap();
    let (cluster, tls) = cluster.expect("a Redis Cluster over TLS");
    assert!(
        cluster.url.starts_with("rediss+cluster://"),
        "{}",
        cluster.url
    );
    let store: StoreSpec = cluster.url.parse().unwrap();
    let tracker = shoal_tracker::spawn(config(store.clone(), Some(tls.ca.clone())))
        .await
        .unwrap();
    swarms_work(&tracker).await;
    tracker.shutdown().await.unwrap();

    let e = shoal_tracker::spawn(config(store, None)).await.unwrap_err();
    assert!(format!("{e}").contains("cannot open the store"), "{e}");
}
