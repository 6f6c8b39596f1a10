//! nginx as the origin CDN.

use crate::ffmpeg::{poll_async, poll_blocking};
use crate::netlab::{Host, Netns};
use crate::{free_port, io_err, which, ChildGuard, Error, Result};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A real nginx serving a folder as a static origin on an ephemeral loopback port (or, with
/// [`Nginx::start_in`], on a NAT lab host).
///
/// HLS/DASH MIME types, `Cache-Control: no-cache` on playlists and MPDs, byte ranges, and an
/// access log that [`Nginx::requests`] parses so tests can count real origin egress.
#[derive(Debug)]
pub struct Nginx {
    /// Its address.
    pub addr: SocketAddr,
    /// The folder it serves.
    pub root: PathBuf,
    child: ChildGuard,
    dir: tempfile::TempDir,
}

/// One request from nginx's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogEntry {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query as the client sent them.
    pub uri: String,
    /// HTTP status nginx answered.
    pub status: u16,
    /// Response body bytes sent (`$body_bytes_sent`): the egress that offload saves.
    pub body_bytes: u64,
    /// The request's `Range` header, if any.
    pub range: Option<String>,
    /// The request's `User-Agent`, if any (`shoal-tracker/…` for the digest service).
    pub user_agent: Option<String>,
}

impl Nginx {
    /// Starts nginx serving `root` and waits until it accepts connections.
    pub fn start(root: &Path) -> Result<Self> {
        let bin = which("nginx", "nginx-light")?;
        let root = root
            .canonicalize()
            .map_err(io_err(format!("resolving {}", root.display())))?;
        // The port is free when picked but another process may take it before nginx binds.
        let mut attempts = 3;
        loop {
            attempts -= 1;
            let addr = ([127, 0, 0, 1], free_port()).into();
            match Self::start_on(&bin, &root, addr, None) {
                Err(Error::Exited { log, .. })
                    if attempts > 0 && log.contains("Address already in use") => {}
                started => return started,
            }
        }
    }

    /// Starts nginx serving `root` on `host.ip:port` inside a [`NatLab`](crate::netlab::NatLab)
    /// host's namespace (an origin on the lab's internet, say), and waits until it accepts
    /// connections there. [`Nginx::url`] and [`Nginx::host_port`] then name that address,
    /// which only the lab's namespaces reach.
    pub fn start_in(host: &Host, port: u16, root: &Path) -> Result<Self> {
        let bin = which("nginx", "nginx-light")?;
        let root = root
            .canonicalize()
            .map_err(io_err(format!("resolving {}", root.display())))?;
        Self::start_on(&bin, &root, host.addr(port).into(), Some(&host.netns))
    }

