//! Real servers for tests, each on an ephemeral loopback port, stopped when dropped.
//!
//! Every helper starts the real program (installed by `./ci.sh`), waits until it answers,
//! and kills and reaps it on drop. A missing program is a clear error that names the Debian
//! package to install. Everything is written into temporary directories, never into the
//! repository.
//!
//! | helper | what |
//! |---|---|
//! | [`RedisServer`] | `redis-server` without persistence |
//! | [`RedisCluster`] | six `redis-server` processes joined into a Redis Cluster (three masters, three replicas); kill a master, stop and restart it all |
//! | [`Nginx`] | nginx as the origin CDN, with HLS/DASH MIME types and a parseable access log |
//! | [`LiveHls`] | an ffmpeg live HLS encoder (TS or fMP4) writing into a folder nginx serves |
//! | [`LiveDash`] | an ffmpeg live DASH encoder (`$Number$` template or `SegmentTimeline`) |
//! | [`encode_vod_ladder`] | a cached two-rendition VOD ladder (fMP4 + TS) and a byte-range rendition |
//! | [`FfmpegPlayer`] | ffmpeg as a player that downloads a stream and reports its errors |
//! | [`eventually`], [`poll_until`] | bounded waits for a condition no event signals |
//! | [`metrics_text`] | reads a `/metrics` page into series values |
//! | [`RecordingRelay`] | an HTTP relay that records a SHA-256 of every response body it forwards |
//! | [`netlab::NatLab`] | a NAT lab in network namespaces: an internet bridge, servers, and homes behind NAT routers of each [`netlab::HomeKind`] (root) |

mod archive;
mod ffmpeg;
mod ffmpeg_player;
mod live;
mod live_dash;
pub mod metrics_text;
pub mod netlab;
mod nginx;
pub mod pki;
mod poll;
mod recording_relay;
mod redis;
mod redis_cluster;
mod vod;

pub use ffmpeg_player::{FfmpegPlayer, PlayerOpts, PlayerOutcome};
pub use live::{LiveHls, LiveHlsOpts, SegmentFormat};
pub use live_dash::{LiveDash, LiveDashOpts};
pub use nginx::{AccessLogEntry, Nginx};
pub use poll::{eventually, poll_until};
pub use recording_relay::{Record, RecordingRelay};
pub use redis::{RedisServer, RedisTls};
pub use redis_cluster::{ClusterMaster, RedisCluster, CLUSTER_NODES};
pub use vod::{encode_vod_ladder, VodLadder};

use sha2::{Digest, Sha256};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::Duration;
use tokio::time::Instant;

/// What went wrong while starting, driving or reading a test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program the helper runs is not installed.
    #[error("`{program}` not found: install the Debian package `{package}` (./ci.sh does)")]
    MissingProgram {
        /// The executable's name.
        program: String,
        /// The Debian package that provides it.
        package: String,
    },
    /// Something that needs root was started by a process that is not root.
    #[error("{what} needs root; run the tests as root (CI does)")]
    NotRoot {
        /// What needs it, and why.
        what: String,
    },
    /// A file, socket or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the helper was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A server, encoder or player did not reach the awaited state in time.
    #[error("timed out after {timeout:?} waiting for {what}; log:\n{log}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the helper waited.
        timeout: Duration,
        /// The tail of the program's own log, to see why.
        log: String,
    },
    /// A program exited while it should still run, or exited with a failure.
    #[error("{what} exited with {status}; its log:\n{log}")]
    Exited {
        /// Which program.
        what: String,
        /// How it exited.
        status: ExitStatus,
        /// The tail of its log.
        log: String,
    },
    /// A log or playlist did not have the expected form, or an argument made no sense.
    #[error("{what}: {detail}")]
    Invalid {
        /// What was read or asked for.
        what: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wraps an `io::Error` with what the helper was doing.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding an ephemeral loopback port")
}

/// Finds `program` on PATH or in the usual sbin folders, or says which package provides it.
pub fn which(program: &str, package: &str) -> Result<PathBuf> {
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
    Err(Error::MissingProgram {
        program: program.into(),
        package: package.into(),
    })
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
    Err(Error::Timeout {
        what: format!("a listener on {addr}"),
        timeout,
        log: String::new(),
    })
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

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of a file's contents, or of `range` (start, inclusive end) of it.
pub fn sha256_file(path: &Path, range: Option<(u64, u64)>) -> Result<String> {
    let bytes = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
    let slice = match range {
        None => &bytes[..],
        Some((start, end)) => usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| bytes.get(s..=e))
            .ok_or_else(|| Error::Invalid {
                what: format!("range {start}-{end} of {}", path.display()),
                detail: format!("the file has {} bytes", bytes.len()),
            })?,
    };
    Ok(sha256_hex(slice))
}

/// The file a static origin serves for a request path (`/a/b.ts?x=1` -> `root/a/b.ts`).
///
/// The query is dropped; the path is not percent-decoded (test content uses plain names).
pub fn origin_file_for(root: &Path, path: &str) -> PathBuf {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_package() {
        let err = which("shoal-no-such-program", "shoal-some-package").unwrap_err();
        assert!(matches!(err, Error::MissingProgram { .. }));
        assert!(err.to_string().contains("`shoal-some-package`"), "{err}");
    }

    #[test]
    fn origin_file_for_drops_the_query() {
        let root = Path::new("/srv");
        assert_eq!(
            origin_file_for(root, "/live/a.ts?t=1"),
            Path::new("/srv/live/a.ts")
        );
    }

    #[test]
    fn sha256_file_hashes_inclusive_ranges_and_rejects_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"0123456789").unwrap();
        assert_eq!(sha256_file(&f, None).unwrap(), sha256_hex(b"0123456789"));
        assert_eq!(sha256_file(&f, Some((2, 4))).unwrap(), sha256_hex(b"234"));
        assert!(sha256_file(&f, Some((5, 10))).is_err());
    }
}
