//! A short live HLS swarm (4 nodes, 30 s) in the shaped mode: each node in its own network
//! namespace behind a 5 Mbit/s up, 25 Mbit/s down link with a 40 ms round trip. The short
//! run's invariants hold, and no node sent faster than its uplink allows. Needs root and
//! iproute2: under `CI=true` it runs or fails; elsewhere it says why it is skipped.

mod common;

use shoal_bench::netns::{burst_bytes, check_available, Shaping};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shaped_swarm_run_keeps_the_invariants_and_no_node_outruns_its_uplink() {
    if let Err(why) = check_available() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(!ci, "CI=true, and the shaped run cannot run here: {why}");
        println!("skipped: {why}");
        return;
    }
    let shaping = Shaping::home();
    let r = common::short_run_keeps_its_invariants(|c| {
        c.nodes = 4;
        c.shaping = Some(shaping);
    })
    .await;

    // Every node's link was shaped and reported, and none carried more than its token
    // bucket lets through: over the link's life, the rate plus one bucket; between two
    // readings of its counters (at least half a second apart), the same.
    assert_eq!(r.links.len(), 4, "{r:#?}");
    let burst = burst_bytes(shaping.uplink_bps) as f64;
    for l in &r.links {
        let cap = shaping.uplink_bps as f64 / 8.0 * l.seconds + burst;
        assert!(l.uplink_bytes as f64 <= cap, "{l:?} over {cap} bytes");
        let peak_cap = shaping.uplink_bps as f64 + burst * 8.0 / 0.5;
        assert!(l.peak_uplink_bps <= peak_cap, "{l:?} over {peak_cap} bit/s");
        assert!(l.downlink_bytes > 0, "{l:?}");
    }
    // The nodes did upload to each other over their links.
    assert!(
        r.links.iter().any(|l| l.uplink_bytes > 1_000_000),
        "{:?}",
        r.links
    );
}
