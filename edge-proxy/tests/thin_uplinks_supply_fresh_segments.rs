//! A live swarm whose uplinks are slower than its stream: every proxy's upload cap is under
//! half the bitrate, so no peer transfer can keep pace with playback. ffmpeg encodes now,
//! nginx serves, the tracker groups four `shoal-edge` processes, a real player plays through
//! each.
//!
//! What viewers and the provider rely on: the players get every byte as the origin has it and
//! play without an error; the proxies notice that peers cannot carry the stream alone and
//! let idle uplinks fetch fresh segments from the origin to pass them on (`reason="supply"`
//! in their fallback counters), while peers still carry part of the bytes.

mod support;

use shoal_testkit::{
    sha256_hex, FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx, PlayerOpts, RecordingRelay,
};
use std::time::Duration;
use support::{sum, tracker_for, Edge};

/// Video bitrate of the encode, kbit/s (with audio and MPEG-TS overhead the stream is about
/// 700 kbit/s: 2 s segments of about 170 KB).
const VIDEO_KBPS: u32 = 600;
/// Each proxy's upload cap: well under half the stream.
const UPLOAD_LIMIT: &str = "250kbit";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thin_uplinks_supply_fresh_segments_and_players_get_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut live = LiveHls::start(
        dir.path(),
        LiveHlsOpts {
            video_kbps: VIDEO_KBPS,
            ..LiveHlsOpts::default()
        },
    )
    .unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();
    let origin = nginx.host_port();

    let tracker = tracker_for(&origin, Duration::from_secs(2)).await;
    let tracker_url = tracker.url();

    let edges: Vec<Edge> = (0..4)
        .map(|_| {
            Edge::start(
                &origin,
                Some(&tracker_url),
                &["--upload-limit", UPLOAD_LIMIT],
            )
        })
        .collect();
    let relays: Vec<RecordingRelay> = edges
        .iter()
        .map(|e| RecordingRelay::start(e.addr).unwrap())
        .collect();
    let mut players = Vec::new();
    for relay in &relays {
        let url = relay.url(&format!("/{origin}{}", LiveHls::MASTER));
        players.push(
            FfmpegPlayer::start_with(&url, PlayerOpts::new(Duration::from_secs(50))).unwrap(),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (i, p) in players.iter_mut().enumerate() {
        let o = p.wait(Duration::from_secs(120)).await.unwrap();
        assert!(
            o.success(),
            "player {i} failed: {:?}\n{}",
            o.status,
            o.stderr
        );
        assert!(
            o.error_lines().is_empty(),
            "player {i} reported errors: {:?}",
            o.error_lines()
        );
    }

    // Every segment each player received equals the origin's.
    let mut sizes = Vec::new();
    for (i, relay) in relays.iter().enumerate() {
        let segments: Vec<_> = relay
            .records()
            .into_iter()
            .filter(|r| r.uri.contains(".ts") && (r.status == 200 || r.status == 206))
            .collect();
        assert!(
            segments.len() >= 15,
            "player {i} got only {} segments",
            segments.len()
        );
        let last = segments.len() - 1;
        for (n, r) in segments.into_iter().enumerate() {
            let file = live.archived(&r.uri);
            if !r.complete {
                // A player stops at its time limit, possibly while a segment is arriving
                // (slowly, at these caps): only its last response may be cut, and what it
                // got is the start of the origin's file.
                assert_eq!(n, last, "player {i}: {} cut short mid-run", r.uri);
                let bytes = std::fs::read(&file).unwrap();
                let got = bytes.get(..r.body_len as usize).unwrap_or_default();
                assert_eq!(
                    sha256_hex(got),
                    r.sha256,
                    "player {i}: {} (cut at the end) differs from the origin",
                    r.uri
                );
                continue;
            }
            assert!(
                r.matches_file(&file).unwrap(),
                "player {i}: {} differs from the origin",
                r.uri
            );
            sizes.push(std::fs::metadata(&file).unwrap().len());
        }
    }
    let mean = sizes.iter().sum::<u64>() as f64 / sizes.len() as f64;
    let cap: shoal::config::Rate = UPLOAD_LIMIT.parse().unwrap();
    let ratio = cap.bytes_per_sec() as f64 / (mean / 2.0);
    eprintln!("segments average {mean:.0} bytes: upload cap {ratio:.2}x the stream");
    assert!(
        ratio < 0.6,
        "the stream is too thin for this test: {ratio:.2}x"
    );

    let (mut supplied, mut p2p, mut cdn) = (0.0, 0.0, 0.0);
    for (i, e) in edges.iter().enumerate() {
        let m = e.metrics().await;
        let s = sum(&m, "shoal_edge_fallbacks_total{reason=\"supply\"}");
        let p = sum(&m, "shoal_edge_bytes_total{source=\"p2p\"}");
        let c = sum(&m, "shoal_edge_bytes_total{source=\"cdn\"}");
        eprintln!("edge {i}: {s} segments supplied, p2p {p} B, cdn {c} B");
        supplied += s;
        p2p += p;
        cdn += c;
    }
    assert!(
        supplied > 0.0,
        "no proxy noticed that peers cannot carry the stream"
    );
    assert!(p2p > 0.0, "peers carried nothing (cdn {cdn} B)");
    drop(live);
}
