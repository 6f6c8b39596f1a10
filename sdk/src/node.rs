//! [`Node`]: the embeddable whole — player front, peer server, swarms, tracker client.
//!
//! An app (or `shoal-edge`) builds a [`NodeConfig`], calls [`Node::start`], points its player
//! at [`Node::player_url`], and calls [`Node::shutdown`] when done.

use crate::cache::SegmentCache;
use crate::config::NodeConfig;
use crate::config::PeerTransport;
use crate::manifest::UrlMapper;
use crate::metrics::NodeMetrics;
use crate::origin_client::OriginClient;
use crate::peer::quic::{QuicPeers, QuicPolicy};
use crate::peer::{
    DownloadLimits, Exclusions, IdentityError, NodeIdentity, PeerAddr, PeerClient,
    PeerClientConfig, PeerServer, PeerServerConfig,
};
use crate::swarm::{Neighbour, Offer, Swarm};
use crate::tracker_client::{TrackerClient, TrackerError};
use dashmap::{DashMap, DashSet};
use futures::StreamExt;
use prometheus_client::registry::Registry;
use shoal_core::swarm::QuicAddr;
use shoal_proto::Announced;
use shoal_proto::{
    AnnounceRequest, ByteCounters, HaveMsg, LeaveRequest, PeerId, SwarmId, PROTOCOL_VERSION,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is inconsistent; the message says what to change.
    #[error("configuration: {0}")]
    Config(String),
    /// A listen address could not be bound (in use, or not permitted).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The peer server failed to start.
    #[error("peer server: {0}")]
    Peer(String),
    /// The node's peer key could not be made or loaded from its data directory.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The QUIC endpoint (peer protocol v2) could not start: its key, its relay settings or
    /// its UDP socket. The message says which.
    #[error("peer endpoint: {0}")]
    Endpoint(#[source] shoal_transport::TransportError),
}

/// State shared by the node's tasks.
pub struct Shared {
    /// The configuration the node runs with.
    pub config: NodeConfig,
    /// Verified segments.
    pub cache: SegmentCache,
    /// Client of neighbours' peer servers.
    pub peer_client: PeerClient,
    /// Addresses of the configuration's `exclude`; each swarm adds its policy's.
    pub exclusions: Exclusions,
    /// Client of the origin CDN.
    pub origin: OriginClient,
    /// Metrics handles.
    pub metrics: NodeMetrics,
    /// Registry the metrics live in.
    pub registry: Registry,
    /// Origin allow-list and URL mapping.
    pub mapper: UrlMapper,
    /// Tracker client, when a tracker is configured.
    pub tracker: Option<TrackerClient>,
    /// Swarms this node is in.
    pub swarms: DashMap<SwarmId, Arc<Swarm>>,
    /// Same set, shared with the peer server (it serves only these swarms).
    pub joined: Arc<DashSet<SwarmId>>,
    /// Random id of this node; peer ids derive from it per swarm.
    pub node_id: String,
    /// How the node is reached: its v1 address, or its v2 endpoint (whose candidates change
    /// as it learns them, so they are read at each announce).
    pub reach: Reach,
    /// The key the tracker vouches for: the v2 endpoint id, or the v1 certificate's
    /// fingerprint, in hex.
    pub fingerprint: String,
    /// When the node started (for idle accounting).
    pub started: Instant,
    /// Origin bytes that belong to no swarm (master playlists, pass-through) not yet reported.
    pub unreported_cdn: AtomicU64,
    /// Upload counter value already reported to the tracker.
    pub reported_upload: AtomicU64,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// The swarm tasks, awaited at shutdown so every swarm is left and reported.
    pub swarm_tasks: TaskTracker,
    /// DASH routes and live schedules of this node's player front.
    pub(crate) dash: crate::front::DashState,
    /// Bytes of admitted uploads not yet sent (the peer server's backlog under its cap).
    pub upload_backlog: Arc<AtomicU64>,
    /// The peer server's upload slots: all free when no upload is running.
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// Whether the node serves neighbours now (false: download-only, mobile data, offline);
    /// the peer server follows it at once, the tracker at the next announce.
    pub serving: Arc<tokio::sync::watch::Sender<bool>>,
    /// The network the app last said the device is on.
    pub network: std::sync::Mutex<crate::config::NetworkKind>,
}

/// How neighbours reach this node, by peer protocol version.
#[derive(Debug, Clone)]
pub enum Reach {
    /// v1: the one `host:port` announced for the TCP peer server.
    Tcp(String),
    /// v2: the QUIC endpoint.
    Quic(QuicPeers),
}

impl Reach {
    /// The addresses to announce now.
    pub fn announced(&self) -> Vec<String> {
        match self {
            Reach::Tcp(a) => vec![a.clone()],
            Reach::Quic(q) => q.announced_addrs(shoal_proto::MAX_ADDRS),
        }
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Whether the peer server would admit one more upload now: no upload cap, or the
    /// backlog of admitted bytes is within what the cap sends in
    /// [`crate::peer::server::ADMIT_BACKLOG`].
    pub fn uplink_free(&self) -> bool {
        let Some(rate) = self.config.upload_limit.map(|r| r.bytes_per_sec()) else {
            return true;
        };
        self.upload_backlog
            .load(std::sync::atomic::Ordering::Acquire)
            <= crate::peer::server::admit_room(rate)
    }

    /// What the uplink is doing, for the seeding decisions of `shoal_core::scheduler::seed_role`.
    /// Without an upload cap there is no backlog to measure: the uplink counts as idle only
    /// with no upload running.
    pub fn uplink(&self) -> shoal_core::scheduler::Uplink {
        let free = self.uplink_free();
        let idle = match self.config.upload_limit {
            Some(_) => free,
            None => self.upload_slots.available_permits() >= self.config.max_uploads,
        };
        shoal_core::scheduler::Uplink { free, idle }
    }

    /// Milliseconds since the node started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The swarm `id`, joining it (and starting its announce loop) if needed.
    pub fn join(self: &Arc<Self>, id: SwarmId) -> Arc<Swarm> {
        if let Some(s) = self.swarms.get(&id) {
            return s.clone();
        }
        let peer_id = derive_peer_id(&self.node_id, &id);
        let swarm = Arc::new(Swarm::new(id.clone(), peer_id, self.tracker.is_some()));
        let swarm = match self.swarms.entry(id.clone()) {
            dashmap::Entry::Occupied(e) => return e.get().clone(),
            dashmap::Entry::Vacant(v) => v.insert(swarm).clone(),
        };
        swarm.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        self.joined.insert(id.clone());
        self.metrics.swarms.set(self.swarms.len() as i64);
        tracing::info!(swarm = %id, peer = %swarm.peer_id, "joined swarm");
        let (shared, s) = (self.clone(), swarm.clone());
        self.swarm_tasks
            .spawn(async move { swarm_task(shared, s).await });
        swarm
    }

    fn upload_delta(&self) -> u64 {
        let now = self.metrics.uploaded.get();
        let before = self.reported_upload.swap(now, Ordering::Relaxed);
        now.saturating_sub(before)
    }
}

/// One peer id per (node, swarm), so the tracker can bind an id to one swarm.
fn derive_peer_id(node_id: &str, swarm: &SwarmId) -> PeerId {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(swarm.as_str().as_bytes());
    let id = format!("{node_id}-{}", hex::encode(&h[..4]));
    PeerId::new(id).unwrap_or_else(|_| PeerId::new("invalid-node-id").expect("static id is valid"))
}

/// Keeps a swarm alive: announces, connects to neighbours, leaves when the player is gone.
async fn swarm_task(shared: Arc<Shared>, swarm: Arc<Swarm>) {
    let mut peer_key: Option<String> = None;
    let mut failures = 0u32;
    loop {
        let mut wait = Duration::from_secs(5);
        if let Some(tracker) = &shared.tracker {
            match announce(&shared, tracker, &swarm, &mut peer_key).await {
                Ok(interval) => {
                    failures = 0;
                    wait = interval;
                }
                Err(e) => {
                    swarm.end_discovery();
                    failures += 1;
                    shared.metrics.tracker_errors.inc();
                    tracing::warn!(swarm = %swarm.id, error = %e, "announce failed; P2P continues with known neighbours, CDN otherwise");
                    // Back off 1, 2, 4 … 30 s: rejoin soon when the tracker returns.
                    wait =
                        Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30));
                }
            }
        }
        let idle_for = shared
            .now_ms()
            .saturating_sub(swarm.last_used_ms.load(Ordering::Relaxed));
        let idle_limit = shared.config.swarm_idle.as_millis() as u64;
        if idle_for > idle_limit {
            break;
        }
        let idle_left = Duration::from_millis(idle_limit - idle_for + 10);
        tokio::select! {
            _ = tokio::time::sleep(wait.min(idle_left)) => {}
            _ = shared.shutdown.cancelled() => break,
        }
    }
    leave(&shared, &swarm, peer_key).await;
}

