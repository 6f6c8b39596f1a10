//! The client never hands on a body whose size a peer lied about or that exceeds the limit.

mod peer_support;

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use peer_support::*;
use shoal::peer::{PeerClientConfig, PeerError};
use std::convert::Infallible;
use std::time::Duration;

const STALL: Duration = Duration::from_secs(5);

#[tokio::test]
async fn body_over_the_size_limit_is_refused() {
    let addr = h2_server(|_req| {
        boxed(async { Response::new(Full::new(Bytes::from(vec![0u8; 5000])).boxed()) })
    })
    .await;
    let client = client_with(PeerClientConfig {
        max_segment_bytes: 1000,
        ..PeerClientConfig::default()
    });
    let err = client
        .fetch(&addr, &swarm("live"), &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PeerError::TooLarge {
                len: 5000,
                max: 1000
            }
        ),
        "{err:?}"
    );
    assert!(err.is_misbehaviour());
}

#[tokio::test]
async fn body_without_content_length_is_refused() {
    let addr = h2_server(|_req| {
        boxed(async {
            let chunks = futures::stream::iter([Ok::<_, Infallible>(Frame::data(
                Bytes::from_static(b"abc"),
            ))]);
            Response::new(StreamBody::new(chunks).boxed())
        })
    })
    .await;
    let err = client()
        .fetch(&addr, &swarm("live"), &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::BadContentLength), "{err:?}");
    assert!(err.is_misbehaviour());
}

#[tokio::test]
async fn body_shorter_than_its_content_length_is_never_returned() {
    let addr = h2_server(|_req| {
        boxed(async {
            let chunks =
                futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from(vec![
                    1u8;
                    600
                ])))]);
            Response::builder()
                .header("content-length", "1000")
                .body(StreamBody::new(chunks).boxed())
                .unwrap()
        })
    })
    .await;
    let res = client()
        .fetch(&addr, &swarm("live"), &key("1"), STALL)
        .await;
    assert!(res.is_err(), "a truncated body was accepted: {res:?}");
}

#[tokio::test]
async fn unexpected_status_is_an_error() {
    let addr = h2_server(|_req| {
        boxed(async {
            Response::builder()
                .status(500)
                .body(Full::new(Bytes::from_static(b"oops")).boxed())
                .unwrap()
        })
    })
    .await;
    let err = client()
        .fetch(&addr, &swarm("live"), &key("1"), STALL)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Status(s) if s == 500), "{err:?}");
    assert!(err.is_retryable() && !err.is_misbehaviour());
}
