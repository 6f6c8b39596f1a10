//! Whatever a client sends — huge paths, `..`, unknown routes, other methods, bodies,
//! garbage — the peer server answers 4xx, never panics, and keeps serving.

mod peer_support;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use peer_support::*;
use shoal::peer::{PeerAddr, PeerServerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

static PANICKED: AtomicBool = AtomicBool::new(false);

/// Sends `raw` as one HTTP/1.1 exchange inside TLS; the response status, or `None` if the
/// server closed the connection without answering.
async fn http1_status(addr: &PeerAddr, raw: &[u8]) -> Option<u16> {
    let mut tcp = tls_connect(addr).await;
    // The server may answer and close before reading everything we send.
    let _ = tcp.write_all(raw).await;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = timeout(HANG_GUARD, tcp.read(&mut buf))
            .await
            .expect("server neither answered nor closed")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

fn request(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nhost: peer\r\n{extra}\r\n").into_bytes()
}

#[tokio::test]
async fn hostile_requests_get_4xx_and_nothing_panics() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        hook(info);
    }));

    let node = start_node(1 << 20, &["live"], PeerServerConfig::default()).await;
    let live = swarm("live");
    node.cache.insert(&live, &key("1"), payload(1000));
    node.cache.insert(&swarm("other"), &key("1"), payload(1000));

    let long_path = format!("/p2p/v1/live/segments/{}", "a".repeat(5000));
    let huge_path = format!("/p2p/v1/live/segments/{}", "a".repeat(100_000));
    let huge_header = format!("x-junk: {}\r\n", "j".repeat(40_000));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "dot-dot key",
            request("GET", "/p2p/v1/live/segments/..", ""),
            &[404],
        ),
        (
            "traversal",
            request("GET", "/p2p/v1/../../etc/passwd", ""),
            &[404],
        ),
        (
            "encoded traversal",
            request(
                "GET",
                "/p2p/v1/live/segments/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                "",
            ),
            &[404],
        ),
        ("unknown route", request("GET", "/admin", ""), &[404]),
        (
            "other version",
            request("GET", "/p2p/v2/live/haves", ""),
            &[404],
        ),
        (
            "other swarm",
            request("GET", "/p2p/v1/other/segments/1", ""),
            &[404],
        ),
        (
            "bad encoding",
            request("GET", "/p2p/v1/%ff/haves", ""),
            &[400],
        ),
        ("long path", request("GET", &long_path, ""), &[414]),
        (
            "huge path",
            request("GET", &huge_path, ""),
            &[400, 414, 431],
        ),
        (
            "huge header",
            request("GET", "/p2p/v1/live/segments/1", &huge_header),
            &[431],
        ),
        (
            "post",
            request("POST", "/p2p/v1/live/haves", "content-length: 5\r\n")
                .into_iter()
                .chain(*b"hello")
                .collect(),
            &[405],
        ),
        (
            "delete",
            request("DELETE", "/p2p/v1/live/segments/1", ""),
            &[405],
        ),
        (
            "get with body",
            request("GET", "/p2p/v1/live/segments/1", "content-length: 5\r\n")
                .into_iter()
                .chain(*b"hello")
                .collect(),
            &[400],
        ),
        (
            "chunked body",
            request(
                "GET",
                "/p2p/v1/live/segments/1",
                "transfer-encoding: chunked\r\n",
            )
            .into_iter()
            .chain(*b"5\r\nhello\r\n0\r\n\r\n")
            .collect(),
            &[400],
        ),
        (
            "garbage",
            b"\x00\x01\x02 nonsense \xff\r\n\r\n".to_vec(),
            &[400],
        ),
    ];
    for (name, raw, allowed) in &cases {
        let got = http1_status(&node.addr, raw).await;
        assert!(
            got.is_some_and(|s| allowed.contains(&s)),
            "{name}: got {got:?}, expected one of {allowed:?}"
        );
    }

    // The same refusals over HTTP/2.
    let raw = raw_h2_client::<Full<Bytes>>(&node.addr).await;
    for (method, path, body, expected) in [
        (Method::POST, "/p2p/v1/live/haves", "x", 405),
        (Method::GET, "/p2p/v1/live/segments/1", "body", 400),
        (Method::GET, "/nope", "", 404),
        (Method::GET, "/p2p/v1/live/segments/%2e%2e", "", 404),
    ] {
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("https://{}{path}", node.addr.addr))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let resp = timeout(HANG_GUARD, raw.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), expected, "h2 {method} {path}");
    }

    // Still serving, and no task panicked along the way.
    let t = client()
        .fetch(&node.addr, &live, &key("1"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(t.bytes, payload(1000));
    assert!(!PANICKED.load(Ordering::SeqCst), "a server task panicked");
}
