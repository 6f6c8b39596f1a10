//! Peer protocol v2 on loopback: real QUIC endpoints (`shoal-transport`) carrying the peer
//! protocol's HTTP/2. A neighbour's bytes arrive intact over the path it reached; a dial
//! completes only with the endpoint the tracker vouched for; a node of another protocol
//! version is refused with a reason, never mixed in silently.

mod peer_support;

use dashmap::DashSet;
use peer_support::*;
use shoal::cache::SegmentCache;
use shoal::metrics::PathResultLabel;
use shoal::peer::quic::{PathMetrics, QuicPeers, QuicPolicy};
use shoal::peer::{PeerAddr, PeerClient, PeerClientConfig, PeerError, PeerServer};
use shoal_core::swarm::QuicAddr;
use shoal_proto::CandidateKind;
use shoal_transport::{PeerConfig, PeerEndpoint, SecretKey};
use std::sync::Arc;
use std::time::Duration;

const STALL: Duration = Duration::from_secs(5);

async fn endpoint(alpn: &[u8]) -> PeerEndpoint {
    let mut c = PeerConfig::new(SecretKey::generate());
    c.bind = "127.0.0.1:0".parse().unwrap();
    c.port_mapping = false;
    c.alpn = alpn.to_vec();
    PeerEndpoint::bind(c).await.unwrap()
}

async fn quic_peers(metrics: PathMetrics) -> QuicPeers {
    QuicPeers::new(
        endpoint(shoal_transport::ALPN_V2).await,
        QuicPolicy::default(),
        metrics,
        None,
    )
}

/// The address a tracker would hand out for `ep`: its id and its loopback candidate.
fn addr_of(ep: &PeerEndpoint) -> PeerAddr {
    let bound = ep.bound_sockets()[0];
    PeerAddr {
        addr: bound,
        fingerprint: hex::encode(ep.id().as_bytes()),
        quic: Some(QuicAddr {
            candidates: vec![(CandidateKind::Local, bound)],
            relay: None,
        }),
    }
}

struct Server {
    cache: SegmentCache,
    addr: PeerAddr,
    _server: PeerServer,
}

async fn server(swarm_id: &str) -> Server {
    let quic = quic_peers(PathMetrics::default()).await;
    let cache = SegmentCache::new(16 << 20);
    let swarms = Arc::new(DashSet::new());
    swarms.insert(swarm(swarm_id));
    let addr = addr_of(quic.endpoint());
    let server = PeerServer::serve_quic(quic, cache.clone(), swarms, Default::default());
    Server {
        cache,
        addr,
        _server: server,
    }
}

fn count(m: &PathMetrics, path: &'static str, result: &'static str) -> u64 {
    m.attempts
        .get_or_create(&PathResultLabel { path, result })
        .get()
}

#[tokio::test]
async fn a_segment_and_the_haves_arrive_intact_over_quic_on_the_lan_path() {
    let srv = server("live").await;
    let body = payload(2 * 1024 * 1024 + 5);
    srv.cache
        .insert(&swarm("live"), &key("seg-1.ts"), body.clone());
    let metrics = PathMetrics::default();
    let client = PeerClient::quic(
        PeerClientConfig::default(),
        quic_peers(metrics.clone()).await,
    );
    let t = tokio::time::timeout(
        HANG_GUARD,
        client.fetch(&srv.addr, &swarm("live"), &key("seg-1.ts"), STALL),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(t.bytes, body);
    // Loopback is a private address: the `lan` path.
    assert_eq!(count(&metrics, "lan", "ok"), 1);

    // The haves stream runs on the same connection: a snapshot, then a new segment.
    use futures::StreamExt;
    let mut haves = client.haves(&srv.addr, &swarm("live")).await.unwrap();
    let first = tokio::time::timeout(HANG_GUARD, haves.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first,
        shoal_proto::HaveMsg::Snapshot {
            segments: vec![key("seg-1.ts")]
        }
    );
    srv.cache
        .insert(&swarm("live"), &key("seg-2.ts"), payload(10));
    let next = tokio::time::timeout(HANG_GUARD, haves.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        next,
        shoal_proto::HaveMsg::Have {
            segment: key("seg-2.ts")
        }
    );
    assert_eq!(count(&metrics, "lan", "ok"), 1, "one connection for both");
}

#[tokio::test]
async fn an_endpoint_that_is_not_the_vouched_one_gets_nothing() {
    let srv = server("live").await;
    srv.cache
        .insert(&swarm("live"), &key("seg-1.ts"), payload(1000));
    let impostor_id = hex::encode(SecretKey::generate().public().as_bytes());
    let wrong = PeerAddr {
        fingerprint: impostor_id,
        ..srv.addr.clone()
    };
    let metrics = PathMetrics::default();
    let client = PeerClient::quic(
        PeerClientConfig::default(),
        quic_peers(metrics.clone()).await,
    );
    let err = tokio::time::timeout(
        HANG_GUARD,
        client.fetch(&wrong, &swarm("live"), &key("seg-1.ts"), STALL),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, PeerError::WrongEndpoint(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(count(&metrics, "lan", "ok"), 0, "no connection completed");
}

#[tokio::test]
async fn a_node_of_another_protocol_version_is_refused_with_a_reason() {
    // A later version's endpoint: same transport, another ALPN.
    let later = endpoint(b"shoal/p2p/3").await;
    let addr = addr_of(&later);
    let accept = tokio::spawn({
        let later = later.clone();
        async move {
            let incoming = later.accept().await.unwrap();
            incoming.accept().await.map(|_| ())
        }
    });
    let metrics = PathMetrics::default();
    let client = PeerClient::quic(
        PeerClientConfig::default(),
        quic_peers(metrics.clone()).await,
    );
    let err = tokio::time::timeout(
        HANG_GUARD,
        client.fetch(&addr, &swarm("live"), &key("seg-1.ts"), STALL),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, PeerError::WrongVersion(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("another protocol version"),
        "{err}"
    );
    assert_eq!(count(&metrics, "none", "version_mismatch"), 1);
    let theirs = tokio::time::timeout(HANG_GUARD, accept)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            theirs,
            Err(shoal_transport::TransportError::WrongProtocol { .. })
        ),
        "{theirs:?}"
    );

    // And a v1 neighbour (a TCP address only) is never dialled over QUIC.
    let v1 = PeerAddr::tcp("127.0.0.1:9".parse().unwrap(), "00".repeat(32));
    let err = client
        .fetch(&v1, &swarm("live"), &key("seg-1.ts"), STALL)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::ProtocolMismatch(_)), "{err:?}");
}
