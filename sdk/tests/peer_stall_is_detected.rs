//! A peer that stops sending mid-transfer (or never answers) fails the fetch within the stall
//! timeout, so the scheduler can fall back to another source in time.

mod peer_support;

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use peer_support::*;
use shoal::peer::PeerError;
use std::convert::Infallible;
use std::time::Duration;
use tokio::time::{timeout, Instant};

const STALL: Duration = Duration::from_millis(300);

#[tokio::test]
async fn peer_that_stops_mid_body_is_a_stall() {
    // Headers and half the body, then silence on an open connection.
    let addr =
        h2_server(|_req| {
            boxed(async {
                let half = futures::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from(
                    vec![1u8; 50_000],
                )))]);
                let body = StreamBody::new(half.chain(futures::stream::pending()));
                Response::builder()
                    .header("content-length", "100000")
                    .body(BodyExt::boxed(body))
                    .unwrap()
            })
        })
        .await;

    let start = Instant::now();
    let res = timeout(
        HANG_GUARD,
        client().fetch(&addr, &swarm("live"), &key("1"), STALL),
    )
    .await
    .expect("a stalled transfer must not hang the fetch");
    let err = res.unwrap_err();
    assert!(
        matches!(err, PeerError::Stalled(d) if d == STALL),
        "{err:?}"
    );
    assert!(err.is_retryable() && !err.is_misbehaviour());
    assert!(start.elapsed() >= STALL);
}

#[tokio::test]
async fn peer_that_never_answers_is_a_stall() {
    let addr = h2_server(|_req| boxed(futures::future::pending())).await;
    let res = timeout(
        HANG_GUARD,
        client().fetch(&addr, &swarm("live"), &key("1"), STALL),
    )
    .await
    .expect("an unanswered request must not hang the fetch");
    assert!(matches!(res, Err(PeerError::Stalled(_))), "{res:?}");
}
