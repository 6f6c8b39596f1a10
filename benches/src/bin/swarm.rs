//! `swarm`: the swarm benchmark. Starts a tracker, a simulated live origin (HLS, or DASH with
//! `--dash`), N real Shoal nodes on loopback ports and one hls.js- or dash.js-like player per
//! node, and reports offload, origin egress, control overhead, stalls and startup time
//! (optionally against a CDN-only baseline). With `--shaped` (root), every node sits in its own
//! network namespace behind a home link: tc rate limits up and down, and a round trip the
//! harness's relays add.

use clap::Parser;
use shoal::config::Rate;
use shoal_bench::netns::Shaping;
use shoal_bench::simulated_origin::{Format, StreamMode};
use shoal_bench::RunConfig;
use std::path::PathBuf;
use std::time::Duration;

/// Runs a live (or VOD) swarm of real Shoal nodes with simulated players and reports how much
/// of the video came from peers, what the origin sent, and what viewers experienced.
///
/// Example (the documented benchmark):
///   cargo run --release -p shoal-bench --bin swarm -- --nodes 32 --duration 5m --baseline
/// Behind home links (as root; needs `ip` and `tc`):
///   swarm --shaped --uplink 5Mbit --downlink 25Mbit --rtt 40ms --nodes 32 --duration 5m
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Viewers at any time: each gets its own node (player front and peer server on loopback
    /// ports) and its own simulated player.
    #[arg(short = 'n', long, default_value_t = 8)]
    nodes: usize,
    /// How long the run lasts, e.g. 60s or 5m.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Viewers arrive at random times spread over this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ramp: Duration,
    /// Serve a VOD playlist (whole list, EXT-X-ENDLIST) instead of a live stream.
    #[arg(long, conflicts_with = "dash")]
    vod: bool,
    /// Publish a live DASH stream (dynamic MPD, `$Number$` template, fMP4 init and media
    /// segments) instead of HLS.
    #[arg(long)]
    dash: bool,
    /// Segment duration (the committed clip is cut in 2 s segments; other values change the
    /// playlist timing, not the media).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    segment_duration: Duration,
    /// Stream bitrate; segments are padded to it (e.g. 3Mbit, 800kbit).
    #[arg(long, default_value = "3Mbit")]
    bitrate: Rate,
    /// Live: segments in the playlist window. VOD: segments in the list.
    #[arg(long, default_value_t = 6)]
    window: usize,
    /// Upload cap of each node, as a multiple of the bitrate (0 = no cap).
    #[arg(long, default_value_t = 2.0)]
    upload_cap: f64,
    /// Most neighbours per node.
    #[arg(long, default_value_t = 10)]
    max_peers: usize,
    /// Share of the viewers replaced per minute (0.1 = 10 % leave and as many new ones join).
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Seed of arrival times and churn choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also run the same swarm with P2P off (CDN only) at the same time, for comparison.
    #[arg(long)]
    baseline: bool,
    /// Tracker announce interval.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    announce_interval: Duration,
    /// Segment cache of each node, in segments.
    #[arg(long, default_value_t = 30)]
    cache_segments: usize,
    /// How long a player's segment request may wait on peers before the node asks the origin
    /// (the nodes' `p2p_budget`; default: the SDK's).
    #[arg(long, value_parser = humantime::parse_duration)]
    p2p_budget: Option<Duration>,
    /// Most uploads a node serves at once (the nodes' `max_uploads`; default: the SDK's).
    #[arg(long)]
    max_uploads: Option<usize>,
    /// Seeders per live segment (the nodes' `origin_seeders`: half of them fetch it from the
    /// origin at once, the rest when their uplink is free; default: the SDK's).
    #[arg(long)]
    origin_seeders: Option<usize>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Put each node (with its player) in its own network namespace, joined to the harness by
    /// a veth pair with tc rate limits, and add a round trip to its connections. Needs root
    /// and iproute2 (`ip`, `tc`).
    #[arg(long)]
    shaped: bool,
    /// Shaped mode: each node's uplink rate.
    #[arg(long, default_value = "5Mbit", requires = "shaped")]
    uplink: Rate,
    /// Shaped mode: each node's downlink rate.
    #[arg(long, default_value = "25Mbit", requires = "shaped")]
    downlink: Rate,
    /// Shaped mode: round trip added to every connection a node makes or accepts (peers,
    /// tracker, origin), half each way.
    #[arg(long, default_value = "40ms", value_parser = humantime::parse_duration, requires = "shaped")]
    rtt: Duration,
    /// Put every node in a home of its own behind a real NAT router (the NAT lab; needs root
    /// and miniupnpd), with peer protocol v2 and the provider's relay, and report which
    /// neighbour pairs connected directly, by path, through the relay, or not at all. The
    /// mix is KIND=WEIGHT,... over public, lan, eim, upnp, sym, noudp; without a value, the
    /// default mix (public=35,lan=5,eim=30,upnp=15,sym=10,noudp=5; see docs/benchmarks.md).
    #[arg(long, num_args = 0..=1, default_missing_value = "default", conflicts_with = "shaped")]
    nat_mix: Option<String>,
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
    anyhow::ensure!(a.window > 0, "--window must be at least 1");
    anyhow::ensure!(
        a.upload_cap >= 0.0 && a.churn >= 0.0,
        "--upload-cap and --churn cannot be negative"
    );
    if a.shaped {
        // Fail before anything starts, saying what is missing.
        shoal_bench::netns::check_available()?;
    }
    let nat_mix = match a.nat_mix.as_deref() {
        None => None,
        Some("default") => Some(shoal_bench::nat_mix::NatMix::default()),
        Some(m) => Some(
            m.parse::<shoal_bench::nat_mix::NatMix>()
                .map_err(|e| anyhow::anyhow!("--nat-mix: {e}"))?,
        ),
    };
    let cfg = RunConfig {
        nodes: a.nodes,
        duration: a.duration,
        ramp: a.ramp.min(a.duration),
        format: if a.dash { Format::Dash } else { Format::Hls },
        mode: if a.vod {
            StreamMode::Vod
        } else {
            StreamMode::Live
        },
        segment_duration: a.segment_duration,
        bitrate_bps: a.bitrate.bytes_per_sec() * 8,
        window: a.window,
        upload_multiple: a.upload_cap,
        max_peers: a.max_peers.max(1),
        churn_per_minute: a.churn,
        seed: a.seed,
        p2p: true,
        announce_interval: a.announce_interval,
        cache_segments: a.cache_segments,
        p2p_budget: a.p2p_budget,
        max_uploads: a.max_uploads,
        origin_seeders: a.origin_seeders,
        shaping: a.shaped.then(|| Shaping {
            uplink_bps: a.uplink.bytes_per_sec() * 8,
            downlink_bps: a.downlink.bytes_per_sec() * 8,
            rtt: a.rtt,
        }),
        nat_mix,
    };
    // Ctrl-C drops the run, which removes the shaped mode's namespaces and links.
    let report = tokio::select! {
        r = shoal_bench::ui::run_with_progress(cfg, a.baseline, false) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    };
    print!("{}", report.table());
    let json = serde_json::to_string_pretty(&report)?;
    match &a.json_out {
        Some(path) => std::fs::write(path, json + "\n")?,
        None => println!("{json}"),
    }
    Ok(())
}
