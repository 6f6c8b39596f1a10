//! TLS on the tracker's own listener: a client that trusts the tracker's CA announces (over
//! HTTP/2 or HTTP/1.1, by ALPN), one that does not is told why; SIGHUP makes new handshakes
//! see a renewed certificate without dropping open connections, and a bad file on SIGHUP
//! keeps the old certificate; `--healthcheck` speaks HTTPS.

mod common;

use common::tls::TestCa;
use shoal::tracker_client::{TrackerClient, TrackerError};
use shoal_proto::AnnounceRequest;
use shoal_testkit::{free_port, wait_for_port, ChildGuard};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-tracker");

fn announce(peer: &str) -> AnnounceRequest {
    serde_json::from_value(common::announce_body(peer, "tls-swarm", None)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_the_ca_announces_and_one_without_it_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Shoal test CA");
    let ca_file = ca.write(dir.path(), "ca.pem");
    let server = ca.issue(dir.path(), "tracker");
    let tracker = shoal_tracker::spawn(shoal_tracker::config::Config {
        tls_cert: Some(server.cert.clone()),
        tls_key: Some(server.key.clone()),
        ..common::config(
            shoal_tracker::config::StoreSpec::Memory,
            Duration::from_secs(20),
        )
    })
    .await
    .unwrap();
    let url = tracker.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // The SDK's client with the CA configured: announces, twice (the second with its key).
    let client = TrackerClient::with_ca(&url, Some(&ca_file)).unwrap();
    let first = client.announce(&announce("a")).await.unwrap();
    let mut again = announce("a");
    again.peer_key = Some(first.peer_key.clone());
    client.announce(&again).await.unwrap();
    let b = client.announce(&announce("b")).await.unwrap();
    assert_eq!(b.neighbours.len(), 1, "b sees a: {b:?}");

    // Without the CA (system and Mozilla roots only): refused, and the error says what to do.
    let e = TrackerClient::new(&url)
        .unwrap()
        .announce(&announce("c"))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Untrusted(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("not trusted") && text.contains("--tracker-ca"),
        "{text}"
    );
    // Another CA is no better.
    let other = TestCa::new("Another CA");
    let other_file = other.write(dir.path(), "other.pem");
    let e = TrackerClient::with_ca(&url, Some(&other_file))
        .unwrap()
        .announce(&announce("c"))
        .await
        .unwrap_err();
    assert!(matches!(e, TrackerError::Untrusted(_)), "{e:?}");
    // A CA file that is missing or not PEM is refused when the client is made.
    let e = TrackerClient::with_ca(&url, Some(&dir.path().join("missing.pem"))).unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let e = TrackerClient::with_ca(&url, Some(&dir.path().join("empty.pem"))).unwrap_err();
    assert!(e.to_string().contains("CERTIFICATE"), "{e}");

    // ALPN: HTTP/2 when the client offers it, HTTP/1.1 otherwise.
    let r = ca
        .client()
        .get(format!("{url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let h1 = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);

    // Plain HTTP is not served on a TLS listener.
    let plain = format!("http://{}/healthz", tracker.addr());
    assert!(reqwest::get(&plain).await.is_err());

    // Shut down, the port is free at once: a new tracker takes it (a restart in place).
    let addr = tracker.addr();
    tracker.shutdown().await.unwrap();
    let again = shoal_tracker::spawn(shoal_tracker::config::Config {
        listen: addr,
        tls_cert: Some(server.cert.clone()),
        tls_key: Some(server.key.clone()),
        ..Default::default()
    })
    .await
    .expect("the port was released by the shutdown");
    let r = ca
        .client()
        .get(format!("{}/healthz", again.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_with_an_unreadable_tracker_ca_does_not_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = shoal::NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        peer_listen: "127.0.0.1:0".parse().unwrap(),
        origins: vec!["127.0.0.1:1".into()],
        tracker: Some("https://127.0.0.1:1".into()),
        tracker_ca: Some(dir.path().join("no-such-ca.pem")),
        ..Default::default()
    };
    let Err(e) = shoal::Node::start(config).await else {
        panic!("the node started with a tracker CA file that does not exist")
    };
    let text = e.to_string();
    assert!(
        text.contains("tracker CA") && text.contains("no-such-ca.pem"),
        "{text}"
    );
}

#[test]
fn the_tracker_refuses_a_half_or_bad_tls_setting_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Shoal test CA");
    let good = ca.issue(dir.path(), "good");
    let other = ca.issue(dir.path(), "other");
    std::fs::write(dir.path().join("junk.pem"), "junk\n").unwrap();
    let junk = dir.path().join("junk.pem");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    for (args, says) in [
        (vec!["--tls-cert".to_owned(), p(&good.cert)], "tls_key"),
        (
            vec![
                "--tls-cert".into(),
                p(&junk),
                "--tls-key".into(),
                p(&good.key),
            ],
            "CERTIFICATE",
        ),
        (
            vec![
                "--tls-cert".into(),
                p(&good.cert),
                "--tls-key".into(),
                p(&junk),
            ],
            "private key",
        ),
        (
            vec![
                "--tls-cert".into(),
                p(&good.cert),
                "--tls-key".into(),
                p(&other.key),
            ],
            "cannot serve together",
        ),
    ] {
        let out = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// Collects a child's stderr lines as they come.
fn collect_lines(child: &mut std::process::Child) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

async fn wait_for_line(lines: &Mutex<Vec<String>>, needle: &str) -> String {
    let found =
        shoal_testkit::poll_until(Duration::from_secs(20), Duration::from_millis(50), || {
            let hit = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            async move { hit }
        })
        .await;
    found.unwrap_or_else(|| {
        panic!(
            "no log line with {needle:?} in:\n{}",
            lines.lock().unwrap().join("\n")
        )
    })
}

/// One HTTP/1.1 request on an open TLS connection; returns the status line.
async fn get_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    tls: &mut S,
    path: &str,
) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // A /healthz answer is small: read until its (short, JSON) body has arrived.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline, tls.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return head.lines().next().unwrap().to_owned();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_renewed_certificate_keeps_connections_and_survives_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Shoal test CA");
    let first = ca.issue(dir.path(), "first");
    let second = ca.issue(dir.path(), "second");
    // The files the tracker reads; renewed in place as certbot or cert-manager would.
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let args = [
        "--listen".to_owned(),
        addr.to_string(),
        "--tls-cert".into(),
        cert.to_str().unwrap().into(),
        "--tls-key".into(),
        key.to_str().unwrap().into(),
    ];
    let mut child = ChildGuard(
        Command::new(BIN)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = collect_lines(&mut child.0);
    wait_for_port(addr, Duration::from_secs(20)).unwrap();
    let pid = child.0.id().to_string();
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success())
    };

    // `--healthcheck` with the same flags asks over HTTPS.
    let health = Command::new(BIN)
        .args(&args)
        .arg("--healthcheck")
        .output()
        .unwrap();
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );

    let (mut open, seen) = ca.handshake(addr).await.unwrap();
    assert_eq!(seen, first.der, "the first certificate is served");
    assert!(get_on(&mut open, "/healthz").await.contains("200"));

    // Renewed files, then SIGHUP: new handshakes get the new certificate.
    std::fs::copy(&second.cert, &cert).unwrap();
    std::fs::copy(&second.key, &key).unwrap();
    hup();
    wait_for_line(&lines, "TLS certificate and key re-read").await;
    let (_, seen) = ca.handshake(addr).await.unwrap();
    assert_eq!(
        seen, second.der,
        "after SIGHUP the renewed certificate is served"
    );
    // The connection opened before the reload is still served.
    assert!(get_on(&mut open, "/healthz").await.contains("200"));

    // A broken file on the next SIGHUP: an error in the log, the renewed certificate stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    hup();
    let line = wait_for_line(&lines, "TLS certificate not re-read").await;
    assert!(line.contains("ERROR"), "{line}");
    let (mut fresh, seen) = ca.handshake(addr).await.unwrap();
    assert_eq!(seen, second.der, "a bad file keeps the certificate in use");
    assert!(get_on(&mut fresh, "/healthz").await.contains("200"));
    assert!(get_on(&mut open, "/healthz").await.contains("200"));
    // A key that is not the certificate's is refused the same way.
    std::fs::copy(&first.cert, &cert).unwrap();
    hup();
    shoal_testkit::poll_until(Duration::from_secs(20), Duration::from_millis(50), || {
        let n = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("TLS certificate not re-read"))
            .count();
        async move { (n >= 2).then_some(()) }
    })
    .await
    .expect("a second refusal in the log");
    let (_, seen) = ca.handshake(addr).await.unwrap();
    assert_eq!(seen, second.der);
    assert!(
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("cannot serve together")),
        "the mismatch is named:\n{}",
        lines.lock().unwrap().join("\n")
    );
    // Still running: SIGHUP did not end it.
    assert!(child.0.try_wait().unwrap().is_none());
}
