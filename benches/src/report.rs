//! What a run measured, how it is summarised in a table, and the JSON written next to it.

use crate::pauses::{CpuSecond, Pause};
use crate::run::{NodeTotals, RunConfig};
use crate::simulated_origin::OriginTotals;
use crate::simulated_player::{PlayerReport, StallEvent};
use std::fmt::Write as _;
use std::time::Duration;

/// Bytes the players received.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PlayerBytes {
    /// Segment bytes from peers.
    pub p2p: u64,
    /// Segment bytes from the origin (through the node).
    pub cdn_segments: u64,
    /// Playlist bytes.
    pub manifests: u64,
}

impl PlayerBytes {
    /// Everything the players received.
    pub fn total(&self) -> u64 {
        self.p2p + self.cdn_segments + self.manifests
    }
}

/// Stalls over the run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Stalls {
    /// Number of stalls.
    pub count: u64,
    /// Their total length, seconds.
    pub seconds: f64,
    /// Hours of viewing (sum over viewers of the time from joining to leaving).
    pub viewing_hours: f64,
    /// Stall seconds per hour of viewing.
    pub seconds_per_hour: f64,
}

/// Startup times (join to first frame), milliseconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Startup {
    /// Median.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// Viewers whose playback never started.
    pub never_started: u64,
}

/// P2P control traffic.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Control {
    /// Every byte between peers (segments, `haves`, HTTP/2 framing and headers).
    pub peer_wire_bytes: u64,
    /// Segment bodies uploaded between peers.
    pub peer_media_bytes: u64,
    /// Every byte between nodes and the tracker (announces, leaves).
    pub tracker_wire_bytes: u64,
    /// Wire bytes that are not segment bodies.
    pub overhead_bytes: u64,
    /// `overhead_bytes` as a share of the segment bytes players received.
    pub overhead_share: f64,
}

