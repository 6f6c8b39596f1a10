//! `/metrics` sums the byte reports of valid, authorised announces and leaves only.

mod common;

use common::{announce_body, Harness, StoreKind};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;

async fn reported_bytes_are_summed_across_the_fleet(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(20)).await;
    let a = h.join("a", "s1").await;
    let b = h.join("b", "s1").await;
    h.join("c", "s2").await;

    let report = |peer: &str, swarm: &str, key: &str, p2p: u64, cdn: u64, upload: u64| {
        let mut body = announce_body(peer, swarm, Some(key));
        body["counters"] = json!({"p2p": p2p, "cdn": cdn, "upload": upload});
        body
    };
    h.announce(&report("a", "s1", &a.peer_key, 1000, 300, 50))
        .await;
    h.announce(&report("b", "s1", &b.peer_key, 2000, 0, 7))
        .await;
    h.announce(&report("a", "s1", &a.peer_key, 1 << 40, 1, 0))
        .await;
    // Not counted: a wrong key, a conflicting swarm, a counter over the bound.
    let (s, _) = h
        .post("/v1/announce", &report("a", "s1", &b.peer_key, 5, 5, 5))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h
        .post("/v1/announce", &report("a", "s2", &a.peer_key, 5, 5, 5))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = h
        .post(
            "/v1/announce",
            &report("b", "s1", &b.peer_key, u64::MAX, 5, 5),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A leave's final report counts too.
    let leave = json!({"proto": 1, "peer_id": "b", "swarm_id": "s1", "peer_key": b.peer_key,
                       "counters": {"p2p": 1, "cdn": 2, "upload": 3}});
    let (s, _) = h.post("/v1/leave", &leave).await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    let m = h.metrics().await;
    let v = |sample: &str| common::metric(&m, sample);
    assert_eq!(
        v(r#"shoal_tracker_reported_bytes_total{source="p2p"}"#),
        (1000 + 2000 + (1u64 << 40) + 1) as f64
    );
    assert_eq!(
        v(r#"shoal_tracker_reported_bytes_total{source="cdn"}"#),
        303.0
    );
    assert_eq!(
        v(r#"shoal_tracker_reported_bytes_total{source="upload"}"#),
        60.0
    );
    assert_eq!(v(r#"shoal_tracker_announces_total{result="ok"}"#), 6.0);
    assert_eq!(
        v(r#"shoal_tracker_announces_total{result="forbidden"}"#),
        1.0
    );
    assert_eq!(
        v(r#"shoal_tracker_announces_total{result="conflict"}"#),
        1.0
    );
    assert_eq!(v(r#"shoal_tracker_announces_total{result="invalid"}"#), 1.0);
    assert_eq!(v(r#"shoal_tracker_announces_total{result="error"}"#), 0.0);
    assert_eq!(v("shoal_tracker_announce_duration_seconds_count"), 9.0);
    assert_eq!(v("shoal_tracker_leaves_total"), 1.0);
    assert_eq!(v("shoal_tracker_peers"), 2.0);
    assert_eq!(v("shoal_tracker_swarms"), 2.0);
    assert!(m.contains("# TYPE shoal_tracker_announce_duration_seconds histogram"));
}

/// The fleet's reach: the peer connections nodes report, by path, summed from accepted
/// announces only.
async fn reported_connections_are_summed_by_path(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(20)).await;
    let a = h.join("a", "s1").await;
    let b = h.join("b", "s1").await;
    let report = |peer: &str, key: &str, connections: serde_json::Value| {
        let mut body = announce_body(peer, "s1", Some(key));
        body["connections"] = connections;
        body
    };
    h.announce(&report(
        "a",
        &a.peer_key,
        json!({"lan": 2, "punched": 1, "failed": 3}),
    ))
    .await;
    h.announce(&report(
        "b",
        &b.peer_key,
        json!({"direct": 4, "mapped": 1, "punched": 5}),
    ))
    .await;
    // Not counted: a wrong key, a counter over the bound, an unknown path.
    let (s, _) = h
        .post(
            "/v1/announce",
            &report("a", &b.peer_key, json!({"lan": 100})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h
        .post(
            "/v1/announce",
            &report("a", &a.peer_key, json!({"lan": 100_001})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h
        .post(
            "/v1/announce",
            &report("a", &a.peer_key, json!({"teleport": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let m = h.metrics().await;
    let v = |path: &str| {
        common::metric(
            &m,
            &format!("shoal_tracker_peer_connections_total{{path=\"{path}\"}}"),
        )
    };
    assert_eq!(v("lan"), 2.0);
    assert_eq!(v("direct"), 4.0);
    assert_eq!(v("punched"), 6.0);
    assert_eq!(v("mapped"), 1.0);
    assert_eq!(v("relay"), 0.0, "every path is exported, zero or not");
    assert_eq!(v("failed"), 3.0);
}

each_store!(
    reported_bytes_are_summed_across_the_fleet,
    reported_connections_are_summed_by_path
);
