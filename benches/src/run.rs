//! One benchmark run: a tracker, an origin, N real SDK nodes on loopback ports and one
//! simulated player per node; viewers arrive over a ramp, may churn, and leave at the end.
//!
//! With [`RunConfig::shaping`] set, each node and its player run on a thread of their own
//! inside the node's network namespace ([`crate::netns`]), on a current-thread runtime: the
//! player talks to its node on the namespace's loopback, and everything else (peers, tracker,
//! origin) goes over the node's shaped veth, through relays that add the round trip.

use crate::counting_relay::Relay;
use crate::netns::{LinkReport, Network, ShapedError, Shaping};
use crate::report::RunResult;
use crate::simulated_origin::{Format, Origin, OriginConfig, OriginTotals, StreamMode};
use crate::simulated_player::{play, LiveCounters, PlayerReport};
use rand::{Rng, SeedableRng};
use shoal::config::Rate;
use shoal::metrics::NodeMetrics;
use shoal::{Node, NodeConfig};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
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
    /// Seeders per live segment (`NodeConfig::origin_seeders`); `None` keeps the default.
    pub origin_seeders: Option<usize>,
    /// Shaped mode: each node in its own network namespace behind a home link (needs root,
    /// `ip` and `tc`); `None` runs everything on loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shaping: Option<Shaping>,
    /// NAT-mix mode: each node in a home of a kind drawn from this mix, behind a real NAT
    /// router of the NAT lab, with peer protocol v2 and the provider's relay (needs root and
    /// miniupnpd; [`crate::nat_mix`]). `None`: loopback or shaped, peer protocol v1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat_mix: Option<crate::nat_mix::NatMix>,
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
            shaping: None,
            nat_mix: None,
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
    /// The shaped network could not be set up or entered.
    #[error("shaped network: {0}")]
    Shaped(#[from] ShapedError),
    /// A viewer's player client could not be built.
    #[error("player client: {0}")]
    Client(#[from] reqwest::Error),
    /// A viewer's task or thread ended before it reported.
    #[error("viewer {0} ended before it started")]
    Viewer(String),
    /// The NAT lab could not be built or used.
    #[error("NAT lab: {0}")]
    Lab(#[from] shoal_testkit::Error),
    /// The provider's relay did not start.
    #[error("relay: {0}")]
    Relay(#[from] shoal_transport::TransportError),
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

/// One viewer as the harness sees it; its node, player and relay live in its own task (or, in
/// the shaped mode, on its own thread in its namespace).
struct Viewer {
    /// Stops the player and shuts the node down if the harness drops the viewer early (an
    /// error, Ctrl-C), so its thread ends and its link is removed.
    _alive: tokio_util::sync::DropGuard,
    /// Stops the player.
    stop: CancellationToken,
    /// The player's report, once it stopped.
    report: oneshot::Receiver<PlayerReport>,
    /// Shuts the node down (after the player stopped).
    shutdown: CancellationToken,
    /// Ends when the node is down (and, shaped, its link removed, with its counters).
    done: JoinHandle<Option<LinkReport>>,
}

/// What a viewer's own task needs to start its relay, node and player.
struct ViewerPlan {
    node: NodeConfig,
    /// Where the relay in front of the peer server listens and its one-way delay (P2P runs).
    relay: Option<(SocketAddr, Duration)>,
    peer_wire: Arc<AtomicU64>,
    origin: Origin,
    origin_host: String,
    segment_duration: Duration,
    players: Arc<crate::simulated_player::LiveCounters>,
    stop: CancellationToken,
    shutdown: CancellationToken,
}

/// A started viewer's node, as the harness counts it.
struct Started {
    metrics: NodeMetrics,
    player_addr: SocketAddr,
    url: String,
    /// The key the node announces (its endpoint id with peer protocol v2).
    fingerprint: String,
}

/// Starts the relay, the node and the player; reports `Started`, then the player's report
/// when `stop` ends it; shuts the node down at `shutdown`.
async fn viewer_main(
    plan: ViewerPlan,
    started: oneshot::Sender<Result<Started, RunError>>,
    report: oneshot::Sender<PlayerReport>,
) {
    let node_id = plan.node.node_id.clone().unwrap_or_default();
    let setup = async {
        let relay = match plan.relay {
            Some((at, one_way)) => {
                Some(Relay::bind_delayed(at, plan.peer_wire.clone(), one_way).await?)
            }
            None => None,
        };
        let node = Node::start(NodeConfig {
            peer_advertise: relay.as_ref().map(|r| r.addr().to_string()),
            ..plan.node
        })
        .await?;
        if let (Some(r), Some(a)) = (&relay, node.peer_addr()) {
            r.set_target(a);
        }
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok::<_, RunError>((relay, node, http))
    };
    let (relay, node, http) = match setup.await {
        Ok(v) => v,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let url = format!(
        "http://{}/{}{}",
        node.player_addr(),
        plan.origin_host,
        plan.origin.format().manifest_path()
    );
    let player = tokio::spawn(play(
        node_id,
        http,
        url.clone(),
        plan.origin,
        plan.segment_duration,
        plan.players,
        plan.stop,
    ));
    let _ = started.send(Ok(Started {
        metrics: node.metrics().clone(),
        player_addr: node.player_addr(),
        url,
        fingerprint: node.fingerprint().to_string(),
    }));
    let _ = report.send(player.await.unwrap_or_default());
    plan.shutdown.cancelled().await;
    node.shutdown().await;
    drop(relay);
}

/// Runs `viewer_main` on a thread of its own inside `link`'s namespace, on a current-thread
/// runtime, so every socket the node and its player open is the namespace's.
fn spawn_in_namespace(
    netns: &str,
    plan: ViewerPlan,
    started: oneshot::Sender<Result<Started, RunError>>,
    report: oneshot::Sender<PlayerReport>,
) -> Result<oneshot::Receiver<()>, RunError> {
    let (ended, on_end) = oneshot::channel();
    let netns = netns.to_string();
    std::thread::Builder::new()
        .name(netns.clone())
        .spawn(move || {
            let runtime = crate::netns::enter(&netns)
                .map_err(RunError::from)
                .and_then(|()| {
                    Ok(tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?)
                });
            match runtime {
                Ok(rt) => rt.block_on(viewer_main(plan, started, report)),
                Err(e) => {
                    let _ = started.send(Err(e));
                }
            }
            let _ = ended.send(());
        })?;
    Ok(on_end)
}

struct Ctx {
    cfg: RunConfig,
    origin: Origin,
    /// `host:port` nodes fetch the origin at (in the shaped mode, a delaying relay's).
    origin_host: String,
    tracker_url: Option<String>,
    peer_wire: Arc<AtomicU64>,
    http: reqwest::Client,
    progress: Arc<Progress>,
    /// The shaped mode's network.
    net: Option<Arc<Network>>,
    /// Every node ever started (their counters outlive them).
    all: Vec<NodeMetrics>,
    started: usize,
    label: &'static str,
    /// NAT-mix mode: the lab, and every node placed in it so far.
    lab: Option<Arc<crate::nat_mix::LabRun>>,
    placed: Vec<(String, shoal_testkit::netlab::HomeKind, usize, NodeMetrics)>,
}

impl Ctx {
    async fn start_viewer(&mut self) -> Result<Viewer, RunError> {
        let cfg = &self.cfg;
        let host = self.origin_host.clone();
        let segment_bytes =
            crate::clip::segment_target_bytes(cfg.bitrate_bps, cfg.segment_duration.as_secs_f64())
                as u64;
        let upload_limit = (cfg.upload_multiple > 0.0).then(|| {
            Rate::from_bits_per_sec((cfg.bitrate_bps as f64 * cfg.upload_multiple) as u64)
        });
        let defaults = NodeConfig::default();
        let node = NodeConfig {
            p2p_budget: cfg.p2p_budget.unwrap_or(defaults.p2p_budget),
            max_uploads: cfg.max_uploads.unwrap_or(defaults.max_uploads),
            origin_seeders: cfg.origin_seeders.unwrap_or(defaults.origin_seeders),
            listen: ([127, 0, 0, 1], 0).into(),
            peer_listen: ([127, 0, 0, 1], 0).into(),
            tracker: self.tracker_url.clone(),
            origins: vec![host.clone()],
            origin_schemes: vec![format!("{host}=http")],
            upload_limit,
            max_peers: cfg.max_peers,
            cache_size: bytesize_of(segment_bytes * cfg.cache_segments.max(4) as u64),
            node_id: Some(format!("{}{}", self.label, self.started)),
            // The harness counts peer wire bytes (and adds the shaped round trip) with a TCP
            // relay in front of each peer server, so it runs peer protocol v1. The figures in
            // docs/benchmarks.md were all measured so.
            peer_transport: shoal::config::PeerTransport::Tcp,
            ..Default::default()
        };
        // NAT-mix: a home of a kind drawn from the mix, peer protocol v2 as shipped, and
        // the provider's relay.
        let mut node = node;
        let mut in_lab = None;
        if let Some(lab) = self.lab.clone() {
            let mut draw = rand::rngs::StdRng::seed_from_u64(
                cfg.seed ^ (self.started as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let kind = cfg
                .nat_mix
                .as_ref()
                .map_or(shoal_testkit::netlab::HomeKind::Public, |m| {
                    m.pick(draw.random::<f64>())
                });
            let placed = {
                let lab = lab.clone();
                tokio::task::spawn_blocking(move || lab.lab.host_for(kind))
                    .await
                    .map_err(|e| RunError::Io(std::io::Error::other(e)))??
            };
            node.peer_transport = shoal::config::PeerTransport::Quic;
            node.peer_listen = ([0, 0, 0, 0], 0).into();
            if self.tracker_url.is_some() {
                node.relay = Some(lab.relay_url());
                node.relay_ca = Some(lab.lab.ca.clone());
            }
            in_lab = Some((kind, placed.0, placed.1));
        }
        let link = match &self.net {
            Some(net) => {
                let (net, index) = (net.clone(), self.started);
                Some(blocking(move || net.add_node(index)).await?)
            }
            None => None,
        };
        self.started += 1;
        let (relay_ip, one_way) = match (&link, &cfg.shaping) {
            (Some(l), Some(s)) => (l.ip, s.rtt / 2),
            _ => (Ipv4Addr::LOCALHOST, Duration::ZERO),
        };
        let alive = CancellationToken::new();
        let stop = alive.child_token();
        let shutdown = alive.child_token();
        let plan = ViewerPlan {
            node,
            relay: (self.tracker_url.is_some() && in_lab.is_none())
                .then(|| ((relay_ip, 0).into(), one_way)),
            peer_wire: self.peer_wire.clone(),
            origin: self.origin.clone(),
            origin_host: host,
            segment_duration: cfg.segment_duration,
            players: self.progress.players.clone(),
            stop: stop.clone(),
            shutdown: shutdown.clone(),
        };
        let (started_tx, started_rx) = oneshot::channel();
        let (report_tx, report) = oneshot::channel();
        let done = match (&self.net, link, &in_lab) {
            (_, _, Some((_, _, host))) => {
                let ended = spawn_in_namespace(host.netns.name(), plan, started_tx, report_tx);
                tokio::spawn(async move {
                    if let Ok(ended) = ended {
                        let _ = ended.await;
                    }
                    None
                })
            }
            (Some(net), Some(link), None) => {
                let ended = spawn_in_namespace(&link.netns, plan, started_tx, report_tx);
                let net = net.clone();
                tokio::spawn(async move {
                    if let Ok(ended) = ended {
                        let _ = ended.await;
                    }
                    blocking(move || Ok(net.remove_node(&link))).await.ok()
                })
            }
            _ => {
                let task = tokio::spawn(viewer_main(plan, started_tx, report_tx));
                tokio::spawn(async move {
                    let _ = task.await;
                    None
                })
            }
        };
        let id = format!("{}{}", self.label, self.started - 1);
        let started = started_rx.await.map_err(|_| RunError::Viewer(id))??;
        if let Some((kind, home, _)) = in_lab {
            self.placed.push((
                started.fingerprint.clone(),
                kind,
                home,
                started.metrics.clone(),
            ));
        }
        self.all.push(started.metrics);
        self.progress.nodes.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut list) = self.progress.started.lock() {
            list.push((
                started.url,
                format!("http://{}/metrics", started.player_addr),
            ));
        }
        Ok(Viewer {
            _alive: alive.drop_guard(),
            stop,
            report,
            shutdown,
            done,
        })
    }

    /// Stops the player (returning its report) and shuts the node down in the background.
    async fn leave(
        &self,
        v: Viewer,
        shutdowns: &mut Vec<JoinHandle<Option<LinkReport>>>,
    ) -> PlayerReport {
        v.stop.cancel();
        let report = v.report.await.unwrap_or_default();
        self.progress.nodes.fetch_sub(1, Ordering::Relaxed);
        v.shutdown.cancel();
        shutdowns.push(v.done);
        report
    }
}

/// Runs blocking `f` (commands of the shaped network) off the runtime's workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ShapedError> + Send + 'static,
) -> Result<T, ShapedError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ShapedError::Command {
            command: "shaped network setup".into(),
            stderr: e.to_string(),
        })?
}

fn bytesize_of(n: u64) -> bytesize::ByteSize {
    bytesize::ByteSize::b(n)
}

/// Runs one swarm (or, with `p2p` off, the CDN-only baseline) to the end and reports.
pub async fn run(cfg: RunConfig, progress: Arc<Progress>) -> Result<RunResult, RunError> {
    let label = if cfg.p2p { "p" } else { "c" };
    let origin_config = OriginConfig {
        format: cfg.format,
        mode: cfg.mode,
        segment_duration: cfg.segment_duration,
        bitrate_bps: cfg.bitrate_bps,
        window: cfg.window,
    };
    // NAT-mix: the origin, the tracker and the relay on the lab's services server.
    let lab = match &cfg.nat_mix {
        Some(_) => Some(Arc::new(crate::nat_mix::LabRun::create().await?)),
        None => None,
    };
    let origin = match &lab {
        Some(l) => {
            let at = (l.lab.services.ip, crate::nat_mix::ORIGIN_PORT).into();
            l.run(Origin::start_on(at, origin_config)).await?
        }
        None => Origin::start(origin_config).await?,
    };
    let net = match cfg.shaping {
        Some(shaping) => Some(Arc::new(
            blocking(move || Network::create(label.chars().next().unwrap_or('r'), shaping)).await?,
        )),
        None => None,
    };
    // Shaped: each link's counters once a second, for its peak rates (until the run drops
    // the network).
    if let Some(n) = &net {
        let weak = Arc::downgrade(n);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(n) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || n.sample()).await;
            }
        });
    }
    // Shaped: the tracker and the origin are reached at the bridge's address, through relays
    // that add the round trip.
    let (relay_ip, one_way) = match (&net, &cfg.shaping) {
        (Some(n), Some(s)) => (n.bridge_ip(), s.rtt / 2),
        _ => (Ipv4Addr::LOCALHOST, Duration::ZERO),
    };
    let origin_relay = match &net {
        Some(_) => {
            let r = Relay::bind_delayed((relay_ip, 0).into(), Arc::new(AtomicU64::new(0)), one_way)
                .await?;
            r.set_target(origin.addr());
            Some(r)
        }
        None => None,
    };
    let origin_host = origin_relay
        .as_ref()
        .map_or_else(|| origin.host_port(), |r| r.addr().to_string());
    let tracker_wire = Arc::new(AtomicU64::new(0));
    let (tracker, tracker_relay) = if let (true, Some(l)) = (cfg.p2p, &lab) {
        let config = shoal_tracker::config::Config {
            listen: (l.lab.services.ip, crate::nat_mix::TRACKER_PORT).into(),
            announce_interval: cfg.announce_interval,
            origins: vec![origin_host.clone()],
            origin_schemes: vec![format!("{origin_host}=http")],
            ..Default::default()
        };
        let t = l.run(shoal_tracker::spawn(config)).await?;
        l.start_relay().await?;
        let _ = progress.tracker_url.set(t.url());
        (Some(t), None)
    } else if cfg.p2p {
        let t = shoal_tracker::spawn(shoal_tracker::config::Config {
            listen: "127.0.0.1:0"
                .parse()
                .map_err(|_| RunError::PlayerUrl("tracker".into()))?,
            announce_interval: cfg.announce_interval,
            // The digest service vouches for this origin's segments only.
            origins: vec![origin_host.clone()],
            origin_schemes: vec![format!("{origin_host}=http")],
            ..Default::default()
        })
        .await?;
        let relay =
            Relay::bind_delayed((relay_ip, 0).into(), tracker_wire.clone(), one_way).await?;
        relay.set_target(t.addr());
        let _ = progress.tracker_url.set(t.url());
        (Some(t), Some(relay))
    } else {
        (None, None)
    };
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(30))
        .build()?;
    let mut ctx = Ctx {
        origin: origin.clone(),
        origin_host,
        tracker_url: match (&tracker_relay, &tracker) {
            (Some(r), _) => Some(format!("http://{}", r.addr())),
            (None, Some(t)) => Some(t.url()),
            (None, None) => None,
        },
        peer_wire: Arc::new(AtomicU64::new(0)),
        http,
        progress: progress.clone(),
        net: net.clone(),
        all: Vec::new(),
        started: 0,
        label,
        cfg: cfg.clone(),
        lab: lab.clone(),
        placed: Vec::new(),
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
    let mut shutdowns: Vec<JoinHandle<Option<LinkReport>>> = Vec::new();
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
        reports.push((&mut v.report).await.unwrap_or_default());
    }

    // Fetches the players started (and prefetches) finish on their own; wait until what the
    // nodes counted from the origin matches what the origin sent, bounded.
    let node_origin =
        |all: &[NodeMetrics]| -> u64 { all.iter().map(|m| m.origin_bytes.get()).sum() };
    let settle = Instant::now() + Duration::from_secs(10);
    while node_origin(&ctx.all) != origin.totals().to_nodes() && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let origin_totals: OriginTotals = origin.totals();
    let node_totals = NodeTotals::sum(&ctx.all);

    for v in viewers {
        progress.nodes.fetch_sub(1, Ordering::Relaxed);
        v.shutdown.cancel();
        shutdowns.push(v.done);
    }
    let mut links = Vec::new();
    for s in shutdowns {
        if let Ok(Some(link)) = s.await {
            links.push(link);
        }
    }
    let announces = match (&tracker, &lab) {
        (Some(t), Some(l)) => {
            let (http, url) = (ctx.http.clone(), t.url());
            l.run(async move { scrape_announces(&http, &url).await })
                .await
        }
        (Some(t), None) => scrape_announces(&ctx.http, &t.url()).await,
        _ => None,
    };
    if let Some(t) = tracker {
        match &lab {
            Some(l) => {
                let _ = l.run(async move { t.shutdown().await }).await;
            }
            None => {
                let _ = t.shutdown().await;
            }
        }
    }
    let reach = cfg.nat_mix.as_ref().map(|mix| {
        let placed: Vec<crate::nat_mix::Placed> = ctx
            .placed
            .iter()
            .map(|(endpoint, kind, home, m)| crate::nat_mix::Placed {
                endpoint: endpoint.clone(),
                kind: *kind,
                home: *home,
                attempts: m.paths.last_attempts(),
            })
            .collect();
        crate::nat_mix::ReachReport::from_nodes(mix, &placed)
    });
    origin.stop();
    drop(origin_relay);
    drop(tracker_relay);
    drop(net);

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
    let mut result = RunResult::from_parts(
        cfg,
        elapsed,
        &reports,
        origin_totals,
        node_totals,
        distinct_bytes,
        ctx.peer_wire.load(Ordering::Relaxed),
        tracker_wire.load(Ordering::Relaxed),
        announces,
    );
    result.links = links;
    result.reach = reach;
    drop(ctx);
    if let Some(l) = lab {
        // Removing the namespaces runs `ip` and `iptables`: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || drop(l)).await;
    }
    Ok(result)
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
    fn sum(all: &[NodeMetrics]) -> Self {
        use shoal::metrics::{FallbackReason, ReasonLabel, Source};
        let mut t = NodeTotals {
            nodes: all.len() as u64,
            ..Default::default()
        };
        for m in all {
            t.origin_bytes += m.origin_bytes.get();
            t.p2p_bytes += m.delivered_total(Source::P2p);
            t.cdn_bytes += m.delivered_total(Source::Cdn);
            t.uploaded_bytes += m.uploaded.get();
            t.peer_failures += m.peer_failures.get();
            for reason in [
                FallbackReason::NoPeer,
                FallbackReason::Seeder,
                FallbackReason::Supply,
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
