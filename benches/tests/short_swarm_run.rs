//! A short live swarm (6 real nodes, 30 s) through the benchmark harness: what must always
//! hold, whatever the timing.

use shoal_bench::{run, Progress, RunConfig};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_swarm_run_delivers_origin_bytes_mostly_shared_and_counts_them_exactly() {
    let cfg = RunConfig {
        ramp: Duration::from_secs(5),
        ..RunConfig::live_default(6, Duration::from_secs(30))
    };
    let r = run(cfg, Arc::new(Progress::default())).await.unwrap();

    // Every viewer played, and every segment byte it got equals what the origin published
    // for that sequence number (the player hashes each one).
    assert_eq!(r.viewers, 6);
    assert_eq!(r.startup.never_started, 0);
    assert_eq!(r.player_errors, 0);
    assert_eq!(r.corrupt_segments, 0);
    assert!(r.player_bytes.p2p + r.player_bytes.cdn_segments > 0);

    // Peers carried part of the stream.
    assert!(r.offload > 0.0, "no byte came from peers: {r:#?}");

    // The origin's own count of what it sent the nodes equals what the nodes say they fetched
    // from it, exactly (the tracker's digest fetches are counted apart).
    assert_eq!(r.origin.to_nodes(), r.nodes.origin_bytes);
    // And the nodes' delivery counters agree with what the players received.
    assert_eq!(r.nodes.p2p_bytes, r.player_bytes.p2p);
    assert_eq!(
        r.nodes.cdn_bytes,
        r.player_bytes.cdn_segments + r.player_bytes.manifests
    );
}
