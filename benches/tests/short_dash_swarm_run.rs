//! A short live DASH swarm (6 real nodes, 30 s) through the benchmark harness: the same
//! invariants as HLS, with a dynamic MPD, an init segment and fMP4 segments.

mod common;

use shoal_bench::simulated_origin::Format;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_dash_swarm_run_delivers_origin_bytes_mostly_shared_and_counts_them_exactly() {
    let r = common::short_run_keeps_its_invariants(|c| c.format = Format::Dash).await;
    assert_eq!(r.config.format, Format::Dash);
    // Each viewer fetched the init segment and media segments, and reloaded the MPD.
    assert!(r.origin.manifest_requests >= 6, "{r:#?}");
}
