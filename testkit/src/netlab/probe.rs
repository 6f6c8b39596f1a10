//! A reflector on a lab host that tells each client the source address it saw (what a STUN
//! server does, in plain text), over UDP and TCP, and the functions that ask it.

use super::Host;
use crate::{io_err, Error, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::time::Instant;

/// How often the reflector's threads look at the stop flag.
const TICK: Duration = Duration::from_millis(50);

/// Answers every UDP datagram and every TCP connection on `addr` with `seen IP:PORT\n`, the
/// source address it came from. Stopped on drop.
#[derive(Debug)]
pub struct Reflector {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddrV4,
    udp: UdpSocket,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Reflector {
    /// Starts a reflector on `host` at `host.ip:port`, UDP and TCP.
    pub fn start(host: &Host, port: u16) -> Result<Self> {
        let addr = host.addr(port);
        let (udp, tcp) = host.netns.enter(|| {
            let udp = UdpSocket::bind(addr)?;
            let tcp = std::net::TcpListener::bind(addr)?;
            udp.set_read_timeout(Some(TICK))?;
            tcp.set_nonblocking(true)?;
            Ok((udp, tcp))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let (sock, flag) = (
            udp.try_clone().map_err(io_err("cloning a UDP socket"))?,
            stop.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(format!("seen {from}\n").as_bytes(), from);
                }
            }
        }));
        let flag = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((mut stream, from)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
                        let _ = stream.write_all(format!("seen {from}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(TICK / 5),
                }
            }
        }));
        Ok(Self {
            addr,
            udp,
            stop,
            threads,
        })
    }

    /// Sends `payload` to `to` from the reflector's own UDP socket (so it comes from
    /// [`Reflector::addr`], as a reply would).
    pub fn send_udp(&self, to: SocketAddrV4, payload: &[u8]) -> Result<()> {
        self.udp
            .send_to(payload, to)
            .map(drop)
            .map_err(io_err(format!("sending from {} to {to}", self.addr)))
    }

    /// Asks the reflector at `reflector` over `sock` which address it sees: sends a probe
    /// every 250 ms until an answer from `reflector` comes or `timeout` passes (`None`).
    pub fn ask_udp(
        sock: &UdpSocket,
        reflector: SocketAddrV4,
        timeout: Duration,
    ) -> Result<Option<SocketAddrV4>> {
        let start = Instant::now();
        let mut buf = [0u8; 1500];
        while start.elapsed() < timeout {
            sock.send_to(b"probe", reflector)
                .map_err(io_err(format!("sending a probe to {reflector}")))?;
            let round = Instant::now();
            while round.elapsed() < Duration::from_millis(250) && start.elapsed() < timeout {
                sock.set_read_timeout(Some(Duration::from_millis(50)))
                    .map_err(io_err("setting a read timeout"))?;
                match sock.recv_from(&mut buf) {
                    Ok((n, SocketAddr::V4(from))) if from == reflector => {
                        return parse_seen(&buf[..n]).map(Some);
                    }
                    Ok(_) => {}
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => return Err(io_err(format!("reading from {reflector}"))(e)),
                }
            }
        }
        Ok(None)
    }

    /// Asks the reflector at `reflector` over a new TCP connection from `host` which
    /// address it sees.
    pub fn ask_tcp(
        host: &Host,
        reflector: SocketAddrV4,
        timeout: Duration,
    ) -> Result<SocketAddrV4> {
        let mut stream = host.netns.tcp_connect(reflector, timeout)?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io_err("setting a read timeout"))?;
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .map_err(io_err(format!("reading from {reflector}")))?;
        parse_seen(&answer)
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits up to `timeout` for a datagram carrying exactly `token` on `sock`, ignoring any
/// other; returns where it came from, or `None` if none came.
pub fn wait_for_datagram(
    sock: &UdpSocket,
    token: &[u8],
    timeout: Duration,
) -> Result<Option<SocketAddr>> {
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    while start.elapsed() < timeout {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(io_err("setting a read timeout"))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if &buf[..n] == token => return Ok(Some(from)),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(io_err("waiting for a datagram")(e)),
        }
    }
    Ok(None)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// `seen IP:PORT\n` -> the address.
fn parse_seen(answer: &[u8]) -> Result<SocketAddrV4> {
    let text = String::from_utf8_lossy(answer);
    text.trim()
        .strip_prefix("seen ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Error::Invalid {
            what: "a reflector's answer".into(),
            detail: format!("expected `seen IP:PORT`, got {text:?}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_or_say_what_they_got() {
        assert_eq!(
            parse_seen(b"seen 11.7.2.3:40000\n").unwrap(),
            "11.7.2.3:40000".parse().unwrap()
        );
        assert!(parse_seen(b"hello").is_err());
        assert!(parse_seen(b"seen [::1]:4").is_err());
    }
}
