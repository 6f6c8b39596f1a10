//! Watches for pauses while a run goes on: a thread and a runtime task each sleep 10 ms in a
//! loop and note every wake-up that came much later than asked. A pause both saw is the
//! machine's (the process was not scheduled); one only the task saw is the runtime's (its
//! workers were busy or blocked). A stall that began inside a pause says nothing about the
//! scheduler.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long each watcher sleeps.
const TICK: Duration = Duration::from_millis(10);
/// A wake-up this much later than asked is a pause.
pub const THRESHOLD: Duration = Duration::from_millis(100);

/// Who noticed a pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Watcher {
    /// A plain OS thread: the process (or the machine) was not running.
    Thread,
    /// A task on the async runtime: no worker was free to run it.
    Runtime,
}

/// A wake-up that came late.
#[derive(Debug, Clone, Serialize)]
pub struct Pause {
    /// Who noticed it.
    pub watcher: Watcher,
    /// When it began, seconds since the process started ([`crate::secs`]).
    pub began_s: f64,
    /// How much later than asked the wake-up came, milliseconds.
    pub late_ms: f64,
}

/// The running watchers.
pub struct PauseMonitor {
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<Vec<Pause>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn note(found: &Mutex<Vec<Pause>>, watcher: Watcher, began: tokio::time::Instant, late: Duration) {
    if late >= THRESHOLD {
        if let Ok(mut f) = found.lock() {
            f.push(Pause {
                watcher,
                began_s: crate::secs(began),
                late_ms: late.as_secs_f64() * 1000.0,
            });
        }
    }
}

impl PauseMonitor {
    /// Starts both watchers (call inside a Tokio runtime).
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let found = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, found) = (stop.clone(), found.clone());
            std::thread::Builder::new()
                .name("pause-watch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let t = tokio::time::Instant::now();
                        std::thread::sleep(TICK);
                        note(&found, Watcher::Thread, t, t.elapsed().saturating_sub(TICK));
                    }
                })
                .ok()
        };
        let task = {
            let found = found.clone();
            tokio::spawn(async move {
                loop {
                    let t = tokio::time::Instant::now();
                    tokio::time::sleep(TICK).await;
                    // Tokio's timer rounds up to the next millisecond.
                    let late = t.elapsed().saturating_sub(TICK + Duration::from_millis(1));
                    note(&found, Watcher::Runtime, t, late);
                }
            })
        };
        Self {
            stop,
            found,
            thread,
            task,
        }
    }

    /// Stops the watchers and returns the pauses they saw, in order.
    pub fn finish(mut self) -> Vec<Pause> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut v = self.found.lock().map(|f| f.clone()).unwrap_or_default();
        v.sort_by(|a, b| a.began_s.total_cmp(&b.began_s));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blocked_runtime_is_noticed_by_the_task_only() {
        let m = PauseMonitor::start();
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Blocks the runtime's only thread: the task cannot run, the watching thread can.
        std::thread::sleep(Duration::from_millis(400));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let pauses = m.finish();
        assert!(
            pauses
                .iter()
                .any(|p| p.watcher == Watcher::Runtime && p.late_ms >= 250.0),
            "{pauses:?}"
        );
        assert!(
            pauses
                .iter()
                .all(|p| p.watcher != Watcher::Thread || p.late_ms < 250.0),
            "{pauses:?}"
        );
    }
}
