//! Two tracker instances on one Redis behave as one tracker.

mod common;

use common::{announce_body, config, Harness, StoreKind};
use reqwest::StatusCode;
use serde_json::json;
use shoal_tracker::config::StoreSpec;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_announced_to_one_instance_is_handed_out_by_the_other() {
    let one = Harness::start(StoreKind::Redis, Duration::from_secs(20)).await;
    let url = one.redis.as_ref().unwrap().url.clone();
    let two = shoal_tracker::spawn(config(StoreSpec::Redis(url), Duration::from_secs(20)))
        .await
        .unwrap();
    let two_url = |path: &str| format!("{}{path}", two.url());
    let post = |path: &str, body: serde_json::Value| {
        let req = one.client.post(two_url(path)).json(&body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };

    let a = one.join("a", "shared").await;
    let (status, b) = post("/v1/announce", announce_body("b", "shared", None)).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["neighbours"][0]["peer_id"], "a");
    assert_eq!(b["neighbours"][0]["addrs"][0], common::addr_of("a"));

    // Ownership is shared too: the key works on either, a conflict is seen by either.
    let (status, _) = post(
        "/v1/announce",
        announce_body("a", "shared", Some(&a.peer_key)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post("/v1/announce", announce_body("a", "elsewhere", None)).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Leaving through one instance is seen by the other.
    let leave = json!({"proto": 1, "peer_id": "b", "swarm_id": "shared",
                       "peer_key": b["peer_key"]});
    let (status, _) = post("/v1/leave", leave).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let r = one
        .announce(&announce_body("a", "shared", Some(&a.peer_key)))
        .await;
    assert!(r.neighbours.is_empty(), "{:?}", r.neighbours);
    assert_eq!(one.metric("shoal_tracker_peers").await, 1.0);
    two.shutdown().await.unwrap();
}
