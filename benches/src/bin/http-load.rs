//! `http-load`: an HTTP/1.1 load generator for the edge proxy's benchmarks.
//!
//! Two modes over keep-alive loopback connections:
//! - `--rate 0` (closed loop, like wrk): every connection sends its next request as soon as
//!   the previous answer is read; prints the peak rate and throughput.
//! - `--rate N`: open loop at N requests/s spread over the connections; latency is measured
//!   from each request's *scheduled* time, so a server that falls behind is charged for the
//!   queueing it causes (no coordinated omission).
//!
//!
//! `--cpu-pid PID` (repeatable) also prints the CPU time each server process spent per answered
//! request during the measured run, which is what decides how servers sharing a core scale.
//! A `{n}` in the URL is replaced by a request counter modulo `--distinct`, to walk a playlist's
//! segments (each a cache miss once the cycle is longer than the cache).
//!
//! ```sh
//! cargo run --release -p shoal-bench --bin http-load -- --url http://127.0.0.1:8080/host/seg.ts --rate 0
//! cargo run --release -p shoal-bench --bin http-load -- --url http://127.0.0.1:8080/host/seg.ts --rate 2000 --cpu-pid 1234
//! cargo run --release -p shoal-bench --bin http-load -- --url 'http://127.0.0.1:8080/host/seg{n}.ts' --distinct 1000 --rate 100
//! ```

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::http;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// HTTP/1.1 load generator: closed loop (peak rate) or open loop at a fixed rate (latency).
#[derive(Debug, Parser)]
struct Args {
    /// URL to GET (http only).
    #[arg(long)]
    url: String,
    /// Requests per second over all connections; 0 = as fast as possible (closed loop).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Measured run length.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before the run.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// With `{n}` in the URL: how many distinct values `n` cycles through (0..N).
    #[arg(long, default_value_t = 1)]
    distinct: u64,
    /// A server process whose CPU time per request to report (repeatable).
    #[arg(long)]
    cpu_pid: Vec<u32>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What each request asks for: a fixed target or one with `{n}` filled in from a shared counter.
struct Targets {
    template: String,
    distinct: u64,
    counter: AtomicU64,
}

impl Targets {
    fn next(&self) -> String {
        if !self.template.contains("{n}") {
            return self.template.clone();
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed) % self.distinct;
        self.template.replace("{n}", &n.to_string())
    }
}

/// CPU time (user + system, all threads, also those already gone) of `pid` so far.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name (which may hold spaces); utime and stime
    // are fields 14 and 15 of the line, in USER_HZ ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .context("short stat line")?
            .parse::<u64>()
            .context("stat field not a number")
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

struct Outcome {
    hist: Histogram<u64>,
    requests: u64,
    bytes: u64,
    errors: u64,
}

async fn connection(
    url: http::Uri,
    targets: Arc<Targets>,
    interval: Option<Duration>,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> Result<Outcome> {
    let authority = url.authority().context("url without host")?.clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut out = Outcome {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        requests: 0,
        bytes: 0,
        errors: 0,
    };
    let mut next = start;
    loop {
        if interval.is_some() {
            tokio::time::sleep_until(next).await;
        }
        let scheduled = if interval.is_some() {
            next
        } else {
            Instant::now()
        };
        if scheduled >= end {
            break;
        }
        // Origin-form target, as browsers and players send it.
        let target: http::Uri = targets.next().parse().context("--url")?;
        let target = target.path_and_query().map_or("/", |p| p.as_str());
        let req = http::Request::get(target)
            .header(http::header::HOST, authority.as_str())
            .body(Empty::<Bytes>::new())?;
        let result = async {
            let resp = sender.send_request(req).await?;
            let ok = resp.status().is_success();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((ok, body.len() as u64))
        }
        .await;
        let done = Instant::now();
        if scheduled >= measure_from {
            match result {
                Ok((true, n)) => {
                    out.requests += 1;
                    out.bytes += n;
                    let micros = (done - scheduled).as_micros().max(1) as u64;
                    out.hist.saturating_record(micros);
                }
                _ => out.errors += 1,
            }
        } else if result.is_err() {
            out.errors += 1;
        }
        if let Some(iv) = interval {
            next += iv;
        }
        if done >= end {
            break;
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let url: http::Uri = args.url.replace("{n}", "0").parse().context("--url")?;
    if url.scheme_str() != Some("http") {
        bail!("--url must be http://");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.distinct == 0 {
        bail!("--distinct must be at least 1");
    }
    let targets = Arc::new(Targets {
        template: args.url.clone(),
        distinct: args.distinct,
        counter: AtomicU64::new(0),
    });
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let interval = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        // Stagger open-loop connections evenly over one interval.
        let offset = interval.map_or(Duration::ZERO, |iv| {
            iv.mul_f64(i as f64 / args.connections as f64)
        });
        tasks.push(tokio::spawn(connection(
            url.clone(),
            targets.clone(),
            interval,
            start + offset,
            measure_from,
            end,
        )));
    }
    // CPU of the servers over the measured part of the run.
    tokio::time::sleep_until(measure_from).await;
    let cpu_before = args
        .cpu_pid
        .iter()
        .map(|&p| cpu_time(p))
        .collect::<Result<Vec<_>>>()?;
    tokio::time::sleep_until(end).await;
    let cpu_used: Vec<Duration> = args
        .cpu_pid
        .iter()
        .zip(&cpu_before)
        .map(|(&p, &b)| Ok(cpu_time(p)?.saturating_sub(b)))
        .collect::<Result<_>>()?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut requests, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    for t in tasks {
        let o = t.await??;
        hist.add(&o.hist)?;
        requests += o.requests;
        bytes += o.bytes;
        errors += o.errors;
    }
    let secs = args.duration.as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let cpu: Vec<serde_json::Value> = args
        .cpu_pid
        .iter()
        .zip(&cpu_used)
        .map(|(pid, used)| {
            serde_json::json!({
                "pid": pid,
                "core_share": used.as_secs_f64() / secs,
                "us_per_request": used.as_secs_f64() * 1e6 / requests.max(1) as f64,
            })
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "url": args.url, "target_rate": args.rate, "connections": args.connections,
                "requests_per_sec": requests as f64 / secs, "mbytes_per_sec": bytes as f64 / secs / 1e6,
                "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
                "max_ms": hist.max() as f64 / 1000.0, "errors": errors, "cpu": cpu,
            })
        );
    } else {
        println!(
            "{}: {:.0} req/s, {:.1} MB/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, errors {errors}",
            args.url,
            requests as f64 / secs,
            bytes as f64 / secs / 1e6,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            hist.max() as f64 / 1000.0
        );
        for c in &cpu {
            println!(
                "  pid {}: {:.0}% of a core, {:.0} us CPU per request",
                c["pid"],
                c["core_share"].as_f64().unwrap_or(0.0) * 100.0,
                c["us_per_request"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
