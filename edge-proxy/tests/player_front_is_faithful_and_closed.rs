//! The player front passes the origin through faithfully (status, ranges, HEAD, types) and
//! never becomes an open proxy; manifests it cannot parse reach the player unchanged.

mod support;

use shoal_testkit::Nginx;
use std::time::Duration;
use support::{sum, Edge};

fn origin_with_files() -> (tempfile::TempDir, Nginx) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("v")).unwrap();
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("v/blob.ts"), &blob).unwrap();
    std::fs::write(root.join("v/key.bin"), b"0123456789abcdef").unwrap();
    let nginx = Nginx::start(root).unwrap();
    (dir, nginx)
}

#[tokio::test]
async fn origin_responses_pass_through_faithfully() {
    let (dir, nginx) = origin_with_files();
    let origin = nginx.host_port();
    let edge = Edge::start(&origin, None, &[]);
    let http = reqwest::Client::new();
    let blob = std::fs::read(dir.path().join("v/blob.ts")).unwrap();

    let r = http
        .get(edge.url(&origin, "/v/blob.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "video/mp2t");
    assert_eq!(r.bytes().await.unwrap(), blob);

    let r = http
        .get(edge.url(&origin, "/v/blob.ts"))
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 100-199/{}", blob.len())
    );
    assert_eq!(r.bytes().await.unwrap(), blob[100..200]);

    let r = http
        .head(edge.url(&origin, "/v/blob.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], blob.len().to_string());

    let r = http
        .get(edge.url(&origin, "/v/missing.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the origin's status reaches the player");

    let m = edge.metrics().await;
    assert!(sum(&m, "shoal_edge_bytes_total{source=\"cdn\"}") >= (blob.len() + 100) as f64);
    let r = http
        .get(format!("http://{}/healthz", edge.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn the_proxy_is_not_an_open_proxy() {
    let (_dir, nginx) = origin_with_files();
    let origin = nginx.host_port();
    let edge = Edge::start(&origin, None, &[]);
    let http = reqwest::Client::new();
    let base = format!("http://{}", edge.addr);
    for path in ["/example.com/index.html", "/127.0.0.1:1/v/blob.ts"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(
            r.text().await.unwrap().contains("--origin"),
            "the 403 says what to do"
        );
    }
    for path in [
        format!("/{origin}/../etc/passwd"),
        format!("/{origin}/v/%2e%2e/%2e%2e/etc/passwd"),
        format!("/{origin}/v/.%2E/.%2e/etc/passwd"),
        format!("/evil.example@{origin}/v/blob.ts"),
        format!("/{origin}\\@evil.example/v/blob.ts"),
    ] {
        // A raw socket: reqwest would normalise the dots away before sending.
        let status = raw_get(edge.addr, &path).await;
        assert!(status == 400 || status == 403, "{path}: {status}");
    }
    let r = http
        .post(edge.url(&origin, "/v/blob.ts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // Absolute-form request target (a forward-proxy request) on a raw socket.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    s.write_all(
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

async fn raw_get(addr: std::net::SocketAddr, target: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn malformed_manifests_reach_the_player_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut huge = b"#EXTM3U\n#EXT-X-TARGETDURATION:".to_vec();
    huge.extend(std::iter::repeat_n(b'9', 1 << 20));
    huge.push(b'\n');
    let junk: Vec<u8> = (0..4096u32).map(|i| (i * 131 % 256) as u8).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated.m3u8",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n".to_vec(),
        ),
        ("junk.m3u8", junk),
        (
            "no-header.m3u8",
            b"#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg1.ts\n".to_vec(),
        ),
        ("huge-line.m3u8", huge),
        ("empty.m3u8", Vec::new()),
        ("html.m3u8", b"<html><body>Not found</body></html>".to_vec()),
    ];
    for (name, body) in &cases {
        std::fs::write(root.join(name), body).unwrap();
    }
    let nginx = Nginx::start(root).unwrap();
    let origin = nginx.host_port();
    let edge = Edge::start(&origin, None, &[]);
    let http = reqwest::Client::new();
    for (name, body) in &cases {
        let r = http
            .get(edge.url(&origin, &format!("/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(&r.bytes().await.unwrap()[..], &body[..], "{name} changed");
    }
    let m = edge.metrics().await;
    assert!(
        sum(&m, "shoal_edge_manifest_parse_failures_total") >= 4.0,
        "parse failures are counted"
    );
    let r = http
        .get(format!("http://{}/healthz", edge.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the proxy survived");
}
