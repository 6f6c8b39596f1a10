//! `shoal-demo`: a 60-second live swarm of 8 Shoal nodes on this machine, no setup needed.
//!
//! It prints a player URL of one node (open it in ffplay or VLC while the demo runs), every
//! node's `/metrics` URL, a live progress line, and at the end the summary table.

use clap::Parser;
use shoal_bench::RunConfig;
use std::time::Duration;

/// Runs a 60-second live swarm of 8 real Shoal nodes with simulated viewers on loopback ports,
/// next to a CDN-only baseline, and shows how much of the video came from peers.
/// For other settings use the `swarm` benchmark (`--help` there).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Viewers (nodes).
    #[arg(short = 'n', long, default_value_t = 8)]
    nodes: usize,
    /// How long the demo runs.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Skip the CDN-only baseline that runs alongside.
    #[arg(long)]
    no_baseline: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    anyhow::ensure!(a.nodes > 0, "--nodes must be at least 1");
    let cfg = RunConfig {
        ramp: Duration::from_secs(5).min(a.duration),
        ..RunConfig::live_default(a.nodes, a.duration)
    };
    println!(
        "Shoal demo: {} viewers join a live stream (2 s segments at 3 Mbit/s) over {} s; each has its own node.",
        cfg.nodes,
        cfg.duration.as_secs()
    );
    let report = shoal_bench::ui::run_with_progress(cfg, !a.no_baseline, true).await?;
    print!("{}", report.table());
    Ok(())
}
