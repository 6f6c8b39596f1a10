//! Two endpoints on loopback (no relay, no port mapping: nothing leaves 127.0.0.1): they
//! connect by endpoint id, move bytes both ways intact, and refuse what they must refuse.

use shoal_transport::{
    PathKind, PeerAddr, PeerConfig, PeerEndpoint, SecretKey, TransportError, ALPN_V2,
};
use std::time::Duration;

async fn endpoint(alpn: &[u8]) -> PeerEndpoint {
    let mut config = PeerConfig::new(SecretKey::generate());
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.port_mapping = false;
    config.alpn = alpn.to_vec();
    config.connect_timeout = Duration::from_secs(5);
    PeerEndpoint::bind(config).await.expect("bind")
}

fn loopback_only(addr: &PeerAddr) {
    assert!(!addr.addrs.is_empty(), "{addr}");
    assert!(addr.relays.is_empty(), "{addr}");
    for d in &addr.addrs {
        assert!(d.addr.ip().is_loopback(), "{addr}");
    }
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Serves one connection: echoes each request until the client closes.
fn spawn_echo(server: PeerEndpoint) -> tokio::task::JoinHandle<Result<usize, TransportError>> {
    tokio::spawn(async move {
        let incoming = server.accept().await.expect("endpoint open");
        let conn = incoming.accept().await?;
        let mut served = 0;
        while let Some(req) = conn.accept_request(2 << 20).await? {
            let body = req.body().to_vec();
            req.respond(&body).await?;
            served += 1;
        }
        Ok(served)
    })
}

#[tokio::test]
async fn two_endpoints_connect_by_id_and_move_a_mebibyte_both_ways() {
    let (a, b) = (endpoint(ALPN_V2).await, endpoint(ALPN_V2).await);
    let b_addr = b.endpoint_addr();
    loopback_only(&b_addr);
    assert_eq!(b_addr.id, b.id());
    // The compact form a tracker would carry reads back to the same address.
    let parsed: PeerAddr = b_addr.to_string().parse().unwrap();
    assert_eq!(parsed, b_addr);

    let server = spawn_echo(b.clone());
    let conn = a.connect(&parsed).await.expect("connect");
    assert_eq!(conn.remote_id(), b.id());
    let data = payload(1 << 20);
    let echo = conn
        .request(&data, 2 << 20, Duration::from_secs(10))
        .await
        .expect("request");
    assert!(echo == data, "echo differs");
    assert_eq!(conn.path(), PathKind::Lan, "{:?}", conn.path_addr());
    assert_eq!(
        conn.wait_direct(Duration::from_secs(1)).await,
        PathKind::Lan
    );

    // An answer over the caller's bound is refused, not buffered.
    let err = conn
        .request(&data, 1000, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::TooLarge { limit: 1000 }),
        "{err}"
    );
    assert!(!err.is_retryable());

    conn.close("done");
    let served = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server ends")
        .unwrap()
        .expect("server ok");
    assert_eq!(served, 2);
}

#[tokio::test]
async fn a_dialler_completes_only_with_the_endpoint_id_it_was_given() {
    let (a, b) = (endpoint(ALPN_V2).await, endpoint(ALPN_V2).await);
    let _server = spawn_echo(b.clone());
    // B's address, but another node's id: whoever answers at B's address cannot prove it.
    let mut impostor = b.endpoint_addr();
    impostor.id = SecretKey::generate().public();
    let err = a.connect(&impostor).await.unwrap_err();
    assert!(
        matches!(err, TransportError::Authentication(_)),
        "expected an authentication failure, got {err:?}"
    );
    assert!(!err.is_retryable());

    let err = a.connect(&a.endpoint_addr()).await.unwrap_err();
    assert!(matches!(err, TransportError::SelfConnect), "{err:?}");
}

#[tokio::test]
async fn other_protocol_versions_are_refused_on_both_sides_with_a_reason() {
    let (v3, v2) = (endpoint(b"shoal/p2p/3").await, endpoint(ALPN_V2).await);
    let server = {
        let v2 = v2.clone();
        tokio::spawn(async move { v2.accept().await.expect("open").accept().await })
    };
    let err = v3.connect(&v2.endpoint_addr()).await.unwrap_err();
    assert!(
        matches!(&err, TransportError::WrongProtocol { ours, .. } if ours == "shoal/p2p/3"),
        "dialler: {err:?}"
    );
    assert!(err.to_string().contains("protocol"), "{err}");
    assert!(!err.is_retryable());
    let server_err = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("accept ends")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&server_err, TransportError::WrongProtocol { ours, .. } if ours == "shoal/p2p/2"),
        "acceptor: {server_err:?}"
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_before_binding() {
    let mut config = PeerConfig::new(SecretKey::generate());
    config.alpn.clear();
    let err = PeerEndpoint::bind(config).await.unwrap_err();
    assert!(matches!(err, TransportError::InvalidConfig(_)), "{err}");

    let mut config = PeerConfig::new(SecretKey::generate());
    config.port_mapping = false;
    config.relays = vec![shoal_transport::RelayNode {
        url: "http://127.0.0.1:3340".parse().unwrap(),
        quic_port: None,
    }];
    let err = PeerEndpoint::bind(config).await.unwrap_err();
    assert!(err.to_string().contains("https"), "{err}");
}
