//! The swarm benchmark harness, shared by the `swarm` and `shoal-demo` binaries and the tests:
//! a simulated live HLS or DASH origin ([`origin`]), hls.js- and dash.js-like players
//! ([`player`]), run orchestration over real tracker and SDK nodes ([`run`]), the shaped mode's
//! per-node network namespaces and links ([`netns`]), and the summary ([`report`]).

pub mod clip;
pub mod fmp4;
pub mod netns;
pub mod origin;
pub mod player;
pub mod relay;
pub mod report;
pub mod run;
pub mod ui;

pub use report::{Report, RunResult};
pub use run::{run, Progress, RunConfig, RunError};
