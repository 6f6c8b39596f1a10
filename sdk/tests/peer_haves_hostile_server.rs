//! A peer that sends garbage or endless lines on its `haves` stream gets one error, and the
//! stream ends: we neither buffer without bound nor keep listening to a liar.

mod peer_support;

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use peer_support::*;
use shoal::peer::{PeerAddr, PeerError};
use shoal_proto::{HaveMsg, MAX_HAVE_LINE};
use std::convert::Infallible;
use tokio::time::timeout;

/// A peer whose haves stream sends `chunks`, then keeps sending valid lines forever.
async fn peer_sending(chunks: Vec<Vec<u8>>) -> PeerAddr {
    h2_server(move |_req| {
        let first = futures::stream::iter(chunks.clone().into_iter().map(Bytes::from));
        let valid =
            futures::stream::repeat(Bytes::from_static(b"{\"t\":\"have\",\"segment\":\"ok\"}\n"));
        let body = first
            .chain(valid)
            .map(|b| Ok::<_, Infallible>(Frame::data(b)));
        boxed(async move { Response::new(BodyExt::boxed(StreamBody::new(body))) })
    })
    .await
}

async fn collect(addr: PeerAddr, max_items: usize) -> Vec<Result<HaveMsg, PeerError>> {
    let stream = client().haves(&addr, &swarm("live")).await.unwrap();
    timeout(HANG_GUARD, stream.take(max_items).collect())
        .await
        .expect("the stream must end after an error")
}

#[tokio::test]
async fn malformed_line_ends_the_stream_with_an_error() {
    let addr = peer_sending(vec![
        b"{\"t\":\"snapshot\",\"segments\":[\"a\"]}\n".to_vec(),
        b"{\"t\":\"have\",\"segm".to_vec(),
        b"ent\":\"b\"}\nthis is not json\n".to_vec(),
    ])
    .await;
    let items = collect(addr, 100).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(matches!(&items[0], Ok(HaveMsg::Snapshot { segments }) if segments == &[key("a")]));
    assert!(matches!(&items[1], Ok(HaveMsg::Have { segment }) if segment == &key("b")));
    let err = items[2].as_ref().unwrap_err();
    assert!(matches!(err, PeerError::MalformedHave(_)), "{err:?}");
    assert!(err.is_misbehaviour());
}

#[tokio::test]
async fn overlong_line_ends_the_stream_with_an_error() {
    // Never a newline: the reader must give up at the limit rather than buffer on.
    let addr = peer_sending(vec![vec![b'a'; MAX_HAVE_LINE / 2]; 8]).await;
    let items = collect(addr, 100).await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(
        matches!(items[0], Err(PeerError::HaveLineTooLong)),
        "{items:?}"
    );
}

#[tokio::test]
async fn invalid_keys_and_bytes_are_refused() {
    for bad in [
        b"{\"t\":\"have\",\"segment\":\"has space\"}\n".to_vec(),
        b"{\"t\":\"have\",\"segment\":\"\"}\n".to_vec(),
        b"\xff\xfe\n".to_vec(),
    ] {
        let addr = peer_sending(vec![bad.clone()]).await;
        let items = collect(addr, 100).await;
        assert_eq!(
            items.len(),
            1,
            "{}: {items:?}",
            String::from_utf8_lossy(&bad)
        );
        let err = items[0].as_ref().unwrap_err();
        assert!(err.is_misbehaviour(), "{err:?}");
    }
}
