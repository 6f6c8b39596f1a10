//! Viewers in homes behind real NAT routers share a live stream through `shoal-edge` with its
//! default peer settings: the NAT lab (`testkit::netlab`) builds an internet with an nginx
//! origin serving a live ffmpeg encode, the tracker and the provider's relay beside it, and
//! homes of every kind, each with a real `shoal-edge` and an ffmpeg player.
//!
//! Each pair of viewers watches its own copy of the stream (one swarm per pair), so what a
//! pair does is its own doing. What theory says, and what is asserted:
//! - one LAN, two public hosts, two endpoint-independent NATs, a UPnP home and an EIM home:
//!   the pair connects directly, by the path expected (`lan`, `direct`, `punched`,
//!   `mapped`/`punched`), and peer bytes reach the players;
//! - two symmetric NATs, and a UDP-blocked home with a public host: no direct path; the relay
//!   carries no media (the default), so both play from the CDN;
//! - in every case, every player plays to the end without an error, and every segment byte
//!   it got equals the origin's.
//!
//! Needs root (network namespaces, iptables) and miniupnpd. Under `CI=true` it runs or
//! fails; elsewhere it says why it skips. Every wait is bounded.

mod support;

use shoal_testkit::netlab::{Home, HomeKind, Host, NatLab, Netns};
use shoal_testkit::{
    metrics_text, ChildGuard, FfmpegPlayer, LiveHls, LiveHlsOpts, Nginx, PlayerOpts, RecordingRelay,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const EDGE: &str = env!("CARGO_BIN_EXE_shoal-edge");
const TRACKER_PORT: u16 = 7070;
const RELAY_HTTPS: u16 = 3443;
const RELAY_QUIC: u16 = 7842;
const ORIGIN_PORT: u16 = 8000;
/// Where each edge's player front listens, on its own host's loopback.
const FRONT: &str = "127.0.0.1:8080";
const PLAY: Duration = Duration::from_secs(30);

/// A tokio runtime whose worker threads live in `netns`: whatever it binds or dials is
/// inside the lab. Shut down in the background when dropped (the test's own runtime may not
/// block on it).
struct RuntimeIn(Option<tokio::runtime::Runtime>);

impl RuntimeIn {
    fn new(netns: &Netns) -> RuntimeIn {
        let rt = netns
            .enter(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
            })
            .unwrap();
        RuntimeIn(Some(rt))
    }

    /// Runs `f` there and waits for it.
    async fn run<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.as_ref().unwrap().spawn(f).await.unwrap()
    }
}

impl Drop for RuntimeIn {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// One viewer: its edge process (in its host's namespace), the recording relay its player
/// goes through (in the same namespace), and the player.
struct Viewer {
    label: String,
    host: Host,
    _edge: ChildGuard,
    recorder: RecordingRelay,
    player: Option<FfmpegPlayer>,
    log: PathBuf,
}

impl Viewer {
    fn start(label: &str, host: &Host, origin: &str, provider: &[String], dir: &Path) -> Viewer {
        let log = dir.join(format!("{label}.log"));
        let mut cmd = host.netns.command(EDGE);
        cmd.args(["--listen", FRONT])
            .args(["--origin", origin])
            .args(["--origin-scheme", &format!("{origin}=http")])
            .args(provider)
            .env("RUST_LOG", "warn,shoal=debug,shoal_edge=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let edge = ChildGuard(cmd.spawn().expect("starting shoal-edge"));
        let front = FRONT.parse().unwrap();
        host.netns
            .enter(|| {
                shoal_testkit::wait_for_port(front, Duration::from_secs(20))
                    .map_err(std::io::Error::other)
            })
            .unwrap_or_else(|e| panic!("{label}: shoal-edge does not listen: {e}"));
        let recorder = host
            .netns
            .enter(|| RecordingRelay::start(front).map_err(std::io::Error::other))
            .unwrap();
        Viewer {
            label: label.into(),
            host: host.clone(),
            _edge: edge,
            recorder,
            player: None,
            log,
        }
    }

    fn play(&mut self, path: &str) {
        let url = self.recorder.url(path);
        let player = self
            .host
            .netns
            .enter(|| {
                FfmpegPlayer::start_with(&url, PlayerOpts::new(PLAY)).map_err(std::io::Error::other)
            })
            .unwrap();
        self.player = Some(player);
    }

    /// `/metrics` of the edge, read from inside its namespace.
    fn metrics(&self) -> HashMap<String, f64> {
        let text = self
            .host
            .netns
            .enter(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    reqwest::get(format!("http://{FRONT}/metrics"))
                        .await
                        .map_err(std::io::Error::other)?
                        .text()
                        .await
                        .map_err(std::io::Error::other)
                })
            })
            .unwrap();
        metrics_text::parse(&text)
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Connection attempts by `(path, result)` from an edge's metrics.
fn connections(m: &HashMap<String, f64>) -> HashMap<(String, String), f64> {
    let mut out = HashMap::new();
    for (series, v) in m {
        let Some(labels) = series.strip_prefix("shoal_edge_peer_connections_total{") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches(['"', '}']).to_string())
                .unwrap_or_default()
        };
        *out.entry((label("path"), label("result"))).or_default() += v;
    }
    out
}

