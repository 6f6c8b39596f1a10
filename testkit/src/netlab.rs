//! A NAT lab: an "internet" and home networks behind Linux NAT routers, built from network
//! namespaces, veth pairs, bridges and `iptables-legacy`, and removed again on drop.
//!
//! Topology (see `docs/nat-lab.md`):
//!
//! ```text
//!            internet namespace: bridge br0, 11.7.0.1/16 (gateway; drops what is not 11.7/16)
//!   ┌───────────────┬──────────────┴───┬────────────────────────────┐
//! server 11.7.1.n   public host 11.7.2.n   router wan0 11.7.2.n ── lan0 192.168.h.1/24
//!                                                                ├─ host 192.168.h.10
//!                                                                └─ host 192.168.h.11
//! ```
//!
//! Every address lives inside namespaces the lab made: the host's own namespace gets no
//! address, route or link of the lab, so no lab packet can leave it, and two labs (threads or
//! processes side by side) use the same addresses without ever seeing each other. The
//! internet block `11.7.0.0/16` is outside the private and reserved ranges because
//! `miniupnpd` refuses a private WAN address.
//!
//! Names carry the process id and a per-process counter (`shoal-lab-<pid>-<n>-…`), so labs
//! never collide; namespaces of a process that died are removed by the next lab. Interface
//! names are short and fixed (`eth0`, `wan0`, `lan0`, `br0`, `p<k>`) because each lives in its
//! own namespace.
//!
//! ```no_run
//! # fn main() -> shoal_testkit::Result<()> {
//! use shoal_testkit::netlab::{HomeKind, NatLab, Reflector};
//! use std::time::Duration;
//! let mut lab = NatLab::new()?;
//! let server = lab.add_server("tracker")?;
//! let home = lab.add_home(HomeKind::Eim)?;
//! let reflector = Reflector::start(&server, 3478)?;
//! let sock = home.host().netns.udp_socket(40000)?;
//! let seen = Reflector::ask_udp(&sock, reflector.addr, Duration::from_secs(2))?;
//! assert_eq!(seen.map(|a| *a.ip()), Some(home.public_ip()));
//! # Ok(()) }
//! ```

mod miniupnpd;
mod probe;

pub use probe::{wait_for_datagram, Reflector};

use crate::{io_err, which, ChildGuard, Error, Result};
use std::ffi::OsStr;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The lab's internet: every server, public host and router WAN address is in here.
pub const INTERNET: (Ipv4Addr, u8) = (Ipv4Addr::new(11, 7, 0, 0), 16);
/// The internet namespace's own address on the bridge: every default route points at it, and
/// it silently drops whatever is not addressed inside [`INTERNET`] (as an ISP drops private
/// destinations).
pub const INTERNET_GATEWAY: Ipv4Addr = Ipv4Addr::new(11, 7, 0, 1);

/// Prefix of every namespace a lab makes; followed by `<pid>-<n>-`.
const NETNS_PREFIX: &str = "shoal-lab-";
/// At most this many servers (11.7.1.1 ..= 11.7.1.254).
const MAX_SERVERS: u32 = 254;
/// At most this many homes: each gets a public address from 11.7.2.1 on and the LAN
/// 192.168.<index + 1>.0/24.
pub const MAX_HOMES: usize = 254;
/// Host `j` of a home gets `.10 + j` on its LAN.
const MAX_HOSTS_PER_HOME: usize = 200;

/// Labs made by this process so far, for unique names.
static LABS: AtomicU32 = AtomicU32::new(0);

