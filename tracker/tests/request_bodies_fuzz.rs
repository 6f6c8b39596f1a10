//! Arbitrary request bodies to the real router never panic and always get a 2xx, or a 4xx with
//! an `ErrorBody` that says why.

use axum::body::Body;
use axum::http::{header, Request};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use shoal_proto::ErrorBody;
use shoal_tracker::config::Config;
use shoal_tracker::store::MemoryStore;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const PATHS: [&str; 3] = ["/v1/announce", "/v1/leave", "/v1/report"];

fn router() -> axum::Router {
    let config = Config::default();
    let store = Arc::new(MemoryStore::new(Duration::from_secs(20)));
    let state = shoal_tracker::app_state(&config, store).unwrap();
    shoal_tracker::api::router(Arc::new(state))
}

fn check(router: &axum::Router, path: &str, body: Vec<u8>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, bytes) = rt.block_on(async {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "{path}: {status}"
    );
    if status.is_client_error() {
        let e: ErrorBody = serde_json::from_slice(&bytes)
            .map_err(|e| TestCaseError::fail(format!("{path} {status}: not an ErrorBody: {e}")))?;
        prop_assert!(!e.error.is_empty() && !e.message.is_empty());
    }
    Ok(())
}

/// Any JSON value, biased towards the shapes of real requests so the checks past parsing run.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,80}".prop_map(Value::from),
        "[a-z0-9._-]{1,70}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("proto".to_owned()),
                    Just("peer_id".to_owned()),
                    Just("swarm_id".to_owned()),
                    Just("peer_key".to_owned()),
                    Just("offender".to_owned()),
                    Just("reason".to_owned()),
                    Just("addrs".to_owned()),
                    Just("numwant".to_owned()),
                    Just("counters".to_owned()),
                    Just("token".to_owned()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid request with one field replaced by an arbitrary value.
fn mutated_request() -> impl Strategy<Value = Value> {
    let base = json!({
        "proto": 1, "peer_id": "p", "swarm_id": "s", "client_version": "t", "peer_key": "00",
        "offender": "q", "reason": "integrity", "addrs": ["10.0.0.1:1"], "token": "v1.a.b",
    });
    (
        prop::sample::select(vec![
            "proto",
            "peer_id",
            "swarm_id",
            "client_version",
            "peer_key",
            "offender",
            "reason",
            "addrs",
            "token",
            "numwant",
            "counters",
        ]),
        json_value(),
    )
        .prop_map(move |(field, v)| {
            let mut b = base.clone();
            b[field] = v;
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_get_a_client_error(path in prop::sample::select(&PATHS[..]), body in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&router(), path, body)?;
    }

    #[test]
    fn arbitrary_json_gets_an_answer_or_a_client_error(path in prop::sample::select(&PATHS[..]), v in json_value()) {
        check(&router(), path, v.to_string().into_bytes())?;
    }

    #[test]
    fn requests_with_one_arbitrary_field_get_an_answer_or_a_client_error(path in prop::sample::select(&PATHS[..]), v in mutated_request()) {
        check(&router(), path, v.to_string().into_bytes())?;
    }
}
