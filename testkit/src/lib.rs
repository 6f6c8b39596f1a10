//! Real servers for tests, each on an ephemeral loopback port, stopped when dropped.
//!
//! Every helper starts the real program (installed by `.ci/run`), waits until it answers,
//! and kills it on drop. A missing program is a clear error that names the package to install.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Finds `program` on PATH or in the usual sbin folders, or says which package provides it.
pub fn which(program: &str, package: &str) -> Result<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
    {
        let p = Path::new(dir).join(program);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("`{program}` not found: install the Debian package `{package}` (bash .ci/run does)")
}

/// Waits until `addr` accepts TCP connections, or fails after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listened on {addr} within {timeout:?}")
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real `redis-server` on an ephemeral loopback port, with no persistence.
#[derive(Debug)]
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts redis-server and waits until it answers PING.
    pub fn start() -> Result<Self> {
        let bin = which("redis-server", "redis-server")?;
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let child = Command::new(bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let child = ChildGuard(child);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_for_port(addr, Duration::from_secs(10))?;
        // Wait for PING, not just the socket: redis accepts before it has loaded.
        let start = Instant::now();
        loop {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).unwrap_or(0);
            if buf[..n].starts_with(b"+PONG") {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("redis-server on {addr} did not answer PING");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            url: format!("redis://{addr}"),
            addr,
            _child: child,
            _dir: dir,
        })
    }
}
