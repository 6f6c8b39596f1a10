//! Tracker request bodies through the real router (deserialise, validate, token check): the
//! first byte picks the endpoint, the rest is the body. Every answer is a 2xx, or a 4xx whose
//! body is an `ErrorBody` that says why; never a panic or a 5xx.
#![no_main]

use axum::body::Body;
use axum::http::{header, Request};
use http_body_util::BodyExt;
use shoal_proto::ErrorBody;
use shoal_tracker::config::Config;
use shoal_tracker::store::MemoryStore;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tower::ServiceExt;

const PATHS: [&str; 3] = ["/v1/announce", "/v1/leave", "/v1/report"];

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let router = rt.block_on(async {
            let store = Arc::new(MemoryStore::new(Duration::from_secs(20)));
            let state = shoal_tracker::app_state(&Config::default(), store).expect("app state");
            shoal_tracker::api::router(Arc::new(state))
        });
        Fixture { rt, router }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let path = PATHS[usize::from(which) % PATHS.len()];
    let f = fixture();
    let (status, bytes) = f.rt.block_on(async {
        let req = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_vec()))
            .expect("a request");
        let resp = f.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, bytes)
    });
    assert!(status.is_success() || status.is_client_error(), "{path}: {status}");
    if status.is_client_error() {
        let e: ErrorBody = serde_json::from_slice(&bytes).expect("4xx bodies are ErrorBody");
        assert!(!e.error.is_empty() && !e.message.is_empty());
    }
});
