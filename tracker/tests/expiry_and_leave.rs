//! Peers leave explicitly or expire after two silent intervals; empty swarms disappear.

mod common;

use common::{announce_body, Harness, StoreKind};
use reqwest::StatusCode;
use serde_json::json;
use shoal_testkit::eventually;
use std::time::Duration;

fn leave_body(peer: &str, swarm: &str, key: &str) -> serde_json::Value {
    json!({"proto": 1, "peer_id": peer, "swarm_id": swarm, "peer_key": key})
}

async fn a_peer_that_leaves_is_no_longer_handed_out(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(20)).await;
    let a = h.join("a", "s").await;
    let b = h.join("b", "s").await;
    assert_eq!(b.neighbours.len(), 1);

    let (status, v) = h
        .post("/v1/leave", &leave_body("b", "s", &a.peer_key))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "someone else's key: {v}");
    let (status, _) = h
        .post("/v1/leave", &leave_body("b", "s", &b.peer_key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, v) = h
        .post("/v1/leave", &leave_body("b", "s", &b.peer_key))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"], "not_a_member");

    let r = h
        .announce(&announce_body("a", "s", Some(&a.peer_key)))
        .await;
    assert!(r.neighbours.is_empty(), "{:?}", r.neighbours);
    assert_eq!(h.metric("shoal_tracker_peers").await, 1.0);
    assert_eq!(h.metric("shoal_tracker_leaves_total").await, 1.0);

    // The last one out removes the swarm; the id is free for another swarm.
    let (status, _) = h
        .post("/v1/leave", &leave_body("a", "s", &a.peer_key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h.metric("shoal_tracker_swarms").await, 0.0);
    assert_eq!(h.metric("shoal_tracker_peers").await, 0.0);
    h.join("b", "other").await;
}

async fn silent_peers_expire_and_empty_swarms_disappear(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(1)).await;
    let a = h.join("a", "s").await;
    h.join("silent", "s").await;
    h.join("lonely", "t").await;
    assert_eq!(h.metric("shoal_tracker_swarms").await, 2.0);

    // `a` keeps announcing; the others say nothing more.
    eventually(
        Duration::from_secs(15),
        "silent peers to expire",
        || async {
            let r = h
                .announce(&announce_body("a", "s", Some(&a.peer_key)))
                .await;
            let m = h.metrics().await;
            r.neighbours.is_empty()
                && common::metric(&m, "shoal_tracker_peers") == 1.0
                && common::metric(&m, "shoal_tracker_swarms") == 1.0
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the sweep to count them",
        || async { h.metric("shoal_tracker_expired_peers_total").await == 2.0 },
    )
    .await;
    // An expired id is free again, even for another swarm.
    h.join("silent", "t").await;
}

each_store!(
    a_peer_that_leaves_is_no_longer_handed_out,
    silent_peers_expire_and_empty_swarms_disappear,
);
