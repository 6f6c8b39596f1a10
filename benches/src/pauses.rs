//! Watches for pauses while a run goes on: a thread and a runtime task each sleep 10 ms in a
//! loop and note every wake-up that came much later than asked. A pause both saw is the
//! machine's (the process was not scheduled); one only the task saw is the runtime's (its
//! workers were busy or blocked). A stall that began inside a pause says nothing about the
//! scheduler. The thread also samples, once a second, the CPU this process and the whole
//! machine used, so that a runtime pause can be told apart: the process using both cores
//! (its own work saturated it), another process using them, or neither (something blocked a
//! worker).

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

/// CPU used over one second.
#[derive(Debug, Clone, Serialize)]
pub struct CpuSecond {
    /// The second's end, seconds since the process started ([`crate::secs`]).
    pub at_s: f64,
    /// Cores this process kept busy (user and system time).
    pub process_cores: f64,
    /// Cores busy on the whole machine, this process included.
    pub machine_cores: f64,
    /// Cores the hypervisor took from this virtual machine (steal time).
    pub steal_cores: f64,
    /// The async runtime's workers busy running tasks (in workers; up to their number). Near
    /// the number of workers while `process_cores` is well below it: a task held a worker
    /// without using the CPU (a blocking call or lock).
    pub runtime_workers_busy: f64,
}

/// What the watchers saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Watched {
    /// Late wake-ups, in order.
    pub pauses: Vec<Pause>,
    /// CPU use, a sample a second (Linux; empty elsewhere).
    pub cpu: Vec<CpuSecond>,
}

/// This process's user + system time, in clock ticks.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The machine's clock ticks summed over its cores.
#[derive(Debug, Clone, Copy, Default)]
struct MachineTicks {
    busy: u64,
    /// Taken by the hypervisor.
    steal: u64,
    total: u64,
    /// Cores listed.
    cores: usize,
}

fn machine_ticks() -> Option<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal; guest time is already in user.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    let steal = v.get(7).copied().unwrap_or(0);
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(MachineTicks {
        busy: total.saturating_sub(idle + steal),
        steal,
        total,
        cores: cores.max(1),
    })
}

/// Counters read at one instant, for the CPU used between two readings.
struct Reading {
    at: tokio::time::Instant,
    process: Option<u64>,
    machine: Option<MachineTicks>,
    workers_busy: Duration,
}

impl Reading {
    fn take(workers_busy: &impl Fn() -> Duration) -> Self {
        Self {
            at: tokio::time::Instant::now(),
            process: process_ticks(),
            machine: machine_ticks(),
            workers_busy: workers_busy(),
        }
    }

    /// What was used from `self` to `later`.
    fn used_until(&self, later: &Reading) -> Option<CpuSecond> {
        let secs = later.at.saturating_duration_since(self.at).as_secs_f64();
        let (p0, p1, m0, m1) = (self.process?, later.process?, self.machine?, later.machine?);
        if secs <= 0.0 || m1.total <= m0.total {
            return None;
        }
        // A share of all the machine's ticks, times its cores.
        let cores = |a: u64, b: u64| {
            b.saturating_sub(a) as f64 / (m1.total - m0.total) as f64 * m1.cores as f64
        };
        Some(CpuSecond {
            at_s: crate::secs(later.at),
            process_cores: p1.saturating_sub(p0) as f64 / TICKS_PER_SEC / secs,
            machine_cores: cores(m0.busy, m1.busy),
            steal_cores: cores(m0.steal, m1.steal),
            runtime_workers_busy: later
                .workers_busy
                .saturating_sub(self.workers_busy)
                .as_secs_f64()
                / secs,
        })
    }
}

/// Clock ticks per second of `/proc`'s counters (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The running watchers.
pub struct PauseMonitor {
    stop: Arc<AtomicBool>,
    found: Arc<Mutex<Vec<Pause>>>,
    cpu: Arc<Mutex<Vec<CpuSecond>>>,
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
        let cpu = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Handle::current().metrics();
        let busy = move || -> Duration {
            (0..runtime.num_workers())
                .map(|w| runtime.worker_total_busy_duration(w))
                .sum()
        };
        let thread = {
            let (stop, found, cpu) = (stop.clone(), found.clone(), cpu.clone());
            std::thread::Builder::new()
                .name("pause-watch".into())
                .spawn(move || {
                    let mut last = Reading::take(&busy);
                    while !stop.load(Ordering::Relaxed) {
                        let t = tokio::time::Instant::now();
                        std::thread::sleep(TICK);
                        note(&found, Watcher::Thread, t, t.elapsed().saturating_sub(TICK));
                        if last.at.elapsed() >= Duration::from_secs(1) {
                            let now = Reading::take(&busy);
                            if let (Some(used), Ok(mut c)) = (last.used_until(&now), cpu.lock()) {
                                c.push(used);
                            }
                            last = now;
                        }
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
            cpu,
            thread,
            task,
        }
    }

    /// Stops the watchers and returns what they saw.
    pub fn finish(mut self) -> Watched {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut v = self.found.lock().map(|f| f.clone()).unwrap_or_default();
        v.sort_by(|a, b| a.began_s.total_cmp(&b.began_s));
        Watched {
            pauses: v,
            cpu: self.cpu.lock().map(|c| c.clone()).unwrap_or_default(),
        }
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
        let pauses = m.finish().pauses;
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

    #[test]
    fn cpu_counters_are_read() {
        assert!(process_ticks().is_some());
        let m = machine_ticks().unwrap_or_default();
        assert!(
            m.total > 0 && m.busy + m.steal <= m.total && m.cores >= 1,
            "{m:?}"
        );
    }

    #[test]
    fn cpu_used_between_two_readings() {
        let t0 = tokio::time::Instant::now();
        let reading = |at, process, busy, steal, total, workers_ms| Reading {
            at,
            process: Some(process),
            machine: Some(MachineTicks {
                busy,
                steal,
                total,
                cores: 2,
            }),
            workers_busy: Duration::from_millis(workers_ms),
        };
        let a = reading(t0, 1_000, 5_000, 40, 20_000, 3_000);
        // One second later: 100 ticks of this process, 150 of the 200 machine ticks busy and
        // 10 stolen, the workers 800 ms busier.
        let b = reading(t0 + Duration::from_secs(1), 1_100, 5_150, 50, 20_200, 3_800);
        let used = a.used_until(&b).expect("a second apart");
        assert!((used.process_cores - 1.0).abs() < 1e-9, "{used:?}");
        assert!((used.machine_cores - 1.5).abs() < 1e-9, "{used:?}");
        assert!((used.steal_cores - 0.1).abs() < 1e-9, "{used:?}");
        assert!((used.runtime_workers_busy - 0.8).abs() < 1e-9, "{used:?}");
        assert!(b.used_until(&a).is_none(), "backwards in time is no sample");
    }
}