/// One pair of viewers and what theory says of it.
struct Pair {
    label: &'static str,
    a: Host,
    b: Host,
    /// Paths either side may report for a direct connection; empty: no direct path exists.
    direct: &'static [&'static str],
    /// The edges are given the provider's relay (without it: tracker and origin only).
    relay: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn homes_behind_nat_routers_share_a_live_stream() {
    let Some(mut lab) = NatLab::for_test("the NAT lab edge test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();

    // The internet: the origin (nginx + a live encode), and the tracker with the relay.
    let origin_host = lab.add_server("origin").unwrap();
    let tracker_host = lab.add_server("tracker").unwrap();
    let mut live = LiveHls::start(&www, LiveHlsOpts::default()).unwrap();
    let nginx = Nginx::start_in(&origin_host, ORIGIN_PORT, &www).unwrap();
    let origin = nginx.host_port();

    let pki = shoal_testkit::pki::LabCa::new(dir.path(), "Shoal NAT lab CA").unwrap();
    let leaf = pki.leaf_for(tracker_host.ip.into()).unwrap();
    let (ca, cert, key) = (pki.ca_path(), leaf.cert, leaf.key);
    let services = RuntimeIn::new(&tracker_host.netns);
    let tracker = services
        .run(shoal_tracker::spawn(shoal_tracker::config::Config {
            listen: tracker_host.addr(TRACKER_PORT).into(),
            announce_interval: Duration::from_secs(2),
            origins: vec![origin.clone()],
            origin_schemes: vec![format!("{origin}=http")],
            ..Default::default()
        }))
        .await
        .unwrap();
    let relay = {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let config = shoal_transport::relay::RelayServerConfig {
            http_addr: tracker_host.addr(3340).into(),
            https_addr: tracker_host.addr(RELAY_HTTPS).into(),
            quic_addr: Some(tracker_host.addr(RELAY_QUIC).into()),
            cert_chain: CertificateDer::pem_file_iter(&cert)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
            key: PrivateKeyDer::from_pem_file(&key).unwrap(),
        };
        services
            .run(shoal_transport::relay::RelayServer::start(config))
            .await
            .unwrap()
    };
    // What a provider configures on every edge: its tracker and its relay (whose certificate
    // the lab CA signed). Nothing about addresses or ports.
    let provider: Vec<String> = [
        "--tracker",
        &format!("http://{}", tracker_host.addr(TRACKER_PORT)),
        "--relay",
        &format!("https://{}/", tracker_host.addr(RELAY_HTTPS)),
        "--relay-ca",
        ca.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let _ = &tracker;

    let h = |home: &Home, i: usize| home.hosts[i].clone();
    let lan = lab.add_home(HomeKind::SharedLan).unwrap();
    let lan_no_relay = lab.add_home(HomeKind::SharedLan).unwrap();
    let public0 = lab.add_home(HomeKind::Public).unwrap();
    let public1 = lab.add_home(HomeKind::Public).unwrap();
    let eim0 = lab.add_home(HomeKind::Eim).unwrap();
    let eim1 = lab.add_home(HomeKind::Eim).unwrap();
    let upnp = lab.add_home(HomeKind::Upnp).unwrap();
    let eim2 = lab.add_home(HomeKind::Eim).unwrap();
    let sym0 = lab.add_home(HomeKind::Symmetric).unwrap();
    let sym1 = lab.add_home(HomeKind::Symmetric).unwrap();
    let noudp = lab.add_home(HomeKind::UdpBlocked).unwrap();
    let public2 = lab.add_home(HomeKind::Public).unwrap();
    let pairs = [
        Pair {
            label: "lan-lan",
            a: h(&lan, 0),
            b: h(&lan, 1),
            direct: &["lan"],
            relay: true,
        },
        // The first row: one LAN, nothing configured but the tracker and the origin.
        Pair {
            label: "lan-lan-norelay",
            a: h(&lan_no_relay, 0),
            b: h(&lan_no_relay, 1),
            direct: &["lan"],
            relay: false,
        },
        Pair {
            label: "public-public",
            a: h(&public0, 0),
            b: h(&public1, 0),
            direct: &["direct"],
            relay: true,
        },
        Pair {
            label: "eim-eim",
            a: h(&eim0, 0),
            b: h(&eim1, 0),
            direct: &["punched"],
            relay: true,
        },
        Pair {
            label: "upnp-eim",
            a: h(&upnp, 0),
            b: h(&eim2, 0),
            direct: &["mapped", "punched"],
            relay: true,
        },
        Pair {
            label: "sym-sym",
            a: h(&sym0, 0),
            b: h(&sym1, 0),
            direct: &[],
            relay: true,
        },
        Pair {
            label: "noudp-public",
            a: h(&noudp, 0),
            b: h(&public2, 0),
            direct: &[],
            relay: true,
        },
    ];

    // One copy of the stream per pair: the same files under another path, so another swarm.
    for i in 0..pairs.len() {
        std::os::unix::fs::symlink("live", www.join(format!("pair{i}"))).unwrap();
    }
    live.wait_ready(3, Duration::from_secs(60)).await.unwrap();

    let mut viewers: Vec<(usize, Viewer)> = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        for (side, host) in [("a", &pair.a), ("b", &pair.b)] {
            let label = format!("{}-{side}", pair.label);
            let given = if pair.relay {
                &provider[..]
            } else {
                &provider[..2]
            };
            viewers.push((i, Viewer::start(&label, host, &origin, given, dir.path())));
        }
    }
    // Each pair's first viewer starts, the second follows a little later (as viewers do),
    // so it finds segments its neighbour already holds.
    for (i, v) in viewers.iter_mut().filter(|(_, v)| v.label.ends_with("-a")) {
        v.play(&format!("/{origin}/pair{i}/master.m3u8"));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (i, v) in viewers.iter_mut().filter(|(_, v)| v.label.ends_with("-b")) {
        v.play(&format!("/{origin}/pair{i}/master.m3u8"));
    }

    for (_, v) in viewers.iter_mut() {
        let o = v
            .player
            .as_mut()
            .unwrap()
            .wait(PLAY + Duration::from_secs(90))
            .await
            .unwrap();
        assert!(
            o.success() && o.error_lines().is_empty(),
            "{}: the player failed: {:?} {:?}\n{}\nedge log:\n{}",
            v.label,
            o.status,
            o.error_lines(),
            o.stderr,
            v.log_tail()
        );
    }

    // Every segment every player got equals the origin's.
    for (_, v) in &viewers {
        let segments: Vec<_> = v
            .recorder
            .records()
            .into_iter()
            .filter(|r| r.uri.contains(".ts") && (r.status == 200 || r.status == 206))
            .collect();
        assert!(
            segments.len() >= 10,
            "{}: only {} segments",
            v.label,
            segments.len()
        );
        for r in segments {
            assert!(r.complete, "{}: {} cut short", v.label, r.uri);
            assert!(
                r.matches_file(&live.archived(&r.uri)).unwrap(),
                "{}: {} differs from the origin",
                v.label,
                r.uri
            );
        }
    }

    println!(
        "{:<16} {:>10} {:>10}  connections (path/result: count)",
        "viewer", "p2p bytes", "cdn bytes"
    );
    let mut failures = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        let sides: Vec<&Viewer> = viewers
            .iter()
            .filter(|(j, _)| *j == i)
            .map(|(_, v)| v)
            .collect();
        let mut p2p_total = 0.0;
        for v in &sides {
            let m = v.metrics();
            let p2p = metrics_text::sum(&m, "shoal_edge_bytes_total{source=\"p2p\"}");
            let cdn = metrics_text::sum(&m, "shoal_edge_bytes_total{source=\"cdn\"}");
            p2p_total += p2p;
            let conns = connections(&m);
            let mut shown: Vec<String> = conns
                .iter()
                .map(|((p, r), n)| format!("{p}/{r}: {n}"))
                .collect();
            shown.sort();
            println!("{:<16} {p2p:>10} {cdn:>10}  {}", v.label, shown.join(", "));
            let direct_ok: f64 = conns
                .iter()
                .filter(|((p, r), _)| r == "ok" && pair.direct.contains(&p.as_str()))
                .map(|(_, n)| n)
                .sum();
            let any_ok: f64 = conns
                .iter()
                .filter(|((_, r), _)| r == "ok")
                .map(|(_, n)| n)
                .sum();
            if pair.direct.is_empty() {
                if any_ok > 0.0 || p2p > 0.0 {
                    failures.push(format!(
                        "{}: no direct path exists and the relay carries no media, yet it \
                         connected ({any_ok}) or got peer bytes ({p2p})",
                        v.label
                    ));
                }
                // A pair with no usable path is left alone for a minute after a failed try,
                // not retried at every announce.
                let tries: f64 = conns
                    .iter()
                    .filter(|((_, r), _)| r == "no_direct_path")
                    .map(|(_, n)| n)
                    .sum();
                if tries > 2.0 {
                    failures.push(format!(
                        "{}: {tries} tries of a pair with no direct path in {PLAY:?}",
                        v.label
                    ));
                }
            } else if direct_ok < 1.0 {
                failures.push(format!(
                    "{}: no connection by {:?}: {shown:?}\nedge log:\n{}",
                    v.label,
                    pair.direct,
                    v.log_tail()
                ));
            }
        }
        if !pair.direct.is_empty() && p2p_total <= 0.0 {
            failures.push(format!(
                "{}: no peer bytes reached either player",
                pair.label
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = services.run(relay.shutdown()).await;
    drop(viewers);
    drop(live);
}
