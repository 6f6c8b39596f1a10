//! Real `shoal-edge` processes announcing to a tracker that serves HTTPS with a private CA's
//! certificate: with `--tracker-ca` they join the swarm, without it the proxy says the
//! certificate is not trusted and still plays from the origin.

mod support;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use shoal_testkit::{free_port, wait_for_port, ChildGuard, Nginx};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Edge;

const PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2.0,\nseg0.ts\n#EXTINF:2.0,\nseg1.ts\n\
#EXT-X-ENDLIST\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_with_the_tracker_ca_join_and_one_without_it_says_why() {
    let dir = tempfile::tempdir().unwrap();
    // A private CA and the tracker's certificate for 127.0.0.1.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Provider CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let (ca_file, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();

    let media = dir.path().join("media");
    std::fs::create_dir_all(media.join("v")).unwrap();
    std::fs::write(media.join("v/stream.m3u8"), PLAYLIST).unwrap();
    for i in 0..2u8 {
        std::fs::write(media.join(format!("v/seg{i}.ts")), vec![i; 50_000]).unwrap();
    }
    let nginx = Nginx::start(&media).unwrap();
    let origin = nginx.host_port();

    let tracker = shoal_tracker::spawn(shoal_tracker::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        origins: vec![origin.clone()],
        origin_schemes: vec![format!("{origin}=http")],
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..Default::default()
    })
    .await
    .unwrap();
    let tracker_url = tracker.url();
    assert!(tracker_url.starts_with("https://"), "{tracker_url}");
    let ca_arg = ca_file.to_str().unwrap();

    let edges: Vec<Edge> = (0..2)
        .map(|_| Edge::start(&origin, Some(&tracker_url), &["--tracker-ca", ca_arg]))
        .collect();
    let http = reqwest::Client::new();
    for e in &edges {
        let r = http
            .get(e.url(&origin, "/v/stream.m3u8"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Both joined the swarm over HTTPS.
    let metrics = format!("{tracker_url}/metrics");
    let ca_client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let joined =
        shoal_testkit::poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let (c, url) = (ca_client.clone(), metrics.clone());
            async move {
                let text = c.get(url).send().await.ok()?.text().await.ok()?;
                let peers = shoal_testkit::metrics_text::parse(&text)
                    .get("shoal_tracker_peers")
                    .copied()?;
                (peers == 2.0).then_some(())
            }
        })
        .await;
    assert!(joined.is_some(), "two edges announced over HTTPS");

    // An edge without the CA: the tracker's certificate is not trusted, and it says so; the
    // player still gets the playlist and segments, from the origin.
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_shoal-edge"))
            .args([
                "--listen",
                &addr.to_string(),
                "--peer-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--origin",
                &origin,
                "--origin-scheme",
                &format!("{origin}=http"),
            ])
            .args(["--tracker", &tracker_url])
            .env("RUST_LOG", "warn,shoal=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let stderr = child.0.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
    }
    wait_for_port(addr, Duration::from_secs(20)).unwrap();
    let base = format!("http://{addr}/{origin}/v/");
    let r = http.get(format!("{base}stream.m3u8")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seg = http.get(format!("{base}seg0.ts")).send().await.unwrap();
    assert_eq!(seg.status(), 200);
    assert_eq!(seg.bytes().await.unwrap().len(), 50_000);
    let said =
        shoal_testkit::poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
            let hit = lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains("TLS certificate is not trusted"))
                .cloned();
            async move { hit }
        })
        .await;
    let said = said.unwrap_or_else(|| {
        panic!(
            "no 'not trusted' line in the edge's log:\n{}",
            lines.lock().unwrap().join("\n")
        )
    });
    assert!(said.contains("--tracker-ca"), "{said}");
    drop(edges);
}
