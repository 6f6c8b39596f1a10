//! With `repr_digest = true`, the digest service takes an RFC 9530 `Repr-Digest` from a HEAD
//! answer instead of fetching the body, and falls back to GET when the origin sends none.
//! nginx cannot send the header, so the origin here is a small real HTTP server.

mod common;

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use common::{Harness, StoreKind};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const SIGNED: &[u8] = b"segment bytes the origin vouches for";
const UNSIGNED: &[u8] = b"segment bytes without a header";

#[derive(Default)]
struct Seen {
    head: AtomicUsize,
    get: AtomicUsize,
    /// The tracker's start-up check of the origin (`HEAD /`), counted apart.
    checks: AtomicUsize,
}

async fn origin(seen: Arc<Seen>) -> String {
    let app = axum::Router::new().fallback(move |method: Method, uri: axum::http::Uri| {
        let seen = seen.clone();
        async move {
            match method {
                Method::HEAD if uri.path() == "/" => seen.checks.fetch_add(1, Ordering::SeqCst),
                Method::HEAD => seen.head.fetch_add(1, Ordering::SeqCst),
                _ => seen.get.fetch_add(1, Ordering::SeqCst),
            };
            let body = if uri.path() == "/signed.ts" {
                SIGNED
            } else {
                UNSIGNED
            };
            let mut h = HeaderMap::new();
            if uri.path() == "/signed.ts" {
                let b64 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
                h.insert("repr-digest", format!("sha-256=:{b64}:").parse().unwrap());
            }
            h.insert(header::CONTENT_LENGTH, body.len().into());
            (StatusCode::OK, h, body).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

#[tokio::test]
async fn a_repr_digest_on_head_saves_the_body_fetch_and_its_absence_falls_back_to_get() {
    let seen = Arc::new(Seen::default());
    let host = origin(seen.clone()).await;
    let h = Harness::start_with(StoreKind::Memory, |c| {
        c.origins = vec![host.clone()];
        c.origin_schemes = vec![format!("{host}=http")];
        c.repr_digest = true;
    })
    .await;
    let key = h.join("p", "s").await.peer_key;
    let ask = |path: &str| {
        let segment: String =
            url::form_urlencoded::byte_serialize(format!("{host}{path}").as_bytes()).collect();
        format!("/v1/digest?swarm=s&segment={segment}&peer_id=p&peer_key={key}")
    };

    let (status, v) = h.get(&ask("/signed.ts")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(SIGNED)));
    assert_eq!(v["size"], SIGNED.len());
    assert_eq!(seen.head.load(Ordering::SeqCst), 1);
    assert_eq!(
        seen.get.load(Ordering::SeqCst),
        0,
        "the body was not fetched"
    );

    let (status, v) = h.get(&ask("/plain.ts")).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(UNSIGNED)));
    assert_eq!(seen.head.load(Ordering::SeqCst), 2);
    assert_eq!(seen.get.load(Ordering::SeqCst), 1);
    // The start-up check runs in the background: wait for it (bounded).
    let checked = shoal_testkit::poll_until(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(20),
        || {
            let n = seen.checks.load(Ordering::SeqCst);
            async move { (n > 0).then_some(n) }
        },
    )
    .await;
    assert_eq!(checked, Some(1), "one start-up check");
}
