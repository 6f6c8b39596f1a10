//! The NAT lab's homes behave as their kinds say, checked with real packets: reflectors on
//! the internet bridge report the source address they see, a host nobody contacted sends
//! unsolicited datagrams, the real `natpmpc` and `upnpc` (and a PCP request) map ports
//! through `miniupnpd`, and every host downloads a file from an nginx origin.
//!
//! Needs root (network namespaces, iptables). Under `CI=true` it runs or fails; elsewhere it
//! says why it skips.

use shoal_testkit::netlab::{wait_for_datagram, Home, HomeKind, Host, NatLab, Reflector};
use shoal_testkit::{which, Error, Nginx};
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;
use tokio::time::Instant;

/// How long to wait for an answer that must come.
const WAIT: Duration = Duration::from_secs(3);
/// How long to wait for a packet that must not come.
const SILENCE: Duration = Duration::from_millis(1500);
/// The reflectors' port.
const REFLECT: u16 = 3478;

/// A lab, or `None` (with the reason printed) when it cannot run here and this is not CI.
fn lab() -> Option<NatLab> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let made = [
        ("natpmpc", "natpmpc"),
        ("upnpc", "miniupnpc"),
        ("miniupnpd", "miniupnpd-iptables"),
        ("nginx", "nginx-light"),
    ]
    .into_iter()
    .try_for_each(|(program, package)| which(program, package).map(drop))
    .and_then(|()| NatLab::new());
    match made {
        Ok(lab) => Some(lab),
        Err(e @ (Error::NotRoot { .. } | Error::MissingProgram { .. })) if !ci => {
            eprintln!("skipping the NAT lab test: {e}");
            None
        }
        Err(e) => panic!("the NAT lab cannot run: {e}"),
    }
}

/// The servers every check uses: two reflectors and a stranger no home ever contacts.
struct Internet {
    a: Reflector,
    b: Reflector,
    stranger: Reflector,
    stranger_host: Host,
}

impl Internet {
    fn new(lab: &mut NatLab) -> Internet {
        let a = lab.add_server("reflector-a").unwrap();
        let b = lab.add_server("reflector-b").unwrap();
        let stranger_host = lab.add_server("stranger").unwrap();
        Internet {
            a: Reflector::start(&a, REFLECT).unwrap(),
            b: Reflector::start(&b, REFLECT).unwrap(),
            stranger: Reflector::start(&stranger_host, REFLECT).unwrap(),
            stranger_host,
        }
    }
}

/// A token for one unsolicited datagram.
fn token(what: &str, home: &Home) -> Vec<u8> {
    format!("{what} to home {} ({})", home.index, home.kind).into_bytes()
}

/// Sends `payload` from `from` to `to`, and says whether `sock` got it within `wait`.
fn arrives(
    from: &Reflector,
    to: SocketAddrV4,
    sock: &std::net::UdpSocket,
    payload: &[u8],
    wait: Duration,
) -> Option<SocketAddr> {
    from.send_udp(to, payload).unwrap();
    wait_for_datagram(sock, payload, wait).unwrap()
}

/// The mapped addresses reflectors `a` and `b` see for one UDP socket of `home`'s first
/// host; also checks that a stranger cannot send to the mapping and reflector `a` can.
fn udp_mappings(home: &Home, net: &Internet) -> (SocketAddrV4, SocketAddrV4) {
    let sock = home.host().netns.udp_socket(0).unwrap();
    let seen_a = Reflector::ask_udp(&sock, net.a.addr, WAIT).unwrap();
    let seen_b = Reflector::ask_udp(&sock, net.b.addr, WAIT).unwrap();
    let (Some(seen_a), Some(seen_b)) = (seen_a, seen_b) else {
        panic!("home {home:?}: UDP reflectors answered {seen_a:?} and {seen_b:?}");
    };
    assert_eq!(*seen_a.ip(), home.public_ip(), "{home:?}");
    assert_eq!(*seen_b.ip(), home.public_ip(), "{home:?}");
    // Inbound: a host the inside host never sent to is dropped, one it sent to gets through.
    let unsolicited = token("unsolicited", home);
    assert_eq!(
        arrives(&net.stranger, seen_a, &sock, &unsolicited, SILENCE),
        None,
        "home {} ({}): an unsolicited datagram from {} reached the inside host",
        home.index,
        home.kind,
        net.stranger.addr
    );
    let reply = token("reply", home);
    assert_eq!(
        arrives(&net.a, seen_a, &sock, &reply, WAIT),
        Some(SocketAddr::V4(net.a.addr)),
        "home {} ({}): reflector a could not send back to {seen_a}",
        home.index,
        home.kind
    );
    (seen_a, seen_b)
}

