//! `POST /v1/report`: once enough distinct members report a peer, the tracker stops handing it
//! out and refuses its announces in that swarm.

mod common;

use common::{announce_body, Harness, StoreKind};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

fn report(reporter: &str, key: &str, offender: &str) -> Value {
    json!({
        "proto": 1,
        "peer_id": reporter,
        "swarm_id": "s",
        "peer_key": key,
        "offender": offender,
        "reason": "integrity",
        "segment": "cdn.example.com/v/1.ts",
    })
}

async fn two_distinct_reporters_ban_a_peer_from_the_swarm(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(20)).await;
    let bad = h.join("bad", "s").await;
    let a = h.join("a", "s").await;
    let b = h.join("b", "s").await;
    h.join("elsewhere", "other").await;

    // One reporter, however often, is not enough.
    for _ in 0..3 {
        let (status, v) = h.post("/v1/report", &report("a", &a.peer_key, "bad")).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    }
    let r = h
        .announce(&announce_body("b", "s", Some(&b.peer_key)))
        .await;
    assert!(r.neighbours.iter().any(|n| n.peer_id.as_str() == "bad"));
    h.announce(&announce_body("bad", "s", Some(&bad.peer_key)))
        .await;

    let (status, v) = h.post("/v1/report", &report("b", &b.peer_key, "bad")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");

    // Gone from neighbour lists at once, and refused if it comes back.
    let r = h
        .announce(&announce_body("a", "s", Some(&a.peer_key)))
        .await;
    let ids: Vec<_> = r.neighbours.iter().map(|n| n.peer_id.as_str()).collect();
    assert_eq!(ids, ["b"]);
    for key in [Some(bad.peer_key.as_str()), None] {
        let (status, v) = h
            .post("/v1/announce", &announce_body("bad", "s", key))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["error"], "banned");
        assert!(v["message"].as_str().unwrap().contains("ban"), "{v}");
    }
    // The ban is for that swarm only.
    h.join("bad", "other").await;

    let m = h.metrics().await;
    assert_eq!(
        common::metric(&m, "shoal_tracker_reports_total{reason=\"integrity\"}"),
        4.0
    );
    assert_eq!(common::metric(&m, "shoal_tracker_banned_peers"), 1.0);
    assert_eq!(
        common::metric(&m, "shoal_tracker_peers"),
        4.0,
        "a, b, elsewhere, bad in other"
    );
    assert_eq!(
        common::metric(&m, "shoal_tracker_announces_total{result=\"forbidden\"}"),
        2.0
    );
}

async fn a_ban_expires(kind: StoreKind) {
    let h = Harness::start_with(kind, |c| {
        c.ban_threshold = 1;
        c.ban_duration = Duration::from_millis(500);
    })
    .await;
    h.join("bad", "s").await;
    let a = h.join("a", "s").await;
    let (status, _) = h.post("/v1/report", &report("a", &a.peer_key, "bad")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = h
        .post("/v1/announce", &announce_body("bad", "s", None))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The ban's end is a time, not an event: poll for it with a bound.
    shoal_testkit::eventually(Duration::from_secs(10), "the ban to expire", || async {
        h.post("/v1/announce", &announce_body("bad", "s", None))
            .await
            .0
            == StatusCode::OK
    })
    .await;
}

async fn only_live_members_with_their_key_may_report_and_never_themselves(kind: StoreKind) {
    let h = Harness::start(kind, Duration::from_secs(20)).await;
    let a = h.join("a", "s").await;
    h.join("x", "other").await;
    for (body, status, error) in [
        (
            report("a", &a.peer_key, "a"),
            StatusCode::BAD_REQUEST,
            "self_report",
        ),
        (
            report("a", &"0".repeat(32), "b"),
            StatusCode::FORBIDDEN,
            "peer_key_mismatch",
        ),
        (
            report("ghost", &a.peer_key, "a"),
            StatusCode::NOT_FOUND,
            "not_a_member",
        ),
        (
            {
                let mut r = report("a", &a.peer_key, "b");
                r["reason"] = json!("dislike");
                r
            },
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ] {
        let (got, v) = h.post("/v1/report", &body).await;
        assert_eq!(got, status, "{body}: {v}");
        assert_eq!(v["error"], error, "{body}: {v}");
    }
    // A member of another swarm cannot report into this one.
    let x = h.join("y", "other").await;
    let (got, v) = h.post("/v1/report", &report("y", &x.peer_key, "a")).await;
    assert_eq!(got, StatusCode::NOT_FOUND, "{v}");
    let m = h.metrics().await;
    assert_eq!(
        common::metric(&m, "shoal_tracker_reports_total{reason=\"integrity\"}"),
        0.0
    );
}

each_store!(
    two_distinct_reporters_ban_a_peer_from_the_swarm,
    a_ban_expires,
    only_live_members_with_their_key_may_report_and_never_themselves,
);