async fn announce(
    shared: &Arc<Shared>,
    tracker: &TrackerClient,
    swarm: &Arc<Swarm>,
    peer_key: &mut Option<String>,
) -> Result<Duration, TrackerError> {
    let (cdn, p2p) = swarm.take_unreported();
    let node_cdn = shared.unreported_cdn.swap(0, Ordering::Relaxed);
    let upload = shared.upload_delta();
    let counters = ByteCounters {
        cdn: (cdn + node_cdn).min(shoal_proto::MAX_REPORTED_BYTES),
        p2p: p2p.min(shoal_proto::MAX_REPORTED_BYTES),
        upload: upload.min(shoal_proto::MAX_REPORTED_BYTES),
    };
    let connections = shared.metrics.paths.take_unreported();
    let req = AnnounceRequest {
        proto: PROTOCOL_VERSION,
        peer_id: swarm.peer_id.clone(),
        swarm_id: swarm.id.clone(),
        // A node that serves nobody announces no address: the tracker hands it to nobody.
        addrs: if *shared.serving.borrow() {
            shared.reach.announced()
        } else {
            Vec::new()
        },
        fingerprint: shared.fingerprint.clone(),
        counters,
        connections,
        numwant: shared.config.max_peers as u32,
        client_version: concat!("shoal/", env!("CARGO_PKG_VERSION")).to_string(),
        peer_key: peer_key.clone(),
        token: shared.config.token.clone(),
    };
    let resp = match tracker.announce(&req).await {
        Ok(r) => r,
        Err(e) => {
            swarm.restore_unreported(cdn, p2p);
            shared.unreported_cdn.fetch_add(node_cdn, Ordering::Relaxed);
            shared.reported_upload.fetch_sub(upload, Ordering::Relaxed);
            shared.metrics.paths.restore_unreported(connections);
            if let TrackerError::Refused { status: 403, .. } = &e {
                // Our registration expired and the id's key changed hands: start afresh.
                *peer_key = None;
            }
            return Err(e);
        }
    };
    *peer_key = Some(resp.peer_key.clone());
    // The tracker leaves excluded peers out already; checking again here also covers our own
    // list and neighbours we hold when the policy changes.
    let exclusions = shared.exclusions.with_policy(&resp.policy.exclude);
    let offers: Vec<Offer> = resp
        .neighbours
        .iter()
        .map(|n| {
            let (addr, quic) = match shared.config.peer_transport {
                PeerTransport::Tcp => (usable_addr(&n.addrs, &exclusions), None),
                PeerTransport::Quic => usable_quic(&n.addrs, &exclusions),
            };
            if addr == Some(None) && !n.addrs.is_empty() {
                tracing::debug!(
                    swarm = %swarm.id, peer = %n.peer_id, addrs = ?n.addrs,
                    "neighbour skipped: it announced no address of the peer protocol this node speaks ({:?}); one of the two must be upgraded",
                    shared.config.peer_transport
                );
            }
            Offer {
                peer: n.peer_id.clone(),
                addr,
                fingerprint: n.fingerprint.clone(),
                quic,
            }
        })
        .collect();
    let plan = swarm.lock().handle_announce(
        crate::clock::now(),
        resp.policy.p2p,
        resp.peer_key.clone(),
        &offers,
        shared.config.max_peers,
        |ip| exclusions.excludes(ip),
    );
    for peer in &plan.excluded {
        shared.metrics.neighbours_excluded.inc();
        tracing::debug!(swarm = %swarm.id, %peer, "neighbour excluded");
    }
    if let Some((dropped, added)) = &plan.rotated {
        tracing::debug!(swarm = %swarm.id, %dropped, %added, "neighbour rotated");
    }
    for id in plan.rotated.iter().map(|(d, _)| d).chain(&plan.dropped) {
        shared.metrics.peers.dec();
        swarm.stop_following(id);
    }
    let dropped_any = !plan.dropped.is_empty();
    let to_connect = plan.connect;
    if dropped_any {
        // An aborted neighbour never settles its snapshot: stop waiting for snapshots.
        swarm.end_discovery();
    }
    let first = {
        let mut st = swarm.lock();
        let first = st.discovering;
        if first {
            st.pending_snapshots = if resp.policy.p2p { to_connect.len() } else { 0 };
        }
        first
    };
    if resp.policy.p2p {
        for (peer, addr) in to_connect {
            connect_neighbour(shared, swarm, peer, addr, first);
        }
    }
    if first && (!resp.policy.p2p || swarm.lock().pending_snapshots == 0) {
        swarm.end_discovery();
    }
    Ok(Duration::from_secs(resp.interval_secs.clamp(1, 3600) as u64))
}

