//! `redis-server` without persistence.

use crate::{free_port, io_err, wait_for_port, which, ChildGuard, Error, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

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
        let dir = tempfile::tempdir().map_err(io_err("creating a temp dir"))?;
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
            .map_err(io_err("starting redis-server"))?;
        let child = ChildGuard(child);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let timeout = Duration::from_secs(10);
        wait_for_port(addr, timeout)?;
        // Wait for PING, not just the socket: redis accepts before it has loaded.
        let start = Instant::now();
        while !answers_ping(addr) {
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("redis-server on {addr} to answer PING"),
                    timeout,
                    log: String::new(),
                });
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

fn answers_ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let mut buf = [0u8; 16];
    s.set_read_timeout(Some(Duration::from_secs(1))).is_ok()
        && s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}
