//! A node whose neighbour list is full replaces the neighbour that keeps answering "busy" with
//! a member the tracker offers, so that the first nodes of a swarm do not stay everyone's
//! neighbours while later ones serve nobody.

use shoal::config::Rate;
mod support;

use shoal::{Node, NodeConfig};
use shoal_proto::PeerId;
use shoal_testkit::{encode_vod_ladder, eventually, poll_until, Nginx, VodLadder};
use std::time::Duration;
use support::{load_playlist, node_config, play_node, tracker_for};

/// How long the swarm may take to rearrange itself.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The peer id `node` uses in its only swarm, and the ids of the neighbours it follows there.
fn swarm_view(node: &Node) -> (PeerId, Vec<PeerId>) {
    let swarm = node
        .swarms()
        .into_iter()
        .next()
        .expect("the node joined a swarm");
    (swarm.peer_id, swarm.neighbours)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_neighbour_that_keeps_answering_busy_makes_way_for_another_member() {
    let dir = tempfile::tempdir().unwrap();
    let _ladder = encode_vod_ladder(dir.path()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    let origin = nginx.host_port();
    let tracker = tracker_for(&origin, Duration::from_secs(1)).await;
    let url = url::Url::parse(&nginx.url(VodLadder::TS)).unwrap();

    // The first member holds everything behind a thin uplink: one upload at a time, slowly.
    let first = Node::start(NodeConfig {
        upload_limit: Some(Rate::from_bits_per_sec(64_000)),
        ..node_config(&origin, &tracker.url())
    })
    .await
    .unwrap();
    play_node(&first, &url).await;
    // A viewer with room for one neighbour joins while the first is the only member.
    let viewer = Node::start(NodeConfig {
        max_peers: 1,
        ..node_config(&origin, &tracker.url())
    })
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let (base, _) = load_playlist(&viewer, &url).await;
    let (first_id, _) = swarm_view(&first);
    let follows = |id: &PeerId| swarm_view(&viewer).1 == [id.clone()];
    let followed = || async { follows(&first_id) };
    eventually(TIMEOUT, "the viewer to follow the first member", followed).await;
    // A second member with a free uplink arrives.
    let second = Node::start(node_config(&origin, &tracker.url()))
        .await
        .unwrap();
    let segments = play_node(&second, &url).await;
    let (second_id, _) = swarm_view(&second);

    // The viewer plays; its read-ahead asks the first member for several segments at once,
    // and the first, busy with one, answers "busy" to the others.
    for s in segments.iter().take(3) {
        let r = http.get(base.join(s).unwrap()).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
    }
    let rotated = poll_until(TIMEOUT, Duration::from_millis(100), || async {
        follows(&second_id).then_some(())
    })
    .await;
    assert!(
        rotated.is_some(),
        "the viewer still follows {:?}, not the idle member {second_id}",
        swarm_view(&viewer).1
    );
    viewer.shutdown().await;
    second.shutdown().await;
    first.shutdown().await;
}
