//! A neighbour's `haves` stream: the snapshot first, then a line per change, for one swarm.

mod peer_support;

use futures::StreamExt;
use peer_support::*;
use shoal::peer::{PeerError, PeerServerConfig};
use shoal_proto::{HaveMsg, SegmentKey};
use tokio::time::timeout;

async fn next<S>(stream: &mut S) -> HaveMsg
where
    S: futures::Stream<Item = Result<HaveMsg, PeerError>> + Unpin,
{
    timeout(HANG_GUARD, stream.next())
        .await
        .expect("no have line arrived")
        .expect("haves stream ended")
        .expect("haves line was an error")
}

#[tokio::test]
async fn snapshot_then_live_have_and_lost_lines() {
    // Room for three 1000-byte segments, not four.
    let node = start_node(3 * 1200, &["live"], PeerServerConfig::default()).await;
    let live = swarm("live");
    node.cache.insert(&live, &key("seg/1"), payload(1000));
    node.cache.insert(&live, &key("seg/2"), payload(1000));

    let mut haves = Box::pin(client().haves(&node.addr, &live).await.unwrap());
    match next(&mut haves).await {
        HaveMsg::Snapshot { mut segments } => {
            segments.sort();
            assert_eq!(segments, [key("seg/1"), key("seg/2")]);
        }
        other => panic!("first line must be the snapshot, got {other:?}"),
    }

    // Another swarm's segments are not announced on this stream.
    node.cache.insert(&swarm("other"), &key("x"), payload(10));
    node.cache.insert(&live, &key("seg/3"), payload(1000));
    assert_eq!(
        next(&mut haves).await,
        HaveMsg::Have {
            segment: key("seg/3")
        }
    );

    // A fourth segment evicts the least recently used one, seg/1 ("x" is tiny).
    node.cache.get(&live, &key("seg/2"));
    node.cache.insert(&live, &key("seg/4"), payload(1000));
    assert_eq!(
        next(&mut haves).await,
        HaveMsg::Have {
            segment: key("seg/4")
        }
    );
    assert_eq!(
        next(&mut haves).await,
        HaveMsg::Lost {
            segment: key("seg/1")
        }
    );
}

#[tokio::test]
async fn haves_of_a_swarm_the_node_is_not_in_is_404() {
    let node = start_node(1 << 20, &["live"], PeerServerConfig::default()).await;
    node.cache.insert(&swarm("secret"), &key("1"), payload(10));
    let err = client()
        .haves(&node.addr, &swarm("secret"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, PeerError::NotFound), "{err:?}");
}

#[tokio::test]
async fn snapshot_too_long_for_one_line_arrives_whole() {
    let node = start_node(1 << 30, &["vod"], PeerServerConfig::default()).await;
    let vod = swarm("vod");
    let mut keys: Vec<SegmentKey> = (0..1000).map(|i| key(&format!("{i:0>400}"))).collect();
    for k in &keys {
        node.cache.insert(&vod, k, payload(1));
    }
    let mut haves = Box::pin(client().haves(&node.addr, &vod).await.unwrap());
    let mut seen = match next(&mut haves).await {
        HaveMsg::Snapshot { segments } => segments,
        other => panic!("first line must be the snapshot, got {other:?}"),
    };
    assert!(
        seen.len() < keys.len(),
        "this snapshot should not fit one line"
    );
    while seen.len() < keys.len() {
        match next(&mut haves).await {
            HaveMsg::Have { segment } => seen.push(segment),
            other => panic!("expected the rest of the snapshot as have lines, got {other:?}"),
        }
    }
    seen.sort();
    keys.sort();
    assert_eq!(seen, keys);
}

#[tokio::test]
async fn shutdown_ends_haves_streams() {
    let node = start_node(1 << 20, &["live"], PeerServerConfig::default()).await;
    let mut haves = Box::pin(client().haves(&node.addr, &swarm("live")).await.unwrap());
    assert!(matches!(next(&mut haves).await, HaveMsg::Snapshot { .. }));
    timeout(HANG_GUARD, node.server.shutdown())
        .await
        .expect("shutdown must not wait on endless haves streams");
    let end = timeout(HANG_GUARD, haves.next())
        .await
        .expect("stream must end");
    assert!(
        matches!(end, None | Some(Err(PeerError::Transport(_)))),
        "{end:?}"
    );
}