/// What kind of home network a home is: how its router treats traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HomeKind {
    /// A host directly on the internet bridge with a public address: no router, no NAT,
    /// reachable inbound on any port it listens on.
    Public,
    /// Two or more hosts on one LAN behind one [`HomeKind::Eim`] router: neighbours reach
    /// each other on their LAN addresses and share one public address.
    SharedLan,
    /// A router with endpoint-independent mapping (plain `MASQUERADE`, which keeps the
    /// source port when it can), no port forward, inbound forwarding dropped unless
    /// `ESTABLISHED,RELATED`, and unsolicited packets to the router itself dropped
    /// (`INPUT -i wan0`), as home routers do. Filtering is address-and-port dependent: only
    /// a host the inside host sent to gets through.
    Eim,
    /// [`HomeKind::Eim`] plus a real `miniupnpd` in the router answering UPnP IGD, NAT-PMP
    /// and PCP on the LAN side, so an inside host can map a port.
    Upnp,
    /// A symmetric NAT: `MASQUERADE --random-fully`, a new random external port for every
    /// destination; inbound as for [`HomeKind::Eim`].
    Symmetric,
    /// [`HomeKind::Eim`] whose router drops every UDP packet in both directions; TCP works.
    UdpBlocked,
}

impl HomeKind {
    /// Every kind, in the issue's order.
    pub const ALL: [HomeKind; 6] = [
        HomeKind::Public,
        HomeKind::SharedLan,
        HomeKind::Eim,
        HomeKind::Upnp,
        HomeKind::Symmetric,
        HomeKind::UdpBlocked,
    ];

    /// A short lower-case name (`public`, `lan`, `eim`, `upnp`, `sym`, `noudp`), used in
    /// namespace names.
    pub fn name(self) -> &'static str {
        match self {
            HomeKind::Public => "public",
            HomeKind::SharedLan => "lan",
            HomeKind::Eim => "eim",
            HomeKind::Upnp => "upnp",
            HomeKind::Symmetric => "sym",
            HomeKind::UdpBlocked => "noudp",
        }
    }

    /// How many hosts [`NatLab::add_home`] puts in a home of this kind.
    pub fn default_hosts(self) -> usize {
        match self {
            HomeKind::SharedLan => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for HomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A network namespace of the lab, by name (under `/run/netns`). Runs commands and opens
/// sockets inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
}

impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Netns {
    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: add arguments, then run or spawn it. The program runs
    /// with the namespace's network (and nothing else changed).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args…` inside the namespace to completion and returns its output, or
    /// [`Error::Exited`] with its stderr when it fails. Bounded by the program itself: use
    /// it for short commands.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let what = format!("{} in {}", program.as_ref().to_string_lossy(), self.name);
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        let out = cmd.output().map_err(io_err(format!("starting {what}")))?;
        if !out.status.success() {
            return Err(Error::Exited {
                what,
                status: out.status,
                log: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(out)
    }

    /// Spawns `program args…` inside the namespace as a long-running child (stdin closed,
    /// stdout and stderr inherited), killed and reaped when the guard drops. For other
    /// stdio, build it with [`Netns::command`] and wrap the child in [`ChildGuard`].
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<ChildGuard>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let what = format!(
            "starting {} in {}",
            program.as_ref().to_string_lossy(),
            self.name
        );
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .map_err(io_err(what))?;
        Ok(ChildGuard(child))
    }

    /// Runs `f` on a thread that has entered this namespace, and returns what it returns.
    /// Every socket `f` opens belongs to the namespace for its whole life, whichever thread
    /// then uses it; the calling thread's own namespace is untouched.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> std::io::Result<T> + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).map_err(io_err(format!("opening {path}")))?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io_err(format!("entering {}", self.name))(e.into()))?;
                f().map_err(io_err(format!("in network namespace {}", self.name)))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A UDP socket in this namespace bound to `0.0.0.0:port` (0: an ephemeral port).
    pub fn udp_socket(&self, port: u16) -> Result<UdpSocket> {
        self.enter(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))
    }

    /// A TCP listener in this namespace on `0.0.0.0:port` (0: an ephemeral port).
    pub fn tcp_listener(&self, port: u16) -> Result<TcpListener> {
        self.enter(|| TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))
    }

    /// A TCP connection from this namespace to `addr`, given up after `timeout`.
    pub fn tcp_connect(&self, addr: SocketAddrV4, timeout: Duration) -> Result<TcpStream> {
        self.enter(|| TcpStream::connect_timeout(&addr.into(), timeout))
    }
}