/// Everything one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    /// The settings.
    pub config: RunConfig,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Viewers over the run (more than `nodes` with churn).
    pub viewers: u64,
    /// Bytes players received.
    pub player_bytes: PlayerBytes,
    /// P2P share of what players received.
    pub offload: f64,
    /// Bytes that must come from the origin at least: each segment a player got once, and
    /// every playlist.
    pub min_origin_bytes: u64,
    /// Best possible offload: 1 − min_origin_bytes / all player bytes.
    pub limit: f64,
    /// `offload / limit`.
    pub offload_of_limit: f64,
    /// What the origin sent.
    pub origin: OriginTotals,
    /// Sums over the nodes.
    pub nodes: NodeTotals,
    /// Control traffic (P2P runs).
    pub control: Control,
    /// Stalls.
    pub stalls: Stalls,
    /// Every stall, in the order they began: which node, when, and what ended it.
    pub stall_events: Vec<StallEvent>,
    /// When the run started, seconds since the process started (the clock of `stall_events`).
    pub started_s: f64,
    /// Startup times.
    pub startup: Startup,
    /// Every viewer's startup time, milliseconds, sorted. The p95 of one run of 32 viewers is
    /// its second slowest viewer: pool the samples of runs with other `--seed`s to compare it.
    pub startup_samples_ms: Vec<f64>,
    /// Segments whose bytes differed from the origin's.
    pub corrupt_segments: u64,
    /// Requests that failed.
    pub player_errors: u64,
    /// What the first failed requests were, a few per player (URL and why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub player_error_samples: Vec<String>,
    /// Tracker announces answered.
    pub announces: Option<u64>,
    /// Tracker announces per second.
    pub announces_per_sec: Option<f64>,
    /// Shaped mode: each node's link, from the kernel's counters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<crate::netns::LinkReport>,
    /// NAT-mix mode: what the pairs of nodes did, by what theory says of their homes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reach: Option<crate::nat_mix::ReachReport>,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl RunResult {
    /// Folds the players' reports and the counters into the summary.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        config: RunConfig,
        elapsed: Duration,
        players: &[PlayerReport],
        origin: OriginTotals,
        nodes: NodeTotals,
        distinct_segment_bytes: u64,
        peer_wire_bytes: u64,
        tracker_wire_bytes: u64,
        announces: Option<u64>,
    ) -> Self {
        let mut bytes = PlayerBytes::default();
        let mut stalls = Stalls::default();
        let mut startups = Vec::new();
        let mut never_started = 0;
        let (mut corrupt, mut errors) = (0, 0);
        let mut error_samples = Vec::new();
        let mut stall_events = Vec::new();
        for p in players {
            stall_events.extend(p.stall_events.iter().cloned());
            bytes.p2p += p.p2p_bytes;
            bytes.cdn_segments += p.cdn_bytes;
            bytes.manifests += p.manifest_bytes;
            stalls.count += p.stalls.len() as u64;
            stalls.seconds += p.stalls.iter().map(Duration::as_secs_f64).sum::<f64>();
            stalls.viewing_hours += p.watched.as_secs_f64() / 3600.0;
            match p.startup {
                Some(s) => startups.push(s.as_secs_f64() * 1000.0),
                None => never_started += 1,
            }
            corrupt += p.corrupt;
            errors += p.errors;
            error_samples.extend(p.error_samples.iter().cloned());
        }
        stalls.seconds_per_hour = if stalls.viewing_hours > 0.0 {
            stalls.seconds / stalls.viewing_hours
        } else {
            0.0
        };
        startups.sort_by(f64::total_cmp);
        stall_events.sort_by(|a: &StallEvent, b: &StallEvent| a.began_s.total_cmp(&b.began_s));
        let total = bytes.total();
        let min_origin_bytes = distinct_segment_bytes + bytes.manifests;
        let offload = ratio(bytes.p2p, total);
        let limit = 1.0 - ratio(min_origin_bytes, total);
        let segment_bytes = bytes.p2p + bytes.cdn_segments;
        let overhead_bytes =
            (peer_wire_bytes.saturating_sub(nodes.uploaded_bytes)) + tracker_wire_bytes;
        let elapsed_secs = elapsed.as_secs_f64();
        let peer_media_bytes = nodes.uploaded_bytes;
        RunResult {
            viewers: players.len() as u64,
            player_bytes: bytes,
            offload,
            min_origin_bytes,
            limit,
            offload_of_limit: if limit > 0.0 { offload / limit } else { 0.0 },
            origin,
            nodes,
            control: Control {
                peer_wire_bytes,
                peer_media_bytes,
                tracker_wire_bytes,
                overhead_bytes,
                overhead_share: ratio(overhead_bytes, segment_bytes),
            },
            stalls,
            stall_events,
            started_s: crate::secs(tokio::time::Instant::now() - elapsed),
            startup: Startup {
                p50_ms: percentile(&startups, 50.0),
                p95_ms: percentile(&startups, 95.0),
                never_started,
            },
            startup_samples_ms: startups,
            corrupt_segments: corrupt,
            player_errors: errors,
            player_error_samples: error_samples,
            announces,
            announces_per_sec: announces.map(|a| a as f64 / elapsed_secs.max(0.001)),
            links: Vec::new(),
            reach: None,
            elapsed_secs,
            config,
        }
    }
}

/// A run, its CDN-only baseline if one ran alongside, and the process's memory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The P2P run.
    pub run: RunResult,
    /// The CDN-only baseline.
    pub baseline: Option<RunResult>,
    /// Peak resident memory of the whole process (tracker, origin, players and every node).
    pub peak_rss_bytes: Option<u64>,
    /// Peak resident memory divided by the nodes that ran at once.
    pub peak_rss_per_node_bytes: Option<u64>,
    /// Wake-ups that came late while the runs went on: the machine or the runtime paused.
    pub pauses: Vec<Pause>,
    /// CPU this process and the machine used, a sample a second.
    pub cpu: Vec<CpuSecond>,
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn mbit(bps: f64) -> String {
    format!("{:.2} Mbit/s", bps / 1e6)
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.0} ms"))
}