/// The v1 address to connect to among a neighbour's `addrs`: the first `ip:port` that is not
/// excluded. `None` when every such address is excluded (drop the neighbour); `Some(None)`
/// when there is none (keep it as a member, but there is nothing to connect to: host names,
/// or a v2 neighbour).
fn usable_addr(addrs: &[String], exclusions: &Exclusions) -> Option<Option<SocketAddr>> {
    let mut parsed = addrs
        .iter()
        .filter_map(|a| match Announced::parse(a) {
            Announced::Tcp(a) => Some(a),
            _ => None,
        })
        .peekable();
    if parsed.peek().is_none() {
        return Some(None);
    }
    parsed.find(|a| !exclusions.excludes(a.ip())).map(Some)
}

/// A neighbour's v2 candidates that are not excluded, and its relay, with the first
/// candidate as the address exclusions and logs go by. As [`usable_addr`]: `None` when every
/// candidate is excluded; `Some(None)` when it announced none (a v1 neighbour, or a relay
/// only).
fn usable_quic(
    addrs: &[String],
    exclusions: &Exclusions,
) -> (Option<Option<SocketAddr>>, Option<QuicAddr>) {
    let mut relay = None;
    let mut any = false;
    let mut kept = Vec::new();
    for a in addrs {
        match Announced::parse(a) {
            Announced::Quic(kind, addr) => {
                any = true;
                if !exclusions.excludes(addr.ip()) {
                    kept.push((kind, addr));
                }
            }
            Announced::Relay(url) => relay = relay.or(Some(url.to_string())),
            _ => {}
        }
    }
    match (any, kept.first().copied()) {
        (false, _) => (Some(None), None),
        (true, None) => (None, None),
        (true, Some((_, first))) => (
            Some(Some(first)),
            Some(QuicAddr {
                candidates: kept,
                relay,
            }),
        ),
    }
}

