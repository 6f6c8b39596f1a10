//! The swarm benchmark harness, shared by the `swarm` and `shoal-demo` binaries and the tests:
//! a simulated live HLS or DASH origin ([`simulated_origin`]), hls.js- and dash.js-like
//! players ([`simulated_player`]), run orchestration over real tracker and SDK nodes
//! ([`run`]), the shaped mode's per-node network namespaces and links ([`netns`]), and the
//! summary ([`report`]).

pub mod clip;
pub mod counting_relay;
pub mod fmp4;
pub mod nat_mix;
pub mod netns;
pub mod pauses;
pub mod report;
pub mod run;
pub mod simulated_origin;
pub mod simulated_player;
pub mod ui;

pub use report::{Report, RunResult};
pub use run::{run, Progress, RunConfig, RunError};

/// The zero of [`secs`]: set by [`start_clock`], or else by the first call of [`secs`].
static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();

/// Starts the clock of every time a report gives (once; later calls change nothing).
pub fn start_clock() {
    EPOCH.get_or_init(tokio::time::Instant::now);
}

/// `t` as seconds since the process's epoch, one clock for every record of a run (stalls,
/// pauses) so that a run's and its baseline's can be set side by side.
pub fn secs(t: tokio::time::Instant) -> f64 {
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    if t >= epoch {
        t.duration_since(epoch).as_secs_f64()
    } else {
        -epoch.duration_since(t).as_secs_f64()
    }
}
