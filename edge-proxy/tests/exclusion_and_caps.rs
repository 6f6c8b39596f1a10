//! What an operator's limits on neighbours guarantee: a proxy never takes bytes from a peer
//! whose address it excludes, and never reads more from peers than its download cap allows,
//! while its player still gets every segment, byte-identical to the origin's.
//!
//! The tracker also leaves excluded peers out when its policy says so; here the proxy's own
//! `--exclude` list is what keeps the neighbour away (the node applies the swarm policy's list
//! through the same filter, unit-tested in the SDK).

mod support;

use shoal_testkit::{
    encode_vod_ladder, free_port, wait_for_port, ChildGuard, FfmpegPlayer, Nginx, PlayerOpts,
    RecordingRelay, VodLadder,
};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{assert_identical_media, printed_config, sum, Edge};
use tokio::time::Instant;

/// Starts `shoal-edge` with its peer server on `peer_ip` (loopback aliases like 127.0.0.2
/// need no set-up on Linux), so neighbours know it by that address.
fn edge_on(origin: &str, tracker: &str, peer_ip: [u8; 4], extra: &[&str]) -> Edge {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let peer_listen = SocketAddr::new(IpAddr::from(peer_ip), 0);
    let child = Command::new(env!("CARGO_BIN_EXE_shoal-edge"))
        .args(["--listen", &addr.to_string()])
        .args(["--peer-listen", &peer_listen.to_string()])
        .args(["--origin", origin])
        .args(["--origin-scheme", &format!("{origin}=http")])
        .args(["--tracker", tracker])
        .args(extra)
        .env("RUST_LOG", "warn,shoal=info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting shoal-edge");
    let child = ChildGuard(child);
    wait_for_port(addr, Duration::from_secs(20)).expect("shoal-edge listens");
    Edge {
        addr,
        child: Some(child),
    }
}

/// Plays `path` through `relay` as fast as the proxy serves it; the player must succeed.
async fn play(relay: &RecordingRelay, origin: &str, path: &str) {
    let url = relay.url(&format!("/{origin}{path}"));
    let mut p = FfmpegPlayer::start_with(&url, PlayerOpts::new(Duration::from_secs(30))).unwrap();
    let o = p.wait(Duration::from_secs(180)).await.unwrap();
    assert!(o.success(), "{path} failed:\n{}", o.stderr);
    assert!(o.error_lines().is_empty(), "{path}: {:?}", o.error_lines());
}

async fn tracker_for(origin: &str) -> shoal_tracker::RunningTracker {
    shoal_tracker::spawn(shoal_tracker::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        announce_interval: Duration::from_secs(2),
        // The digest service vouches for segments of this origin only.
        origins: vec![origin.to_owned()],
        origin_schemes: vec![format!("{origin}=http")],
        ..Default::default()
    })
    .await
    .unwrap()
}