/// A machine of the lab: a server, a public host or a host on a home LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Its namespace.
    pub netns: Netns,
    /// Its address on its only interface `eth0` (public for servers and public hosts, on the
    /// LAN for a home's hosts).
    pub ip: Ipv4Addr,
    /// Its default route: [`INTERNET_GATEWAY`], or its home router's LAN address.
    pub gateway: Ipv4Addr,
}

impl Host {
    /// `ip` and `port` as a socket address.
    pub fn addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, port)
    }
}

/// A home's router: a namespace with `wan0` on the internet bridge and the bridge `lan0`
/// its hosts are plugged into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// Its namespace.
    pub netns: Netns,
    /// Its public address on `wan0`: what the internet sees of the home.
    pub wan_ip: Ipv4Addr,
    /// Its address on `lan0`, the hosts' gateway (and where `miniupnpd` answers).
    pub lan_ip: Ipv4Addr,
    /// The LAN's prefix length (24).
    pub lan_prefix: u8,
}

/// A home network of one [`HomeKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// How its router behaves.
    pub kind: HomeKind,
    /// Its position in the lab (0, 1, …): home `i`'s LAN is `192.168.<i + 1>.0/24`.
    pub index: usize,
    /// Its router; `None` for [`HomeKind::Public`].
    pub router: Option<Router>,
    /// Its hosts (at least one).
    pub hosts: Vec<Host>,
}

impl Home {
    /// The first host.
    pub fn host(&self) -> &Host {
        &self.hosts[0]
    }

    /// The address the internet sees the home's hosts come from: the router's WAN address,
    /// or the public host's own.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.router.as_ref().map_or(self.hosts[0].ip, |r| r.wan_ip)
    }
}

/// A NAT lab: an internet bridge in its own namespace, servers on it, and homes plugged into
/// it. Everything it made (namespaces and whatever runs in them, `miniupnpd`s) is removed
/// when it is dropped, also while a test unwinds from a panic.
///
/// Blocking: it runs `ip` and `iptables-legacy`. Needs root.
#[derive(Debug)]
pub struct NatLab {
    /// `shoal-lab-<pid>-<n>-`: the prefix of this lab's namespaces.
    prefix: String,
    internet: Netns,
    /// Namespaces made so far, in order (the internet first).
    namespaces: Vec<Netns>,
    /// `miniupnpd` of each UPnP home; stopped before the namespaces go.
    daemons: Vec<ChildGuard>,
    /// Ports on the internet bridge made so far (`p<k>`).
    ports: u32,
    servers: u32,
    homes: Vec<Home>,
    /// Configuration and logs of the daemons.
    dir: tempfile::TempDir,
}

