//! Pairs of nodes in homes of each kind of the NAT lab connect by the path theory says, and
//! move a mebibyte both ways intact.
//!
//! Two relays (the provider's, `shoal-transport-node relay`) run on the lab's internet with
//! a leaf certificate for their IP address signed by a lab CA made here; every node trusts
//! only that CA and knows only those relays. Two relays, so that each node's net report can
//! compare the mapping two servers see (the NAT guess). Each node is a
//! `shoal-transport-node` process inside its home host's namespace: one serves (echoes), the
//! other dials the address the first printed (what the tracker would hand out).
//!
//! Expected, from theory:
//! - Public ↔ Public: `direct` (nothing to traverse).
//! - two hosts of one LAN: `lan` (their private addresses).
//! - EIM NAT ↔ EIM NAT: `punched` (direct after simultaneous open coordinated via the relay).
//! - UPnP home ↔ EIM NAT: direct, `mapped` when the dialler reaches the mapped port,
//!   `punched` when the NAT's own mapping wins; both are direct.
//! - Symmetric ↔ Symmetric: `relay` (each side's port for the other is unknown in advance).
//! - UDP blocked ↔ Public: `relay`, reached over HTTPS (TCP) since iroh relays carry QUIC
//!   packets over a websocket: the connection still works, only never direct.
//!
//! Needs root (network namespaces, iptables) and miniupnpd. Under `CI=true` it runs or
//! fails; elsewhere it says why it skips. Every wait is bounded.

use serde_json::Value;
use shoal_testkit::netlab::{Home, HomeKind, Host, NatLab};
use shoal_testkit::ChildGuard;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

const NODE: &str = env!("CARGO_BIN_EXE_shoal-transport-node");
const HTTPS: u16 = 3443;
const QUIC: u16 = 7842;
/// Bound on any one line a node must print.
const LINE_WAIT: Duration = Duration::from_secs(40);
const BYTES: usize = 1 << 20;

/// A running node: its process and the JSON lines it prints.
struct Node {
    _child: ChildGuard,
    lines: mpsc::Receiver<Value>,
    what: String,
    log: PathBuf,
}

impl Node {
    fn spawn(host: &Host, what: &str, args: &[String], dir: &Path) -> Node {
        let log = dir.join(format!("{}.log", what.replace([' ', '/'], "_")));
        let mut cmd = host.netns.command(NODE);
        cmd.args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Node {
            _child: ChildGuard(child),
            lines,
            what: what.into(),
            log,
        }
    }

    /// The next line whose `event` is `event` (an `error` line fails at once).
    fn expect(&self, event: &str) -> Value {
        let deadline = tokio::time::Instant::now() + LINE_WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["event"] == event => return v,
                Ok(v) if v["event"] == "error" => {
                    panic!("{}: {v}; log:\n{}", self.what, self.log_tail())
                }
                Ok(_) => {}
                Err(_) => panic!(
                    "{}: no {event:?} line within {LINE_WAIT:?}; log:\n{}",
                    self.what,
                    self.log_tail()
                ),
            }
        }
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        s.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The lab CA (trusted by every node) and one leaf per relay IP, written as PEM files.
struct Pki {
    ca: PathBuf,
}

fn make_pki(dir: &Path, relays: &[&Host]) -> Pki {
    let ca = shoal_testkit::pki::LabCa::new(dir, "Shoal NAT lab CA").unwrap();
    for host in relays {
        ca.leaf_for(host.ip.into()).unwrap();
    }
    Pki { ca: ca.ca_path() }
}

