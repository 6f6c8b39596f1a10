//! nginx serves an origin folder with HLS/DASH types, byte ranges, and counts its egress.

use shoal_testkit::{sha256_file, sha256_hex, Nginx};
use std::time::Duration;

#[tokio::test]
async fn nginx_serves_media_types_ranges_and_logs_egress() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let data: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 251) as u8).collect();
    let files = [
        ("live/a.m3u8", "application/vnd.apple.mpegurl"),
        ("live/b.ts", "video/mp2t"),
        ("live/c.m4s", "video/iso.segment"),
        ("live/init.mp4", "video/mp4"),
        ("dash/d.mpd", "application/dash+xml"),
        ("keys/e.key", "application/octet-stream"),
    ];
    for (name, _) in files {
        let path = root.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap())?;
        std::fs::write(path, &data)?;
    }
    let nginx = Nginx::start(root.path())?;
    let http = reqwest::Client::new();

    for (name, content_type) in files {
        let resp = http.get(nginx.url(name)).send().await?;
        assert_eq!(resp.status(), 200, "{name}");
        let headers = resp.headers().clone();
        assert_eq!(headers["content-type"], content_type, "{name}");
        let manifest = name.ends_with(".m3u8") || name.ends_with(".mpd");
        assert_eq!(
            headers.get("cache-control").map(|v| v.to_str().unwrap()),
            manifest.then_some("no-cache"),
            "{name}"
        );
        assert_eq!(sha256_hex(&resp.bytes().await?), sha256_hex(&data));
    }

    let resp = http
        .get(nginx.url("/live/b.ts"))
        .header("range", "bytes=100-1099")
        .send()
        .await?;
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-range"], "bytes 100-1099/4000");
    let body = resp.bytes().await?;
    assert_eq!(&body[..], &data[100..1100]);
    assert_eq!(
        sha256_hex(&body),
        sha256_file(&nginx.file_for("/live/b.ts"), Some((100, 1099)))?
    );

    let missing = http.get(nginx.url("/live/nope.ts")).send().await?;
    assert_eq!(missing.status(), 404);

    let log = nginx
        .wait_for_requests(files.len() + 2, Duration::from_secs(10))
        .await?;
    let ranged = log.iter().find(|e| e.range.is_some()).unwrap();
    assert_eq!(
        (ranged.uri.as_str(), ranged.status, ranged.body_bytes),
        ("/live/b.ts", 206, 1000)
    );
    assert_eq!(ranged.range.as_deref(), Some("bytes=100-1099"));
    assert!(log
        .iter()
        .any(|e| e.uri == "/live/nope.ts" && e.status == 404));
    let served: u64 = log
        .iter()
        .filter(|e| e.status == 200)
        .map(|e| e.body_bytes)
        .sum();
    assert_eq!(served, 4000 * files.len() as u64);
    assert!(nginx.bytes_sent()? >= served + 1000);
    Ok(())
}

#[test]
fn file_for_maps_origin_and_proxy_paths() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let nginx = Nginx::start(root.path())?;
    let want = nginx.root.join("live/seg_00001.ts");
    assert_eq!(nginx.file_for("/live/seg_00001.ts"), want);
    assert_eq!(nginx.file_for("/live/seg_00001.ts?token=x"), want);
    let proxied = format!("/{}/live/seg_00001.ts", nginx.host_port());
    assert_eq!(nginx.file_for(&proxied), want);
    Ok(())
}

#[tokio::test]
async fn parallel_nginx_instances_serve_their_own_roots() -> anyhow::Result<()> {
    let (a, b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    std::fs::write(a.path().join("x"), "a")?;
    std::fs::write(b.path().join("x"), "b")?;
    let (na, nb) = (Nginx::start(a.path())?, Nginx::start(b.path())?);
    assert_eq!(reqwest::get(na.url("x")).await?.text().await?, "a");
    assert_eq!(reqwest::get(nb.url("x")).await?.text().await?, "b");
    let stopped = na.url("x");
    drop(na);
    // Gone for good: no orphan worker keeps its port open.
    assert!(reqwest::get(stopped).await.is_err());
    assert_eq!(reqwest::get(nb.url("/x")).await?.text().await?, "b");
    Ok(())
}
