//! A peer-protocol-v2 node for tests and checks by hand: binds an endpoint, prints what it
//! found of its network, then serves (echoes every request) or dials a peer, moves bytes both
//! ways and reports the path. Or runs the provider's relay. One JSON object per line on
//! stdout; logs on stderr (`RUST_LOG`).

use clap::{Args, Parser, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use sha2::{Digest, Sha256};
use shoal_transport::relay::{RelayServer, RelayServerConfig};
use shoal_transport::{
    load_or_generate_secret_key, PeerAddr, PeerConfig, PeerEndpoint, RelayNode, SecretKey,
    TransportError,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "shoal-transport-node",
    about = "Shoal peer protocol v2 node (QUIC, hole punching through the provider's relay)",
    long_about = "Binds a QUIC endpoint that talks only to the given relays and peers (no public \
                  discovery, no public relays), prints {\"event\":\"ready\",\"addr\":…} with its \
                  announced address and what it observed (local, reflexive and mapped addresses, \
                  NAT guess), then serves or dials. `relay` runs the provider's relay instead."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Accept connections and echo every request back.
    Serve {
        #[command(flatten)]
        node: NodeArgs,
        /// Stop after this many connections (0: never).
        #[arg(long, env = "SHOAL_NODE_MAX_CONNECTIONS", default_value_t = 0)]
        max_connections: u32,
    },
    /// Dial a peer, wait for a direct path, send bytes and check the echo.
    Dial {
        #[command(flatten)]
        node: NodeArgs,
        /// The peer's address (compact form, as `serve` printed it).
        #[arg(long, env = "SHOAL_NODE_PEER")]
        peer: String,
        /// Bytes to send (and receive back).
        #[arg(long, env = "SHOAL_NODE_BYTES", default_value_t = 1 << 20)]
        bytes: usize,
        /// How long to wait for a direct path before moving the bytes anyway.
        #[arg(long, env = "SHOAL_NODE_DIRECT_TIMEOUT", value_parser = secs, default_value = "8")]
        direct_timeout: Duration,
        /// Seed of the bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Run the provider's relay (HTTPS relay + QUIC address discovery).
    Relay {
        /// Plain HTTP address.
        #[arg(long, env = "SHOAL_RELAY_HTTP", default_value = "0.0.0.0:3340")]
        http: SocketAddr,
        /// HTTPS address.
        #[arg(long, env = "SHOAL_RELAY_HTTPS", default_value = "0.0.0.0:3443")]
        https: SocketAddr,
        /// QUIC address discovery address (UDP).
        #[arg(long, env = "SHOAL_RELAY_QUIC", default_value = "0.0.0.0:7842")]
        quic: SocketAddr,
        /// Certificate chain, PEM (leaf first).
        #[arg(long, env = "SHOAL_RELAY_CERT")]
        cert: PathBuf,
        /// Private key of the leaf, PEM.
        #[arg(long, env = "SHOAL_RELAY_KEY")]
        key: PathBuf,
    },
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// File holding the node's secret key (created, mode 0600, if missing). Without it a new
    /// key (and endpoint id) is made on every start.
    #[arg(long, env = "SHOAL_NODE_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// The provider's relay (https URL); repeat for more.
    #[arg(long = "relay", env = "SHOAL_NODE_RELAY")]
    relays: Vec<iroh::RelayUrl>,
    /// The relays' QUIC address discovery port.
    #[arg(long, env = "SHOAL_NODE_RELAY_QUIC_PORT", default_value_t = 7842)]
    relay_quic_port: u16,
    /// CA certificate (PEM) to trust for the relays, instead of the web roots.
    #[arg(long, env = "SHOAL_NODE_RELAY_CA")]
    relay_ca: Option<PathBuf>,
    /// UDP address to bind.
    #[arg(long, env = "SHOAL_NODE_BIND", default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// Do not ask the router for a port mapping (UPnP/NAT-PMP/PCP).
    #[arg(long, env = "SHOAL_NODE_NO_PORT_MAPPING")]
    no_port_mapping: bool,
    /// ALPN to speak (default: shoal/p2p/2).
    #[arg(long, env = "SHOAL_NODE_ALPN")]
    alpn: Option<String>,
    /// How long to wait at start for the net report and the relay.
    #[arg(long, value_parser = secs, default_value = "6")]
    observe_timeout: Duration,
}

fn secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?}: expected seconds, e.g. 2.5"))
}

fn print(v: serde_json::Value) {
    println!("{v}");
}

fn fail(e: &TransportError) -> ! {
    print(json!({"event": "error", "retryable": e.is_retryable(), "message": e.to_string()}));
    std::process::exit(1)
}

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

