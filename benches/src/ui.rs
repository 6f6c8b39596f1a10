//! Running a benchmark in a terminal: the run and its baseline side by side, with a live
//! progress line.

use crate::report::Report;
use crate::run::{peak_rss_bytes, run, Progress, RunConfig, RunError};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

fn offload(p: &Progress) -> f64 {
    let all = p.players.all_bytes.load(Relaxed);
    if all == 0 {
        0.0
    } else {
        p.players.p2p_bytes.load(Relaxed) as f64 / all as f64
    }
}

/// Runs `cfg` (and, with `baseline`, the same run with P2P off, at the same time) while a
/// progress line shows elapsed time, nodes, offload and stalls so far. With `show_urls`, the
/// first node's player URL and every `/metrics` URL are printed as the nodes start.
pub async fn run_with_progress(
    cfg: RunConfig,
    baseline: bool,
    show_urls: bool,
) -> Result<Report, RunError> {
    crate::start_clock();
    let pauses = crate::pauses::PauseMonitor::start();
    let bar = ProgressBar::new(cfg.duration.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let p2p = Arc::new(Progress::default());
    let cdn = Arc::new(Progress::default());
    let ticker = {
        let (bar, p2p, cdn) = (bar.clone(), p2p.clone(), cdn.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let (mut shown, mut tracker_shown) = (0, false);
            // Above the progress line on a terminal; plain lines when it is hidden (piped).
            let say = |msg: String| {
                if bar.is_hidden() {
                    println!("{msg}");
                } else {
                    bar.println(msg);
                }
            };
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if show_urls {
                    if let (false, Some(t)) = (tracker_shown, p2p.tracker_url.get()) {
                        say(format!("tracker metrics: {t}/metrics"));
                        tracker_shown = true;
                    }
                    let started: Vec<(String, String)> = match p2p.started.lock() {
                        Ok(s) => s[shown.min(s.len())..].to_vec(),
                        Err(_) => Vec::new(),
                    };
                    for (player, metrics) in started {
                        if shown == 0 {
                            say(format!(
                                "play it while it runs:  ffplay {player}   (or open it in VLC)"
                            ));
                        }
                        say(format!("node {shown} metrics: {metrics}"));
                        shown += 1;
                    }
                }
                bar.set_position(start.elapsed().as_secs());
                let mut msg = format!(
                    "nodes {:>3}  offload {:>5.1} %  stalls {}",
                    p2p.nodes.load(Relaxed),
                    offload(&p2p) * 100.0,
                    p2p.players.stalls.load(Relaxed),
                );
                if baseline {
                    msg.push_str(&format!(
                        "  | CDN-only nodes {:>3}  stalls {}",
                        cdn.nodes.load(Relaxed),
                        cdn.players.stalls.load(Relaxed)
                    ));
                }
                bar.set_message(msg);
            }
        })
    };
    let (main, base) = if baseline {
        let (a, b) = tokio::join!(run(cfg.clone(), p2p), run(cfg.baseline(), cdn));
        (a, Some(b))
    } else {
        (run(cfg.clone(), p2p).await, None)
    };
    ticker.abort();
    bar.finish_and_clear();
    let watched = pauses.finish();
    let run = main?;
    let baseline = base.transpose()?;
    let peak = peak_rss_bytes();
    let at_once = (cfg.nodes * if baseline.is_some() { 2 } else { 1 }).max(1) as u64;
    Ok(Report {
        run,
        baseline,
        peak_rss_bytes: peak,
        peak_rss_per_node_bytes: peak.map(|p| p / at_once),
        pauses: watched.pauses,
        cpu: watched.cpu,
    })
}
