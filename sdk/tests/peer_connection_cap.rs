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

#[tokio::test]
async fn connections_from_excluded_addresses_are_refused() {
    use shoal::peer::exclusions::{parse_net, Exclusions};
    let excluded = PeerServerConfig {
        refused: Exclusions::new(vec![parse_net("127.0.0.0/8").unwrap()]),
        ..PeerServerConfig::default()
    };
    let node = start_node(1 << 20, &["live"], excluded).await;
    let s = swarm("live");
    node.cache.insert(&s, &key("1"), payload(1000));
    let err = client()
        .fetch(&node.addr, &s, &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(!err.is_misbehaviour(), "{err:?}");
    assert_eq!(node.cache.get(&s, &key("1")).map(|b| b.len()), Some(1000));

    // The same server without the exclusion serves the same client address.
    let open = start_node(1 << 20, &["live"], PeerServerConfig::default()).await;
    open.cache.insert(&s, &key("1"), payload(1000));
    let t = client()
        .fetch(&open.addr, &s, &key("1"), STALL)
        .await
        .unwrap();
    assert_eq!(t.bytes, payload(1000));
}
