//! Manifest rewrite and parse of a 1,000-segment VOD playlist, with relative segment URIs
//! (the common case: lines are copied) and with absolute signed URIs (every line rewritten).
//!
//! `cargo bench -p shoal-sdk --bench manifest_rewrite`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shoal_core::manifest::hls;
use shoal_core::manifest::{Scheme, UrlMapper};
use std::hint::black_box;
use url::Url;

const SEGMENTS: usize = 1_000;

fn vod(absolute: bool) -> String {
    let mut s = String::from(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:6\n#EXT-X-PLAYLIST-TYPE:VOD\n\
         #EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    for i in 0..SEGMENTS {
        s.push_str("#EXTINF:6.006,\n");
        if absolute {
            s.push_str(&format!(
                "https://cdn.example.com/vod/title/720p/seg{i:05}.m4s?st=1700000000&sig=c2lnbmF0dXJl{i}\n"
            ));
        } else {
            s.push_str(&format!("seg{i:05}.m4s\n"));
        }
    }
    s.push_str("#EXT-X-ENDLIST\n");
    s
}

fn bench(c: &mut Criterion) {
    let mapper = UrlMapper::new(
        "http://127.0.0.1:8080",
        [("cdn.example.com".to_owned(), Scheme::Https)],
    )
    .expect("valid mapper config");
    let origin = Url::parse("https://cdn.example.com/vod/title/720p/index.m3u8").expect("url");
    let mut group = c.benchmark_group("hls_vod_1000_segments");
    for (name, text) in [("relative", vod(false)), ("absolute", vod(true))] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(format!("rewrite/{name}"), |b| {
            b.iter(|| hls::rewrite(black_box(&text), &origin, &mapper))
        });
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| hls::parse(black_box(text.as_bytes()), &origin))
        });
        group.bench_function(format!("process/{name}"), |b| {
            b.iter_batched(
                || text.as_bytes(),
                |bytes| hls::process(bytes, &origin, &mapper).body.len(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
