//! Real players in a real browser, and the provider's view of the same run.
//!
//! hls.js plays a live HLS encode and dash.js a live DASH encode (ffmpeg, H.264 + AAC) in
//! headless Chromium (the system's `chromium`, driven by playwright-core from `e2e/browser/`):
//! four edge proxies with the tracker, each proxy the front of one hls.js and one dash.js
//! player, so every swarm (HLS, DASH video, DASH audio) has four members. Meanwhile a real
//! Prometheus scrapes the tracker and the proxies with the deploy rule files; afterwards every
//! PromQL expression of every Grafana panel must return data, and no alert may fire.
//!
//! Artifacts (`target/test-artifacts/`): `browser-players.png`, a screenshot of the playing
//! page, and `prometheus-run.json`, the panels' data over the run, from which
//! `shoal-bench`'s `dashboard-png` draws `docs/dashboard.png`.

mod observability;
mod support;

use observability::{artifacts, expand, panel_queries, repo, Prometheus};
use serde_json::{json, Value};
use shoal_testkit::{LiveDash, LiveDashOpts, LiveHls, LiveHlsOpts, Nginx};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, UNIX_EPOCH};
use support::{assert_swarm_offload, Edge};

/// Seconds each player is watched after its startup.
const WATCH_SECS: u64 = 62;

/// Copies the page and the players' bundles (from `npm ci` in `e2e/browser/`) into `www`.
fn install_page(www: &Path) {
    let e2e = repo().join("e2e/browser");
    let files = [
        ("player.html", "player.html"),
        ("node_modules/hls.js/dist/hls.min.js", "hls.min.js"),
        (
            "node_modules/dashjs/dist/modern/umd/dash.all.min.js",
            "dash.all.min.js",
        ),
    ];
    std::fs::create_dir_all(www).unwrap();
    for (from, to) in files {
        let src = e2e.join(from);
        assert!(
            src.is_file(),
            "{} missing: run `npm ci` in e2e/browser (./ci.sh does)",
            src.display()
        );
        std::fs::copy(&src, www.join(to)).unwrap();
    }
}

/// Runs the driver: the page plays for `WATCH_SECS` after startup. Returns its report.
async fn run_browser(page_url: &str, screenshot: &Path) -> Value {
    shoal_testkit::which("chromium", "chromium").expect("chromium installed");
    let node = shoal_testkit::which("node", "nodejs").expect("node installed");
    let child = tokio::process::Command::new(node)
        .arg(repo().join("e2e/browser/run.mjs"))
        .args(["--url", page_url])
        .args(["--seconds", &WATCH_SECS.to_string()])
        .arg("--screenshot")
        .arg(screenshot)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting node");
    let out = tokio::time::timeout(
        Duration::from_secs(WATCH_SECS + 120),
        child.wait_with_output(),
    )
    .await
    .expect("the browser run finishes")
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "driver failed: {stdout}");
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("driver output {line:?}: {e}"))
}