/// Subscribes to a neighbour's `haves`; the neighbour is usable while the stream lives.
///
/// `awaited`: discovery waits for this neighbour's first snapshot.
fn connect_neighbour(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    peer: PeerId,
    addr: PeerAddr,
    awaited: bool,
) {
    {
        let mut st = swarm.lock();
        if st.neighbours.contains_key(&peer) {
            return;
        }
        st.neighbours
            .insert(peer.clone(), Neighbour::new(addr.clone()));
    }
    shared.metrics.peers.inc();
    let (shared2, swarm2, peer2) = (shared.clone(), swarm.clone(), peer.clone());
    let handle = tokio::spawn(async move {
        let mut awaited = awaited;
        let result = follow_haves(&shared2, &swarm2, &peer2, &addr, &mut awaited).await;
        if awaited {
            swarm2.snapshot_settled();
        }
        let lasting = match &result {
            Err(e) if !e.is_retryable() && !e.is_misbehaviour() => {
                tracing::debug!(peer = %peer2, %addr, error = %e, "neighbour unreachable; left alone for a while");
                true
            }
            Err(e) => {
                tracing::debug!(peer = %peer2, %addr, error = %e, "neighbour gone");
                false
            }
            Ok(()) => false,
        };
        let mut st = swarm2.lock();
        if lasting {
            st.record_unreachable(&peer2, crate::clock::now());
        }
        if st.neighbours.remove(&peer2).is_some() {
            shared2.metrics.peers.dec();
        }
        st.members.remove(&peer2);
        drop(st);
        swarm2.stop_following(&peer2);
    });
    swarm.follow(&peer, handle.abort_handle());
}

