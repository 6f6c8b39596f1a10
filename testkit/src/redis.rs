//! `redis-server` without persistence.

use crate::{free_port, io_err, wait_for_port, which, ChildGuard, Error, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// The PEM files a TLS `redis-server` serves with (`--tls-port`; clients are not asked for
/// certificates).
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// Its certificate chain; it must name 127.0.0.1.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that signed it (what clients verify against).
    pub ca: PathBuf,
}

impl RedisTls {
    /// The `redis-server` arguments that serve TLS on `port` and plain TCP nowhere.
    pub(crate) fn server_args(&self, port: u16) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string().into(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        for (flag, path) in [
            ("--tls-cert-file", &self.cert),
            ("--tls-key-file", &self.key),
            ("--tls-ca-cert-file", &self.ca),
        ] {
            args.push(flag.into());
            args.push(path.into());
        }
        args
    }

    /// The `redis-cli` arguments that talk TLS to such a server.
    pub(crate) fn cli_args(&self) -> Vec<std::ffi::OsString> {
        vec!["--tls".into(), "--cacert".into(), self.ca.clone().into()]
    }
}

/// A real `redis-server` on an ephemeral loopback port, with no persistence.
#[derive(Debug)]
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT` (`rediss://` when it serves TLS)
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts redis-server and waits until it answers PING.
    pub fn start() -> Result<Self> {
        Self::start_with(None)
    }

    /// Starts redis-server serving TLS only, and waits until it answers PING over TLS.
    pub fn start_tls(tls: &RedisTls) -> Result<Self> {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&RedisTls>) -> Result<Self> {
        let bin = which("redis-server", "redis-server")?;
        let cli = match tls {
            Some(_) => Some(which("redis-cli", "redis-tools")?),
            None => None,
        };
        let dir = tempfile::tempdir().map_err(io_err("creating a temp dir"))?;
        let port = free_port();
        let mut command = Command::new(bin);
        match tls {
            Some(tls) => command.args(tls.server_args(port)),
            None => command.args(["--port", &port.to_string()]),
        };
        let child = command
            .args([
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
        let ready = || match (tls, &cli) {
            (Some(tls), Some(cli)) => Command::new(cli)
                .args(tls.cli_args())
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "ping"])
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"PONG")),
            _ => answers_ping(addr),
        };
        while !ready() {
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("redis-server on {addr} to answer PING"),
                    timeout,
                    log: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let scheme = if tls.is_some() { "rediss" } else { "redis" };
        Ok(Self {
            url: format!("{scheme}://{addr}"),
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