    fn start_on(bin: &Path, root: &Path, addr: SocketAddr, netns: Option<&Netns>) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io_err("creating a temp dir"))?;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config(dir.path(), root, addr)?)
            .map_err(io_err("writing nginx.conf"))?;
        let mut command = match netns {
            Some(netns) => netns.command(bin),
            None => Command::new(bin),
        };
        let child = command
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err("starting nginx"))?;
        let mut nginx = Self {
            addr,
            root: root.to_path_buf(),
            child: ChildGuard(child),
            dir,
        };
        let timeout = Duration::from_secs(10);
        let ready = poll_blocking(timeout, || {
            if let Some(status) = nginx
                .child
                .0
                .try_wait()
                .map_err(io_err("waiting for nginx"))?
            {
                return Err(Error::Exited {
                    what: "nginx".into(),
                    status,
                    log: nginx.error_log(),
                });
            }
            let wait = Duration::from_millis(200);
            let accepts = match (netns, addr) {
                (Some(netns), SocketAddr::V4(v4)) => netns.tcp_connect(v4, wait).is_ok(),
                _ => TcpStream::connect_timeout(&addr, wait).is_ok(),
            };
            Ok(accepts.then_some(()))
        })?;
        match ready {
            Some(()) => Ok(nginx),
            None => Err(Error::Timeout {
                what: format!("nginx to listen on {addr}"),
                timeout,
                log: nginx.error_log(),
            }),
        }
    }

    /// nginx's process id (to pause it with SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// `IP:PORT` (`127.0.0.1:PORT` unless started in a lab), the origin host as the edge
    /// proxy's path-preserving URLs name it.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// `http://IP:PORT/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// The file on disk nginx serves for a request path. Accepts an origin path
    /// (`/live/seg_00001.ts`) or a path-preserving proxy path naming this origin
    /// (`/127.0.0.1:PORT/live/seg_00001.ts`); the query is ignored.
    pub fn file_for(&self, path: &str) -> PathBuf {
        let own = format!("/{}", self.host_port());
        let path = match path.strip_prefix(&own) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => path,
        };
        crate::origin_file_for(&self.root, path)
    }

    /// Every request nginx has logged so far, oldest first.
    ///
    /// nginx logs a request just after sending its last byte, so a client that has just read
    /// a response may get here first: wait for the expected count with a bounded poll.
    pub fn requests(&self) -> Result<Vec<AccessLogEntry>> {
        let path = self.dir.path().join("access.log");
        let log = match std::fs::read_to_string(&path) {
            Ok(log) => log,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_err("reading nginx's access log")(e)),
        };
        log.lines().map(parse_log_line).collect()
    }

    /// Waits (yielding to the async runtime) until nginx has logged at least `n` requests,
    /// and returns them all.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<AccessLogEntry>> {
        let check = || Ok(Some(self.requests()?).filter(|r| r.len() >= n));
        poll_async(timeout, check)
            .await?
            .ok_or_else(|| Error::Timeout {
                what: format!("nginx to log {n} requests"),
                timeout,
                log: self.error_log(),
            })
    }

    /// Total response body bytes nginx has sent: the real origin egress.
    pub fn bytes_sent(&self) -> Result<u64> {
        Ok(self.requests()?.iter().map(|r| r.body_bytes).sum())
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// Tab-separated so that no field can be confused with the next (nginx escapes control
/// characters in variables).
const LOG_FORMAT: &str =
    "$request_method\\t$request_uri\\t$status\\t$body_bytes_sent\\t$http_range\\t$http_user_agent";

fn parse_log_line(line: &str) -> Result<AccessLogEntry> {
    let bad = |detail: &str| Error::Invalid {
        what: format!("nginx access log line {line:?}"),
        detail: detail.into(),
    };
    let f: Vec<&str> = line.split('\t').collect();
    let [method, uri, status, body_bytes, range, user_agent] = f[..] else {
        return Err(bad("expected 6 tab-separated fields"));
    };
    Ok(AccessLogEntry {
        method: method.into(),
        uri: uri.into(),
        status: status.parse().map_err(|_| bad("status"))?,
        body_bytes: body_bytes.parse().map_err(|_| bad("body bytes"))?,
        range: (range != "-").then(|| range.into()),
        user_agent: (user_agent != "-").then(|| user_agent.into()),
    })
}

fn config(dir: &Path, root: &Path, addr: SocketAddr) -> Result<String> {
    let d = dir.display();
    // nginx refuses paths with spaces or quotes unquoted; temp dirs have neither, but say so.
    for p in [dir, root] {
        let s = p.to_string_lossy();
        if s.contains(['"', ' ', ';', '\'']) {
            return Err(Error::Invalid {
                what: format!("nginx path {s}"),
                detail: "contains a space, quote or semicolon".into(),
            });
        }
    }
    // Single process (no master/worker split): a kill on drop then leaves no orphan worker
    // holding the port, and there is no switch to the `nobody` user, who could not read a
    // root-owned temp dir.
    Ok(format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp2t ts;
        video/iso.segment m4s;
        video/mp4 mp4;
        audio/mp4 m4a;
        application/dash+xml mpd;
        application/octet-stream key;
        text/vtt vtt;
        text/html html;
    }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
    log_format shoal "{LOG_FORMAT}";
    access_log {d}/access.log shoal;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {addr};
        root {root};
        location ~ \.(m3u8|mpd)$ {{
            add_header Cache-Control "no-cache" always;
        }}
    }}
}}
"#,
        root = root.display(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_lines() {
        let e = parse_log_line("GET\t/live/a.ts?x=1\t206\t100\tbytes=0-99\tshoal/0.1.0").unwrap();
        assert_eq!(e.uri, "/live/a.ts?x=1");
        assert_eq!(e.status, 206);
        assert_eq!(e.body_bytes, 100);
        assert_eq!(e.range.as_deref(), Some("bytes=0-99"));
        assert_eq!(e.user_agent.as_deref(), Some("shoal/0.1.0"));
        let bare = parse_log_line("GET\t/\t404\t0\t-\t-").unwrap();
        assert_eq!((bare.range, bare.user_agent), (None, None));
        assert!(parse_log_line("GET /x 200").is_err());
    }
}
