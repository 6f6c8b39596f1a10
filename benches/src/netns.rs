//! The shaped mode's network: one Linux network namespace per node, joined to a bridge in the
//! harness's namespace by a veth pair, with a `tc` token bucket (tbf) on each end so that every
//! node has a home link's uplink and downlink. Round-trip delay is not added here (this kernel
//! has no `netem`): the harness's relays add it (see [`crate::relay`]).
//!
//! Names carry the harness's process id, so runs side by side never touch each other's
//! devices, and leftovers of a process that died are recognised and removed at the next start.
//! The addresses come from a `10.x.0.0/16` block that no address or route of the host
//! overlaps. Everything a [`Network`] made is removed when it is dropped.
//!
//! Creating namespaces needs root and the iproute2 programs `ip` and `tc`; [`check_available`]
//! says which is missing.

use serde::Serialize;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A home link: what each node's veth lets through, and the round trip the relays add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shaping {
    /// Node to network, bits per second.
    pub uplink_bps: u64,
    /// Network to node, bits per second.
    pub downlink_bps: u64,
    /// Round trip added to every connection a node makes or accepts over its link.
    #[serde(serialize_with = "secs")]
    pub rtt: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Shaping {
    /// 5 Mbit/s up, 25 Mbit/s down, 40 ms round trip: a common cable or DSL home line.
    pub fn home() -> Self {
        Self {
            uplink_bps: 5_000_000,
            downlink_bps: 25_000_000,
            rtt: Duration::from_millis(40),
        }
    }
}

/// The token bucket's depth for `bps`: 10 ms at that rate, at least ten full-size frames.
pub fn burst_bytes(bps: u64) -> u64 {
    (bps / 8 / 100).max(10 * 1514)
}

/// How long a packet may queue in a bucket before it is dropped (a home router's buffer).
const QUEUE_LATENCY: &str = "100ms";

/// Why the shaped network could not be set up. None of these is retryable as is.
#[derive(Debug, thiserror::Error)]
pub enum ShapedError {
    /// Not running as root.
    #[error("--shaped needs root (it creates network namespaces, veth pairs, a bridge and tc qdiscs); run it as root, or without --shaped")]
    NotRoot,
    /// `ip` or `tc` is not installed.
    #[error(
        "--shaped needs `{0}` from iproute2 (Debian: apt-get install iproute2); it was not found"
    )]
    MissingTool(&'static str),
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr (or why it did not run).
        stderr: String,
    },
    /// Every `10.x.0.0/16` block overlaps an address or route of the host.
    #[error("no 10.x.0.0/16 block is free of the host's addresses and routes")]
    NoFreeBlock,
    /// A node's thread could not enter its namespace.
    #[error("entering network namespace {netns}: {source}")]
    Enter {
        /// The namespace.
        netns: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether the shaped mode can run here: root, `ip` and `tc`.
pub fn check_available() -> Result<(), ShapedError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ShapedError::NotRoot);
    }
    for tool in ["ip", "tc"] {
        match Command::new(tool).arg("-V").output() {
            Ok(o) if o.status.success() => {}
            _ => return Err(ShapedError::MissingTool(tool)),
        }
    }
    Ok(())
}

