//! One benchmark run: a tracker, an origin, N real SDK nodes on loopback ports and one
//! simulated player per node; viewers arrive over a ramp, may churn, and leave at the end.

use crate::origin::{Format, Origin, OriginConfig, OriginTotals, StreamMode};
use crate::player::{play, LiveCounters, PlayerReport};
use crate::relay::Relay;
use crate::report::RunResult;
use rand::{Rng, SeedableRng};
use shoal::config::Rate;
use shoal::node::Shared;
use shoal::{Node, NodeConfig};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Everything a run is parameterised by.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunConfig {
    /// Viewers (one node and one player each) at any time.
    pub nodes: usize,
    /// How long the run lasts, from the first arrival.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Viewers arrive spread over this long.
    #[serde(with = "secs")]
    pub ramp: Duration,
    /// HLS or DASH.
    pub format: Format,
    /// Live or VOD.
    pub mode: StreamMode,
    /// Segment duration.
    #[serde(with = "secs")]
    pub segment_duration: Duration,
    /// Stream bitrate, bits per second.
    pub bitrate_bps: u64,
    /// Live window (segments), or VOD length.
    pub window: usize,
    /// Upload cap per node as a multiple of the bitrate; 0 means no cap.
    pub upload_multiple: f64,
    /// Most neighbours per node.
    pub max_peers: usize,
    /// Share of the viewers replaced per minute (0.1 = 10 %).
    pub churn_per_minute: f64,
    /// Seed of arrival times and churn choices.
    pub seed: u64,
    /// P2P on (tracker configured) or off (the CDN-only baseline).
    pub p2p: bool,
    /// Tracker announce interval.
    #[serde(with = "secs")]
    pub announce_interval: Duration,
    /// Segment cache of each node, in segments.
    pub cache_segments: usize,
    /// The nodes' P2P budget (`NodeConfig::p2p_budget`); `None` keeps the SDK default.
    #[serde(with = "opt_secs")]
    pub p2p_budget: Option<Duration>,
    /// The nodes' concurrent upload limit (`NodeConfig::max_uploads`); `None` keeps the default.
    pub max_uploads: Option<usize>,
    /// Nodes per live segment that fetch it from the origin at once
    /// (`NodeConfig::origin_seeders`); `None` keeps the default.
    pub origin_seeders: Option<usize>,
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl RunConfig {
    /// The settings of the documented benchmark: live, 2 s segments at 3 Mbit/s, upload cap 2×.
    pub fn live_default(nodes: usize, duration: Duration) -> Self {
        Self {
            nodes,
            duration,
            ramp: Duration::from_secs(10),
            format: Format::Hls,
            mode: StreamMode::Live,
            segment_duration: Duration::from_secs(2),
            bitrate_bps: 3_000_000,
            window: 6,
            upload_multiple: 2.0,
            max_peers: 10,
            churn_per_minute: 0.0,
            seed: 1,
            p2p: true,
            announce_interval: Duration::from_secs(5),
            cache_segments: 30,
            p2p_budget: None,
            max_uploads: None,
            origin_seeders: None,
        }
    }

    /// The same run with P2P off.
    pub fn baseline(&self) -> Self {
        Self {
            p2p: false,
            ..self.clone()
        }
    }
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The tracker did not start.
    #[error("tracker: {0}")]
    Tracker(#[from] shoal_tracker::Error),
    /// A node did not start.
    #[error("node: {0}")]
    Node(#[from] shoal::node::NodeError),
    /// A socket could not be bound.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The node's player URL could not be formed.
    #[error("player URL for {0} could not be formed")]
    PlayerUrl(String),
}

/// Live progress of a run, readable while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Player byte counters and stalls.
    pub players: Arc<LiveCounters>,
    /// Nodes running now.
    pub nodes: AtomicU64,
    /// The tracker's base URL, once it runs.
    pub tracker_url: std::sync::OnceLock<String>,
    /// Every node started so far: its player URL for the stream and its `/metrics` URL.
    pub started: std::sync::Mutex<Vec<(String, String)>>,
}

/// One viewer: its node, its player task, the relay in front of its peer server.
struct Viewer {
    node: Node,
    stop: CancellationToken,
    player: JoinHandle<PlayerReport>,
    _relay: Option<Relay>,
}

struct Ctx {
    cfg: RunConfig,
    origin: Origin,
    tracker_url: Option<String>,
    peer_wire: Arc<AtomicU64>,
    http: reqwest::Client,
    progress: Arc<Progress>,
    /// Every node ever started (their counters outlive them).
    all: Vec<Arc<Shared>>,
    started: usize,
    label: &'static str,
}

impl Ctx {
    async fn start_viewer(&mut self) -> Result<Viewer, RunError> {
        let cfg = &self.cfg;
        let relay = match self.tracker_url {
            Some(_) => Some(Relay::bind(self.peer_wire.clone()).await?),
            None => None,
        };
        let host = self.origin.host_port();
        let segment_bytes =
            crate::clip::segment_target_bytes(cfg.bitrate_bps, cfg.segment_duration.as_secs_f64())
                as u64;
        let upload_limit = (cfg.upload_multiple > 0.0).then(|| {
            Rate::from_bits_per_sec((cfg.bitrate_bps as f64 * cfg.upload_multiple) as u64)
        });
        let defaults = NodeConfig::default();
        let node = Node::start(NodeConfig {
            p2p_budget: cfg.p2p_budget.unwrap_or(defaults.p2p_budget),
            max_uploads: cfg.max_uploads.unwrap_or(defaults.max_uploads),
            origin_seeders: cfg.origin_seeders.unwrap_or(defaults.origin_seeders),
            listen: ([127, 0, 0, 1], 0).into(),
            peer_listen: ([127, 0, 0, 1], 0).into(),
            peer_advertise: relay.as_ref().map(|r| r.addr().to_string()),
            tracker: self.tracker_url.clone(),
            origins: vec![host.clone()],
            origin_schemes: vec![format!("{host}=http")],
            upload_limit,
            max_peers: cfg.max_peers,
            cache_size: bytesize_of(segment_bytes * cfg.cache_segments.max(4) as u64),
            node_id: Some(format!("{}{}", self.label, self.started)),
            ..Default::default()
        })
        .await?;
        self.started += 1;
        if let (Some(r), Some(a)) = (&relay, node.peer_addr()) {
            r.set_target(a);
        }
        self.all.push(node.shared().clone());
        let url = format!(
            "http://{}/{host}{}",
            node.player_addr(),
            cfg.format.manifest_path()
        );
        let stop = CancellationToken::new();
        let player = tokio::spawn(play(
            self.http.clone(),
            url.clone(),
            self.origin.clone(),
            cfg.segment_duration,
            self.progress.players.clone(),
            stop.clone(),
        ));
        self.progress.nodes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut started) = self.progress.started.lock() {
            started.push((
                url.clone(),
                format!("http://{}/metrics", node.player_addr()),
            ));
        }
        Ok(Viewer {
            node,
            stop,
            player,
            _relay: relay,
        })
    }

    /// Stops the player (returning its report) and shuts the node down in the background.
    async fn leave(&self, v: Viewer, shutdowns: &mut Vec<JoinHandle<()>>) -> PlayerReport {
        v.stop.cancel();
        let report = v.player.await.unwrap_or_default();
        self.progress.nodes.fetch_sub(1, Ordering::Relaxed);
        let relay = v._relay;
        let node = v.node;
        shutdowns.push(tokio::spawn(async move {
            node.shutdown().await;
            drop(relay);
        }));
        report
    }
}

fn bytesize_of(n: u64) -> bytesize::ByteSize {
    bytesize::ByteSize::b(n)
}

/// Runs one swarm (or, with `p2p` off, the CDN-only baseline) to the end and reports.
pub async fn run(cfg: RunConfig, progress: Arc<Progress>) -> Result<RunResult, RunError> {
    let label = if cfg.p2p { "p" } else { "c" };
    let origin = Origin::start(OriginConfig {
        format: cfg.format,
        mode: cfg.mode,
        segment_duration: cfg.segment_duration,
        bitrate_bps: cfg.bitrate_bps,
        window: cfg.window,
    })
    .await?;
    let tracker_wire = Arc::new(AtomicU64::new(0));
    let (tracker, tracker_relay) = if cfg.p2p {
        let t = shoal_tracker::spawn(shoal_tracker::config::Config {
            listen: "127.0.0.1:0"
                .parse()
                .map_err(|_| RunError::PlayerUrl("tracker".into()))?,
            announce_interval: cfg.announce_interval,
            // The digest service vouches for this origin's segments only.
            origins: vec![origin.host_port()],
            origin_schemes: vec![format!("{}=http", origin.host_port())],
            ..Default::default()
        })
        .await?;
        let relay = Relay::bind(tracker_wire.clone()).await?;
        relay.set_target(t.addr());
        let _ = progress.tracker_url.set(t.url());
        (Some(t), Some(relay))
    } else {
        (None, None)
    };
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| RunError::Io(std::io::Error::other(e)))?;
    let mut ctx = Ctx {
        origin: origin.clone(),
        tracker_url: tracker_relay
            .as_ref()
            .map(|r| format!("http://{}", r.addr())),
        peer_wire: Arc::new(AtomicU64::new(0)),
        http,
        progress: progress.clone(),
        all: Vec::new(),
        started: 0,
        label,
        cfg: cfg.clone(),
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    let mut arrivals: Vec<Duration> = (0..cfg.nodes)
        .map(|_| cfg.ramp.mul_f64(rng.random::<f64>()))
        .collect();
    arrivals.sort();
    let churn_every = (cfg.churn_per_minute > 0.0 && cfg.nodes > 0)
        .then(|| Duration::from_secs_f64(60.0 / (cfg.churn_per_minute * cfg.nodes as f64)));

    let start = Instant::now();
    let end = start + cfg.duration;
    let mut viewers: Vec<Viewer> = Vec::with_capacity(cfg.nodes);
    let mut reports: Vec<PlayerReport> = Vec::new();
    let mut shutdowns: Vec<JoinHandle<()>> = Vec::new();
    let mut next_churn = churn_every.map(|d| start + cfg.ramp + d);
    let mut arrivals = arrivals.into_iter().peekable();
    loop {
        let next_arrival = arrivals.peek().map(|d| start + *d);
        let wake = [next_arrival, next_churn, Some(end)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        if next_arrival.is_some_and(|t| t <= now) {
            arrivals.next();
            viewers.push(ctx.start_viewer().await?);
        }
        if let (Some(t), Some(every)) = (next_churn, churn_every) {
            if t <= now {
                next_churn = Some(t + every);
                if !viewers.is_empty() {
                    let i = rng.random_range(0..viewers.len());
                    let gone = viewers.swap_remove(i);
                    reports.push(ctx.leave(gone, &mut shutdowns).await);
                    viewers.push(ctx.start_viewer().await?);
                }
            }
        }
    }
    let elapsed = start.elapsed();
    for v in &viewers {
        v.stop.cancel();
    }
    for v in viewers.iter_mut() {
        reports.push((&mut v.player).await.unwrap_or_default());
    }

    // Fetches the players started (and prefetches) finish on their own; wait until what the
    // nodes counted from the origin matches what the origin sent, bounded.
    let node_origin =
        |all: &[Arc<Shared>]| -> u64 { all.iter().map(|s| s.metrics.origin_bytes.get()).sum() };
    let settle = Instant::now() + Duration::from_secs(10);
    while node_origin(&ctx.all) != origin.totals().to_nodes() && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let origin_totals: OriginTotals = origin.totals();
    let node_totals = NodeTotals::sum(&ctx.all);

    for v in viewers {
        progress.nodes.fetch_sub(1, Ordering::Relaxed);
        let (node, relay) = (v.node, v._relay);
        shutdowns.push(tokio::spawn(async move {
            node.shutdown().await;
            drop(relay);
        }));
    }
    for s in shutdowns {
        let _ = s.await;
    }
    let announces = match &tracker {
        Some(t) => scrape_announces(&ctx.http, &t.url()).await,
        None => None,
    };
    if let Some(t) = tracker {
        let _ = t.shutdown().await;
    }
    origin.stop();

    let mut distinct = BTreeSet::new();
    for r in &reports {
        distinct.extend(r.received.iter().copied());
    }
    // The DASH initialization segment, once.
    let init_bytes = if distinct.is_empty() {
        0
    } else {
        origin.init().len() as u64
    };
    let distinct_bytes: u64 =
        distinct.iter().map(|s| origin.segment_len(*s)).sum::<u64>() + init_bytes;
    Ok(RunResult::from_parts(
        cfg,
        elapsed,
        &reports,
        origin_totals,
        node_totals,
        distinct_bytes,
        ctx.peer_wire.load(Ordering::Relaxed),
        tracker_wire.load(Ordering::Relaxed),
        announces,
    ))
}

/// Sums over every node of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NodeTotals {
    /// Nodes started (more than the viewer count with churn).
    pub nodes: u64,
    /// Bytes fetched from the origin, as the nodes count them.
    pub origin_bytes: u64,
    /// Bytes delivered to players from peers.
    pub p2p_bytes: u64,
    /// Bytes delivered to players from the origin.
    pub cdn_bytes: u64,
    /// Bytes uploaded to peers (segment bodies).
    pub uploaded_bytes: u64,
    /// Origin fetches of segments, by why the origin was asked (`shoal_edge_fallbacks_total`).
    pub fallbacks: std::collections::BTreeMap<&'static str, u64>,
    /// Peer transfers that failed or were abandoned at the deadline.
    pub peer_failures: u64,
}

impl NodeTotals {
    fn sum(all: &[Arc<Shared>]) -> Self {
        use shoal::metrics::{FallbackReason, ReasonLabel, Source};
        let mut t = NodeTotals {
            nodes: all.len() as u64,
            ..Default::default()
        };
        for s in all {
            let m = &s.metrics;
            t.origin_bytes += m.origin_bytes.get();
            t.p2p_bytes += m.delivered_total(Source::P2p);
            t.cdn_bytes += m.delivered_total(Source::Cdn);
            t.uploaded_bytes += m.uploaded.get();
            t.peer_failures += m.peer_failures.get();
            for reason in [
                FallbackReason::NoPeer,
                FallbackReason::Seeder,
                FallbackReason::PeerFailed,
                FallbackReason::Integrity,
                FallbackReason::P2pOff,
            ] {
                let n = m.fallbacks.get_or_create(&ReasonLabel { reason }).get();
                *t.fallbacks.entry(reason.as_str()).or_default() += n;
            }
        }
        t
    }
}

/// `shoal_tracker_announces_total` summed over results.
async fn scrape_announces(http: &reqwest::Client, tracker: &str) -> Option<u64> {
    let text = http
        .get(format!("{tracker}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("shoal_tracker_announces_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// Peak resident memory of this process (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
