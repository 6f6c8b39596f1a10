//! `shoal-edge`: the Shoal edge proxy. Runs beside a player on the same device; the player
//! opens `http://127.0.0.1:8080/<origin-host>/<path>` and gets every segment from peers when
//! they have it in time, from the origin CDN otherwise.

use anyhow::{Context, Result};
use clap::Parser;
use serde::Deserialize;
use shoal::config::{IpNet, Rate};
use shoal::{Node, NodeConfig};
use shoal_proto::signed_list::ProviderKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Shoal edge proxy: peer-assisted delivery of HLS and DASH video for a local player.
///
/// Point the player at http://LISTEN/<origin-host>/<path-of-manifest> (an HLS .m3u8 or a
/// DASH .mpd). Manifests are rewritten so every segment request comes back here; each segment
/// is fetched from peers in the same swarm when one has it in time, else from the origin.
/// Only origins given with --origin are ever fetched.
///
/// Every flag can also be set with an environment variable SHOAL_EDGE_<FLAG> (e.g.
/// SHOAL_EDGE_TRACKER) or in the TOML file given with --config (keys are the flag names with
/// '_' for '-'; see --print-config). Flags beat environment, which beats the file.
///
/// Endpoints on LISTEN: /<origin-host>/<path> for players, /metrics (Prometheus), /healthz.
#[derive(Debug, Parser)]
#[command(name = "shoal-edge", version, about, long_about, verbatim_doc_comment)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "SHOAL_EDGE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML (defaults merged with file, env and flags) and exit.
    #[arg(long)]
    print_config: bool,
    /// Ask the proxy at the configured --listen address (same flags, env and file) for
    /// /healthz and exit 0 if it answers 200, 1 otherwise: a container health check for
    /// images without a shell or curl.
    #[arg(long)]
    healthcheck: bool,
    /// Player front address (players, /metrics, /healthz). [default: 127.0.0.1:8080]
    #[arg(long, env = "SHOAL_EDGE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Peer server address (UDP with quic, TCP with tcp); port 0 picks a free port.
    /// [default: 0.0.0.0:0]
    #[arg(long, env = "SHOAL_EDGE_PEER_LISTEN")]
    peer_listen: Option<SocketAddr>,
    /// An ip:port other peers can reach this node at that it cannot find itself (a port
    /// forwarded by hand, a container's published port). With quic it is announced beside
    /// the addresses the node finds; with tcp it replaces the bound address.
    #[arg(long, env = "SHOAL_EDGE_PEER_ADVERTISE")]
    peer_advertise: Option<String>,
    /// Peer protocol: quic (v2: UDP, reaches viewers behind home routers) or tcp (v1: TLS
    /// over TCP, for networks that block UDP). Nodes of one protocol skip the other's.
    /// [default: quic]
    #[arg(long, env = "SHOAL_EDGE_PEER_TRANSPORT")]
    peer_transport: Option<shoal::config::PeerTransport>,
    /// The provider's relay, an https URL: coordinates hole punching between home viewers,
    /// tells this node its public address, and reaches nodes whose UDP is blocked. Without
    /// it, neighbours are reached on their LAN, public or mapped addresses only. [default:
    /// none]
    #[arg(long, env = "SHOAL_EDGE_RELAY")]
    relay: Option<String>,
    /// UDP port of the relay's QUIC address discovery; 0 if it runs none. [default: 7842]
    #[arg(long, env = "SHOAL_EDGE_RELAY_QUIC_PORT")]
    relay_quic_port: Option<u16>,
    /// PEM file of the CA that signed the relay's certificate (a private relay), instead of
    /// the built-in web roots. [default: none]
    #[arg(long, env = "SHOAL_EDGE_RELAY_CA")]
    relay_ca: Option<PathBuf>,
    /// Let segments travel through the relay when no direct path opens (the provider pays
    /// the relay's egress). [default: false: such neighbours are skipped]
    #[arg(long, env = "SHOAL_EDGE_RELAY_MEDIA", num_args = 0..=1, default_missing_value = "true")]
    relay_media: Option<bool>,
    /// Ask the home router for a port mapping (UPnP IGD, NAT-PMP, PCP). [default: true]
    #[arg(long, env = "SHOAL_EDGE_PORT_MAPPING", num_args = 0..=1, default_missing_value = "true")]
    port_mapping: Option<bool>,
    /// Longest a new peer connection may take to go direct before it is given up, e.g. 3s.
    /// [default: 3s]
    #[arg(long, env = "SHOAL_EDGE_DIRECT_WAIT", value_parser = humantime::parse_duration)]
    direct_wait: Option<Duration>,
    /// Tracker base URL, e.g. https://tracker.example.com or http://tracker.example.com:7070.
    /// Without it: CDN only.
    #[arg(long, env = "SHOAL_EDGE_TRACKER")]
    tracker: Option<String>,
    /// CA certificate(s), PEM, that an https:// tracker is verified against instead of the
    /// system's roots and the Mozilla root set (a tracker with a private CA's certificate).
    /// [default: none]
    #[arg(long, env = "SHOAL_EDGE_TRACKER_CA")]
    tracker_ca: Option<PathBuf>,
    /// Tracker access token signed by the content provider.
    #[arg(long, env = "SHOAL_EDGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The content provider's Ed25519 public key for signed digest lists: the line of the .pub
    /// file `shoal-tracker token keygen --alg ed25519` writes, or the bare base64 key. Set:
    /// bytes from peers are checked only against the signed list beside each manifest, never
    /// the tracker's digests. [default: none]
    #[arg(long, env = "SHOAL_EDGE_DIGEST_LIST_KEY", allow_hyphen_values = true)]
    digest_list_key: Option<ProviderKey>,
    /// Appended to a manifest URL's path to find its signed digest list (the signature is at
    /// the list's URL + .sig). [default: .sha256]
    #[arg(long, env = "SHOAL_EDGE_DIGEST_LIST_SUFFIX")]
    digest_list_suffix: Option<String>,
    /// Origins allowed, comma-separated HOST or HOST:PORT. Everything else gets 403.
    #[arg(long, env = "SHOAL_EDGE_ORIGIN", value_delimiter = ',')]
    origin: Option<Vec<String>>,
    /// Origins reached over plain HTTP, comma-separated HOST[:PORT]=http (local test origins).
    #[arg(long, env = "SHOAL_EDGE_ORIGIN_SCHEME", value_delimiter = ',')]
    origin_scheme: Option<Vec<String>>,
    /// Segment cache budget, e.g. 256MiB. [default: 256MiB]
    #[arg(long, env = "SHOAL_EDGE_CACHE_SIZE")]
    cache_size: Option<bytesize::ByteSize>,
    /// Upload cap toward peers, e.g. 10Mbit. [default: none]
    #[arg(long, env = "SHOAL_EDGE_UPLOAD_LIMIT")]
    upload_limit: Option<Rate>,
    /// Download cap over segment bytes from peers, e.g. 20Mbit; the origin is not capped.
    /// [default: none]
    #[arg(long, env = "SHOAL_EDGE_DOWNLOAD_LIMIT")]
    download_limit: Option<Rate>,
    /// Most neighbours per swarm. [default: 20]
    #[arg(long, env = "SHOAL_EDGE_MAX_PEERS")]
    max_peers: Option<usize>,
    /// Most uploads at once. [default: 8]
    #[arg(long, env = "SHOAL_EDGE_MAX_UPLOADS")]
    max_uploads: Option<usize>,
    /// Most segment downloads from peers at once. [default: 16]
    #[arg(long, env = "SHOAL_EDGE_MAX_DOWNLOADS")]
    max_downloads: Option<usize>,
    /// Peers never connected to, comma-separated IPs or CIDR blocks (10.0.0.0/8,192.0.2.7);
    /// added to the tracker policy's exclusions. [default: none]
    #[arg(long, env = "SHOAL_EDGE_EXCLUDE", value_delimiter = ',', value_parser = parse_net)]
    exclude: Option<Vec<IpNet>>,
    /// Longest a player's segment request waits on P2P before the origin, e.g. 4s; within it,
    /// the wait is what the player's estimated buffer allows. [default: 6s]
    #[arg(long, env = "SHOAL_EDGE_P2P_BUDGET", value_parser = humantime::parse_duration)]
    p2p_budget: Option<Duration>,
    /// Media left in the player's estimated buffer (beyond an origin fetch) when P2P gives up
    /// and the origin is asked, e.g. 1s. [default: 500ms]
    #[arg(long, env = "SHOAL_EDGE_PLAYBACK_MARGIN", value_parser = humantime::parse_duration)]
    playback_margin: Option<Duration>,
    /// Fixed node id for logs and peer ids. [default: random]
    #[arg(long, env = "SHOAL_EDGE_NODE_ID")]
    node_id: Option<String>,
    /// Directory kept across restarts: holds the peer key (made at first start), so
    /// neighbours keep knowing this node by the same key. [default: none, a new key each
    /// run]
    #[arg(long, env = "SHOAL_EDGE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A peer transfer with no progress for this long is abandoned, e.g. 2s. [default: 1s]
    #[arg(long, env = "SHOAL_EDGE_STALL_TIMEOUT", value_parser = humantime::parse_duration)]
    stall_timeout: Option<Duration>,
    /// Less time than this before the deadline is not worth starting a peer transfer, e.g.
    /// 300ms. [default: 150ms]
    #[arg(long, env = "SHOAL_EDGE_MIN_PEER_TIME", value_parser = humantime::parse_duration)]
    min_peer_time: Option<Duration>,
    /// Seeders per live segment (those that fetch it from the origin for the swarm); 0 sizes
    /// them by the swarm. [default: 0]
    #[arg(long, env = "SHOAL_EDGE_ORIGIN_SEEDERS")]
    origin_seeders: Option<usize>,
    /// VOD: segments ahead of the player fetched from peers (never the origin). [default: 4]
    #[arg(long, env = "SHOAL_EDGE_VOD_READAHEAD")]
    vod_readahead: Option<usize>,
    /// A swarm with no player request for this long is left, e.g. 2m. [default: 60s]
    #[arg(long, env = "SHOAL_EDGE_SWARM_IDLE", value_parser = humantime::parse_duration)]
    swarm_idle: Option<Duration>,
    /// Largest segment accepted from a peer or the origin, e.g. 32MiB. [default: 64MiB]
    #[arg(long, env = "SHOAL_EDGE_MAX_SEGMENT_SIZE")]
    max_segment_size: Option<bytesize::ByteSize>,
    /// Largest manifest parsed and rewritten; larger ones pass through untouched, e.g. 4MiB.
    /// [default: 8MiB]
    #[arg(long, env = "SHOAL_EDGE_MAX_MANIFEST_SIZE")]
    max_manifest_size: Option<bytesize::ByteSize>,
    /// Never upload: announce no address (the tracker hands this node to nobody) and refuse
    /// every neighbour; downloads from peers go on. [default: false]
    #[arg(long, env = "SHOAL_EDGE_DOWNLOAD_ONLY", num_args = 0..=1, default_missing_value = "true")]
    download_only: Option<bool>,
    /// Upload while on mobile data, for apps that tell the node its network (the SDK's
    /// set_network; the edge itself always counts as Wi-Fi). [default: false]
    #[arg(long, env = "SHOAL_EDGE_UPLOAD_ON_CELLULAR", num_args = 0..=1, default_missing_value = "true")]
    upload_on_cellular: Option<bool>,
    /// Log format: text or json. [default: text]
    #[arg(long, env = "SHOAL_EDGE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

