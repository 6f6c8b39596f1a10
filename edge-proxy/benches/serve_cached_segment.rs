//! Criterion: a player's request for a 1 MB segment the node already holds (the cache-hit path
//! of the player front), over a keep-alive loopback connection, beside the same file from nginx.
//!
//! `cargo bench -p shoal-edge-proxy --bench serve_cached_segment`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shoal::{Node, NodeConfig};
use shoal_testkit::Nginx;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let segment: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("seg1.ts"), &segment).expect("segment");
    std::fs::write(
        dir.path().join("vod.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2.0,\nseg1.ts\n#EXT-X-ENDLIST\n",
    )
    .expect("playlist");
    let nginx = Nginx::start(dir.path()).expect("nginx");
    let origin = nginx.host_port();
    let node = rt.block_on(async {
        Node::start(NodeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            peer_listen: "127.0.0.1:0".parse().expect("addr"),
            origins: vec![origin.clone()],
            origin_schemes: vec![format!("{origin}=http")],
            ..Default::default()
        })
        .await
        .expect("node")
    });
    let base = format!("http://{}/{origin}", node.player_addr());
    let http = reqwest::Client::new();
    let seg_url = format!("{base}/seg1.ts");
    rt.block_on(async {
        // Learn the playlist, then fetch the segment once from the origin into the cache.
        http.get(format!("{base}/vod.m3u8"))
            .send()
            .await
            .expect("playlist");
        let first = http.get(&seg_url).send().await.expect("segment");
        assert_eq!(first.headers()["x-shoal-source"], "cdn");
        first.bytes().await.expect("body");
    });

    let mut g = c.benchmark_group("serve_1mb_segment");
    g.throughput(Throughput::Bytes(segment.len() as u64));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("shoal_cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let r = http.get(&seg_url).send().await.expect("get");
            r.bytes().await.expect("body")
        })
    });
    let nginx_url = nginx.url("/seg1.ts");
    g.bench_function("nginx_sendfile", |b| {
        b.to_async(&rt).iter(|| async {
            let r = http.get(&nginx_url).send().await.expect("get");
            r.bytes().await.expect("body")
        })
    });
    g.finish();
    rt.block_on(node.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