async fn follow_haves(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    peer: &PeerId,
    addr: &PeerAddr,
    awaited: &mut bool,
) -> Result<(), crate::peer::PeerError> {
    let stream = shared.peer_client.haves(addr, &swarm.id).await?;
    tokio::pin!(stream);
    while let Some(msg) = stream.next().await {
        match msg? {
            HaveMsg::Snapshot { segments } => {
                swarm.peer_snapshot(peer, segments);
                if std::mem::take(awaited) {
                    swarm.snapshot_settled();
                }
            }
            HaveMsg::Have { segment } => swarm.peer_has(peer, [segment]),
            HaveMsg::Lost { segment } => swarm.lock().peer_lost(peer, &segment),
            HaveMsg::Free => swarm.peer_free(peer),
            HaveMsg::Unknown => {}
        }
    }
    Ok(())
}

async fn leave(shared: &Arc<Shared>, swarm: &Arc<Swarm>, peer_key: Option<String>) {
    shared.swarms.remove(&swarm.id);
    shared.joined.remove(&swarm.id);
    shared.metrics.swarms.set(shared.swarms.len() as i64);
    {
        let mut st = swarm.lock();
        for _ in st.neighbours.drain() {
            shared.metrics.peers.dec();
        }
        drop(st);
        swarm.stop_following_all();
    }
    tracing::info!(swarm = %swarm.id, "left swarm");
    let (Some(tracker), Some(peer_key)) = (&shared.tracker, peer_key) else {
        return;
    };
    let (cdn, p2p) = swarm.take_unreported();
    let node_cdn = shared.unreported_cdn.swap(0, Ordering::Relaxed);
    let req = LeaveRequest {
        proto: PROTOCOL_VERSION,
        peer_id: swarm.peer_id.clone(),
        swarm_id: swarm.id.clone(),
        peer_key,
        counters: ByteCounters {
            cdn: (cdn + node_cdn).min(shoal_proto::MAX_REPORTED_BYTES),
            p2p: p2p.min(shoal_proto::MAX_REPORTED_BYTES),
            upload: shared.upload_delta().min(shoal_proto::MAX_REPORTED_BYTES),
        },
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(3), tracker.leave(&req)).await {
        tracing::debug!(swarm = %swarm.id, error = %e, "leave not acknowledged");
    }
}

/// A running node.
pub struct Node {
    shared: Arc<Shared>,
    player_addr: SocketAddr,
    peer_server: Option<PeerServer>,
    front: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("player_addr", &self.player_addr)
            .finish_non_exhaustive()
    }
}

/// Byte totals of a node since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStats {
    /// Bytes delivered to the player that came from peers.
    pub p2p_bytes: u64,
    /// Bytes delivered to the player that came from the origin.
    pub cdn_bytes: u64,
    /// Bytes fetched from the origin (what the CDN bills).
    pub origin_bytes: u64,
    /// Bytes uploaded to peers.
    pub uploaded_bytes: u64,
    /// Connected neighbours now.
    pub peers: i64,
}

/// A swarm as [`Node::swarms`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmView {
    /// The swarm's id.
    pub id: SwarmId,
    /// This node's peer id in it.
    pub peer_id: PeerId,
    /// The neighbours it follows there, sorted.
    pub neighbours: Vec<PeerId>,
}

