//! A neighbour that reads its `haves` stream too slowly to keep up is sent a fresh snapshot
//! and still ends up knowing exactly what the node holds.

mod peer_support;

use bytes::BytesMut;
use http_body_util::{BodyExt, Empty};
use peer_support::*;
use shoal::peer::PeerServerConfig;
use shoal_proto::{HaveMsg, SegmentKey};
use std::collections::BTreeSet;
use tokio::time::timeout;

#[tokio::test]
async fn lagging_reader_gets_a_new_snapshot_and_converges() {
    let node = start_node(1 << 30, &["live"], PeerServerConfig::default()).await;
    let s = swarm("live");

    // A small, fixed flow-control window: while we do not read, the server cannot send.
    let raw = raw_h2_client_with::<Empty<bytes::Bytes>>(&node.addr, |b| {
        b.adaptive_window(false)
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
    })
    .await;
    let resp = raw
        .request(get(&node.addr, "/p2p/v1/live/haves"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Far more changes than the window plus the server's event buffer can hold.
    let expected: BTreeSet<SegmentKey> = (0..30_000).map(|i| key(&format!("s{i}"))).collect();
    for k in &expected {
        node.cache.insert(&s, k, payload(1));
    }

    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    let mut known = BTreeSet::new();
    let mut snapshots = 0;
    while known != expected {
        let frame = timeout(HANG_GUARD, body.frame())
            .await
            .expect("the reader never converged")
            .expect("stream ended")
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(nl + 1);
            match HaveMsg::parse_line(&line[..nl]).unwrap() {
                HaveMsg::Snapshot { segments } => {
                    snapshots += 1;
                    known = segments.into_iter().collect();
                }
                HaveMsg::Have { segment } => {
                    known.insert(segment);
                }
                HaveMsg::Lost { segment } => {
                    known.remove(&segment);
                }
                HaveMsg::Free | HaveMsg::Unknown => {}
            }
        }
    }
    assert!(
        snapshots >= 2,
        "the reader should have lagged and been resent a snapshot"
    );
}
