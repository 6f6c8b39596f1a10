//! Connections beyond the server's cap are turned away at once, and the ones inside it keep
//! working.

mod peer_support;

use peer_support::*;
use shoal::peer::PeerServerConfig;
use std::time::Duration;

const STALL: Duration = Duration::from_secs(5);

#[tokio::test]
async fn connection_over_the_cap_is_refused_and_others_keep_working() {
    let config = PeerServerConfig {
        max_connections: 1,
        ..PeerServerConfig::default()
    };
    let node = start_node(1 << 20, &["live"], config).await;
    let s = swarm("live");
    node.cache.insert(&s, &key("1"), payload(1000));

    // Each client pools its own connection; the first takes the only slot and keeps it.
    let first = client();
    first.fetch(&node.addr, &s, &key("1"), STALL).await.unwrap();

    let err = client()
        .fetch(&node.addr, &s, &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(err.is_retryable() && !err.is_misbehaviour(), "{err:?}");

    let t = first.fetch(&node.addr, &s, &key("1"), STALL).await.unwrap();
    assert_eq!(t.bytes, payload(1000));
}
