//! A Redis Cluster of six `redis-server` processes: three masters, three replicas.

use crate::redis::RedisTls;
use crate::{free_port, io_err, which, ChildGuard, Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// Nodes of a [`RedisCluster`].
pub const CLUSTER_NODES: usize = 6;

/// A real Redis Cluster on loopback: six `redis-server` processes on ephemeral ports (each with
/// its own cluster bus port), cluster-enabled, without persistence, joined by
/// `redis-cli --cluster create ... --cluster-replicas 1` into three masters with one replica
/// each. Every process is killed on drop and its folder removed.
#[derive(Debug)]
pub struct RedisCluster {
    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...` (`rediss+cluster://` over TLS): every
    /// node, in the form the tracker's `--store` takes.
    pub url: String,
    nodes: Vec<Node>,
    tls: Option<RedisTls>,
    node_timeout: Duration,
    redis_server: PathBuf,
    redis_cli: PathBuf,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Node {
    port: u16,
    bus_port: u16,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

/// A master of the cluster at the time it was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterMaster {
    /// Its process id.
    pub pid: u32,
    /// Its client port on 127.0.0.1.
    pub port: u16,
}

impl RedisCluster {
    /// Starts the cluster with `cluster-node-timeout` 5 s and waits until it is ready.
    pub fn start() -> Result<Self> {
        Self::start_with_node_timeout(Duration::from_secs(5))
    }

    /// Starts the cluster with this `cluster-node-timeout` (how long a master may be silent
    /// before its replica takes over) and waits until every node says `cluster_state:ok`,
    /// knows all six nodes and every replica is in sync.
    pub fn start_with_node_timeout(node_timeout: Duration) -> Result<Self> {
        Self::start_inner(node_timeout, None)
    }

    /// Starts the cluster as [`Self::start`] does, every node serving TLS only (clients, the
    /// cluster bus and replication), and waits until it is ready.
    pub fn start_tls(tls: &RedisTls) -> Result<Self> {
        Self::start_inner(Duration::from_secs(5), Some(tls.clone()))
    }

    fn start_inner(node_timeout: Duration, tls: Option<RedisTls>) -> Result<Self> {
        let redis_server = which("redis-server", "redis-server")?;
        let redis_cli = which("redis-cli", "redis-tools")?;
        let dir = tempfile::tempdir().map_err(io_err("creating a temp dir"))?;
        // Twelve distinct ports (client and bus port per node): `free_port` may hand out a
        // port again once it is released.
        let mut taken = std::collections::HashSet::new();
        let mut nodes = Vec::new();
        for i in 0..CLUSTER_NODES {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir(&node_dir).map_err(io_err("creating a node folder"))?;
            nodes.push(Node {
                port: distinct_port(&mut taken),
                bus_port: distinct_port(&mut taken),
                dir: node_dir,
                child: None,
            });
        }
        let mut cluster = Self {
            url: String::new(),
            nodes,
            tls,
            node_timeout,
            redis_server,
            redis_cli,
            _dir: dir,
        };
        // A node whose port another process took in the meantime exits at once: give it other
        // ports and start it again (a few times at most).
        for attempt in 0.. {
            cluster.spawn_all()?;
            std::thread::sleep(Duration::from_millis(100));
            let mut died = false;
            for n in &mut cluster.nodes {
                let exited = n
                    .child
                    .as_mut()
                    .is_some_and(|c| c.0.try_wait().ok().flatten().is_some());
                if exited {
                    died = true;
                    n.child = None;
                    n.port = distinct_port(&mut taken);
                    n.bus_port = distinct_port(&mut taken);
                }
            }
            if !died {
                break;
            }
            if attempt == 4 {
                return Err(Error::Timeout {
                    what: "every cluster node to bind its ports".into(),
                    timeout: Duration::from_millis(500),
                    log: cluster.log_tails(),
                });
            }
        }
        cluster.url = format!(
            "{}://{}",
            if cluster.tls.is_some() {
                "rediss+cluster"
            } else {
                "redis+cluster"
            },
            cluster
                .nodes
                .iter()
                .map(|n| format!("127.0.0.1:{}", n.port))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut create = Command::new(&cluster.redis_cli);
        if let Some(tls) = &cluster.tls {
            create.args(tls.cli_args());
        }
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("running redis-cli --cluster create"))?;
        if !out.status.success() {
            return Err(Error::Exited {
                what: "redis-cli --cluster create".into(),
                status: out.status,
                log: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    fn spawn_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.spawn(i)?;
            }
        }
        // Until each node listens, or has exited (a port taken: the caller sees it).
        for n in &mut self.nodes {
            let addr = ([127, 0, 0, 1], n.port).into();
            let start = Instant::now();
            loop {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    break;
                }
                let exited = n
                    .child
                    .as_mut()
                    .is_none_or(|c| c.0.try_wait().ok().flatten().is_some());
                if exited {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(Error::Timeout {
                        what: format!("redis-server to listen on {addr}"),
                        timeout: Duration::from_secs(10),
                        log: String::new(),
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let timeout_ms = self.node_timeout.as_millis().to_string();
        let n = &mut self.nodes[i];
        let log = n.dir.join("redis.log");
        let mut command = Command::new(&self.redis_server);
        match &self.tls {
            Some(tls) => command.args(tls.server_args(n.port)).args([
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
            ]),
            None => command.args(["--port", &n.port.to_string()]),
        };
        let child = command
            .args(["--cluster-port", &n.bus_port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", &timeout_ms])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&n.dir)
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_err("starting redis-server"))?;
        n.child = Some(ChildGuard(child));
        Ok(())
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns what it printed.
    fn cli(&self, port: u16, args: &[&str]) -> Result<String> {
        let mut command = Command::new(&self.redis_cli);
        if let Some(tls) = &self.tls {
            command.args(tls.cli_args());
        }
        let out = command
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("running redis-cli"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Client ports of the nodes running now.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The masters among the running nodes (by `ROLE`), with their pids.
    pub fn masters(&self) -> Result<Vec<ClusterMaster>> {
        let mut out = Vec::new();
        for n in &self.nodes {
            let Some(child) = &n.child else { continue };
            if self.cli(n.port, &["role"])?.lines().next() == Some("master") {
                out.push(ClusterMaster {
                    pid: child.0.id(),
                    port: n.port,
                });
            }
        }
        Ok(out)
    }

    /// The master serving `key`'s hash slot now (by `CLUSTER KEYSLOT` and each master's own
    /// line of `CLUSTER NODES`).
    pub fn master_for_key(&self, key: &str) -> Result<ClusterMaster> {
        let any = self
            .ports()
            .first()
            .copied()
            .ok_or_else(|| Error::Invalid {
                what: "asking the cluster for a key's master".into(),
                detail: "no node is running".into(),
            })?;
        let slot: u16 = self
            .cli(any, &["cluster", "keyslot", key])?
            .trim()
            .parse()
            .map_err(|e| Error::Invalid {
                what: format!("CLUSTER KEYSLOT {key}"),
                detail: format!("{e}"),
            })?;
        for m in self.masters()? {
            let nodes = self.cli(m.port, &["cluster", "nodes"])?;
            let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
                continue;
            };
            let serves = me.split(' ').skip(8).any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
            });
            if serves {
                return Ok(m);
            }
        }
        Err(Error::Invalid {
            what: format!("finding the master of slot {slot}"),
            detail: "no running master serves it".into(),
        })
    }

    /// SIGKILLs the node listening on `port` (by its pid); it stays down until
    /// [`Self::start_all`].
    pub fn kill(&mut self, port: u16) -> Result<()> {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port && n.child.is_some())
            .ok_or_else(|| Error::Invalid {
                what: format!("killing the cluster node on port {port}"),
                detail: "no running node listens there".into(),
            })?;
        // ChildGuard's drop sends SIGKILL and reaps the process.
        drop(n.child.take());
        Ok(())
    }

    /// SIGKILLs every node: the whole cluster is gone (without persistence, so is its data).
    pub fn stop_all(&mut self) {
        for n in &mut self.nodes {
            drop(n.child.take());
        }
    }

    /// Starts every node that is not running, on the same ports and with the same cluster
    /// configuration (`nodes.conf`), and waits until the cluster is ready again.
    pub fn start_all(&mut self) -> Result<()> {
        self.spawn_all()?;
        self.wait_ready(Duration::from_secs(60))
    }

    /// Waits until every running node says `cluster_state:ok` and knows all six nodes, there
    /// are three masters, and (when all six run) every replica is online and has caught up
    /// with its master's replication offset, so that killing a master now loses nothing.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let why = self.not_ready()?;
            let Some(why) = why else { return Ok(()) };
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: "the Redis Cluster to be ready".into(),
                    timeout,
                    log: format!("{why}\n{}", self.log_tails()),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What is not ready yet, or `None`.
    fn not_ready(&self) -> Result<Option<String>> {
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        for n in &running {
            let info = self.cli(n.port, &["cluster", "info"])?;
            if !info.contains("cluster_state:ok") {
                return Ok(Some(format!("node {} is not cluster_state:ok", n.port)));
            }
            if !info.contains(&format!("cluster_known_nodes:{CLUSTER_NODES}")) {
                return Ok(Some(format!("node {} does not know every node", n.port)));
            }
        }
        let mut masters = 0;
        for n in &running {
            let repl = self.cli(n.port, &["info", "replication"])?;
            if !repl.contains("role:master") {
                continue;
            }
            masters += 1;
            if running.len() == CLUSTER_NODES {
                let offset = field(&repl, "master_repl_offset");
                let synced = repl.lines().any(|l| {
                    l.starts_with("slave0:")
                        && l.contains("state=online")
                        && offset.is_some_and(|o| l.contains(&format!("offset={o},")))
                });
                if !synced {
                    return Ok(Some(format!(
                        "the replica of master {} is not in sync",
                        n.port
                    )));
                }
            }
        }
        if masters != 3 {
            return Ok(Some(format!("{masters} masters, not 3")));
        }
        Ok(None)
    }

    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(n.dir.join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                format!(
                    "node {} ({}):\n{}",
                    n.port,
                    dir_name(&n.dir),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A free loopback port not in `taken` (which it joins).
fn distinct_port(taken: &mut std::collections::HashSet<u16>) -> u16 {
    for _ in 0..1000 {
        let p = free_port();
        if taken.insert(p) {
            return p;
        }
    }
    panic!("the kernel handed out only ports already in use 1000 times in a row");
}

fn dir_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_forms_loses_a_master_to_its_replica_and_comes_back_whole() {
        let mut c = RedisCluster::start_with_node_timeout(Duration::from_millis(1500)).unwrap();
        assert_eq!(c.ports().len(), CLUSTER_NODES);
        assert!(c.url.starts_with("redis+cluster://127.0.0.1:"), "{}", c.url);
        let masters = c.masters().unwrap();
        assert_eq!(masters.len(), 3, "{masters:?}");
        let owner = c.master_for_key("k").unwrap();
        assert!(masters.contains(&owner));
        let port = c.ports()[0];
        assert!(c
            .cli(port, &["-c", "set", "k", "v"])
            .unwrap()
            .contains("OK"));
        c.wait_ready(Duration::from_secs(30)).unwrap();
        c.kill(masters[0].port).unwrap();
        let alive = c.ports()[0];
        // The killed master's replica takes over: three masters again, cluster ok.
        let start = Instant::now();
        c.wait_ready(Duration::from_secs(60)).unwrap();
        assert_eq!(c.masters().unwrap().len(), 3);
        assert!(!c
            .masters()
            .unwrap()
            .iter()
            .any(|m| m.port == masters[0].port));
        eprintln!("replica took over in {:?}", start.elapsed());
        assert_eq!(c.cli(alive, &["-c", "get", "k"]).unwrap().trim(), "v");
        c.stop_all();
        assert!(c.ports().is_empty());
        c.start_all().unwrap();
        assert_eq!(c.ports().len(), CLUSTER_NODES);
        assert_eq!(c.masters().unwrap().len(), 3);
    }
}