fn start_relay(host: &Host, dir: &Path) -> Node {
    let cert = dir.join(format!("{}.crt", host.ip));
    let key = dir.join(format!("{}.key", host.ip));
    let args: Vec<String> = [
        "relay",
        "--http",
        "0.0.0.0:3340",
        "--https",
        &format!("0.0.0.0:{HTTPS}"),
        "--quic",
        &format!("0.0.0.0:{QUIC}"),
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let node = Node::spawn(host, &format!("relay {}", host.ip), &args, dir);
    node.expect("relay");
    node
}

/// The arguments every node gets: both relays, the lab CA.
fn node_args(cmd: &str, relays: &[&Host], pki: &Pki) -> Vec<String> {
    let mut args = vec![cmd.to_string()];
    for r in relays {
        args.push("--relay".into());
        args.push(format!("https://{}:{HTTPS}/", r.ip));
    }
    args.extend(
        [
            "--relay-quic-port",
            &QUIC.to_string(),
            "--relay-ca",
            pki.ca.to_str().unwrap(),
        ]
        .map(String::from),
    );
    args
}

/// In the internet namespace (every home's and server's gateway), counts packets by
/// destination: the internet block, the homes' LANs (LAN candidates tried across homes),
/// multicast (the port mapper's SSDP search on a public host's own link, which is the lab's
/// bridge: never routed), DNS, and anything else. iroh must send nothing to DNS or anywhere
/// else outside the lab (no public relay, no DNS or pkarr discovery).
fn count_packets_leaving_the_lab(internet: &shoal_testkit::netlab::Netns) {
    for rule in [
        &[
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-d",
            "11.7.0.0/16",
            "-j",
            "ACCEPT",
        ][..],
        &[
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-d",
            "192.168.0.0/16",
            "-j",
            "ACCEPT",
        ],
        &[
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-d",
            "224.0.0.0/4",
            "-j",
            "ACCEPT",
        ],
        &[
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-p",
            "udp",
            "--dport",
            "53",
            "-j",
            "ACCEPT",
        ],
        &["-t", "raw", "-A", "PREROUTING", "-j", "ACCEPT"],
    ] {
        internet.run("iptables-legacy", rule).unwrap();
    }
}

/// Packets the DNS and catch-all rules of [`count_packets_leaving_the_lab`] counted.
fn packets_leaving_the_lab(internet: &shoal_testkit::netlab::Netns) -> (u64, String) {
    let out = internet
        .run(
            "iptables-legacy",
            ["-t", "raw", "-L", "PREROUTING", "-v", "-n", "-x"],
        )
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    // Rows after the two header lines, in rule order; the first column is the packet count.
    let counts: Vec<u64> = table
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(counts.len(), 5, "{table}");
    (counts[3] + counts[4], table)
}

/// What one pair did.
#[derive(Debug)]
struct Outcome {
    label: String,
    dialled: Value,
    served: Value,
    server_ready: Value,
    dialler_ready: Value,
}

/// Serves on `server`, dials from `dialler`, moves [`BYTES`] both ways.
fn run_pair(
    label: &str,
    server: &Host,
    dialler: &Host,
    relays: &[&Host],
    pki: &Pki,
    dir: &Path,
) -> Outcome {
    let mut args = node_args("serve", relays, pki);
    args.extend(["--max-connections".into(), "1".into()]);
    let srv = Node::spawn(server, &format!("{label} server"), &args, dir);
    let server_ready = srv.expect("ready");
    let peer = server_ready["addr"].as_str().unwrap().to_string();
    let mut args = node_args("dial", relays, pki);
    args.extend(
        [
            "--peer",
            &peer,
            "--bytes",
            &BYTES.to_string(),
            "--direct-timeout",
            "10",
        ]
        .map(String::from),
    );
    let dia = Node::spawn(dialler, &format!("{label} dialler"), &args, dir);
    let dialler_ready = dia.expect("ready");
    let dialled = dia.expect("dialled");
    let served = srv.expect("served");
    Outcome {
        label: label.into(),
        dialled,
        served,
        server_ready,
        dialler_ready,
    }
}

fn kind_of(v: &Value) -> &str {
    v.as_str().unwrap_or("?")
}

#[test]
fn nat_pairs_connect_by_the_expected_path() {
    let Some(mut lab) = NatLab::for_test("the NAT pairs test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let relay_a = lab.add_server("relay-a").unwrap();
    let relay_b = lab.add_server("relay-b").unwrap();
    let relays = [&relay_a, &relay_b];
    let pki = make_pki(dir.path(), &relays);
    count_packets_leaving_the_lab(lab.internet());
    let _ra = start_relay(&relay_a, dir.path());
    let _rb = start_relay(&relay_b, dir.path());

    let public0 = lab.add_home(HomeKind::Public).unwrap();
    let public1 = lab.add_home(HomeKind::Public).unwrap();
    let lan = lab.add_home(HomeKind::SharedLan).unwrap();
    let eim0 = lab.add_home(HomeKind::Eim).unwrap();
    let eim1 = lab.add_home(HomeKind::Eim).unwrap();
    let upnp = lab.add_home(HomeKind::Upnp).unwrap();
    let eim2 = lab.add_home(HomeKind::Eim).unwrap();
    let sym0 = lab.add_home(HomeKind::Symmetric).unwrap();
    let sym1 = lab.add_home(HomeKind::Symmetric).unwrap();
    let noudp = lab.add_home(HomeKind::UdpBlocked).unwrap();
    let public2 = lab.add_home(HomeKind::Public).unwrap();

    // (label, server host, dialler host, the path kinds accepted for the dialler's view)
    let h = |home: &Home, i: usize| home.hosts[i].clone();
    let pairs: Vec<(&str, Host, Host, &[&str])> = vec![
        ("public-public", h(&public0, 0), h(&public1, 0), &["direct"]),
        ("lan-lan", h(&lan, 0), h(&lan, 1), &["lan"]),
        ("eim-eim", h(&eim0, 0), h(&eim1, 0), &["punched"]),
        ("upnp-eim", h(&upnp, 0), h(&eim2, 0), &["mapped", "punched"]),
        ("sym-sym", h(&sym0, 0), h(&sym1, 0), &["relay"]),
        ("noudp-public", h(&noudp, 0), h(&public2, 0), &["relay"]),
    ];

    let outcomes: Vec<(Outcome, &[&str])> = std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .iter()
            .map(|(label, srv, dia, want)| {
                let (pki, dir, relays) = (&pki, dir.path(), &relays);
                s.spawn(move || (run_pair(label, srv, dia, relays, pki, dir), *want))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    println!(
        "{:<14} {:>10} {:>12} {:>9} {:>9} {:>11}  dialler observed / server observed",
        "pair", "connect ms", "to direct ms", "dialler", "server", "transfer ms"
    );
    for (o, _) in &outcomes {
        let d = &o.dialled;
        println!(
            "{:<14} {:>10.0} {:>12} {:>9} {:>9} {:>11.0}  {} / {}",
            o.label,
            d["connect_ms"].as_f64().unwrap_or(-1.0),
            d["time_to_direct_ms"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.0}")),
            kind_of(&d["path_after"]),
            kind_of(&o.served["path"]),
            d["transfer_ms"].as_f64().unwrap_or(-1.0),
            o.dialler_ready["observed"],
            o.server_ready["observed"],
        );
    }

    let (outside, table) = packets_leaving_the_lab(lab.internet());
    println!("what reached the internet's gateway, by destination:\n{table}");
    assert_eq!(outside, 0, "packets addressed outside the lab:\n{table}");

    // What each node observed of its network at start, by home kind.
    let observed = |o: &Outcome, server: bool| {
        let ready = if server {
            &o.server_ready
        } else {
            &o.dialler_ready
        };
        ready["observed"].clone()
    };
    let by_label = |l: &str| &outcomes.iter().find(|(o, _)| o.label == l).unwrap().0;
    for (label, server, nat) in [
        ("public-public", true, "no_nat"),
        ("public-public", false, "no_nat"),
        ("eim-eim", true, "endpoint_independent"),
        ("eim-eim", false, "endpoint_independent"),
        ("upnp-eim", true, "endpoint_independent"),
        ("sym-sym", true, "endpoint_dependent"),
        ("sym-sym", false, "endpoint_dependent"),
        ("noudp-public", true, "no_udp"),
    ] {
        let seen = observed(by_label(label), server);
        assert_eq!(seen["nat"], nat, "{label} (server: {server}): {seen}");
        assert_eq!(seen["relay_connected"], true, "{label}: {seen}");
    }
    let upnp_seen = observed(by_label("upnp-eim"), true);
    let mapped = upnp_seen["mapped"].as_array().unwrap();
    assert_eq!(mapped.len(), 1, "the UPnP home maps one port: {upnp_seen}");
    assert!(
        mapped[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:", upnp.public_ip())),
        "{upnp_seen}"
    );
    let eim_seen = observed(by_label("eim-eim"), true);
    assert!(
        eim_seen["mapped"].as_array().unwrap().is_empty(),
        "{eim_seen}"
    );
    let reflexive = eim_seen["reflexive"].as_array().unwrap();
    assert!(
        reflexive.len() == 1
            && reflexive[0]
                .as_str()
                .unwrap()
                .starts_with(&format!("{}:", eim0.public_ip())),
        "{eim_seen}"
    );

    let mut failures = Vec::new();
    for (o, want) in &outcomes {
        let d = &o.dialled;
        // Every byte arrived, both ways.
        assert_eq!(d["bytes"], BYTES, "{}", o.label);
        assert_eq!(d["echo_ok"], true, "{}: the echo differs", o.label);
        assert_eq!(o.served["bytes"], BYTES, "{}", o.label);
        assert_eq!(o.served["sha256"], d["sha256"], "{}", o.label);
        // The path, once settled and after the transfer, is the one theory says.
        for key in ["path", "path_after"] {
            let got = kind_of(&d[key]);
            if !want.contains(&got) {
                failures.push(format!(
                    "{}: dialler's {key} is {got}, expected one of {want:?} ({})",
                    o.label, d["path_addr"]
                ));
            }
        }
        let direct_expected = want.iter().all(|k| *k != "relay");
        if direct_expected != d["time_to_direct_ms"].is_number() {
            failures.push(format!(
                "{}: time_to_direct_ms is {}",
                o.label, d["time_to_direct_ms"]
            ));
        }
        // The server sees the same class of path (direct or relay).
        let served_direct = kind_of(&o.served["path"]) != "relay";
        if served_direct != direct_expected {
            failures.push(format!(
                "{}: the server's path is {}",
                o.label, o.served["path"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
