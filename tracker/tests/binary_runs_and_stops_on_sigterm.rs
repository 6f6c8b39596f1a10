//! The compiled `shoal-tracker` binary: configuration from flags and env, clean SIGTERM.

use shoal_testkit::{free_port, wait_for_port, ChildGuard};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_shoal-tracker");

#[tokio::test]
async fn serves_with_env_config_and_exits_cleanly_on_sigterm() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let child = Command::new(BIN)
        .args(["--listen", &addr.to_string()])
        .env("SHOAL_TRACKER_ANNOUNCE_INTERVAL", "7s")
        .env("SHOAL_TRACKER_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    wait_for_port(addr, Duration::from_secs(20)).unwrap();

    let body =
        serde_json::json!({"proto": 1, "peer_id": "p", "swarm_id": "s", "client_version": "t"});
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/v1/announce"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["interval_secs"], 7, "{r}");

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut logs).unwrap();
    assert!(logs.contains("shutting down"), "logs:\n{logs}");
    assert!(
        logs.lines().all(|l| l.starts_with('{')),
        "json logs:\n{logs}"
    );
}

#[test]
fn print_config_emits_a_file_the_tracker_reads_back() {
    let out = Command::new(BIN)
        .args([
            "--print-config",
            "--store",
            "redis://127.0.0.1:6379",
            "--origin",
            "a.example,b.example",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let c = shoal_tracker::config::Config::from_toml(&text).unwrap();
    assert_eq!(c.origins, ["a.example", "b.example"]);
    assert_eq!(c.store.to_string(), "redis://127.0.0.1:6379");

    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--listen",
        "--store",
        "--origin",
        "--announce-interval",
        "SHOAL_TRACKER_STORE",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn a_bad_flag_is_refused_with_a_reason() {
    let out = Command::new(BIN)
        .args(["--store", "postgres://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("redis://"), "{err}");
}