impl NatLab {
    /// A lab with `miniupnpd` on the machine, for a test named `what`: under `CI=true` any
    /// reason it cannot be built fails the test (panics); elsewhere, not being root or a
    /// missing program prints why the test skips and gives `None`.
    pub fn for_test(what: &str) -> Option<NatLab> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        match crate::which("miniupnpd", "miniupnpd-iptables").and_then(|_| NatLab::new()) {
            Ok(lab) => Some(lab),
            Err(e @ (Error::NotRoot { .. } | Error::MissingProgram { .. })) if !ci => {
                eprintln!("skipping {what}: {e}");
                None
            }
            Err(e) => panic!("the NAT lab for {what} cannot run: {e}"),
        }
    }

    /// Creates the internet namespace with its bridge and gateway. Removes leftover
    /// namespaces of lab processes that no longer run first.
    ///
    /// Fails with [`Error::NotRoot`] when not root and [`Error::MissingProgram`] when `ip`
    /// (iproute2) or `iptables-legacy` (iptables) is not installed.
    pub fn new() -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NotRoot {
                what: "the NAT lab (it creates network namespaces, veth pairs, bridges and iptables rules)".into(),
            });
        }
        which("ip", "iproute2")?;
        which("iptables-legacy", "iptables")?;
        remove_leftovers();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NETNS_PREFIX}{}-{n}-", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("shoal-lab-")
            .tempdir()
            .map_err(io_err("creating a temp dir for the NAT lab"))?;
        let mut lab = Self {
            internet: Netns {
                name: format!("{prefix}internet"),
            },
            prefix,
            namespaces: Vec::new(),
            daemons: Vec::new(),
            ports: 0,
            servers: 0,
            homes: Vec::new(),
            dir,
        };
        let inet = lab.internet.clone();
        lab.add_netns(&inet)?;
        ip(&["-n", inet.name(), "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            inet.name(),
            "addr",
            "add",
            &format!("{INTERNET_GATEWAY}/{}", INTERNET.1),
            "dev",
            "br0",
        ])?;
        ip(&["-n", inet.name(), "link", "set", "br0", "up"])?;
        // Forward within 11.7/16 only; anything else (a home's private address, say) is
        // dropped without an answer.
        ip(&["-n", inet.name(), "route", "add", "blackhole", "default"])?;
        set_sysctl(&inet, "net/ipv4/ip_forward", "1")?;
        Ok(lab)
    }

    /// The internet namespace (holding the bridge `br0` and [`INTERNET_GATEWAY`]).
    pub fn internet(&self) -> &Netns {
        &self.internet
    }

    /// Every home added so far.
    pub fn homes(&self) -> &[Home] {
        &self.homes
    }

    /// Every namespace of this lab that exists now (`ip netns list`, filtered by the lab's
    /// prefix).
    pub fn existing_namespaces(&self) -> Vec<String> {
        list_namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&self.prefix))
            .collect()
    }

    /// The prefix of every namespace name of this lab (`shoal-lab-<pid>-<n>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Adds a server namespace on the internet bridge with the next address `11.7.1.n`
    /// (the tracker, a relay, an origin, a reflector run there). `label` (letters, digits,
    /// `-`) goes into the namespace's name.
    pub fn add_server(&mut self, label: &str) -> Result<Host> {
        check_label(label)?;
        if self.servers >= MAX_SERVERS {
            return Err(Error::Invalid {
                what: format!("server {label}"),
                detail: format!("a lab has at most {MAX_SERVERS} servers"),
            });
        }
        self.servers += 1;
        let ip = Ipv4Addr::new(11, 7, 1, self.servers as u8);
        let netns = Netns {
            name: format!("{}s{}-{label}", self.prefix, self.servers),
        };
        self.add_netns(&netns)?;
        self.plug_into_internet(&netns, "eth0", ip)?;
        Ok(Host {
            netns,
            ip,
            gateway: INTERNET_GATEWAY,
        })
    }

    /// Adds a home of `kind` with [`HomeKind::default_hosts`] hosts.
    pub fn add_home(&mut self, kind: HomeKind) -> Result<Home> {
        self.add_home_with_hosts(kind, kind.default_hosts())
    }

    /// Adds a home of `kind` with `hosts` hosts on its LAN (exactly one for
    /// [`HomeKind::Public`], at least two for [`HomeKind::SharedLan`]). For
    /// [`HomeKind::Upnp`] it starts `miniupnpd` and waits until it listens.
    pub fn add_home_with_hosts(&mut self, kind: HomeKind, hosts: usize) -> Result<Home> {
        let index = self.homes.len();
        let invalid = |detail: String| Error::Invalid {
            what: format!("home {index} ({kind}) with {hosts} hosts"),
            detail,
        };
        match kind {
            HomeKind::Public if hosts != 1 => {
                return Err(invalid("a public home is one host".into()))
            }
            HomeKind::SharedLan if hosts < 2 => {
                return Err(invalid("a shared LAN has at least two hosts".into()))
            }
            _ if hosts == 0 || hosts > MAX_HOSTS_PER_HOME => {
                return Err(invalid(format!(
                    "a home has 1 to {MAX_HOSTS_PER_HOME} hosts"
                )))
            }
            _ => {}
        }
        if index >= MAX_HOMES {
            return Err(invalid(format!("a lab has at most {MAX_HOMES} homes")));
        }
        if kind == HomeKind::Upnp {
            which("miniupnpd", "miniupnpd-iptables")?;
        }
        // 11.7.2.1, 11.7.2.2, …: below 11.7.3.0 for the first 254 homes.
        let public_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(11, 7, 2, 0)) + index as u32 + 1);
        let prefix = self.prefix.clone();
        let name = |what: &str| Netns {
            name: format!("{prefix}h{index}-{kind}-{what}"),
        };
        let home = if kind == HomeKind::Public {
            let netns = name("host");
            self.add_netns(&netns)?;
            self.plug_into_internet(&netns, "eth0", public_ip)?;
            Home {
                kind,
                index,
                router: None,
                hosts: vec![Host {
                    netns,
                    ip: public_ip,
                    gateway: INTERNET_GATEWAY,
                }],
            }
        } else {
            let subnet = index as u8 + 1;
            let router = Router {
                netns: name("router"),
                wan_ip: public_ip,
                lan_ip: Ipv4Addr::new(192, 168, subnet, 1),
                lan_prefix: 24,
            };
            self.add_netns(&router.netns)?;
            self.plug_into_internet(&router.netns, "wan0", public_ip)?;
            let r = router.netns.name();
            ip(&["-n", r, "link", "add", "lan0", "type", "bridge"])?;
            ip(&[
                "-n",
                r,
                "addr",
                "add",
                &format!("{}/{}", router.lan_ip, router.lan_prefix),
                "dev",
                "lan0",
            ])?;
            ip(&["-n", r, "link", "set", "lan0", "up"])?;
            let mut members = Vec::new();
            for j in 0..hosts {
                let netns = name(&format!("host{j}"));
                self.add_netns(&netns)?;
                let host_ip = Ipv4Addr::new(192, 168, subnet, 10 + j as u8);
                let port = format!("p{j}");
                ip(&[
                    "-n",
                    r,
                    "link",
                    "add",
                    &port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    netns.name(),
                ])?;
                ip(&["-n", r, "link", "set", &port, "master", "lan0", "up"])?;
                configure_end(&netns, "eth0", host_ip, router.lan_prefix, router.lan_ip)?;
                members.push(Host {
                    netns,
                    ip: host_ip,
                    gateway: router.lan_ip,
                });
            }
            set_sysctl(&router.netns, "net/ipv4/ip_forward", "1")?;
            for rule in router_rules(kind) {
                router.netns.run("iptables-legacy", &rule)?;
            }
            if kind == HomeKind::Upnp {
                let daemon = miniupnpd::start(&router, self.dir.path(), index)?;
                self.daemons.push(daemon);
            }
            Home {
                kind,
                index,
                router: Some(router),
                hosts: members,
            }
        };
        self.homes.push(home.clone());
        Ok(home)
    }

    /// Creates `netns` (loopback up) and records it for removal.
    fn add_netns(&mut self, netns: &Netns) -> Result<()> {
        ip(&["netns", "add", netns.name()])?;
        self.namespaces.push(netns.clone());
        ip(&["-n", netns.name(), "link", "set", "lo", "up"])
    }

    /// A veth from the internet bridge to `dev` in `netns`, with `addr/16` and the default
    /// route via [`INTERNET_GATEWAY`].
    fn plug_into_internet(&mut self, netns: &Netns, dev: &str, addr: Ipv4Addr) -> Result<()> {
        let port = format!("p{}", self.ports);
        self.ports += 1;
        let inet = self.internet.name();
        ip(&[
            "-n",
            inet,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            dev,
            "netns",
            netns.name(),
        ])?;
        ip(&["-n", inet, "link", "set", &port, "master", "br0", "up"])?;
        configure_end(netns, dev, addr, INTERNET.1, INTERNET_GATEWAY)
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        // miniupnpd first (killed and reaped by its guard), then anything else that still
        // runs in the lab, then the namespaces: deleting one deletes its veth ends.
        self.daemons.clear();
        for netns in self.namespaces.iter().rev() {
            remove_netns(netns.name());
        }
        // Whatever a failed command above left (there should be nothing).
        for name in self.existing_namespaces() {
            remove_netns(&name);
        }
    }
}

