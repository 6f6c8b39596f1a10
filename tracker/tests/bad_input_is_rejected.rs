//! Every kind of bad request gets a 4xx with an `ErrorBody` that says what is wrong, and the
//! tracker keeps serving.

mod common;

use common::{announce_body, Harness, StoreKind};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    error: &'static str,
    /// A word the message must contain, so it points at the problem.
    mentions: &'static str,
}

fn json_case(what: &'static str, body: Value, error: &'static str, mentions: &'static str) -> Case {
    Case {
        what,
        method: Method::POST,
        path: "/v1/announce",
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status: StatusCode::BAD_REQUEST,
        error,
        mentions,
    }
}

fn with(field: &str, value: Value) -> Value {
    let mut b = announce_body("p", "s", None);
    b[field] = value;
    b
}

fn cases() -> Vec<Case> {
    let mut missing = announce_body("p", "s", None);
    missing.as_object_mut().unwrap().remove("client_version");
    let mut cases = vec![
        json_case(
            "missing field",
            missing,
            "invalid_request",
            "client_version",
        ),
        json_case(
            "unknown field",
            with("evil", json!(1)),
            "invalid_request",
            "evil",
        ),
        json_case(
            "wrong type",
            with("proto", json!("one")),
            "invalid_request",
            "invalid type",
        ),
        json_case(
            "unknown version",
            with("proto", json!(2)),
            "unsupported_version",
            "version 2",
        ),
        json_case(
            "absurd numwant",
            with("numwant", json!(1_000_000)),
            "invalid_field",
            "numwant",
        ),
        json_case(
            "long peer id",
            with("peer_id", json!("x".repeat(65))),
            "invalid_field",
            "peer_id",
        ),
        json_case(
            "long swarm id",
            with("swarm_id", json!("s".repeat(300))),
            "invalid_field",
            "swarm_id",
        ),
        json_case(
            "empty peer id",
            with("peer_id", json!("")),
            "invalid_field",
            "peer_id",
        ),
        json_case(
            "spaces in peer id",
            with("peer_id", json!("a b")),
            "invalid_field",
            "peer_id",
        ),
        json_case(
            "too many addrs",
            with(
                "addrs",
                json!(["a:1", "b:1", "c:1", "d:1", "e:1", "f:1", "g:1", "h:1", "i:1"]),
            ),
            "invalid_field",
            "addrs",
        ),
        json_case(
            "non-hex fingerprint",
            with("fingerprint", json!("zz")),
            "invalid_field",
            "fingerprint",
        ),
        json_case(
            "counter above the per-report bound",
            with("counters", json!({"p2p": (1u64 << 40) + 1})),
            "invalid_field",
            "counters.p2p",
        ),
        json_case(
            "counter above u64",
            with("counters", json!({"cdn": 1e30})),
            "invalid_request",
            "u64",
        ),
        json_case(
            "leave without peer_key",
            json!({"proto": 1, "peer_id": "p", "swarm_id": "s"}),
            "invalid_request",
            "peer_key",
        ),
    ];
    cases.last_mut().unwrap().path = "/v1/leave";
    let raw = |what, body: &[u8], content_type, status, error, mentions| Case {
        what,
        method: Method::POST,
        path: "/v1/announce",
        content_type,
        body: body.to_vec(),
        status,
        error,
        mentions,
    };
    cases.extend([
        raw(
            "truncated JSON",
            br#"{"proto":1,"#,
            Some("application/json"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "EOF",
        ),
        raw(
            "not JSON",
            b"hello",
            Some("application/json"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "expected",
        ),
        raw(
            "no content type",
            b"{}",
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        raw(
            "form content type",
            b"a=b",
            Some("application/x-www-form-urlencoded"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "application/json",
        ),
        raw(
            "oversized body",
            &[b' '; 20 * 1024],
            Some("application/json"),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "16384",
        ),
    ]);
    cases.push(Case {
        what: "wrong method",
        method: Method::GET,
        path: "/v1/announce",
        content_type: None,
        body: Vec::new(),
        status: StatusCode::METHOD_NOT_ALLOWED,
        error: "method_not_allowed",
        mentions: "POST /v1/announce",
    });
    cases.push(Case {
        what: "unknown route (future version)",
        method: Method::POST,
        path: "/v2/announce",
        content_type: Some("application/json"),
        body: b"{}".to_vec(),
        status: StatusCode::NOT_FOUND,
        error: "not_found",
        mentions: "/v2/announce",
    });
    cases
}

async fn each_bad_request_gets_a_clear_4xx(kind: StoreKind) {
    let h = Harness::start(kind, std::time::Duration::from_secs(20)).await;
    let mut announce_refusals = 0.0;
    for case in cases() {
        let mut req = h.client.request(case.method.clone(), h.url(case.path));
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        let r = req.body(case.body).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, case.status, "{}: {text}", case.what);
        let body: shoal_proto::ErrorBody = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not an ErrorBody ({e}): {text}", case.what));
        assert_eq!(body.error, case.error, "{}: {text}", case.what);
        assert!(
            body.message.contains(case.mentions),
            "{}: message should mention {:?}: {}",
            case.what,
            case.mentions,
            body.message
        );
        if case.path == "/v1/announce" && case.method == Method::POST {
            announce_refusals += 1.0;
        }
    }
    // Still serving, nothing joined, and every refusal counted as invalid.
    assert!(h.join("p", "s").await.neighbours.is_empty());
    let m = h.metrics().await;
    assert_eq!(
        common::metric(&m, r#"shoal_tracker_announces_total{result="invalid"}"#),
        announce_refusals
    );
    assert_eq!(
        common::metric(&m, r#"shoal_tracker_announces_total{result="ok"}"#),
        1.0
    );
    assert_eq!(common::metric(&m, "shoal_tracker_peers"), 1.0);
}

async fn healthz_answers(kind: StoreKind) {
    let h = Harness::start(kind, std::time::Duration::from_secs(20)).await;
    let r = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

each_store!(each_bad_request_gets_a_clear_4xx, healthz_answers);
