//! Tracker load generator: many simulated peers announcing over keep-alive connections.
//!
//! First every peer joins once, then peers re-announce round-robin for `--duration`. Prints
//! announces/s, latency percentiles and the tracker's resident memory.
//! `--mode bittorrent` sends BitTorrent HTTP announces instead, to measure opentracker on the
//! same mix.
//!
//! The re-announce phase runs closed loop by default (each connection sends its next announce
//! as soon as the answer is in: the peak rate). With `--rate N` it runs open loop: N announces/s
//! on a fixed schedule spread over the connections, sent whether or not earlier answers came
//! back, and latency is measured from each announce's *scheduled* time, so a tracker that falls
//! behind is charged for the queueing it causes (no coordinated omission). How late the
//! generator itself sent is printed beside it.
//!
//! ```text
//! cargo run --release -p shoal-bench --bin tracker-load -- --target http://127.0.0.1:7070 \
//!     --tracker-pid $(pidof shoal-tracker)
//! cargo run --release -p shoal-bench --bin tracker-load -- --rate 20000 --tracker-pid ...
//! ```

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Shoal's `POST /v1/announce` with JSON bodies.
    Shoal,
    /// BitTorrent `GET /announce?info_hash=...&numwant=20&compact=1` (for opentracker).
    Bittorrent,
}

/// Keeps many simulated peers announcing against a running tracker.
#[derive(Debug, Parser)]
#[command(name = "tracker-load")]
struct Args {
    /// Tracker base URL (http only); several, comma-separated, spread the connections over
    /// them round-robin (instances sharing one Redis or Redis Cluster).
    #[arg(long, default_value = "http://127.0.0.1:7070", value_delimiter = ',')]
    target: Vec<String>,
    /// Simulated peers.
    #[arg(long, default_value_t = 100_000)]
    peers: usize,
    /// Swarms the peers are spread over (each peer picks one at random, seeded).
    #[arg(long, default_value_t = 1_000)]
    swarms: usize,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long the steady re-announce phase runs, e.g. 30s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Re-announces per second over all connections, on a fixed schedule (open loop);
    /// 0 = as fast as answers come back (closed loop, the peak rate).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Protocol to speak.
    #[arg(long, value_enum, default_value = "shoal")]
    mode: Mode,
    /// Neighbours asked for per announce.
    #[arg(long, default_value_t = 20)]
    numwant: u32,
    /// Send a 64-hex-digit key fingerprint with each Shoal announce (as peers with TLS keys do).
    #[arg(long)]
    fingerprint: bool,
    /// The tracker's process id (several, comma-separated: their sum), to report resident
    /// memory and CPU from /proc.
    #[arg(long, value_delimiter = ',')]
    tracker_pid: Vec<u32>,
    /// Redis nodes (`HOST:PORT`, comma-separated; on a cluster, every master) whose
    /// `INFO commandstats` is read before and after the steady phase (with `redis-cli`), to
    /// print the Redis commands the tracker sent per announce.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT")]
    redis: Vec<String>,
    /// Write the info hashes of the bittorrent mix (hex, one per line) to this file for
    /// opentracker's whitelist (`opentracker -w FILE`), then exit.
    #[arg(long, value_name = "FILE")]
    write_whitelist: Option<std::path::PathBuf>,
}

/// One simulated peer.
struct Peer {
    id: usize,
    swarm: usize,
    key: Option<String>,
}

/// Sum over `pids` (None without any).
fn rss_all(pids: &[u32]) -> Option<u64> {
    pids.iter()
        .map(|&p| rss_bytes(Some(p)))
        .sum::<Option<u64>>()
        .filter(|_| !pids.is_empty())
}

fn cpu_all(pids: &[u32]) -> Option<f64> {
    pids.iter()
        .map(|&p| cpu_secs(Some(p)))
        .sum::<Option<f64>>()
        .filter(|_| !pids.is_empty())
}

/// `calls` per command of `INFO commandstats`, summed over `nodes` (via `redis-cli`).
fn command_calls(nodes: &[String]) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut calls = std::collections::BTreeMap::new();
    for node in nodes {
        let (host, port) = node
            .rsplit_once(':')
            .with_context(|| format!("--redis {node}: use HOST:PORT"))?;
        let out = std::process::Command::new("redis-cli")
            .args(["-h", host, "-p", port, "info", "commandstats"])
            .output()
            .context("running redis-cli (Debian package redis-tools)")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let n: u64 = rest
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            *calls.entry(name.to_owned()).or_insert(0) += n;
        }
    }
    Ok(calls)
}

fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system, all threads) `pid` has used so far, in seconds.
fn cpu_secs(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid?)).ok()?;
    // utime and stime are fields 14 and 15, counted after the parenthesised command name
    // (which may hold spaces), in ticks of 1/100 s.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

struct Target {
    host: String,
    addr: String,
}

fn parse_target(url: &str) -> Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .context("--target must be an http:// URL")?;
    let host = rest.trim_end_matches('/').to_owned();
    if host.contains('/') {
        bail!("--target must be a base URL without a path, e.g. http://127.0.0.1:7070");
    }
    Ok(Target {
        addr: host.clone(),
        host,
    })
}

async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(&target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    tcp.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(send)
}

fn percent_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// The BitTorrent info hash standing for swarm number `swarm`.
fn info_hash(swarm: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[..8].copy_from_slice(&(swarm as u64).to_be_bytes());
    h[8..].copy_from_slice(b"shoal-bench!");
    h
}

fn request(args: &Args, target: &Target, peer: &Peer) -> Request<Full<Bytes>> {
    match args.mode {
        Mode::Shoal => {
            let mut body = serde_json::json!({
                "proto": 1,
                "peer_id": format!("peer-{:08}", peer.id),
                "swarm_id": format!("bench.example/live/{}/720p.m3u8", peer.swarm),
                "addrs": [format!("10.{}.{}.{}:{}", peer.id >> 16 & 255, peer.id >> 8 & 255, peer.id & 255, 20000 + peer.id % 40000)],
                "numwant": args.numwant,
                "client_version": "tracker-load/0.1",
            });
            if args.fingerprint {
                body["fingerprint"] = format!("{:064x}", peer.id).into();
            }
            if let Some(k) = &peer.key {
                body["peer_key"] = k.as_str().into();
                body["counters"] =
                    serde_json::json!({"cdn": 1_000_000, "p2p": 3_000_000, "upload": 2_000_000});
            }
            Request::builder()
                .method(Method::POST)
                .uri("/v1/announce")
                .header("host", &target.host)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("a valid request")
        }
        Mode::Bittorrent => {
            let info_hash = info_hash(peer.swarm);
            let peer_id = format!("-SB0001-{:012}", peer.id);
            let event = if peer.key.is_none() {
                "&event=started"
            } else {
                ""
            };
            let uri = format!(
                "/announce?info_hash={}&peer_id={}&port={}&uploaded=0&downloaded=0&left=1000&numwant={}&compact=1{event}",
                percent_encode(&info_hash),
                peer_id,
                20000 + peer.id % 40000,
                args.numwant,
            );
            Request::builder()
                .method(Method::GET)
                .uri(uri)
                .header("host", &target.host)
                .body(Full::new(Bytes::new()))
                .expect("a valid request")
        }
    }
}

/// A keep-alive connection that reconnects when the server closes it (opentracker answers
/// every request with `Connection: close`, so in bittorrent mode each announce pays a connect).
struct Conn {
    target: Arc<Target>,
    send: Option<SendRequest<Full<Bytes>>>,
    close_after_each: bool,
    reconnects: u64,
}

impl Conn {
    /// Sends one announce; returns its latency from `start` (including any reconnect) and,
    /// on a Shoal join, the peer key.
    async fn announce(
        &mut self,
        req: Request<Full<Bytes>>,
        want_key: bool,
        start: Instant,
    ) -> Result<(Duration, Option<String>)> {
        let mut send = match self.send.take() {
            Some(s) if !s.is_closed() => s,
            _ => {
                self.reconnects += 1;
                connect(&self.target).await?
            }
        };
        send.ready().await?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        // opentracker closes after every answer without saying so.
        let close = self.close_after_each
            || resp.version() < hyper::Version::HTTP_11
            || resp
                .headers()
                .get(hyper::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = resp.into_body().collect().await?.to_bytes();
        let took = start.elapsed();
        if !close {
            self.send = Some(send);
        }
        if status != StatusCode::OK {
            bail!("{status}: {}", String::from_utf8_lossy(&body));
        }
        let key = if want_key {
            let r: shoal_proto::AnnounceResponse = serde_json::from_slice(&body)?;
            Some(r.peer_key)
        } else {
            None
        };
        Ok((took, key))
    }
}

struct Phase {
    hist: Histogram<u64>,
    count: u64,
    reconnects: u64,
}

impl Phase {
    fn new() -> Result<Self> {
        Ok(Self {
            hist: Histogram::new(3)?,
            count: 0,
            reconnects: 0,
        })
    }

