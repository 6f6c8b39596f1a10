//! The PROXY protocol (v1 text, v2 binary) on a listener that enables it: a trusted proxy's
//! header names the client (as the `Shoal-Client-Addr` answer header shows), a trusted proxy
//! that sends none is cut off, and an untrusted peer's header is never honoured.

mod common;

use common::tls::TestCa;
use ppp::v2;
use shoal_tracker::config::{Config, StoreSpec};
use shoal_tracker::RunningTracker;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

async fn tracker(trusted: &str, tweak: impl FnOnce(&mut Config)) -> RunningTracker {
    let mut c = common::config(StoreSpec::Memory, Duration::from_secs(20));
    c.proxy_protocol = true;
    c.trusted_proxies = vec![trusted.into()];
    tweak(&mut c);
    shoal_tracker::spawn(c).await.unwrap()
}

/// An announce of `peer` as HTTP/1.1 bytes, closing the connection after the answer.
fn announce_request(peer: &str, extra_header: &str) -> Vec<u8> {
    let body = common::announce_body(peer, "pp", None).to_string();
    format!(
        "POST /v1/announce HTTP/1.1\r\nHost: tracker\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{extra_header}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes `chunks` (each its own write, a pause between) and reads until the server closes;
/// returns what came back (empty when the server closed without an answer).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, chunks: &[&[u8]]) -> String {
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if s.write_all(chunk).await.is_err() {
            break; // Closed on us: read what was said, if anything.
        }
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut got))
        .await
        .expect("the tracker answers or closes within 15 s");
    String::from_utf8_lossy(&got).into_owned()
}

async fn send(addr: SocketAddr, chunks: &[&[u8]]) -> String {
    exchange(TcpStream::connect(addr).await.unwrap(), chunks).await
}

/// The status code and the `Shoal-Client-Addr` header of an HTTP/1.1 answer.
fn seen(answer: &str) -> (u16, Option<String>) {
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let addr = answer
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(shoal_tracker::api::CLIENT_ADDR_HEADER)
                .then(|| v.trim().to_owned())
        });
    (status, addr)
}