impl Node {
    /// Binds the player front and the peer server and starts serving.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let mut registry = Registry::default();
        let metrics = NodeMetrics::new(&mut registry);
        let front_listener =
            tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let player_addr = front_listener
            .local_addr()
            .map_err(|source| NodeError::Bind {
                addr: config.listen,
                source,
            })?;
        let mapper = UrlMapper::new(&format!("http://{player_addr}"), config.origin_list())
            .map_err(|e| NodeError::Config(e.to_string()))?;
        let cache = SegmentCache::new(config.cache_size.as_u64());
        let joined = Arc::new(DashSet::new());
        let upload_backlog = Arc::new(AtomicU64::new(0));
        let serving = Arc::new(
            tokio::sync::watch::channel(uploads_on(&config, crate::config::NetworkKind::default()))
                .0,
        );
        let server_config = PeerServerConfig {
            serving: serving.clone(),
            upload_limit_bytes_per_sec: config.upload_limit.map(|r| r.bytes_per_sec()),
            max_concurrent_uploads: config.max_uploads,
            max_connections: config.max_peers * 4,
            uploaded: metrics.uploaded.clone(),
            refused: crate::peer::Exclusions::new(config.exclude.clone()),
            backlog: upload_backlog.clone(),
            ..Default::default()
        };
        let download = DownloadLimits::new(
            config.download_limit.map(|r| r.bytes_per_sec()),
            Some(config.max_downloads),
            metrics.peer_received.clone(),
        );
        let client_config = PeerClientConfig {
            max_segment_bytes: config.max_segment_bytes(),
            download,
            ..Default::default()
        };
        let (peer_server, peer_client, reach, fingerprint) = match config.peer_transport {
            PeerTransport::Tcp => {
                let identity = match &config.data_dir {
                    Some(dir) => NodeIdentity::load_or_create(dir)?,
                    None => NodeIdentity::generate()?,
                };
                let server = PeerServer::bind(
                    config.peer_listen,
                    cache.clone(),
                    joined.clone(),
                    &identity,
                    server_config,
                )
                .await
                .map_err(|e| NodeError::Peer(e.to_string()))?;
                let bound = server.local_addr();
                let advertise = match &config.peer_advertise {
                    Some(a) => a.clone(),
                    // Reachable on loopback at least; set peer_advertise for other hosts.
                    None if bound.ip().is_unspecified() => format!("127.0.0.1:{}", bound.port()),
                    None => bound.to_string(),
                };
                let fingerprint = identity.fingerprint().to_string();
                let client = PeerClient::new(client_config, identity);
                (server, client, Reach::Tcp(advertise), fingerprint)
            }
            PeerTransport::Quic => {
                let quic = bind_quic(&config, &metrics).await?;
                let server = PeerServer::serve_quic(
                    quic.clone(),
                    cache.clone(),
                    joined.clone(),
                    server_config,
                );
                let client_config = PeerClientConfig {
                    connect_timeout: client_config.connect_timeout + config.direct_wait,
                    ..client_config
                };
                let fingerprint = quic.endpoint_id();
                let client = PeerClient::quic(client_config, quic.clone());
                (server, client, Reach::Quic(quic), fingerprint)
            }
        };
        let peer_addr = peer_server.local_addr();
        let upload_slots = peer_server.upload_slots();
        let tracker = match &config.tracker {
            Some(t) => Some(
                TrackerClient::with_ca(t, config.tracker_ca.as_deref())
                    .map_err(|e| NodeError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let origin = OriginClient::new().map_err(|e| NodeError::Config(e.to_string()))?;
        let node_id = config.node_id.clone().unwrap_or_else(random_node_id);
        let shared = Arc::new(Shared {
            peer_client,
            exclusions: Exclusions::new(config.exclude.clone()),
            config,
            cache,
            origin,
            metrics,
            registry,
            mapper,
            tracker,
            swarms: DashMap::new(),
            joined,
            node_id,
            reach,
            fingerprint,
            started: crate::clock::now(),
            unreported_cdn: AtomicU64::new(0),
            reported_upload: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            swarm_tasks: TaskTracker::new(),
            dash: Default::default(),
            upload_backlog,
            upload_slots,
            serving,
            network: std::sync::Mutex::new(crate::config::NetworkKind::default()),
        });
        let front = tokio::spawn(crate::front::serve(shared.clone(), front_listener));
        tracing::info!(player = %player_addr, peer = %peer_addr, transport = ?shared.config.peer_transport, key = %shared.fingerprint, "node started");
        if let Reach::Quic(quic) = &shared.reach {
            tokio::spawn(log_what_was_found(quic.clone()));
        }
        Ok(Node {
            shared,
            player_addr,
            peer_server: Some(peer_server),
            front,
        })
    }

    /// Where the player front listens.
    pub fn player_addr(&self) -> SocketAddr {
        self.player_addr
    }

    /// The URL a player opens for `origin_url` (an allow-listed origin), or `None`.
    pub fn player_url(&self, origin_url: &url::Url) -> Option<String> {
        self.shared.mapper.to_proxy(origin_url)
    }

    /// Where the peer server listens.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_server.as_ref().map(PeerServer::local_addr)
    }

    /// The node's metrics in the OpenMetrics text format.
    pub fn metrics_text(&self) -> String {
        crate::metrics::render(&self.shared.registry)
    }

    /// Byte totals since start.
    pub fn stats(&self) -> NodeStats {
        let m = &self.shared.metrics;
        NodeStats {
            p2p_bytes: m.delivered_total(crate::metrics::Source::P2p),
            cdn_bytes: m.delivered_total(crate::metrics::Source::Cdn),
            origin_bytes: m.origin_bytes.get(),
            uploaded_bytes: m.uploaded.get(),
            peers: m.peers.get(),
        }
    }

    /// The node's metric handles (cheap to clone, and live after the node moved elsewhere):
    /// for an embedding app or a harness that reads counters without scraping.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.shared.metrics
    }