    fn record(&mut self, took: Duration) -> Result<()> {
        self.hist.record(took.as_micros() as u64)?;
        self.count += 1;
        Ok(())
    }

    fn add(&mut self, other: &Phase) -> Result<()> {
        self.hist.add(&other.hist)?;
        self.count += other.count;
        self.reconnects += other.reconnects;
        Ok(())
    }
}

/// Shortest sleep of the open-loop pacer.
const PACE_TICK: Duration = Duration::from_micros(200);

/// The open-loop schedule: hands each connection in turn the scheduled time of its next
/// announce, `rate` per second from `start` until `until`. A thread of its own that sleeps
/// with the OS's precision: tokio's timer rounds up to whole milliseconds, and that slack
/// would be charged to the tracker. Returns how late each hand-out was, in microseconds.
fn pace(
    connections: Vec<mpsc::UnboundedSender<Instant>>,
    rate: u64,
    start: Instant,
    until: Instant,
) -> Result<Histogram<u64>> {
    let mut late = Histogram::<u64>::new(3)?;
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    for k in 0u32.. {
        let at = start + every * k;
        if at >= until {
            break;
        }
        let now = Instant::now();
        if at > now {
            // Wake at most every 200 us and hand out all that is due then: a wake-up per
            // announce would cost the generator's core more than the announce itself. The
            // wait is charged to the tracker, which only overstates its latency.
            std::thread::sleep((at - now).max(PACE_TICK));
        }
        late.saturating_record((Instant::now() - at).as_micros() as u64);
        // A connection that has stopped (its task failed) reports its error at the end.
        let _ = connections[k as usize % connections.len()].send(at);
    }
    Ok(late)
}

/// Runs one connection's peers: joins them all, waits for every other connection to finish
/// joining, then re-announces until `steady` has passed, or, open loop, at each time the
/// `schedule` hands out until it ends.
async fn worker(
    args: Arc<Args>,
    target: Arc<Target>,
    schedule: Option<mpsc::UnboundedReceiver<Instant>>,
    mut peers: Vec<Peer>,
    join_done: Arc<tokio::sync::Barrier>,
    steady: Duration,
) -> Result<(Phase, Phase)> {
    let mut conn = Conn {
        target: target.clone(),
        send: None,
        close_after_each: args.mode == Mode::Bittorrent,
        reconnects: 0,
    };
    let mut join = Phase::new()?;
    let joined: Result<()> = async {
        for peer in &mut peers {
            let req = request(&args, &target, peer);
            let (took, key) = conn
                .announce(req, args.mode == Mode::Shoal, Instant::now())
                .await?;
            peer.key = key.or(Some(String::new()));
            join.record(took)?;
        }
        Ok(())
    }
    .await;
    // Reach the barrier even on failure so the others are not left waiting.
    join_done.wait().await;
    joined?;
    join.reconnects = std::mem::take(&mut conn.reconnects);
    let mut run = Phase::new()?;
    let until = Instant::now() + steady;
    let mut schedule = schedule;
    let mut i = 0;
    while !peers.is_empty() {
        let scheduled = match &mut schedule {
            Some(s) => match s.recv().await {
                Some(at) => at,
                None => break,
            },
            None if Instant::now() < until => Instant::now(),
            None => break,
        };
        let req = request(&args, &target, &peers[i % peers.len()]);
        let (took, _) = conn.announce(req, false, scheduled).await?;
        run.record(took)?;
        i += 1;
    }
    run.reconnects = conn.reconnects;
    Ok((join, run))
}

/// Quantile `q` of a histogram of microseconds, in milliseconds.
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn report(name: &str, phase: &Phase, secs: f64) {
    println!(
        "{name}: {} announces in {secs:.1}s = {:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} new connections",
        phase.count,
        phase.count as f64 / secs,
        ms(&phase.hist, 0.50),
        ms(&phase.hist, 0.90),
        ms(&phase.hist, 0.99),
        ms(&phase.hist, 0.999),
        phase.hist.max() as f64 / 1000.0,
        phase.reconnects,
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    if args.connections == 0 || args.swarms == 0 {
        bail!("--connections and --swarms must be at least 1");
    }
    if let Some(path) = &args.write_whitelist {
        let lines: String = (0..args.swarms)
            .map(|s| {
                format!(
                    "{}\n",
                    info_hash(s)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                )
            })
            .collect();
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
        return Ok(());
    }
    let targets = args
        .target
        .iter()
        .map(|t| parse_target(t).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    if targets.is_empty() {
        bail!("--target needs at least one URL");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut per_conn: Vec<Vec<Peer>> = (0..args.connections).map(|_| Vec::new()).collect();
    for id in 0..args.peers {
        per_conn[id % args.connections].push(Peer {
            id,
            swarm: rng.random_range(0..args.swarms),
            key: None,
        });
    }
    let baseline = rss_all(&args.tracker_pid);
    let pacing = match args.rate {
        0 => "closed loop".to_owned(),
        r => format!("open loop at {r}/s"),
    };
    println!(
        "{:?} mode: {} peers over {} swarms, {} connections, numwant {}, target {}, re-announces {pacing}",
        args.mode, args.peers, args.swarms, args.connections, args.numwant, args.target.join(",")
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(args.connections + 1));
    let start = Instant::now();
    let (schedules, mut receivers): (Vec<_>, Vec<_>) = (0..args.connections)
        .map(|_| {
            let (tx, rx) = mpsc::unbounded_channel();
            (tx, (args.rate > 0).then_some(rx))
        })
        .unzip();
    let tasks: Vec<_> = per_conn
        .into_iter()
        .zip(receivers.drain(..))
        .enumerate()
        .map(|(i, (peers, schedule))| {
            tokio::spawn(worker(
                args.clone(),
                targets[i % targets.len()].clone(),
                schedule,
                peers,
                barrier.clone(),
                args.duration,
            ))
        })
        .collect();
    barrier.wait().await;
    let join_secs = start.elapsed().as_secs_f64();
    let after_join = rss_all(&args.tracker_pid);
    let cpu_before = cpu_all(&args.tracker_pid);
    let calls_before = command_calls(&args.redis)?;
    let steady_start = Instant::now();
    let pacer = (args.rate > 0).then(|| {
        let (rate, until) = (args.rate, steady_start + args.duration);
        std::thread::spawn(move || pace(schedules, rate, steady_start, until))
    });
    let mut join = Phase::new()?;
    let mut run = Phase::new()?;
    for t in tasks {
        let (j, r) = t.await??;
        join.add(&j)?;
        run.add(&r)?;
    }
    let run_secs = steady_start.elapsed().as_secs_f64();
    let calls_after = command_calls(&args.redis)?;
    let cpu_used = cpu_all(&args.tracker_pid)
        .zip(cpu_before)
        .map(|(end, start)| end - start);
    report("join", &join, join_secs);
    report("steady", &run, run_secs);
    if let Some(pacer) = pacer {
        let late = pacer
            .join()
            .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))??;
        println!(
            "  open loop: sends were handed out p50 {:.3} ms, p99 {:.3} ms after their scheduled time (included above)",
            ms(&late, 0.50),
            ms(&late, 0.99),
        );
    }
    if !args.redis.is_empty() {
        let per = |n: u64| n as f64 / run.count.max(1) as f64;
        let mut total = 0;
        let mut lines = Vec::new();
        for (name, after) in &calls_after {
            let n = after.saturating_sub(calls_before.get(name).copied().unwrap_or(0));
            if n > 0 {
                lines.push(format!("{name} {:.3}", per(n)));
            }
            if matches!(name.as_str(), "evalsha" | "eval") {
                total += n;
            }
        }
        println!(
            "redis: {:.3} scripts (EVALSHA/EVAL) sent per steady announce; all commands per announce, script-internal ones included: {}",
            per(total),
            lines.join(", ")
        );
    }
    if let Some(cpu) = cpu_used {
        println!(
            "tracker CPU in the steady phase: {cpu:.1} s ({:.0}% of a core), {:.0} announces per CPU second",
            100.0 * cpu / run_secs,
            run.count as f64 / cpu.max(0.01),
        );
    }
    if let (Some(b), Some(a)) = (baseline, after_join) {
        let end = rss_all(&args.tracker_pid).unwrap_or(a);
        println!(
            "tracker RSS: {:.1} MiB before join, {:.1} MiB after join, {:.1} MiB at end; {:.0} bytes per live peer beyond baseline",
            mib(b),
            mib(a),
            mib(end),
            a.saturating_sub(b) as f64 / args.peers.max(1) as f64
        );
    }
    Ok(())
}