/// An endpoint-independent mapping: both reflectors see the same external port.
fn check_eim(home: &Home, net: &Internet) {
    let (seen_a, seen_b) = udp_mappings(home, net);
    assert_eq!(
        seen_a, seen_b,
        "home {} ({}): two destinations saw two mappings",
        home.index, home.kind
    );
}

/// What an unsolicited UDP datagram and TCP connection from `from` to `to` get back.
fn unsolicited_answer(from: &Host, to: SocketAddrV4) -> (std::io::ErrorKind, std::io::ErrorKind) {
    let udp = from
        .netns
        .enter(|| {
            let sock = std::net::UdpSocket::bind((from.ip, 0))?;
            sock.connect(to)?;
            sock.set_read_timeout(Some(SILENCE))?;
            sock.send(b"knock")?;
            // A connected socket reports an ICMP port unreachable as ECONNREFUSED.
            Ok(sock
                .recv(&mut [0u8; 64])
                .map_or_else(|e| e.kind(), |_| std::io::ErrorKind::Other))
        })
        .unwrap();
    let tcp = from
        .netns
        .tcp_connect(to, SILENCE)
        .map_or_else(|e| error_kind(&e), |_| std::io::ErrorKind::Other);
    (udp, tcp)
}

fn error_kind(e: &Error) -> std::io::ErrorKind {
    match e {
        Error::Io { source, .. } => source.kind(),
        _ => std::io::ErrorKind::Other,
    }
}

/// A router drops unsolicited packets to itself: no ICMP port unreachable and no TCP reset
/// come back, where an internet host without a listener answers both.
fn check_router_silent(home: &Home, net: &Internet) {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    let wan = home.router.as_ref().unwrap().wan_ip;
    let (udp, tcp) = unsolicited_answer(&net.stranger_host, SocketAddrV4::new(wan, 9));
    assert!(
        matches!(udp, WouldBlock | TimedOut) && tcp == TimedOut,
        "home {} ({}): the router answered unsolicited packets (UDP {udp:?}, TCP {tcp:?})",
        home.index,
        home.kind
    );
}