    /// The key the tracker vouches for, in hex: the endpoint id (peer protocol v2) or the
    /// SHA-256 of the node's peer certificate (v1).
    pub fn fingerprint(&self) -> &str {
        &self.shared.fingerprint
    }

    /// Tells the node which network the device is on now. On mobile data (unless
    /// `upload_on_cellular`) and offline it stops serving neighbours at once: new connections
    /// and requests are refused and `haves` streams end, so neighbours stop asking; its next
    /// announce carries no address, so the tracker hands it to nobody. Back on Wi-Fi or a
    /// wire, it serves and announces again. Downloads go on throughout. Any thread may call it.
    pub fn set_network(&self, network: crate::config::NetworkKind) {
        let before = {
            let mut n = self
                .shared
                .network
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *n, network)
        };
        let serve = uploads_on(&self.shared.config, network);
        let was = self.shared.serving.send_replace(serve);
        if before != network || was != serve {
            tracing::info!(?network, uploads = serve, "network policy changed");
        }
    }

    /// The network the app last set ([`Node::set_network`]; Wi-Fi until then).
    pub fn network(&self) -> crate::config::NetworkKind {
        *self
            .shared
            .network
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the node serves neighbours now (see [`Node::set_network`] and
    /// `download_only`).
    pub fn uploads(&self) -> bool {
        *self.shared.serving.borrow()
    }

    /// The swarms this node is in now, with its peer id in each and the neighbours it
    /// follows there.
    pub fn swarms(&self) -> Vec<SwarmView> {
        self.shared
            .swarms
            .iter()
            .map(|s| {
                let swarm = s.value();
                let mut neighbours: Vec<PeerId> = swarm.lock().neighbours.keys().cloned().collect();
                neighbours.sort();
                SwarmView {
                    id: swarm.id.clone(),
                    peer_id: swarm.peer_id.clone(),
                    neighbours,
                }
            })
            .collect()
    }

    /// Stops serving: leaves every swarm (reporting final counters), stops the peer server and
    /// the player front. In-flight player responses get a short grace period.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        // Leaves run in the swarm tasks (each bounded by its own timeout).
        self.shared.swarm_tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.shared.swarm_tasks.wait()).await;
        if let Some(p) = self.peer_server.take() {
            p.shutdown().await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.front).await;
        self.front.abort();
    }
}