fn v2_header(command: v2::Command, src: &str, dst: &str) -> Vec<u8> {
    let src: SocketAddr = src.parse().unwrap();
    let dst: SocketAddr = dst.parse().unwrap();
    v2::Builder::with_addresses(v2::Version::Two | command, v2::Protocol::Stream, (src, dst))
        // A TLV as AWS and GCP load balancers add them: skipped over, not misread as HTTP.
        .write_tlv(v2::Type::UniqueId, b"conn-1234".as_slice())
        .unwrap()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_with_a_v1_or_v2_header() {
    let t = tracker("127.0.0.0/8", |_| {}).await;
    let addr = t.addr();
    // Every announce is a new peer (a second one of the same id would need its key).
    let n = std::sync::atomic::AtomicU32::new(0);
    let req = || {
        announce_request(
            &format!("p{}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            "",
        )
    };

    // v1, the header and the request in one write.
    let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 7070\r\n".to_vec();
    let answer = send(addr, &[&[v1, req()].concat()]).await;
    assert_eq!(seen(&answer), (200, Some("203.0.113.7".into())), "{answer}");
    let v1 = b"PROXY TCP6 2001:db8::7 ::1 5555 7070\r\n";
    let answer = send(addr, &[v1, &req()]).await;
    assert_eq!(seen(&answer), (200, Some("2001:db8::7".into())), "{answer}");

    // v2, IPv4 and IPv6; the header itself split over two writes.
    let h = v2_header(v2::Command::Proxy, "198.51.100.9:40000", "127.0.0.1:7070");
    let answer = send(addr, &[&h[..10], &[&h[10..], &req()[..]].concat()]).await;
    assert_eq!(
        seen(&answer),
        (200, Some("198.51.100.9".into())),
        "{answer}"
    );
    let h = v2_header(v2::Command::Proxy, "[2001:db8::9]:40000", "[::1]:7070");
    let answer = send(addr, &[&h, &req()]).await;
    assert_eq!(seen(&answer), (200, Some("2001:db8::9".into())), "{answer}");

    // The proxy's own connections (v2 LOCAL, v1 UNKNOWN: its health checks) are its own.
    let h = v2_header(v2::Command::Local, "198.51.100.9:40000", "127.0.0.1:7070");
    let answer = send(addr, &[&h, &req()]).await;
    assert_eq!(seen(&answer), (200, Some("127.0.0.1".into())), "{answer}");
    let answer = send(addr, &[b"PROXY UNKNOWN\r\n", &req()]).await;
    assert_eq!(seen(&answer), (200, Some("127.0.0.1".into())), "{answer}");

    // The address it names is the next hop: itself a trusted proxy, its X-Forwarded-For counts.
    let v1 = b"PROXY TCP4 127.0.0.9 127.0.0.1 5555 7070\r\n";
    let req_xff = announce_request("b", "X-Forwarded-For: 192.0.2.33\r\n");
    let answer = send(addr, &[v1, &req_xff]).await;
    assert_eq!(seen(&answer), (200, Some("192.0.2.33".into())), "{answer}");

    // A trusted proxy that sends no header, or a broken one, is cut off without an answer:
    // the receiver must not guess whether a header is there.
    assert_eq!(send(addr, &[&req()]).await, "");
    let started = tokio::time::Instant::now();
    for broken in [
        &b"PROXY TCP4 203.0.113.7 nonsense\r\n"[..],
        b"PROXY TCP4 203.0.113.7\r\n",
        b"PROXY TCP9 203.0.113.7 127.0.0.1 5555 7070\r\n",
    ] {
        assert_eq!(send(addr, &[broken, &req()]).await, "");
    }
    assert!(
        started.elapsed() < shoal_tracker::listener::HANDSHAKE_TIMEOUT,
        "a broken header is refused when it ends, not when the handshake times out"
    );
    assert_eq!(
        send(
            addr,
            &[b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 7070 and more than one hundred and seven bytes of text without an end of line at all ......"]
        )
        .await,
        ""
    );
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_name_itself_with_a_proxy_header() {
    // Loopback is not a listed proxy: its connections are direct clients.
    let t = tracker("10.0.0.0/8", |_| {}).await;
    let addr = t.addr();
    let req = announce_request("a", "");
    let answer = send(addr, &[&req]).await;
    assert_eq!(seen(&answer), (200, Some("127.0.0.1".into())), "{answer}");
    // A header it sends is not read as one: it is a malformed request, refused, and nothing
    // it says becomes its address.
    let v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 7070\r\n";
    let answer = send(addr, &[&[&v1[..], &req].concat()]).await;
    let (status, client) = seen(&answer);
    assert!(status == 400 && client.is_none(), "{answer}");
    let h = v2_header(v2::Command::Proxy, "198.51.100.9:40000", "127.0.0.1:7070");
    let answer = send(addr, &[&[&h[..], &req].concat()]).await;
    let (status, client) = seen(&answer);
    assert!(status == 400 && client.is_none(), "{answer}");
    t.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_header_comes_before_the_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Shoal test CA");
    let server = ca.issue(dir.path(), "tracker");
    let t = tracker("127.0.0.1", |c| {
        c.tls_cert = Some(server.cert.clone());
        c.tls_key = Some(server.key.clone());
    })
    .await;
    let mut tcp = TcpStream::connect(t.addr()).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 7070\r\n")
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(ca.rustls_client())
        .connect(name, tcp)
        .await
        .unwrap();
    let answer = exchange(tls, &[&announce_request("a", "")]).await;
    assert_eq!(seen(&answer), (200, Some("203.0.113.7".into())), "{answer}");
    t.shutdown().await.unwrap();
}

#[test]
fn the_proxy_protocol_needs_trusted_proxies() {
    let e = Config::from_toml("proxy_protocol = true").unwrap_err();
    assert!(e.to_string().contains("trusted_proxies"), "{e}");
}