/// `iptables-legacy` argument lists that make a router of `kind` (legacy, because
/// `miniupnpd` adds its rules with libiptc). Interfaces: `wan0` to the internet, `lan0` the
/// LAN bridge.
fn router_rules(kind: HomeKind) -> Vec<Vec<&'static str>> {
    let mut rules: Vec<Vec<&'static str>> = Vec::new();
    let mut add = |r: &[&'static str]| rules.push(r.to_vec());
    add(&["-P", "FORWARD", "DROP"]);
    if kind == HomeKind::UdpBlocked {
        add(&["-A", "FORWARD", "-p", "udp", "-j", "DROP"]);
    }
    // Between hosts on the LAN (seen here only when the kernel passes bridged frames to
    // iptables).
    add(&["-A", "FORWARD", "-i", "lan0", "-o", "lan0", "-j", "ACCEPT"]);
    add(&[
        "-A",
        "FORWARD",
        "-i",
        "wan0",
        "-o",
        "lan0",
        "-m",
        "conntrack",
        "--ctstate",
        "ESTABLISHED,RELATED",
        "-j",
        "ACCEPT",
    ]);
    if kind == HomeKind::Upnp {
        // miniupnpd's chains, as its iptables_init.sh makes them; it fills them itself.
        add(&["-N", "MINIUPNPD"]);
        add(&[
            "-A",
            "FORWARD",
            "-i",
            "wan0",
            "!",
            "-o",
            "wan0",
            "-j",
            "MINIUPNPD",
        ]);
        add(&["-t", "nat", "-N", "MINIUPNPD"]);
        add(&[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-i",
            "wan0",
            "-j",
            "MINIUPNPD",
        ]);
        add(&["-t", "nat", "-N", "MINIUPNPD-POSTROUTING"]);
        add(&[
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan0",
            "-j",
            "MINIUPNPD-POSTROUTING",
        ]);
        add(&["-t", "mangle", "-N", "MINIUPNPD"]);
        add(&[
            "-t",
            "mangle",
            "-A",
            "PREROUTING",
            "-i",
            "wan0",
            "-j",
            "MINIUPNPD",
        ]);
    }
    add(&["-A", "FORWARD", "-i", "lan0", "-o", "wan0", "-j", "ACCEPT"]);
    // Unsolicited packets to the router itself are dropped: with INPUT left open, a peer's
    // first hole-punching packet makes a conntrack entry on the router that the outgoing
    // punch then clashes with (MASQUERADE picks another port).
    add(&[
        "-A",
        "INPUT",
        "-i",
        "wan0",
        "-m",
        "conntrack",
        "--ctstate",
        "ESTABLISHED,RELATED",
        "-j",
        "ACCEPT",
    ]);
    add(&["-A", "INPUT", "-i", "wan0", "-j", "DROP"]);
    if kind == HomeKind::UdpBlocked {
        add(&["-A", "OUTPUT", "-o", "wan0", "-p", "udp", "-j", "DROP"]);
    }
    let masquerade = [
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "wan0",
        "-j",
        "MASQUERADE",
    ];
    if kind == HomeKind::Symmetric {
        // A new external port for every destination.
        add(&[&masquerade[..], &["--random-fully"]].concat());
    } else {
        add(&masquerade);
    }
    rules
}