/// Binds the v2 endpoint: its key (kept in the data directory), the relay, port mapping.
async fn bind_quic(config: &NodeConfig, metrics: &NodeMetrics) -> Result<QuicPeers, NodeError> {
    use shoal_transport::{PeerConfig, PeerEndpoint, RelayNode, SecretKey};
    let key = match &config.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| NodeError::Config(format!("data_dir {}: {e}", dir.display())))?;
            shoal_transport::load_or_generate_secret_key(&dir.join("peer-endpoint.key"))
                .map_err(NodeError::Endpoint)?
        }
        None => SecretKey::generate(),
    };
    let mut pc = PeerConfig::new(key);
    pc.bind = config.peer_listen;
    pc.port_mapping = config.port_mapping;
    if let Some(r) = &config.relay {
        let url = r
            .parse()
            .map_err(|e| NodeError::Config(format!("relay `{r}`: {e}")))?;
        pc.relays = vec![RelayNode {
            url,
            quic_port: (config.relay_quic_port != 0).then_some(config.relay_quic_port),
        }];
    }
    if let Some(ca) = &config.relay_ca {
        use rustls::pki_types::pem::PemObject;
        pc.relay_ca = rustls::pki_types::CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| NodeError::Config(format!("relay_ca {}: {e}", ca.display())))?;
        if pc.relay_ca.is_empty() {
            return Err(NodeError::Config(format!(
                "relay_ca {}: no certificate in it",
                ca.display()
            )));
        }
    }
    let endpoint = PeerEndpoint::bind(pc).await.map_err(NodeError::Endpoint)?;
    let advertise = config
        .peer_advertise
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok());
    let policy = QuicPolicy {
        direct_wait: config.direct_wait,
        relay_media: config.relay_media,
    };
    Ok(QuicPeers::new(
        endpoint,
        policy,
        metrics.paths.clone(),
        advertise,
    ))
}

/// Logs, once the endpoint has looked around (bounded), what it found: its local and public
/// addresses, the mapped port, the relay, and the NAT's behaviour.
async fn log_what_was_found(quic: QuicPeers) {
    let o = quic.endpoint().observe(Duration::from_secs(5)).await;
    tracing::info!(
        endpoint = %o.endpoint_id,
        local = ?o.local,
        public = ?o.reflexive,
        mapped = ?o.mapped,
        relay = o.relay.as_deref().unwrap_or("none"),
        relay_connected = o.relay_connected,
        nat = ?o.nat,
        "peer endpoint: what the node found of its network"
    );
    if o.relay.is_none() {
        tracing::info!(
            "no relay configured: neighbours are reached on their LAN, public or mapped \
             addresses only; set --relay to reach viewers behind other home routers"
        );
    }
}

/// Whether a node with `config` on `network` serves neighbours.
fn uploads_on(config: &NodeConfig, network: crate::config::NetworkKind) -> bool {
    use crate::config::NetworkKind;
    !config.download_only
        && match network {
            NetworkKind::Wifi | NetworkKind::Ethernet => true,
            NetworkKind::Cellular => config.upload_on_cellular,
            NetworkKind::Offline => false,
        }
}

fn random_node_id() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("n{n:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::exclusions::parse_net;

    #[test]
    fn neighbours_with_only_excluded_addresses_are_dropped() {
        let own = Exclusions::new(vec![parse_net("127.0.0.2").unwrap()]);
        let swarm = own.with_policy(&["10.0.0.0/8".into()]);
        let addrs = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // The node's own list and the swarm policy both drop.
        assert_eq!(usable_addr(&addrs(&["127.0.0.2:9000"]), &swarm), None);
        assert_eq!(usable_addr(&addrs(&["10.1.2.3:9000"]), &swarm), None);
        // Another address of the same neighbour is used instead.
        assert_eq!(
            usable_addr(&addrs(&["10.1.2.3:9000", "127.0.0.1:9001"]), &swarm),
            Some(Some("127.0.0.1:9001".parse().unwrap()))
        );
        // Without the policy, only the node's own list applies.
        assert!(usable_addr(&addrs(&["10.1.2.3:9000"]), &own).is_some());
        // Host names are never resolved here: no address to connect to, nothing excluded.
        assert_eq!(
            usable_addr(&addrs(&["peer.example:9000"]), &swarm),
            Some(None)
        );
    }
}