async fn bind(args: &NodeArgs) -> Result<PeerEndpoint, TransportError> {
    let secret = match &args.secret_key_file {
        Some(p) => load_or_generate_secret_key(p)?,
        None => SecretKey::generate(),
    };
    let mut config = PeerConfig::new(secret);
    config.relays = args
        .relays
        .iter()
        .map(|url| RelayNode {
            url: url.clone(),
            quic_port: Some(args.relay_quic_port),
        })
        .collect();
    if let Some(ca) = &args.relay_ca {
        config.relay_ca = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TransportError::InvalidConfig(format!("{}: {e}", ca.display())))?;
    }
    config.bind = args.bind;
    config.port_mapping = !args.no_port_mapping;
    if let Some(a) = &args.alpn {
        config.alpn = a.as_bytes().to_vec();
    }
    let ep = PeerEndpoint::bind(config).await?;
    let observed = ep.observe(args.observe_timeout).await;
    print(json!({
        "event": "ready",
        "addr": ep.endpoint_addr().to_string(),
        "observed": observed,
    }));
    Ok(ep)
}

async fn serve(ep: PeerEndpoint, max_connections: u32) {
    let mut n = 0u32;
    while let Some(incoming) = ep.accept().await {
        n += 1;
        let last = max_connections != 0 && n >= max_connections;
        let task = tokio::spawn(async move {
            let conn = match incoming.accept().await {
                Ok(c) => c,
                Err(e) => {
                    print(json!({"event": "refused", "retryable": e.is_retryable(),
                                 "message": e.to_string()}));
                    return;
                }
            };
            let peer = conn.remote_id().to_string();
            loop {
                match conn.accept_request(64 << 20).await {
                    Ok(Some(req)) => {
                        let path = conn.path();
                        let sha = hex::encode(Sha256::digest(req.body()));
                        let len = req.body().len();
                        let body = req.body().to_vec();
                        let answered = req.respond(&body).await;
                        print(json!({
                            "event": "served", "peer": peer, "bytes": len, "sha256": sha,
                            "path": path, "path_addr": format!("{:?}", conn.path_addr()),
                            "ok": answered.is_ok(),
                        }));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        print(json!({"event": "lost", "peer": peer, "message": e.to_string()}));
                        break;
                    }
                }
            }
        });
        if last {
            let _ = task.await;
            break;
        }
    }
}

async fn dial(ep: PeerEndpoint, peer: &str, bytes: usize, direct_timeout: Duration, seed: u64) {
    let addr: PeerAddr = peer.parse().unwrap_or_else(|e: TransportError| fail(&e));
    let t0 = Instant::now();
    let conn = ep.connect(&addr).await.unwrap_or_else(|e| fail(&e));
    let connect_ms = t0.elapsed().as_secs_f64() * 1e3;
    let at_connect = conn.path();
    let t1 = Instant::now();
    let path = conn.wait_direct(direct_timeout).await;
    let direct_ms = path.is_direct().then(|| t1.elapsed().as_secs_f64() * 1e3);
    let data = payload(bytes, seed);
    let t2 = Instant::now();
    let echo = conn
        .request(&data, bytes + 1, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| fail(&e));
    let transfer_ms = t2.elapsed().as_secs_f64() * 1e3;
    print(json!({
        "event": "dialled",
        "connect_ms": connect_ms,
        "path_at_connect": at_connect,
        "time_to_direct_ms": direct_ms,
        "path": path,
        "path_after": conn.path(),
        "path_addr": format!("{:?}", conn.path_addr()),
        "bytes": bytes,
        "sha256": hex::encode(Sha256::digest(&data)),
        "echo_ok": echo == data,
        "transfer_ms": transfer_ms,
    }));
    conn.close("done");
    // Let the close reach the peer (bounded).
    let _ = tokio::time::timeout(Duration::from_secs(2), ep.close()).await;
}

async fn relay(
    http: SocketAddr,
    https: SocketAddr,
    quic: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
) -> Result<(), TransportError> {
    let bad = |p: &PathBuf, e: rustls::pki_types::pem::Error| {
        TransportError::InvalidConfig(format!("{}: {e}", p.display()))
    };
    let cert_chain = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(&cert, e))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| bad(&key, e))?;
    let server = RelayServer::start(RelayServerConfig {
        http_addr: http,
        https_addr: https,
        quic_addr: Some(quic),
        cert_chain,
        key,
    })
    .await?;
    print(json!({
        "event": "relay",
        "https": server.https_addr(),
        "http": server.http_addr(),
        "quic": server.quic_addr(),
    }));
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown().await
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::Serve {
            node,
            max_connections,
        } => {
            let ep = bind(&node).await.unwrap_or_else(|e| fail(&e));
            serve(ep, max_connections).await;
        }
        Cmd::Dial {
            node,
            peer,
            bytes,
            direct_timeout,
            seed,
        } => {
            let ep = bind(&node).await.unwrap_or_else(|e| fail(&e));
            dial(ep, &peer, bytes, direct_timeout, seed).await;
        }
        Cmd::Relay {
            http,
            https,
            quic,
            cert,
            key,
        } => relay(http, https, quic, cert, key)
            .await
            .unwrap_or_else(|e| fail(&e)),
    }
}
