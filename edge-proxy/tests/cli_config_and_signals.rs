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
