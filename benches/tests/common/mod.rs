//! What a short swarm run must show whatever the timing, for every stream format.

use shoal_bench::{run, Progress, RunConfig, RunResult};
use std::sync::Arc;
use std::time::Duration;

/// Runs a live swarm of 6 real nodes for 30 s with `configure` applied (which may change the
/// node count), and checks the invariants every run keeps.
pub async fn short_run_keeps_its_invariants(configure: impl FnOnce(&mut RunConfig)) -> RunResult {
    let mut cfg = RunConfig {
        ramp: Duration::from_secs(5),
        ..RunConfig::live_default(6, Duration::from_secs(30))
    };
    configure(&mut cfg);
    let nodes = cfg.nodes as u64;
    let r = run(cfg, Arc::new(Progress::default())).await.unwrap();

    // Every viewer played, and every segment byte it got equals what the origin published
    // for that sequence number (the player hashes each one).
    assert_eq!(r.viewers, nodes);
    assert_eq!(r.startup.never_started, 0);
    assert_eq!(r.player_errors, 0, "{:?}", r.player_error_samples);
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
    r
}
