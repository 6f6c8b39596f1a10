//! Shared set-up of the edge proxy's end-to-end tests: a real nginx origin serving a real
//! ffmpeg live encode, the tracker, and `shoal-edge` processes, all on loopback.

#![allow(dead_code)]

use shoal_testkit::{
    free_port, wait_for_port, ChildGuard, FfmpegPlayer, Nginx, PlayerOpts, RecordingRelay,
};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running `shoal-edge` process.
pub struct Edge {
    pub addr: SocketAddr,
    pub child: Option<ChildGuard>,
}

impl Edge {
    /// Starts the real binary against `origin` (plain HTTP) and `tracker` (if any).
    pub fn start(origin: &str, tracker: Option<&str>, extra: &[&str]) -> Edge {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal-edge"));
        cmd.args(["--listen", &addr.to_string()])
            .args(["--peer-listen", "127.0.0.1:0"])
            .args(["--origin", origin])
            .args(["--origin-scheme", &format!("{origin}=http")])
            .args(extra)
            .stdout(Stdio::null());
        // SHOAL_TEST_LOG_DIR=<dir> keeps each proxy's debug log in `<dir>/edge-<port>.log`.
        match std::env::var_os("SHOAL_TEST_LOG_DIR") {
            Some(dir) => {
                let file = std::fs::File::create(Path::new(&dir).join(format!("edge-{port}.log")))
                    .expect("creating the proxy's log file");
                cmd.env("RUST_LOG", "warn,shoal=debug").stderr(file);
            }
            None => {
                cmd.env("RUST_LOG", "warn,shoal=info")
                    .stderr(Stdio::inherit());
            }
        }
        if let Some(t) = tracker {
            cmd.args(["--tracker", t]);
        }
        let child = ChildGuard(cmd.spawn().expect("starting shoal-edge"));
        wait_for_port(addr, Duration::from_secs(20)).expect("shoal-edge listens");
        Edge {
            addr,
            child: Some(child),
        }
    }

    /// Kills the process (SIGKILL: a crash, not a goodbye).
    pub fn kill(&mut self) {
        self.child.take();
    }

    /// The proxy URL of `path` on `origin`.
    pub fn url(&self, origin: &str, path: &str) -> String {
        format!("http://{}/{origin}{path}", self.addr)
    }

    /// Scrapes `/metrics` into `name{labels} -> value`.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        scrape(&format!("http://{}/metrics", self.addr)).await
    }
}

/// Parses a Prometheus/OpenMetrics text page into `series -> value`.
pub async fn scrape(url: &str) -> HashMap<String, f64> {
    let text = reqwest::get(url)
        .await
        .expect("metrics reachable")
        .text()
        .await
        .expect("metrics body");
    shoal_testkit::metrics_text::parse(&text)
}

pub use shoal_testkit::metrics_text::sum;

/// Every media response (`.ts`, `.m4s`, `.mp4`) the relay saw, at least `at_least` of them, is
/// complete and equals nginx's file (the requested range of it, for range requests).
pub fn assert_identical_media(relay: &RecordingRelay, nginx: &Nginx, at_least: usize) {
    let media: Vec<_> = relay
        .records()
        .into_iter()
        .filter(|r| r.uri.ends_with(".ts") || r.uri.ends_with(".m4s") || r.uri.ends_with(".mp4"))
        .collect();
    assert!(
        media.len() >= at_least,
        "only {} media responses",
        media.len()
    );
    for r in media {
        assert!(
            r.status == 200 || r.status == 206,
            "{}: {}",
            r.uri,
            r.status
        );
        assert!(r.complete, "{} cut short", r.uri);
        assert!(
            r.matches_file(&nginx.file_for(&r.uri)).unwrap(),
            "{} ({:?}) differs from the origin",
            r.uri,
            r.range
        );
    }
}

/// Plays `path` of `origin` through `relay` with ffmpeg as fast as it reads (VOD), and
/// asserts that the player finished without an error line.
pub async fn play_vod(relay: &RecordingRelay, origin: &str, path: &str) {
    let url = relay.url(&format!("/{origin}{path}"));
    let mut opts = PlayerOpts::new(Duration::from_secs(30));
    opts.realtime = false;
    let mut p = FfmpegPlayer::start_with(&url, opts).unwrap();
    let o = p.wait(Duration::from_secs(120)).await.unwrap();
    assert!(o.success(), "{path} failed:\n{}", o.stderr);
    assert!(o.error_lines().is_empty(), "{path}: {:?}", o.error_lines());
}

