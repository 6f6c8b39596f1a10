//! `GET /v1/digest`: the trusted SHA-256 of a segment, fetched by the tracker itself from an
//! allow-listed origin (a real nginx), cached, and fetched once for many concurrent askers.

mod common;

use common::{Harness, StoreKind};
use reqwest::StatusCode;
use shoal_proto::DigestResponse;
use shoal_testkit::{sha256_hex, AccessLogEntry, Nginx};
use std::time::Duration;

struct Setup {
    h: Harness,
    nginx: Nginx,
    _root: tempfile::TempDir,
    /// `peer_id` and `peer_key` of a member of swarm `s`.
    creds: String,
    body: Vec<u8>,
}

/// A tracker whose only allowed origin is a real nginx serving `/v/seg.ts` (and nothing else),
/// and one member of swarm `s` to ask with.
async fn setup() -> Setup {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("v")).unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.path().join("v/seg.ts"), &body).unwrap();
    let nginx = Nginx::start(root.path()).unwrap();
    let origin = nginx.host_port();
    let h = Harness::start_with(StoreKind::Memory, |c| {
        c.origins = vec![origin.clone()];
        c.origin_schemes = vec![format!("{origin}=http")];
    })
    .await;
    // The tracker's start-up check of the origin (`HEAD /`) lands first; it is left out of
    // the counts below.
    nginx
        .wait_for_requests(1, Duration::from_secs(10))
        .await
        .unwrap();
    let joined = h.join("asker", "s").await;
    let creds = format!("peer_id=asker&peer_key={}", joined.peer_key);
    Setup {
        h,
        nginx,
        _root: root,
        creds,
        body,
    }
}

impl Setup {
    fn path(&self, segment: &str) -> String {
        let segment = url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>();
        format!("/v1/digest?swarm=s&segment={segment}&{}", self.creds)
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.nginx.host_port())
    }

    /// What the digest service fetched: nginx's log less the start-up check.
    fn fetches(&self) -> Vec<AccessLogEntry> {
        let all = self.nginx.requests().unwrap();
        let checks = all.iter().filter(|r| is_origin_check(r)).count();
        assert_eq!(checks, 1, "one start-up check of the origin: {all:?}");
        all.into_iter().filter(|r| !is_origin_check(r)).collect()
    }

    /// Waits until the digest service has fetched at least `n` times.
    async fn wait_for_fetches(&self, n: usize) -> Vec<AccessLogEntry> {
        shoal_testkit::poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
            let log = self.fetches();
            async move { (log.len() >= n).then_some(log) }
        })
        .await
        .unwrap_or_else(|| panic!("{n} origin fetches: {:?}", self.fetches()))
    }
}

fn is_origin_check(r: &AccessLogEntry) -> bool {
    r.method == "HEAD" && r.uri == "/"
}

#[tokio::test]
async fn digest_of_a_whole_segment_and_of_a_byte_range_and_the_second_ask_is_cached() {
    let s = setup().await;
    let key = s.key("/v/seg.ts");
    let (status, v) = s.h.get(&s.path(&key)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let d: DigestResponse = serde_json::from_value(v).unwrap();
    assert_eq!(d.sha256, sha256_hex(&s.body));
    assert_eq!(d.size, s.body.len() as u64);
    assert_eq!(d.segment.as_str(), key);

    let ranged = format!("{key}#br=1000@4096");
    let (status, v) = s.h.get(&s.path(&ranged)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let d: DigestResponse = serde_json::from_value(v).unwrap();
    assert_eq!(d.sha256, sha256_hex(&s.body[4096..5096]));
    assert_eq!(d.size, 1000);

    let log = s.wait_for_fetches(2).await;
    assert_eq!(log[1].range.as_deref(), Some("bytes=4096-5095"));
    assert_eq!(log[1].status, 206);

    // Asked again: answered from the cache, nginx sees nothing new.
    let (status, again) = s.h.get(&s.path(&key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["sha256"], sha256_hex(&s.body));
    assert_eq!(s.fetches().len(), 2);
    let m = s.h.metrics().await;
    assert_eq!(
        common::metric(&m, "shoal_tracker_digest_requests_total{result=\"miss\"}"),
        2.0
    );
    assert_eq!(
        common::metric(&m, "shoal_tracker_digest_requests_total{result=\"hit\"}"),
        1.0
    );
    assert_eq!(
        common::metric(&m, "shoal_tracker_digest_origin_fetches_total"),
        2.0
    );
    assert_eq!(
        common::metric(&m, "shoal_tracker_digest_origin_bytes_total"),
        (s.body.len() + 1000) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_asks_for_one_segment_make_one_origin_fetch() {
    let s = setup().await;
    let path = s.path(&s.key("/v/seg.ts"));
    let asks = (0..20).map(|_| s.h.get(&path));
    let answers = futures::future::join_all(asks).await;
    for (status, v) in &answers {
        assert_eq!(*status, StatusCode::OK, "{v}");
        assert_eq!(v["sha256"], sha256_hex(&s.body));
    }
    let log = s.wait_for_fetches(1).await;
    assert_eq!(log.len(), 1, "one origin fetch for 20 asks: {log:?}");
}

#[tokio::test]
async fn hosts_off_the_allow_list_unknown_segments_and_hashed_keys_are_refused() {
    let s = setup().await;
    for (segment, status, error) in [
        (
            "evil.example/v/seg.ts",
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
        ),
        // Same host, other port: another origin.
        (
            "127.0.0.1:1/v/seg.ts",
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
        ),
        (
            &s.key("/v/missing.ts"),
            StatusCode::NOT_FOUND,
            "segment_not_found",
        ),
        (
            &format!("sha256-{}", "a".repeat(64)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "segment_unresolvable",
        ),
        (
            &s.key("/v/seg.ts#junk"),
            StatusCode::BAD_REQUEST,
            "invalid_segment",
        ),
    ] {
        let (got, v) = s.h.get(&s.path(segment)).await;
        assert_eq!(got, status, "{segment}: {v}");
        assert_eq!(v["error"], error, "{segment}: {v}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    // Only the missing segment reached nginx; the others never left the tracker.
    let log = s.wait_for_fetches(1).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].status, 404);
}

#[tokio::test]
async fn only_members_of_the_swarm_may_ask() {
    let s = setup().await;
    let key =
        url::form_urlencoded::byte_serialize(s.key("/v/seg.ts").as_bytes()).collect::<String>();
    for (query, status, error) in [
        (
            format!("swarm=s&segment={key}&peer_id=nobody&peer_key=00"),
            StatusCode::NOT_FOUND,
            "not_a_member",
        ),
        (
            format!("swarm=s&segment={key}&peer_id=asker&peer_key=00"),
            StatusCode::FORBIDDEN,
            "peer_key_mismatch",
        ),
        (
            format!("swarm=s&segment={key}"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            format!("swarm=&segment={key}&{}", s.creds),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
    ] {
        let (got, v) = s.h.get(&format!("/v1/digest?{query}")).await;
        assert_eq!(got, status, "{query}: {v}");
        assert_eq!(v["error"], error, "{query}: {v}");
    }
    assert!(s.fetches().is_empty());
}
