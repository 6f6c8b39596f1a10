//! A peer transfer that runs out of the player's time is not thrown away: the node asks the
//! origin (a real nginx) for the bytes still missing with a range request, verifies the whole
//! against the tracker's digest, and the player gets bytes identical to the origin's, most of
//! which the CDN did not have to send again.

mod support;

use shoal::{Node, NodeConfig};
use shoal_testkit::{encode_vod_ladder, Nginx, VodLadder};
use std::time::Duration;
use support::{
    get_segment, holder_behind, load_playlist, node_config, tracker_for, wait_until_met,
};

/// How long the second viewer's node lets peers try (its player has more buffer than this).
const BUDGET: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_peer_transfer_is_finished_with_an_origin_range_request() {
    let dir = tempfile::tempdir().unwrap();
    let _ladder = encode_vod_ladder(dir.path()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    let origin = nginx.host_port();
    let tracker = tracker_for(&origin, Duration::from_secs(1)).await;

    // The first viewer's node holds every segment, behind an uplink that sends the second
    // segment in about three times the second viewer's P2P budget.
    let seg1 = std::fs::read(nginx.file_for("/vod/ts/seg_00001.ts")).unwrap();
    let rate = seg1.len() as u64 * 8 / (3 * BUDGET.as_secs());
    let playlist_url = url::Url::parse(&nginx.url(VodLadder::TS)).unwrap();
    let (first, segments) =
        holder_behind(node_config(&origin, &tracker.url()), rate, &playlist_url).await;
    let http = reqwest::Client::new();

    // The second viewer: no read-ahead (its player's own requests are what is measured).
    let second = Node::start(NodeConfig {
        p2p_budget: BUDGET,
        vod_readahead: 0,
        ..node_config(&origin, &tracker.url())
    })
    .await
    .unwrap();
    let (base, _) = load_playlist(&second, &playlist_url).await;
    // Let it meet the first node and learn what that one holds.
    wait_until_met(std::slice::from_ref(&second), 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The first segment goes to the origin (an empty buffer waits for nobody); it gives the
    // player 2 s of buffer, so the second may wait on the peer for the whole budget.
    let r = http
        .get(base.join(&segments[0]).unwrap())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    r.bytes().await.unwrap();
    let (source, p2p, body) = get_segment(&http, base.join(&segments[1]).unwrap()).await;

    assert_eq!(body.len(), seg1.len());
    assert!(
        body[..] == seg1[..],
        "the player got bytes that differ from the origin's"
    );
    assert_eq!(source.as_deref(), Some("mixed"), "p2p bytes: {p2p}");
    assert!(
        p2p > 0 && p2p < seg1.len() as u64,
        "{p2p} of {} bytes from the peer",
        seg1.len()
    );

    // The origin sent only the rest, once, as a range request.
    let uri = format!("/vod/ts/{}", segments[1]);
    let asked: Vec<_> = nginx
        .requests()
        .unwrap()
        .into_iter()
        .filter(|e| e.uri == uri)
        .collect();
    let ranged: Vec<_> = asked.iter().filter(|e| e.range.is_some()).collect();
    assert_eq!(ranged.len(), 1, "origin requests for {uri}: {asked:?}");
    assert_eq!(ranged[0].status, 206);
    assert_eq!(
        ranged[0].range.as_deref(),
        Some(format!("bytes={}-{}", p2p, seg1.len() - 1).as_str())
    );
    assert_eq!(ranged[0].body_bytes, seg1.len() as u64 - p2p);

    // The node counts each byte toward where it came from.
    let m = second.metrics();
    assert_eq!(m.origin_completions.get(), 1);
    let stats = second.stats();
    assert_eq!(stats.p2p_bytes, p2p);

    second.shutdown().await;
    first.shutdown().await;
}