/// Addresses `dev` in `netns` with `addr/prefix`, brings it up, and routes the default
/// via `gateway`.
fn configure_end(
    netns: &Netns,
    dev: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<()> {
    let n = netns.name();
    ip(&[
        "-n",
        n,
        "addr",
        "add",
        &format!("{addr}/{prefix}"),
        "dev",
        dev,
    ])?;
    ip(&["-n", n, "link", "set", dev, "up"])?;
    ip(&[
        "-n",
        n,
        "route",
        "add",
        "default",
        "via",
        &gateway.to_string(),
    ])
}

/// Writes `/proc/sys/<key>` inside `netns` (network sysctls are per namespace).
fn set_sysctl(netns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    netns.enter(|| std::fs::write(&path, value))
}

/// Runs `ip args…` in the host's namespace (with `-n NS` to act in a lab namespace).
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err("starting ip"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Exited {
            what: format!("ip {}", args.join(" ")),
            status: out.status,
            log: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn check_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 32
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: format!("server label {label:?}"),
            detail: "use 1 to 32 letters, digits or '-'".into(),
        })
    }
}

/// Every namespace `ip netns list` shows.
fn list_namespaces() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return Vec::new();
    };
    // `name (id: 7)` or `name`
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The process id in a lab namespace's name (`shoal-lab-<pid>-<n>-…`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, _) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Removes the namespaces of lab processes that no longer run.
fn remove_leftovers() {
    let me = std::process::id();
    for name in list_namespaces() {
        if let Some(pid) = owner_pid(&name) {
            if pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                remove_netns(&name);
            }
        }
    }
}