fn check_public(home: &Home, net: &Internet) {
    let host = home.host();
    let sock = host.netns.udp_socket(0).unwrap();
    let local = sock.local_addr().unwrap().port();
    let seen = Reflector::ask_udp(&sock, net.a.addr, WAIT).unwrap();
    assert_eq!(
        seen,
        Some(host.addr(local)),
        "a public host is seen as itself"
    );
    // Reachable inbound without having sent anything: UDP and TCP.
    let unsolicited = token("unsolicited", home);
    assert_eq!(
        arrives(&net.stranger, host.addr(local), &sock, &unsolicited, WAIT),
        Some(SocketAddr::V4(net.stranger.addr))
    );
    let listener = host.netns.tcp_listener(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let _conn = net
        .stranger_host
        .netns
        .tcp_connect(host.addr(port), WAIT)
        .unwrap();
    let (_, from) = listener.accept().unwrap();
    assert_eq!(from.ip(), std::net::IpAddr::V4(net.stranger_host.ip));
}

fn check_symmetric(home: &Home, net: &Internet) {
    let (seen_a, seen_b) = udp_mappings(home, net);
    assert_ne!(
        seen_a.port(),
        seen_b.port(),
        "a symmetric NAT maps each destination to its own port"
    );
}

fn check_udp_blocked(home: &Home, net: &Internet) {
    let sock = home.host().netns.udp_socket(0).unwrap();
    let seen = Reflector::ask_udp(&sock, net.a.addr, SILENCE).unwrap();
    assert_eq!(seen, None, "UDP went through a UDP-blocking router");
}

fn check_shared_lan(home: &Home) {
    assert!(home.hosts.len() >= 2);
    let (h0, h1) = (&home.hosts[0], &home.hosts[1]);
    // UDP and TCP between neighbours on their LAN addresses, not through the NAT.
    let sock0 = h0.netns.udp_socket(0).unwrap();
    let port0 = sock0.local_addr().unwrap().port();
    let sock1 = h1.netns.udp_socket(0).unwrap();
    let hello = token("neighbour", home);
    sock1.send_to(&hello, h0.addr(port0)).unwrap();
    let from = wait_for_datagram(&sock0, &hello, WAIT).unwrap();
    assert_eq!(from.map(|a| a.ip()), Some(std::net::IpAddr::V4(h1.ip)));
    let listener = h0.netns.tcp_listener(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let _conn = h1.netns.tcp_connect(h0.addr(port), WAIT).unwrap();
    let (_, from) = listener.accept().unwrap();
    assert_eq!(from.ip(), std::net::IpAddr::V4(h1.ip));
}

/// Maps `port` with `natpmpc` (NAT-PMP) and with `upnpc` (UPnP IGD) from inside the home;
/// a stranger's datagram to the mapped port is dropped before and delivered after.
fn check_upnp(home: &Home, net: &Internet) {
    let router = home.router.as_ref().unwrap();
    let host = home.host();
    for (port, tool) in [(40000u16, "natpmpc"), (40001, "upnpc")] {
        let sock = host.netns.udp_socket(port).unwrap();
        let external = SocketAddrV4::new(router.wan_ip, port);
        let before = token(&format!("before {tool}"), home);
        assert_eq!(
            arrives(&net.stranger, external, &sock, &before, SILENCE),
            None,
            "{external} was open before {tool} mapped it"
        );
        let p = port.to_string();
        let out = match tool {
            "natpmpc" => host.netns.run(
                "natpmpc",
                ["-g", &router.lan_ip.to_string(), "-a", &p, &p, "udp", "600"],
            ),
            _ => host
                .netns
                .run("upnpc", ["-a", &host.ip.to_string(), &p, &p, "UDP"]),
        }
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        let expect = match tool {
            "natpmpc" => format!("Mapped public port {port} protocol UDP to local port {port}"),
            _ => format!(
                "external {}:{port} UDP is redirected to internal {}:{port}",
                router.wan_ip, host.ip
            ),
        };
        assert!(said.contains(&expect), "{tool} said:\n{said}");
        let after = token(&format!("after {tool}"), home);
        assert_eq!(
            arrives(&net.stranger, external, &sock, &after, WAIT),
            Some(SocketAddr::V4(net.stranger.addr)),
            "{tool} mapped {external} but the stranger's datagram did not arrive"
        );
    }
    // PCP, as port mappers try first.
    let port = 40002;
    let sock = host.netns.udp_socket(port).unwrap();
    let before = token("before PCP", home);
    let wanted = SocketAddrV4::new(router.wan_ip, port);
    assert_eq!(
        arrives(&net.stranger, wanted, &sock, &before, SILENCE),
        None
    );
    let external = pcp_map(home, port);
    assert_eq!(*external.ip(), router.wan_ip);
    let after = token("after PCP", home);
    assert_eq!(
        arrives(&net.stranger, external, &sock, &after, WAIT),
        Some(SocketAddr::V4(net.stranger.addr)),
        "PCP mapped {external} but the stranger's datagram did not arrive"
    );
}

/// The body of `GET path` (HTTP/1.0, so the server closes) from `host` to `server`.
fn http_get(host: &Host, server: SocketAddr, path: &str) -> Vec<u8> {
    let SocketAddr::V4(server) = server else {
        panic!("{server} is not IPv4")
    };
    let mut stream = host.netns.tcp_connect(server, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {server}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP header");
    assert!(
        response.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&response[..split])
    );
    response.split_off(split + 4)
}

/// A PCP MAP request (RFC 6887 §11.1) from `client` for UDP `port` to the same external
/// port, 600 s. No Debian package has a PCP client, so the test writes the 60 bytes itself.
fn pcp_map_request(client: std::net::Ipv4Addr, port: u16, nonce: [u8; 12]) -> Vec<u8> {
    let mut m = vec![2, 1, 0, 0];
    m.extend(600u32.to_be_bytes());
    m.extend(client.to_ipv6_mapped().octets());
    m.extend(nonce);
    m.extend([17, 0, 0, 0]);
    m.extend(port.to_be_bytes());
    m.extend(port.to_be_bytes());
    m.extend(std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets());
    m
}

/// Maps `port` with PCP through the router's `miniupnpd`; returns the external address it
/// assigned.
fn pcp_map(home: &Home, port: u16) -> SocketAddrV4 {
    let router = home.router.as_ref().unwrap();
    let host = home.host();
    let sock = host.netns.udp_socket(0).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let nonce = *b"shoal-lab-01";
    sock.send_to(
        &pcp_map_request(host.ip, port, nonce),
        (router.lan_ip, 5351),
    )
    .unwrap();
    let mut buf = [0u8; 1100];
    let (n, _) = sock
        .recv_from(&mut buf)
        .expect("a PCP answer from miniupnpd");
    let r = &buf[..n];
    assert!(n >= 60, "PCP answer of {n} bytes: {r:?}");
    assert_eq!(
        (r[0], r[1], r[3]),
        (2, 0x81, 0),
        "PCP version, MAP response, SUCCESS: {r:?}"
    );
    assert_eq!(&r[24..36], &nonce);
    assert_eq!(u16::from_be_bytes([r[40], r[41]]), port);
    let external_port = u16::from_be_bytes([r[42], r[43]]);
    let ip: [u8; 16] = r[44..60].try_into().unwrap();
    let ip = std::net::Ipv6Addr::from(ip)
        .to_ipv4_mapped()
        .expect("an IPv4 external address");
    SocketAddrV4::new(ip, external_port)
}

#[test]
fn every_home_kind_behaves_as_labelled() {
    let Some(mut lab) = lab() else { return };
    let started = Instant::now();
    let net = Internet::new(&mut lab);
    let homes: Vec<Home> = HomeKind::ALL
        .into_iter()
        .map(|kind| lab.add_home(kind).unwrap())
        .collect();
    eprintln!(
        "lab of {} homes built in {:?}",
        homes.len(),
        started.elapsed()
    );
    // An nginx origin on the internet.
    let origin_host = lab.add_server("origin").unwrap();
    let site = tempfile::tempdir().unwrap();
    let body = b"a segment from the lab's origin\n".repeat(4000);
    std::fs::write(site.path().join("seg.ts"), &body).unwrap();
    let origin = Nginx::start_in(&origin_host, 80, site.path()).unwrap();
    // Every host of every home reaches TCP servers on the internet, from its public
    // address, and downloads the origin's file intact.
    for home in &homes {
        for host in &home.hosts {
            let seen = Reflector::ask_tcp(host, net.a.addr, WAIT)
                .unwrap_or_else(|e| panic!("{} ({}): {e}", host.netns, home.kind));
            assert_eq!(*seen.ip(), home.public_ip(), "{host:?}");
            let got = http_get(host, origin.addr, "/seg.ts");
            assert!(
                got == body,
                "{} ({}): the origin's file differs",
                host.netns,
                home.kind
            );
        }
    }
    let requests = origin.requests().unwrap();
    let hosts: usize = homes.iter().map(|h| h.hosts.len()).sum();
    assert_eq!(requests.len(), hosts, "{requests:?}");
    assert!(requests.iter().all(|r| r.status == 200));
    // A host without a listener answers with ICMP port unreachable and a TCP reset (so the
    // silence below is the routers' doing).
    assert_eq!(
        unsolicited_answer(
            &net.stranger_host,
            SocketAddrV4::new(net.a.addr.ip().to_owned(), 9)
        ),
        (
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::ConnectionRefused
        )
    );
    std::thread::scope(|s| {
        for home in homes.iter().filter(|h| h.router.is_some()) {
            let net = &net;
            s.spawn(move || check_router_silent(home, net));
        }
    });
    // Each home's own checks, the homes side by side (each waits for silences).
    std::thread::scope(|s| {
        for home in &homes {
            let net = &net;
            s.spawn(move || match home.kind {
                HomeKind::Public => check_public(home, net),
                HomeKind::SharedLan => {
                    check_shared_lan(home);
                    check_eim(home, net);
                }
                HomeKind::Eim => check_eim(home, net),
                HomeKind::Upnp => {
                    check_eim(home, net);
                    check_upnp(home, net);
                }
                HomeKind::Symmetric => check_symmetric(home, net),
                HomeKind::UdpBlocked => check_udp_blocked(home, net),
            });
        }
    });
    eprintln!("checked in {:?}", started.elapsed());
}

/// Two labs at once (this test runs beside the others) give the same addresses to their
/// machines, and no packet crosses from one to the other.
#[test]
fn two_labs_at_once_reuse_addresses_without_crossing() {
    let (Some(mut one), Some(mut two)) = (lab(), lab()) else {
        return;
    };
    let server_one = one.add_server("reflector").unwrap();
    let server_two = two.add_server("reflector").unwrap();
    let home_one = one.add_home(HomeKind::Eim).unwrap();
    let home_two = two.add_home(HomeKind::Eim).unwrap();
    assert_eq!(server_one.ip, server_two.ip);
    assert_eq!(home_one.host().ip, home_two.host().ip);
    assert_ne!(one.prefix(), two.prefix());
    // A reflector only in lab one.
    let reflector = Reflector::start(&server_one, REFLECT).unwrap();
    let sock_one = home_one.host().netns.udp_socket(0).unwrap();
    let sock_two = home_two.host().netns.udp_socket(0).unwrap();
    assert!(Reflector::ask_udp(&sock_one, reflector.addr, WAIT)
        .unwrap()
        .is_some());
    assert_eq!(
        Reflector::ask_udp(&sock_two, reflector.addr, SILENCE).unwrap(),
        None,
        "lab two reached lab one's reflector"
    );
    // Lab two's own server at the same address refuses: nothing listens there.
    assert!(Reflector::ask_tcp(home_two.host(), reflector.addr, WAIT).is_err());
    let own = Reflector::start(&server_two, REFLECT).unwrap();
    assert!(Reflector::ask_udp(&sock_two, own.addr, WAIT)
        .unwrap()
        .is_some());
}

/// Dropping a lab, here while a test unwinds from a panic, removes its namespaces and kills
/// what runs in them (`miniupnpd`, and a child the test did not guard).
#[test]
fn a_lab_is_removed_when_a_test_panics_midway() {
    let Some(mut lab) = lab() else { return };
    let home = lab.add_home(HomeKind::Upnp).unwrap();
    let router = home.router.clone().unwrap();
    let prefix = lab.prefix().to_owned();
    let mut child = home
        .host()
        .netns
        .command("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", router.netns.name()])
        .output()
        .unwrap();
    let daemon_pids: Vec<u32> = String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(!daemon_pids.is_empty(), "miniupnpd runs in the router");
    assert!(lab.existing_namespaces().len() >= 3);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _lab = lab;
        panic!("a test failing midway");
    }));
    assert!(unwound.is_err());
    let left: Vec<String> = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter(|l| l.starts_with(&prefix))
    .map(str::to_owned)
    .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.is_some_and(|s| !s.success()),
        "the child was not killed"
    );
    for pid in daemon_pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "miniupnpd {pid} still runs"
        );
    }
}