fn unix_now() -> f64 {
    shoal::clock::wall()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hls_js_and_dash_js_in_chromium_play_live_through_proxies_and_every_panel_has_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut live = LiveHls::start(dir.path(), LiveHlsOpts::default()).unwrap();
    let dash_opts = LiveDashOpts {
        timeline: true,
        ..LiveDashOpts::default()
    };
    let mut live_dash = LiveDash::start(dir.path(), dash_opts).unwrap();
    install_page(&dir.path().join("www"));
    // One nginx is the origin and serves the page: the page's origin is not the proxies'.
    let nginx = Nginx::start(dir.path()).unwrap();
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();
    live_dash
        .wait_ready(3, Duration::from_secs(60))
        .await
        .unwrap();
    let origin = nginx.host_port();

    let tracker = support::tracker_for(&origin, Duration::from_secs(2)).await;
    // Four: each proxy seeds about a quarter of the segments from the origin, so every one
    // of them stays well above half offload whatever the draw.
    let edges: Vec<Edge> = (0..4)
        .map(|_| Edge::start(&origin, Some(&tracker.url()), &[]))
        .collect();
    let edge_addrs: Vec<_> = edges.iter().map(|e| e.addr).collect();
    let prometheus = Prometheus::start(&[tracker.addr()], &edge_addrs).await;
    prometheus.wait_targets_up(1 + edges.len()).await;
    let run_start = unix_now();

    // One hls.js and one dash.js player per proxy, all in one page.
    let mut params: Vec<(&str, String)> = edges
        .iter()
        .map(|e| ("hls", e.url(&origin, LiveHls::MASTER)))
        .collect();
    params.extend(
        edges
            .iter()
            .map(|e| ("dash", e.url(&origin, LiveDash::MPD))),
    );
    let page = reqwest::Url::parse_with_params(&nginx.url("/www/player.html"), &params).unwrap();
    let screenshot = artifacts().join("browser-players.png");
    let report = run_browser(page.as_str(), &screenshot).await;
    eprintln!(
        "browser: codecs {} startup {}s console {}",
        report["codecs"], report["startup_seconds"], report["console"]
    );

    assert_eq!(
        report["codecs"]["h264_aac_mp4"], true,
        "this chromium cannot play H.264/AAC in MSE"
    );
    let watched = report["watched_seconds"].as_f64().unwrap_or(0.0);
    assert!(watched >= 60.0, "players watched for only {watched} s");
    let players = report["players"].as_array().expect("players");
    assert_eq!(players.len(), 2 * edges.len());
    let start = report["start"].as_array().expect("start times");
    for (i, p) in players.iter().enumerate() {
        assert_eq!(p["playing"], true, "player {i} never started: {p}");
        let advanced = p["currentTime"].as_f64().unwrap() - start[i].as_f64().unwrap();
        eprintln!(
            "player {i} ({}): advanced {advanced:.1} s, {} frames",
            p["kind"], p["decodedFrames"]
        );
        assert!(
            advanced >= 50.0,
            "player {i} advanced only {advanced:.1} s in {WATCH_SECS} s: {p}"
        );
        assert!(
            p["decodedFrames"].as_u64().unwrap_or(0) > 25 * 50,
            "player {i} decoded too few frames: {p}"
        );
        assert_eq!(p["stalls"], json!([]), "player {i} stalled: {p}");
        assert_eq!(p["errors"], json!([]), "player {i} reported errors: {p}");
    }
    assert!(
        screenshot.metadata().is_ok_and(|m| m.len() > 1000),
        "no screenshot"
    );

    assert_swarm_offload(&edges).await;

    // The provider's view of the same run, while everything still runs.
    let run_end = unix_now();
    let range = format!("{}s", (run_end - run_start).ceil() as u64);
    let instance = edges[0].addr.to_string();
    let vars = [
        ("__rate_interval", "20s"),
        ("__interval", "2s"),
        ("__range", range.as_str()),
        ("instance", instance.as_str()),
        ("datasource", "prometheus"),
    ];
    let queries = panel_queries();
    let mut empty = Vec::new();
    let mut panels = Vec::new();
    for q in &queries {
        let expr = expand(&q.expr, &vars);
        match prometheus.query(&expr).await {
            Ok(r) if !r.is_empty() => {}
            Ok(_) => empty.push(format!("{} / {}: no data for {expr}", q.dashboard, q.panel)),
            Err(e) => empty.push(format!("{} / {}: {e} in {expr}", q.dashboard, q.panel)),
        }
        let series = prometheus
            .query_range(&expr, run_start, run_end, 1.0)
            .await
            .unwrap_or_default();
        panels.push(json!({
            "dashboard": q.dashboard, "panel": q.panel, "legend": q.legend,
            "expr": expr, "series": series,
        }));
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
    // The edge dashboard's variable lists the proxies.
    let instances = prometheus
        .api("label/instance/values", &[("match[]", "shoal_edge_peers")])
        .await
        .unwrap();
    for a in &edge_addrs {
        assert!(
            instances
                .as_array()
                .unwrap()
                .contains(&json!(a.to_string())),
            "{a} missing from {instances}"
        );
    }
    // A healthy run fires no alert.
    let alerts = prometheus.api("alerts", &[]).await.unwrap();
    let firing: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(
        firing.is_empty(),
        "alerts fire in a healthy run: {firing:?}"
    );

    let data = json!({ "start": run_start, "end": run_end, "panels": panels });
    std::fs::write(
        artifacts().join("prometheus-run.json"),
        serde_json::to_vec_pretty(&data).unwrap(),
    )
    .unwrap();
    drop(edges);
    drop(live);
    drop(live_dash);
}

#[tokio::test]
async fn the_proxy_answers_cors_so_pages_on_other_origins_can_play() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.ts"), vec![7u8; 1000]).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    let origin = nginx.host_port();
    let edge = Edge::start(&origin, None, &[]);
    let client = reqwest::Client::new();
    let url = edge.url(&origin, "/a.ts");

    // The preflight a browser sends before a Range request from another origin.
    let pre = client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://page.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "range")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("GET"));
    assert!(h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase()
        .contains("range"));

    let got = client
        .get(&url)
        .header("Origin", "http://page.example")
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 206);
    assert_eq!(got.headers()["access-control-allow-origin"], "*");
    assert!(got.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("Content-Range"));
    assert_eq!(got.bytes().await.unwrap().len(), 100);

    // Errors too: a page must be able to read why it was refused.
    let refused = client
        .get(edge.url("not-allowed.example", "/x.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.headers()["access-control-allow-origin"], "*");
}
