//! Uploads to neighbours respect the node's rate cap and concurrent-upload cap.

mod peer_support;

use http_body_util::Empty;
use peer_support::*;
use shoal::peer::{PeerError, PeerServerConfig};
use std::time::Duration;
use tokio::time::Instant;

const STALL: Duration = Duration::from_secs(10);

#[tokio::test]
async fn upload_rate_is_capped() {
    let config = PeerServerConfig {
        upload_limit_bytes_per_sec: Some(256 * 1024),
        ..PeerServerConfig::default()
    };
    let node = start_node(16 << 20, &["live"], config).await;
    let s = swarm("live");
    node.cache.insert(&s, &key("1"), payload(1024 * 1024));

    let start = Instant::now();
    let t = client()
        .fetch(&node.addr, &s, &key("1"), STALL)
        .await
        .unwrap();
    assert_eq!(t.bytes.len(), 1024 * 1024);
    // 1 MiB at 256 KiB/s is ~4 s; unthrottled it takes milliseconds.
    assert!(
        start.elapsed() > Duration::from_secs(2),
        "1 MiB arrived in {:?} despite a 256 KiB/s cap",
        start.elapsed()
    );
}

#[tokio::test]
async fn over_the_concurrent_upload_cap_gets_503_at_once() {
    let config = PeerServerConfig {
        upload_limit_bytes_per_sec: Some(64 * 1024),
        max_concurrent_uploads: 1,
        ..PeerServerConfig::default()
    };
    let node = start_node(16 << 20, &["live"], config).await;
    let s = swarm("live");
    node.cache.insert(&s, &key("big"), payload(4 * 1024 * 1024));
    node.cache.insert(&s, &key("small"), payload(10));

    // Holds the only upload slot: its head has arrived, its body trickles.
    let raw = raw_h2_client::<Empty<bytes::Bytes>>(&node.addr).await;
    let slow = raw
        .request(get(&node.addr, "/p2p/v1/live/segments/big"))
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);

    let err = client()
        .fetch(&node.addr, &s, &key("small"), STALL)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PeerError::Busy { retry_after: Some(d) } if d >= Duration::from_secs(1)),
        "{err:?}"
    );
    assert!(err.is_retryable() && !err.is_misbehaviour());
}

#[tokio::test]
async fn a_finished_upload_frees_its_slot() {
    let config = PeerServerConfig {
        max_concurrent_uploads: 1,
        ..PeerServerConfig::default()
    };
    let node = start_node(16 << 20, &["live"], config).await;
    let s = swarm("live");
    node.cache.insert(&s, &key("1"), payload(200_000));
    let client = client();
    for _ in 0..3 {
        let t = client
            .fetch(&node.addr, &s, &key("1"), STALL)
            .await
            .unwrap();
        assert_eq!(t.bytes.len(), 200_000);
    }
}
