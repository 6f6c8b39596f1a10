//! The command line as operators use it: file < env < flags, readable errors, SIGTERM.

use std::process::Command;
use std::time::Duration;

fn edge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal-edge"))
}

#[test]
fn flags_beat_env_which_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(
        &file,
        "origins = [\"file.example\"]\nmax_peers = 7\ncache_size = \"64MiB\"\np2p_budget = \"3s\"\n",
    )
    .unwrap();
    let out = edge()
        .arg("--config")
        .arg(&file)
        .args(["--max-peers", "9", "--print-config"])
        .env("SHOAL_EDGE_CACHE_SIZE", "32MiB")
        .env("SHOAL_EDGE_UPLOAD_LIMIT", "4Mbit")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(printed["origins"][0].as_str(), Some("file.example"));
    assert_eq!(printed["max_peers"].as_integer(), Some(9), "flag wins");
    assert_eq!(
        printed["cache_size"].as_str(),
        Some("32.0 MiB"),
        "env beats file"
    );
    assert_eq!(printed["upload_limit"].as_str(), Some("4000000bit"));
    assert_eq!(
        printed["p2p_budget"].as_str(),
        Some("3s"),
        "file beats default"
    );
}

/// Every setting, the scheduler's and the log format too, is read from the file, the
/// environment and flags alike, and `--print-config` writes a file `--config` reads back.
#[test]
fn every_setting_is_read_from_file_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(
        &file,
        "origins = [\"o.example\"]\nstall_timeout = \"2s\"\norigin_seeders = 3\n\
         vod_readahead = 6\nswarm_idle = \"2m\"\nmin_peer_time = \"300ms\"\n\
         max_segment_size = \"32MiB\"\nmax_manifest_size = \"4MiB\"\nlog_format = \"json\"\n",
    )
    .unwrap();
    let print = |env: &[(&str, &str)], flags: &[&str]| -> toml::Table {
        let mut cmd = edge();
        cmd.arg("--config")
            .arg(&file)
            .args(flags)
            .arg("--print-config");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap()
    };
    let from_file = print(&[], &[]);
    for (key, want) in [
        ("stall_timeout", "2s"),
        ("swarm_idle", "2m"),
        ("min_peer_time", "300ms"),
        ("max_segment_size", "32.0 MiB"),
        ("max_manifest_size", "4.0 MiB"),
        ("log_format", "json"),
    ] {
        assert_eq!(from_file[key].as_str(), Some(want), "{key} from the file");
    }
    assert_eq!(from_file["origin_seeders"].as_integer(), Some(3));
    assert_eq!(from_file["vod_readahead"].as_integer(), Some(6));

    let env = [
        ("SHOAL_EDGE_STALL_TIMEOUT", "3s"),
        ("SHOAL_EDGE_ORIGIN_SEEDERS", "4"),
        ("SHOAL_EDGE_VOD_READAHEAD", "7"),
        ("SHOAL_EDGE_SWARM_IDLE", "90s"),
        ("SHOAL_EDGE_MIN_PEER_TIME", "200ms"),
        ("SHOAL_EDGE_MAX_SEGMENT_SIZE", "16MiB"),
        ("SHOAL_EDGE_MAX_MANIFEST_SIZE", "2MiB"),
        ("SHOAL_EDGE_LOG_FORMAT", "text"),
    ];
    let from_env = print(&env, &[]);
    assert_eq!(from_env["stall_timeout"].as_str(), Some("3s"));
    assert_eq!(from_env["origin_seeders"].as_integer(), Some(4));
    assert_eq!(from_env["vod_readahead"].as_integer(), Some(7));
    assert_eq!(from_env["swarm_idle"].as_str(), Some("1m 30s"));
    assert_eq!(from_env["min_peer_time"].as_str(), Some("200ms"));
    assert_eq!(from_env["max_segment_size"].as_str(), Some("16.0 MiB"));
    assert_eq!(from_env["max_manifest_size"].as_str(), Some("2.0 MiB"));
    assert_eq!(from_env["log_format"].as_str(), Some("text"));

    let from_flags = print(
        &env,
        &[
            "--stall-timeout",
            "4s",
            "--origin-seeders",
            "5",
            "--vod-readahead",
            "8",
            "--swarm-idle",
            "3m",
            "--min-peer-time",
            "100ms",
            "--max-segment-size",
            "8MiB",
            "--max-manifest-size",
            "1MiB",
            "--log-format",
            "json",
            "--download-only",
        ],
    );
    assert_eq!(from_flags["download_only"].as_bool(), Some(true));
    assert_eq!(from_env["download_only"].as_bool(), Some(false));
    assert_eq!(from_flags["stall_timeout"].as_str(), Some("4s"));
    assert_eq!(from_flags["origin_seeders"].as_integer(), Some(5));
    assert_eq!(from_flags["vod_readahead"].as_integer(), Some(8));
    assert_eq!(from_flags["swarm_idle"].as_str(), Some("3m"));
    assert_eq!(from_flags["min_peer_time"].as_str(), Some("100ms"));
    assert_eq!(from_flags["max_segment_size"].as_str(), Some("8.0 MiB"));
    assert_eq!(from_flags["max_manifest_size"].as_str(), Some("1.0 MiB"));
    assert_eq!(from_flags["log_format"].as_str(), Some("json"));

    // What --print-config wrote is a file --config reads back to the same settings.
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, toml::to_string(&from_flags).unwrap()).unwrap();
    let out = edge()
        .arg("--config")
        .arg(&again)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(back, from_flags);

    // A wrong log format in the file says what to write.
    std::fs::write(&file, "origins = [\"o.example\"]\nlog_format = \"xml\"\n").unwrap();
    let out = edge()
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log_format must be \"text\" or \"json\""),
        "{err}"
    );
}

#[test]
fn the_tracker_ca_is_set_by_file_env_or_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(
        &file,
        "origins = [\"o.example\"]\ntracker = \"https://t.example\"\ntracker_ca = \"/etc/shoal/file-ca.pem\"\n",
    )
    .unwrap();
    let printed = |env: Option<&str>, flag: Option<&str>| {
        let mut cmd = edge();
        cmd.arg("--config").arg(&file).arg("--print-config");
        if let Some(v) = env {
            cmd.env("SHOAL_EDGE_TRACKER_CA", v);
        }
        if let Some(v) = flag {
            cmd.args(["--tracker-ca", v]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t: toml::Table = toml::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
        t["tracker_ca"].as_str().unwrap().to_owned()
    };
    assert_eq!(printed(None, None), "/etc/shoal/file-ca.pem");
    assert_eq!(
        printed(Some("/etc/shoal/env-ca.pem"), None),
        "/etc/shoal/env-ca.pem"
    );
    assert_eq!(
        printed(
            Some("/etc/shoal/env-ca.pem"),
            Some("/etc/shoal/flag-ca.pem")
        ),
        "/etc/shoal/flag-ca.pem"
    );
}

#[test]
fn mistakes_get_errors_that_say_what_to_do() {
    let out = edge().args(["--listen", "127.0.0.1:0"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--origin"), "missing origin explained: {err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(&file, "origns = [\"typo\"]\n").unwrap();
    let out = edge().arg("--config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("origns"), "unknown key named: {err}");

    let out = edge()
        .args(["--origin", "a.example", "--upload-limit", "fast"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Mbit"));
}

#[test]
fn sigterm_stops_the_proxy_cleanly() {
    let port = shoal_testkit::free_port();
    let child = edge()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--origin", "cdn.example", "--peer-listen", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    shoal_testkit::wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(20)).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    let status = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("still running 15 s after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}
