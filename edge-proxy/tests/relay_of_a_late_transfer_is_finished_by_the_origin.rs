//! When a peer transfer runs out of the player's time while a neighbour is relaying it from
//! us (cut-through), the origin's range answer finishes the relay too, and the uploader is
//! let go at once: it does not go on sending the rest of a segment we already have, on the
//! uplink capacity other members wait for. Real nginx origin, tracker and three nodes.

mod support;

use shoal::{Node, NodeConfig};
use shoal_testkit::{encode_vod_ladder, Nginx, VodLadder};
use std::time::Duration;
use support::{
    get_segment, holder_behind, load_playlist, node_config, tracker_for, wait_until_met,
};

/// How long the relaying node lets peers try.
const BUDGET: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relayed_late_transfer_is_finished_from_the_origin_and_frees_the_uploader() {
    let dir = tempfile::tempdir().unwrap();
    let _ladder = encode_vod_ladder(dir.path()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    let origin = nginx.host_port();
    let tracker = tracker_for(&origin, Duration::from_secs(1)).await;

    // The holder sends the second segment in about three times the relay's budget. It lives
    // on 127.0.0.2, which the third node excludes: the third can only get it by relay.
    let seg1 = std::fs::read(nginx.file_for("/vod/ts/seg_00001.ts")).unwrap();
    let rate = seg1.len() as u64 * 8 / (3 * BUDGET.as_secs());
    let playlist_url = url::Url::parse(&nginx.url(VodLadder::TS)).unwrap();
    let holder_config = NodeConfig {
        peer_listen: "127.0.0.2:0".parse().unwrap(),
        ..node_config(&origin, &tracker.url())
    };
    let (holder, segments) = holder_behind(holder_config, rate, &playlist_url).await;
    let uploaded_before = holder.metrics().uploaded.get();

    let relay = Node::start(NodeConfig {
        p2p_budget: BUDGET,
        vod_readahead: 0,
        ..node_config(&origin, &tracker.url())
    })
    .await
    .unwrap();
    let last = Node::start(NodeConfig {
        vod_readahead: 0,
        playback_margin: Duration::ZERO,
        exclude: vec!["127.0.0.2/32".parse().unwrap()],
        ..node_config(&origin, &tracker.url())
    })
    .await
    .unwrap();
    let (relay_base, _) = load_playlist(&relay, &playlist_url).await;
    let (last_base, _) = load_playlist(&last, &playlist_url).await;
    wait_until_met(std::slice::from_ref(&relay), 2).await;
    wait_until_met(std::slice::from_ref(&last), 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Both players get the first segment from the origin (an empty buffer waits for nobody),
    // which gives each 2 s of buffer for the second.
    let http = reqwest::Client::new();
    for base in [&relay_base, &last_base] {
        let r = http
            .get(base.join(&segments[0]).unwrap())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{base}");
        r.bytes().await.unwrap();
    }

    let seg1_url = |base: &url::Url| base.join(&segments[1]).unwrap();
    let first_of_relay = tokio::spawn({
        let (http, url) = (http.clone(), seg1_url(&relay_base));
        async move { get_segment(&http, url).await }
    });
    // The relay's transfer from the holder is under way before the last node asks.
    let started = tokio::time::Instant::now() + Duration::from_secs(5);
    while holder.metrics().uploaded.get() == uploaded_before {
        assert!(tokio::time::Instant::now() < started, "no transfer began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (last_source, last_p2p, last_body) = get_segment(&http, seg1_url(&last_base)).await;
    let (relay_source, relay_p2p, relay_body) = first_of_relay.await.unwrap();

    assert!(
        relay_body[..] == seg1[..],
        "the relay's player got other bytes than the origin's"
    );
    assert!(
        last_body[..] == seg1[..],
        "the last player got other bytes than the origin's"
    );
    assert_eq!(
        relay_source.as_deref(),
        Some("mixed"),
        "p2p bytes: {relay_p2p}"
    );
    // The last node got the whole segment from its neighbour: the bytes the holder sent and
    // the rest the relay had from the origin.
    assert_eq!(
        (last_source.as_deref(), last_p2p),
        (Some("p2p"), seg1.len() as u64),
        "the relay did not finish in the last player's time"
    );

    // The holder stopped when the relay's time ran out: it sent about the bytes the relay had
    // by then, not the whole segment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = holder.metrics().uploaded.get() - uploaded_before;
    assert!(
        sent < seg1.len() as u64,
        "the holder sent {sent} bytes for a segment of {}; the relay had {relay_p2p} from it",
        seg1.len()
    );
    assert!(relay.metrics().uploaded.get() >= seg1.len() as u64);

    last.shutdown().await;
    relay.shutdown().await;
    holder.shutdown().await;
}