/// The keys of the configuration file that are the edge's own, not the node's.
const EDGE_KEYS: [&str; 1] = ["log_format"];

impl Cli {
    /// The node's configuration and the log format: defaults, then the file, then the
    /// environment and flags (clap reads both).
    fn resolve(self) -> Result<(NodeConfig, LogFormat)> {
        let (mut c, file_log_format): (NodeConfig, Option<LogFormat>) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                let mut table: toml::Table = toml::from_str(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?;
                let log_format = match table.remove(EDGE_KEYS[0]) {
                    Some(v) => Some(v.try_into::<LogFormat>().with_context(|| {
                        format!(
                            "config file {}: log_format must be \"text\" or \"json\"",
                            path.display()
                        )
                    })?),
                    None => None,
                };
                let node = NodeConfig::deserialize(table)
                    .with_context(|| format!("parsing config file {}", path.display()))?;
                (node, log_format)
            }
            None => (NodeConfig::default(), None),
        };
        let log_format = self
            .log_format
            .or(file_log_format)
            .unwrap_or(LogFormat::Text);
        macro_rules! set {
            ($($field:ident => $target:ident),* $(,)?) => {
                $(if let Some(v) = self.$field { c.$target = v; })*
            };
        }
        macro_rules! set_opt {
            ($($field:ident),* $(,)?) => {
                $(if let Some(v) = self.$field { c.$field = Some(v); })*
            };
        }
        set!(listen => listen, peer_listen => peer_listen, origin => origins,
             origin_scheme => origin_schemes, cache_size => cache_size, max_peers => max_peers,
             max_uploads => max_uploads, max_downloads => max_downloads,
             exclude => exclude, p2p_budget => p2p_budget,
             playback_margin => playback_margin,
             digest_list_suffix => digest_list_suffix,
             peer_transport => peer_transport, relay_quic_port => relay_quic_port,
             relay_media => relay_media, port_mapping => port_mapping,
             direct_wait => direct_wait, stall_timeout => stall_timeout,
             min_peer_time => min_peer_time, origin_seeders => origin_seeders,
             vod_readahead => vod_readahead, swarm_idle => swarm_idle,
             max_segment_size => max_segment_size, max_manifest_size => max_manifest_size,
             download_only => download_only, upload_on_cellular => upload_on_cellular);
        set_opt!(
            relay,
            relay_ca,
            peer_advertise,
            tracker,
            tracker_ca,
            token,
            digest_list_key,
            upload_limit,
            download_limit,
            node_id,
            data_dir
        );
        Ok((c, log_format))
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    shoal::peer::exclusions::parse_net(s).map_err(|e| e.to_string())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are registered when this is called, not when
/// it is first polled, so call it before anything can send a signal expecting a clean stop.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// GETs `/healthz` from a proxy listening on `listen` (an unspecified address is asked on
/// loopback) and succeeds on a 200 answer, within a few seconds.
async fn probe_healthz(listen: SocketAddr) -> Result<()> {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/healthz");
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("asking {url}"))?;
    anyhow::ensure!(
        answer.status() == reqwest::StatusCode::OK,
        "{url} answered {}",
        answer.status()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let print = cli.print_config;
    let healthcheck = cli.healthcheck;
    let (config, log_format) = cli.resolve()?;
    if print {
        // The node's keys and the edge's own, in one file that --config reads back.
        let mut table = toml::Table::try_from(&config)?;
        table.insert(EDGE_KEYS[0].into(), toml::Value::try_from(log_format)?);
        print!("{}", toml::to_string(&table)?);
        return Ok(());
    }
    if healthcheck {
        match probe_healthz(config.listen).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                eprintln!("unhealthy: {e:#}");
                std::process::exit(1);
            }
        }
    }
    init_logs(log_format);
    let stop = shutdown_signal()?;
    let node = Node::start(config.clone())
        .await
        .context("starting the edge proxy")?;
    let addr = node.player_addr();
    tracing::info!(
        player = %addr,
        peer = ?node.peer_addr(),
        tracker = config.tracker.as_deref().unwrap_or("none (CDN only)"),
        origins = ?config.origins,
        "shoal-edge ready: play http://{addr}/<origin-host>/<path>; metrics at http://{addr}/metrics"
    );
    stop.await;
    tracing::info!("shutting down: leaving swarms, finishing in-flight responses");
    node.shutdown().await;
    Ok(())
}