impl Report {
    /// The summary table, one column per run.
    pub fn table(&self) -> String {
        let r = &self.run;
        let b = self.baseline.as_ref();
        let mut rows: Vec<(String, String, String)> = Vec::new();
        let mut row = |name: &str, p: String, c: Option<String>| {
            rows.push((name.into(), p, c.unwrap_or_default()));
        };
        let stream = |c: &RunConfig| {
            format!(
                "{} {}, {} s segments",
                c.format.label(),
                match c.mode {
                    crate::simulated_origin::StreamMode::Live => "live",
                    crate::simulated_origin::StreamMode::Vod => "VOD",
                },
                c.segment_duration.as_secs_f64()
            )
        };
        row("stream", stream(&r.config), b.map(|b| stream(&b.config)));
        let link = |r: &RunResult| {
            r.config.shaping.map(|s| {
                format!(
                    "{} up / {} down, {} ms RTT",
                    mbit(s.uplink_bps as f64),
                    mbit(s.downlink_bps as f64),
                    s.rtt.as_millis()
                )
            })
        };
        if let Some(l) = link(r) {
            row("shaped link per node", l, b.and_then(link));
            let uplink = |r: &RunResult| {
                let rates: Vec<f64> = r.links.iter().map(|l| l.uplink_bps()).collect();
                let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
                let max = rates.iter().copied().fold(0.0, f64::max);
                let peak = r
                    .links
                    .iter()
                    .map(|l| l.peak_uplink_bps)
                    .fold(0.0, f64::max);
                format!("{} / {} / {}", mbit(mean), mbit(max), mbit(peak))
            };
            row(
                "uplink: mean node / busiest node / highest 1 s",
                uplink(r),
                b.map(uplink),
            );
        }
        if let Some(reach) = &r.reach {
            let mix: Vec<String> = reach
                .nodes_by_kind
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            row("NAT mix: nodes by home", mix.join(", "), None);
            row("neighbour pairs tried", reach.pairs_tried.to_string(), None);
            row(
                "direct where theory allows",
                format!(
                    "{} of {} ({})",
                    reach.pairs_direct_in_theory_connected,
                    reach.pairs_direct_in_theory,
                    pct(reach.direct_share())
                ),
                None,
            );
            let paths: Vec<String> = reach
                .direct_by_path
                .iter()
                .map(|(p, n)| format!("{p} {n}"))
                .collect();
            row("pairs direct, by path", paths.join(", "), None);
            row(
                "pairs relayed / not connected",
                format!("{} / {}", reach.relayed, reach.not_connected),
                None,
            );
            if !reach.missed.is_empty() {
                let missed: Vec<String> = reach
                    .missed
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                row("direct in theory, not connected", missed.join(", "), None);
            }
        }
        row(
            "viewers (nodes at once)",
            format!("{} ({})", r.viewers, r.config.nodes),
            b.map(|b| format!("{} ({})", b.viewers, b.config.nodes)),
        );
        row(
            "offload (P2P / all player bytes)",
            pct(r.offload),
            b.map(|b| pct(b.offload)),
        );
        row("limit (1 - min origin / all)", pct(r.limit), None);
        row("offload / limit", pct(r.offload_of_limit), None);
        row(
            "bytes players got",
            mib(r.player_bytes.total()),
            b.map(|b| mib(b.player_bytes.total())),
        );
        row(
            "origin egress (segments + playlists + digests)",
            format!(
                "{} ({} + {} + {})",
                mib(r.origin.bytes()),
                mib(r.origin.segment_bytes),
                mib(r.origin.manifest_bytes),
                mib(r.origin.digest_bytes)
            ),
            b.map(|b| mib(b.origin.bytes())),
        );
        row(
            "origin bytes the nodes counted",
            mib(r.nodes.origin_bytes),
            b.map(|b| mib(b.nodes.origin_bytes)),
        );
        let reasons = |n: &NodeTotals| {
            n.fallbacks
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        row(
            "origin segment fetches by reason",
            reasons(&r.nodes),
            b.map(|b| reasons(&b.nodes)),
        );
        row(
            "peer transfers failed or cut",
            r.nodes.peer_failures.to_string(),
            None,
        );
        row(
            "P2P control overhead",
            format!(
                "{} ({})",
                pct(r.control.overhead_share),
                mib(r.control.overhead_bytes)
            ),
            None,
        );
        row(
            "stalls",
            format!("{} ({:.1} s)", r.stalls.count, r.stalls.seconds),
            b.map(|b| format!("{} ({:.1} s)", b.stalls.count, b.stalls.seconds)),
        );
        row(
            "stall s per viewing hour",
            format!("{:.2}", r.stalls.seconds_per_hour),
            b.map(|b| format!("{:.2}", b.stalls.seconds_per_hour)),
        );
        row(
            "startup p50",
            ms(r.startup.p50_ms),
            b.map(|b| ms(b.startup.p50_ms)),
        );
        row(
            "startup p95",
            ms(r.startup.p95_ms),
            b.map(|b| ms(b.startup.p95_ms)),
        );
        row(
            "never started",
            r.startup.never_started.to_string(),
            b.map(|b| b.startup.never_started.to_string()),
        );
        row(
            "corrupt segments / request errors",
            format!("{} / {}", r.corrupt_segments, r.player_errors),
            b.map(|b| format!("{} / {}", b.corrupt_segments, b.player_errors)),
        );
        row(
            "tracker announces/s",
            r.announces_per_sec
                .map_or("-".into(), |a| format!("{a:.1}")),
            None,
        );
        row(
            "peak memory (process; per node)",
            match (self.peak_rss_bytes, self.peak_rss_per_node_bytes) {
                (Some(p), Some(n)) => format!("{}; {}", mib(p), mib(n)),
                _ => "-".into(),
            },
            None,
        );
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(6);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:w0$}  {:>w1$}  {}",
            "",
            "P2P",
            if b.is_some() { "CDN only" } else { "" }
        );
        for (n, p, c) in rows {
            let _ = writeln!(out, "{n:w0$}  {p:>w1$}  {c}");
        }
        out.push_str(&self.stall_lines());
        out
    }

    /// Every stall of both runs, one line each, with the pauses that overlapped it: a stall
    /// that began inside a pause (or that the baseline shared) is the machine's.
    pub fn stall_lines(&self) -> String {
        let events: Vec<&StallEvent> = self
            .run
            .stall_events
            .iter()
            .chain(self.baseline.iter().flat_map(|b| b.stall_events.iter()))
            .collect();
        let mut out = String::new();
        if events.is_empty() {
            return out;
        }
        let t0 = self.run.started_s;
        let _ = writeln!(out, "\nstalls (seconds from the run's start):");
        for e in events {
            let _ = write!(
                out,
                "  {:>4} at {:>7.2} s for {:.2} s",
                e.node,
                e.began_s - t0,
                e.seconds
            );
            match e.ended_by {
                Some(seq) => {
                    let _ = write!(out, ", until segment {seq}");
                    if let Some(p) = e.published_s {
                        let _ = write!(out, " (published {:.2} s", p - t0);
                        if let Some(r) = e.requested_s {
                            let _ = write!(out, ", asked {:.2} s", r - t0);
                        }
                        out.push(')');
                    }
                    if let (Some(ms), Some(src)) = (e.fetch_ms, &e.source) {
                        let _ = write!(out, " took {ms:.0} ms from {src}");
                    }
                }
                None => out.push_str(", still stalled when the viewer left"),
            }
            let end = e.began_s + e.seconds;
            let overlapping: Vec<String> = self
                .pauses
                .iter()
                .filter(|p| p.began_s <= end && p.began_s + p.late_ms / 1000.0 >= e.began_s - 2.0)
                .map(|p| {
                    format!(
                        "{:?} {:.0} ms at {:.2} s",
                        p.watcher,
                        p.late_ms,
                        p.began_s - t0
                    )
                })
                .collect();
            if !overlapping.is_empty() {
                let _ = write!(out, "; pauses: {}", overlapping.join(", "));
            }
            let cpu: Vec<String> = self
                .cpu
                .iter()
                .filter(|c| c.at_s >= e.began_s - 2.0 && c.at_s - 1.0 <= end)
                .map(|c| {
                    format!(
                        "{:.1}/{:.1}/{:.1}/{:.1}",
                        c.process_cores, c.machine_cores, c.runtime_workers_busy, c.steal_cores
                    )
                })
                .collect();
            if !cpu.is_empty() {
                let _ = write!(
                    out,
                    "; cores busy (this process/machine/runtime workers/stolen): {}",
                    cpu.join(" ")
                );
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(10.0));
        assert_eq!(percentile(&v, 95.0), Some(19.0));
        assert_eq!(percentile(&v, 100.0), Some(20.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 95.0), Some(7.0));
    }

    #[test]
    fn each_stall_is_listed_with_the_pauses_around_it() {
        let stall = |node: &str, began_s: f64, ended_by| StallEvent {
            node: node.into(),
            began_s,
            seconds: 1.5,
            ended_by,
            published_s: Some(began_s - 3.0),
            requested_s: Some(began_s - 1.0),
            fetch_ms: Some(2500.0),
            source: Some("cdn".into()),
        };
        let player = PlayerReport {
            stall_events: vec![stall("p7", 120.0, Some(61)), stall("p2", 40.0, None)],
            ..PlayerReport::default()
        };
        let cfg = RunConfig::live_default(2, Duration::from_secs(60));
        let run = RunResult::from_parts(
            cfg,
            Duration::from_secs(60),
            &[player],
            OriginTotals::default(),
            NodeTotals::default(),
            0,
            0,
            0,
            None,
        );
        assert_eq!(run.stall_events[0].node, "p2", "sorted by when they began");
        let pause = |began_s: f64| Pause {
            watcher: crate::pauses::Watcher::Thread,
            began_s,
            late_ms: 800.0,
        };
        let report = Report {
            // The run starts at the clock's zero, so the line's times are the events'.
            run: RunResult {
                started_s: 0.0,
                ..run
            },
            baseline: None,
            peak_rss_bytes: None,
            peak_rss_per_node_bytes: None,
            pauses: vec![pause(119.5), pause(10.0)],
            cpu: [121.0, 30.0]
                .into_iter()
                .map(|at| CpuSecond {
                    at_s: at,
                    process_cores: 0.4,
                    machine_cores: 1.9,
                    steal_cores: 0.0,
                    runtime_workers_busy: 0.5,
                })
                .collect(),
        };
        let lines = report.stall_lines();
        let p7 = lines.lines().find(|l| l.contains("p7")).unwrap_or_default();
        assert!(p7.contains("at  120.00 s for 1.50 s"), "{lines}");
        assert!(
            p7.contains("until segment 61 (published 117.00 s, asked 119.00 s)"),
            "{lines}"
        );
        assert!(p7.contains("took 2500 ms from cdn"), "{lines}");
        assert!(p7.contains("pauses: Thread 800 ms at 119.50 s"), "{lines}");
        assert!(
            !p7.contains("10.00 s"),
            "a pause long before is not listed: {lines}"
        );
        assert!(
            p7.ends_with("(this process/machine/runtime workers/stolen): 0.4/1.9/0.5/0.0"),
            "one CPU sample, the one inside the stall: {lines}"
        );
        let p2 = lines.lines().find(|l| l.contains("p2")).unwrap_or_default();
        assert!(p2.contains("still stalled when the viewer left"), "{lines}");
        assert!(!p2.contains("pauses"), "{lines}");
    }
}
