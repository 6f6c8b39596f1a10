//! Shutting a peer server down lets uploads in flight finish, then stops accepting.

mod peer_support;

use http_body_util::{BodyExt, Empty};
use peer_support::*;
use shoal::peer::{PeerError, PeerServerConfig};
use std::time::Duration;
use tokio::time::timeout;

#[tokio::test]
async fn upload_in_flight_finishes_and_new_connections_are_refused() {
    let config = PeerServerConfig {
        upload_limit_bytes_per_sec: Some(512 * 1024),
        ..PeerServerConfig::default()
    };
    let node = start_node(16 << 20, &["live"], config).await;
    let s = swarm("live");
    let body = payload(300_000);
    node.cache.insert(&s, &key("1"), body.clone());
    let addr = node.addr;

    let raw = raw_h2_client::<Empty<bytes::Bytes>>(&addr).await;
    let resp = raw
        .request(get(&addr, "/p2p/v1/live/segments/1"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let shutdown = tokio::spawn(node.server.shutdown());
    let received = timeout(HANG_GUARD, resp.into_body().collect())
        .await
        .unwrap()
        .expect("the upload in flight must complete")
        .to_bytes();
    assert_eq!(received, body);
    timeout(HANG_GUARD, shutdown).await.unwrap().unwrap();

    let err = client()
        .fetch(&addr, &s, &key("1"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Connect(_)), "{err:?}");
}
