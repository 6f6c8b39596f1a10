//! A C program, compiled by gcc against `include/shoal.h` and `libshoal_ffi.a`, embeds a
//! node: a real tracker, nginx serving a live ffmpeg encode, and a second node (the SDK's
//! `Node`, in this process) in the same swarm. ffmpeg plays the C node's local URL for 30 s.
//!
//! What an app developer relies on: the URL plays, every segment byte equals the origin's,
//! bytes come from the neighbour, the stats and events say so, stop and free are clean, and
//! a bad call gets a code and a message instead of a crash.

mod support;

use serde_json::Value;
use shoal_ffi::ShoalStatus;
use shoal_testkit::{FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx, PlayerOpts, RecordingRelay};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;
use support::{compile, Program};
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_c_app_plays_a_live_stream_with_bytes_from_its_neighbour() {
    let dir = tempfile::tempdir().unwrap();
    let mut live = LiveHls::start(dir.path(), LiveHlsOpts::default()).unwrap();
    let nginx = Nginx::start(dir.path()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let driver = block_in_place(|| compile("driver", work.path(), &[]));
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();
    let origin = nginx.host_port();
    let tracker = shoal_tracker::spawn(shoal_tracker::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        announce_interval: Duration::from_secs(2),
        origins: vec![origin.clone()],
        origin_schemes: vec![format!("{origin}=http")],
        ..Default::default()
    })
    .await
    .unwrap();
    let manifest = nginx.url(LiveHls::MASTER);

    // The neighbour: a Rust node whose player is already watching.
    let neighbour = shoal::Node::start(shoal::NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        peer_listen: "127.0.0.1:0".parse().unwrap(),
        origins: vec![origin.clone()],
        origin_schemes: vec![format!("{origin}=http")],
        tracker: Some(tracker.url()),
        ..Default::default()
    })
    .await
    .unwrap();
    let neighbour_url = neighbour
        .player_url(&url::Url::parse(&manifest).unwrap())
        .unwrap();
    let mut neighbour_player =
        FfmpegPlayer::start_with(&neighbour_url, PlayerOpts::new(Duration::from_secs(45))).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The C app, configured with the keys of shoal-edge's configuration file.
    let config = work.path().join("shoal.toml");
    std::fs::write(
        &config,
        format!(
            "origins = [\"{origin}\"]\norigin_schemes = [\"{origin}=http\"]\n\
             tracker = \"{}\"\npeer_listen = \"127.0.0.1:0\"\ncache_size = \"32MiB\"\n",
            tracker.url()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(&driver);
    cmd.arg("play").arg(&config).arg(&manifest);
    let mut app = Program::start(cmd);
    let local = block_in_place(|| app.expect("URL", Duration::from_secs(30)));
    let local = url::Url::parse(&local).unwrap();
    assert_eq!(local.host_str(), Some("127.0.0.1"), "{local}");
    assert_eq!(local.path(), format!("/{origin}{}", LiveHls::MASTER));
    let front = local.socket_addrs(|| None).unwrap()[0];

    // ffmpeg plays the local URL through a relay that hashes what it receives.
    let relay = RecordingRelay::start(front).unwrap();
    let mut player = FfmpegPlayer::start_with(
        &relay.url(local.path()),
        PlayerOpts::new(Duration::from_secs(30)),
    )
    .unwrap();
    let outcome = player.wait(Duration::from_secs(120)).await.unwrap();
    assert!(outcome.success(), "the player failed:\n{}", outcome.stderr);
    assert!(
        outcome.error_lines().is_empty(),
        "the player reported errors: {:?}",
        outcome.error_lines()
    );

    // Every segment the player got equals the origin's file.
    let segments: Vec<_> = relay
        .records()
        .into_iter()
        .filter(|r| r.uri.contains(".ts"))
        .collect();
    assert!(
        segments.len() >= 12,
        "only {} segments in 30 s",
        segments.len()
    );
    for r in &segments {
        assert!(
            r.status == 200 || r.status == 206,
            "{}: {}",
            r.uri,
            r.status
        );
        assert!(r.complete, "{} cut short", r.uri);
        assert!(
            r.matches_file(&live.archived(&r.uri)).unwrap(),
            "{} differs from the origin",
            r.uri
        );
    }
    let received: u64 = segments.iter().map(|r| r.body_len).sum();

    // The C app's stats: bytes from the neighbour, and the neighbour counted as a peer.
    app.send("stats");
    let stats: Value = serde_json::from_str(&block_in_place(|| {
        app.expect("STATS", Duration::from_secs(10))
    }))
    .unwrap();
    eprintln!("C node stats: {stats}");
    let bytes = |s: &Value, k: &str| s["bytes"][k].as_u64().unwrap();
    let (p2p, cdn) = (bytes(&stats, "p2p"), bytes(&stats, "cdn"));
    assert_eq!(stats["running"], Value::Bool(true));
    assert!(p2p > 0, "no byte came from the neighbour: {stats}");
    assert!(
        p2p + cdn >= received,
        "the node counted {} bytes delivered, the player received {received} in segments",
        p2p + cdn
    );
    assert!(stats["peers"].as_i64().unwrap() >= 1, "{stats}");
    let offload = stats["offload"].as_f64().unwrap();
    assert!(
        (offload - p2p as f64 / (p2p + cdn) as f64).abs() < 1e-9,
        "{stats}"
    );
    assert!(
        neighbour.stats().uploaded_bytes > 0,
        "the neighbour uploaded nothing"
    );

    // The events the C callback printed.
    let events: Vec<&String> = app
        .seen
        .iter()
        .filter(|l| l.starts_with("EVENT "))
        .collect();
    for kind in ["node_started", "swarm_joined", "peer_connected"] {
        assert!(
            events
                .iter()
                .any(|e| e.starts_with(&format!("EVENT {kind} {{"))),
            "no {kind} event: {events:?}"
        );
    }

    // From inside its callback the app may read stats, but a stop (which would wait for the
    // very thread the callback runs on) is refused, and the node plays on.
    let reentry = |what: &str| {
        app.seen
            .iter()
            .find_map(|l| l.strip_prefix(&format!("REENTRY {what} ")))
            .unwrap_or_else(|| panic!("no reentry {what} line: {:?}", app.seen))
            .to_string()
    };
    assert_eq!(reentry("stats"), format!("{} json", ShoalStatus::Ok as i32));
    let stop = reentry("stop");
    assert!(
        stop.starts_with(&format!("{} ", ShoalStatus::WrongThread as i32))
            && stop.contains("inside a Shoal callback"),
        "{stop}"
    );

    // A graceful stop: the last run's totals stay readable, the log callback saw lines, and
    // free returns.
    app.send("stop");
    block_in_place(|| app.expect("STOPPED", Duration::from_secs(20)));
    let last: Value = serde_json::from_str(&block_in_place(|| {
        app.expect("STATS", Duration::from_secs(5))
    }))
    .unwrap();
    assert_eq!(last["running"], Value::Bool(false));
    assert!(bytes(&last, "p2p") >= p2p, "{last}");
    let log_lines: u64 = block_in_place(|| app.expect("LOG_LINES", Duration::from_secs(5)))
        .parse()
        .unwrap();
    assert!(log_lines > 0, "the log callback got no line");
    block_in_place(|| app.expect("FREED", Duration::from_secs(10)));
    assert_eq!(
        block_in_place(|| app.wait(Duration::from_secs(10))),
        Some(0)
    );
    assert!(
        app.seen.iter().any(|l| l.starts_with("EVENT node_stopped")),
        "no node_stopped event: {:?}",
        app.seen
    );

    drop(neighbour_player.wait(Duration::from_secs(60)).await);
    neighbour.shutdown().await;
    drop(live);
}

#[test]
fn bad_calls_get_a_code_and_a_message_and_no_crash() {
    let work = tempfile::tempdir().unwrap();
    let driver = compile("driver", work.path(), &[]);
    // A port that is taken for as long as the program runs.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let mut cmd = Command::new(&driver);
    cmd.args(["errors", "127.0.0.1:9", &busy_addr]);
    let mut app = Program::start(cmd);
    app.expect("DONE", Duration::from_secs(60));
    assert_eq!(app.wait(Duration::from_secs(10)), Some(0), "{:?}", app.seen);
    drop(busy);

    let results: HashMap<String, (i32, String)> = app
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let name = parts.next().unwrap().to_string();
            let code = parts.next().unwrap().parse().unwrap();
            (name, (code, parts.next().unwrap_or_default().to_string()))
        })
        .collect();
    let check = |case: &str, status: ShoalStatus, words: &[&str]| {
        let (code, message) = results
            .get(case)
            .unwrap_or_else(|| panic!("no result for {case}: {:?}", app.seen));
        assert_eq!(*code, status as i32, "{case}: {message}");
        for w in words {
            assert!(message.contains(w), "{case}: `{message}` lacks `{w}`");
        }
    };
    check(
        "misspelt_key",
        ShoalStatus::Config,
        &["cache_sise", "unknown field"],
    );
    check("bad_value", ShoalStatus::Config, &["cache_size", "lots"]);
    check(
        "no_origin",
        ShoalStatus::Config,
        &["no origin is allowed", "origins = ["],
    );
    check("not_toml", ShoalStatus::Config, &["line 1"]);
    check(
        "null_config",
        ShoalStatus::InvalidArgument,
        &["config_toml is NULL"],
    );
    check("null_out", ShoalStatus::InvalidArgument, &["out is NULL"]);
    check(
        "null_node_start",
        ShoalStatus::InvalidArgument,
        &["node is NULL"],
    );
    check(
        "null_node_stats",
        ShoalStatus::InvalidArgument,
        &["node is NULL"],
    );
    check(
        "bad_filter",
        ShoalStatus::InvalidArgument,
        &["log filter `shoal=loud`"],
    );
    check(
        "url_before_start",
        ShoalStatus::NotRunning,
        &["shoal_node_start"],
    );
    check(
        "stats_before_start",
        ShoalStatus::NotRunning,
        &["not running"],
    );
    check(
        "start_twice",
        ShoalStatus::AlreadyRunning,
        &["already running"],
    );
    check(
        "other_origin",
        ShoalStatus::OriginNotAllowed,
        &["elsewhere.example", "origins"],
    );
    check("not_a_url", ShoalStatus::InvalidArgument, &["not a URL"]);
    check("message_cleared_by_success", ShoalStatus::Ok, &[]);
    assert_eq!(results["message_cleared_by_success"].1, "");
    check("listen_taken", ShoalStatus::StartFailed, &[&busy_addr]);
    let version = app.seen.iter().find_map(|l| l.strip_prefix("VERSION "));
    assert_eq!(version, Some(env!("CARGO_PKG_VERSION")));
}
