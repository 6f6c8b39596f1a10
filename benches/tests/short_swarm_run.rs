//! A short live HLS swarm (6 real nodes, 30 s) through the benchmark harness: what must always
//! hold, whatever the timing.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_swarm_run_delivers_origin_bytes_mostly_shared_and_counts_them_exactly() {
    common::short_run_keeps_its_invariants(|_| {}).await;
}