/// Runs `program args…`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String, ShapedError> {
    let command = || format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ShapedError::Command {
            command: command(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(ShapedError::Command {
            command: command(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Name prefix of every link of this harness process (`sh<pid>`); a run adds its label.
fn link_prefix(pid: u32) -> String {
    format!("sh{pid}")
}

/// Name prefix of every namespace of this harness process.
fn netns_prefix(pid: u32) -> String {
    format!("shoal-{pid}-")
}

/// The process id in a name this module gave, if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    if let Some(rest) = name.strip_prefix("shoal-") {
        return digits(rest).filter(|p| rest.starts_with(&format!("{p}-")));
    }
    let rest = name.strip_prefix("sh")?;
    let pid = digits(rest)?;
    let tail = &rest[pid.to_string().len()..];
    // `<label>br` (a bridge) or `<label>v<index>` (a node's veth).
    let mut chars = tail.chars();
    chars.next()?;
    let kind = chars.as_str();
    let is_ours = kind == "br"
        || kind
            .strip_prefix('v')
            .is_some_and(|i| !i.is_empty() && i.chars().all(|c| c.is_ascii_digit()));
    is_ours.then_some(pid)
}

/// Removes namespaces and links left by harness processes that no longer run.
fn remove_leftovers() {
    let dead = |name: &str| {
        owner_pid(name).is_some_and(|p| {
            p != std::process::id() && !std::path::Path::new(&format!("/proc/{p}")).exists()
        })
    };
    remove_namespaces(dead);
    remove_links(dead);
}

/// Every IPv4 network the host has an address or a route in.
fn host_networks() -> Vec<(Ipv4Addr, u8)> {
    let mut nets = Vec::new();
    for args in [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"][..],
    ] {
        let Ok(text) = run("ip", args) else { continue };
        for token in text.split_whitespace() {
            let (addr, len) = token.split_once('/').unwrap_or((token, "32"));
            if let (Ok(a), Ok(l)) = (addr.parse::<Ipv4Addr>(), len.parse::<u8>()) {
                nets.push((a, l.min(32)));
            }
        }
    }
    nets
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let len = a.1.min(b.1);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

/// The second octet of a `10.x.0.0/16` block that overlaps none of `taken`, looking first
/// where `seed` points so that processes side by side start apart.
fn free_block(taken: &[(Ipv4Addr, u8)], seed: u32) -> Option<u8> {
    (0..254u32).map(|i| (1 + (seed + i) % 254) as u8).find(|x| {
        let block = (Ipv4Addr::new(10, *x, 0, 0), 16);
        !taken.iter().any(|n| overlaps(*n, block))
    })
}

/// Choosing a block and claiming it with the bridge's address happen under this lock, so two
/// runs of one process (a run and its baseline) never pick the same block.
static CLAIM: Mutex<()> = Mutex::new(());

/// A run's bridge and the node links on it; removes all of them when dropped.
#[derive(Debug)]
pub struct Network {
    /// `sh<pid><label>`: the prefix of this network's link names.
    links: String,
    /// `shoal-<pid>-<label>-`: the prefix of its namespaces.
    netns: String,
    block: u8,
    shaping: Shaping,
    /// Nodes added and not yet removed.
    live: Mutex<Vec<Live>>,
}

/// A node's link while it lives: its names and the peak rates seen so far.
#[derive(Debug)]
struct Live {
    netns: String,
    host_if: String,
    peaks: Peaks,
}

/// The highest rates of a link between any two consecutive readings of its byte counters.
#[derive(Debug, Clone, Default)]
pub struct Peaks {
    /// The last reading: when it began, and the bytes up and down.
    last: Option<(Instant, u64, u64)>,
    /// Highest uplink rate between two readings, bits per second.
    pub uplink_bps: f64,
    /// Highest downlink rate between two readings, bits per second.
    pub downlink_bps: f64,
}

impl Peaks {
    /// Takes a reading of the bytes sent up and down so far, begun at `began` and done at
    /// `done`. A rate is taken from the start of the previous reading to the end of this one,
    /// the longest the bytes can have taken, so a reading delayed by the scheduler never
    /// inflates it. Readings less than half a second after the previous one are skipped.
    pub fn observe(&mut self, began: Instant, done: Instant, up: u64, down: u64) {
        if let Some((then, up0, down0)) = self.last {
            let dt = done.saturating_duration_since(then).as_secs_f64();
            if began.saturating_duration_since(then).as_secs_f64() < 0.5 {
                return;
            }
            let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 * 8.0 / dt;
            self.uplink_bps = self.uplink_bps.max(rate(up0, up));
            self.downlink_bps = self.downlink_bps.max(rate(down0, down));
        }
        self.last = Some((began, up, down));
    }
}

/// A link's byte counters as the bridge-side veth counts them: (what the node sent, what it
/// received).
fn counters(host_if: &str) -> (u64, u64) {
    let stat = |name: &str| -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{host_if}/statistics/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    // The bridge-side end receives what the node sends.
    (stat("rx_bytes"), stat("tx_bytes"))
}

/// One node's place in the network.
#[derive(Debug, Clone)]
pub struct NodeLink {
    /// The node's namespace (under `/run/netns`).
    pub netns: String,
    /// The node's address on its veth.
    pub ip: Ipv4Addr,
    host_if: String,
    since: Instant,
}

/// What went over one node's link while it lived, from the kernel's counters of the
/// bridge-side veth.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// The node's namespace.
    pub netns: String,
    /// From the link's shaping to its removal, seconds.
    pub seconds: f64,
    /// Bytes the node sent (frames with their Ethernet headers, as tbf counts them).
    pub uplink_bytes: u64,
    /// Bytes the node received.
    pub downlink_bytes: u64,
    /// Highest uplink rate between two readings of the counters (about a second apart),
    /// bits per second.
    pub peak_uplink_bps: f64,
    /// Highest downlink rate between two readings, bits per second.
    pub peak_downlink_bps: f64,
}

impl LinkReport {
    /// Mean uplink rate over the link's life, bits per second.
    pub fn uplink_bps(&self) -> f64 {
        self.uplink_bytes as f64 * 8.0 / self.seconds.max(1e-3)
    }
}

impl Network {
    /// Creates the bridge of run `label` (one letter) with the first address of a free block.
    /// Removes leftovers of dead harness processes first. Blocking: runs `ip`.
    pub fn create(label: char, shaping: Shaping) -> Result<Network, ShapedError> {
        check_available()?;
        remove_leftovers();
        let pid = std::process::id();
        let links = format!("{}{label}", link_prefix(pid));
        let bridge = format!("{links}br");
        let _claim = CLAIM.lock().unwrap_or_else(|e| e.into_inner());
        let block = free_block(&host_networks(), pid).ok_or(ShapedError::NoFreeBlock)?;
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        // From here on, dropping `net` removes the bridge.
        let net = Network {
            links,
            netns: format!("{}{label}-", netns_prefix(pid)),
            block,
            shaping,
            live: Mutex::new(Vec::new()),
        };
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/16", net.bridge_ip()),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.links)
    }

    /// The harness's address on the bridge (tracker and origin relays listen there).
    pub fn bridge_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.block, 0, 1)
    }

    /// The shaping every link gets.
    pub fn shaping(&self) -> Shaping {
        self.shaping
    }

    /// Adds node `index`: its namespace (loopback up), a veth pair to the bridge, the node's
    /// address, tbf at the uplink rate on the node's end and at the downlink rate on the
    /// bridge's end. Blocking: runs `ip` and `tc`.
    pub fn add_node(&self, index: usize) -> Result<NodeLink, ShapedError> {
        let host_number = index as u32 + 2;
        if host_number > 0xfffe {
            return Err(ShapedError::NoFreeBlock);
        }
        let netns = format!("{}{index}", self.netns);
        let host_if = format!("{}v{index}", self.links);
        let ip = Ipv4Addr::new(
            10,
            self.block,
            (host_number >> 8) as u8,
            (host_number & 0xff) as u8,
        );
        run("ip", &["netns", "add", &netns])?;
        self.lock_live().push(Live {
            netns: netns.clone(),
            host_if: host_if.clone(),
            peaks: Peaks::default(),
        });
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ],
        )?;
        run(
            "ip",
            &["link", "set", &host_if, "master", &self.bridge(), "up"],
        )?;
        let tbf = |bps: u64| {
            [
                "rate".to_owned(),
                format!("{bps}bit"),
                "burst".to_owned(),
                burst_bytes(bps).to_string(),
                "latency".to_owned(),
                QUEUE_LATENCY.to_owned(),
            ]
        };
        let up = tbf(self.shaping.uplink_bps);
        let down = tbf(self.shaping.downlink_bps);
        let mut tc_up = vec!["-n", &netns, "qdisc", "add", "dev", "eth0", "root", "tbf"];
        tc_up.extend(up.iter().map(String::as_str));
        let mut tc_down = vec!["qdisc", "add", "dev", &host_if, "root", "tbf"];
        tc_down.extend(down.iter().map(String::as_str));
        run("tc", &tc_up)?;
        run("tc", &tc_down)?;
        run(
            "ip",
            &[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ip}/16"),
                "dev",
                "eth0",
            ],
        )?;
        run("ip", &["-n", &netns, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &netns, "link", "set", "eth0", "up"])?;
        Ok(NodeLink {
            netns,
            ip,
            host_if,
            since: Instant::now(),
        })
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, Vec<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every live link's counters (call about once a second, for the peak rates).
    /// Blocking: reads sysfs.
    pub fn sample(&self) {
        for l in self.lock_live().iter_mut() {
            let began = Instant::now();
            let (up, down) = counters(&l.host_if);
            l.peaks.observe(began, Instant::now(), up, down);
        }
    }

    /// Reads the link's counters, then removes the node's veth pair and namespace. Call once
    /// the node's thread has ended. Blocking: runs `ip`.
    pub fn remove_node(&self, link: &NodeLink) -> LinkReport {
        let began = Instant::now();
        let (up, down) = counters(&link.host_if);
        let done = Instant::now();
        let mut peaks = {
            let mut live = self.lock_live();
            let i = live.iter().position(|l| l.netns == link.netns);
            i.map(|i| live.swap_remove(i).peaks).unwrap_or_default()
        };
        peaks.observe(began, done, up, down);
        remove_pair(&link.netns, &link.host_if);
        LinkReport {
            netns: link.netns.clone(),
            seconds: link.since.elapsed().as_secs_f64(),
            uplink_bytes: up,
            downlink_bytes: down,
            peak_uplink_bps: peaks.uplink_bps,
            peak_downlink_bps: peaks.downlink_bps,
        }
    }
}

