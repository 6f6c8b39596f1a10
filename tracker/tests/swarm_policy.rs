//! Per-swarm policy from the config: P2P off for some swarms, excluded addresses never handed
//! out, and the exclusion list sent to nodes.

mod common;

use common::{Harness, StoreKind};
use serde_json::json;
use shoal_tracker::policy::PolicyRule;

async fn start(kind: StoreKind) -> Harness {
    Harness::start_with(kind, |c| {
        c.policy = vec![
            PolicyRule {
                swarm: "cdn.example.com/premium/*".into(),
                p2p: Some(false),
                exclude: vec![],
            },
            PolicyRule {
                swarm: "*".into(),
                p2p: None,
                exclude: vec!["10.9.0.0/16".into(), "192.0.2.7".into()],
            },
        ];
    })
    .await
}

async fn join_at(
    h: &Harness,
    peer: &str,
    swarm: &str,
    addrs: &[&str],
) -> shoal_proto::AnnounceResponse {
    let body = json!({
        "proto": 1, "peer_id": peer, "swarm_id": swarm, "addrs": addrs, "client_version": "t",
    });
    h.announce(&body).await
}

async fn p2p_can_be_off_for_some_swarms(kind: StoreKind) {
    let h = start(kind).await;
    let premium = "cdn.example.com/premium/a.m3u8";
    join_at(&h, "a", premium, &["203.0.113.1:1"]).await;
    let r = join_at(&h, "b", premium, &["203.0.113.2:1"]).await;
    assert!(!r.policy.p2p);
    assert!(r.neighbours.is_empty());
    let free = "cdn.example.com/free/a.m3u8";
    join_at(&h, "c", free, &["203.0.113.3:1"]).await;
    let r = join_at(&h, "d", free, &["203.0.113.4:1"]).await;
    assert!(r.policy.p2p);
    assert_eq!(r.neighbours.len(), 1);
}

async fn excluded_addresses_are_never_handed_out(kind: StoreKind) {
    let h = start(kind).await;
    join_at(&h, "inside", "s", &["10.9.3.4:9000"]).await;
    join_at(&h, "listed", "s", &["192.0.2.7:9000"]).await;
    join_at(&h, "dual", "s", &["10.9.0.1:9000", "198.51.100.1:9000"]).await;
    join_at(&h, "fine", "s", &["198.51.100.2:9000"]).await;
    let r = join_at(&h, "asker", "s", &["198.51.100.3:9000"]).await;
    assert_eq!(r.policy.exclude, ["10.9.0.0/16", "192.0.2.7/32"]);
    let mut got: Vec<_> = r
        .neighbours
        .iter()
        .map(|n| (n.peer_id.to_string(), n.addrs.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("dual".to_string(), vec!["198.51.100.1:9000".to_string()]),
            ("fine".to_string(), vec!["198.51.100.2:9000".to_string()]),
        ]
    );
}

/// A download-only peer (or one that stopped uploading) announces no address: it is a member
/// of the swarm, but the tracker hands it to nobody, since nobody could fetch from it.
async fn peers_with_no_address_are_handed_to_nobody(kind: StoreKind) {
    let h = start(kind).await;
    join_at(&h, "leech", "s", &[]).await;
    join_at(&h, "seed", "s", &["198.51.100.2:9000"]).await;
    let r = join_at(&h, "asker", "s", &["198.51.100.3:9000"]).await;
    let got: Vec<String> = r.neighbours.iter().map(|n| n.peer_id.to_string()).collect();
    assert_eq!(got, ["seed"]);
    // A download-only peer still gets neighbours to download from (not the other one).
    let r = join_at(&h, "leech-2", "s", &[]).await;
    let mut got: Vec<String> = r.neighbours.iter().map(|n| n.peer_id.to_string()).collect();
    got.sort();
    assert_eq!(got, ["asker", "seed"]);
}

each_store!(
    p2p_can_be_off_for_some_swarms,
    excluded_addresses_are_never_handed_out,
    peers_with_no_address_are_handed_to_nobody
);
