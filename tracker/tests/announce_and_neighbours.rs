//! Joining a swarm, refreshing, and the neighbours handed out.

mod common;

use common::{addr_of, announce_body, Harness, StoreKind};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

async fn first_announce_gets_a_key_the_interval_and_the_policy(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(7)).await;
    let r = h.join("alone", "cdn.example.com/live/720p.m3u8").await;
    assert!(r.neighbours.is_empty());
    assert_eq!(r.interval_secs, 7);
    assert!(r.peer_key.len() >= 16, "{}", r.peer_key);
    assert!(r.policy.p2p);
}

async fn neighbours_are_other_members_with_their_addresses(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(20)).await;
    for i in 0..30 {
        h.join(&format!("p{i}"), "s1").await;
    }
    h.join("elsewhere", "s2").await;
    let mut body = announce_body("asker", "s1", None);
    body["numwant"] = json!(10);
    let r = h.announce(&body).await;
    assert_eq!(r.neighbours.len(), 10);
    let ids: HashSet<_> = r.neighbours.iter().map(|n| n.peer_id.to_string()).collect();
    assert_eq!(ids.len(), 10, "neighbours are distinct");
    for n in &r.neighbours {
        let id = n.peer_id.as_str();
        assert!(
            id.starts_with('p'),
            "only members of s1 and never the asker: {id}"
        );
        assert_eq!(n.addrs, [addr_of(id)]);
        assert_eq!(n.fingerprint, "abcdef0123");
    }
    // numwant 0 asks for none; a small swarm hands out everyone else.
    body["numwant"] = json!(0);
    body["peer_key"] = json!(r.peer_key);
    assert!(h.announce(&body).await.neighbours.is_empty());
    let r = h.join("second", "s2").await;
    assert_eq!(r.neighbours.len(), 1);
    assert_eq!(r.neighbours[0].peer_id.as_str(), "elsewhere");
}

async fn a_large_swarm_spreads_its_members(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(20)).await;
    let mut keys = Vec::new();
    for i in 0..200 {
        keys.push(h.join(&format!("m{i}"), "big").await.peer_key);
    }
    let mut seen = HashSet::new();
    for (i, key) in keys.iter().enumerate().take(20) {
        let r = h
            .announce(&announce_body(&format!("m{i}"), "big", Some(key)))
            .await;
        assert_eq!(r.neighbours.len(), 20);
        seen.extend(r.neighbours.into_iter().map(|n| n.peer_id));
    }
    // 20 random picks of 20 out of 199 cover ~175 members; the same "first 20" would give 20.
    assert!(seen.len() > 100, "only {} distinct neighbours", seen.len());
}

async fn refreshing_requires_the_peer_key(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(20)).await;
    let first = h.join("owner", "s").await;
    let (status, v) = h
        .post("/v1/announce", &announce_body("owner", "s", None))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["error"], "peer_key_mismatch");
    let wrong = "0".repeat(32);
    let (status, _) = h
        .post("/v1/announce", &announce_body("owner", "s", Some(&wrong)))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let again = h
        .announce(&announce_body("owner", "s", Some(&first.peer_key)))
        .await;
    assert_eq!(again.peer_key, first.peer_key);
}

async fn a_peer_id_belongs_to_one_swarm(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(20)).await;
    let first = h.join("p", "s1").await;
    let (status, v) = h
        .post(
            "/v1/announce",
            &announce_body("p", "s2", Some(&first.peer_key)),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["error"], "peer_id_conflict");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("one peer id per swarm"));
    // The refused announce did not create s2 or join anything.
    assert!(h.join("q", "s2").await.neighbours.is_empty());
    assert_eq!(h.metric("shoal_tracker_swarms").await, 2.0);
}

async fn a_swarm_without_p2p_hands_out_no_neighbours(kind: StoreKind) {
    let h = Harness::start_with(kind, |c| c.p2p = false).await;
    h.join("a", "s").await;
    let r = h.join("b", "s").await;
    assert!(!r.policy.p2p);
    assert!(r.neighbours.is_empty());
}

each_store!(
    first_announce_gets_a_key_the_interval_and_the_policy,
    neighbours_are_other_members_with_their_addresses,
    a_large_swarm_spreads_its_members,
    refreshing_requires_the_peer_key,
    a_peer_id_belongs_to_one_swarm,
    a_swarm_without_p2p_hands_out_no_neighbours,
);
