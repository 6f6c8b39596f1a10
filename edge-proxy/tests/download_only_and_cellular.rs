//! The rules a phone needs, enforced by the node: a download-only node takes peer bytes but
//! is handed to nobody and uploads nothing; a node told it is on mobile data stops uploading
//! at once while its player plays on, and serves again once back on Wi-Fi. Real nodes (the
//! SDK in-process), the real tracker, nginx with a live ffmpeg encode, ffmpeg players.

mod support;

use shoal::config::NetworkKind;
use shoal::{Node, NodeConfig};
use shoal_testkit::{FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx, PlayerOpts};
use std::time::Duration;

fn play(node: &Node, origin: &str, secs: u64) -> FfmpegPlayer {
    let url = url::Url::parse(&format!("http://{origin}{}", LiveHls::MASTER)).unwrap();
    let local = node.player_url(&url).expect("an allowed origin");
    FfmpegPlayer::start_with(&local, PlayerOpts::new(Duration::from_secs(secs))).unwrap()
}

fn p2p_bytes(node: &Node) -> u64 {
    node.stats().p2p_bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn download_only_and_mobile_data_nodes_upload_nothing_and_keep_playing() {
    let dir = tempfile::tempdir().unwrap();
    let mut live = LiveHls::start(dir.path(), LiveHlsOpts::default()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();
    let origin = nginx.host_port();
    let tracker = support::tracker_for(&origin, Duration::from_secs(2)).await;

    let seeder = Node::start(support::node_config(&origin, &tracker.url()))
        .await
        .unwrap();
    let leech = Node::start(NodeConfig {
        download_only: true,
        ..support::node_config(&origin, &tracker.url())
    })
    .await
    .unwrap();
    assert!(seeder.uploads() && !leech.uploads());

    let mut players = vec![play(&seeder, &origin, 50)];
    tokio::time::sleep(Duration::from_secs(3)).await;
    players.push(play(&leech, &origin, 45));

    // The download-only node gets peer bytes from the seeder; nobody is handed it, so the
    // seeder never follows it and it uploads nothing.
    let leech_ids: Vec<_> = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ids: Vec<_> = leech.swarms().into_iter().map(|s| s.peer_id).collect();
            if (!ids.is_empty() && p2p_bytes(&leech) > 0) || tokio::time::Instant::now() > deadline
            {
                break ids;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    assert!(
        p2p_bytes(&leech) > 0,
        "the download-only node got no peer bytes"
    );
    for _ in 0..20 {
        for s in seeder.swarms() {
            assert!(
                !s.neighbours.iter().any(|n| leech_ids.contains(n)),
                "the seeder was handed the download-only node: {:?}",
                s.neighbours
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(leech.stats().uploaded_bytes, 0);
    let uploaded_on_wifi = seeder.stats().uploaded_bytes;
    assert!(uploaded_on_wifi > 0, "the seeder uploaded nothing");

    // The seeder's app says it is on mobile data: from then on it uploads nothing, while
    // both players play on.
    seeder.set_network(NetworkKind::Cellular);
    assert!(!seeder.uploads());
    assert_eq!(seeder.network(), NetworkKind::Cellular);
    // A transfer already on the wire may still finish; nothing starts after it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flat_from = seeder.stats().uploaded_bytes;
    let leech_p2p = p2p_bytes(&leech);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        seeder.stats().uploaded_bytes,
        flat_from,
        "the seeder uploaded on mobile data"
    );
    assert_eq!(
        p2p_bytes(&leech),
        leech_p2p,
        "the download-only node still got peer bytes from a node on mobile data"
    );
    assert!(
        leech.stats().cdn_bytes > 0,
        "the download-only node's player kept playing from the CDN"
    );

    // Back on Wi-Fi, it serves again.
    seeder.set_network(NetworkKind::Wifi);
    assert!(seeder.uploads());
    let served_again =
        shoal_testkit::poll_until(Duration::from_secs(25), Duration::from_millis(250), || {
            let now = seeder.stats().uploaded_bytes;
            async move { (now > flat_from).then_some(now) }
        })
        .await;
    assert!(
        served_again.is_some(),
        "the seeder did not serve again back on Wi-Fi"
    );

    for (i, p) in players.iter_mut().enumerate() {
        let o = p.wait(Duration::from_secs(120)).await.unwrap();
        assert!(
            o.success() && o.error_lines().is_empty(),
            "player {i} failed: {:?} {:?}\n{}",
            o.status,
            o.error_lines(),
            o.stderr
        );
    }
    seeder.shutdown().await;
    leech.shutdown().await;
    drop(live);
}
