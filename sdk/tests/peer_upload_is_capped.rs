//! Uploads to neighbours respect the node's rate cap and concurrent-upload cap.

mod peer_support;

use futures::StreamExt;
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

#[tokio::test]
async fn a_neighbour_turned_away_is_told_as_soon_as_the_uplink_is_free() {
    let config = PeerServerConfig {
        upload_limit_bytes_per_sec: Some(100 * 1024),
        ..PeerServerConfig::default()
    };
    let node = start_node(16 << 20, &["live"], config).await;
    let s = swarm("live");
    node.cache.insert(&s, &key("big"), payload(1024 * 1024));
    node.cache.insert(&s, &key("small"), payload(10 * 1024));

    // A downloader takes the uplink for about ten seconds: its head has arrived, its body
    // trickles.
    let raw = raw_h2_client::<Empty<bytes::Bytes>>(&node.addr).await;
    let slow = raw
        .request(get(&node.addr, "/p2p/v1/live/segments/big"))
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);

    // A neighbour follows the node's haves, and is turned away for the rest of that upload.
    let mut haves = Box::pin(client().haves(&node.addr, &s).await.unwrap());
    assert!(matches!(
        haves.next().await,
        Some(Ok(shoal_proto::HaveMsg::Snapshot { .. }))
    ));
    let err = client()
        .fetch(&node.addr, &s, &key("small"), STALL)
        .await
        .unwrap_err();
    let Some(wait) = (match err {
        PeerError::Busy { retry_after } => retry_after,
        other => panic!("{other:?}"),
    }) else {
        panic!("busy without a retry-after")
    };
    assert!(
        wait > Duration::from_secs(4),
        "told to come back in {wait:?}"
    );

    // The first downloader gives up (its player's deadline came): the uplink is free long
    // before the wait it asked for, and the neighbour hears so on the haves stream.
    drop(slow);
    drop(raw);
    let told = tokio::time::timeout(wait / 2, async {
        loop {
            match haves.next().await {
                Some(Ok(shoal_proto::HaveMsg::Free)) => return,
                Some(Ok(_)) => continue,
                other => panic!("haves stream ended: {other:?}"),
            }
        }
    })
    .await;
    assert!(told.is_ok(), "no `free` within half of {wait:?}");
    let t = client()
        .fetch(&node.addr, &s, &key("small"), STALL)
        .await
        .unwrap();
    assert_eq!(t.bytes.len(), 10 * 1024);
}