/// Kills every process in `name` (bounded wait for them to go), then deletes it.
fn remove_netns(name: &str) {
    let pids = |name: &str| -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    // The test process itself is never in a lab namespace (only threads
                    // enter one), but it must not kill itself should it be.
                    .filter(|p| *p as u32 != std::process::id())
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = pids(name);
        if left.is_empty() || Instant::now() > deadline {
            break;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_namespace_names_carry_their_owner() {
        assert_eq!(owner_pid("shoal-lab-4242-0-internet"), Some(4242));
        assert_eq!(owner_pid("shoal-lab-4242-17-h3-eim-host0"), Some(4242));
        assert_eq!(owner_pid("shoal-lab-4242"), None);
        assert_eq!(owner_pid("shoal-lab-x-1-internet"), None);
        assert_eq!(owner_pid("shoal-4242-p-1"), None);
    }

    #[test]
    fn each_kind_gets_its_nat_and_filter_rules() {
        let has = |kind, rule: &[&str]| router_rules(kind).iter().any(|r| r == rule);
        let masq = [
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            "wan0",
            "-j",
            "MASQUERADE",
        ];
        let random = [&masq[..], &["--random-fully"]].concat();
        let drop_udp = ["-A", "FORWARD", "-p", "udp", "-j", "DROP"];
        for kind in [
            HomeKind::SharedLan,
            HomeKind::Eim,
            HomeKind::Upnp,
            HomeKind::UdpBlocked,
        ] {
            assert!(has(kind, &masq) && !has(kind, &random), "{kind}");
        }
        assert!(has(HomeKind::Symmetric, &random) && !has(HomeKind::Symmetric, &masq));
        assert!(has(HomeKind::UdpBlocked, &drop_udp));
        assert!(!has(HomeKind::Eim, &drop_udp));
        let chain = ["-t", "nat", "-N", "MINIUPNPD"];
        assert!(has(HomeKind::Upnp, &chain) && !has(HomeKind::Eim, &chain));
        for kind in HomeKind::ALL.into_iter().filter(|k| *k != HomeKind::Public) {
            assert!(
                has(kind, &["-A", "INPUT", "-i", "wan0", "-j", "DROP"]),
                "{kind}"
            );
        }
    }

    #[test]
    fn labels_are_checked() {
        assert!(check_label("tracker").is_ok());
        assert!(check_label("relay-2").is_ok());
        assert!(check_label("").is_err());
        assert!(check_label("a b").is_err());
        assert!(check_label("a/b").is_err());
    }
}
