//! A peer serves exactly the bytes it holds, for swarms it is in, and 404s everything else at
//! once.

mod peer_support;

use peer_support::*;
use shoal::peer::{PeerError, PeerServerConfig};
use std::time::Duration;

const STALL: Duration = Duration::from_secs(5);

#[tokio::test]
async fn fetch_returns_exactly_the_cached_bytes() {
    let config = PeerServerConfig::default();
    let uploaded = config.uploaded.clone();
    let node = start_node(16 << 20, &["cdn.example.com/live/720p.m3u8"], config).await;
    let s = swarm("cdn.example.com/live/720p.m3u8");
    let body = payload(3 * 1024 * 1024 + 17);
    node.cache
        .insert(&s, &key("720p/seg-00042.ts"), body.clone());

    let t = client()
        .fetch(&node.addr, &s, &key("720p/seg-00042.ts"), STALL)
        .await
        .unwrap();
    assert_eq!(t.bytes, body);
    assert!(t.bytes_per_sec() > 0.0);
    assert_eq!(uploaded.get(), body.len() as u64);
}

#[tokio::test]
async fn ids_with_slashes_colons_and_percent_round_trip() {
    let node = start_node(
        1 << 20,
        &["https://cdn.example.com:8443/a/b.m3u8#audio:en"],
        PeerServerConfig::default(),
    )
    .await;
    let s = swarm("https://cdn.example.com:8443/a/b.m3u8#audio:en");
    let client = client();
    let keys = [
        "a/b/c.ts",
        "init:video/1",
        "seg.m4s?bytes=0-1023",
        "100%/..%2F../x",
        "..",
    ];
    for (i, k) in keys.iter().enumerate() {
        node.cache.insert(&s, &key(k), payload(100 + i));
    }
    for (i, k) in keys.iter().enumerate() {
        let t = client.fetch(&node.addr, &s, &key(k), STALL).await.unwrap();
        assert_eq!(t.bytes, payload(100 + i), "{k}");
    }
}

#[tokio::test]
async fn missing_segment_is_404() {
    let node = start_node(1 << 20, &["live"], PeerServerConfig::default()).await;
    let s = swarm("live");
    node.cache.insert(&s, &key("1"), payload(10));
    let err = client()
        .fetch(&node.addr, &s, &key("2"), STALL)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::NotFound), "{err:?}");
    assert!(err.is_retryable() && !err.is_misbehaviour());
}

#[tokio::test]
async fn segments_of_swarms_the_node_is_not_in_are_404() {
    let node = start_node(1 << 20, &["live"], PeerServerConfig::default()).await;
    let (live, other) = (swarm("live"), swarm("other"));
    node.cache.insert(&other, &key("1"), payload(10));
    node.cache.insert(&live, &key("1"), payload(10));
    let client = client();

    let err = client
        .fetch(&node.addr, &other, &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::NotFound), "{err:?}");

    client
        .fetch(&node.addr, &live, &key("1"), STALL)
        .await
        .unwrap();
    node.swarms.remove(&live);
    let err = client
        .fetch(&node.addr, &live, &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PeerError::NotFound),
        "after leaving the swarm: {err:?}"
    );
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_connect_error() {
    let addr = shoal::peer::PeerAddr {
        addr: {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        },
        fingerprint: "ab".repeat(32),
        quic: None,
    };
    let err = client()
        .fetch(&addr, &swarm("live"), &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Connect(_)), "{err:?}");
    assert!(err.is_retryable() && !err.is_misbehaviour());
}

#[tokio::test]
async fn parts_are_exactly_the_asked_bytes_and_never_beyond_the_end() {
    let node = start_node(1 << 20, &["live"], PeerServerConfig::default()).await;
    let s = swarm("live");
    let body = payload(100_003);
    node.cache.insert(&s, &key("1"), body.clone());
    let client = client();
    // Three parts, as a split fetch asks for them, put back together.
    let mut whole = Vec::new();
    for (offset, len) in [(0u64, 33_334u64), (33_334, 33_334), (66_668, 33_335)] {
        let t = client
            .fetch_part(&node.addr, &s, &key("1"), STALL, offset, len)
            .await
            .unwrap();
        assert_eq!(t.bytes.len() as u64, len);
        whole.extend_from_slice(&t.bytes);
    }
    assert_eq!(whole, body);
    // Past the end: refused, not truncated.
    let err = client
        .fetch_part(&node.addr, &s, &key("1"), STALL, 100_000, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PeerError::Status(code) if code == 416),
        "{err:?}"
    );
    // A segment not held is 404 for a part too.
    let err = client
        .fetch_part(&node.addr, &s, &key("2"), STALL, 0, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::NotFound), "{err:?}");
}