/// Deleting one end of a veth deletes both; the namespace goes when nothing is left in it.
fn remove_pair(netns: &str, host_if: &str) {
    for (what, args) in [
        ("link", ["link", "del", host_if]),
        ("namespace", ["netns", "del", netns]),
    ] {
        if let Err(e) = run("ip", &args) {
            tracing::warn!(error = %e, "removing a shaped {what} failed");
        }
    }
}

/// Deletes every namespace whose name `which` accepts.
fn remove_namespaces(which: impl Fn(&str) -> bool) {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    // `name (id: 7)`
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if which(name) {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// Deletes every link whose name `which` accepts: veths first, so that bridges go empty.
fn remove_links(which: impl Fn(&str) -> bool) {
    let Ok(list) = run("ip", &["-o", "link", "show"]) else {
        return;
    };
    // `7: name@peer: <…>`
    let mut names: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .filter(|n| which(n))
        .collect();
    names.sort_by_key(|n| n.ends_with("br"));
    for name in names {
        let _ = run("ip", &["link", "del", name]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for l in std::mem::take(&mut *self.lock_live()) {
            remove_pair(&l.netns, &l.host_if);
        }
        // Whatever of this network is still there (a command above or earlier failed).
        remove_namespaces(|n| n.starts_with(&self.netns));
        remove_links(|n| n.starts_with(&self.links));
    }
}

/// Moves the calling thread into namespace `netns`: every socket it (and any thread it starts)
/// opens from then on belongs there.
pub fn enter(netns: &str) -> Result<(), ShapedError> {
    let enter = || -> std::io::Result<()> {
        let file = std::fs::File::open(format!("/run/netns/{netns}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        Ok(())
    };
    enter().map_err(|source| ShapedError::Enter {
        netns: netns.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_this_module_carry_their_owner() {
        assert_eq!(owner_pid("shoal-4242-p-17"), Some(4242));
        assert_eq!(owner_pid("sh4242pbr"), Some(4242));
        assert_eq!(owner_pid("sh4242cv3"), Some(4242));
        assert_eq!(owner_pid("sh4242cv"), None);
        assert_eq!(owner_pid("shoalbr"), None);
        assert_eq!(owner_pid("eth0"), None);
        assert_eq!(owner_pid("sh12x"), None);
    }

    #[test]
    fn peaks_are_the_highest_rate_between_readings_half_a_second_apart_or_more() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = Peaks::default();
        let at = |t: Instant| (t, t);
        let (b, d) = at(t0);
        p.observe(b, d, 0, 0);
        let (b, d) = at(t0 + s);
        p.observe(b, d, 625_000, 100);
        // Too close to the last reading: skipped, not a 40 Mbit/s spike.
        let (b, d) = at(t0 + s + Duration::from_millis(10));
        p.observe(b, d, 675_000, 100);
        let (b, d) = at(t0 + 3 * s);
        p.observe(b, d, 875_000, 3_125_100);
        assert_eq!(p.uplink_bps, 5_000_000.0);
        assert_eq!(p.downlink_bps, 12_500_000.0);
        // A reading that took long (the thread was descheduled) counts its whole length.
        p.observe(t0 + 4 * s, t0 + 5 * s, 2_125_000, 3_125_100);
        assert_eq!(p.uplink_bps, 5_000_000.0);
    }

    #[test]
    fn a_block_overlapping_an_address_or_route_is_skipped() {
        let n = |s: &str, l| (s.parse().unwrap(), l);
        assert!(overlaps(n("10.7.3.4", 32), n("10.7.0.0", 16)));
        assert!(overlaps(n("10.0.0.0", 8), n("10.7.0.0", 16)));
        assert!(!overlaps(n("192.0.2.0", 24), n("10.7.0.0", 16)));
        let taken = [n("10.5.0.0", 16), n("10.6.1.1", 32)];
        assert_eq!(free_block(&taken, 3), Some(4));
        assert_eq!(free_block(&taken, 4), Some(7));
        assert_eq!(free_block(&[n("0.0.0.0", 0)], 1), None);
    }
}