/// Runs `cmd` (a `shoal-edge ... --print-config`), asserts it succeeded, and parses what it
/// printed.
pub fn printed_config(cmd: &mut Command) -> toml::Table {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// A tracker on a loopback port whose digest service may fetch from `origin` (plain HTTP),
/// announcing every `interval`.
pub async fn tracker_for(origin: &str, interval: Duration) -> shoal_tracker::RunningTracker {
    shoal_tracker::spawn(shoal_tracker::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        announce_interval: interval,
        origins: vec![origin.to_string()],
        origin_schemes: vec![format!("{origin}=http")],
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The configuration of an in-process node (`shoal::Node`) on loopback ports, for `origin`
/// (plain HTTP) and `tracker`.
pub fn node_config(origin: &str, tracker: &str) -> shoal::NodeConfig {
    shoal::NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        peer_listen: "127.0.0.1:0".parse().unwrap(),
        origins: vec![origin.to_string()],
        origin_schemes: vec![format!("{origin}=http")],
        tracker: Some(tracker.to_string()),
        ..shoal::NodeConfig::default()
    }
}

/// Plays every segment of the media playlist at `url` through an in-process `node`; returns the segment URIs.
pub async fn play_node(node: &shoal::Node, url: &url::Url) -> Vec<String> {
    let http = reqwest::Client::new();
    let (base, playlist) = load_playlist(node, url).await;
    let segments: Vec<String> = playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect();
    for s in &segments {
        let r = http.get(base.join(s).unwrap()).send().await.unwrap();
        assert!(r.status().is_success());
        r.bytes().await.unwrap();
    }
    segments
}

/// Loads the playlist at `url` through an in-process `node` (joining its swarm); returns the
/// proxy URL it was loaded from (to resolve segment URIs against) and its text.
pub async fn load_playlist(node: &shoal::Node, url: &url::Url) -> (url::Url, String) {
    let base = url::Url::parse(&node.player_url(url).unwrap()).unwrap();
    let text = reqwest::get(base.clone())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (base, text)
}

/// Asserts what a live swarm of a few proxies owes its provider: more than half of all the
/// bytes the players got came from peers, and every viewer got a real share from peers.
///
/// Each viewer is held to a lower floor than the swarm: every segment leaves the origin once,
/// through whichever member rendezvous hashing ranks first for it (1/N of the segments for
/// each of N members, give or take the draw of random peer ids), and a late joiner
/// fetches its first segments from the origin (no buffer, so no time to look for peers).
pub async fn assert_swarm_offload(edges: &[Edge]) {
    let (mut all_p2p, mut all_cdn) = (0.0, 0.0);
    for (i, e) in edges.iter().enumerate() {
        let m = e.metrics().await;
        let p2p = sum(&m, "shoal_edge_bytes_total{source=\"p2p\"}");
        let cdn = sum(&m, "shoal_edge_bytes_total{source=\"cdn\"}");
        let ratio = p2p / (p2p + cdn);
        eprintln!("edge {i}: offload {ratio:.3} (p2p {p2p} B, cdn {cdn} B)");
        assert!(
            ratio > 0.3,
            "edge {i} offload {ratio:.2} (p2p {p2p}, cdn {cdn})"
        );
        all_p2p += p2p;
        all_cdn += cdn;
    }
    let ratio = all_p2p / (all_p2p + all_cdn);
    eprintln!("swarm: offload {ratio:.3}");
    assert!(
        ratio > 0.5,
        "swarm offload {ratio:.2} (p2p {all_p2p}, cdn {all_cdn})"
    );
}

/// Waits until every in-process node has at least `peers` neighbours over all its swarms:
/// from then on the nodes agree on who seeds each segment.
pub async fn wait_until_met(nodes: &[shoal::Node], peers: i64) {
    let met = || async { nodes.iter().all(|n| n.stats().peers >= peers) };
    shoal_testkit::eventually(Duration::from_secs(20), "the nodes to meet", met).await;
}

/// Whether the tracker's digest service made this origin request (it fetches on its own
/// account, with its own user agent).
pub fn is_tracker(r: &shoal_testkit::AccessLogEntry) -> bool {
    r.user_agent
        .as_deref()
        .is_some_and(|ua| ua.starts_with("shoal-tracker/"))
}

/// Starts a node with `config` behind an uplink of `rate_bps` bits per second whose player
/// has played every segment of the media playlist at `url`: it holds them all. Returns it
/// and the segment URIs.
pub async fn holder_behind(
    config: shoal::NodeConfig,
    rate_bps: u64,
    url: &url::Url,
) -> (shoal::Node, Vec<String>) {
    let node = shoal::Node::start(shoal::NodeConfig {
        upload_limit: Some(shoal::config::Rate::from_bits_per_sec(rate_bps)),
        ..config
    })
    .await
    .unwrap();
    let segments = play_node(&node, url).await;
    assert!(segments.len() >= 3, "{segments:?}");
    (node, segments)
}

/// A segment through a node's player front: where it came from (`x-shoal-source`), how many
/// of its bytes came from peers (`x-shoal-p2p-bytes`), and its bytes.
pub async fn get_segment(
    http: &reqwest::Client,
    url: url::Url,
) -> (Option<String>, u64, bytes::Bytes) {
    let r = http.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let source = header("x-shoal-source");
    let p2p: u64 = header("x-shoal-p2p-bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (source, p2p, r.bytes().await.unwrap())
}