const UPLOADED: &str = "shoal_edge_uploaded_bytes_total";
const P2P: &str = "shoal_edge_bytes_total{source=\"p2p\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn excluded_neighbour_is_never_downloaded_from() {
    let dir = tempfile::tempdir().unwrap();
    let ladder = encode_vod_ladder(dir.path()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    let origin = nginx.host_port();
    let tracker = tracker_for(&origin).await;
    let t = tracker.url();
    let path = VodLadder::TS;

    // Two holders of the whole rendition: `near` (127.0.0.1) plays first and is done before
    // `far` (127.0.0.2) plays, so `far` has uploaded nothing yet.
    let near = edge_on(&origin, &t, [127, 0, 0, 1], &[]);
    play(&RecordingRelay::start(near.addr).unwrap(), &origin, path).await;
    let far = edge_on(&origin, &t, [127, 0, 0, 2], &[]);
    play(&RecordingRelay::start(far.addr).unwrap(), &origin, path).await;
    assert_eq!(sum(&far.metrics().await, UPLOADED), 0.0);

    // A viewer that excludes 127.0.0.2 gets peer bytes, all from `near`.
    let viewer = edge_on(&origin, &t, [127, 0, 0, 1], &["--exclude", "127.0.0.2/32"]);
    let relay = RecordingRelay::start(viewer.addr).unwrap();
    play(&relay, &origin, path).await;
    assert_identical_media(&relay, &nginx, 10);
    let m = viewer.metrics().await;
    assert!(sum(&m, P2P) > 0.0, "the viewer got nothing from peers");
    assert_eq!(
        sum(&far.metrics().await, UPLOADED),
        0.0,
        "the excluded neighbour served the viewer"
    );
    assert!(
        sum(&m, "shoal_edge_neighbours_excluded_total") >= 1.0,
        "the tracker never offered the excluded neighbour"
    );
    assert!(sum(&near.metrics().await, UPLOADED) > 0.0);

    // Control: without the exclusion, and with the other holders gone, the same viewer's
    // neighbour on 127.0.0.2 does serve. So the zero above was the exclusion's doing.
    drop(viewer);
    drop(near);
    let other = edge_on(&origin, &t, [127, 0, 0, 1], &[]);
    let relay = RecordingRelay::start(other.addr).unwrap();
    play(&relay, &origin, path).await;
    assert_identical_media(&relay, &nginx, 10);
    assert!(
        sum(&far.metrics().await, UPLOADED) > 0.0,
        "the neighbour on 127.0.0.2 was unusable even without exclusion"
    );
    drop(ladder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn download_cap_bounds_peer_bytes_and_origin_fills_in() {
    const CAP_BYTES_PER_SEC: f64 = 8_000.0; // 64kbit
    const BURST: f64 = 16.0 * 1024.0; // the bucket's floor; 64kbit/8 is less
    let dir = tempfile::tempdir().unwrap();
    let ladder = encode_vod_ladder(dir.path()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    let origin = nginx.host_port();
    let tracker = tracker_for(&origin).await;
    let t = tracker.url();
    let path = VodLadder::FMP4;

    let seeder = edge_on(&origin, &t, [127, 0, 0, 1], &[]);
    play(&RecordingRelay::start(seeder.addr).unwrap(), &origin, path).await;

    // The rendition is far larger than what the cap lets through while it plays, so an
    // uncapped viewer would read well past the bound below (its peer served most bytes in
    // the VOD test).
    let started = Instant::now();
    let capped = edge_on(
        &origin,
        &t,
        [127, 0, 0, 1],
        &["--download-limit", "64kbit", "--p2p-budget", "1s"],
    );
    let relay = RecordingRelay::start(capped.addr).unwrap();
    play(&relay, &origin, path).await;
    assert_identical_media(&relay, &nginx, 10);
    let m = capped.metrics().await;
    let elapsed = started.elapsed().as_secs_f64();
    let received = sum(&m, "shoal_edge_peer_received_bytes_total");
    let cdn = sum(&m, "shoal_edge_bytes_total{source=\"cdn\"}");
    eprintln!("capped viewer: {received} B from peers, {cdn} B from the origin in {elapsed:.1} s");
    assert!(received > 0.0, "the capped viewer never read from a peer");
    assert!(
        received <= CAP_BYTES_PER_SEC * elapsed + BURST,
        "{received} B from peers in {elapsed:.1} s exceeds the cap"
    );
    assert!(cdn > 0.0, "the origin did not fill in");
    drop(ladder);
}

#[test]
fn exclusions_and_caps_are_read_from_flags_env_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(
        &file,
        "origins = [\"cdn.example\"]\nexclude = [\"10.0.0.0/8\"]\nmax_downloads = 3\n",
    )
    .unwrap();
    let printed = printed_config(
        Command::new(env!("CARGO_BIN_EXE_shoal-edge"))
            .arg("--config")
            .arg(&file)
            .args(["--exclude", "192.0.2.7,2001:db8::/32", "--print-config"])
            .env("SHOAL_EDGE_DOWNLOAD_LIMIT", "2Mbit"),
    );
    let exclude: Vec<_> = printed["exclude"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(exclude, ["192.0.2.7/32", "2001:db8::/32"], "flag wins");
    assert_eq!(printed["download_limit"].as_str(), Some("2000000bit"));
    assert_eq!(printed["max_downloads"].as_integer(), Some(3));

    let out = Command::new(env!("CARGO_BIN_EXE_shoal-edge"))
        .args(["--origin", "cdn.example", "--exclude", "10.0.0.0/40"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CIDR"));
}
